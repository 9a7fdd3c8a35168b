/*
 * qmp-cmds-block.c - blockdev-add, blockdev-del, query-named-block-nodes.
 *
 * Nodes added by the user are owned by the monitor: it holds one reference
 * on each until blockdev-del (or shutdown).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/aio-wait.h"
#include "blockd/atomic.h"
#include "blockd/block-backend-global-state.h"
#include "blockd/block-backend-io.h"
#include "blockd/block-chain.h"
#include "blockd/block-global-state.h"
#include "blockd/block-accounting.h"
#include "blockd/block-io.h"
#include "blockd/main-loop.h"
#include "blockd/monitor.h"
#include "blockd/options.h"
#include "monitor-internal.h"
#include "qapi-schemas.h"

#define MAX_OWNED 4096

static BlockDriverState *owned[MAX_OWNED];
static int num_owned;

static int owned_index(BlockDriverState *bs)
{
    for (int i = 0; i < num_owned; i++) {
        if (owned[i] == bs) {
            return i;
        }
    }
    return -1;
}

/* Open a node from blockdev-add options; the monitor owns the result. */
BlockDriverState *qmp_blockdev_add_node(json_object *options, Error **errp)
{
    json_object *name;
    BlockDriverState *bs;

    GLOBAL_STATE_CODE();
    if (!json_object_object_get_ex(options, "node-name", &name)) {
        error_setg(errp, "'node-name' must be specified for the root node");
        return NULL;
    }
    if (num_owned == MAX_OWNED) {
        error_setg(errp, "Too many block nodes");
        return NULL;
    }
    bs = bdrv_open_options(options, errp);
    if (bs) {
        owned[num_owned++] = bs;
    }
    return bs;
}

static json_object *qmp_blockdev_add(json_object *args, Error **errp)
{
    /* The node keeps its options: give it a copy it may annotate. */
    json_object *copy = NULL;

    json_object_deep_copy(args, &copy, NULL);
    if (!qmp_blockdev_add_node(copy, errp)) {
        json_object_put(copy);
        return NULL;
    }
    json_object_put(copy);
    return json_object_new_object();
}

static json_object *qmp_blockdev_del(json_object *args, Error **errp)
{
    json_object *v;
    const char *name;
    BlockDriverState *bs;
    int i;

    json_object_object_get_ex(args, "node-name", &v);
    name = json_object_get_string(v);
    bs = bdrv_find_node(name);
    if (!bs) {
        error_setg(errp, "Failed to find node with node-name='%s'", name);
        return NULL;
    }
    i = owned_index(bs);
    if (i < 0) {
        error_setg(errp, "Node %s is not owned by the monitor", name);
        return NULL;
    }
    if (!list_empty(&bs->parents) || bs->refcnt > 1) {
        error_setg(errp, "Node %s is in use", name);
        return NULL;
    }
    owned[i] = owned[--num_owned];
    bdrv_unref(bs);
    return json_object_new_object();
}

