/*
 * coroutine-lock.c - CoMutex, CoQueue and coroutine sleep.
 *
 * Waiters are records on the waiting coroutine's own stack, linked into the
 * lock's or queue's FIFO list; the waker unlinks the record and wakes the
 * coroutine with aio_co_wake(), so it resumes in its own thread.
 */
#include <assert.h>
#include <stdlib.h>

#include "coroutine-internal.h"
#include "blockd/atomic.h"

typedef struct CoWaiter {
    Coroutine *co;
    ListNode node;
} CoWaiter;

/* ---- CoMutex --------------------------------------------------------------- */

void co_mutex_init(CoMutex *m)
{
    bd_mutex_init(&m->lock);
    bd_mutex_lock(&m->lock);
    m->locked = false;
    m->holder = NULL;
    list_init(&m->waiters);
    bd_mutex_unlock(&m->lock);
}

void co_mutex_lock(CoMutex *m) TSA_NO_TSA
{
    Coroutine *self = coroutine_self();
    CoWaiter w = { .co = self };

    assert(self);
    bd_mutex_lock(&m->lock);
    if (!m->locked) {
        m->locked = true;
        m->holder = self;
        bd_mutex_unlock(&m->lock);
        return;
    }
    assert(m->holder != self);   /* not recursive */
    list_add_tail(&m->waiters, &w.node);
    bd_mutex_unlock(&m->lock);

    /* co_mutex_unlock() hands the lock over to us before waking us. */
    coroutine_yield();
}

void co_mutex_unlock(CoMutex *m) TSA_NO_TSA
{
    Coroutine *next = NULL;

    bd_mutex_lock(&m->lock);
    assert(m->locked && m->holder == coroutine_self());
    if (!list_empty(&m->waiters)) {
        CoWaiter *w = list_entry(m->waiters.next, CoWaiter, node);
        list_del(&w->node);
        next = w->co;
        m->holder = next;        /* hand-off: FIFO fairness, no barging */
    } else {
        m->locked = false;
        m->holder = NULL;
    }
    bd_mutex_unlock(&m->lock);

    if (next) {
        aio_co_wake(next);
    }
}

bool co_mutex_trylock(CoMutex *m) TSA_NO_TSA
{
    Coroutine *self = coroutine_self();
    bool got = false;

    assert(self);
    bd_mutex_lock(&m->lock);
    if (!m->locked) {
        m->locked = true;
        m->holder = self;
        got = true;
    }
    bd_mutex_unlock(&m->lock);
    return got;
}

bool co_mutex_held(CoMutex *m)
{
    bool held;

    bd_mutex_lock(&m->lock);
    held = m->locked && m->holder == coroutine_self();
    bd_mutex_unlock(&m->lock);
    return held;
}

/* ---- CoQueue ---------------------------------------------------------------- */

void co_queue_init(CoQueue *q)
{
    list_init(&q->waiters);
}

bool co_queue_empty(CoQueue *q)
{
    return list_empty(&q->waiters);
}

static void co_queue_push_self(CoQueue *q, CoWaiter *w)
{
    w->co = coroutine_self();
    assert(w->co);
    list_add_tail(&q->waiters, &w->node);
}

void co_queue_wait(CoQueue *q, CoMutex *m)
{
    CoWaiter w;

    co_queue_push_self(q, &w);
    co_mutex_unlock(m);
    coroutine_yield();
    co_mutex_lock(m);
}

void co_queue_wait_bdmutex(CoQueue *q, BdMutex *m)
{
    CoWaiter w;

    co_queue_push_self(q, &w);
    bd_mutex_unlock(m);
    coroutine_yield();
    bd_mutex_lock(m);
}

void co_queue_wait_unlocked(CoQueue *q)
{
    CoWaiter w;

    co_queue_push_self(q, &w);
    coroutine_yield();
}

static Coroutine *co_queue_pop(CoQueue *q)
{
    CoWaiter *w;

    if (list_empty(&q->waiters)) {
        return NULL;
    }
    w = list_entry(q->waiters.next, CoWaiter, node);
    list_del(&w->node);
    return w->co;
}

bool co_queue_next(CoQueue *q)
{
    Coroutine *co = co_queue_pop(q);

    if (co) {
        aio_co_wake(co);
    }
    return co != NULL;
}

void co_queue_restart_all(CoQueue *q)
{
    CoQueue woken;

    /*
     * Only those waiting now: a woken coroutine may run at once and wait
     * on the same queue again, and must not be woken again by this call.
     */
    co_queue_init(&woken);
    list_splice_tail(&woken.waiters, &q->waiters);
    while (co_queue_next(&woken)) {
    }
}

bool co_queue_next_bdmutex(CoQueue *q, BdMutex *m)
{
    Coroutine *co = co_queue_pop(q);

    if (co) {
        /* Waking may enter it here, and it takes @m on its way out. */
        bd_mutex_unlock(m);
        aio_co_wake(co);
        bd_mutex_lock(m);
    }
    return co != NULL;
}

void co_queue_restart_all_bdmutex(CoQueue *q, BdMutex *m)
{
    CoQueue woken;

    /* As co_queue_restart_all(): only the coroutines waiting now. */
    co_queue_init(&woken);
    list_splice_tail(&woken.waiters, &q->waiters);
    while (co_queue_next_bdmutex(&woken, m)) {
    }
}

/* ---- Sleeping ---------------------------------------------------------------- */

static void co_sleep_timer_cb(void *opaque)
{
    co_sleep_wake(opaque);
}

void co_sleep_wake(CoSleep *w)
{
    Coroutine *co = atomic_xchg(&w->to_wake, NULL);

    if (co) {
        aio_co_wake(co);
    }
}

void co_sleep_ns_wakeable(CoSleep *w, int64_t ns)
{
    AioTimer *t = NULL;

    atomic_set_mb(&w->to_wake, coroutine_self());
    if (ns >= 0) {
        t = aio_timer_new(current_aio_context(), co_sleep_timer_cb, w);
        timer_mod(t, clock_now_ns() + ns);
    }
    coroutine_yield();
    /* Woken by the timer or by co_sleep_wake(): either cleared to_wake. */
    assert(!atomic_read(&w->to_wake));
    timer_free(t);
}

void co_sleep_ns(int64_t ns)
{
    CoSleep w = { 0 };
    co_sleep_ns_wakeable(&w, ns);
}
