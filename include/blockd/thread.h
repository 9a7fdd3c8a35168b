/*
 * thread.h - mutexes, condition variables, events and threads.
 *
 * Common code: every function here may be called from any thread.
 *
 * BdMutex is a clang thread-safety capability, so a field can be declared
 * "int x TSA_GUARDED_BY(lock)" and the clang build checks every access.
 * These are blocking locks: never hold one across a coroutine yield or an
 * event-loop poll.
 */
#ifndef BLOCKD_THREAD_H
#define BLOCKD_THREAD_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include "blockd/compiler.h"

typedef struct TSA_CAPABILITY("mutex") BdMutex {
    pthread_mutex_t m;
} BdMutex;

typedef struct BdCond {
    pthread_cond_t c;
} BdCond;

/* Initialise / destroy a mutex (error-checking in debug builds). */
void bd_mutex_init(BdMutex *m);
void bd_mutex_destroy(BdMutex *m);
void bd_mutex_lock(BdMutex *m) TSA_ACQUIRE(m);
void bd_mutex_unlock(BdMutex *m) TSA_RELEASE(m);
/* Returns true if the lock was taken. */
bool bd_mutex_trylock(BdMutex *m) TSA_TRY_ACQUIRE(true, m);

/* Condition variables use CLOCK_MONOTONIC. */
void bd_cond_init(BdCond *c);
void bd_cond_destroy(BdCond *c);
void bd_cond_wait(BdCond *c, BdMutex *m) TSA_REQUIRES(m);
/* Returns false on timeout. */
bool bd_cond_timedwait_ns(BdCond *c, BdMutex *m, int64_t timeout_ns) TSA_REQUIRES(m);
void bd_cond_signal(BdCond *c);
void bd_cond_broadcast(BdCond *c);

/*
 * BdEvent: a one-bit, manual-reset event (set / reset / wait), built on a
 * mutex and condition variable.  Used to hand-shake thread start-up.
 */
typedef struct BdEvent {
    BdMutex lock;
    BdCond cond;
    bool set TSA_FIELD_GUARDED_BY(lock);
} BdEvent;

void bd_event_init(BdEvent *ev);
void bd_event_destroy(BdEvent *ev);
void bd_event_set(BdEvent *ev);
void bd_event_reset(BdEvent *ev);
void bd_event_wait(BdEvent *ev);

typedef struct BdThread {
    pthread_t thread;
} BdThread;

/*
 * Start a joinable thread named @name (truncated to 15 bytes for the
 * kernel).  Signals are blocked in the new thread, so that only the main
 * thread handles SIGINT/SIGTERM.  Aborts if the thread cannot be created.
 */
void bd_thread_create(BdThread *t, const char *name,
                      void *(*fn)(void *), void *opaque);
void *bd_thread_join(BdThread *t);
/* The kernel thread id of the calling thread (for query-iothreads). */
int bd_thread_get_tid(void);

/* Monotonic clock in nanoseconds. */
int64_t clock_now_ns(void);

#endif /* BLOCKD_THREAD_H */
