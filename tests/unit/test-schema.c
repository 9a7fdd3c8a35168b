/*
 * test-schema - schema_check() on JSON and schema_from_keyval() on
 * key=value trees, against a made-up BlockdevOptions-like flat union and an
 * export-like object with lists.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "blockd/error.h"
#include "blockd/keyval.h"
#include "blockd/schema.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* ---- BlockdevOptions-like: a flat union with a recursive alternate ---- */

static const char *const driver_values[] = { "file", "raw", "null-co", NULL };
static const char *const aio_values[] = { "threads", "native", "io_uring", NULL };

static const SchemaField cache_fields[] = {
    { .name = "direct", .type = SCHEMA_BOOL, .optional = true },
    { .name = "no-flush", .type = SCHEMA_BOOL, .optional = true },
    { .name = NULL },
};
static const SchemaObject cache_schema = { .name = "BlockdevCacheOptions", .fields = cache_fields };

static const SchemaObject blockdev_schema;

static const SchemaField file_fields[] = {
    { .name = "filename", .type = SCHEMA_STR },
    { .name = "aio", .type = SCHEMA_ENUM, .optional = true, .enum_values = aio_values },
    { .name = NULL },
};
static const SchemaObject file_schema = { .name = "BlockdevOptionsFile", .fields = file_fields };

static const SchemaField raw_fields[] = {
    { .name = "file", .type = SCHEMA_STR_OR_OBJECT, .object = &blockdev_schema },
    { .name = "offset", .type = SCHEMA_SIZE, .optional = true },
    { .name = "size", .type = SCHEMA_SIZE, .optional = true },
    { .name = NULL },
};
static const SchemaObject raw_schema = { .name = "BlockdevOptionsRaw", .fields = raw_fields };

static const SchemaField blockdev_fields[] = {
    { .name = "driver", .type = SCHEMA_ENUM, .enum_values = driver_values },
    { .name = "node-name", .type = SCHEMA_STR, .optional = true },
    { .name = "read-only", .type = SCHEMA_BOOL, .optional = true },
    { .name = "cache", .type = SCHEMA_OBJECT, .optional = true, .object = &cache_schema },
    { .name = NULL },
};
static const SchemaVariant blockdev_variants[] = {
    { .value = "file", .object = &file_schema },
    { .value = "raw", .object = &raw_schema },
    /* "null-co": no members of its own */
    { .value = NULL },
};
static const SchemaObject blockdev_schema = {
    .name = "BlockdevOptions",
    .fields = blockdev_fields,
    .discriminator = "driver",
    .variants = blockdev_variants,
};

/* ---- an export-like object: int, number, lists, any ---- */

static const char *const mode_values[] = { "ro", "rw", NULL };

static const SchemaField extent_fields[] = {
    { .name = "offset", .type = SCHEMA_SIZE },
    { .name = "length", .type = SCHEMA_SIZE },
    { .name = NULL },
};
static const SchemaObject extent_schema = { .name = "Extent", .fields = extent_fields };

static const SchemaField str_elem = { .type = SCHEMA_STR };
static const SchemaField extent_elem = { .type = SCHEMA_OBJECT, .object = &extent_schema };
static const SchemaField mode_elem = { .type = SCHEMA_ENUM, .enum_values = mode_values };

static const SchemaField export_fields[] = {
    { .name = "id", .type = SCHEMA_STR },
    { .name = "node-name", .type = SCHEMA_STR },
    { .name = "writable", .type = SCHEMA_BOOL, .optional = true },
    { .name = "num-queues", .type = SCHEMA_INT, .optional = true },
    { .name = "ratio", .type = SCHEMA_NUMBER, .optional = true },
    { .name = "iothreads", .type = SCHEMA_LIST, .optional = true, .elem = &str_elem },
    { .name = "extents", .type = SCHEMA_LIST, .optional = true, .elem = &extent_elem },
    { .name = "modes", .type = SCHEMA_LIST, .optional = true, .elem = &mode_elem },
    { .name = "opaque", .type = SCHEMA_ANY, .optional = true },
    { .name = NULL },
};
static const SchemaObject export_schema = { .name = "ExportArgs", .fields = export_fields };

/* ---- a union on a plain string, its discriminator marked optional ---- */

