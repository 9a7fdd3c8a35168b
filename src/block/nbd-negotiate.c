/*
 * nbd-negotiate.c - the client side of the NBD handshake (the protocol's
 * doc/proto.md, "Fixed newstyle negotiation"): structured replies, one
 * meta context for block status, then NBD_OPT_GO with the block sizes.
 * Blocking calls on a socket whose timeouts bound every step, so a silent
 * server costs a bounded wait, never a hang.  Errors use QEMU's words.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "blockd/log.h"
#include "blockd/nbd-proto.h"
#include "blockd/sockets.h"
#include "nbd-driver.h"

#define NBD_OLDSTYLE_MAGIC 0x00420281861253ULL

/* The connection during the haggling: the socket, and once STARTTLS is
 * done its TLS session. */
typedef struct Conn {
    int fd;
    TlsSession *tls;
} Conn;

/* A TLS call asked to wait (@want: TLS_WANT_*): wait for the socket, at
 * most the connection timeout. */
static bool tls_poll(Conn *c, int want, Error **errp)
{
    struct pollfd p = { c->fd, want == TLS_WANT_WRITE ? POLLOUT : POLLIN, 0 };
    int r;

    do {
        r = poll(&p, 1, NBD_CONNECT_TIMEOUT_S * 1000);
    } while (r < 0 && errno == EINTR);
    if (r <= 0) {
        error_setg(errp, "Timed out waiting for the NBD server");
        return false;
    }
    return true;
}

/* Bytes from the socket or the session: > 0, 0 at end of file, -1 with
 * errno or @errp set. */
static ssize_t conn_read(Conn *c, void *buf, size_t len, Error **errp)
{
    for (;;) {
        ssize_t n;

        if (!c->tls) {
            return read(c->fd, buf, len);
        }
        n = tls_session_read(c->tls, buf, len);
        if (n != TLS_WANT_READ && n != TLS_WANT_WRITE) {
            errno = EIO;
            return n;
        }
        if (!tls_poll(c, (int)n, errp)) {
            return -1;
        }
    }
}

static ssize_t conn_write(Conn *c, const void *buf, size_t len, Error **errp)
{
    for (;;) {
        ssize_t n;

        if (!c->tls) {
            return send(c->fd, buf, len, MSG_NOSIGNAL);
        }
        n = tls_session_write(c->tls, buf, len);
        if (n != TLS_WANT_READ && n != TLS_WANT_WRITE) {
            errno = EIO;
            return n;
        }
        if (!tls_poll(c, (int)n, errp)) {
            return -1;
        }
    }
}

static bool read_full(Conn *c, void *buf, size_t len, const char *what, Error **errp)
{
    uint8_t *p = buf;

    while (len) {
        ssize_t n = conn_read(c, p, len, errp);

        if (n < 0 && errp && *errp) {
            return false;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            error_setg_errno(errp, errno, "Failed to read %s", what);
            return false;
        }
        if (n == 0) {
            error_setg(errp, "Failed to read %s: Unexpected end-of-file before all "
                       "data were read", what);
            return false;
        }
        p += n;
        len -= (size_t)n;
    }
    return true;
}

static bool write_full(Conn *c, const void *buf, size_t len, Error **errp)
{
    const uint8_t *p = buf;

    while (len) {
        ssize_t n = conn_write(c, p, len, errp);

        if (n < 0 && errp && *errp) {
            return false;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            error_setg_errno(errp, errno, "Failed to write to the NBD server");
            return false;
        }
        p += n;
        len -= (size_t)n;
    }
    return true;
}

static const char *opt_name(uint32_t opt)
{
    switch (opt) {
    case NBD_OPT_GO: return "go";
    case NBD_OPT_STRUCTURED_REPLY: return "structured reply";
    case NBD_OPT_SET_META_CONTEXT: return "set meta context";
    default: return "unknown";
    }
}

static bool send_option(Conn *c, uint32_t opt, const void *data, uint32_t len, Error **errp)
{
    uint8_t hdr[16];

    nbd_put64(hdr, NBD_OPTS_MAGIC);
    nbd_put32(hdr + 8, opt);
    nbd_put32(hdr + 12, len);
    return write_full(c, hdr, sizeof(hdr), errp) && write_full(c, data, len, errp);
}

