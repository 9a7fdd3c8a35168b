/*
 * qcow2.h - internal interfaces of the qcow2 format driver.
 *
 * Half: I/O (everything here runs in coroutines, in any thread, with the
 * graph read lock held) unless a function says otherwise.
 *
 * Layout of the driver:
 *   qcow2.c          open/close, header, feature bits, extensions, the
 *                    BlockDriver table and the request entry points
 *   qcow2-common.c   file reads/writes/growth/flush, the overlap check,
 *                    corruption reports (shared by the files below)
 *   qcow2-cache.c    the table cache shared by L2 tables and refcount blocks
 *   qcow2-cluster.c  L1/L2 mapping, cluster allocation for writes, COW,
 *                    zero clusters, discard, compressed clusters, subclusters
 *   qcow2-refcount.c refcount table/blocks of any width, host allocation,
 *                    deferred frees, table growth
 *   qcow2-repair.c   rebuilding the refcounts of a dirty image
 *   qcow2-metaset.c  the set of L2 table and refcount block clusters
 *                    behind the overlap guard
 *   qcow2-create.c   image creation (bdrv_co_create, block-create.h)
 *   qcow2-header.c   header rewrites (backing file, extensions), reopen
 *   qcow2-bitmap.c   persistent dirty bitmaps (the bitmaps extension):
 *                    load, store, remove; qcow2-bitmap-dir.c its format
 *   qcow2-compress.c writing compressed clusters
 *   qcow2-codec.c    compressing one cluster (zlib or zstd)
 *   qcow2-data-file.c external data files (the data-file child)
 *   qcow2-crypto.c   encryption (LUKS) and the data I/O of every request
 *
 * Locking: all metadata (L1, caches, refcount table, allocation state)
 * lives under one CoMutex, s->lock.  Data I/O runs without it.  Functions
 * marked QCOW2_LOCKED need the caller to hold it (they may yield with it).
 *
 * Crash safety: metadata is written back in dependency order only at
 * flush (or on cache eviction): refcount blocks, then a flush of the file
 * (which also makes the guest data written so far stable), then L2 tables,
 * a flush, then the L1 table, a flush.  Host clusters that lose their last
 * reference are freed only after the tables that dropped the reference are
 * stable.  Whatever point a crash hits, the image on disk is consistent up
 * to leaked clusters.
 */
#ifndef BLOCKD_QCOW2_H
#define BLOCKD_QCOW2_H

#include <stdint.h>

#include "blockd/block-int.h"
#include "blockd/coroutine.h"
#include "luks.h"
#include "qcow2-metaset.h"

#define QCOW2_MAGIC 0x514649fbu              /* "QFI\xfb" */
#define QCOW2_MIN_CLUSTER_BITS 9
#define QCOW2_MAX_CLUSTER_BITS 21
#define QCOW2_MAX_L1_BYTES (32 * 1024 * 1024)
#define QCOW2_MAX_REFTABLE_BYTES (8 * 1024 * 1024)
#define QCOW2_MAX_BACKING_NAME 1023
#define QCOW2_V2_HEADER_LEN 72
#define QCOW2_V3_HEADER_LEN 104

/* The header's encryption method. */
#define QCOW2_CRYPT_NONE 0
#define QCOW2_CRYPT_AES  1
#define QCOW2_CRYPT_LUKS 2

/* The header's compression type (byte 104). */
#define QCOW2_COMPRESSION_ZLIB 0
#define QCOW2_COMPRESSION_ZSTD 1

/* Feature bits. */
#define QCOW2_INCOMPAT_DIRTY       (1ULL << 0)
#define QCOW2_INCOMPAT_CORRUPT     (1ULL << 1)
#define QCOW2_INCOMPAT_DATA_FILE   (1ULL << 2)
#define QCOW2_INCOMPAT_COMPRESSION (1ULL << 3)
#define QCOW2_INCOMPAT_EXTL2       (1ULL << 4)
#define QCOW2_INCOMPAT_KNOWN       (QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT | \
                                    QCOW2_INCOMPAT_DATA_FILE | \
                                    QCOW2_INCOMPAT_COMPRESSION | QCOW2_INCOMPAT_EXTL2)
#define QCOW2_COMPAT_LAZY_REFCOUNTS (1ULL << 0)
#define QCOW2_AUTOCLEAR_BITMAPS     (1ULL << 0)
#define QCOW2_AUTOCLEAR_DATA_RAW    (1ULL << 1)   /* the data file reads as the disk */

