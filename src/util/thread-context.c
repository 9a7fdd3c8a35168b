/*
 * thread-context.c - the thread-context object: a thread kept for its CPU
 * affinity (cpu-affinity, or node-affinity: the CPUs of NUMA nodes, read
 * from sysfs), whose thread-id others can use.  qemu-storage-daemon has
 * it for its memory backends; blockd offers the object with the same
 * properties (nothing in blockd creates threads through it yet).
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/options.h"
#include "blockd/thread.h"
#include "blockd/user-object.h"

typedef struct ThreadContext {
    UserObject obj;
    BdThread thread;
    BdEvent started, stop;
    int tid;
} ThreadContext;

static void *tc_main(void *opaque)
{
    ThreadContext *tc = opaque;

    tc->tid = bd_thread_get_tid();
    bd_event_set(&tc->started);
    bd_event_wait(&tc->stop);
    return NULL;
}

/* Add the CPUs of NUMA node @node to @set (its sysfs cpulist; a node
 * that does not exist has none). */
static void node_cpus(unsigned node, cpu_set_t *set)
{
    char path[64], list[4096];
    FILE *f;

    snprintf(path, sizeof(path), "/sys/devices/system/node/node%u/cpulist", node);
    f = fopen(path, "r");
    if (!f || !fgets(list, sizeof(list), f)) {
        if (f) {
            fclose(f);
        }
        return;
    }
    fclose(f);
    for (char *p = list; *p && *p != '\n';) {
        unsigned a = (unsigned)strtoul(p, &p, 10), b = a;

        if (*p == '-') {
            b = (unsigned)strtoul(p + 1, &p, 10);
        }
        for (unsigned c = a; c <= b && c < CPU_SETSIZE; c++) {
            CPU_SET(c, set);
        }
        p += *p == ',';
    }
}

/* cpu-affinity / node-affinity: a list of numbers into a CPU set. */
static bool affinity_set(json_object *list, bool nodes, cpu_set_t *set, Error **errp)
{
    CPU_ZERO(set);
    if (!json_object_is_type(list, json_type_array)) {
        error_setg(errp, "Invalid parameter type, expected: array");
        return false;
    }
    for (size_t i = 0; i < json_object_array_length(list); i++) {
        json_object *v = json_object_array_get_idx(list, i);
        int64_t n = json_object_get_int64(v);

        if (!json_object_is_type(v, json_type_int) || n < 0 || n > UINT16_MAX) {
            error_setg(errp, "Parameter '%s' expects uint16_t",
                       nodes ? "node-affinity" : "cpu-affinity");
            return false;
        }
        if (nodes) {
            node_cpus((unsigned)n, set);
        } else if (n >= CPU_SETSIZE) {
            error_setg_errno(errp, EINVAL, "Setting CPU affinity failed");
            return false;
        } else {
            CPU_SET((int)n, set);
        }
    }
    if (nodes && CPU_COUNT(set) == 0) {
        error_setg(errp, "The nodes select no CPUs");
        return false;
    }
    return true;
}

static bool apply(ThreadContext *tc, json_object *list, bool nodes, Error **errp)
{
    cpu_set_t set;
    int err;

    if (!affinity_set(list, nodes, &set, errp)) {
        return false;
    }
    err = pthread_setaffinity_np(tc->thread.thread, sizeof(set), &set);
    if (err) {
        error_setg_errno(errp, err, "Setting CPU affinity failed");
        return false;
    }
    return true;
}

static void tc_finalize(UserObject *obj)
{
    ThreadContext *tc = (ThreadContext *)obj;

    bd_event_set(&tc->stop);
    bd_thread_join(&tc->thread);
    bd_event_destroy(&tc->started);
    bd_event_destroy(&tc->stop);
}

static bool tc_init(UserObject *obj, json_object *args, Error **errp)
{
    ThreadContext *tc = (ThreadContext *)obj;
    json_object *cpus = NULL, *nodes = NULL;
    char name[32];

    bd_event_init(&tc->started);
    bd_event_init(&tc->stop);
    snprintf(name, sizeof(name), "TC %s", obj->id);
    bd_thread_create(&tc->thread, name, tc_main, tc);
    bd_event_wait(&tc->started);
    json_object_object_get_ex(args, "cpu-affinity", &cpus);
    json_object_object_get_ex(args, "node-affinity", &nodes);
    if (cpus && nodes) {
        error_setg(errp, "Mixing CPU and node affinity not supported");
        tc_finalize(obj);
        return false;
    }
    if ((cpus && !apply(tc, cpus, false, errp)) || (nodes && !apply(tc, nodes, true, errp))) {
        tc_finalize(obj);
        return false;
    }
    return true;
}

static json_object *tc_get(UserObject *obj, const char *prop, Error **errp)
{
    ThreadContext *tc = (ThreadContext *)obj;
    json_object *list;
    cpu_set_t set;

    if (strcmp(prop, "thread-id") == 0) {
        return json_object_new_int(tc->tid);
    }
    if (strcmp(prop, "cpu-affinity") != 0 ||
        pthread_getaffinity_np(tc->thread.thread, sizeof(set), &set) != 0) {
        error_setg(errp, "Property '%s.%s' is not readable", obj->cls->type, prop);
        return NULL;
    }
    list = json_object_new_array();
    for (int c = 0; c < CPU_SETSIZE; c++) {
        if (CPU_ISSET(c, &set)) {
            json_object_array_add(list, json_object_new_int(c));
        }
    }
    return list;
}

static bool tc_set(UserObject *obj, const char *prop, json_object *value, Error **errp)
{
    if (strcmp(prop, "thread-id") == 0) {
        error_setg(errp, "Property '%s.%s' is not writable", obj->cls->type, prop);
        return false;
    }
    return apply((ThreadContext *)obj, value, strcmp(prop, "node-affinity") == 0, errp);
}

static const char *const tc_props[] = { "thread-id", "cpu-affinity", "node-affinity", NULL };
static const char *const tc_types[] = { "int", "int", "int", NULL };

static const UserObjectClass thread_context_class = {
    .type = "thread-context",
    .parent = "object",
    .instance_size = sizeof(ThreadContext),
    .prop_names = tc_props,
    .prop_types = tc_types,
    .init = tc_init,
    .finalize = tc_finalize,
    .get = tc_get,
    .set = tc_set,
};

void thread_context_init(void)
{
    user_object_register(&thread_context_class);
}
