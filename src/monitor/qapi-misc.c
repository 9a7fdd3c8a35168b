/*
 * qapi-misc.c - the schemas of --chardev and --monitor.
 */
#include "qapi-schemas.h"

static const char *const chardev_backends[] = { "socket", NULL };
static const char *const monitor_modes[] = { "control", NULL };

static const SchemaField chardev_fields[] = {
    { .name = "backend", .type = SCHEMA_ENUM, .enum_values = chardev_backends },
    { .name = "id", .type = SCHEMA_STR },
    { .name = "path", .type = SCHEMA_STR, .optional = true },
    { .name = "host", .type = SCHEMA_STR, .optional = true },
    { .name = "port", .type = SCHEMA_STR, .optional = true },
    { .name = "server", .type = SCHEMA_BOOL, .optional = true },
    { .name = "wait", .type = SCHEMA_BOOL, .optional = true },
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
