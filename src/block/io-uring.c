/*
 * io-uring.c - the io_uring engine, one ring per AioContext.
 *
 * Life of a request (all in the submitting thread):
 *   luring_co_submit() puts it on the state's pending list and either
 *   submits now (the batch is full) or defers the submission to the end
 *   of the current defer_call section; submission copies pending requests
 *   into SQEs while the ring has room and calls io_uring_submit().  The
 *   coroutine yields.  The kernel posts a CQE and signals the eventfd
 *   registered with the ring; the context's fd handler (or busy-polling,
 *   through luring_poll) then reaps every ready CQE, continues short
 *   transfers, and wakes the coroutine with aio_co_wake(), which enters it
 *   directly because it belongs to this thread.
 *
 * Accounting (home thread only, never negative):
 *   in_queue     requests on @pending, no SQE yet;
 *   unsubmitted  SQEs filled in but not yet accepted by the kernel;
 *   in_flight    accepted by the kernel, CQE not yet reaped.
 * in_flight + unsubmitted never exceeds the ring size, so the SQ ring
 * always has a free entry for them and the CQ ring (twice as large) cannot
 * overflow.
 *
 * Nested event loops: each CQE is consumed before its coroutine is woken,
 * and the eventfd is drained only after the CQ ring was found empty (and
 * checked again afterwards).  While unreaped CQEs remain the eventfd stays
 * readable, so an event loop nested anywhere below the handler (the epoll
 * watch is level-triggered) runs the handler again and nothing is lost.
 */
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <liburing.h>

#include "blockd/aio-engine.h"
#include "blockd/aio.h"
#include "blockd/coroutine.h"
#include "blockd/defer-call.h"
#include "blockd/list.h"
#include "blockd/log.h"
#include "blockd/main-loop.h"

#define RETRY_DELAY_NS (1000 * 1000)   /* resubmit after EAGAIN with nothing in flight */

typedef struct LuringReq {
    Coroutine *co;
    int fd;
    EngineOp op;
    uint64_t offset;             /* of the part still to transfer */
    const struct iovec *iov;     /* the part still to transfer */
    int niov;
    struct iovec *iov_copy;      /* owned; set once a transfer came back short */
    size_t total;
    size_t done;
    int ret;
    bool complete;
    bool yielded;                /* the coroutine waits for aio_co_wake() */
    ListNode node;               /* in LuringState.pending */
} LuringReq;

typedef struct LuringState {
    AioContext *ctx;
    bool usable;                 /* false: setup failed, use the thread pool */
    int setup_errno;
    struct io_uring ring;
    int efd;
    AioTimer *retry_timer;
    ListNode pending;            /* of LuringReq, FIFO */
    int64_t in_queue;
    int64_t unsubmitted;
    int64_t in_flight;
    bool blocked;                /* the kernel refused more: wait for completions */
    bool submit_error_reported;
    EngineStats stats;
} LuringState;

static void luring_process_completions(LuringState *s);
static void luring_submit(LuringState *s);

/* ---- Small helpers -------------------------------------------------------- */

/*
 * Make @req describe its remaining bytes after @bytes more were
 * transferred: a fresh array without the finished elements.
 */
static void req_advance(LuringReq *req, size_t bytes)
{
    const struct iovec *iov = req->iov;
    int niov = req->niov;
    struct iovec *copy;

    while (niov > 0 && bytes >= iov->iov_len) {
        bytes -= iov->iov_len;
        iov++;
        niov--;
    }
    assert(niov > 0);
    copy = malloc(sizeof(*copy) * (size_t)niov);
    if (!copy) {
        abort();
    }
    memcpy(copy, iov, sizeof(*copy) * (size_t)niov);
    copy[0].iov_base = (char *)copy[0].iov_base + bytes;
    copy[0].iov_len -= bytes;
    free(req->iov_copy);
    req->iov_copy = copy;
    req->iov = copy;
    req->niov = niov;
}

static void req_complete(LuringReq *req, int ret)
{
    req->ret = ret;
    req->complete = true;
    if (req->yielded) {
        /* Same thread: entered now, or right after the running coroutine yields. */
        aio_co_wake(req->co);
    }
    /* @req lives on the coroutine's stack: it may be gone now. */
}

static void queue_req(LuringState *s, LuringReq *req, bool at_head)
{
    if (at_head) {
        list_add_head(&s->pending, &req->node);
    } else {
        list_add_tail(&s->pending, &req->node);
    }
    s->in_queue++;
}

/* ---- State ------------------------------------------------------------- */

static void drain_eventfd(LuringState *s)
{
    uint64_t value;

    if (read(s->efd, &value, sizeof(value)) < 0 && errno != EAGAIN && errno != EINTR) {
        warn_report("io_uring: eventfd read: %s", strerror(errno));
    }
}

static void luring_efd_read(void *opaque)
{
    luring_process_completions(opaque);
}

