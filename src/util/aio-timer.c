/*
 * aio-timer.c - timers on the monotonic clock, per context.
 *
 * Each context keeps its armed timers in a list sorted by expiry, under
 * timer_lock so that any thread may arm or disarm.  Callbacks run in the
 * home thread from aio_poll(), without the lock.
 */
#include <stdlib.h>

#include "aio-internal.h"
#include "blockd/atomic.h"

AioTimer *aio_timer_new(AioContext *ctx, TimerCb *cb, void *opaque)
{
    AioTimer *t = calloc(1, sizeof(*t));
    if (!t) {
        abort();
    }
    t->ctx = ctx;
    t->cb = cb;
    t->opaque = opaque;
    bd_mutex_lock(&ctx->timer_lock);
    t->expire_ns = -1;
    list_init(&t->node);
    bd_mutex_unlock(&ctx->timer_lock);
    return t;
}

static void timer_unlink(AioContext *ctx, AioTimer *t) TSA_REQUIRES(ctx->timer_lock)
{
    (void)ctx;   /* only names the lock for the analysis */
    if (t->expire_ns >= 0) {
        list_del(&t->node);
        t->expire_ns = -1;
    }
}

void timer_mod(AioTimer *t, int64_t expire_ns)
{
    AioContext *ctx = t->ctx;
    ListNode *pos;
    bool first;

    if (expire_ns < 0) {
        expire_ns = 0;
    }
    bd_mutex_lock(&ctx->timer_lock);
    timer_unlink(ctx, t);
    t->expire_ns = expire_ns;
    /* Insert after every timer that expires no later (FIFO among equals). */
    for (pos = ctx->timers.next; pos != &ctx->timers; pos = pos->next) {
        if (list_entry(pos, AioTimer, node)->expire_ns > expire_ns) {
            break;
        }
    }
    list_insert_before(pos, &t->node);
    first = ctx->timers.next == &t->node;
    bd_mutex_unlock(&ctx->timer_lock);

    /* A new earliest deadline must shorten a sleeping poll. */
    if (first && !aio_context_in_home_thread(ctx)) {
        aio_notify(ctx);
    }
}

void timer_del(AioTimer *t)
{
    AioContext *ctx = t->ctx;

    bd_mutex_lock(&ctx->timer_lock);
    timer_unlink(ctx, t);
    bd_mutex_unlock(&ctx->timer_lock);
}

bool timer_pending(AioTimer *t)
{
    AioContext *ctx = t->ctx;
    bool pending;

    bd_mutex_lock(&ctx->timer_lock);
    pending = t->expire_ns >= 0;
    bd_mutex_unlock(&ctx->timer_lock);
    return pending;
}

void timer_free(AioTimer *t)
{
    if (t) {
        timer_del(t);
        free(t);
    }
}

int64_t aio_timers_deadline_ns(AioContext *ctx)
{
    int64_t deadline = -1;

    bd_mutex_lock(&ctx->timer_lock);
    if (!list_empty(&ctx->timers)) {
        deadline = list_entry(ctx->timers.next, AioTimer, node)->expire_ns - clock_now_ns();
        if (deadline < 0) {
            deadline = 0;
        }
    }
    bd_mutex_unlock(&ctx->timer_lock);
    return deadline;
}

bool aio_timers_run(AioContext *ctx)
{
    bool progress = false;
    int64_t now = clock_now_ns();

    for (;;) {
        TimerCb *cb;
        void *opaque;
        AioTimer *t;

        bd_mutex_lock(&ctx->timer_lock);
        t = list_first(&ctx->timers, AioTimer, node);
        if (!t || t->expire_ns > now) {
            bd_mutex_unlock(&ctx->timer_lock);
            break;
        }
        timer_unlink(ctx, t);
        cb = t->cb;
        opaque = t->opaque;
        bd_mutex_unlock(&ctx->timer_lock);

        /* The callback may re-arm or free its timer. */
        cb(opaque);
        progress = true;
    }
    return progress;
}
