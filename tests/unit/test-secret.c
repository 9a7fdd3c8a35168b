/*
 * test-secret - the secret and secret_keyring objects: each way of giving
 * a value (inline, file, base64, AES-256-CBC with another secret, the
 * kernel keyring) yields exactly the bytes meant; bad input fails with a
 * message and leaves no object.
 */
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <string.h>
#include <sys/syscall.h>

#include "test-util.h"
#include "blockd/secret.h"
#include "blockd/user-object.h"

static json_object *args(const char *json)
{
    json_object *o = json_tokener_parse(json);

    assert_non_null(o);
    return o;
}

/* object-add's work: create @id from @json; NULL and a message on error. */
static const char *add(const char *id, const char *json)
{
    static char msg[256];
    json_object *a = args(json);
    Error *err = NULL;
    UserObject *obj = user_object_create("secret", id, a, &err);

    json_object_put(a);
    if (obj) {
        return NULL;
    }
    snprintf(msg, sizeof(msg), "%s", error_get_pretty(err));
    error_free(err);
    return msg;
}

static void check_value(const char *id, const void *want, size_t want_len)
{
    size_t len = 0;
    uint8_t *v = secret_lookup(id, &len, NULL);

    assert_non_null(v);
    assert_int_equal(len, want_len);
    assert_memory_equal(v, want, want_len);
    assert_int_equal(v[len], 0);
    secret_free(v, len);
}

static void b64(const void *data, size_t len, char *out, size_t outsize)
{
    gnutls_datum_t in = { (unsigned char *)data, (unsigned)len }, enc = { 0 };

    assert_int_equal(gnutls_base64_encode2(&in, &enc), 0);
    assert_true(enc.size < outsize);
    memcpy(out, enc.data, enc.size);
    out[enc.size] = 0;
    gnutls_free(enc.data);
}

static void test_inline_and_base64(void **state)
{
    (void)state;
    assert_null(add("s0", "{\"data\": \"hunter2\"}"));
    check_value("s0", "hunter2", 7);
    /* "a\0b" can only come as base64. */
    assert_null(add("s1", "{\"data\": \"YQBi\", \"format\": \"base64\"}"));
    check_value("s1", "a\0b", 3);
    assert_null(secret_lookup_as_utf8("s1", NULL));
    assert_string_equal(add("s2", "{\"data\": \"%%%\", \"format\": \"base64\"}"),
                        "Base64 data contains invalid characters");
    assert_null(user_object_find("s2", NULL));
    assert_true(user_object_delete("s0", NULL) && user_object_delete("s1", NULL));
}

static void test_file(void **state)
{
    char path[] = "/tmp/blockd-secret-XXXXXX";
    int fd = mkstemp(path);
    char json[128];

    (void)state;
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "from a file\n", 12), 12);
    close(fd);
    snprintf(json, sizeof(json), "{\"file\": \"%s\"}", path);
    assert_null(add("f", json));
    check_value("f", "from a file\n", 12);     /* taken as is, newline included */
    unlink(path);
    assert_non_null(add("g", json));
    assert_true(user_object_delete("f", NULL));
}

static void test_encrypted(void **state)
{
    uint8_t key[32], iv[16], block[16] = "hunter2";
    gnutls_datum_t k = { key, 32 }, v = { iv, 16 };
    gnutls_cipher_hd_t h;
    char json[256], kb[64], ivb[32], ctb[64];

    (void)state;
    for (int i = 0; i < 32; i++) {
        key[i] = (uint8_t)(i * 7 + 1);
    }
    for (int i = 0; i < 16; i++) {
        iv[i] = (uint8_t)(i * 3);
    }
    memset(block + 7, 9, 9);                    /* PKCS#7: nine bytes of 9 */
    assert_int_equal(gnutls_cipher_init(&h, GNUTLS_CIPHER_AES_256_CBC, &k, &v), 0);
    assert_int_equal(gnutls_cipher_encrypt(h, block, 16), 0);
    gnutls_cipher_deinit(h);
    b64(key, 32, kb, sizeof(kb));
    b64(iv, 16, ivb, sizeof(ivb));
    b64(block, 16, ctb, sizeof(ctb));
    snprintf(json, sizeof(json), "{\"data\": \"%s\", \"format\": \"base64\"}", kb);
    assert_null(add("key", json));
    snprintf(json, sizeof(json),
             "{\"data\": \"%s\", \"format\": \"base64\", \"keyid\": \"key\", \"iv\": \"%s\"}",
             ctb, ivb);
    assert_null(add("pw", json));
    check_value("pw", "hunter2", 7);
    /* Without the IV, or with the wrong key: refused. */
    snprintf(json, sizeof(json), "{\"data\": \"%s\", \"format\": \"base64\", \"keyid\": \"key\"}",
             ctb);
    assert_string_equal(add("x", json), "IV is required to decrypt secret");
    snprintf(json, sizeof(json),
             "{\"data\": \"%s\", \"format\": \"base64\", \"keyid\": \"pw\", \"iv\": \"%s\"}",
             ctb, ivb);
    assert_string_equal(add("x", json), "Key should be 32 bytes in length");
    /* The key is in use by nobody: both go. */
    assert_true(user_object_delete("pw", NULL) && user_object_delete("key", NULL));
}

static void test_keyring(void **state)
{
    long serial = syscall(SYS_add_key, "user", "blockd-unit", "from the keyring", 16,
                          -3 /* KEY_SPEC_SESSION_KEYRING */);
    char json[64];
    json_object *a;
    Error *err = NULL;

    (void)state;
    assert_true(serial > 0);
    snprintf(json, sizeof(json), "{\"serial\": %ld}", serial);
    a = args(json);
    assert_non_null(user_object_create("secret_keyring", "kr", a, &err));
    json_object_put(a);
    check_value("kr", "from the keyring", 16);
    assert_true(user_object_delete("kr", NULL));
    syscall(SYS_keyctl, 3 /* KEYCTL_REVOKE */, (int)serial);
}

static void test_lookup_errors(void **state)
{
    Error *err = NULL;
    size_t len;

    (void)state;
    assert_null(secret_lookup("nope", &len, &err));
    assert_string_equal(error_get_pretty(err), "No secret with id 'nope'");
    error_free(err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_inline_and_base64),
        cmocka_unit_test(test_file),
        cmocka_unit_test(test_encrypted),
        cmocka_unit_test(test_keyring),
        cmocka_unit_test(test_lookup_errors),
    };

    main_loop_init();
    secret_objects_init();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
