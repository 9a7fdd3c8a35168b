/*
 * aio.c - AioContext: creation, fd handlers, notification and aio_poll().
 *
 * The wait primitive is epoll.  Cross-thread wake-ups use an eventfd that is
 * written only when the home thread has announced (notify_me) that it may
 * sleep, so scheduling work for a busy loop costs no system call.
 */
#include <assert.h>
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "aio-internal.h"
#include "blockd/atomic.h"
#include "blockd/coroutine.h"
#include "blockd/log.h"

#define MAX_EVENTS 64
#define MAX_POLL_HANDLERS 64
#define IDLE_BH_TIMEOUT_NS (10 * 1000 * 1000)
#define POLL_START_NS 4000

static __thread AioContext *current_ctx;

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n, size);
    if (!p) {
        abort();
    }
    return p;
}

/* ---- The context's own notifier ------------------------------------------ */

static void notifier_read(void *opaque)
{
    AioContext *ctx = opaque;
    uint64_t value;

    /* Just drain it: waking up was the point. */
    if (read(ctx->notify_fd, &value, sizeof(value)) < 0 && errno != EAGAIN) {
        warn_report("event loop '%s': eventfd read: %s", ctx->name, strerror(errno));
    }
}

static bool notifier_poll(void *opaque)
{
    AioContext *ctx = opaque;
    return atomic_read(&ctx->notified);
}

void aio_notify(AioContext *ctx)
{
    static const uint64_t one = 1;

    /* Pairs with the seq_cst increment of notify_me in aio_poll(). */
    atomic_set_mb(&ctx->notified, true);
    if (atomic_read_mb(&ctx->notify_me) || ctx->always_notify) {
        if (write(ctx->notify_fd, &one, sizeof(one)) < 0 && errno != EAGAIN) {
            warn_report("event loop '%s': eventfd write: %s", ctx->name, strerror(errno));
        }
    }
}

/* ---- Creation --------------------------------------------------------------- */

AioContext *aio_context_new(const char *name, Error **errp)
{
    AioContext *ctx = xcalloc(1, sizeof(*ctx));

    ctx->name = strdup(name ? name : "");
    ctx->pool_max = AIO_THREAD_POOL_DEFAULT_MAX;
    ctx->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (ctx->epfd < 0) {
        error_setg_errno(errp, errno, "Failed to create event loop '%s'", ctx->name);
        goto fail;
    }
    ctx->notify_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (ctx->notify_fd < 0) {
        error_setg_errno(errp, errno, "Failed to create event loop '%s'", ctx->name);
        close(ctx->epfd);
        goto fail;
    }
    bd_mutex_init(&ctx->handler_lock);
    bd_mutex_init(&ctx->timer_lock);
    bd_mutex_lock(&ctx->handler_lock);
    list_init(&ctx->handlers);
    list_init(&ctx->deleted_handlers);
    bd_mutex_unlock(&ctx->handler_lock);
    bd_mutex_lock(&ctx->timer_lock);
    list_init(&ctx->timers);
    bd_mutex_unlock(&ctx->timer_lock);
    list_init(&ctx->bh_run_queue);
    ctx->co_schedule_bh = aio_bh_new(ctx, aio_co_schedule_bh_cb, ctx);

    aio_set_fd_handler(ctx, ctx->notify_fd, notifier_read, NULL, notifier_poll, ctx);
    bd_mutex_lock(&ctx->handler_lock);
    list_entry(ctx->handlers.prev, AioHandler, node)->internal = true;
    bd_mutex_unlock(&ctx->handler_lock);
    return ctx;

fail:
    free(ctx->name);
    free(ctx);
    return NULL;
}

static void free_deleted_handlers(AioContext *ctx)
{
    bd_mutex_lock(&ctx->handler_lock);
    list_for_each_safe(n, &ctx->deleted_handlers) {
        list_del(n);
        free(list_entry(n, AioHandler, node));
    }
    bd_mutex_unlock(&ctx->handler_lock);
}

