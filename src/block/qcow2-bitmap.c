/*
 * qcow2-bitmap.c - persistent dirty bitmaps: the qcow2 bitmaps extension
 * (docs/qcow2-bitmaps.md).
 *
 * The image holds a bitmap directory (one entry per bitmap: name, flags,
 * granularity, the offset of its bitmap table) and, per bitmap, a table
 * of data clusters; a cluster of zeroes is not stored.  The header's
 * bitmaps extension points at the directory, and autoclear bit 0 says
 * that the extension is current: a program that does not know bitmaps
 * clears it when it writes the image, and the bitmaps are then dropped.
 *
 * Life cycle, as QEMU's:
 *   open        every bitmap becomes a named bitmap of the node; one found
 *               "in use" was not stored after its last change (a crash)
 *               and is inconsistent.  Opened read-write, each entry is
 *               marked in use on disk before anything is written; opened
 *               read-only, the bitmaps are read-only.
 *   close and   the node's persistent bitmaps are written to new
 *   read-only   clusters, then a new directory, then the header points at
 *               it; only then are the old clusters freed.  A crash at any
 *               point leaves either the old state (entries in use) or the
 *               new one, plus leaked clusters.
 *   remove      a persistent bitmap leaves the image at once.
 *
 * Everything here is global state: it runs in coroutines of the main
 * thread (qcow2_run_in_coroutine) with s->lock held where it says so.
 * s->bitmaps changes only there, and whole: readers in the main thread
 * never see half an update.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/atomic.h"
#include "blockd/block-io.h"
#include "blockd/dirty-bitmap.h"
#include "blockd/log.h"
#include "blockd/main-loop.h"
#include "qcow2.h"

#define BME_FLAG_IN_USE        (1u << 0)
#define BME_FLAG_AUTO          (1u << 1)
#define BME_RESERVED_FLAGS     0xfffffffcu
#define BME_TYPE_DIRTY         1
#define BME_MIN_GRAN_BITS      9
#define BME_MAX_GRAN_BITS      31
#define BME_MAX_NAME           1023
#define BME_MAX_TABLE_SIZE     0x8000000u
#define BME_MAX_PHYS_SIZE      0x20000000ull
#define BME_ENTRY_RESERVED     0xff000000000001feull
#define BME_ENTRY_OFFSET       0x00fffffffffffe00ull
#define BME_ENTRY_ALL_ONES     1ull
#define BME_MAX_BITMAPS        65535u
#define BME_MAX_DIR_SIZE       (1024ull * BME_MAX_BITMAPS)   /* QEMU's limit */
#define BME_HEADER_SIZE        24

struct Qcow2Bitmap {
    char *name;
    int64_t table_offset;
    uint32_t table_size;         /* entries */
    uint32_t flags;
    int gran_bits;
};

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | p[1] << 16 | p[2] << 8 | p[3];
}

static void wr32(uint8_t *p, uint32_t v)
{
    p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v;
}

static uint64_t entry_size(size_t name_len)
{
    return qcow2_align_up(BME_HEADER_SIZE + name_len, 8);
}

static void list_free(Qcow2Bitmap *list, uint32_t n)
{
    for (uint32_t i = 0; list && i < n; i++) {
        free(list[i].name);
    }
    free(list);
}

void qcow2_bitmaps_free(BDRVQcow2State *s)
{
    list_free(s->bitmaps, s->nb_bitmaps);
    s->bitmaps = NULL;
    s->nb_bitmaps = 0;
}

/* Clusters the bitmap of a @len-byte disk at 2^@gran_bits takes. */
static uint64_t table_entries(BDRVQcow2State *s, int64_t len, int gran_bits)
{
    uint64_t bits = ((uint64_t)len + (1ull << gran_bits) - 1) >> gran_bits;

    return ((bits + 7) / 8 + s->cluster_size - 1) >> s->cluster_bits;
}

/* Read [offset, +bytes) of the file; what lies past its end reads as
 * zeroes (and then fails the checks that follow, as in QEMU). */
static int coroutine_fn read_zero_filled(BlockDriverState *bs, BDRVQcow2State *s,
                                         int64_t offset, uint64_t bytes, void *buf)
    GRAPH_RDLOCK QCOW2_LOCKED
{
    uint64_t avail = 0;

    memset(buf, 0, bytes);
    if (offset >= 0 && offset < s->file_size) {
        avail = (uint64_t)(s->file_size - offset);
        avail = avail < bytes ? avail : bytes;
    }
    return avail ? qcow2_file_pread(bs, offset, (int64_t)avail, buf) : 0;
}

/* ---- The header extension ------------------------------------------------------ */

