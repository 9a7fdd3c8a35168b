/*
 * qcow2.c - the qcow2 format: open and close, the header with its feature
 * bits and extensions, the backing file, options, and the driver table.
 *
 *   {"driver": "qcow2", "file": <child>, "backing": <child> | null,
 *    "l2-cache-size": bytes, "refcount-cache-size": bytes,
 *    "cache-clean-interval": seconds, "lazy-refcounts": bool,
 *    "discard": "ignore" | "unmap"}
 *
 * Open validates every structure it reads (header, extensions, L1 and
 * refcount tables) and refuses a corrupt image with a message saying what
 * is wrong; entries read later are checked when they are used.  Nothing
 * is written to an image unless it is opened read-write and valid.
 *
 * Images whose dirty bit is set (QEMU crashed while using lazy refcounts)
 * have their refcounts rebuilt before a read-write open (qcow2-repair.c);
 * read-only opens leave them alone.  blockd itself never sets the dirty
 * bit: its metadata updates are ordered (qcow2.h), so lazy-refcounts=on is
 * accepted and behaves like off.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blockd/block-create.h"
#include "blockd/aio-wait.h"
#include "blockd/block-global-state.h"
#include "blockd/block-io.h"
#include "blockd/log.h"
#include "blockd/main-loop.h"
#include "blockd/options.h"
#include "block-internal.h"
#include "qcow2.h"

#define DEFAULT_L2_CACHE_BYTES (32 * 1024 * 1024)   /* at most; see open_header_co() */
#define DEFAULT_RB_CACHE_BYTES (256 * 1024)
#define MIN_CACHE_TABLES 4

/* ---- Header ----------------------------------------------------------------------- */

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | p[1] << 16 | p[2] << 8 | p[3];
}

static uint64_t be64(const uint8_t *p)
{
    return (uint64_t)be32(p) << 32 | be32(p + 4);
}

/* Names of unknown incompatible features, from the feature name table. */
static void unknown_features(const uint8_t *table, uint32_t len, uint64_t bits, char *out,
                             size_t size)
{
    size_t n = 0;

    out[0] = '\0';
    for (int bit = 0; bit < 64; bit++) {
        char name[47] = "";
        if (!(bits & (1ULL << bit))) {
            continue;
        }
        for (uint32_t i = 0; table && i + 48 <= len; i += 48) {
            if (table[i] == 0 && table[i + 1] == bit) {
                memcpy(name, table + i + 2, 46);
            }
        }
        if (name[0]) {
            n += snprintf(out + n, n < size ? size - n : 0, "%s%.46s", n ? ", " : "", name);
        } else {
            n += snprintf(out + n, n < size ? size - n : 0, "%sUnknown incompatible feature: "
                          "%llx", n ? ", " : "", 1ULL << bit);
        }
    }
}

typedef struct OpenArgs {
    json_object *options;
    int flags;
    Error **errp;
    int64_t l2_cache_bytes, rb_cache_bytes;
    int64_t l2_entry_size;          /* l2-cache-entry-size, -1: default */
} OpenArgs;

/* Header extensions between the header and the end of the first cluster. */
static int parse_extensions(BDRVQcow2State *s, const uint8_t *buf, int64_t len,
                            Error **errp)
{
    const uint8_t *features = NULL;
    uint32_t features_len = 0;
    uint64_t unknown = s->incompat & ~QCOW2_INCOMPAT_KNOWN;
    int64_t pos = s->header_length;

    while (pos + 8 <= len) {
        uint32_t type = be32(buf + pos), elen = be32(buf + pos + 4);
        if (type == QCOW2_EXT_END) {
            break;
        }
        if (elen > len - pos - 8) {
            error_setg(errp, "qcow2: header extension 0x%08x is larger than the header "
                       "cluster", type);
            return -EINVAL;
        }
        if (type == QCOW2_EXT_BACKING_FMT) {
            free(s->backing_fmt);
            s->backing_fmt = strndup((const char *)buf + pos + 8, elen);
        } else if (type == QCOW2_EXT_FEATURES) {
            features = buf + pos + 8;
            features_len = elen;
        } else if (type == QCOW2_EXT_BITMAPS) {
            int ret = qcow2_bitmaps_ext_parse(s, buf + pos + 8, elen, errp);
            if (ret < 0) {
                return ret;
            }
        } else if (type == QCOW2_EXT_DATA_FILE) {
            free(s->data_file_name);
            s->data_file_name = strndup((const char *)buf + pos + 8, elen);
        } else if (type == QCOW2_EXT_CRYPTO) {
            int ret = qcow2_crypto_ext_parse(s, buf + pos + 8, elen, errp);
            if (ret < 0) {
                return ret;
            }
        }
        pos += 8 + qcow2_align_up(elen, 8);
    }
    if (unknown) {
        char names[512];
        unknown_features(features, features_len, unknown, names, sizeof(names));
        error_setg(errp, "Unsupported qcow2 feature(s): %s", names);
        return -ENOTSUP;
    }
    return 0;
}

