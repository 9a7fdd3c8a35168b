/*
 * schema.h - declarative schemas for command arguments and option trees.
 *
 * Half: common (pure functions on JSON objects).
 *
 * A SchemaObject describes the members of a JSON object: their names,
 * types, which are optional, and -- for flat unions such as blockdev-add's
 * BlockdevOptions -- a discriminator member whose value selects more
 * members.  The same description serves QMP (checking the "arguments" of a
 * command before it runs) and the command line (turning key=value strings
 * into typed values: "on" becomes true, "1M" becomes 1048576 where the
 * member is a size), so both reject the same mistakes with the same words
 * as QEMU:
 *   Parameter 'x' is missing
 *   Parameter 'x' is unexpected
 *   Invalid parameter type for 'x', expected: integer
 *       (string, integer, boolean, number, object, array; enums: string)
 *   Parameter 'y' does not accept value 'v'
 *       (enums and discriminators; QEMU names the member alone here: 'y',
 *       not 'x.y'; a list element is 'null')
 *   Invalid parameter type for 'y', expected: BlockdevRef
 *       (SCHEMA_STR_OR_OBJECT given neither; member alone, as above)
 *   Parameter 'x' expects uint64            (JSON: a size not an integer)
 * and in key=value mode (schema_from_keyval()) also:
 *   Parameter 'x' expects integer
 *   Parameter 'x' expects size
 *   Parameter 'x' expects 'on' or 'off'
 *   Invalid parameter type for 'x', expected: number
 *   Parameters 'x.*' are unexpected         (x.y=... where x is a scalar)
 *   Parameter 'x.1' missing                 (a gap in a numbered list)
 * Nested members are named with dots ("cache.direct") in messages, list
 * elements as "x[0]" in JSON and "x.0" in key=value mode.  Errors come in
 * QEMU's order: members in schema order (base, then variant), each nested
 * object or list checked when met, unknown members last.
 */
#ifndef BLOCKD_SCHEMA_H
#define BLOCKD_SCHEMA_H

#include <json-c/json.h>
#include <stdbool.h>

#include "blockd/error.h"

typedef enum SchemaType {
    SCHEMA_STR,
    SCHEMA_INT,        /* a JSON integer */
    SCHEMA_SIZE,       /* a byte count up to 2^64-1: JSON any integer (QEMU lets
                          negative ones through too); key=value a non-negative
                          decimal with optional fraction and B/K/M/G/T/P/E
                          suffix (binary), or 0x hex; above INT64_MAX the
                          result is a json-c uint64 */
    SCHEMA_BOOL,       /* key=value: on/off, yes/no, true/false, y/n */
    SCHEMA_NUMBER,     /* integer or floating point */
    SCHEMA_ENUM,       /* a string from .enum_values */
    SCHEMA_OBJECT,     /* .object describes it */
    SCHEMA_LIST,       /* an array of .elem; key=value: keys 0, 1, 2 ... */
    SCHEMA_ANY,        /* anything, not checked (key=value: leaves stay
                          strings, numbered objects become arrays) */
    SCHEMA_STR_OR_OBJECT, /* an alternate: a string, or an object per .object
                             (BlockdevRef: a node name or a nested node); its
                             type name in messages is .object's name with
                             "Options" replaced by "Ref" */
    SCHEMA_STR_OR_LIST, /* an alternate: a string, or an array of .elem
                           (an export's "iothread": one, or several) */
} SchemaType;

typedef struct SchemaObject SchemaObject;
typedef struct SchemaField SchemaField;

struct SchemaField {
    const char *name;                  /* NULL ends a field array */
    SchemaType type;
    bool optional;
    const char *const *enum_values;    /* SCHEMA_ENUM: NULL-terminated */
    const SchemaObject *object;        /* SCHEMA_OBJECT, SCHEMA_STR_OR_OBJECT */
    const SchemaField *elem;           /* SCHEMA_LIST, SCHEMA_STR_OR_LIST: the
                                          element (name unused) */
    bool nullable;                     /* SCHEMA_STR_OR_OBJECT: JSON null allowed
                                          (BlockdevRefOrNull; "null" in key=value) */
};

typedef struct SchemaVariant {
    const char *value;                 /* NULL ends the array */
    const SchemaObject *object;        /* members added for this value */
} SchemaVariant;

struct SchemaObject {
    const char *name;                  /* the type's name, e.g. "BlockdevOptions" */
    const SchemaField *fields;         /* the base members */
    /* A flat union: the value of the (enum or str) base member named
     * .discriminator selects the variant whose members are also allowed.
     * The discriminator is required even if marked optional; a value with
     * no variant is an error unless the member is an enum listing it. */
    const char *discriminator;
    const SchemaVariant *variants;
};

/*
 * Check @obj against @schema: every required member present, no unknown
 * member, every value of its type (enum values among the allowed ones),
 * recursively.  QMP input is strictly typed: "on" is not a boolean here.
 * A NULL @obj is an empty object.
 */
bool schema_check(const SchemaObject *schema, json_object *obj, Error **errp);

/*
 * The command line's path: @kv is what keyval_parse() made (every leaf a
 * string, lists as objects with keys "0", "1", ...).  Returns a new,
 * typed object per @schema (strings converted to integers, sizes,
 * booleans, numbers; numbered objects to arrays), already checked as by
 * schema_check(); NULL with @errp set on any mistake.  Members come out
 * in schema order.  A leaf that is already typed (not a string) is checked
 * as by schema_check() and copied.
 */
json_object *schema_from_keyval(const SchemaObject *schema, json_object *kv, Error **errp);

#endif /* BLOCKD_SCHEMA_H */
