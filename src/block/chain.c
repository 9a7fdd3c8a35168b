/*
 * chain.c - backing chains: lookups, changing a backing file, dropping
 * intermediate layers (block-chain.h).
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/block-chain.h"
#include "blockd/block-global-state.h"
#include "blockd/block-io.h"
#include "blockd/main-loop.h"

bool bdrv_op_is_blocked(BlockDriverState *bs, Error **errp)
{
    char *why = NULL;

    GLOBAL_STATE_CODE();
    graph_rdlock_main_loop();
    list_for_each(it, &bs->parents) {
        BdrvChild *c = list_entry(it, BdrvChild, next_parent);

        if (c->klass->get_blocker && (why = c->klass->get_blocker(c))) {
            break;
        }
    }
    graph_rdunlock_main_loop();
    if (why) {
        error_setg(errp, "Node '%s' is busy: %s", bs->node_name, why);
        free(why);
        return true;
    }
    return false;
}

static BlockDriverState *next_locked(BlockDriverState *bs) GRAPH_RDLOCK
{
    if (bs->backing) {
        return bs->backing->bs;
    }
    return bs->drv->is_filter && bs->file ? bs->file->bs : NULL;
}

BlockDriverState *bdrv_filter_or_cow_bs(BlockDriverState *bs)
{
    BlockDriverState *next;

    GLOBAL_STATE_CODE();
    graph_rdlock_main_loop();
    next = next_locked(bs);
    graph_rdunlock_main_loop();
    return next;
}

bool bdrv_chain_contains(BlockDriverState *top, BlockDriverState *bs)
{
    GLOBAL_STATE_CODE();
    for (BlockDriverState *n = top; n; n = bdrv_filter_or_cow_bs(n)) {
        if (n == bs) {
            return true;
        }
    }
    return false;
}

BlockDriverState *bdrv_find_base(BlockDriverState *bs)
{
    BlockDriverState *next;

    GLOBAL_STATE_CODE();
    while ((next = bdrv_filter_or_cow_bs(bs))) {
        bs = next;
    }
    return bs;
}

BlockDriverState *bdrv_find_overlay(BlockDriverState *active, BlockDriverState *bs)
{
    GLOBAL_STATE_CODE();
    for (BlockDriverState *n = active; n; n = bdrv_filter_or_cow_bs(n)) {
        if (bdrv_filter_or_cow_bs(n) == bs) {
            return n;
        }
    }
    return NULL;
}

/* Do @a and @b name the same existing file? */
static bool same_file(const char *a, const char *b)
{
    char ra[PATH_MAX], rb[PATH_MAX];

    return realpath(a, ra) && realpath(b, rb) && strcmp(ra, rb) == 0;
}

BlockDriverState *bdrv_find_backing_image(BlockDriverState *bs, const char *name)
{
    char buf[PATH_MAX + 16];

    GLOBAL_STATE_CODE();
    for (BlockDriverState *n = bs, *next; n; n = next) {
        BlockDriverInfo bdi = { 0 };
        const char *fname;

        next = bdrv_filter_or_cow_bs(n);
        if (!next) {
            break;
        }
        fname = bdrv_get_filename(next, buf, sizeof(buf));
        if (n->drv->bdrv_get_info && n->drv->bdrv_get_info(n, &bdi) == 0 &&
            bdi.backing_file && strcmp(bdi.backing_file, name) == 0) {
            return next;
        }
        if (strcmp(fname, name) == 0 || same_file(fname, name)) {
            return next;
        }
    }
    return NULL;
}

const char *bdrv_backing_name(BlockDriverState *base, char *buf, size_t size)
{
    GLOBAL_STATE_CODE();
    return bdrv_get_filename(base, buf, size);
}

const char *bdrv_backing_format(BlockDriverState *base)
{
    GLOBAL_STATE_CODE();
    return base->drv->format_name;
}