static json_object *node_info(BlockDriverState *bs)
{
    json_object *info = json_object_new_object(), *image = bdrv_image_info(bs);
    json_object *cache = json_object_new_object(), *bitmaps;
    char buf[64], bbuf[64];
    const char *filename = bdrv_get_filename(bs, buf, sizeof(buf));
    /* No throttling yet: no limits to report. */
    static const char *const throttle_limits[] = {
        "bps", "bps_rd", "bps_wr", "iops", "iops_rd", "iops_wr",
    };
    int depth = 0;

    if (bdrv_backing_bs(bs)) {
        json_object_object_add(info, "backing_file", json_object_new_string(
            bdrv_get_filename(bdrv_backing_bs(bs), bbuf, sizeof(bbuf))));
    }
    /* As QEMU counts: filters in the chain are layers too. */
    for (BlockDriverState *b = bdrv_filter_or_cow_bs(bs); b; b = bdrv_filter_or_cow_bs(b)) {
        depth++;
    }
    json_object_object_add(cache, "writeback", json_object_new_boolean(true));
    json_object_object_add(cache, "direct",
                           json_object_new_boolean(bs->open_flags & BDRV_O_NOCACHE));
    json_object_object_add(cache, "no-flush",
                           json_object_new_boolean(bs->open_flags & BDRV_O_NO_FLUSH));

    json_object_object_add(info, "file", json_object_new_string(filename));
    json_object_object_add(info, "node-name", json_object_new_string(bs->node_name));
    json_object_object_add(info, "ro", json_object_new_boolean(bs->read_only));
    json_object_object_add(info, "drv", json_object_new_string(bs->drv->format_name));
    json_object_object_add(info, "encrypted", json_object_new_boolean(bs->encrypted));
    json_object_object_add(info, "detect_zeroes", json_object_new_string(
        bs->detect_zeroes == BDRV_DETECT_ZEROES_UNMAP ? "unmap" :
        bs->detect_zeroes == BDRV_DETECT_ZEROES_ON ? "on" : "off"));
    for (unsigned i = 0; i < ARRAY_SIZE(throttle_limits); i++) {
        json_object_object_add(info, throttle_limits[i], json_object_new_int(0));
    }
    json_object_object_add(info, "backing_file_depth", json_object_new_int(depth));
    json_object_object_add(info, "write_threshold",
                           json_object_new_int64(bdrv_write_threshold_get(bs)));
    json_object_object_add(info, "image", image);
    json_object_object_add(info, "cache", cache);
    bitmaps = qmp_dirty_bitmaps_info(bs);
    if (bitmaps) {
        json_object_object_add(info, "dirty-bitmaps", bitmaps);
    }
    return info;
}

/* Newest first, as qemu-storage-daemon lists them. */
static json_object *qmp_query_named_block_nodes(json_object *args, Error **errp)
{
    json_object *oldest_first = json_object_new_array(), *list = json_object_new_array();

    (void)args;
    (void)errp;
    for (BlockDriverState *bs = bdrv_next_node(NULL); bs; bs = bdrv_next_node(bs)) {
        json_object_array_add(oldest_first, node_info(bs));
    }
    for (size_t i = json_object_array_length(oldest_first); i-- > 0;) {
        json_object_array_add(list, json_object_get(json_object_array_get_idx(oldest_first, i)));
    }
    json_object_put(oldest_first);
    return list;
}

void qmp_block_cleanup(void)
{
    GLOBAL_STATE_CODE();
    /* Newest first, so users of a node let go before it. */
    while (num_owned > 0) {
        bdrv_unref(owned[--num_owned]);
    }
}

/*
 * query-block lists the BlockBackends that have a name, i.e. that belong
 * to a guest device (-drive / -device).  A storage daemon has no guest
 * devices: its backends (exports, jobs) are anonymous, so the list is
 * empty, in qemu-storage-daemon and here alike.  The command exists so
 * that tools which call it keep working.
 */
static json_object *qmp_query_block(json_object *args, Error **errp)
{
    (void)args;
    (void)errp;
    return json_object_new_array();
}

typedef struct ResizeCall {
    BlockBackend *blk;
    int64_t size;
    Error *err;
    int ret;
    bool done;
} ResizeCall;

static void coroutine_fn resize_entry(void *opaque)
{
    ResizeCall *r = opaque;

    r->ret = blk_co_truncate(r->blk, r->size, &r->err);
    atomic_store_release(&r->done, true);
    aio_wait_kick();
}

/*
 * block_resize: through a backend of its own that takes the resize
 * permission (and shares everything: an NBD export keeps serving, and its
 * clients see the new size when they connect again).
 */
