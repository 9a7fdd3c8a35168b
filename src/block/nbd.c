/*
 * nbd.c - the nbd driver: a node whose content an NBD server holds
 * (another blockd, qemu-storage-daemon, nbdkit ...).  docs/nbd-client.md
 * describes the options and the behaviour on a lost connection.
 *
 * One connection per node, up to NBD_MAX_REQS requests in flight on it.
 * Everything that touches the connection runs in the node's home
 * context: a request from another thread moves there for its round trip,
 * so the socket, the request slots and the reader need no lock.  There is
 * no reader coroutine of its own: a request waiting for its reply reads
 * the replies (anyone's, straight into their buffers) until its own has
 * come, then hands the reading to another waiting request (nbd-reply.c).
 * With no request in flight nothing watches the socket, so a drained node
 * has nothing to move when it changes context.
 *
 * A lost connection fails the requests on it, or with reconnect-delay
 * they wait up to that long for a new connection and are sent again.
 * The next request after a loss tries to reconnect (on a thread-pool
 * worker: the event loop never blocks on a server).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "blockd/aio.h"
#include "blockd/block-global-state.h"
#include "blockd/block-io.h"
#include "blockd/iov.h"
#include "blockd/log.h"
#include "blockd/main-loop.h"
#include "blockd/nbd-proto.h"
#include "blockd/options.h"
#include "blockd/thread-pool.h"
#include "blockd/thread.h"
#include "block-internal.h"
#include "nbd-driver.h"

#define NBD_RETRY_PAUSE_NS 1000000000LL         /* between connection attempts */
#define NBD_OPEN_RETRY_US 100000                /* open-timeout's retries */
#define NBD_MAX_CMD_LEN (1U << 30)              /* zeroes, discard, status */

/* ---- Connecting ------------------------------------------------------- */

typedef struct ConnectJob {
    const NbdTarget *target;
    NbdExportInfo info;
    int fd;
    TlsSession *tls;
    Error *err;
} ConnectJob;

static int connect_worker(void *opaque)
{
    ConnectJob *job = opaque;

    job->fd = nbd_connect_export(job->target, &job->info, &job->tls, &job->err);
    return job->fd < 0 ? -1 : 0;
}

static bool set_nonblocking(int fd)
{
    int fl = fcntl(fd, F_GETFL);

    return fl >= 0 && fcntl(fd, F_SETFL, fl | O_NONBLOCK) == 0;
}

/* One attempt to connect again, on a worker thread. */
static bool coroutine_fn reconnect(NbdState *s)
{
    ConnectJob job = { .target = &s->target, .fd = -1 };

    thread_pool_submit_co(connect_worker, &job);
    /* s->info is read by requests in any thread: it never changes, so a
     * server that now says something else is not taken back. */
    if (job.fd >= 0 && (job.info.size != s->info.size || job.info.flags != s->info.flags ||
                        job.info.structured != s->info.structured ||
                        job.info.context_id != s->info.context_id ||
                        job.info.min_block != s->info.min_block ||
                        job.info.max_block != s->info.max_block)) {
        error_setg(&job.err, "the export is not what it was (size, flags or block sizes)");
        close(job.fd);
        job.fd = -1;
    }
    if (job.fd < 0 || !set_nonblocking(job.fd)) {
        tls_session_free(job.tls);
        if (job.fd >= 0) {
            close(job.fd);
        }
        log_msg(LOG_LEVEL_DEBUG, "nbd node '%s': reconnection failed: %s", s->bs->node_name,
                job.err ? error_get_pretty(job.err) : "fcntl");
        error_free(job.err);
        return false;
    }
    s->fd = job.fd;
    s->tls = job.tls;
    s->loss_logged = false;
    log_msg(LOG_LEVEL_INFO, "nbd node '%s': reconnected to the server", s->bs->node_name);
    return true;
}

/* Connected, or -EIO once the connection has been gone for longer than
 * reconnect-delay, or past @give_up, the request's own limit (a fresh
 * request still makes one attempt). */