static const SchemaField inet_fields[] = {
    { .name = "host", .type = SCHEMA_STR },
    { .name = "port", .type = SCHEMA_STR },
    { .name = NULL },
};
static const SchemaObject inet_schema = { .name = "InetAddr", .fields = inet_fields };
static const SchemaField unix_fields[] = {
    { .name = "path", .type = SCHEMA_STR },
    { .name = NULL },
};
static const SchemaObject unix_schema = { .name = "UnixAddr", .fields = unix_fields };
static const SchemaField addr_fields[] = {
    { .name = "type", .type = SCHEMA_STR, .optional = true },
    { .name = NULL },
};
static const SchemaVariant addr_variants[] = {
    { .value = "inet", .object = &inet_schema },
    { .value = "unix", .object = &unix_schema },
    { .value = NULL },
};
static const SchemaObject addr_schema = {
    .name = "SocketAddress",
    .fields = addr_fields,
    .discriminator = "type",
    .variants = addr_variants,
};

#define BD (&blockdev_schema)
#define EX (&export_schema)
#define AD (&addr_schema)

typedef struct Case {
    const SchemaObject *schema;
    const char *input;      /* JSON for schema_check, key=value for schema_from_keyval */
    const char *result;     /* schema_from_keyval: expected JSON; NULL if an error */
    const char *error;      /* expected message, NULL if valid */
} Case;

/* ---- schema_check ---- */

