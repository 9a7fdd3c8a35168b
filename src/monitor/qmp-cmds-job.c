/*
 * qmp-cmds-job.c - the job commands: job-*, block-job-*, query-jobs,
 * query-block-jobs.  Each command holds job_mutex from the look-up to the
 * end of the action, so the job cannot vanish in between.
 */
#include <string.h>

#include "blockd/blockjob.h"
#include "blockd/main-loop.h"
#include "blockd/monitor.h"
#include "blockd/options.h"
#include "monitor-internal.h"

static const SchemaField id_fields[] = {
    { .name = "id", .type = SCHEMA_STR },
    { 0 },
};
static const SchemaObject id_args = { .name = "job-id-arg", .fields = id_fields };

static const SchemaField device_fields[] = {
    { .name = "device", .type = SCHEMA_STR },
    { 0 },
};
static const SchemaObject device_args = { .name = "block-job-arg", .fields = device_fields };

static const SchemaField cancel_fields[] = {
    { .name = "device", .type = SCHEMA_STR },
    { .name = "force", .type = SCHEMA_BOOL, .optional = true },
    { 0 },
};
static const SchemaObject cancel_args = { .name = "block-job-cancel-arg", .fields = cancel_fields };

static const SchemaField set_speed_fields[] = {
    { .name = "device", .type = SCHEMA_STR },
    { .name = "speed", .type = SCHEMA_INT },
    { 0 },
};
static const SchemaObject set_speed_args = {
    .name = "block-job-set-speed-arg", .fields = set_speed_fields,
};

static const char *const job_type_names[] = { "commit", "stream", "mirror", "backup",
                                               "create", "amend", NULL };
static const char *const copy_modes[] = { "background", "write-blocking", NULL };
static const SchemaField change_fields[] = {
    { .name = "id", .type = SCHEMA_STR },
    { .name = "type", .type = SCHEMA_ENUM, .enum_values = job_type_names },
    { .name = "copy-mode", .type = SCHEMA_ENUM, .optional = true, .enum_values = copy_modes },
    { 0 },
};
static const SchemaObject change_args = { .name = "block-job-change-arg", .fields = change_fields };

static const char *arg_str(json_object *args, const char *key)
{
    json_object *v;
    return json_object_object_get_ex(args, key, &v) ? json_object_get_string(v) : NULL;
}

/* Any job that QMP may see. */
static Job *find_job_locked(const char *id, Error **errp) TSA_REQUIRES(job_mutex)
{
    Job *job = job_get_locked(id);

    if (!job || job->internal || job->status == JOB_STATUS_NULL) {
        error_setg(errp, "Job not found");
        return NULL;
    }
    return job;
}

static json_object *result(Error **errp)
{
    return *errp ? NULL : json_object_new_object();
}

/* ---- job-* ------------------------------------------------------------------------ */

typedef void JobVerbFn(Job *job, Error **errp);

static void do_pause(Job *job, Error **errp) TSA_REQUIRES(job_mutex)
{
    job_user_pause_locked(job, errp);
}

static void do_resume(Job *job, Error **errp) TSA_REQUIRES(job_mutex)
{
    job_user_resume_locked(job, errp);
}

static void do_cancel(Job *job, Error **errp) TSA_REQUIRES(job_mutex)
{
    job_user_cancel_locked(job, true, errp);
}

static void do_complete(Job *job, Error **errp) TSA_REQUIRES(job_mutex)
{
    job_complete_locked(job, errp);
}

static void do_finalize(Job *job, Error **errp) TSA_REQUIRES(job_mutex)
{
    job_ref_locked(job);
    job_finalize_locked(job, errp);
    job_unref_locked(job);
}

static void do_dismiss(Job *job, Error **errp) TSA_REQUIRES(job_mutex)
{
    job_dismiss_locked(&job, errp);
}

/* Look up (generic or block job) and act, all under job_mutex. */
static json_object *job_verb(json_object *args, const char *key, bool block_only,
                             JobVerbFn *fn, Error **errp)
{
    const char *id = arg_str(args, key);
    Error *err = NULL;
    Job *job;

    GLOBAL_STATE_CODE();
    job_lock();
    job = block_only ? (Job *)block_job_get_locked(id, &err) : find_job_locked(id, &err);
    if (job) {
        fn(job, &err);
    }
    job_unlock();
    error_propagate(errp, err);
    return err ? NULL : json_object_new_object();
}

#define JOB_CMD(name, key, block_only, fn)                              \
    static json_object *name(json_object *args, Error **errp)          \
    {                                                                   \
        return job_verb(args, key, block_only, fn, errp);               \
    }

JOB_CMD(qmp_job_pause, "id", false, do_pause)
JOB_CMD(qmp_job_resume, "id", false, do_resume)
JOB_CMD(qmp_job_cancel, "id", false, do_cancel)
JOB_CMD(qmp_job_complete, "id", false, do_complete)
JOB_CMD(qmp_job_finalize, "id", false, do_finalize)
JOB_CMD(qmp_job_dismiss, "id", false, do_dismiss)
JOB_CMD(qmp_block_job_pause, "device", true, do_pause)
JOB_CMD(qmp_block_job_resume, "device", true, do_resume)
JOB_CMD(qmp_block_job_complete, "device", true, do_complete)
JOB_CMD(qmp_block_job_finalize, "id", true, do_finalize)
JOB_CMD(qmp_block_job_dismiss, "id", true, do_dismiss)

