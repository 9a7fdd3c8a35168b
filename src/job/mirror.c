/*
 * mirror.c - the mirror job: copy a source node to a target node while
 * the guest keeps writing, stay in sync, and on "complete" switch the
 * source's users over to the target.
 *
 * A "mirror_top" filter sits above the source for the job's lifetime.
 * Writes reaching the source mark a dirty bitmap; the copy engine
 * (block-copy.c) copies dirty granules until source and target converge
 * (READY).  In write-blocking mode the filter also writes each guest write
 * to the target before completing it.  To finish, the job drains the
 * source, copies what is left (nothing can be written meanwhile) and
 * flushes the target; the switch itself happens in the main loop
 * (prepare) while the source is still drained.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/atomic.h"
#include "blockd/block-chain.h"
#include "blockd/block-copy.h"
#include "blockd/block-global-state.h"
#include "blockd/block-io.h"
#include "blockd/main-loop.h"
#include "blockd/mirror.h"
#include "blockd/options.h"
#include "job-filter.h"

#define MIRROR_CHUNK        (1 << 20)          /* bytes per copy task */
#define MIRROR_MAX_TASKS    16
#define MIRROR_DEFAULT_BUF  (16 << 20)
#define MIRROR_IDLE_NS      (100 * 1000 * 1000LL)

typedef struct MirrorJob {
    BlockJob common;
    /* GS, set up before the job starts */
    BlockDriverState *source;
    BlockDriverState *target;
    BlockDriverState *to_replace;
    bool set_target_backing;            /* drive-mirror: see MirrorArgs */
    bool target_zeroed;
    BlockDriverState *target_backing;
    BlockDriverState *base;             /* active commit: copy only above it */
    BlockDriverState *mirror_top;
    BdrvChild *source_child;
    BdrvChild *target_child;
    BdrvDirtyBitmap *bitmap;
    BlockCopyState *bcs;
    MirrorSyncMode sync;
    BlockdevOnError on_source_error, on_target_error;
    int64_t granularity;
    int64_t buf_size;

    bool write_blocking;                /* atomic: copy mode */
    bool should_complete;               /* atomic: job-complete was called */
    bool ready;                         /* job coroutine */
    bool in_drain;                      /* atomic: the job's own drain of the source
                                         * is waiting (main loop) */
    bool drained_for_exit;              /* source stays drained until the switch */
    bool exited;                        /* GS */
    bool actively_synced;               /* atomic */
} MirrorJob;

static const char *const sync_names[] = { "full", "top", "none", NULL };
static const char *const copy_mode_names[] = { "background", "write-blocking", NULL };

bool mirror_parse_sync(const char *s, MirrorSyncMode *out, Error **errp)
{
    int i;

    if (!opt_parse_enum("sync", s, sync_names, &i, errp)) {
        return false;
    }
    *out = i;
    return true;
}

bool mirror_parse_copy_mode(const char *s, bool *write_blocking, Error **errp)
{
    int i;

    if (!opt_parse_enum("copy-mode", s, copy_mode_names, &i, errp)) {
        return false;
    }
    *write_blocking = i == 1;
    return true;
}

/* ---- The filter's hook (write-blocking mode) --------------------------------- */

static int coroutine_fn mirror_top_pwritev(void *opaque, BdrvChild *child, int64_t offset,
                                           int64_t bytes, struct iovec *iov, int niov,
                                           int flags) GRAPH_RDLOCK
{
    MirrorJob *s = opaque;

    if (atomic_read(&s->write_blocking)) {
        return block_copy_active_write(s->bcs, child, offset, bytes, iov, niov, flags);
    }
    return bdrv_co_pwritev(child, offset, bytes, iov, niov, flags);
}

static const JobFilterOps mirror_top_ops = {
    .format_name = "mirror_top",
    .pwritev = mirror_top_pwritev,
};

/* ---- The job's coroutine ----------------------------------------------------- */

static bool coroutine_fn source_has_backing(BlockDriverState *bs)
{
    bool has;

    graph_co_rdlock();
    has = bs->backing != NULL;
    graph_co_rdunlock();
    return has;
}

