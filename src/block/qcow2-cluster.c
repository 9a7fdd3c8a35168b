/*
 * qcow2-cluster.c - guest-to-host mapping: L1 and L2 tables (standard and
 * extended entries), reads (backing fall-through, zero, compressed and
 * subclusters), allocating writes with copy-on-write, write-zeroes,
 * discard, block status and the ordered metadata write-back.
 *
 * Half: I/O.  Metadata is looked up and changed under s->lock; guest data
 * moves without it.  A write that allocates registers the guest clusters
 * it allocates (s->inflight) so that concurrent writes, write-zeroes and
 * discards of the same clusters wait for it instead of allocating twice.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/atomic.h"
#include "blockd/block-io.h"
#include "blockd/iov.h"
#include "blockd/main-loop.h"
#include "blockd/thread.h"
#include "qcow2.h"

/* ---- Entries --------------------------------------------------------------------- */

/* A corrupt entry is reported and read as an I/O error; the image is
 * then marked corrupt (qcow2_report_corruption). */
static int check_entry(BDRVQcow2State *s, L2Entry l, int64_t guest) QCOW2_LOCKED
{
    uint64_t alloc = l.bitmap & QCOW2_SC_ALL_ALLOC, zero = l.bitmap >> 32;
    const char *why = NULL;

    if (is_compressed(l)) {
        if (s->ext_l2 && l.bitmap) {
            why = "compressed cluster with a subcluster bitmap";
        } else if (qcow2_has_data_file(s)) {
            why = "compressed cluster in an image with an external data file";
        }
    } else if (l.e & QCOW2_L2E_RESERVED) {
        why = "reserved bits set";
    } else if (l.e & (s->cluster_size - 1) & ~(uint64_t)0x1ff) {
        why = "host offset not aligned to a cluster";
    } else if (qcow2_has_data_file(s)) {
        /* New clusters go to their guest offset (as in QEMU); data-file-raw
         * requires every cluster to be there. */
        if (s->data_file_raw && has_host(s, l) &&
            host_of(l) != (guest & ~(s->cluster_size - 1))) {
            why = "data file cluster not at its guest offset (data-file-raw)";
        }
    } else if (host_of(l) && host_of(l) < s->cluster_size) {
        why = "host offset inside the image header";
    } else if (host_of(l) && (host_of(l) >= s->file_size ||
                              (host_of(l) >> s->cluster_bits) >= s->alloc_end)) {
        /* Storage the allocator would hand out next: never use it. */
        why = "host cluster beyond the end of the file";
    } else if (!host_of(l) && (l.e & QCOW2_OFLAG_COPIED)) {
        why = "host offset 0 without an external data file";
    }
    if (!why && s->ext_l2 && (alloc & zero)) {
        why = "subclusters both allocated and zero";
    } else if (!why && s->ext_l2 && alloc && !has_host(s, l)) {
        why = "allocated subclusters without a host cluster";
    }
    if (why) {
        qcow2_report_corruption(s, "L2 entry 0x%016llx for guest offset 0x%llx: %s",
                                (unsigned long long)l.e, (unsigned long long)guest, why);
        return -EIO;
    }
    return 0;
}

/*
 * What byte @off of a cluster with entry @l maps to, and how many bytes
 * from there (up to the end of the cluster) map the same way.
 */
static Qcow2Kind classify(BDRVQcow2State *s, L2Entry l, int64_t off, uint64_t *host,
                          int64_t *len)
{
    *len = s->cluster_size - off;
    *host = 0;
    if (is_compressed(l)) {
        *host = l.e & s->coffset_mask;
        return QCOW2_COMPRESSED;
    }
    if (!s->ext_l2) {
        if (l.e & QCOW2_OFLAG_ZERO) {
            return QCOW2_ZERO;
        }
        if (!has_host(s, l)) {
            return QCOW2_UNALLOC;
        }
        *host = host_of(l) + off;
        return QCOW2_NORMAL;
    }
    /* Subclusters: extend over neighbours in the same state. */
    int sc = off >> s->sc_bits, end = sc + 1;
    int state = (l.bitmap >> sc) & 1 ? 1 : (l.bitmap >> (32 + sc)) & 1 ? 2 : 0;
    while (end < QCOW2_SUBCLUSTERS) {
        int st = (l.bitmap >> end) & 1 ? 1 : (l.bitmap >> (32 + end)) & 1 ? 2 : 0;
        if (st != state) {
            break;
        }
        end++;
    }
    *len = ((int64_t)end << s->sc_bits) - off;
    if (state == 1) {
        *host = host_of(l) + off;
        return QCOW2_NORMAL;
    }
    return state == 2 ? QCOW2_ZERO : QCOW2_UNALLOC;
}

/* ---- L1 and L2 tables --------------------------------------------------------- */

