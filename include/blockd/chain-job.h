/*
 * chain-job.h - the jobs that change a backing chain: block-commit
 * (merge layers down into a base) and block-stream (pull the layers below
 * into a node, then cut them off).
 *
 * Half: global state.
 */
#ifndef BLOCKD_CHAIN_JOB_H
#define BLOCKD_CHAIN_JOB_H

#include "blockd/blockjob.h"

typedef struct CommitArgs {
    const char *job_id;
    BlockDriverState *active;           /* the device: top of the chain */
    BlockDriverState *top;              /* first layer merged (may be @active) */
    BlockDriverState *base;             /* where the data goes */
    const char *backing_file;           /* written into the overlay above top */
    const char *filter_node_name;       /* NULL: automatic */
    int64_t speed;
    BlockdevOnError on_error;
    bool auto_finalize;
    bool auto_dismiss;
} CommitArgs;

/*
 * Commit a layer below the active one: copy what @top..above @base holds
 * into @base, then the overlay above @top gets @base as its backing file
 * (graph and header) and the layers between drop out.  @base is switched
 * to read-write for the job's lifetime if it is read-only.
 */
Job *commit_start(const CommitArgs *a, Error **errp);

/*
 * Active commit: a mirror of @a->top into @a->base (job type "commit")
 * that copies only what lies above @base.  READY once in sync; completing
 * switches @top's users to @base, cancelling leaves everything as it was.
 */
Job *commit_active_start(const CommitArgs *a, Error **errp);

typedef struct StreamArgs {
    const char *job_id;
    BlockDriverState *bs;               /* the node that receives the data */
    BlockDriverState *base;             /* stays below (NULL: the whole chain) */
    BlockDriverState *bottom;           /* last layer streamed (instead of base) */
    const char *backing_file;           /* written into @bs's header */
    const char *filter_node_name;
    int64_t speed;
    BlockdevOnError on_error;
    bool auto_finalize;
    bool auto_dismiss;
} StreamArgs;

/*
 * Copy into @a->bs what it reads from the layers above the base, while
 * guests keep writing it; then @bs gets the base as its backing file (or
 * none).  A "copy-on-read" filter above @bs copies a range before a guest
 * write lands on it, so the job never overwrites newer data.
 */
Job *stream_start(const StreamArgs *a, Error **errp);

#endif /* BLOCKD_CHAIN_JOB_H */
