/*
 * test-buf-pool - large buffers are reused by size class, up to a cap;
 * small ones are not cached; trimming gives everything back.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "blockd/buf-pool.h"

#define KiB 1024
#define MiB (1024 * 1024)

static void test_small_buffers_are_not_cached(void **state)
{
    BufPool *pool = buf_pool_new(8 * MiB);
    void *a = buf_pool_get(pool, 4 * KiB);
    void *z = buf_pool_get(pool, 0);

    (void)state;
    assert_non_null(a);
    assert_non_null(z);
    memset(a, 1, 4 * KiB);
    buf_pool_put(pool, a, 4 * KiB);
    buf_pool_put(pool, z, 0);
    buf_pool_put(pool, NULL, 1 * MiB);
    assert_int_equal(buf_pool_cached(pool), 0);
    buf_pool_free(pool);
}

static void test_reuse_within_a_size_class(void **state)
{
    BufPool *pool = buf_pool_new(8 * MiB);
    void *a = buf_pool_get(pool, 1 * MiB), *b, *c;

    (void)state;
    memset(a, 0xa5, 1 * MiB);
    buf_pool_put(pool, a, 1 * MiB);
    assert_int_equal(buf_pool_cached(pool), 1 * MiB);
    /* 600 KiB rounds up to the 1 MiB class: the same buffer, whole. */
    b = buf_pool_get(pool, 600 * KiB);
    assert_ptr_equal(a, b);
    assert_int_equal(buf_pool_cached(pool), 0);
    memset(b, 0x5a, 1 * MiB);
    buf_pool_put(pool, b, 600 * KiB);
    /* Another class gets a buffer of its own. */
    c = buf_pool_get(pool, 64 * KiB);
    assert_ptr_not_equal(c, b);
    assert_int_equal(buf_pool_cached(pool), 1 * MiB);
    buf_pool_put(pool, c, 64 * KiB);
    assert_int_equal(buf_pool_cached(pool), 1 * MiB + 64 * KiB);
    buf_pool_free(pool);
}

static void test_cap_on_cached_bytes(void **state)
{
    BufPool *pool = buf_pool_new(2 * MiB);
    void *bufs[3];

    (void)state;
    for (int i = 0; i < 3; i++) {
        bufs[i] = buf_pool_get(pool, 1 * MiB);
        assert_non_null(bufs[i]);
    }
    for (int i = 0; i < 3; i++) {
        buf_pool_put(pool, bufs[i], 1 * MiB);
    }
    assert_int_equal(buf_pool_cached(pool), 2 * MiB);
    /* The two kept come back, then fresh ones. */
    for (int i = 0; i < 3; i++) {
        bufs[i] = buf_pool_get(pool, 1 * MiB);
    }
    assert_int_equal(buf_pool_cached(pool), 0);
    for (int i = 0; i < 3; i++) {
        buf_pool_put(pool, bufs[i], 1 * MiB);
    }
    buf_pool_free(pool);
}

static void test_trim_gives_everything_back(void **state)
{
    BufPool *pool = buf_pool_new(64 * MiB);
    size_t sizes[] = { 64 * KiB, 65 * KiB, 256 * KiB, 1 * MiB, 3 * MiB, 32 * MiB };

    (void)state;
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        buf_pool_put(pool, buf_pool_get(pool, sizes[i]), sizes[i]);
    }
    assert_int_equal(buf_pool_cached(pool), 64 * KiB + 128 * KiB + 256 * KiB + 1 * MiB +
                                            4 * MiB + 32 * MiB);
    buf_pool_trim(pool);
    assert_int_equal(buf_pool_cached(pool), 0);
    buf_pool_free(pool);
}

static void *use_pool(void *opaque)
{
    BufPool *pool = opaque;
    void *a = buf_pool_get(pool, 1 * MiB);

    buf_pool_put(pool, a, 1 * MiB);
    assert_ptr_equal(buf_pool_get(pool, 1 * MiB), a);
    buf_pool_put(pool, a, 1 * MiB);
    buf_pool_trim(pool);
    return NULL;
}

/* An empty pool may move to another thread (a connection into its
 * iothread). */
static void test_empty_pool_moves_between_threads(void **state)
{
    BufPool *pool = buf_pool_new(8 * MiB);
    pthread_t t;

    (void)state;
    assert_int_equal(pthread_create(&t, NULL, use_pool, pool), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    use_pool(pool);
    buf_pool_free(pool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_small_buffers_are_not_cached),
        cmocka_unit_test(test_reuse_within_a_size_class),
        cmocka_unit_test(test_cap_on_cached_bytes),
        cmocka_unit_test(test_trim_gives_everything_back),
        cmocka_unit_test(test_empty_pool_moves_between_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
