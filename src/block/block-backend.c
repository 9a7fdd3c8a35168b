/*
 * block-backend.c - BlockBackend: a user's handle on a node.
 *
 * The backend is a root parent of its node.  While the node is drained the
 * backend's user is told to stop (BlockDevOps), and requests that arrive
 * anyway wait in queued_requests -- without counting as in flight, so the
 * drain can finish -- until the drained section ends.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/block-chain.h"
#include "blockd/aio-wait.h"
#include "blockd/atomic.h"
#include "blockd/block-backend-io.h"
#include "blockd/block-global-state.h"
#include "blockd/block-io.h"
#include "blockd/main-loop.h"

struct BlockBackend {
    BdrvChild *root TSA_GUARDED_BY(graph_lock);
    uint64_t perm;                   /* GS */
    uint64_t shared_perm;            /* GS */
    char *user_desc;                 /* GS */
    const BlockDevOps *dev_ops;      /* GS */
    void *dev_opaque;
    bool allow_queuing;              /* GS */
    bool fixed_ctx;                  /* GS: refuse to let the node move */
    bool write_through;              /* atomic: writes are FUA */
    int quiesce_counter;             /* atomic; written by the main thread */
    unsigned in_flight;              /* atomic */
    BdMutex queue_lock;
    CoQueue queued_requests TSA_FIELD_GUARDED_BY(queue_lock);
};

/* ---- The root edge ---------------------------------------------------------- */

static void blk_root_drained_begin(BdrvChild *c)
{
    BlockBackend *blk = c->opaque;

    if (atomic_fetch_add(&blk->quiesce_counter, 1) == 0 &&
        blk->dev_ops && blk->dev_ops->drained_begin) {
        blk->dev_ops->drained_begin(blk->dev_opaque);
    }
}

static void blk_root_drained_end(BdrvChild *c)
{
    BlockBackend *blk = c->opaque;

    assert(atomic_read(&blk->quiesce_counter) > 0);
    if (atomic_fetch_sub(&blk->quiesce_counter, 1) == 1) {
        if (blk->dev_ops && blk->dev_ops->drained_end) {
            blk->dev_ops->drained_end(blk->dev_opaque);
        }
        bd_mutex_lock(&blk->queue_lock);
        co_queue_restart_all_bdmutex(&blk->queued_requests, &blk->queue_lock);
        bd_mutex_unlock(&blk->queue_lock);
    }
}

static bool blk_root_drained_poll(BdrvChild *c)
{
    BlockBackend *blk = c->opaque;

    return atomic_read(&blk->in_flight) > 0 ||
           (blk->dev_ops && blk->dev_ops->drained_poll &&
            blk->dev_ops->drained_poll(blk->dev_opaque));
}

static char *blk_root_desc(BdrvChild *c)
{
    BlockBackend *blk = c->opaque;
    char *s = strdup(blk->user_desc ? blk->user_desc : "a block backend");

    if (!s) {
        abort();
    }
    return s;
}

static bool blk_root_can_set_aio_ctx(BdrvChild *c, AioContext *ctx, Error **errp)
    GRAPH_RDLOCK
{
    BlockBackend *blk = c->opaque;

    if (blk->fixed_ctx && c->bs->ctx != ctx) {
        error_setg(errp, "Cannot change iothread of active block backend");
        return false;
    }
    return true;
}

static void blk_root_resized(BdrvChild *c)
{
    BlockBackend *blk = c->opaque;

    if (blk->dev_ops && blk->dev_ops->resized) {
        blk->dev_ops->resized(blk->dev_opaque);
    }
}

static const BdrvChildClass child_root = {
    .resized = blk_root_resized,
    .is_backend = true,
    .parent_type = "block-backend",
    .can_set_aio_ctx = blk_root_can_set_aio_ctx,
    .drained_begin = blk_root_drained_begin,
    .drained_end = blk_root_drained_end,
    .drained_poll = blk_root_drained_poll,
    .get_parent_desc = blk_root_desc,
};

/* ---- Global state --------------------------------------------------------------- */

