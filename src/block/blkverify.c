/*
 * blkverify.c - the "blkverify" driver: every request goes to the image
 * under test ("test") and to a reference copy ("raw"); reads compare the
 * two.  A difference is logged with its offset and fails the read with
 * EIO (QEMU ends the whole process there; a daemon serving other disks
 * must not).  Writes, zeroes and flushes go to both and succeed if both
 * do.  For testing formats and drivers against a known-good copy.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/block-global-state.h"
#include "blockd/block-io.h"
#include "blockd/iov.h"
#include "blockd/log.h"
#include "blockd/main-loop.h"
#include "block-internal.h"

typedef struct BlkverifyState {
    BdrvChild *raw;
} BlkverifyState;

static int blkverify_open(BlockDriverState *bs, json_object *options, int flags, Error **errp)
{
    BlkverifyState *s = bs->opaque;
    BdrvChild *test;

    (void)flags;
    test = bdrv_open_child(bs, options, "test", BDRV_CHILD_DATA | BDRV_CHILD_PRIMARY, true,
                           errp);
    if (!test) {
        return -1;
    }
    s->raw = bdrv_open_child(bs, options, "raw", BDRV_CHILD_DATA, true, errp);
    if (!s->raw) {
        return -1;
    }
    graph_rdlock_main_loop();
    bs->total_bytes = bdrv_getlength(test->bs);
    bs->bl.request_alignment = test->bs->bl.request_alignment > s->raw->bs->bl.request_alignment
                               ? test->bs->bl.request_alignment
                               : s->raw->bs->bl.request_alignment;
    graph_rdunlock_main_loop();
    return 0;
}

/* The first byte where the reference and the test differ, or -1. */
static int64_t first_difference(const struct iovec *iov, int niov, const uint8_t *ref,
                                size_t len)
{
    size_t off = 0;

    for (int i = 0; i < niov && off < len; i++) {
        size_t n = iov[i].iov_len < len - off ? iov[i].iov_len : len - off;

        if (memcmp(iov[i].iov_base, ref + off, n) != 0) {
            for (size_t k = 0; k < n; k++) {
                if (((uint8_t *)iov[i].iov_base)[k] != ref[off + k]) {
                    return (int64_t)(off + k);
                }
            }
        }
        off += n;
    }
    return -1;
}

static int coroutine_fn blkverify_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                         struct iovec *iov, int niov, int flags) GRAPH_RDLOCK
{
    BlkverifyState *s = bs->opaque;
    uint8_t *ref = malloc((size_t)bytes);
    struct iovec riov = { ref, (size_t)bytes };
    int ret = bdrv_co_preadv(bs->file, offset, bytes, iov, niov, flags);
    int rret = bdrv_co_preadv(s->raw, offset, bytes, &riov, 1, flags);
    int64_t at;

    if (ret == 0 && rret == 0 && (at = first_difference(iov, niov, ref, (size_t)bytes)) >= 0) {
        log_msg(LOG_LEVEL_ERROR, "blkverify node '%s': read offset=%lld bytes=%lld contents "
                "mismatch at offset %lld", bs->node_name, (long long)offset, (long long)bytes,
                (long long)(offset + at));
        ret = -EIO;
    } else if (ret == 0 && rret < 0) {
        ret = rret;
    }
    free(ref);
    return ret;
}

static int coroutine_fn blkverify_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                          struct iovec *iov, int niov, int flags) GRAPH_RDLOCK
{
    BlkverifyState *s = bs->opaque;
    int ret = bdrv_co_pwritev(bs->file, offset, bytes, iov, niov, flags);
    int rret = bdrv_co_pwritev(s->raw, offset, bytes, iov, niov, flags);

    return ret < 0 ? ret : rret;
}

static int coroutine_fn blkverify_pwrite_zeroes(BlockDriverState *bs, int64_t offset,
                                                int64_t bytes, int flags) GRAPH_RDLOCK
{
    BlkverifyState *s = bs->opaque;
    int ret = bdrv_co_pwrite_zeroes(bs->file, offset, bytes, flags);
    int rret = bdrv_co_pwrite_zeroes(s->raw, offset, bytes, flags);

    return ret < 0 ? ret : rret;
}

static int coroutine_fn blkverify_flush(BlockDriverState *bs) GRAPH_RDLOCK
{
    BlkverifyState *s = bs->opaque;

    /* The test image is flushed after us; the reference here. */
    return bdrv_co_flush(s->raw->bs);
}

const BlockDriver bdrv_blkverify = {
    .format_name = "blkverify",
    .instance_size = sizeof(BlkverifyState),
    .bdrv_open = blkverify_open,
    .bdrv_co_preadv = blkverify_preadv,
    .bdrv_co_pwritev = blkverify_pwritev,
    .bdrv_co_pwrite_zeroes = blkverify_pwrite_zeroes,
    .bdrv_co_flush = blkverify_flush,
    .supported_write_flags = BDRV_REQ_FUA,
    .supported_zero_flags = BDRV_REQ_FUA | BDRV_REQ_MAY_UNMAP | BDRV_REQ_NO_FALLBACK,
};
