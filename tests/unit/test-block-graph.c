/*
 * test-block-graph - nodes, edges, references, permissions, replace, drain.
 */
#include <string.h>

#include "test-util.h"

#include "blockd/block.h"
#include "blockd/block-global-state.h"
#include "blockd/block-io.h"

static int graph_setup(void **state)
{
    tu_setup(state);
    bdrv_init();
    return 0;
}

#define GRAPH_TEST(fn) cmocka_unit_test_setup_teardown(fn, graph_setup, tu_teardown)

static BlockDriverState *open_null(const char *name, bool writable)
{
    json_object *opts = json_object_new_object();
    BlockDriverState *bs;

    json_object_object_add(opts, "size", json_object_new_int64(1 << 20));
    bs = bdrv_open_driver(bdrv_find_driver("null-co"), name, opts,
                          writable ? BDRV_O_RDWR : 0, &error_abort);
    json_object_put(opts);
    return bs;
}

/* A parent that is not a node: records drain callbacks. */
typedef struct TestUser {
    const char *name;
    int drained;          /* begin - end */
    int begins, ends;     /* calls */
    int in_flight;        /* what drained_poll reports */
} TestUser;

static void user_drained_begin(BdrvChild *c)
{
    ((TestUser *)c->opaque)->drained++;
    ((TestUser *)c->opaque)->begins++;
}

static void user_drained_end(BdrvChild *c)
{
    ((TestUser *)c->opaque)->drained--;
    ((TestUser *)c->opaque)->ends++;
}

static bool user_drained_poll(BdrvChild *c)
{
    return atomic_read(&((TestUser *)c->opaque)->in_flight) > 0;
}

static char *user_desc(BdrvChild *c)
{
    char *s;
    if (asprintf(&s, "test user '%s'", ((TestUser *)c->opaque)->name) < 0) {
        abort();
    }
    return s;
}

static const BdrvChildClass test_user_class = {
    .drained_begin = user_drained_begin,
    .drained_end = user_drained_end,
    .drained_poll = user_drained_poll,
    .get_parent_desc = user_desc,
};

static BdrvChild *attach_user(BlockDriverState *bs, TestUser *u, uint64_t perm,
                              uint64_t shared, Error **errp)
{
    return bdrv_root_attach_child(bs, "root", &test_user_class, BDRV_CHILD_DATA,
                                  perm, shared, u, errp);
}

/* The main thread reads the graph under the main-loop read lock. */
static BlockDriverState *child_node(BdrvChild *c)
{
    BlockDriverState *bs;

    graph_rdlock_main_loop();
    bs = c->bs;
    graph_rdunlock_main_loop();
    return bs;
}

static int set_perm(BdrvChild *c, uint64_t perm, uint64_t shared, Error **errp)
{
    int ret;

    graph_wrlock();
    ret = bdrv_child_try_set_perm(c, perm, shared, errp);
    graph_wrunlock();
    return ret;
}

static void test_node_names(void **state)
{
    Error *err = NULL;
    BlockDriverState *a, *b;

    (void)state;
    a = open_null("disk0", false);
    assert_string_equal(a->node_name, "disk0");
    assert_ptr_equal(bdrv_find_node("disk0"), a);

    b = open_null(NULL, false);
    assert_true(b->auto_named);
    assert_int_equal(b->node_name[0], '#');
    assert_ptr_equal(bdrv_find_node(b->node_name), b);

    assert_null(bdrv_open_driver(bdrv_find_driver("null-co"), "disk0", NULL, 0, &err));
    assert_string_equal(error_get_pretty(err), "Duplicate nodes with node-name='disk0'");
    error_clear(&err);

    assert_null(bdrv_open_driver(bdrv_find_driver("null-co"), "0bad", NULL, 0, &err));
    assert_string_equal(error_get_pretty(err), "Invalid node-name: '0bad'");
    error_clear(&err);
    assert_null(bdrv_open_driver(bdrv_find_driver("null-co"), "#block9", NULL, 0, &err));
    error_clear(&err);

    assert_int_equal(bdrv_node_count(), 2);
    bdrv_unref(a);
    bdrv_unref(b);
    assert_int_equal(bdrv_node_count(), 0);
    assert_null(bdrv_find_node("disk0"));
}

static void test_bad_option_is_named(void **state)
{
    json_object *opts = json_object_new_object();
    Error *err = NULL;

    (void)state;
    json_object_object_add(opts, "size", json_object_new_string("big"));
    assert_null(bdrv_open_driver(bdrv_find_driver("null-co"), "n", opts, 0, &err));
    assert_non_null(strstr(error_get_pretty(err), "'size'"));
    error_clear(&err);
    json_object_put(opts);
    assert_int_equal(bdrv_node_count(), 0);
}

