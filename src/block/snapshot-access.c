/*
 * snapshot-access.c - the "snapshot-access" node: the point-in-time view
 * that a copy-before-write node below keeps (docs/fleecing.md), as a
 * read-only node of its own, to be exported over NBD.  Reads, block
 * status and discards go to the view (BlockDriver's *_snapshot
 * callbacks); a discard tells the filter that this part of the view is no
 * longer needed, so it stops copying it.  Writes are refused.
 */
#include <errno.h>

#include "blockd/block-global-state.h"
#include "blockd/block-io.h"
#include "blockd/main-loop.h"
#include "block-internal.h"

static int sa_open(BlockDriverState *bs, json_object *options, int flags, Error **errp)
{
    (void)flags;
    return bdrv_open_file_as_own(bs, options, BDRV_CHILD_DATA | BDRV_CHILD_PRIMARY, errp);
}

/* The view is read, never written: the node below may change freely. */
static void sa_child_perm(BlockDriverState *bs, BdrvChild *c, unsigned role,
                          uint64_t perm, uint64_t shared, uint64_t *nperm, uint64_t *nshared)
{
    (void)bs; (void)c; (void)role; (void)perm; (void)shared;
    *nperm = BLK_PERM_CONSISTENT_READ;
    *nshared = BLK_PERM_ALL;
}

static int coroutine_fn sa_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                  struct iovec *iov, int niov, int flags) GRAPH_RDLOCK
{
    (void)flags;
    return bdrv_co_preadv_snapshot(bs->file, offset, bytes, iov, niov);
}

static int coroutine_fn sa_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                   struct iovec *iov, int niov, int flags) GRAPH_RDLOCK
{
    (void)bs; (void)offset; (void)bytes; (void)iov; (void)niov; (void)flags;
    return -ENOTSUP;
}

static int coroutine_fn sa_pwrite_zeroes(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                         int flags) GRAPH_RDLOCK
{
    (void)bs; (void)offset; (void)bytes; (void)flags;
    return -ENOTSUP;
}

static int coroutine_fn sa_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes)
    GRAPH_RDLOCK
{
    return bdrv_co_pdiscard_snapshot(bs->file, offset, bytes);
}

static int coroutine_fn sa_block_status(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                        int64_t *pnum) GRAPH_RDLOCK
{
    return bdrv_co_snapshot_block_status(bs->file, offset, bytes, pnum);
}

static int coroutine_fn sa_flush(BlockDriverState *bs) GRAPH_RDLOCK
{
    (void)bs;
    return 0;                    /* nothing of ours to flush */
}

const BlockDriver bdrv_snapshot_access = {
    .format_name = "snapshot-access",
    .instance_size = 1,
    .bdrv_open = sa_open,
    .bdrv_child_perm = sa_child_perm,
    .bdrv_co_preadv = sa_preadv,
    .bdrv_co_pwritev = sa_pwritev,
    .bdrv_co_pwrite_zeroes = sa_pwrite_zeroes,
    .bdrv_co_pdiscard = sa_pdiscard,
    .bdrv_co_block_status = sa_block_status,
    .bdrv_co_flush = sa_flush,
};
