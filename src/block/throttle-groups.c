/*
 * throttle-groups.c - the throttle-group object and its leaky buckets
 * (throttle.h).
 *
 * Each bucket fills with what requests do (bytes, or operations counted
 * in units of iops-size) and leaks at its rate.  A request waits while a
 * bucket holds more than it may: a tenth of a second's worth at the rate,
 * or with a burst rate ("-max") that rate for the burst length; a burst
 * itself is held to its rate by a second level.  These are QEMU's rules,
 * so a limit gives the same throughput in either daemon.
 */
#include <stdlib.h>
#include <string.h>

#include "blockd/atomic.h"
#include "blockd/coroutine.h"
#include "blockd/main-loop.h"
#include "blockd/options.h"
#include "blockd/thread.h"
#include "blockd/throttle.h"
#include "blockd/user-object.h"

#define THROTTLE_VALUE_MAX 1000000000000000LL
/* The longest a waiter sleeps before looking again: a drain or a qom-set
 * that wakes it between its check and its sleep is seen this late, never
 * later. */
#define THROTTLE_SLICE_NS 20000000LL
#define THROTTLE_WAIT_MAX_NS 3600000000000LL       /* an hour: no overflow */

enum { BPS_TOTAL, BPS_READ, BPS_WRITE, OPS_TOTAL, OPS_READ, OPS_WRITE, NBUCKETS };
enum { AVG, MAX, LEN };

typedef struct Bucket {
    int64_t avg, max, burst_length;     /* the limits */
    double level, burst_level;          /* what is in it */
} Bucket;

struct ThrottleGroup {
    UserObject obj;
    BdMutex lock;
    Bucket b[NBUCKETS] TSA_FIELD_GUARDED_BY(lock);
    int64_t op_size TSA_FIELD_GUARDED_BY(lock);
    int64_t last_leak_ns TSA_FIELD_GUARDED_BY(lock);
    bool busy[2] TSA_FIELD_GUARDED_BY(lock);       /* a request is at the head */
    CoQueue queue[2] TSA_FIELD_GUARDED_BY(lock);   /* those behind it */
    CoSleep sleep[2];                   /* the head's wait, cut short by a drain */
    bool limited;                       /* atomic: any limit set */
    unsigned draining;                  /* atomic: member nodes drained */
};

/* ThrottleLimits' members, in QAPI's order. */
static const struct {
    const char *name;
    int bucket, field;
} limit_names[] = {
    { "iops-total", OPS_TOTAL, AVG }, { "iops-total-max", OPS_TOTAL, MAX },
    { "iops-total-max-length", OPS_TOTAL, LEN },
    { "iops-read", OPS_READ, AVG }, { "iops-read-max", OPS_READ, MAX },
    { "iops-read-max-length", OPS_READ, LEN },
    { "iops-write", OPS_WRITE, AVG }, { "iops-write-max", OPS_WRITE, MAX },
    { "iops-write-max-length", OPS_WRITE, LEN },
    { "bps-total", BPS_TOTAL, AVG }, { "bps-total-max", BPS_TOTAL, MAX },
    { "bps-total-max-length", BPS_TOTAL, LEN },
    { "bps-read", BPS_READ, AVG }, { "bps-read-max", BPS_READ, MAX },
    { "bps-read-max-length", BPS_READ, LEN },
    { "bps-write", BPS_WRITE, AVG }, { "bps-write-max", BPS_WRITE, MAX },
    { "bps-write-max-length", BPS_WRITE, LEN },
};
#define NLIMITS (sizeof(limit_names) / sizeof(limit_names[0]))

typedef struct Limits {
    int64_t v[NBUCKETS][3];
    int64_t op_size;
} Limits;

static int64_t *limit_field(Limits *l, size_t i)
{
    return &l->v[limit_names[i].bucket][limit_names[i].field];
}

/* ---- Checking limits (QEMU's rules and words) ------------------------------------ */

static bool both_set(const Limits *l, int total, int read, int write)
{
    return l->v[total][AVG] && (l->v[read][AVG] || l->v[write][AVG]);
}