static void test_children_and_references(void **state)
{
    BlockDriverState *top = open_null("top", true);
    BlockDriverState *bottom = open_null("bottom", true);
    BdrvChild *c;

    (void)state;
    c = bdrv_attach_child(top, bottom, "file", BDRV_CHILD_FILTERED, &error_abort);
    graph_rdlock_main_loop();
    assert_ptr_equal(top->file, c);
    graph_rdunlock_main_loop();
    assert_ptr_equal(child_node(c), bottom);
    assert_int_equal(bottom->refcnt, 2);
    assert_false(list_empty(&bottom->parents));

    /* The user's reference goes; the edge keeps the node alive. */
    bdrv_unref(bottom);
    assert_non_null(bdrv_find_node("bottom"));
    /* Closing the parent releases its children. */
    bdrv_unref(top);
    assert_null(bdrv_find_node("bottom"));
    assert_int_equal(bdrv_node_count(), 0);
}

static void test_permission_conflict(void **state)
{
    BlockDriverState *bs = open_null("disk", true);
    TestUser a = { .name = "A" }, b = { .name = "B" };
    BdrvChild *ca, *cb;
    Error *err = NULL;

    (void)state;
    ca = attach_user(bs, &a, BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE,
                     BLK_PERM_CONSISTENT_READ, &error_abort);
    assert_int_equal(bs->perm, BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE);

    cb = attach_user(bs, &b, BLK_PERM_WRITE, BLK_PERM_ALL, &err);
    assert_null(cb);
    assert_string_equal(error_get_pretty(err),
        "Permission conflict on node 'disk': permissions 'write' are both required "
        "by test user 'B' (uses node 'disk' as 'root' child) and unshared by "
        "test user 'A' (uses node 'disk' as 'root' child).");
    error_clear(&err);
    /* Nothing changed by the failed attach. */
    assert_int_equal(bs->perm, BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE);
    assert_int_equal(bs->refcnt, 2);

    /* A reader that shares everything is fine. */
    cb = attach_user(bs, &b, BLK_PERM_CONSISTENT_READ, BLK_PERM_ALL, &error_abort);

    /* Loosening A's sharing lets B upgrade. */
    assert_int_equal(set_perm(cb, BLK_PERM_WRITE, BLK_PERM_ALL, &err), -1);
    error_clear(&err);
    assert_int_equal(set_perm(ca, BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE,
                                             BLK_PERM_ALL, &error_abort), 0);
    assert_int_equal(set_perm(cb, BLK_PERM_WRITE, BLK_PERM_ALL,
                                             &error_abort), 0);

    bdrv_root_unref_child(ca);
    bdrv_root_unref_child(cb);
    assert_int_equal(bs->perm, 0);
    bdrv_unref(bs);
}

static void test_read_only_node_refuses_writers(void **state)
{
    BlockDriverState *bs = open_null("ro", false);
    TestUser u = { .name = "U" };
    Error *err = NULL;

    (void)state;
    assert_null(attach_user(bs, &u, BLK_PERM_WRITE, BLK_PERM_ALL, &err));
    assert_string_equal(error_get_pretty(err), "Block node 'ro' is read-only");
    error_clear(&err);
    bdrv_unref(bs);
}

static void test_permissions_propagate_to_children(void **state)
{
    BlockDriverState *filter = open_null("filter", true);
    BlockDriverState *file = open_null("file", true);
    TestUser u = { .name = "U" }, other = { .name = "other" };
    BdrvChild *cu, *co;
    Error *err = NULL;

    (void)state;
    bdrv_attach_child(filter, file, "file", BDRV_CHILD_FILTERED, &error_abort);
    bdrv_unref(file);
    cu = attach_user(filter, &u, BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE,
                     BLK_PERM_CONSISTENT_READ, &error_abort);
    /* The filter passes the user's needs down to its child. */
    assert_int_equal(file->perm, BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE);
    /* A second user of the child itself conflicts with the one above. */
    assert_null(attach_user(file, &other, BLK_PERM_WRITE, BLK_PERM_ALL, &err));
    assert_non_null(strstr(error_get_pretty(err), "node 'filter'"));
    error_clear(&err);
    co = attach_user(file, &other, BLK_PERM_CONSISTENT_READ, BLK_PERM_ALL, &error_abort);
    bdrv_root_unref_child(co);
    bdrv_root_unref_child(cu);
    assert_int_equal(file->perm, 0);
    bdrv_unref(filter);
    assert_int_equal(bdrv_node_count(), 0);
}

