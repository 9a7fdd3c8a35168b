/*
 * block-backend-global-state.h - creating and configuring BlockBackends.
 *
 * Half: global state (main thread, asserted).
 *
 * A BlockBackend is how a user of the block layer -- an NBD export, a block
 * job, a monitor command -- reaches a node: it is the root parent of that
 * node, holds the user's permissions, queues the user's requests while the
 * node is drained, and offers the I/O API of block-backend-io.h.
 */
#ifndef BLOCKD_BLOCK_BACKEND_GLOBAL_STATE_H
#define BLOCKD_BLOCK_BACKEND_GLOBAL_STATE_H

#include "blockd/block-int.h"

typedef struct BlockBackend BlockBackend;

/* What the backend's user is told about drained sections. */
typedef struct BlockDevOps {
    /* Stop issuing new requests (they would queue). */
    void (*drained_begin)(void *opaque);
    void (*drained_end)(void *opaque);
    /* Does the user still have work of its own in flight? */
    bool (*drained_poll)(void *opaque);
    /* The node changed size.  Any thread (the one that resized it). */
    void (*resized)(void *opaque);
} BlockDevOps;

/* A backend that will need @perm and tolerate @shared_perm. */
BlockBackend *blk_new(uint64_t perm, uint64_t shared_perm);
/* Attach to @bs (taking a reference); fails on a permission conflict. */
int blk_insert_bs(BlockBackend *blk, BlockDriverState *bs, Error **errp) GRAPH_UNLOCKED;
/* Detach from the node (waiting for the backend's requests first). */
void blk_remove_bs(BlockBackend *blk) GRAPH_UNLOCKED;
/* Detach and free. */
void blk_unref(BlockBackend *blk) GRAPH_UNLOCKED;

int blk_set_perm(BlockBackend *blk, uint64_t perm, uint64_t shared_perm, Error **errp);
void blk_get_perm(BlockBackend *blk, uint64_t *perm, uint64_t *shared_perm);

/* A description for permission errors: "NBD export 'exp0'". */
void blk_set_user_desc(BlockBackend *blk, const char *desc);
void blk_set_dev_ops(BlockBackend *blk, const BlockDevOps *ops, void *opaque);
/* When off, requests issued while drained run anyway (for the jobs and
 * internal users that are drained on purpose). Default on. */
void blk_set_allow_queuing(BlockBackend *blk, bool allow);
/* With the write cache off (an export's writethrough=on), every write and
 * write-zeroes is FUA: stable when it completes.  Any thread: requests
 * issued afterwards follow the new setting (a guest toggling its cache). */
void blk_set_enable_write_cache(BlockBackend *blk, bool wce);
/* When on, the node (and everything connected to it) may not move to
 * another thread: bdrv_try_change_aio_context() is refused with "Cannot
 * change iothread of active block backend".  Default off. */
void blk_set_fixed_aio_context(BlockBackend *blk, bool fixed);

BlockDriverState *blk_bs(BlockBackend *blk) GRAPH_UNLOCKED;

/* Size of the node in bytes, or -ENOMEDIUM. */
int64_t blk_getlength(BlockBackend *blk);

/* Drain the backend's node. */
void blk_drain(BlockBackend *blk) GRAPH_UNLOCKED;

/*
 * Synchronous I/O from the main thread, outside coroutines: runs the
 * coroutine version and polls until it is done.  For commands and tests.
 */
int blk_pread(BlockBackend *blk, int64_t offset, int64_t bytes, void *buf, int flags);
int blk_pwrite(BlockBackend *blk, int64_t offset, int64_t bytes, const void *buf, int flags);
int blk_flush(BlockBackend *blk);

#endif /* BLOCKD_BLOCK_BACKEND_GLOBAL_STATE_H */
