/*
 * test-bh - bottom halves: ordering, coalescing, cancel/delete, one-shot,
 * idle BHs, nesting, and scheduling across threads.
 */
#include <sched.h>
#include <string.h>

#include "test-util.h"

#define MAX_EVENTS 1024

static int events[MAX_EVENTS];
static int nevents;

static void record(int v)
{
    assert_true(nevents < MAX_EVENTS);
    events[nevents++] = v;
}

static void reset_events(void)
{
    nevents = 0;
    memset(events, 0, sizeof(events));
}

static void record_cb(void *opaque)
{
    record((int)(intptr_t)opaque);
}

static void assert_events(const int *expected, int n)
{
    assert_int_equal(nevents, n);
    for (int i = 0; i < n; i++) {
        assert_int_equal(events[i], expected[i]);
    }
}

static void test_nothing_to_do(void **state)
{
    AioContext *ctx = main_aio_context();

    (void)state;
    assert_false(aio_poll(ctx, false));
    assert_false(aio_poll(ctx, false));
    /* A BH that was created but never scheduled does not run. */
    BH *bh = aio_bh_new(ctx, record_cb, (void *)1);
    reset_events();
    assert_false(aio_poll(ctx, false));
    assert_int_equal(nevents, 0);
    bh_delete(bh);
    assert_false(aio_poll(ctx, false));
    assert_int_equal(nevents, 0);
}

static void test_fifo_order(void **state)
{
    AioContext *ctx = main_aio_context();
    static const int order[] = { 3, 1, 4, 0, 2 };
    BH *bh[5];

    (void)state;
    reset_events();
    for (int i = 0; i < 5; i++) {
        bh[i] = aio_bh_new(ctx, record_cb, (void *)(intptr_t)i);
    }
    for (int i = 0; i < 5; i++) {
        bh_schedule(bh[order[i]]);
    }
    assert_int_equal(nevents, 0);          /* nothing runs before aio_poll */
    assert_true(aio_poll(ctx, false));
    assert_events(order, 5);
    assert_false(aio_poll(ctx, false));
    assert_int_equal(nevents, 5);

    /* Same again, in another order, mixing in one-shot BHs. */
    reset_events();
    bh_schedule(bh[4]);
    aio_bh_schedule_oneshot(ctx, record_cb, (void *)10);
    bh_schedule(bh[0]);
    aio_bh_schedule_oneshot(ctx, record_cb, (void *)11);
    bh_schedule(bh[2]);
    assert_true(aio_poll(ctx, false));
    assert_events((const int[]){ 4, 10, 0, 11, 2 }, 5);

    for (int i = 0; i < 5; i++) {
        bh_delete(bh[i]);
    }
    assert_false(aio_poll(ctx, false));
}

static void test_schedule_twice_runs_once(void **state)
{
    AioContext *ctx = main_aio_context();
    BH *bh = aio_bh_new(ctx, record_cb, (void *)7);

    (void)state;
    reset_events();
    bh_schedule(bh);
    bh_schedule(bh);
    bh_schedule(bh);
    assert_true(aio_poll(ctx, false));
    assert_int_equal(nevents, 1);
    assert_false(aio_poll(ctx, false));
    assert_int_equal(nevents, 1);

    /* Once it has run it can be scheduled again. */
    bh_schedule(bh);
    assert_true(aio_poll(ctx, false));
    assert_int_equal(nevents, 2);

    /* Rescheduling does not move it behind BHs scheduled later. */
    reset_events();
    BH *other = aio_bh_new(ctx, record_cb, (void *)8);
    bh_schedule(bh);
    bh_schedule(other);
    bh_schedule(bh);
    assert_true(aio_poll(ctx, false));
    assert_events((const int[]){ 7, 8 }, 2);

    bh_delete(other);
    bh_delete(bh);
    assert_false(aio_poll(ctx, false));
}

