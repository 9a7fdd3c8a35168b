/*
 * vu-bench.c - a small vhost-user-blk front-end that measures a back-end:
 * guest memory in a memfd, N split virtqueues, each driven by a thread of
 * its own that keeps DEPTH requests in flight and sleeps on its call
 * eventfd between completions, as a guest's interrupt handler would.
 *
 *   vu-bench SOCKET QUEUES DEPTH randread|randwrite|read|write BLOCK_SIZE SECONDS
 *
 * Prints "IOPS MB/s".  Stand-alone on purpose: it must drive
 * qemu-storage-daemon exactly as it drives blockd.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

enum {
    GET_FEATURES = 1, SET_FEATURES = 2, SET_OWNER = 3, SET_MEM_TABLE = 5,
    SET_VRING_NUM = 8, SET_VRING_ADDR = 9, SET_VRING_BASE = 10, SET_VRING_KICK = 12,
    SET_VRING_CALL = 13, GET_PROTOCOL_FEATURES = 15, SET_PROTOCOL_FEATURES = 16,
    SET_VRING_ENABLE = 18, GET_CONFIG = 24, SET_CONFIG = 25,
};

#define F_PROTOCOL (1ULL << 30)
#define F_VERSION_1 (1ULL << 32)
#define F_EVENT_IDX (1ULL << 29)
#define F_BLK_MQ (1ULL << 12)
#define PF_MQ (1ULL << 0)
#define PF_REPLY_ACK (1ULL << 3)
#define PF_CONFIG (1ULL << 9)
#define QVA_BASE 0x7f0000000000ULL

struct desc { uint64_t addr; uint32_t len; uint16_t flags, next; };

typedef struct Queue {
    int index, kick, call;
    unsigned size;
    struct desc *desc;
    volatile uint16_t *avail;           /* flags, idx, ring[size], used_event */
    volatile uint16_t *used;            /* flags, idx, {u32 id, u32 len}[size], avail_event */
    uint64_t desc_gpa, avail_gpa, used_gpa, buf_gpa;
    uint64_t done;
    pthread_t thread;
} Queue;

static int sock;
static uint8_t *mem;
static uint64_t mem_size, brk_gpa = 4096, protocol;
static int depth, bs, rw_write, rw_random;
static uint64_t capacity;               /* bytes */
static atomic_int stop;

static void die(const char *what)
{
    fprintf(stderr, "vu-bench: %s: %s\n", what, strerror(errno));
    exit(1);
}

static uint64_t alloc(uint64_t n, uint64_t align)
{
    uint64_t a = (brk_gpa + align - 1) & ~(align - 1);

    brk_gpa = a + n;
    if (brk_gpa > mem_size) {
        fprintf(stderr, "vu-bench: out of guest memory\n");
        exit(1);
    }
    return a;
}

static void send_msg(uint32_t req, const void *p, uint32_t size, const int *fds, int nfds,
                     int need_reply)
{
    uint8_t buf[12 + 512];
    uint32_t hdr[3] = { req, 1 | (need_reply ? 8 : 0), size };
    char cbuf[CMSG_SPACE(8 * sizeof(int))];
    struct iovec iov = { buf, 12 + size };
    struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };

    memcpy(buf, hdr, 12);
    memcpy(buf + 12, p, size);
    if (nfds) {
        struct cmsghdr *c;

        m.msg_control = cbuf;
        m.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
        c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(nfds * sizeof(int));
        memcpy(CMSG_DATA(c), fds, nfds * sizeof(int));
    }
    if (sendmsg(sock, &m, 0) < 0) {
        die("sendmsg");
    }
}

static uint32_t recv_msg(void *p, uint32_t max)
{
    uint32_t hdr[3];

    if (recv(sock, hdr, 12, MSG_WAITALL) != 12 || hdr[2] > max ||
        (hdr[2] && recv(sock, p, hdr[2], MSG_WAITALL) != (ssize_t)hdr[2])) {
        die("recv");
    }
    return hdr[2];
}

static uint64_t get_u64(uint32_t req)
{
    uint64_t v = 0;

    send_msg(req, NULL, 0, NULL, 0, 0);
    recv_msg(&v, sizeof(v));
    return v;
}

