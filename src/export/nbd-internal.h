/*
 * nbd-internal.h - shared between the NBD server files.  Global state
 * unless noted.
 */
#ifndef BLOCKD_NBD_INTERNAL_H
#define BLOCKD_NBD_INTERNAL_H

#include "blockd/dirty-bitmap.h"
#include "blockd/export-driver.h"
#include "blockd/list.h"

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

/* Start serving a freshly accepted connection (main thread). */
void nbd_client_new(int fd);
/* Ask a connection to end (from the main thread; any state). */
void nbd_client_shutdown(NbdClient *client);
/* Ask every connection to end (nbd-server-stop). */
void nbd_clients_shutdown_all(void);
/* Connections currently alive (for max-connections). */
int nbd_client_count(void);


#endif /* BLOCKD_NBD_INTERNAL_H */
