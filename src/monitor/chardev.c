/*
 * chardev.c - server sockets for monitors.
 */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "blockd/chardev.h"
#include "blockd/list.h"
#include "blockd/main-loop.h"
#include "blockd/options.h"

struct Chardev {
    char *id;
    char *path;                 /* unix socket to unlink, or NULL */
    int listen_fd;
    bool connected;
    ChardevConnectFn *connect_fn;
    void *opaque;
    ListNode node;
};

static ListNode chardevs = LIST_INIT_STATIC(chardevs);

Chardev *chardev_find(const char *id)
{
    GLOBAL_STATE_CODE();
    list_for_each(n, &chardevs) {
        Chardev *chr = list_entry(n, Chardev, node);
        if (strcmp(chr->id, id) == 0) {
            return chr;
        }
    }
    return NULL;
}

const char *chardev_id(Chardev *chr)
{
    return chr->id;
}

static int listen_unix(const char *path, Error **errp)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int fd;

    if (strlen(path) >= sizeof(sa.sun_path)) {
        error_setg(errp, "UNIX socket path '%s' is too long", path);
        return -1;
    }
    strcpy(sa.sun_path, path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        error_setg_errno(errp, errno, "Failed to create socket");
        return -1;
    }
    unlink(path);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        error_setg_errno(errp, errno, "Failed to bind socket to %s", path);
        close(fd);
        return -1;
    }
    if (listen(fd, 16) < 0) {
        error_setg_errno(errp, errno, "Failed to listen on socket");
        close(fd);
        unlink(path);
        return -1;
    }
    return fd;
}

static int listen_inet(const char *host, const char *port, Error **errp)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_PASSIVE };
    struct addrinfo *res, *ai;
    int fd = -1, err, one = 1;

    err = getaddrinfo(host && *host ? host : NULL, port, &hints, &res);
    if (err) {
        error_setg(errp, "address resolution failed for %s:%s: %s",
                   host ? host : "", port, gai_strerror(err));
        return -1;
    }
    for (ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0) {
            continue;
        }
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 16) == 0) {
            break;
        }
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        error_setg_errno(errp, errno, "Failed to listen on %s:%s", host ? host : "", port);
    }
    return fd;
}

static const char *str_opt(json_object *o, const char *key)
{
    json_object *v;
    return json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string)
           ? json_object_get_string(v) : NULL;
}

Chardev *chardev_new(json_object *options, Error **errp)
{
    const char *id = str_opt(options, "id"), *backend = str_opt(options, "backend");
    const char *path = str_opt(options, "path"), *host = str_opt(options, "host");
    const char *port = str_opt(options, "port");
    bool server = false, wait = true;
    Chardev *chr;
    int fd;

    GLOBAL_STATE_CODE();
    if (!opt_get_bool(options, "server", &server, errp) ||
        !opt_get_bool(options, "wait", &wait, errp)) {
        return NULL;
    }
    if (!id) {
        error_setg(errp, "Parameter 'id' is missing");
        return NULL;
    }
    if (chardev_find(id)) {
        error_setg(errp, "attempt to add duplicate property '%s' to object (type 'container')", id);
        return NULL;
    }
    if (!backend || strcmp(backend, "socket") != 0) {
        error_setg(errp, "chardev backend '%s' is not supported (only 'socket')",
                   backend ? backend : "");
        return NULL;
    }
    if (!server) {
        error_setg(errp, "chardev '%s': only server=on sockets are supported", id);
        return NULL;
    }
    if (wait) {
        error_setg(errp, "chardev '%s': wait=on is not supported, use wait=off", id);
        return NULL;
    }
    if (path && (host || port)) {
        error_setg(errp, "chardev: socket: 'path' and 'host'/'port' are mutually exclusive");
        return NULL;
    }
    if (path) {
        fd = listen_unix(path, errp);
    } else if (port) {
        fd = listen_inet(host, port, errp);
    } else {
        error_setg(errp, "chardev: socket: no host or path given");
        return NULL;
    }
    if (fd < 0) {
        return NULL;
    }
    chr = calloc(1, sizeof(*chr));
    if (!chr) {
        abort();
    }
    chr->id = strdup(id);
    chr->path = path ? strdup(path) : NULL;
    chr->listen_fd = fd;
    list_add_tail(&chardevs, &chr->node);
    return chr;
}

static void chardev_accept(void *opaque)
{
    Chardev *chr = opaque;
    int fd = accept4(chr->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

    if (fd < 0) {
        return;     /* EAGAIN or a client that gave up: nothing to do */
    }
    chr->connected = true;
    /* One client at a time: stop accepting until this one leaves. */
    aio_set_fd_handler(iohandler_aio_context(), chr->listen_fd, NULL, NULL, NULL, NULL);
    chr->connect_fn(chr, fd, chr->opaque);
}

bool chardev_set_handler(Chardev *chr, ChardevConnectFn *fn, void *opaque, Error **errp)
{
    GLOBAL_STATE_CODE();
    if (chr->connect_fn) {
        error_setg(errp, "Chardev '%s' is busy", chr->id);
        return false;
    }
    chr->connect_fn = fn;
    chr->opaque = opaque;
    aio_set_fd_handler(iohandler_aio_context(), chr->listen_fd, chardev_accept, NULL,
                       NULL, chr);
    return true;
}

void chardev_client_closed(Chardev *chr)
{
    GLOBAL_STATE_CODE();
    chr->connected = false;
    if (chr->connect_fn) {
        aio_set_fd_handler(iohandler_aio_context(), chr->listen_fd, chardev_accept, NULL,
                           NULL, chr);
    }
}

void chardev_free(Chardev *chr)
{
    GLOBAL_STATE_CODE();
    aio_set_fd_handler(iohandler_aio_context(), chr->listen_fd, NULL, NULL, NULL, NULL);
    close(chr->listen_fd);
    if (chr->path) {
        unlink(chr->path);
    }
    list_del(&chr->node);
    free(chr->id);
    free(chr->path);
    free(chr);
}

void chardev_free_all(void)
{
    while (!list_empty(&chardevs)) {
        chardev_free(list_entry(chardevs.next, Chardev, node));
    }
}
