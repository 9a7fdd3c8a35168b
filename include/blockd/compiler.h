/*
 * compiler.h - compiler helpers and clang thread-safety annotations.
 *
 * Common code: usable from any thread.
 *
 * The TSA_* macros wrap clang's thread-safety attributes so that every
 * lock-protected field and every function that needs a lock can say so;
 * the clang build runs -Wthread-safety and proves it.  On other compilers
 * they expand to nothing.
 */
#ifndef BLOCKD_COMPILER_H
#define BLOCKD_COMPILER_H

#include <stddef.h>

#define likely(x)   __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

#define container_of(ptr, type, member) \
    ((type *)((char *)(ptr) - offsetof(type, member)))

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#define BD_NORETURN      __attribute__((noreturn))
#define BD_PRINTF(f, a)  __attribute__((format(printf, f, a)))
#define BD_UNUSED        __attribute__((unused))
#define BD_WARN_UNUSED   __attribute__((warn_unused_result))

/*
 * Function markers (documentation, no run-time cost):
 *   coroutine_fn       may only be called from a coroutine;
 *   no_coroutine_fn    must never be called from a coroutine;
 *   coroutine_mixed_fn callable from both, checks in_coroutine() itself.
 */
#define coroutine_fn
#define no_coroutine_fn
#define coroutine_mixed_fn

#if defined(__clang__)
#define TSA_ATTR(x) __attribute__((x))
#else
#define TSA_ATTR(x)
#endif

#define TSA_CAPABILITY(x)        TSA_ATTR(capability(x))
/* For globals (and locals): guarded by the named lock. */
#define TSA_GUARDED_BY(x)        TSA_ATTR(guarded_by(x))
#define TSA_PT_GUARDED_BY(x)     TSA_ATTR(pt_guarded_by(x))
#define TSA_REQUIRES(...)        TSA_ATTR(requires_capability(__VA_ARGS__))
#define TSA_REQUIRES_SHARED(...) TSA_ATTR(requires_shared_capability(__VA_ARGS__))
#define TSA_ACQUIRE(...)         TSA_ATTR(acquire_capability(__VA_ARGS__))
#define TSA_ACQUIRE_SHARED(...)  TSA_ATTR(acquire_shared_capability(__VA_ARGS__))
#define TSA_RELEASE(...)         TSA_ATTR(release_capability(__VA_ARGS__))
#define TSA_RELEASE_SHARED(...)  TSA_ATTR(release_shared_capability(__VA_ARGS__))
#define TSA_TRY_ACQUIRE(...)     TSA_ATTR(try_acquire_capability(__VA_ARGS__))
#define TSA_EXCLUDES(...)        TSA_ATTR(locks_excluded(__VA_ARGS__))
#define TSA_ASSERT(...)          TSA_ATTR(assert_capability(__VA_ARGS__))
#define TSA_ASSERT_SHARED(...)   TSA_ATTR(assert_shared_capability(__VA_ARGS__))
#define TSA_RETURN_CAPABILITY(x) TSA_ATTR(lock_returned(x))
#define TSA_NO_TSA               TSA_ATTR(no_thread_safety_analysis)

/*
 * For struct fields guarded by a lock that is another field of the same
 * struct (or reached through one).  C compilers before clang 19 cannot
 * name sibling fields in attributes; the build defines BLOCKD_TSA_FIELDS
 * when the compiler can (clang >= 19 with late-parsed attributes).  In C
 * the analysis checks that a lock of that field name is held, not which
 * instance of the struct it belongs to.
 */
#if defined(__clang__) && defined(BLOCKD_TSA_FIELDS)
#define TSA_FIELD_GUARDED_BY(x)  TSA_ATTR(guarded_by(&x))
#else
#define TSA_FIELD_GUARDED_BY(x)
#endif

/* Sanitizer detection, for the coroutine fiber-switch announcements. */
#if defined(__SANITIZE_ADDRESS__)
#define BD_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define BD_ASAN 1
#endif
#endif

#if defined(__SANITIZE_THREAD__)
#define BD_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define BD_TSAN 1
#endif
#endif

#endif /* BLOCKD_COMPILER_H */
