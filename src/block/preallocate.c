/*
 * preallocate.c - the "preallocate" filter: when the node above grows its
 * file (a qcow2 image allocating clusters), the file below grows further,
 * by prealloc-size rounded up to prealloc-align, and that tail is
 * allocated at once, so that the file system hands out large extents
 * instead of one per cluster.  The node shows only the length its parent
 * asked for; the tail is cut off again when the node closes (or stops
 * being writable).
 */
#include <errno.h>

#include "blockd/atomic.h"
#include "blockd/block-global-state.h"
#include "blockd/block-io.h"
#include "blockd/log.h"
#include "blockd/main-loop.h"
#include "blockd/options.h"
#include "block-internal.h"

#define PREALLOC_DEFAULT_ALIGN (1 << 20)
#define PREALLOC_DEFAULT_SIZE (128 << 20)

typedef struct PreallocState {
    int64_t align;
    int64_t size;
    CoMutex lock;               /* one change of length at a time */
    int64_t file_end TSA_FIELD_GUARDED_BY(lock);   /* the child's length */
} PreallocState;

static bool parse_sizes(PreallocState *s, json_object *options, Error **errp)
{
    s->align = PREALLOC_DEFAULT_ALIGN;
    s->size = PREALLOC_DEFAULT_SIZE;
    if (!opt_get_int(options, "prealloc-align", &s->align, errp) ||
        !opt_get_int(options, "prealloc-size", &s->size, errp)) {
        return false;
    }
    if (s->align <= 0 || s->align % 512) {
        error_setg(errp, "prealloc-align parameter of preallocate filter is not aligned "
                   "to 512");
        return false;
    }
    if (s->size < 0) {
        error_setg(errp, "Parameter 'prealloc-size' expects a non-negative size");
        return false;
    }
    return true;
}

/* No request runs before open returns: file_end is set unlocked. */
static int prealloc_open(BlockDriverState *bs, json_object *options, int flags, Error **errp)
    TSA_NO_TSA
{
    PreallocState *s = bs->opaque;
    BlockDriverState *child;

    (void)flags;
    co_mutex_init(&s->lock);
    if (!parse_sizes(s, options, errp) ||
        bdrv_open_file_as_own(bs, options, BDRV_CHILD_FILTERED | BDRV_CHILD_PRIMARY,
                              errp) < 0) {
        return -1;
    }
    graph_rdlock_main_loop();
    child = bs->file->bs;
    graph_rdunlock_main_loop();
    bs->total_bytes = bdrv_getlength(child);
    s->file_end = bs->total_bytes;
    return 0;
}

/* Writing means growing the file: take the resize right, unshared (a
 * preallocated tail is ours to cut). */
static void prealloc_child_perm(BlockDriverState *bs, BdrvChild *c, unsigned role,
                                uint64_t perm, uint64_t shared, uint64_t *nperm,
                                uint64_t *nshared)
{
    bdrv_default_child_perm(bs, c, role, perm, shared, nperm, nshared);
    if (*nperm & BLK_PERM_WRITE) {
        *nperm |= BLK_PERM_RESIZE;
        *nshared &= ~(uint64_t)BLK_PERM_RESIZE;
    }
}

static int64_t round_up(int64_t x, int64_t align)
{
    return (x + align - 1) / align * align;
}

/* Grow the child to cover @size and a preallocated tail beyond it. */
static int coroutine_fn grow_file(BlockDriverState *bs, int64_t size, Error **errp)
    GRAPH_RDLOCK TSA_REQUIRES(((PreallocState *)bs->opaque)->lock)
{
    PreallocState *s = bs->opaque;
    int64_t old_end = s->file_end, new_end = round_up(size + s->size, s->align);
    int ret = bdrv_co_truncate(bs->file, new_end, errp);

    if (ret < 0) {
        return ret;
    }
    s->file_end = new_end;
    /* Allocate the tail now (zeroes that keep their blocks); a file
     * system that cannot is left sparse: preallocation is an advice. */
    if (bdrv_co_pwrite_zeroes(bs->file, old_end, new_end - old_end, BDRV_REQ_NO_FALLBACK) < 0) {
        log_msg(LOG_LEVEL_DEBUG, "preallocate node '%s': could not allocate ahead",
                bs->node_name);
    }
    return 0;
}

