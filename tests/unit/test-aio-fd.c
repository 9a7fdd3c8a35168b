/*
 * test-aio-fd - fd handlers, aio_notify() and adaptive polling.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include "test-util.h"

typedef struct FdState {
    AioContext *ctx;
    int fd;
    int reads;
    int writes;
    bool drain;              /* read everything on each callback */
    bool remove_in_read;     /* unregister from the read callback */
    bool remove_in_write;
    uint64_t last_value;
} FdState;

static void drain_fd(int fd)
{
    char buf[256];
    while (read(fd, buf, sizeof(buf)) > 0) {
    }
}

static void on_read(void *opaque)
{
    FdState *s = opaque;

    s->reads++;
    if (s->drain) {
        drain_fd(s->fd);
    }
    if (s->remove_in_read) {
        aio_set_fd_handler(s->ctx, s->fd, NULL, NULL, NULL, NULL);
    }
}

static void on_write(void *opaque)
{
    FdState *s = opaque;

    s->writes++;
    if (s->remove_in_write) {
        aio_set_fd_handler(s->ctx, s->fd, NULL, NULL, NULL, NULL);
    }
}

static void make_pipe(int fds[2])
{
    assert_int_equal(pipe2(fds, O_NONBLOCK | O_CLOEXEC), 0);
}

static void test_read_handler(void **state)
{
    AioContext *ctx = main_aio_context();
    int fds[2];
    FdState s = { .ctx = ctx, .drain = true };

    (void)state;
    make_pipe(fds);
    s.fd = fds[0];
    aio_set_fd_handler(ctx, fds[0], on_read, NULL, NULL, &s);
    assert_false(aio_poll(ctx, false));
    assert_int_equal(s.reads, 0);

    assert_int_equal(write(fds[1], "x", 1), 1);
    assert_true(aio_poll(ctx, false));
    assert_int_equal(s.reads, 1);
    /* Drained: no more callbacks. */
    assert_false(aio_poll(ctx, false));
    assert_int_equal(s.reads, 1);

    /* Readable again. */
    assert_int_equal(write(fds[1], "yz", 2), 2);
    assert_true(aio_poll(ctx, true));
    assert_int_equal(s.reads, 2);

    /* Level-triggered: not draining keeps calling. */
    s.drain = false;
    assert_int_equal(write(fds[1], "a", 1), 1);
    assert_true(aio_poll(ctx, false));
    assert_true(aio_poll(ctx, false));
    assert_int_equal(s.reads, 4);

    aio_set_fd_handler(ctx, fds[0], NULL, NULL, NULL, NULL);
    close(fds[0]);
    close(fds[1]);
}

static void test_write_handler(void **state)
{
    AioContext *ctx = main_aio_context();
    int fds[2];
    FdState s = { .ctx = ctx };
    char buf[4096];

    (void)state;
    make_pipe(fds);
    s.fd = fds[1];
    aio_set_fd_handler(ctx, fds[1], NULL, on_write, NULL, &s);
    assert_true(aio_poll(ctx, false));
    assert_int_equal(s.writes, 1);
    assert_int_equal(s.reads, 0);

    /* Fill the pipe: no longer writable, no callback. */
    memset(buf, 'x', sizeof(buf));
    while (write(fds[1], buf, sizeof(buf)) > 0) {
    }
    assert_int_equal(errno, EAGAIN);
    int before = s.writes;
    assert_false(aio_poll(ctx, false));
    assert_int_equal(s.writes, before);

    /* Make room: writable again. */
    drain_fd(fds[0]);
    assert_true(aio_poll(ctx, false));
    assert_int_equal(s.writes, before + 1);

    aio_set_fd_handler(ctx, fds[1], NULL, NULL, NULL, NULL);
    close(fds[0]);
    close(fds[1]);
}

