/*
 * qmp-cmds-blockjob.c - commands that start jobs: blockdev-mirror,
 * blockdev-backup, transaction (blockdev-backup and abort actions,
 * completion-mode individual or grouped).
 */
#include <string.h>

#include "blockd/block-chain.h"
#include "blockd/block-common.h"
#include "blockd/block-int.h"
#include "blockd/block-io.h"

#include "blockd/block-create.h"
#include "blockd/block-global-state.h"
#include "blockd/dirty-bitmap.h"
#include "blockd/create-job.h"
#include "blockd/main-loop.h"
#include "blockd/mirror.h"
#include "blockd/monitor.h"
#include "blockd/options.h"
#include "monitor-internal.h"
#include "qapi-schemas.h"

static const char *const bitmap_modes[] = { "on-success", "never", "always", NULL };
static const char *const sync_modes[] = { "full", "top", "none", "incremental", "bitmap",
                                          NULL };
static const char *const on_error_values[] = { "report", "ignore", "enospc", "stop", "auto",
                                               NULL };
static const char *const copy_modes[] = { "background", "write-blocking", NULL };

#define COMMON_JOB_FIELDS                                                               \
    { .name = "job-id", .type = SCHEMA_STR, .optional = true },                         \
    { .name = "device", .type = SCHEMA_STR },                                           \
    { .name = "target", .type = SCHEMA_STR },                                           \
    { .name = "sync", .type = SCHEMA_ENUM, .enum_values = sync_modes },                 \
    { .name = "speed", .type = SCHEMA_INT, .optional = true },                          \
    { .name = "on-source-error", .type = SCHEMA_ENUM, .optional = true,                 \
      .enum_values = on_error_values },                                                 \
    { .name = "on-target-error", .type = SCHEMA_ENUM, .optional = true,                 \
      .enum_values = on_error_values },                                                 \
    { .name = "filter-node-name", .type = SCHEMA_STR, .optional = true },               \
    { .name = "auto-finalize", .type = SCHEMA_BOOL, .optional = true },                 \
    { .name = "auto-dismiss", .type = SCHEMA_BOOL, .optional = true }

static const SchemaField mirror_fields[] = {
    COMMON_JOB_FIELDS,
    { .name = "replaces", .type = SCHEMA_STR, .optional = true },
    { .name = "granularity", .type = SCHEMA_INT, .optional = true },
    { .name = "buf-size", .type = SCHEMA_INT, .optional = true },
    /* No "unmap": qemu-storage-daemon's blockdev-mirror has none (the
     * target is unmapped where the source has zeroes; drive-mirror's
     * "unmap" is not a blockdev-mirror member). */
    { .name = "copy-mode", .type = SCHEMA_ENUM, .optional = true, .enum_values = copy_modes },
    { 0 },
};
static const SchemaObject mirror_args = { .name = "blockdev-mirror-arg", .fields = mirror_fields };

static const SchemaField backup_perf_fields[] = {
    { .name = "use-copy-range", .type = SCHEMA_BOOL, .optional = true },
    { .name = "max-workers", .type = SCHEMA_INT, .optional = true },
    { .name = "max-chunk", .type = SCHEMA_INT, .optional = true },
    { 0 },
};
static const SchemaObject backup_perf = { .name = "BackupPerf", .fields = backup_perf_fields };

static const SchemaField backup_fields[] = {
    COMMON_JOB_FIELDS,
    { .name = "compress", .type = SCHEMA_BOOL, .optional = true },
    { .name = "bitmap", .type = SCHEMA_STR, .optional = true },
    { .name = "bitmap-mode", .type = SCHEMA_ENUM, .optional = true, .enum_values = bitmap_modes },
    { .name = "discard-source", .type = SCHEMA_BOOL, .optional = true },
    { .name = "x-perf", .type = SCHEMA_OBJECT, .optional = true, .object = &backup_perf },
    { 0 },
};
static const SchemaObject backup_args = { .name = "BlockdevBackup", .fields = backup_fields };

/* The actions blockd carries out; QEMU's others are refused by the schema
 * ("Parameter 'type' does not accept value ..."), so query-qmp-schema
 * lists exactly these. */
