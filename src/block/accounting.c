/*
 * accounting.c - per-node I/O statistics (see block-accounting.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/atomic.h"
#include "blockd/block-accounting.h"
#include "blockd/main-loop.h"
#include "blockd/thread.h"

void block_acct_invalid(BlockAcctStats *st, BlockAcctType type)
{
    atomic_fetch_add(&st->invalid_ops[type], 1);
}

static void count_latency(BlockLatencyHistogram *h, uint64_t ns)
{
    int lo = 0, hi;

    if (!h) {
        return;
    }
    /* The first boundary above @ns names the bin. */
    hi = h->nboundaries;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (ns < h->boundaries[mid]) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    atomic_fetch_add(&h->bins[lo], 1);
}

void block_acct_set_histogram(BlockAcctStats *st, BlockAcctType type,
                              const uint64_t *boundaries, int n)
{
    BlockLatencyHistogram *h = NULL, *old;

    GLOBAL_STATE_CODE();
    if (n > 0) {
        h = calloc(1, sizeof(*h));
        if (!h || !(h->boundaries = malloc(n * sizeof(uint64_t))) ||
            !(h->bins = calloc(n + 1, sizeof(uint64_t)))) {
            abort();
        }
        memcpy(h->boundaries, boundaries, n * sizeof(uint64_t));
        h->nboundaries = n;
    }
    old = st->histogram[type];
    atomic_store_release(&st->histogram[type], h);
    if (old) {
        old->retired = st->retired;
        st->retired = old;
    }
}

static void histogram_free(BlockLatencyHistogram *h)
{
    if (h) {
        free(h->boundaries);
        free(h->bins);
        free(h);
    }
}

void block_acct_cleanup(BlockAcctStats *st)
{
    GLOBAL_STATE_CODE();
    for (int t = 0; t < BLOCK_ACCT__MAX; t++) {
        histogram_free(st->histogram[t]);
        st->histogram[t] = NULL;
    }
    while (st->retired) {
        BlockLatencyHistogram *h = st->retired;
        st->retired = h->retired;
        histogram_free(h);
    }
}

static json_object *histogram_query(BlockLatencyHistogram *h)
{
    json_object *o = json_object_new_object();
    json_object *b = json_object_new_array(), *bins = json_object_new_array();

    for (int i = 0; i < h->nboundaries; i++) {
        json_object_array_add(b, json_object_new_uint64(h->boundaries[i]));
    }
    for (int i = 0; i <= h->nboundaries; i++) {
        json_object_array_add(bins, json_object_new_uint64(atomic_read(&h->bins[i])));
    }
    json_object_object_add(o, "boundaries", b);
    json_object_object_add(o, "bins", bins);
    return o;
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
    count_latency(atomic_load_acquire(&st->histogram[type]), (uint64_t)(now - start_ns));
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
    for (int t = 0; t < BLOCK_ACCT__MAX; t++) {
        static const char *const names[BLOCK_ACCT__MAX] = {
            "rd_latency_histogram", "wr_latency_histogram",
            "flush_latency_histogram", NULL,
        };
        if (names[t] && st->histogram[t]) {
            json_object_object_add(o, names[t], histogram_query(st->histogram[t]));
        }
    }
    return o;
}
