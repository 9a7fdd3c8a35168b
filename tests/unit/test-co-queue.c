/*
 * test-co-queue - CoQueue with a CoMutex, with no lock, and with a
 * BdMutex across threads.
 */
#include <string.h>

#include "test-util.h"

static char order[64];
static int norder;

static void reset_order(void)
{
    memset(order, 0, sizeof(order));
    norder = 0;
}

/* ---- CoMutex-protected queue, one thread ----------------------------------------- */

typedef struct Gate {
    CoMutex lock;
    CoQueue queue;
    int open_count;          /* protected by lock: how many may pass */
    int passed;
    bool held_after_wait;
} Gate;

static Gate gate;

static void coroutine_fn gate_waiter(void *opaque)
{
    char name = (char)(intptr_t)opaque;

    co_mutex_lock(&gate.lock);
    while (gate.open_count == 0) {
        co_queue_wait(&gate.queue, &gate.lock);
        /* co_queue_wait() returns with the lock held again. */
        if (!co_mutex_held(&gate.lock)) {
            gate.held_after_wait = false;
        }
    }
    gate.open_count--;
    gate.passed++;
    order[norder++] = name;
    co_mutex_unlock(&gate.lock);
}

typedef enum { WAKE_ONE, WAKE_ALL, WAKE_ALL_OPEN_ONE } WakeKind;

static bool wake_result;

static void coroutine_fn gate_opener(void *opaque)
{
    WakeKind kind = (WakeKind)(intptr_t)opaque;

    co_mutex_lock(&gate.lock);
    if (kind == WAKE_ONE) {
        gate.open_count++;
        wake_result = co_queue_next(&gate.queue);
    } else if (kind == WAKE_ALL) {
        gate.open_count += 100;
        co_queue_restart_all(&gate.queue);
    } else {
        gate.open_count++;
        co_queue_restart_all(&gate.queue);
    }
    order[norder++] = '!';   /* the woken run only after we release */
    co_mutex_unlock(&gate.lock);
}

static void test_queue_with_comutex(void **state)
{
    (void)state;
    reset_order();
    memset(&gate, 0, sizeof(gate));
    gate.held_after_wait = true;
    co_mutex_init(&gate.lock);
    co_queue_init(&gate.queue);
    assert_true(co_queue_empty(&gate.queue));

    for (char c = 'A'; c <= 'E'; c++) {
        coroutine_enter(coroutine_create(gate_waiter, (void *)(intptr_t)c));
    }
    assert_int_equal(norder, 0);
    assert_false(co_queue_empty(&gate.queue));

    /* co_queue_next wakes exactly one, the first in line. */
    coroutine_enter(coroutine_create(gate_opener, (void *)WAKE_ONE));
    while (aio_poll(main_aio_context(), false)) {
    }
    assert_true(wake_result);
    assert_string_equal(order, "!A");
    coroutine_enter(coroutine_create(gate_opener, (void *)WAKE_ONE));
    while (aio_poll(main_aio_context(), false)) {
    }
    assert_string_equal(order, "!A!B");

    /* co_queue_restart_all wakes all the rest, in FIFO order. */
    coroutine_enter(coroutine_create(gate_opener, (void *)WAKE_ALL));
    while (aio_poll(main_aio_context(), false)) {
    }
    assert_string_equal(order, "!A!B!CDE");
    assert_int_equal(gate.passed, 5);
    assert_true(gate.held_after_wait);
    assert_true(co_queue_empty(&gate.queue));

    /* Nobody waiting: next returns false, restart_all does nothing. */
    coroutine_enter(coroutine_create(gate_opener, (void *)WAKE_ONE));
    assert_false(wake_result);
    coroutine_enter(coroutine_create(gate_opener, (void *)WAKE_ALL));
    assert_string_equal(order, "!A!B!CDE!!");
}

/* A woken waiter that finds the condition false waits again, at the back. */
static void test_spurious_wakeup_requeues(void **state)
{
    (void)state;
    reset_order();
    memset(&gate, 0, sizeof(gate));
    gate.held_after_wait = true;
    co_mutex_init(&gate.lock);
    co_queue_init(&gate.queue);

    coroutine_enter(coroutine_create(gate_waiter, (void *)'A'));
    coroutine_enter(coroutine_create(gate_waiter, (void *)'B'));
    /* Wake everybody but open for one only. */
    coroutine_enter(coroutine_create(gate_opener, (void *)WAKE_ALL_OPEN_ONE));
    while (aio_poll(main_aio_context(), false)) {
    }
    assert_string_equal(order, "!A");
    assert_false(co_queue_empty(&gate.queue));
    coroutine_enter(coroutine_create(gate_opener, (void *)WAKE_ONE));
    assert_string_equal(order, "!A!B");
    assert_true(co_queue_empty(&gate.queue));
}