static bool bucket_valid(const int64_t *v, Error **errp)
{
    if (v[AVG] < 0 || v[MAX] < 0 || v[AVG] > THROTTLE_VALUE_MAX || v[MAX] > THROTTLE_VALUE_MAX) {
        error_setg(errp, "bps/iops/max values must be within [0, %lld]", THROTTLE_VALUE_MAX);
        return false;
    }
    if (v[LEN] <= 0) {
        error_setg(errp, "the burst length cannot be 0");
        return false;
    }
    if (v[LEN] > 1 && !v[MAX]) {
        error_setg(errp, "burst length set without burst rate");
        return false;
    }
    if (v[MAX] && v[LEN] > THROTTLE_VALUE_MAX / v[MAX]) {
        error_setg(errp, "burst length too high for this burst rate");
        return false;
    }
    if (v[MAX] && !v[AVG]) {
        error_setg(errp, "bps_max/iops_max require corresponding bps/iops values");
        return false;
    }
    if (v[MAX] && v[MAX] < v[AVG]) {
        error_setg(errp, "bps_max/iops_max cannot be lower than bps/iops");
        return false;
    }
    return true;
}

static bool limits_valid(const Limits *l, Error **errp)
{
    if (both_set(l, BPS_TOTAL, BPS_READ, BPS_WRITE) ||
        both_set(l, OPS_TOTAL, OPS_READ, OPS_WRITE)) {
        error_setg(errp, "bps/iops/max total values and read/write values cannot be used "
                   "at the same time");
        return false;
    }
    if (l->op_size && !l->v[OPS_TOTAL][AVG] && !l->v[OPS_READ][AVG] && !l->v[OPS_WRITE][AVG]) {
        error_setg(errp, "iops size requires an iops value to be set");
        return false;
    }
    for (int i = 0; i < NBUCKETS; i++) {
        if (!bucket_valid(l->v[i], errp)) {
            return false;
        }
    }
    return true;
}

/* Update @l with the members @obj has (the others keep their values). */
static bool limits_parse(Limits *l, json_object *obj, Error **errp)
{
    for (size_t i = 0; i < NLIMITS; i++) {
        if (!opt_get_int(obj, limit_names[i].name, limit_field(l, i), errp)) {
            return false;
        }
    }
    return opt_get_int(obj, "iops-size", &l->op_size, errp) && limits_valid(l, errp);
}

/* ---- The buckets ------------------------------------------------------------------ */

static void get_limits_locked(ThrottleGroup *tg, Limits *l) TSA_REQUIRES(tg->lock)
{
    for (int i = 0; i < NBUCKETS; i++) {
        l->v[i][AVG] = tg->b[i].avg;
        l->v[i][MAX] = tg->b[i].max;
        l->v[i][LEN] = tg->b[i].burst_length;
    }
    l->op_size = tg->op_size;
}

static void set_limits_locked(ThrottleGroup *tg, const Limits *l) TSA_REQUIRES(tg->lock)
{
    bool limited = false;

    for (int i = 0; i < NBUCKETS; i++) {
        tg->b[i] = (Bucket){ .avg = l->v[i][AVG], .max = l->v[i][MAX],
                             .burst_length = l->v[i][LEN] };
        limited |= l->v[i][AVG] != 0;
    }
    tg->op_size = l->op_size;
    atomic_set(&tg->limited, limited);
}

static double drained(double level, double amount)
{
    return level > amount ? level - amount : 0;
}

static void leak_locked(ThrottleGroup *tg) TSA_REQUIRES(tg->lock)
{
    int64_t now = clock_now_ns();
    double secs = (double)(now - tg->last_leak_ns) / 1e9;

    tg->last_leak_ns = now;
    for (int i = 0; i < NBUCKETS; i++) {
        Bucket *b = &tg->b[i];

        b->level = drained(b->level, (double)b->avg * secs);
        b->burst_level = drained(b->burst_level, (double)b->max * secs);
    }
}

static int64_t wait_ns(double extra, double rate)
{
    double ns = extra / rate * 1e9;

    return ns > (double)THROTTLE_WAIT_MAX_NS ? THROTTLE_WAIT_MAX_NS : (int64_t)ns;
}

/* How long a request must wait for @b, in ns. */
static int64_t bucket_wait(const Bucket *b)
{
    double size, burst_size, extra;

    if (!b->avg) {
        return 0;
    }
    if (!b->max) {
        /* Short bursts still go, or every other request would wait. */
        size = (double)b->avg / 10;
        burst_size = 0;
    } else {
        size = (double)b->max * (double)b->burst_length;
        burst_size = (double)b->max / 10;
    }
    extra = b->level - size;
    if (extra > 0) {
        return wait_ns(extra, (double)b->avg);
    }
    if (burst_size > 0 && b->burst_level > burst_size) {
        return wait_ns(b->burst_level - burst_size, (double)b->max);
    }
    return 0;
}