static const char *const action_types[] = {
    "abort", "block-dirty-bitmap-add", "block-dirty-bitmap-clear", "block-dirty-bitmap-disable",
    "block-dirty-bitmap-enable", "block-dirty-bitmap-merge", "block-dirty-bitmap-remove",
    "blockdev-backup", "blockdev-snapshot", "blockdev-snapshot-internal-sync",
    "blockdev-snapshot-sync", "drive-backup", NULL,
};
static const SchemaField action_fields[] = {
    { .name = "type", .type = SCHEMA_ENUM, .enum_values = action_types },
    { 0 },
};
static const SchemaObject abort_obj = { .name = "Abort" };
static const SchemaField abort_wrapper_fields[] = {
    { .name = "data", .type = SCHEMA_OBJECT, .object = &abort_obj },
    { 0 },
};
static const SchemaField backup_wrapper_fields[] = {
    { .name = "data", .type = SCHEMA_OBJECT, .object = &backup_args },
    { 0 },
};
static const SchemaField snapshot_wrapper_fields[] = {
    { .name = "data", .type = SCHEMA_OBJECT, .object = &qapi_blockdev_snapshot_args },
    { 0 },
};
static const SchemaField snapshot_sync_wrapper_fields[] = {
    { .name = "data", .type = SCHEMA_OBJECT, .object = &qapi_snapshot_sync_args },
    { 0 },
};
static const SchemaObject drive_backup_args;   /* below, with the command */
static const SchemaField drive_backup_wrapper_fields[] = {
    { .name = "data", .type = SCHEMA_OBJECT, .object = &drive_backup_args },
    { 0 },
};
static const SchemaField snapshot_internal_wrapper_fields[] = {
    { .name = "data", .type = SCHEMA_OBJECT, .object = &qapi_snapshot_internal_args },
    { 0 },
};
#define WRAPPER(var, obj)                                                    \
    static const SchemaField var[] = {                                       \
        { .name = "data", .type = SCHEMA_OBJECT, .object = &obj }, { 0 },    \
    }
WRAPPER(bitmap_wrapper_fields, qapi_block_dirty_bitmap);
WRAPPER(bitmap_add_wrapper_fields, qapi_block_dirty_bitmap_add);
WRAPPER(bitmap_merge_wrapper_fields, qapi_block_dirty_bitmap_merge);
static const SchemaObject bitmap_wrapper = {
    .name = "BlockDirtyBitmapWrapper", .fields = bitmap_wrapper_fields,
};
static const SchemaVariant action_variants[] = {
    { "block-dirty-bitmap-add", &(const SchemaObject){ .name = "BlockDirtyBitmapAddWrapper",
                                                       .fields = bitmap_add_wrapper_fields } },
    { "block-dirty-bitmap-merge", &(const SchemaObject){ .name = "BlockDirtyBitmapMergeWrapper",
                                                         .fields = bitmap_merge_wrapper_fields } },
    { "block-dirty-bitmap-remove", &bitmap_wrapper },
    { "block-dirty-bitmap-clear", &bitmap_wrapper },
    { "block-dirty-bitmap-enable", &bitmap_wrapper },
    { "block-dirty-bitmap-disable", &bitmap_wrapper },
    { "blockdev-snapshot-internal-sync",
      &(const SchemaObject){ .name = "BlockdevSnapshotInternalWrapper",
                             .fields = snapshot_internal_wrapper_fields } },
    { "drive-backup", &(const SchemaObject){ .name = "DriveBackupWrapper",
                                             .fields = drive_backup_wrapper_fields } },
    { "blockdev-snapshot-sync", &(const SchemaObject){ .name = "BlockdevSnapshotSyncWrapper",
                                                       .fields = snapshot_sync_wrapper_fields } },
    { "blockdev-snapshot", &(const SchemaObject){ .name = "BlockdevSnapshotWrapper",
                                                  .fields = snapshot_wrapper_fields } },
    { "abort", &(const SchemaObject){ .name = "AbortWrapper", .fields = abort_wrapper_fields } },
    { "blockdev-backup", &(const SchemaObject){ .name = "BlockdevBackupWrapper",
                                                .fields = backup_wrapper_fields } },
    { NULL, NULL },
};
static const SchemaObject action_obj = {
    .name = "TransactionAction", .fields = action_fields,
    .discriminator = "type", .variants = action_variants,
};
static const SchemaField action_elem = { .type = SCHEMA_OBJECT, .object = &action_obj };
static const char *const completion_modes[] = { "individual", "grouped", NULL };
static const SchemaField properties_fields[] = {
    { .name = "completion-mode", .type = SCHEMA_ENUM, .optional = true,
      .enum_values = completion_modes },
    { 0 },
};
static const SchemaObject properties_obj = {
    .name = "TransactionProperties", .fields = properties_fields,
};
static const SchemaField transaction_fields[] = {
    { .name = "actions", .type = SCHEMA_LIST, .elem = &action_elem },
    { .name = "properties", .type = SCHEMA_OBJECT, .optional = true, .object = &properties_obj },
    { 0 },
};
static const SchemaObject transaction_args = {
    .name = "transaction-arg", .fields = transaction_fields,
};

