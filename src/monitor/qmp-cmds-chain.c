/*
 * qmp-cmds-chain.c - commands that change backing chains: block-commit,
 * block-stream, change-backing-file and blockdev-snapshot-sync, with
 * qemu-storage-daemon's arguments, checks in its order, and messages.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/block-chain.h"
#include "blockd/block-create.h"
#include "blockd/block-global-state.h"
#include "blockd/block-io.h"
#include "blockd/chain-job.h"
#include "blockd/main-loop.h"
#include "blockd/monitor.h"
#include "blockd/options.h"
#include "monitor-internal.h"

static const char *const on_error_values[] = { "report", "ignore", "enospc", "stop", "auto",
                                               NULL };

#define CHAIN_JOB_FIELDS                                                                \
    { .name = "job-id", .type = SCHEMA_STR, .optional = true },                         \
    { .name = "device", .type = SCHEMA_STR },                                           \
    { .name = "base-node", .type = SCHEMA_STR, .optional = true },                      \
    { .name = "base", .type = SCHEMA_STR, .optional = true },                           \
    { .name = "backing-file", .type = SCHEMA_STR, .optional = true },                   \
    { .name = "speed", .type = SCHEMA_INT, .optional = true },                          \
    { .name = "on-error", .type = SCHEMA_ENUM, .optional = true,                        \
      .enum_values = on_error_values },                                                 \
    { .name = "filter-node-name", .type = SCHEMA_STR, .optional = true },               \
    { .name = "auto-finalize", .type = SCHEMA_BOOL, .optional = true },                 \
    { .name = "auto-dismiss", .type = SCHEMA_BOOL, .optional = true }

static const SchemaField commit_fields[] = {
    CHAIN_JOB_FIELDS,
    { .name = "top-node", .type = SCHEMA_STR, .optional = true },
    { .name = "top", .type = SCHEMA_STR, .optional = true },
    { 0 },
};
static const SchemaObject commit_args = { .name = "block-commit-arg", .fields = commit_fields };

static const SchemaField stream_fields[] = {
    CHAIN_JOB_FIELDS,
    { .name = "bottom", .type = SCHEMA_STR, .optional = true },
    { 0 },
};
static const SchemaObject stream_args = { .name = "block-stream-arg", .fields = stream_fields };

static const SchemaField change_backing_fields[] = {
    { .name = "device", .type = SCHEMA_STR },
    { .name = "image-node-name", .type = SCHEMA_STR },
    { .name = "backing-file", .type = SCHEMA_STR },
    { 0 },
};
static const SchemaObject change_backing_args = {
    .name = "change-backing-file-arg", .fields = change_backing_fields,
};

static const char *str_arg(json_object *args, const char *key)
{
    const char *v = NULL;

    opt_get_str(args, key, &v, NULL);
    return v;
}

/* A node by name, with QEMU's message for device-or-node look-ups. */
static BlockDriverState *lookup_node(const char *device, const char *node, Error **errp)
{
    const char *name = node ? node : device;
    BlockDriverState *bs = bdrv_find_node(name);

    if (!bs) {
        error_setg(errp, "Cannot find device='%s' nor node-name='%s'", device ? device : "",
                   name);
    }
    return bs;
}

/* What both jobs take alike. */
static bool parse_job_common(json_object *args, const char **job_id, int64_t *speed,
                             BlockdevOnError *on_error, const char **filter,
                             bool *auto_finalize, bool *auto_dismiss, Error **errp)
{
    const char *on_err = NULL;

    *auto_finalize = *auto_dismiss = true;
    *speed = 0;
    return opt_get_str(args, "job-id", job_id, errp) &&
           opt_get_int(args, "speed", speed, errp) &&
           opt_get_str(args, "on-error", &on_err, errp) &&
           opt_get_str(args, "filter-node-name", filter, errp) &&
           opt_get_bool(args, "auto-finalize", auto_finalize, errp) &&
           opt_get_bool(args, "auto-dismiss", auto_dismiss, errp) &&
           blockdev_on_error_parse("on-error", on_err, on_error, errp);
}

/* ---- block-commit ------------------------------------------------------------------- */

/* libvirt probes for the command with a missing device and expects
 * DeviceNotFound before any other error. */
static BlockDriverState *commit_device(const char *device, Error **errp)
{
    BlockDriverState *bs = bdrv_find_node(device);

    if (!bs) {
        error_set(errp, ERROR_CLASS_DEVICE_NOT_FOUND, "Device '%s' not found", device);
        return NULL;
    }
    if (!bdrv_is_root_node(bs)) {
        error_setg(errp, "Need a root block node");
        return NULL;
    }
    return bs;
}

