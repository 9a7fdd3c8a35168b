/*
 * qcow2-crypto.c - encrypted qcow2 images (encrypt.format=luks) and the
 * data I/O every request goes through.
 *
 * A LUKS1 container (luks.h, docs/luks.md) lives in refcounted clusters
 * of the image; the crypto header extension gives its offset and length,
 * and the header's crypt method is 2.  Its payload offset is not used:
 * guest data stays in ordinary data clusters, each 512-byte sector
 * encrypted with the sector number of its host offset as the IV (so a
 * cluster that moves must be encrypted again: copy-on-write decrypts what
 * it copies and encrypts it at the new place).  Zero and unallocated
 * clusters are never decrypted.  The legacy AES method (1) is refused.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/block-global-state.h"
#include "blockd/block-io.h"
#include "blockd/iov.h"
#include "blockd/main-loop.h"
#include "blockd/options.h"
#include "blockd/secret.h"
#include "qcow2.h"

#define CRYPT_STEP (1 << 20)     /* bytes encrypted or decrypted at a time */

/* ---- The header extension --------------------------------------------------------- */

int qcow2_crypto_ext_parse(BDRVQcow2State *s, const uint8_t *p, uint32_t len, Error **errp)
{
    if (len != 16) {
        error_setg(errp, "qcow2: crypto header extension has length %u, not 16", len);
        return -EINVAL;
    }
    s->crypto_offset = (int64_t)qcow2_be64(p);
    s->crypto_length = (int64_t)qcow2_be64(p + 8);
    if (s->crypto_offset <= 0 || s->crypto_offset > (int64_t)QCOW2_OFFSET_MASK ||
        (s->crypto_offset & (s->cluster_size - 1)) ||
        s->crypto_length < LUKS_HEADER_SIZE || s->crypto_length > (64 << 20)) {
        error_setg(errp, "qcow2: invalid crypto header (offset %lld, length %lld)",
                   (long long)s->crypto_offset, (long long)s->crypto_length);
        return -EINVAL;
    }
    return 0;
}

/* ---- Open ------------------------------------------------------------------------- */

/* A LuksReadFn over the container's clusters (luks_unlock's reads). */
static int coroutine_fn read_container(void *opaque, uint64_t offset, void *buf, size_t len)
    GRAPH_RDLOCK
{
    BlockDriverState *bs = opaque;
    BDRVQcow2State *s = bs->opaque;

    if (offset > (uint64_t)s->crypto_length || len > s->crypto_length - offset) {
        return -EINVAL;
    }
    return qcow2_file_pread(bs, s->crypto_offset + (int64_t)offset, (int64_t)len, buf);
}

typedef struct Unlock {
    const char *password;
    uint8_t key[LUKS_MAX_KEY_LEN];
    Error *err;
} Unlock;

static int coroutine_fn unlock_co(BlockDriverState *bs, void *opaque) GRAPH_RDLOCK
{
    BDRVQcow2State *s = bs->opaque;
    Unlock *u = opaque;
    uint8_t buf[LUKS_HEADER_SIZE];
    int slot, ret;

    if (s->crypto_offset + s->crypto_length > bdrv_getlength(bs->file->bs)) {
        error_setg(&u->err, "qcow2: the crypto header lies beyond the end of the file");
        return -EINVAL;
    }
    ret = read_container(bs, 0, buf, sizeof(buf));
    if (ret < 0) {
        error_setg_errno(&u->err, -ret, "Cannot read the LUKS header");
        return ret;
    }
    if (!luks_header_parse(buf, (uint64_t)s->crypto_length, s->luks, &u->err)) {
        return -EINVAL;
    }
    return luks_unlock(s->luks, u->password, read_container, bs, u->key, &slot, &u->err);
}

