/*
 * nbd-client.c - one NBD connection: the fixed-newstyle handshake and the
 * transmission phase.
 *
 * Each connection is a receive coroutine in its export's context that reads
 * requests and starts one coroutine per request; replies go out under a
 * send lock, so they may be sent out of order.  What a connection may hold
 * is bounded (requests and bytes in flight); when the budget is used up it
 * stops reading, so a client that does not read its replies stalls only
 * itself.  Anything that breaks the protocol ends the connection; anything
 * that is merely wrong gets an error reply.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "blockd/aio-wait.h"
#include "blockd/atomic.h"
#include "blockd/block-backend-io.h"
#include "blockd/buf-pool.h"
#include "blockd/coroutine.h"
#include "blockd/defer-call.h"
#include "blockd/log.h"
#include "blockd/main-loop.h"
#include "nbd-internal.h"
#include "nbd-proto.h"

#define MAX_REQUESTS 32                        /* in flight per connection */
#define MAX_IN_FLIGHT_BYTES (64 * 1024 * 1024)  /* payloads held per connection */
/* Payloads held by all connections together: past this, a connection
 * waits for others to drain unless it has nothing in flight itself (so
 * every connection always progresses). */
#define SERVER_MAX_IN_FLIGHT_BYTES (96 * 1024 * 1024)
#define MAX_STATUS_EXTENTS 1024

struct NbdClient {
    ListNode link;              /* first: in the export's client list (main) */
    ListNode all_link;          /* in all_clients (main) */
    int fd;
    AioContext *ctx;            /* where the coroutines run */
    BlockExport *exp;
    int64_t size;
    bool structured;
    bool meta_allocation;
    bool meta_depth;            /* qemu:allocation-depth */
    bool no_zeroes;
    int closing;                /* atomic */
    Coroutine *recv_waiter;     /* ctx thread: waiting to read */
    Coroutine *send_waiter;     /* ctx thread: waiting to write */
    CoMutex send_lock;
    int in_flight;              /* ctx thread */
    int64_t in_flight_bytes;    /* ctx thread */
    Coroutine *budget_waiter;   /* the receive loop, waiting for room */
    bool watch_read;            /* ctx thread: handlers registered */
    bool watch_write;
    /* Bytes received but not consumed yet (ctx thread): one recv takes in
     * every request header and small payload the client has queued. */
    uint8_t *in_buf;
    size_t in_pos;
    size_t in_end;
    /* Replies not sent yet (ctx thread, send_lock): small replies are
     * gathered here and go out together, in one system call, once the
     * requests that are ready have all run. */
    uint8_t *out_buf;           /* contents: send_lock (the pointer is immutable,
                                 * and a guard on it would not cover the bytes) */
    size_t out_len TSA_FIELD_GUARDED_BY(send_lock);
    /* ctx thread only (no lock: one thread reads and writes it):
     * flush_bh scheduled or flush_co running */
    bool flush_pending;
    BH *flush_bh;               /* during transmission */
    bool spawned;               /* ctx thread: requests started since the last receive */
    /* Payload buffers for reuse (ctx thread), given back to malloc when
     * the connection has been idle for a while. */
    BufPool *pool;
    AioTimer *trim_timer;       /* ctx thread, during transmission */
};

#define IN_BUF_SIZE (64 * 1024)
#define OUT_BUF_SIZE (64 * 1024)
/* Replies larger than this are sent directly, not copied. */
#define OUT_SMALL_MAX (OUT_BUF_SIZE / 4)
/* Payload buffers a connection keeps for reuse, and for how long idle. */
#define POOL_MAX_CACHED (16 * 1024 * 1024)
#define POOL_IDLE_TRIM_NS (1000 * 1000 * 1000LL)

typedef struct NbdRequest {
    NbdClient *client;
    uint16_t flags;
    uint16_t type;
    uint64_t cookie;
    uint64_t offset;
    uint32_t length;
    void *buf;                  /* the payload of a write */
    uint32_t charged;           /* bytes counted in in_flight_bytes */
    bool io_done;               /* no longer counted in the export */
} NbdRequest;

static ListNode all_clients = LIST_INIT_STATIC(all_clients);

/* The server-wide budget, shared by connections in every thread. */
static struct {
    BdMutex lock;
    int64_t bytes TSA_FIELD_GUARDED_BY(lock);
    CoQueue waiters TSA_FIELD_GUARDED_BY(lock);   /* receive loops */
} budget;

__attribute__((constructor)) static void budget_init(void)
{
    bd_mutex_init(&budget.lock);
    bd_mutex_lock(&budget.lock);
    budget.bytes = 0;
    co_queue_init(&budget.waiters);
    bd_mutex_unlock(&budget.lock);
}

static void budget_release(int64_t bytes)
{
    if (!bytes) {
        return;
    }
    bd_mutex_lock(&budget.lock);
    budget.bytes -= bytes;
    co_queue_restart_all_bdmutex(&budget.waiters, &budget.lock);
    bd_mutex_unlock(&budget.lock);
}

/* Take @bytes of the server budget, waiting while others hold it all. */
static void coroutine_fn budget_acquire(NbdClient *c, int64_t bytes)
{
    bd_mutex_lock(&budget.lock);
    while (c->in_flight > 0 && budget.bytes + bytes > SERVER_MAX_IN_FLIGHT_BYTES) {
        co_queue_wait_bdmutex(&budget.waiters, &budget.lock);
    }
    budget.bytes += bytes;
    bd_mutex_unlock(&budget.lock);
}
static int num_clients;

int nbd_client_count(void)
{
    return num_clients;
}

/* ---- Socket I/O from coroutines ---------------------------------------------- */

static void client_ready(NbdClient *c, Coroutine **waiter);

static void client_readable(void *opaque)
{
    NbdClient *c = opaque;
    client_ready(c, &c->recv_waiter);
}

static void client_writable(void *opaque)
{
    NbdClient *c = opaque;
    client_ready(c, &c->send_waiter);
}

/* Watch the socket for reading and/or writing; a system call only when
 * that changes. */
static void client_watch(NbdClient *c, bool rd, bool wr)
{
    if (rd == c->watch_read && wr == c->watch_write) {
        return;
    }
    c->watch_read = rd;
    c->watch_write = wr;
    aio_set_fd_handler(c->ctx, c->fd, rd ? client_readable : NULL,
                       wr ? client_writable : NULL, NULL, c);
}

static void client_unwatch(NbdClient *c)
{
    client_watch(c, false, false);
}