static json_object *qmp_block_resize(json_object *args, Error **errp)
{
    const char *device = NULL, *node_name = NULL;
    ResizeCall r = { 0 };
    BlockDriverState *bs;
    json_object *v;

    GLOBAL_STATE_CODE();
    opt_get_str(args, "device", &device, NULL);
    opt_get_str(args, "node-name", &node_name, NULL);
    /* A storage daemon has no named devices: only the node name finds. */
    bs = node_name ? bdrv_find_node(node_name) : NULL;
    if (!bs) {
        error_setg(errp, "Cannot find device='%s' nor node-name='%s'",
                   device ? device : "", node_name ? node_name : "");
        return NULL;
    }
    json_object_object_get_ex(args, "size", &v);
    r.size = json_object_get_int64(v);
    if (r.size < 0 || json_object_get_uint64(v) > INT64_MAX) {
        error_setg(errp, "Parameter 'size' expects a >0 size");
        return NULL;
    }
    r.blk = blk_new(BLK_PERM_RESIZE, BLK_PERM_ALL);
    if (blk_insert_bs(r.blk, bs, errp) < 0) {
        blk_unref(r.blk);
        return NULL;
    }
    /* No request may run while the geometry changes, on this node or any
     * below it (a raw node resizes its file, which others may use too);
     * the resize itself goes ahead in the drained section. */
    blk_set_allow_queuing(r.blk, false);
    bdrv_drain_all_begin();
    coroutine_enter(coroutine_create(resize_entry, &r));
    AIO_WAIT_WHILE_UNLOCKED(NULL, !atomic_load_acquire(&r.done));
    bdrv_drain_all_end();
    blk_unref(r.blk);
    if (r.ret < 0) {
        error_propagate(errp, r.err);
        return NULL;
    }
    return json_object_new_object();
}

static const SchemaField resize_fields[] = {
    { .name = "device", .type = SCHEMA_STR, .optional = true },
    { .name = "node-name", .type = SCHEMA_STR, .optional = true },
    { .name = "size", .type = SCHEMA_INT },
    { 0 },
};
static const SchemaObject resize_args = { .name = "block_resize-arg", .fields = resize_fields };

static BlockDriverState *find_node_or_device(const char *name, Error **errp)
{
    BlockDriverState *bs = bdrv_find_node(name);

    if (!bs) {
        error_setg(errp, "Cannot find device='%s' nor node-name='%s'", name, name);
    }
    return bs;
}

bool qmp_snapshot_nodes(json_object *args, BlockDriverState **node,
                        BlockDriverState **overlay, Error **errp)
{
    *node = find_node_or_device(json_object_get_string(json_object_object_get(args, "node")),
                                errp);
    if (!*node) {
        return false;
    }
    *overlay = find_node_or_device(
        json_object_get_string(json_object_object_get(args, "overlay")), errp);
    return *overlay != NULL;
}

static json_object *qmp_blockdev_snapshot(json_object *args, Error **errp)
{
    BlockDriverState *node, *overlay;

    GLOBAL_STATE_CODE();
    if (!qmp_snapshot_nodes(args, &node, &overlay, errp)) {
        return NULL;
    }
    if (bdrv_snapshot_append(node, overlay, errp) < 0) {
        return NULL;
    }
    qmp_snapshot_commit(node, overlay, false);
    return json_object_new_object();
}

static const SchemaField snapshot_fields[] = {
    { .name = "node", .type = SCHEMA_STR },
    { .name = "overlay", .type = SCHEMA_STR },
    { 0 },
};
const SchemaObject qapi_blockdev_snapshot_args = { .name = "BlockdevSnapshot",
                                                  .fields = snapshot_fields };

static json_object *qmp_block_set_write_threshold(json_object *args, Error **errp)
{
    const char *name = json_object_get_string(json_object_object_get(args, "node-name"));
    BlockDriverState *bs = bdrv_find_node(name);

    if (!bs) {
        error_setg(errp, "Device '%s' not found", name);
        return NULL;
    }
    bdrv_write_threshold_set(bs, json_object_get_uint64(
        json_object_object_get(args, "write-threshold")));
    return json_object_new_object();
}

static const SchemaField write_threshold_fields[] = {
    { .name = "node-name", .type = SCHEMA_STR },
    { .name = "write-threshold", .type = SCHEMA_SIZE },
    { 0 },
};
static const SchemaObject write_threshold_args = {
    .name = "block-set-write-threshold-arg", .fields = write_threshold_fields,
};

