/*
 * raw-format.c - the "raw" format: the bytes of its "file" child, or a
 * window of them (offset, size).
 */
#include <errno.h>

#include "blockd/block-global-state.h"
#include "blockd/block-io.h"
#include "block-internal.h"
#include "blockd/options.h"

typedef struct RawState {
    int64_t offset;
    bool has_size;
} RawState;

static int raw_open(BlockDriverState *bs, json_object *options, int flags, Error **errp)
{
    RawState *s = bs->opaque;
    int64_t size = -1, file_size;
    BdrvChild *file;
    unsigned role;

    (void)flags;
    if (!opt_get_size(options, "offset", &s->offset, errp) ||
        !opt_get_size(options, "size", &size, errp)) {
        return -1;
    }
    s->has_size = size >= 0;
    /* A window cannot follow its file's size: then it is data, not a filter. */
    role = (s->offset || s->has_size) ? BDRV_CHILD_DATA | BDRV_CHILD_PRIMARY
                                      : BDRV_CHILD_FILTERED | BDRV_CHILD_PRIMARY;
    file = bdrv_open_child(bs, options, "file", role, true, errp);
    if (!file) {
        return -1;
    }
    graph_rdlock_main_loop();
    file_size = bdrv_getlength(file->bs);
    bs->bl = file->bs->bl;
    graph_rdunlock_main_loop();
    if (s->offset > file_size) {
        error_setg(errp, "The sum of offset (%lld) and size (0) has to be smaller or "
                   "equal to the  actual size of the containing file (%lld)",
                   (long long)s->offset, (long long)file_size);
        return -1;
    }
    if (!s->has_size) {
        size = file_size - s->offset;
    } else if (s->offset + size > file_size) {
        error_setg(errp, "The sum of offset (%lld) and size (%lld) has to be smaller or "
                   "equal to the  actual size of the containing file (%lld)",
                   (long long)s->offset, (long long)size, (long long)file_size);
        return -1;
    }
    bs->total_bytes = size;
    return 0;
}

static int coroutine_fn raw_co_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                      struct iovec *iov, int niov, int flags) GRAPH_RDLOCK
{
    RawState *s = bs->opaque;
    return bdrv_co_preadv(bs->file, offset + s->offset, bytes, iov, niov, flags);
}

static int coroutine_fn raw_co_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                       struct iovec *iov, int niov, int flags) GRAPH_RDLOCK
{
    RawState *s = bs->opaque;
    return bdrv_co_pwritev(bs->file, offset + s->offset, bytes, iov, niov, flags);
}

static int coroutine_fn raw_co_pwrite_zeroes(BlockDriverState *bs, int64_t offset,
                                             int64_t bytes, int flags) GRAPH_RDLOCK
{
    RawState *s = bs->opaque;
    return bdrv_co_pwrite_zeroes(bs->file, offset + s->offset, bytes, flags);
}

static int coroutine_fn raw_co_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes) GRAPH_RDLOCK
{
    RawState *s = bs->opaque;
    return bdrv_co_pdiscard(bs->file, offset + s->offset, bytes);
}

static int coroutine_fn raw_co_block_status(BlockDriverState *bs, int64_t offset,
                                            int64_t bytes, int64_t *pnum) GRAPH_RDLOCK
{
    RawState *s = bs->opaque;
    return bdrv_co_block_status(bs->file->bs, offset + s->offset, bytes, pnum);
}

static int coroutine_fn raw_co_truncate(BlockDriverState *bs, int64_t size, Error **errp) GRAPH_RDLOCK
{
    RawState *s = bs->opaque;
    int ret;

    if (s->offset || s->has_size) {
        error_setg(errp, "Cannot resize a raw node with offset or size");
        return -ENOTSUP;
    }
    ret = bdrv_co_truncate(bs->file, size, errp);
    if (ret == 0) {
        __atomic_store_n(&bs->total_bytes, size, __ATOMIC_RELAXED);
    }
    return ret;
}

static int raw_get_info(BlockDriverState *bs, BlockDriverInfo *bdi)
{
    (void)bs;
    *bdi = (BlockDriverInfo){ 0 };
    return 0;
}

const BlockDriver bdrv_raw = {
    .bdrv_get_info = raw_get_info,
    .format_name = "raw",
    .instance_size = sizeof(RawState),
    .is_format = true,
    .bdrv_open = raw_open,
    .bdrv_co_preadv = raw_co_preadv,
    .bdrv_co_pwritev = raw_co_pwritev,
    .bdrv_co_pwrite_zeroes = raw_co_pwrite_zeroes,
    .bdrv_co_pdiscard = raw_co_pdiscard,
    .bdrv_co_block_status = raw_co_block_status,
    .bdrv_co_truncate = raw_co_truncate,
    /* The file does FUA itself (or the I/O path emulates it there). */
    .supported_write_flags = BDRV_REQ_FUA,
    .supported_zero_flags = BDRV_REQ_FUA | BDRV_REQ_MAY_UNMAP | BDRV_REQ_NO_FALLBACK,
};
