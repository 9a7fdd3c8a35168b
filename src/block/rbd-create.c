/*
 * rbd-create.c - blockdev-create with driver=rbd: a new RBD image in the
 * cluster, optionally LUKS-encrypted by librbd.
 *
 * "cluster-size" is the image's object size.  An encrypted image is made
 * larger by its encryption header, so that what a client sees after
 * loading the key is "size" bytes.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/options.h"
#include "blockd/secret.h"
#include "blockd/thread-pool.h"
#include "block-internal.h"
#include "rbd.h"

static const char *const cipher_names[] = { "aes-128", "aes-256", NULL };

typedef struct CreateJob {
    RbdTarget t;
    uint64_t size;
    int order;                   /* log2 of the object size; 0: Ceph's default */
    rbd_encryption_algorithm_t alg;
    Error *err;
} CreateJob;

/* Format the new image for encryption and grow it by the header. */
static int encrypt_image(CreateJob *job, rbd_image_t image)
{
    rbd_encryption_luks2_format_options_t o = {
        .alg = job->alg,
        .passphrase = job->t.passphrase,
        .passphrase_size = job->t.passphrase_len,
    };
    uint64_t visible;
    int r;

    r = rbd_encryption_format(image, (rbd_encryption_format_t)job->t.encrypt_format, &o,
                              sizeof(o));
    if (r < 0) {
        error_setg_errno(&job->err, -r, "encryption format fail");
        return r;
    }
    r = rbd_get_size(image, &visible);
    if (r >= 0 && visible < job->size) {
        r = rbd_resize(image, job->size + (job->size - visible));
    }
    if (r < 0) {
        error_setg_errno(&job->err, -r, "cannot resize the encrypted image");
    }
    return r;
}

static int create_worker(void *opaque)
{
    CreateJob *job = opaque;
    RbdCluster c;
    rbd_image_t image;
    int r, order = job->order;

    if (!rbd_cluster_connect(&c, &job->t, &job->err)) {
        return -EIO;
    }
    r = rbd_create(c.ioctx, job->t.image, job->size, &order);
    if (r < 0) {
        error_setg_errno(&job->err, -r, "error rbd create");
    } else if (job->t.encrypt_format >= 0) {
        r = rbd_open(c.ioctx, job->t.image, &image, NULL);
        if (r < 0) {
            error_setg_errno(&job->err, -r, "error opening image '%s' for encryption format",
                             job->t.image);
        } else {
            r = encrypt_image(job, image);
            rbd_close(image);
        }
        if (r < 0) {
            /* No unencrypted image left behind under the name. */
            rbd_remove(c.ioctx, job->t.image);
        }
    }
    rbd_cluster_disconnect(&c);
    return r;
}

/* The location's own "encrypt" is for opening an image: creating ignores
 * it, as qemu-storage-daemon does ("encrypt" beside "location" counts). */
static bool parse_location(CreateJob *job, json_object *loc, Error **errp)
{
    json_object *copy = json_object_new_object();
    bool ok;

    json_object_object_foreach(loc, key, val) {
        if (strcmp(key, "encrypt") != 0) {
            json_object_object_add(copy, key, json_object_get(val));
        }
    }
    ok = rbd_target_parse(&job->t, copy, errp);
    json_object_put(copy);
    return ok;
}

static bool parse_create(CreateJob *job, json_object *options, Error **errp)
{
    json_object *loc, *enc;
    int64_t size, objsize = 0;
    int alg = 1;

    if (!create_get_size(options, &size, errp) ||
        !opt_get_size(options, "cluster-size", &objsize, errp)) {
        return false;
    }
    json_object_object_get_ex(options, "location", &loc);
    if (json_object_object_get_ex(loc, "snapshot", &enc)) {
        error_setg(errp, "Can't use snapshot name for image creation");
        return false;
    }
    if (objsize) {
        if (objsize & (objsize - 1)) {
            error_setg(errp, "obj size needs to be power of 2");
            return false;
        }
        if (objsize < 4096) {
            error_setg(errp, "obj size too small");
            return false;
        }
        job->order = __builtin_ctzll((unsigned long long)objsize);
    }
    job->size = (uint64_t)size;
    if (!parse_location(job, loc, errp)) {
        return false;
    }
    if (json_object_object_get_ex(options, "encrypt", &enc)) {
        json_object *v;

        if (json_object_object_get_ex(enc, "cipher-alg", &v) &&
            !opt_parse_enum("cipher-alg", json_object_get_string(v), cipher_names, &alg, errp)) {
            return false;
        }
        job->alg = alg == 0 ? RBD_ENCRYPTION_ALGORITHM_AES128 : RBD_ENCRYPTION_ALGORITHM_AES256;
        if (!rbd_target_parse_encrypt(&job->t, enc, errp)) {
            return false;
        }
    }
    return true;
}

int coroutine_fn rbd_co_create(json_object *options, Error **errp)
{
    CreateJob job = { .order = 0 };
    int r = -EINVAL;

    job.t.encrypt_format = -1;
    if (parse_create(&job, options, errp)) {
        r = thread_pool_submit_co(create_worker, &job);
        if (r < 0) {
            error_propagate(errp, job.err);
        }
    }
    rbd_target_clear(&job.t);
    return r < 0 ? r : 0;
}
