/*
 * io-uring.c - the io_uring engine, one ring per AioContext.
 *
 * Half: I/O.  The queue, the accounting, batching, completion handling and
 * the fallback are the core's (engine-core.c); this file only moves
 * requests into SQEs and takes results out of CQEs.
 *
 * Submission copies pending requests into SQEs while the ring has room
 * (they count as "unsubmitted" until the kernel accepts them) and calls
 * io_uring_submit().  SQEs the kernel did not take stay in the SQ ring and
 * go with the next io_uring_submit().  The eventfd of the core is
 * registered with the ring, so the kernel signals it for every CQE.
 *
 * in_flight + unsubmitted never exceeds the ring size, so the SQ ring
 * always has a free entry for them and the CQ ring (twice as large) cannot
 * overflow.
 */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <liburing.h>

#include "blockd/log.h"
#include "engine-core.h"

typedef struct LuringState {
    EngineState core;            /* first: the core allocates and frees it */
    struct io_uring ring;
} LuringState;

_Static_assert(offsetof(LuringState, core) == 0, "EngineState must come first");

static LuringState *luring_state(EngineState *s)
{
    return container_of(s, LuringState, core);
}

/* ---- Setup -------------------------------------------------------------------- */

static int luring_setup(EngineState *s)
{
    struct io_uring *ring = &luring_state(s)->ring;
    int ret;

    ret = io_uring_queue_init(ENGINE_RING_ENTRIES, ring, 0);
    if (ret < 0) {
        return ret;
    }
    ret = io_uring_register_eventfd(ring, s->efd);
    if (ret < 0) {
        io_uring_queue_exit(ring);
        return ret;
    }
    return 0;
}

static void luring_cleanup(EngineState *s)
{
    io_uring_queue_exit(&luring_state(s)->ring);
}

/* ---- Submission --------------------------------------------------------- */

/* Transfers at least this big go straight to io_uring's worker threads. */
#define LURING_ASYNC_BYTES (256 * 1024)

static void prep_sqe(struct io_uring_sqe *sqe, EngineReq *req)
{
    switch (req->op) {
    case ENGINE_READ:
        /* One buffer: the plain opcode, which the kernel can more often
         * complete inline instead of handing to a worker. */
        if (req->niov == 1) {
            io_uring_prep_read(sqe, req->fd, req->iov[0].iov_base,
                               (unsigned)req->iov[0].iov_len, req->offset);
        } else {
            io_uring_prep_readv(sqe, req->fd, req->iov, (unsigned)req->niov, req->offset);
        }
        break;
    case ENGINE_WRITE:
        if (req->niov == 1) {
            io_uring_prep_write(sqe, req->fd, req->iov[0].iov_base,
                                (unsigned)req->iov[0].iov_len, req->offset);
        } else {
            io_uring_prep_writev(sqe, req->fd, req->iov, (unsigned)req->niov, req->offset);
        }
        break;
    case ENGINE_FLUSH:
        io_uring_prep_fsync(sqe, req->fd, IORING_FSYNC_DATASYNC);
        break;
    default:
        abort();
    }
    /*
     * A big buffered transfer is a long memcpy: done inline it would
     * serialise every such request on this thread.  Handing it to the
     * kernel's workers lets several run on other cores at once.
     */
    if (req->op != ENGINE_FLUSH && req->total - req->done >= LURING_ASYNC_BYTES) {
        io_uring_sqe_set_flags(sqe, IOSQE_ASYNC);
    }
    io_uring_sqe_set_data(sqe, req);
}

/* Move queued requests into SQEs while the ring has room. */
static void fill_sqes(LuringState *ls)
{
    EngineState *s = &ls->core;

    while (!list_empty(&s->pending) && engine_room(s) > 0) {
        struct io_uring_sqe *sqe = io_uring_get_sqe(&ls->ring);

        assert(sqe);   /* guaranteed by the in_flight + unsubmitted bound */
        prep_sqe(sqe, engine_dequeue(s));
        s->unsubmitted++;
    }
}

static void luring_submit(EngineState *s)
{
    LuringState *ls = luring_state(s);
    int ret;

    fill_sqes(ls);
    if (s->unsubmitted == 0) {
        return;
    }
    do {
        ret = io_uring_submit(&ls->ring);
        s->stats.submit_calls++;
    } while (ret == -EINTR);
    if (ret < 0) {
        /* The SQEs stay in the ring; the next io_uring_submit() retries them. */
        if (ret != -EAGAIN && ret != -EBUSY && ret != -ENOMEM &&
            !s->submit_error_reported) {
            s->submit_error_reported = true;
            error_report("io_uring_submit: %s; retrying", strerror(-ret));
        }
        engine_set_blocked(s);
        return;
    }
    assert(ret <= s->unsubmitted);
    s->unsubmitted -= ret;
    engine_note_accepted(s, ret);
    assert(s->unsubmitted == (int64_t)io_uring_sq_ready(&ls->ring));
    if (s->unsubmitted > 0) {
        engine_set_blocked(s);
    }
}

/* ---- Completion ----------------------------------------------------------- */

static int luring_reap(EngineState *s)
{
    struct io_uring *ring = &luring_state(s)->ring;
    struct io_uring_cqe *cqe;
    int n = 0;

    while (io_uring_peek_cqe(ring, &cqe) == 0) {
        EngineReq *req = io_uring_cqe_get_data(cqe);
        int res = cqe->res;

        /* Consume first: a nested event loop must not see it again. */
        io_uring_cqe_seen(ring, cqe);
        n++;
        engine_req_done(s, req, res);
    }
    return n;
}

static bool luring_ready(EngineState *s)
{
    return io_uring_cq_ready(&luring_state(s)->ring) > 0;
}

/* ---- Entry points ----------------------------------------------------------- */

static const EngineOps luring_ops = {
    .name = "io_uring",
    .key = AIO_DATA_IO_URING,
    .state_size = sizeof(LuringState),
    .setup = luring_setup,
    .cleanup = luring_cleanup,
    .submit = luring_submit,
    .reap = luring_reap,
    .ready = luring_ready,
};

int coroutine_fn luring_co_submit(int fd, EngineOp op, uint64_t offset,
                                  const struct iovec *iov, int niov)
{
    EngineReq req;

    return engine_co_submit(&luring_ops, &req, fd, op, offset, iov, niov);
}

bool luring_init_thread(Error **errp)
{
    return engine_init_thread(&luring_ops, errp);
}

void luring_get_stats(EngineStats *st)
{
    engine_get_stats(&luring_ops, st);
}
