/*
 * test-block-drivers - the file, raw and blkdebug drivers on real files,
 * and image locking against a real qemu-io.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>

#include "block-internal.h"
#include "block-test-util.h"

#define IMG_SIZE (4 * 1024 * 1024)

static char img[64];

static int drv_setup(void **state)
{
    int fd;

    bt_setup(state);
    snprintf(img, sizeof(img), "/tmp/blockd-test-XXXXXX");
    fd = mkstemp(img);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, IMG_SIZE), 0);
    close(fd);
    return 0;
}

static int drv_teardown(void **state)
{
    assert_int_equal(bdrv_node_count(), 0);
    unlink(img);
    return tu_teardown(state);
}

#define DRV_TEST(fn) cmocka_unit_test_setup_teardown(fn, drv_setup, drv_teardown)

static BlockDriverState *open_fmt(const char *fmt, ...) BD_PRINTF(1, 2);
static BlockDriverState *open_fmt(const char *fmt, ...)
{
    char json[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(json, sizeof(json), fmt, ap);
    va_end(ap);
    return bt_open(json, &error_abort);
}

static void pattern(unsigned char *buf, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++) {
        buf[i] = (unsigned char)(seed * 31 + i * 13 + (i >> 12));
    }
}

static void test_missing_file(void **state)
{
    Error *err = NULL;

    (void)state;
    assert_null(bt_open("{\"driver\": \"file\", \"filename\": \"/nonexistent/x.img\"}", &err));
    assert_string_equal(error_get_pretty(err),
                        "Could not open '/nonexistent/x.img': No such file or directory");
    error_clear(&err);
    assert_null(bt_open("{\"driver\": \"file\"}", &err));
    assert_string_equal(error_get_pretty(err), "Parameter 'filename' is missing");
    error_clear(&err);
    assert_null(bt_open("{\"driver\": \"nosuch\"}", &err));
    assert_string_equal(error_get_pretty(err),
                        "Parameter 'driver' does not accept value 'nosuch'");
    error_clear(&err);
}

static void roundtrip(const char *aio, bool direct)
{
    BlockDriverState *bs = open_fmt("{\"driver\": \"file\", \"node-name\": \"f\", "
                                    "\"filename\": \"%s\", \"aio\": \"%s\", "
                                    "\"cache\": {\"direct\": %s}}",
                                    img, aio, direct ? "true" : "false");
    BlockBackend *blk = bt_backend(bs, BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE,
                                   BLK_PERM_ALL);
    size_t len = 256 * 1024;
    unsigned char *in = malloc(len), *out = malloc(len), *file = malloc(len);
    int fd;

    assert_int_equal(blk_getlength(blk), IMG_SIZE);
    pattern(in, len, (unsigned)strlen(aio) + direct);
    /* Unaligned on purpose: O_DIRECT goes through the bounce path. */
    assert_int_equal(blk_pwrite(blk, 1000, len, in, 0), 0);
    assert_int_equal(blk_flush(blk), 0);
    assert_int_equal(blk_pread(blk, 1000, len, out, 0), 0);
    assert_memory_equal(in, out, len);

    fd = open(img, O_RDONLY);
    assert_int_equal(pread(fd, file, len, 1000), (ssize_t)len);
    close(fd);
    assert_memory_equal(in, file, len);

    blk_unref(blk);
    bdrv_unref(bs);
    free(in);
    free(out);
    free(file);
}

static void test_roundtrip_threads(void **state)
{
    (void)state;
    roundtrip("threads", false);
}

static void test_roundtrip_io_uring(void **state)
{
    (void)state;
    roundtrip("io_uring", false);
    roundtrip("io_uring", true);
}

static void test_roundtrip_native(void **state)
{
    Error *err = NULL;

    (void)state;
    roundtrip("native", true);
    /* As QEMU: Linux AIO needs O_DIRECT. */
    assert_null(bt_open("{\"driver\": \"file\", \"filename\": \"/tmp\", \"aio\": \"native\"}",
                        &err));
    assert_non_null(strstr(error_get_pretty(err), "requires cache.direct=on"));
    error_clear(&err);
}

static bool path_fs_is(const char *path, long magic)
{
    struct statfs fs;

    assert_int_equal(statfs(path, &fs), 0);
    return fs.f_type == magic;
}

