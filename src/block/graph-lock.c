/*
 * graph-lock.c - the block graph's reader/writer lock.
 *
 * Each thread that takes read locks owns a GraphReader with a counter that
 * only that thread writes.  The readers are linked into a global list
 * under reader_list_lock so the writer can add them up; when a thread
 * exits its count moves to orphaned_count, keeping the sum exact.
 *
 * Ordering: a reader stores its count and then loads has_writer; the
 * writer stores has_writer and then loads the counts, so at least one of
 * them must see the other.  That needs a full barrier on both sides.  The
 * writer is rare and the readers are every I/O request, so the barrier is
 * made asymmetric where the kernel allows: readers only stop the compiler
 * from reordering, and the writer issues membarrier(), which makes every
 * running thread of the process execute a full barrier.  Without
 * membarrier, and under ThreadSanitizer (which does not understand it),
 * both sides use sequentially consistent accesses.
 */
#include <assert.h>
#include <linux/membarrier.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "blockd/aio-wait.h"
#include "blockd/atomic.h"
#include "blockd/coroutine.h"
#include "blockd/graph-lock.h"
#include "blockd/list.h"
#include "blockd/main-loop.h"
#include "blockd/thread.h"

GraphLock graph_lock;

typedef struct GraphReader {
    long count;           /* written by the owning thread only (atomically) */
    ListNode node;        /* in reader_list */
} GraphReader;

typedef struct DeferredWork {
    GraphDeferFn *fn;
    void *opaque;
    ListNode node;
} DeferredWork;

static BdMutex reader_list_lock;
static ListNode reader_list TSA_GUARDED_BY(reader_list_lock);
static long orphaned_count TSA_GUARDED_BY(reader_list_lock);
/* Readers waiting for the writer to leave. */
static CoQueue reader_queue TSA_GUARDED_BY(reader_list_lock);

static int has_writer;            /* atomic */
/*
 * atomic: the number of writers inside graph_wrlock(), possibly polling
 * with has_writer clear; readers that unlock must kick them.  A count, not
 * a flag: a writer can nest inside another's wait loop (a BH that changes
 * the graph), and when the inner one is done the outer one still waits.
 */
static int writer_waiting;
/* Main thread only, added to with the write lock held and run after it is
 * dropped: not annotated, as graph_lock here is the lock it outlives. */
static ListNode deferred_work;
static void (*drain_begin_nopoll_hook)(void);
static void (*drain_end_hook)(void);
static void (*recheck_hook)(bool announced);    /* tests only */

static pthread_once_t graph_once = PTHREAD_ONCE_INIT;
static bool use_membarrier;       /* set once, before any reader runs */
static pthread_key_t reader_key;
static __thread GraphReader *tls_reader;

static void reader_thread_exit(void *opaque)
{
    GraphReader *r = opaque;

    bd_mutex_lock(&reader_list_lock);
    orphaned_count += atomic_read(&r->count);
    list_del(&r->node);
    bd_mutex_unlock(&reader_list_lock);
    free(r);
}