static bool commit_find_top(json_object *args, CommitArgs *a, Error **errp)
{
    const char *top_node = str_arg(args, "top-node"), *top = str_arg(args, "top");

    a->top = a->active;
    if (top_node && top) {
        error_setg(errp, "'top-node' and 'top' are mutually exclusive");
        return false;
    }
    if (top_node) {
        if (!(a->top = lookup_node(NULL, top_node, errp))) {
            return false;
        }
        if (!bdrv_chain_contains(a->active, a->top)) {
            error_setg(errp, "'%s' is not in this backing file chain", top_node);
            return false;
        }
    } else if (top) {
        char buf[4096];

        if (strcmp(bdrv_get_filename(a->active, buf, sizeof(buf)), top) != 0) {
            a->top = bdrv_find_backing_image(a->active, top);
        }
        if (!a->top) {
            error_setg(errp, "Top image file %s not found", top);
            return false;
        }
    }
    return true;
}

static bool commit_find_base(json_object *args, CommitArgs *a, Error **errp)
{
    const char *base_node = str_arg(args, "base-node"), *base = str_arg(args, "base");

    if (base_node && base) {
        error_setg(errp, "'base-node' and 'base' are mutually exclusive");
        return false;
    }
    if (base_node) {
        if (!(a->base = lookup_node(NULL, base_node, errp))) {
            return false;
        }
        if (!bdrv_chain_contains(a->top, a->base)) {
            error_setg(errp, "'%s' is not in this backing file chain", base_node);
            return false;
        }
    } else if (base) {
        if (!(a->base = bdrv_find_backing_image(a->top, base))) {
            error_setg(errp, "Can't find '%s' in the backing chain", base);
            return false;
        }
    } else {
        a->base = bdrv_find_base(a->top);
    }
    return true;
}

/* Does anyone but the chain itself write @top? */
static bool has_writer(BlockDriverState *top)
{
    return (top->perm & BLK_PERM_WRITE) != 0;
}

static json_object *qmp_block_commit(json_object *args, Error **errp)
{
    CommitArgs a = { 0 };
    bool active;

    GLOBAL_STATE_CODE();
    if (!parse_job_common(args, &a.job_id, &a.speed, &a.on_error, &a.filter_node_name,
                          &a.auto_finalize, &a.auto_dismiss, errp) ||
        !(a.active = commit_device(str_arg(args, "device"), errp)) ||
        bdrv_op_is_blocked(a.active, errp) ||
        !commit_find_top(args, &a, errp) || !commit_find_base(args, &a, errp)) {
        return NULL;
    }
    for (BlockDriverState *n = a.top; n && n != bdrv_filter_or_cow_bs(a.base);
         n = bdrv_filter_or_cow_bs(n)) {
        if (bdrv_op_is_blocked(n, errp)) {
            return NULL;
        }
    }
    if (a.top == a.base) {
        error_setg(errp, "cannot commit an image into itself");
        return NULL;
    }
    a.backing_file = str_arg(args, "backing-file");
    active = a.top == a.active || has_writer(a.top);
    if (active && a.backing_file) {
        error_setg(errp, a.top == a.active
                   ? "'backing-file' specified, but 'top' is the active layer"
                   : "'backing-file' specified, but 'top' has a writer on it");
        return NULL;
    }
    if (active) {
        return commit_active_start(&a, errp) ? json_object_new_object() : NULL;
    }
    if (bdrv_op_is_blocked(bdrv_find_overlay(a.active, a.top), errp)) {
        return NULL;
    }
    return commit_start(&a, errp) ? json_object_new_object() : NULL;
}

/* ---- block-stream ------------------------------------------------------------------- */

static bool stream_exclusive(json_object *args, Error **errp)
{
    const char *base = str_arg(args, "base"), *base_node = str_arg(args, "base-node");
    const char *bottom = str_arg(args, "bottom");

    if (base && base_node) {
        error_setg(errp, "'base' and 'base-node' cannot be specified at the same time");
    } else if (base && bottom) {
        error_setg(errp, "'base' and 'bottom' cannot be specified at the same time");
    } else if (bottom && base_node) {
        error_setg(errp, "'bottom' and 'base-node' cannot be specified at the same time");
    } else {
        return true;
    }
    return false;
}