static void test_removal_stops_callbacks(void **state)
{
    AioContext *ctx = main_aio_context();
    int fds[2];
    FdState s = { .ctx = ctx };

    (void)state;
    make_pipe(fds);
    s.fd = fds[0];
    aio_set_fd_handler(ctx, fds[0], on_read, NULL, NULL, &s);
    assert_int_equal(write(fds[1], "x", 1), 1);
    assert_true(aio_poll(ctx, false));
    assert_int_equal(s.reads, 1);
    /* Still readable (not drained), but removed: no more calls. */
    aio_set_fd_handler(ctx, fds[0], NULL, NULL, NULL, NULL);
    assert_false(aio_poll(ctx, false));
    assert_false(aio_poll(ctx, false));
    assert_int_equal(s.reads, 1);

    /* Re-adding works; replacing the callbacks keeps one registration. */
    FdState s2 = { .ctx = ctx, .fd = fds[0] };
    aio_set_fd_handler(ctx, fds[0], on_read, NULL, NULL, &s);
    aio_set_fd_handler(ctx, fds[0], on_read, NULL, NULL, &s2);
    assert_true(aio_poll(ctx, false));
    assert_int_equal(s.reads, 1);
    assert_int_equal(s2.reads, 1);

    aio_set_fd_handler(ctx, fds[0], NULL, NULL, NULL, NULL);
    assert_false(aio_poll(ctx, false));
    close(fds[0]);
    close(fds[1]);
}

static void test_remove_in_callback(void **state)
{
    AioContext *ctx = main_aio_context();
    int sv[2];
    FdState s = { .ctx = ctx, .remove_in_read = true };
    FdState w = { .ctx = ctx, .remove_in_write = true };
    int fds[2];

    (void)state;
    /* A socket that is both readable and writable. */
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    assert_int_equal(write(sv[1], "x", 1), 1);
    s.fd = sv[0];
    aio_set_fd_handler(ctx, sv[0], on_read, on_write, NULL, &s);
    assert_true(aio_poll(ctx, false));
    /* The read callback removed the handler: the write callback of the
     * same event must not run, and nothing runs afterwards. */
    assert_int_equal(s.reads, 1);
    assert_int_equal(s.writes, 0);
    assert_false(aio_poll(ctx, false));
    assert_false(aio_poll(ctx, false));
    assert_int_equal(s.reads, 1);
    assert_int_equal(s.writes, 0);

    /* Removing from the write callback. */
    make_pipe(fds);
    w.fd = fds[1];
    aio_set_fd_handler(ctx, fds[1], NULL, on_write, NULL, &w);
    assert_true(aio_poll(ctx, false));
    assert_false(aio_poll(ctx, false));
    assert_int_equal(w.writes, 1);

    close(sv[0]);
    close(sv[1]);
    close(fds[0]);
    close(fds[1]);
}

/* ---- eventfd and cross-thread wake-ups ------------------------------------- */

typedef struct Delayed {
    int fd;
    AioContext *ctx;
    int64_t delay_ms;
    int64_t fired_at;
} Delayed;

static void *write_eventfd_later(void *opaque)
{
    Delayed *d = opaque;
    uint64_t one = 1;

    tu_sleep_ms(d->delay_ms);
    d->fired_at = clock_now_ns();
    TU_CHECK(write(d->fd, &one, sizeof(one)) == sizeof(one));
    return NULL;
}

static void on_eventfd(void *opaque)
{
    FdState *s = opaque;
    uint64_t v;

    if (read(s->fd, &v, sizeof(v)) == sizeof(v)) {
        s->last_value = v;
    }
    s->reads++;
}

static void test_eventfd_from_thread(void **state)
{
    AioContext *ctx = main_aio_context();
    int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    FdState s = { .ctx = ctx, .fd = efd };
    Delayed d = { .fd = efd, .delay_ms = 30 };
    BdThread t;

    (void)state;
    assert_true(efd >= 0);
    aio_set_fd_handler(ctx, efd, on_eventfd, NULL, NULL, &s);
    assert_false(aio_poll(ctx, false));
    bd_thread_create(&t, "efd-writer", write_eventfd_later, &d);
    while (s.reads == 0) {
        aio_poll(ctx, true);
    }
    bd_thread_join(&t);
    assert_int_equal(s.reads, 1);
    assert_int_equal(s.last_value, 1);
    assert_false(aio_poll(ctx, false));
    aio_set_fd_handler(ctx, efd, NULL, NULL, NULL, NULL);
    close(efd);
}

