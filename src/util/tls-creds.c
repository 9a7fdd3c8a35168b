/*
 * tls-creds.c - the tls-creds-x509, tls-creds-psk and tls-creds-anon
 * objects: QEMU's properties (dir, endpoint, verify-peer, priority,
 * sanity-check, passwordid, username), the files QEMU reads from dir
 * (docs/tls.md), and GnuTLS credentials made from them at object-add.
 *
 * Half: global state (objects); the credentials are read-only once made,
 * and sessions in any thread use them (GnuTLS allows that).
 */
#include <errno.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "blockd/main-loop.h"
#include "blockd/options.h"
#include "blockd/secret.h"
#include "blockd/user-object.h"
#include "tls-internal.h"

static const char *const endpoint_names[] = { "client", "server", NULL };

/* "DIR/NAME" if it exists; NULL (and @errp set if @required) if not. */
static char *cred_path(TlsCreds *c, const char *name, bool required, Error **errp)
{
    char *path;

    if (asprintf(&path, "%s/%s", c->dir, name) < 0) {
        abort();
    }
    if (access(path, R_OK) == 0) {
        return path;
    }
    if (required) {
        error_setg_errno(errp, errno, "Unable to access credentials %s", path);
    }
    free(path);
    return NULL;
}

/* sanity-check: the certificate in @path is valid now (and a CA if @ca). */
static bool check_cert_file(const char *path, bool ca, Error **errp)
{
    gnutls_datum_t data = { NULL, 0 };
    gnutls_x509_crt_t crt = NULL;
    time_t now = time(NULL);
    unsigned int critical;
    bool ok = false;

    if (gnutls_load_file(path, &data) < 0 || gnutls_x509_crt_init(&crt) < 0 ||
        gnutls_x509_crt_import(crt, &data, GNUTLS_X509_FMT_PEM) < 0) {
        error_setg(errp, "Unable to import certificate %s", path);
    } else if (gnutls_x509_crt_get_expiration_time(crt) < now) {
        error_setg(errp, "The certificate %s has expired", path);
    } else if (gnutls_x509_crt_get_activation_time(crt) > now) {
        error_setg(errp, "The certificate %s is not yet active", path);
    } else if (ca && gnutls_x509_crt_get_basic_constraints(crt, &critical, NULL, NULL) <= 0) {
        error_setg(errp, "The certificate %s basic constraints do not allow use as a CA",
                   path);
    } else if (!ca && gnutls_x509_crt_get_basic_constraints(crt, &critical, NULL, NULL) > 0) {
        error_setg(errp, "The certificate %s basic constraints show a CA, but this is "
                   "not a CA certificate", path);
    } else {
        ok = true;
    }
    if (crt) {
        gnutls_x509_crt_deinit(crt);
    }
    gnutls_free(data.data);
    return ok;
}

/* sanity-check: our own certificate must be signed by our CA (QEMU's
 * check and words: a peer would refuse it anyway, later and less
 * clearly). */
static bool check_issuer(const char *cert_path, const char *ca_path, Error **errp)
{
    gnutls_datum_t cd = { NULL, 0 }, ad = { NULL, 0 };
    gnutls_x509_crt_t crt = NULL, ca = NULL;
    unsigned int status = 0;
    bool ok = false;

    if (gnutls_load_file(cert_path, &cd) < 0 || gnutls_load_file(ca_path, &ad) < 0 ||
        gnutls_x509_crt_init(&crt) < 0 || gnutls_x509_crt_init(&ca) < 0 ||
        gnutls_x509_crt_import(crt, &cd, GNUTLS_X509_FMT_PEM) < 0 ||
        gnutls_x509_crt_import(ca, &ad, GNUTLS_X509_FMT_PEM) < 0 ||
        gnutls_x509_crt_verify(crt, &ca, 1, 0, &status) < 0) {
        error_setg(errp, "Unable to verify certificate %s against %s", cert_path, ca_path);
    } else if (status) {
        const char *why = status & GNUTLS_CERT_SIGNER_NOT_FOUND
                          ? "The certificate hasn't got a known issuer"
                          : status & GNUTLS_CERT_REVOKED ? "The certificate has been revoked"
                          : status & GNUTLS_CERT_INSECURE_ALGORITHM
                          ? "The certificate uses an insecure algorithm"
                          : "The certificate is not trusted";
        error_setg(errp, "Our own certificate %s failed validation against %s: %s",
                   cert_path, ca_path, why);
    } else {
        ok = true;
    }
    if (crt) {
        gnutls_x509_crt_deinit(crt);
    }
    if (ca) {
        gnutls_x509_crt_deinit(ca);
    }
    gnutls_free(cd.data);
    gnutls_free(ad.data);
    return ok;
}

