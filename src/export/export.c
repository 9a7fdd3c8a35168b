/*
 * export.c - block exports, whatever their type: the id, a BlockBackend on
 * the node, the contexts the export runs in, its users and what they do
 * in drained sections (export-driver.h).  A type adds the rest: NBD in
 * nbd-export.c.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/aio-wait.h"
#include "blockd/atomic.h"
#include "blockd/block-global-state.h"
#include "blockd/block-io.h"
#include "blockd/export-driver.h"
#include "blockd/iothread.h"
#include "blockd/main-loop.h"
#include "blockd/thread.h"
#include "export-types.h"

struct BlockExport {
    const BlockExportDriver *drv; /* immutable */
    void *state;                  /* immutable: the type's */
    char *id;
    char *node_name;
    bool writable;
    bool writethrough;
    BlockBackend *blk;
    AioContext *ctx;              /* the first (or only) home of its users */
    AioContext **ctxs;            /* immutable: all of them (iothreads=[...]) */
    int nctxs;
    unsigned next_ctx;            /* atomic: round robin over ctxs */
    int refcnt;                   /* main thread */
    ListNode users;               /* main thread: links owned by the users */
    int num_users;                /* main thread */
    unsigned in_flight;           /* atomic: requests of all users */
    int quiesced;                 /* atomic: inside a drained section */
    BdMutex lock;
    CoQueue unquiesce TSA_FIELD_GUARDED_BY(lock);   /* receivers waiting */
    ListNode node;                /* main thread: in exports */
};

static ListNode exports = LIST_INIT_STATIC(exports);

/* The export types blockd has. */
static const BlockExportDriver *const drivers[] = {
    &blk_exp_nbd, &blk_exp_fuse, &blk_exp_vhost_user_blk, NULL,
};

static const BlockExportDriver *find_driver(const char *type)
{
    for (int i = 0; drivers[i]; i++) {
        if (type && !strcmp(drivers[i]->type, type)) {
            return drivers[i];
        }
    }
    return NULL;
}

/*
 * A list of iothread names, as "iothread" or as "iothreads": the export's
 * users (connections, queues) are spread over them, round robin (beyond
 * qemu-storage-daemon 7.2, which has one "iothread" per export).
 */
