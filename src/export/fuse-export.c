/*
 * fuse-export.c - the "fuse" export type: a node shown as a regular file
 * at "mountpoint" (itself a regular file), through libfuse3's low-level
 * API.  Options as qemu-storage-daemon takes them: "growable" (writes past
 * the end and truncate grow the node), "allow-other" (on, off, auto).
 *
 * The FUSE device is read in the export's context (non-blocking); each
 * request is processed in a coroutine of its own, so a request that waits
 * for I/O does not hold up the next.  While the node is drained, requests
 * already read wait before they touch it, as NBD's do.
 */
#define FUSE_USE_VERSION 314

#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "blockd/aio.h"
#include "blockd/block-backend-global-state.h"
#include "blockd/block-backend-io.h"
#include "blockd/coroutine.h"
#include "blockd/export-driver.h"
#include "blockd/aio-wait.h"
#include "blockd/atomic.h"
#include "blockd/main-loop.h"
#include "blockd/options.h"
#include "export-types.h"

typedef struct FuseExport {
    BlockExport *exp;
    struct fuse_session *se;
    char *mountpoint;
    bool growable;
    bool mounted;
    int fd;
    unsigned in_flight;                 /* atomic: requests being processed */
    struct stat st;                     /* owner, mode and times shown */
} FuseExport;

typedef struct FuseRequest {
    FuseExport *fe;
    struct fuse_buf buf;
} FuseRequest;

static const char *const on_off_auto[] = { "on", "off", "auto", NULL };

#define FUSE_MAX_READ (1 << 20)

/* ---- Requests ---------------------------------------------------------------- */

static BlockBackend *blk_of(FuseExport *fe)
{
    return blk_exp_blk(fe->exp);
}

/* A request starts: counted for drains, and not while the node is drained. */
static void begin(FuseExport *fe)
{
    blk_exp_co_request_begin(fe->exp);
}

/* A request that writes: refused on a read-only export (EACCES, replied
 * here); else begun, with the node's length in *@len. */
static bool begin_write(FuseExport *fe, fuse_req_t req, int64_t *len)
{
    if (!blk_exp_writable(fe->exp)) {
        fuse_reply_err(req, EACCES);
        return false;
    }
    begin(fe);
    *len = blk_co_getlength(blk_of(fe));
    return true;
}

static void end(FuseExport *fe)
{
    blk_exp_request_end(fe->exp);
}

static void fill_stat(FuseExport *fe, struct stat *st)
{
    int64_t len = blk_co_getlength(blk_of(fe));

    *st = fe->st;
    st->st_ino = FUSE_ROOT_ID;
    st->st_nlink = 1;
    st->st_size = len < 0 ? 0 : len;
    st->st_blksize = 512;
    st->st_blocks = (st->st_size + 511) / 512;
}

static void fuse_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    FuseExport *fe = fuse_req_userdata(req);
    struct stat st;

    (void)ino; (void)fi;
    begin(fe);
    fill_stat(fe, &st);
    end(fe);
    fuse_reply_attr(req, &st, 1.0);
}

/* Resize to @size (growable exports only grow past the node's size). */
static int resize(FuseExport *fe, int64_t size)
{
    Error *err = NULL;
    int ret = blk_co_truncate(blk_of(fe), size, &err);

    error_free(err);
    return ret;
}

static void fuse_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
                         struct fuse_file_info *fi)
{
    FuseExport *fe = fuse_req_userdata(req);
    int supported = FUSE_SET_ATTR_SIZE | FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID |
                    FUSE_SET_ATTR_GID;
    struct stat st;
    int ret = 0;

    (void)ino; (void)fi;
    if (to_set & ~supported) {
        fuse_reply_err(req, ENOTSUP);
        return;
    }
    if ((to_set & FUSE_SET_ATTR_SIZE) && !blk_exp_writable(fe->exp)) {
        fuse_reply_err(req, EACCES);
        return;
    }
    begin(fe);
    if (to_set & FUSE_SET_ATTR_SIZE) {
        ret = resize(fe, attr->st_size);
    }
    if (to_set & FUSE_SET_ATTR_MODE) {
        fe->st.st_mode = (fe->st.st_mode & S_IFMT) | (attr->st_mode & 07777);
    }
    if (to_set & FUSE_SET_ATTR_UID) {
        fe->st.st_uid = attr->st_uid;
    }
    if (to_set & FUSE_SET_ATTR_GID) {
        fe->st.st_gid = attr->st_gid;
    }
    fill_stat(fe, &st);
    end(fe);
    if (ret < 0) {
        fuse_reply_err(req, -ret);
    } else {
        fuse_reply_attr(req, &st, 1.0);
    }
}

