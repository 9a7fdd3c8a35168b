/*
 * job-internal.h - what job.c and job-complete.c share.
 */
#ifndef BLOCKD_JOB_INTERNAL_H
#define BLOCKD_JOB_INTERNAL_H

#include "blockd/job-driver.h"
#include "blockd/job-monitor.h"

struct JobTxn {
    ListNode jobs TSA_GUARDED_BY(job_mutex);    /* Job.txn_node */
    bool aborting TSA_GUARDED_BY(job_mutex);
    int refcnt TSA_GUARDED_BY(job_mutex);
};

/* Change status; asserts the transition table; emits JOB_STATUS_CHANGE. */
void job_state_transition_locked(Job *job, JobStatus s1) TSA_REQUIRES(job_mutex);

void job_txn_ref_locked(JobTxn *txn) TSA_REQUIRES(job_mutex);
void job_txn_unref_locked(JobTxn *txn) TSA_REQUIRES(job_mutex);
void job_txn_add_job_locked(JobTxn *txn, Job *job) TSA_REQUIRES(job_mutex);
void job_txn_del_job_locked(Job *job) TSA_REQUIRES(job_mutex);

/* The coroutine finished (exit BH, main thread): success or abort path. */
void job_completed_locked(Job *job) TSA_REQUIRES(job_mutex);
/* Dismiss: -> "null", drop the list reference. */
void job_do_dismiss_locked(Job *job) TSA_REQUIRES(job_mutex);

/* The coroutine parked or ended: wake AIO_WAIT_WHILE waiters (drain). */
void job_event_idle_locked(Job *job) TSA_REQUIRES(job_mutex);

/* Fire the JobEvent hook of the job, if any. */
void job_notify_locked(Job *job, JobEvent ev) TSA_REQUIRES(job_mutex);

#endif /* BLOCKD_JOB_INTERNAL_H */