/* encrypt.format and encrypt.key-secret, nested or dotted. */
static bool encrypt_options(json_object *options, const char **format, const char **secret,
                            Error **errp)
{
    json_object *enc = NULL;

    *format = *secret = NULL;
    if (json_object_object_get_ex(options, "encrypt", &enc) &&
        json_object_is_type(enc, json_type_object)) {
        return opt_get_str(enc, "format", format, errp) &&
               opt_get_str(enc, "key-secret", secret, errp);
    }
    return opt_get_str(options, "encrypt.format", format, errp) &&
           opt_get_str(options, "encrypt.key-secret", secret, errp);
}

int qcow2_crypto_open(BlockDriverState *bs, json_object *options, Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    const char *format, *secret;
    Unlock u = { 0 };
    int ret;

    GLOBAL_STATE_CODE();
    if (!encrypt_options(options, &format, &secret, errp)) {
        return -EINVAL;
    }
    if (s->crypt_method == QCOW2_CRYPT_NONE) {
        if (format) {
            error_setg(errp, "No encryption in image header, but options specified format "
                       "'%s'", format);
            return -EINVAL;
        }
        return 0;
    }
    if (format && strcmp(format, "luks") != 0) {
        error_setg(errp, "Header reported 'luks' encryption format but options specify "
                   "'%s'", format);
        return -EINVAL;
    }
    if (!s->crypto_length) {
        error_setg(errp, "qcow2: an encrypted image (LUKS) without a crypto header extension");
        return -EINVAL;
    }
    if (!secret) {
        error_setg(errp, "Parameter 'encrypt.key-secret' is required for cipher");
        return -EINVAL;
    }
    u.password = secret_lookup_as_utf8(secret, errp);
    if (!u.password) {
        return -EINVAL;
    }
    s->luks = calloc(1, sizeof(*s->luks));
    if (!s->luks) {
        error_setg(&u.err, "Cannot allocate the LUKS header");
    }
    ret = s->luks ? bdrv_run_co(bs, unlock_co, &u) : -ENOMEM;
    secret_free((void *)u.password, strlen(u.password));
    if (ret < 0) {
        error_propagate(errp, u.err);
        explicit_bzero(u.key, sizeof(u.key));
        return ret;
    }
    s->cipher = luks_cipher_new(&s->luks->spec, u.key, errp);
    memcpy(s->luks_key, u.key, sizeof(s->luks_key));
    explicit_bzero(u.key, sizeof(u.key));
    if (!s->cipher) {
        return -EINVAL;
    }
    bs->encrypted = true;
    return 0;
}

void qcow2_crypto_close(BDRVQcow2State *s)
{
    luks_cipher_free(s->cipher);
    if (s->luks) {
        explicit_bzero(s->luks, sizeof(*s->luks));
        free(s->luks);
    }
    s->cipher = NULL;
    s->luks = NULL;
    explicit_bzero(s->luks_key, sizeof(s->luks_key));
}

json_object *qcow2_crypto_info(BDRVQcow2State *s)
{
    json_object *info;

    if (!s->luks) {
        return NULL;
    }
    info = luks_info_json(s->luks, (int64_t)s->luks->payload_sector * LUKS_SECTOR);
    json_object_object_add(info, "format", json_object_new_string("luks"));
    return info;
}

/* ---- Amending key slots ------------------------------------------------------------- */

static int coroutine_fn write_container(void *opaque, uint64_t offset, const void *buf,
                                        size_t len) GRAPH_RDLOCK
{
    BlockDriverState *bs = opaque;
    BDRVQcow2State *s = bs->opaque;

    if (offset > (uint64_t)s->crypto_length || len > s->crypto_length - offset) {
        return -EINVAL;
    }
    return qcow2_file_pwrite(bs, s->crypto_offset + (int64_t)offset, (int64_t)len, buf);
}

static int coroutine_fn flush_container(void *opaque) GRAPH_RDLOCK
{
    BlockDriverState *bs = opaque;

    return bdrv_co_flush(bs->file->bs);
}

