/*
 * blockjob.c - block jobs: node edges that pause the job in drained
 * sections, the speed limit, the error policy, queries and BLOCK_JOB_*
 * events.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/block-global-state.h"
#include "blockd/blockjob.h"
#include "blockd/main-loop.h"
#include "blockd/options.h"

static const char *const on_error_names[BLOCKDEV_ON_ERROR__MAX + 1] = {
    "report", "ignore", "enospc", "stop", "auto", NULL,
};

bool blockdev_on_error_parse(const char *name, const char *s, BlockdevOnError *out,
                             Error **errp)
{
    int i = BLOCKDEV_ON_ERROR_REPORT;

    if (s && !opt_parse_enum(name, s, on_error_names, &i, errp)) {
        return false;
    }
    *out = i;
    return true;
}

static BlockJob *to_block_job(Job *job)
{
    assert(job->driver->is_block_job);
    return (BlockJob *)job;
}

static const BlockJobDriver *block_job_driver(BlockJob *job)
{
    return (const BlockJobDriver *)job->job.driver;
}

bool job_is_block_job(Job *job)
{
    return job->driver->is_block_job;
}

/* ---- The edge from a job to a node -------------------------------------------- */

static char *child_job_get_parent_desc(BdrvChild *c)
{
    BlockJob *job = c->opaque;
    char *s;

    if (asprintf(&s, "%s job '%s'", job_type_str(job->job.driver->job_type),
                 job->job.id ? job->job.id : "") < 0) {
        abort();
    }
    return s;
}

static void child_job_drained_begin(BdrvChild *c)
{
    BlockJob *job = c->opaque;
    job_pause(&job->job);
}

static void child_job_drained_end(BdrvChild *c)
{
    BlockJob *job = c->opaque;
    job_resume(&job->job);
}

static bool child_job_drained_poll(BdrvChild *c)
{
    BlockJob *job = c->opaque;
    const BlockJobDriver *drv = block_job_driver(job);
    bool idle;

    /* A parked job runs no driver code before its next pause point. */
    job_lock();
    idle = !job->job.busy || job_is_completed_locked(&job->job);
    job_unlock();
    if (idle) {
        return false;
    }
    return drv->drained_poll ? drv->drained_poll(job) : true;
}

/* The node moved (drained, so the job is parked): the job follows; its
 * coroutine reschedules itself there when it next wakes. */
static void child_job_set_aio_ctx(BdrvChild *c, AioContext *ctx)
{
    BlockJob *job = c->opaque;

    job_lock();
    if (job->job.aio_context != ctx) {
        job_set_aio_context_locked(&job->job, ctx);
    }
    job_unlock();
}

/* Every node of the job moves with any one of them. */
static BdrvChild **child_job_get_siblings(BdrvChild *c, int *n)
{
    BlockJob *job = c->opaque;

    *n = job->nnodes;
    return job->nodes;
}

static const char *child_job_get_parent_name(BdrvChild *c)
{
    BlockJob *job = c->opaque;
    return job->job.id;
}

static char *child_job_get_blocker(BdrvChild *c)
{
    BlockJob *job = c->opaque;
    char *s;

    if (asprintf(&s, "block device is in use by block job: %s",
                 job_type_str(job->job.driver->job_type)) < 0) {
        abort();
    }
    return s;
}

static const BdrvChildClass child_job = {
    .parent_type = "job",
    .get_parent_name = child_job_get_parent_name,
    .get_blocker = child_job_get_blocker,
    .set_aio_ctx = child_job_set_aio_ctx,
    .get_siblings = child_job_get_siblings,
    .drained_begin = child_job_drained_begin,
    .drained_end = child_job_drained_end,
    .drained_poll = child_job_drained_poll,
    .get_parent_desc = child_job_get_parent_desc,
};

int block_job_add_bdrv(BlockJob *job, const char *name, BlockDriverState *bs,
                       uint64_t perm, uint64_t shared_perm, Error **errp)
{
    BdrvChild *c;

    GLOBAL_STATE_CODE();
    c = bdrv_root_attach_child(bs, name, &child_job, 0, perm, shared_perm, job, errp);
    if (!c) {
        return -EPERM;
    }
    job->nodes = realloc(job->nodes, (job->nnodes + 1) * sizeof(*job->nodes));
    if (!job->nodes) {
        abort();
    }
    job->nodes[job->nnodes++] = c;
    return 0;
}

int block_job_add_copy_nodes(BlockJob *job, BlockDriverState *source,
                             BlockDriverState *target, bool write_source,
                             BdrvChild **source_child, BdrvChild **target_child,
                             Error **errp)
{
    /* Reading the source, which guests keep writing; writing the target,
     * which nobody else may write meanwhile. */
    if (block_job_add_bdrv(job, "source", source,
                           BLK_PERM_CONSISTENT_READ | (write_source ? BLK_PERM_WRITE : 0),
                           BLK_PERM_ALL & ~BLK_PERM_RESIZE, errp) < 0) {
        return -EPERM;
    }
    *source_child = job->nodes[job->nnodes - 1];
    if (block_job_add_bdrv(job, "target", target, BLK_PERM_WRITE | BLK_PERM_CONSISTENT_READ,
                           BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE_UNCHANGED, errp) < 0) {
        return -EPERM;
    }
    *target_child = job->nodes[job->nnodes - 1];
    return 0;
}

