/*
 * test-coroutine-threads - coroutines and iothreads: waking across
 * threads, moving between contexts, scheduling into an iothread.
 */
#include <string.h>

#include "test-util.h"

typedef struct Where {
    AioContext *ctx;
    pthread_t thread;
} Where;

static Where where_am_i(void)
{
    return (Where){ current_aio_context(), tu_thread_self() };
}

static bool same_place(Where a, Where b)
{
    return a.ctx == b.ctx && pthread_equal(a.thread, b.thread);
}

/* ---- Yield in an iothread, woken by the main thread ------------------------- */

#define WAKE_ROUNDS 200

typedef struct YieldWake {
    Where home;              /* the iothread */
    Coroutine *co;
    unsigned yields;         /* atomic: how many times it is about to yield */
    unsigned done;           /* atomic */
    int bad_before;
    int bad_after;
    int resumed;
    AioContext *co_ctx;      /* coroutine_get_ctx() seen from inside */
} YieldWake;

static void coroutine_fn yield_wake_entry(void *opaque)
{
    YieldWake *s = opaque;

    for (int r = 0; r < WAKE_ROUNDS; r++) {
        if (!same_place(where_am_i(), s->home)) {
            s->bad_before++;
        }
        atomic_store_release(&s->yields, r + 1);
        aio_wait_kick();
        coroutine_yield();
        /* Woken by the main thread, resumed here. */
        if (!same_place(where_am_i(), s->home)) {
            s->bad_after++;
        }
        s->resumed++;
    }
    s->co_ctx = coroutine_get_ctx(coroutine_self());
    atomic_store_release(&s->done, 1);
    aio_wait_kick();
}

static void test_wake_from_main_resumes_in_iothread(void **state)
{
    IOThread *iot = tu_iothread_new("co-io");
    AioContext *ctx = iothread_get_aio_context(iot);
    TuThreadInfo info = tu_thread_info(ctx);
    YieldWake s = { .home = { ctx, info.thread } };

    (void)state;
    assert_false(pthread_equal(info.thread, pthread_self()));
    s.co = coroutine_create(yield_wake_entry, &s);
    aio_co_schedule(ctx, s.co);
    for (int r = 0; r < WAKE_ROUNDS; r++) {
        AIO_WAIT_WHILE(ctx, atomic_load_acquire(&s.yields) < (unsigned)r + 1);
        assert_ptr_equal(coroutine_get_ctx(s.co), ctx);
        aio_co_wake(s.co);
    }
    AIO_WAIT_WHILE(ctx, !atomic_load_acquire(&s.done));
    assert_int_equal(s.resumed, WAKE_ROUNDS);
    assert_int_equal(s.bad_before, 0);
    assert_int_equal(s.bad_after, 0);
    assert_ptr_equal(s.co_ctx, ctx);
    iothread_destroy(iot);
}

/* ---- aio_co_reschedule_self ------------------------------------------------------ */

#define MAX_HOPS 8

typedef struct Hops {
    AioContext *route[MAX_HOPS];
    int nroute;
    Where seen[MAX_HOPS + 1];
    bool main_thread[MAX_HOPS + 1];
    bool done;               /* atomic */
} Hops;

static void coroutine_fn hop_entry(void *opaque)
{
    Hops *h = opaque;

    h->seen[0] = where_am_i();
    h->main_thread[0] = in_main_thread();
    for (int i = 0; i < h->nroute; i++) {
        aio_co_reschedule_self(h->route[i]);
        h->seen[i + 1] = where_am_i();
        h->main_thread[i + 1] = in_main_thread();
    }
    atomic_store_release(&h->done, true);
    aio_wait_kick();
}