BlockBackend *blk_new(uint64_t perm, uint64_t shared_perm)
{
    BlockBackend *blk = calloc(1, sizeof(*blk));

    GLOBAL_STATE_CODE();
    if (!blk) {
        abort();
    }
    blk->perm = perm;
    blk->shared_perm = shared_perm;
    blk->allow_queuing = true;
    bd_mutex_init(&blk->queue_lock);
    bd_mutex_lock(&blk->queue_lock);
    co_queue_init(&blk->queued_requests);
    bd_mutex_unlock(&blk->queue_lock);
    return blk;
}

int blk_insert_bs(BlockBackend *blk, BlockDriverState *bs, Error **errp)
{
    BdrvChild *c;

    GLOBAL_STATE_CODE();
    c = bdrv_root_attach_child(bs, "root", &child_root, BDRV_CHILD_FILTERED,
                               blk->perm, blk->shared_perm, blk, errp);
    if (!c) {
        return -1;
    }
    graph_wrlock();
    blk->root = c;
    graph_wrunlock();
    return 0;
}

void blk_remove_bs(BlockBackend *blk)
{
    BdrvChild *c;

    GLOBAL_STATE_CODE();
    graph_wrlock();        /* waits for requests that are using root */
    c = blk->root;
    blk->root = NULL;
    graph_wrunlock();
    if (c) {
        bdrv_root_unref_child(c);
    }
}

void blk_unref(BlockBackend *blk)
{
    GLOBAL_STATE_CODE();
    if (!blk) {
        return;
    }
    blk_remove_bs(blk);
    AIO_WAIT_WHILE_UNLOCKED(NULL, atomic_read(&blk->in_flight) > 0);
    bd_mutex_destroy(&blk->queue_lock);
    free(blk->user_desc);
    free(blk);
}

int blk_set_perm(BlockBackend *blk, uint64_t perm, uint64_t shared_perm, Error **errp)
{
    int ret = 0;

    GLOBAL_STATE_CODE();
    /* The I/O path reads the edge's permissions under the read lock. */
    graph_wrlock();
    if (blk->root) {
        ret = bdrv_child_try_set_perm(blk->root, perm, shared_perm, errp);
    }
    graph_wrunlock();
    if (ret == 0) {
        blk->perm = perm;
        blk->shared_perm = shared_perm;
    }
    return ret;
}

void blk_get_perm(BlockBackend *blk, uint64_t *perm, uint64_t *shared_perm)
{
    GLOBAL_STATE_CODE();
    *perm = blk->perm;
    *shared_perm = blk->shared_perm;
}

void blk_set_user_desc(BlockBackend *blk, const char *desc)
{
    GLOBAL_STATE_CODE();
    free(blk->user_desc);
    blk->user_desc = desc ? strdup(desc) : NULL;
}

void blk_set_dev_ops(BlockBackend *blk, const BlockDevOps *ops, void *opaque)
{
    GLOBAL_STATE_CODE();
    blk->dev_ops = ops;
    blk->dev_opaque = opaque;
}

void blk_set_enable_write_cache(BlockBackend *blk, bool wce)
{
    atomic_set(&blk->write_through, !wce);
}

void blk_set_allow_queuing(BlockBackend *blk, bool allow)
{
    GLOBAL_STATE_CODE();
    blk->allow_queuing = allow;
}

void blk_set_fixed_aio_context(BlockBackend *blk, bool fixed)
{
    GLOBAL_STATE_CODE();
    blk->fixed_ctx = fixed;
}

BlockDriverState *blk_bs(BlockBackend *blk)
{
    BlockDriverState *bs;

    GLOBAL_STATE_CODE();
    graph_rdlock_main_loop();
    bs = blk->root ? blk->root->bs : NULL;
    graph_rdunlock_main_loop();
    return bs;
}

void blk_drain(BlockBackend *blk)
{
    BlockDriverState *bs = blk_bs(blk);

    GLOBAL_STATE_CODE();
    if (bs) {
        bdrv_drained_begin(bs);
        bdrv_drained_end(bs);
    }
    AIO_WAIT_WHILE_UNLOCKED(NULL, atomic_read(&blk->in_flight) > 0);
}

/* ---- I/O ---------------------------------------------------------------------------- */

static void blk_inc_in_flight(BlockBackend *blk)
{
    atomic_inc(&blk->in_flight);
}

