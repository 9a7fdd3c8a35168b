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
#include "blockd/error.h"

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
/* The node's new size: granules past it go, new ones start clean. */
void dirty_bitmap_truncate(BdrvDirtyBitmap *bm, int64_t size);

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
 * Is @offset dirty?  *@pnum: how far from there, up to @bytes (and the
 * size), everything is the same.  Common.
 */
bool dirty_bitmap_run(BdrvDirtyBitmap *bm, int64_t offset, int64_t bytes, int64_t *pnum);

/*
 * The first dirty area at or after @offset and before @end: returns false
 * if there is none, else its start and length (at most @max_bytes, whole
 * granules, clamped to the size).
 */
bool dirty_bitmap_next_area(BdrvDirtyBitmap *bm, int64_t offset, int64_t end,
                            int64_t max_bytes, int64_t *area_off, int64_t *area_bytes);

/* ---- Named bitmaps (block-dirty-bitmap-*) ---- */

/*
 * A named bitmap of @bs: covers the node's size, records its writes unless
 * @disabled, goes with the node.  The caller checked the name is free.
 * Global state.
 */
BdrvDirtyBitmap *bdrv_dirty_bitmap_create(BlockDriverState *bs, const char *name,
                                          int64_t granularity, bool disabled);
/* Detach and free a named bitmap.  Global state. */
void bdrv_dirty_bitmap_release(BlockDriverState *bs, BdrvDirtyBitmap *bm);
/* @bs's named bitmap @name, or NULL.  Global state. */
BdrvDirtyBitmap *bdrv_dirty_bitmap_find(BlockDriverState *bs, const char *name);
/* Bitmap @name of node @node, with QEMU's messages if either is missing
 * (and the node in *@pbs, unless NULL).  Global state. */
BdrvDirtyBitmap *bdrv_dirty_bitmap_lookup(const char *node, const char *name,
                                          BlockDriverState **pbs, Error **errp);
/* What a command or a job needs of a bitmap: not busy (a job or an export
 * uses it), not read-only (its image is), not inconsistent (found in use
 * in its image).  DEFAULT: all three, for whatever changes the bitmap. */
#define DIRTY_BITMAP_CHECK_BUSY         1u
#define DIRTY_BITMAP_CHECK_RO           2u
#define DIRTY_BITMAP_CHECK_INCONSISTENT 4u
#define DIRTY_BITMAP_CHECK_DEFAULT      7u
#define DIRTY_BITMAP_CHECK_ALLOW_RO     (DIRTY_BITMAP_CHECK_BUSY | \
                                         DIRTY_BITMAP_CHECK_INCONSISTENT)
/* Does @bm pass @checks?  QEMU's messages.  Global state. */
bool dirty_bitmap_check(BdrvDirtyBitmap *bm, unsigned checks, Error **errp);
/* May @bs be resized: none of its persistent bitmaps inconsistent or busy
 * (they are stored at the new size)?  I/O, the node drained. */
bool bdrv_dirty_bitmaps_check_resize(BlockDriverState *bs, Error **errp);
/* The named bitmap after @prev (NULL: the first), oldest first, or NULL.
 * Global state. */
BdrvDirtyBitmap *bdrv_dirty_bitmap_next(BlockDriverState *bs, BdrvDirtyBitmap *prev);

/* Its name (NULL for a job's bitmap).  Common. */
const char *dirty_bitmap_name(BdrvDirtyBitmap *bm);
/* Does it record writes?  Common. */
bool dirty_bitmap_recording(BdrvDirtyBitmap *bm);
void dirty_bitmap_set_recording(BdrvDirtyBitmap *bm, bool recording);
/* Busy: a job or an export uses it, no command may change it.  Global state. */
bool dirty_bitmap_busy(BdrvDirtyBitmap *bm);
void dirty_bitmap_set_busy(BdrvDirtyBitmap *bm, bool busy);
/* Persistent: stored in the image when it is closed or flushed.  GS. */
bool dirty_bitmap_persistent(BdrvDirtyBitmap *bm);
void dirty_bitmap_set_persistent(BdrvDirtyBitmap *bm, bool persistent);
/* Inconsistent: found in use in the image (a crash); it records nothing
 * and may only be removed.  Global state. */
bool dirty_bitmap_inconsistent(BdrvDirtyBitmap *bm);
void dirty_bitmap_set_inconsistent(BdrvDirtyBitmap *bm);

/* Read-only: loaded from an image opened read-only; no command may
 * change it.  Global state. */
bool dirty_bitmap_readonly(BdrvDirtyBitmap *bm);
void dirty_bitmap_set_readonly(BdrvDirtyBitmap *bm, bool readonly);

/* Frozen: it keeps its bits and records nothing (a backup's own bitmap
 * records the writes meanwhile), but still says it records.  Common. */
void dirty_bitmap_set_frozen(BdrvDirtyBitmap *bm, bool frozen);
/* Clear every bit.  Common. */
void dirty_bitmap_clear_all(BdrvDirtyBitmap *bm);
/* An unattached copy of @bm's bits, and putting them back (transaction
 * undo).  Common. */
BdrvDirtyBitmap *dirty_bitmap_copy(BdrvDirtyBitmap *bm);
void dirty_bitmap_restore(BdrvDirtyBitmap *bm, BdrvDirtyBitmap *from);
/* Mark in @dst what @src has marked; false if their sizes differ.
 * Granularities may differ.  Common. */
bool dirty_bitmap_merge(BdrvDirtyBitmap *dst, BdrvDirtyBitmap *src);
/* SHA-256 of its bits laid out as QEMU lays them out.  Common. */
bool dirty_bitmap_sha256(BdrvDirtyBitmap *bm, char hex[65]);

/* The bits as bytes, the lowest bit of each byte first (the layout of
 * qcow2's bitmap data): how many bytes cover the bitmap; copy bytes
 * [first, first + n) out (zero past the end) or in.  Common. */
uint64_t dirty_bitmap_serial_bytes(BdrvDirtyBitmap *bm);
void dirty_bitmap_serialize(BdrvDirtyBitmap *bm, uint64_t first, uint64_t n, uint8_t *buf);
void dirty_bitmap_deserialize(BdrvDirtyBitmap *bm, uint64_t first, uint64_t n,
                              const uint8_t *buf);

/* ---- The node side (block layer internals) ---- */

/* Mark every bitmap attached to @bs.  I/O, any thread. */
void bdrv_set_dirty(BlockDriverState *bs, int64_t offset, int64_t bytes);
/* @bs was resized: every bitmap attached follows.  I/O, any thread. */
void bdrv_dirty_bitmaps_truncate(BlockDriverState *bs, int64_t size);
void bdrv_dirty_bitmap_init_node(BlockDriverState *bs);
void bdrv_dirty_bitmap_fini_node(BlockDriverState *bs);

#endif /* BLOCKD_DIRTY_BITMAP_H */
