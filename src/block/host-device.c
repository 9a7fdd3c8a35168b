/*
 * host-device.c - the "host_device" protocol driver: a block device (or a
 * character device) used whole.  Reads, writes, flushes, locking and the
 * engines are the file driver's (file-posix.h); what differs is here:
 * discard is BLKDISCARD, write-zeroes BLKZEROOUT or fallocate on the
 * device, block status is always "data", and the size is the device's
 * (a resize only catches up with a device that grew or shrank itself).
 */
#include <errno.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <fcntl.h>

#include "blockd/atomic.h"
#include "blockd/block-io.h"
#include "blockd/thread-pool.h"
#include "block-internal.h"
#include "file-posix.h"

typedef enum DevOpKind { DEV_DISCARD, DEV_ZEROOUT, DEV_ZERO_RANGE, DEV_PUNCH } DevOpKind;

typedef struct DevOp {
    int fd;
    DevOpKind kind;
    uint64_t range[2];          /* offset, length */
} DevOp;

static int do_dev_op(void *opaque)
{
    DevOp *op = opaque;
    int ret;

    switch (op->kind) {
    case DEV_DISCARD:
        ret = ioctl(op->fd, BLKDISCARD, op->range);
        break;
    case DEV_ZEROOUT:
        ret = ioctl(op->fd, BLKZEROOUT, op->range);
        break;
    case DEV_ZERO_RANGE:
        /* The kernel keeps the blocks allocated (no unmap). */
        ret = fallocate(op->fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
                        (off_t)op->range[0], (off_t)op->range[1]);
        break;
    default:
        /* Zeroes the device can produce without writing them, or fails. */
        ret = fallocate(op->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                        (off_t)op->range[0], (off_t)op->range[1]);
        break;
    }
    return ret < 0 ? -errno : 0;
}

static int coroutine_fn dev_op(FileState *s, DevOpKind kind, int64_t offset, int64_t bytes)
{
    DevOp op = { s->fd, kind, { (uint64_t)offset, (uint64_t)bytes } };
    int ret = thread_pool_submit_co(do_dev_op, &op);

    /* Not supported by this device: let the caller fall back. */
    return ret == -EOPNOTSUPP || ret == -EINVAL || ret == -ENOTTY || ret == -ENODEV
           ? -ENOTSUP : ret;
}

static int hdev_open(BlockDriverState *bs, json_object *options, int flags, Error **errp)
{
    return file_posix_open(bs, options, flags, true, errp);
}

static int coroutine_fn hdev_co_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes)
    GRAPH_RDLOCK
{
    FileState *s = bs->opaque;
    int ret;

    if (!s->discard_unmap) {
        return -ENOTSUP;
    }
    ret = dev_op(s, DEV_DISCARD, offset, bytes);
    file_count_discard(s, ret, bytes);
    return ret;
}

static int coroutine_fn hdev_co_pwrite_zeroes(BlockDriverState *bs, int64_t offset,
                                              int64_t bytes, int flags) GRAPH_RDLOCK
{
    FileState *s = bs->opaque;
    bool unmap = (flags & BDRV_REQ_MAY_UNMAP) && s->discard_unmap;

    if (flags & BDRV_REQ_NO_FALLBACK) {
        /* Only what needs no writing of zeroes, which an unmap gives. */
        return unmap ? dev_op(s, DEV_PUNCH, offset, bytes) : -ENOTSUP;
    }
    return dev_op(s, unmap ? DEV_ZEROOUT : DEV_ZERO_RANGE, offset, bytes);
}

static int coroutine_fn hdev_co_block_status(BlockDriverState *bs, int64_t offset,
                                             int64_t bytes, int64_t *pnum) GRAPH_RDLOCK
{
    (void)bs;
    (void)offset;
    *pnum = bytes;
    return BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED;
}

/* A device cannot be resized from here; the node can only catch up with
 * the size the device has now (after losetup -c, lvextend ...). */
static int coroutine_fn hdev_co_truncate(BlockDriverState *bs, int64_t size, Error **errp)
    GRAPH_RDLOCK
{
    FileState *s = bs->opaque;
    off_t cur = lseek(s->fd, 0, SEEK_END);

    if (cur < 0) {
        error_setg_errno(errp, errno, "Could not get the size of '%s'", s->filename);
        return -errno;
    }
    if (size > cur) {
        error_setg(errp, "Cannot grow device files");
        return -EINVAL;
    }
    if (size < cur) {
        error_setg(errp, "Cannot resize device files");
        return -ENOTSUP;
    }
    atomic_set(&bs->total_bytes, size);
    return 0;
}

const BlockDriver bdrv_host_device = {
    FILE_POSIX_COMMON_OPS,
    .format_name = "host_device",
    .bdrv_open = hdev_open,
    .bdrv_co_pdiscard = hdev_co_pdiscard,
    .bdrv_co_pwrite_zeroes = hdev_co_pwrite_zeroes,
    .bdrv_co_block_status = hdev_co_block_status,
    .bdrv_co_truncate = hdev_co_truncate,
    .supported_zero_flags = BDRV_REQ_MAY_UNMAP | BDRV_REQ_NO_FALLBACK,
};
