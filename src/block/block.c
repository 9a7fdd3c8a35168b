/*
 * block.c - nodes and edges of the block graph: create, name, reference,
 * attach, detach, replace, close.
 *
 * Graph changes happen in the main thread, inside a drained section of the
 * nodes concerned, under the graph write lock.  Deleting a node drains it,
 * so it never happens under the write lock: bdrv_schedule_unref() defers
 * it to right after the unlock.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/aio-wait.h"
#include "blockd/block-global-state.h"
#include "blockd/block-io.h"
#include "blockd/dirty-bitmap.h"
#include "blockd/log.h"
#include "blockd/main-loop.h"
#include "blockd/options.h"
#include "block-internal.h"

#define MAX_DRIVERS 32

static const BlockDriver *drivers[MAX_DRIVERS];
static int num_drivers;
static ListNode all_nodes = LIST_INIT_STATIC(all_nodes);
static int num_nodes;
static unsigned auto_name_counter;

void bdrv_register(const BlockDriver *drv)
{
    GLOBAL_STATE_CODE();
    assert(num_drivers < MAX_DRIVERS);
    assert(!bdrv_find_driver(drv->format_name));
    drivers[num_drivers++] = drv;
}

const BlockDriver *bdrv_find_driver(const char *name)
{
    GLOBAL_STATE_CODE();
    for (int i = 0; i < num_drivers; i++) {
        if (strcmp(drivers[i]->format_name, name) == 0) {
            return drivers[i];
        }
    }
    return NULL;
}

static void init_tracked_list(BlockDriverState *bs) TSA_NO_TSA
{
    /* Not yet visible to anyone: no lock needed. */
    list_init(&bs->tracked_requests);
}

bool bdrv_check_node_name(const char *name, Error **errp)
{
    size_t len = strlen(name);

    /* As QEMU: a letter first, then letters, digits, '-', '.', '_'. */
    bool ok = len > 0 && len < 32 && isalpha((unsigned char)name[0]);
    for (size_t i = 1; ok && i < len; i++) {
        unsigned char ch = name[i];
        ok = isalnum(ch) || ch == '-' || ch == '.' || ch == '_';
    }
    if (!ok) {
        error_setg(errp, "Invalid node-name: '%s'", name);
    }
    return ok;
}

BlockDriverState *bdrv_find_node(const char *node_name)
{
    GLOBAL_STATE_CODE();
    list_for_each(n, &all_nodes) {
        BlockDriverState *bs = list_entry(n, BlockDriverState, all_node);
        if (strcmp(bs->node_name, node_name) == 0) {
            return bs;
        }
    }
    return NULL;
}

BlockDriverState *bdrv_next_node(BlockDriverState *bs)
{
    ListNode *next;

    GLOBAL_STATE_CODE();
    next = bs ? bs->all_node.next : all_nodes.next;
    return next == &all_nodes ? NULL : list_entry(next, BlockDriverState, all_node);
}

int bdrv_node_count(void)
{
    GLOBAL_STATE_CODE();
    return num_nodes;
}

/* The first child of @bs, or NULL (main thread: the graph cannot change
 * under the caller). */
static BdrvChild *first_child(BlockDriverState *bs)
{
    BdrvChild *c = NULL;

    graph_rdlock_main_loop();
    if (!list_empty(&bs->children)) {
        c = list_entry(bs->children.next, BdrvChild, next);
    }
    graph_rdunlock_main_loop();
    return c;
}

/* Permissions of an edge not linked yet: no request can see it, so no
 * lock is needed (the analysis cannot know that). */
static void child_init_perm(BdrvChild *c, uint64_t perm, uint64_t shared) TSA_NO_TSA
{
    c->perm = perm;
    c->shared_perm = shared;
}

