/*
 * test-virtqueue - split virtqueues in guest memory as a hostile guest may
 * lay them out: good chains (direct, indirect, spanning two regions)
 * become the right buffers; every broken rule is refused with its reason
 * and the queue does not advance; event-index notification suppression
 * follows the ring's used_event and the index wrapping at 2^16.
 */
#include <stdlib.h>
#include <string.h>

#include "test-util.h"
#include "virtqueue.h"

#define MEM (1 << 20)
#define QVA 0x7f0000000000ULL
#define NUM 16
#define DESC 0x1000                 /* guest addresses of the rings */
#define AVAIL 0x2000
#define USED 0x3000
#define NEXT 1
#define WRITE 2
#define INDIRECT 4

static uint8_t *guest;
static VuMem mem;
static VirtQueue vq;
static VqElem elem;

static int setup(void **state)
{
    const char *why = NULL;

    (void)state;
    guest = aligned_alloc(4096, MEM);
    memset(guest, 0, MEM);
    memset(&mem, 0, sizeof(mem));
    /* Two regions back to back: guest [0, MEM/2) and [MEM/2, MEM). */
    mem.nregions = 2;
    mem.regions[0] = (VuRegion){ .gpa = 0, .size = MEM / 2, .qva = QVA, .host = guest };
    mem.regions[1] = (VuRegion){ .gpa = MEM / 2, .size = MEM / 2, .qva = QVA + MEM / 2,
                                 .host = guest + MEM / 2 };
    memset(&vq, 0, sizeof(vq));
    assert_true(vq_map(&vq, &mem, NUM, QVA + DESC, QVA + AVAIL, QVA + USED, true, &why));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    free(guest);
    return 0;
}

static void put_desc(uint64_t table, unsigned i, uint64_t addr, uint32_t len, uint16_t flags,
                     uint16_t next)
{
    uint8_t *d = guest + table + 16 * i;

    memcpy(d, &addr, 8);
    memcpy(d + 8, &len, 4);
    memcpy(d + 12, &flags, 2);
    memcpy(d + 14, &next, 2);
}

static void publish(uint16_t head)
{
    uint16_t idx;

    memcpy(&idx, guest + AVAIL + 2, 2);
    memcpy(guest + AVAIL + 4 + 2 * (idx % NUM), &head, 2);
    idx++;
    memcpy(guest + AVAIL + 2, &idx, 2);
}

/* vq_pop() refuses the published chain with @reason. */
static void assert_refused(const char *reason)
{
    const char *why = NULL;
    uint16_t before = vq.last_avail;

    assert_int_equal(vq_pop(&vq, &elem, &why), -1);
    assert_non_null(why);
    assert_string_equal(why, reason);
    assert_int_equal(vq.last_avail, before);
}

static void test_direct_chain(void **state)
{
    const char *why = NULL;

    (void)state;
    put_desc(DESC, 0, 0x10000, 16, NEXT, 3);
    put_desc(DESC, 3, 0x11000, 4096, WRITE | NEXT, 5);
    put_desc(DESC, 5, 0x12000, 1, WRITE, 0);
    publish(0);
    assert_int_equal(vq_pop(&vq, &elem, &why), 1);
    assert_int_equal(elem.head, 0);
    assert_int_equal(elem.out_num, 1);
    assert_int_equal(elem.in_num, 2);
    assert_ptr_equal(elem.iov[0].iov_base, guest + 0x10000);
    assert_int_equal(elem.iov[1].iov_len, 4096);
    assert_ptr_equal(elem.iov[2].iov_base, guest + 0x12000);
    assert_int_equal(vq_pop(&vq, &elem, &why), 0);            /* empty now */
}

static void test_buffer_spanning_regions(void **state)
{
    const char *why = NULL;

    (void)state;
    put_desc(DESC, 0, MEM / 2 - 100, 300, WRITE, 0);
    publish(0);
    assert_int_equal(vq_pop(&vq, &elem, &why), 1);
    assert_int_equal(elem.in_num, 2);
    assert_ptr_equal(elem.iov[0].iov_base, guest + MEM / 2 - 100);
    assert_int_equal(elem.iov[0].iov_len, 100);
    assert_ptr_equal(elem.iov[1].iov_base, guest + MEM / 2);
    assert_int_equal(elem.iov[1].iov_len, 200);
}

static void test_indirect_chain(void **state)
{
    const char *why = NULL;

    (void)state;
    put_desc(0x8000, 0, 0x10000, 16, NEXT, 1);
    put_desc(0x8000, 1, 0x11000, 512, WRITE | NEXT, 2);
    put_desc(0x8000, 2, 0x12000, 1, WRITE, 0);
    put_desc(DESC, 7, 0x8000, 48, INDIRECT, 0);
    publish(7);
    assert_int_equal(vq_pop(&vq, &elem, &why), 1);
    assert_int_equal(elem.head, 7);
    assert_int_equal(elem.out_num + elem.in_num, 3);
}

