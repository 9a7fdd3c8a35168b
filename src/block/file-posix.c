/*
 * file-posix.c - the "file" protocol driver: a regular POSIX file, and its
 * creation (blockdev-create).
 *
 * Data moves through the calling thread's async engine (io_uring by
 * default, Linux AIO with aio=native, or the thread pool with
 * aio=threads); fallocate, ftruncate and friends run on the thread pool.
 * Permissions are mirrored onto the file with OFD locks (file-lock.c).
 * The host_device driver (host-device.c) shares all but discard,
 * write-zeroes, block status, resizing and creation (file-posix.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "blockd/aio-engine.h"
#include "blockd/atomic.h"
#include "blockd/block-global-state.h"
#include "blockd/block-io.h"
#include "block-internal.h"
#include "blockd/iov.h"
#include "blockd/log.h"
#include "blockd/main-loop.h"
#include "blockd/options.h"
#include "blockd/thread-pool.h"
#include "file-lock.h"
#include "file-posix.h"

static const char *const aio_names[] = { "threads", "native", "io_uring", NULL };
static const char *const locking_names[] = { "auto", "on", "off", NULL };
static const char *const discard_names[] = { "ignore", "unmap", "off", "on", NULL };


/* ---- Options and open ------------------------------------------------------ */

static bool parse_cache(json_object *options, bool *direct, bool *no_flush, Error **errp)
{
    json_object *cache = NULL;

    if (!json_object_object_get_ex(options, "cache", &cache)) {
        return true;
    }
    if (!json_object_is_type(cache, json_type_object)) {
        error_setg(errp, "Invalid parameter type for 'cache', expected: object");
        return false;
    }
    return opt_get_bool(cache, "direct", direct, errp) &&
           opt_get_bool(cache, "no-flush", no_flush, errp);
}

/*
 * Is @fd on a filesystem that lives in memory?  Its page cache is the
 * file itself: a transfer is a copy that cannot wait for a disk, and such
 * filesystems refuse RWF_NOWAIT and make io_uring punt every request to a
 * kernel worker.
 */
static bool on_memory_fs(int fd)
{
    struct statfs fs;

    if (fstatfs(fd, &fs) < 0) {
        return false;
    }
    return fs.f_type == TMPFS_MAGIC || fs.f_type == RAMFS_MAGIC;
}

/* The smallest request size O_DIRECT accepts on this file. */
static uint32_t probe_alignment(int fd, bool is_blockdev)
{
    static const uint32_t sizes[] = { 512, 1024, 2048, 4096 };
    unsigned int sector = 0;
    void *buf = NULL;

    if (is_blockdev && ioctl(fd, BLKSSZGET, &sector) == 0 && sector) {
        return sector;
    }
    if (posix_memalign(&buf, 4096, 4096)) {
        return 4096;
    }
    for (unsigned i = 0; i < ARRAY_SIZE(sizes); i++) {
        ssize_t n = pread(fd, buf, sizes[i], 0);
        /* An empty file accepts anything: keep probing is pointless. */
        if (n == 0) {
            break;
        }
        if (n > 0) {
            free(buf);
            return sizes[i];
        }
    }
    free(buf);
    return 4096;
}

/* What O_DIRECT asks of requests, or nothing without it. */
static void set_alignment(BlockDriverState *bs)
{
    FileState *s = bs->opaque;

    bs->bl.request_alignment = s->direct ? probe_alignment(s->fd, s->is_blockdev) : 1;
    bs->bl.min_mem_alignment = !s->direct ? 0
                               : bs->bl.request_alignment > 4096 ? bs->bl.request_alignment
                                                                 : 4096;
}