int bdrv_set_backing_hd(BlockDriverState *bs, BlockDriverState *backing, Error **errp)
{
    BlockDriverState *old = bdrv_backing_bs(bs);
    BdrvChild *child;
    int ret = 0;

    GLOBAL_STATE_CODE();
    if (old == backing) {
        return 0;
    }
    /* Both may hang only from the edge that is about to change. */
    if (backing) {
        bdrv_ref(backing);
    }
    if (old) {
        bdrv_ref(old);
    }
    bdrv_drained_begin(bs);
    graph_rdlock_main_loop();
    child = bs->backing;
    graph_rdunlock_main_loop();
    if (child) {
        bdrv_unref_child(bs, child);
    }
    if (backing && !bdrv_attach_child(bs, backing, "backing", BDRV_CHILD_COW, errp)) {
        ret = -EPERM;
        if (old) {
            bdrv_attach_child(bs, old, "backing", BDRV_CHILD_COW, NULL);
        }
    }
    bdrv_drained_end(bs);
    bdrv_unref(old);
    bdrv_unref(backing);
    return ret;
}

/* Is @bs @top or anywhere below it? */
static bool in_subtree(BlockDriverState *top, BlockDriverState *bs) GRAPH_RDLOCK
{
    if (top == bs) {
        return true;
    }
    list_for_each(n, &top->children) {
        if (in_subtree(list_entry(n, BdrvChild, next)->bs, bs)) {
            return true;
        }
    }
    return false;
}

int bdrv_set_file(BlockDriverState *bs, BlockDriverState *file, Error **errp)
{
    BlockDriverState *old;
    BdrvChild *child;
    unsigned role;
    bool cycle;
    int ret = 0;

    GLOBAL_STATE_CODE();
    graph_rdlock_main_loop();
    child = bs->file;
    old = child ? child->bs : NULL;
    role = child ? child->role : 0;
    cycle = in_subtree(file, bs);
    graph_rdunlock_main_loop();
    if (old == file) {
        return 0;
    }
    if (!child || !(role & BDRV_CHILD_FILTERED)) {
        error_setg(errp, "blockd cannot replace the file child of '%s' in blockdev-reopen "
                   "(only that of a filter, or of a raw node without offset and size)",
                   bs->node_name);
        return -ENOTSUP;
    }
    if (cycle) {
        error_setg(errp, "Making '%s' a file child of '%s' would create a cycle",
                   file->node_name, bs->node_name);
        return -EINVAL;
    }
    bdrv_ref(file);
    bdrv_ref(old);
    bdrv_drained_begin(bs);
    bdrv_unref_child(bs, child);
    if (!bdrv_attach_child(bs, file, "file", role, errp)) {
        ret = -EPERM;
        bdrv_attach_child(bs, old, "file", role, NULL);
    }
    graph_rdlock_main_loop();
    if (bs->file) {              /* (the old one could not come back: none) */
        bs->total_bytes = bdrv_getlength(bs->file->bs);
        bs->bl = bs->file->bs->bl;
    }
    graph_rdunlock_main_loop();
    bdrv_drained_end(bs);
    bdrv_unref(old);
    bdrv_unref(file);
    return ret;
}

int bdrv_change_backing_file(BlockDriverState *bs, const char *file, const char *fmt,
                             Error **errp)
{
    int ret;

    GLOBAL_STATE_CODE();
    if (!bs->drv->bdrv_change_backing_file) {
        error_setg(errp, "Could not change the backing file to '%s': Operation not "
                   "supported", file ? file : "");
        return -ENOTSUP;
    }
    bdrv_drained_begin(bs);
    ret = bs->drv->bdrv_change_backing_file(bs, file, fmt, errp);
    bdrv_drained_end(bs);
    return ret;
}

