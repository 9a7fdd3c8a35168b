/*
 * schema.c - checking JSON arguments and typing key=value trees against a
 * SchemaObject (see schema.h).
 *
 * One walk serves both directions.  It visits an object's members in the
 * schema's order (base members, then those of the variant its
 * discriminator selects), descending into nested objects and lists as it
 * meets them, and only then looks for members the schema does not know --
 * the order in which QEMU's input visitor finds mistakes, so the first
 * error reported is the one QEMU reports.  In key=value mode the leaves are
 * strings, converted to the member's type as they are visited.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/schema.h"

typedef struct Walk {
    bool keyval;        /* leaves are strings to convert; lists are "x.0" */
} Walk;

/* Where a value sits, innermost first; NULL is the root object. */
typedef struct Path Path;
struct Path {
    const Path *up;
    const char *name;   /* the member's name; NULL for a list element */
    size_t index;       /* a list element's index */
};

static bool walk_value(const Walk *w, const SchemaField *f, const Path *p,
                       json_object *val, json_object **out, Error **errp);
static bool walk_object(const Walk *w, const SchemaObject *schema, const Path *p,
                        json_object *obj, json_object **out, Error **errp);

/* ---- names for messages ---- */

static void print_path(FILE *f, const Walk *w, const Path *p)
{
    if (p->up) {
        print_path(f, w, p->up);
    }
    if (p->name) {
        fprintf(f, "%s%s", p->up ? "." : "", p->name);
    } else {
        fprintf(f, w->keyval ? ".%zu" : "[%zu]", p->index);
    }
}

/* "cache.direct", "list[0].x" (JSON) or "list.0.x" (key=value); malloc'd. */
static char *full_name(const Walk *w, const Path *p)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f;

    if (!p) {
        return strdup("<anonymous>");
    }
    f = open_memstream(&buf, &len);
    if (!f) {
        abort();
    }
    print_path(f, w, p);
    fclose(f);
    return buf;
}

/* Enum and alternate messages name the member alone, as QEMU's do. */
static const char *short_name(const Path *p)
{
    return p && p->name ? p->name : "null";
}

static bool err_missing(const Walk *w, const Path *p, Error **errp)
{
    char *n = full_name(w, p);

    error_setg(errp, "Parameter '%s' is missing", n);
    free(n);
    return false;
}

static bool err_unexpected(const Walk *w, const Path *p, Error **errp)
{
    char *n = full_name(w, p);

    error_setg(errp, "Parameter '%s' is unexpected", n);
    free(n);
    return false;
}

static bool err_nested_unexpected(const Walk *w, const Path *p, Error **errp)
{
    char *n = full_name(w, p);

    error_setg(errp, "Parameters '%s.*' are unexpected", n);
    free(n);
    return false;
}

static bool err_type(const Walk *w, const Path *p, const char *expected, Error **errp)
{
    char *n = full_name(w, p);

    error_setg(errp, "Invalid parameter type for '%s', expected: %s", n, expected);
    free(n);
    return false;
}

static bool err_expects(const Walk *w, const Path *p, const char *what, Error **errp)
{
    char *n = full_name(w, p);

    error_setg(errp, "Parameter '%s' expects %s", n, what);
    free(n);
    return false;
}

static bool err_enum_value(const Path *p, const char *value, Error **errp)
{
    error_setg(errp, "Parameter '%s' does not accept value '%s'", short_name(p), value);
    return false;
}

/*
 * The type name QEMU gives an alternate of a string and @o in messages:
 * "BlockdevRef" for "BlockdevOptions" ("XOptions" -> "XRef"), else @o's
 * with "OrStr" ("BlockDirtyBitmapOrStr").
 */
static bool err_alternate(const Path *p, const SchemaObject *o, Error **errp)
{
    const char *n = o && o->name ? o->name : "object";
    size_t len = strlen(n);
    static const char suffix[] = "Options";
    size_t slen = sizeof(suffix) - 1;

    if (len > slen && strcmp(n + len - slen, suffix) == 0) {
        error_setg(errp, "Invalid parameter type for '%s', expected: %.*sRef",
                   short_name(p), (int)(len - slen), n);
    } else {
        error_setg(errp, "Invalid parameter type for '%s', expected: %sOrStr", short_name(p), n);
    }
    return false;
}

