/*
 * test-qcow2-create - bdrv_co_create() for "file" and "qcow2", run in a
 * coroutine of the main thread as the blockdev-create job does, checked
 * with qemu-img (check, info) and by writing and reading the new image
 * through the qcow2 driver.
 */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include "block-test-util.h"
#include "blockd/block-create.h"

static char dir[64];
static char img[128];

static int create_setup(void **state)
{
    bt_setup(state);
    snprintf(dir, sizeof(dir), "/tmp/blockd-create-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(img, sizeof(img), "%s/a.qcow2", dir);
    return 0;
}

static int create_teardown(void **state)
{
    char cmd[160];

    assert_int_equal(bdrv_node_count(), 0);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
    return tu_teardown(state);
}

#define CREATE_TEST(fn) cmocka_unit_test_setup_teardown(fn, create_setup, create_teardown)

typedef struct CreateCall {
    json_object *opts;
    Error *err;
    int ret;
    bool done;
} CreateCall;

static void coroutine_fn create_entry(void *opaque)
{
    CreateCall *c = opaque;

    c->ret = bdrv_co_create(c->opts, &c->err);
    atomic_store_release(&c->done, true);
    aio_wait_kick();
}

/* Run bdrv_co_create() on JSON text; returns its result, *errp the error. */
static int create_json(const char *json, Error **errp)
{
    CreateCall c = { .opts = json_tokener_parse(json) };

    if (!c.opts) {
        fprintf(stderr, "bad JSON in test: %s\n", json);
        abort();
    }
    coroutine_enter(coroutine_create(create_entry, &c));
    if (!TU_POLL_UNTIL(atomic_load_acquire(&c.done), 60000)) {
        fprintf(stderr, "bdrv_co_create did not complete\n");
        abort();
    }
    json_object_put(c.opts);
    if (errp) {
        *errp = c.err;
    } else if (c.err) {
        fprintf(stderr, "unexpected error: %s\n", error_get_pretty(c.err));
        error_free(c.err);
    }
    return c.ret;
}

static int create_fmt(Error **errp, const char *fmt, ...) BD_PRINTF(2, 3);
static int create_fmt(Error **errp, const char *fmt, ...)
{
    char json[2048];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(json, sizeof(json), fmt, ap);
    va_end(ap);
    return create_json(json, errp);
}

/* The output of a shell command (at most 64 KiB). */
static char *run_cmd(const char *cmd, int *status)
{
    FILE *p = popen(cmd, "r");
    char *out = calloc(1, 65536);
    size_t n;

    assert_non_null(p);
    n = fread(out, 1, 65535, p);
    out[n] = '\0';
    *status = pclose(p);
    return out;
}

/* qemu-img info --output=json of @path, parsed. */
static json_object *qemu_info(const char *path)
{
    char cmd[256];
    int status;
    char *out;
    json_object *o;

    snprintf(cmd, sizeof(cmd), "qemu-img info -U --output=json '%s'", path);
    out = run_cmd(cmd, &status);
    assert_int_equal(status, 0);
    o = json_tokener_parse(out);
    assert_non_null(o);
    free(out);
    return o;
}

/* qemu-img check finds nothing at all (exit status 0, no leaks). */
static void assert_check_clean(const char *path)
{
    char cmd[256];
    int status;
    char *out;

    snprintf(cmd, sizeof(cmd), "qemu-img check -U '%s' 2>&1", path);
    out = run_cmd(cmd, &status);
    if (status != 0 || !strstr(out, "No errors were found")) {
        fprintf(stderr, "%s", out);
    }
    assert_int_equal(status, 0);
    assert_non_null(strstr(out, "No errors were found"));
    free(out);
}

static json_object *get(json_object *o, const char *path)
{
    char buf[128], *save = NULL;

    snprintf(buf, sizeof(buf), "%s", path);
    for (char *k = strtok_r(buf, ".", &save); k; k = strtok_r(NULL, ".", &save)) {
        json_object *v = NULL;
        if (!json_object_object_get_ex(o, k, &v)) {
            fail_msg("no '%s' in qemu-img info", path);
        }
        o = v;
    }
    return o;
}

/* Create a file node then format it as qcow2 with @extra members. */
static void make_qcow2(int64_t size, const char *extra)
{
    create_fmt(NULL, "{\"driver\": \"file\", \"filename\": \"%s\", \"size\": 0}", img);
    assert_int_equal(create_fmt(NULL, "{\"driver\": \"qcow2\", \"file\": {\"driver\": "
                                "\"file\", \"filename\": \"%s\"}, \"size\": %lld%s%s}",
                                img, (long long)size, *extra ? ", " : "", extra), 0);
}

/* ---- Tests ------------------------------------------------------------------------ */

static void test_file(void **state)
{
    struct stat st;
    char path[160];

    (void)state;
    snprintf(path, sizeof(path), "%s/f.raw", dir);
    assert_int_equal(create_fmt(NULL, "{\"driver\": \"file\", \"filename\": \"%s\", "
                                "\"size\": 3145728}", path), 0);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_size, 3145728);
    assert_true(st.st_blocks * 512 < 65536);            /* sparse */
    assert_int_equal(create_fmt(NULL, "{\"driver\": \"file\", \"filename\": \"%s\", "
                                "\"size\": 1048576, \"preallocation\": \"full\"}", path), 0);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_size, 1048576);
    assert_true(st.st_blocks * 512 >= 1048576);
    assert_int_equal(create_fmt(NULL, "{\"driver\": \"file\", \"filename\": \"%s\", "
                                "\"size\": 2097152, \"preallocation\": \"falloc\"}", path), 0);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_size, 2097152);
    assert_true(st.st_blocks * 512 >= 2097152);
}

