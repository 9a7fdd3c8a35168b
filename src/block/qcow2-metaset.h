/*
 * qcow2-metaset.h - a set of host cluster indexes (the active L2 tables
 * and the refcount blocks of a qcow2 image), for the overlap guard.
 *
 * Open addressing with linear probing and backward-shift deletion; a
 * cluster may be entered more than once (a corrupt L1 table may name the
 * same L2 table twice) and is then removed once per entry.  Index 0 (the
 * image header) is never a member and marks empty slots.  No locking: the
 * owner serialises access (qcow2: s->lock).
 */
#ifndef BLOCKD_QCOW2_METASET_H
#define BLOCKD_QCOW2_METASET_H

#include <stdbool.h>
#include <stdint.h>

typedef struct Qcow2MetaSet {
    int64_t *slots;          /* cluster indexes; 0 = empty */
    int bits;                /* log2 of the number of slots (0: none yet) */
    int64_t used;            /* entries */
} Qcow2MetaSet;

void qcow2_metaset_init(Qcow2MetaSet *m);
void qcow2_metaset_destroy(Qcow2MetaSet *m);
/* Make room so that the next @n additions cannot fail.  0 or -ENOMEM. */
int qcow2_metaset_reserve(Qcow2MetaSet *m, int64_t n);
/* Enter @cluster (> 0).  0 or -ENOMEM (never after a reserve covering it). */
int qcow2_metaset_add(Qcow2MetaSet *m, int64_t cluster);
/* Remove one entry of @cluster; false if it had none. */
bool qcow2_metaset_remove(Qcow2MetaSet *m, int64_t cluster);
/* The lowest member in clusters [first, first + n), or -1. */
int64_t qcow2_metaset_find(const Qcow2MetaSet *m, int64_t first, int64_t n);

#endif /* BLOCKD_QCOW2_METASET_H */
