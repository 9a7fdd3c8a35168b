/*
 * job-test-util.h - a configurable test job (plain or block job) and an
 * event recorder, shared by test-job.c and test-job-txn.c.
 *
 * The job's run() loops: at the top of every iteration it checks for
 * cancellation, failure, readiness and completion, then reports work
 * (progress and the speed limit) and waits with job_sleep_ns(),
 * job_yield() or job_pause_point().  Everything it observes goes into a
 * TJState that outlives the job (the job's opaque), so the test can check
 * after the job is freed that every callback ran exactly once.
 */
#ifndef BLOCKD_JOB_TEST_UTIL_H
#define BLOCKD_JOB_TEST_UTIL_H

#include <errno.h>
#include <string.h>

#include "block-test-util.h"

#include "blockd/blockjob.h"
#include "blockd/graph-lock.h"

/* Not every user of this header needs every helper. */
#define JT_UNUSED __attribute__((unused))

/* ---- Event recorder ------------------------------------------------------- */

#define JT_MAX_EVENTS 4096

static BdMutex jt_ev_lock;
static char *jt_events[JT_MAX_EVENTS];
static int jt_nevents;

static JT_UNUSED const char *jt_str(json_object *o, const char *key)
{
    json_object *v;

    return json_object_object_get_ex(o, key, &v) ? json_object_get_string(v) : "?";
}

/*
 * One line per event: "<id> JSC <status>", "<id> BLOCK_JOB_COMPLETED",
 * "<id> BLOCK_JOB_COMPLETED error=<text>", "<id> BLOCK_JOB_ERROR <op>
 * <action>", "<id> <NAME>" for the others.  Called with job_mutex held,
 * possibly in an iothread.
 */
static JT_UNUSED void jt_sink(const char *name, json_object *data)
{
    char buf[512];
    json_object *v;
    const char *id = json_object_object_get_ex(data, "id", &v) ? json_object_get_string(v)
                                                                : jt_str(data, "device");

    if (!strcmp(name, "JOB_STATUS_CHANGE")) {
        snprintf(buf, sizeof(buf), "%s JSC %s", id, jt_str(data, "status"));
    } else if (!strcmp(name, "BLOCK_JOB_COMPLETED") &&
               json_object_object_get_ex(data, "error", &v)) {
        snprintf(buf, sizeof(buf), "%s %s error=%s", id, name, json_object_get_string(v));
    } else if (!strcmp(name, "BLOCK_JOB_ERROR")) {
        snprintf(buf, sizeof(buf), "%s %s %s %s", id, name, jt_str(data, "operation"),
                 jt_str(data, "action"));
    } else {
        snprintf(buf, sizeof(buf), "%s %s", id, name);
    }
    json_object_put(data);
    bd_mutex_lock(&jt_ev_lock);
    if (jt_nevents < JT_MAX_EVENTS) {
        jt_events[jt_nevents++] = strdup(buf);
    }
    bd_mutex_unlock(&jt_ev_lock);
}

static JT_UNUSED void jt_events_reset(void)
{
    bd_mutex_lock(&jt_ev_lock);
    for (int i = 0; i < jt_nevents; i++) {
        free(jt_events[i]);
    }
    jt_nevents = 0;
    bd_mutex_unlock(&jt_ev_lock);
}

/* The events of job @id so far, without the id, joined by ", ". */
static JT_UNUSED char *jt_events_of(const char *id)
{
    size_t idlen = strlen(id), cap = 64, len = 0;
    char *out = malloc(cap);

    if (!out) {
        abort();
    }
    out[0] = 0;
    bd_mutex_lock(&jt_ev_lock);
    for (int i = 0; i < jt_nevents; i++) {
        const char *e = jt_events[i];
        if (strncmp(e, id, idlen) || e[idlen] != ' ') {
            continue;
        }
        e += idlen + 1;
        while (len + strlen(e) + 3 >= cap) {
            cap *= 2;
            out = realloc(out, cap);
            if (!out) {
                abort();
            }
        }
        len += sprintf(out + len, "%s%s", len ? ", " : "", e);
    }
    bd_mutex_unlock(&jt_ev_lock);
    return out;
}