/* Mark what the sync mode asks to copy at the start. */
static int coroutine_fn mirror_init_bitmap(MirrorJob *s)
{
    int64_t len = dirty_bitmap_size(s->bitmap), pos = 0;
    int ret = 0;

    if (s->sync == MIRROR_SYNC_NONE) {
        return 0;
    }
    if (s->base || (s->sync == MIRROR_SYNC_FULL && s->target_zeroed)) {
        graph_co_rdlock();
        while (pos < len && ret >= 0) {
            int64_t pnum;
            ret = bdrv_co_is_allocated_above(s->source, s->base, pos, len - pos, &pnum);
            if (ret > 0) {
                dirty_bitmap_set(s->bitmap, pos, pnum);
            }
            pos += pnum;
        }
        graph_co_rdunlock();
        return ret < 0 ? ret : 0;
    }
    if (s->sync == MIRROR_SYNC_FULL || !source_has_backing(s->source)) {
        dirty_bitmap_set_all(s->bitmap);
        return 0;
    }
    /* "top": only what the source itself holds. */
    graph_co_rdlock();
    while (pos < len) {
        int64_t pnum;
        ret = bdrv_co_block_status(s->source, pos, len - pos, &pnum);
        if (ret < 0) {
            break;
        }
        if (ret & BDRV_BLOCK_ALLOCATED) {
            dirty_bitmap_set(s->bitmap, pos, pnum);
        }
        pos += pnum;
        ret = 0;
    }
    graph_co_rdunlock();
    return ret;
}

static void mirror_update_progress(MirrorJob *s)
{
    job_progress_set_remaining(&s->common.job, dirty_bitmap_count(s->bitmap) +
                                               block_copy_task_bytes(s->bcs));
}

/* An error from a sweep: 0 to go on (ignored or stopped-then-resumed),
 * else the error that ends the job. */
static int mirror_handle_error(MirrorJob *s, int ret, bool is_read)
{
    BlockErrorAction action = block_job_error_action(
        &s->common, is_read ? s->on_source_error : s->on_target_error, is_read, -ret);

    return action == BLOCK_ERROR_ACTION_REPORT ? ret : 0;
}

/*
 * With the source drained: copy what is left, flush the target, and stay
 * drained until the job exits.  0, or an error with the drain ended.
 *
 * Copying inside the drained section must not let another drain of these
 * nodes pass: the job's drained_poll calls it idle only while the job's
 * own drain is waiting (the job waits for it); any other drain sees a busy
 * job, and waits until it has finished and exited.  So a drain that has
 * returned always means no I/O.
 */
static int coroutine_fn mirror_final_sync(MirrorJob *s, bool *is_read)
{
    int ret = 0;

    bdrv_co_drained_begin_self(s->source, &s->in_drain);
    while (ret == 0 && dirty_bitmap_count(s->bitmap) > 0) {
        ret = block_copy_sweep(s->bcs, true, is_read);
        block_copy_wait_claims(s->bcs);
    }
    if (ret == 0) {
        graph_co_rdlock();
        ret = bdrv_co_flush(s->target);
        graph_co_rdunlock();
        *is_read = false;
    }
    if (ret < 0) {
        bdrv_drained_end(s->source);
        return ret;
    }
    s->drained_for_exit = true;
    return 0;
}

static int coroutine_fn mirror_run(Job *job, Error **errp)
{
    MirrorJob *s = (MirrorJob *)job;
    bool is_read = false;
    int ret;

    if (s->base && bdrv_getlength(s->base) < bdrv_getlength(s->source)) {
        /* The base must show everything the top shows: it grows first. */
        graph_co_rdlock();
        ret = bdrv_co_truncate(s->target_child, bdrv_getlength(s->source), errp);
        graph_co_rdunlock();
        if (ret < 0) {
            return ret;
        }
    }
    ret = mirror_init_bitmap(s);
    if (ret < 0) {
        return ret;
    }
    for (;;) {
        mirror_update_progress(s);
        if (job_is_cancelled(job)) {
            return 0;                    /* the return-code rule makes it -ECANCELED */
        }
        ret = block_copy_sweep(s->bcs, false, &is_read);
        if (ret < 0) {
            if ((ret = mirror_handle_error(s, ret, is_read)) < 0) {
                return ret;
            }
            job_pause_point(job);
            continue;
        }
        if (dirty_bitmap_count(s->bitmap) > 0 || job_is_cancelled(job)) {
            block_copy_wait_claims(s->bcs);
            continue;
        }
        if (!s->ready) {
            s->ready = true;
            mirror_update_progress(s);
            job_transition_to_ready(job);
        }
        atomic_set(&s->actively_synced, atomic_read(&s->write_blocking));
        /* complete, or a soft cancel: finish in sync, without new writes. */
        if (atomic_read(&s->should_complete) || job_cancel_requested(job)) {
            ret = mirror_final_sync(s, &is_read);
            if (ret == 0) {
                mirror_update_progress(s);
                return 0;
            }
            if ((ret = mirror_handle_error(s, ret, is_read)) < 0) {
                return ret;
            }
            continue;
        }
        job_sleep_ns(job, MIRROR_IDLE_NS);
    }
}

