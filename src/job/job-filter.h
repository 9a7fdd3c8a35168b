/*
 * job-filter.h - the filter node a block job puts above its source while
 * it runs ("mirror_top" for mirror and active commit, "copy-before-write"
 * for backup, "copy-on-read" for stream), so that it sees every guest
 * write to the source; "commit_top" above the top of an intermediate
 * commit only lets the job write below it.
 *
 * Half: global state, except the hooks (I/O, any thread, graph read lock).
 */
#ifndef BLOCKD_JOB_FILTER_H
#define BLOCKD_JOB_FILTER_H

#include "blockd/block-int.h"
#include "blockd/mirror.h"

typedef struct JobFilterOps {
    const char *format_name;
    /* Before a write, write of zeroes or discard goes down (NULL: none);
     * a negative return fails the guest request. */
    int coroutine_fn (*before_write)(void *opaque, int64_t offset, int64_t bytes)
        GRAPH_RDLOCK_PTR;
    /* Instead of passing a write down (NULL: pass it). */
    int coroutine_fn (*pwritev)(void *opaque, BdrvChild *child, int64_t offset,
                                int64_t bytes, struct iovec *iov, int niov, int flags)
        GRAPH_RDLOCK_PTR;
} JobFilterOps;

/*
 * Open a filter node named @node_name (NULL: automatic) over @source and
 * put it in @source's place for all of @source's parents (drained, write
 * lock).  The caller owns the returned reference.
 */
BlockDriverState *job_filter_insert(const JobFilterOps *ops, const char *node_name,
                                    BlockDriverState *source, void *opaque, Error **errp);

/*
 * Insert a filter of @ops above @a->source and create a block job of @drv
 * with @a's id, transaction, speed and auto-finalize/dismiss.  Its main
 * node is @main_node (NULL: the filter), which draining pauses the job
 * and which other operations see as busy.  On failure nothing is left in
 * the graph.  *filter: the filter node (the caller's reference).
 */
void *job_filter_create_job(const JobFilterOps *ops, const BlockJobDriver *drv,
                            const MirrorArgs *a, BlockDriverState *main_node,
                            BlockDriverState **filter, Error **errp);

/* Checks both copying jobs make, in QEMU's order: the job id (before any
 * graph change), then that source and target differ (@same_node_msg)... */
bool job_filter_check_nodes(const MirrorArgs *a, const char *same_node_msg, Error **errp);
/* ... and, after their own options, that the target fits and is writable. */
bool job_filter_check_target(const MirrorArgs *a, Error **errp);

/* Start calling the hooks with @opaque.  Any thread may see it at once. */
void job_filter_activate(BlockDriverState *filter, void *opaque);

/* Stop calling the hooks (waits for requests inside them to finish). */
void job_filter_deactivate(BlockDriverState *filter);

/*
 * Put @replacement in the filter's place for all its parents (undoing the
 * insertion when @replacement is the filter's child), then drop the
 * caller's reference to the filter.
 */
int job_filter_remove(BlockDriverState *filter, BlockDriverState *replacement, Error **errp);

#endif /* BLOCKD_JOB_FILTER_H */
