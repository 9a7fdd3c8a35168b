/*
 * test-block-io - the node I/O path and BlockBackend.
 *
 * A memory-backed test driver ("memdisk") with configurable alignment,
 * max_transfer and capabilities records every request it sees, so the
 * tests can check what the I/O path hands to drivers.
 */
#include <errno.h>
#include <string.h>

#include "block-test-util.h"

#include "blockd/block.h"
#include "blockd/block-backend-io.h"
#include "blockd/block-global-state.h"
#include "blockd/block-io.h"
#include "blockd/iov.h"
#include "blockd/options.h"

#define DISK_SIZE (4 * 1024 * 1024)
#define MAX_LOG 4096

typedef struct Call {
    char op;                  /* 'r', 'w', 'z', 'd', 'f' */
    int64_t offset;
    int64_t bytes;
    int flags;
} Call;

typedef struct MemDisk {
    BdMutex lock;
    unsigned char *data;
    int64_t latency_ns;
    Call log[MAX_LOG];
    int nlog;
} MemDisk;

static MemDisk *last_disk;

static void log_call(MemDisk *m, char op, int64_t offset, int64_t bytes, int flags)
{
    bd_mutex_lock(&m->lock);
    if (m->nlog < MAX_LOG) {
        m->log[m->nlog++] = (Call){ op, offset, bytes, flags };
    }
    bd_mutex_unlock(&m->lock);
}

static int mem_open(BlockDriverState *bs, json_object *opts, int flags, Error **errp)
{
    MemDisk *m = bs->opaque;
    int64_t align = 1, max_transfer = 0, mem_align = 0, latency = 0;

    (void)flags;
    if (!opt_get_int(opts, "align", &align, errp) ||
        !opt_get_int(opts, "max-transfer", &max_transfer, errp) ||
        !opt_get_int(opts, "mem-align", &mem_align, errp) ||
        !opt_get_int(opts, "latency-ns", &latency, errp)) {
        return -1;
    }
    bd_mutex_init(&m->lock);
    m->data = calloc(1, DISK_SIZE);
    m->latency_ns = latency;
    bs->total_bytes = DISK_SIZE;
    bs->bl.request_alignment = align;
    bs->bl.max_transfer = max_transfer;
    bs->bl.min_mem_alignment = mem_align;
    last_disk = m;
    return 0;
}

static void mem_close(BlockDriverState *bs)
{
    MemDisk *m = bs->opaque;
    free(m->data);
    bd_mutex_destroy(&m->lock);
}

static int coroutine_fn mem_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                   struct iovec *iov, int niov, int flags)
{
    MemDisk *m = bs->opaque;

    log_call(m, 'r', offset, bytes, flags);
    if (m->latency_ns) {
        co_sleep_ns(m->latency_ns);
    }
    bd_mutex_lock(&m->lock);
    iov_from_buf(iov, niov, 0, m->data + offset, bytes);
    bd_mutex_unlock(&m->lock);
    return 0;
}

static int coroutine_fn mem_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                    struct iovec *iov, int niov, int flags)
{
    MemDisk *m = bs->opaque;

    log_call(m, 'w', offset, bytes, flags);
    if (m->latency_ns) {
        co_sleep_ns(m->latency_ns);
    }
    bd_mutex_lock(&m->lock);
    iov_to_buf(iov, niov, 0, m->data + offset, bytes);
    bd_mutex_unlock(&m->lock);
    return 0;
}

static int coroutine_fn mem_flush(BlockDriverState *bs)
{
    log_call(bs->opaque, 'f', 0, 0, 0);
    return 0;
}

static int coroutine_fn mem_discard(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    log_call(bs->opaque, 'd', offset, bytes, 0);
    return 0;
}

static int coroutine_fn mem_zeroes(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                   int flags)
{
    MemDisk *m = bs->opaque;

    log_call(m, 'z', offset, bytes, flags);
    bd_mutex_lock(&m->lock);
    memset(m->data + offset, 0, bytes);
    bd_mutex_unlock(&m->lock);
    return 0;
}

