/*
 * qcow2-refcount.c - host cluster accounting: the refcount table and its
 * refcount blocks (entries of 1 to 64 bits), allocation of free clusters,
 * frees deferred until the metadata that dropped the reference is stable,
 * and growth of the refcount table.
 *
 * Half: I/O.  Every function runs with the metadata lock held.
 *
 * Ordering: a refcount increase reaches the disk before any table that
 * references the cluster (the L2 cache's dependency, and explicit flushes
 * around new refcount blocks and tables); a decrease is applied only after
 * the reference is gone on disk (qcow2_defer_free).  So a crash can leak
 * clusters but never leave a reference to a cluster with refcount 0.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/block-io.h"
#include "blockd/main-loop.h"
#include "qcow2.h"

/* ---- Entries of any width --------------------------------------------------- */

static uint64_t rb_get(BDRVQcow2State *s, const void *block, int64_t i)
{
    const uint8_t *b = block;

    switch (s->refcount_order) {
    case 3:
        return b[i];
    case 4:
        return (uint64_t)b[2 * i] << 8 | b[2 * i + 1];
    case 5:
        return __builtin_bswap32(((const uint32_t *)block)[i]);
    case 6:
        return qcow2_be64((const uint64_t *)block + i);
    default: {
        /* Sub-byte widths: bit 0 is the least significant bit of the byte. */
        int per_byte = 8 >> s->refcount_order;
        int shift = (int)(i % per_byte) << s->refcount_order;
        return (b[i / per_byte] >> shift) & s->refcount_max;
    }
    }
}

void qcow2_rb_set(int order, void *block, int64_t i, uint64_t v)
{
    uint8_t *b = block;

    switch (order) {
    case 3:
        b[i] = v;
        break;
    case 4:
        b[2 * i] = v >> 8;
        b[2 * i + 1] = v;
        break;
    case 5:
        ((uint32_t *)block)[i] = __builtin_bswap32((uint32_t)v);
        break;
    case 6:
        qcow2_put_be64((uint64_t *)block + i, v);
        break;
    default: {
        /* Sub-byte widths: bit 0 is the least significant bit of the byte. */
        int per_byte = 8 >> order;
        int shift = (int)(i % per_byte) << order;
        uint8_t mask = (1u << (1 << order)) - 1;
        b[i / per_byte] = (b[i / per_byte] & ~(mask << shift)) | ((v & mask) << shift);
        break;
    }
    }
}

static void rb_set(BDRVQcow2State *s, void *block, int64_t i, uint64_t v)
{
    qcow2_rb_set(s->refcount_order, block, i, v);
}

/* ---- Open ---------------------------------------------------------------------- */

int coroutine_fn qcow2_refcount_init(BlockDriverState *bs, BDRVQcow2State *s, Error **errp)
{
    int64_t bytes = (int64_t)s->reftable_size * 8;
    int ret;

    s->reftable = malloc(bytes ? bytes : 8);
    if (!s->reftable) {
        error_setg(errp, "Could not allocate the refcount table");
        return -ENOMEM;
    }
    ret = qcow2_file_pread(bs, s->reftable_offset, bytes, s->reftable);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Could not read the refcount table");
        return ret;
    }
    for (uint32_t i = 0; i < s->reftable_size; i++) {
        uint64_t e = __builtin_bswap64(s->reftable[i]);
        s->reftable[i] = e;
        if (e & QCOW2_REFT_RESERVED) {
            error_setg(errp, "qcow2: refcount table entry %u is invalid (offset 0x%llx "
                       "unaligned or reserved bits set)", i, (unsigned long long)e);
            return -EINVAL;
        }
        if (e && ((int64_t)e & (s->cluster_size - 1))) {
            error_setg(errp, "qcow2: refcount block %u at 0x%llx is not aligned to a "
                       "cluster", i, (unsigned long long)e);
            return -EINVAL;
        }
        if (e && (int64_t)e < s->cluster_size) {
            error_setg(errp, "qcow2: refcount block %u overlaps the image header", i);
            return -EINVAL;
        }
        if (e && (int64_t)e >= s->file_size) {
            error_setg(errp, "qcow2: refcount block %u at 0x%llx is beyond the end of the "
                       "image file", i, (unsigned long long)e);
            return -EINVAL;
        }
        /* (The set is still empty: this compares with the fixed tables.) */
        if (e && qcow2_overlaps_metadata(s, e, s->cluster_size)) {
            error_setg(errp, "qcow2: refcount block %u at 0x%llx overlaps other metadata",
                       i, (unsigned long long)e);
            return -EINVAL;
        }
    }
    for (uint32_t i = 0; i < s->reftable_size; i++) {
        if (s->reftable[i] && qcow2_meta_add(s, s->reftable[i]) < 0) {
            error_setg(errp, "Could not allocate the metadata cluster set");
            return -ENOMEM;
        }
    }
    s->alloc_end = qcow2_align_up(s->file_size, s->cluster_size) >> s->cluster_bits;
    s->zero_start = s->alloc_end << s->cluster_bits;
    s->free_hint = 1;
    return 0;
}