/* Header extension types. */
#define QCOW2_EXT_END          0x00000000u
#define QCOW2_EXT_BACKING_FMT  0xe2792acau
#define QCOW2_EXT_FEATURES     0x6803f857u
#define QCOW2_EXT_BITMAPS      0x23852875u
#define QCOW2_EXT_CRYPTO       0x0537be77u
#define QCOW2_EXT_DATA_FILE    0x44415441u

/* L1/L2 entry bits. */
#define QCOW2_OFLAG_COPIED     (1ULL << 63)
#define QCOW2_OFLAG_COMPRESSED (1ULL << 62)
#define QCOW2_OFLAG_ZERO       (1ULL << 0)
#define QCOW2_OFFSET_MASK      0x00fffffffffffe00ULL   /* bits 9-55 */
#define QCOW2_L1E_RESERVED     0x7f000000000001ffULL
#define QCOW2_L2E_RESERVED     0x3f000000000001feULL
#define QCOW2_REFT_RESERVED    0x00000000000001ffULL

/* Extended L2: the second word. */
#define QCOW2_SUBCLUSTERS      32
#define QCOW2_SC_ALL_ALLOC     0x00000000ffffffffULL
#define QCOW2_SC_ALL_ZERO      0xffffffff00000000ULL

/* What a guest range maps to. */
typedef enum Qcow2Kind {
    QCOW2_UNALLOC,      /* not in this layer: backing file or zeroes */
    QCOW2_ZERO,         /* reads as zeroes */
    QCOW2_NORMAL,       /* data at a host offset */
    QCOW2_COMPRESSED,   /* a deflated cluster */
} Qcow2Kind;

typedef struct Qcow2Cache Qcow2Cache;
typedef struct Qcow2Bitmap Qcow2Bitmap;

/* A write that is allocating guest clusters [first, first + n). */
typedef struct Qcow2InflightAlloc {
    int64_t first, n;            /* guest cluster indices */
    ListNode node;
} Qcow2InflightAlloc;

/* A host range whose reference was dropped, freed after the next sync. */
/* Why clusters are freed: pass-discard-request/-snapshot/-other say for
 * each whether the file system gets the space back too. */
typedef enum Qcow2DiscardType {
    QCOW2_DISCARD_REQUEST,       /* a guest's discard or write-zeroes with unmap */
    QCOW2_DISCARD_SNAPSHOT,      /* a snapshot deleted */
    QCOW2_DISCARD_OTHER,         /* anything else (replaced tables, COW) */
    QCOW2_DISCARD__MAX,
} Qcow2DiscardType;

typedef struct Qcow2PendingFree {
    int64_t offset;
    int64_t bytes;
    Qcow2DiscardType type;
} Qcow2PendingFree;

