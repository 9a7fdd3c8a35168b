/*
 * nbd-driver.h - internals of the nbd block driver (nbd.c): connecting to
 * a server and the option haggling that precedes transmission
 * (nbd-negotiate.c).  Not for other drivers.
 *
 * Half: common.  These calls block on the socket; the driver runs them at
 * open (main thread) or on a thread-pool worker (reconnection).
 */
#ifndef BLOCKD_NBD_DRIVER_H
#define BLOCKD_NBD_DRIVER_H

#include <stdbool.h>
#include <stdint.h>

#include "blockd/error.h"

/* Seconds any one blocking step of a connection attempt may take. */
#define NBD_CONNECT_TIMEOUT_S 10

/* Where to connect and what to ask for (the node's options). */
typedef struct NbdTarget {
    char *path;                 /* unix socket, or NULL */
    char *host, *port;          /* inet */
    char *export;               /* NULL: the default export ("") */
    char *bitmap;               /* x-dirty-bitmap: a meta context, or NULL */
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
 * Connect to @t and negotiate the export (fixed newstyle, structured
 * replies, the meta context, NBD_OPT_GO): the connected blocking socket,
 * or -1 with @errp set.  The socket's timeouts stay set (the caller makes
 * it non-blocking for transmission).
 */
int nbd_connect_export(const NbdTarget *t, NbdExportInfo *info, Error **errp);

#endif /* BLOCKD_NBD_DRIVER_H */
