/*
 * qmp-cmds-export.c - nbd-server-start, nbd-server-stop, block-export-add,
 * block-export-del, query-block-exports, and the schemas shared with
 * --nbd-server and --export.
 */
#include <string.h>

#include "blockd/block-global-state.h"
#include "blockd/export.h"
#include "blockd/options.h"
#include "blockd/main-loop.h"
#include "blockd/monitor.h"
#include "monitor-internal.h"
#include "qapi-schemas.h"

static const char *const address_types[] = { "unix", "inet", NULL };
static const char *const export_types[] = { "nbd", "fuse", "vhost-user-blk", NULL };
static const char *const on_off_auto[] = { "on", "off", "auto", NULL };
static const char *const del_modes[] = { "safe", "hard", NULL };

/* SocketAddress, flat (--nbd-server addr.type=unix,addr.path=...). */
static const SchemaField address_base_fields[] = {
    { .name = "type", .type = SCHEMA_ENUM, .enum_values = address_types },
    { 0 },
};
static const SchemaField unix_fields[] = {
    { .name = "path", .type = SCHEMA_STR },
    { 0 },
};
static const SchemaObject unix_address = { .name = "UnixSocketAddress", .fields = unix_fields };
static const SchemaField inet_fields[] = {
    { .name = "host", .type = SCHEMA_STR },
    { .name = "port", .type = SCHEMA_STR },
    { .name = "ipv4", .type = SCHEMA_BOOL, .optional = true },
    { .name = "ipv6", .type = SCHEMA_BOOL, .optional = true },
    { 0 },
};
static const SchemaObject inet_address = { .name = "InetSocketAddress", .fields = inet_fields };
static const SchemaVariant address_variants[] = {
    { "unix", &unix_address },
    { "inet", &inet_address },
    { NULL, NULL },
};
const SchemaObject qapi_socket_address = {
    .name = "SocketAddress", .fields = address_base_fields,
    .discriminator = "type", .variants = address_variants,
};

static const SchemaField nbd_server_options_fields[] = {
    { .name = "addr", .type = SCHEMA_OBJECT, .object = &qapi_socket_address },
    { .name = "tls-creds", .type = SCHEMA_STR, .optional = true },
    { .name = "tls-authz", .type = SCHEMA_STR, .optional = true },
    { .name = "max-connections", .type = SCHEMA_INT, .optional = true },
    { .name = "handshake-max-seconds", .type = SCHEMA_INT, .optional = true },
    { 0 },
};

const SchemaObject qapi_nbd_server_options = {
    .name = "NbdServerOptions", .fields = nbd_server_options_fields,
};

/* QMP's nbd-server-start takes the legacy address form: checked in code. */
static const SchemaField nbd_server_start_fields[] = {
    { .name = "addr", .type = SCHEMA_ANY },
    { .name = "tls-creds", .type = SCHEMA_STR, .optional = true },
    { .name = "tls-authz", .type = SCHEMA_STR, .optional = true },
    { .name = "max-connections", .type = SCHEMA_INT, .optional = true },
    { .name = "handshake-max-seconds", .type = SCHEMA_INT, .optional = true },
    { 0 },
};

static const SchemaObject nbd_server_start_args = {
    .name = "nbd-server-start-arg", .fields = nbd_server_start_fields,
};

static const SchemaField iothread_name = { .type = SCHEMA_STR };

static const SchemaField export_base_fields[] = {
    { .name = "type", .type = SCHEMA_ENUM, .enum_values = export_types },
    { .name = "id", .type = SCHEMA_STR },
    { .name = "node-name", .type = SCHEMA_STR },
    { .name = "writable", .type = SCHEMA_BOOL, .optional = true },
    { .name = "writethrough", .type = SCHEMA_BOOL, .optional = true },
    { .name = "iothread", .type = SCHEMA_STR_OR_LIST, .optional = true, .elem = &iothread_name },
    { .name = "iothreads", .type = SCHEMA_LIST, .optional = true, .elem = &iothread_name },
    { .name = "fixed-iothread", .type = SCHEMA_BOOL, .optional = true },
    { 0 },
};