static bool path_on_memory_fs(const char *path)
{
    return path_fs_is(path, TMPFS_MAGIC) || path_fs_is(path, RAMFS_MAGIC);
}

/* Do @n bytes at 0 of @blk go inline (in this thread)?  The data must round-trip either way. */
static bool goes_inline(BlockBackend *blk, bool write, size_t n)
{
    unsigned char *buf = malloc(n), *back = malloc(n);
    uint64_t before = file_inline_count();
    bool ret;

    pattern(buf, n, (unsigned)n + write);
    if (write) {
        assert_int_equal(blk_pwrite(blk, 0, n, buf, 0), 0);
    } else {
        assert_int_equal(blk_pread(blk, 0, n, back, 0), 0);
    }
    ret = file_inline_count() != before;
    if (write) {
        assert_int_equal(blk_pread(blk, 0, n, back, 0), 0);
        assert_memory_equal(buf, back, n);
    }
    free(buf);
    free(back);
    return ret;
}

/*
 * Small buffered transfers on a memory filesystem (tmpfs refuses
 * RWF_NOWAIT, and io_uring hands every request to a kernel worker there)
 * are done inline; big ones and O_DIRECT ones go through the engine.
 */
static void test_inline_io_memory_fs(void **state)
{
    char path[64] = "/dev/shm/blockd-test-XXXXXX";
    int fd = mkstemp(path);
    BlockDriverState *bs;
    BlockBackend *blk;

    (void)state;
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, IMG_SIZE), 0);
    close(fd);
    assert_true(path_on_memory_fs(path));
    bs = open_fmt("{\"driver\": \"file\", \"filename\": \"%s\", \"aio\": \"io_uring\"}", path);
    blk = bt_backend(bs, BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE, BLK_PERM_ALL);
    assert_true(goes_inline(blk, true, 4096));
    assert_true(goes_inline(blk, false, 4096));
    assert_true(goes_inline(blk, false, 64 * 1024));
    assert_false(goes_inline(blk, false, 256 * 1024));
    blk_unref(blk);
    bdrv_unref(bs);
    unlink(path);
}

/*
 * A filesystem that refuses RWF_NOWAIT for buffered writes (ext4) still
 * takes it for reads: a refused write must not turn the read fast path
 * off.  (It did, when one flag covered both directions.)
 */
static void test_inline_read_survives_write_refusal(void **state)
{
    char path[64] = "/var/tmp/blockd-test-XXXXXX";    /* on disk, not tmpfs, as a rule */
    int fd = mkstemp(path);
    BlockDriverState *bs;
    BlockBackend *blk;
    bool read_inline;
    static char page[4096];

    (void)state;
    assert_true(fd >= 0);
    /* Written data, so the first page is allocated and in the page cache. */
    assert_int_equal(write(fd, memset(page, 0x5a, sizeof(page)), sizeof(page)),
                     (ssize_t)sizeof(page));
    close(fd);
    bs = open_fmt("{\"driver\": \"file\", \"filename\": \"%s\", \"aio\": \"io_uring\"}", path);
    blk = bt_backend(bs, BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE, BLK_PERM_ALL);
    read_inline = goes_inline(blk, false, 4096);
    for (int i = 0; i < 3; i++) {
        goes_inline(blk, true, 4096);      /* ext4: refused, goes to the engine */
        assert_int_equal(goes_inline(blk, false, 4096), read_inline);
    }
    /* Memory filesystems go inline; ext4, XFS and btrfs take RWF_NOWAIT
     * reads of cached pages.  (Elsewhere only the comparison above holds.) */
    if (path_on_memory_fs(path) || path_fs_is(path, EXT4_SUPER_MAGIC) ||
        path_fs_is(path, XFS_SUPER_MAGIC) || path_fs_is(path, BTRFS_SUPER_MAGIC)) {
        assert_true(read_inline);
    }
    blk_unref(blk);
    bdrv_unref(bs);
    unlink(path);
}

/* Segments of the file as SEEK_DATA/SEEK_HOLE describe them. */
static bool seek_is_data(int fd, off_t off, off_t *end)
{
    off_t data = lseek(fd, off, SEEK_DATA);

    if (data < 0 || data > off) {
        *end = data < 0 ? IMG_SIZE : data;
        return false;
    }
    *end = lseek(fd, off, SEEK_HOLE);
    return true;
}

