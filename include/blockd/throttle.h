/*
 * throttle.h - I/O limits that the nodes of a throttle group share:
 * leaky buckets of bytes and of operations per second, as totals or per
 * direction, with bursts above the rate for a given length (QEMU's
 * ThrottleLimits).  The throttle-group object holds them (object-add,
 * qom-set of "limits" while requests run); throttle filter nodes wait on
 * them.
 *
 * Half: lookup and the drain hooks are global state; throttle_group_co_wait
 * is I/O (any thread, coroutine).
 */
#ifndef BLOCKD_THROTTLE_H
#define BLOCKD_THROTTLE_H

#include <stdbool.h>
#include <stdint.h>

#include "blockd/compiler.h"
#include "blockd/error.h"

typedef struct ThrottleGroup ThrottleGroup;

/* Register the throttle-group object type. */
void throttle_groups_init(void);

/* The group @id, with a reference for the caller; NULL and QEMU's error
 * if there is none. */
ThrottleGroup *throttle_group_get(const char *id, Error **errp);
void throttle_group_put(ThrottleGroup *tg);

/*
 * Wait until a request of @bytes in its direction fits the group's
 * limits, then count it.  Requests of one direction go in arrival order
 * across the group's nodes.  While a member node is drained nothing
 * waits (the drain must end).
 */
void coroutine_fn throttle_group_co_wait(ThrottleGroup *tg, bool is_write, uint64_t bytes);

/* A member node's drained section begins (waiters are let go) or ends. */
void throttle_group_drain_begin(ThrottleGroup *tg);
void throttle_group_drain_end(ThrottleGroup *tg);

#endif /* BLOCKD_THROTTLE_H */
