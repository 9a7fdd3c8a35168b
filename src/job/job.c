/*
 * job.c - the job object: state machine, creation, the coroutine, pause
 * points, sleeping, waking, progress and events.
 *
 * Completion, transactions, cancellation and the user verbs are in
 * job-complete.c.  See ../../shared/spec/jobs.md (sections 2-6) for the
 * normative behaviour; QAPI names are kept for qemu-storage-daemon
 * compatibility.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/aio-wait.h"
#include "blockd/main-loop.h"
#include "job-internal.h"

BdMutex job_mutex;

/* Every job, newest first. */
static ListNode job_list TSA_GUARDED_BY(job_mutex) = LIST_INIT_STATIC(job_list);

static JobEventSink *event_sink TSA_GUARDED_BY(job_mutex);

__attribute__((constructor)) static void job_mutex_init(void)
{
    bd_mutex_init(&job_mutex);
}

void job_lock(void)
{
    bd_mutex_lock(&job_mutex);
}

void job_unlock(void)
{
    bd_mutex_unlock(&job_mutex);
}

/* ---- Names and tables ------------------------------------------------------ */

static const char *const status_names[JOB_STATUS__MAX] = {
    "undefined", "created", "running", "paused", "ready", "standby",
    "waiting", "pending", "aborting", "concluded", "null",
};

static const char *const verb_names[JOB_VERB__MAX] = {
    "cancel", "pause", "resume", "set-speed", "complete", "finalize",
    "dismiss", "change",
};

static const char *const type_names[JOB_TYPE__MAX] = {
    "commit", "stream", "mirror", "backup", "create", "amend",
};

const char *job_status_str(JobStatus s)
{
    return s < JOB_STATUS__MAX ? status_names[s] : "invalid";
}

const char *job_verb_str(JobVerb v)
{
    return v < JOB_VERB__MAX ? verb_names[v] : "invalid";
}

const char *job_type_str(JobType t)
{
    return t < JOB_TYPE__MAX ? type_names[t] : "invalid";
}

/* The only legal transitions: transition_ok[from][to]. */
enum { U = JOB_STATUS_UNDEFINED, C = JOB_STATUS_CREATED, R = JOB_STATUS_RUNNING,
       P = JOB_STATUS_PAUSED, Y = JOB_STATUS_READY, S = JOB_STATUS_STANDBY,
       W = JOB_STATUS_WAITING, D = JOB_STATUS_PENDING, X = JOB_STATUS_ABORTING,
       E = JOB_STATUS_CONCLUDED, N = JOB_STATUS_NULL };

static const bool transition_ok[JOB_STATUS__MAX][JOB_STATUS__MAX] = {
    [U] = { [C] = 1 },
    [C] = { [R] = 1, [X] = 1, [N] = 1 },
    [R] = { [P] = 1, [Y] = 1, [W] = 1, [X] = 1 },
    [P] = { [R] = 1 },
    [Y] = { [S] = 1, [W] = 1, [X] = 1 },
    [S] = { [Y] = 1 },
    [W] = { [D] = 1, [X] = 1 },
    [D] = { [X] = 1, [E] = 1 },
    [X] = { [X] = 1, [E] = 1 },
    [E] = { [N] = 1 },
};

/* Which statuses accept each user verb: verb_ok[verb][status]. */
static const bool verb_ok[JOB_VERB__MAX][JOB_STATUS__MAX] = {
    [JOB_VERB_CANCEL]    = { [C] = 1, [R] = 1, [P] = 1, [Y] = 1, [S] = 1, [W] = 1, [D] = 1 },
    [JOB_VERB_PAUSE]     = { [C] = 1, [R] = 1, [P] = 1, [Y] = 1, [S] = 1 },
    [JOB_VERB_RESUME]    = { [C] = 1, [R] = 1, [P] = 1, [Y] = 1, [S] = 1 },
    [JOB_VERB_SET_SPEED] = { [C] = 1, [R] = 1, [P] = 1, [Y] = 1, [S] = 1 },
    [JOB_VERB_COMPLETE]  = { [Y] = 1, [S] = 1 },
    [JOB_VERB_FINALIZE]  = { [D] = 1 },
    [JOB_VERB_DISMISS]   = { [E] = 1 },
    [JOB_VERB_CHANGE]    = { [C] = 1, [R] = 1, [P] = 1, [Y] = 1, [S] = 1 },
};

