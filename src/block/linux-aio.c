/*
 * linux-aio.c - the Linux AIO (libaio) engine, one io_context per
 * AioContext.
 *
 * Half: I/O.  The queue, the accounting, batching, completion handling and
 * the thread-pool fallback are the core's (engine-core.c); this file only
 * turns requests into iocbs, submits them with io_submit() and reaps
 * io_events.
 *
 * Each iocb carries IOCB_FLAG_RESFD so that the kernel signals the core's
 * eventfd when it completes.  Events are reaped from the completion ring
 * the kernel maps into user space (which busy-polling can peek at), or
 * with io_getevents() if that ring's layout is not the one we know.
 *
 * An event occupies a slot of the kernel's ring until it is reaped, so
 * keeping in_flight <= ENGINE_RING_ENTRIES keeps io_submit() from running
 * out of slots; EAGAIN is handled anyway.  io_submit() takes requests
 * straight from the pending queue, so "unsubmitted" stays 0 here.
 */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libaio.h>

#include "blockd/atomic.h"
#include "blockd/defer-call.h"
#include "blockd/log.h"
#include "engine-core.h"

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
    EngineReq core;
    struct iocb iocb;            /* filled in at each submission */
} LaioReq;

typedef struct LaioState {
    EngineState core;            /* first: the core allocates and frees it */
    io_context_t io_ctx;
    struct laio_ring *ring;      /* NULL: reap with io_getevents() instead */
} LaioState;

_Static_assert(offsetof(LaioState, core) == 0, "EngineState must come first");

static LaioState *laio_state(EngineState *s)
{
    return container_of(s, LaioState, core);
}

static LaioReq *laio_req(EngineReq *req)
{
    return container_of(req, LaioReq, core);
}

/* ---- Setup -------------------------------------------------------------------- */

static int laio_setup(EngineState *s)
{
    LaioState *ls = laio_state(s);
    struct laio_ring *r;
    int ret;

    ret = io_setup(ENGINE_RING_ENTRIES, &ls->io_ctx);
    if (ret < 0) {
        return ret;
    }
    r = (struct laio_ring *)ls->io_ctx;
    if (r && r->magic == LAIO_RING_MAGIC && r->incompat_features == 0 &&
        r->nr > 0 && r->header_length >= sizeof(*r)) {
        ls->ring = r;
    }
    return 0;
}

static void laio_cleanup(EngineState *s)
{
    io_destroy(laio_state(s)->io_ctx);
}

/* ---- The completion ring ---------------------------------------------------- */

/* Are there events to reap?  Only with a mapped ring. */
static bool ring_has_events(struct laio_ring *r)
{
    return atomic_read(&r->head) != atomic_load_acquire(&r->tail);
}

