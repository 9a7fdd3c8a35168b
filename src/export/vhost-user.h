/*
 * vhost-user.h - the back-end side of the vhost-user protocol, for a
 * device type (virtio-blk: vhost-user-blk.c) to put requests behind.
 *
 * One front-end (a VMM) at a time connects to the listening socket; its
 * control messages (features, memory table, vrings, config space) are
 * handled in the main thread.  Each queue is served in its own context
 * (an iothread, or the main loop): the kick eventfd is read there, the
 * requests are taken from the ring and handed to the device there, and
 * the device completes them there.  A control message that changes what a
 * running queue uses (the memory table, the queue's rings or eventfds)
 * first stops the queue and waits for its requests in flight.
 *
 * docs/vhost-user-blk.md describes the protocol subset and the rules.
 */
#ifndef BLOCKD_VHOST_USER_H
#define BLOCKD_VHOST_USER_H

#include <stdbool.h>
#include <stdint.h>

#include "blockd/aio.h"
#include "blockd/error.h"
#include "virtqueue.h"

typedef struct VuDev VuDev;
typedef struct VuQueue VuQueue;

typedef struct VuDevOps {
    /* The device's virtio feature bits (VERSION_1, ring features and the
     * device's own).  Global state. */
    uint64_t (*get_features)(VuDev *dev);
    /* Copy up to @len bytes of the config space into @buf; returns the
     * bytes the config space has.  Global state. */
    uint32_t (*get_config)(VuDev *dev, uint8_t *buf, uint32_t len);
    /* The front-end writes @size bytes at @offset: 0 or -errno.  Global
     * state. */
    int (*set_config)(VuDev *dev, const uint8_t *data, uint32_t offset, uint32_t size,
                      uint32_t flags);
    /* A request taken from @q, in @q's context.  @elem is only valid
     * during the call: the device copies what it keeps, and ends the
     * request with vu_queue_complete() or vu_queue_break(), from @q's
     * context, now or later. */
    void (*process)(VuQueue *q, const VqElem *elem);
} VuDevOps;

/*
 * Serve @num_queues queues behind the listening socket @listen_fd (which
 * the device now owns), queue i in @ctxs[i % @nctxs].  Global state.
 */
VuDev *vu_dev_new(const VuDevOps *ops, void *opaque, int listen_fd, int num_queues,
                  AioContext *const *ctxs, int nctxs);
/* Stop listening, end the connection, wait for the requests in flight.
 * Global state. */
void vu_dev_shutdown(VuDev *dev);
void vu_dev_free(VuDev *dev);
/* Tell the front-end that the config space changed (if it can be told:
 * it negotiated the back-end channel).  Global state. */
void vu_dev_config_changed(VuDev *dev);
/* Is a front-end connected?  Global state. */
bool vu_dev_connected(VuDev *dev);
void *vu_dev_opaque(VuDev *dev);

/* ---- For the device, in the queue's context ---- */

VuDev *vu_queue_dev(VuQueue *q);
/* Give request @head back, @len bytes written into its buffers. */
void vu_queue_complete(VuQueue *q, unsigned head, uint32_t len);
/* The request @head cannot even be answered (no room for a status):
 * serve the queue no more until the front-end sets it up again. */
void vu_queue_break(VuQueue *q, unsigned head, const char *why);

#endif /* BLOCKD_VHOST_USER_H */