/*
 * The socket is ready.  A busy connection waits for it again and again, so
 * the handler stays registered after waking the waiter (no epoll_ctl per
 * wait); only a readiness nobody waits for removes it, since epoll is
 * level-triggered and would report it again and again.
 */
static void client_ready(NbdClient *c, Coroutine **waiter)
{
    Coroutine *co = *waiter;

    if (!co) {
        client_watch(c, c->recv_waiter != NULL, c->send_waiter != NULL);
        return;
    }
    *waiter = NULL;
    aio_co_wake(co);
}

static void coroutine_fn client_wait(NbdClient *c, Coroutine **waiter)
{
    *waiter = coroutine_self();
    client_watch(c, c->watch_read || c->recv_waiter, c->watch_write || c->send_waiter);
    coroutine_yield();
}

static void coroutine_fn before_recv(NbdClient *c);

static void idle_trim(void *opaque)
{
    NbdClient *c = opaque;

    if (c->in_flight == 0 && c->recv_waiter) {
        buf_pool_trim(c->pool);
    }
}

/* About to wait for the client: if nothing is in flight, the buffers kept
 * for reuse go back after a while unless requests come in. */
static void idle_trim_arm(NbdClient *c)
{
    if (c->trim_timer && c->in_flight == 0 && buf_pool_cached(c->pool) > 0 &&
        !timer_pending(c->trim_timer)) {
        timer_mod(c->trim_timer, clock_now_ns() + POOL_IDLE_TRIM_NS);
    }
}

/* Receive what the socket has, up to @len bytes; 0 on end of file or
 * error (waiting while there is nothing). */
static size_t coroutine_fn co_recv_some(NbdClient *c, void *buf, size_t len)
{
    for (;;) {
        ssize_t n = recv(c->fd, buf, len, 0);
        if (n > 0) {
            return n;
        } else if (n == 0) {
            return 0;
        } else if (errno == EAGAIN) {
            if (atomic_read(&c->closing)) {
                return 0;
            }
            idle_trim_arm(c);
            client_wait(c, &c->recv_waiter);
        } else if (errno != EINTR) {
            return 0;
        }
    }
}

/*
 * Read exactly @len bytes; false on end of file or error.  Small reads
 * are served from the connection's input buffer, refilled with as much
 * as the socket holds; big payloads go straight to @buf.
 */
static bool coroutine_fn co_recv_full(NbdClient *c, void *buf, size_t len)
{
    char *p = buf;

    while (len > 0) {
        size_t have = c->in_end - c->in_pos;
        size_t n;

        if (have > 0) {
            n = have < len ? have : len;
            memcpy(p, c->in_buf + c->in_pos, n);
            c->in_pos += n;
        } else if (len >= IN_BUF_SIZE / 2) {
            before_recv(c);
            n = co_recv_some(c, p, len);
            if (n == 0) {
                return false;
            }
        } else {
            before_recv(c);
            c->in_pos = 0;
            c->in_end = co_recv_some(c, c->in_buf, IN_BUF_SIZE);
            if (c->in_end == 0) {
                return false;
            }
            continue;
        }
        p += n;
        len -= n;
    }
    return true;
}

static bool coroutine_fn co_sendv(NbdClient *c, struct iovec *iov, int niov)
{
    while (niov > 0) {
        struct msghdr msg = { .msg_iov = iov, .msg_iovlen = niov };
        ssize_t n = sendmsg(c->fd, &msg, MSG_NOSIGNAL);

        if (n < 0) {
            if (errno == EAGAIN) {
                if (atomic_read(&c->closing)) {
                    return false;
                }
                client_wait(c, &c->send_waiter);
                continue;
            }
            if (errno == EINTR) {
                continue;
            }
            return false;
        }
        while (niov > 0 && (size_t)n >= iov->iov_len) {
            n -= iov->iov_len;
            iov++;
            niov--;
        }
        if (niov > 0) {
            iov->iov_base = (char *)iov->iov_base + n;
            iov->iov_len -= n;
        }
    }
    return true;
}

static bool coroutine_fn co_send(NbdClient *c, const void *buf, size_t len)
{
    struct iovec iov = { (void *)buf, len };
    return co_sendv(c, &iov, 1);
}

/* A send failed, so the client is gone: the receive loop notices too. */
static void client_gone(NbdClient *c)
{
    atomic_set(&c->closing, 1);
    shutdown(c->fd, SHUT_RDWR);
}

/* The receive loop waits for room (or, at the end, for the last request
 * and flush): something it waits for has changed. */
static void wake_receive_loop(NbdClient *c)
{
    Coroutine *co = c->budget_waiter;

    if (co) {
        c->budget_waiter = NULL;
        aio_co_wake(co);
    }
}

/* ---- Replies: gathered, then sent together -------------------------------------- */

/* Send what is gathered.  Send lock held. */
static bool coroutine_fn out_flush(NbdClient *c) TSA_REQUIRES(c->send_lock)
{
    struct iovec iov = { c->out_buf, c->out_len };
    bool ok;

    if (c->out_len == 0) {
        return true;
    }
    ok = co_sendv(c, &iov, 1);
    c->out_len = 0;
    return ok;
}

static void coroutine_fn flush_co(void *opaque)
{
    NbdClient *c = opaque;
    bool ok;

    co_mutex_lock(&c->send_lock);
    ok = out_flush(c);
    c->flush_pending = false;
    co_mutex_unlock(&c->send_lock);
    if (!ok) {
        client_gone(c);
    }
    wake_receive_loop(c);       /* it may be waiting for the flush to end */
}

/* Runs after the coroutines that were ready: their replies are gathered. */
static void flush_bh(void *opaque)
{
    NbdClient *c = opaque;

    coroutine_enter(coroutine_create(flush_co, c));
}

/*
 * Send what is gathered if the socket takes it now, without waiting (the
 * receive loop must never wait for the client to read: a client that
 * reads only once its own sends are through would deadlock).  What is
 * left stays for flush_bh.
 */
static void coroutine_fn out_try_flush(NbdClient *c)
{
    ssize_t n;

    if (!co_mutex_trylock(&c->send_lock)) {
        return;
    }
    if (c->out_len == 0) {
        co_mutex_unlock(&c->send_lock);
        return;
    }
    n = send(c->fd, c->out_buf, c->out_len, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
        memmove(c->out_buf, c->out_buf + n, c->out_len - n);
        c->out_len -= n;
    }
    if (c->out_len == 0 && c->flush_pending) {
        /* The lock was free, so flush_co is not running: the BH is only
         * scheduled, and has nothing left to do. */
        bh_cancel(c->flush_bh);
        c->flush_pending = false;
    }
    co_mutex_unlock(&c->send_lock);
}

