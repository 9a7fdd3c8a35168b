/*
 * buf-pool.c - a cache of large I/O buffers in power-of-two size classes.
 */
#include <assert.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "blockd/buf-pool.h"

#define NUM_CLASSES 16          /* 64 KiB << 15 = 2 GiB: any request size */

/* A cached buffer keeps the link to the next one in its first bytes. */
typedef struct FreeBuf {
    struct FreeBuf *next;
} FreeBuf;

struct BufPool {
    size_t max_cached;
    size_t cached;
    pthread_t owner;            /* valid while cached > 0 */
    FreeBuf *free[NUM_CLASSES];
};

/* The class of @len, and its size; -1 when too small to cache or too big. */
static int size_class(size_t len, size_t *class_size)
{
    size_t size = BUF_POOL_MIN_SIZE;

    if (len < BUF_POOL_MIN_SIZE) {
        return -1;
    }
    for (int i = 0; i < NUM_CLASSES; i++, size <<= 1) {
        if (len <= size) {
            *class_size = size;
            return i;
        }
    }
    return -1;
}

static void check_owner(BufPool *pool)
{
    assert(pool->cached == 0 || pthread_equal(pool->owner, pthread_self()));
}

BufPool *buf_pool_new(size_t max_cached)
{
    BufPool *pool = calloc(1, sizeof(*pool));

    if (pool) {
        pool->max_cached = max_cached;
    }
    return pool;
}

void buf_pool_trim(BufPool *pool)
{
    check_owner(pool);
    for (int i = 0; i < NUM_CLASSES; i++) {
        while (pool->free[i]) {
            FreeBuf *b = pool->free[i];
            pool->free[i] = b->next;
            free(b);
        }
    }
    pool->cached = 0;
}

void buf_pool_free(BufPool *pool)
{
    if (!pool) {
        return;
    }
    /* Whoever frees the pool owns it now: its thread is done with it. */
    pool->owner = pthread_self();
    buf_pool_trim(pool);
    free(pool);
}

void *buf_pool_get(BufPool *pool, size_t len)
{
    size_t size;
    int cls = size_class(len, &size);
    FreeBuf *b;

    if (cls < 0) {
        return malloc(len ? len : 1);
    }
    check_owner(pool);
    b = pool->free[cls];
    if (!b) {
        return malloc(size);
    }
    pool->free[cls] = b->next;
    pool->cached -= size;
    return b;
}

void buf_pool_put(BufPool *pool, void *buf, size_t len)
{
    size_t size;
    int cls = size_class(len, &size);
    FreeBuf *b = buf;

    if (!buf) {
        return;
    }
    if (cls < 0 || pool->cached + size > pool->max_cached) {
        free(buf);
        return;
    }
    check_owner(pool);
    if (pool->cached == 0) {
        pool->owner = pthread_self();
    }
    b->next = pool->free[cls];
    pool->free[cls] = b;
    pool->cached += size;
}

size_t buf_pool_cached(BufPool *pool)
{
    return pool->cached;
}
