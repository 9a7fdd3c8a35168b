/*
 * job-complete.c - how jobs end: the return-code rule, transactions
 * (success and abort paths), finalize, dismiss, cancellation, the user
 * verbs and the synchronous waits.  See jobs.md sections 4.5-9 and 11.4.
 *
 * Everything here runs in the main thread with job_mutex held; driver
 * callbacks are called with it dropped.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/aio-wait.h"
#include "blockd/main-loop.h"
#include "job-internal.h"

/* ---- Transactions -------------------------------------------------------------- */

JobTxn *job_txn_new(void)
{
    JobTxn *txn = calloc(1, sizeof(*txn));

    if (!txn) {
        abort();
    }
    job_lock();
    list_init(&txn->jobs);
    txn->refcnt = 1;
    job_unlock();
    return txn;
}

void job_txn_ref_locked(JobTxn *txn)
{
    txn->refcnt++;
}

void job_txn_unref_locked(JobTxn *txn)
{
    if (txn && --txn->refcnt == 0) {
        assert(list_empty(&txn->jobs));
        free(txn);
    }
}

void job_txn_unref(JobTxn *txn)
{
    job_lock();
    job_txn_unref_locked(txn);
    job_unlock();
}

void job_txn_add_job_locked(JobTxn *txn, Job *job)
{
    assert(!job->txn);
    job->txn = txn;
    /* Newest first: the members are finalized (and, when one fails,
     * aborted) in that order, which fixes the order of their events as
     * qemu-storage-daemon emits them. */
    list_add_head(&txn->jobs, &job->txn_node);
    job_txn_ref_locked(txn);
}

void job_txn_del_job_locked(Job *job)
{
    if (job->txn) {
        list_del(&job->txn_node);
        job_txn_unref_locked(job->txn);
        job->txn = NULL;
    }
}

/* ---- The return-code rule ----------------------------------------------------- */

static int job_update_rc_locked(Job *job) TSA_REQUIRES(job_mutex)
{
    if (!job->ret && job_is_cancelled_locked(job)) {
        job->ret = -ECANCELED;
    }
    if (job->ret) {
        if (!job->err) {
            error_setg(&job->err, "%s", strerror(-job->ret));
        }
        job_state_transition_locked(job, JOB_STATUS_ABORTING);
    }
    return job->ret;
}

/* ---- Finalizing one job ------------------------------------------------------- */

static void job_conclude_locked(Job *job) TSA_REQUIRES(job_mutex)
{
    job_state_transition_locked(job, JOB_STATUS_CONCLUDED);
    if (job->auto_dismiss || !job->started) {
        job_do_dismiss_locked(job);
    }
}

void job_do_dismiss_locked(Job *job)
{
    job->busy = false;
    job->paused = false;
    job->deferred_to_main_loop = true;
    job_txn_del_job_locked(job);
    job_state_transition_locked(job, JOB_STATUS_NULL);
    job_unref_locked(job);
}

/* commit or abort, then clean, then the creator's callback, then events. */
static void job_finalize_single_locked(Job *job) TSA_REQUIRES(job_mutex)
{
    const JobDriver *drv = job->driver;
    int ret;

    assert(job_is_completed_locked(job));
    ret = job_update_rc_locked(job);
    job_unlock();
    if (!ret) {
        if (drv->commit) {
            drv->commit(job);
        }
    } else if (drv->abort) {
        drv->abort(job);
    }
    if (drv->clean) {
        drv->clean(job);
    }
    if (job->cb) {
        job->cb(job->opaque, ret);
    }
    job_lock();
    if (job->started) {
        job_notify_locked(job, job_is_cancelled_locked(job) ? JOB_EVENT_CANCELLED
                                                             : JOB_EVENT_COMPLETED);
    }
    job_txn_del_job_locked(job);
    job_conclude_locked(job);
}

static int job_prepare_locked(Job *job) TSA_REQUIRES(job_mutex)
{
    int ret;

    if (job->ret == 0 && job->driver->prepare) {
        job_unlock();
        ret = job->driver->prepare(job);
        job_lock();
        job->ret = ret;
        job_update_rc_locked(job);
    }
    return job->ret;
}

/* ---- The abort path (jobs.md 7.3) ------------------------------------------- */

static void job_cancel_async_locked(Job *job, bool force) TSA_REQUIRES(job_mutex)
{
    const JobDriver *drv = job->driver;

    if (drv->cancel) {
        job_unlock();
        force = drv->cancel(job, force);
        job_lock();
    } else {
        force = true;    /* without a soft mode every cancel is a real one */
    }
    if (job->user_paused) {
        if (drv->user_resume) {
            job_unlock();
            drv->user_resume(job);
            job_lock();
        }
        job->user_paused = false;
        assert(job->pause_count > 0);
        job->pause_count--;
    }
    /* A soft cancel after run() returned changes nothing. */
    if (force || !job->deferred_to_main_loop) {
        job->cancelled = true;
        job->force_cancel |= force;
    }
}