static void test_block_status_matches_seek_data(void **state)
{
    BlockDriverState *bs;
    BlockBackend *blk;
    unsigned char buf[65536];
    int fd = open(img, O_WRONLY);
    int64_t off = 0;
    int segments = 0;

    (void)state;
    memset(buf, 0xab, sizeof(buf));
    assert_int_equal(pwrite(fd, buf, sizeof(buf), 1 << 20), (ssize_t)sizeof(buf));
    assert_int_equal(pwrite(fd, buf, 4096, 3 << 20), 4096);
    fsync(fd);
    close(fd);

    bs = open_fmt("{\"driver\": \"file\", \"filename\": \"%s\"}", img);
    blk = bt_backend(bs, BLK_PERM_CONSISTENT_READ, BLK_PERM_ALL);
    fd = open(img, O_RDONLY);
    while (off < IMG_SIZE) {
        int64_t pnum;
        off_t end;
        int ret = bt_run(blk, 's', off, IMG_SIZE - off, 0, &pnum);
        bool data = seek_is_data(fd, off, &end);

        assert_true(ret >= 0);
        assert_true(pnum > 0);
        assert_int_equal(!!(ret & BDRV_BLOCK_DATA), data);
        assert_int_equal(!!(ret & BDRV_BLOCK_ZERO), !data);
        assert_int_equal(off + pnum, end > IMG_SIZE ? IMG_SIZE : end);
        off += pnum;
        segments++;
    }
    close(fd);
    /* hole, data, hole, data, hole (file systems may merge, never split). */
    assert_true(segments >= 3);
    blk_unref(blk);
    bdrv_unref(bs);
}

static void test_write_zeroes_punches_hole(void **state)
{
    BlockDriverState *bs;
    BlockBackend *blk;
    unsigned char buf[1 << 20];
    struct stat before, after;
    int64_t pnum;
    int fd = open(img, O_WRONLY);

    (void)state;
    memset(buf, 0x5a, sizeof(buf));
    assert_int_equal(pwrite(fd, buf, sizeof(buf), 0), (ssize_t)sizeof(buf));
    fsync(fd);
    close(fd);
    stat(img, &before);

    bs = open_fmt("{\"driver\": \"file\", \"filename\": \"%s\", \"discard\": \"unmap\"}", img);
    blk = bt_backend(bs, BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE, BLK_PERM_ALL);
    /* Data first: the driver remembers this extent... */
    assert_int_equal(bt_run(blk, 's', 0, 1 << 20, 0, &pnum),
                     BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED);
    assert_int_equal(bt_run(blk, 's', 4096, 4096, 0, &pnum),
                     BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED);
    /* ...and must forget it when a hole is punched. */
    assert_int_equal(bt_run(blk, 'z', 0, 1 << 20, BDRV_REQ_MAY_UNMAP, NULL), 0);
    stat(img, &after);
    assert_true(after.st_blocks < before.st_blocks);
    assert_int_equal(bt_run(blk, 's', 0, 1 << 20, 0, &pnum), BDRV_BLOCK_ZERO);
    assert_int_equal(pnum, 1 << 20);
    assert_int_equal(blk_pread(blk, 4096, 4096, buf, 0), 0);
    for (int i = 0; i < 4096; i++) {
        assert_int_equal(buf[i], 0);
    }
    /* Discard too. */
    assert_int_equal(blk_pwrite(blk, 0, 65536, buf + 100000, 0), 0);
    assert_int_equal(bt_run(blk, 'd', 0, 65536, 0, NULL), 0);
    assert_int_equal(bt_run(blk, 's', 0, 65536, 0, &pnum), BDRV_BLOCK_ZERO);
    blk_unref(blk);
    bdrv_unref(bs);
}

/*
 * Zeroing must work on every file system, fast when asked to be fast:
 * tmpfs has no FALLOC_FL_ZERO_RANGE but punches holes.  (blockd answered
 * EOPNOTSUPP to an NBD fast zero on tmpfs, where qemu-storage-daemon
 * zeroes.)  With and without leave to unmap, with discard=ignore.
 */
