/*
 * aio-engine.h - native asynchronous I/O engines (io_uring, Linux AIO).
 *
 * Half: I/O.  Every function here runs in a thread that has an event loop
 * (IO_CODE()), and the submit functions only in a coroutine.
 *
 * Each engine keeps one state per AioContext -- a kernel ring, an eventfd
 * that the kernel signals on completion, a queue of requests waiting to be
 * submitted -- created lazily by the context's home thread and freed with
 * the context.  A request always goes to the state of the *calling*
 * thread's context, and only that thread reaps its completion and resumes
 * the waiting coroutine, so the state needs no lock (seed 002: completions
 * processed by two threads at once corrupted the counters).  Moving a node
 * to another thread therefore needs no migration of engine state: after a
 * drain nothing is in flight, and later requests use the new thread's
 * state.
 *
 * Batching: inside a defer_call_begin()/defer_call_end() section requests
 * are queued and go to the kernel in one system call at the end of the
 * section, or earlier once ENGINE_MAX_BATCH are queued (fewer when the
 * ring is nearly full).  Outside a section each request is submitted at
 * once.  Completion processing opens a section itself, so requests issued
 * by the coroutines it resumes are batched too.
 *
 * If the engine cannot be set up in a thread (io_uring disabled by a
 * seccomp filter or sysctl, aio-max-nr reached, out of file descriptors),
 * the submit functions still work: they do the operation with blocking
 * system calls on the thread pool (see engine_co_submit_threads()).  The
 * file driver checks *_init_thread() first, so that it can warn the user.
 */
#ifndef BLOCKD_AIO_ENGINE_H
#define BLOCKD_AIO_ENGINE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "blockd/aio.h"
#include "blockd/compiler.h"
#include "blockd/error.h"

typedef enum EngineOp {
    ENGINE_READ,
    ENGINE_WRITE,
    ENGINE_FLUSH,            /* fdatasync(); offset and iov are ignored */
} EngineOp;

/* Entries of each io_uring ring / Linux AIO context: at most this many
 * operations are in the kernel at once per thread; more wait queued. */
#define ENGINE_RING_ENTRIES 128
/* Queued requests that are submitted at once even inside a section. */
#define ENGINE_MAX_BATCH 32

/* The batch limit for the calling thread: its context's aio-max-batch if
 * set, else ENGINE_MAX_BATCH.  I/O. */
static inline int64_t engine_max_batch(void)
{
    AioContext *ctx = current_aio_context();
    int64_t n = ctx ? aio_context_get_max_batch(ctx) : 0;
    return n > 0 ? n : ENGINE_MAX_BATCH;
}

/*
 * Submit one operation on @fd through the calling thread's io_uring and
 * yield until it has completed; the coroutine resumes in its own thread.
 * READ/WRITE transfer the bytes described by @iov/@niov at @offset (the
 * array and the buffers must stay valid until the call returns; they are
 * not modified).  A short transfer is continued with the remainder; a
 * read that reaches end of file returns the bytes read so far, and the
 * caller zero-fills the rest.  Returns the bytes transferred (0 for
 * FLUSH), or -errno (-EINVAL if the request is larger than INT_MAX bytes).
 * The ring is created on first use in the thread.  I/O, coroutine only.
 */
int coroutine_fn luring_co_submit(int fd, EngineOp op, uint64_t offset,
                                  const struct iovec *iov, int niov);

/*
 * The same through the calling thread's Linux AIO context (libaio).
 * FLUSH uses IOCB_CMD_FDSYNC; if the kernel rejects it with EINVAL (no
 * support for it, or a file without fsync), it is retried as fdatasync()
 * on the thread pool.  Linux AIO is only truly asynchronous for O_DIRECT
 * files; buffered requests are carried out inside io_submit().
 * I/O, coroutine only.
 */
int coroutine_fn laio_co_submit(int fd, EngineOp op, uint64_t offset,
                                const struct iovec *iov, int niov);

/*
 * Can the calling thread use io_uring?  Creates the thread's state if it
 * does not exist yet.  On failure returns false with @errp set; setup is
 * attempted once per context, and later requests in this thread then use
 * the thread pool.  I/O.
 */
bool luring_init_thread(Error **errp);

/* The same for Linux AIO.  I/O. */
bool laio_init_thread(Error **errp);

/*
 * Counters of the calling thread's engine state (all zero if the thread
 * has none yet), for tests and benchmarks.
 */
typedef struct EngineStats {
    uint64_t submit_calls;   /* io_uring_submit() / io_submit() calls */
    uint64_t submitted;      /* operations the kernel accepted (resubmissions included) */
    uint64_t completed;      /* completions reaped */
    int64_t in_flight;       /* accepted by the kernel, completion not yet reaped */
    int64_t queued;          /* waiting in the engine to be accepted by the kernel */
    uint64_t resubmitted;    /* remainders of short transfers, EINTR/EAGAIN retries */
    uint64_t fallbacks;      /* operations done on the thread pool instead */
    uint64_t poll_hits;      /* busy-polling found completions (adaptive polling) */
    bool available;          /* the engine is set up and usable in this thread */
} EngineStats;

/* Fill @st from the calling thread's io_uring state.  I/O. */
void luring_get_stats(EngineStats *st);

/* Fill @st from the calling thread's Linux AIO state.  I/O. */
void laio_get_stats(EngineStats *st);

/*
 * Carry out one operation with blocking system calls (preadv, pwritev,
 * fdatasync) on the thread pool and yield until it is done; same contract
 * as luring_co_submit().  What the engines fall back to, and usable
 * directly as the "threads" engine.  I/O, coroutine only.
 */
int coroutine_fn engine_co_submit_threads(int fd, EngineOp op, uint64_t offset,
                                          const struct iovec *iov, int niov);

#endif /* BLOCKD_AIO_ENGINE_H */