static void test_out_of_memory(void **state)
{
    (void)state;
    put_desc(DESC, 0, MEM - 10, 20, 0, 0);                   /* end beyond */
    publish(0);
    assert_refused("buffer outside guest memory");
}

static void test_overflow(void **state)
{
    (void)state;
    put_desc(DESC, 0, UINT64_MAX - 10, 20, 0, 0);
    publish(0);
    assert_refused("buffer length overflows");
}

static void test_loop(void **state)
{
    (void)state;
    put_desc(DESC, 0, 0x10000, 16, NEXT, 1);
    put_desc(DESC, 1, 0x10000, 16, NEXT, 0);
    publish(0);
    assert_refused("descriptor chain loops");
}

static void test_next_out_of_range(void **state)
{
    (void)state;
    put_desc(DESC, 0, 0x10000, 16, NEXT, NUM);
    publish(0);
    assert_refused("descriptor index out of range");
}

static void test_too_many_segments(void **state)
{
    (void)state;
    for (unsigned i = 0; i < VQ_MAX_SEGMENTS + 1; i++) {
        put_desc(0x20000, i, 0x10000, 1, WRITE | (i < VQ_MAX_SEGMENTS ? NEXT : 0), i + 1);
    }
    put_desc(DESC, 0, 0x20000, 16 * (VQ_MAX_SEGMENTS + 1), INDIRECT, 0);
    publish(0);
    assert_refused("too many buffers in one request");
}

static void test_indirect_rules(void **state)
{
    const char *why = NULL;

    (void)state;
    put_desc(0x8000, 0, 0x9000, 16, INDIRECT, 0);
    put_desc(DESC, 0, 0x8000, 16, INDIRECT, 0);
    publish(0);
    assert_refused("indirect descriptor in an indirect table");

    put_desc(DESC, 0, 0x8000, 16, INDIRECT | NEXT, 1);
    assert_refused("indirect descriptor inside a chain");
    put_desc(DESC, 0, 0x10000, 16, NEXT, 1);
    put_desc(DESC, 1, 0x8000, 16, INDIRECT, 0);
    assert_refused("indirect descriptor inside a chain");
    put_desc(DESC, 0, 0x8000, 24, INDIRECT, 0);
    assert_refused("indirect table of a bad size");
    put_desc(DESC, 0, 0x8000, 0, INDIRECT, 0);
    assert_refused("indirect table of a bad size");
    put_desc(DESC, 0, MEM - 8, 16, INDIRECT, 0);
    assert_refused("indirect table outside guest memory");
    /* Put right, the same request goes through. */
    put_desc(0x8000, 0, 0x10000, 16, 0, 0);
    put_desc(DESC, 0, 0x8000, 16, INDIRECT, 0);
    assert_int_equal(vq_pop(&vq, &elem, &why), 1);
}

static void test_order_of_buffers(void **state)
{
    (void)state;
    put_desc(DESC, 0, 0x10000, 16, WRITE | NEXT, 1);
    put_desc(DESC, 1, 0x11000, 16, 0, 0);
    publish(0);
    assert_refused("device-readable buffer after a device-writable one");
}

static void test_ring_indexes(void **state)
{
    uint16_t idx = NUM + 1;

    (void)state;
    publish(NUM);
    assert_refused("head index out of range");
    memcpy(guest + AVAIL + 2, &idx, 2);
    assert_refused("available index ahead of the ring");
}

static void test_bad_rings(void **state)
{
    VirtQueue q = { 0 };
    const char *why = NULL;

    (void)state;
    assert_false(vq_map(&q, &mem, 12, QVA + DESC, QVA + AVAIL, QVA + USED, true, &why));
    assert_false(vq_map(&q, &mem, NUM, QVA + DESC + 8, QVA + AVAIL, QVA + USED, true, &why));
    assert_false(vq_map(&q, &mem, NUM, DESC, AVAIL, USED, true, &why));    /* GPAs, not QVAs */
    assert_false(vq_map(&q, &mem, NUM, QVA + MEM - 64, QVA + AVAIL, QVA + USED, true, &why));
}

/* A head offered again and again without being given back: at most
 * NUM requests are ever taken. */
static void test_flood_of_one_head(void **state)
{
    const char *why = NULL;

    (void)state;
    put_desc(DESC, 0, 0x10000, 16, 0, 0);
    for (int i = 0; i < NUM; i++) {
        publish(0);
        assert_int_equal(vq_pop(&vq, &elem, &why), 1);
    }
    publish(0);
    assert_refused("more requests in flight than the ring has entries");
    vq_push(&vq, 0, 0);                             /* one back: one more */
    assert_int_equal(vq_pop(&vq, &elem, &why), 1);
}

