/*
 * change-ctx.c - moving a connected part of the block graph to another
 * thread.
 *
 * A node never moves alone.  Its children, its parent nodes and the users
 * that are not nodes (jobs, backends) form one connected component --
 * through every edge, and through the other nodes of a user that holds
 * several (a job's source and target) -- and the whole component moves or
 * nothing does:
 *
 *   1. collect the component (graph read lock);
 *   2. ask every user that is not a node whether it can follow; the first
 *      refusal is the error, and nothing has changed;
 *   3. quiesce every node of the component, then wait until none has a
 *      request in flight and no user is busy (jobs park at a pause point);
 *      collect again, and drain what joined meanwhile, until it is stable;
 *   4. ask again, then switch the home context of every node and user;
 *   5. end every drain.
 *
 * Draining only the node that was named is not enough: a job on a child
 * node would still be running when its context changes under it.
 */
#include <errno.h>
#include <stdlib.h>

#include "blockd/aio-wait.h"
#include "blockd/block-global-state.h"
#include "blockd/main-loop.h"
#include "block-internal.h"

typedef struct Component {
    BlockDriverState **nodes;
    int nnodes;
    BdrvChild **users;            /* edges from parents that are not nodes */
    int nusers;
} Component;

static void *grow(void *array, int n, size_t size)
{
    /* Capacity 4, 8, 16...: grown when @n reaches it. */
    if (n == 0 || (n >= 4 && (n & (n - 1)) == 0)) {
        array = realloc(array, (n ? 2 * n : 4) * size);
        if (!array) {
            abort();
        }
    }
    return array;
}

static bool component_has(Component *comp, BlockDriverState *bs)
{
    for (int i = 0; i < comp->nnodes; i++) {
        if (comp->nodes[i] == bs) {
            return true;
        }
    }
    return false;
}

static void collect(Component *comp, BlockDriverState *bs) GRAPH_RDLOCK;

static void collect_user(Component *comp, BdrvChild *c) GRAPH_RDLOCK
{
    BdrvChild **siblings;
    int n = 0;

    for (int i = 0; i < comp->nusers; i++) {
        if (comp->users[i] == c) {
            return;
        }
    }
    comp->users = grow(comp->users, comp->nusers, sizeof(*comp->users));
    comp->users[comp->nusers++] = c;
    /* A user with several nodes (a job) runs in one context: all of them move. */
    siblings = c->klass->get_siblings ? c->klass->get_siblings(c, &n) : NULL;
    for (int i = 0; i < n; i++) {
        collect_user(comp, siblings[i]);
        collect(comp, siblings[i]->bs);
    }
}

static void collect(Component *comp, BlockDriverState *bs)
{
    if (component_has(comp, bs)) {
        return;
    }
    comp->nodes = grow(comp->nodes, comp->nnodes, sizeof(*comp->nodes));
    comp->nodes[comp->nnodes++] = bs;
    list_for_each(n, &bs->children) {
        collect(comp, list_entry(n, BdrvChild, next)->bs);
    }
    list_for_each(n, &bs->parents) {
        BdrvChild *c = list_entry(n, BdrvChild, next_parent);

        if (bdrv_child_is_node_parent(c)) {
            collect(comp, c->opaque);
        } else {
            collect_user(comp, c);
        }
    }
}

static bool component_busy(Component *comp)
{
    for (int i = 0; i < comp->nnodes; i++) {
        BlockDriverState *bs = comp->nodes[i];

        if (atomic_read(&bs->in_flight) > 0 || bdrv_parents_busy(bs, NULL)) {
            return true;
        }
    }
    return false;
}

static bool component_can_move(Component *comp, AioContext *ctx, Error **errp)
{
    for (int i = 0; i < comp->nusers; i++) {
        BdrvChild *c = comp->users[i];

        if (c->klass->can_set_aio_ctx && !c->klass->can_set_aio_ctx(c, ctx, errp)) {
            return false;
        }
    }
    return true;
}

/* Quiesce the nodes of @comp not yet in @drained (taking a reference on
 * each); false if there were none. */
static bool drain_new_nodes(Component *drained, Component *comp)
{
    bool added = false;

    for (int i = 0; i < comp->nnodes; i++) {
        BlockDriverState *bs = comp->nodes[i];

        if (!component_has(drained, bs)) {
            bdrv_ref(bs);
            bdrv_do_drained_begin_quiesce(bs);
            drained->nodes = grow(drained->nodes, drained->nnodes, sizeof(*drained->nodes));
            drained->nodes[drained->nnodes++] = bs;
            added = true;
        }
    }
    return added;
}

static void component_free(Component *comp)
{
    free(comp->nodes);
    free(comp->users);
    *comp = (Component){ 0 };
}

int bdrv_try_change_aio_context(BlockDriverState *bs, AioContext *ctx, Error **errp)
{
    Component drained = { 0 }, comp = { 0 };
    int ret = 0;

    GLOBAL_STATE_CODE();
    assert(!in_coroutine());
    /* A refusal known now needs no drain (asked again once drained). */
    graph_rdlock_main_loop();
    collect(&comp, bs);
    if (!component_can_move(&comp, ctx, errp)) {
        graph_rdunlock_main_loop();
        component_free(&comp);
        return -EPERM;
    }
    graph_rdunlock_main_loop();
    /*
     * Drain until the component stops changing: what runs while we wait
     * (a job finishing in its exit BH) may rewire it.  Once it is drained
     * nothing else runs before we return, so the last collection is the
     * one that moves.
     */
    for (;;) {
        component_free(&comp);
        graph_rdlock_main_loop();
        collect(&comp, bs);
        graph_rdunlock_main_loop();
        if (!drain_new_nodes(&drained, &comp)) {
            break;
        }
        AIO_WAIT_WHILE_UNLOCKED(NULL, component_busy(&drained));
    }

    graph_rdlock_main_loop();
    if (component_can_move(&comp, ctx, errp)) {
        for (int i = 0; i < comp.nnodes; i++) {
            comp.nodes[i]->ctx = ctx;
        }
        for (int i = 0; i < comp.nusers; i++) {
            BdrvChild *c = comp.users[i];

            if (c->klass->set_aio_ctx) {
                c->klass->set_aio_ctx(c, ctx);
            }
        }
    } else {
        ret = -EPERM;
    }
    graph_rdunlock_main_loop();

    for (int i = 0; i < drained.nnodes; i++) {
        bdrv_drained_end(drained.nodes[i]);
    }
    for (int i = 0; i < drained.nnodes; i++) {
        bdrv_unref(drained.nodes[i]);
    }
    component_free(&comp);
    component_free(&drained);
    return ret;
}
