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

#include "blockd/block-global-state.h"
#include "blockd/atomic.h"
#include "blockd/block-io.h"
#include "blockd/dirty-bitmap.h"
#include "blockd/log.h"
#include "blockd/main-loop.h"
#include "qcow2-bitmap.h"

/* Fill @bm from the table of @b. */
static int coroutine_fn data_read(BlockDriverState *bs, BDRVQcow2State *s,
                                  const Qcow2Bitmap *b, BdrvDirtyBitmap *bm, Error **errp)
    GRAPH_RDLOCK QCOW2_LOCKED
{
    uint64_t total = dirty_bitmap_serial_bytes(bm), *t = NULL;
    uint8_t *buf;
    int ret;

    if (bm_table_entries(s, dirty_bitmap_size(bm), b->gran_bits) != b->table_size) {
        error_setg_errno(errp, EINVAL, "Could not read bitmap '%s' from image", b->name);
        return -EINVAL;
    }
    ret = bm_table_read(bs, s, b, &t);
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
            ret = bm_read_zero_filled(bs, s, (int64_t)off, n, buf);
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

    if (bm_table_read(bs, s, b, &t) < 0) {
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
    uint32_t n = (uint32_t)bm_table_entries(s, dirty_bitmap_size(bm), b->gran_bits);
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
        dir = bm_dir_build(list, n, &size);
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
    bm_list_free(s->bitmaps, old_n);
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
    uint8_t *dir = bm_dir_build(s->bitmaps, s->nb_bitmaps, &size);
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
    ret = bm_dir_read(bs, s, bs->total_bytes, &list, a->errp);
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
    ret = bdrv_run_co(bs, load_co, &a);
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
    bm_list_free(list, n);
    bm_list_free(old, old_n);
    free(all);
    co_mutex_unlock(&s->lock);
    return ret;
}

int qcow2_bitmaps_store(BlockDriverState *bs, Error **errp)
{
    StoreArgs a = { errp };

    GLOBAL_STATE_CODE();
    return bdrv_run_co(bs, store_co, &a);
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
        ret = bdrv_run_co(bs, writable_co, errp);
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
    uint64_t dir_size = bm_entry_size(strlen(name)), bytes;
    uint32_t n = 1;

    GLOBAL_STATE_CODE();
    if (bdrv_dirty_bitmap_find(bs, name)) {
        error_setg(errp, "Bitmap already exists: %s", name);
        return false;
    }
    bytes = bm_table_entries(s, bdrv_getlength(bs), gran_bits) << s->cluster_bits;
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
                dir_size += bm_entry_size(strlen(dirty_bitmap_name(bm)));
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
            bm_list_free(list, n - 1);
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
    return bdrv_run_co(bs, remove_co, &a);
}

