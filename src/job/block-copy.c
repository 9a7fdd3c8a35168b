/*
 * block-copy.c - the copy engine of mirror and backup (see block-copy.h).
 *
 * Ranges in work are "claims" in a list under s->lock: a background task,
 * a copy done for a guest write, or a mirrored guest write.  A new claim
 * never overlaps an existing one; whoever needs an overlapping range
 * waits on that claim's queue.  Background tasks run as coroutines in the
 * job's context; the job coroutine that launched them waits for them
 * there, so only claims and counters need the lock.
 */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/block-copy.h"
#include "blockd/block-io.h"
#include "blockd/coroutine.h"
#include "blockd/iov.h"
#include "blockd/main-loop.h"

typedef struct Claim {
    int64_t offset;
    int64_t bytes;
    CoQueue waiters;        /* coroutines waiting for this range */
    ListNode link;
} Claim;

struct BlockCopyState {
    BdrvChild *source;                  /* immutable */
    BdrvChild *target;
    BdrvDirtyBitmap *bitmap;
    BlockJob *job;
    BlockCopyOptions opts;
    int64_t granularity;

    BdMutex lock;
    ListNode claims TSA_FIELD_GUARDED_BY(lock);
    int64_t claimed_bytes TSA_FIELD_GUARDED_BY(lock);
    CoQueue released;                   /* waiting for any claim to end */
    Claim hold;                         /* block_copy_hold_all() */
    bool holding TSA_FIELD_GUARDED_BY(lock);
    /* Reused chunk buffers: fresh ones cost a page fault per 4 KiB. */
    void **free_bufs TSA_FIELD_GUARDED_BY(lock);
    int nfree_bufs TSA_FIELD_GUARDED_BY(lock);

    /* Background tasks: only the job's coroutine and its tasks touch
     * these, all in the job's thread. */
    int tasks;
    int64_t task_bytes;
    Coroutine *launcher_waiting;
    int error;
    bool error_is_read;
};

BlockCopyState *block_copy_state_new(BdrvChild *source, BdrvChild *target,
                                     BdrvDirtyBitmap *bitmap, BlockJob *job,
                                     const BlockCopyOptions *opts)
{
    BlockCopyState *s = calloc(1, sizeof(*s));

    if (!s) {
        abort();
    }
    s->source = source;
    s->target = target;
    s->bitmap = bitmap;
    s->job = job;
    s->opts = *opts;
    s->granularity = dirty_bitmap_granularity(bitmap);
    if (s->opts.chunk_size < s->granularity) {
        s->opts.chunk_size = s->granularity;
    }
    s->opts.chunk_size -= s->opts.chunk_size % s->granularity;
    if (s->opts.max_tasks < 1) {
        s->opts.max_tasks = 1;
    }
    if (s->opts.max_bytes < s->opts.chunk_size) {
        s->opts.max_bytes = s->opts.chunk_size;
    }
    bd_mutex_init(&s->lock);
    bd_mutex_lock(&s->lock);
    list_init(&s->claims);
    s->claimed_bytes = 0;
    co_queue_init(&s->released);
    s->free_bufs = calloc(s->opts.max_tasks, sizeof(void *));
    s->nfree_bufs = 0;
    if (!s->free_bufs) {
        abort();
    }
    bd_mutex_unlock(&s->lock);
    return s;
}

void block_copy_state_free(BlockCopyState *s)
{
    if (!s) {
        return;
    }
    bd_mutex_lock(&s->lock);
    if (s->holding) {                   /* the job never ran */
        s->holding = false;
        list_del(&s->hold.link);
        s->claimed_bytes -= s->hold.bytes;
    }
    assert(list_empty(&s->claims));
    while (s->nfree_bufs > 0) {
        free(s->free_bufs[--s->nfree_bufs]);
    }
    free(s->free_bufs);
    bd_mutex_unlock(&s->lock);
    assert(s->tasks == 0);
    bd_mutex_destroy(&s->lock);
    free(s);
}

int64_t block_copy_task_bytes(BlockCopyState *s)
{
    return s->task_bytes;
}

int64_t block_copy_in_flight_bytes(BlockCopyState *s)
{
    int64_t n;

    bd_mutex_lock(&s->lock);
    n = s->claimed_bytes;
    bd_mutex_unlock(&s->lock);
    return n;
}

/* ---- Claims --------------------------------------------------------------------- */

static Claim *find_overlap(BlockCopyState *s, int64_t offset, int64_t bytes)
    TSA_REQUIRES(s->lock)
{
    list_for_each(n, &s->claims) {
        Claim *c = list_entry(n, Claim, link);
        if (c->offset < offset + bytes && offset < c->offset + c->bytes) {
            return c;
        }
    }
    return NULL;
}