int qcow2_bitmaps_ext_parse(BDRVQcow2State *s, const uint8_t *p, uint32_t len, Error **errp)
{
    uint32_t nb;
    uint64_t size, offset;

    if (len < 24) {
        error_setg(errp, "bitmaps_ext: Invalid extension length");
        return -EINVAL;
    }
    nb = rd32(p);
    size = qcow2_be64(p + 8);
    offset = qcow2_be64(p + 16);
    if (rd32(p + 4)) {
        error_setg(errp, "bitmaps_ext: Reserved field is not zero");
        return -EINVAL;
    }
    if (s->version < 3 || !(s->autoclear & QCOW2_AUTOCLEAR_BITMAPS)) {
        /* Written by a program without bitmap support: the extension is
         * stale and goes at the first read-write open. */
        warn_report("qcow2 image '%s': a program lacking bitmap support modified this "
                    "file, so all bitmaps are now considered inconsistent (they are "
                    "dropped; some clusters may be leaked, run 'qemu-img check -r' to "
                    "reclaim them)", s->image_filename);
        s->bitmaps_stale = true;
        return 0;
    }
    if (nb > BME_MAX_BITMAPS) {
        error_setg(errp, "bitmaps_ext: Image has %u bitmaps, exceeding the QEMU supported "
                   "maximum of %u", nb, BME_MAX_BITMAPS);
        return -EINVAL;
    }
    if (nb == 0) {
        error_setg(errp, "found bitmaps extension with zero bitmaps");
        return -EINVAL;
    }
    if (offset & (s->cluster_size - 1)) {
        error_setg(errp, "bitmaps_ext: invalid bitmap directory offset");
        return -EINVAL;
    }
    if (size > BME_MAX_DIR_SIZE) {
        error_setg(errp, "bitmaps_ext: bitmap directory size (%llu) exceeds the maximum "
                   "supported size (%llu)", (unsigned long long)size, BME_MAX_DIR_SIZE);
        return -EINVAL;
    }
    s->nb_bitmaps = nb;
    s->bitmap_dir_size = size;
    s->bitmap_dir_offset = (int64_t)offset;
    return 0;
}

uint32_t qcow2_bitmaps_ext_build(BDRVQcow2State *s, uint8_t out[24])
{
    if (!s->nb_bitmaps) {
        return 0;
    }
    memset(out, 0, 24);
    wr32(out, s->nb_bitmaps);
    qcow2_put_be64(out + 8, s->bitmap_dir_size);
    qcow2_put_be64(out + 16, (uint64_t)s->bitmap_dir_offset);
    return 24;
}

/* ---- The directory -------------------------------------------------------------- */

static bool entry_valid(BDRVQcow2State *s, const Qcow2Bitmap *b, int64_t len)
{
    uint64_t phys = (uint64_t)b->table_size * s->cluster_size;

    if (!b->table_size || !b->table_offset || (b->table_offset & (s->cluster_size - 1)) ||
        ((uint64_t)b->table_offset & ~BME_ENTRY_OFFSET) ||
        b->table_size > BME_MAX_TABLE_SIZE || b->gran_bits > BME_MAX_GRAN_BITS ||
        b->gran_bits < BME_MIN_GRAN_BITS || (b->flags & BME_RESERVED_FLAGS) ||
        phys > BME_MAX_PHYS_SIZE) {
        return false;
    }
    /* A consistent bitmap covers the whole disk. */
    return (b->flags & BME_FLAG_IN_USE) || (uint64_t)len <= (phys * 8) << b->gran_bits;
}

/* Parse the @size-byte directory in @dir into *@out (@nb entries). */
static int dir_parse(BDRVQcow2State *s, const uint8_t *dir, uint64_t size, uint32_t nb,
                     int64_t len, Qcow2Bitmap **out, Error **errp)
{
    Qcow2Bitmap *list = calloc(nb, sizeof(*list));
    uint64_t pos = 0;
    uint32_t i = 0;

    if (!list) {
        error_setg(errp, "Failed to allocate space for bitmap directory");
        return -ENOMEM;
    }
    for (; pos < size; i++) {
        Qcow2Bitmap *b = &list[i];
        uint32_t name_len, extra;

        if (size - pos < BME_HEADER_SIZE) {
            goto broken;
        }
        if (i >= nb) {
            error_setg(errp, "More bitmaps found than specified in header extension");
            goto fail;
        }
        name_len = (uint32_t)dir[pos + 18] << 8 | dir[pos + 19];
        extra = rd32(dir + pos + 20);
        if (entry_size((uint64_t)name_len + extra) > size - pos) {
            goto broken;
        }
        if (extra) {
            error_setg(errp, "Bitmap extra data is not supported");
            goto fail;
        }
        b->table_offset = (int64_t)qcow2_be64(dir + pos);
        b->table_size = rd32(dir + pos + 8);
        b->flags = rd32(dir + pos + 12);
        b->gran_bits = dir[pos + 17];
        b->name = strndup((const char *)dir + pos + BME_HEADER_SIZE, name_len);
        if (name_len > BME_MAX_NAME || dir[pos + 16] != BME_TYPE_DIRTY ||
            !entry_valid(s, b, len)) {
            error_setg(errp, "Bitmap '%.*s' doesn't satisfy the constraints", (int)name_len,
                       (const char *)dir + pos + BME_HEADER_SIZE);
            goto fail;
        }
        for (uint32_t j = 0; j < i; j++) {
            if (!strcmp(list[j].name, b->name)) {
                error_setg(errp, "Bitmap '%s' is stored twice in the bitmap directory",
                           b->name);
                goto fail;
            }
        }
        pos += entry_size(name_len);
    }
    if (i != nb) {
        error_setg(errp, "Less bitmaps found than specified in header extension");
        goto fail;
    }
    for (i = 0; i < nb; i++) {
        if (!list[i].name[0]) {
            error_setg(errp, "Bitmap '' doesn't satisfy the constraints");
            goto fail;
        }
    }
    *out = list;
    return 0;

broken:
    error_setg(errp, "Broken bitmap directory");
fail:
    list_free(list, nb);
    return -EINVAL;
}