typedef struct OptReply {
    uint32_t type;
    uint32_t len;
    uint8_t *data;              /* len bytes (malloc), NULL if none */
} OptReply;

/* One reply to option @opt; the payload is bounded, a wrong magic or an
 * answer to another option is a protocol error. */
static bool read_reply(Conn *c, uint32_t opt, OptReply *r, Error **errp)
{
    uint8_t hdr[20];

    r->data = NULL;
    if (!read_full(c, hdr, sizeof(hdr), "option reply", errp)) {
        return false;
    }
    r->type = nbd_get32(hdr + 12);
    r->len = nbd_get32(hdr + 16);
    if (nbd_get64(hdr) != NBD_REP_MAGIC) {
        error_setg(errp, "Unexpected option reply magic");
        return false;
    }
    if (nbd_get32(hdr + 8) != opt) {
        error_setg(errp, "Unexpected option type %u in reply, expected %u (%s)",
                   nbd_get32(hdr + 8), opt, opt_name(opt));
        return false;
    }
    if (r->len > NBD_MAX_OPTION_LEN) {
        error_setg(errp, "server's reply to option %u (%s) is too long", opt, opt_name(opt));
        return false;
    }
    if (r->len) {
        r->data = malloc(r->len + 1);
        if (!read_full(c, r->data, r->len, "option reply payload", errp)) {
            free(r->data);
            r->data = NULL;
            return false;
        }
        r->data[r->len] = 0;
    }
    return true;
}

/* An error reply: QEMU's message; the server's own text goes to the log. */
static void reply_error(uint32_t opt, const OptReply *r, Error **errp)
{
    const char *name = opt_name(opt);

    if (r->len) {
        log_msg(LOG_LEVEL_WARN, "nbd: server reported: %s", (const char *)r->data);
    }
    switch (r->type) {
    case NBD_REP_ERR_UNSUP:
        error_setg(errp, "Unsupported option %u (%s)", opt, name);
        break;
    case NBD_REP_ERR_POLICY:
        error_setg(errp, "Denied by server for option %u (%s)", opt, name);
        break;
    case NBD_REP_ERR_INVALID:
        error_setg(errp, "Invalid parameters for option %u (%s)", opt, name);
        break;
    case NBD_REP_ERR_PLATFORM:
        error_setg(errp, "Server lacks support for option %u (%s)", opt, name);
        break;
    case NBD_REP_ERR_TLS_REQD:
        error_setg(errp, "TLS negotiation required before option %u (%s)", opt, name);
        break;
    case NBD_REP_ERR_UNKNOWN:
        error_setg(errp, "Requested export not available");
        break;
    case NBD_REP_ERR_SHUTDOWN:
        error_setg(errp, "Server shutting down before option %u (%s)", opt, name);
        break;
    case NBD_REP_ERR_BLOCK_SIZE_REQD:
        error_setg(errp, "Server requires INFO_BLOCK_SIZE for option %u (%s)", opt, name);
        break;
    default:
        error_setg(errp, "Unknown error code when asking for option %u (%s)", opt, name);
        break;
    }
}

static bool greeting(Conn *c, Error **errp)
{
    uint8_t buf[18];
    uint8_t flags[4];
    uint16_t server_flags;

    if (!read_full(c, buf, 16, "initial magic", errp)) {
        return false;
    }
    if (nbd_get64(buf) != NBD_MAGIC) {
        error_setg(errp, "Bad initial magic received from the NBD server");
        return false;
    }
    if (nbd_get64(buf + 8) == NBD_OLDSTYLE_MAGIC) {
        error_setg(errp, "The NBD server uses old-style negotiation, which blockd does not "
                   "support");
        return false;
    }
    if (nbd_get64(buf + 8) != NBD_OPTS_MAGIC) {
        error_setg(errp, "Bad server magic received from the NBD server");
        return false;
    }
    if (!read_full(c, buf, 2, "server flags", errp)) {
        return false;
    }
    server_flags = nbd_get16(buf);
    if (!(server_flags & NBD_FLAG_FIXED_NEWSTYLE)) {
        error_setg(errp, "The NBD server does not support fixed newstyle negotiation, "
                   "which blockd requires");
        return false;
    }
    nbd_put32(flags, NBD_FLAG_C_FIXED_NEWSTYLE |
                     (server_flags & NBD_FLAG_NO_ZEROES ? NBD_FLAG_C_NO_ZEROES : 0));
    return write_full(c, flags, sizeof(flags), errp);
}

