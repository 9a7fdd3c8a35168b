/*
 * test-iothread - iothread objects: life cycle, lookup, ids, parameters.
 */
#include <string.h>

#include "test-util.h"
#include "blockd/error.h"

static void test_create_destroy_several(void **state)
{
    IOThread *iot[4];
    AioContext *ctx[4];
    char name[16];

    (void)state;
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 4; i++) {
            snprintf(name, sizeof(name), "io%d", i);
            iot[i] = iothread_create(name, NULL, &error_abort);
            assert_non_null(iot[i]);
            ctx[i] = iothread_get_aio_context(iot[i]);
            assert_non_null(ctx[i]);
            assert_ptr_not_equal(ctx[i], main_aio_context());
            assert_string_equal(iothread_get_id(iot[i]), name);
            assert_string_equal(aio_context_name(ctx[i]), name);
            for (int j = 0; j < i; j++) {
                assert_ptr_not_equal(ctx[i], ctx[j]);
            }
            /* The context's home thread is the iothread, not us. */
            assert_false(aio_context_in_home_thread(ctx[i]));
            TuThreadInfo info = tu_thread_info(ctx[i]);
            assert_ptr_equal(info.ctx, ctx[i]);
        }
        /* Destroy in a different order than creation. */
        iothread_destroy(iot[2]);
        iothread_destroy(iot[0]);
        iothread_destroy(iot[3]);
        iothread_destroy(iot[1]);
        assert_null(iothread_find("io0"));
    }
}

static void test_find(void **state)
{
    IOThread *a = tu_iothread_new("alpha");
    IOThread *b = tu_iothread_new("beta");

    (void)state;
    assert_ptr_equal(iothread_find("alpha"), a);
    assert_ptr_equal(iothread_find("beta"), b);
    assert_null(iothread_find("gamma"));
    assert_null(iothread_find("alph"));
    assert_null(iothread_find("alphabet"));
    assert_null(iothread_find(""));
    iothread_destroy(a);
    assert_null(iothread_find("alpha"));
    assert_ptr_equal(iothread_find("beta"), b);
    iothread_destroy(b);
    assert_null(iothread_find("beta"));
}

static void test_duplicate_id(void **state)
{
    IOThread *a = tu_iothread_new("dup");
    IOThread *again;
    Error *err = NULL;

    (void)state;
    again = iothread_create("dup", NULL, &err);
    assert_null(again);
    assert_non_null(err);
    assert_int_equal(error_get_class(err), ERROR_CLASS_GENERIC_ERROR);
    assert_non_null(strstr(error_get_pretty(err), "dup"));
    error_free(err);

    /* NULL errp: still refused. */
    assert_null(iothread_create("dup", NULL, NULL));

    /* The original is unharmed and still the one found. */
    assert_ptr_equal(iothread_find("dup"), a);
    assert_ptr_equal(tu_thread_info(iothread_get_aio_context(a)).ctx,
                     iothread_get_aio_context(a));
    iothread_destroy(a);

    /* Once destroyed, the id is free again. */
    a = iothread_create("dup", NULL, &error_abort);
    assert_non_null(a);
    iothread_destroy(a);
}

#define MAX_SEEN 8

typedef struct Seen {
    const char *ids[MAX_SEEN];
    IOThread *iots[MAX_SEEN];
    int n;
} Seen;

static void collect(IOThread *iot, void *opaque)
{
    Seen *s = opaque;

    assert_true(s->n < MAX_SEEN);
    s->iots[s->n] = iot;
    s->ids[s->n++] = iothread_get_id(iot);
}

static void test_foreach_order(void **state)
{
    static const char *const names[] = { "zeta", "alpha", "mid", "beta" };
    IOThread *iot[4];
    Seen s = { 0 };

    (void)state;
    iothread_foreach(collect, &s);
    assert_int_equal(s.n, 0);

    for (int i = 0; i < 4; i++) {
        iot[i] = tu_iothread_new(names[i]);
    }
    iothread_foreach(collect, &s);
    assert_int_equal(s.n, 4);
    for (int i = 0; i < 4; i++) {
        assert_string_equal(s.ids[i], names[i]);   /* creation order */
        assert_ptr_equal(s.iots[i], iot[i]);
    }

    iothread_destroy(iot[1]);
    memset(&s, 0, sizeof(s));
    iothread_foreach(collect, &s);
    assert_int_equal(s.n, 3);
    assert_string_equal(s.ids[0], "zeta");
    assert_string_equal(s.ids[1], "mid");
    assert_string_equal(s.ids[2], "beta");

    /* A new one goes at the end. */
    iot[1] = tu_iothread_new("last");
    memset(&s, 0, sizeof(s));
    iothread_foreach(collect, &s);
    assert_int_equal(s.n, 4);
    assert_string_equal(s.ids[3], "last");

    iothread_destroy_all();
    assert_null(iothread_find("zeta"));
    memset(&s, 0, sizeof(s));
    iothread_foreach(collect, &s);
    assert_int_equal(s.n, 0);
}

