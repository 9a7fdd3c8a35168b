/*
 * nbd-export.c - the "nbd" export type: an export's NBD name and
 * description, the metadata contexts it offers ("qemu:allocation-depth",
 * "qemu:dirty-bitmap:NAME"), and ending its connections.  The generic part
 * of an export is export.c; the connections are nbd-client.c's.
 */
#include <stdlib.h>
#include <string.h>

#include "blockd/block-chain.h"
#include "blockd/block-global-state.h"
#include "blockd/dirty-bitmap.h"
#include "blockd/export-driver.h"
#include "blockd/main-loop.h"
#include "nbd-internal.h"
#include "blockd/nbd-proto.h"

typedef struct NbdExport {
    char *name;
    char *description;
    bool allocation_depth;              /* offer "qemu:allocation-depth" */
    /* "qemu:dirty-bitmap:NAME" contexts, busy while exported, and the
     * nodes they belong to (referenced: a bitmap goes with its node). */
    BdrvDirtyBitmap **bitmaps;
    BlockDriverState **bitmap_nodes;
    int nbitmaps;
} NbdExport;

static const char *get_str(json_object *o, const char *key)
{
    json_object *v;
    return json_object_object_get_ex(o, key, &v) ? json_object_get_string(v) : NULL;
}

static void release_bitmaps(BdrvDirtyBitmap **bms, BlockDriverState **nodes, int n)
{
    for (int i = 0; i < n; i++) {
        dirty_bitmap_set_busy(bms[i], false);
        bdrv_unref(nodes[i]);
    }
    free(bms);
    free(nodes);
}

/* One entry of "bitmaps": a name on @bs or a node below it, or a node and
 * a name; usable, and not recording behind a read-only export's back. */
static BdrvDirtyBitmap *export_bitmap(json_object *e, BlockDriverState *bs, bool writable,
                                      BlockDriverState **node, Error **errp)
{
    BdrvDirtyBitmap *bm = NULL;
    const char *name;

    if (json_object_is_type(e, json_type_string)) {
        name = json_object_get_string(e);
        for (BlockDriverState *b = bs; b && !bm; b = bdrv_filter_or_cow_bs(b)) {
            bm = bdrv_dirty_bitmap_find(b, name);
            *node = b;
        }
        if (!bm) {
            error_setg(errp, "Bitmap '%s' is not found", name);
            return NULL;
        }
    } else {
        name = json_object_get_string(json_object_object_get(e, "name"));
        bm = bdrv_dirty_bitmap_lookup(json_object_get_string(json_object_object_get(e, "node")),
                                      name, node, errp);
        if (!bm) {
            return NULL;
        }
    }
    if (!dirty_bitmap_check(bm, DIRTY_BITMAP_CHECK_ALLOW_RO, errp)) {
        return NULL;
    }
    if (!writable && !bs->read_only && dirty_bitmap_recording(bm)) {
        error_setg(errp, "Enabled bitmap '%s' incompatible with readonly export", name);
        return NULL;
    }
    return bm;
}

static bool export_parse_bitmaps(json_object *options, BlockDriverState *bs, bool writable,
                                 BdrvDirtyBitmap ***out, BlockDriverState ***nodes, int *n,
                                 Error **errp)
{
    json_object *list;
    int len;

    *out = NULL;
    *nodes = NULL;
    *n = 0;
    if (!json_object_object_get_ex(options, "bitmaps", &list)) {
        return true;
    }
    len = json_object_array_length(list);
    if (len > NBD_MAX_BITMAPS) {
        error_setg(errp, "blockd exports at most %d bitmaps per export", NBD_MAX_BITMAPS);
        return false;
    }
    *out = calloc(len + 1, sizeof(**out));
    *nodes = calloc(len + 1, sizeof(**nodes));
    if (!*out || !*nodes) {
        abort();
    }
    for (int i = 0; i < len; i++) {
        BdrvDirtyBitmap *bm = export_bitmap(json_object_array_get_idx(list, i), bs, writable,
                                            &(*nodes)[i], errp);
        if (!bm) {
            free(*out);
            free(*nodes);
            *out = NULL;
            *nodes = NULL;
            return false;
        }
        (*out)[i] = bm;
    }
    /* Busy once all are found (one may be named twice, as QEMU allows). */
    for (*n = 0; *n < len; (*n)++) {
        dirty_bitmap_set_busy((*out)[*n], true);
        bdrv_ref((*nodes)[*n]);
    }
    return true;
}

