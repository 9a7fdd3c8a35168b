/*
 * perm.c - the permission system.
 *
 * A node's cumulative permissions are the OR of what its parents need and
 * the AND of what they share; two parents conflict when one needs what the
 * other does not share.  Changing permissions is a transaction over the
 * node and everything below it: check every node (parents before children),
 * then commit all or restore all.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/block-global-state.h"
#include "blockd/main-loop.h"

static const char *const perm_names[] = {
    "consistent read", "write", "write unchanged", "resize",
};

const char *bdrv_perm_names(uint64_t perm, char *buf, int size)
{
    int len = 0;

    buf[0] = '\0';
    for (unsigned i = 0; i < ARRAY_SIZE(perm_names); i++) {
        if (perm & (1ULL << i)) {
            len += snprintf(buf + len, len < size ? size - len : 0, "%s%s",
                            len ? ", " : "", perm_names[i]);
        }
    }
    return buf;
}

void bdrv_default_child_perm(BlockDriverState *bs, BdrvChild *c, unsigned role,
                             uint64_t perm, uint64_t shared,
                             uint64_t *nperm, uint64_t *nshared)
{
    (void)c;
    if (role & BDRV_CHILD_FILTERED) {
        /* Filters pass everything through. */
        *nperm = perm & BLK_PERM_ALL;
        *nshared = shared & BLK_PERM_ALL;
        return;
    }
    if (role & BDRV_CHILD_COW) {
        /* A backing file is only read, and may change only if our user
         * tolerates changes. */
        *nperm = perm & BLK_PERM_CONSISTENT_READ;
        *nshared = BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE_UNCHANGED;
        if (shared & BLK_PERM_WRITE) {
            *nshared |= BLK_PERM_WRITE | BLK_PERM_RESIZE;
        }
        return;
    }
    /* Data and metadata children of a format. */
    *nperm = perm & BLK_PERM_ALL;
    *nshared = shared & BLK_PERM_ALL;
    if (role & BDRV_CHILD_METADATA) {
        *nperm |= BLK_PERM_CONSISTENT_READ;
        if (!bs->read_only) {
            *nperm |= BLK_PERM_WRITE | BLK_PERM_RESIZE;
        }
        *nshared &= ~(uint64_t)(BLK_PERM_WRITE | BLK_PERM_RESIZE);
    }
    if (role & BDRV_CHILD_DATA) {
        if (*nperm & BLK_PERM_WRITE_UNCHANGED) {
            *nperm |= BLK_PERM_WRITE;
        }
        if (*nperm & BLK_PERM_WRITE) {
            *nperm |= BLK_PERM_RESIZE;
        }
        *nshared &= ~(uint64_t)BLK_PERM_RESIZE;
    }
    if (bs->open_flags & BDRV_O_FORCE_SHARE) {
        *nshared = BLK_PERM_ALL;
    }
}

/* ---- Collecting the subtree in topological order ------------------------ */

typedef struct NodeList {
    BlockDriverState **v;
    int n, cap;
} NodeList;

static bool node_list_has(NodeList *l, BlockDriverState *bs)
{
    for (int i = 0; i < l->n; i++) {
        if (l->v[i] == bs) {
            return true;
        }
    }
    return false;
}

static void node_list_add(NodeList *l, BlockDriverState *bs)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 16;
        l->v = realloc(l->v, l->cap * sizeof(*l->v));
        if (!l->v) {
            abort();
        }
    }
    l->v[l->n++] = bs;
}

/* Post-order DFS; reversed afterwards, it puts parents before children. */
static void collect_postorder(BlockDriverState *bs, NodeList *seen, NodeList *out)
    GRAPH_RDLOCK
   
{
    if (node_list_has(seen, bs)) {
        return;
    }
    node_list_add(seen, bs);
    list_for_each(n, &bs->children) {
        collect_postorder(list_entry(n, BdrvChild, next)->bs, seen, out);
    }
    node_list_add(out, bs);
}

static void collect_topological(BlockDriverState *bs, NodeList *out) GRAPH_RDLOCK
{
    NodeList seen = { 0 }, post = { 0 };

    collect_postorder(bs, &seen, &post);
    for (int i = post.n - 1; i >= 0; i--) {
        node_list_add(out, post.v[i]);
    }
    free(seen.v);
    free(post.v);
}

/* ---- Checking one node ---------------------------------------------------- */

char *bdrv_child_user_desc(BdrvChild *c)
{
    char *s;

    if (c->klass && c->klass->get_parent_desc) {
        return c->klass->get_parent_desc(c);
    }
    if (asprintf(&s, "an unnamed user") < 0) {
        abort();
    }
    return s;
}

static void cumulative_perms(BlockDriverState *bs, uint64_t *perm, uint64_t *shared)
    GRAPH_RDLOCK
   