/* Fixed header fields, checked one by one. */
static int parse_header(BDRVQcow2State *s, const uint8_t *h, int64_t flen, Error **errp)
    TSA_NO_TSA
{
    /* Open: the node is not visible yet, no lock needed (as below). */
    uint32_t cluster_bits = be32(h + 20);

    if (flen < QCOW2_V2_HEADER_LEN || be32(h) != QCOW2_MAGIC) {
        error_setg(errp, "Image is not in qcow2 format");
        return -EINVAL;
    }
    s->version = be32(h + 4);
    if (s->version != 2 && s->version != 3) {
        error_setg(errp, "Unsupported qcow2 version %d", s->version);
        return -ENOTSUP;
    }
    if (cluster_bits < QCOW2_MIN_CLUSTER_BITS || cluster_bits > QCOW2_MAX_CLUSTER_BITS) {
        error_setg(errp, "Unsupported cluster size: 2^%u", cluster_bits);
        return -EINVAL;
    }
    s->cluster_bits = cluster_bits;
    s->cluster_size = 1LL << cluster_bits;
    s->size = be64(h + 24);
    s->crypt_method = (int)be32(h + 32);
    if (s->crypt_method == QCOW2_CRYPT_AES) {
        error_setg(errp, "qcow2: AES-CBC encrypted images are not supported (convert them "
                   "to LUKS encryption with qemu-img)");
        return -ENOTSUP;
    }
    if (s->crypt_method > QCOW2_CRYPT_LUKS) {
        error_setg(errp, "Unsupported encryption method: %d", s->crypt_method);
        return -EINVAL;
    }
    s->l1_size = be32(h + 36);
    s->l1_offset = be64(h + 40);
    s->reftable_offset = be64(h + 48);
    s->reftable_size = be32(h + 56) * (uint32_t)(s->cluster_size / 8);
    s->nb_snapshots = be32(h + 60);
    s->snapshots_offset = be64(h + 64);
    s->header_length = QCOW2_V2_HEADER_LEN;
    s->refcount_order = 4;
    if (s->version == 3) {
        if (flen < QCOW2_V3_HEADER_LEN) {
            error_setg(errp, "qcow2 header is truncated");
            return -EINVAL;
        }
        s->incompat = be64(h + 72);
        s->compat = be64(h + 80);
        s->autoclear = be64(h + 88);
        s->data_file_raw = s->autoclear & QCOW2_AUTOCLEAR_DATA_RAW;
        s->refcount_order = be32(h + 96);
        s->header_length = be32(h + 100);
        if (s->header_length < QCOW2_V3_HEADER_LEN || s->header_length % 8) {
            error_setg(errp, "qcow2 header length %u is invalid", s->header_length);
            return -EINVAL;
        }
    }
    if (s->header_length > s->cluster_size) {
        error_setg(errp, "qcow2 header exceeds cluster size");
        return -EINVAL;
    }
    if (s->header_length > flen) {
        error_setg(errp, "qcow2 header is truncated");
        return -EINVAL;
    }
    if (be32(h + 96) > 6 && s->version == 3) {
        error_setg(errp, "Reference count entry width too large; may not exceed 64 bits");
        return -EINVAL;
    }
    s->compression_type = s->header_length > 104 ? h[104] : QCOW2_COMPRESSION_ZLIB;
    if (s->compression_type > QCOW2_COMPRESSION_ZSTD) {
        error_setg(errp, "qcow2: unknown compression type: %d", s->compression_type);
        return -ENOTSUP;
    }
    /* A reader that does not know the field must not take zstd for zlib. */
    if (!!(s->incompat & QCOW2_INCOMPAT_COMPRESSION) !=
        (s->compression_type != QCOW2_COMPRESSION_ZLIB)) {
        error_setg(errp, s->compression_type == QCOW2_COMPRESSION_ZLIB
                   ? "qcow2: Compression type incompatible feature bit must not be set"
                   : "qcow2: Compression type incompatible feature bit must be set");
        return -EINVAL;
    }
    return 0;
}

