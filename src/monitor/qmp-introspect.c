/*
 * qmp-introspect.c - query-qmp-schema: blockd's commands and events in
 * QEMU's SchemaInfo format (see qapi/introspect.json).
 *
 * The answer is generated from the very tables the monitor checks
 * arguments with (each QmpCommand's SchemaObject) and the event table
 * (qapi-events.c), so it cannot claim a member the monitor refuses or
 * miss one it takes.  As in QEMU, type names other than the built-in
 * ones are masked as numbers: clients must not depend on them.  Types
 * are shared: the same table (or enum list) gets one entry.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/main-loop.h"
#include "blockd/monitor.h"
#include "monitor-internal.h"

typedef struct TypeKey {
    int kind;                  /* which field type the entry describes */
    const void *ptr;           /* the table, enum list, or element field */
    bool flag;                 /* nullable alternate */
    char *name;                /* its own allocation: stays put while the
                                  key array grows */
} TypeKey;

typedef struct Introspect {
    json_object *list;         /* the SchemaInfo array */
    TypeKey *keys;
    size_t nkeys, cap;
} Introspect;

static const char *type_of_field(Introspect *in, const SchemaField *f);

/* The name of an already described type, or NULL. */
static const char *lookup(Introspect *in, int kind, const void *ptr, bool flag)
{
    for (size_t i = 0; i < in->nkeys; i++) {
        if (in->keys[i].kind == kind && in->keys[i].ptr == ptr && in->keys[i].flag == flag) {
            return in->keys[i].name;
        }
    }
    return NULL;
}

/* Reserve a masked name for a new type (before describing it, so that
 * a recursive type refers to itself). */
static char *reserve(Introspect *in, int kind, const void *ptr, bool flag)
{
    TypeKey *k;

    if (in->nkeys == in->cap) {
        in->cap = in->cap ? in->cap * 2 : 64;
        in->keys = realloc(in->keys, in->cap * sizeof(*in->keys));
        if (!in->keys) {
            abort();
        }
    }
    k = &in->keys[in->nkeys];
    *k = (TypeKey){ .kind = kind, .ptr = ptr, .flag = flag, .name = malloc(24) };
    if (!k->name) {
        abort();
    }
    snprintf(k->name, 24, "%zu", in->nkeys);
    in->nkeys++;
    return k->name;
}

static json_object *info_new(const char *name, const char *meta)
{
    json_object *info = json_object_new_object();

    json_object_object_add(info, "name", json_object_new_string(name));
    json_object_object_add(info, "meta-type", json_object_new_string(meta));
    return info;
}

/* An enum entry for @values (NULL-terminated), keyed by @kind and @key. */
static const char *enum_entry(Introspect *in, int kind, const void *key,
                              const char *const *values)
{
    const char *name = lookup(in, kind, key, false);
    json_object *info, *vals, *members;

    if (name) {
        return name;
    }
    name = reserve(in, kind, key, false);
    info = info_new(name, "enum");
    vals = json_object_new_array();
    members = json_object_new_array();
    for (; *values; values++) {
        json_object *m = json_object_new_object();
        json_object_object_add(m, "name", json_object_new_string(*values));
        json_object_array_add(members, m);
        json_object_array_add(vals, json_object_new_string(*values));
    }
    json_object_object_add(info, "members", members);
    json_object_object_add(info, "values", vals);
    json_object_array_add(in->list, info);
    return name;
}

static const char *enum_type(Introspect *in, const char *const *values)
{
    return enum_entry(in, SCHEMA_ENUM, values, values);
}

/* A discriminator given as a plain string: its values are the variants'. */
static const char *variant_enum_type(Introspect *in, const SchemaObject *o)
{
    const char *values[64];
    size_t n = 0;

    for (const SchemaVariant *v = o->variants; v->value && n < 63; v++) {
        values[n++] = v->value;
    }
    values[n] = NULL;
    return enum_entry(in, -1, o, values);
}

