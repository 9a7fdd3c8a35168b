/*
 * dirty-bitmap.h - which parts of a node changed, at a granularity.
 *
 * Half: common.  A bitmap has its own lock, so any thread may set, clear
 * and scan it.  Attached to a node, it is marked by every write, write
 * of zeroes and discard that reaches the node (after the driver ran,
 * whatever the outcome), which is what mirror needs: a copier that
 * clears a range *before* reading it never misses a write.
 */
#ifndef BLOCKD_DIRTY_BITMAP_H
#define BLOCKD_DIRTY_BITMAP_H

#include <stdbool.h>
#include <stdint.h>

#include "blockd/block-int.h"

typedef struct BdrvDirtyBitmap BdrvDirtyBitmap;

/* A clean bitmap covering @size bytes in units of @granularity (a power
 * of two, >= 512).  Common. */
BdrvDirtyBitmap *dirty_bitmap_new(int64_t size, int64_t granularity);
/* Free an unattached bitmap.  Common. */
void dirty_bitmap_free(BdrvDirtyBitmap *bm);

/* Make writes to @bs mark @bm / stop it.  Global state. */
void bdrv_dirty_bitmap_attach(BlockDriverState *bs, BdrvDirtyBitmap *bm);
void bdrv_dirty_bitmap_detach(BlockDriverState *bs, BdrvDirtyBitmap *bm);

int64_t dirty_bitmap_granularity(BdrvDirtyBitmap *bm);
int64_t dirty_bitmap_size(BdrvDirtyBitmap *bm);

/* Mark / clear every granule that [offset, offset+bytes) touches. */
void dirty_bitmap_set(BdrvDirtyBitmap *bm, int64_t offset, int64_t bytes);
void dirty_bitmap_clear(BdrvDirtyBitmap *bm, int64_t offset, int64_t bytes);
/* Clear only the granules lying entirely inside the range. */
void dirty_bitmap_clear_inner(BdrvDirtyBitmap *bm, int64_t offset, int64_t bytes);
void dirty_bitmap_set_all(BdrvDirtyBitmap *bm);
bool dirty_bitmap_get(BdrvDirtyBitmap *bm, int64_t offset);
/* Bytes marked dirty (granules x granularity, clamped to the size). */
int64_t dirty_bitmap_count(BdrvDirtyBitmap *bm);

/*
 * The first dirty area at or after @offset and before @end: returns false
 * if there is none, else its start and length (at most @max_bytes, whole
 * granules, clamped to the size).
 */
bool dirty_bitmap_next_area(BdrvDirtyBitmap *bm, int64_t offset, int64_t end,
                            int64_t max_bytes, int64_t *area_off, int64_t *area_bytes);

/* ---- The node side (block layer internals) ---- */

/* Mark every bitmap attached to @bs.  I/O, any thread. */
void bdrv_set_dirty(BlockDriverState *bs, int64_t offset, int64_t bytes);
void bdrv_dirty_bitmap_init_node(BlockDriverState *bs);
void bdrv_dirty_bitmap_fini_node(BlockDriverState *bs);

#endif /* BLOCKD_DIRTY_BITMAP_H */
