/*
 * vhost-user.c - the front-end connection: accepting it, receiving its
 * messages (with the file descriptors they carry) without ever blocking
 * the main loop, and carrying them out.
 *
 * A front-end that breaks the framing (an unknown or oversized message,
 * too many fds, a GET with a bad argument) is disconnected with a message
 * in the log; a setting that cannot be carried out (a queue index out of
 * range, a memory table that cannot be mapped, rings outside guest memory)
 * is refused -- with a failure reply under REPLY_ACK, in the log without.
 * The export goes on listening for the next front-end, as it does when a
 * VMM goes away and comes back.
 *
 * The connection and the listener are watched in the main loop's
 * top-level context (iohandler_aio_context(), as the monitor's are), never
 * from inside a nested event loop: a message that stops queues waits for
 * their requests, and a request may itself wait for a drained section --
 * begun further down the same stack, in a nested loop -- to end.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sys/stat.h>

#include "blockd/atomic.h"
#include "blockd/log.h"
#include "blockd/main-loop.h"
#include "blockd/thread.h"
#include "vhost-user-int.h"

enum {
    VHOST_USER_GET_FEATURES = 1,
    VHOST_USER_SET_FEATURES = 2,
    VHOST_USER_SET_OWNER = 3,
    VHOST_USER_RESET_OWNER = 4,
    VHOST_USER_SET_MEM_TABLE = 5,
    VHOST_USER_SET_VRING_NUM = 8,
    VHOST_USER_SET_VRING_ADDR = 9,
    VHOST_USER_SET_VRING_BASE = 10,
    VHOST_USER_GET_VRING_BASE = 11,
    VHOST_USER_SET_VRING_KICK = 12,
    VHOST_USER_SET_VRING_CALL = 13,
    VHOST_USER_SET_VRING_ERR = 14,
    VHOST_USER_GET_PROTOCOL_FEATURES = 15,
    VHOST_USER_SET_PROTOCOL_FEATURES = 16,
    VHOST_USER_GET_QUEUE_NUM = 17,
    VHOST_USER_SET_VRING_ENABLE = 18,
    VHOST_USER_SET_BACKEND_REQ_FD = 21,
    VHOST_USER_GET_CONFIG = 24,
    VHOST_USER_SET_CONFIG = 25,
    VHOST_USER_RESET_DEVICE = 34,
};

/* Protocol features we offer. */
#define PROTOCOL_F_MQ           0
#define PROTOCOL_F_REPLY_ACK    3
#define PROTOCOL_F_BACKEND_REQ  5
#define PROTOCOL_F_CONFIG       9
#define PROTOCOL_F_RESET_DEVICE 13
#define OFFERED_PROTOCOL_FEATURES                                                 \
    (1ULL << PROTOCOL_F_MQ | 1ULL << PROTOCOL_F_REPLY_ACK |                       \
     1ULL << PROTOCOL_F_BACKEND_REQ | 1ULL << PROTOCOL_F_CONFIG |                 \
     1ULL << PROTOCOL_F_RESET_DEVICE)

#define BACKEND_CONFIG_CHANGE_MSG 2

#define FLAG_VERSION    0x1
#define FLAG_REPLY      0x4
#define FLAG_NEED_REPLY 0x8
#define VRING_NOFD      0x100
#define VRING_IDX_MASK  0xff

#define HDR_SIZE 12
#define MAX_PAYLOAD 4096
#define MAX_CONFIG 256

typedef struct VuHdr {
    uint32_t request;
    uint32_t flags;
    uint32_t size;
} VuHdr;

typedef struct VuVringAddr {
    uint32_t index;
    uint32_t flags;
    uint64_t desc;
    uint64_t used;
    uint64_t avail;
    uint64_t log;
} VuVringAddr;

typedef struct VuRegionMsg {
    uint64_t gpa;
    uint64_t size;
    uint64_t qva;
    uint64_t mmap_offset;
} VuRegionMsg;

