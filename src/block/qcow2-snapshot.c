/*
 * qcow2-snapshot.c - internal snapshots of a running qcow2 image
 * (blockdev-snapshot-internal-sync, blockdev-snapshot-delete-internal-sync).
 *
 * Half: global state; the caller drains the node, the work runs in a
 * coroutine holding the image lock.
 *
 * A snapshot is a copy of the L1 table plus one more reference on every
 * L2 table and data cluster that the active layer uses, so that a later
 * write copies the cluster instead of changing it (their COPIED flags are
 * cleared).  The snapshot table ("Snapshot table" in docs/qcow2.md: one
 * entry per snapshot, each padded to 8 bytes) is always written whole to
 * new clusters; the header then points at it.
 *
 * Crash safety: references are added (and written) before the table that
 * needs them, and dropped only after the table that no longer names them
 * is in the header.  A crash in between leaves leaked clusters, never a
 * reference to a freed one.
 *
 * The overlap guard (qcow2_overlaps_metadata) knows the snapshot table and
 * every snapshot's L1 table, as QEMU's default overlap check does: their
 * clusters join the metadata set when the image opens and as snapshots
 * come and go.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "blockd/block-global-state.h"
#include "blockd/block-io.h"
#include "blockd/log.h"
#include "blockd/main-loop.h"
#include "qcow2.h"

#define SN_FIXED        40              /* fixed part of an entry */
#define SN_EXTRA        24              /* vm_state_size_large, disk_size, icount */
#define SN_MAX_EXTRA    1024
#define SN_TABLE_MAX    (64 << 20)      /* QEMU's limit for the whole table */
#define QCOW2_SN_MAX_L1 (32 << 20 >> 3) /* QEMU's limit for an L1 table, entries */
#define SN_NAME_MAX     1023

typedef struct SnapEntry {
    int64_t pos, len;                   /* within the table bytes */
    uint64_t l1_offset;
    uint32_t l1_size;
    char id[128], name[1024];
    uint32_t date_sec, date_nsec;
    uint64_t vm_clock_nsec, vm_state_size;
} SnapEntry;

typedef struct SnapTable {
    uint8_t *buf;
    int64_t len;
} SnapTable;

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = v >> 8;
    p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (24 - 8 * i));
    }
}

/* ---- The table --------------------------------------------------------------------- */

/* Entry at @pos of @t, checked against the table's end. */
static int parse_entry(const SnapTable *t, int64_t pos, SnapEntry *e)
{
    const uint8_t *p = t->buf + pos;
    uint32_t extra;
    uint16_t id_len, name_len;

    if (pos + SN_FIXED > t->len) {
        return -EINVAL;
    }
    extra = get32(p + 36);
    id_len = get16(p + 12);
    name_len = get16(p + 14);
    if (extra > SN_MAX_EXTRA || id_len >= sizeof(e->id) || name_len >= sizeof(e->name)) {
        return -EINVAL;
    }
    e->pos = pos;
    e->len = qcow2_align_up(SN_FIXED + (int64_t)extra + id_len + name_len, 8);
    if (pos + e->len > t->len) {
        return -EINVAL;
    }
    e->l1_offset = qcow2_be64(p);
    e->l1_size = get32(p + 8);
    e->date_sec = get32(p + 16);
    e->date_nsec = get32(p + 20);
    e->vm_clock_nsec = qcow2_be64(p + 24);
    e->vm_state_size = get32(p + 32);
    if (extra >= 8) {
        e->vm_state_size = qcow2_be64(p + SN_FIXED);
    }
    memcpy(e->id, p + SN_FIXED + extra, id_len);
    e->id[id_len] = '\0';
    memcpy(e->name, p + SN_FIXED + extra + id_len, name_len);
    e->name[name_len] = '\0';
    return 0;
}