/* BlockStats of a node: its counters and, as "parent", its file's (the
 * backing node is listed on its own, as QEMU does for nodes). */
static json_object *node_stats(BlockDriverState *bs, int depth)
{
    json_object *o = json_object_new_object();
    BlockDriverState *file = NULL;

    json_object_object_add(o, "node-name", json_object_new_string(bs->node_name));
    json_object_object_add(o, "stats", block_acct_query(&bs->stats));
    if (bs->drv->bdrv_get_stats) {
        json_object_object_add(o, "driver-specific", bs->drv->bdrv_get_stats(bs));
    }
    graph_rdlock_main_loop();
    if (bs->file) {
        file = bs->file->bs;
    }
    graph_rdunlock_main_loop();
    if (file && depth < 64) {
        json_object_object_add(o, "parent", node_stats(file, depth + 1));
    }
    return o;
}

/*
 * query-blockstats: with query-nodes, every node; without, the named
 * block devices, of which qemu-storage-daemon and blockd have none (an
 * export's backend has no name), so the list is empty as there.
 */
static json_object *qmp_query_blockstats(json_object *args, Error **errp)
{
    json_object *list = json_object_new_array(), *v;

    (void)errp;
    if (json_object_object_get_ex(args, "query-nodes", &v) && json_object_get_boolean(v)) {
        for (BlockDriverState *bs = bdrv_next_node(NULL); bs; bs = bdrv_next_node(bs)) {
            json_object_array_add(list, node_stats(bs, 0));
        }
    }
    return list;
}

static const SchemaField blockstats_fields[] = {
    { .name = "query-nodes", .type = SCHEMA_BOOL, .optional = true },
    { 0 },
};
static const SchemaObject blockstats_args = {
    .name = "query-blockstats-arg", .fields = blockstats_fields,
};

/* A list of boundaries: ascending, as QEMU requires.  *n = 0 if absent. */
static bool get_boundaries(json_object *args, const char *key, uint64_t *out, int *n,
                           Error **errp)
{
    json_object *list;

    *n = -1;
    if (!json_object_object_get_ex(args, key, &list)) {
        return true;
    }
    *n = (int)json_object_array_length(list);
    if (*n > 64) {
        error_setg(errp, "Parameter '%s' has too many boundaries (64 at most)", key);
        return false;
    }
    for (int i = 0; i < *n; i++) {
        out[i] = json_object_get_uint64(json_object_array_get_idx(list, i));
        if (i > 0 && out[i] <= out[i - 1]) {
            error_setg(errp, "Parameter '%s' must be a list of ascending values", key);
            return false;
        }
    }
    return true;
}

/*
 * block-latency-histogram-set: on a node (qemu-storage-daemon 7.2 has no
 * such command; QEMU's takes a device, which a storage daemon has none
 * of).  "boundaries" applies to every type a specific list does not
 * cover; with no list at all, the histograms go.
 */
static json_object *qmp_block_latency_histogram_set(json_object *args, Error **errp)
{
    static const char *const keys[] = { "boundaries-read", "boundaries-write",
                                         "boundaries-flush" };
    static const BlockAcctType types[] = { BLOCK_ACCT_READ, BLOCK_ACCT_WRITE, BLOCK_ACCT_FLUSH };
    const char *id = json_object_get_string(json_object_object_get(args, "id"));
    BlockDriverState *bs = bdrv_find_node(id);
    uint64_t all[64], each[3][64];
    int nall, n[3];

    if (!bs) {
        error_setg(errp, "Device '%s' not found", id);
        return NULL;
    }
    if (!get_boundaries(args, "boundaries", all, &nall, errp)) {
        return NULL;
    }
    for (int i = 0; i < 3; i++) {
        if (!get_boundaries(args, keys[i], each[i], &n[i], errp)) {
            return NULL;
        }
    }
    for (int i = 0; i < 3; i++) {
        if (n[i] >= 0) {
            block_acct_set_histogram(&bs->stats, types[i], each[i], n[i]);
        } else {
            block_acct_set_histogram(&bs->stats, types[i], all, nall > 0 ? nall : 0);
        }
    }
    return json_object_new_object();
}