/* Without write-zeroes, discard or FUA: the I/O path must fall back. */
static const BlockDriver memdisk_plain = {
    .format_name = "memdisk",
    .instance_size = sizeof(MemDisk),
    .is_protocol = true,
    .bdrv_open = mem_open,
    .bdrv_close = mem_close,
    .bdrv_co_preadv = mem_preadv,
    .bdrv_co_pwritev = mem_pwritev,
    .bdrv_co_flush = mem_flush,
};

static const BlockDriver memdisk_full = {
    .format_name = "memdisk-full",
    .instance_size = sizeof(MemDisk),
    .is_protocol = true,
    .bdrv_open = mem_open,
    .bdrv_close = mem_close,
    .bdrv_co_preadv = mem_preadv,
    .bdrv_co_pwritev = mem_pwritev,
    .bdrv_co_flush = mem_flush,
    .bdrv_co_pdiscard = mem_discard,
    .bdrv_co_pwrite_zeroes = mem_zeroes,
    .supported_write_flags = BDRV_REQ_FUA,
    .supported_zero_flags = BDRV_REQ_MAY_UNMAP,
};

static BlockDriverState *test_bs;
static BlockBackend *test_blk;

static void open_disk(const BlockDriver *drv, int64_t align, int64_t max_transfer,
                      int64_t mem_align, int64_t latency_ns)
{
    json_object *o = json_object_new_object();

    json_object_object_add(o, "align", json_object_new_int64(align));
    json_object_object_add(o, "max-transfer", json_object_new_int64(max_transfer));
    json_object_object_add(o, "mem-align", json_object_new_int64(mem_align));
    json_object_object_add(o, "latency-ns", json_object_new_int64(latency_ns));
    /* discard=unmap: the discard tests reach the driver. */
    test_bs = bdrv_open_driver(drv, "disk", o, BDRV_O_RDWR | BDRV_O_UNMAP, &error_abort);
    json_object_put(o);
    test_blk = blk_new(BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE, BLK_PERM_ALL);
    assert_int_equal(blk_insert_bs(test_blk, test_bs, &error_abort), 0);
    last_disk->nlog = 0;
}

static int io_setup(void **state)
{
    static bool registered;

    bt_setup(state);
    if (!registered) {
        bdrv_register(&memdisk_plain);
        bdrv_register(&memdisk_full);
        registered = true;
    }
    return 0;
}

static int io_teardown(void **state)
{
    blk_unref(test_blk);
    bdrv_unref(test_bs);
    test_blk = NULL;
    test_bs = NULL;
    assert_int_equal(bdrv_node_count(), 0);
    return tu_teardown(state);
}

#define IO_TEST(fn) cmocka_unit_test_setup_teardown(fn, io_setup, io_teardown)

static void fill_pattern(unsigned char *buf, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++) {
        buf[i] = (unsigned char)(seed + i * 7 + (i >> 9));
    }
}

static void assert_calls_aligned(int64_t align, int64_t max)
{
    for (int i = 0; i < last_disk->nlog; i++) {
        Call *c = &last_disk->log[i];
        if (c->op == 'f') {
            continue;
        }
        assert_int_equal(c->offset % align, 0);
        assert_int_equal(c->bytes % align, 0);
        if (max) {
            assert_true(c->bytes <= max);
        }
    }
}

static void test_aligned_roundtrip(void **state)
{
    unsigned char in[8192], out[8192];

    (void)state;
    open_disk(&memdisk_full, 1, 0, 0, 0);
    fill_pattern(in, sizeof(in), 1);
    assert_int_equal(blk_pwrite(test_blk, 4096, sizeof(in), in, 0), 0);
    assert_int_equal(blk_pread(test_blk, 4096, sizeof(out), out, 0), 0);
    assert_memory_equal(in, out, sizeof(in));
    assert_memory_equal(last_disk->data + 4096, in, sizeof(in));
    assert_int_equal(last_disk->nlog, 2);
}

