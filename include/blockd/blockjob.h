/*
 * blockjob.h - block jobs: a Job plus the nodes it works on, a speed
 * limit, an I/O status and the BLOCK_JOB_* events.
 *
 * Half: global state unless marked.  Functions ending in _locked expect
 * job_mutex held (monitor API); the others take it themselves.
 */
#ifndef BLOCKD_BLOCKJOB_H
#define BLOCKD_BLOCKJOB_H

#include "blockd/block-int.h"
#include "blockd/job-driver.h"
#include "blockd/job-monitor.h"
#include "blockd/ratelimit.h"

/* Slice of the speed limit: jobs.md 6.1. */
#define BLOCK_JOB_SLICE_NS (100 * 1000 * 1000LL)

/* QAPI BlockdevOnError. */
typedef enum BlockdevOnError {
    BLOCKDEV_ON_ERROR_REPORT,
    BLOCKDEV_ON_ERROR_IGNORE,
    BLOCKDEV_ON_ERROR_ENOSPC,
    BLOCKDEV_ON_ERROR_STOP,
    BLOCKDEV_ON_ERROR_AUTO,
    BLOCKDEV_ON_ERROR__MAX,
} BlockdevOnError;

/* QAPI BlockErrorAction. */
typedef enum BlockErrorAction {
    BLOCK_ERROR_ACTION_IGNORE,
    BLOCK_ERROR_ACTION_REPORT,
    BLOCK_ERROR_ACTION_STOP,
} BlockErrorAction;

/* QAPI BlockDeviceIoStatus. */
typedef enum BlockDeviceIoStatus {
    BLOCK_DEVICE_IO_STATUS_OK,
    BLOCK_DEVICE_IO_STATUS_FAILED,
    BLOCK_DEVICE_IO_STATUS_NOSPACE,
} BlockDeviceIoStatus;

/* Parse "report"/"ignore"/"enospc"/"stop"/"auto"; NULL gives "report".
 * Error: "Parameter '<name>' does not accept value '<v>'". */
bool blockdev_on_error_parse(const char *name, const char *s, BlockdevOnError *out,
                             Error **errp);

typedef struct BlockJob BlockJob;

typedef struct BlockJobDriver {
    JobDriver job_driver;                   /* first: a BlockJobDriver is a JobDriver */
    /* Still has requests in flight during a drain?  Main. */
    bool (*drained_poll)(BlockJob *job);
    /* Speed changed.  Main, without job_mutex. */
    void (*set_speed)(BlockJob *job, int64_t speed);
    /* block-job-change: @opts holds the type-specific members.  Main. */
    bool (*change)(BlockJob *job, json_object *opts, Error **errp);
    /* Add type-specific members to a BlockJobInfo.  Main. */
    void (*query)(BlockJob *job, json_object *info);
} BlockJobDriver;

struct BlockJob {
    Job job;                                  /* first */
    int64_t speed TSA_GUARDED_BY(job_mutex);
    BlockDeviceIoStatus iostatus TSA_GUARDED_BY(job_mutex);
    RateLimit limit;                          /* own lock */
    /* GS: the edges the job holds on nodes ("main node" first). */
    BdrvChild **nodes;
    int nnodes;
};

/*
 * Create a block job on @bs (its main node): a "child_job" edge to @bs
 * with @perm / @shared_perm, in @bs's AioContext.  @speed may be 0.
 * Any failure leaves nothing behind ("created" then "null" events).
 */
void *block_job_create(const char *job_id, const BlockJobDriver *driver, JobTxn *txn,
                       BlockDriverState *bs, uint64_t perm, uint64_t shared_perm,
                       int64_t speed, int flags, JobCompletionFunc *cb, void *opaque,
                       Error **errp) TSA_EXCLUDES(job_mutex);

/* Another node the job uses: drained with it, released when it ends. */
int block_job_add_bdrv(BlockJob *job, const char *name, BlockDriverState *bs,
                       uint64_t perm, uint64_t shared_perm, Error **errp);
/* The edges of a copying job (mirror, backup): read @source while guests
 * keep writing it (and write it too if @write_source: a backup that
 * discards what it copied), write @target which nobody else may write. */
int block_job_add_copy_nodes(BlockJob *job, BlockDriverState *source,
                             BlockDriverState *target, bool write_source,
                             BdrvChild **source_child, BdrvChild **target_child,
                             Error **errp);
/* Release every node edge (also done when the job is freed). */
void block_job_remove_all_bdrv(BlockJob *job);

/* The block job with id @id: else DeviceNotActive "Block job '<id>' not
 * found".  Internal jobs are invisible. */
BlockJob *block_job_get_locked(const char *id, Error **errp) TSA_REQUIRES(job_mutex);
bool block_job_set_speed_locked(BlockJob *job, int64_t speed, Error **errp)
    TSA_REQUIRES(job_mutex);
/* QAPI BlockJobInfo. */
json_object *block_job_query_locked(BlockJob *job) TSA_REQUIRES(job_mutex);
bool job_is_block_job(Job *job);

/* JobDriver callbacks every block job driver installs: user_resume
 * (resets the I/O status) and free (releases the node edges). */
void block_job_user_resume(Job *job);
void block_job_free(Job *job);

/* ---- From the job's coroutine ---- */

/* Account @n bytes of work against the speed limit.  Any thread. */
void block_job_ratelimit_processed_bytes(BlockJob *job, uint64_t n);
/* Sleep as long as the speed limit says (cut short by cancel). */
void coroutine_fn block_job_ratelimit_sleep(BlockJob *job) TSA_EXCLUDES(job_mutex);

/*
 * Route an I/O error @error (positive errno) through @on_err: emits
 * BLOCK_JOB_ERROR and returns the action; "stop" pauses the job (it parks
 * at its next pause point) and sets the I/O status.  Job's thread.
 */
BlockErrorAction block_job_error_action(BlockJob *job, BlockdevOnError on_err,
                                        bool is_read, int error) TSA_EXCLUDES(job_mutex);

#endif /* BLOCKD_BLOCKJOB_H */
