/*
 * linux-aio.c - the Linux AIO (libaio) engine, one io_context per
 * AioContext, and the thread-pool fallback shared by both engines.
 *
 * The model is the one of io-uring.c: a request is queued on the calling
 * thread's state, submitted with io_submit() at the end of the defer_call
 * section (or at once when the batch is full), and its iocb carries
 * IOCB_FLAG_RESFD so that the kernel signals the state's eventfd when it
 * completes.  The fd handler of that eventfd -- or busy-polling, which
 * peeks at the completion ring the kernel maps into user space -- reaps
 * the events in the same thread and wakes the waiting coroutines directly.
 *
 * Accounting (home thread only, never negative): in_queue requests wait
 * on @pending; in_flight were accepted by io_submit() and their event has
 * not been reaped.  An event occupies a slot of the kernel's ring until it
 * is reaped, so keeping in_flight <= ENGINE_RING_ENTRIES keeps io_submit()
 * from running out of slots; EAGAIN is handled anyway.
 *
 * Events are consumed from the ring before their coroutine is woken, and
 * the eventfd is drained only once the ring is empty, so a nested event
 * loop sees the eventfd readable while events remain (see io-uring.c).
 */
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <libaio.h>

#include "blockd/aio-engine.h"
#include "blockd/aio.h"
#include "blockd/atomic.h"
#include "blockd/coroutine.h"
#include "blockd/defer-call.h"
#include "blockd/list.h"
#include "blockd/log.h"
#include "blockd/main-loop.h"
#include "blockd/thread-pool.h"

#define RETRY_DELAY_NS (1000 * 1000)   /* resubmit after EAGAIN with nothing in flight */

/*
 * The header of the completion ring that io_setup() maps into the
 * process (the io_context_t handle points at it).  Its layout is kernel
 * ABI; we only use it when the magic number and feature words match.
 */
struct laio_ring {
    unsigned id;
    unsigned nr;                 /* number of event slots */
    unsigned head;               /* next event to consume: written by us */
    unsigned tail;               /* next slot the kernel fills */
    unsigned magic;
    unsigned compat_features;
    unsigned incompat_features;
    unsigned header_length;      /* offset of the event array */
};
#define LAIO_RING_MAGIC 0xa10a10a1u

typedef struct LaioReq {
    struct iocb iocb;
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
    ListNode node;               /* in LaioState.pending, or a local list */
} LaioReq;

typedef struct LaioState {
    AioContext *ctx;
    bool usable;                 /* false: setup failed, use the thread pool */
    int setup_errno;
    io_context_t io_ctx;
    struct laio_ring *ring;      /* NULL: reap with io_getevents() instead */
    int efd;
    AioTimer *retry_timer;
    ListNode pending;            /* of LaioReq, FIFO */
    int64_t in_queue;
    int64_t in_flight;
    bool blocked;                /* io_submit() said EAGAIN: wait for completions */
    bool submit_error_reported;
    EngineStats stats;
} LaioState;

static void laio_process_completions(LaioState *s);
static void laio_submit(LaioState *s);

/* ---- Small helpers -------------------------------------------------------- */

/* Make @req describe what remains after @bytes more were transferred. */
static void req_advance(LaioReq *req, size_t bytes)
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

static void req_complete(LaioReq *req, int ret)
{
    req->ret = ret;
    req->complete = true;
    if (req->yielded) {
        aio_co_wake(req->co);
    }
    /* @req lives on the coroutine's stack: it may be gone now. */
}

static void queue_req(LaioState *s, LaioReq *req, bool at_head)
{
    if (at_head) {
        list_add_head(&s->pending, &req->node);
    } else {
        list_add_tail(&s->pending, &req->node);
    }
    s->in_queue++;
}

static void prep_iocb(LaioState *s, LaioReq *req)
{
    switch (req->op) {
    case ENGINE_READ:
        io_prep_preadv(&req->iocb, req->fd, req->iov, req->niov, (long long)req->offset);
        break;
    case ENGINE_WRITE:
        io_prep_pwritev(&req->iocb, req->fd, req->iov, req->niov, (long long)req->offset);
        break;
    case ENGINE_FLUSH:
        io_prep_fdsync(&req->iocb, req->fd);
        break;
    default:
        abort();
    }
    io_set_eventfd(&req->iocb, s->efd);
}