static int coroutine_fn ensure_connected(NbdState *s, int64_t give_up)
{
    bool waited = false;

    while (s->fd < 0) {
        int64_t deadline = s->deadline < give_up ? s->deadline : give_up, left;

        if (s->connecting) {
            co_queue_wait_unlocked(&s->connect_wait);
            waited = true;
            continue;
        }
        if (waited && clock_now_ns() >= deadline) {
            return -EIO;
        }
        s->connecting = true;
        reconnect(s);
        s->connecting = false;
        co_queue_restart_all(&s->connect_wait);
        if (s->fd >= 0) {
            break;
        }
        left = deadline - clock_now_ns();
        if (left <= 0) {
            return -EIO;
        }
        co_sleep_ns(left < NBD_RETRY_PAUSE_NS ? left : NBD_RETRY_PAUSE_NS);
        waited = true;
    }
    return 0;
}

/* ---- Requests --------------------------------------------------------- */

static bool coroutine_fn send_request(NbdState *s, NbdReq *r, struct iovec *wiov, int wniov)
{
    uint8_t hdr[28];
    IOVector v;
    bool ok;

    nbd_put32(hdr, NBD_REQUEST_MAGIC);
    nbd_put16(hdr + 4, r->flags);
    nbd_put16(hdr + 6, r->type);
    nbd_put64(hdr + 8, (uint64_t)(r - s->reqs) + 1);
    nbd_put64(hdr + 16, r->offset);
    nbd_put32(hdr + 24, r->len);
    iovector_init(&v);
    iovector_add(&v, hdr, sizeof(hdr));
    if (wiov) {
        iovector_concat(&v, wiov, wniov, 0, r->len);
    }
    co_mutex_lock(&s->send_lock);
    ok = nbd_transfer(s, r->gen, v.iov, v.niov, true);
    co_mutex_unlock(&s->send_lock);
    iovector_destroy(&v);
    return ok;
}

/* One round trip of @q in the home context, sent again after a
 * reconnection while reconnect-delay allows. */
static bool changes_data(const NbdReq *q)
{
    return q->type == NBD_CMD_WRITE || q->type == NBD_CMD_WRITE_ZEROES ||
           q->type == NBD_CMD_TRIM;
}

static int coroutine_fn request_loop(NbdState *s, NbdReq *q, struct iovec *wiov, int wniov);

static int coroutine_fn request_at_home(NbdState *s, NbdReq *q, struct iovec *wiov, int wniov)
{
    int ret;

    if (!changes_data(q)) {
        return request_loop(s, q, wiov, wniov);
    }
    /* A write invalidates the extent cache when it starts and when it
     * ends: a status asked meanwhile may show either side of it. */
    s->writes_seen++;
    ret = request_loop(s, q, wiov, wniov);
    s->writes_seen++;
    return ret;
}

static int coroutine_fn request_loop(NbdState *s, NbdReq *q, struct iovec *wiov, int wniov)
{
    /* reconnect-delay counts from the request's first lost attempt: a
     * server that breaks every connection does not keep it forever. */
    int64_t give_up = INT64_MAX;

    for (;;) {
        int ret = ensure_connected(s, give_up);
        NbdReq *r = NULL;
        bool lost;

        if (ret < 0) {
            return ret;
        }
        if (s->in_flight == NBD_MAX_REQS) {
            co_queue_wait_unlocked(&s->free_slot);
            continue;
        }
        for (int i = 0; !r; i++) {
            r = s->reqs[i].in_use ? NULL : &s->reqs[i];
        }
        *r = *q;
        r->in_use = true;
        r->gen = s->gen;
        /* A retry starts afresh: nothing of the lost attempt counts. */
        r->done = r->lost = false;
        r->ret = 0;
        r->got_extent = false;
        s->in_flight++;
        if (send_request(s, r, wiov, wniov)) {
            nbd_wait_reply(s, r);
        } else {
            r->lost = true;
        }
        lost = r->lost;
        q->ret = r->ret;
        q->got_extent = r->got_extent;
        q->extent_len = r->extent_len;
        q->extent_flags = r->extent_flags;
        r->in_use = false;
        s->in_flight--;
        co_queue_next(&s->free_slot);
        if (!lost) {
            return q->ret;
        }
        if (give_up == INT64_MAX) {
            give_up = clock_now_ns() + s->reconnect_ns;
        }
        if (clock_now_ns() >= give_up) {
            return -EIO;
        }
    }
}

