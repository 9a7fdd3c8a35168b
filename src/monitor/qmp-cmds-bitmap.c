/*
 * qmp-cmds-bitmap.c - named dirty bitmaps: block-dirty-bitmap-add,
 * -remove, -clear, -enable, -disable, -merge and
 * x-debug-block-dirty-bitmap-sha256, each also a transaction action, and
 * the "dirty-bitmaps" of query-named-block-nodes.
 *
 * Arguments, defaults and messages are qemu-storage-daemon 7.2's.  In a
 * transaction an action takes effect at once (the graph is drained) and
 * keeps what is needed to take it back if a later action fails; a
 * removed bitmap is only hidden until the transaction commits.
 */
#include <stdlib.h>
#include <string.h>

#include "blockd/block-global-state.h"
#include "blockd/block-io.h"
#include "blockd/dirty-bitmap.h"
#include "blockd/main-loop.h"
#include "blockd/monitor.h"
#include "blockd/options.h"
#include "monitor-internal.h"

#define BITMAP_NAME_MAX 1023          /* as the qcow2 bitmaps extension allows */
#define DEFAULT_GRANULARITY 65536

/* ---- Arguments ------------------------------------------------------------------ */

static const SchemaField bitmap_fields[] = {
    { .name = "node", .type = SCHEMA_STR },
    { .name = "name", .type = SCHEMA_STR },
    { 0 },
};
const SchemaObject qapi_block_dirty_bitmap = {
    .name = "BlockDirtyBitmap", .fields = bitmap_fields,
};

static const SchemaField add_fields[] = {
    { .name = "node", .type = SCHEMA_STR },
    { .name = "name", .type = SCHEMA_STR },
    { .name = "granularity", .type = SCHEMA_INT, .optional = true },
    { .name = "persistent", .type = SCHEMA_BOOL, .optional = true },
    { .name = "disabled", .type = SCHEMA_BOOL, .optional = true },
    { 0 },
};
const SchemaObject qapi_block_dirty_bitmap_add = {
    .name = "BlockDirtyBitmapAdd", .fields = add_fields,
};

static const SchemaField source_elem = {
    .type = SCHEMA_STR_OR_OBJECT, .object = &qapi_block_dirty_bitmap,
};
static const SchemaField merge_fields[] = {
    { .name = "node", .type = SCHEMA_STR },
    { .name = "target", .type = SCHEMA_STR },
    { .name = "bitmaps", .type = SCHEMA_LIST, .elem = &source_elem },
    { 0 },
};
const SchemaObject qapi_block_dirty_bitmap_merge = {
    .name = "BlockDirtyBitmapMerge", .fields = merge_fields,
};

static const char *arg_str(json_object *args, const char *key)
{
    json_object *v;

    return json_object_object_get_ex(args, key, &v) ? json_object_get_string(v) : NULL;
}

/* ---- Look-ups and checks ---------------------------------------------------------- */

static BdrvDirtyBitmap *lookup_usable(json_object *args, unsigned checks,
                                      BlockDriverState **pbs, Error **errp)
{
    BdrvDirtyBitmap *bm = bdrv_dirty_bitmap_lookup(arg_str(args, "node"), arg_str(args, "name"),
                                                   pbs, errp);

    return bm && dirty_bitmap_check(bm, checks, errp) ? bm : NULL;
}

/* QEMU's default: the image's cluster size, at least 4 KiB; 64 KiB for a
 * node without clusters. */
static int64_t default_granularity(BlockDriverState *bs)
{
    BlockDriverInfo bdi = { 0 };

    if (bs->drv->bdrv_get_info && bs->drv->bdrv_get_info(bs, &bdi) == 0 && bdi.cluster_size) {
        return bdi.cluster_size > 4096 ? bdi.cluster_size : 4096;
    }
    return DEFAULT_GRANULARITY;
}

/* ---- The actions ------------------------------------------------------------------- */

typedef enum { UNDO_ADD, UNDO_REMOVE, UNDO_BITS, UNDO_RECORDING } UndoKind;

/* How to take one action back (or, for a removal, finish it). */
struct BitmapUndo {
    UndoKind kind;
    BlockDriverState *bs;
    BdrvDirtyBitmap *bm;
    BdrvDirtyBitmap *saved;          /* UNDO_BITS: the bits before */
    bool recording;                  /* UNDO_RECORDING: the state before */
    BitmapUndo *next;                /* the action before it */
};