/* Ask for structured replies: true if the server agreed. */
static bool structured_replies(Conn *c, bool *agreed, Error **errp)
{
    OptReply r;

    if (!send_option(c, NBD_OPT_STRUCTURED_REPLY, NULL, 0, errp) ||
        !read_reply(c, NBD_OPT_STRUCTURED_REPLY, &r, errp)) {
        return false;
    }
    free(r.data);
    *agreed = r.type == NBD_REP_ACK;
    if (!*agreed && !(r.type & (1U << 31))) {
        error_setg(errp, "Unexpected reply type %u to option %u (%s)", r.type,
                   NBD_OPT_STRUCTURED_REPLY, opt_name(NBD_OPT_STRUCTURED_REPLY));
        return false;
    }
    return true;
}

/* Put a length-prefixed string at @p; the bytes written. */
static size_t put_string(uint8_t *p, const char *s)
{
    size_t n = strlen(s);

    nbd_put32(p, (uint32_t)n);
    memcpy(p + 4, s, n);
    return 4 + n;
}

/* Select @context for @export: its id, or 0 if the server has none. */
static bool meta_context(Conn *c, const char *export, const char *context, uint32_t *id,
                         Error **errp)
{
    size_t elen = strlen(export), clen = strlen(context);
    uint8_t *buf = malloc(12 + elen + clen);
    size_t len = put_string(buf, export);
    OptReply r;
    bool ok;

    nbd_put32(buf + len, 1);
    len += 4;
    len += put_string(buf + len, context);
    ok = send_option(c, NBD_OPT_SET_META_CONTEXT, buf, (uint32_t)len, errp);
    free(buf);
    *id = 0;
    while (ok && read_reply(c, NBD_OPT_SET_META_CONTEXT, &r, errp)) {
        if (r.type == NBD_REP_META_CONTEXT && r.len > 4 &&
            r.len - 4 == clen && memcmp(r.data + 4, context, clen) == 0) {
            *id = nbd_get32(r.data);
        } else if (r.type == NBD_REP_META_CONTEXT) {
            error_setg(errp, "Unexpected meta context in the NBD server's reply");
            ok = false;
        }
        free(r.data);
        if (!ok || r.type != NBD_REP_META_CONTEXT) {
            /* An error reply means the same as no context: none. */
            return ok;
        }
    }
    return false;
}

static bool block_sizes_valid(uint32_t min, uint32_t pref, uint32_t max)
{
    bool pow2 = min && !(min & (min - 1)) && pref && !(pref & (pref - 1));

    return pow2 && min <= 64 * 1024 && pref >= min && pref <= 32 * 1024 * 1024 &&
           max >= min && (max == UINT32_MAX || max % min == 0);
}

static bool info_reply(const OptReply *r, NbdExportInfo *info, bool *got_export,
                       Error **errp)
{
    uint16_t type = r->len >= 2 ? nbd_get16(r->data) : 0xffff;

    if (type == NBD_INFO_EXPORT && r->len == 12) {
        info->size = nbd_get64(r->data + 2);
        info->flags = nbd_get16(r->data + 10);
        *got_export = true;
    } else if (type == NBD_INFO_BLOCK_SIZE && r->len == 14) {
        uint32_t min = nbd_get32(r->data + 2), pref = nbd_get32(r->data + 6);
        uint32_t max = nbd_get32(r->data + 10);

        if (!block_sizes_valid(min, pref, max)) {
            error_setg(errp, "The NBD server sent invalid block sizes (%u, %u, %u)",
                       min, pref, max);
            return false;
        }
        info->min_block = min;
        info->max_block = max > NBD_MAX_BUFFER_SIZE ? NBD_MAX_BUFFER_SIZE : max;
    } else if (type == NBD_INFO_EXPORT || type == NBD_INFO_BLOCK_SIZE || r->len < 2) {
        error_setg(errp, "The NBD server sent an information reply of the wrong size");
        return false;
    }
    return true;                /* names and descriptions: not needed */
}