static bool luring_poll(void *opaque)
{
    LuringState *s = opaque;

    if (io_uring_cq_ready(&s->ring) == 0) {
        return false;
    }
    s->stats.poll_hits++;
    return true;
}

static void luring_retry_cb(void *opaque)
{
    LuringState *s = opaque;

    s->blocked = false;
    luring_submit(s);
}

static void luring_state_free(void *opaque)
{
    LuringState *s = opaque;

    if (s->usable) {
        /* The block layer drains before a context goes away. */
        assert(s->in_flight == 0);
        assert(s->unsubmitted == 0);
        assert(s->in_queue == 0 && list_empty(&s->pending));
        aio_set_fd_handler(s->ctx, s->efd, NULL, NULL, NULL, NULL);
        timer_free(s->retry_timer);
        io_uring_queue_exit(&s->ring);
        close(s->efd);
    }
    free(s);
}

static LuringState *luring_state_new(AioContext *ctx)
{
    LuringState *s = calloc(1, sizeof(*s));
    int ret;

    if (!s) {
        abort();
    }
    s->ctx = ctx;
    list_init(&s->pending);
    s->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (s->efd < 0) {
        s->setup_errno = errno;
        return s;
    }
    ret = io_uring_queue_init(ENGINE_RING_ENTRIES, &s->ring, 0);
    if (ret < 0) {
        s->setup_errno = -ret;
        close(s->efd);
        return s;
    }
    ret = io_uring_register_eventfd(&s->ring, s->efd);
    if (ret < 0) {
        s->setup_errno = -ret;
        io_uring_queue_exit(&s->ring);
        close(s->efd);
        return s;
    }
    s->retry_timer = aio_timer_new(ctx, luring_retry_cb, s);
    aio_set_fd_handler(ctx, s->efd, luring_efd_read, NULL, luring_poll, s);
    s->usable = true;
    return s;
}

/*
 * The calling thread's state, created on first use.  A state whose setup
 * failed is kept too, so that setup is not retried for every request.
 */
static LuringState *luring_get_state(bool *created)
{
    AioContext *ctx = current_aio_context();
    LuringState *s = aio_context_get_data(ctx, AIO_DATA_IO_URING);

    *created = false;
    if (!s) {
        s = luring_state_new(ctx);
        aio_context_set_data(ctx, AIO_DATA_IO_URING, s, luring_state_free);
        *created = true;
    }
    assert(s->ctx == ctx);
    return s;
}

/* ---- Submission --------------------------------------------------------- */

static void prep_sqe(struct io_uring_sqe *sqe, LuringReq *req)
{
    switch (req->op) {
    case ENGINE_READ:
        io_uring_prep_readv(sqe, req->fd, req->iov, (unsigned)req->niov, req->offset);
        break;
    case ENGINE_WRITE:
        io_uring_prep_writev(sqe, req->fd, req->iov, (unsigned)req->niov, req->offset);
        break;
    case ENGINE_FLUSH:
        io_uring_prep_fsync(sqe, req->fd, IORING_FSYNC_DATASYNC);
        break;
    default:
        abort();
    }
    io_uring_sqe_set_data(sqe, req);
}

static void set_blocked(LuringState *s)
{
    s->blocked = true;
    if (s->in_flight == 0) {
        /* No completion will come to unblock us: try again shortly. */
        timer_mod(s->retry_timer, clock_now_ns() + RETRY_DELAY_NS);
    }
}

/* Hand queued requests to the kernel, as many as the ring takes. */
static void luring_submit(LuringState *s)
{
    int ret;

    assert(aio_context_in_home_thread(s->ctx));
    if (s->blocked) {
        return;
    }
    while (!list_empty(&s->pending) &&
           s->in_flight + s->unsubmitted < ENGINE_RING_ENTRIES) {
        LuringReq *req = list_first(&s->pending, LuringReq, node);
        struct io_uring_sqe *sqe = io_uring_get_sqe(&s->ring);

        assert(sqe);   /* guaranteed by the in_flight + unsubmitted bound */
        list_del(&req->node);
        assert(s->in_queue > 0);
        s->in_queue--;
        prep_sqe(sqe, req);
        s->unsubmitted++;
    }
    if (s->unsubmitted == 0) {
        return;
    }
    do {
        ret = io_uring_submit(&s->ring);
        s->stats.submit_calls++;
    } while (ret == -EINTR);
    if (ret < 0) {
        /* The SQEs stay in the ring; the next io_uring_submit() retries them. */
        if (ret != -EAGAIN && ret != -EBUSY && ret != -ENOMEM &&
            !s->submit_error_reported) {
            s->submit_error_reported = true;
            error_report("io_uring_submit: %s; retrying", strerror(-ret));
        }
        set_blocked(s);
        return;
    }
    assert(ret <= s->unsubmitted);
    s->unsubmitted -= ret;
    s->in_flight += ret;
    s->stats.submitted += (uint64_t)ret;
    assert(s->unsubmitted == (int64_t)io_uring_sq_ready(&s->ring));
    if (s->unsubmitted > 0) {
        set_blocked(s);
    }
}

