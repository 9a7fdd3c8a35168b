/*
 * copy-loop.c - the copy loop of backup, commit and stream (copy-loop.h).
 */
#include <errno.h>

#include "blockd/block-chain.h"
#include "blockd/block-io.h"
#include "copy-loop.h"

/* Is [pos, pos+bytes) (clipped to *n) held by @bs itself? */
static int coroutine_fn own_data(BlockDriverState *bs, int64_t pos, int64_t bytes,
                                 int64_t *n) GRAPH_RDLOCK
{
    int st = bdrv_co_block_status(bs, pos, bytes, n);
    return st < 0 ? st : !!(st & BDRV_BLOCK_ALLOCATED);
}

int coroutine_fn copy_loop_mark(CopyLoop *c, BlockDriverState *from, BlockDriverState *base,
                                 BlockDriverState *skip_allocated, int64_t len)
{
    int64_t pos = 0, n;
    int ret = 0;

    graph_co_rdlock();
    while (pos < len && ret >= 0) {
        n = len - pos;
        ret = skip_allocated ? own_data(skip_allocated, pos, n, &n) : 0;
        if (ret == 0) {
            /* Only within the run @skip_allocated does not hold. */
            ret = bdrv_co_is_allocated_above(from, base, pos, n, &n);
            if (ret > 0) {
                dirty_bitmap_set(c->bitmap, pos, n);
            }
        }
        pos += n > 0 ? n : len - pos;
    }
    graph_co_rdunlock();
    if (ret < 0) {
        return ret;
    }
    job_progress_update(&c->job->job, len - dirty_bitmap_count(c->bitmap));
    return 0;
}

int coroutine_fn copy_loop_run(CopyLoop *c, BlockDriverState *flush_bs)
{
    Job *job = &c->job->job;
    bool is_read = false;
    int ret;

    for (;;) {
        job_progress_set_remaining(job, dirty_bitmap_count(c->bitmap) +
                                        block_copy_task_bytes(c->bcs));
        if (job_is_cancelled(job)) {
            return 0;               /* the return-code rule makes it -ECANCELED */
        }
        ret = block_copy_sweep(c->bcs, false, &is_read);
        is_read = is_read || c->errors_as_reads;
        if (ret < 0) {
            if (block_job_error_action(c->job, is_read ? c->on_source_error
                                                        : c->on_target_error,
                                       is_read, -ret) ==
                BLOCK_ERROR_ACTION_REPORT) {
                return ret;
            }
            job_pause_point(job);
            continue;
        }
        if (dirty_bitmap_count(c->bitmap) == 0 && block_copy_in_flight_bytes(c->bcs) == 0) {
            break;
        }
        /* What is left is held by copies for guest writes: let them end. */
        block_copy_wait_claims(c->bcs);
    }
    job_progress_set_remaining(job, 0);
    graph_co_rdlock();
    ret = bdrv_co_flush(flush_bs);
    graph_co_rdunlock();
    return ret;
}
