/*
 * create.c - bdrv_co_create(): dispatch on the driver, creation of files,
 * and the helpers creation code shares.
 *
 * Half: global state, in a coroutine of the main thread (block-create.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "blockd/block-create.h"
#include "blockd/block-global-state.h"
#include "blockd/coroutine.h"
#include "blockd/log.h"
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
    bool nocow;
    int64_t extent_hint;     /* 0: none */
    bool hint_given;         /* a failure to set it is worth a warning */
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

/*
 * Attributes an empty file takes: nocow (btrfs: no copy-on-write, which
 * fragments images), and an extent size hint (XFS: allocate in extents of
 * that size).  Both are hints: a file system without them is no error.
 */
static void set_file_attributes(FileCreate *c, int fd)
{
    int attr;
    struct fsxattr xattr;

    if (c->nocow && ioctl(fd, FS_IOC_GETFLAGS, &attr) == 0) {
        attr |= FS_NOCOW_FL;
        ioctl(fd, FS_IOC_SETFLAGS, &attr);
    }
    if (c->extent_hint) {
        int ret = ioctl(fd, FS_IOC_FSGETXATTR, &xattr);
        if (ret == 0) {
            xattr.fsx_xflags |= FS_XFLAG_EXTSIZE;
            xattr.fsx_extsize = (uint32_t)c->extent_hint;
            ret = ioctl(fd, FS_IOC_FSSETXATTR, &xattr);
        }
        if (ret < 0 && c->hint_given) {
            warn_report("Failed to set extent size hint: %s", strerror(errno));
        }
    }
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
    set_file_attributes(c, fd);
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
    FileCreate c = { .prealloc = PREALLOC_OFF, .extent_hint = 1024 * 1024 };
    int ret;

    if (!create_check_members(options, allowed, errp) ||
        !opt_get_str(options, "filename", &c.filename, errp) ||
        !opt_get_enum(options, "preallocation", create_prealloc_names, &c.prealloc, errp) ||
        !opt_get_bool(options, "nocow", &c.nocow, errp) ||
        !opt_get_size(options, "extent-size-hint", &c.extent_hint, errp)) {
        return -EINVAL;
    }
    c.hint_given = json_object_object_get_ex(options, "extent-size-hint", NULL);
    if ((uint64_t)c.extent_hint > UINT32_MAX) {
        error_setg(errp, "Extent size hint is too large");
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