static void blk_dec_in_flight(BlockBackend *blk)
{
    unsigned old = atomic_fetch_sub(&blk->in_flight, 1);
    assert(old > 0);
    aio_wait_kick();
}

unsigned blk_in_flight(BlockBackend *blk)
{
    return atomic_read(&blk->in_flight);
}

/* Called with one in-flight reference held; drops it while queued. */
static void coroutine_fn blk_wait_while_drained(BlockBackend *blk)
{
    if (!atomic_read_mb(&blk->quiesce_counter) || !blk->allow_queuing) {
        return;
    }
    bd_mutex_lock(&blk->queue_lock);
    while (atomic_read_mb(&blk->quiesce_counter)) {
        blk_dec_in_flight(blk);
        co_queue_wait_bdmutex(&blk->queued_requests, &blk->queue_lock);
        blk_inc_in_flight(blk);
    }
    bd_mutex_unlock(&blk->queue_lock);
}

typedef enum BlkOp {
    BLK_READ, BLK_WRITE, BLK_ZEROES, BLK_DISCARD, BLK_FLUSH, BLK_STATUS, BLK_DEPTH,
} BlkOp;

typedef struct BlkRequest {
    BlkOp op;
    int64_t offset;
    int64_t bytes;
    struct iovec *iov;
    int niov;
    int flags;
    int64_t *pnum;
} BlkRequest;

static int coroutine_fn blk_do(BlockBackend *blk, BlkRequest *r)
{
    int ret;

    IO_CODE();
    if (atomic_read(&blk->write_through) && (r->op == BLK_WRITE || r->op == BLK_ZEROES)) {
        r->flags |= BDRV_REQ_FUA;
    }
    blk_inc_in_flight(blk);
    blk_wait_while_drained(blk);
    graph_co_rdlock();
    if (!blk->root) {
        ret = -ENOMEDIUM;
    } else {
        switch (r->op) {
        case BLK_READ:
            ret = bdrv_co_preadv(blk->root, r->offset, r->bytes, r->iov, r->niov, r->flags);
            break;
        case BLK_WRITE:
            ret = bdrv_co_pwritev(blk->root, r->offset, r->bytes, r->iov, r->niov, r->flags);
            break;
        case BLK_ZEROES:
            ret = bdrv_co_pwrite_zeroes(blk->root, r->offset, r->bytes, r->flags);
            break;
        case BLK_DISCARD:
            ret = bdrv_co_pdiscard(blk->root, r->offset, r->bytes);
            break;
        case BLK_FLUSH:
            ret = bdrv_co_flush(blk->root->bs);
            break;
        case BLK_DEPTH:
            ret = bdrv_co_allocation_depth(blk->root->bs, r->offset, r->bytes, r->pnum);
            break;
        case BLK_STATUS:
        default:
            ret = bdrv_co_block_status(blk->root->bs, r->offset, r->bytes, r->pnum);
            break;
        }
    }
    graph_co_rdunlock();
    blk_dec_in_flight(blk);
    return ret;
}

int coroutine_fn blk_co_preadv(BlockBackend *blk, int64_t offset, int64_t bytes,
                               struct iovec *iov, int niov, int flags)
{
    BlkRequest r = { BLK_READ, offset, bytes, iov, niov, flags, NULL };
    return blk_do(blk, &r);
}

int coroutine_fn blk_co_pwritev(BlockBackend *blk, int64_t offset, int64_t bytes,
                                struct iovec *iov, int niov, int flags)
{
    BlkRequest r = { BLK_WRITE, offset, bytes, iov, niov, flags, NULL };
    return blk_do(blk, &r);
}

int coroutine_fn blk_co_pread(BlockBackend *blk, int64_t offset, int64_t bytes,
                              void *buf, int flags)
{
    struct iovec iov = { buf, bytes };
    return blk_co_preadv(blk, offset, bytes, &iov, 1, flags);
}

int coroutine_fn blk_co_pwrite(BlockBackend *blk, int64_t offset, int64_t bytes,
                               const void *buf, int flags)
{
    struct iovec iov = { (void *)buf, bytes };
    return blk_co_pwritev(blk, offset, bytes, &iov, 1, flags);
}

