/*
 * aio-internal.h - the AioContext structure, shared by the files that
 * implement it (aio.c, aio-bh.c, aio-timer.c, coroutine-sched.c,
 * main-loop.c).  Nothing outside src/util includes this.
 */
#ifndef BLOCKD_AIO_INTERNAL_H
#define BLOCKD_AIO_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "blockd/aio.h"
#include "blockd/list.h"
#include "blockd/thread.h"

typedef struct AioHandler {
    int fd;
    IOHandler *io_read;
    IOHandler *io_write;
    AioPollFn *io_poll;
    void *opaque;
    bool deleted;                /* removed; freed once nobody walks the list */
    bool internal;               /* the context's own notifier */
    ListNode node;               /* in ctx->handlers or ctx->deleted_handlers */
} AioHandler;

/* BH flags */
enum {
    BH_PENDING   = 1 << 0,   /* queued on the context (lock-free stack or run queue) */
    BH_SCHEDULED = 1 << 1,   /* should run */
    BH_DELETED   = 1 << 2,   /* free instead of running */
    BH_ONESHOT   = 1 << 3,   /* free after running */
    BH_IDLE      = 1 << 4,   /* does not count as progress */
};

struct BH {
    AioContext *ctx;
    BHFunc *cb;
    void *opaque;
    unsigned flags;          /* atomic */
    BH *next;                /* link in ctx->bh_stack */
    ListNode run_node;       /* link in ctx->bh_run_queue (home thread only) */
};


struct AioContext {
    char *name;
    bool has_home;
    pthread_t home;

    int epfd;
    int notify_fd;                  /* eventfd written by aio_notify() */
    unsigned notify_me;             /* atomic; +2 while the home thread may sleep */
    bool notified;                  /* atomic */
    bool always_notify;             /* polled from another context's loop */
    unsigned foreign_users;         /* atomic: see aio_context_foreign_begin() */

    BdMutex handler_lock;
    ListNode handlers TSA_FIELD_GUARDED_BY(handler_lock);
    ListNode deleted_handlers TSA_FIELD_GUARDED_BY(handler_lock);
    unsigned num_poll_handlers TSA_FIELD_GUARDED_BY(handler_lock);
    int walking;                    /* home thread: nesting depth of aio_poll */

    BH *bh_stack;                   /* atomic; newly scheduled BHs, LIFO */
    ListNode bh_run_queue;          /* home thread: detached BHs, FIFO */

    BdMutex timer_lock;
    ListNode timers TSA_FIELD_GUARDED_BY(timer_lock);  /* sorted by expiry */

    Coroutine *scheduled_coroutines;  /* atomic; lock-free stack */
    BH *co_schedule_bh;

    int64_t poll_max_ns;            /* atomic */
    int64_t poll_grow;              /* atomic */
    int64_t poll_shrink;            /* atomic */
    int64_t poll_ns;                /* home thread (read atomically by others) */
    int64_t max_batch;              /* atomic; 0: engine default */
    int pool_min, pool_max;         /* atomic; the thread pool's limits */

    struct {
        void *data;
        AioContextDataFree *free_fn;
    } subsystem[AIO_DATA__MAX];     /* home thread */
};

struct AioTimer {
    AioContext *ctx;
    TimerCb *cb;
    void *opaque;
    int64_t expire_ns TSA_FIELD_GUARDED_BY(ctx->timer_lock);   /* -1: not armed */
    ListNode node TSA_FIELD_GUARDED_BY(ctx->timer_lock);
};

/* aio-bh.c */
bool aio_bh_poll(AioContext *ctx);
/* Is a non-idle BH waiting?  Sets *idle if only idle BHs wait. */
bool aio_bh_pending(AioContext *ctx, bool *idle);
void aio_bh_free_all(AioContext *ctx);

/* aio-timer.c */
/* ns until the next timer expires; -1 if none; 0 if one has expired. */
int64_t aio_timers_deadline_ns(AioContext *ctx);
bool aio_timers_run(AioContext *ctx);

/* coroutine-sched.c */
void aio_co_schedule_bh_cb(void *opaque);

/* aio.c */
void aio_context_set_home_thread(AioContext *ctx);   /* without making it current */
int aio_context_epoll_fd(AioContext *ctx);

#endif /* BLOCKD_AIO_INTERNAL_H */
