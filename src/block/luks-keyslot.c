/*
 * luks-keyslot.c - LUKS1 key slots (luks.h): PBKDF2 of the password, the
 * anti-forensic splitter that spreads the master key over 4000 stripes,
 * the master key digest, and the layout of a new header (that of QEMU's
 * and cryptsetup's: slots after a 4 KiB header, each aligned to 4 KiB,
 * then the payload).  Iteration counts come from timing PBKDF2 here.
 */
#include <errno.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "blockd/atomic.h"
#include "luks.h"

#define SLOT_AREA_SECTORS 8          /* header area, and slot alignment (4 KiB) */
#define MIN_ITERATIONS 1000

static const struct {
    const char *name;
    gnutls_digest_algorithm_t dig;
    gnutls_mac_algorithm_t mac;
} hashes[] = {
    { "sha1", GNUTLS_DIG_SHA1, GNUTLS_MAC_SHA1 },
    { "sha224", GNUTLS_DIG_SHA224, GNUTLS_MAC_SHA224 },
    { "sha256", GNUTLS_DIG_SHA256, GNUTLS_MAC_SHA256 },
    { "sha384", GNUTLS_DIG_SHA384, GNUTLS_MAC_SHA384 },
    { "sha512", GNUTLS_DIG_SHA512, GNUTLS_MAC_SHA512 },
};

static int hash_index(const char *name)
{
    for (size_t i = 0; i < sizeof(hashes) / sizeof(hashes[0]); i++) {
        if (strcmp(hashes[i].name, name) == 0) {
            return (int)i;
        }
    }
    return -1;
}

size_t luks_hash_len(const char *hash)
{
    int i = hash_index(hash);

    return i < 0 ? 0 : gnutls_hash_get_len(hashes[i].dig);
}

static bool pbkdf2(const char *hash, const void *pw, size_t pwlen, const uint8_t *salt,
                   uint32_t iterations, uint8_t *out, size_t outlen)
{
    gnutls_datum_t k = { (unsigned char *)pw, (unsigned)pwlen };
    gnutls_datum_t s = { (unsigned char *)salt, LUKS_SALT_LEN };

    return gnutls_pbkdf2(hashes[hash_index(hash)].mac, &k, &s, iterations, out, outlen) == 0;
}

/* ---- The anti-forensic splitter ----------------------------------------------------- */

static void xor_into(uint8_t *d, const uint8_t *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        d[i] ^= s[i];
    }
}

/* Hash @block in digest-sized pieces, each prefixed by its index. */
static bool diffuse(const char *hash, uint8_t *block, size_t len)
{
    gnutls_digest_algorithm_t dig = hashes[hash_index(hash)].dig;
    size_t dlen = gnutls_hash_get_len(dig);
    uint8_t out[64];

    for (size_t i = 0, off = 0; off < len; i++, off += dlen) {
        size_t n = len - off < dlen ? len - off : dlen;
        uint8_t idx[4] = { (uint8_t)(i >> 24), (uint8_t)(i >> 16), (uint8_t)(i >> 8),
                           (uint8_t)i };
        gnutls_hash_hd_t h;

        if (gnutls_hash_init(&h, dig) < 0) {
            return false;
        }
        gnutls_hash(h, idx, 4);
        gnutls_hash(h, block + off, n);
        gnutls_hash_deinit(h, out);
        memcpy(block + off, out, n);
    }
    return true;
}

static bool af_merge(const char *hash, const uint8_t *split, size_t key_len, uint8_t *key)
{
    uint8_t d[LUKS_MAX_KEY_LEN] = { 0 };

    for (int i = 0; i < LUKS_STRIPES - 1; i++) {
        xor_into(d, split + (size_t)i * key_len, key_len);
        if (!diffuse(hash, d, key_len)) {
            return false;
        }
    }
    memcpy(key, d, key_len);
    xor_into(key, split + (size_t)(LUKS_STRIPES - 1) * key_len, key_len);
    explicit_bzero(d, sizeof(d));
    return true;
}