void block_job_remove_all_bdrv(BlockJob *job)
{
    GLOBAL_STATE_CODE();
    /* Newest first: a job's later edges may depend on its earlier ones. */
    while (job->nnodes > 0) {
        bdrv_root_unref_child(job->nodes[--job->nnodes]);
    }
    free(job->nodes);
    job->nodes = NULL;
}

/* ---- Events ------------------------------------------------------------------------ */

static json_object *block_job_event_data(BlockJob *job, bool with_speed)
    TSA_REQUIRES(job_mutex)
{
    json_object *d = json_object_new_object();
    uint64_t cur, total;

    job_progress_get(&job->job, &cur, &total);
    json_object_object_add(d, "type",
                           json_object_new_string(job_type_str(job->job.driver->job_type)));
    json_object_object_add(d, "device", json_object_new_string(job->job.id));
    json_object_object_add(d, "len", json_object_new_int64(total));
    json_object_object_add(d, "offset", json_object_new_int64(cur));
    if (with_speed) {
        json_object_object_add(d, "speed", json_object_new_int64(job->speed));
    }
    return d;
}

static void block_job_on_event(Job *job, JobEvent ev) TSA_REQUIRES(job_mutex)
{
    BlockJob *bjob = to_block_job(job);
    json_object *d;

    switch (ev) {
    case JOB_EVENT_READY:
        job_emit_event("BLOCK_JOB_READY", block_job_event_data(bjob, true));
        break;
    case JOB_EVENT_PENDING:
        d = json_object_new_object();
        json_object_object_add(d, "type",
                               json_object_new_string(job_type_str(job->driver->job_type)));
        json_object_object_add(d, "id", json_object_new_string(job->id));
        job_emit_event("BLOCK_JOB_PENDING", d);
        break;
    case JOB_EVENT_COMPLETED:
        d = block_job_event_data(bjob, true);
        if (job->ret < 0) {
            json_object_object_add(d, "error", json_object_new_string(
                job->err ? error_get_pretty(job->err) : strerror(-job->ret)));
        }
        job_emit_event("BLOCK_JOB_COMPLETED", d);
        break;
    case JOB_EVENT_CANCELLED:
        job_emit_event("BLOCK_JOB_CANCELLED", block_job_event_data(bjob, true));
        break;
    }
}

/* ---- Creation ---------------------------------------------------------------------- */

void *block_job_create(const char *job_id, const BlockJobDriver *driver, JobTxn *txn,
                       BlockDriverState *bs, uint64_t perm, uint64_t shared_perm,
                       int64_t speed, int flags, JobCompletionFunc *cb, void *opaque,
                       Error **errp)
{
    BlockJob *job;

    GLOBAL_STATE_CODE();
    assert(driver->job_driver.is_block_job);
    /* QEMU defaults the id to the device name; nodes of a storage daemon
     * have none, so a missing id is reported as the empty one. */
    if (!job_id && !(flags & JOB_INTERNAL)) {
        job_id = "";
    }
    job = job_create(job_id, &driver->job_driver, txn, bs->ctx, flags, cb, opaque, errp);
    if (!job) {
        return NULL;
    }
    ratelimit_init(&job->limit);
    job_lock();
    job->job.on_event = block_job_on_event;
    job->iostatus = BLOCK_DEVICE_IO_STATUS_OK;
    job_unlock();

    if (block_job_add_bdrv(job, "main node", bs, perm, shared_perm, errp) < 0) {
        goto fail;
    }
    job_lock();
    if (!block_job_set_speed_locked(job, speed, errp)) {
        job_unlock();
        goto fail;
    }
    job_unlock();
    return job;

fail:
    job_early_fail(&job->job);
    return NULL;
}

/* ---- Speed ------------------------------------------------------------------------- */

static bool job_is_sleeping_locked(Job *job) TSA_REQUIRES(job_mutex)
{
    return job->sleeping;
}

bool block_job_set_speed_locked(BlockJob *job, int64_t speed, Error **errp)
{
    const BlockJobDriver *drv = block_job_driver(job);
    int64_t old;

    if (job_apply_verb_locked(&job->job, JOB_VERB_SET_SPEED, errp) < 0) {
        return false;
    }
    if (speed < 0) {
        error_setg(errp, "Parameter 'speed' expects a non-negative value");
        return false;
    }
    old = job->speed;
    job->speed = speed;
    ratelimit_set_speed(&job->limit, speed, BLOCK_JOB_SLICE_NS);
    if (drv->set_speed) {
        job_unlock();
        drv->set_speed(job, speed);
        job_lock();
    }
    /* A faster (or unlimited) job should not finish a long throttle sleep. */
    if (speed == 0 || speed > old || old == 0) {
        job_enter_cond_locked(&job->job, job_is_sleeping_locked);
    }
    return true;
}

void block_job_ratelimit_processed_bytes(BlockJob *job, uint64_t n)
{
    ratelimit_account(&job->limit, n);
}

