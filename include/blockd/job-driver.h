/*
 * job-driver.h - the driver API of jobs: what a job implementation and the
 * block layer call.  Each function takes job_mutex itself, so calling one
 * with job_mutex held deadlocks (clang checks this: TSA_EXCLUDES).
 *
 * Half: marked per function ("main" = global state, "coroutine" = the
 * job's own coroutine, "any" = any thread).
 */
#ifndef BLOCKD_JOB_DRIVER_H
#define BLOCKD_JOB_DRIVER_H

#include "blockd/job-common.h"

/* ---- Transactions ---- */

/* A new transaction holding one reference for the caller.  Main. */
JobTxn *job_txn_new(void);
/* Drop the caller's reference (members keep the txn alive).  Main. */
void job_txn_unref(JobTxn *txn) TSA_EXCLUDES(job_mutex);

/* ---- Life cycle ---- */

/*
 * Create a job of @driver->instance_size bytes in state "created", in
 * @txn (NULL: a private transaction), running in @ctx.  @id rules: see
 * jobs.md 4.1.  Emits JOB_STATUS_CHANGE created.  Main.
 */
void *job_create(const char *id, const JobDriver *driver, JobTxn *txn,
                 AioContext *ctx, int flags, JobCompletionFunc *cb,
                 void *opaque, Error **errp) TSA_EXCLUDES(job_mutex);

/* Would job_create() accept @id with @flags?  Lets a creator check before
 * it changes the graph.  Main. */
bool job_check_id(const char *id, int flags, Error **errp) TSA_EXCLUDES(job_mutex);

/* Start the coroutine (state "running").  Main. */
void job_start(Job *job) TSA_EXCLUDES(job_mutex);

/* Dispose of a job that failed before job_start ("created" -> "null").
 * Main. */
void job_early_fail(Job *job) TSA_EXCLUDES(job_mutex);
/* @err (may be NULL) becomes the job's error unless it has one already,
 * in which case it is freed.  Global state (a driver's prepare or abort). */
void job_keep_error(Job *job, Error *err) TSA_EXCLUDES(job_mutex);

void job_ref(Job *job) TSA_EXCLUDES(job_mutex);
void job_unref(Job *job) TSA_EXCLUDES(job_mutex);   /* main */

/* ---- From the job's coroutine ---- */

/* Park here if a pause was requested (and not cancelled). */
void coroutine_fn job_pause_point(Job *job) TSA_EXCLUDES(job_mutex);
/* Park until job_enter(); returns at once if cancelled. */
void coroutine_fn job_yield(Job *job) TSA_EXCLUDES(job_mutex);
/* Sleep @ns (realtime) unless cancelled; resume/cancel/enter cut it short. */
void coroutine_fn job_sleep_ns(Job *job, int64_t ns) TSA_EXCLUDES(job_mutex);
/* "running" -> "ready" and BLOCK_JOB_READY.  Coroutine. */
void job_transition_to_ready(Job *job) TSA_EXCLUDES(job_mutex);

/* ---- Any thread ---- */

/* Wake the job if it is parked (sleeping, yielded or at a pause point). */
void job_enter(Job *job) TSA_EXCLUDES(job_mutex);
/* Request / release an internal pause (drained sections). */
void job_pause(Job *job) TSA_EXCLUDES(job_mutex);
void job_resume(Job *job) TSA_EXCLUDES(job_mutex);

/* Forced cancellation requested: stop doing I/O now. */
bool job_is_cancelled(Job *job) TSA_EXCLUDES(job_mutex);
/* Any cancellation requested (also the soft cancel of a ready mirror). */
bool job_cancel_requested(Job *job) TSA_EXCLUDES(job_mutex);
bool job_is_ready(Job *job) TSA_EXCLUDES(job_mutex);
bool job_is_completed(Job *job) TSA_EXCLUDES(job_mutex);
bool job_is_paused(Job *job) TSA_EXCLUDES(job_mutex);   /* parked in a pause point */
JobStatus job_get_status(Job *job) TSA_EXCLUDES(job_mutex);

/* ---- Main thread, synchronous ---- */

int job_cancel_sync(Job *job, bool force) TSA_EXCLUDES(job_mutex);
/* Force-cancel every job and wait (daemon shutdown). */
void job_cancel_sync_all(void) TSA_EXCLUDES(job_mutex);
int job_complete_sync(Job *job, Error **errp) TSA_EXCLUDES(job_mutex);
void job_set_aio_context(Job *job, AioContext *ctx) TSA_EXCLUDES(job_mutex);

/* ---- Progress (any thread; own lock) ---- */

void job_progress_update(Job *job, uint64_t done);
void job_progress_set_remaining(Job *job, uint64_t remaining);
void job_progress_increase_remaining(Job *job, uint64_t delta);
void job_progress_get(Job *job, uint64_t *current, uint64_t *total);

#endif /* BLOCKD_JOB_DRIVER_H */