int file_posix_open(BlockDriverState *bs, json_object *options, int flags, bool device,
                    Error **errp)
{
    FileState *s = bs->opaque;
    const char *filename = NULL;
    int aio = FILE_AIO_IO_URING, locking = FILE_LOCKING_AUTO, discard = 0;
    bool direct = false, no_flush = false;
    int open_flags = O_CLOEXEC;
    struct stat st;
    Error *err = NULL;

    s->fd = -1;
    if (!opt_get_str(options, "filename", &filename, errp) ||
        !opt_get_enum(options, "aio", aio_names, &aio, errp) ||
        !opt_get_enum(options, "locking", locking_names, &locking, errp) ||
        !opt_get_enum(options, "discard", discard_names, &discard, errp) ||
        !parse_cache(options, &direct, &no_flush, errp)) {
        return -1;
    }
    if (!filename) {
        error_setg(errp, "Parameter 'filename' is missing");
        return -1;
    }
    if (aio == FILE_AIO_NATIVE && !direct) {
        error_setg(errp, "aio=native was specified, but it requires cache.direct=on, "
                   "which was not specified.");
        return -1;
    }
    open_flags |= (flags & BDRV_O_RDWR) ? O_RDWR : O_RDONLY;
    if (direct) {
        open_flags |= O_DIRECT;
    }
    s->fd = open(filename, open_flags);
    /* auto-read-only: an image that refuses writing opens read-only. */
    if (s->fd < 0 && (flags & BDRV_O_RDWR) && (flags & BDRV_O_AUTO_RDONLY) &&
        (errno == EACCES || errno == EROFS || errno == EPERM)) {
        open_flags = (open_flags & ~O_RDWR) | O_RDONLY;
        s->fd = open(filename, open_flags);
        if (s->fd >= 0) {
            bs->read_only = true;
            bs->open_flags &= ~BDRV_O_RDWR;
        }
    }
    if (s->fd < 0) {
        error_setg_errno(errp, errno, "Could not open '%s'", filename);
        return -1;
    }
    if (fstat(s->fd, &st) < 0) {
        error_setg_errno(errp, errno, "Could not stat '%s'", filename);
        goto fail;
    }
    /* As QEMU: block devices are the host_device driver's. */
    if (!device && !S_ISREG(st.st_mode)) {
        error_setg(errp, "'file' driver requires '%s' to be a regular file", filename);
        goto fail;
    }
    if (device && !S_ISBLK(st.st_mode) && !S_ISCHR(st.st_mode)) {
        error_setg(errp, "'host_device' driver requires '%s' to be either a character or "
                   "block device", filename);
        goto fail;
    }
    s->is_blockdev = S_ISBLK(st.st_mode);
    s->filename = strdup(filename);
    s->aio = aio;
    s->use_lock = locking != FILE_LOCKING_OFF;
    s->discard_unmap = discard == 1 || discard == 3 || (flags & BDRV_O_UNMAP);
    s->lock.fd = s->fd;
    bd_mutex_init(&s->status_lock);
    bd_mutex_lock(&s->status_lock);
    s->data_start = s->data_end = 0;
    bd_mutex_unlock(&s->status_lock);
    if (no_flush) {
        bs->open_flags |= BDRV_O_NO_FLUSH;
    }
    if (direct) {
        bs->open_flags |= BDRV_O_NOCACHE;
    }
    s->direct = direct;
    s->memory_fs = !direct && on_memory_fs(s->fd);

    bs->total_bytes = lseek(s->fd, 0, SEEK_END);
    if (bs->total_bytes < 0) {
        error_setg_errno(errp, errno, "Could not get the size of '%s'", filename);
        goto fail;
    }
    set_alignment(bs);
    bs->bl.max_transfer = 16 * 1024 * 1024;

    if (s->aio == FILE_AIO_IO_URING && !luring_init_thread(&err)) {
        warn_report("%s: io_uring is not available (%s); using aio=threads",
                    filename, error_get_pretty(err));
        error_free(err);
        s->aio = FILE_AIO_THREADS;
    } else if (s->aio == FILE_AIO_NATIVE && !laio_init_thread(&err)) {
        error_propagate(errp, err);
        goto fail;
    }
    return 0;

fail:
    free(s->filename);
    s->filename = NULL;
    close(s->fd);
    s->fd = -1;
    return -1;
}

