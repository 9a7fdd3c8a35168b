/*
 * nbd-client.c - one NBD connection: its socket I/O and, once the
 * handshake (nbd-handshake.c) has picked an export, the transmission
 * phase.
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
#include "blockd/dirty-bitmap.h"
#include "blockd/log.h"
#include "blockd/main-loop.h"
#include "nbd-conn.h"
#include "nbd-internal.h"
#include "blockd/nbd-proto.h"

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

/* Take @bytes of the server budget for a request of @c, waiting while
 * others hold it: false (nothing taken) if the connection is closing
 * meanwhile.  A request without payload, and a small one of a connection
 * with nothing else in flight, always go (clients that stall cannot lock
 * out the others' ordinary requests); a large one waits, which ends once
 * the others' replies are out -- or, if they stall, once they are gone:
 * large requests are what a stalled client's pinned memory holds back. */
static bool coroutine_fn budget_acquire(NbdClient *c, int64_t bytes)
{
    bool exempt = bytes == 0 || (c->in_flight == 0 && bytes <= SMALL_REQUEST_BYTES);
    bool closing = false;

    bd_mutex_lock(&budget.lock);
    while (!exempt && budget.bytes + bytes > SERVER_MAX_IN_FLIGHT_BYTES &&
           !(closing = atomic_read(&c->closing))) {
        co_queue_wait_bdmutex(&budget.waiters, &budget.lock);
    }
    if (!closing) {
        budget.bytes += bytes;
    }
    bd_mutex_unlock(&budget.lock);
    return !closing;
}