/*
 * The receive loop is about to ask the socket for more.  First let the
 * requests it has just read run, so that their replies are ready, and
 * send the replies gathered so far: neither then waits for the next round
 * of the event loop (at queue depth 1 that round is a system call on the
 * way to every reply).
 */
static void coroutine_fn before_recv(NbdClient *c)
{
    if (!c->flush_bh) {
        return;         /* handshake: replies are sent directly */
    }
    if (c->spawned) {
        c->spawned = false;
        aio_co_enter(c->ctx, coroutine_self());     /* after them */
        coroutine_yield();
    }
    out_try_flush(c);
}

/*
 * Send a reply (or one chunk of it).  Send lock held.  A small one is
 * copied into the output buffer and sent with the others that are ready
 * at the end of this round of the event loop: a reply per system call
 * costs more than the copy.  A big one goes out directly, after what is
 * gathered.  False when the client is gone.
 */
static bool coroutine_fn reply_sendv(NbdClient *c, struct iovec *iov, int niov)
    TSA_REQUIRES(c->send_lock)
{
    size_t total = 0;

    for (int i = 0; i < niov; i++) {
        total += iov[i].iov_len;
    }
    if (total > OUT_SMALL_MAX) {
        return out_flush(c) && co_sendv(c, iov, niov);
    }
    if (c->out_len + total > OUT_BUF_SIZE && !out_flush(c)) {
        return false;
    }
    for (int i = 0; i < niov; i++) {
        memcpy(c->out_buf + c->out_len, iov[i].iov_base, iov[i].iov_len);
        c->out_len += iov[i].iov_len;
    }
    if (!c->flush_pending) {
        c->flush_pending = true;
        bh_schedule(c->flush_bh);
    }
    return true;
}

static bool coroutine_fn reply_send(NbdClient *c, const void *buf, size_t len)
    TSA_REQUIRES(c->send_lock)
{
    struct iovec iov = { (void *)buf, len };
    return reply_sendv(c, &iov, 1);
}

/* ---- Handshake ------------------------------------------------------------------ */

static bool coroutine_fn send_option_reply(NbdClient *c, uint32_t option, uint32_t type,
                                           const void *data, uint32_t len)
{
    uint8_t hdr[20];
    struct iovec iov[2] = { { hdr, sizeof(hdr) }, { (void *)data, len } };

    nbd_put64(hdr, NBD_REP_MAGIC);
    nbd_put32(hdr + 8, option);
    nbd_put32(hdr + 12, type);
    nbd_put32(hdr + 16, len);
    return co_sendv(c, iov, len ? 2 : 1);
}

static uint16_t transmission_flags(NbdClient *c, BlockExport *exp)
{
    uint16_t flags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA |
                     NBD_FLAG_SEND_CACHE | NBD_FLAG_CAN_MULTI_CONN;

    /* Every connection uses the same node, and a flush flushes the node:
     * what one connection flushed, all see.  Hence multi-conn. */
    if (blk_exp_writable(exp)) {
        flags |= NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_FAST_ZERO;
    } else {
        flags |= NBD_FLAG_READ_ONLY;
    }
    if (c->structured) {
        flags |= NBD_FLAG_SEND_DF;
    }
    return flags;
}

/* INFO and GO: send what the client may want to know about the export. */
static bool coroutine_fn send_export_info(NbdClient *c, uint32_t option, BlockExport *exp,
                                          const uint8_t *requests, int nrequests)
{
    uint8_t buf[14];
    bool want_name = false, want_desc = false;
    const char *desc = blk_exp_description(exp);

    for (int i = 0; i < nrequests; i++) {
        uint16_t r = nbd_get16(requests + 2 * i);
        want_name |= r == NBD_INFO_NAME;
        want_desc |= r == NBD_INFO_DESCRIPTION;
    }
    if (want_name) {
        size_t len = strlen(blk_exp_nbd_name(exp));
        char *info = malloc(2 + len);
        bool ok;
        nbd_put16((uint8_t *)info, NBD_INFO_NAME);
        memcpy(info + 2, blk_exp_nbd_name(exp), len);
        ok = send_option_reply(c, option, NBD_REP_INFO, info, 2 + len);
        free(info);
        if (!ok) {
            return false;
        }
    }
    if (want_desc && desc) {
        size_t len = strlen(desc);
        char *info = malloc(2 + len);
        bool ok;
        nbd_put16((uint8_t *)info, NBD_INFO_DESCRIPTION);
        memcpy(info + 2, desc, len);
        ok = send_option_reply(c, option, NBD_REP_INFO, info, 2 + len);
        free(info);
        if (!ok) {
            return false;
        }
    }
    /* Block sizes: any alignment works (the I/O path bounces); the
     * preferred size avoids read-modify-write; the maximum bounds buffers. */
    nbd_put16(buf, NBD_INFO_BLOCK_SIZE);
    nbd_put32(buf + 2, NBD_MIN_BLOCK_SIZE);
    nbd_put32(buf + 6, NBD_PREF_BLOCK_SIZE);
    nbd_put32(buf + 10, NBD_MAX_BUFFER_SIZE);
    if (!send_option_reply(c, option, NBD_REP_INFO, buf, 14)) {
        return false;
    }
    nbd_put16(buf, NBD_INFO_EXPORT);
    nbd_put64(buf + 2, blk_co_getlength(blk_exp_blk(exp)));
    nbd_put16(buf + 10, transmission_flags(c, exp));
    return send_option_reply(c, option, NBD_REP_INFO, buf, 12);
}

/* Parse INFO/GO: name, then a list of information requests. */
static bool parse_info_request(const uint8_t *data, uint32_t len, char *name,
                               const uint8_t **requests, int *nrequests)
{
    uint32_t namelen;

    if (len < 6) {
        return false;
    }
    namelen = nbd_get32(data);
    if (namelen > len - 6 || namelen > NBD_NAME_MAX) {
        return false;
    }
    memcpy(name, data + 4, namelen);
    name[namelen] = '\0';
    *nrequests = nbd_get16(data + 4 + namelen);
    *requests = data + 6 + namelen;
    return len == 6 + namelen + 2 * (uint32_t)*nrequests;
}

