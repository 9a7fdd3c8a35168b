/*
 * sockets.h - listening sockets for the servers (NBD, vhost-user, the
 * monitor's chardevs) and connected ones for the clients (the nbd driver).
 *
 * Half: common (plain system calls, no event loop).
 */
#ifndef BLOCKD_SOCKETS_H
#define BLOCKD_SOCKETS_H

#include "blockd/error.h"

/*
 * A listening unix stream socket bound at @path (a stale socket file
 * there is replaced), non-blocking and close-on-exec: its fd, or -1 with
 * @errp set ("Failed to bind socket to PATH: ...", as QEMU says it).
 */
int socket_listen_unix(const char *path, int backlog, Error **errp);

/*
 * A blocking stream socket connected to @path (unix) or @host:@port
 * (inet; every address getaddrinfo gives is tried in turn), close-on-exec,
 * with @timeout_s (0: none) on connecting, sending and receiving: its fd,
 * or -1 with @errp set in QEMU's words ("Failed to connect to 'PATH'").
 */
int socket_connect_unix(const char *path, int timeout_s, Error **errp);
int socket_connect_inet(const char *host, const char *port, int timeout_s, Error **errp);

#endif /* BLOCKD_SOCKETS_H */
