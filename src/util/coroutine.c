/*
 * coroutine.c - coroutine creation, switching and the stack pool.
 *
 * On x86-64 a switch saves the six callee-saved registers on the current
 * stack and swaps stack pointers (a dozen instructions); elsewhere it falls
 * back to swapcontext().  Stacks are mmap'ed with a PROT_NONE guard page
 * below them and recycled through a per-thread pool.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "coroutine-internal.h"
#include "blockd/atomic.h"
#include "blockd/log.h"

#define CO_STACK_SIZE (1024 * 1024)
#define CO_POOL_MAX 256

#ifdef BD_ASAN
void __sanitizer_start_switch_fiber(void **fake_stack_save, const void *bottom, size_t size);
void __sanitizer_finish_switch_fiber(void *fake_stack_save, const void **bottom_old,
                                     size_t *size_old);
void __asan_unpoison_memory_region(void const volatile *addr, size_t size);
#endif
#ifdef BD_TSAN
void *__tsan_get_current_fiber(void);
void *__tsan_create_fiber(unsigned flags);
void __tsan_destroy_fiber(void *fiber);
void __tsan_switch_to_fiber(void *fiber, unsigned flags);
#endif

typedef struct CoThreadState {
    Coroutine *current;          /* the running coroutine, or the leader */
    Coroutine *leader;           /* stands for the thread's own stack */
    Coroutine *switch_from;      /* who switched to us (for ASan) */
    Coroutine *pool;
    unsigned pool_size;
} CoThreadState;

static __thread CoThreadState co_tls;

/*
 * A coroutine may yield in one thread and resume in another, but the
 * compiler assumes a function runs in one thread and may cache the address
 * of a thread-local variable across the switch.  Every access therefore
 * goes through this function, which the compiler can neither inline nor
 * treat as constant.
 */
static __attribute__((noinline)) CoThreadState *co_tls_get(void)
{
    CoThreadState *p = &co_tls;
    __asm__ __volatile__("" : "+r"(p));
    return p;
}
static pthread_key_t co_thread_key;
static pthread_once_t co_key_once = PTHREAD_ONCE_INIT;

static void co_free_one(Coroutine *co);

static void co_thread_exit(void *opaque)
{
    (void)opaque;
    CoThreadState *s = co_tls_get();

    coroutine_pool_drain();
    free(s->leader);
    s->leader = NULL;
    s->current = NULL;
}

static void co_make_key(void)
{
    if (pthread_key_create(&co_thread_key, co_thread_exit)) {
        abort();
    }
}

static CoThreadState *co_state(void)
{
    CoThreadState *s = co_tls_get();

    if (unlikely(!s->leader)) {
        Coroutine *leader = calloc(1, sizeof(*leader));
        if (!leader) {
            abort();
        }
        leader->is_leader = true;
#ifdef BD_TSAN
        leader->tsan_fiber = __tsan_get_current_fiber();
#endif
        s->leader = leader;
        s->current = leader;
        pthread_once(&co_key_once, co_make_key);
        pthread_setspecific(co_thread_key, s);
    }
    return s;
}

/* ---- Architecture switch ------------------------------------------------ */

#ifdef CO_ASM_SWITCH
void co_switch_asm(void **save_sp, void *new_sp);
__asm__(
    ".text\n"
    ".globl co_switch_asm\n"
    ".hidden co_switch_asm\n"
    ".type co_switch_asm, @function\n"
    "co_switch_asm:\n"
    "    pushq %rbp\n"
    "    pushq %rbx\n"
    "    pushq %r12\n"
    "    pushq %r13\n"
    "    pushq %r14\n"
    "    pushq %r15\n"
    "    movq %rsp, (%rdi)\n"
    "    movq %rsi, %rsp\n"
    "    popq %r15\n"
    "    popq %r14\n"
    "    popq %r13\n"
    "    popq %r12\n"
    "    popq %rbx\n"
    "    popq %rbp\n"
    "    ret\n"
    ".size co_switch_asm, .-co_switch_asm\n");
#endif

static void co_trampoline(void);

