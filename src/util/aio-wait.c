/*
 * aio-wait.c - kicking the main thread out of AIO_WAIT_WHILE.
 */
#include "blockd/aio-wait.h"

unsigned aio_wait_num_waiters;

static void dummy_bh_cb(void *opaque)
{
    (void)opaque;
}

void aio_wait_kick(void)
{
    /* Pairs with the seq_cst increment in AIO_WAIT_WHILE: either the waiter
     * sees our change when it evaluates its condition, or we see it waiting. */
    smp_mb();
    if (atomic_read_mb(&aio_wait_num_waiters)) {
        aio_bh_schedule_oneshot(main_aio_context(), dummy_bh_cb, NULL);
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
