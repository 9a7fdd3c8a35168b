/*
 * stream.c - block-stream: a node receives the data of the layers below
 * it (down to a base, or the whole chain), then those layers are cut off:
 * the node gets the base as its backing file, or none.
 *
 * Guests keep writing the node meanwhile.  A "copy-on-read" filter above
 * it copies a range from the layers below before a guest write lands
 * there, so the job never overwrites newer data with older: a range is
 * copied at most once, by whoever comes first, and the copy engine makes
 * the others wait for it.  The granule is the node's allocation unit, so
 * a copy never covers data the node already holds.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/block-chain.h"
#include "blockd/block-global-state.h"
#include "blockd/block-io.h"
#include "blockd/chain-job.h"
#include "blockd/main-loop.h"
#include "copy-loop.h"
#include "job-filter.h"

#define STREAM_CHUNK     (1 << 20)
#define STREAM_MAX_TASKS 16
#define STREAM_MAX_BYTES (16 << 20)

typedef struct StreamJob {
    BlockJob common;
    /* GS, set up before the job starts */
    BlockDriverState *bs;
    BlockDriverState *base;             /* NULL: the whole chain goes */
    BlockDriverState *cor;              /* the filter */
    BdrvChild *bs_child;
    BdrvDirtyBitmap *bitmap;
    BlockCopyState *bcs;
    CopyLoop loop;
    char *backing_file;
    bool bs_read_only;                  /* switched to read-write for the job */
    /* job coroutine */
    bool marked;
    int mark_ret;
    bool exited;
} StreamJob;

/* ---- The filter's hook ---------------------------------------------------------- */

static int coroutine_fn stream_before_write(void *opaque, int64_t offset, int64_t bytes)
    GRAPH_RDLOCK
{
    StreamJob *s = opaque;
    bool is_read;

    /* The old data goes in first; the guest's write then lands on top. */
    return block_copy_range(s->bcs, offset, bytes, &is_read);
}

static const JobFilterOps cor_ops = {
    .format_name = "copy-on-read",
    .before_write = stream_before_write,
};

/* ---- The job ---------------------------------------------------------------------- */

/*
 * Mark what the layers below hold, once, then let guest writes copy.  Until
 * then their copies wait (see stream_start), so this runs before the job
 * can pause: a drain waits for those writes.
 */
static int coroutine_fn stream_mark(StreamJob *s)
{
    BlockDriverState *below;

    if (s->marked) {
        return s->mark_ret;
    }
    s->marked = true;
    graph_co_rdlock();
    below = s->bs->backing ? s->bs->backing->bs : NULL;
    graph_co_rdunlock();
    /* Nothing between @bs and the base: nothing to copy (from NULL). */
    s->mark_ret = copy_loop_mark(&s->loop, below != s->base ? below : NULL, s->base, s->bs,
                                 bdrv_getlength(s->bs));
    block_copy_release_all(s->bcs);
    return s->mark_ret;
}

static int coroutine_fn stream_run(Job *job, Error **errp)
{
    StreamJob *s = (StreamJob *)job;
    int ret;

    (void)errp;
    ret = stream_mark(s);
    return ret < 0 ? ret : copy_loop_run(&s->loop, s->bs);
}

static void coroutine_fn stream_pause(Job *job)
{
    StreamJob *s = (StreamJob *)job;

    stream_mark(s);
    block_copy_wait_idle(s->bcs);
}

/* The header first: if it cannot be written, the chain stays as it was. */
static int stream_prepare(Job *job)
{
    StreamJob *s = (StreamJob *)job;
    char buf[PATH_MAX + 16];
    const char *name = NULL, *fmt = NULL;
    Error *err = NULL;
    int ret;

    GLOBAL_STATE_CODE();
    if (s->base) {
        name = s->backing_file ? s->backing_file : bdrv_backing_name(s->base, buf, sizeof(buf));
        fmt = bdrv_backing_format(s->base);
    }
    ret = bdrv_change_backing_file(s->bs, name, fmt, &err);
    if (ret == 0) {
        ret = bdrv_set_backing_hd(s->bs, s->base, &err);
    }
    if (ret < 0) {
        job_keep_error(job, err);
    }
    return ret;
}

static void stream_clean(Job *job)
{
    StreamJob *s = (StreamJob *)job;

    GLOBAL_STATE_CODE();
    /* Nothing to undo for a job whose creation failed (no filter yet). */
    if (s->exited || !s->cor) {
        return;
    }
    s->exited = true;
    job_filter_deactivate(s->cor);
    block_copy_state_free(s->bcs);
    s->bcs = NULL;
    block_job_remove_all_bdrv(&s->common);
    job_filter_remove(s->cor, s->bs, NULL);
    s->cor = NULL;
    if (s->bs_read_only) {
        bdrv_reopen_set_read_only(s->bs, true, NULL);
    }
}