{
    *perm = 0;
    *shared = BLK_PERM_ALL;
    list_for_each(n, &bs->parents) {
        BdrvChild *c = list_entry(n, BdrvChild, next_parent);
        *perm |= c->perm;
        *shared &= c->shared_perm;
    }
}

static int check_parent_conflicts(BlockDriverState *bs, Error **errp) GRAPH_RDLOCK
{
    list_for_each(na, &bs->parents) {
        BdrvChild *a = list_entry(na, BdrvChild, next_parent);
        list_for_each(nb, &bs->parents) {
            BdrvChild *b = list_entry(nb, BdrvChild, next_parent);
            uint64_t conflict = b->perm & ~a->shared_perm;
            char names[96];
            char *adesc, *bdesc;

            if (a == b || !conflict) {
                continue;
            }
            adesc = bdrv_child_user_desc(a);
            bdesc = bdrv_child_user_desc(b);
            error_setg(errp, "Permission conflict on node '%s': permissions '%s' are "
                       "both required by %s (uses node '%s' as '%s' child) and "
                       "unshared by %s (uses node '%s' as '%s' child).",
                       bs->node_name, bdrv_perm_names(conflict, names, sizeof(names)),
                       bdesc, bs->node_name, b->name, adesc, bs->node_name, a->name);
            free(adesc);
            free(bdesc);
            return -1;
        }
    }
    return 0;
}

/* ---- The transaction -------------------------------------------------------- */

typedef struct EdgeBackup {
    BdrvChild *c;
    uint64_t perm, shared;
} EdgeBackup;

int bdrv_refresh_perms(BlockDriverState *bs, Error **errp)
{
    NodeList order = { 0 };
    EdgeBackup *backup = NULL;
    int nbackup = 0, cap = 0, checked = 0, ret = 0;
    uint64_t *perm, *shared;

    GLOBAL_STATE_CODE();
    assert_graph_writable();
    collect_topological(bs, &order);
    perm = calloc(order.n, sizeof(*perm));
    shared = calloc(order.n, sizeof(*shared));

    for (int i = 0; i < order.n; i++) {
        BlockDriverState *n = order.v[i];

        cumulative_perms(n, &perm[i], &shared[i]);
        if (check_parent_conflicts(n, errp) < 0) {
            ret = -1;
            break;
        }
        if ((perm[i] & (BLK_PERM_WRITE | BLK_PERM_WRITE_UNCHANGED)) && n->read_only) {
            error_setg(errp, "Block node '%s' is read-only", n->node_name);
            ret = -1;
            break;
        }
        if (n->drv->bdrv_check_perm &&
            n->drv->bdrv_check_perm(n, perm[i], shared[i], errp) < 0) {
            ret = -1;
            break;
        }
        checked = i + 1;

        /* Derive what this node needs from each child, for the next nodes. */
        list_for_each(cn, &n->children) {
            BdrvChild *c = list_entry(cn, BdrvChild, next);
            uint64_t cp, cs;

            if (n->drv->bdrv_child_perm) {
                n->drv->bdrv_child_perm(n, c, c->role, perm[i], shared[i], &cp, &cs);
            } else {
                bdrv_default_child_perm(n, c, c->role, perm[i], shared[i], &cp, &cs);
            }
            if (nbackup == cap) {
                cap = cap ? cap * 2 : 16;
                backup = realloc(backup, cap * sizeof(*backup));
                if (!backup) {
                    abort();
                }
            }
            backup[nbackup++] = (EdgeBackup){ c, c->perm, c->shared_perm };
            c->perm = cp;
            c->shared_perm = cs;
        }
    }

    if (ret < 0) {
        /* Roll back: edges in reverse order, then tell the drivers. */
        for (int i = nbackup - 1; i >= 0; i--) {
            backup[i].c->perm = backup[i].perm;
            backup[i].c->shared_perm = backup[i].shared;
        }
        for (int i = 0; i < checked; i++) {
            if (order.v[i]->drv->bdrv_abort_perm_update) {
                order.v[i]->drv->bdrv_abort_perm_update(order.v[i]);
            }
        }
    } else {
        for (int i = 0; i < order.n; i++) {
            BlockDriverState *n = order.v[i];
            n->perm = perm[i];
            n->shared_perm = shared[i];
            if (n->drv->bdrv_set_perm) {
                n->drv->bdrv_set_perm(n, perm[i], shared[i]);
            }
        }
    }
    free(backup);
    free(perm);
    free(shared);
    free(order.v);
    return ret;
}

int bdrv_child_try_set_perm(BdrvChild *c, uint64_t perm, uint64_t shared,
                            Error **errp)
{
    uint64_t old_perm = c->perm, old_shared = c->shared_perm;

    GLOBAL_STATE_CODE();
    c->perm = perm;
    c->shared_perm = shared;
    if (bdrv_refresh_perms(c->bs, errp) < 0) {
        c->perm = old_perm;
        c->shared_perm = old_shared;
        return -1;
    }
    return 0;
}
