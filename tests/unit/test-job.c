/*
 * test-job - the job core (jobs.md): ids, the transition and verb tables,
 * pause/resume/sleep, cancellation in every state, complete in standby,
 * auto-finalize/auto-dismiss and the event sequences, the error policy,
 * the speed limit, callbacks that change the graph, job_cancel_sync_all.
 */
#include "job-test-util.h"

/* ---- Helpers ----------------------------------------------------------------- */

static const char *const st_names[] = {
    "undefined", "created", "running", "paused", "ready", "standby",
    "waiting", "pending", "aborting", "concluded", "null",
};
static const char *const verb_names[] = {
    "cancel", "pause", "resume", "set-speed", "complete", "finalize", "dismiss", "change",
};
/* jobs.md 2.2, by status letter (U C R P Y S W D X E N). */
static const char st_letters[] = "UCRPYSWDXEN";
static const char *const verb_accepts[JOB_VERB__MAX] = {
    [JOB_VERB_CANCEL] = "CRPYSWD",
    [JOB_VERB_PAUSE] = "CRPYS",
    [JOB_VERB_RESUME] = "CRPYS",
    [JOB_VERB_SET_SPEED] = "CRPYS",
    [JOB_VERB_COMPLETE] = "YS",
    [JOB_VERB_FINALIZE] = "D",
    [JOB_VERB_DISMISS] = "E",
    [JOB_VERB_CHANGE] = "CRPYS",
};

static bool verb_ok(JobVerb v, JobStatus st)
{
    return strchr(verb_accepts[v], st_letters[st]) != NULL;
}

static char *verb_msg(const char *id, JobStatus st, JobVerb v)
{
    char *m;

    if (asprintf(&m, "Job '%s' in state '%s' cannot accept command verb '%s'", id,
                 st_names[st], verb_names[v]) < 0) {
        abort();
    }
    return m;
}

/* Returns a description of the first mismatch, or NULL. */
static char *check_err(Error *err, const char *want)
{
    char *m = NULL;

    if (!want && err) {
        if (asprintf(&m, "unexpected error '%s'", error_get_pretty(err)) < 0) {
            abort();
        }
    } else if (want && !err) {
        if (asprintf(&m, "no error, want '%s'", want) < 0) {
            abort();
        }
    } else if (want && strcmp(error_get_pretty(err), want)) {
        if (asprintf(&m, "error '%s', want '%s'", error_get_pretty(err), want) < 0) {
            abort();
        }
    }
    error_free(err);
    return m;
}

static int report(char *m, const char *what, JobStatus st)
{
    if (!m) {
        return 0;
    }
    fprintf(stderr, "in state %s, %s: %s\n", st_names[st], what, m);
    free(m);
    return 1;
}

/*
 * In @job's current status (expected: @st): job_apply_verb_locked agrees
 * with the verb table for all 8 verbs, and every user verb the table
 * refuses fails with the exact text and changes nothing.  Returns the
 * number of mismatches.  The mutex is held throughout (a user verb that is
 * refused must not drop it or change anything).
 */
static int check_verbs(Job *job, JobStatus st)
{
    int bad = 0;
    const char *id = job->id;

    job_lock();
    if (job->status != st) {
        fprintf(stderr, "status %s, want %s\n", st_names[job->status], st_names[st]);
        job_unlock();
        return 1;
    }
    for (JobVerb v = 0; v < JOB_VERB__MAX; v++) {
        Error *err = NULL;
        char *want = verb_ok(v, st) ? NULL : verb_msg(id, st, v);
        int r = job_apply_verb_locked(job, v, &err);

        if ((r == 0) != !want || (r && r != -EPERM)) {
            fprintf(stderr, "state %s verb %s: ret %d\n", st_names[st], verb_names[v], r);
            bad++;
        }
        bad += report(check_err(err, want), verb_names[v], st);
        free(want);
    }
    /* The user verbs, where refused. */
    for (JobVerb v = 0; v < JOB_VERB__MAX; v++) {
        Error *err = NULL;
        char *want;
        Job *j = job;

        if (verb_ok(v, st) || v == JOB_VERB_CHANGE) {
            continue;
        }
        want = verb_msg(id, st, v);
        switch (v) {
        case JOB_VERB_CANCEL:
            job_user_cancel_locked(job, true, &err);
            break;
        case JOB_VERB_PAUSE:
            job_user_pause_locked(job, &err);
            break;
        case JOB_VERB_RESUME:
            job_user_resume_locked(job, &err);
            /* The pause check comes first (jobs.md 9). */
            if (!job->user_paused) {
                free(want);
                want = strdup("Can't resume a job that was not paused");
            }
            break;
        case JOB_VERB_SET_SPEED:
            if (!job_is_block_job(job)) {
                free(want);
                continue;
            }
            block_job_set_speed_locked((BlockJob *)job, 1000, &err);
            break;
        case JOB_VERB_COMPLETE:
            job_complete_locked(job, &err);
            break;
        case JOB_VERB_FINALIZE:
            job_finalize_locked(job, &err);
            break;
        case JOB_VERB_DISMISS:
            job_dismiss_locked(&j, &err);
            if (j != job) {
                fprintf(stderr, "refused dismiss cleared the pointer\n");
                bad++;
            }
            break;
        default:
            break;
        }
        bad += report(check_err(err, want), verb_names[v], st);
        free(want);
        if (job->status != st) {
            fprintf(stderr, "refused verb %s changed the status to %s\n", verb_names[v],
                    st_names[job->status]);
            bad++;
        }
    }
    job_unlock();
    return bad;
}

static void set_speed(BlockJob *bj, int64_t speed, const char *want_err)
{
    Error *err = NULL;
    char *m;

    job_lock();
    block_job_set_speed_locked(bj, speed, &err);
    job_unlock();
    m = check_err(err, want_err);
    if (m) {
        fprintf(stderr, "set-speed %" PRId64 ": %s\n", speed, m);
    }
    assert_null(m);
}

/* Apply a user verb under job_mutex; its error must be @want_err (NULL:
 * none). */
static void user_verb(const char *what, void (*fn)(Job *job, Error **errp), Job *job,
                      const char *want_err)
{
    Error *err = NULL;
    char *m;

    job_lock();
    fn(job, &err);
    job_unlock();
    m = check_err(err, want_err);
    if (m) {
        fprintf(stderr, "%s: %s\n", what, m);
    }
    assert_null(m);
}

static void user_pause(Job *job, const char *want_err)
{
    user_verb("pause", job_user_pause_locked, job, want_err);
}

static void user_resume(Job *job, const char *want_err)
{
    user_verb("resume", job_user_resume_locked, job, want_err);
}

static void complete(Job *job)
{
    job_lock();
    job_complete_locked(job, &error_abort);
    job_unlock();
}

static void finalize(Job *job)
{
    job_lock();
    job_finalize_locked(job, &error_abort);
    job_unlock();
}

static void dismiss(Job *job)
{
    job_lock();
    job_dismiss_locked(&job, &error_abort);
    job_unlock();
    assert_null(job);
}

static void user_cancel(Job *job, bool force)
{
    Error *err = NULL;

    job_lock();
    job_user_cancel_locked(job, force, &err);
    job_unlock();
    assert_null(err);
}

static bool poll_iters_past(TJState *s, unsigned n, int ms)
{
    return TU_POLL_UNTIL(atomic_read(&s->iters) > n, ms);
}

#define MANUAL (JOB_MANUAL_FINALIZE | JOB_MANUAL_DISMISS)

/* ---- Job ids (jobs.md 4.1, 13 items 1-4) ------------------------------------ */