/* A node by name, with QEMU's message for device-or-node look-ups. */
static BlockDriverState *lookup_node(const char *name, Error **errp)
{
    BlockDriverState *bs = bdrv_find_node(name);

    if (!bs) {
        error_setg(errp, "Cannot find device='%s' nor node-name='%s'", name, name);
    }
    return bs;
}

/* "bitmap" and "bitmap-mode" of a backup with @sync, in QEMU's order of
 * checks; "incremental" becomes "bitmap" with "on-success". */
static bool backup_parse_bitmap(json_object *args, MirrorArgs *a, const char *sync,
                                Error **errp)
{
    const char *name = NULL;
    int mode = -1;
    json_object *v;

    opt_get_str(args, "bitmap", &name, NULL);
    if (json_object_object_get_ex(args, "bitmap-mode", &v) &&
        !opt_parse_enum("bitmap-mode", json_object_get_string(v), bitmap_modes, &mode, errp)) {
        return false;
    }
    if (a->sync == MIRROR_SYNC_BITMAP && !name) {
        error_setg(errp, "must provide a valid bitmap name for '%s' sync mode", sync);
        return false;
    }
    if (!strcmp(sync, "incremental")) {
        if (mode >= 0 && mode != BITMAP_SYNC_ON_SUCCESS) {
            error_setg(errp, "Bitmap sync mode must be 'on-success' when using sync mode "
                       "'incremental'");
            return false;
        }
        mode = BITMAP_SYNC_ON_SUCCESS;
    }
    if (!name) {
        if (mode >= 0) {
            error_setg(errp, "Cannot specify bitmap sync mode without a bitmap");
            return false;
        }
        return true;
    }
    a->bitmap = bdrv_dirty_bitmap_find(a->source, name);
    if (!a->bitmap) {
        error_setg(errp, "Bitmap '%s' could not be found", name);
        return false;
    }
    if (mode < 0) {
        error_setg(errp, "Bitmap sync mode must be given when providing a bitmap");
        return false;
    }
    /* A bitmap the job will change must be writable. */
    if (!dirty_bitmap_check(a->bitmap, mode == BITMAP_SYNC_NEVER ? DIRTY_BITMAP_CHECK_ALLOW_RO
                                                                : DIRTY_BITMAP_CHECK_DEFAULT,
                            errp)) {
        return false;
    }
    if (a->sync == MIRROR_SYNC_NONE) {
        error_setg(errp, "sync mode '%s' does not produce meaningful bitmap outputs", sync);
        return false;
    }
    if (mode == BITMAP_SYNC_NEVER && a->sync != MIRROR_SYNC_BITMAP) {
        error_setg(errp, "Bitmap sync mode 'never' has no meaningful effect when combined "
                   "with sync mode '%s'", sync);
        return false;
    }
    a->bitmap_mode = mode;
    return true;
}

/* The arguments both job kinds share; "target" names a node unless
 * @target_is_file (the drive-* commands). */
