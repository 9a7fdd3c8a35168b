/*
 * create.c - bdrv_co_create(): dispatch on the driver, creation of files,
 * and the helpers creation code shares.
 *
 * Half: global state, in a coroutine of the main thread (block-create.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "blockd/block-create.h"
#include "blockd/block-global-state.h"
#include "blockd/coroutine.h"
#include "blockd/main-loop.h"
#include "blockd/options.h"
#include "blockd/thread-pool.h"
#include "block-internal.h"

/* ---- Shared helpers ---------------------------------------------------------------- */

typedef struct MainLoopCall {
    void (*fn)(void *opaque);
    void *opaque;
    Coroutine *co;
} MainLoopCall;

static void main_loop_call_bh(void *opaque)
{
    MainLoopCall *c = opaque;

    c->fn(c->opaque);
    aio_co_wake(c->co);
}

void coroutine_fn bdrv_co_run_in_main_loop(void (*fn)(void *opaque), void *opaque)
{
    MainLoopCall c = { fn, opaque, coroutine_self() };

    GLOBAL_STATE_CODE();
    aio_bh_schedule_oneshot(main_aio_context(), main_loop_call_bh, &c);
    coroutine_yield();
}

bool create_check_members(json_object *options, const char *const *allowed, Error **errp)
{
    json_object_object_foreach(options, key, val) {
        bool ok = false;
        (void)val;
        for (int i = 0; allowed[i]; i++) {
            ok = ok || strcmp(key, allowed[i]) == 0;
        }
        if (!ok) {
            error_setg(errp, "Parameter '%s' is unexpected", key);
            return false;
        }
    }
    return true;
}

bool create_get_size(json_object *options, int64_t *size, Error **errp)
{
    *size = -1;
    if (!opt_get_size(options, "size", size, errp)) {
        return false;
    }
    if (*size < 0) {
        error_setg(errp, "Parameter 'size' is missing");
        return false;
    }
    return true;
}

/* ---- file ---------------------------------------------------------------------------- */

enum { PREALLOC_OFF, PREALLOC_METADATA, PREALLOC_FALLOC, PREALLOC_FULL };
const char *const create_prealloc_names[] = { "off", "metadata", "falloc", "full", NULL };

typedef struct FileCreate {
    const char *filename;
    int64_t size;
    int prealloc;
    int err;                 /* errno of the failed step */
    const char *step;
} FileCreate;

/* Write real zeroes up to @size (preallocation=full). */
static int write_zeroes_fd(int fd, int64_t size)
{
    const int64_t chunk = 1024 * 1024;
    char *buf = calloc(1, chunk);
    int ret = 0;

    if (!buf) {
        return -ENOMEM;
    }
    for (int64_t off = 0; off < size && ret == 0; off += chunk) {
        int64_t n = size - off < chunk ? size - off : chunk;
        if (pwrite(fd, buf, n, off) != n) {
            ret = -errno ? -errno : -EIO;
        }
    }
    free(buf);
    return ret;
}

/* Blocking part, on the thread pool. */
static int file_create_work(void *opaque)
{
    FileCreate *c = opaque;
    int fd = open(c->filename, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    int ret = 0;

    if (fd < 0) {
        c->step = "Could not create '%s'";
        return -errno;
    }
    c->step = "Could not resize '%s'";
    if (ftruncate(fd, 0) < 0) {
        ret = -errno;
    } else if (c->prealloc == PREALLOC_FALLOC) {
        ret = -posix_fallocate(fd, 0, c->size);
        c->step = "Could not preallocate '%s'";
    } else if (c->prealloc == PREALLOC_FULL) {
        ret = write_zeroes_fd(fd, c->size);
        c->step = "Could not preallocate '%s'";
    } else if (ftruncate(fd, c->size) < 0) {
        ret = -errno;
    }
    if (ret == 0 && c->prealloc != PREALLOC_OFF && fsync(fd) < 0) {
        ret = -errno;
        c->step = "Could not flush '%s'";
    }
    close(fd);
    return ret;
}

static int coroutine_fn file_co_create(json_object *options, Error **errp)
{
    static const char *const allowed[] = {
        "driver", "filename", "size", "preallocation", "nocow", "extent-size-hint", NULL,
    };
    FileCreate c = { .prealloc = PREALLOC_OFF };
    int64_t hint = 0;
    bool nocow = false;
    int ret;

    if (!create_check_members(options, allowed, errp) ||
        !opt_get_str(options, "filename", &c.filename, errp) ||
        !opt_get_enum(options, "preallocation", create_prealloc_names, &c.prealloc, errp) ||
        !opt_get_bool(options, "nocow", &nocow, errp) ||
        !opt_get_size(options, "extent-size-hint", &hint, errp)) {
        return -EINVAL;
    }
    if (!c.filename) {
        error_setg(errp, "Parameter 'filename' is missing");
        return -EINVAL;
    }
    if (!create_get_size(options, &c.size, errp)) {
        return -EINVAL;
    }
    if (c.prealloc == PREALLOC_METADATA) {
        error_setg(errp, "Unsupported preallocation mode 'metadata'");
        return -ENOTSUP;
    }
    ret = thread_pool_submit_co(file_create_work, &c);
    if (ret < 0) {
        error_setg_errno(errp, -ret, c.step, c.filename);
    }
    return ret;
}

/* ---- Dispatch ------------------------------------------------------------------------ */

int coroutine_fn bdrv_co_create(json_object *options, Error **errp)
{
    const char *driver = NULL;

    GLOBAL_STATE_CODE();
    assert(in_coroutine());
    if (!json_object_is_type(options, json_type_object)) {
        error_setg(errp, "Invalid parameter type for 'options', expected: object");
        return -EINVAL;
    }
    if (!opt_get_str(options, "driver", &driver, errp)) {
        return -EINVAL;
    }
    if (!driver) {
        error_setg(errp, "Parameter 'driver' is missing");
        return -EINVAL;
    }
    if (strcmp(driver, "file") == 0) {
        return file_co_create(options, errp);
    }
    if (strcmp(driver, "qcow2") == 0) {
        return qcow2_co_create(options, errp);
    }
    if (bdrv_find_driver(driver)) {
        error_setg(errp, "Driver does not support blockdev-create");
        return -ENOTSUP;
    }
    error_setg(errp, "Parameter 'driver' does not accept value '%s'", driver);
    return -EINVAL;
}