static bool export_parse_iothreads(json_object *options, const char *iothread,
                                   AioContext ***ctxs, int *nctxs, Error **errp)
{
    json_object *list, *v;
    const char *key = "iothreads";
    int n;

    *ctxs = NULL;
    *nctxs = 0;
    if (json_object_object_get_ex(options, "iothread", &v) &&
        json_object_is_type(v, json_type_array)) {
        if (json_object_object_get_ex(options, "iothreads", &list)) {
            error_setg(errp, "'iothread' and 'iothreads' are mutually exclusive");
            return false;
        }
        list = v;
        key = "iothread";
    } else if (!json_object_object_get_ex(options, "iothreads", &list)) {
        return true;
    }
    n = json_object_array_length(list);
    if (iothread) {
        error_setg(errp, "'iothread' and 'iothreads' are mutually exclusive");
        return false;
    }
    if (n == 0) {
        error_setg(errp, "Parameter '%s' expects a non-empty list", key);
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

/* The node changed size: the types that tell their users (virtio's config
 * change) do so. */
static void exp_resized(void *opaque)
{
    BlockExport *exp = opaque;

    if (exp->drv->resized) {
        exp->drv->resized(exp);
    }
}

static const BlockDevOps exp_dev_ops = {
    .drained_begin = exp_drained_begin,
    .drained_end = exp_drained_end,
    .drained_poll = exp_drained_poll,
    .resized = exp_resized,
};

void coroutine_fn blk_exp_co_request_begin(BlockExport *exp)
{
    blk_exp_request_begin(exp);
    while (blk_exp_quiesced(exp)) {
        blk_exp_request_end(exp);
        blk_exp_wait_unquiesced(exp);
        blk_exp_request_begin(exp);
    }
}

bool blk_exp_writethrough(BlockExport *exp)
{
    return exp->writethrough;
}

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
    return json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string)
           ? json_object_get_string(v) : NULL;
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

/* "iothread" must exist; "iothreads" (blockd's) spreads users over
 * several, into *@ctxs. */
static bool export_parse_place(json_object *options, AioContext ***ctxs, int *nctxs,
                               Error **errp)
{
    const char *iothread = get_str(options, "iothread");

    if (iothread && !iothread_find(iothread)) {
        error_setg(errp, "iothread \"%s\" not found", iothread);
        return false;
    }
    return export_parse_iothreads(options, iothread, ctxs, nctxs, errp);
}

static void export_free(BlockExport *exp)
{
    if (exp->blk) {
        blk_unref(exp->blk);
    }
    bd_mutex_destroy(&exp->lock);
    free(exp->id);
    free(exp->node_name);
    free(exp->ctxs);
    free(exp);
}

BlockExport *blk_exp_add(json_object *options, Error **errp)
{
    const char *id = get_str(options, "id"), *node_name = get_str(options, "node-name");
    const BlockExportDriver *drv = find_driver(get_str(options, "type"));
    json_object *v;
    bool writable = false, fixed = false, writethrough = false;
    BlockDriverState *bs;
    BlockExport *exp;
    AioContext *ctx;
    AioContext **ctxs = NULL;
    IOThread *iot = NULL;
    int nctxs = 0;
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
    if (!drv) {
        error_setg(errp, "blockd has no export type '%s'", get_str(options, "type"));
        return NULL;
    }
    bs = bdrv_find_node(node_name);
    if (!bs) {
        error_setg(errp, "Cannot find device='' nor node-name='%s'", node_name);
        return NULL;
    }
    if (drv->check && !drv->check(options, errp)) {
        return NULL;
    }
    if (json_object_object_get_ex(options, "fixed-iothread", &v)) {
        fixed = json_object_get_boolean(v);
    }
    if (json_object_object_get_ex(options, "writethrough", &v)) {
        writethrough = json_object_get_boolean(v);
    }
    if (!export_parse_place(options, &ctxs, &nctxs, errp)) {
        return NULL;
    }
    if (writable && bs->read_only) {
        error_setg(errp, "Cannot export read-only node as writable");
        free(ctxs);
        return NULL;
    }
    /* The node moves to the export's iothread if it can; if it cannot, a
     * fixed export fails and another runs where the node stays. */
    if (get_str(options, "iothread")) {
        iot = iothread_find(get_str(options, "iothread"));
    }
    if (iot && bdrv_try_change_aio_context(bs, iothread_get_aio_context(iot),
                                           fixed ? errp : NULL) < 0 && fixed) {
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
    bd_mutex_init(&exp->lock);
    bd_mutex_lock(&exp->lock);
    co_queue_init(&exp->unquiesce);
    bd_mutex_unlock(&exp->lock);
    exp->drv = drv;
    exp->id = strdup(id);
    exp->node_name = strdup(node_name);     /* until the node is gone */
    exp->writable = writable;
    exp->writethrough = writethrough;
    exp->ctx = ctx;
    exp->ctxs = ctxs;
    exp->nctxs = nctxs;
    exp->refcnt = 1;
    list_init(&exp->users);
    exp->blk = blk_new(perm, BLK_PERM_ALL);
    if (blk_insert_bs(exp->blk, bs, errp) < 0) {
        export_free(exp);
        return NULL;
    }
    exp->state = drv->create(exp, options, errp);
    if (!exp->state) {
        export_free(exp);
        return NULL;
    }
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
    const BlockExportDriver *drv;
    void *state;

    GLOBAL_STATE_CODE();
    assert(exp->refcnt > 0);
    if (--exp->refcnt > 0) {
        return;
    }
    assert(exp->num_users == 0);
    drv = exp->drv;
    state = exp->state;
    /* The backend goes first: none of its callbacks (a resize, from any
     * thread) can reach the type's state once that is freed. */
    export_free(exp);
    drv->free(state);
}

void blk_exp_add_user(BlockExport *exp, ListNode *link)
{
    GLOBAL_STATE_CODE();
    list_add_tail(&exp->users, link);
    exp->num_users++;
    blk_exp_ref(exp);
}

void blk_exp_remove_user(BlockExport *exp, ListNode *link)
{
    GLOBAL_STATE_CODE();
    list_del(link);
    exp->num_users--;
    aio_wait_kick();
    blk_exp_unref(exp);
}

void blk_exp_foreach_user(BlockExport *exp, void (*fn)(ListNode *link))
{
    GLOBAL_STATE_CODE();
    list_for_each_safe(n, &exp->users) {
        fn(n);
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
    /* In-flight requests finish; then each user ends. */
    exp->drv->request_shutdown(exp);
    AIO_WAIT_WHILE_UNLOCKED(NULL, exp->num_users > 0);
    data = json_object_new_object();
    json_object_object_add(data, "id", json_object_new_string(exp->id));
    blk_exp_unref(exp);
    bdrv_emit_event("BLOCK_EXPORT_DELETED", data);
    return true;
}

BlockExport *blk_exp_find(const char *id)
{
    GLOBAL_STATE_CODE();
    for (BlockExport *exp = blk_exp_next(NULL); exp; exp = blk_exp_next(exp)) {
        if (strcmp(exp->id, id) == 0) {
            return exp;
        }
    }
    return NULL;
}

BlockExport *blk_exp_next(BlockExport *prev)
{
    ListNode *n = prev ? prev->node.next : exports.next;

    GLOBAL_STATE_CODE();
    return n == &exports ? NULL : list_entry(n, BlockExport, node);
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
    return exp->num_users;
}

const char *blk_exp_id(BlockExport *exp) { return exp->id; }
const char *blk_exp_type(BlockExport *exp) { return exp->drv->type; }
void *blk_exp_state(BlockExport *exp) { return exp->state; }
const BlockExportDriver *blk_exp_driver(BlockExport *exp) { return exp->drv; }
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
