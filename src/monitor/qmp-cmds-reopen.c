/*
 * qmp-cmds-reopen.c - blockdev-reopen: new options for running nodes, all
 * nodes of one command or none.
 *
 * What blockd changes on a running node: read-only, auto-read-only,
 * discard, detect-zeroes, cache.direct, cache.no-flush and the backing
 * node (another node, or none).  Every other option must keep the value
 * the node was opened with (an option left out counts as a change, as it
 * would reset to its default): otherwise the command fails with QEMU's
 * "Cannot change the option" message and changes nothing.
 *
 * A child that was opened from its parent's options (inline, not named
 * by reference) and stays, follows the parent's new cache mode, or takes
 * the one given in its own options, as in QEMU.  Such a file child may
 * be given as a set of options, checked like its parent; a child named by
 * reference may not.  Another node may become the file child where that
 * child is a filtered one (a filter, raw without offset and size: how a
 * copy-before-write filter goes in under a running export); elsewhere,
 * and new options for the backing child, are refused by name.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/block-chain.h"
#include "blockd/block-global-state.h"
#include "blockd/block-int.h"
#include "blockd/main-loop.h"
#include "blockd/monitor.h"
#include "blockd/options.h"
#include "monitor-internal.h"
#include "qapi-schemas.h"

/* The options reopen acts on; the rest must stay as they are. */
static const char *const changeable[] = {
    "node-name", "driver", "read-only", "auto-read-only", "discard", "detect-zeroes",
    "backing", "file", "cache", NULL,
};

typedef struct CachePlan {
    BlockDriverState *bs;       /* NULL: nothing to change */
    bool direct, no_flush;
    bool old_direct, old_no_flush, applied;
} CachePlan;

typedef struct ReopenPlan {
    BlockDriverState *bs;
    json_object *opts;
    bool read_only, auto_read_only, unmap;
    int detect_zeroes;
    BlockDriverState *backing;
    CachePlan cache;
    /* Its inline file and backing children that follow the cache mode. */
    CachePlan kids[2];
    /* What to restore if a later node fails. */
    bool old_read_only, old_auto_read_only, old_unmap, applied;
    int old_detect_zeroes;
    BlockDriverState *old_backing;
    /* A new file child (by reference), or NULL. */
    BlockDriverState *new_file;
    BlockDriverState *old_file;
} ReopenPlan;

static bool is_changeable(const char *key)
{
    for (int i = 0; changeable[i]; i++) {
        if (!strcmp(key, changeable[i])) {
            return true;
        }
    }
    return false;
}

/* Does @a (the options the node has) equal @b (the new ones), recursively?
 * On the first difference its dotted name goes to @name. */
static bool same_value(const char *prefix, json_object *a, json_object *b, char *name,
                       size_t size)
{
    if (json_object_is_type(a, json_type_object) && json_object_is_type(b, json_type_object)) {
        json_object_object_foreach(a, key, va) {
            char sub[256];
            json_object *vb = NULL;

            snprintf(sub, sizeof(sub), "%s%s%s", prefix, *prefix ? "." : "", key);
            json_object_object_get_ex(b, key, &vb);
            if (!same_value(sub, va, vb, name, size)) {
                return false;
            }
        }
        json_object_object_foreach(b, key2, vb2) {
            if (!json_object_object_get_ex(a, key2, NULL)) {
                (void)vb2;
                snprintf(name, size, "%s%s%s", prefix, *prefix ? "." : "", key2);
                return false;
            }
        }
        return true;
    }
    if (!a || !b || !json_object_equal(a, b)) {
        snprintf(name, size, "%s", prefix);
        return false;
    }
    return true;
}

/* Every option of @new outside the changeable ones equals @bs's. */
static bool check_unchanged(BlockDriverState *bs, json_object *new, Error **errp)
{
    json_object *old = json_object_new_object(), *cur = json_object_new_object();
    char name[256] = "";
    bool same;

    if (bs->options) {
        json_object_object_foreach(bs->options, k, v) {
            if (!is_changeable(k)) {
                json_object_object_add(old, k, json_object_get(v));
            }
        }
    }
    json_object_object_foreach(new, k2, v2) {
        if (!is_changeable(k2)) {
            json_object_object_add(cur, k2, json_object_get(v2));
        }
    }
    same = same_value("", old, cur, name, sizeof(name));
    json_object_put(old);
    json_object_put(cur);
    if (!same) {
        error_setg(errp, "Cannot change the option '%s'", name);
    }
    return same;
}