static bool load_x509(TlsCreds *c, const char *key_password, Error **errp)
{
    const char *who = c->server ? "server" : "client";
    char name[32], *ca, *crl, *cert = NULL, *key = NULL;
    bool ok = false;
    int r;

    ca = cred_path(c, "ca-cert.pem", true, errp);
    snprintf(name, sizeof(name), "%s-cert.pem", who);
    if (ca) {
        cert = cred_path(c, name, c->server, errp);
    }
    snprintf(name, sizeof(name), "%s-key.pem", who);
    if (ca && (cert || !c->server)) {
        key = cred_path(c, name, c->server || cert, errp);
    }
    crl = ca ? cred_path(c, "ca-crl.pem", false, NULL) : NULL;
    if (!ca || (c->server && (!cert || !key)) || (cert && !key)) {
        goto out;
    }
    if (c->sanity_check && (!check_cert_file(ca, true, errp) ||
                            (cert && (!check_cert_file(cert, false, errp) ||
                                      !check_issuer(cert, ca, errp))))) {
        goto out;
    }
    gnutls_certificate_allocate_credentials(&c->x509);
    if ((r = gnutls_certificate_set_x509_trust_file(c->x509, ca, GNUTLS_X509_FMT_PEM)) < 0) {
        error_setg(errp, "Cannot load CA certificate '%s': %s", ca, gnutls_strerror(r));
        goto out;
    }
    if (cert && (r = gnutls_certificate_set_x509_key_file2(c->x509, cert, key,
                                                           GNUTLS_X509_FMT_PEM, key_password,
                                                           0)) < 0) {
        error_setg(errp, "Cannot load certificate '%s' & key '%s': %s", cert, key,
                   gnutls_strerror(r));
        goto out;
    }
    if (crl && (r = gnutls_certificate_set_x509_crl_file(c->x509, crl,
                                                         GNUTLS_X509_FMT_PEM)) < 0) {
        error_setg(errp, "Cannot load CRL '%s': %s", crl, gnutls_strerror(r));
        goto out;
    }
    ok = true;
out:
    free(ca);
    free(crl);
    free(cert);
    free(key);
    return ok;
}

/* keys.psk: lines "username:hexkey"; the client's key for its username. */
static bool find_psk(const char *path, const char *user, char **hexkey, Error **errp)
{
    FILE *f = fopen(path, "r");
    char line[1024];
    size_t ulen = strlen(user);

    if (!f) {
        error_setg_errno(errp, errno, "Unable to read %s", path);
        return false;
    }
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (strncmp(line, user, ulen) == 0 && line[ulen] == ':') {
            *hexkey = strdup(line + ulen + 1);
            fclose(f);
            return true;
        }
    }
    fclose(f);
    error_setg(errp, "Username %s not found in pre-shared key file %s", user, path);
    return false;
}

