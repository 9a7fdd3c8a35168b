/*
 * qapi-schemas.h - the schemas of blockd's commands and options, shared by
 * QMP and the command line.  Common (constant data).
 */
#ifndef BLOCKD_QAPI_SCHEMAS_H
#define BLOCKD_QAPI_SCHEMAS_H

#include "blockd/schema.h"

extern const SchemaObject qapi_blockdev_options;
extern const SchemaObject qapi_rbd_options;           /* BlockdevOptionsRbd */
/* RbdEncryptionOptions' and RbdEncryptionCreateOptions' common member. */
extern const SchemaField qapi_rbd_encrypt_base_fields[];
extern const SchemaObject qapi_blockdev_del_args;
extern const SchemaObject qapi_query_named_block_nodes_args;
extern const SchemaObject qapi_object_add_args;       /* qom-type iothread */
extern const SchemaObject qapi_object_del_args;
extern const SchemaObject qapi_chardev_options;       /* --chardev socket */
extern const SchemaObject qapi_monitor_options;       /* --monitor */
extern const SchemaObject qapi_nbd_server_options;    /* --nbd-server */
extern const SchemaObject qapi_socket_address;        /* unix or inet, flat */
extern const SchemaObject qapi_block_export_options;  /* --export, block-export-add */
extern const SchemaObject qapi_blockdev_snapshot_args;

#endif /* BLOCKD_QAPI_SCHEMAS_H */
