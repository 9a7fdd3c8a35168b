/*
 * stress-engines - seed 002: native AIO state is per thread, its counters
 * never go negative, and the main thread waits for iothreads' requests
 * without ever touching their rings.
 *
 * Two iothreads each keep NWORKERS requests in flight -- random 4 KiB
 * reads and writes (and the odd flush) on their own region of one file,
 * every block carrying a pattern that names its version -- once through
 * io_uring and once through Linux AIO, for STRESS_ENGINE_SECONDS each
 * (default 20).  Meanwhile the main thread repeatedly pauses both
 * submitters, waits with AIO_WAIT_WHILE until neither has a request in
 * flight (the submitters kick it whenever their count changes), checks
 * in each iothread that both the test's and the engine's counters are
 * exactly zero, and lets them go on.  At the end every block of the file
 * is checked.  The file is opened with O_DIRECT when /tmp supports it, so
 * that Linux AIO completes asynchronously too.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <string.h>

#define TU_WATCHDOG_SECONDS 300
#include "../unit/test-util.h"
#include "blockd/aio-engine.h"
#include "blockd/defer-call.h"

#define BLOCK 4096
#define NBLOCKS 512              /* per region */
#define NWORKERS 32              /* requests in flight per iothread */
#define NTHREADS 2

typedef int coroutine_fn SubmitFn(int fd, EngineOp op, uint64_t offset,
                                  const struct iovec *iov, int niov);
typedef void StatsFn(EngineStats *st);

typedef bool InitFn(Error **errp);

typedef struct Engine {
    const char *name;
    SubmitFn *submit;
    StatsFn *stats;
    InitFn *init;
} Engine;

typedef struct Submitter Submitter;

typedef struct Worker {
    Submitter *s;
    uint8_t *buf;            /* BLOCK bytes, 4 KiB aligned */
} Worker;

struct Submitter {
    /* Set up by the main thread before the start. */
    const Engine *eng;
    AioContext *ctx;
    int fd;
    uint64_t base;
    unsigned id;
    Worker w[NWORKERS];

    /* Main thread -> submitter. */
    unsigned paused;         /* atomic */
    unsigned stop;           /* atomic */

    /* Submitter -> main thread. */
    int64_t in_flight;       /* atomic: the test's own count of requests */
    unsigned negative;       /* atomic: in_flight was seen below zero */
    unsigned exited;         /* atomic: workers that ended */
    uint64_t reads, writes, flushes;   /* atomic */
    unsigned errors, bad_data, wrong_ctx;   /* atomic */

    /* Home thread only (read by the main thread after all workers exited). */
    uint32_t version[NBLOCKS];
    bool busy[NBLOCKS];
    CoQueue parked;
    int nparked;             /* waiters on @parked */
    uint64_t rng;
};

/* The 64-bit words of block @b of submitter @id at version @v (0: zeros). */
static uint64_t word(unsigned id, unsigned b, uint32_t v, unsigned i)
{
    uint64_t x;

    if (v == 0) {
        return 0;
    }
    x = ((uint64_t)id << 60) ^ ((uint64_t)b << 32) ^ v;
    x ^= (uint64_t)(i + 1) * 0x9E3779B97F4A7C15ULL;
    x ^= x >> 31;
    return x;
}

static void fill_block(uint8_t *buf, unsigned id, unsigned b, uint32_t v)
{
    uint64_t *w = (uint64_t *)buf;

    for (unsigned i = 0; i < BLOCK / 8; i++) {
        w[i] = word(id, b, v, i);
    }
}

static bool block_ok(const uint8_t *buf, unsigned id, unsigned b, uint32_t v)
{
    const uint64_t *w = (const uint64_t *)buf;

    for (unsigned i = 0; i < BLOCK / 8; i++) {
        if (w[i] != word(id, b, v, i)) {
            return false;
        }
    }
    return true;
}

static void in_flight_add(Submitter *s, int64_t delta)
{
    int64_t now = atomic_fetch_add(&s->in_flight, delta) + delta;

    if (now < 0) {
        atomic_inc(&s->negative);
    }
    aio_wait_kick();
}

