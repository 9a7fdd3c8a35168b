/*
 * crypto-hash.h - message digests, through GnuTLS (never our own).
 *
 * Half: common.
 */
#ifndef BLOCKD_CRYPTO_HASH_H
#define BLOCKD_CRYPTO_HASH_H

#include <stdbool.h>
#include <stddef.h>

/* SHA-256 of @len bytes at @data, as 64 lowercase hex digits and a NUL in
 * @hex.  False (and @hex empty) only if the library refused. */
bool crypto_sha256_hex(const void *data, size_t len, char hex[65]);

#endif /* BLOCKD_CRYPTO_HASH_H */
