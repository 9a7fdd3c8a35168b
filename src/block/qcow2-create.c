/*
 * qcow2-create.c - formatting a node as an empty qcow2 image
 * (BlockdevCreateOptionsQcow2, see block-create.h).
 *
 * Half: global state, in a coroutine of the main thread.  Graph changes
 * (opening the target, attaching a backend) are bounced to the main loop.
 *
 * Layout: the header cluster (header, extensions, backing file name), the
 * refcount table, the refcount blocks that count all of these, then the
 * (empty) L1 table.  The image is complete and consistent when written;
 * preallocation=metadata then allocates every L2 table and data cluster
 * through the driver itself.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/block-backend-global-state.h"
#include "blockd/block-backend-io.h"
#include "blockd/block-create.h"
#include "blockd/block-global-state.h"
#include "blockd/block-io.h"
#include "blockd/main-loop.h"
#include "blockd/options.h"
#include "blockd/secret.h"
#include "block-internal.h"
#include "qcow2.h"

#define V3_HEADER_BYTES 112      /* with the compression type and padding */

/* encrypt: the LUKS container of a new image. */
typedef struct QcowLuksCreate {
    LuksCipherSpec spec;
    const char *hash;
    int64_t iter_time;
    char *password;              /* secret_free()d by qcow2_co_create */
    LuksHeader h;
    uint8_t key[LUKS_MAX_KEY_LEN];
    int64_t offset, length;      /* where the container goes in the image */
} QcowLuksCreate;

typedef struct Qcow2CreateOpts {
    int64_t size;
    int version;
    int64_t cluster_size;
    int cluster_bits;
    int refcount_order;
    const char *backing_file;
    const char *backing_fmt;
    bool lazy_refcounts;
    bool extended_l2;
    int prealloc;
    int compression_type;        /* QCOW2_COMPRESSION_* */
    bool encrypt;                /* encrypt.format=luks */
    QcowLuksCreate luks;
    bool data_file;              /* data-file given: guest data goes there */
    bool data_file_raw;
    char data_file_name[QCOW2_MAX_BACKING_NAME + 1];   /* for the header */
} Qcow2CreateOpts;

/* ---- Arguments ---------------------------------------------------------------------- */

/* Indexed by QCOW2_COMPRESSION_*. */
static const char *const compression_names[] = { "zlib", "zstd", NULL };

static int parse_version(json_object *options, int *version, Error **errp)
{
    static const char *const names[] = { "v2", "v3", NULL };
    int v = 1;

    if (!opt_get_enum(options, "version", names, &v, errp)) {
        return -EINVAL;
    }
    *version = v + 2;
    return 0;
}

static int parse_numbers(json_object *options, Qcow2CreateOpts *o, Error **errp)
{
    int64_t refcount_bits = 16;

    o->cluster_size = 65536;
    if (!create_get_size(options, &o->size, errp) ||
        !opt_get_size(options, "cluster-size", &o->cluster_size, errp) ||
        !opt_get_size(options, "refcount-bits", &refcount_bits, errp)) {
        return -EINVAL;
    }
    o->cluster_bits = __builtin_ctzll(o->cluster_size | (1ULL << 63));
    if (o->cluster_bits < QCOW2_MIN_CLUSTER_BITS || o->cluster_bits > QCOW2_MAX_CLUSTER_BITS ||
        (1LL << o->cluster_bits) != o->cluster_size) {
        error_setg(errp, "Cluster size must be a power of two between %d and %dk",
                   1 << QCOW2_MIN_CLUSTER_BITS, 1 << (QCOW2_MAX_CLUSTER_BITS - 10));
        return -EINVAL;
    }
    if (o->size % 512) {
        error_setg(errp, "Image size must be a multiple of 512 bytes");
        return -EINVAL;
    }
    if (refcount_bits > 64 || refcount_bits < 1 || (refcount_bits & (refcount_bits - 1))) {
        error_setg(errp, "Refcount width must be a power of two and may not exceed 64 bits");
        return -EINVAL;
    }
    o->refcount_order = __builtin_ctzll(refcount_bits);
    return 0;
}

/* encrypt (QEMU's QCryptoBlockCreateOptionsLUKS and a format): parsed,
 * and the container's header and master key made. */