/* One query of NBD_OPT_LIST/SET_META_CONTEXT: which of our contexts it
 * names (a LIST query may name a namespace). */
static void match_query(const uint8_t *q, uint32_t qlen, bool set, bool *alloc, bool *depth)
{
    static const char alloc_name[] = "base:allocation", depth_name[] = "qemu:allocation-depth";

    if ((qlen == strlen(alloc_name) && memcmp(q, alloc_name, qlen) == 0) ||
        (!set && qlen == 5 && memcmp(q, "base:", 5) == 0)) {
        *alloc = true;
    }
    if ((qlen == strlen(depth_name) && memcmp(q, depth_name, qlen) == 0) ||
        (!set && qlen == 5 && memcmp(q, "qemu:", 5) == 0)) {
        *depth = true;
    }
}

static bool coroutine_fn send_context(NbdClient *c, uint32_t option, uint32_t id,
                                      const char *name)
{
    size_t len = strlen(name);
    uint8_t reply[4 + 32];

    nbd_put32(reply, id);
    memcpy(reply + 4, name, len);
    return send_option_reply(c, option, NBD_REP_META_CONTEXT, reply, 4 + len);
}

static bool coroutine_fn handle_meta_context(NbdClient *c, uint32_t option,
                                             const uint8_t *data, uint32_t len)
{
    char name[NBD_NAME_MAX + 1];
    uint32_t namelen, nqueries, off;
    bool set = option == NBD_OPT_SET_META_CONTEXT;
    bool want_alloc = false, want_depth = false;
    BlockExport *exp;

    if (set && !c->structured) {
        return send_option_reply(c, option, NBD_REP_ERR_INVALID, NULL, 0);
    }
    if (len < 8 || (namelen = nbd_get32(data)) > len - 8 || namelen > NBD_NAME_MAX) {
        return send_option_reply(c, option, NBD_REP_ERR_INVALID, NULL, 0);
    }
    memcpy(name, data + 4, namelen);
    name[namelen] = '\0';
    nqueries = nbd_get32(data + 4 + namelen);
    off = 8 + namelen;
    for (uint32_t i = 0; i < nqueries; i++) {
        uint32_t qlen;
        if (off + 4 > len || (qlen = nbd_get32(data + off)) > len - off - 4) {
            return send_option_reply(c, option, NBD_REP_ERR_INVALID, NULL, 0);
        }
        match_query(data + off + 4, qlen, set, &want_alloc, &want_depth);
        off += 4 + qlen;
    }
    if (off != len) {
        return send_option_reply(c, option, NBD_REP_ERR_INVALID, NULL, 0);
    }
    exp = blk_exp_find_nbd(name);
    if (!exp) {
        return send_option_reply(c, option, NBD_REP_ERR_UNKNOWN, NULL, 0);
    }
    if (!set && nqueries == 0) {
        want_alloc = want_depth = true;    /* list everything */
    }
    want_depth = want_depth && blk_exp_allocation_depth(exp);
    if (set) {
        c->meta_allocation = want_alloc;
        c->meta_depth = want_depth;
    }
    if (want_alloc &&
        !send_context(c, option, NBD_META_BASE_ALLOCATION_ID, "base:allocation")) {
        return false;
    }
    if (want_depth &&
        !send_context(c, option, NBD_META_ALLOCATION_DEPTH_ID, "qemu:allocation-depth")) {
        return false;
    }
    return send_option_reply(c, option, NBD_REP_ACK, NULL, 0);
}

typedef struct NameList {
    char **names;
    char **descs;
    int n;
} NameList;

static void collect_name(BlockExport *exp, void *opaque)
{
    NameList *l = opaque;
    const char *desc = blk_exp_description(exp);

    l->names = realloc(l->names, (l->n + 1) * sizeof(*l->names));
    l->descs = realloc(l->descs, (l->n + 1) * sizeof(*l->descs));
    if (!l->names || !l->descs || !(l->names[l->n] = strdup(blk_exp_nbd_name(exp))) ||
        !(l->descs[l->n] = strdup(desc ? desc : ""))) {
        abort();
    }
    l->n++;
}

static bool coroutine_fn handle_list(NbdClient *c, uint32_t len)
{
    NameList l = { NULL, NULL, 0 };
    bool ok = true;

    if (len != 0) {
        return send_option_reply(c, NBD_OPT_LIST, NBD_REP_ERR_INVALID, NULL, 0);
    }
    /* Copy the names first: sending may yield, and exports may change. */
    blk_exp_foreach(collect_name, &l);
    for (int i = 0; i < l.n; i++) {
        /* Name length, name, then the description (what is left). */
        size_t nlen = strlen(l.names[i]), dlen = strlen(l.descs[i]);
        uint8_t *reply = malloc(4 + nlen + dlen);
        if (!reply) {
            abort();
        }
        nbd_put32(reply, nlen);
        memcpy(reply + 4, l.names[i], nlen);
        memcpy(reply + 4 + nlen, l.descs[i], dlen);
        ok = ok && send_option_reply(c, NBD_OPT_LIST, NBD_REP_SERVER, reply, 4 + nlen + dlen);
        free(reply);
        free(l.names[i]);
        free(l.descs[i]);
    }
    free(l.names);
    free(l.descs);
    return ok && send_option_reply(c, NBD_OPT_LIST, NBD_REP_ACK, NULL, 0);
}

/* Drop a reference the handshake held: outside the coroutine, since the
 * last one frees the BlockBackend (which waits). */
static void exp_unref_bh(void *opaque)
{
    blk_exp_unref(opaque);
}

static void handshake_put_exp(BlockExport *exp)
{
    aio_bh_schedule_oneshot(main_aio_context(), exp_unref_bh, exp);
}

/* After a send that may have yielded: is @exp still served as @name?
 * (block-export-del may have run meanwhile.) */
static bool exp_still_there(BlockExport *exp, const char *name)
{
    return blk_exp_find_nbd(name) == exp;
}

/*
 * Run the option haggling.  Returns the chosen export with a reference
 * the caller drops (handshake_put_exp), or NULL to end the connection.
 * Sending may yield, and the export may be deleted meanwhile: it is
 * referenced across every send that uses it.
 */
