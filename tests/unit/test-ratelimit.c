/*
 * test-ratelimit - the bytes-per-second limit of block jobs.
 */
#include "test-util.h"

#include "blockd/ratelimit.h"

#define SLICE (100 * TU_MS)

static void test_limit_spreads_work_over_slices(void **state)
{
    RateLimit rl;
    int64_t delay;

    (void)state;
    ratelimit_init(&rl);
    ratelimit_set_speed(&rl, 1 << 20, SLICE);       /* ~104858 bytes a slice */
    ratelimit_account(&rl, 50000);
    assert_int_equal(ratelimit_delay_ns(&rl), 0);   /* within the quota */
    ratelimit_account(&rl, 3 * 104858);
    delay = ratelimit_delay_ns(&rl);
    assert_true(delay > 2 * SLICE && delay <= 3 * SLICE);
    ratelimit_destroy(&rl);
}

/*
 * Work done without a limit is not owed to a limit set later.  (It was:
 * after a mirror ran unlimited for a while, block-job-set-speed to
 * 16 MiB/s put it to sleep for minutes, and job-complete waited for that.)
 */
static void test_unlimited_work_is_not_owed_later(void **state)
{
    RateLimit rl;

    (void)state;
    ratelimit_init(&rl);
    ratelimit_set_speed(&rl, 1 << 20, SLICE);
    ratelimit_account(&rl, 4 * 104858);            /* pushes the slice out */
    assert_true(ratelimit_delay_ns(&rl) > 0);
    ratelimit_set_speed(&rl, 0, SLICE);
    assert_int_equal(ratelimit_delay_ns(&rl), 0);
    for (int i = 0; i < 1000; i++) {
        ratelimit_account(&rl, 1 << 20);           /* 1 GB, unlimited */
    }
    assert_int_equal(ratelimit_delay_ns(&rl), 0);
    ratelimit_set_speed(&rl, 16 << 20, SLICE);
    assert_int_equal(ratelimit_delay_ns(&rl), 0);
    ratelimit_destroy(&rl);
}

/* A new speed starts a new slice: debt at a slow speed does not keep a
 * job asleep after it was made faster. */
static void test_new_speed_starts_fresh(void **state)
{
    RateLimit rl;

    (void)state;
    ratelimit_init(&rl);
    ratelimit_set_speed(&rl, 1 << 20, SLICE);
    ratelimit_account(&rl, 50 * 104858);           /* ~5 s of debt */
    assert_true(ratelimit_delay_ns(&rl) > 4 * TU_SEC);
    ratelimit_set_speed(&rl, 1 << 30, SLICE);
    assert_int_equal(ratelimit_delay_ns(&rl), 0);
    ratelimit_destroy(&rl);
}

/* Setting the same speed again keeps what is owed: repeating it must not
 * lift the limit. */
static void test_same_speed_keeps_debt(void **state)
{
    RateLimit rl;

    (void)state;
    ratelimit_init(&rl);
    ratelimit_set_speed(&rl, 1 << 20, SLICE);
    ratelimit_account(&rl, 20 * 104858);           /* ~2 s of debt */
    ratelimit_set_speed(&rl, 1 << 20, SLICE);
    assert_true(ratelimit_delay_ns(&rl) > TU_SEC);
    ratelimit_destroy(&rl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TU_TEST(test_limit_spreads_work_over_slices),
        TU_TEST(test_unlimited_work_is_not_owed_later),
        TU_TEST(test_new_speed_starts_fresh),
        TU_TEST(test_same_speed_keeps_debt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