static void test_job_ids(void **state)
{
    static const char *const bad[] = { "0id", "", "   ", "123", "_id", "-id", ".id", "#id",
                                       "a b", "a#" };
    BlockDriverState *bs = jt_open_null("n0");
    TJState s1, s2, s3, s4;
    Error *err = NULL;
    char *m;
    BlockJob *j1, *j2;
    Job *pj;

    (void)state;
    tj_init(&s1, "id0");
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char want[64];
        snprintf(want, sizeof(want), "Invalid job ID '%s'", bad[i]);
        assert_null(tj_block_create(&s1, bad[i], bs, MANUAL, NULL, 0, NULL, &err));
        m = check_err(err, want);
        err = NULL;
        assert_null(m);
    }
    /* No id: a block job defaults to the (empty) device name. */
    assert_null(tj_block_create(&s1, NULL, bs, MANUAL, NULL, 0, NULL, &err));
    assert_null(check_err(err, "Invalid job ID ''"));
    err = NULL;
    /* A plain job needs an explicit id; an internal one may not have one. */
    tj_init(&s2, NULL);
    assert_null(tj_create(&s2, 0, NULL, NULL, &err));
    assert_null(check_err(err, "An explicit job ID is required"));
    err = NULL;
    tj_init(&s2, "x");
    assert_null(tj_create(&s2, JOB_INTERNAL, NULL, NULL, &err));
    assert_null(check_err(err, "Cannot specify job ID for internal job"));
    err = NULL;
    /* Failed creations leave nothing (and emit nothing: no id). */
    assert_int_equal(jt_job_count(), 0);
    assert_int_equal(s1.freed + s2.freed, 0);

    /* Accepted ids; two jobs on one node. */
    j1 = tj_block_create(&s1, "id0", bs, MANUAL, NULL, 0, NULL, &error_abort);
    tj_init(&s3, "Z9-._x");
    j2 = tj_block_create(&s3, "Z9-._x", bs, MANUAL, NULL, 0, NULL, &error_abort);
    assert_non_null(j1);
    assert_non_null(j2);
    /* A duplicate id, also against a plain job. */
    tj_init(&s4, "id0");
    assert_null(tj_block_create(&s4, "id0", bs, MANUAL, NULL, 0, NULL, &err));
    assert_null(check_err(err, "Job ID 'id0' already in use"));
    err = NULL;
    assert_null(tj_create(&s4, 0, NULL, NULL, &err));
    assert_null(check_err(err, "Job ID 'id0' already in use"));
    err = NULL;
    /* A second id-less block job is refused; with an explicit id it works. */
    assert_null(tj_block_create(&s4, NULL, bs, MANUAL, NULL, 0, NULL, &err));
    assert_null(check_err(err, "Invalid job ID ''"));
    err = NULL;
    tj_init(&s4, "id_2");
    assert_non_null(tj_block_create(&s4, "id_2", bs, MANUAL, NULL, 0, NULL, &error_abort));

    /* Early fail disposes of the job; its id can be reused. */
    job_early_fail(&j1->job);
    assert_int_equal(s1.freed, 1);
    assert_string_equal(s1.order, "F");      /* never started: only free */
    jt_expect_events("id0", "JSC created, JSC null");
    tj_init(&s1, "id0");
    pj = tj_create(&s1, MANUAL, NULL, NULL, &error_abort);
    assert_non_null(pj);
    job_early_fail(pj);
    job_early_fail(&j2->job);
    job_early_fail(s4.job);
    assert_int_equal(s1.freed + s3.freed + s4.freed, 3);

    /* Internal job without id: no events at all. */
    tj_init(&s2, NULL);
    pj = tj_create(&s2, JOB_INTERNAL, NULL, NULL, &error_abort);
    s2.iterations = 3;
    job_start(pj);
    assert_true(TU_POLL_UNTIL(s2.freed == 1, 5000));
    jt_assert_finished(&s2, true, 0);
    bd_mutex_lock(&jt_ev_lock);
    for (int i = 0; i < jt_nevents; i++) {
        assert_true(strncmp(jt_events[i], "id0 ", 4) == 0 ||
                    strncmp(jt_events[i], "id_2 ", 5) == 0 ||
                    strncmp(jt_events[i], "Z9-._x ", 7) == 0);
    }
    bd_mutex_unlock(&jt_ev_lock);
    bdrv_unref(bs);
}

/* A block job whose edge conflicts with another user fails early: created
 * then null, nothing left, the id free again. */
static void test_block_job_early_fail(void **state)
{
    BlockDriverState *bs = jt_open_null("n0");
    TJState s;
    BlockJob *bj;
    Error *err = NULL;
    BdrvChild *c;

    (void)state;
    c = bdrv_root_attach_child(bs, "excl", &tj_user_class, 0, BLK_PERM_CONSISTENT_READ,
                               BLK_PERM_CONSISTENT_READ, NULL, &error_abort);
    tj_init(&s, "j");
    bj = block_job_create("j", &tj_block_driver, NULL, bs,
                          BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE, BLK_PERM_ALL, 0, 0,
                          tj_cb, &s, &err);
    assert_null(bj);
    assert_non_null(err);
    error_free(err);
    err = NULL;
    jt_expect_events("j", "JSC created, JSC null");
    assert_string_equal(s.order, "F");
    assert_int_equal(jt_job_count(), 0);
    bdrv_root_unref_child(c);

    /* Negative speed at creation fails the same way. */
    jt_events_reset();
    tj_init(&s, "j");
    assert_null(tj_block_create(&s, "j", bs, 0, NULL, -1, NULL, &err));
    assert_null(check_err(err, "Parameter 'speed' expects a non-negative value"));
    jt_expect_events("j", "JSC created, JSC null");
    assert_int_equal(jt_job_count(), 0);
    bdrv_unref(bs);
}

/* ---- Verbs in every state (jobs.md 2.2) ------------------------------------- */

static void abort_hook_check_verbs(Job *job)
{
    /* abort() runs with the mutex dropped, in state "aborting". */
    if (check_verbs(job, JOB_STATUS_ABORTING)) {
        tj_state(job)->err_action = 99;     /* flag for the test */
    }
}

