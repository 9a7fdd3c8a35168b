/*
 * engine-core.h - what the io_uring and Linux AIO engines have in common.
 *
 * Half: I/O.  Internal to src/block; the public API is aio-engine.h.
 *
 * Both engines keep one EngineState per AioContext and per engine, embedded
 * at the start of their own state (LuringState, LaioState).  The core owns
 * everything that does not depend on the kernel interface:
 *   - the lifecycle: created lazily by the home thread on first use
 *     (kept also when setup failed, so that setup is not retried for every
 *     request), freed with the context;
 *   - the eventfd the kernel signals, its fd handler and poll handler, and
 *     the timer that retries a submission refused with nothing in flight;
 *   - the FIFO of requests waiting for the kernel, the accounting and the
 *     statistics;
 *   - batching: submission is deferred to the end of the defer_call section
 *     unless a full batch is queued;
 *   - the completion skeleton and what a completion means for a request
 *     (error, short transfer continued, end of file, retry);
 *   - the coroutine side of a request, and the thread-pool fallback.
 * The engines supply an EngineOps: how to set up and tear down the kernel
 * side, how to hand queued requests to it and how to reap completions.
 *
 * Per-thread rule (spec §10): a state is only ever touched by its context's
 * home thread -- submission, completion and the counters -- so it needs no
 * lock, and the counters never go negative (asserted).
 *
 * Accounting of one state:
 *   in_queue     requests on @pending, not yet given to the kernel;
 *   unsubmitted  taken off @pending but not yet accepted by the kernel
 *                (io_uring: SQEs filled in; always 0 for Linux AIO, whose
 *                io_submit() takes requests straight from @pending);
 *   in_flight    accepted by the kernel, completion not yet reaped.
 * in_flight + unsubmitted never exceeds ENGINE_RING_ENTRIES, so the kernel
 * rings always have room for them.
 *
 * Nested event loops: an engine consumes each completion from the kernel
 * ring before the core wakes its coroutine, and the core drains the
 * eventfd only after a reap found the ring empty, then reaps again.  While
 * unreaped completions remain the eventfd stays readable, so an event loop
 * nested below the handler (the epoll watch is level-triggered) runs the
 * handler again and nothing is lost.
 */
#ifndef BLOCKD_ENGINE_CORE_H
#define BLOCKD_ENGINE_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "blockd/aio-engine.h"
#include "blockd/aio.h"
#include "blockd/coroutine.h"
#include "blockd/error.h"
#include "blockd/list.h"

/* One operation, on the stack of the coroutine that waits for it. */
typedef struct EngineReq {
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
    ListNode node;               /* in EngineState.pending, or a local list */
} EngineReq;

typedef struct EngineOps EngineOps;

/* The part of an engine's per-context state that the core manages. */
typedef struct EngineState {
    const EngineOps *ops;
    AioContext *ctx;
    bool usable;                 /* false: setup failed, use the thread pool */
    int setup_errno;
    int efd;                     /* signalled by the kernel on completion */
    AioTimer *retry_timer;
    ListNode pending;            /* of EngineReq, FIFO */
    int64_t in_queue;
    int64_t unsubmitted;
    int64_t in_flight;
    bool blocked;                /* the kernel refused more: wait for completions */
    bool submit_error_reported;  /* engines report a submission error once */
    EngineStats stats;
} EngineState;

struct EngineOps {
    const char *name;            /* "io_uring", "Linux AIO": for messages */
    AioContextDataKey key;       /* where the state hangs off the context */
    size_t state_size;           /* of the engine's state; EngineState first */

    /* Set up the kernel side for @s (whose efd exists): 0 or -errno.  On
     * failure nothing must be left to release. */
    int (*setup)(EngineState *s);
    /* Release what setup() created.  Nothing is in flight any more. */
    void (*cleanup)(EngineState *s);
    /* Hand requests from @pending to the kernel while engine_room() allows;
     * on a temporary refusal call engine_set_blocked().  Not called while
     * the state is blocked. */
    void (*submit)(EngineState *s);
    /* Consume every ready completion from the kernel ring and pass it to
     * engine_req_done(); returns how many there were. */
    int (*reap)(EngineState *s);
    /* Are completions ready?  For busy-polling: must not consume them. */
    bool (*ready)(EngineState *s);
    /* Optional: the final result of @req once the kernel completed it
     * (Linux AIO redoes a refused FDSYNC on the thread pool).  Coroutine. */
    int coroutine_fn (*co_finish)(EngineState *s, EngineReq *req);
};

/* ---- Entry points (the engines' public functions forward here) ---------- */

/*
 * Carry out one operation through the calling thread's state of engine
 * @ops, using @req (uninitialized, on the caller's stack, possibly inside
 * an engine-specific request) -- or on the thread pool if the engine is not
 * usable in this thread.  Same contract as luring_co_submit().
 * I/O, coroutine only.
 */
int coroutine_fn engine_co_submit(const EngineOps *ops, EngineReq *req,
                                  int fd, EngineOp op, uint64_t offset,
                                  const struct iovec *iov, int niov);

/* As luring_init_thread() / luring_get_stats(), for engine @ops.  I/O. */
bool engine_init_thread(const EngineOps *ops, Error **errp);
void engine_get_stats(const EngineOps *ops, EngineStats *st);

/* ---- For the engines' callbacks (home thread only) ------------------------- */

/* Free entries the kernel side can take now. */
int64_t engine_room(EngineState *s);

/* Take the oldest request off @pending. */
EngineReq *engine_dequeue(EngineState *s);

/* The kernel accepted @n more requests. */
void engine_note_accepted(EngineState *s, int n);

/* The kernel refused more requests for now: wait for a completion, or for
 * the retry timer if none can come. */
void engine_set_blocked(EngineState *s);

/* The kernel completed @req (accepted earlier) with @res bytes or -errno:
 * finish it, or queue what remains.  May enter @req's coroutine. */
void engine_req_done(EngineState *s, EngineReq *req, long res);

/* Finish @req with @ret and wake its coroutine; @req may be gone after. */
void engine_req_complete(EngineReq *req, int ret);

#endif /* BLOCKD_ENGINE_CORE_H */
