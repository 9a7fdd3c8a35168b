/*
 * qmp-cmds-qom.c - qom-list, qom-get, qom-set, qom-list-types and
 * qom-list-properties over blockd's objects, in QEMU's object model's
 * shapes.
 *
 * blockd has no general object system; this file presents what exists as
 * QEMU's tree does: "/" holds the containers "objects" (iothreads, as
 * child<iothread>) and "chardevs" (child<chardev-socket>, ...).  Every
 * object has the read-only property "type"; an iothread has its six
 * integer properties, which qom-set changes on the running thread.  The
 * type table below and the user-object classes (user-object.h: throttle
 * groups, secrets) are the whole hierarchy blockd has, so qom-list-types
 * cannot name a type that object-add would refuse.  User objects live
 * under "/objects" too, with their classes' properties.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/chardev.h"
#include "blockd/iothread.h"
#include "blockd/main-loop.h"
#include "blockd/monitor.h"
#include "blockd/user-object.h"
#include "monitor-internal.h"

typedef struct QomType {
    const char *name;
    const char *parent;         /* NULL for the root, "object" */
    bool abstract;
    bool interface;
} QomType;

static const QomType qom_types[] = {
    { "object", NULL, true, false },
    { "user-creatable", NULL, true, true },
    { "container", "object", false, false },
    { "event-loop-base", "object", true, false },
    { "iothread", "event-loop-base", false, false },
    { "secret_common", "object", true, false },
    { "chardev", "object", true, false },
    { "chardev-socket", "chardev", false, false },
    { "chardev-stdio", "chardev", false, false },
    { "chardev-null", "chardev", false, false },
    { "chardev-file", "chardev", false, false },
    { "chardev-ringbuf", "chardev", false, false },
    { "chardev-memory", "chardev-ringbuf", false, false },
    { NULL, NULL, false, false },
};

/* The iothread's integer properties, in QEMU's order. */
static const char *const iothread_props[] = {
    "thread-pool-min", "aio-max-batch", "thread-pool-max",
    "poll-max-ns", "poll-grow", "poll-shrink", NULL,
};

/* A type of the table or a user-object class, into *@out. */
static bool find_type(const char *name, QomType *out)
{
    const UserObjectClass *cls = user_object_class(name);

    for (const QomType *t = qom_types; t->name; t++) {
        if (strcmp(t->name, name) == 0) {
            *out = *t;
            return true;
        }
    }
    if (cls) {
        *out = (QomType){ cls->type, cls->parent, false, false };
    }
    return cls != NULL;
}

static bool type_implements(const QomType *t, const char *ancestor)
{
    QomType cur = *t;

    if (strcmp(ancestor, "user-creatable") == 0) {
        /* What object-add takes. */
        return strcmp(t->name, "iothread") == 0 || user_object_class(t->name);
    }
    for (;;) {
        if (strcmp(cur.name, ancestor) == 0) {
            return true;
        }
        if (!cur.parent || !find_type(cur.parent, &cur)) {
            return false;
        }
    }
}

/* ---- The tree ------------------------------------------------------------------- */

typedef enum NodeKind {
    NODE_ROOT, NODE_OBJECTS, NODE_CHARDEVS, NODE_IOTHREAD, NODE_CHARDEV, NODE_USER_OBJECT,
} NodeKind;

typedef struct QomNode {
    NodeKind kind;
    IOThread *iot;
    Chardev *chr;
    UserObject *obj;
    char path[256];
} QomNode;

static const char *node_type(const QomNode *n)
{
    static char chr_type[64];

    switch (n->kind) {
    case NODE_IOTHREAD:
        return "iothread";
    case NODE_USER_OBJECT:
        return n->obj->cls->type;
    case NODE_CHARDEV:
        snprintf(chr_type, sizeof(chr_type), "chardev-%s", chardev_backend(n->chr));
        return chr_type;
    default:
        return "container";
    }
}

typedef struct Walk {
    void (*fn)(const QomNode *n, void *opaque);
    void *opaque;
} Walk;

