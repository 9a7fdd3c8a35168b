/*
 * null.c - the null-co and null-aio drivers: a node of a given size that
 * discards writes and reads zeroes (read-zeroes=on) or leaves the buffer
 * alone (off, the fastest: for benchmarks).  latency-ns delays every
 * request.  QEMU's two differ in how their requests complete (coroutine
 * or callback); blockd's block layer has coroutines only, so null-aio is
 * null-co under its own name, for the configurations that name it.
 */
#include <string.h>

#include "blockd/block-global-state.h"
#include "blockd/block-io.h"
#include "block-internal.h"
#include "blockd/options.h"

typedef struct NullState {
    bool read_zeroes;
    int64_t latency_ns;
} NullState;

static int null_open(BlockDriverState *bs, json_object *options, int flags,
                     Error **errp)
{
    NullState *s = bs->opaque;
    int64_t size = 1LL << 30;

    (void)flags;
    if (!opt_get_size(options, "size", &size, errp) ||
        !opt_get_bool(options, "read-zeroes", &s->read_zeroes, errp) ||
        !opt_get_int(options, "latency-ns", &s->latency_ns, errp)) {
        return -1;
    }
    if (size < 0 || s->latency_ns < 0) {
        error_setg(errp, "%s: 'size' and 'latency-ns' must not be negative",
                   bs->drv->format_name);
        return -1;
    }
    bs->total_bytes = size;
    return 0;
}

static void coroutine_fn null_delay(NullState *s)
{
    if (s->latency_ns) {
        co_sleep_ns(s->latency_ns);
    }
}

static int coroutine_fn null_co_preadv(BlockDriverState *bs, int64_t offset,
                                       int64_t bytes, struct iovec *iov, int niov,
                                       int flags) GRAPH_RDLOCK
{
    NullState *s = bs->opaque;

    (void)offset;
    (void)bytes;
    (void)flags;
    null_delay(s);
    if (s->read_zeroes) {
        for (int i = 0; i < niov; i++) {
            memset(iov[i].iov_base, 0, iov[i].iov_len);
        }
    }
    return 0;
}

static int coroutine_fn null_co_pwritev(BlockDriverState *bs, int64_t offset,
                                        int64_t bytes, struct iovec *iov, int niov,
                                        int flags) GRAPH_RDLOCK
{
    (void)offset;
    (void)bytes;
    (void)iov;
    (void)niov;
    (void)flags;
    null_delay(bs->opaque);
    return 0;
}

static int coroutine_fn null_co_flush(BlockDriverState *bs) GRAPH_RDLOCK
{
    null_delay(bs->opaque);
    return 0;
}

static int coroutine_fn null_co_pwrite_zeroes(BlockDriverState *bs, int64_t offset,
                                              int64_t bytes, int flags) GRAPH_RDLOCK
{
    (void)offset;
    (void)bytes;
    (void)flags;
    null_delay(bs->opaque);
    return 0;
}

static int coroutine_fn null_co_block_status(BlockDriverState *bs, int64_t offset,
                                             int64_t bytes, int64_t *pnum) GRAPH_RDLOCK
{
    NullState *s = bs->opaque;

    (void)offset;
    *pnum = bytes;
    /* Nothing is stored: a hole, which reads as zeroes only with
     * read-zeroes=on (as QEMU reports it). */
    return s->read_zeroes ? (BDRV_BLOCK_ZERO | BDRV_BLOCK_ALLOCATED) : BDRV_BLOCK_ALLOCATED;
}

#define NULL_DRIVER_OPS                                                           \
    .instance_size = sizeof(NullState),                                           \
    .is_protocol = true,                                                          \
    .bdrv_open = null_open,                                                       \
    .bdrv_co_preadv = null_co_preadv,                                             \
    .bdrv_co_pwritev = null_co_pwritev,                                           \
    .bdrv_co_flush = null_co_flush,                                               \
    .bdrv_co_pwrite_zeroes = null_co_pwrite_zeroes,                               \
    .bdrv_co_block_status = null_co_block_status,                                 \
    .supported_write_flags = BDRV_REQ_FUA,                                        \
    .supported_zero_flags = BDRV_REQ_FUA | BDRV_REQ_MAY_UNMAP | BDRV_REQ_NO_FALLBACK

const BlockDriver bdrv_null_co = {
    .format_name = "null-co",
    NULL_DRIVER_OPS,
};

const BlockDriver bdrv_null_aio = {
    .format_name = "null-aio",
    NULL_DRIVER_OPS,
};
