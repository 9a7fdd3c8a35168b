/*
 * reopen.c - switching nodes between read-only and read-write while they
 * run (block-chain.h).
 *
 * A format and the file below it switch together.  Towards read-write
 * the lowest node goes first, and each node's permissions are refreshed
 * before its driver reopens, so that a format can write its header
 * through a file that already takes writes.  Towards read-only the top
 * goes first: its driver writes out what it caches, then it drops the
 * write permission it held on the file below.
 */
#include <errno.h>
#include <stdlib.h>

#include "blockd/block-chain.h"
#include "blockd/block-global-state.h"
#include "blockd/main-loop.h"

static bool has_writer(BlockDriverState *bs, Error **errp);

typedef struct NodeVec {
    BlockDriverState **v;
    int n;
} NodeVec;

static void vec_add(NodeVec *nv, BlockDriverState *bs)
{
    for (int i = 0; i < nv->n; i++) {
        if (nv->v[i] == bs) {
            return;
        }
    }
    nv->v = realloc(nv->v, (nv->n + 1) * sizeof(*nv->v));
    if (!nv->v) {
        abort();
    }
    nv->v[nv->n++] = bs;
}

/* @bs, then its children that are not backing files, top-down. */
static void collect(BlockDriverState *bs, NodeVec *nv) GRAPH_RDLOCK
{
    vec_add(nv, bs);
    list_for_each(it, &bs->children) {
        BdrvChild *c = list_entry(it, BdrvChild, next);

        if (!(c->role & BDRV_CHILD_COW)) {
            collect(c->bs, nv);
        }
    }
}

static int refresh(BlockDriverState *bs, Error **errp)
{
    int ret;

    graph_wrlock();
    ret = bdrv_refresh_perms(bs, errp);
    graph_wrunlock();
    return ret;
}

static void set_flags(BlockDriverState *bs, bool read_only)
{
    bs->read_only = read_only;
    bs->open_flags = read_only ? bs->open_flags & ~BDRV_O_RDWR : bs->open_flags | BDRV_O_RDWR;
}

static int driver_reopen(BlockDriverState *bs, bool read_only, Error **errp)
{
    int flags = read_only ? bs->open_flags & ~BDRV_O_RDWR : bs->open_flags | BDRV_O_RDWR;

    return bs->drv->bdrv_reopen ? bs->drv->bdrv_reopen(bs, flags, errp) : 0;
}

/* Switch one node; on failure it is as it was. */
static int reopen_one(BlockDriverState *bs, bool read_only, Error **errp)
{
    int ret;

    if (!read_only) {
        set_flags(bs, false);
        ret = refresh(bs, errp);
        if (ret == 0 && (ret = driver_reopen(bs, false, errp)) < 0) {
            set_flags(bs, true);
            refresh(bs, NULL);
        } else if (ret < 0) {
            set_flags(bs, true);
        }
        return ret;
    }
    ret = driver_reopen(bs, true, errp);
    if (ret < 0) {
        return ret;
    }
    set_flags(bs, true);
    ret = refresh(bs, errp);
    if (ret < 0) {
        set_flags(bs, false);
        driver_reopen(bs, false, NULL);
    }
    return ret;
}

bool bdrv_has_writer(BlockDriverState *bs)
{
    GLOBAL_STATE_CODE();
    return has_writer(bs, NULL);
}

/* A parent that writes (or keeps the right to) forbids read-only. */
static bool has_writer(BlockDriverState *bs, Error **errp)
{
    bool found = false;

    graph_rdlock_main_loop();
    list_for_each(it, &bs->parents) {
        BdrvChild *c = list_entry(it, BdrvChild, next_parent);

        if (c->perm & (BLK_PERM_WRITE | BLK_PERM_WRITE_UNCHANGED)) {
            char *who = bdrv_child_user_desc(c);
            error_setg(errp, "Cannot make block node '%s' read-only, %s has a writer on it",
                       bs->node_name, who);
            free(who);
            found = true;
            break;
        }
    }
    graph_rdunlock_main_loop();
    return found;
}

int bdrv_reopen_set_read_only(BlockDriverState *bs, bool read_only, Error **errp)
{
    NodeVec nv = { 0 };
    bool *changed;
    int ret = 0, done = 0;

    GLOBAL_STATE_CODE();
    if (bs->read_only == read_only) {
        return 0;
    }
    if (read_only && has_writer(bs, errp)) {
        return -EPERM;
    }
    graph_rdlock_main_loop();
    collect(bs, &nv);
    graph_rdunlock_main_loop();
    changed = calloc(nv.n, sizeof(*changed));
    if (!changed) {
        abort();
    }

    bdrv_drained_begin(bs);
    /* Towards read-write from the bottom, towards read-only from the top. */
    for (; done < nv.n; done++) {
        BlockDriverState *n = nv.v[read_only ? done : nv.n - 1 - done];

        if (n->read_only == read_only) {
            continue;
        }
        ret = reopen_one(n, read_only, errp);
        if (ret < 0) {
            break;
        }
        changed[done] = true;
    }
    if (ret < 0) {
        /* Undo in reverse order what was switched. */
        while (done-- > 0) {
            BlockDriverState *n = nv.v[read_only ? done : nv.n - 1 - done];

            if (changed[done]) {
                reopen_one(n, !read_only, NULL);
            }
        }
    }
    bdrv_drained_end(bs);
    free(changed);
    free(nv.v);
    return ret;
}

void bdrv_reopen_set_io_options(BlockDriverState *bs, bool unmap, int detect_zeroes,
                                bool auto_read_only)
{
    GLOBAL_STATE_CODE();
    /* The write path reads these: no request runs while they change. */
    bdrv_drained_begin(bs);
    bs->open_flags = (bs->open_flags & ~(BDRV_O_UNMAP | BDRV_O_AUTO_RDONLY)) |
                     (unmap ? BDRV_O_UNMAP : 0) | (auto_read_only ? BDRV_O_AUTO_RDONLY : 0);
    bs->detect_zeroes = detect_zeroes;
    bdrv_drained_end(bs);
}

int bdrv_reopen_set_cache(BlockDriverState *bs, bool direct, bool no_flush, Error **errp)
{
    int ret = 0;

    GLOBAL_STATE_CODE();
    bdrv_drained_begin(bs);
    if (direct != !!(bs->open_flags & BDRV_O_NOCACHE) && bs->drv->bdrv_set_cache) {
        ret = bs->drv->bdrv_set_cache(bs, direct, errp);
    }
    if (ret == 0) {
        bs->open_flags = (bs->open_flags & ~(BDRV_O_NOCACHE | BDRV_O_NO_FLUSH)) |
                         (direct ? BDRV_O_NOCACHE : 0) | (no_flush ? BDRV_O_NO_FLUSH : 0);
    }
    bdrv_drained_end(bs);
    return ret;
}