static void test_limits_themselves_pass(void **state)
{
    const char *why = NULL;

    (void)state;
    for (unsigned i = 0; i < VQ_MAX_SEGMENTS; i++) {       /* exactly the most buffers */
        put_desc(0x20000, i, 0x10000, 1, WRITE | (i + 1 < VQ_MAX_SEGMENTS ? NEXT : 0), i + 1);
    }
    put_desc(DESC, 0, 0x20000, 16 * VQ_MAX_SEGMENTS, INDIRECT, 0);
    publish(0);
    assert_int_equal(vq_pop(&vq, &elem, &why), 1);
    assert_int_equal(elem.in_num, VQ_MAX_SEGMENTS);
    for (unsigned i = 0; i < NUM; i++) {                   /* a chain of the whole table */
        put_desc(DESC, i, 0x10000, 1, i + 1 < NUM ? NEXT : 0, i + 1);
    }
    publish(0);
    assert_int_equal(vq_pop(&vq, &elem, &why), 1);
    assert_int_equal(elem.out_num, NUM);
}

static void test_rings_at_the_end_of_a_region(void **state)
{
    VirtQueue q = { 0 };
    const char *why = NULL;
    uint64_t used = MEM / 2 - (4 + 8 * NUM);        /* ends where region 0 ends */

    (void)state;
    assert_true(vq_map(&q, &mem, NUM, QVA + DESC, QVA + AVAIL, QVA + used, false, &why));
    /* With EVENT_IDX the ring has 2 more bytes: beyond the region. */
    assert_false(vq_map(&q, &mem, NUM, QVA + DESC, QVA + AVAIL, QVA + used, true, &why));
}

static void test_no_interrupt_flag(void **state)
{
    uint16_t flags = 1;                             /* VRING_AVAIL_F_NO_INTERRUPT */

    (void)state;
    vq.event_idx = false;
    vq_push(&vq, 0, 1);
    assert_true(vq_should_notify(&vq));
    memcpy(guest + AVAIL, &flags, 2);
    vq_push(&vq, 0, 1);
    assert_false(vq_should_notify(&vq));
}

static void test_event_idx(void **state)
{
    uint16_t used_event;

    (void)state;
    vq.event_idx = true;
    vq_push(&vq, 0, 1);
    assert_true(vq_should_notify(&vq));             /* the first always */
    used_event = 5;                                 /* "interrupt me after 5" */
    memcpy(guest + AVAIL + 4 + 2 * NUM, &used_event, 2);
    for (int i = 1; i < 5; i++) {
        vq_push(&vq, 0, 1);
        assert_false(vq_should_notify(&vq));
    }
    vq_push(&vq, 0, 1);                             /* used idx 5 -> 6: passes 5 */
    assert_true(vq_should_notify(&vq));
    /* Across the 16-bit wrap. */
    vq.used_idx = 0xfffe;
    vq.signalled_used = 0xfffe;
    used_event = 0xffff;
    memcpy(guest + AVAIL + 4 + 2 * NUM, &used_event, 2);
    vq_push(&vq, 0, 1);
    assert_false(vq_should_notify(&vq));
    vq_push(&vq, 0, 1);
    assert_true(vq_should_notify(&vq));
    assert_int_equal(vq.used_idx, 0);
}

static void test_enable_kicks(void **state)
{
    const char *why = NULL;
    uint16_t avail_event;

    (void)state;
    vq.event_idx = true;
    assert_false(vq_enable_kicks(&vq));
    put_desc(DESC, 0, 0x10000, 16, 0, 0);
    publish(0);
    assert_true(vq_enable_kicks(&vq));              /* something came meanwhile */
    assert_int_equal(vq_pop(&vq, &elem, &why), 1);
    assert_false(vq_enable_kicks(&vq));
    memcpy(&avail_event, guest + USED + 4 + 8 * NUM, 2);
    assert_int_equal(avail_event, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_direct_chain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_buffer_spanning_regions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_indirect_chain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_out_of_memory, setup, teardown),
        cmocka_unit_test_setup_teardown(test_overflow, setup, teardown),
        cmocka_unit_test_setup_teardown(test_loop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_next_out_of_range, setup, teardown),
        cmocka_unit_test_setup_teardown(test_too_many_segments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_indirect_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(test_order_of_buffers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ring_indexes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_rings, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flood_of_one_head, setup, teardown),
        cmocka_unit_test_setup_teardown(test_limits_themselves_pass, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rings_at_the_end_of_a_region, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_interrupt_flag, setup, teardown),
        cmocka_unit_test_setup_teardown(test_event_idx, setup, teardown),
        cmocka_unit_test_setup_teardown(test_enable_kicks, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
