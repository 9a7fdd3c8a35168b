/*
 * qcow2-bitmap-dir.c - the persistent bitmaps' on-disk format (the qcow2
 * bitmaps extension, docs/qcow2-bitmaps.md): the header extension, the
 * bitmap directory and the bitmap tables -- parsed and checked as QEMU
 * checks them (same messages), and built; what the image holds, for
 * format-specific information and the refcount repair and check.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/block-io.h"
#include "blockd/log.h"
#include "qcow2-bitmap.h"

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | p[1] << 16 | p[2] << 8 | p[3];
}

static void wr32(uint8_t *p, uint32_t v)
{
    p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v;
}

uint64_t bm_entry_size(size_t name_len)
{
    return qcow2_align_up(BME_HEADER_SIZE + name_len, 8);
}

void bm_list_free(Qcow2Bitmap *list, uint32_t n)
{
    for (uint32_t i = 0; list && i < n; i++) {
        free(list[i].name);
    }
    free(list);
}

void qcow2_bitmaps_free(BDRVQcow2State *s)
{
    bm_list_free(s->bitmaps, s->nb_bitmaps);
    s->bitmaps = NULL;
    s->nb_bitmaps = 0;
}

/* Clusters the bitmap of a @len-byte disk at 2^@gran_bits takes. */
uint64_t bm_table_entries(BDRVQcow2State *s, int64_t len, int gran_bits)
{
    uint64_t bits = ((uint64_t)len + (1ull << gran_bits) - 1) >> gran_bits;

    return ((bits + 7) / 8 + s->cluster_size - 1) >> s->cluster_bits;
}

/* Read [offset, +bytes) of the file; what lies past its end reads as
 * zeroes (and then fails the checks that follow, as in QEMU). */
int coroutine_fn bm_read_zero_filled(BlockDriverState *bs, BDRVQcow2State *s,
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
        if (bm_entry_size((uint64_t)name_len + extra) > size - pos) {
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
        pos += bm_entry_size(name_len);
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
    bm_list_free(list, nb);
    return -EINVAL;
}

/* Read the directory the header points at. */
int coroutine_fn bm_dir_read(BlockDriverState *bs, BDRVQcow2State *s, int64_t len,
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
    ret = bm_read_zero_filled(bs, s, s->bitmap_dir_offset, s->bitmap_dir_size, dir);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Failed to read bitmap directory");
    } else {
        ret = dir_parse(s, dir, s->bitmap_dir_size, s->nb_bitmaps, len, out, errp);
    }
    free(dir);
    return ret;
}

/* The directory bytes for @list (@n entries): *@size. */
uint8_t *bm_dir_build(const Qcow2Bitmap *list, uint32_t n, uint64_t *size)
{
    uint64_t total = 0, pos = 0;
    uint8_t *dir;

    for (uint32_t i = 0; i < n; i++) {
        total += bm_entry_size(strlen(list[i].name));
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
        pos += bm_entry_size(name_len);
    }
    *size = total;
    return dir;
}

/* ---- Bitmap tables ---------------------------------------------------------------- */

int coroutine_fn bm_table_read(BlockDriverState *bs, BDRVQcow2State *s,
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
    ret = bm_read_zero_filled(bs, s, b->table_offset, bytes, t);
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
    if (bm_dir_read(bs, s, s->size, &list, &err) < 0) {
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
        if (ret < 0 || bm_table_read(bs, s, &list[i], &t) < 0) {
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
    bm_list_free(list, s->nb_bitmaps);
    return ret;
}