/* The start of the first claim beginning after @offset, or @limit. */
static int64_t next_claim_start(BlockCopyState *s, int64_t offset, int64_t limit)
    TSA_REQUIRES(s->lock)
{
    list_for_each(n, &s->claims) {
        Claim *c = list_entry(n, Claim, link);
        if (c->offset >= offset && c->offset < limit) {
            limit = c->offset;
        }
    }
    return limit;
}

static void claim_add(BlockCopyState *s, Claim *c, int64_t offset, int64_t bytes)
    TSA_REQUIRES(s->lock)
{
    c->offset = offset;
    c->bytes = bytes;
    co_queue_init(&c->waiters);
    list_add_tail(&s->claims, &c->link);
    s->claimed_bytes += bytes;
}

static void claim_release(BlockCopyState *s, Claim *c)
{
    bd_mutex_lock(&s->lock);
    list_del(&c->link);
    s->claimed_bytes -= c->bytes;
    co_queue_restart_all_bdmutex(&c->waiters, &s->lock);
    co_queue_restart_all_bdmutex(&s->released, &s->lock);
    bd_mutex_unlock(&s->lock);
}

void coroutine_fn block_copy_wait_claims(BlockCopyState *s)
{
    bd_mutex_lock(&s->lock);
    if (!list_empty(&s->claims)) {
        co_queue_wait_bdmutex(&s->released, &s->lock);
    }
    bd_mutex_unlock(&s->lock);
}

/* Claim [offset, offset+bytes) exactly, waiting for whatever overlaps. */
static void coroutine_fn claim_range_wait(BlockCopyState *s, Claim *c,
                                          int64_t offset, int64_t bytes)
{
    Claim *other;

    bd_mutex_lock(&s->lock);
    while ((other = find_overlap(s, offset, bytes))) {
        co_queue_wait_bdmutex(&other->waiters, &s->lock);
    }
    claim_add(s, c, offset, bytes);
    bd_mutex_unlock(&s->lock);
}

/*
 * Claim the first dirty area at or after @offset that nobody holds (at
 * most @max bytes) and clear its bits.  Returns false if none is left
 * before @end.
 */
static bool claim_next_dirty(BlockCopyState *s, Claim *c, int64_t offset, int64_t end,
                             int64_t max)
{
    int64_t aoff, abytes;
    Claim *other;

    bd_mutex_lock(&s->lock);
    while (dirty_bitmap_next_area(s->bitmap, offset, end, max, &aoff, &abytes)) {
        other = find_overlap(s, aoff, s->granularity);
        if (other) {
            offset = other->offset + other->bytes;   /* theirs; look further */
            continue;
        }
        abytes = next_claim_start(s, aoff, aoff + abytes) - aoff;
        dirty_bitmap_clear(s->bitmap, aoff, abytes);
        claim_add(s, c, aoff, abytes);
        bd_mutex_unlock(&s->lock);
        return true;
    }
    bd_mutex_unlock(&s->lock);
    return false;
}

BlockCopyLock *coroutine_fn block_copy_lock(BlockCopyState *s, int64_t offset, int64_t bytes)
{
    int64_t g = s->granularity, start = offset / g * g;
    int64_t end = (offset + bytes + g - 1) / g * g;
    Claim *c = malloc(sizeof(*c));

    if (!c) {
        abort();
    }
    claim_range_wait(s, c, start, end - start);
    return (BlockCopyLock *)c;
}

void coroutine_fn block_copy_unlock(BlockCopyState *s, BlockCopyLock *lock)
{
    claim_release(s, (Claim *)lock);
    free(lock);
}

int64_t block_copy_granularity(BlockCopyState *s)
{
    return s->granularity;
}

void block_copy_hold_all(BlockCopyState *s)
{
    GLOBAL_STATE_CODE();
    bd_mutex_lock(&s->lock);
    assert(!s->holding && list_empty(&s->claims));
    claim_add(s, &s->hold, 0, dirty_bitmap_size(s->bitmap));
    s->holding = true;
    bd_mutex_unlock(&s->lock);
}

void coroutine_fn block_copy_release_all(BlockCopyState *s)
{
    bool holding;

    bd_mutex_lock(&s->lock);
    holding = s->holding;
    s->holding = false;
    bd_mutex_unlock(&s->lock);
    if (holding) {
        claim_release(s, &s->hold);
    }
}

/* ---- Copying one claimed range ---------------------------------------------- */

/* A buffer of chunk_size bytes (every copy is at most that long). */
static void *buffer_get(BlockCopyState *s) GRAPH_RDLOCK
{
    size_t align = s->source->bs->bl.min_mem_alignment;
    void *buf = NULL;

    bd_mutex_lock(&s->lock);
    if (s->nfree_bufs > 0) {
        buf = s->free_bufs[--s->nfree_bufs];
    }
    bd_mutex_unlock(&s->lock);
    if (buf) {
        return buf;
    }

    if (s->target->bs->bl.min_mem_alignment > align) {
        align = s->target->bs->bl.min_mem_alignment;
    }
    if (align < 4096) {
        align = 4096;
    }
    if (posix_memalign(&buf, align, s->opts.chunk_size) != 0) {
        return NULL;
    }
    return buf;
}

