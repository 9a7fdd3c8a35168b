/*
 * coroutine-internal.h - the Coroutine structure, shared by coroutine.c,
 * coroutine-sched.c and coroutine-lock.c.
 */
#ifndef BLOCKD_COROUTINE_INTERNAL_H
#define BLOCKD_COROUTINE_INTERNAL_H

#include <stddef.h>
#include <ucontext.h>

#include "blockd/coroutine.h"

#if defined(__x86_64__) && !defined(BLOCKD_FORCE_UCONTEXT)
#define CO_ASM_SWITCH 1
#endif

struct Coroutine {
    CoroutineEntry *entry;
    void *opaque;
    Coroutine *caller;           /* who entered us; NULL while not running */
    AioContext *ctx;             /* where we run; atomic (read by wakers) */
    const char *scheduled;       /* atomic: set while in a scheduled list */
    Coroutine *sched_next;       /* link in AioContext.scheduled_coroutines */
    Coroutine *wakeup_head;      /* coroutines to enter when we yield, FIFO */
    Coroutine *wakeup_tail;
    Coroutine *wakeup_next;      /* our link in someone's wake-up queue */
    bool terminated;
    bool is_leader;              /* the thread's own stack, not a coroutine */

#ifdef CO_ASM_SWITCH
    void *sp;                    /* saved stack pointer while switched out */
#else
    ucontext_t uc;
#endif
    void *stack;                 /* mapping, including the guard page */
    size_t stack_size;           /* usable bytes above the guard page */
    const void *stack_bottom;    /* for ASan; the thread stack for leaders */
    size_t stack_bottom_size;
    void *asan_fake_stack;
    void *tsan_fiber;
    Coroutine *pool_next;
};

/* Enter the coroutines queued on @co's wake-up queue after it yields. */
void coroutine_wakeup_queue_add(Coroutine *self, Coroutine *co);

#endif /* BLOCKD_COROUTINE_INTERNAL_H */