/* ---- The completion ring ---------------------------------------------------- */

/* Are there events to reap?  Only with a mapped ring. */
static bool ring_has_events(LaioState *s)
{
    return atomic_read(&s->ring->head) != atomic_load_acquire(&s->ring->tail);
}

/* Take the next completed event off the ring; false if there is none. */
static bool ring_next_event(LaioState *s, struct io_event *ev)
{
    struct laio_ring *r = s->ring;
    struct timespec zero = { 0, 0 };
    struct io_event *events;
    unsigned head;

    if (!r) {
        return io_getevents(s->io_ctx, 0, 1, ev, &zero) == 1;
    }
    head = atomic_read(&r->head);
    if (head == atomic_load_acquire(&r->tail)) {
        return false;
    }
    events = (struct io_event *)((char *)r + r->header_length);
    *ev = events[head];
    /* Release: the slot may be reused once the kernel sees the new head. */
    atomic_store_release(&r->head, (head + 1) % r->nr);
    return true;
}

/* ---- State ------------------------------------------------------------- */

static void drain_eventfd(LaioState *s)
{
    uint64_t value;

    if (read(s->efd, &value, sizeof(value)) < 0 && errno != EAGAIN && errno != EINTR) {
        warn_report("linux-aio: eventfd read: %s", strerror(errno));
    }
}

static void laio_efd_read(void *opaque)
{
    laio_process_completions(opaque);
}

static bool laio_poll(void *opaque)
{
    LaioState *s = opaque;

    if (!s->ring || !ring_has_events(s)) {
        return false;
    }
    s->stats.poll_hits++;
    return true;
}

static void laio_retry_cb(void *opaque)
{
    LaioState *s = opaque;

    s->blocked = false;
    laio_submit(s);
}

static void laio_state_free(void *opaque)
{
    LaioState *s = opaque;

    if (s->usable) {
        /* The block layer drains before a context goes away. */
        assert(s->in_flight == 0);
        assert(s->in_queue == 0 && list_empty(&s->pending));
        aio_set_fd_handler(s->ctx, s->efd, NULL, NULL, NULL, NULL);
        timer_free(s->retry_timer);
        io_destroy(s->io_ctx);
        close(s->efd);
    }
    free(s);
}

static LaioState *laio_state_new(AioContext *ctx)
{
    LaioState *s = calloc(1, sizeof(*s));
    struct laio_ring *r;
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
    ret = io_setup(ENGINE_RING_ENTRIES, &s->io_ctx);
    if (ret < 0) {
        s->setup_errno = -ret;
        close(s->efd);
        return s;
    }
    r = (struct laio_ring *)s->io_ctx;
    if (r && r->magic == LAIO_RING_MAGIC && r->incompat_features == 0 &&
        r->nr > 0 && r->header_length >= sizeof(*r)) {
        s->ring = r;
    }
    s->retry_timer = aio_timer_new(ctx, laio_retry_cb, s);
    aio_set_fd_handler(ctx, s->efd, laio_efd_read, NULL, laio_poll, s);
    s->usable = true;
    return s;
}

/* The calling thread's state, created on first use (also when it fails). */
static LaioState *laio_get_state(bool *created)
{
    AioContext *ctx = current_aio_context();
    LaioState *s = aio_context_get_data(ctx, AIO_DATA_LINUX_AIO);

    *created = false;
    if (!s) {
        s = laio_state_new(ctx);
        aio_context_set_data(ctx, AIO_DATA_LINUX_AIO, s, laio_state_free);
        *created = true;
    }
    assert(s->ctx == ctx);
    return s;
}

/* ---- Submission --------------------------------------------------------- */

static void set_blocked(LaioState *s)
{
    s->blocked = true;
    if (s->in_flight == 0) {
        timer_mod(s->retry_timer, clock_now_ns() + RETRY_DELAY_NS);
    }
}