static void expect_error(const char *json, const char *msg)
{
    Error *err = NULL;

    assert_true(create_json(json, &err) < 0);
    assert_non_null(err);
    if (strcmp(error_get_pretty(err), msg) != 0) {
        fail_msg("'%s': got '%s', expected '%s'", json, error_get_pretty(err), msg);
    }
    error_free(err);
}

static void test_errors(void **state)
{
    char json[512];

    (void)state;
    expect_error("{\"driver\": \"file\", \"size\": 1}", "Parameter 'filename' is missing");
    expect_error("{\"driver\": \"file\", \"filename\": \"/nonexistent/x\", \"size\": 1}",
                 "Could not create '/nonexistent/x': No such file or directory");
    expect_error("{\"driver\": \"file\", \"filename\": \"x\", \"size\": 1, \"bogus\": 1}",
                 "Parameter 'bogus' is unexpected");
    expect_error("{\"driver\": \"file\", \"filename\": \"x\", \"size\": 1, "
                 "\"preallocation\": \"metadata\"}",
                 "Unsupported preallocation mode 'metadata'");
    expect_error("{\"driver\": \"raw\", \"size\": 1}", "Driver does not support blockdev-create");
    expect_error("{\"driver\": \"nosuch\"}", "Parameter 'driver' does not accept value 'nosuch'");
    expect_error("{\"driver\": \"qcow2\", \"size\": 1048576}", "Parameter 'file' is missing");
    expect_error("{\"driver\": \"qcow2\", \"file\": \"nonode\", \"size\": 1048576}",
                 "Cannot find device='nonode' nor node-name='nonode'");

#define Q(extra) (snprintf(json, sizeof(json), "{\"driver\": \"qcow2\", \"file\": \"x\", " \
                           "\"size\": 1048576, %s}", extra), json)
    expect_error(Q("\"cluster-size\": 1000"),
                 "Cluster size must be a power of two between 512 and 2048k");
    expect_error(Q("\"cluster-size\": 4194304"),
                 "Cluster size must be a power of two between 512 and 2048k");
    expect_error(Q("\"version\": \"v2\", \"refcount-bits\": 8"),
                 "Different refcount widths than 16 bits require compatibility level 1.1 "
                 "or above (use version=v3 or greater)");
    expect_error(Q("\"version\": \"v2\", \"lazy-refcounts\": true"),
                 "Lazy refcounts only supported with compatibility level 1.1 and above "
                 "(use version=v3 or greater)");
    expect_error(Q("\"refcount-bits\": 3"),
                 "Refcount width must be a power of two and may not exceed 64 bits");
    expect_error(Q("\"refcount-bits\": 128"),
                 "Refcount width must be a power of two and may not exceed 64 bits");
    expect_error(Q("\"backing-fmt\": \"raw\""),
                 "Backing format cannot be used without backing file");
    expect_error(Q("\"backing-file\": \"b\", \"preallocation\": \"metadata\""),
                 "Backing file and preallocation can only be used at the same time if "
                 "extended_l2 is on");
    expect_error(Q("\"extended-l2\": true, \"cluster-size\": 4096"),
                 "Extended L2 entries are only supported with cluster sizes of at least "
                 "16384 bytes");
    expect_error(Q("\"version\": \"v4\""), "Parameter 'version' does not accept value 'v4'");
    expect_error(Q("\"bogus\": true"), "Parameter 'bogus' is unexpected");
    expect_error("{\"driver\": \"qcow2\", \"file\": \"x\", \"size\": 1000}",
                 "Image size must be a multiple of 512 bytes");
    expect_error("{\"driver\": \"qcow2\", \"file\": \"x\"}", "Parameter 'size' is missing");
