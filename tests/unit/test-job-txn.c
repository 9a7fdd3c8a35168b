/*
 * test-job-txn - transactions (jobs.md 7, 13 items 13-20): a txn succeeds
 * or fails as a whole.  Every member gets exactly one of commit/abort,
 * then clean, then its completion callback; no member commits when any
 * fails or is cancelled; the others end with -ECANCELED.  The creator
 * drops its txn reference right after starting the jobs (item 19) in every
 * case here.
 */
#include "job-test-util.h"

#define MAXJ 3

typedef struct Txn {
    int n;
    TJState s[MAXJ];
    BlockJob *bj[MAXJ];
    Job *job[MAXJ];
} Txn;

static const char *const jnames[MAXJ] = { "a", "b", "c" };

static void txn_init(Txn *t, int n)
{
    memset(t, 0, sizeof(*t));
    t->n = n;
    for (int i = 0; i < n; i++) {
        tj_init(&t->s[i], jnames[i]);
    }
}

/* Create every member (block jobs on @bs), start them, drop the txn. */
static void txn_start(Txn *t, BlockDriverState *bs, int flags)
{
    JobTxn *txn = job_txn_new();

    for (int i = 0; i < t->n; i++) {
        t->bj[i] = tj_block_create(&t->s[i], jnames[i], bs, flags, txn, 0, NULL, &error_abort);
        t->job[i] = &t->bj[i]->job;
    }
    for (int i = 0; i < t->n; i++) {
        job_start(t->job[i]);
    }
    job_txn_unref(txn);
}

static bool txn_all_freed(Txn *t)
{
    for (int i = 0; i < t->n; i++) {
        if (t->s[i].freed != 1) {
            return false;
        }
    }
    return true;
}

/*
 * The callback log: per job P? then C or A, L, B (F is ignored: when the
 * last reference goes depends on who holds one); a job's C/A, L and B are
 * contiguous (finalization is per job); all members commit or none does.
 */
