/*
 * qapi-block.c - the schema of BlockdevOptions (blockdev-add and
 * --blockdev), following QEMU's qapi/block-core.json for the drivers
 * blockd has.  Options a driver does not have are refused, never ignored.
 */
#include "blockd/schema.h"
#include "qapi-schemas.h"

static const char *const driver_names[] = {
    "blkdebug", "blkverify", "compress", "copy-before-write", "copy-on-read", "file", "host_device", "luks", "nbd",
    "null-aio", "null-co", "preallocate", "qcow2", "quorum", "raw", "rbd", "snapshot-access",
    "throttle",
    NULL,
};
static const char *const on_cbw_error_names[] = { "break-guest-write", "break-snapshot", NULL };
static const char *const discard_names[] = { "ignore", "unmap", NULL };
static const char *const detect_zeroes_names[] = { "off", "on", "unmap", NULL };
static const char *const aio_names[] = { "threads", "native", "io_uring", NULL };
static const char *const locking_names[] = { "auto", "on", "off", NULL };
static const char *const iotype_names[] = {
    "read", "write", "write-zeroes", "discard", "flush", "block-status", NULL,
};

static const SchemaField cache_fields[] = {
    { .name = "direct", .type = SCHEMA_BOOL, .optional = true },
    { .name = "no-flush", .type = SCHEMA_BOOL, .optional = true },
    { 0 },
};

static const SchemaObject cache_options = {
    .name = "BlockdevCacheOptions", .fields = cache_fields,
};

static const SchemaField base_fields[] = {
    { .name = "driver", .type = SCHEMA_ENUM, .enum_values = driver_names },
    { .name = "node-name", .type = SCHEMA_STR, .optional = true },
    { .name = "discard", .type = SCHEMA_ENUM, .optional = true, .enum_values = discard_names },
    { .name = "cache", .type = SCHEMA_OBJECT, .optional = true, .object = &cache_options },
    { .name = "read-only", .type = SCHEMA_BOOL, .optional = true },
    { .name = "auto-read-only", .type = SCHEMA_BOOL, .optional = true },
    { .name = "force-share", .type = SCHEMA_BOOL, .optional = true },
    { .name = "detect-zeroes", .type = SCHEMA_ENUM, .optional = true,
      .enum_values = detect_zeroes_names },
    { 0 },
};

static const SchemaField file_fields[] = {
    { .name = "filename", .type = SCHEMA_STR },
    { .name = "aio", .type = SCHEMA_ENUM, .optional = true, .enum_values = aio_names },
    { .name = "locking", .type = SCHEMA_ENUM, .optional = true, .enum_values = locking_names },
    { 0 },
};

static const SchemaObject file_options = { .name = "BlockdevOptionsFile", .fields = file_fields };

static const SchemaField raw_fields[] = {
    { .name = "file", .type = SCHEMA_STR_OR_OBJECT, .object = &qapi_blockdev_options },
    { .name = "offset", .type = SCHEMA_INT, .optional = true },
    { .name = "size", .type = SCHEMA_INT, .optional = true },
    { 0 },
};

static const SchemaObject raw_options = { .name = "BlockdevOptionsRaw", .fields = raw_fields };

static const SchemaField null_fields[] = {
    { .name = "size", .type = SCHEMA_INT, .optional = true },
    { .name = "latency-ns", .type = SCHEMA_SIZE, .optional = true },
    { .name = "read-zeroes", .type = SCHEMA_BOOL, .optional = true },
    { 0 },
};

static const SchemaObject null_options = { .name = "BlockdevOptionsNull", .fields = null_fields };

static const SchemaField inject_error_fields[] = {
    /* QEMU's members, but not "event" and "state": a rule applies to every
     * request of its iotype, so they are refused rather than ignored.
     * Errors are always immediate; "immediately" changes nothing a client
     * can observe... */
    { .name = "iotype", .type = SCHEMA_ENUM, .optional = true, .enum_values = iotype_names },
    { .name = "errno", .type = SCHEMA_INT, .optional = true },
    { .name = "sector", .type = SCHEMA_INT, .optional = true },
    { .name = "once", .type = SCHEMA_BOOL, .optional = true },
    { .name = "immediately", .type = SCHEMA_BOOL, .optional = true },
    /* ...and blockd's: the nth matching request, a byte range. */
    { .name = "nth", .type = SCHEMA_SIZE, .optional = true },
    { .name = "offset", .type = SCHEMA_INT, .optional = true },
    { .name = "bytes", .type = SCHEMA_SIZE, .optional = true },
    { 0 },
};

static const SchemaObject inject_error_options = {
    .name = "BlkdebugInjectErrorOptions", .fields = inject_error_fields,
};

