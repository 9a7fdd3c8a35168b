/*
 * qcow2-resize.c - growing and shrinking a qcow2 image (block_resize).
 *
 * The caller drains the node (block_resize does), so no request runs
 * while the geometry changes; the metadata lock is held as well, because
 * the cache cleaner and flushes may still run.
 *
 * Crash safety: a larger L1 table is written to newly allocated clusters,
 * made stable with their refcounts, and only then does the header point
 * at it; the old table is freed after that.  The virtual size in the
 * header changes last.  A crash at any point leaves a consistent image
 * (at most the new table's clusters leaked).  Shrinking first frees the
 * clusters beyond the new end (tables written before the frees, as for a
 * discard), then the header gets the smaller size; the file keeps its
 * length (the space is reused).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/atomic.h"
#include "blockd/block-io.h"
#include "blockd/main-loop.h"
#include "blockd/dirty-bitmap.h"
#include "qcow2.h"

/* L1 entries needed to map @size bytes (@size within qcow2_max_size()). */
static int64_t l1_entries_for(BDRVQcow2State *s, int64_t size)
{
    int64_t per_entry = s->cluster_size << s->l2_bits;
    return size / per_entry + (size % per_entry != 0);
}

/* The largest virtual size open accepts for this geometry. */
static int64_t qcow2_max_size(BDRVQcow2State *s)
{
    int64_t max = (int64_t)(QCOW2_MAX_L1_BYTES / 8) << (s->l2_bits + s->cluster_bits);
    return max < (1LL << 61) ? max : (1LL << 61);
}

static int coroutine_fn grow_l1(BlockDriverState *bs, BDRVQcow2State *s, int64_t need)
    GRAPH_RDLOCK QCOW2_LOCKED
{
    int64_t bytes = qcow2_align_up(need * 8, s->cluster_size);
    int64_t old_off = s->l1_offset, old_bytes, off;
    uint8_t hdr[12];
    uint64_t *l1;
    char *buf;
    int ret;

    if (need <= s->l1_size) {
        return 0;
    }
    if (need * 8 > QCOW2_MAX_L1_BYTES ||
        (bytes >> s->cluster_bits) > qcow2_max_alloc_clusters(s)) {
        return -EFBIG;           /* more than one allocation can give */
    }
    /* The entries in memory go to the new table: make them, and the
     * tables they point to, stable first. */
    ret = qcow2_sync_metadata(bs, s);
    if (ret < 0) {
        return ret;
    }
    off = qcow2_alloc_clusters(bs, s, bytes >> s->cluster_bits, NULL);
    if (off < 0) {
        return off;
    }
    buf = calloc(1, bytes);
    l1 = realloc(s->l1, need * 8);
    if (!buf || !l1) {
        abort();
    }
    s->l1 = l1;
    memset(s->l1 + s->l1_size, 0, (need - s->l1_size) * 8);
    for (int64_t i = 0; i < need; i++) {
        qcow2_put_be64(buf + i * 8, s->l1[i]);
    }
    ret = qcow2_file_pwrite(bs, off, bytes, buf);
    free(buf);
    if (ret >= 0) {
        ret = qcow2_refcounts_stable(bs);
    }
    if (ret >= 0) {
        ret = qcow2_file_flush(bs, s);
    }
    if (ret < 0) {
        return ret;               /* the header still names the old table */
    }
    hdr[0] = need >> 24; hdr[1] = need >> 16; hdr[2] = need >> 8; hdr[3] = need;
    qcow2_put_be64(hdr + 4, (uint64_t)off);
    ret = qcow2_file_pwrite(bs, 36, sizeof(hdr), hdr);           /* l1_size, l1_table_offset */
    if (ret >= 0) {
        ret = qcow2_file_flush(bs, s);
    }
    if (ret < 0) {
        /* The disk may name either table now: nothing more is written. */
        s->broken = true;
        return ret;
    }
    old_bytes = qcow2_align_up((int64_t)s->l1_size * 8, s->cluster_size);
    s->l1_offset = off;
    s->l1_size = need;
    if (old_off && old_bytes) {
        qcow2_defer_free(s, old_off, old_bytes, QCOW2_DISCARD_OTHER);
    }
    return 0;
}

int coroutine_fn qcow2_co_truncate(BlockDriverState *bs, int64_t size, Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    uint8_t be[8];
    int ret;

    IO_CODE();
    if (size % 512) {
        error_setg(errp, "The new size must be a multiple of 512");
        return -EINVAL;
    }
    if (size < s->size && s->nb_snapshots) {
        error_setg(errp, "Can't shrink an image which has snapshots");
        return -ENOTSUP;
    }
    if (s->nb_snapshots && s->version < 3) {
        error_setg(errp, "Can't resize a v2 image which has snapshots");
        return -ENOTSUP;
    }
    if (size == s->size) {
        return 0;
    }
    /* Persistent bitmaps are stored at the new size: all must be in hand. */
    if (s->nb_bitmaps && !bdrv_dirty_bitmaps_check_resize(bs, errp)) {
        return -ENOTSUP;
    }
    if (size > qcow2_max_size(s)) {
        error_setg(errp, "qcow2: the new size is too large for this image's cluster size");
        return -EFBIG;
    }
    /* Growing over a longer backing file would show its data in the new
     * area, where QEMU writes zeroes first. */
    if (size > s->size && bs->backing && bdrv_getlength(bs->backing->bs) > s->size) {
        error_setg(errp, "qcow2: growing an image over a longer backing file is not "
                   "supported by blockd yet");
        return -ENOTSUP;
    }
    if (size < s->size) {
        int64_t start = qcow2_align_up(size, s->cluster_size);
        ret = start < s->size ? qcow2_discard_beyond(bs, s, start, s->size - start) : 0;
        if (ret < 0) {
            error_setg_errno(errp, -ret, "Failed to shrink the qcow2 image");
            return ret;
        }
    }
    co_mutex_lock(&s->lock);
    if (s->broken) {
        ret = -EIO;
    } else if (size < s->size) {
        qcow2_drop_l2_tables(s, (uint32_t)l1_entries_for(s, size));
        ret = qcow2_sync_metadata(bs, s);
    } else {
        ret = grow_l1(bs, s, l1_entries_for(s, size));
    }
    if (ret >= 0) {
        qcow2_put_be64(be, (uint64_t)size);
        ret = qcow2_file_pwrite(bs, 24, sizeof(be), be);           /* the virtual size */
        if (ret >= 0) {
            ret = qcow2_file_flush(bs, s);
        }
        if (ret < 0) {
            s->broken = true;       /* either size may be on disk */
        }
    }
    if (ret >= 0) {
        int64_t old_size = s->size;

        s->size = size;
        atomic_set(&bs->total_bytes, size);
        /* A data file follows the disk; a raw one has the new area mapped
         * onto it as at creation. */
        if (s->data_file) {
            ret = bdrv_co_truncate(s->data_file, size, errp);
            /* (Not an encrypted one: mapped zeroes would read as noise.) */
            if (ret >= 0 && s->data_file_raw && !s->cipher && size > old_size) {
                ret = qcow2_preallocate_metadata(bs, s, qcow2_align_up(old_size,
                                                                       s->cluster_size));
            }
            if (ret < 0 && errp && !*errp) {
                error_setg_errno(errp, -ret, "Failed to resize the data file");
            }
            co_mutex_unlock(&s->lock);
            return ret;
        }
    }
    co_mutex_unlock(&s->lock);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Failed to resize the qcow2 image");
    }
    return ret;
}
