/*
 * dirty-bitmap.c - bitmaps of changed granules, marked by writes.
 *
 * One bit per granule in 64-bit words, plus a count of set bits so that
 * "how much is left" costs nothing.  Each bitmap has its own mutex; a
 * node's list of attached bitmaps has another (list lock, then bitmap
 * lock, never the other way round).
 *
 * The words are laid out as QEMU's lowest bitmap level is (bit n of the
 * image is bit n % 64 of little-endian word n / 64), so that the SHA-256
 * of a bitmap (x-debug-block-dirty-bitmap-sha256) is the one
 * qemu-storage-daemon reports after the same writes.
 */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/atomic.h"
#include "blockd/block-global-state.h"
#include "blockd/block-io.h"
#include "blockd/crypto-hash.h"
#include "blockd/dirty-bitmap.h"
#include "blockd/main-loop.h"

struct BdrvDirtyBitmap {
    BdMutex lock;
    /* The node's size: changes with it (dirty_bitmap_truncate); read
     * atomically outside the lock, only as a hint checked again inside. */
    int64_t size;
    int shift;                          /* immutable: log2(granularity) */
    uint64_t nbits TSA_FIELD_GUARDED_BY(lock);
    uint64_t *words TSA_FIELD_GUARDED_BY(lock);
    uint64_t set_bits TSA_FIELD_GUARDED_BY(lock);
    ListNode node_link;                 /* in bs->dirty_bitmaps */
    /* Named bitmaps (block-dirty-bitmap-*); a job's own bitmap has none. */
    char *name;                         /* GS */
    int disabled;                       /* atomic: not recording writes */
    int frozen;                         /* atomic: a job records for it meanwhile */
    /* Set in the main thread (atomically: a resize reads them anywhere). */
    bool busy;                          /* in use by a job or an export */
    bool persistent;                    /* to be stored in the image */
    bool inconsistent;                  /* stored in use, not trustworthy */
    bool readonly;                      /* GS: loaded from a read-only image */
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
    words = calloc((((size + granularity - 1) >> bm->shift) + 63) / 64 + 1, sizeof(uint64_t));
    if (!words) {
        abort();
    }
    bd_mutex_init(&bm->lock);
    bd_mutex_lock(&bm->lock);
    bm->nbits = (size + granularity - 1) >> bm->shift;
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
    free(bm->name);
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
    return atomic_read(&bm->size);
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
    int64_t size = atomic_read(&bm->size);

    if (offset < 0 || bytes <= 0 || offset >= size) {
        return;
    }
    if (offset + bytes > size) {
        bytes = size - offset;
    }
    bd_mutex_lock(&bm->lock);
    bits_change(bm, offset >> bm->shift, (offset + bytes - 1) >> bm->shift, set);
    bd_mutex_unlock(&bm->lock);
}

void dirty_bitmap_truncate(BdrvDirtyBitmap *bm, int64_t size)
{
    uint64_t nbits = (size + dirty_bitmap_granularity(bm) - 1) >> bm->shift;
    uint64_t nwords = (nbits + 63) / 64 + 1, *words;

    bd_mutex_lock(&bm->lock);
    if (nbits < bm->nbits) {
        bits_change(bm, nbits, bm->nbits - 1, false);   /* keeps set_bits exact */
    }
    words = realloc(bm->words, nwords * sizeof(uint64_t));
    if (!words) {
        abort();
    }
    if (nbits > bm->nbits) {
        uint64_t old_words = (bm->nbits + 63) / 64 + 1;
        memset(words + old_words, 0, (nwords - old_words) * sizeof(uint64_t));
    }
    bm->words = words;
    bm->nbits = nbits;
    atomic_set(&bm->size, size);
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
    if (offset + bytes >= dirty_bitmap_size(bm)) {
        end = offset + bytes;
    }
    if (end > start) {
        range_change(bm, start, end - start, false);
    }
}

