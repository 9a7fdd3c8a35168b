/*
 * test-timer - timers: ordering, re-arming, cancelling, waking a blocked
 * loop (also from another thread), self re-arming callbacks.
 */
#include <string.h>

#include "test-util.h"

typedef struct Fired {
    int id;
    int64_t deadline;
    int64_t at;
} Fired;

static Fired fired[64];
static int nfired;

typedef struct TimerInfo {
    AioTimer *timer;
    int id;
    int64_t deadline;
} TimerInfo;

static void record_cb(void *opaque)
{
    TimerInfo *ti = opaque;

    assert_true(nfired < (int)ARRAY_SIZE(fired));
    fired[nfired].id = ti->id;
    fired[nfired].deadline = ti->deadline;
    fired[nfired].at = clock_now_ns();
    nfired++;
}

static void reset(void)
{
    nfired = 0;
    memset(fired, 0, sizeof(fired));
}

static void arm(TimerInfo *ti, int64_t deadline)
{
    ti->deadline = deadline;
    timer_mod(ti->timer, deadline);
}

static void test_deadline_order(void **state)
{
    AioContext *ctx = main_aio_context();
    /* Arming order 0..5; deadline offsets in ms. */
    static const int offset_ms[] = { 40, 10, 30, 20, 10, 5 };
    static const int expected[] = { 5, 1, 4, 3, 2, 0 };  /* equal: arming order */
    TimerInfo ti[6];
    int64_t now = clock_now_ns();

    (void)state;
    reset();
    for (int i = 0; i < 6; i++) {
        ti[i].timer = aio_timer_new(ctx, record_cb, &ti[i]);
        ti[i].id = i;
    }
    for (int i = 0; i < 6; i++) {
        arm(&ti[i], now + offset_ms[i] * TU_MS);
    }
    assert_true(TU_POLL_UNTIL(nfired == 6, 5000));
    for (int i = 0; i < 6; i++) {
        assert_int_equal(fired[i].id, expected[i]);
        /* Never early. */
        assert_true(fired[i].at >= fired[i].deadline);
        assert_false(timer_pending(ti[fired[i].id].timer));
    }
    for (int i = 0; i < 6; i++) {
        timer_free(ti[i].timer);
    }
}

static void test_mod_rearms(void **state)
{
    AioContext *ctx = main_aio_context();
    TimerInfo ti = { .id = 1 };
    int64_t start;

    (void)state;
    reset();
    ti.timer = aio_timer_new(ctx, record_cb, &ti);

    /* Later -> earlier: fires once, at the new time. */
    start = clock_now_ns();
    arm(&ti, start + 10 * TU_SEC);
    arm(&ti, start + 20 * TU_MS);
    assert_true(TU_POLL_UNTIL(nfired == 1, 5000));
    assert_true(fired[0].at >= start + 20 * TU_MS);
    assert_true(fired[0].at < start + 5 * TU_SEC);
    assert_false(timer_pending(ti.timer));
    tu_run_main_loop_ms(30);
    assert_int_equal(nfired, 1);

    /* Earlier -> later: does not fire at the first time. */
    reset();
    start = clock_now_ns();
    arm(&ti, start + 10 * TU_MS);
    arm(&ti, start + 80 * TU_MS);
    assert_true(TU_POLL_UNTIL(nfired == 1, 5000));
    assert_true(fired[0].at >= start + 80 * TU_MS);
    tu_run_main_loop_ms(20);
    assert_int_equal(nfired, 1);

    /* Re-arming after it fired works again; a past deadline fires at the
     * next poll. */
    reset();
    arm(&ti, clock_now_ns() - 1000);
    assert_true(timer_pending(ti.timer));
    assert_true(aio_poll(ctx, false));
    assert_int_equal(nfired, 1);
    assert_false(timer_pending(ti.timer));

    timer_free(ti.timer);
}