static int parse_encrypt(json_object *options, Qcow2CreateOpts *o, Error **errp)
{
    static const char *const members[] = {
        "format", "key-secret", "cipher-alg", "cipher-mode", "ivgen-alg", "ivgen-hash-alg",
        "hash-alg", "iter-time", NULL,
    };
    const char *format = NULL, *secret = NULL, *alg = NULL, *mode = NULL, *ivgen = NULL;
    const char *ivhash = NULL;
    QcowLuksCreate *l = &o->luks;
    json_object *enc = NULL;

    if (!json_object_object_get_ex(options, "encrypt", &enc) || !enc) {
        return 0;
    }
    l->hash = "sha256";
    l->iter_time = 2000;
    if (!json_object_is_type(enc, json_type_object)) {
        error_setg(errp, "Invalid parameter type for 'encrypt', expected: object");
        return -EINVAL;
    }
    if (!create_check_members(enc, members, errp) ||
        !opt_get_str(enc, "format", &format, errp) ||
        !opt_get_str(enc, "key-secret", &secret, errp) ||
        !opt_get_str(enc, "cipher-alg", &alg, errp) ||
        !opt_get_str(enc, "cipher-mode", &mode, errp) ||
        !opt_get_str(enc, "ivgen-alg", &ivgen, errp) ||
        !opt_get_str(enc, "ivgen-hash-alg", &ivhash, errp) ||
        !opt_get_str(enc, "hash-alg", &l->hash, errp) ||
        !opt_get_int(enc, "iter-time", &l->iter_time, errp)) {
        return -EINVAL;
    }
    if (!format) {
        error_setg(errp, "Parameter 'format' is missing");
        return -EINVAL;
    }
    if (strcmp(format, "luks") != 0) {
        error_setg(errp, "blockd creates only LUKS encrypted qcow2 images, not '%s'", format);
        return -ENOTSUP;
    }
    if (!secret) {
        error_setg(errp, "Parameter 'encrypt.key-secret' is required for cipher");
        return -EINVAL;
    }
    if (l->iter_time <= 0 || l->iter_time > INT32_MAX) {
        error_setg(errp, "Parameter 'iter-time' must be between 1 and %d", INT32_MAX);
        return -EINVAL;
    }
    if (!luks_cipher_spec_from_options(alg, mode, ivgen, ivhash, &l->spec, errp) ||
        !(l->password = secret_lookup_as_utf8(secret, errp))) {
        return -EINVAL;
    }
    o->encrypt = true;
    if (!luks_header_new(&l->h, &l->spec, l->hash, (uint64_t)l->iter_time, l->key, errp)) {
        return -EINVAL;
    }
    l->length = (int64_t)l->h.payload_sector * LUKS_SECTOR;
    return 0;
}

/* Combinations QEMU refuses, with its messages. */
static int check_combinations(Qcow2CreateOpts *o, Error **errp)
{
    if (o->data_file && o->version < 3) {
        error_setg(errp, "External data files are only supported with compatibility level "
                   "1.1 and above (use version=v3 or greater)");
        return -EINVAL;
    }
    if (o->data_file_raw && !o->data_file) {
        error_setg(errp, "data-file-raw requires data-file");
        return -EINVAL;
    }
    if (o->data_file_raw && o->backing_file) {
        error_setg(errp, "Backing file and data-file-raw cannot be used at the same time");
        return -EINVAL;
    }
    /* A raw data file must read as the disk: every cluster is mapped. */
    if (o->data_file_raw && !o->prealloc) {
        o->prealloc = 1;
    }

    if (o->version < 3 && o->refcount_order != 4) {
        error_setg(errp, "Different refcount widths than 16 bits require compatibility "
                   "level 1.1 or above (use version=v3 or greater)");
        return -EINVAL;
    }
    if (o->version < 3 && o->lazy_refcounts) {
        error_setg(errp, "Lazy refcounts only supported with compatibility level 1.1 and "
                   "above (use version=v3 or greater)");
        return -EINVAL;
    }
    if (o->backing_fmt && !o->backing_file) {
        error_setg(errp, "Backing format cannot be used without backing file");
        return -EINVAL;
    }
    if (o->extended_l2 && o->version < 3) {
        error_setg(errp, "Extended L2 entries are only supported with compatibility level "
                   "1.1 and above (use version=v3 or greater)");
        return -EINVAL;
    }
    if (o->extended_l2 && o->cluster_bits < 14) {
        error_setg(errp, "Extended L2 entries are only supported with cluster sizes of at "
                   "least 16384 bytes");
        return -EINVAL;
    }
    if (o->backing_file && o->prealloc != 0 && !o->extended_l2) {
        error_setg(errp, "Backing file and preallocation can only be used at the same time "
                   "if extended_l2 is on");
        return -EINVAL;
    }
    if (o->prealloc > 1) {
        error_setg(errp, "Unsupported preallocation mode '%s'",
                   create_prealloc_names[o->prealloc]);
        return -ENOTSUP;
    }
    if (o->encrypt && o->prealloc) {
        /* The preallocated clusters would read as decrypted noise (a raw
         * data file is preallocated). */
        error_setg(errp, "blockd does not preallocate encrypted qcow2 images%s",
                   o->data_file_raw ? " (data-file-raw maps every cluster)" : "");
        return -ENOTSUP;
    }
    if (o->compression_type != QCOW2_COMPRESSION_ZLIB && o->version < 3) {
        error_setg(errp, "Non-zlib compression type is only supported with compatibility "
                   "level 1.1 and above (use version=v3 or greater)");
        return -EINVAL;
    }
    return 0;
}