static void walk_iothread(IOThread *iot, void *opaque)
{
    const Walk *w = opaque;
    QomNode n = { .kind = NODE_IOTHREAD, .iot = iot };

    snprintf(n.path, sizeof(n.path), "/objects/%s", iothread_get_id(iot));
    w->fn(&n, w->opaque);
}

static void walk_user_object(UserObject *obj, void *opaque)
{
    const Walk *w = opaque;
    QomNode n = { .kind = NODE_USER_OBJECT, .obj = obj };

    snprintf(n.path, sizeof(n.path), "/objects/%s", obj->id);
    w->fn(&n, w->opaque);
}

static void walk_chardev(Chardev *chr, void *opaque)
{
    const Walk *w = opaque;
    QomNode n = { .kind = NODE_CHARDEV, .chr = chr };

    snprintf(n.path, sizeof(n.path), "/chardevs/%s", chardev_id(chr));
    w->fn(&n, w->opaque);
}

static void walk_all(void (*fn)(const QomNode *n, void *opaque), void *opaque)
{
    Walk w = { fn, opaque };
    QomNode n = { .kind = NODE_ROOT, .path = "/" };

    fn(&n, opaque);
    n = (QomNode){ .kind = NODE_OBJECTS, .path = "/objects" };
    fn(&n, opaque);
    n = (QomNode){ .kind = NODE_CHARDEVS, .path = "/chardevs" };
    fn(&n, opaque);
    iothread_foreach(walk_iothread, &w);
    user_object_foreach(walk_user_object, &w);
    chardev_foreach(walk_chardev, &w);
}

typedef struct Lookup {
    const char *path;
    QomNode found;
    int matches;
} Lookup;

/* A full path ("/objects/io0") or, as QEMU allows, a partial one that
 * ends a single full path ("io0"). */
static void match_node(const QomNode *n, void *opaque)
{
    Lookup *l = opaque;
    size_t plen = strlen(l->path), nlen = strlen(n->path);
    bool hit;

    if (l->path[0] == '/') {
        hit = strcmp(n->path, l->path) == 0 ||
              (plen > 1 && l->path[plen - 1] == '/' && nlen == plen - 1 &&
               strncmp(n->path, l->path, nlen) == 0);
    } else {
        hit = nlen > plen && n->path[nlen - plen - 1] == '/' &&
              strcmp(n->path + nlen - plen, l->path) == 0;
    }
    if (hit) {
        l->found = *n;
        l->matches++;
    }
}

static bool resolve(const char *path, QomNode *out, Error **errp)
{
    Lookup l = { .path = path };

    walk_all(match_node, &l);
    if (l.matches == 0) {
        error_set(errp, ERROR_CLASS_DEVICE_NOT_FOUND, "Device '%s' not found", path);
        return false;
    }
    if (l.matches > 1) {
        error_setg(errp, "Path '%s' is ambiguous", path);
        return false;
    }
    *out = l.found;
    return true;
}

/* ---- Properties ----------------------------------------------------------------- */

static json_object *prop_info(const char *name, const char *type)
{
    json_object *p = json_object_new_object();

    json_object_object_add(p, "name", json_object_new_string(name));
    json_object_object_add(p, "type", json_object_new_string(type));
    return p;
}

static void add_type_props(json_object *list, const char *type)
{
    const UserObjectClass *cls = user_object_class(type);

    json_object_array_add(list, prop_info("type", "string"));
    if (strcmp(type, "iothread") == 0) {
        for (int i = 0; iothread_props[i]; i++) {
            json_object_array_add(list, prop_info(iothread_props[i], "int"));
        }
    }
    for (int i = 0; cls && cls->prop_names[i]; i++) {
        json_object_array_add(list, prop_info(cls->prop_names[i], cls->prop_types[i]));
    }
}

/* Is @prop one of @obj's class properties? */
static bool has_prop(UserObject *obj, const char *prop)
{
    for (int i = 0; obj->cls->prop_names[i]; i++) {
        if (strcmp(obj->cls->prop_names[i], prop) == 0) {
            return true;
        }
    }
    return false;
}

typedef struct Children {
    const QomNode *parent;
    json_object *list;
} Children;