static void test_del_cancels(void **state)
{
    AioContext *ctx = main_aio_context();
    TimerInfo a = { .id = 1 }, b = { .id = 2 };

    (void)state;
    reset();
    a.timer = aio_timer_new(ctx, record_cb, &a);
    b.timer = aio_timer_new(ctx, record_cb, &b);
    arm(&a, clock_now_ns() + 10 * TU_MS);
    arm(&b, clock_now_ns() + 40 * TU_MS);
    timer_del(a.timer);
    assert_false(timer_pending(a.timer));
    assert_true(timer_pending(b.timer));
    assert_true(TU_POLL_UNTIL(nfired == 1, 5000));
    assert_int_equal(fired[0].id, 2);
    tu_run_main_loop_ms(20);
    assert_int_equal(nfired, 1);

    /* Deleting an expired-but-not-run timer keeps it from running. */
    reset();
    arm(&a, clock_now_ns() - 1);
    timer_del(a.timer);
    assert_false(aio_poll(ctx, false));
    assert_int_equal(nfired, 0);

    /* Deleting twice, or an unarmed timer, is harmless. */
    timer_del(a.timer);
    timer_del(b.timer);
    assert_false(aio_poll(ctx, false));
    timer_free(a.timer);
    timer_free(b.timer);
    timer_free(NULL);
}

static void test_pending(void **state)
{
    TimerInfo ti = { .id = 1 };

    (void)state;
    reset();
    ti.timer = aio_timer_new(main_aio_context(), record_cb, &ti);
    assert_false(timer_pending(ti.timer));
    arm(&ti, clock_now_ns() + 5 * TU_MS);
    assert_true(timer_pending(ti.timer));
    assert_true(TU_POLL_UNTIL(nfired == 1, 5000));
    assert_false(timer_pending(ti.timer));
    arm(&ti, clock_now_ns() + TU_SEC);
    assert_true(timer_pending(ti.timer));
    timer_del(ti.timer);
    assert_false(timer_pending(ti.timer));
    timer_free(ti.timer);
}

static void test_blocking_poll_wakes_for_timer(void **state)
{
    AioContext *ctx = main_aio_context();
    TimerInfo ti = { .id = 1 };
    int64_t start, end;
    int polls = 0;

    (void)state;
    reset();
    ti.timer = aio_timer_new(ctx, record_cb, &ti);
    for (int round = 0; round < 5; round++) {
        nfired = 0;
        start = clock_now_ns();
        arm(&ti, start + (round + 1) * 7 * TU_MS);
        while (nfired == 0) {
            aio_poll(ctx, true);   /* only the timer can end this sleep */
            polls++;
        }
        end = clock_now_ns();
        assert_true(fired[0].at >= ti.deadline);
        assert_true(end >= ti.deadline);
        assert_true(end - ti.deadline < 2 * TU_SEC);
    }
    /* The loop slept instead of spinning. */
    assert_true(polls < 100);
    timer_free(ti.timer);
}

typedef struct ArmLater {
    TimerInfo *ti;
    int64_t delay_before_ms;
    int64_t timer_ms;
} ArmLater;

static void *arm_later_thread(void *opaque)
{
    ArmLater *al = opaque;

    tu_sleep_ms(al->delay_before_ms);
    al->ti->deadline = clock_now_ns() + al->timer_ms * TU_MS;
    timer_mod(al->ti->timer, al->ti->deadline);
    return NULL;
}

static void test_arm_from_other_thread(void **state)
{
    AioContext *ctx = main_aio_context();
    TimerInfo ti = { .id = 1 }, far = { .id = 2 };
    ArmLater al = { .ti = &ti, .delay_before_ms = 30, .timer_ms = 10 };
    BdThread t;
    int64_t start;

    (void)state;
    reset();
    ti.timer = aio_timer_new(ctx, record_cb, &ti);
    far.timer = aio_timer_new(ctx, record_cb, &far);
    /* The loop sleeps towards a timer 100 s away (or forever, below). */
    arm(&far, clock_now_ns() + 100 * TU_SEC);

    start = clock_now_ns();
    bd_thread_create(&t, "arm-later", arm_later_thread, &al);
    while (nfired == 0) {
        aio_poll(ctx, true);
    }
    bd_thread_join(&t);
    assert_int_equal(fired[0].id, 1);
    assert_true(fired[0].at >= ti.deadline);
    assert_true(fired[0].at - start >= 40 * TU_MS);
    assert_true(fired[0].at - start < 5 * TU_SEC);

    /* Again with no other timer: the loop sleeps without timeout. */
    timer_del(far.timer);
    reset();
    bd_thread_create(&t, "arm-later", arm_later_thread, &al);
    while (nfired == 0) {
        aio_poll(ctx, true);
    }
    bd_thread_join(&t);
    assert_int_equal(fired[0].id, 1);
    assert_true(fired[0].at >= ti.deadline);

    timer_free(ti.timer);
    timer_free(far.timer);
}