static void check_log(Txn *t, bool committed)
{
    char log[sizeof(jt_cblog)];
    char seq[MAXJ][16] = { { 0 } };
    char *save = NULL;
    int cur = -1;            /* job in the middle of its finalization */
    int bad = 0;

    snprintf(log, sizeof(log), "%s", jt_cblog);
    for (char *tok = strtok_r(log, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
        int j = tok[0] - 'a';
        char c = tok[2];

        if (j < 0 || j >= t->n || c == 'F') {
            continue;
        }
        if (c == 'C' || c == 'A') {
            if (cur != -1) {
                bad++;
            }
            cur = j;
        } else if (c == 'L' || c == 'B') {
            if (cur != j) {
                bad++;
            }
            if (c == 'B') {
                cur = -1;
            }
        }
        seq[j][strlen(seq[j])] = c;
    }
    if (bad) {
        fprintf(stderr, "interleaved finalization: %s\n", jt_cblog);
    }
    assert_int_equal(bad, 0);
    for (int i = 0; i < t->n; i++) {
        char want[8];
        snprintf(want, sizeof(want), "%s%cLB", t->s[i].prepare ? "P" : "", committed ? 'C' : 'A');
        if (strcmp(seq[i], want)) {
            fprintf(stderr, "job %s: %s, want %s (log %s)\n", jnames[i], seq[i], want, jt_cblog);
        }
        assert_string_equal(seq[i], want);
        assert_int_equal(t->s[i].freed, 1);
    }
}

static void txn_wait(Txn *t)
{
    if (!TU_POLL_UNTIL(txn_all_freed(t), 10000)) {
        fprintf(stderr, "log: %s\n", jt_cblog);
        fail_msg("transaction did not finish");
    }
}

/* ---- Single jobs (items 13-15) ---------------------------------------------- */

static const JobDriver nocancel_driver = {
    .instance_size = sizeof(TestJob), .job_type = JOB_TYPE_CREATE, .run = tj_run,
    .prepare = tj_prepare, .commit = tj_commit, .abort = tj_abort, .clean = tj_clean,
    .free = tj_free,
};

static void test_single(void **state)
{
    BlockDriverState *bs = jt_open_null("n0");
    JobTxn *txn;
    Txn t;
    Job *job;
    TJState s;

    (void)state;
    txn_init(&t, 1);
    t.s[0].iterations = 3;
    txn_start(&t, bs, 0);
    txn_wait(&t);
    check_log(&t, true);
    assert_int_equal(t.s[0].cb_ret, 0);
    jt_expect_events("a", "JSC created, JSC running, JSC waiting, JSC pending, "
                          "BLOCK_JOB_COMPLETED, JSC concluded, JSC null");

    jt_events_reset();
    jt_cblog[0] = 0;
    txn_init(&t, 1);
    t.s[0].fail_at = 2;
    txn_start(&t, bs, 0);
    txn_wait(&t);
    check_log(&t, false);
    assert_int_equal(t.s[0].cb_ret, -EIO);
    jt_expect_events("a", "JSC created, JSC running, JSC aborting, "
                          "BLOCK_JOB_COMPLETED error=Input/output error, JSC concluded, "
                          "JSC null");

    /* A soft cancel of a driver without cancel() is a real one. */
    jt_events_reset();
    jt_cblog[0] = 0;
    tj_init(&s, "x");
    txn = job_txn_new();
    job = job_create("x", &nocancel_driver, txn, main_aio_context(), 0, tj_cb, &s,
                     &error_abort);
    job_start(job);
    job_txn_unref(txn);
    assert_true(TU_POLL_UNTIL(atomic_read(&s.iters) > 2, 5000));
    job_lock();
    job_user_cancel_locked(job, false, &error_abort);
    job_unlock();
    assert_true(TU_POLL_UNTIL(s.freed == 1, 5000));
    jt_assert_finished(&s, false, -ECANCELED);
    jt_expect_events("x", "JSC created, JSC running, JSC aborting, JSC concluded, JSC null");
    bdrv_unref(bs);
}

/* ---- Pairs and triples, one fails (items 16, 17) ----------------------------------- */

static void test_all_succeed(void **state)
{
    BlockDriverState *bs = jt_open_null("n0");
    Txn t;

    (void)state;
    for (int n = 2; n <= 3; n++) {
        jt_cblog[0] = 0;
        txn_init(&t, n);
        for (int i = 0; i < n; i++) {
            t.s[i].iterations = 1 + 3 * i;
        }
        txn_start(&t, bs, 0);
        txn_wait(&t);
        check_log(&t, true);
        for (int i = 0; i < n; i++) {
            assert_int_equal(t.s[i].cb_ret, 0);
            assert_int_equal(t.s[i].prepare, 1);
        }
    }
    /* All prepares, newest member first, come before the first commit. */
    assert_non_null(strstr(jt_cblog, "c:P b:P a:P"));
    /* The one that finished first waited for the others. */
    jt_expect_events("a", "JSC created, JSC running, JSC waiting, JSC pending, "
                          "BLOCK_JOB_COMPLETED, JSC concluded, JSC null, "
                          "JSC created, JSC running, JSC waiting, JSC pending, "
                          "BLOCK_JOB_COMPLETED, JSC concluded, JSC null");
    bdrv_unref(bs);
}

static void run_one_fails(BlockDriverState *bs, int n, int failer, int fail_at,
                          const int *iters)
{
    Txn t;

    jt_events_reset();
    jt_cblog[0] = 0;
    txn_init(&t, n);
    for (int i = 0; i < n; i++) {
        t.s[i].iterations = iters[i];
    }
    t.s[failer].iterations = -1;
    t.s[failer].fail_at = fail_at;
    txn_start(&t, bs, 0);
    txn_wait(&t);
    check_log(&t, false);
    for (int i = 0; i < n; i++) {
        assert_int_equal(t.s[i].prepare, 0);
        assert_int_equal(t.s[i].cb_ret, i == failer ? -EIO : -ECANCELED);
        /* Those that had finished waited for the failure. */
        jt_expect_events_tail(jnames[i], i == failer
            ? "JSC running, JSC aborting, BLOCK_JOB_COMPLETED error=Input/output error, "
              "JSC concluded, JSC null"
            : "JSC aborting, BLOCK_JOB_CANCELLED, JSC concluded, JSC null");
        if (i != failer && iters[i] * 2 + 2 <= fail_at) {
            jt_expect_events_tail(jnames[i], "JSC running, JSC waiting, JSC aborting, "
                                  "BLOCK_JOB_CANCELLED, JSC concluded, JSC null");
        }
    }
}

static void test_one_fails(void **state)
{
    BlockDriverState *bs = jt_open_null("n0");
    static const int pair_iters[][2] = { { 1, 1 }, { 10, 10 }, { 20, 1 }, { 1, 20 } };
    static const int fail_ats[] = { 0, 4, 12 };
    static const int tri_iters[][3] = { { 2, 30, 8 }, { 30, 2, 30 }, { 2, 2, 2 } };

    (void)state;
    /* Pairs: the first or the second fails, before or after the other
     * finished (both completion orders). */
    for (size_t k = 0; k < 4; k++) {
        for (int failer = 0; failer < 2; failer++) {
            for (size_t f = 0; f < 3; f++) {
                run_one_fails(bs, 2, failer, fail_ats[f], pair_iters[k]);
            }
        }
    }
    /* Triples. */
    for (size_t k = 0; k < 3; k++) {
        for (int failer = 0; failer < 3; failer++) {
            for (size_t f = 0; f < 3; f++) {
                run_one_fails(bs, 3, failer, fail_ats[f], tri_iters[k]);
            }
        }
    }
    bdrv_unref(bs);
}

/* ---- Cancel one member (item 18) ------------------------------------------------ */

enum { WHEN_CREATED, WHEN_RUNNING, WHEN_PAUSED, WHEN_WAITING, WHEN_OTHER_WAITING };

static void run_one_cancelled(BlockDriverState *bs, int n, int victim, int when, bool sync)
{
    Txn t;
    JobTxn *txn;

    jt_events_reset();
    jt_cblog[0] = 0;
    txn_init(&t, n);
    for (int i = 0; i < n; i++) {
        t.s[i].iterations = -1;
        if (when == WHEN_OTHER_WAITING && i != victim) {
            t.s[i].iterations = 1;
        }
    }
    if (when == WHEN_WAITING) {
        t.s[victim].iterations = 1;
    }
    if (when == WHEN_CREATED) {
        txn = job_txn_new();
        for (int i = 0; i < n; i++) {
            t.bj[i] = tj_block_create(&t.s[i], jnames[i], bs, 0, txn, 0, NULL, &error_abort);
            t.job[i] = &t.bj[i]->job;
        }
        job_txn_unref(txn);
    } else {
        txn_start(&t, bs, 0);
        assert_true(TU_POLL_UNTIL(atomic_read(&t.s[victim].iters) >= 1, 5000));
    }
    switch (when) {
    case WHEN_PAUSED:
        job_lock();
        job_user_pause_locked(t.job[victim], &error_abort);
        job_unlock();
        assert_true(jt_wait_status(t.job[victim], JOB_STATUS_PAUSED, 5000));
        break;
    case WHEN_WAITING:
        assert_true(jt_wait_status(t.job[victim], JOB_STATUS_WAITING, 5000));
        break;
    case WHEN_OTHER_WAITING:
        for (int i = 0; i < n; i++) {
            if (i != victim) {
                assert_true(jt_wait_status(t.job[i], JOB_STATUS_WAITING, 5000));
            }
        }
        break;
    }
    if (sync) {
        assert_int_equal(job_cancel_sync(t.job[victim], true), -ECANCELED);
    } else {
        job_lock();
        job_user_cancel_locked(t.job[victim], true, &error_abort);
        job_unlock();
    }
    txn_wait(&t);
    check_log(&t, false);
    for (int i = 0; i < n; i++) {
        assert_int_equal(t.s[i].cb_ret, -ECANCELED);
        if (when == WHEN_CREATED) {
            assert_int_equal(t.s[i].runs, 0);
            jt_expect_events(jnames[i], "JSC created, JSC aborting, JSC concluded, JSC null");
        } else {
            jt_expect_events_tail(jnames[i], "JSC aborting, BLOCK_JOB_CANCELLED, "
                                  "JSC concluded, JSC null");
        }
    }
}

static void test_one_cancelled(void **state)
{
    BlockDriverState *bs = jt_open_null("n0");

    (void)state;
    for (int n = 2; n <= 3; n++) {
        for (int victim = 0; victim < n; victim++) {
            for (int when = WHEN_RUNNING; when <= WHEN_OTHER_WAITING; when++) {
                run_one_cancelled(bs, n, victim, when, false);
                run_one_cancelled(bs, n, victim, when, true);
            }
        }
    }
    bdrv_unref(bs);
}

/* Cancelling a never-started member of a txn whose other members were
 * never started either (a QMP transaction that fails after creating its
 * grouped jobs cancels them synchronously). */
static void test_cancel_unstarted_txn(void **state)
{
    BlockDriverState *bs = jt_open_null("n0");

    (void)state;
    for (int n = 2; n <= 3; n++) {
        for (int victim = 0; victim < n; victim++) {
            run_one_cancelled(bs, n, victim, WHEN_CREATED, true);
            run_one_cancelled(bs, n, victim, WHEN_CREATED, false);
        }
    }
    bdrv_unref(bs);
}

/* ---- The fail/cancel race (item 20) ---------------------------------------------- */

static void test_cancel_race(void **state)
{
    BlockDriverState *bs = jt_open_null("n0");
    Txn t;

    (void)state;
    for (int order = 0; order < 3; order++) {
        jt_events_reset();
        jt_cblog[0] = 0;
        txn_init(&t, 2);
        for (int i = 0; i < 2; i++) {
            t.s[i].wait_mode = TJ_YIELD;
            t.s[i].iterations = 1;      /* done after one job_enter */
        }
        txn_start(&t, bs, 0);
        /* Both parked in job_yield. */
        tu_run_main_loop_ms(10);
        assert_int_equal(atomic_read(&t.s[0].iters) + atomic_read(&t.s[1].iters), 0);
        job_lock();
        if (order == 0) {
            /* cancel a, then let b finish: both wake in the same loop pass */
            job_cancel_locked(t.job[0], true);
            job_enter_cond_locked(t.job[1], NULL);
        } else if (order == 1) {
            /* b is kicked first, a cancelled before anything ran */
            job_enter_cond_locked(t.job[1], NULL);
            job_cancel_locked(t.job[0], true);
        } else {
            /* b's run() returns, its exit BH not yet run, then cancel a */
            job_enter_cond_locked(t.job[1], NULL);
            job_unlock();
            assert_true(TU_POLL_UNTIL(atomic_read(&t.s[1].iters) == 1, 5000));
            job_lock();
            job_cancel_locked(t.job[0], true);
        }
        job_unlock();
        txn_wait(&t);
        check_log(&t, false);
        assert_int_equal(t.s[0].cb_ret, -ECANCELED);
        assert_int_equal(t.s[1].cb_ret, -ECANCELED);
        assert_int_equal(t.s[1].commit, 0);
        assert_int_equal(t.s[1].prepare, 0);
    }
    bdrv_unref(bs);
}

/* ---- Prepare failure (jobs.md 7.2 step 5, 7.3) ---------------------------------- */

static void test_prepare_fails(void **state)
{
    BlockDriverState *bs = jt_open_null("n0");
    Txn t;

    (void)state;
    for (int manual = 0; manual < 2; manual++) {
        for (int failer = 0; failer < 3; failer++) {
            jt_events_reset();
            jt_cblog[0] = 0;
            txn_init(&t, 3);
            for (int i = 0; i < 3; i++) {
                t.s[i].iterations = 1 + i;
            }
            t.s[failer].prepare_ret = -EINVAL;
            txn_start(&t, bs, manual ? JOB_MANUAL_FINALIZE : 0);
            if (manual) {
                /* Finalize through a member other than the failing one:
                 * it succeeds, and still nobody commits. */
                Job *via = t.job[(failer + 1) % 3];
                for (int i = 0; i < 3; i++) {
                    assert_true(jt_wait_status(t.job[i], JOB_STATUS_PENDING, 5000));
                }
                job_lock();
                job_ref_locked(via);
                job_finalize_locked(via, &error_abort);
                job_unref_locked(via);
                job_unlock();
            }
            txn_wait(&t);
            check_log(&t, false);
            for (int i = 0; i < 3; i++) {
                assert_int_equal(t.s[i].commit, 0);
                assert_int_equal(t.s[i].cb_ret, i == failer ? -EINVAL : -ECANCELED);
                jt_expect_events_tail(jnames[i], i == failer
                    ? (manual ? "JSC pending, BLOCK_JOB_PENDING, JSC aborting, "
                                "BLOCK_JOB_COMPLETED error=Invalid argument, "
                                "JSC concluded, JSC null"
                              : "JSC pending, JSC aborting, "
                                "BLOCK_JOB_COMPLETED error=Invalid argument, "
                                "JSC concluded, JSC null")
                    : "JSC aborting, BLOCK_JOB_CANCELLED, JSC concluded, JSC null");
            }
        }
    }
    bdrv_unref(bs);
}

/* ---- Manual finalize of a txn and members in iothreads ------------------------------ */

static void test_manual_finalize_iothreads(void **state)
{
    BlockDriverState *bs = jt_open_null("n0");
    IOThread *iot[2] = { tu_iothread_new("io0"), tu_iothread_new("io1") };
    JobTxn *txn = job_txn_new();
    Txn t;
    Error *err = NULL;

    (void)state;
    txn_init(&t, 3);
    for (int i = 0; i < 3; i++) {
        t.s[i].iterations = 2 + 5 * i;
        t.bj[i] = tj_block_create(&t.s[i], jnames[i], bs, JOB_MANUAL_FINALIZE, txn, 0,
                                  i ? iothread_get_aio_context(iot[i - 1]) : NULL,
                                  &error_abort);
        t.job[i] = &t.bj[i]->job;
    }
    for (int i = 0; i < 3; i++) {
        job_start(t.job[i]);
    }
    job_txn_unref(txn);
    assert_true(jt_wait_status(t.job[0], JOB_STATUS_WAITING, 5000));
    /* Finalize is refused while waiting. */
    job_lock();
    job_finalize_locked(t.job[0], &err);
    job_unlock();
    assert_non_null(err);
    assert_string_equal(error_get_pretty(err),
                        "Job 'a' in state 'waiting' cannot accept command verb 'finalize'");
    error_free(err);
    for (int i = 0; i < 3; i++) {
        assert_true(jt_wait_status(t.job[i], JOB_STATUS_PENDING, 5000));
    }
    for (int i = 0; i < 3; i++) {
        jt_expect_events_tail(jnames[i], "JSC pending, BLOCK_JOB_PENDING");
    }
    job_lock();
    job_finalize_locked(t.job[2], &error_abort);
    job_unlock();
    txn_wait(&t);
    check_log(&t, true);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(t.s[i].cb_ret, 0);
    }
    iothread_destroy(iot[0]);
    iothread_destroy(iot[1]);
    bdrv_unref(bs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        JT_TEST(test_single),
        JT_TEST(test_all_succeed),
        JT_TEST(test_one_fails),
        JT_TEST(test_one_cancelled),
        JT_TEST(test_cancel_unstarted_txn),
        JT_TEST(test_cancel_race),
        JT_TEST(test_prepare_fails),
        JT_TEST(test_manual_finalize_iothreads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
