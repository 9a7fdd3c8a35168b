/*
 * secret.h - the secret and secret_keyring objects: passwords and keys
 * given to blockd out of band (inline, in a file, in the kernel keyring,
 * optionally base64-encoded and/or AES-256-CBC encrypted with another
 * secret), which drivers look up by id.  A secret's value is never
 * logged, shown by qom-get, or put in an error message.
 *
 * Half: global state (main thread).
 */
#ifndef BLOCKD_SECRET_H
#define BLOCKD_SECRET_H

#include <stddef.h>
#include <stdint.h>

#include "blockd/error.h"

/* Register the object types (at start). */
void secret_objects_init(void);

/*
 * The value of secret @id: a new buffer of *@len bytes (NUL-terminated
 * beyond them, for callers that want a string), or NULL with QEMU's
 * message ("No secret with id '...'").  Wipe and free it with
 * secret_free().
 */
uint8_t *secret_lookup(const char *id, size_t *len, Error **errp);
/* The same as a string: refused if it holds a NUL or is not UTF-8. */
char *secret_lookup_as_utf8(const char *id, Error **errp);
void secret_free(void *buf, size_t len);

#endif /* BLOCKD_SECRET_H */
