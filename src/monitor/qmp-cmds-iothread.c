/*
 * qmp-cmds-iothread.c - object-add / object-del (iothreads here, the
 * other types through their classes: user-object.h), query-iothreads,
 * x-blockdev-set-iothread, and the object schemas shared with --object.
 */
#include <string.h>

#include "blockd/block-global-state.h"
#include "blockd/export.h"
#include "blockd/iothread.h"
#include "blockd/job-monitor.h"
#include "blockd/options.h"
#include "blockd/main-loop.h"
#include "blockd/monitor.h"
#include "blockd/user-object.h"
#include "monitor-internal.h"
#include "qapi-schemas.h"

static const char *const qom_types[] = { "authz-list", "authz-listfile", "authz-simple",
                                         "iothread", "secret", "secret_keyring",
                                         "thread-context", "throttle-group", "tls-creds-anon",
                                         "tls-creds-psk", "tls-creds-x509", NULL };
static const char *const secret_formats[] = { "raw", "base64", NULL };

static const SchemaField object_base_fields[] = {
    { .name = "qom-type", .type = SCHEMA_ENUM, .enum_values = qom_types },
    { .name = "id", .type = SCHEMA_STR },
    { 0 },
};

static const SchemaField iothread_fields[] = {
    { .name = "poll-max-ns", .type = SCHEMA_INT, .optional = true },
    { .name = "poll-grow", .type = SCHEMA_INT, .optional = true },
    { .name = "poll-shrink", .type = SCHEMA_INT, .optional = true },
    { .name = "aio-max-batch", .type = SCHEMA_INT, .optional = true },
    { .name = "thread-pool-min", .type = SCHEMA_INT, .optional = true },
    { .name = "thread-pool-max", .type = SCHEMA_INT, .optional = true },
    { 0 },
};

static const SchemaObject iothread_properties = {
    .name = "IothreadProperties", .fields = iothread_fields,
};

/* ThrottleLimits: every member an optional integer. */
#define LIMIT(n) { .name = n, .type = SCHEMA_INT, .optional = true }
#define LIMITS(kind, dir) LIMIT(kind "-" dir), LIMIT(kind "-" dir "-max"), \
                          LIMIT(kind "-" dir "-max-length")
static const SchemaField throttle_limits_fields[] = {
    LIMITS("iops", "total"), LIMITS("iops", "read"), LIMITS("iops", "write"),
    LIMITS("bps", "total"), LIMITS("bps", "read"), LIMITS("bps", "write"),
    LIMIT("iops-size"),
    { 0 },
};
static const SchemaObject throttle_limits = {
    .name = "ThrottleLimits", .fields = throttle_limits_fields,
};

#define XLIMIT(n) LIMIT("x-" n)
#define XLIMITS(kind, dir) XLIMIT(kind "-" dir), XLIMIT(kind "-" dir "-max"), \
                           XLIMIT(kind "-" dir "-max-length")
static const SchemaField throttle_group_fields[] = {
    { .name = "limits", .type = SCHEMA_OBJECT, .optional = true, .object = &throttle_limits },
    XLIMITS("iops", "total"), XLIMITS("iops", "read"), XLIMITS("iops", "write"),
    XLIMITS("bps", "total"), XLIMITS("bps", "read"), XLIMITS("bps", "write"),
    XLIMIT("iops-size"),
    { 0 },
};
#undef XLIMITS
#undef XLIMIT

#undef LIMITS
#undef LIMIT

static const SchemaObject throttle_group_properties = {
    .name = "ThrottleGroupProperties", .fields = throttle_group_fields,
};

#define SECRET_COMMON_FIELDS                                                        \
    { .name = "loaded", .type = SCHEMA_BOOL, .optional = true },                    \
    { .name = "format", .type = SCHEMA_ENUM, .optional = true,                      \
      .enum_values = secret_formats },                                              \
    { .name = "keyid", .type = SCHEMA_STR, .optional = true },                      \
    { .name = "iv", .type = SCHEMA_STR, .optional = true }