static void test_cancel(void **state)
{
    AioContext *ctx = main_aio_context();
    BH *a = aio_bh_new(ctx, record_cb, (void *)1);
    BH *b = aio_bh_new(ctx, record_cb, (void *)2);

    (void)state;
    reset_events();
    bh_schedule(a);
    bh_schedule(b);
    bh_cancel(a);
    assert_true(aio_poll(ctx, false));
    assert_events((const int[]){ 2 }, 1);

    /* Only cancelled BHs pending: no progress. */
    bh_schedule(a);
    bh_cancel(a);
    assert_false(aio_poll(ctx, false));
    assert_int_equal(nevents, 1);

    /* Cancelling something not scheduled is harmless. */
    bh_cancel(b);
    assert_false(aio_poll(ctx, false));

    /* A cancelled BH can be scheduled again. */
    bh_schedule(a);
    assert_true(aio_poll(ctx, false));
    assert_events((const int[]){ 2, 1 }, 2);

    /* Cancel and reschedule before the poll: runs once. */
    bh_schedule(a);
    bh_cancel(a);
    bh_schedule(a);
    assert_true(aio_poll(ctx, false));
    assert_events((const int[]){ 2, 1, 1 }, 3);

    bh_delete(a);
    bh_delete(b);
    assert_false(aio_poll(ctx, false));
}

static BH *self_deleting_bh;

static void delete_self_cb(void *opaque)
{
    record((int)(intptr_t)opaque);
    bh_delete(self_deleting_bh);
}

static void test_delete(void **state)
{
    AioContext *ctx = main_aio_context();
    BH *a = aio_bh_new(ctx, record_cb, (void *)1);
    BH *b = aio_bh_new(ctx, record_cb, (void *)2);

    (void)state;
    reset_events();
    /* Deleting a scheduled BH keeps it from running (and frees it). */
    bh_schedule(a);
    bh_schedule(b);
    bh_delete(a);
    assert_true(aio_poll(ctx, false));
    assert_events((const int[]){ 2 }, 1);
    assert_false(aio_poll(ctx, false));
    assert_int_equal(nevents, 1);

    /* Deleting a BH that was never scheduled. */
    bh_delete(b);
    assert_false(aio_poll(ctx, false));

    /* A BH may delete itself from its own callback. */
    self_deleting_bh = aio_bh_new(ctx, delete_self_cb, (void *)3);
    bh_schedule(self_deleting_bh);
    assert_true(aio_poll(ctx, false));
    assert_events((const int[]){ 2, 3 }, 2);
    assert_false(aio_poll(ctx, false));
    assert_int_equal(nevents, 2);

    bh_delete(NULL);   /* harmless */
}

static void test_oneshot(void **state)
{
    AioContext *ctx = main_aio_context();

    (void)state;
    reset_events();
    for (int i = 0; i < 100; i++) {
        aio_bh_schedule_oneshot(ctx, record_cb, (void *)(intptr_t)i);
    }
    assert_true(aio_poll(ctx, false));
    assert_int_equal(nevents, 100);
    for (int i = 0; i < 100; i++) {
        assert_int_equal(events[i], i);
    }
    /* Each ran exactly once. */
    assert_false(aio_poll(ctx, false));
    assert_int_equal(nevents, 100);
}

/* ---- BHs scheduled from BHs ---------------------------------------------- */

static BH *chained_bh;
static int self_resched_left;

static void schedule_other_cb(void *opaque)
{
    record((int)(intptr_t)opaque);
    bh_schedule(chained_bh);
    aio_bh_schedule_oneshot(main_aio_context(), record_cb, (void *)30);
}

static void resched_self_cb(void *opaque)
{
    BH **self = opaque;

    record(40);
    if (--self_resched_left > 0) {
        bh_schedule(*self);
    }
}

static void test_bh_from_bh_runs_next_poll(void **state)
{
    AioContext *ctx = main_aio_context();
    BH *first = aio_bh_new(ctx, schedule_other_cb, (void *)10);
    BH *resched;

    (void)state;
    reset_events();
    chained_bh = aio_bh_new(ctx, record_cb, (void *)20);
    bh_schedule(first);
    assert_true(aio_poll(ctx, false));
    assert_events((const int[]){ 10 }, 1);   /* not in the same poll */
    assert_true(aio_poll(ctx, false));
    assert_events((const int[]){ 10, 20, 30 }, 3);
    assert_false(aio_poll(ctx, false));

    /* A BH that reschedules itself runs once per poll, not in a loop. */
    reset_events();
    resched = aio_bh_new(ctx, resched_self_cb, &resched);
    self_resched_left = 3;
    bh_schedule(resched);
    for (int i = 1; i <= 3; i++) {
        assert_true(aio_poll(ctx, false));
        assert_int_equal(nevents, i);
    }
    assert_false(aio_poll(ctx, false));
    assert_int_equal(nevents, 3);

    bh_delete(first);
    bh_delete(chained_bh);
    bh_delete(resched);
    assert_false(aio_poll(ctx, false));
}