void aio_context_free(AioContext *ctx)
{
    if (!ctx) {
        return;
    }
    assert(ctx->walking == 0);
    /* A worker may still be returning from the aio_notify() that delivered
     * the completion which led to this free: let it leave first. */
    while (atomic_read_mb(&ctx->foreign_users)) {
        sched_yield();
    }
    /* Subsystems first: they remove their handlers and may run BHs. */
    for (int i = 0; i < AIO_DATA__MAX; i++) {
        if (ctx->subsystem[i].free_fn) {
            ctx->subsystem[i].free_fn(ctx->subsystem[i].data);
        }
        ctx->subsystem[i].data = NULL;
        ctx->subsystem[i].free_fn = NULL;
    }
    bh_delete(ctx->co_schedule_bh);
    aio_bh_free_all(ctx);
    assert(!atomic_read(&ctx->scheduled_coroutines));

    bd_mutex_lock(&ctx->handler_lock);
    list_for_each_safe(n, &ctx->handlers) {
        AioHandler *h = list_entry(n, AioHandler, node);
        if (!h->internal) {
            warn_report("event loop '%s' freed with a handler for fd %d",
                        ctx->name, h->fd);
        }
        list_del(n);
        free(h);
    }
    bd_mutex_unlock(&ctx->handler_lock);
    free_deleted_handlers(ctx);

    bd_mutex_lock(&ctx->timer_lock);
    list_for_each_safe(n, &ctx->timers) {
        AioTimer *t = list_entry(n, AioTimer, node);
        list_del(n);
        t->expire_ns = -1;
    }
    bd_mutex_unlock(&ctx->timer_lock);

    if (current_ctx == ctx) {
        current_ctx = NULL;
    }
    close(ctx->notify_fd);
    close(ctx->epfd);
    bd_mutex_destroy(&ctx->handler_lock);
    bd_mutex_destroy(&ctx->timer_lock);
    free(ctx->name);
    free(ctx);
}

void aio_context_set_home_thread(AioContext *ctx)
{
    ctx->home = pthread_self();
    atomic_store_release(&ctx->has_home, true);
}

void aio_context_set_home(AioContext *ctx)
{
    aio_context_set_home_thread(ctx);
    current_ctx = ctx;
}

/* Not inlined: coroutines that move between threads must re-read it. */
__attribute__((noinline)) AioContext *current_aio_context(void)
{
    AioContext **p = &current_ctx;
    __asm__ __volatile__("" : "+r"(p));
    return *p;
}

__attribute__((noinline)) bool aio_context_in_home_thread(AioContext *ctx)
{
    return atomic_load_acquire(&ctx->has_home) && pthread_equal(ctx->home, pthread_self());
}

void aio_context_foreign_begin(AioContext *ctx)
{
    atomic_inc(&ctx->foreign_users);
}

void aio_context_foreign_end(AioContext *ctx)
{
    atomic_dec(&ctx->foreign_users);
}

void *aio_context_get_data(AioContext *ctx, AioContextDataKey key)
{
    assert((unsigned)key < AIO_DATA__MAX);
    return ctx->subsystem[key].data;
}

void aio_context_set_data(AioContext *ctx, AioContextDataKey key, void *data,
                          AioContextDataFree *free_fn)
{
    assert((unsigned)key < AIO_DATA__MAX);
    ctx->subsystem[key].data = data;
    ctx->subsystem[key].free_fn = free_fn;
}

const char *aio_context_name(AioContext *ctx)
{
    return ctx->name;
}

int aio_context_epoll_fd(AioContext *ctx)
{
    return ctx->epfd;
}

void aio_context_set_poll_params(AioContext *ctx, int64_t poll_max_ns,
                                 int64_t poll_grow, int64_t poll_shrink)
{
    atomic_set(&ctx->poll_max_ns, poll_max_ns);
    atomic_set(&ctx->poll_grow, poll_grow);
    atomic_set(&ctx->poll_shrink, poll_shrink);
    /* The home thread picks the new limits up at its next iteration. */
    aio_notify(ctx);
}

void aio_context_set_max_batch(AioContext *ctx, int64_t max_batch)
{
    atomic_set(&ctx->max_batch, max_batch);
}

int64_t aio_context_get_max_batch(AioContext *ctx)
{
    return atomic_read(&ctx->max_batch);
}

void aio_context_set_thread_pool_params(AioContext *ctx, int min, int max)
{
    atomic_set(&ctx->pool_min, min);
    atomic_set(&ctx->pool_max, max);
}

void aio_context_get_thread_pool_params(AioContext *ctx, int *min, int *max)
{
    *min = atomic_read(&ctx->pool_min);
    *max = atomic_read(&ctx->pool_max);
}

