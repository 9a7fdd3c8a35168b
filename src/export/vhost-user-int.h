/*
 * vhost-user-int.h - what the two halves of the vhost-user back-end share:
 * the connection and its messages (vhost-user.c, main thread) and the
 * queues at work (vhost-user-queue.c, each in its own context).
 */
#ifndef BLOCKD_VHOST_USER_INT_H
#define BLOCKD_VHOST_USER_INT_H

#include "vhost-user.h"

struct VuQueue {
    VuDev *dev;
    int index;
    AioContext *ctx;                    /* immutable: where it is served */
    /* Set up by the control thread while the queue is stopped. */
    VirtQueue vq;
    unsigned num;                       /* SET_VRING_NUM */
    uint64_t desc_qva, avail_qva, used_qva;
    bool have_addr;
    int kick_fd;                        /* -1: none */
    int call_fd;                        /* -1: none */
    bool running;                       /* control thread: kick handler on */
    int enabled;                        /* atomic: SET_VRING_ENABLE */
    int broken;                         /* atomic: the guest broke the rules */
    unsigned in_flight;                 /* atomic: given to the device */
    /* In the queue's context while running. */
    bool notify_pending;
    BH *notify_bh;
    VqElem *scratch;                    /* what vq_pop() fills */
};

struct VuDev {
    const VuDevOps *ops;
    void *opaque;
    int listen_fd;                      /* -1 after shutdown */
    int fd;                             /* the front-end, or -1 */
    int backend_fd;                     /* the back-end channel, or -1 */
    uint64_t features;                  /* negotiated (SET_FEATURES) */
    uint64_t protocol_features;
    VuMem mem;
    int num_queues;
    VuQueue **queues;                   /* created on first use */
    AioContext **ctxs;
    int nctxs;
    /* The message being received. */
    uint8_t *rbuf;
    size_t rlen;
    int rfds[VU_MAX_REGIONS];
    int nrfds;
};

/* vhost-user-queue.c (control thread) */
VuQueue *vu_queue_new(VuDev *dev, int index, AioContext *ctx);
void vu_queue_free(VuQueue *q);
/* Start serving @q if it is complete (rings, kick fd, memory): false if
 * its rings do not lie in guest memory.  A queue the guest broke stays
 * stopped until vu_queue_close_fds(). */
bool vu_queue_start(VuQueue *q);
/* Stop serving @q and wait for its requests. */
void vu_queue_stop(VuQueue *q);
/* SET_VRING_ENABLE */
void vu_queue_set_enabled(VuQueue *q, bool enabled);
/* The ring stopped (GET_VRING_BASE): its eventfds go, its setup stays. */
void vu_queue_close_fds(VuQueue *q);
/* Forget the front-end's whole setup of @q (it is stopped). */
void vu_queue_reset(VuQueue *q);

#define VHOST_USER_F_PROTOCOL_FEATURES 30
#define VIRTIO_RING_F_EVENT_IDX 29

#endif /* BLOCKD_VHOST_USER_INT_H */