static void *notify_later(void *opaque)
{
    Delayed *d = opaque;

    tu_sleep_ms(d->delay_ms);
    d->fired_at = clock_now_ns();
    aio_notify(d->ctx);
    return NULL;
}

static void test_notify_wakes_blocking_poll(void **state)
{
    AioContext *ctx = main_aio_context();
    Delayed d = { .ctx = ctx, .delay_ms = 50 };
    BdThread t;
    int64_t start, end;

    (void)state;
    tu_drain_main();   /* no stale notification may end the first sleep */
    for (int i = 0; i < 3; i++) {
        start = clock_now_ns();
        bd_thread_create(&t, "notifier", notify_later, &d);
        /* Nothing is pending: only aio_notify() can end this sleep (the
         * alarm() watchdog kills the test otherwise).  The context's own
         * notifier is not progress. */
        assert_false(aio_poll(ctx, true));
        end = clock_now_ns();
        bd_thread_join(&t);
        assert_true(end - start >= 40 * TU_MS);
        assert_true(end >= d.fired_at);
    }
}

/*
 * aio.h: aio_notify() "wake[s] @ctx's home thread if it is blocked in
 * aio_poll() (or make[s] its next blocking aio_poll() return without
 * sleeping)".  A watchdog timer 1 s away bounds the test if it does sleep.
 */
static void test_notify_before_poll(void **state)
{
    AioContext *ctx = main_aio_context();
    AioTimer *watchdog = aio_timer_new(ctx, tu_nop_cb, NULL);
    int64_t start, elapsed;

    (void)state;
    timer_mod(watchdog, clock_now_ns() + TU_SEC);
    aio_notify(ctx);
    start = clock_now_ns();
    aio_poll(ctx, true);
    elapsed = clock_now_ns() - start;
    timer_free(watchdog);
    assert_true(elapsed < 500 * TU_MS);
}

/* ---- Adaptive polling ------------------------------------------------------- */

typedef struct Waker {
    AioContext *ctx;
    int64_t gap_us;
    unsigned stop;           /* atomic */
    unsigned sent;           /* atomic */
} Waker;

static unsigned wakeups_seen;   /* main thread */

static void count_cb(void *opaque)
{
    (void)opaque;
    wakeups_seen++;
}

/* Schedule a BH in ctx every gap_us microseconds until told to stop. */
static void *waker_thread(void *opaque)
{
    Waker *w = opaque;

    while (!atomic_read(&w->stop)) {
        struct timespec ts = { 0, w->gap_us * 1000 };
        nanosleep(&ts, NULL);
        aio_bh_schedule_oneshot(w->ctx, count_cb, NULL);
        atomic_inc(&w->sent);
    }
    return NULL;
}

/* Run @iterations blocking polls; returns the largest poll_ns seen. */
static int64_t poll_with_waker(AioContext *ctx, int iterations, int64_t gap_us,
                               int64_t *last)
{
    Waker w = { .ctx = ctx, .gap_us = gap_us };
    BdThread t;
    int64_t max_seen = 0;
    unsigned base = wakeups_seen;

    bd_thread_create(&t, "waker", waker_thread, &w);
    for (int i = 0; i < iterations; i++) {
        int64_t ns;
        aio_poll(ctx, true);
        ns = aio_context_poll_ns(ctx);
        if (ns > max_seen) {
            max_seen = ns;
        }
    }
    *last = aio_context_poll_ns(ctx);
    atomic_set(&w.stop, 1);
    bd_thread_join(&t);
    /* Run the stragglers, then forget the waker's last aio_notify(): it
     * would end the caller's next blocking poll at once. */
    while (wakeups_seen - base < atomic_read(&w.sent)) {
        aio_poll(ctx, true);
    }
    aio_poll(ctx, false);
    return max_seen;
}

static void test_poll_disabled_by_default(void **state)
{
    AioContext *ctx = main_aio_context();
    int64_t last;

    (void)state;
    wakeups_seen = 0;
    assert_int_equal(aio_context_poll_ns(ctx), 0);
    assert_int_equal(poll_with_waker(ctx, 100, 200, &last), 0);
    assert_int_equal(last, 0);
}