/* Geometry derived from the header, and its limits. */
static int check_geometry(BDRVQcow2State *s, int64_t flen, Error **errp) TSA_NO_TSA
{
    int64_t cs = s->cluster_size, max_size, needed;

    s->ext_l2 = s->incompat & QCOW2_INCOMPAT_EXTL2;
    if (s->ext_l2 && s->cluster_bits < 14) {
        error_setg(errp, "qcow2: extended L2 entries need clusters of at least 16 KiB");
        return -EINVAL;
    }
    s->l2_entry_words = s->ext_l2 ? 2 : 1;
    s->l2_bits = s->cluster_bits - 3 - (s->ext_l2 ? 1 : 0);
    s->l2_entries = 1LL << s->l2_bits;
    s->sc_bits = s->cluster_bits - 5;
    s->refcount_bits = 1 << s->refcount_order;
    s->refcount_max = s->refcount_bits == 64 ? UINT64_MAX : (1ULL << s->refcount_bits) - 1;
    s->rb_bits = s->cluster_bits + 3 - s->refcount_order;
    s->csize_shift = 62 - (s->cluster_bits - 8);
    s->csize_mask = (1ULL << (s->cluster_bits - 8)) - 1;
    s->coffset_mask = (1ULL << 62) - 1;

    max_size = (int64_t)(QCOW2_MAX_L1_BYTES / 8) << (s->l2_bits + s->cluster_bits);
    if (s->size < 0 || s->size > max_size || s->size > (1LL << 61)) {
        error_setg(errp, "qcow2: image size %lld is too large", (long long)s->size);
        return -EFBIG;
    }
    needed = (s->size + (cs << s->l2_bits) - 1) / (cs << s->l2_bits);
    if ((int64_t)s->l1_size < needed) {
        error_setg(errp, "qcow2: L1 table is too small for the image size");
        return -EINVAL;
    }
    if ((int64_t)s->l1_size * 8 > QCOW2_MAX_L1_BYTES) {
        error_setg(errp, "Active L1 table too large");
        return -EFBIG;
    }
    if (s->l1_size && (s->l1_offset & (cs - 1))) {
        error_setg(errp, "Invalid L1 table offset");
        return -EINVAL;
    }
    if (s->l1_size && s->l1_offset < cs) {
        error_setg(errp, "qcow2: L1 table overlaps the image header");
        return -EINVAL;
    }
    if (s->l1_size && (s->l1_offset > flen || (int64_t)s->l1_size * 8 > flen - s->l1_offset)) {
        error_setg(errp, "qcow2: L1 table is beyond the end of the image file");
        return -EINVAL;
    }
    if ((int64_t)s->reftable_size * 8 > QCOW2_MAX_REFTABLE_BYTES || !s->reftable_size) {
        error_setg(errp, "qcow2: refcount table size %u is invalid", s->reftable_size);
        return -EINVAL;
    }
    if (s->reftable_offset & (cs - 1)) {
        error_setg(errp, "Invalid reference count table offset");
        return -EINVAL;
    }
    if (s->reftable_offset < cs) {
        error_setg(errp, "qcow2: refcount table overlaps the image header");
        return -EINVAL;
    }
    if (s->reftable_offset > flen || (int64_t)s->reftable_size * 8 > flen - s->reftable_offset) {
        error_setg(errp, "qcow2: refcount table is beyond the end of the image file");
        return -EINVAL;
    }
    if (s->l1_size && s->l1_offset < s->reftable_offset + (int64_t)s->reftable_size * 8 &&
        s->reftable_offset < s->l1_offset + (int64_t)s->l1_size * 8) {
        error_setg(errp, "qcow2: refcount table overlaps the L1 table");
        return -EINVAL;
    }
    if (s->nb_snapshots > 65536 ||
        (s->nb_snapshots && ((s->snapshots_offset & (cs - 1)) || s->snapshots_offset < cs ||
                             s->snapshots_offset >= flen))) {
        error_setg(errp, "qcow2: snapshot table is invalid");
        return -EINVAL;
    }
    return 0;
}