/* ---- Unlocked queue woken from outside coroutines ---------------------------------- */

static CoQueue plain_queue;

static void coroutine_fn plain_waiter(void *opaque)
{
    char name = (char)(intptr_t)opaque;

    co_queue_wait_unlocked(&plain_queue);
    order[norder++] = name;
}

static void test_unlocked_queue(void **state)
{
    (void)state;
    reset_order();
    co_queue_init(&plain_queue);
    for (char c = 'a'; c <= 'd'; c++) {
        coroutine_enter(coroutine_create(plain_waiter, (void *)(intptr_t)c));
    }
    assert_int_equal(norder, 0);
    /* Not in a coroutine: the woken one runs at once. */
    assert_true(co_queue_next(&plain_queue));
    assert_string_equal(order, "a");
    co_queue_restart_all(&plain_queue);
    assert_string_equal(order, "abcd");
    assert_true(co_queue_empty(&plain_queue));
    assert_false(co_queue_next(&plain_queue));
}

/* ---- BdMutex-protected queue, across threads ---------------------------------------- */

#define PER_THREAD 4
#define NTHREADS 2

typedef struct Barrier {
    BdMutex lock;
    CoQueue queue;           /* protected by lock */
    bool go;                 /* protected by lock */
    int waiting;             /* protected by lock */
    int passed;              /* protected by lock */
    int wrong_place;         /* protected by lock */
} Barrier;

typedef struct BarrierArg {
    Barrier *b;
    AioContext *home;
    pthread_t home_thread;
} BarrierArg;

static void coroutine_fn barrier_waiter(void *opaque) TSA_NO_TSA
{
    BarrierArg *a = opaque;
    Barrier *b = a->b;

    bd_mutex_lock(&b->lock);
    b->waiting++;
    aio_wait_kick();
    while (!b->go) {
        co_queue_wait_bdmutex(&b->queue, &b->lock);
    }
    if (current_aio_context() != a->home ||
        !pthread_equal(tu_thread_self(), a->home_thread)) {
        b->wrong_place++;
    }
    b->passed++;
    bd_mutex_unlock(&b->lock);
    aio_wait_kick();
}

static int barrier_waiting(Barrier *b)
{
    int n;

    bd_mutex_lock(&b->lock);
    n = b->waiting;
    bd_mutex_unlock(&b->lock);
    return n;
}

static int barrier_passed(Barrier *b)
{
    int n;

    bd_mutex_lock(&b->lock);
    n = b->passed;
    bd_mutex_unlock(&b->lock);
    return n;
}

static void test_bdmutex_across_threads(void **state)
{
    IOThread *iot[NTHREADS];
    BarrierArg args[NTHREADS][PER_THREAD];
    Barrier b;

    (void)state;
    memset(&b, 0, sizeof(b));
    bd_mutex_init(&b.lock);
    co_queue_init(&b.queue);
    for (int t = 0; t < NTHREADS; t++) {
        char name[16];
        snprintf(name, sizeof(name), "queue-%d", t);
        iot[t] = tu_iothread_new(name);
        AioContext *ctx = iothread_get_aio_context(iot[t]);
        pthread_t th = tu_thread_info(ctx).thread;
        for (int i = 0; i < PER_THREAD; i++) {
            args[t][i] = (BarrierArg){ &b, ctx, th };
            aio_co_schedule(ctx, coroutine_create(barrier_waiter, &args[t][i]));
        }
    }
    AIO_WAIT_WHILE(NULL, barrier_waiting(&b) < NTHREADS * PER_THREAD);
    /* They are all inside or about to be inside co_queue_wait_bdmutex;
     * none passes while go is false. */
    tu_run_main_loop_ms(20);
    assert_int_equal(barrier_passed(&b), 0);

    bd_mutex_lock(&b.lock);
    b.go = true;
    co_queue_restart_all_bdmutex(&b.queue, &b.lock);
    bd_mutex_unlock(&b.lock);

    AIO_WAIT_WHILE(NULL, barrier_passed(&b) < NTHREADS * PER_THREAD);
    for (int t = 0; t < NTHREADS; t++) {
        iothread_destroy(iot[t]);
    }
    assert_int_equal(b.passed, NTHREADS * PER_THREAD);
    assert_int_equal(b.wrong_place, 0);
    assert_true(co_queue_empty(&b.queue));
    bd_mutex_destroy(&b.lock);
}

