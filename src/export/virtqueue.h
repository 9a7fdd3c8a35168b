/*
 * virtqueue.h - guest memory and split virtqueues, as a vhost-user device
 * sees them (virtio 1.x, "Split Virtqueues").
 *
 * The guest is untrusted: every address it writes into a ring is checked
 * against the memory table before it is used, every index against the
 * ring's size, every chain against loops and nesting.  A request that
 * breaks the rules makes vq_pop() fail with a reason; the caller then
 * stops serving that queue (the device needs a reset) -- nothing here
 * ever reads or writes outside the mapped guest memory.
 *
 * Half: I/O.  A VirtQueue is used by one thread at a time: its home
 * thread while it runs, the control thread while it is stopped.
 */
#ifndef BLOCKD_VIRTQUEUE_H
#define BLOCKD_VIRTQUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#define VU_MAX_REGIONS 8                /* SET_MEM_TABLE's limit */
#define VQ_MAX_SIZE 32768               /* the largest split ring */
#define VQ_MAX_SEGMENTS 1024            /* buffers of one request */

/* One region of guest memory, mapped into ours. */
typedef struct VuRegion {
    uint64_t gpa;                       /* guest physical address */
    uint64_t size;
    uint64_t qva;                       /* the front-end's own address */
    uint8_t *host;                      /* our mapping of gpa */
    void *map;                          /* what munmap() takes */
    size_t map_size;
} VuRegion;

typedef struct VuMem {
    int nregions;
    VuRegion regions[VU_MAX_REGIONS];
} VuMem;

/* Our address of [addr, addr + len) if the whole range lies in one region,
 * else NULL.  By guest physical address, or by the front-end's address. */
void *vu_gpa_to_host(const VuMem *mem, uint64_t gpa, uint64_t len);
void *vu_qva_to_host(const VuMem *mem, uint64_t qva, uint64_t len);
/* Unmap every region. */
void vu_mem_unmap(VuMem *mem);

typedef struct VirtQueue {
    const VuMem *mem;
    unsigned num;                       /* ring size, a power of 2 */
    volatile struct vq_desc *desc;
    volatile struct vq_avail *avail;
    volatile struct vq_used *used;
    uint16_t last_avail;                /* next entry of avail to take */
    uint16_t used_idx;                  /* next entry of used to fill */
    uint16_t signalled_used;            /* used_idx when we last notified */
    unsigned inuse;                     /* taken and not given back */
    bool signalled_valid;
    bool event_idx;                     /* VIRTIO_RING_F_EVENT_IDX */
} VirtQueue;

/* A request taken from the ring: its buffers, device-readable ones
 * (out) first, then device-writable ones (in). */
typedef struct VqElem {
    unsigned head;
    int out_num;
    int in_num;
    struct iovec iov[VQ_MAX_SEGMENTS];
} VqElem;

/*
 * Point @vq at its rings (front-end addresses, from SET_VRING_ADDR) in
 * @mem, for a ring of @num entries, with the event index fields if
 * @event_idx; the used index continues from the ring's.  False with *@why
 * set if a ring does not lie in guest memory.
 */
bool vq_map(VirtQueue *vq, const VuMem *mem, unsigned num, uint64_t desc_qva,
            uint64_t avail_qva, uint64_t used_qva, bool event_idx, const char **why);

/*
 * Take the next request: 1 with @elem filled, 0 if the ring is empty, -1
 * if the guest broke the rules (*@why says how; the queue must not be
 * used again until it is set up anew).  More requests than the ring has
 * entries are never taken: a guest that offers a head again before it
 * was given back breaks the rules.
 */
int vq_pop(VirtQueue *vq, VqElem *elem, const char **why);

/* Give request @head back with @len bytes written into its buffers. */
void vq_push(VirtQueue *vq, unsigned head, uint32_t len);

/* After vq_push()es: must the guest be interrupted (call fd)? */
bool vq_should_notify(VirtQueue *vq);

/*
 * Ask the guest to kick when it adds requests after the ones taken so far
 * (with EVENT_IDX), and tell whether it already did: true if the ring has
 * requests that vq_pop() has not taken.
 */
bool vq_enable_kicks(VirtQueue *vq);

#endif /* BLOCKD_VIRTQUEUE_H */
