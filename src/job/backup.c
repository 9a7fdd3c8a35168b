/*
 * backup.c - the backup job: a point-in-time copy of a source node.
 *
 * A "copy-before-write" filter sits above the source while the job runs.
 * Before a guest write reaches a range not yet copied, the filter copies
 * the old content to the target (block_copy_range), so the target ends up
 * with exactly what the source held when the job started.  Meanwhile the
 * job copies everything else in the background with the same engine.
 */
#include <errno.h>
#include <stdlib.h>

#include "blockd/block-copy.h"
#include "blockd/block-global-state.h"
#include "blockd/block-io.h"
#include "blockd/main-loop.h"
#include "blockd/mirror.h"
#include "copy-loop.h"
#include "job-filter.h"

#define BACKUP_CLUSTER   (64 * 1024)
#define BACKUP_CHUNK     (1 << 20)
#define BACKUP_MAX_TASKS 16
#define BACKUP_MAX_BYTES (16 << 20)

typedef struct BackupJob {
    BlockJob common;
    /* GS, set up before the job starts */
    BlockDriverState *source;
    BlockDriverState *target;
    BlockDriverState *cbw;
    BdrvDirtyBitmap *bitmap;            /* granules not yet copied */
    BlockCopyState *bcs;
    CopyLoop loop;
    MirrorSyncMode sync;
    bool exited;
    /* The user's bitmap, frozen and busy while the job runs; the writes
     * meanwhile go to @successor. */
    BdrvDirtyBitmap *user_bitmap;
    BdrvDirtyBitmap *successor;
    BitmapSyncMode bitmap_mode;
} BackupJob;

/* ---- The filter's hook ---------------------------------------------------------- */

static int coroutine_fn backup_before_write(void *opaque, int64_t offset, int64_t bytes)
    GRAPH_RDLOCK
{
    BackupJob *s = opaque;
    bool is_read;

    /* A failed copy fails the guest write: the backup must stay exact. */
    return block_copy_range(s->bcs, offset, bytes, &is_read);
}

static const JobFilterOps cbw_ops = {
    .format_name = "copy-before-write",
    .before_write = backup_before_write,
};

/* ---- The job's coroutine ----------------------------------------------------- */

/* sync=top: forget what the source itself does not hold.  Bits are only
 * cleared: a granule the filter already copied must not be copied again. */
static int coroutine_fn backup_drop_unallocated(BackupJob *s)
{
    int64_t len = dirty_bitmap_size(s->bitmap), pos = 0;
    int ret = 0;

    graph_co_rdlock();
    while (pos < len) {
        int64_t pnum;
        ret = bdrv_co_block_status(s->source, pos, len - pos, &pnum);
        if (ret < 0) {
            break;
        }
        if (!(ret & BDRV_BLOCK_ALLOCATED)) {
            dirty_bitmap_clear_inner(s->bitmap, pos, pnum);
        }
        pos += pnum;
        ret = 0;
    }
    graph_co_rdunlock();
    return ret;
}

static int coroutine_fn backup_run(Job *job, Error **errp)
{
    BackupJob *s = (BackupJob *)job;
    bool has_backing;
    int ret;

    (void)errp;
    graph_co_rdlock();
    has_backing = s->source->backing != NULL;
    graph_co_rdunlock();
    if (s->sync == MIRROR_SYNC_TOP && has_backing && (ret = backup_drop_unallocated(s)) < 0) {
        return ret;
    }
    if (s->sync == MIRROR_SYNC_NONE) {
        /* Only what guests overwrite is copied, until the user cancels. */
        while (!job_is_cancelled(job)) {
            job_yield(job);
        }
        /* What was saved is on disk when the job says it ended. */
        graph_co_rdlock();
        bdrv_co_flush(s->target);
        graph_co_rdunlock();
        return 0;
    }
    return copy_loop_run(&s->loop, s->target);
}

/* ---- Callbacks ---------------------------------------------------------------------- */

/* ---- The user's bitmap --------------------------------------------------------- */

