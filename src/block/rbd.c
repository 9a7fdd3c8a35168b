/*
 * rbd.c - the rbd driver: a node whose content is a Ceph RBD image,
 * reached through librbd.  docs/ceph.md describes it as a user sees it.
 *
 * Requests go through librbd's asynchronous API.  librbd completes them
 * on threads of its own; the completion callback only records the result
 * and hands the waiting coroutine back to the context it was issued from
 * (aio_co_wake), so all further work on a request happens in its own
 * thread, as with the local I/O engines.  Nothing of the node is bound to
 * a context, so a node moves between threads with nothing to do.
 *
 * The librbd calls that block (block status, resize) run on thread-pool
 * workers; connecting and opening block the main thread at open, as any
 * network driver's open does.
 *
 * A read-write node holds the image's exclusive lock for as long as it is
 * read-write, where the image has that feature: librbd then refuses to
 * hand the lock to another client, so a second daemon cannot write the
 * image (docs/ceph.md: "Locking").
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/aio.h"
#include "blockd/atomic.h"
#include "blockd/block-io.h"
#include "blockd/iov.h"
#include "blockd/main-loop.h"
#include "blockd/thread-pool.h"
#include "block-internal.h"
#include "rbd.h"

/* Set at open, or changed by the main thread while the node is drained
 * ("locked"): requests read it without a lock. */
typedef struct RbdState {
    RbdTarget target;
    RbdCluster c;
    rbd_image_t image;
    uint64_t object_size;
    bool fast_diff;           /* block status can ask the object map */
    bool locked;              /* we hold the exclusive lock */
    const char *luks_found;   /* a LUKS header seen at open without a key */
    char *filename;
} RbdState;

/* ---- Requests --------------------------------------------------------- */

typedef struct RbdReq {
    Coroutine *co;
    ssize_t ret;
} RbdReq;

/* On a librbd thread: record the result, wake the issuer in its context. */
static void rbd_request_done(rbd_completion_t c, void *arg)
{
    RbdReq *req = arg;
    /* Pairs with the release in rbd_request(): librbd passes @req on
     * through code the sanitizers do not see. */
    Coroutine *co = atomic_load_acquire(&req->co);
    AioContext *ctx = coroutine_get_ctx(co);

    req->ret = rbd_aio_get_return_value(c);
    rbd_aio_release(c);
    /* Once woken, the request may end and its context go away while this
     * thread is still inside the wake-up: tell the context. */
    aio_context_foreign_begin(ctx);
    aio_co_wake(co);
    aio_context_foreign_end(ctx);
}

enum { RBD_READ, RBD_WRITE, RBD_FLUSH, RBD_DISCARD, RBD_ZEROES };

/* Issue one request and wait for it; -errno or >= 0. */
static ssize_t coroutine_fn rbd_request(RbdState *s, int op, int64_t offset, int64_t bytes,
                                        struct iovec *iov, int niov, int zero_flags)
{
    RbdReq req = { .ret = 0 };
    rbd_completion_t c;
    int r;

    atomic_store_release(&req.co, coroutine_self());
    r = rbd_aio_create_completion(&req, rbd_request_done, &c);
    if (r < 0) {
        return r;
    }
    switch (op) {
    case RBD_READ:
        r = rbd_aio_readv(s->image, iov, niov, offset, c);
        break;
    case RBD_WRITE:
        r = rbd_aio_writev(s->image, iov, niov, offset, c);
        break;
    case RBD_FLUSH:
        r = rbd_aio_flush(s->image, c);
        break;
    case RBD_DISCARD:
        r = rbd_aio_discard(s->image, offset, bytes, c);
        break;
    default:
        r = rbd_aio_write_zeroes(s->image, offset, bytes, c, zero_flags, 0);
        break;
    }
    if (r < 0) {
        rbd_aio_release(c);
        return r;
    }
    coroutine_yield();
    return req.ret;
}

static int coroutine_fn rbd_co_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                      struct iovec *iov, int niov, int flags)
{
    RbdState *s = bs->opaque;
    ssize_t r;

    (void)flags;
    IO_CODE();
    r = rbd_request(s, RBD_READ, offset, bytes, iov, niov, 0);
    if (r < 0) {
        return (int)r;
    }
    if (r < bytes) {
        /* Past what the cluster returned reads as zeroes. */
        iov_memset(iov, niov, (size_t)r, 0, (size_t)(bytes - r));
    }
    return 0;
}

static int coroutine_fn rbd_co_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                       struct iovec *iov, int niov, int flags)
{
    RbdState *s = bs->opaque;
    ssize_t r;

    (void)flags;
    IO_CODE();
    r = rbd_request(s, RBD_WRITE, offset, bytes, iov, niov, 0);
    return r < 0 ? (int)r : 0;
}