/* "cache" of @opts, each member @parent's value unless given. */
static bool get_cache(json_object *opts, const CachePlan *parent, CachePlan *c, Error **errp)
{
    json_object *cache;

    c->direct = parent ? parent->direct : false;
    c->no_flush = parent ? parent->no_flush : false;
    return !json_object_object_get_ex(opts, "cache", &cache) ||
           (opt_get_bool(cache, "direct", &c->direct, errp) &&
            opt_get_bool(cache, "no-flush", &c->no_flush, errp));
}

/* @child stays @p->bs's child under @key: if inline, it follows the cache. */
static void follow_cache(ReopenPlan *p, CachePlan *kid, BlockDriverState *child,
                         bool inline_child)
{
    if (inline_child) {
        kid->bs = child;
        kid->direct = p->cache.direct;
        kid->no_flush = p->cache.no_flush;
    }
}

/* "file": the node's own file child, by name or with unchanged options. */
static bool plan_file(ReopenPlan *p, Error **errp)
{
    BlockDriverState *bs = p->bs, *file = bdrv_file_bs(bs);
    bool inline_child = bdrv_file_is_inline(bs);
    json_object *v, *name;

    if (!json_object_object_get_ex(p->opts, "file", &v) || !file) {
        return true;
    }
    if (json_object_is_type(v, json_type_string)) {
        if (strcmp(json_object_get_string(v), file->node_name)) {
            p->new_file = bdrv_find_node(json_object_get_string(v));
            if (!p->new_file) {
                error_setg(errp, "Cannot find device='' nor node-name='%s'",
                           json_object_get_string(v));
                return false;
            }
            return true;
        }
        follow_cache(p, &p->kids[0], file, inline_child);
        return true;
    }
    if (!inline_child) {
        /* QEMU's answer: options of a child it did not open are its own. */
        error_setg(errp, "Cannot change the option 'file.driver'");
        return false;
    }
    if (json_object_object_get_ex(v, "node-name", &name) &&
        strcmp(json_object_get_string(name), file->node_name)) {
        error_setg(errp, "Cannot change the option 'node-name'");
        return false;
    }
    p->kids[0].bs = file;
    return get_cache(v, &p->cache, &p->kids[0], errp) && check_unchanged(file, v, errp);
}

/* "backing": required where the node has one or its image names one. */
static bool plan_backing(ReopenPlan *p, Error **errp)
{
    BlockDriverState *bs = p->bs, *b;
    BlockDriverInfo bdi = { 0 };
    json_object *v;

    p->old_backing = p->backing = bdrv_backing_bs(bs);
    if (!json_object_object_get_ex(p->opts, "backing", &v)) {
        if (p->backing || (bs->drv->bdrv_get_info && bs->drv->bdrv_get_info(bs, &bdi) == 0 &&
                           bdi.backing_file && bdi.backing_file[0])) {
            error_setg(errp, "backing is missing for '%s'", bs->node_name);
            return false;
        }
        return true;
    }
    if (!v) {
        p->backing = NULL;
        return true;
    }
    if (!json_object_is_type(v, json_type_string)) {
        error_setg(errp, "blockd cannot reopen the backing child of '%s' with new options "
                   "in blockdev-reopen; give its node name", bs->node_name);
        return false;
    }
    b = bdrv_find_node(json_object_get_string(v));
    if (!b) {
        error_setg(errp, "Cannot find device='' nor node-name='%s'", json_object_get_string(v));
        return false;
    }
    if (b != p->backing && !bs->drv->supports_backing) {
        error_setg(errp, "Driver '%s' of node '%s' does not support backing files",
                   bs->drv->format_name, bs->node_name);
        return false;
    }
    if (b != p->backing && (b == bs || bdrv_chain_contains(b, bs))) {
        error_setg(errp, "Making '%s' a backing child of '%s' would create a cycle",
                   b->node_name, bs->node_name);
        return false;
    }
    p->backing = b;
    if (b == p->old_backing) {
        follow_cache(p, &p->kids[1], b, bdrv_backing_is_inline(bs));
    }
    return true;
}

