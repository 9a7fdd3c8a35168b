/*
 * export.c - block exports: a BlockBackend on a node, the connections
 * that use it, and what they do in drained sections.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/aio-wait.h"
#include "blockd/atomic.h"
#include "blockd/block-chain.h"
#include "blockd/block-global-state.h"
#include "blockd/dirty-bitmap.h"
#include "blockd/iothread.h"
#include "blockd/log.h"
#include "blockd/main-loop.h"
#include "blockd/monitor.h"
#include "blockd/thread.h"
#include "nbd-internal.h"
#include "nbd-proto.h"

struct BlockExport {
    char *id;
    char *nbd_name;
    char *description;
    bool allocation_depth;              /* offer "qemu:allocation-depth" */
    /* immutable: "qemu:dirty-bitmap:NAME" contexts, busy while exported,
     * and the nodes they belong to (referenced: a bitmap goes with its node) */
    BdrvDirtyBitmap **bitmaps;
    BlockDriverState **bitmap_nodes;
    int nbitmaps;
    char *node_name;
    bool writable;
    BlockBackend *blk;
    AioContext *ctx;              /* the first (or only) home of connections */
    AioContext **ctxs;            /* immutable: all of them (iothreads=[...]) */
    int nctxs;
    unsigned next_ctx;            /* atomic: round robin over ctxs */
    int refcnt;                   /* main thread */
    ListNode clients;             /* main thread: links owned by the clients */
    int num_clients;              /* main thread */
    unsigned in_flight;           /* atomic: requests of all connections */
    int quiesced;                 /* atomic: inside a drained section */
    BdMutex lock;
    CoQueue unquiesce TSA_FIELD_GUARDED_BY(lock);   /* receivers waiting */
    ListNode node;                /* main thread: in exports */
};

static ListNode exports = LIST_INIT_STATIC(exports);

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

/*
 * "iothreads": a list of iothread names; the export's connections are
 * spread over them, round robin (beyond qemu-storage-daemon, which has one
 * "iothread" per export).
 */
static bool export_parse_iothreads(json_object *options, bool have_iothread,
                                   AioContext ***ctxs, int *nctxs, Error **errp)
{
    json_object *list;
    int n;

    *ctxs = NULL;
    *nctxs = 0;
    if (!json_object_object_get_ex(options, "iothreads", &list)) {
        return true;
    }
    n = json_object_array_length(list);
    if (have_iothread || n == 0) {
        error_setg(errp, have_iothread ? "'iothread' and 'iothreads' are mutually exclusive"
                                       : "Parameter 'iothreads' expects a non-empty list");
        return false;
    }
    *ctxs = calloc(n, sizeof(**ctxs));
    if (!*ctxs) {
        abort();
    }
    for (int i = 0; i < n; i++) {
        const char *name = json_object_get_string(json_object_array_get_idx(list, i));
        IOThread *iot = iothread_find(name);
        if (!iot) {
            error_setg(errp, "iothread \"%s\" not found", name);
            free(*ctxs);
            *ctxs = NULL;
            return false;
        }
        (*ctxs)[i] = iothread_get_aio_context(iot);
    }
    *nctxs = n;
    return true;
}

/* ---- Drained sections ------------------------------------------------------- */

static void exp_drained_begin(void *opaque)
{
    BlockExport *exp = opaque;
    atomic_set_mb(&exp->quiesced, 1);
}

static void exp_drained_end(void *opaque)
{
    BlockExport *exp = opaque;

    atomic_set_mb(&exp->quiesced, 0);
    bd_mutex_lock(&exp->lock);
    co_queue_restart_all_bdmutex(&exp->unquiesce, &exp->lock);
    bd_mutex_unlock(&exp->lock);
}

static bool exp_drained_poll(void *opaque)
{
    BlockExport *exp = opaque;
    return atomic_read_mb(&exp->in_flight) > 0;
}

static const BlockDevOps exp_dev_ops = {
    .drained_begin = exp_drained_begin,
    .drained_end = exp_drained_end,
    .drained_poll = exp_drained_poll,
};

