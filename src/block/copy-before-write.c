/*
 * copy-before-write.c - the "copy-before-write" filter node for image
 * fleecing: a point-in-time view of its "file" child, kept while writes
 * go on (docs/fleecing.md).
 *
 * Before a write reaches a granule of "file" that still holds what it held
 * when the filter was opened, that content is copied to "target" (the
 * copy engine of block-copy.h; its bitmap says which granules are still
 * to copy).  The view (the snapshot) is read through a "snapshot-access"
 * node above: a granule still to copy reads from "file" -- held against
 * copies meanwhile, so that no write lands under the reader -- and one
 * already copied reads from "target".  A "bitmap" option limits the view
 * to what that bitmap marks (an incremental backup's dirty ranges); the
 * rest of the view cannot be read (EACCES, as in QEMU).
 *
 * If a copy fails, "on-cbw-error" decides: break-guest-write (default)
 * fails the write and keeps the view exact; break-snapshot lets the write
 * through and makes every later read of the view fail.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/atomic.h"
#include "blockd/block-copy.h"
#include "blockd/block-global-state.h"
#include "blockd/block-io.h"
#include "blockd/dirty-bitmap.h"
#include "blockd/iov.h"
#include "blockd/main-loop.h"
#include "blockd/options.h"
#include "block-internal.h"

#define CBW_MIN_CLUSTER (64 * 1024)

typedef struct CbwState {
    BdrvChild *target;                  /* immutable after open */
    BlockCopyState *bcs;
    BdrvDirtyBitmap *to_copy;           /* granules the view still has in "file" */
    BdrvDirtyBitmap *access;            /* granules the view has at all */
    bool break_snapshot;                /* on-cbw-error=break-snapshot */
    int snapshot_error;                 /* atomic: the view is lost (-errno) */
} CbwState;

static const char *const on_error_names[] = { "break-guest-write", "break-snapshot", NULL };

/* ---- Open and close -------------------------------------------------------------- */

/* QEMU's granule: the target's cluster, at least 64 KiB. */
static int64_t cluster_size(BlockDriverState *target)
{
    BlockDriverInfo bdi = { 0 };

    if (target->drv->bdrv_get_info && target->drv->bdrv_get_info(target, &bdi) == 0 &&
        bdi.cluster_size > CBW_MIN_CLUSTER) {
        return bdi.cluster_size;
    }
    return CBW_MIN_CLUSTER;
}

/* The "bitmap" option: only what it marks is in the view. */
static bool apply_bitmap(CbwState *s, json_object *options, Error **errp)
{
    json_object *ref, *node, *name;
    BdrvDirtyBitmap *bm;

    if (!json_object_object_get_ex(options, "bitmap", &ref)) {
        dirty_bitmap_set_all(s->to_copy);
        return true;
    }
    json_object_object_get_ex(ref, "node", &node);
    json_object_object_get_ex(ref, "name", &name);
    bm = bdrv_dirty_bitmap_lookup(json_object_get_string(node), json_object_get_string(name),
                                  NULL, errp);
    if (!bm) {
        return false;
    }
    if (!dirty_bitmap_check(bm, DIRTY_BITMAP_CHECK_INCONSISTENT, errp)) {
        error_prepend(errp, "Cannot create block-copy-state: Failed to merge bitmap '%s' to "
                      "internal copy-bitmap: ", json_object_get_string(name));
        return false;
    }
    if (!dirty_bitmap_merge(s->to_copy, bm)) {
        error_setg(errp, "Bitmap '%s' does not cover the node's size",
                   json_object_get_string(name));
        return false;
    }
    return true;
}

static int cbw_open(BlockDriverState *bs, json_object *options, int flags, Error **errp)
{
    CbwState *s = bs->opaque;
    BlockCopyOptions opts = { .chunk_size = 1 << 20, .max_tasks = 1,
                              .method = BLOCK_COPY_BY_STATUS };
    int64_t timeout = 0, size;
    int on_error = 0;
    BdrvChild *file;

    (void)flags;
    GLOBAL_STATE_CODE();
    if (!opt_get_int(options, "cbw-timeout", &timeout, errp) ||
        !opt_get_enum(options, "on-cbw-error", on_error_names, &on_error, errp)) {
        return -1;
    }
    if (timeout) {
        error_setg(errp, "copy-before-write: blockd does not support 'cbw-timeout' "
                   "(a copy is never abandoned part-way)");
        return -1;
    }
    s->break_snapshot = on_error == 1;
    file = bdrv_open_child(bs, options, "file", BDRV_CHILD_FILTERED | BDRV_CHILD_PRIMARY,
                           true, errp);
    if (!file) {
        return -1;
    }
    s->target = bdrv_open_child(bs, options, "target", BDRV_CHILD_DATA, true, errp);
    if (!s->target) {
        return -1;
    }
    graph_rdlock_main_loop();
    size = bdrv_getlength(file->bs);
    bs->total_bytes = size;
    bs->bl = file->bs->bl;
    s->to_copy = dirty_bitmap_new(size, cluster_size(s->target->bs));
    graph_rdunlock_main_loop();
    if (!apply_bitmap(s, options, errp)) {
        dirty_bitmap_free(s->to_copy);
        s->to_copy = NULL;
        return -1;
    }
    s->access = dirty_bitmap_copy(s->to_copy);
    s->bcs = block_copy_state_new(file, s->target, s->to_copy, NULL, &opts);
    return 0;
}

