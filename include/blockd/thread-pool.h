/*
 * thread-pool.h - worker threads for blocking system calls, one pool per
 * context (limits: aio_context_set_thread_pool_params()).
 *
 * Half: I/O (callable from any thread that runs an event loop).
 *
 * Work that would block an event loop (open, fsync without native AIO,
 * fallocate, ...) runs on a worker thread.  Workers never touch block
 * layer objects; the result is delivered back to the submitting thread's
 * context.  Workers are started on demand up to a maximum and exit after
 * being idle for a while.
 */
#ifndef BLOCKD_THREAD_POOL_H
#define BLOCKD_THREAD_POOL_H

#include "blockd/aio.h"

/* Runs on a worker thread; its return value goes to the completion. */
typedef int ThreadPoolFunc(void *opaque);
/* Runs in the submitting context's home thread with @fn's return value. */
typedef void ThreadPoolCompletion(void *opaque, int ret);

/*
 * Run @fn(@arg) on a worker, then @cb(@cb_opaque, ret) in the calling
 * thread's context.  I/O.
 */
void thread_pool_submit_aio(ThreadPoolFunc *fn, void *arg,
                            ThreadPoolCompletion *cb, void *cb_opaque);

/* Run @fn(@arg) on a worker and yield until it returns; returns its value.
 * Coroutine only. */
int coroutine_fn thread_pool_submit_co(ThreadPoolFunc *fn, void *arg);

/* Number of workers alive in @ctx's pool (tests).  @ctx's home thread. */
int thread_pool_num_workers(AioContext *ctx);

#endif /* BLOCKD_THREAD_POOL_H */
