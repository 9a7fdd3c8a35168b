/*
 * test-graph-lock - the block graph's reader/writer lock.
 */
#include "test-util.h"

#include "blockd/graph-lock.h"

typedef struct Reader {
    bool locked;         /* atomic: holds the read lock */
    bool unlocking;      /* atomic: about to call graph_co_rdunlock() */
    bool released;       /* atomic: has dropped it */
    bool release_now;    /* atomic: main asks it to drop the lock */
    int64_t hold_ns;     /* how long to hold (if release_now is not used) */
    AioContext *unlock_ctx;  /* move here before unlocking (NULL: stay) */
    bool quiet;          /* no kicks of its own: only the lock may wake a writer */
} Reader;

static void coroutine_fn reader_co(void *opaque)
{
    Reader *r = opaque;

    graph_co_rdlock();
    atomic_store_release(&r->locked, true);
    if (!r->quiet) {
        aio_wait_kick();
    }
    if (r->hold_ns) {
        co_sleep_ns(r->hold_ns);
    }
    while (!r->hold_ns && !atomic_load_acquire(&r->release_now)) {
        co_sleep_ns(TU_MS);
    }
    if (r->unlock_ctx) {
        aio_co_reschedule_self(r->unlock_ctx);
    }
    atomic_store_release(&r->unlocking, true);
    graph_co_rdunlock();
    atomic_store_release(&r->released, true);
    if (!r->quiet) {
        aio_wait_kick();
    }
}

static IOThread *start_iothread(const char *id)
{
    IOThreadParams p;

    iothread_params_init(&p);
    p.poll_max_ns = 0;
    return iothread_create(id, &p, &error_abort);
}

static void test_uncontended_read_lock_counts(void **state)
{
    Reader r = { .release_now = false };

    (void)state;
    assert_int_equal(graph_reader_count(), 0);
    coroutine_enter(coroutine_create(reader_co, &r));
    assert_true(atomic_read(&r.locked));
    assert_int_equal(graph_reader_count(), 1);
    atomic_set(&r.release_now, true);
    assert_true(TU_POLL_UNTIL(atomic_read(&r.released), 5000));
    assert_int_equal(graph_reader_count(), 0);
}

static void test_writer_waits_for_reader_in_iothread(void **state)
{
    IOThread *iot = start_iothread("io0");
    Reader r = { .hold_ns = 100 * TU_MS };
    int64_t start;

    (void)state;
    aio_co_schedule(iothread_get_aio_context(iot), coroutine_create(reader_co, &r));
    assert_true(TU_POLL_UNTIL(atomic_load_acquire(&r.locked), 5000));
    start = clock_now_ns();
    graph_wrlock();
    /* The writer got the lock only after the reader let go (it may not
     * have returned from graph_co_rdunlock() yet). */
    assert_true(atomic_load_acquire(&r.unlocking));
    assert_true(clock_now_ns() - start >= 50 * TU_MS);
    assert_true(graph_is_write_locked());
    assert_int_equal(graph_reader_count(), 0);
    graph_wrunlock();
    assert_false(graph_is_write_locked());
    assert_true(TU_POLL_UNTIL(atomic_load_acquire(&r.released), 5000));
    iothread_destroy(iot);
}

static void test_readers_queue_while_written(void **state)
{
    IOThread *iot = start_iothread("io0");
    Reader r = { .hold_ns = 1 };

    (void)state;
    graph_wrlock();
    aio_co_schedule(iothread_get_aio_context(iot), coroutine_create(reader_co, &r));
    tu_sleep_ms(100);
    /* The reader is queued behind the writer. */
    assert_false(atomic_load_acquire(&r.locked));
    assert_int_equal(graph_reader_count(), 0);
    graph_wrunlock();
    assert_true(TU_POLL_UNTIL(atomic_load_acquire(&r.released), 5000));
    assert_true(atomic_load_acquire(&r.locked));
    iothread_destroy(iot);
}

static void test_main_thread_reader_woken_by_unlock(void **state)
{
    Reader r = { .hold_ns = 1 };

    (void)state;
    graph_wrlock();
    coroutine_enter(coroutine_create(reader_co, &r));
    assert_false(atomic_read(&r.locked));
    graph_wrunlock();
    /* Restarted inside graph_wrunlock(), in this thread. */
    assert_true(atomic_read(&r.locked));
    assert_true(TU_POLL_UNTIL(atomic_read(&r.released), 5000));
}