static void test_verbs_all_states(void **state)
{
    BlockDriverState *bs = jt_open_null("n0");
    TJState a, b, c;
    BlockJob *ja, *jc;
    Job *jb;
    JobTxn *txn = job_txn_new();
    unsigned n;

    (void)state;
    tj_init(&a, "a");
    tj_init(&b, "b");
    a.ready_after = 5;
    ja = tj_block_create(&a, "a", bs, MANUAL, txn, 0, NULL, &error_abort);
    jb = tj_create(&b, MANUAL, txn, NULL, &error_abort);
    job_txn_unref(txn);

    /* created: set-speed accepted */
    assert_int_equal(check_verbs(&ja->job, JOB_STATUS_CREATED), 0);
    set_speed(ja, 1 << 30, NULL);
    set_speed(ja, 0, NULL);
    job_start(&ja->job);
    job_start(jb);

    /* running */
    assert_true(poll_iters_past(&a, 1, 5000));
    assert_int_equal(check_verbs(&ja->job, JOB_STATUS_RUNNING), 0);
    set_speed(ja, 0, NULL);

    /* paused */
    user_pause(&ja->job, NULL);
    assert_true(jt_wait_status(&ja->job, JOB_STATUS_PAUSED, 5000));
    assert_int_equal(check_verbs(&ja->job, JOB_STATUS_PAUSED), 0);
    user_pause(&ja->job, "Job is already paused");
    set_speed(ja, 0, NULL);
    user_resume(&ja->job, NULL);
    user_resume(&ja->job, "Can't resume a job that was not paused");

    /* ready */
    assert_true(TU_POLL_UNTIL(atomic_read(&a.ready), 5000));
    assert_int_equal(check_verbs(&ja->job, JOB_STATUS_READY), 0);
    set_speed(ja, 0, NULL);

    /* standby */
    user_pause(&ja->job, NULL);
    assert_true(jt_wait_status(&ja->job, JOB_STATUS_STANDBY, 5000));
    assert_int_equal(check_verbs(&ja->job, JOB_STATUS_STANDBY), 0);
    set_speed(ja, 0, NULL);
    user_resume(&ja->job, NULL);
    assert_true(jt_wait_status(&ja->job, JOB_STATUS_READY, 5000));

    /* waiting: a completes, b still runs */
    complete(&ja->job);
    assert_true(jt_wait_status(&ja->job, JOB_STATUS_WAITING, 5000));
    assert_int_equal(check_verbs(&ja->job, JOB_STATUS_WAITING), 0);
    n = atomic_read(&b.iters);
    assert_true(poll_iters_past(&b, n + 2, 5000));
    assert_int_equal(job_get_status(&ja->job), JOB_STATUS_WAITING);

    /* pending: both done, manual finalize */
    atomic_set(&b.stop, 1);
    assert_true(jt_wait_status(&ja->job, JOB_STATUS_PENDING, 5000));
    assert_int_equal(job_get_status(jb), JOB_STATUS_PENDING);
    assert_int_equal(check_verbs(&ja->job, JOB_STATUS_PENDING), 0);
    assert_int_equal(check_verbs(jb, JOB_STATUS_PENDING), 0);

    /* concluded: finalizing one member finalizes the txn */
    finalize(jb);
    assert_int_equal(job_get_status(&ja->job), JOB_STATUS_CONCLUDED);
    assert_int_equal(job_get_status(jb), JOB_STATUS_CONCLUDED);
    assert_int_equal(check_verbs(&ja->job, JOB_STATUS_CONCLUDED), 0);

    /* null: a reference keeps the dismissed job */
    job_ref(&ja->job);
    dismiss(&ja->job);
    assert_int_equal(job_get_status(&ja->job), JOB_STATUS_NULL);
    assert_int_equal(check_verbs(&ja->job, JOB_STATUS_NULL), 0);
    assert_int_equal(a.freed, 0);
    job_unref(&ja->job);
    dismiss(jb);
    jt_assert_finished(&a, true, 0);
    jt_assert_finished(&b, true, 0);
    jt_expect_events("a", "JSC created, JSC running, JSC paused, JSC running, "
                          "JSC ready, BLOCK_JOB_READY, JSC standby, JSC ready, "
                          "JSC waiting, JSC pending, BLOCK_JOB_PENDING, "
                          "BLOCK_JOB_COMPLETED, JSC concluded, JSC null");

    /* aborting: checked from inside abort() */
    tj_init(&c, "c");
    c.fail_at = 2;
    c.check_in_abort = true;
    jt_abort_hook = abort_hook_check_verbs;
    jc = tj_block_create(&c, "c", bs, MANUAL, NULL, 0, NULL, &error_abort);
    job_start(&jc->job);
    assert_true(jt_wait_status(&jc->job, JOB_STATUS_CONCLUDED, 5000));
    assert_int_equal(c.err_action, -1);      /* check_verbs found no mismatch */
    dismiss(&jc->job);
    jt_assert_finished(&c, false, -EIO);
    bdrv_unref(bs);
}

/* ---- Pause, resume, sleep (jobs.md 6) ---------------------------------------- */

static void test_pause_resume_running(void **state)
{
    TJState s;
    Job *job;
    unsigned n;

    (void)state;
    tj_init(&s, "j");
    job = tj_create(&s, MANUAL, NULL, NULL, &error_abort);
    user_resume(job, "Can't resume a job that was not paused");
    job_start(job);
    assert_true(poll_iters_past(&s, 3, 5000));
    user_resume(job, "Can't resume a job that was not paused");
    user_pause(job, NULL);
    assert_true(jt_wait_status(job, JOB_STATUS_PAUSED, 5000));
    assert_true(job_is_paused(job));
    n = atomic_read(&s.iters);
    tu_run_main_loop_ms(50);
    assert_int_equal(atomic_read(&s.iters), n);      /* parked: no progress */
    assert_int_equal(atomic_read(&s.pauses), 1);

    /* An internal pause on top: one user resume does not unpark it. */
    job_pause(job);
    user_resume(job, NULL);
    tu_run_main_loop_ms(30);
    assert_int_equal(job_get_status(job), JOB_STATUS_PAUSED);
    assert_int_equal(atomic_read(&s.iters), n);
    job_resume(job);
    assert_true(jt_wait_status(job, JOB_STATUS_RUNNING, 5000));
    assert_true(poll_iters_past(&s, n + 3, 5000));
    assert_int_equal(atomic_read(&s.resumes), 1);
    assert_false(job_is_paused(job));

    atomic_set(&s.stop, 1);
    assert_true(jt_wait_status(job, JOB_STATUS_PENDING, 5000));
    finalize(job);
    dismiss(job);
    jt_assert_finished(&s, true, 0);
    jt_expect_events("j", "JSC created, JSC running, JSC paused, JSC running, "
                          "JSC waiting, JSC pending, JSC concluded, JSC null");
}

/* A job paused before it starts parks at once in "paused". */
static void test_pause_before_start(void **state)
{
    TJState s;
    Job *job;

    (void)state;
    tj_init(&s, "j");
    s.iterations = 3;
    job = tj_create(&s, 0, NULL, NULL, &error_abort);
    user_pause(job, NULL);
    job_start(job);
    assert_true(jt_wait_status(job, JOB_STATUS_PAUSED, 5000));
    tu_run_main_loop_ms(20);
    assert_int_equal(atomic_read(&s.iters), 0);
    user_resume(job, NULL);
    assert_true(TU_POLL_UNTIL(s.freed == 1, 5000));
    jt_assert_finished(&s, true, 0);
    jt_expect_events("j", "JSC created, JSC running, JSC paused, JSC running, "
                          "JSC waiting, JSC pending, JSC concluded, JSC null");
}

/*
 * A long sleep is cut short by a pause: the job parks in "paused" at once.
 * On resume the job continues from there -- the rest of the sleep is not
 * slept (jobs.md 6: resume enters the job when no sleep timer is pending,
 * and the pause deleted it).
 */
static void test_pause_while_sleeping(void **state)
{
    IOThread *iot = tu_iothread_new("io0");
    TJState s[2];
    Job *job[2];

    (void)state;
    for (int i = 0; i < 2; i++) {
        tj_init(&s[i], i ? "iot" : "main");
        s[i].sleep_ns = 60 * TU_SEC;
        s[i].iterations = 2;
        job[i] = tj_create(&s[i], MANUAL, NULL, i ? iothread_get_aio_context(iot) : NULL,
                           &error_abort);
        job_start(job[i]);
    }
    for (int i = 0; i < 2; i++) {
        int64_t t0;

        assert_true(TU_POLL_UNTIL(jt_sleeping(job[i]), 5000));
        assert_int_equal(atomic_read(&s[i].iters), 0);
        t0 = clock_now_ns();
        user_pause(job[i], NULL);
        assert_true(jt_wait_status(job[i], JOB_STATUS_PAUSED, 5000));
        assert_false(jt_sleeping(job[i]));
        assert_int_equal(atomic_read(&s[i].iters), 0);
        tu_run_main_loop_ms(20);
        assert_int_equal(job_get_status(job[i]), JOB_STATUS_PAUSED);
        user_resume(job[i], NULL);
        /* The interrupted sleep returns; the next one starts. */
        assert_true(poll_iters_past(&s[i], 0, 5000));
        assert_true(clock_now_ns() - t0 < 5 * TU_SEC);
        assert_true(TU_POLL_UNTIL(jt_sleeping(job[i]), 5000));
        assert_int_equal(job_get_status(job[i]), JOB_STATUS_RUNNING);
        assert_int_equal(atomic_read(&s[i].iters), 1);
    }
    /* Still sleeping: nothing else wakes it.  Cancel interrupts a sleep. */
    tu_run_main_loop_ms(30);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(atomic_read(&s[i].iters), 1);
        job_lock();
        assert_int_equal(job_cancel_sync_locked(job[i], true), -ECANCELED);
        job_unlock();
        assert_int_equal(job_get_status(job[i]), JOB_STATUS_CONCLUDED);
        dismiss(job[i]);
        jt_assert_finished(&s[i], false, -ECANCELED);
    }
    jt_expect_events("iot", "JSC created, JSC running, JSC paused, JSC running, "
                            "JSC aborting, JSC concluded, JSC null");
    iothread_destroy(iot);
}

