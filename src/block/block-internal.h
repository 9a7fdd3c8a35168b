/*
 * block-internal.h - shared between the files of src/block.  Global state.
 */
#ifndef BLOCKD_BLOCK_INTERNAL_H
#define BLOCKD_BLOCK_INTERNAL_H

#include "blockd/block-int.h"

/* drain.c */
bool bdrv_parents_busy(BlockDriverState *bs, BdrvChild *ignore);
int bdrv_drain_all_depth(void);

/* The drivers (registered by bdrv_init()). */
extern const BlockDriver bdrv_null_co;
extern const BlockDriver bdrv_file;
extern const BlockDriver bdrv_raw;
extern const BlockDriver bdrv_blkdebug;
extern const BlockDriver bdrv_qcow2;

/* block.c */
bool bdrv_child_is_node_parent(BdrvChild *c);

#endif /* BLOCKD_BLOCK_INTERNAL_H */
