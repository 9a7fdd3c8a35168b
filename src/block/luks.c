/*
 * luks.c - the "luks" format driver: a LUKS1 container (luks.h,
 * docs/luks.md) whose payload is the node's content, encrypted sector by
 * sector.  Opening unlocks a key slot with the key-secret password; reads
 * decrypt in place (or through a bounce buffer for scattered ones),
 * writes encrypt a copy, at most LUKS_IO_MAX bytes at a time.  Creation
 * (blockdev-create) writes a header, key slot 0 and sizes the payload.
 */
#include <errno.h>
#include <gnutls/crypto.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/atomic.h"
#include "blockd/block-backend-io.h"
#include "blockd/block-global-state.h"
#include "blockd/block-io.h"
#include "blockd/iov.h"
#include "blockd/main-loop.h"
#include "blockd/options.h"
#include "blockd/secret.h"
#include "block-internal.h"
#include "luks.h"

#define LUKS_IO_MAX (1 << 20)          /* bytes en/decrypted per step */

typedef struct LuksState {
    LuksHeader h;                      /* GS after open: the amend job's */
    LuksCipher *cipher;
    int64_t payload;                   /* bytes before the payload */
    uint8_t key[LUKS_MAX_KEY_LEN];     /* the master key, for adding slots */
} LuksState;

/* ---- Open ----------------------------------------------------------------------- */

/* A LuksReadFn: called by luks_unlock() under read_header_co's and
 * unlock_co's graph read lock. */
static int coroutine_fn read_file(void *opaque, uint64_t offset, void *buf, size_t len)
    GRAPH_RDLOCK
{
    BlockDriverState *bs = opaque;
    struct iovec iov = { buf, len };

    return bdrv_co_preadv(bs->file, (int64_t)offset, (int64_t)len, &iov, 1, 0);
}

typedef struct Unlock {
    const char *password;
    uint8_t key[LUKS_MAX_KEY_LEN];
    Error *err;
} Unlock;

static int coroutine_fn read_header_co(BlockDriverState *bs, void *opaque) GRAPH_RDLOCK
{
    LuksState *s = bs->opaque;
    uint8_t buf[LUKS_HEADER_SIZE];
    Error **errp = opaque;
    int ret;

    if (bdrv_getlength(bs->file->bs) < LUKS_HEADER_SIZE) {
        error_setg(errp, "Volume is not in LUKS format");
        return -EINVAL;
    }
    ret = read_file(bs, 0, buf, sizeof(buf));
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Cannot read the LUKS header");
        return ret;
    }
    return luks_header_parse(buf, (uint64_t)bdrv_getlength(bs->file->bs), &s->h, errp)
           ? 0 : -EINVAL;
}

static int coroutine_fn unlock_co(BlockDriverState *bs, void *opaque) GRAPH_RDLOCK
{
    LuksState *s = bs->opaque;
    Unlock *u = opaque;
    int slot;

    return luks_unlock(&s->h, u->password, read_file, bs, u->key, &slot, &u->err);
}

static int luks_open(BlockDriverState *bs, json_object *options, int flags, Error **errp)
{
    LuksState *s = bs->opaque;
    const char *key_secret = NULL;
    Unlock u = { 0 };
    int ret;

    (void)flags;
    if (!opt_get_str(options, "key-secret", &key_secret, errp) ||
        !bdrv_open_child(bs, options, "file", BDRV_CHILD_DATA | BDRV_CHILD_METADATA |
                                              BDRV_CHILD_PRIMARY, true, errp)) {
        return -1;
    }
    if (bdrv_run_co(bs, read_header_co, errp) < 0) {
        return -1;
    }
    if (!key_secret) {
        error_setg(errp, "Parameter 'key-secret' is required for cipher");
        return -1;
    }
    u.password = secret_lookup_as_utf8(key_secret, errp);
    if (!u.password) {
        return -1;
    }
    ret = bdrv_run_co(bs, unlock_co, &u);
    secret_free((void *)u.password, strlen(u.password));
    if (ret < 0) {
        error_propagate(errp, u.err);
        return -1;
    }
    s->cipher = luks_cipher_new(&s->h.spec, u.key, errp);
    memcpy(s->key, u.key, sizeof(s->key));
    explicit_bzero(u.key, sizeof(u.key));
    if (!s->cipher) {
        return -1;
    }
    s->payload = (int64_t)s->h.payload_sector * LUKS_SECTOR;
    graph_rdlock_main_loop();
    bs->total_bytes = bdrv_getlength(bs->file->bs) - s->payload;
    graph_rdunlock_main_loop();
    bs->bl.request_alignment = LUKS_SECTOR;
    bs->encrypted = true;
    return 0;
}

static void luks_close(BlockDriverState *bs)
{
    LuksState *s = bs->opaque;

    luks_cipher_free(s->cipher);
    explicit_bzero(&s->h, sizeof(s->h));
    explicit_bzero(s->key, sizeof(s->key));
}