static int read_backing_name(BDRVQcow2State *s, const uint8_t *h, const uint8_t *buf,
                             int64_t len, Error **errp)
{
    uint64_t off = be64(h + 8);
    uint32_t size = be32(h + 16);

    if (!off) {
        return 0;
    }
    if (size > QCOW2_MAX_BACKING_NAME || off > (uint64_t)len || size > len - off || !size) {
        error_setg(errp, "qcow2: backing file name is invalid (offset %llu, length %u)",
                   (unsigned long long)off, size);
        return -EINVAL;
    }
    s->backing_file = strndup((const char *)buf + off, size);
    return 0;
}

/* Clear the autoclear bits of features blockd does not keep up to date
 * (all but a valid bitmaps extension's): writing is allowed then. */
int coroutine_fn qcow2_clear_autoclear(BlockDriverState *bs, BDRVQcow2State *s)
    GRAPH_RDLOCK
{
    uint64_t keep = (s->nb_bitmaps ? QCOW2_AUTOCLEAR_BITMAPS : 0) |
                    (s->data_file_raw ? QCOW2_AUTOCLEAR_DATA_RAW : 0);
    uint8_t be[8];
    int ret;

    if (s->version < 3 || !(s->autoclear & ~keep)) {
        return 0;
    }
    s->autoclear &= keep;
    qcow2_put_be64(be, s->autoclear);
    ret = qcow2_file_pwrite(bs, 88, 8, be);
    if (ret >= 0) {
        ret = bdrv_co_flush(bs->file->bs);
    }
    return ret;
}

static int cache_tables(int64_t bytes, int64_t cs)
{
    int64_t n = bytes / cs;
    return n < MIN_CACHE_TABLES ? MIN_CACHE_TABLES : n > 65536 ? 65536 : (int)n;
}

/* The header, its extensions and the caches. */
static int coroutine_fn open_header_co(BlockDriverState *bs, void *opaque) TSA_NO_TSA
{
    /* Runs before anything else can see the node: no lock needed. */
    BDRVQcow2State *s = bs->opaque;
    OpenArgs *a = opaque;
    int64_t flen = bdrv_getlength(bs->file->bs), len;
    uint8_t h[QCOW2_V3_HEADER_LEN + 8] = { 0 };
    uint8_t *buf;
    int ret;

    s->file_size = flen;
    ret = qcow2_file_pread(bs, 0, flen < (int64_t)sizeof(h) ? flen : (int64_t)sizeof(h), h);
    if (ret < 0) {
        error_setg_errno(a->errp, -ret, "Could not read the qcow2 header");
        return ret;
    }
    ret = parse_header(s, h, flen, a->errp);
    if (ret < 0) {
        return ret;
    }
    len = flen < s->cluster_size ? flen : s->cluster_size;
    buf = malloc(len);
    if (!buf) {
        return -ENOMEM;
    }
    ret = qcow2_file_pread(bs, 0, len, buf);
    if (ret < 0) {
        error_setg_errno(a->errp, -ret, "Could not read the qcow2 header");
    }
    if (ret >= 0) {
        ret = parse_extensions(s, buf, len, a->errp);
    }
    if (ret >= 0) {
        ret = read_backing_name(s, h, buf, len, a->errp);
    }
    free(buf);
    if (ret >= 0) {
        ret = check_geometry(s, flen, a->errp);
    }
    if (ret < 0) {
        return ret;
    }
    /* The cache holds whole L2 tables: an entry is a cluster. */
    if (a->l2_entry_size >= 0 && a->l2_entry_size != s->cluster_size) {
        error_setg(a->errp, "l2-cache-entry-size %lld is not supported by blockd: "
                   "its L2 cache entries are whole tables (the cluster size, %lld)",
                   (long long)a->l2_entry_size, (long long)s->cluster_size);
        return -EINVAL;
    }
    if (s->lazy_refcounts && s->version < 3) {
        error_setg(a->errp, "Lazy refcounts require a qcow2 image with at least qemu 1.1 "
                   "compatibility level");
        return -EINVAL;
    }
    if (a->l2_cache_bytes < 0) {
        /* As QEMU on Linux: enough to map the whole disk, up to 32 MiB. */
        int64_t cover = (s->size + (s->cluster_size << s->l2_bits) - 1) >>
                        (s->cluster_bits + s->l2_bits) << s->cluster_bits;
        a->l2_cache_bytes = cover < DEFAULT_L2_CACHE_BYTES ? cover : DEFAULT_L2_CACHE_BYTES;
    }
    s->l2_cache = qcow2_cache_new(cache_tables(a->l2_cache_bytes, s->cluster_size),
                                  s->cluster_size, qcow2_refcounts_stable);
    s->rb_cache = qcow2_cache_new(cache_tables(a->rb_cache_bytes, s->cluster_size),
                                  s->cluster_size, NULL);
    return 0;
}

