/*
 * test-coroutine - coroutines in one thread: life cycle, yield, nesting,
 * the stack pool, deferred wake-ups and deep stacks.
 */
#include <string.h>

#include "test-util.h"

static int trace[64];
static int ntrace;

static void tr(int v)
{
    TU_CHECK(ntrace < (int)ARRAY_SIZE(trace));
    trace[ntrace++] = v;
}

static void reset_trace(void)
{
    ntrace = 0;
    memset(trace, 0, sizeof(trace));
}

static void assert_trace(const int *expected, int n)
{
    assert_int_equal(ntrace, n);
    for (int i = 0; i < n; i++) {
        assert_int_equal(trace[i], expected[i]);
    }
}

/* ---- Life cycle -------------------------------------------------------------- */

typedef struct Basic {
    bool ran;
    Coroutine *self;
    bool in_co;
    AioContext *ctx;
    AioContext *co_ctx;
} Basic;

static void coroutine_fn basic_entry(void *opaque)
{
    Basic *b = opaque;

    b->ran = true;
    b->self = coroutine_self();
    b->in_co = in_coroutine();
    b->ctx = current_aio_context();
    b->co_ctx = coroutine_get_ctx(b->self);
}

static void test_create_enter_terminate(void **state)
{
    Basic b = { 0 };
    Coroutine *co;

    (void)state;
    assert_false(in_coroutine());
    assert_null(coroutine_self());
    co = coroutine_create(basic_entry, &b);
    assert_non_null(co);
    assert_false(b.ran);                 /* creating does not run it */
    assert_false(coroutine_entered(co));
    coroutine_enter(co);                 /* runs to completion, then freed */
    assert_true(b.ran);
    assert_ptr_equal(b.self, co);
    assert_true(b.in_co);
    assert_ptr_equal(b.ctx, main_aio_context());
    assert_ptr_equal(b.co_ctx, main_aio_context());
    assert_false(in_coroutine());
    assert_null(coroutine_self());
}

static void coroutine_fn yield_three_times(void *opaque)
{
    Coroutine **self = opaque;

    for (int i = 1; i <= 3; i++) {
        tr(10 + i);
        TU_CHECK(coroutine_self() == *self);
        TU_CHECK(coroutine_entered(*self));
        coroutine_yield();
    }
    tr(20);
}

static void test_yield_reenter(void **state)
{
    Coroutine *co;

    (void)state;
    reset_trace();
    co = coroutine_create(yield_three_times, &co);
    for (int i = 1; i <= 3; i++) {
        tr(i);
        coroutine_enter(co);
        assert_false(coroutine_entered(co));   /* yielded, not running */
        assert_false(in_coroutine());
    }
    tr(4);
    coroutine_enter(co);   /* terminates */
    assert_trace((const int[]){ 1, 11, 2, 12, 3, 13, 4, 20 }, 8);
}

typedef struct Channel {
    int in;
    int out;
    bool stop;
} Channel;

static void coroutine_fn doubler(void *opaque)
{
    Channel *ch = opaque;

    while (!ch->stop) {
        ch->out = ch->in * 2;
        coroutine_yield();
    }
    ch->out = -1;
}

static void test_passing_values(void **state)
{
    Channel ch = { 0 };
    Coroutine *co = coroutine_create(doubler, &ch);

    (void)state;
    for (int i = 0; i < 1000; i++) {
        ch.in = i;
        coroutine_enter(co);
        assert_int_equal(ch.out, 2 * i);
    }
    ch.stop = true;
    coroutine_enter(co);
    assert_int_equal(ch.out, -1);
}

/* ---- Nesting ---------------------------------------------------------------- */

typedef struct Nest {
    Coroutine *outer;
    Coroutine *inner;
    Coroutine *self_in_inner;
    Coroutine *self_in_outer_after;
} Nest;

static void coroutine_fn inner_entry(void *opaque)
{
    Nest *n = opaque;

    n->self_in_inner = coroutine_self();
    tr(2);
    coroutine_yield();     /* back to the outer coroutine, not to main */
    tr(4);
}

static void coroutine_fn outer_entry(void *opaque)
{
    Nest *n = opaque;

    tr(1);
    n->inner = coroutine_create(inner_entry, n);
    coroutine_enter(n->inner);
    n->self_in_outer_after = coroutine_self();
    tr(3);
    coroutine_enter(n->inner);   /* inner terminates */
    tr(5);
    coroutine_yield();
    tr(7);
}

static void test_nested(void **state)
{
    Nest n = { 0 };

    (void)state;
    reset_trace();
    n.outer = coroutine_create(outer_entry, &n);
    coroutine_enter(n.outer);
    tr(6);
    assert_ptr_equal(n.self_in_inner, n.inner);
    assert_ptr_equal(n.self_in_outer_after, n.outer);
    assert_null(coroutine_self());
    coroutine_enter(n.outer);
    assert_trace((const int[]){ 1, 2, 3, 4, 5, 6, 7 }, 7);
}

