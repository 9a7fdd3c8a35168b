/*
 * keyval.c - parsing key=value,key=value strings into JSON trees.
 *
 * The grammar, informally:
 *   input     := [ pair { ',' pair } [ ',' ] ]
 *   pair      := path '=' value          (the first pair may be a bare value
 *                                         when there is an implied key)
 *   path      := fragment { '.' fragment }
 *   fragment  := a QAPI-style name, or (after the first) decimal digits
 *   value     := anything; ',,' stands for one ','
 *
 * Every pair names a leaf of a tree of objects; digits name list elements,
 * kept here as objects with keys "0", "1", ... (schema_from_keyval() makes
 * arrays of them).  The checks are done in the order QEMU does them, so the
 * first error reported for a bad string is the one QEMU reports.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/keyval.h"

/* Longest key fragment accepted. */
#define FRAGMENT_MAX 127

static bool ascii_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool ascii_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool ascii_alnum(char c)
{
    return ascii_alpha(c) || ascii_digit(c);
}

/*
 * Length of the name starting at @s, 0 if there is none.  A name starts
 * with a letter and goes on with letters, digits, '-' and '_'; it may be
 * preceded by a downstream prefix "__" RFQDN "_" where the RFQDN is made
 * of letters, digits, '-' and '.'.
 */
static size_t name_len(const char *s)
{
    const char *p = s;

    if (p[0] == '_') {
        if (p[1] != '_') {
            return 0;
        }
        p += 2;
        while (ascii_alnum(*p) || *p == '-' || *p == '.') {
            p++;
        }
        if (*p != '_') {
            return 0;
        }
        p++;
    }
    if (!ascii_alpha(*p)) {
        return 0;
    }
    p++;
    while (ascii_alnum(*p) || *p == '-' || *p == '_') {
        p++;
    }
    return (size_t)(p - s);
}

/* Length of the run of digits at @s; *@index gets its value, capped at INT_MAX. */
static size_t index_len(const char *s, int *index)
{
    size_t n = 0;
    long long v = 0;

    while (ascii_digit(s[n])) {
        if (v <= INT_MAX) {
            v = v * 10 + (s[n] - '0');
        }
        n++;
    }
    *index = v > INT_MAX ? INT_MAX : (int)v;
    return n;
}

/*
 * Make @name in @cur a string (@value non-NULL, owned by this call) or an
 * object (@value NULL: an existing object is reused).  A leaf that is both
 * is a conflict, reported with the path @key up to @key_cursor.
 * Returns the member, or NULL with @errp set.
 */
static json_object *put_member(json_object *cur, const char *name, json_object *value,
                               const char *key, const char *key_cursor, Error **errp)
{
    json_object *old = NULL;

    if (json_object_object_get_ex(cur, name, &old)) {
        bool old_is_object = json_object_is_type(old, json_type_object);

        if (old_is_object == (value != NULL)) {
            error_setg(errp, "Parameters '%.*s.*' used inconsistently",
                       (int)(key_cursor - key), key);
            json_object_put(value);
            return NULL;
        }
        if (!value) {
            return old;
        }
    }
    if (!value) {
        value = json_object_new_object();
    }
    json_object_object_add(cur, name, value);   /* replaces a previous string */
    return value;
}

/* The value after '=': up to the first single ',', with ",," read as ','. */
static json_object *read_value(const char **ps)
{
    const char *s = *ps;
    char *buf = malloc(strlen(s) + 1);
    size_t n = 0;
    json_object *str;

    if (!buf) {
        abort();
    }
    while (*s) {
        if (*s == ',') {
            if (s[1] != ',') {
                s++;
                break;
            }
            s++;
        }
        buf[n++] = *s++;
    }
    str = json_object_new_string_len(buf, (int)n);
    free(buf);
    *ps = s;
    return str;
}

/*
 * Parse the pair at @params into @root.  Returns where the next pair
 * starts (possibly at the terminating NUL), or NULL with @errp set.
 */