int coroutine_fn qcow2_l1_check(BlockDriverState *bs, BDRVQcow2State *s, Error **errp)
{
    int64_t bytes = (int64_t)s->l1_size * 8;
    int ret;

    s->l1 = calloc(s->l1_size ? s->l1_size : 1, 8);
    if (!s->l1) {
        error_setg(errp, "Could not allocate the L1 table");
        return -ENOMEM;
    }
    ret = bytes ? qcow2_file_pread(bs, s->l1_offset, bytes, s->l1) : 0;
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Could not read the L1 table");
        return ret;
    }
    for (uint32_t i = 0; i < s->l1_size; i++) {
        uint64_t e = __builtin_bswap64(s->l1[i]), off = e & QCOW2_OFFSET_MASK;
        s->l1[i] = e;
        if (e & QCOW2_L1E_RESERVED) {
            error_setg(errp, "qcow2: L1 entry %u (0x%016llx) has reserved bits set", i,
                       (unsigned long long)e);
            return -EINVAL;
        }
        if (off & (s->cluster_size - 1)) {
            error_setg(errp, "qcow2: L2 table offset 0x%llx in L1 entry %u is not aligned "
                       "to a cluster", (unsigned long long)off, i);
            return -EINVAL;
        }
        if (off && ((int64_t)off < s->cluster_size ||
                    qcow2_overlaps_metadata(s, off, s->cluster_size))) {
            error_setg(errp, "qcow2: L2 table at 0x%llx (L1 entry %u) overlaps other "
                       "metadata", (unsigned long long)off, i);
            return -EINVAL;
        }
        if ((int64_t)off >= s->file_size) {
            error_setg(errp, "qcow2: L2 table at 0x%llx (L1 entry %u) is beyond the end of "
                       "the image file", (unsigned long long)off, i);
            return -EINVAL;
        }
    }
    /* After the checks: an L2 table named twice is not "overlapping". */
    for (uint32_t i = 0; i < s->l1_size; i++) {
        uint64_t off = s->l1[i] & QCOW2_OFFSET_MASK;
        if (off && qcow2_meta_add(s, off) < 0) {
            error_setg(errp, "Could not allocate the metadata cluster set");
            return -ENOMEM;
        }
    }
    return 0;
}

static void maybe_clean_caches(BDRVQcow2State *s) QCOW2_LOCKED
{
    int64_t now;

    if (!s->cache_clean_ns) {
        return;
    }
    now = clock_now_ns();
    if (now - s->last_clean_ns >= s->cache_clean_ns) {
        qcow2_cache_clean(s->l2_cache, s->cache_clean_ns);
        qcow2_cache_clean(s->rb_cache, s->cache_clean_ns);
        s->last_clean_ns = now;
    }
}

/* The L2 table for L1 index @l1i, or *table = NULL if there is none. */
static int coroutine_fn get_l2(BlockDriverState *bs, BDRVQcow2State *s, int64_t l1i,
                               void **table) GRAPH_RDLOCK QCOW2_LOCKED
{
    uint64_t off = s->l1[l1i] & QCOW2_OFFSET_MASK;

    *table = NULL;
    if (!off) {
        return 0;
    }
    return qcow2_cache_get(bs, s->l2_cache, off, table);
}

/*
 * The L2 table for @l1i, made writable: allocated if absent, copied if it
 * is shared with a snapshot (L1 entry without COPIED and refcount > 1).
 * The new L1 entry is written back at the next metadata sync.
 */
static int coroutine_fn get_l2_for_write(BlockDriverState *bs, BDRVQcow2State *s, int64_t l1i,
                                         void **table) GRAPH_RDLOCK QCOW2_LOCKED
{
    uint64_t l1e = s->l1[l1i], off = l1e & QCOW2_OFFSET_MASK, rc = 0;
    int64_t new;
    void *old;
    int ret;

    if (off && (l1e & QCOW2_OFLAG_COPIED)) {
        return qcow2_cache_get(bs, s->l2_cache, off, table);
    }
    if (off) {
        ret = qcow2_get_refcount(bs, s, off >> s->cluster_bits, &rc);
        if (ret < 0) {
            return ret;
        }
        if (rc == 1) {
            s->l1[l1i] = l1e | QCOW2_OFLAG_COPIED;
            l1_mark_dirty(s, l1i);
            return qcow2_cache_get(bs, s->l2_cache, off, table);
        }
    }
    ret = qcow2_meta_reserve(s, 1);
    if (ret < 0) {
        return ret;
    }
    new = qcow2_alloc_clusters(bs, s, 1, NULL);
    if (new < 0) {
        return new;
    }
    ret = qcow2_cache_get_empty(bs, s->l2_cache, new, table);
    if (ret >= 0 && off) {
        ret = qcow2_cache_get(bs, s->l2_cache, off, &old);
        if (ret >= 0) {
            memcpy(*table, old, s->cluster_size);
            qcow2_cache_put(s->l2_cache, old);
            /* Shared data clusters: the copy does not own them alone. */
            for (int64_t i = 0; i < s->l2_entries; i++) {
                ((uint64_t *)*table)[i * s->l2_entry_words] &=
                    ~__builtin_bswap64(QCOW2_OFLAG_COPIED);
            }
        } else {
            qcow2_cache_put(s->l2_cache, *table);
        }
    }
    if (ret < 0) {
        qcow2_cache_forget(s->l2_cache, new);
        qcow2_update_refcount(bs, s, new, s->cluster_size, -1);
        return ret;
    }
    qcow2_cache_mark_dirty(s->l2_cache, *table);
    s->l1[l1i] = (uint64_t)new | QCOW2_OFLAG_COPIED;
    l1_mark_dirty(s, l1i);
    qcow2_meta_add(s, new);      /* cannot fail: reserved */
    if (off) {
        /* The old table is the snapshots' alone now: no longer active. */
        qcow2_meta_remove(s, off);
        qcow2_defer_free(s, off, s->cluster_size, QCOW2_DISCARD_OTHER);
    }
    return 0;
}

/*
 * How [offset, offset+bytes) maps, for as long as it maps the same way
 * (same kind, contiguous host) within one L2 table.  For compressed
 * clusters *host is the descriptor and the run ends with the cluster.
 */