static void push(BitmapUndo **undo, UndoKind kind, BlockDriverState *bs, BdrvDirtyBitmap *bm)
{
    BitmapUndo *u = calloc(1, sizeof(*u));

    if (!u) {
        abort();
    }
    u->kind = kind;
    u->bs = bs;
    u->bm = bm;
    u->recording = dirty_bitmap_recording(bm);
    if (kind == UNDO_BITS) {
        u->saved = dirty_bitmap_copy(bm);
    }
    u->next = *undo;
    *undo = u;
}

static bool do_add(json_object *args, BitmapUndo **undo, Error **errp)
{
    const char *node = arg_str(args, "node"), *name = arg_str(args, "name");
    BlockDriverState *bs;
    BdrvDirtyBitmap *bm;
    int64_t granularity;
    bool persistent = false, disabled = false;

    if (!name[0]) {
        error_setg(errp, "Bitmap name cannot be empty");
        return false;
    }
    bs = bdrv_find_node(node);
    if (!bs) {
        error_setg(errp, "Cannot find device='%s' nor node-name='%s'", node, node);
        return false;
    }
    if (bdrv_getlength(bs) < 0) {
        error_setg(errp, "Cannot get the size of node '%s'", node);
        return false;
    }
    granularity = default_granularity(bs);
    opt_get_int(args, "granularity", &granularity, NULL);
    opt_get_bool(args, "persistent", &persistent, NULL);
    opt_get_bool(args, "disabled", &disabled, NULL);
    if (granularity < 0 || granularity > UINT32_MAX) {
        error_setg(errp, "Parameter 'granularity' expects uint32_t");
        return false;
    }
    if (json_object_object_get_ex(args, "granularity", NULL) &&
        (granularity < 512 || (granularity & (granularity - 1)))) {
        error_setg(errp, "Granularity must be power of 2 and at least 512");
        return false;
    }
    if (persistent && !bs->drv->bdrv_can_store_new_dirty_bitmap) {
        error_setg(errp, "Can't store persistent bitmaps to %s: Operation not supported", node);
        return false;
    }
    if (persistent && !bs->drv->bdrv_can_store_new_dirty_bitmap(bs, name, granularity, errp)) {
        return false;
    }
    if (bdrv_dirty_bitmap_find(bs, name)) {
        error_setg(errp, "Bitmap already exists: %s", name);
        return false;
    }
    if (strlen(name) > BITMAP_NAME_MAX) {
        error_setg(errp, "Bitmap name too long: %s", name);
        return false;
    }
    bm = bdrv_dirty_bitmap_create(bs, name, granularity, disabled);
    dirty_bitmap_set_persistent(bm, persistent);
    if (undo) {
        push(undo, UNDO_ADD, bs, bm);
    }
    return true;
}

static bool do_remove(json_object *args, BitmapUndo **undo, Error **errp)
{
    BlockDriverState *bs;
    BdrvDirtyBitmap *bm = bdrv_dirty_bitmap_lookup(arg_str(args, "node"), arg_str(args, "name"),
                                                   &bs, errp);

    if (!bm || !dirty_bitmap_check(bm, DIRTY_BITMAP_CHECK_BUSY | DIRTY_BITMAP_CHECK_RO, errp)) {
        return false;
    }
    /* Out of the image at once (a transaction that fails later keeps it
     * in memory, persistent: it is stored again at close). */
    if (dirty_bitmap_persistent(bm) && bs->drv->bdrv_remove_persistent_dirty_bitmap &&
        bs->drv->bdrv_remove_persistent_dirty_bitmap(bs, dirty_bitmap_name(bm), errp) < 0) {
        return false;
    }
    if (undo) {
        /* Hidden now, freed when the transaction commits. */
        push(undo, UNDO_REMOVE, bs, bm);
        bdrv_dirty_bitmap_detach(bs, bm);
    } else {
        bdrv_dirty_bitmap_release(bs, bm);
    }
    return true;
}

static bool do_clear(json_object *args, BitmapUndo **undo, Error **errp)
{
    BlockDriverState *bs;
    BdrvDirtyBitmap *bm = lookup_usable(args, DIRTY_BITMAP_CHECK_DEFAULT, &bs, errp);

    if (!bm) {
        return false;
    }
    if (undo) {
        push(undo, UNDO_BITS, bs, bm);
    }
    dirty_bitmap_clear_all(bm);
    return true;
}

static bool set_recording(json_object *args, bool recording, BitmapUndo **undo, Error **errp)
{
    BlockDriverState *bs;
    /* A read-only image's bitmap may change state (as in QEMU): only the
     * bits are its image's. */
    BdrvDirtyBitmap *bm = lookup_usable(args, DIRTY_BITMAP_CHECK_ALLOW_RO, &bs, errp);

    if (!bm) {
        return false;
    }
    if (undo) {
        push(undo, UNDO_RECORDING, bs, bm);
    }
    dirty_bitmap_set_recording(bm, recording);
    return true;
}

