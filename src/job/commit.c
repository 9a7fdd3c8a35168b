/*
 * commit.c - block-commit below the active layer: the data of the layers
 * from "top" down to (not including) "base" is copied into base, then the
 * overlay above top gets base as its backing file and those layers drop
 * out of the chain.
 *
 * Nobody writes the layers being committed (they are backing files), so
 * the job needs no hook on guest writes.  A "commit_top" filter takes
 * top's place while the job runs: it lets the job write base, which the
 * backing edges above would otherwise forbid, and it is the node whose
 * overlays get base at the end.  The active-layer case is a mirror
 * (mirror.c, commit_active_start).
 *
 * A read-only base is switched to read-write for the job and back to
 * read-only when it ends, as qemu-storage-daemon does.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/block-chain.h"
#include "blockd/block-global-state.h"
#include "blockd/block-io.h"
#include "blockd/chain-job.h"
#include "blockd/main-loop.h"
#include "copy-loop.h"
#include "job-filter.h"

#define COMMIT_CHUNK     (1 << 20)
#define COMMIT_MAX_TASKS 16
#define COMMIT_MAX_BYTES (16 << 20)
#define COMMIT_GRANULE   (64 * 1024)

typedef struct CommitJob {
    BlockJob common;
    /* GS, set up before the job starts */
    BlockDriverState *top;
    BlockDriverState *base;
    BlockDriverState *commit_top;       /* the filter */
    BdrvChild *top_child;
    BdrvChild *base_child;
    BdrvDirtyBitmap *bitmap;
    BlockCopyState *bcs;
    CopyLoop loop;
    char *backing_file;
    bool base_read_only;                /* restore when the job ends */
    bool exited;
} CommitJob;

static const JobFilterOps commit_top_ops = {
    .format_name = "commit_top",
};

static int coroutine_fn commit_run(Job *job, Error **errp)
{
    CommitJob *s = (CommitJob *)job;
    int64_t len = bdrv_getlength(s->top);
    int ret;

    if (bdrv_getlength(s->base) < len) {
        /* The base must show everything top shows: it grows first. */
        graph_co_rdlock();
        ret = bdrv_co_truncate(s->base_child, len, errp);
        graph_co_rdunlock();
        if (ret < 0) {
            return ret;
        }
    }
    ret = copy_loop_mark(&s->loop, s->top, s->base, NULL, len);
    return ret < 0 ? ret : copy_loop_run(&s->loop, s->base);
}

static void coroutine_fn commit_pause(Job *job)
{
    block_copy_wait_idle(((CommitJob *)job)->bcs);
}

/* The overlays above top get base; then top and what lies between go
 * (unless someone else holds them). */
static int commit_prepare(Job *job)
{
    CommitJob *s = (CommitJob *)job;
    Error *err = NULL;
    int ret;

    GLOBAL_STATE_CODE();
    ret = bdrv_drop_intermediate(s->commit_top, s->base, s->backing_file, &err);
    if (ret < 0) {
        job_keep_error(job, err);
    }
    return ret;
}

static void commit_clean(Job *job)
{
    CommitJob *s = (CommitJob *)job;

    GLOBAL_STATE_CODE();
    /* Nothing to undo for a job whose creation failed (no filter yet). */
    if (s->exited || !s->commit_top) {
        return;
    }
    s->exited = true;
    block_copy_state_free(s->bcs);
    s->bcs = NULL;
    block_job_remove_all_bdrv(&s->common);
    /* After a successful prepare the filter has no parents left. */
    job_filter_remove(s->commit_top, s->top, NULL);
    s->commit_top = NULL;
    if (s->base_read_only) {
        bdrv_reopen_set_read_only(s->base, true, NULL);
    }
}

static void commit_free(Job *job)
{
    CommitJob *s = (CommitJob *)job;

    commit_clean(job);
    block_job_free(job);
    dirty_bitmap_free(s->bitmap);
    free(s->backing_file);
    bdrv_unref(s->base);
    bdrv_unref(s->top);
}

static const BlockJobDriver commit_job_driver = {
    .job_driver = {
        .instance_size = sizeof(CommitJob),
        .job_type = JOB_TYPE_COMMIT,
        .is_block_job = true,
        .run = commit_run,
        .pause = commit_pause,
        .user_resume = block_job_user_resume,
        .prepare = commit_prepare,
        .clean = commit_clean,
        .free = commit_free,
    },
};

/* ---- Start ------------------------------------------------------------------------ */