static void luring_deferred_submit(void *opaque)
{
    luring_submit(opaque);
}

/* How many queued requests make a batch worth submitting right away. */
static int64_t luring_batch_limit(LuringState *s)
{
    int64_t room = ENGINE_RING_ENTRIES - s->in_flight - s->unsubmitted;

    return room < engine_max_batch() ? room : engine_max_batch();
}

/* ---- Completion ----------------------------------------------------------- */

static void luring_req_done(LuringState *s, LuringReq *req, int res)
{
    if (res == -EINTR || res == -EAGAIN) {
        s->stats.resubmitted++;
        queue_req(s, req, true);
        return;
    }
    if (res < 0) {
        req_complete(req, res);
        return;
    }
    if (req->op == ENGINE_FLUSH) {
        req_complete(req, 0);
        return;
    }
    req->done += (size_t)res;
    if (req->done < req->total) {
        if (res > 0) {
            /* Short transfer: continue with the rest. */
            req->offset += (uint64_t)res;
            req_advance(req, (size_t)res);
            s->stats.resubmitted++;
            queue_req(s, req, true);
            return;
        }
        if (req->op == ENGINE_WRITE) {
            /* A write that makes no progress will not make any later. */
            req_complete(req, -ENOSPC);
            return;
        }
        /* A read that hit end of file: the caller zero-fills the rest. */
    }
    req_complete(req, (int)req->done);
}

static void luring_process_completions(LuringState *s)
{
    struct io_uring_cqe *cqe;

    assert(aio_context_in_home_thread(s->ctx));
    /* Requests issued by the coroutines woken below go out as one batch. */
    defer_call_begin();
    for (;;) {
        while (io_uring_peek_cqe(&s->ring, &cqe) == 0) {
            LuringReq *req = io_uring_cqe_get_data(cqe);
            int res = cqe->res;

            /* Consume first: a nested event loop must not see it again. */
            io_uring_cqe_seen(&s->ring, cqe);
            assert(s->in_flight > 0);
            s->in_flight--;
            s->stats.completed++;
            luring_req_done(s, req, res);
        }
        drain_eventfd(s);
        /* A CQE posted before the drain has been signalled by then. */
        if (io_uring_cq_ready(&s->ring) == 0) {
            break;
        }
    }
    /* Room was freed (or the kernel may take more now): retry the queue. */
    s->blocked = false;
    if (!list_empty(&s->pending) || s->unsubmitted > 0) {
        defer_call(luring_deferred_submit, s);
    }
    defer_call_end();
}

/* ---- Entry points ----------------------------------------------------------- */

int coroutine_fn luring_co_submit(int fd, EngineOp op, uint64_t offset,
                                  const struct iovec *iov, int niov)
{
    LuringReq req = {
        .co = coroutine_self(),
        .fd = fd,
        .op = op,
        .offset = offset,
        .iov = iov,
        .niov = niov,
    };
    LuringState *s;
    bool created;

    IO_CODE();
    assert(req.co);
    assert(op == ENGINE_READ || op == ENGINE_WRITE || op == ENGINE_FLUSH);
    if (op != ENGINE_FLUSH) {
        if (niov < 0) {
            return -EINVAL;
        }
        for (int i = 0; i < niov; i++) {
            req.total += iov[i].iov_len;
            if (req.total > INT_MAX) {
                return -EINVAL;
            }
        }
    }

    s = luring_get_state(&created);
    if (!s->usable) {
        if (created) {
            warn_report("io_uring is not available in thread '%s' (%s); "
                        "using the thread pool", aio_context_name(s->ctx),
                        strerror(s->setup_errno));
        }
        s->stats.fallbacks++;
        return engine_co_submit_threads(fd, op, offset, iov, niov);
    }

    queue_req(s, &req, false);
    if (s->in_queue >= luring_batch_limit(s)) {
        luring_submit(s);
    } else {
        defer_call(luring_deferred_submit, s);
    }
    if (!req.complete) {
        req.yielded = true;
        coroutine_yield();
    }
    assert(req.complete);
    free(req.iov_copy);
    return req.ret;
}

bool luring_init_thread(Error **errp)
{
    LuringState *s;
    bool created;

    IO_CODE();
    s = luring_get_state(&created);
    if (!s->usable) {
        error_setg_errno(errp, s->setup_errno,
                         "Unable to use io_uring in thread '%s'",
                         aio_context_name(s->ctx));
        return false;
    }
    return true;
}

void luring_get_stats(EngineStats *st)
{
    LuringState *s;

    IO_CODE();
    s = aio_context_get_data(current_aio_context(), AIO_DATA_IO_URING);
    memset(st, 0, sizeof(*st));
    if (!s) {
        return;
    }
    *st = s->stats;
    st->in_flight = s->in_flight;
    st->queued = s->in_queue + s->unsubmitted;
    st->available = s->usable;
}