typedef struct BDRVQcow2State {
    /* ---- Immutable after open ---- */
    int version;
    int cluster_bits;
    int64_t cluster_size;
    int l2_bits;                 /* log2 of entries per L2 table */
    int64_t l2_entries;
    bool ext_l2;                 /* extended L2 entries (subclusters) */
    int l2_entry_words;          /* 1 or 2 */
    int sc_bits;                 /* log2 of the subcluster size */
    int refcount_order;
    int refcount_bits;
    uint64_t refcount_max;
    int rb_bits;                 /* log2 of entries per refcount block */
    int csize_shift;             /* compressed descriptor: sector count */
    uint64_t csize_mask;
    uint64_t coffset_mask;
    int compression_type;        /* QCOW2_COMPRESSION_* */
    /* External data file (incompatible bit 2): guest data lives in this
     * child, each cluster at its guest offset, outside the refcounts;
     * metadata stays in the file child.  NULL: data in the file child. */
    BdrvChild *data_file;
    char *data_file_name;        /* from the header extension, or NULL */
    bool data_file_raw;          /* autoclear bit 1: keep it a raw image */
    /* Encryption: the method, where the LUKS container lies, and once
     * unlocked its header and the payload cipher (NULL: not encrypted). */
    int crypt_method;
    int64_t crypto_offset, crypto_length;
    LuksHeader *luks;
    LuksCipher *cipher;
    uint8_t luks_key[LUKS_MAX_KEY_LEN];  /* the master key, for new key slots */
    uint64_t incompat, compat, autoclear;
    uint32_t header_length;
    int64_t size;                /* virtual disk size */
    int64_t l1_offset;
    uint32_t l1_size;
    int64_t snapshots_offset;
    uint32_t nb_snapshots;
    char *backing_file;          /* from the header, or NULL */
    char *backing_fmt;
    char *image_filename;        /* the file child's filename, for messages */
    const char *node_name;       /* the node's (it outlives this state) */
    bool discard_unmap;          /* discard=unmap: discard frees clusters */
    bool pass_discard[QCOW2_DISCARD__MAX];
    bool lazy_refcounts;
    /* discard-no-unref: discarded clusters stay allocated (zero-flagged),
     * so a later write finds its space where it was (QEMU 8.1's). */
    bool discard_no_unref;
    int64_t cache_clean_ns;      /* 0: never drop clean cache entries */

    /* ---- Persistent bitmaps (qcow2-bitmap.c) ----
     * The bitmaps extension and the directory it points at.  Changed only
     * in the main thread, in coroutines holding lock, and replaced whole:
     * main-thread code may read them without the lock. */
    bool bitmaps_stale;          /* extension present, autoclear bit clear */
    uint32_t nb_bitmaps;
    uint64_t bitmap_dir_size;
    int64_t bitmap_dir_offset;
    Qcow2Bitmap *bitmaps;        /* the directory, once loaded */

    /* ---- Metadata, under lock ---- */
    CoMutex lock;
    uint64_t *l1 TSA_FIELD_GUARDED_BY(lock);
    uint32_t l1_dirty_lo TSA_FIELD_GUARDED_BY(lock);    /* dirty entries [lo, hi) */
    uint32_t l1_dirty_hi TSA_FIELD_GUARDED_BY(lock);
    uint64_t *reftable TSA_FIELD_GUARDED_BY(lock);
    int64_t reftable_offset TSA_FIELD_GUARDED_BY(lock);
    uint32_t reftable_size TSA_FIELD_GUARDED_BY(lock);   /* entries */
    Qcow2Cache *l2_cache TSA_FIELD_GUARDED_BY(lock);
    Qcow2Cache *rb_cache TSA_FIELD_GUARDED_BY(lock);
    /* Host clusters of the active L2 tables and of the refcount blocks,
     * for the overlap guard (qcow2_overlaps_metadata). */
    Qcow2MetaSet meta TSA_FIELD_GUARDED_BY(lock);
    int64_t free_hint TSA_FIELD_GUARDED_BY(lock);        /* no free cluster below */
    int64_t alloc_end TSA_FIELD_GUARDED_BY(lock);        /* clusters: all free from here */
    int64_t file_size TSA_FIELD_GUARDED_BY(lock);        /* bytes of the file child */
    /* From here on the file is known to hold zeroes (it was grown by us and
     * never handed out): new clusters there need no zero copy-on-write. */
    int64_t zero_start TSA_FIELD_GUARDED_BY(lock);
    ListNode inflight TSA_FIELD_GUARDED_BY(lock);        /* Qcow2InflightAlloc */
    CoQueue inflight_wait TSA_FIELD_GUARDED_BY(lock);
    Qcow2PendingFree *pending TSA_FIELD_GUARDED_BY(lock);
    int npending TSA_FIELD_GUARDED_BY(lock);
    int pending_cap TSA_FIELD_GUARDED_BY(lock);
    bool data_unsynced TSA_FIELD_GUARDED_BY(lock);       /* file written since its last flush */
    bool broken TSA_FIELD_GUARDED_BY(lock);              /* metadata write failed: refuse writes */
    /* Corruption was found (atomic): writes are refused, and the first one
     * refused sets the corrupt bit in the header (corrupt_marked). */
    int corrupt;
    bool corrupt_marked TSA_FIELD_GUARDED_BY(lock);
    int64_t last_clean_ns TSA_FIELD_GUARDED_BY(lock);    /* cache-clean-interval */
    /* Where the next compressed cluster's data may go: the free tail of
     * a host cluster that holds others (0: none). */
    int64_t compress_next TSA_FIELD_GUARDED_BY(lock);
    /* Guest data requests between their mapping lookup and the end of their
     * I/O (atomic).  Host clusters are freed only while it is zero, so no
     * read or in-place write can land on a cluster that was reused. */
    unsigned data_inflight;
} BDRVQcow2State;

#define QCOW2_LOCKED TSA_REQUIRES(&s->lock)