static void graph_lock_init(void)
{
    bd_mutex_init(&reader_list_lock);
    bd_mutex_lock(&reader_list_lock);
    list_init(&reader_list);
    co_queue_init(&reader_queue);
    bd_mutex_unlock(&reader_list_lock);
    list_init(&deferred_work);
    if (pthread_key_create(&reader_key, reader_thread_exit)) {
        abort();
    }
#ifndef BD_TSAN
    use_membarrier =
        syscall(__NR_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
#endif
}

/*
 * The reader's half of the handshake: store @value to the count, then
 * order that store before the load that follows.
 */
static inline void reader_publish(long *count, long value)
{
    if (likely(use_membarrier)) {
        atomic_store_release(count, value);
        barrier();         /* the writer's membarrier() supplies the fence */
    } else {
        atomic_set_mb(count, value);
    }
}

static inline int reader_peek(int *flag)
{
    return use_membarrier ? atomic_load_acquire(flag) : atomic_read_mb(flag);
}

/* The writer's half, after its store: a barrier in every thread. */
static void writer_fence_all(void)
{
    if (use_membarrier &&
        syscall(__NR_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) < 0) {
        abort();   /* registered at start-up: cannot fail */
    }
}

static void writer_publish(int *flag, int value)
{
    atomic_set_mb(flag, value);
    writer_fence_all();
}

static GraphReader *reader_register(void)
{
    GraphReader *r = calloc(1, sizeof(*r));

    if (!r) {
        abort();
    }
    pthread_once(&graph_once, graph_lock_init);
    bd_mutex_lock(&reader_list_lock);
    list_add_tail(&reader_list, &r->node);
    bd_mutex_unlock(&reader_list_lock);
    pthread_setspecific(reader_key, r);
    tls_reader = r;
    return r;
}

/* The calling thread's reader; not inlined because coroutines move threads. */
static __attribute__((noinline)) GraphReader *reader_get(void)
{
    GraphReader **p = &tls_reader;
    __asm__ __volatile__("" : "+r"(p));
    return *p ? *p : reader_register();
}

static long reader_count_locked(void) TSA_REQUIRES(reader_list_lock)
{
    long sum = orphaned_count;

    list_for_each(n, &reader_list) {
        sum += atomic_read_mb(&list_entry(n, GraphReader, node)->count);
    }
    assert(sum >= 0);
    return sum;
}

long graph_reader_count(void)
{
    long sum;

    pthread_once(&graph_once, graph_lock_init);
    bd_mutex_lock(&reader_list_lock);
    sum = reader_count_locked();
    bd_mutex_unlock(&reader_list_lock);
    return sum;
}

void graph_co_rdlock(void)
{
    assert(in_coroutine());
    for (;;) {
        GraphReader *r = reader_get();

        reader_publish(&r->count, r->count + 1);
        if (likely(!reader_peek(&has_writer))) {
            return;
        }

        /* Slow path: a writer is there or coming. */
        bd_mutex_lock(&reader_list_lock);
        if (!atomic_read_mb(&has_writer)) {
            /* It left while we took the lock. */
            bd_mutex_unlock(&reader_list_lock);
            return;
        }
        atomic_set_mb(&r->count, r->count - 1);
        /* The writer may be waiting for exactly this decrement. */
        aio_wait_kick();
        co_queue_wait_bdmutex(&reader_queue, &reader_list_lock);
        bd_mutex_unlock(&reader_list_lock);
    }
}

void graph_co_rdunlock(void)
{
    /* No in_coroutine() check here: it pairs with graph_co_rdlock(), which
     * checked, and this is every request's hot path. */
    GraphReader *r = reader_get();

    reader_publish(&r->count, r->count - 1);
    /*
     * Not has_writer: the writer clears that while it polls.  This pairs
     * with the writer's store of writer_waiting and load of the counts:
     * one of us sees the other.
     */
    if (reader_peek(&writer_waiting)) {
        aio_wait_kick();
    }
}

void graph_rdlock_main_loop(void)
{
    GLOBAL_STATE_CODE();
    assert(!in_coroutine());
}

void graph_rdunlock_main_loop(void)
{
    GLOBAL_STATE_CODE();
    assert(!in_coroutine());
}

void graph_lock_set_drain_hooks(void (*begin_nopoll)(void), void (*end)(void))
{
    GLOBAL_STATE_CODE();
    drain_begin_nopoll_hook = begin_nopoll;
    drain_end_hook = end;
}

void graph_lock_set_recheck_hook(void (*fn)(bool announced))
{
    GLOBAL_STATE_CODE();
    recheck_hook = fn;
}

static bool readers_present(void)
{
    return graph_reader_count() > 0;
}

/*
 * Clear has_writer and let the queued readers go.  Also before the writer
 * polls again after a failed re-check: readers that queued in that window
 * would otherwise wait for graph_wrunlock(), and what the writer polls
 * for (a BH that drains, say) may be waiting for them.
 */
static void writer_clear_and_restart_readers(void)
{
    bd_mutex_lock(&reader_list_lock);
    atomic_set_mb(&has_writer, 0);
    co_queue_restart_all_bdmutex(&reader_queue, &reader_list_lock);
    bd_mutex_unlock(&reader_list_lock);
}

void graph_wrlock(void)
{
    GLOBAL_STATE_CODE();
    assert(!in_coroutine());
    assert(!atomic_read(&has_writer));
    pthread_once(&graph_once, graph_lock_init);

    atomic_inc(&writer_waiting);          /* a full barrier */
    writer_fence_all();
    /* Stop new requests so that readers cannot starve the writer. */
    if (drain_begin_nopoll_hook) {
        drain_begin_nopoll_hook();
    }
    do {
        /*
         * Poll with has_writer clear: what runs meanwhile may need a read
         * lock to finish.  Then announce ourselves and check again, which
         * closes the window in which a reader could slip in.
         */
        writer_clear_and_restart_readers();
        AIO_WAIT_WHILE_UNLOCKED(NULL, readers_present());
        if (recheck_hook) {
            recheck_hook(false);
        }
        writer_publish(&has_writer, 1);
        if (recheck_hook) {
            recheck_hook(true);
        }
    } while (readers_present());
    atomic_dec(&writer_waiting);

    if (drain_end_hook) {
        drain_end_hook();
    }
}

void graph_wrunlock(void)
{
    ListNode work;

    GLOBAL_STATE_CODE();
    assert(atomic_read(&has_writer));

    writer_clear_and_restart_readers();

    /*
     * Now draining is allowed again: run the deferred work (node deletion).
     * Detach the list first; work deferred by a callback that takes the
     * write lock again is run by that unlock.
     */
    list_init(&work);
    list_splice_tail(&work, &deferred_work);
    while (!list_empty(&work)) {
        DeferredWork *w = list_entry(work.next, DeferredWork, node);
        list_del(&w->node);
        w->fn(w->opaque);
        free(w);
    }
}

void graph_defer_after_wrunlock(GraphDeferFn *fn, void *opaque)
{
    DeferredWork *w = calloc(1, sizeof(*w));

    GLOBAL_STATE_CODE();
    assert_graph_writable();
    if (!w) {
        abort();
    }
    w->fn = fn;
    w->opaque = opaque;
    list_add_tail(&deferred_work, &w->node);
}

bool graph_lock_uses_membarrier(void)
{
    pthread_once(&graph_once, graph_lock_init);
    return use_membarrier;
}

bool graph_is_write_locked(void)
{
    return atomic_read(&has_writer) != 0;
}

void assert_graph_writable(void)
{
    assert(in_main_thread());
    assert(atomic_read(&has_writer));
}

void assert_graph_readable(void)
{
#ifndef NDEBUG
    /* The sum is expensive: only checked in debug builds. */
    assert(in_main_thread() || graph_reader_count() > 0);
#endif
}