int coroutine_fn blk_co_pwrite_zeroes(BlockBackend *blk, int64_t offset, int64_t bytes,
                                      int flags)
{
    BlkRequest r = { BLK_ZEROES, offset, bytes, NULL, 0, flags, NULL };
    return blk_do(blk, &r);
}

int coroutine_fn blk_co_pdiscard(BlockBackend *blk, int64_t offset, int64_t bytes)
{
    BlkRequest r = { BLK_DISCARD, offset, bytes, NULL, 0, 0, NULL };
    return blk_do(blk, &r);
}

int coroutine_fn blk_co_truncate(BlockBackend *blk, int64_t size, Error **errp)
{
    int ret;

    IO_CODE();
    blk_inc_in_flight(blk);
    blk_wait_while_drained(blk);
    graph_co_rdlock();
    if (!blk->root) {
        error_setg(errp, "No medium inserted");
        ret = -ENOMEDIUM;
    } else {
        ret = bdrv_co_truncate(blk->root, size, errp);
    }
    graph_co_rdunlock();
    blk_dec_in_flight(blk);
    return ret;
}

int coroutine_fn blk_co_flush(BlockBackend *blk)
{
    BlkRequest r = { BLK_FLUSH, 0, 0, NULL, 0, 0, NULL };
    return blk_do(blk, &r);
}

int coroutine_fn blk_co_block_status(BlockBackend *blk, int64_t offset, int64_t bytes,
                                     int64_t *pnum)
{
    BlkRequest r = { BLK_STATUS, offset, bytes, NULL, 0, 0, pnum };
    return blk_do(blk, &r);
}

static int64_t root_length(BlockBackend *blk) GRAPH_RDLOCK
{
    return blk->root ? bdrv_getlength(blk->root->bs) : -ENOMEDIUM;
}

int64_t blk_getlength(BlockBackend *blk)
{
    int64_t len;

    GLOBAL_STATE_CODE();
    graph_rdlock_main_loop();
    len = root_length(blk);
    graph_rdunlock_main_loop();
    return len;
}

int coroutine_fn blk_co_allocation_depth(BlockBackend *blk, int64_t offset, int64_t bytes,
                                        int64_t *pnum)
{
    BlkRequest r = { BLK_DEPTH, offset, bytes, NULL, 0, 0, pnum };
    return blk_do(blk, &r);
}

int64_t coroutine_fn blk_co_getlength(BlockBackend *blk)
{
    int64_t len;

    IO_CODE();
    graph_co_rdlock();
    len = root_length(blk);
    graph_co_rdunlock();
    return len;
}

/* ---- Synchronous wrappers (main thread) ----------------------------------------- */

typedef struct SyncRequest {
    BlockBackend *blk;
    BlkRequest r;
    int ret;
    bool done;
} SyncRequest;

static void coroutine_fn sync_request_co(void *opaque)
{
    SyncRequest *s = opaque;

    s->ret = blk_do(s->blk, &s->r);
    atomic_store_release(&s->done, true);
    aio_wait_kick();
}

static int blk_sync(BlockBackend *blk, BlkRequest r)
{
    SyncRequest s = { .blk = blk, .r = r };

    GLOBAL_STATE_CODE();
    assert(!in_coroutine());
    coroutine_enter(coroutine_create(sync_request_co, &s));
    AIO_WAIT_WHILE_UNLOCKED(NULL, !atomic_load_acquire(&s.done));
    return s.ret;
}

int blk_pread(BlockBackend *blk, int64_t offset, int64_t bytes, void *buf, int flags)
{
    struct iovec iov = { buf, bytes };
    return blk_sync(blk, (BlkRequest){ BLK_READ, offset, bytes, &iov, 1, flags, NULL });
}

int blk_pwrite(BlockBackend *blk, int64_t offset, int64_t bytes, const void *buf, int flags)
{
    struct iovec iov = { (void *)buf, bytes };
    return blk_sync(blk, (BlkRequest){ BLK_WRITE, offset, bytes, &iov, 1, flags, NULL });
}

int blk_flush(BlockBackend *blk)
{
    return blk_sync(blk, (BlkRequest){ BLK_FLUSH, 0, 0, NULL, 0, 0, NULL });
}
