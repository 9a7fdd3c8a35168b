/*
 * block-test-util.h - helpers for tests of the block layer: open nodes from
 * JSON text, and run a backend request in a coroutine from the main thread.
 */
#ifndef BLOCKD_BLOCK_TEST_UTIL_H
#define BLOCKD_BLOCK_TEST_UTIL_H

#include "test-util.h"

#include "blockd/block.h"
#include "blockd/block-backend-io.h"
#include "blockd/block-global-state.h"
#include "blockd/block-io.h"

static inline int bt_setup(void **state)
{
    tu_setup(state);
    bdrv_init();
    return 0;
}

/* Open a node from blockdev-add JSON; NULL with *errp on failure. */
static inline BlockDriverState *bt_open(const char *json, Error **errp)
{
    json_object *o = json_tokener_parse(json);
    BlockDriverState *bs;

    if (!o) {
        fprintf(stderr, "bad JSON in test: %s\n", json);
        abort();
    }
    bs = bdrv_open_options(o, errp);
    json_object_put(o);
    return bs;
}

/* A request run in a coroutine in the main thread, polled to completion. */
typedef struct BtOp {
    BlockBackend *blk;
    char op;                  /* 'z' zeroes, 'd' discard, 's' status, 'f' flush */
    int64_t offset, bytes;
    int flags;
    int ret;
    int64_t pnum;
    bool done;
} BtOp;

static void coroutine_fn bt_op_entry(void *opaque)
{
    BtOp *op = opaque;

    switch (op->op) {
    case 'z':
        op->ret = blk_co_pwrite_zeroes(op->blk, op->offset, op->bytes, op->flags);
        break;
    case 'd':
        op->ret = blk_co_pdiscard(op->blk, op->offset, op->bytes);
        break;
    case 'f':
        op->ret = blk_co_flush(op->blk);
        break;
    default:
        op->ret = blk_co_block_status(op->blk, op->offset, op->bytes, &op->pnum);
        break;
    }
    atomic_store_release(&op->done, true);
    aio_wait_kick();
}

static inline int bt_run(BlockBackend *blk, char op, int64_t offset, int64_t bytes,
                         int flags, int64_t *pnum)
{
    BtOp o = { .blk = blk, .op = op, .offset = offset, .bytes = bytes, .flags = flags };

    coroutine_enter(coroutine_create(bt_op_entry, &o));
    if (!TU_POLL_UNTIL(atomic_load_acquire(&o.done), 30000)) {
        fprintf(stderr, "block request did not complete\n");
        abort();
    }
    if (pnum) {
        *pnum = o.pnum;
    }
    return o.ret;
}

/* A backend on @bs with the given permissions; aborts on error. */
static inline BlockBackend *bt_backend(BlockDriverState *bs, uint64_t perm, uint64_t shared)
{
    BlockBackend *blk = blk_new(perm, shared);
    if (blk_insert_bs(blk, bs, &error_abort) < 0) {
        abort();
    }
    return blk;
}

#endif /* BLOCKD_BLOCK_TEST_UTIL_H */
