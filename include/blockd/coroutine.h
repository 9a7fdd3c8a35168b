/*
 * coroutine.h - cooperative user-space threads.
 *
 * Half: common (I/O code runs in coroutines; global-state code may create
 * and enter them too).
 *
 * A coroutine runs on its own stack until it yields or returns.  It
 * belongs to the AioContext it last ran in (co->ctx) and is only ever
 * resumed in that context's home thread: aio_co_wake() from another thread
 * schedules it there.  Stacks come from a per-thread pool (guard page below
 * each), so starting a coroutine does not call mmap.  Every switch is
 * announced to AddressSanitizer and ThreadSanitizer.
 */
#ifndef BLOCKD_COROUTINE_H
#define BLOCKD_COROUTINE_H

#include <stdbool.h>
#include <stdint.h>
#include "blockd/aio.h"
#include "blockd/list.h"
#include "blockd/thread.h"

typedef void coroutine_fn CoroutineEntry(void *opaque);

/* Create a coroutine that will run @entry(@opaque).  Any thread. */
Coroutine *coroutine_create(CoroutineEntry *entry, void *opaque);

/*
 * Switch to @co in the calling thread, with co->ctx set to the caller's
 * current context, until it yields or terminates; a coroutine that
 * terminates is freed.  Entering a coroutine that is running aborts with
 * "coroutine re-entered recursively".  Any thread with a context.
 */
void coroutine_enter(Coroutine *co);
/* As coroutine_enter(), but sets co->ctx to @ctx (which must be the
 * caller's current context). */
void aio_coroutine_enter(AioContext *ctx, Coroutine *co);

/* Return to whoever entered the calling coroutine.  Coroutine only. */
void coroutine_fn coroutine_yield(void);

/* The running coroutine, or NULL outside coroutines.  Any thread. */
Coroutine *coroutine_self(void);
bool in_coroutine(void);
/* Is @co running right now (entered and not yet yielded)? */
bool coroutine_entered(Coroutine *co);
/* The context @co belongs to. */
AioContext *coroutine_get_ctx(Coroutine *co);

/* Per-thread pool statistics, for tests and benchmarks. */
unsigned coroutine_pool_size(void);
/* Release the calling thread's pooled stacks. */
void coroutine_pool_drain(void);

/* ---- CoMutex: a mutex for coroutines ----------------------------------- */

/*
 * A lock held by a coroutine across yields.  Coroutines in different
 * threads may contend; waiters are queued FIFO and the lock is handed
 * directly to the next waiter, which is woken in its own context.  It is
 * not recursive.  Coroutine only.
 */
typedef struct TSA_CAPABILITY("comutex") CoMutex {
    BdMutex lock;            /* protects the fields below; never held across a yield */
    bool locked TSA_FIELD_GUARDED_BY(lock);
    Coroutine *holder TSA_FIELD_GUARDED_BY(lock);
    ListNode waiters TSA_FIELD_GUARDED_BY(lock);   /* of CoWaiter, FIFO */
} CoMutex;

void co_mutex_init(CoMutex *m);
void coroutine_fn co_mutex_lock(CoMutex *m) TSA_ACQUIRE(m);
void coroutine_fn co_mutex_unlock(CoMutex *m) TSA_RELEASE(m);
/* Take @m if nobody holds it, without waiting: true if taken. */
bool coroutine_fn co_mutex_trylock(CoMutex *m) TSA_TRY_ACQUIRE(true, m);
/* Does the calling coroutine hold @m?  (For assertions.) */
bool co_mutex_held(CoMutex *m);

/* ---- CoQueue: a wait queue ---------------------------------------------- */

/*
 * Coroutines wait on a CoQueue for a condition that another coroutine (or
 * thread) makes true.  The queue is protected by the lock passed to
 * co_queue_wait(), which is released while waiting and taken again before
 * returning: a CoMutex or a BdMutex (or none, when every waiter and waker
 * runs in one thread).  Wakers hold the same lock.
 */
typedef struct CoQueue {
    ListNode waiters;
} CoQueue;

void co_queue_init(CoQueue *q);
bool co_queue_empty(CoQueue *q);
void coroutine_fn co_queue_wait(CoQueue *q, CoMutex *m) TSA_REQUIRES(m);
void coroutine_fn co_queue_wait_bdmutex(CoQueue *q, BdMutex *m) TSA_REQUIRES(m);
void coroutine_fn co_queue_wait_unlocked(CoQueue *q);
/* Wake the first waiter; false if there was none.  For queues protected by
 * a CoMutex (held by the calling coroutine) or by nothing. */
bool co_queue_next(CoQueue *q);
/* Wake every waiter. */
void co_queue_restart_all(CoQueue *q);
/* The same for queues protected by a BdMutex, which the caller holds; it is
 * released around each wake-up because a woken coroutine may run at once
 * and take it. */
bool co_queue_next_bdmutex(CoQueue *q, BdMutex *m) TSA_REQUIRES(m);
void co_queue_restart_all_bdmutex(CoQueue *q, BdMutex *m) TSA_REQUIRES(m);

/* ---- Sleeping ----------------------------------------------------------- */

/* Sleep for @ns nanoseconds on a timer of the current context. */
void coroutine_fn co_sleep_ns(int64_t ns);

/*
 * A sleep that another party may cut short: co_sleep_wake() wakes the
 * sleeper early (from any thread); a wake with nobody asleep does nothing.
 */
typedef struct CoSleep {
    Coroutine *to_wake;
} CoSleep;

/* Sleep until @ns have passed or co_sleep_wake(); -1 means no timeout. */
void coroutine_fn co_sleep_ns_wakeable(CoSleep *w, int64_t ns);
void co_sleep_wake(CoSleep *w);

#endif /* BLOCKD_COROUTINE_H */