static const Case check_cases[] = {
    /* valid */
    { BD, "{\"driver\":\"file\",\"filename\":\"/tmp/x\"}", NULL, NULL },
    { BD, "{\"driver\":\"file\",\"filename\":\"x\",\"aio\":\"native\",\"node-name\":\"n\","
          "\"read-only\":true,\"cache\":{\"direct\":true,\"no-flush\":false}}", NULL, NULL },
    { BD, "{\"driver\":\"raw\",\"file\":\"node0\"}", NULL, NULL },
    { BD, "{\"driver\":\"raw\",\"file\":{\"driver\":\"file\",\"filename\":\"x\"},"
          "\"offset\":512,\"size\":1048576}", NULL, NULL },
    { BD, "{\"driver\":\"raw\",\"file\":{\"driver\":\"raw\",\"file\":\"n\"}}", NULL, NULL },
    { BD, "{\"driver\":\"null-co\"}", NULL, NULL },
    { BD, "{\"driver\":\"null-co\",\"cache\":{}}", NULL, NULL },
    { BD, "{\"driver\":\"raw\",\"file\":\"n\",\"size\":18446744073709551615}", NULL, NULL },
    { BD, "{\"driver\":\"raw\",\"file\":\"n\",\"offset\":-1}", NULL, NULL },   /* as QEMU */
    { EX, "{\"id\":\"e\",\"node-name\":\"n\",\"writable\":false,\"num-queues\":4,"
          "\"ratio\":0.5,\"iothreads\":[\"a\",\"b\"],"
          "\"extents\":[{\"offset\":0,\"length\":512}],\"modes\":[\"ro\"],"
          "\"opaque\":{\"x\":[1,null,\"s\"]}}", NULL, NULL },
    { EX, "{\"id\":\"e\",\"node-name\":\"n\",\"ratio\":1,\"iothreads\":[],"
          "\"opaque\":null}", NULL, NULL },
    { EX, "{\"id\":\"e\",\"node-name\":\"n\",\"num-queues\":-9223372036854775808}", NULL, NULL },
    { AD, "{\"type\":\"unix\",\"path\":\"/run/s\"}", NULL, NULL },
    { AD, "{\"type\":\"inet\",\"host\":\"h\",\"port\":\"1\"}", NULL, NULL },

    /* missing */
    { BD, "{}", NULL, "Parameter 'driver' is missing" },
    { BD, "{\"driver\":\"file\"}", NULL, "Parameter 'filename' is missing" },
    { BD, "{\"driver\":\"raw\"}", NULL, "Parameter 'file' is missing" },
    { BD, "{\"driver\":\"raw\",\"file\":{\"driver\":\"file\"}}", NULL,
      "Parameter 'file.filename' is missing" },
    { BD, "{\"driver\":\"file\",\"foo\":1}", NULL, "Parameter 'filename' is missing" },
    { EX, "{\"node-name\":\"n\"}", NULL, "Parameter 'id' is missing" },
    { EX, "{\"id\":\"e\",\"node-name\":\"n\",\"extents\":[{\"offset\":0}]}", NULL,
      "Parameter 'extents[0].length' is missing" },
    { AD, "{}", NULL, "Parameter 'type' is missing" },
    { AD, "{\"type\":\"inet\",\"host\":\"h\"}", NULL, "Parameter 'port' is missing" },

    /* unexpected */
    { BD, "{\"driver\":\"file\",\"filename\":\"x\",\"foo\":1}", NULL,
      "Parameter 'foo' is unexpected" },
    { BD, "{\"driver\":\"file\",\"filename\":\"x\",\"offset\":0}", NULL,
      "Parameter 'offset' is unexpected" },
    { BD, "{\"driver\":\"null-co\",\"filename\":\"x\"}", NULL,
      "Parameter 'filename' is unexpected" },
    { BD, "{\"driver\":\"file\",\"filename\":\"x\",\"cache\":{\"foo\":true}}", NULL,
      "Parameter 'cache.foo' is unexpected" },
    { BD, "{\"driver\":\"raw\",\"file\":{\"driver\":\"file\",\"filename\":\"x\",\"bad\":1}}",
      NULL, "Parameter 'file.bad' is unexpected" },
    { EX, "{\"id\":\"e\",\"node-name\":\"n\",\"extents\":[{\"offset\":0,\"length\":1},"
          "{\"offset\":0,\"length\":1,\"x\":1}]}", NULL,
      "Parameter 'extents[1].x' is unexpected" },
    { AD, "{\"type\":\"unix\",\"path\":\"p\",\"host\":\"h\"}", NULL,
      "Parameter 'host' is unexpected" },

    /* types */
    { BD, "{\"driver\":1}", NULL, "Invalid parameter type for 'driver', expected: string" },
    { BD, "{\"driver\":\"file\",\"filename\":1}", NULL,
      "Invalid parameter type for 'filename', expected: string" },
    { BD, "{\"driver\":\"file\",\"filename\":null}", NULL,
      "Invalid parameter type for 'filename', expected: string" },
    { BD, "{\"driver\":\"file\",\"filename\":\"x\",\"read-only\":\"on\"}", NULL,
      "Invalid parameter type for 'read-only', expected: boolean" },
    { BD, "{\"driver\":\"file\",\"filename\":\"x\",\"cache\":true}", NULL,
      "Invalid parameter type for 'cache', expected: object" },
    { BD, "{\"driver\":\"file\",\"filename\":\"x\",\"cache\":{\"direct\":\"yes\"}}", NULL,
      "Invalid parameter type for 'cache.direct', expected: boolean" },
    { BD, "{\"driver\":\"file\",\"filename\":\"x\",\"aio\":3}", NULL,
      "Invalid parameter type for 'aio', expected: string" },
    { BD, "{\"driver\":\"raw\",\"file\":5}", NULL,
      "Invalid parameter type for 'file', expected: BlockdevRef" },
    { BD, "{\"driver\":\"raw\",\"file\":[\"n\"]}", NULL,
      "Invalid parameter type for 'file', expected: BlockdevRef" },
    { BD, "{\"driver\":\"raw\",\"file\":\"n\",\"offset\":\"1M\"}", NULL,
      "Parameter 'offset' expects uint64" },
    { BD, "{\"driver\":\"raw\",\"file\":\"n\",\"offset\":1.5}", NULL,
      "Parameter 'offset' expects uint64" },
    { EX, "{\"id\":\"e\",\"node-name\":\"n\",\"num-queues\":\"4\"}", NULL,
      "Invalid parameter type for 'num-queues', expected: integer" },
    { EX, "{\"id\":\"e\",\"node-name\":\"n\",\"num-queues\":1.0}", NULL,
      "Invalid parameter type for 'num-queues', expected: integer" },
    { EX, "{\"id\":\"e\",\"node-name\":\"n\",\"num-queues\":9223372036854775808}", NULL,
      "Invalid parameter type for 'num-queues', expected: integer" },
    { EX, "{\"id\":\"e\",\"node-name\":\"n\",\"ratio\":\"0.5\"}", NULL,
      "Invalid parameter type for 'ratio', expected: number" },
    { EX, "{\"id\":\"e\",\"node-name\":\"n\",\"iothreads\":\"a\"}", NULL,
      "Invalid parameter type for 'iothreads', expected: array" },
    { EX, "{\"id\":\"e\",\"node-name\":\"n\",\"iothreads\":[\"a\",1]}", NULL,
      "Invalid parameter type for 'iothreads[1]', expected: string" },
    { EX, "{\"id\":\"e\",\"node-name\":\"n\",\"extents\":[{\"offset\":0,\"length\":true}]}",
      NULL, "Parameter 'extents[0].length' expects uint64" },
    { EX, "{\"id\":\"e\",\"node-name\":\"n\",\"extents\":{\"offset\":0,\"length\":1}}", NULL,
      "Invalid parameter type for 'extents', expected: array" },
    { EX, "{\"id\":\"e\",\"node-name\":\"n\",\"extents\":[5]}", NULL,
      "Invalid parameter type for 'extents[0]', expected: object" },

    /* enum values (QEMU names the member alone, 'null' for list elements) */
    { BD, "{\"driver\":\"bogus\"}", NULL, "Parameter 'driver' does not accept value 'bogus'" },
    { BD, "{\"driver\":\"file\",\"filename\":\"x\",\"aio\":\"bogus\"}", NULL,
      "Parameter 'aio' does not accept value 'bogus'" },
    { BD, "{\"driver\":\"raw\",\"file\":{\"driver\":\"bogus\"}}", NULL,
      "Parameter 'driver' does not accept value 'bogus'" },
    { EX, "{\"id\":\"e\",\"node-name\":\"n\",\"modes\":[\"ro\",\"bogus\"]}", NULL,
      "Parameter 'null' does not accept value 'bogus'" },
    { AD, "{\"type\":\"tcp\"}", NULL, "Parameter 'type' does not accept value 'tcp'" },
    { AD, "{\"type\":7}", NULL, "Invalid parameter type for 'type', expected: string" },
};