static const char *parse_pair(json_object *root, const char *params,
                              const char *implied_key, Error **errp)
{
    const char *key = params, *key_end, *val_end = NULL, *s;
    size_t len = strcspn(params, "=,");
    bool implied = false;
    char frag[FRAGMENT_MAX + 1];     /* the fragment before the one at s */
    json_object *cur = root, *value;

    if (implied_key && len && params[len] != '=') {
        implied = true;
        key = implied_key;
        val_end = params + len;
        len = strlen(implied_key);
    }
    key_end = key + len;

    frag[0] = '\0';
    for (s = key;;) {
        int index = 0;
        size_t flen = 0;
        bool is_index = false;

        if (s != key) {
            flen = index_len(s, &index);
            is_index = flen > 0;
        }
        if (!is_index) {
            flen = name_len(s);
        }
        if (!flen || (s + flen < key_end && s[flen] != '.')) {
            error_setg(errp, "Invalid parameter '%.*s'", (int)(key_end - key), key);
            return NULL;
        }
        if (flen > FRAGMENT_MAX) {
            error_setg(errp, "Parameter%s '%.*s' is too long",
                       s != key || s + flen != key_end ? " fragment" : "",
                       (int)flen, s);
            return NULL;
        }
        if (s != key) {
            cur = put_member(cur, frag, NULL, key, s - 1, errp);
            if (!cur) {
                return NULL;
            }
        }
        if (is_index) {
            /* "01" and "1" are the same element */
            snprintf(frag, sizeof(frag), "%d", index);
        } else {
            memcpy(frag, s, flen);
            frag[flen] = '\0';
        }
        s += flen;
        if (*s != '.') {
            break;
        }
        s++;
    }

    if (implied) {
        value = json_object_new_string_len(params, (int)(val_end - params));
        s = val_end;
        if (*s == ',') {
            s++;
        }
    } else {
        if (*s != '=') {
            error_setg(errp, "Expected '=' after parameter '%.*s'", (int)(s - key), key);
            return NULL;
        }
        s++;
        value = read_value(&s);
    }
    if (!put_member(cur, frag, value, key, key_end, errp)) {
        return NULL;
    }
    return s;
}

/* The path leading to an object, innermost first, for messages. */
typedef struct KeyPath KeyPath;
struct KeyPath {
    const KeyPath *up;
    const char *name;
};

/* "a.b." for the path a -> b: a malloc'd string. */
static char *key_path_prefix(const KeyPath *path)
{
    size_t len = 0, pos;
    const KeyPath *p;
    char *s;

    for (p = path; p; p = p->up) {
        len += strlen(p->name) + 1;
    }
    s = malloc(len + 1);
    if (!s) {
        abort();
    }
    s[len] = '\0';
    pos = len;
    for (p = path; p; p = p->up) {
        size_t n = strlen(p->name);

        pos -= n + 1;
        memcpy(s + pos, p->name, n);
        s[pos + n] = '.';
    }
    return s;
}

/*
 * An object whose keys are digits is a list: it may not also have named
 * members, and its indexes must be 0 .. n-1.  Children are checked first.
 */
static bool check_lists(json_object *obj, const KeyPath *path, Error **errp)
{
    bool has_index = false, has_member = false;
    size_t n = (size_t)json_object_object_length(obj);
    bool *seen;
    char *prefix;

    json_object_object_foreach(obj, key, val) {
        if (ascii_digit(key[0])) {
            has_index = true;
        } else {
            has_member = true;
        }
        if (json_object_is_type(val, json_type_object)) {
            KeyPath sub = { path, key };

            if (!check_lists(val, &sub, errp)) {
                return false;
            }
        }
    }
    if (has_index && has_member) {
        prefix = key_path_prefix(path);
        error_setg(errp, "Parameters '%s*' used inconsistently", prefix);
        free(prefix);
        return false;
    }
    if (!has_index) {
        return true;
    }

    /* Keys are canonical decimal numbers, so they are distinct indexes. */
    seen = calloc(n, sizeof(*seen));
    if (!seen) {
        abort();
    }
    json_object_object_foreach(obj, k, v) {
        unsigned long idx = strtoul(k, NULL, 10);

        (void)v;
        if (idx < n) {
            seen[idx] = true;
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (!seen[i]) {
            prefix = key_path_prefix(path);
            error_setg(errp, "Parameter '%s%zu' missing", prefix, i);
            free(prefix);
            free(seen);
            return false;
        }
    }
    free(seen);
    return true;
}

json_object *keyval_parse(const char *params, const char *implied_key, Error **errp)
{
    json_object *root = json_object_new_object();
    const char *s = params ? params : "";

    while (*s) {
        s = parse_pair(root, s, implied_key, errp);
        if (!s) {
            json_object_put(root);
            return NULL;
        }
        implied_key = NULL;
    }
    if (!check_lists(root, NULL, errp)) {
        json_object_put(root);
        return NULL;
    }
    return root;
}