static bool load_psk(TlsCreds *c, Error **errp)
{
    char *path = cred_path(c, "keys.psk", true, errp), *hexkey = NULL;
    bool ok = false;
    int r;

    if (!path) {
        return false;
    }
    if (c->server) {
        gnutls_psk_allocate_server_credentials(&c->psk_server);
        r = gnutls_psk_set_server_credentials_file(c->psk_server, path);
        ok = r >= 0;
        if (!ok) {
            error_setg(errp, "Cannot set PSK server credentials: %s", gnutls_strerror(r));
        }
    } else if (find_psk(path, c->username, &hexkey, errp)) {
        gnutls_datum_t key = { (unsigned char *)hexkey, (unsigned int)strlen(hexkey) };

        gnutls_psk_allocate_client_credentials(&c->psk_client);
        r = gnutls_psk_set_client_credentials(c->psk_client, c->username, &key,
                                              GNUTLS_PSK_KEY_HEX);
        ok = r >= 0;
        if (!ok) {
            error_setg(errp, "Cannot set PSK client credentials: %s", gnutls_strerror(r));
        }
        explicit_bzero(hexkey, strlen(hexkey));
        free(hexkey);
    }
    free(path);
    return ok;
}

static bool load_anon(TlsCreds *c)
{
    if (c->server) {
        gnutls_anon_allocate_server_credentials(&c->anon_server);
    } else {
        gnutls_anon_allocate_client_credentials(&c->anon_client);
    }
    return true;
}

static bool creds_init(UserObject *obj, json_object *args, Error **errp)
{
    TlsCreds *c = (TlsCreds *)obj;
    const char *dir = NULL, *priority = NULL, *user = NULL, *password_id = NULL;
    char *password = NULL;
    int endpoint = 0;
    bool ok;

    c->kind = strcmp(obj->cls->type, "tls-creds-x509") == 0 ? TLS_X509
              : strcmp(obj->cls->type, "tls-creds-psk") == 0 ? TLS_PSK : TLS_ANON;
    c->verify_peer = true;
    c->sanity_check = true;
    if (!opt_get_str(args, "dir", &dir, errp) ||
        !opt_get_enum(args, "endpoint", endpoint_names, &endpoint, errp) ||
        !opt_get_bool(args, "verify-peer", &c->verify_peer, errp) ||
        !opt_get_str(args, "priority", &priority, errp) ||
        !opt_get_bool(args, "sanity-check", &c->sanity_check, errp) ||
        !opt_get_str(args, "passwordid", &password_id, errp) ||
        !opt_get_str(args, "username", &user, errp)) {
        return false;
    }
    c->server = endpoint == 1;
    c->dir = dir ? strdup(dir) : NULL;
    c->priority = priority ? strdup(priority) : NULL;
    c->username = strdup(user ? user : "qemu");
    if (!c->dir && c->kind != TLS_ANON) {
        error_setg(errp, "Missing 'dir' property value");
        goto fail;
    }
    if (user && c->server) {
        error_setg(errp, "tls-creds-psk: username should only be set for the client "
                   "endpoint");
        goto fail;
    }
    if (password_id && !(password = secret_lookup_as_utf8(password_id, errp))) {
        goto fail;
    }
    ok = c->kind == TLS_X509 ? load_x509(c, password, errp)
         : c->kind == TLS_PSK ? load_psk(c, errp) : load_anon(c);
    if (password) {
        secret_free(password, strlen(password));
    }
    if (ok) {
        c->password_id = password_id ? strdup(password_id) : NULL;
        return true;
    }
fail:
    tls_creds_release(c);
    return false;
}

void tls_creds_release(TlsCreds *c)
{
    if (c->x509) {
        gnutls_certificate_free_credentials(c->x509);
    }
    if (c->psk_server) {
        gnutls_psk_free_server_credentials(c->psk_server);
    }
    if (c->psk_client) {
        gnutls_psk_free_client_credentials(c->psk_client);
    }
    if (c->anon_server) {
        gnutls_anon_free_server_credentials(c->anon_server);
    }
    if (c->anon_client) {
        gnutls_anon_free_client_credentials(c->anon_client);
    }
    free(c->dir);
    free(c->priority);
    free(c->username);
    free(c->password_id);
    c->x509 = NULL;
    c->psk_server = NULL;
    c->psk_client = NULL;
    c->anon_server = NULL;
    c->anon_client = NULL;
    c->dir = c->priority = c->username = c->password_id = NULL;
}

static void creds_finalize(UserObject *obj)
{
    tls_creds_release((TlsCreds *)obj);
}

