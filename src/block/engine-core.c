/*
 * engine-core.c - the part of the io_uring and Linux AIO engines that does
 * not depend on the kernel interface, and the thread-pool fallback.
 *
 * Half: I/O.  See engine-core.h for the model and the accounting.
 *
 * Life of a request (all in the submitting thread):
 *   engine_co_submit() puts it on the state's pending list and either
 *   submits now (the batch is full) or defers the submission to the end of
 *   the current defer_call section; the engine's submit() hands pending
 *   requests to the kernel.  The coroutine yields.  The kernel signals the
 *   state's eventfd; the context's fd handler (or busy-polling, through
 *   engine_poll) then has the engine reap every ready completion, which
 *   engine_req_done() turns into a result or a continuation, and wakes the
 *   coroutine with aio_co_wake(), which enters it directly because it
 *   belongs to this thread.
 */
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "blockd/defer-call.h"
#include "blockd/log.h"
#include "blockd/main-loop.h"
#include "blockd/thread-pool.h"
#include "engine-core.h"

#define RETRY_DELAY_NS (1000 * 1000)   /* resubmit after EAGAIN with nothing in flight */

static void engine_submit(EngineState *s);

/* ---- I/O vectors ---------------------------------------------------------- */

/*
 * Store the bytes of @iov/@niov in *@total.  -EINVAL if @niov is negative
 * or the sum exceeds INT_MAX: results are returned as int.
 */
static int iov_total(const struct iovec *iov, int niov, size_t *total)
{
    *total = 0;
    if (niov < 0) {
        return -EINVAL;
    }
    for (int i = 0; i < niov; i++) {
        *total += iov[i].iov_len;
        if (*total > INT_MAX) {
            return -EINVAL;
        }
    }
    return 0;
}

/*
 * A new array (the caller frees it) for what remains of @iov/@niov after
 * its first @bytes, fewer than it holds: the finished elements dropped and
 * the first remaining one shortened.  Updates *@niov.  @iov itself is left
 * alone: it belongs to the caller of the submit function.
 */
static struct iovec *iov_copy_skip(const struct iovec *iov, int *niov, size_t bytes)
{
    struct iovec *copy;

    while (*niov > 0 && bytes >= iov->iov_len) {
        bytes -= iov->iov_len;
        iov++;
        (*niov)--;
    }
    assert(*niov > 0);
    copy = malloc(sizeof(*copy) * (size_t)*niov);
    if (!copy) {
        abort();
    }
    memcpy(copy, iov, sizeof(*copy) * (size_t)*niov);
    copy[0].iov_base = (char *)copy[0].iov_base + bytes;
    copy[0].iov_len -= bytes;
    return copy;
}

/* ---- Requests ----------------------------------------------------------------- */

/* Make @req describe its remaining bytes after @bytes more were transferred. */
static void req_advance(EngineReq *req, size_t bytes)
{
    struct iovec *copy = iov_copy_skip(req->iov, &req->niov, bytes);

    free(req->iov_copy);
    req->iov_copy = copy;
    req->iov = copy;
    req->offset += (uint64_t)bytes;
}

void engine_req_complete(EngineReq *req, int ret)
{
    req->ret = ret;
    req->complete = true;
    if (req->yielded) {
        /* Same thread: entered now, or right after the running coroutine yields. */
        aio_co_wake(req->co);
    }
    /* @req lives on the coroutine's stack: it may be gone now. */
}

static void queue_req(EngineState *s, EngineReq *req, bool at_head)
{
    if (at_head) {
        list_add_head(&s->pending, &req->node);
    } else {
        list_add_tail(&s->pending, &req->node);
    }
    s->in_queue++;
}

/* A retry or a remainder goes before newer requests. */
static void requeue(EngineState *s, EngineReq *req)
{
    s->stats.resubmitted++;
    queue_req(s, req, true);
}

EngineReq *engine_dequeue(EngineState *s)
{
    EngineReq *req = list_first(&s->pending, EngineReq, node);

    list_del(&req->node);
    assert(s->in_queue > 0);
    s->in_queue--;
    return req;
}

/* ---- Submission ------------------------------------------------------------ */

int64_t engine_room(EngineState *s)
{
    return ENGINE_RING_ENTRIES - s->in_flight - s->unsubmitted;
}

void engine_note_accepted(EngineState *s, int n)
{
    s->in_flight += n;
    s->stats.submitted += (uint64_t)n;
}

void engine_set_blocked(EngineState *s)
{
    s->blocked = true;
    if (s->in_flight == 0) {
        /* No completion will come to unblock us: try again shortly. */
        timer_mod(s->retry_timer, clock_now_ns() + RETRY_DELAY_NS);
    }
}

/* Hand queued requests to the kernel, unless it refused more already. */
static void engine_submit(EngineState *s)
{
    assert(aio_context_in_home_thread(s->ctx));
    if (s->blocked) {
        return;
    }
    s->ops->submit(s);
}

