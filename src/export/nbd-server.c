/*
 * nbd-server.c - the NBD listening socket (nbd-server-start / --nbd-server)
 * and the limits on what connects: max-connections (a new connection
 * replaces the oldest one still haggling, else it is hung up on), the
 * handshake deadline (nbd-client.c), and a pause of the listeners while
 * the process is out of file descriptors.
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
#include "blockd/thread.h"
#include "blockd/tls.h"
#include "nbd-internal.h"

static int listen_fds[8];
static int num_listen_fds;
static char *unix_path;
static NbdServerOptions limits;
/* TLS: the server's credentials (a reference) and authorization object. */
static TlsCreds *server_creds;
static char *server_authz;
/* Out of file descriptors: the listeners are paused until a connection
 * ends or a second has passed (accept would fail at once, forever). */
static bool accept_paused;
static AioTimer *resume_timer;

#define ACCEPT_RETRY_NS (1000 * 1000 * 1000LL)

static void server_accept(void *opaque);

static void watch_listeners(bool on)
{
    for (int i = 0; i < num_listen_fds; i++) {
        aio_set_fd_handler(main_aio_context(), listen_fds[i], on ? server_accept : NULL, NULL,
                           NULL, (void *)(intptr_t)listen_fds[i]);
    }
}

void nbd_server_resume_accept(void)
{
    GLOBAL_STATE_CODE();
    if (accept_paused && num_listen_fds > 0) {
        accept_paused = false;
        timer_del(resume_timer);
        watch_listeners(true);
    }
}

static void resume_cb(void *opaque)
{
    (void)opaque;
    nbd_server_resume_accept();
}

static void pause_accept(void)
{
    if (!resume_timer) {
        resume_timer = aio_timer_new(main_aio_context(), resume_cb, NULL);
    }
    accept_paused = true;
    watch_listeners(false);
    timer_mod(resume_timer, clock_now_ns() + ACCEPT_RETRY_NS);
}

static void server_accept(void *opaque)
{
    int lfd = (int)(intptr_t)opaque;
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

    if (fd < 0) {
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
            pause_accept();
        }
        return;
    }
    if (limits.max_connections > 0 && nbd_client_count() >= limits.max_connections &&
        !nbd_client_evict_handshaking()) {
        close(fd);     /* over the limit: refuse politely by hanging up */
        return;
    }
    nbd_client_new(fd, limits.handshake_max_seconds);
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

TlsCreds *nbd_server_tls_creds(void)
{
    return server_creds;
}

const char *nbd_server_tls_authz(void)
{
    return server_authz;
}

static void drop_tls(void)
{
    if (server_creds) {
        tls_creds_unref(server_creds);
    }
    server_creds = NULL;
    free(server_authz);
    server_authz = NULL;
}

static bool take_tls(const NbdServerOptions *o, Error **errp)
{
    if (o->tls_authz && !o->tls_creds) {
        error_setg(errp, "TLS authorization is incompatible with a non-TLS server");
        return false;
    }
    if (!o->tls_creds) {
        return true;
    }
    server_creds = tls_creds_lookup(o->tls_creds, true, errp);
    if (!server_creds) {
        return false;
    }
    server_authz = o->tls_authz ? strdup(o->tls_authz) : NULL;
    return true;
}

bool nbd_server_start(json_object *addr, const NbdServerOptions *lim, Error **errp)
{
    json_object *data;
    const char *type;
    bool ok;

    GLOBAL_STATE_CODE();
    if (nbd_server_running()) {
        error_setg(errp, "NBD server already running");
        return false;
    }
    if (!take_tls(lim, errp)) {
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
        drop_tls();
        return false;
    }
    limits = *lim;
    limits.tls_creds = limits.tls_authz = NULL;     /* not kept: the caller's strings */
    accept_paused = false;
    watch_listeners(true);
    return true;
}

bool nbd_server_stop(Error **errp)
{
    GLOBAL_STATE_CODE();
    if (!nbd_server_running()) {
        error_setg(errp, "NBD server not running");
        return false;
    }
    watch_listeners(false);
    if (resume_timer) {
        timer_del(resume_timer);
    }
    accept_paused = false;
    for (int i = 0; i < num_listen_fds; i++) {
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
    drop_tls();         /* connections in a TLS session hold their own reference */
    return true;
}
