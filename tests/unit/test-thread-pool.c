/*
 * test-thread-pool - work on worker threads, completion in the
 * submitting context.
 *
 * Pool workers are detached and may still touch the submitting context
 * after its completion has run (see test_destroy_context_after_completion
 * at the end).  So that only that test trips over this, the others share
 * one main loop and one iothread that are never torn down.
 */
#include <sched.h>
#include <string.h>

#include "test-util.h"
#include "blockd/thread-pool.h"

static unsigned running;       /* atomic: functions running right now */
static unsigned max_running;   /* atomic: the most seen at once */

static void note_running(int delta)
{
    unsigned now = atomic_fetch_add(&running, (unsigned)delta) + (unsigned)delta;
    unsigned old = atomic_read(&max_running);

    while (delta > 0 && now > old) {
        unsigned seen = atomic_cmpxchg(&max_running, old, now);
        if (seen == old) {
            break;
        }
        old = seen;
    }
}

static void reset_running(void)
{
    atomic_set(&running, 0);
    atomic_set(&max_running, 0);
}

typedef struct Job {
    int input;
    int sleep_ms;
    pthread_t worker;
    AioContext *worker_ctx;
    pthread_t completed_in;
    AioContext *completed_ctx;
    int ret;
    unsigned done;           /* atomic */
    int completions;
} Job;

static int job_fn(void *opaque)
{
    Job *j = opaque;

    note_running(1);
    j->worker = pthread_self();
    j->worker_ctx = current_aio_context();
    if (j->sleep_ms) {
        tu_sleep_ms(j->sleep_ms);
    }
    note_running(-1);
    return j->input * 3 + 1;
}

static void job_done(void *opaque, int ret)
{
    Job *j = opaque;

    j->completed_in = pthread_self();
    j->completed_ctx = current_aio_context();
    j->ret = ret;
    j->completions++;
    atomic_store_release(&j->done, 1);
    aio_wait_kick();
}

/* Runs first (cmocka keeps the order): no workers exist yet. */
static void test_max_workers(void **state)
{
    Job jobs[6];
    int64_t start, elapsed;

    (void)state;
    reset_running();
    assert_int_equal(thread_pool_num_workers(main_aio_context()), 0);
    aio_context_set_thread_pool_params(main_aio_context(), 0, 2);
    memset(jobs, 0, sizeof(jobs));
    start = clock_now_ns();
    for (int i = 0; i < 6; i++) {
        jobs[i].input = i;
        jobs[i].sleep_ms = 40;
        thread_pool_submit_aio(job_fn, &jobs[i], job_done, &jobs[i]);
        assert_true(thread_pool_num_workers(main_aio_context()) <= 2);
    }
    for (int i = 0; i < 6; i++) {
        AIO_WAIT_WHILE(NULL, !atomic_load_acquire(&jobs[i].done));
        assert_int_equal(jobs[i].ret, i * 3 + 1);
    }
    elapsed = clock_now_ns() - start;
    assert_true(thread_pool_num_workers(main_aio_context()) <= 2);
    assert_true(atomic_read(&max_running) <= 2);
    /* Six 40 ms jobs, two at a time: at least three rounds. */
    assert_true(elapsed >= 3 * 40 * TU_MS);
    aio_context_set_thread_pool_params(main_aio_context(), 0, AIO_THREAD_POOL_DEFAULT_MAX);
}

static void test_submit_from_main(void **state)
{
    Job j = { .input = 14 };

    (void)state;
    thread_pool_submit_aio(job_fn, &j, job_done, &j);
    AIO_WAIT_WHILE(NULL, !atomic_load_acquire(&j.done));
    assert_int_equal(j.ret, 43);
    assert_int_equal(j.completions, 1);
    assert_false(pthread_equal(j.worker, pthread_self()));
    assert_null(j.worker_ctx);              /* workers have no context */
    assert_true(pthread_equal(j.completed_in, pthread_self()));
    assert_ptr_equal(j.completed_ctx, main_aio_context());
    /* Exactly once. */
    tu_run_main_loop_ms(10);
    assert_int_equal(j.completions, 1);
    assert_true(thread_pool_num_workers(main_aio_context()) >= 1);
}

static void submit_bh(void *opaque)
{
    Job *j = opaque;
    thread_pool_submit_aio(job_fn, j, job_done, j);
}

static IOThread *shared_iothread;