static bool parse_common(json_object *args, MirrorArgs *a, bool target_is_file, bool backup,
                         Error **errp)
{
    const char *device = NULL, *target = NULL, *sync = "full";
    const char *on_src = NULL, *on_tgt = NULL;

    memset(a, 0, sizeof(*a));
    a->auto_finalize = a->auto_dismiss = true;
    if (!opt_get_str(args, "job-id", &a->job_id, errp) ||
        !opt_get_str(args, "device", &device, errp) ||
        !opt_get_str(args, "target", &target, errp) ||
        !opt_get_str(args, "sync", &sync, errp) ||
        !opt_get_int(args, "speed", &a->speed, errp) ||
        !opt_get_str(args, "on-source-error", &on_src, errp) ||
        !opt_get_str(args, "on-target-error", &on_tgt, errp) ||
        !opt_get_str(args, "filter-node-name", &a->filter_node_name, errp) ||
        !opt_get_bool(args, "auto-finalize", &a->auto_finalize, errp) ||
        !opt_get_bool(args, "auto-dismiss", &a->auto_dismiss, errp)) {
        return false;
    }
    if (!strcmp(sync, "incremental") || !strcmp(sync, "bitmap")) {
        if (!backup) {
            error_setg(errp, "Sync mode '%s' not supported", sync);
            return false;
        }
        a->sync = MIRROR_SYNC_BITMAP;
    }
    /* drive-*: the job checks it, after the image is made, as QEMU does. */
    if (a->speed < 0 && !target_is_file) {
        error_setg(errp, "Parameter 'speed' expects a non-negative value");
        return false;
    }
    if ((a->sync != MIRROR_SYNC_BITMAP && !mirror_parse_sync(sync, &a->sync, errp)) ||
        !blockdev_on_error_parse("on-source-error", on_src, &a->on_source_error, errp) ||
        !blockdev_on_error_parse("on-target-error", on_tgt, &a->on_target_error, errp)) {
        return false;
    }
    a->source = lookup_node(device, errp);
    if (!a->source) {
        return false;
    }
    /* A job works on what users see: the top of a chain. */
    if (!bdrv_is_root_node(a->source)) {
        error_setg(errp, "Need a root block node");
        return false;
    }
    if (backup && !backup_parse_bitmap(args, a, sync, errp)) {
        return false;
    }
    if (target_is_file) {
        return true;
    }
    a->target = lookup_node(target, errp);
    return a->target != NULL;
}

static json_object *qmp_blockdev_mirror(json_object *args, Error **errp)
{
    const char *replaces = NULL, *copy_mode = "background";
    MirrorArgs a;

    GLOBAL_STATE_CODE();
    if (!parse_common(args, &a, false, false, errp) ||
        !opt_get_str(args, "replaces", &replaces, errp) ||
        !opt_get_int(args, "granularity", &a.granularity, errp) ||
        !opt_get_int(args, "buf-size", &a.buf_size, errp) ||
        !opt_get_str(args, "copy-mode", &copy_mode, errp) ||
        !mirror_parse_copy_mode(copy_mode, &a.write_blocking, errp)) {
        return NULL;
    }
    if (replaces && !(a.to_replace = lookup_node(replaces, errp))) {
        return NULL;
    }
    return mirror_start(&a, errp) ? json_object_new_object() : NULL;
}

/* x-perf: how many copies run at once, how large each is. */
static bool backup_parse_perf(json_object *args, MirrorArgs *a, Error **errp)
{
    json_object *perf;
    bool copy_range = false;
    int64_t workers = 0, chunk = 0;

    if (!json_object_object_get_ex(args, "x-perf", &perf)) {
        return true;
    }
    if (!opt_get_bool(perf, "use-copy-range", &copy_range, errp) ||
        !opt_get_int(perf, "max-workers", &workers, errp) ||
        !opt_get_int(perf, "max-chunk", &chunk, errp)) {
        return false;
    }
    if (json_object_object_get_ex(perf, "max-workers", NULL) &&
        (workers < 1 || workers > INT32_MAX)) {
        error_setg(errp, "max-workers must be between 1 and %d", INT32_MAX);
        return false;
    }
    if (chunk < 0) {
        error_setg(errp, "max-chunk must be zero (which means no limit) or positive");
        return false;
    }
    if (copy_range) {
        error_setg(errp, "x-perf.use-copy-range is not supported by blockd");
        return false;
    }
    a->max_workers = (int)workers;
    a->max_chunk = chunk;
    return true;
}

/* compress and discard-source (checked against the nodes by the job). */
static bool backup_parse_flags(json_object *args, MirrorArgs *a, Error **errp)
{
    return opt_get_bool(args, "compress", &a->compress, errp) &&
           opt_get_bool(args, "discard-source", &a->discard_source, errp);
}

static Job *backup_create_from_args(json_object *args, JobTxn *txn, Error **errp)
{
    MirrorArgs a;

    if (!parse_common(args, &a, false, true, errp) || !backup_parse_flags(args, &a, errp) ||
        !backup_parse_perf(args, &a, errp)) {
        return NULL;
    }
    a.txn = txn;
    return backup_create(&a, errp);
}

/* ---- drive-mirror, drive-backup: the job makes its target image ------------------- */

static const char *const new_image_modes[] = { "existing", "absolute-paths", NULL };