static bool do_enable(json_object *args, BitmapUndo **undo, Error **errp)
{
    return set_recording(args, true, undo, errp);
}

static bool do_disable(json_object *args, BitmapUndo **undo, Error **errp)
{
    return set_recording(args, false, undo, errp);
}

/* A source of a merge: a name on the target's node, or node and name. */
static BdrvDirtyBitmap *merge_source(json_object *src, const char *node, Error **errp)
{
    BdrvDirtyBitmap *bm;

    if (json_object_is_type(src, json_type_string)) {
        bm = bdrv_dirty_bitmap_lookup(node, json_object_get_string(src), NULL, errp);
    } else {
        bm = bdrv_dirty_bitmap_lookup(arg_str(src, "node"), arg_str(src, "name"), NULL, errp);
    }
    return bm && dirty_bitmap_check(bm, DIRTY_BITMAP_CHECK_INCONSISTENT, errp) ? bm : NULL;
}

static bool do_merge(json_object *args, BitmapUndo **undo, Error **errp)
{
    const char *node = arg_str(args, "node");
    json_object *sources = json_object_object_get(args, "bitmaps");
    BlockDriverState *bs;
    BdrvDirtyBitmap *dst = bdrv_dirty_bitmap_lookup(node, arg_str(args, "target"), &bs, errp);
    BdrvDirtyBitmap *merged;
    size_t n = json_object_array_length(sources);

    if (!dst || !dirty_bitmap_check(dst, DIRTY_BITMAP_CHECK_DEFAULT, errp)) {
        return false;
    }
    /* Into a scratch copy first: a bad source leaves the target as it was. */
    merged = dirty_bitmap_copy(dst);
    for (size_t i = 0; i < n; i++) {
        BdrvDirtyBitmap *src = merge_source(json_object_array_get_idx(sources, i), node, errp);

        if (!src) {
            dirty_bitmap_free(merged);
            return false;
        }
        if (!dirty_bitmap_merge(merged, src)) {
            error_setg(errp, "Bitmaps are incompatible and can't be merged");
            dirty_bitmap_free(merged);
            return false;
        }
    }
    if (undo) {
        push(undo, UNDO_BITS, bs, dst);
    }
    /* Or'ed in: writes that marked @dst meanwhile stay marked. */
    dirty_bitmap_merge(dst, merged);
    dirty_bitmap_free(merged);
    return true;
}

typedef bool BitmapFn(json_object *args, BitmapUndo **undo, Error **errp);

static const struct {
    const char *name;
    BitmapFn *fn;
} actions[] = {
    { "block-dirty-bitmap-add", do_add },
    { "block-dirty-bitmap-remove", do_remove },
    { "block-dirty-bitmap-clear", do_clear },
    { "block-dirty-bitmap-enable", do_enable },
    { "block-dirty-bitmap-disable", do_disable },
    { "block-dirty-bitmap-merge", do_merge },
};

static BitmapFn *find_action(const char *type)
{
    for (size_t i = 0; i < ARRAY_SIZE(actions); i++) {
        if (!strcmp(actions[i].name, type)) {
            return actions[i].fn;
        }
    }
    return NULL;
}

bool qmp_bitmap_is_action(const char *type)
{
    return find_action(type) != NULL;
}

bool qmp_bitmap_action(const char *type, json_object *data, BitmapUndo **undo, Error **errp)
{
    GLOBAL_STATE_CODE();
    return find_action(type)(data, undo, errp);
}

void qmp_bitmap_actions_end(BitmapUndo *undo, bool commit)
{
    GLOBAL_STATE_CODE();
    /* Newest first: each action is undone on the state it found. */
    for (BitmapUndo *u = undo, *next; u; u = next) {
        next = u->next;
        switch (u->kind) {
        case UNDO_ADD:
            if (!commit) {
                bdrv_dirty_bitmap_release(u->bs, u->bm);
            }
            break;
        case UNDO_REMOVE:
            if (commit) {
                dirty_bitmap_free(u->bm);
            } else {
                bdrv_dirty_bitmap_attach(u->bs, u->bm);
            }
            break;
        case UNDO_BITS:
            if (!commit) {
                dirty_bitmap_restore(u->bm, u->saved);
            }
            dirty_bitmap_free(u->saved);
            break;
        case UNDO_RECORDING:
            if (!commit) {
                dirty_bitmap_set_recording(u->bm, u->recording);
            }
            break;
        }
        free(u);
    }
}

/* ---- Commands ------------------------------------------------------------------------ */