static bool plan_node(json_object *opts, ReopenPlan *p, Error **errp)
{
    static const char *const discard_names[] = { "ignore", "unmap", "off", "on", NULL };
    static const char *const dz_names[] = { "off", "on", "unmap", NULL };
    const char *node_name = NULL, *driver = NULL;
    int discard = 0;

    memset(p, 0, sizeof(*p));
    p->opts = opts;
    if (!opt_get_str(opts, "node-name", &node_name, errp) ||
        !opt_get_str(opts, "driver", &driver, errp)) {
        return false;
    }
    if (!node_name) {
        error_setg(errp, "node-name not specified");
        return false;
    }
    p->bs = bdrv_find_node(node_name);
    if (!p->bs) {
        error_setg(errp, "Failed to find node with node-name='%s'", node_name);
        return false;
    }
    if (!get_cache(opts, NULL, &p->cache, errp) || !plan_backing(p, errp)) {
        return false;
    }
    if (strcmp(driver, p->bs->drv->format_name)) {
        error_setg(errp, "Cannot change the option 'driver'");
        return false;
    }
    if (!opt_get_bool(opts, "read-only", &p->read_only, errp) ||
        !opt_get_bool(opts, "auto-read-only", &p->auto_read_only, errp) ||
        !opt_get_enum(opts, "discard", discard_names, &discard, errp) ||
        !opt_get_enum(opts, "detect-zeroes", dz_names, &p->detect_zeroes, errp)) {
        return false;
    }
    p->unmap = discard == 1 || discard == 3;
    p->cache.bs = p->bs;
    return plan_file(p, errp) && check_unchanged(p->bs, opts, errp);
}

/*
 * A file child named by reference keeps its own options: a read-only one
 * (not auto-read-only) cannot carry a read-write format, unless the same
 * command reopens it read-write too.
 */
static bool file_can_write(ReopenPlan *plans, int n, ReopenPlan *p, Error **errp)
{
    BlockDriverState *file = bdrv_file_bs(p->bs);
    json_object *v;

    if (p->read_only || !p->bs->read_only || !file || !file->read_only ||
        (file->open_flags & BDRV_O_AUTO_RDONLY) ||
        !json_object_object_get_ex(p->opts, "file", &v) ||
        !json_object_is_type(v, json_type_string)) {
        return true;
    }
    for (int i = 0; i < n; i++) {
        if (plans[i].bs == file && !plans[i].read_only) {
            return true;
        }
    }
    error_setg(errp, "Block node is read-only");
    return false;
}

static int apply_cache(CachePlan *c, Error **errp)
{
    if (!c->bs) {
        return 0;
    }
    c->old_direct = c->bs->open_flags & BDRV_O_NOCACHE;
    c->old_no_flush = c->bs->open_flags & BDRV_O_NO_FLUSH;
    if (bdrv_reopen_set_cache(c->bs, c->direct, c->no_flush, errp) < 0) {
        return -EINVAL;
    }
    c->applied = true;
    return 0;
}

static void undo_cache(CachePlan *c)
{
    if (c->applied) {
        bdrv_reopen_set_cache(c->bs, c->old_direct, c->old_no_flush, NULL);
        c->applied = false;
    }
}

/* The cache modes first: they are what may fail for reasons of the host. */
static void undo_caches(ReopenPlan *p)
{
    undo_cache(&p->cache);
    undo_cache(&p->kids[1]);
    undo_cache(&p->kids[0]);
}