/* The whole table of the image, as bytes. */
static int coroutine_fn read_table(BlockDriverState *bs, BDRVQcow2State *s, SnapTable *t)
    GRAPH_RDLOCK QCOW2_LOCKED
{
    int64_t len = 0, raw = 0;
    uint8_t h[SN_FIXED];
    int ret;

    t->buf = NULL;
    t->len = 0;
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        ret = qcow2_file_pread(bs, s->snapshots_offset + len, SN_FIXED, h);
        if (ret < 0) {
            return ret;
        }
        raw = len + SN_FIXED + (int64_t)get32(h + 36) + get16(h + 12) + get16(h + 14);
        len = qcow2_align_up(raw, 8);
        if (len > SN_TABLE_MAX) {
            qcow2_report_corruption(s, "snapshot table larger than %d bytes", SN_TABLE_MAX);
            return -EIO;
        }
    }
    /* QEMU does not write the padding after the last entry: the table may
     * end (and the file with it) up to 7 bytes short.  Read it as zeroes. */
    t->buf = calloc(1, len ? len : 1);
    if (!t->buf) {
        return -ENOMEM;
    }
    t->len = len;
    ret = raw ? qcow2_file_pread(bs, s->snapshots_offset, raw, t->buf) : 0;
    /* Every entry parses, or none is trusted: a lookup that stopped at a
     * bad one would miss those behind it. */
    for (int64_t pos = 0; ret >= 0 && pos < len;) {
        SnapEntry e;

        if (parse_entry(t, pos, &e) < 0) {
            qcow2_report_corruption(s, "snapshot table entry at 0x%llx is invalid",
                                    (unsigned long long)(s->snapshots_offset + pos));
            return -EIO;
        }
        pos += e.len;
    }
    return ret;
}

/* The entry QEMU's lookup finds: both given, both match; else either. */
static bool find_entry(const SnapTable *t, const char *id, const char *name, SnapEntry *out)
{
    SnapEntry e;

    for (int64_t pos = 0; pos < t->len && parse_entry(t, pos, &e) == 0; pos += e.len) {
        if ((!id || !strcmp(e.id, id)) && (!name || !strcmp(e.name, name))) {
            *out = e;
            return true;
        }
    }
    return false;
}

/* One past the largest numeric id, as QEMU numbers snapshots. */
static unsigned long next_id(const SnapTable *t)
{
    unsigned long max = 0;
    SnapEntry e;

    for (int64_t pos = 0; pos < t->len && parse_entry(t, pos, &e) == 0; pos += e.len) {
        unsigned long v = strtoul(e.id, NULL, 10);
        max = v > max ? v : max;
    }
    return max + 1;
}

/* Write @t to new clusters and point the header at it; the old table's
 * clusters are dropped after the next sync. */
static int coroutine_fn replace_table(BlockDriverState *bs, BDRVQcow2State *s, const SnapTable *t,
                                      int64_t old_len, uint32_t count) GRAPH_RDLOCK QCOW2_LOCKED
{
    int64_t old_off = s->snapshots_offset, off = 0;
    uint8_t h[12];
    int ret;

    if (t->len) {
        int64_t n = qcow2_align_up(t->len, s->cluster_size) >> s->cluster_bits;

        if (n > qcow2_max_alloc_clusters(s)) {
            return -EFBIG;
        }
        off = qcow2_alloc_clusters(bs, s, n, NULL);
        if (off < 0) {
            return (int)off;
        }
        ret = qcow2_file_pwrite(bs, off, t->len, t->buf);
        if (ret < 0) {
            return ret;
        }
    }
    /* Everything the new table names is on disk before the header names it. */
    ret = qcow2_sync_metadata(bs, s);
    if (ret >= 0) {
        ret = qcow2_file_flush(bs, s);
    }
    if (ret < 0) {
        return ret;
    }
    put32(h, count);
    put32(h + 4, (uint32_t)((uint64_t)off >> 32));
    put32(h + 8, (uint32_t)off);
    ret = qcow2_file_pwrite(bs, 60, 12, h);
    if (ret >= 0) {
        ret = qcow2_file_flush(bs, s);
    }
    if (ret < 0) {
        s->broken = true;               /* which table the header names is unknown */
        return ret;
    }
    s->nb_snapshots = count;
    s->snapshots_offset = off;
    if (old_len) {
        qcow2_defer_free(s, old_off, old_len, QCOW2_DISCARD_OTHER);
    }
    return 0;
}

/* ---- The overlap guard ------------------------------------------------------------ */

static int64_t range_clusters(BDRVQcow2State *s, int64_t off, int64_t bytes)
{
    return bytes > 0 ? ((off + bytes - 1) >> s->cluster_bits) - (off >> s->cluster_bits) + 1
                     : 0;
}

/* Enter (or remove) the clusters of [off, +bytes) in the metadata set;
 * entering cannot fail once range_clusters() of them are reserved. */
static void guard_range(BDRVQcow2State *s, int64_t off, int64_t bytes, bool enter) QCOW2_LOCKED
{
    for (int64_t c = off >> s->cluster_bits; bytes > 0 && c <= (off + bytes - 1) >> s->cluster_bits;
         c++) {
        if (enter) {
            qcow2_meta_add(s, c << s->cluster_bits);
        } else {
            qcow2_meta_remove(s, c << s->cluster_bits);
        }
    }
}

