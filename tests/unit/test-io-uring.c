/*
 * test-io-uring - the io_uring engine (and, compiled with TEST_LIBAIO by
 * test-linux-aio.c, the Linux AIO engine: the same tests run against both).
 *
 * Data goes to temporary files in /tmp (unlinked at once) and is checked
 * byte for byte.  Requests are issued from coroutines in the main thread
 * and in iothreads; every coroutine checks after each request that it
 * resumed in its own thread.  The engine's counters (submit system calls,
 * requests in flight) are read in the thread that owns the state, through
 * a bottom half when that is an iothread.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "test-util.h"
#include "blockd/aio-engine.h"
#include "blockd/defer-call.h"
#include "blockd/error.h"

#ifdef TEST_LIBAIO
#define ENGINE_NAME "linux-aio"
#define engine_co_submit laio_co_submit
#define engine_get_stats laio_get_stats
#define engine_init_thread laio_init_thread
#else
#define ENGINE_NAME "io_uring"
#define engine_co_submit luring_co_submit
#define engine_get_stats luring_get_stats
#define engine_init_thread luring_init_thread
#endif

#define KiB 1024
#define NCO 32                   /* requests in flight per iothread */
#define CHUNK (16 * KiB)         /* bytes per coroutine in the concurrent test */

/* ---- Helpers ---------------------------------------------------------------- */

/* The byte expected at file offset @off when written with @tag. */
static uint8_t pat(uint64_t off, unsigned tag)
{
    uint64_t x = off * 0x9E3779B97F4A7C15ULL + (tag + 1) * 0xC2B2AE3D27D4EB4FULL;
    x ^= x >> 29;
    x *= 0xBF58476D1CE4E5B9ULL;
    return (uint8_t)(x ^ (x >> 32));
}

static void fill(uint8_t *buf, size_t len, uint64_t off, unsigned tag)
{
    for (size_t i = 0; i < len; i++) {
        buf[i] = pat(off + i, tag);
    }
}

/* Index of the first wrong byte, or -1. */
static long check(const uint8_t *buf, size_t len, uint64_t off, unsigned tag)
{
    for (size_t i = 0; i < len; i++) {
        if (buf[i] != pat(off + i, tag)) {
            return (long)i;
        }
    }
    return -1;
}

/* A new, already unlinked temporary file, opened with O_RDWR | @flags.
 * Returns -errno if that open fails (O_DIRECT on tmpfs: -EINVAL). */
/* A temporary file in @dir, reopened with @flags; -errno if that fails. */
static int temp_file_in(const char *dir, int flags)
{
    char path[256];
    int fd, fd2;

    snprintf(path, sizeof(path), "%s/blockd-engine-XXXXXX", dir);
    fd = mkstemp(path);
    assert_true(fd >= 0);
    if (!flags) {
        unlink(path);
        return fd;
    }
    fd2 = open(path, O_RDWR | O_CLOEXEC | flags);
    fd2 = fd2 < 0 ? -errno : fd2;
    unlink(path);
    close(fd);
    return fd2;
}

/* In /tmp, or -- for O_DIRECT, which some /tmp file systems lack -- in the
 * current directory (the build tree). */
static int temp_file(int flags)
{
    int fd = temp_file_in("/tmp", flags);

    if (fd == -EINVAL && (flags & O_DIRECT)) {
        fd = temp_file_in(".", flags);
    }
    return fd;
}

static int count_open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int n = 0;

    assert_non_null(d);
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] != '.') {
            n++;
        }
    }
    closedir(d);
    return n;
}

static void *aligned_buf(size_t len)
{
    void *p = NULL;

    assert_int_equal(posix_memalign(&p, 4096, len), 0);
    return p;
}

/* Run @fn(@opaque) in a new coroutine of the main thread until it sets *done. */
static void run_main_co(CoroutineEntry *fn, void *opaque, unsigned *done)
{
    coroutine_enter(coroutine_create(fn, opaque));
    AIO_WAIT_WHILE(NULL, !atomic_load_acquire(done));
}

static void stats_bh(void *opaque)
{
    engine_get_stats(opaque);
}

/* The engine counters of @ctx's thread (main thread only). */
static EngineStats stats_of(AioContext *ctx)
{
    EngineStats st;

    if (ctx == main_aio_context()) {
        engine_get_stats(&st);
    } else {
        aio_wait_bh_oneshot(ctx, stats_bh, &st);
    }
    return st;
}

static void assert_idle(const EngineStats *st)
{
    assert_int_equal(st->in_flight, 0);
    assert_int_equal(st->queued, 0);
}

/* ---- Reads and writes from a main-thread coroutine -------------------------- */

typedef struct Basic {
    int fd;
    unsigned done;           /* atomic */
    int wret[3], rret[3], fret;
    long bad[3];
    unsigned wrong_ctx;
} Basic;