static int64_t wait_locked(ThrottleGroup *tg, bool is_write) TSA_REQUIRES(tg->lock)
{
    const int dirs[2][2] = { { BPS_READ, OPS_READ }, { BPS_WRITE, OPS_WRITE } };
    int64_t wait = 0;

    leak_locked(tg);
    for (int i = 0; i < 2; i++) {
        int64_t w = bucket_wait(&tg->b[dirs[is_write][i]]);
        int64_t t = bucket_wait(&tg->b[i == 0 ? BPS_TOTAL : OPS_TOTAL]);

        wait = w > wait ? w : wait;
        wait = t > wait ? t : wait;
    }
    return wait;
}

static void account_locked(ThrottleGroup *tg, bool is_write, uint64_t bytes)
    TSA_REQUIRES(tg->lock)
{
    double units = 1;
    int bps = is_write ? BPS_WRITE : BPS_READ, ops = is_write ? OPS_WRITE : OPS_READ;

    if (tg->op_size && bytes > (uint64_t)tg->op_size) {
        units = (double)bytes / (double)tg->op_size;
    }
    tg->b[BPS_TOTAL].level += (double)bytes;
    tg->b[bps].level += (double)bytes;
    tg->b[OPS_TOTAL].level += units;
    tg->b[ops].level += units;
    for (int i = 0; i < NBUCKETS; i++) {
        double add = i < OPS_TOTAL ? (double)bytes : units;

        if (tg->b[i].max && (i == BPS_TOTAL || i == OPS_TOTAL || i == bps || i == ops)) {
            tg->b[i].burst_level += add;
        }
    }
}

void coroutine_fn throttle_group_co_wait(ThrottleGroup *tg, bool is_write, uint64_t bytes)
{
    int d = is_write;

    if (!atomic_read(&tg->limited)) {
        return;
    }
    bd_mutex_lock(&tg->lock);
    while (tg->busy[d]) {
        co_queue_wait_bdmutex(&tg->queue[d], &tg->lock);
    }
    tg->busy[d] = true;
    for (;;) {
        int64_t wait = atomic_read(&tg->draining) ? 0 : wait_locked(tg, is_write);

        if (wait <= 0) {
            break;
        }
        bd_mutex_unlock(&tg->lock);
        co_sleep_ns_wakeable(&tg->sleep[d], wait < THROTTLE_SLICE_NS ? wait : THROTTLE_SLICE_NS);
        bd_mutex_lock(&tg->lock);
    }
    account_locked(tg, is_write, bytes);
    tg->busy[d] = false;
    co_queue_next_bdmutex(&tg->queue[d], &tg->lock);
    bd_mutex_unlock(&tg->lock);
}

void throttle_group_drain_begin(ThrottleGroup *tg)
{
    GLOBAL_STATE_CODE();
    atomic_fetch_add(&tg->draining, 1);
    co_sleep_wake(&tg->sleep[0]);
    co_sleep_wake(&tg->sleep[1]);
}

void throttle_group_drain_end(ThrottleGroup *tg)
{
    GLOBAL_STATE_CODE();
    atomic_fetch_sub(&tg->draining, 1);
}

/* ---- The object ------------------------------------------------------------------- */

/* "limits", and each of its members flat as "x-NAME" (QEMU's older,
 * unstable spelling, still accepted there). */
static const char *const tg_prop_names[] = {
    "limits",
    "x-iops-total", "x-iops-total-max", "x-iops-total-max-length",
    "x-iops-read", "x-iops-read-max", "x-iops-read-max-length",
    "x-iops-write", "x-iops-write-max", "x-iops-write-max-length",
    "x-bps-total", "x-bps-total-max", "x-bps-total-max-length",
    "x-bps-read", "x-bps-read-max", "x-bps-read-max-length",
    "x-bps-write", "x-bps-write-max", "x-bps-write-max-length",
    "x-iops-size", NULL,
};
static const char *const tg_prop_types[] = {
    "ThrottleLimits", "int", "int", "int", "int", "int", "int", "int", "int", "int", "int",
    "int", "int", "int", "int", "int", "int", "int", "int", "int", NULL,
};

/* The flat x- members of @args as a limits object (a new reference). */
static json_object *flat_limits(json_object *args)
{
    json_object *out = json_object_new_object();

    json_object_object_foreach(args, key, val) {
        if (strncmp(key, "x-", 2) == 0) {
            json_object_object_add(out, key + 2, json_object_get(val));
        }
    }
    return out;
}