/* ---- key=value strings ---- */

static bool parse_kv_bool(const char *s, bool *b)
{
    static const char *const yes[] = { "on", "yes", "true", "y", NULL };
    static const char *const no[] = { "off", "no", "false", "n", NULL };

    for (int i = 0; yes[i]; i++) {
        if (strcmp(s, yes[i]) == 0) {
            *b = true;
            return true;
        }
        if (strcmp(s, no[i]) == 0) {
            *b = false;
            return true;
        }
    }
    return false;
}

/* Decimal, 0x hexadecimal or 0 octal, the whole string, within int64. */
static bool parse_kv_int(const char *s, int64_t *v)
{
    char *end;
    long long x;

    errno = 0;
    x = strtoll(s, &end, 0);
    if (errno || end == s || *end) {
        return false;
    }
    *v = x;
    return true;
}

/* A finite floating-point number, the whole string. */
static bool parse_kv_number(const char *s, double *d)
{
    char *end;
    double x;

    errno = 0;
    x = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(x)) {
        return false;
    }
    *d = x;
    return true;
}

static uint64_t size_multiplier(char c)
{
    switch (c) {
    case 'b': case 'B': return 1;
    case 'k': case 'K': return 1ULL << 10;
    case 'm': case 'M': return 1ULL << 20;
    case 'g': case 'G': return 1ULL << 30;
    case 't': case 'T': return 1ULL << 40;
    case 'p': case 'P': return 1ULL << 50;
    case 'e': case 'E': return 1ULL << 60;
    default: return 0;
    }
}

/*
 * strtod() on @s up to its first 'e' or 'E' (which is the exabyte suffix
 * here, not an exponent).  Returns the length read, 0 if none or on error;
 * a fraction too small to represent reads as 0.
 */
static size_t read_fraction(const char *s, double *fraction)
{
    size_t n = strcspn(s, "eE");
    char *copy = strndup(s, n);
    char *tail;
    size_t used;
    int err;

    if (!copy) {
        abort();
    }
    errno = 0;
    *fraction = strtod(copy, &tail);
    err = errno;
    used = (size_t)(tail - copy);
    free(copy);
    if (err == ERANGE && used) {
        *fraction = 0.0;
    } else if (err) {
        return 0;
    }
    return used;
}

/*
 * A size as QEMU reads one: a decimal integer, optionally with a fraction,
 * then optionally one of the suffixes B, K, M, G, T, P, E (either case,
 * binary multiples); a fraction needs a suffix above B and is rounded to
 * the nearest byte; or a hexadecimal integer "0x..." without fraction or
 * suffix.  No sign, no exponent, no octal; at most 2^64 - 1.
 */
static bool parse_kv_size(const char *str, uint64_t *result)
{
    const char *end, *s;
    char *e;
    unsigned long long ull;
    bool have_int;
    uint64_t val = 0, frac = 0, mul;   /* frac: a 0.64 fixed-point fraction */

    errno = 0;
    ull = strtoull(str, &e, 10);
    have_int = e != str;
    if (have_int) {
        if (errno) {
            return false;
        }
        for (s = str; *s == ' ' || (*s >= '\t' && *s <= '\r'); s++) {
        }
        if (*s == '-') {
            return false;
        }
        val = ull;
    }
    end = e;

    if (have_int && val == 0 && (*end == 'x' || *end == 'X')) {
        errno = 0;
        ull = strtoull(str, &e, 16);
        if (errno || *e == '.' || size_multiplier(*e) > 1) {
            return false;
        }
        val = ull;
        end = e;
    } else if (*end == '.' || (!have_int && strchr(str, '.'))) {
        double fraction = 0.0;

        if (have_int && *end == '.' && !(end[1] >= '0' && end[1] <= '9')) {
            end++;                      /* "1.k" */
        } else {
            size_t used = read_fraction(end, &fraction);

            if (!used || !isfinite(fraction) || signbit(fraction)) {
                return false;
            }
            end += used;
        }
        if (fraction >= 1.0) {
            /* only a fraction rounded up to 1, as in ".99999999999999999999" */
            if (val == UINT64_MAX) {
                return false;
            }
            val++;
        } else {
            frac = (uint64_t)(fraction * 0x1p64);
        }
    } else if (!have_int) {
        return false;
    }

    mul = size_multiplier(*end);
    if (mul) {
        end++;
    } else {
        mul = 1;
    }
    if (mul == 1) {
        if (frac) {
            return false;
        }
    } else {
        unsigned __int128 r = (unsigned __int128)val * mul;

        /* add frac * mul rounded to the nearest integer, halves up */
        r += ((unsigned __int128)frac * mul + (1ULL << 63)) >> 64;
        if (r > UINT64_MAX) {
            return false;
        }
        val = (uint64_t)r;
    }
    if (*end) {
        return false;
    }
    *result = val;
    return true;
}

