/*
 * chardev.h - listening sockets for the monitor (--chardev socket,...).
 *
 * Half: global state.  A chardev is a server socket (unix path, or TCP
 * host/port) whose handlers live in the iohandler context, so only the
 * outermost main loop serves them.  Like QEMU's socket chardev it has at
 * most one client at a time: while one is connected, further connections
 * wait in the listen backlog.
 */
#ifndef BLOCKD_CHARDEV_H
#define BLOCKD_CHARDEV_H

#include <json-c/json.h>
#include <stdbool.h>

#include "blockd/error.h"

typedef struct Chardev Chardev;

/* Called in the main thread when a client connects; takes over @fd. */
typedef void ChardevConnectFn(Chardev *chr, int fd, void *opaque);

/*
 * Create from typed options (the ChardevOptions of --chardev / QMP):
 * backend "socket" with id, path or host+port, server (must be on), wait
 * (must be off unless a client is expected at start; blockd only
 * supports off, as qemu-storage-daemon's monitor needs).
 */
Chardev *chardev_new(json_object *options, Error **errp);
Chardev *chardev_find(const char *id);
const char *chardev_id(Chardev *chr);
/* Start accepting; @fn is told about each client.  One user per chardev. */
bool chardev_set_handler(Chardev *chr, ChardevConnectFn *fn, void *opaque, Error **errp);
/* The client has gone: accept the next one. */
void chardev_client_closed(Chardev *chr);
void chardev_free(Chardev *chr);
void chardev_free_all(void);

#endif /* BLOCKD_CHARDEV_H */