static const SchemaField boundary_elem = { .type = SCHEMA_SIZE };
static const SchemaField histogram_fields[] = {
    { .name = "id", .type = SCHEMA_STR },
    { .name = "boundaries", .type = SCHEMA_LIST, .optional = true, .elem = &boundary_elem },
    { .name = "boundaries-read", .type = SCHEMA_LIST, .optional = true, .elem = &boundary_elem },
    { .name = "boundaries-write", .type = SCHEMA_LIST, .optional = true,
      .elem = &boundary_elem },
    { .name = "boundaries-flush", .type = SCHEMA_LIST, .optional = true,
      .elem = &boundary_elem },
    { 0 },
};
static const SchemaObject histogram_args = {
    .name = "block-latency-histogram-set-arg", .fields = histogram_fields,
};

static json_object *qmp_x_debug_query_block_graph(json_object *args, Error **errp)
{
    (void)args;
    (void)errp;
    return bdrv_query_graph();
}

/* x-blockdev-change: a child of a quorum in or out, by name. */
static json_object *qmp_x_blockdev_change(json_object *args, Error **errp)
{
    const char *parent = NULL, *child = NULL, *node = NULL;
    BlockDriverState *pbs, *nbs;

    GLOBAL_STATE_CODE();
    opt_get_str(args, "parent", &parent, NULL);
    opt_get_str(args, "child", &child, NULL);
    opt_get_str(args, "node", &node, NULL);
    pbs = bdrv_find_node(parent);
    if (!pbs) {
        error_setg(errp, "Cannot find device='%s' nor node-name='%s'", parent, parent);
        return NULL;
    }
    if (!child == !node) {
        error_setg(errp, child ? "The parameters child and node are in conflict"
                               : "Either child or node must be specified");
        return NULL;
    }
    if (child) {
        return bdrv_del_child(pbs, child, errp) < 0 ? NULL : json_object_new_object();
    }
    nbs = bdrv_find_node(node);
    if (!nbs) {
        error_setg(errp, "Node '%s' not found", node);
        return NULL;
    }
    return bdrv_add_child(pbs, nbs, errp) < 0 ? NULL : json_object_new_object();
}

static const SchemaField change_fields[] = {
    { .name = "parent", .type = SCHEMA_STR },
    { .name = "child", .type = SCHEMA_STR, .optional = true },
    { .name = "node", .type = SCHEMA_STR, .optional = true },
    { 0 },
};

static const SchemaObject change_args = { .name = "x-blockdev-change-arg",
                                          .fields = change_fields };

const QmpCommand qmp_block_commands[] = {
    { .name = "x-blockdev-change", .fn = qmp_x_blockdev_change, .args = &change_args },
    { .name = "blockdev-snapshot", .fn = qmp_blockdev_snapshot,
      .args = &qapi_blockdev_snapshot_args },
    { .name = "block_resize", .fn = qmp_block_resize, .args = &resize_args },
    { .name = "block-latency-histogram-set", .fn = qmp_block_latency_histogram_set,
      .args = &histogram_args },
    { .name = "query-blockstats", .fn = qmp_query_blockstats, .args = &blockstats_args,
      .ret = &qmp_ret_any },
    { .name = "block-set-write-threshold", .fn = qmp_block_set_write_threshold,
      .args = &write_threshold_args },
    { .name = "x-debug-query-block-graph", .fn = qmp_x_debug_query_block_graph,
      .ret = &qmp_ret_any },
    { .name = "query-block", .ret = &qmp_ret_any, .fn = qmp_query_block, .args = NULL },
    { .name = "blockdev-add", .fn = qmp_blockdev_add, .args = &qapi_blockdev_options },
    { .name = "blockdev-del", .fn = qmp_blockdev_del, .args = &qapi_blockdev_del_args },
    { .name = "query-named-block-nodes", .ret = &qmp_ret_any, .fn = qmp_query_named_block_nodes,
      .args = &qapi_query_named_block_nodes_args },
    { 0 },
};