void file_close(BlockDriverState *bs)
{
    FileState *s = bs->opaque;

    if (s->fd >= 0) {
        close(s->fd);    /* releases the OFD locks too */
        bd_mutex_destroy(&s->status_lock);
    }
    free(s->filename);
}

/* ---- Permissions and image locking ------------------------------------------ */

int file_check_perm(BlockDriverState *bs, uint64_t perm, uint64_t shared,
                           Error **errp)
{
    FileState *s = bs->opaque;
    uint64_t old_perm = s->lock.locked_perm, old_unshared = s->lock.locked_unshared;

    if (!s->use_lock) {
        return 0;
    }
    /* Lock the union first, so nobody slips in between check and commit. */
    if (file_lock_apply(&s->lock, old_perm | perm, old_unshared | (~shared & BLK_PERM_ALL),
                        s->filename, errp) < 0 ||
        file_lock_check(&s->lock, perm, shared, s->filename, errp) < 0) {
        file_lock_apply(&s->lock, old_perm, old_unshared, s->filename, NULL);
        return -1;
    }
    return 0;
}

void file_set_perm(BlockDriverState *bs, uint64_t perm, uint64_t shared)
{
    FileState *s = bs->opaque;
    Error *err = NULL;

    if (s->use_lock &&
        file_lock_apply(&s->lock, perm, ~shared & BLK_PERM_ALL, s->filename, &err) < 0) {
        warn_report("%s", error_get_pretty(err));
        error_free(err);
    }
}

void file_abort_perm_update(BlockDriverState *bs)
{
    FileState *s = bs->opaque;
    Error *err = NULL;

    if (s->use_lock &&
        file_lock_apply(&s->lock, bs->perm, ~bs->shared_perm & BLK_PERM_ALL,
                        s->filename, &err) < 0) {
        warn_report("%s", error_get_pretty(err));
        error_free(err);
    }
}

/* ---- Reopen ------------------------------------------------------------------- */

/*
 * A new descriptor opened with @oflags takes the old one's number (dup2),
 * so nothing that kept the number needs to know.  The image locks belong
 * to the open file description: the new one takes the same locks first
 * (shared locks of one process do not conflict), and the old one's go
 * when dup2 closes it.  The node is drained.
 */
static int replace_fd(FileState *s, int oflags, Error **errp)
{
    int fd = open(s->filename, O_CLOEXEC | oflags);

    if (fd < 0) {
        error_setg_errno(errp, errno, "Could not reopen file");
        return -errno;
    }
    if (s->use_lock) {
        FileLock fresh = { .fd = fd };

        if (file_lock_apply(&fresh, s->lock.locked_perm, s->lock.locked_unshared,
                            s->filename, errp) < 0) {
            close(fd);
            return -EAGAIN;
        }
    }
    if (dup2(fd, s->fd) < 0) {
        error_setg_errno(errp, errno, "Could not reopen file");
        close(fd);
        return -errno;
    }
    close(fd);
    return 0;
}

static int file_access_mode(BlockDriverState *bs)
{
    return bs->read_only ? O_RDONLY : O_RDWR;
}

int file_reopen(BlockDriverState *bs, int flags, Error **errp)
{
    FileState *s = bs->opaque;
    int mode = (flags & BDRV_O_RDWR) ? O_RDWR : O_RDONLY;

    return replace_fd(s, mode | (s->direct ? O_DIRECT : 0), errp);
}

/* cache.direct on a running node: the requests' alignment follows. */
int file_set_cache(BlockDriverState *bs, bool direct, Error **errp)
{
    FileState *s = bs->opaque;
    int ret = replace_fd(s, file_access_mode(bs) | (direct ? O_DIRECT : 0), errp);

    if (ret < 0) {
        return ret;
    }
    s->direct = direct;
    s->memory_fs = !direct && on_memory_fs(s->fd);
    set_alignment(bs);
    return 0;
}