static const SchemaField drive_mirror_fields[] = {
    { .name = "job-id", .type = SCHEMA_STR, .optional = true },
    { .name = "device", .type = SCHEMA_STR },
    { .name = "target", .type = SCHEMA_STR },
    { .name = "format", .type = SCHEMA_STR, .optional = true },
    { .name = "node-name", .type = SCHEMA_STR, .optional = true },
    { .name = "replaces", .type = SCHEMA_STR, .optional = true },
    { .name = "sync", .type = SCHEMA_ENUM, .enum_values = sync_modes },
    { .name = "mode", .type = SCHEMA_ENUM, .optional = true, .enum_values = new_image_modes },
    { .name = "speed", .type = SCHEMA_INT, .optional = true },
    { .name = "granularity", .type = SCHEMA_INT, .optional = true },
    { .name = "buf-size", .type = SCHEMA_INT, .optional = true },
    { .name = "on-source-error", .type = SCHEMA_ENUM, .optional = true,
      .enum_values = on_error_values },
    { .name = "on-target-error", .type = SCHEMA_ENUM, .optional = true,
      .enum_values = on_error_values },
    { .name = "unmap", .type = SCHEMA_BOOL, .optional = true },
    { .name = "copy-mode", .type = SCHEMA_ENUM, .optional = true, .enum_values = copy_modes },
    { .name = "auto-finalize", .type = SCHEMA_BOOL, .optional = true },
    { .name = "auto-dismiss", .type = SCHEMA_BOOL, .optional = true },
    { 0 },
};
static const SchemaObject drive_mirror_args = {
    .name = "DriveMirror", .fields = drive_mirror_fields,
};

static const SchemaField drive_backup_fields[] = {
    COMMON_JOB_FIELDS,
    { .name = "format", .type = SCHEMA_STR, .optional = true },
    { .name = "mode", .type = SCHEMA_ENUM, .optional = true, .enum_values = new_image_modes },
    { .name = "compress", .type = SCHEMA_BOOL, .optional = true },
    { .name = "bitmap", .type = SCHEMA_STR, .optional = true },
    { .name = "bitmap-mode", .type = SCHEMA_ENUM, .optional = true, .enum_values = bitmap_modes },
    { .name = "x-perf", .type = SCHEMA_OBJECT, .optional = true, .object = &backup_perf },
    { 0 },
};
static const SchemaObject drive_backup_args = {
    .name = "DriveBackup", .fields = drive_backup_fields,
};

typedef struct DriveTarget {
    const char *file, *format, *node_name;
    bool existing;
    BlockDriverState *backing;          /* what the image names as backing file */
} DriveTarget;

/* The target's file, format and mode; the sync mode as QEMU adjusts it
 * (top without a backing file is full). */
static bool drive_parse(json_object *args, MirrorArgs *a, DriveTarget *t, Error **errp)
{
    const char *mode = "absolute-paths";

    memset(t, 0, sizeof(*t));
    if (!opt_get_str(args, "target", &t->file, errp) ||
        !opt_get_str(args, "format", &t->format, errp) ||
        !opt_get_str(args, "node-name", &t->node_name, errp) ||
        !opt_get_str(args, "mode", &mode, errp)) {
        return false;
    }
    t->existing = !strcmp(mode, "existing");
    if (!t->format && !t->existing) {
        t->format = a->source->drv->format_name;
    }
    t->backing = a->sync == MIRROR_SYNC_TOP  ? bdrv_backing_bs(a->source)
               : a->sync == MIRROR_SYNC_NONE ? a->source
                                             : NULL;
    if (!t->backing && a->sync == MIRROR_SYNC_TOP) {
        a->sync = MIRROR_SYNC_FULL;
    }
    return true;
}

/*
 * Create the target image (unless mode is "existing"), with the backing
 * file the sync mode calls for in its header, and open it read-write
 * without its backing file: drive-mirror's job attaches the backing node
 * at the end, a backup target is only written.  An existing image of
 * drive-mirror opens the chain its header names (QEMU opens it at the
 * end).  A backup target discards and detects zeroes, as QEMU's.
 */
