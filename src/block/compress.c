/*
 * compress.c - the "compress" filter: every write to it is stored as
 * compressed clusters by the format node below (qcow2), reads and the
 * rest pass through.  Requests are aligned to the node's cluster size (a
 * partial cluster is read, completed and compressed whole).  As with
 * qcow2's compressed writes themselves, a cluster is compressed once: a
 * write over a cluster that already holds data fails with an I/O error.
 */
#include "blockd/block-global-state.h"
#include "blockd/block-io.h"
#include "blockd/main-loop.h"
#include "block-internal.h"

static int compress_open(BlockDriverState *bs, json_object *options, int flags, Error **errp)
{
    BlockDriverState *child;
    BlockDriverInfo bdi = { 0 };

    (void)flags;
    if (bdrv_open_file_as_own(bs, options, BDRV_CHILD_FILTERED | BDRV_CHILD_PRIMARY,
                              errp) < 0) {
        return -1;
    }
    graph_rdlock_main_loop();
    child = bs->file->bs;
    graph_rdunlock_main_loop();
    if (!(child->drv->supported_write_flags & BDRV_REQ_WRITE_COMPRESSED)) {
        error_setg(errp, "Compression is not supported for underlying format: %s",
                   child->drv->format_name);
        return -1;
    }
    if (child->drv->bdrv_get_info && child->drv->bdrv_get_info(child, &bdi) == 0 &&
        bdi.cluster_size > 0) {
        bs->bl.request_alignment = (uint32_t)bdi.cluster_size;
    }
    return 0;
}

static int coroutine_fn compress_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                         struct iovec *iov, int niov, int flags) GRAPH_RDLOCK
{
    return bdrv_co_pwritev(bs->file, offset, bytes, iov, niov,
                           flags | BDRV_REQ_WRITE_COMPRESSED);
}

const BlockDriver bdrv_compress = {
    .format_name = "compress",
    .instance_size = 1,
    .is_filter = true,
    .bdrv_open = compress_open,
    .bdrv_co_preadv = bdrv_filter_co_preadv,
    .bdrv_co_pwritev = compress_pwritev,
    .bdrv_co_pwrite_zeroes = bdrv_filter_co_pwrite_zeroes,
    .bdrv_co_pdiscard = bdrv_filter_co_pdiscard,
    .bdrv_co_flush = bdrv_filter_co_flush,
    /* Passed down as they come; the format node handles each. */
    .supported_write_flags = BDRV_REQ_FUA | BDRV_REQ_WRITE_UNCHANGED | BDRV_REQ_WRITE_COMPRESSED,
    .supported_zero_flags = BDRV_REQ_FUA | BDRV_REQ_MAY_UNMAP | BDRV_REQ_NO_FALLBACK,
};