static int run_check_case(const Case *c)
{
    json_object *in = json_tokener_parse(c->input);
    Error *err = NULL;
    bool ok;
    int failed = 0;

    if (!in) {
        fprintf(stderr, "bad test JSON: %s\n", c->input);
        return 1;
    }
    ok = schema_check(c->schema, in, &err);
    if (c->error) {
        if (ok || !err || strcmp(error_get_pretty(err), c->error) != 0) {
            fprintf(stderr, "FAIL check %s: %s, expected \"%s\"\n", c->input,
                    ok ? "accepted" : error_get_pretty(err), c->error);
            failed = 1;
        }
    } else if (!ok) {
        fprintf(stderr, "FAIL check %s: \"%s\", expected success\n", c->input,
                error_get_pretty(err));
        failed = 1;
    }
    error_free(err);
    json_object_put(in);
    return failed;
}

static void test_check(void **state)
{
    int failed = 0;

    (void)state;
    for (size_t i = 0; i < ARRAY_SIZE(check_cases); i++) {
        failed += run_check_case(&check_cases[i]);
    }
    printf("schema_check: %zu cases, %d failed\n", ARRAY_SIZE(check_cases), failed);
    assert_int_equal(failed, 0);
}

static void test_check_misc(void **state)
{
    Error *err = NULL;
    json_object *arr = json_object_new_array();

    (void)state;
    /* NULL arguments are an empty object */
    assert_false(schema_check(EX, NULL, &err));
    assert_string_equal(error_get_pretty(err), "Parameter 'id' is missing");
    error_clear(&err);
    assert_false(schema_check(BD, arr, &err));
    assert_string_equal(error_get_pretty(err),
                        "Invalid parameter type for '<anonymous>', expected: object");
    error_clear(&err);
    json_object_put(arr);
    /* errp may be NULL */
    assert_false(schema_check(BD, NULL, NULL));
}

/* ---- schema_from_keyval ---- */

#define FILE_X "driver=file,filename=x"
#define RAW_N "driver=raw,file=n"
#define EX_EN "id=e,node-name=n"
#define RAW_J(extra) "{\"driver\":\"raw\",\"file\":\"n\"," extra "}"
#define EX_J(extra) "{\"id\":\"e\",\"node-name\":\"n\"," extra "}"