static void fuse_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    fuse_reply_open(req, fi);
}

static void fuse_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                      struct fuse_file_info *fi)
{
    FuseExport *fe = fuse_req_userdata(req);
    int64_t len;
    void *buf;
    int ret;

    (void)ino; (void)fi;
    begin(fe);
    len = blk_co_getlength(blk_of(fe));
    if (len < 0 || off >= len) {
        end(fe);
        fuse_reply_buf(req, NULL, 0);
        return;
    }
    if ((int64_t)size > len - off) {
        size = len - off;
    }
    buf = malloc(size ? size : 1);
    ret = buf ? blk_co_pread(blk_of(fe), off, size, buf, 0) : -ENOMEM;
    end(fe);
    if (ret < 0) {
        fuse_reply_err(req, -ret);
    } else {
        fuse_reply_buf(req, buf, size);
    }
    free(buf);
}

static void fuse_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size,
                       off_t off, struct fuse_file_info *fi)
{
    FuseExport *fe = fuse_req_userdata(req);
    int64_t len;
    int ret = 0;

    (void)ino; (void)fi;
    if (!begin_write(fe, req, &len)) {
        return;
    }
    if (len >= 0 && off + (int64_t)size > len) {
        if (fe->growable) {
            ret = resize(fe, off + size);
        } else {
            size = off >= len ? 0 : len - off;     /* short, as a device is */
        }
    }
    if (ret >= 0 && size) {
        ret = blk_co_pwrite(blk_of(fe), off, size, buf, 0);
    }
    end(fe);
    if (ret < 0) {
        fuse_reply_err(req, -ret);
    } else {
        fuse_reply_write(req, size);
    }
}

static void fuse_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len,
                           struct fuse_file_info *fi)
{
    FuseExport *fe = fuse_req_userdata(req);
    int64_t size;
    int ret = 0;

    (void)ino; (void)fi;
    if (!begin_write(fe, req, &size)) {
        return;
    }
    if (mode & FALLOC_FL_KEEP_SIZE) {
        len = off >= size ? 0 : (off + len > size ? size - off : len);
    } else if (off + len > size) {
        ret = fe->growable ? resize(fe, off + len) : -ENOSPC;
    }
    if (ret >= 0 && len > 0) {
        if (mode & FALLOC_FL_PUNCH_HOLE) {
            ret = (mode & FALLOC_FL_KEEP_SIZE)
                  ? blk_co_pwrite_zeroes(blk_of(fe), off, len, BDRV_REQ_MAY_UNMAP) : -EINVAL;
        } else if (mode & FALLOC_FL_ZERO_RANGE) {
            ret = blk_co_pwrite_zeroes(blk_of(fe), off, len, 0);
        } else if (mode & ~FALLOC_FL_KEEP_SIZE) {
            ret = -EOPNOTSUPP;
        }
    }
    end(fe);
    fuse_reply_err(req, ret < 0 ? -ret : 0);
}

static void fuse_fsync(fuse_req_t req, fuse_ino_t ino, int datasync,
                       struct fuse_file_info *fi)
{
    FuseExport *fe = fuse_req_userdata(req);
    int ret;

    (void)ino; (void)datasync; (void)fi;
    begin(fe);
    ret = blk_co_flush(blk_of(fe));
    end(fe);
    fuse_reply_err(req, ret < 0 ? -ret : 0);
}

static void fuse_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    fuse_fsync(req, ino, 1, fi);
}

/* SEEK_DATA / SEEK_HOLE from block status: zeroes count as a hole. */
static void fuse_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
                       struct fuse_file_info *fi)
{
    FuseExport *fe = fuse_req_userdata(req);
    int64_t len, pnum;
    int ret = 0;

