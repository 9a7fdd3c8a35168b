/*
 * qcow2-cache.c - a small write-back cache of one-cluster tables (L2
 * tables, refcount blocks), indexed by host offset, LRU replacement.
 *
 * Half: I/O.  Every function is called with the driver's metadata lock
 * held (qcow2.h), which serialises all use of a cache; the pin count only
 * keeps a table in place while its user yields for other I/O.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/block-io.h"
#include "blockd/main-loop.h"
#include "blockd/thread.h"
#include "qcow2.h"

typedef struct Qcow2CacheEntry {
    int64_t offset;              /* 0: empty slot */
    void *table;
    bool dirty;
    int pins;
    uint64_t lru;                /* higher: used more recently */
    int64_t last_use_ns;
} Qcow2CacheEntry;

struct Qcow2Cache {
    int n;
    int64_t table_size;
    Qcow2CacheEntry *e;
    uint64_t lru_clock;
    Qcow2CacheDepFn *dep;
};

Qcow2Cache *qcow2_cache_new(int entries, int64_t table_size, Qcow2CacheDepFn *dep)
{
    Qcow2Cache *c = calloc(1, sizeof(*c));

    if (!c || !(c->e = calloc(entries, sizeof(*c->e)))) {
        abort();
    }
    c->n = entries;
    c->table_size = table_size;
    c->dep = dep;
    for (int i = 0; i < entries; i++) {
        if (posix_memalign(&c->e[i].table, 4096, table_size)) {
            abort();
        }
    }
    return c;
}

void qcow2_cache_free(Qcow2Cache *c)
{
    if (!c) {
        return;
    }
    for (int i = 0; i < c->n; i++) {
        free(c->e[i].table);
    }
    free(c->e);
    free(c);
}

static Qcow2CacheEntry *entry_of(Qcow2Cache *c, void *table)
{
    for (int i = 0; i < c->n; i++) {
        if (c->e[i].table == table) {
            return &c->e[i];
        }
    }
    abort();
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
    ret = qcow2_file_pwrite(bs, e->offset, c->table_size, e->table);
    if (ret == 0) {
        e->dirty = false;
    }
    return ret;
}

/* A slot for a new table: an empty one, else the least recently used
 * unpinned one (written back first if dirty). */
static int coroutine_fn find_victim(BlockDriverState *bs, Qcow2Cache *c,
                                    Qcow2CacheEntry **out) GRAPH_RDLOCK
{
    Qcow2CacheEntry *best = NULL;
    int ret;

    for (int i = 0; i < c->n; i++) {
        Qcow2CacheEntry *e = &c->e[i];
        if (e->pins) {
            continue;
        }
        if (!e->offset) {
            best = e;
            break;
        }
        if (!best || e->lru < best->lru) {
            best = e;
        }
    }
    if (!best) {
        return -ENOSPC;          /* every table pinned: cannot happen with >= 4 slots */
    }
    ret = write_entry(bs, c, best);
    if (ret < 0) {
        return ret;
    }
    best->offset = 0;
    *out = best;
    return 0;
}

static Qcow2CacheEntry *lookup(Qcow2Cache *c, int64_t offset)
{
    for (int i = 0; i < c->n; i++) {
        if (c->e[i].offset == offset) {
            return &c->e[i];
        }
    }
    return NULL;
}

static void *pin(Qcow2Cache *c, Qcow2CacheEntry *e)
{
    e->pins++;
    e->lru = ++c->lru_clock;
    e->last_use_ns = clock_now_ns();
    return e->table;
}

static int coroutine_fn do_get(BlockDriverState *bs, Qcow2Cache *c, int64_t offset,
                               void **table, bool read) GRAPH_RDLOCK
{
    Qcow2CacheEntry *e = lookup(c, offset);
    int ret;

    if (e) {
        *table = pin(c, e);
        return 0;
    }
    ret = find_victim(bs, c, &e);
    if (ret < 0) {
        return ret;
    }
    if (read) {
        ret = qcow2_file_pread(bs, offset, c->table_size, e->table);
        if (ret < 0) {
            return ret;
        }
    } else {
        memset(e->table, 0, c->table_size);
    }
    e->offset = offset;
    e->dirty = false;
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
        e->offset = 0;
        e->dirty = false;
    }
}

void qcow2_cache_clean(Qcow2Cache *c, int64_t age_ns)
{
    int64_t now = clock_now_ns();

    for (int i = 0; i < c->n; i++) {
        Qcow2CacheEntry *e = &c->e[i];
        if (e->offset && !e->dirty && !e->pins && now - e->last_use_ns >= age_ns) {
            e->offset = 0;
        }
    }
}
