/*
 * create.c - bdrv_co_create(): dispatch to the driver's own creation
 * callback, and the helpers creation code shares.
 *
 * Half: global state, in a coroutine of the main thread (block-create.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/block-backend-global-state.h"
#include "blockd/block-create.h"
#include "blockd/block-global-state.h"
#include "blockd/coroutine.h"
#include "blockd/main-loop.h"
#include "blockd/options.h"
#include "block-internal.h"

/* ---- Shared helpers ---------------------------------------------------------------- */

typedef struct MainLoopCall {
    void (*fn)(void *opaque);
    void *opaque;
    Coroutine *co;
} MainLoopCall;

static void main_loop_call_bh(void *opaque)
{
    MainLoopCall *c = opaque;

    c->fn(c->opaque);
    aio_co_wake(c->co);
}

void coroutine_fn bdrv_co_run_in_main_loop(void (*fn)(void *opaque), void *opaque)
{
    MainLoopCall c = { fn, opaque, coroutine_self() };

    GLOBAL_STATE_CODE();
    aio_bh_schedule_oneshot(main_aio_context(), main_loop_call_bh, &c);
    coroutine_yield();
}

bool create_check_members(json_object *options, const char *const *allowed, Error **errp)
{
    json_object_object_foreach(options, key, val) {
        bool ok = false;
        (void)val;
        for (int i = 0; allowed[i]; i++) {
            ok = ok || strcmp(key, allowed[i]) == 0;
        }
        if (!ok) {
            error_setg(errp, "Parameter '%s' is unexpected", key);
            return false;
        }
    }
    return true;
}

bool create_get_size(json_object *options, int64_t *size, Error **errp)
{
    *size = -1;
    if (!opt_get_size(options, "size", size, errp)) {
        return false;
    }
    if (*size < 0) {
        error_setg(errp, "Parameter 'size' is missing");
        return false;
    }
    return true;
}

const char *const create_prealloc_names[] = { "off", "metadata", "falloc", "full", NULL };

static void target_open_bh(void *opaque)
{
    CreateTarget *t = opaque;

    if (json_object_is_type(t->ref, json_type_string)) {
        t->bs = bdrv_find_node(json_object_get_string(t->ref));
        if (!t->bs) {
            error_setg(&t->err, "Cannot find device='%s' nor node-name='%s'",
                       json_object_get_string(t->ref), json_object_get_string(t->ref));
            return;
        }
        bdrv_ref(t->bs);
    } else {
        t->bs = bdrv_open_options(t->ref, &t->err);
        if (!t->bs) {
            return;
        }
    }
    t->blk = blk_new(BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE | BLK_PERM_RESIZE,
                     BLK_PERM_ALL);
    if (blk_insert_bs(t->blk, t->bs, &t->err) < 0) {
        blk_unref(t->blk);
        t->blk = NULL;
    }
}

int coroutine_fn create_target_open(CreateTarget *t, json_object *options, Error **errp)
{
    return create_target_open_ref(t, options, "file", errp);
}

int coroutine_fn create_target_open_ref(CreateTarget *t, json_object *options, const char *key,
                                        Error **errp)
{
    if (!json_object_object_get_ex(options, key, &t->ref) || !t->ref) {
        error_setg(errp, "Parameter '%s' is missing", key);
        return -EINVAL;
    }
    if (!json_object_is_type(t->ref, json_type_string) &&
        !json_object_is_type(t->ref, json_type_object)) {
        error_setg(errp, "Invalid parameter type for '%s', expected: BlockdevRef", key);
        return -EINVAL;
    }
    bdrv_co_run_in_main_loop(target_open_bh, t);
    if (!t->blk) {
        error_propagate(errp, t->err);
        t->err = NULL;
        return -EIO;
    }
    return 0;
}

static void target_release_blk_bh(void *opaque)
{
    CreateTarget *t = opaque;

    blk_unref(t->blk);
    t->blk = NULL;
}

void coroutine_fn create_target_release_blk(CreateTarget *t)
{
    bdrv_co_run_in_main_loop(target_release_blk_bh, t);
}

static void target_close_bh(void *opaque)
{
    CreateTarget *t = opaque;

    bdrv_unref(t->format);
    t->format = NULL;
    if (t->blk) {
        blk_unref(t->blk);
        t->blk = NULL;
    }
    bdrv_unref(t->bs);
    t->bs = NULL;
}

void coroutine_fn create_target_close(CreateTarget *t)
{
    if (t->bs) {
        bdrv_co_run_in_main_loop(target_close_bh, t);
    }
}

/* ---- Dispatch ------------------------------------------------------------------------ */

int coroutine_fn bdrv_co_create(json_object *options, Error **errp)
{
    const char *driver = NULL;
    const BlockDriver *drv;

    GLOBAL_STATE_CODE();
    assert(in_coroutine());
    if (!json_object_is_type(options, json_type_object)) {
        error_setg(errp, "Invalid parameter type for 'options', expected: object");
        return -EINVAL;
    }
    if (!opt_get_str(options, "driver", &driver, errp)) {
        return -EINVAL;
    }
    if (!driver) {
        error_setg(errp, "Parameter 'driver' is missing");
        return -EINVAL;
    }
    drv = bdrv_find_driver(driver);
    if (!drv) {
        error_setg(errp, "Parameter 'driver' does not accept value '%s'", driver);
        return -EINVAL;
    }
    if (!drv->bdrv_co_create) {
        error_setg(errp, "Driver does not support blockdev-create");
        return -ENOTSUP;
    }
    return drv->bdrv_co_create(options, errp);
}

bool bdrv_can_create(const char *driver)
{
    const BlockDriver *drv = bdrv_find_driver(driver);

    GLOBAL_STATE_CODE();
    return drv && drv->bdrv_co_create;
}
