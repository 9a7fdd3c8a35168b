/*
 * qmp-cmds-chardev.c - chardev-add, chardev-remove, chardev-change,
 * chardev-send-break, query-chardev, query-chardev-backends,
 * ringbuf-write and ringbuf-read.
 */
#include <resolv.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/chardev.h"
#include "blockd/json-stream.h"
#include "blockd/main-loop.h"
#include "blockd/monitor.h"
#include "blockd/options.h"
#include "monitor-internal.h"
#include "qapi-schemas.h"

/* ---- Schemas: ChardevBackend and SocketAddressLegacy ---------------------------- */

#define COMMON_FIELDS \
    { .name = "logfile", .type = SCHEMA_STR, .optional = true }, \
    { .name = "logappend", .type = SCHEMA_BOOL, .optional = true }

static const char *const addr_types[] = { "unix", "inet", "fd", NULL };
static const SchemaField addr_type_field[] = {
    { .name = "type", .type = SCHEMA_ENUM, .enum_values = addr_types },
    { 0 },
};
static const SchemaField unix_fields[] = {
    { .name = "path", .type = SCHEMA_STR },
    { 0 },
};
static const SchemaField inet_fields[] = {
    { .name = "host", .type = SCHEMA_STR },
    { .name = "port", .type = SCHEMA_STR },
    { 0 },
};
static const SchemaField fd_fields[] = {
    { .name = "str", .type = SCHEMA_STR },
    { 0 },
};
#define WRAPPER(n, f) &(const SchemaObject){ .name = n "Wrapper", .fields = (const SchemaField[]){ \
        { .name = "data", .type = SCHEMA_OBJECT, \
          .object = &(const SchemaObject){ .name = n, .fields = f } }, { 0 } } }
static const SchemaVariant addr_variants[] = {
    { "unix", WRAPPER("UnixSocketAddress", unix_fields) },
    { "inet", WRAPPER("InetSocketAddress", inet_fields) },
    { "fd", WRAPPER("String", fd_fields) },
    { NULL, NULL },
};
static const SchemaObject socket_address_legacy = {
    .name = "SocketAddressLegacy", .fields = addr_type_field,
    .discriminator = "type", .variants = addr_variants,
};

static const SchemaField file_fields[] = {
    { .name = "in", .type = SCHEMA_STR, .optional = true },
    { .name = "out", .type = SCHEMA_STR },
    { .name = "append", .type = SCHEMA_BOOL, .optional = true },
    COMMON_FIELDS, { 0 },
};
static const SchemaField socket_fields[] = {
    { .name = "addr", .type = SCHEMA_OBJECT, .object = &socket_address_legacy },
    { .name = "server", .type = SCHEMA_BOOL, .optional = true },
    { .name = "wait", .type = SCHEMA_BOOL, .optional = true },
    { .name = "nodelay", .type = SCHEMA_BOOL, .optional = true },
    { .name = "reconnect", .type = SCHEMA_INT, .optional = true },
    { .name = "tls-creds", .type = SCHEMA_STR, .optional = true },
    { .name = "tls-authz", .type = SCHEMA_STR, .optional = true },
    COMMON_FIELDS, { 0 },
};
static const SchemaField stdio_fields[] = {
    { .name = "signal", .type = SCHEMA_BOOL, .optional = true },
    COMMON_FIELDS, { 0 },
};
static const SchemaField common_fields[] = { COMMON_FIELDS, { 0 } };
static const SchemaField ringbuf_fields[] = {
    { .name = "size", .type = SCHEMA_INT, .optional = true },
    COMMON_FIELDS, { 0 },
};

static const SchemaField backend_type_field[] = {
    { .name = "type", .type = SCHEMA_ENUM, .enum_values = chardev_backend_names },
    { 0 },
};
static const SchemaVariant backend_variants[] = {
    { "socket", WRAPPER("ChardevSocket", socket_fields) },
    { "stdio", WRAPPER("ChardevStdio", stdio_fields) },
    { "null", WRAPPER("ChardevCommon", common_fields) },
    { "file", WRAPPER("ChardevFile", file_fields) },
    { "ringbuf", WRAPPER("ChardevRingbuf", ringbuf_fields) },
    { "memory", WRAPPER("ChardevRingbuf", ringbuf_fields) },
    { NULL, NULL },
};
static const SchemaObject chardev_backend_schema = {
    .name = "ChardevBackend", .fields = backend_type_field,
    .discriminator = "type", .variants = backend_variants,
};