static int coroutine_fn get_mapping(BlockDriverState *bs, BDRVQcow2State *s, int64_t offset,
                                    int64_t bytes, Qcow2Kind *kind, uint64_t *host,
                                    int64_t *pnum) GRAPH_RDLOCK QCOW2_LOCKED
{
    int64_t cidx = offset >> s->cluster_bits, l1i = cidx >> s->l2_bits;
    int64_t table_end = (l1i + 1) << (s->l2_bits + s->cluster_bits);
    int64_t done = 0, limit = bytes < table_end - offset ? bytes : table_end - offset;
    void *table;
    int ret;

    maybe_clean_caches(s);
    ret = get_l2(bs, s, l1i, &table);
    if (ret < 0 || !table) {
        *kind = QCOW2_UNALLOC;
        *pnum = limit;
        return ret;
    }
    while (done < limit) {
        int64_t pos = offset + done, i = (pos >> s->cluster_bits) & (s->l2_entries - 1);
        L2Entry l = get_entry(s, table, i);
        uint64_t h;
        int64_t len;
        Qcow2Kind k;

        ret = check_entry(s, l, pos);
        if (ret < 0) {
            break;
        }
        k = classify(s, l, pos & (s->cluster_size - 1), &h, &len);
        if (done == 0) {
            *kind = k;
            *host = h;
        } else if (k != *kind || k == QCOW2_COMPRESSED ||
                   (k == QCOW2_NORMAL && h != *host + done)) {
            break;
        }
        done += len;
        if (k == QCOW2_COMPRESSED) {
            break;
        }
    }
    qcow2_cache_put(s->l2_cache, table);
    *pnum = done < limit ? done : limit;
    return ret;
}

/* ---- Reading ----------------------------------------------------------------------- */

/* Decompress the cluster described by @desc into @out (one cluster). */
static int coroutine_fn read_compressed(BlockDriverState *bs, BDRVQcow2State *s, uint64_t desc,
                                        void *out) GRAPH_RDLOCK
{
    int64_t off = desc & ((1ULL << s->csize_shift) - 1);
    int64_t nsect = ((desc >> s->csize_shift) & s->csize_mask) + 1;
    int64_t csize = nsect * 512 - (off & 511);
    int64_t flen = bdrv_getlength(bs->file->bs);
    void *in;
    int ret;

    if (off >= flen || off < s->cluster_size) {
        qcow2_report_corruption(s, "compressed cluster at 0x%llx is outside the image",
                                (unsigned long long)off);
        return -EIO;
    }
    if (csize > flen - off) {
        csize = flen - off;      /* the last sector may be cut short by the file end */
    }
    in = malloc(csize);
    if (!in) {
        return -ENOMEM;
    }
    ret = qcow2_file_pread(bs, off, csize, in);
    if (ret >= 0 && !qcow2_decompress_buf(s->compression_type, in, csize, out,
                                          s->cluster_size)) {
        qcow2_report_corruption(s, "compressed cluster at 0x%llx does not decompress to "
                                "a cluster", (unsigned long long)off);
        ret = -EIO;
    }
    free(in);
    return ret;
}

/* Read guest bytes [offset, +bytes), which map as @kind/@host, into @iov. */
static int coroutine_fn read_mapped(BlockDriverState *bs, BDRVQcow2State *s, Qcow2Kind kind,
                                    uint64_t host, int64_t offset, int64_t bytes,
                                    struct iovec *iov, int niov) GRAPH_RDLOCK
{
    switch (kind) {
    case QCOW2_NORMAL:
        return qcow2_data_preadv(bs, s, host, bytes, iov, niov);
    case QCOW2_COMPRESSED: {
        void *buf = malloc(s->cluster_size);
        int ret;
        if (!buf) {
            return -ENOMEM;
        }
        ret = read_compressed(bs, s, host, buf);
        if (ret >= 0) {
            iov_from_buf(iov, niov, 0, (char *)buf + (offset & (s->cluster_size - 1)), bytes);
        }
        free(buf);
        return ret;
    }
    case QCOW2_UNALLOC:
        if (bs->backing) {
            int64_t blen = bdrv_getlength(bs->backing->bs), n;
            if (blen < 0) {
                return blen;
            }
            n = offset >= blen ? 0 : (bytes < blen - offset ? bytes : blen - offset);
            if (n) {
                IOVector v;
                int ret;
                iovector_init(&v);
                iovector_concat(&v, iov, niov, 0, n);
                ret = bdrv_co_preadv(bs->backing, offset, n, v.iov, v.niov, 0);
                iovector_destroy(&v);
                if (ret < 0) {
                    return ret;
                }
            }
            iov_memset(iov, niov, n, 0, bytes - n);
            return 0;
        }
        /* fall through */
    case QCOW2_ZERO:
    default:
        iov_memset(iov, niov, 0, 0, bytes);
        return 0;
    }
}

int coroutine_fn qcow2_co_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                 struct iovec *iov, int niov, int flags)
{
    BDRVQcow2State *s = bs->opaque;
    IOVector chunk;
    int ret = 0;

    IO_CODE();

    (void)flags;
    iovector_init(&chunk);
    for (int64_t done = 0; done < bytes && ret >= 0;) {
        Qcow2Kind kind;
        uint64_t host = 0;
        int64_t n;

        co_mutex_lock(&s->lock);
        ret = get_mapping(bs, s, offset + done, bytes - done, &kind, &host, &n);
        if (ret >= 0) {
            atomic_fetch_add(&s->data_inflight, 1);
        }
        co_mutex_unlock(&s->lock);
        if (ret < 0) {
            break;
        }
        iovector_reset(&chunk);
        iovector_concat(&chunk, iov, niov, done, n);
        ret = read_mapped(bs, s, kind, host, offset + done, n, chunk.iov, chunk.niov);
        atomic_fetch_sub(&s->data_inflight, 1);
        done += n;
    }
    iovector_destroy(&chunk);
    return ret < 0 ? ret : 0;
}