typedef struct VuConfigMsg {
    uint32_t offset;
    uint32_t size;
    uint32_t flags;
    uint8_t data[];
} VuConfigMsg;

static void dev_disconnect(VuDev *dev);
static void dev_readable(void *opaque);
static void dev_accept(void *opaque);

/* Carrying out a message or a disconnect may wait for queues in a nested
 * event loop: neither the connection's handler nor the listener's may
 * run meanwhile. */
static void dev_pause(VuDev *dev)
{
    aio_set_fd_handler(iohandler_aio_context(), dev->fd, NULL, NULL, NULL, NULL);
    if (dev->listen_fd >= 0) {
        aio_set_fd_handler(iohandler_aio_context(), dev->listen_fd, NULL, NULL, NULL, NULL);
    }
}

static void dev_resume(VuDev *dev)
{
    if (dev->fd >= 0) {
        aio_set_fd_handler(iohandler_aio_context(), dev->fd, dev_readable, NULL, NULL, dev);
    }
    if (dev->listen_fd >= 0) {
        aio_set_fd_handler(iohandler_aio_context(), dev->listen_fd, dev_accept, NULL, NULL, dev);
    }
}

/* ---- Queues ------------------------------------------------------------------ */

static VuQueue *dev_queue(VuDev *dev, uint64_t index)
{
    int i = (int)index;

    if (index >= (uint64_t)dev->num_queues) {
        return NULL;
    }
    if (!dev->queues[i]) {
        dev->queues[i] = vu_queue_new(dev, i, dev->ctxs[i % dev->nctxs]);
    }
    return dev->queues[i];
}

static void dev_stop_queues(VuDev *dev)
{
    for (int i = 0; i < dev->num_queues; i++) {
        if (dev->queues[i]) {
            vu_queue_stop(dev->queues[i]);
        }
    }
}

static void dev_start_queues(VuDev *dev)
{
    for (int i = 0; i < dev->num_queues; i++) {
        if (dev->queues[i]) {
            vu_queue_start(dev->queues[i]);
        }
    }
}

/* ---- Sending -------------------------------------------------------------------- */

/* Send all of @buf; the front-end is waiting for it, so a full socket
 * buffer is waited out briefly.  False if the front-end is gone. */
static bool send_all(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    int64_t deadline = clock_now_ns() + 1000 * 1000 * 1000LL;

    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);

        if (n < 0 && errno == EAGAIN) {
            struct pollfd pfd = { .fd = fd, .events = POLLOUT };
            int64_t left_ms = (deadline - clock_now_ns()) / (1000 * 1000);

            if (left_ms <= 0 || poll(&pfd, 1, (int)left_ms) <= 0) {
                return false;           /* it does not read its replies */
            }
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return false;
        }
        p += n;
        len -= (size_t)n;
    }
    return true;
}

static bool reply(VuDev *dev, const VuHdr *req, const void *payload, uint32_t size)
{
    uint8_t buf[HDR_SIZE + MAX_PAYLOAD];
    VuHdr hdr = { .request = req->request, .flags = FLAG_VERSION | FLAG_REPLY, .size = size };

    memcpy(buf, &hdr, HDR_SIZE);
    if (size) {
        memcpy(buf + HDR_SIZE, payload, size);
    }
    return send_all(dev->fd, buf, HDR_SIZE + size);
}

static bool reply_u64(VuDev *dev, const VuHdr *req, uint64_t value)
{
    return reply(dev, req, &value, sizeof(value));
}

/* ---- Messages ------------------------------------------------------------------ */

/* Take the one fd a message must carry (-1 if none came). */
static int take_fd(VuDev *dev)
{
    int fd = dev->nrfds > 0 ? dev->rfds[0] : -1;

    if (dev->nrfds > 0) {
        memmove(dev->rfds, dev->rfds + 1, (size_t)(dev->nrfds - 1) * sizeof(int));
        dev->nrfds--;
    }
    return fd;
}