static void add_members(Introspect *in, json_object *members, const SchemaObject *o,
                        const SchemaField *fields)
{
    for (const SchemaField *f = fields; f && f->name; f++) {
        json_object *m = json_object_new_object();
        const char *type = type_of_field(in, f);
        bool tag = o && o->discriminator && strcmp(f->name, o->discriminator) == 0;

        if (tag && f->type == SCHEMA_STR) {
            type = variant_enum_type(in, o);
        }
        json_object_object_add(m, "name", json_object_new_string(f->name));
        json_object_object_add(m, "type", json_object_new_string(type));
        if (f->optional && !tag) {
            json_object_object_add(m, "default", NULL);
        }
        json_object_array_add(members, m);
    }
}

static const char *object_type(Introspect *in, const SchemaObject *o);

static const char *empty_object_type(Introspect *in)
{
    static const SchemaObject empty = { .name = "empty" };
    return object_type(in, &empty);
}

/* The variants of a flat union: every tag value, those without members of
 * their own with the empty object, as QEMU lists them. */
static json_object *variants_of(Introspect *in, const SchemaObject *o)
{
    json_object *variants = json_object_new_array();
    const char *const *values = NULL;

    for (const SchemaField *f = o->fields; f->name; f++) {
        if (strcmp(f->name, o->discriminator) == 0 && f->type == SCHEMA_ENUM) {
            values = f->enum_values;
        }
    }
    for (const SchemaVariant *v = o->variants; v->value; v++) {
        json_object *c = json_object_new_object();
        json_object_object_add(c, "case", json_object_new_string(v->value));
        json_object_object_add(c, "type", json_object_new_string(object_type(in, v->object)));
        json_object_array_add(variants, c);
    }
    for (; values && *values; values++) {
        bool listed = false;
        for (const SchemaVariant *v = o->variants; v->value; v++) {
            listed |= strcmp(v->value, *values) == 0;
        }
        if (!listed) {
            json_object *c = json_object_new_object();
            json_object_object_add(c, "case", json_object_new_string(*values));
            json_object_object_add(c, "type", json_object_new_string(empty_object_type(in)));
            json_object_array_add(variants, c);
        }
    }
    return variants;
}

static const char *object_type(Introspect *in, const SchemaObject *o)
{
    const char *name = lookup(in, SCHEMA_OBJECT, o, false);
    json_object *info, *members;

    if (name) {
        return name;
    }
    name = reserve(in, SCHEMA_OBJECT, o, false);
    info = info_new(name, "object");
    members = json_object_new_array();
    add_members(in, members, o, o->fields);
    json_object_object_add(info, "members", members);
    if (o->discriminator) {
        json_object_object_add(info, "tag", json_object_new_string(o->discriminator));
        json_object_object_add(info, "variants", variants_of(in, o));
    }
    json_object_array_add(in->list, info);
    return name;
}

/* QEMU names arrays after their element: "[int]", "[42]". */
static const char *array_type(Introspect *in, const SchemaField *elem)
{
    const char *element = type_of_field(in, elem);
    char name[24];
    json_object *info;
    char *reserved;

    snprintf(name, sizeof(name), "[%s]", element);
    for (size_t i = 0; i < in->nkeys; i++) {
        if (in->keys[i].kind == SCHEMA_LIST && strcmp(in->keys[i].name, name) == 0) {
            return in->keys[i].name;
        }
    }
    reserved = reserve(in, SCHEMA_LIST, NULL, false);
    strcpy(reserved, name);
    info = info_new(reserved, "array");
    json_object_object_add(info, "element-type", json_object_new_string(element));
    json_object_array_add(in->list, info);
    return reserved;
}

/* An alternate @name of "str", @other and (if @nullable) "null". */
static void add_alternate(Introspect *in, const char *name, const char *other, bool nullable)
{
    const char *types[] = { "str", other, "null" };
    json_object *info = info_new(name, "alternate"), *members = json_object_new_array();

    for (int i = 0; i < (nullable ? 3 : 2); i++) {
        json_object *m = json_object_new_object();

        json_object_object_add(m, "type", json_object_new_string(types[i]));
        json_object_array_add(members, m);
    }
    json_object_object_add(info, "members", members);
    json_object_array_add(in->list, info);
}