/* The tables, once the data file is open and the image unlocked: nothing
 * is written to an image before then (a repair would otherwise rebuild
 * the refcounts of an image whose password is wrong). */
static int coroutine_fn open_tables_co(BlockDriverState *bs, void *opaque) TSA_NO_TSA
{
    /* Runs before anything else can see the node: no lock needed. */
    BDRVQcow2State *s = bs->opaque;
    OpenArgs *a = opaque;
    int ret;

    if ((a->flags & BDRV_O_RDWR) && (s->incompat & QCOW2_INCOMPAT_CORRUPT)) {
        error_setg(a->errp, "qcow2: Image is corrupt; cannot be opened read/write");
        return -EACCES;
    }
    if ((a->flags & BDRV_O_RDWR) && (s->incompat & QCOW2_INCOMPAT_DIRTY)) {
        /* Refcounts may be behind (lazy refcounts): rebuild them first. */
        ret = qcow2_repair_refcounts(bs, s, a->errp);
        if (ret < 0) {
            return ret;
        }
        info_report("qcow2 image '%s' was dirty: refcounts repaired", s->image_filename);
    }
    ret = qcow2_refcount_init(bs, s, a->errp);
    if (ret >= 0) {
        ret = qcow2_l1_check(bs, s, a->errp);
    }
    if (ret >= 0) {
        ret = qcow2_snapshot_guard_init(bs, s, a->errp);
    }
    if (ret >= 0 && qcow2_container_overlaps_tables(s)) {
        error_setg(a->errp, "qcow2: the LUKS container overlaps the image's tables");
        ret = -EINVAL;
    }
    if (ret >= 0 && (a->flags & BDRV_O_RDWR)) {
        qcow2_check_references_or_warn(bs, s);
    }
    if (ret >= 0 && (a->flags & BDRV_O_RDWR)) {
        ret = qcow2_clear_autoclear(bs, s);
        if (ret < 0) {
            error_setg_errno(a->errp, -ret, "Could not update the qcow2 header");
        }
    }
    return ret;
}

/* ---- Backing file ------------------------------------------------------------------- */

/* The backing file name, relative to the image's directory unless absolute. */
static char *backing_path(BDRVQcow2State *s)
{
    char *dir, *copy, *path;

    if (s->backing_file[0] == '/' || !s->image_filename) {
        return strdup(s->backing_file);
    }
    copy = strdup(s->image_filename);
    dir = dirname(copy);
    if (asprintf(&path, "%s/%s", dir, s->backing_file) < 0) {
        abort();
    }
    free(copy);
    return path;
}

static int open_backing(BlockDriverState *bs, json_object *options, Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    json_object *v = NULL, *o, *file;
    BlockDriverState *child;
    BdrvChild *c;
    char *path;

    if (json_object_object_get_ex(options, "backing", &v)) {
        if (json_object_is_type(v, json_type_null)) {
            return 0;            /* backing=null: no backing file */
        }
        return bdrv_open_child(bs, options, "backing", BDRV_CHILD_COW, true, errp) ? 0 : -1;
    }
    if (!s->backing_file) {
        return 0;
    }
    if (strchr(s->backing_file, ':') && strncmp(s->backing_file, "file:", 5) != 0) {
        error_setg(errp, "Could not open backing file '%s': only local files are supported",
                   s->backing_file);
        return -1;
    }
    path = backing_path(s);
    o = json_object_new_object();
    file = json_object_new_object();
    json_object_object_add(file, "driver", json_object_new_string("file"));
    json_object_object_add(file, "filename", json_object_new_string(path));
    json_object_object_add(o, "driver", json_object_new_string(
        s->backing_fmt ? s->backing_fmt : bdrv_probe_format(path)));
    json_object_object_add(o, "read-only", json_object_new_boolean(true));
    json_object_object_add(o, "file", file);
    bdrv_inherit_options(bs, o);
    child = bdrv_open_options(o, errp);
    json_object_put(o);
    if (!child) {
        error_prepend(errp, "Could not open backing file '%s': ", path);
        free(path);
        return -1;
    }
    free(path);
    c = bdrv_attach_child(bs, child, "backing", BDRV_CHILD_COW, errp);
    bdrv_unref(child);
    if (c) {
        c->inherits = true;     /* opened by us, from the image's header */
    }
    return c ? 0 : -1;
}