static inline int64_t qcow2_offset_to_cluster(BDRVQcow2State *s, int64_t off)
{
    return off >> s->cluster_bits;
}

static inline int64_t qcow2_align_up(int64_t v, int64_t a)
{
    return (v + a - 1) / a * a;
}

static inline uint64_t qcow2_be64(const void *p)
{
    return __builtin_bswap64(*(const uint64_t *)p);
}

static inline void qcow2_put_be64(void *p, uint64_t v)
{
    *(uint64_t *)p = __builtin_bswap64(v);
}

/* ---- Generic I/O helpers (qcow2.c) ---- */

/* Read/write @bytes at @offset of the file child through a flat buffer. */
int coroutine_fn qcow2_file_pread(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                  void *buf) GRAPH_RDLOCK;
int coroutine_fn qcow2_file_pwrite(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                   const void *buf) GRAPH_RDLOCK;
/* Make sure the file is at least @end bytes long (grows it in steps). */
int coroutine_fn qcow2_grow_file(BlockDriverState *bs, BDRVQcow2State *s, int64_t end)
    GRAPH_RDLOCK QCOW2_LOCKED;
/* Flush the file child. */
int coroutine_fn qcow2_file_flush(BlockDriverState *bs, BDRVQcow2State *s)
    GRAPH_RDLOCK QCOW2_LOCKED;
/* Does host range [offset, +bytes) overlap the header, the L1 table, the
 * refcount table, the snapshot table, a snapshot's L1 table, an active L2
 * table, a refcount block or the LUKS container?  Cheap: checked before
 * every in-place data write. */
bool qcow2_overlaps_metadata(BDRVQcow2State *s, int64_t offset, int64_t bytes) QCOW2_LOCKED;
/* Does the LUKS container (part of the metadata above) overlap the rest? */
bool qcow2_container_overlaps_tables(BDRVQcow2State *s) QCOW2_LOCKED;
/* The set of L2 table, refcount block and snapshot clusters behind that
 * check:
 * enter or remove the table at host @offset; make room for @n entries so
 * that the next @n qcow2_meta_add() cannot fail (0 or -ENOMEM). */
int qcow2_meta_reserve(BDRVQcow2State *s, int64_t n) QCOW2_LOCKED;
int qcow2_meta_add(BDRVQcow2State *s, int64_t offset) QCOW2_LOCKED;
void qcow2_meta_remove(BDRVQcow2State *s, int64_t offset) QCOW2_LOCKED;
/* qcow2-header.c: BlockDriver callbacks.  Global state. */
int qcow2_reopen(BlockDriverState *bs, int flags, Error **errp);
int qcow2_change_backing_file(BlockDriverState *bs, const char *backing_file,
                              const char *backing_fmt, Error **errp);
int coroutine_fn qcow2_clear_autoclear(BlockDriverState *bs, BDRVQcow2State *s) GRAPH_RDLOCK;

/* Report corruption found at run time (the image is not modified). */
void qcow2_report_corruption(BDRVQcow2State *s, const char *fmt, ...) BD_PRINTF(2, 3);
/* Are writes refused (a failed flush, or corruption found)?  The first
 * refusal after corruption sets the header's corrupt bit, as QEMU does:
 * qemu-img check -r is then needed before the image opens read-write. */
bool coroutine_fn qcow2_refuse_writes(BlockDriverState *bs, BDRVQcow2State *s)
    GRAPH_RDLOCK QCOW2_LOCKED;

/* ---- L2 entries and L1 dirtiness (qcow2-cluster.c, qcow2-snapshot.c) ---- */

typedef struct L2Entry {
    uint64_t e;          /* the standard 64-bit entry */
    uint64_t bitmap;     /* extended L2 only: subcluster allocation/zero bits */
} L2Entry;

static inline L2Entry get_entry(BDRVQcow2State *s, const void *table, int64_t i)
{
    const uint64_t *t = table;
    L2Entry l = { qcow2_be64(&t[i * s->l2_entry_words]), 0 };

    if (s->ext_l2) {
        l.bitmap = qcow2_be64(&t[i * 2 + 1]);
    }
    return l;
}

static inline void set_entry(BDRVQcow2State *s, void *table, int64_t i, L2Entry l)
{
    uint64_t *t = table;

    qcow2_put_be64(&t[i * s->l2_entry_words], l.e);
    if (s->ext_l2) {
        qcow2_put_be64(&t[i * 2 + 1], l.bitmap);
    }
}