static BlockDriverState *drive_open_target(MirrorArgs *a, DriveTarget *t, bool mirror,
                                           Error **errp)
{
    json_object *o, *f;
    BlockDriverState *bs;
    char buf[4096];

    if (!t->existing &&
        bdrv_img_create(t->file, t->format,
                        t->backing ? bdrv_get_filename(t->backing, buf, sizeof(buf)) : NULL,
                        t->backing ? t->backing->drv->format_name : NULL,
                        bdrv_getlength(a->source), errp) < 0) {
        return NULL;
    }
    o = json_object_new_object();
    f = json_object_new_object();
    json_object_object_add(f, "driver", json_object_new_string("file"));
    json_object_object_add(f, "filename", json_object_new_string(t->file));
    json_object_object_add(o, "driver", json_object_new_string(
        t->format ? t->format : bdrv_probe_format(t->file)));
    if (t->node_name) {
        json_object_object_add(o, "node-name", json_object_new_string(t->node_name));
    }
    json_object_object_add(o, "file", f);
    if (!mirror || !t->existing) {
        json_object_object_add(o, "backing", NULL);
    }
    if (!mirror) {
        json_object_object_add(o, "discard", json_object_new_string("unmap"));
        json_object_object_add(o, "detect-zeroes", json_object_new_string("unmap"));
    } else if (a->source->open_flags & BDRV_O_UNMAP) {
        json_object_object_add(o, "discard", json_object_new_string("unmap"));
    }
    bs = bdrv_open_options(o, errp);
    json_object_put(o);
    if (bs && bdrv_try_change_aio_context(bs, a->source->ctx, errp) < 0) {
        bdrv_unref(bs);
        bs = NULL;
    }
    return bs;
}

static json_object *qmp_drive_mirror(json_object *args, Error **errp)
{
    const char *replaces = NULL, *copy_mode = "background";
    bool unmap = true;
    DriveTarget t;
    MirrorArgs a;
    Job *job;

    GLOBAL_STATE_CODE();
    if (!parse_common(args, &a, true, false, errp) ||
        !opt_get_str(args, "replaces", &replaces, errp) ||
        !opt_get_int(args, "granularity", &a.granularity, errp) ||
        !opt_get_int(args, "buf-size", &a.buf_size, errp) ||
        !opt_get_bool(args, "unmap", &unmap, errp) ||
        !opt_get_str(args, "copy-mode", &copy_mode, errp) ||
        !mirror_parse_copy_mode(copy_mode, &a.write_blocking, errp)) {
        return NULL;
    }
    /* Early: no image is made for a job that cannot start. */
    if (bdrv_op_is_blocked(a.source, errp) || !drive_parse(args, &a, &t, errp)) {
        return NULL;
    }
    if (replaces && !t.node_name) {
        error_setg(errp, "a node-name must be provided when replacing a named node of the "
                   "graph");
        return NULL;
    }
    if (replaces && !(a.to_replace = lookup_node(replaces, errp))) {
        return NULL;
    }
    a.no_unmap = !unmap;
    a.set_target_backing = !t.existing;
    a.target_zeroed = !t.existing;
    a.target_backing = t.backing;
    if (!(a.target = drive_open_target(&a, &t, true, errp))) {
        return NULL;
    }
    job = mirror_start(&a, errp);
    bdrv_unref(a.target);               /* the job holds it */
    return job ? json_object_new_object() : NULL;
}

/* drive-backup's target, made and opened (a reference for the caller). */
static BlockDriverState *drive_backup_open(json_object *args, Error **errp)
{
    DriveTarget t;
    MirrorArgs a;

    if (!parse_common(args, &a, true, true, errp) || !backup_parse_flags(args, &a, errp) ||
        !backup_parse_perf(args, &a, errp) || !drive_parse(args, &a, &t, errp)) {
        return NULL;
    }
    return drive_open_target(&a, &t, false, errp);
}

/* The backup job onto @target (from drive_backup_open). */
static Job *drive_backup_create(json_object *args, JobTxn *txn, BlockDriverState *target,
                                Error **errp)
{
    DriveTarget t;
    MirrorArgs a;

    if (!parse_common(args, &a, true, true, errp) || !backup_parse_perf(args, &a, errp) ||
        !drive_parse(args, &a, &t, errp)) {
        return NULL;
    }
    a.txn = txn;
    a.target = target;
    return backup_create(&a, errp);
}

static json_object *qmp_drive_backup(json_object *args, Error **errp)
{
    Job *job;

    BlockDriverState *target;

    GLOBAL_STATE_CODE();
    target = drive_backup_open(args, errp);
    if (!target) {
        return NULL;
    }
    job = drive_backup_create(args, NULL, target, errp);
    bdrv_unref(target);                 /* the job holds it */
    if (!job) {
        return NULL;
    }
    backup_start_job(job);
    return json_object_new_object();
}