/* A message without a reply of its own, acknowledged when we can. */
static void set(uint32_t req, const void *p, uint32_t size, const int *fds, int nfds)
{
    uint64_t ack;

    send_msg(req, p, size, fds, nfds, (protocol & PF_REPLY_ACK) != 0);
    if (protocol & PF_REPLY_ACK) {
        recv_msg(&ack, sizeof(ack));
        if (ack) {
            fprintf(stderr, "vu-bench: request %u refused\n", req);
            exit(1);
        }
    }
}

static void set_u64(uint32_t req, uint64_t v, const int *fds, int nfds)
{
    set(req, &v, sizeof(v), fds, nfds);
}

static void setup_queue(Queue *q)
{
    uint32_t state[2] = { (uint32_t)q->index, q->size };
    struct { uint32_t index, flags; uint64_t desc, used, avail, log; } addr;

    q->desc_gpa = alloc(16 * q->size, 16);
    q->avail_gpa = alloc(6 + 2 * q->size, 2);
    q->used_gpa = alloc(6 + 8 * q->size, 4);
    q->buf_gpa = alloc((uint64_t)depth * (bs + 64), 4096);
    q->desc = (struct desc *)(mem + q->desc_gpa);
    q->avail = (volatile uint16_t *)(mem + q->avail_gpa);
    q->used = (volatile uint16_t *)(mem + q->used_gpa);
    q->kick = eventfd(0, EFD_CLOEXEC);
    q->call = eventfd(0, EFD_CLOEXEC);
    set(SET_VRING_NUM, state, sizeof(state), NULL, 0);
    state[1] = 0;
    set(SET_VRING_BASE, state, sizeof(state), NULL, 0);
    addr = (typeof(addr)){ q->index, 0, QVA_BASE + q->desc_gpa, QVA_BASE + q->used_gpa,
                           QVA_BASE + q->avail_gpa, 0 };
    set(SET_VRING_ADDR, &addr, sizeof(addr), NULL, 0);
    set_u64(SET_VRING_KICK, q->index, &q->kick, 1);
    set_u64(SET_VRING_CALL, q->index, &q->call, 1);
    state[1] = 1;
    set(SET_VRING_ENABLE, state, sizeof(state), NULL, 0);
}

static uint64_t next_offset(uint64_t *seed, uint64_t *pos)
{
    uint64_t blocks = capacity / bs;

    if (!rw_random) {
        uint64_t o = *pos;
        *pos = (*pos + bs) % (blocks * bs);
        return o;
    }
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    return (*seed % blocks) * bs;
}

/* Request slot @i: descriptors 3i..3i+2 (header, data, status). */
static void submit(Queue *q, unsigned i, uint64_t offset, uint16_t *avail_idx)
{
    uint64_t slot = q->buf_gpa + (uint64_t)i * (bs + 64);
    uint64_t hdr_gpa = slot + bs, st_gpa = slot + bs + 16;
    uint32_t *hdr = (uint32_t *)(mem + hdr_gpa);
    unsigned d = 3 * i;

    hdr[0] = rw_write ? 1 : 0;
    hdr[1] = 0;
    memcpy(&hdr[2], &(uint64_t){ offset / 512 }, 8);
    q->desc[d] = (struct desc){ hdr_gpa, 16, 1, d + 1 };
    q->desc[d + 1] = (struct desc){ slot, bs, rw_write ? 1 : 3, d + 2 };
    q->desc[d + 2] = (struct desc){ st_gpa, 1, 2, 0 };
    q->avail[2 + (*avail_idx % q->size)] = d;
    (*avail_idx)++;
}