#define BITMAP_COMMAND(cname, fn)                                                   \
    static json_object *cname(json_object *args, Error **errp)                     \
    {                                                                               \
        GLOBAL_STATE_CODE();                                                        \
        return fn(args, NULL, errp) ? json_object_new_object() : NULL;             \
    }

BITMAP_COMMAND(qmp_bitmap_add, do_add)
BITMAP_COMMAND(qmp_bitmap_remove, do_remove)
BITMAP_COMMAND(qmp_bitmap_clear, do_clear)
BITMAP_COMMAND(qmp_bitmap_enable, do_enable)
BITMAP_COMMAND(qmp_bitmap_disable, do_disable)
BITMAP_COMMAND(qmp_bitmap_merge, do_merge)

static json_object *qmp_bitmap_sha256(json_object *args, Error **errp)
{
    BdrvDirtyBitmap *bm = bdrv_dirty_bitmap_lookup(arg_str(args, "node"), arg_str(args, "name"),
                                                   NULL, errp);
    json_object *ret;
    char hex[65];

    GLOBAL_STATE_CODE();
    if (!bm) {
        return NULL;
    }
    if (!dirty_bitmap_sha256(bm, hex)) {
        error_setg(errp, "Could not compute the bitmap's SHA-256");
        return NULL;
    }
    ret = json_object_new_object();
    json_object_object_add(ret, "sha256", json_object_new_string(hex));
    return ret;
}

static json_object *bitmap_info(BdrvDirtyBitmap *bm)
{
    json_object *o = json_object_new_object();

    json_object_object_add(o, "name", json_object_new_string(dirty_bitmap_name(bm)));
    json_object_object_add(o, "recording",
                           json_object_new_boolean(dirty_bitmap_recording(bm)));
    json_object_object_add(o, "persistent",
                           json_object_new_boolean(dirty_bitmap_persistent(bm)));
    json_object_object_add(o, "busy", json_object_new_boolean(dirty_bitmap_busy(bm)));
    json_object_object_add(o, "granularity",
                           json_object_new_int64(dirty_bitmap_granularity(bm)));
    json_object_object_add(o, "count", json_object_new_int64(dirty_bitmap_count(bm)));
    if (dirty_bitmap_inconsistent(bm)) {
        json_object_object_add(o, "inconsistent", json_object_new_boolean(true));
    }
    return o;
}

json_object *qmp_dirty_bitmaps_info(BlockDriverState *bs)
{
    json_object *list;
    BdrvDirtyBitmap **all = NULL;
    int n = 0;

    GLOBAL_STATE_CODE();
    for (BdrvDirtyBitmap *bm = bdrv_dirty_bitmap_next(bs, NULL); bm;
         bm = bdrv_dirty_bitmap_next(bs, bm)) {
        all = realloc(all, (n + 1) * sizeof(*all));
        if (!all) {
            abort();
        }
        all[n++] = bm;
    }
    if (!n) {
        return NULL;
    }
    /* Newest first, as QEMU lists them. */
    list = json_object_new_array();
    while (n-- > 0) {
        json_object_array_add(list, bitmap_info(all[n]));
    }
    free(all);
    return list;
}

static const SchemaField sha256_ret_fields[] = {
    { .name = "sha256", .type = SCHEMA_STR },
    { 0 },
};
static const SchemaObject sha256_obj = { .name = "BlockDirtyBitmapSha256", .fields = sha256_ret_fields };
static const SchemaField sha256_ret = { .type = SCHEMA_OBJECT, .object = &sha256_obj };

const QmpCommand qmp_bitmap_commands[] = {
    { .name = "block-dirty-bitmap-add", .fn = qmp_bitmap_add,
      .args = &qapi_block_dirty_bitmap_add },
    { .name = "block-dirty-bitmap-remove", .fn = qmp_bitmap_remove,
      .args = &qapi_block_dirty_bitmap },
    { .name = "block-dirty-bitmap-clear", .fn = qmp_bitmap_clear,
      .args = &qapi_block_dirty_bitmap },
    { .name = "block-dirty-bitmap-enable", .fn = qmp_bitmap_enable,
      .args = &qapi_block_dirty_bitmap },
    { .name = "block-dirty-bitmap-disable", .fn = qmp_bitmap_disable,
      .args = &qapi_block_dirty_bitmap },
    { .name = "block-dirty-bitmap-merge", .fn = qmp_bitmap_merge,
      .args = &qapi_block_dirty_bitmap_merge },
    { .name = "x-debug-block-dirty-bitmap-sha256", .fn = qmp_bitmap_sha256,
      .args = &qapi_block_dirty_bitmap, .ret = &sha256_ret },
    { 0 },
};