static const Case kv_cases[] = {
    /* strings, enums, unions */
    { BD, FILE_X, "{\"driver\":\"file\",\"filename\":\"x\"}", NULL },
    { BD, "driver=null-co", "{\"driver\":\"null-co\"}", NULL },
    { BD, RAW_N, "{\"driver\":\"raw\",\"file\":\"n\"}", NULL },
    { BD, "driver=raw,file.driver=file,file.filename=x,offset=1M,size=0x1000",
      "{\"driver\":\"raw\",\"file\":{\"driver\":\"file\",\"filename\":\"x\"},"
      "\"offset\":1048576,\"size\":4096}", NULL },
    { BD, "driver=raw,file.driver=raw,file.file.driver=file,file.file.filename=y",
      "{\"driver\":\"raw\",\"file\":{\"driver\":\"raw\","
      "\"file\":{\"driver\":\"file\",\"filename\":\"y\"}}}", NULL },
    { BD, FILE_X ",aio=io_uring,node-name=n0",
      "{\"driver\":\"file\",\"filename\":\"x\",\"aio\":\"io_uring\",\"node-name\":\"n0\"}",
      NULL },

    /* booleans */
    { BD, FILE_X ",read-only=on,cache.direct=off,cache.no-flush=yes",
      "{\"driver\":\"file\",\"filename\":\"x\",\"read-only\":true,"
      "\"cache\":{\"direct\":false,\"no-flush\":true}}", NULL },
    { BD, FILE_X ",read-only=true", "{\"driver\":\"file\",\"filename\":\"x\",\"read-only\":true}",
      NULL },
    { BD, FILE_X ",read-only=false",
      "{\"driver\":\"file\",\"filename\":\"x\",\"read-only\":false}", NULL },
    { BD, FILE_X ",read-only=no", "{\"driver\":\"file\",\"filename\":\"x\",\"read-only\":false}",
      NULL },
    { BD, FILE_X ",read-only=y", "{\"driver\":\"file\",\"filename\":\"x\",\"read-only\":true}",
      NULL },
    { BD, FILE_X ",read-only=n", "{\"driver\":\"file\",\"filename\":\"x\",\"read-only\":false}",
      NULL },
    { BD, FILE_X ",read-only=maybe", NULL, "Parameter 'read-only' expects 'on' or 'off'" },
    { BD, FILE_X ",read-only=ON", NULL, "Parameter 'read-only' expects 'on' or 'off'" },
    { BD, FILE_X ",read-only=", NULL, "Parameter 'read-only' expects 'on' or 'off'" },
    { BD, FILE_X ",cache.direct=1", NULL, "Parameter 'cache.direct' expects 'on' or 'off'" },

    /* sizes */
    { BD, RAW_N ",offset=0", RAW_J("\"offset\":0"), NULL },
    { BD, RAW_N ",offset=8b", RAW_J("\"offset\":8"), NULL },
    { BD, RAW_N ",offset=8B", RAW_J("\"offset\":8"), NULL },
    { BD, RAW_N ",offset=1k", RAW_J("\"offset\":1024"), NULL },
    { BD, RAW_N ",offset=1K", RAW_J("\"offset\":1024"), NULL },
    { BD, RAW_N ",offset=1.5k", RAW_J("\"offset\":1536"), NULL },
    { BD, RAW_N ",offset=1.k", RAW_J("\"offset\":1024"), NULL },
    { BD, RAW_N ",offset=.5k", RAW_J("\"offset\":512"), NULL },
    { BD, RAW_N ",offset=2M", RAW_J("\"offset\":2097152"), NULL },
    { BD, RAW_N ",offset=2m", RAW_J("\"offset\":2097152"), NULL },
    { BD, RAW_N ",offset=0.1G", RAW_J("\"offset\":107374182"), NULL },
    { BD, RAW_N ",offset=1g", RAW_J("\"offset\":1073741824"), NULL },
    { BD, RAW_N ",offset=1T", RAW_J("\"offset\":1099511627776"), NULL },
    { BD, RAW_N ",offset=1P", RAW_J("\"offset\":1125899906842624"), NULL },
    { BD, RAW_N ",offset=1E", RAW_J("\"offset\":1152921504606846976"), NULL },
    { BD, RAW_N ",offset=1.5e", RAW_J("\"offset\":1729382256910270464"), NULL },
    { BD, RAW_N ",offset=16777215T", RAW_J("\"offset\":18446742974197923840"), NULL },
    { BD, RAW_N ",offset=15E", RAW_J("\"offset\":17293822569102704640"), NULL },
    { BD, RAW_N ",offset=18446744073709551615", RAW_J("\"offset\":18446744073709551615"), NULL },
    { BD, RAW_N ",offset=9007199254740993", RAW_J("\"offset\":9007199254740993"), NULL },
    { BD, RAW_N ",offset=0x1000", RAW_J("\"offset\":4096"), NULL },
    { BD, RAW_N ",offset=0xaB", RAW_J("\"offset\":171"), NULL },
    { BD, RAW_N ",offset=010", RAW_J("\"offset\":10"), NULL },      /* sizes: no octal */
    { BD, RAW_N ",offset=1.0", RAW_J("\"offset\":1"), NULL },
    { BD, RAW_N ",offset=16777216T", NULL, "Parameter 'offset' expects size" },
    { BD, RAW_N ",offset=18446744073709551616", NULL, "Parameter 'offset' expects size" },
    { BD, RAW_N ",offset=16E", NULL, "Parameter 'offset' expects size" },
    { BD, RAW_N ",offset=-1", NULL, "Parameter 'offset' expects size" },
    { BD, RAW_N ",offset=-0", NULL, "Parameter 'offset' expects size" },
    { BD, RAW_N ",offset=-.5k", NULL, "Parameter 'offset' expects size" },
    { BD, RAW_N ",offset=0Z", NULL, "Parameter 'offset' expects size" },
    { BD, RAW_N ",offset=16Gi", NULL, "Parameter 'offset' expects size" },
    { BD, RAW_N ",offset=1.5", NULL, "Parameter 'offset' expects size" },
    { BD, RAW_N ",offset=1.5b", NULL, "Parameter 'offset' expects size" },
    { BD, RAW_N ",offset=0x10k", NULL, "Parameter 'offset' expects size" },
    { BD, RAW_N ",offset=0x1.8", NULL, "Parameter 'offset' expects size" },
    { BD, RAW_N ",offset=0x", NULL, "Parameter 'offset' expects size" },
    { BD, RAW_N ",offset=1e3", NULL, "Parameter 'offset' expects size" },
    { BD, RAW_N ",offset=abc", NULL, "Parameter 'offset' expects size" },
    { BD, RAW_N ",offset=k", NULL, "Parameter 'offset' expects size" },
    { BD, RAW_N ",offset=.", NULL, "Parameter 'offset' expects size" },
    { BD, RAW_N ",offset=", NULL, "Parameter 'offset' expects size" },
    { BD, RAW_N ",offset=1 ", NULL, "Parameter 'offset' expects size" },
    { BD, RAW_N ",offset=inf", NULL, "Parameter 'offset' expects size" },

    /* integers: decimal, hex, octal */
    { EX, EX_EN ",num-queues=42", EX_J("\"num-queues\":42"), NULL },
    { EX, EX_EN ",num-queues=0x2a", EX_J("\"num-queues\":42"), NULL },
    { EX, EX_EN ",num-queues=052", EX_J("\"num-queues\":42"), NULL },
    { EX, EX_EN ",num-queues=-5", EX_J("\"num-queues\":-5"), NULL },
    { EX, EX_EN ",num-queues=9223372036854775807", EX_J("\"num-queues\":9223372036854775807"),
      NULL },
    { EX, EX_EN ",num-queues=-9223372036854775808",
      EX_J("\"num-queues\":-9223372036854775808"), NULL },
    { EX, EX_EN ",num-queues=9223372036854775808", NULL,
      "Parameter 'num-queues' expects integer" },
    { EX, EX_EN ",num-queues=08", NULL, "Parameter 'num-queues' expects integer" },
    { EX, EX_EN ",num-queues=3.14", NULL, "Parameter 'num-queues' expects integer" },
    { EX, EX_EN ",num-queues=12abc", NULL, "Parameter 'num-queues' expects integer" },
    { EX, EX_EN ",num-queues=1k", NULL, "Parameter 'num-queues' expects integer" },
    { EX, EX_EN ",num-queues=", NULL, "Parameter 'num-queues' expects integer" },

    /* numbers */
    { EX, EX_EN ",ratio=2.5", EX_J("\"ratio\":2.5"), NULL },
    { EX, EX_EN ",ratio=1e3", EX_J("\"ratio\":1000.0"), NULL },
    { EX, EX_EN ",ratio=-4", EX_J("\"ratio\":-4.0"), NULL },
    { EX, EX_EN ",ratio=abc", NULL, "Invalid parameter type for 'ratio', expected: number" },
    { EX, EX_EN ",ratio=inf", NULL, "Invalid parameter type for 'ratio', expected: number" },
    { EX, EX_EN ",ratio=nan", NULL, "Invalid parameter type for 'ratio', expected: number" },
    { EX, EX_EN ",ratio=1e999", NULL, "Invalid parameter type for 'ratio', expected: number" },
    { EX, EX_EN ",ratio=1.5x", NULL, "Invalid parameter type for 'ratio', expected: number" },

    /* lists and any */
    { EX, EX_EN ",writable=off,iothreads.0=a,iothreads.1=b",
      EX_J("\"writable\":false,\"iothreads\":[\"a\",\"b\"]"), NULL },
    { EX, EX_EN ",iothreads.1=b,iothreads.0=a", EX_J("\"iothreads\":[\"a\",\"b\"]"), NULL },
    { EX, EX_EN ",extents.0.offset=0,extents.0.length=4k,extents.1.offset=1M,extents.1.length=1",
      EX_J("\"extents\":[{\"offset\":0,\"length\":4096},{\"offset\":1048576,\"length\":1}]"),
      NULL },
    { EX, EX_EN ",modes.0=rw", EX_J("\"modes\":[\"rw\"]"), NULL },
    { EX, EX_EN ",opaque.x.0=1,opaque.x.1=y,opaque.y=on",
      EX_J("\"opaque\":{\"x\":[\"1\",\"y\"],\"y\":\"on\"}"), NULL },
    { EX, EX_EN ",opaque=42", EX_J("\"opaque\":\"42\""), NULL },
    { EX, EX_EN ",iothreads=a", NULL, "Invalid parameter type for 'iothreads', expected: array" },
    { EX, EX_EN ",extents.a=1", NULL, "Invalid parameter type for 'extents', expected: array" },
    { EX, EX_EN ",iothreads.0.x=a", NULL, "Parameters 'iothreads.0.*' are unexpected" },
    { EX, EX_EN ",extents.0=a", NULL,
      "Invalid parameter type for 'extents.0', expected: object" },
    { EX, EX_EN ",extents.0.offset=0", NULL, "Parameter 'extents.0.length' is missing" },
    { EX, EX_EN ",extents.0.offset=x,extents.0.length=1", NULL,
      "Parameter 'extents.0.offset' expects size" },
    { EX, EX_EN ",extents.0.offset=0,extents.0.length=1,extents.0.foo=1", NULL,
      "Parameter 'extents.0.foo' is unexpected" },
    { EX, EX_EN ",modes.0=ro,modes.1=bogus", NULL,
      "Parameter 'null' does not accept value 'bogus'" },

    /* missing, unexpected, nested mistakes */
    { BD, "filename=x", NULL, "Parameter 'driver' is missing" },
    { BD, "driver=file", NULL, "Parameter 'filename' is missing" },
    { BD, "driver=raw,file.driver=file", NULL, "Parameter 'file.filename' is missing" },
    { BD, "driver=nope", NULL, "Parameter 'driver' does not accept value 'nope'" },
    { BD, "driver=raw,file.driver=nope", NULL, "Parameter 'driver' does not accept value 'nope'" },
    { BD, "driver=raw,file.driver=file,file.filename=x,file.aio=bogus", NULL,
      "Parameter 'aio' does not accept value 'bogus'" },
    { BD, "driver=raw,file.driver=file,file.filename=x,file.foo=1", NULL,
      "Parameter 'file.foo' is unexpected" },
    { BD, FILE_X ",offset=0", NULL, "Parameter 'offset' is unexpected" },
    { BD, FILE_X ",cache=on", NULL, "Invalid parameter type for 'cache', expected: object" },
    { BD, FILE_X ",cache.0=on", NULL, "Invalid parameter type for 'cache', expected: object" },
    { BD, FILE_X ",cache.bogus=on", NULL, "Parameter 'cache.bogus' is unexpected" },
    { BD, "driver=file,filename.x=1", NULL, "Parameters 'filename.*' are unexpected" },
    { BD, "driver.x=file", NULL, "Parameters 'driver.*' are unexpected" },
    { BD, "driver=raw,file.0=a", NULL, "Invalid parameter type for 'file', expected: BlockdevRef" },
    { BD, "driver=raw,file.driver=raw,file.file.0=a", NULL,
      "Invalid parameter type for 'file', expected: BlockdevRef" },
    { EX, "id.x=1,node-name=n", NULL, "Parameters 'id.*' are unexpected" },
    { EX, "node-name=n,bogus=1", NULL, "Parameter 'id' is missing" },
    { AD, "type=unix,path=/run/s", "{\"type\":\"unix\",\"path\":\"/run/s\"}", NULL },
    { AD, "path=/run/s", NULL, "Parameter 'type' is missing" },
    { AD, "type=tcp,path=/run/s", NULL, "Parameter 'type' does not accept value 'tcp'" },
};