/* Assert that the events of @id are exactly @want. */
#define jt_expect_events(id, want) do {                                      \
        char *got_ = jt_events_of(id);                                       \
        if (strcmp(got_, (want))) {                                          \
            fprintf(stderr, "events of %s:\n  got:  %s\n  want: %s\n",       \
                    (id), got_, (want));                                     \
        }                                                                    \
        assert_string_equal(got_, (want));                                   \
        free(got_);                                                          \
    } while (0)

/* Assert that the events of @id end with @want. */
#define jt_expect_events_tail(id, want) do {                                 \
        char *got_ = jt_events_of(id);                                       \
        size_t gl_ = strlen(got_), wl_ = strlen(want);                       \
        bool ok_ = gl_ >= wl_ && !strcmp(got_ + gl_ - wl_, (want));          \
        if (!ok_) {                                                          \
            fprintf(stderr, "events of %s:\n  got:  %s\n  want: ...%s\n",   \
                    (id), got_, (want));                                     \
        }                                                                    \
        assert_true(ok_);                                                    \
        free(got_);                                                          \
    } while (0)

/* ---- The test job ------------------------------------------------------------ */

enum { TJ_SLEEP, TJ_YIELD, TJ_PAUSE_POINT };

typedef struct TJState {
    /* Configuration: set before job_start. */
    const char *name;
    int wait_mode;              /* TJ_SLEEP (default), TJ_YIELD, TJ_PAUSE_POINT */
    int64_t sleep_ns;           /* TJ_SLEEP: per iteration (default 1 ms) */
    int iterations;             /* finish with 0 after this many; <0: never */
    int fail_at;                /* return -EIO at this iteration; <0: never */
    int ready_after;            /* "ready" at this iteration, then wait for
                                 * complete (or a soft cancel); <0: never */
    uint64_t bytes_per_iter;    /* block jobs: progress + speed limit */
    int prepare_ret;            /* what prepare() returns */
    bool soft_cancel;           /* driver cancel(): soft once ready */
    BlockDriverState *graph_bs; /* callbacks drain + attach/detach on it and
                                 * take the graph write lock */
    int err_at;                 /* block_job_error_action at this iteration */
    BlockdevOnError err_policy;
    int err_errno;
    bool err_is_read;
    bool check_in_abort;        /* abort(): run jt_abort_hook */

    /* Control from the main thread (atomic). */
    unsigned stop;              /* finish with 0 */
    unsigned complete_req;      /* set by complete() */

    /* Observed (atomic where the coroutine writes). */
    unsigned runs, iters, ready, pauses, resumes;
    int err_action;             /* returned by block_job_error_action, or -1 */
    int prepare, commit, abort, clean, freed, cb, cb_ret;
    char order[16];             /* P prepare, C commit, A abort, L clean, B cb, F free */
    Job *job;
} TJState;

typedef struct TestJob {
    BlockJob common;            /* plain jobs only use common.job */
} TestJob;

static JT_UNUSED TJState *tj_state(Job *job)
{
    return job->opaque;
}

/* A global log of callbacks of all jobs, "<name>:<letter>" in order. */
static char jt_cblog[4096];

static JT_UNUSED void tj_log(TJState *s, char c)
{
    size_t n = strlen(s->order);
    size_t l = strlen(jt_cblog);

    if (n + 1 < sizeof(s->order)) {
        s->order[n] = c;
        s->order[n + 1] = 0;
    }
    snprintf(jt_cblog + l, sizeof(jt_cblog) - l, "%s%s:%c", l ? " " : "",
             s->name ? s->name : "?", c);
}

static JT_UNUSED void (*jt_abort_hook)(Job *job);

/* What the graph-changing callbacks do. */
static JT_UNUSED void tj_user_drained(BdrvChild *c) { (void)c; }
static JT_UNUSED bool tj_user_poll(BdrvChild *c) { (void)c; return false; }
static JT_UNUSED char *tj_user_desc(BdrvChild *c)
{
    (void)c;
    return strdup("test job callback");
}

static const BdrvChildClass tj_user_class = {
    .drained_begin = tj_user_drained,
    .drained_end = tj_user_drained,
    .drained_poll = tj_user_poll,
    .get_parent_desc = tj_user_desc,
};

