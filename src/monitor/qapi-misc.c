/*
 * qapi-misc.c - the schemas of --chardev and --monitor.
 */
#include "qapi-schemas.h"

static const char *const monitor_modes[] = { "control", NULL };

/* The command line's flat chardev options: every key of every backend
 * blockd has (chardev.c refuses a backend it does not have by name). */
static const SchemaField chardev_fields[] = {
    { .name = "backend", .type = SCHEMA_STR },
    { .name = "id", .type = SCHEMA_STR },
    /* socket */
    { .name = "path", .type = SCHEMA_STR, .optional = true },
    { .name = "host", .type = SCHEMA_STR, .optional = true },
    { .name = "port", .type = SCHEMA_STR, .optional = true },
    { .name = "fd", .type = SCHEMA_STR, .optional = true },
    { .name = "server", .type = SCHEMA_BOOL, .optional = true },
    { .name = "wait", .type = SCHEMA_BOOL, .optional = true },
    { .name = "nodelay", .type = SCHEMA_BOOL, .optional = true },
    { .name = "reconnect", .type = SCHEMA_INT, .optional = true },
    { .name = "tls-creds", .type = SCHEMA_STR, .optional = true },
    { .name = "tls-authz", .type = SCHEMA_STR, .optional = true },
    /* stdio */
    { .name = "signal", .type = SCHEMA_BOOL, .optional = true },
    /* file (path is the output) */
    { .name = "input-path", .type = SCHEMA_STR, .optional = true },
    { .name = "append", .type = SCHEMA_BOOL, .optional = true },
    /* ringbuf, memory */
    { .name = "size", .type = SCHEMA_SIZE, .optional = true },
    /* all */
    { .name = "logfile", .type = SCHEMA_STR, .optional = true },
    { .name = "logappend", .type = SCHEMA_BOOL, .optional = true },
    { 0 },
};

const SchemaObject qapi_chardev_options = {
    .name = "ChardevOptions", .fields = chardev_fields,
};

static const SchemaField monitor_fields[] = {
    { .name = "chardev", .type = SCHEMA_STR },
    { .name = "id", .type = SCHEMA_STR, .optional = true },
    { .name = "mode", .type = SCHEMA_ENUM, .optional = true, .enum_values = monitor_modes },
    { .name = "pretty", .type = SCHEMA_BOOL, .optional = true },
    { 0 },
};

const SchemaObject qapi_monitor_options = {
    .name = "MonitorOptions", .fields = monitor_fields,
};
