/*
 * stress-co-wakeup - a token passed around a ring of coroutines, one in
 * the main thread and one in each of two iothreads.  Every hop is a
 * cross-thread aio_co_wake() of a coroutine that yielded (or is about to
 * yield) in its own thread.  A lost wake-up stops the ring (the watchdog
 * fires); a wake-up run in the wrong thread, twice, or concurrently with
 * the coroutine itself is counted and fails the test.
 *
 * Several independent rings run at once (STRESS_RINGS, default 4), so
 * that each thread also has several wake-ups arriving together and the
 * scheduling lists see contention.  STRESS_WAKEUPS sets the total number
 * of wake-ups over all rings (default 1000000).
 */
#include <string.h>

#define TU_WATCHDOG_SECONDS 800
#include "../unit/test-util.h"

#define RING 3
#define MAX_RINGS 64

typedef struct Ring Ring;

typedef struct Member {
    Ring *ring;
    int index;
    Coroutine *co;
    AioContext *home;
    pthread_t home_thread;
    unsigned ready;          /* atomic: has yielded once */
    unsigned running;        /* atomic: inside its turn right now */
    long turns;              /* only touched by the member itself */
} Member;

typedef struct Stats {
    long wakeups;            /* atomic: wake-ups received, all rings */
    unsigned rings_done;     /* atomic */
    unsigned wrong_place;    /* atomic */
    unsigned overlap;        /* atomic: a member ran twice at once */
    unsigned bad_token;      /* atomic */
} Stats;

struct Ring {
    Member m[RING];
    Stats *stats;
    long total;              /* wake-ups to do in this ring */
    long wakeups;            /* atomic: wake-ups received in this ring */
    unsigned stop;           /* atomic */
    unsigned exited;         /* atomic */
    long token;              /* passed along: protected by the hand-off */
};

static void coroutine_fn member_entry(void *opaque)
{
    Member *me = opaque;
    Ring *r = me->ring;
    Stats *st = r->stats;
    Member *next = &r->m[(me->index + 1) % RING];

    atomic_store_release(&me->ready, 1);
    aio_wait_kick();
    for (;;) {
        coroutine_yield();

        /* Woken: we hold the token. */
        if (atomic_xchg(&me->running, 1) != 0) {
            atomic_inc(&st->overlap);
        }
        if (current_aio_context() != me->home ||
            !pthread_equal(tu_thread_self(), me->home_thread)) {
            atomic_inc(&st->wrong_place);
        }
        long n = atomic_fetch_add(&r->wakeups, 1) + 1;
        atomic_inc(&st->wakeups);
        me->turns++;

        if (atomic_load_acquire(&r->stop)) {
            /* Shutting down: pass the token on to whoever is still in
             * the ring, then end. */
            unsigned exited = atomic_fetch_add(&r->exited, 1) + 1;
            atomic_set(&me->running, 0);
            if (exited < RING) {
                aio_co_wake(next->co);
            } else {
                atomic_inc(&st->rings_done);
                aio_wait_kick();
            }
            return;
        }
        if (r->token != n - 1) {
            atomic_inc(&st->bad_token);
        }
        r->token = n;
        atomic_set(&me->running, 0);
        if (n >= r->total - (RING - 1)) {
            /* Our hop and the RING - 1 after it are the shutdown lap. */
            atomic_store_release(&r->stop, 1);
            atomic_inc(&r->exited);
            aio_co_wake(next->co);
            return;
        }
        aio_co_wake(next->co);
    }
}

static void test_rings(void **state)
{
    IOThread *iot[RING - 1];
    AioContext *home[RING];
    pthread_t home_thread[RING];
    Stats st = { 0 };
    long total = tu_env_long("STRESS_WAKEUPS", 1000000);
    int nrings = (int)tu_env_long("STRESS_RINGS", 4);
    Ring *rings;
    int64_t start;

    (void)state;
    if (nrings > MAX_RINGS) {
        nrings = MAX_RINGS;
    }
    if (total < (long)RING * nrings) {
        total = (long)RING * nrings;
    }
    rings = calloc(nrings, sizeof(*rings));
    for (int i = 0; i < RING; i++) {
        if (i == 0) {
            home[i] = main_aio_context();
        } else {
            char name[16];
            snprintf(name, sizeof(name), "ring-%d", i);
            iot[i - 1] = tu_iothread_new(name);
            home[i] = iothread_get_aio_context(iot[i - 1]);
        }
        home_thread[i] = tu_thread_info(home[i]).thread;
    }
    for (int k = 0; k < nrings; k++) {
        Ring *r = &rings[k];
        r->stats = &st;
        r->total = total / nrings + (k == 0 ? total % nrings : 0);
        for (int i = 0; i < RING; i++) {
            Member *m = &r->m[i];
            m->ring = r;
            m->index = i;
            m->home = home[i];
            m->home_thread = home_thread[i];
            m->co = coroutine_create(member_entry, m);
        }
        /* Start every member in its own thread and let it yield once. */
        coroutine_enter(r->m[0].co);
        for (int i = 1; i < RING; i++) {
            aio_co_schedule(r->m[i].home, r->m[i].co);
        }
    }
    for (int k = 0; k < nrings; k++) {
        for (int i = 1; i < RING; i++) {
            AIO_WAIT_WHILE(NULL, !atomic_load_acquire(&rings[k].m[i].ready));
        }
    }

    start = clock_now_ns();
    /* The first hop of each ring: main wakes member 1 (iothread 1). */
    for (int k = 0; k < nrings; k++) {
        aio_co_wake(rings[k].m[1].co);
    }
    AIO_WAIT_WHILE(NULL, atomic_read_mb(&st.rings_done) < (unsigned)nrings);
    double secs = (double)(clock_now_ns() - start) / 1e9;

    for (int i = 0; i < RING - 1; i++) {
        iothread_destroy(iot[i]);
    }
    print_message("%ld wake-ups in %d rings in %.2f s (%.0f per second)\n",
                  atomic_read(&st.wakeups), nrings, secs, atomic_read(&st.wakeups) / secs);

    assert_int_equal(atomic_read(&st.wakeups), total);
    assert_int_equal(atomic_read(&st.rings_done), nrings);
    assert_int_equal(atomic_read(&st.wrong_place), 0);
    assert_int_equal(atomic_read(&st.overlap), 0);
    assert_int_equal(atomic_read(&st.bad_token), 0);
    for (int k = 0; k < nrings; k++) {
        Ring *r = &rings[k];
        long turns = 0;

        assert_int_equal(atomic_read(&r->wakeups), r->total);
        assert_int_equal(atomic_read(&r->exited), RING);
        for (int i = 0; i < RING; i++) {
            /* The token went round evenly. */
            assert_true(r->m[i].turns >= r->total / RING - 1);
            assert_true(r->m[i].turns <= r->total / RING + 1);
            turns += r->m[i].turns;
        }
        assert_int_equal(turns, r->total);
    }
    free(rings);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_rings, tu_setup, tu_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
