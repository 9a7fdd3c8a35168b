/*
 * thread.c - mutexes, condition variables, events and threads.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "blockd/thread.h"

static void bd_die(const char *what, int err)
{
    fprintf(stderr, "blockd: %s: %s\n", what, strerror(err));
    abort();
}

void bd_mutex_init(BdMutex *m)
{
    pthread_mutexattr_t attr;
    int err;

    pthread_mutexattr_init(&attr);
#ifndef NDEBUG
    /* Catch unlock-by-non-owner and self-deadlock early in debug builds. */
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ERRORCHECK);
#endif
    err = pthread_mutex_init(&m->m, &attr);
    pthread_mutexattr_destroy(&attr);
    if (err) {
        bd_die("pthread_mutex_init", err);
    }
}

void bd_mutex_destroy(BdMutex *m)
{
    int err = pthread_mutex_destroy(&m->m);
    if (err) {
        bd_die("pthread_mutex_destroy", err);
    }
}

void bd_mutex_lock(BdMutex *m) TSA_NO_TSA
{
    int err = pthread_mutex_lock(&m->m);
    if (err) {
        bd_die("pthread_mutex_lock", err);
    }
}

void bd_mutex_unlock(BdMutex *m) TSA_NO_TSA
{
    int err = pthread_mutex_unlock(&m->m);
    if (err) {
        bd_die("pthread_mutex_unlock", err);
    }
}

bool bd_mutex_trylock(BdMutex *m) TSA_NO_TSA
{
    int err = pthread_mutex_trylock(&m->m);
    if (err == 0) {
        return true;
    }
    if (err != EBUSY) {
        bd_die("pthread_mutex_trylock", err);
    }
    return false;
}

void bd_cond_init(BdCond *c)
{
    pthread_condattr_t attr;
    int err;

    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    err = pthread_cond_init(&c->c, &attr);
    pthread_condattr_destroy(&attr);
    if (err) {
        bd_die("pthread_cond_init", err);
    }
}

void bd_cond_destroy(BdCond *c)
{
    pthread_cond_destroy(&c->c);
}

void bd_cond_wait(BdCond *c, BdMutex *m)
{
    int err = pthread_cond_wait(&c->c, &m->m);
    if (err) {
        bd_die("pthread_cond_wait", err);
    }
}

bool bd_cond_timedwait_ns(BdCond *c, BdMutex *m, int64_t timeout_ns)
{
    int64_t deadline = clock_now_ns() + timeout_ns;
    struct timespec ts = {
        .tv_sec = deadline / 1000000000,
        .tv_nsec = deadline % 1000000000,
    };
    int err = pthread_cond_timedwait(&c->c, &m->m, &ts);
    if (err && err != ETIMEDOUT) {
        bd_die("pthread_cond_timedwait", err);
    }
    return err == 0;
}

void bd_cond_signal(BdCond *c)
{
    pthread_cond_signal(&c->c);
}

void bd_cond_broadcast(BdCond *c)
{
    pthread_cond_broadcast(&c->c);
}

void bd_event_init(BdEvent *ev)
{
    bd_mutex_init(&ev->lock);
    bd_cond_init(&ev->cond);
    bd_mutex_lock(&ev->lock);
    ev->set = false;
    bd_mutex_unlock(&ev->lock);
}

void bd_event_destroy(BdEvent *ev)
{
    bd_cond_destroy(&ev->cond);
    bd_mutex_destroy(&ev->lock);
}

void bd_event_set(BdEvent *ev)
{
    bd_mutex_lock(&ev->lock);
    ev->set = true;
    bd_cond_broadcast(&ev->cond);
    bd_mutex_unlock(&ev->lock);
}

void bd_event_reset(BdEvent *ev)
{
    bd_mutex_lock(&ev->lock);
    ev->set = false;
    bd_mutex_unlock(&ev->lock);
}

void bd_event_wait(BdEvent *ev)
{
    bd_mutex_lock(&ev->lock);
    while (!ev->set) {
        bd_cond_wait(&ev->cond, &ev->lock);
    }
    bd_mutex_unlock(&ev->lock);
}

void bd_thread_create(BdThread *t, const char *name,
                      void *(*fn)(void *), void *opaque)
{
    sigset_t all, old;
    int err;

    /* The new thread inherits this mask: only the main thread gets signals. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    err = pthread_create(&t->thread, NULL, fn, opaque);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err) {
        bd_die("pthread_create", err);
    }
    if (name) {
        char short_name[16];
        snprintf(short_name, sizeof(short_name), "%s", name);
        pthread_setname_np(t->thread, short_name);
    }
}

void *bd_thread_join(BdThread *t)
{
    void *ret = NULL;
    int err = pthread_join(t->thread, &ret);
    if (err) {
        bd_die("pthread_join", err);
    }
    return ret;
}

int bd_thread_get_tid(void)
{
    return (int)syscall(SYS_gettid);
}

int64_t clock_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}
