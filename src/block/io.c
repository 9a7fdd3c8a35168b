/*
 * io.c - the I/O path of a node: checks, in-flight accounting, alignment,
 * serialisation of read-modify-write, splitting, and fallbacks.
 *
 * Everything here runs in coroutines in any thread, with the graph read
 * lock held by the caller.  Drivers see only requests that are aligned to
 * their request_alignment, no longer than max_transfer, within the node.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/block-accounting.h"
#include "blockd/block-io.h"
#include "blockd/dirty-bitmap.h"
#include "blockd/iov.h"
#include "blockd/main-loop.h"

#define BOUNCE_MAX_ALIGN 4096
#define ZERO_CHUNK (1024 * 1024)
#define DEFAULT_MAX_TRANSFER (1LL << 30)

/* ---- Tracked requests ----------------------------------------------------- */

typedef BdrvTrackedRequest TrackedRequest;

static bool ranges_overlap(int64_t a, int64_t alen, int64_t b, int64_t blen)
{
    return a < b + blen && b < a + alen;
}

/* Nodes with request_alignment 1 never read-modify-write: no tracking. */
static bool needs_tracking(BlockDriverState *bs)
{
    return bs->bl.request_alignment > 1;
}

void coroutine_fn bdrv_co_track_begin(BlockDriverState *bs, BdrvTrackedRequest *req,
                                      int64_t offset, int64_t bytes, bool serialising)
{
    req->offset = offset;
    req->bytes = bytes;
    req->serialising = serialising;
    co_queue_init(&req->waiters);

    co_mutex_lock(&bs->reqs_lock);
retry:
    list_for_each(n, &bs->tracked_requests) {
        TrackedRequest *other = list_entry(n, TrackedRequest, node);
        if ((serialising || other->serialising) &&
            ranges_overlap(offset, bytes, other->offset, other->bytes)) {
            co_queue_wait(&other->waiters, &bs->reqs_lock);
            goto retry;
        }
    }
    list_add_tail(&bs->tracked_requests, &req->node);
    co_mutex_unlock(&bs->reqs_lock);
}

void coroutine_fn bdrv_co_track_end(BlockDriverState *bs, BdrvTrackedRequest *req)
{
    co_mutex_lock(&bs->reqs_lock);
    list_del(&req->node);
    co_queue_restart_all(&req->waiters);
    co_mutex_unlock(&bs->reqs_lock);
}

/*
 * Start a request on [offset, offset+bytes): count it as in flight and, on
 * nodes that may read-modify-write, track the aligned range it covers.
 * Returns whether it is tracked, for request_end().
 */
static bool coroutine_fn request_begin(BlockDriverState *bs, TrackedRequest *req,
                                       int64_t offset, int64_t bytes, bool serialising)
{
    int64_t align = bs->bl.request_alignment;
    int64_t start = offset - offset % align;
    int64_t end = (offset + bytes + align - 1) / align * align;

    bdrv_inc_in_flight(bs);
    if (!needs_tracking(bs)) {
        return false;
    }
    bdrv_co_track_begin(bs, req, start, end - start, serialising);
    return true;
}

static void coroutine_fn request_end(BlockDriverState *bs, TrackedRequest *req, bool tracked)
{
    if (tracked) {
        bdrv_co_track_end(bs, req);
    }
    bdrv_dec_in_flight(bs);
}

/* ---- Helpers --------------------------------------------------------------- */

static int check_request(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    int64_t size = bdrv_getlength(bs);

    if (offset < 0 || bytes < 0 || offset > size || bytes > size - offset) {
        return -EIO;
    }
    return 0;
}

static int64_t max_transfer(BlockDriverState *bs)
{
    int64_t max = bs->bl.max_transfer ? (int64_t)bs->bl.max_transfer : DEFAULT_MAX_TRANSFER;
    int64_t align = bs->bl.request_alignment;

    max -= max % align;
    return max > 0 ? max : align;
}

static size_t mem_alignment(BlockDriverState *bs)
{
    size_t a = bs->bl.min_mem_alignment ? bs->bl.min_mem_alignment : 1;
    return a > bs->bl.request_alignment ? a : bs->bl.request_alignment;
}

