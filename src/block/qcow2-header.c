/*
 * qcow2-header.c - changes to a running image's header: the backing file
 * it names (stream, commit, change-backing-file) and the switch between
 * read-only and read-write (reopen).
 *
 * The header cluster is rewritten in one write: the fixed header as it
 * is (but the autoclear bits, from the state), the backing format
 * extension first, every other extension kept in its order, the bitmaps
 * extension from the state, the end marker, then the backing file name.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/block-global-state.h"
#include "blockd/block-io.h"
#include "blockd/main-loop.h"
#include "qcow2.h"

typedef struct BackingChange {
    const char *file;            /* NULL: no backing file */
    const char *fmt;             /* NULL: not recorded */
    Error **errp;
} BackingChange;

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | p[1] << 16 | p[2] << 8 | p[3];
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v;
}

/* Append extension @type of @len bytes at *pos; false if it leaves no
 * room for @reserve more bytes in the cluster. */
static bool append_ext(uint8_t *out, int64_t cs, int64_t *pos, int64_t reserve,
                       uint32_t type, const uint8_t *data, uint32_t len)
{
    int64_t need = 8 + qcow2_align_up(len, 8);

    if (*pos + need + reserve > cs) {
        return false;
    }
    put32(out + *pos, type);
    put32(out + *pos + 4, len);
    memcpy(out + *pos + 8, data, len);
    *pos += need;
    return true;
}

/* Build the new header cluster from the current one (@in, @len bytes). */
static int build_header(BDRVQcow2State *s, const uint8_t *in, int64_t len,
                        const BackingChange *c, uint8_t *out)
{
    int64_t cs = s->cluster_size, hlen = s->version >= 3 ? s->header_length : 72;
    int64_t name_len = c->file ? (int64_t)strlen(c->file) : 0, pos = hlen, ipos = hlen;
    int64_t reserve = 8 + name_len;
    uint8_t bitmaps[24];
    uint32_t bitmaps_len = qcow2_bitmaps_ext_build(s, bitmaps);

    memset(out, 0, cs);
    memcpy(out, in, hlen);
    if (s->version >= 3) {
        qcow2_put_be64(out + 88, s->autoclear);
    }
    if (c->fmt && !append_ext(out, cs, &pos, reserve, QCOW2_EXT_BACKING_FMT,
                              (const uint8_t *)c->fmt, strlen(c->fmt))) {
        return -ENOSPC;
    }
    while (ipos + 8 <= len) {
        uint32_t type = get32(in + ipos), elen = get32(in + ipos + 4);

        if (type == QCOW2_EXT_END || elen > len - ipos - 8) {
            break;
        }
        if (type != QCOW2_EXT_BACKING_FMT && type != QCOW2_EXT_BITMAPS &&
            !append_ext(out, cs, &pos, reserve, type, in + ipos + 8, elen)) {
            return -ENOSPC;
        }
        ipos += 8 + qcow2_align_up(elen, 8);
    }
    if (bitmaps_len && !append_ext(out, cs, &pos, reserve, QCOW2_EXT_BITMAPS, bitmaps,
                                   bitmaps_len)) {
        return -ENOSPC;
    }
    pos += 8;                                   /* end marker */
    qcow2_put_be64(out + 8, c->file ? (uint64_t)pos : 0);
    put32(out + 16, name_len);
    if (c->file) {
        memcpy(out + pos, c->file, name_len);
    }
    return 0;
}

/* Read the header cluster, rebuild it for @c, write it and flush. */
static int coroutine_fn rewrite_header(BlockDriverState *bs, BDRVQcow2State *s,
                                       const BackingChange *c) GRAPH_RDLOCK QCOW2_LOCKED
{
    int64_t cs = s->cluster_size, len = s->file_size < cs ? s->file_size : cs;
    uint8_t *in = calloc(1, cs), *out = calloc(1, cs);
    int ret = in && out ? 0 : -ENOMEM;

    if (ret == 0) {
        ret = qcow2_file_pread(bs, 0, len, in);
    }
    if (ret >= 0) {
        ret = build_header(s, in, len, c, out);
    }
    if (ret >= 0) {
        ret = qcow2_file_pwrite(bs, 0, cs, out);
    }
    if (ret >= 0) {
        ret = qcow2_file_flush(bs, s);
    }
    free(in);
    free(out);
    return ret;
}

