/*
 * sockets.h - listening sockets for the servers (NBD, vhost-user, the
 * monitor's chardevs).
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

#endif /* BLOCKD_SOCKETS_H */
