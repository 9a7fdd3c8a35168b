/*
 * bench-bh-latency - cross-thread bottom-half latency, in microseconds.
 *
 * The main thread schedules a one-shot BH in an iothread and waits until it
 * has run; the BH records how long after scheduling it started.  Reported
 * for an iothread that busy-polls (poll-max-ns 32768, the default) and for
 * one that always sleeps (poll-max-ns 0).
 */
#include <stdio.h>
#include <stdlib.h>

#include "blockd/aio-wait.h"
#include "blockd/iothread.h"

typedef struct Sample {
    int64_t scheduled_ns;
    int64_t latency_ns;
    bool done;
} Sample;

static void record_bh(void *opaque)
{
    Sample *s = opaque;
    s->latency_ns = clock_now_ns() - s->scheduled_ns;
    atomic_store_release(&s->done, true);
    aio_wait_kick();
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static void run(const char *label, int64_t poll_max_ns, int n)
{
    IOThreadParams params;
    IOThread *iot;
    int64_t *lat = calloc(n, sizeof(*lat));
    double sum = 0;

    iothread_params_init(&params);
    params.poll_max_ns = poll_max_ns;
    iot = iothread_create("bench", &params, &error_abort);
    for (int i = 0; i < n; i++) {
        Sample s = { .scheduled_ns = clock_now_ns() };
        aio_bh_schedule_oneshot(iothread_get_aio_context(iot), record_bh, &s);
        AIO_WAIT_WHILE(NULL, !atomic_load_acquire(&s.done));
        lat[i] = s.latency_ns;
        sum += s.latency_ns;
    }
    qsort(lat, n, sizeof(*lat), cmp_i64);
    printf("cross-thread BH schedule->run, %s: mean %.2f us, p50 %.2f us, p99 %.2f us\n",
           label, sum / n / 1000.0, lat[n / 2] / 1000.0, lat[n * 99 / 100] / 1000.0);
    iothread_destroy(iot);
    free(lat);
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 20000;

    main_loop_init();
    run("iothread busy-polling (poll-max-ns=32768)", IOTHREAD_DEFAULT_POLL_MAX_NS, n);
    run("iothread sleeping (poll-max-ns=0)", 0, n);
    main_loop_cleanup();
    return 0;
}