static const SchemaField bitmap_elem = {
    .type = SCHEMA_STR_OR_OBJECT, .object = &qapi_block_dirty_bitmap,
};

static const SchemaField nbd_export_fields[] = {
    { .name = "name", .type = SCHEMA_STR, .optional = true },
    { .name = "description", .type = SCHEMA_STR, .optional = true },
    { .name = "allocation-depth", .type = SCHEMA_BOOL, .optional = true },
    { .name = "bitmaps", .type = SCHEMA_LIST, .optional = true, .elem = &bitmap_elem },
    { 0 },
};

static const SchemaObject nbd_export_options = {
    .name = "BlockExportOptionsNbd", .fields = nbd_export_fields,
};

static const SchemaField fuse_export_fields[] = {
    { .name = "mountpoint", .type = SCHEMA_STR },
    { .name = "growable", .type = SCHEMA_BOOL, .optional = true },
    { .name = "allow-other", .type = SCHEMA_ENUM, .optional = true, .enum_values = on_off_auto },
    { 0 },
};

static const SchemaObject fuse_export_options = {
    .name = "BlockExportOptionsFuse", .fields = fuse_export_fields,
};

/* SocketAddress for vhost-user: unix, or a socket fd ("str"); the other
 * types are refused with qemu-storage-daemon's message by the export. */
static const char *const vu_address_types[] = { "unix", "inet", "vsock", "fd", NULL };
static const SchemaField vu_address_base_fields[] = {
    { .name = "type", .type = SCHEMA_ENUM, .enum_values = vu_address_types },
    { 0 },
};
static const SchemaField fd_fields[] = {
    { .name = "str", .type = SCHEMA_STR },
    { 0 },
};
static const SchemaObject fd_address = { .name = "FdSocketAddress", .fields = fd_fields };
static const SchemaField vsock_fields[] = {
    { .name = "cid", .type = SCHEMA_STR },
    { .name = "port", .type = SCHEMA_STR },
    { 0 },
};
static const SchemaObject vsock_address = { .name = "VsockSocketAddress", .fields = vsock_fields };
static const SchemaVariant vu_address_variants[] = {
    { "unix", &unix_address },
    { "inet", &inet_address },
    { "vsock", &vsock_address },
    { "fd", &fd_address },
    { NULL, NULL },
};
static const SchemaObject vu_socket_address = {
    .name = "SocketAddress", .fields = vu_address_base_fields,
    .discriminator = "type", .variants = vu_address_variants,
};

static const SchemaField vhost_user_blk_export_fields[] = {
    { .name = "addr", .type = SCHEMA_OBJECT, .object = &vu_socket_address },
    { .name = "logical-block-size", .type = SCHEMA_SIZE, .optional = true },
    { .name = "num-queues", .type = SCHEMA_INT, .optional = true },
    { 0 },
};

static const SchemaObject vhost_user_blk_export_options = {
    .name = "BlockExportOptionsVhostUserBlk", .fields = vhost_user_blk_export_fields,
};

static const SchemaVariant export_variants[] = {
    { "nbd", &nbd_export_options },
    { "fuse", &fuse_export_options },
    { "vhost-user-blk", &vhost_user_blk_export_options },
    { NULL, NULL },
};

const SchemaObject qapi_block_export_options = {
    .name = "BlockExportOptions", .fields = export_base_fields,
    .discriminator = "type", .variants = export_variants,
};

static const SchemaField export_del_fields[] = {
    { .name = "id", .type = SCHEMA_STR },
    { .name = "mode", .type = SCHEMA_ENUM, .optional = true, .enum_values = del_modes },
    { 0 },
};

static const SchemaObject export_del_args = {
    .name = "block-export-del-arg", .fields = export_del_fields,
};

static const SchemaField nbd_server_add_fields[] = {
    { .name = "device", .type = SCHEMA_STR },
    { .name = "name", .type = SCHEMA_STR, .optional = true },
    { .name = "description", .type = SCHEMA_STR, .optional = true },
    { .name = "writable", .type = SCHEMA_BOOL, .optional = true },
    { .name = "bitmap", .type = SCHEMA_STR, .optional = true },
    { 0 },
};
static const SchemaObject nbd_server_add_args = {
    .name = "NbdServerAddOptions", .fields = nbd_server_add_fields,
};