static int apply(ReopenPlan *p, Error **errp)
{
    BlockDriverState *bs = p->bs;

    if (p->read_only && !bs->read_only && bdrv_has_writer(bs)) {
        error_setg(errp, "Read-only block node '%s' cannot support read-write users",
                   bs->node_name);
        return -EPERM;
    }
    if (apply_cache(&p->kids[0], errp) < 0 || apply_cache(&p->kids[1], errp) < 0 ||
        apply_cache(&p->cache, errp) < 0) {
        undo_caches(p);
        return -EINVAL;
    }
    p->old_read_only = bs->read_only;
    p->old_auto_read_only = bs->open_flags & BDRV_O_AUTO_RDONLY;
    p->old_unmap = bs->open_flags & BDRV_O_UNMAP;
    p->old_detect_zeroes = bs->detect_zeroes;
    /* Towards read-only the node lets go of its backing node last, towards
     * read-write it takes the new one first: permissions fit either way. */
    if (p->backing != p->old_backing && bdrv_set_backing_hd(bs, p->backing, errp) < 0) {
        undo_caches(p);
        return -EPERM;
    }
    p->old_file = bdrv_file_bs(bs);
    if (p->new_file) {
        bdrv_ref(p->old_file);       /* until the command ends: undo may need it */
    }
    if (p->new_file && bdrv_set_file(bs, p->new_file, errp) < 0) {
        if (p->backing != p->old_backing) {
            bdrv_set_backing_hd(bs, p->old_backing, NULL);
        }
        undo_caches(p);
        return -EPERM;
    }
    if (bdrv_reopen_set_read_only(bs, p->read_only, errp) < 0) {
        if (p->new_file) {
            bdrv_set_file(bs, p->old_file, NULL);
        }
        if (p->backing != p->old_backing) {
            bdrv_set_backing_hd(bs, p->old_backing, NULL);
        }
        undo_caches(p);
        return -EPERM;
    }
    bdrv_reopen_set_io_options(bs, p->unmap, p->detect_zeroes, p->auto_read_only);
    p->applied = true;
    return 0;
}

static void undo(ReopenPlan *p)
{
    BlockDriverState *bs = p->bs;

    bdrv_reopen_set_io_options(bs, p->old_unmap, p->old_detect_zeroes, p->old_auto_read_only);
    bdrv_reopen_set_read_only(bs, p->old_read_only, NULL);
    if (p->new_file) {
        bdrv_set_file(bs, p->old_file, NULL);
    }
    if (p->backing != p->old_backing) {
        bdrv_set_backing_hd(bs, p->old_backing, NULL);
    }
    undo_caches(p);
}

static json_object *qmp_blockdev_reopen(json_object *args, Error **errp)
{
    json_object *list = json_object_object_get(args, "options");
    int n = json_object_array_length(list), i;
    ReopenPlan *plans = calloc(n + 1, sizeof(*plans));
    bool ok = true;

    GLOBAL_STATE_CODE();
    if (!plans) {
        abort();
    }
    for (i = 0; i < n && ok; i++) {
        ok = plan_node(json_object_array_get_idx(list, i), &plans[i], errp);
        for (int j = 0; ok && j < i; j++) {
            if (plans[j].bs == plans[i].bs) {
                error_setg(errp, "Block node '%s' appears twice in the reopen list",
                           plans[i].bs->node_name);
                ok = false;
            }
        }
    }
    for (i = 0; i < n && ok; i++) {
        ok = file_can_write(plans, n, &plans[i], errp);
    }
    for (i = 0; i < n && ok; i++) {
        ok = apply(&plans[i], errp) == 0;
    }
    if (!ok) {
        while (i-- > 0) {
            if (plans[i].applied) {
                undo(&plans[i]);
            }
        }
        for (i = 0; i < n; i++) {
            if (plans[i].new_file && plans[i].old_file) {
                bdrv_unref(plans[i].old_file);
            }
        }
    } else {
        for (i = 0; i < n; i++) {
            if (plans[i].new_file) {
                bdrv_unref(plans[i].old_file);
            }
        }
        /* The node's options are the new ones from now on. */
        for (i = 0; i < n; i++) {
            json_object *copy = NULL;

            json_object_deep_copy(plans[i].opts, &copy, NULL);
            json_object_put(plans[i].bs->options);
            plans[i].bs->options = copy;
        }
    }
    free(plans);
    return ok ? json_object_new_object() : NULL;
}

static const SchemaField opts_elem = { .type = SCHEMA_OBJECT, .object = &qapi_blockdev_options };
static const SchemaField reopen_fields[] = {
    { .name = "options", .type = SCHEMA_LIST, .elem = &opts_elem },
    { 0 },
};
static const SchemaObject reopen_args = { .name = "blockdev-reopen-arg", .fields = reopen_fields };

const QmpCommand qmp_reopen_commands[] = {
    { .name = "blockdev-reopen", .fn = qmp_blockdev_reopen, .args = &reopen_args },
    { 0 },
};