/* The nodes that have @top as their backing file. */
static BlockDriverState **cow_parents(BlockDriverState *top, int *n)
{
    BlockDriverState **v = NULL;

    *n = 0;
    graph_rdlock_main_loop();
    list_for_each(it, &top->parents) {
        BdrvChild *c = list_entry(it, BdrvChild, next_parent);

        if ((c->role & BDRV_CHILD_COW) && !c->klass->is_backend &&
            c->klass->parent_type && strcmp(c->klass->parent_type, "block-driver") == 0) {
            v = realloc(v, (*n + 1) * sizeof(*v));
            if (!v) {
                abort();
            }
            v[(*n)++] = c->opaque;
        }
    }
    graph_rdunlock_main_loop();
    return v;
}

/* A read-only overlay (a snapshot below the active layer) is switched to
 * read-write for the header change and back, as QEMU does. */
static int change_backing_file_rw(BlockDriverState *bs, const char *name, const char *fmt,
                                  Error **errp)
{
    bool ro = bs->read_only;
    int ret;

    if (ro && bdrv_reopen_set_read_only(bs, false, errp) < 0) {
        return -EACCES;
    }
    ret = bdrv_change_backing_file(bs, name, fmt, errp);
    if (ro) {
        bdrv_reopen_set_read_only(bs, true, NULL);
    }
    return ret;
}

int bdrv_drop_intermediate(BlockDriverState *top, BlockDriverState *base,
                           const char *backing_file, Error **errp)
{
    char buf[PATH_MAX + 16];
    const char *name = backing_file ? backing_file : bdrv_backing_name(base, buf, sizeof(buf));
    BlockDriverState **overlays;
    int n, ret = 0;

    GLOBAL_STATE_CODE();
    bdrv_ref(top);
    overlays = cow_parents(top, &n);
    for (int i = 0; i < n && ret == 0; i++) {
        bdrv_ref(overlays[i]);
    }
    /* Headers first: if one cannot be written, the graph is unchanged. */
    for (int i = 0; i < n && ret == 0; i++) {
        ret = change_backing_file_rw(overlays[i], name, bdrv_backing_format(base), errp);
    }
    for (int i = 0; i < n && ret == 0; i++) {
        ret = bdrv_set_backing_hd(overlays[i], base, errp);
    }
    for (int i = 0; i < n; i++) {
        bdrv_unref(overlays[i]);
    }
    free(overlays);
    bdrv_unref(top);
    return ret;
}

/* ---- I/O ------------------------------------------------------------------------ */

int coroutine_fn bdrv_co_allocation_depth(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                          int64_t *pnum)
{
    int depth = 0;

    IO_CODE();
    for (BlockDriverState *n = bs; n; n = next_locked(n)) {
        int64_t p;
        int st;

        if (n->drv->is_filter) {
            continue;                   /* filters hold no data of their own */
        }
        depth++;
        if (n != bs && offset >= bdrv_getlength(n)) {
            *pnum = bytes;              /* a shorter layer: it reads as zeroes here */
            return depth;
        }
        st = bdrv_co_block_status(n, offset, bytes, &p);
        if (st < 0) {
            return st;
        }
        if (p > 0 && p < bytes) {
            bytes = p;
        }
        if (st & BDRV_BLOCK_ALLOCATED) {
            *pnum = bytes;
            return depth;
        }
    }
    *pnum = bytes;
    return 0;
}

int coroutine_fn bdrv_co_is_allocated_above(BlockDriverState *top, BlockDriverState *base,
                                            int64_t offset, int64_t bytes, int64_t *pnum)
{
    IO_CODE();
    for (BlockDriverState *n = top; n && n != base; n = next_locked(n)) {
        int64_t p;
        int st;

        if (n != top && offset >= bdrv_getlength(n)) {
            *pnum = bytes;               /* this shorter layer reads as zeroes */
            return 1;
        }
        st = bdrv_co_block_status(n, offset, bytes, &p);
        if (st < 0) {
            return st;
        }
        if (st & BDRV_BLOCK_ALLOCATED) {
            *pnum = p;
            return 1;
        }
        if (p > 0 && p < bytes) {
            bytes = p;
        }
    }
    *pnum = bytes;
    return 0;
}