static const SchemaField add_fields[] = {
    { .name = "id", .type = SCHEMA_STR },
    { .name = "backend", .type = SCHEMA_OBJECT, .object = &chardev_backend_schema },
    { 0 },
};
static const SchemaObject add_args = { .name = "chardev-add-arg", .fields = add_fields };

static const SchemaField id_fields[] = {
    { .name = "id", .type = SCHEMA_STR },
    { 0 },
};
static const SchemaObject id_args = { .name = "chardev-remove-arg", .fields = id_fields };

static const char *const data_formats[] = { "utf8", "base64", NULL };
static const SchemaField ring_write_fields[] = {
    { .name = "device", .type = SCHEMA_STR },
    { .name = "data", .type = SCHEMA_STR },
    { .name = "format", .type = SCHEMA_ENUM, .optional = true, .enum_values = data_formats },
    { 0 },
};
static const SchemaObject ring_write_args = { .name = "ringbuf-write-arg",
                                              .fields = ring_write_fields };
static const SchemaField ring_read_fields[] = {
    { .name = "device", .type = SCHEMA_STR },
    { .name = "size", .type = SCHEMA_INT },
    { .name = "format", .type = SCHEMA_ENUM, .optional = true, .enum_values = data_formats },
    { 0 },
};
static const SchemaObject ring_read_args = { .name = "ringbuf-read-arg",
                                             .fields = ring_read_fields };

/* ---- Commands ------------------------------------------------------------------------ */

static const char *get_str(json_object *args, const char *key)
{
    return json_object_get_string(json_object_object_get(args, key));
}

static json_object *qmp_chardev_add(json_object *args, Error **errp)
{
    GLOBAL_STATE_CODE();
    if (chardev_find(get_str(args, "id"))) {
        error_setg(errp, "Chardev with id '%s' already exists", get_str(args, "id"));
        return NULL;
    }
    return chardev_new_qmp(get_str(args, "id"), json_object_object_get(args, "backend"), errp)
           ? json_object_new_object() : NULL;
}

static Chardev *find(const char *id, Error **errp)
{
    Chardev *chr = chardev_find(id);

    if (!chr) {
        error_setg(errp, "Chardev '%s' not found", id);
    }
    return chr;
}

static json_object *qmp_chardev_remove(json_object *args, Error **errp)
{
    Chardev *chr = find(get_str(args, "id"), errp);

    if (!chr) {
        return NULL;
    }
    if (chardev_has_frontend(chr)) {
        error_setg(errp, "Chardev '%s' is busy", chardev_id(chr));
        return NULL;
    }
    chardev_free(chr);
    return json_object_new_object();
}

/* A chardev no frontend uses is replaced; a monitor cannot switch. */
static json_object *qmp_chardev_change(json_object *args, Error **errp)
{
    Chardev *chr = find(get_str(args, "id"), errp);
    char *id;

    if (!chr) {
        return NULL;
    }
    if (chardev_has_frontend(chr)) {
        error_setg(errp, "Chardev user does not support chardev hotswap");
        return NULL;
    }
    id = strdup(chardev_id(chr));
    chardev_free(chr);
    chr = chardev_new_qmp(id, json_object_object_get(args, "backend"), errp);
    free(id);
    return chr ? json_object_new_object() : NULL;
}

/* A break means something only to serial lines and telnet, which blockd's
 * backends are not: nothing to send, as QEMU for these backends. */
static json_object *qmp_chardev_send_break(json_object *args, Error **errp)
{
    return find(get_str(args, "id"), errp) ? json_object_new_object() : NULL;
}

static void add_chardev_info(Chardev *chr, void *opaque)
{
    json_object *info = json_object_new_object();
    char *filename = chardev_filename(chr);

    json_object_object_add(info, "label", json_object_new_string(chardev_id(chr)));
    json_object_object_add(info, "filename", json_object_new_string(filename));
    json_object_object_add(info, "frontend-open",
                           json_object_new_boolean(chardev_has_frontend(chr) &&
                                                   chardev_is_open(chr)));
    json_object_array_add(opaque, info);
    free(filename);
}

static json_object *qmp_query_chardev(json_object *args, Error **errp)
{
    json_object *list = json_object_new_array();

    (void)args;
    (void)errp;
    chardev_foreach(add_chardev_info, list);
    return list;
}