/* A closing connection may be waiting for budget: let it see that. */
static void budget_wake_all(void)
{
    bd_mutex_lock(&budget.lock);
    co_queue_restart_all_bdmutex(&budget.waiters, &budget.lock);
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

/* ---- TLS --------------------------------------------------------------------- */

/* Wait for what a TLS call asked for (@want: TLS_WANT_*); false if the
 * connection is closing.  @waiter is the caller's own (a write waits as a
 * sender, a read as the receiver, whichever direction TLS needs). */
static bool coroutine_fn tls_wait(NbdClient *c, Coroutine **waiter)
{
    if (atomic_read(&c->closing)) {
        return false;
    }
    client_wait(c, waiter);
    return true;
}

bool coroutine_fn nbd_co_start_tls(NbdClient *c, TlsCreds *creds)
{
    /* A copy: the server may stop (and free its own) while we wait. */
    char *authz = nbd_server_tls_authz() ? strdup(nbd_server_tls_authz()) : NULL;
    Error *err = NULL;
    bool ok = false;
    int r = -1;

    if (c->in_pos != c->in_end) {
        free(authz);
        return false;           /* bytes sent before the TLS handshake */
    }
    tls_creds_ref(creds);
    c->tls_creds = creds;
    c->tls = tls_session_new(creds, true, NULL, c->fd, &err);
    while (c->tls && (r = tls_session_handshake(c->tls, &err)) != 0) {
        if ((r != TLS_WANT_READ && r != TLS_WANT_WRITE) ||
            !tls_wait(c, r == TLS_WANT_READ ? &c->recv_waiter : &c->send_waiter)) {
            break;
        }
    }
    if (r != 0 || atomic_read(&c->closing)) {
        if (err) {
            info_report("NBD client refused: %s", error_get_pretty(err));
        }
    } else if (authz && !authz_is_allowed(authz, tls_session_peer_name(c->tls), &err)) {
        info_report("NBD client refused: TLS authorization of '%s' denied%s%s",
                    tls_session_peer_name(c->tls) ? tls_session_peer_name(c->tls) : "",
                    err ? ": " : "", err ? error_get_pretty(err) : "");
    } else {
        ok = true;
    }
    error_free(err);
    free(authz);
    return ok;
}

static size_t coroutine_fn tls_recv_some(NbdClient *c, void *buf, size_t len)
{
    for (;;) {
        ssize_t n = tls_session_read(c->tls, buf, len);

        if (n >= 0) {
            return n;
        }
        if (n != TLS_WANT_READ && n != TLS_WANT_WRITE) {
            return 0;
        }
        idle_trim_arm(c);
        if (!tls_wait(c, &c->recv_waiter)) {
            return 0;
        }
    }
}

static bool coroutine_fn tls_sendv(NbdClient *c, struct iovec *iov, int niov)
{
    for (int i = 0; i < niov; i++) {
        const char *p = iov[i].iov_base;
        size_t left = iov[i].iov_len;

        while (left > 0) {
            ssize_t n = tls_session_write(c->tls, p, left);

            if (n > 0) {
                p += n;
                left -= n;
            } else if ((n != TLS_WANT_READ && n != TLS_WANT_WRITE) ||
                       !tls_wait(c, &c->send_waiter)) {
                return false;
            }
        }
    }
    return true;
}

/* ---- Plain socket ------------------------------------------------------------ */

/* Receive what the socket has, up to @len bytes; 0 on end of file or
 * error (waiting while there is nothing). */
static size_t coroutine_fn co_recv_some(NbdClient *c, void *buf, size_t len)
{
    if (c->tls) {
        return tls_recv_some(c, buf, len);
    }
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
bool coroutine_fn nbd_co_recv_full(NbdClient *c, void *buf, size_t len)
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

bool coroutine_fn nbd_co_sendv(NbdClient *c, struct iovec *iov, int niov)
{
    if (c->tls) {
        return tls_sendv(c, iov, niov);
    }
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

bool coroutine_fn nbd_co_send(NbdClient *c, const void *buf, size_t len)
{
    struct iovec iov = { (void *)buf, len };
    return nbd_co_sendv(c, &iov, 1);
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
    ok = nbd_co_sendv(c, &iov, 1);
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
    /* (A TLS record that could not go out whole stays in GnuTLS, and the
     * next write of the same bytes sends it.) */
    n = c->tls ? tls_session_write(c->tls, c->out_buf, c->out_len)
               : send(c->fd, c->out_buf, c->out_len, MSG_DONTWAIT | MSG_NOSIGNAL);
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
        return out_flush(c) && nbd_co_sendv(c, iov, niov);
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
/* The selected bitmap contexts that the export has (a mask). */
static uint64_t exp_bitmaps(NbdClient *c)
{
    int n = nbd_export_nbitmaps(c->exp);

    return n ? c->meta_bitmaps & (~0ULL >> (64 - n)) : 0;
}

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
        !(c->structured && (c->meta_allocation || c->meta_depth || exp_bitmaps(c)))) {
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
/* The contexts a block status reply covers, in this order. */
enum { CTX_ALLOCATION = -2, CTX_DEPTH = -1 };   /* >= 0: the export's bitmap i */

/* One context's value at @offset and how far it holds (*pnum). */
static int coroutine_fn context_status(NbdClient *c, int ctx, uint64_t offset, uint64_t bytes,
                                       int64_t *pnum)
{
    BlockBackend *blk = blk_exp_blk(c->exp);
    int st;

    if (ctx >= 0) {
        bool dirty = dirty_bitmap_run(nbd_export_bitmap(c->exp, ctx), offset, bytes, pnum);

        if (*pnum <= 0) {
            *pnum = bytes;          /* past the end of a smaller node's bitmap: clean */
        }
        return dirty ? NBD_STATE_DIRTY : 0;
    }
    if (ctx == CTX_DEPTH) {
        return blk_co_allocation_depth(blk, offset, bytes, pnum);
    }
    st = blk_co_block_status(blk, offset, bytes, pnum);
    return st < 0 ? st : (int)allocation_flags(st);
}

static int coroutine_fn status_extents(NbdClient *c, NbdRequest *r, int ctx, uint8_t *buf,
                                       uint32_t max)
{
    uint8_t *ext = buf + 24;
    uint32_t n = 0;
    uint64_t done = 0;

    while (done < r->length && n < max) {
        int64_t pnum;
        int value = context_status(c, ctx, r->offset + done, r->length - done, &pnum);

        if (value < 0) {
            return value;
        }
        if (pnum <= 0) {
            break;
        }
        if (pnum > UINT32_MAX) {
            pnum = UINT32_MAX & ~(uint32_t)511;
        }
        if (n > 0 && nbd_get32(ext + 8 * (n - 1) + 4) == (uint32_t)value &&
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

static uint32_t context_id(int ctx)
{
    return ctx == CTX_ALLOCATION ? NBD_META_BASE_ALLOCATION_ID
           : ctx == CTX_DEPTH    ? NBD_META_ALLOCATION_DEPTH_ID
                                 : NBD_META_DIRTY_BITMAP_ID_BASE + ctx;
}

/* One chunk per selected context, the last one marked done. */
static int coroutine_fn do_block_status(NbdClient *c, NbdRequest *r)
{
    uint32_t max = (r->flags & NBD_CMD_FLAG_REQ_ONE) ? 1 : MAX_STATUS_EXTENTS;
    int ctxs[2 + NBD_MAX_BITMAPS], nctx = 0, ret = 0;
    uint8_t *bufs[2 + NBD_MAX_BITMAPS];
    int counts[2 + NBD_MAX_BITMAPS];
    uint64_t bitmaps = exp_bitmaps(c);
    bool ok = true;

    if (c->meta_allocation) {
        ctxs[nctx++] = CTX_ALLOCATION;
    }
    if (c->meta_depth) {
        ctxs[nctx++] = CTX_DEPTH;
    }
    for (int i = 0; i < NBD_MAX_BITMAPS; i++) {
        if (bitmaps & (1ULL << i)) {
            ctxs[nctx++] = i;
        }
    }
    for (int k = 0; k < nctx; k++) {
        bufs[k] = NULL;
    }
    for (int k = 0; k < nctx && ret == 0; k++) {
        bufs[k] = malloc(24 + 8 * max);
        if (!bufs[k]) {
            abort();
        }
        counts[k] = status_extents(c, r, ctxs[k], bufs[k], max);
        ret = counts[k] < 0 ? counts[k] : counts[k] == 0 ? -EIO : 0;
    }
    request_io_done(c, r);
    co_mutex_lock(&c->send_lock);
    if (ret < 0) {
        ok = send_status(c, r, ret);
    }
    for (int k = 0; k < nctx && ret == 0 && ok; k++) {
        chunk_header(bufs[k], k == nctx - 1 ? NBD_REPLY_FLAG_DONE : 0,
                     NBD_REPLY_TYPE_BLOCK_STATUS, r->cookie, 4 + 8 * counts[k]);
        nbd_put32(bufs[k] + 20, context_id(ctxs[k]));
        ok = reply_send(c, bufs[k], 24 + 8 * counts[k]);
    }
    co_mutex_unlock(&c->send_lock);
    for (int k = 0; k < nctx; k++) {
        free(bufs[k]);
    }
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

/* Read the next request's header; false to end the connection. */
static bool coroutine_fn receive_header(NbdClient *c, NbdRequest *r)
{
    uint8_t hdr[28];

    if (!nbd_co_recv_full(c, hdr, sizeof(hdr)) || nbd_get32(hdr) != NBD_REQUEST_MAGIC) {
        return false;
    }
    r->flags = nbd_get16(hdr + 4);
    r->type = nbd_get16(hdr + 6);
    r->cookie = nbd_get64(hdr + 8);
    r->offset = nbd_get64(hdr + 16);
    r->length = nbd_get32(hdr + 24);
    r->buf = NULL;
    /* A write's payload follows whatever we think of the request. */
    return r->type != NBD_CMD_WRITE || r->length <= NBD_MAX_BUFFER_SIZE;
}

/* A write's payload, once its budget is taken; false to end. */
static bool coroutine_fn receive_payload(NbdClient *c, NbdRequest *r)
{
    if (r->type != NBD_CMD_WRITE) {
        return true;
    }
    r->buf = buf_pool_get(c->pool, r->length);
    if (!r->buf || !nbd_co_recv_full(c, r->buf, r->length)) {
        buf_pool_put(c->pool, r->buf, r->length);
        r->buf = NULL;
        return false;
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
        if (atomic_read(&c->closing) || !receive_header(c, r) || r->type == NBD_CMD_DISC) {
            free(r);
            break;
        }
        /* Reads and writes hold a buffer until their reply is out: the
         * budget is taken before a write's payload is read in. */
        r->charged = (r->type == NBD_CMD_READ || r->type == NBD_CMD_WRITE) ? r->length : 0;
        if (r->charged > NBD_MAX_BUFFER_SIZE) {
            r->charged = 0;      /* refused by check_request, never buffered */
        }
        wait_for_budget(c, r->charged);
        if (!budget_acquire(c, r->charged)) {
            free(r);
            break;
        }
        if (!receive_payload(c, r)) {
            budget_release(r->charged);
            free(r);
            break;
        }
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
        blk_exp_remove_user(c->exp, &c->link);
    }
    list_del(&c->all_link);
    num_clients--;
    tls_session_free(c->tls);
    if (c->tls_creds) {
        tls_creds_unref(c->tls_creds);
    }
    close(c->fd);
    free(c->in_buf);
    free(c->out_buf);
    buf_pool_free(c->pool);
    free(c);
    aio_wait_kick();
    nbd_server_resume_accept();         /* a descriptor is free again */
}

/* ---- Handshake deadline and eviction (main thread) ------------------------------ */

static void handshake_expired(void *opaque)
{
    NbdClient *c = opaque;

    if (c->handshaking) {
        nbd_client_shutdown(c);
    }
}

static void handshake_done(NbdClient *c)
{
    c->handshaking = false;
    if (c->handshake_timer) {
        timer_free(c->handshake_timer);
        c->handshake_timer = NULL;
    }
}

bool nbd_client_evict_handshaking(void)
{
    NbdClient *oldest = NULL;

    GLOBAL_STATE_CODE();
    list_for_each(n, &all_clients) {
        NbdClient *c = list_entry(n, NbdClient, all_link);

        if (c->handshaking && !atomic_read(&c->closing) &&
            (!oldest || c->started_ns < oldest->started_ns)) {
            oldest = c;
        }
    }
    if (oldest) {
        nbd_client_shutdown(oldest);
    }
    return oldest != NULL;
}

static void coroutine_fn client_co(void *opaque)
{
    NbdClient *c = opaque;
    BlockExport *exp = nbd_handshake(c);

    /* Still in the main thread: the handshake runs there. */
    handshake_done(c);
    free(c->meta_export);               /* a handshake that chose none */
    c->meta_export = NULL;

    if (exp && !atomic_read(&c->closing)) {
        c->exp = exp;
        c->size = blk_co_getlength(blk_exp_blk(exp));
        blk_exp_add_user(exp, &c->link);
        nbd_handshake_put_exp(exp);         /* the client holds its own now */
        AioContext *home = blk_exp_next_ctx(exp);
        if (home != c->ctx) {
            /* Serve it where the export lives. */
            client_unwatch(c);
            c->ctx = home;
            aio_co_reschedule_self(c->ctx);
        }
        transmission(c);
    } else if (exp) {
        nbd_handshake_put_exp(exp);
    }
    c->recv_waiter = c->send_waiter = NULL;
    client_unwatch(c);
    /* Bookkeeping belongs to the main thread. */
    aio_bh_schedule_oneshot(main_aio_context(), client_free_bh, c);
}

void nbd_client_new(int fd, int handshake_max_seconds)
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
    c->handshaking = true;
    c->started_ns = clock_now_ns();
    if (handshake_max_seconds > 0) {
        c->handshake_timer = aio_timer_new(main_aio_context(), handshake_expired, c);
        timer_mod(c->handshake_timer,
                  c->started_ns + handshake_max_seconds * 1000000000LL);
    }
    coroutine_enter(coroutine_create(client_co, c));
}

void nbd_client_shutdown(NbdClient *c)
{
    atomic_set(&c->closing, 1);
    /* Wakes a receive or send that is waiting, wherever it runs, and a
     * wait for budget. */
    shutdown(c->fd, SHUT_RDWR);
    budget_wake_all();
}

void nbd_clients_shutdown_all(void)
{
    GLOBAL_STATE_CODE();
    list_for_each(n, &all_clients) {
        nbd_client_shutdown(list_entry(n, NbdClient, all_link));
    }
}