bool blk_exp_quiesced(BlockExport *exp)
{
    return atomic_read_mb(&exp->quiesced) != 0;
}

void blk_exp_wait_unquiesced(BlockExport *exp)
{
    bd_mutex_lock(&exp->lock);
    while (atomic_read_mb(&exp->quiesced)) {
        co_queue_wait_bdmutex(&exp->unquiesce, &exp->lock);
    }
    bd_mutex_unlock(&exp->lock);
}

void blk_exp_request_begin(BlockExport *exp)
{
    atomic_inc(&exp->in_flight);
}

void blk_exp_request_end(BlockExport *exp)
{
    unsigned old = atomic_fetch_sub(&exp->in_flight, 1);
    assert(old > 0);
    aio_wait_kick();
}

/* ---- Creation and deletion ---------------------------------------------------- */

static const char *get_str(json_object *o, const char *key)
{
    json_object *v;
    return json_object_object_get_ex(o, key, &v) ? json_object_get_string(v) : NULL;
}

/* As QEMU's id_wellformed(): a letter, then letters, digits, '-', '.', '_'. */
static bool id_wellformed(const char *id)
{
    if (!isalpha((unsigned char)id[0])) {
        return false;
    }
    for (const char *p = id + 1; *p; p++) {
        if (!isalnum((unsigned char)*p) && !strchr("-._", *p)) {
            return false;
        }
    }
    return true;
}

