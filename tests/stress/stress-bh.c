/*
 * stress-bh - bottom halves scheduled across threads, exact counts.
 *
 * Three event loops (main, two iothreads) and two plain pthreads all
 * hammer each other's contexts at the same time with:
 *   - one-shot BHs (aio_bh_schedule_oneshot), each carrying a sequence
 *     number per (source, destination) pair: every one must run exactly
 *     once, in its destination's home thread, in the order it was sent;
 *   - a ring of persistent BHs (bh_schedule), one per loop, each of which
 *     schedules the next one in the next loop: a single token that must
 *     make exactly the number of hops asked for;
 *   - ping-pong from the pthreads: bh_schedule a persistent BH in a loop,
 *     wait for it to run, again: exactly one run per schedule.
 *
 * STRESS_BH sets the number of one-shot BHs each source sends to each
 * destination (default 50000); the ring and ping-pong scale with it.
 */
#include <semaphore.h>
#include <string.h>

#define TU_WATCHDOG_SECONDS 800
#include "../unit/test-util.h"

#define NLOOPS 3                     /* main, iot0, iot1 */
#define NPTHREADS 2
#define NSOURCES (NLOOPS + NPTHREADS)
#define CHUNK 64

typedef struct Stress Stress;

typedef struct OneShot {
    Stress *s;
    int src;
    int dst;
    long seq;
} OneShot;

typedef struct Source {
    Stress *s;
    int index;
    long sent[NLOOPS];       /* owned by the source */
    OneShot *items[NLOOPS];  /* preallocated, one per message */
    BH *producer_bh;         /* loops only: sends a chunk, reschedules */
    unsigned done;           /* atomic */
} Source;

typedef struct Loop {
    Stress *s;
    int index;
    AioContext *ctx;
    pthread_t thread;
    long next_seq[NSOURCES]; /* touched only in this loop's thread */
    long received;           /* atomic */
    BH *ring_bh;
    long ring_runs;          /* touched only in this loop's thread */
    BH *pong_bh[NPTHREADS];
    long pong_runs[NPTHREADS];   /* atomic */
    sem_t pong_sem[NPTHREADS];
} Loop;

struct Stress {
    long per_pair;
    long ring_hops;
    long pongs;
    Loop loops[NLOOPS];
    Source sources[NSOURCES];
    long ring_count;         /* atomic */
    unsigned ring_done;      /* atomic */
    unsigned pthreads_done;  /* atomic */
    unsigned bad_order;      /* atomic */
    unsigned wrong_thread;   /* atomic */
    long total_received;     /* atomic */
};

static bool in_loop(Loop *l)
{
    return current_aio_context() == l->ctx && pthread_equal(tu_thread_self(), l->thread);
}

static void oneshot_cb(void *opaque)
{
    OneShot *o = opaque;
    Stress *s = o->s;
    Loop *l = &s->loops[o->dst];

    if (!in_loop(l)) {
        atomic_inc(&s->wrong_thread);
    }
    if (o->seq != l->next_seq[o->src]) {
        atomic_inc(&s->bad_order);
    }
    l->next_seq[o->src] = o->seq + 1;
    atomic_inc(&l->received);
    if (atomic_fetch_add(&s->total_received, 1) + 1 ==
        (long)NSOURCES * NLOOPS * s->per_pair) {
        aio_wait_kick();
    }
}

/* Send up to @n more one-shot BHs from @src, round-robin over the loops.
 * Returns true when everything has been sent. */
static bool send_some(Source *src, long n)
{
    Stress *s = src->s;
    bool all = true;

    for (long k = 0; k < n; k++) {
        all = true;
        for (int d = 0; d < NLOOPS; d++) {
            if (src->sent[d] < s->per_pair) {
                OneShot *o = &src->items[d][src->sent[d]];
                o->s = s;
                o->src = src->index;
                o->dst = d;
                o->seq = src->sent[d]++;
                aio_bh_schedule_oneshot(s->loops[d].ctx, oneshot_cb, o);
                all = false;
            }
        }
        if (all) {
            break;
        }
    }
    for (int d = 0; d < NLOOPS; d++) {
        if (src->sent[d] < s->per_pair) {
            return false;
        }
    }
    return true;
}

/* Loops produce from a BH that sends a chunk and reschedules itself, so
 * that they keep serving their own queue in between. */
static void producer_bh_cb(void *opaque)
{
    Source *src = opaque;

    if (send_some(src, CHUNK)) {
        atomic_store_release(&src->done, 1);
        aio_wait_kick();
    } else {
        bh_schedule(src->producer_bh);
    }
}

/* The ring of persistent BHs: loop i schedules loop i+1's. */
static void ring_cb(void *opaque)
{
    Loop *l = opaque;
    Stress *s = l->s;

    if (!in_loop(l)) {
        atomic_inc(&s->wrong_thread);
    }
    l->ring_runs++;
    long n = atomic_fetch_add(&s->ring_count, 1) + 1;
    if (n < s->ring_hops) {
        bh_schedule(s->loops[(l->index + 1) % NLOOPS].ring_bh);
    } else {
        atomic_store_release(&s->ring_done, 1);
        aio_wait_kick();
    }
}

typedef struct PongArg {
    Loop *l;
    int p;
} PongArg;

static PongArg pong_args[NLOOPS][NPTHREADS];

static void pong_cb(void *opaque)
{
    PongArg *a = opaque;

    atomic_inc(&a->l->pong_runs[a->p]);
    sem_post(&a->l->pong_sem[a->p]);
}