static void *bounce_alloc(BlockDriverState *bs, size_t bytes)
{
    size_t align = mem_alignment(bs);
    void *p = NULL;

    if (align < sizeof(void *)) {
        align = sizeof(void *);
    }
    if (posix_memalign(&p, align, bytes ? bytes : 1)) {
        return NULL;
    }
    return p;
}

/* Driver reads of an aligned range, split at max_transfer. */
static int coroutine_fn driver_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                      struct iovec *iov, int niov, int flags) GRAPH_RDLOCK
{
    int64_t max = max_transfer(bs);
    IOVector chunk;
    int ret = 0;

    if (!bs->drv->bdrv_co_preadv) {
        return -ENOTSUP;
    }
    if (bytes <= max) {
        return bs->drv->bdrv_co_preadv(bs, offset, bytes, iov, niov, flags);
    }
    iovector_init(&chunk);
    for (int64_t done = 0; done < bytes && ret >= 0; done += max) {
        int64_t len = bytes - done < max ? bytes - done : max;
        iovector_reset(&chunk);
        iovector_concat(&chunk, iov, niov, done, len);
        ret = bs->drv->bdrv_co_preadv(bs, offset + done, len, chunk.iov, chunk.niov, flags);
    }
    iovector_destroy(&chunk);
    return ret;
}

static int coroutine_fn driver_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                       struct iovec *iov, int niov, int flags) GRAPH_RDLOCK
{
    int64_t max = max_transfer(bs);
    int drv_flags = flags & bs->drv->supported_write_flags;
    IOVector chunk;
    int ret = 0;

    if (!bs->drv->bdrv_co_pwritev ||
        ((flags & BDRV_REQ_WRITE_COMPRESSED) && !(drv_flags & BDRV_REQ_WRITE_COMPRESSED))) {
        return -ENOTSUP;
    }
    iovector_init(&chunk);
    for (int64_t done = 0; done < bytes && ret >= 0; done += max) {
        int64_t len = bytes - done < max ? bytes - done : max;
        iovector_reset(&chunk);
        iovector_concat(&chunk, iov, niov, done, len);
        ret = bs->drv->bdrv_co_pwritev(bs, offset + done, len, chunk.iov, chunk.niov,
                                       drv_flags);
    }
    iovector_destroy(&chunk);
    /* FUA the driver cannot do itself: a flush after the write. */
    if (ret >= 0 && (flags & BDRV_REQ_FUA) && !(drv_flags & BDRV_REQ_FUA)) {
        ret = bdrv_co_flush(bs);
    }
    return ret;
}

/* ---- Read ------------------------------------------------------------------- */

int coroutine_fn bdrv_co_preadv(BdrvChild *child, int64_t offset, int64_t bytes,
                                struct iovec *iov, int niov, int flags)
{
    BlockDriverState *bs = child->bs;
    int64_t align = bs->bl.request_alignment;
    int64_t head = offset % align;
    int64_t end = offset + bytes;
    int64_t aligned_end = (end + align - 1) / align * align;
    int64_t start_ns;
    TrackedRequest req;
    bool track;
    int ret;

    IO_CODE();
    ret = check_request(bs, offset, bytes);
    if (ret < 0 || bytes == 0) {
        if (ret < 0) {
            block_acct_invalid(&bs->stats, BLOCK_ACCT_READ);
        }
        return ret;
    }
    start_ns = clock_now_ns();
    track = request_begin(bs, &req, offset, bytes, false);
    if (head || end != aligned_end || !iov_is_aligned(iov, niov, mem_alignment(bs))) {
        /* Read the covering aligned range into a bounce buffer. */
        int64_t len = aligned_end - (offset - head);
        void *buf = bounce_alloc(bs, len);
        IOVector bv;

        if (!buf) {
            ret = -ENOMEM;
        } else {
            iovector_init_buf(&bv, buf, len);
            ret = driver_preadv(bs, offset - head, len, bv.iov, bv.niov, flags);
            if (ret >= 0) {
                iov_from_buf(iov, niov, 0, (char *)buf + head, bytes);
            }
            free(buf);
        }
    } else {
        ret = driver_preadv(bs, offset, bytes, iov, niov, flags);
    }
    request_end(bs, &req, track);
    block_acct_done(&bs->stats, BLOCK_ACCT_READ, offset, bytes, start_ns, ret);
    return ret < 0 ? ret : 0;
}