/* ---- Open and close ------------------------------------------------------------------- */

/*
 * overlap-check: a mode ("none", "constant", "cached", "all") or flags
 * over a template.  blockd checks every write against all metadata types
 * whatever the choice (an interval set makes that cheap, docs: README),
 * so the option is checked and otherwise changes nothing.
 */
static bool check_overlap_option(json_object *options, Error **errp)
{
    static const char *const modes[] = { "none", "constant", "cached", "all", NULL };
    json_object *v;
    int mode = 0;

    if (!json_object_object_get_ex(options, "overlap-check", &v)) {
        return true;
    }
    if (json_object_is_type(v, json_type_string)) {
        return opt_get_enum(options, "overlap-check", modes, &mode, errp);
    }
    return opt_get_enum(v, "template", modes, &mode, errp);
}

static int parse_options(BDRVQcow2State *s, OpenArgs *a, json_object *options, Error **errp)
{
    int64_t interval = 0, cache_size = -1;

    a->l2_cache_bytes = -1;
    a->rb_cache_bytes = -1;
    a->l2_entry_size = -1;
    /* Freed clusters go back to the file system per cause, as in QEMU:
     * guest requests with discard=unmap, snapshots always, others never. */
    s->pass_discard[QCOW2_DISCARD_REQUEST] = a->flags & BDRV_O_UNMAP;
    s->pass_discard[QCOW2_DISCARD_SNAPSHOT] = true;
    s->pass_discard[QCOW2_DISCARD_OTHER] = false;
    if (!opt_get_bool(options, "pass-discard-request",
                      &s->pass_discard[QCOW2_DISCARD_REQUEST], errp) ||
        !opt_get_bool(options, "pass-discard-snapshot",
                      &s->pass_discard[QCOW2_DISCARD_SNAPSHOT], errp) ||
        !opt_get_bool(options, "pass-discard-other",
                      &s->pass_discard[QCOW2_DISCARD_OTHER], errp) ||
        !opt_get_size(options, "l2-cache-entry-size", &a->l2_entry_size, errp) ||
        !opt_get_size(options, "l2-cache-size", &a->l2_cache_bytes, errp) ||
        !opt_get_size(options, "refcount-cache-size", &a->rb_cache_bytes, errp) ||
        !opt_get_size(options, "cache-size", &cache_size, errp) ||
        !opt_get_size(options, "cache-clean-interval", &interval, errp) ||
        !opt_get_bool(options, "lazy-refcounts", &s->lazy_refcounts, errp) ||
        !opt_get_bool(options, "discard-no-unref", &s->discard_no_unref, errp)) {
        return -1;
    }
    if (!check_overlap_option(options, errp)) {
        return -1;
    }
    if (a->l2_cache_bytes < 0 && cache_size >= 0) {
        a->l2_cache_bytes = cache_size * 3 / 4;
    }
    if (a->rb_cache_bytes < 0) {
        a->rb_cache_bytes = cache_size >= 0 ? cache_size / 4 : DEFAULT_RB_CACHE_BYTES;
    }
    if (interval > INT32_MAX) {
        error_setg(errp, "Cache clean interval too big");
        return -1;
    }
    s->cache_clean_ns = interval * 1000000000LL;
    return 0;
}

static void free_state(BDRVQcow2State *s) TSA_NO_TSA
{
    /* Close or failed open: no request can run any more. */
    qcow2_cache_free(s->l2_cache);
    qcow2_cache_free(s->rb_cache);
    free(s->l1);
    free(s->reftable);
    qcow2_metaset_destroy(&s->meta);
    free(s->pending);
    free(s->backing_file);
    free(s->backing_fmt);
    free(s->data_file_name);
    free(s->image_filename);
    qcow2_crypto_close(s);
    qcow2_bitmaps_free(s);
    memset(s, 0, sizeof(*s));
}

