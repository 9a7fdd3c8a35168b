/*
 * test-co-sleep - co_sleep_ns and wakeable sleeps.
 */
#include "test-util.h"

typedef struct Sleeper {
    CoSleep w;
    int64_t ns;              /* how long to ask for */
    int64_t start;
    int64_t end;
    AioContext *ctx_after;
    pthread_t thread_after;
    unsigned asleep;         /* atomic: about to sleep */
    unsigned done;           /* atomic */
    bool wakeable;
} Sleeper;

static void coroutine_fn sleeper_entry(void *opaque)
{
    Sleeper *s = opaque;

    s->start = clock_now_ns();
    atomic_store_release(&s->asleep, 1);
    if (s->wakeable) {
        co_sleep_ns_wakeable(&s->w, s->ns);
    } else {
        co_sleep_ns(s->ns);
    }
    s->end = clock_now_ns();
    s->ctx_after = current_aio_context();
    s->thread_after = tu_thread_self();
    atomic_store_release(&s->done, 1);
    aio_wait_kick();
}

/* Is the sleeper really inside co_sleep_ns_wakeable()? */
static bool is_sleeping(Sleeper *s)
{
    return atomic_load_acquire(&s->asleep) && atomic_read_mb(&s->w.to_wake) != NULL;
}

static void test_sleep_at_least(void **state)
{
    static const int64_t ms[] = { 0, 1, 10, 30 };

    (void)state;
    for (size_t i = 0; i < ARRAY_SIZE(ms); i++) {
        Sleeper s = { .ns = ms[i] * TU_MS };

        coroutine_enter(coroutine_create(sleeper_entry, &s));
        assert_false(atomic_read(&s.done) && ms[i] > 0);
        AIO_WAIT_WHILE(NULL, !atomic_load_acquire(&s.done));
        assert_true(s.end - s.start >= s.ns);
        assert_true(s.end - s.start < s.ns + 2 * TU_SEC);
        assert_ptr_equal(s.ctx_after, main_aio_context());
    }
    /* A wakeable sleep that nobody cuts short lasts its full time. */
    Sleeper s = { .ns = 20 * TU_MS, .wakeable = true };
    coroutine_enter(coroutine_create(sleeper_entry, &s));
    AIO_WAIT_WHILE(NULL, !atomic_load_acquire(&s.done));
    assert_true(s.end - s.start >= s.ns);
    assert_null(s.w.to_wake);
}

static void test_sleep_in_iothread(void **state)
{
    IOThread *iot = tu_iothread_new("sleep-io");
    AioContext *ctx = iothread_get_aio_context(iot);
    TuThreadInfo info = tu_thread_info(ctx);
    Sleeper s = { .ns = 25 * TU_MS };

    (void)state;
    aio_co_schedule(ctx, coroutine_create(sleeper_entry, &s));
    AIO_WAIT_WHILE(ctx, !atomic_load_acquire(&s.done));
    assert_true(s.end - s.start >= s.ns);
    assert_ptr_equal(s.ctx_after, ctx);
    assert_true(pthread_equal(s.thread_after, info.thread));
    iothread_destroy(iot);
}

/* ---- Woken early ----------------------------------------------------------------- */

typedef struct WakeLater {
    Sleeper *s;
    int64_t delay_ms;
    int64_t woke_at;
} WakeLater;

static void *wake_later_thread(void *opaque)
{
    WakeLater *wl = opaque;

    while (!is_sleeping(wl->s)) {
        tu_sleep_ms(1);
    }
    tu_sleep_ms(wl->delay_ms);
    wl->woke_at = clock_now_ns();
    co_sleep_wake(&wl->s->w);
    return NULL;
}

static void test_wake_from_other_thread(void **state)
{
    Sleeper s = { .ns = 60 * TU_SEC, .wakeable = true };
    WakeLater wl = { .s = &s, .delay_ms = 20 };
    BdThread t;

    (void)state;
    bd_thread_create(&t, "co-waker", wake_later_thread, &wl);
    coroutine_enter(coroutine_create(sleeper_entry, &s));
    AIO_WAIT_WHILE(NULL, !atomic_load_acquire(&s.done));
    bd_thread_join(&t);
    assert_true(s.end >= wl.woke_at);
    assert_true(s.end - s.start < 10 * TU_SEC);
    assert_true(s.end - s.start >= 20 * TU_MS);
    assert_ptr_equal(s.ctx_after, main_aio_context());
    assert_true(pthread_equal(s.thread_after, pthread_self()));
    assert_null(s.w.to_wake);
}