/* ---- Pool ---------------------------------------------------------------------- */

static void coroutine_fn frame_entry(void *opaque)
{
    uintptr_t *frame = opaque;
    *frame = (uintptr_t)__builtin_frame_address(0);
}

static void coroutine_fn park_entry(void *opaque)
{
    (void)opaque;
    coroutine_yield();
}

static void test_pool_reuse(void **state)
{
    Coroutine *cos[300];
    uintptr_t f1 = 0, f2 = 0;

    (void)state;
    coroutine_pool_drain();
    assert_int_equal(coroutine_pool_size(), 0);

    /* A terminated coroutine goes back to the pool... */
    coroutine_enter(coroutine_create(frame_entry, &f1));
    assert_int_equal(coroutine_pool_size(), 1);
    /* ... and the next one reuses its stack instead of a new one. */
    Coroutine *co = coroutine_create(frame_entry, &f2);
    assert_int_equal(coroutine_pool_size(), 0);
    coroutine_enter(co);
    assert_int_equal(coroutine_pool_size(), 1);
    assert_true(f1 != 0);
    assert_true(f1 == f2);

    /* Sequential create/terminate never grows the pool beyond one. */
    for (int i = 0; i < 100; i++) {
        coroutine_enter(coroutine_create(frame_entry, &f2));
        assert_int_equal(coroutine_pool_size(), 1);
    }

    /* Ten live coroutines: one from the pool, nine new. */
    for (int i = 0; i < 10; i++) {
        cos[i] = coroutine_create(park_entry, NULL);
        coroutine_enter(cos[i]);
    }
    assert_int_equal(coroutine_pool_size(), 0);
    for (int i = 0; i < 10; i++) {
        coroutine_enter(cos[i]);
    }
    assert_int_equal(coroutine_pool_size(), 10);

    /* Creating takes from the pool, one each. */
    for (int i = 0; i < 5; i++) {
        cos[i] = coroutine_create(park_entry, NULL);
        assert_int_equal(coroutine_pool_size(), 10 - i - 1);
    }
    for (int i = 0; i < 5; i++) {
        coroutine_enter(cos[i]);
        coroutine_enter(cos[i]);
    }
    assert_int_equal(coroutine_pool_size(), 10);

    /* The pool is bounded. */
    for (int i = 0; i < 300; i++) {
        cos[i] = coroutine_create(park_entry, NULL);
        coroutine_enter(cos[i]);
    }
    assert_int_equal(coroutine_pool_size(), 0);
    for (int i = 0; i < 300; i++) {
        coroutine_enter(cos[i]);
    }
    assert_true(coroutine_pool_size() >= 10);
    assert_true(coroutine_pool_size() < 300);

    coroutine_pool_drain();
    assert_int_equal(coroutine_pool_size(), 0);
}

/* ---- Deferred wake-ups -------------------------------------------------------------- */

static Coroutine *sleeper_co;

static void coroutine_fn sleeper_entry(void *opaque)
{
    (void)opaque;
    tr(100);
    coroutine_yield();
    tr(3);
    TU_CHECK(coroutine_self() == sleeper_co);
}

static void coroutine_fn waker_entry(void *opaque)
{
    (void)opaque;
    tr(1);
    aio_co_wake(sleeper_co);   /* same context, from a coroutine: deferred */
    tr(2);
    coroutine_yield();
    tr(5);
}

static void test_wake_from_coroutine_deferred(void **state)
{
    Coroutine *waker;

    (void)state;
    reset_trace();
    sleeper_co = coroutine_create(sleeper_entry, NULL);
    coroutine_enter(sleeper_co);
    waker = coroutine_create(waker_entry, NULL);
    coroutine_enter(waker);
    /* The sleeper ran when the waker yielded, before enter returned. */
    tr(4);
    coroutine_enter(waker);
    assert_trace((const int[]){ 100, 1, 2, 3, 4, 5 }, 6);
}

static Coroutine *multi[3];

static void coroutine_fn multi_sleeper(void *opaque)
{
    int id = (int)(intptr_t)opaque;
    coroutine_yield();
    tr(id);
}

static void coroutine_fn multi_waker(void *opaque)
{
    (void)opaque;
    /* Woken in the order 2, 0, 1: they run in that order after we end. */
    aio_co_wake(multi[2]);
    aio_co_wake(multi[0]);
    aio_co_wake(multi[1]);
    tr(9);
}

