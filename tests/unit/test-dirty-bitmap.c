/*
 * test-dirty-bitmap - the bits of a dirty bitmap as bytes (the layout of
 * qcow2's bitmap data): the lowest bit of a byte first, bytes past the end
 * read as zero, bits past the end never set by a write back, the count
 * of set bits kept exact, and a round trip through bytes at any offset.
 */
#include <stdlib.h>
#include <string.h>

#include "test-util.h"
#include "blockd/dirty-bitmap.h"

#define G 512

static void test_layout(void **state)
{
    BdrvDirtyBitmap *bm = dirty_bitmap_new(100 * G, G);     /* 100 bits: 13 bytes */
    uint8_t buf[16];

    (void)state;
    assert_int_equal(dirty_bitmap_serial_bytes(bm), 13);
    dirty_bitmap_set(bm, 0, G);                  /* bit 0 */
    dirty_bitmap_set(bm, 9 * G, G);              /* bit 9: byte 1, bit 1 */
    dirty_bitmap_set(bm, 99 * G, G);             /* bit 99: byte 12, bit 3 */
    memset(buf, 0xaa, sizeof(buf));
    dirty_bitmap_serialize(bm, 0, sizeof(buf), buf);
    assert_int_equal(buf[0], 0x01);
    assert_int_equal(buf[1], 0x02);
    assert_int_equal(buf[12], 0x08);
    assert_int_equal(buf[13], 0);                /* past the end */
    assert_int_equal(buf[15], 0);
    dirty_bitmap_free(bm);
}

static void test_deserialize_keeps_count_and_tail(void **state)
{
    BdrvDirtyBitmap *bm = dirty_bitmap_new(100 * G, G);
    uint8_t ones[13], back[13];

    (void)state;
    memset(ones, 0xff, sizeof(ones));
    dirty_bitmap_deserialize(bm, 0, sizeof(ones), ones);
    /* 100 bits, not 104: the tail of the last byte is not the disk's. */
    assert_int_equal(dirty_bitmap_count(bm), 100 * G);
    dirty_bitmap_serialize(bm, 0, sizeof(back), back);
    assert_int_equal(back[12], 0x0f);
    memset(ones, 0, 4);
    dirty_bitmap_deserialize(bm, 2, 2, ones);    /* clear bits 16..31 */
    assert_int_equal(dirty_bitmap_count(bm), 84 * G);
    assert_false(dirty_bitmap_get(bm, 16 * G));
    assert_true(dirty_bitmap_get(bm, 15 * G));
    assert_true(dirty_bitmap_get(bm, 32 * G));
    dirty_bitmap_free(bm);
}

static void test_round_trip(void **state)
{
    BdrvDirtyBitmap *a = dirty_bitmap_new(5000 * G, G), *b = dirty_bitmap_new(5000 * G, G);
    uint64_t n = dirty_bitmap_serial_bytes(a);
    uint8_t *buf = malloc(n);
    char ha[65], hb[65];

    (void)state;
    srand(7);
    for (int i = 0; i < 300; i++) {
        dirty_bitmap_set(a, (int64_t)(rand() % 5000) * G, (rand() % 40 + 1) * G);
    }
    /* Out and in again in uneven pieces. */
    for (uint64_t off = 0; off < n; off += 77) {
        uint64_t len = n - off < 77 ? n - off : 77;
        dirty_bitmap_serialize(a, off, len, buf + off);
        dirty_bitmap_deserialize(b, off, len, buf + off);
    }
    assert_int_equal(dirty_bitmap_count(a), dirty_bitmap_count(b));
    assert_true(dirty_bitmap_sha256(a, ha));
    assert_true(dirty_bitmap_sha256(b, hb));
    assert_string_equal(ha, hb);
    free(buf);
    dirty_bitmap_free(a);
    dirty_bitmap_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layout),
        cmocka_unit_test(test_deserialize_keeps_count_and_tail),
        cmocka_unit_test(test_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
