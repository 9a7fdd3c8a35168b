/*
 * main-loop.c - the main thread's contexts and the outermost loop.
 *
 * The iohandler context (monitor fds and BHs) is watched by the main
 * context through its epoll fd, but only until it fires once: the
 * outermost main_loop_wait() then polls it and re-arms the watch.  Nested
 * loops in the main thread therefore never run monitor handlers.
 */
#include <stdlib.h>

#include "aio-internal.h"
#include "blockd/aio-wait.h"
#include "blockd/atomic.h"
#include "blockd/coroutine.h"
#include "blockd/main-loop.h"

static AioContext *main_ctx;
static AioContext *iohandler_ctx;
static bool iohandler_armed;
static bool iohandler_ready;

static void iohandler_fd_ready(void *opaque);

static void iohandler_arm(void)
{
    aio_set_fd_handler(main_ctx, aio_context_epoll_fd(iohandler_ctx),
                       iohandler_fd_ready, NULL, NULL, NULL);
    iohandler_armed = true;
}

static void iohandler_fd_ready(void *opaque)
{
    (void)opaque;
    /* Disarm, so nested loops do not spin on the readable epoll fd. */
    aio_set_fd_handler(main_ctx, aio_context_epoll_fd(iohandler_ctx),
                       NULL, NULL, NULL, NULL);
    iohandler_armed = false;
    iohandler_ready = true;
}

void main_loop_init(void)
{
    assert(!main_ctx);
    main_ctx = aio_context_new("main", &error_abort);
    aio_context_set_home(main_ctx);
    iohandler_ctx = aio_context_new("iohandler", &error_abort);
    aio_context_set_home_thread(iohandler_ctx);
    /* Nobody sleeps in it directly: always write its eventfd when notified. */
    iohandler_ctx->always_notify = true;
    iohandler_arm();
    aio_wait_init();
}

void main_loop_cleanup(void)
{
    if (!main_ctx) {
        return;
    }
    if (iohandler_armed) {
        aio_set_fd_handler(main_ctx, aio_context_epoll_fd(iohandler_ctx),
                           NULL, NULL, NULL, NULL);
        iohandler_armed = false;
    }
    while (aio_poll(iohandler_ctx, false)) {
    }
    aio_wait_cleanup();
    while (aio_poll(main_ctx, false)) {
    }
    aio_context_free(iohandler_ctx);
    aio_context_free(main_ctx);
    iohandler_ctx = NULL;
    main_ctx = NULL;
    iohandler_ready = false;
}

AioContext *main_aio_context(void)
{
    return main_ctx;
}

AioContext *iohandler_aio_context(void)
{
    return iohandler_ctx;
}

bool in_main_thread(void)
{
    return main_ctx && current_aio_context() == main_ctx;
}

bool main_loop_wait(bool blocking)
{
    bool progress;

    GLOBAL_STATE_CODE();
    assert(!in_coroutine());
    progress = aio_poll(main_ctx, blocking && !iohandler_ready);
    if (iohandler_ready || !blocking) {
        bool idle;

        iohandler_ready = false;
        progress |= aio_poll(iohandler_ctx, false);
        /*
         * A BH scheduled from another thread while that poll ran may have
         * had its eventfd write consumed after the BHs were run: its
         * context's epoll fd will not fire for it.  Poll again next time.
         */
        if (aio_bh_pending(iohandler_ctx, &idle)) {
            iohandler_ready = true;
        }
    }
    if (!iohandler_armed) {
        iohandler_arm();
    }
    return progress;
}