static void engine_deferred_submit(void *opaque)
{
    engine_submit(opaque);
}

static void engine_retry_cb(void *opaque)
{
    EngineState *s = opaque;

    s->blocked = false;
    engine_submit(s);
}

/* How many queued requests make a batch worth submitting right away. */
static int64_t batch_limit(EngineState *s)
{
    int64_t room = engine_room(s);

    return room < engine_max_batch() ? room : engine_max_batch();
}

/* ---- Completion ------------------------------------------------------------- */

/* @req transferred @bytes more: finish it, or queue what remains. */
static void req_transferred(EngineState *s, EngineReq *req, size_t bytes)
{
    req->done += bytes;
    if (req->done < req->total) {
        if (bytes > 0) {
            /* Short transfer: continue with the rest. */
            req_advance(req, bytes);
            requeue(s, req);
            return;
        }
        if (req->op == ENGINE_WRITE) {
            /* A write that makes no progress will not make any later. */
            engine_req_complete(req, -ENOSPC);
            return;
        }
        /* A read that hit end of file: the caller zero-fills the rest. */
    }
    engine_req_complete(req, (int)req->done);
}

void engine_req_done(EngineState *s, EngineReq *req, long res)
{
    assert(s->in_flight > 0);
    s->in_flight--;
    s->stats.completed++;
    if (res == -EINTR || res == -EAGAIN) {
        requeue(s, req);
    } else if (res < 0) {
        engine_req_complete(req, (int)res);
    } else if (req->op == ENGINE_FLUSH) {
        engine_req_complete(req, 0);
    } else {
        req_transferred(s, req, (size_t)res);
    }
}

static void drain_eventfd(EngineState *s)
{
    uint64_t value;

    if (read(s->efd, &value, sizeof(value)) < 0 && errno != EAGAIN && errno != EINTR) {
        warn_report("%s: eventfd read: %s", s->ops->name, strerror(errno));
    }
}

static void engine_process_completions(EngineState *s)
{
    assert(aio_context_in_home_thread(s->ctx));
    /* Requests issued by the coroutines woken below go out as one batch. */
    defer_call_begin();
    s->ops->reap(s);
    do {
        drain_eventfd(s);
        /* A completion posted before the drain was signalled by then, and
         * that signal is gone: reap it now. */
    } while (s->ops->reap(s) > 0);
    /* Room was freed (or the kernel may take more now): retry the queue. */
    s->blocked = false;
    if (!list_empty(&s->pending) || s->unsubmitted > 0) {
        defer_call(engine_deferred_submit, s);
    }
    defer_call_end();
}

static void engine_efd_read(void *opaque)
{
    engine_process_completions(opaque);
}

static bool engine_poll(void *opaque)
{
    EngineState *s = opaque;

    if (!s->ops->ready(s)) {
        return false;
    }
    s->stats.poll_hits++;
    return true;
}

/* ---- State ------------------------------------------------------------------ */

static void engine_state_free(void *opaque)
{
    EngineState *s = opaque;

    if (s->usable) {
        /* The block layer drains before a context goes away. */
        assert(s->in_flight == 0);
        assert(s->unsubmitted == 0);
        assert(s->in_queue == 0 && list_empty(&s->pending));
        aio_set_fd_handler(s->ctx, s->efd, NULL, NULL, NULL, NULL);
        timer_free(s->retry_timer);
        s->ops->cleanup(s);
        close(s->efd);
    }
    free(s);
}

static EngineState *engine_state_new(const EngineOps *ops, AioContext *ctx)
{
    /* The engine's state begins with its EngineState (see EngineOps). */
    EngineState *s = calloc(1, ops->state_size);
    int ret;

    if (!s) {
        abort();
    }
    s->ops = ops;
    s->ctx = ctx;
    list_init(&s->pending);
    s->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (s->efd < 0) {
        s->setup_errno = errno;
        return s;
    }
    ret = ops->setup(s);
    if (ret < 0) {
        s->setup_errno = -ret;
        close(s->efd);
        return s;
    }
    s->retry_timer = aio_timer_new(ctx, engine_retry_cb, s);
    aio_set_fd_handler(ctx, s->efd, engine_efd_read, NULL, engine_poll, s);
    s->usable = true;
    return s;
}

/*
 * The calling thread's state, created on first use.  A state whose setup
 * failed is kept too, so that setup is not retried for every request.
 */
static EngineState *engine_get_state(const EngineOps *ops, bool *created)
{
    AioContext *ctx = current_aio_context();
    EngineState *s = aio_context_get_data(ctx, ops->key);

    *created = false;
    if (!s) {
        s = engine_state_new(ops, ctx);
        aio_context_set_data(ctx, ops->key, s, engine_state_free);
        *created = true;
    }
    assert(s->ctx == ctx && s->ops == ops);
    return s;
}

/* ---- The thread-pool fallback ----------------------------------------------- */