/* A job parked in job_yield() moves only when entered; a pause takes it
 * to its pause point; job_finish_sync kicks it. */
static void test_yield_and_enter(void **state)
{
    TJState s;
    Job *job;

    (void)state;
    tj_init(&s, "j");
    s.wait_mode = TJ_YIELD;
    s.iterations = 4;
    job = tj_create(&s, MANUAL, NULL, NULL, &error_abort);
    job_start(job);
    tu_run_main_loop_ms(20);
    assert_int_equal(atomic_read(&s.iters), 0);
    job_enter(job);
    assert_true(poll_iters_past(&s, 0, 5000));
    tu_run_main_loop_ms(20);
    assert_int_equal(atomic_read(&s.iters), 1);
    user_pause(job, NULL);
    assert_true(jt_wait_status(job, JOB_STATUS_PAUSED, 5000));
    /* The pause woke the yield; job_yield() then parked in its pause point. */
    assert_int_equal(atomic_read(&s.iters), 1);
    user_resume(job, NULL);
    assert_true(jt_wait_status(job, JOB_STATUS_RUNNING, 5000));
    assert_true(poll_iters_past(&s, 1, 5000));
    tu_run_main_loop_ms(20);
    assert_int_equal(atomic_read(&s.iters), 2);      /* parked in yield again */
    job_lock();
    assert_int_equal(job_finish_sync_locked(job, NULL, &error_abort), 0);
    job_unlock();
    assert_int_equal(job_get_status(job), JOB_STATUS_PENDING);
    finalize(job);
    dismiss(job);
    jt_assert_finished(&s, true, 0);
}

/* Drained sections pause block jobs (the child_job edge). */
static void test_drain_pauses_block_job(void **state)
{
    BlockDriverState *bs = jt_open_null("n0");
    IOThread *iot = tu_iothread_new("io0");
    TJState s[2];
    BlockJob *bj[2];
    unsigned n[2];
    json_object *info;

    (void)state;
    for (int i = 0; i < 2; i++) {
        tj_init(&s[i], i ? "j1" : "j0");
        bj[i] = tj_block_create(&s[i], s[i].name, bs, 0, NULL, 0,
                                i ? iothread_get_aio_context(iot) : NULL, &error_abort);
        job_start(&bj[i]->job);
        assert_true(poll_iters_past(&s[i], 2, 5000));
    }
    bdrv_drained_begin(bs);
    for (int i = 0; i < 2; i++) {
        /* drained_begin returned: the job is parked */
        assert_int_equal(job_get_status(&bj[i]->job), JOB_STATUS_PAUSED);
        n[i] = atomic_read(&s[i].iters);
        job_lock();
        info = block_job_query_locked(bj[i]);
        job_unlock();
        assert_true(json_object_get_boolean(json_object_object_get(info, "paused")));
        assert_false(json_object_get_boolean(json_object_object_get(info, "busy")));
        json_object_put(info);
    }
    tu_run_main_loop_ms(30);
    /* A user pause inside the drain is independent of it. */
    user_pause(&bj[0]->job, NULL);
    bdrv_drained_end(bs);
    assert_true(poll_iters_past(&s[1], n[1] + 2, 5000));
    tu_run_main_loop_ms(20);
    assert_int_equal(atomic_read(&s[0].iters), n[0]);
    assert_int_equal(job_get_status(&bj[0]->job), JOB_STATUS_PAUSED);
    user_resume(&bj[0]->job, NULL);
    assert_true(poll_iters_past(&s[0], n[0] + 2, 5000));
    for (int i = 0; i < 2; i++) {
        atomic_set(&s[i].stop, 1);
        assert_true(TU_POLL_UNTIL(s[i].freed == 1, 5000));
        jt_assert_finished(&s[i], true, 0);
    }
    iothread_destroy(iot);
    bdrv_unref(bs);
}

/* ---- Cancel in every state (jobs.md 5, 13 items 5-11) ------------------------ */

static void cancel_sync_expect(Job *job, int want)
{
    job_lock();
    assert_int_equal(job_cancel_sync_locked(job, true), want);
    job_unlock();
}

static void test_cancel_created(void **state)
{
    BlockDriverState *bs = jt_open_null("n0");
    TJState s;
    BlockJob *bj;

    (void)state;
    tj_init(&s, "j");
    bj = tj_block_create(&s, "j", bs, MANUAL, NULL, 0, NULL, &error_abort);
    job_ref(&bj->job);
    cancel_sync_expect(&bj->job, -ECANCELED);
    /* No dismiss needed: a never-started job goes straight to null. */
    assert_int_equal(job_get_status(&bj->job), JOB_STATUS_NULL);
    assert_int_equal(s.freed, 0);
    job_unref(&bj->job);
    assert_int_equal(s.runs, 0);
    jt_assert_finished(&s, false, -ECANCELED);
    /* A never-started job emits no BLOCK_JOB_CANCELLED. */
    jt_expect_events("j", "JSC created, JSC aborting, JSC concluded, JSC null");
    bdrv_unref(bs);
}

static void test_cancel_running(void **state)
{
    BlockDriverState *bs = jt_open_null("n0");
    TJState s;
    BlockJob *bj;

    (void)state;
    tj_init(&s, "j");
    bj = tj_block_create(&s, "j", bs, MANUAL, NULL, 0, NULL, &error_abort);
    job_start(&bj->job);
    assert_true(poll_iters_past(&s, 1, 5000));
    cancel_sync_expect(&bj->job, -ECANCELED);
    assert_int_equal(job_get_status(&bj->job), JOB_STATUS_CONCLUDED);
    job_ref(&bj->job);
    dismiss(&bj->job);
    /* A soft cancel of the dismissed, cancelled job: nothing to abort. */
    job_lock();
    assert_int_equal(job_cancel_sync_locked(&bj->job, false), -ECANCELED);
    job_unlock();
    job_unref(&bj->job);
    jt_assert_finished(&s, false, -ECANCELED);
    jt_expect_events("j", "JSC created, JSC running, JSC aborting, BLOCK_JOB_CANCELLED, "
                          "JSC concluded, JSC null");
    bdrv_unref(bs);
}

static void test_cancel_paused(void **state)
{
    BlockDriverState *bs = jt_open_null("n0");
    TJState s;
    BlockJob *bj;

    (void)state;
    tj_init(&s, "j");
    bj = tj_block_create(&s, "j", bs, MANUAL, NULL, 0, NULL, &error_abort);
    job_start(&bj->job);
    user_pause(&bj->job, NULL);
    assert_true(jt_wait_status(&bj->job, JOB_STATUS_PAUSED, 5000));
    cancel_sync_expect(&bj->job, -ECANCELED);
    assert_int_equal(job_get_status(&bj->job), JOB_STATUS_CONCLUDED);
    job_lock();
    assert_false(job_user_paused_locked(&bj->job));
    job_unlock();
    dismiss(&bj->job);
    jt_assert_finished(&s, false, -ECANCELED);
    jt_expect_events("j", "JSC created, JSC running, JSC paused, JSC running, JSC aborting, "
                          "BLOCK_JOB_CANCELLED, JSC concluded, JSC null");
    bdrv_unref(bs);
}

