/*
 * create-job.h - the "create" job behind QMP blockdev-create and the
 * "amend" job behind x-blockdev-amend.
 *
 * Half: global state.
 */
#ifndef BLOCKD_CREATE_JOB_H
#define BLOCKD_CREATE_JOB_H

#include <json-c/json.h>

#include "blockd/job-common.h"

/* Start a job that creates the image @options describes (a QAPI
 * BlockdevCreateOptions object; checked by the job, errors end it). */
Job *create_job_start(const char *job_id, json_object *options, Error **errp);

/* Start x-blockdev-amend's job for node @bs with @options (a checked
 * BlockdevAmendOptions object for its driver); the job holds @bs. */
Job *amend_job_start(const char *job_id, BlockDriverState *bs, json_object *options,
                     bool force, Error **errp);

#endif /* BLOCKD_CREATE_JOB_H */