    (void)ino; (void)fi;
    if (whence != SEEK_DATA && whence != SEEK_HOLE) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    begin(fe);
    len = blk_co_getlength(blk_of(fe));
    while (off < len) {
        ret = blk_co_block_status(blk_of(fe), off, len - off, &pnum);
        if (ret < 0) {
            break;
        }
        if (((ret & BDRV_BLOCK_ZERO) != 0) == (whence == SEEK_HOLE)) {
            break;
        }
        off += pnum;
    }
    end(fe);
    if (ret < 0) {
        fuse_reply_err(req, -ret);
    } else if (off >= len) {
        /* No more data: ENXIO; the end of the file is a hole. */
        if (whence == SEEK_DATA) {
            fuse_reply_err(req, ENXIO);
        } else {
            fuse_reply_lseek(req, len);
        }
    } else {
        fuse_reply_lseek(req, off);
    }
}

/* The largest read must match the mount's max_read option. */
static void fuse_init(void *opaque, struct fuse_conn_info *conn)
{
    (void)opaque;
    conn->max_read = FUSE_MAX_READ;
    conn->max_write = FUSE_MAX_READ;
}

static const struct fuse_lowlevel_ops fuse_ops = {
    .init = fuse_init,
    .getattr = fuse_getattr,
    .setattr = fuse_setattr,
    .open = fuse_open,
    .read = fuse_read,
    .write = fuse_write,
    .fallocate = fuse_fallocate,
    .flush = fuse_flush,
    .fsync = fuse_fsync,
    .lseek = fuse_lseek,
};

/* ---- Reading the device -------------------------------------------------------- */

static void coroutine_fn process_entry(void *opaque)
{
    FuseRequest *r = opaque;
    FuseExport *fe = r->fe;

    fuse_session_process_buf(fe->se, &r->buf);
    free(r->buf.mem);
    free(r);
    atomic_dec(&fe->in_flight);
    aio_wait_kick();
}

static void device_readable(void *opaque)
{
    FuseExport *fe = opaque;

    for (;;) {
        FuseRequest *r = calloc(1, sizeof(*r));
        int ret;

        if (!r) {
            return;
        }
        r->fe = fe;
        ret = fuse_session_receive_buf(fe->se, &r->buf);
        if (ret <= 0) {
            free(r->buf.mem);
            free(r);
            if (ret == 0 || fuse_session_exited(fe->se)) {
                /* Unmounted from outside (fusermount -u): stop reading. */
                aio_set_fd_handler(blk_exp_ctx(fe->exp), fe->fd, NULL, NULL, NULL, NULL);
            }
            return;
        }
        atomic_inc(&fe->in_flight);
        coroutine_enter(coroutine_create(process_entry, r));
    }
}

/* ---- Mount and unmount ----------------------------------------------------------- */

static const char *get_str(json_object *o, const char *key)
{
    json_object *v;
    return json_object_object_get_ex(o, key, &v) ? json_object_get_string(v) : NULL;
}

/* A session mounted at fe->mountpoint, allow_other as asked. */
static bool mount_session(FuseExport *fe, bool allow_other, Error **errp)
{
    char opts[128];
    char *argv[] = { (char *)"blockd", (char *)"-o", opts, NULL };
    struct fuse_args args = FUSE_ARGS_INIT(3, argv);

    snprintf(opts, sizeof(opts), "max_read=%d,default_permissions%s", FUSE_MAX_READ,
             allow_other ? ",allow_other" : "");
    fe->se = fuse_session_new(&args, &fuse_ops, sizeof(fuse_ops), fe);
    fuse_opt_free_args(&args);          /* (libfuse may have copied them) */
    if (!fe->se) {
        error_setg(errp, "Failed to set up FUSE session");
        return false;
    }
    if (fuse_session_mount(fe->se, fe->mountpoint) < 0) {
        fuse_session_destroy(fe->se);
        fe->se = NULL;
        error_setg(errp, "Failed to mount FUSE session to export");
        return false;
    }
    return true;
}

/* Is @path (stat'ed into @st) mounted on: another file system than its
 * directory's? */