/* Move the calling request to the node's home context (where the
 * connection lives); returns the context to come back to. */
static AioContext *coroutine_fn go_home(BlockDriverState *bs)
{
    AioContext *caller = current_aio_context();

    if (caller != bs->ctx) {
        aio_co_reschedule_self(bs->ctx);
    }
    return caller;
}

static void coroutine_fn come_back(AioContext *caller)
{
    if (caller != current_aio_context()) {
        aio_co_reschedule_self(caller);
    }
}

static int coroutine_fn nbd_request(BlockDriverState *bs, NbdReq *q, struct iovec *wiov,
                                    int wniov)
{
    AioContext *caller = go_home(bs);
    int ret = request_at_home(bs->opaque, q, wiov, wniov);

    come_back(caller);
    return ret;
}

static int coroutine_fn nbd_simple_cmd(BlockDriverState *bs, uint16_t type, uint16_t flags,
                                       int64_t offset, int64_t bytes)
{
    NbdReq q = { .type = type, .flags = flags, .offset = (uint64_t)offset,
                 .len = (uint32_t)bytes };

    return nbd_request(bs, &q, NULL, 0);
}

static int coroutine_fn nbd_co_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                      struct iovec *iov, int niov, int flags) GRAPH_RDLOCK
{
    NbdReq q = { .type = NBD_CMD_READ, .offset = (uint64_t)offset, .len = (uint32_t)bytes,
                 .iov = iov, .niov = niov };

    (void)flags;
    return bytes ? nbd_request(bs, &q, NULL, 0) : 0;
}

static int coroutine_fn nbd_co_flush(BlockDriverState *bs) GRAPH_RDLOCK
{
    NbdState *s = bs->opaque;

    if (!(s->info.flags & NBD_FLAG_SEND_FLUSH)) {
        return 0;
    }
    return nbd_simple_cmd(bs, NBD_CMD_FLUSH, 0, 0, 0);
}

static int coroutine_fn nbd_co_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                       struct iovec *iov, int niov, int flags) GRAPH_RDLOCK
{
    NbdState *s = bs->opaque;
    bool fua = (flags & BDRV_REQ_FUA) && (s->info.flags & NBD_FLAG_SEND_FUA);
    NbdReq q = { .type = NBD_CMD_WRITE, .offset = (uint64_t)offset, .len = (uint32_t)bytes,
                 .flags = fua ? NBD_CMD_FLAG_FUA : 0 };
    int ret = bytes ? nbd_request(bs, &q, iov, niov) : 0;

    if (ret == 0 && (flags & BDRV_REQ_FUA) && !fua) {
        ret = nbd_co_flush(bs);
    }
    return ret;
}

static int coroutine_fn nbd_co_pwrite_zeroes(BlockDriverState *bs, int64_t offset,
                                             int64_t bytes, int flags) GRAPH_RDLOCK
{
    NbdState *s = bs->opaque;
    uint16_t cmd_flags = 0;
    int ret = 0;

    if (!(s->info.flags & NBD_FLAG_SEND_WRITE_ZEROES)) {
        return -ENOTSUP;
    }
    if (flags & BDRV_REQ_NO_FALLBACK) {
        if (!(s->info.flags & NBD_FLAG_SEND_FAST_ZERO)) {
            return -ENOTSUP;
        }
        cmd_flags |= NBD_CMD_FLAG_FAST_ZERO;
    }
    cmd_flags |= flags & BDRV_REQ_MAY_UNMAP ? 0 : NBD_CMD_FLAG_NO_HOLE;
    cmd_flags |= (flags & BDRV_REQ_FUA) && (s->info.flags & NBD_FLAG_SEND_FUA)
                 ? NBD_CMD_FLAG_FUA : 0;
    while (bytes > 0 && ret == 0) {
        int64_t n = bytes < NBD_MAX_CMD_LEN ? bytes : NBD_MAX_CMD_LEN;

        ret = nbd_simple_cmd(bs, NBD_CMD_WRITE_ZEROES, cmd_flags, offset, n);
        offset += n;
        bytes -= n;
    }
    if (ret == 0 && (flags & BDRV_REQ_FUA) && !(cmd_flags & NBD_CMD_FLAG_FUA)) {
        ret = nbd_co_flush(bs);
    }
    return ret;
}