void coroutine_fn block_job_ratelimit_sleep(BlockJob *job)
{
    int64_t delay;

    /* Recomputed after every sleep: the speed may change meanwhile. */
    while ((delay = ratelimit_delay_ns(&job->limit)) > 0) {
        job_sleep_ns(&job->job, delay);
        if (job_is_cancelled(&job->job)) {
            break;
        }
    }
}

/* ---- Errors ------------------------------------------------------------------------ */

BlockErrorAction block_job_error_action(BlockJob *job, BlockdevOnError on_err,
                                        bool is_read, int error)
{
    static const char *const action_names[] = { "ignore", "report", "stop" };
    BlockErrorAction action;
    json_object *d;

    switch (on_err) {
    case BLOCKDEV_ON_ERROR_ENOSPC:
    case BLOCKDEV_ON_ERROR_AUTO:
        action = error == ENOSPC ? BLOCK_ERROR_ACTION_STOP : BLOCK_ERROR_ACTION_REPORT;
        break;
    case BLOCKDEV_ON_ERROR_STOP:
        action = BLOCK_ERROR_ACTION_STOP;
        break;
    case BLOCKDEV_ON_ERROR_IGNORE:
        action = BLOCK_ERROR_ACTION_IGNORE;
        break;
    default:
        action = BLOCK_ERROR_ACTION_REPORT;
        break;
    }
    job_lock();
    if (action == BLOCK_ERROR_ACTION_STOP) {
        /* Parked at the next pause point until the user resumes. */
        if (!job->job.user_paused) {
            job_pause_locked(&job->job);
            job->job.user_paused = true;
        }
        if (job->iostatus == BLOCK_DEVICE_IO_STATUS_OK) {
            job->iostatus = error == ENOSPC ? BLOCK_DEVICE_IO_STATUS_NOSPACE
                                            : BLOCK_DEVICE_IO_STATUS_FAILED;
        }
    }
    if (!job->job.internal) {
        d = json_object_new_object();
        json_object_object_add(d, "device", json_object_new_string(job->job.id));
        json_object_object_add(d, "operation", json_object_new_string(is_read ? "read" : "write"));
        json_object_object_add(d, "action", json_object_new_string(action_names[action]));
        job_emit_event("BLOCK_JOB_ERROR", d);
    }
    job_unlock();
    return action;
}

void block_job_user_resume(Job *job)
{
    BlockJob *bjob = to_block_job(job);

    job_lock();
    bjob->iostatus = BLOCK_DEVICE_IO_STATUS_OK;
    job_unlock();
}

void block_job_free(Job *job)
{
    BlockJob *bjob = to_block_job(job);

    GLOBAL_STATE_CODE();
    block_job_remove_all_bdrv(bjob);
    ratelimit_destroy(&bjob->limit);
}

/* ---- Queries ----------------------------------------------------------------------- */

BlockJob *block_job_get_locked(const char *id, Error **errp)
{
    Job *job = job_get_locked(id);

    if (!job || !job_is_block_job(job) || job->internal || job->status == JOB_STATUS_NULL) {
        error_set(errp, ERROR_CLASS_DEVICE_NOT_ACTIVE, "Block job '%s' not found", id);
        return NULL;
    }
    return to_block_job(job);
}

json_object *block_job_query_locked(BlockJob *job)
{
    static const char *const iostatus_names[] = { "ok", "failed", "nospace" };
    const BlockJobDriver *drv = block_job_driver(job);
    json_object *info = json_object_new_object();
    uint64_t cur, total;

    job_progress_get(&job->job, &cur, &total);
    json_object_object_add(info, "type",
                           json_object_new_string(job_type_str(job->job.driver->job_type)));
    json_object_object_add(info, "device", json_object_new_string(job->job.id));
    json_object_object_add(info, "len", json_object_new_int64(total));
    json_object_object_add(info, "offset", json_object_new_int64(cur));
    json_object_object_add(info, "busy", json_object_new_boolean(job->job.busy));
    json_object_object_add(info, "paused", json_object_new_boolean(job->job.pause_count > 0));
    json_object_object_add(info, "speed", json_object_new_int64(job->speed));
    json_object_object_add(info, "io-status",
                           json_object_new_string(iostatus_names[job->iostatus]));
    json_object_object_add(info, "ready",
                           json_object_new_boolean(job_is_ready_locked(&job->job)));
    json_object_object_add(info, "status",
                           json_object_new_string(job_status_str(job->job.status)));
    json_object_object_add(info, "auto-finalize",
                           json_object_new_boolean(job->job.auto_finalize));
    json_object_object_add(info, "auto-dismiss",
                           json_object_new_boolean(job->job.auto_dismiss));
    if (job->job.ret) {
        json_object_object_add(info, "error", json_object_new_string(
            job->job.err ? error_get_pretty(job->job.err) : strerror(-job->job.ret)));
    }
    if (drv->query) {
        job_ref_locked(&job->job);
        job_unlock();
        drv->query(job, info);
        job_lock();
        job_unref_locked(&job->job);
    }
    return info;
}
