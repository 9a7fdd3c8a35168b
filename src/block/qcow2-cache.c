/*
 * qcow2-cache.c - a write-back cache of one-cluster tables (L2 tables,
 * refcount blocks), indexed by host offset, least recently used out.
 *
 * Half: I/O.  Every function is called with the driver's metadata lock
 * held (qcow2.h), which serialises all use of a cache; the pin count only
 * keeps a table in place while its user yields for other I/O.
 *
 * Caches may hold tens of thousands of tables (32 MiB of 512-byte
 * tables), so lookups go through a hash of the offset and eviction takes
 * the head of an LRU list: both O(1).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/block-io.h"
#include "blockd/list.h"
#include "blockd/main-loop.h"
#include "blockd/thread.h"
#include "qcow2.h"

typedef struct Qcow2CacheEntry {
    int64_t offset;              /* 0: empty slot */
    bool dirty;
    int pins;
    int hash_next;               /* next entry in the bucket, -1 ends */
    int64_t last_use_ns;
    ListNode lru;                /* most recently used at the tail */
} Qcow2CacheEntry;

struct Qcow2Cache {
    int n;
    int64_t table_size;
    uint8_t *tables;             /* n tables, contiguous */
    Qcow2CacheEntry *e;
    int *buckets;                /* nbuckets heads, -1 empty */
    int nbuckets;
    ListNode lru;
    Qcow2CacheDepFn *dep;
};

Qcow2Cache *qcow2_cache_new(int entries, int64_t table_size, Qcow2CacheDepFn *dep)
{
    Qcow2Cache *c = calloc(1, sizeof(*c));
    void *tables = NULL;

    if (!c || !(c->e = calloc(entries, sizeof(*c->e))) ||
        posix_memalign(&tables, 4096, entries * table_size)) {
        abort();
    }
    c->n = entries;
    c->table_size = table_size;
    c->tables = tables;
    c->dep = dep;
    c->nbuckets = 1;
    while (c->nbuckets < 2 * entries) {
        c->nbuckets *= 2;
    }
    c->buckets = malloc(c->nbuckets * sizeof(int));
    if (!c->buckets) {
        abort();
    }
    memset(c->buckets, -1, c->nbuckets * sizeof(int));
    list_init(&c->lru);
    for (int i = 0; i < entries; i++) {
        c->e[i].hash_next = -1;
        list_add_tail(&c->lru, &c->e[i].lru);
    }
    return c;
}

void qcow2_cache_free(Qcow2Cache *c)
{
    if (!c) {
        return;
    }
    free(c->tables);
    free(c->buckets);
    free(c->e);
    free(c);
}

static void *table_of(Qcow2Cache *c, Qcow2CacheEntry *e)
{
    return c->tables + (e - c->e) * c->table_size;
}

static Qcow2CacheEntry *entry_of(Qcow2Cache *c, void *table)
{
    int64_t i = ((uint8_t *)table - c->tables) / c->table_size;

    assert(i >= 0 && i < c->n);
    return &c->e[i];
}

static int bucket_of(Qcow2Cache *c, int64_t offset)
{
    uint64_t h = (uint64_t)offset * 0x9e3779b97f4a7c15ULL;
    return (int)(h >> 32) & (c->nbuckets - 1);
}

static void hash_insert(Qcow2Cache *c, Qcow2CacheEntry *e)
{
    int b = bucket_of(c, e->offset);

    e->hash_next = c->buckets[b];
    c->buckets[b] = (int)(e - c->e);
}

/* Take @e out of the hash and make its slot empty. */
static void hash_remove(Qcow2Cache *c, Qcow2CacheEntry *e)
{
    int *p = &c->buckets[bucket_of(c, e->offset)];
    int idx = (int)(e - c->e);

    while (*p != idx) {
        assert(*p >= 0);
        p = &c->e[*p].hash_next;
    }
    *p = e->hash_next;
    e->hash_next = -1;
    e->offset = 0;
    e->dirty = false;
    /* Empty slots are the first candidates for reuse. */
    list_del(&e->lru);
    list_add_head(&c->lru, &e->lru);
}

static Qcow2CacheEntry *lookup(Qcow2Cache *c, int64_t offset)
{
    for (int i = c->buckets[bucket_of(c, offset)]; i >= 0; i = c->e[i].hash_next) {
        if (c->e[i].offset == offset) {
            return &c->e[i];
        }
    }
    return NULL;
}