/* ---- Callbacks ---------------------------------------------------------------------- */

static void coroutine_fn mirror_pause(Job *job)
{
    /* Parked jobs do no I/O: let the copies in flight finish first. */
    block_copy_wait_idle(((MirrorJob *)job)->bcs);
}

static bool mirror_drained_poll(BlockJob *bjob)
{
    MirrorJob *s = (MirrorJob *)bjob;

    /* While the job's own drain waits, the job waits for it: not busy. */
    return !atomic_read(&s->in_drain);
}

static bool job_not_paused_locked(Job *job) TSA_REQUIRES(job_mutex)
{
    return !job->paused;
}

static void mirror_complete(Job *job, Error **errp)
{
    MirrorJob *s = (MirrorJob *)job;

    (void)errp;
    atomic_set(&s->should_complete, true);
    /* In standby the completion waits for job-resume. */
    job_lock();
    job_enter_cond_locked(job, job_not_paused_locked);
    job_unlock();
}

static bool mirror_cancel(Job *job, bool force)
{
    /* Before READY every cancel is a real one; after, a soft cancel ends
     * in sync without switching over. */
    return force || !job_is_ready(job);
}

/* After a switch the target takes the read-only state of the node it
 * replaced.  An active commit's base that was read-only stays read-write
 * when the job ends without a switch, as in qemu-storage-daemon 7.2. */
static void mirror_restore_read_only(MirrorJob *s, bool switched,
                                     BlockDriverState *replaced)
{
    if (switched && replaced->read_only != s->target->read_only) {
        bdrv_reopen_set_read_only(s->target, replaced->read_only, NULL);
    }
}

/* Undo the graph changes, and switch over if the job succeeded. */
static int mirror_exit_common(Job *job, bool success)
{
    MirrorJob *s = (MirrorJob *)job;
    BlockDriverState *replaced = s->to_replace ? s->to_replace : s->source;
    bool pivot = success && atomic_read(&s->should_complete);
    Error *err = NULL;
    int ret = 0;

    GLOBAL_STATE_CODE();
    if (s->exited) {
        return 0;
    }
    s->exited = true;
    bdrv_dirty_bitmap_detach(s->source, s->bitmap);
    job_filter_deactivate(s->mirror_top);
    block_copy_state_free(s->bcs);
    s->bcs = NULL;
    /* The job's own edges go first: they must not block the switch. */
    block_job_remove_all_bdrv(&s->common);

    /* drive-mirror's target gets its backing node (on success, switched or
     * not, as in QEMU), before users may see it. */
    if (success && s->set_target_backing && bdrv_backing_bs(s->target) != s->target_backing &&
        (ret = bdrv_set_backing_hd(s->target, s->target_backing, &err)) < 0) {
        pivot = false;
    }
    if (pivot && replaced == s->source) {
        ret = job_filter_remove(s->mirror_top, s->target, &err);
    } else {
        int r = job_filter_remove(s->mirror_top, s->source, ret < 0 ? NULL : &err);

        ret = ret < 0 ? ret : r;
        if (ret == 0 && pivot) {
            ret = bdrv_replace_node(replaced, s->target, &err);
        }
    }
    s->mirror_top = NULL;
    mirror_restore_read_only(s, pivot && ret == 0, replaced);
    if (ret < 0) {
        job_keep_error(job, err);
    }
    if (s->drained_for_exit) {
        bdrv_drained_end(s->source);
        s->drained_for_exit = false;
    }
    return ret;
}