static void coroutine_fn basic_co(void *opaque)
{
    Basic *b = opaque;
    AioContext *home = current_aio_context();
    uint8_t *w = malloc(128 * KiB), *r = malloc(128 * KiB);
    /* Three requests: one buffer; three uneven pieces; a large one. */
    static const struct { uint64_t off; size_t len; } req[3] = {
        { 0, 4096 }, { 10000, 5101 }, { 1 << 20, 64 * KiB },
    };

    for (int i = 0; i < 3; i++) {
        struct iovec iov[3];
        int n;

        fill(w, req[i].len, req[i].off, 7);
        if (i == 1) {
            iov[0] = (struct iovec){ w, 100 };
            iov[1] = (struct iovec){ w + 100, 5000 };
            iov[2] = (struct iovec){ w + 5100, 1 };
            n = 3;
        } else {
            iov[0] = (struct iovec){ w, req[i].len };
            n = 1;
        }
        b->wret[i] = engine_co_submit(b->fd, ENGINE_WRITE, req[i].off, iov, n);
        b->wrong_ctx += current_aio_context() != home;
    }
    b->fret = engine_co_submit(b->fd, ENGINE_FLUSH, 0, NULL, 0);
    b->wrong_ctx += current_aio_context() != home;
    for (int i = 0; i < 3; i++) {
        /* Read back split differently. */
        size_t half = req[i].len / 2 + 3;
        struct iovec iov[2] = { { r, half }, { r + half, req[i].len - half } };

        memset(r, 0, req[i].len);
        b->rret[i] = engine_co_submit(b->fd, ENGINE_READ, req[i].off, iov, 2);
        b->wrong_ctx += current_aio_context() != home;
        b->bad[i] = check(r, req[i].len, req[i].off, 7);
    }
    free(w);
    free(r);
    atomic_store_release(&b->done, 1);
}

static void test_rw_main(void **state)
{
    Basic b = { .fd = temp_file(0) };
    EngineStats st;

    (void)state;
    assert_true(engine_init_thread(&error_abort));
    run_main_co(basic_co, &b, &b.done);
    assert_int_equal(b.wret[0], 4096);
    assert_int_equal(b.wret[1], 5101);
    assert_int_equal(b.wret[2], 64 * KiB);
    assert_int_equal(b.fret, 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(b.rret[i], b.wret[i]);
        assert_int_equal(b.bad[i], -1);
    }
    assert_int_equal(b.wrong_ctx, 0);
    st = stats_of(main_aio_context());
    assert_true(st.available);
    assert_int_equal(st.completed, 7);
    assert_int_equal(st.submitted, 7);
    assert_int_equal(st.fallbacks, 0);
    assert_idle(&st);
    close(b.fd);
}

/* ---- O_DIRECT ------------------------------------------------------------------ */

typedef struct Direct {
    int fd;
    unsigned done;
    int errors;
    long bad;
} Direct;

static void coroutine_fn direct_co(void *opaque)
{
    Direct *d = opaque;
    uint8_t *w = aligned_buf(64 * KiB), *r = aligned_buf(64 * KiB);

    for (int i = 0; i < 16; i++) {
        uint64_t off = (uint64_t)i * 64 * KiB;
        struct iovec wv[2] = { { w, 4096 }, { w + 4096, 60 * KiB } };
        struct iovec rv[3] = { { r, 32 * KiB }, { r + 32 * KiB, 4096 }, { r + 36 * KiB, 28 * KiB } };

        fill(w, 64 * KiB, off, 3);
        memset(r, 0, 64 * KiB);
        d->errors += engine_co_submit(d->fd, ENGINE_WRITE, off, wv, 2) != 64 * KiB;
        d->errors += engine_co_submit(d->fd, ENGINE_READ, off, rv, 3) != 64 * KiB;
        if (d->bad < 0) {
            d->bad = check(r, 64 * KiB, off, 3);
        }
    }
    d->errors += engine_co_submit(d->fd, ENGINE_FLUSH, 0, NULL, 0) != 0;
    free(w);
    free(r);
    atomic_store_release(&d->done, 1);
}

static void test_odirect(void **state)
{
    Direct d = { .bad = -1 };

    (void)state;
    d.fd = temp_file(O_DIRECT);
    /* Neither /tmp nor the build tree takes O_DIRECT: that is a failure,
     * not a reason to skip the case. */
    assert_true(d.fd >= 0);
    run_main_co(direct_co, &d, &d.done);
    assert_int_equal(d.errors, 0);
    assert_int_equal(d.bad, -1);
    EngineStats st = stats_of(main_aio_context());
    assert_idle(&st);
    close(d.fd);
}

/* ---- Two iothreads, 32 requests in flight each ----------------------------- */

