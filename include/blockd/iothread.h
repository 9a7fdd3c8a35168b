/*
 * iothread.h - threads that run their own event loop.
 *
 * Half: global state, except iothread_get_aio_context() and
 * iothread_get_id() (common).
 *
 * An iothread owns one AioContext and polls it until stopped.  Iothreads
 * are created and destroyed by the main thread (--object iothread,id=...,
 * object-add, object-del) and are looked up by id.
 */
#ifndef BLOCKD_IOTHREAD_H
#define BLOCKD_IOTHREAD_H

#include <stdint.h>
#include "blockd/aio.h"
#include "blockd/error.h"

typedef struct IOThread IOThread;

typedef struct IOThreadParams {
    int64_t poll_max_ns;     /* 0: no busy-polling; default 32768 */
    int64_t poll_grow;       /* 0: double */
    int64_t poll_shrink;     /* 0: drop to zero */
    int64_t aio_max_batch;   /* 0: backend default */
    int64_t thread_pool_min; /* workers kept alive; default 0 */
    int64_t thread_pool_max; /* workers at most; default 64 */
} IOThreadParams;

#define IOTHREAD_DEFAULT_POLL_MAX_NS 32768

/* Fill @p with the defaults (create and iothread_check_params() reject
 * negative values, and a thread pool range that is empty or beyond int). */
void iothread_params_init(IOThreadParams *p);

/*
 * Start an iothread named @id (unique among iothreads) and wait until its
 * loop runs.  Global state.
 */
/* The checks of create, with QEMU's messages. */
bool iothread_check_params(const IOThreadParams *params, Error **errp);

IOThread *iothread_create(const char *id, const IOThreadParams *params,
                          Error **errp);

/* Change the polling parameters of a running iothread.  Global state. */
void iothread_set_params(IOThread *iot, const IOThreadParams *params);

/*
 * Stop the loop, join the thread and free it.  Anything still scheduled in
 * its context runs first.  Global state.
 */
void iothread_destroy(IOThread *iot);

/* Look up by id; NULL if none.  Global state. */
IOThread *iothread_find(const char *id);

/* Call @fn for every iothread in creation order.  Global state. */
void iothread_foreach(void (*fn)(IOThread *iot, void *opaque), void *opaque);

/* Stop and free every iothread (shutdown).  Global state. */
void iothread_destroy_all(void);

AioContext *iothread_get_aio_context(IOThread *iot);
const char *iothread_get_id(IOThread *iot);
int iothread_get_thread_id(IOThread *iot);
void iothread_get_params(IOThread *iot, IOThreadParams *params);

#endif /* BLOCKD_IOTHREAD_H */