static bool nested_progress;

static void nesting_cb(void *opaque)
{
    record((int)(intptr_t)opaque);
    /* Scheduled now: must run after everything scheduled before it. */
    aio_bh_schedule_oneshot(main_aio_context(), record_cb, (void *)4);
    nested_progress = aio_poll(main_aio_context(), false);
    record(100);
}

static void test_nested_poll_keeps_fifo(void **state)
{
    AioContext *ctx = main_aio_context();

    (void)state;
    reset_events();
    aio_bh_schedule_oneshot(ctx, nesting_cb, (void *)1);
    aio_bh_schedule_oneshot(ctx, record_cb, (void *)2);
    aio_bh_schedule_oneshot(ctx, record_cb, (void *)3);
    assert_true(aio_poll(ctx, false));
    assert_true(nested_progress);
    /* 2 and 3 were scheduled before 4, so the nested poll runs them first;
     * none of them runs twice, and nothing is left for the outer poll. */
    assert_events((const int[]){ 1, 2, 3, 4, 100 }, 5);
    assert_false(aio_poll(ctx, false));
    assert_int_equal(nevents, 5);
}

/* ---- Idle BHs -------------------------------------------------------------- */

static void test_idle_bh(void **state)
{
    AioContext *ctx = main_aio_context();
    BH *bh = aio_bh_new(ctx, record_cb, (void *)5);
    int64_t start, elapsed;

    (void)state;
    reset_events();
    bh_schedule_idle(bh);
    /* It runs, but does not count as progress. */
    assert_false(aio_poll(ctx, false));
    assert_events((const int[]){ 5 }, 1);
    assert_false(aio_poll(ctx, false));
    assert_int_equal(nevents, 1);

    /* A blocking poll with only an idle BH runs it within about 10 ms. */
    bh_schedule_idle(bh);
    start = clock_now_ns();
    while (nevents < 2 && clock_now_ns() - start < 5 * TU_SEC) {
        assert_false(aio_poll(ctx, true));
    }
    elapsed = clock_now_ns() - start;
    assert_int_equal(nevents, 2);
    assert_true(elapsed < 2 * TU_SEC);

    /* Idle + normal scheduling: runs once and counts as progress. */
    bh_schedule_idle(bh);
    bh_schedule(bh);
    assert_true(aio_poll(ctx, false));
    assert_int_equal(nevents, 3);
    assert_false(aio_poll(ctx, false));
    assert_int_equal(nevents, 3);

    /* Normal, then idle: still normal. */
    bh_schedule(bh);
    bh_schedule_idle(bh);
    assert_true(aio_poll(ctx, false));
    assert_int_equal(nevents, 4);

    /* An idle BH does not hide normal progress of another BH. */
    aio_bh_schedule_oneshot(ctx, record_cb, (void *)6);
    bh_schedule_idle(bh);
    assert_true(aio_poll(ctx, false));
    assert_int_equal(nevents, 6);

    bh_delete(bh);
    assert_false(aio_poll(ctx, false));
}

/* ---- Across threads -------------------------------------------------------- */

#define XTHREAD_N 500

typedef struct XThreadState {
    AioContext *target;
    pthread_t expected_thread;
    int next_seq;            /* touched only in the target's thread */
    int bad_order;
    int bad_thread;
    int bad_ctx;
    bool check_main;
    unsigned done;           /* atomic */
} XThreadState;

typedef struct XThreadItem {
    XThreadState *s;
    int seq;
} XThreadItem;

static XThreadItem xitems[XTHREAD_N];

static void xthread_cb(void *opaque)
{
    XThreadItem *item = opaque;
    XThreadState *s = item->s;

    if (item->seq != s->next_seq) {
        s->bad_order++;
    }
    s->next_seq = item->seq + 1;
    if (!pthread_equal(pthread_self(), s->expected_thread)) {
        s->bad_thread++;
    }
    if (current_aio_context() != s->target) {
        s->bad_ctx++;
    }
    if (s->check_main && !in_main_thread()) {
        s->bad_thread++;
    }
    if (item->seq == XTHREAD_N - 1) {
        atomic_store_release(&s->done, 1);
        aio_wait_kick();
    }
}