typedef struct ThreadJob ThreadJob;

typedef struct Worker {
    ThreadJob *job;
    int index;
} Worker;

struct ThreadJob {
    AioContext *ctx;
    int fd;
    uint64_t base;
    unsigned tag;
    unsigned done;           /* atomic: workers finished */
    unsigned errors;         /* atomic */
    unsigned wrong_ctx;      /* atomic */
    unsigned bad_data;       /* atomic */
    EngineStats after_start; /* written in the iothread before the first completion */
    uint64_t calls_before;
    Worker w[NCO];
};

static void coroutine_fn worker_co(void *opaque)
{
    Worker *wk = opaque;
    ThreadJob *j = wk->job;
    uint64_t off = j->base + (uint64_t)wk->index * CHUNK;
    uint8_t *w = malloc(CHUNK), *r = malloc(CHUNK);
    size_t split = 1 + (size_t)wk->index * 97;
    struct iovec wv[2] = { { w, split }, { w + split, CHUNK - split } };
    struct iovec rv[3] = { { r, 4096 }, { r + 4096, 1 }, { r + 4097, CHUNK - 4097 } };
    int ret;

    fill(w, CHUNK, off, j->tag);
    ret = engine_co_submit(j->fd, ENGINE_WRITE, off, wv, 2);
    if (ret != CHUNK) {
        atomic_inc(&j->errors);
    }
    if (current_aio_context() != j->ctx) {
        atomic_inc(&j->wrong_ctx);
    }
    /* Let the others' writes finish too, then read back. */
    tu_co_yield_to_loop();
    memset(r, 0, CHUNK);
    ret = engine_co_submit(j->fd, ENGINE_READ, off, rv, 3);
    if (ret != CHUNK) {
        atomic_inc(&j->errors);
    }
    if (current_aio_context() != j->ctx) {
        atomic_inc(&j->wrong_ctx);
    }
    if (check(r, CHUNK, off, j->tag) >= 0) {
        atomic_inc(&j->bad_data);
    }
    free(w);
    free(r);
    atomic_fetch_add(&j->done, 1);
    aio_wait_kick();
}

/* In the iothread: start all workers; each submits at once (no section). */
static void start_workers_bh(void *opaque)
{
    ThreadJob *j = opaque;
    EngineStats st;

    engine_get_stats(&st);
    j->calls_before = st.submit_calls;
    for (int i = 0; i < NCO; i++) {
        j->w[i] = (Worker){ .job = j, .index = i };
        coroutine_enter(coroutine_create(worker_co, &j->w[i]));
    }
    /* Nothing was reaped yet: this thread has not polled since. */
    engine_get_stats(&j->after_start);
}

static void test_two_iothreads(void **state)
{
    IOThread *iot[2];
    ThreadJob *job = calloc(2, sizeof(*job));
    int fd = temp_file(0);
    uint8_t *buf = malloc(CHUNK);

    (void)state;
    for (int t = 0; t < 2; t++) {
        iot[t] = tu_iothread_new(t ? "eng-b" : "eng-a");
        job[t].ctx = iothread_get_aio_context(iot[t]);
        job[t].fd = fd;
        job[t].base = (uint64_t)t * NCO * CHUNK;
        job[t].tag = 100 + t;
    }
    for (int t = 0; t < 2; t++) {
        aio_bh_schedule_oneshot(job[t].ctx, start_workers_bh, &job[t]);
    }
    AIO_WAIT_WHILE(NULL, atomic_read_mb(&job[0].done) < NCO ||
                         atomic_read_mb(&job[1].done) < NCO);
    for (int t = 0; t < 2; t++) {
        EngineStats st = stats_of(job[t].ctx);

        assert_int_equal(atomic_read(&job[t].errors), 0);
        assert_int_equal(atomic_read(&job[t].wrong_ctx), 0);
        assert_int_equal(atomic_read(&job[t].bad_data), 0);
        /* 32 in flight at once, each submitted by its own system call. */
        assert_int_equal(job[t].after_start.in_flight + job[t].after_start.queued, NCO);
        assert_int_equal(job[t].after_start.in_flight, NCO);
        assert_int_equal(job[t].after_start.submit_calls - job[t].calls_before, NCO);
        assert_int_equal(st.completed, 2 * NCO);
        assert_idle(&st);
        print_message("%s: %s: %" PRIu64 " requests in %" PRIu64 " submit calls\n",
                      ENGINE_NAME, t ? "eng-b" : "eng-a", st.submitted, st.submit_calls);
    }
    /* Every byte, seen through the page cache by the main thread. */
    for (int t = 0; t < 2; t++) {
        for (int i = 0; i < NCO; i++) {
            uint64_t off = job[t].base + (uint64_t)i * CHUNK;

            assert_int_equal(pread(fd, buf, CHUNK, (off_t)off), CHUNK);
            assert_int_equal(check(buf, CHUNK, off, job[t].tag), -1);
        }
    }
    iothread_destroy(iot[0]);
    iothread_destroy(iot[1]);
    free(buf);
    free(job);
    close(fd);
}