static int mirror_prepare(Job *job)
{
    return mirror_exit_common(job, true);
}

static void mirror_abort(Job *job)
{
    mirror_exit_common(job, false);
}

static void mirror_free(Job *job)
{
    MirrorJob *s = (MirrorJob *)job;

    block_job_free(job);
    dirty_bitmap_free(s->bitmap);
    if (s->to_replace) {
        bdrv_unref(s->to_replace);
    }
    if (s->target_backing) {
        bdrv_unref(s->target_backing);
    }
    bdrv_unref(s->target);
    bdrv_unref(s->source);
}

static bool mirror_change(BlockJob *bjob, json_object *opts, Error **errp)
{
    MirrorJob *s = (MirrorJob *)bjob;
    json_object *v;
    bool wb;

    if (!json_object_object_get_ex(opts, "copy-mode", &v) ||
        !json_object_is_type(v, json_type_string)) {
        error_setg(errp, "Parameter 'copy-mode' is missing");
        return false;
    }
    if (!mirror_parse_copy_mode(json_object_get_string(v), &wb, errp)) {
        return false;
    }
    if (wb == atomic_read(&s->write_blocking)) {
        return true;
    }
    if (!wb) {
        error_setg(errp, "Change to copy mode '%s' is not implemented",
                   json_object_get_string(v));
        return false;
    }
    atomic_set(&s->write_blocking, true);
    return true;
}

static void mirror_query(BlockJob *bjob, json_object *info)
{
    MirrorJob *s = (MirrorJob *)bjob;

    if (s->base) {
        return;                 /* QAPI has the member for mirror jobs only */
    }
    json_object_object_add(info, "actively-synced",
                           json_object_new_boolean(atomic_read(&s->actively_synced)));
}

#define MIRROR_JOB_DRIVER(type)                                         \
    {                                                                   \
        .job_driver = {                                                 \
            .instance_size = sizeof(MirrorJob),                         \
            .job_type = type,                                           \
            .is_block_job = true,                                       \
            .run = mirror_run,                                          \
            .pause = mirror_pause,                                      \
            .user_resume = block_job_user_resume,                       \
            .complete = mirror_complete,                                \
            .prepare = mirror_prepare,                                  \
            .abort = mirror_abort,                                      \
            .cancel = mirror_cancel,                                    \
            .free = mirror_free,                                        \
        },                                                              \
        .drained_poll = mirror_drained_poll,                            \
        .change = mirror_change,                                        \
        .query = mirror_query,                                          \
    }

static const BlockJobDriver mirror_job_driver = MIRROR_JOB_DRIVER(JOB_TYPE_MIRROR);
static const BlockJobDriver commit_active_job_driver = MIRROR_JOB_DRIVER(JOB_TYPE_COMMIT);

/* ---- Start ------------------------------------------------------------------------ */

/* @to_replace must be the source or sit below it through filters only:
 * otherwise the switch would change what its users read. */
static bool mirror_check_replaces(BlockDriverState *source, BlockDriverState *to_replace,
                                  Error **errp)
{
    BlockDriverState *bs = source;

    graph_rdlock_main_loop();
    while (bs && bs != to_replace) {
        bs = (bs->drv->is_filter && bs->file) ? bs->file->bs : NULL;
    }
    graph_rdunlock_main_loop();
    if (!bs) {
        error_setg(errp, "Cannot replace '%s' by a node mirrored from '%s', because it "
                   "cannot be guaranteed that doing so would not lead to an abrupt "
                   "change of visible data", to_replace->node_name, source->node_name);
        return false;
    }
    return true;
}

static bool mirror_check_args(const MirrorArgs *a, Error **errp)
{
    if (!job_filter_check_nodes(a, "Can't mirror node into itself", errp)) {
        return false;
    }
    if (a->granularity && (a->granularity < 512 || a->granularity > (64LL << 20))) {
        error_setg(errp, "Parameter 'granularity' expects a value in range [512B, 64MB]");
        return false;
    }
    if (a->granularity & (a->granularity - 1)) {
        error_setg(errp, "Parameter 'granularity' expects a power of 2");
        return false;
    }
    if (a->buf_size < 0) {
        error_setg(errp, "Parameter 'buf-size' expects a positive value");
        return false;
    }
    if (!a->base && !job_filter_check_target(a, errp)) {
        return false;
    }
    return !a->to_replace || mirror_check_replaces(a->source, a->to_replace, errp);
}