static void test_submit_from_iothread(void **state)
{
    IOThread *iot = shared_iothread;
    AioContext *ctx = iothread_get_aio_context(iot);
    TuThreadInfo info = tu_thread_info(ctx);
    Job j[8];

    (void)state;
    memset(j, 0, sizeof(j));
    for (int i = 0; i < 8; i++) {
        j[i].input = i;
        j[i].sleep_ms = i % 2 ? 5 : 0;
        aio_bh_schedule_oneshot(ctx, submit_bh, &j[i]);
    }
    for (int i = 0; i < 8; i++) {
        AIO_WAIT_WHILE(ctx, !atomic_load_acquire(&j[i].done));
    }
    for (int i = 0; i < 8; i++) {
        assert_int_equal(j[i].ret, i * 3 + 1);
        assert_int_equal(j[i].completions, 1);
        assert_true(pthread_equal(j[i].completed_in, info.thread));
        assert_ptr_equal(j[i].completed_ctx, ctx);
        assert_false(pthread_equal(j[i].worker, info.thread));
        assert_false(pthread_equal(j[i].worker, pthread_self()));
    }
}

/* ---- Per-context pools ------------------------------------------------------------- */

static void count_workers_bh(void *opaque)
{
    int *n = opaque;
    atomic_store_release(n, thread_pool_num_workers(current_aio_context()) + 1);
    aio_wait_kick();
}

static int workers_of(AioContext *ctx)
{
    int n = 0;

    aio_bh_schedule_oneshot(ctx, count_workers_bh, &n);
    AIO_WAIT_WHILE(NULL, !atomic_load_acquire(&n));
    return n - 1;
}

/* An iothread's thread-pool-min/-max bound its own pool: at most max run
 * at once, min stay, the main loop's pool is another one, and the pool's
 * workers leave with the iothread. */
static void test_per_context_limits(void **state)
{
    IOThread *iot = tu_iothread_new("pool-limits");
    AioContext *ctx = iothread_get_aio_context(iot);
    int main_workers = thread_pool_num_workers(main_aio_context());
    Job j[9];

    (void)state;
    aio_context_set_thread_pool_params(ctx, 2, 3);
    reset_running();
    memset(j, 0, sizeof(j));
    for (int i = 0; i < 9; i++) {
        j[i].input = i;
        j[i].sleep_ms = 30;
        aio_bh_schedule_oneshot(ctx, submit_bh, &j[i]);
    }
    for (int i = 0; i < 9; i++) {
        AIO_WAIT_WHILE(NULL, !atomic_load_acquire(&j[i].done));
        assert_int_equal(j[i].ret, i * 3 + 1);
    }
    assert_true(atomic_read(&max_running) <= 3);
    assert_true(atomic_read(&max_running) >= 2);
    assert_int_equal(workers_of(ctx), 3);
    assert_int_equal(thread_pool_num_workers(main_aio_context()), main_workers);
    /* A lower maximum: extra workers leave once idle. */
    aio_context_set_thread_pool_params(ctx, 2, 2);
    j[0].done = 0;
    aio_bh_schedule_oneshot(ctx, submit_bh, &j[0]);
    AIO_WAIT_WHILE(NULL, !atomic_load_acquire(&j[0].done));
    TU_POLL_UNTIL(workers_of(ctx) <= 2, 5000);
    assert_true(workers_of(ctx) >= 2);      /* the minimum stays */
    iothread_destroy(iot);                  /* must not hang on the workers */
}

/* ---- From coroutines ---------------------------------------------------------------- */

typedef struct CoJob {
    Job job;
    int ret;
    AioContext *before;
    AioContext *after;
    pthread_t thread_before;
    pthread_t thread_after;
    unsigned done;           /* atomic */
} CoJob;

static void coroutine_fn co_submit(void *opaque)
{
    CoJob *c = opaque;

    c->before = current_aio_context();
    c->thread_before = tu_thread_self();
    c->ret = thread_pool_submit_co(job_fn, &c->job);
    c->after = current_aio_context();
    c->thread_after = tu_thread_self();
    atomic_store_release(&c->done, 1);
    aio_wait_kick();
}

static void test_submit_co(void **state)
{
    AioContext *ctx = iothread_get_aio_context(shared_iothread);
    CoJob in_main = { .job = { .input = 5, .sleep_ms = 10 } };
    CoJob in_io = { .job = { .input = 7, .sleep_ms = 10 } };

    (void)state;
    coroutine_enter(coroutine_create(co_submit, &in_main));
    assert_false(atomic_read(&in_main.done));   /* it yielded */
    aio_co_schedule(ctx, coroutine_create(co_submit, &in_io));
    AIO_WAIT_WHILE(NULL, !atomic_load_acquire(&in_main.done) ||
                         !atomic_load_acquire(&in_io.done));

    assert_int_equal(in_main.ret, 16);
    assert_ptr_equal(in_main.before, main_aio_context());
    assert_ptr_equal(in_main.after, main_aio_context());
    assert_true(pthread_equal(in_main.thread_after, pthread_self()));
    assert_false(pthread_equal(in_main.job.worker, pthread_self()));

    assert_int_equal(in_io.ret, 22);
    assert_ptr_equal(in_io.before, ctx);
    assert_ptr_equal(in_io.after, ctx);
    assert_true(pthread_equal(in_io.thread_after, in_io.thread_before));
    assert_false(pthread_equal(in_io.job.worker, in_io.thread_before));
}

