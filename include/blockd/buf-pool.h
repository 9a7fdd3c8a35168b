/*
 * buf-pool.h - a cache of large I/O buffers.
 *
 * Half: common, with one owner thread at a time.  A busy NBD connection
 * needs a buffer for every read and write; fresh large allocations come
 * from mmap() or a trimmed heap, and fault a page in every 4 KiB, which
 * costs a third of the throughput of 1 MiB requests.  The pool keeps
 * freed buffers in power-of-two size classes (64 KiB and up) for reuse,
 * up to a byte cap; smaller ones go straight to malloc.
 *
 * The pool may move to another thread while it caches nothing (a
 * connection moving into its iothread); otherwise get and put are
 * asserted to run in the thread that cached the buffers.
 */
#ifndef BLOCKD_BUF_POOL_H
#define BLOCKD_BUF_POOL_H

#include <stddef.h>

/* Buffers below this size are not cached. */
#define BUF_POOL_MIN_SIZE (64 * 1024)

typedef struct BufPool BufPool;

/* A pool that caches at most @max_cached bytes; NULL when out of memory. */
BufPool *buf_pool_new(size_t max_cached);
/* Free the pool and what it caches.  Buffers out of it stay valid (free()). */
void buf_pool_free(BufPool *pool);
/* A buffer of at least @len bytes, or NULL when out of memory. */
void *buf_pool_get(BufPool *pool, size_t len);
/* Give back @buf, obtained with buf_pool_get(@pool, @len) (NULL: nothing). */
void buf_pool_put(BufPool *pool, void *buf, size_t len);
/* Free every cached buffer (an idle owner gives its memory back). */
void buf_pool_trim(BufPool *pool);
/* Bytes cached right now (for tests). */
size_t buf_pool_cached(BufPool *pool);

#endif /* BLOCKD_BUF_POOL_H */