static json_object *opt_string(const char *s)
{
    return s ? json_object_new_string(s) : NULL;
}

static json_object *creds_get(UserObject *obj, const char *prop, Error **errp)
{
    TlsCreds *c = (TlsCreds *)obj;

    if (strcmp(prop, "dir") == 0) {
        return opt_string(c->dir);
    }
    if (strcmp(prop, "endpoint") == 0) {
        return json_object_new_string(endpoint_names[c->server]);
    }
    if (strcmp(prop, "priority") == 0) {
        return opt_string(c->priority);
    }
    if (strcmp(prop, "verify-peer") == 0) {
        return json_object_new_boolean(c->verify_peer);
    }
    if (strcmp(prop, "loaded") == 0) {
        return json_object_new_boolean(true);
    }
    if (strcmp(prop, "sanity-check") == 0) {
        return json_object_new_boolean(c->sanity_check);
    }
    if (strcmp(prop, "username") == 0) {
        return opt_string(c->username);
    }
    error_setg(errp, "Property '%s.%s' is not readable", obj->cls->type, prop);
    return NULL;
}

static bool creds_set(UserObject *obj, const char *prop, json_object *value, Error **errp)
{
    (void)value;
    /* As QEMU's, credentials are fixed once loaded. */
    error_setg(errp, "Property '%s.%s' cannot be changed once the credentials are loaded",
               obj->cls->type, prop);
    return false;
}

#define COMMON_PROPS "dir", "endpoint", "priority", "verify-peer", "loaded"
#define COMMON_TYPES "string", "QCryptoTLSCredsEndpoint", "string", "bool", "bool"

static const char *const x509_props[] = { COMMON_PROPS, "sanity-check", "passwordid", NULL };
static const char *const x509_types[] = { COMMON_TYPES, "bool", "string", NULL };
static const char *const psk_props[] = { COMMON_PROPS, "username", NULL };
static const char *const psk_types[] = { COMMON_TYPES, "string", NULL };
static const char *const anon_props[] = { COMMON_PROPS, NULL };
static const char *const anon_types[] = { COMMON_TYPES, NULL };

#define CREDS_CLASS(name, props, types) {                                    \
    .type = name, .parent = "tls-creds", .instance_size = sizeof(TlsCreds), \
    .prop_names = props, .prop_types = types, .init = creds_init,           \
    .finalize = creds_finalize, .get = creds_get, .set = creds_set,         \
}

static const UserObjectClass x509_class = CREDS_CLASS("tls-creds-x509", x509_props, x509_types);
static const UserObjectClass psk_class = CREDS_CLASS("tls-creds-psk", psk_props, psk_types);
static const UserObjectClass anon_class = CREDS_CLASS("tls-creds-anon", anon_props, anon_types);

void tls_creds_init(void)
{
    gnutls_global_init();
    user_object_register(&x509_class);
    user_object_register(&psk_class);
    user_object_register(&anon_class);
}

TlsCreds *tls_creds_lookup(const char *id, bool server, Error **errp)
{
    UserObject *obj = user_object_find(id, NULL);
    TlsCreds *c;

    GLOBAL_STATE_CODE();
    if (!obj || (obj->cls != &x509_class && obj->cls != &psk_class &&
                 obj->cls != &anon_class)) {
        error_setg(errp, obj ? "Object with id '%s' is not TLS credentials"
                             : "No TLS credentials with id '%s'", id);
        return NULL;
    }
    c = (TlsCreds *)obj;
    if (c->server != server) {
        error_setg(errp, "Expecting TLS credentials with a %s endpoint",
                   server ? "server" : "client");
        return NULL;
    }
    user_object_ref(obj);
    return c;
}

void tls_creds_ref(TlsCreds *creds)
{
    user_object_ref(&creds->obj);
}

void tls_creds_unref(TlsCreds *creds)
{
    user_object_unref(&creds->obj);
}

bool tls_creds_verify_peer(TlsCreds *creds)
{
    return creds->kind == TLS_X509 && creds->verify_peer;
}