static void add_child(const QomNode *n, void *opaque)
{
    Children *c = opaque;
    const char *slash = strrchr(n->path, '/');
    char type[80];

    if (n->kind == NODE_ROOT || slash == n->path + strlen(n->path) - 1) {
        return;
    }
    /* A direct child: its parent's path is everything before the slash. */
    if ((size_t)(slash - n->path) != (c->parent->kind == NODE_ROOT ? 0 : strlen(c->parent->path)) ||
        strncmp(n->path, c->parent->path, slash - n->path) != 0) {
        return;
    }
    snprintf(type, sizeof(type), "child<%s>", node_type(n));
    json_object_array_add(c->list, prop_info(slash + 1, type));
}

static json_object *qmp_qom_list(json_object *args, Error **errp)
{
    QomNode n;
    Children c;

    if (!resolve(json_object_get_string(json_object_object_get(args, "path")), &n, errp)) {
        return NULL;
    }
    c = (Children){ .parent = &n, .list = json_object_new_array() };
    add_type_props(c.list, node_type(&n));
    if (n.kind == NODE_ROOT || n.kind == NODE_OBJECTS || n.kind == NODE_CHARDEVS) {
        walk_all(add_child, &c);
    }
    return c.list;
}

static int64_t *iothread_param(IOThreadParams *p, const char *name)
{
    int64_t *fields[] = { &p->thread_pool_min, &p->aio_max_batch, &p->thread_pool_max,
                          &p->poll_max_ns, &p->poll_grow, &p->poll_shrink };

    for (int i = 0; iothread_props[i]; i++) {
        if (strcmp(iothread_props[i], name) == 0) {
            return fields[i];
        }
    }
    return NULL;
}

static json_object *qmp_qom_get(json_object *args, Error **errp)
{
    const char *prop = json_object_get_string(json_object_object_get(args, "property"));
    IOThreadParams p;
    int64_t *v;
    QomNode n;

    if (!resolve(json_object_get_string(json_object_object_get(args, "path")), &n, errp)) {
        return NULL;
    }
    if (strcmp(prop, "type") == 0) {
        return json_object_new_string(node_type(&n));
    }
    if (n.kind == NODE_IOTHREAD) {
        iothread_get_params(n.iot, &p);
        if ((v = iothread_param(&p, prop))) {
            return json_object_new_int64(*v);
        }
    }
    if (n.kind == NODE_USER_OBJECT && has_prop(n.obj, prop)) {
        return n.obj->cls->get(n.obj, prop, errp);
    }
    error_setg(errp, "Property '%s.%s' not found", node_type(&n), prop);
    return NULL;
}

static json_object *qmp_qom_set(json_object *args, Error **errp)
{
    const char *prop = json_object_get_string(json_object_object_get(args, "property"));
    json_object *value = json_object_object_get(args, "value");
    IOThreadParams p;
    int64_t *v = NULL;
    QomNode n;

    if (!resolve(json_object_get_string(json_object_object_get(args, "path")), &n, errp)) {
        return NULL;
    }
    if (n.kind == NODE_IOTHREAD) {
        iothread_get_params(n.iot, &p);
        v = iothread_param(&p, prop);
    }
    if (n.kind == NODE_USER_OBJECT && has_prop(n.obj, prop) && n.obj->cls->set) {
        return n.obj->cls->set(n.obj, prop, value, errp) ? json_object_new_object() : NULL;
    }
    if (!v) {
        bool known = strcmp(prop, "type") == 0 ||
                     (n.kind == NODE_USER_OBJECT && has_prop(n.obj, prop));

        error_setg(errp, known ? "Property '%s.%s' is not writable"
                               : "Property '%s.%s' not found",
                   node_type(&n), prop);
        return NULL;
    }
    /* An integer beyond int64 is no int64, as QEMU's visitor sees it. */
    if (!json_object_is_type(value, json_type_int) ||
        json_object_get_uint64(value) > (uint64_t)INT64_MAX) {
        error_setg(errp, "Invalid parameter type for '%s', expected: integer", prop);
        return NULL;
    }
    *v = json_object_get_int64(value);
    if (!iothread_check_params(&p, errp)) {
        return NULL;
    }
    iothread_set_params(n.iot, &p);
    return json_object_new_object();
}