typedef struct ThreadsReq {
    int fd;
    EngineOp op;
    uint64_t offset;
    const struct iovec *iov;
    int niov;
    size_t total;
} ThreadsReq;

static int threads_fdatasync(void *opaque)
{
    int fd = *(int *)opaque;

    while (fdatasync(fd) < 0) {
        if (errno != EINTR) {
            return -errno;
        }
    }
    return 0;
}

/* Runs on a worker thread: the whole transfer with blocking calls. */
static int threads_rw(void *opaque)
{
    ThreadsReq *r = opaque;
    struct iovec *copy = NULL;
    const struct iovec *iov = r->iov;
    int niov = r->niov;
    uint64_t offset = r->offset;
    size_t done = 0;
    int ret;

    for (;;) {
        ssize_t n = r->op == ENGINE_READ ? preadv(r->fd, iov, niov, (off_t)offset)
                                         : pwritev(r->fd, iov, niov, (off_t)offset);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            ret = -errno;
            break;
        }
        done += (size_t)n;
        offset += (uint64_t)n;
        if (done == r->total || (n == 0 && r->op == ENGINE_READ)) {
            ret = (int)done;
            break;
        }
        if (n == 0) {
            ret = -ENOSPC;
            break;
        }
        /* Short: skip what was transferred and go on. */
        struct iovec *next = iov_copy_skip(iov, &niov, (size_t)n);
        free(copy);
        copy = next;
        iov = copy;
    }
    free(copy);
    return ret;
}

int coroutine_fn engine_co_submit_threads(int fd, EngineOp op, uint64_t offset,
                                          const struct iovec *iov, int niov)
{
    ThreadsReq r = { .fd = fd, .op = op, .offset = offset, .iov = iov, .niov = niov };
    int ret;

    IO_CODE();
    assert(in_coroutine());
    if (op == ENGINE_FLUSH) {
        return thread_pool_submit_co(threads_fdatasync, &r.fd);
    }
    assert(op == ENGINE_READ || op == ENGINE_WRITE);
    ret = iov_total(iov, niov, &r.total);
    if (ret < 0) {
        return ret;
    }
    return thread_pool_submit_co(threads_rw, &r);
}

/* ---- Entry points ---------------------------------------------------------- */

/* Queue @req, submit it now or at the end of the section, wait for it. */
static int coroutine_fn queue_and_wait(EngineState *s, EngineReq *req)
{
    queue_req(s, req, false);
    if (s->in_queue >= batch_limit(s)) {
        engine_submit(s);
    } else {
        defer_call(engine_deferred_submit, s);
    }
    if (!req->complete) {
        req->yielded = true;
        coroutine_yield();
    }
    assert(req->complete);
    free(req->iov_copy);
    req->iov_copy = NULL;
    return req->ret;
}

int coroutine_fn engine_co_submit(const EngineOps *ops, EngineReq *req,
                                  int fd, EngineOp op, uint64_t offset,
                                  const struct iovec *iov, int niov)
{
    EngineState *s;
    bool created;
    int ret;

    IO_CODE();
    *req = (EngineReq) {
        .co = coroutine_self(),
        .fd = fd,
        .op = op,
        .offset = offset,
        .iov = iov,
        .niov = niov,
    };
    assert(req->co);
    assert(op == ENGINE_READ || op == ENGINE_WRITE || op == ENGINE_FLUSH);
    if (op != ENGINE_FLUSH) {
        ret = iov_total(iov, niov, &req->total);
        if (ret < 0) {
            return ret;
        }
    }

    s = engine_get_state(ops, &created);
    if (!s->usable) {
        if (created) {
            warn_report("%s is not available in thread '%s' (%s); "
                        "using the thread pool", ops->name,
                        aio_context_name(s->ctx), strerror(s->setup_errno));
        }
        s->stats.fallbacks++;
        return engine_co_submit_threads(fd, op, offset, iov, niov);
    }

    ret = queue_and_wait(s, req);
    /* Same thread and context as before the yield, so @s is still ours. */
    return ops->co_finish ? ops->co_finish(s, req) : ret;
}

bool engine_init_thread(const EngineOps *ops, Error **errp)
{
    EngineState *s;
    bool created;

    IO_CODE();
    s = engine_get_state(ops, &created);
    if (!s->usable) {
        error_setg_errno(errp, s->setup_errno, "Unable to use %s in thread '%s'",
                         ops->name, aio_context_name(s->ctx));
        return false;
    }
    return true;
}

void engine_get_stats(const EngineOps *ops, EngineStats *st)
{
    EngineState *s;

    IO_CODE();
    s = aio_context_get_data(current_aio_context(), ops->key);
    memset(st, 0, sizeof(*st));
    if (!s) {
        return;
    }
    *st = s->stats;
    st->in_flight = s->in_flight;
    st->queued = s->in_queue + s->unsubmitted;
    st->available = s->usable;
}