static inline bool is_compressed(L2Entry l)
{
    return l.e & QCOW2_OFLAG_COMPRESSED;
}

static inline int64_t host_of(L2Entry l)
{
    return l.e & QCOW2_OFFSET_MASK;
}

static inline bool qcow2_has_data_file(BDRVQcow2State *s)
{
    return s->incompat & QCOW2_INCOMPAT_DATA_FILE;
}

/* Does @l point at a host cluster?  Offset 0 is a real one in an external
 * data file (marked by the COPIED flag, which such clusters always have). */
static inline bool has_host(BDRVQcow2State *s, L2Entry l)
{
    return host_of(l) || (qcow2_has_data_file(s) && (l.e & QCOW2_OFLAG_COPIED) &&
                          !(l.e & QCOW2_OFLAG_COMPRESSED));
}

static inline void l1_mark_dirty(BDRVQcow2State *s, uint32_t i) QCOW2_LOCKED
{
    if (s->l1_dirty_lo >= s->l1_dirty_hi) {
        s->l1_dirty_lo = i;
        s->l1_dirty_hi = i + 1;
    } else {
        s->l1_dirty_lo = i < s->l1_dirty_lo ? i : s->l1_dirty_lo;
        s->l1_dirty_hi = i + 1 > s->l1_dirty_hi ? i + 1 : s->l1_dirty_hi;
    }
}

/* ---- Internal snapshots (qcow2-snapshot.c) ---- */

/* Take snapshot @name of the active layer (the node drained).  -EEXIST if
 * one has that name; other -errno on failure (at most leaked clusters). */
int qcow2_snapshot_create(BlockDriverState *bs, const char *name);
/* Enter the snapshot table and the snapshots' L1 tables in the overlap
 * guard.  At open; a table that does not parse is reported corrupt. */
int coroutine_fn qcow2_snapshot_guard_init(BlockDriverState *bs, BDRVQcow2State *s,
                                           Error **errp) GRAPH_RDLOCK QCOW2_LOCKED;
/* Delete the snapshot QEMU's lookup finds for @id and/or @name (-ENOENT:
 * none), returning its SnapshotInfo in *@info. */
int qcow2_snapshot_delete(BlockDriverState *bs, const char *id, const char *name,
                          json_object **info);

/* ---- Persistent bitmaps (qcow2-bitmap.c) ---- */

/* The bitmaps extension's 24 bytes at open (before the geometry); a
 * stale one (autoclear bit clear) is noted and dropped later. */
int qcow2_bitmaps_ext_parse(BDRVQcow2State *s, const uint8_t *p, uint32_t len, Error **errp);
/* The extension to write (0: none, else its length, 24). */
uint32_t qcow2_bitmaps_ext_build(BDRVQcow2State *s, uint8_t out[24]);
/* Global state, after open: the image's bitmaps become named bitmaps of
 * @bs (read-only ones unless @writable; in use on disk if it is). */
int qcow2_bitmaps_load(BlockDriverState *bs, bool writable, Error **errp);
/* Global state: write @bs's persistent bitmaps (close, switch to
 * read-only). */
int qcow2_bitmaps_store(BlockDriverState *bs, Error **errp);
/* Global state, the node drained: follow a switch to read-write (mark
 * them in use) or read-only (store them; they become read-only). */
int qcow2_bitmaps_reopen(BlockDriverState *bs, bool writable, Error **errp);
/* BlockDriver callbacks (global state). */
bool qcow2_can_store_new_dirty_bitmap(BlockDriverState *bs, const char *name,
                                      int64_t granularity, Error **errp);
int qcow2_remove_persistent_dirty_bitmap(BlockDriverState *bs, const char *name,
                                         Error **errp);
/* format-specific "bitmaps" (NULL: none).  Main thread. */
json_object *qcow2_bitmaps_info(BDRVQcow2State *s);
void qcow2_bitmaps_free(BDRVQcow2State *s);
/* Call @fn for each host range the bitmaps use (directory, tables,
 * data), for the refcount repair and check.  A directory that does not
 * parse: an error in @errp (the repair must not free what it holds), or
 * with @errp NULL nothing (the open then fails at load). */