static int parse_create_options(json_object *options, Qcow2CreateOpts *o, Error **errp)
{
    static const char *const allowed[] = {
        "driver", "file", "data-file", "data-file-raw", "extended-l2", "size", "version",
        "backing-file", "backing-fmt", "encrypt", "cluster-size", "preallocation",
        "lazy-refcounts", "refcount-bits", "compression-type", NULL,
    };
    json_object *v = NULL;
    int ret;

    memset(o, 0, sizeof(*o));
    if (!create_check_members(options, allowed, errp)) {
        return -EINVAL;
    }
    ret = parse_version(options, &o->version, errp);
    if (ret >= 0) {
        ret = parse_numbers(options, o, errp);
    }
    if (ret < 0) {
        return ret;
    }
    if (!opt_get_str(options, "backing-file", &o->backing_file, errp) ||
        !opt_get_str(options, "backing-fmt", &o->backing_fmt, errp) ||
        !opt_get_bool(options, "lazy-refcounts", &o->lazy_refcounts, errp) ||
        !opt_get_bool(options, "extended-l2", &o->extended_l2, errp) ||
        !opt_get_bool(options, "data-file-raw", &o->data_file_raw, errp) ||
        !opt_get_enum(options, "preallocation", create_prealloc_names, &o->prealloc, errp) ||
        !opt_get_enum(options, "compression-type", compression_names, &o->compression_type,
                      errp)) {
        return -EINVAL;
    }
    o->data_file = json_object_object_get_ex(options, "data-file", &v) && v;
    if (o->backing_file && strlen(o->backing_file) > QCOW2_MAX_BACKING_NAME) {
        error_setg(errp, "Backing file name too long");
        return -EINVAL;
    }
    ret = parse_encrypt(options, o, errp);
    return ret < 0 ? ret : check_combinations(o, errp);
}

/* ---- Layout ---------------------------------------------------------------------------- */

typedef struct Layout {
    int64_t l1_size;             /* entries */
    int64_t reftable_clusters, refblocks, l1_clusters;
    int64_t luks_clusters;       /* the LUKS container, after the L1 table */
    int64_t total;               /* clusters of metadata */
} Layout;

static int compute_layout(const Qcow2CreateOpts *o, Layout *l, Error **errp)
{
    int64_t cs = o->cluster_size;
    int64_t l2_entries = cs / (o->extended_l2 ? 16 : 8);
    int64_t rb_entries = cs * 8 >> o->refcount_order;

    l->l1_size = (o->size + cs * l2_entries - 1) / (cs * l2_entries);
    if (l->l1_size * 8 > QCOW2_MAX_L1_BYTES) {
        error_setg(errp, "Image size too large: the L1 table would exceed 32 MiB; use a "
                   "larger cluster size");
        return -EFBIG;
    }
    l->l1_clusters = l->l1_size ? (l->l1_size * 8 + cs - 1) / cs : 1;
    l->luks_clusters = o->encrypt ? (o->luks.length + cs - 1) / cs : 0;
    l->reftable_clusters = 1;
    l->refblocks = 1;
    /* The refcount structures count themselves: iterate to a fixed point. */
    for (;;) {
        int64_t total = 1 + l->reftable_clusters + l->refblocks + l->l1_clusters +
                        l->luks_clusters;
        int64_t rb = (total + rb_entries - 1) / rb_entries;
        int64_t rt = (rb * 8 + cs - 1) / cs;
        if (rb == l->refblocks && rt == l->reftable_clusters) {
            l->total = total;
            return 0;
        }
        l->refblocks = rb;
        l->reftable_clusters = rt;
    }
}