BlockDriverState *bdrv_open_driver(const BlockDriver *drv, const char *node_name,
                                   json_object *options, int flags, Error **errp)
{
    BlockDriverState *bs;

    GLOBAL_STATE_CODE();
    if (node_name) {
        if (!bdrv_check_node_name(node_name, errp)) {
            return NULL;
        }
        if (bdrv_find_node(node_name)) {
            error_setg(errp, "Duplicate nodes with node-name='%s'", node_name);
            return NULL;
        }
    }
    bs = calloc(1, sizeof(*bs));
    if (!bs) {
        abort();
    }
    if (node_name) {
        snprintf(bs->node_name, sizeof(bs->node_name), "%s", node_name);
    } else {
        /* '#' cannot start a user name, so these never collide. */
        snprintf(bs->node_name, sizeof(bs->node_name), "#block%u", auto_name_counter++);
        bs->auto_named = true;
    }
    bs->drv = drv;
    bs->refcnt = 1;
    bs->open_flags = flags;
    bs->read_only = !(flags & BDRV_O_RDWR);
    bs->ctx = main_aio_context();
    bs->bl.request_alignment = 1;
    list_init(&bs->children);
    list_init(&bs->parents);
    co_mutex_init(&bs->reqs_lock);
    init_tracked_list(bs);
    bdrv_dirty_bitmap_init_node(bs);
    if (drv->instance_size) {
        bs->opaque = calloc(1, drv->instance_size);
        if (!bs->opaque) {
            abort();
        }
    }
    if (drv->bdrv_open && drv->bdrv_open(bs, options, flags, errp) < 0) {
        /* Children the driver attached before failing go with it. */
        for (BdrvChild *c; (c = first_child(bs));) {
            bdrv_unref_child(bs, c);
        }
        free(bs->opaque);
        free(bs);
        return NULL;
    }
    /* Kept for query commands: what the user asked for. */
    bs->options = options ? json_object_get(options) : NULL;
    list_add_tail(&all_nodes, &bs->all_node);
    num_nodes++;
    /* Born inside a drain-all: drained like every other node. */
    for (int i = 0; i < bdrv_drain_all_depth(); i++) {
        bdrv_do_drained_begin_quiesce(bs);
    }
    return bs;
}

BlockDriverState *bdrv_open_options(json_object *options, Error **errp)
{
    static const char *const discard_names[] = { "ignore", "unmap", "off", "on", NULL };
    const char *driver = NULL, *node_name = NULL;
    bool read_only = false, force_share = false, auto_read_only = false;
    bool direct = false, no_flush = false;
    json_object *cache = NULL;
    static const char *const detect_zeroes_names[] = { "off", "on", "unmap", NULL };
    int detect_zeroes = BDRV_DETECT_ZEROES_OFF;
    BlockDriverState *bs;
    int discard = 0, flags;
    const BlockDriver *drv;

    GLOBAL_STATE_CODE();
    if (!opt_get_str(options, "driver", &driver, errp) ||
        !opt_get_str(options, "node-name", &node_name, errp) ||
        !opt_get_bool(options, "read-only", &read_only, errp) ||
        !opt_get_bool(options, "force-share", &force_share, errp) ||
        !opt_get_bool(options, "auto-read-only", &auto_read_only, errp) ||
        !opt_get_enum(options, "detect-zeroes", detect_zeroes_names, &detect_zeroes, errp) ||
        !opt_get_enum(options, "discard", discard_names, &discard, errp)) {
        return NULL;
    }
    if (!driver) {
        error_setg(errp, "Parameter 'driver' is missing");
        return NULL;
    }
    drv = bdrv_find_driver(driver);
    if (!drv) {
        error_setg(errp, "Parameter 'driver' does not accept value '%s'", driver);
        return NULL;
    }
    if (force_share && !read_only) {
        error_setg(errp, "force-share=on can only be used with read-only images");
        return NULL;
    }
    if (json_object_object_get_ex(options, "cache", &cache) &&
        json_object_is_type(cache, json_type_object) &&
        (!opt_get_bool(cache, "direct", &direct, errp) ||
         !opt_get_bool(cache, "no-flush", &no_flush, errp))) {
        return NULL;
    }
    flags = (read_only ? 0 : BDRV_O_RDWR) | (force_share ? BDRV_O_FORCE_SHARE : 0) |
            (direct ? BDRV_O_NOCACHE : 0) | (no_flush ? BDRV_O_NO_FLUSH : 0) |
            (discard == 1 || discard == 3 ? BDRV_O_UNMAP : 0) |
            (auto_read_only ? BDRV_O_AUTO_RDONLY : 0);
    if (detect_zeroes == BDRV_DETECT_ZEROES_UNMAP && !(flags & BDRV_O_UNMAP)) {
        error_setg(errp, "setting detect-zeroes to unmap is not allowed without setting "
                   "discard operation to unmap");
        return NULL;
    }
    bs = bdrv_open_driver(drv, node_name, options, flags, errp);
    if (bs) {
        bs->detect_zeroes = detect_zeroes;
    }
    return bs;
}