static void xthread_send_all(XThreadState *s)
{
    for (int i = 0; i < XTHREAD_N; i++) {
        xitems[i].s = s;
        xitems[i].seq = i;
        aio_bh_schedule_oneshot(s->target, xthread_cb, &xitems[i]);
        if (i % 50 == 0) {
            sched_yield();
        }
    }
}

static void *xthread_sender(void *opaque)
{
    xthread_send_all(opaque);
    return NULL;
}

static void xthread_sender_bh(void *opaque)
{
    xthread_send_all(opaque);
}

static void test_pthread_to_main(void **state)
{
    XThreadState s = {
        .target = main_aio_context(),
        .expected_thread = pthread_self(),
        .check_main = true,
    };
    BdThread t;

    (void)state;
    bd_thread_create(&t, "bh-sender", xthread_sender, &s);
    AIO_WAIT_WHILE(NULL, !atomic_load_acquire(&s.done));
    bd_thread_join(&t);
    tu_drain_main();
    assert_int_equal(s.next_seq, XTHREAD_N);   /* nothing ran twice */
    assert_int_equal(s.bad_order, 0);
    assert_int_equal(s.bad_thread, 0);
    assert_int_equal(s.bad_ctx, 0);
}

static void test_iothread_to_main(void **state)
{
    IOThread *iot = tu_iothread_new("bh-io");
    XThreadState s = {
        .target = main_aio_context(),
        .expected_thread = pthread_self(),
        .check_main = true,
    };

    (void)state;
    aio_bh_schedule_oneshot(iothread_get_aio_context(iot), xthread_sender_bh, &s);
    AIO_WAIT_WHILE(NULL, !atomic_load_acquire(&s.done));
    assert_int_equal(s.next_seq, XTHREAD_N);
    assert_int_equal(s.bad_order, 0);
    assert_int_equal(s.bad_thread, 0);
    assert_int_equal(s.bad_ctx, 0);
    iothread_destroy(iot);
}

static void test_main_to_iothread(void **state)
{
    IOThread *iot = tu_iothread_new("bh-io");
    AioContext *ctx = iothread_get_aio_context(iot);
    TuThreadInfo info = tu_thread_info(ctx);
    XThreadState s = {
        .target = ctx,
        .expected_thread = info.thread,
    };

    (void)state;
    assert_ptr_equal(info.ctx, ctx);
    assert_false(pthread_equal(info.thread, pthread_self()));
    xthread_send_all(&s);
    AIO_WAIT_WHILE(ctx, !atomic_load_acquire(&s.done));
    iothread_destroy(iot);   /* joins: the iothread's writes are visible */
    assert_int_equal(s.next_seq, XTHREAD_N);
    assert_int_equal(s.bad_order, 0);
    assert_int_equal(s.bad_thread, 0);
    assert_int_equal(s.bad_ctx, 0);
}

static void *delayed_schedule_thread(void *opaque)
{
    tu_sleep_ms(30);
    aio_bh_schedule_oneshot(main_aio_context(), record_cb, opaque);
    return NULL;
}

static void test_schedule_wakes_blocking_poll(void **state)
{
    BdThread t;
    int64_t start, elapsed;

    (void)state;
    reset_events();
    tu_drain_main();   /* no stale notification may end the sleep */
    start = clock_now_ns();
    bd_thread_create(&t, "bh-late", delayed_schedule_thread, (void *)9);
    /* Nothing else can wake this poll: the BH must. */
    assert_true(aio_poll(main_aio_context(), true));
    elapsed = clock_now_ns() - start;
    bd_thread_join(&t);
    assert_events((const int[]){ 9 }, 1);
    assert_true(elapsed >= 25 * TU_MS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TU_TEST(test_nothing_to_do),
        TU_TEST(test_fifo_order),
        TU_TEST(test_schedule_twice_runs_once),
        TU_TEST(test_cancel),
        TU_TEST(test_delete),
        TU_TEST(test_oneshot),
        TU_TEST(test_bh_from_bh_runs_next_poll),
        TU_TEST(test_nested_poll_keeps_fifo),
        TU_TEST(test_idle_bh),
        TU_TEST(test_pthread_to_main),
        TU_TEST(test_iothread_to_main),
        TU_TEST(test_main_to_iothread),
        TU_TEST(test_schedule_wakes_blocking_poll),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