bool job_status_is_completed(JobStatus s)
{
    return s >= JOB_STATUS_WAITING && s <= JOB_STATUS_NULL;
}

bool job_status_is_ready(JobStatus s)
{
    return s == JOB_STATUS_READY || s == JOB_STATUS_STANDBY;
}

/* ---- Events ------------------------------------------------------------------ */

void job_set_event_sink(JobEventSink *sink)
{
    job_lock();
    event_sink = sink;
    job_unlock();
}

void job_emit_event(const char *name, json_object *data)
{
    if (event_sink) {
        event_sink(name, data);
    } else {
        json_object_put(data);
    }
}

void job_notify_locked(Job *job, JobEvent ev)
{
    if (!job->internal && job->on_event) {
        job->on_event(job, ev);
    }
}

void job_state_transition_locked(Job *job, JobStatus s1)
{
    JobStatus s0 = job->status;
    json_object *data;

    assert(s1 < JOB_STATUS__MAX);
    if (!transition_ok[s0][s1]) {
        fprintf(stderr, "job '%s': illegal transition %s -> %s\n",
                job->id ? job->id : "(internal)", job_status_str(s0), job_status_str(s1));
        abort();
    }
    job->status = s1;
    if (job->internal || s0 == s1) {
        return;
    }
    data = json_object_new_object();
    json_object_object_add(data, "id", json_object_new_string(job->id));
    json_object_object_add(data, "status", json_object_new_string(job_status_str(s1)));
    job_emit_event("JOB_STATUS_CHANGE", data);
}

int job_apply_verb_locked(Job *job, JobVerb verb, Error **errp)
{
    assert(verb < JOB_VERB__MAX);
    if (verb_ok[verb][job->status]) {
        return 0;
    }
    error_setg(errp, "Job '%s' in state '%s' cannot accept command verb '%s'",
               job->id ? job->id : "", job_status_str(job->status), job_verb_str(verb));
    return -EPERM;
}

/* ---- Predicates ---------------------------------------------------------- */

bool job_is_completed_locked(Job *job)
{
    return job_status_is_completed(job->status);
}

bool job_is_ready_locked(Job *job)
{
    return job_status_is_ready(job->status);
}

bool job_is_cancelled_locked(Job *job)
{
    /* A soft cancel (ready mirror) does not stop the job's I/O. */
    assert(job->cancelled || !job->force_cancel);
    return job->force_cancel;
}

bool job_cancel_requested_locked(Job *job)
{
    return job->cancelled;
}

bool job_user_paused_locked(Job *job)
{
    return job->user_paused;
}

#define JOB_LOCKED_GETTER(name, expr)                   \
    bool name(Job *job)                                 \
    {                                                   \
        bool r;                                         \
        job_lock();                                     \
        r = (expr);                                     \
        job_unlock();                                   \
        return r;                                       \
    }

JOB_LOCKED_GETTER(job_is_cancelled, job_is_cancelled_locked(job))
JOB_LOCKED_GETTER(job_cancel_requested, job_cancel_requested_locked(job))
JOB_LOCKED_GETTER(job_is_ready, job_is_ready_locked(job))
JOB_LOCKED_GETTER(job_is_completed, job_is_completed_locked(job))
JOB_LOCKED_GETTER(job_is_paused, job->paused)

JobStatus job_get_status(Job *job)
{
    JobStatus s;

    job_lock();
    s = job->status;
    job_unlock();
    return s;
}

/* ---- The job list and references ------------------------------------------ */

Job *job_get_locked(const char *id)
{
    list_for_each(n, &job_list) {
        Job *job = list_entry(n, Job, list_node);
        if (job->id && !strcmp(job->id, id)) {
            return job;
        }
    }
    return NULL;
}

Job *job_next_locked(Job *job)
{
    ListNode *n = job ? job->list_node.next : job_list.next;

    return n == &job_list ? NULL : list_entry(n, Job, list_node);
}

void job_ref_locked(Job *job)
{
    job->refcnt++;
}

void job_ref(Job *job)
{
    job_lock();
    job_ref_locked(job);
    job_unlock();
}

