/*
 * chardev-internal.h - what the chardev core (chardev.c) and its socket
 * backend (chardev-socket.c) share.  Global state.
 */
#ifndef BLOCKD_CHARDEV_INTERNAL_H
#define BLOCKD_CHARDEV_INTERNAL_H

#include <stdint.h>

#include "blockd/aio.h"
#include "blockd/chardev.h"
#include "blockd/list.h"
#include "blockd/tls.h"

typedef enum ChardevKind {
    CHR_SOCKET,
    CHR_STDIO,
    CHR_NULL,
    CHR_FILE,
    CHR_RINGBUF,
} ChardevKind;

struct Chardev {
    char *id;
    const char *backend;        /* the name it was created with */
    ChardevKind kind;

    /* The peer's descriptors while open (-1: none).  in_fd may be -1 for
     * an output-only file. */
    int in_fd, out_fd;
    bool open;
    bool own_fds;               /* close them when the session ends */
    bool in_pollable, out_pollable;     /* epoll can watch them (not a
                                           regular file, not /dev/null) */
    int log_fd;                 /* logfile: a copy of all output, or -1 */

    /* socket */
    bool server;
    int listen_fd;              /* server: -1 once freed */
    char *unix_path;            /* server: the path to unlink at free */
    char *address;              /* "unix:/p" or "tcp:host:port", for query-chardev */
    bool nodelay;
    /* server with tls-creds: every client's bytes go through a session,
     * opened once its handshake (hs_fd, still going on) is done. */
    TlsCreds *tls_creds;
    char *tls_authz;
    TlsSession *tls;
    int hs_fd;

    BH *input_bh;               /* reads unwatchable input in chunks */

    /* stdio */
    bool restore_tty;           /* signal=off changed the terminal */

    /* ring buffer: size is a power of two; prod - cons <= size */
    char *ring;
    size_t ring_size;
    uint64_t prod, cons;

    /* frontend */
    const ChardevHandlers *h;
    void *opaque;
    bool want_write;

    ListNode node;
};

/* The peer is here (@in_fd may be -1), or gone. */
void chardev_session_open(Chardev *chr, int in_fd, int out_fd, bool own);
void chardev_session_close(Chardev *chr);

/* Socket backend: open @chr per the flat options (path, host+port or
 * fd; server, wait, nodelay, reconnect). */
bool chardev_socket_open(Chardev *chr, json_object *opts, Error **errp);
/* Accept the next client of a server socket (after a session ended). */
void chardev_socket_listen_again(Chardev *chr);
void chardev_socket_free(Chardev *chr);

#endif /* BLOCKD_CHARDEV_INTERNAL_H */