/* Read the directory the header points at. */
static int coroutine_fn dir_read(BlockDriverState *bs, BDRVQcow2State *s, int64_t len,
                                 Qcow2Bitmap **out, Error **errp) GRAPH_RDLOCK QCOW2_LOCKED
{
    uint8_t *dir;
    int ret;

    if (!s->bitmap_dir_size) {
        error_setg(errp, "Requested bitmap directory size is zero");
        return -EINVAL;
    }
    dir = malloc(s->bitmap_dir_size);
    if (!dir) {
        error_setg(errp, "Failed to allocate space for bitmap directory");
        return -ENOMEM;
    }
    ret = read_zero_filled(bs, s, s->bitmap_dir_offset, s->bitmap_dir_size, dir);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Failed to read bitmap directory");
    } else {
        ret = dir_parse(s, dir, s->bitmap_dir_size, s->nb_bitmaps, len, out, errp);
    }
    free(dir);
    return ret;
}

/* The directory bytes for @list (@n entries): *@size. */
static uint8_t *dir_build(const Qcow2Bitmap *list, uint32_t n, uint64_t *size)
{
    uint64_t total = 0, pos = 0;
    uint8_t *dir;

    for (uint32_t i = 0; i < n; i++) {
        total += entry_size(strlen(list[i].name));
    }
    dir = calloc(1, total ? total : 1);
    if (!dir) {
        return NULL;
    }
    for (uint32_t i = 0; i < n; i++) {
        size_t name_len = strlen(list[i].name);

        qcow2_put_be64(dir + pos, (uint64_t)list[i].table_offset);
        wr32(dir + pos + 8, list[i].table_size);
        wr32(dir + pos + 12, list[i].flags);
        dir[pos + 16] = BME_TYPE_DIRTY;
        dir[pos + 17] = (uint8_t)list[i].gran_bits;
        dir[pos + 18] = (uint8_t)(name_len >> 8);
        dir[pos + 19] = (uint8_t)name_len;
        memcpy(dir + pos + BME_HEADER_SIZE, list[i].name, name_len);
        pos += entry_size(name_len);
    }
    *size = total;
    return dir;
}

/* ---- Bitmap tables ---------------------------------------------------------------- */

static int coroutine_fn table_read(BlockDriverState *bs, BDRVQcow2State *s,
                                   const Qcow2Bitmap *b, uint64_t **out)
    GRAPH_RDLOCK QCOW2_LOCKED
{
    uint64_t bytes = (uint64_t)b->table_size * 8;
    uint64_t *t;
    int ret;

    t = malloc(bytes);
    if (!t) {
        return -ENOMEM;
    }
    ret = read_zero_filled(bs, s, b->table_offset, bytes, t);
    for (uint32_t i = 0; ret >= 0 && i < b->table_size; i++) {
        uint64_t e = qcow2_be64(&t[i]), off = e & BME_ENTRY_OFFSET;

        t[i] = e;
        if ((e & BME_ENTRY_RESERVED) || (off && (e & BME_ENTRY_ALL_ONES)) ||
            (off & (s->cluster_size - 1))) {
            ret = -EINVAL;
        }
    }
    if (ret < 0) {
        free(t);
        return ret;
    }
    *out = t;
    return 0;
}

/* Fill @bm from the table of @b. */
static int coroutine_fn data_read(BlockDriverState *bs, BDRVQcow2State *s,
                                  const Qcow2Bitmap *b, BdrvDirtyBitmap *bm, Error **errp)
    GRAPH_RDLOCK QCOW2_LOCKED
{
    uint64_t total = dirty_bitmap_serial_bytes(bm), *t = NULL;
    uint8_t *buf;
    int ret;

    if (table_entries(s, dirty_bitmap_size(bm), b->gran_bits) != b->table_size) {
        error_setg_errno(errp, EINVAL, "Could not read bitmap '%s' from image", b->name);
        return -EINVAL;
    }
    ret = table_read(bs, s, b, &t);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Could not read bitmap_table table from image for "
                         "bitmap '%s'", b->name);
        return ret;
    }
    buf = malloc(s->cluster_size);
    if (!buf) {
        free(t);
        return -ENOMEM;
    }
    for (uint32_t i = 0; ret >= 0 && i < b->table_size; i++) {
        uint64_t first = (uint64_t)i << s->cluster_bits;
        uint64_t n = total - first < (uint64_t)s->cluster_size ? total - first
                                                                : (uint64_t)s->cluster_size;
        uint64_t off = t[i] & BME_ENTRY_OFFSET;

        if (off) {
            ret = read_zero_filled(bs, s, (int64_t)off, n, buf);
        } else {
            memset(buf, (t[i] & BME_ENTRY_ALL_ONES) ? 0xff : 0, n);
        }
        if (ret >= 0) {
            dirty_bitmap_deserialize(bm, first, n, buf);
        }
    }
    free(buf);
    free(t);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Could not read bitmap '%s' from image", b->name);
    }
    return ret < 0 ? ret : 0;
}