typedef int Qcow2ClusterVisitor(void *opaque, int64_t offset, int64_t bytes, const char *what);
int coroutine_fn qcow2_bitmaps_visit(BlockDriverState *bs, BDRVQcow2State *s,
                                     Qcow2ClusterVisitor *fn, void *opaque, Error **errp)
    GRAPH_RDLOCK QCOW2_LOCKED;
/* qcow2-header.c: write the header from the state (backing file, bitmaps
 * extension, autoclear bits), then flush. */
int coroutine_fn qcow2_write_header(BlockDriverState *bs, BDRVQcow2State *s)
    GRAPH_RDLOCK QCOW2_LOCKED;

/* ---- Cache (qcow2-cache.c) ---- */

/* Called before a dirty table is written back (ordering); may be NULL. */
/* (Called with the graph read lock held; typedefs cannot say so.) */
typedef int coroutine_fn Qcow2CacheDepFn(BlockDriverState *bs);

Qcow2Cache *qcow2_cache_new(int entries, int64_t table_size, Qcow2CacheDepFn *dep);
void qcow2_cache_free(Qcow2Cache *c);
/* Get the table at host @offset, reading it if absent; pinned until put. */
int coroutine_fn qcow2_cache_get(BlockDriverState *bs, Qcow2Cache *c, int64_t offset,
                                 void **table) GRAPH_RDLOCK;
/* The same for a freshly allocated table: zero-filled, not read. */
int coroutine_fn qcow2_cache_get_empty(BlockDriverState *bs, Qcow2Cache *c, int64_t offset,
                                       void **table) GRAPH_RDLOCK;
void qcow2_cache_put(Qcow2Cache *c, void *table);
void qcow2_cache_mark_dirty(Qcow2Cache *c, void *table);
bool qcow2_cache_has_dirty(Qcow2Cache *c);
/* Write every dirty table (without flushing); *wrote tells if any was. */
int coroutine_fn qcow2_cache_writeback(BlockDriverState *bs, Qcow2Cache *c, bool *wrote)
    GRAPH_RDLOCK;
/* Forget the table at @offset (its cluster was freed); dirty or not. */
void qcow2_cache_forget(Qcow2Cache *c, int64_t offset);
/* Drop clean, unpinned tables unused for @age_ns (cache-clean-interval). */
void qcow2_cache_clean(Qcow2Cache *c, int64_t age_ns);

/* ---- Refcounts (qcow2-refcount.c) ---- */

/* Set entry @i of a refcount block of width 2^@order bits (common). */
void qcow2_rb_set(int order, void *block, int64_t i, uint64_t v);

/* Load the refcount table at open (checks it).  Global state, in a coroutine. */
int coroutine_fn qcow2_refcount_init(BlockDriverState *bs, BDRVQcow2State *s,
                                     Error **errp) GRAPH_RDLOCK QCOW2_LOCKED;
int coroutine_fn qcow2_get_refcount(BlockDriverState *bs, BDRVQcow2State *s,
                                    int64_t cluster, uint64_t *refcount)
    GRAPH_RDLOCK QCOW2_LOCKED;
/* The first of clusters 0..@n-1 whose bit is set in @set and whose
 * refcount is 0: 1 with it in *@cluster, 0 if none, or -errno. */
int coroutine_fn qcow2_first_free_of(BlockDriverState *bs, BDRVQcow2State *s,
                                     const uint64_t *set, int64_t n, int64_t *cluster)
    GRAPH_RDLOCK QCOW2_LOCKED;
/* Add @delta to the refcounts of the clusters touched by [offset, +bytes). */
int coroutine_fn qcow2_update_refcount(BlockDriverState *bs, BDRVQcow2State *s,
                                       int64_t offset, int64_t bytes, int delta)
    GRAPH_RDLOCK QCOW2_LOCKED;
/*
 * The most clusters one allocation may ask for: less than a refcount block
 * covers, because a block created on the way sits in the first cluster of
 * its range and would otherwise split every candidate run (an endless
 * search with small clusters and wide refcounts).
 */
static inline int64_t qcow2_max_alloc_clusters(BDRVQcow2State *s)
{
    int64_t by_size = (16 * 1024 * 1024) >> s->cluster_bits;
    int64_t by_refblock = (1LL << s->rb_bits) - 1;
    int64_t n = by_size < by_refblock ? by_size : by_refblock;
    return n > 1 ? n : 1;
}

/* Allocate @n (<= qcow2_max_alloc_clusters()) contiguous free host clusters
 * (refcount 1); returns the
 * offset.  *@fresh (if not NULL): they are known to read as zeroes. */