static JT_UNUSED void tj_graph_work(TJState *s)
{
    BdrvChild *c;

    if (!s->graph_bs) {
        return;
    }
    graph_wrlock();
    graph_wrunlock();
    bdrv_drained_begin(s->graph_bs);
    c = bdrv_root_attach_child(s->graph_bs, "cb", &tj_user_class, 0,
                               BLK_PERM_CONSISTENT_READ, BLK_PERM_ALL, s, &error_abort);
    bdrv_drained_end(s->graph_bs);
    bdrv_drain_all_begin();
    bdrv_root_unref_child(c);
    bdrv_drain_all_end();
}

static JT_UNUSED int coroutine_fn tj_run(Job *job, Error **errp)
{
    TJState *s = tj_state(job);
    BlockJob *bj = (BlockJob *)job;
    bool ready = false;

    (void)errp;
    atomic_inc(&s->runs);
    for (int i = 0;; i++) {
        if (job_is_cancelled(job)) {
            break;
        }
        if (i == s->fail_at) {
            return -EIO;
        }
        if (s->iterations >= 0 && i >= s->iterations) {
            break;
        }
        if (i == s->ready_after) {
            job_transition_to_ready(job);
            ready = true;
            atomic_set(&s->ready, 1);
        }
        if (ready && (atomic_read(&s->complete_req) || job_cancel_requested(job))) {
            break;
        }
        if (atomic_read(&s->stop)) {
            break;
        }
        if (i == s->err_at) {
            atomic_set(&s->err_action,
                       block_job_error_action(bj, s->err_policy, s->err_is_read,
                                              s->err_errno));
        }
        if (s->bytes_per_iter) {
            job_progress_update(job, s->bytes_per_iter);
            block_job_ratelimit_processed_bytes(bj, s->bytes_per_iter);
            block_job_ratelimit_sleep(bj);
        }
        switch (s->wait_mode) {
        case TJ_YIELD:
            job_yield(job);
            break;
        case TJ_PAUSE_POINT:
            job_pause_point(job);
            break;
        default:
            job_sleep_ns(job, s->sleep_ns);
            break;
        }
        atomic_inc(&s->iters);
    }
    return 0;
}

static JT_UNUSED void coroutine_fn tj_pause(Job *job)
{
    atomic_inc(&tj_state(job)->pauses);
}

static JT_UNUSED void coroutine_fn tj_resume(Job *job)
{
    atomic_inc(&tj_state(job)->resumes);
}

static JT_UNUSED void tj_complete(Job *job, Error **errp)
{
    TJState *s = tj_state(job);

    (void)errp;
    atomic_set(&s->complete_req, 1);
    /* Like mirror: a parked job notices only when resumed. */
    if (!job_is_paused(job)) {
        job_enter(job);
    }
}

static JT_UNUSED int tj_prepare(Job *job)
{
    TJState *s = tj_state(job);

    s->prepare++;
    tj_log(s, 'P');
    tj_graph_work(s);
    return s->prepare_ret;
}

static JT_UNUSED void tj_commit(Job *job)
{
    TJState *s = tj_state(job);

    s->commit++;
    tj_log(s, 'C');
    tj_graph_work(s);
}

static JT_UNUSED void tj_abort(Job *job)
{
    TJState *s = tj_state(job);

    s->abort++;
    tj_log(s, 'A');
    if (s->check_in_abort && jt_abort_hook) {
        jt_abort_hook(job);
    }
    tj_graph_work(s);
}

static JT_UNUSED void tj_clean(Job *job)
{
    TJState *s = tj_state(job);

    s->clean++;
    tj_log(s, 'L');
    tj_graph_work(s);
}

static JT_UNUSED bool tj_cancel(Job *job, bool force)
{
    TJState *s = tj_state(job);

    return force || !s->soft_cancel || !job_is_ready(job);
}

static JT_UNUSED void tj_free(Job *job)
{
    TJState *s = tj_state(job);

    if (job_is_block_job(job)) {
        block_job_free(job);
    }
    s->freed++;
    tj_log(s, 'F');
}

static JT_UNUSED void tj_cb(void *opaque, int ret)
{
    TJState *s = opaque;

    s->cb++;
    s->cb_ret = ret;
    tj_log(s, 'B');
}

#define TJ_CALLBACKS                                 \
    .instance_size = sizeof(TestJob),                \
    .run = tj_run,                                   \
    .pause = tj_pause,                               \
    .resume = tj_resume,                             \
    .complete = tj_complete,                         \
    .prepare = tj_prepare,                           \
    .commit = tj_commit,                             \
    .abort = tj_abort,                               \
    .clean = tj_clean,                               \
    .cancel = tj_cancel,                             \
    .free = tj_free