static void test_wake_iothread_sleeper_from_main(void **state)
{
    IOThread *iot = tu_iothread_new("sleep-io");
    AioContext *ctx = iothread_get_aio_context(iot);
    TuThreadInfo info = tu_thread_info(ctx);
    Sleeper s = { .ns = 60 * TU_SEC, .wakeable = true };
    int64_t woke_at;

    (void)state;
    aio_co_schedule(ctx, coroutine_create(sleeper_entry, &s));
    /* Nothing for the main loop to do meanwhile. */
    while (!is_sleeping(&s)) {
        tu_sleep_ms(1);
    }
    tu_sleep_ms(10);
    assert_false(atomic_load_acquire(&s.done));
    woke_at = clock_now_ns();
    co_sleep_wake(&s.w);
    AIO_WAIT_WHILE(ctx, !atomic_load_acquire(&s.done));
    assert_true(s.end >= woke_at);
    assert_true(s.end - s.start < 10 * TU_SEC);
    assert_ptr_equal(s.ctx_after, ctx);
    assert_true(pthread_equal(s.thread_after, info.thread));
    iothread_destroy(iot);
}

static void wake_bh(void *opaque)
{
    co_sleep_wake(opaque);
}

static void test_wake_from_bh(void **state)
{
    Sleeper s = { .ns = 60 * TU_SEC, .wakeable = true };

    (void)state;
    coroutine_enter(coroutine_create(sleeper_entry, &s));
    assert_true(is_sleeping(&s));
    aio_bh_schedule_oneshot(main_aio_context(), wake_bh, &s.w);
    assert_false(atomic_read(&s.done));
    assert_true(aio_poll(main_aio_context(), false));
    assert_true(atomic_read(&s.done));
    assert_true(s.end - s.start < 10 * TU_SEC);
}

static void test_wake_nobody(void **state)
{
    CoSleep w = { 0 };
    Sleeper s = { .ns = 5 * TU_MS, .wakeable = true };

    (void)state;
    co_sleep_wake(&w);          /* nobody asleep */
    co_sleep_wake(&w);
    assert_null(w.to_wake);
    assert_false(aio_poll(main_aio_context(), false));

    /* A wake after the sleep ended by itself is harmless too. */
    coroutine_enter(coroutine_create(sleeper_entry, &s));
    AIO_WAIT_WHILE(NULL, !atomic_load_acquire(&s.done));
    tu_drain_main();
    co_sleep_wake(&s.w);
    assert_false(aio_poll(main_aio_context(), false));

    /* Two wakes for one sleep: the second does nothing. */
    Sleeper s2 = { .ns = -1, .wakeable = true };
    coroutine_enter(coroutine_create(sleeper_entry, &s2));
    co_sleep_wake(&s2.w);
    assert_true(atomic_read(&s2.done));
    co_sleep_wake(&s2.w);
    assert_false(aio_poll(main_aio_context(), false));
}

static void test_no_timeout(void **state)
{
    Sleeper s = { .ns = -1, .wakeable = true };

    (void)state;
    coroutine_enter(coroutine_create(sleeper_entry, &s));
    assert_true(is_sleeping(&s));
    /* No timer was armed: the loop has nothing to do, and after a while
     * the coroutine still sleeps. */
    assert_false(aio_poll(main_aio_context(), false));
    tu_run_main_loop_ms(50);
    assert_false(atomic_read(&s.done));
    co_sleep_wake(&s.w);
    assert_true(atomic_read(&s.done));
    assert_true(s.end - s.start >= 50 * TU_MS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TU_TEST(test_sleep_at_least),
        TU_TEST(test_sleep_in_iothread),
        TU_TEST(test_wake_from_other_thread),
        TU_TEST(test_wake_iothread_sleeper_from_main),
        TU_TEST(test_wake_from_bh),
        TU_TEST(test_wake_nobody),
        TU_TEST(test_no_timeout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