/* Take the next completed event off the ring; false if there is none. */
static bool ring_next_event(LaioState *ls, struct io_event *ev)
{
    struct laio_ring *r = ls->ring;
    struct timespec zero = { 0, 0 };
    struct io_event *events;
    unsigned head;

    if (!r) {
        return io_getevents(ls->io_ctx, 0, 1, ev, &zero) == 1;
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

/* ---- Submission --------------------------------------------------------- */

static void prep_iocb(LaioState *ls, LaioReq *lreq)
{
    EngineReq *req = &lreq->core;

    switch (req->op) {
    case ENGINE_READ:
        io_prep_preadv(&lreq->iocb, req->fd, req->iov, req->niov, (long long)req->offset);
        break;
    case ENGINE_WRITE:
        io_prep_pwritev(&lreq->iocb, req->fd, req->iov, req->niov, (long long)req->offset);
        break;
    case ENGINE_FLUSH:
        io_prep_fdsync(&lreq->iocb, req->fd);
        break;
    default:
        abort();
    }
    io_set_eventfd(&lreq->iocb, ls->core.efd);
}

/*
 * Prepare the iocbs of the first requests on @pending, at most @max, in
 * @iocbs; returns how many.  Prepared afresh each time, because a
 * continued short transfer has a new offset and iovec.
 */
static int fill_iocbs(LaioState *ls, struct iocb **iocbs, int64_t max)
{
    int n = 0;

    list_for_each(node, &ls->core.pending) {
        LaioReq *lreq;

        if (n == max) {
            break;
        }
        lreq = laio_req(list_entry(node, EngineReq, node));
        prep_iocb(ls, lreq);
        iocbs[n++] = &lreq->iocb;
    }
    return n;
}

/*
 * io_submit() refused the first iocb (EBADF, EINVAL, ...): move that
 * request to @failed.  Its coroutine is woken once the queue is
 * consistent again.
 */
static void refuse_first(EngineState *s, ListNode *failed, int err)
{
    EngineReq *req = engine_dequeue(s);

    if (!s->submit_error_reported && err != -EBADF && err != -EINVAL) {
        s->submit_error_reported = true;
        warn_report("io_submit: %s", strerror(-err));
    }
    req->ret = err;
    list_add_tail(failed, &req->node);
}

static void complete_refused(ListNode *failed)
{
    /* Woken coroutines may submit again: let that join one batch. */
    defer_call_begin();
    while (!list_empty(failed)) {
        EngineReq *req = list_first(failed, EngineReq, node);

        list_del(&req->node);
        engine_req_complete(req, req->ret);
    }
    defer_call_end();
}

/* io_submit() took the first @n of @iocbs, in order: off the queue with them. */
static void take_accepted(EngineState *s, struct iocb **iocbs, int n)
{
    for (int i = 0; i < n; i++) {
        EngineReq *req = engine_dequeue(s);

        if (&laio_req(req)->iocb != iocbs[i]) {
            abort();    /* the queue and the array we passed disagree */
        }
    }
    engine_note_accepted(s, n);
}

static void laio_submit(EngineState *s)
{
    LaioState *ls = laio_state(s);
    struct iocb *iocbs[ENGINE_RING_ENTRIES];
    ListNode failed;

    list_init(&failed);
    while (!list_empty(&s->pending) && engine_room(s) > 0) {
        int n = fill_iocbs(ls, iocbs, engine_room(s));
        int ret = io_submit(ls->io_ctx, n, iocbs);

        s->stats.submit_calls++;
        if (ret == -EINTR) {
            continue;
        }
        if (ret == -EAGAIN) {
            engine_set_blocked(s);
            break;
        }
        if (ret < 0) {
            refuse_first(s, &failed, ret);
            continue;
        }
        assert(ret <= n);
        take_accepted(s, iocbs, ret);
        /* ret < n: the next call reports what stopped the kernel. */
    }
    if (!list_empty(&failed)) {
        complete_refused(&failed);
    }
}

/* ---- Completion ----------------------------------------------------------- */

static int laio_reap(EngineState *s)
{
    LaioState *ls = laio_state(s);
    struct io_event ev;
    int n = 0;

    while (ring_next_event(ls, &ev)) {
        LaioReq *lreq = container_of(ev.obj, LaioReq, iocb);

        /* Consumed from the ring already: a nested loop cannot see it again. */
        n++;
        engine_req_done(s, &lreq->core, (long)ev.res);
    }
    return n;
}

static bool laio_ready(EngineState *s)
{
    LaioState *ls = laio_state(s);

    return ls->ring && ring_has_events(ls->ring);
}

/* ---- Entry points ----------------------------------------------------------- */

/*
 * IOCB_CMD_FDSYNC refused with EINVAL (no support in the kernel, or a file
 * without fsync): do it the slow way.
 */
static int coroutine_fn laio_co_finish(EngineState *s, EngineReq *req)
{
    if (req->op == ENGINE_FLUSH && req->ret == -EINVAL) {
        s->stats.fallbacks++;
        return engine_co_submit_threads(req->fd, ENGINE_FLUSH, 0, NULL, 0);
    }
    return req->ret;
}

static const EngineOps laio_ops = {
    .name = "Linux AIO",
    .key = AIO_DATA_LINUX_AIO,
    .state_size = sizeof(LaioState),
    .setup = laio_setup,
    .cleanup = laio_cleanup,
    .submit = laio_submit,
    .reap = laio_reap,
    .ready = laio_ready,
    .co_finish = laio_co_finish,
};

int coroutine_fn laio_co_submit(int fd, EngineOp op, uint64_t offset,
                                const struct iovec *iov, int niov)
{
    LaioReq req;

    return engine_co_submit(&laio_ops, &req.core, fd, op, offset, iov, niov);
}

bool laio_init_thread(Error **errp)
{
    return engine_init_thread(&laio_ops, errp);
}

void laio_get_stats(EngineStats *st)
{
    engine_get_stats(&laio_ops, st);
}