/*
 * At creation (drained): the user's bitmap is frozen with what it marks
 * (busy, as QEMU shows it during a backup) and a bitmap of the job's
 * records the writes from now on; for sync "bitmap" its bits are what the
 * job copies.
 */
static void backup_take_bitmap(BackupJob *s, const MirrorArgs *a)
{
    int64_t off = 0, len = dirty_bitmap_size(a->bitmap), aoff, abytes;

    s->user_bitmap = a->bitmap;
    s->bitmap_mode = a->bitmap_mode;
    s->successor = dirty_bitmap_new(len, dirty_bitmap_granularity(a->bitmap));
    dirty_bitmap_set_recording(s->successor, dirty_bitmap_recording(a->bitmap));
    bdrv_dirty_bitmap_attach(s->source, s->successor);
    dirty_bitmap_set_frozen(a->bitmap, true);
    dirty_bitmap_set_busy(a->bitmap, true);
    if (s->sync != MIRROR_SYNC_BITMAP) {
        return;
    }
    dirty_bitmap_clear_all(s->bitmap);
    while (dirty_bitmap_next_area(a->bitmap, off, len, INT64_MAX, &aoff, &abytes)) {
        dirty_bitmap_set(s->bitmap, aoff, abytes);
        off = aoff + abytes;
    }
}

/* At the end: @ok, or failed or cancelled.  What the user's bitmap holds
 * then, besides the writes since the start. */
static void backup_give_bitmap(BackupJob *s, bool ok)
{
    BdrvDirtyBitmap *bm = s->user_bitmap;

    if (!bm) {
        return;
    }
    /* No write may slip between the successor's bits and the switch. */
    bdrv_drained_begin(s->source);
    if (ok && s->bitmap_mode != BITMAP_SYNC_NEVER) {
        dirty_bitmap_restore(bm, s->successor);          /* copied: only the new writes */
    } else if (!ok && s->bitmap_mode == BITMAP_SYNC_ALWAYS) {
        dirty_bitmap_restore(bm, s->successor);          /* and what was not copied */
        dirty_bitmap_merge(bm, s->bitmap);
    } else {
        dirty_bitmap_merge(bm, s->successor);            /* all it had, and the new writes */
    }
    dirty_bitmap_set_frozen(bm, false);
    bdrv_dirty_bitmap_detach(s->source, s->successor);
    bdrv_drained_end(s->source);
    dirty_bitmap_set_busy(bm, false);
    dirty_bitmap_free(s->successor);
    s->successor = NULL;
    s->user_bitmap = NULL;
}

static void backup_commit(Job *job)
{
    backup_give_bitmap((BackupJob *)job, true);
}

static void backup_abort(Job *job)
{
    backup_give_bitmap((BackupJob *)job, false);
}

static void coroutine_fn backup_pause(Job *job)
{
    block_copy_wait_idle(((BackupJob *)job)->bcs);
}

static void backup_clean(Job *job)
{
    BackupJob *s = (BackupJob *)job;

    GLOBAL_STATE_CODE();
    /* Nothing to undo for a job whose creation failed (no filter yet). */
    if (s->exited || !s->cbw) {
        return;
    }
    s->exited = true;
    job_filter_deactivate(s->cbw);
    block_copy_state_free(s->bcs);
    s->bcs = NULL;
    block_job_remove_all_bdrv(&s->common);
    job_filter_remove(s->cbw, s->source, NULL);
    s->cbw = NULL;
}

static void backup_free(Job *job)
{
    BackupJob *s = (BackupJob *)job;

    backup_clean(job);
    backup_give_bitmap(s, false);       /* a job that never got to its end */
    block_job_free(job);
    dirty_bitmap_free(s->bitmap);
    bdrv_unref(s->target);
    bdrv_unref(s->source);
}

