/*
 * rbd-connect.c - from an rbd node's options to a connected cluster and
 * an open pool.
 *
 * Where the options say nothing, the cluster configuration file does (the
 * "conf" option, else Ceph's default places), as for every Ceph client.
 * blockd adds one thing of its own: when that configuration sets no
 * timeout for OSD and monitor operations, requests get one
 * (RBD_DEFAULT_OP_TIMEOUT), so that a cluster that goes away fails
 * requests with an error instead of holding them -- and every drained
 * section waiting for them -- for ever.  docs/ceph.md says more.
 */
#include <errno.h>
#include <resolv.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/options.h"
#include "blockd/secret.h"
#include "rbd.h"

#define RBD_DEFAULT_OP_TIMEOUT "30"     /* seconds */

static const char *const encrypt_formats[] = { "luks", "luks2", NULL };

static char *dup_opt(json_object *opts, const char *key)
{
    json_object *v;

    if (!json_object_object_get_ex(opts, key, &v) || json_object_is_type(v, json_type_null)) {
        return NULL;
    }
    return strdup(json_object_get_string(v));
}

/* A growing "a;b;c" list. */
static void list_append(char **list, const char *item)
{
    char *old = *list, *n;

    if (asprintf(&n, "%s%s%s", old ? old : "", old ? ";" : "", item) < 0) {
        abort();
    }
    free(old);
    *list = n;
}

/* "server": monitors as host:port, IPv6 hosts in brackets. */
static char *mon_host_from(json_object *servers)
{
    char *list = NULL;

    for (size_t i = 0; i < json_object_array_length(servers); i++) {
        json_object *s = json_object_array_get_idx(servers, i), *h, *p;
        const char *host, *port;
        char *item;

        json_object_object_get_ex(s, "host", &h);
        json_object_object_get_ex(s, "port", &p);
        host = json_object_get_string(h);
        port = json_object_get_string(p);
        if (asprintf(&item, strchr(host, ':') ? "[%s]:%s" : "%s:%s", host, port) < 0) {
            abort();
        }
        list_append(&list, item);
        free(item);
    }
    return list;
}

/* The secret's bytes as base64, the form Ceph takes a key in. */
static char *key_from_secret(const char *id, Error **errp)
{
    size_t len, cap;
    uint8_t *raw = secret_lookup(id, &len, errp);
    char *b64;

    if (!raw) {
        return NULL;
    }
    cap = (len + 2) / 3 * 4 + 1;
    b64 = malloc(cap);
    if (!b64 || b64_ntop(raw, len, b64, cap) < 0) {
        abort();
    }
    secret_free(raw, len);
    return b64;
}

bool rbd_target_parse_encrypt(RbdTarget *t, json_object *enc, Error **errp)
{
    json_object *v;
    const char *id;
    int format;
    size_t len;

    if (!opt_get_enum(enc, "format", encrypt_formats, &format, errp)) {
        return false;
    }
    t->encrypt_format = format == 0 ? RBD_ENCRYPTION_FORMAT_LUKS1 : RBD_ENCRYPTION_FORMAT_LUKS2;
    json_object_object_get_ex(enc, "key-secret", &v);
    id = json_object_get_string(v);
    t->passphrase = (char *)secret_lookup(id, &len, errp);
    t->passphrase_len = len;
    return t->passphrase != NULL;
}

bool rbd_target_parse(RbdTarget *t, json_object *opts, Error **errp)
{
    json_object *v;

    memset(t, 0, sizeof(*t));
    t->encrypt_format = -1;
    t->pool = dup_opt(opts, "pool");
    t->image = dup_opt(opts, "image");
    t->namespace = dup_opt(opts, "namespace");
    t->snapshot = dup_opt(opts, "snapshot");
    t->conf = dup_opt(opts, "conf");
    t->user = dup_opt(opts, "user");
    if (json_object_object_get_ex(opts, "server", &v)) {
        t->mon_host = mon_host_from(v);
    }
    if (json_object_object_get_ex(opts, "auth-client-required", &v)) {
        for (size_t i = 0; i < json_object_array_length(v); i++) {
            list_append(&t->auth_client_required,
                        json_object_get_string(json_object_array_get_idx(v, i)));
        }
    }
    if (json_object_object_get_ex(opts, "key-secret", &v)) {
        t->key = key_from_secret(json_object_get_string(v), errp);
        if (!t->key) {
            return false;
        }
    }
    if (json_object_object_get_ex(opts, "encrypt", &v) && !rbd_target_parse_encrypt(t, v, errp)) {
        return false;
    }
    return true;
}