static void test_schedule_unref_runs_after_unlock(void **state)
{
    BlockDriverState *bs = open_null("doomed", false);

    (void)state;
    graph_wrlock();
    bdrv_schedule_unref(bs);
    /* Not even the main loop deletes it while the lock is held. */
    tu_drain_main();
    assert_non_null(bdrv_find_node("doomed"));
    graph_wrunlock();
    /* Gone by the time the unlock returned. */
    assert_null(bdrv_find_node("doomed"));
}

static void test_replace_node(void **state)
{
    BlockDriverState *from = open_null("from", true);
    BlockDriverState *to = open_null("to", true);
    TestUser a = { .name = "A" }, b = { .name = "B" };
    BdrvChild *ca = attach_user(from, &a, BLK_PERM_WRITE, BLK_PERM_ALL, &error_abort);
    BdrvChild *cb = attach_user(from, &b, BLK_PERM_CONSISTENT_READ, BLK_PERM_ALL,
                                &error_abort);

    (void)state;
    assert_int_equal(bdrv_replace_node(from, to, &error_abort), 0);
    assert_ptr_equal(child_node(ca), to);
    assert_ptr_equal(child_node(cb), to);
    assert_int_equal(to->perm, BLK_PERM_WRITE | BLK_PERM_CONSISTENT_READ);
    assert_int_equal(from->perm, 0);
    /* The edges' references moved too: dropping ours frees 'from'. */
    assert_int_equal(from->refcnt, 1);
    bdrv_unref(from);
    assert_null(bdrv_find_node("from"));
    bdrv_root_unref_child(ca);
    bdrv_root_unref_child(cb);
    bdrv_unref(to);
    assert_int_equal(bdrv_node_count(), 0);
}

/*
 * A parent moved by bdrv_replace_node() stays quiesced from the drain of
 * the old node into the drain of the new one: one begin, one end.  (It
 * was resumed and quiesced again under the write lock, which let it send
 * requests that reached the new node inside its drained section.)
 */
static void test_replace_node_keeps_parents_quiesced(void **state)
{
    BlockDriverState *from = open_null("from", true);
    BlockDriverState *to = open_null("to", true);
    TestUser a = { .name = "A" };
    BdrvChild *ca = attach_user(from, &a, BLK_PERM_WRITE, BLK_PERM_ALL, &error_abort);

    (void)state;
    a.begins = a.ends = 0;
    assert_int_equal(bdrv_replace_node(from, to, &error_abort), 0);
    assert_int_equal(a.drained, 0);
    assert_int_equal(a.begins, 1);
    assert_int_equal(a.ends, 1);
    bdrv_root_unref_child(ca);
    bdrv_unref(from);
    bdrv_unref(to);
    assert_int_equal(bdrv_node_count(), 0);
}

static void test_replace_node_conflict_changes_nothing(void **state)
{
    BlockDriverState *from = open_null("from", true);
    BlockDriverState *to = open_null("to", false);   /* read-only */
    TestUser a = { .name = "A" };
    BdrvChild *ca = attach_user(from, &a, BLK_PERM_WRITE, BLK_PERM_ALL, &error_abort);
    Error *err = NULL;

    (void)state;
    assert_int_equal(bdrv_replace_node(from, to, &err), -1);
    assert_non_null(err);
    error_clear(&err);
    assert_ptr_equal(child_node(ca), from);
    assert_int_equal(from->perm, BLK_PERM_WRITE);
    assert_int_equal(to->perm, 0);
    bdrv_root_unref_child(ca);
    bdrv_unref(from);
    bdrv_unref(to);
}

static void test_drain_quiesces_parents(void **state)
{
    BlockDriverState *top = open_null("top", true);
    BlockDriverState *bottom = open_null("bottom", true);
    TestUser u = { .name = "U" };
    BdrvChild *cu;

    (void)state;
    bdrv_attach_child(top, bottom, "file", BDRV_CHILD_FILTERED, &error_abort);
    bdrv_unref(bottom);
    cu = attach_user(top, &u, BLK_PERM_CONSISTENT_READ, BLK_PERM_ALL, &error_abort);

    /* Draining the bottom quiesces everything above it, once. */
    bdrv_drained_begin(bottom);
    bdrv_drained_begin(bottom);
    assert_int_equal(u.drained, 1);
    assert_int_equal(top->quiesce_counter, 1);
    assert_int_equal(bottom->quiesce_counter, 2);
    bdrv_drained_end(bottom);
    assert_int_equal(u.drained, 1);
    bdrv_drained_end(bottom);
    assert_int_equal(u.drained, 0);
    assert_int_equal(top->quiesce_counter, 0);

    /* A parent attached to a drained node is quiesced at once. */
    bdrv_drained_begin(top);
    TestUser late = { .name = "late" };
    BdrvChild *cl = attach_user(top, &late, BLK_PERM_CONSISTENT_READ, BLK_PERM_ALL,
                                &error_abort);
    assert_int_equal(late.drained, 1);
    bdrv_drained_end(top);
    assert_int_equal(late.drained, 0);

    bdrv_root_unref_child(cl);
    bdrv_root_unref_child(cu);
    bdrv_unref(top);
}