static const JobDriver tj_driver = {
    TJ_CALLBACKS,
    .job_type = JOB_TYPE_CREATE,
};

static const BlockJobDriver tj_block_driver = {
    .job_driver = {
        TJ_CALLBACKS,
        .job_type = JOB_TYPE_BACKUP,
        .is_block_job = true,
        .user_resume = block_job_user_resume,
    },
};

static JT_UNUSED void tj_init(TJState *s, const char *name)
{
    memset(s, 0, sizeof(*s));
    s->name = name;
    s->sleep_ns = 1 * TU_MS;
    s->iterations = -1;
    s->fail_at = -1;
    s->ready_after = -1;
    s->err_at = -1;
    s->err_action = -1;
}

/* A plain job in @ctx (NULL: main). */
static JT_UNUSED Job *tj_create(TJState *s, int flags, JobTxn *txn, AioContext *ctx,
                                Error **errp)
{
    Job *job = job_create(s->name, &tj_driver, txn, ctx ? ctx : main_aio_context(), flags,
                          tj_cb, s, errp);
    s->job = job;
    return job;
}

/* A block job on @bs; @ctx (non-NULL) moves the job (not the node) to
 * another context before it starts. */
static JT_UNUSED BlockJob *tj_block_create(TJState *s, const char *id, BlockDriverState *bs,
                                 int flags, JobTxn *txn, int64_t speed, AioContext *ctx,
                                 Error **errp)
{
    BlockJob *job = block_job_create(id, &tj_block_driver, txn, bs, BLK_PERM_CONSISTENT_READ,
                                     BLK_PERM_ALL, speed, flags, tj_cb, s, errp);
    s->job = job ? &job->job : NULL;
    if (job && ctx) {
        job_set_aio_context(&job->job, ctx);
    }
    return job;
}

static JT_UNUSED BlockDriverState *jt_open_null(const char *name)
{
    json_object *opts = json_object_new_object();
    BlockDriverState *bs;

    json_object_object_add(opts, "size", json_object_new_int64(1 << 20));
    bs = bdrv_open_driver(bdrv_find_driver("null-co"), name, opts, BDRV_O_RDWR,
                          &error_abort);
    json_object_put(opts);
    return bs;
}

static JT_UNUSED bool jt_wait_status(Job *job, JobStatus st, int ms)
{
    return TU_POLL_UNTIL(job_get_status(job) == st, ms);
}

/* Parked in a sleep (timer armed). */
static JT_UNUSED bool jt_sleeping(Job *job)
{
    bool r;

    job_lock();
    r = job->sleeping && !job->busy;
    job_unlock();
    return r;
}

static JT_UNUSED int jt_job_count(void)
{
    int n = 0;

    job_lock();
    for (Job *j = job_next_locked(NULL); j; j = job_next_locked(j)) {
        n++;
    }
    job_unlock();
    return n;
}

/* Exactly one of commit/abort, then clean, then cb, then free. */
static JT_UNUSED void jt_assert_finished(TJState *s, bool committed, int ret)
{
    char want[8];

    snprintf(want, sizeof(want), "%s%cLBF", s->prepare ? "P" : "", committed ? 'C' : 'A');
    if (strcmp(s->order, want)) {
        fprintf(stderr, "job %s: callbacks %s, want %s\n", s->name, s->order, want);
    }
    assert_string_equal(s->order, want);
    assert_int_equal(s->cb_ret, ret);
}

static JT_UNUSED int jt_setup(void **state)
{
    static bool inited;

    bt_setup(state);
    if (!inited) {
        bd_mutex_init(&jt_ev_lock);
        inited = true;
    }
    jt_events_reset();
    jt_cblog[0] = 0;
    jt_abort_hook = NULL;
    job_set_event_sink(jt_sink);
    return 0;
}

static JT_UNUSED int jt_teardown(void **state)
{
    int n = jt_job_count();

    job_set_event_sink(NULL);
    jt_events_reset();
    tu_drain_main();
    tu_teardown(state);
    if (n) {
        fprintf(stderr, "%d jobs left behind\n", n);
        return -1;
    }
    return 0;
}

#define JT_TEST(fn) cmocka_unit_test_setup_teardown(fn, jt_setup, jt_teardown)

#endif /* BLOCKD_JOB_TEST_UTIL_H */