static int64_t luks_offset(const Layout *l, int64_t cs)
{
    return (1 + l->reftable_clusters + l->refblocks + l->l1_clusters) * cs;
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v;
}

/* Append a header extension at *pos; false if it does not fit. */
static bool add_ext(uint8_t *buf, int64_t cs, int64_t *pos, uint32_t type, const void *data,
                    uint32_t len)
{
    int64_t need = 8 + qcow2_align_up(len, 8);

    if (*pos + need + 8 > cs) {
        return false;
    }
    put32(buf + *pos, type);
    put32(buf + *pos + 4, len);
    memcpy(buf + *pos + 8, data, len);
    *pos += need;
    return true;
}

/* The feature name table: names for the bits this format defines. */
static uint32_t feature_table(uint8_t *t)
{
    static const struct { uint8_t type, bit; const char *name; } f[] = {
        { 0, 0, "dirty bit" }, { 0, 1, "corrupt bit" }, { 0, 2, "external data file" },
        { 0, 3, "compression type" }, { 0, 4, "extended L2 entries" },
        { 1, 0, "lazy refcounts" }, { 2, 0, "bitmaps" }, { 2, 1, "raw external data" },
    };

    memset(t, 0, ARRAY_SIZE(f) * 48);
    for (unsigned i = 0; i < ARRAY_SIZE(f); i++) {
        t[i * 48] = f[i].type;
        t[i * 48 + 1] = f[i].bit;
        memcpy(t + i * 48 + 2, f[i].name, strlen(f[i].name));
    }
    return ARRAY_SIZE(f) * 48;
}

/* The first cluster: header, extensions, backing file name. */
static int build_header(const Qcow2CreateOpts *o, const Layout *l, uint8_t *h, Error **errp)
{
    int64_t cs = o->cluster_size;
    int64_t pos = o->version == 3 ? V3_HEADER_BYTES : QCOW2_V2_HEADER_LEN;
    size_t name_len = o->backing_file ? strlen(o->backing_file) : 0;
    uint8_t table[8 * 48];
    uint32_t tlen = feature_table(table);

    memset(h, 0, cs);
    put32(h, QCOW2_MAGIC);
    put32(h + 4, o->version);
    put32(h + 20, o->cluster_bits);
    qcow2_put_be64(h + 24, o->size);
    put32(h + 36, l->l1_size);
    qcow2_put_be64(h + 40, (uint64_t)(1 + l->reftable_clusters + l->refblocks) * cs);
    qcow2_put_be64(h + 48, (uint64_t)cs);
    put32(h + 56, l->reftable_clusters);
    if (o->version == 3) {
        qcow2_put_be64(h + 72, (o->extended_l2 ? QCOW2_INCOMPAT_EXTL2 : 0) |
                               (o->compression_type ? QCOW2_INCOMPAT_COMPRESSION : 0) |
                               (o->data_file ? QCOW2_INCOMPAT_DATA_FILE : 0));
        qcow2_put_be64(h + 80, o->lazy_refcounts ? QCOW2_COMPAT_LAZY_REFCOUNTS : 0);
        qcow2_put_be64(h + 88, o->data_file_raw ? QCOW2_AUTOCLEAR_DATA_RAW : 0);
        put32(h + 96, o->refcount_order);
        put32(h + 100, V3_HEADER_BYTES);
        h[104] = o->compression_type;
    }
    if (o->backing_fmt &&
        !add_ext(h, cs - name_len, &pos, QCOW2_EXT_BACKING_FMT, o->backing_fmt,
                 strlen(o->backing_fmt))) {
        error_setg(errp, "Backing file name and format do not fit in the header cluster");
        return -EINVAL;
    }
    if (o->encrypt) {
        uint8_t ext[16];

        put32(h + 32, QCOW2_CRYPT_LUKS);
        qcow2_put_be64(ext, (uint64_t)luks_offset(l, cs));
        qcow2_put_be64(ext + 8, (uint64_t)o->luks.length);
        if (!add_ext(h, cs - name_len, &pos, QCOW2_EXT_CRYPTO, ext, sizeof(ext))) {
            error_setg(errp, "The crypto header does not fit in the header cluster");
            return -EINVAL;
        }
    }
    if (o->data_file &&
        !add_ext(h, cs - name_len, &pos, QCOW2_EXT_DATA_FILE, o->data_file_name,
                 strlen(o->data_file_name))) {
        error_setg(errp, "Data file name does not fit in the header cluster");
        return -EINVAL;
    }
    /* The names help tools that do not know a feature; optional if space is short. */
    if (o->version == 3) {
        add_ext(h, cs - name_len, &pos, QCOW2_EXT_FEATURES, table, tlen);
    }
    pos += 8;                    /* the end-of-extensions marker (zeroes) */
    if (o->backing_file) {
        if (pos + (int64_t)name_len > cs) {
            error_setg(errp, "Backing file name does not fit in the header cluster");
            return -EINVAL;
        }
        qcow2_put_be64(h + 8, pos);
        put32(h + 16, name_len);
        memcpy(h + pos, o->backing_file, name_len);
    }
    return 0;
}