static void coroutine_fn worker_co(void *opaque)
{
    Worker *w = opaque;
    Submitter *s = w->s;
    struct iovec iov = { w->buf, BLOCK };

    for (;;) {
        unsigned b, r;
        int ret;

        if (atomic_load_acquire(&s->stop)) {
            break;
        }
        if (atomic_read(&s->paused)) {
            s->nparked++;
            co_queue_wait_unlocked(&s->parked);
            continue;
        }
        /* Announce the request, then look again: either the main thread
         * sees our count, or we see its pause (both sequentially
         * consistent). */
        in_flight_add(s, 1);
        if (atomic_read_mb(&s->paused)) {
            in_flight_add(s, -1);
            continue;
        }

        do {
            b = (unsigned)(tu_rand(&s->rng) % NBLOCKS);
        } while (s->busy[b]);
        s->busy[b] = true;
        r = (unsigned)(tu_rand(&s->rng) % 100);
        uint64_t off = s->base + (uint64_t)b * BLOCK;

        if (r < 2) {
            ret = s->eng->submit(s->fd, ENGINE_FLUSH, 0, NULL, 0);
            atomic_inc(&s->flushes);
            if (ret != 0) {
                atomic_inc(&s->errors);
            }
        } else if (r < 50) {
            memset(w->buf, 0xa5, BLOCK);
            ret = s->eng->submit(s->fd, ENGINE_READ, off, &iov, 1);
            atomic_inc(&s->reads);
            if (ret != BLOCK) {
                atomic_inc(&s->errors);
            } else if (!block_ok(w->buf, s->id, b, s->version[b])) {
                atomic_inc(&s->bad_data);
            }
        } else {
            uint32_t v = s->version[b] + 1;

            fill_block(w->buf, s->id, b, v);
            ret = s->eng->submit(s->fd, ENGINE_WRITE, off, &iov, 1);
            atomic_inc(&s->writes);
            if (ret != BLOCK) {
                atomic_inc(&s->errors);
            } else {
                s->version[b] = v;
            }
        }
        if (current_aio_context() != s->ctx) {
            atomic_inc(&s->wrong_ctx);
        }
        s->busy[b] = false;
        in_flight_add(s, -1);

        /* Now and then continue from the loop rather than from the
         * completion: the next request is then submitted on its own. */
        if (tu_rand(&s->rng) % 10 == 0) {
            tu_co_yield_to_loop();
        }
    }
    atomic_inc(&s->exited);
    aio_wait_kick();
}

/* In the iothread: start every worker; the first requests form one batch. */
static void start_bh(void *opaque)
{
    Submitter *s = opaque;

    /* Set the engine up now: the main thread checks its state from the
     * first pause on, perhaps before any worker got to submit. */
    if (!s->eng->init(&error_abort)) {
        abort();
    }
    defer_call_begin();
    for (int i = 0; i < NWORKERS; i++) {
        coroutine_enter(coroutine_create(worker_co, &s->w[i]));
    }
    defer_call_end();
}

/*
 * Wake the workers that are parked now.  Not co_queue_restart_all(): this
 * BH may run after the main thread has paused again, and a worker that
 * parks again at once would be woken again, for ever.
 */
static void resume_bh(void *opaque)
{
    Submitter *s = opaque;
    int n = s->nparked;

    s->nparked = 0;
    defer_call_begin();
    for (int i = 0; i < n; i++) {
        co_queue_next(&s->parked);
    }
    defer_call_end();
}

typedef struct Quiet {
    Submitter *s;
    EngineStats st;
    int64_t test_in_flight;
} Quiet;

/* In the iothread, while it is paused: what do the counters say? */
static void quiet_bh(void *opaque)
{
    Quiet *q = opaque;

    q->s->eng->stats(&q->st);
    q->test_in_flight = atomic_read(&q->s->in_flight);
}

static int open_file(bool *direct)
{
    char path[] = "/tmp/blockd-stress-engines-XXXXXX";
    int fd = mkstemp(path);
    int dfd;

    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, (off_t)NTHREADS * NBLOCKS * BLOCK), 0);
    dfd = open(path, O_RDWR | O_CLOEXEC | O_DIRECT);
    unlink(path);
    *direct = dfd >= 0;
    if (dfd >= 0) {
        close(fd);
        return dfd;
    }
    return fd;
}

