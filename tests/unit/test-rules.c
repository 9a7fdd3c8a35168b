/*
 * test-rules - the threading rules abort, naming the rule, when broken:
 * global-state code outside the main thread, polling a context from a
 * thread that is not its home, the graph write lock in a coroutine or in
 * an iothread.  Each case runs in a child process, so the test survives
 * the abort it expects.
 */
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test-util.h"

#include "blockd/block-backend-global-state.h"
#include "blockd/graph-lock.h"

static void bh_blk_new(void *opaque)
{
    (void)opaque;
    blk_new(0, 0);                       /* global state, in an iothread */
}

/* Never returns (the lock is never dropped): not for the analysis. */
static void bh_wrlock(void *opaque) TSA_NO_TSA;
static void bh_wrlock(void *opaque)
{
    (void)opaque;
    graph_wrlock();                      /* the writer is the main thread */
}

static void coroutine_fn co_wrlock(void *opaque) TSA_NO_TSA;
static void coroutine_fn co_wrlock(void *opaque)
{
    (void)opaque;
    graph_wrlock();                      /* it polls: never in a coroutine */
}

static void in_iothread(void (*fn)(void *opaque))
{
    IOThread *iot = tu_iothread_new("io0");

    aio_bh_schedule_oneshot(iothread_get_aio_context(iot), fn, NULL);
    tu_sleep_ms(5000);                   /* the iothread aborts the process */
}

static void child_gs_in_iothread(void)
{
    in_iothread(bh_blk_new);
}

static void child_wrlock_in_iothread(void)
{
    in_iothread(bh_wrlock);
}

static void child_wrlock_in_coroutine(void)
{
    coroutine_enter(coroutine_create(co_wrlock, NULL));
}

static void child_poll_foreign_context(void)
{
    IOThread *iot = tu_iothread_new("io0");

    aio_poll(iothread_get_aio_context(iot), false);
}

/* Run @fn in a child; it must abort with @rule in its message. */
static void assert_aborts_naming(void (*fn)(void), const char *rule)
{
    int fds[2], status = 0;
    char out[4096];
    size_t len = 0;
    ssize_t n;
    pid_t pid;

    assert_int_equal(pipe(fds), 0);
    fflush(NULL);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], STDERR_FILENO);
        close(fds[0]);
        fn();
        _exit(0);                        /* it did not abort: the parent fails */
    }
    close(fds[1]);
    while (len < sizeof(out) - 1 && (n = read(fds[0], out + len, sizeof(out) - 1 - len)) > 0) {
        len += n;
    }
    out[len] = '\0';
    close(fds[0]);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGABRT || !strstr(out, rule)) {
        fprintf(stderr, "expected an abort naming '%s'; status %#x, stderr:\n%s\n",
                rule, status, out);
        fail();
    }
}

static void test_global_state_in_iothread_aborts(void **state)
{
    (void)state;
    assert_aborts_naming(child_gs_in_iothread, "in_main_thread()");
}

static void test_write_lock_in_iothread_aborts(void **state)
{
    (void)state;
    assert_aborts_naming(child_wrlock_in_iothread, "in_main_thread()");
}

static void test_write_lock_in_coroutine_aborts(void **state)
{
    (void)state;
    assert_aborts_naming(child_wrlock_in_coroutine, "!in_coroutine()");
}

static void test_polling_another_threads_context_aborts(void **state)
{
    (void)state;
    assert_aborts_naming(child_poll_foreign_context, "aio_context_in_home_thread(ctx)");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TU_TEST(test_global_state_in_iothread_aborts),
        TU_TEST(test_write_lock_in_iothread_aborts),
        TU_TEST(test_write_lock_in_coroutine_aborts),
        TU_TEST(test_polling_another_threads_context_aborts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