#undef Q
}

/* Default image: exactly what qemu-img expects of an empty v3 image. */
static void test_qcow2_default(void **state)
{
    json_object *info;

    (void)state;
    make_qcow2(64 * 1024 * 1024, "");
    assert_check_clean(img);
    info = qemu_info(img);
    assert_string_equal(json_object_get_string(get(info, "format")), "qcow2");
    assert_int_equal(json_object_get_int64(get(info, "virtual-size")), 64 * 1024 * 1024);
    assert_int_equal(json_object_get_int64(get(info, "cluster-size")), 65536);
    assert_string_equal(json_object_get_string(get(info, "format-specific.data.compat")), "1.1");
    assert_int_equal(json_object_get_int(get(info, "format-specific.data.refcount-bits")), 16);
    assert_false(json_object_get_boolean(get(info, "format-specific.data.lazy-refcounts")));
    json_object_put(info);
}

static void test_qcow2_variants(void **state)
{
    static const struct {
        const char *extra;
        int64_t size;
        int64_t cluster;
        const char *compat;
        int refcount_bits;
    } v[] = {
        { "\"version\": \"v2\"", 1 << 30, 65536, "0.10", 16 },
        { "\"cluster-size\": 512", 256 << 20, 512, "1.1", 16 },
        { "\"cluster-size\": 512, \"refcount-bits\": 64", 64 << 20, 512, "1.1", 64 },
        { "\"cluster-size\": 2097152, \"refcount-bits\": 1", 10LL << 30, 2097152, "1.1", 1 },
        { "\"refcount-bits\": 4, \"lazy-refcounts\": true", 1 << 20, 65536, "1.1", 4 },
        { "\"extended-l2\": true, \"cluster-size\": 32768", 100 << 20, 32768, "1.1", 16 },
        { "\"preallocation\": \"metadata\"", 48 << 20, 65536, "1.1", 16 },
        { "\"preallocation\": \"metadata\", \"cluster-size\": 512, \"refcount-bits\": 64",
          8 << 20, 512, "1.1", 64 },
        { "\"preallocation\": \"metadata\", \"cluster-size\": 4096, \"version\": \"v2\"",
          8 << 20, 4096, "0.10", 16 },
    };

    (void)state;
    for (unsigned i = 0; i < ARRAY_SIZE(v); i++) {
        json_object *info;

        make_qcow2(v[i].size, v[i].extra);
        assert_check_clean(img);
        info = qemu_info(img);
        assert_int_equal(json_object_get_int64(get(info, "virtual-size")), v[i].size);
        assert_int_equal(json_object_get_int64(get(info, "cluster-size")), v[i].cluster);
        assert_string_equal(json_object_get_string(get(info, "format-specific.data.compat")),
                            v[i].compat);
        assert_int_equal(json_object_get_int(get(info, "format-specific.data.refcount-bits")),
                         v[i].refcount_bits);
        if (strstr(v[i].extra, "lazy")) {
            assert_true(json_object_get_boolean(
                get(info, "format-specific.data.lazy-refcounts")));
        }
        if (strstr(v[i].extra, "extended-l2")) {
            assert_true(json_object_get_boolean(get(info, "format-specific.data.extended-l2")));
        }
        if (strstr(v[i].extra, "metadata")) {
            /* Every cluster allocated, reading as zeroes. */
            char cmd[256];
            int status;
            char *out;
            snprintf(cmd, sizeof(cmd), "qemu-img map -U --output=json '%s'", img);
            out = run_cmd(cmd, &status);
            assert_int_equal(status, 0);
            assert_null(strstr(out, "\"data\": false"));
            free(out);
            snprintf(cmd, sizeof(cmd), "qemu-io -r -f qcow2 -c 'read -P 0 0 %lld' '%s' "
                     "2>&1 | grep -c 'read '", (long long)v[i].size, img);
            out = run_cmd(cmd, &status);
            assert_string_equal(out, "1\n");
            free(out);
        }
        json_object_put(info);
    }
}