bool qmp_monitor_add(json_object *options, Error **errp)
{
    const char *id = get_str(options, "chardev");
    Chardev *chr = chardev_find(id);
    json_object *v;

    GLOBAL_STATE_CODE();
    if (!chr) {
        error_setg(errp, "chardev \"%s\" not found", id);
        return false;
    }
    return monitor_new_qmp(chr, json_object_object_get_ex(options, "pretty", &v) &&
                                json_object_get_boolean(v), errp);
}

/*
 * x-monitor-add: a further QMP monitor while the daemon runs (on a chardev
 * made with chardev-add).  blockd's own: qemu-storage-daemon takes
 * monitors only on its command line.
 */
static json_object *qmp_x_monitor_add(json_object *args, Error **errp)
{
    return qmp_monitor_add(args, errp) ? json_object_new_object() : NULL;
}

static json_object *qmp_query_chardev_backends(json_object *args, Error **errp)
{
    json_object *list = json_object_new_array();

    (void)args;
    (void)errp;
    for (int i = 0; chardev_backend_names[i]; i++) {
        json_object *b = json_object_new_object();
        json_object_object_add(b, "name", json_object_new_string(chardev_backend_names[i]));
        json_object_array_add(list, b);
    }
    return list;
}

static Chardev *find_device(json_object *args, Error **errp)
{
    Chardev *chr = chardev_find(get_str(args, "device"));

    if (!chr) {
        error_setg(errp, "Device '%s' not found", get_str(args, "device"));
    }
    return chr;
}

static bool is_base64(json_object *args)
{
    const char *f = get_str(args, "format");
    return f && strcmp(f, "base64") == 0;
}

static json_object *qmp_ringbuf_write(json_object *args, Error **errp)
{
    Chardev *chr = find_device(args, errp);
    const char *data = get_str(args, "data");
    size_t len = strlen(data);
    bool ok;

    if (!chr) {
        return NULL;
    }
    if (is_base64(args)) {
        unsigned char *raw = malloc(len + 1);
        int n = raw ? b64_pton(data, raw, len + 1) : -1;
        if (n < 0) {
            free(raw);
            error_setg(errp, "Base64 data contains invalid characters");
            return NULL;
        }
        ok = chardev_ring_write(chr, (char *)raw, n, errp);
        free(raw);
    } else {
        ok = chardev_ring_write(chr, data, len, errp);
    }
    return ok ? json_object_new_object() : NULL;
}

static json_object *qmp_ringbuf_read(json_object *args, Error **errp)
{
    Chardev *chr = find_device(args, errp);
    int64_t size = json_object_get_int64(json_object_object_get(args, "size"));
    json_object *ret;
    size_t len;
    char *data, *text;

    if (!chr) {
        return NULL;
    }
    if (size <= 0) {
        error_setg(errp, "size must be greater than zero");
        return NULL;
    }
    data = chardev_ring_read(chr, size > (1 << 30) ? (1 << 30) : size, &len, errp);
    if (!data) {
        return NULL;
    }
    if (is_base64(args)) {
        text = malloc(len / 3 * 4 + 8);
        if (!text || b64_ntop((unsigned char *)data, len, text, len / 3 * 4 + 8) < 0) {
            abort();
        }
    } else {
        /* Bytes that are not UTF-8 come out as U+FFFD, so the reply is. */
        text = json_sanitize_utf8(data, len);
    }
    ret = json_object_new_string(text);
    free(text);
    free(data);
    return ret;
}

static const SchemaField ret_str = { .name = "return", .type = SCHEMA_STR };

const QmpCommand qmp_chardev_commands[] = {
    { .name = "chardev-add", .fn = qmp_chardev_add, .args = &add_args },
    { .name = "chardev-remove", .fn = qmp_chardev_remove, .args = &id_args },
    { .name = "chardev-change", .fn = qmp_chardev_change, .args = &add_args },
    { .name = "chardev-send-break", .fn = qmp_chardev_send_break, .args = &id_args },
    { .name = "query-chardev", .fn = qmp_query_chardev, .ret = &qmp_ret_any },
    { .name = "query-chardev-backends", .fn = qmp_query_chardev_backends,
      .ret = &qmp_ret_any },
    { .name = "ringbuf-write", .fn = qmp_ringbuf_write, .args = &ring_write_args },
    { .name = "x-monitor-add", .fn = qmp_x_monitor_add, .args = &qapi_monitor_options },
    { .name = "ringbuf-read", .fn = qmp_ringbuf_read, .args = &ring_read_args,
      .ret = &ret_str },
    { 0 },
};
