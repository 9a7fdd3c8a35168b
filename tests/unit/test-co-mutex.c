/*
 * test-co-mutex - CoMutex: mutual exclusion across iothreads, FIFO
 * hand-off, co_mutex_held().
 */
#include <string.h>

#include "test-util.h"

/* ---- Four iothreads, one counter -------------------------------------------- */

#define NUM_IOTHREADS 4
#define ITERATIONS 100000

typedef struct Shared {
    CoMutex lock;
    long counter;            /* protected by lock */
    Coroutine *owner;        /* protected by lock: who is inside */
    void *last_worker;       /* protected by lock */
    long switches;           /* protected by lock: holder changed thread */
    unsigned violations;     /* atomic */
    unsigned started;        /* atomic */
    unsigned waiting;        /* atomic: workers between asking and getting the lock */
    unsigned finished;       /* atomic */
} Shared;

typedef struct Worker {
    Shared *sh;
    AioContext *home;
    pthread_t home_thread;
    int wrong_place;
    long iterations;
} Worker;

static void coroutine_fn counter_worker(void *opaque)
{
    Worker *w = opaque;
    Shared *sh = w->sh;
    Coroutine *self = coroutine_self();

    /* Start together, so that the lock is contended even on a loaded
     * machine where one thread could otherwise finish before the others
     * begin. */
    atomic_inc(&sh->started);
    while (atomic_read_mb(&sh->started) < NUM_IOTHREADS) {
        tu_co_yield_to_loop();
    }
    for (long i = 0; i < w->iterations; i++) {
        atomic_inc(&sh->waiting);
        co_mutex_lock(&sh->lock);
        atomic_dec(&sh->waiting);
        if (sh->owner != NULL) {
            atomic_inc(&sh->violations);
        }
        sh->owner = self;
        if (sh->last_worker != w) {
            sh->switches++;
            sh->last_worker = w;
        }
        if (!co_mutex_held(&sh->lock)) {
            atomic_inc(&sh->violations);
        }
        long v = sh->counter;
        if (i % 1000 == 999) {
            /* Hold the lock across trips through the event loop until
             * another thread queues behind it (or all others are done),
             * so that the hand-off between threads happens however the
             * host schedules them. */
            do {
                tu_co_yield_to_loop();
            } while (!atomic_read_mb(&sh->waiting) &&
                     atomic_read_mb(&sh->finished) < NUM_IOTHREADS - 1);
        }
        sh->counter = v + 1;
        if (sh->owner != self) {
            atomic_inc(&sh->violations);
        }
        sh->owner = NULL;
        co_mutex_unlock(&sh->lock);
        if (i % 5000 == 4999) {
            tu_co_yield_to_loop();
        }
        if (current_aio_context() != w->home ||
            !pthread_equal(tu_thread_self(), w->home_thread)) {
            w->wrong_place++;
        }
    }
    atomic_inc(&sh->finished);
    aio_wait_kick();
}

static void test_contended_counter(void **state)
{
    IOThread *iot[NUM_IOTHREADS];
    Worker w[NUM_IOTHREADS];
    Shared sh = { 0 };
    char name[16];

    (void)state;
    co_mutex_init(&sh.lock);
    for (int i = 0; i < NUM_IOTHREADS; i++) {
        snprintf(name, sizeof(name), "mutex-%d", i);
        iot[i] = tu_iothread_new(name);
        w[i] = (Worker){
            .sh = &sh,
            .home = iothread_get_aio_context(iot[i]),
            .home_thread = tu_thread_info(iothread_get_aio_context(iot[i])).thread,
            .iterations = ITERATIONS,
        };
    }
    for (int i = 0; i < NUM_IOTHREADS; i++) {
        aio_co_schedule(w[i].home, coroutine_create(counter_worker, &w[i]));
    }
    AIO_WAIT_WHILE(NULL, atomic_read_mb(&sh.finished) < NUM_IOTHREADS);
    for (int i = 0; i < NUM_IOTHREADS; i++) {
        iothread_destroy(iot[i]);
    }
    assert_int_equal(sh.counter, (long)NUM_IOTHREADS * ITERATIONS);
    assert_int_equal(sh.violations, 0);
    /* The lock really went back and forth between the threads. */
    assert_true(sh.switches >= NUM_IOTHREADS * 10);
    for (int i = 0; i < NUM_IOTHREADS; i++) {
        assert_int_equal(w[i].wrong_place, 0);
    }
}

/* ---- FIFO hand-off in one thread --------------------------------------------- */

static CoMutex fifo_lock;
static char order[16];
static int norder;

static void coroutine_fn holder_entry(void *opaque)
{
    bool relock = (bool)(intptr_t)opaque;

    co_mutex_lock(&fifo_lock);
    order[norder++] = 'A';
    coroutine_yield();             /* hold it while B, C, D queue up */
    co_mutex_unlock(&fifo_lock);
    if (relock) {
        /* No barging: the lock was handed to B, so we queue behind D. */
        co_mutex_lock(&fifo_lock);
        order[norder++] = 'a';
        co_mutex_unlock(&fifo_lock);
    }
}

static void coroutine_fn waiter_entry(void *opaque)
{
    char name = (char)(intptr_t)opaque;

    co_mutex_lock(&fifo_lock);
    order[norder++] = name;
    co_mutex_unlock(&fifo_lock);
}