static void test_unaligned_write_read_modify_write(void **state)
{
    unsigned char before[3 * 4096], buf[5000], out[3 * 4096];

    (void)state;
    open_disk(&memdisk_plain, 4096, 0, 0, 0);
    fill_pattern(before, sizeof(before), 3);
    assert_int_equal(blk_pwrite(test_blk, 0, sizeof(before), before, 0), 0);
    last_disk->nlog = 0;

    fill_pattern(buf, sizeof(buf), 99);
    assert_int_equal(blk_pwrite(test_blk, 1000, sizeof(buf), buf, 0), 0);
    /* The driver saw aligned requests only; neighbours survived. */
    assert_calls_aligned(4096, 0);
    assert_int_equal(blk_pread(test_blk, 0, sizeof(out), out, 0), 0);
    assert_memory_equal(out, before, 1000);
    assert_memory_equal(out + 1000, buf, sizeof(buf));
    assert_memory_equal(out + 6000, before + 6000, sizeof(before) - 6000);

    /* A write inside one block reads that block once. */
    last_disk->nlog = 0;
    assert_int_equal(blk_pwrite(test_blk, 100, 10, buf, 0), 0);
    assert_int_equal(last_disk->nlog, 2);
    assert_int_equal(last_disk->log[0].op, 'r');
    assert_int_equal(last_disk->log[1].op, 'w');
}

static void test_unaligned_read_bounces(void **state)
{
    unsigned char data[8192], out[3000];

    (void)state;
    open_disk(&memdisk_plain, 512, 0, 0, 0);
    fill_pattern(data, sizeof(data), 5);
    assert_int_equal(blk_pwrite(test_blk, 0, sizeof(data), data, 0), 0);
    last_disk->nlog = 0;
    assert_int_equal(blk_pread(test_blk, 1001, sizeof(out), out, 0), 0);
    assert_memory_equal(out, data + 1001, sizeof(out));
    assert_calls_aligned(512, 0);
}

static void test_misaligned_memory_bounces(void **state)
{
    unsigned char *raw = malloc(8192 + 1), *buf = raw + 1;

    (void)state;
    open_disk(&memdisk_plain, 512, 0, 512, 0);
    fill_pattern(buf, 4096, 11);
    assert_int_equal(blk_pwrite(test_blk, 0, 4096, buf, 0), 0);
    memset(buf, 0, 4096);
    assert_int_equal(blk_pread(test_blk, 0, 4096, buf, 0), 0);
    assert_memory_equal(buf, last_disk->data, 4096);
    free(raw);
}

static void test_max_transfer_splits(void **state)
{
    size_t len = 1024 * 1024;
    unsigned char *in = malloc(len), *out = malloc(len);

    (void)state;
    open_disk(&memdisk_plain, 512, 64 * 1024, 0, 0);
    fill_pattern(in, len, 17);
    assert_int_equal(blk_pwrite(test_blk, 512, len, in, 0), 0);
    assert_int_equal(last_disk->nlog, 16);
    assert_int_equal(blk_pread(test_blk, 512, len, out, 0), 0);
    assert_memory_equal(in, out, len);
    assert_calls_aligned(512, 64 * 1024);
    free(in);
    free(out);
}

static void test_fua_emulated_with_flush(void **state)
{
    unsigned char buf[512] = { 1 };

    (void)state;
    open_disk(&memdisk_plain, 1, 0, 0, 0);
    assert_int_equal(blk_pwrite(test_blk, 0, sizeof(buf), buf, BDRV_REQ_FUA), 0);
    assert_int_equal(last_disk->nlog, 2);
    assert_int_equal(last_disk->log[0].op, 'w');
    assert_int_equal(last_disk->log[0].flags & BDRV_REQ_FUA, 0);
    assert_int_equal(last_disk->log[1].op, 'f');
}

static void test_fua_passed_to_capable_driver(void **state)
{
    unsigned char buf[512] = { 1 };

    (void)state;
    open_disk(&memdisk_full, 1, 0, 0, 0);
    assert_int_equal(blk_pwrite(test_blk, 0, sizeof(buf), buf, BDRV_REQ_FUA), 0);
    assert_int_equal(last_disk->nlog, 1);
    assert_int_equal(last_disk->log[0].flags & BDRV_REQ_FUA, BDRV_REQ_FUA);
}

static void test_write_zeroes_fallback(void **state)
{
    unsigned char ones[16384];

    (void)state;
    open_disk(&memdisk_plain, 512, 0, 0, 0);
    memset(ones, 0xff, sizeof(ones));
    assert_int_equal(blk_pwrite(test_blk, 0, sizeof(ones), ones, 0), 0);
    assert_int_equal(bt_run(test_blk, 'z', 1000, 10000, 0, NULL), 0);
    for (int i = 0; i < 16384; i++) {
        assert_int_equal(last_disk->data[i], (i >= 1000 && i < 11000) ? 0 : 0xff);
    }
    /* NO_FALLBACK: a driver without a fast way must say so. */
    assert_int_equal(bt_run(test_blk, 'z', 1000, 10000, BDRV_REQ_NO_FALLBACK, NULL), -ENOTSUP);
}