int64_t aio_context_poll_ns(AioContext *ctx)
{
    return atomic_read(&ctx->poll_ns);
}

/* ---- fd handlers ------------------------------------------------------------ */

static AioHandler *find_handler(AioContext *ctx, int fd) TSA_REQUIRES(ctx->handler_lock)
{
    list_for_each(n, &ctx->handlers) {
        AioHandler *h = list_entry(n, AioHandler, node);
        if (h->fd == fd && !h->deleted) {
            return h;
        }
    }
    return NULL;
}

static uint32_t handler_events(const AioHandler *h)
{
    return (h->io_read ? EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP : 0) |
           (h->io_write ? EPOLLOUT | EPOLLERR | EPOLLHUP : 0);
}

void aio_set_fd_handler(AioContext *ctx, int fd, IOHandler *io_read,
                        IOHandler *io_write, AioPollFn *io_poll, void *opaque)
{
    bool remove = !io_read && !io_write && !io_poll;
    AioHandler *old, *h = NULL;
    struct epoll_event ev;

    bd_mutex_lock(&ctx->handler_lock);
    old = find_handler(ctx, fd);
    if (old) {
        /* Retire the old record; it may be in use by a running aio_poll(). */
        epoll_ctl(ctx->epfd, EPOLL_CTL_DEL, fd, NULL);
        old->deleted = true;
        if (old->io_poll) {
            ctx->num_poll_handlers--;
        }
        list_del(&old->node);
        list_add_tail(&ctx->deleted_handlers, &old->node);
    }
    if (!remove) {
        h = xcalloc(1, sizeof(*h));
        h->fd = fd;
        h->io_read = io_read;
        h->io_write = io_write;
        h->io_poll = io_poll;
        h->opaque = opaque;
        ev.events = handler_events(h);
        ev.data.ptr = h;
        if (epoll_ctl(ctx->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
            /* Only a bad fd gets here: a programming error. */
            error_report("event loop '%s': cannot watch fd %d: %s",
                         ctx->name, fd, strerror(errno));
            abort();
        }
        if (io_poll) {
            ctx->num_poll_handlers++;
        }
        list_add_tail(&ctx->handlers, &h->node);
    }
    bd_mutex_unlock(&ctx->handler_lock);
    aio_notify(ctx);
}

/* Snapshot the callbacks of @h, or return false if it was removed. */
static bool handler_snapshot(AioContext *ctx, AioHandler *h, AioHandler *copy)
{
    bool live;

    bd_mutex_lock(&ctx->handler_lock);
    live = !h->deleted;
    if (live) {
        *copy = *h;
    }
    bd_mutex_unlock(&ctx->handler_lock);
    return live;
}

static bool dispatch_event(AioContext *ctx, struct epoll_event *ev)
{
    AioHandler copy;
    bool progress = false;

    if (!handler_snapshot(ctx, ev->data.ptr, &copy)) {
        return false;
    }
    if ((ev->events & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP)) && copy.io_read) {
        copy.io_read(copy.opaque);
        progress = !copy.internal;
    }
    /* A hang-up ends writing too: a writer waiting for room must learn it
     * (its send then fails), or it would wait for ever. */
    if ((ev->events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) && copy.io_write &&
        handler_snapshot(ctx, ev->data.ptr, &copy) && copy.io_write) {
        copy.io_write(copy.opaque);
        progress = true;
    }
    return progress;
}

/* ---- Polling ---------------------------------------------------------------- */

/* Is there work that makes sleeping wrong?  Returns the timeout in ns (-1: forever). */
static int64_t compute_timeout(AioContext *ctx)
{
    bool idle = false;
    int64_t deadline;

    if (aio_bh_pending(ctx, &idle)) {
        return 0;
    }
    deadline = aio_timers_deadline_ns(ctx);
    if (idle && (deadline < 0 || deadline > IDLE_BH_TIMEOUT_NS)) {
        deadline = IDLE_BH_TIMEOUT_NS;
    }
    return deadline;
}

/*
 * Busy-poll the handlers that have an io_poll callback for up to @max_ns.
 * Returns true as soon as one reports an event or work was scheduled.
 */