static void test_fast_zero_on_memory_fs(void **state)
{
    char path[64] = "/dev/shm/blockd-test-XXXXXX";
    static unsigned char buf[1 << 16];
    int fd = mkstemp(path);
    BlockDriverState *bs;
    BlockBackend *blk;
    const int flags[] = { BDRV_REQ_NO_FALLBACK, BDRV_REQ_NO_FALLBACK | BDRV_REQ_MAY_UNMAP, 0 };

    (void)state;
    assert_true(fd >= 0);
    assert_true(path_on_memory_fs(path));
    memset(buf, 0x5a, sizeof(buf));
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pwrite(fd, buf, sizeof(buf), i * (off_t)sizeof(buf)), (ssize_t)sizeof(buf));
    }
    close(fd);
    bs = open_fmt("{\"driver\": \"raw\", \"file\": {\"driver\": \"file\", "
                  "\"filename\": \"%s\"}}", path);
    blk = bt_backend(bs, BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE, BLK_PERM_ALL);
    for (int i = 0; i < 3; i++) {
        int64_t off = i * (int64_t)sizeof(buf) + 4096;

        assert_int_equal(bt_run(blk, 'z', off, 8192, flags[i], NULL), 0);
        assert_int_equal(blk_pread(blk, off - 4096, 16384, buf, 0), 0);
        for (int j = 0; j < 16384; j++) {
            assert_int_equal(buf[j], j < 4096 || j >= 12288 ? 0x5a : 0);
        }
    }
    blk_unref(blk);
    bdrv_unref(bs);
    unlink(path);
}