static void buffer_put(BlockCopyState *s, void *buf)
{
    if (!buf) {
        return;
    }
    bd_mutex_lock(&s->lock);
    if (s->nfree_bufs < s->opts.max_tasks) {
        s->free_bufs[s->nfree_bufs++] = buf;
        buf = NULL;
    }
    bd_mutex_unlock(&s->lock);
    free(buf);
}

/* Where [offset, offset+*pnum) of the source is known to read as zeroes
 * without reading it (shortening *pnum to one status). */
static bool coroutine_fn source_reads_zero(BlockCopyState *s, int64_t offset,
                                           int64_t *pnum) GRAPH_RDLOCK
{
    int64_t bytes = *pnum;
    int st;

    if (s->opts.method != BLOCK_COPY_BY_STATUS) {
        return false;
    }
    st = bdrv_co_block_status(s->source->bs, offset, bytes, pnum);
    if (st < 0 || *pnum <= 0 || *pnum > bytes) {
        *pnum = bytes;
        return false;
    }
    return st & BDRV_BLOCK_ZERO;
}

/* Copy [offset, offset+bytes) by the method of the options. */
static int coroutine_fn copy_range_now(BlockCopyState *s, int64_t offset, int64_t bytes,
                                       bool *error_is_read) GRAPH_RDLOCK
{
    int unchanged = s->opts.unchanged ? BDRV_REQ_WRITE_UNCHANGED : 0;
    int zero_flags = (s->opts.no_unmap ? 0 : BDRV_REQ_MAY_UNMAP) | unchanged;
    void *buf = NULL;
    int ret = 0;

    while (bytes > 0 && ret == 0) {
        int64_t pnum = bytes, start = offset;
        bool zero = source_reads_zero(s, offset, &pnum);

        if (s->opts.compress && pnum < bytes) {
            /* Compressed writes take whole granules: a run that ends
             * inside one is cut there, or read as data if that is all. */
            int64_t whole = pnum / s->granularity * s->granularity;
            zero = zero && whole > 0;
            pnum = whole > 0 ? whole : (s->granularity < bytes ? s->granularity : bytes);
        }
        if (zero) {
            ret = bdrv_co_pwrite_zeroes(s->target, offset, pnum, zero_flags);
            *error_is_read = false;
        } else {
            IOVector v;

            if (!buf && !(buf = buffer_get(s))) {
                ret = -ENOMEM;
                *error_is_read = true;
                break;
            }
            iovector_init_buf(&v, buf, pnum);
            ret = bdrv_co_preadv(s->source, offset, pnum, v.iov, v.niov, 0);
            *error_is_read = true;
            if (ret < 0) {
                break;
            }
            *error_is_read = false;
            if (s->opts.method == BLOCK_COPY_ZERO_DETECT &&
                iov_is_zero(v.iov, v.niov, 0, pnum)) {
                ret = bdrv_co_pwrite_zeroes(s->target, offset, pnum, unchanged);
            } else {
                ret = bdrv_co_pwritev(s->target, offset, pnum, v.iov, v.niov, unchanged |
                                      (s->opts.compress ? BDRV_REQ_WRITE_COMPRESSED : 0));
            }
        }
        if (ret == 0 && s->opts.discard_source) {
            /* Advisory: a source that keeps the data is still correct. */
            bdrv_co_pdiscard(s->source, start, pnum);
        }
        offset += pnum;
        bytes -= pnum;
    }
    buffer_put(s, buf);
    return ret < 0 ? ret : 0;
}

/* Copy a claimed range; on failure its granules are dirty again. */
static int coroutine_fn copy_claim(BlockCopyState *s, Claim *c, bool *error_is_read)
{
    int ret;

    graph_co_rdlock();
    ret = copy_range_now(s, c->offset, c->bytes, error_is_read);
    graph_co_rdunlock();

    if (ret < 0) {
        dirty_bitmap_set(s->bitmap, c->offset, c->bytes);
    } else if (s->job) {
        job_progress_update(&s->job->job, c->bytes);
    }
    return ret;
}

/* ---- Background sweep ---------------------------------------------------------- */

typedef struct Task {
    BlockCopyState *s;
    Claim claim;
} Task;