static void *queue_thread(void *opaque)
{
    Queue *q = opaque;
    uint16_t avail_idx = 0, used_seen = 0;
    uint64_t seed = 0x9e3779b97f4a7c15ULL * (q->index + 1), pos = 0, one = 1, cnt;

    for (int i = 0; i < depth; i++) {
        submit(q, i, next_offset(&seed, &pos), &avail_idx);
    }
    __atomic_store_n(&q->avail[1], avail_idx, __ATOMIC_RELEASE);
    if (write(q->kick, &one, 8) != 8) {
        die("kick");
    }
    while (!atomic_load(&stop)) {
        uint16_t used_idx = __atomic_load_n(&q->used[1], __ATOMIC_ACQUIRE);
        int n = 0;

        while (used_seen != used_idx) {
            uint32_t id = *(volatile uint32_t *)&q->used[2 + 4 * (used_seen % q->size)];

            submit(q, id / 3, next_offset(&seed, &pos), &avail_idx);
            used_seen++;
            n++;
        }
        if (n) {
            q->done += n;
            __atomic_store_n(&q->avail[1], avail_idx, __ATOMIC_RELEASE);
            if (write(q->kick, &one, 8) != 8) {
                die("kick");
            }
            continue;
        }
        /* Interrupt me at the next completion (used_event), then sleep. */
        q->avail[2 + q->size] = used_seen;
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        if (__atomic_load_n(&q->used[1], __ATOMIC_ACQUIRE) != used_seen) {
            continue;
        }
        struct pollfd p = { .fd = q->call, .events = POLLIN };
        if (poll(&p, 1, 100) > 0 && read(q->call, &cnt, 8) != 8) {
            die("call");
        }
    }
    return NULL;
}

static void connect_to(const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };

    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (sock < 0 || connect(sock, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        die(path);
    }
}

static void negotiate(void)
{
    uint64_t features = get_u64(GET_FEATURES);
    struct { uint32_t offset, size, flags; uint8_t data[60]; } cfg = { 0, 60, 0, { 0 } };
    struct { uint32_t offset, size, flags; uint8_t wce; } wce = { 32, 1, 0, 1 };

    protocol = get_u64(GET_PROTOCOL_FEATURES) & (PF_MQ | PF_REPLY_ACK | PF_CONFIG);
    send_msg(SET_PROTOCOL_FEATURES, &protocol, 8, NULL, 0, 0);
    set(SET_OWNER, NULL, 0, NULL, 0);
    features &= F_PROTOCOL | F_VERSION_1 | F_EVENT_IDX | F_BLK_MQ | (1ULL << 11) | (1ULL << 9);
    set_u64(SET_FEATURES, features, NULL, 0);
    send_msg(GET_CONFIG, &cfg, sizeof(cfg), NULL, 0, 0);
    recv_msg(&cfg, sizeof(cfg));
    memcpy(&capacity, cfg.data, 8);
    capacity *= 512;
    /* Write-back on both daemons alike (the guest's choice). */
    set(SET_CONFIG, &wce, 13, NULL, 0);
}

int main(int argc, char **argv)
{
    int nq, fd;
    double seconds;
    Queue *queues;
    struct { uint32_t n, pad; uint64_t gpa, size, qva, off; } table;
    struct timespec t0, t1;
    uint64_t total = 0;

    if (argc != 7) {
        fprintf(stderr, "usage: vu-bench SOCKET QUEUES DEPTH randread|randwrite|read|write "
                        "BLOCK_SIZE SECONDS\n");
        return 2;
    }
    nq = atoi(argv[2]);
    depth = atoi(argv[3]);
    rw_write = strstr(argv[4], "write") != NULL;
    rw_random = strncmp(argv[4], "rand", 4) == 0;
    bs = atoi(argv[5]);
    seconds = atof(argv[6]);
    mem_size = (uint64_t)nq * depth * (bs + 4096) + (16 << 20);
    fd = memfd_create("guest", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, mem_size) < 0 ||
        (mem = mmap(NULL, mem_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)) == MAP_FAILED) {
        die("guest memory");
    }
    memset(mem, 0, mem_size);           /* the rings start empty */
    connect_to(argv[1]);
    negotiate();
    table = (typeof(table)){ 1, 0, 0, mem_size, QVA_BASE, 0 };
    set(SET_MEM_TABLE, &table, sizeof(table), &fd, 1);
    queues = calloc(nq, sizeof(*queues));
    for (int i = 0; i < nq; i++) {
        unsigned size = 1;

        while (size < 3u * depth) {
            size <<= 1;
        }
        queues[i] = (Queue){ .index = i, .size = size };
        setup_queue(&queues[i]);
    }
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < nq; i++) {
        pthread_create(&queues[i].thread, NULL, queue_thread, &queues[i]);
    }
    usleep((useconds_t)(seconds * 1e6));
    atomic_store(&stop, 1);
    for (int i = 0; i < nq; i++) {
        pthread_join(queues[i].thread, NULL);
        total += queues[i].done;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    seconds = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("%.0f %.1f\n", total / seconds, total * (double)bs / seconds / 1e6);
    return 0;
}