/* ---- Many at once ------------------------------------------------------------------- */

#define MANY 200

static int seen[MANY];
static int many_done;

static int many_fn(void *opaque)
{
    int i = (int)(intptr_t)opaque;
    if (i % 7 == 0) {
        sched_yield();
    }
    return i * 2 + 1;
}

static void many_cb(void *opaque, int ret)
{
    int i = (int)(intptr_t)opaque;

    if (ret == i * 2 + 1 && in_main_thread()) {
        seen[i]++;
    }
    many_done++;
}

static void test_many_concurrent(void **state)
{
    (void)state;
    memset(seen, 0, sizeof(seen));
    many_done = 0;
    for (int i = 0; i < MANY; i++) {
        thread_pool_submit_aio(many_fn, (void *)(intptr_t)i, many_cb, (void *)(intptr_t)i);
    }
    AIO_WAIT_WHILE(NULL, many_done < MANY);
    for (int i = 0; i < MANY; i++) {
        assert_int_equal(seen[i], 1);
    }
    tu_run_main_loop_ms(10);
    assert_int_equal(many_done, MANY);
}

static void test_parallel(void **state)
{
    enum { N = 8, SLEEP_MS = 200 };
    Job jobs[N];
    int64_t start, elapsed;

    (void)state;
    reset_running();
    memset(jobs, 0, sizeof(jobs));
    start = clock_now_ns();
    for (int i = 0; i < N; i++) {
        jobs[i].input = i;
        jobs[i].sleep_ms = SLEEP_MS;
        thread_pool_submit_aio(job_fn, &jobs[i], job_done, &jobs[i]);
    }
    for (int i = 0; i < N; i++) {
        AIO_WAIT_WHILE(NULL, !atomic_load_acquire(&jobs[i].done));
        assert_int_equal(jobs[i].ret, i * 3 + 1);
    }
    elapsed = clock_now_ns() - start;
    /* Serially this takes N * 200 ms = 1.6 s. */
    assert_true(elapsed >= SLEEP_MS * TU_MS);
    assert_true(elapsed < N * SLEEP_MS * TU_MS / 2);
    assert_true(atomic_read(&max_running) >= 4);
}

/* ---- The submitting context must outlive the worker's hand-over ---------------- */

typedef struct Late {
    unsigned fn_returned;    /* atomic */
    unsigned done;           /* atomic */
} Late;

static int late_fn(void *opaque)
{
    Late *l = opaque;

    atomic_store_release(&l->fn_returned, 1);
    return 0;
}

static void late_cb(void *opaque, int ret)
{
    Late *l = opaque;

    (void)ret;
    atomic_store_release(&l->done, 1);
    aio_wait_kick();
}

static void late_submit_bh(void *opaque)
{
    Late *l = opaque;

    thread_pool_submit_aio(late_fn, l, late_cb, l);
    /* Stay busy (not asleep in aio_poll) while the worker hands the
     * completion over, then give it ample time to finish doing so. */
    while (!atomic_load_acquire(&l->fn_returned)) {
        sched_yield();
    }
    tu_sleep_ms(20);
}

/*
 * Once the completion has run, the request is over: the user may destroy
 * the context it was submitted from (here: iothread_destroy()).  The
 * worker must not touch that context afterwards.  A worker's last touch
 * is the aio_notify() in aio_bh_schedule_oneshot() after the completion
 * BH is already visible to the context, and nothing orders it before the
 * context's destruction.  ThreadSanitizer reports that as a race between
 * aio_context_free() and aio_notify(); without the 20 ms grace above it
 * is a real use-after-free (ctx->notified written, ctx->notify_fd read
 * and written to, after free()).
 */
static void test_destroy_context_after_completion(void **state)
{
    (void)state;
    for (int i = 0; i < 10; i++) {
        IOThread *iot = tu_iothread_new("pool-late");
        AioContext *ctx = iothread_get_aio_context(iot);
        Late l = { 0 };

        aio_bh_schedule_oneshot(ctx, late_submit_bh, &l);
        AIO_WAIT_WHILE(ctx, !atomic_load_acquire(&l.done));
        iothread_destroy(iot);
    }
}

static int group_setup(void **state)
{
    (void)state;
    alarm(TU_WATCHDOG_SECONDS);
    main_loop_init();
    shared_iothread = tu_iothread_new("pool-io");
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_max_workers),
        cmocka_unit_test(test_submit_from_main),
        cmocka_unit_test(test_submit_from_iothread),
        cmocka_unit_test(test_submit_co),
        cmocka_unit_test(test_per_context_limits),
        cmocka_unit_test(test_many_concurrent),
        cmocka_unit_test(test_parallel),
        cmocka_unit_test(test_destroy_context_after_completion),
    };
    /* No group teardown: see the comment at the top. */
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