static void test_cancel_ready_and_standby(void **state)
{
    BlockDriverState *bs = jt_open_null("n0");
    TJState s[2];
    BlockJob *bj[2];

    (void)state;
    for (int i = 0; i < 2; i++) {
        tj_init(&s[i], i ? "standby" : "ready");
        s[i].ready_after = 2;
        /* (Creating a block job drains its node: create both first.) */
        bj[i] = tj_block_create(&s[i], s[i].name, bs, MANUAL, NULL, 0, NULL, &error_abort);
    }
    for (int i = 0; i < 2; i++) {
        job_start(&bj[i]->job);
        assert_true(jt_wait_status(&bj[i]->job, JOB_STATUS_READY, 5000));
    }
    user_pause(&bj[1]->job, NULL);
    assert_true(jt_wait_status(&bj[1]->job, JOB_STATUS_STANDBY, 5000));
    for (int i = 0; i < 2; i++) {
        cancel_sync_expect(&bj[i]->job, -ECANCELED);
        assert_int_equal(job_get_status(&bj[i]->job), JOB_STATUS_CONCLUDED);
        dismiss(&bj[i]->job);
        jt_assert_finished(&s[i], false, -ECANCELED);
    }
    jt_expect_events("ready", "JSC created, JSC running, JSC ready, BLOCK_JOB_READY, "
                              "JSC aborting, BLOCK_JOB_CANCELLED, JSC concluded, JSC null");
    jt_expect_events("standby", "JSC created, JSC running, JSC ready, BLOCK_JOB_READY, "
                                "JSC standby, JSC ready, JSC aborting, BLOCK_JOB_CANCELLED, "
                                "JSC concluded, JSC null");
    bdrv_unref(bs);
}

static void test_cancel_pending(void **state)
{
    BlockDriverState *bs = jt_open_null("n0");
    TJState s;
    BlockJob *bj;

    (void)state;
    tj_init(&s, "j");
    s.ready_after = 1;
    bj = tj_block_create(&s, "j", bs, MANUAL, NULL, 0, NULL, &error_abort);
    job_start(&bj->job);
    assert_true(jt_wait_status(&bj->job, JOB_STATUS_READY, 5000));
    complete(&bj->job);
    /* Still ready until the coroutine has run and its exit BH too. */
    assert_int_equal(job_get_status(&bj->job), JOB_STATUS_READY);
    assert_true(jt_wait_status(&bj->job, JOB_STATUS_PENDING, 5000));
    assert_int_equal(s.prepare + s.commit + s.abort, 0);
    cancel_sync_expect(&bj->job, -ECANCELED);
    assert_int_equal(job_get_status(&bj->job), JOB_STATUS_CONCLUDED);
    dismiss(&bj->job);
    jt_assert_finished(&s, false, -ECANCELED);
    jt_expect_events("j", "JSC created, JSC running, JSC ready, BLOCK_JOB_READY, "
                          "JSC waiting, JSC pending, BLOCK_JOB_PENDING, JSC aborting, "
                          "BLOCK_JOB_CANCELLED, JSC concluded, JSC null");
    bdrv_unref(bs);
}

static void test_cancel_concluded(void **state)
{
    BlockDriverState *bs = jt_open_null("n0");
    TJState s;
    BlockJob *bj;
    Error *err = NULL;

    (void)state;
    tj_init(&s, "j");
    s.iterations = 2;
    bj = tj_block_create(&s, "j", bs, MANUAL, NULL, 0, NULL, &error_abort);
    job_start(&bj->job);
    assert_true(jt_wait_status(&bj->job, JOB_STATUS_PENDING, 5000));
    finalize(&bj->job);
    assert_int_equal(job_get_status(&bj->job), JOB_STATUS_CONCLUDED);
    /* The user verb refuses; the internal cancel dismisses. */
    job_lock();
    job_user_cancel_locked(&bj->job, true, &err);
    job_unlock();
    assert_null(check_err(err, "Job 'j' in state 'concluded' cannot accept command verb "
                               "'cancel'"));
    job_ref(&bj->job);
    cancel_sync_expect(&bj->job, 0);
    assert_int_equal(job_get_status(&bj->job), JOB_STATUS_NULL);
    /* Dismissed, out of its transaction: cancelling again changes nothing
     * (it used to follow a NULL transaction; found by stress-jobs). */
    cancel_sync_expect(&bj->job, 0);
    job_lock();
    assert_int_equal(job_cancel_sync_locked(&bj->job, false), 0);
    job_unlock();
    assert_int_equal(job_get_status(&bj->job), JOB_STATUS_NULL);
    job_unref(&bj->job);
    jt_assert_finished(&s, true, 0);
    jt_expect_events("j", "JSC created, JSC running, JSC waiting, JSC pending, "
                          "BLOCK_JOB_PENDING, BLOCK_JOB_COMPLETED, JSC concluded, JSC null");
    bdrv_unref(bs);
}

/* Asynchronous user cancel of a running job with auto-finalize/dismiss. */
static void test_user_cancel_async(void **state)
{
    BlockDriverState *bs = jt_open_null("n0");
    TJState s;
    BlockJob *bj;

    (void)state;
    tj_init(&s, "j");
    bj = tj_block_create(&s, "j", bs, 0, NULL, 0, NULL, &error_abort);
    job_start(&bj->job);
    assert_true(poll_iters_past(&s, 1, 5000));
    user_cancel(&bj->job, true);
    assert_true(TU_POLL_UNTIL(s.freed == 1, 5000));
    jt_assert_finished(&s, false, -ECANCELED);
    jt_expect_events("j", "JSC created, JSC running, JSC aborting, BLOCK_JOB_CANCELLED, "
                          "JSC concluded, JSC null");
    bdrv_unref(bs);
}

/* Soft cancel of a ready job whose driver has a soft mode: it completes
 * successfully (mirror's block-job-cancel force=false). */
static void test_soft_cancel_ready(void **state)
{
    BlockDriverState *bs = jt_open_null("n0");
    TJState s;
    BlockJob *bj;

    (void)state;
    tj_init(&s, "j");
    s.ready_after = 1;
    s.soft_cancel = true;
    bj = tj_block_create(&s, "j", bs, 0, NULL, 0, NULL, &error_abort);
    job_start(&bj->job);
    assert_true(jt_wait_status(&bj->job, JOB_STATUS_READY, 5000));
    user_cancel(&bj->job, false);
    assert_true(job_cancel_requested(&bj->job));
    assert_false(job_is_cancelled(&bj->job));
    assert_true(TU_POLL_UNTIL(s.freed == 1, 5000));
    jt_assert_finished(&s, true, 0);
    jt_expect_events("j", "JSC created, JSC running, JSC ready, BLOCK_JOB_READY, "
                          "JSC waiting, JSC pending, BLOCK_JOB_COMPLETED, JSC concluded, "
                          "JSC null");
    bdrv_unref(bs);
}

/* jobs.md 13 item 12: a job in an iothread, parked in standby by a
 * drain-all section and held there by an extra pause, can be completed. */
static void test_complete_in_standby(void **state)
{
    BlockDriverState *bs = jt_open_null("n0");
    IOThread *iot = tu_iothread_new("io0");
    TJState s;
    BlockJob *bj;
    Job *job;

    (void)state;
    tj_init(&s, "j");
    s.ready_after = 2;
    bj = tj_block_create(&s, "j", bs, MANUAL, NULL, 0, iothread_get_aio_context(iot),
                         &error_abort);
    job = &bj->job;
    job_start(job);
    assert_true(jt_wait_status(job, JOB_STATUS_READY, 5000));
    bdrv_drain_all_begin();
    assert_int_equal(job_get_status(job), JOB_STATUS_STANDBY);
    job_pause(job);
    bdrv_drain_all_end();
    tu_run_main_loop_ms(20);
    assert_int_equal(job_get_status(job), JOB_STATUS_STANDBY);
    complete(job);
    tu_run_main_loop_ms(20);
    assert_int_equal(job_get_status(job), JOB_STATUS_STANDBY);
    job_lock();
    assert_int_equal(job_finish_sync_locked(job, NULL, &error_abort), 0);
    job_unlock();
    assert_int_equal(job_get_status(job), JOB_STATUS_PENDING);
    finalize(job);
    assert_int_equal(job_get_status(job), JOB_STATUS_CONCLUDED);
    dismiss(job);
    jt_assert_finished(&s, true, 0);
    iothread_destroy(iot);
    bdrv_unref(bs);
}

/* job-complete is refused before ready, without a complete callback and
 * once a cancel was requested. */