static void *pthread_source(void *opaque)
{
    Source *src = opaque;
    Stress *s = src->s;
    int p = src->index - NLOOPS;
    long pongs = 0;
    uint64_t rnd = 0x9E3779B97F4A7C15ULL * (uint64_t)(src->index + 1);

    for (;;) {
        bool sent_all = send_some(src, CHUNK / 4);
        if (pongs < s->pongs) {
            Loop *l = &s->loops[tu_rand(&rnd) % NLOOPS];
            bh_schedule(l->pong_bh[p]);
            sem_wait(&l->pong_sem[p]);
            pongs++;
        }
        if (sent_all && pongs >= s->pongs) {
            break;
        }
    }
    atomic_store_release(&src->done, 1);
    atomic_inc(&s->pthreads_done);
    aio_wait_kick();
    return NULL;
}

static void delete_bhs_bh(void *opaque)
{
    Loop *l = opaque;

    bh_delete(l->ring_bh);
    for (int p = 0; p < NPTHREADS; p++) {
        bh_delete(l->pong_bh[p]);
    }
    bh_delete(l->s->sources[l->index].producer_bh);
}

static bool all_done(Stress *s)
{
    for (int i = 0; i < NSOURCES; i++) {
        if (!atomic_load_acquire(&s->sources[i].done)) {
            return false;
        }
    }
    return atomic_read_mb(&s->total_received) == (long)NSOURCES * NLOOPS * s->per_pair &&
           atomic_load_acquire(&s->ring_done) &&
           atomic_read_mb(&s->pthreads_done) == NPTHREADS;
}

static void test_bh_storm(void **state)
{
    Stress *s = calloc(1, sizeof(*s));
    IOThread *iot[NLOOPS - 1];
    BdThread threads[NPTHREADS];
    int64_t start;

    (void)state;
    s->per_pair = tu_env_long("STRESS_BH", 50000);
    s->ring_hops = s->per_pair * 5;
    s->pongs = s->per_pair / 4 + 1;

    for (int i = 0; i < NLOOPS; i++) {
        Loop *l = &s->loops[i];
        l->s = s;
        l->index = i;
        if (i == 0) {
            l->ctx = main_aio_context();
        } else {
            char name[16];
            snprintf(name, sizeof(name), "bh-%d", i);
            iot[i - 1] = tu_iothread_new(name);
            l->ctx = iothread_get_aio_context(iot[i - 1]);
        }
        l->thread = tu_thread_info(l->ctx).thread;
        for (int p = 0; p < NPTHREADS; p++) {
            sem_init(&l->pong_sem[p], 0, 0);
            pong_args[i][p] = (PongArg){ l, p };
            l->pong_bh[p] = aio_bh_new(l->ctx, pong_cb, &pong_args[i][p]);
        }
        l->ring_bh = aio_bh_new(l->ctx, ring_cb, l);
    }
    for (int i = 0; i < NSOURCES; i++) {
        Source *src = &s->sources[i];
        src->s = s;
        src->index = i;
        for (int d = 0; d < NLOOPS; d++) {
            src->items[d] = calloc(s->per_pair, sizeof(OneShot));
        }
        if (i < NLOOPS) {
            src->producer_bh = aio_bh_new(s->loops[i].ctx, producer_bh_cb, src);
        }
    }

    start = clock_now_ns();
    for (int p = 0; p < NPTHREADS; p++) {
        char name[16];
        snprintf(name, sizeof(name), "bh-src-%d", p);
        bd_thread_create(&threads[p], name, pthread_source, &s->sources[NLOOPS + p]);
    }
    for (int i = 0; i < NLOOPS; i++) {
        bh_schedule(s->sources[i].producer_bh);
    }
    bh_schedule(s->loops[0].ring_bh);
    AIO_WAIT_WHILE(NULL, !all_done(s));
    double secs = (double)(clock_now_ns() - start) / 1e9;

    for (int p = 0; p < NPTHREADS; p++) {
        bd_thread_join(&threads[p]);
    }
    /* Free the persistent BHs in their home threads, then stop them. */
    for (int i = 0; i < NLOOPS; i++) {
        aio_wait_bh_oneshot(s->loops[i].ctx, delete_bhs_bh, &s->loops[i]);
    }
    for (int i = 0; i < NLOOPS - 1; i++) {
        iothread_destroy(iot[i]);
    }
    print_message("%ld one-shot BHs, %ld ring hops, %ld ping-pongs in %.2f s\n",
                  (long)NSOURCES * NLOOPS * s->per_pair, s->ring_hops,
                  NPTHREADS * s->pongs, secs);

    assert_int_equal(atomic_read(&s->wrong_thread), 0);
    assert_int_equal(atomic_read(&s->bad_order), 0);
    assert_int_equal(atomic_read(&s->total_received), (long)NSOURCES * NLOOPS * s->per_pair);
    long ring_runs = 0;
    long pong_runs = 0;
    for (int i = 0; i < NLOOPS; i++) {
        Loop *l = &s->loops[i];
        assert_int_equal(atomic_read(&l->received), (long)NSOURCES * s->per_pair);
        for (int src = 0; src < NSOURCES; src++) {
            assert_int_equal(l->next_seq[src], s->per_pair);
        }
        ring_runs += l->ring_runs;
        for (int p = 0; p < NPTHREADS; p++) {
            pong_runs += atomic_read(&l->pong_runs[p]);
            sem_destroy(&l->pong_sem[p]);
        }
    }
    assert_int_equal(ring_runs, s->ring_hops);
    assert_int_equal(atomic_read(&s->ring_count), s->ring_hops);
    assert_int_equal(pong_runs, NPTHREADS * s->pongs);
    for (int i = 0; i < NSOURCES; i++) {
        for (int d = 0; d < NLOOPS; d++) {
            free(s->sources[i].items[d]);
        }
    }
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_bh_storm, tu_setup, tu_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