/* The job's edges: top read, base written (and grown), the layers between
 * held so that nothing else changes them meanwhile. */
static int commit_add_nodes(CommitJob *s, Error **errp)
{
    BlockJob *bjob = &s->common;

    if (block_job_add_bdrv(bjob, "top", s->top, BLK_PERM_CONSISTENT_READ, BLK_PERM_ALL,
                           errp) < 0) {
        return -EPERM;
    }
    s->top_child = bjob->nodes[bjob->nnodes - 1];
    for (BlockDriverState *n = bdrv_filter_or_cow_bs(s->top); n && n != s->base;
         n = bdrv_filter_or_cow_bs(n)) {
        if (block_job_add_bdrv(bjob, "intermediate node", n, 0, BLK_PERM_ALL, errp) < 0) {
            return -EPERM;
        }
    }
    if (block_job_add_bdrv(bjob, "base", s->base,
                           BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE | BLK_PERM_RESIZE,
                           BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE_UNCHANGED, errp) < 0) {
        return -EPERM;
    }
    s->base_child = bjob->nodes[bjob->nnodes - 1];
    return 0;
}

Job *commit_start(const CommitArgs *a, Error **errp)
{
    MirrorArgs ma = {
        .job_id = a->job_id, .source = a->top, .filter_node_name = a->filter_node_name,
        .speed = a->speed, .auto_finalize = a->auto_finalize,
        .auto_dismiss = a->auto_dismiss,
    };
    BlockCopyOptions copy_opts = {
        .chunk_size = COMMIT_CHUNK, .max_tasks = COMMIT_MAX_TASKS,
        .max_bytes = COMMIT_MAX_BYTES, .no_unmap = true,
        .method = BLOCK_COPY_PLAIN,     /* zeroes of top become data, as in QEMU */
    };
    bool base_read_only = a->base->read_only;
    BlockDriverState *filter;
    CommitJob *s;

    GLOBAL_STATE_CODE();
    if (!job_check_id(a->job_id ? a->job_id : "", 0, errp)) {
        return NULL;
    }
    if (base_read_only && bdrv_reopen_set_read_only(a->base, false, errp) < 0) {
        return NULL;
    }
    /* The device is the job's main node, as in QEMU: it is busy meanwhile. */
    s = job_filter_create_job(&commit_top_ops, &commit_job_driver, &ma, a->active, &filter,
                              errp);
    if (!s) {
        goto fail_reopen;
    }
    s->commit_top = filter;
    s->top = a->top;
    s->base = a->base;
    bdrv_ref(s->top);
    bdrv_ref(s->base);
    s->backing_file = a->backing_file ? strdup(a->backing_file) : NULL;
    if (commit_add_nodes(s, errp) < 0) {
        commit_clean(&s->common.job);
        job_early_fail(&s->common.job);
        goto fail_reopen;
    }
    s->bitmap = dirty_bitmap_new(bdrv_getlength(s->top), COMMIT_GRANULE);
    s->bcs = block_copy_state_new(s->top_child, s->base_child, s->bitmap, &s->common,
                                  &copy_opts);
    s->loop = (CopyLoop){ &s->common, s->bcs, s->bitmap, a->on_error, a->on_error, false };
    s->base_read_only = base_read_only;
    job_start(&s->common.job);
    return &s->common.job;

fail_reopen:
    if (base_read_only) {
        bdrv_reopen_set_read_only(a->base, true, NULL);
    }
    return NULL;
}

Job *commit_active_start(const CommitArgs *a, Error **errp)
{
    MirrorArgs ma = {
        .job_id = a->job_id, .source = a->top, .target = a->base, .base = a->base,
        .filter_node_name = a->filter_node_name, .sync = MIRROR_SYNC_FULL,
        .speed = a->speed, .on_source_error = a->on_error, .on_target_error = a->on_error,
        .auto_finalize = a->auto_finalize, .auto_dismiss = a->auto_dismiss,
    };
    bool base_read_only = a->base->read_only;
    Job *job;

    GLOBAL_STATE_CODE();
    if (!job_check_id(a->job_id ? a->job_id : "", 0, errp)) {
        return NULL;
    }
    if (base_read_only && bdrv_reopen_set_read_only(a->base, false, errp) < 0) {
        return NULL;
    }
    job = mirror_start(&ma, errp);
    if (!job && base_read_only) {
        bdrv_reopen_set_read_only(a->base, true, NULL);
    }
    return job;
}
