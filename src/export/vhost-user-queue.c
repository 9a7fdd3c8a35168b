/*
 * vhost-user-queue.c - a queue at work in its own context: the kick
 * eventfd wakes it, it takes requests from the ring and hands them to the
 * device, and it interrupts the guest (call eventfd) once per batch of
 * completions.
 *
 * Starting and stopping happen in the queue's context too (one-shot bottom
 * halves), so the kick handler never runs while the control thread changes
 * what it uses; vu_queue_stop() also waits for the requests in flight,
 * which point into guest memory.
 */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "blockd/aio-wait.h"
#include "blockd/atomic.h"
#include "blockd/log.h"
#include "blockd/main-loop.h"
#include "vhost-user-int.h"

VuQueue *vu_queue_new(VuDev *dev, int index, AioContext *ctx)
{
    VuQueue *q = calloc(1, sizeof(*q));

    if (!q) {
        abort();
    }
    q->dev = dev;
    q->index = index;
    q->ctx = ctx;
    q->kick_fd = -1;
    q->call_fd = -1;
    return q;
}

void vu_queue_free(VuQueue *q)
{
    vu_queue_stop(q);
    vu_queue_reset(q);
    free(q);
}

VuDev *vu_queue_dev(VuQueue *q)
{
    return q->dev;
}

/* ---- In the queue's context ------------------------------------------------- */

static void queue_notify(void *opaque)
{
    VuQueue *q = opaque;

    q->notify_pending = false;
    if (q->call_fd >= 0 && vq_should_notify(&q->vq)) {
        uint64_t one = 1;
        ssize_t ret = write(q->call_fd, &one, sizeof(one));
        (void)ret;                      /* a full eventfd notifies anyway */
    }
}

void vu_queue_complete(VuQueue *q, unsigned head, uint32_t len)
{
    IO_CODE();
    vq_push(&q->vq, head, len);
    if (!q->notify_pending) {
        q->notify_pending = true;
        bh_schedule(q->notify_bh);
    }
    atomic_dec(&q->in_flight);
    aio_wait_kick();
}

static void queue_unwatch(VuQueue *q)
{
    aio_set_fd_handler(q->ctx, q->kick_fd, NULL, NULL, NULL, NULL);
}

void vu_queue_break(VuQueue *q, unsigned head, const char *why)
{
    IO_CODE();
    (void)head;
    if (!atomic_xchg(&q->broken, 1)) {
        error_report("vhost-user: queue %d: %s; the queue is stopped until the "
                     "driver resets it", q->index, why);
        queue_unwatch(q);
    }
    atomic_dec(&q->in_flight);
    aio_wait_kick();
}

static void queue_process(VuQueue *q)
{
    const char *why = NULL;
    int ret;

    if (!atomic_read(&q->enabled) || atomic_read(&q->broken)) {
        return;
    }
    do {
        while ((ret = vq_pop(&q->vq, q->scratch, &why)) > 0) {
            atomic_inc(&q->in_flight);
            q->dev->ops->process(q, q->scratch);
            if (atomic_read(&q->broken)) {
                return;
            }
        }
        if (ret < 0) {
            atomic_inc(&q->in_flight);
            vu_queue_break(q, 0, why);
            return;
        }
    } while (vq_enable_kicks(&q->vq));
}

static void queue_kicked(void *opaque)
{
    VuQueue *q = opaque;
    uint64_t count;

    if (read(q->kick_fd, &count, sizeof(count)) < 0 && errno != EAGAIN) {
        return;
    }
    queue_process(q);
}

static void queue_start_bh(void *opaque)
{
    VuQueue *q = opaque;
    uint64_t one = 1;

    if (atomic_read(&q->broken)) {
        return;                 /* until the front-end resets the ring */
    }
    aio_set_fd_handler(q->ctx, q->kick_fd, queue_kicked, NULL, NULL, q);
    queue_process(q);           /* requests queued before the kick fd */
    /* Completions made before the call fd came (or while it changed) were
     * not signalled: one interrupt too many is harmless, one too few
     * hangs the guest. */
    if (q->call_fd >= 0 && write(q->call_fd, &one, sizeof(one)) < 0) {
        /* a full eventfd has an interrupt pending anyway */
    }
}

static void queue_stop_bh(void *opaque)
{
    queue_unwatch(opaque);
}

/* Send the notification still due, and drop the bottom half. */
static void queue_flush_bh(void *opaque)
{
    VuQueue *q = opaque;

    if (q->notify_pending) {
        bh_cancel(q->notify_bh);
        queue_notify(q);
    }
    bh_delete(q->notify_bh);
    q->notify_bh = NULL;
}

static void queue_process_bh(void *opaque)
{
    queue_process(opaque);
}

/* ---- In the control thread ---------------------------------------------------- */

bool vu_queue_start(VuQueue *q)
{
    VuDev *dev = q->dev;
    const char *why;

    GLOBAL_STATE_CODE();
    if (q->running || q->kick_fd < 0 || !q->have_addr || dev->mem.nregions == 0) {
        return true;
    }
    if (!vq_map(&q->vq, &dev->mem, q->num, q->desc_qva, q->avail_qva, q->used_qva,
                dev->features & (1ULL << VIRTIO_RING_F_EVENT_IDX), &why)) {
        error_report("vhost-user: queue %d: %s", q->index, why);
        return false;
    }
    if (!(dev->features & (1ULL << VHOST_USER_F_PROTOCOL_FEATURES))) {
        atomic_set(&q->enabled, 1);      /* no SET_VRING_ENABLE will come */
    }
    if (!q->scratch && !(q->scratch = malloc(sizeof(*q->scratch)))) {
        abort();
    }
    q->notify_pending = false;
    q->notify_bh = aio_bh_new(q->ctx, queue_notify, q);
    q->running = true;
    aio_bh_schedule_oneshot(q->ctx, queue_start_bh, q);
    return true;
}

void vu_queue_stop(VuQueue *q)
{
    GLOBAL_STATE_CODE();
    if (!q->running) {
        return;
    }
    aio_wait_bh_oneshot(q->ctx, queue_stop_bh, q);
    AIO_WAIT_WHILE(NULL, atomic_read(&q->in_flight) > 0);
    aio_wait_bh_oneshot(q->ctx, queue_flush_bh, q);
    q->running = false;
}

void vu_queue_set_enabled(VuQueue *q, bool enabled)
{
    GLOBAL_STATE_CODE();
    atomic_set(&q->enabled, enabled);
    if (enabled && q->running) {
        aio_bh_schedule_oneshot(q->ctx, queue_process_bh, q);
    }
}

void vu_queue_close_fds(VuQueue *q)
{
    GLOBAL_STATE_CODE();
    assert(!q->running);
    if (q->kick_fd >= 0) {
        close(q->kick_fd);
    }
    if (q->call_fd >= 0) {
        close(q->call_fd);
    }
    q->kick_fd = q->call_fd = -1;
    /* A request the device gave up on (vu_queue_break) is not coming
     * back: the ring starts over from SET_VRING_BASE. */
    q->vq.inuse = 0;
    atomic_set(&q->broken, 0);
}

void vu_queue_reset(VuQueue *q)
{
    GLOBAL_STATE_CODE();
    vu_queue_close_fds(q);
    q->have_addr = false;
    q->num = 0;
    q->vq.last_avail = 0;
    q->vq.used_idx = 0;
    atomic_set(&q->enabled, 0);
    free(q->scratch);
    q->scratch = NULL;
}