/* Active commit's edges: the top read while guests write it, the layers
 * between held, the base written (and grown) while the chain reads it. */
static int mirror_add_commit_nodes(MirrorJob *s, Error **errp)
{
    BlockJob *bjob = &s->common;

    if (block_job_add_bdrv(bjob, "source", s->source, BLK_PERM_CONSISTENT_READ,
                           BLK_PERM_ALL & ~BLK_PERM_RESIZE, errp) < 0) {
        return -EPERM;
    }
    s->source_child = bjob->nodes[bjob->nnodes - 1];
    for (BlockDriverState *n = bdrv_filter_or_cow_bs(s->source); n && n != s->target;
         n = bdrv_filter_or_cow_bs(n)) {
        if (block_job_add_bdrv(bjob, "intermediate node", n, 0, BLK_PERM_ALL, errp) < 0) {
            return -EPERM;
        }
    }
    if (block_job_add_bdrv(bjob, "target", s->target,
                           BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE | BLK_PERM_RESIZE,
                           BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE_UNCHANGED, errp) < 0) {
        return -EPERM;
    }
    s->target_child = bjob->nodes[bjob->nnodes - 1];
    return 0;
}

Job *mirror_start(const MirrorArgs *a, Error **errp)
{
    BlockCopyOptions copy_opts;
    MirrorJob *s;
    BlockDriverState *top;

    GLOBAL_STATE_CODE();
    if (!mirror_check_args(a, errp)) {
        return NULL;
    }
    s = job_filter_create_job(&mirror_top_ops,
                              a->base ? &commit_active_job_driver : &mirror_job_driver, a,
                              NULL, &top, errp);
    if (!s) {
        return NULL;
    }
    s->mirror_top = top;
    s->source = a->source;
    s->target = a->target;
    bdrv_ref(s->source);
    bdrv_ref(s->target);
    s->set_target_backing = a->set_target_backing;
    s->target_zeroed = a->target_zeroed;
    s->target_backing = a->target_backing;
    if (s->target_backing) {
        bdrv_ref(s->target_backing);
    }
    if (a->to_replace) {
        s->to_replace = a->to_replace;
        bdrv_ref(s->to_replace);
    }
    s->sync = a->sync;
    s->on_source_error = a->on_source_error;
    s->on_target_error = a->on_target_error;
    s->granularity = a->granularity ? a->granularity : 65536;
    s->buf_size = a->buf_size ? a->buf_size : MIRROR_DEFAULT_BUF;
    s->write_blocking = a->write_blocking;
    s->base = a->base;

    if ((a->base ? mirror_add_commit_nodes(s, errp)
                 : block_job_add_copy_nodes(&s->common, s->source, s->target, false,
                                            &s->source_child, &s->target_child, errp)) < 0) {
        goto fail;
    }
    s->bitmap = dirty_bitmap_new(bdrv_getlength(s->source), s->granularity);
    copy_opts = (BlockCopyOptions){
        .chunk_size = MIRROR_CHUNK > s->granularity ? MIRROR_CHUNK : s->granularity,
        .max_tasks = MIRROR_MAX_TASKS,
        .max_bytes = s->buf_size,
        .no_unmap = a->no_unmap,
    };
    s->bcs = block_copy_state_new(s->source_child, s->target_child, s->bitmap,
                                  &s->common, &copy_opts);
    bdrv_dirty_bitmap_attach(s->source, s->bitmap);
    /* The hook may run from now on: everything it uses is set up. */
    job_filter_activate(top, s);
    job_start(&s->common.job);
    return &s->common.job;

fail:
    s->exited = true;
    block_job_remove_all_bdrv(&s->common);
    job_filter_remove(top, s->source, NULL);
    s->mirror_top = NULL;
    job_early_fail(&s->common.job);
    return NULL;
}
