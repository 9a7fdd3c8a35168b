/*
 * user-object.c - the registry of user-created objects (user-object.h).
 */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/iothread.h"
#include "blockd/main-loop.h"
#include "blockd/user-object.h"

#define MAX_CLASSES 16

static const UserObjectClass *classes[MAX_CLASSES];
static int nclasses;
static ListNode objects = LIST_INIT_STATIC(objects);

void user_object_register(const UserObjectClass *cls)
{
    if (user_object_class(cls->type)) {
        return;
    }
    assert(nclasses < MAX_CLASSES);
    classes[nclasses++] = cls;
}

const UserObjectClass *user_object_class(const char *type)
{
    for (int i = 0; i < nclasses; i++) {
        if (strcmp(classes[i]->type, type) == 0) {
            return classes[i];
        }
    }
    return NULL;
}

const UserObjectClass *user_object_class_next(const UserObjectClass *prev)
{
    int i = 0;

    if (prev) {
        while (i < nclasses && classes[i] != prev) {
            i++;
        }
        i++;
    }
    return i < nclasses ? classes[i] : NULL;
}

UserObject *user_object_find(const char *id, const char *type)
{
    list_for_each(n, &objects) {
        UserObject *obj = list_entry(n, UserObject, node);

        if (strcmp(obj->id, id) == 0) {
            return !type || strcmp(obj->cls->type, type) == 0 ? obj : NULL;
        }
    }
    return NULL;
}

bool user_object_id_taken(const char *id)
{
    return user_object_find(id, NULL) != NULL;
}

UserObject *user_object_create(const char *type, const char *id, json_object *args,
                               Error **errp)
{
    const UserObjectClass *cls = user_object_class(type);
    UserObject *obj;

    GLOBAL_STATE_CODE();
    assert(cls);
    if (user_object_id_taken(id) || iothread_find(id)) {
        error_setg(errp, "attempt to add duplicate property '%s' to object (type "
                   "'container')", id);
        return NULL;
    }
    obj = calloc(1, cls->instance_size);
    obj->cls = cls;
    obj->id = strdup(id);
    obj->refcnt = 1;
    if (!cls->init(obj, args, errp)) {
        free(obj->id);
        free(obj);
        return NULL;
    }
    list_add_tail(&objects, &obj->node);
    return obj;
}

void user_object_ref(UserObject *obj)
{
    GLOBAL_STATE_CODE();
    obj->refcnt++;
}

void user_object_unref(UserObject *obj)
{
    GLOBAL_STATE_CODE();
    assert(obj->refcnt > 0);
    if (--obj->refcnt == 0) {
        if (obj->cls->finalize) {
            obj->cls->finalize(obj);
        }
        free(obj->id);
        free(obj);
    }
}

bool user_object_delete(const char *id, Error **errp)
{
    UserObject *obj = user_object_find(id, NULL);

    GLOBAL_STATE_CODE();
    if (!obj) {
        error_setg(errp, "object '%s' not found", id);
        return false;
    }
    if (obj->refcnt > 1) {
        error_setg(errp, "object '%s' is in use, can not be deleted", id);
        return false;
    }
    list_del(&obj->node);
    user_object_unref(obj);
    return true;
}

void user_object_foreach(void (*fn)(UserObject *obj, void *opaque), void *opaque)
{
    list_for_each(n, &objects) {
        fn(list_entry(n, UserObject, node), opaque);
    }
}

void user_object_delete_all(void)
{
    GLOBAL_STATE_CODE();
    while (!list_empty(&objects)) {
        UserObject *obj = list_entry(objects.next, UserObject, node);

        list_del(&obj->node);
        user_object_unref(obj);
    }
}