static int64_t coroutine_fn alloc_bytes(BlockDriverState *bs, BDRVQcow2State *s, uint64_t bytes)
    GRAPH_RDLOCK QCOW2_LOCKED
{
    int64_t n = qcow2_align_up((int64_t)bytes, s->cluster_size) >> s->cluster_bits;

    if (n > qcow2_max_alloc_clusters(s)) {
        return -EFBIG;
    }
    return qcow2_alloc_clusters(bs, s, n, NULL);
}

/* Drop the table of @b and its data clusters (after the next sync). */
static void coroutine_fn table_free(BlockDriverState *bs, BDRVQcow2State *s,
                                    const Qcow2Bitmap *b) GRAPH_RDLOCK QCOW2_LOCKED
{
    uint64_t *t = NULL;

    if (table_read(bs, s, b, &t) < 0) {
        return;                  /* leaked: qemu-img check -r reclaims it */
    }
    /* Only what lies inside the file (a corrupt entry may point outside). */
    for (uint32_t i = 0; i < b->table_size; i++) {
        int64_t off = (int64_t)(t[i] & BME_ENTRY_OFFSET);

        if (off && off < s->file_size && !qcow2_overlaps_metadata(s, off, s->cluster_size)) {
            qcow2_defer_free(s, off, s->cluster_size, QCOW2_DISCARD_OTHER);
        }
    }
    if (b->table_offset > 0 && b->table_offset <= s->file_size &&
        (int64_t)b->table_size * 8 <= s->file_size - b->table_offset &&
        !qcow2_overlaps_metadata(s, b->table_offset, (int64_t)b->table_size * 8)) {
        qcow2_defer_free(s, b->table_offset, (int64_t)b->table_size * 8, QCOW2_DISCARD_OTHER);
    }
    free(t);
}

/* Write @bm's non-zero clusters and its table: the table's place in @b. */
static int coroutine_fn data_write(BlockDriverState *bs, BDRVQcow2State *s, Qcow2Bitmap *b,
                                   BdrvDirtyBitmap *bm) GRAPH_RDLOCK QCOW2_LOCKED
{
    uint64_t total = dirty_bitmap_serial_bytes(bm);
    uint32_t n = (uint32_t)table_entries(s, dirty_bitmap_size(bm), b->gran_bits);
    uint64_t *t = calloc(n ? n : 1, 8);
    uint8_t *buf = malloc(s->cluster_size);
    int64_t off;
    int ret = !n ? -EINVAL : t && buf ? 0 : -ENOMEM;     /* n == 0: an empty disk */

    for (uint32_t i = 0; ret >= 0 && i < n; i++) {
        uint64_t first = (uint64_t)i << s->cluster_bits;
        uint64_t len = total - first < (uint64_t)s->cluster_size ? total - first
                                                                  : (uint64_t)s->cluster_size;
        bool zero = true;

        memset(buf, 0, s->cluster_size);
        dirty_bitmap_serialize(bm, first, len, buf);
        for (uint64_t j = 0; j < len && zero; j++) {
            zero = !buf[j];
        }
        if (zero) {
            continue;
        }
        off = alloc_bytes(bs, s, s->cluster_size);
        ret = off < 0 ? (int)off : qcow2_file_pwrite(bs, off, s->cluster_size, buf);
        if (off >= 0) {
            t[i] = (uint64_t)off;
        }
    }
    off = ret >= 0 ? alloc_bytes(bs, s, (uint64_t)n * 8) : -1;
    if (ret >= 0 && off < 0) {
        ret = (int)off;
    }
    if (ret >= 0) {
        for (uint32_t i = 0; i < n; i++) {
            qcow2_put_be64(&t[i], t[i]);
        }
        ret = qcow2_file_pwrite(bs, off, (int64_t)n * 8, t);
    }
    if (ret >= 0) {
        b->table_offset = off;
        b->table_size = n;
    }
    if (ret < 0 && t) {          /* nothing points at them: give them back */
        for (uint32_t i = 0; i < n; i++) {
            uint64_t e = off >= 0 ? qcow2_be64(&t[i]) : t[i];
            if (e) {
                qcow2_defer_free(s, (int64_t)e, s->cluster_size, QCOW2_DISCARD_OTHER);
            }
        }
        if (off >= 0) {
            qcow2_defer_free(s, off, (int64_t)n * 8, QCOW2_DISCARD_OTHER);
        }
    }
    free(t);
    free(buf);
    return ret;
}

/* ---- Switching directories -------------------------------------------------------- */

static void set_autoclear_bit(BDRVQcow2State *s, bool on)
{
    if (on) {
        s->autoclear |= QCOW2_AUTOCLEAR_BITMAPS;
    } else {
        s->autoclear &= ~QCOW2_AUTOCLEAR_BITMAPS;
    }
}