int coroutine_fn qcow2_write_header(BlockDriverState *bs, BDRVQcow2State *s)
{
    BackingChange c = { s->backing_file, s->backing_fmt, NULL };

    return rewrite_header(bs, s, &c);
}

static int coroutine_fn change_backing_co(BlockDriverState *bs, void *opaque) GRAPH_RDLOCK
{
    BDRVQcow2State *s = bs->opaque;
    BackingChange *c = opaque;
    int ret;

    co_mutex_lock(&s->lock);
    ret = rewrite_header(bs, s, c);
    if (ret == -ENOSPC) {
        error_setg(c->errp, "Backing file name and format do not fit in the qcow2 "
                   "header cluster");
    } else if (ret < 0) {
        error_setg_errno(c->errp, -ret, "Could not update the qcow2 header");
    }
    if (ret >= 0) {
        free(s->backing_file);
        free(s->backing_fmt);
        s->backing_file = c->file ? strdup(c->file) : NULL;
        s->backing_fmt = c->fmt ? strdup(c->fmt) : NULL;
    }
    co_mutex_unlock(&s->lock);
    return ret;
}

int qcow2_change_backing_file(BlockDriverState *bs, const char *backing_file,
                              const char *backing_fmt, Error **errp)
{
    BackingChange c = { backing_file, backing_fmt, errp };
    int ret;

    GLOBAL_STATE_CODE();
    if (bs->read_only) {
        error_setg(errp, "Block node '%s' is read-only", bs->node_name);
        return -EACCES;
    }
    if (backing_file && strlen(backing_file) > QCOW2_MAX_BACKING_NAME) {
        error_setg(errp, "Backing file name too long");
        return -EINVAL;
    }
    ret = bdrv_run_co(bs, change_backing_co, &c);
    return ret < 0 ? ret : 0;
}

/* ---- Reopen ------------------------------------------------------------------------- */

static int coroutine_fn sync_co(BlockDriverState *bs, void *opaque) GRAPH_RDLOCK
{
    BDRVQcow2State *s = bs->opaque;
    int ret;

    (void)opaque;
    co_mutex_lock(&s->lock);
    ret = qcow2_sync_all(bs, s);
    co_mutex_unlock(&s->lock);
    return ret >= 0 ? bdrv_co_flush(bs->file->bs) : ret;
}

static int coroutine_fn writable_co(BlockDriverState *bs, void *opaque) GRAPH_RDLOCK
{
    BDRVQcow2State *s = bs->opaque;

    (void)opaque;
    co_mutex_lock(&s->lock);
    qcow2_check_references_or_warn(bs, s);
    co_mutex_unlock(&s->lock);
    return qcow2_clear_autoclear(bs, s);
}

/*
 * To read-only: everything cached is written first (the node is drained,
 * nothing new arrives).  To read-write, called once the file below takes
 * writes: refused for images marked corrupt or dirty (as at open), the
 * references are checked (as at open), and the autoclear bits of features
 * blockd does not keep up to date go.  Persistent bitmaps follow: stored
 * and read-only, or marked in use and writable.
 */
int qcow2_reopen(BlockDriverState *bs, int flags, Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    int ret;

    GLOBAL_STATE_CODE();
    if (!(flags & BDRV_O_RDWR)) {
        ret = qcow2_bitmaps_reopen(bs, false, errp);
        if (ret < 0) {
            return ret;
        }
        ret = bdrv_run_co(bs, sync_co, NULL);
        if (ret < 0) {
            error_setg_errno(errp, -ret, "Could not write the qcow2 metadata");
            /* Still read-write: the bitmaps are in use (and writable) again. */
            qcow2_bitmaps_reopen(bs, true, NULL);
        }
        return ret < 0 ? ret : 0;
    }
    if (s->incompat & QCOW2_INCOMPAT_CORRUPT) {
        error_setg(errp, "qcow2: Image is corrupt; cannot be opened read/write");
        return -EACCES;
    }
    if (s->incompat & QCOW2_INCOMPAT_DIRTY) {
        error_setg(errp, "qcow2: Image is dirty (its refcounts need a repair); open it "
                   "read-write to repair it before reopening");
        return -EACCES;
    }
    ret = bdrv_run_co(bs, writable_co, NULL);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Could not update the qcow2 header");
        return ret;
    }
    return qcow2_bitmaps_reopen(bs, true, errp) < 0 ? -EINVAL : 0;
}