static int coroutine_fn write_entry(BlockDriverState *bs, Qcow2Cache *c,
                                    Qcow2CacheEntry *e) GRAPH_RDLOCK
{
    int ret;

    if (!e->dirty) {
        return 0;
    }
    if (c->dep) {
        ret = c->dep(bs);
        if (ret < 0) {
            return ret;
        }
    }
    ret = qcow2_file_pwrite(bs, e->offset, c->table_size, table_of(c, e));
    if (ret == 0) {
        e->dirty = false;
    }
    return ret;
}

/* An empty slot for a new table: the least recently used unpinned one,
 * written back first if dirty. */
static int coroutine_fn find_victim(BlockDriverState *bs, Qcow2Cache *c,
                                    Qcow2CacheEntry **out) GRAPH_RDLOCK
{
    list_for_each(n, &c->lru) {
        Qcow2CacheEntry *e = list_entry(n, Qcow2CacheEntry, lru);
        int ret;

        if (e->pins) {
            continue;
        }
        if (e->offset) {
            ret = write_entry(bs, c, e);
            if (ret < 0) {
                return ret;
            }
            hash_remove(c, e);
        }
        *out = e;
        return 0;
    }
    return -ENOSPC;              /* every table pinned: cannot happen with >= 4 slots */
}

static void *pin(Qcow2Cache *c, Qcow2CacheEntry *e)
{
    e->pins++;
    e->last_use_ns = clock_now_ns();
    list_del(&e->lru);
    list_add_tail(&c->lru, &e->lru);
    return table_of(c, e);
}

static int coroutine_fn do_get(BlockDriverState *bs, Qcow2Cache *c, int64_t offset,
                               void **table, bool read) GRAPH_RDLOCK
{
    Qcow2CacheEntry *e = lookup(c, offset);
    int ret;

    assert(offset > 0);
    if (e) {
        *table = pin(c, e);
        return 0;
    }
    ret = find_victim(bs, c, &e);
    if (ret < 0) {
        return ret;
    }
    if (read) {
        ret = qcow2_file_pread(bs, offset, c->table_size, table_of(c, e));
        if (ret < 0) {
            return ret;
        }
    } else {
        memset(table_of(c, e), 0, c->table_size);
    }
    e->offset = offset;
    e->dirty = false;
    hash_insert(c, e);
    *table = pin(c, e);
    return 0;
}

int coroutine_fn qcow2_cache_get(BlockDriverState *bs, Qcow2Cache *c, int64_t offset,
                                 void **table)
{
    return do_get(bs, c, offset, table, true);
}

int coroutine_fn qcow2_cache_get_empty(BlockDriverState *bs, Qcow2Cache *c, int64_t offset,
                                       void **table)
{
    return do_get(bs, c, offset, table, false);
}

void qcow2_cache_put(Qcow2Cache *c, void *table)
{
    Qcow2CacheEntry *e = entry_of(c, table);
    assert(e->pins > 0);
    e->pins--;
}

void qcow2_cache_mark_dirty(Qcow2Cache *c, void *table)
{
    entry_of(c, table)->dirty = true;
}

bool qcow2_cache_has_dirty(Qcow2Cache *c)
{
    for (int i = 0; i < c->n; i++) {
        if (c->e[i].offset && c->e[i].dirty) {
            return true;
        }
    }
    return false;
}

int coroutine_fn qcow2_cache_writeback(BlockDriverState *bs, Qcow2Cache *c, bool *wrote)
{
    for (int i = 0; i < c->n; i++) {
        Qcow2CacheEntry *e = &c->e[i];
        if (e->offset && e->dirty) {
            int ret = write_entry(bs, c, e);
            if (ret < 0) {
                return ret;
            }
            if (wrote) {
                *wrote = true;
            }
        }
    }
    return 0;
}

void qcow2_cache_forget(Qcow2Cache *c, int64_t offset)
{
    Qcow2CacheEntry *e = lookup(c, offset);

    if (e) {
        assert(!e->pins);
        hash_remove(c, e);
    }
}

void qcow2_cache_clean(Qcow2Cache *c, int64_t age_ns)
{
    int64_t now = clock_now_ns();

    for (int i = 0; i < c->n; i++) {
        Qcow2CacheEntry *e = &c->e[i];
        if (e->offset && !e->dirty && !e->pins && now - e->last_use_ns >= age_ns) {
            hash_remove(c, e);
        }
    }
}
