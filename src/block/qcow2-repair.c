/*
 * qcow2-repair.c - rebuilding the refcounts of an image whose dirty bit is
 * set (QEMU crashed while it used lazy refcounts), before it is written;
 * and checking, when an image opens read-write, that nothing it references
 * is free space the allocator could hand out again.
 *
 * Half: global state, in the opening coroutine (nothing else can see the
 * node yet).
 *
 * Every reference in the image is counted (header, L1 and L2 tables of the
 * active layer and of every snapshot, data and compressed clusters, the
 * snapshot table); a new refcount table and new refcount blocks describing
 * those counts are written after the end of the image; the header switches
 * to them in one write once they are stable, and only then is the dirty
 * bit cleared.  A crash at any point leaves either the old state (still
 * dirty: repaired again next time) or the repaired one.  The old refcount
 * structures are not referenced any more: they become free space.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/block-io.h"
#include "blockd/log.h"
#include "qcow2.h"

typedef struct Counts {
    uint32_t *rc;                /* references per host cluster (repair) */
    uint64_t *seen;              /* or only: referenced at all (check) */
    int64_t n;                   /* clusters covered */
    Error **errp;
    BDRVQcow2State *s;
} Counts;

static int count(BDRVQcow2State *s, Counts *c, int64_t offset, int64_t bytes, const char *what)
{
    int64_t first = offset >> s->cluster_bits, last = (offset + bytes - 1) >> s->cluster_bits;

    if (offset < 0 || bytes <= 0 || last >= c->n) {
        error_setg(c->errp, "%s at 0x%llx is beyond the end of the file", what,
                   (unsigned long long)offset);
        return -EINVAL;
    }
    for (int64_t i = first; i <= last; i++) {
        if (c->seen) {
            c->seen[i / 64] |= 1ULL << (i % 64);
        } else if (++c->rc[i] == 0) {
            error_setg(c->errp, "too many references");
            return -EINVAL;
        }
    }
    return 0;
}

