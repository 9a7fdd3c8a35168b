/*
 * block-accounting.h - per-node I/O statistics (query-blockstats).
 *
 * Half: I/O (block_acct_*: any thread, lock-free); block_acct_query() is
 * global state.
 *
 * Each node counts the requests that reach it through the I/O core:
 * operations, bytes, failures, time spent, and the highest offset written.
 * Writes of zeroes count as writes (as QEMU accounts them), discards as
 * unmaps.  Counters are atomic: requests of one node may run in several
 * threads.
 */
#ifndef BLOCKD_BLOCK_ACCOUNTING_H
#define BLOCKD_BLOCK_ACCOUNTING_H

#include <json-c/json.h>
#include <stdint.h>

typedef enum BlockAcctType {
    BLOCK_ACCT_READ,
    BLOCK_ACCT_WRITE,
    BLOCK_ACCT_FLUSH,
    BLOCK_ACCT_UNMAP,
    BLOCK_ACCT__MAX,
} BlockAcctType;

/*
 * A latency histogram (block-latency-histogram-set): bins[i] counts the
 * requests whose latency in ns is below boundaries[i] (and not below the
 * previous boundary); the last bin, those at or above the last boundary.
 * Immutable once published except for the atomic bins; one replaced by
 * another stays allocated until the node goes (a request may still be
 * counting into it).
 */
typedef struct BlockLatencyHistogram {
    int nboundaries;
    uint64_t *boundaries;
    uint64_t *bins;                /* nboundaries + 1, atomic */
    struct BlockLatencyHistogram *retired;   /* older ones, main thread */
} BlockLatencyHistogram;

typedef struct BlockAcctStats {
    uint64_t bytes[BLOCK_ACCT__MAX];
    uint64_t ops[BLOCK_ACCT__MAX];
    uint64_t failed_ops[BLOCK_ACCT__MAX];
    uint64_t invalid_ops[BLOCK_ACCT__MAX];
    uint64_t total_time_ns[BLOCK_ACCT__MAX];
    uint64_t wr_highest_offset;
    BlockLatencyHistogram *histogram[BLOCK_ACCT__MAX];   /* atomic; NULL: off */
    BlockLatencyHistogram *retired;                       /* main thread */
} BlockAcctStats;

/* A request was refused before it started (bad range, no permission). */
void block_acct_invalid(BlockAcctStats *st, BlockAcctType type);
/* A request of @bytes, started at @start_ns (clock_now_ns()), ended with
 * @ret (< 0: failed). */
void block_acct_done(BlockAcctStats *st, BlockAcctType type, int64_t offset, int64_t bytes,
                     int64_t start_ns, int ret);

/*
 * Set (@boundaries, @n ascending values, n > 0) or remove (@n == 0) the
 * latency histogram of @type.  Global state.
 */
void block_acct_set_histogram(BlockAcctStats *st, BlockAcctType type,
                              const uint64_t *boundaries, int n);
/* Free the histograms (the node is going; no request runs).  Main. */
void block_acct_cleanup(BlockAcctStats *st);

/* query-blockstats' "stats" (BlockDeviceStats): a new object. */
json_object *block_acct_query(BlockAcctStats *st);

#endif /* BLOCKD_BLOCK_ACCOUNTING_H */