/*
 * Make @list (@n entries, NULL/0: none) the image's directory: written to
 * new clusters, made stable, the header switched to it; then the old
 * directory is freed and @list becomes s->bitmaps (0).  On failure @list
 * stays the caller's, and *@named says whether the image may name it now
 * (the header write failed: its tables must stay allocated, leaked).
 */
static int coroutine_fn dir_switch(BlockDriverState *bs, BDRVQcow2State *s, Qcow2Bitmap *list,
                                   uint32_t n, bool *named) GRAPH_RDLOCK QCOW2_LOCKED
{
    int64_t old_off = s->bitmap_dir_offset, off = 0;
    uint64_t old_size = s->bitmap_dir_size, old_autoclear = s->autoclear, size = 0;
    uint32_t old_n = s->nb_bitmaps;
    uint8_t *dir = NULL;
    int ret = 0;

    *named = false;
    if (n) {
        dir = dir_build(list, n, &size);
        if (!dir || size > BME_MAX_DIR_SIZE) {
            free(dir);
            return dir ? -EFBIG : -ENOMEM;
        }
        off = alloc_bytes(bs, s, size);
        ret = off < 0 ? (int)off : qcow2_file_pwrite(bs, off, size, dir);
        free(dir);
        if (ret >= 0) {
            ret = qcow2_sync_metadata(bs, s);
        }
        if (ret >= 0) {
            ret = qcow2_file_flush(bs, s);
        }
        if (ret < 0) {
            if (off > 0) {
                qcow2_defer_free(s, off, size, QCOW2_DISCARD_OTHER);
            }
            return ret;
        }
    }
    s->bitmap_dir_offset = off;
    s->bitmap_dir_size = size;
    s->nb_bitmaps = n;
    set_autoclear_bit(s, n > 0);
    ret = qcow2_write_header(bs, s);
    if (ret < 0) {
        /* The header may or may not point at the new directory: keep the
         * old state in memory and leak the new clusters rather than free
         * something the image still names. */
        s->bitmap_dir_offset = old_off;
        s->bitmap_dir_size = old_size;
        s->nb_bitmaps = old_n;
        s->autoclear = old_autoclear;
        *named = true;
        return ret;
    }
    list_free(s->bitmaps, old_n);
    s->bitmaps = list;
    if (old_size) {
        qcow2_defer_free(s, old_off, old_size, QCOW2_DISCARD_OTHER);
    }
    return 0;
}

/* Rewrite the directory where it is (the flags changed): the extension is marked stale around the write, so that a crash
 * midway drops the bitmaps rather than trust half a directory. */
static int coroutine_fn dir_update_in_place(BlockDriverState *bs, BDRVQcow2State *s)
    GRAPH_RDLOCK QCOW2_LOCKED
{
    uint64_t size;
    uint8_t *dir = dir_build(s->bitmaps, s->nb_bitmaps, &size);
    int ret;

    if (!dir) {
        return -ENOMEM;
    }
    if (size != s->bitmap_dir_size) {
        free(dir);
        return -EINVAL;
    }
    set_autoclear_bit(s, false);
    ret = qcow2_write_header(bs, s);
    if (ret >= 0) {
        ret = qcow2_file_pwrite(bs, s->bitmap_dir_offset, size, dir);
    }
    if (ret >= 0) {
        ret = qcow2_file_flush(bs, s);
    }
    if (ret >= 0) {
        set_autoclear_bit(s, true);
        ret = qcow2_write_header(bs, s);
    }
    free(dir);
    return ret;
}

/* ---- Open --------------------------------------------------------------------------- */

typedef struct LoadArgs {
    bool writable;
    Error **errp;
} LoadArgs;

static int coroutine_fn load_co(BlockDriverState *bs, void *opaque) GRAPH_RDLOCK
{
    BDRVQcow2State *s = bs->opaque;
    LoadArgs *a = opaque;
    Qcow2Bitmap *list = NULL;
    bool mark = false;
    int ret = 0;

    co_mutex_lock(&s->lock);
    if (s->bitmaps_stale) {
        s->bitmaps_stale = false;
        if (a->writable) {
            ret = qcow2_write_header(bs, s);     /* without the extension */
        }
        goto out;
    }
    if (!s->nb_bitmaps) {
        goto out;
    }
    ret = dir_read(bs, s, bs->total_bytes, &list, a->errp);
    if (ret < 0) {
        goto out;
    }
    s->bitmaps = list;
    for (uint32_t i = 0; i < s->nb_bitmaps; i++) {
        Qcow2Bitmap *b = &list[i];
        BdrvDirtyBitmap *bm = bdrv_dirty_bitmap_create(bs, b->name, 1LL << b->gran_bits,
                                                       !(b->flags & BME_FLAG_AUTO));

        dirty_bitmap_set_persistent(bm, true);
        if (!a->writable) {
            dirty_bitmap_set_readonly(bm, true);
        }
        if (b->flags & BME_FLAG_IN_USE) {
            dirty_bitmap_set_inconsistent(bm);
            continue;
        }
        ret = data_read(bs, s, b, bm, a->errp);
        if (ret < 0) {
            goto out;
        }
        if (a->writable) {
            b->flags |= BME_FLAG_IN_USE;
            mark = true;
        }
    }
    if (mark) {
        ret = dir_update_in_place(bs, s);
        if (ret < 0) {
            error_setg_errno(a->errp, -ret, "Can't update bitmap directory");
        }
    }
out:
    co_mutex_unlock(&s->lock);
    return ret;
}

