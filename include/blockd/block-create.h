/*
 * block-create.h - image creation (the work behind QMP blockdev-create).
 *
 * Half: global state.  bdrv_co_create() runs in a coroutine in the main
 * thread (the blockdev-create job's), without the graph lock; it yields
 * while the image is written, and bounces graph changes (opening and
 * closing helper nodes) to the main loop outside the coroutine.
 */
#ifndef BLOCKD_BLOCK_CREATE_H
#define BLOCKD_BLOCK_CREATE_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>

#include "blockd/compiler.h"
#include "blockd/error.h"

/*
 * Create an image from a QAPI BlockdevCreateOptions object:
 *
 *   {"driver": "file", "filename": str, "size": int,
 *    "preallocation": "off" | "falloc" | "full", "nocow": bool,
 *    "extent-size-hint": int}
 *       creates (or truncates) the file and sizes it.
 *
 *   {"driver": "qcow2", "file": <node name or blockdev options>, "size": int,
 *    "version": "v2" | "v3", "cluster-size": int, "refcount-bits": int,
 *    "backing-file": str, "backing-fmt": str, "lazy-refcounts": bool,
 *    "extended-l2": bool, "preallocation": "off" | "metadata",
 *    "compression-type": "zlib"}
 *       formats the node "file" (which must be writable and resizable:
 *       usually a "file" node created before) as an empty qcow2 image.
 *
 * Other drivers fail with "Driver does not support blockdev-create".
 * Arguments are checked with QEMU's messages (missing or unexpected
 * members, wrong types, invalid combinations).  Returns 0 or -errno with
 * @errp set.
 */
int coroutine_fn bdrv_co_create(json_object *options, Error **errp);

/* Can blockdev-create make images of @driver?  (Its BlockDriver has a
 * creation callback.) */
bool bdrv_can_create(const char *driver);

/*
 * Create image @filename of format @fmt and @size bytes, with @backing
 * (and @backing_fmt) in its header if not NULL, as qemu-img create does:
 * the file, then the format in it.  Called from the main loop, not in a
 * coroutine; the main loop runs while the image is written.  Errors with
 * QEMU's messages ("Unknown file format", "Backing file not supported for
 * file format", "Could not create").  0 or -errno.
 */
int bdrv_img_create(const char *filename, const char *fmt, const char *backing,
                    const char *backing_fmt, int64_t size, Error **errp);

/* The format of an image file as QEMU guesses it for the formats blockd
 * reads: "qcow2" if it starts with the qcow2 magic, else "raw".  Common. */
const char *bdrv_probe_format(const char *filename);

#endif /* BLOCKD_BLOCK_CREATE_H */
