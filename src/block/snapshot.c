/*
 * snapshot.c - external snapshots (blockdev-snapshot): a new, empty
 * overlay takes the place of a node in the graph, with the node as its
 * backing file.  Everyone who used the node (exports, the monitor's
 * references stay with the node) now reads and writes through the overlay.
 *
 * Both nodes stay drained across the two graph changes, so no request
 * sees the overlay before its backing file is in place: a read of data
 * the overlay does not hold always reaches the old node.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/block-chain.h"
#include "blockd/block-global-state.h"
#include "blockd/block-int.h"
#include "blockd/graph-lock.h"
#include "blockd/main-loop.h"

/* Is @bs used in a way a snapshot must not change under (QEMU's op
 * blockers): as the backing file of a node, or by a job? */
static bool snapshot_blocked(BlockDriverState *bs, Error **errp)
{
    bool blocked = false;

    graph_rdlock_main_loop();
    list_for_each(n, &bs->parents) {
        BdrvChild *c = list_entry(n, BdrvChild, next_parent);
        const char *name = c->klass->get_parent_name ? c->klass->get_parent_name(c) : "";

        if (c->role & BDRV_CHILD_COW) {
            error_setg(errp, "Node '%s' is busy: node is used as backing hd of '%s'",
                       bs->node_name, name);
            blocked = true;
            break;
        }
    }
    graph_rdunlock_main_loop();
    return blocked || bdrv_op_is_blocked(bs, errp);
}

static bool has_parents(BlockDriverState *bs)
{
    bool any;

    graph_rdlock_main_loop();
    any = !list_empty(&bs->parents);
    graph_rdunlock_main_loop();
    return any;
}

void bdrv_snapshot_undo(BlockDriverState *node, BlockDriverState *overlay)
{
    BdrvChild *backing;

    GLOBAL_STATE_CODE();
    bdrv_ref(node);
    bdrv_drained_begin(node);
    bdrv_drained_begin(overlay);
    /* The overlay lets go of the node first (its backing edge's permissions
     * were computed for the users it had), then the users go back, which
     * the node granted them before: this cannot fail. */
    graph_rdlock_main_loop();
    backing = overlay->backing;
    graph_rdunlock_main_loop();
    if (backing) {
        bdrv_unref_child(overlay, backing);
    }
    bdrv_replace_node(overlay, node, &error_abort);
    bdrv_drained_end(overlay);
    bdrv_drained_end(node);
    bdrv_unref(node);
}

int bdrv_snapshot_check_node(BlockDriverState *node, Error **errp)
{
    GLOBAL_STATE_CODE();
    return snapshot_blocked(node, errp) ? -EBUSY : 0;
}

int bdrv_snapshot_append(BlockDriverState *node, BlockDriverState *overlay, Error **errp)
{
    BdrvChild *c;
    int ret;

    GLOBAL_STATE_CODE();
    if (snapshot_blocked(node, errp)) {
        return -EBUSY;
    }
    if (has_parents(overlay) || overlay == node) {
        error_setg(errp, "The overlay is already in use");
        return -EBUSY;
    }
    if (bdrv_backing_bs(overlay)) {
        error_setg(errp, "The overlay already has a backing image");
        return -EINVAL;
    }
    if (!overlay->drv->supports_backing) {
        error_setg(errp, "The overlay does not support backing images");
        return -ENOTSUP;
    }
    if (bdrv_try_change_aio_context(overlay, node->ctx, errp) < 0) {
        return -EINVAL;
    }
    /* Between the two changes nothing holds a node that only its users
     * held (an overlay of blockdev-snapshot-sync). */
    bdrv_ref(node);
    bdrv_drained_begin(node);
    bdrv_drained_begin(overlay);
    ret = bdrv_replace_node(node, overlay, errp);
    if (ret >= 0) {
        c = bdrv_attach_child(overlay, node, "backing", BDRV_CHILD_COW, errp);
        if (!c) {
            /* Give the users their node back. */
            bdrv_replace_node(overlay, node, NULL);
            ret = -EPERM;
        }
    }
    bdrv_drained_end(overlay);
    bdrv_drained_end(node);
    bdrv_unref(node);
    return ret;
}

/* ---- Internal snapshots ------------------------------------------------------------ */

bool bdrv_can_snapshot_internal(BlockDriverState *bs)
{
    GLOBAL_STATE_CODE();
    return bs->drv->bdrv_snapshot_create != NULL;
}

int bdrv_snapshot_internal_create(BlockDriverState *bs, const char *name)
{
    int ret;

    GLOBAL_STATE_CODE();
    if (!bdrv_can_snapshot_internal(bs)) {
        return -ENOTSUP;
    }
    /* One point in time: no request runs while the tables are copied. */
    bdrv_drained_begin(bs);
    ret = bs->drv->bdrv_snapshot_create(bs, name);
    bdrv_drained_end(bs);
    return ret;
}

int bdrv_snapshot_internal_delete(BlockDriverState *bs, const char *id, const char *name,
                                  json_object **info)
{
    int ret;

    GLOBAL_STATE_CODE();
    if (!bs->drv->bdrv_snapshot_delete) {
        return -ENOTSUP;
    }
    bdrv_drained_begin(bs);
    ret = bs->drv->bdrv_snapshot_delete(bs, id, name, info);
    bdrv_drained_end(bs);
    return ret;
}