/* ---- I/O -------------------------------------------------------------------------- */

static int coroutine_fn luks_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                    struct iovec *iov, int niov, int flags) GRAPH_RDLOCK
{
    LuksState *s = bs->opaque;
    uint8_t *bounce = NULL;
    int64_t done = 0;
    int ret = 0;

    (void)flags;
    if (niov == 1) {
        /* One buffer: read and decrypt it where it is. */
        ret = bdrv_co_preadv(bs->file, s->payload + offset, bytes, iov, 1, 0);
        return ret < 0 ? ret
               : luks_cipher_crypt(s->cipher, (uint64_t)offset / LUKS_SECTOR,
                                   iov[0].iov_base, (size_t)bytes, false);
    }
    bounce = malloc(bytes < LUKS_IO_MAX ? (size_t)bytes : LUKS_IO_MAX);
    while (done < bytes && ret == 0) {
        int64_t n = bytes - done < LUKS_IO_MAX ? bytes - done : LUKS_IO_MAX;
        struct iovec b = { bounce, (size_t)n };

        ret = bdrv_co_preadv(bs->file, s->payload + offset + done, n, &b, 1, 0);
        if (ret == 0) {
            ret = luks_cipher_crypt(s->cipher, (uint64_t)(offset + done) / LUKS_SECTOR,
                                    bounce, (size_t)n, false);
        }
        if (ret == 0) {
            iov_from_buf(iov, niov, (size_t)done, bounce, (size_t)n);
        }
        done += n;
    }
    free(bounce);
    return ret;
}

static int coroutine_fn luks_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                     struct iovec *iov, int niov, int flags) GRAPH_RDLOCK
{
    LuksState *s = bs->opaque;
    uint8_t *bounce = malloc(bytes < LUKS_IO_MAX ? (size_t)bytes : LUKS_IO_MAX);
    int64_t done = 0;
    int ret = 0;

    while (done < bytes && ret == 0) {
        int64_t n = bytes - done < LUKS_IO_MAX ? bytes - done : LUKS_IO_MAX;
        struct iovec b = { bounce, (size_t)n };

        iov_to_buf(iov, niov, (size_t)done, bounce, (size_t)n);
        ret = luks_cipher_crypt(s->cipher, (uint64_t)(offset + done) / LUKS_SECTOR, bounce,
                                (size_t)n, true);
        if (ret == 0) {
            ret = bdrv_co_pwritev(bs->file, s->payload + offset + done, n, &b, 1,
                                  flags & BDRV_REQ_FUA);
        }
        done += n;
    }
    free(bounce);
    return ret;
}

static int coroutine_fn luks_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes)
    GRAPH_RDLOCK
{
    LuksState *s = bs->opaque;

    return bdrv_co_pdiscard(bs->file, s->payload + offset, bytes);
}

static int coroutine_fn luks_truncate(BlockDriverState *bs, int64_t size, Error **errp)
    GRAPH_RDLOCK
{
    LuksState *s = bs->opaque;
    int ret = bdrv_co_truncate(bs->file, s->payload + size, errp);

    if (ret == 0) {
        atomic_set(&bs->total_bytes, size);
    }
    return ret;
}

/* ---- Information ------------------------------------------------------------------ */

static int luks_get_info(BlockDriverState *bs, BlockDriverInfo *bdi)
{
    (void)bs;
    *bdi = (BlockDriverInfo){ 0 };
    return 0;
}

static json_object *luks_get_specific_info(BlockDriverState *bs)
{
    LuksState *s = bs->opaque;
    json_object *info = json_object_new_object();

    json_object_object_add(info, "type", json_object_new_string("luks"));
    json_object_object_add(info, "data", luks_info_json(&s->h, s->payload));
    return info;
}

/* ---- Amending key slots ------------------------------------------------------------ */

static int coroutine_fn write_file(void *opaque, uint64_t offset, const void *buf,
                                   size_t len) GRAPH_RDLOCK
{
    BlockDriverState *bs = opaque;
    struct iovec iov = { (void *)buf, len };

    return bdrv_co_pwritev(bs->file, (int64_t)offset, (int64_t)len, &iov, 1, 0);
}

static int coroutine_fn flush_file(void *opaque) GRAPH_RDLOCK
{
    BlockDriverState *bs = opaque;

    return bdrv_co_flush(bs->file->bs);
}

static int coroutine_fn luks_co_amend(BlockDriverState *bs, json_object *options, bool force,
                                      Error **errp)
{
    LuksState *s = bs->opaque;
    LuksContainer c = { &s->h, s->key, read_file, write_file, flush_file, bs };
    int ret;

    GLOBAL_STATE_CODE();
    graph_co_rdlock();
    ret = luks_amend(&c, options, force, errp);
    graph_co_rdunlock();
    return ret;
}

/* ---- Creation --------------------------------------------------------------------- */

