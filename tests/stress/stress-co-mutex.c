/*
 * stress-co-mutex - one CoMutex, coroutines in four iothreads and the main
 * thread, random yields and moves between contexts, also while holding
 * the lock.  The protected counter is updated with a read, a possible
 * trip through the event loop, and a write: any break in mutual exclusion
 * loses increments, so the final count must be exact.
 *
 * STRESS_ITERS sets the iterations per coroutine (default 50000).
 */
#define TU_WATCHDOG_SECONDS 800
#include "../unit/test-util.h"

#define NIOTHREADS 4
#define NCTX (NIOTHREADS + 1)
#define CO_PER_CTX 2
#define NCO (NCTX * CO_PER_CTX)

typedef struct Shared {
    CoMutex lock;
    long counter;            /* protected by lock */
    Coroutine *owner;        /* protected by lock */
    AioContext *ctx[NCTX];
    pthread_t thread[NCTX];
    long iterations;
    unsigned finished;       /* atomic */
    unsigned violations;     /* atomic */
    unsigned wrong_place;    /* atomic */
    long moves;              /* atomic */
    long moves_locked;       /* atomic */
    long yields;             /* atomic */
} Shared;

typedef struct Worker {
    Shared *sh;
    int index;
    uint64_t rnd;
    long done;
} Worker;

static void check_place(Shared *sh, int want)
{
    if (current_aio_context() != sh->ctx[want] ||
        !pthread_equal(tu_thread_self(), sh->thread[want])) {
        atomic_inc(&sh->wrong_place);
    }
}

/* Move to a random context; returns its index. */
static int coroutine_fn move_somewhere(Shared *sh, Worker *w)
{
    int to = (int)(tu_rand(&w->rnd) % NCTX);

    aio_co_reschedule_self(sh->ctx[to]);
    check_place(sh, to);
    atomic_inc(&sh->moves);
    return to;
}

static int where_index(Shared *sh)
{
    AioContext *ctx = current_aio_context();

    for (int i = 0; i < NCTX; i++) {
        if (sh->ctx[i] == ctx) {
            return i;
        }
    }
    return -1;
}

static void coroutine_fn worker_entry(void *opaque)
{
    Worker *w = opaque;
    Shared *sh = w->sh;
    Coroutine *self = coroutine_self();
    int here = where_index(sh);

    check_place(sh, here);
    for (long i = 0; i < sh->iterations; i++) {
        uint64_t r = tu_rand(&w->rnd);

        co_mutex_lock(&sh->lock);
        if (sh->owner != NULL || !co_mutex_held(&sh->lock)) {
            atomic_inc(&sh->violations);
        }
        sh->owner = self;
        long v = sh->counter;
        switch (r % 64) {
        case 0: case 1: case 2: case 3:
            tu_co_yield_to_loop();
            atomic_inc(&sh->yields);
            check_place(sh, here);
            break;
        case 4:
            here = move_somewhere(sh, w);       /* lock held while moving */
            atomic_inc(&sh->moves_locked);
            break;
        default:
            break;
        }
        if (sh->owner != self || !co_mutex_held(&sh->lock)) {
            atomic_inc(&sh->violations);
        }
        sh->counter = v + 1;
        sh->owner = NULL;
        co_mutex_unlock(&sh->lock);

        switch ((r >> 8) % 32) {
        case 0:
            here = move_somewhere(sh, w);
            break;
        case 1: case 2: case 3:
            tu_co_yield_to_loop();
            atomic_inc(&sh->yields);
            check_place(sh, here);
            break;
        default:
            break;
        }
        w->done++;
    }
    atomic_inc(&sh->finished);
    aio_wait_kick();
}

static void test_co_mutex_storm(void **state)
{
    IOThread *iot[NIOTHREADS];
    Shared *sh = calloc(1, sizeof(*sh));
    Worker w[NCO];
    int64_t start;

    (void)state;
    co_mutex_init(&sh->lock);
    sh->iterations = tu_env_long("STRESS_ITERS", 50000);
    sh->ctx[0] = main_aio_context();
    sh->thread[0] = pthread_self();
    for (int i = 0; i < NIOTHREADS; i++) {
        char name[16];
        snprintf(name, sizeof(name), "mtx-%d", i);
        iot[i] = tu_iothread_new(name);
        sh->ctx[i + 1] = iothread_get_aio_context(iot[i]);
        sh->thread[i + 1] = tu_thread_info(sh->ctx[i + 1]).thread;
    }

    start = clock_now_ns();
    for (int i = 0; i < NCO; i++) {
        w[i] = (Worker){ .sh = sh, .index = i,
                         .rnd = 0x243F6A8885A308D3ULL * (uint64_t)(i + 1) };
        aio_co_schedule(sh->ctx[i % NCTX], coroutine_create(worker_entry, &w[i]));
    }
    AIO_WAIT_WHILE(NULL, atomic_read_mb(&sh->finished) < NCO);
    double secs = (double)(clock_now_ns() - start) / 1e9;

    for (int i = 0; i < NIOTHREADS; i++) {
        iothread_destroy(iot[i]);
    }
    print_message("%ld lock/unlock pairs, %ld moves (%ld holding the lock), "
                  "%ld yields in %.2f s\n",
                  sh->counter, atomic_read(&sh->moves), atomic_read(&sh->moves_locked),
                  atomic_read(&sh->yields), secs);

    assert_int_equal(sh->counter, (long)NCO * sh->iterations);
    assert_int_equal(atomic_read(&sh->violations), 0);
    assert_int_equal(atomic_read(&sh->wrong_place), 0);
    assert_true(atomic_read(&sh->moves_locked) > 0);
    for (int i = 0; i < NCO; i++) {
        assert_int_equal(w[i].done, sh->iterations);
    }
    free(sh);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_co_mutex_storm, tu_setup, tu_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