/* Header cluster, refcount table and refcount blocks, in one buffer. */
static uint8_t *build_metadata(const Qcow2CreateOpts *o, const Layout *l, Error **errp)
{
    int64_t cs = o->cluster_size, rb_first = 1 + l->reftable_clusters;
    int64_t rb_entries = cs * 8 >> o->refcount_order;
    uint8_t *buf = calloc(rb_first + l->refblocks, cs);

    if (!buf) {
        error_setg(errp, "Could not allocate the image metadata");
        return NULL;
    }
    if (build_header(o, l, buf, errp) < 0) {
        free(buf);
        return NULL;
    }
    for (int64_t i = 0; i < l->refblocks; i++) {
        qcow2_put_be64(buf + cs + i * 8, (uint64_t)(rb_first + i) * cs);
    }
    for (int64_t c = 0; c < l->total; c++) {
        qcow2_rb_set(o->refcount_order, buf + (rb_first + c / rb_entries) * cs,
                     c % rb_entries, 1);
    }
    return buf;
}

/* ---- Writing -------------------------------------------------------------------------- */

/* The new image opened over the target (and its data file, if any). */
typedef struct FormatOpen {
    CreateTarget *t;
    CreateTarget *data;          /* NULL: no data file */
} FormatOpen;

static void open_qcow2_bh(void *opaque)
{
    FormatOpen *f = opaque;
    json_object *o = json_object_new_object();

    json_object_object_add(o, "driver", json_object_new_string("qcow2"));
    json_object_object_add(o, "file", json_object_new_string(f->t->bs->node_name));
    if (f->data) {
        json_object_object_add(o, "data-file",
                               json_object_new_string(f->data->bs->node_name));
    }
    json_object_object_add(o, "backing", NULL);
    f->t->format = bdrv_open_options(o, &f->t->err);
    json_object_put(o);
}

/* Resize the target to @size (through its backend, which may resize). */
static int coroutine_fn target_truncate(CreateTarget *t, int64_t size, Error **errp)
{
    return blk_co_truncate(t->blk, size, errp);
}

typedef struct LuksTarget {
    CreateTarget *t;
    int64_t offset;
} LuksTarget;

/* A LuksWriteFn into the container's clusters. */
static int coroutine_fn write_container(void *opaque, uint64_t offset, const void *buf,
                                        size_t len)
{
    LuksTarget *lt = opaque;

    return blk_co_pwrite(lt->t->blk, lt->offset + (int64_t)offset, (int64_t)len, (void *)buf,
                         0);
}

/* Key slot 0 for the password, then the LUKS header, at @offset. */
static int coroutine_fn write_luks(CreateTarget *t, const Qcow2CreateOpts *o, int64_t offset,
                                   Error **errp)
{
    LuksHeader h = o->luks.h;
    LuksTarget lt = { t, offset };
    uint8_t hdr[LUKS_HEADER_SIZE];
    int ret;

    ret = luks_store_slot(&h, 0, o->luks.password, o->luks.key, (uint64_t)o->luks.iter_time,
                          write_container, &lt, errp);
    if (ret == 0) {
        luks_header_build(&h, hdr);
        ret = write_container(&lt, 0, hdr, sizeof(hdr));
        if (ret == 0) {
            ret = blk_co_flush(t->blk);
        }
        if (ret < 0) {
            error_setg_errno(errp, -ret, "Cannot write the LUKS header");
        }
    }
    explicit_bzero(&h, sizeof(h));
    return ret;
}