/* ---- Errors ------------------------------------------------------------------- */

typedef struct Errs {
    int rdonly_fd, rw_fd;
    unsigned done;
    int write_rdonly, read_badfd, flush_rdonly, write_after;
} Errs;

static void coroutine_fn errs_co(void *opaque)
{
    Errs *e = opaque;
    char buf[512] = { 1 };
    struct iovec iov = { buf, sizeof(buf) };

    e->write_rdonly = engine_co_submit(e->rdonly_fd, ENGINE_WRITE, 0, &iov, 1);
    e->read_badfd = engine_co_submit(-1, ENGINE_READ, 0, &iov, 1);
    e->flush_rdonly = engine_co_submit(e->rdonly_fd, ENGINE_FLUSH, 0, NULL, 0);
    /* The engine is still fine afterwards. */
    e->write_after = engine_co_submit(e->rw_fd, ENGINE_WRITE, 0, &iov, 1);
    atomic_store_release(&e->done, 1);
}

static void test_errors(void **state)
{
    char path[] = "/tmp/blockd-engine-XXXXXX";
    Errs e = { 0 };
    EngineStats st;

    (void)state;
    e.rw_fd = mkstemp(path);
    assert_true(e.rw_fd >= 0);
    e.rdonly_fd = open(path, O_RDONLY | O_CLOEXEC);
    assert_true(e.rdonly_fd >= 0);
    unlink(path);
    run_main_co(errs_co, &e, &e.done);
    assert_int_equal(e.write_rdonly, -EBADF);
    assert_int_equal(e.read_badfd, -EBADF);
    assert_int_equal(e.flush_rdonly, 0);
    assert_int_equal(e.write_after, 512);
    st = stats_of(main_aio_context());
    assert_idle(&st);
    close(e.rdonly_fd);
    close(e.rw_fd);
}

/* ---- Batching with defer_call sections ------------------------------------------- */

typedef struct Batch {
    int fd;
    unsigned done;           /* coroutines finished */
    unsigned errors;
} Batch;

typedef struct BatchReq {
    Batch *b;
    int index;
    uint8_t buf[4096];
} BatchReq;

static void coroutine_fn batch_read_co(void *opaque)
{
    BatchReq *r = opaque;
    struct iovec iov = { r->buf, sizeof(r->buf) };
    uint64_t off = (uint64_t)(r->index % 16) * 4096;

    if (engine_co_submit(r->b->fd, ENGINE_READ, off, &iov, 1) != 4096 ||
        check(r->buf, 4096, off, 9) >= 0) {
        r->b->errors++;
    }
    r->b->done++;
}

static void test_batching(void **state)
{
    Batch b = { 0 };
    BatchReq *reqs = calloc(64, sizeof(*reqs));
    uint8_t *data = malloc(16 * 4096);
    EngineStats st0, st1, st2;

    (void)state;
    b.fd = temp_file(0);
    fill(data, 16 * 4096, 0, 9);
    assert_int_equal(pwrite(b.fd, data, 16 * 4096, 0), 16 * 4096);
    assert_true(engine_init_thread(&error_abort));
    for (int i = 0; i < 64; i++) {
        reqs[i] = (BatchReq){ .b = &b, .index = i };
    }

    /* 16 requests in one section: one system call at its end. */
    engine_get_stats(&st0);
    defer_call_begin();
    for (int i = 0; i < 16; i++) {
        coroutine_enter(coroutine_create(batch_read_co, &reqs[i]));
    }
    engine_get_stats(&st1);
    assert_int_equal(st1.submit_calls, st0.submit_calls);
    assert_int_equal(st1.queued, 16);
    defer_call_end();
    engine_get_stats(&st2);
    assert_int_equal(st2.submit_calls - st0.submit_calls, 1);
    assert_int_equal(st2.submitted - st0.submitted, 16);
    assert_int_equal(st2.in_flight, 16);
    print_message("%s: 16 requests in a section: %" PRIu64 " submit call(s)\n",
                  ENGINE_NAME, st2.submit_calls - st0.submit_calls);
    AIO_WAIT_WHILE(NULL, b.done < 16);

    /* Outside a section each request goes to the kernel at once. */
    for (int i = 16; i < 20; i++) {
        engine_get_stats(&st0);
        coroutine_enter(coroutine_create(batch_read_co, &reqs[i]));
        engine_get_stats(&st1);
        assert_int_equal(st1.submit_calls - st0.submit_calls, 1);
        assert_int_equal(st1.queued, 0);
    }
    AIO_WAIT_WHILE(NULL, b.done < 20);

    /* 40 in a section: the first 32 go at once (batch limit), 8 at the end. */
    engine_get_stats(&st0);
    defer_call_begin();
    for (int i = 20; i < 60; i++) {
        coroutine_enter(coroutine_create(batch_read_co, &reqs[i]));
        engine_get_stats(&st1);
        assert_int_equal(st1.submit_calls - st0.submit_calls, i - 20 + 1 >= ENGINE_MAX_BATCH);
    }
    defer_call_end();
    engine_get_stats(&st2);
    assert_int_equal(st2.submit_calls - st0.submit_calls, 2);
    assert_int_equal(st2.submitted - st0.submitted, 40);
    print_message("%s: 40 requests in a section: %" PRIu64 " submit calls\n",
                  ENGINE_NAME, st2.submit_calls - st0.submit_calls);
    AIO_WAIT_WHILE(NULL, b.done < 60);

    /* The context's aio-max-batch lowers the limit: 16 requests, batches of 4. */
    aio_context_set_max_batch(main_aio_context(), 4);
    engine_get_stats(&st0);
    defer_call_begin();
    for (int i = 0; i < 16; i++) {
        reqs[i] = (BatchReq){ .b = &b, .index = i };
        coroutine_enter(coroutine_create(batch_read_co, &reqs[i]));
    }
    defer_call_end();
    engine_get_stats(&st2);
    assert_int_equal(st2.submit_calls - st0.submit_calls, 4);
    aio_context_set_max_batch(main_aio_context(), 0);
    AIO_WAIT_WHILE(NULL, b.done < 76);

    assert_int_equal(b.errors, 0);
    engine_get_stats(&st2);
    assert_idle(&st2);
    free(reqs);
    free(data);
    close(b.fd);
}

