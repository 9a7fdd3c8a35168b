/*
 * user-object.h - the objects a user creates with --object and
 * object-add, other than iothreads: throttle groups, secrets.  A registry
 * by id (shared with the iothreads' ids), a class per qom-type that the
 * layer owning the type registers, and typed properties for qom-get and
 * qom-set.  Objects are reference counted: a node that uses one holds a
 * reference, and object-del refuses an object in use.
 *
 * Half: global state (main thread), except where noted.
 */
#ifndef BLOCKD_USER_OBJECT_H
#define BLOCKD_USER_OBJECT_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>

#include "blockd/error.h"
#include "blockd/list.h"

typedef struct UserObject UserObject;

typedef struct UserObjectClass {
    const char *type;               /* the qom-type */
    const char *parent;             /* its QOM parent type ("object", ...) */
    size_t instance_size;           /* a struct that starts with UserObject */
    /* Properties besides "type": names and QOM types, NULL-terminated. */
    const char *const *prop_names;
    const char *const *prop_types;
    /* Set the object up from object-add's arguments (checked against the
     * schema already); on failure finalize is not called. */
    bool (*init)(UserObject *obj, json_object *args, Error **errp);
    void (*finalize)(UserObject *obj);
    /* qom-get and qom-set of one of prop_names (NULL set: read-only). */
    json_object *(*get)(UserObject *obj, const char *prop, Error **errp);
    bool (*set)(UserObject *obj, const char *prop, json_object *value, Error **errp);
} UserObjectClass;

struct UserObject {
    const UserObjectClass *cls;
    char *id;
    int refcnt;                     /* the registry's, and one per user */
    ListNode node;
};

/* Register @cls (static storage), once per type. */
void user_object_register(const UserObjectClass *cls);
const UserObjectClass *user_object_class(const char *type);
/* Each registered class in registration order; NULL after the last. */
const UserObjectClass *user_object_class_next(const UserObjectClass *prev);

/* Create object @id of @type; QEMU's messages for a taken id. */
UserObject *user_object_create(const char *type, const char *id, json_object *args,
                               Error **errp);
/* object-del: "object 'ID' not found", "... is in use, can not be deleted". */
bool user_object_delete(const char *id, Error **errp);
/* The object @id (of @type if not NULL), or NULL. */
UserObject *user_object_find(const char *id, const char *type);
void user_object_ref(UserObject *obj);
void user_object_unref(UserObject *obj);
void user_object_foreach(void (*fn)(UserObject *obj, void *opaque), void *opaque);
/* Is @id an object's id?  The iothreads ask before taking one. */
bool user_object_id_taken(const char *id);
/* At exit: drop the registry's references (objects in use stay). */
void user_object_delete_all(void);

/* Register the thread-context type (thread-context.c). */
void thread_context_init(void);

#endif /* BLOCKD_USER_OBJECT_H */