static bool busy_poll(AioContext *ctx, int64_t max_ns)
{
    AioHandler snap[MAX_POLL_HANDLERS];
    int n = 0;
    int64_t start = clock_now_ns();

    bd_mutex_lock(&ctx->handler_lock);
    list_for_each(node, &ctx->handlers) {
        AioHandler *h = list_entry(node, AioHandler, node);
        if (h->io_poll && n < MAX_POLL_HANDLERS) {
            snap[n++] = *h;
        }
    }
    bd_mutex_unlock(&ctx->handler_lock);

    do {
        for (int i = 0; i < n; i++) {
            if (snap[i].io_poll(snap[i].opaque)) {
                return true;
            }
        }
        if (atomic_read(&ctx->bh_stack) || atomic_read(&ctx->notified)) {
            return true;
        }
        cpu_relax();
    } while (clock_now_ns() - start < max_ns);
    return false;
}

static void adjust_poll_time(AioContext *ctx, int64_t block_ns)
{
    int64_t max = atomic_read(&ctx->poll_max_ns);
    int64_t ns = ctx->poll_ns;

    if (max <= 0) {
        ns = 0;
    } else if (block_ns <= ns) {
        /* The poll window was long enough: keep it. */
    } else if (block_ns > max) {
        int64_t shrink = atomic_read(&ctx->poll_shrink);
        ns = shrink > 1 ? ns / shrink : 0;
    } else if (ns < max) {
        int64_t grow = atomic_read(&ctx->poll_grow);
        ns = ns ? ns * (grow > 1 ? grow : 2) : POLL_START_NS;
        if (ns > max) {
            ns = max;
        }
    }
    atomic_set(&ctx->poll_ns, ns);
}

static int wait_events(AioContext *ctx, struct epoll_event *events, int64_t timeout_ns)
{
    struct timespec ts, *tsp = NULL;
    int n;

    if (timeout_ns >= 0) {
        ts.tv_sec = timeout_ns / 1000000000;
        ts.tv_nsec = timeout_ns % 1000000000;
        tsp = &ts;
    }
    do {
        n = epoll_pwait2(ctx->epfd, events, MAX_EVENTS, tsp, NULL);
        if (n < 0 && errno == ENOSYS) {
            /* Older kernels: millisecond resolution, rounded up. */
            int ms = timeout_ns < 0 ? -1 : (int)((timeout_ns + 999999) / 1000000);
            n = epoll_wait(ctx->epfd, events, MAX_EVENTS, ms);
        }
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        error_report("event loop '%s': epoll_wait: %s", ctx->name, strerror(errno));
        abort();
    }
    return n;
}

bool aio_poll(AioContext *ctx, bool blocking)
{
    struct epoll_event events[MAX_EVENTS];
    bool progress = false;
    bool announced = false;
    int64_t timeout = 0;
    int64_t start = 0;
    int n;

    /* Only the home thread may run the loop: see the seed 002 bug. */
    assert(aio_context_in_home_thread(ctx));
    ctx->walking++;

    if (blocking) {
        timeout = compute_timeout(ctx);
        if (timeout != 0) {
            int64_t poll_ns = atomic_read(&ctx->poll_max_ns) > 0 ? ctx->poll_ns : 0;
            start = clock_now_ns();
            if (poll_ns > 0 && busy_poll(ctx, timeout < 0 || timeout > poll_ns ? poll_ns : timeout)) {
                timeout = 0;
            }
        }
        if (timeout != 0) {
            /* Announce that we may sleep, then look again (pairs with aio_notify). */
            atomic_fetch_add(&ctx->notify_me, 2);
            announced = true;
            timeout = compute_timeout(ctx);
            /* A notification that came while notify_me was 0 wrote no
             * eventfd: honour it here or it is lost. */
            if (atomic_read_mb(&ctx->notified)) {
                timeout = 0;
            }
        }
    }

    n = wait_events(ctx, events, timeout);

    if (announced) {
        atomic_fetch_sub(&ctx->notify_me, 2);
    }
    atomic_set_mb(&ctx->notified, false);

    if (blocking && start && (ctx->poll_ns || atomic_read(&ctx->poll_max_ns) > 0)) {
        /* Also when polling was just disabled: the window drops to 0. */
        adjust_poll_time(ctx, clock_now_ns() - start);
    }

    progress |= aio_bh_poll(ctx);
    for (int i = 0; i < n; i++) {
        progress |= dispatch_event(ctx, &events[i]);
    }
    progress |= aio_timers_run(ctx);

    if (--ctx->walking == 0) {
        free_deleted_handlers(ctx);
    }
    return progress;
}