static void test_write_zeroes_native_middle(void **state)
{
    bool native = false;

    (void)state;
    open_disk(&memdisk_full, 512, 0, 0, 0);
    memset(last_disk->data, 0xff, 16384);
    assert_int_equal(bt_run(test_blk, 'z', 1000, 10000, BDRV_REQ_MAY_UNMAP, NULL), 0);
    for (int i = 0; i < last_disk->nlog; i++) {
        if (last_disk->log[i].op == 'z') {
            native = true;
            assert_int_equal(last_disk->log[i].offset, 1024);
            assert_int_equal(last_disk->log[i].bytes, 10752 - 1024);
            assert_int_equal(last_disk->log[i].flags, BDRV_REQ_MAY_UNMAP);
        }
    }
    assert_true(native);
    for (int i = 0; i < 16384; i++) {
        assert_int_equal(last_disk->data[i], (i >= 1000 && i < 11000) ? 0 : 0xff);
    }
}

static void test_discard(void **state)
{
    (void)state;
    open_disk(&memdisk_full, 512, 0, 0, 0);
    assert_int_equal(bt_run(test_blk, 'd', 100, 4096, 0, NULL), 0);
    /* Shrunk to the aligned inside. */
    assert_int_equal(last_disk->nlog, 1);
    assert_int_equal(last_disk->log[0].offset, 512);
    assert_int_equal(last_disk->log[0].bytes, 3584);
}

static void test_discard_unsupported_is_noop(void **state)
{
    (void)state;
    open_disk(&memdisk_plain, 1, 0, 0, 0);
    assert_int_equal(bt_run(test_blk, 'd', 0, 4096, 0, NULL), 0);
    assert_int_equal(last_disk->nlog, 0);
}

static void test_bounds_and_permissions(void **state)
{
    unsigned char buf[4096];
    BlockBackend *ro;

    (void)state;
    open_disk(&memdisk_plain, 1, 0, 0, 0);
    assert_int_equal(blk_pread(test_blk, DISK_SIZE - 100, 200, buf, 0), -EIO);
    assert_int_equal(blk_pwrite(test_blk, -1, 10, buf, 0), -EIO);
    assert_int_equal(blk_pread(test_blk, DISK_SIZE, 0, buf, 0), 0);
    assert_int_equal(last_disk->nlog, 0);

    ro = blk_new(BLK_PERM_CONSISTENT_READ, BLK_PERM_ALL);
    assert_int_equal(blk_insert_bs(ro, test_bs, &error_abort), 0);
    assert_int_equal(blk_pwrite(ro, 0, 10, buf, 0), -EPERM);
    assert_int_equal(blk_pread(ro, 0, 10, buf, 0), 0);
    blk_unref(ro);

    /* A backend without a node. */
    ro = blk_new(BLK_PERM_CONSISTENT_READ, BLK_PERM_ALL);
    assert_int_equal(blk_pread(ro, 0, 10, buf, 0), -ENOMEDIUM);
    blk_unref(ro);
}

static void test_block_status_default(void **state)
{
    int64_t pnum;

    (void)state;
    open_disk(&memdisk_plain, 1, 0, 0, 0);
    assert_int_equal(bt_run(test_blk, 's', DISK_SIZE - 4096, 1 << 20, 0, &pnum),
                     BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED);
    assert_int_equal(pnum, 4096);     /* clamped to the end */
    assert_int_equal(bt_run(test_blk, 's', DISK_SIZE, 1 << 20, 0, &pnum), 0);
    assert_int_equal(pnum, 0);
}

/* ---- Requests while drained, from another thread ---------------------------- */

typedef struct Writer {
    BlockBackend *blk;
    int64_t offset;
    int len;
    unsigned char byte;
    int iterations;
    bool started;
    int completed;
    bool done;
} Writer;