static bool stream_find_nodes(json_object *args, StreamArgs *a, const char *device,
                              Error **errp)
{
    const char *base = str_arg(args, "base"), *base_node = str_arg(args, "base-node");
    const char *bottom = str_arg(args, "bottom");

    if (base && !(a->base = bdrv_find_backing_image(a->bs, base))) {
        error_setg(errp, "Can't find '%s' in the backing chain", base);
        return false;
    }
    if (base_node) {
        if (!(a->base = lookup_node(NULL, base_node, errp))) {
            return false;
        }
        if (a->bs == a->base || !bdrv_chain_contains(a->bs, a->base)) {
            error_setg(errp, "Node '%s' is not a backing image of '%s'", base_node, device);
            return false;
        }
    }
    if (bottom) {
        if (!(a->bottom = lookup_node(NULL, bottom, errp))) {
            return false;
        }
        if (a->bottom->drv->is_filter) {
            error_setg(errp, "Node '%s' is a filter, use a non-filter node as 'bottom'",
                       bottom);
            return false;
        }
        if (!bdrv_chain_contains(a->bs, a->bottom)) {
            error_setg(errp, "Node '%s' is not in a chain starting from '%s'", bottom, device);
            return false;
        }
    }
    return true;
}

static json_object *qmp_block_stream(json_object *args, Error **errp)
{
    const char *device = str_arg(args, "device");
    BlockDriverState *end;
    StreamArgs a = { 0 };

    GLOBAL_STATE_CODE();
    if (!parse_job_common(args, &a.job_id, &a.speed, &a.on_error, &a.filter_node_name,
                          &a.auto_finalize, &a.auto_dismiss, errp) ||
        !stream_exclusive(args, errp) ||
        !(a.bs = lookup_node(device, NULL, errp)) ||
        !stream_find_nodes(args, &a, device, errp)) {
        return NULL;
    }
    end = a.bottom ? bdrv_filter_or_cow_bs(a.bottom) : a.base;
    for (BlockDriverState *n = a.bs; n && n != end; n = bdrv_filter_or_cow_bs(n)) {
        if (bdrv_op_is_blocked(n, errp)) {
            return NULL;
        }
    }
    a.backing_file = str_arg(args, "backing-file");
    if (!a.base && a.backing_file) {
        error_setg(errp, "backing file specified, but streaming the entire chain");
        return NULL;
    }
    return stream_start(&a, errp) ? json_object_new_object() : NULL;
}

/* ---- change-backing-file ------------------------------------------------------------ */

static json_object *qmp_change_backing_file(json_object *args, Error **errp)
{
    const char *device = str_arg(args, "device"), *file = str_arg(args, "backing-file");
    BlockDriverState *bs, *image, *below;
    bool ro;
    int ret;

    GLOBAL_STATE_CODE();
    if (!(bs = lookup_node(device, NULL, errp))) {
        return NULL;
    }
    if (!bdrv_is_root_node(bs)) {
        error_setg(errp, "Need a root block node");
        return NULL;
    }
    if (!(image = lookup_node(NULL, str_arg(args, "image-node-name"), errp))) {
        return NULL;
    }
    if (bdrv_find_base(image) == image) {
        error_setg(errp, "not allowing backing file change on an image without a backing "
                   "file");
        return NULL;
    }
    if (bdrv_op_is_blocked(bs, errp)) {
        return NULL;
    }
    if (!bdrv_chain_contains(bs, image)) {
        error_setg(errp, "'%s' and image file are not in the same chain", device);
        return NULL;
    }
    ro = image->read_only;
    if (ro && bdrv_reopen_set_read_only(image, false, errp) < 0) {
        return NULL;
    }
    below = bdrv_filter_or_cow_bs(image);
    ret = bdrv_change_backing_file(image, file, below ? bdrv_backing_format(below) : NULL,
                                   NULL);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Could not change backing file to '%s'", file);
    }
    if (ro) {
        bdrv_reopen_set_read_only(image, true, NULL);
    }
    return ret < 0 ? NULL : json_object_new_object();
}

/* ---- blockdev-snapshot-sync -------------------------------------------------------- */

