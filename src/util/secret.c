/*
 * secret.c - the secret and secret_keyring objects (secret.h).
 *
 * The value is loaded once, at object-add: read (data, file or the
 * keyring), base64-decoded if format=base64, then decrypted if keyid names
 * the key (AES-256-CBC with PKCS#7 padding).  GnuTLS does the cipher and
 * the base64.
 */
#include <errno.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "blockd/main-loop.h"
#include "blockd/options.h"
#include "blockd/secret.h"
#include "blockd/user-object.h"

typedef struct Secret {
    UserObject obj;
    uint8_t *value;
    size_t len;
    char *file;
    char *keyid;
    char *iv;
    bool base64;
    int64_t serial;             /* secret_keyring */
} Secret;

static const char *const format_names[] = { "raw", "base64", NULL };

void secret_free(void *buf, size_t len)
{
    if (buf) {
        explicit_bzero(buf, len);
        free(buf);
    }
}

/* ---- Loading ----------------------------------------------------------------- */

static bool read_file(const char *path, uint8_t **out, size_t *len, Error **errp)
{
    FILE *f = fopen(path, "rb");
    size_t cap = 4096, n = 0;
    uint8_t *buf;

    if (!f) {
        error_setg(errp, "Unable to read %s: Failed to open file “%s”: %s", path, path,
                   strerror(errno));
        return false;
    }
    buf = malloc(cap + 1);
    for (;;) {
        size_t got = fread(buf + n, 1, cap - n, f);

        n += got;
        if (n < cap) {
            break;
        }
        cap *= 2;
        buf = realloc(buf, cap + 1);
    }
    fclose(f);
    buf[n] = 0;
    *out = buf;
    *len = n;
    return true;
}

/* Linux's keyctl(KEYCTL_READ): no libkeyutils needed for one call. */
static bool read_keyring(int64_t serial, uint8_t **out, size_t *len, Error **errp)
{
    long n = syscall(SYS_keyctl, 11 /* KEYCTL_READ */, (int32_t)serial, NULL, 0);
    uint8_t *buf;

    if (n >= 0) {
        buf = malloc((size_t)n + 1);
        n = syscall(SYS_keyctl, 11, (int32_t)serial, buf, (size_t)n);
        if (n >= 0) {
            buf[n] = 0;
            *out = buf;
            *len = (size_t)n;
            return true;
        }
        free(buf);
    }
    error_setg_errno(errp, errno, "Unable to read serial key %08x", (uint32_t)serial);
    return false;
}

static bool base64_decode(const uint8_t *in, size_t inlen, uint8_t **out, size_t *outlen,
                          Error **errp)
{
    gnutls_datum_t src = { (unsigned char *)in, (unsigned int)inlen }, dst = { 0 };

    if (gnutls_base64_decode2(&src, &dst) < 0) {
        error_setg(errp, "Base64 data contains invalid characters");
        return false;
    }
    *out = malloc(dst.size + 1);
    memcpy(*out, dst.data, dst.size);
    (*out)[dst.size] = 0;
    *outlen = dst.size;
    explicit_bzero(dst.data, dst.size);
    gnutls_free(dst.data);
    return true;
}

/* AES-256-CBC with the secret @keyid as key and @iv (base64). */
static bool decrypt(Secret *s, const uint8_t *in, size_t inlen, uint8_t **out,
                    size_t *outlen, Error **errp)
{
    uint8_t *key = NULL, *iv = NULL, *ct = NULL;
    size_t keylen = 0, ivlen = 0, ctlen = 0;
    gnutls_cipher_hd_t h;
    gnutls_datum_t k, v;
    bool ok = false;
    int pad;

    key = secret_lookup(s->keyid, &keylen, errp);
    if (!key) {
        return false;
    }
    if (keylen != 32) {
        error_setg(errp, "Key should be 32 bytes in length");
        goto out;
    }
    if (!s->iv) {
        error_setg(errp, "IV is required to decrypt secret");
        goto out;
    }
    if (!base64_decode((const uint8_t *)s->iv, strlen(s->iv), &iv, &ivlen, errp)) {
        goto out;
    }
    if (ivlen != 16) {
        error_setg(errp, "IV should be 16 bytes in length not %zu", ivlen);
        goto out;
    }
    ct = malloc(inlen + 1);
    memcpy(ct, in, inlen);
    ctlen = inlen;
    k = (gnutls_datum_t){ key, 32 };
    v = (gnutls_datum_t){ iv, 16 };
    if (ctlen % 16) {
        error_setg(errp, "Length %zu must be a multiple of block size 16", ctlen);
        goto out;
    }
    if (ctlen == 0 || gnutls_cipher_init(&h, GNUTLS_CIPHER_AES_256_CBC, &k, &v) < 0) {
        error_setg(errp, "Cannot decrypt the secret: no data");
        goto out;
    }
    ok = gnutls_cipher_decrypt(h, ct, ctlen) == 0;
    gnutls_cipher_deinit(h);
    pad = ok ? ct[ctlen - 1] : 0;
    if (!ok || pad == 0 || pad > 16 || (size_t)pad > ctlen) {
        error_setg(errp, "Incorrect number of padding bytes (%d) found on decrypted data",
                   pad);
        ok = false;
        goto out;
    }
    *outlen = ctlen - (size_t)pad;
    ct[*outlen] = 0;
    *out = ct;
    ct = NULL;
out:
    secret_free(key, keylen);
    secret_free(iv, ivlen);
    secret_free(ct, ctlen);
    return ok;
}

