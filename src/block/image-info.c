/*
 * image-info.c - what query-named-block-nodes shows of a node's image:
 * file name, format, sizes, the dirty and corrupt state, the backing file
 * the image names, and the backing chain below it.
 */
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/atomic.h"
#include "blockd/block-global-state.h"
#include "blockd/block-int.h"
#include "blockd/graph-lock.h"
#include "blockd/main-loop.h"

const char *bdrv_get_filename(BlockDriverState *bs, char *buf, size_t size)
{
    json_object *v;

    GLOBAL_STATE_CODE();
    graph_rdlock_main_loop();
    while (bs->file && !(bs->options && json_object_object_get_ex(bs->options, "filename", &v))) {
        bs = bs->file->bs;
    }
    graph_rdunlock_main_loop();
    if (bs->options && json_object_object_get_ex(bs->options, "filename", &v)) {
        return json_object_get_string(v);
    }
    if (bs->drv->bdrv_filename && bs->drv->bdrv_filename(bs)) {
        return bs->drv->bdrv_filename(bs);
    }
    snprintf(buf, size, "%s://", bs->drv->format_name);
    return buf;
}

static int64_t allocated_size(BlockDriverState *bs)
{
    BlockDriverState *file = NULL;

    if (bs->drv->bdrv_get_allocated_file_size) {
        return bs->drv->bdrv_get_allocated_file_size(bs);
    }
    graph_rdlock_main_loop();
    if (bs->file) {
        file = bs->file->bs;
    }
    graph_rdunlock_main_loop();
    return file ? allocated_size(file) : 0;
}

/* A relative backing file name is relative to the image's directory. */
static char *full_backing_name(const char *image, const char *backing)
{
    char *dir, *copy, *full;

    if (backing[0] == '/' || strstr(backing, "://") || image[0] == '\0') {
        return strdup(backing);
    }
    copy = strdup(image);
    dir = dirname(copy);
    if (asprintf(&full, "%s/%s", dir, backing) < 0) {
        abort();
    }
    free(copy);
    return full;
}

BlockDriverState *bdrv_file_bs(BlockDriverState *bs)
{
    BlockDriverState *file = NULL;

    GLOBAL_STATE_CODE();
    graph_rdlock_main_loop();
    if (bs->file) {
        file = bs->file->bs;
    }
    graph_rdunlock_main_loop();
    return file;
}

static bool child_is_inline(BlockDriverState *bs, bool backing)
{
    BdrvChild *c;
    bool inline_child;

    GLOBAL_STATE_CODE();
    graph_rdlock_main_loop();
    c = backing ? bs->backing : bs->file;
    inline_child = c && c->inherits;
    graph_rdunlock_main_loop();
    return inline_child;
}

bool bdrv_file_is_inline(BlockDriverState *bs)
{
    return child_is_inline(bs, false);
}

bool bdrv_backing_is_inline(BlockDriverState *bs)
{
    return child_is_inline(bs, true);
}

BlockDriverState *bdrv_backing_bs(BlockDriverState *bs)
{
    BlockDriverState *backing = NULL;

    GLOBAL_STATE_CODE();
    graph_rdlock_main_loop();
    if (bs->backing) {
        backing = bs->backing->bs;
    }
    graph_rdunlock_main_loop();
    return backing;
}

json_object *bdrv_image_info(BlockDriverState *bs)
{
    json_object *image = json_object_new_object();
    BlockDriverInfo bdi = { 0 };
    BlockDriverState *backing;
    char buf[64];
    const char *filename = bdrv_get_filename(bs, buf, sizeof(buf));
    int64_t actual = allocated_size(bs);

    GLOBAL_STATE_CODE();
    json_object_object_add(image, "filename", json_object_new_string(filename));
    json_object_object_add(image, "format", json_object_new_string(bs->drv->format_name));
    json_object_object_add(image, "virtual-size",
                           json_object_new_int64(atomic_read(&bs->total_bytes)));
    if (actual >= 0) {
        json_object_object_add(image, "actual-size", json_object_new_int64(actual));
    }
    if (bs->drv->bdrv_get_info && bs->drv->bdrv_get_info(bs, &bdi) == 0) {
        json_object_object_add(image, "dirty-flag", json_object_new_boolean(bdi.is_dirty));
        if (bdi.cluster_size) {
            json_object_object_add(image, "cluster-size", json_object_new_int64(bdi.cluster_size));
        }
    }
    if (bs->encrypted) {
        json_object_object_add(image, "encrypted", json_object_new_boolean(true));
    }
    if (bs->drv->bdrv_get_specific_info) {
        json_object_object_add(image, "format-specific", bs->drv->bdrv_get_specific_info(bs));
    }
    if (bs->drv->bdrv_snapshot_list) {
        json_object *snaps = bs->drv->bdrv_snapshot_list(bs);

        if (snaps && json_object_array_length(snaps) > 0) {
            json_object_object_add(image, "snapshots", snaps);
        } else {
            json_object_put(snaps);
        }
    }
    if (bdi.backing_file) {
        char *full = full_backing_name(filename, bdi.backing_file);
        json_object_object_add(image, "backing-filename", json_object_new_string(bdi.backing_file));
        if (bdi.backing_fmt) {
            json_object_object_add(image, "backing-filename-format",
                                   json_object_new_string(bdi.backing_fmt));
        }
        json_object_object_add(image, "full-backing-filename", json_object_new_string(full));
        free(full);
    }
    backing = bdrv_backing_bs(bs);
    if (backing) {
        json_object_object_add(image, "backing-image", bdrv_image_info(backing));
    }
    return image;
}