static bool af_split(const char *hash, const uint8_t *key, size_t key_len, uint8_t *split)
{
    uint8_t d[LUKS_MAX_KEY_LEN] = { 0 };
    size_t last = (size_t)(LUKS_STRIPES - 1) * key_len;

    if (gnutls_rnd(GNUTLS_RND_RANDOM, split, last) < 0) {
        return false;
    }
    for (int i = 0; i < LUKS_STRIPES - 1; i++) {
        xor_into(d, split + (size_t)i * key_len, key_len);
        if (!diffuse(hash, d, key_len)) {
            return false;
        }
    }
    memcpy(split + last, d, key_len);
    xor_into(split + last, key, key_len);
    explicit_bzero(d, sizeof(d));
    return true;
}

/* ---- Iteration counts ------------------------------------------------------------- */

static int64_t thread_cpu_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* PBKDF2 iterations per second of this machine for @hash (timed once; two
 * threads timing at once both store a good answer). */
static uint64_t iterations_per_second(const char *hash)
{
    static uint64_t cache[sizeof(hashes) / sizeof(hashes[0])];     /* atomic */
    int i = hash_index(hash);
    uint64_t iters = 1 << 14, rate;
    uint8_t salt[LUKS_SALT_LEN] = { 0 }, out[LUKS_DIGEST_LEN];
    int64_t ms;

    rate = atomic_read(&cache[i]);
    if (rate) {
        return rate;
    }
    for (;;) {
        int64_t start = thread_cpu_ms();

        pbkdf2(hash, "blockd", 6, salt, (uint32_t)iters, out, sizeof(out));
        ms = thread_cpu_ms() - start;
        if (ms >= 250) {
            break;
        }
        iters = ms < 25 ? iters * 10 : iters * 300 / (uint64_t)ms;
    }
    rate = iters * 1000 / (uint64_t)ms;
    atomic_set(&cache[i], rate);
    return rate;
}

static uint32_t iterations_for(const char *hash, uint64_t iter_time_ms, unsigned divisor)
{
    uint64_t n = iterations_per_second(hash) * iter_time_ms / 1000 / divisor;

    n = n < MIN_ITERATIONS ? MIN_ITERATIONS : n;
    return n > LUKS_MAX_ITERATIONS ? LUKS_MAX_ITERATIONS : (uint32_t)n;
}

/* ---- Slots ------------------------------------------------------------------------ */

/* Decrypt (or encrypt) slot key material with the key derived for it. */
static int crypt_material(const LuksHeader *h, const uint8_t *slot_key, uint8_t *buf,
                          size_t len, bool encrypt)
{
    LuksCipher *c = luks_cipher_new(&h->spec, slot_key, NULL);
    int ret = c ? luks_cipher_crypt(c, 0, buf, len, encrypt) : -EIO;

    luks_cipher_free(c);
    return ret;
}

static bool digest_matches(const LuksHeader *h, const uint8_t *key)
{
    uint8_t digest[LUKS_DIGEST_LEN];

    return pbkdf2(h->hash, key, h->spec.key_len, h->mk_salt, h->mk_iterations, digest,
                  sizeof(digest)) &&
           memcmp(digest, h->mk_digest, sizeof(digest)) == 0;
}

/* Try one slot: 1 opened (key in @key), 0 wrong password, -errno. */
static int try_slot(const LuksHeader *h, const LuksSlot *s, const char *password,
                    LuksReadFn *read, void *opaque, uint8_t *material, uint8_t *key)
{
    size_t len = luks_key_material_len(h);
    uint8_t slot_key[LUKS_MAX_KEY_LEN];
    int ret;

    if (!pbkdf2(h->hash, password, strlen(password), s->salt, s->iterations, slot_key,
                h->spec.key_len)) {
        return -EIO;
    }
    ret = read(opaque, (uint64_t)s->offset_sector * LUKS_SECTOR, material, len);
    if (ret == 0) {
        ret = crypt_material(h, slot_key, material, len, false);
    }
    if (ret == 0) {
        ret = af_merge(h->hash, material, h->spec.key_len, key) ? digest_matches(h, key)
                                                                 : -EIO;
    }
    explicit_bzero(slot_key, sizeof(slot_key));
    return ret;
}

