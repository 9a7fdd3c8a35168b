/*
 * export.h - block exports (block-export-add / --export) and the NBD server.
 *
 * Half: global state, except where noted.  An export owns a BlockBackend
 * on its node and runs its connections in its AioContext (the main loop,
 * or an iothread given with iothread=).  While the node is drained the
 * export stops reading new requests; requests already read complete.
 */
#ifndef BLOCKD_EXPORT_H
#define BLOCKD_EXPORT_H

#include <json-c/json.h>
#include <stdbool.h>

#include "blockd/aio.h"
#include "blockd/block-backend-global-state.h"
#include "blockd/error.h"

typedef struct BlockExport BlockExport;

/* block-export-add: @options per BlockExportOptions (the types of
 * export-driver.h: nbd, fuse, vhost-user-blk). */
BlockExport *blk_exp_add(json_object *options, Error **errp);
/* block-export-del: disconnect clients once their requests are done. */
bool blk_exp_del(const char *id, Error **errp);
BlockExport *blk_exp_find(const char *id);
/* The export after @prev (NULL: the first), oldest first, or NULL. */
BlockExport *blk_exp_next(BlockExport *prev);
void blk_exp_foreach(void (*fn)(BlockExport *exp, void *opaque), void *opaque);
void blk_exp_close_all(void);

/* Users (connections) currently using @exp.  Global state. */
int blk_exp_num_clients(BlockExport *exp);
/* The name of the node @exp serves now (after a mirror's switch, the
 * target's).  Global state. */
const char *blk_exp_node_name(BlockExport *exp);

/* Accessors (common). */
const char *blk_exp_id(BlockExport *exp);
/* Its type ("nbd", "fuse", "vhost-user-blk").  Common. */
const char *blk_exp_type(BlockExport *exp);
bool blk_exp_writable(BlockExport *exp);
BlockBackend *blk_exp_blk(BlockExport *exp);
AioContext *blk_exp_ctx(BlockExport *exp);
/* Where the next connection is served (round robin over "iothreads"). */
AioContext *blk_exp_next_ctx(BlockExport *exp);
/* Does any connection of @exp run (or may run) in @ctx? */
bool blk_exp_uses_ctx(BlockExport *exp, AioContext *ctx);

/* A reference keeps @exp (not its id) alive.  Global state. */
void blk_exp_ref(BlockExport *exp);
void blk_exp_unref(BlockExport *exp);

/* ---- The NBD server ---- */

/* What one server requires of its clients and lets them hold. */
typedef struct NbdServerOptions {
    /* tls-creds (a server endpoint's credentials: TLS is then required)
     * and tls-authz (an authorization object for the client's identity);
     * NULL: none. */
    const char *tls_creds;
    const char *tls_authz;
    /* Connections at once (0: no limit).  At the limit, a new connection
     * replaces the oldest one still in its handshake, if any; else it is
     * hung up on. */
    int max_connections;
    /* Seconds a client has to finish the handshake (0: no limit). */
    int handshake_max_seconds;
} NbdServerOptions;

#define NBD_DEFAULT_MAX_CONNECTIONS 100
#define NBD_DEFAULT_HANDSHAKE_MAX_SECONDS 10

/* nbd-server-start / --nbd-server: listen on @addr (SocketAddress:
 * type unix+path or inet+host+port).  Global state. */
bool nbd_server_start(json_object *addr, const NbdServerOptions *opts, Error **errp);
bool nbd_server_stop(Error **errp);
bool nbd_server_running(void);

#endif /* BLOCKD_EXPORT_H */
