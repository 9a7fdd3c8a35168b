/*
 * dirty-bitmap.c - bitmaps of changed granules, marked by writes.
 *
 * One bit per granule in 64-bit words, plus a count of set bits so that
 * "how much is left" costs nothing.  Each bitmap has its own mutex; a
 * node's list of attached bitmaps has another (list lock, then bitmap
 * lock, never the other way round).
 */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/atomic.h"
#include "blockd/dirty-bitmap.h"
#include "blockd/main-loop.h"

struct BdrvDirtyBitmap {
    BdMutex lock;
    int64_t size;                       /* immutable */
    int shift;                          /* immutable: log2(granularity) */
    uint64_t nbits;                     /* immutable */
    uint64_t *words TSA_FIELD_GUARDED_BY(lock);
    uint64_t set_bits TSA_FIELD_GUARDED_BY(lock);
    ListNode node_link;                 /* in bs->dirty_bitmaps */
};

BdrvDirtyBitmap *dirty_bitmap_new(int64_t size, int64_t granularity)
{
    BdrvDirtyBitmap *bm = calloc(1, sizeof(*bm));
    uint64_t *words;

    assert(granularity >= 512 && !(granularity & (granularity - 1)));
    if (!bm) {
        abort();
    }
    bm->size = size;
    bm->shift = __builtin_ctzll(granularity);
    bm->nbits = (size + granularity - 1) >> bm->shift;
    words = calloc((bm->nbits + 63) / 64 + 1, sizeof(uint64_t));
    if (!words) {
        abort();
    }
    bd_mutex_init(&bm->lock);
    bd_mutex_lock(&bm->lock);
    bm->words = words;
    bm->set_bits = 0;
    bd_mutex_unlock(&bm->lock);
    list_init(&bm->node_link);
    return bm;
}

void dirty_bitmap_free(BdrvDirtyBitmap *bm)
{
    if (!bm) {
        return;
    }
    assert(!list_linked(&bm->node_link));
    bd_mutex_lock(&bm->lock);
    free(bm->words);
    bd_mutex_unlock(&bm->lock);
    bd_mutex_destroy(&bm->lock);
    free(bm);
}

int64_t dirty_bitmap_granularity(BdrvDirtyBitmap *bm)
{
    return (int64_t)1 << bm->shift;
}

int64_t dirty_bitmap_size(BdrvDirtyBitmap *bm)
{
    return bm->size;
}

/* Set or clear bits [first, last]; keeps set_bits exact. */
static void bits_change(BdrvDirtyBitmap *bm, uint64_t first, uint64_t last, bool set)
    TSA_REQUIRES(bm->lock)
{
    for (uint64_t b = first; b <= last && b < bm->nbits;) {
        uint64_t w = b / 64, lo = b % 64;
        uint64_t hi = (last - b + lo) < 63 ? (last - b + lo) : 63;
        uint64_t mask = (hi == 63 ? ~0ULL : ((1ULL << (hi + 1)) - 1)) & ~((1ULL << lo) - 1);
        uint64_t old = bm->words[w];

        if (set) {
            bm->words[w] |= mask;
            bm->set_bits += __builtin_popcountll(mask & ~old);
        } else {
            bm->words[w] &= ~mask;
            bm->set_bits -= __builtin_popcountll(mask & old);
        }
        b += hi - lo + 1;
    }
}

static void range_change(BdrvDirtyBitmap *bm, int64_t offset, int64_t bytes, bool set)
{
    if (offset < 0 || bytes <= 0 || offset >= bm->size) {
        return;
    }
    if (offset + bytes > bm->size) {
        bytes = bm->size - offset;
    }
    bd_mutex_lock(&bm->lock);
    bits_change(bm, offset >> bm->shift, (offset + bytes - 1) >> bm->shift, set);
    bd_mutex_unlock(&bm->lock);
}

void dirty_bitmap_set(BdrvDirtyBitmap *bm, int64_t offset, int64_t bytes)
{
    range_change(bm, offset, bytes, true);
}

void dirty_bitmap_clear(BdrvDirtyBitmap *bm, int64_t offset, int64_t bytes)
{
    range_change(bm, offset, bytes, false);
}

void dirty_bitmap_clear_inner(BdrvDirtyBitmap *bm, int64_t offset, int64_t bytes)
{
    int64_t g = dirty_bitmap_granularity(bm);
    int64_t start = (offset + g - 1) / g * g;
    int64_t end = (offset + bytes) / g * g;

    /* The granule holding the end of the image counts as whole. */
    if (offset + bytes >= bm->size) {
        end = offset + bytes;
    }
    if (end > start) {
        range_change(bm, start, end - start, false);
    }
}

void dirty_bitmap_set_all(BdrvDirtyBitmap *bm)
{
    range_change(bm, 0, bm->size, true);
}