static void coroutine_fn writer_co(void *opaque)
{
    Writer *w = opaque;
    unsigned char buf[512];

    atomic_store_release(&w->started, true);
    for (int i = 0; i < w->iterations; i++) {
        /* Every iteration writes a new value; the last one a final one,
         * so a lost update leaves a value the final check rejects. */
        memset(buf, w->byte + 1 + i % 8, sizeof(buf));
        if (i == w->iterations - 1) {
            memset(buf, w->byte, sizeof(buf));
        }
        int ret = blk_co_pwrite(w->blk, w->offset, w->len, buf, 0);
        TU_CHECK(ret == 0);
        atomic_inc(&w->completed);
        aio_wait_kick();
    }
    atomic_store_release(&w->done, true);
    aio_wait_kick();
}

static void test_requests_queue_while_drained(void **state)
{
    IOThread *iot = tu_iothread_new("io0");
    Writer w = { .offset = 0, .len = 512, .byte = 7, .iterations = 1 };

    (void)state;
    open_disk(&memdisk_plain, 1, 0, 0, 0);
    w.blk = test_blk;
    bdrv_drained_begin(test_bs);
    aio_co_schedule(iothread_get_aio_context(iot), coroutine_create(writer_co, &w));
    assert_true(TU_POLL_UNTIL(atomic_load_acquire(&w.started), 5000));
    tu_run_main_loop_ms(50);
    /* Queued, not executed, and not counted as in flight. */
    assert_int_equal(last_disk->nlog, 0);
    assert_int_equal(atomic_read(&w.completed), 0);
    assert_int_equal(blk_in_flight(test_blk), 0);
    bdrv_drained_end(test_bs);
    assert_true(TU_POLL_UNTIL(atomic_load_acquire(&w.done), 5000));
    assert_int_equal(last_disk->data[0], 7);
    iothread_destroy(iot);
}

static void test_overlapping_rmw_is_serialised(void **state)
{
    IOThread *a = tu_iothread_new("ioA");
    IOThread *b = tu_iothread_new("ioB");
    Writer wa = { .offset = 100, .len = 100, .byte = 0x10, .iterations = 200 };
    Writer wb = { .offset = 300, .len = 100, .byte = 0x20, .iterations = 200 };

    (void)state;
    /* One 4 KiB block, two writers on different bytes of it: without
     * serialisation a read-modify-write would undo the other's bytes. */
    open_disk(&memdisk_plain, 4096, 0, 0, 20 * 1000);
    wa.blk = wb.blk = test_blk;
    aio_co_schedule(iothread_get_aio_context(a), coroutine_create(writer_co, &wa));
    aio_co_schedule(iothread_get_aio_context(b), coroutine_create(writer_co, &wb));
    assert_true(TU_POLL_UNTIL(atomic_load_acquire(&wa.done) &&
                              atomic_load_acquire(&wb.done), 60000));
    for (int i = 100; i < 200; i++) {
        assert_int_equal(last_disk->data[i], 0x10);
    }
    for (int i = 300; i < 400; i++) {
        assert_int_equal(last_disk->data[i], 0x20);
    }
    assert_int_equal(last_disk->data[0], 0);
    assert_int_equal(last_disk->data[250], 0);
    iothread_destroy(a);
    iothread_destroy(b);
}

/* ---- Replacing the node under running I/O ----------------------------------- */

typedef struct Stream {
    BlockBackend *blk;
    int first;               /* block index of the first write */
    int count;
    int errors;              /* atomic */
    bool done;               /* atomic */
} Stream;

static void coroutine_fn stream_co(void *opaque)
{
    Stream *st = opaque;
    unsigned char buf[4096];

    for (int i = 0; i < st->count; i++) {
        int block = st->first + 2 * i;
        memset(buf, 1 + block % 250, sizeof(buf));
        if (blk_co_pwrite(st->blk, (int64_t)block * 4096, sizeof(buf), buf, 0) < 0) {
            atomic_inc(&st->errors);
        }
    }
    atomic_store_release(&st->done, true);
    aio_wait_kick();
}