static void test_complete_refused(void **state)
{
    static const JobDriver no_complete = {
        .instance_size = sizeof(TestJob), .job_type = JOB_TYPE_CREATE, .run = tj_run,
        .clean = tj_clean, .free = tj_free, .abort = tj_abort, .commit = tj_commit,
        .prepare = tj_prepare,
    };
    TJState s, s2;
    Job *job, *j2;
    Error *err = NULL;

    (void)state;
    tj_init(&s, "j");
    s.ready_after = 1;
    s.soft_cancel = true;
    job = tj_create(&s, 0, NULL, NULL, &error_abort);
    job_lock();
    job_complete_locked(job, &err);
    job_unlock();
    assert_null(check_err(err, "Job 'j' in state 'created' cannot accept command verb "
                               "'complete'"));
    err = NULL;
    job_start(job);
    assert_true(jt_wait_status(job, JOB_STATUS_READY, 5000));
    user_cancel(job, false);      /* soft: the job completes on its own */
    /* The coroutine has not run yet (main context): still ready. */
    assert_int_equal(job_get_status(job), JOB_STATUS_READY);
    job_lock();
    job_complete_locked(job, &err);
    job_unlock();
    assert_null(check_err(err, "The active block job 'j' cannot be completed"));
    err = NULL;
    assert_true(TU_POLL_UNTIL(s.freed == 1, 5000));
    jt_assert_finished(&s, true, 0);

    tj_init(&s2, "k");
    s2.ready_after = 1;
    j2 = job_create("k", &no_complete, NULL, main_aio_context(), 0, tj_cb, &s2, &error_abort);
    job_start(j2);
    assert_true(jt_wait_status(j2, JOB_STATUS_READY, 5000));
    job_lock();
    job_complete_locked(j2, &err);
    job_unlock();
    assert_null(check_err(err, "The active block job 'k' cannot be completed"));
    assert_int_equal(job_cancel_sync(j2, true), -ECANCELED);
    assert_true(TU_POLL_UNTIL(s2.freed == 1, 5000));
    jt_assert_finished(&s2, false, -ECANCELED);
}

/* ---- auto-finalize / auto-dismiss and event sequences (jobs.md 8, 10.1) ------ */

static void test_events_normal(void **state)
{
    BlockDriverState *bs = jt_open_null("n0");
    TJState s;
    BlockJob *bj;
    Job *job;
    json_object *info;

    (void)state;
    /* Default flags: everything automatic. */
    tj_init(&s, "auto");
    s.iterations = 4;
    s.bytes_per_iter = 1000;
    bj = tj_block_create(&s, "auto", bs, 0, NULL, 0, NULL, &error_abort);
    job_progress_set_remaining(&bj->job, 4000);
    job_start(&bj->job);
    assert_true(TU_POLL_UNTIL(s.freed == 1, 5000));
    jt_assert_finished(&s, true, 0);
    jt_expect_events("auto", "JSC created, JSC running, JSC waiting, JSC pending, "
                             "BLOCK_JOB_COMPLETED, JSC concluded, JSC null");

    /* Manual finalize: stays pending, BLOCK_JOB_PENDING. */
    tj_init(&s, "mf");
    s.iterations = 2;
    bj = tj_block_create(&s, "mf", bs, JOB_MANUAL_FINALIZE, NULL, 0, NULL, &error_abort);
    job_start(&bj->job);
    assert_true(jt_wait_status(&bj->job, JOB_STATUS_PENDING, 5000));
    tu_run_main_loop_ms(20);
    assert_int_equal(job_get_status(&bj->job), JOB_STATUS_PENDING);
    assert_int_equal(s.prepare + s.commit, 0);
    jt_expect_events("mf", "JSC created, JSC running, JSC waiting, JSC pending, "
                           "BLOCK_JOB_PENDING");
    finalize(&bj->job);
    jt_assert_finished(&s, true, 0);
    jt_expect_events("mf", "JSC created, JSC running, JSC waiting, JSC pending, "
                           "BLOCK_JOB_PENDING, BLOCK_JOB_COMPLETED, JSC concluded, JSC null");

    /* Manual dismiss: stays concluded and queryable. */
    tj_init(&s, "md");
    s.iterations = 2;
    bj = tj_block_create(&s, "md", bs, JOB_MANUAL_DISMISS, NULL, 0, NULL, &error_abort);
    job_start(&bj->job);
    assert_true(jt_wait_status(&bj->job, JOB_STATUS_CONCLUDED, 5000));
    tu_run_main_loop_ms(20);
    job_lock();
    assert_ptr_equal(job_get_locked("md"), &bj->job);
    info = job_query_locked(&bj->job);
    job_unlock();
    assert_string_equal(json_object_get_string(json_object_object_get(info, "status")),
                        "concluded");
    assert_false(json_object_object_get_ex(info, "error", NULL));
    json_object_put(info);
    assert_int_equal(s.freed, 0);
    dismiss(&bj->job);
    jt_assert_finished(&s, true, 0);
    jt_expect_events("md", "JSC created, JSC running, JSC waiting, JSC pending, "
                           "BLOCK_JOB_COMPLETED, JSC concluded, JSC null");

    /* Failure: skips pending, even with manual finalize; error in query. */
    tj_init(&s, "fail");
    s.fail_at = 2;
    bj = tj_block_create(&s, "fail", bs, MANUAL, NULL, 0, NULL, &error_abort);
    job_start(&bj->job);
    assert_true(jt_wait_status(&bj->job, JOB_STATUS_CONCLUDED, 5000));
    job_lock();
    info = job_query_locked(&bj->job);
    job_unlock();
    assert_string_equal(json_object_get_string(json_object_object_get(info, "error")),
                        "Input/output error");
    json_object_put(info);
    dismiss(&bj->job);
    jt_assert_finished(&s, false, -EIO);
    jt_expect_events("fail", "JSC created, JSC running, JSC aborting, "
                             "BLOCK_JOB_COMPLETED error=Input/output error, "
                             "JSC concluded, JSC null");

    /* Ready, then complete. */
    tj_init(&s, "rdy");
    s.ready_after = 1;
    bj = tj_block_create(&s, "rdy", bs, 0, NULL, 0, NULL, &error_abort);
    job_start(&bj->job);
    assert_true(jt_wait_status(&bj->job, JOB_STATUS_READY, 5000));
    complete(&bj->job);
    assert_true(TU_POLL_UNTIL(s.freed == 1, 5000));
    jt_assert_finished(&s, true, 0);
    jt_expect_events("rdy", "JSC created, JSC running, JSC ready, BLOCK_JOB_READY, "
                            "JSC waiting, JSC pending, BLOCK_JOB_COMPLETED, JSC concluded, "
                            "JSC null");

    /* A plain (non-block) job, manual dismiss: no BLOCK_JOB_* events. */
    tj_init(&s, "create");
    s.iterations = 2;
    job = tj_create(&s, JOB_MANUAL_DISMISS, NULL, NULL, &error_abort);
    job_start(job);
    assert_true(jt_wait_status(job, JOB_STATUS_CONCLUDED, 5000));
    dismiss(job);
    jt_assert_finished(&s, true, 0);
    jt_expect_events("create", "JSC created, JSC running, JSC waiting, JSC pending, "
                               "JSC concluded, JSC null");
    bdrv_unref(bs);
}

/* BLOCK_JOB_COMPLETED reports offset == len for a finished job. */
static BdMutex off_lock;
static char off_seen[128];

static void off_sink(const char *name, json_object *data)
{
    if (!strcmp(name, "BLOCK_JOB_COMPLETED")) {
        bd_mutex_lock(&off_lock);
        snprintf(off_seen, sizeof(off_seen), "len=%s offset=%s speed=%s type=%s",
                 jt_str(data, "len"), jt_str(data, "offset"), jt_str(data, "speed"),
                 jt_str(data, "type"));
        bd_mutex_unlock(&off_lock);
    }
    json_object_put(data);
}

