/*
 * throttle.c - the "throttle" filter: every request through it waits for
 * the limits of its throttle group (throttle.h), which several such nodes
 * may share.  Reads count as reads; writes, write-zeroes and discards as
 * writes, by their length.  A drained node lets its waiters go.
 */
#include "blockd/block-global-state.h"
#include "blockd/block-io.h"
#include "blockd/options.h"
#include "blockd/throttle.h"
#include "block-internal.h"

typedef struct ThrottleNode {
    ThrottleGroup *tg;
} ThrottleNode;

static int throttle_open(BlockDriverState *bs, json_object *options, int flags, Error **errp)
{
    ThrottleNode *s = bs->opaque;
    const char *group = NULL;

    (void)flags;
    if (!opt_get_str(options, "throttle-group", &group, errp)) {
        return -1;
    }
    if (!group) {
        error_setg(errp, "Parameter 'throttle-group' is missing");
        return -1;
    }
    s->tg = throttle_group_get(group, errp);
    if (!s->tg) {
        return -1;
    }
    if (bdrv_open_file_as_own(bs, options, BDRV_CHILD_FILTERED | BDRV_CHILD_PRIMARY,
                              errp) < 0) {
        throttle_group_put(s->tg);
        return -1;
    }
    return 0;
}

static void throttle_close(BlockDriverState *bs)
{
    ThrottleNode *s = bs->opaque;

    throttle_group_put(s->tg);
}

static void throttle_drain_begin(BlockDriverState *bs)
{
    throttle_group_drain_begin(((ThrottleNode *)bs->opaque)->tg);
}

static void throttle_drain_end(BlockDriverState *bs)
{
    throttle_group_drain_end(((ThrottleNode *)bs->opaque)->tg);
}

static int coroutine_fn throttle_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                        struct iovec *iov, int niov, int flags) GRAPH_RDLOCK
{
    throttle_group_co_wait(((ThrottleNode *)bs->opaque)->tg, false, (uint64_t)bytes);
    return bdrv_co_preadv(bs->file, offset, bytes, iov, niov, flags);
}

static int coroutine_fn throttle_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                         struct iovec *iov, int niov, int flags) GRAPH_RDLOCK
{
    throttle_group_co_wait(((ThrottleNode *)bs->opaque)->tg, true, (uint64_t)bytes);
    return bdrv_co_pwritev(bs->file, offset, bytes, iov, niov, flags);
}

static int coroutine_fn throttle_pwrite_zeroes(BlockDriverState *bs, int64_t offset,
                                               int64_t bytes, int flags) GRAPH_RDLOCK
{
    throttle_group_co_wait(((ThrottleNode *)bs->opaque)->tg, true, (uint64_t)bytes);
    return bdrv_co_pwrite_zeroes(bs->file, offset, bytes, flags);
}

static int coroutine_fn throttle_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes)
    GRAPH_RDLOCK
{
    throttle_group_co_wait(((ThrottleNode *)bs->opaque)->tg, true, (uint64_t)bytes);
    return bdrv_co_pdiscard(bs->file, offset, bytes);
}

const BlockDriver bdrv_throttle = {
    .format_name = "throttle",
    .instance_size = sizeof(ThrottleNode),
    .is_filter = true,
    .bdrv_open = throttle_open,
    .bdrv_close = throttle_close,
    .bdrv_drain_begin = throttle_drain_begin,
    .bdrv_drain_end = throttle_drain_end,
    .bdrv_co_preadv = throttle_preadv,
    .bdrv_co_pwritev = throttle_pwritev,
    .bdrv_co_pwrite_zeroes = throttle_pwrite_zeroes,
    .bdrv_co_pdiscard = throttle_pdiscard,
    .bdrv_co_flush = bdrv_filter_co_flush,
    .supported_write_flags = BDRV_REQ_FUA | BDRV_REQ_WRITE_UNCHANGED,
    .supported_zero_flags = BDRV_REQ_FUA | BDRV_REQ_MAY_UNMAP | BDRV_REQ_NO_FALLBACK,
};
