/*
 * chardev-socket.c - the socket backend: a server on a unix path, a TCP
 * host/port or a listening descriptor passed at start (one client at a
 * time; the next waits in the backlog), or a client connection to one of
 * those.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "blockd/log.h"
#include "blockd/main-loop.h"
#include "blockd/options.h"
#include "blockd/sockets.h"
#include "chardev-internal.h"

static int unix_address(const char *path, struct sockaddr_un *sa, Error **errp)
{
    *sa = (struct sockaddr_un){ .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof(sa->sun_path)) {
        error_setg(errp, "UNIX socket path '%s' is too long", path);
        return -1;
    }
    strcpy(sa->sun_path, path);
    return 0;
}

static int socket_unix(const char *path, bool server, Error **errp)
{
    struct sockaddr_un sa;
    int fd;

    if (server) {
        return socket_listen_unix(path, 16, errp);
    }
    if (unix_address(path, &sa, errp) < 0) {
        return -1;
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        error_setg_errno(errp, errno, "Failed to create socket");
        return -1;
    }
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        error_setg_errno(errp, errno, "Failed to connect to '%s'", path);
        close(fd);
        return -1;
    }
    return fd;
}

static int socket_inet(const char *host, const char *port, bool server, Error **errp)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = server ? AI_PASSIVE : 0 };
    struct addrinfo *res, *ai;
    int fd = -1, err, one = 1, saved = 0;

    err = getaddrinfo(host && *host ? host : NULL, port, &hints, &res);
    if (err) {
        error_setg(errp, "address resolution failed for %s:%s: %s",
                   host ? host : "", port, gai_strerror(err));
        return -1;
    }
    for (ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            saved = errno;
            continue;
        }
        if (server) {
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
            if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 16) == 0) {
                break;
            }
        } else if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
            break;
        }
        saved = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        error_setg_errno(errp, saved, "Failed to %s %s:%s",
                         server ? "listen on" : "connect to", host ? host : "", port);
        return -1;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

/* fd=N: a descriptor passed at start (a listening socket for a server,
 * a connected one for a client). */
static int socket_fd(const char *str, bool server, Error **errp)
{
    char *end;
    long fd = strtol(str, &end, 10);
    int listening = 0, type = 0;
    socklen_t len = sizeof(int);

    if (*str == '\0' || *end != '\0' || fd < 0 || fd > 65535) {
        error_setg(errp, "File descriptor named '%s' has not been found", str);
        return -1;
    }
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_STREAM) {
        error_setg(errp, "File descriptor '%s' is not a stream socket", str);
        return -1;
    }
    len = sizeof(int);
    getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len);
    if (!!listening != server) {
        error_setg(errp, "File descriptor '%s' is %s socket, but server=%s",
                   str, listening ? "a listening" : "a connected", server ? "on" : "off");
        return -1;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    return fd;
}

static void set_nodelay(Chardev *chr, int fd)
{
    int one = 1;

    if (chr->nodelay) {
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));  /* ENOTSUP on unix */
    }
}

/* ---- TLS: the handshake of an accepted client, driven by the loop ---- */

static void tls_step(void *opaque);

static void tls_give_up(Chardev *chr, Error *err)
{
    info_report("chardev '%s': TLS %s: %s", chr->id,
                chr->server ? "client refused" : "connection to the server failed",
                err ? error_get_pretty(err) : "authorization denied");
    error_free(err);
    aio_set_fd_handler(iohandler_aio_context(), chr->hs_fd, NULL, NULL, NULL, NULL);
    tls_session_free(chr->tls);
    chr->tls = NULL;
    close(chr->hs_fd);
    chr->hs_fd = -1;
    chardev_socket_listen_again(chr);
}

static void tls_step(void *opaque)
{
    Chardev *chr = opaque;
    Error *err = NULL;
    int r = tls_session_handshake(chr->tls, &err), fd = chr->hs_fd;

    if (r == TLS_WANT_READ || r == TLS_WANT_WRITE) {
        aio_set_fd_handler(iohandler_aio_context(), fd, r == TLS_WANT_READ ? tls_step : NULL,
                           r == TLS_WANT_WRITE ? tls_step : NULL, NULL, chr);
        return;
    }
    if (r < 0 || (chr->tls_authz &&
                  !authz_is_allowed(chr->tls_authz, tls_session_peer_name(chr->tls), &err))) {
        tls_give_up(chr, err);
        return;
    }
    aio_set_fd_handler(iohandler_aio_context(), fd, NULL, NULL, NULL, NULL);
    chr->hs_fd = -1;
    chardev_session_open(chr, fd, fd, true);
}

/* Start the TLS handshake on @fd (a server's accepted client, or our own
 * connection to a server, checked against @hostname). */
static bool start_tls(Chardev *chr, int fd, bool server, const char *hostname, Error **errp)
{
    Error *err = NULL;

    chr->hs_fd = fd;
    chr->tls = tls_session_new(chr->tls_creds, server, hostname, fd, &err);
    if (!chr->tls) {
        if (errp) {
            error_propagate(errp, err);
            close(fd);
            chr->hs_fd = -1;
            return false;
        }
        tls_give_up(chr, err);
        return false;
    }
    tls_step(chr);
    return true;
}