/* Read what the guest sees in part of one cluster whose entry is @l. */
static int coroutine_fn read_cluster_part(BlockDriverState *bs, BDRVQcow2State *s, L2Entry l,
                                          int64_t guest, int64_t bytes, void *buf) GRAPH_RDLOCK
{
    int ret = 0;

    for (int64_t done = 0; done < bytes && ret >= 0;) {
        int64_t pos = guest + done, len;
        uint64_t host;
        Qcow2Kind k = classify(s, l, pos & (s->cluster_size - 1), &host, &len);
        struct iovec iov;

        len = len < bytes - done ? len : bytes - done;
        iov = (struct iovec){ (char *)buf + done, len };
        ret = read_mapped(bs, s, k, host, pos, len, &iov, 1);
        done += len;
    }
    return ret;
}

/* ---- Writing ----------------------------------------------------------------------- */

/* Does a write allocating guest clusters [first, first + n) wait for another? */
static bool inflight_overlaps(BDRVQcow2State *s, int64_t first, int64_t n) QCOW2_LOCKED
{
    list_for_each(node, &s->inflight) {
        Qcow2InflightAlloc *a = list_entry(node, Qcow2InflightAlloc, node);
        if (first < a->first + a->n && a->first < first + n) {
            return true;
        }
    }
    return false;
}

/* Plain data cluster owned by this L2 table alone: write in place. */
static bool simple_in_place(BDRVQcow2State *s, L2Entry l)
{
    if (is_compressed(l) || !has_host(s, l) || !(l.e & QCOW2_OFLAG_COPIED)) {
        return false;
    }
    return s->ext_l2 ? l.bitmap == QCOW2_SC_ALL_ALLOC : !(l.e & QCOW2_OFLAG_ZERO);
}

/* As simple_in_place(), fixing a missing COPIED flag when the refcount is 1. */
static int coroutine_fn in_place(BlockDriverState *bs, BDRVQcow2State *s, void *table,
                                 int64_t i, bool *yes) GRAPH_RDLOCK QCOW2_LOCKED
{
    L2Entry l = get_entry(s, table, i);
    uint64_t rc;
    int ret;

    *yes = simple_in_place(s, l);
    if (*yes || is_compressed(l) || !host_of(l) || (l.e & QCOW2_OFLAG_COPIED)) {
        return 0;
    }
    l.e |= QCOW2_OFLAG_COPIED;
    if (!simple_in_place(s, l)) {
        return 0;
    }
    /* A data file's clusters are never shared: no refcount to ask. */
    if (!qcow2_has_data_file(s)) {
        if (qcow2_overlaps_metadata(s, host_of(l), s->cluster_size)) {
            *yes = true;         /* refused by plan_write(), table untouched */
            return 0;
        }
        ret = qcow2_get_refcount(bs, s, host_of(l) >> s->cluster_bits, &rc);
        if (ret < 0 || rc != 1) {
            return ret;
        }
    }
    set_entry(s, table, i, l);
    qcow2_cache_mark_dirty(s->l2_cache, table);
    *yes = true;
    return 0;
}

/* Host storage for guest clusters [cidx, +n): new clusters in the file, or
 * their own place in a data file (which may hold anything: not fresh).
 * Encrypted zeroes are not zeroes: new clusters there are never fresh. */
static int64_t coroutine_fn alloc_data(BlockDriverState *bs, BDRVQcow2State *s, int64_t cidx,
                                       int64_t n, bool *fresh) GRAPH_RDLOCK QCOW2_LOCKED
{
    int64_t host;

    if (qcow2_has_data_file(s)) {
        host = cidx << s->cluster_bits;
        if (fresh) {
            *fresh = false;
        }
    } else {
        host = qcow2_alloc_clusters(bs, s, n, fresh);
    }
    if (fresh && s->cipher) {
        *fresh = false;
    }
    return host;
}

typedef struct WritePlan {
    bool in_place;
    bool fresh;              /* the new clusters are known to hold zeroes */
    int64_t host;            /* in place: where offset goes; else the new clusters */
    int64_t bytes;           /* guest bytes from offset handled by this piece */
    L2Entry head, tail;      /* allocation: old entries of first and last cluster */
    Qcow2InflightAlloc alloc;
} WritePlan;