/* Hand queued requests to the kernel, as many as it takes. */
static void laio_submit(LaioState *s)
{
    struct iocb *iocbs[ENGINE_RING_ENTRIES];
    ListNode failed;

    assert(aio_context_in_home_thread(s->ctx));
    if (s->blocked) {
        return;
    }
    list_init(&failed);
    while (!list_empty(&s->pending) && s->in_flight < ENGINE_RING_ENTRIES) {
        int64_t room = ENGINE_RING_ENTRIES - s->in_flight;
        int n = 0, ret;

        list_for_each(node, &s->pending) {
            if (n == room) {
                break;
            }
            iocbs[n++] = &list_entry(node, LaioReq, node)->iocb;
        }
        ret = io_submit(s->io_ctx, n, iocbs);
        s->stats.submit_calls++;
        if (ret == -EINTR) {
            continue;
        }
        if (ret == -EAGAIN) {
            set_blocked(s);
            break;
        }
        if (ret < 0) {
            /*
             * The first iocb was refused (EBADF, EINVAL, ...): fail that
             * request and go on with the others.  Its coroutine is woken
             * after the loop, when the queue is consistent again.
             */
            LaioReq *req = list_first(&s->pending, LaioReq, node);

            if (!s->submit_error_reported && ret != -EBADF && ret != -EINVAL) {
                s->submit_error_reported = true;
                warn_report("io_submit: %s", strerror(-ret));
            }
            list_del(&req->node);
            assert(s->in_queue > 0);
            s->in_queue--;
            req->ret = ret;
            list_add_tail(&failed, &req->node);
            continue;
        }
        assert(ret <= n);
        for (int i = 0; i < ret; i++) {
            LaioReq *req = list_first(&s->pending, LaioReq, node);

            assert(&req->iocb == iocbs[i]);
            list_del(&req->node);
            assert(s->in_queue > 0);
            s->in_queue--;
            s->in_flight++;
        }
        s->stats.submitted += (uint64_t)ret;
        /* ret < n: the next call reports what stopped the kernel. */
    }
    if (!list_empty(&failed)) {
        /* Woken coroutines may submit again: let that join one batch. */
        defer_call_begin();
        while (!list_empty(&failed)) {
            LaioReq *req = list_first(&failed, LaioReq, node);

            list_del(&req->node);
            req_complete(req, req->ret);
        }
        defer_call_end();
    }
}

static void laio_deferred_submit(void *opaque)
{
    laio_submit(opaque);
}

static int64_t laio_batch_limit(LaioState *s)
{
    int64_t room = ENGINE_RING_ENTRIES - s->in_flight;

    return room < engine_max_batch() ? room : engine_max_batch();
}

/* ---- Completion ----------------------------------------------------------- */

static void laio_req_done(LaioState *s, LaioReq *req, long res)
{
    if (res == -EINTR || res == -EAGAIN) {
        s->stats.resubmitted++;
        prep_iocb(s, req);
        queue_req(s, req, true);
        return;
    }
    if (res < 0) {
        req_complete(req, (int)res);
        return;
    }
    if (req->op == ENGINE_FLUSH) {
        req_complete(req, 0);
        return;
    }
    req->done += (size_t)res;
    if (req->done < req->total) {
        if (res > 0) {
            req->offset += (uint64_t)res;
            req_advance(req, (size_t)res);
            prep_iocb(s, req);
            s->stats.resubmitted++;
            queue_req(s, req, true);
            return;
        }
        if (req->op == ENGINE_WRITE) {
            req_complete(req, -ENOSPC);
            return;
        }
        /* End of file: the caller zero-fills the rest. */
    }
    req_complete(req, (int)req->done);
}

/* Reap every event that is ready; returns how many. */
static int laio_reap(LaioState *s)
{
    struct io_event ev;
    int n = 0;

    while (ring_next_event(s, &ev)) {
        LaioReq *req = container_of(ev.obj, LaioReq, iocb);

        /* Consumed from the ring already: a nested loop cannot see it again. */
        assert(s->in_flight > 0);
        s->in_flight--;
        s->stats.completed++;
        n++;
        laio_req_done(s, req, (long)ev.res);
    }
    return n;
}

