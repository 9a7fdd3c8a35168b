/*
 * qmp-cmds-create.c - the commands that format and reformat images:
 * blockdev-create and x-blockdev-amend, with their option schemas (QAPI
 * BlockdevCreateOptions, BlockdevAmendOptions) for the drivers blockd
 * can create or amend.  The work runs as a job (create-job.h).
 */
#include <string.h>

#include "blockd/block-create.h"
#include "blockd/block-global-state.h"
#include "blockd/block-int.h"
#include "blockd/create-job.h"
#include "blockd/main-loop.h"
#include "blockd/options.h"
#include "monitor-internal.h"
#include "qapi-schemas.h"

/* ---- blockdev-create ---------------------------------------------------------- */

/* QAPI BlockdevCreateOptions, for the drivers blockd can create. */
static const char *const create_driver_names[] = {
    "blkdebug", "blkverify", "compress", "copy-on-read", "file", "host_device", "luks", "nbd",
    "null-aio", "null-co", "preallocate", "qcow2", "quorum", "raw", "rbd", "throttle", NULL,
};
static const char *const prealloc_names[] = { "off", "metadata", "falloc", "full", NULL };
static const char *const qcow2_versions[] = { "v2", "v3", NULL };
static const char *const compression_types[] = { "zlib", "zstd", NULL };
/* QCryptoCipherAlgorithm, QCryptoCipherMode, QCryptoIVGenAlgorithm,
 * QCryptoHashAlgorithm: QEMU's whole enums (the luks driver refuses, by
 * name, the members blockd has no cipher for). */
static const char *const cipher_algs[] = {
    "aes-128", "aes-192", "aes-256", "des", "3des", "cast5-128", "serpent-128",
    "serpent-192", "serpent-256", "twofish-128", "twofish-192", "twofish-256", NULL,
};
static const char *const cipher_modes[] = { "ecb", "cbc", "xts", "ctr", NULL };
static const char *const ivgen_algs[] = { "plain", "plain64", "essiv", NULL };
static const char *const hash_algs[] = {
    "md5", "sha1", "sha224", "sha256", "sha384", "sha512", "ripemd160", NULL,
};

/* QCryptoBlockCreateOptionsLUKS's members (a luks image's and qcow2's encrypt). */
#define CRYPTO_LUKS_CREATE_FIELDS \
    { .name = "key-secret", .type = SCHEMA_STR, .optional = true }, \
    { .name = "cipher-alg", .type = SCHEMA_ENUM, .optional = true, \
      .enum_values = cipher_algs }, \
    { .name = "cipher-mode", .type = SCHEMA_ENUM, .optional = true, \
      .enum_values = cipher_modes }, \
    { .name = "ivgen-alg", .type = SCHEMA_ENUM, .optional = true, .enum_values = ivgen_algs }, \
    { .name = "ivgen-hash-alg", .type = SCHEMA_ENUM, .optional = true, \
      .enum_values = hash_algs }, \
    { .name = "hash-alg", .type = SCHEMA_ENUM, .optional = true, .enum_values = hash_algs }, \
    { .name = "iter-time", .type = SCHEMA_INT, .optional = true }

static const SchemaField create_base_fields[] = {
    { .name = "driver", .type = SCHEMA_ENUM, .enum_values = create_driver_names },
    { 0 },
};
static const SchemaField create_file_fields[] = {
    { .name = "filename", .type = SCHEMA_STR },
    { .name = "size", .type = SCHEMA_SIZE },
    { .name = "preallocation", .type = SCHEMA_ENUM, .optional = true,
      .enum_values = prealloc_names },
    { .name = "nocow", .type = SCHEMA_BOOL, .optional = true },
    { .name = "extent-size-hint", .type = SCHEMA_SIZE, .optional = true },
    { 0 },
};
static const SchemaObject create_file = {
    .name = "BlockdevCreateOptionsFile", .fields = create_file_fields,
};
/* QCryptoBlockCreateOptions: "qcow" (legacy AES, which blockd refuses by
 * name when it creates) or "luks". */
