/*
 * stress-graph-lock - seed 003 under load.
 *
 * Reader coroutines in two iothreads take and drop the graph read lock in
 * a tight loop (yielding now and then, sometimes while holding it; pausing
 * while "drained", as requests do), while
 * the main thread takes the write lock STRESS_WRLOCKS times (default
 * 10000).  Under each write lock it drops the two references of a real
 * block node with bdrv_schedule_unref().  Checked: no reader ever holds the
 * lock while the writer does, the node is closed after the unlock and
 * before graph_wrunlock() returns, every node is closed exactly once (ASan
 * catches a double free or use after free), nothing deadlocks (watchdog).
 */
#define TU_WATCHDOG_SECONDS 800
#include "../unit/test-util.h"

#include "blockd/block.h"
#include "blockd/block-global-state.h"
#include "blockd/graph-lock.h"

#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

#define NUM_READERS_PER_THREAD 4

static long nodes_freed;
static long nodes_made;
static unsigned writer_active;      /* atomic: inside the write section */
static unsigned violations;         /* atomic */
static unsigned stop_readers;       /* atomic */
static unsigned readers_done;       /* atomic */
static long read_sections;          /* atomic */
static unsigned quiesced;           /* atomic: "drained", start no new section */

/* A driver whose close counts, so double closes and leaks show. */
static void counting_close(BlockDriverState *bs)
{
    (void)bs;
    if (graph_is_write_locked()) {
        fprintf(stderr, "node closed under the write lock\n");
        atomic_inc(&violations);
    }
    nodes_freed++;
}

static const BlockDriver counting_drv = {
    .format_name = "counting",
    .bdrv_close = counting_close,
};

/*
 * What drain does for the real graph: the writer quiesces request sources
 * so that readers cannot starve it.  Readers here check the flag before
 * each section, as a backend checks its quiesce counter before a request.
 */
static void quiesce_begin(void)
{
    atomic_set_mb(&quiesced, 1);
}

static void quiesce_end(void)
{
    atomic_set_mb(&quiesced, 0);
}

static void coroutine_fn reader_entry(void *opaque)
{
    unsigned seed = (unsigned)(uintptr_t)opaque;

    while (!atomic_load_acquire(&stop_readers)) {
        if (atomic_read_mb(&quiesced)) {
            co_sleep_ns(10 * 1000);
            continue;
        }
        graph_co_rdlock();
        if (atomic_read_mb(&writer_active)) {
            fprintf(stderr, "reader inside the write section\n");
            atomic_inc(&violations);
        }
        seed = seed * 1103515245 + 12345;
        if ((seed >> 16) % 16 == 0) {
            /* Hold the lock across a yield: the writer must wait for us. */
            aio_co_schedule(current_aio_context(), coroutine_self());
            coroutine_yield();
        }
        graph_co_rdunlock();
        atomic_inc(&read_sections);
        aio_wait_kick();   /* the main thread waits for reader progress */
        if ((seed >> 16) % 4 == 0) {
            aio_co_schedule(current_aio_context(), coroutine_self());
            coroutine_yield();
        }
    }
    atomic_inc(&readers_done);
    aio_wait_kick();
}

static void test_readers_and_writer(void **state)
{
    long wrlocks = 10000;
    const char *env = getenv("STRESS_WRLOCKS");
    IOThreadParams p;
    IOThread *iot[2];
    int readers = 0;

    (void)state;
    if (env) {
        wrlocks = atol(env);
    }
    /*
     * The ordering under test.  Without ThreadSanitizer (the gcc and ASan
     * builds) it must be the production one: readers with compiler
     * barriers only, the writer's membarrier() supplying the fence.  This
     * run is its litmus test -- a reader inside while the writer is counts
     * as a violation.  TSan cannot model membarrier and checks the seq-cst
     * fallback instead.
     */
#ifdef BD_TSAN
    assert_false(graph_lock_uses_membarrier());
#else
    /* Where the kernel offers it (a sandbox may not), it must be used. */
    if (syscall(__NR_membarrier, MEMBARRIER_CMD_QUERY, 0, 0) & MEMBARRIER_CMD_PRIVATE_EXPEDITED) {
        assert_true(graph_lock_uses_membarrier());
    }
#endif
    fprintf(stderr, "graph lock ordering: %s\n",
            graph_lock_uses_membarrier() ? "membarrier (production)" : "seq-cst fallback");
    bdrv_init();
    bdrv_register(&counting_drv);
    graph_lock_set_drain_hooks(quiesce_begin, quiesce_end);
    iothread_params_init(&p);
    p.poll_max_ns = 0;
    iot[0] = iothread_create("reader0", &p, &error_abort);
    iot[1] = iothread_create("reader1", &p, &error_abort);
    for (int t = 0; t < 2; t++) {
        for (int i = 0; i < NUM_READERS_PER_THREAD; i++) {
            Coroutine *co = coroutine_create(reader_entry, (void *)(uintptr_t)(t * 100 + i + 1));
            aio_co_schedule(iothread_get_aio_context(iot[t]), co);
            readers++;
        }
    }

    for (long i = 0; i < wrlocks; i++) {
        BlockDriverState *n = bdrv_open_driver(&counting_drv, NULL, NULL, 0, &error_abort);
        long freed_before = nodes_freed;
        long reads_before = atomic_read(&read_sections);

        /* Let the readers in between write sections. */
        if (!TU_POLL_UNTIL(atomic_read(&read_sections) > reads_before + 2, 10000)) {
            fprintf(stderr, "readers made no progress\n");
            atomic_inc(&violations);
        }
        bdrv_ref(n);
        nodes_made++;

        graph_wrlock();
        atomic_set_mb(&writer_active, 1);
        /* Both references dropped under the lock: closed once, after it. */
        bdrv_schedule_unref(n);
        bdrv_schedule_unref(n);
        if (nodes_freed != freed_before) {
            fprintf(stderr, "node freed under the write lock\n");
            atomic_inc(&violations);
        }
        atomic_set_mb(&writer_active, 0);
        graph_wrunlock();
        if (nodes_freed != freed_before + 1) {
            fprintf(stderr, "node not freed by graph_wrunlock\n");
            atomic_inc(&violations);
        }
    }

    atomic_store_release(&stop_readers, 1);
    assert_true(TU_POLL_UNTIL(atomic_read(&readers_done) == (unsigned)readers, 60000));
    iothread_destroy(iot[0]);
    iothread_destroy(iot[1]);
    graph_lock_set_drain_hooks(NULL, NULL);

    printf("stress-graph-lock: %ld write sections, %ld read sections\n",
           wrlocks, atomic_read(&read_sections));
    assert_int_equal(atomic_read(&violations), 0);
    assert_int_equal(nodes_made, wrlocks);
    assert_int_equal(nodes_freed, wrlocks);
    assert_true(atomic_read(&read_sections) > 2 * wrlocks);
    assert_int_equal(graph_reader_count(), 0);
    assert_int_equal(bdrv_node_count(), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TU_TEST(test_readers_and_writer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