static int coroutine_fn rbd_co_flush(BlockDriverState *bs)
{
    IO_CODE();
    ssize_t r = rbd_request(bs->opaque, RBD_FLUSH, 0, 0, NULL, 0, 0);
    return r < 0 ? (int)r : 0;
}

static int coroutine_fn rbd_co_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    IO_CODE();
    ssize_t r = rbd_request(bs->opaque, RBD_DISCARD, offset, bytes, NULL, 0, 0);
    return r < 0 ? (int)r : 0;
}

static int coroutine_fn rbd_co_pwrite_zeroes(BlockDriverState *bs, int64_t offset,
                                             int64_t bytes, int flags)
{
    /* Without leave to unmap, the zeroes must take space. */
    int zflags = flags & BDRV_REQ_MAY_UNMAP ? 0 : RBD_WRITE_ZEROES_FLAG_THICK_PROVISION;

    IO_CODE();
    ssize_t r = rbd_request(bs->opaque, RBD_ZEROES, offset, bytes, NULL, 0, zflags);
    return r < 0 ? (int)r : 0;
}

/* ---- Block status and resize (blocking librbd calls, on workers) ------ */

typedef struct StatusJob {
    RbdState *s;
    int64_t offset, bytes;
    int64_t data_start, data_end;   /* first allocated extent, merged */
    bool found;
    bool map_invalid;               /* no object map to ask */
} StatusJob;

#define RBD_STATUS_STOP (-9000)     /* ends the iteration early */

static int status_extent(uint64_t off, size_t len, int exists, void *arg)
{
    StatusJob *job = arg;

    if (!exists) {
        return 0;
    }
    if (!job->found) {
        job->found = true;
        job->data_start = (int64_t)off;
        job->data_end = (int64_t)(off + len);
        return 0;
    }
    if ((int64_t)off != job->data_end) {
        return RBD_STATUS_STOP;     /* a gap: what we have is enough */
    }
    job->data_end += (int64_t)len;
    return 0;
}

/* Also asks whether the object map is valid: librbd may read the image
 * header again for that, after another client changed it. */
static int status_worker(void *opaque)
{
    StatusJob *job = opaque;
    uint64_t flags;
    int r;

    if (rbd_get_flags(job->s->image, &flags) < 0 || (flags & RBD_FLAG_FAST_DIFF_INVALID)) {
        job->map_invalid = true;
        return 0;
    }
    r = rbd_diff_iterate2(job->s->image, NULL, (uint64_t)job->offset, (uint64_t)job->bytes,
                          true, true, status_extent, job);
    return r == RBD_STATUS_STOP ? 0 : r;
}

/* The object map tells which objects exist: an object that does not is a
 * hole (zeroes), one that does is data.  Without a valid object map the
 * answer would cost a listing of objects: everything is data then. */
static int coroutine_fn rbd_co_block_status(BlockDriverState *bs, int64_t offset,
                                            int64_t bytes, int64_t *pnum)
{
    RbdState *s = bs->opaque;
    StatusJob job = { .s = s, .offset = offset, .bytes = bytes };
    int r;

    IO_CODE();
    *pnum = bytes;
    if (!s->fast_diff) {
        return BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED;
    }
    r = thread_pool_submit_co(status_worker, &job);
    if (r < 0) {
        return r;
    }
    if (job.map_invalid) {
        return BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED;
    }
    if (!job.found || job.data_start >= offset + bytes) {
        return BDRV_BLOCK_ZERO;
    }
    if (job.data_start > offset) {
        *pnum = job.data_start - offset;
        return BDRV_BLOCK_ZERO;
    }
    *pnum = (job.data_end < offset + bytes ? job.data_end : offset + bytes) - offset;
    return BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED;
}

typedef struct ResizeJob {
    RbdState *s;
    uint64_t size;
} ResizeJob;

static int resize_worker(void *opaque)
{
    ResizeJob *job = opaque;

    return rbd_resize(job->s->image, job->size);
}

static int coroutine_fn rbd_co_truncate(BlockDriverState *bs, int64_t size, Error **errp)
{
    ResizeJob job = { .s = bs->opaque, .size = (uint64_t)size };
    int r;

    IO_CODE();
    r = thread_pool_submit_co(resize_worker, &job);
    if (r < 0) {
        error_setg_errno(errp, -r, "error resizing image");
        return r;
    }
    atomic_set(&bs->total_bytes, size);
    return 0;
}

/* ---- Locking ---------------------------------------------------------- */