/* Prepare @co's stack so that switching to it starts co_trampoline(). */
static void co_arch_init(Coroutine *co)
{
#ifdef BD_ASAN
    /*
     * A pooled stack still carries the redzones of the frames its last
     * coroutine never returned from (it switched away at the end); the new
     * coroutine's frames lie elsewhere, so clear them.
     */
    __asan_unpoison_memory_region(co->stack_bottom, co->stack_size);
#endif
#ifdef CO_ASM_SWITCH
    uintptr_t *sp = (uintptr_t *)((char *)co->stack_bottom + co->stack_size);

    *--sp = 0;                          /* return address of the trampoline: none */
    *--sp = (uintptr_t)co_trampoline;   /* where "ret" goes */
    for (int i = 0; i < 6; i++) {
        *--sp = 0;                      /* rbp, rbx, r12-r15 */
    }
    co->sp = sp;
#else
    if (getcontext(&co->uc) < 0) {
        abort();
    }
    co->uc.uc_stack.ss_sp = (void *)co->stack_bottom;
    co->uc.uc_stack.ss_size = co->stack_size;
    co->uc.uc_link = NULL;
    makecontext(&co->uc, co_trampoline, 0);
#endif
}

/* After arriving on a stack: finish the sanitizer's view of the switch. */
static inline void co_switch_arrived(Coroutine *self, CoThreadState *s)
{
#ifdef BD_ASAN
    const void *bottom;
    size_t size;
    Coroutine *from = s->switch_from;

    __sanitizer_finish_switch_fiber(self->asan_fake_stack, &bottom, &size);
    if (from && from->is_leader) {
        from->stack_bottom = bottom;
        from->stack_bottom_size = size;
    }
#else
    (void)self;
    (void)s;
#endif
}

static void co_switch(CoThreadState *s, Coroutine *from, Coroutine *to, bool terminating)
{
    s->current = to;
    s->switch_from = from;
#ifdef BD_ASAN
    __sanitizer_start_switch_fiber(terminating ? NULL : &from->asan_fake_stack,
                                   to->stack_bottom, to->stack_bottom_size);
#else
    (void)terminating;
#endif
#ifdef BD_TSAN
    __tsan_switch_to_fiber(to->tsan_fiber, 0);
#endif
#ifdef CO_ASM_SWITCH
    co_switch_asm(&from->sp, to->sp);
#else
    if (swapcontext(&from->uc, &to->uc) < 0) {
        abort();
    }
#endif
    /* Back in @from: co_tls may belong to another thread object now. */
    co_switch_arrived(from, co_tls_get());
}

static void co_trampoline(void)
{
    CoThreadState *s = co_tls_get();
    Coroutine *self = s->current;

    co_switch_arrived(self, s);
    self->entry(self->opaque);

    /* Done: go back to whoever entered us; they free us. */
    self->terminated = true;
    s = co_tls_get();   /* we may have moved to another thread */
    co_switch(s, self, self->caller, true);
    abort();       /* never resumed */
}

/* ---- Allocation and the pool -------------------------------------------- */