static const SchemaField secret_fields[] = {
    SECRET_COMMON_FIELDS,
    { .name = "data", .type = SCHEMA_STR, .optional = true },
    { .name = "file", .type = SCHEMA_STR, .optional = true },
    { 0 },
};

static const SchemaObject secret_properties = {
    .name = "SecretProperties", .fields = secret_fields,
};

static const SchemaField secret_keyring_fields[] = {
    SECRET_COMMON_FIELDS,
    { .name = "serial", .type = SCHEMA_INT },
    { 0 },
};
#undef SECRET_COMMON_FIELDS

static const SchemaObject secret_keyring_properties = {
    .name = "SecretKeyringProperties", .fields = secret_keyring_fields,
};

static const SchemaField cpu_number = { .type = SCHEMA_INT };
static const SchemaField thread_context_fields[] = {
    { .name = "cpu-affinity", .type = SCHEMA_LIST, .optional = true, .elem = &cpu_number },
    { .name = "node-affinity", .type = SCHEMA_LIST, .optional = true, .elem = &cpu_number },
    { 0 },
};

static const SchemaObject thread_context_properties = {
    .name = "ThreadContextProperties", .fields = thread_context_fields,
};

/* TlsCredsProperties and its three kinds. */
static const char *const tls_endpoints[] = { "client", "server", NULL };
#define TLS_CREDS_FIELDS                                                            \
    { .name = "verify-peer", .type = SCHEMA_BOOL, .optional = true },               \
    { .name = "dir", .type = SCHEMA_STR, .optional = true },                        \
    { .name = "endpoint", .type = SCHEMA_ENUM, .optional = true,                    \
      .enum_values = tls_endpoints },                                               \
    { .name = "priority", .type = SCHEMA_STR, .optional = true },                   \
    { .name = "loaded", .type = SCHEMA_BOOL, .optional = true }

static const SchemaField tls_anon_fields[] = { TLS_CREDS_FIELDS, { 0 } };
static const SchemaField tls_psk_fields[] = {
    TLS_CREDS_FIELDS,
    { .name = "username", .type = SCHEMA_STR, .optional = true },
    { 0 },
};
static const SchemaField tls_x509_fields[] = {
    TLS_CREDS_FIELDS,
    { .name = "sanity-check", .type = SCHEMA_BOOL, .optional = true },
    { .name = "passwordid", .type = SCHEMA_STR, .optional = true },
    { 0 },
};
#undef TLS_CREDS_FIELDS

/* The authorization objects. */
static const char *const authz_policies[] = { "deny", "allow", NULL };
static const char *const authz_formats[] = { "exact", "glob", NULL };
static const SchemaField authz_simple_fields[] = {
    { .name = "identity", .type = SCHEMA_STR },
    { 0 },
};
static const SchemaField authz_rule_fields[] = {
    { .name = "match", .type = SCHEMA_STR },
    { .name = "policy", .type = SCHEMA_ENUM, .enum_values = authz_policies },
    { .name = "format", .type = SCHEMA_ENUM, .optional = true, .enum_values = authz_formats },
    { 0 },
};
static const SchemaObject authz_rule = { .name = "QAuthZListRule", .fields = authz_rule_fields };
static const SchemaField authz_rule_elem = { .type = SCHEMA_OBJECT, .object = &authz_rule };
static const SchemaField authz_list_fields[] = {
    { .name = "policy", .type = SCHEMA_ENUM, .optional = true, .enum_values = authz_policies },
    { .name = "rules", .type = SCHEMA_LIST, .optional = true, .elem = &authz_rule_elem },
    { 0 },
};
static const SchemaField authz_file_fields[] = {
    { .name = "filename", .type = SCHEMA_STR },
    { .name = "refresh", .type = SCHEMA_BOOL, .optional = true },
    { 0 },
};