void job_unref_locked(Job *job)
{
    GLOBAL_STATE_CODE();
    assert(job->refcnt > 0);
    if (--job->refcnt > 0) {
        return;
    }
    assert(job->status == JOB_STATUS_NULL);
    assert(!job->txn);
    assert(!timer_pending(job->sleep_timer));
    if (job->driver->free) {
        job_unlock();
        job->driver->free(job);
        job_lock();
    }
    list_del(&job->list_node);
    error_free(job->err);
    timer_free(job->sleep_timer);
    bd_mutex_destroy(&job->progress.lock);
    free(job->id);
    free(job);
}

void job_unref(Job *job)
{
    job_lock();
    job_unref_locked(job);
    job_unlock();
}

/* ---- Creation and start ------------------------------------------------------ */

/* A letter, then letters, digits, '-', '.' and '_'. */
static bool job_id_wellformed(const char *id)
{
    if (!((*id >= 'a' && *id <= 'z') || (*id >= 'A' && *id <= 'Z'))) {
        return false;
    }
    for (const char *p = id + 1; *p; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              (*p >= '0' && *p <= '9') || *p == '-' || *p == '.' || *p == '_')) {
            return false;
        }
    }
    return true;
}

static bool job_check_id_locked(const char *id, int flags, Error **errp)
    TSA_REQUIRES(job_mutex)
{
    if (!id) {
        if (!(flags & JOB_INTERNAL)) {
            error_setg(errp, "An explicit job ID is required");
            return false;
        }
        return true;
    }
    if (flags & JOB_INTERNAL) {
        error_setg(errp, "Cannot specify job ID for internal job");
        return false;
    }
    if (!job_id_wellformed(id)) {
        error_setg(errp, "Invalid job ID '%s'", id);
        return false;
    }
    if (job_get_locked(id)) {
        error_setg(errp, "Job ID '%s' already in use", id);
        return false;
    }
    return true;
}

bool job_check_id(const char *id, int flags, Error **errp)
{
    bool ok;

    job_lock();
    ok = job_check_id_locked(id, flags, errp);
    job_unlock();
    return ok;
}

static void job_sleep_timer_cb(void *opaque)
{
    Job *job = opaque;

    job_lock();
    job->sleeping = false;
    job_unlock();
    job_enter(job);
}

void *job_create(const char *id, const JobDriver *driver, JobTxn *txn,
                 AioContext *ctx, int flags, JobCompletionFunc *cb,
                 void *opaque, Error **errp)
{
    /* A job without a transaction gets its own (made before locking:
     * job_txn_new takes job_mutex). */
    JobTxn *own = txn ? NULL : job_txn_new();
    Job *job;

    GLOBAL_STATE_CODE();
    assert(driver->instance_size >= sizeof(Job));
    job_lock();
    if (!job_check_id_locked(id, flags, errp)) {
        job_txn_unref_locked(own);
        job_unlock();
        return NULL;
    }
    job = calloc(1, driver->instance_size);
    if (!job || (id && !(job->id = strdup(id)))) {
        abort();
    }
    job->driver = driver;
    job->internal = flags & JOB_INTERNAL;
    job->auto_finalize = !(flags & JOB_MANUAL_FINALIZE);
    job->auto_dismiss = !(flags & JOB_MANUAL_DISMISS);
    job->cb = cb;
    job->opaque = opaque;
    job->aio_context = ctx;
    bd_mutex_init(&job->progress.lock);
    job->sleep_timer = aio_timer_new(main_aio_context(), job_sleep_timer_cb, job);

    job->refcnt = 1;
    job->busy = false;
    job->paused = true;
    job->pause_count = 1;          /* "not started yet" */
    list_init(&job->txn_node);
    job_state_transition_locked(job, JOB_STATUS_CREATED);
    list_add_head(&job_list, &job->list_node);

    job_txn_add_job_locked(txn ? txn : own, job);
    job_txn_unref_locked(own);
    job_unlock();
    return job;
}

/* The body of every job's coroutine. */
static void job_exit(void *opaque);

static void coroutine_fn job_co_entry(void *opaque)
{
    Job *job = opaque;
    Error *err = NULL;
    int ret;

    job_lock();
    assert(job->aio_context == current_aio_context());
    job_unlock();
    job_pause_point(job);
    ret = job->driver->run(job, &err);

    job_lock();
    job->ret = ret;
    if (err && !job->err) {
        job->err = err;
        err = NULL;
    }
    job->deferred_to_main_loop = true;
    job->busy = true;
    job_unlock();
    error_free(err);
    aio_bh_schedule_oneshot(main_aio_context(), job_exit, job);
}