/* ---- Write ------------------------------------------------------------------ */

static bool may_write(BdrvChild *child) GRAPH_RDLOCK
{
    return (child->perm & (BLK_PERM_WRITE | BLK_PERM_WRITE_UNCHANGED)) != 0;
}

/* Checks of every request that changes data: permission, then range. */
static int check_write_request(BdrvChild *child, int64_t offset, int64_t bytes)
    GRAPH_RDLOCK
{
    if (!may_write(child) || child->bs->read_only) {
        return -EPERM;
    }
    return check_request(child->bs, offset, bytes);
}

/* An unaligned write: read the partial blocks, merge, write aligned. */
static int coroutine_fn write_rmw(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                  struct iovec *iov, int niov, int flags) GRAPH_RDLOCK
{
    int64_t align = bs->bl.request_alignment;
    int64_t start = offset - offset % align;
    int64_t end = (offset + bytes + align - 1) / align * align;
    int64_t len = end - start;
    char *buf = bounce_alloc(bs, len);
    IOVector bv;
    int ret = 0;

    if (!buf) {
        return -ENOMEM;
    }
    bool need_head = offset != start;
    /* In a single block the head read already fetched the tail. */
    bool need_tail = offset + bytes != end && !(need_head && len == align);

    if (need_head) {
        iovector_init_buf(&bv, buf, align);
        ret = driver_preadv(bs, start, align, bv.iov, bv.niov, 0);
    }
    if (ret >= 0 && need_tail) {
        iovector_init_buf(&bv, buf + len - align, align);
        ret = driver_preadv(bs, end - align, align, bv.iov, bv.niov, 0);
    }
    if (ret >= 0) {
        iov_to_buf(iov, niov, 0, buf + (offset - start), bytes);
        iovector_init_buf(&bv, buf, len);
        ret = driver_pwritev(bs, start, len, bv.iov, bv.niov, flags);
    }
    free(buf);
    return ret;
}

int coroutine_fn bdrv_co_pwritev(BdrvChild *child, int64_t offset, int64_t bytes,
                                 struct iovec *iov, int niov, int flags)
{
    BlockDriverState *bs = child->bs;
    int64_t align = bs->bl.request_alignment;
    bool unaligned = offset % align || (offset + bytes) % align;
    /* A write of zeroes that carries out a write-zeroes is counted there. */
    bool account = !(flags & BDRV_REQ_ZERO_WRITE);
    int64_t start_ns;
    TrackedRequest req;
    bool track;
    int ret;

    IO_CODE();
    ret = check_write_request(child, offset, bytes);
    if (ret < 0 || bytes == 0) {
        if (ret < 0 && account) {
            block_acct_invalid(&bs->stats, BLOCK_ACCT_WRITE);
        }
        return ret;
    }
    /* detect-zeroes: zeroes written as data become a write-zeroes request
     * (not those that are already one: ZERO_WRITE). */
    if (bs->detect_zeroes && !(flags & BDRV_REQ_ZERO_WRITE) &&
        iov_is_zero(iov, niov, 0, bytes)) {
        return bdrv_co_pwrite_zeroes(child, offset, bytes,
            (flags & (BDRV_REQ_FUA | BDRV_REQ_WRITE_UNCHANGED)) |
            (bs->detect_zeroes == BDRV_DETECT_ZEROES_UNMAP ? BDRV_REQ_MAY_UNMAP : 0));
    }
    flags &= ~BDRV_REQ_ZERO_WRITE;
    bdrv_write_threshold_check(bs, offset, bytes);
    start_ns = clock_now_ns();
    track = request_begin(bs, &req, offset, bytes, unaligned);
    if (unaligned) {
        ret = write_rmw(bs, offset, bytes, iov, niov, flags);
    } else if (!iov_is_aligned(iov, niov, mem_alignment(bs))) {
        void *buf = bounce_alloc(bs, bytes);
        IOVector bv;

        if (!buf) {
            ret = -ENOMEM;
        } else {
            iov_to_buf(iov, niov, 0, buf, bytes);
            iovector_init_buf(&bv, buf, bytes);
            ret = driver_pwritev(bs, offset, bytes, bv.iov, bv.niov, flags);
            free(buf);
        }
    } else {
        ret = driver_pwritev(bs, offset, bytes, iov, niov, flags);
    }
    if (!(flags & BDRV_REQ_WRITE_UNCHANGED)) {
        bdrv_set_dirty(bs, offset, bytes);
    }
    request_end(bs, &req, track);
    if (account) {
        block_acct_done(&bs->stats, BLOCK_ACCT_WRITE, offset, bytes, start_ns, ret);
    }
    return ret < 0 ? ret : 0;
}