static const SchemaVariant object_variants[] = {
    { "authz-list", &(const SchemaObject){ .name = "AuthZListProperties",
                                           .fields = authz_list_fields } },
    { "authz-listfile", &(const SchemaObject){ .name = "AuthZListFileProperties",
                                               .fields = authz_file_fields } },
    { "authz-simple", &(const SchemaObject){ .name = "AuthZSimpleProperties",
                                             .fields = authz_simple_fields } },
    { "iothread", &iothread_properties },
    { "secret", &secret_properties },
    { "secret_keyring", &secret_keyring_properties },
    { "thread-context", &thread_context_properties },
    { "throttle-group", &throttle_group_properties },
    { "tls-creds-anon", &(const SchemaObject){ .name = "TlsCredsAnonProperties",
                                               .fields = tls_anon_fields } },
    { "tls-creds-psk", &(const SchemaObject){ .name = "TlsCredsPskProperties",
                                              .fields = tls_psk_fields } },
    { "tls-creds-x509", &(const SchemaObject){ .name = "TlsCredsX509Properties",
                                               .fields = tls_x509_fields } },
    { NULL, NULL },
};

const SchemaObject qapi_object_add_args = {
    .name = "ObjectOptions",
    .fields = object_base_fields,
    .discriminator = "qom-type",
    .variants = object_variants,
};

static const SchemaField object_del_fields[] = {
    { .name = "id", .type = SCHEMA_STR },
    { 0 },
};

const SchemaObject qapi_object_del_args = {
    .name = "object-del-arg", .fields = object_del_fields,
};

static void get_param(json_object *args, const char *key, int64_t *value)
{
    json_object *v;
    if (json_object_object_get_ex(args, key, &v)) {
        *value = json_object_get_int64(v);
    }
}

/* object-add and --object: the arguments were checked by the schema. */
bool qmp_object_add_checked(json_object *args, Error **errp)
{
    const char *type = json_object_get_string(json_object_object_get(args, "qom-type"));
    IOThreadParams p;
    json_object *id;

    GLOBAL_STATE_CODE();
    json_object_object_get_ex(args, "id", &id);
    if (strcmp(type, "iothread") != 0) {
        return user_object_create(type, json_object_get_string(id), args, errp) != NULL;
    }
    iothread_params_init(&p);
    get_param(args, "poll-max-ns", &p.poll_max_ns);
    get_param(args, "poll-grow", &p.poll_grow);
    get_param(args, "poll-shrink", &p.poll_shrink);
    get_param(args, "aio-max-batch", &p.aio_max_batch);
    get_param(args, "thread-pool-min", &p.thread_pool_min);
    get_param(args, "thread-pool-max", &p.thread_pool_max);
    return iothread_create(json_object_get_string(id), &p, errp) != NULL;
}

static json_object *qmp_object_add(json_object *args, Error **errp)
{
    return qmp_object_add_checked(args, errp) ? json_object_new_object() : NULL;
}

static void export_uses_ctx(BlockExport *exp, void *opaque)
{
    AioContext **ctx = opaque;

    if (*ctx && blk_exp_uses_ctx(exp, *ctx)) {
        *ctx = NULL;
    }
}

/* Does a node, an export or a job still run in @ctx? */
static bool aio_context_in_use(AioContext *ctx)
{
    AioContext *probe = ctx;
    bool used = false;

    for (BlockDriverState *bs = bdrv_next_node(NULL); bs; bs = bdrv_next_node(bs)) {
        used |= bs->ctx == ctx;
    }
    blk_exp_foreach(export_uses_ctx, &probe);
    used |= probe == NULL;
    job_lock();
    for (Job *job = job_next_locked(NULL); job; job = job_next_locked(job)) {
        used |= job_uses_aio_context_locked(job, ctx);
    }
    job_unlock();
    return used;
}

