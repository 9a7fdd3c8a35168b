/*
 * job-common.h - the Job object, its states, verbs and driver table.
 *
 * Half: common (types and pure helpers).  The functions live in
 * job-monitor.h (caller holds job_mutex, names end in _locked) and
 * job-driver.h (for job implementations; they take job_mutex themselves).
 *
 * Protection of Job fields, as clang checks them:
 *   "immutable"  set before the job is visible to other threads;
 *   "job_mutex"  read and written only with job_mutex held;
 *   "dual"       read with job_mutex or from the main thread, written
 *                with both (aio_context);
 *   "self"       has its own lock (progress).
 * There is no other lock on jobs.
 */
#ifndef BLOCKD_JOB_COMMON_H
#define BLOCKD_JOB_COMMON_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>

#include "blockd/aio.h"
#include "blockd/compiler.h"
#include "blockd/coroutine.h"
#include "blockd/error.h"
#include "blockd/list.h"
#include "blockd/thread.h"

/* The one lock of the job subsystem: every job's state and the job list. */
extern BdMutex job_mutex;

/* Take / drop job_mutex.  Any thread; not recursive. */
void job_lock(void) TSA_ACQUIRE(job_mutex);
void job_unlock(void) TSA_RELEASE(job_mutex);

/* QAPI JobStatus, in QAPI order. */
typedef enum JobStatus {
    JOB_STATUS_UNDEFINED,
    JOB_STATUS_CREATED,
    JOB_STATUS_RUNNING,
    JOB_STATUS_PAUSED,
    JOB_STATUS_READY,
    JOB_STATUS_STANDBY,
    JOB_STATUS_WAITING,
    JOB_STATUS_PENDING,
    JOB_STATUS_ABORTING,
    JOB_STATUS_CONCLUDED,
    JOB_STATUS_NULL,
    JOB_STATUS__MAX,
} JobStatus;

/* QAPI JobVerb. */
typedef enum JobVerb {
    JOB_VERB_CANCEL,
    JOB_VERB_PAUSE,
    JOB_VERB_RESUME,
    JOB_VERB_SET_SPEED,
    JOB_VERB_COMPLETE,
    JOB_VERB_FINALIZE,
    JOB_VERB_DISMISS,
    JOB_VERB_CHANGE,
    JOB_VERB__MAX,
} JobVerb;

/* QAPI JobType. */
typedef enum JobType {
    JOB_TYPE_COMMIT,
    JOB_TYPE_STREAM,
    JOB_TYPE_MIRROR,
    JOB_TYPE_BACKUP,
    JOB_TYPE_CREATE,
    JOB_TYPE_AMEND,
    JOB_TYPE__MAX,
} JobType;

/* Creation flags. */
enum {
    JOB_DEFAULT         = 0,
    JOB_INTERNAL        = 1 << 0,   /* no id, no events, not in queries */
    JOB_MANUAL_FINALIZE = 1 << 1,   /* auto-finalize=false */
    JOB_MANUAL_DISMISS  = 1 << 2,   /* auto-dismiss=false */
};

const char *job_status_str(JobStatus s);
const char *job_verb_str(JobVerb v);
const char *job_type_str(JobType t);

typedef struct Job Job;
typedef struct JobTxn JobTxn;
typedef struct JobDriver JobDriver;

/* The creator's completion callback: main thread, after clean. */
typedef void JobCompletionFunc(void *opaque, int ret);

/*
 * Progress meter: current only grows, total moves either way.  Its own
 * mutex, so a job coroutine in an iothread and a query in the main thread
 * never need job_mutex for it.
 */
typedef struct ProgressMeter {
    BdMutex lock;
    uint64_t current TSA_FIELD_GUARDED_BY(lock);
    uint64_t total TSA_FIELD_GUARDED_BY(lock);
} ProgressMeter;

/*
 * Driver callbacks.  Every one is called WITHOUT job_mutex held (they use
 * the driver API, which takes it, and they drain and poll).  "main" means
 * the main thread; "coroutine" the job's coroutine in its AioContext.
 */
