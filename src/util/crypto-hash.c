/*
 * crypto-hash.c - message digests through GnuTLS.
 */
#include <gnutls/crypto.h>
#include <stdio.h>

#include "blockd/crypto-hash.h"

bool crypto_sha256_hex(const void *data, size_t len, char hex[65])
{
    unsigned char digest[32];

    hex[0] = '\0';
    if (gnutls_hash_fast(GNUTLS_DIG_SHA256, data, len, digest) < 0) {
        return false;
    }
    for (int i = 0; i < 32; i++) {
        snprintf(hex + 2 * i, 3, "%02x", digest[i]);
    }
    return true;
}