static json_object *qmp_object_del(json_object *args, Error **errp)
{
    json_object *v;
    const char *id;
    IOThread *iot;

    json_object_object_get_ex(args, "id", &v);
    id = json_object_get_string(v);
    iot = iothread_find(id);
    if (!iot && user_object_find(id, NULL)) {
        return user_object_delete(id, errp) ? json_object_new_object() : NULL;
    }
    if (!iot) {
        error_setg(errp, "object '%s' not found", id);
        return NULL;
    }
    if (aio_context_in_use(iothread_get_aio_context(iot))) {
        error_setg(errp, "object '%s' is in use, can not be deleted", id);
        return NULL;
    }
    iothread_destroy(iot);
    return json_object_new_object();
}

static void add_iothread_info(IOThread *iot, void *opaque)
{
    json_object *info = json_object_new_object();
    IOThreadParams p;

    iothread_get_params(iot, &p);
    json_object_object_add(info, "id", json_object_new_string(iothread_get_id(iot)));
    json_object_object_add(info, "thread-id", json_object_new_int(iothread_get_thread_id(iot)));
    json_object_object_add(info, "poll-max-ns", json_object_new_int64(p.poll_max_ns));
    json_object_object_add(info, "poll-grow", json_object_new_int64(p.poll_grow));
    json_object_object_add(info, "poll-shrink", json_object_new_int64(p.poll_shrink));
    json_object_object_add(info, "aio-max-batch", json_object_new_int64(p.aio_max_batch));
    json_object_array_add(opaque, info);
}

static json_object *qmp_query_iothreads(json_object *args, Error **errp)
{
    json_object *list = json_object_new_array();

    (void)args;
    (void)errp;
    iothread_foreach(add_iothread_info, list);
    return list;
}

static const SchemaField set_iothread_fields[] = {
    { .name = "node-name", .type = SCHEMA_STR },
    { .name = "iothread", .type = SCHEMA_ANY },          /* a name, or null */
    { .name = "force", .type = SCHEMA_BOOL, .optional = true },
    { 0 },
};

static const SchemaObject set_iothread_args = {
    .name = "x-blockdev-set-iothread-arg", .fields = set_iothread_fields,
};

static json_object *qmp_x_blockdev_set_iothread(json_object *args, Error **errp)
{
    const char *node_name = NULL;
    AioContext *ctx = main_aio_context();
    BlockDriverState *bs;
    json_object *v;
    bool force = false;

    GLOBAL_STATE_CODE();
    if (!opt_get_str(args, "node-name", &node_name, errp) ||
        !opt_get_bool(args, "force", &force, errp)) {
        return NULL;
    }
    bs = bdrv_find_node(node_name);
    if (!bs) {
        error_setg(errp, "Failed to find node with node-name='%s'", node_name);
        return NULL;
    }
    /* An export is the usual reason: it could be serving requests. */
    if (!force && bdrv_has_blk(bs)) {
        error_setg(errp, "Node %s is associated with a BlockBackend and could be in use "
                   "(use force=true to override this check)", node_name);
        return NULL;
    }
    json_object_object_get_ex(args, "iothread", &v);
    if (json_object_is_type(v, json_type_string)) {
        IOThread *iot = iothread_find(json_object_get_string(v));
        if (!iot) {
            error_setg(errp, "Cannot find iothread %s", json_object_get_string(v));
            return NULL;
        }
        ctx = iothread_get_aio_context(iot);
    } else if (v && !json_object_is_type(v, json_type_null)) {
        error_setg(errp, "Invalid parameter type for 'iothread', expected: string or null");
        return NULL;
    }
    if (bdrv_try_change_aio_context(bs, ctx, errp) < 0) {
        return NULL;
    }
    return json_object_new_object();
}

const QmpCommand qmp_iothread_commands[] = {
    { .name = "x-blockdev-set-iothread", .fn = qmp_x_blockdev_set_iothread, .args = &set_iothread_args },
    { .name = "object-add", .fn = qmp_object_add, .args = &qapi_object_add_args },
    { .name = "object-del", .fn = qmp_object_del, .args = &qapi_object_del_args },
    { .name = "query-iothreads", .ret = &qmp_ret_any, .fn = qmp_query_iothreads, .args = NULL },
    { 0 },
};