static void test_thread_ids(void **state)
{
    IOThread *a = tu_iothread_new("tid-a");
    IOThread *b = tu_iothread_new("tid-b");
    int main_tid = bd_thread_get_tid();
    int ta = iothread_get_thread_id(a), tb = iothread_get_thread_id(b);

    (void)state;
    assert_true(main_tid > 0);
    assert_true(ta > 0);
    assert_true(tb > 0);
    assert_int_not_equal(ta, main_tid);
    assert_int_not_equal(tb, main_tid);
    assert_int_not_equal(ta, tb);
    /* It is the tid the thread itself sees. */
    assert_int_equal(tu_thread_info(iothread_get_aio_context(a)).tid, ta);
    assert_int_equal(tu_thread_info(iothread_get_aio_context(b)).tid, tb);
    /* In our process: /proc/self/task/<tid> exists. */
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/task/%d", ta);
    assert_int_equal(access(path, F_OK), 0);
    iothread_destroy(a);
    iothread_destroy(b);
}

/* ---- Destroy runs what was scheduled before it ------------------------------------ */

typedef struct Pending {
    int ran;                 /* touched only in the iothread */
    int in_order;
    int next;
} Pending;

typedef struct PendingItem {
    Pending *p;
    int seq;
} PendingItem;

static void pending_cb(void *opaque)
{
    PendingItem *it = opaque;

    if (it->seq == it->p->next) {
        it->p->in_order++;
    }
    it->p->next = it->seq + 1;
    it->p->ran++;
}

static void block_bh(void *opaque)
{
    (void)opaque;
    tu_sleep_ms(20);   /* let the others pile up behind */
}

typedef struct CoDone {
    bool ran;
} CoDone;

static void coroutine_fn co_mark(void *opaque)
{
    ((CoDone *)opaque)->ran = true;
}

typedef struct SelfDel {
    BH *bh;
    int runs;
} SelfDel;

static void self_delete_cb(void *opaque)
{
    SelfDel *sd = opaque;

    sd->runs++;
    bh_delete(sd->bh);
}

static void test_destroy_runs_pending(void **state)
{
    static PendingItem items[200];
    Pending p = { 0 };
    CoDone cd = { 0 };

    (void)state;
    for (int round = 0; round < 5; round++) {
        IOThread *iot = tu_iothread_new("pending");
        AioContext *ctx = iothread_get_aio_context(iot);

        memset(&p, 0, sizeof(p));
        cd.ran = false;
        aio_bh_schedule_oneshot(ctx, block_bh, NULL);
        for (int i = 0; i < 200; i++) {
            items[i] = (PendingItem){ &p, i };
            aio_bh_schedule_oneshot(ctx, pending_cb, &items[i]);
        }
        aio_co_schedule(ctx, coroutine_create(co_mark, &cd));
        iothread_destroy(iot);
        assert_int_equal(p.ran, 200);
        assert_int_equal(p.in_order, 200);
        assert_true(cd.ran);
    }

    /* A persistent BH scheduled just before destroy also runs. */
    for (int round = 0; round < 5; round++) {
        IOThread *iot = tu_iothread_new("pending");
        SelfDel sd = { 0 };

        sd.bh = aio_bh_new(iothread_get_aio_context(iot), self_delete_cb, &sd);
        bh_schedule(sd.bh);
        iothread_destroy(iot);
        assert_int_equal(sd.runs, 1);
    }
}

static void test_params(void **state)
{
    IOThreadParams p, got;
    IOThread *iot;
    Error *err = NULL;

    (void)state;
    iothread_params_init(&p);
    assert_int_equal(p.poll_max_ns, IOTHREAD_DEFAULT_POLL_MAX_NS);
    assert_int_equal(p.poll_grow, 0);
    assert_int_equal(p.poll_shrink, 0);
    assert_int_equal(p.aio_max_batch, 0);

    /* Defaults when no parameters are given. */
    iot = iothread_create("params", NULL, &error_abort);
    iothread_get_params(iot, &got);
    assert_int_equal(got.poll_max_ns, IOTHREAD_DEFAULT_POLL_MAX_NS);
    assert_int_equal(got.poll_grow, 0);
    assert_int_equal(got.poll_shrink, 0);

    /* Changing them at run time. */
    p.poll_max_ns = 1000;
    p.poll_grow = 4;
    p.poll_shrink = 3;
    iothread_set_params(iot, &p);
    iothread_get_params(iot, &got);
    assert_int_equal(got.poll_max_ns, 1000);
    assert_int_equal(got.poll_grow, 4);
    assert_int_equal(got.poll_shrink, 3);
    iothread_destroy(iot);

    /* Given at creation. */
    p.poll_max_ns = 0;
    iot = iothread_create("params", &p, &error_abort);
    iothread_get_params(iot, &got);
    assert_int_equal(got.poll_max_ns, 0);
    assert_int_equal(got.poll_grow, 4);
    iothread_destroy(iot);

    /* Negative values are refused, and nothing is created. */
    for (int field = 0; field < 4; field++) {
        iothread_params_init(&p);
        switch (field) {
        case 0: p.poll_max_ns = -5; break;
        case 1: p.poll_grow = -1; break;
        case 2: p.poll_shrink = -1; break;
        case 3: p.aio_max_batch = -1; break;
        }
        err = NULL;
        iot = iothread_create("neg", &p, &err);
        assert_null(iot);
        assert_non_null(err);
        assert_non_null(error_get_pretty(err));
        error_free(err);
        assert_null(iothread_find("neg"));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TU_TEST(test_create_destroy_several),
        TU_TEST(test_find),
        TU_TEST(test_duplicate_id),
        TU_TEST(test_foreach_order),
        TU_TEST(test_thread_ids),
        TU_TEST(test_destroy_runs_pending),
        TU_TEST(test_params),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
