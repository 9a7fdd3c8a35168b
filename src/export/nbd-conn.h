/*
 * nbd-conn.h - one NBD connection, as its two halves see it: the
 * handshake (nbd-handshake.c) and the transmission phase (nbd-client.c).
 * Everything here runs in the connection's context (its coroutines).
 */
#ifndef BLOCKD_NBD_CONN_H
#define BLOCKD_NBD_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "blockd/aio.h"
#include "blockd/buf-pool.h"
#include "blockd/coroutine.h"
#include "blockd/export.h"
#include "blockd/list.h"
#include "blockd/compiler.h"
#include "blockd/tls.h"

typedef struct NbdClient NbdClient;

#define MAX_REQUESTS 32                        /* in flight per connection */
#define MAX_IN_FLIGHT_BYTES (64 * 1024 * 1024)  /* payloads held per connection */
/* Payloads held by all connections together: past this, a request waits
 * (before its payload is read) until others drain -- but for a small one
 * of a connection with nothing else in flight, so what stalled clients
 * pin is at most this plus SMALL_REQUEST_BYTES per connection.  Larger
 * than any one request, so a lone connection always progresses. */
#define SERVER_MAX_IN_FLIGHT_BYTES (96 * 1024 * 1024)
#define SMALL_REQUEST_BYTES (1024 * 1024)
#define MAX_STATUS_EXTENTS 1024

struct NbdClient {
    ListNode link;              /* first: in the export's client list (main) */
    ListNode all_link;          /* in all_clients (main) */
    int fd;
    AioContext *ctx;            /* where the coroutines run */
    BlockExport *exp;
    int64_t size;
    bool structured;
    bool meta_allocation;
    bool meta_depth;            /* qemu:allocation-depth */
    uint64_t meta_bitmaps;      /* qemu:dirty-bitmap:NAME, by export index */
    char *meta_export;          /* handshake: the export those were set for */
    bool no_zeroes;
    int closing;                /* atomic */
    Coroutine *recv_waiter;     /* ctx thread: waiting to read */
    Coroutine *send_waiter;     /* ctx thread: waiting to write */
    CoMutex send_lock;
    int in_flight;              /* ctx thread */
    int64_t in_flight_bytes;    /* ctx thread */
    Coroutine *budget_waiter;   /* the receive loop, waiting for room */
    bool watch_read;            /* ctx thread: handlers registered */
    bool watch_write;
    /* Bytes received but not consumed yet (ctx thread): one recv takes in
     * every request header and small payload the client has queued. */
    uint8_t *in_buf;
    size_t in_pos;
    size_t in_end;
    /* Replies not sent yet (ctx thread, send_lock): small replies are
     * gathered here and go out together, in one system call, once the
     * requests that are ready have all run. */
    uint8_t *out_buf;           /* contents: send_lock (the pointer is immutable,
                                 * and a guard on it would not cover the bytes) */
    size_t out_len TSA_FIELD_GUARDED_BY(send_lock);
    /* ctx thread only (no lock: one thread reads and writes it):
     * flush_bh scheduled or flush_co running */
    bool flush_pending;
    BH *flush_bh;               /* during transmission */
    bool spawned;               /* ctx thread: requests started since the last receive */
    /* Payload buffers for reuse (ctx thread), given back to malloc when
     * the connection has been idle for a while. */
    BufPool *pool;
    AioTimer *trim_timer;       /* ctx thread, during transmission */
    /* Main thread: in the handshake since started_ns, and the timer that
     * ends it at the deadline (NULL: no deadline). */
    bool handshaking;
    int64_t started_ns;
    AioTimer *handshake_timer;
    /* After NBD_OPT_STARTTLS: every byte goes through this session, over
     * these credentials (a reference, dropped in the main thread). */
    TlsSession *tls;
    TlsCreds *tls_creds;
};

#define IN_BUF_SIZE (64 * 1024)
#define OUT_BUF_SIZE (64 * 1024)
/* Replies larger than this are sent directly, not copied. */
#define OUT_SMALL_MAX (OUT_BUF_SIZE / 4)
/* Payload buffers a connection keeps for reuse, and for how long idle. */
#define POOL_MAX_CACHED (16 * 1024 * 1024)
#define POOL_IDLE_TRIM_NS (1000 * 1000 * 1000LL)

/* Receive exactly @len bytes, or send them: false if the connection
 * ended (the peer left, or it is closing). */
bool coroutine_fn nbd_co_recv_full(NbdClient *c, void *buf, size_t len);
bool coroutine_fn nbd_co_send(NbdClient *c, const void *buf, size_t len);
bool coroutine_fn nbd_co_sendv(NbdClient *c, struct iovec *iov, int niov);

/* NBD_OPT_STARTTLS was acknowledged: run the TLS handshake with @creds
 * and check the client against the server's authorization object; false
 * (the reason logged) to end the connection. */
bool coroutine_fn nbd_co_start_tls(NbdClient *c, TlsCreds *creds);

/*
 * The fixed-newstyle handshake, up to the export the client chose, with a
 * reference the caller drops with nbd_handshake_put_exp() (the negotiated
 * flags set in @c), or NULL when the client aborted, broke the protocol
 * or left.
 */
BlockExport *coroutine_fn nbd_handshake(NbdClient *c);
/* Drop that reference (from a coroutine: the drop happens in the main
 * loop, since the last one frees the BlockBackend, which waits). */
void nbd_handshake_put_exp(BlockExport *exp);

#endif /* BLOCKD_NBD_CONN_H */