static int deferred_log[8];
static int deferred_len;

static void deferred_cb(void *opaque)
{
    /* Runs after the lock was dropped: draining would be allowed here. */
    assert_false(graph_is_write_locked());
    deferred_log[deferred_len++] = (int)(intptr_t)opaque;
}

static void deferred_relock_cb(void *opaque)
{
    (void)opaque;
    graph_wrlock();
    graph_defer_after_wrunlock(deferred_cb, (void *)3);
    graph_wrunlock();
    deferred_log[deferred_len++] = 4;
}

static void test_deferred_work_runs_after_unlock(void **state)
{
    (void)state;
    deferred_len = 0;
    graph_wrlock();
    graph_defer_after_wrunlock(deferred_cb, (void *)1);
    graph_defer_after_wrunlock(deferred_cb, (void *)2);
    graph_defer_after_wrunlock(deferred_relock_cb, NULL);
    tu_drain_main();
    assert_int_equal(deferred_len, 0);      /* not by the main loop */
    graph_wrunlock();
    /* All of it before graph_wrunlock() returned, in order; nested too. */
    assert_int_equal(deferred_len, 4);
    assert_int_equal(deferred_log[0], 1);
    assert_int_equal(deferred_log[1], 2);
    assert_int_equal(deferred_log[2], 3);
    assert_int_equal(deferred_log[3], 4);
}

static void test_reader_moving_threads_keeps_sum(void **state)
{
    IOThread *iot = start_iothread("io0");
    Reader r = { .hold_ns = 10 * TU_MS, .unlock_ctx = main_aio_context() };

    (void)state;
    /* Locks in the iothread, unlocks in the main thread. */
    aio_co_schedule(iothread_get_aio_context(iot), coroutine_create(reader_co, &r));
    assert_true(TU_POLL_UNTIL(atomic_load_acquire(&r.released), 5000));
    assert_int_equal(graph_reader_count(), 0);
    graph_wrlock();
    graph_wrunlock();
    iothread_destroy(iot);
    assert_int_equal(graph_reader_count(), 0);
}

static int hook_begin, hook_end;

static void hook_begin_fn(void)
{
    hook_begin++;
}

static void hook_end_fn(void)
{
    hook_end++;
}

static void test_writer_quiesces_through_drain_hooks(void **state)
{
    (void)state;
    hook_begin = hook_end = 0;
    graph_lock_set_drain_hooks(hook_begin_fn, hook_end_fn);
    graph_wrlock();
    assert_int_equal(hook_begin, 1);
    assert_int_equal(hook_end, 1);
    graph_wrunlock();
    graph_lock_set_drain_hooks(NULL, NULL);
}

/*
 * A writer nested inside another writer's wait loop (a BH that changes the
 * graph) must leave the outer writer waiting with its kicks intact: a
 * reader that arrives after the inner writer is gone and unlocks later
 * must wake the outer one.  (With a writer_waiting flag, the inner writer
 * cleared it and the outer one slept until something else woke the main
 * loop.)
 */
typedef struct Nested {
    AioContext *ctx;
    Reader *first, *late;
    bool outer_done;     /* atomic */
    bool rescued;        /* atomic: the watchdog had to wake the writer */
} Nested;

static void nested_writer_bh(void *opaque)
{
    Nested *n = opaque;

    /* Inside the outer writer's wait loop. */
    atomic_store_release(&n->first->release_now, true);
    while (!atomic_load_acquire(&n->first->released)) {
        tu_sleep_ms(1);
    }
    graph_wrlock();
    graph_wrunlock();
    aio_co_schedule(n->ctx, coroutine_create(reader_co, n->late));
    while (!atomic_load_acquire(&n->late->locked)) {
        tu_sleep_ms(1);
    }
}

static void *writer_watchdog(void *opaque)
{
    Nested *n = opaque;

    for (int i = 0; i < 300 && !atomic_load_acquire(&n->outer_done); i++) {
        tu_sleep_ms(10);
    }
    while (!atomic_load_acquire(&n->outer_done)) {
        atomic_store_release(&n->rescued, true);
        aio_wait_kick();
        tu_sleep_ms(10);
    }
    return NULL;
}

