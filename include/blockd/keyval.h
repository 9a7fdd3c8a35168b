/*
 * keyval.h - the key=value,key=value syntax of QEMU's command line.
 *
 * Half: common.
 *
 * Rules (as qemu-storage-daemon, i.e. QEMU's keyval_parse()):
 *   - pairs are separated by ','; a literal comma in a value is written ',,';
 *     one trailing ',' is ignored; an empty string gives an empty object;
 *   - a key with dots builds nested objects: "file.filename=x" is
 *     {"file": {"filename": "x"}};
 *   - the first element may be a bare value without '=' when the option has
 *     an implied key ("--monitor m0" is chardev=m0); only the first, only
 *     if non-empty, and it ends at the first ',' or '=' (no ',,' there);
 *   - every value is a string: typing is the schema's job
 *     (schema_from_keyval());
 *   - a key fragment is a name (a letter, then letters, digits, '-', '_';
 *     optionally after a "__RFQDN_" prefix) or, except the first fragment,
 *     decimal digits naming a list element; 1 to 127 characters;
 *   - list elements are kept as objects with keys "0", "1", ... (leading
 *     zeros dropped: "01" is "1"); such an object may not also have named
 *     members, and its indexes must have no gap;
 *   - a key given twice: the last value wins (as QEMU); a key that is both
 *     a value and a parent of nested keys is an error.
 * Messages are QEMU's:
 *   Invalid parameter '<key>'              (bad syntax; the whole key)
 *   Parameter '<key>' is too long          (a one-fragment key over 127)
 *   Parameter fragment '<frag>' is too long
 *   Expected '=' after parameter '<key>'
 *   Parameters '<key>.*' used inconsistently   (value vs nested, names vs
 *                                               indexes)
 *   Parameter '<list>.<n>' missing         (a gap in list indexes)
 */
#ifndef BLOCKD_KEYVAL_H
#define BLOCKD_KEYVAL_H

#include <json-c/json.h>

#include "blockd/error.h"

/* Parse @params; @implied_key may be NULL.  Returns a new object, or NULL
 * with @errp set. */
json_object *keyval_parse(const char *params, const char *implied_key, Error **errp);

#endif /* BLOCKD_KEYVAL_H */