/* @opts lacks @key in its "cache" object: add it as @value. */
static void inherit_cache(json_object *opts, const char *key, bool value)
{
    json_object *cache = NULL;

    if (!json_object_object_get_ex(opts, "cache", &cache)) {
        cache = json_object_new_object();
        json_object_object_add(opts, "cache", cache);
    }
    if (json_object_is_type(cache, json_type_object) &&
        !json_object_object_get_ex(cache, key, NULL)) {
        json_object_object_add(cache, key, json_object_new_boolean(value));
    }
}

void bdrv_inherit_options(BlockDriverState *parent, json_object *child)
{
    GLOBAL_STATE_CODE();
    if (parent->read_only && !json_object_object_get_ex(child, "read-only", NULL)) {
        json_object_object_add(child, "read-only", json_object_new_boolean(true));
    }
    if ((parent->open_flags & BDRV_O_AUTO_RDONLY) &&
        !json_object_object_get_ex(child, "auto-read-only", NULL)) {
        json_object_object_add(child, "auto-read-only", json_object_new_boolean(true));
    }
    /* The cache mode goes down to the files, as in QEMU. */
    if (parent->open_flags & BDRV_O_NOCACHE) {
        inherit_cache(child, "direct", true);
    }
    if (parent->open_flags & BDRV_O_NO_FLUSH) {
        inherit_cache(child, "no-flush", true);
    }
}

BdrvChild *bdrv_open_child(BlockDriverState *parent, json_object *options,
                           const char *key, unsigned role, bool required,
                           Error **errp)
{
    json_object *v = NULL;
    BlockDriverState *child_bs;
    BdrvChild *c;

    GLOBAL_STATE_CODE();
    if (!json_object_object_get_ex(options, key, &v) || json_object_is_type(v, json_type_null)) {
        if (required) {
            error_setg(errp, "Parameter '%s' is missing", key);
        }
        return NULL;
    }
    if (json_object_is_type(v, json_type_string)) {
        const char *name = json_object_get_string(v);
        child_bs = bdrv_find_node(name);
        if (!child_bs) {
            error_set(errp, ERROR_CLASS_GENERIC_ERROR,
                      "Cannot find device='' nor node-name='%s'", name);
            return NULL;
        }
        bdrv_ref(child_bs);
    } else if (json_object_is_type(v, json_type_object)) {
        bdrv_inherit_options(parent, v);
        child_bs = bdrv_open_options(v, errp);
        if (!child_bs) {
            return NULL;
        }
    } else {
        error_setg(errp, "Invalid parameter type for '%s', expected: string or object", key);
        return NULL;
    }
    c = bdrv_attach_child(parent, child_bs, key, role, errp);
    bdrv_unref(child_bs);
    if (c) {
        c->inherits = json_object_is_type(v, json_type_object);
    }
    return c;
}

int bdrv_open_file_as_own(BlockDriverState *bs, json_object *options, unsigned role,
                          Error **errp)
{
    BdrvChild *file;

    GLOBAL_STATE_CODE();
    file = bdrv_open_child(bs, options, "file", role, true, errp);
    if (!file) {
        return -1;
    }
    graph_rdlock_main_loop();
    bs->total_bytes = bdrv_getlength(file->bs);
    bs->bl = file->bs->bl;
    graph_rdunlock_main_loop();
    return 0;
}

void bdrv_ref(BlockDriverState *bs)
{
    GLOBAL_STATE_CODE();
    bs->refcnt++;
}

static void bdrv_delete(BlockDriverState *bs)
{
    assert(list_empty(&bs->parents));
    bdrv_drained_begin(bs);
    if (bs->drv->bdrv_close) {
        bs->drv->bdrv_close(bs);
    }
    /* Children the driver left attached go now. */
    for (BdrvChild *c; (c = first_child(bs));) {
        bdrv_unref_child(bs, c);
    }
    bdrv_drained_end(bs);
    /* Dying inside a drain-all: end the drains it inherited. */
    for (int i = 0; i < bdrv_drain_all_depth(); i++) {
        bdrv_drained_end(bs);
    }
    bdrv_dirty_bitmap_fini_node(bs);
    list_del(&bs->all_node);
    num_nodes--;
    json_object_put(bs->options);
    block_acct_cleanup(&bs->stats);
    free(bs->opaque);
    free(bs);
}

