/*
 * aio.h - the per-thread event loop (AioContext).
 *
 * One AioContext belongs to one thread, its *home thread*: the main thread
 * owns the main context, each iothread owns its own.  Only the home thread
 * ever runs aio_poll() on a context (asserted), so every callback
 * registered here -- fd handlers, bottom halves, timers, scheduled
 * coroutines -- runs in the home thread.
 *
 * Other threads interact with a context only through the entry points
 * marked "any thread" below: scheduling a bottom half, arming a timer,
 * scheduling a coroutine, aio_notify().  Each of these wakes the home
 * thread if it is blocked in aio_poll().
 *
 * Half: common (these are the primitives both halves are built on).
 */
#ifndef BLOCKD_AIO_H
#define BLOCKD_AIO_H

#include <stdbool.h>
#include <stdint.h>
#include "blockd/compiler.h"
#include "blockd/error.h"

typedef struct AioContext AioContext;
typedef struct BH BH;
typedef struct AioTimer AioTimer;

typedef void IOHandler(void *opaque);
/* Busy-poll callback: return true if the fd has an event ready. */
typedef bool AioPollFn(void *opaque);
typedef void BHFunc(void *opaque);
typedef void TimerCb(void *opaque);

/* ---- Contexts ---------------------------------------------------------- */

/*
 * Create a context.  It has no home thread until aio_context_set_home()
 * is called in the thread that will poll it (iothread_create() does this).
 * @name is kept for logs and messages.  Any thread.
 */
AioContext *aio_context_new(const char *name, Error **errp);

/*
 * Destroy a context.  Must be called in its home thread, or after that
 * thread has exited.  A bottom half still scheduled (not deleted) is a
 * fatal error: it would be lost.
 */
void aio_context_free(AioContext *ctx);

/*
 * Make @ctx the current context of the calling thread and the calling
 * thread its home.  Called once, by the thread that will poll it.
 */
void aio_context_set_home(AioContext *ctx);

/* The context of the calling thread, or NULL (worker threads).  Any thread. */
AioContext *current_aio_context(void);

/* Is the calling thread @ctx's home thread?  Any thread. */
bool aio_context_in_home_thread(AioContext *ctx);

const char *aio_context_name(AioContext *ctx);

/*
 * Adaptive polling knobs (the iothread object's poll-max-ns, poll-grow,
 * poll-shrink).  poll_max_ns 0 disables busy-polling; grow 0 means "double";
 * shrink 0 means "drop to zero".  Any thread.
 */
void aio_context_set_poll_params(AioContext *ctx, int64_t poll_max_ns,
                                 int64_t poll_grow, int64_t poll_shrink);
/*
 * The most requests an async engine of this context submits in one system
 * call before it submits at once (the iothread's aio-max-batch); 0 means
 * the engine's default.  Any thread.
 */
void aio_context_set_max_batch(AioContext *ctx, int64_t max_batch);
int64_t aio_context_get_max_batch(AioContext *ctx);

/*
 * The limits of @ctx's thread pool (thread-pool-min/-max): at least @min
 * workers stay alive once started, at most @max run.  Defaults 0 and 64.
 * Any thread; the pool applies them from its next request on.
 */
#define AIO_THREAD_POOL_DEFAULT_MAX 64
void aio_context_set_thread_pool_params(AioContext *ctx, int min, int max);
void aio_context_get_thread_pool_params(AioContext *ctx, int *min, int *max);

/* The current adaptive poll duration in ns (for tests and stats). */
int64_t aio_context_poll_ns(AioContext *ctx);

/*
 * Per-context state of subsystems (the io_uring and Linux AIO engines keep
 * their rings here), created lazily by the home thread and destroyed with
 * the context: aio_context_free() calls @free_fn(@data) first, in the home
 * thread or after it has exited, before the context's handlers are torn
 * down.  Home thread only.
 */
typedef enum AioContextDataKey {
    AIO_DATA_IO_URING,
    AIO_DATA_LINUX_AIO,
    AIO_DATA_THREAD_POOL,
    AIO_DATA__MAX,
} AioContextDataKey;

typedef void AioContextDataFree(void *data);

void *aio_context_get_data(AioContext *ctx, AioContextDataKey key);
void aio_context_set_data(AioContext *ctx, AioContextDataKey key, void *data,
                          AioContextDataFree *free_fn);

/*
 * A thread that hands @ctx work whose completion may lead to @ctx being
 * destroyed (a worker delivering its last result) brackets the hand-over
 * with these: aio_context_free() waits until no such thread is still
 * inside aio_bh_schedule*() / aio_notify() on it.  Any thread.
 */
