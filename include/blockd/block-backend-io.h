/*
 * block-backend-io.h - I/O through a BlockBackend.
 *
 * Half: I/O.  Any thread with an event loop, coroutines, concurrently.
 * Each call counts as in flight on the backend, waits while the backend
 * is drained (unless queuing is off), takes the graph read lock and
 * forwards to the node.  Requests outside the node give -EIO; a backend
 * without a node gives -ENOMEDIUM; writes without write permission -EPERM.
 */
#ifndef BLOCKD_BLOCK_BACKEND_IO_H
#define BLOCKD_BLOCK_BACKEND_IO_H

#include <sys/uio.h>

#include "blockd/block-backend-global-state.h"

int coroutine_fn blk_co_preadv(BlockBackend *blk, int64_t offset, int64_t bytes,
                               struct iovec *iov, int niov, int flags);
int coroutine_fn blk_co_pwritev(BlockBackend *blk, int64_t offset, int64_t bytes,
                                struct iovec *iov, int niov, int flags);
int coroutine_fn blk_co_pread(BlockBackend *blk, int64_t offset, int64_t bytes,
                              void *buf, int flags);
int coroutine_fn blk_co_pwrite(BlockBackend *blk, int64_t offset, int64_t bytes,
                               const void *buf, int flags);
int coroutine_fn blk_co_pwrite_zeroes(BlockBackend *blk, int64_t offset, int64_t bytes,
                                      int flags);
int coroutine_fn blk_co_pdiscard(BlockBackend *blk, int64_t offset, int64_t bytes);
int coroutine_fn blk_co_flush(BlockBackend *blk);
/* Resize the node (the backend must hold BLK_PERM_RESIZE). */
int coroutine_fn blk_co_truncate(BlockBackend *blk, int64_t size, Error **errp);
int coroutine_fn blk_co_block_status(BlockBackend *blk, int64_t offset, int64_t bytes,
                                     int64_t *pnum);
/* The layer of the chain that holds the range (bdrv_co_allocation_depth). */
int coroutine_fn blk_co_allocation_depth(BlockBackend *blk, int64_t offset, int64_t bytes,
                                        int64_t *pnum);

/* Size of the node in bytes, or -ENOMEDIUM.  Coroutine only. */
int64_t coroutine_fn blk_co_getlength(BlockBackend *blk);
/* Requests currently in flight on the backend. */
unsigned blk_in_flight(BlockBackend *blk);

#endif /* BLOCKD_BLOCK_BACKEND_IO_H */
