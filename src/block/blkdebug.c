/*
 * blkdebug.c - a filter that makes I/O fail on purpose, for tests.
 *
 *   {"driver": "blkdebug", "image": <child>,
 *    "inject-error": [ {"iotype": "read", "errno": 5, "sector": 8,
 *                       "once": true, "nth": 3, "offset": 4096, "bytes": 512}, ... ]}
 *
 * A rule matches requests of its iotype (read, write, write-zeroes,
 * discard, flush, block-status; default any of them) that touch its range
 * ("sector" in 512-byte units as in QEMU, or "offset"/"bytes"; default
 * everywhere).  With "nth" only the nth matching request fails (counting
 * from 1); with "once" the rule fails one request and is then disabled.
 * The request fails with -errno (default EIO) without reaching the child.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/atomic.h"
#include "blockd/block-global-state.h"
#include "blockd/block-io.h"
#include "block-internal.h"
#include "blockd/options.h"

enum { IO_READ, IO_WRITE, IO_ZEROES, IO_DISCARD, IO_FLUSH, IO_STATUS, IO_ANY };
static const char *const iotype_names[] = {
    "read", "write", "write-zeroes", "discard", "flush", "block-status", NULL,
};

typedef struct Rule {
    int iotype;
    int error;
    int64_t offset;          /* -1: anywhere */
    int64_t bytes;
    int64_t nth;             /* 0: every match */
    bool once;
    long matches;            /* atomic */
    bool spent;              /* atomic */
} Rule;

typedef struct BlkdebugState {
    Rule *rules;
    int nrules;
} BlkdebugState;

static bool parse_rule(json_object *o, Rule *r, Error **errp)
{
    int64_t sector = -1, err = EIO;

    if (!json_object_is_type(o, json_type_object)) {
        error_setg(errp, "Invalid parameter type for 'inject-error', expected: object");
        return false;
    }
    r->iotype = IO_ANY;
    r->offset = -1;
    r->bytes = 1;
    if (!opt_get_enum(o, "iotype", iotype_names, &r->iotype, errp) ||
        !opt_get_int(o, "errno", &err, errp) ||
        !opt_get_int(o, "sector", &sector, errp) ||
        !opt_get_int(o, "offset", &r->offset, errp) ||
        !opt_get_size(o, "bytes", &r->bytes, errp) ||
        !opt_get_size(o, "nth", &r->nth, errp) ||
        !opt_get_bool(o, "once", &r->once, errp)) {
        return false;
    }
    if (err <= 0 || err > 4095) {
        error_setg(errp, "Parameter 'errno' expects a positive errno value");
        return false;
    }
    r->error = (int)err;
    if (sector >= 0) {
        r->offset = sector * 512;
        r->bytes = 512;
    }
    return true;
}

static int blkdebug_open(BlockDriverState *bs, json_object *options, int flags,
                         Error **errp)
{
    BlkdebugState *s = bs->opaque;
    json_object *list = NULL;
    BdrvChild *image;

    (void)flags;
    if (json_object_object_get_ex(options, "inject-error", &list)) {
        if (!json_object_is_type(list, json_type_array)) {
            error_setg(errp, "Invalid parameter type for 'inject-error', expected: array");
            return -1;
        }
        s->nrules = (int)json_object_array_length(list);
        s->rules = calloc(s->nrules ? s->nrules : 1, sizeof(*s->rules));
        for (int i = 0; i < s->nrules; i++) {
            if (!parse_rule(json_object_array_get_idx(list, i), &s->rules[i], errp)) {
                free(s->rules);
                s->rules = NULL;
                return -1;
            }
        }
    }
    image = bdrv_open_child(bs, options, "image", BDRV_CHILD_FILTERED | BDRV_CHILD_PRIMARY,
                            true, errp);
    if (!image) {
        free(s->rules);
        s->rules = NULL;
        return -1;
    }
    graph_rdlock_main_loop();
    bs->total_bytes = bdrv_getlength(image->bs);
    bs->bl = image->bs->bl;
    graph_rdunlock_main_loop();
    return 0;
}

static void blkdebug_close(BlockDriverState *bs)
{
    BlkdebugState *s = bs->opaque;
    free(s->rules);
}

