/*
 * qcow2-common.c - what the qcow2 files share: reads, writes, growth and
 * flushes of the image file, the check that a range holds no metadata,
 * and reports of corruption (BLOCK_IMAGE_CORRUPTED).  qcow2.c holds the
 * driver's entry points.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/aio-wait.h"
#include "blockd/atomic.h"
#include "blockd/block-global-state.h"
#include "blockd/block-io.h"
#include "blockd/log.h"
#include "blockd/main-loop.h"
#include "qcow2.h"

#define FILE_GROW_STEP (1024 * 1024)

/* ---- I/O helpers ---------------------------------------------------------------- */

int coroutine_fn qcow2_file_pread(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                  void *buf)
{
    struct iovec iov = { buf, bytes };
    int64_t flen = bdrv_getlength(bs->file->bs);

    if (offset < 0 || bytes < 0 || offset > flen || bytes > flen - offset) {
        return -EIO;             /* past the end of the file: a corrupt pointer */
    }
    return bdrv_co_preadv(bs->file, offset, bytes, &iov, 1, 0);
}

int coroutine_fn qcow2_file_pwrite(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                   const void *buf)
{
    struct iovec iov = { (void *)buf, bytes };
    return bdrv_co_pwritev(bs->file, offset, bytes, &iov, 1, 0);
}

int coroutine_fn qcow2_grow_file(BlockDriverState *bs, BDRVQcow2State *s, int64_t end)
{
    int64_t step = s->cluster_size > FILE_GROW_STEP ? s->cluster_size : FILE_GROW_STEP;
    int64_t size;
    int ret;

    if (end <= s->file_size) {
        return 0;
    }
    /* Grow in steps (an eighth of the file, 1 MiB to 128 MiB): one truncate
     * per allocated cluster would be slow.  The tail stays a sparse hole. */
    if (s->file_size / 8 > step) {
        step = s->file_size / 8 < (128 << 20) ? s->file_size / 8 : (128 << 20);
        step = qcow2_align_up(step, s->cluster_size);
    }
    size = qcow2_align_up(end, s->cluster_size);
    size = qcow2_align_up(size, step);
    ret = bdrv_co_truncate(bs->file, size, NULL);
    if (ret < 0) {
        return ret;
    }
    s->file_size = size;
    return 0;
}

int coroutine_fn qcow2_file_flush(BlockDriverState *bs, BDRVQcow2State *s)
{
    /* Guest data in a data file must be stable before the tables that
     * point at it, as data in the file itself is by this flush. */
    int ret = s->data_file && s->data_unsynced ? bdrv_co_flush(s->data_file->bs) : 0;

    if (ret >= 0) {
        ret = bdrv_co_flush(bs->file->bs);
    }
    if (ret >= 0) {
        s->data_unsynced = false;
    } else {
        /* After a failed flush the kernel may have dropped what it could not
         * write and call the next flush a success: nothing written since
         * the last good one can be trusted, so no more writes. */
        s->broken = true;
    }
    return ret;
}

/* @with_container: the LUKS container counts as metadata too. */
static bool overlaps(BDRVQcow2State *s, int64_t offset, int64_t bytes, bool with_container)
    QCOW2_LOCKED
{
    int64_t ranges[][2] = {
        { 0, s->cluster_size },
        { s->l1_offset, (int64_t)s->l1_size * 8 },
        { s->reftable_offset, (int64_t)s->reftable_size * 8 },
        { s->crypto_offset, with_container ? s->crypto_length : 0 },
    };

    int64_t first = offset >> s->cluster_bits;

    for (unsigned i = 0; i < ARRAY_SIZE(ranges); i++) {
        if (ranges[i][1] && offset < ranges[i][0] + ranges[i][1] &&
            ranges[i][0] < offset + bytes) {
            return true;
        }
    }
    return bytes > 0 &&
           qcow2_metaset_find(&s->meta, first,
                              ((offset + bytes - 1) >> s->cluster_bits) - first + 1) >= 0;
}

bool qcow2_overlaps_metadata(BDRVQcow2State *s, int64_t offset, int64_t bytes)
{
    return overlaps(s, offset, bytes, true);
}

bool qcow2_container_overlaps_tables(BDRVQcow2State *s)
{
    return s->crypto_length && overlaps(s, s->crypto_offset, s->crypto_length, false);
}

int qcow2_meta_reserve(BDRVQcow2State *s, int64_t n)
{
    return qcow2_metaset_reserve(&s->meta, n);
}

int qcow2_meta_add(BDRVQcow2State *s, int64_t offset)
{
    return qcow2_metaset_add(&s->meta, offset >> s->cluster_bits);
}

void qcow2_meta_remove(BDRVQcow2State *s, int64_t offset)
{
    qcow2_metaset_remove(&s->meta, offset >> s->cluster_bits);
}

void qcow2_report_corruption(BDRVQcow2State *s, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    json_object *data;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    /* The request that met the corruption fails; from now on the image is
     * read-only (writes could hand out storage a bad table already names)
     * and marked corrupt on disk at the first write refused. */
    if (atomic_xchg(&s->corrupt, 1)) {
        return;                         /* reported once */
    }
    error_report("qcow2 image '%s' is corrupt: %s", s->image_filename, msg);
    data = json_object_new_object();
    json_object_object_add(data, "device", json_object_new_string(""));
    json_object_object_add(data, "node-name", json_object_new_string(s->node_name));
    json_object_object_add(data, "msg", json_object_new_string(msg));
    json_object_object_add(data, "fatal", json_object_new_boolean(true));
    bdrv_emit_event("BLOCK_IMAGE_CORRUPTED", data);
}

bool coroutine_fn qcow2_refuse_writes(BlockDriverState *bs, BDRVQcow2State *s)
{
    uint8_t bits[8];

    if (s->broken) {
        return true;
    }
    if (!atomic_read(&s->corrupt)) {
        return false;
    }
    if (!s->corrupt_marked && s->version >= 3) {
        s->corrupt_marked = true;
        for (int i = 0; i < 8; i++) {
            bits[i] = (uint8_t)((s->incompat | QCOW2_INCOMPAT_CORRUPT) >> (56 - 8 * i));
        }
        /* Best effort: the refusal stands whatever this write does. */
        if (qcow2_file_pwrite(bs, 72, 8, bits) >= 0) {
            qcow2_file_flush(bs, s);
        }
    }
    return true;
}