/* Plan the piece of a write at @offset: in place, or new clusters. */
static int coroutine_fn plan_write(BlockDriverState *bs, BDRVQcow2State *s, int64_t offset,
                                   int64_t bytes, WritePlan *p) GRAPH_RDLOCK QCOW2_LOCKED
{
    int64_t cs = s->cluster_size, cidx = offset >> s->cluster_bits;
    int64_t i0 = cidx & (s->l2_entries - 1), last_c, n;
    void *table;
    bool yes;
    int ret;

retry:
    maybe_clean_caches(s);
    if (inflight_overlaps(s, cidx, 1)) {
        co_queue_wait(&s->inflight_wait, &s->lock);
        goto retry;
    }
    ret = get_l2_for_write(bs, s, cidx >> s->l2_bits, &table);
    if (ret < 0) {
        return ret;
    }
    ret = check_entry(s, get_entry(s, table, i0), offset);
    if (ret >= 0) {
        ret = in_place(bs, s, table, i0, &yes);
    }
    if (ret < 0) {
        qcow2_cache_put(s->l2_cache, table);
        return ret;
    }
    /* The piece ends with the request, the L2 table, or a change of kind. */
    last_c = (offset + bytes - 1) >> s->cluster_bits;
    if (last_c - cidx >= s->l2_entries - i0) {
        last_c = cidx + s->l2_entries - i0 - 1;
    }
    if (!yes && last_c - cidx + 1 > qcow2_max_alloc_clusters(s)) {
        last_c = cidx + qcow2_max_alloc_clusters(s) - 1;
    }
    L2Entry first = get_entry(s, table, i0);
    for (n = 1; cidx + n <= last_c; n++) {
        L2Entry l = get_entry(s, table, i0 + n);
        if (check_entry(s, l, (cidx + n) << s->cluster_bits) < 0) {
            break;
        }
        if (yes ? !simple_in_place(s, l) || host_of(l) != host_of(first) + n * cs
                : simple_in_place(s, l) || inflight_overlaps(s, cidx + n, 1)) {
            break;
        }
    }
    p->in_place = yes;
    p->bytes = ((cidx + n) << s->cluster_bits) - offset;
    if (p->bytes > bytes) {
        p->bytes = bytes;
    }
    if (yes) {
        p->host = host_of(first) + (offset & (cs - 1));
        qcow2_cache_put(s->l2_cache, table);
        /* Never write guest data over metadata, whatever a corrupt L2 says
         * (its own L2 table, another one and the refcount blocks included). */
        if (!qcow2_has_data_file(s) && qcow2_overlaps_metadata(s, p->host, p->bytes)) {
            qcow2_report_corruption(s, "data cluster at 0x%llx for guest offset 0x%llx "
                                    "overlaps metadata", (unsigned long long)host_of(first),
                                    (unsigned long long)offset);
            return -EIO;
        }
        return 0;
    }
    p->head = first;
    p->tail = get_entry(s, table, i0 + n - 1);
    qcow2_cache_put(s->l2_cache, table);
    p->host = alloc_data(bs, s, cidx, n, &p->fresh);
    if (p->host < 0) {
        return p->host;
    }
    p->alloc.first = cidx;
    p->alloc.n = n;
    list_add_tail(&s->inflight, &p->alloc.node);
    return 0;
}

/*
 * Release the old host storage of entry @l (after the next sync).  Storage
 * that is metadata stays allocated (a corrupt entry pointed at it): freeing
 * it would let the allocator, or discard=unmap, overwrite the table.
 */
static void free_entry_later(BDRVQcow2State *s, L2Entry l, Qcow2DiscardType type)
    QCOW2_LOCKED
{
    int64_t off = host_of(l), bytes = s->cluster_size;

    if (is_compressed(l)) {
        uint64_t desc = l.e & s->coffset_mask;
        int64_t nsect = ((desc >> s->csize_shift) & s->csize_mask) + 1;
        off = (desc & ((1ULL << s->csize_shift) - 1)) & ~511LL;
        bytes = nsect * 512;
    }
    if ((!off && !is_compressed(l)) || qcow2_has_data_file(s)) {
        return;                  /* nothing, or a data file cluster: no refcount */
    }
    if (qcow2_overlaps_metadata(s, off, bytes)) {
        qcow2_report_corruption(s, "L2 entry 0x%016llx points at metadata: not freed",
                                (unsigned long long)l.e);
        return;
    }
    qcow2_defer_free(s, off, bytes, type);
}

/* The new clusters hold their data: point the L2 entries at them. */
static int coroutine_fn commit_alloc(BlockDriverState *bs, BDRVQcow2State *s, WritePlan *p)
    GRAPH_RDLOCK QCOW2_LOCKED
{
    int64_t cidx = p->alloc.first, i0 = cidx & (s->l2_entries - 1);
    void *table;
    int ret;

    ret = get_l2_for_write(bs, s, cidx >> s->l2_bits, &table);
    if (ret < 0) {
        return ret;
    }
    for (int64_t k = 0; k < p->alloc.n; k++) {
        L2Entry l = { (uint64_t)(p->host + (k << s->cluster_bits)) | QCOW2_OFLAG_COPIED,
                      s->ext_l2 ? QCOW2_SC_ALL_ALLOC : 0 };
        free_entry_later(s, get_entry(s, table, i0 + k), QCOW2_DISCARD_OTHER);
        set_entry(s, table, i0 + k, l);
    }
    qcow2_cache_mark_dirty(s->l2_cache, table);
    qcow2_cache_put(s->l2_cache, table);
    s->data_unsynced = true;
    return 0;
}

static void coroutine_fn end_alloc(BDRVQcow2State *s, WritePlan *p) QCOW2_LOCKED
{
    list_del(&p->alloc.node);
    co_queue_restart_all(&s->inflight_wait);
}

/* Does the whole cluster with entry @l (guest offset @guest) read as zeroes? */
static bool reads_as_zeroes(BlockDriverState *bs, BDRVQcow2State *s, L2Entry l,
                            int64_t guest) GRAPH_RDLOCK
{
    bool no_backing = !bs->backing || guest >= bdrv_getlength(bs->backing->bs);

    if (is_compressed(l)) {
        return false;
    }
    if (s->ext_l2) {
        return !(l.bitmap & QCOW2_SC_ALL_ALLOC) &&
               ((l.bitmap >> 32) == 0xffffffffu || no_backing);
    }
    return (l.e & QCOW2_OFLAG_ZERO) || (!has_host(s, l) && no_backing);
}