static void test_qcow2_backing(void **state)
{
    char base[160], json[512];
    json_object *info;

    (void)state;
    snprintf(base, sizeof(base), "%s/base.raw", dir);
    create_fmt(NULL, "{\"driver\": \"file\", \"filename\": \"%s\", \"size\": 4194304}", base);
    make_qcow2(8 * 1024 * 1024, "\"backing-file\": \"base.raw\", \"backing-fmt\": \"raw\"");
    assert_check_clean(img);
    info = qemu_info(img);
    assert_string_equal(json_object_get_string(get(info, "backing-filename")), "base.raw");
    assert_string_equal(json_object_get_string(get(info, "backing-filename-format")), "raw");
    json_object_put(info);

    /* The same with extended L2 and metadata preallocation: reads still
     * come from the backing file. */
    make_qcow2(8 * 1024 * 1024, "\"backing-file\": \"base.raw\", \"backing-fmt\": \"raw\", "
               "\"extended-l2\": true, \"preallocation\": \"metadata\"");
    assert_check_clean(img);
    snprintf(json, sizeof(json), "qemu-io -f raw -c 'write -P 0x42 0 4M' '%s' >/dev/null", base);
    assert_int_equal(system(json), 0);
    snprintf(json, sizeof(json), "qemu-io -r -f qcow2 -c 'read -P 0x42 0 4M' "
             "-c 'read -P 0 4M 4M' '%s' 2>&1 | grep -c '^read '", img);
    {
        int status;
        char *out = run_cmd(json, &status);
        assert_string_equal(out, "2\n");
        free(out);
    }
}

/* A created image works through the driver: write, reopen, read. */
static void test_qcow2_use(void **state)
{
    char json[512];
    unsigned char *buf = malloc(200000), *back = malloc(200000);
    BlockDriverState *bs;
    BlockBackend *blk;

    (void)state;
    make_qcow2(16 * 1024 * 1024, "\"cluster-size\": 4096");
    snprintf(json, sizeof(json), "{\"driver\": \"qcow2\", \"file\": {\"driver\": \"file\", "
             "\"filename\": \"%s\"}}", img);
    for (int i = 0; i < 200000; i++) {
        buf[i] = (unsigned char)(i * 7 + (i >> 9));
    }
    bs = bt_open(json, &error_abort);
    blk = bt_backend(bs, BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE, BLK_PERM_CONSISTENT_READ);
    assert_int_equal(blk_pwrite(blk, 12345, 200000, buf, 0), 0);
    assert_int_equal(blk_flush(blk), 0);
    blk_unref(blk);
    bdrv_unref(bs);
    assert_check_clean(img);

    bs = bt_open(json, &error_abort);
    blk = bt_backend(bs, BLK_PERM_CONSISTENT_READ, BLK_PERM_ALL);
    assert_int_equal(blk_pread(blk, 12345, 200000, back, 0), 0);
    assert_memory_equal(buf, back, 200000);
    blk_unref(blk);
    bdrv_unref(bs);
    free(buf);
    free(back);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        CREATE_TEST(test_file),
        CREATE_TEST(test_errors),
        CREATE_TEST(test_qcow2_default),
        CREATE_TEST(test_qcow2_variants),
        CREATE_TEST(test_qcow2_backing),
        CREATE_TEST(test_qcow2_use),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