static void test_replace_node_under_io(void **state)
{
    IOThread *a = tu_iothread_new("ioA");
    IOThread *b = tu_iothread_new("ioB");
    BlockDriverState *other;
    MemDisk *m1, *m2;
    Stream s1 = { .first = 0, .count = 400 }, s2 = { .first = 1, .count = 400 };
    json_object *o = json_object_new_object();
    int swaps = 0;

    (void)state;
    open_disk(&memdisk_plain, 1, 0, 0, 10 * 1000);
    m1 = last_disk;
    json_object_object_add(o, "latency-ns", json_object_new_int64(10 * 1000));
    other = bdrv_open_driver(&memdisk_plain, "other", o, BDRV_O_RDWR, &error_abort);
    json_object_put(o);
    m2 = last_disk;
    s1.blk = s2.blk = test_blk;

    aio_co_schedule(iothread_get_aio_context(a), coroutine_create(stream_co, &s1));
    aio_co_schedule(iothread_get_aio_context(b), coroutine_create(stream_co, &s2));
    while (!atomic_load_acquire(&s1.done) || !atomic_load_acquire(&s2.done)) {
        /* Move the backend back and forth between the two nodes. */
        assert_int_equal(bdrv_replace_node(swaps % 2 ? other : test_bs,
                                           swaps % 2 ? test_bs : other, &error_abort), 0);
        swaps++;
        tu_run_main_loop_ms(1);
    }
    assert_int_equal(atomic_read(&s1.errors) + atomic_read(&s2.errors), 0);
    assert_true(swaps > 4);
    /* Every write landed in exactly one of the nodes, whole. */
    for (int block = 0; block < 800; block++) {
        unsigned char want = 1 + block % 250;
        unsigned char *p1 = m1->data + block * 4096, *p2 = m2->data + block * 4096;
        bool in1 = p1[0] == want, in2 = p2[0] == want;
        assert_true(in1 != in2);
        for (int i = 0; i < 4096; i++) {
            assert_int_equal(in1 ? p1[i] : p2[i], want);
            assert_int_equal(in1 ? p2[i] : p1[i], 0);
        }
    }
    /* Leave the backend on test_bs for the teardown. */
    if (swaps % 2) {
        bdrv_replace_node(other, test_bs, &error_abort);
    }
    iothread_destroy(a);
    iothread_destroy(b);
    bdrv_unref(other);
}

/*
 * Permission changes while requests run in an iothread: the requests read
 * the edge's permissions under the read lock, so the change takes the
 * write lock.  (It wrote them under the main loop's read lock: a data race
 * that the ThreadSanitizer build of this test reports.)
 */
static void test_set_perm_under_io(void **state)
{
    IOThread *a = tu_iothread_new("ioA");
    Stream s1 = { .first = 0, .count = 400 };
    uint64_t perm, shared;
    int changes = 0;

    (void)state;
    open_disk(&memdisk_plain, 1, 0, 0, 10 * 1000);
    s1.blk = test_blk;
    blk_get_perm(test_blk, &perm, &shared);
    aio_co_schedule(iothread_get_aio_context(a), coroutine_create(stream_co, &s1));
    while (!atomic_load_acquire(&s1.done)) {
        uint64_t extra = changes % 2 ? BLK_PERM_RESIZE : 0;

        assert_int_equal(blk_set_perm(test_blk, perm | extra, shared, &error_abort), 0);
        changes++;
        tu_run_main_loop_ms(1);
    }
    assert_int_equal(blk_set_perm(test_blk, perm, shared, &error_abort), 0);
    assert_int_equal(atomic_read(&s1.errors), 0);
    assert_true(changes > 4);
    iothread_destroy(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        IO_TEST(test_aligned_roundtrip),
        IO_TEST(test_set_perm_under_io),
        IO_TEST(test_unaligned_write_read_modify_write),
        IO_TEST(test_unaligned_read_bounces),
        IO_TEST(test_misaligned_memory_bounces),
        IO_TEST(test_max_transfer_splits),
        IO_TEST(test_fua_emulated_with_flush),
        IO_TEST(test_fua_passed_to_capable_driver),
        IO_TEST(test_write_zeroes_fallback),
        IO_TEST(test_write_zeroes_native_middle),
        IO_TEST(test_discard),
        IO_TEST(test_discard_unsupported_is_noop),
        IO_TEST(test_bounds_and_permissions),
        IO_TEST(test_block_status_default),
        IO_TEST(test_requests_queue_while_drained),
        IO_TEST(test_overlapping_rmw_is_serialised),
        IO_TEST(test_replace_node_under_io),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