int luks_unlock(const LuksHeader *h, const char *password, LuksReadFn *read, void *opaque,
                uint8_t *key, int *slot, Error **errp)
{
    uint8_t *material = malloc(luks_key_material_len(h));
    int ret = 0;

    for (int i = 0; i < LUKS_SLOTS && ret == 0; i++) {
        if (h->slots[i].active) {
            ret = try_slot(h, &h->slots[i], password, read, opaque, material, key);
            *slot = i;
        }
    }
    explicit_bzero(material, luks_key_material_len(h));
    free(material);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Cannot read a LUKS key slot");
        return ret;
    }
    if (ret == 0) {
        error_setg(errp, "Invalid password, cannot unlock any keyslot");
        return -EACCES;
    }
    return 0;
}

int luks_store_slot(LuksHeader *h, int slot, const char *password, const uint8_t *key,
                    uint64_t iter_time_ms, LuksWriteFn *write, void *opaque, Error **errp)
{
    size_t len = luks_key_material_len(h);
    uint8_t *material = calloc(1, len), slot_key[LUKS_MAX_KEY_LEN];
    LuksSlot *s = &h->slots[slot];
    int ret = -EIO;

    s->iterations = iterations_for(h->hash, iter_time_ms, 1);
    if (gnutls_rnd(GNUTLS_RND_RANDOM, s->salt, LUKS_SALT_LEN) == 0 &&
        pbkdf2(h->hash, password, strlen(password), s->salt, s->iterations, slot_key,
               h->spec.key_len) &&
        af_split(h->hash, key, h->spec.key_len, material) &&
        crypt_material(h, slot_key, material, len, true) == 0) {
        ret = write(opaque, (uint64_t)s->offset_sector * LUKS_SECTOR, material, len);
    }
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Cannot write LUKS key slot %d", slot);
    } else {
        s->active = true;
    }
    explicit_bzero(slot_key, sizeof(slot_key));
    explicit_bzero(material, len);
    free(material);
    return ret;
}

static void random_uuid(char *out)
{
    uint8_t u[16];

    gnutls_rnd(GNUTLS_RND_NONCE, u, sizeof(u));
    u[6] = (u[6] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
    sprintf(out, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
            u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12],
            u[13], u[14], u[15]);
}

bool luks_header_new(LuksHeader *h, const LuksCipherSpec *spec, const char *hash,
                     uint64_t iter_time_ms, uint8_t *key, Error **errp)
{
    uint32_t material;

    memset(h, 0, sizeof(*h));
    if (!luks_hash_len(hash)) {
        error_setg(errp, "Hash algorithm '%s' is not supported by blockd", hash);
        return false;
    }
    h->spec = *spec;
    snprintf(h->hash, sizeof(h->hash), "%s", hash);
    material = (uint32_t)(luks_key_material_len(h) / LUKS_SECTOR);
    material = (material + SLOT_AREA_SECTORS - 1) / SLOT_AREA_SECTORS * SLOT_AREA_SECTORS;
    for (int i = 0; i < LUKS_SLOTS; i++) {
        h->slots[i].stripes = LUKS_STRIPES;
        h->slots[i].offset_sector = SLOT_AREA_SECTORS + (uint32_t)i * material;
    }
    h->payload_sector = SLOT_AREA_SECTORS + LUKS_SLOTS * material;
    h->mk_iterations = iterations_for(hash, iter_time_ms, 8);
    random_uuid(h->uuid);
    if (gnutls_rnd(GNUTLS_RND_KEY, key, spec->key_len) < 0 ||
        gnutls_rnd(GNUTLS_RND_RANDOM, h->mk_salt, LUKS_SALT_LEN) < 0 ||
        !pbkdf2(hash, key, spec->key_len, h->mk_salt, h->mk_iterations, h->mk_digest,
                LUKS_DIGEST_LEN)) {
        error_setg(errp, "Cannot generate the LUKS master key");
        return false;
    }
    return true;
}