void bdrv_unref(BlockDriverState *bs)
{
    GLOBAL_STATE_CODE();
    if (!bs) {
        return;
    }
    assert(bs->refcnt > 0);
    if (--bs->refcnt == 0) {
        bdrv_delete(bs);
    }
}

static void schedule_unref_cb(void *opaque)
{
    bdrv_unref(opaque);
}

void bdrv_schedule_unref(BlockDriverState *bs)
{
    if (bs) {
        graph_defer_after_wrunlock(schedule_unref_cb, bs);
    }
}

/* ---- Edges ------------------------------------------------------------------ */

static char *child_of_bds_desc(BdrvChild *c)
{
    BlockDriverState *parent = c->opaque;
    char *s;

    if (asprintf(&s, "node '%s'", parent->node_name) < 0) {
        abort();
    }
    return s;
}

static void child_of_bds_drained_begin(BdrvChild *c)
{
    bdrv_do_drained_begin_quiesce(c->opaque);
}

static void child_of_bds_drained_end(BdrvChild *c)
{
    bdrv_drained_end(c->opaque);
}

static bool child_of_bds_drained_poll(BdrvChild *c)
{
    BlockDriverState *parent = c->opaque;
    return atomic_read(&parent->in_flight) > 0 || bdrv_parents_busy(parent, NULL);
}

static const char *child_of_bds_name(BdrvChild *c)
{
    return ((BlockDriverState *)c->opaque)->node_name;
}

static const BdrvChildClass child_of_bds = {
    .parent_type = "block-driver",
    .get_parent_name = child_of_bds_name,
    .drained_begin = child_of_bds_drained_begin,
    .drained_end = child_of_bds_drained_end,
    .drained_poll = child_of_bds_drained_poll,
    .get_parent_desc = child_of_bds_desc,
};

bool bdrv_has_blk(BlockDriverState *bs)
{
    bool has = false;

    GLOBAL_STATE_CODE();
    graph_rdlock_main_loop();
    list_for_each(n, &bs->parents) {
        if (list_entry(n, BdrvChild, next_parent)->klass->is_backend) {
            has = true;
        }
    }
    graph_rdunlock_main_loop();
    return has;
}

bool bdrv_is_root_node(BlockDriverState *bs)
{
    bool root = true;

    GLOBAL_STATE_CODE();
    graph_rdlock_main_loop();
    list_for_each(n, &bs->parents) {
        if (bdrv_child_is_node_parent(list_entry(n, BdrvChild, next_parent))) {
            root = false;
        }
    }
    graph_rdunlock_main_loop();
    return root;
}

bool bdrv_child_is_node_parent(BdrvChild *c)
{
    return c->klass == &child_of_bds;
}

/* Link @c under @child_bs (write lock held). */
static void child_link(BdrvChild *c, BlockDriverState *child_bs) GRAPH_WRLOCK
{
    c->bs = child_bs;
    list_add_tail(&child_bs->parents, &c->next_parent);
    /* A parent that arrives at a drained node is quiesced at once. */
    if (child_bs->quiesce_counter && c->klass->drained_begin) {
        c->klass->drained_begin(c);
        c->quiesced_parent = true;
    }
}

static void child_unlink(BdrvChild *c) GRAPH_WRLOCK
{
    list_del(&c->next_parent);
    if (c->quiesced_parent && c->klass->drained_end) {
        c->quiesced_parent = false;
        c->klass->drained_end(c);
    }
    c->bs = NULL;
}

/*
 * Move @c from its node to @to.  A parent quiesced for the old node stays
 * quiesced when @to is drained too: ending and beginning again would let
 * it send requests in between, which would reach @to inside its drain.
 */
static void child_relink(BdrvChild *c, BlockDriverState *to) GRAPH_WRLOCK
{
    list_del(&c->next_parent);
    c->bs = to;
    list_add_tail(&to->parents, &c->next_parent);
    if (c->quiesced_parent && !to->quiesce_counter) {
        c->quiesced_parent = false;
        if (c->klass->drained_end) {
            c->klass->drained_end(c);
        }
    } else if (!c->quiesced_parent && to->quiesce_counter && c->klass->drained_begin) {
        c->klass->drained_begin(c);
        c->quiesced_parent = true;
    }
}

static BdrvChild *child_new(const char *name, const BdrvChildClass *klass,
                            unsigned role, void *opaque)
{
    BdrvChild *c = calloc(1, sizeof(*c));

    if (!c || !(c->name = strdup(name))) {
        abort();
    }
    c->klass = klass;
    c->role = role;
    c->opaque = opaque;
    list_init(&c->next);
    list_init(&c->next_parent);
    return c;
}