int coroutine_fn qcow2_co_amend(BlockDriverState *bs, json_object *options, bool force,
                                Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    LuksContainer c = { s->luks, s->luks_key, read_container, write_container,
                        flush_container, bs };
    json_object *enc = NULL;
    const char *format = NULL;
    int ret;

    GLOBAL_STATE_CODE();
    if (!json_object_object_get_ex(options, "encrypt", &enc) || !enc) {
        return 0;                /* qcow2 amends nothing else */
    }
    if (!s->luks) {
        error_setg(errp, "image is not encrypted, can't amend");
        return -EINVAL;
    }
    if (!opt_get_str(enc, "format", &format, errp)) {
        return -EINVAL;
    }
    if (format && strcmp(format, "luks") != 0) {
        error_setg(errp, "Header reported 'luks' encryption format but options specify "
                   "'%s'", format);
        return -EINVAL;
    }
    graph_co_rdlock();
    ret = luks_amend(&c, enc, force, errp);
    graph_co_rdunlock();
    return ret;
}

/* ---- Data I/O ------------------------------------------------------------------------ */

/* Through a bounce buffer, CRYPT_STEP bytes at a time: read and decrypt
 * into @iov, or encrypt a copy of @iov and write it. */
static int coroutine_fn crypt_bounced(BdrvChild *child, LuksCipher *cipher, int64_t host,
                                      int64_t bytes, struct iovec *iov, int niov, bool write)
    GRAPH_RDLOCK
{
    uint8_t *bounce = malloc(bytes < CRYPT_STEP ? bytes : CRYPT_STEP);
    int ret = bounce ? 0 : -ENOMEM;

    for (int64_t done = 0; done < bytes && ret >= 0;) {
        int64_t n = bytes - done < CRYPT_STEP ? bytes - done : CRYPT_STEP;
        uint64_t sector = (uint64_t)(host + done) / LUKS_SECTOR;
        struct iovec b = { bounce, (size_t)n };

        if (write) {
            iov_to_buf(iov, niov, (size_t)done, bounce, (size_t)n);
            ret = luks_cipher_crypt(cipher, sector, bounce, (size_t)n, true);
            if (ret >= 0) {
                ret = bdrv_co_pwritev(child, host + done, n, &b, 1, 0);
            }
        } else {
            ret = bdrv_co_preadv(child, host + done, n, &b, 1, 0);
            if (ret >= 0) {
                ret = luks_cipher_crypt(cipher, sector, bounce, (size_t)n, false);
            }
            if (ret >= 0) {
                iov_from_buf(iov, niov, (size_t)done, bounce, (size_t)n);
            }
        }
        done += n;
    }
    free(bounce);
    return ret;
}

int coroutine_fn qcow2_data_preadv(BlockDriverState *bs, BDRVQcow2State *s, int64_t host,
                                   int64_t bytes, struct iovec *iov, int niov)
{
    BdrvChild *child = qcow2_data(bs, s);
    int ret;

    if (!s->cipher) {
        return bdrv_co_preadv(child, host, bytes, iov, niov, 0);
    }
    if (niov == 1) {
        /* One buffer: decrypted where it is. */
        ret = bdrv_co_preadv(child, host, bytes, iov, 1, 0);
        return ret < 0 ? ret : luks_cipher_crypt(s->cipher, (uint64_t)host / LUKS_SECTOR,
                                                 iov[0].iov_base, (size_t)bytes, false);
    }
    return crypt_bounced(child, s->cipher, host, bytes, iov, niov, false);
}

int coroutine_fn qcow2_data_pwritev(BlockDriverState *bs, BDRVQcow2State *s, int64_t host,
                                    int64_t bytes, struct iovec *iov, int niov)
{
    BdrvChild *child = qcow2_data(bs, s);

    if (!s->cipher) {
        return bdrv_co_pwritev(child, host, bytes, iov, niov, 0);
    }
    /* The guest's buffer is never encrypted in place: it is the guest's. */
    return crypt_bounced(child, s->cipher, host, bytes, iov, niov, true);
}
