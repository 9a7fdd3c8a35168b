/*
 * test-main-loop - the outermost loop: the main context plus the
 * iohandler context (monitor fds and BHs), which it polls only when the
 * latter's epoll fd has fired.
 */
#include "test-util.h"

#include "blockd/main-loop.h"
#include "blockd/thread.h"

#define BURSTS 20000

typedef struct Burst {
    unsigned ran;          /* atomic: BHs run by the main loop */
    unsigned sent;         /* atomic */
    bool lost;             /* atomic: a BH waited more than a second */
    bool done;             /* atomic */
} Burst;

static void count_bh(void *opaque)
{
    Burst *b = opaque;
    atomic_inc(&b->ran);
}

/*
 * Events from iothreads reach the monitor as BHs in the iohandler context,
 * often two at once (JOB_STATUS_CHANGE then BLOCK_JOB_READY).  Each must
 * run without anything else waking the main loop.  (The second was lost
 * when it was scheduled while the iohandler context was being polled:
 * the eventfd write was read after the BHs had run, and nothing woke the
 * main loop again until the next monitor command.)
 */
static void *burst_thread(void *opaque)
{
    Burst *b = opaque;

    for (int i = 0; i < BURSTS && !atomic_read(&b->lost); i++) {
        int64_t deadline = clock_now_ns() + TU_SEC;

        aio_bh_schedule_oneshot(iohandler_aio_context(), count_bh, b);
        aio_bh_schedule_oneshot(iohandler_aio_context(), count_bh, b);
        atomic_fetch_add(&b->sent, 2);
        while (atomic_read(&b->ran) != atomic_read(&b->sent)) {
            if (clock_now_ns() > deadline) {
                atomic_set_mb(&b->lost, true);
                break;
            }
        }
    }
    atomic_set_mb(&b->done, true);
    aio_notify(main_aio_context());       /* let the loop see "done" */
    return NULL;
}

static void *rescue_thread(void *opaque)
{
    Burst *b = opaque;

    /* Wake a main loop that missed a BH, so the test can fail, not hang. */
    while (!atomic_read_mb(&b->done)) {
        tu_sleep_ms(200);
        if (atomic_read_mb(&b->lost)) {
            aio_notify(main_aio_context());
        }
    }
    return NULL;
}

static void test_iohandler_bhs_from_threads_are_never_lost(void **state)
{
    Burst b = { 0 };
    BdThread t, r;

    (void)state;
    bd_thread_create(&t, "bursts", burst_thread, &b);
    bd_thread_create(&r, "rescue", rescue_thread, &b);
    while (!atomic_read_mb(&b.done)) {
        main_loop_wait(true);
    }
    bd_thread_join(&t);
    bd_thread_join(&r);
    assert_false(atomic_read(&b.lost));
    while (atomic_read(&b.ran) != atomic_read(&b.sent)) {
        main_loop_wait(false);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TU_TEST(test_iohandler_bhs_from_threads_are_never_lost),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