/* Before anything is set up, as QEMU checks: a server, a free name. */
static bool nbd_export_check(json_object *options, Error **errp)
{
    const char *name = get_str(options, "name"), *desc = get_str(options, "description");

    if (!nbd_server_running()) {
        error_setg(errp, "NBD server not running");
        return false;
    }
    if (!name) {
        name = get_str(options, "node-name");
    }
    if (strlen(name) > NBD_NAME_MAX) {
        error_setg(errp, "export name '%s' too long", name);
        return false;
    }
    if (desc && strlen(desc) > NBD_MAX_STRING) {
        error_setg(errp, "description '%s' too long", desc);
        return false;
    }
    if (nbd_export_find(name)) {
        error_setg(errp, "NBD server already has export named '%s'", name);
        return false;
    }
    return true;
}

static void *nbd_export_create(BlockExport *exp, json_object *options, Error **errp)
{
    const char *name = get_str(options, "name"), *desc = get_str(options, "description");
    BlockDriverState *bs = blk_bs(blk_exp_blk(exp));
    NbdExport *e = calloc(1, sizeof(*e));
    json_object *v;

    if (!e) {
        abort();
    }
    if (!export_parse_bitmaps(options, bs, blk_exp_writable(exp), &e->bitmaps,
                              &e->bitmap_nodes, &e->nbitmaps, errp)) {
        free(e);
        return NULL;
    }
    e->name = strdup(name ? name : get_str(options, "node-name"));
    e->description = desc ? strdup(desc) : NULL;
    e->allocation_depth = json_object_object_get_ex(options, "allocation-depth", &v) &&
                          json_object_get_boolean(v);
    return e;
}

/* The connection owning @link: links sit first in NbdClient (nbd-client.c). */
static void shutdown_user(ListNode *link)
{
    nbd_client_shutdown((NbdClient *)(void *)link);
}

static void nbd_export_request_shutdown(BlockExport *exp)
{
    blk_exp_foreach_user(exp, shutdown_user);
}

static void nbd_export_free(void *state)
{
    NbdExport *e = state;

    release_bitmaps(e->bitmaps, e->bitmap_nodes, e->nbitmaps);
    free(e->name);
    free(e->description);
    free(e);
}

const BlockExportDriver blk_exp_nbd = {
    .type = "nbd",
    .check = nbd_export_check,
    .create = nbd_export_create,
    .request_shutdown = nbd_export_request_shutdown,
    .free = nbd_export_free,
};

static NbdExport *nbd_of(BlockExport *exp)
{
    return blk_exp_state(exp);
}

BlockExport *nbd_export_find(const char *name)
{
    GLOBAL_STATE_CODE();
    for (BlockExport *exp = blk_exp_next(NULL); exp; exp = blk_exp_next(exp)) {
        if (blk_exp_driver(exp) == &blk_exp_nbd && !strcmp(nbd_of(exp)->name, name)) {
            return exp;
        }
    }
    return NULL;
}

const char *nbd_export_name(BlockExport *exp) { return nbd_of(exp)->name; }
const char *nbd_export_description(BlockExport *exp) { return nbd_of(exp)->description; }
bool nbd_export_allocation_depth(BlockExport *exp) { return nbd_of(exp)->allocation_depth; }
int nbd_export_nbitmaps(BlockExport *exp) { return nbd_of(exp)->nbitmaps; }
BdrvDirtyBitmap *nbd_export_bitmap(BlockExport *exp, int i) { return nbd_of(exp)->bitmaps[i]; }