static const SchemaField inject_error_elem = {
    .name = "inject-error", .type = SCHEMA_OBJECT, .object = &inject_error_options,
};

static const SchemaField nbd_fields[] = {
    { .name = "server", .type = SCHEMA_OBJECT, .object = &qapi_socket_address },
    { .name = "export", .type = SCHEMA_STR, .optional = true },
    { .name = "tls-creds", .type = SCHEMA_STR, .optional = true },
    { .name = "tls-hostname", .type = SCHEMA_STR, .optional = true },
    { .name = "x-dirty-bitmap", .type = SCHEMA_STR, .optional = true },
    { .name = "reconnect-delay", .type = SCHEMA_INT, .optional = true },
    { .name = "open-timeout", .type = SCHEMA_INT, .optional = true },
    { 0 },
};

static const SchemaObject nbd_options = { .name = "BlockdevOptionsNbd", .fields = nbd_fields };

static const char *const rbd_auth_modes[] = { "cephx", "none", NULL };
static const char *const rbd_encrypt_formats[] = { "luks", "luks2", NULL };

const SchemaField qapi_rbd_encrypt_base_fields[] = {
    { .name = "format", .type = SCHEMA_ENUM, .enum_values = rbd_encrypt_formats },
    { 0 },
};
static const SchemaField rbd_luks_fields[] = {
    { .name = "key-secret", .type = SCHEMA_STR },
    { 0 },
};
static const SchemaVariant rbd_encrypt_variants[] = {
    { "luks", &(const SchemaObject){ .name = "RbdEncryptionOptionsLUKS",
                                     .fields = rbd_luks_fields } },
    { "luks2", &(const SchemaObject){ .name = "RbdEncryptionOptionsLUKS2",
                                      .fields = rbd_luks_fields } },
    { NULL, NULL },
};
static const SchemaObject rbd_encrypt_options = {
    .name = "RbdEncryptionOptions", .fields = qapi_rbd_encrypt_base_fields,
    .discriminator = "format", .variants = rbd_encrypt_variants,
};
/* InetSocketAddressBase: a monitor's address. */
static const SchemaField rbd_server_fields[] = {
    { .name = "host", .type = SCHEMA_STR },
    { .name = "port", .type = SCHEMA_STR },
    { 0 },
};
static const SchemaField rbd_server_elem = {
    .name = "server", .type = SCHEMA_OBJECT,
    .object = &(const SchemaObject){ .name = "InetSocketAddressBase",
                                     .fields = rbd_server_fields },
};
static const SchemaField rbd_auth_elem = {
    .name = "auth-client-required", .type = SCHEMA_ENUM, .enum_values = rbd_auth_modes,
};
static const SchemaField rbd_fields[] = {
    { .name = "pool", .type = SCHEMA_STR },
    { .name = "namespace", .type = SCHEMA_STR, .optional = true },
    { .name = "image", .type = SCHEMA_STR },
    { .name = "conf", .type = SCHEMA_STR, .optional = true },
    { .name = "snapshot", .type = SCHEMA_STR, .optional = true },
    { .name = "encrypt", .type = SCHEMA_OBJECT, .optional = true, .object = &rbd_encrypt_options },
    { .name = "user", .type = SCHEMA_STR, .optional = true },
    { .name = "auth-client-required", .type = SCHEMA_LIST, .optional = true,
      .elem = &rbd_auth_elem },
    { .name = "key-secret", .type = SCHEMA_STR, .optional = true },
    { .name = "server", .type = SCHEMA_LIST, .optional = true, .elem = &rbd_server_elem },
    { 0 },
};

const SchemaObject qapi_rbd_options = { .name = "BlockdevOptionsRbd", .fields = rbd_fields };

static const SchemaField blkdebug_fields[] = {
    { .name = "image", .type = SCHEMA_STR_OR_OBJECT, .object = &qapi_blockdev_options },
    { .name = "inject-error", .type = SCHEMA_LIST, .optional = true, .elem = &inject_error_elem },
    { 0 },
};

static const SchemaObject blkdebug_options = {
    .name = "BlockdevOptionsBlkdebug", .fields = blkdebug_fields,
};

static const char *const overlap_modes[] = { "none", "constant", "cached", "all", NULL };
static const SchemaField overlap_flag_fields[] = {
    { .name = "template", .type = SCHEMA_ENUM, .optional = true, .enum_values = overlap_modes },
    { .name = "main-header", .type = SCHEMA_BOOL, .optional = true },
    { .name = "active-l1", .type = SCHEMA_BOOL, .optional = true },
    { .name = "active-l2", .type = SCHEMA_BOOL, .optional = true },
    { .name = "refcount-table", .type = SCHEMA_BOOL, .optional = true },
    { .name = "refcount-block", .type = SCHEMA_BOOL, .optional = true },
    { .name = "snapshot-table", .type = SCHEMA_BOOL, .optional = true },
    { .name = "inactive-l1", .type = SCHEMA_BOOL, .optional = true },
    { .name = "inactive-l2", .type = SCHEMA_BOOL, .optional = true },
    { .name = "bitmap-directory", .type = SCHEMA_BOOL, .optional = true },
    { 0 },
};