/* ---- Lookup and update ------------------------------------------------------------ */

int coroutine_fn qcow2_get_refcount(BlockDriverState *bs, BDRVQcow2State *s,
                                    int64_t cluster, uint64_t *refcount)
{
    int64_t rt = cluster >> s->rb_bits;
    void *block;
    int ret;

    *refcount = 0;
    if (rt >= s->reftable_size || !s->reftable[rt]) {
        return 0;
    }
    ret = qcow2_cache_get(bs, s->rb_cache, s->reftable[rt], &block);
    if (ret < 0) {
        return ret;
    }
    *refcount = rb_get(s, block, cluster & ((1LL << s->rb_bits) - 1));
    qcow2_cache_put(s->rb_cache, block);
    return 0;
}

int coroutine_fn qcow2_first_free_of(BlockDriverState *bs, BDRVQcow2State *s,
                                     const uint64_t *set, int64_t n, int64_t *cluster)
{
    int64_t per_block = 1LL << s->rb_bits;

    /* One refcount block at a time: each is looked up once. */
    for (int64_t base = 0; base < n; base += per_block) {
        int64_t rt = base >> s->rb_bits, end = base + per_block < n ? base + per_block : n;
        void *block = NULL;
        int ret;

        for (int64_t i = base; i < end; i++) {
            if (!(set[i / 64] >> (i % 64) & 1)) {
                if (!set[i / 64] && i % 64 == 0) {
                    i += 63;                    /* a whole empty word */
                }
                continue;
            }
            if (rt >= s->reftable_size || !s->reftable[rt]) {
                *cluster = i;                   /* no block: refcount 0 */
                return 1;
            }
            if (!block && (ret = qcow2_cache_get(bs, s->rb_cache, s->reftable[rt], &block)) < 0) {
                return ret;
            }
            if (rb_get(s, block, i - base) == 0) {
                qcow2_cache_put(s->rb_cache, block);
                *cluster = i;
                return 1;
            }
        }
        if (block) {
            qcow2_cache_put(s->rb_cache, block);
        }
    }
    return 0;
}

static int coroutine_fn update_one(BlockDriverState *bs, BDRVQcow2State *s,
                                   int64_t cluster, int delta) GRAPH_RDLOCK QCOW2_LOCKED
{
    int64_t rt = cluster >> s->rb_bits, i = cluster & ((1LL << s->rb_bits) - 1);
    uint64_t old, new;
    void *block;
    int ret;

    if (rt >= s->reftable_size || !s->reftable[rt]) {
        /* Increases always go through qcow2_alloc_clusters(), which creates
         * the block first; a decrease here means a reference to a cluster
         * that was never counted. */
        qcow2_report_corruption(s, "reference to cluster 0x%llx without a refcount block",
                                (unsigned long long)(cluster << s->cluster_bits));
        return -EIO;
    }
    ret = qcow2_cache_get(bs, s->rb_cache, s->reftable[rt], &block);
    if (ret < 0) {
        return ret;
    }
    old = rb_get(s, block, i);
    if (delta > 0 && s->refcount_max - old < (uint64_t)delta) {
        /* A full count (a snapshot of a narrow-refcount image): refused,
         * nothing is wrong with the image. */
        qcow2_cache_put(s->rb_cache, block);
        return -ERANGE;
    }
    if (delta < 0 && old < (uint64_t)-delta) {
        qcow2_cache_put(s->rb_cache, block);
        qcow2_report_corruption(s, "refcount of cluster 0x%llx would leave its range "
                                "(%llu %+d)", (unsigned long long)(cluster << s->cluster_bits),
                                (unsigned long long)old, delta);
        return -EIO;
    }
    new = old + delta;
    rb_set(s, block, i, new);
    qcow2_cache_mark_dirty(s->rb_cache, block);
    qcow2_cache_put(s->rb_cache, block);
    if (new == 0) {
        /* The cluster may have held a table: its cached copy is stale now. */
        qcow2_cache_forget(s->l2_cache, cluster << s->cluster_bits);
        if (cluster < s->free_hint) {
            s->free_hint = cluster;
        }
    }
    return 0;
}

