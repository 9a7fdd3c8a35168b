/*
 * options.c - typed getters for JSON option objects.
 */
#include <string.h>

#include "blockd/options.h"

static json_object *lookup(json_object *opts, const char *key)
{
    json_object *v = NULL;

    if (!opts || !json_object_object_get_ex(opts, key, &v)) {
        return NULL;
    }
    return v;
}

static bool type_error(const char *key, const char *expected, Error **errp)
{
    error_setg(errp, "Invalid parameter type for '%s', expected: %s", key, expected);
    return false;
}

bool opt_get_int(json_object *opts, const char *key, int64_t *value, Error **errp)
{
    json_object *v = lookup(opts, key);

    if (!v) {
        return true;
    }
    if (!json_object_is_type(v, json_type_int)) {
        return type_error(key, "integer", errp);
    }
    *value = json_object_get_int64(v);
    return true;
}

bool opt_get_size(json_object *opts, const char *key, int64_t *value, Error **errp)
{
    int64_t v = 0;

    if (!lookup(opts, key)) {
        return true;
    }
    if (!opt_get_int(opts, key, &v, errp)) {
        return false;
    }
    if (v < 0) {
        error_setg(errp, "Parameter '%s' expects a non-negative size", key);
        return false;
    }
    *value = v;
    return true;
}

bool opt_get_bool(json_object *opts, const char *key, bool *value, Error **errp)
{
    json_object *v = lookup(opts, key);

    if (!v) {
        return true;
    }
    if (!json_object_is_type(v, json_type_boolean)) {
        return type_error(key, "boolean", errp);
    }
    *value = json_object_get_boolean(v);
    return true;
}

bool opt_get_str(json_object *opts, const char *key, const char **value, Error **errp)
{
    json_object *v = lookup(opts, key);

    if (!v) {
        return true;
    }
    if (!json_object_is_type(v, json_type_string)) {
        return type_error(key, "string", errp);
    }
    *value = json_object_get_string(v);
    return true;
}

bool opt_parse_enum(const char *key, const char *value, const char *const *choices,
                    int *index, Error **errp)
{
    for (int i = 0; choices[i]; i++) {
        if (strcmp(value, choices[i]) == 0) {
            *index = i;
            return true;
        }
    }
    error_setg(errp, "Parameter '%s' does not accept value '%s'", key, value);
    return false;
}

bool opt_get_enum(json_object *opts, const char *key, const char *const *choices,
                  int *index, Error **errp)
{
    const char *s = NULL;

    if (!opt_get_str(opts, key, &s, errp)) {
        return false;
    }
    return !s || opt_parse_enum(key, s, choices, index, errp);
}
