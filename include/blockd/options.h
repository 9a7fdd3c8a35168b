/*
 * options.h - reading typed values from a JSON options object (the
 * arguments of blockdev-add and friends).
 *
 * Half: common.  Each getter leaves *value untouched when the key is
 * absent and returns true; it returns false with an error naming the key
 * when the value has the wrong type ("Invalid parameter type for 'size',
 * expected: integer").
 */
#ifndef BLOCKD_OPTIONS_H
#define BLOCKD_OPTIONS_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>

#include "blockd/error.h"

bool opt_get_int(json_object *opts, const char *key, int64_t *value, Error **errp);
/* A size: a non-negative integer. */
bool opt_get_size(json_object *opts, const char *key, int64_t *value, Error **errp);
bool opt_get_bool(json_object *opts, const char *key, bool *value, Error **errp);
/* *value points into @opts (valid while it lives). */
bool opt_get_str(json_object *opts, const char *key, const char **value, Error **errp);
/* @value (of parameter @key) as one of @choices (NULL-terminated): *index
 * is its position; else "Parameter '<key>' does not accept value '<v>'". */
bool opt_parse_enum(const char *key, const char *value, const char *const *choices,
                    int *index, Error **errp);
/* One of @choices (NULL-terminated); *index is the position. */
bool opt_get_enum(json_object *opts, const char *key, const char *const *choices,
                  int *index, Error **errp);

#endif /* BLOCKD_OPTIONS_H */
