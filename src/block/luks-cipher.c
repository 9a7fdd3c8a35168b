/*
 * luks-cipher.c - the sector cipher of a LUKS payload (luks.h): AES in
 * XTS or CBC mode with the plain, plain64 or ESSIV initialization
 * vectors, through GnuTLS.  A GnuTLS handle carries per-operation state,
 * so each request takes one from a pool of the key's handles.
 */
#include <errno.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/thread.h"
#include "luks.h"

#define POOL_MAX 16

struct LuksCipher {
    LuksCipherSpec spec;
    gnutls_cipher_algorithm_t alg;
    uint8_t key[LUKS_MAX_KEY_LEN];
    uint8_t essiv_key[32];          /* hash of the key, for ESSIV */
    BdMutex lock;
    gnutls_cipher_hd_t idle[POOL_MAX] TSA_FIELD_GUARDED_BY(lock);
    int nidle TSA_FIELD_GUARDED_BY(lock);
};

/* ---- Specifications ------------------------------------------------------------ */

static gnutls_cipher_algorithm_t gnutls_alg(const char *mode, size_t key_len)
{
    if (strcmp(mode, "xts") == 0) {
        return key_len == 32 ? GNUTLS_CIPHER_AES_128_XTS
             : key_len == 64 ? GNUTLS_CIPHER_AES_256_XTS : GNUTLS_CIPHER_UNKNOWN;
    }
    return key_len == 16 ? GNUTLS_CIPHER_AES_128_CBC
         : key_len == 24 ? GNUTLS_CIPHER_AES_192_CBC
         : key_len == 32 ? GNUTLS_CIPHER_AES_256_CBC : GNUTLS_CIPHER_UNKNOWN;
}

static bool set_ivgen(LuksCipherSpec *s, const char *ivgen, const char *hash, Error **errp)
{
    if (strcmp(ivgen, "plain") == 0) {
        s->ivgen = LUKS_IV_PLAIN;
    } else if (strcmp(ivgen, "plain64") == 0) {
        s->ivgen = LUKS_IV_PLAIN64;
    } else if (strcmp(ivgen, "essiv") == 0 && hash && strcmp(hash, "sha256") == 0) {
        s->ivgen = LUKS_IV_ESSIV;
        snprintf(s->ivgen_hash, sizeof(s->ivgen_hash), "%s", hash);
    } else {
        error_setg(errp, "IV generator '%s%s%s' is not supported by blockd", ivgen,
                   hash ? ":" : "", hash ? hash : "");
        return false;
    }
    return true;
}

bool luks_cipher_spec_parse(const char *name, const char *mode, size_t key_len,
                            LuksCipherSpec *spec, Error **errp)
{
    char m[32], *iv, *hash;
    size_t bits = (strncmp(mode, "xts-", 4) == 0 ? key_len / 2 : key_len) * 8;

    memset(spec, 0, sizeof(*spec));
    if (strcmp(name, "aes") != 0 || (bits != 128 && bits != 192 && bits != 256)) {
        error_setg(errp, "Algorithm '%s' with key size %zu unsupported", name, key_len);
        return false;
    }
    snprintf(m, sizeof(m), "%s", mode);
    iv = strchr(m, '-');
    if (!iv) {
        error_setg(errp, "Unexpected cipher mode string format %s", mode);
        return false;
    }
    *iv++ = '\0';
    hash = strchr(iv, ':');
    if (hash) {
        *hash++ = '\0';
    }
    if ((strcmp(m, "xts") != 0 && strcmp(m, "cbc") != 0) ||
        gnutls_alg(m, key_len) == GNUTLS_CIPHER_UNKNOWN) {
        error_setg(errp, "Cipher mode '%s' with key size %zu is not supported by blockd",
                   m, key_len);
        return false;
    }
    snprintf(spec->alg, sizeof(spec->alg), "aes-%zu", bits);
    snprintf(spec->mode, sizeof(spec->mode), "%s", m);
    spec->key_len = key_len;
    return set_ivgen(spec, iv, hash, errp);
}

bool luks_cipher_spec_from_options(const char *alg, const char *mode, const char *ivgen,
                                   const char *ivgen_hash, LuksCipherSpec *spec,
                                   Error **errp)
{
    char hdr_mode[32];
    int bits;

    alg = alg ? alg : "aes-256";
    mode = mode ? mode : "xts";
    ivgen = ivgen ? ivgen : "plain64";
    if (sscanf(alg, "aes-%d", &bits) != 1 || (bits != 128 && bits != 192 && bits != 256)) {
        error_setg(errp, "Cipher algorithm '%s' is not supported by blockd", alg);
        return false;
    }
    snprintf(hdr_mode, sizeof(hdr_mode), "%s-%s%s%s", mode, ivgen,
             strcmp(ivgen, "essiv") == 0 ? ":" : "",
             strcmp(ivgen, "essiv") == 0 ? (ivgen_hash ? ivgen_hash : "sha256") : "");
    return luks_cipher_spec_parse("aes", hdr_mode,
                                  (size_t)bits / 8 * (strcmp(mode, "xts") == 0 ? 2 : 1),
                                  spec, errp);
}

