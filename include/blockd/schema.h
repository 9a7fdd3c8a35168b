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
 *   Parameter 'x' does not accept value 'y'
 * Nested members are named with dots ("cache.direct") in messages.
 */
#ifndef BLOCKD_SCHEMA_H
#define BLOCKD_SCHEMA_H

#include <json-c/json.h>
#include <stdbool.h>

#include "blockd/error.h"

typedef enum SchemaType {
    SCHEMA_STR,
    SCHEMA_INT,        /* a JSON integer */
    SCHEMA_SIZE,       /* a non-negative integer; key=value accepts k/M/G/T/P/E suffixes */
    SCHEMA_BOOL,       /* key=value: on/off, yes/no, true/false */
    SCHEMA_NUMBER,     /* integer or floating point */
    SCHEMA_ENUM,       /* a string from .enum_values */
    SCHEMA_OBJECT,     /* .object describes it */
    SCHEMA_LIST,       /* an array of .elem; key=value: keys 0, 1, 2 ... */
    SCHEMA_ANY,        /* anything, not checked */
    SCHEMA_STR_OR_OBJECT, /* an alternate: a string, or an object per .object
                             (BlockdevRef: a node name or a nested node) */
} SchemaType;

typedef struct SchemaObject SchemaObject;
typedef struct SchemaField SchemaField;

struct SchemaField {
    const char *name;                  /* NULL ends a field array */
    SchemaType type;
    bool optional;
    const char *const *enum_values;    /* SCHEMA_ENUM: NULL-terminated */
    const SchemaObject *object;        /* SCHEMA_OBJECT, SCHEMA_STR_OR_OBJECT */
    const SchemaField *elem;           /* SCHEMA_LIST: the element (name unused) */
};

typedef struct SchemaVariant {
    const char *value;                 /* NULL ends the array */
    const SchemaObject *object;        /* members added for this value */
} SchemaVariant;

struct SchemaObject {
    const char *name;                  /* the type's name, e.g. "BlockdevOptions" */
    const SchemaField *fields;         /* the base members */
    /* A flat union: the value of the (enum or str) base member named
     * .discriminator selects the variant whose members are also allowed. */
    const char *discriminator;
    const SchemaVariant *variants;
};

/*
 * Check @obj against @schema: every required member present, no unknown
 * member, every value of its type (enum values among the allowed ones),
 * recursively.  QMP input is strictly typed: "on" is not a boolean here.
 */
bool schema_check(const SchemaObject *schema, json_object *obj, Error **errp);

/*
 * The command line's path: @kv is what keyval_parse() made (every leaf a
 * string, lists as objects with keys "0", "1", ...).  Returns a new,
 * typed object per @schema (strings converted to integers, sizes,
 * booleans, numbers; numbered objects to arrays), already checked as by
 * schema_check(); NULL with @errp set on any mistake.
 */
json_object *schema_from_keyval(const SchemaObject *schema, json_object *kv, Error **errp);

#endif /* BLOCKD_SCHEMA_H */
