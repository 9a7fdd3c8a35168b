/*
 * stress-drain-io - seed 002: draining a node while iothreads keep I/O in
 * flight through io_uring and through Linux AIO.
 *
 * A file node (aio=io_uring, then aio=native with cache.direct=on) is
 * used by two iothreads with 32 coroutines each, every coroutine writing
 * and reading back its own 4 KiB blocks with a pattern that names the
 * block and a generation.  Meanwhile the main thread drains the node over
 * and over: when bdrv_drained_begin() returns, nothing may be in flight on
 * the node or its backend; then it lets the I/O run again.  The in-flight
 * counters assert they never go below zero.  At the end the file itself is
 * compared with what every coroutine last wrote.  STRESS_SECONDS (default
 * 30) is the duration per engine.
 */
#include <fcntl.h>
#include <string.h>

#define TU_WATCHDOG_SECONDS 800
#include "../unit/block-test-util.h"

#define BLOCK 4096
#define NBLOCKS 2048                 /* 8 MiB */
#define PER_THREAD 32
#define NWORKERS (2 * PER_THREAD)

static char img[64];
static unsigned expected_gen[NBLOCKS];  /* written only by the block's owner */
static unsigned stop;                   /* atomic */
static unsigned finished;               /* atomic */
static unsigned mismatches;             /* atomic */
static unsigned io_errors;              /* atomic */
static long ops;                        /* atomic */

typedef struct Worker {
    BlockBackend *blk;
    int index;
    unsigned seed;
} Worker;

static void fill(unsigned char *buf, int block, unsigned gen)
{
    for (int i = 0; i < BLOCK; i += 4) {
        unsigned v = (unsigned)block * 2654435761u ^ gen ^ (unsigned)i;
        memcpy(buf + i, &v, 4);
    }
}

static void coroutine_fn worker_co(void *opaque)
{
    Worker *w = opaque;
    unsigned char *buf = NULL, *want = NULL;

    if (posix_memalign((void **)&buf, 4096, BLOCK) ||
        posix_memalign((void **)&want, 4096, BLOCK)) {
        abort();
    }
    while (!atomic_load_acquire(&stop)) {
        int block;
        w->seed = w->seed * 1103515245 + 12345;
        block = ((w->seed >> 8) % (NBLOCKS / NWORKERS)) * NWORKERS + w->index;

        if ((w->seed >> 4) % 3) {
            unsigned gen = expected_gen[block] + 1;
            fill(buf, block, gen);
            int ret = blk_co_pwrite(w->blk, (int64_t)block * BLOCK, BLOCK, buf, 0);
            if (ret < 0) {
                if (atomic_fetch_add(&io_errors, 1) < 5) {
                    fprintf(stderr, "write of block %d failed: %s\n", block, strerror(-ret));
                }
                continue;
            }
            expected_gen[block] = gen;
        }
        int rret = blk_co_pread(w->blk, (int64_t)block * BLOCK, BLOCK, buf, 0);
        if (rret < 0) {
            if (atomic_fetch_add(&io_errors, 1) < 5) {
                fprintf(stderr, "read of block %d failed: %s\n", block, strerror(-rret));
            }
            continue;
        }
        fill(want, block, expected_gen[block]);
        if (expected_gen[block] && memcmp(buf, want, BLOCK) != 0) {
            if (atomic_fetch_add(&mismatches, 1) < 5) {
                unsigned v;
                memcpy(&v, buf, 4);
                fprintf(stderr, "block %d: expected gen %u, first word %08x (gen %u?)\n",
                        block, expected_gen[block], v, v ^ ((unsigned)block * 2654435761u));
            }
        }
        atomic_inc(&ops);
    }
    free(buf);
    free(want);
    atomic_inc(&finished);
    aio_wait_kick();
}

