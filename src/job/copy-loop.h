/*
 * copy-loop.h - what backup, commit and stream share: the job loop that
 * copies what a bitmap marks with the copy engine (block-copy.h) until
 * nothing is left, and (commit, stream) marking the ranges a chain holds
 * above a base.
 *
 * Half: I/O, in the job's coroutine.
 */
#ifndef BLOCKD_COPY_LOOP_H
#define BLOCKD_COPY_LOOP_H

#include "blockd/block-copy.h"

typedef struct CopyLoop {
    BlockJob *job;
    BlockCopyState *bcs;
    BdrvDirtyBitmap *bitmap;            /* what is left to copy */
    BlockdevOnError on_source_error;
    BlockdevOnError on_target_error;
    /* Every failure counts as a read (stream: QEMU copies by reading with
     * copy-on-read, so BLOCK_JOB_ERROR says "read" whichever side failed). */
    bool errors_as_reads;
} CopyLoop;

/*
 * Mark in @c->bitmap the granules of @len bytes that @from..above @base
 * holds (@from NULL: none); with @skip_allocated, not those that @skip_allocated itself
 * holds (it keeps its own data).  The job's progress: @len in total, the
 * unmarked part done.  0 or -errno.
 */
int coroutine_fn copy_loop_mark(CopyLoop *c, BlockDriverState *from, BlockDriverState *base,
                                 BlockDriverState *skip_allocated, int64_t len);

/* Copy until nothing is marked (0), the job is cancelled (0), or an error
 * that on_error reports ends it (-errno); then flush @flush_bs. */
int coroutine_fn copy_loop_run(CopyLoop *c, BlockDriverState *flush_bs);

#endif /* BLOCKD_COPY_LOOP_H */