/* Drop the named bitmaps a failed load created. */
static void release_loaded(BlockDriverState *bs, BDRVQcow2State *s)
{
    for (uint32_t i = 0; s->bitmaps && i < s->nb_bitmaps; i++) {
        BdrvDirtyBitmap *bm = bdrv_dirty_bitmap_find(bs, s->bitmaps[i].name);

        if (bm) {
            bdrv_dirty_bitmap_release(bs, bm);
        }
    }
}

int qcow2_bitmaps_load(BlockDriverState *bs, bool writable, Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    /* A corrupt image takes no writes: its bitmaps stay as stored. */
    LoadArgs a = { writable && !atomic_read(&s->corrupt), errp };
    int ret;

    GLOBAL_STATE_CODE();
    ret = qcow2_run_in_coroutine(bs, load_co, &a);
    if (ret < 0) {
        release_loaded(bs, bs->opaque);
        if (!*errp) {
            error_setg_errno(errp, -ret, "Could not update the qcow2 header");
        }
    }
    return ret;
}

/* ---- Store ---------------------------------------------------------------------------- */

static int find_entry(const Qcow2Bitmap *list, uint32_t n, const char *name)
{
    for (uint32_t i = 0; i < n; i++) {
        if (!strcmp(list[i].name, name)) {
            return (int)i;
        }
    }
    return -1;
}

static Qcow2Bitmap *list_copy(const Qcow2Bitmap *list, uint32_t n, uint32_t room)
{
    Qcow2Bitmap *copy = calloc(n + room + 1, sizeof(*copy));

    for (uint32_t i = 0; copy && i < n; i++) {
        copy[i] = list[i];
        copy[i].name = strdup(list[i].name);
    }
    return copy;
}

/* The node's bitmaps to write: persistent, consistent, writable. */
static bool to_store(BdrvDirtyBitmap *bm)
{
    return dirty_bitmap_persistent(bm) && !dirty_bitmap_inconsistent(bm) &&
           !dirty_bitmap_readonly(bm);
}

typedef struct StoreArgs {
    Error **errp;
} StoreArgs;

static int coroutine_fn store_co(BlockDriverState *bs, void *opaque) GRAPH_RDLOCK
{
    BDRVQcow2State *s = bs->opaque;
    StoreArgs *a = opaque;
    uint32_t n = s->nb_bitmaps, count = 0, old_n = s->nb_bitmaps;
    Qcow2Bitmap *list = NULL, *old = NULL;
    BdrvDirtyBitmap **all;
    bool named = false;
    int ret = 0;

    for (BdrvDirtyBitmap *bm = NULL; (bm = bdrv_dirty_bitmap_next(bs, bm));) {
        count += to_store(bm);
    }
    if (!count) {
        return 0;
    }
    all = calloc(count, sizeof(*all));
    if (!all) {
        return -ENOMEM;
    }
    count = 0;
    for (BdrvDirtyBitmap *bm = NULL; (bm = bdrv_dirty_bitmap_next(bs, bm));) {
        if (to_store(bm)) {
            all[count++] = bm;
        }
    }
    co_mutex_lock(&s->lock);
    if (qcow2_refuse_writes(bs, s)) {
        error_setg(a->errp, "the image is corrupt or its metadata could not be written");
        ret = -EIO;
        goto out;
    }
    old = list_copy(s->bitmaps, n, 0);
    list = list_copy(s->bitmaps, n, count);
    if (!list || !old) {
        ret = -ENOMEM;
        goto out;
    }
    /* Newest first, as QEMU lists them: the same directory order. */
    for (uint32_t k = count; ret >= 0 && k-- > 0;) {
        BdrvDirtyBitmap *bm = all[k];
        const char *name = dirty_bitmap_name(bm);
        int i;

        i = find_entry(list, n, name);
        if (i >= 0 && !(list[i].flags & BME_FLAG_IN_USE)) {
            error_setg(a->errp, "Bitmap '%s' already exists in the image", name);
            ret = -EEXIST;
            break;
        }
        if (i < 0) {
            if (n + 1 > BME_MAX_BITMAPS) {
                error_setg(a->errp, "Too many persistent bitmaps");
                ret = -EFBIG;
                break;
            }
            i = (int)n++;
            list[i].name = strdup(name);
        }
        list[i].flags = dirty_bitmap_recording(bm) ? BME_FLAG_AUTO : 0;
        list[i].gran_bits = __builtin_ctzll(dirty_bitmap_granularity(bm));
        ret = data_write(bs, s, &list[i], bm);
        if (ret < 0) {
            error_setg_errno(a->errp, -ret, "Failed to write bitmap '%s' to file", name);
        }
    }
    if (ret >= 0) {
        ret = dir_switch(bs, s, list, n, &named);
        if (ret < 0) {
            error_setg_errno(a->errp, -ret, "Failed to update bitmap extension");
        } else {
            list = NULL;                 /* s->bitmaps now */
        }
    }
    /* Success: the replaced tables go.  Failure: the new ones, unless the
     * image may name them (then they leak). */
    for (uint32_t i = 0; i < n && !named; i++) {
        const Qcow2Bitmap *now = ret >= 0 ? &s->bitmaps[i] : &list[i];
        bool replaced = i >= old_n || now->table_offset != old[i].table_offset;

        if (replaced && ret >= 0 && i < old_n) {
            table_free(bs, s, &old[i]);
        } else if (replaced && ret < 0 && now->table_offset) {
            table_free(bs, s, now);
        }
    }
    if (ret >= 0) {
        ret = qcow2_sync_metadata(bs, s);
    }
out:
    list_free(list, n);
    list_free(old, old_n);
    free(all);
    co_mutex_unlock(&s->lock);
    return ret;
}