static const SchemaObject overlap_flags = {
    .name = "Qcow2OverlapCheckFlags", .fields = overlap_flag_fields,
};

/* BlockdevQcow2Encryption: a format and the secret that unlocks it. */
static const char *const qcow2_encrypt_formats[] = { "aes", "luks", NULL };
static const SchemaField qcow2_encrypt_fields[] = {
    { .name = "format", .type = SCHEMA_ENUM, .enum_values = qcow2_encrypt_formats },
    { 0 },
};

static const SchemaField crypto_secret_fields[] = {
    { .name = "key-secret", .type = SCHEMA_STR, .optional = true },
    { 0 },
};

static const SchemaVariant qcow2_encrypt_variants[] = {
    { "aes", &(const SchemaObject){ .name = "QCryptoBlockOptionsQCow",
                                    .fields = crypto_secret_fields } },
    { "luks", &(const SchemaObject){ .name = "QCryptoBlockOptionsLUKS",
                                     .fields = crypto_secret_fields } },
    { NULL, NULL },
};

static const SchemaObject qcow2_encrypt = {
    .name = "BlockdevQcow2Encryption", .fields = qcow2_encrypt_fields,
    .discriminator = "format", .variants = qcow2_encrypt_variants,
};

static const SchemaField qcow2_fields[] = {
    { .name = "file", .type = SCHEMA_STR_OR_OBJECT, .object = &qapi_blockdev_options },
    { .name = "data-file", .type = SCHEMA_STR_OR_OBJECT, .optional = true,
      .object = &qapi_blockdev_options },
    { .name = "encrypt", .type = SCHEMA_OBJECT, .optional = true, .object = &qcow2_encrypt },
    { .name = "backing", .type = SCHEMA_STR_OR_OBJECT, .optional = true,
      .object = &qapi_blockdev_options, .nullable = true },
    { .name = "lazy-refcounts", .type = SCHEMA_BOOL, .optional = true },
    { .name = "pass-discard-request", .type = SCHEMA_BOOL, .optional = true },
    { .name = "pass-discard-snapshot", .type = SCHEMA_BOOL, .optional = true },
    { .name = "pass-discard-other", .type = SCHEMA_BOOL, .optional = true },
    { .name = "cache-size", .type = SCHEMA_SIZE, .optional = true },
    { .name = "l2-cache-size", .type = SCHEMA_SIZE, .optional = true },
    { .name = "l2-cache-entry-size", .type = SCHEMA_SIZE, .optional = true },
    { .name = "refcount-cache-size", .type = SCHEMA_SIZE, .optional = true },
    { .name = "cache-clean-interval", .type = SCHEMA_SIZE, .optional = true },
    { .name = "overlap-check", .type = SCHEMA_STR_OR_OBJECT, .optional = true,
      .object = &overlap_flags },
    { .name = "discard-no-unref", .type = SCHEMA_BOOL, .optional = true },
    { 0 },
};

static const SchemaObject qcow2_options = {
    .name = "BlockdevOptionsQcow2", .fields = qcow2_fields,
};

static const SchemaField bitmap_ref_fields[] = {
    { .name = "node", .type = SCHEMA_STR },
    { .name = "name", .type = SCHEMA_STR },
    { 0 },
};

static const SchemaObject bitmap_ref = { .name = "BlockDirtyBitmap", .fields = bitmap_ref_fields };

static const SchemaField cbw_fields[] = {
    { .name = "file", .type = SCHEMA_STR_OR_OBJECT, .object = &qapi_blockdev_options },
    { .name = "target", .type = SCHEMA_STR_OR_OBJECT, .object = &qapi_blockdev_options },
    { .name = "bitmap", .type = SCHEMA_OBJECT, .optional = true, .object = &bitmap_ref },
    { .name = "on-cbw-error", .type = SCHEMA_ENUM, .optional = true,
      .enum_values = on_cbw_error_names },
    { .name = "cbw-timeout", .type = SCHEMA_INT, .optional = true },
    { 0 },
};

static const SchemaObject cbw_options = { .name = "BlockdevOptionsCbw", .fields = cbw_fields };