static bool set_mem_table(VuDev *dev, const uint8_t *p, uint32_t size)
{
    uint32_t n;
    VuMem mem = { 0 };

    if (size < 8) {
        return false;
    }
    memcpy(&n, p, sizeof(n));
    if (n == 0 || n > VU_MAX_REGIONS || size < 8 + n * sizeof(VuRegionMsg) ||
        (int)n != dev->nrfds) {
        error_report("vhost-user: memory table of %u regions with %d fds", n, dev->nrfds);
        return false;
    }
    for (uint32_t i = 0; i < n; i++) {
        VuRegionMsg m;
        VuRegion *r = &mem.regions[i];
        struct stat st;
        void *map;

        memcpy(&m, p + 8 + i * sizeof(m), sizeof(m));
        /* A region past the end of its file would fault when touched. */
        if (m.size == 0 || m.mmap_offset > SIZE_MAX - m.size ||
            m.gpa > UINT64_MAX - m.size || m.qva > UINT64_MAX - m.size ||
            fstat(dev->rfds[i], &st) < 0 ||
            (S_ISREG(st.st_mode) && m.size + m.mmap_offset > (uint64_t)st.st_size)) {
            error_report("vhost-user: memory region %u has a bad size or offset", i);
            vu_mem_unmap(&mem);
            return false;
        }
        map = mmap(NULL, m.size + m.mmap_offset, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_NORESERVE, dev->rfds[i], 0);
        if (map == MAP_FAILED) {
            error_report("vhost-user: cannot map memory region %u: %s", i, strerror(errno));
            vu_mem_unmap(&mem);
            return false;
        }
        *r = (VuRegion){ .gpa = m.gpa, .size = m.size, .qva = m.qva, .map = map,
                         .map_size = m.size + m.mmap_offset,
                         .host = (uint8_t *)map + m.mmap_offset };
        mem.nregions++;
    }
    /* Queues at work point into the old table: stop them, swap, restart. */
    dev_stop_queues(dev);
    vu_mem_unmap(&dev->mem);
    dev->mem = mem;
    dev_start_queues(dev);
    return true;
}

static bool set_vring_addr(VuDev *dev, const uint8_t *p, uint32_t size)
{
    VuVringAddr a;
    VuQueue *q;

    if (size < sizeof(a)) {
        return false;
    }
    memcpy(&a, p, sizeof(a));
    q = dev_queue(dev, a.index);
    if (!q) {
        return false;
    }
    vu_queue_stop(q);
    q->desc_qva = a.desc;
    q->avail_qva = a.avail;
    q->used_qva = a.used;
    q->have_addr = true;
    if (dev->mem.nregions > 0 && q->num > 0) {
        VirtQueue probe = { 0 };
        const char *why;

        if (!vq_map(&probe, &dev->mem, q->num, a.desc, a.avail, a.used,
                    dev->features & (1ULL << VIRTIO_RING_F_EVENT_IDX), &why)) {
            error_report("vhost-user: queue %d: %s", q->index, why);
            q->have_addr = false;
            return false;
        }
    }
    return vu_queue_start(q);
}

/* SET_VRING_KICK / CALL / ERR: the queue index and an fd (or none). */
static bool set_vring_fd(VuDev *dev, uint32_t request, uint64_t arg)
{
    VuQueue *q = dev_queue(dev, arg & VRING_IDX_MASK);
    int fd = (arg & VRING_NOFD) ? -1 : take_fd(dev);
    int *slot;

    if (!q || (!(arg & VRING_NOFD) && fd < 0)) {
        if (fd >= 0) {
            close(fd);
        }
        return false;
    }
    if (request == VHOST_USER_SET_VRING_ERR) {
        if (fd >= 0) {
            close(fd);                  /* we report no errors through it */
        }
        return true;
    }
    if (request == VHOST_USER_SET_VRING_KICK && fd < 0) {
        error_report("vhost-user: queue %d: polling without a kick fd is not supported",
                     q->index);
        return false;
    }
    vu_queue_stop(q);
    slot = request == VHOST_USER_SET_VRING_KICK ? &q->kick_fd : &q->call_fd;
    if (*slot >= 0) {
        close(*slot);
    }
    *slot = fd;
    return vu_queue_start(q);
}