/*
 * Write the new clusters of @p: the old content before and after the
 * guest data (copy-on-write from whatever the guest saw: backing file,
 * zeroes, compressed or shared cluster, subclusters) and the data itself.
 */
static int coroutine_fn write_new_clusters(BlockDriverState *bs, BDRVQcow2State *s,
                                           WritePlan *p, int64_t offset, struct iovec *iov,
                                           int niov, int64_t done) GRAPH_RDLOCK
{
    int64_t start = p->alloc.first << s->cluster_bits;
    int64_t end = (p->alloc.first + p->alloc.n) << s->cluster_bits;
    int64_t head = offset - start, tail = end - (offset + p->bytes);
    char *hbuf = NULL, *tbuf = NULL;
    IOVector v;
    int ret = 0;

    /* Zeroes over zeroes: only the guest data needs writing. */
    if (p->fresh && (!head || reads_as_zeroes(bs, s, p->head, start)) &&
        (!tail || reads_as_zeroes(bs, s, p->tail, end - s->cluster_size))) {
        iovector_init(&v);
        iovector_concat(&v, iov, niov, done, p->bytes);
        ret = qcow2_data_pwritev(bs, s, p->host + head, p->bytes, v.iov, v.niov);
        iovector_destroy(&v);
        return ret;
    }
    hbuf = head ? malloc(head) : NULL;
    tbuf = tail ? malloc(tail) : NULL;
    if ((head && !hbuf) || (tail && !tbuf)) {
        ret = -ENOMEM;
    }
    if (ret >= 0 && head) {
        ret = read_cluster_part(bs, s, p->head, start, head, hbuf);
    }
    if (ret >= 0 && tail) {
        ret = read_cluster_part(bs, s, p->tail, offset + p->bytes, tail, tbuf);
    }
    if (ret >= 0) {
        iovector_init(&v);
        if (head) {
            iovector_add(&v, hbuf, head);
        }
        iovector_concat(&v, iov, niov, done, p->bytes);
        if (tail) {
            iovector_add(&v, tbuf, tail);
        }
        ret = qcow2_data_pwritev(bs, s, p->host, end - start, v.iov, v.niov);
        iovector_destroy(&v);
    }
    free(hbuf);
    free(tbuf);
    return ret;
}

int coroutine_fn qcow2_co_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                  struct iovec *iov, int niov, int flags)
{
    BDRVQcow2State *s = bs->opaque;
    IOVector chunk;
    int ret = 0;

    IO_CODE();

    if (flags & BDRV_REQ_WRITE_COMPRESSED) {
        return qcow2_co_pwritev_compressed(bs, offset, bytes, iov, niov);
    }
    iovector_init(&chunk);
    for (int64_t done = 0; done < bytes && ret >= 0;) {
        WritePlan p;

        co_mutex_lock(&s->lock);
        ret = qcow2_refuse_writes(bs, s) ? -EIO : plan_write(bs, s, offset + done,
                                                             bytes - done, &p);
        if (ret >= 0 && p.in_place) {
            atomic_fetch_add(&s->data_inflight, 1);
        }
        co_mutex_unlock(&s->lock);
        if (ret < 0) {
            break;
        }
        if (p.in_place) {
            iovector_reset(&chunk);
            iovector_concat(&chunk, iov, niov, done, p.bytes);
            ret = qcow2_data_pwritev(bs, s, p.host, p.bytes, chunk.iov, chunk.niov);
            atomic_fetch_sub(&s->data_inflight, 1);
        } else {
            ret = write_new_clusters(bs, s, &p, offset + done, iov, niov, done);
            co_mutex_lock(&s->lock);
            if (ret >= 0) {
                ret = commit_alloc(bs, s, &p);
            }
            if (ret < 0 && !qcow2_has_data_file(s)) {
                /* Nothing points to the new clusters: free them at once. */
                qcow2_update_refcount(bs, s, p.host, p.alloc.n << s->cluster_bits, -1);
            }
            end_alloc(s, &p);
            co_mutex_unlock(&s->lock);
        }
        done += p.bytes;
    }
    iovector_destroy(&chunk);
    return ret < 0 ? ret : 0;
}

int coroutine_fn qcow2_install_compressed(BlockDriverState *bs, BDRVQcow2State *s, int64_t cidx,
                                          uint64_t desc)
{
    int64_t i0 = cidx & (s->l2_entries - 1);
    L2Entry old, l = { desc | QCOW2_OFLAG_COMPRESSED, 0 };
    void *table;
    int ret;

    while (inflight_overlaps(s, cidx, 1)) {
        co_queue_wait(&s->inflight_wait, &s->lock);
    }
    ret = get_l2_for_write(bs, s, cidx >> s->l2_bits, &table);
    if (ret < 0) {
        return ret;
    }
    old = get_entry(s, table, i0);
    if (has_host(s, old) || is_compressed(old)) {
        ret = -EIO;              /* QEMU's rule: a compressed write never overwrites */
    } else {
        set_entry(s, table, i0, l);
        qcow2_cache_mark_dirty(s->l2_cache, table);
    }
    qcow2_cache_put(s->l2_cache, table);
    return ret;
}

/* ---- Write zeroes and discard ------------------------------------------------------ */