static void test_completed_event_payload(void **state)
{
    BlockDriverState *bs = jt_open_null("n0");
    TJState s;
    BlockJob *bj;

    (void)state;
    bd_mutex_init(&off_lock);
    job_set_event_sink(off_sink);
    tj_init(&s, "j");
    s.iterations = 3;
    s.bytes_per_iter = 512;
    bj = tj_block_create(&s, "j", bs, 0, NULL, 123456, NULL, &error_abort);
    job_progress_set_remaining(&bj->job, 3 * 512);
    job_start(&bj->job);
    assert_true(TU_POLL_UNTIL(s.freed == 1, 5000));
    bd_mutex_lock(&off_lock);
    assert_string_equal(off_seen, "len=1536 offset=1536 speed=123456 type=backup");
    bd_mutex_unlock(&off_lock);
    bd_mutex_destroy(&off_lock);
    bdrv_unref(bs);
}

/* ---- Error policy (jobs.md 10) --------------------------------------------------- */

static const char *iostatus_of(BlockJob *bj)
{
    static char buf[16];
    json_object *info;

    job_lock();
    info = block_job_query_locked(bj);
    job_unlock();
    snprintf(buf, sizeof(buf), "%s",
             json_object_get_string(json_object_object_get(info, "io-status")));
    json_object_put(info);
    return buf;
}

static void run_error_case(BlockDriverState *bs, const char *name, BlockdevOnError pol,
                           int error, bool is_read, bool from_ready, int want_action,
                           const char *want_iostatus, const char *want_event)
{
    TJState s;
    BlockJob *bj;
    JobStatus parked = from_ready ? JOB_STATUS_STANDBY : JOB_STATUS_PAUSED;
    JobStatus back = from_ready ? JOB_STATUS_READY : JOB_STATUS_RUNNING;
    char *ev;
    bool found;

    tj_init(&s, name);
    s.err_at = 3;
    s.err_policy = pol;
    s.err_errno = error;
    s.err_is_read = is_read;
    if (from_ready) {
        s.ready_after = 1;
    }
    bj = tj_block_create(&s, name, bs, 0, NULL, 0, NULL, &error_abort);
    job_start(&bj->job);
    assert_true(TU_POLL_UNTIL(atomic_read(&s.err_action) != -1, 5000));
    assert_int_equal(atomic_read(&s.err_action), want_action);
    if (want_action == BLOCK_ERROR_ACTION_STOP) {
        assert_true(jt_wait_status(&bj->job, parked, 5000));
        assert_string_equal(iostatus_of(bj), want_iostatus);
        job_lock();
        assert_true(job_user_paused_locked(&bj->job));
        job_unlock();
        user_pause(&bj->job, "Job is already paused");
        user_resume(&bj->job, NULL);
        assert_true(jt_wait_status(&bj->job, back, 5000));
        assert_string_equal(iostatus_of(bj), "ok");
    } else {
        assert_true(poll_iters_past(&s, 4, 5000));
        assert_string_equal(iostatus_of(bj), "ok");
        assert_int_equal(job_get_status(&bj->job), back);
    }
    if (from_ready) {
        complete(&bj->job);
    } else {
        atomic_set(&s.stop, 1);
    }
    assert_true(TU_POLL_UNTIL(s.freed == 1, 5000));
    jt_assert_finished(&s, true, 0);
    ev = jt_events_of(name);
    found = strstr(ev, want_event) != NULL;
    if (!found) {
        fprintf(stderr, "%s: events [%s] lack [%s]\n", name, ev, want_event);
    }
    assert_true(found);
    free(ev);
}

static void test_error_policy(void **state)
{
    BlockDriverState *bs = jt_open_null("n0");
    BlockdevOnError p;
    Error *err = NULL;

    (void)state;
    assert_true(blockdev_on_error_parse("on-source-error", NULL, &p, &error_abort));
    assert_int_equal(p, BLOCKDEV_ON_ERROR_REPORT);
    assert_true(blockdev_on_error_parse("x", "enospc", &p, &error_abort));
    assert_int_equal(p, BLOCKDEV_ON_ERROR_ENOSPC);
    assert_false(blockdev_on_error_parse("on-target-error", "bogus", &p, &err));
    assert_null(check_err(err, "Parameter 'on-target-error' does not accept value 'bogus'"));

    run_error_case(bs, "report", BLOCKDEV_ON_ERROR_REPORT, EIO, true, false,
                   BLOCK_ERROR_ACTION_REPORT, "ok", "BLOCK_JOB_ERROR read report, JSC waiting");
    run_error_case(bs, "ignore", BLOCKDEV_ON_ERROR_IGNORE, EIO, false, false,
                   BLOCK_ERROR_ACTION_IGNORE, "ok", "BLOCK_JOB_ERROR write ignore, JSC waiting");
    run_error_case(bs, "stop", BLOCKDEV_ON_ERROR_STOP, EIO, false, false,
                   BLOCK_ERROR_ACTION_STOP, "failed",
                   "JSC running, BLOCK_JOB_ERROR write stop, JSC paused, JSC running, "
                   "JSC waiting");
    run_error_case(bs, "stop-ready", BLOCKDEV_ON_ERROR_STOP, EIO, true, true,
                   BLOCK_ERROR_ACTION_STOP, "failed",
                   "BLOCK_JOB_ERROR read stop, JSC standby, JSC ready, JSC waiting");
    run_error_case(bs, "enospc", BLOCKDEV_ON_ERROR_ENOSPC, ENOSPC, false, false,
                   BLOCK_ERROR_ACTION_STOP, "nospace",
                   "BLOCK_JOB_ERROR write stop, JSC paused, JSC running");
    run_error_case(bs, "enospc-eio", BLOCKDEV_ON_ERROR_ENOSPC, EIO, false, false,
                   BLOCK_ERROR_ACTION_REPORT, "ok", "BLOCK_JOB_ERROR write report");
    run_error_case(bs, "auto", BLOCKDEV_ON_ERROR_AUTO, ENOSPC, true, false,
                   BLOCK_ERROR_ACTION_STOP, "nospace", "BLOCK_JOB_ERROR read stop, JSC paused");
    bdrv_unref(bs);
}

/* ---- Speed limit (jobs.md 6.1) -------------------------------------------------- */