static int run_kv_case(const Case *c)
{
    Error *err = NULL;
    json_object *kv = keyval_parse(c->input, NULL, &error_abort);
    json_object *got, *want = NULL;
    int failed = 0;

    got = schema_from_keyval(c->schema, kv, &err);
    if (c->error) {
        if (got || !err || strcmp(error_get_pretty(err), c->error) != 0) {
            fprintf(stderr, "FAIL kv \"%s\": %s, expected \"%s\"\n", c->input,
                    got ? json_object_to_json_string(got) : error_get_pretty(err), c->error);
            failed = 1;
        }
    } else {
        want = json_tokener_parse(c->result);
        if (!want) {
            fprintf(stderr, "bad test JSON: %s\n", c->result);
            failed = 1;
        } else if (!got) {
            fprintf(stderr, "FAIL kv \"%s\": \"%s\", expected %s\n", c->input,
                    error_get_pretty(err), c->result);
            failed = 1;
        } else if (!json_object_equal(got, want)) {
            fprintf(stderr, "FAIL kv \"%s\": got %s, expected %s\n", c->input,
                    json_object_to_json_string(got), c->result);
            failed = 1;
        } else {
            /* What the command line makes passes the QMP check. */
            Error *err2 = NULL;

            if (!schema_check(c->schema, got, &err2)) {
                fprintf(stderr, "FAIL kv \"%s\": result %s fails schema_check: %s\n",
                        c->input, json_object_to_json_string(got), error_get_pretty(err2));
                error_free(err2);
                failed = 1;
            }
        }
    }
    error_free(err);
    json_object_put(want);
    json_object_put(got);
    json_object_put(kv);
    return failed;
}