static json_object *qmp_query_jobs(json_object *args, Error **errp)
{
    json_object *list = json_object_new_array();

    (void)args;
    (void)errp;
    job_lock();
    for (Job *job = job_next_locked(NULL); job; job = job_next_locked(job)) {
        if (!job->internal && job->status != JOB_STATUS_NULL) {
            json_object_array_add(list, job_query_locked(job));
        }
    }
    job_unlock();
    return list;
}

/* ---- block-job-* with their own arguments ---------------------------------------- */

static json_object *qmp_block_job_cancel(json_object *args, Error **errp)
{
    const char *device = arg_str(args, "device");
    bool force = false;
    Error *err = NULL;
    BlockJob *job;

    opt_get_bool(args, "force", &force, NULL);
    job_lock();
    job = block_job_get_locked(device, &err);
    if (job) {
        if (job_user_paused_locked(&job->job) && !force) {
            error_setg(&err, "The block job for device '%s' is currently paused", device);
        } else {
            job_user_cancel_locked(&job->job, force, &err);
        }
    }
    job_unlock();
    error_propagate(errp, err);
    return result(errp);
}

static json_object *qmp_block_job_set_speed(json_object *args, Error **errp)
{
    int64_t speed = 0;
    Error *err = NULL;
    BlockJob *job;

    opt_get_int(args, "speed", &speed, NULL);
    job_lock();
    job = block_job_get_locked(arg_str(args, "device"), &err);
    if (job) {
        block_job_set_speed_locked(job, speed, &err);
    }
    job_unlock();
    error_propagate(errp, err);
    return result(errp);
}

static json_object *qmp_block_job_change(json_object *args, Error **errp)
{
    const BlockJobDriver *drv;
    Error *err = NULL;
    BlockJob *job;

    job_lock();
    job = block_job_get_locked(arg_str(args, "id"), &err);
    if (job && strcmp(arg_str(args, "type"), job_type_str(job->job.driver->job_type))) {
        error_setg(&err, "Job type does not match the type of the job");
    } else if (job && job_apply_verb_locked(&job->job, JOB_VERB_CHANGE, &err) == 0) {
        drv = (const BlockJobDriver *)job->job.driver;
        if (!drv->change) {
            error_setg(&err, "Job type does not support change");
        } else {
            job_ref_locked(&job->job);
            job_unlock();
            drv->change(job, args, &err);
            job_lock();
            job_unref_locked(&job->job);
        }
    }
    job_unlock();
    error_propagate(errp, err);
    return result(errp);
}

static json_object *qmp_query_block_jobs(json_object *args, Error **errp)
{
    json_object *list = json_object_new_array();

    (void)args;
    (void)errp;
    job_lock();
    for (Job *job = job_next_locked(NULL); job; job = job_next_locked(job)) {
        if (job_is_block_job(job) && !job->internal && job->status != JOB_STATUS_NULL) {
            json_object_array_add(list, block_job_query_locked((BlockJob *)job));
        }
    }
    job_unlock();
    return list;
}

const QmpCommand qmp_job_commands[] = {
    { .name = "job-pause", .fn = qmp_job_pause, .args = &id_args },
    { .name = "job-resume", .fn = qmp_job_resume, .args = &id_args },
    { .name = "job-cancel", .fn = qmp_job_cancel, .args = &id_args },
    { .name = "job-complete", .fn = qmp_job_complete, .args = &id_args },
    { .name = "job-finalize", .fn = qmp_job_finalize, .args = &id_args },
    { .name = "job-dismiss", .fn = qmp_job_dismiss, .args = &id_args },
    { .name = "query-jobs", .ret = &qmp_ret_any, .fn = qmp_query_jobs, .args = NULL },
    { .name = "block-job-cancel", .fn = qmp_block_job_cancel, .args = &cancel_args },
    { .name = "block-job-pause", .fn = qmp_block_job_pause, .args = &device_args },
    { .name = "block-job-resume", .fn = qmp_block_job_resume, .args = &device_args },
    { .name = "block-job-complete", .fn = qmp_block_job_complete, .args = &device_args },
    { .name = "block-job-finalize", .fn = qmp_block_job_finalize, .args = &id_args },
    { .name = "block-job-dismiss", .fn = qmp_block_job_dismiss, .args = &id_args },
    { .name = "block-job-set-speed", .fn = qmp_block_job_set_speed, .args = &set_speed_args },
    { .name = "block-job-change", .fn = qmp_block_job_change, .args = &change_args },
    { .name = "query-block-jobs", .ret = &qmp_ret_any, .fn = qmp_query_block_jobs, .args = NULL },
    { 0 },
};