/* ---- Data ---------------------------------------------------------------------- */

/* Requests up to this size first try to complete from the page cache. */
#define FILE_NOWAIT_MAX (64 * 1024)

/* Transfers this thread did inline, for tests: per thread, so that the
 * I/O path bumps no cache line shared with other threads. */
static __thread uint64_t inline_count;

static ssize_t file_rw_sync(FileState *s, EngineOp op, int64_t offset,
                            struct iovec *iov, int niov, int rwf)
{
    return op == ENGINE_READ ? preadv2(s->fd, iov, niov, offset, rwf)
                             : pwritev2(s->fd, iov, niov, offset, rwf);
}

/*
 * A small buffered transfer that the page cache can serve right away
 * costs one system call here, against a submission, a completion and an
 * event-loop wake-up through the engine (and on tmpfs a kernel worker
 * thread too).  On disk filesystems RWF_NOWAIT makes the kernel fail
 * rather than block; on memory filesystems nothing blocks, so the plain
 * call is done.  Returns the byte count, or -1 to go through the engine.
 */
static int file_try_inline(FileState *s, EngineOp op, int64_t offset,
                           struct iovec *iov, int niov)
{
    bool write = op == ENGINE_WRITE;
    size_t total = 0;
    ssize_t n;

    if (s->direct || (op != ENGINE_READ && op != ENGINE_WRITE) ||
        (!s->memory_fs && atomic_read(&s->nowait_unsupported[write]))) {
        return -1;
    }
    for (int i = 0; i < niov; i++) {
        total += iov[i].iov_len;
    }
    if (total > FILE_NOWAIT_MAX) {
        return -1;
    }
    n = file_rw_sync(s, op, offset, iov, niov, s->memory_fs ? 0 : RWF_NOWAIT);
    if (n < 0 && !s->memory_fs && (errno == EOPNOTSUPP || errno == EINVAL)) {
        atomic_set(&s->nowait_unsupported[write], true);
    }
    /* A short transfer may be the end of the file, or a page that is not
     * cached: the engine does it again, whole, and reports any error. */
    if (n != (ssize_t)total) {
        return -1;
    }
    inline_count++;
    return (int)n;
}

uint64_t file_inline_count(void)
{
    return inline_count;
}

static int coroutine_fn file_submit(FileState *s, EngineOp op, int64_t offset,
                                    struct iovec *iov, int niov)
{
    int ret = file_try_inline(s, op, offset, iov, niov);

    if (ret >= 0) {
        return ret;
    }
    switch (s->aio) {
    case FILE_AIO_IO_URING:
        return luring_co_submit(s->fd, op, offset, iov, niov);
    case FILE_AIO_NATIVE:
        return laio_co_submit(s->fd, op, offset, iov, niov);
    case FILE_AIO_THREADS:
    default:
        return engine_co_submit_threads(s->fd, op, offset, iov, niov);
    }
}

int coroutine_fn file_co_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                       struct iovec *iov, int niov, int flags) GRAPH_RDLOCK
{
    int ret = file_submit(bs->opaque, ENGINE_READ, offset, iov, niov);

    (void)flags;
    if (ret < 0) {
        return ret;
    }
    if (ret < bytes) {
        /* End of file (the size changed underneath): zeroes. */
        iov_memset(iov, niov, ret, 0, bytes - ret);
    }
    return 0;
}

int coroutine_fn file_co_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                        struct iovec *iov, int niov, int flags) GRAPH_RDLOCK
{
    int ret = file_submit(bs->opaque, ENGINE_WRITE, offset, iov, niov);

    (void)flags;
    if (ret < 0) {
        return ret;
    }
    return ret == bytes ? 0 : -EIO;
}

int coroutine_fn file_co_flush(BlockDriverState *bs) GRAPH_RDLOCK
{
    int ret = file_submit(bs->opaque, ENGINE_FLUSH, 0, NULL, 0);
    return ret < 0 ? ret : 0;
}