typedef struct LuksCreate {
    CreateTarget t;
    int64_t size;
    int64_t iter_time;
    const char *hash;
    LuksCipherSpec spec;
    char *password;
} LuksCreate;

static const char *const luks_create_members[] = {
    "driver", "file", "size", "preallocation", "key-secret", "cipher-alg", "cipher-mode",
    "ivgen-alg", "ivgen-hash-alg", "hash-alg", "iter-time", NULL,
};

static bool parse_create(json_object *options, LuksCreate *c, Error **errp)
{
    const char *secret = NULL, *alg = NULL, *mode = NULL, *ivgen = NULL, *ivhash = NULL;
    int prealloc = 0;

    c->iter_time = 2000;
    c->hash = "sha256";
    if (!create_check_members(options, luks_create_members, errp) ||
        !create_get_size(options, &c->size, errp) ||
        !opt_get_enum(options, "preallocation", create_prealloc_names, &prealloc, errp) ||
        !opt_get_str(options, "key-secret", &secret, errp) ||
        !opt_get_str(options, "cipher-alg", &alg, errp) ||
        !opt_get_str(options, "cipher-mode", &mode, errp) ||
        !opt_get_str(options, "ivgen-alg", &ivgen, errp) ||
        !opt_get_str(options, "ivgen-hash-alg", &ivhash, errp) ||
        !opt_get_str(options, "hash-alg", &c->hash, errp) ||
        !opt_get_int(options, "iter-time", &c->iter_time, errp)) {
        return false;
    }
    if (prealloc != 0) {
        error_setg(errp, "Parameter 'preallocation': only 'off' is supported by blockd's "
                   "luks driver");
        return false;
    }
    if (!secret) {
        error_setg(errp, "Parameter 'key-secret' is required for cipher");
        return false;
    }
    if (c->iter_time <= 0 || c->iter_time > INT32_MAX) {
        error_setg(errp, "Parameter 'iter-time' must be between 1 and %d", INT32_MAX);
        return false;
    }
    if (!luks_cipher_spec_from_options(alg, mode, ivgen, ivhash, &c->spec, errp)) {
        return false;
    }
    c->password = secret_lookup_as_utf8(secret, errp);
    return c->password != NULL;
}

static int coroutine_fn write_target(void *opaque, uint64_t offset, const void *buf,
                                     size_t len)
{
    LuksCreate *c = opaque;

    return blk_co_pwrite(c->t.blk, (int64_t)offset, (int64_t)len, (void *)buf, 0);
}

static int coroutine_fn write_container(LuksCreate *c, Error **errp)
{
    uint8_t key[LUKS_MAX_KEY_LEN], hdr[LUKS_HEADER_SIZE];
    LuksHeader h;
    int64_t payload;
    int ret;

    if (!luks_header_new(&h, &c->spec, c->hash, (uint64_t)c->iter_time, key, errp)) {
        return -EINVAL;
    }
    payload = (int64_t)h.payload_sector * LUKS_SECTOR;
    ret = blk_co_truncate(c->t.blk, 0, errp);
    if (ret == 0) {
        ret = blk_co_truncate(c->t.blk, payload + c->size, errp);
    }
    if (ret == 0) {
        ret = luks_store_slot(&h, 0, c->password, key, (uint64_t)c->iter_time, write_target,
                              c, errp);
    }
    if (ret == 0) {
        luks_header_build(&h, hdr);
        ret = write_target(c, 0, hdr, sizeof(hdr));
        if (ret == 0) {
            ret = blk_co_flush(c->t.blk);
        }
        if (ret < 0) {
            error_setg_errno(errp, -ret, "Cannot write the LUKS header");
        }
    }
    explicit_bzero(key, sizeof(key));
    return ret;
}

static int coroutine_fn luks_co_create(json_object *options, Error **errp)
{
    LuksCreate c = { 0 };
    int ret;

    GLOBAL_STATE_CODE();
    if (!parse_create(options, &c, errp)) {
        return -EINVAL;
    }
    ret = create_target_open(&c.t, options, errp);
    if (ret == 0) {
        ret = write_container(&c, errp);
    }
    create_target_close(&c.t);
    secret_free(c.password, strlen(c.password));
    return ret;
}

const BlockDriver bdrv_luks = {
    .format_name = "luks",
    .instance_size = sizeof(LuksState),
    .is_format = true,
    .bdrv_open = luks_open,
    .bdrv_close = luks_close,
    .bdrv_co_create = luks_co_create,
    .bdrv_co_amend = luks_co_amend,
    .bdrv_get_info = luks_get_info,
    .bdrv_get_specific_info = luks_get_specific_info,
    .bdrv_co_preadv = luks_preadv,
    .bdrv_co_pwritev = luks_pwritev,
    .bdrv_co_pdiscard = luks_pdiscard,
    .bdrv_co_flush = bdrv_filter_co_flush,
    .bdrv_co_truncate = luks_truncate,
    .supported_write_flags = BDRV_REQ_FUA,
};