/* The error to fail this request with, or 0 to let it through. */
static int check_rules(BlockDriverState *bs, int iotype, int64_t offset, int64_t bytes)
{
    BlkdebugState *s = bs->opaque;

    for (int i = 0; i < s->nrules; i++) {
        Rule *r = &s->rules[i];
        long n;

        if ((r->iotype != IO_ANY && r->iotype != iotype) || atomic_read(&r->spent)) {
            continue;
        }
        if (r->offset >= 0 && iotype != IO_FLUSH &&
            !(offset < r->offset + r->bytes && r->offset < offset + bytes)) {
            continue;
        }
        n = atomic_fetch_add(&r->matches, 1) + 1;
        if (r->nth && n != r->nth) {
            continue;
        }
        if (r->once && atomic_xchg(&r->spent, true)) {
            continue;
        }
        return -r->error;
    }
    return 0;
}

static int coroutine_fn blkdebug_co_preadv(BlockDriverState *bs, int64_t offset,
                                           int64_t bytes, struct iovec *iov, int niov,
                                           int flags) GRAPH_RDLOCK
{
    int ret = check_rules(bs, IO_READ, offset, bytes);
    return ret ? ret : bdrv_co_preadv(bs->file, offset, bytes, iov, niov, flags);
}

static int coroutine_fn blkdebug_co_pwritev(BlockDriverState *bs, int64_t offset,
                                            int64_t bytes, struct iovec *iov, int niov,
                                            int flags) GRAPH_RDLOCK
{
    int ret = check_rules(bs, IO_WRITE, offset, bytes);
    return ret ? ret : bdrv_co_pwritev(bs->file, offset, bytes, iov, niov, flags);
}

static int coroutine_fn blkdebug_co_pwrite_zeroes(BlockDriverState *bs, int64_t offset,
                                                  int64_t bytes, int flags) GRAPH_RDLOCK
{
    int ret = check_rules(bs, IO_ZEROES, offset, bytes);
    return ret ? ret : bdrv_co_pwrite_zeroes(bs->file, offset, bytes, flags);
}

static int coroutine_fn blkdebug_co_pdiscard(BlockDriverState *bs, int64_t offset,
                                             int64_t bytes) GRAPH_RDLOCK
{
    int ret = check_rules(bs, IO_DISCARD, offset, bytes);
    return ret ? ret : bdrv_co_pdiscard(bs->file, offset, bytes);
}

static int coroutine_fn blkdebug_co_flush(BlockDriverState *bs) GRAPH_RDLOCK
{
    /* bdrv_co_flush() goes on to the child by itself when this returns 0. */
    return check_rules(bs, IO_FLUSH, 0, 0);
}

static int coroutine_fn blkdebug_co_block_status(BlockDriverState *bs, int64_t offset,
                                                 int64_t bytes, int64_t *pnum) GRAPH_RDLOCK
{
    int ret = check_rules(bs, IO_STATUS, offset, bytes);
    return ret ? ret : bdrv_co_block_status(bs->file->bs, offset, bytes, pnum);
}

/* Resizes pass through (a qcow2 image above grows its file). */
static int coroutine_fn blkdebug_co_truncate(BlockDriverState *bs, int64_t size, Error **errp)
    GRAPH_RDLOCK
{
    int ret = bdrv_co_truncate(bs->file, size, errp);

    if (ret == 0) {
        atomic_set(&bs->total_bytes, size);
    }
    return ret;
}

const BlockDriver bdrv_blkdebug = {
    .format_name = "blkdebug",
    .instance_size = sizeof(BlkdebugState),
    .is_filter = true,
    .bdrv_open = blkdebug_open,
    .bdrv_close = blkdebug_close,
    .bdrv_co_preadv = blkdebug_co_preadv,
    .bdrv_co_pwritev = blkdebug_co_pwritev,
    .bdrv_co_pwrite_zeroes = blkdebug_co_pwrite_zeroes,
    .bdrv_co_pdiscard = blkdebug_co_pdiscard,
    .bdrv_co_flush = blkdebug_co_flush,
    .bdrv_co_block_status = blkdebug_co_block_status,
    .bdrv_co_truncate = blkdebug_co_truncate,
    .supported_write_flags = BDRV_REQ_FUA,
    .supported_zero_flags = BDRV_REQ_FUA | BDRV_REQ_MAY_UNMAP | BDRV_REQ_NO_FALLBACK,
};
