/*
 * test-aio-wait - AIO_WAIT_WHILE, aio_wait_kick, aio_wait_bh_oneshot.
 */
#include "test-util.h"

typedef struct Flag {
    AioTimer *timer;
    unsigned set;            /* atomic */
    int64_t set_at;
    int count;               /* for repeated kicks */
    int limit;
} Flag;

static void set_flag_cb(void *opaque)
{
    Flag *f = opaque;

    f->set_at = clock_now_ns();
    atomic_store_release(&f->set, 1);
    aio_wait_kick();
}

static void arm_timer_bh(void *opaque)
{
    Flag *f = opaque;

    f->timer = aio_timer_new(current_aio_context(), set_flag_cb, f);
    timer_mod(f->timer, clock_now_ns() + 30 * TU_MS);
}

static void free_timer_bh(void *opaque)
{
    Flag *f = opaque;
    timer_free(f->timer);
    f->timer = NULL;
}

static void test_wait_for_iothread_timer(void **state)
{
    IOThread *iot = tu_iothread_new("wait-io");
    AioContext *ctx = iothread_get_aio_context(iot);
    Flag f = { 0 };
    int64_t start = clock_now_ns();
    bool waited;

    (void)state;
    aio_bh_schedule_oneshot(ctx, arm_timer_bh, &f);
    waited = AIO_WAIT_WHILE(ctx, !atomic_load_acquire(&f.set));
    assert_true(waited);
    assert_true(atomic_load_acquire(&f.set));
    assert_true(clock_now_ns() - start >= 30 * TU_MS);
    assert_true(clock_now_ns() >= f.set_at);
    aio_wait_bh_oneshot(ctx, free_timer_bh, &f);
    iothread_destroy(iot);
}

static void coroutine_fn sleep_then_set(void *opaque)
{
    Flag *f = opaque;

    co_sleep_ns(20 * TU_MS);
    f->set_at = clock_now_ns();
    atomic_store_release(&f->set, 1);
    aio_wait_kick();
}

static void test_wait_for_iothread_coroutine(void **state)
{
    IOThread *iot = tu_iothread_new("wait-io");
    AioContext *ctx = iothread_get_aio_context(iot);
    Flag f = { 0 };
    int64_t start = clock_now_ns();

    (void)state;
    aio_co_schedule(ctx, coroutine_create(sleep_then_set, &f));
    assert_true(AIO_WAIT_WHILE_UNLOCKED(ctx, !atomic_load_acquire(&f.set)));
    assert_true(clock_now_ns() - start >= 20 * TU_MS);
    iothread_destroy(iot);
}

/* A plain pthread (no context at all) kicking the main thread. */
static void *set_later_thread(void *opaque)
{
    Flag *f = opaque;

    for (int i = 0; i < f->limit; i++) {
        struct timespec ts = { 0, 200 * 1000 };
        nanosleep(&ts, NULL);
        atomic_store_release(&f->set, (unsigned)(i + 1));
        aio_wait_kick();
    }
    return NULL;
}

static void test_wait_for_pthread(void **state)
{
    Flag f = { .limit = 200 };
    BdThread t;

    (void)state;
    bd_thread_create(&t, "kicker", set_later_thread, &f);
    /* Each intermediate value must be noticed too: wait for them one by
     * one (a lost kick hangs here and the watchdog fires). */
    for (unsigned v = 1; v <= (unsigned)f.limit; v++) {
        AIO_WAIT_WHILE(NULL, atomic_load_acquire(&f.set) < v);
    }
    bd_thread_join(&t);
    assert_int_equal(atomic_read(&f.set), f.limit);
}

static void test_condition_already_false(void **state)
{
    IOThread *iot = tu_iothread_new("wait-io");
    int evaluations = 0;

    (void)state;
    assert_false(AIO_WAIT_WHILE(NULL, false));
    assert_false(AIO_WAIT_WHILE(main_aio_context(), false));
    assert_false(AIO_WAIT_WHILE(iothread_get_aio_context(iot), false));
    assert_false(AIO_WAIT_WHILE(NULL, (evaluations++, false)));
    assert_int_equal(evaluations, 1);
    /* Nothing was run by the wait. */
    assert_int_equal(aio_wait_num_waiters, 0);
    iothread_destroy(iot);
}

/* In its home thread AIO_WAIT_WHILE polls that context itself. */
static void set_plain_bh(void *opaque)
{
    *(bool *)opaque = true;
}

static void test_wait_in_home_context(void **state)
{
    bool flag = false;

    (void)state;
    aio_bh_schedule_oneshot(main_aio_context(), set_plain_bh, &flag);
    assert_true(AIO_WAIT_WHILE(main_aio_context(), !flag));
    assert_true(flag);
}

typedef struct OneShot {
    pthread_t thread;
    AioContext *ctx;
    bool finished;
    int64_t finished_at;
} OneShot;

static void slow_bh(void *opaque)
{
    OneShot *o = opaque;

    o->thread = pthread_self();
    o->ctx = current_aio_context();
    tu_sleep_ms(30);
    o->finished_at = clock_now_ns();
    o->finished = true;
}

static void test_bh_oneshot(void **state)
{
    IOThread *iot = tu_iothread_new("wait-io");
    AioContext *ctx = iothread_get_aio_context(iot);
    TuThreadInfo info = tu_thread_info(ctx);
    OneShot o = { 0 };
    int64_t returned_at;

    (void)state;
    aio_wait_bh_oneshot(ctx, slow_bh, &o);
    returned_at = clock_now_ns();
    /* It returned only after the callback had finished. */
    assert_true(o.finished);
    assert_true(returned_at >= o.finished_at);
    assert_true(pthread_equal(o.thread, info.thread));
    assert_false(pthread_equal(o.thread, pthread_self()));
    assert_ptr_equal(o.ctx, ctx);

    /* Into the main context: runs right here. */
    OneShot m = { 0 };
    aio_wait_bh_oneshot(main_aio_context(), slow_bh, &m);
    assert_true(m.finished);
    assert_true(pthread_equal(m.thread, pthread_self()));
    assert_ptr_equal(m.ctx, main_aio_context());

    /* Many in a row, each one complete on return. */
    for (int i = 0; i < 100; i++) {
        TuThreadInfo again = tu_thread_info(ctx);
        assert_true(pthread_equal(again.thread, info.thread));
        assert_int_equal(again.tid, info.tid);
    }
    iothread_destroy(iot);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TU_TEST(test_wait_for_iothread_timer),
        TU_TEST(test_wait_for_iothread_coroutine),
        TU_TEST(test_wait_for_pthread),
        TU_TEST(test_condition_already_false),
        TU_TEST(test_wait_in_home_context),
        TU_TEST(test_bh_oneshot),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