static bool go(Conn *c, const char *export, NbdExportInfo *info, Error **errp)
{
    size_t elen = strlen(export);
    uint8_t *buf = malloc(8 + elen);
    size_t len = put_string(buf, export);
    bool ok, got_export = false;
    OptReply r;

    nbd_put16(buf + len, 1);
    nbd_put16(buf + len + 2, NBD_INFO_BLOCK_SIZE);
    ok = send_option(c, NBD_OPT_GO, buf, (uint32_t)(len + 4), errp);
    free(buf);
    while (ok && read_reply(c, NBD_OPT_GO, &r, errp)) {
        if (r.type == NBD_REP_INFO) {
            ok = info_reply(&r, info, &got_export, errp);
        } else if (r.type == NBD_REP_ACK) {
            free(r.data);
            if (!got_export) {
                error_setg(errp, "The NBD server did not send the export's size");
                return false;
            }
            if (info->size > INT64_MAX || info->size % info->min_block) {
                error_setg(errp, "The NBD server's export size %llu is too large or not a "
                           "multiple of its minimum block size %u",
                           (unsigned long long)info->size, info->min_block);
                return false;
            }
            return true;
        } else if (r.type & (1U << 31)) {
            reply_error(NBD_OPT_GO, &r, errp);
            ok = false;
        } else {
            error_setg(errp, "Unexpected reply type %u to option %u (%s)", r.type,
                       NBD_OPT_GO, opt_name(NBD_OPT_GO));
            ok = false;
        }
        free(r.data);
    }
    return false;
}

static int connect_socket(const NbdTarget *t, Error **errp)
{
    if (t->path) {
        return socket_connect_unix(t->path, NBD_CONNECT_TIMEOUT_S, errp);
    }
    return socket_connect_inet(t->host, t->port, NBD_CONNECT_TIMEOUT_S, errp);
}

/* NBD_OPT_STARTTLS, then the TLS handshake on the blocking socket. */
static bool start_tls(Conn *c, const NbdTarget *t, Error **errp)
{
    OptReply r;
    int ret;

    if (!send_option(c, NBD_OPT_STARTTLS, NULL, 0, errp) ||
        !read_reply(c, NBD_OPT_STARTTLS, &r, errp)) {
        return false;
    }
    free(r.data);
    if (r.type != NBD_REP_ACK) {
        if (r.type & (1U << 31)) {
            reply_error(NBD_OPT_STARTTLS, &r, errp);
        } else {
            error_setg(errp, "Unexpected reply type %u to option %u (%s)", r.type,
                       NBD_OPT_STARTTLS, opt_name(NBD_OPT_STARTTLS));
        }
        return false;
    }
    c->tls = tls_session_new(t->tls, false, t->tls_hostname, c->fd, errp);
    while (c->tls && (ret = tls_session_handshake(c->tls, errp)) != 0) {
        if ((ret != TLS_WANT_READ && ret != TLS_WANT_WRITE) || !tls_poll(c, ret, errp)) {
            return false;
        }
    }
    return c->tls != NULL;
}

int nbd_connect_export(const NbdTarget *t, NbdExportInfo *info, TlsSession **tls,
                       Error **errp)
{
    const char *export = t->export ? t->export : "";
    /* x-dirty-bitmap names a whole context ("qemu:dirty-bitmap:NAME",
     * "qemu:allocation-depth"), whose bits block status then reports. */
    const char *context = t->bitmap ? t->bitmap : "base:allocation";
    Conn conn = { connect_socket(t, errp), NULL }, *c = &conn;

    *tls = NULL;
    if (c->fd < 0) {
        return -1;
    }
    *info = (NbdExportInfo){ .min_block = 1, .max_block = NBD_MAX_BUFFER_SIZE };
    if (!greeting(c, errp) || (t->tls && !start_tls(c, t, errp)) ||
        !structured_replies(c, &info->structured, errp)) {
        goto fail;
    }
    if (info->structured && !meta_context(c, export, context, &info->context_id, errp)) {
        goto fail;
    }
    if (t->bitmap && !info->context_id) {
        error_setg(errp, "requested x-dirty-bitmap %s not found", t->bitmap);
        goto fail;
    }
    if (!go(c, export, info, errp)) {
        goto fail;
    }
    *tls = c->tls;
    return c->fd;

fail:
    tls_session_free(c->tls);
    close(c->fd);
    return -1;
}