/* More requests than the ring holds: the rest wait queued and go to the
 * kernel as earlier ones complete. */
static void test_ring_full(void **state)
{
    enum { N = ENGINE_RING_ENTRIES + 72 };
    Batch b = { 0 };
    BatchReq *reqs = calloc(N, sizeof(*reqs));
    uint8_t *data = malloc(16 * 4096);
    EngineStats st0, st1;

    (void)state;
    b.fd = temp_file(0);
    fill(data, 16 * 4096, 0, 9);
    assert_int_equal(pwrite(b.fd, data, 16 * 4096, 0), 16 * 4096);
    assert_true(engine_init_thread(&error_abort));
    engine_get_stats(&st0);
    defer_call_begin();
    for (int i = 0; i < N; i++) {
        reqs[i] = (BatchReq){ .b = &b, .index = i };
        coroutine_enter(coroutine_create(batch_read_co, &reqs[i]));
    }
    defer_call_end();
    engine_get_stats(&st1);
    /* Full batches of 32 until the ring was full; no call for the rest. */
    assert_int_equal(st1.in_flight, ENGINE_RING_ENTRIES);
    assert_int_equal(st1.queued, N - ENGINE_RING_ENTRIES);
    assert_int_equal(st1.submit_calls - st0.submit_calls, ENGINE_RING_ENTRIES / ENGINE_MAX_BATCH);
    AIO_WAIT_WHILE(NULL, b.done < N);
    engine_get_stats(&st1);
    assert_int_equal(b.errors, 0);
    assert_int_equal(st1.submitted - st0.submitted, N);
    assert_int_equal(st1.completed - st0.completed, N);
    print_message("%s: %d requests with a %d-entry ring: %" PRIu64 " submit calls\n",
                  ENGINE_NAME, N, ENGINE_RING_ENTRIES, st1.submit_calls - st0.submit_calls);
    assert_idle(&st1);
    free(reqs);
    free(data);
    close(b.fd);
}

/* ---- End of file ------------------------------------------------------------------ */

typedef struct Eof {
    int fd;
    unsigned done;
    int ret_short, ret_past, ret_split;
    long bad;
} Eof;

static void coroutine_fn eof_co(void *opaque)
{
    Eof *e = opaque;
    uint8_t *buf = malloc(8192);
    struct iovec iov = { buf, 8192 };
    struct iovec split[2] = { { buf, 1000 }, { buf + 1000, 7192 } };

    memset(buf, 0xee, 8192);
    e->ret_short = engine_co_submit(e->fd, ENGINE_READ, 8192, &iov, 1);
    e->bad = check(buf, 1808, 8192, 5);
    e->ret_past = engine_co_submit(e->fd, ENGINE_READ, 20000, &iov, 1);
    /* The end of file in the middle of the second element. */
    e->ret_split = engine_co_submit(e->fd, ENGINE_READ, 9000, split, 2);
    free(buf);
    atomic_store_release(&e->done, 1);
}