static void laio_process_completions(LaioState *s)
{
    assert(aio_context_in_home_thread(s->ctx));
    /* Requests issued by the coroutines woken here go out as one batch. */
    defer_call_begin();
    for (;;) {
        laio_reap(s);
        drain_eventfd(s);
        /* An event completed before the drain has been signalled by then. */
        if (s->ring ? !ring_has_events(s) : laio_reap(s) == 0) {
            break;
        }
    }
    /* Slots were freed (or the kernel may take more now): retry the queue. */
    s->blocked = false;
    if (!list_empty(&s->pending)) {
        defer_call(laio_deferred_submit, s);
    }
    defer_call_end();
}

/* ---- The thread-pool fallback ----------------------------------------------- */

typedef struct ThreadsReq {
    int fd;
    EngineOp op;
    uint64_t offset;
    const struct iovec *iov;
    int niov;
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
    size_t total = 0, done = 0;
    int ret;

    for (int i = 0; i < niov; i++) {
        total += iov[i].iov_len;
    }
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
        if (done == total || (n == 0 && r->op == ENGINE_READ)) {
            ret = (int)done;
            break;
        }
        if (n == 0) {
            ret = -ENOSPC;
            break;
        }
        /* Short: skip what was transferred and go on. */
        size_t skip = (size_t)n;
        while (skip >= iov->iov_len) {
            skip -= iov->iov_len;
            iov++;
            niov--;
        }
        struct iovec *next = malloc(sizeof(*next) * (size_t)niov);
        if (!next) {
            abort();
        }
        memcpy(next, iov, sizeof(*next) * (size_t)niov);
        next[0].iov_base = (char *)next[0].iov_base + skip;
        next[0].iov_len -= skip;
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
    size_t total = 0;

    IO_CODE();
    assert(in_coroutine());
    if (op == ENGINE_FLUSH) {
        return thread_pool_submit_co(threads_fdatasync, &r.fd);
    }
    assert(op == ENGINE_READ || op == ENGINE_WRITE);
    if (niov < 0) {
        return -EINVAL;
    }
    for (int i = 0; i < niov; i++) {
        total += iov[i].iov_len;
        if (total > INT_MAX) {
            return -EINVAL;
        }
    }
    return thread_pool_submit_co(threads_rw, &r);
}

/* ---- Entry points ----------------------------------------------------------- */

int coroutine_fn laio_co_submit(int fd, EngineOp op, uint64_t offset,
                                const struct iovec *iov, int niov)
{
    LaioReq req = {
        .co = coroutine_self(),
        .fd = fd,
        .op = op,
        .offset = offset,
        .iov = iov,
        .niov = niov,
    };
    LaioState *s;
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

    s = laio_get_state(&created);
    if (!s->usable) {
        if (created) {
            warn_report("Linux AIO is not available in thread '%s' (%s); "
                        "using the thread pool", aio_context_name(s->ctx),
                        strerror(s->setup_errno));
        }
        s->stats.fallbacks++;
        return engine_co_submit_threads(fd, op, offset, iov, niov);
    }

    prep_iocb(s, &req);
    queue_req(s, &req, false);
    if (s->in_queue >= laio_batch_limit(s)) {
        laio_submit(s);
    } else {
        defer_call(laio_deferred_submit, s);
    }
    if (!req.complete) {
        req.yielded = true;
        coroutine_yield();
    }
    assert(req.complete);
    free(req.iov_copy);

    if (op == ENGINE_FLUSH && req.ret == -EINVAL) {
        /* No IOCB_CMD_FDSYNC for this file (or kernel): do it the slow way.
         * Same thread and context as before the yield, so @s is still ours. */
        s->stats.fallbacks++;
        return thread_pool_submit_co(threads_fdatasync, &req.fd);
    }
    return req.ret;
}

bool laio_init_thread(Error **errp)
{
    LaioState *s;
    bool created;

    IO_CODE();
    s = laio_get_state(&created);
    if (!s->usable) {
        error_setg_errno(errp, s->setup_errno,
                         "Unable to use Linux AIO in thread '%s'",
                         aio_context_name(s->ctx));
        return false;
    }
    return true;
}

void laio_get_stats(EngineStats *st)
{
    LaioState *s;

    IO_CODE();
    s = aio_context_get_data(current_aio_context(), AIO_DATA_LINUX_AIO);
    memset(st, 0, sizeof(*st));
    if (!s) {
        return;
    }
    *st = s->stats;
    st->in_flight = s->in_flight;
    st->queued = s->in_queue;
    st->available = s->usable;
}
