/*
 * ratelimit.h - bytes-per-second limiting in time slices.
 *
 * Half: common (any thread; the limit has its own lock).  The user
 * reports bytes done with ratelimit_account() and asks how long to wait
 * with ratelimit_delay_ns(); both are cheap.
 */
#ifndef BLOCKD_RATELIMIT_H
#define BLOCKD_RATELIMIT_H

#include <stdint.h>
#include "blockd/thread.h"

typedef struct RateLimit {
    BdMutex lock;
    int64_t slice_ns TSA_FIELD_GUARDED_BY(lock);
    uint64_t slice_quota TSA_FIELD_GUARDED_BY(lock);     /* 0: no limit */
    int64_t slice_start_ns TSA_FIELD_GUARDED_BY(lock);
    int64_t slice_end_ns TSA_FIELD_GUARDED_BY(lock);
    uint64_t dispatched TSA_FIELD_GUARDED_BY(lock);
} RateLimit;

void ratelimit_init(RateLimit *rl);
void ratelimit_destroy(RateLimit *rl);
/* @speed bytes per second (0: unlimited) over slices of @slice_ns. */
void ratelimit_set_speed(RateLimit *rl, uint64_t speed, int64_t slice_ns);
/* Record @bytes as done now. */
void ratelimit_account(RateLimit *rl, uint64_t bytes);
/* How long to wait before doing more (0: go on). */
int64_t ratelimit_delay_ns(RateLimit *rl);

#endif /* BLOCKD_RATELIMIT_H */