static Coroutine *co_alloc(void)
{
    long page = sysconf(_SC_PAGESIZE);
    Coroutine *co = calloc(1, sizeof(*co));
    if (!co) {
        abort();
    }
    co->stack = mmap(NULL, CO_STACK_SIZE + page, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (co->stack == MAP_FAILED) {
        error_report("cannot allocate a coroutine stack: %s", strerror(errno));
        abort();
    }
    /* A stack overflow hits the guard page instead of someone's memory. */
    if (mprotect(co->stack, page, PROT_NONE) < 0) {
        abort();
    }
    co->stack_bottom = (char *)co->stack + page;
    co->stack_size = CO_STACK_SIZE;
    co->stack_bottom_size = CO_STACK_SIZE;
#ifdef BD_TSAN
    co->tsan_fiber = __tsan_create_fiber(0);
#endif
    return co;
}

static void co_free_one(Coroutine *co)
{
    long page = sysconf(_SC_PAGESIZE);

#ifdef BD_TSAN
    __tsan_destroy_fiber(co->tsan_fiber);
#endif
    munmap(co->stack, co->stack_size + page);
    free(co);
}

static void co_release(CoThreadState *s, Coroutine *co)
{
    if (s->pool_size < CO_POOL_MAX) {
        co->pool_next = s->pool;
        s->pool = co;
        s->pool_size++;
    } else {
        co_free_one(co);
    }
}

unsigned coroutine_pool_size(void)
{
    return co_tls_get()->pool_size;
}

void coroutine_pool_drain(void)
{
    CoThreadState *s = co_tls_get();

    while (s->pool) {
        Coroutine *co = s->pool;
        s->pool = co->pool_next;
        co_free_one(co);
    }
    s->pool_size = 0;
}

/* ---- Public API ---------------------------------------------------------- */

Coroutine *coroutine_create(CoroutineEntry *entry, void *opaque)
{
    CoThreadState *s = co_state();
    Coroutine *co = s->pool;

    if (co) {
        s->pool = co->pool_next;
        s->pool_size--;
    } else {
        co = co_alloc();
    }
    co->entry = entry;
    co->opaque = opaque;
    co->caller = NULL;
    co->ctx = NULL;
    co->scheduled = NULL;
    co->terminated = false;
    co->asan_fake_stack = NULL;
    co->wakeup_head = co->wakeup_tail = co->wakeup_next = NULL;
    co_arch_init(co);
    return co;
}

void aio_coroutine_enter(AioContext *ctx, Coroutine *co)
{
    CoThreadState *s = co_state();
    Coroutine *pending = co, *pending_tail = co;

    co->wakeup_next = NULL;
    while (pending) {
        Coroutine *to = pending;
        Coroutine *from = s->current;
        const char *scheduled;

        pending = to->wakeup_next;
        if (!pending) {
            pending_tail = NULL;
        }
        to->wakeup_next = NULL;
        scheduled = atomic_read(&to->scheduled);
        if (unlikely(scheduled)) {
            fprintf(stderr, "%s: co-routine was already scheduled in '%s'\n",
                    log_get_program_name(), scheduled);
            abort();
        }
        if (unlikely(to->caller)) {
            fprintf(stderr, "%s: co-routine re-entered recursively\n",
                    log_get_program_name());
            abort();
        }
        to->caller = from;
        /* Release: a waker in another thread reads ctx, then the state. */
        atomic_store_release(&to->ctx, ctx);

        co_switch(s, from, to, false);
        s = co_tls_get();

        /* @to yielded or terminated; then run whoever it woke. */
        if (to->wakeup_head) {
            if (pending_tail) {
                pending_tail->wakeup_next = to->wakeup_head;
            } else {
                pending = to->wakeup_head;
            }
            pending_tail = to->wakeup_tail;
            to->wakeup_head = to->wakeup_tail = NULL;
        }
        if (to->terminated) {
            co_release(s, to);
        }
    }
}

void coroutine_enter(Coroutine *co)
{
    aio_coroutine_enter(current_aio_context(), co);
}

void coroutine_yield(void)
{
    CoThreadState *s = co_tls_get();
    Coroutine *self = s->current;
    Coroutine *to;

    if (unlikely(!self || self->is_leader)) {
        fprintf(stderr, "%s: co-routine is yielding to no one\n", log_get_program_name());
        abort();
    }
    to = self->caller;
    self->caller = NULL;
    co_switch(s, self, to, false);
}

Coroutine *coroutine_self(void)
{
    Coroutine *co = co_tls_get()->current;
    return co && !co->is_leader ? co : NULL;
}

bool in_coroutine(void)
{
    return coroutine_self() != NULL;
}

bool coroutine_entered(Coroutine *co)
{
    return co->caller != NULL;
}

AioContext *coroutine_get_ctx(Coroutine *co)
{
    return atomic_load_acquire(&co->ctx);
}

void coroutine_wakeup_queue_add(Coroutine *self, Coroutine *co)
{
    co->wakeup_next = NULL;
    if (self->wakeup_tail) {
        self->wakeup_tail->wakeup_next = co;
    } else {
        self->wakeup_head = co;
    }
    self->wakeup_tail = co;
}
