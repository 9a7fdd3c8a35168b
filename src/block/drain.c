/*
 * drain.c - drained sections and the in-flight counter.
 *
 * Draining a node quiesces everything above it (its parents stop sending
 * requests: backends queue them, jobs pause, parent nodes are quiesced in
 * turn) and then waits until no request is in flight on the node, in any
 * thread.  Only the outermost begin/end of a nest does the work.
 */
#include <stdlib.h>

#include "blockd/aio-wait.h"
#include "blockd/block-global-state.h"
#include "blockd/block-io.h"
#include "blockd/main-loop.h"
#include "block-internal.h"

static int drain_all_count;   /* main thread */

void bdrv_inc_in_flight(BlockDriverState *bs)
{
    IO_CODE();
    atomic_inc(&bs->in_flight);
}

void bdrv_dec_in_flight(BlockDriverState *bs)
{
    unsigned old;

    IO_CODE();
    old = atomic_fetch_sub(&bs->in_flight, 1);
    assert(old > 0);
    /* A drain in the main thread may be waiting for exactly this. */
    aio_wait_kick();
}

int64_t bdrv_getlength(BlockDriverState *bs)
{
    IO_CODE();
    return atomic_read(&bs->total_bytes);
}

static void parents_drained_begin(BlockDriverState *bs)
{
    list_for_each(n, &bs->parents) {
        BdrvChild *c = list_entry(n, BdrvChild, next_parent);
        if (!c->quiesced_parent && c->klass->drained_begin) {
            c->quiesced_parent = true;
            c->klass->drained_begin(c);
        }
    }
}

static void parents_drained_end(BlockDriverState *bs)
{
    list_for_each_safe(n, &bs->parents) {
        BdrvChild *c = list_entry(n, BdrvChild, next_parent);
        if (c->quiesced_parent && c->klass->drained_end) {
            c->quiesced_parent = false;
            c->klass->drained_end(c);
        }
    }
}

/* Does a parent other than @ignore still have requests of its own? */
bool bdrv_parents_busy(BlockDriverState *bs, BdrvChild *ignore)
{
    list_for_each(n, &bs->parents) {
        BdrvChild *c = list_entry(n, BdrvChild, next_parent);
        if (c != ignore && c->klass->drained_poll && c->klass->drained_poll(c)) {
            return true;
        }
    }
    return false;
}

/* Parents that are nodes are drained themselves during drain-all. */
static bool bdrv_root_parents_busy(BlockDriverState *bs)
{
    list_for_each(n, &bs->parents) {
        BdrvChild *c = list_entry(n, BdrvChild, next_parent);
        if (bdrv_child_is_node_parent(c)) {
            continue;
        }
        if (c->klass->drained_poll && c->klass->drained_poll(c)) {
            return true;
        }
    }
    return false;
}

static bool bdrv_drain_poll(BlockDriverState *bs)
{
    return atomic_read(&bs->in_flight) > 0 || bdrv_parents_busy(bs, NULL);
}

void bdrv_do_drained_begin_quiesce(BlockDriverState *bs)
{
    GLOBAL_STATE_CODE();
    if (bs->quiesce_counter++ == 0) {
        parents_drained_begin(bs);
        if (bs->drv->bdrv_drain_begin) {
            bs->drv->bdrv_drain_begin(bs);
        }
    }
}

static void do_drained_end(BlockDriverState *bs)
{
    assert(bs->quiesce_counter > 0);
    if (--bs->quiesce_counter == 0) {
        if (bs->drv->bdrv_drain_end) {
            bs->drv->bdrv_drain_end(bs);
        }
        parents_drained_end(bs);
    }
}

/* ---- Bouncing a drain out of a coroutine -------------------------------- */

typedef struct DrainBounce {
    BlockDriverState *bs;
    bool begin;
    bool *self_draining;          /* set while the drain begins (or NULL) */
    Coroutine *co;
} DrainBounce;

static void drain_bounce_bh(void *opaque)
{
    DrainBounce *d = opaque;

    bdrv_dec_in_flight(d->bs);
    if (d->begin) {
        if (d->self_draining) {
            atomic_set_mb(d->self_draining, true);
        }
        bdrv_drained_begin(d->bs);
        if (d->self_draining) {
            atomic_set_mb(d->self_draining, false);
        }
    } else {
        bdrv_drained_end(d->bs);
    }
    aio_co_wake(d->co);
}

static void coroutine_fn drain_bounce(BlockDriverState *bs, bool begin, bool *self_draining)
{
    DrainBounce d = { .bs = bs, .begin = begin, .self_draining = self_draining,
                      .co = coroutine_self() };

    /* Hold an in-flight reference so the node stays busy until the BH runs. */
    bdrv_inc_in_flight(bs);
    aio_bh_schedule_oneshot(main_aio_context(), drain_bounce_bh, &d);
    coroutine_yield();
}

void coroutine_fn bdrv_co_drained_begin_self(BlockDriverState *bs, bool *self_draining)
{
    assert(in_coroutine());
    drain_bounce(bs, true, self_draining);
}

void bdrv_drained_begin(BlockDriverState *bs)
{
    if (in_coroutine()) {
        drain_bounce(bs, true, NULL);
        return;
    }
    GLOBAL_STATE_CODE();
    /* Readers in flight may be queued behind a writer: it would deadlock. */
    assert(!graph_is_write_locked());
    bdrv_do_drained_begin_quiesce(bs);
    AIO_WAIT_WHILE_UNLOCKED(NULL, bdrv_drain_poll(bs));
}

void bdrv_drained_end(BlockDriverState *bs)
{
    if (in_coroutine()) {
        drain_bounce(bs, false, NULL);
        return;
    }
    GLOBAL_STATE_CODE();
    do_drained_end(bs);
}

/* ---- Everything ------------------------------------------------------------- */

void bdrv_drain_all_begin_nopoll(void)
{
    GLOBAL_STATE_CODE();
    drain_all_count++;
    for (BlockDriverState *bs = bdrv_next_node(NULL); bs; bs = bdrv_next_node(bs)) {
        bdrv_do_drained_begin_quiesce(bs);
    }
}

static bool any_node_busy(void)
{
    for (BlockDriverState *bs = bdrv_next_node(NULL); bs; bs = bdrv_next_node(bs)) {
        if (atomic_read(&bs->in_flight) > 0 || bdrv_root_parents_busy(bs)) {
            return true;
        }
    }
    return false;
}

void bdrv_drain_all_begin(void)
{
    assert(!in_coroutine());
    assert(!graph_is_write_locked());
    bdrv_drain_all_begin_nopoll();
    AIO_WAIT_WHILE_UNLOCKED(NULL, any_node_busy());
}

void bdrv_drain_all_end(void)
{
    GLOBAL_STATE_CODE();
    assert(drain_all_count > 0);
    for (BlockDriverState *bs = bdrv_next_node(NULL); bs; bs = bdrv_next_node(bs)) {
        do_drained_end(bs);
    }
    drain_all_count--;
}

int bdrv_drain_all_depth(void)
{
    return drain_all_count;
}
