/*
 * coroutine-sched.c - running coroutines in the context they belong to.
 *
 * A coroutine is only ever resumed in its context's home thread.  Waking it
 * from elsewhere pushes it on the context's lock-free list of scheduled
 * coroutines and schedules the context's co_schedule_bh, which enters them
 * in FIFO order.  The "scheduled" marker catches double wake-ups.
 */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>

#include "aio-internal.h"
#include "coroutine-internal.h"
#include "blockd/atomic.h"
#include "blockd/defer-call.h"
#include "blockd/log.h"

void aio_co_schedule_bh_cb(void *opaque)
{
    AioContext *ctx = opaque;
    Coroutine *co = atomic_xchg(&ctx->scheduled_coroutines, NULL);
    Coroutine *fifo = NULL;

    /* The list was pushed LIFO: reverse it. */
    while (co) {
        Coroutine *next = co->sched_next;
        co->sched_next = fifo;
        fifo = co;
        co = next;
    }
    /* Requests these coroutines submit together go to the kernel together. */
    defer_call_begin();
    while (fifo) {
        co = fifo;
        fifo = co->sched_next;
        co->sched_next = NULL;
        atomic_set_mb(&co->scheduled, NULL);
        aio_coroutine_enter(ctx, co);
    }
    defer_call_end();
}

static void co_schedule_named(AioContext *ctx, Coroutine *co, const char *who)
{
    const char *old = atomic_cmpxchg(&co->scheduled, NULL, who);
    Coroutine *head;

    if (old) {
        fprintf(stderr, "%s: %s: co-routine was already scheduled in '%s'\n",
                log_get_program_name(), who, old);
        abort();
    }
    head = atomic_read(&ctx->scheduled_coroutines);
    do {
        co->sched_next = head;
    } while (!__atomic_compare_exchange_n(&ctx->scheduled_coroutines, &head, co, true,
                                          __ATOMIC_SEQ_CST, __ATOMIC_RELAXED));
    bh_schedule(ctx->co_schedule_bh);
}

void aio_co_schedule(AioContext *ctx, Coroutine *co)
{
    co_schedule_named(ctx, co, __func__);
}

void aio_co_enter(AioContext *ctx, Coroutine *co)
{
    if (ctx != current_aio_context()) {
        co_schedule_named(ctx, co, "aio_co_enter");
        return;
    }
    if (in_coroutine()) {
        /* Run it when the current coroutine yields: no nesting. */
        coroutine_wakeup_queue_add(coroutine_self(), co);
        return;
    }
    aio_coroutine_enter(ctx, co);
}

void aio_co_wake(Coroutine *co)
{
    /* Acquire: pairs with the release store in aio_coroutine_enter(). */
    AioContext *ctx = atomic_load_acquire(&co->ctx);

    if (!ctx) {
        fprintf(stderr, "%s: waking a co-routine that never ran\n", log_get_program_name());
        abort();
    }
    aio_co_enter(ctx, co);
}

typedef struct RescheduleData {
    AioContext *new_ctx;
    Coroutine *co;
} RescheduleData;

static void reschedule_bh(void *opaque)
{
    RescheduleData *data = opaque;
    aio_co_schedule(data->new_ctx, data->co);
}

void aio_co_reschedule_self(AioContext *new_ctx)
{
    AioContext *old_ctx = current_aio_context();
    RescheduleData data = { .new_ctx = new_ctx, .co = coroutine_self() };

    assert(data.co);
    if (old_ctx == new_ctx) {
        return;
    }
    /* Scheduling from the old context's BH guarantees we have yielded first. */
    aio_bh_schedule_oneshot(old_ctx, reschedule_bh, &data);
    coroutine_yield();
    assert(current_aio_context() == new_ctx);
}
