/*
 * nbd-reply.c - an nbd node's connection in its home context (nbd-driver.h):
 * waiting for the socket, moving bytes, and reading replies, simple and
 * structured, into the buffers of the requests they answer.  A reply that
 * breaks the protocol (a bad magic, a reply to no request in flight, data
 * outside its read, a chunk larger than any request, an error chunk
 * without an error, block status of another context or empty) ends the
 * connection, which fails or resends its requests (nbd.c).
 */
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "blockd/iov.h"
#include "blockd/log.h"
#include "blockd/thread.h"
#include "nbd-driver.h"

/* ---- Waiting for the socket ------------------------------------------- */

static void fd_ready(void *opaque, bool wr);

static void fd_readable(void *opaque)
{
    fd_ready(opaque, false);
}

static void fd_writable(void *opaque)
{
    fd_ready(opaque, true);
}

static void fd_handlers_update(NbdState *s)
{
    aio_set_fd_handler(s->fd_ctx, s->fd, s->rd_waiter ? fd_readable : NULL,
                       s->wr_waiter ? fd_writable : NULL, NULL, s);
}

static void fd_ready(void *opaque, bool wr)
{
    NbdState *s = opaque;
    Coroutine **waiter = wr ? &s->wr_waiter : &s->rd_waiter;
    Coroutine *co = *waiter;

    *waiter = NULL;
    fd_handlers_update(s);
    if (co) {
        aio_co_wake(co);
    }
}

static void coroutine_fn wait_fd(NbdState *s, bool wr)
{
    s->fd_ctx = current_aio_context();
    *(wr ? &s->wr_waiter : &s->rd_waiter) = coroutine_self();
    fd_handlers_update(s);
    coroutine_yield();
}

static void wake_waiter(Coroutine **waiter)
{
    Coroutine *co = *waiter;

    if (co) {
        *waiter = NULL;
        aio_co_wake(co);
    }
}

/* The connection @gen is gone (EOF, an error, a protocol violation): its
 * requests are lost; the next request reconnects. */
static void connection_lost(NbdState *s, unsigned gen, const char *why)
{
    if (s->fd < 0 || gen != s->gen) {
        return;                 /* already handled */
    }
    if (!s->loss_logged) {
        log_msg(LOG_LEVEL_WARN, "nbd node '%s': connection to the server lost (%s)",
                s->bs->node_name, why);
        s->loss_logged = true;
    }
    if (s->rd_waiter || s->wr_waiter) {
        aio_set_fd_handler(s->fd_ctx, s->fd, NULL, NULL, NULL, NULL);
    }
    shutdown(s->fd, SHUT_RDWR);
    close(s->fd);
    s->fd = -1;
    /* (Every user of the session checks fd and gen first, after a wait.) */
    tls_session_free(s->tls);
    s->tls = NULL;
    s->gen++;
    s->deadline = clock_now_ns() + s->reconnect_ns;
    wake_waiter(&s->rd_waiter);
    wake_waiter(&s->wr_waiter);
    for (int i = 0; i < NBD_MAX_REQS; i++) {
        NbdReq *r = &s->reqs[i];

        if (r->in_use && !r->done) {
            r->lost = true;
            wake_waiter(&r->co);
        }
    }
}

/* ---- Bytes on the socket ---------------------------------------------- */

static void iov_advance(struct iovec **iov, int *niov, size_t n)
{
    while (n && n >= (*iov)->iov_len) {
        n -= (*iov)->iov_len;
        (*iov)++;
        (*niov)--;
    }
    if (n) {
        (*iov)->iov_base = (char *)(*iov)->iov_base + n;
        (*iov)->iov_len -= n;
    }
}

/* (nbd-driver.h) */
bool coroutine_fn nbd_transfer(NbdState *s, unsigned gen, struct iovec *iov, int niov,
                                  bool wr)
{
    while (niov > 0 && iov->iov_len == 0) {
        iov++;
        niov--;
    }
    while (niov > 0) {
        struct msghdr msg = { .msg_iov = iov, .msg_iovlen = niov > IOV_MAX ? IOV_MAX : niov };
        ssize_t n;

        if (s->fd < 0 || s->gen != gen) {
            return false;
        }
        if (s->tls) {
            /* One record at a time, into or out of the first buffer. */
            n = wr ? tls_session_write(s->tls, iov->iov_base, iov->iov_len)
                   : tls_session_read(s->tls, iov->iov_base, iov->iov_len);
            if (n == TLS_WANT_READ || n == TLS_WANT_WRITE) {
                /* (The direction of the call itself: the reader and the
                 * sender each have their own wait.) */
                wait_fd(s, wr);
                continue;
            }
            if (n <= 0) {
                connection_lost(s, gen, n == 0 ? "end of file" : "TLS error");
                return false;
            }
            iov_advance(&iov, &niov, (size_t)n);
            continue;
        }
        n = wr ? sendmsg(s->fd, &msg, MSG_NOSIGNAL) : recvmsg(s->fd, &msg, 0);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            wait_fd(s, wr);
            continue;
        }
        if (n <= 0) {
            connection_lost(s, gen, n == 0 ? "end of file" : strerror(errno));
            return false;
        }
        iov_advance(&iov, &niov, (size_t)n);
    }
    return true;
}

