/*
 * copy-on-read.c - the "copy-on-read" filter: what a read finds in the
 * backing chain below the node under it (down to "bottom", included) is
 * written into that node as well, so the next read finds it there (an
 * image that fills itself from a slow or remote base while in use).
 *
 * A read and the write back it causes hold their range on the filter
 * node serialised; writes through the filter hold theirs too, so a guest
 * write can never fall between the read of old data and its write back.
 */
#include <stdlib.h>
#include <string.h>

#include "blockd/block-chain.h"
#include "blockd/block-global-state.h"
#include "blockd/block-io.h"
#include "blockd/iov.h"
#include "blockd/main-loop.h"
#include "blockd/options.h"
#include "block-internal.h"

typedef struct CorState {
    /* The lowest layer searched (referenced); NULL: the whole chain. */
    BlockDriverState *bottom;
} CorState;

static bool find_bottom(BlockDriverState *bs, const char *name, Error **errp)
{
    CorState *s = bs->opaque;
    BlockDriverState *bottom = bdrv_find_node(name);

    if (!bottom) {
        error_setg(errp, "Bottom node '%s' not found", name);
        return false;
    }
    if (bottom->drv->is_filter) {
        error_setg(errp, "Bottom node '%s' is a filter", name);
        return false;
    }
    bdrv_ref(bottom);
    s->bottom = bottom;
    return true;
}

static int cor_open(BlockDriverState *bs, json_object *options, int flags, Error **errp)
{
    const char *bottom = NULL;

    (void)flags;
    if (!opt_get_str(options, "bottom", &bottom, errp) ||
        bdrv_open_file_as_own(bs, options, BDRV_CHILD_FILTERED | BDRV_CHILD_PRIMARY,
                              errp) < 0) {
        return -1;
    }
    return bottom && !find_bottom(bs, bottom, errp) ? -1 : 0;
}

static void cor_close(BlockDriverState *bs)
{
    CorState *s = bs->opaque;

    if (s->bottom) {
        bdrv_unref(s->bottom);
    }
}

/* Always the right to write back what was read (the data stays the same). */
static void cor_child_perm(BlockDriverState *bs, BdrvChild *c, unsigned role,
                           uint64_t perm, uint64_t shared, uint64_t *nperm, uint64_t *nshared)
{
    bdrv_default_child_perm(bs, c, role, perm, shared, nperm, nshared);
    *nperm |= BLK_PERM_WRITE_UNCHANGED;
}

/* Does the run at @offset (clipped to *n) need copying up? */
static int coroutine_fn needs_copy(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                   int64_t *n) GRAPH_RDLOCK
{
    CorState *s = bs->opaque;
    BlockDriverState *top = bs->file->bs;
    BlockDriverState *below = top->backing ? top->backing->bs : NULL;
    BlockDriverState *base = s->bottom && s->bottom->backing ? s->bottom->backing->bs : NULL;
    int ret = bdrv_co_is_allocated_above(top, below, offset, bytes, n);

    if (ret != 0 || !below) {
        return ret < 0 ? ret : 0;           /* the top holds it, or nothing is below */
    }
    return bdrv_co_is_allocated_above(below, base, offset, *n, n);
}

/* Read [offset, +bytes) of the request's buffer and store it in the top. */
static int coroutine_fn copy_up(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                struct iovec *iov, int niov, size_t skip) GRAPH_RDLOCK
{
    BdrvTrackedRequest req;
    IOVector v;
    int ret;

    iovector_init(&v);
    iovector_concat(&v, iov, niov, skip, (size_t)bytes);
    bdrv_co_track_begin(bs, &req, offset, bytes, true);
    ret = bdrv_co_preadv(bs->file, offset, bytes, v.iov, v.niov, 0);
    if (ret == 0) {
        /* Zeroes are stored as zeroes (no data cluster for them). */
        ret = iov_is_zero(v.iov, v.niov, 0, (size_t)bytes)
              ? bdrv_co_pwrite_zeroes(bs->file, offset, bytes, BDRV_REQ_WRITE_UNCHANGED)
              : bdrv_co_pwritev(bs->file, offset, bytes, v.iov, v.niov,
                                BDRV_REQ_WRITE_UNCHANGED);
    }
    bdrv_co_track_end(bs, &req);
    iovector_destroy(&v);
    return ret;
}

static int coroutine_fn cor_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                   struct iovec *iov, int niov, int flags) GRAPH_RDLOCK
{
    int64_t done = 0;

    while (done < bytes) {
        IOVector v;
        int64_t n;
        int ret = needs_copy(bs, offset + done, bytes - done, &n);

        if (ret > 0) {
            ret = copy_up(bs, offset + done, n, iov, niov, (size_t)done);
        } else if (ret == 0) {
            iovector_init(&v);
            iovector_concat(&v, iov, niov, (size_t)done, (size_t)n);
            ret = bdrv_co_preadv(bs->file, offset + done, n, v.iov, v.niov, flags);
            iovector_destroy(&v);
        }
        if (ret < 0) {
            return ret;
        }
        done += n;
    }
    return 0;
}

static int coroutine_fn cor_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                    struct iovec *iov, int niov, int flags) GRAPH_RDLOCK
{
    BdrvTrackedRequest req;
    int ret;

    bdrv_co_track_begin(bs, &req, offset, bytes, false);
    ret = bdrv_co_pwritev(bs->file, offset, bytes, iov, niov, flags);
    bdrv_co_track_end(bs, &req);
    return ret;
}

static int coroutine_fn cor_pwrite_zeroes(BlockDriverState *bs, int64_t offset,
                                          int64_t bytes, int flags) GRAPH_RDLOCK
{
    BdrvTrackedRequest req;
    int ret;

    bdrv_co_track_begin(bs, &req, offset, bytes, false);
    ret = bdrv_co_pwrite_zeroes(bs->file, offset, bytes, flags);
    bdrv_co_track_end(bs, &req);
    return ret;
}

static int coroutine_fn cor_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes)
    GRAPH_RDLOCK
{
    BdrvTrackedRequest req;
    int ret;

    bdrv_co_track_begin(bs, &req, offset, bytes, false);
    ret = bdrv_co_pdiscard(bs->file, offset, bytes);
    bdrv_co_track_end(bs, &req);
    return ret;
}

const BlockDriver bdrv_copy_on_read = {
    .format_name = "copy-on-read",
    .instance_size = sizeof(CorState),
    .is_filter = true,
    .bdrv_open = cor_open,
    .bdrv_close = cor_close,
    .bdrv_child_perm = cor_child_perm,
    .bdrv_co_preadv = cor_preadv,
    .bdrv_co_pwritev = cor_pwritev,
    .bdrv_co_pwrite_zeroes = cor_pwrite_zeroes,
    .bdrv_co_pdiscard = cor_pdiscard,
    .bdrv_co_flush = bdrv_filter_co_flush,
    .supported_write_flags = BDRV_REQ_FUA | BDRV_REQ_WRITE_UNCHANGED,
    .supported_zero_flags = BDRV_REQ_FUA | BDRV_REQ_MAY_UNMAP | BDRV_REQ_NO_FALLBACK |
                            BDRV_REQ_WRITE_UNCHANGED,
};