/*
 * Replace the entries of whole clusters [offset, +bytes) (cluster aligned,
 * within one L2 table) with @zero ? zero clusters : unallocated ones.  With
 * @keep, allocated clusters keep their storage and only read as zeroes.
 */
static int coroutine_fn clear_clusters(BlockDriverState *bs, BDRVQcow2State *s, int64_t offset,
                                       int64_t n, bool zero, bool keep) GRAPH_RDLOCK QCOW2_LOCKED
{
    int64_t cidx = offset >> s->cluster_bits, i0 = cidx & (s->l2_entries - 1);
    void *table;
    int ret;

    ret = get_l2_for_write(bs, s, cidx >> s->l2_bits, &table);
    if (ret < 0) {
        return ret;
    }
    for (int64_t k = 0; k < n; k++) {
        L2Entry old = get_entry(s, table, i0 + k), l = { 0, 0 };
        bool own = simple_in_place(s, old);

        if (check_entry(s, old, (cidx + k) << s->cluster_bits) < 0) {
            ret = -EIO;
            break;
        }
        if (keep && own) {
            l.e = s->ext_l2 ? old.e : old.e | QCOW2_OFLAG_ZERO;
            l.bitmap = s->ext_l2 ? QCOW2_SC_ALL_ZERO : 0;
        } else {
            if (zero) {
                l.e = s->ext_l2 ? 0 : QCOW2_OFLAG_ZERO;
                l.bitmap = s->ext_l2 ? QCOW2_SC_ALL_ZERO : 0;
            }
            free_entry_later(s, old, QCOW2_DISCARD_REQUEST);
        }
        set_entry(s, table, i0 + k, l);
    }
    qcow2_cache_mark_dirty(s->l2_cache, table);
    qcow2_cache_put(s->l2_cache, table);
    return ret;
}

/* Apply clear_clusters() to whole clusters of a range, one L2 table at a time. */
static int coroutine_fn clear_range(BlockDriverState *bs, BDRVQcow2State *s, int64_t offset,
                                    int64_t bytes, bool zero, bool keep) GRAPH_RDLOCK
{
    int64_t cs = s->cluster_size, table_bytes = s->l2_entries * cs;
    int ret = 0;

    for (int64_t pos = offset; pos < offset + bytes && ret >= 0;) {
        int64_t end = (pos / table_bytes + 1) * table_bytes, n;
        if (end > offset + bytes) {
            end = offset + bytes;
        }
        n = (end - pos + cs - 1) / cs;
        co_mutex_lock(&s->lock);
        while (inflight_overlaps(s, pos >> s->cluster_bits, n)) {
            co_queue_wait(&s->inflight_wait, &s->lock);
        }
        ret = qcow2_refuse_writes(bs, s) ? -EIO
              : qcow2_data_file_clear(s, pos, end - pos, keep);
        if (ret >= 0) {
            ret = clear_clusters(bs, s, pos, n, zero, keep);
        }
        /* Many frees waiting: sync now rather than at the guest's flush. */
        if (ret >= 0 && s->npending > 4096) {
            ret = qcow2_sync_metadata(bs, s);
        }
        co_mutex_unlock(&s->lock);
        pos = end;
    }
    return ret;
}

int coroutine_fn qcow2_discard_beyond(BlockDriverState *bs, BDRVQcow2State *s, int64_t offset,
                                      int64_t bytes)
{
    return clear_range(bs, s, offset, bytes, false, false);
}

void qcow2_drop_l2_tables(BDRVQcow2State *s, uint32_t first)
{
    for (uint32_t i = first; i < s->l1_size; i++) {
        int64_t off = s->l1[i] & QCOW2_OFFSET_MASK;

        if (!off) {
            continue;
        }
        qcow2_cache_forget(s->l2_cache, off);
        qcow2_meta_remove(s, off);
        qcow2_defer_free(s, off, s->cluster_size, QCOW2_DISCARD_OTHER);
        s->l1[i] = 0;
        l1_mark_dirty(s, i);
    }
}

int coroutine_fn qcow2_co_pwrite_zeroes(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                        int flags)
{
    BDRVQcow2State *s = bs->opaque;
    int64_t cs = s->cluster_size;

    IO_CODE();

    /* Whole clusters only (the last one may end with the image). */
    if ((offset & (cs - 1)) ||
        ((bytes & (cs - 1)) && offset + bytes != bs->total_bytes)) {
        return -ENOTSUP;
    }
    /* Version 2 has no zero flag: only unallocated clusters read as zeroes,
     * and only without a backing file. */
    if (s->version < 3 && bs->backing) {
        return -ENOTSUP;
    }
    return clear_range(bs, s, offset, bytes, s->version >= 3,
                       (!(flags & BDRV_REQ_MAY_UNMAP) || s->discard_no_unref) &&
                       s->version >= 3);
}

int coroutine_fn qcow2_co_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    BDRVQcow2State *s = bs->opaque;
    int64_t cs = s->cluster_size;
    int64_t start = qcow2_align_up(offset, cs), end = (offset + bytes) / cs * cs;

    IO_CODE();

    if (!s->discard_unmap) {
        return 0;
    }
    if (offset + bytes == bs->total_bytes) {
        end = offset + bytes;    /* the partial last cluster is all there is */
    }
    if (end <= start || (s->version < 3 && bs->backing)) {
        return 0;
    }
    /* Discarded clusters read as zeroes, not as the backing file's data;
     * with discard-no-unref they keep their storage (version 3 only). */
    /* (A data file's discarded clusters are zero-flagged, as QEMU does.) */
    return clear_range(bs, s, start, end - start, bs->backing != NULL || qcow2_has_data_file(s),
                       s->discard_no_unref);
}

