/*
 * test-util.h - small helpers shared by the unit and stress tests.
 *
 * Every test runs with a fresh main loop (tu_setup / tu_teardown) and under
 * an alarm() watchdog, so that a lost wake-up fails the test (SIGALRM kills
 * the process) instead of hanging until meson's timeout.
 *
 * cmocka's assert_*() macros longjmp() to the test runner and so may only
 * be used in the main thread.  Code that runs in an iothread, a worker or a
 * plain pthread records what it saw, and the main thread asserts on it
 * afterwards; TU_CHECK() is for the rare invariant that must be checked on
 * the spot in another thread (it prints and aborts).
 */
#ifndef BLOCKD_TEST_UTIL_H
#define BLOCKD_TEST_UTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <cmocka.h>

#include "blockd/aio-wait.h"
#include "blockd/aio.h"
#include "blockd/atomic.h"
#include "blockd/coroutine.h"
#include "blockd/iothread.h"
#include "blockd/main-loop.h"
#include "blockd/thread.h"

#define TU_MS (1000LL * 1000)
#define TU_SEC (1000LL * TU_MS)

#ifndef TU_WATCHDOG_SECONDS
#define TU_WATCHDOG_SECONDS 120
#endif

/* Abort with a message: for checks in threads other than the main one. */
#define TU_CHECK(cond)                                                      \
    do {                                                                    \
        if (!(cond)) {                                                      \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__,          \
                    __LINE__, #cond);                                       \
            abort();                                                        \
        }                                                                   \
    } while (0)

static inline int tu_setup(void **state)
{
    (void)state;
    alarm(TU_WATCHDOG_SECONDS);
    main_loop_init();
    return 0;
}

static inline int tu_teardown(void **state)
{
    (void)state;
    main_loop_cleanup();
    alarm(0);
    return 0;
}

#define TU_TEST(fn) cmocka_unit_test_setup_teardown(fn, tu_setup, tu_teardown)

static inline void tu_nop_cb(void *opaque)
{
    (void)opaque;
}

/*
 * pthread_self() is declared const, so the compiler may reuse its value
 * across a coroutine yield -- after which the coroutine can be running in
 * another thread.  Code that runs in coroutines asks through this instead.
 */
static __attribute__((noinline, unused)) pthread_t tu_thread_self(void)
{
    pthread_t t = pthread_self();
    __asm__ __volatile__("" : "+r"(t));
    return t;
}

/*
 * Run everything that is ready in the main context, without sleeping.
 * Besides what the test scheduled, AIO_WAIT_WHILE leaves behind the BH
 * of any aio_wait_kick() that arrived while it waited, and a pending
 * aio_notify() would end the next blocking poll early: both are gone
 * afterwards.
 */
static inline void tu_drain_main(void)
{
    while (aio_poll(main_aio_context(), false)) {
    }
}

/*
 * Poll the main context until @cond holds or @ms milliseconds have passed;
 * evaluates to the final value of @cond.  A timer bounds every sleep, and
 * aio_wait_kick() from other threads works as inside AIO_WAIT_WHILE.
 */
#define TU_POLL_UNTIL(cond, ms) ({                                          \
    AioContext *tu_ctx_ = main_aio_context();                               \
    int64_t tu_deadline_ = clock_now_ns() + (int64_t)(ms) * TU_MS;          \
    AioTimer *tu_timer_ = aio_timer_new(tu_ctx_, tu_nop_cb, NULL);          \
    timer_mod(tu_timer_, tu_deadline_);                                     \
    atomic_fetch_add(&aio_wait_num_waiters, 1);                             \
    while (!(cond) && clock_now_ns() < tu_deadline_) {                      \
        aio_poll(tu_ctx_, true);                                            \
    }                                                                       \
    atomic_fetch_sub(&aio_wait_num_waiters, 1);                             \
    timer_free(tu_timer_);                                                  \
    (bool)(cond); })

/* Run the main loop for about @ms milliseconds. */
static inline void tu_run_main_loop_ms(int64_t ms)
{
    int64_t deadline = clock_now_ns() + ms * TU_MS;
    AioTimer *t = aio_timer_new(main_aio_context(), tu_nop_cb, NULL);

    timer_mod(t, deadline);
    while (clock_now_ns() < deadline) {
        aio_poll(main_aio_context(), true);
    }
    timer_free(t);
}

static inline void tu_sleep_ms(int64_t ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000 * 1000 };
    while (nanosleep(&ts, &ts) != 0) {
    }
}

/* ---- Identity of an iothread, learnt by running a BH in it ------------- */

typedef struct TuThreadInfo {
    pthread_t thread;
    AioContext *ctx;
    int tid;
} TuThreadInfo;

static inline void tu_thread_info_bh(void *opaque)
{
    TuThreadInfo *info = opaque;

    info->thread = tu_thread_self();
    info->ctx = current_aio_context();
    info->tid = bd_thread_get_tid();
}

/* Ask @ctx's home thread who it is (main thread only). */
static inline TuThreadInfo tu_thread_info(AioContext *ctx)
{
    TuThreadInfo info = { 0 };

    aio_wait_bh_oneshot(ctx, tu_thread_info_bh, &info);
    return info;
}

/*
 * An iothread for tests: busy-polling off, so that tests on a 2-core
 * machine do not burn the CPU the other threads need (tests of polling
 * itself create their iothreads with explicit parameters).
 */
static inline IOThread *tu_iothread_new(const char *id)
{
    IOThreadParams p;

    iothread_params_init(&p);
    p.poll_max_ns = 0;
    return iothread_create(id, &p, &error_abort);
}

/*
 * Let the calling coroutine go back to its event loop once: it is
 * scheduled again in its own context and resumes after other work there.
 */
static inline void coroutine_fn tu_co_yield_to_loop(void)
{
    aio_co_schedule(current_aio_context(), coroutine_self());
    coroutine_yield();
}

/* A tiny deterministic PRNG (xorshift64*), one state per user. */
static inline uint64_t tu_rand(uint64_t *state)
{
    uint64_t x = *state;

    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* An environment variable as a positive number, or @def. */
static inline long tu_env_long(const char *name, long def)
{
    const char *s = getenv(name);
    char *end;
    long v;

    if (!s || !*s) {
        return def;
    }
    v = strtol(s, &end, 0);
    return (*end || v <= 0) ? def : v;
}

#endif /* BLOCKD_TEST_UTIL_H */
