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

#endif /* BLOCKD_BLOCK_IO_H */