bool dirty_bitmap_get(BdrvDirtyBitmap *bm, int64_t offset)
{
    uint64_t b = offset >> bm->shift;
    bool r;

    if (offset < 0 || offset >= bm->size) {
        return false;
    }
    bd_mutex_lock(&bm->lock);
    r = bm->words[b / 64] & (1ULL << (b % 64));
    bd_mutex_unlock(&bm->lock);
    return r;
}

int64_t dirty_bitmap_count(BdrvDirtyBitmap *bm)
{
    int64_t bytes;
    uint64_t last = bm->nbits - 1;

    bd_mutex_lock(&bm->lock);
    bytes = (int64_t)bm->set_bits << bm->shift;
    /* The last granule may be partial. */
    if (bm->nbits && (bm->words[last / 64] & (1ULL << (last % 64)))) {
        bytes -= ((int64_t)bm->nbits << bm->shift) - bm->size;
    }
    bd_mutex_unlock(&bm->lock);
    return bytes;
}

static int64_t next_bit(BdrvDirtyBitmap *bm, uint64_t b, bool value) TSA_REQUIRES(bm->lock)
{
    while (b < bm->nbits) {
        uint64_t w = bm->words[b / 64];
        if (!value) {
            w = ~w;
        }
        w &= ~0ULL << (b % 64);
        if (w) {
            b = (b & ~63ULL) + __builtin_ctzll(w);
            return b < bm->nbits ? (int64_t)b : -1;
        }
        b = (b & ~63ULL) + 64;
    }
    return -1;
}

bool dirty_bitmap_next_area(BdrvDirtyBitmap *bm, int64_t offset, int64_t end,
                            int64_t max_bytes, int64_t *area_off, int64_t *area_bytes)
{
    int64_t first, stop, start_off, end_off;

    if (end > bm->size) {
        end = bm->size;
    }
    if (offset < 0 || offset >= end) {
        return false;
    }
    bd_mutex_lock(&bm->lock);
    first = next_bit(bm, offset >> bm->shift, true);
    if (first < 0 || (first << bm->shift) >= end) {
        bd_mutex_unlock(&bm->lock);
        return false;
    }
    stop = next_bit(bm, first, false);
    bd_mutex_unlock(&bm->lock);

    start_off = first << bm->shift;
    end_off = stop < 0 ? bm->size : stop << bm->shift;
    if (end_off > end) {
        end_off = end;
    }
    if (end_off > bm->size) {
        end_off = bm->size;
    }
    if (end_off - start_off > max_bytes) {
        int64_t g = dirty_bitmap_granularity(bm);
        end_off = start_off + (max_bytes > g ? max_bytes / g * g : g);
        if (end_off > bm->size) {
            end_off = bm->size;
        }
    }
    *area_off = start_off;
    *area_bytes = end_off - start_off;
    return true;
}

/* ---- Attached to a node ---------------------------------------------------- */

void bdrv_dirty_bitmap_init_node(BlockDriverState *bs)
{
    bd_mutex_init(&bs->dirty_bitmap_mutex);
    bd_mutex_lock(&bs->dirty_bitmap_mutex);
    list_init(&bs->dirty_bitmaps);
    bd_mutex_unlock(&bs->dirty_bitmap_mutex);
    bs->dirty_bitmap_count = 0;
}

void bdrv_dirty_bitmap_fini_node(BlockDriverState *bs)
{
    bd_mutex_lock(&bs->dirty_bitmap_mutex);
    assert(list_empty(&bs->dirty_bitmaps));
    bd_mutex_unlock(&bs->dirty_bitmap_mutex);
    bd_mutex_destroy(&bs->dirty_bitmap_mutex);
}

void bdrv_dirty_bitmap_attach(BlockDriverState *bs, BdrvDirtyBitmap *bm)
{
    GLOBAL_STATE_CODE();
    bd_mutex_lock(&bs->dirty_bitmap_mutex);
    list_add_tail(&bs->dirty_bitmaps, &bm->node_link);
    atomic_inc(&bs->dirty_bitmap_count);
    bd_mutex_unlock(&bs->dirty_bitmap_mutex);
}

void bdrv_dirty_bitmap_detach(BlockDriverState *bs, BdrvDirtyBitmap *bm)
{
    GLOBAL_STATE_CODE();
    bd_mutex_lock(&bs->dirty_bitmap_mutex);
    list_del(&bm->node_link);
    list_init(&bm->node_link);
    atomic_dec(&bs->dirty_bitmap_count);
    bd_mutex_unlock(&bs->dirty_bitmap_mutex);
}

void bdrv_set_dirty(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    /* The common case, no bitmap, costs one load. */
    if (!atomic_read(&bs->dirty_bitmap_count)) {
        return;
    }
    bd_mutex_lock(&bs->dirty_bitmap_mutex);
    list_for_each(n, &bs->dirty_bitmaps) {
        dirty_bitmap_set(list_entry(n, BdrvDirtyBitmap, node_link), offset, bytes);
    }
    bd_mutex_unlock(&bs->dirty_bitmap_mutex);
}