static bool coroutine_fn recv_buf(NbdState *s, unsigned gen, void *buf, size_t len)
{
    struct iovec iov = { buf, len };

    return nbd_transfer(s, gen, &iov, 1, false);
}

/* Read and drop @len bytes. */
static bool coroutine_fn recv_skip(NbdState *s, unsigned gen, uint32_t len)
{
    uint8_t buf[4096];

    while (len) {
        uint32_t n = len < sizeof(buf) ? len : sizeof(buf);

        if (!recv_buf(s, gen, buf, n)) {
            return false;
        }
        len -= n;
    }
    return true;
}

/* Read @len bytes into [@off, @off+@len) of @r's buffer. */
static bool coroutine_fn recv_into(NbdState *s, unsigned gen, NbdReq *r, uint64_t off,
                                   uint32_t len)
{
    IOVector v;
    bool ok;

    iovector_init(&v);
    iovector_concat(&v, r->iov, r->niov, off, len);
    ok = nbd_transfer(s, gen, v.iov, v.niov, false);
    iovector_destroy(&v);
    return ok;
}

/* ---- Replies ---------------------------------------------------------- */

static int nbd_error_to_errno(uint32_t err)
{
    switch (err) {
    case NBD_EPERM: return -EPERM;
    case NBD_EIO: return -EIO;
    case NBD_ENOMEM: return -ENOMEM;
    case NBD_ENOSPC: return -ENOSPC;
    case NBD_EOVERFLOW: return -EOVERFLOW;
    case NBD_ENOTSUP: return -ENOTSUP;
    case NBD_ESHUTDOWN: return -ESHUTDOWN;
    default: return -EINVAL;
    }
}

static bool protocol_error(NbdState *s, unsigned gen, const char *what)
{
    connection_lost(s, gen, what);
    return false;
}

static NbdReq *lookup(NbdState *s, uint64_t cookie)
{
    NbdReq *r;

    if (cookie == 0 || cookie > NBD_MAX_REQS) {
        return NULL;
    }
    r = &s->reqs[cookie - 1];
    return r->in_use && !r->done && r->gen == s->gen ? r : NULL;
}

static void reply_done(NbdReq *r)
{
    r->done = true;
    wake_waiter(&r->co);
}

static bool coroutine_fn simple_reply(NbdState *s, unsigned gen, NbdReq *r, uint32_t err)
{
    if (err) {
        r->ret = nbd_error_to_errno(err);
    } else if (r->type == NBD_CMD_READ) {
        if (s->info.structured) {
            return protocol_error(s, gen, "a simple reply with data to a read");
        }
        if (!recv_into(s, gen, r, 0, r->len)) {
            return false;
        }
    } else if (r->type == NBD_CMD_BLOCK_STATUS) {
        return protocol_error(s, gen, "a simple reply to block status");
    }
    reply_done(r);
    return true;
}

/* An OFFSET_DATA or OFFSET_HOLE chunk must lie within its read. */
static bool in_request(NbdReq *r, uint64_t off, uint64_t len)
{
    return len > 0 && off >= r->offset && off - r->offset <= r->len &&
           len <= r->len - (off - r->offset);
}

static bool coroutine_fn data_chunk(NbdState *s, unsigned gen, NbdReq *r, uint16_t type,
                                    uint32_t len)
{
    uint8_t buf[12];
    uint64_t off;

    if (r->type != NBD_CMD_READ || len < (type == NBD_REPLY_TYPE_OFFSET_HOLE ? 12 : 9) ||
        (type == NBD_REPLY_TYPE_OFFSET_HOLE && len != 12)) {
        return protocol_error(s, gen, "a data chunk of the wrong size or for no read");
    }
    if (!recv_buf(s, gen, buf, type == NBD_REPLY_TYPE_OFFSET_HOLE ? 12 : 8)) {
        return false;
    }
    off = nbd_get64(buf);
    if (type == NBD_REPLY_TYPE_OFFSET_HOLE) {
        uint32_t hole = nbd_get32(buf + 8);

        if (!in_request(r, off, hole)) {
            return protocol_error(s, gen, "a hole outside its read");
        }
        iov_memset(r->iov, r->niov, off - r->offset, 0, hole);
        return true;
    }
    if (!in_request(r, off, len - 8)) {
        return protocol_error(s, gen, "data outside its read");
    }
    return recv_into(s, gen, r, off - r->offset, len - 8);
}