typedef struct Periodic {
    AioTimer *timer;
    int count;
    int limit;
    int64_t period;
    int64_t last;
    int64_t min_gap;
} Periodic;

static void periodic_cb(void *opaque)
{
    Periodic *p = opaque;
    int64_t now = clock_now_ns();

    if (p->count > 0 && now - p->last < p->min_gap) {
        p->min_gap = now - p->last;
    }
    p->last = now;
    if (++p->count < p->limit) {
        timer_mod(p->timer, now + p->period);
    }
}

static void test_self_rearm(void **state)
{
    Periodic p = { .limit = 5, .period = 3 * TU_MS, .min_gap = INT64_MAX };

    (void)state;
    p.timer = aio_timer_new(main_aio_context(), periodic_cb, &p);
    timer_mod(p.timer, clock_now_ns() + p.period);
    assert_true(TU_POLL_UNTIL(p.count == p.limit, 5000));
    assert_true(p.min_gap >= p.period);
    assert_false(timer_pending(p.timer));
    tu_run_main_loop_ms(15);
    assert_int_equal(p.count, p.limit);
    timer_free(p.timer);
}

/* A callback may free its own timer. */
static void free_self_cb(void *opaque)
{
    AioTimer **t = opaque;
    timer_free(*t);
    *t = NULL;
}

static void test_free_in_callback(void **state)
{
    AioTimer *t = aio_timer_new(main_aio_context(), free_self_cb, &t);

    (void)state;
    timer_mod(t, clock_now_ns());
    assert_true(TU_POLL_UNTIL(t == NULL, 5000));
}

/* ---- Timers of an iothread ------------------------------------------------ */

typedef struct IoTimer {
    AioTimer *timer;
    pthread_t thread;
    AioContext *ctx;
    int64_t deadline;
    int64_t at;
    bool fired;
} IoTimer;

static void io_timer_cb(void *opaque)
{
    IoTimer *it = opaque;

    it->thread = pthread_self();
    it->ctx = current_aio_context();
    it->at = clock_now_ns();
    atomic_store_release(&it->fired, true);
    aio_wait_kick();
}

static void io_timer_free_bh(void *opaque)
{
    IoTimer *it = opaque;

    timer_free(it->timer);
    it->timer = NULL;
}

static void test_iothread_timer(void **state)
{
    IOThread *iot = tu_iothread_new("timer-io");
    AioContext *ctx = iothread_get_aio_context(iot);
    TuThreadInfo info = tu_thread_info(ctx);
    IoTimer it = { 0 };

    (void)state;
    /* Armed from the main thread while the iothread sleeps. */
    it.timer = aio_timer_new(ctx, io_timer_cb, &it);
    it.deadline = clock_now_ns() + 20 * TU_MS;
    timer_mod(it.timer, it.deadline);
    AIO_WAIT_WHILE(ctx, !atomic_load_acquire(&it.fired));
    /* Timers are freed in their home thread, before the context goes. */
    aio_wait_bh_oneshot(ctx, io_timer_free_bh, &it);
    iothread_destroy(iot);
    assert_true(pthread_equal(it.thread, info.thread));
    assert_ptr_equal(it.ctx, ctx);
    assert_true(it.at >= it.deadline);
    assert_null(it.timer);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TU_TEST(test_deadline_order),
        TU_TEST(test_mod_rearms),
        TU_TEST(test_del_cancels),
        TU_TEST(test_pending),
        TU_TEST(test_blocking_poll_wakes_for_timer),
        TU_TEST(test_arm_from_other_thread),
        TU_TEST(test_self_rearm),
        TU_TEST(test_free_in_callback),
        TU_TEST(test_iothread_timer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
