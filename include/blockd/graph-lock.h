/*
 * graph-lock.h - the reader/writer lock that protects the block graph.
 *
 * Readers are coroutines in any thread (I/O requests walking from a node
 * to its children); the writer is the main thread changing the graph.
 *
 *   graph_co_rdlock / graph_co_rdunlock   I/O, coroutine only
 *   graph_rdlock_main_loop / _unlock      global state, not in a coroutine:
 *                                         the main thread is the only writer,
 *                                         so it only asserts
 *   graph_wrlock / graph_wrunlock         global state, not in a coroutine
 *   graph_defer_after_wrunlock            global state, write lock held
 *
 * An uncontended read lock touches only a counter of the calling thread:
 * no cache line shared with other threads is written.  A writer announces
 * itself (has_writer), waits until the sum of every thread's counter is
 * zero, and new readers queue until it unlocks.  Counters of single
 * threads may go negative (a coroutine that locked in one thread and
 * unlocked in another); only the sum is meaningful.
 *
 * Rules: never take the write lock while holding a read lock, never drain
 * or poll with the write lock held (use graph_defer_after_wrunlock for
 * work that must poll, such as dropping the last reference of a node), and
 * never wait for the writer while holding a read lock.
 *
 * The lock is a clang thread-safety capability: functions that need it say
 * GRAPH_RDLOCK or GRAPH_WRLOCK, functions that must not hold it
 * GRAPH_UNLOCKED, and the clang build checks the callers.
 */
#ifndef BLOCKD_GRAPH_LOCK_H
#define BLOCKD_GRAPH_LOCK_H

#include <stdbool.h>
#include "blockd/compiler.h"

typedef struct TSA_CAPABILITY("graph-lock") GraphLock {
    int unused;
} GraphLock;

/* A dummy object that stands for the graph lock in the annotations. */
extern GraphLock graph_lock;

#define GRAPH_RDLOCK       TSA_REQUIRES_SHARED(graph_lock)
#define GRAPH_WRLOCK       TSA_REQUIRES(graph_lock)
#define GRAPH_UNLOCKED     TSA_EXCLUDES(graph_lock)
/* On a function-pointer field: calling through it needs the lock. */
#define GRAPH_RDLOCK_PTR   TSA_GUARDED_BY(graph_lock)
#define GRAPH_WRLOCK_PTR   TSA_GUARDED_BY(graph_lock)

/* Take / drop the read lock.  Coroutine only, any thread. */
void coroutine_fn graph_co_rdlock(void) TSA_ACQUIRE_SHARED(graph_lock) TSA_NO_TSA;
void coroutine_fn graph_co_rdunlock(void) TSA_RELEASE_SHARED(graph_lock) TSA_NO_TSA;

/* The main loop's read lock: asserts main thread, not a coroutine. */
void graph_rdlock_main_loop(void) TSA_ACQUIRE_SHARED(graph_lock) TSA_NO_TSA;
void graph_rdunlock_main_loop(void) TSA_RELEASE_SHARED(graph_lock) TSA_NO_TSA;

/*
 * Take the write lock: waits (polling the main loop) until no reader holds
 * the lock; new readers queue meanwhile.  Global state, not in a coroutine.
 */
void graph_wrlock(void) TSA_ACQUIRE(graph_lock) TSA_NO_TSA;

/*
 * Drop the write lock, restart the queued readers, then run the work
 * deferred with graph_defer_after_wrunlock() -- all before returning, so
 * that, e.g., a node unreferenced under the lock is closed when this
 * returns.  Global state.
 */
void graph_wrunlock(void) TSA_RELEASE(graph_lock) TSA_NO_TSA;

typedef void GraphDeferFn(void *opaque);

/*
 * Run @fn(@opaque) right after the write lock is dropped, in FIFO order,
 * and before graph_wrunlock() returns.  This is where node deletion goes
 * (it drains, which is forbidden with the lock held).  Only this list runs
 * there: unrelated main-loop work does not.  Global state, write lock held.
 */
void graph_defer_after_wrunlock(GraphDeferFn *fn, void *opaque) GRAPH_WRLOCK;

/*
 * Hooks for the drain code: quiesce every node without polling before a
 * writer waits for readers (so readers cannot starve it), and end that.
 * NULL until the block layer installs them.  Global state.
 */
void graph_lock_set_drain_hooks(void (*begin_nopoll)(void), void (*end)(void));

/*
 * For tests: @fn runs inside graph_wrlock() each time the writer has
 * found no readers, first with @announced false (has_writer still clear:
 * a reader may still get in), then with @announced true (has_writer set,
 * about to count the readers again: arriving readers queue).  NULL: none.
 * Global state.
 */
void graph_lock_set_recheck_hook(void (*fn)(bool announced));

/* Debug helpers: is the write lock held (main thread)?  The number of
 * readers (sum of all threads' counters; takes a lock, slow). */
bool graph_is_write_locked(void);
long graph_reader_count(void);
/* Does the lock use the production ordering (membarrier() on the writer's
 * side, compiler barriers only in readers)?  False under ThreadSanitizer
 * and where the kernel lacks membarrier: then both sides are seq-cst. */
bool graph_lock_uses_membarrier(void);
void assert_graph_writable(void);
void assert_graph_readable(void);

#endif /* BLOCKD_GRAPH_LOCK_H */