int64_t coroutine_fn qcow2_alloc_clusters(BlockDriverState *bs, BDRVQcow2State *s,
                                          int64_t n, bool *fresh) GRAPH_RDLOCK QCOW2_LOCKED;
/* Drop a reference to [offset, +bytes) once the current metadata is stable. */
void qcow2_defer_free(BDRVQcow2State *s, int64_t offset, int64_t bytes,
                      Qcow2DiscardType type) QCOW2_LOCKED;
/* Apply the deferred frees (after a metadata sync). */
int coroutine_fn qcow2_apply_deferred_frees(BlockDriverState *bs, BDRVQcow2State *s)
    GRAPH_RDLOCK QCOW2_LOCKED;
/* Shrinking (qcow2-resize.c): the clusters of [offset, +bytes) become
 * unallocated (whole clusters; takes the lock itself), and the L2 tables
 * of L1 entries from @first on are freed with their entries zeroed. */
int coroutine_fn qcow2_discard_beyond(BlockDriverState *bs, BDRVQcow2State *s, int64_t offset,
                                      int64_t bytes) GRAPH_RDLOCK;
void qcow2_drop_l2_tables(BDRVQcow2State *s, uint32_t first) QCOW2_LOCKED;
/* qcow2-resize.c: block_resize (the node is drained). */
int coroutine_fn qcow2_co_truncate(BlockDriverState *bs, int64_t size, Error **errp)
    GRAPH_RDLOCK;
/* Write back refcount blocks and flush the file (the L2 cache's dependency). */
int coroutine_fn qcow2_refcounts_stable(BlockDriverState *bs) GRAPH_RDLOCK;

/* ---- Repair (qcow2-repair.c) ---- */

/* Rebuild the refcounts of a dirty image and clear its dirty bit.  At open,
 * before qcow2_refcount_init(). */
int coroutine_fn qcow2_repair_refcounts(BlockDriverState *bs, BDRVQcow2State *s,
                                        Error **errp) GRAPH_RDLOCK;
/*
 * Read every table and find a reference to a cluster that the allocator
 * would hand out again: one beyond the end of the file or free in the
 * refcounts.  Such an image is reported corrupt (qcow2_report_corruption:
 * writes are refused), so that no cluster is ever in use twice.  Done when
 * the image opens, or is reopened, read-write; its cost is reading all
 * the tables once.  -errno only if the tables could not be read.
 */
int coroutine_fn qcow2_check_references(BlockDriverState *bs, BDRVQcow2State *s)
    GRAPH_RDLOCK QCOW2_LOCKED;
/* The same; a failure to read is only a warning in the log. */
void coroutine_fn qcow2_check_references_or_warn(BlockDriverState *bs, BDRVQcow2State *s)
    GRAPH_RDLOCK QCOW2_LOCKED;

/* ---- Mapping (qcow2-cluster.c) ---- */

int coroutine_fn qcow2_l1_check(BlockDriverState *bs, BDRVQcow2State *s, Error **errp)
    GRAPH_RDLOCK QCOW2_LOCKED;
int coroutine_fn qcow2_co_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                 struct iovec *iov, int niov, int flags) GRAPH_RDLOCK;
int coroutine_fn qcow2_co_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                  struct iovec *iov, int niov, int flags) GRAPH_RDLOCK;
int coroutine_fn qcow2_co_pwrite_zeroes(BlockDriverState *bs, int64_t offset,
                                        int64_t bytes, int flags) GRAPH_RDLOCK;
int coroutine_fn qcow2_co_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes)
    GRAPH_RDLOCK;
int coroutine_fn qcow2_co_block_status(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                       int64_t *pnum) GRAPH_RDLOCK;
/* Write all dirty metadata in dependency order, then apply deferred frees. */
int coroutine_fn qcow2_sync_metadata(BlockDriverState *bs, BDRVQcow2State *s)
    GRAPH_RDLOCK QCOW2_LOCKED;
/* The same, twice: the frees the first applied are refcount updates too
 * (on close, and before a switch to read-only). */
int coroutine_fn qcow2_sync_all(BlockDriverState *bs, BDRVQcow2State *s)
    GRAPH_RDLOCK QCOW2_LOCKED;
/* Point guest cluster @cidx at compressed data (@desc: the entry's offset
 * and sector count bits) if it holds nothing yet; -EIO if it does. */