static void run_engine(const Engine *eng)
{
    long seconds = tu_env_long("STRESS_ENGINE_SECONDS", 20);
    Submitter *s = calloc(NTHREADS, sizeof(*s));
    IOThread *iot[NTHREADS];
    uint64_t rng = 0x5eed0002ULL;
    uint64_t pauses = 0;
    int64_t deadline, longest_wait = 0;
    uint8_t *buf = NULL;
    bool direct;
    int fd = open_file(&direct);

    for (int t = 0; t < NTHREADS; t++) {
        char name[32];

        snprintf(name, sizeof(name), "%s-%d", eng->name, t);
        iot[t] = tu_iothread_new(name);
        s[t].eng = eng;
        s[t].ctx = iothread_get_aio_context(iot[t]);
        s[t].fd = fd;
        s[t].id = (unsigned)t + 1;
        s[t].base = (uint64_t)t * NBLOCKS * BLOCK;
        s[t].rng = 0x1234567ULL * (uint64_t)(t + 1);
        co_queue_init(&s[t].parked);
        for (int i = 0; i < NWORKERS; i++) {
            assert_int_equal(posix_memalign((void **)&s[t].w[i].buf, BLOCK, BLOCK), 0);
            s[t].w[i].s = &s[t];
        }
    }
    for (int t = 0; t < NTHREADS; t++) {
        aio_bh_schedule_oneshot(s[t].ctx, start_bh, &s[t]);
    }

    deadline = clock_now_ns() + seconds * TU_SEC;
    while (clock_now_ns() < deadline) {
        int64_t t0;

        tu_run_main_loop_ms(2 + (int64_t)(tu_rand(&rng) % 20));

        /* (a) pause both submitters */
        for (int t = 0; t < NTHREADS; t++) {
            atomic_set_mb(&s[t].paused, 1);
        }
        /* (b) wait until nothing is in flight anywhere */
        t0 = clock_now_ns();
        AIO_WAIT_WHILE(NULL, atomic_read_mb(&s[0].in_flight) != 0 ||
                             atomic_read_mb(&s[1].in_flight) != 0);
        if (clock_now_ns() - t0 > longest_wait) {
            longest_wait = clock_now_ns() - t0;
        }
        for (int t = 0; t < NTHREADS; t++) {
            Quiet q = { .s = &s[t] };

            aio_wait_bh_oneshot(s[t].ctx, quiet_bh, &q);
            assert_int_equal(q.test_in_flight, 0);
            assert_true(q.st.available);
            assert_int_equal(q.st.in_flight, 0);
            assert_int_equal(q.st.queued, 0);
            assert_int_equal(q.st.completed, q.st.submitted);
            assert_int_equal(atomic_read(&s[t].negative), 0);
        }
        pauses++;
        /* (c) let them go on */
        for (int t = 0; t < NTHREADS; t++) {
            atomic_set_mb(&s[t].paused, 0);
            aio_bh_schedule_oneshot(s[t].ctx, resume_bh, &s[t]);
        }
    }

    for (int t = 0; t < NTHREADS; t++) {
        atomic_set_mb(&s[t].stop, 1);
        aio_bh_schedule_oneshot(s[t].ctx, resume_bh, &s[t]);
    }
    AIO_WAIT_WHILE(NULL, atomic_read_mb(&s[0].exited) < NWORKERS ||
                         atomic_read_mb(&s[1].exited) < NWORKERS);

    assert_true(posix_memalign((void **)&buf, BLOCK, BLOCK) == 0);
    for (int t = 0; t < NTHREADS; t++) {
        Quiet q = { .s = &s[t] };
        uint64_t ops = atomic_read(&s[t].reads) + atomic_read(&s[t].writes) +
                       atomic_read(&s[t].flushes);

        aio_wait_bh_oneshot(s[t].ctx, quiet_bh, &q);
        print_message("%s thread %d: %" PRIu64 " ops (%" PRIu64 " reads, %" PRIu64
                      " writes, %" PRIu64 " flushes), %" PRIu64 " kernel requests in %"
                      PRIu64 " submit calls (%.1f per call), %" PRIu64 " poll hits\n",
                      eng->name, t, ops, atomic_read(&s[t].reads),
                      atomic_read(&s[t].writes), atomic_read(&s[t].flushes),
                      q.st.submitted, q.st.submit_calls,
                      q.st.submit_calls ? (double)q.st.submitted / (double)q.st.submit_calls : 0.0,
                      q.st.poll_hits);
        assert_int_equal(q.st.in_flight, 0);
        assert_int_equal(q.st.queued, 0);
        assert_int_equal(q.test_in_flight, 0);
        assert_int_equal(q.st.fallbacks, 0);
        assert_int_equal(atomic_read(&s[t].negative), 0);
        assert_int_equal(atomic_read(&s[t].errors), 0);
        assert_int_equal(atomic_read(&s[t].bad_data), 0);
        assert_int_equal(atomic_read(&s[t].wrong_ctx), 0);
        assert_true(ops > 1000);

        /* Every block holds its last version. */
        for (unsigned b = 0; b < NBLOCKS; b++) {
            assert_int_equal(pread(fd, buf, BLOCK, (off_t)(s[t].base + (uint64_t)b * BLOCK)),
                             BLOCK);
            if (!block_ok(buf, s[t].id, b, s[t].version[b])) {
                fail_msg("%s: thread %d block %u: not version %u", eng->name, t, b,
                         s[t].version[b]);
            }
        }
    }
    print_message("%s: %" PRIu64 " pauses in %ld s (O_DIRECT %s), longest drain %.2f ms\n",
                  eng->name, pauses, seconds, direct ? "on" : "off",
                  (double)longest_wait / 1e6);
    assert_true(pauses >= 10);

    for (int t = 0; t < NTHREADS; t++) {
        iothread_destroy(iot[t]);
        for (int i = 0; i < NWORKERS; i++) {
            free(s[t].w[i].buf);
        }
    }
    free(buf);
    free(s);
    close(fd);
}

static void test_io_uring(void **state)
{
    static const Engine eng = { "io_uring", luring_co_submit, luring_get_stats,
                                luring_init_thread };

    (void)state;
    run_engine(&eng);
}

static void test_linux_aio(void **state)
{
    static const Engine eng = { "linux-aio", laio_co_submit, laio_get_stats,
                                laio_init_thread };

    (void)state;
    run_engine(&eng);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_io_uring, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_linux_aio, tu_setup, tu_teardown),
    };

    return cmocka_run_group_tests_name("stress-engines", tests, NULL, NULL);
}