void rbd_target_clear(RbdTarget *t)
{
    free(t->pool);
    free(t->namespace);
    free(t->image);
    free(t->snapshot);
    free(t->conf);
    free(t->user);
    free(t->mon_host);
    free(t->auth_client_required);
    if (t->key) {
        secret_free(t->key, strlen(t->key));
    }
    if (t->passphrase) {
        secret_free(t->passphrase, t->passphrase_len);
    }
    memset(t, 0, sizeof(*t));
}

/* Set @key unless the configuration already gives it a non-zero value
 * (Ceph's 0, "for ever", cannot be told from not set: it gets ours). */
static void default_timeout(rados_t cluster, const char *key)
{
    char cur[32];

    if (rados_conf_get(cluster, key, cur, sizeof(cur)) < 0 || strtod(cur, NULL) == 0) {
        rados_conf_set(cluster, key, RBD_DEFAULT_OP_TIMEOUT);
    }
}

static bool configure(rados_t cluster, const RbdTarget *t, Error **errp)
{
    int r;

    /* Without "conf" Ceph's default places are tried, and finding none
     * is no error: the options may say all. */
    r = rados_conf_read_file(cluster, t->conf);
    if (r < 0 && t->conf) {
        error_setg_errno(errp, -r, "error reading conf file %s", t->conf);
        return false;
    }
    if (t->mon_host && (r = rados_conf_set(cluster, "mon_host", t->mon_host)) < 0) {
        error_setg_errno(errp, -r, "error setting mon_host");
        return false;
    }
    if (t->auth_client_required &&
        (r = rados_conf_set(cluster, "auth_client_required", t->auth_client_required)) < 0) {
        error_setg_errno(errp, -r, "Could not set 'auth_client_required'");
        return false;
    }
    if (t->key && (r = rados_conf_set(cluster, "key", t->key)) < 0) {
        error_setg_errno(errp, -r, "Could not set 'key'");
        return false;
    }
    /* librbd's cache writes through until the client's first flush shows
     * it flushes, then writes back: safe, and off when the user asks for
     * no host cache. */
    rados_conf_set(cluster, "rbd_cache", t->no_cache ? "false" : "true");
    default_timeout(cluster, "rados_osd_op_timeout");
    default_timeout(cluster, "rados_mon_op_timeout");
    return true;
}

bool rbd_cluster_connect(RbdCluster *c, const RbdTarget *t, Error **errp)
{
    int r;

    memset(c, 0, sizeof(*c));
    r = rados_create(&c->cluster, t->user);
    if (r < 0) {
        error_setg_errno(errp, -r, "error initializing");
        c->cluster = NULL;
        return false;
    }
    if (!configure(c->cluster, t, errp)) {
        goto fail;
    }
    r = rados_connect(c->cluster);
    if (r < 0) {
        error_setg_errno(errp, -r, "error connecting");
        goto fail;
    }
    r = rados_ioctx_create(c->cluster, t->pool, &c->ioctx);
    if (r < 0) {
        error_setg_errno(errp, -r, "error opening pool %s", t->pool);
        goto fail;
    }
    rados_ioctx_set_namespace(c->ioctx, t->namespace ? t->namespace : "");
    return true;

fail:
    rados_shutdown(c->cluster);
    c->cluster = NULL;
    return false;
}

void rbd_cluster_disconnect(RbdCluster *c)
{
    if (c->ioctx) {
        rados_ioctx_destroy(c->ioctx);
    }
    if (c->cluster) {
        rados_shutdown(c->cluster);
    }
    memset(c, 0, sizeof(*c));
}
