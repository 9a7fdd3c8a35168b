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

/* Start x-blockdev-amend's job for a qcow2 node with @options (a checked
 * BlockdevAmendOptions object). */
Job *amend_job_start(const char *job_id, json_object *options, Error **errp);

#endif /* BLOCKD_CREATE_JOB_H */