int coroutine_fn qcow2_install_compressed(BlockDriverState *bs, BDRVQcow2State *s, int64_t cidx,
                                          uint64_t desc) GRAPH_RDLOCK QCOW2_LOCKED;
/* qcow2-compress.c: BDRV_REQ_WRITE_COMPRESSED writes (whole clusters, the
 * last one may end with the image). */
int coroutine_fn qcow2_co_pwritev_compressed(BlockDriverState *bs, int64_t offset,
                                             int64_t bytes, struct iovec *iov, int niov)
    GRAPH_RDLOCK;
/* Forget the partly filled cluster compressed data goes to (its clusters
 * may be freed and reused now). */
void qcow2_compress_forget_cluster(BDRVQcow2State *s) QCOW2_LOCKED;

/* ---- One cluster's compression (qcow2-codec.c; common: any thread) ---- */

/* Compress @len bytes of @in, in compression @type, into @out (at most @max
 * bytes): the compressed length, or 0 if it does not fit. */
int64_t qcow2_compress_buf(int type, const void *in, int64_t len, void *out, int64_t max);
/* Decompress @in (@inlen bytes, possibly followed by padding) into exactly
 * @outlen bytes of @out; false if the data is not that. */
bool qcow2_decompress_buf(int type, const void *in, int64_t inlen, void *out, int64_t outlen);

/* Allocate the L2 tables and clusters from guest offset @start (cluster
 * aligned) to the end (preallocation=metadata, a raw data file). */
int coroutine_fn qcow2_preallocate_metadata(BlockDriverState *bs, BDRVQcow2State *s,
                                            int64_t start)
    GRAPH_RDLOCK QCOW2_LOCKED;

/* ---- External data files (qcow2-data-file.c) ---- */

/* The child that holds guest data: the data file, or the file child. */
static inline BdrvChild *qcow2_data(BlockDriverState *bs, BDRVQcow2State *s) GRAPH_RDLOCK
{
    return s->data_file ? s->data_file : bs->file;
}
/* Open the data-file child: the option's node, else the file the header
 * names.  Refuses the option for an image without a data file.  Global
 * state; 0, or a negative errno with @errp set. */
int qcow2_open_data_file(BlockDriverState *bs, json_object *options, Error **errp)
    GRAPH_UNLOCKED;
/* Guest clusters [offset, +bytes) are being zeroed (@keep: their storage
 * stays) or dropped: discard them in the data file, and with
 * data-file-raw write the zeroes there too.  0 without a data file. */
int coroutine_fn qcow2_data_file_clear(BDRVQcow2State *s, int64_t offset, int64_t bytes,
                                       bool keep) GRAPH_RDLOCK;

/* ---- Encryption and data I/O (qcow2-crypto.c) ---- */

/* The crypto header extension (offset and length of the LUKS container). */
int qcow2_crypto_ext_parse(BDRVQcow2State *s, const uint8_t *p, uint32_t len, Error **errp);
/* Unlock an encrypted image with encrypt.key-secret, or refuse encrypt
 * options for a plain one.  Global state; 0 or -errno with @errp set. */
int qcow2_crypto_open(BlockDriverState *bs, json_object *options, Error **errp)
    GRAPH_UNLOCKED;
void qcow2_crypto_close(BDRVQcow2State *s);
/* x-blockdev-amend: the encrypt member's key slot change, or nothing.
 * Global state, in the amend job's coroutine. */
int coroutine_fn qcow2_co_amend(BlockDriverState *bs, json_object *options, bool force,
                                Error **errp);
/* The format-specific "encrypt" member, or NULL if not encrypted. */
json_object *qcow2_crypto_info(BDRVQcow2State *s);
/* Guest data at @host of the data child, decrypted on the way in or
 * encrypted on the way out (the caller's buffers are not changed by a
 * write).  @host and @bytes are multiples of 512 on encrypted images. */
int coroutine_fn qcow2_data_preadv(BlockDriverState *bs, BDRVQcow2State *s, int64_t host,
                                   int64_t bytes, struct iovec *iov, int niov) GRAPH_RDLOCK;
int coroutine_fn qcow2_data_pwritev(BlockDriverState *bs, BDRVQcow2State *s, int64_t host,
                                    int64_t bytes, struct iovec *iov, int niov) GRAPH_RDLOCK;

#endif /* BLOCKD_QCOW2_H */