static void test_nested_writer_keeps_outer_writer_woken(void **state)
{
    IOThread *iot = start_iothread("io0");
    Reader first = { .hold_ns = 0 };
    Reader late = { .hold_ns = 50 * TU_MS, .quiet = true };
    Nested n = { .ctx = iothread_get_aio_context(iot), .first = &first, .late = &late };
    pthread_t watchdog;

    (void)state;
    aio_co_schedule(n.ctx, coroutine_create(reader_co, &first));
    assert_true(TU_POLL_UNTIL(atomic_load_acquire(&first.locked), 5000));
    aio_bh_schedule_oneshot(main_aio_context(), nested_writer_bh, &n);
    assert_int_equal(pthread_create(&watchdog, NULL, writer_watchdog, &n), 0);
    graph_wrlock();
    atomic_store_release(&n.outer_done, true);
    pthread_join(watchdog, NULL);
    assert_true(atomic_load_acquire(&late.unlocking));
    assert_false(atomic_load_acquire(&n.rescued));
    graph_wrunlock();
    assert_true(TU_POLL_UNTIL(atomic_load_acquire(&late.released), 5000));
    iothread_destroy(iot);
}

/*
 * Readers that queue while the writer re-checks (has_writer set) must not
 * wait for graph_wrunlock() when the re-check fails and the writer polls
 * again: what it waits for may need them.  Here the reader that holds the
 * lock lets go only once a reader that arrived in that window has got in.
 * (That reader stayed queued until the unlock, which could never come.)
 */
typedef struct Holder {
    bool locked;         /* atomic */
    bool released;       /* atomic */
    bool gave_up;        /* atomic: the late reader never got in */
    Reader *late;
} Holder;

static Holder recheck_holder;
static Reader recheck_late;
static AioContext *recheck_ctx;
static int recheck_calls;

static void coroutine_fn holder_co(void *opaque)
{
    Holder *h = opaque;
    int64_t deadline;

    graph_co_rdlock();
    atomic_store_release(&h->locked, true);
    deadline = clock_now_ns() + 2 * TU_SEC;
    while (!atomic_load_acquire(&h->late->locked)) {
        if (clock_now_ns() > deadline) {
            atomic_store_release(&h->gave_up, true);
            break;
        }
        co_sleep_ns(TU_MS);
    }
    graph_co_rdunlock();
    atomic_store_release(&h->released, true);
    aio_wait_kick();
}

static void recheck_hook_fn(bool announced)
{
    switch (recheck_calls++) {
    case 0:
        /* No reader yet, has_writer clear: the holder gets in. */
        assert_false(announced);
        aio_co_schedule(recheck_ctx, coroutine_create(holder_co, &recheck_holder));
        while (!atomic_load_acquire(&recheck_holder.locked)) {
            tu_sleep_ms(1);
        }
        break;
    case 1:
        /* has_writer set: the late reader queues; the re-check then finds
         * the holder, and the writer polls again. */
        assert_true(announced);
        aio_co_schedule(recheck_ctx, coroutine_create(reader_co, &recheck_late));
        tu_sleep_ms(50);
        break;
    }
}

static void test_readers_queued_at_recheck_are_restarted(void **state)
{
    IOThread *iot = start_iothread("io0");

    (void)state;
    recheck_holder = (Holder){ .late = &recheck_late };
    recheck_late = (Reader){ .hold_ns = 1 };
    recheck_ctx = iothread_get_aio_context(iot);
    recheck_calls = 0;
    graph_lock_set_recheck_hook(recheck_hook_fn);
    graph_wrlock();
    graph_lock_set_recheck_hook(NULL);
    assert_true(recheck_calls >= 4);             /* it did poll again */
    assert_false(atomic_load_acquire(&recheck_holder.gave_up));
    assert_true(atomic_load_acquire(&recheck_late.unlocking));
    graph_wrunlock();
    assert_true(TU_POLL_UNTIL(atomic_load_acquire(&recheck_late.released), 5000));
    assert_true(TU_POLL_UNTIL(atomic_load_acquire(&recheck_holder.released), 5000));
    iothread_destroy(iot);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TU_TEST(test_uncontended_read_lock_counts),
        TU_TEST(test_writer_waits_for_reader_in_iothread),
        TU_TEST(test_readers_queue_while_written),
        TU_TEST(test_main_thread_reader_woken_by_unlock),
        TU_TEST(test_deferred_work_runs_after_unlock),
        TU_TEST(test_reader_moving_threads_keeps_sum),
        TU_TEST(test_writer_quiesces_through_drain_hooks),
        TU_TEST(test_nested_writer_keeps_outer_writer_woken),
        TU_TEST(test_readers_queued_at_recheck_are_restarted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
