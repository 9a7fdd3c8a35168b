/*
 * monitor-internal.h - what the command line and main() share with the
 * QMP command implementations.  Global state.
 */
#ifndef BLOCKD_MONITOR_INTERNAL_H
#define BLOCKD_MONITOR_INTERNAL_H

#include <json-c/json.h>
#include <stdbool.h>

#include "blockd/block-common.h"
#include "blockd/error.h"
#include "blockd/monitor.h"

/* The command tables, registered by qmp_init_commands(). */
extern const QmpCommand qmp_block_commands[];
extern const QmpCommand qmp_iothread_commands[];
extern const QmpCommand qmp_export_commands[];
extern const QmpCommand qmp_job_commands[];
extern const QmpCommand qmp_blockjob_commands[];
extern const QmpCommand qmp_create_commands[];
extern const QmpCommand qmp_chain_commands[];
extern const QmpCommand qmp_reopen_commands[];
extern const QmpCommand qmp_bitmap_commands[];
extern const QmpCommand qmp_introspect_commands[];
extern const QmpCommand qmp_chardev_commands[];
extern const QmpCommand qmp_qom_commands[];

/* The "return" of a command that answers with data not described further. */
extern const SchemaField qmp_ret_any;

/* An event blockd emits and what its "data" holds (query-qmp-schema). */
typedef struct QmpEventInfo {
    const char *name;                 /* NULL ends the table */
    const SchemaObject *data;         /* NULL: no data */
} QmpEventInfo;
extern const QmpEventInfo qmp_events[];

/* blockdev-add and --blockdev: the monitor owns the node it opens. */
BlockDriverState *qmp_blockdev_add_node(json_object *options, Error **errp);
/* Drop the monitor's references on nodes (shutdown). */
void qmp_block_cleanup(void);
/* object-add and --object (checked arguments). */
bool qmp_object_add_checked(json_object *args, Error **errp);
/* --monitor and x-monitor-add: a QMP monitor on a chardev (checked
 * MonitorOptions: chardev, pretty, mode). */
bool qmp_monitor_add(json_object *options, Error **errp);
/*
 * blockdev-snapshot-sync up to the graph change: checks, creates the image
 * (unless mode is "existing") and opens it, without its backing file.
 * Returns the overlay, for bdrv_snapshot_append(*node, overlay) and then
 * qmp_snapshot_commit (or bdrv_unref), or NULL with @errp set.
 */
BlockDriverState *qmp_snapshot_sync_open(json_object *args, BlockDriverState **node,
                                         Error **errp);
/* blockdev-snapshot-internal-sync: checks and takes the snapshot; the
 * node, or NULL with @errp set. */
BlockDriverState *qmp_snapshot_internal_take(json_object *args, Error **errp);
extern const SchemaObject qapi_snapshot_internal_args;
/* A snapshot is final: @node becomes read-only; @sync drops the reference
 * qmp_snapshot_sync_prepare returned. */
void qmp_snapshot_commit(BlockDriverState *node, BlockDriverState *overlay, bool sync);
extern const SchemaObject qapi_snapshot_sync_args;

/* blockdev-snapshot's "node" and "overlay" (checked arguments). */
bool qmp_snapshot_nodes(json_object *args, BlockDriverState **node,
                        BlockDriverState **overlay, Error **errp);
/* --nbd-server: the flat SocketAddress form. */
bool qmp_nbd_server_start_flat(json_object *args, Error **errp);

/* qmp-cmds-bitmap.c: the block-dirty-bitmap-* actions of a transaction.
 * Each takes effect at once and records how to take it back in *@undo;
 * qmp_bitmap_actions_end() then keeps (@commit) or undoes them all. */
typedef struct BitmapUndo BitmapUndo;
bool qmp_bitmap_is_action(const char *type);
bool qmp_bitmap_action(const char *type, json_object *data, BitmapUndo **undo, Error **errp);
void qmp_bitmap_actions_end(BitmapUndo *undo, bool commit);
extern const SchemaObject qapi_block_dirty_bitmap, qapi_block_dirty_bitmap_add,
    qapi_block_dirty_bitmap_merge;
/* query-named-block-nodes' "dirty-bitmaps" of @bs (BlockDirtyInfo list),
 * or NULL if it has none. */
json_object *qmp_dirty_bitmaps_info(BlockDriverState *bs);

#endif /* BLOCKD_MONITOR_INTERNAL_H */