static const char *const new_image_modes[] = { "existing", "absolute-paths", NULL };
static const SchemaField snapshot_sync_fields[] = {
    { .name = "device", .type = SCHEMA_STR, .optional = true },
    { .name = "node-name", .type = SCHEMA_STR, .optional = true },
    { .name = "snapshot-file", .type = SCHEMA_STR },
    { .name = "snapshot-node-name", .type = SCHEMA_STR, .optional = true },
    { .name = "format", .type = SCHEMA_STR, .optional = true },
    { .name = "mode", .type = SCHEMA_ENUM, .optional = true, .enum_values = new_image_modes },
    { 0 },
};
const SchemaObject qapi_snapshot_sync_args = {
    .name = "BlockdevSnapshotSync", .fields = snapshot_sync_fields,
};

/* The overlay opened as qemu-storage-daemon opens it: without its backing
 * file (the node becomes that), read-only and discard as the node. */
static BlockDriverState *open_overlay(BlockDriverState *node, const char *file,
                                      const char *fmt, const char *name, Error **errp)
{
    json_object *o = json_object_new_object(), *f = json_object_new_object();
    BlockDriverState *bs;

    json_object_object_add(f, "driver", json_object_new_string("file"));
    json_object_object_add(f, "filename", json_object_new_string(file));
    json_object_object_add(o, "driver", json_object_new_string(fmt));
    if (name) {
        json_object_object_add(o, "node-name", json_object_new_string(name));
    }
    json_object_object_add(o, "file", f);
    json_object_object_add(o, "backing", NULL);
    json_object_object_add(o, "read-only", json_object_new_boolean(node->read_only));
    if (node->open_flags & BDRV_O_UNMAP) {
        json_object_object_add(o, "discard", json_object_new_string("unmap"));
    }
    bs = bdrv_open_options(o, errp);
    json_object_put(o);
    return bs;
}

BlockDriverState *qmp_snapshot_sync_open(json_object *args, BlockDriverState **node,
                                         Error **errp)
{
    const char *device = str_arg(args, "device"), *node_name = str_arg(args, "node-name");
    const char *file = str_arg(args, "snapshot-file");
    const char *name = str_arg(args, "snapshot-node-name");
    const char *fmt = str_arg(args, "format"), *mode = str_arg(args, "mode");
    char buf[4096];

    GLOBAL_STATE_CODE();
    /* qemu-storage-daemon has no named devices: "device" never matches. */
    *node = node_name ? bdrv_find_node(node_name) : NULL;
    if (!*node) {
        error_setg(errp, "Cannot find device='%s' nor node-name='%s'", device ? device : "",
                   node_name ? node_name : "");
        return NULL;
    }
    if (bdrv_snapshot_check_node(*node, errp) < 0) {
        return NULL;
    }
    if (!name) {
        error_setg(errp, "New overlay node-name missing");
        return NULL;
    }
    if (bdrv_find_node(name)) {
        error_setg(errp, "New overlay node-name already in use");
        return NULL;
    }
    fmt = fmt ? fmt : "qcow2";
    if ((!mode || strcmp(mode, "existing")) &&
        bdrv_img_create(file, fmt, bdrv_get_filename(*node, buf, sizeof(buf)),
                        (*node)->drv->format_name, bdrv_getlength(*node), errp) < 0) {
        return NULL;
    }
    return open_overlay(*node, file, fmt, name, errp);
}

void qmp_snapshot_commit(BlockDriverState *node, BlockDriverState *overlay, bool sync)
{
    GLOBAL_STATE_CODE();
    /* The node below a snapshot is not written any more. */
    bdrv_reopen_set_read_only(node, true, NULL);
    if (sync) {
        bdrv_unref(overlay);            /* the graph holds it now */
    }
}

static json_object *qmp_blockdev_snapshot_sync(json_object *args, Error **errp)
{
    BlockDriverState *node, *overlay;

    GLOBAL_STATE_CODE();
    overlay = qmp_snapshot_sync_open(args, &node, errp);
    if (!overlay) {
        return NULL;
    }
    if (bdrv_snapshot_append(node, overlay, errp) < 0) {
        bdrv_unref(overlay);
        return NULL;
    }
    qmp_snapshot_commit(node, overlay, true);
    return json_object_new_object();
}

/* ---- Internal snapshots ------------------------------------------------------------ */

static const SchemaField internal_fields[] = {
    { .name = "device", .type = SCHEMA_STR },
    { .name = "name", .type = SCHEMA_STR },
    { 0 },
};
const SchemaObject qapi_snapshot_internal_args = {
    .name = "BlockdevSnapshotInternal", .fields = internal_fields,
};
static const SchemaField delete_internal_fields[] = {
    { .name = "device", .type = SCHEMA_STR },
    { .name = "id", .type = SCHEMA_STR, .optional = true },
    { .name = "name", .type = SCHEMA_STR, .optional = true },
    { 0 },
};
static const SchemaObject delete_internal_args = {
    .name = "blockdev-snapshot-delete-internal-sync-arg", .fields = delete_internal_fields,
};