static void test_adaptive_poll_grows_and_shrinks(void **state)
{
    AioContext *ctx = main_aio_context();
    const int64_t max_ns = 50 * TU_MS;
    AioTimer *t = aio_timer_new(ctx, tu_nop_cb, NULL);
    int64_t max_seen, before, last;

    (void)state;
    wakeups_seen = 0;
    aio_context_set_poll_params(ctx, max_ns, 0, 0);
    /* Sleeps of a fraction of a millisecond, well below poll_max_ns:
     * each one makes the poll window grow from 0. */
    max_seen = poll_with_waker(ctx, 100, 300, &last);
    assert_true(max_seen > 0);
    assert_true(max_seen <= max_ns);

    /* Make sure the window is open, then block far longer than
     * poll_max_ns: with poll_shrink 0 the window drops to zero. */
    while (aio_context_poll_ns(ctx) == 0) {
        poll_with_waker(ctx, 5, 300, &last);
    }
    timer_mod(t, clock_now_ns() + 3 * max_ns);
    assert_true(aio_poll(ctx, true));
    assert_int_equal(aio_context_poll_ns(ctx), 0);

    /* With poll_shrink 2 a long block halves it instead. */
    aio_context_set_poll_params(ctx, max_ns, 0, 2);
    while (aio_context_poll_ns(ctx) < 2 * 4000) {
        poll_with_waker(ctx, 5, 300, &last);
    }
    before = aio_context_poll_ns(ctx);
    timer_mod(t, clock_now_ns() + 3 * max_ns);
    assert_true(aio_poll(ctx, true));
    assert_int_equal(aio_context_poll_ns(ctx), before / 2);

    timer_free(t);
}

/*
 * aio.h: "poll_max_ns 0 disables busy-polling".  Once the window has
 * grown, setting poll_max_ns back to 0 must bring it (and thus the
 * busy-polling in aio_poll()) back to 0.
 */
static void test_disabling_poll_resets_window(void **state)
{
    AioContext *ctx = main_aio_context();
    int64_t last;

    (void)state;
    wakeups_seen = 0;
    aio_context_set_poll_params(ctx, 50 * TU_MS, 0, 0);
    while (aio_context_poll_ns(ctx) == 0) {
        poll_with_waker(ctx, 20, 300, &last);
    }
    aio_context_set_poll_params(ctx, 0, 0, 0);
    poll_with_waker(ctx, 50, 300, &last);
    assert_int_equal(last, 0);
    assert_int_equal(aio_context_poll_ns(ctx), 0);
}

/* Adaptive polling in an iothread (default poll_max_ns 32768). */
static void test_iothread_poll_params(void **state)
{
    IOThreadParams p;
    IOThread *iot;
    AioContext *ctx;
    Waker w;
    BdThread t;
    int64_t max_seen = 0;

    (void)state;
    iothread_params_init(&p);
    p.poll_max_ns = 10 * TU_MS;
    iot = iothread_create("poll-io", &p, &error_abort);
    ctx = iothread_get_aio_context(iot);
    w = (Waker){ .ctx = ctx, .gap_us = 200 };
    /* count_cb only touches wakeups_seen from the iothread now; reset it
     * after the iothread is gone. */
    bd_thread_create(&t, "waker", waker_thread, &w);
    for (int i = 0; i < 400 && max_seen == 0; i++) {
        int64_t ns = aio_context_poll_ns(ctx);
        if (ns > max_seen) {
            max_seen = ns;
        }
        tu_sleep_ms(1);
    }
    atomic_set(&w.stop, 1);
    bd_thread_join(&t);
    iothread_destroy(iot);
    wakeups_seen = 0;
    assert_true(max_seen > 0);
    assert_true(max_seen <= 10 * TU_MS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TU_TEST(test_read_handler),
        TU_TEST(test_write_handler),
        TU_TEST(test_removal_stops_callbacks),
        TU_TEST(test_remove_in_callback),
        TU_TEST(test_eventfd_from_thread),
        TU_TEST(test_notify_wakes_blocking_poll),
        TU_TEST(test_notify_before_poll),
        TU_TEST(test_poll_disabled_by_default),
        TU_TEST(test_adaptive_poll_grows_and_shrinks),
        TU_TEST(test_disabling_poll_resets_window),
        TU_TEST(test_iothread_poll_params),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
