/*
 * stress-jobs - jobs in two iothreads (and the main thread) while the main
 * thread applies the user verbs in random order.
 *
 * Plain jobs and block jobs on two null-co nodes, alone or grouped in
 * transactions of 2-3, with random settings: how they wait (sleep, yield,
 * pause points), how long they run, whether they fail, become ready, fail
 * in prepare, use a speed limit, or change the graph from their callbacks.
 * The main thread picks at random: create/start, user pause/resume,
 * set-speed, cancel (forced or soft), complete, finalize, dismiss, enter,
 * drained sections on a node or on everything.  At the end
 * job_cancel_sync_all() stops what is left.  Checked: no hang (alarm
 * watchdog and bounded waits), every job reaches "null" and is freed,
 * every job got exactly one of commit/abort then clean, cb and free (in
 * that order), no transaction both committed and aborted, and the number
 * of jobs created equals the number freed.
 *
 * Duration: STRESS_SECONDS if set, else the first argument (meson passes a
 * shorter one in the ASan build), else 60.  STRESS_SEED repeats a run.
 */
#include <time.h>

#define TU_WATCHDOG_SECONDS 900
#include "../unit/job-test-util.h"

#define NSLOTS 16
#define NGROUPS 64       /* >= NSLOTS: see group_alloc() */

typedef struct Slot {
    bool used;
    bool started;
    Job *job;                /* we hold a reference */
    bool is_block;
    int group;               /* transaction, index into groups[] */
    TJState s;
    char name[16];
} Slot;

typedef struct Group {
    int members, done, committed, aborted;
} Group;

static Slot slots[NSLOTS];
static Group groups[NGROUPS];
static int ngroups;
static uint64_t rng;
static long created, freed_total, committed_total, aborted_total, verbs_ok, verbs_refused;
static unsigned long events;        /* atomic */
static BlockDriverState *nodes[2];
static AioContext *ctxs[3];
static int next_id;

static void count_sink(const char *name, json_object *data)
{
    (void)name;
    json_object_put(data);
    atomic_inc(&events);
}

static unsigned rnd(unsigned n)
{
    return (unsigned)(tu_rand(&rng) >> 33) % n;
}

static void verb_result(Error *err)
{
    if (err) {
        verbs_refused++;
        error_free(err);
    } else {
        verbs_ok++;
    }
}

/* A finished job: check its callbacks and free the slot. */
static void slot_release(Slot *sl)
{
    TJState *s = &sl->s;
    Group *g = &groups[sl->group];
    bool committed = s->commit == 1;
    char want[8];

    job_unref(sl->job);
    snprintf(want, sizeof(want), "%s%cLBF", s->prepare ? "P" : "", committed ? 'C' : 'A');
    if (strcmp(s->order, want) || s->freed != 1 || s->cb != 1 ||
        (committed && s->cb_ret != 0) || (!committed && s->cb_ret >= 0) ||
        s->commit + s->abort != 1 || s->clean != 1) {
        fprintf(stderr, "job %s: callbacks '%s' (want '%s'), cb_ret %d, commit %d abort %d "
                "clean %d cb %d free %d\n", sl->name, s->order, want, s->cb_ret, s->commit,
                s->abort, s->clean, s->cb, s->freed);
        abort();
    }
    freed_total++;
    if (committed) {
        committed_total++;
        g->committed++;
    } else {
        aborted_total++;
        g->aborted++;
    }
    g->done++;
    if (g->committed && g->aborted) {
        fprintf(stderr, "transaction %d: %d members committed, %d aborted\n",
                sl->group, g->committed, g->aborted);
        abort();
    }
    sl->used = false;
}

static void reap(void)
{
    for (int i = 0; i < NSLOTS; i++) {
        if (slots[i].used && job_get_status(slots[i].job) == JOB_STATUS_NULL) {
            slot_release(&slots[i]);
        }
    }
}

static void configure(TJState *s, bool is_block)
{
    s->wait_mode = rnd(4) == 0 ? TJ_YIELD : (rnd(6) == 0 ? TJ_PAUSE_POINT : TJ_SLEEP);
    s->sleep_ns = rnd(3) == 0 ? 0 : (int64_t)rnd(2000) * 1000;
    s->iterations = rnd(5) == 0 ? -1 : (int)rnd(200);
    if (rnd(8) == 0) {
        s->fail_at = rnd(100);
    }
    if (rnd(4) == 0) {
        s->ready_after = rnd(50);
        s->soft_cancel = rnd(2);
    }
    if (rnd(16) == 0) {
        s->prepare_ret = -EINVAL;
    }
    if (is_block && rnd(3) == 0) {
        s->bytes_per_iter = 4096;
    }
    if (rnd(8) == 0) {
        s->graph_bs = nodes[rnd(2)];
    }
    /* A pause point loop yields only when throttled or paused, and the
     * speed may be 0: it must end on its own, soon. */
    if (s->wait_mode == TJ_PAUSE_POINT) {
        s->iterations = rnd(200);
        s->ready_after = -1;
    }
}