static void run_engine(const char *aio, bool direct)
{
    char json[512];
    BlockDriverState *bs;
    BlockBackend *blk;
    IOThread *iot[2];
    Worker w[NWORKERS];
    int64_t seconds = getenv("STRESS_SECONDS") ? atol(getenv("STRESS_SECONDS")) : 30;
    int64_t deadline = clock_now_ns() + seconds * TU_SEC;
    long drains = 0, ops_before = 0;
    unsigned char *file = malloc(BLOCK), *want = malloc(BLOCK);
    int fd;

    memset(expected_gen, 0, sizeof(expected_gen));
    atomic_set(&stop, 0);
    atomic_set(&finished, 0);
    atomic_set(&ops, 0);
    snprintf(json, sizeof(json), "{\"driver\": \"file\", \"filename\": \"%s\", "
             "\"aio\": \"%s\", \"cache\": {\"direct\": %s}}", img, aio,
             direct ? "true" : "false");
    bs = bt_open(json, &error_abort);
    blk = bt_backend(bs, BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE, BLK_PERM_ALL);
    iot[0] = iothread_create("io0", NULL, &error_abort);
    iot[1] = iothread_create("io1", NULL, &error_abort);
    for (int i = 0; i < NWORKERS; i++) {
        w[i] = (Worker){ .blk = blk, .index = i, .seed = 31 * i + 7 };
        aio_co_schedule(iothread_get_aio_context(iot[i % 2]), coroutine_create(worker_co, &w[i]));
    }

    while (clock_now_ns() < deadline) {
        bdrv_drained_begin(bs);
        /*
         * Drained: nothing in flight on the node.  (The backend's counter
         * may blip: a new request counts itself before it sees the drain
         * and goes to wait in the queue.)
         */
        if (atomic_read(&bs->in_flight) != 0) {
            fprintf(stderr, "in flight while drained: %u\n", atomic_read(&bs->in_flight));
            atomic_inc(&mismatches);
        }
        drains++;
        bdrv_drained_end(bs);
        /* Let I/O make progress before the next drain. */
        ops_before = atomic_read(&ops);
        TU_POLL_UNTIL(atomic_read(&ops) > ops_before + 64, 2000);
    }
    atomic_store_release(&stop, 1);
    assert_true(TU_POLL_UNTIL(atomic_read(&finished) == NWORKERS, 60000));
    iothread_destroy(iot[0]);
    iothread_destroy(iot[1]);
    blk_unref(blk);
    bdrv_unref(bs);

    printf("stress-drain-io aio=%s: %ld drains, %ld requests\n", aio, drains,
           atomic_read(&ops));
    assert_int_equal(atomic_read(&mismatches), 0);
    assert_int_equal(atomic_read(&io_errors), 0);
    assert_true(drains > 10);
    assert_true(atomic_read(&ops) > 1000);

    /* What is on disk is what was last written. */
    fd = open(img, O_RDONLY);
    for (int block = 0; block < NBLOCKS; block++) {
        if (!expected_gen[block]) {
            continue;
        }
        assert_int_equal(pread(fd, file, BLOCK, (off_t)block * BLOCK), BLOCK);
        fill(want, block, expected_gen[block]);
        assert_memory_equal(file, want, BLOCK);
    }
    close(fd);
    free(file);
    free(want);
}

static int setup(void **state)
{
    int fd;

    bt_setup(state);
    snprintf(img, sizeof(img), "/tmp/blockd-stress-XXXXXX");
    fd = mkstemp(img);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, (off_t)NBLOCKS * BLOCK), 0);
    close(fd);
    return 0;
}

static int teardown(void **state)
{
    unlink(img);
    return tu_teardown(state);
}

static void test_drain_io_uring(void **state)
{
    (void)state;
    run_engine("io_uring", false);
}

static void test_drain_linux_aio(void **state)
{
    (void)state;
    run_engine("native", true);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_drain_io_uring, setup, teardown),
        cmocka_unit_test_setup_teardown(test_drain_linux_aio, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
