/*
 * nbd-server.c - the NBD listening socket (nbd-server-start / --nbd-server).
 */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "blockd/log.h"
#include "blockd/main-loop.h"
#include "blockd/sockets.h"
#include "nbd-internal.h"

static int listen_fds[8];
static int num_listen_fds;
static char *unix_path;
static int max_connections;

static void server_accept(void *opaque)
{
    int lfd = (int)(intptr_t)opaque;
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

    if (fd < 0) {
        return;
    }
    if (max_connections > 0 && nbd_client_count() >= max_connections) {
        close(fd);     /* over the limit: refuse politely by hanging up */
        return;
    }
    nbd_client_new(fd);
}

static const char *str_member(json_object *o, const char *key)
{
    json_object *v;
    return json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string)
           ? json_object_get_string(v) : NULL;
}

static bool listen_unix(const char *path, Error **errp)
{
    int fd = socket_listen_unix(path, 128, errp);

    if (fd < 0) {
        return false;
    }
    listen_fds[num_listen_fds++] = fd;
    unix_path = strdup(path);
    return true;
}

static bool listen_inet(const char *host, const char *port, Error **errp)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_PASSIVE };
    struct addrinfo *res;
    int err, one = 1;

    err = getaddrinfo(host && *host ? host : NULL, port, &hints, &res);
    if (err) {
        error_setg(errp, "address resolution failed for %s:%s: %s",
                   host ? host : "", port, gai_strerror(err));
        return false;
    }
    for (struct addrinfo *ai = res; ai && num_listen_fds < 8; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0) {
            continue;
        }
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (ai->ai_family == AF_INET6) {
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
        }
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 128) == 0) {
            listen_fds[num_listen_fds++] = fd;
        } else {
            close(fd);
        }
    }
    freeaddrinfo(res);
    if (num_listen_fds == 0) {
        error_setg_errno(errp, errno, "Failed to bind socket to %s:%s",
                         host ? host : "", port);
        return false;
    }
    return true;
}

bool nbd_server_running(void)
{
    return num_listen_fds > 0;
}

bool nbd_server_start(json_object *addr, int max_conn, Error **errp)
{
    json_object *data;
    const char *type;
    bool ok;

    GLOBAL_STATE_CODE();
    if (nbd_server_running()) {
        error_setg(errp, "NBD server already running");
        return false;
    }
    /* QMP's legacy form nests the address under "data". */
    if (json_object_object_get_ex(addr, "data", &data)) {
        type = str_member(addr, "type");
        addr = data;
    } else {
        type = str_member(addr, "type");
    }
    if (type && strcmp(type, "unix") == 0) {
        ok = listen_unix(str_member(addr, "path"), errp);
    } else if (type && strcmp(type, "inet") == 0) {
        ok = listen_inet(str_member(addr, "host"), str_member(addr, "port"), errp);
    } else {
        error_setg(errp, "Parameter 'type' does not accept value '%s'", type ? type : "");
        ok = false;
    }
    if (!ok) {
        return false;
    }
    max_connections = max_conn;
    for (int i = 0; i < num_listen_fds; i++) {
        aio_set_fd_handler(main_aio_context(), listen_fds[i], server_accept, NULL, NULL,
                           (void *)(intptr_t)listen_fds[i]);
    }
    return true;
}

bool nbd_server_stop(Error **errp)
{
    GLOBAL_STATE_CODE();
    if (!nbd_server_running()) {
        error_setg(errp, "NBD server not running");
        return false;
    }
    for (int i = 0; i < num_listen_fds; i++) {
        aio_set_fd_handler(main_aio_context(), listen_fds[i], NULL, NULL, NULL, NULL);
        close(listen_fds[i]);
    }
    num_listen_fds = 0;
    if (unix_path) {
        unlink(unix_path);
        free(unix_path);
        unix_path = NULL;
    }
    /* As in QEMU, the NBD exports go too (BLOCK_EXPORT_DELETED each, once
     * their connections are gone); then connections still haggling. */
    blk_exp_close_all();
    nbd_clients_shutdown_all();
    return true;
}
