/*
 * test-defer-call - deferral sections batch and deduplicate calls.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "blockd/defer-call.h"

static int log_buf[256];
static int log_len;

static void record(void *opaque)
{
    log_buf[log_len++] = (int)(intptr_t)opaque;
}

static void reset(void)
{
    log_len = 0;
}

static void test_outside_section_runs_now(void **state)
{
    (void)state;
    reset();
    defer_call(record, (void *)1);
    assert_int_equal(log_len, 1);
    assert_int_equal(log_buf[0], 1);
}

static void test_runs_at_end_in_order_deduplicated(void **state)
{
    (void)state;
    reset();
    defer_call_begin();
    defer_call(record, (void *)1);
    defer_call(record, (void *)2);
    defer_call(record, (void *)1);
    assert_int_equal(log_len, 0);
    defer_call_end();
    assert_int_equal(log_len, 2);
    assert_int_equal(log_buf[0], 1);
    assert_int_equal(log_buf[1], 2);
}

static void test_nested_sections_run_at_outermost_end(void **state)
{
    (void)state;
    reset();
    defer_call_begin();
    defer_call(record, (void *)1);
    defer_call_begin();
    defer_call(record, (void *)2);
    defer_call_end();
    assert_int_equal(log_len, 0);
    defer_call_end();
    assert_int_equal(log_len, 2);
}

static void defer_again(void *opaque)
{
    record(opaque);
    if ((intptr_t)opaque < 3) {
        /* Deferring from a deferred call: runs in the same end, after us. */
        defer_call(defer_again, (void *)((intptr_t)opaque + 1));
    }
    /* Deduplicated while pending; once it has run it may run again. */
    defer_call(record, (void *)100);
}

static void test_deferred_call_defers_more(void **state)
{
    (void)state;
    reset();
    defer_call_begin();
    defer_call(defer_again, (void *)1);
    defer_call_end();
    /* 1, then 2 and 100 (deduplicated while pending), then 3 and 100 again. */
    assert_int_equal(log_len, 5);
    assert_int_equal(log_buf[0], 1);
    assert_int_equal(log_buf[1], 2);
    assert_int_equal(log_buf[2], 100);
    assert_int_equal(log_buf[3], 3);
    assert_int_equal(log_buf[4], 100);
}

static void test_overflow_runs_immediately(void **state)
{
    (void)state;
    reset();
    defer_call_begin();
    for (int i = 0; i < 100; i++) {
        defer_call(record, (void *)(intptr_t)i);
    }
    /* Whatever did not fit ran at once; nothing is lost or duplicated. */
    assert_true(log_len > 0);
    defer_call_end();
    assert_int_equal(log_len, 100);
    int seen[100] = { 0 };
    for (int i = 0; i < log_len; i++) {
        seen[log_buf[i]]++;
    }
    for (int i = 0; i < 100; i++) {
        assert_int_equal(seen[i], 1);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_outside_section_runs_now),
        cmocka_unit_test(test_runs_at_end_in_order_deduplicated),
        cmocka_unit_test(test_nested_sections_run_at_outermost_end),
        cmocka_unit_test(test_deferred_call_defers_more),
        cmocka_unit_test(test_overflow_runs_immediately),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