/* Is @e's L1 table where a table can be (a corrupt entry's is ignored by
 * the guard, and refused where it would be used)? */
static bool snapshot_l1_valid(BDRVQcow2State *s, const SnapEntry *e) QCOW2_LOCKED
{
    uint64_t end = (uint64_t)s->file_size;

    /* In unsigned arithmetic: a garbage offset must not wrap to "inside". */
    return !(e->l1_offset & (s->cluster_size - 1)) && e->l1_size <= QCOW2_SN_MAX_L1 &&
           (!e->l1_size || (e->l1_offset <= end && (uint64_t)e->l1_size * 8 <= end - e->l1_offset));
}

/* The clusters table @t at @off and the L1 tables it names take. */
static int64_t table_clusters(BDRVQcow2State *s, const SnapTable *t, int64_t off)
    QCOW2_LOCKED
{
    int64_t n = range_clusters(s, off, t->len);
    SnapEntry e;

    for (int64_t pos = 0; pos < t->len && parse_entry(t, pos, &e) == 0; pos += e.len) {
        if (snapshot_l1_valid(s, &e)) {
            n += range_clusters(s, (int64_t)e.l1_offset, (int64_t)e.l1_size * 8);
        }
    }
    return n;
}

static void guard_table(BDRVQcow2State *s, const SnapTable *t, int64_t off, bool enter)
    QCOW2_LOCKED
{
    SnapEntry e;

    guard_range(s, off, t->len, enter);
    for (int64_t pos = 0; pos < t->len && parse_entry(t, pos, &e) == 0; pos += e.len) {
        if (snapshot_l1_valid(s, &e)) {
            guard_range(s, (int64_t)e.l1_offset, (int64_t)e.l1_size * 8, enter);
        }
    }
}

static int copy_table(const SnapTable *t, SnapTable *out)
{
    out->buf = malloc(t->len ? t->len : 1);
    if (!out->buf) {
        return -ENOMEM;
    }
    memcpy(out->buf, t->buf, t->len);
    out->len = t->len;
    return 0;
}

/* The table in the header is replaced by @t (now at s->snapshots_offset):
 * the guard follows.  Room for @t's clusters was reserved. */
static void guard_swap(BDRVQcow2State *s, const SnapTable *old, int64_t old_off,
                       const SnapTable *t) QCOW2_LOCKED
{
    guard_table(s, old, old_off, false);
    guard_table(s, t, s->snapshots_offset, true);
}

int coroutine_fn qcow2_snapshot_guard_init(BlockDriverState *bs, BDRVQcow2State *s,
                                           Error **errp)
{
    SnapTable t = { 0 };
    int ret = s->nb_snapshots ? read_table(bs, s, &t) : 0;

    if (ret >= 0 && t.len) {
        ret = qcow2_meta_reserve(s, table_clusters(s, &t, s->snapshots_offset));
        if (ret >= 0) {
            guard_table(s, &t, s->snapshots_offset, true);
        }
    }
    if (ret < 0 && ret != -EIO) {
        error_setg_errno(errp, -ret, "Could not read the snapshot table");
    }
    free(t.buf);
    /* A table that does not parse was reported corrupt: writes stop. */
    return ret == -EIO ? 0 : ret;
}

/* ---- References ------------------------------------------------------------------- */

/* Add @delta (+1 or -1, -1 deferred) to a host range of a table or cluster. */
static int coroutine_fn ref(BlockDriverState *bs, BDRVQcow2State *s, int64_t off, int64_t bytes,
                            int delta) GRAPH_RDLOCK QCOW2_LOCKED
{
    if (delta < 0) {
        qcow2_defer_free(s, off, bytes, QCOW2_DISCARD_SNAPSHOT);
        return 0;
    }
    return qcow2_update_refcount(bs, s, off, bytes, delta);
}

/* The host range an L2 entry holds (0 bytes: none). */
static int64_t entry_range(BDRVQcow2State *s, L2Entry l, int64_t *bytes)
{
    if (is_compressed(l)) {
        uint64_t desc = l.e & s->coffset_mask;
        *bytes = (int64_t)(((desc >> s->csize_shift) & s->csize_mask) + 1) * 512;
        return (int64_t)((desc & ((1ULL << s->csize_shift) - 1)) & ~511ULL);
    }
    *bytes = host_of(l) ? s->cluster_size : 0;
    return host_of(l);
}

