/*
 * nbd-driver.h - internals of the nbd block driver (nbd.c): connecting to
 * a server and the option haggling that precedes transmission
 * (nbd-negotiate.c).  Not for other drivers.
 *
 * nbd-reply.c: a node's connection, in its home context: waiting for the
 * socket, moving bytes, reading the replies of every request in flight.
 *
 * Half: nbd_connect_export() is common and blocks on the socket (the
 * driver runs it at open, in the main thread, or on a thread-pool worker
 * to reconnect); the rest is I/O, in the node's home context only.
 */
#ifndef BLOCKD_NBD_DRIVER_H
#define BLOCKD_NBD_DRIVER_H

#include <stdbool.h>
#include <stdint.h>

#include "blockd/aio.h"
#include "blockd/block-int.h"
#include "blockd/coroutine.h"
#include "blockd/error.h"
#include "blockd/nbd-proto.h"
#include "blockd/tls.h"

/* Seconds any one blocking step of a connection attempt may take. */
#define NBD_CONNECT_TIMEOUT_S 10

/* Where to connect and what to ask for (the node's options). */
typedef struct NbdTarget {
    char *path;                 /* unix socket, or NULL */
    char *host, *port;          /* inet */
    char *export;               /* NULL: the default export ("") */
    char *bitmap;               /* x-dirty-bitmap: a meta context, or NULL */
    TlsCreds *tls;              /* tls-creds (a reference), or NULL */
    char *tls_hostname;         /* the name the server's certificate must have */
} NbdTarget;

/* What the server told us about the export. */
typedef struct NbdExportInfo {
    uint64_t size;
    uint16_t flags;             /* NBD_FLAG_* transmission flags */
    uint32_t min_block;         /* 1 if the server gave no sizes */
    uint32_t max_block;         /* 32 MiB if the server gave no sizes */
    bool structured;            /* structured replies negotiated */
    uint32_t context_id;        /* the block-status context; 0: none */
} NbdExportInfo;

/*
 * Connect to @t and negotiate the export (fixed newstyle, STARTTLS and the
 * TLS handshake with tls-creds, structured replies, the meta context,
 * NBD_OPT_GO): the connected blocking socket and in *@tls its TLS session
 * (NULL without TLS), or -1 with @errp set.  The socket's timeouts stay
 * set (the caller makes it non-blocking for transmission).
 */
int nbd_connect_export(const NbdTarget *t, NbdExportInfo *info, TlsSession **tls,
                       Error **errp);

/* ---- A node's connection (nbd.c, nbd-reply.c) ---- */

#define NBD_MAX_REQS 16
#define NBD_MAX_CHUNK ((uint32_t)NBD_MAX_BUFFER_SIZE + 1024)

typedef struct NbdReq {
    bool in_use;
    bool done;                  /* its last reply chunk arrived */
    bool lost;                  /* its connection went away first */
    unsigned gen;               /* the connection it was sent on */
    Coroutine *co;              /* yielded waiting for its reply */
    uint16_t type, flags;
    uint64_t offset;
    uint32_t len;
    struct iovec *iov;          /* READ: where the data goes */
    int niov;
    int ret;
    bool got_extent;            /* BLOCK_STATUS: the first extent */
    uint32_t extent_len, extent_flags;
} NbdReq;

typedef struct NbdState {
    BlockDriverState *bs;
    NbdTarget target;
    char *filename;
    int64_t reconnect_ns;

    /* The connection: the node's home context only. */
    int fd;                     /* -1: not connected */
    TlsSession *tls;            /* the connection's TLS session, or NULL */
    unsigned gen;               /* bumped when a connection is lost */
    NbdExportInfo info;         /* set at open, never changed */
    int64_t deadline;           /* requests wait for a new connection until then */
    bool connecting;
    bool loss_logged;
    CoQueue connect_wait;
    CoMutex send_lock;          /* one request's bytes at a time */
    NbdReq reqs[NBD_MAX_REQS];
    int in_flight;
    CoQueue free_slot;
    NbdReq *reader;             /* the request reading replies, or NULL */
    /* The last extent the server reported, valid while no write has
     * started or ended since it was asked for (writes_seen unchanged). */
    unsigned writes_seen;
    unsigned extent_seen;
    bool extent_valid;
    uint64_t extent_off, extent_len;
    uint32_t extent_flags;
    Coroutine *rd_waiter, *wr_waiter;
    AioContext *fd_ctx;
} NbdState;


/*
 * Move all of @iov (consumed) over connection @gen, waiting for the socket
 * as needed: false if that connection ended (it is then marked lost, and
 * every request on it too).
 */
bool coroutine_fn nbd_transfer(NbdState *s, unsigned gen, struct iovec *iov, int niov,
                               bool wr);
/*
 * Until @r's reply has come or its connection went (r->done, r->lost):
 * the waiting request reads whatever replies arrive, straight into the
 * buffers of the requests they answer, and hands the reading on when its
 * own reply is in.
 */
void coroutine_fn nbd_wait_reply(NbdState *s, NbdReq *r);

#endif /* BLOCKD_NBD_DRIVER_H */
