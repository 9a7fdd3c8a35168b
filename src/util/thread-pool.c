/*
 * thread-pool.c - worker threads for blocking system calls.
 *
 * One process-wide set of workers serves every context: a request records
 * the context it came from, and its completion is delivered there by a
 * one-shot bottom half.  Workers start on demand up to max_workers and exit
 * after WORKER_IDLE_NS without work.
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

static BdMutex pool_lock;
static BdCond pool_cond;
static ListNode pool_queue TSA_GUARDED_BY(pool_lock);
static int pool_queued TSA_GUARDED_BY(pool_lock);
static int pool_workers TSA_GUARDED_BY(pool_lock);
static int pool_idle TSA_GUARDED_BY(pool_lock);
static int pool_max_workers TSA_GUARDED_BY(pool_lock);

static pthread_once_t pool_once = PTHREAD_ONCE_INIT;

static void pool_init(void)
{
    bd_mutex_init(&pool_lock);
    bd_cond_init(&pool_cond);
    bd_mutex_lock(&pool_lock);
    list_init(&pool_queue);
    pool_max_workers = 64;
    bd_mutex_unlock(&pool_lock);
}

static void request_complete_bh(void *opaque)
{
    PoolRequest *req = opaque;

    req->cb(req->cb_opaque, req->ret);
    free(req);
}

/* Take the next request, or NULL when idle for too long (the worker exits). */
static PoolRequest *worker_next(void)
{
    PoolRequest *req = NULL;

    bd_mutex_lock(&pool_lock);
    while (list_empty(&pool_queue)) {
        bool signalled;

        pool_idle++;
        signalled = bd_cond_timedwait_ns(&pool_cond, &pool_lock, WORKER_IDLE_NS);
        pool_idle--;
        if (!signalled && list_empty(&pool_queue)) {
            pool_workers--;
            bd_mutex_unlock(&pool_lock);
            return NULL;
        }
    }
    req = list_entry(pool_queue.next, PoolRequest, node);
    list_del(&req->node);
    pool_queued--;
    bd_mutex_unlock(&pool_lock);
    return req;
}

static void *worker_thread(void *opaque)
{
    PoolRequest *req;

    (void)opaque;
    while ((req = worker_next()) != NULL) {
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

void thread_pool_submit_aio(ThreadPoolFunc *fn, void *arg,
                            ThreadPoolCompletion *cb, void *cb_opaque)
{
    PoolRequest *req = calloc(1, sizeof(*req));
    bool spawn = false;

    IO_CODE();
    if (!req) {
        abort();
    }
    pthread_once(&pool_once, pool_init);
    req->fn = fn;
    req->arg = arg;
    req->cb = cb;
    req->cb_opaque = cb_opaque;
    req->ctx = current_aio_context();

    bd_mutex_lock(&pool_lock);
    list_add_tail(&pool_queue, &req->node);
    pool_queued++;
    if (pool_idle >= pool_queued) {
        bd_cond_signal(&pool_cond);
    } else if (pool_workers < pool_max_workers) {
        pool_workers++;
        spawn = true;
    }
    bd_mutex_unlock(&pool_lock);

    if (spawn) {
        BdThread t;
        bd_thread_create(&t, "worker", worker_thread, NULL);
        pthread_detach(t.thread);
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

void thread_pool_set_max_workers(int max)
{
    pthread_once(&pool_once, pool_init);
    bd_mutex_lock(&pool_lock);
    pool_max_workers = max > 0 ? max : 1;
    bd_mutex_unlock(&pool_lock);
}

int thread_pool_num_workers(void)
{
    int n;

    pthread_once(&pool_once, pool_init);
    bd_mutex_lock(&pool_lock);
    n = pool_workers;
    bd_mutex_unlock(&pool_lock);
    return n;
}