static void job_force_cancel_err_locked(Job *job, Error **errp) TSA_REQUIRES(job_mutex)
{
    (void)errp;
    job_cancel_locked(job, true);
}

static void job_soft_cancel_err_locked(Job *job, Error **errp) TSA_REQUIRES(job_mutex)
{
    (void)errp;
    job_cancel_locked(job, false);
}

static void job_completed_txn_abort_locked(Job *trigger) TSA_REQUIRES(job_mutex)
{
    JobTxn *txn = trigger->txn;

    if (txn->aborting) {
        return;    /* a later member completing while we abort */
    }
    txn->aborting = true;
    job_txn_ref_locked(txn);
    job_ref_locked(trigger);

    /* Stop everybody else first, so that nobody commits. */
    list_for_each(n, &txn->jobs) {
        Job *other = list_entry(n, Job, txn_node);
        if (other != trigger) {
            job_cancel_async_locked(other, true);
        }
    }
    /* Then finish them one by one; finalize removes each from the txn. */
    while (!list_empty(&txn->jobs)) {
        Job *other = list_first(&txn->jobs, Job, txn_node);

        job_ref_locked(other);
        if (!job_is_completed_locked(other)) {
            assert(job_cancel_requested_locked(other));
            if (other->started) {
                job_finish_sync_locked(other, NULL, NULL);
            } else {
                /*
                 * Never started (e.g. the grouped jobs of a QMP transaction
                 * that fails before starting them): there is no coroutine
                 * that could ever complete it, so finish_sync would wait
                 * forever.  Apply the rc rule here instead (-ECANCELED,
                 * "created" -> "aborting"), as job_cancel_locked does for
                 * a lone never-started job.  Found by test-job-txn.
                 */
                job_update_rc_locked(other);
            }
        }
        if (other->txn == txn) {
            job_finalize_single_locked(other);
        }
        job_unref_locked(other);
    }
    job_unref_locked(trigger);
    job_txn_unref_locked(txn);
}

/* ---- The success path (jobs.md 7.2) ------------------------------------------ */

/* Prepare every member; returns the first that failed, or NULL. */
static Job *job_txn_prepare_all_locked(JobTxn *txn) TSA_REQUIRES(job_mutex)
{
    list_for_each(n, &txn->jobs) {
        Job *job = list_entry(n, Job, txn_node);
        if (job_prepare_locked(job)) {
            return job;
        }
    }
    return NULL;
}

static void job_do_finalize_locked(Job *job) TSA_REQUIRES(job_mutex)
{
    JobTxn *txn = job->txn;
    Job *failed;

    assert(txn);
    job_txn_ref_locked(txn);
    failed = job_txn_prepare_all_locked(txn);
    if (failed) {
        /* The failed member triggers; every other one, including @job, is
         * force-cancelled so that none of them commits. */
        job_completed_txn_abort_locked(failed);
    } else {
        while (!list_empty(&txn->jobs)) {
            job_finalize_single_locked(list_first(&txn->jobs, Job, txn_node));
        }
    }
    job_txn_unref_locked(txn);
}

static bool job_txn_needs_finalize_locked(JobTxn *txn) TSA_REQUIRES(job_mutex)
{
    list_for_each(n, &txn->jobs) {
        if (!list_entry(n, Job, txn_node)->auto_finalize) {
            return true;
        }
    }
    return false;
}

static void job_completed_txn_success_locked(Job *job) TSA_REQUIRES(job_mutex)
{
    JobTxn *txn = job->txn;

    job_state_transition_locked(job, JOB_STATUS_WAITING);
    list_for_each(n, &txn->jobs) {
        if (!job_is_completed_locked(list_entry(n, Job, txn_node))) {
            return;    /* the last member to finish goes on */
        }
    }
    list_for_each(n, &txn->jobs) {
        Job *other = list_entry(n, Job, txn_node);
        assert(other->ret == 0);
        job_state_transition_locked(other, JOB_STATUS_PENDING);
        if (!other->auto_finalize) {
            job_notify_locked(other, JOB_EVENT_PENDING);
        }
    }
    if (!job_txn_needs_finalize_locked(txn)) {
        job_do_finalize_locked(job);
    }
}

void job_completed_locked(Job *job)
{
    assert(job->txn && !job_is_completed_locked(job));
    if (job_update_rc_locked(job)) {
        job_completed_txn_abort_locked(job);
    } else {
        job_completed_txn_success_locked(job);
    }
}

/* ---- Cancellation ------------------------------------------------------------- */