static json_object *qmp_blockdev_backup(json_object *args, Error **errp)
{
    Job *job;

    GLOBAL_STATE_CODE();
    job = backup_create_from_args(args, NULL, errp);
    if (!job) {
        return NULL;
    }
    backup_start_job(job);
    return json_object_new_object();
}

/* ---- transaction ------------------------------------------------------------------ */

/* What the actions of one transaction did so far, to start or undo. */
typedef struct TxnState {
    JobTxn *txn;                     /* grouped: the jobs' transaction */
    Job **jobs;                      /* created, not yet started */
    int njobs;
    BlockDriverState **snaps;        /* node, overlay pairs appended */
    bool *sync;                      /* per pair: the overlay is ours to drop */
    int nsnaps;
    /* Internal snapshots taken: node and name, deleted again on failure. */
    BlockDriverState **internal;
    const char **internal_names;
    int ninternal;
    /* Per action: the overlay a blockdev-snapshot-sync opened, and its
     * node; or the target a drive-backup opened. */
    BlockDriverState **sync_overlay, **sync_node;
    BitmapUndo *bitmaps;             /* the bitmap actions, to keep or undo */
} TxnState;

static const char *action_type(json_object *action, json_object **data)
{
    json_object *type_v;

    json_object_object_get_ex(action, "type", &type_v);
    json_object_object_get_ex(action, "data", data);
    return json_object_get_string(type_v);
}

/*
 * Before the drained section: blockdev-snapshot-sync creates and opens its
 * images (which needs I/O) up to the first action that fails; an abort
 * stops here too, so the first failing action is the one reported.
 */
static bool transaction_open(json_object *actions, TxnState *t, Error **errp)
{
    int n = json_object_array_length(actions);

    for (int i = 0; i < n; i++) {
        json_object *data;
        const char *type = action_type(json_object_array_get_idx(actions, i), &data);

        if (!strcmp(type, "abort")) {
            return true;
        }
        if (!strcmp(type, "blockdev-snapshot-sync") && !t->txn) {
            t->sync_overlay[i] = qmp_snapshot_sync_open(data, &t->sync_node[i], errp);
            if (!t->sync_overlay[i]) {
                return false;
            }
        }
        if (!strcmp(type, "drive-backup")) {
            t->sync_overlay[i] = drive_backup_open(data, errp);
            if (!t->sync_overlay[i]) {
                return false;
            }
        }
    }
    return true;
}

static void snap_add(TxnState *t, BlockDriverState *node, BlockDriverState *overlay,
                     bool sync)
{
    t->sync[t->nsnaps] = sync;
    t->snaps[t->nsnaps * 2] = node;
    t->snaps[t->nsnaps * 2 + 1] = overlay;
    t->nsnaps++;
}

/* Carry out one action within the drained section: a snapshot happens at
 * once (undone if a later action fails), a backup job is created. */
static bool transaction_prepare(json_object *action, int i, TxnState *t, Error **errp)
{
    json_object *data;
    const char *type = action_type(action, &data);
    BlockDriverState *node, *overlay;
    Job *job;

    if (!strcmp(type, "abort")) {
        error_setg(errp, "Transaction aborted using Abort action");
        return false;
    }
    if (t->txn && strcmp(type, "blockdev-backup") && strcmp(type, "drive-backup")) {
        error_setg(errp, "Action '%s' does not support Transaction property "
                   "completion-mode = grouped", type);
        return false;
    }
    if (qmp_bitmap_is_action(type)) {
        return qmp_bitmap_action(type, data, &t->bitmaps, errp);
    }
    if (!strcmp(type, "blockdev-snapshot-sync")) {
        if (bdrv_snapshot_append(t->sync_node[i], t->sync_overlay[i], errp) < 0) {
            return false;
        }
        snap_add(t, t->sync_node[i], t->sync_overlay[i], true);
        t->sync_overlay[i] = NULL;      /* in snaps now */
        return true;
    }
    if (!strcmp(type, "blockdev-snapshot-internal-sync")) {
        node = qmp_snapshot_internal_take(data, errp);
        if (!node) {
            return false;
        }
        t->internal[t->ninternal] = node;
        t->internal_names[t->ninternal++] = json_object_get_string(
            json_object_object_get(data, "name"));
        return true;
    }
    if (!strcmp(type, "blockdev-snapshot")) {
        if (!qmp_snapshot_nodes(data, &node, &overlay, errp) ||
            bdrv_snapshot_append(node, overlay, errp) < 0) {
            return false;
        }
        snap_add(t, node, overlay, false);
        return true;
    }
    job = !strcmp(type, "drive-backup")
          ? drive_backup_create(data, t->txn, t->sync_overlay[i], errp)
          : backup_create_from_args(data, t->txn, errp);
    if (!job) {
        return false;
    }
    t->jobs[t->njobs++] = job;
    return true;
}