static bool get_config(VuDev *dev, const VuHdr *hdr, const uint8_t *p)
{
    uint8_t buf[sizeof(VuConfigMsg) + MAX_CONFIG] = { 0 };
    VuConfigMsg *cfg = (VuConfigMsg *)buf;
    uint8_t whole[MAX_CONFIG] = { 0 };
    uint32_t len;

    if (hdr->size < sizeof(VuConfigMsg)) {
        return false;
    }
    memcpy(cfg, p, sizeof(*cfg));
    if (cfg->size > MAX_CONFIG || cfg->offset > MAX_CONFIG - cfg->size) {
        /* What the spec says a back-end answers when it cannot. */
        return reply(dev, hdr, NULL, 0);
    }
    len = dev->ops->get_config(dev, whole, MAX_CONFIG);
    (void)len;                          /* beyond it: zeroes */
    memcpy(cfg->data, whole + cfg->offset, cfg->size);
    return reply(dev, hdr, buf, (uint32_t)sizeof(VuConfigMsg) + cfg->size);
}

static bool set_config(VuDev *dev, const VuHdr *hdr, const uint8_t *p)
{
    VuConfigMsg cfg;

    if (hdr->size < sizeof(cfg)) {
        return false;
    }
    memcpy(&cfg, p, sizeof(cfg));
    if (cfg.size > hdr->size - sizeof(cfg)) {
        return false;
    }
    return dev->ops->set_config(dev, p + sizeof(cfg), cfg.offset, cfg.size, cfg.flags) == 0;
}

static void dev_reset(VuDev *dev)
{
    dev_stop_queues(dev);
    for (int i = 0; i < dev->num_queues; i++) {
        if (dev->queues[i]) {
            vu_queue_reset(dev->queues[i]);
        }
    }
    dev->features = 0;
}

/* Carry out a message without a reply of its own: false if it failed. */
static bool handle_set(VuDev *dev, const VuHdr *hdr, const uint8_t *p)
{
    uint64_t arg = 0;
    VuQueue *q;

    if (hdr->size >= sizeof(arg)) {
        memcpy(&arg, p, sizeof(arg));
    }
    switch (hdr->request) {
    case VHOST_USER_SET_FEATURES:
        if (arg & ~(dev->ops->get_features(dev) | 1ULL << VHOST_USER_F_PROTOCOL_FEATURES)) {
            return false;
        }
        dev->features = arg;
        return true;
    case VHOST_USER_SET_PROTOCOL_FEATURES:
        dev->protocol_features = arg & OFFERED_PROTOCOL_FEATURES;
        return true;
    case VHOST_USER_SET_OWNER:
        return true;
    case VHOST_USER_RESET_OWNER:
    case VHOST_USER_RESET_DEVICE:
        dev_reset(dev);
        return true;
    case VHOST_USER_SET_MEM_TABLE:
        return set_mem_table(dev, p, hdr->size);
    case VHOST_USER_SET_VRING_NUM:
    case VHOST_USER_SET_VRING_BASE:
    case VHOST_USER_SET_VRING_ENABLE: {
        uint32_t state[2] = { 0, 0 };

        if (hdr->size >= sizeof(state)) {
            memcpy(state, p, sizeof(state));
        }
        q = hdr->size >= sizeof(state) ? dev_queue(dev, state[0]) : NULL;
        if (!q) {
            return false;
        }
        if (hdr->request == VHOST_USER_SET_VRING_ENABLE) {
            vu_queue_set_enabled(q, state[1] != 0);
            return true;
        }
        vu_queue_stop(q);
        if (hdr->request == VHOST_USER_SET_VRING_NUM) {
            q->num = state[1];
        } else {
            q->vq.last_avail = (uint16_t)state[1];
            q->vq.inuse = 0;            /* the ring starts over */
            atomic_set(&q->broken, 0);
        }
        return vu_queue_start(q);
    }
    case VHOST_USER_SET_VRING_ADDR:
        return set_vring_addr(dev, p, hdr->size);
    case VHOST_USER_SET_VRING_KICK:
    case VHOST_USER_SET_VRING_CALL:
    case VHOST_USER_SET_VRING_ERR:
        return hdr->size >= sizeof(arg) && set_vring_fd(dev, hdr->request, arg);
    case VHOST_USER_SET_BACKEND_REQ_FD: {
        int fd = take_fd(dev);

        if (fd < 0) {
            return false;
        }
        if (dev->backend_fd >= 0) {
            close(dev->backend_fd);
        }
        dev->backend_fd = fd;
        return true;
    }
    case VHOST_USER_SET_CONFIG:
        return set_config(dev, hdr, p);
    default:
        return false;
    }
}

