/*
 * filter.c - the callbacks of a filter that passes a request down to its
 * "file" child unchanged, for drivers that change only some requests
 * (block-internal.h).  I/O, graph read lock held.
 */
#include "blockd/block-io.h"
#include "block-internal.h"

int coroutine_fn bdrv_filter_co_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                       struct iovec *iov, int niov, int flags)
{
    return bdrv_co_preadv(bs->file, offset, bytes, iov, niov, flags);
}

int coroutine_fn bdrv_filter_co_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                        struct iovec *iov, int niov, int flags)
{
    return bdrv_co_pwritev(bs->file, offset, bytes, iov, niov, flags);
}

int coroutine_fn bdrv_filter_co_pwrite_zeroes(BlockDriverState *bs, int64_t offset,
                                              int64_t bytes, int flags)
{
    return bdrv_co_pwrite_zeroes(bs->file, offset, bytes, flags);
}

int coroutine_fn bdrv_filter_co_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    return bdrv_co_pdiscard(bs->file, offset, bytes);
}

int coroutine_fn bdrv_filter_co_flush(BlockDriverState *bs)
{
    (void)bs;
    return 0;                   /* the child is flushed after its parent */
}
