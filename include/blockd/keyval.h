/*
 * keyval.h - the key=value,key=value syntax of QEMU's command line.
 *
 * Half: common.
 *
 * Rules (as qemu-storage-daemon):
 *   - pairs are separated by ','; a literal comma in a value is written ',,';
 *   - a key with dots builds nested objects: "file.filename=x" is
 *     {"file": {"filename": "x"}};
 *   - the first element may be a bare value without '=' when the option has
 *     an implied key ("--monitor m0" is chardev=m0); only the first;
 *   - every value is a string: typing is the schema's job
 *     (schema_from_keyval());
 *   - keys are made of letters, digits, '-', '_' and '.', at most 127
 *     characters per part; a key given twice, a key that is both a value
 *     and a parent of nested keys, an empty key are errors.
 * Messages follow QEMU's: "Expected '=' after parameter 'x'",
 * "Invalid parameter 'x'", "Parameter 'x' is missing", "Parameter 'x'
 * (duplicate)"... (see keyval.c for the exact list).
 */
#ifndef BLOCKD_KEYVAL_H
#define BLOCKD_KEYVAL_H

#include <json-c/json.h>

#include "blockd/error.h"

/* Parse @params; @implied_key may be NULL.  Returns a new object. */
json_object *keyval_parse(const char *params, const char *implied_key, Error **errp);

#endif /* BLOCKD_KEYVAL_H */