/* "client.4123 at 127.0.0.1:0/123456", or NULL. */
static char *lock_holder(rbd_image_t image)
{
    char tag[64], clients[256], cookies[256], addrs[256];
    size_t tag_len = sizeof(tag), cl = sizeof(clients), ck = sizeof(cookies);
    size_t al = sizeof(addrs);
    int exclusive;
    char *out;

    if (rbd_list_lockers(image, &exclusive, tag, &tag_len, clients, &cl, cookies, &ck, addrs,
                         &al) <= 0 ||
        asprintf(&out, "%s at %s", clients, addrs) < 0) {
        return NULL;
    }
    return out;
}

static int take_lock(RbdState *s, Error **errp)
{
    uint64_t features;
    int r;

    if (rbd_get_features(s->image, &features) < 0 || !(features & RBD_FEATURE_EXCLUSIVE_LOCK)) {
        return 0;
    }
    r = rbd_lock_acquire(s->image, RBD_LOCK_MODE_EXCLUSIVE);
    if (r < 0) {
        char *who = lock_holder(s->image);

        error_setg_errno(errp, -r, "Failed to get the exclusive lock of RBD image '%s/%s'%s%s",
                         s->target.pool, s->target.image, who ? ", held by " : "",
                         who ? who : "");
        free(who);
        return r;
    }
    s->locked = true;
    return 0;
}

static int drop_lock(RbdState *s, Error **errp)
{
    int r = 0;

    if (s->locked) {
        r = rbd_lock_release(s->image);
        if (r < 0) {
            error_setg_errno(errp, -r, "Failed to release the exclusive lock of RBD image '%s/%s'",
                             s->target.pool, s->target.image);
            return r;
        }
        s->locked = false;
    }
    return r;
}

/* ---- Open and close --------------------------------------------------- */

static bool load_encryption(RbdState *s, Error **errp)
{
    /* The two formats' options have the same layout; the algorithm is the
     * header's and ignored at load. */
    rbd_encryption_luks2_format_options_t o = {
        .passphrase = s->target.passphrase, .passphrase_size = s->target.passphrase_len,
    };
    int r = rbd_encryption_load(s->image, (rbd_encryption_format_t)s->target.encrypt_format,
                                &o, sizeof(o));

    if (r < 0) {
        error_setg_errno(errp, -r, "encryption load fail");
        return false;
    }
    return true;
}

static const char *unloaded_luks_format(RbdState *s);

static bool open_image(BlockDriverState *bs, RbdState *s, int flags, Error **errp)
{
    rbd_image_info_t info;
    uint64_t features = 0;
    int r;

    r = rbd_open(s->c.ioctx, s->target.image, &s->image, s->target.snapshot);
    if (r < 0) {
        s->image = NULL;
        error_setg_errno(errp, -r, "error reading header from %s", s->target.image);
        return false;
    }
    if (s->target.snapshot && (flags & BDRV_O_RDWR)) {
        if (!(flags & BDRV_O_AUTO_RDONLY)) {
            error_setg(errp, "rbd snapshots are read-only");
            return false;
        }
        bs->read_only = true;
        bs->open_flags &= ~BDRV_O_RDWR;
    }
    if (s->target.encrypt_format >= 0 && !load_encryption(s, errp)) {
        return false;
    }
    r = rbd_stat(s->image, &info, sizeof(info));
    if (r < 0) {
        error_setg_errno(errp, -r, "error getting image info from %s", s->target.image);
        return false;
    }
    s->object_size = info.obj_size;
    rbd_get_features(s->image, &features);
    /* With a key loaded, the object map still counts raw offsets (before
     * the LUKS header) in this librbd: trust it only without one. */
    s->fast_diff = (features & RBD_FEATURE_FAST_DIFF) && !s->target.snapshot &&
                   s->target.encrypt_format < 0;
    bs->total_bytes = (int64_t)info.size;
    s->luks_found = unloaded_luks_format(s);
    bs->bl.request_alignment = s->target.encrypt_format >= 0 ? 512 : 1;
    bs->bl.opt_transfer = s->object_size;
    if ((bs->open_flags & BDRV_O_RDWR) && take_lock(s, errp) < 0) {
        return false;
    }
    return true;
}

/*
 * The image's name, "json:{...}" with the options that name an rbd image
 * (a monitor list flattened to "server.N.host"/"server.N.port"), in the
 * order qemu-storage-daemon lists them so that both daemons name an image
 * alike: its dictionaries keep keys in 512 hash buckets, and list them
 * bucket by bucket.
 */
static const char *const name_keys[] = {
    "driver", "pool", "namespace", "image", "conf", "snapshot", "user", NULL,
};