static void test_wake_order(void **state)
{
    (void)state;
    reset_trace();
    for (int i = 0; i < 3; i++) {
        multi[i] = coroutine_create(multi_sleeper, (void *)(intptr_t)i);
        coroutine_enter(multi[i]);
    }
    coroutine_enter(coroutine_create(multi_waker, NULL));
    assert_trace((const int[]){ 9, 2, 0, 1 }, 4);
}

static void test_wake_from_outside_coroutine(void **state)
{
    (void)state;
    reset_trace();
    sleeper_co = coroutine_create(sleeper_entry, NULL);
    coroutine_enter(sleeper_co);
    tr(1);
    aio_co_wake(sleeper_co);   /* not in a coroutine: entered right away */
    tr(2);
    assert_trace((const int[]){ 100, 1, 3, 2 }, 4);

    /* aio_co_enter() in the caller's own context behaves the same. */
    reset_trace();
    sleeper_co = coroutine_create(sleeper_entry, NULL);
    aio_co_enter(main_aio_context(), sleeper_co);
    assert_trace((const int[]){ 100 }, 1);
    aio_co_enter(main_aio_context(), sleeper_co);
    assert_trace((const int[]){ 100, 3 }, 2);
}

/* A coroutine scheduled in its own context runs from the event loop. */
static void test_schedule_same_context(void **state)
{
    (void)state;
    reset_trace();
    sleeper_co = coroutine_create(sleeper_entry, NULL);
    aio_co_schedule(main_aio_context(), sleeper_co);
    assert_int_equal(ntrace, 0);
    assert_true(aio_poll(main_aio_context(), false));
    assert_trace((const int[]){ 100 }, 1);
    aio_co_schedule(main_aio_context(), sleeper_co);
    assert_true(aio_poll(main_aio_context(), false));
    assert_trace((const int[]){ 100, 3 }, 2);
    assert_false(aio_poll(main_aio_context(), false));
}

/* ---- Deep stack ---------------------------------------------------------------- */

#define FRAME_BYTES 1024

/* Keep the frames on the coroutine's own stack, not on ASan's fake stack. */
#define NO_ASAN __attribute__((no_sanitize("address")))

static NO_ASAN __attribute__((noinline)) uint64_t deep(int depth)
{
    volatile unsigned char buf[FRAME_BYTES];
    uint64_t sum = 0;

    for (int i = 0; i < FRAME_BYTES; i++) {
        buf[i] = (unsigned char)(depth + i);
    }
    if (depth > 0) {
        sum = deep(depth - 1);
    }
    for (int i = 0; i < FRAME_BYTES; i += 64) {
        sum += buf[i];
    }
    return sum;
}

typedef struct DeepArgs {
    int depth;
    uint64_t result;
    uintptr_t top;
    uintptr_t low;
    int touched;
} DeepArgs;

static NO_ASAN __attribute__((noinline)) void deep_low(DeepArgs *a, int depth)
{
    volatile unsigned char buf[FRAME_BYTES];

    for (int i = 0; i < FRAME_BYTES; i++) {
        buf[i] = 1;          /* every byte: the whole frame is really used */
    }
    if (depth > 0) {
        deep_low(a, depth - 1);
    } else {
        a->low = (uintptr_t)__builtin_frame_address(0);
    }
    /* Not a tail call: the frame stays live across the recursion. */
    a->touched += buf[FRAME_BYTES - 1];
}

static void coroutine_fn deep_entry(void *opaque)
{
    DeepArgs *a = opaque;

    a->top = (uintptr_t)__builtin_frame_address(0);
    a->result = deep(a->depth);
    deep_low(a, a->depth);
    coroutine_yield();          /* the stack survives a switch */
    a->result += deep(a->depth);
}

static void test_deep_recursion(void **state)
{
    DeepArgs a = { .depth = 200 };
    uint64_t expected = deep(200);   /* on the main stack */
    Coroutine *co = coroutine_create(deep_entry, &a);

    (void)state;
    coroutine_enter(co);
    assert_true(a.result == expected);
    /* At least 200 KiB of the coroutine's stack were really used. */
    assert_true(a.top > a.low);
    assert_true(a.top - a.low >= 200 * 1024);
    assert_int_equal(a.touched, 201);
    coroutine_enter(co);
    assert_true(a.result == 2 * expected);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TU_TEST(test_create_enter_terminate),
        TU_TEST(test_yield_reenter),
        TU_TEST(test_passing_values),
        TU_TEST(test_nested),
        TU_TEST(test_pool_reuse),
        TU_TEST(test_wake_from_coroutine_deferred),
        TU_TEST(test_wake_order),
        TU_TEST(test_wake_from_outside_coroutine),
        TU_TEST(test_schedule_same_context),
        TU_TEST(test_deep_recursion),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