int qcow2_bitmaps_store(BlockDriverState *bs, Error **errp)
{
    StoreArgs a = { errp };

    GLOBAL_STATE_CODE();
    return qcow2_run_in_coroutine(bs, store_co, &a);
}

/* ---- Reopen ------------------------------------------------------------------------- */

static int coroutine_fn writable_co(BlockDriverState *bs, void *opaque) GRAPH_RDLOCK
{
    BDRVQcow2State *s = bs->opaque;
    Error **errp = opaque;
    bool mark = false;
    uint32_t *saved;
    int ret = 0;

    co_mutex_lock(&s->lock);
    saved = calloc(s->nb_bitmaps + 1, sizeof(*saved));
    if (!saved) {
        co_mutex_unlock(&s->lock);
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < s->nb_bitmaps; i++) {
        saved[i] = s->bitmaps[i].flags;
    }
    for (uint32_t i = 0; i < s->nb_bitmaps; i++) {
        Qcow2Bitmap *b = &s->bitmaps[i];
        BdrvDirtyBitmap *bm = bdrv_dirty_bitmap_find(bs, b->name);

        if (!bm) {
            error_setg(errp, "Unexpected bitmap '%s' in image '%s'", b->name,
                       s->image_filename);
            ret = -EINVAL;
            break;
        }
        if (!(b->flags & BME_FLAG_IN_USE)) {
            b->flags |= BME_FLAG_IN_USE;
            mark = true;
        }
    }
    if (ret >= 0 && mark) {
        ret = dir_update_in_place(bs, s);
        if (ret < 0) {
            error_setg_errno(errp, -ret, "Cannot update bitmap directory");
        }
    }
    if (ret < 0) {
        /* As it was: the next attempt writes the flags again. */
        for (uint32_t i = 0; i < s->nb_bitmaps; i++) {
            s->bitmaps[i].flags = saved[i];
        }
    }
    free(saved);
    co_mutex_unlock(&s->lock);
    return ret;
}

static void set_all_readonly(BlockDriverState *bs, bool readonly)
{
    for (BdrvDirtyBitmap *bm = NULL; (bm = bdrv_dirty_bitmap_next(bs, bm));) {
        if (dirty_bitmap_persistent(bm)) {
            dirty_bitmap_set_readonly(bm, readonly);
        }
    }
}

int qcow2_bitmaps_reopen(BlockDriverState *bs, bool writable, Error **errp)
{
    int ret;

    GLOBAL_STATE_CODE();
    if (writable) {
        ret = qcow2_run_in_coroutine(bs, writable_co, errp);
    } else {
        ret = qcow2_bitmaps_store(bs, errp);
    }
    if (ret >= 0) {
        set_all_readonly(bs, !writable);
    }
    return ret;
}

/* ---- QMP: add and remove ---------------------------------------------------------------- */

bool qcow2_can_store_new_dirty_bitmap(BlockDriverState *bs, const char *name,
                                      int64_t granularity, Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    int gran_bits = __builtin_ctzll(granularity);
    uint64_t dir_size = entry_size(strlen(name)), bytes;
    uint32_t n = 1;

    GLOBAL_STATE_CODE();
    if (bdrv_dirty_bitmap_find(bs, name)) {
        error_setg(errp, "Bitmap already exists: %s", name);
        return false;
    }
    bytes = table_entries(s, bdrv_getlength(bs), gran_bits) << s->cluster_bits;
    if (s->version < 3) {
        error_setg(errp, "Cannot store dirty bitmaps in qcow2 v2 files");
    } else if (gran_bits > BME_MAX_GRAN_BITS) {
        error_setg(errp, "Granularity exceeds maximum (%llu bytes)", 1ULL << BME_MAX_GRAN_BITS);
    } else if (gran_bits < BME_MIN_GRAN_BITS) {
        error_setg(errp, "Granularity is under minimum (%llu bytes)", 1ULL << BME_MIN_GRAN_BITS);
    } else if (bytes > BME_MAX_PHYS_SIZE ||
               bytes > (uint64_t)BME_MAX_TABLE_SIZE << s->cluster_bits) {
        error_setg(errp, "Too much space will be occupied by the bitmap. "
                   "Use larger granularity");
    } else if (strlen(name) > BME_MAX_NAME) {
        error_setg(errp, "Name length exceeds maximum (%u characters)", BME_MAX_NAME);
    } else {
        for (BdrvDirtyBitmap *bm = NULL; (bm = bdrv_dirty_bitmap_next(bs, bm));) {
            if (dirty_bitmap_persistent(bm)) {
                n++;
                dir_size += entry_size(strlen(dirty_bitmap_name(bm)));
            }
        }
        if (n > BME_MAX_BITMAPS) {
            error_setg(errp, "Maximum number of persistent bitmaps is already reached");
        } else if (dir_size > BME_MAX_DIR_SIZE) {
            error_setg(errp, "Not enough space in the bitmap directory");
        } else {
            return true;
        }
    }
    error_prepend(errp, "Can't make bitmap '%s' persistent in '%s': ", name, bs->node_name);
    return false;
}

