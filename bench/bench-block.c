/*
 * bench-block - 4 KiB random reads through the block layer from one
 * iothread, as IOPS.
 *
 *   bench-block null [seconds] [depth]          null-co, read-zeroes=off
 *   bench-block file PATH [seconds] [depth]     file, aio=io_uring
 *
 * Each of @depth coroutines in the iothread loops: pick a random 4 KiB
 * block, blk_co_pread() it.  The same pattern as fio's randread with
 * iodepth=@depth, so bench/run.sh can print a ratio against fio.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/aio-wait.h"
#include "blockd/block.h"
#include "blockd/block-backend-io.h"
#include "blockd/block-global-state.h"
#include "blockd/iothread.h"

typedef struct Worker {
    BlockBackend *blk;
    int64_t size;
    int64_t deadline;
    unsigned seed;
    long ops;
    int errors;
    bool *done_flag;
    int *running;
} Worker;

static void coroutine_fn reader_co(void *opaque)
{
    Worker *w = opaque;
    void *buf = NULL;
    int64_t blocks = w->size / 4096;

    if (posix_memalign(&buf, 4096, 4096)) {
        abort();
    }
    while (clock_now_ns() < w->deadline) {
        w->seed = w->seed * 1103515245 + 12345;
        int64_t block = ((int64_t)w->seed << 16 ^ w->seed) % blocks;
        if (block < 0) {
            block = -block;
        }
        if (blk_co_pread(w->blk, block * 4096, 4096, buf, 0) < 0) {
            w->errors++;
        }
        w->ops++;
    }
    free(buf);
    if (atomic_fetch_sub(w->running, 1) == 1) {
        atomic_store_release(w->done_flag, true);
        aio_wait_kick();
    }
}

static void nop_cb(void *opaque)
{
    (void)opaque;
}

int main(int argc, char **argv)
{
    const char *kind = argc > 1 ? argv[1] : "null";
    bool is_file = strcmp(kind, "file") == 0;
    const char *path = is_file && argc > 2 ? argv[2] : NULL;
    int argi = is_file ? 3 : 2;
    int seconds = argc > argi ? atoi(argv[argi]) : 5;
    int depth = argc > argi + 1 ? atoi(argv[argi + 1]) : 32;
    char json[512];
    json_object *opts;
    BlockDriverState *bs;
    BlockBackend *blk;
    IOThread *iot;
    Worker *w = calloc(depth, sizeof(*w));
    bool done = false;
    int running = depth;
    long ops = 0, errors = 0;
    int64_t start;

    if (is_file && !path) {
        fprintf(stderr, "usage: bench-block file PATH [seconds] [depth]\n");
        return 1;
    }
    main_loop_init();
    bdrv_init();
    if (is_file) {
        snprintf(json, sizeof(json), "{\"driver\": \"file\", \"filename\": \"%s\", "
                 "\"aio\": \"io_uring\", \"read-only\": true}", path);
    } else {
        snprintf(json, sizeof(json), "{\"driver\": \"null-co\", \"size\": 1073741824, "
                 "\"read-only\": true}");
    }
    opts = json_tokener_parse(json);
    bs = bdrv_open_options(opts, &error_fatal);
    json_object_put(opts);
    blk = blk_new(BLK_PERM_CONSISTENT_READ, BLK_PERM_ALL);
    blk_insert_bs(blk, bs, &error_fatal);
    iot = iothread_create("bench", NULL, &error_fatal);

    start = clock_now_ns();
    for (int i = 0; i < depth; i++) {
        w[i] = (Worker){ .blk = blk, .size = blk_getlength(blk),
                         .deadline = start + (int64_t)seconds * 1000000000,
                         .seed = 7 * i + 1, .done_flag = &done, .running = &running };
        aio_co_schedule(iothread_get_aio_context(iot), coroutine_create(reader_co, &w[i]));
    }
    /* Sleep through the run in the main loop, as the daemon does, rather
     * than in AIO_WAIT_WHILE: completions then have nobody to kick. */
    AioTimer *t = aio_timer_new(main_aio_context(), nop_cb, NULL);
    timer_mod(t, start + (int64_t)seconds * 1000000000);
    while (clock_now_ns() < start + (int64_t)seconds * 1000000000) {
        aio_poll(main_aio_context(), true);
    }
    timer_free(t);
    AIO_WAIT_WHILE(NULL, !atomic_load_acquire(&done));
    for (int i = 0; i < depth; i++) {
        ops += w[i].ops;
        errors += w[i].errors;
    }
    printf("blockd %s 4k randread, 1 iothread, depth %d: %.0f IOPS%s\n", kind, depth,
           ops / ((clock_now_ns() - start) / 1e9), errors ? " (with errors!)" : "");

    iothread_destroy(iot);
    blk_unref(blk);
    bdrv_unref(bs);
    main_loop_cleanup();
    free(w);
    return errors ? 1 : 0;
}