void job_start(Job *job)
{
    Coroutine *co;

    GLOBAL_STATE_CODE();
    assert(job->driver->run);
    co = coroutine_create(job_co_entry, job);
    job_lock();
    assert(!job->started && job->paused && job->status == JOB_STATUS_CREATED);
    job->co = co;
    job->started = true;
    job->pause_count--;
    job->busy = true;
    job->paused = false;
    job_state_transition_locked(job, JOB_STATUS_RUNNING);
    job_unlock();
    aio_co_enter(job->aio_context, co);
}

/* Exit BH, main loop: see jobs.md 4.4. */
static void job_exit(void *opaque)
{
    Job *job = opaque;

    job_lock();
    job_ref_locked(job);
    /* Not busy any more: drain must not wait for us while we complete. */
    job->busy = false;
    job_event_idle_locked(job);
    job_completed_locked(job);
    job_unref_locked(job);
    job_unlock();
}

void job_early_fail(Job *job)
{
    GLOBAL_STATE_CODE();
    job_lock();
    assert(job->status == JOB_STATUS_CREATED);
    job_do_dismiss_locked(job);
    job_unlock();
}

/* ---- Parking and waking -------------------------------------------------------- */

void job_event_idle_locked(Job *job)
{
    (void)job;
    aio_wait_kick();
}

void job_enter_cond_locked(Job *job, bool (*fn)(Job *job))
{
    Coroutine *co;

    if (!job->started || job->deferred_to_main_loop || job->busy) {
        return;
    }
    if (fn && !fn(job)) {
        return;
    }
    timer_del(job->sleep_timer);
    job->sleeping = false;
    job->busy = true;
    co = job->co;
    job_unlock();
    /*
     * Scheduled, never entered from here: the caller may be a drained
     * section or a graph change, where running job code now would nest
     * inside it.  The parked coroutine is not scheduled (busy was false),
     * so this is its one wake-up.
     *
     * Into the context the coroutine last ran in, not job->aio_context:
     * the coroutine clears busy before it yields, so it may still be on
     * its way to yield there.  Its home thread runs the wake-up only after
     * the yield; if the job has moved meanwhile, job_do_yield_locked()
     * follows it from there.
     */
    aio_co_schedule(coroutine_get_ctx(co), co);
    job_lock();
}

void job_enter(Job *job)
{
    job_lock();
    job_enter_cond_locked(job, NULL);
    job_unlock();
}

/*
 * Park the coroutine until job_enter() (or the timer at @deadline_ns, if
 * not -1).  Returns with job_mutex held, in the job's current context.
 */
static void coroutine_fn job_do_yield_locked(Job *job, int64_t deadline_ns)
    TSA_REQUIRES(job_mutex)
{
    AioContext *ctx;

    if (deadline_ns != -1) {
        job->sleeping = true;
        timer_mod(job->sleep_timer, deadline_ns);
    }
    job->busy = false;
    job_event_idle_locked(job);
    job_unlock();
    coroutine_yield();
    job_lock();

    /* The job may have moved to another thread while parked. */
    while ((ctx = job->aio_context) != current_aio_context()) {
        job_unlock();
        aio_co_reschedule_self(ctx);
        job_lock();
    }
    assert(job->busy);
}

static bool job_should_pause_locked(Job *job) TSA_REQUIRES(job_mutex)
{
    return job->pause_count > 0;
}

void coroutine_fn job_pause_point(Job *job)
{
    JobStatus status;

    job_lock();
    assert(job->busy);
    if (!job_should_pause_locked(job) || job_is_cancelled_locked(job)) {
        job_unlock();
        return;
    }
    job_unlock();
    if (job->driver->pause) {
        job->driver->pause(job);
    }
    job_lock();
    if (job_should_pause_locked(job) && !job_is_cancelled_locked(job)) {
        status = job->status;
        job_state_transition_locked(job, status == JOB_STATUS_READY ? JOB_STATUS_STANDBY
                                                                     : JOB_STATUS_PAUSED);
        job->paused = true;
        job_do_yield_locked(job, -1);
        job->paused = false;
        job_state_transition_locked(job, status);
    }
    job_unlock();
    if (job->driver->resume) {
        job->driver->resume(job);
    }
}

void coroutine_fn job_yield(Job *job)
{
    job_lock();
    assert(job->busy);
    if (job_is_cancelled_locked(job)) {
        job_unlock();
        return;
    }
    if (!job_should_pause_locked(job)) {
        job_do_yield_locked(job, -1);
    }
    job_unlock();
    job_pause_point(job);
}

