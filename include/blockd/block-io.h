/*
 * block-io.h - the block layer's I/O API.
 *
 * Half: I/O.  Thread-safe: called from any thread that runs an event loop,
 * concurrently for the same node.  The bdrv_co_* functions are coroutine
 * only and take the graph read lock themselves unless marked GRAPH_RDLOCK.
 */
#ifndef BLOCKD_BLOCK_IO_H
#define BLOCKD_BLOCK_IO_H

#include "blockd/block-int.h"

/*
 * Count a request in flight on @bs for its whole life (including time
 * queued in drivers); drain waits for the count to reach zero.
 */
void bdrv_inc_in_flight(BlockDriverState *bs);
void bdrv_dec_in_flight(BlockDriverState *bs);

int64_t bdrv_getlength(BlockDriverState *bs);

/*
 * Hold [offset, offset+bytes) of @bs: a serialising holder first waits for
 * every overlapping holder to end and keeps out those that overlap it;
 * others overlap each other freely.  The block layer holds the ranges of
 * requests on nodes that read-modify-write; a driver that must keep a read
 * and the write it causes together (copy-on-read) holds its own on its
 * node.  Coroutine only.
 */
void coroutine_fn bdrv_co_track_begin(BlockDriverState *bs, BdrvTrackedRequest *req,
                                      int64_t offset, int64_t bytes, bool serialising);
void coroutine_fn bdrv_co_track_end(BlockDriverState *bs, BdrvTrackedRequest *req);

/*
 * Requests on the node below edge @child.  They count as in flight, honour
 * the node's request alignment (bouncing through an aligned buffer, with
 * read-modify-write for unaligned writes, serialised against overlapping
 * requests), split at max_transfer, emulate FUA with a flush and
 * write-zeroes with a zeroed buffer when the driver cannot (unless
 * BDRV_REQ_NO_FALLBACK).  Return 0 or -errno.  Coroutine only, graph read
 * lock held.
 */
int coroutine_fn bdrv_co_preadv(BdrvChild *child, int64_t offset, int64_t bytes,
                                struct iovec *iov, int niov, int flags) GRAPH_RDLOCK;
int coroutine_fn bdrv_co_pwritev(BdrvChild *child, int64_t offset, int64_t bytes,
                                 struct iovec *iov, int niov, int flags) GRAPH_RDLOCK;
int coroutine_fn bdrv_co_pwrite_zeroes(BdrvChild *child, int64_t offset, int64_t bytes,
                                       int flags) GRAPH_RDLOCK;
int coroutine_fn bdrv_co_pdiscard(BdrvChild *child, int64_t offset, int64_t bytes)
    GRAPH_RDLOCK;
int coroutine_fn bdrv_co_flush(BlockDriverState *bs) GRAPH_RDLOCK;
/*
 * Resize the node below @child to @size bytes.  The edge must hold the
 * resize permission (its parent took it: a writable format over its file,
 * a backend opened for resizing); the request counts as in flight, so a
 * drain waits for it.  -errno with @errp set on failure.
 */
int coroutine_fn bdrv_co_truncate(BdrvChild *child, int64_t size, Error **errp)
    GRAPH_RDLOCK;
/*
 * Status of [offset, offset+bytes) of @bs: BDRV_BLOCK_* for the first
 * *pnum bytes (at least 1 unless at the end), or -errno.
 */
int coroutine_fn bdrv_co_block_status(BlockDriverState *bs, int64_t offset,
                                      int64_t bytes, int64_t *pnum) GRAPH_RDLOCK;

/*
 * The snapshot a copy-before-write node below @child keeps: read it, its
 * block status, forget a range of it (BlockDriver's *_snapshot callbacks,
 * counted as requests in flight).  -ENOTSUP where the node keeps none.
 * Coroutine only, graph read lock held.
 */
int coroutine_fn bdrv_co_preadv_snapshot(BdrvChild *child, int64_t offset, int64_t bytes,
                                         struct iovec *iov, int niov) GRAPH_RDLOCK;
int coroutine_fn bdrv_co_snapshot_block_status(BdrvChild *child, int64_t offset,
                                               int64_t bytes, int64_t *pnum) GRAPH_RDLOCK;
int coroutine_fn bdrv_co_pdiscard_snapshot(BdrvChild *child, int64_t offset, int64_t bytes)
    GRAPH_RDLOCK;

/* Emit a block layer event through the monitor's sink (takes @data). */
void bdrv_emit_event(const char *name, json_object *data);
/* The armed write threshold of @bs (0: none). */
uint64_t bdrv_write_threshold_get(BlockDriverState *bs);
/* A write of [@offset, @offset + @bytes) is about to run: report it if it
 * passes the threshold (once; BLOCK_WRITE_THRESHOLD). */
void bdrv_write_threshold_check(BlockDriverState *bs, int64_t offset, int64_t bytes);

#endif /* BLOCKD_BLOCK_IO_H */
