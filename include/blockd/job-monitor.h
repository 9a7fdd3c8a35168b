/*
 * job-monitor.h - the monitor API of jobs.
 *
 * Half: global state unless marked "any thread".  Every function here
 * expects the caller to hold job_mutex, so that finding a job and acting
 * on it is one atomic step with respect to other threads (a job cannot
 * vanish in between).  Functions that run a driver callback, enter a
 * coroutine or poll drop job_mutex for a while and retake it: callers
 * hold a reference (job_ref_locked) and re-read what they rely on.
 */
#ifndef BLOCKD_JOB_MONITOR_H
#define BLOCKD_JOB_MONITOR_H

#include "blockd/job-common.h"

/* The job with id @id, or NULL.  Any thread. */
Job *job_get_locked(const char *id) TSA_REQUIRES(job_mutex);

/* Iterate over all jobs, newest first: start with NULL.  Any thread. */
Job *job_next_locked(Job *job) TSA_REQUIRES(job_mutex);

/* Reference counting; the last unref frees the job (driver free() is
 * called with job_mutex dropped).  Main thread for unref. */
void job_ref_locked(Job *job) TSA_REQUIRES(job_mutex);
void job_unref_locked(Job *job) TSA_REQUIRES(job_mutex);

/* 0 if @job's status accepts @verb, else -EPERM and the QMP error
 * "Job '<id>' in state '<status>' cannot accept command verb '<verb>'". */
int job_apply_verb_locked(Job *job, JobVerb verb, Error **errp) TSA_REQUIRES(job_mutex);

/* Status predicates.  Any thread. */
bool job_is_completed_locked(Job *job) TSA_REQUIRES(job_mutex);
bool job_is_ready_locked(Job *job) TSA_REQUIRES(job_mutex);
bool job_is_cancelled_locked(Job *job) TSA_REQUIRES(job_mutex);
bool job_cancel_requested_locked(Job *job) TSA_REQUIRES(job_mutex);
bool job_user_paused_locked(Job *job) TSA_REQUIRES(job_mutex);

/* Internal pause / resume (drain, error stop).  Any thread. */
void job_pause_locked(Job *job) TSA_REQUIRES(job_mutex);
void job_resume_locked(Job *job) TSA_REQUIRES(job_mutex);

/* Wake the coroutine if it is parked (and @fn, if given, agrees).
 * Any thread; drops job_mutex briefly. */
void job_enter_cond_locked(Job *job, bool (*fn)(Job *job)) TSA_REQUIRES(job_mutex);

/* The user verbs (QMP job-pause/resume/cancel/complete/finalize/dismiss). */
void job_user_pause_locked(Job *job, Error **errp) TSA_REQUIRES(job_mutex);
void job_user_resume_locked(Job *job, Error **errp) TSA_REQUIRES(job_mutex);
void job_user_cancel_locked(Job *job, bool force, Error **errp) TSA_REQUIRES(job_mutex);
void job_complete_locked(Job *job, Error **errp) TSA_REQUIRES(job_mutex);
void job_finalize_locked(Job *job, Error **errp) TSA_REQUIRES(job_mutex);
/* On success *jobptr is set to NULL (the job may be gone). */
void job_dismiss_locked(Job **jobptr, Error **errp) TSA_REQUIRES(job_mutex);

/* Cancel without the verb check (internal users).  A concluded job is
 * dismissed. */
void job_cancel_locked(Job *job, bool force) TSA_REQUIRES(job_mutex);

/*
 * Synchronous forms: run @finish (under job_mutex), then wait, with
 * job_mutex RELEASED, until the job is completed.  Return the job's final
 * result (-ECANCELED if it was force-cancelled), or -EBUSY if @finish
 * failed.  Main thread, not in a coroutine.
 */
int job_finish_sync_locked(Job *job, void (*finish)(Job *job, Error **errp),
                           Error **errp) TSA_REQUIRES(job_mutex);
int job_cancel_sync_locked(Job *job, bool force) TSA_REQUIRES(job_mutex);
int job_complete_sync_locked(Job *job, Error **errp) TSA_REQUIRES(job_mutex);

/* Move a paused or completed job to @ctx (its coroutine follows on its
 * next wake-up). */
void job_set_aio_context_locked(Job *job, AioContext *ctx) TSA_REQUIRES(job_mutex);
/* Does @job still run in @ctx, or will its parked coroutine be woken there?
 * (An iothread in use by a job cannot be deleted.) */
bool job_uses_aio_context_locked(Job *job, AioContext *ctx) TSA_REQUIRES(job_mutex);

/* QAPI JobInfo of @job (for query-jobs). */
json_object *job_query_locked(Job *job) TSA_REQUIRES(job_mutex);

#endif /* BLOCKD_JOB_MONITOR_H */