static void test_speed_limit(void **state)
{
    BlockDriverState *bs = jt_open_null("n0");
    TJState s;
    BlockJob *bj;
    int64_t t0, took, expect;
    json_object *info;

    (void)state;
    /* 24 x 64 KiB at 4 MiB/s: about 0.375 s. */
    tj_init(&s, "fast");
    s.iterations = 24;
    s.bytes_per_iter = 64 * 1024;
    s.wait_mode = TJ_PAUSE_POINT;
    bj = tj_block_create(&s, "fast", bs, 0, NULL, 4 << 20, NULL, &error_abort);
    job_lock();
    info = block_job_query_locked(bj);
    job_unlock();
    assert_int_equal(json_object_get_int64(json_object_object_get(info, "speed")), 4 << 20);
    json_object_put(info);
    expect = (int64_t)24 * 64 * 1024 * TU_SEC / (4 << 20);
    t0 = clock_now_ns();
    job_start(&bj->job);
    assert_true(TU_POLL_UNTIL(s.freed == 1, 10000));
    took = clock_now_ns() - t0;
    fprintf(stderr, "24 x 64 KiB at 4 MiB/s took %.3f s (nominal %.3f s)\n",
            took / 1e9, expect / 1e9);
    assert_true(took >= expect / 2);
    assert_true(took <= 3 * expect + TU_SEC);
    jt_assert_finished(&s, true, 0);

    /* 64 KiB at 1 KiB/s: the first throttle sleep lasts about a minute. */
    tj_init(&s, "slow");
    s.iterations = 4;
    s.bytes_per_iter = 64 * 1024;
    s.wait_mode = TJ_PAUSE_POINT;
    bj = tj_block_create(&s, "slow", bs, 0, NULL, 1024, NULL, &error_abort);
    job_start(&bj->job);
    assert_true(TU_POLL_UNTIL(jt_sleeping(&bj->job), 5000));
    /* Lowering the speed does not kick the sleeper. */
    set_speed(bj, 512, NULL);
    set_speed(bj, -1, "Parameter 'speed' expects a non-negative value");
    tu_run_main_loop_ms(50);
    assert_true(jt_sleeping(&bj->job));
    assert_int_equal(atomic_read(&s.iters), 0);
    /* Unlimited: wakes it, and the rest runs unthrottled. */
    t0 = clock_now_ns();
    set_speed(bj, 0, NULL);
    assert_true(TU_POLL_UNTIL(s.freed == 1, 5000));
    assert_true(clock_now_ns() - t0 < 2 * TU_SEC);
    jt_assert_finished(&s, true, 0);

    /* Raising the speed also wakes it. */
    tj_init(&s, "raise");
    s.iterations = 2;
    s.bytes_per_iter = 64 * 1024;
    s.wait_mode = TJ_PAUSE_POINT;
    bj = tj_block_create(&s, "raise", bs, 0, NULL, 1024, NULL, &error_abort);
    job_start(&bj->job);
    assert_true(TU_POLL_UNTIL(jt_sleeping(&bj->job), 5000));
    set_speed(bj, 1 << 30, NULL);
    assert_true(TU_POLL_UNTIL(s.freed == 1, 5000));
    jt_assert_finished(&s, true, 0);

    /* A cancel interrupts a throttle sleep. */
    tj_init(&s, "cancel");
    s.bytes_per_iter = 64 * 1024;
    s.wait_mode = TJ_PAUSE_POINT;
    bj = tj_block_create(&s, "cancel", bs, 0, NULL, 1024, NULL, &error_abort);
    job_start(&bj->job);
    assert_true(TU_POLL_UNTIL(jt_sleeping(&bj->job), 5000));
    assert_int_equal(job_cancel_sync(&bj->job, true), -ECANCELED);
    assert_true(TU_POLL_UNTIL(s.freed == 1, 5000));
    jt_assert_finished(&s, false, -ECANCELED);
    bdrv_unref(bs);
}

/* ---- Callbacks that change the graph (jobs.md 11.1) ------------------------------ */

static void test_callbacks_take_graph_lock(void **state)
{
    BlockDriverState *bs = jt_open_null("n0");
    BlockDriverState *other = jt_open_null("n1");
    IOThread *iot = tu_iothread_new("io0");
    TJState bg, s[3];
    BlockJob *bgj, *bj[3];

    (void)state;
    /* A job in an iothread keeps taking job_mutex at its pause points and
     * is paused by every drain the callbacks do. */
    tj_init(&bg, "bg");
    bgj = tj_block_create(&bg, "bg", bs, 0, NULL, 0, iothread_get_aio_context(iot),
                          &error_abort);
    job_start(&bgj->job);

    for (int i = 0; i < 3; i++) {
        static const char *const names[] = { "ok", "fail", "pfail" };
        tj_init(&s[i], names[i]);
        s[i].graph_bs = other;
        s[i].iterations = 3;
        if (i == 1) {
            s[i].fail_at = 2;
        }
        if (i == 2) {
            s[i].prepare_ret = -EINVAL;
        }
        bj[i] = tj_block_create(&s[i], names[i], bs, 0, NULL, 0,
                                i == 2 ? iothread_get_aio_context(iot) : NULL, &error_abort);
        job_start(&bj[i]->job);
    }
    for (int i = 0; i < 3; i++) {
        assert_true(TU_POLL_UNTIL(s[i].freed == 1, 10000));
    }
    jt_assert_finished(&s[0], true, 0);
    jt_assert_finished(&s[1], false, -EIO);
    jt_assert_finished(&s[2], false, -EINVAL);
    /* (The other jobs' callbacks drain, which pauses it meanwhile.) */
    jt_expect_events_tail("pfail", "JSC running, JSC waiting, JSC pending, "
                              "JSC aborting, BLOCK_JOB_COMPLETED error=Invalid argument, "
                              "JSC concluded, JSC null");
    assert_true(atomic_read(&bg.pauses) > 0);
    job_cancel_sync(&bgj->job, true);
    assert_true(TU_POLL_UNTIL(bg.freed == 1, 5000));
    jt_assert_finished(&bg, false, -ECANCELED);
    iothread_destroy(iot);
    bdrv_unref(other);
    bdrv_unref(bs);
}

/* ---- job_cancel_sync_all (jobs.md 5) --------------------------------------------- */

static void test_cancel_sync_all(void **state)
{
    BlockDriverState *bs = jt_open_null("n0");
    IOThread *iot = tu_iothread_new("io0");
    AioContext *ictx = iothread_get_aio_context(iot);
    enum { N = 8 };
    TJState s[N];
    Job *j[N];
    char names[N][8];

    (void)state;
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof(names[i]), "j%d", i);
        tj_init(&s[i], names[i]);
    }
    s[3].ready_after = 1;          /* ready */
    s[4].ready_after = 1;          /* standby */
    s[5].iterations = 1;           /* pending */
    s[6].iterations = 1;           /* concluded */
    s[7].wait_mode = TJ_YIELD;     /* parked in yield, iothread */
    for (int i = 0; i < N; i++) {
        AioContext *ctx = (i % 2) ? ictx : NULL;
        if (i < 4) {
            j[i] = &tj_block_create(&s[i], names[i], bs, i == 6 ? MANUAL : JOB_MANUAL_FINALIZE,
                                    NULL, 0, ctx, &error_abort)->job;
        } else {
            j[i] = tj_create(&s[i], MANUAL, NULL, ctx, &error_abort);
        }
        if (i != 0) {                  /* j0 stays created */
            job_start(j[i]);
        }
    }
    user_pause(j[2], NULL);
    assert_true(jt_wait_status(j[2], JOB_STATUS_PAUSED, 5000));
    assert_true(jt_wait_status(j[3], JOB_STATUS_READY, 5000));
    assert_true(jt_wait_status(j[4], JOB_STATUS_READY, 5000));
    user_pause(j[4], NULL);
    assert_true(jt_wait_status(j[4], JOB_STATUS_STANDBY, 5000));
    assert_true(jt_wait_status(j[5], JOB_STATUS_PENDING, 5000));
    assert_true(jt_wait_status(j[6], JOB_STATUS_PENDING, 5000));
    finalize(j[6]);
    assert_int_equal(job_get_status(j[6]), JOB_STATUS_CONCLUDED);

    job_cancel_sync_all();
    assert_int_equal(jt_job_count(), 0);
    for (int i = 0; i < N; i++) {
        jt_assert_finished(&s[i], i == 6, i == 6 ? 0 : -ECANCELED);
    }
    iothread_destroy(iot);
    bdrv_unref(bs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        JT_TEST(test_job_ids),
        JT_TEST(test_block_job_early_fail),
        JT_TEST(test_verbs_all_states),
        JT_TEST(test_pause_resume_running),
        JT_TEST(test_pause_before_start),
        JT_TEST(test_pause_while_sleeping),
        JT_TEST(test_yield_and_enter),
        JT_TEST(test_drain_pauses_block_job),
        JT_TEST(test_cancel_created),
        JT_TEST(test_cancel_running),
        JT_TEST(test_cancel_paused),
        JT_TEST(test_cancel_ready_and_standby),
        JT_TEST(test_cancel_pending),
        JT_TEST(test_cancel_concluded),
        JT_TEST(test_user_cancel_async),
        JT_TEST(test_soft_cancel_ready),
        JT_TEST(test_complete_in_standby),
        JT_TEST(test_complete_refused),
        JT_TEST(test_events_normal),
        JT_TEST(test_completed_event_payload),
        JT_TEST(test_error_policy),
        JT_TEST(test_speed_limit),
        JT_TEST(test_callbacks_take_graph_lock),
        JT_TEST(test_cancel_sync_all),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