static void test_read_past_eof(void **state)
{
    Eof e = { .fd = temp_file(0) };
    uint8_t data[10000];
    EngineStats st;

    (void)state;
    fill(data, sizeof(data), 0, 5);
    assert_int_equal(pwrite(e.fd, data, sizeof(data), 0), (ssize_t)sizeof(data));
    run_main_co(eof_co, &e, &e.done);
    assert_int_equal(e.ret_short, 10000 - 8192);
    assert_int_equal(e.bad, -1);
    assert_int_equal(e.ret_past, 0);
    assert_int_equal(e.ret_split, 1000);
    st = stats_of(main_aio_context());
    assert_idle(&st);
    close(e.fd);
}

/* ---- The state goes away with its iothread ---------------------------------------- */

typedef struct Simple {
    int fd;
    unsigned done;           /* atomic */
    int ret;
    int rounds;
    AioContext *ctx;
    unsigned wrong_ctx;
} Simple;

static void coroutine_fn simple_co(void *opaque)
{
    Simple *s = opaque;
    uint8_t buf[4096];
    struct iovec iov = { buf, sizeof(buf) };

    s->ret = 0;
    for (int i = 0; i < s->rounds && s->ret >= 0; i++) {
        uint64_t off = (uint64_t)(i % 64) * 4096;

        if (i < 64) {
            fill(buf, sizeof(buf), off, 11);
            s->ret = engine_co_submit(s->fd, ENGINE_WRITE, off, &iov, 1);
        } else {
            s->ret = engine_co_submit(s->fd, ENGINE_READ, off, &iov, 1);
            if (s->ret == 4096 && check(buf, 4096, off, 11) >= 0) {
                s->ret = -EILSEQ;
            }
        }
        if (current_aio_context() != s->ctx) {
            s->wrong_ctx++;
        }
    }
    atomic_store_release(&s->done, 1);
    aio_wait_kick();
}

static void test_state_freed_with_iothread(void **state)
{
    Simple s = { .fd = temp_file(0), .rounds = 100 };
    int fds_before = count_open_fds();
    IOThread *iot;
    EngineStats st;

    (void)state;
    iot = tu_iothread_new("eng-short-lived");
    s.ctx = iothread_get_aio_context(iot);
    aio_co_schedule(s.ctx, coroutine_create(simple_co, &s));
    AIO_WAIT_WHILE(NULL, !atomic_load_acquire(&s.done));
    assert_int_equal(s.ret, 4096);
    assert_int_equal(s.wrong_ctx, 0);
    st = stats_of(s.ctx);
    assert_true(st.available);
    assert_int_equal(st.completed, 100);
    assert_idle(&st);
    /* Ring, eventfd, epoll fd and notifier: all closed with the iothread.
     * (The memory is checked by LeakSanitizer in the ASan build.) */
    iothread_destroy(iot);
    assert_int_equal(count_open_fds(), fds_before);
    close(s.fd);
}

/* ---- Adaptive polling ------------------------------------------------------------ */

static void run_polled(int64_t poll_max_ns, int rounds, EngineStats *out, int64_t *poll_ns)
{
    IOThreadParams p;
    IOThread *iot;
    Simple s = { .fd = temp_file(0), .rounds = rounds };

    iothread_params_init(&p);
    if (poll_max_ns >= 0) {
        p.poll_max_ns = poll_max_ns;
    }
    iot = iothread_create("eng-poll", &p, &error_abort);
    s.ctx = iothread_get_aio_context(iot);
    aio_co_schedule(s.ctx, coroutine_create(simple_co, &s));
    AIO_WAIT_WHILE(NULL, !atomic_load_acquire(&s.done));
    assert_int_equal(s.ret, 4096);
    assert_int_equal(s.wrong_ctx, 0);
    *out = stats_of(s.ctx);
    *poll_ns = aio_context_poll_ns(s.ctx);
    iothread_destroy(iot);
    close(s.fd);
}

static void test_adaptive_polling(void **state)
{
    EngineStats st;
    int64_t poll_ns;

    (void)state;
    /* The default poll-max-ns: requests one after the other complete. */
    run_polled(-1, 2000, &st, &poll_ns);
    assert_int_equal(st.completed, 2000);
    assert_idle(&st);
    print_message("%s: poll-max-ns default: %" PRIu64 " of 2000 completions found "
                  "by busy-polling, poll window %" PRId64 " ns\n",
                  ENGINE_NAME, st.poll_hits, poll_ns);
    /* Completions land while the thread spins, not only via the eventfd. */
    assert_true(st.poll_hits > 0);

    /* Polling off: everything goes through the eventfd. */
    run_polled(0, 500, &st, &poll_ns);
    assert_int_equal(st.completed, 500);
    assert_int_equal(st.poll_hits, 0);
    assert_idle(&st);
}