static int coroutine_fn nbd_co_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes)
    GRAPH_RDLOCK
{
    NbdState *s = bs->opaque;
    int ret = 0;

    if (!(s->info.flags & NBD_FLAG_SEND_TRIM)) {
        return 0;               /* discarding is advisory */
    }
    while (bytes > 0 && ret == 0) {
        int64_t n = bytes < NBD_MAX_CMD_LEN ? bytes : NBD_MAX_CMD_LEN;

        ret = nbd_simple_cmd(bs, NBD_CMD_TRIM, 0, offset, n);
        offset += n;
        bytes -= n;
    }
    return ret;
}

static int extent_status(uint32_t flags)
{
    if (flags & NBD_STATE_HOLE) {
        return flags & NBD_STATE_ZERO ? BDRV_BLOCK_ZERO : 0;
    }
    return BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED | (flags & NBD_STATE_ZERO ? BDRV_BLOCK_ZERO : 0);
}

/* Ask about everything from @offset (up to NBD_MAX_CMD_LEN): the server
 * answers with the first extent only, as long as it runs, and a copy
 * walking the disk asks again only where the status changes. */
static int coroutine_fn query_extent(BlockDriverState *bs, int64_t offset)
{
    NbdState *s = bs->opaque;
    uint64_t left = s->info.size - (uint64_t)offset;
    NbdReq q = { .type = NBD_CMD_BLOCK_STATUS, .flags = NBD_CMD_FLAG_REQ_ONE,
                 .offset = (uint64_t)offset,
                 .len = (uint32_t)(left < NBD_MAX_CMD_LEN ? left : NBD_MAX_CMD_LEN) };
    unsigned writes = s->writes_seen;
    int ret;

    ret = request_at_home(s, &q, NULL, 0);
    if (ret < 0) {
        return ret;
    }
    s->extent_off = (uint64_t)offset;
    s->extent_len = q.extent_len < q.len ? q.extent_len : q.len;
    s->extent_flags = q.extent_flags;
    /* Kept only if no write started or ended while the question was out. */
    s->extent_valid = writes == s->writes_seen;
    s->extent_seen = writes;
    return 0;
}

static bool extent_cached(NbdState *s, int64_t offset)
{
    return s->extent_valid && s->extent_seen == s->writes_seen &&
           (uint64_t)offset >= s->extent_off &&
           (uint64_t)offset - s->extent_off < s->extent_len;
}

static int coroutine_fn status_at_home(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                       int64_t *pnum)
{
    NbdState *s = bs->opaque;
    uint64_t end;
    int ret;

    if (!extent_cached(s, offset)) {
        ret = query_extent(bs, offset);
        if (ret < 0) {
            return ret;
        }
    }
    end = s->extent_off + s->extent_len;
    *pnum = end - (uint64_t)offset < (uint64_t)bytes ? (int64_t)(end - (uint64_t)offset) : bytes;
    return extent_status(s->extent_flags);
}

static int coroutine_fn nbd_co_block_status(BlockDriverState *bs, int64_t offset,
                                            int64_t bytes, int64_t *pnum) GRAPH_RDLOCK
{
    NbdState *s = bs->opaque;
    AioContext *caller;
    int ret;

    *pnum = bytes;
    if (!s->info.context_id) {
        return BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED;  /* the server cannot tell */
    }
    caller = go_home(bs);
    ret = status_at_home(bs, offset, bytes, pnum);
    come_back(caller);
    return ret;
}

static int coroutine_fn nbd_co_truncate(BlockDriverState *bs, int64_t size, Error **errp)
    GRAPH_RDLOCK
{
    NbdState *s = bs->opaque;

    if ((uint64_t)size > s->info.size) {
        error_setg(errp, "Cannot grow NBD nodes");
        return -EINVAL;
    }
    if ((uint64_t)size != s->info.size) {
        error_setg(errp, "Cannot resize NBD nodes");
        return -ENOTSUP;
    }
    return 0;
}

/* ---- Open and close --------------------------------------------------- */