/* The root node @device whose format keeps internal snapshots. */
static BlockDriverState *internal_snapshot_node(const char *device, Error **errp)
{
    BlockDriverState *bs = lookup_node(device, device, errp);

    if (!bs) {
        return NULL;
    }
    if (!bdrv_is_root_node(bs)) {
        error_setg(errp, "Need a root block node");
        return NULL;
    }
    if (!bdrv_can_snapshot_internal(bs)) {
        error_setg(errp, "Block format '%s' used by device '%s' does not support internal "
                   "snapshots", bs->drv->format_name, device);
        return NULL;
    }
    return bdrv_op_is_blocked(bs, errp) ? NULL : bs;
}

BlockDriverState *qmp_snapshot_internal_take(json_object *args, Error **errp)
{
    const char *device = str_arg(args, "device"), *name = str_arg(args, "name");
    BlockDriverState *bs;
    int ret;

    GLOBAL_STATE_CODE();
    if (!(bs = internal_snapshot_node(device, errp))) {
        return NULL;
    }
    if (bs->read_only) {
        error_setg(errp, "Device '%s' is read only", device);
        return NULL;
    }
    if (!*name) {
        error_setg(errp, "Name is empty");
        return NULL;
    }
    ret = bdrv_snapshot_internal_create(bs, name);
    if (ret == -ENAMETOOLONG) {
        error_setg(errp, "Snapshot name '%.32s...' is too long (at most 1023 bytes)", name);
    } else if (ret == -EEXIST) {
        error_setg(errp, "Snapshot with name '%s' already exists on device '%s'", name, device);
    } else if (ret == -ENOTSUP) {
        /* The image keeps no snapshots at all (qcow2 with a data file): as
         * QEMU, the look-up for an existing name is what fails. */
        error_setg_errno(errp, -ret, "Failed to get a snapshot list");
    } else if (ret < 0) {
        error_setg_errno(errp, -ret, "Failed to create snapshot '%s' on device '%s'", name,
                         device);
    }
    return ret < 0 ? NULL : bs;
}

static json_object *qmp_snapshot_internal_sync(json_object *args, Error **errp)
{
    return qmp_snapshot_internal_take(args, errp) ? json_object_new_object() : NULL;
}

static json_object *qmp_snapshot_delete_internal_sync(json_object *args, Error **errp)
{
    const char *device = str_arg(args, "device");
    const char *id = str_arg(args, "id"), *name = str_arg(args, "name");
    json_object *info = NULL;
    BlockDriverState *bs;
    int ret;

    GLOBAL_STATE_CODE();
    if (!(bs = internal_snapshot_node(device, errp))) {
        return NULL;
    }
    if (!id && !name) {
        error_setg(errp, "Name or id must be provided");
        return NULL;
    }
    if (bs->read_only) {
        error_setg(errp, "Device '%s' is read only", device);
        return NULL;
    }
    ret = bdrv_snapshot_internal_delete(bs, id, name, &info);
    if (ret == -ENOENT) {
        error_setg(errp, "Snapshot with id '%s' and name '%s' does not exist on device '%s'",
                   id ? id : "null", name ? name : "null", device);
    } else if (ret < 0) {
        error_setg_errno(errp, -ret, "Failed to delete snapshot");
    }
    return ret < 0 ? NULL : info;
}

const QmpCommand qmp_chain_commands[] = {
    { .name = "blockdev-snapshot-internal-sync", .fn = qmp_snapshot_internal_sync,
      .args = &qapi_snapshot_internal_args },
    { .name = "blockdev-snapshot-delete-internal-sync",
      .fn = qmp_snapshot_delete_internal_sync, .args = &delete_internal_args },
    { .name = "blockdev-snapshot-sync", .fn = qmp_blockdev_snapshot_sync,
      .args = &qapi_snapshot_sync_args },
    { .name = "block-commit", .fn = qmp_block_commit, .args = &commit_args },
    { .name = "block-stream", .fn = qmp_block_stream, .args = &stream_args },
    { .name = "change-backing-file", .fn = qmp_change_backing_file,
      .args = &change_backing_args },
    { 0 },
};