/* ---- Completions while the main loop is nested, several at once ------------------ */

typedef struct Nested {
    Batch b;
    BatchReq reqs[16];
    unsigned bh_done;
    uint64_t completed_in_one_poll;
} Nested;

/* A bottom half that waits: its AIO_WAIT_WHILE is an event loop nested in
 * the one that dispatched it. */
static void nested_wait_bh(void *opaque)
{
    Nested *n = opaque;

    defer_call_begin();
    for (int i = 0; i < 16; i++) {
        coroutine_enter(coroutine_create(batch_read_co, &n->reqs[i]));
    }
    defer_call_end();
    AIO_WAIT_WHILE(main_aio_context(), n->b.done < 16);
    n->bh_done = 1;
}

static void test_nested_and_simultaneous(void **state)
{
    Nested *n = calloc(1, sizeof(*n));
    uint8_t *data = malloc(16 * 4096);
    EngineStats st0, st1;

    (void)state;
    n->b.fd = temp_file(0);
    fill(data, 16 * 4096, 0, 9);
    assert_int_equal(pwrite(n->b.fd, data, 16 * 4096, 0), 16 * 4096);
    for (int i = 0; i < 16; i++) {
        n->reqs[i] = (BatchReq){ .b = &n->b, .index = i };
    }
    aio_bh_schedule_oneshot(main_aio_context(), nested_wait_bh, n);
    AIO_WAIT_WHILE(NULL, !n->bh_done);
    assert_int_equal(n->b.done, 16);
    assert_int_equal(n->b.errors, 0);

    /* 16 completions that are all ready before the loop looks: one pass of
     * the handler reaps every one of them. */
    n->b.done = 0;
    defer_call_begin();
    for (int i = 0; i < 16; i++) {
        coroutine_enter(coroutine_create(batch_read_co, &n->reqs[i]));
    }
    defer_call_end();
    engine_get_stats(&st0);
    /* Cached data: the kernel finishes these at once; give it ample time
     * without running the loop. */
    tu_sleep_ms(50);
    assert_int_equal(n->b.done, 0);
    aio_poll(main_aio_context(), false);
    engine_get_stats(&st1);
    n->completed_in_one_poll = st1.completed - st0.completed;
    AIO_WAIT_WHILE(NULL, n->b.done < 16);
    print_message("%s: %" PRIu64 " of 16 ready completions reaped by one aio_poll()\n",
                  ENGINE_NAME, n->completed_in_one_poll);
    assert_int_equal(n->completed_in_one_poll, 16);
    assert_int_equal(n->b.errors, 0);
    engine_get_stats(&st1);
    assert_idle(&st1);
    close(n->b.fd);
    free(data);
    free(n);
}

/* ---- No engine in this thread: the thread pool takes over ------------------------- */

static void coroutine_fn fallback_co(void *opaque)
{
    Basic *b = opaque;
    uint8_t w[6000], r[6000];
    struct iovec wv[2] = { { w, 10 }, { w + 10, 5990 } };
    struct iovec rv = { r, sizeof(r) };

    fill(w, sizeof(w), 123, 4);
    b->wret[0] = engine_co_submit(b->fd, ENGINE_WRITE, 123, wv, 2);
    b->fret = engine_co_submit(b->fd, ENGINE_FLUSH, 0, NULL, 0);
    b->rret[0] = engine_co_submit(b->fd, ENGINE_READ, 123, &rv, 1);
    b->bad[0] = check(r, sizeof(r), 123, 4);
    /* Past the end: short, like the engine. */
    b->rret[1] = engine_co_submit(b->fd, ENGINE_READ, 4000, &rv, 1);
    b->wrong_ctx += current_aio_context() != main_aio_context();
    atomic_store_release(&b->done, 1);
}

static void test_fallback_without_fds(void **state)
{
    Basic b = { .fd = temp_file(0) };
    struct rlimit old, low;
    Error *err = NULL;
    EngineStats st;
    int lowest;

    (void)state;
    /* Make the next file descriptor fail with EMFILE, so that the ring
     * (or the io_context's eventfd) cannot be created in this thread. */
    lowest = open("/dev/null", O_RDONLY | O_CLOEXEC);
    assert_true(lowest >= 0);
    close(lowest);
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
    low = old;
    low.rlim_cur = (rlim_t)lowest;
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
    bool ok = engine_init_thread(&err);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);

    assert_false(ok);
    assert_non_null(err);
    print_message("%s: expected failure: %s\n", ENGINE_NAME, error_get_pretty(err));
    assert_non_null(strstr(error_get_pretty(err), "Too many open files"));
    error_free(err);
    /* Not retried: the thread stays on the fallback. */
    assert_false(engine_init_thread(NULL));

    run_main_co(fallback_co, &b, &b.done);
    assert_int_equal(b.wret[0], 6000);
    assert_int_equal(b.fret, 0);
    assert_int_equal(b.rret[0], 6000);
    assert_int_equal(b.bad[0], -1);
    assert_int_equal(b.rret[1], 6123 - 4000);
    assert_int_equal(b.wrong_ctx, 0);
    st = stats_of(main_aio_context());
    assert_false(st.available);
    assert_int_equal(st.fallbacks, 4);
    assert_int_equal(st.submit_calls, 0);
    close(b.fd);
}