void job_cancel_locked(Job *job, bool force)
{
    GLOBAL_STATE_CODE();
    if (job->status == JOB_STATUS_NULL) {
        /* Dismissed already (the caller holds a reference): it left its
         * transaction, and its outcome is final. */
        return;
    }
    if (job->status == JOB_STATUS_CONCLUDED) {
        job_do_dismiss_locked(job);
        return;
    }
    job_cancel_async_locked(job, force);
    if (!job->started) {
        job_completed_locked(job);
    } else if (job->deferred_to_main_loop) {
        /* run() has returned: only a real cancel changes the outcome.  If
         * the exit BH has not run yet, it will take the abort path. */
        if (job_is_cancelled_locked(job) && job_is_completed_locked(job)) {
            job_completed_txn_abort_locked(job);
        }
    } else {
        job_enter_cond_locked(job, NULL);
    }
}

void job_user_cancel_locked(Job *job, bool force, Error **errp)
{
    if (job_apply_verb_locked(job, JOB_VERB_CANCEL, errp)) {
        return;
    }
    job_cancel_locked(job, force);
}

/* ---- The other user verbs -------------------------------------------------- */

void job_user_pause_locked(Job *job, Error **errp)
{
    if (job_apply_verb_locked(job, JOB_VERB_PAUSE, errp)) {
        return;
    }
    if (job->user_paused) {
        error_setg(errp, "Job is already paused");
        return;
    }
    job->user_paused = true;
    job_pause_locked(job);
}

void job_user_resume_locked(Job *job, Error **errp)
{
    if (!job->user_paused || job->pause_count <= 0) {
        error_setg(errp, "Can't resume a job that was not paused");
        return;
    }
    if (job_apply_verb_locked(job, JOB_VERB_RESUME, errp)) {
        return;
    }
    if (job->driver->user_resume) {
        job_unlock();
        job->driver->user_resume(job);
        job_lock();
    }
    job->user_paused = false;
    job_resume_locked(job);
}

void job_complete_locked(Job *job, Error **errp)
{
    GLOBAL_STATE_CODE();
    if (job_apply_verb_locked(job, JOB_VERB_COMPLETE, errp)) {
        return;
    }
    if (job_cancel_requested_locked(job) || !job->driver->complete) {
        error_setg(errp, "The active block job '%s' cannot be completed", job->id);
        return;
    }
    job_unlock();
    job->driver->complete(job, errp);
    job_lock();
}

void job_finalize_locked(Job *job, Error **errp)
{
    GLOBAL_STATE_CODE();
    if (job_apply_verb_locked(job, JOB_VERB_FINALIZE, errp)) {
        return;
    }
    job_ref_locked(job);
    job_do_finalize_locked(job);
    job_unref_locked(job);
}

void job_dismiss_locked(Job **jobptr, Error **errp)
{
    GLOBAL_STATE_CODE();
    if (job_apply_verb_locked(*jobptr, JOB_VERB_DISMISS, errp)) {
        return;
    }
    job_do_dismiss_locked(*jobptr);
    *jobptr = NULL;
}

/* ---- Synchronous waits (jobs.md 11.4) -------------------------------------- */

int job_finish_sync_locked(Job *job, void (*finish)(Job *job, Error **errp), Error **errp)
{
    Error *local_err = NULL;
    AioContext *ctx;
    int ret;

    GLOBAL_STATE_CODE();
    job_ref_locked(job);
    if (finish) {
        finish(job, &local_err);
    }
    if (local_err) {
        error_propagate(errp, local_err);
        job_unref_locked(job);
        return -EBUSY;
    }
    ctx = job->aio_context;
    /* Never hold job_mutex while polling: the job needs it to progress. */
    job_unlock();
    AIO_WAIT_WHILE_UNLOCKED(ctx, (job_enter(job), !job_is_completed(job)));
    job_lock();
    ret = (job_is_cancelled_locked(job) && job->ret == 0) ? -ECANCELED : job->ret;
    job_unref_locked(job);
    return ret;
}

int job_cancel_sync_locked(Job *job, bool force)
{
    return job_finish_sync_locked(job, force ? job_force_cancel_err_locked
                                             : job_soft_cancel_err_locked, NULL);
}

int job_cancel_sync(Job *job, bool force)
{
    int ret;

    job_lock();
    ret = job_cancel_sync_locked(job, force);
    job_unlock();
    return ret;
}

int job_complete_sync_locked(Job *job, Error **errp)
{
    return job_finish_sync_locked(job, job_complete_locked, errp);
}

int job_complete_sync(Job *job, Error **errp)
{
    int ret;

    job_lock();
    ret = job_complete_sync_locked(job, errp);
    job_unlock();
    return ret;
}

void job_cancel_sync_all(void)
{
    Job *job;

    GLOBAL_STATE_CODE();
    job_lock();
    for (;;) {
        /* Jobs already torn down may linger while someone holds a ref. */
        for (job = job_next_locked(NULL); job && job->status == JOB_STATUS_NULL;
             job = job_next_locked(job)) {
        }
        if (!job) {
            break;
        }
        job_cancel_sync_locked(job, true);
    }
    job_unlock();
}