static void coroutine_fn task_entry(void *opaque)
{
    Task *t = opaque;
    BlockCopyState *s = t->s;
    bool is_read = false;
    int ret = copy_claim(s, &t->claim, &is_read);
    Coroutine *waiter;

    if (ret < 0 && !s->error) {
        s->error = ret;
        s->error_is_read = is_read;
    }
    s->tasks--;
    s->task_bytes -= t->claim.bytes;
    claim_release(s, &t->claim);
    free(t);
    waiter = s->launcher_waiting;
    if (waiter) {
        s->launcher_waiting = NULL;
        aio_co_wake(waiter);
    }
}

/* Park the job coroutine until some background task ends. */
static void coroutine_fn wait_for_task(BlockCopyState *s)
{
    assert(s->tasks > 0 && !s->launcher_waiting);
    s->launcher_waiting = coroutine_self();
    coroutine_yield();
}

void coroutine_fn block_copy_wait_idle(BlockCopyState *s)
{
    while (s->tasks > 0) {
        wait_for_task(s);
    }
}

int coroutine_fn block_copy_sweep(BlockCopyState *s, bool final, bool *error_is_read)
{
    int64_t offset = 0, end = dirty_bitmap_size(s->bitmap);
    int ret;

    s->error = 0;
    while (!s->error) {
        Task *t;

        if (!final) {
            /* A cancel may come during the sleep or the pause: check after. */
            block_job_ratelimit_sleep(s->job);
            job_pause_point(&s->job->job);
            if (job_is_cancelled(&s->job->job)) {
                break;
            }
        }
        while (s->tasks >= s->opts.max_tasks ||
               s->task_bytes + s->opts.chunk_size > s->opts.max_bytes) {
            wait_for_task(s);
        }
        t = calloc(1, sizeof(*t));
        if (!t) {
            abort();
        }
        t->s = s;
        if (!claim_next_dirty(s, &t->claim, offset, end, s->opts.chunk_size)) {
            free(t);
            break;
        }
        offset = t->claim.offset + t->claim.bytes;
        s->tasks++;
        s->task_bytes += t->claim.bytes;
        if (!final) {
            block_job_ratelimit_processed_bytes(s->job, t->claim.bytes);
        }
        aio_co_enter(current_aio_context(), coroutine_create(task_entry, t));
    }
    block_copy_wait_idle(s);
    ret = s->error;
    *error_is_read = s->error_is_read;
    s->error = 0;
    return ret;
}

/* ---- On behalf of guest writes ------------------------------------------------- */

int coroutine_fn block_copy_range(BlockCopyState *s, int64_t offset, int64_t bytes,
                                  bool *error_is_read)
{
    int64_t g = s->granularity;
    int64_t start = offset / g * g;
    int64_t end = offset + bytes;
    Claim c;
    int ret = 0;

    if (end > dirty_bitmap_size(s->bitmap)) {
        end = dirty_bitmap_size(s->bitmap);
    }
    /* Hold the whole range: background tasks and other guest writes wait. */
    end = (end + g - 1) / g * g;
    if (end <= start) {
        return 0;
    }
    claim_range_wait(s, &c, start, end - start);
    for (int64_t pos = start; pos < end && ret == 0;) {
        int64_t aoff, abytes;

        if (!dirty_bitmap_next_area(s->bitmap, pos, end, s->opts.chunk_size, &aoff, &abytes)) {
            break;
        }
        dirty_bitmap_clear(s->bitmap, aoff, abytes);
        ret = copy_range_now(s, aoff, abytes, error_is_read);
        if (ret < 0) {
            dirty_bitmap_set(s->bitmap, aoff, abytes);
        } else if (s->job) {
            job_progress_update(&s->job->job, abytes);
        }
        pos = aoff + abytes;
    }
    claim_release(s, &c);
    return ret;
}

int coroutine_fn block_copy_active_write(BlockCopyState *s, BdrvChild *source_via,
                                         int64_t offset, int64_t bytes,
                                         struct iovec *iov, int niov, int flags)
{
    int64_t g = s->granularity;
    int64_t start = offset / g * g;
    int64_t end = (offset + bytes + g - 1) / g * g;
    bool head_dirty, tail_dirty;
    Claim c;
    int ret;

    claim_range_wait(s, &c, start, end - start);
    /* What was dirty before our write: the parts of edge granules that we
     * do not overwrite are identical on both sides only if it was clean. */
    head_dirty = dirty_bitmap_get(s->bitmap, start);
    tail_dirty = dirty_bitmap_get(s->bitmap, end - g);
    ret = bdrv_co_pwritev(source_via, offset, bytes, iov, niov, flags);
    if (ret == 0 && bdrv_co_pwritev(s->target, offset, bytes, iov, niov, flags) == 0) {
        dirty_bitmap_clear_inner(s->bitmap, offset, bytes);
        if (!head_dirty) {
            dirty_bitmap_clear(s->bitmap, start, 1);
        }
        if (!tail_dirty) {
            dirty_bitmap_clear(s->bitmap, end - 1, 1);
        }
    }
    claim_release(s, &c);
    return ret;
}