static bool is_get(uint32_t request)
{
    return request == VHOST_USER_GET_FEATURES || request == VHOST_USER_GET_PROTOCOL_FEATURES ||
           request == VHOST_USER_GET_QUEUE_NUM || request == VHOST_USER_GET_VRING_BASE ||
           request == VHOST_USER_GET_CONFIG;
}

static bool handle_get(VuDev *dev, const VuHdr *hdr, const uint8_t *p)
{
    switch (hdr->request) {
    case VHOST_USER_GET_FEATURES:
        return reply_u64(dev, hdr, dev->ops->get_features(dev) |
                                   1ULL << VHOST_USER_F_PROTOCOL_FEATURES);
    case VHOST_USER_GET_PROTOCOL_FEATURES:
        return reply_u64(dev, hdr, OFFERED_PROTOCOL_FEATURES);
    case VHOST_USER_GET_QUEUE_NUM:
        return reply_u64(dev, hdr, (uint64_t)dev->num_queues);
    case VHOST_USER_GET_CONFIG:
        return get_config(dev, hdr, p);
    case VHOST_USER_GET_VRING_BASE: {
        uint32_t state[2] = { 0, 0 };
        VuQueue *q;

        if (hdr->size >= sizeof(state)) {
            memcpy(state, p, sizeof(state));
        }
        q = hdr->size >= sizeof(state) ? dev_queue(dev, state[0]) : NULL;
        if (!q) {
            return false;
        }
        /* The ring stops here; its eventfds go with it. */
        vu_queue_stop(q);
        state[1] = q->vq.last_avail;
        vu_queue_close_fds(q);
        return reply(dev, hdr, state, sizeof(state));
    }
    }
    return false;
}

static const char *known_set(uint32_t request)
{
    switch (request) {
    case VHOST_USER_SET_FEATURES: case VHOST_USER_SET_PROTOCOL_FEATURES:
    case VHOST_USER_SET_OWNER: case VHOST_USER_RESET_OWNER: case VHOST_USER_RESET_DEVICE:
    case VHOST_USER_SET_MEM_TABLE: case VHOST_USER_SET_VRING_NUM:
    case VHOST_USER_SET_VRING_BASE: case VHOST_USER_SET_VRING_ENABLE:
    case VHOST_USER_SET_VRING_ADDR: case VHOST_USER_SET_VRING_KICK:
    case VHOST_USER_SET_VRING_CALL: case VHOST_USER_SET_VRING_ERR:
    case VHOST_USER_SET_BACKEND_REQ_FD: case VHOST_USER_SET_CONFIG:
        return "";
    }
    return NULL;
}

