/*
 * block-global-state.h - the block layer's global-state API.
 *
 * Half: global state.  Every function here runs in the main thread only
 * (asserted with GLOBAL_STATE_CODE()), never in a coroutine unless noted.
 * Functions that change the graph drain the affected nodes and take the
 * graph write lock themselves; callers hold neither.
 */
#ifndef BLOCKD_BLOCK_GLOBAL_STATE_H
#define BLOCKD_BLOCK_GLOBAL_STATE_H

#include <json-c/json.h>

#include "blockd/block-int.h"

/* ---- Drivers ---- */

void bdrv_register(const BlockDriver *drv);

/*
 * Run @fn(@bs, @opaque) in a coroutine holding the graph read lock and
 * wait for it: I/O from global-state code such as a driver's close.
 * Global state (in a coroutine or not).
 */
int bdrv_run_co(BlockDriverState *bs, int (*fn)(BlockDriverState *, void *), void *opaque);
const BlockDriver *bdrv_find_driver(const char *name);

/* ---- Nodes ---- */

/*
 * Create a node of driver @drv named @node_name (NULL: an automatic
 * "#blockN"), open it with @options and @flags, and return it with one
 * reference owned by the caller.
 */
BlockDriverState *bdrv_open_driver(const BlockDriver *drv, const char *node_name,
                                   json_object *options, int flags, Error **errp)
    GRAPH_UNLOCKED;

/*
 * Open a node from a blockdev-add style options object: "driver",
 * optional "node-name", "read-only", "discard" ("ignore"/"unmap"),
 * "force-share", and the driver's own options (children given as a node
 * name or as a nested options object).
 */
BlockDriverState *bdrv_open_options(json_object *options, Error **errp) GRAPH_UNLOCKED;

/*
 * For drivers: open or find the child given by option @key of @options (a
 * node name or a nested options object) and attach it with @role.
 * Returns NULL with errp set if it is missing (when @required) or fails.
 */
/* Options a nested child takes from @parent unless it sets them:
 * read-only, auto-read-only, cache.direct and cache.no-flush. */
void bdrv_inherit_options(BlockDriverState *parent, json_object *child);
BdrvChild *bdrv_open_child(BlockDriverState *parent, json_object *options,
                           const char *key, unsigned role, bool required,
                           Error **errp) GRAPH_UNLOCKED;

/* Open the "file" child with @role and make its size and limits the
 * node's own (a filter, snapshot-access).  0, or -1 with @errp set. */
int bdrv_open_file_as_own(BlockDriverState *bs, json_object *options, unsigned role,
                          Error **errp) GRAPH_UNLOCKED;

/* Check a user-supplied node name: "Invalid node-name: '...'" */
bool bdrv_check_node_name(const char *name, Error **errp);

BlockDriverState *bdrv_find_node(const char *node_name);
/*
 * Make @ctx the home of @bs and of everything connected to it: children,
 * parent nodes, and the users that are not nodes (jobs follow; a job's
 * other nodes move too).  Every user is asked first; on a refusal nothing
 * moves, @errp names the reason and -EPERM is returned.  The component is
 * drained meanwhile.  Nodes have no thread affinity for I/O; the home
 * decides where jobs and new exports run.  Global state, not in a
 * coroutine (it polls).
 */
int bdrv_try_change_aio_context(BlockDriverState *bs, AioContext *ctx, Error **errp)
    GRAPH_UNLOCKED;
/* Has a BlockBackend user (an export)? */
bool bdrv_has_blk(BlockDriverState *bs);

/* No other node has @bs as a child (users such as exports may). */
bool bdrv_is_root_node(BlockDriverState *bs);
/* Iterate over all nodes: start with NULL; returns NULL at the end. */
BlockDriverState *bdrv_next_node(BlockDriverState *bs);
int bdrv_node_count(void);

void bdrv_ref(BlockDriverState *bs);
/* Drop a reference; the last one drains the node, detaches its children
 * and closes it.  NULL is ignored. */
void bdrv_unref(BlockDriverState *bs) GRAPH_UNLOCKED;
/* Drop a reference right after the write lock is released (deletion must
 * not happen under it).  NULL is ignored. */
void bdrv_schedule_unref(BlockDriverState *bs) GRAPH_WRLOCK;

/* ---- Children and permissions ---- */

/*
 * Attach @child_bs as child @name of node @parent with role @role; the
 * permissions follow from @parent's driver.  Takes its own reference on
 * @child_bs.  Fails (nothing attached) on a permission conflict.
 */
BdrvChild *bdrv_attach_child(BlockDriverState *parent, BlockDriverState *child_bs,
                             const char *name, unsigned role, Error **errp)
    GRAPH_UNLOCKED;

/*
 * Attach @child_bs to a parent that is not a node (a backend, a job): it
 * needs @perm and tolerates @shared_perm; @klass/@opaque describe it.
 */
BdrvChild *bdrv_root_attach_child(BlockDriverState *child_bs, const char *name,
                                  const BdrvChildClass *klass, unsigned role,
                                  uint64_t perm, uint64_t shared_perm,
                                  void *opaque, Error **errp) GRAPH_UNLOCKED;

/*
 * x-blockdev-change: add @child_bs as a child of @parent (it must have no
 * parent yet), or remove @parent's child named @name, through the
 * driver, with @parent drained.  -errno with QEMU's message.
 */
int bdrv_add_child(BlockDriverState *parent, BlockDriverState *child_bs, Error **errp);
int bdrv_del_child(BlockDriverState *parent, const char *name, Error **errp);

/* Detach a child and drop its reference. */
void bdrv_unref_child(BlockDriverState *parent, BdrvChild *child) GRAPH_UNLOCKED;
void bdrv_root_unref_child(BdrvChild *child) GRAPH_UNLOCKED;