static void run_fifo(bool relock, const char *expected)
{
    Coroutine *a;

    co_mutex_init(&fifo_lock);
    memset(order, 0, sizeof(order));
    norder = 0;
    a = coroutine_create(holder_entry, (void *)(intptr_t)relock);
    coroutine_enter(a);
    coroutine_enter(coroutine_create(waiter_entry, (void *)'B'));
    coroutine_enter(coroutine_create(waiter_entry, (void *)'C'));
    coroutine_enter(coroutine_create(waiter_entry, (void *)'D'));
    assert_string_equal(order, "A");     /* all three are waiting */
    coroutine_enter(a);                  /* A unlocks */
    /* Everything ran within that enter or is scheduled on the loop. */
    while (aio_poll(main_aio_context(), false)) {
    }
    assert_string_equal(order, expected);
}

static void test_fifo_handoff(void **state)
{
    (void)state;
    run_fifo(false, "ABCD");
    run_fifo(true, "ABCDa");
}

/* ---- co_mutex_held ---------------------------------------------------------------- */

typedef struct Held {
    CoMutex lock;
    bool held_inside;
    bool held_after_unlock;
    bool other_sees_held;
    bool other_done;
} Held;

static void coroutine_fn held_other(void *opaque)
{
    Held *h = opaque;
    h->other_sees_held = co_mutex_held(&h->lock);
    h->other_done = true;
}

static void coroutine_fn held_entry(void *opaque)
{
    Held *h = opaque;

    co_mutex_lock(&h->lock);
    h->held_inside = co_mutex_held(&h->lock);
    /* Another coroutine does not hold it, even while we do. */
    coroutine_enter(coroutine_create(held_other, h));
    co_mutex_unlock(&h->lock);
    h->held_after_unlock = co_mutex_held(&h->lock);
}

typedef struct Try {
    CoMutex lock;
    bool first, second, after_unlock;
} Try;

static void coroutine_fn try_other(void *opaque)
{
    Try *t = opaque;

    if (co_mutex_trylock(&t->lock)) {           /* held by try_entry: refused */
        t->second = true;
        co_mutex_unlock(&t->lock);
    }
}

static void coroutine_fn try_entry(void *opaque)
{
    Try *t = opaque;

    if (co_mutex_trylock(&t->lock)) {
        t->first = true;
        assert_true(co_mutex_held(&t->lock));
        coroutine_enter(coroutine_create(try_other, t));
        co_mutex_unlock(&t->lock);
    }
    if (co_mutex_trylock(&t->lock)) {
        t->after_unlock = true;
        co_mutex_unlock(&t->lock);
    }
}

static void test_trylock(void **state)
{
    Try t = { 0 };

    (void)state;
    co_mutex_init(&t.lock);
    coroutine_enter(coroutine_create(try_entry, &t));
    assert_true(t.first);
    assert_false(t.second);
    assert_true(t.after_unlock);
}

static void test_held(void **state)
{
    Held h = { 0 };

    (void)state;
    co_mutex_init(&h.lock);
    assert_false(co_mutex_held(&h.lock));
    coroutine_enter(coroutine_create(held_entry, &h));
    assert_true(h.held_inside);
    assert_true(h.other_done);
    assert_false(h.other_sees_held);
    assert_false(h.held_after_unlock);
    assert_false(co_mutex_held(&h.lock));   /* not a coroutine */
}

/* ---- Hand-off to a waiter in another thread ---------------------------------------- */

typedef struct Handoff {
    CoMutex lock;
    Coroutine *main_co;
    unsigned waiting;        /* atomic: the iothread coroutine is queued */
    unsigned got_it;         /* atomic */
    AioContext *got_ctx;
    pthread_t got_thread;
    bool released;
} Handoff;

static void coroutine_fn handoff_main(void *opaque)
{
    Handoff *ho = opaque;

    co_mutex_lock(&ho->lock);
    coroutine_yield();
    co_mutex_unlock(&ho->lock);
    ho->released = true;
}

static void coroutine_fn handoff_io(void *opaque)
{
    Handoff *ho = opaque;

    atomic_store_release(&ho->waiting, 1);
    aio_wait_kick();
    co_mutex_lock(&ho->lock);
    ho->got_ctx = current_aio_context();
    ho->got_thread = tu_thread_self();
    co_mutex_unlock(&ho->lock);
    atomic_store_release(&ho->got_it, 1);
    aio_wait_kick();
}

static void test_handoff_across_threads(void **state)
{
    IOThread *iot = tu_iothread_new("handoff-io");
    AioContext *ctx = iothread_get_aio_context(iot);
    TuThreadInfo info = tu_thread_info(ctx);
    Handoff ho = { 0 };

    (void)state;
    co_mutex_init(&ho.lock);
    ho.main_co = coroutine_create(handoff_main, &ho);
    coroutine_enter(ho.main_co);                 /* main holds the lock */
    aio_co_schedule(ctx, coroutine_create(handoff_io, &ho));
    AIO_WAIT_WHILE(ctx, !atomic_load_acquire(&ho.waiting));
    /* Give it time to really queue up; it cannot get the lock. */
    tu_run_main_loop_ms(20);
    assert_false(atomic_load_acquire(&ho.got_it));
    coroutine_enter(ho.main_co);                 /* unlock: hand-off */
    assert_true(ho.released);
    AIO_WAIT_WHILE(ctx, !atomic_load_acquire(&ho.got_it));
    assert_ptr_equal(ho.got_ctx, ctx);
    assert_true(pthread_equal(ho.got_thread, info.thread));
    iothread_destroy(iot);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TU_TEST(test_fifo_handoff),
        TU_TEST(test_held),
        TU_TEST(test_trylock),
        TU_TEST(test_handoff_across_threads),
        TU_TEST(test_contended_counter),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