/* From what was read to the value: decode, then decrypt. */
static bool finish_value(Secret *s, uint8_t *in, size_t inlen, Error **errp)
{
    uint8_t *out;
    size_t outlen;
    bool ok;

    if (s->base64) {
        ok = base64_decode(in, inlen, &out, &outlen, errp);
        secret_free(in, inlen);
        if (!ok) {
            return false;
        }
        in = out;
        inlen = outlen;
    }
    if (s->keyid) {
        ok = decrypt(s, in, inlen, &out, &outlen, errp);
        secret_free(in, inlen);
        if (!ok) {
            return false;
        }
        in = out;
        inlen = outlen;
    }
    s->value = in;
    s->len = inlen;
    return true;
}

static bool common_options(Secret *s, json_object *args, Error **errp)
{
    const char *keyid = NULL, *iv = NULL;
    int format = 0;

    if (!opt_get_enum(args, "format", format_names, &format, errp) ||
        !opt_get_str(args, "keyid", &keyid, errp) || !opt_get_str(args, "iv", &iv, errp)) {
        return false;
    }
    s->base64 = format == 1;
    s->keyid = keyid ? strdup(keyid) : NULL;
    s->iv = iv ? strdup(iv) : NULL;
    return true;
}

static void secret_finalize(UserObject *obj)
{
    Secret *s = (Secret *)obj;

    secret_free(s->value, s->len);
    free(s->file);
    free(s->keyid);
    free(s->iv);
}

static bool secret_init(UserObject *obj, json_object *args, Error **errp)
{
    Secret *s = (Secret *)obj;
    const char *data = NULL, *file = NULL;
    uint8_t *in;
    size_t inlen;

    if (!common_options(s, args, errp) || !opt_get_str(args, "data", &data, errp) ||
        !opt_get_str(args, "file", &file, errp)) {
        goto fail;
    }
    if (data && file) {
        error_setg(errp, "'file' and 'data' are mutually exclusive");
        goto fail;
    }
    if (file) {
        s->file = strdup(file);
        if (!read_file(file, &in, &inlen, errp)) {
            goto fail;
        }
    } else if (data) {
        in = (uint8_t *)strdup(data);
        inlen = strlen(data);
    } else {
        error_setg(errp, "Either 'file' or 'data' must be provided");
        goto fail;
    }
    if (finish_value(s, in, inlen, errp)) {
        return true;
    }
fail:
    secret_finalize(obj);
    return false;
}

static bool keyring_init(UserObject *obj, json_object *args, Error **errp)
{
    Secret *s = (Secret *)obj;
    uint8_t *in;
    size_t inlen;

    if (!common_options(s, args, errp) || !opt_get_int(args, "serial", &s->serial, errp) ||
        !read_keyring(s->serial, &in, &inlen, errp) || !finish_value(s, in, inlen, errp)) {
        secret_finalize(obj);
        return false;
    }
    return true;
}

/* ---- Properties ---------------------------------------------------------------- */

static const char *const secret_props[] = { "loaded", "format", "keyid", "iv", "data",
                                            "file", NULL };
static const char *const secret_types[] = { "bool", "QCryptoSecretFormat", "string",
                                            "string", "string", "string", NULL };
static const char *const keyring_props[] = { "loaded", "format", "keyid", "iv", "serial",
                                             NULL };
static const char *const keyring_types[] = { "bool", "QCryptoSecretFormat", "string",
                                             "string", "int32_t", NULL };