/* ---- The data-extent cache --------------------------------------------------- */

/* Is [offset, ...) inside the cached data extent?  How far, if so. */
static int64_t cached_data(FileState *s, int64_t offset)
{
    int64_t len = 0;

    bd_mutex_lock(&s->status_lock);
    if (offset >= s->data_start && offset < s->data_end) {
        len = s->data_end - offset;
    }
    bd_mutex_unlock(&s->status_lock);
    return len;
}

static void cache_data(FileState *s, int64_t start, int64_t end)
{
    bd_mutex_lock(&s->status_lock);
    s->data_start = start;
    s->data_end = end;
    bd_mutex_unlock(&s->status_lock);
}

/* A hole may have appeared in [offset, offset+bytes): forget the extent. */
static void uncache_data(FileState *s, int64_t offset, int64_t bytes)
{
    bd_mutex_lock(&s->status_lock);
    if (offset < s->data_end && s->data_start < offset + bytes) {
        s->data_start = s->data_end = 0;
    }
    bd_mutex_unlock(&s->status_lock);
}

/* ---- Blocking operations on the thread pool ------------------------------------ */

typedef struct FileOp {
    int fd;
    int mode;
    int64_t offset;
    int64_t bytes;
} FileOp;

static int do_fallocate(void *opaque)
{
    FileOp *op = opaque;
    return fallocate(op->fd, op->mode, op->offset, op->bytes) < 0 ? -errno : 0;
}

static int do_ftruncate(void *opaque)
{
    FileOp *op = opaque;
    return ftruncate(op->fd, op->offset) < 0 ? -errno : 0;
}

static int coroutine_fn file_fallocate(FileState *s, int mode, int64_t offset, int64_t bytes)
{
    FileOp op = { s->fd, mode, offset, bytes };
    int ret;

    /* Before, so that no reader trusts the old extent once holes exist. */
    uncache_data(s, offset, bytes);
    ret = thread_pool_submit_co(do_fallocate, &op);

    /* Not supported by this file system (or device): let the caller fall back. */
    return ret == -EOPNOTSUPP || ret == -EINVAL || ret == -ENODEV ? -ENOTSUP : ret;
}

void file_count_discard(FileState *s, int ret, int64_t bytes)
{
    if (ret < 0) {
        atomic_fetch_add(&s->discard_nb_failed, 1);
    } else {
        atomic_fetch_add(&s->discard_nb_ok, 1);
        atomic_fetch_add(&s->discard_bytes_ok, (uint64_t)bytes);
    }
}

static int coroutine_fn file_co_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes) GRAPH_RDLOCK
{
    FileState *s = bs->opaque;
    int ret;

    if (!s->discard_unmap) {
        return -ENOTSUP;
    }
    ret = file_fallocate(s, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, bytes);
    file_count_discard(s, ret, bytes);
    return ret;
}

json_object *file_get_stats(BlockDriverState *bs)
{
    FileState *s = bs->opaque;
    json_object *o = json_object_new_object();

    json_object_object_add(o, "driver", json_object_new_string(bs->drv->format_name));
    json_object_object_add(o, "discard-nb-ok",
                           json_object_new_int64(atomic_read(&s->discard_nb_ok)));
    json_object_object_add(o, "discard-nb-failed",
                           json_object_new_int64(atomic_read(&s->discard_nb_failed)));
    json_object_object_add(o, "discard-bytes-ok",
                           json_object_new_int64(atomic_read(&s->discard_bytes_ok)));
    return o;
}

