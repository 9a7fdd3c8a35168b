/*
 * aio-wait.h - waiting in the main thread for work done by other threads.
 *
 * AIO_WAIT_WHILE(ctx, cond) runs event-loop iterations until @cond is
 * false.  If the caller is @ctx's home thread it polls @ctx; otherwise the
 * caller must be the main thread and it polls the main context, relying on
 * @ctx's own thread to make progress and to call aio_wait_kick() when it
 * changes anything @cond reads.  It evaluates the macro's value to whether
 * it waited at all.
 *
 * blockd has no AioContext lock, so no lock is dropped or re-taken while
 * waiting: AIO_WAIT_WHILE and AIO_WAIT_WHILE_UNLOCKED are the same.  The
 * caller must not hold a lock that the awaited work needs.
 *
 * Never call these from a coroutine, and never wait in one iothread for
 * another iothread (nobody would kick the right loop).
 */
#ifndef BLOCKD_AIO_WAIT_H
#define BLOCKD_AIO_WAIT_H

#include <assert.h>
#include "blockd/aio.h"
#include "blockd/atomic.h"
#include "blockd/coroutine.h"
#include "blockd/main-loop.h"

/* Number of threads inside AIO_WAIT_WHILE; kicks are free when it is 0. */
extern unsigned aio_wait_num_waiters;

#define AIO_WAIT_WHILE_INTERNAL(ctx, cond) ({                               \
    bool waited_ = false;                                                   \
    AioContext *wait_ctx_ = (ctx);                                          \
    assert(!in_coroutine());                                                \
    atomic_fetch_add(&aio_wait_num_waiters, 1);  /* full barrier */         \
    if (wait_ctx_ && aio_context_in_home_thread(wait_ctx_)) {               \
        while ((cond)) {                                                    \
            aio_poll(wait_ctx_, true);                                      \
            waited_ = true;                                                 \
        }                                                                   \
    } else {                                                                \
        assert(in_main_thread());                                           \
        while ((cond)) {                                                    \
            aio_poll(main_aio_context(), true);                             \
            waited_ = true;                                                 \
        }                                                                   \
    }                                                                       \
    atomic_fetch_sub(&aio_wait_num_waiters, 1);                             \
    waited_; })

#define AIO_WAIT_WHILE(ctx, cond)          AIO_WAIT_WHILE_INTERNAL(ctx, cond)
#define AIO_WAIT_WHILE_UNLOCKED(ctx, cond) AIO_WAIT_WHILE_INTERNAL(ctx, cond)

/*
 * Tell waiters that something they may be testing has changed: wakes the
 * main thread if anyone is inside AIO_WAIT_WHILE.  Any thread.
 */
void aio_wait_kick(void);

/* Create / delete the kick BH (main_loop_init / main_loop_cleanup). */
void aio_wait_init(void);
void aio_wait_cleanup(void);

/*
 * Run @cb(@opaque) in @ctx's home thread and wait until it has returned.
 * Main thread (global state), not in a coroutine.
 */
void aio_wait_bh_oneshot(AioContext *ctx, BHFunc *cb, void *opaque);

#endif /* BLOCKD_AIO_WAIT_H */