static void transaction_undo(TxnState *t)
{
    /* Jobs never started: cancelling them undoes their filters and gives
     * back the bitmaps they took, before those bitmap actions are undone
     * (a bitmap this transaction added would be gone). */
    for (int i = t->njobs - 1; i >= 0; i--) {
        job_cancel_sync(t->jobs[i], true);
    }
    qmp_bitmap_actions_end(t->bitmaps, false);
    for (int i = t->ninternal - 1; i >= 0; i--) {
        json_object *info = NULL;

        if (bdrv_snapshot_internal_delete(t->internal[i], NULL, t->internal_names[i],
                                          &info) == 0) {
            json_object_put(info);
        }
    }
    for (int i = t->nsnaps - 1; i >= 0; i--) {
        bdrv_snapshot_undo(t->snaps[2 * i], t->snaps[2 * i + 1]);
        if (t->sync[i]) {
            bdrv_unref(t->snaps[2 * i + 1]);
        }
    }
}

static json_object *qmp_transaction(json_object *args, Error **errp)
{
    json_object *actions, *props;
    const char *mode = "individual";
    TxnState t = { 0 };
    int n;
    bool ok;

    GLOBAL_STATE_CODE();
    json_object_object_get_ex(args, "actions", &actions);
    if (json_object_object_get_ex(args, "properties", &props) &&
        !opt_get_str(props, "completion-mode", &mode, errp)) {
        return NULL;
    }
    n = json_object_array_length(actions);
    t.jobs = calloc(n + 1, sizeof(*t.jobs));
    t.snaps = calloc(2 * n + 2, sizeof(*t.snaps));
    t.sync = calloc(n + 1, sizeof(*t.sync));
    t.sync_overlay = calloc(n + 1, sizeof(*t.sync_overlay));
    t.sync_node = calloc(n + 1, sizeof(*t.sync_node));
    t.internal = calloc(n + 1, sizeof(*t.internal));
    t.internal_names = calloc(n + 1, sizeof(*t.internal_names));
    if (!t.jobs || !t.snaps || !t.sync || !t.sync_overlay || !t.sync_node || !t.internal ||
        !t.internal_names) {
        abort();
    }
    if (!strcmp(mode, "grouped")) {
        t.txn = job_txn_new();
    }
    ok = transaction_open(actions, &t, errp);
    /* No request may run between the actions: one point in time. */
    bdrv_drain_all_begin();
    for (int i = 0; i < n && ok; i++) {
        ok = transaction_prepare(json_object_array_get_idx(actions, i), i, &t, errp);
    }
    if (ok) {
        for (int i = 0; i < t.njobs; i++) {
            backup_start_job(t.jobs[i]);
        }
        for (int i = 0; i < t.nsnaps; i++) {
            qmp_snapshot_commit(t.snaps[2 * i], t.snaps[2 * i + 1], t.sync[i]);
        }
        qmp_bitmap_actions_end(t.bitmaps, true);
    } else {
        transaction_undo(&t);
    }
    bdrv_drain_all_end();
    for (int i = 0; i < n; i++) {
        if (t.sync_overlay[i]) {
            /* A snapshot never appended, or a backup target (its job, if
             * any, holds its own reference). */
            bdrv_unref(t.sync_overlay[i]);
        }
    }
    if (t.txn) {
        job_txn_unref(t.txn);
    }
    free(t.jobs);
    free(t.snaps);
    free(t.sync);
    free(t.sync_overlay);
    free(t.sync_node);
    free(t.internal);
    free(t.internal_names);
    return ok ? json_object_new_object() : NULL;
}

const QmpCommand qmp_blockjob_commands[] = {
    { .name = "blockdev-mirror", .fn = qmp_blockdev_mirror, .args = &mirror_args },
    { .name = "drive-mirror", .fn = qmp_drive_mirror, .args = &drive_mirror_args },
    { .name = "drive-backup", .fn = qmp_drive_backup, .args = &drive_backup_args },
    { .name = "blockdev-backup", .fn = qmp_blockdev_backup, .args = &backup_args },
    { .name = "transaction", .fn = qmp_transaction, .args = &transaction_args },
    { 0 },
};