static const SchemaField nbd_server_remove_fields[] = {
    { .name = "name", .type = SCHEMA_STR },
    { .name = "mode", .type = SCHEMA_ENUM, .optional = true, .enum_values = del_modes },
    { 0 },
};
static const SchemaObject nbd_server_remove_args = {
    .name = "nbd-server-remove-arg", .fields = nbd_server_remove_fields,
};

/* tls-creds, tls-authz, max-connections (QEMU 9's default: 100) and
 * handshake-max-seconds (QEMU 9.1's, default 10), each 0 for no limit. */
static bool server_options(json_object *args, NbdServerOptions *l, Error **errp)
{
    int64_t max = NBD_DEFAULT_MAX_CONNECTIONS, secs = NBD_DEFAULT_HANDSHAKE_MAX_SECONDS;

    *l = (NbdServerOptions){ 0 };
    if (!opt_get_int(args, "max-connections", &max, errp) ||
        !opt_get_int(args, "handshake-max-seconds", &secs, errp) ||
        !opt_get_str(args, "tls-creds", &l->tls_creds, errp) ||
        !opt_get_str(args, "tls-authz", &l->tls_authz, errp)) {
        return false;
    }
    if (max < 0 || max > UINT32_MAX) {
        error_setg(errp, "Parameter 'max-connections' expects uint32");
        return false;
    }
    if (secs < 0 || secs > UINT32_MAX) {
        error_setg(errp, "Parameter 'handshake-max-seconds' expects uint32");
        return false;
    }
    l->max_connections = max > INT32_MAX ? INT32_MAX : (int)max;
    l->handshake_max_seconds = secs > 86400 * 365 ? 86400 * 365 : (int)secs;
    return true;
}

/* --nbd-server: the flat address. */
bool qmp_nbd_server_start_flat(json_object *args, Error **errp)
{
    NbdServerOptions limits;
    json_object *addr;

    json_object_object_get_ex(args, "addr", &addr);
    return server_options(args, &limits, errp) && nbd_server_start(addr, &limits, errp);
}

static json_object *qmp_nbd_server_start(json_object *args, Error **errp)
{
    NbdServerOptions limits;
    json_object *addr, *data;

    json_object_object_get_ex(args, "addr", &addr);
    if (!json_object_is_type(addr, json_type_object)) {
        error_setg(errp, "Invalid parameter type for 'addr', expected: object");
        return NULL;
    }
    if (!server_options(args, &limits, errp)) {
        return NULL;
    }
    /* Accept the legacy form {"type", "data": {...}} and the flat one. */
    if (json_object_object_get_ex(addr, "data", &data)) {
        json_object *flat = NULL, *type;
        bool ok;
        json_object_deep_copy(data, &flat, NULL);
        if (json_object_object_get_ex(addr, "type", &type)) {
            json_object_object_add(flat, "type", json_object_get(type));
        }
        ok = schema_check(&qapi_socket_address, flat, errp) &&
             nbd_server_start(flat, &limits, errp);
        json_object_put(flat);
        return ok ? json_object_new_object() : NULL;
    }
    if (!schema_check(&qapi_socket_address, addr, errp) ||
        !nbd_server_start(addr, &limits, errp)) {
        return NULL;
    }
    return json_object_new_object();
}

static json_object *qmp_nbd_server_stop(json_object *args, Error **errp)
{
    (void)args;
    return nbd_server_stop(errp) ? json_object_new_object() : NULL;
}

static json_object *qmp_block_export_add(json_object *args, Error **errp)
{
    return blk_exp_add(args, errp) ? json_object_new_object() : NULL;
}