BlockExport *blk_exp_add(json_object *options, Error **errp)
{
    const char *id = get_str(options, "id"), *node_name = get_str(options, "node-name");
    const char *name = get_str(options, "name"), *desc = get_str(options, "description");
    const char *iothread = get_str(options, "iothread");
    json_object *v;
    bool writable = false, fixed = false, writethrough = false;
    IOThread *iot = NULL;
    BlockDriverState *bs;
    BlockExport *exp;
    AioContext *ctx;
    AioContext **ctxs = NULL;
    BdrvDirtyBitmap **bms = NULL;
    BlockDriverState **bm_nodes = NULL;
    int nctxs = 0, nbms = 0;
    uint64_t perm = BLK_PERM_CONSISTENT_READ;

    GLOBAL_STATE_CODE();
    if (json_object_object_get_ex(options, "writable", &v)) {
        writable = json_object_get_boolean(v);
    }
    if (!id_wellformed(id)) {
        error_setg(errp, "Invalid block export id");
        return NULL;
    }
    if (blk_exp_find(id)) {
        error_setg(errp, "Block export id '%s' is already in use", id);
        return NULL;
    }
    bs = bdrv_find_node(node_name);
    if (!bs) {
        error_setg(errp, "Cannot find device='' nor node-name='%s'", node_name);
        return NULL;
    }
    if (!nbd_server_running()) {
        error_setg(errp, "NBD server not running");
        return NULL;
    }
    if (!name) {
        name = node_name;
    }
    if (strlen(name) > NBD_NAME_MAX) {
        error_setg(errp, "export name '%s' too long", name);
        return NULL;
    }
    if (desc && strlen(desc) > NBD_MAX_STRING) {
        error_setg(errp, "description '%s' too long", desc);
        return NULL;
    }
    if (blk_exp_find_nbd(name)) {
        error_setg(errp, "NBD server already has export named '%s'", name);
        return NULL;
    }
    if (json_object_object_get_ex(options, "fixed-iothread", &v)) {
        fixed = json_object_get_boolean(v);
    }
    if (json_object_object_get_ex(options, "writethrough", &v)) {
        writethrough = json_object_get_boolean(v);
    }
    if (iothread && !(iot = iothread_find(iothread))) {
        error_setg(errp, "iothread \"%s\" not found", iothread);
        return NULL;
    }
    if (!export_parse_iothreads(options, iothread != NULL, &ctxs, &nctxs, errp)) {
        return NULL;
    }
    if (writable && bs->read_only) {
        error_setg(errp, "Cannot export read-only node as writable");
        free(ctxs);
        return NULL;
    }
    if (!export_parse_bitmaps(options, bs, writable, &bms, &bm_nodes, &nbms, errp)) {
        free(ctxs);
        return NULL;
    }
    /* The node moves to the export's iothread if it can; if it cannot, a
     * fixed export fails and another runs where the node stays. */
    if (iot && bdrv_try_change_aio_context(bs, iothread_get_aio_context(iot),
                                           fixed ? errp : NULL) < 0 && fixed) {
        release_bitmaps(bms, bm_nodes, nbms);
        free(ctxs);
        return NULL;
    }
    /* The export runs where its node lives, or on its list of iothreads. */
    ctx = nctxs ? ctxs[0] : bs->ctx;
    if (writable) {
        perm |= BLK_PERM_WRITE;
    }

    exp = calloc(1, sizeof(*exp));
    if (!exp) {
        abort();
    }
    exp->blk = blk_new(perm, BLK_PERM_ALL);
    if (blk_insert_bs(exp->blk, bs, errp) < 0) {
        blk_unref(exp->blk);
        release_bitmaps(bms, bm_nodes, nbms);
        free(ctxs);
        free(exp);
        return NULL;
    }
    exp->bitmaps = bms;
    exp->bitmap_nodes = bm_nodes;
    exp->nbitmaps = nbms;
    exp->id = strdup(id);
    exp->nbd_name = strdup(name);
    exp->description = desc ? strdup(desc) : NULL;
    exp->allocation_depth = json_object_object_get_ex(options, "allocation-depth", &v) &&
                            json_object_get_boolean(v);
    exp->node_name = strdup(node_name);     /* until the node is gone */
    exp->writable = writable;
    exp->ctx = ctx;
    exp->ctxs = ctxs;
    exp->nctxs = nctxs;
    exp->refcnt = 1;
    list_init(&exp->clients);
    bd_mutex_init(&exp->lock);
    bd_mutex_lock(&exp->lock);
    co_queue_init(&exp->unquiesce);
    bd_mutex_unlock(&exp->lock);
    {
        char desc_buf[256];
        snprintf(desc_buf, sizeof(desc_buf), "block device '%s'", id);
        blk_set_user_desc(exp->blk, desc_buf);
    }
    /* Requests already read are finished during a drain; new ones wait
     * in the export, not in the backend. */
    blk_set_allow_queuing(exp->blk, false);
    blk_set_fixed_aio_context(exp->blk, fixed);
    blk_set_enable_write_cache(exp->blk, !writethrough);
    blk_set_dev_ops(exp->blk, &exp_dev_ops, exp);
    list_add_tail(&exports, &exp->node);
    return exp;
}

void blk_exp_ref(BlockExport *exp)
{
    GLOBAL_STATE_CODE();
    exp->refcnt++;
}

void blk_exp_unref(BlockExport *exp)
{
    GLOBAL_STATE_CODE();
    assert(exp->refcnt > 0);
    if (--exp->refcnt > 0) {
        return;
    }
    assert(exp->num_clients == 0);
    release_bitmaps(exp->bitmaps, exp->bitmap_nodes, exp->nbitmaps);
    blk_unref(exp->blk);
    bd_mutex_destroy(&exp->lock);
    free(exp->id);
    free(exp->nbd_name);
    free(exp->description);
    free(exp->node_name);
    free(exp->ctxs);
    free(exp);
}

void blk_exp_add_client(BlockExport *exp, NbdClient *client, ListNode *link)
{
    (void)client;
    GLOBAL_STATE_CODE();
    list_add_tail(&exp->clients, link);
    exp->num_clients++;
    blk_exp_ref(exp);
}

void blk_exp_remove_client(BlockExport *exp, ListNode *link)
{
    GLOBAL_STATE_CODE();
    list_del(link);
    exp->num_clients--;
    aio_wait_kick();
    blk_exp_unref(exp);
}

