/*
 * iothread.c - threads that run their own event loop.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/atomic.h"
#include "blockd/iothread.h"
#include "blockd/user-object.h"
#include "blockd/list.h"
#include "blockd/main-loop.h"
#include "blockd/thread.h"

struct IOThread {
    char *id;
    AioContext *ctx;
    BdThread thread;
    BdEvent started;
    bool stopping;           /* only touched in the iothread itself */
    int thread_id;           /* kernel tid, written before 'started' */
    IOThreadParams params;   /* main thread */
    ListNode node;           /* in iothreads, main thread */
};

static ListNode iothreads = LIST_INIT_STATIC(iothreads);

void iothread_params_init(IOThreadParams *p)
{
    p->poll_max_ns = IOTHREAD_DEFAULT_POLL_MAX_NS;
    p->poll_grow = 0;
    p->poll_shrink = 0;
    p->aio_max_batch = 0;
    p->thread_pool_min = 0;
    p->thread_pool_max = AIO_THREAD_POOL_DEFAULT_MAX;
}

bool iothread_check_params(const IOThreadParams *params, Error **errp)
{
    const struct { const char *name; int64_t value; } checks[] = {
        { "poll-max-ns", params->poll_max_ns },
        { "poll-grow", params->poll_grow },
        { "poll-shrink", params->poll_shrink },
        { "aio-max-batch", params->aio_max_batch },
        { "thread-pool-min", params->thread_pool_min },
        { "thread-pool-max", params->thread_pool_max },
    };

    for (unsigned i = 0; i < ARRAY_SIZE(checks); i++) {
        if (checks[i].value < 0) {
            error_setg(errp, "%s value must be in range [0, %lld]",
                       checks[i].name, (long long)INT64_MAX);
            return false;
        }
    }
    if (params->thread_pool_max < 1 || params->thread_pool_max > INT32_MAX ||
        params->thread_pool_min > params->thread_pool_max) {
        error_setg(errp, "bad thread-pool-min/thread-pool-max values");
        return false;
    }
    return true;
}

static void *iothread_run(void *opaque)
{
    IOThread *iot = opaque;

    aio_context_set_home(iot->ctx);
    iot->thread_id = bd_thread_get_tid();
    bd_event_set(&iot->started);

    while (!iot->stopping) {
        aio_poll(iot->ctx, true);
    }
    /* Run whatever was scheduled before the stop request. */
    while (aio_poll(iot->ctx, false)) {
    }
    return NULL;
}

static void apply_params(IOThread *iot)
{
    aio_context_set_poll_params(iot->ctx, iot->params.poll_max_ns,
                                iot->params.poll_grow, iot->params.poll_shrink);
    aio_context_set_max_batch(iot->ctx, iot->params.aio_max_batch);
    aio_context_set_thread_pool_params(iot->ctx, (int)iot->params.thread_pool_min,
                                       (int)iot->params.thread_pool_max);
}

IOThread *iothread_create(const char *id, const IOThreadParams *params,
                          Error **errp)
{
    IOThread *iot;

    GLOBAL_STATE_CODE();
    if (iothread_find(id) || user_object_id_taken(id)) {
        error_setg(errp, "attempt to add duplicate property '%s' to object (type 'container')", id);
        return NULL;
    }
    if (params && !iothread_check_params(params, errp)) {
        return NULL;
    }
    iot = calloc(1, sizeof(*iot));
    if (!iot) {
        abort();
    }
    iot->ctx = aio_context_new(id, errp);
    if (!iot->ctx) {
        free(iot);
        return NULL;
    }
    iot->id = strdup(id);
    if (params) {
        iot->params = *params;
    } else {
        iothread_params_init(&iot->params);
    }
    apply_params(iot);
    bd_event_init(&iot->started);
    bd_thread_create(&iot->thread, id, iothread_run, iot);
    bd_event_wait(&iot->started);
    list_add_tail(&iothreads, &iot->node);
    return iot;
}

void iothread_set_params(IOThread *iot, const IOThreadParams *params)
{
    GLOBAL_STATE_CODE();
    iot->params = *params;
    apply_params(iot);
}

static void iothread_stop_bh(void *opaque)
{
    IOThread *iot = opaque;
    iot->stopping = true;
}

void iothread_destroy(IOThread *iot)
{
    GLOBAL_STATE_CODE();
    aio_bh_schedule_oneshot(iot->ctx, iothread_stop_bh, iot);
    bd_thread_join(&iot->thread);
    list_del(&iot->node);
    aio_context_free(iot->ctx);
    bd_event_destroy(&iot->started);
    free(iot->id);
    free(iot);
}

IOThread *iothread_find(const char *id)
{
    GLOBAL_STATE_CODE();
    list_for_each(n, &iothreads) {
        IOThread *iot = list_entry(n, IOThread, node);
        if (strcmp(iot->id, id) == 0) {
            return iot;
        }
    }
    return NULL;
}

void iothread_foreach(void (*fn)(IOThread *iot, void *opaque), void *opaque)
{
    GLOBAL_STATE_CODE();
    list_for_each_safe(n, &iothreads) {
        fn(list_entry(n, IOThread, node), opaque);
    }
}

void iothread_destroy_all(void)
{
    GLOBAL_STATE_CODE();
    while (!list_empty(&iothreads)) {
        iothread_destroy(list_entry(iothreads.prev, IOThread, node));
    }
}

AioContext *iothread_get_aio_context(IOThread *iot)
{
    return iot->ctx;
}

const char *iothread_get_id(IOThread *iot)
{
    return iot->id;
}

int iothread_get_thread_id(IOThread *iot)
{
    return iot->thread_id;
}

void iothread_get_params(IOThread *iot, IOThreadParams *params)
{
    *params = iot->params;
}
