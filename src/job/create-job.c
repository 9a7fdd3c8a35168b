/*
 * create-job.c - blockdev-create: image creation run as a job ("create"),
 * as QEMU does, so that a long preallocation does not block the monitor;
 * and x-blockdev-amend's job ("amend").  Both are created with manual
 * dismiss: the user collects the result with query-jobs and job-dismiss.
 */
#include <errno.h>
#include <stdlib.h>

#include "blockd/block-create.h"
#include "blockd/block-global-state.h"
#include "blockd/create-job.h"
#include "blockd/job-driver.h"
#include "blockd/main-loop.h"

/* Both jobs: the command's options, immutable (BlockdevCreateOptions or
 * BlockdevAmendOptions). */
typedef struct OptionsJob {
    Job common;
    json_object *options;
    BlockDriverState *bs;        /* amend: the node (referenced) */
    bool force;
} OptionsJob;

static void options_job_free(Job *job)
{
    OptionsJob *s = (OptionsJob *)job;

    json_object_put(s->options);
    if (s->bs) {
        bdrv_unref(s->bs);
    }
}

static Job *options_job_start(const char *job_id, const JobDriver *driver,
                              json_object *options, BlockDriverState *bs, bool force,
                              Error **errp)
{
    OptionsJob *s = job_create(job_id, driver, NULL, main_aio_context(), JOB_MANUAL_DISMISS,
                               NULL, NULL, errp);

    if (!s) {
        return NULL;
    }
    s->options = json_object_get(options);
    if (bs) {
        bdrv_ref(bs);
        s->bs = bs;
        s->force = force;
    }
    job_start(&s->common);
    return &s->common;
}

static int coroutine_fn create_run(Job *job, Error **errp)
{
    OptionsJob *s = (OptionsJob *)job;
    int ret;

    job_progress_set_remaining(job, 1);
    ret = bdrv_co_create(s->options, errp);
    job_progress_update(job, 1);
    return ret;
}

static const JobDriver create_job_driver = {
    .instance_size = sizeof(OptionsJob),
    .job_type = JOB_TYPE_CREATE,
    .run = create_run,
    .free = options_job_free,
};

Job *create_job_start(const char *job_id, json_object *options, Error **errp)
{
    GLOBAL_STATE_CODE();
    return options_job_start(job_id, &create_job_driver, options, NULL, false, errp);
}

/* ---- x-blockdev-amend ------------------------------------------------------------- */

/* The driver amends (luks, and qcow2's encryption: their key slots). */
static int coroutine_fn amend_run(Job *job, Error **errp)
{
    OptionsJob *s = (OptionsJob *)job;
    int ret = 0;

    job_progress_set_remaining(job, 1);
    if (s->bs->drv->bdrv_co_amend) {
        ret = s->bs->drv->bdrv_co_amend(s->bs, s->options, s->force, errp);
    }
    job_progress_update(job, 1);
    return ret;
}

static const JobDriver amend_job_driver = {
    .instance_size = sizeof(OptionsJob),
    .job_type = JOB_TYPE_AMEND,
    .run = amend_run,
    .free = options_job_free,
};

Job *amend_job_start(const char *job_id, BlockDriverState *bs, json_object *options,
                     bool force, Error **errp)
{
    GLOBAL_STATE_CODE();
    return options_job_start(job_id, &amend_job_driver, options, bs, force, errp);
}