static void test_reschedule_self(void **state)
{
    IOThread *iot1 = tu_iothread_new("hop-1");
    IOThread *iot2 = tu_iothread_new("hop-2");
    AioContext *c1 = iothread_get_aio_context(iot1);
    AioContext *c2 = iothread_get_aio_context(iot2);
    AioContext *m = main_aio_context();
    TuThreadInfo i1 = tu_thread_info(c1), i2 = tu_thread_info(c2);
    pthread_t main_thread = pthread_self();
    Hops h = {
        .route = { c1, m, c2, c1, c1 /* no-op */, c2, m },
        .nroute = 7,
    };

    (void)state;
    /* Entered directly from the main thread. */
    coroutine_enter(coroutine_create(hop_entry, &h));
    AIO_WAIT_WHILE(NULL, !atomic_load_acquire(&h.done));

    assert_ptr_equal(h.seen[0].ctx, m);
    assert_true(pthread_equal(h.seen[0].thread, main_thread));
    assert_true(h.main_thread[0]);
    for (int i = 0; i < h.nroute; i++) {
        AioContext *want = h.route[i];
        pthread_t want_thread = want == m ? main_thread :
                                want == c1 ? i1.thread : i2.thread;
        assert_ptr_equal(h.seen[i + 1].ctx, want);
        assert_true(pthread_equal(h.seen[i + 1].thread, want_thread));
        assert_true(h.main_thread[i + 1] == (want == m));
    }

    /* The same route again, starting from an iothread. */
    memset(&h, 0, sizeof(h));
    h.route[0] = m;
    h.route[1] = c2;
    h.route[2] = m;
    h.nroute = 3;
    aio_co_schedule(c1, coroutine_create(hop_entry, &h));
    AIO_WAIT_WHILE(NULL, !atomic_load_acquire(&h.done));
    assert_ptr_equal(h.seen[0].ctx, c1);
    assert_true(pthread_equal(h.seen[0].thread, i1.thread));
    assert_ptr_equal(h.seen[1].ctx, m);
    assert_true(pthread_equal(h.seen[1].thread, main_thread));
    assert_ptr_equal(h.seen[2].ctx, c2);
    assert_true(pthread_equal(h.seen[2].thread, i2.thread));
    assert_ptr_equal(h.seen[3].ctx, m);
    assert_true(h.main_thread[3]);

    iothread_destroy(iot1);
    iothread_destroy(iot2);
}

/* ---- aio_co_schedule / aio_co_enter into an iothread -------------------------- */

typedef struct Once {
    Where seen;
    AioContext *co_ctx;
    bool in_co;
    unsigned done;           /* atomic */
} Once;

static void coroutine_fn once_entry(void *opaque)
{
    Once *o = opaque;

    o->seen = where_am_i();
    o->co_ctx = coroutine_get_ctx(coroutine_self());
    o->in_co = in_coroutine();
    atomic_store_release(&o->done, 1);
    aio_wait_kick();
}

static void test_schedule_into_iothread(void **state)
{
    IOThread *iot = tu_iothread_new("sched-io");
    AioContext *ctx = iothread_get_aio_context(iot);
    TuThreadInfo info = tu_thread_info(ctx);
    Once o[16];

    (void)state;
    memset(o, 0, sizeof(o));
    for (int i = 0; i < 16; i++) {
        Coroutine *co = coroutine_create(once_entry, &o[i]);
        if (i % 2) {
            aio_co_schedule(ctx, co);
        } else {
            aio_co_enter(ctx, co);   /* another context: scheduled too */
            /* It must not have run in the main thread in the meantime. */
        }
    }
    for (int i = 0; i < 16; i++) {
        AIO_WAIT_WHILE(ctx, !atomic_load_acquire(&o[i].done));
        assert_ptr_equal(o[i].seen.ctx, ctx);
        assert_true(pthread_equal(o[i].seen.thread, info.thread));
        assert_ptr_equal(o[i].co_ctx, ctx);
        assert_true(o[i].in_co);
    }
    iothread_destroy(iot);
}

/* ---- A main-thread coroutine woken from an iothread ------------------------------ */

typedef struct MainCo {
    Coroutine *co;
    Where resumed;
    bool main_after;
    bool done;
} MainCo;

static void coroutine_fn main_co_entry(void *opaque)
{
    MainCo *mc = opaque;

    coroutine_yield();
    mc->resumed = where_am_i();
    mc->main_after = in_main_thread();
    mc->done = true;
}

static void wake_main_co_bh(void *opaque)
{
    MainCo *mc = opaque;
    aio_co_wake(mc->co);     /* from the iothread: scheduled in main */
}

static void test_wake_main_coroutine_from_iothread(void **state)
{
    IOThread *iot = tu_iothread_new("waker-io");
    AioContext *ctx = iothread_get_aio_context(iot);
    MainCo mc = { 0 };

    (void)state;
    mc.co = coroutine_create(main_co_entry, &mc);
    coroutine_enter(mc.co);
    assert_false(mc.done);
    aio_bh_schedule_oneshot(ctx, wake_main_co_bh, &mc);
    /* The wake-up is a scheduled coroutine of the main context: the main
     * loop runs it (no kick needed, scheduling wakes us). */
    AIO_WAIT_WHILE(NULL, !mc.done);
    assert_ptr_equal(mc.resumed.ctx, main_aio_context());
    assert_true(pthread_equal(mc.resumed.thread, pthread_self()));
    assert_true(mc.main_after);
    iothread_destroy(iot);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TU_TEST(test_wake_from_main_resumes_in_iothread),
        TU_TEST(test_reschedule_self),
        TU_TEST(test_schedule_into_iothread),
        TU_TEST(test_wake_main_coroutine_from_iothread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