static int coroutine_fn file_co_pwrite_zeroes(BlockDriverState *bs, int64_t offset,
                                              int64_t bytes, int flags) GRAPH_RDLOCK
{
    FileState *s = bs->opaque;
    int ret = -ENOTSUP;

    /* A hole reads as zeroes and frees the space, if the user allows it. */
    if ((flags & BDRV_REQ_MAY_UNMAP) && s->discard_unmap) {
        ret = file_fallocate(s, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, bytes);
    }
    if (ret == -ENOTSUP) {
        ret = file_fallocate(s, FALLOC_FL_ZERO_RANGE, offset, bytes);
    }
    if (ret == -ENOTSUP) {
        /*
         * Some file systems (tmpfs) punch holes but cannot zero a range:
         * a hole reads as zeroes, and allocating it again keeps the range
         * allocated for a caller that did not allow unmapping.
         */
        ret = file_fallocate(s, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, bytes);
        if (ret == 0) {
            ret = file_fallocate(s, FALLOC_FL_KEEP_SIZE, offset, bytes);
            if (ret == -ENOTSUP && (flags & BDRV_REQ_MAY_UNMAP)) {
                ret = 0;    /* the hole alone will do */
            }
        }
    }
    return ret;
}

static int coroutine_fn file_co_block_status(BlockDriverState *bs, int64_t offset,
                                             int64_t bytes, int64_t *pnum) GRAPH_RDLOCK
{
    FileState *s = bs->opaque;
    off_t data, hole;
    int64_t cached;

    cached = cached_data(s, offset);
    if (cached > 0) {
        *pnum = cached < bytes ? cached : bytes;
        return BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED;
    }
    data = lseek(s->fd, offset, SEEK_DATA);
    if (data < 0) {
        if (errno == ENXIO) {
            /* No data after @offset: a hole up to the end. */
            *pnum = bytes;
            return BDRV_BLOCK_ZERO;
        }
        *pnum = bytes;
        return BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED;
    }
    if (data > offset) {
        *pnum = data - offset < bytes ? data - offset : bytes;
        return BDRV_BLOCK_ZERO;
    }
    hole = lseek(s->fd, offset, SEEK_HOLE);
    if (hole < 0 || hole <= offset) {
        *pnum = bytes;
        return BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED;
    }
    cache_data(s, offset, hole);
    *pnum = hole - offset < bytes ? hole - offset : bytes;
    return BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED;
}

static int coroutine_fn file_co_truncate(BlockDriverState *bs, int64_t size, Error **errp) GRAPH_RDLOCK
{
    FileState *s = bs->opaque;
    FileOp op = { .fd = s->fd, .offset = size };
    int ret;

    uncache_data(s, 0, INT64_MAX);
    ret = thread_pool_submit_co(do_ftruncate, &op);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Failed to resize '%s'", s->filename);
        return ret;
    }
    atomic_set(&bs->total_bytes, size);
    return 0;
}

int64_t file_get_allocated_file_size(BlockDriverState *bs)
{
    FileState *s = bs->opaque;
    struct stat st;

    return fstat(s->fd, &st) < 0 ? -errno : (int64_t)st.st_blocks * 512;
}

int file_get_info(BlockDriverState *bs, BlockDriverInfo *bdi)
{
    (void)bs;
    *bdi = (BlockDriverInfo){ 0 };
    return 0;
}

/* ---- Creation (blockdev-create) --------------------------------------------------------- */

enum { PREALLOC_OFF, PREALLOC_METADATA, PREALLOC_FALLOC, PREALLOC_FULL };

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

static int file_open(BlockDriverState *bs, json_object *options, int flags, Error **errp)
{
    return file_posix_open(bs, options, flags, false, errp);
}

const BlockDriver bdrv_file = {
    FILE_POSIX_COMMON_OPS,
    .format_name = "file",
    .bdrv_open = file_open,
    .bdrv_co_create = file_co_create,
    .bdrv_co_pdiscard = file_co_pdiscard,
    .bdrv_co_pwrite_zeroes = file_co_pwrite_zeroes,
    .bdrv_co_block_status = file_co_block_status,
    .bdrv_co_truncate = file_co_truncate,
    .supported_zero_flags = BDRV_REQ_MAY_UNMAP,
};
