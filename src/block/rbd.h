/*
 * rbd.h - internals of the rbd driver (rbd.c): reaching a Ceph cluster
 * and an image in it from a node's options (rbd-connect.c), and making
 * images (rbd-create.c).  Not for other drivers.  docs/ceph.md describes
 * the driver as a user sees it.
 *
 * Half: common.  Everything here blocks on the cluster (monitor round
 * trips), so it runs where blocking is allowed: at open in the main
 * thread, or on a thread-pool worker.
 */
#ifndef BLOCKD_RBD_H
#define BLOCKD_RBD_H

#include <json-c/json.h>
#include <rados/librados.h>
#include <rbd/librbd.h>
#include <stdbool.h>

#include "blockd/coroutine.h"
#include "blockd/error.h"

/* A connection to a cluster and an I/O context on a pool (and
 * namespace) of it. */
typedef struct RbdCluster {
    rados_t cluster;
    rados_ioctx_t ioctx;
} RbdCluster;

/* What a node's options say, secrets already looked up (main thread):
 * everything needed to connect later, on any thread. */
typedef struct RbdTarget {
    char *pool, *namespace, *image, *snapshot, *conf, *user;
    char *mon_host;            /* from "server"; NULL: the conf file's */
    char *auth_client_required;
    char *key;                 /* base64, from "key-secret" */
    int encrypt_format;        /* -1: none, else rbd_encryption_format_t */
    char *passphrase;          /* encrypt.key-secret */
    size_t passphrase_len;
    bool no_cache;             /* cache.direct=on: no librbd cache */
} RbdTarget;

/* Fill @t from BlockdevOptionsRbd @opts (already checked against the
 * schema), looking up the secrets it names.  Main thread. */
bool rbd_target_parse(RbdTarget *t, json_object *opts, Error **errp);
void rbd_target_clear(RbdTarget *t);
/* The "encrypt" member (RbdEncryptionOptions: format, key-secret). */
bool rbd_target_parse_encrypt(RbdTarget *t, json_object *enc, Error **errp);

/* Connect to @t's cluster and open its pool: the errors are QEMU's
 * ("error connecting: ...", "error opening pool X: ...").  Blocks for up
 * to the cluster configuration's client_mount_timeout. */
bool rbd_cluster_connect(RbdCluster *c, const RbdTarget *t, Error **errp);
void rbd_cluster_disconnect(RbdCluster *c);

/* blockdev-create of an rbd image (BlockdevCreateOptionsRbd), the
 * cluster work on a worker thread.  Coroutine of the main thread. */
int coroutine_fn rbd_co_create(json_object *options, Error **errp);

#endif /* BLOCKD_RBD_H */