typedef struct RemoveArgs {
    const char *name;
    Error **errp;
} RemoveArgs;

static int coroutine_fn remove_co(BlockDriverState *bs, void *opaque) GRAPH_RDLOCK
{
    BDRVQcow2State *s = bs->opaque;
    RemoveArgs *a = opaque;
    uint32_t n = s->nb_bitmaps;
    bool named;
    int i, ret = 0;

    co_mutex_lock(&s->lock);
    i = find_entry(s->bitmaps, n, a->name);
    if (i >= 0 && qcow2_refuse_writes(bs, s)) {
        error_setg(a->errp, "Failed to update bitmap extension: the image is corrupt or "
                   "its metadata could not be written");
        ret = -EIO;
    } else if (i >= 0) {
        Qcow2Bitmap gone = s->bitmaps[i];
        Qcow2Bitmap *list = list_copy(s->bitmaps, n, 0);

        gone.name = NULL;
        free(list[i].name);
        memmove(&list[i], &list[i + 1], (n - i - 1) * sizeof(*list));
        ret = dir_switch(bs, s, list, n - 1, &named);
        if (ret < 0) {
            list_free(list, n - 1);
            error_setg_errno(a->errp, -ret, "Failed to update bitmap extension");
        } else {
            table_free(bs, s, &gone);
            ret = qcow2_sync_metadata(bs, s);
        }
    }
    co_mutex_unlock(&s->lock);
    return ret;
}

int qcow2_remove_persistent_dirty_bitmap(BlockDriverState *bs, const char *name, Error **errp)
{
    RemoveArgs a = { name, errp };

    GLOBAL_STATE_CODE();
    if (bs->read_only) {
        return 0;                /* kept: read-only bitmaps are refused before */
    }
    return qcow2_run_in_coroutine(bs, remove_co, &a);
}

/* ---- What the image holds -------------------------------------------------------------- */

json_object *qcow2_bitmaps_info(BDRVQcow2State *s)
{
    json_object *list;

    if (!s->nb_bitmaps || !s->bitmaps) {
        return NULL;
    }
    list = json_object_new_array();
    for (uint32_t i = 0; i < s->nb_bitmaps; i++) {
        json_object *o = json_object_new_object(), *flags = json_object_new_array();

        if (s->bitmaps[i].flags & BME_FLAG_IN_USE) {
            json_object_array_add(flags, json_object_new_string("in-use"));
        }
        if (s->bitmaps[i].flags & BME_FLAG_AUTO) {
            json_object_array_add(flags, json_object_new_string("auto"));
        }
        json_object_object_add(o, "flags", flags);
        json_object_object_add(o, "name", json_object_new_string(s->bitmaps[i].name));
        json_object_object_add(o, "granularity",
                               json_object_new_int64(1LL << s->bitmaps[i].gran_bits));
        json_object_array_add(list, o);
    }
    return list;
}

int coroutine_fn qcow2_bitmaps_visit(BlockDriverState *bs, BDRVQcow2State *s,
                                     Qcow2ClusterVisitor *fn, void *opaque, Error **errp)
{
    Qcow2Bitmap *list = NULL;
    Error *err = NULL;
    int ret;

    if (!s->nb_bitmaps || s->bitmaps_stale) {
        return 0;
    }
    if (dir_read(bs, s, s->size, &list, &err) < 0) {
        if (errp) {
            error_propagate(errp, err);
            return -EINVAL;
        }
        error_free(err);
        return 0;                /* the open fails at load, clearly */
    }
    ret = fn(opaque, s->bitmap_dir_offset, (int64_t)s->bitmap_dir_size, "bitmap directory");
    for (uint32_t i = 0; ret >= 0 && i < s->nb_bitmaps; i++) {
        uint64_t *t = NULL;

        ret = fn(opaque, list[i].table_offset, (int64_t)list[i].table_size * 8, "bitmap table");
        if (ret < 0 || table_read(bs, s, &list[i], &t) < 0) {
            continue;
        }
        for (uint32_t j = 0; ret >= 0 && j < list[i].table_size; j++) {
            if (t[j] & BME_ENTRY_OFFSET) {
                ret = fn(opaque, (int64_t)(t[j] & BME_ENTRY_OFFSET), s->cluster_size,
                         "bitmap data");
            }
        }
        free(t);
    }
    list_free(list, s->nb_bitmaps);
    return ret;
}