static json_object *opt_string(const char *s)
{
    return json_object_new_string(s ? s : "");
}

static json_object *secret_get(UserObject *obj, const char *prop, Error **errp)
{
    Secret *s = (Secret *)obj;

    if (strcmp(prop, "loaded") == 0) {
        return json_object_new_boolean(true);
    }
    if (strcmp(prop, "format") == 0) {
        return json_object_new_string(format_names[s->base64]);
    }
    if (strcmp(prop, "keyid") == 0) {
        return opt_string(s->keyid);
    }
    if (strcmp(prop, "iv") == 0) {
        return opt_string(s->iv);
    }
    if (strcmp(prop, "file") == 0) {
        return opt_string(s->file);
    }
    if (strcmp(prop, "serial") == 0) {
        return json_object_new_int64(s->serial);
    }
    /* The value itself is never shown. */
    error_setg(errp, "Property '%s.%s' is not readable", obj->cls->type, prop);
    return NULL;
}

static bool secret_set(UserObject *obj, const char *prop, json_object *value, Error **errp)
{
    (void)value;
    if (strcmp(prop, "loaded") == 0) {
        error_setg(errp, "Property '%s.%s' is not writable", obj->cls->type, prop);
        return false;
    }
    /* Fixed once loaded: qemu-storage-daemon takes the new text and goes
     * on using the old value, which would only mislead. */
    error_setg(errp, "Property '%s.%s' cannot be changed once the secret is loaded",
               obj->cls->type, prop);
    return false;
}

static const UserObjectClass secret_class = {
    .type = "secret",
    .parent = "secret_common",
    .instance_size = sizeof(Secret),
    .prop_names = secret_props,
    .prop_types = secret_types,
    .init = secret_init,
    .finalize = secret_finalize,
    .get = secret_get,
    .set = secret_set,
};

static const UserObjectClass keyring_class = {
    .type = "secret_keyring",
    .parent = "secret_common",
    .instance_size = sizeof(Secret),
    .prop_names = keyring_props,
    .prop_types = keyring_types,
    .init = keyring_init,
    .finalize = secret_finalize,
    .get = secret_get,
    .set = secret_set,
};

void secret_objects_init(void)
{
    user_object_register(&secret_class);
    user_object_register(&keyring_class);
}

/* ---- Lookup --------------------------------------------------------------------- */

uint8_t *secret_lookup(const char *id, size_t *len, Error **errp)
{
    UserObject *obj = user_object_find(id, NULL);
    Secret *s;
    uint8_t *copy;

    GLOBAL_STATE_CODE();
    if (!obj) {
        error_setg(errp, "No secret with id '%s'", id);
        return NULL;
    }
    if (obj->cls != &secret_class && obj->cls != &keyring_class) {
        error_setg(errp, "Object with id '%s' is not a secret", id);
        return NULL;
    }
    s = (Secret *)obj;
    copy = malloc(s->len + 1);
    memcpy(copy, s->value, s->len);
    copy[s->len] = 0;
    *len = s->len;
    return copy;
}

/* Well-formed UTF-8 without NUL: lead bytes, continuations, no overlong
 * forms, surrogates or code points past U+10FFFF. */
static bool valid_utf8(const uint8_t *p, size_t len)
{
    size_t i = 0;

    while (i < len) {
        uint8_t c = p[i];
        uint32_t cp, min;
        size_t n;

        if (c == 0) {
            return false;
        }
        if (c < 0x80) {
            i++;
            continue;
        }
        if ((c & 0xe0) == 0xc0) {
            n = 1, cp = c & 0x1fu, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            n = 2, cp = c & 0x0fu, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            n = 3, cp = c & 0x07u, min = 0x10000;
        } else {
            return false;
        }
        if (len - i <= n) {
            return false;
        }
        for (size_t k = 1; k <= n; k++) {
            if ((p[i + k] & 0xc0) != 0x80) {
                return false;
            }
            cp = (cp << 6) | (p[i + k] & 0x3fu);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
            return false;
        }
        i += n + 1;
    }
    return true;
}

char *secret_lookup_as_utf8(const char *id, Error **errp)
{
    size_t len;
    uint8_t *v = secret_lookup(id, &len, errp);

    if (v && !valid_utf8(v, len)) {
        error_setg(errp, "Data from secret %s is not valid UTF-8", id);
        secret_free(v, len);
        return NULL;
    }
    return (char *)v;
}
