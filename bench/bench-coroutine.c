/*
 * bench-coroutine - cost of coroutine operations, in ns.
 *
 *   create+enter+terminate   a coroutine that returns at once, stacks pooled
 *   yield+re-enter           one round trip = two switches
 */
#include <stdio.h>
#include <stdlib.h>

#include "blockd/coroutine.h"
#include "blockd/main-loop.h"

static void coroutine_fn empty_entry(void *opaque)
{
    (void)opaque;
}

static void coroutine_fn yield_loop(void *opaque)
{
    volatile bool *stop = opaque;
    while (!*stop) {
        coroutine_yield();
    }
}

static double bench_create(long n)
{
    int64_t start = clock_now_ns();
    for (long i = 0; i < n; i++) {
        coroutine_enter(coroutine_create(empty_entry, NULL));
    }
    return (double)(clock_now_ns() - start) / n;
}

static double bench_yield(long n)
{
    volatile bool stop = false;
    Coroutine *co = coroutine_create(yield_loop, (void *)&stop);
    int64_t start;
    double ns;

    coroutine_enter(co);
    start = clock_now_ns();
    for (long i = 0; i < n; i++) {
        coroutine_enter(co);
    }
    ns = (double)(clock_now_ns() - start) / n;
    stop = true;
    coroutine_enter(co);
    return ns;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 10000000;
    double create = 1e9, yield = 1e9;

    main_loop_init();
    /* Warm up the pool and the caches, then keep the best of three runs. */
    bench_create(1000);
    for (int i = 0; i < 3; i++) {
        double c = bench_create(n), y = bench_yield(n);
        create = c < create ? c : create;
        yield = y < yield ? y : yield;
    }
    printf("coroutine create+enter+terminate (pooled): %.1f ns\n", create);
    printf("coroutine yield+re-enter (2 switches):     %.1f ns  (%.1f ns per switch)\n",
           yield, yield / 2);
    main_loop_cleanup();
    return 0;
}
