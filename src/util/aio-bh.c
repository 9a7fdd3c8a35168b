/*
 * aio-bh.c - bottom halves.
 *
 * Scheduling pushes the BH onto a lock-free stack (any thread).  The home
 * thread detaches the whole stack at once, reverses it into FIFO order and
 * appends it to its run queue; nested aio_poll() calls keep draining the
 * same run queue, so a BH never overtakes one scheduled before it.
 */
#include <stdio.h>
#include <stdlib.h>

#include "aio-internal.h"
#include "blockd/atomic.h"
#include "blockd/log.h"

BH *aio_bh_new(AioContext *ctx, BHFunc *cb, void *opaque)
{
    BH *bh = calloc(1, sizeof(*bh));
    if (!bh) {
        abort();
    }
    bh->ctx = ctx;
    bh->cb = cb;
    bh->opaque = opaque;
    list_init(&bh->run_node);
    return bh;
}

/* Set @new_flags; push @bh on its context's stack unless already queued. */
static void bh_enqueue(BH *bh, unsigned new_flags)
{
    AioContext *ctx = bh->ctx;
    unsigned old = atomic_fetch_or(&bh->flags, new_flags | BH_PENDING);

    if (!(old & BH_PENDING)) {
        BH *head = atomic_read(&ctx->bh_stack);
        do {
            bh->next = head;
        } while (!__atomic_compare_exchange_n(&ctx->bh_stack, &head, bh, true,
                                              __ATOMIC_SEQ_CST, __ATOMIC_RELAXED));
        aio_notify(ctx);
    }
    /* Otherwise whoever queued it notified, and the pending BH will run. */
}

void bh_schedule(BH *bh)
{
    /* A previous bh_schedule_idle() is upgraded to a normal one. */
    unsigned old = atomic_fetch_and(&bh->flags, ~(unsigned)BH_IDLE);

    bh_enqueue(bh, BH_SCHEDULED);
    if (old & BH_IDLE) {
        aio_notify(bh->ctx);
    }
}

void bh_schedule_idle(BH *bh)
{
    unsigned flags = atomic_read(&bh->flags);
    if (flags & BH_SCHEDULED) {
        return;   /* already scheduled, idle or not: it runs once */
    }
    bh_enqueue(bh, BH_SCHEDULED | BH_IDLE);
}

void bh_cancel(BH *bh)
{
    atomic_fetch_and(&bh->flags, ~(unsigned)(BH_SCHEDULED | BH_IDLE));
}

void bh_delete(BH *bh)
{
    if (bh) {
        bh_enqueue(bh, BH_DELETED);
    }
}

void aio_bh_schedule_oneshot(AioContext *ctx, BHFunc *cb, void *opaque)
{
    BH *bh = aio_bh_new(ctx, cb, opaque);
    bh_enqueue(bh, BH_SCHEDULED | BH_ONESHOT);
}

/* Move everything pushed since last time to the tail of the run queue. */
static void bh_detach_stack(AioContext *ctx)
{
    BH *bh = atomic_xchg(&ctx->bh_stack, NULL);
    ListNode fifo;

    list_init(&fifo);
    for (; bh; bh = bh->next) {
        list_add_head(&fifo, &bh->run_node);   /* reverses LIFO into FIFO */
    }
    list_splice_tail(&ctx->bh_run_queue, &fifo);
}

bool aio_bh_poll(AioContext *ctx)
{
    bool progress = false;

    bh_detach_stack(ctx);
    while (!list_empty(&ctx->bh_run_queue)) {
        BH *bh = list_entry(ctx->bh_run_queue.next, BH, run_node);
        unsigned flags;

        list_del(&bh->run_node);
        /* Clear PENDING first, so that the callback may schedule it again. */
        flags = atomic_fetch_and(&bh->flags, ~(unsigned)(BH_PENDING | BH_SCHEDULED | BH_IDLE));
        if (flags & BH_DELETED) {
            free(bh);
            continue;
        }
        if (flags & BH_SCHEDULED) {
            if (!(flags & BH_IDLE)) {
                progress = true;
            }
            bh->cb(bh->opaque);
        }
        if (flags & BH_ONESHOT) {
            free(bh);
        }
    }
    return progress;
}

bool aio_bh_pending(AioContext *ctx, bool *idle)
{
    *idle = false;
    list_for_each(n, &ctx->bh_run_queue) {
        unsigned flags = atomic_read(&list_entry(n, BH, run_node)->flags);
        if ((flags & BH_SCHEDULED) && !(flags & BH_IDLE)) {
            return true;
        }
        *idle |= (flags & BH_IDLE) != 0;
    }
    /* Nodes are only freed by this thread, so walking a snapshot is safe. */
    for (BH *bh = atomic_read_mb(&ctx->bh_stack); bh; bh = bh->next) {
        unsigned flags = atomic_read(&bh->flags);
        if ((flags & BH_SCHEDULED) && !(flags & BH_IDLE)) {
            return true;
        }
        if (flags & BH_DELETED) {
            return true;   /* let the next poll free it promptly */
        }
        *idle |= (flags & BH_IDLE) != 0;
    }
    return false;
}

void aio_bh_free_all(AioContext *ctx)
{
    bh_detach_stack(ctx);
    while (!list_empty(&ctx->bh_run_queue)) {
        BH *bh = list_entry(ctx->bh_run_queue.next, BH, run_node);
        unsigned flags = atomic_read(&bh->flags);

        list_del(&bh->run_node);
        if ((flags & BH_SCHEDULED) && !(flags & BH_DELETED)) {
            error_report("event loop '%s' destroyed with a scheduled bottom half",
                         aio_context_name(ctx));
            abort();
        }
        free(bh);
    }
}