/* One L2 table's data clusters. */
static int count_l2(BDRVQcow2State *s, Counts *c, const uint64_t *l2)
{
    for (int64_t i = 0; i < s->l2_entries; i++) {
        uint64_t e = qcow2_be64(&l2[i * s->l2_entry_words]);
        int ret = 0;

        if (e & QCOW2_OFLAG_COMPRESSED) {
            uint64_t desc = e & s->coffset_mask;
            int64_t off = desc & ((1ULL << s->csize_shift) - 1);
            int64_t nsect = ((desc >> s->csize_shift) & s->csize_mask) + 1;
            int64_t bytes = nsect * 512, limit = c->n << s->cluster_bits;
            /* The last sector may be cut short by the end of the file. */
            if ((off & ~511LL) < limit && (off & ~511LL) + bytes > limit) {
                bytes = limit - (off & ~511LL);
            }
            ret = count(s, c, off & ~511LL, bytes, "compressed cluster");
        } else if (e & QCOW2_OFFSET_MASK) {
            if ((e & QCOW2_OFFSET_MASK) & (s->cluster_size - 1)) {
                error_setg(c->errp, "unaligned L2 entry 0x%016llx", (unsigned long long)e);
                return -EINVAL;
            }
            ret = count(s, c, e & QCOW2_OFFSET_MASK, s->cluster_size, "data cluster");
        }
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

/* An L1 table (active or a snapshot's), its L2 tables and their clusters. */
static int coroutine_fn count_l1(BlockDriverState *bs, BDRVQcow2State *s, Counts *c,
                                 int64_t l1_off, uint32_t l1_size) GRAPH_RDLOCK
{
    uint64_t *l1 = malloc(l1_size ? l1_size * 8 : 8), *l2 = malloc(s->cluster_size);
    int ret = l1_size ? count(s, c, l1_off, l1_size * 8, "L1 table") : 0;

    if (!l1 || !l2) {
        ret = -ENOMEM;
    }
    if (ret >= 0 && l1_size) {
        ret = qcow2_file_pread(bs, l1_off, l1_size * 8, l1);
    }
    for (uint32_t i = 0; ret >= 0 && i < l1_size; i++) {
        int64_t off = qcow2_be64(&l1[i]) & QCOW2_OFFSET_MASK;
        if (!off) {
            continue;
        }
        ret = count(s, c, off, s->cluster_size, "L2 table");
        /* A data file's clusters are not in this file's refcounts. */
        if (ret >= 0 && !qcow2_has_data_file(s)) {
            ret = qcow2_file_pread(bs, off, s->cluster_size, l2);
            if (ret >= 0) {
                ret = count_l2(s, c, l2);
            }
        }
    }
    free(l1);
    free(l2);
    return ret;
}

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | p[1] << 16 | p[2] << 8 | p[3];
}

/* The snapshot table and, through each snapshot's L1 table, what it uses. */
static int coroutine_fn count_snapshots(BlockDriverState *bs, BDRVQcow2State *s, Counts *c)
    GRAPH_RDLOCK
{
    int64_t pos = s->snapshots_offset;
    int ret = 0;

    for (uint32_t i = 0; i < s->nb_snapshots && ret >= 0; i++) {
        uint8_t h[40];
        int64_t len;

        ret = qcow2_file_pread(bs, pos, 40, h);
        if (ret < 0) {
            break;
        }
        len = qcow2_align_up(40 + (int64_t)rd32(h + 36) + (h[12] << 8 | h[13]) +
                             (h[14] << 8 | h[15]), 8);
        ret = count_l1(bs, s, c, qcow2_be64(h), rd32(h + 8));
        pos += len;
    }
    if (ret >= 0 && s->nb_snapshots) {
        ret = count(s, c, s->snapshots_offset, pos - s->snapshots_offset, "snapshot table");
    }
    return ret;
}

/*
 * Where the new refcount structures go: after the last used cluster,
 * @nrb refcount blocks then @nrt table clusters, enough to cover
 * themselves.
 */
static void place(BDRVQcow2State *s, Counts *c, int64_t *start, int64_t *nrb, int64_t *nrt)
{
    int64_t end = c->n, rb_entries = 1LL << s->rb_bits, epc = s->cluster_size / 8;

    while (end > 1 && !c->rc[end - 1]) {
        end--;
    }
    *start = end;
    *nrb = 1;
    *nrt = 1;
    for (;;) {
        int64_t total = end + *nrb + *nrt;
        int64_t rb = (total + rb_entries - 1) / rb_entries, rt = (rb + epc - 1) / epc;
        if (rb == *nrb && rt == *nrt) {
            return;
        }
        *nrb = rb;
        *nrt = rt;
    }
}

/* Write the new structures, switch the header to them, clear the dirty bit.
 * (No lock: the node is still being opened, nobody else sees it.) */
static int coroutine_fn write_refcounts(BlockDriverState *bs, BDRVQcow2State *s, Counts *c,
                                        int64_t start, int64_t nrb, int64_t nrt)
    GRAPH_RDLOCK TSA_NO_TSA
{
    int64_t cs = s->cluster_size, rb_entries = 1LL << s->rb_bits;
    uint8_t *buf = calloc(nrb + nrt, cs), hdr[12];
    uint8_t incompat[8];
    int ret;

    if (!buf) {
        return -ENOMEM;
    }
    for (int64_t i = 0; i < c->n; i++) {
        if (c->rc[i]) {
            qcow2_rb_set(s->refcount_order, buf + (i / rb_entries) * cs, i % rb_entries,
                         c->rc[i]);
        }
    }
    for (int64_t r = 0; r < nrb; r++) {
        qcow2_put_be64(buf + nrb * cs + r * 8, (uint64_t)(start + r) * cs);
    }
    ret = bdrv_co_truncate(bs->file, (start + nrb + nrt) * cs, NULL);
    if (ret >= 0) {
        ret = qcow2_file_pwrite(bs, start * cs, (nrb + nrt) * cs, buf);
    }
    if (ret >= 0) {
        ret = bdrv_co_flush(bs->file->bs);
    }
    if (ret >= 0) {
        qcow2_put_be64(hdr, (uint64_t)(start + nrb) * cs);
        hdr[8] = nrt >> 24; hdr[9] = nrt >> 16; hdr[10] = nrt >> 8; hdr[11] = nrt;
        ret = qcow2_file_pwrite(bs, 48, 12, hdr);
    }
    if (ret >= 0) {
        ret = bdrv_co_flush(bs->file->bs);
    }
    if (ret >= 0) {
        s->incompat &= ~QCOW2_INCOMPAT_DIRTY;
        qcow2_put_be64(incompat, s->incompat);
        ret = qcow2_file_pwrite(bs, 72, 8, incompat);
    }
    if (ret >= 0) {
        ret = bdrv_co_flush(bs->file->bs);
    }
    free(buf);
    if (ret >= 0) {
        s->reftable_offset = (start + nrb) * cs;
        s->reftable_size = nrt * (cs / 8);
        s->file_size = (start + nrb + nrt) * cs;
    }
    return ret;
}

static int count_range(void *opaque, int64_t offset, int64_t bytes, const char *what)
{
    Counts *c = opaque;

    return count(c->s, c, offset, bytes, what);
}

/* Every reference in the image: the header, the LUKS container, the
 * active tables, the snapshots', the persistent bitmaps'. */
static int coroutine_fn count_all(BlockDriverState *bs, BDRVQcow2State *s, Counts *c)
    GRAPH_RDLOCK QCOW2_LOCKED
{
    int ret = count(s, c, 0, s->cluster_size, "header");

    if (ret >= 0 && s->crypt_method == QCOW2_CRYPT_LUKS && s->crypto_length) {
        ret = count(s, c, s->crypto_offset, s->crypto_length, "LUKS container");
    }

    if (ret >= 0) {
        ret = count_l1(bs, s, c, s->l1_offset, s->l1_size);
    }
    if (ret >= 0) {
        ret = count_snapshots(bs, s, c);
    }
    if (ret >= 0) {
        c->s = s;
        ret = qcow2_bitmaps_visit(bs, s, count_range, c, c->rc ? c->errp : NULL);
    }
    return ret;
}

int coroutine_fn qcow2_repair_refcounts(BlockDriverState *bs, BDRVQcow2State *s, Error **errp)
    TSA_NO_TSA
{
    Counts c = { .errp = errp };
    int64_t start, nrb, nrt;
    int ret;

    c.n = qcow2_align_up(s->file_size, s->cluster_size) >> s->cluster_bits;
    /* Room for the new structures after the end (grown below if needed). */
    c.rc = calloc(c.n + 1, sizeof(*c.rc));
    if (!c.rc) {
        error_setg(errp, "qcow2: not enough memory to repair the refcounts");
        return -ENOMEM;
    }
    ret = count_all(bs, s, &c);
    if (ret < 0) {
        error_prepend(errp, "qcow2: cannot repair the image: ");
    }
    for (int64_t i = 0; ret >= 0 && i < c.n; i++) {
        if (c.rc[i] > s->refcount_max) {
            error_setg(errp, "qcow2: cannot repair the image: cluster 0x%llx has %u "
                       "references, more than %d-bit refcounts can hold",
                       (unsigned long long)(i << s->cluster_bits), c.rc[i], s->refcount_bits);
            ret = -EINVAL;
        }
    }
    if (ret >= 0) {
        place(s, &c, &start, &nrb, &nrt);
        uint32_t *rc = realloc(c.rc, (start + nrb + nrt) * sizeof(*rc));
        if (!rc) {
            ret = -ENOMEM;
        } else {
            c.rc = rc;
            for (int64_t i = c.n; i < start + nrb + nrt; i++) {
                rc[i] = 0;
            }
            for (int64_t i = start; i < start + nrb + nrt; i++) {
                rc[i] = 1;
            }
            c.n = start + nrb + nrt;
            ret = write_refcounts(bs, s, &c, start, nrb, nrt);
            if (ret < 0) {
                error_setg_errno(errp, -ret, "qcow2: could not write the repaired refcounts");
            }
        }
    }
    free(c.rc);
    return ret;
}

int coroutine_fn qcow2_check_references(BlockDriverState *bs, BDRVQcow2State *s)
{
    Error *err = NULL;
    Counts c = { .errp = &err };
    int64_t cluster = 0;
    int ret;

    c.n = qcow2_align_up(s->file_size, s->cluster_size) >> s->cluster_bits;
    c.seen = calloc((c.n + 63) / 64 + 1, sizeof(*c.seen));
    if (!c.seen) {
        return -ENOMEM;
    }
    ret = count_all(bs, s, &c);
    /* The refcount structures too: a free refcount block would be handed
     * out while it still counts. */
    if (ret >= 0) {
        ret = count(s, &c, s->reftable_offset, s->reftable_size * 8, "refcount table");
    }
    for (int64_t i = 0; ret >= 0 && i < s->reftable_size; i++) {
        if (s->reftable[i]) {
            ret = count(s, &c, s->reftable[i], s->cluster_size, "refcount block");
        }
    }
    if (ret == -EINVAL) {
        qcow2_report_corruption(s, "%s", error_get_pretty(err));
        error_free(err);
        ret = 0;
    } else if (ret >= 0 && (ret = qcow2_first_free_of(bs, s, c.seen, c.n, &cluster)) > 0) {
        qcow2_report_corruption(s, "cluster 0x%llx is in use but its refcount is 0",
                                (unsigned long long)(cluster << s->cluster_bits));
    }
    if (ret < 0) {
        error_free(err);
    }
    free(c.seen);
    return ret < 0 ? ret : 0;
}

void coroutine_fn qcow2_check_references_or_warn(BlockDriverState *bs, BDRVQcow2State *s)
{
    int ret = qcow2_check_references(bs, s);

    /* A table that cannot be read fails the requests that need it, as in
     * QEMU; the rest of the image stays usable. */
    if (ret < 0) {
        warn_report("qcow2 image '%s': could not check its references: %s",
                    s->image_filename, strerror(-ret));
    }
}