static void child_free(BdrvChild *c)
{
    free(c->name);
    free(c);
}

/* Make @c one of @parent's children (write lock held). */
static void parent_link(BlockDriverState *parent, BdrvChild *c) GRAPH_WRLOCK
{
    list_add_tail(&parent->children, &c->next);
    if (c->role & BDRV_CHILD_COW) {
        parent->backing = c;
    } else if (c->role & (BDRV_CHILD_PRIMARY | BDRV_CHILD_FILTERED)) {
        parent->file = c;
    }
}

static void parent_unlink(BlockDriverState *parent, BdrvChild *c) GRAPH_WRLOCK
{
    list_del(&c->next);
    if (parent->backing == c) {
        parent->backing = NULL;
    }
    if (parent->file == c) {
        parent->file = NULL;
    }
}

/*
 * Attach edge @c to @child_bs, below node @parent (NULL for a root parent),
 * drained and write-locked; undone entirely if the permissions conflict.
 */
static BdrvChild *attach_edge(BdrvChild *c, BlockDriverState *child_bs,
                              BlockDriverState *parent, Error **errp) GRAPH_UNLOCKED
{
    int ret;

    bdrv_ref(child_bs);
    bdrv_drained_begin(child_bs);
    graph_wrlock();
    child_link(c, child_bs);
    if (parent) {
        parent_link(parent, c);
    }
    /* Refreshing the parent node recomputes this edge and everything below. */
    ret = bdrv_refresh_perms(parent ? parent : child_bs, errp);
    if (ret < 0) {
        if (parent) {
            parent_unlink(parent, c);
        }
        child_unlink(c);
    }
    graph_wrunlock();
    bdrv_drained_end(child_bs);

    if (ret < 0) {
        child_free(c);
        bdrv_unref(child_bs);
        return NULL;
    }
    return c;
}

BdrvChild *bdrv_root_attach_child(BlockDriverState *child_bs, const char *name,
                                  const BdrvChildClass *klass, unsigned role,
                                  uint64_t perm, uint64_t shared_perm,
                                  void *opaque, Error **errp)
{
    BdrvChild *c = child_new(name, klass, role, opaque);

    GLOBAL_STATE_CODE();
    child_init_perm(c, perm, shared_perm);
    return attach_edge(c, child_bs, NULL, errp);
}

BdrvChild *bdrv_attach_child(BlockDriverState *parent, BlockDriverState *child_bs,
                             const char *name, unsigned role, Error **errp)
{
    GLOBAL_STATE_CODE();
    return attach_edge(child_new(name, &child_of_bds, role, parent), child_bs, parent, errp);
}

static void detach_child(BdrvChild *c) GRAPH_UNLOCKED
{
    BlockDriverState *child_bs;

    graph_rdlock_main_loop();
    child_bs = c->bs;
    graph_rdunlock_main_loop();

    bdrv_drained_begin(child_bs);
    graph_wrlock();
    if (c->klass == &child_of_bds) {
        parent_unlink(c->opaque, c);
    }
    child_unlink(c);
    /* Loosening permissions cannot fail. */
    bdrv_refresh_perms(child_bs, NULL);
    graph_wrunlock();
    bdrv_drained_end(child_bs);
    child_free(c);
    bdrv_unref(child_bs);
}

void bdrv_unref_child(BlockDriverState *parent, BdrvChild *child)
{
    GLOBAL_STATE_CODE();
    assert(child->opaque == parent);
    detach_child(child);
}

void bdrv_root_unref_child(BdrvChild *child)
{
    GLOBAL_STATE_CODE();
    detach_child(child);
}

/* Would @to end up below itself if it replaced @from?  (A loop.) */
static bool bdrv_is_below(BlockDriverState *top, BlockDriverState *bs) GRAPH_RDLOCK
{
    if (top == bs) {
        return true;
    }
    list_for_each(n, &top->children) {
        if (bdrv_is_below(list_entry(n, BdrvChild, next)->bs, bs)) {
            return true;
        }
    }
    return false;
}

int bdrv_replace_node(BlockDriverState *from, BlockDriverState *to, Error **errp)
   