/* ---- Write zeroes ----------------------------------------------------------- */

/* Write real zeroes, in bounded chunks. */
static int coroutine_fn write_zero_buffer(BdrvChild *child, int64_t offset, int64_t bytes,
                                          int flags) GRAPH_RDLOCK
{
    int64_t chunk = bytes < ZERO_CHUNK ? bytes : ZERO_CHUNK;
    void *buf = bounce_alloc(child->bs, chunk);
    int ret = 0;

    if (!buf) {
        return -ENOMEM;
    }
    memset(buf, 0, chunk);
    for (int64_t done = 0; done < bytes && ret >= 0; done += chunk) {
        int64_t len = bytes - done < chunk ? bytes - done : chunk;
        struct iovec iov = { buf, len };
        ret = bdrv_co_pwritev(child, offset + done, len, &iov, 1,
                              (flags & (BDRV_REQ_FUA | BDRV_REQ_WRITE_UNCHANGED)) |
                              BDRV_REQ_ZERO_WRITE);
    }
    free(buf);
    return ret;
}

/* The aligned middle: the driver's own way, else real zeroes. */
static int coroutine_fn zeroes_aligned(BdrvChild *child, int64_t offset, int64_t bytes,
                                       int flags) GRAPH_RDLOCK
{
    BlockDriverState *bs = child->bs;
    int ret = -ENOTSUP;

    if (bs->drv->bdrv_co_pwrite_zeroes) {
        TrackedRequest req;
        bool track = needs_tracking(bs);

        if (track) {
            bdrv_co_track_begin(bs, &req, offset, bytes, false);
        }
        ret = bs->drv->bdrv_co_pwrite_zeroes(bs, offset, bytes,
                                             flags & bs->drv->supported_zero_flags);
        if (ret >= 0 && (flags & BDRV_REQ_FUA) &&
            !(bs->drv->supported_zero_flags & BDRV_REQ_FUA)) {
            ret = bdrv_co_flush(bs);
        }
        if (track) {
            bdrv_co_track_end(bs, &req);
        }
    }
    if (ret == -ENOTSUP && !(flags & BDRV_REQ_NO_FALLBACK)) {
        ret = write_zero_buffer(child, offset, bytes, flags);
    }
    return ret;
}

/* A part that cannot be done the driver's way: real zeroes, if allowed. */
static int coroutine_fn zeroes_by_writing(BdrvChild *child, int64_t offset, int64_t bytes,
                                          int flags) GRAPH_RDLOCK
{
    if (bytes <= 0) {
        return 0;
    }
    return (flags & BDRV_REQ_NO_FALLBACK) ? -ENOTSUP
                                          : write_zero_buffer(child, offset, bytes, flags);
}