static bool is_mount_point(const char *path, const struct stat *st)
{
    char *dir = strdup(path), *slash = strrchr(dir, '/');
    struct stat dst;
    bool mounted;

    if (slash) {
        slash[slash == dir] = '\0';            /* "/x" -> "/" */
    }
    mounted = stat(slash ? dir : ".", &dst) == 0 && dst.st_dev != st->st_dev;
    free(dir);
    return mounted;
}

/* Mounting on top would hide the dead mount, not end it. */
static void stale_mount_error(const char *mp, Error **errp)
{
    error_setg(errp, "'%s' is already a mount point (a FUSE export whose daemon was "
               "killed?): unmount it with 'fusermount3 -u %s' first", mp, mp);
}

static void *fuse_create(BlockExport *exp, json_object *options, Error **errp)
{
    FuseExport *fe = calloc(1, sizeof(*fe));
    int allow_other = 2;               /* auto */
    struct stat st;

    if (!fe) {
        abort();
    }
    fe->exp = exp;
    fe->mountpoint = strdup(get_str(options, "mountpoint"));
    if (!opt_get_bool(options, "growable", &fe->growable, errp) ||
        !opt_get_enum(options, "allow-other", on_off_auto, &allow_other, errp)) {
        goto fail;
    }
    if (stat(fe->mountpoint, &st) < 0) {
        if (errno == ENOTCONN) {
            stale_mount_error(fe->mountpoint, errp);
        } else {
            error_setg_errno(errp, errno, "Failed to stat '%s'", fe->mountpoint);
        }
        goto fail;
    }
    if (is_mount_point(fe->mountpoint, &st)) {
        stale_mount_error(fe->mountpoint, errp);
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        error_setg(errp, "'%s' is not a regular file", fe->mountpoint);
        goto fail;
    }
    /* truncate may resize the node: a writable export holds that right
     * for as long as it exists (qemu-storage-daemon takes it per call). */
    if (blk_exp_writable(exp)) {
        uint64_t perm, shared;

        blk_get_perm(blk_exp_blk(exp), &perm, &shared);
        if (blk_set_perm(blk_exp_blk(exp), perm | BLK_PERM_RESIZE, shared, errp) < 0) {
            goto fail;
        }
    }
    fe->st = st;
    fe->st.st_mode = S_IFREG | S_IRUSR | (blk_exp_writable(exp) ? S_IWUSR : 0);
    if (!(allow_other != 1 && mount_session(fe, true, allow_other == 0 ? errp : NULL)) &&
        !(allow_other != 0 && mount_session(fe, false, errp))) {
        goto fail;
    }
    fe->mounted = true;
    fe->fd = fuse_session_fd(fe->se);
    fcntl(fe->fd, F_SETFL, fcntl(fe->fd, F_GETFL) | O_NONBLOCK);
    aio_set_fd_handler(blk_exp_ctx(exp), fe->fd, device_readable, NULL, NULL, fe);
    return fe;

fail:
    free(fe->mountpoint);
    free(fe);
    return NULL;
}

static void unwatch_bh(void *opaque)
{
    FuseExport *fe = opaque;

    aio_set_fd_handler(blk_exp_ctx(fe->exp), fe->fd, NULL, NULL, NULL, NULL);
}

/* Stop reading, let the requests in flight finish, unmount.  The reader
 * is stopped in its own thread: removed from here, it could still be
 * reading the device when the unmount closes it. */
static void fuse_request_shutdown(BlockExport *exp)
{
    FuseExport *fe = blk_exp_state(exp);

    if (!fe->mounted) {
        return;
    }
    aio_wait_bh_oneshot(blk_exp_ctx(exp), unwatch_bh, fe);
    AIO_WAIT_WHILE_UNLOCKED(NULL, atomic_read(&fe->in_flight) > 0);
    fuse_session_unmount(fe->se);
    fuse_session_destroy(fe->se);
    fe->se = NULL;
    fe->mounted = false;
}

static void fuse_free(void *state)
{
    FuseExport *fe = state;

    free(fe->mountpoint);
    free(fe);
}

const BlockExportDriver blk_exp_fuse = {
    .type = "fuse",
    .create = fuse_create,
    .request_shutdown = fuse_request_shutdown,
    .free = fuse_free,
};