static bool parse_server(NbdState *s, json_object *options, Error **errp)
{
    json_object *srv;
    const char *type = NULL, *path = NULL, *host = NULL, *port = NULL;

    if (!json_object_object_get_ex(options, "server", &srv) ||
        !json_object_is_type(srv, json_type_object)) {
        error_setg(errp, "Parameter 'server' is missing");
        return false;
    }
    if (!opt_get_str(srv, "type", &type, errp) || !opt_get_str(srv, "path", &path, errp) ||
        !opt_get_str(srv, "host", &host, errp) || !opt_get_str(srv, "port", &port, errp)) {
        return false;
    }
    if (type && strcmp(type, "unix") == 0 && path) {
        s->target.path = strdup(path);
    } else if (type && strcmp(type, "inet") == 0 && host && port) {
        s->target.host = strdup(host);
        s->target.port = strdup(port);
    } else {
        error_setg(errp, "Parameter 'server' must be a unix or inet socket address");
        return false;
    }
    return true;
}

static bool parse_options(NbdState *s, json_object *options, Error **errp)
{
    const char *export = NULL, *bitmap = NULL, *tls = NULL, *tls_host = NULL;
    int64_t delay = 0;

    if (!parse_server(s, options, errp) || !opt_get_str(options, "export", &export, errp) ||
        !opt_get_str(options, "x-dirty-bitmap", &bitmap, errp) ||
        !opt_get_str(options, "tls-creds", &tls, errp) ||
        !opt_get_str(options, "tls-hostname", &tls_host, errp) ||
        !opt_get_int(options, "reconnect-delay", &delay, errp)) {
        return false;
    }
    if (tls_host && !tls) {
        error_setg(errp, "tls-hostname is set but tls-creds is not set");
        return false;
    }
    if (tls && !(s->target.tls = tls_creds_lookup(tls, false, errp))) {
        return false;
    }
    /* The server's certificate must name the host we connect to (as in
     * QEMU, no name is checked over a unix socket unless one is given). */
    if (tls && (tls_host || s->target.host)) {
        s->target.tls_hostname = strdup(tls_host ? tls_host : s->target.host);
    }
    if (delay < 0 || delay > UINT32_MAX) {
        error_setg(errp, "Parameter 'reconnect-delay' expects uint32_t");
        return false;
    }
    s->target.export = export ? strdup(export) : NULL;
    s->target.bitmap = bitmap ? strdup(bitmap) : NULL;
    s->reconnect_ns = delay * 1000000000LL;
    return true;
}

/* QEMU's form: nbd+unix:///EXPORT?socket=PATH or nbd://HOST:PORT/EXPORT. */
static char *make_filename(const NbdTarget *t)
{
    char *name = NULL;
    int n;

    if (t->path) {
        n = asprintf(&name, "nbd+unix://%s%s?socket=%s", t->export ? "/" : "",
                     t->export ? t->export : "", t->path);
    } else {
        n = asprintf(&name, "nbd://%s:%s%s%s", t->host, t->port, t->export ? "/" : "",
                     t->export ? t->export : "");
    }
    return n < 0 ? NULL : name;
}

/* Connect, retrying for up to @timeout_s seconds (open-timeout). */
static int open_connection(NbdState *s, int64_t timeout_s, Error **errp)
{
    int64_t deadline = clock_now_ns() + timeout_s * 1000000000LL;

    for (;;) {
        Error *err = NULL;
        int fd = nbd_connect_export(&s->target, &s->info, &s->tls, &err);

        if (fd >= 0 || clock_now_ns() >= deadline) {
            error_propagate(errp, err);
            return fd;
        }
        error_free(err);
        usleep(NBD_OPEN_RETRY_US);
    }
}

static void free_state(NbdState *s)
{
    tls_session_free(s->tls);
    s->tls = NULL;
    if (s->fd >= 0) {
        close(s->fd);
        s->fd = -1;
    }
    if (s->target.tls) {
        tls_creds_unref(s->target.tls);
    }
    free(s->target.tls_hostname);
    free(s->target.path);
    free(s->target.host);
    free(s->target.port);
    free(s->target.export);
    free(s->target.bitmap);
    free(s->filename);
    memset(&s->target, 0, sizeof(s->target));
    s->filename = NULL;
}