void dirty_bitmap_set_all(BdrvDirtyBitmap *bm)
{
    range_change(bm, 0, dirty_bitmap_size(bm), true);
}

bool dirty_bitmap_get(BdrvDirtyBitmap *bm, int64_t offset)
{
    uint64_t b = offset >> bm->shift;
    bool r;

    if (offset < 0) {
        return false;
    }
    bd_mutex_lock(&bm->lock);
    r = b < bm->nbits && (bm->words[b / 64] & (1ULL << (b % 64)));
    bd_mutex_unlock(&bm->lock);
    return r;
}

int64_t dirty_bitmap_count(BdrvDirtyBitmap *bm)
{
    int64_t bytes;
    uint64_t last;

    bd_mutex_lock(&bm->lock);
    last = bm->nbits - 1;
    bytes = (int64_t)bm->set_bits << bm->shift;
    /* The last granule may be partial. */
    if (bm->nbits && (bm->words[last / 64] & (1ULL << (last % 64)))) {
        bytes -= ((int64_t)bm->nbits << bm->shift) - atomic_read(&bm->size);
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

bool dirty_bitmap_run(BdrvDirtyBitmap *bm, int64_t offset, int64_t bytes, int64_t *pnum)
{
    int64_t size = dirty_bitmap_size(bm), end = offset + bytes, stop;
    uint64_t b = offset >> bm->shift;
    bool dirty;

    if (end > size) {
        end = size;
    }
    if (offset < 0 || offset >= end) {
        *pnum = 0;
        return false;
    }
    bd_mutex_lock(&bm->lock);
    dirty = b < bm->nbits && (bm->words[b / 64] & (1ULL << (b % 64)));
    stop = b < bm->nbits ? next_bit(bm, b, !dirty) : -1;
    bd_mutex_unlock(&bm->lock);
    stop = stop < 0 ? end : stop << bm->shift;
    *pnum = (stop < end ? stop : end) - offset;
    return dirty;
}

bool dirty_bitmap_next_area(BdrvDirtyBitmap *bm, int64_t offset, int64_t end,
                            int64_t max_bytes, int64_t *area_off, int64_t *area_bytes)
{
    int64_t first, stop, start_off, end_off;

    if (end > dirty_bitmap_size(bm)) {
        end = dirty_bitmap_size(bm);
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
    end_off = stop < 0 ? dirty_bitmap_size(bm) : stop << bm->shift;
    if (end_off > end) {
        end_off = end;
    }
    if (end_off > dirty_bitmap_size(bm)) {
        end_off = dirty_bitmap_size(bm);
    }
    if (end_off - start_off > max_bytes) {
        int64_t g = dirty_bitmap_granularity(bm);
        end_off = start_off + (max_bytes > g ? max_bytes / g * g : g);
        if (end_off > dirty_bitmap_size(bm)) {
            end_off = dirty_bitmap_size(bm);
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
    /* Named bitmaps go with their node; a job's must be gone already. */
    for (BdrvDirtyBitmap *bm; (bm = bdrv_dirty_bitmap_next(bs, NULL));) {
        bdrv_dirty_bitmap_release(bs, bm);
    }
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
        BdrvDirtyBitmap *bm = list_entry(n, BdrvDirtyBitmap, node_link);

        if (!atomic_read(&bm->disabled) && !atomic_read(&bm->frozen)) {
            dirty_bitmap_set(bm, offset, bytes);
        }
    }
    bd_mutex_unlock(&bs->dirty_bitmap_mutex);
}

void bdrv_dirty_bitmaps_truncate(BlockDriverState *bs, int64_t size)
{
    bd_mutex_lock(&bs->dirty_bitmap_mutex);
    list_for_each(n, &bs->dirty_bitmaps) {
        dirty_bitmap_truncate(list_entry(n, BdrvDirtyBitmap, node_link), size);
    }
    bd_mutex_unlock(&bs->dirty_bitmap_mutex);
}

/* ---- Named bitmaps ------------------------------------------------------------ */

BdrvDirtyBitmap *bdrv_dirty_bitmap_next(BlockDriverState *bs, BdrvDirtyBitmap *prev)
{
    ListNode *n;
    BdrvDirtyBitmap *found = NULL;

    GLOBAL_STATE_CODE();
    bd_mutex_lock(&bs->dirty_bitmap_mutex);
    for (n = prev ? prev->node_link.next : bs->dirty_bitmaps.next; n != &bs->dirty_bitmaps;
         n = n->next) {
        BdrvDirtyBitmap *bm = list_entry(n, BdrvDirtyBitmap, node_link);

        if (bm->name) {
            found = bm;
            break;
        }
    }
    bd_mutex_unlock(&bs->dirty_bitmap_mutex);
    return found;
}

BdrvDirtyBitmap *bdrv_dirty_bitmap_find(BlockDriverState *bs, const char *name)
{
    BdrvDirtyBitmap *bm = NULL;

    GLOBAL_STATE_CODE();
    while ((bm = bdrv_dirty_bitmap_next(bs, bm)) && strcmp(bm->name, name)) {
    }
    return bm;
}

BdrvDirtyBitmap *bdrv_dirty_bitmap_create(BlockDriverState *bs, const char *name,
                                          int64_t granularity, bool disabled)
{
    BdrvDirtyBitmap *bm = dirty_bitmap_new(bdrv_getlength(bs), granularity);

    GLOBAL_STATE_CODE();
    bm->name = strdup(name);
    if (!bm->name) {
        abort();
    }
    atomic_set(&bm->disabled, disabled);
    bdrv_dirty_bitmap_attach(bs, bm);
    return bm;
}

void bdrv_dirty_bitmap_release(BlockDriverState *bs, BdrvDirtyBitmap *bm)
{
    GLOBAL_STATE_CODE();
    bdrv_dirty_bitmap_detach(bs, bm);
    dirty_bitmap_free(bm);
}

BdrvDirtyBitmap *bdrv_dirty_bitmap_lookup(const char *node, const char *name,
                                          BlockDriverState **pbs, Error **errp)
{
    BlockDriverState *bs = bdrv_find_node(node);
    BdrvDirtyBitmap *bm;

    GLOBAL_STATE_CODE();
    if (!bs) {
        error_setg(errp, "Node '%s' not found", node);
        return NULL;
    }
    bm = bdrv_dirty_bitmap_find(bs, name);
    if (!bm) {
        error_setg(errp, "Dirty bitmap '%s' not found", name);
        return NULL;
    }
    if (pbs) {
        *pbs = bs;
    }
    return bm;
}

bool dirty_bitmap_check(BdrvDirtyBitmap *bm, unsigned checks, Error **errp)
{
    GLOBAL_STATE_CODE();
    if ((checks & DIRTY_BITMAP_CHECK_BUSY) && bm->busy) {
        error_setg(errp, "Bitmap '%s' is currently in use by another operation and cannot "
                   "be used", bm->name);
        return false;
    }
    if ((checks & DIRTY_BITMAP_CHECK_RO) && bm->readonly) {
        error_setg(errp, "Bitmap '%s' is readonly and cannot be modified", bm->name);
        return false;
    }
    if ((checks & DIRTY_BITMAP_CHECK_INCONSISTENT) && bm->inconsistent) {
        error_setg(errp, "Bitmap '%s' is inconsistent and cannot be used", bm->name);
        return false;
    }
    return true;
}

bool bdrv_dirty_bitmaps_check_resize(BlockDriverState *bs, Error **errp)
{
    bool ok = true;

    /* Named bitmaps' flags change only in the main thread while the node
     * is drained, as it is for a resize: reading them here is safe. */
    bd_mutex_lock(&bs->dirty_bitmap_mutex);
    list_for_each(n, &bs->dirty_bitmaps) {
        BdrvDirtyBitmap *bm = list_entry(n, BdrvDirtyBitmap, node_link);

        if (ok && bm->name && atomic_read(&bm->persistent) &&
            (atomic_read(&bm->inconsistent) || atomic_read(&bm->busy))) {
            error_setg(errp, atomic_read(&bm->busy)
                       ? "Bitmap '%s' is currently in use by another operation and cannot "
                         "be used"
                       : "Bitmap '%s' is inconsistent and cannot be used", bm->name);
            ok = false;
        }
    }
    bd_mutex_unlock(&bs->dirty_bitmap_mutex);
    return ok;
}

const char *dirty_bitmap_name(BdrvDirtyBitmap *bm)
{
    return bm->name;
}

bool dirty_bitmap_recording(BdrvDirtyBitmap *bm)
{
    return !atomic_read(&bm->disabled);
}

void dirty_bitmap_set_recording(BdrvDirtyBitmap *bm, bool recording)
{
    atomic_set(&bm->disabled, !recording);
}

bool dirty_bitmap_busy(BdrvDirtyBitmap *bm)
{
    GLOBAL_STATE_CODE();
    return bm->busy;
}

void dirty_bitmap_set_busy(BdrvDirtyBitmap *bm, bool busy)
{
    GLOBAL_STATE_CODE();
    atomic_set(&bm->busy, busy);
}

bool dirty_bitmap_persistent(BdrvDirtyBitmap *bm)
{
    GLOBAL_STATE_CODE();
    return bm->persistent;
}

void dirty_bitmap_set_persistent(BdrvDirtyBitmap *bm, bool persistent)
{
    GLOBAL_STATE_CODE();
    atomic_set(&bm->persistent, persistent);
}

bool dirty_bitmap_inconsistent(BdrvDirtyBitmap *bm)
{
    GLOBAL_STATE_CODE();
    return bm->inconsistent;
}

void dirty_bitmap_set_inconsistent(BdrvDirtyBitmap *bm)
{
    GLOBAL_STATE_CODE();
    atomic_set(&bm->inconsistent, true);
    atomic_set(&bm->disabled, true);
}

bool dirty_bitmap_readonly(BdrvDirtyBitmap *bm)
{
    GLOBAL_STATE_CODE();
    return bm->readonly;
}

void dirty_bitmap_set_readonly(BdrvDirtyBitmap *bm, bool readonly)
{
    GLOBAL_STATE_CODE();
    bm->readonly = readonly;
}

void dirty_bitmap_set_frozen(BdrvDirtyBitmap *bm, bool frozen)
{
    atomic_set(&bm->frozen, frozen);
}

void dirty_bitmap_clear_all(BdrvDirtyBitmap *bm)
{
    range_change(bm, 0, dirty_bitmap_size(bm), false);
}

BdrvDirtyBitmap *dirty_bitmap_copy(BdrvDirtyBitmap *bm)
{
    BdrvDirtyBitmap *copy = dirty_bitmap_new(dirty_bitmap_size(bm),
                                             dirty_bitmap_granularity(bm));

    dirty_bitmap_restore(copy, bm);
    return copy;
}

/* A copy of @bm's words (never two bitmap locks at once: no order to keep). */
static uint64_t *copy_words(BdrvDirtyBitmap *bm, uint64_t *nbits, uint64_t *set_bits)
{
    uint64_t *words;

    bd_mutex_lock(&bm->lock);
    *nbits = bm->nbits;
    *set_bits = bm->set_bits;
    words = malloc(((bm->nbits + 63) / 64 + 1) * sizeof(uint64_t));
    if (!words) {
        abort();
    }
    memcpy(words, bm->words, ((bm->nbits + 63) / 64 + 1) * sizeof(uint64_t));
    bd_mutex_unlock(&bm->lock);
    return words;
}

void dirty_bitmap_restore(BdrvDirtyBitmap *bm, BdrvDirtyBitmap *from)
{
    uint64_t nbits, set_bits, *words = copy_words(from, &nbits, &set_bits);

    bd_mutex_lock(&bm->lock);
    assert(bm->nbits == nbits && bm->shift == from->shift);
    memcpy(bm->words, words, (nbits + 63) / 64 * sizeof(uint64_t));
    bm->set_bits = set_bits;
    bd_mutex_unlock(&bm->lock);
    free(words);
}

/* Granules at different sizes: every dirty area of @src, marked in @dst. */
static void merge_areas(BdrvDirtyBitmap *dst, BdrvDirtyBitmap *src)
{
    int64_t off = 0, aoff, abytes;

    while (dirty_bitmap_next_area(src, off, dirty_bitmap_size(src), INT64_MAX, &aoff, &abytes)) {
        dirty_bitmap_set(dst, aoff, abytes);
        off = aoff + abytes;
    }
}

bool dirty_bitmap_merge(BdrvDirtyBitmap *dst, BdrvDirtyBitmap *src)
{
    uint64_t nwords, nbits, set_bits, *words;

    if (dirty_bitmap_size(dst) != dirty_bitmap_size(src)) {
        return false;
    }
    if (dst == src) {
        return true;
    }
    if (dst->shift != src->shift) {
        merge_areas(dst, src);
        return true;
    }
    words = copy_words(src, &nbits, &set_bits);
    bd_mutex_lock(&dst->lock);
    nwords = (dst->nbits < nbits ? dst->nbits + 63 : nbits + 63) / 64;
    for (uint64_t w = 0; w < nwords; w++) {
        uint64_t add = words[w] & ~dst->words[w];

        dst->words[w] |= add;
        dst->set_bits += __builtin_popcountll(add);
    }
    bd_mutex_unlock(&dst->lock);
    free(words);
    return true;
}

bool dirty_bitmap_sha256(BdrvDirtyBitmap *bm, char hex[65])
{
    bool ok;

    bd_mutex_lock(&bm->lock);
    ok = crypto_sha256_hex(bm->words, (bm->nbits + 63) / 64 * sizeof(uint64_t), hex);
    bd_mutex_unlock(&bm->lock);
    return ok;
}

/* ---- The bits as bytes (images store them so) ---------------------------------- */

uint64_t dirty_bitmap_serial_bytes(BdrvDirtyBitmap *bm)
{
    uint64_t n;

    bd_mutex_lock(&bm->lock);
    n = (bm->nbits + 7) / 8;
    bd_mutex_unlock(&bm->lock);
    return n;
}

/* Byte i holds bits 8i..8i+7, the lowest first: byte i % 8 of word i / 8
 * in little-endian order. */
void dirty_bitmap_serialize(BdrvDirtyBitmap *bm, uint64_t first, uint64_t n, uint8_t *buf)
{
    bd_mutex_lock(&bm->lock);
    for (uint64_t i = 0; i < n; i++) {
        uint64_t b = first + i;

        buf[i] = b * 8 < bm->nbits ? (uint8_t)(bm->words[b / 8] >> (8 * (b % 8))) : 0;
    }
    bd_mutex_unlock(&bm->lock);
}

void dirty_bitmap_deserialize(BdrvDirtyBitmap *bm, uint64_t first, uint64_t n,
                              const uint8_t *buf)
{
    bd_mutex_lock(&bm->lock);
    for (uint64_t i = 0; i < n && (first + i) * 8 < bm->nbits; i++) {
        uint64_t b = first + i, w = b / 8, shift = 8 * (b % 8);
        uint64_t v = (uint64_t)buf[i] << shift, mask = 0xffULL << shift;
        uint64_t old = bm->words[w];

        if ((b + 1) * 8 > bm->nbits) {           /* bits past the end stay clear */
            v &= ((1ULL << (bm->nbits % 64)) - 1) | ~mask;
        }
        bm->words[w] = (old & ~mask) | v;
        bm->set_bits += __builtin_popcountll(bm->words[w] & mask);
        bm->set_bits -= __builtin_popcountll(old & mask);
    }
    bd_mutex_unlock(&bm->lock);
}