/* Run qemu-io on the image; returns its exit status, stderr in @err. */
static int run_qemu_io(const char *args, char *err, size_t errlen)
{
    char cmd[512];
    FILE *p;
    size_t n;
    int status;

    snprintf(cmd, sizeof(cmd), "qemu-io %s '%s' 2>&1 >/dev/null", args, img);
    p = popen(cmd, "r");
    assert_non_null(p);
    n = fread(err, 1, errlen - 1, p);
    err[n] = '\0';
    status = pclose(p);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

#define PERM_RW (BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE)
/* Like a VM's disk without share-rw: nobody else may write. */
#define SHARE_NO_WRITE (BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE_UNCHANGED | BLK_PERM_RESIZE)

static BlockDriverState *open_raw_file(const char *extra)
{
    return open_fmt("{\"driver\": \"raw\", \"file\": {\"driver\": \"file\", "
                    "\"filename\": \"%s\"%s}}", img, extra);
}

static void test_image_locking_against_qemu_io(void **state)
{
    BlockDriverState *bs;
    BlockBackend *blk;
    char err[4096];
    Error *local = NULL;
    pid_t pid;

    (void)state;
    /* We write and share no writing: a second writer is refused, readers not. */
    bs = open_raw_file("");
    blk = bt_backend(bs, PERM_RW, SHARE_NO_WRITE);
    assert_int_not_equal(run_qemu_io("-f raw -c 'read 0 512'", err, sizeof(err)), 0);
    assert_non_null(strstr(err, "Failed to get \"write\" lock"));
    assert_int_equal(run_qemu_io("-r -f raw -c 'read 0 512'", err, sizeof(err)), 0);
    assert_int_equal(run_qemu_io("-r -U -f raw -c 'read 0 512'", err, sizeof(err)), 0);
    blk_unref(blk);
    bdrv_unref(bs);
    /* Released with the node: the writer may come now. */
    assert_int_equal(run_qemu_io("-f raw -c 'write 0 512'", err, sizeof(err)), 0);

    /* qemu-io writes: we may not forbid writing, but may write alongside. */
    pid = fork();
    if (pid == 0) {
        execlp("qemu-io", "qemu-io", "-f", "raw", "-c", "sleep 3000", img, (char *)NULL);
        _exit(127);
    }
    tu_sleep_ms(700);
    bs = open_raw_file("");
    blk = blk_new(PERM_RW, SHARE_NO_WRITE);
    assert_int_equal(blk_insert_bs(blk, bs, &local), -1);
    assert_non_null(strstr(error_get_pretty(local), "Failed to get shared \"write\" lock"));
    assert_non_null(strstr(error_get_hint(local), "Is another process using the image"));
    error_clear(&local);
    /* The failed attempt left nothing behind: a sharing writer is fine. */
    blk_unref(blk);
    blk = bt_backend(bs, PERM_RW, BLK_PERM_ALL);
    blk_unref(blk);
    bdrv_unref(bs);

    /* locking=off does not look. */
    bs = open_raw_file(", \"locking\": \"off\"");
    blk = bt_backend(bs, PERM_RW, SHARE_NO_WRITE);
    blk_unref(blk);
    bdrv_unref(bs);
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
}

static void test_raw_window(void **state)
{
    BlockDriverState *bs;
    BlockBackend *blk;
    unsigned char in[4096], out[4096];
    Error *err = NULL;
    int fd;

    (void)state;
    bs = open_fmt("{\"driver\": \"raw\", \"offset\": 65536, \"size\": 131072, "
                  "\"file\": {\"driver\": \"file\", \"filename\": \"%s\"}}", img);
    blk = bt_backend(bs, BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE, BLK_PERM_ALL);
    assert_int_equal(blk_getlength(blk), 131072);
    pattern(in, sizeof(in), 42);
    assert_int_equal(blk_pwrite(blk, 0, sizeof(in), in, 0), 0);
    fd = open(img, O_RDONLY);
    assert_int_equal(pread(fd, out, sizeof(out), 65536), (ssize_t)sizeof(out));
    close(fd);
    assert_memory_equal(in, out, sizeof(in));
    assert_int_equal(blk_pread(blk, 131072 - 100, 200, out, 0), -EIO);
    blk_unref(blk);
    bdrv_unref(bs);

    assert_null(bt_open("{\"driver\": \"raw\", \"size\": 99999999, "
                        "\"file\": {\"driver\": \"null-co\", \"size\": 1024}}", &err));
    assert_non_null(strstr(error_get_pretty(err), "has to be smaller or equal"));
    error_clear(&err);
}

static void test_blkdebug_rules(void **state)
{
    BlockDriverState *bs;
    BlockBackend *blk;
    unsigned char buf[4096] = { 0 };

    (void)state;
    bs = bt_open("{\"driver\": \"blkdebug\", \"node-name\": \"dbg\", \"discard\": \"unmap\", "
                 "\"image\": {\"driver\": \"null-co\", \"size\": 1048576, \"read-zeroes\": true},"
                 "\"inject-error\": ["
                 "  {\"iotype\": \"read\", \"sector\": 8, \"once\": true},"
                 "  {\"iotype\": \"write\", \"nth\": 3, \"errno\": 28},"
                 "  {\"iotype\": \"flush\", \"errno\": 5},"
                 "  {\"iotype\": \"discard\", \"offset\": 65536, \"bytes\": 4096}"
                 "]}", &error_abort);
    blk = bt_backend(bs, BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE, BLK_PERM_ALL);

    /* Sector 8 = offset 4096: once. */
    assert_int_equal(blk_pread(blk, 0, 4096, buf, 0), 0);
    assert_int_equal(blk_pread(blk, 4096, 512, buf, 0), -EIO);
    assert_int_equal(blk_pread(blk, 4096, 512, buf, 0), 0);
    /* The third write, and only it, fails with ENOSPC. */
    assert_int_equal(blk_pwrite(blk, 0, 512, buf, 0), 0);
    assert_int_equal(blk_pwrite(blk, 0, 512, buf, 0), 0);
    assert_int_equal(blk_pwrite(blk, 0, 512, buf, 0), -ENOSPC);
    assert_int_equal(blk_pwrite(blk, 0, 512, buf, 0), 0);
    /* Always, for flush. */
    assert_int_equal(blk_flush(blk), -EIO);
    assert_int_equal(blk_flush(blk), -EIO);
    /* Discard only in its range. */
    assert_int_equal(bt_run(blk, 'd', 0, 4096, 0, NULL), 0);
    assert_int_equal(bt_run(blk, 'd', 65536, 512, 0, NULL), -EIO);
    /* Reads elsewhere are unaffected. */
    assert_int_equal(blk_pread(blk, 65536, 512, buf, 0), 0);
    blk_unref(blk);
    bdrv_unref(bs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        DRV_TEST(test_missing_file),
        DRV_TEST(test_roundtrip_threads),
        DRV_TEST(test_roundtrip_io_uring),
        DRV_TEST(test_roundtrip_native),
        DRV_TEST(test_inline_io_memory_fs),
        DRV_TEST(test_inline_read_survives_write_refusal),
        DRV_TEST(test_block_status_matches_seek_data),
        DRV_TEST(test_write_zeroes_punches_hole),
        DRV_TEST(test_fast_zero_on_memory_fs),
        DRV_TEST(test_image_locking_against_qemu_io),
        DRV_TEST(test_raw_window),
        DRV_TEST(test_blkdebug_rules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