static void socket_accept(void *opaque)
{
    Chardev *chr = opaque;
    int fd = accept4(chr->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

    if (fd < 0) {
        return;     /* EAGAIN or a client that gave up: nothing to do */
    }
    if (chr->open || chr->hs_fd >= 0) {
        close(fd);  /* (never: accepting is off meanwhile) */
        return;
    }
    /* One client at a time: stop accepting until this one leaves. */
    aio_set_fd_handler(iohandler_aio_context(), chr->listen_fd, NULL, NULL, NULL, NULL);
    set_nodelay(chr, fd);
    if (!chr->tls_creds) {
        chardev_session_open(chr, fd, fd, true);
        return;
    }
    start_tls(chr, fd, true, NULL, NULL);
}

void chardev_socket_listen_again(Chardev *chr)
{
    if (chr->listen_fd >= 0) {
        aio_set_fd_handler(iohandler_aio_context(), chr->listen_fd, socket_accept, NULL,
                           NULL, chr);
    }
}

/* wait=on: the first client is awaited before startup goes on. */
static void wait_for_client(Chardev *chr)
{
    struct pollfd pfd = { .fd = chr->listen_fd, .events = POLLIN };

    fprintf(stderr, "blockd: waiting for connection on %s\n", chr->address);
    while (!chr->open && !chr->tls) {
        if (poll(&pfd, 1, -1) > 0) {
            socket_accept(chr);
        } else if (errno != EINTR) {
            break;
        }
    }
    /* A TLS client's handshake then goes on in the main loop. */
}

bool chardev_socket_open(Chardev *chr, json_object *opts, Error **errp)
{
    const char *path = NULL, *host = NULL, *port = NULL, *fdstr = NULL, *tls = NULL;
    const char *authz = NULL;
    bool server = false, wait = true;       /* QEMU's defaults */
    int64_t reconnect = 0;
    int fd;

    if (!opt_get_str(opts, "path", &path, errp) ||
        !opt_get_str(opts, "host", &host, errp) ||
        !opt_get_str(opts, "port", &port, errp) ||
        !opt_get_str(opts, "fd", &fdstr, errp) ||
        !opt_get_bool(opts, "server", &server, errp) ||
        !opt_get_bool(opts, "wait", &wait, errp) ||
        !opt_get_bool(opts, "nodelay", &chr->nodelay, errp) ||
        !opt_get_int(opts, "reconnect", &reconnect, errp) ||
        !opt_get_str(opts, "tls-creds", &tls, errp) ||
        !opt_get_str(opts, "tls-authz", &authz, errp)) {
        return false;
    }
    chr->hs_fd = -1;
    if (authz && !tls) {
        error_setg(errp, "'tls-authz' provided but TLS is not enabled");
        return false;
    }
    if (reconnect) {
        error_setg(errp, "chardev: socket: 'reconnect' is not supported by blockd");
        return false;
    }
    if (!!path + !!(host || port) + !!fdstr != 1) {
        error_setg(errp, path || host || port || fdstr
                   ? "chardev: socket: 'path', 'host'/'port' and 'fd' are mutually exclusive"
                   : "chardev: socket: no host or path given");
        return false;
    }
    if ((host || port) && !port) {
        error_setg(errp, "chardev: socket: no port given");
        return false;
    }
    if (path) {
        fd = socket_unix(path, server, errp);
    } else if (port) {
        fd = socket_inet(host, port, server, errp);
    } else {
        fd = socket_fd(fdstr, server, errp);
    }
    if (fd < 0) {
        return false;
    }
    if (tls && !(chr->tls_creds = tls_creds_lookup(tls, server, errp))) {
        close(fd);
        if (path) {
            unlink(path);
        }
        return false;
    }
    chr->tls_authz = authz ? strdup(authz) : NULL;
    chr->server = server;
    if (path && asprintf(&chr->address, "unix:%s", path) < 0) {
        abort();
    } else if (port && asprintf(&chr->address, "tcp:%s:%s", host ? host : "", port) < 0) {
        abort();
    } else if (fdstr && asprintf(&chr->address, "fd:%s", fdstr) < 0) {
        abort();
    }
    if (!server) {
        set_nodelay(chr, fd);
        if (chr->tls_creds) {
            /* The server's certificate must name the host connected to. */
            return start_tls(chr, fd, false, host, errp);
        }
        chardev_session_open(chr, fd, fd, true);
        return true;
    }
    chr->listen_fd = fd;
    chr->unix_path = path ? strdup(path) : NULL;
    if (wait) {
        wait_for_client(chr);
    }
    chardev_socket_listen_again(chr);
    /* One client at a time: the one connected, or in its TLS handshake. */
    if (chr->open || chr->hs_fd >= 0) {
        aio_set_fd_handler(iohandler_aio_context(), chr->listen_fd, NULL, NULL, NULL, NULL);
    }
    return true;
}

void chardev_socket_free(Chardev *chr)
{
    if (chr->hs_fd >= 0) {
        aio_set_fd_handler(iohandler_aio_context(), chr->hs_fd, NULL, NULL, NULL, NULL);
        tls_session_free(chr->tls);
        chr->tls = NULL;
        close(chr->hs_fd);
        chr->hs_fd = -1;
    }
    if (chr->tls_creds) {
        tls_creds_unref(chr->tls_creds);
        chr->tls_creds = NULL;
    }
    free(chr->tls_authz);
    if (chr->listen_fd >= 0) {
        aio_set_fd_handler(iohandler_aio_context(), chr->listen_fd, NULL, NULL, NULL, NULL);
        close(chr->listen_fd);
        chr->listen_fd = -1;
    }
    if (chr->unix_path) {
        unlink(chr->unix_path);
    }
    free(chr->unix_path);
    free(chr->address);
}