static json_object *type_info(const QomType *t)
{
    json_object *info = json_object_new_object();

    json_object_object_add(info, "name", json_object_new_string(t->name));
    if (t->parent) {
        json_object_object_add(info, "parent", json_object_new_string(t->parent));
    }
    if (t->abstract) {
        json_object_object_add(info, "abstract", json_object_new_boolean(true));
    }
    return info;
}

static json_object *qmp_qom_list_types(json_object *args, Error **errp)
{
    json_object *list = json_object_new_array(), *v;
    const char *implements = NULL;
    bool abstract = false;

    (void)errp;
    if (json_object_object_get_ex(args, "implements", &v)) {
        implements = json_object_get_string(v);
    }
    if (json_object_object_get_ex(args, "abstract", &v)) {
        abstract = json_object_get_boolean(v);
    }
    for (const QomType *t = qom_types; t->name; t++) {
        if (t->interface || (t->abstract && !abstract)) {
            continue;
        }
        if (implements && !type_implements(t, implements)) {
            continue;
        }
        json_object_array_add(list, type_info(t));
    }
    for (const UserObjectClass *c = user_object_class_next(NULL); c;
         c = user_object_class_next(c)) {
        QomType t = { c->type, c->parent, false, false };

        if (!implements || type_implements(&t, implements)) {
            json_object_array_add(list, type_info(&t));
        }
    }
    return list;
}

static json_object *qmp_qom_list_properties(json_object *args, Error **errp)
{
    const char *name = json_object_get_string(json_object_object_get(args, "typename"));
    json_object *list;
    QomType type, *t = &type;

    if (!find_type(name, &type)) {
        error_set(errp, ERROR_CLASS_DEVICE_NOT_FOUND, "Class '%s' not found", name);
        return NULL;
    }
    if (t->interface) {
        error_setg(errp, "Parameter 'typename' expects a QOM type");
        return NULL;
    }
    list = json_object_new_array();
    add_type_props(list, name);
    return list;
}

/* ---- Schemas -------------------------------------------------------------------- */

static const SchemaField path_fields[] = {
    { .name = "path", .type = SCHEMA_STR },
    { 0 },
};
static const SchemaField get_fields[] = {
    { .name = "path", .type = SCHEMA_STR },
    { .name = "property", .type = SCHEMA_STR },
    { 0 },
};
static const SchemaField set_fields[] = {
    { .name = "path", .type = SCHEMA_STR },
    { .name = "property", .type = SCHEMA_STR },
    { .name = "value", .type = SCHEMA_ANY },
    { 0 },
};
static const SchemaField list_types_fields[] = {
    { .name = "implements", .type = SCHEMA_STR, .optional = true },
    { .name = "abstract", .type = SCHEMA_BOOL, .optional = true },
    { 0 },
};
static const SchemaField list_props_fields[] = {
    { .name = "typename", .type = SCHEMA_STR },
    { 0 },
};
static const SchemaObject list_args = { .name = "qom-list-arg", .fields = path_fields };
static const SchemaObject get_args = { .name = "qom-get-arg", .fields = get_fields };
static const SchemaObject set_args = { .name = "qom-set-arg", .fields = set_fields };
static const SchemaObject list_types_args = { .name = "qom-list-types-arg",
                                              .fields = list_types_fields };
static const SchemaObject list_props_args = { .name = "qom-list-properties-arg",
                                              .fields = list_props_fields };

const QmpCommand qmp_qom_commands[] = {
    { .name = "qom-list", .fn = qmp_qom_list, .args = &list_args, .ret = &qmp_ret_any },
    { .name = "qom-get", .fn = qmp_qom_get, .args = &get_args, .ret = &qmp_ret_any },
    { .name = "qom-set", .fn = qmp_qom_set, .args = &set_args },
    { .name = "qom-list-types", .fn = qmp_qom_list_types, .args = &list_types_args,
      .ret = &qmp_ret_any },
    { .name = "qom-list-properties", .fn = qmp_qom_list_properties,
      .args = &list_props_args, .ret = &qmp_ret_any },
    { 0 },
};