/* The client owning @link: links sit first in NbdClient (see nbd-client.c). */
static NbdClient *link_client(ListNode *link)
{
    return (NbdClient *)(void *)link;
}

static void exp_shutdown_clients(BlockExport *exp)
{
    list_for_each(n, &exp->clients) {
        nbd_client_shutdown(link_client(n));
    }
}

bool blk_exp_del(const char *id, Error **errp)
{
    BlockExport *exp = blk_exp_find(id);
    json_object *data;

    GLOBAL_STATE_CODE();
    if (!exp) {
        error_setg(errp, "Export '%s' is not found", id);
        return false;
    }
    list_del(&exp->node);
    /* In-flight requests finish; then each connection ends. */
    exp_shutdown_clients(exp);
    AIO_WAIT_WHILE_UNLOCKED(NULL, exp->num_clients > 0);
    data = json_object_new_object();
    json_object_object_add(data, "id", json_object_new_string(exp->id));
    blk_exp_unref(exp);
    qmp_event("BLOCK_EXPORT_DELETED", data);
    return true;
}

BlockExport *blk_exp_find(const char *id)
{
    GLOBAL_STATE_CODE();
    list_for_each(n, &exports) {
        BlockExport *exp = list_entry(n, BlockExport, node);
        if (strcmp(exp->id, id) == 0) {
            return exp;
        }
    }
    return NULL;
}

BlockExport *blk_exp_find_nbd(const char *name)
{
    GLOBAL_STATE_CODE();
    list_for_each(n, &exports) {
        BlockExport *exp = list_entry(n, BlockExport, node);
        if (strcmp(exp->nbd_name, name) == 0) {
            return exp;
        }
    }
    return NULL;
}

void blk_exp_foreach(void (*fn)(BlockExport *exp, void *opaque), void *opaque)
{
    GLOBAL_STATE_CODE();
    list_for_each_safe(n, &exports) {
        fn(list_entry(n, BlockExport, node), opaque);
    }
}

void blk_exp_close_all(void)
{
    GLOBAL_STATE_CODE();
    while (!list_empty(&exports)) {
        blk_exp_del(list_entry(exports.next, BlockExport, node)->id, &error_abort);
    }
}

int blk_exp_num_clients(BlockExport *exp)
{
    GLOBAL_STATE_CODE();
    return exp->num_clients;
}

const char *blk_exp_id(BlockExport *exp) { return exp->id; }
const char *blk_exp_nbd_name(BlockExport *exp) { return exp->nbd_name; }
const char *blk_exp_description(BlockExport *exp) { return exp->description; }
bool blk_exp_allocation_depth(BlockExport *exp) { return exp->allocation_depth; }
int blk_exp_nbitmaps(BlockExport *exp) { return exp->nbitmaps; }
BdrvDirtyBitmap *blk_exp_bitmap(BlockExport *exp, int i) { return exp->bitmaps[i]; }
/* The node the export serves now: a mirror that completed may have moved
 * its users to another node since the export was added. */
const char *blk_exp_node_name(BlockExport *exp)
{
    BlockDriverState *bs;

    GLOBAL_STATE_CODE();
    bs = blk_bs(exp->blk);
    return bs ? bs->node_name : exp->node_name;
}
bool blk_exp_writable(BlockExport *exp) { return exp->writable; }
BlockBackend *blk_exp_blk(BlockExport *exp) { return exp->blk; }
AioContext *blk_exp_ctx(BlockExport *exp) { return exp->ctx; }

AioContext *blk_exp_next_ctx(BlockExport *exp)
{
    if (exp->nctxs == 0) {
        return exp->ctx;
    }
    return exp->ctxs[atomic_fetch_add(&exp->next_ctx, 1) % (unsigned)exp->nctxs];
}

bool blk_exp_uses_ctx(BlockExport *exp, AioContext *ctx)
{
    for (int i = 0; i < exp->nctxs; i++) {
        if (exp->ctxs[i] == ctx) {
            return true;
        }
    }
    return exp->ctx == ctx;
}