/* @delta on every cluster of the L2 table at @off; with +1 the entries lose
 * COPIED (the table is the active layer's, read through the cache). */
static int coroutine_fn ref_l2(BlockDriverState *bs, BDRVQcow2State *s, int64_t off, int delta)
    GRAPH_RDLOCK QCOW2_LOCKED
{
    void *table;
    bool dirty = false;
    int ret = qcow2_cache_get(bs, s->l2_cache, off, &table);

    if (ret < 0) {
        return ret;
    }
    for (int64_t i = 0; ret >= 0 && i < s->l2_entries; i++) {
        L2Entry l = get_entry(s, table, i);
        int64_t bytes, host = entry_range(s, l, &bytes);

        if (!bytes) {
            continue;
        }
        ret = ref(bs, s, host, bytes, delta);
        if (ret >= 0 && delta > 0 && (l.e & QCOW2_OFLAG_COPIED)) {
            l.e &= ~QCOW2_OFLAG_COPIED;
            set_entry(s, table, i, l);
            dirty = true;
        }
    }
    if (dirty) {
        qcow2_cache_mark_dirty(s->l2_cache, table);
    }
    qcow2_cache_put(s->l2_cache, table);
    return ret < 0 ? ret : ref(bs, s, off, s->cluster_size, delta);
}

/* One more reference on everything the active L1 table reaches. */
static int coroutine_fn ref_active(BlockDriverState *bs, BDRVQcow2State *s)
    GRAPH_RDLOCK QCOW2_LOCKED
{
    for (uint32_t i = 0; i < s->l1_size; i++) {
        int64_t off = s->l1[i] & QCOW2_OFFSET_MASK;
        int ret;

        if (!off) {
            continue;
        }
        ret = ref_l2(bs, s, off, 1);
        if (ret < 0) {
            return ret;
        }
        if (s->l1[i] & QCOW2_OFLAG_COPIED) {
            s->l1[i] &= ~QCOW2_OFLAG_COPIED;
            l1_mark_dirty(s, i);
        }
    }
    return 0;
}

/* Is @off an L2 table of the active layer (which a snapshot may share)? */
static bool meta_is_shared(BDRVQcow2State *s, int64_t off) QCOW2_LOCKED
{
    for (uint32_t i = 0; i < s->l1_size; i++) {
        if ((int64_t)(s->l1[i] & QCOW2_OFFSET_MASK) == off) {
            return true;
        }
    }
    return false;
}

/* Drop the references a deleted snapshot held (applied after the sync). */
static int coroutine_fn unref_snapshot(BlockDriverState *bs, BDRVQcow2State *s,
                                       const SnapEntry *e) GRAPH_RDLOCK QCOW2_LOCKED
{
    uint64_t *l1;
    int ret;

    /* A snapshot of a corrupt image must not free what others use. */
    if (!snapshot_l1_valid(s, e)) {
        qcow2_report_corruption(s, "snapshot '%s' has an invalid L1 table", e->name);
        return -EIO;
    }
    l1 = malloc(e->l1_size ? (size_t)e->l1_size * 8 : 8);
    ret = l1 ? 0 : -ENOMEM;

    if (ret == 0 && e->l1_size) {
        ret = qcow2_file_pread(bs, (int64_t)e->l1_offset, (int64_t)e->l1_size * 8, l1);
    }
    for (uint32_t i = 0; ret >= 0 && i < e->l1_size; i++) {
        int64_t off = qcow2_be64(&l1[i]) & QCOW2_OFFSET_MASK;
        if (!off) {
            continue;
        }
        if ((off & (s->cluster_size - 1)) || off >= s->file_size ||
            (qcow2_overlaps_metadata(s, off, 1) && !meta_is_shared(s, off))) {
            qcow2_report_corruption(s, "snapshot '%s' names an invalid L2 table at 0x%llx",
                                    e->name, (unsigned long long)off);
            continue;                   /* leaked, never freed under a live table */
        }
        ret = ref_l2(bs, s, off, -1);
    }
    if (ret >= 0 && e->l1_size) {
        qcow2_defer_free(s, (int64_t)e->l1_offset, (int64_t)e->l1_size * 8,
                         QCOW2_DISCARD_SNAPSHOT);
    }
    free(l1);
    return ret;
}

/* ---- Create and delete ------------------------------------------------------------ */