/* ---- Block status ------------------------------------------------------------------- */

int coroutine_fn qcow2_co_block_status(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                       int64_t *pnum)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2Kind kind;
    uint64_t host = 0;
    int ret;

    IO_CODE();

    co_mutex_lock(&s->lock);
    ret = get_mapping(bs, s, offset, bytes, &kind, &host, pnum);
    co_mutex_unlock(&s->lock);
    if (ret < 0) {
        return ret;
    }
    switch (kind) {
    case QCOW2_NORMAL:
    case QCOW2_COMPRESSED:
        return BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED;
    case QCOW2_ZERO:
        return BDRV_BLOCK_ZERO | BDRV_BLOCK_ALLOCATED;
    case QCOW2_UNALLOC:
    default:
        if (bs->backing) {
            int64_t blen = bdrv_getlength(bs->backing->bs), n;
            if (offset < blen) {
                /* Not this layer's: what the backing chain says, unallocated here. */
                ret = bdrv_co_block_status(bs->backing->bs, offset,
                                           *pnum < blen - offset ? *pnum : blen - offset, &n);
                if (ret < 0) {
                    return ret;
                }
                *pnum = n;
                return ret & (BDRV_BLOCK_DATA | BDRV_BLOCK_ZERO);
            }
        }
        return BDRV_BLOCK_ZERO;
    }
}

/* ---- Metadata write-back ------------------------------------------------------------ */

int coroutine_fn qcow2_sync_metadata(BlockDriverState *bs, BDRVQcow2State *s)
{
    bool wrote = false;
    int ret;

    if (s->broken) {
        return -EIO;
    }
    /* 1. Refcounts and data stable before the tables that reference them. */
    ret = qcow2_refcounts_stable(bs);
    /* 2. L2 tables (each eviction/write re-checks step 1), then stable. */
    if (ret >= 0) {
        ret = qcow2_cache_writeback(bs, s->l2_cache, &wrote);
    }
    if (ret >= 0 && wrote) {
        ret = qcow2_file_flush(bs, s);
    }
    /* 3. L1 entries pointing to new L2 tables. */
    if (ret >= 0 && s->l1_dirty_hi > s->l1_dirty_lo) {
        uint32_t lo = s->l1_dirty_lo, hi = s->l1_dirty_hi;
        uint64_t *buf = malloc((hi - lo) * 8);
        if (!buf) {
            return -ENOMEM;
        }
        for (uint32_t i = lo; i < hi; i++) {
            qcow2_put_be64(&buf[i - lo], s->l1[i]);
        }
        ret = qcow2_file_pwrite(bs, s->l1_offset + lo * 8, (hi - lo) * 8, buf);
        free(buf);
        if (ret >= 0) {
            ret = qcow2_file_flush(bs, s);
        }
        if (ret >= 0) {
            s->l1_dirty_lo = s->l1_dirty_hi = 0;
        }
    }
    /* 4. Only now can clusters that lost a reference be reused -- and not
     * while a data request may still be using one (they stay pending). */
    if (ret >= 0 && s->npending && atomic_read(&s->data_inflight) == 0) {
        ret = qcow2_apply_deferred_frees(bs, s);
    }
    /* A table that could not be written stays dirty (an L1 range stays
     * marked) and is written again, in the same order, by the next sync:
     * a passing write error does not stop the image (a failed flush does,
     * qcow2_file_flush). */
    return ret;
}

int coroutine_fn qcow2_sync_all(BlockDriverState *bs, BDRVQcow2State *s)
{
    int ret = qcow2_sync_metadata(bs, s);

    return ret < 0 ? ret : qcow2_sync_metadata(bs, s);
}

/* ---- Preallocation -------------------------------------------------------------------- */

int coroutine_fn qcow2_preallocate_metadata(BlockDriverState *bs, BDRVQcow2State *s,
                                            int64_t start)
{
    int64_t clusters = qcow2_align_up(s->size, s->cluster_size) >> s->cluster_bits;
    int ret = 0;

    for (int64_t c = start >> s->cluster_bits; c < clusters && ret >= 0;) {
        int64_t i0 = c & (s->l2_entries - 1), n = s->l2_entries - i0, host;
        void *table;

        n = n < clusters - c ? n : clusters - c;
        n = n < qcow2_max_alloc_clusters(s) ? n : qcow2_max_alloc_clusters(s);
        ret = get_l2_for_write(bs, s, c >> s->l2_bits, &table);
        if (ret < 0) {
            break;
        }
        host = alloc_data(bs, s, c, n, NULL);
        if (host < 0) {
            qcow2_cache_put(s->l2_cache, table);
            return host;
        }
        for (int64_t k = 0; k < n; k++) {
            /* Over a backing file the subclusters stay unallocated: reads
             * still go to the backing file. */
            L2Entry l = { (uint64_t)(host + (k << s->cluster_bits)) | QCOW2_OFLAG_COPIED,
                          s->ext_l2 && !s->backing_file ? QCOW2_SC_ALL_ALLOC : 0 };
            set_entry(s, table, i0 + k, l);
        }
        qcow2_cache_mark_dirty(s->l2_cache, table);
        qcow2_cache_put(s->l2_cache, table);
        c += n;
    }
    return ret < 0 ? ret : qcow2_sync_metadata(bs, s);
}