/*
 * A transaction record nobody uses any more (all its members finished).
 * Records are reused, never shared: a live transaction always has a live
 * slot, so NGROUPS >= NSLOTS records always leave one free.  (Sharing one
 * overflow record between transactions mixed up their counts: a false
 * "committed and aborted" report.)
 */
static int group_alloc(void)
{
    for (int g = 0; g < NGROUPS; g++) {
        if (groups[g].members == groups[g].done) {
            memset(&groups[g], 0, sizeof(groups[g]));
            if (g >= ngroups) {
                ngroups = g + 1;
            }
            return g;
        }
    }
    return -1;
}

static void create_group(void)
{
    int free_slots[NSLOTS], nfree = 0, n = 1 + (rnd(3) == 0 ? 1 + rnd(2) : 0);
    JobTxn *txn = NULL;
    int g = group_alloc();
    int flags = (rnd(3) == 0 ? JOB_MANUAL_FINALIZE : 0) | (rnd(3) == 0 ? JOB_MANUAL_DISMISS : 0);
    bool start_now = rnd(8) != 0;
    Slot *made[3];
    int nmade = 0;

    for (int i = 0; i < NSLOTS; i++) {
        if (!slots[i].used) {
            free_slots[nfree++] = i;
        }
    }
    if (nfree < n) {
        return;
    }
    if (g < 0) {
        return;
    }
    if (n > 1 || rnd(2)) {
        txn = job_txn_new();
    }
    for (int k = 0; k < n; k++) {
        Slot *sl = &slots[free_slots[k]];
        AioContext *ctx = ctxs[rnd(3)];

        memset(sl, 0, sizeof(*sl));
        snprintf(sl->name, sizeof(sl->name), "j%d", next_id++);
        tj_init(&sl->s, sl->name);
        sl->is_block = rnd(2);
        configure(&sl->s, sl->is_block);
        sl->group = g;
        if (sl->is_block) {
            BlockJob *bj = tj_block_create(&sl->s, sl->name, nodes[rnd(2)], flags, txn,
                                           rnd(3) == 0 ? 1 + rnd(4 << 20) : 0,
                                           ctx == main_aio_context() ? NULL : ctx,
                                           &error_abort);
            sl->job = &bj->job;
        } else {
            sl->job = tj_create(&sl->s, flags, txn, ctx, &error_abort);
        }
        job_ref(sl->job);
        sl->used = true;
        groups[g].members++;
        created++;
        made[nmade++] = sl;
    }
    if (start_now) {
        for (int k = 0; k < nmade; k++) {
            job_start(made[k]->job);
            made[k]->started = true;
        }
    }
    if (txn) {
        job_txn_unref(txn);
    }
}

static Slot *random_live_slot(void)
{
    int start = rnd(NSLOTS);

    for (int i = 0; i < NSLOTS; i++) {
        Slot *sl = &slots[(start + i) % NSLOTS];
        if (sl->used) {
            return sl;
        }
    }
    return NULL;
}

static void random_verb(Slot *sl)
{
    Error *err = NULL;
    Job *job = sl->job;
    unsigned v = rnd(14);

    switch (v) {
    case 0:
    case 1:
        job_lock();
        job_user_pause_locked(job, &err);
        job_unlock();
        break;
    case 2:
    case 3:
        job_lock();
        job_user_resume_locked(job, &err);
        job_unlock();
        break;
    case 4:
        if (sl->is_block) {
            job_lock();
            block_job_set_speed_locked((BlockJob *)job, rnd(2) ? 0 : 1 + rnd(8 << 20), &err);
            job_unlock();
        }
        break;
    case 5:
        job_lock();
        job_user_cancel_locked(job, rnd(2), &err);
        job_unlock();
        break;
    case 6:
    case 7:
        job_lock();
        job_complete_locked(job, &err);
        job_unlock();
        break;
    case 8:
        job_lock();
        job_finalize_locked(job, &err);
        job_unlock();
        break;
    case 9: {
        Job *j = job;
        job_lock();
        job_dismiss_locked(&j, &err);
        job_unlock();
        break;
    }
    case 10:
    case 11:
        job_enter(job);
        break;
    case 12:
        if (!sl->started) {
            job_lock();
            bool ok = job->status == JOB_STATUS_CREATED;
            job_unlock();
            if (ok) {
                job_start(job);
                sl->started = true;
            }
        }
        break;
    default:
        if (rnd(20) == 0) {
            int ret = job_cancel_sync(job, rnd(2));
            if (ret > 0) {
                fprintf(stderr, "job_cancel_sync returned %d\n", ret);
                abort();
            }
        }
        break;
    }
    if (v <= 9) {
        verb_result(err);
    }
}