static bool is_index_key(const char *k)
{
    if (!*k) {
        return false;
    }
    for (; *k; k++) {
        if (*k < '0' || *k > '9') {
            return false;
        }
    }
    return true;
}

/* keyval_parse() writes a list as a non-empty object keyed "0", "1", ... */
static bool kv_is_list(json_object *v)
{
    if (json_object_is_type(v, json_type_array)) {
        return true;
    }
    if (!json_object_is_type(v, json_type_object) || json_object_object_length(v) == 0) {
        return false;
    }
    json_object_object_foreach(v, key, val) {
        (void)val;
        if (!is_index_key(key)) {
            return false;
        }
    }
    return true;
}

/*
 * The elements of a numbered object in index order (borrowed), into a
 * malloc'd array of json_object_object_length() entries; NULL with @errp
 * set if an index is missing.
 */
static json_object **kv_list_elements(const Walk *w, const Path *p, json_object *obj,
                                      Error **errp)
{
    size_t n = (size_t)json_object_object_length(obj);
    json_object **elems = calloc(n ? n : 1, sizeof(*elems));
    bool *seen = calloc(n ? n : 1, sizeof(*seen));

    if (!elems || !seen) {
        abort();
    }
    json_object_object_foreach(obj, key, val) {
        unsigned long long idx;

        errno = 0;
        idx = strtoull(key, NULL, 10);
        if (!errno && idx < n && !seen[idx]) {
            seen[idx] = true;
            elems[idx] = val;
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (!seen[i]) {
            char *name = full_name(w, p);

            error_setg(errp, "Parameter '%s.%zu' missing", name, i);
            free(name);
            free(elems);
            free(seen);
            return NULL;
        }
    }
    free(seen);
    return elems;
}

/* A copy of an untyped key=value subtree with numbered objects made arrays. */
static json_object *kv_copy_any(json_object *v)
{
    json_object *copy = NULL;

    if (json_object_is_type(v, json_type_object)) {
        json_object **elems;
        size_t n = (size_t)json_object_object_length(v);
        Walk w = { .keyval = true };

        if (kv_is_list(v) && (elems = kv_list_elements(&w, NULL, v, NULL))) {
            copy = json_object_new_array_ext((int)n);
            for (size_t i = 0; i < n; i++) {
                json_object_array_add(copy, kv_copy_any(elems[i]));
            }
            free(elems);
            return copy;
        }
        copy = json_object_new_object();
        json_object_object_foreach(v, key, val) {
            json_object_object_add(copy, key, kv_copy_any(val));
        }
        return copy;
    }
    if (json_object_is_type(v, json_type_array)) {
        size_t n = json_object_array_length(v);

        copy = json_object_new_array_ext((int)n);
        for (size_t i = 0; i < n; i++) {
            json_object_array_add(copy, kv_copy_any(json_object_array_get_idx(v, i)));
        }
        return copy;
    }
    if (v && json_object_deep_copy(v, &copy, NULL) != 0) {
        abort();
    }
    return copy;
}

/* ---- the walk ---- */

static bool enum_has(const char *const *values, const char *s)
{
    for (int i = 0; values && values[i]; i++) {
        if (strcmp(values[i], s) == 0) {
            return true;
        }
    }
    return false;
}

static bool int_fits_int64(json_object *v)
{
    /* json-c keeps integers above INT64_MAX as uint64; get_int64 saturates */
    return json_object_get_int64(v) != INT64_MAX || json_object_get_uint64(v) == INT64_MAX;
}

static json_object *copy_value(json_object *v)
{
    json_object *copy = NULL;

    if (v && json_object_deep_copy(v, &copy, NULL) != 0) {
        abort();
    }
    return copy;
}

static bool walk_array(const Walk *w, const SchemaField *f, const Path *p,
                       json_object **elems, size_t n, json_object **out, Error **errp)
{
    json_object *res = out ? json_object_new_array_ext((int)n) : NULL;

    for (size_t i = 0; i < n; i++) {
        Path q = { .up = p, .name = NULL, .index = i };
        json_object *conv = NULL;

        if (!walk_value(w, f->elem, &q, elems[i], out ? &conv : NULL, errp)) {
            json_object_put(res);
            return false;
        }
        if (res) {
            json_object_array_add(res, conv);
        }
    }
    if (out) {
        *out = res;
    }
    return true;
}

static bool walk_list(const Walk *w, const SchemaField *f, const Path *p,
                      json_object *val, json_object **out, Error **errp)
{
    json_object **elems;
    size_t n;
    bool ok;

    if (json_object_is_type(val, json_type_array)) {
        n = json_object_array_length(val);
        elems = calloc(n ? n : 1, sizeof(*elems));
        if (!elems) {
            abort();
        }
        for (size_t i = 0; i < n; i++) {
            elems[i] = json_object_array_get_idx(val, i);
        }
    } else {
        n = (size_t)json_object_object_length(val);
        elems = kv_list_elements(w, p, val, errp);
        if (!elems) {
            return false;
        }
    }
    ok = walk_array(w, f, p, elems, n, out, errp);
    free(elems);
    return ok;
}

/* JSON: every value strictly of its type. */
static bool walk_typed(const Walk *w, const SchemaField *f, const Path *p,
                       json_object *val, json_object **out, Error **errp)
{
    json_type t = json_object_get_type(val);

    switch (f->type) {
    case SCHEMA_STR:
        if (t != json_type_string) {
            return err_type(w, p, "string", errp);
        }
        break;
    case SCHEMA_INT:
        if (t != json_type_int || !int_fits_int64(val)) {
            return err_type(w, p, "integer", errp);
        }
        break;
    case SCHEMA_SIZE:
        /* QEMU lets negative integers through (as 2^64 - n) here. */
        if (t != json_type_int) {
            return err_expects(w, p, "uint64", errp);
        }
        break;
    case SCHEMA_BOOL:
        if (t != json_type_boolean) {
            return err_type(w, p, "boolean", errp);
        }
        break;
    case SCHEMA_NUMBER:
        if (t != json_type_int && t != json_type_double) {
            return err_type(w, p, "number", errp);
        }
        break;
    case SCHEMA_ENUM:
        if (t != json_type_string) {
            return err_type(w, p, "string", errp);
        }
        if (!enum_has(f->enum_values, json_object_get_string(val))) {
            return err_enum_value(p, json_object_get_string(val), errp);
        }
        break;
    case SCHEMA_OBJECT:
        if (t != json_type_object) {
            return err_type(w, p, "object", errp);
        }
        return walk_object(w, f->object, p, val, out, errp);
    case SCHEMA_LIST:
        if (t != json_type_array) {
            return err_type(w, p, "array", errp);
        }
        return walk_list(w, f, p, val, out, errp);
    case SCHEMA_ANY:
        break;
    case SCHEMA_STR_OR_OBJECT:
        if (t == json_type_object) {
            return walk_object(w, f->object, p, val, out, errp);
        }
        if (t == json_type_null && f->nullable) {
            break;
        }
        if (t != json_type_string) {
            return err_alternate(p, f->object, errp);
        }
        break;
    case SCHEMA_STR_OR_LIST:
        if (t == json_type_array) {
            return walk_list(w, f, p, val, out, errp);
        }
        if (t != json_type_string) {
            return err_type(w, p, "string or array", errp);
        }
        break;
    }
    if (out) {
        *out = copy_value(val);
    }
    return true;
}

/* key=value: a string leaf converted to the member's type. */
static bool walk_kv_string(const Walk *w, const SchemaField *f, const Path *p,
                           const char *s, json_object **out, Error **errp)
{
    json_object *res = NULL;
    int64_t i;
    uint64_t u;
    double d;
    bool b;

    switch (f->type) {
    case SCHEMA_STR_OR_LIST:
        res = json_object_new_string(s);
        break;
    case SCHEMA_STR:
    case SCHEMA_ANY:
    case SCHEMA_STR_OR_OBJECT:
        /* BlockdevRefOrNull: "null" stands for JSON null, as in QEMU. */
        res = f->nullable && strcmp(s, "null") == 0 ? NULL : json_object_new_string(s);
        break;
    case SCHEMA_INT:
        if (!parse_kv_int(s, &i)) {
            return err_expects(w, p, "integer", errp);
        }
        res = json_object_new_int64(i);
        break;
    case SCHEMA_SIZE:
        if (!parse_kv_size(s, &u)) {
            return err_expects(w, p, "size", errp);
        }
        res = u > INT64_MAX ? json_object_new_uint64(u) : json_object_new_int64((int64_t)u);
        break;
    case SCHEMA_BOOL:
        if (!parse_kv_bool(s, &b)) {
            return err_expects(w, p, "'on' or 'off'", errp);
        }
        res = json_object_new_boolean(b);
        break;
    case SCHEMA_NUMBER:
        if (!parse_kv_number(s, &d)) {
            return err_type(w, p, "number", errp);
        }
        res = json_object_new_double(d);
        break;
    case SCHEMA_ENUM:
        if (!enum_has(f->enum_values, s)) {
            return err_enum_value(p, s, errp);
        }
        res = json_object_new_string(s);
        break;
    case SCHEMA_OBJECT:
        return err_type(w, p, "object", errp);
    case SCHEMA_LIST:
        return err_type(w, p, "array", errp);
    }
    *out = res;
    return true;
}

/* key=value: a subtree (object, or list as numbered object or array). */
static bool walk_kv_tree(const Walk *w, const SchemaField *f, const Path *p,
                         json_object *val, json_object **out, Error **errp)
{
    bool list = kv_is_list(val);

    switch (f->type) {
    case SCHEMA_OBJECT:
        if (list) {
            return err_type(w, p, "object", errp);
        }
        return walk_object(w, f->object, p, val, out, errp);
    case SCHEMA_STR_OR_OBJECT:
        if (list) {
            return err_alternate(p, f->object, errp);
        }
        return walk_object(w, f->object, p, val, out, errp);
    case SCHEMA_LIST:
    case SCHEMA_STR_OR_LIST:
        if (!list) {
            return err_type(w, p, f->type == SCHEMA_LIST ? "array" : "string or array", errp);
        }
        return walk_list(w, f, p, val, out, errp);
    case SCHEMA_ANY:
        *out = kv_copy_any(val);
        return true;
    default:
        return err_nested_unexpected(w, p, errp);
    }
}

static bool walk_value(const Walk *w, const SchemaField *f, const Path *p,
                       json_object *val, json_object **out, Error **errp)
{
    if (w->keyval) {
        if (json_object_is_type(val, json_type_string)) {
            return walk_kv_string(w, f, p, json_object_get_string(val), out, errp);
        }
        if (json_object_is_type(val, json_type_object) ||
            json_object_is_type(val, json_type_array)) {
            return walk_kv_tree(w, f, p, val, out, errp);
        }
        /* an already typed scalar (not from keyval_parse()): as JSON */
    }
    return walk_typed(w, f, p, val, out, errp);
}

static const SchemaField *find_field(const SchemaField *fields, const char *name)
{
    for (const SchemaField *f = fields; f && f->name; f++) {
        if (strcmp(f->name, name) == 0) {
            return f;
        }
    }
    return NULL;
}

/* The variant of @schema that @obj's discriminator selects, if any. */
static const SchemaObject *selected_variant(const SchemaObject *schema, json_object *obj)
{
    json_object *d = NULL;
    const char *value;

    if (!schema || !schema->discriminator || !schema->variants ||
        !json_object_object_get_ex(obj, schema->discriminator, &d) ||
        !json_object_is_type(d, json_type_string)) {
        return NULL;
    }
    value = json_object_get_string(d);
    for (const SchemaVariant *v = schema->variants; v->value; v++) {
        if (strcmp(v->value, value) == 0) {
            return v->object;
        }
    }
    return NULL;
}

static bool member_known(const SchemaObject *schema, json_object *obj, const char *key)
{
    const SchemaObject *variant;

    if (!schema) {
        return false;
    }
    if (find_field(schema->fields, key)) {
        return true;
    }
    variant = selected_variant(schema, obj);
    return variant && member_known(variant, obj, key);
}

static bool walk_members(const Walk *w, const SchemaObject *schema, const Path *p,
                         json_object *obj, json_object *res, Error **errp)
{
    if (!schema) {
        return true;            /* an object without members */
    }
    for (const SchemaField *f = schema->fields; f && f->name; f++) {
        Path q = { .up = p, .name = f->name, .index = 0 };
        bool required = !f->optional ||
            (schema->discriminator && strcmp(f->name, schema->discriminator) == 0);
        json_object *val = NULL, *conv = NULL;

        if (!json_object_object_get_ex(obj, f->name, &val)) {
            if (required) {
                return err_missing(w, &q, errp);
            }
            continue;
        }
        if (!walk_value(w, f, &q, val, res ? &conv : NULL, errp)) {
            return false;
        }
        if (res) {
            json_object_object_add(res, f->name, conv);
        }
    }

    if (schema->discriminator && schema->variants) {
        const SchemaField *df = find_field(schema->fields, schema->discriminator);
        const SchemaObject *variant = selected_variant(schema, obj);
        json_object *d = NULL;

        if (!variant) {
            Path q = { .up = p, .name = schema->discriminator, .index = 0 };
            const char *value;

            if (!json_object_object_get_ex(obj, schema->discriminator, &d)) {
                return err_missing(w, &q, errp);    /* not among the fields */
            }
            value = json_object_get_string(d);
            /* An enum value without a variant adds no members. */
            if (!df || df->type != SCHEMA_ENUM || !enum_has(df->enum_values, value)) {
                return err_enum_value(&q, value ? value : "", errp);
            }
            return true;
        }
        return walk_members(w, variant, p, obj, res, errp);
    }
    return true;
}

static bool walk_object(const Walk *w, const SchemaObject *schema, const Path *p,
                        json_object *obj, json_object **out, Error **errp)
{
    json_object *res = out ? json_object_new_object() : NULL;

    if (!walk_members(w, schema, p, obj, res, errp)) {
        json_object_put(res);
        return false;
    }
    json_object_object_foreach(obj, key, val) {
        (void)val;
        if (!member_known(schema, obj, key)) {
            Path q = { .up = p, .name = key, .index = 0 };

            json_object_put(res);
            return err_unexpected(w, &q, errp);
        }
    }
    if (out) {
        *out = res;
    }
    return true;
}

static bool walk_root(const Walk *w, const SchemaObject *schema, json_object *obj,
                      json_object **out, Error **errp)
{
    json_object *empty = NULL;
    bool ok;

    if (!obj) {
        obj = empty = json_object_new_object();
    }
    if (!json_object_is_type(obj, json_type_object)) {
        return err_type(w, NULL, "object", errp);
    }
    ok = walk_object(w, schema, NULL, obj, out, errp);
    json_object_put(empty);
    return ok;
}

bool schema_check(const SchemaObject *schema, json_object *obj, Error **errp)
{
    Walk w = { .keyval = false };

    return walk_root(&w, schema, obj, NULL, errp);
}

json_object *schema_from_keyval(const SchemaObject *schema, json_object *kv, Error **errp)
{
    Walk w = { .keyval = true };
    json_object *out = NULL;

    if (!walk_root(&w, schema, kv, &out, errp)) {
        return NULL;
    }
    return out;
}