int coroutine_fn bdrv_co_pwrite_zeroes(BdrvChild *child, int64_t offset, int64_t bytes,
                                       int flags)
{
    BlockDriverState *bs = child->bs;
    int64_t align = bs->bl.pwrite_zeroes_alignment ? bs->bl.pwrite_zeroes_alignment
                                                   : bs->bl.request_alignment;
    int64_t start = (offset + align - 1) / align * align;
    int64_t end = (offset + bytes) / align * align;
    int64_t start_ns;
    int ret;

    IO_CODE();
    ret = check_write_request(child, offset, bytes);
    if (ret < 0 || bytes == 0) {
        if (ret < 0) {
            block_acct_invalid(&bs->stats, BLOCK_ACCT_WRITE);
        }
        return ret;
    }
    bdrv_write_threshold_check(bs, offset, bytes);
    start_ns = clock_now_ns();
    bdrv_inc_in_flight(bs);
    if (start >= end) {
        /* No aligned middle: all of it as a write of zeroes. */
        ret = zeroes_by_writing(child, offset, bytes, flags);
    } else {
        /* Unaligned head, the driver's aligned middle, unaligned tail. */
        ret = zeroes_by_writing(child, offset, start - offset, flags);
        if (ret >= 0) {
            ret = zeroes_aligned(child, start, end - start, flags);
        }
        if (ret >= 0) {
            ret = zeroes_by_writing(child, end, offset + bytes - end, flags);
        }
    }
    if (!(flags & BDRV_REQ_WRITE_UNCHANGED)) {
        bdrv_set_dirty(bs, offset, bytes);
    }
    bdrv_dec_in_flight(bs);
    block_acct_done(&bs->stats, BLOCK_ACCT_WRITE, offset, bytes, start_ns, ret);
    return ret < 0 ? ret : 0;
}

/* ---- Discard, flush, status ------------------------------------------------- */

int coroutine_fn bdrv_co_pdiscard(BdrvChild *child, int64_t offset, int64_t bytes)
{
    BlockDriverState *bs = child->bs;
    int64_t align = bs->bl.pdiscard_alignment ? bs->bl.pdiscard_alignment
                                              : bs->bl.request_alignment;
    int64_t start = (offset + align - 1) / align * align;
    int64_t end = (offset + bytes) / align * align;
    int64_t start_ns;
    int ret;

    IO_CODE();
    ret = check_write_request(child, offset, bytes);
    if (ret < 0) {
        block_acct_invalid(&bs->stats, BLOCK_ACCT_UNMAP);
    }
    /* Discard is advisory: what cannot be discarded simply stays.  A node
     * opened without discard=unmap drops it before it changes (or marks)
     * anything, as in QEMU. */
    if (ret < 0 || end <= start || !bs->drv->bdrv_co_pdiscard ||
        !(bs->open_flags & BDRV_O_UNMAP)) {
        return ret;
    }
    start_ns = clock_now_ns();
    bdrv_inc_in_flight(bs);
    ret = bs->drv->bdrv_co_pdiscard(bs, start, end - start);
    bdrv_set_dirty(bs, start, end - start);
    bdrv_dec_in_flight(bs);
    ret = ret == -ENOTSUP ? 0 : ret;
    block_acct_done(&bs->stats, BLOCK_ACCT_UNMAP, start, end - start, start_ns, ret);
    return ret;
}

int coroutine_fn bdrv_co_truncate(BdrvChild *child, int64_t size, Error **errp)
{
    BlockDriverState *bs = child->bs;
    int ret;

    IO_CODE();
    if (size < 0) {
        error_setg(errp, "Image size cannot be negative");
        return -EINVAL;
    }
    /* Far below INT64_MAX: offsets plus lengths must not overflow. */
    if (size > (1LL << 62)) {
        error_setg(errp, "The new size is too large");
        return -EFBIG;
    }
    if (!(child->perm & BLK_PERM_RESIZE)) {
        error_setg(errp, "Resizing '%s' needs the resize permission, which its user "
                   "does not hold", bs->node_name);
        return -EPERM;
    }
    if (bs->read_only) {
        error_setg(errp, "Image is read-only");
        return -EACCES;
    }
    if (!bs->drv->bdrv_co_truncate) {
        error_setg(errp, "Image format driver does not support resize");
        return -ENOTSUP;
    }
    bdrv_inc_in_flight(bs);
    ret = bs->drv->bdrv_co_truncate(bs, size, errp);
    if (ret >= 0) {
        bdrv_dirty_bitmaps_truncate(bs, size);
        list_for_each(n, &bs->parents) {
            BdrvChild *parent = list_entry(n, BdrvChild, next_parent);

            if (parent->klass->resized) {
                parent->klass->resized(parent);
            }
        }
    }
    bdrv_dec_in_flight(bs);
    return ret;
}