void coroutine_fn job_sleep_ns(Job *job, int64_t ns)
{
    job_lock();
    assert(job->busy);
    if (job_is_cancelled_locked(job)) {
        job_unlock();
        return;
    }
    if (!job_should_pause_locked(job)) {
        job_do_yield_locked(job, clock_now_ns() + ns);
    }
    job_unlock();
    job_pause_point(job);
}

void job_transition_to_ready(Job *job)
{
    job_lock();
    job_state_transition_locked(job, JOB_STATUS_READY);
    job_notify_locked(job, JOB_EVENT_READY);
    job_unlock();
}

/* ---- Pausing ------------------------------------------------------------------ */

void job_pause_locked(Job *job)
{
    job->pause_count++;
    /* Make a running or sleeping job reach its next pause point. */
    if (!job->paused) {
        job_enter_cond_locked(job, NULL);
    }
}

static bool job_timer_not_pending_locked(Job *job) TSA_REQUIRES(job_mutex)
{
    return !job->sleeping;
}

void job_resume_locked(Job *job)
{
    assert(job->pause_count > 0);
    if (--job->pause_count > 0) {
        return;
    }
    /* A sleeper keeps sleeping; a parked pause point wakes up. */
    job_enter_cond_locked(job, job_timer_not_pending_locked);
}

void job_pause(Job *job)
{
    job_lock();
    job_pause_locked(job);
    job_unlock();
}

void job_resume(Job *job)
{
    job_lock();
    job_resume_locked(job);
    job_unlock();
}

bool job_uses_aio_context_locked(Job *job, AioContext *ctx)
{
    if (job->status == JOB_STATUS_NULL) {
        return false;
    }
    if (job->aio_context == ctx) {
        return true;
    }
    /* A parked coroutine is woken where it last ran, and only then follows
     * the job to its new context; it is alive until deferred_to_main_loop. */
    return job->started && !job->deferred_to_main_loop && coroutine_get_ctx(job->co) == ctx;
}

void job_set_aio_context_locked(Job *job, AioContext *ctx)
{
    GLOBAL_STATE_CODE();
    assert(job->paused || job_is_completed_locked(job) || !job->started);
    job->aio_context = ctx;
}

void job_set_aio_context(Job *job, AioContext *ctx)
{
    job_lock();
    job_set_aio_context_locked(job, ctx);
    job_unlock();
}

/* ---- Progress ------------------------------------------------------------------ */

void job_progress_update(Job *job, uint64_t done)
{
    bd_mutex_lock(&job->progress.lock);
    job->progress.current += done;
    bd_mutex_unlock(&job->progress.lock);
}

void job_progress_set_remaining(Job *job, uint64_t remaining)
{
    bd_mutex_lock(&job->progress.lock);
    job->progress.total = job->progress.current + remaining;
    bd_mutex_unlock(&job->progress.lock);
}

void job_progress_increase_remaining(Job *job, uint64_t delta)
{
    bd_mutex_lock(&job->progress.lock);
    job->progress.total += delta;
    bd_mutex_unlock(&job->progress.lock);
}

void job_progress_get(Job *job, uint64_t *current, uint64_t *total)
{
    bd_mutex_lock(&job->progress.lock);
    *current = job->progress.current;
    *total = job->progress.total;
    bd_mutex_unlock(&job->progress.lock);
}

json_object *job_query_locked(Job *job)
{
    json_object *info = json_object_new_object();
    uint64_t cur, total;

    job_progress_get(job, &cur, &total);
    json_object_object_add(info, "id", json_object_new_string(job->id));
    json_object_object_add(info, "type",
                           json_object_new_string(job_type_str(job->driver->job_type)));
    json_object_object_add(info, "status",
                           json_object_new_string(job_status_str(job->status)));
    json_object_object_add(info, "current-progress", json_object_new_int64(cur));
    json_object_object_add(info, "total-progress", json_object_new_int64(total));
    if (job->err) {
        json_object_object_add(info, "error",
                               json_object_new_string(error_get_pretty(job->err)));
    }
    return info;
}

void job_keep_error(Job *job, Error *err)
{
    GLOBAL_STATE_CODE();
    job_lock();
    if (!job->err) {
        job->err = err;
        err = NULL;
    }
    job_unlock();
    error_free(err);
}