static void poll_a_bit(void)
{
    unsigned ms = rnd(4);

    if (ms == 0) {
        /* Bounded: a job in the main context that sleeps 0 ns is always
         * ready to run again. */
        for (int i = 0; i < 64 && aio_poll(main_aio_context(), false); i++) {
        }
    } else {
        tu_run_main_loop_ms(ms);
    }
}

static void test_stress_jobs(void **state)
{
    long seconds = tu_env_long("STRESS_SECONDS", (long)(intptr_t)*state);
    const char *seed_env = getenv("STRESS_SEED");
    uint64_t seed = seed_env ? strtoull(seed_env, NULL, 0)
                             : (uint64_t)time(NULL) * 2654435761u ^ (uint64_t)getpid();
    IOThread *iot[2] = { tu_iothread_new("io0"), tu_iothread_new("io1") };
    int64_t deadline = clock_now_ns() + seconds * TU_SEC;
    long drains = 0, rounds = 0;

    alarm(seconds + 300);
    rng = seed | 1;
    fprintf(stderr, "stress-jobs: %ld s, seed %" PRIu64 " (STRESS_SEED=%" PRIu64 " repeats)\n",
            seconds, seed, seed);
    job_set_event_sink(count_sink);
    nodes[0] = jt_open_null("n0");
    nodes[1] = jt_open_null("n1");
    ctxs[0] = main_aio_context();
    ctxs[1] = iothread_get_aio_context(iot[0]);
    ctxs[2] = iothread_get_aio_context(iot[1]);

    while (clock_now_ns() < deadline) {
        unsigned a = rnd(16);
        Slot *sl;

        rounds++;
        if (a < 3) {
            create_group();
        } else if (a == 3) {
            /* A drained section with verbs inside it. */
            BlockDriverState *bs = nodes[rnd(2)];
            bool all = rnd(4) == 0;

            if (all) {
                bdrv_drain_all_begin();
            } else {
                bdrv_drained_begin(bs);
            }
            for (int k = rnd(3); k > 0; k--) {
                if ((sl = random_live_slot())) {
                    random_verb(sl);
                }
            }
            if (rnd(2)) {
                poll_a_bit();
            }
            if (all) {
                bdrv_drain_all_end();
            } else {
                bdrv_drained_end(bs);
            }
            drains++;
        } else if ((sl = random_live_slot())) {
            random_verb(sl);
        }
        poll_a_bit();
        reap();
    }

    job_cancel_sync_all();
    tu_drain_main();
    reap();
    for (int i = 0; i < NSLOTS; i++) {
        if (slots[i].used) {
            fprintf(stderr, "job %s left in state %s\n", slots[i].name,
                    job_status_str(job_get_status(slots[i].job)));
        }
        assert_false(slots[i].used);
    }
    assert_int_equal(jt_job_count(), 0);
    fprintf(stderr, "stress-jobs: %ld rounds, %ld jobs created, %ld freed (%ld committed, "
            "%ld aborted), %ld verbs accepted, %ld refused, %ld drains, %lu events\n",
            rounds, created, freed_total, committed_total, aborted_total, verbs_ok,
            verbs_refused, drains, atomic_read(&events));
    assert_int_equal(created, freed_total);
    assert_true(created > 0);
    assert_true(committed_total > 0);
    assert_true(aborted_total > 0);
    bdrv_unref(nodes[0]);
    bdrv_unref(nodes[1]);
    iothread_destroy(iot[0]);
    iothread_destroy(iot[1]);
    job_set_event_sink(NULL);
}

static int stress_setup(void **state)
{
    return jt_setup(state);
}

int main(int argc, char **argv)
{
    long def = argc > 1 ? atol(argv[1]) : 60;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_prestate_setup_teardown(test_stress_jobs, stress_setup, jt_teardown,
                                                 (void *)(intptr_t)(def > 0 ? def : 60)),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