/*
 * Producer/consumer with co_queue_next_bdmutex: a consumer coroutine in
 * the main thread waits for items produced by a coroutine in an iothread.
 */
#define ITEMS 2000

typedef struct Pipe {
    BdMutex lock;
    CoQueue not_empty;       /* protected by lock */
    int items;               /* protected by lock */
    long consumed;
    bool done;
    int wrong_place;
} Pipe;

static void coroutine_fn consumer(void *opaque) TSA_NO_TSA
{
    Pipe *p = opaque;

    for (int i = 0; i < ITEMS; i++) {
        bd_mutex_lock(&p->lock);
        while (p->items == 0) {
            co_queue_wait_bdmutex(&p->not_empty, &p->lock);
        }
        p->items--;
        bd_mutex_unlock(&p->lock);
        p->consumed++;
        if (!in_main_thread()) {
            p->wrong_place++;
        }
    }
    p->done = true;
}

static void coroutine_fn producer(void *opaque) TSA_NO_TSA
{
    Pipe *p = opaque;

    for (int i = 0; i < ITEMS; i++) {
        bd_mutex_lock(&p->lock);
        p->items++;
        co_queue_next_bdmutex(&p->not_empty, &p->lock);
        bd_mutex_unlock(&p->lock);
        if (i % 16 == 0) {
            tu_co_yield_to_loop();
        }
    }
}

static void test_producer_consumer(void **state)
{
    IOThread *iot = tu_iothread_new("producer");
    Pipe p;

    (void)state;
    memset(&p, 0, sizeof(p));
    bd_mutex_init(&p.lock);
    co_queue_init(&p.not_empty);
    coroutine_enter(coroutine_create(consumer, &p));
    aio_co_schedule(iothread_get_aio_context(iot), coroutine_create(producer, &p));
    AIO_WAIT_WHILE(NULL, !p.done);
    iothread_destroy(iot);
    assert_int_equal(p.consumed, ITEMS);
    assert_int_equal(p.items, 0);
    assert_int_equal(p.wrong_place, 0);
    bd_mutex_destroy(&p.lock);
}

/* ---- restart_all wakes only those waiting when it is called ------------- */

typedef struct Rewaiter {
    CoQueue *q;
    BdMutex *lock;          /* NULL: an unlocked queue */
    int wakeups;
    bool stop;
} Rewaiter;

static void coroutine_fn rewaiter_co(void *opaque)
{
    Rewaiter *r = opaque;

    /* Wait again at once after every wake-up, until told to stop. */
    while (!r->stop) {
        if (r->lock) {
            bd_mutex_lock(r->lock);
            co_queue_wait_bdmutex(r->q, r->lock);
            bd_mutex_unlock(r->lock);
        } else {
            co_queue_wait_unlocked(r->q);
        }
        r->wakeups++;
    }
}

static void test_restart_all_does_not_rewake(void **state)
{
    CoQueue q;
    BdMutex lock;
    Rewaiter plain = { .q = &q }, locked = { .q = &q, .lock = &lock };

    (void)state;
    co_queue_init(&q);
    bd_mutex_init(&lock);
    coroutine_enter(coroutine_create(rewaiter_co, &plain));
    /* Outside a coroutine the woken one runs at once and waits again:
     * a restart that kept popping would never return. */
    co_queue_restart_all(&q);
    assert_int_equal(plain.wakeups, 1);
    assert_false(co_queue_empty(&q));
    co_queue_restart_all(&q);
    assert_int_equal(plain.wakeups, 2);

    coroutine_enter(coroutine_create(rewaiter_co, &locked));
    bd_mutex_lock(&lock);
    co_queue_restart_all_bdmutex(&q, &lock);
    bd_mutex_unlock(&lock);
    assert_int_equal(plain.wakeups, 3);
    assert_int_equal(locked.wakeups, 1);
    /* Both parked again; now let them finish. */
    assert_false(co_queue_empty(&q));
    plain.stop = locked.stop = true;
    bd_mutex_lock(&lock);
    co_queue_restart_all_bdmutex(&q, &lock);
    bd_mutex_unlock(&lock);
    assert_true(co_queue_empty(&q));
    bd_mutex_destroy(&lock);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TU_TEST(test_queue_with_comutex),
        TU_TEST(test_spurious_wakeup_requeues),
        TU_TEST(test_unlocked_queue),
        TU_TEST(test_bdmutex_across_threads),
        TU_TEST(test_producer_consumer),
        TU_TEST(test_restart_all_does_not_rewake),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
