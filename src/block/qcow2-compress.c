/*
 * qcow2-compress.c - writing compressed clusters (BDRV_REQ_WRITE_COMPRESSED:
 * a backup with "compress", later the compress filter).
 *
 * Each guest cluster is compressed on its own (in the image's compression
 * type, qcow2-codec.c) and, if that saves anything, stored as a compressed
 * cluster: a byte range that may share a host cluster with others.  The
 * host cluster then counts one reference per compressed cluster in it.
 * Data never straddles two host clusters.  A cluster that does not shrink
 * is written the ordinary way.  As in QEMU, a compressed write never
 * replaces what a cluster holds (-EIO): it is meant for fresh targets.
 *
 * Crash safety as for any allocation: the data is written before the L2
 * entry points at it, and the refcount is raised before either.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/block-io.h"
#include "blockd/iov.h"
#include "blockd/main-loop.h"
#include "qcow2.h"

void qcow2_compress_forget_cluster(BDRVQcow2State *s)
{
    s->compress_next = 0;
}

/* Room for @len bytes: the tail of the current shared cluster if it has
 * room and its refcount can grow, else a new cluster. */
static int64_t coroutine_fn alloc_bytes(BlockDriverState *bs, BDRVQcow2State *s, int64_t len)
    GRAPH_RDLOCK QCOW2_LOCKED
{
    int64_t cs = s->cluster_size, off = s->compress_next;
    uint64_t rc = 0;
    int ret;

    if (off && (off & (cs - 1)) + len <= cs &&
        qcow2_get_refcount(bs, s, off >> s->cluster_bits, &rc) >= 0 &&
        rc > 0 && rc < s->refcount_max) {
        ret = qcow2_update_refcount(bs, s, off & ~(cs - 1), cs, 1);
        if (ret < 0) {
            return ret;
        }
    } else {
        off = qcow2_alloc_clusters(bs, s, 1, NULL);
        if (off < 0) {
            return off;
        }
    }
    s->compress_next = ((off + len) & (cs - 1)) ? off + len : 0;
    return off;
}

/* One guest cluster, @buf (a whole cluster, zero-padded at the image end). */
static int coroutine_fn write_one(BlockDriverState *bs, BDRVQcow2State *s, int64_t offset,
                                  int64_t bytes, void *buf, void *out) GRAPH_RDLOCK
{
    int64_t cs = s->cluster_size, len = qcow2_compress_buf(s->compression_type, buf, cs, out, cs - 1), host;
    uint64_t desc;
    struct iovec v = { buf, (size_t)bytes };
    int ret;

    if (!len) {
        return qcow2_co_pwritev(bs, offset, bytes, &v, 1, 0);
    }
    co_mutex_lock(&s->lock);
    host = qcow2_refuse_writes(bs, s) ? -EIO : alloc_bytes(bs, s, len);
    co_mutex_unlock(&s->lock);
    if (host < 0) {
        return (int)host;
    }
    ret = qcow2_file_pwrite(bs, host, len, out);
    desc = (uint64_t)host |
           (uint64_t)(((host + len - 1) >> 9) - (host >> 9)) << s->csize_shift;
    co_mutex_lock(&s->lock);
    if (ret >= 0) {
        s->data_unsynced = true;
        ret = qcow2_install_compressed(bs, s, offset >> s->cluster_bits, desc);
    }
    if (ret < 0) {
        /* Nothing points at the bytes: give their reference back. */
        qcow2_update_refcount(bs, s, host & ~(cs - 1), cs, -1);
        if (s->compress_next && (s->compress_next & ~(cs - 1)) == (host & ~(cs - 1))) {
            s->compress_next = 0;
        }
    }
    co_mutex_unlock(&s->lock);
    return ret;
}

int coroutine_fn qcow2_co_pwritev_compressed(BlockDriverState *bs, int64_t offset,
                                             int64_t bytes, struct iovec *iov, int niov)
{
    BDRVQcow2State *s = bs->opaque;
    int64_t cs = s->cluster_size;
    uint8_t *buf, *out;
    int ret = 0;

    IO_CODE();
    if (qcow2_has_data_file(s) || s->cipher) {
        /* Data file clusters sit at their guest offset; encryption works on
         * whole host sectors, as QEMU's does not compress either. */
        return -ENOTSUP;
    }
    if ((offset & (cs - 1)) || ((bytes & (cs - 1)) && offset + bytes != s->size)) {
        return -EINVAL;          /* whole clusters only */
    }
    buf = malloc(cs);
    out = malloc(cs);
    if (!buf || !out) {
        ret = -ENOMEM;
    }
    for (int64_t done = 0; ret >= 0 && done < bytes; done += cs) {
        int64_t n = bytes - done < cs ? bytes - done : cs;

        memset(buf + n, 0, cs - n);
        iov_to_buf(iov, niov, done, buf, n);
        ret = write_one(bs, s, offset + done, n, buf, out);
    }
    free(buf);
    free(out);
    return ret;
}