void aio_context_foreign_begin(AioContext *ctx);
void aio_context_foreign_end(AioContext *ctx);

/* ---- Polling and notification ------------------------------------------ */

/*
 * Run one iteration of @ctx's loop in its home thread: run scheduled
 * bottom halves, ready fd handlers and expired timers.  If @blocking and
 * nothing is ready, sleep (after busy-polling for up to the adaptive poll
 * time) until something is.  Returns true if any callback ran (progress).
 * Idle bottom halves and the context's own notifier do not count.
 * Home thread only; may be nested (called from a callback it runs).
 */
bool aio_poll(AioContext *ctx, bool blocking);

/*
 * Wake @ctx's home thread if it is blocked in aio_poll() (or make its next
 * blocking aio_poll() return without sleeping).  Cheap when nobody sleeps.
 * Any thread.
 */
void aio_notify(AioContext *ctx);

/* ---- fd handlers ------------------------------------------------------- */

/*
 * Register, change or (all callbacks NULL) remove the handlers of @fd.
 * @io_read runs when the fd is readable, @io_write when writable, in the
 * home thread.  @io_poll, if given, is called while busy-polling; when it
 * returns true the loop stops polling and does not sleep, and @io_read runs
 * once epoll reports the fd readable -- so io_poll must only report events
 * that also make the fd readable (an eventfd the kernel signals, say).
 * Any thread; but a handler removed from
 * another thread may still be running at the moment of removal -- remove
 * from the home thread when that matters.
 */
void aio_set_fd_handler(AioContext *ctx, int fd, IOHandler *io_read,
                        IOHandler *io_write, AioPollFn *io_poll, void *opaque);

/* ---- Bottom halves ----------------------------------------------------- */

/*
 * A bottom half is a callback bound to @ctx that runs in the home thread
 * from aio_poll(), once per scheduling.  BHs scheduled before another run
 * before it (FIFO), also across nested aio_poll() calls.
 */
BH *aio_bh_new(AioContext *ctx, BHFunc *cb, void *opaque);
/* Schedule @bh; a no-op if it is already scheduled.  Any thread. */
void bh_schedule(BH *bh);
/* Like bh_schedule() but an idle BH does not count as progress and does
 * not make aio_poll() return early; it runs within 10 ms.  Any thread. */
void bh_schedule_idle(BH *bh);
/* Unschedule @bh if it has not run yet.  Any thread. */
void bh_cancel(BH *bh);
/* Cancel and free @bh (the memory is released by the home thread's next
 * poll).  Any thread; @bh must not be used afterwards. */
void bh_delete(BH *bh);
/* Run @cb(@opaque) once in @ctx's home thread.  Any thread. */
void aio_bh_schedule_oneshot(AioContext *ctx, BHFunc *cb, void *opaque);

/* ---- Timers ------------------------------------------------------------ */

/* Expiry times are on the monotonic clock, in ns: see clock_now_ns(). */
AioTimer *aio_timer_new(AioContext *ctx, TimerCb *cb, void *opaque);
/* Arm (or re-arm) @t to fire at absolute time @expire_ns.  Any thread. */
void timer_mod(AioTimer *t, int64_t expire_ns);
/* Disarm @t.  Any thread; a callback already running is not waited for. */
void timer_del(AioTimer *t);
bool timer_pending(AioTimer *t);
/* Disarm and free.  Home thread (or any thread if the timer never runs). */
void timer_free(AioTimer *t);

/* ---- Coroutines and contexts (see coroutine.h for Coroutine) ------------ */

typedef struct Coroutine Coroutine;

/*
 * Enter @co in @ctx's home thread, in FIFO order with other scheduled
 * coroutines.  Scheduling a coroutine that is already scheduled aborts
 * with "already scheduled in '<fn>'".  Any thread.
 */
void aio_co_schedule(AioContext *ctx, Coroutine *co);

/*
 * Wake a yielded coroutine in the context it belongs to (where it last
 * ran): if that is the caller's context it is entered now (or, if the
 * caller is a coroutine, right after the caller yields); otherwise it is
 * scheduled there.  Call exactly once per yield.  Any thread.
 */
void aio_co_wake(Coroutine *co);

/* Enter @co in @ctx: aio_co_schedule() if @ctx is not the caller's
 * context, else as aio_co_wake().  Any thread. */
void aio_co_enter(AioContext *ctx, Coroutine *co);

/*
 * Move the calling coroutine to @new_ctx: it yields here and continues in
 * @new_ctx's home thread, never running in two threads at once.
 * Coroutine only.
 */
void coroutine_fn aio_co_reschedule_self(AioContext *new_ctx);

#endif /* BLOCKD_AIO_H */