struct JobDriver {
    size_t instance_size;
    JobType job_type;
    bool is_block_job;                 /* BlockJob: BLOCK_JOB_* events */

    int coroutine_fn (*run)(Job *job, Error **errp);       /* coroutine */
    void coroutine_fn (*pause)(Job *job);                  /* coroutine */
    void coroutine_fn (*resume)(Job *job);                 /* coroutine */
    void (*user_resume)(Job *job);                         /* main */
    void (*complete)(Job *job, Error **errp);              /* main */
    int (*prepare)(Job *job);                              /* main */
    void (*commit)(Job *job);                              /* main */
    void (*abort)(Job *job);                               /* main */
    void (*clean)(Job *job);                               /* main */
    /* Returns whether the job stops without further I/O (forced). */
    bool (*cancel)(Job *job, bool force);                  /* main */
    void (*free)(Job *job);                                /* main */
};

/*
 * Events that other layers add to JOB_STATUS_CHANGE (block jobs turn them
 * into BLOCK_JOB_*).  Called WITH job_mutex held; must not call the
 * driver API.
 */
typedef enum JobEvent {
    JOB_EVENT_READY,
    JOB_EVENT_PENDING,
    JOB_EVENT_COMPLETED,
    JOB_EVENT_CANCELLED,
} JobEvent;

struct Job {
    /* ---- immutable after job_create ---- */
    char *id;                           /* NULL for internal jobs */
    const JobDriver *driver;
    bool internal;
    bool auto_finalize;
    bool auto_dismiss;
    JobCompletionFunc *cb;
    void *opaque;
    /* Hook for JobEvent (block jobs); job_mutex held when called. */
    void (*on_event)(Job *job, JobEvent ev);
    /* The pointer is immutable; arming and deleting happen under job_mutex
     * (the timer keeps its own lock, so no field annotation fits). */
    AioTimer *sleep_timer;

    /* ---- set once by job_start, under job_mutex ---- */
    Coroutine *co TSA_GUARDED_BY(job_mutex);

    /* ---- dual: main thread or job_mutex to read, both to write ----
     * (and changed only while the job's nodes are drained); the analysis
     * has no "either of two" capability, so it is not annotated. */
    AioContext *aio_context;

    /* ---- self-locked ---- */
    ProgressMeter progress;

    /* ---- job_mutex ---- */
    int refcnt TSA_GUARDED_BY(job_mutex);
    JobStatus status TSA_GUARDED_BY(job_mutex);
    int pause_count TSA_GUARDED_BY(job_mutex);
    bool busy TSA_GUARDED_BY(job_mutex);
    bool paused TSA_GUARDED_BY(job_mutex);
    bool user_paused TSA_GUARDED_BY(job_mutex);
    bool cancelled TSA_GUARDED_BY(job_mutex);
    bool force_cancel TSA_GUARDED_BY(job_mutex);
    bool started TSA_GUARDED_BY(job_mutex);
    bool deferred_to_main_loop TSA_GUARDED_BY(job_mutex);
    bool sleeping TSA_GUARDED_BY(job_mutex);   /* sleep timer armed */
    int ret TSA_GUARDED_BY(job_mutex);
    Error *err TSA_GUARDED_BY(job_mutex);
    JobTxn *txn TSA_GUARDED_BY(job_mutex);
    ListNode txn_node TSA_GUARDED_BY(job_mutex);
    ListNode list_node TSA_GUARDED_BY(job_mutex);
};

/* Sink for QMP events of jobs ("JOB_STATUS_CHANGE", "BLOCK_JOB_READY"...).
 * Called with job_mutex held, possibly from an iothread; takes ownership
 * of @data.  The monitor installs qmp_event; tests install recorders. */
typedef void JobEventSink(const char *name, json_object *data);
void job_set_event_sink(JobEventSink *sink);
/* Emit through the sink (used by job.c and blockjob.c). */
void job_emit_event(const char *name, json_object *data) TSA_REQUIRES(job_mutex);

/* Pure helpers on a status. */
bool job_status_is_completed(JobStatus s);
bool job_status_is_ready(JobStatus s);

#endif /* BLOCKD_JOB_COMMON_H */