void luks_cipher_spec_names(const LuksCipherSpec *spec, char *name, char *mode)
{
    static const char *const ivs[] = { "plain", "plain64", "essiv" };

    strcpy(name, "aes");
    sprintf(mode, "%s-%s%s%s", spec->mode, ivs[spec->ivgen],
            spec->ivgen == LUKS_IV_ESSIV ? ":" : "", spec->ivgen_hash);
}

/* ---- The cipher ------------------------------------------------------------------ */

LuksCipher *luks_cipher_new(const LuksCipherSpec *spec, const uint8_t *key, Error **errp)
{
    LuksCipher *c = calloc(1, sizeof(*c));

    c->spec = *spec;
    c->alg = gnutls_alg(spec->mode, spec->key_len);
    memcpy(c->key, key, spec->key_len);
    if (spec->ivgen == LUKS_IV_ESSIV &&
        gnutls_hash_fast(GNUTLS_DIG_SHA256, key, spec->key_len, c->essiv_key) < 0) {
        error_setg(errp, "Cannot derive the ESSIV key");
        free(c);
        return NULL;
    }
    bd_mutex_init(&c->lock);
    return c;
}

void luks_cipher_free(LuksCipher *c)
{
    if (!c) {
        return;
    }
    bd_mutex_lock(&c->lock);
    for (int i = 0; i < c->nidle; i++) {
        gnutls_cipher_deinit(c->idle[i]);
    }
    bd_mutex_unlock(&c->lock);
    bd_mutex_destroy(&c->lock);
    explicit_bzero(c, sizeof(*c));
    free(c);
}

static gnutls_cipher_hd_t take_handle(LuksCipher *c)
{
    gnutls_cipher_hd_t h = NULL;
    uint8_t iv[16] = { 0 };
    gnutls_datum_t k = { c->key, (unsigned)c->spec.key_len }, v = { iv, 16 };

    bd_mutex_lock(&c->lock);
    if (c->nidle > 0) {
        h = c->idle[--c->nidle];
    }
    bd_mutex_unlock(&c->lock);
    if (!h && gnutls_cipher_init(&h, c->alg, &k, &v) < 0) {
        return NULL;
    }
    return h;
}

static void give_handle(LuksCipher *c, gnutls_cipher_hd_t h)
{
    bd_mutex_lock(&c->lock);
    if (c->nidle < POOL_MAX) {
        c->idle[c->nidle++] = h;
        h = NULL;
    }
    bd_mutex_unlock(&c->lock);
    if (h) {
        gnutls_cipher_deinit(h);
    }
}

/* The IV of @sector: little-endian sector number, or its ESSIV
 * encryption (AES-256 with the hashed key, one block: CBC from a zero IV
 * is ECB). */
static bool sector_iv(LuksCipher *c, uint64_t sector, uint8_t iv[16])
{
    memset(iv, 0, 16);
    if (c->spec.ivgen == LUKS_IV_PLAIN) {
        sector &= 0xffffffffu;
    }
    for (int i = 0; i < 8; i++) {
        iv[i] = (uint8_t)(sector >> (8 * i));
    }
    if (c->spec.ivgen == LUKS_IV_ESSIV) {
        uint8_t zero[16] = { 0 };
        gnutls_datum_t k = { c->essiv_key, 32 }, v = { zero, 16 };
        gnutls_cipher_hd_t h;
        bool ok;

        if (gnutls_cipher_init(&h, GNUTLS_CIPHER_AES_256_CBC, &k, &v) < 0) {
            return false;
        }
        ok = gnutls_cipher_encrypt(h, iv, 16) == 0;
        gnutls_cipher_deinit(h);
        return ok;
    }
    return true;
}

int luks_cipher_crypt(LuksCipher *c, uint64_t sector, uint8_t *buf, size_t len, bool encrypt)
{
    gnutls_cipher_hd_t h = take_handle(c);
    int ret = 0;

    if (!h) {
        return -EIO;
    }
    for (size_t off = 0; off < len && ret == 0; off += LUKS_SECTOR, sector++) {
        uint8_t iv[16];

        if (!sector_iv(c, sector, iv)) {
            ret = -EIO;
            break;
        }
        gnutls_cipher_set_iv(h, iv, 16);
        ret = encrypt ? gnutls_cipher_encrypt(h, buf + off, LUKS_SECTOR)
                      : gnutls_cipher_decrypt(h, buf + off, LUKS_SECTOR);
        ret = ret < 0 ? -EIO : 0;
    }
    give_handle(c, h);
    return ret;
}
