/*
 * create.c - bdrv_co_create(): dispatch to the driver's own creation
 * callback, and the helpers creation code shares.
 *
 * Half: global state, in a coroutine of the main thread (block-create.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

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
