/*
 * qcow2-metaset.c - the set of metadata clusters behind the qcow2 overlap
 * guard (see qcow2-metaset.h).  A lookup is one multiplication and,
 * at a load factor of at most 1/2, one or two probes: it sits on the path
 * of every in-place guest write.
 */
#include <errno.h>
#include <stdlib.h>

#include "qcow2-metaset.h"

#define MIN_BITS 6

/* Fibonacci hashing: the top @bits bits of the product. */
static int64_t home(const Qcow2MetaSet *m, int64_t cluster)
{
    return (int64_t)(((uint64_t)cluster * 0x9e3779b97f4a7c15ULL) >> (64 - m->bits));
}

static int64_t mask(const Qcow2MetaSet *m)
{
    return (1LL << m->bits) - 1;
}

void qcow2_metaset_init(Qcow2MetaSet *m)
{
    m->slots = NULL;
    m->bits = 0;
    m->used = 0;
}

void qcow2_metaset_destroy(Qcow2MetaSet *m)
{
    free(m->slots);
    qcow2_metaset_init(m);
}

static void insert(Qcow2MetaSet *m, int64_t cluster)
{
    int64_t i = home(m, cluster);

    while (m->slots[i]) {
        i = (i + 1) & mask(m);
    }
    m->slots[i] = cluster;
    m->used++;
}

int qcow2_metaset_reserve(Qcow2MetaSet *m, int64_t n)
{
    Qcow2MetaSet bigger = { NULL, m->bits ? m->bits : MIN_BITS, 0 };

    /* Keep the load factor at or below 1/2. */
    while ((m->used + n) * 2 > (1LL << bigger.bits)) {
        if (bigger.bits >= 40) {
            return -ENOMEM;
        }
        bigger.bits++;
    }
    if (m->slots && bigger.bits == m->bits) {
        return 0;
    }
    bigger.slots = calloc((size_t)1 << bigger.bits, sizeof(int64_t));
    if (!bigger.slots) {
        return -ENOMEM;
    }
    for (int64_t i = 0; m->slots && i <= mask(m); i++) {
        if (m->slots[i]) {
            insert(&bigger, m->slots[i]);
        }
    }
    free(m->slots);
    *m = bigger;
    return 0;
}

int qcow2_metaset_add(Qcow2MetaSet *m, int64_t cluster)
{
    int ret = qcow2_metaset_reserve(m, 1);

    if (ret < 0) {
        return ret;
    }
    insert(m, cluster);
    return 0;
}

/* Is @k cyclically within (i, j]? */
static bool between(int64_t i, int64_t k, int64_t j)
{
    return i <= j ? i < k && k <= j : i < k || k <= j;
}

bool qcow2_metaset_remove(Qcow2MetaSet *m, int64_t cluster)
{
    int64_t i, j;

    if (!m->slots || cluster <= 0) {
        return false;
    }
    for (i = home(m, cluster); m->slots[i] != cluster; i = (i + 1) & mask(m)) {
        if (!m->slots[i]) {
            return false;
        }
    }
    /* Shift later members of the probe run back over the hole, unless
     * that would move one before its home slot. */
    for (j = (i + 1) & mask(m); m->slots[j]; j = (j + 1) & mask(m)) {
        if (!between(i, home(m, m->slots[j]), j)) {
            m->slots[i] = m->slots[j];
            i = j;
        }
    }
    m->slots[i] = 0;
    m->used--;
    return true;
}

static bool contains(const Qcow2MetaSet *m, int64_t cluster)
{
    for (int64_t i = home(m, cluster); m->slots[i]; i = (i + 1) & mask(m)) {
        if (m->slots[i] == cluster) {
            return true;
        }
    }
    return false;
}

int64_t qcow2_metaset_find(const Qcow2MetaSet *m, int64_t first, int64_t n)
{
    int64_t best = -1;

    if (!m->used || n <= 0) {
        return -1;
    }
    if (n <= (1LL << m->bits)) {
        for (int64_t c = first; c < first + n; c++) {
            if (contains(m, c)) {
                return c;
            }
        }
        return -1;
    }
    /* A range wider than the table: scanning the slots is cheaper. */
    for (int64_t i = 0; i <= mask(m); i++) {
        int64_t c = m->slots[i];
        if (c && c >= first && c < first + n && (best < 0 || c < best)) {
            best = c;
        }
    }
    return best;
}