/* Change what a (root) parent needs and shares; on error nothing changes.
 * Write lock: requests read the edge's permissions under the read lock. */
int bdrv_child_try_set_perm(BdrvChild *c, uint64_t perm, uint64_t shared,
                            Error **errp) GRAPH_WRLOCK;

/*
 * Make every parent of @from use @to instead (except @to itself if it is
 * one of them).  Drains both, takes the write lock.  On a permission
 * conflict nothing changes.
 */
int bdrv_replace_node(BlockDriverState *from, BlockDriverState *to, Error **errp)
    GRAPH_UNLOCKED;

/* Recompute the permissions of @bs and everything below it (written to
 * edges that requests read: write lock). */
int bdrv_refresh_perms(BlockDriverState *bs, Error **errp) GRAPH_WRLOCK;

/* A description of the parent of @c for messages ("node 'x'", ...). */
char *bdrv_child_user_desc(BdrvChild *c);

/* ---- Drained sections (see block-io.h for the in-flight counter) ---- */

/*
 * Stop new requests from the parents of @bs and wait until every request
 * in flight on @bs has completed, in every thread.  Nests.  Must not be
 * called with the graph lock held.  From a coroutine, the work is bounced
 * to the main loop.
 */
void bdrv_drained_begin(BlockDriverState *bs) GRAPH_UNLOCKED;
/*
 * From the coroutine of a parent of @bs (a job) that must not wait for
 * itself: as bdrv_drained_begin(), with *@self_draining true exactly while
 * this drain waits in the main loop.  The parent's drained_poll reports
 * idle only then: another drain that waits meanwhile, or later, sees it
 * busy once this one has returned.
 */
void coroutine_fn bdrv_co_drained_begin_self(BlockDriverState *bs, bool *self_draining)
    GRAPH_UNLOCKED;
void bdrv_drained_end(BlockDriverState *bs) GRAPH_UNLOCKED;
/* Quiesce without waiting (used by the graph writer). */
void bdrv_do_drained_begin_quiesce(BlockDriverState *bs) GRAPH_UNLOCKED;

void bdrv_drain_all_begin(void) GRAPH_UNLOCKED;
void bdrv_drain_all_begin_nopoll(void) GRAPH_UNLOCKED;
void bdrv_drain_all_end(void) GRAPH_UNLOCKED;

/* Close every node (shutdown): drain all, drop the monitor's references. */
void bdrv_close_all(void) GRAPH_UNLOCKED;

/*
 * x-debug-query-block-graph: {"nodes": [{id, type, name}], "edges":
 * [{parent, child, name, perm, shared-perm}]} with nodes, exports'
 * backends and jobs as nodes.  A new object.
 */
json_object *bdrv_query_graph(void);

/* The file name QEMU shows for a node: its file's, or "<driver>://"
 * (written into @buf).  Valid while the node is. */
const char *bdrv_get_filename(BlockDriverState *bs, char *buf, size_t size);
/*
 * blockdev-snapshot: @overlay (an unused node whose driver takes a backing
 * file, without one) replaces @node for all of @node's users and gets
 * @node as its backing file.  Refused, changing nothing, if @node is a
 * backing file or used by a job.  -errno with @errp set.
 */
int bdrv_snapshot_append(BlockDriverState *node, BlockDriverState *overlay, Error **errp);
/* Can @bs take internal snapshots (its format keeps them, as qcow2)? */
bool bdrv_can_snapshot_internal(BlockDriverState *bs);
/* Internal snapshot @name of @bs, drained: 0, -EEXIST (the name is taken),
 * -ENOTSUP, or another -errno (the image then holds at most leaks). */
int bdrv_snapshot_internal_create(BlockDriverState *bs, const char *name);
/* Delete the internal snapshot found by @id and/or @name: 0 with its
 * SnapshotInfo in *@info, -ENOENT if there is none, or -errno. */
int bdrv_snapshot_internal_delete(BlockDriverState *bs, const char *id, const char *name,
                                  json_object **info);
/* bdrv_snapshot_append()'s checks of @node alone, with its messages. */
int bdrv_snapshot_check_node(BlockDriverState *node, Error **errp);
/* Undo a successful bdrv_snapshot_append() (a transaction that failed
 * later): the users get @node back, @overlay no backing file. */
void bdrv_snapshot_undo(BlockDriverState *node, BlockDriverState *overlay);
/* The node's backing node, or NULL. */
BlockDriverState *bdrv_backing_bs(BlockDriverState *bs);
/* The node's file child's node, or NULL. */
BlockDriverState *bdrv_file_bs(BlockDriverState *bs);
/* Was the file (backing) child of @bs opened from @bs's own options or
 * image header, not named by reference?  Such a child follows its
 * parent's cache mode on reopen. */
bool bdrv_file_is_inline(BlockDriverState *bs);
bool bdrv_backing_is_inline(BlockDriverState *bs);
/* query-named-block-nodes' "image" of @bs (ImageInfo): a new object. */
json_object *bdrv_image_info(BlockDriverState *bs);

/*
 * Events of the block layer (BLOCK_WRITE_THRESHOLD, ...) go to one sink,
 * which the monitor sets: the block layer never calls the monitor itself.
 * The sink takes @data and may be called from any thread.
 */
typedef void BlockEventSink(const char *name, json_object *data);
void bdrv_set_event_sink(BlockEventSink *sink);

/* block-set-write-threshold: report (once) the first write that ends past
 * @threshold bytes; 0 disarms.  (The I/O side is in block-io.h.) */
void bdrv_write_threshold_set(BlockDriverState *bs, uint64_t threshold);

#endif /* BLOCKD_BLOCK_GLOBAL_STATE_H */