typedef struct SnapCall {
    const char *id, *name;
    json_object *info;                  /* delete: the SnapshotInfo */
} SnapCall;

/* A new entry for the active layer, whose L1 copy is at @l1_off. */
static int append_entry(SnapTable *t, BDRVQcow2State *s, int64_t l1_off, const char *id,
                        const char *name)
{
    size_t id_len = strlen(id), name_len = strlen(name);
    int64_t len = qcow2_align_up(SN_FIXED + SN_EXTRA + (int64_t)(id_len + name_len), 8);
    uint8_t *buf = realloc(t->buf, t->len + len), *p;
    struct timespec now;

    if (!buf) {
        return -ENOMEM;
    }
    t->buf = buf;
    p = buf + t->len;
    memset(p, 0, len);
    clock_gettime(CLOCK_REALTIME, &now);
    now.tv_nsec -= now.tv_nsec % 1000;     /* microseconds, as QEMU's clock */
    qcow2_put_be64(p, (uint64_t)l1_off);
    put32(p + 8, s->l1_size);
    put16(p + 12, (uint16_t)id_len);
    put16(p + 14, (uint16_t)name_len);
    put32(p + 16, (uint32_t)now.tv_sec);
    put32(p + 20, (uint32_t)now.tv_nsec);
    /* Without a guest there is no virtual clock: the wall clock, as
     * qemu-storage-daemon records. */
    qcow2_put_be64(p + 24, (uint64_t)now.tv_sec * 1000000000ULL + (uint64_t)now.tv_nsec);
    put32(p + 36, SN_EXTRA);
    qcow2_put_be64(p + SN_FIXED + 8, (uint64_t)s->size);     /* disk_size */
    qcow2_put_be64(p + SN_FIXED + 16, UINT64_MAX);          /* icount: none */
    memcpy(p + SN_FIXED + SN_EXTRA, id, id_len);
    memcpy(p + SN_FIXED + SN_EXTRA + id_len, name, name_len);
    t->len += len;
    return 0;
}

/* Clusters for a copy of the active L1 table (0: it is empty). */
static int64_t coroutine_fn alloc_l1_copy(BlockDriverState *bs, BDRVQcow2State *s)
    GRAPH_RDLOCK QCOW2_LOCKED
{
    int64_t n = qcow2_align_up((int64_t)s->l1_size * 8, s->cluster_size) >> s->cluster_bits;

    if (!n) {
        return 0;
    }
    return n <= qcow2_max_alloc_clusters(s) ? qcow2_alloc_clusters(bs, s, n, NULL) : -EFBIG;
}

static int coroutine_fn write_l1_copy(BlockDriverState *bs, BDRVQcow2State *s, int64_t off)
    GRAPH_RDLOCK QCOW2_LOCKED
{
    int64_t bytes = (int64_t)s->l1_size * 8;
    uint64_t *copy = malloc(bytes ? bytes : 8);
    int ret;

    if (!copy) {
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < s->l1_size; i++) {
        qcow2_put_be64(&copy[i], s->l1[i]);
    }
    ret = bytes ? qcow2_file_pwrite(bs, off, bytes, copy) : 0;
    free(copy);
    return ret;
}

static int coroutine_fn create_co(BlockDriverState *bs, void *opaque) GRAPH_RDLOCK
{
    BDRVQcow2State *s = bs->opaque;
    SnapCall *c = opaque;
    SnapTable t = { 0 }, old = { 0 };
    SnapEntry found;
    int64_t l1_off = 0, old_len, old_off = s->snapshots_offset;
    char id[32];
    int ret;

    if (strlen(c->name) > SN_NAME_MAX) {
        return -ENAMETOOLONG;
    }
    co_mutex_lock(&s->lock);
    ret = qcow2_refuse_writes(bs, s) ? -EIO : read_table(bs, s, &t);
    if (ret >= 0 && find_entry(&t, NULL, c->name, &found)) {
        ret = -EEXIST;
    }
    if (ret >= 0 && s->nb_snapshots >= 65536) {
        ret = -EFBIG;
    }
    /* What can fail for want of room fails before any reference is added. */
    if (ret >= 0 && (l1_off = alloc_l1_copy(bs, s)) < 0) {
        ret = (int)l1_off;
        l1_off = 0;
    }
    if (ret >= 0) {
        ret = ref_active(bs, s);        /* on failure: clusters leaked, nothing worse */
    }
    if (ret >= 0) {
        ret = write_l1_copy(bs, s, l1_off);
    }
    old_len = t.len;
    if (ret >= 0) {
        ret = copy_table(&t, &old);
    }
    if (ret >= 0) {
        snprintf(id, sizeof(id), "%lu", next_id(&t));
        ret = append_entry(&t, s, l1_off, id, c->name);
    }
    if (ret >= 0) {
        ret = qcow2_meta_reserve(s, table_clusters(s, &t, 0));
    }
    if (ret >= 0) {
        ret = replace_table(bs, s, &t, old_len, s->nb_snapshots + 1);
        if (ret >= 0) {
            guard_swap(s, &old, old_off, &t);
        }
    }
    if (ret < 0 && l1_off > 0) {
        qcow2_update_refcount(bs, s, l1_off, (int64_t)s->l1_size * 8, -1);
    }
    if (ret >= 0 && qcow2_sync_metadata(bs, s) < 0) {
        /* The snapshot exists: only the old table's clusters wait. */
        error_report("qcow2 image '%s': old snapshot table not freed yet", s->image_filename);
    }
    co_mutex_unlock(&s->lock);
    free(t.buf);
    free(old.buf);
    return ret;
}