static int coroutine_fn write_image(CreateTarget *t, const Qcow2CreateOpts *o, Error **errp)
{
    Layout l;
    uint8_t *meta;
    int64_t meta_clusters;
    int ret = compute_layout(o, &l, errp);

    if (ret < 0) {
        return ret;
    }
    meta = build_metadata(o, &l, errp);
    if (!meta) {
        return -EINVAL;
    }
    meta_clusters = 1 + l.reftable_clusters + l.refblocks;
    /* Empty first, so no stale data survives under the new tables. */
    ret = target_truncate(t, 0, errp);
    if (ret >= 0) {
        ret = target_truncate(t, l.total * o->cluster_size, errp);
    }
    if (ret >= 0) {
        ret = blk_co_pwrite(t->blk, 0, meta_clusters * o->cluster_size, meta, 0);
        if (ret >= 0) {
            ret = blk_co_flush(t->blk);
        }
        if (ret < 0) {
            error_setg_errno(errp, -ret, "Could not write the qcow2 header");
        }
    }
    free(meta);
    if (ret >= 0 && o->encrypt) {
        ret = write_luks(t, o, luks_offset(&l, o->cluster_size), errp);
    }
    return ret;
}

static int coroutine_fn preallocate(CreateTarget *t, CreateTarget *data, Error **errp)
{
    FormatOpen f = { t, data };
    BDRVQcow2State *s;
    int ret;

    create_target_release_blk(t);
    if (data) {
        create_target_release_blk(data);
    }
    bdrv_co_run_in_main_loop(open_qcow2_bh, &f);
    if (!t->format) {
        error_propagate(errp, t->err);
        t->err = NULL;
        return -EIO;
    }
    s = t->format->opaque;
    graph_co_rdlock();
    co_mutex_lock(&s->lock);
    ret = qcow2_preallocate_metadata(t->format, s, 0);
    co_mutex_unlock(&s->lock);
    graph_co_rdunlock();
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Could not preallocate metadata");
    }
    return ret;
}

static void free_opts(Qcow2CreateOpts *o)
{
    if (o->luks.password) {
        secret_free(o->luks.password, strlen(o->luks.password));
    }
    explicit_bzero(&o->luks, sizeof(o->luks));
}

typedef struct DataFileName {
    CreateTarget *d;
    Qcow2CreateOpts *o;
} DataFileName;

static void data_file_name_bh(void *opaque)
{
    DataFileName *n = opaque;
    char buf[64];

    snprintf(n->o->data_file_name, sizeof(n->o->data_file_name), "%s",
             bdrv_get_filename(n->d->bs, buf, sizeof(buf)));
}

/* The data file: opened, named in the header as QEMU names it, sized. */
static int coroutine_fn open_data_file(CreateTarget *d, json_object *options,
                                       Qcow2CreateOpts *o, Error **errp)
{
    DataFileName n = { d, o };
    int ret = create_target_open_ref(d, options, "data-file", errp);

    if (ret < 0) {
        return ret;
    }
    bdrv_co_run_in_main_loop(data_file_name_bh, &n);
    return target_truncate(d, o->size, errp);
}

int coroutine_fn qcow2_co_create(json_object *options, Error **errp)
{
    CreateTarget t = { 0 }, d = { 0 };
    Qcow2CreateOpts o;
    int ret;

    GLOBAL_STATE_CODE();
    ret = parse_create_options(options, &o, errp);
    if (ret < 0) {
        free_opts(&o);
        return ret;
    }
    ret = create_target_open(&t, options, errp);
    if (ret >= 0 && o.data_file) {
        ret = open_data_file(&d, options, &o, errp);
    }
    if (ret >= 0) {
        ret = write_image(&t, &o, errp);
        if (ret >= 0 && o.prealloc) {
            ret = preallocate(&t, o.data_file ? &d : NULL, errp);
        }
    }
    create_target_close(&t);
    create_target_close(&d);
    free_opts(&o);
    return ret;
}