static const char *alternate_type(Introspect *in, const SchemaField *f)
{
    const char *name = lookup(in, SCHEMA_STR_OR_OBJECT, f->object, f->nullable);

    if (!name) {
        name = reserve(in, SCHEMA_STR_OR_OBJECT, f->object, f->nullable);
        add_alternate(in, name, object_type(in, f->object), f->nullable);
    }
    return name;
}

/* A string or a list of @f->elem. */
static const char *alternate_list_type(Introspect *in, const SchemaField *f)
{
    const char *name = lookup(in, SCHEMA_STR_OR_LIST, f->elem, false);

    if (!name) {
        name = reserve(in, SCHEMA_STR_OR_LIST, f->elem, false);
        add_alternate(in, name, array_type(in, f->elem), false);
    }
    return name;
}

static const char *type_of_field(Introspect *in, const SchemaField *f)
{
    switch (f->type) {
    case SCHEMA_STR:
        return "str";
    case SCHEMA_INT:
    case SCHEMA_SIZE:
        return "int";
    case SCHEMA_BOOL:
        return "bool";
    case SCHEMA_NUMBER:
        return "number";
    case SCHEMA_ANY:
        return "any";
    case SCHEMA_ENUM:
        return enum_type(in, f->enum_values);
    case SCHEMA_OBJECT:
        return object_type(in, f->object);
    case SCHEMA_LIST:
        return array_type(in, f->elem);
    case SCHEMA_STR_OR_OBJECT:
        return alternate_type(in, f);
    case SCHEMA_STR_OR_LIST:
        return alternate_list_type(in, f);
    }
    abort();
}

static void add_builtins(Introspect *in)
{
    static const char *const builtins[][2] = {
        { "str", "string" }, { "int", "int" }, { "bool", "boolean" },
        { "number", "number" }, { "null", "null" }, { "any", "value" },
    };

    for (size_t i = 0; i < sizeof(builtins) / sizeof(builtins[0]); i++) {
        json_object *info = info_new(builtins[i][0], "builtin");
        json_object_object_add(info, "json-type", json_object_new_string(builtins[i][1]));
        json_object_array_add(in->list, info);
    }
}

static const char *ret_type(Introspect *in, const SchemaField *ret)
{
    return ret ? type_of_field(in, ret) : empty_object_type(in);
}

static void add_command(const QmpCommand *cmd, void *opaque)
{
    Introspect *in = opaque;
    json_object *info = info_new(cmd->name, "command");

    json_object_object_add(info, "arg-type", json_object_new_string(
        cmd->args ? object_type(in, cmd->args) : empty_object_type(in)));
    json_object_object_add(info, "ret-type", json_object_new_string(ret_type(in, cmd->ret)));
    if (cmd->allow_oob) {
        json_object_object_add(info, "allow-oob", json_object_new_boolean(true));
    }
    json_object_array_add(in->list, info);
}

static json_object *qmp_query_qmp_schema(json_object *args, Error **errp)
{
    Introspect in = { .list = json_object_new_array() };

    (void)args;
    (void)errp;
    GLOBAL_STATE_CODE();
    qmp_foreach_command(add_command, &in);
    for (const QmpEventInfo *ev = qmp_events; ev->name; ev++) {
        json_object *info = info_new(ev->name, "event");
        json_object_object_add(info, "arg-type", json_object_new_string(
            ev->data ? object_type(&in, ev->data) : empty_object_type(&in)));
        json_object_array_add(in.list, info);
    }
    add_builtins(&in);
    for (size_t i = 0; i < in.nkeys; i++) {
        free(in.keys[i].name);
    }
    free(in.keys);
    return in.list;
}

const SchemaField qmp_ret_any = { .name = "return", .type = SCHEMA_ANY };

const QmpCommand qmp_introspect_commands[] = {
    { .name = "query-qmp-schema", .fn = qmp_query_qmp_schema, .ret = &qmp_ret_any },
    { 0 },
};