static json_object *snapshot_info(const SnapEntry *e)
{
    json_object *o = json_object_new_object();

    json_object_object_add(o, "id", json_object_new_string(e->id));
    json_object_object_add(o, "name", json_object_new_string(e->name));
    json_object_object_add(o, "vm-state-size", json_object_new_int64((int64_t)e->vm_state_size));
    json_object_object_add(o, "date-sec", json_object_new_int64(e->date_sec));
    json_object_object_add(o, "date-nsec", json_object_new_int64(e->date_nsec));
    json_object_object_add(o, "vm-clock-sec",
                           json_object_new_int64((int64_t)(e->vm_clock_nsec / 1000000000ULL)));
    json_object_object_add(o, "vm-clock-nsec",
                           json_object_new_int64((int64_t)(e->vm_clock_nsec % 1000000000ULL)));
    return o;
}

static int coroutine_fn delete_co(BlockDriverState *bs, void *opaque) GRAPH_RDLOCK
{
    BDRVQcow2State *s = bs->opaque;
    SnapCall *c = opaque;
    SnapTable t = { 0 }, old = { 0 };
    SnapEntry e;
    int ret;

    co_mutex_lock(&s->lock);
    ret = qcow2_refuse_writes(bs, s) ? -EIO : read_table(bs, s, &t);
    if (ret >= 0 && !find_entry(&t, c->id, c->name, &e)) {
        ret = -ENOENT;
    }
    if (ret >= 0) {
        ret = qcow2_meta_reserve(s, table_clusters(s, &t, 0));
    }
    if (ret >= 0) {
        ret = copy_table(&t, &old);
    }
    if (ret >= 0) {
        /* The table without it first; then its references go. */
        int64_t old_off = s->snapshots_offset;

        memmove(t.buf + e.pos, t.buf + e.pos + e.len, t.len - e.pos - e.len);
        t.len -= e.len;
        ret = replace_table(bs, s, &t, old.len, s->nb_snapshots - 1);
        if (ret >= 0) {
            guard_swap(s, &old, old_off, &t);
        }
    }
    if (ret >= 0) {
        /* The snapshot is gone from here on: what follows can only leak. */
        c->info = snapshot_info(&e);
        if (unref_snapshot(bs, s, &e) < 0 || qcow2_sync_metadata(bs, s) < 0) {
            error_report("qcow2 image '%s': clusters of snapshot '%s' not freed",
                         s->image_filename, e.name);
        }
    }
    co_mutex_unlock(&s->lock);
    free(t.buf);
    free(old.buf);
    return ret;
}

int qcow2_snapshot_create(BlockDriverState *bs, const char *name)
{
    SnapCall c = { NULL, name, NULL };

    GLOBAL_STATE_CODE();
    if (qcow2_has_data_file(bs->opaque)) {
        return -ENOTSUP;         /* a data file cannot hold two versions of a cluster */
    }
    return bdrv_run_co(bs, create_co, &c);
}

int qcow2_snapshot_delete(BlockDriverState *bs, const char *id, const char *name,
                          json_object **info)
{
    SnapCall c = { id, name, NULL };
    int ret;

    GLOBAL_STATE_CODE();
    ret = bdrv_run_co(bs, delete_co, &c);
    if (ret < 0) {
        json_object_put(c.info);
        return ret;
    }
    *info = c.info;
    return 0;
}