/* One whole message: false if the connection must end. */
static bool handle_message(VuDev *dev)
{
    VuHdr hdr;
    const uint8_t *p = dev->rbuf + HDR_SIZE;
    bool ok;

    memcpy(&hdr, dev->rbuf, HDR_SIZE);
    if (is_get(hdr.request)) {
        if (!handle_get(dev, &hdr, p)) {
            error_report("vhost-user: bad request %u from the front-end", hdr.request);
            return false;
        }
        return true;
    }
    if (!known_set(hdr.request)) {
        error_report("vhost-user: unsupported request %u from the front-end", hdr.request);
        return false;
    }
    ok = handle_set(dev, &hdr, p);
    if ((hdr.flags & FLAG_NEED_REPLY) &&
        (dev->protocol_features & (1ULL << PROTOCOL_F_REPLY_ACK))) {
        return reply_u64(dev, &hdr, ok ? 0 : 1) ;
    }
    if (!ok) {
        error_report("vhost-user: request %u from the front-end failed", hdr.request);
    }
    return true;
}

/* ---- Receiving ---------------------------------------------------------------------- */

static void close_rfds(VuDev *dev)
{
    for (int i = 0; i < dev->nrfds; i++) {
        close(dev->rfds[i]);
    }
    dev->nrfds = 0;
}

/* Read what is there of the current message: 1 when it is complete, 0 if
 * more must come, -1 if the connection ended or broke the framing. */
static int receive(VuDev *dev)
{
    for (;;) {
        uint32_t size;
        size_t want;
        char cbuf[CMSG_SPACE(VU_MAX_REGIONS * sizeof(int))];
        struct iovec iov;
        struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
                              .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
        ssize_t n;

        if (dev->rlen < HDR_SIZE) {
            want = HDR_SIZE;
        } else {
            memcpy(&size, dev->rbuf + 8, sizeof(size));
            if (size > MAX_PAYLOAD) {
                error_report("vhost-user: message of %u bytes from the front-end", size);
                return -1;
            }
            want = HDR_SIZE + size;
            if (dev->rlen == want) {
                return 1;
            }
        }
        iov = (struct iovec){ dev->rbuf + dev->rlen, want - dev->rlen };
        n = recvmsg(dev->fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            return 0;
        }
        if (n <= 0) {
            return -1;
        }
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
                int nfd = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
                int *fds = (int *)CMSG_DATA(c);

                for (int i = 0; i < nfd; i++) {
                    if (dev->nrfds < VU_MAX_REGIONS) {
                        dev->rfds[dev->nrfds++] = fds[i];
                    } else {
                        close(fds[i]);
                    }
                }
            }
        }
        if (msg.msg_flags & MSG_CTRUNC) {
            error_report("vhost-user: too many file descriptors in one message");
            return -1;
        }
        dev->rlen += (size_t)n;
        if (dev->rlen == HDR_SIZE) {
            memcpy(&size, dev->rbuf + 8, sizeof(size));
            if (size == 0) {
                return 1;
            }
        }
    }
}

static void dev_readable(void *opaque)
{
    VuDev *dev = opaque;

    /* A few messages per wake-up: a chatty front-end does not hold the
     * main loop (the fd stays readable; the rest come next time). */
    for (int budget = 16; budget > 0; budget--) {
        int ret = receive(dev);
        bool ok;

        if (ret == 0) {
            return;
        }
        if (ret < 0) {
            dev_disconnect(dev);
            return;
        }
        dev_pause(dev);
        ok = handle_message(dev);
        dev->rlen = 0;
        close_rfds(dev);                /* fds a message did not use */
        if (!ok) {
            dev_disconnect(dev);
            return;
        }
        dev_resume(dev);
    }
}

/* ---- The connection ------------------------------------------------------------------ */

