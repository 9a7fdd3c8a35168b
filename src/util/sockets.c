/*
 * sockets.c - listening sockets for the servers, connected ones for the
 * clients.
 */
#include <errno.h>
#include <string.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "blockd/sockets.h"

/* A unix stream socket (@flags: SOCK_NONBLOCK or 0) and the address of
 * @path in *@sa: the fd, or -1 with @errp set. */
static int unix_socket(const char *path, struct sockaddr_un *sa, int flags, Error **errp)
{
    int fd;

    *sa = (struct sockaddr_un){ .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof(sa->sun_path)) {
        error_setg(errp, "UNIX socket path '%s' is too long", path);
        return -1;
    }
    strcpy(sa->sun_path, path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | flags, 0);
    if (fd < 0) {
        error_setg_errno(errp, errno, "Failed to create socket");
    }
    return fd;
}

int socket_listen_unix(const char *path, int backlog, Error **errp)
{
    struct sockaddr_un sa;
    int fd = unix_socket(path, &sa, SOCK_NONBLOCK, errp);

    if (fd < 0) {
        return -1;
    }
    unlink(path);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        error_setg_errno(errp, errno, "Failed to bind socket to %s", path);
        close(fd);
        return -1;
    }
    if (listen(fd, backlog) < 0) {
        error_setg_errno(errp, errno, "Failed to listen on socket");
        close(fd);
        unlink(path);
        return -1;
    }
    return fd;
}

/* Bound each blocking call on @fd, connect() included (SO_SNDTIMEO). */
static void set_timeouts(int fd, int timeout_s)
{
    struct timeval tv = { .tv_sec = timeout_s };

    if (timeout_s > 0) {
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    }
}

int socket_connect_unix(const char *path, int timeout_s, Error **errp)
{
    struct sockaddr_un sa;
    int fd = unix_socket(path, &sa, 0, errp);

    if (fd < 0) {
        return -1;
    }
    set_timeouts(fd, timeout_s);
    while (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        if (errno != EINTR) {
            error_setg_errno(errp, errno, "Failed to connect to '%s'", path);
            close(fd);
            return -1;
        }
    }
    return fd;
}

int socket_connect_inet(const char *host, const char *port, int timeout_s, Error **errp)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
    struct addrinfo *res, *ai;
    int fd = -1, err, saved = ECONNREFUSED;

    err = getaddrinfo(host, port, &hints, &res);
    if (err) {
        error_setg(errp, "address resolution failed for %s:%s: %s", host, port,
                   gai_strerror(err));
        return -1;
    }
    for (ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            saved = errno;
            continue;
        }
        set_timeouts(fd, timeout_s);
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
            int one = 1;

            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            break;
        }
        saved = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        error_setg_errno(errp, saved, "Failed to connect to '%s:%s'", host, port);
    }
    return fd;
}
