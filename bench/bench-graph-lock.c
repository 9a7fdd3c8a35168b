/*
 * bench-graph-lock - cost of graph_co_rdlock() + graph_co_rdunlock(), ns.
 *
 * Uncontended: one coroutine in the main thread.  Two threads: a coroutine
 * in each of two iothreads, in parallel (no writer): the per-thread
 * counters mean the readers do not share a written cache line.
 */
#include <stdio.h>
#include <stdlib.h>

#include "blockd/aio-wait.h"
#include "blockd/graph-lock.h"
#include "blockd/iothread.h"

typedef struct Loop {
    long n;
    double ns;
    bool done;
} Loop;

static void coroutine_fn rdlock_loop(void *opaque)
{
    Loop *l = opaque;
    int64_t start = clock_now_ns();

    for (long i = 0; i < l->n; i++) {
        graph_co_rdlock();
        graph_co_rdunlock();
    }
    l->ns = (double)(clock_now_ns() - start) / l->n;
    atomic_store_release(&l->done, true);
    aio_wait_kick();
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 20000000;
    Loop one = { .n = n };
    Loop two[2] = { { .n = n }, { .n = n } };
    IOThread *iot[2];

    main_loop_init();
    coroutine_enter(coroutine_create(rdlock_loop, &one));
    printf("graph rdlock+rdunlock, uncontended:     %.1f ns\n", one.ns);

    iot[0] = iothread_create("bench0", NULL, &error_abort);
    iot[1] = iothread_create("bench1", NULL, &error_abort);
    for (int i = 0; i < 2; i++) {
        aio_co_schedule(iothread_get_aio_context(iot[i]),
                        coroutine_create(rdlock_loop, &two[i]));
    }
    AIO_WAIT_WHILE(NULL, !atomic_load_acquire(&two[0].done) ||
                         !atomic_load_acquire(&two[1].done));
    printf("graph rdlock+rdunlock, 2 threads:       %.1f ns, %.1f ns\n", two[0].ns, two[1].ns);
    iothread_destroy_all();
    main_loop_cleanup();
    return 0;
}
