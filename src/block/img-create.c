/*
 * img-create.c - bdrv_img_create(): make a new image file of a format in
 * one call from the monitor, for the commands that create their own image
 * (blockdev-snapshot-sync, drive-mirror, drive-backup).  The work is
 * bdrv_co_create()'s, run in a coroutine of the main thread while the
 * caller waits in the main loop.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blockd/aio-wait.h"
#include "blockd/block-create.h"
#include "blockd/block-global-state.h"
#include "blockd/block-int.h"
#include "blockd/coroutine.h"
#include "blockd/main-loop.h"

typedef struct CreateCall {
    json_object *options;
    Error *err;
    int ret;
    bool done;
} CreateCall;

static void coroutine_fn create_entry(void *opaque)
{
    CreateCall *c = opaque;

    c->ret = bdrv_co_create(c->options, &c->err);
    c->done = true;
    aio_wait_kick();
}

/* bdrv_co_create() from outside a coroutine; the main loop runs meanwhile. */
static int create_sync(json_object *options, Error **errp)
{
    CreateCall c = { .options = options };

    aio_co_enter(main_aio_context(), coroutine_create(create_entry, &c));
    AIO_WAIT_WHILE(main_aio_context(), !c.done);
    if (c.ret < 0) {
        error_propagate(errp, c.err);
    }
    return c.ret;
}

static json_object *file_options(const char *filename)
{
    json_object *o = json_object_new_object();

    json_object_object_add(o, "driver", json_object_new_string("file"));
    json_object_object_add(o, "filename", json_object_new_string(filename));
    return o;
}

int bdrv_img_create(const char *filename, const char *fmt, const char *backing,
                    const char *backing_fmt, int64_t size, Error **errp)
{
    const BlockDriver *drv = bdrv_find_driver(fmt);
    json_object *o;
    int ret;

    GLOBAL_STATE_CODE();
    if (!drv) {
        error_setg(errp, "Unknown file format '%s'", fmt);
        return -EINVAL;
    }
    if (backing && !drv->supports_backing) {
        error_setg(errp, "Backing file not supported for file format '%s'", fmt);
        return -ENOTSUP;
    }
    if (!bdrv_can_create(fmt)) {
        error_setg(errp, "Format driver '%s' does not support image creation", fmt);
        return -ENOTSUP;
    }
    /* The file first: a format is written into a file that exists. */
    o = file_options(filename);
    json_object_object_add(o, "size", json_object_new_int64(strcmp(fmt, "file") &&
                                                            strcmp(fmt, "raw") ? 0 : size));
    ret = create_sync(o, errp);
    json_object_put(o);
    if (ret < 0 || !strcmp(fmt, "file") || !strcmp(fmt, "raw")) {
        return ret;
    }
    o = json_object_new_object();
    json_object_object_add(o, "driver", json_object_new_string(fmt));
    json_object_object_add(o, "file", file_options(filename));
    json_object_object_add(o, "size", json_object_new_int64(size));
    if (backing) {
        json_object_object_add(o, "backing-file", json_object_new_string(backing));
        if (backing_fmt) {
            json_object_object_add(o, "backing-fmt", json_object_new_string(backing_fmt));
        }
    }
    ret = create_sync(o, errp);
    json_object_put(o);
    return ret;
}

const char *bdrv_probe_format(const char *filename)
{
    static const unsigned char qcow2_magic[4] = { 'Q', 'F', 'I', 0xfb };
    unsigned char magic[4] = { 0 };
    int fd = open(filename, O_RDONLY | O_CLOEXEC);

    if (fd >= 0) {
        if (pread(fd, magic, 4, 0) != 4) {
            memset(magic, 0, 4);
        }
        close(fd);
    }
    return memcmp(magic, qcow2_magic, 4) == 0 ? "qcow2" : "raw";
}
