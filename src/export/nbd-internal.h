/*
 * nbd-internal.h - shared between the NBD server files.  Global state
 * unless noted.
 */
#ifndef BLOCKD_NBD_INTERNAL_H
#define BLOCKD_NBD_INTERNAL_H

#include "blockd/export.h"
#include "blockd/list.h"

/* Start serving a freshly accepted connection (main thread). */
void nbd_client_new(int fd);
/* Ask a connection to end (from the main thread; any state). */
void nbd_client_shutdown(NbdClient *client);
/* Ask every connection to end (nbd-server-stop). */
void nbd_clients_shutdown_all(void);
/* Connections currently alive (for max-connections). */
int nbd_client_count(void);

/* export.c: connection bookkeeping of an export (main thread). */
void blk_exp_add_client(BlockExport *exp, NbdClient *client, ListNode *link);
void blk_exp_remove_client(BlockExport *exp, ListNode *link);
/* Requests of all connections of @exp in flight (any thread, atomic). */
void blk_exp_request_begin(BlockExport *exp);
void blk_exp_request_end(BlockExport *exp);
/* Is the export drained right now (no new requests may start)? */
bool blk_exp_quiesced(BlockExport *exp);
/* Wait (coroutine, export context) until the export is not drained. */
void coroutine_fn blk_exp_wait_unquiesced(BlockExport *exp);

#endif /* BLOCKD_NBD_INTERNAL_H */