int coroutine_fn qcow2_update_refcount(BlockDriverState *bs, BDRVQcow2State *s,
                                       int64_t offset, int64_t bytes, int delta)
{
    int64_t first = offset >> s->cluster_bits;
    int64_t last = (offset + bytes - 1) >> s->cluster_bits;

    for (int64_t c = first; bytes > 0 && c <= last; c++) {
        int ret = update_one(bs, s, c, delta);
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

/* [offset, offset+bytes) was handed out (and may be freed and handed out
 * again): the known-zero region starts after it. */
static void note_used(BDRVQcow2State *s, int64_t offset, int64_t bytes) QCOW2_LOCKED
{
    if (offset + bytes > s->zero_start) {
        s->zero_start = offset + bytes;
    }
}

/* ---- Refcount table growth ---------------------------------------------------- */

static bool rt_missing(BDRVQcow2State *s, int64_t rt) QCOW2_LOCKED
{
    return rt >= s->reftable_size || !s->reftable[rt];
}

/* The first cluster at or after @start from which @n clusters are free and
 * beyond everything allocated so far. */
static int coroutine_fn free_area_at_end(BlockDriverState *bs, BDRVQcow2State *s,
                                         int64_t n, int64_t *start) GRAPH_RDLOCK QCOW2_LOCKED
{
    /* Not the file size: the file grows ahead of allocation (qcow2_grow_file). */
    int64_t c = s->alloc_end;

    for (int64_t i = 0; i < n; i++) {
        uint64_t rc;
        int ret = qcow2_get_refcount(bs, s, c + i, &rc);
        if (ret < 0) {
            return ret;
        }
        if (rc) {
            c += i + 1;
            i = -1;
        }
    }
    *start = c;
    return 0;
}

/* Where a bigger refcount table goes: @n clusters at cluster @t, followed
 * by the @k new refcount blocks that the area [t, t + n + k) needs. */
typedef struct RefTableArea {
    int64_t t, n, k;
} RefTableArea;

static int coroutine_fn plan_reftable(BlockDriverState *bs, BDRVQcow2State *s,
                                      int64_t min_entries, RefTableArea *a)
    GRAPH_RDLOCK QCOW2_LOCKED
{
    int64_t epc = s->cluster_size / 8, old = s->reftable_size;
    int64_t need = min_entries > 2 * old ? min_entries : 2 * old;

    a->n = (need + epc - 1) / epc;
    a->k = 0;
    /* The area's own refcount blocks need table entries, and may need a
     * bigger area: iterate to a fixed point. */
    for (int iter = 0;; iter++) {
        int64_t last, k = 0, needed;
        int ret = free_area_at_end(bs, s, a->n + a->k, &a->t);
        if (ret < 0) {
            return ret;
        }
        last = a->t + a->n + a->k - 1;
        for (int64_t rt = a->t >> s->rb_bits; rt <= last >> s->rb_bits; rt++) {
            k += rt_missing(s, rt);
        }
        needed = (last >> s->rb_bits) + 1 > need ? (last >> s->rb_bits) + 1 : need;
        if (k == a->k && (needed + epc - 1) / epc == a->n) {
            return 0;
        }
        a->k = k;
        a->n = (needed + epc - 1) / epc;
        if (iter > 64 || a->n * s->cluster_size > QCOW2_MAX_REFTABLE_BYTES) {
            return -EFBIG;
        }
    }
}

/*
 * Count the area in the refcount blocks: new ones (written after the new
 * table and entered into @table, big-endian) where the range had none,
 * the existing ones (through the cache) elsewhere.
 */
static int coroutine_fn count_area(BlockDriverState *bs, BDRVQcow2State *s,
                                   const RefTableArea *a, uint64_t *table)
    GRAPH_RDLOCK QCOW2_LOCKED
{
    int64_t t = a->t, last = a->t + a->n + a->k - 1, j = 0;
    void *block = NULL;
    int ret = 0;

    if (posix_memalign(&block, 4096, s->cluster_size)) {
        return -ENOMEM;
    }
    for (int64_t rt = t >> s->rb_bits; ret >= 0 && rt <= last >> s->rb_bits; rt++) {
        int64_t lo = rt << s->rb_bits, hi = lo + (1LL << s->rb_bits) - 1;
        int64_t from = lo > t ? lo : t, to = hi < last ? hi : last;
        int64_t where = (t + a->n + j) << s->cluster_bits;

        if (!rt_missing(s, rt)) {
            ret = qcow2_update_refcount(bs, s, from << s->cluster_bits,
                                        (to - from + 1) << s->cluster_bits, 1);
            continue;
        }
        memset(block, 0, s->cluster_size);
        for (int64_t c = from; c <= to; c++) {
            rb_set(s, block, c - lo, 1);
        }
        qcow2_put_be64(&table[rt], (uint64_t)where);
        ret = qcow2_file_pwrite(bs, where, s->cluster_size, block);
        j++;
    }
    free(block);
    return ret;
}

/* Make the new table stable, then point the header at it (one write). */
static int coroutine_fn write_reftable(BlockDriverState *bs, BDRVQcow2State *s,
                                       const RefTableArea *a, const uint64_t *table)
    GRAPH_RDLOCK QCOW2_LOCKED
{
    uint8_t hdr[12];
    int ret = qcow2_file_pwrite(bs, a->t << s->cluster_bits, a->n * s->cluster_size, table);

    if (ret >= 0) {
        ret = qcow2_cache_writeback(bs, s->rb_cache, NULL);
    }
    if (ret >= 0) {
        ret = qcow2_file_flush(bs, s);
    }
    if (ret >= 0) {
        qcow2_put_be64(hdr, (uint64_t)a->t << s->cluster_bits);
        hdr[8] = a->n >> 24; hdr[9] = a->n >> 16; hdr[10] = a->n >> 8; hdr[11] = a->n;
        ret = qcow2_file_pwrite(bs, 48, 12, hdr);
    }
    if (ret >= 0) {
        ret = qcow2_file_flush(bs, s);
    }
    return ret;
}

/* The refcount blocks count_area() created (live now) join the metadata
 * set; room for them was reserved. */
static void enter_new_blocks(BDRVQcow2State *s, const RefTableArea *a, const uint64_t *table)
    QCOW2_LOCKED
{
    int64_t last = a->t + a->n + a->k - 1;

    for (int64_t rt = a->t >> s->rb_bits; rt <= last >> s->rb_bits; rt++) {
        if (rt_missing(s, rt) && table[rt]) {
            qcow2_meta_add(s, table[rt]);
        }
    }
}

/*
 * Move the refcount table to a bigger one with at least @min_entries,
 * placed after the end of the image together with the refcount blocks its
 * own clusters need.  The header switches to it in one write once it is
 * stable; the old table is freed afterwards.  A crash before the switch
 * leaks the new area, nothing more.
 */
static int coroutine_fn grow_reftable(BlockDriverState *bs, BDRVQcow2State *s,
                                      int64_t min_entries) GRAPH_RDLOCK QCOW2_LOCKED
{
    int64_t epc = s->cluster_size / 8;
    int64_t old_off = s->reftable_offset, old_size = s->reftable_size;
    RefTableArea a;
    uint64_t *table;
    int ret = plan_reftable(bs, s, min_entries, &a);

    if (ret < 0) {
        return ret;
    }
    table = calloc(a.n, s->cluster_size);
    if (!table) {
        return -ENOMEM;
    }
    for (int64_t i = 0; i < old_size; i++) {
        qcow2_put_be64(&table[i], s->reftable[i]);
    }
    ret = qcow2_grow_file(bs, s, (a.t + a.n + a.k) << s->cluster_bits);
    if (ret >= 0) {
        ret = qcow2_meta_reserve(s, a.k);
    }
    if (ret >= 0) {
        ret = count_area(bs, s, &a, table);
    }
    if (ret >= 0) {
        ret = write_reftable(bs, s, &a, table);
    }
    if (ret < 0) {
        free(table);
        return ret;
    }
    for (int64_t i = 0; i < a.n * epc; i++) {
        table[i] = __builtin_bswap64(table[i]);
    }
    enter_new_blocks(s, &a, table);
    free(s->reftable);
    s->reftable = table;
    s->reftable_offset = a.t << s->cluster_bits;
    s->reftable_size = a.n * epc;
    if (a.t + a.n + a.k > s->alloc_end) {
        s->alloc_end = a.t + a.n + a.k;
    }
    note_used(s, a.t << s->cluster_bits, (a.n + a.k) << s->cluster_bits);
    /* Nothing points to the old table any more. */
    return qcow2_update_refcount(bs, s, old_off, old_size * 8, -1);
}

/*
 * Create the refcount block for refcount table index @rt.  All clusters it
 * covers are free (nothing counted them), so it goes into the first of
 * them and counts itself.  It is stable before the table points to it.
 */
static int coroutine_fn new_refblock(BlockDriverState *bs, BDRVQcow2State *s, int64_t rt)
    GRAPH_RDLOCK QCOW2_LOCKED
{
    int64_t c = rt << s->rb_bits, off = c << s->cluster_bits;
    uint64_t be;
    void *block;
    int ret;

    if (qcow2_overlaps_metadata(s, off, s->cluster_size)) {
        qcow2_report_corruption(s, "clusters at 0x%llx hold metadata but are not counted",
                                (unsigned long long)off);
        return -EIO;
    }
    if (rt >= s->reftable_size) {
        ret = grow_reftable(bs, s, rt + 1);
        if (ret < 0 || s->reftable[rt]) {
            return ret;    /* the growth may have created this block already */
        }
    }
    ret = qcow2_grow_file(bs, s, off + s->cluster_size);
    if (ret >= 0) {
        ret = qcow2_meta_reserve(s, 1);
    }
    if (ret < 0) {
        return ret;
    }
    ret = qcow2_cache_get_empty(bs, s->rb_cache, off, &block);
    if (ret < 0) {
        return ret;
    }
    rb_set(s, block, 0, 1);
    ret = qcow2_file_pwrite(bs, off, s->cluster_size, block);
    qcow2_cache_put(s->rb_cache, block);
    if (ret >= 0) {
        ret = qcow2_file_flush(bs, s);
    }
    if (ret < 0) {
        qcow2_cache_forget(s->rb_cache, off);
        return ret;
    }
    be = __builtin_bswap64((uint64_t)off);
    ret = qcow2_file_pwrite(bs, s->reftable_offset + rt * 8, 8, &be);
    if (ret < 0) {
        qcow2_cache_forget(s->rb_cache, off);
        return ret;
    }
    s->reftable[rt] = off;
    qcow2_meta_add(s, off);      /* cannot fail: reserved */
    note_used(s, off, s->cluster_size);
    if (c + 1 > s->alloc_end) {
        s->alloc_end = c + 1;
    }
    return 0;
}

/* ---- Allocation ----------------------------------------------------------------- */

/* The first run of @n free clusters at or after the hint. */
static int coroutine_fn find_free(BlockDriverState *bs, BDRVQcow2State *s, int64_t n,
                                  int64_t *start) GRAPH_RDLOCK QCOW2_LOCKED
{
    int64_t c = s->free_hint > 0 ? s->free_hint : 1, first_free = -1;

    for (int64_t i = 0; i < n; i++) {
        uint64_t rc;
        int ret;

        ret = qcow2_get_refcount(bs, s, c + i, &rc);
        if (ret < 0) {
            return ret;
        }
        if (rc == 0 && first_free < 0) {
            first_free = c + i;
        }
        if (rc) {
            c += i + 1;
            i = -1;
        }
    }
    /* Every cluster below first_free is in use. */
    s->free_hint = first_free >= 0 ? first_free : c;
    *start = c;
    return 0;
}

int64_t coroutine_fn qcow2_alloc_clusters(BlockDriverState *bs, BDRVQcow2State *s, int64_t n,
                                          bool *fresh)
{
    int64_t c;
    int ret;

    assert(n >= 1 && n <= qcow2_max_alloc_clusters(s));
retry:
    ret = find_free(bs, s, n, &c);
    if (ret < 0) {
        return ret;
    }
    if (((c + n) << s->cluster_bits) > (1LL << 56)) {
        return -EFBIG;           /* L2 entries cannot point beyond 64 PB */
    }
    for (int64_t rt = c >> s->rb_bits; rt <= (c + n - 1) >> s->rb_bits; rt++) {
        if (rt_missing(s, rt)) {
            ret = new_refblock(bs, s, rt);
            if (ret < 0) {
                return ret;
            }
            goto retry;          /* the block took a cluster, maybe ours */
        }
    }
    if (qcow2_overlaps_metadata(s, c << s->cluster_bits, n << s->cluster_bits)) {
        qcow2_report_corruption(s, "clusters at 0x%llx hold metadata but are not counted",
                                (unsigned long long)(c << s->cluster_bits));
        return -EIO;
    }
    ret = qcow2_grow_file(bs, s, (c + n) << s->cluster_bits);
    if (ret >= 0) {
        ret = qcow2_update_refcount(bs, s, c << s->cluster_bits, n << s->cluster_bits, 1);
    }
    if (ret < 0) {
        return ret;
    }
    if (c + n > s->alloc_end) {
        s->alloc_end = c + n;
    }
    if (s->free_hint == c) {
        s->free_hint = c + n;
    }
    if (fresh) {
        *fresh = (c << s->cluster_bits) >= s->zero_start;
    }
    note_used(s, c << s->cluster_bits, n << s->cluster_bits);
    return c << s->cluster_bits;
}

/* ---- Deferred frees ------------------------------------------------------------- */

void qcow2_defer_free(BDRVQcow2State *s, int64_t offset, int64_t bytes,
                      Qcow2DiscardType type)
{
    if (s->npending == s->pending_cap) {
        s->pending_cap = s->pending_cap ? s->pending_cap * 2 : 64;
        s->pending = realloc(s->pending, s->pending_cap * sizeof(*s->pending));
        if (!s->pending) {
            abort();
        }
    }
    s->pending[s->npending++] = (Qcow2PendingFree){ offset, bytes, type };
}

/*
 * pass-discard-*: give the clusters of [offset, +bytes) that are free now
 * back to the file system.  Each on its own: a compressed range shares its
 * first and last clusters with its neighbours, which may still be in use.
 */
static int coroutine_fn discard_freed(BlockDriverState *bs, BDRVQcow2State *s, int64_t offset,
                                      int64_t bytes) GRAPH_RDLOCK QCOW2_LOCKED
{
    int64_t last = (offset + bytes - 1) >> s->cluster_bits;

    for (int64_t c = offset >> s->cluster_bits; c <= last; c++) {
        uint64_t rc;
        int ret = qcow2_get_refcount(bs, s, c, &rc);

        if (ret < 0) {
            return ret;
        }
        if (rc == 0) {
            bdrv_co_pdiscard(bs->file, c << s->cluster_bits, s->cluster_size);
        }
    }
    return 0;
}

int coroutine_fn qcow2_apply_deferred_frees(BlockDriverState *bs, BDRVQcow2State *s)
{
    int ret = 0;

    /* A shared compressed cluster may lose its last reference here. */
    qcow2_compress_forget_cluster(s);
    for (int i = 0; i < s->npending && ret >= 0; i++) {
        Qcow2PendingFree *f = &s->pending[i];

        ret = qcow2_update_refcount(bs, s, f->offset, f->bytes, -1);
        if (ret >= 0 && s->pass_discard[f->type]) {
            ret = discard_freed(bs, s, f->offset, f->bytes);
        }
    }
    /* On error the remaining ones stay allocated: leaked, not corrupt. */
    s->npending = 0;
    return ret;
}

int coroutine_fn qcow2_refcounts_stable(BlockDriverState *bs) TSA_NO_TSA
{
    /* Only called by the L2 cache, whose users hold s->lock. */
    BDRVQcow2State *s = bs->opaque;
    bool wrote = false;
    int ret;

    assert(co_mutex_held(&s->lock));
    ret = qcow2_cache_writeback(bs, s->rb_cache, &wrote);
    if (ret >= 0 && (wrote || s->data_unsynced)) {
        ret = qcow2_file_flush(bs, s);
    }
    return ret;
}
