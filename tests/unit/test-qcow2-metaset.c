/*
 * test-qcow2-metaset - the set of metadata clusters behind the qcow2
 * overlap guard: membership, duplicate entries, removal with backward
 * shifts (checked against a plain reference array through thousands of
 * random operations and across growth), range lookups both ways.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "test-util.h"
#include "qcow2-metaset.h"

static void test_empty(void **state)
{
    Qcow2MetaSet m;

    (void)state;
    qcow2_metaset_init(&m);
    assert_int_equal(qcow2_metaset_find(&m, 1, 1000), -1);
    assert_false(qcow2_metaset_remove(&m, 5));
    qcow2_metaset_destroy(&m);
}

static void test_add_find_remove(void **state)
{
    Qcow2MetaSet m;

    (void)state;
    qcow2_metaset_init(&m);
    assert_int_equal(qcow2_metaset_add(&m, 4), 0);
    assert_int_equal(qcow2_metaset_add(&m, 100), 0);
    assert_int_equal(qcow2_metaset_find(&m, 4, 1), 4);
    assert_int_equal(qcow2_metaset_find(&m, 5, 1), -1);
    assert_int_equal(qcow2_metaset_find(&m, 3, 2), 4);
    assert_int_equal(qcow2_metaset_find(&m, 5, 95), -1);
    assert_int_equal(qcow2_metaset_find(&m, 5, 96), 100);
    /* Wider than the table: found by scanning the slots, lowest first. */
    assert_int_equal(qcow2_metaset_find(&m, 1, 1 << 20), 4);
    assert_int_equal(qcow2_metaset_find(&m, 5, 1 << 20), 100);
    assert_int_equal(qcow2_metaset_find(&m, 101, 1 << 20), -1);
    assert_true(qcow2_metaset_remove(&m, 4));
    assert_false(qcow2_metaset_remove(&m, 4));
    assert_int_equal(qcow2_metaset_find(&m, 4, 1), -1);
    assert_int_equal(m.used, 1);
    qcow2_metaset_destroy(&m);
}

static void test_duplicates(void **state)
{
    Qcow2MetaSet m;

    (void)state;
    qcow2_metaset_init(&m);
    assert_int_equal(qcow2_metaset_add(&m, 7), 0);
    assert_int_equal(qcow2_metaset_add(&m, 7), 0);
    assert_true(qcow2_metaset_remove(&m, 7));
    assert_int_equal(qcow2_metaset_find(&m, 7, 1), 7);   /* one entry left */
    assert_true(qcow2_metaset_remove(&m, 7));
    assert_int_equal(qcow2_metaset_find(&m, 7, 1), -1);
    qcow2_metaset_destroy(&m);
}

static void test_reserve(void **state)
{
    Qcow2MetaSet m;
    int bits;

    (void)state;
    qcow2_metaset_init(&m);
    assert_int_equal(qcow2_metaset_reserve(&m, 1000), 0);
    bits = m.bits;
    assert_true((1 << bits) >= 2000);
    for (int64_t c = 1; c <= 1000; c++) {
        assert_int_equal(qcow2_metaset_add(&m, c * 3), 0);
    }
    assert_int_equal(m.bits, bits);       /* no regrowth: adds cannot fail */
    assert_int_equal(qcow2_metaset_find(&m, 2999, 10), 3000);
    qcow2_metaset_destroy(&m);
}

/* Random adds and removes against a count per cluster. */
static void test_random_against_reference(void **state)
{
    enum { RANGE = 3000, OPS = 200000 };
    static int ref[RANGE];
    Qcow2MetaSet m;
    int64_t used = 0;

    (void)state;
    memset(ref, 0, sizeof(ref));
    qcow2_metaset_init(&m);
    srandom(7);
    for (int op = 0; op < OPS; op++) {
        /* Clustered keys collide in the hash and build long probe runs. */
        int64_t c = 1 + random() % (op < OPS / 2 ? RANGE - 1 : 200);
        if (random() % 3) {
            assert_int_equal(qcow2_metaset_add(&m, c), 0);
            ref[c]++;
            used++;
        } else {
            assert_int_equal(qcow2_metaset_remove(&m, c), ref[c] > 0);
            if (ref[c] > 0) {
                ref[c]--;
                used--;
            }
        }
        if (op % 1000 == 0) {
            for (int64_t k = 1; k < RANGE; k++) {
                assert_int_equal(qcow2_metaset_find(&m, k, 1) == k, ref[k] > 0);
            }
        }
    }
    assert_int_equal(m.used, used);
    for (int64_t k = 1; k < RANGE; k++) {
        while (ref[k]--) {
            assert_true(qcow2_metaset_remove(&m, k));
        }
        assert_int_equal(qcow2_metaset_find(&m, k, 1), -1);
    }
    assert_int_equal(m.used, 0);
    qcow2_metaset_destroy(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_add_find_remove),
        cmocka_unit_test(test_duplicates),
        cmocka_unit_test(test_reserve),
        cmocka_unit_test(test_random_against_reference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