static void init_state(BDRVQcow2State *s, BlockDriverState *bs) TSA_NO_TSA
{
    /* Before the node is visible to anyone. */
    json_object *fo = NULL, *fn = NULL;

    co_mutex_init(&s->lock);
    qcow2_metaset_init(&s->meta);
    list_init(&s->inflight);
    co_queue_init(&s->inflight_wait);
    s->discard_unmap = bs->open_flags & BDRV_O_UNMAP;
    s->node_name = bs->node_name;
    s->last_clean_ns = clock_now_ns();
    graph_rdlock_main_loop();
    fo = bs->file->bs->options;
    if (fo && json_object_object_get_ex(fo, "filename", &fn)) {
        s->image_filename = strdup(json_object_get_string(fn));
    } else {
        s->image_filename = strdup(bs->file->bs->node_name);
    }
    graph_rdunlock_main_loop();
}

static int qcow2_open(BlockDriverState *bs, json_object *options, int flags, Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    OpenArgs a = { .options = options, .flags = flags, .errp = errp };
    int ret;

    GLOBAL_STATE_CODE();
    if (parse_options(s, &a, options, errp) < 0) {
        return -1;
    }
    if (!bdrv_open_child(bs, options, "file",
                         BDRV_CHILD_DATA | BDRV_CHILD_METADATA | BDRV_CHILD_PRIMARY, true,
                         errp)) {
        return -1;
    }
    init_state(s, bs);
    ret = bdrv_run_co(bs, open_header_co, &a);
    if (ret >= 0 && s->discard_no_unref && s->version < 3) {
        error_setg(errp, "discard-no-unref is only supported since qcow2 version 3");
        ret = -EINVAL;
    }
    if (ret >= 0) {
        ret = qcow2_open_data_file(bs, options, errp);
    }
    if (ret >= 0) {
        ret = qcow2_crypto_open(bs, options, errp);
    }
    if (ret >= 0) {
        ret = bdrv_run_co(bs, open_tables_co, &a);
    }
    if (ret >= 0) {
        ret = open_backing(bs, options, errp);
    }
    if (ret < 0) {
        free_state(s);
        return -1;
    }
    bs->total_bytes = s->size;
    if (qcow2_bitmaps_load(bs, flags & BDRV_O_RDWR, errp) < 0) {
        free_state(s);
        return -1;
    }
    /* Encryption works on whole 512-byte sectors. */
    bs->bl.request_alignment = s->cipher ? LUKS_SECTOR : 1;
    bs->bl.pwrite_zeroes_alignment = s->cluster_size;
    bs->bl.pdiscard_alignment = s->cluster_size;
    bs->bl.opt_transfer = s->cluster_size;
    return 0;
}

static int coroutine_fn close_co(BlockDriverState *bs, void *opaque) GRAPH_RDLOCK
{
    BDRVQcow2State *s = bs->opaque;
    int ret;

    (void)opaque;
    co_mutex_lock(&s->lock);
    ret = qcow2_sync_all(bs, s);
    co_mutex_unlock(&s->lock);
    return ret;
}

static void qcow2_close(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;

    GLOBAL_STATE_CODE();
    if (!bs->read_only) {
        Error *err = NULL;
        int ret;

        if (qcow2_bitmaps_store(bs, &err) < 0) {
            error_report("qcow2 image '%s': could not store the dirty bitmaps: %s",
                         s->image_filename, err ? error_get_pretty(err) : "I/O error");
            error_free(err);
        }
        ret = bdrv_run_co(bs, close_co, NULL);
        if (ret < 0) {
            error_report("qcow2 image '%s': could not write metadata on close: %s",
                         s->image_filename, strerror(-ret));
        }
    }
    free_state(s);
}

/* ---- I/O entry points that are not about mapping ------------------------------------ */

static int coroutine_fn qcow2_co_flush(BlockDriverState *bs) GRAPH_RDLOCK
{
    BDRVQcow2State *s = bs->opaque;
    int ret;

    IO_CODE();
    if (bs->read_only) {
        return 0;
    }
    co_mutex_lock(&s->lock);
    ret = qcow2_sync_metadata(bs, s);
    co_mutex_unlock(&s->lock);
    /* bdrv_co_flush() flushes the file next: the frees become stable too;
     * a data file is ours to flush (in-place writes went there). */
    if (ret >= 0 && s->data_file) {
        ret = bdrv_co_flush(s->data_file->bs);
    }
    return ret;
}