static const SchemaField generic_file_fields[] = {
    { .name = "file", .type = SCHEMA_STR_OR_OBJECT, .object = &qapi_blockdev_options },
    { 0 },
};

static const SchemaObject generic_file_options = {
    .name = "BlockdevOptionsGenericFormat", .fields = generic_file_fields,
};

static const SchemaField cor_fields[] = {
    { .name = "file", .type = SCHEMA_STR_OR_OBJECT, .object = &qapi_blockdev_options },
    { .name = "bottom", .type = SCHEMA_STR, .optional = true },
    { 0 },
};

static const SchemaObject cor_options = {
    .name = "BlockdevOptionsCor", .fields = cor_fields,
};

static const SchemaField prealloc_fields[] = {
    { .name = "file", .type = SCHEMA_STR_OR_OBJECT, .object = &qapi_blockdev_options },
    { .name = "prealloc-align", .type = SCHEMA_INT, .optional = true },
    { .name = "prealloc-size", .type = SCHEMA_INT, .optional = true },
    { 0 },
};

static const SchemaObject prealloc_options = {
    .name = "BlockdevOptionsPreallocate", .fields = prealloc_fields,
};

static const SchemaField throttle_fields[] = {
    { .name = "throttle-group", .type = SCHEMA_STR },
    { .name = "file", .type = SCHEMA_STR_OR_OBJECT, .object = &qapi_blockdev_options },
    { 0 },
};

static const SchemaObject throttle_options = {
    .name = "BlockdevOptionsThrottle", .fields = throttle_fields,
};

static const SchemaField luks_fields[] = {
    { .name = "file", .type = SCHEMA_STR_OR_OBJECT, .object = &qapi_blockdev_options },
    { .name = "key-secret", .type = SCHEMA_STR, .optional = true },
    { 0 },
};

static const SchemaObject luks_options = { .name = "BlockdevOptionsLUKS", .fields = luks_fields };

static const SchemaField blkverify_fields[] = {
    { .name = "test", .type = SCHEMA_STR_OR_OBJECT, .object = &qapi_blockdev_options },
    { .name = "raw", .type = SCHEMA_STR_OR_OBJECT, .object = &qapi_blockdev_options },
    { 0 },
};

static const SchemaObject blkverify_options = {
    .name = "BlockdevOptionsBlkverify", .fields = blkverify_fields,
};

static const char *const read_patterns[] = { "quorum", "fifo", NULL };
static const SchemaField quorum_child = {
    .name = "children", .type = SCHEMA_STR_OR_OBJECT, .object = &qapi_blockdev_options,
};
static const SchemaField quorum_fields[] = {
    { .name = "blkverify", .type = SCHEMA_BOOL, .optional = true },
    { .name = "children", .type = SCHEMA_LIST, .elem = &quorum_child },
    { .name = "vote-threshold", .type = SCHEMA_INT },
    { .name = "rewrite-corrupted", .type = SCHEMA_BOOL, .optional = true },
    { .name = "read-pattern", .type = SCHEMA_ENUM, .optional = true,
      .enum_values = read_patterns },
    { 0 },
};

static const SchemaObject quorum_options = {
    .name = "BlockdevOptionsQuorum", .fields = quorum_fields,
};

static const SchemaVariant driver_variants[] = {
    { "blkdebug", &blkdebug_options },
    { "blkverify", &blkverify_options },
    { "compress", &generic_file_options },
    { "copy-before-write", &cbw_options },
    { "copy-on-read", &cor_options },
    { "file", &file_options },
    { "host_device", &file_options },
    { "luks", &luks_options },
    { "nbd", &nbd_options },
    { "null-aio", &null_options },
    { "null-co", &null_options },
    { "preallocate", &prealloc_options },
    { "qcow2", &qcow2_options },
    { "quorum", &quorum_options },
    { "raw", &raw_options },
    { "rbd", &qapi_rbd_options },
    { "snapshot-access", &generic_file_options },
    { "throttle", &throttle_options },
    { NULL, NULL },
};

const SchemaObject qapi_blockdev_options = {
    .name = "BlockdevOptions",
    .fields = base_fields,
    .discriminator = "driver",
    .variants = driver_variants,
};

static const SchemaField blockdev_del_fields[] = {
    { .name = "node-name", .type = SCHEMA_STR },
    { 0 },
};

const SchemaObject qapi_blockdev_del_args = {
    .name = "blockdev-del-arg", .fields = blockdev_del_fields,
};

static const SchemaField query_nodes_fields[] = {
    { .name = "flat", .type = SCHEMA_BOOL, .optional = true },
    { 0 },
};

const SchemaObject qapi_query_named_block_nodes_args = {
    .name = "query-named-block-nodes-arg", .fields = query_nodes_fields,
};