static void stream_free(Job *job)
{
    StreamJob *s = (StreamJob *)job;

    stream_clean(job);
    block_job_free(job);
    dirty_bitmap_free(s->bitmap);
    free(s->backing_file);
    bdrv_unref(s->base);
    bdrv_unref(s->bs);
}

static const BlockJobDriver stream_job_driver = {
    .job_driver = {
        .instance_size = sizeof(StreamJob),
        .job_type = JOB_TYPE_STREAM,
        .is_block_job = true,
        .run = stream_run,
        .pause = stream_pause,
        .user_resume = block_job_user_resume,
        .prepare = stream_prepare,
        .clean = stream_clean,
        .free = stream_free,
    },
};

/* ---- Start ------------------------------------------------------------------------ */

/* The unit in which @bs allocates: a copy of a whole granule never lands
 * on data @bs holds itself. */
static int64_t stream_granule(BlockDriverState *bs)
{
    BlockDriverInfo bdi = { 0 };
    int64_t g = 512;

    if (bs->drv->bdrv_get_info && bs->drv->bdrv_get_info(bs, &bdi) == 0) {
        g = bdi.subcluster_size ? bdi.subcluster_size : bdi.cluster_size;
    }
    return g >= 512 ? g : 512;
}

/* The edges: @bs written (by copies of unchanged data) and read, the
 * layers that go held so that nothing else changes them meanwhile. */
static int stream_add_nodes(StreamJob *s, Error **errp)
{
    BlockJob *bjob = &s->common;

    if (block_job_add_bdrv(bjob, "node", s->bs,
                           BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE_UNCHANGED,
                           BLK_PERM_ALL, errp) < 0) {
        return -EPERM;
    }
    s->bs_child = bjob->nodes[bjob->nnodes - 1];
    for (BlockDriverState *n = bdrv_filter_or_cow_bs(s->bs); n && n != s->base;
         n = bdrv_filter_or_cow_bs(n)) {
        if (block_job_add_bdrv(bjob, "intermediate node", n, 0, BLK_PERM_ALL, errp) < 0) {
            return -EPERM;
        }
    }
    return 0;
}

Job *stream_start(const StreamArgs *a, Error **errp)
{
    MirrorArgs ma = {
        .job_id = a->job_id, .source = a->bs, .filter_node_name = a->filter_node_name,
        .speed = a->speed, .auto_finalize = a->auto_finalize,
        .auto_dismiss = a->auto_dismiss,
    };
    BlockCopyOptions copy_opts = {
        .chunk_size = STREAM_CHUNK, .max_tasks = STREAM_MAX_TASKS,
        .max_bytes = STREAM_MAX_BYTES, .no_unmap = true,
        .method = BLOCK_COPY_ZERO_DETECT,   /* as copy-on-read does */
        .unchanged = true,                  /* what the node shows stays */
    };
    BlockDriverState *base = a->bottom ? bdrv_filter_or_cow_bs(a->bottom) : a->base;
    bool bs_read_only = a->bs->read_only;
    BlockDriverState *filter;
    StreamJob *s;

    GLOBAL_STATE_CODE();
    if (!job_check_id(a->job_id ? a->job_id : "", 0, errp)) {
        return NULL;
    }
    if (bs_read_only && bdrv_reopen_set_read_only(a->bs, false, errp) < 0) {
        return NULL;
    }
    s = job_filter_create_job(&cor_ops, &stream_job_driver, &ma, NULL, &filter, errp);
    if (!s) {
        goto fail_reopen;
    }
    s->cor = filter;
    s->bs = a->bs;
    s->base = base;
    bdrv_ref(s->bs);
    if (base) {
        bdrv_ref(base);
    }
    s->backing_file = a->backing_file ? strdup(a->backing_file) : NULL;
    if (stream_add_nodes(s, errp) < 0) {
        s->bs_read_only = false;            /* undone below, once */
        stream_clean(&s->common.job);
        job_early_fail(&s->common.job);
        goto fail_reopen;
    }
    s->bs_read_only = bs_read_only;
    s->bitmap = dirty_bitmap_new(bdrv_getlength(s->bs), stream_granule(s->bs));
    s->bcs = block_copy_state_new(s->bs_child, s->bs_child, s->bitmap, &s->common,
                                  &copy_opts);
    s->loop = (CopyLoop){ &s->common, s->bcs, s->bitmap, a->on_error, a->on_error, true };
    /*
     * From here a guest write copies the old data first.  Until the job has
     * marked what the layers below hold, such copies wait: a write that
     * came earlier would find nothing to copy, and the job would then copy
     * the older data over it.  The drain lets writes that passed the
     * inactive hook land before the job looks at the node.
     */
    block_copy_hold_all(s->bcs);
    bdrv_drained_begin(filter);
    job_filter_activate(filter, s);
    bdrv_drained_end(filter);
    job_start(&s->common.job);
    return &s->common.job;

fail_reopen:
    if (bs_read_only) {
        bdrv_reopen_set_read_only(a->bs, true, NULL);
    }
    return NULL;
}