static bool coroutine_fn status_chunk(NbdState *s, unsigned gen, NbdReq *r, uint32_t len)
{
    uint8_t buf[12];

    if (r->type != NBD_CMD_BLOCK_STATUS || len < 12 || (len - 4) % 8) {
        return protocol_error(s, gen, "a block status chunk of the wrong size");
    }
    if (!recv_buf(s, gen, buf, sizeof(buf))) {
        return false;
    }
    if (nbd_get32(buf) != s->info.context_id || nbd_get32(buf + 4) == 0) {
        return protocol_error(s, gen, "block status of another context, or empty");
    }
    if (!r->got_extent) {
        r->got_extent = true;
        r->extent_len = nbd_get32(buf + 4);
        r->extent_flags = nbd_get32(buf + 8);
    }
    return recv_skip(s, gen, len - 12);
}

static bool coroutine_fn error_chunk(NbdState *s, unsigned gen, NbdReq *r, uint32_t len)
{
    uint8_t buf[6];
    char msg[NBD_MAX_STRING + 1];
    uint32_t err;
    uint16_t mlen;

    if (len < 6 || !recv_buf(s, gen, buf, sizeof(buf))) {
        return len < 6 ? protocol_error(s, gen, "an error chunk too short") : false;
    }
    err = nbd_get32(buf);
    mlen = nbd_get16(buf + 4);
    if (err == 0 || mlen > len - 6 || mlen > NBD_MAX_STRING) {
        return protocol_error(s, gen, "an error chunk without an error, or too long");
    }
    if (!recv_buf(s, gen, msg, mlen) || !recv_skip(s, gen, len - 6 - mlen)) {
        return false;
    }
    msg[mlen] = 0;
    if (mlen) {
        log_msg(LOG_LEVEL_DEBUG, "nbd node '%s': server error: %s", s->bs->node_name, msg);
    }
    if (r->ret == 0) {
        r->ret = nbd_error_to_errno(err);
    }
    return true;
}

static bool coroutine_fn structured_reply(NbdState *s, unsigned gen, const uint8_t *hdr)
{
    uint16_t flags = nbd_get16(hdr + 4), type = nbd_get16(hdr + 6);
    uint32_t len = nbd_get32(hdr + 16);
    NbdReq *r = lookup(s, nbd_get64(hdr + 8));
    bool ok;

    if (!r) {
        return protocol_error(s, gen, "a reply to no request in flight");
    }
    if (len > NBD_MAX_CHUNK) {
        return protocol_error(s, gen, "a reply chunk too large");
    }
    switch (type) {
    case NBD_REPLY_TYPE_NONE:
        ok = (flags & NBD_REPLY_FLAG_DONE) && len == 0 ? true
             : protocol_error(s, gen, "a NONE chunk that is not the last or not empty");
        break;
    case NBD_REPLY_TYPE_OFFSET_DATA:
    case NBD_REPLY_TYPE_OFFSET_HOLE:
        ok = data_chunk(s, gen, r, type, len);
        break;
    case NBD_REPLY_TYPE_BLOCK_STATUS:
        ok = status_chunk(s, gen, r, len);
        break;
    default:
        ok = type & (1 << 15) ? error_chunk(s, gen, r, len)
                              : protocol_error(s, gen, "a reply chunk of an unknown type");
        break;
    }
    if (ok && (flags & NBD_REPLY_FLAG_DONE)) {
        if (r->type == NBD_CMD_BLOCK_STATUS && r->ret == 0 && !r->got_extent) {
            return protocol_error(s, gen, "block status without an extent");
        }
        reply_done(r);
    }
    return ok;
}

/* Read one reply or chunk and deliver it: false if the connection ended. */
static bool coroutine_fn receive_one(NbdState *s, unsigned gen)
{
    uint8_t hdr[20];
    uint32_t magic;

    if (!recv_buf(s, gen, hdr, 4)) {
        return false;
    }
    magic = nbd_get32(hdr);
    if (magic == NBD_SIMPLE_REPLY_MAGIC) {
        NbdReq *r;

        if (!recv_buf(s, gen, hdr + 4, 12)) {
            return false;
        }
        r = lookup(s, nbd_get64(hdr + 8));
        return r ? simple_reply(s, gen, r, nbd_get32(hdr + 4))
                 : protocol_error(s, gen, "a reply to no request in flight");
    }
    if (magic != NBD_STRUCTURED_REPLY_MAGIC || !s->info.structured) {
        return protocol_error(s, gen, "a reply with a bad magic");
    }
    return recv_buf(s, gen, hdr + 4, 16) && structured_reply(s, gen, hdr);
}

/* (nbd-driver.h) */
void coroutine_fn nbd_wait_reply(NbdState *s, NbdReq *r)
{
    while (!r->done && !r->lost) {
        if (!s->reader) {
            s->reader = r;
            receive_one(s, r->gen);
            s->reader = NULL;
            continue;
        }
        r->co = coroutine_self();
        coroutine_yield();
    }
    if (!s->reader) {
        /* Hand the reading on to a request still waiting. */
        for (int i = 0; i < NBD_MAX_REQS; i++) {
            if (s->reqs[i].co) {
                wake_waiter(&s->reqs[i].co);
                break;
            }
        }
    }
}