static void cbw_close(BlockDriverState *bs)
{
    CbwState *s = bs->opaque;

    GLOBAL_STATE_CODE();
    if (s->bcs) {
        block_copy_state_free(s->bcs);
    }
    dirty_bitmap_free(s->to_copy);
    dirty_bitmap_free(s->access);
}

/*
 * "file" passes its parents' needs through; once the filter has parents,
 * nobody else may write or resize it (a write beside the filter would
 * change the view unseen).  "target" is written whatever the parents do,
 * and keeps its size.
 */
static void cbw_child_perm(BlockDriverState *bs, BdrvChild *c, unsigned role,
                           uint64_t perm, uint64_t shared, uint64_t *nperm, uint64_t *nshared)
    TSA_NO_TSA
{
    CbwState *s = bs->opaque;

    if (c != s->target) {
        bdrv_default_child_perm(bs, c, role, perm, shared, nperm, nshared);
        /* Permission updates run under the graph write lock. */
        if (!list_empty(&bs->parents)) {
            *nperm |= BLK_PERM_CONSISTENT_READ;
            *nshared &= ~(uint64_t)(BLK_PERM_WRITE | BLK_PERM_RESIZE);
        }
        return;
    }
    *nperm = BLK_PERM_WRITE | BLK_PERM_CONSISTENT_READ;
    *nshared = BLK_PERM_ALL & ~(uint64_t)BLK_PERM_RESIZE;
}

/* ---- The guest's side ------------------------------------------------------------- */

static int coroutine_fn copy_first(BlockDriverState *bs, int64_t offset, int64_t bytes)
    GRAPH_RDLOCK
{
    CbwState *s = bs->opaque;
    bool is_read;
    int ret;

    if (atomic_read(&s->snapshot_error)) {
        return 0;                        /* the view is gone: nothing to keep */
    }
    ret = block_copy_range(s->bcs, offset, bytes, &is_read);
    if (ret < 0 && s->break_snapshot) {
        atomic_set(&s->snapshot_error, ret);
        return 0;
    }
    return ret;
}

static int coroutine_fn cbw_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                   struct iovec *iov, int niov, int flags) GRAPH_RDLOCK
{
    return bdrv_co_preadv(bs->file, offset, bytes, iov, niov, flags);
}

static int coroutine_fn cbw_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                    struct iovec *iov, int niov, int flags) GRAPH_RDLOCK
{
    int ret = copy_first(bs, offset, bytes);
    return ret < 0 ? ret : bdrv_co_pwritev(bs->file, offset, bytes, iov, niov, flags);
}

static int coroutine_fn cbw_pwrite_zeroes(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                          int flags) GRAPH_RDLOCK
{
    int ret = copy_first(bs, offset, bytes);
    return ret < 0 ? ret : bdrv_co_pwrite_zeroes(bs->file, offset, bytes, flags);
}

static int coroutine_fn cbw_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes)
    GRAPH_RDLOCK
{
    int ret = copy_first(bs, offset, bytes);
    return ret < 0 ? ret : bdrv_co_pdiscard(bs->file, offset, bytes);
}

static int coroutine_fn cbw_flush(BlockDriverState *bs) GRAPH_RDLOCK
{
    CbwState *s = bs->opaque;

    /* What the view keeps in the target is worth keeping too ("file" is
     * flushed next by bdrv_co_flush). */
    return bdrv_co_flush(s->target->bs);
}

/* ---- The view ------------------------------------------------------------------- */

/* Is all of [offset, offset+bytes) in the view? */
static bool accessible(CbwState *s, int64_t offset, int64_t bytes)
{
    int64_t pnum;

    for (int64_t pos = offset; pos < offset + bytes; pos += pnum) {
        if (!dirty_bitmap_run(s->access, pos, offset + bytes - pos, &pnum)) {
            return false;
        }
    }
    return true;
}

