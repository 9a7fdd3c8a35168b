/*
 * block-copy.h - the copy engine shared by the mirror and backup jobs.
 *
 * Copies the granules a dirty bitmap marks from a source edge to a target
 * edge: many tasks in flight (bounded in number and bytes), chunks of at
 * most chunk_size, zero ranges written as zeroes without moving data
 * (block status), bytes counted for the job's progress and speed limit.
 * A granule's bit is cleared *before* it is read, so a write that lands
 * during the copy marks it again and it is copied again later.
 *
 * Overlapping work never runs at once: background tasks, copies on behalf
 * of a guest write (copy-before-write) and mirrored guest writes
 * (write-blocking mode) each claim their range and wait for each other.
 *
 * Half: I/O (coroutines, any thread) unless marked "main".
 */
#ifndef BLOCKD_BLOCK_COPY_H
#define BLOCKD_BLOCK_COPY_H

#include "blockd/block-int.h"
#include "blockd/blockjob.h"
#include "blockd/dirty-bitmap.h"

typedef struct BlockCopyState BlockCopyState;

/* How a range reaches the target. */
typedef enum BlockCopyMethod {
    BLOCK_COPY_BY_STATUS,       /* zero ranges of the source as zero writes */
    BLOCK_COPY_PLAIN,           /* read and write everything (commit) */
    BLOCK_COPY_ZERO_DETECT,     /* read everything; zero buffers as zero
                                 * writes (copy-on-read, stream) */
} BlockCopyMethod;

typedef struct BlockCopyOptions {
    int64_t chunk_size;         /* bytes per task, a multiple of the granularity */
    int max_tasks;              /* background tasks in flight */
    int64_t max_bytes;          /* background bytes in flight (buf-size) */
    bool no_unmap;              /* zeroes stay allocated on the target */
    BlockCopyMethod method;
    bool compress;              /* data as compressed clusters (whole
                                 * granules, the target's cluster size) */
    bool discard_source;        /* discard what was copied on the source
                                 * (the source edge may write) */
    bool unchanged;             /* the copy changes no content (a stream
                                 * into the top): no dirty bitmap marks */
} BlockCopyOptions;

/* Main.  @bitmap stays the caller's; @job receives progress and pays the
 * speed limit of background copies. */
BlockCopyState *block_copy_state_new(BdrvChild *source, BdrvChild *target,
                                     BdrvDirtyBitmap *bitmap, BlockJob *job,
                                     const BlockCopyOptions *opts);
/* Main; nothing may be in flight. */
void block_copy_state_free(BlockCopyState *s);

/*
 * One sweep over the bitmap in the background: claims every dirty area
 * (skipping areas others hold), runs the window of tasks and waits for
 * them.  @final: the source is drained by the caller, so neither pause
 * points nor speed-limit sleeps are taken.  Returns 0 or the first error
 * (-errno; *error_is_read says which side failed); the failed range is
 * dirty again.  Job coroutine.
 */
int coroutine_fn block_copy_sweep(BlockCopyState *s, bool final, bool *error_is_read);

/* Wait until no background task is in flight (a job's pause callback).
 * Job coroutine. */
void coroutine_fn block_copy_wait_idle(BlockCopyState *s);

/* Dirty granules left after a sweep may be held by others (guest writes):
 * wait until some claim ends, so the job does not spin.  Returns at once
 * when nothing is claimed.  Job coroutine. */
void coroutine_fn block_copy_wait_claims(BlockCopyState *s);

/*
 * Hold the whole range until block_copy_release_all(): copies for guest
 * writes wait meanwhile.  A job whose bitmap is filled by its own
 * coroutine takes the hold before guest writes reach its hook (global
 * state, the node drained), so that no write lands between "the node does
 * not hold this yet" and the copy of the older data below it.
 */
void block_copy_hold_all(BlockCopyState *s);

/* End the hold of block_copy_hold_all(); the bitmap is complete.  Job
 * coroutine. */
void coroutine_fn block_copy_release_all(BlockCopyState *s);

/*
 * Hold [offset, offset+bytes) (whole granules) until block_copy_unlock():
 * copies of that range, and other holds, wait meanwhile.  For a reader of
 * what the source held (snapshot access): no copy-before-write can
 * overwrite it under the reader.  Any coroutine.
 */
typedef struct BlockCopyLock BlockCopyLock;
BlockCopyLock *coroutine_fn block_copy_lock(BlockCopyState *s, int64_t offset, int64_t bytes);
void coroutine_fn block_copy_unlock(BlockCopyState *s, BlockCopyLock *lock);
/* The granule in bytes.  Any thread. */
int64_t block_copy_granularity(BlockCopyState *s);

/*
 * Copy every dirty granule touching [offset, offset+bytes) now, waiting
 * for others that hold parts of it (copy-before-write).  Any coroutine;
 * graph read lock held.
 */
int coroutine_fn block_copy_range(BlockCopyState *s, int64_t offset, int64_t bytes,
                                  bool *error_is_read) GRAPH_RDLOCK;

/*
 * Write-blocking mirror: write @iov to @source_via (the filter's child),
 * then the same bytes to the target, and clear what that made identical.
 * A failed target write leaves the range dirty for the background.
 * Any coroutine; graph read lock held.
 */
int coroutine_fn block_copy_active_write(BlockCopyState *s, BdrvChild *source_via,
                                         int64_t offset, int64_t bytes,
                                         struct iovec *iov, int niov, int flags)
    GRAPH_RDLOCK;

/* Bytes held by every claim (background, copy-before-write, mirrored
 * writes).  Any thread. */
int64_t block_copy_in_flight_bytes(BlockCopyState *s);
/* Bytes of background tasks in flight (progress).  Job coroutine. */
int64_t block_copy_task_bytes(BlockCopyState *s);

#endif /* BLOCKD_BLOCK_COPY_H */
