/*
 * block.h - the block layer as a whole.
 *
 * Half: global state.
 */
#ifndef BLOCKD_BLOCK_H
#define BLOCKD_BLOCK_H

/* Register the drivers and connect drain to the graph lock.  Call once
 * after main_loop_init() (again after each main_loop_init() in tests). */
void bdrv_init(void);

#endif /* BLOCKD_BLOCK_H */