static json_object *qmp_block_export_del(json_object *args, Error **errp)
{
    json_object *v;
    const char *id;
    BlockExport *exp;
    bool hard = false;

    json_object_object_get_ex(args, "id", &v);
    id = json_object_get_string(v);
    if (json_object_object_get_ex(args, "mode", &v)) {
        hard = strcmp(json_object_get_string(v), "hard") == 0;
    }
    exp = blk_exp_find(id);
    /* mode=safe (the default) leaves connected clients alone. */
    if (exp && !hard && blk_exp_num_clients(exp) > 0) {
        error_setg(errp, "export '%s' still in use", id);
        error_append_hint(errp, "Use mode='hard' to force client disconnect\n");
        return NULL;
    }
    return blk_exp_del(id, errp) ? json_object_new_object() : NULL;
}

/* The deprecated forms older scripts use: the export's id is its name. */
static json_object *qmp_nbd_server_add(json_object *args, Error **errp)
{
    const char *device = json_object_get_string(json_object_object_get(args, "device"));
    json_object *name = json_object_object_get(args, "name"), *opts, *v;
    BlockExport *exp;

    if (!nbd_server_running()) {
        error_setg(errp, "NBD server not running");
        return NULL;
    }
    if (!bdrv_find_node(device)) {
        error_setg(errp, "Cannot find device='%s' nor node-name='%s'", device, device);
        return NULL;
    }
    opts = json_object_new_object();
    json_object_object_add(opts, "type", json_object_new_string("nbd"));
    json_object_object_add(opts, "id", json_object_new_string(
        name ? json_object_get_string(name) : device));
    json_object_object_add(opts, "node-name", json_object_new_string(device));
    json_object_object_foreach(args, key, val) {
        if (strcmp(key, "bitmap") == 0) {
            /* The one bitmap of the old form is a "bitmaps" list of one. */
            v = json_object_new_array();
            json_object_array_add(v, json_object_get(val));
            json_object_object_add(opts, "bitmaps", v);
        } else if (strcmp(key, "device") != 0) {
            json_object_object_add(opts, key, json_object_get(val));
        }
    }
    exp = blk_exp_add(opts, errp);
    json_object_put(opts);
    return exp ? json_object_new_object() : NULL;
}

static json_object *qmp_nbd_server_remove(json_object *args, Error **errp)
{
    json_object *del = json_object_new_object(), *v, *ret;

    json_object_object_add(del, "id", json_object_get(json_object_object_get(args, "name")));
    if (json_object_object_get_ex(args, "mode", &v)) {
        json_object_object_add(del, "mode", json_object_get(v));
    }
    ret = qmp_block_export_del(del, errp);
    json_object_put(del);
    return ret;
}

static void add_export_info(BlockExport *exp, void *opaque)
{
    json_object *info = json_object_new_object();

    json_object_object_add(info, "type", json_object_new_string(blk_exp_type(exp)));
    json_object_object_add(info, "id", json_object_new_string(blk_exp_id(exp)));
    json_object_object_add(info, "node-name", json_object_new_string(blk_exp_node_name(exp)));
    json_object_object_add(info, "shutting-down", json_object_new_boolean(false));
    json_object_array_add(opaque, info);
}

static json_object *qmp_query_block_exports(json_object *args, Error **errp)
{
    json_object *list = json_object_new_array();

    (void)args;
    (void)errp;
    blk_exp_foreach(add_export_info, list);
    return list;
}

const QmpCommand qmp_export_commands[] = {
    { .name = "nbd-server-start", .fn = qmp_nbd_server_start, .args = &nbd_server_start_args },
    { .name = "nbd-server-stop", .fn = qmp_nbd_server_stop, .args = NULL },
    { .name = "block-export-add", .fn = qmp_block_export_add, .args = &qapi_block_export_options },
    { .name = "block-export-del", .fn = qmp_block_export_del, .args = &export_del_args },
    { .name = "nbd-server-add", .fn = qmp_nbd_server_add, .args = &nbd_server_add_args },
    { .name = "nbd-server-remove", .fn = qmp_nbd_server_remove,
      .args = &nbd_server_remove_args },
    { .name = "query-block-exports", .ret = &qmp_ret_any, .fn = qmp_query_block_exports, .args = NULL },
    { 0 },
};
