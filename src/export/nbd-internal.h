/*
 * nbd-internal.h - shared between the NBD server files.  Global state
 * unless noted.
 */
#ifndef BLOCKD_NBD_INTERNAL_H
#define BLOCKD_NBD_INTERNAL_H

#include "blockd/dirty-bitmap.h"
#include "blockd/export-driver.h"
#include "blockd/list.h"
#include "blockd/tls.h"

typedef struct NbdClient NbdClient;

/* nbd-export.c: the "nbd" type's part of an export.  The export an NBD
 * client asks for by name (NULL: none); its name, description, whether
 * it offers "qemu:allocation-depth", the bitmaps it offers as
 * "qemu:dirty-bitmap:NAME" (their number, the @i-th).  Common, immutable
 * but nbd_export_find (global state). */
BlockExport *nbd_export_find(const char *name);
const char *nbd_export_name(BlockExport *exp);
const char *nbd_export_description(BlockExport *exp);
bool nbd_export_allocation_depth(BlockExport *exp);
int nbd_export_nbitmaps(BlockExport *exp);
BdrvDirtyBitmap *nbd_export_bitmap(BlockExport *exp, int i);

/* Start serving a freshly accepted connection (main thread); it is hung
 * up on if its handshake takes more than @handshake_max_seconds (0: no
 * limit). */
void nbd_client_new(int fd, int handshake_max_seconds);
/* Hang up on the connection that has been in its handshake longest, to
 * make room for a new one: false if none is. */
bool nbd_client_evict_handshaking(void);
/* nbd-server.c: a connection ended, a file descriptor is free again. */
void nbd_server_resume_accept(void);
/* nbd-server.c: the running server's TLS credentials (NULL: TLS is not
 * offered) and authorization object id (NULL: none). */
TlsCreds *nbd_server_tls_creds(void);
const char *nbd_server_tls_authz(void);
/* Ask a connection to end (from the main thread; any state). */
void nbd_client_shutdown(NbdClient *client);
/* Ask every connection to end (nbd-server-stop). */
void nbd_clients_shutdown_all(void);
/* Connections currently alive (for max-connections). */
int nbd_client_count(void);


#endif /* BLOCKD_NBD_INTERNAL_H */
