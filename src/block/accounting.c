/*
 * accounting.c - per-node I/O statistics (see block-accounting.h).
 */
#include <stdio.h>

#include "blockd/atomic.h"
#include "blockd/block-accounting.h"
#include "blockd/main-loop.h"
#include "blockd/thread.h"

void block_acct_invalid(BlockAcctStats *st, BlockAcctType type)
{
    atomic_fetch_add(&st->invalid_ops[type], 1);
}

void block_acct_done(BlockAcctStats *st, BlockAcctType type, int64_t offset, int64_t bytes,
                     int64_t start_ns, int ret)
{
    int64_t now = clock_now_ns();

    if (ret < 0) {
        atomic_fetch_add(&st->failed_ops[type], 1);
    } else {
        atomic_fetch_add(&st->ops[type], 1);
        atomic_fetch_add(&st->bytes[type], (uint64_t)bytes);
    }
    atomic_fetch_add(&st->total_time_ns[type], (uint64_t)(now - start_ns));
    if (type == BLOCK_ACCT_WRITE && ret >= 0) {
        uint64_t end = (uint64_t)(offset + bytes);
        uint64_t old = atomic_read(&st->wr_highest_offset);
        while (end > old) {
            uint64_t seen = atomic_cmpxchg(&st->wr_highest_offset, old, end);
            if (seen == old) {
                break;
            }
            old = seen;
        }
    }
}

json_object *block_acct_query(BlockAcctStats *st)
{
    static const char *const prefix[BLOCK_ACCT__MAX] = { "rd", "wr", "flush", "unmap" };
    json_object *o = json_object_new_object();
    char key[64];

    GLOBAL_STATE_CODE();
    for (int t = 0; t < BLOCK_ACCT__MAX; t++) {
#define PUT(fmt, value) do { \
            snprintf(key, sizeof(key), fmt, prefix[t]); \
            json_object_object_add(o, key, json_object_new_int64((int64_t)(value))); \
        } while (0)
        if (t != BLOCK_ACCT_FLUSH) {
            PUT("%s_bytes", atomic_read(&st->bytes[t]));
            PUT("%s_merged", 0);            /* requests are never merged */
        }
        PUT("%s_operations", atomic_read(&st->ops[t]));
        PUT("%s_total_time_ns", atomic_read(&st->total_time_ns[t]));
        PUT("failed_%s_operations", atomic_read(&st->failed_ops[t]));
        PUT("invalid_%s_operations", atomic_read(&st->invalid_ops[t]));
#undef PUT
    }
    json_object_object_add(o, "wr_highest_offset",
                           json_object_new_int64(atomic_read(&st->wr_highest_offset)));
    json_object_object_add(o, "account_invalid", json_object_new_boolean(true));
    json_object_object_add(o, "account_failed", json_object_new_boolean(true));
    json_object_object_add(o, "timed_stats", json_object_new_array());
    return o;
}