static const BlockJobDriver backup_job_driver = {
    .job_driver = {
        .instance_size = sizeof(BackupJob),
        .job_type = JOB_TYPE_BACKUP,
        .is_block_job = true,
        .run = backup_run,
        .pause = backup_pause,
        .user_resume = block_job_user_resume,
        .commit = backup_commit,
        .abort = backup_abort,
        .clean = backup_clean,
        .free = backup_free,
    },
};

/* ---- Creation ------------------------------------------------------------------------ */

/* The target's cluster size, at least BACKUP_CLUSTER. */
static int64_t target_cluster_size(BlockDriverState *target)
{
    BlockDriverInfo bdi = { 0 };

    if (target->drv->bdrv_get_info && target->drv->bdrv_get_info(target, &bdi) == 0 &&
        bdi.cluster_size > BACKUP_CLUSTER) {
        return bdi.cluster_size;
    }
    return BACKUP_CLUSTER;
}

Job *backup_create(const MirrorArgs *a, Error **errp)
{
    BlockCopyOptions copy_opts = {
        .chunk_size = BACKUP_CHUNK,
        .max_tasks = BACKUP_MAX_TASKS,
        .max_bytes = BACKUP_MAX_BYTES,
    };
    BdrvChild *source_child, *target_child;
    BlockDriverState *cbw;
    int64_t cluster = BACKUP_CLUSTER;
    BackupJob *s;

    GLOBAL_STATE_CODE();
    if (a->compress &&
        !(a->target->drv->supported_write_flags & BDRV_REQ_WRITE_COMPRESSED)) {
        error_setg(errp, "Compression is not supported for this drive ");
        return NULL;
    }
    if (a->compress) {
        /* Compressed clusters are written whole. */
        cluster = target_cluster_size(a->target);
        copy_opts.compress = true;
        copy_opts.chunk_size = BACKUP_CHUNK > cluster ? BACKUP_CHUNK : cluster;
    }
    copy_opts.discard_source = a->discard_source;
    if (a->max_chunk && a->max_chunk < BACKUP_CLUSTER) {
        error_setg(errp, "Required max-chunk (%lld) is less than backup cluster size (%d)",
                   (long long)a->max_chunk, BACKUP_CLUSTER);
        return NULL;
    }
    if (a->max_workers) {
        copy_opts.max_tasks = a->max_workers;
    }
    if (a->max_chunk && a->max_chunk < BACKUP_CHUNK) {
        copy_opts.chunk_size = a->max_chunk / BACKUP_CLUSTER * BACKUP_CLUSTER;
    }
    if (!job_filter_check_nodes(a, "Source and target cannot be the same", errp) ||
        !job_filter_check_target(a, errp)) {
        return NULL;
    }
    s = job_filter_create_job(&cbw_ops, &backup_job_driver, a, NULL, &cbw, errp);
    if (!s) {
        return NULL;
    }
    s->cbw = cbw;
    s->source = a->source;
    s->target = a->target;
    bdrv_ref(s->source);
    bdrv_ref(s->target);
    s->sync = a->sync;
    if (block_job_add_copy_nodes(&s->common, s->source, s->target, a->discard_source,
                                 &source_child, &target_child, errp) < 0) {
        s->exited = true;
        block_job_remove_all_bdrv(&s->common);
        job_filter_remove(cbw, s->source, NULL);
        s->cbw = NULL;
        job_early_fail(&s->common.job);
        return NULL;
    }
    s->bitmap = dirty_bitmap_new(bdrv_getlength(s->source), cluster);
    dirty_bitmap_set_all(s->bitmap);
    if (a->bitmap) {
        backup_take_bitmap(s, a);
    }
    s->bcs = block_copy_state_new(source_child, target_child, s->bitmap,
                                  &s->common, &copy_opts);
    s->loop = (CopyLoop){ &s->common, s->bcs, s->bitmap, a->on_source_error,
                          a->on_target_error, false };
    /* From here every guest write copies the old data first. */
    job_filter_activate(cbw, s);
    return &s->common.job;
}

void backup_start_job(Job *job)
{
    GLOBAL_STATE_CODE();
    job_start(job);
}