static int open_node(BlockDriverState *bs, json_object *options, int flags, Error **errp)
{
    NbdState *s = bs->opaque;
    int64_t open_timeout = 0;
    uint32_t align;

    s->bs = bs;
    s->fd = -1;
    co_queue_init(&s->connect_wait);
    co_queue_init(&s->free_slot);
    co_mutex_init(&s->send_lock);
    if (!parse_options(s, options, errp) ||
        !opt_get_int(options, "open-timeout", &open_timeout, errp)) {
        return -1;
    }
    if (open_timeout < 0 || open_timeout > UINT32_MAX) {
        error_setg(errp, "Parameter 'open-timeout' expects uint32_t");
        return -1;
    }
    s->filename = make_filename(&s->target);
    s->fd = open_connection(s, open_timeout, errp);
    if (s->fd < 0) {
        return -1;
    }
    if ((s->info.flags & NBD_FLAG_READ_ONLY) && (flags & BDRV_O_RDWR)) {
        if (!(flags & BDRV_O_AUTO_RDONLY)) {
            error_setg(errp, "NBD export is read-only");
            return -1;
        }
        bs->read_only = true;
        bs->open_flags &= ~BDRV_O_RDWR;
    }
    if (!set_nonblocking(s->fd)) {
        error_setg_errno(errp, errno, "Failed to make the NBD socket non-blocking");
        return -1;
    }
    align = s->info.min_block;
    bs->total_bytes = (int64_t)s->info.size;
    bs->bl.request_alignment = align;
    bs->bl.max_transfer = s->info.max_block / align * align;
    return 0;
}

static int nbd_open(BlockDriverState *bs, json_object *options, int flags, Error **errp)
{
    int ret = open_node(bs, options, flags, errp);

    if (ret < 0) {
        free_state(bs->opaque);     /* no close after a failed open */
    }
    return ret;
}

static void nbd_close(BlockDriverState *bs)
{
    NbdState *s = bs->opaque;

    GLOBAL_STATE_CODE();
    if (s->fd >= 0) {
        /* Drained: nothing in flight.  Say goodbye, best effort. */
        uint8_t hdr[28] = { 0 };

        nbd_put32(hdr, NBD_REQUEST_MAGIC);
        nbd_put16(hdr + 6, NBD_CMD_DISC);
        /* (Through the TLS session if there is one: no plain bytes there.) */
        if ((s->tls ? tls_session_write(s->tls, hdr, sizeof(hdr))
                    : send(s->fd, hdr, sizeof(hdr), MSG_NOSIGNAL | MSG_DONTWAIT)) < 0) {
            log_msg(LOG_LEVEL_DEBUG, "nbd node '%s': disconnect: %s", bs->node_name,
                    strerror(errno));
        }
        shutdown(s->fd, SHUT_RDWR);
    }
    free_state(s);
}

static const char *nbd_filename(BlockDriverState *bs)
{
    NbdState *s = bs->opaque;

    return s->filename;
}

/* The server does not say how much the image takes on its storage. */
static int64_t nbd_allocated_size(BlockDriverState *bs)
{
    (void)bs;
    return -ENOTSUP;
}

const BlockDriver bdrv_nbd = {
    .format_name = "nbd",
    .instance_size = sizeof(NbdState),
    .is_protocol = true,
    .bdrv_open = nbd_open,
    .bdrv_close = nbd_close,
    .bdrv_filename = nbd_filename,
    .bdrv_get_allocated_file_size = nbd_allocated_size,
    .bdrv_co_preadv = nbd_co_preadv,
    .bdrv_co_pwritev = nbd_co_pwritev,
    .bdrv_co_flush = nbd_co_flush,
    .bdrv_co_pdiscard = nbd_co_pdiscard,
    .bdrv_co_pwrite_zeroes = nbd_co_pwrite_zeroes,
    .bdrv_co_block_status = nbd_co_block_status,
    .bdrv_co_truncate = nbd_co_truncate,
    .supported_write_flags = BDRV_REQ_FUA,
    .supported_zero_flags = BDRV_REQ_FUA | BDRV_REQ_MAY_UNMAP | BDRV_REQ_NO_FALLBACK,
};