static void dev_disconnect(VuDev *dev)
{
    if (dev->fd < 0) {
        return;
    }
    dev_pause(dev);
    dev_reset(dev);
    vu_mem_unmap(&dev->mem);
    close(dev->fd);
    dev->fd = -1;
    if (dev->backend_fd >= 0) {
        close(dev->backend_fd);
        dev->backend_fd = -1;
    }
    dev->protocol_features = 0;
    dev->rlen = 0;
    close_rfds(dev);
    dev_resume(dev);
}

static bool connection_gone(int fd)
{
    struct pollfd pfd = { .fd = fd, .events = POLLRDHUP };

    return poll(&pfd, 1, 0) > 0 && (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

static void dev_accept(void *opaque)
{
    VuDev *dev = opaque;
    int fd = accept4(dev->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

    if (fd < 0) {
        return;
    }
    if (dev->fd >= 0 && connection_gone(dev->fd)) {
        dev_disconnect(dev);            /* a VMM restarting: its hang-up is
                                         * not read yet */
    }
    if (dev->fd >= 0) {
        warn_report("vhost-user: a front-end is already connected; refusing another");
        close(fd);
        return;
    }
    dev->fd = fd;
    aio_set_fd_handler(iohandler_aio_context(), fd, dev_readable, NULL, NULL, dev);
}

VuDev *vu_dev_new(const VuDevOps *ops, void *opaque, int listen_fd, int num_queues,
                  AioContext *const *ctxs, int nctxs)
{
    VuDev *dev = calloc(1, sizeof(*dev));

    GLOBAL_STATE_CODE();
    if (!dev || !(dev->queues = calloc((size_t)num_queues, sizeof(VuQueue *))) ||
        !(dev->ctxs = calloc((size_t)nctxs, sizeof(AioContext *))) ||
        !(dev->rbuf = malloc(HDR_SIZE + MAX_PAYLOAD))) {
        abort();
    }
    dev->ops = ops;
    dev->opaque = opaque;
    dev->listen_fd = listen_fd;
    dev->fd = -1;
    dev->backend_fd = -1;
    dev->num_queues = num_queues;
    memcpy(dev->ctxs, ctxs, (size_t)nctxs * sizeof(AioContext *));
    dev->nctxs = nctxs;
    aio_set_fd_handler(iohandler_aio_context(), listen_fd, dev_accept, NULL, NULL, dev);
    return dev;
}

void vu_dev_shutdown(VuDev *dev)
{
    GLOBAL_STATE_CODE();
    if (dev->listen_fd >= 0) {
        aio_set_fd_handler(iohandler_aio_context(), dev->listen_fd, NULL, NULL, NULL, NULL);
        close(dev->listen_fd);
        dev->listen_fd = -1;
    }
    dev_disconnect(dev);
}

void vu_dev_free(VuDev *dev)
{
    GLOBAL_STATE_CODE();
    vu_dev_shutdown(dev);
    for (int i = 0; i < dev->num_queues; i++) {
        if (dev->queues[i]) {
            vu_queue_free(dev->queues[i]);
        }
    }
    free(dev->queues);
    free(dev->ctxs);
    free(dev->rbuf);
    free(dev);
}

bool vu_dev_connected(VuDev *dev)
{
    GLOBAL_STATE_CODE();
    return dev->fd >= 0;
}

void *vu_dev_opaque(VuDev *dev)
{
    return dev->opaque;
}

void vu_dev_config_changed(VuDev *dev)
{
    VuHdr hdr = { .request = BACKEND_CONFIG_CHANGE_MSG, .flags = FLAG_VERSION };

    GLOBAL_STATE_CODE();
    if (dev->backend_fd < 0 || !(dev->protocol_features & (1ULL << PROTOCOL_F_CONFIG))) {
        return;
    }
    if (!send_all(dev->backend_fd, &hdr, HDR_SIZE)) {
        warn_report("vhost-user: cannot tell the front-end that the config changed");
    }
}