typedef struct NameMember {
    char *key;
    char *json;
    unsigned bucket;
} NameMember;

static unsigned dict_bucket(const char *key)
{
    uint32_t v = 0x238F13AFu * (uint32_t)strlen(key);

    for (unsigned i = 0; key[i]; i++) {
        v += (uint32_t)(unsigned char)key[i] << (i * 5 % 24);
    }
    return (1103515243u * v + 12345u) % 512;
}

static int by_bucket(const void *a, const void *b)
{
    const NameMember *x = a, *y = b;

    return x->bucket < y->bucket ? -1 : x->bucket > y->bucket;
}

static void add_member(NameMember *m, int *n, const char *key, json_object *v)
{
    m[*n].key = strdup(key);
    m[*n].json = strdup(json_object_to_json_string_ext(
        v, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    m[*n].bucket = dict_bucket(key);
    (*n)++;
}

static char *make_filename(json_object *options)
{
    json_object *v, *servers = NULL;
    size_t nserv = 0;
    NameMember *m;
    char *out = strdup("json:{"), *n;
    int count = 0;

    if (json_object_object_get_ex(options, "server", &servers)) {
        nserv = json_object_array_length(servers);
    }
    m = calloc(8 + 2 * nserv, sizeof(*m));
    for (int i = 0; name_keys[i]; i++) {
        if (json_object_object_get_ex(options, name_keys[i], &v)) {
            add_member(m, &count, name_keys[i], v);
        }
    }
    for (size_t i = 0; i < nserv; i++) {
        json_object *srv = json_object_array_get_idx(servers, i);
        char key[48];

        for (int k = 0; k < 2; k++) {
            const char *part = k ? "port" : "host";

            snprintf(key, sizeof(key), "server.%zu.%s", i, part);
            json_object_object_get_ex(srv, part, &v);
            add_member(m, &count, key, v);
        }
    }
    qsort(m, (size_t)count, sizeof(*m), by_bucket);
    for (int i = 0; i < count; i++) {
        if (asprintf(&n, "%s%s\"%s\": %s", out, i ? ", " : "", m[i].key, m[i].json) < 0) {
            abort();
        }
        free(out);
        out = n;
        free(m[i].key);
        free(m[i].json);
    }
    free(m);
    if (asprintf(&n, "%s}", out) < 0) {
        abort();
    }
    free(out);
    return n;
}

static void free_state(RbdState *s)
{
    if (s->image) {
        /* (Closing lets the lock go even if this fails.) */
        drop_lock(s, NULL);
        rbd_close(s->image);
        s->image = NULL;
    }
    rbd_cluster_disconnect(&s->c);
    rbd_target_clear(&s->target);
    free(s->filename);
    s->filename = NULL;
}

static int rbd_open_node(BlockDriverState *bs, json_object *options, int flags, Error **errp)
{
    RbdState *s = bs->opaque;

    GLOBAL_STATE_CODE();
    if (!rbd_target_parse(&s->target, options, errp)) {
        free_state(s);
        return -EINVAL;
    }
    s->target.no_cache = flags & BDRV_O_NOCACHE;
    if (!rbd_cluster_connect(&s->c, &s->target, errp) || !open_image(bs, s, flags, errp)) {
        free_state(s);
        return -EIO;
    }
    s->filename = make_filename(options);
    return 0;
}

static void rbd_close_node(BlockDriverState *bs)
{
    GLOBAL_STATE_CODE();
    free_state(bs->opaque);
}

/* Read-only and back: the lock follows (the node is drained). */
static int rbd_reopen(BlockDriverState *bs, int flags, Error **errp)
{
    RbdState *s = bs->opaque;

    GLOBAL_STATE_CODE();
    if (!(flags & BDRV_O_RDWR)) {
        int r = rbd_flush(s->image);

        if (r < 0) {
            error_setg_errno(errp, -r, "error flushing image '%s'", s->target.image);
            return r;
        }
        return drop_lock(s, errp);
    }
    if (s->target.snapshot) {
        error_setg(errp, "rbd snapshots are read-only");
        return -EINVAL;
    }
    return take_lock(s, errp);
}

static const char *rbd_filename(BlockDriverState *bs)
{
    RbdState *s = bs->opaque;

    return s->filename;
}

static int rbd_get_info(BlockDriverState *bs, BlockDriverInfo *bdi)
{
    RbdState *s = bs->opaque;

    bdi->cluster_size = (int64_t)s->object_size;
    return 0;
}

/* "luks" or "luks2" when the image's first bytes are a LUKS header that
 * no key was loaded for (a loaded key hides the header), else NULL.  At
 * open: a query must not wait for the cluster. */
static const char *unloaded_luks_format(RbdState *s)
{
    static const uint8_t magic[6] = { 'L', 'U', 'K', 'S', 0xba, 0xbe };
    uint8_t hdr[8];

    if (s->target.encrypt_format >= 0 ||
        rbd_read(s->image, 0, sizeof(hdr), (char *)hdr) != sizeof(hdr) ||
        memcmp(hdr, magic, sizeof(magic)) != 0) {
        return NULL;
    }
    return hdr[7] == 2 && hdr[6] == 0 ? "luks2" : hdr[7] == 1 && hdr[6] == 0 ? "luks" : NULL;
}

/* {"type": "rbd", "data": {"encryption-format": ...}}. */
static json_object *rbd_specific_info(BlockDriverState *bs)
{
    RbdState *s = bs->opaque;
    json_object *info = json_object_new_object(), *data = json_object_new_object();
    const char *fmt = s->target.encrypt_format == RBD_ENCRYPTION_FORMAT_LUKS1 ? "luks"
                      : s->target.encrypt_format == RBD_ENCRYPTION_FORMAT_LUKS2 ? "luks2"
                      : s->luks_found;

    GLOBAL_STATE_CODE();
    if (fmt) {
        json_object_object_add(data, "encryption-format", json_object_new_string(fmt));
    }
    json_object_object_add(info, "type", json_object_new_string("rbd"));
    json_object_object_add(info, "data", data);
    return info;
}

/* RBD snapshots as SnapshotInfo: named, sized, with no VM state or clock.
 * librbd answers from the image's header as it holds it, reading the
 * header again only after another client changed it (as for
 * qemu-storage-daemon, that read is the main thread's). */
static json_object *rbd_snapshot_list(BlockDriverState *bs)
{
    RbdState *s = bs->opaque;
    rbd_snap_info_t snaps[64], *list = snaps;
    int max = 64, n;
    json_object *out;

    GLOBAL_STATE_CODE();
    memset(snaps, 0, sizeof(snaps));
    n = rbd_snap_list(s->image, list, &max);
    if (n == -ERANGE) {
        list = calloc((size_t)max + 1, sizeof(*list));
        n = rbd_snap_list(s->image, list, &max);
    }
    if (n <= 0) {
        if (list != snaps) {
            free(list);
        }
        return NULL;
    }
    out = json_object_new_array();
    for (int i = 0; i < n; i++) {
        json_object *o = json_object_new_object();

        json_object_object_add(o, "id", json_object_new_string(list[i].name));
        json_object_object_add(o, "name", json_object_new_string(list[i].name));
        json_object_object_add(o, "vm-state-size", json_object_new_int64((int64_t)list[i].size));
        json_object_object_add(o, "date-sec", json_object_new_int64(0));
        json_object_object_add(o, "date-nsec", json_object_new_int64(0));
        json_object_object_add(o, "vm-clock-sec", json_object_new_int64(0));
        json_object_object_add(o, "vm-clock-nsec", json_object_new_int64(0));
        json_object_object_add(o, "icount", json_object_new_int64(0));
        json_object_array_add(out, o);
    }
    rbd_snap_list_end(list);
    if (list != snaps) {
        free(list);
    }
    return out;
}

/* Ceph does not tell cheaply how much an image takes. */
static int64_t rbd_allocated_size(BlockDriverState *bs)
{
    (void)bs;
    return -ENOTSUP;
}

const BlockDriver bdrv_rbd = {
    .format_name = "rbd",
    .instance_size = sizeof(RbdState),
    .is_protocol = true,
    .bdrv_open = rbd_open_node,
    .bdrv_close = rbd_close_node,
    .bdrv_reopen = rbd_reopen,
    .bdrv_co_create = rbd_co_create,
    .bdrv_filename = rbd_filename,
    .bdrv_get_info = rbd_get_info,
    .bdrv_get_specific_info = rbd_specific_info,
    .bdrv_snapshot_list = rbd_snapshot_list,
    .bdrv_get_allocated_file_size = rbd_allocated_size,
    .bdrv_co_preadv = rbd_co_preadv,
    .bdrv_co_pwritev = rbd_co_pwritev,
    .bdrv_co_flush = rbd_co_flush,
    .bdrv_co_pdiscard = rbd_co_pdiscard,
    .bdrv_co_pwrite_zeroes = rbd_co_pwrite_zeroes,
    .bdrv_co_block_status = rbd_co_block_status,
    .bdrv_co_truncate = rbd_co_truncate,
    .supported_zero_flags = BDRV_REQ_MAY_UNMAP,
};
