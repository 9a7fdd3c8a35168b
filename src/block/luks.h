/*
 * luks.h - the LUKS version 1 on-disk format (header, key slots, the
 * anti-forensic splitter, PBKDF2) and its sector cipher, for the luks
 * driver and for qcow2's encrypt.format=luks.  docs/luks.md describes the
 * layout, the checks on a header and the choices made when creating one.
 * Crypto comes from GnuTLS.  Not for other drivers.
 *
 * Half: common (pure functions and locked pools); key slot work is slow
 * on purpose (PBKDF2) and runs where the caller can afford it.
 */
#ifndef BLOCKD_LUKS_H
#define BLOCKD_LUKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

#include "blockd/error.h"

#define LUKS_SECTOR 512
#define LUKS_HEADER_SIZE 592
#define LUKS_SLOTS 8
#define LUKS_STRIPES 4000
#define LUKS_DIGEST_LEN 20
#define LUKS_SALT_LEN 32
#define LUKS_MAX_KEY_LEN 64
/* More iterations than this are a hostile header, not a slow password. */
#define LUKS_MAX_ITERATIONS (16u << 20)
/* ... and more than this over all active slots (a wrong password tries
 * them all). */
#define LUKS_MAX_TOTAL_ITERATIONS (32u << 20)

typedef enum LuksIvgen { LUKS_IV_PLAIN, LUKS_IV_PLAIN64, LUKS_IV_ESSIV } LuksIvgen;

/* A cipher specification (the header's cipher name and mode). */
typedef struct LuksCipherSpec {
    char alg[16];               /* QEMU's names: "aes-256" ... */
    char mode[32];              /* "xts", "cbc" */
    LuksIvgen ivgen;
    char ivgen_hash[8];         /* essiv's hash ("sha256"), or "" */
    size_t key_len;             /* master key bytes */
} LuksCipherSpec;

typedef struct LuksSlot {
    bool active;
    uint32_t iterations;
    uint8_t salt[LUKS_SALT_LEN];
    uint32_t offset_sector;     /* key material */
    uint32_t stripes;
} LuksSlot;

typedef struct LuksHeader {
    LuksCipherSpec spec;
    char hash[16];              /* "sha256" ... */
    uint32_t payload_sector;
    uint8_t mk_digest[LUKS_DIGEST_LEN];
    uint8_t mk_salt[LUKS_SALT_LEN];
    uint32_t mk_iterations;
    char uuid[40];
    LuksSlot slots[LUKS_SLOTS];
} LuksHeader;

/* Reads @len bytes at @offset of the container (the header's offsets are
 * relative to it): 0 or -errno. */
typedef int LuksReadFn(void *opaque, uint64_t offset, void *buf, size_t len);
typedef int LuksWriteFn(void *opaque, uint64_t offset, const void *buf, size_t len);

/* ---- Header (luks-header.c) ---- */

/* Parse and check a header; @size is the container's length (0: unknown). */
bool luks_header_parse(const uint8_t *buf, uint64_t size, LuksHeader *h, Error **errp);
void luks_header_build(const LuksHeader *h, uint8_t *buf);
/* QEMU's QCryptoBlockInfoLUKS for @h (a new object). */
json_object *luks_info_json(const LuksHeader *h, int64_t payload_offset);
/* Bytes of key material a slot takes, rounded up to whole sectors. */
size_t luks_key_material_len(const LuksHeader *h);

/* ---- Key slots (luks-keyslot.c) ---- */

/* The master key (h->spec.key_len bytes into @key) from the first active
 * slot @password opens; -EACCES "Invalid password, cannot unlock any
 * keyslot", or -errno. */
int luks_unlock(const LuksHeader *h, const char *password, LuksReadFn *read, void *opaque,
                uint8_t *key, int *slot, Error **errp);
/* Write slot @slot for @password over @key, with @iter_time_ms of PBKDF2
 * work (filling in the slot's header fields; the header is written by
 * the caller). */
int luks_store_slot(LuksHeader *h, int slot, const char *password, const uint8_t *key,
                    uint64_t iter_time_ms, LuksWriteFn *write, void *opaque, Error **errp);
/* A fresh header and master key for @spec and @hash (slots all off). */
bool luks_header_new(LuksHeader *h, const LuksCipherSpec *spec, const char *hash,
                     uint64_t iter_time_ms, uint8_t *key, Error **errp);

/* ---- Amending key slots (luks-amend.c) ---- */

/* A container's header, master key and I/O (offsets within the container). */
typedef struct LuksContainer {
    LuksHeader *h;
    const uint8_t *key;
    LuksReadFn *read;
    LuksWriteFn *write;
    int (*flush)(void *opaque);
    void *opaque;
} LuksContainer;

/* x-blockdev-amend's key slot change (@options: state, new-secret,
 * old-secret, keyslot, iter-time) on @c, with QEMU's checks and messages;
 * @force allows erasing the last slot.  0 or -errno with @errp set. */
int luks_amend(LuksContainer *c, json_object *options, bool force, Error **errp);

/* ---- Payload cipher (luks-cipher.c) ---- */

typedef struct LuksCipher LuksCipher;

/* The spec a header names (cipher name, mode, master key length), or an
 * error naming what blockd lacks. */
bool luks_cipher_spec_parse(const char *name, const char *mode, size_t key_len,
                            LuksCipherSpec *spec, Error **errp);
/* The spec blockdev-create's options name (QEMU's defaults where NULL). */
bool luks_cipher_spec_from_options(const char *alg, const char *mode, const char *ivgen,
                                   const char *ivgen_hash, LuksCipherSpec *spec,
                                   Error **errp);
/* The header's cipher name and mode for @spec. */
void luks_cipher_spec_names(const LuksCipherSpec *spec, char *name, char *mode);
LuksCipher *luks_cipher_new(const LuksCipherSpec *spec, const uint8_t *key, Error **errp);
void luks_cipher_free(LuksCipher *c);
/* Encrypt or decrypt @len bytes (whole sectors) in place; @sector numbers
 * the first for the IV.  Any thread: handles come from a pool.  0 or -EIO. */
int luks_cipher_crypt(LuksCipher *c, uint64_t sector, uint8_t *buf, size_t len, bool encrypt);

/* ---- Hashes (luks-keyslot.c) ---- */

/* Digest size for a hash name, 0 if blockd does not have it. */
size_t luks_hash_len(const char *hash);

#endif /* BLOCKD_LUKS_H */