static void limits_init(Limits *l)
{
    memset(l, 0, sizeof(*l));
    for (int i = 0; i < NBUCKETS; i++) {
        l->v[i][LEN] = 1;
    }
}

static bool tg_init(UserObject *obj, json_object *args, Error **errp)
{
    ThrottleGroup *tg = (ThrottleGroup *)obj;
    json_object *limits;
    Limits l;

    limits_init(&l);
    if (json_object_object_get_ex(args, "limits", &limits) && !limits_parse(&l, limits, errp)) {
        return false;
    }
    limits = flat_limits(args);
    if (!limits_parse(&l, limits, errp)) {
        json_object_put(limits);
        return false;
    }
    json_object_put(limits);
    bd_mutex_init(&tg->lock);
    bd_mutex_lock(&tg->lock);
    set_limits_locked(tg, &l);
    tg->last_leak_ns = clock_now_ns();
    for (int d = 0; d < 2; d++) {
        co_queue_init(&tg->queue[d]);
    }
    bd_mutex_unlock(&tg->lock);
    return true;
}

static void tg_finalize(UserObject *obj)
{
    bd_mutex_destroy(&((ThrottleGroup *)obj)->lock);
}

/* qom-get of "limits" (every member) or of one x- member. */
static json_object *tg_get(UserObject *obj, const char *prop, Error **errp)
{
    ThrottleGroup *tg = (ThrottleGroup *)obj;
    json_object *out = json_object_new_object();
    Limits l;

    (void)errp;
    bd_mutex_lock(&tg->lock);
    get_limits_locked(tg, &l);
    bd_mutex_unlock(&tg->lock);
    if (strncmp(prop, "x-", 2) == 0) {
        json_object_put(out);
        for (size_t i = 0; i < NLIMITS; i++) {
            if (strcmp(prop + 2, limit_names[i].name) == 0) {
                return json_object_new_int64(*limit_field(&l, i));
            }
        }
        return json_object_new_int64(l.op_size);        /* x-iops-size */
    }
    for (size_t i = 0; i < NLIMITS; i++) {
        json_object_object_add(out, limit_names[i].name, json_object_new_int64(*limit_field(&l, i)));
    }
    json_object_object_add(out, "iops-size", json_object_new_int64(l.op_size));
    return out;
}

/* qom-set of "limits": the members given change, the others stay.  The
 * x- members are set at object-add only, as in QEMU. */
static bool tg_set(UserObject *obj, const char *prop, json_object *value, Error **errp)
{
    ThrottleGroup *tg = (ThrottleGroup *)obj;
    Limits l;

    if (strncmp(prop, "x-", 2) == 0) {
        error_setg(errp, "Property cannot be set after initialization");
        return false;
    }
    if (!json_object_is_type(value, json_type_object)) {
        error_setg(errp, "Invalid parameter type for 'limits', expected: object");
        return false;
    }
    bd_mutex_lock(&tg->lock);
    get_limits_locked(tg, &l);
    bd_mutex_unlock(&tg->lock);
    if (!limits_parse(&l, value, errp)) {
        return false;
    }
    bd_mutex_lock(&tg->lock);
    set_limits_locked(tg, &l);
    bd_mutex_unlock(&tg->lock);
    /* A waiter recomputes its wait under the new limits. */
    co_sleep_wake(&tg->sleep[0]);
    co_sleep_wake(&tg->sleep[1]);
    return true;
}

static const UserObjectClass throttle_group_class = {
    .type = "throttle-group",
    .parent = "object",
    .instance_size = sizeof(ThrottleGroup),
    .prop_names = tg_prop_names,
    .prop_types = tg_prop_types,
    .init = tg_init,
    .finalize = tg_finalize,
    .get = tg_get,
    .set = tg_set,
};

void throttle_groups_init(void)
{
    user_object_register(&throttle_group_class);
}

ThrottleGroup *throttle_group_get(const char *id, Error **errp)
{
    UserObject *obj = user_object_find(id, "throttle-group");

    GLOBAL_STATE_CODE();
    if (!obj) {
        error_setg(errp, "Throttle group '%s' does not exist", id);
        return NULL;
    }
    user_object_ref(obj);
    return (ThrottleGroup *)obj;
}

void throttle_group_put(ThrottleGroup *tg)
{
    user_object_unref(&tg->obj);
}