static const char *const crypto_create_formats[] = { "qcow", "luks", NULL };
static const SchemaField crypto_create_fields[] = {
    { .name = "format", .type = SCHEMA_ENUM, .enum_values = crypto_create_formats },
    { 0 },
};
static const SchemaField crypto_qcow_fields[] = {
    { .name = "key-secret", .type = SCHEMA_STR, .optional = true },
    { 0 },
};
static const SchemaField crypto_luks_fields[] = {
    CRYPTO_LUKS_CREATE_FIELDS,
    { 0 },
};
static const SchemaVariant crypto_create_variants[] = {
    { "qcow", &(const SchemaObject){ .name = "QCryptoBlockOptionsQCow",
                                     .fields = crypto_qcow_fields } },
    { "luks", &(const SchemaObject){ .name = "QCryptoBlockCreateOptionsLUKS",
                                     .fields = crypto_luks_fields } },
    { NULL, NULL },
};
static const SchemaObject crypto_create = {
    .name = "QCryptoBlockCreateOptions", .fields = crypto_create_fields,
    .discriminator = "format", .variants = crypto_create_variants,
};
static const SchemaField create_qcow2_fields[] = {
    { .name = "file", .type = SCHEMA_STR_OR_OBJECT, .object = &qapi_blockdev_options },
    { .name = "data-file", .type = SCHEMA_STR_OR_OBJECT, .optional = true,
      .object = &qapi_blockdev_options },
    { .name = "data-file-raw", .type = SCHEMA_BOOL, .optional = true },
    { .name = "extended-l2", .type = SCHEMA_BOOL, .optional = true },
    { .name = "size", .type = SCHEMA_SIZE },
    { .name = "version", .type = SCHEMA_ENUM, .optional = true, .enum_values = qcow2_versions },
    { .name = "backing-file", .type = SCHEMA_STR, .optional = true },
    { .name = "backing-fmt", .type = SCHEMA_ENUM, .optional = true,
      .enum_values = create_driver_names },
    { .name = "encrypt", .type = SCHEMA_OBJECT, .optional = true, .object = &crypto_create },
    { .name = "cluster-size", .type = SCHEMA_SIZE, .optional = true },
    { .name = "preallocation", .type = SCHEMA_ENUM, .optional = true,
      .enum_values = prealloc_names },
    { .name = "lazy-refcounts", .type = SCHEMA_BOOL, .optional = true },
    { .name = "refcount-bits", .type = SCHEMA_INT, .optional = true },
    { .name = "compression-type", .type = SCHEMA_ENUM, .optional = true,
      .enum_values = compression_types },
    { 0 },
};
static const SchemaObject create_qcow2 = {
    .name = "BlockdevCreateOptionsQcow2", .fields = create_qcow2_fields,
};
static const SchemaField create_luks_fields[] = {
    { .name = "file", .type = SCHEMA_STR_OR_OBJECT, .object = &qapi_blockdev_options },
    { .name = "size", .type = SCHEMA_SIZE },
    { .name = "preallocation", .type = SCHEMA_ENUM, .optional = true,
      .enum_values = prealloc_names },
    CRYPTO_LUKS_CREATE_FIELDS,
    { 0 },
};
static const SchemaObject create_luks = {
    .name = "BlockdevCreateOptionsLUKS", .fields = create_luks_fields,
};
static const SchemaField rbd_luks_create_fields[] = {
    { .name = "key-secret", .type = SCHEMA_STR },
    { .name = "cipher-alg", .type = SCHEMA_ENUM, .optional = true, .enum_values = cipher_algs },
    { 0 },
};
static const SchemaVariant rbd_encrypt_variants[] = {
    { "luks", &(const SchemaObject){ .name = "RbdEncryptionCreateOptionsLUKS",
                                     .fields = rbd_luks_create_fields } },
    { "luks2", &(const SchemaObject){ .name = "RbdEncryptionCreateOptionsLUKS2",
                                      .fields = rbd_luks_create_fields } },
    { NULL, NULL },
};
static const SchemaField create_rbd_fields[] = {
    { .name = "location", .type = SCHEMA_OBJECT, .object = &qapi_rbd_options },
    { .name = "size", .type = SCHEMA_SIZE },
    { .name = "cluster-size", .type = SCHEMA_SIZE, .optional = true },
    { .name = "encrypt", .type = SCHEMA_OBJECT, .optional = true,
      .object = &(const SchemaObject){ .name = "RbdEncryptionCreateOptions",
                                       .fields = qapi_rbd_encrypt_base_fields,
                                       .discriminator = "format",
                                       .variants = rbd_encrypt_variants } },
    { 0 },
};
static const SchemaObject create_rbd = {
    .name = "BlockdevCreateOptionsRbd", .fields = create_rbd_fields,
};
static const SchemaVariant create_variants[] = {
    { "file", &create_file },
    { "luks", &create_luks },
    { "qcow2", &create_qcow2 },
    { "rbd", &create_rbd },
    { NULL, NULL },
};
static const SchemaObject create_options = {
    .name = "BlockdevCreateOptions", .fields = create_base_fields,
    .discriminator = "driver", .variants = create_variants,
};
static const SchemaField create_fields[] = {
    { .name = "job-id", .type = SCHEMA_STR },
    { .name = "options", .type = SCHEMA_OBJECT, .object = &create_options },
    { 0 },
};
static const SchemaObject create_args = { .name = "blockdev-create-arg", .fields = create_fields };

/* Arguments are checked here, as QEMU does; what only the work can find
 * out (a missing node, an unwritable file) ends the job with an error. */
static json_object *qmp_blockdev_create(json_object *args, Error **errp)
{
    const char *job_id = NULL, *driver = NULL;
    json_object *options;

    GLOBAL_STATE_CODE();
    if (!opt_get_str(args, "job-id", &job_id, errp)) {
        return NULL;
    }
    json_object_object_get_ex(args, "options", &options);
    opt_get_str(options, "driver", &driver, NULL);
    if (!bdrv_can_create(driver)) {
        error_setg(errp, "Driver does not support blockdev-create");
        return NULL;
    }
    return create_job_start(job_id, options, errp) ? json_object_new_object() : NULL;
}

