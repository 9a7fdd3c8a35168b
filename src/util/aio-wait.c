/*
 * aio-wait.c - kicking the main thread out of AIO_WAIT_WHILE.
 */
#include "blockd/aio-wait.h"

unsigned aio_wait_num_waiters;

/* Scheduling an already scheduled BH is free: kicks coalesce. */
static BH *kick_bh;

static void kick_bh_cb(void *opaque)
{
    (void)opaque;
}

void aio_wait_init(void)
{
    kick_bh = aio_bh_new(main_aio_context(), kick_bh_cb, NULL);
}

void aio_wait_cleanup(void)
{
    bh_delete(kick_bh);
    kick_bh = NULL;
}

void aio_wait_kick(void)
{
    unsigned waiters;

    /* Pairs with the seq_cst increment in AIO_WAIT_WHILE: either the waiter
     * sees our change when it evaluates its condition, or we see it waiting. */
#ifdef BD_TSAN
    /* TSan does not model fences; an RMW on the counter orders the same way. */
    waiters = atomic_fetch_add(&aio_wait_num_waiters, 0);
#else
    smp_mb();
    waiters = atomic_read(&aio_wait_num_waiters);
#endif
    if (waiters) {
        bh_schedule(kick_bh);
    }
}

typedef struct WaitBHData {
    BHFunc *cb;
    void *opaque;
    bool done;
} WaitBHData;

static void wait_bh(void *opaque)
{
    WaitBHData *data = opaque;

    data->cb(data->opaque);
    atomic_store_release(&data->done, true);
    aio_wait_kick();
}

void aio_wait_bh_oneshot(AioContext *ctx, BHFunc *cb, void *opaque)
{
    WaitBHData data = { .cb = cb, .opaque = opaque };

    GLOBAL_STATE_CODE();
    aio_bh_schedule_oneshot(ctx, wait_bh, &data);
    AIO_WAIT_WHILE_UNLOCKED(ctx, !atomic_load_acquire(&data.done));
}