static int qcow2_get_info(BlockDriverState *bs, BlockDriverInfo *bdi)
{
    BDRVQcow2State *s = bs->opaque;

    *bdi = (BlockDriverInfo){
        .cluster_size = s->cluster_size,
        .subcluster_size = s->ext_l2 ? s->cluster_size >> 5 : s->cluster_size,
        .is_dirty = s->incompat & QCOW2_INCOMPAT_DIRTY,
        .backing_file = s->backing_file,
        .backing_fmt = s->backing_fmt,
    };
    return 0;
}

/* QEMU's ImageInfoSpecificQCow2 (version 3 adds the feature members). */
static json_object *qcow2_get_specific_info(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    json_object *info = json_object_new_object(), *data = json_object_new_object(), *bitmaps;
    json_object *enc;

    json_object_object_add(data, "compat", json_object_new_string(s->version == 2 ? "0.10"
                                                                                  : "1.1"));
    json_object_object_add(data, "compression-type",
                           json_object_new_string(s->compression_type == QCOW2_COMPRESSION_ZSTD
                                                  ? "zstd" : "zlib"));
    if (s->version >= 3) {
        json_object_object_add(data, "lazy-refcounts",
                               json_object_new_boolean(s->compat & QCOW2_COMPAT_LAZY_REFCOUNTS));
        json_object_object_add(data, "corrupt",
                               json_object_new_boolean((s->incompat & QCOW2_INCOMPAT_CORRUPT) ||
                                                       atomic_read(&s->corrupt)));
        json_object_object_add(data, "extended-l2", json_object_new_boolean(s->ext_l2));
        if (s->data_file_name) {
            json_object_object_add(data, "data-file",
                                   json_object_new_string(s->data_file_name));
        }
        if (qcow2_has_data_file(s)) {
            json_object_object_add(data, "data-file-raw",
                                   json_object_new_boolean(s->data_file_raw));
        }
    }
    json_object_object_add(data, "refcount-bits", json_object_new_int(s->refcount_bits));
    if ((enc = qcow2_crypto_info(s))) {
        json_object_object_add(data, "encrypt", enc);
    }
    if ((bitmaps = qcow2_bitmaps_info(s))) {
        json_object_object_add(data, "bitmaps", bitmaps);
    }
    json_object_object_add(info, "type", json_object_new_string("qcow2"));
    json_object_object_add(info, "data", data);
    return info;
}

const BlockDriver bdrv_qcow2 = {
    .supports_backing = true,
    .bdrv_co_truncate = qcow2_co_truncate,
    .bdrv_co_create = qcow2_co_create,
    .bdrv_co_amend = qcow2_co_amend,
    .bdrv_get_info = qcow2_get_info,
    .bdrv_reopen = qcow2_reopen,
    .bdrv_snapshot_create = qcow2_snapshot_create,
    .bdrv_snapshot_delete = qcow2_snapshot_delete,
    .bdrv_change_backing_file = qcow2_change_backing_file,
    .bdrv_get_specific_info = qcow2_get_specific_info,
    .bdrv_can_store_new_dirty_bitmap = qcow2_can_store_new_dirty_bitmap,
    .bdrv_remove_persistent_dirty_bitmap = qcow2_remove_persistent_dirty_bitmap,
    .format_name = "qcow2",
    .instance_size = sizeof(BDRVQcow2State),
    .is_format = true,
    .bdrv_open = qcow2_open,
    .bdrv_close = qcow2_close,
    .bdrv_co_preadv = qcow2_co_preadv,
    .bdrv_co_pwritev = qcow2_co_pwritev,
    .bdrv_co_flush = qcow2_co_flush,
    .bdrv_co_pdiscard = qcow2_co_pdiscard,
    .bdrv_co_pwrite_zeroes = qcow2_co_pwrite_zeroes,
    .bdrv_co_block_status = qcow2_co_block_status,
    .supported_write_flags = BDRV_REQ_WRITE_COMPRESSED,
    .supported_zero_flags = BDRV_REQ_MAY_UNMAP,
};