static int coroutine_fn prealloc_truncate(BlockDriverState *bs, int64_t size, Error **errp)
    GRAPH_RDLOCK
{
    PreallocState *s = bs->opaque;
    int ret = 0;

    co_mutex_lock(&s->lock);
    if (size > s->file_end) {
        ret = grow_file(bs, size, errp);
    } else if (size < atomic_read(&bs->total_bytes)) {
        /* Shrinking drops the tail too. */
        ret = bdrv_co_truncate(bs->file, size, errp);
        if (ret == 0) {
            s->file_end = size;
        }
    }
    if (ret == 0) {
        atomic_set(&bs->total_bytes, size);
    }
    co_mutex_unlock(&s->lock);
    return ret;
}

/* Cut the preallocated tail off (the file ends where the node does). */
static int coroutine_fn drop_tail(BlockDriverState *bs, void *opaque) GRAPH_RDLOCK
{
    PreallocState *s = bs->opaque;
    int64_t end = atomic_read(&bs->total_bytes);
    int ret = 0;

    (void)opaque;
    co_mutex_lock(&s->lock);
    if (s->file_end > end) {
        ret = bdrv_co_truncate(bs->file, end, NULL);
        if (ret == 0) {
            s->file_end = end;
        }
    }
    co_mutex_unlock(&s->lock);
    return ret;
}

/* The parents are gone, and with them the rights this node had on its
 * file: take back what cutting the tail needs. */
static void prealloc_close(BlockDriverState *bs)
{
    int ret;

    GLOBAL_STATE_CODE();
    if (bs->read_only) {
        return;
    }
    graph_wrlock();
    ret = bdrv_child_try_set_perm(bs->file, BLK_PERM_WRITE | BLK_PERM_RESIZE,
                                  BLK_PERM_ALL & ~(uint64_t)BLK_PERM_RESIZE, NULL);
    graph_wrunlock();
    if (ret < 0 || bdrv_run_co(bs, drop_tail, NULL) < 0) {
        log_msg(LOG_LEVEL_WARN, "preallocate node '%s': could not cut the preallocated "
                "tail off", bs->node_name);
    }
}

static int prealloc_reopen(BlockDriverState *bs, int flags, Error **errp)
{
    (void)errp;
    /* Going read-only: the tail goes while the resize right is ours. */
    if (!(flags & BDRV_O_RDWR) && !bs->read_only) {
        bdrv_run_co(bs, drop_tail, NULL);
    }
    return 0;
}

const BlockDriver bdrv_preallocate = {
    .format_name = "preallocate",
    .instance_size = sizeof(PreallocState),
    .is_filter = true,
    .bdrv_open = prealloc_open,
    .bdrv_close = prealloc_close,
    .bdrv_reopen = prealloc_reopen,
    .bdrv_child_perm = prealloc_child_perm,
    .bdrv_co_preadv = bdrv_filter_co_preadv,
    .bdrv_co_pwritev = bdrv_filter_co_pwritev,
    .bdrv_co_pwrite_zeroes = bdrv_filter_co_pwrite_zeroes,
    .bdrv_co_pdiscard = bdrv_filter_co_pdiscard,
    .bdrv_co_flush = bdrv_filter_co_flush,
    .bdrv_co_truncate = prealloc_truncate,
    .supported_write_flags = BDRV_REQ_FUA | BDRV_REQ_WRITE_UNCHANGED,
    .supported_zero_flags = BDRV_REQ_FUA | BDRV_REQ_MAY_UNMAP | BDRV_REQ_NO_FALLBACK,
};
