/*
 * qcow2-data-file.c - external data files (incompatible feature bit 2).
 *
 * The image's metadata stays in the file child; guest data lives in the
 * data-file child, every cluster at its own guest offset.  Data clusters
 * are therefore never refcounted, never shared (no internal snapshots, no
 * compressed clusters) and never moved: allocating one only writes its L2
 * entry, with the COPIED flag (which is how offset 0 reads as allocated).
 *
 * With data-file-raw (autoclear bit 1) the data file must stay a raw
 * image of the disk: zeroes are written into it, not only flagged, and
 * discarded ranges are discarded there too.  blockd keeps the bit set.
 *
 * The header names the data file (extension 0x44415441); the data-file
 * option overrides it.  A relative name is opened as it is, from the
 * daemon's working directory (not the image's, unlike a backing file's):
 * that is where QEMU's tools look for it and create it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/block-global-state.h"
#include "blockd/block-io.h"
#include "blockd/main-loop.h"
#include "qcow2.h"

int qcow2_open_data_file(BlockDriverState *bs, json_object *options, Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    json_object *v = NULL, *o;
    BlockDriverState *child;

    GLOBAL_STATE_CODE();
    if (json_object_object_get_ex(options, "data-file", &v) &&
        !json_object_is_type(v, json_type_null)) {
        if (!qcow2_has_data_file(s)) {
            error_setg(errp, "'data-file' can only be set for images with an external "
                       "data file");
            return -EINVAL;
        }
        s->data_file = bdrv_open_child(bs, options, "data-file", BDRV_CHILD_DATA, true, errp);
        return s->data_file ? 0 : -EINVAL;
    }
    if (s->data_file_raw && !qcow2_has_data_file(s)) {
        error_setg(errp, "data-file-raw requires a data file");
        return -EINVAL;
    }
    if (!qcow2_has_data_file(s)) {
        return 0;
    }
    if (!s->data_file_name) {
        error_setg(errp, "Missing data-file option: the image names no external data file");
        return -EINVAL;
    }
    o = json_object_new_object();
    json_object_object_add(o, "driver", json_object_new_string("file"));
    json_object_object_add(o, "filename", json_object_new_string(s->data_file_name));
    bdrv_inherit_options(bs, o);
    child = bdrv_open_options(o, errp);
    json_object_put(o);
    if (!child) {
        return -EINVAL;
    }
    s->data_file = bdrv_attach_child(bs, child, "data-file", BDRV_CHILD_DATA, errp);
    bdrv_unref(child);
    if (s->data_file) {
        s->data_file->inherits = true;   /* opened by us, from the header */
    }
    return s->data_file ? 0 : -EINVAL;
}

int coroutine_fn qcow2_data_file_clear(BDRVQcow2State *s, int64_t offset, int64_t bytes,
                                       bool keep)
{
    int64_t end = offset + bytes < s->size ? offset + bytes : s->size;

    if (!s->data_file || end <= offset) {
        return 0;
    }
    if (s->data_file_raw) {
        /* The raw image must read as the disk: zeroes, really written. */
        return bdrv_co_pwrite_zeroes(s->data_file, offset, end - offset,
                                     keep ? 0 : BDRV_REQ_MAY_UNMAP);
    }
    /* Only the zero flag reads as zeroes; dropped clusters' data may go
     * (discard is advisory: its failure changes nothing). */
    if (!keep) {
        bdrv_co_pdiscard(s->data_file, offset, end - offset);
    }
    return 0;
}