/* Where the view's [offset, ...) lies: "file" (still to copy) or "target";
 * *pnum: how far that holds, up to @bytes. */
static BdrvChild *view_source(BlockDriverState *bs, int64_t offset, int64_t bytes,
                              int64_t *pnum) GRAPH_RDLOCK
{
    CbwState *s = bs->opaque;

    return dirty_bitmap_run(s->to_copy, offset, bytes, pnum) ? bs->file : s->target;
}

static int coroutine_fn cbw_preadv_snapshot(BlockDriverState *bs, int64_t offset,
                                            int64_t bytes, struct iovec *iov, int niov)
    GRAPH_RDLOCK
{
    CbwState *s = bs->opaque;
    BlockCopyLock *lock;
    int ret = 0;

    if (atomic_read(&s->snapshot_error)) {
        return -EACCES;
    }
    lock = block_copy_lock(s->bcs, offset, bytes);
    if (!accessible(s, offset, bytes)) {
        ret = -EACCES;
    }
    for (int64_t done = 0, pnum; ret >= 0 && done < bytes; done += pnum) {
        BdrvChild *from = view_source(bs, offset + done, bytes - done, &pnum);
        IOVector part;

        iovector_init(&part);
        iovector_concat(&part, iov, niov, done, pnum);
        ret = bdrv_co_preadv(from, offset + done, pnum, part.iov, part.niov, 0);
        iovector_destroy(&part);
    }
    block_copy_unlock(s->bcs, lock);
    /* A copy that failed meanwhile may have let a write through. */
    return atomic_read(&s->snapshot_error) ? -EACCES : ret;
}

static int coroutine_fn cbw_snapshot_block_status(BlockDriverState *bs, int64_t offset,
                                                  int64_t bytes, int64_t *pnum) GRAPH_RDLOCK
{
    CbwState *s = bs->opaque;
    BlockCopyLock *lock;
    BdrvChild *from;
    int64_t run, in_view;
    int ret;

    /* Outside the view there is no status either (as in QEMU). */
    if (atomic_read(&s->snapshot_error) ||
        !dirty_bitmap_run(s->access, offset, bytes, &in_view)) {
        return -EACCES;
    }
    lock = block_copy_lock(s->bcs, offset, in_view);
    from = view_source(bs, offset, in_view, &run);
    ret = bdrv_co_block_status(from->bs, offset, run, pnum);
    block_copy_unlock(s->bcs, lock);
    if (ret >= 0 && from == s->target) {
        /* Copied content is the view's, whatever the target calls it. */
        ret |= BDRV_BLOCK_ALLOCATED;
    }
    return ret;
}

static int coroutine_fn cbw_pdiscard_snapshot(BlockDriverState *bs, int64_t offset,
                                              int64_t bytes) GRAPH_RDLOCK
{
    CbwState *s = bs->opaque;
    BlockCopyLock *lock;

    int64_t g = block_copy_granularity(s->bcs);
    int64_t start = (offset + g - 1) / g * g, end = (offset + bytes) / g * g;

    /* Whole granules leave the view: nothing there is copied any more,
     * and what the target holds of them may go. */
    if (end <= start) {
        return 0;
    }
    lock = block_copy_lock(s->bcs, start, end - start);
    dirty_bitmap_clear(s->access, start, end - start);
    dirty_bitmap_clear(s->to_copy, start, end - start);
    block_copy_unlock(s->bcs, lock);
    return bdrv_co_pdiscard(s->target, start, end - start);
}

const BlockDriver bdrv_copy_before_write = {
    .format_name = "copy-before-write",
    .instance_size = sizeof(CbwState),
    .is_filter = true,
    .bdrv_open = cbw_open,
    .bdrv_close = cbw_close,
    .bdrv_child_perm = cbw_child_perm,
    .bdrv_co_preadv = cbw_preadv,
    .bdrv_co_pwritev = cbw_pwritev,
    .bdrv_co_pwrite_zeroes = cbw_pwrite_zeroes,
    .bdrv_co_pdiscard = cbw_pdiscard,
    .bdrv_co_flush = cbw_flush,
    .bdrv_co_preadv_snapshot = cbw_preadv_snapshot,
    .bdrv_co_snapshot_block_status = cbw_snapshot_block_status,
    .bdrv_co_pdiscard_snapshot = cbw_pdiscard_snapshot,
    .supported_write_flags = BDRV_REQ_FUA,
    .supported_zero_flags = BDRV_REQ_FUA | BDRV_REQ_MAY_UNMAP,
};