static void test_from_keyval(void **state)
{
    int failed = 0;

    (void)state;
    for (size_t i = 0; i < ARRAY_SIZE(kv_cases); i++) {
        failed += run_kv_case(&kv_cases[i]);
    }
    printf("schema_from_keyval: %zu cases, %d failed\n", ARRAY_SIZE(kv_cases), failed);
    assert_int_equal(failed, 0);
}

/* Types of the results, input left alone, typed leaves, gaps. */
static void test_from_keyval_misc(void **state)
{
    Error *err = NULL;
    json_object *kv, *out, *v;

    (void)state;
    kv = keyval_parse("driver=raw,file=n,offset=15E,size=1k", NULL, &error_abort);
    out = schema_from_keyval(BD, kv, &error_abort);
    assert_true(json_object_object_get_ex(out, "offset", &v));
    assert_true(json_object_is_type(v, json_type_int));
    assert_true(json_object_get_uint64(v) == 17293822569102704640ULL);
    assert_true(json_object_object_get_ex(out, "size", &v));
    assert_int_equal(json_object_get_int64(v), 1024);
    /* the input is not modified */
    assert_true(json_object_object_get_ex(kv, "size", &v));
    assert_string_equal(json_object_get_string(v), "1k");
    json_object_put(out);
    json_object_put(kv);

    /* leaves that are already typed are checked strictly */
    kv = json_tokener_parse("{\"driver\":\"raw\",\"file\":\"n\",\"offset\":4096}");
    out = schema_from_keyval(BD, kv, &error_abort);
    assert_true(json_object_object_get_ex(out, "offset", &v));
    assert_int_equal(json_object_get_int64(v), 4096);
    json_object_put(out);
    json_object_put(kv);
    kv = json_tokener_parse("{\"driver\":\"file\",\"filename\":\"x\",\"read-only\":1}");
    assert_null(schema_from_keyval(BD, kv, &err));
    assert_string_equal(error_get_pretty(err),
                        "Invalid parameter type for 'read-only', expected: boolean");
    error_clear(&err);
    json_object_put(kv);

    /* a numbered object with a gap (not from keyval_parse()) */
    kv = json_tokener_parse("{\"id\":\"e\",\"node-name\":\"n\",\"iothreads\":{\"0\":\"a\",\"2\":\"b\"}}");
    assert_null(schema_from_keyval(EX, kv, &err));
    assert_string_equal(error_get_pretty(err), "Parameter 'iothreads.1' missing");
    error_clear(&err);
    json_object_put(kv);

    /* NULL is an empty tree */
    assert_null(schema_from_keyval(EX, NULL, &err));
    assert_string_equal(error_get_pretty(err), "Parameter 'id' is missing");
    error_clear(&err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check),
        cmocka_unit_test(test_check_misc),
        cmocka_unit_test(test_from_keyval),
        cmocka_unit_test(test_from_keyval_misc),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