/* ---- x-blockdev-amend ------------------------------------------------------------ */

/* blockd's drivers, and luks (the other driver QEMU amends). */
static const char *const amend_drivers[] = {
    "blkdebug", "blkverify", "compress", "copy-on-read", "file", "host_device", "luks", "nbd",
    "null-aio", "null-co", "preallocate", "qcow2", "quorum", "raw", "throttle", NULL,
};
static const char *const crypto_formats[] = { "luks", NULL };
static const char *const keyslot_states[] = { "active", "inactive", NULL };
static const SchemaField luks_amend_fields[] = {
    { .name = "state", .type = SCHEMA_ENUM, .enum_values = keyslot_states },
    { .name = "new-secret", .type = SCHEMA_STR, .optional = true },
    { .name = "old-secret", .type = SCHEMA_STR, .optional = true },
    { .name = "keyslot", .type = SCHEMA_INT, .optional = true },
    { .name = "iter-time", .type = SCHEMA_INT, .optional = true },
    { .name = "secret", .type = SCHEMA_STR, .optional = true },
    { 0 },
};
static const SchemaField crypto_amend_fields[] = {
    { .name = "format", .type = SCHEMA_ENUM, .enum_values = crypto_formats },
    { 0 },
};
static const SchemaVariant crypto_amend_variants[] = {
    { "luks", &(const SchemaObject){ .name = "QCryptoBlockAmendOptionsLUKS",
                                     .fields = luks_amend_fields } },
    { NULL, NULL },
};
static const SchemaObject crypto_amend = {
    .name = "QCryptoBlockAmendOptions", .fields = crypto_amend_fields,
    .discriminator = "format", .variants = crypto_amend_variants,
};
static const SchemaField amend_base_fields[] = {
    { .name = "driver", .type = SCHEMA_ENUM, .enum_values = amend_drivers },
    { 0 },
};
static const SchemaField amend_qcow2_fields[] = {
    { .name = "encrypt", .type = SCHEMA_OBJECT, .optional = true, .object = &crypto_amend },
    { 0 },
};
static const SchemaVariant amend_variants[] = {
    { "qcow2", &(const SchemaObject){ .name = "BlockdevAmendOptionsQcow2",
                                      .fields = amend_qcow2_fields } },
    { "luks", &(const SchemaObject){ .name = "BlockdevAmendOptionsLUKS",
                                     .fields = luks_amend_fields } },
    { NULL, NULL },
};
static const SchemaObject amend_options = {
    .name = "BlockdevAmendOptions", .fields = amend_base_fields,
    .discriminator = "driver", .variants = amend_variants,
};
static const SchemaField amend_fields[] = {
    { .name = "job-id", .type = SCHEMA_STR },
    { .name = "node-name", .type = SCHEMA_STR },
    { .name = "options", .type = SCHEMA_OBJECT, .object = &amend_options },
    { .name = "force", .type = SCHEMA_BOOL, .optional = true },
    { 0 },
};
static const SchemaObject amend_args = { .name = "x-blockdev-amend-arg", .fields = amend_fields };

static json_object *qmp_blockdev_amend(json_object *args, Error **errp)
{
    const char *job_id = NULL, *node_name = NULL, *driver = NULL;
    json_object *options;
    BlockDriverState *bs;
    bool force = false;

    GLOBAL_STATE_CODE();
    if (!opt_get_str(args, "job-id", &job_id, errp) ||
        !opt_get_str(args, "node-name", &node_name, errp)) {
        return NULL;
    }
    json_object_object_get_ex(args, "options", &options);
    opt_get_str(options, "driver", &driver, NULL);
    if (!(bs = bdrv_find_node(node_name))) {
        error_setg(errp, "Cannot find device='' nor node-name='%s'", node_name);
        return NULL;
    }
    /* qcow2 and luks are the drivers of blockd's that QEMU amends this way. */
    if (strcmp(bs->drv->format_name, "qcow2") && strcmp(bs->drv->format_name, "luks")) {
        error_setg(errp, "Driver does not support x-blockdev-amend");
        return NULL;
    }
    if (strcmp(driver, bs->drv->format_name)) {
        error_setg(errp, "x-blockdev-amend doesn't support changing the block driver");
        return NULL;
    }
    opt_get_bool(args, "force", &force, NULL);
    return amend_job_start(job_id, bs, options, force, errp) ? json_object_new_object() : NULL;
}

const QmpCommand qmp_create_commands[] = {
    { .name = "x-blockdev-amend", .fn = qmp_blockdev_amend, .args = &amend_args },
    { .name = "blockdev-create", .fn = qmp_blockdev_create, .args = &create_args },
    { 0 },
};
