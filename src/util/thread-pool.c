/*
 * thread-pool.c - worker threads for blocking system calls.
 *
 * Each context has its own pool (created on its first request, freed with
 * the context), so an iothread's thread-pool-min/-max bound the workers
 * that serve it alone.  A request records the context it came from; its
 * completion is delivered there by a one-shot bottom half.  Workers start
 * on demand up to the maximum, and exit after WORKER_IDLE_NS without work
 * unless the pool would drop below its minimum.
 */
#include <assert.h>
#include <stdlib.h>

#include "blockd/atomic.h"
#include "blockd/coroutine.h"
#include "blockd/list.h"
#include "blockd/main-loop.h"
#include "blockd/thread-pool.h"
#include "blockd/thread.h"

#define WORKER_IDLE_NS (10LL * 1000 * 1000 * 1000)

typedef struct PoolRequest {
    ThreadPoolFunc *fn;
    void *arg;
    ThreadPoolCompletion *cb;
    void *cb_opaque;
    AioContext *ctx;
    int ret;
    ListNode node;
} PoolRequest;

typedef struct ThreadPool {
    AioContext *ctx;
    BdMutex lock;
    BdCond cond;                       /* work queued, or the pool is dying */
    BdCond exited;                     /* a worker left */
    ListNode queue TSA_FIELD_GUARDED_BY(lock);
    int queued TSA_FIELD_GUARDED_BY(lock);
    int workers TSA_FIELD_GUARDED_BY(lock);
    int idle TSA_FIELD_GUARDED_BY(lock);
    bool dying TSA_FIELD_GUARDED_BY(lock);
} ThreadPool;

static void request_complete_bh(void *opaque)
{
    PoolRequest *req = opaque;

    req->cb(req->cb_opaque, req->ret);
    free(req);
}

/* Take the next request, or NULL when the worker should exit. */
static PoolRequest *worker_next(ThreadPool *pool)
{
    PoolRequest *req = NULL;
    int min, max;

    bd_mutex_lock(&pool->lock);
    while (list_empty(&pool->queue)) {
        bool signalled;

        aio_context_get_thread_pool_params(pool->ctx, &min, &max);
        if (pool->dying || pool->workers > max) {
            goto exit;
        }
        pool->idle++;
        signalled = bd_cond_timedwait_ns(&pool->cond, &pool->lock, WORKER_IDLE_NS);
        pool->idle--;
        if (!signalled && list_empty(&pool->queue) && pool->workers > min) {
            goto exit;
        }
    }
    req = list_entry(pool->queue.next, PoolRequest, node);
    list_del(&req->node);
    pool->queued--;
    bd_mutex_unlock(&pool->lock);
    return req;

exit:
    pool->workers--;
    bd_cond_broadcast(&pool->exited);
    bd_mutex_unlock(&pool->lock);
    return NULL;
}

static void *worker_thread(void *opaque)
{
    ThreadPool *pool = opaque;
    PoolRequest *req;

    while ((req = worker_next(pool)) != NULL) {
        AioContext *ctx = req->ctx;

        req->ret = req->fn(req->arg);
        /* Once the BH is visible it may run, and the context may be freed
         * before aio_notify() inside the scheduling returns. */
        aio_context_foreign_begin(ctx);
        aio_bh_schedule_oneshot(ctx, request_complete_bh, req);
        aio_context_foreign_end(ctx);
    }
    return NULL;
}

static void spawn_worker(ThreadPool *pool)
{
    BdThread t;

    bd_thread_create(&t, "worker", worker_thread, pool);
    pthread_detach(t.thread);
}

/* The context is going: its workers finish what is queued and leave. */
static void pool_free(void *opaque)
{
    ThreadPool *pool = opaque;

    bd_mutex_lock(&pool->lock);
    pool->dying = true;
    bd_cond_broadcast(&pool->cond);
    while (pool->workers > 0) {
        bd_cond_wait(&pool->exited, &pool->lock);
    }
    bd_mutex_unlock(&pool->lock);
    bd_cond_destroy(&pool->cond);
    bd_cond_destroy(&pool->exited);
    bd_mutex_destroy(&pool->lock);
    free(pool);
}

static ThreadPool *pool_get(AioContext *ctx)
{
    ThreadPool *pool = aio_context_get_data(ctx, AIO_DATA_THREAD_POOL);

    if (!pool) {
        pool = calloc(1, sizeof(*pool));
        if (!pool) {
            abort();
        }
        pool->ctx = ctx;
        bd_mutex_init(&pool->lock);
        bd_cond_init(&pool->cond);
        bd_cond_init(&pool->exited);
        bd_mutex_lock(&pool->lock);
        list_init(&pool->queue);
        bd_mutex_unlock(&pool->lock);
        aio_context_set_data(ctx, AIO_DATA_THREAD_POOL, pool, pool_free);
    }
    return pool;
}

void thread_pool_submit_aio(ThreadPoolFunc *fn, void *arg,
                            ThreadPoolCompletion *cb, void *cb_opaque)
{
    PoolRequest *req = calloc(1, sizeof(*req));
    ThreadPool *pool;
    int spawn = 0, min, max;

    IO_CODE();
    if (!req) {
        abort();
    }
    req->fn = fn;
    req->arg = arg;
    req->cb = cb;
    req->cb_opaque = cb_opaque;
    req->ctx = current_aio_context();
    pool = pool_get(req->ctx);
    aio_context_get_thread_pool_params(req->ctx, &min, &max);

    bd_mutex_lock(&pool->lock);
    list_add_tail(&pool->queue, &req->node);
    pool->queued++;
    if (pool->idle >= pool->queued) {
        bd_cond_signal(&pool->cond);
    } else if (pool->workers < (max > 0 ? max : 1)) {
        pool->workers++;
        spawn = 1;
    }
    /* Bring the pool up to its minimum (thread-pool-min). */
    while (pool->workers < min && pool->workers < max) {
        pool->workers++;
        spawn++;
    }
    bd_mutex_unlock(&pool->lock);

    while (spawn-- > 0) {
        spawn_worker(pool);
    }
}

typedef struct PoolCoData {
    Coroutine *co;
    int ret;
} PoolCoData;

static void pool_co_complete(void *opaque, int ret)
{
    PoolCoData *data = opaque;

    data->ret = ret;
    aio_co_wake(data->co);
}

int thread_pool_submit_co(ThreadPoolFunc *fn, void *arg)
{
    PoolCoData data = { .co = coroutine_self() };

    assert(data.co);
    thread_pool_submit_aio(fn, arg, pool_co_complete, &data);
    coroutine_yield();
    return data.ret;
}

int thread_pool_num_workers(AioContext *ctx)
{
    ThreadPool *pool = aio_context_get_data(ctx, AIO_DATA_THREAD_POOL);
    int n;

    if (!pool) {
        return 0;
    }
    bd_mutex_lock(&pool->lock);
    n = pool->workers;
    bd_mutex_unlock(&pool->lock);
    return n;
}