typedef struct InFlightJob {
    BlockDriverState *bs;
    TestUser *user;
    int64_t delay_ns;
    bool started;
    bool finished;
} InFlightJob;

static void coroutine_fn in_flight_co(void *opaque)
{
    InFlightJob *j = opaque;

    bdrv_inc_in_flight(j->bs);
    atomic_inc(&j->user->in_flight);
    atomic_store_release(&j->started, true);
    aio_wait_kick();
    co_sleep_ns(j->delay_ns);
    atomic_store_release(&j->finished, true);
    atomic_dec(&j->user->in_flight);
    bdrv_dec_in_flight(j->bs);
}

static void test_drain_waits_for_requests_in_iothread(void **state)
{
    BlockDriverState *bs = open_null("disk", true);
    TestUser u = { .name = "U" };
    BdrvChild *cu = attach_user(bs, &u, BLK_PERM_CONSISTENT_READ, BLK_PERM_ALL,
                                &error_abort);
    IOThread *iot = tu_iothread_new("io0");
    InFlightJob j = { .bs = bs, .user = &u, .delay_ns = 50 * TU_MS };

    (void)state;
    aio_co_schedule(iothread_get_aio_context(iot), coroutine_create(in_flight_co, &j));
    assert_true(TU_POLL_UNTIL(atomic_load_acquire(&j.started), 5000));
    bdrv_drained_begin(bs);
    /* Returned only once the request in the other thread completed. */
    assert_true(atomic_load_acquire(&j.finished));
    assert_int_equal(atomic_read(&bs->in_flight), 0);
    bdrv_drained_end(bs);

    /* The same through drain-all, with the user reporting its own request. */
    j.started = j.finished = false;
    aio_co_schedule(iothread_get_aio_context(iot), coroutine_create(in_flight_co, &j));
    assert_true(TU_POLL_UNTIL(atomic_load_acquire(&j.started), 5000));
    bdrv_drain_all_begin();
    assert_true(atomic_load_acquire(&j.finished));
    /* A node created inside drain-all is drained too, and ends with it. */
    BlockDriverState *late = open_null("late", false);
    assert_int_equal(late->quiesce_counter, 1);
    bdrv_drain_all_end();
    assert_int_equal(late->quiesce_counter, 0);
    assert_int_equal(bs->quiesce_counter, 0);

    iothread_destroy(iot);
    bdrv_unref(late);
    bdrv_root_unref_child(cu);
    bdrv_unref(bs);
}

static void coroutine_fn drain_from_co(void *opaque)
{
    BlockDriverState *bs = opaque;

    bdrv_drained_begin(bs);
    assert_int_equal(bs->quiesce_counter, 1);
    bdrv_drained_end(bs);
}

static void test_drain_from_coroutine_bounces(void **state)
{
    BlockDriverState *bs = open_null("disk", false);
    Coroutine *co = coroutine_create(drain_from_co, bs);

    (void)state;
    coroutine_enter(co);
    tu_drain_main();
    assert_int_equal(bs->quiesce_counter, 0);
    assert_int_equal(atomic_read(&bs->in_flight), 0);
    bdrv_unref(bs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        GRAPH_TEST(test_node_names),
        GRAPH_TEST(test_bad_option_is_named),
        GRAPH_TEST(test_children_and_references),
        GRAPH_TEST(test_permission_conflict),
        GRAPH_TEST(test_read_only_node_refuses_writers),
        GRAPH_TEST(test_permissions_propagate_to_children),
        GRAPH_TEST(test_schedule_unref_runs_after_unlock),
        GRAPH_TEST(test_replace_node),
        GRAPH_TEST(test_replace_node_keeps_parents_quiesced),
        GRAPH_TEST(test_replace_node_conflict_changes_nothing),
        GRAPH_TEST(test_drain_quiesces_parents),
        GRAPH_TEST(test_drain_waits_for_requests_in_iothread),
        GRAPH_TEST(test_drain_from_coroutine_bounces),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