static BlockExport *coroutine_fn handshake(NbdClient *c)
{
    uint8_t greeting[18], cflags[4], opt[16];
    uint32_t client_flags;

    nbd_put64(greeting, NBD_MAGIC);
    nbd_put64(greeting + 8, NBD_OPTS_MAGIC);
    nbd_put16(greeting + 16, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
    if (!co_send(c, greeting, sizeof(greeting)) || !co_recv_full(c, cflags, 4)) {
        return NULL;
    }
    client_flags = nbd_get32(cflags);
    if (client_flags & ~(uint32_t)(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES)) {
        return NULL;
    }
    c->no_zeroes = client_flags & NBD_FLAG_C_NO_ZEROES;

    for (;;) {
        uint32_t option, len;
        uint8_t *data = NULL;
        BlockExport *exp = NULL;
        bool ok = true;

        if (!co_recv_full(c, opt, sizeof(opt)) || nbd_get64(opt) != NBD_OPTS_MAGIC) {
            return NULL;
        }
        option = nbd_get32(opt + 8);
        len = nbd_get32(opt + 12);
        if (len > NBD_MAX_OPTION_LEN) {
            return NULL;   /* not worth reading: the client is broken */
        }
        data = malloc(len + 1);
        if (!data || !co_recv_full(c, data, len)) {
            free(data);
            return NULL;
        }
        data[len] = '\0';

        switch (option) {
        case NBD_OPT_EXPORT_NAME: {
            uint8_t reply[8 + 2 + 124] = { 0 };
            if (memchr(data, '\0', len) || !(exp = blk_exp_find_nbd((char *)data))) {
                free(data);
                return NULL;        /* the protocol allows no error here */
            }
            blk_exp_ref(exp);
            nbd_put64(reply, blk_co_getlength(blk_exp_blk(exp)));
            nbd_put16(reply + 8, transmission_flags(c, exp));
            ok = co_send(c, reply, c->no_zeroes ? 10 : sizeof(reply)) &&
                 exp_still_there(exp, (char *)data);
            free(data);
            if (!ok) {
                handshake_put_exp(exp);
                return NULL;
            }
            return exp;
        }
        case NBD_OPT_ABORT:
            send_option_reply(c, option, NBD_REP_ACK, NULL, 0);
            free(data);
            return NULL;
        case NBD_OPT_LIST:
            ok = handle_list(c, len);
            break;
        case NBD_OPT_STARTTLS:
            ok = send_option_reply(c, option, NBD_REP_ERR_POLICY, NULL, 0);
            break;
        case NBD_OPT_INFO:
        case NBD_OPT_GO: {
            char name[NBD_NAME_MAX + 1];
            const uint8_t *requests;
            int nrequests;
            if (!parse_info_request(data, len, name, &requests, &nrequests)) {
                ok = send_option_reply(c, option, NBD_REP_ERR_INVALID, NULL, 0);
            } else if (!(exp = blk_exp_find_nbd(name))) {
                ok = send_option_reply(c, option, NBD_REP_ERR_UNKNOWN, NULL, 0);
            } else {
                blk_exp_ref(exp);
                ok = send_export_info(c, option, exp, requests, nrequests) &&
                     send_option_reply(c, option, NBD_REP_ACK, NULL, 0);
                if (ok && option == NBD_OPT_GO) {
                    if (exp_still_there(exp, name)) {
                        free(data);
                        return exp;
                    }
                    ok = false;     /* deleted while we told the client about it */
                }
                handshake_put_exp(exp);
            }
            break;
        }
        case NBD_OPT_STRUCTURED_REPLY:
            if (len != 0) {
                ok = send_option_reply(c, option, NBD_REP_ERR_INVALID, NULL, 0);
            } else {
                c->structured = true;
                ok = send_option_reply(c, option, NBD_REP_ACK, NULL, 0);
            }
            break;
        case NBD_OPT_LIST_META_CONTEXT:
        case NBD_OPT_SET_META_CONTEXT:
            ok = handle_meta_context(c, option, data, len);
            break;
        default:
            ok = send_option_reply(c, option, NBD_REP_ERR_UNSUP, NULL, 0);
            break;
        }
        free(data);
        if (!ok) {
            return NULL;
        }
    }
}

/* ---- Replies -------------------------------------------------------------------- */

static uint32_t nbd_errno(int err)
{
    switch (err) {
    case EPERM: case EROFS:           return NBD_EPERM;
    case ENOMEM:                      return NBD_ENOMEM;
    case EINVAL:                      return NBD_EINVAL;
    case ENOSPC: case EDQUOT: case EFBIG: return NBD_ENOSPC;
    case EOVERFLOW:                   return NBD_EOVERFLOW;
    case ENOTSUP:                     return NBD_ENOTSUP;
    case ESHUTDOWN:                   return NBD_ESHUTDOWN;
    default:                          return NBD_EIO;
    }
}

static void chunk_header(uint8_t *hdr, uint16_t flags, uint16_t type, uint64_t cookie,
                         uint32_t len)
{
    nbd_put32(hdr, NBD_STRUCTURED_REPLY_MAGIC);
    nbd_put16(hdr + 4, flags);
    nbd_put16(hdr + 6, type);
    nbd_put64(hdr + 8, cookie);
    nbd_put32(hdr + 16, len);
}

/* A reply without payload: success or -errno.  Send lock held. */
static bool coroutine_fn send_status(NbdClient *c, NbdRequest *r, int ret)
    TSA_REQUIRES(c->send_lock)
{
    uint8_t buf[20 + 6];

    if (!c->structured) {
        nbd_put32(buf, NBD_SIMPLE_REPLY_MAGIC);
        nbd_put32(buf + 4, ret < 0 ? nbd_errno(-ret) : 0);
        nbd_put64(buf + 8, r->cookie);
        return reply_send(c, buf, 16);
    }
    if (ret >= 0) {
        chunk_header(buf, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, r->cookie, 0);
        return reply_send(c, buf, 20);
    }
    chunk_header(buf, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, r->cookie, 6);
    nbd_put32(buf + 20, nbd_errno(-ret));
    nbd_put16(buf + 24, 0);     /* no message */
    return reply_send(c, buf, sizeof(buf));
}

/* ---- Requests -------------------------------------------------------------------- */

static bool valid_flags(NbdClient *c, NbdRequest *r)
{
    /* FUA is advertised, and then "the server MUST accept all commands
     * with this bit set (even by ignoring the bit)" (proto.md). */
    uint16_t allowed = NBD_CMD_FLAG_FUA;

    switch (r->type) {
    case NBD_CMD_READ:
        allowed |= c->structured ? NBD_CMD_FLAG_DF : 0;
        break;
    case NBD_CMD_WRITE_ZEROES:
        allowed |= NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO;
        break;
    case NBD_CMD_BLOCK_STATUS:
        allowed |= NBD_CMD_FLAG_REQ_ONE;
        break;
    default:
        break;
    }
    return !(r->flags & ~allowed);
}

/* The error for a request that cannot be carried out as given, or 0. */
static int check_request(NbdClient *c, NbdRequest *r)
{
    bool writes = r->type == NBD_CMD_WRITE || r->type == NBD_CMD_TRIM ||
                  r->type == NBD_CMD_WRITE_ZEROES;

    if (r->type > NBD_CMD_BLOCK_STATUS || r->type == NBD_CMD_DISC) {
        return -EINVAL;
    }
    if (!valid_flags(c, r)) {
        return -EINVAL;
    }
    if (writes && !blk_exp_writable(c->exp)) {
        return -EPERM;
    }
    if (r->type == NBD_CMD_FLUSH) {
        /* Offset and length are reserved: qemu-storage-daemon and nbdkit
         * both refuse a flush that sets them. */
        return r->offset || r->length ? -EINVAL : 0;
    }
    if (r->offset > (uint64_t)c->size || r->length > (uint64_t)c->size - r->offset) {
        /* proto.md: ENOSPC for writes, EINVAL for reads and trims. */
        return r->type == NBD_CMD_WRITE || r->type == NBD_CMD_WRITE_ZEROES ? -ENOSPC
                                                                           : -EINVAL;
    }
    if (r->length == 0 && r->type == NBD_CMD_BLOCK_STATUS) {
        return -EINVAL;
    }
    if ((r->type == NBD_CMD_READ || r->type == NBD_CMD_CACHE) &&
        r->length > NBD_MAX_BUFFER_SIZE) {
        return -EINVAL;
    }
    if (r->type == NBD_CMD_BLOCK_STATUS &&
        !(c->structured && (c->meta_allocation || c->meta_depth))) {
        return -EINVAL;
    }
    return 0;
}

static uint32_t allocation_flags(int status)
{
    return (status & BDRV_BLOCK_DATA ? 0 : NBD_STATE_HOLE) |
           (status & BDRV_BLOCK_ZERO ? NBD_STATE_ZERO : 0);
}

/*
 * The request's block I/O is over (its data, if any, is in its buffer): it
 * no longer counts in the export, so a drain does not wait for its reply,
 * which waits for the client to read as long as the client likes.
 */
static void request_io_done(NbdClient *c, NbdRequest *r)
{
    if (!r->io_done) {
        r->io_done = true;
        blk_exp_request_end(c->exp);
    }
}

typedef struct ReadExtent {
    uint64_t done;              /* offset into the request */
    uint64_t len;
    bool hole;
} ReadExtent;

/*
 * The block I/O of a structured READ: the extents of the range (holes
 * unread) and the data of the others, into @buf.  Returns the number of
 * extents in *@out, or -errno (extents before the error stand).
 */
static int coroutine_fn read_extents(NbdClient *c, NbdRequest *r, void *buf,
                                     ReadExtent **out, int *n)
{
    BlockBackend *blk = blk_exp_blk(c->exp);
    uint64_t done = 0;
    int cap = 0;

    *out = NULL;
    *n = 0;
    while (done < r->length) {
        int64_t pnum = r->length - done;
        int status = 0;
        bool hole;

        if (!(r->flags & NBD_CMD_FLAG_DF)) {
            status = blk_co_block_status(blk, r->offset + done, r->length - done, &pnum);
            if (status < 0 || pnum <= 0) {
                status = 0;
                pnum = r->length - done;
            }
        }
        hole = (status & BDRV_BLOCK_ZERO) && !(status & BDRV_BLOCK_DATA) && pnum <= UINT32_MAX;
        if (!hole) {
            int ret = blk_co_pread(blk, r->offset + done, pnum, (char *)buf + done, 0);
            if (ret < 0) {
                return ret;
            }
        }
        if (*n == cap) {
            cap = cap ? 2 * cap : 4;
            *out = realloc(*out, cap * sizeof(**out));
            if (!*out) {
                abort();
            }
        }
        (*out)[(*n)++] = (ReadExtent){ .done = done, .len = pnum, .hole = hole };
        done += pnum;
    }
    return 0;
}

/* READ with structured replies: holes as hole chunks, data as data chunks;
 * all block I/O first, then the chunks. */
static int coroutine_fn read_structured(NbdClient *c, NbdRequest *r, void *buf)
{
    ReadExtent *ext;
    int n, ret = read_extents(c, r, buf, &ext, &n);
    bool ok = true;

    request_io_done(c, r);
    co_mutex_lock(&c->send_lock);
    for (int i = 0; ok && i < n; i++) {
        uint8_t hdr[20 + 12];
        bool last = ret == 0 && i == n - 1;

        if (ext[i].hole) {
            chunk_header(hdr, last ? NBD_REPLY_FLAG_DONE : 0, NBD_REPLY_TYPE_OFFSET_HOLE,
                         r->cookie, 12);
            nbd_put64(hdr + 20, r->offset + ext[i].done);
            nbd_put32(hdr + 28, ext[i].len);
            ok = reply_send(c, hdr, 32);
        } else {
            struct iovec iov[2] = { { hdr, 28 }, { (char *)buf + ext[i].done, ext[i].len } };
            chunk_header(hdr, last ? NBD_REPLY_FLAG_DONE : 0, NBD_REPLY_TYPE_OFFSET_DATA,
                         r->cookie, 8 + ext[i].len);
            nbd_put64(hdr + 20, r->offset + ext[i].done);
            ok = reply_sendv(c, iov, 2);
        }
    }
    /* Chunks sent stand; an error ends the reply. */
    if (ok && ret < 0) {
        ok = send_status(c, r, ret);
    }
    co_mutex_unlock(&c->send_lock);
    free(ext);
    return ok ? 0 : -EPIPE;
}

static int coroutine_fn do_read(NbdClient *c, NbdRequest *r)
{
    void *buf = buf_pool_get(c->pool, r->length);
    int ret;
    bool ok;

    if (!buf) {
        request_io_done(c, r);
        co_mutex_lock(&c->send_lock);
        ok = send_status(c, r, -ENOMEM);
        co_mutex_unlock(&c->send_lock);
        return ok ? 0 : -EPIPE;
    }
    if (c->structured) {
        ret = read_structured(c, r, buf);
        buf_pool_put(c->pool, buf, r->length);
        return ret;
    }
    ret = blk_co_pread(blk_exp_blk(c->exp), r->offset, r->length, buf, 0);
    request_io_done(c, r);
    co_mutex_lock(&c->send_lock);
    if (ret < 0) {
        ok = send_status(c, r, ret);
    } else {
        uint8_t hdr[16];
        struct iovec iov[2] = { { hdr, 16 }, { buf, r->length } };
        nbd_put32(hdr, NBD_SIMPLE_REPLY_MAGIC);
        nbd_put32(hdr + 4, 0);
        nbd_put64(hdr + 8, r->cookie);
        ok = reply_sendv(c, iov, 2);
    }
    co_mutex_unlock(&c->send_lock);
    buf_pool_put(c->pool, buf, r->length);
    return ok ? 0 : -EPIPE;
}

/*
 * The extents of one context for @r into @buf (after the 24 bytes of chunk
 * header and context id): base:allocation's flags, or the layer that holds
 * each range (@depth).  Neighbours with the same value merge.  The count,
 * or -errno.
 */
static int coroutine_fn status_extents(NbdClient *c, NbdRequest *r, bool depth, uint8_t *buf,
                                       uint32_t max)
{
    BlockBackend *blk = blk_exp_blk(c->exp);
    uint8_t *ext = buf + 24;
    uint32_t n = 0;
    uint64_t done = 0;

    while (done < r->length && n < max) {
        int64_t pnum;
        int st = depth ? blk_co_allocation_depth(blk, r->offset + done, r->length - done, &pnum)
                       : blk_co_block_status(blk, r->offset + done, r->length - done, &pnum);
        uint32_t value;

        if (st < 0) {
            return st;
        }
        if (pnum <= 0) {
            break;
        }
        if (pnum > UINT32_MAX) {
            pnum = UINT32_MAX & ~(uint32_t)511;
        }
        value = depth ? (uint32_t)st : allocation_flags(st);
        if (n > 0 && nbd_get32(ext + 8 * (n - 1) + 4) == value &&
            (uint64_t)nbd_get32(ext + 8 * (n - 1)) + pnum <= UINT32_MAX) {
            nbd_put32(ext + 8 * (n - 1), nbd_get32(ext + 8 * (n - 1)) + pnum);
        } else {
            nbd_put32(ext + 8 * n, pnum);
            nbd_put32(ext + 8 * n + 4, value);
            n++;
        }
        done += pnum;
    }
    return (int)n;
}

/* One chunk per selected context, the last one marked done. */
static int coroutine_fn do_block_status(NbdClient *c, NbdRequest *r)
{
    static const uint32_t ids[2] = { NBD_META_BASE_ALLOCATION_ID,
                                     NBD_META_ALLOCATION_DEPTH_ID };
    bool selected[2] = { c->meta_allocation, c->meta_depth };
    uint32_t max = (r->flags & NBD_CMD_FLAG_REQ_ONE) ? 1 : MAX_STATUS_EXTENTS;
    uint8_t *bufs[2] = { NULL, NULL };
    int counts[2] = { 0, 0 }, last = selected[1] ? 1 : 0, ret = 0;
    bool ok = true;

    for (int i = 0; i < 2 && ret == 0; i++) {
        if (!selected[i]) {
            continue;
        }
        bufs[i] = malloc(24 + 8 * max);
        if (!bufs[i]) {
            abort();
        }
        counts[i] = status_extents(c, r, i == 1, bufs[i], max);
        ret = counts[i] < 0 ? counts[i] : counts[i] == 0 ? -EIO : 0;
    }
    request_io_done(c, r);
    co_mutex_lock(&c->send_lock);
    if (ret < 0) {
        ok = send_status(c, r, ret);
    }
    for (int i = 0; i < 2 && ret == 0 && ok; i++) {
        if (selected[i]) {
            chunk_header(bufs[i], i == last ? NBD_REPLY_FLAG_DONE : 0,
                         NBD_REPLY_TYPE_BLOCK_STATUS, r->cookie, 4 + 8 * counts[i]);
            nbd_put32(bufs[i] + 20, ids[i]);
            ok = reply_send(c, bufs[i], 24 + 8 * counts[i]);
        }
    }
    co_mutex_unlock(&c->send_lock);
    free(bufs[0]);
    free(bufs[1]);
    return ok ? 0 : -EPIPE;
}

/* Carry out one request and reply; -EPIPE when the client is gone. */
static int coroutine_fn process_request(NbdClient *c, NbdRequest *r)
{
    BlockBackend *blk = blk_exp_blk(c->exp);
    int fua = (r->flags & NBD_CMD_FLAG_FUA) ? BDRV_REQ_FUA : 0;
    int ret = check_request(c, r);
    bool ok;

    /* A zero length is unspecified by proto.md: like qemu-storage-daemon,
     * do nothing and succeed (the flush and block status are checked). */
    if (ret == 0 && (r->length > 0 || r->type == NBD_CMD_FLUSH)) {
        switch (r->type) {
        case NBD_CMD_READ:
            return do_read(c, r);
        case NBD_CMD_BLOCK_STATUS:
            return do_block_status(c, r);
        case NBD_CMD_WRITE:
            ret = blk_co_pwrite(blk, r->offset, r->length, r->buf, fua);
            break;
        case NBD_CMD_FLUSH:
            ret = blk_co_flush(blk);
            break;
        case NBD_CMD_TRIM:
            ret = blk_co_pdiscard(blk, r->offset, r->length);
            if (ret == 0 && fua) {
                ret = blk_co_flush(blk);
            }
            break;
        case NBD_CMD_WRITE_ZEROES: {
            int flags = fua;
            if (!(r->flags & NBD_CMD_FLAG_NO_HOLE)) {
                flags |= BDRV_REQ_MAY_UNMAP;
            }
            if (r->flags & NBD_CMD_FLAG_FAST_ZERO) {
                flags |= BDRV_REQ_NO_FALLBACK;
            }
            ret = blk_co_pwrite_zeroes(blk, r->offset, r->length, flags);
            break;
        }
        case NBD_CMD_CACHE: {
            /* Prefetch: read and drop. */
            void *buf = buf_pool_get(c->pool, r->length);
            ret = buf ? blk_co_pread(blk, r->offset, r->length, buf, 0) : -ENOMEM;
            buf_pool_put(c->pool, buf, r->length);
            break;
        }
        default:
            ret = -EINVAL;
            break;
        }
    }
    request_io_done(c, r);
    co_mutex_lock(&c->send_lock);
    ok = send_status(c, r, ret);
    co_mutex_unlock(&c->send_lock);
    return ok ? 0 : -EPIPE;
}

static void coroutine_fn request_co(void *opaque)
{
    NbdRequest *r = opaque;
    NbdClient *c = r->client;

    if (process_request(c, r) < 0) {
        client_gone(c);
    }
    c->in_flight--;
    c->in_flight_bytes -= r->charged;
    budget_release(r->charged);
    request_io_done(c, r);
    buf_pool_put(c->pool, r->buf, r->length);
    free(r);
    wake_receive_loop(c);
}

/* ---- The connection --------------------------------------------------------------- */

/* Read the next request; false to end the connection. */
static bool coroutine_fn receive_request(NbdClient *c, NbdRequest *r)
{
    uint8_t hdr[28];

    if (!co_recv_full(c, hdr, sizeof(hdr)) || nbd_get32(hdr) != NBD_REQUEST_MAGIC) {
        return false;
    }
    r->flags = nbd_get16(hdr + 4);
    r->type = nbd_get16(hdr + 6);
    r->cookie = nbd_get64(hdr + 8);
    r->offset = nbd_get64(hdr + 16);
    r->length = nbd_get32(hdr + 24);
    r->buf = NULL;
    if (r->type == NBD_CMD_WRITE) {
        /* The payload follows whatever we think of the request. */
        if (r->length > NBD_MAX_BUFFER_SIZE) {
            return false;      /* too big to buffer or skip cheaply: hang up */
        }
        r->buf = buf_pool_get(c->pool, r->length);
        if (!r->buf || !co_recv_full(c, r->buf, r->length)) {
            buf_pool_put(c->pool, r->buf, r->length);
            return false;
        }
    }
    return true;
}

static void coroutine_fn wait_for_budget(NbdClient *c, uint32_t bytes)
{
    while (c->in_flight >= MAX_REQUESTS ||
           (c->in_flight > 0 && c->in_flight_bytes + bytes > MAX_IN_FLIGHT_BYTES)) {
        c->budget_waiter = coroutine_self();
        coroutine_yield();
    }
}

/* Count a request in the export, waiting while it is drained. */
static void coroutine_fn enter_export(NbdClient *c)
{
    for (;;) {
        blk_exp_request_begin(c->exp);
        if (!blk_exp_quiesced(c->exp)) {
            return;
        }
        blk_exp_request_end(c->exp);
        blk_exp_wait_unquiesced(c->exp);
    }
}

static void coroutine_fn transmission(NbdClient *c)
{
    c->trim_timer = aio_timer_new(c->ctx, idle_trim, c);
    c->flush_bh = aio_bh_new(c->ctx, flush_bh, c);
    for (;;) {
        NbdRequest *r = calloc(1, sizeof(*r));

        if (!r) {
            break;
        }
        r->client = c;
        if (atomic_read(&c->closing) || !receive_request(c, r)) {
            free(r);
            break;
        }
        if (r->type == NBD_CMD_DISC) {
            buf_pool_put(c->pool, r->buf, r->length);
            free(r);
            break;
        }
        /* Reads and writes hold a buffer until their reply is out. */
        r->charged = (r->type == NBD_CMD_READ || r->type == NBD_CMD_WRITE) ? r->length : 0;
        wait_for_budget(c, r->charged);
        budget_acquire(c, r->charged);
        enter_export(c);
        c->in_flight++;
        c->in_flight_bytes += r->charged;
        aio_co_enter(c->ctx, coroutine_create(request_co, r));
        c->spawned = true;
    }
    /* Let the requests in flight finish (their replies may fail) and
     * their replies go out. */
    while (c->in_flight > 0 || c->flush_pending) {
        c->budget_waiter = coroutine_self();
        coroutine_yield();
    }
    timer_free(c->trim_timer);
    c->trim_timer = NULL;
    bh_delete(c->flush_bh);
    c->flush_bh = NULL;
}

static void client_free_bh(void *opaque)
{
    NbdClient *c = opaque;

    if (c->exp) {
        blk_exp_remove_client(c->exp, &c->link);
    }
    list_del(&c->all_link);
    num_clients--;
    close(c->fd);
    free(c->in_buf);
    free(c->out_buf);
    buf_pool_free(c->pool);
    free(c);
    aio_wait_kick();
}

static void coroutine_fn client_co(void *opaque)
{
    NbdClient *c = opaque;
    BlockExport *exp = handshake(c);

    if (exp && !atomic_read(&c->closing)) {
        c->exp = exp;
        c->size = blk_co_getlength(blk_exp_blk(exp));
        blk_exp_add_client(exp, c, &c->link);
        handshake_put_exp(exp);         /* the client holds its own now */
        AioContext *home = blk_exp_next_ctx(exp);
        if (home != c->ctx) {
            /* Serve it where the export lives. */
            client_unwatch(c);
            c->ctx = home;
            aio_co_reschedule_self(c->ctx);
        }
        transmission(c);
    } else if (exp) {
        handshake_put_exp(exp);
    }
    c->recv_waiter = c->send_waiter = NULL;
    client_unwatch(c);
    /* Bookkeeping belongs to the main thread. */
    aio_bh_schedule_oneshot(main_aio_context(), client_free_bh, c);
}

void nbd_client_new(int fd)
{
    NbdClient *c = calloc(1, sizeof(*c));

    GLOBAL_STATE_CODE();
    if (!c) {
        abort();
    }
    c->fd = fd;
    c->ctx = main_aio_context();
    c->in_buf = malloc(IN_BUF_SIZE);
    c->out_buf = malloc(OUT_BUF_SIZE);
    c->pool = buf_pool_new(POOL_MAX_CACHED);
    if (!c->in_buf || !c->out_buf || !c->pool) {
        abort();
    }
    list_init(&c->link);
    co_mutex_init(&c->send_lock);
    list_add_tail(&all_clients, &c->all_link);
    num_clients++;
    coroutine_enter(coroutine_create(client_co, c));
}

void nbd_client_shutdown(NbdClient *c)
{
    atomic_set(&c->closing, 1);
    /* Wakes a receive or send that is waiting, wherever it runs. */
    shutdown(c->fd, SHUT_RDWR);
}

void nbd_clients_shutdown_all(void)
{
    GLOBAL_STATE_CODE();
    list_for_each(n, &all_clients) {
        nbd_client_shutdown(list_entry(n, NbdClient, all_link));
    }
}