{
    BdrvChild **moved = NULL;
    int nmoved = 0, ret = 0;

    GLOBAL_STATE_CODE();
    bdrv_ref(from);
    bdrv_ref(to);
    bdrv_drained_begin(from);
    bdrv_drained_begin(to);
    graph_wrlock();

    list_for_each_safe(n, &from->parents) {
        BdrvChild *c = list_entry(n, BdrvChild, next_parent);
        /* Keep @to's own edges to @from (to is a filter above from). */
        if (c->klass == &child_of_bds && bdrv_is_below(to, c->opaque)) {
            continue;
        }
        moved = realloc(moved, (nmoved + 1) * sizeof(*moved));
        if (!moved) {
            abort();
        }
        moved[nmoved++] = c;
        child_relink(c, to);
    }
    ret = bdrv_refresh_perms(to, errp);
    if (ret == 0) {
        bdrv_refresh_perms(from, NULL);
    } else {
        for (int i = nmoved - 1; i >= 0; i--) {
            child_relink(moved[i], from);
        }
        bdrv_refresh_perms(to, NULL);
        bdrv_refresh_perms(from, NULL);
    }
    /* The references move with the edges. */
    for (int i = 0; ret == 0 && i < nmoved; i++) {
        bdrv_ref(to);
        bdrv_schedule_unref(from);
    }
    graph_wrunlock();
    bdrv_drained_end(to);
    bdrv_drained_end(from);
    free(moved);
    bdrv_unref(to);
    bdrv_unref(from);
    return ret;
}

void bdrv_close_all(void)
{
    GLOBAL_STATE_CODE();
    /* Nodes still referenced by users are closed when those let go. */
    bdrv_drain_all_begin();
    bdrv_drain_all_end();
}

/* ---- Coroutine work from the main loop ----------------------------------------- */

typedef struct CoCall {
    int (*fn)(BlockDriverState *bs, void *opaque);
    BlockDriverState *bs;
    void *opaque;
    int ret;
    bool done;
} CoCall;

static void coroutine_fn co_call_entry(void *opaque)
{
    CoCall *c = opaque;

    graph_co_rdlock();
    c->ret = c->fn(c->bs, c->opaque);
    graph_co_rdunlock();
    atomic_store_release(&c->done, true);
    aio_wait_kick();
}

int bdrv_run_co(BlockDriverState *bs, int (*fn)(BlockDriverState *, void *),
                            void *opaque)
{
    CoCall c = { fn, bs, opaque, 0, false };

    GLOBAL_STATE_CODE();
    if (in_coroutine()) {
        co_call_entry(&c);
        return c.ret;
    }
    coroutine_enter(coroutine_create(co_call_entry, &c));
    AIO_WAIT_WHILE_UNLOCKED(NULL, !atomic_load_acquire(&c.done));
    return c.ret;
}

/* ---- Children added and removed at run time (x-blockdev-change) ------------------- */

int bdrv_add_child(BlockDriverState *parent, BlockDriverState *child_bs, Error **errp)
{
    bool has_parent;
    int ret;

    GLOBAL_STATE_CODE();
    if (!parent->drv->bdrv_add_child) {
        error_setg(errp, "The node %s does not support adding a child", parent->node_name);
        return -ENOTSUP;
    }
    graph_rdlock_main_loop();
    has_parent = !list_empty(&child_bs->parents);
    graph_rdunlock_main_loop();
    if (has_parent) {
        error_setg(errp, "The node %s already has a parent", child_bs->node_name);
        return -EINVAL;
    }
    bdrv_drained_begin(parent);
    ret = parent->drv->bdrv_add_child(parent, child_bs, errp);
    bdrv_drained_end(parent);
    return ret;
}

int bdrv_del_child(BlockDriverState *parent, const char *name, Error **errp)
{
    BdrvChild *child = NULL;
    int ret;

    GLOBAL_STATE_CODE();
    graph_rdlock_main_loop();
    list_for_each(n, &parent->children) {
        BdrvChild *c = list_entry(n, BdrvChild, next);

        if (strcmp(c->name, name) == 0) {
            child = c;
        }
    }
    graph_rdunlock_main_loop();
    if (!child) {
        error_setg(errp, "Node '%s' does not have child '%s'", parent->node_name, name);
        return -EINVAL;
    }
    if (!parent->drv->bdrv_del_child) {
        error_setg(errp, "The node %s does not support removing a child", parent->node_name);
        return -ENOTSUP;
    }
    bdrv_drained_begin(parent);
    ret = parent->drv->bdrv_del_child(parent, child, errp);
    bdrv_drained_end(parent);
    return ret;
}