#ifndef TEST_LIBAIO
/* ---- io_uring: a genuinely short read is continued -------------------------------- */

typedef struct PipeRead {
    int fd;
    unsigned done;
    int ret;
    char buf[200];
} PipeRead;

static void coroutine_fn pipe_read_co(void *opaque)
{
    PipeRead *p = opaque;
    struct iovec iov[2] = { { p->buf, 50 }, { p->buf + 50, 150 } };

    p->ret = engine_co_submit(p->fd, ENGINE_READ, 0, iov, 2);
    atomic_store_release(&p->done, 1);
}

static void test_short_read_resubmitted(void **state)
{
    PipeRead p = { 0 };
    char data[200];
    int fds[2];
    EngineStats st;

    (void)state;
    assert_int_equal(pipe2(fds, O_CLOEXEC), 0);
    for (int i = 0; i < 200; i++) {
        data[i] = (char)(i * 7 + 1);
    }
    /* 100 bytes now: the first read returns them, short. */
    assert_int_equal(write(fds[1], data, 100), 100);
    p.fd = fds[0];
    coroutine_enter(coroutine_create(pipe_read_co, &p));
    assert_true(TU_POLL_UNTIL(({ engine_get_stats(&st); st.resubmitted == 1; }), 5000));
    assert_false(p.done);
    /* The rest arrives; the continued read picks it up. */
    assert_int_equal(write(fds[1], data + 100, 100), 100);
    AIO_WAIT_WHILE(NULL, !atomic_load_acquire(&p.done));
    assert_int_equal(p.ret, 200);
    assert_memory_equal(p.buf, data, 200);
    engine_get_stats(&st);
    assert_int_equal(st.completed, 2);
    assert_idle(&st);
    close(fds[0]);
    close(fds[1]);
}
#else
/* ---- Linux AIO: IOCB_CMD_FDSYNC refused, fdatasync on the pool instead -------------- */

typedef struct Sync {
    int fd;
    unsigned done;
    int ret;
} Sync;

static void coroutine_fn sync_co(void *opaque)
{
    Sync *s = opaque;

    s->ret = engine_co_submit(s->fd, ENGINE_FLUSH, 0, NULL, 0);
    atomic_store_release(&s->done, 1);
}

static void test_fdsync_fallback(void **state)
{
    Sync s = { 0 };
    int fds[2];
    EngineStats st;

    (void)state;
    /* A pipe has no fsync: the kernel refuses IOCB_CMD_FDSYNC with EINVAL
     * at io_submit() time, and fdatasync() on the pool says EINVAL too. */
    assert_int_equal(pipe2(fds, O_CLOEXEC), 0);
    s.fd = fds[1];
    run_main_co(sync_co, &s, &s.done);
    assert_int_equal(s.ret, -EINVAL);
    st = stats_of(main_aio_context());
    assert_int_equal(st.fallbacks, 1);
    assert_int_equal(st.submitted, 0);
    assert_idle(&st);

    /* A regular file: the kernel's FDSYNC works, no fallback. */
    s = (Sync){ .fd = temp_file(0) };
    run_main_co(sync_co, &s, &s.done);
    assert_int_equal(s.ret, 0);
    st = stats_of(main_aio_context());
    assert_int_equal(st.fallbacks, 1);
    assert_int_equal(st.submitted, 1);
    close(s.fd);
    close(fds[0]);
    close(fds[1]);
}
#endif

int main(void)
{
    const struct CMUnitTest tests[] = {
        TU_TEST(test_rw_main),
        TU_TEST(test_odirect),
        TU_TEST(test_two_iothreads),
        TU_TEST(test_errors),
        TU_TEST(test_batching),
        TU_TEST(test_ring_full),
        TU_TEST(test_read_past_eof),
        TU_TEST(test_state_freed_with_iothread),
        TU_TEST(test_adaptive_polling),
        TU_TEST(test_nested_and_simultaneous),
        TU_TEST(test_fallback_without_fds),
#ifndef TEST_LIBAIO
        TU_TEST(test_short_read_resubmitted),
#else
        TU_TEST(test_fdsync_fallback),
#endif
    };

    return cmocka_run_group_tests_name(ENGINE_NAME, tests, NULL, NULL);
}
