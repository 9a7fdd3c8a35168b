/*
 * atomic.h - thin wrappers over the compiler's __atomic builtins.
 *
 * Common code.  Plain fields that are shared between threads are accessed
 * only through these, which ThreadSanitizer understands.  The _mb variants
 * are sequentially consistent and double as full barriers.
 */
#ifndef BLOCKD_ATOMIC_H
#define BLOCKD_ATOMIC_H

#define atomic_read(p)           __atomic_load_n(p, __ATOMIC_RELAXED)
#define atomic_set(p, v)         __atomic_store_n(p, v, __ATOMIC_RELAXED)
#define atomic_load_acquire(p)   __atomic_load_n(p, __ATOMIC_ACQUIRE)
#define atomic_store_release(p, v) __atomic_store_n(p, v, __ATOMIC_RELEASE)
#define atomic_read_mb(p)        __atomic_load_n(p, __ATOMIC_SEQ_CST)
#define atomic_set_mb(p, v)      __atomic_store_n(p, v, __ATOMIC_SEQ_CST)

#define atomic_xchg(p, v)        __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST)
#define atomic_fetch_add(p, n)   __atomic_fetch_add(p, n, __ATOMIC_SEQ_CST)
#define atomic_fetch_sub(p, n)   __atomic_fetch_sub(p, n, __ATOMIC_SEQ_CST)
#define atomic_fetch_or(p, n)    __atomic_fetch_or(p, n, __ATOMIC_SEQ_CST)
#define atomic_fetch_and(p, n)   __atomic_fetch_and(p, n, __ATOMIC_SEQ_CST)
#define atomic_inc(p)            ((void)atomic_fetch_add(p, 1))
#define atomic_dec(p)            ((void)atomic_fetch_sub(p, 1))

/* Returns the old value; stores @new only if the old value was @old. */
#define atomic_cmpxchg(p, old, new) ({                                     \
    __typeof__(*(p)) cmpxchg_old_ = (old);                                 \
    (void)__atomic_compare_exchange_n(p, &cmpxchg_old_, new, false,        \
                                      __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST); \
    cmpxchg_old_; })

#define smp_mb()   __atomic_thread_fence(__ATOMIC_SEQ_CST)
#define smp_wmb()  __atomic_thread_fence(__ATOMIC_RELEASE)
#define smp_rmb()  __atomic_thread_fence(__ATOMIC_ACQUIRE)
#define barrier()  __asm__ __volatile__("" ::: "memory")

/* Hint to the CPU that we are spinning. */
#if defined(__x86_64__) || defined(__i386__)
#define cpu_relax() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield" ::: "memory")
#else
#define cpu_relax() barrier()
#endif

#endif /* BLOCKD_ATOMIC_H */