int coroutine_fn bdrv_co_flush(BlockDriverState *bs)
{
    int64_t start_ns;
    int ret = 0;

    IO_CODE();
    if (bs->open_flags & BDRV_O_NO_FLUSH) {
        return 0;
    }
    start_ns = clock_now_ns();
    bdrv_inc_in_flight(bs);
    if (bs->drv->bdrv_co_flush) {
        ret = bs->drv->bdrv_co_flush(bs);
    }
    /* Then what lies below (a format's metadata is in its file). */
    if (ret >= 0 && bs->file) {
        ret = bdrv_co_flush(bs->file->bs);
    }
    bdrv_dec_in_flight(bs);
    block_acct_done(&bs->stats, BLOCK_ACCT_FLUSH, 0, 0, start_ns, ret);
    return ret;
}

int coroutine_fn bdrv_co_block_status(BlockDriverState *bs, int64_t offset,
                                      int64_t bytes, int64_t *pnum)
{
    int64_t size = bdrv_getlength(bs);
    int ret;

    IO_CODE();
    *pnum = 0;
    if (offset < 0 || bytes < 0) {
        return -EINVAL;
    }
    if (offset >= size || bytes == 0) {
        return 0;
    }
    if (bytes > size - offset) {
        bytes = size - offset;
    }
    bdrv_inc_in_flight(bs);
    if (bs->drv->bdrv_co_block_status) {
        ret = bs->drv->bdrv_co_block_status(bs, offset, bytes, pnum);
    } else if (bs->drv->is_filter && bs->file) {
        ret = bdrv_co_block_status(bs->file->bs, offset, bytes, pnum);
    } else {
        *pnum = bytes;
        ret = BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED;
    }
    bdrv_dec_in_flight(bs);
    if (ret >= 0 && *pnum <= 0) {
        /* A driver must make progress. */
        *pnum = bytes;
    }
    return ret;
}

/* ---- Snapshot access ------------------------------------------------------- */

int coroutine_fn bdrv_co_preadv_snapshot(BdrvChild *child, int64_t offset, int64_t bytes,
                                         struct iovec *iov, int niov)
{
    BlockDriverState *bs = child->bs;
    int ret;

    IO_CODE();
    if (!bs->drv->bdrv_co_preadv_snapshot) {
        return -ENOTSUP;
    }
    bdrv_inc_in_flight(bs);
    ret = bs->drv->bdrv_co_preadv_snapshot(bs, offset, bytes, iov, niov);
    bdrv_dec_in_flight(bs);
    return ret;
}

int coroutine_fn bdrv_co_snapshot_block_status(BdrvChild *child, int64_t offset,
                                               int64_t bytes, int64_t *pnum)
{
    BlockDriverState *bs = child->bs;
    int ret;

    IO_CODE();
    if (!bs->drv->bdrv_co_snapshot_block_status) {
        return -ENOTSUP;
    }
    bdrv_inc_in_flight(bs);
    ret = bs->drv->bdrv_co_snapshot_block_status(bs, offset, bytes, pnum);
    bdrv_dec_in_flight(bs);
    return ret;
}

int coroutine_fn bdrv_co_pdiscard_snapshot(BdrvChild *child, int64_t offset, int64_t bytes)
{
    BlockDriverState *bs = child->bs;
    int ret;

    IO_CODE();
    if (!bs->drv->bdrv_co_pdiscard_snapshot) {
        return -ENOTSUP;
    }
    bdrv_inc_in_flight(bs);
    ret = bs->drv->bdrv_co_pdiscard_snapshot(bs, offset, bytes);
    bdrv_dec_in_flight(bs);
    return ret;
}
