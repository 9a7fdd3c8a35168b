/*
 * block-chain.h - backing chains: finding nodes in a chain, changing a
 * node's backing file (in the graph and in the image header), dropping
 * the nodes between two layers, and switching a node between read-only
 * and read-write.
 *
 * Half: global state (main thread, not under the graph lock), except
 * bdrv_co_is_allocated_above and bdrv_co_allocation_depth (I/O).
 */
#ifndef BLOCKD_BLOCK_CHAIN_H
#define BLOCKD_BLOCK_CHAIN_H

#include "blockd/block-int.h"

/* Is @bs used by someone that forbids changing its chain (a job)?  Then
 * true and "Node '<name>' is busy: <why>". */
bool bdrv_op_is_blocked(BlockDriverState *bs, Error **errp);

/* The next node down a chain: the backing file, or a filter's child. */
BlockDriverState *bdrv_filter_or_cow_bs(BlockDriverState *bs);
/* Is @bs @top or below it in @top's chain? */
bool bdrv_chain_contains(BlockDriverState *top, BlockDriverState *bs);
/* The bottom of @bs's chain (@bs itself if it has no backing file). */
BlockDriverState *bdrv_find_base(BlockDriverState *bs);
/* The node in @active's chain right above @bs (NULL: none). */
BlockDriverState *bdrv_find_overlay(BlockDriverState *active, BlockDriverState *bs);
/* The node below @bs whose file name is @name, as an overlay's header
 * names it or as a path to the same file.  NULL: none. */
BlockDriverState *bdrv_find_backing_image(BlockDriverState *bs, const char *name);
/* The backing file name and format an overlay's header gets for @base
 * (into @buf), as QEMU writes them. */
const char *bdrv_backing_name(BlockDriverState *base, char *buf, size_t size);
const char *bdrv_backing_format(BlockDriverState *base);

/*
 * Make @backing (NULL: none) the backing node of @bs in the graph, drained.
 * The header is not touched (bdrv_change_backing_file).  On a permission
 * conflict the old backing node stays.  -errno with @errp set.
 */
int bdrv_set_backing_hd(BlockDriverState *bs, BlockDriverState *backing, Error **errp);
/*
 * Make @file the "file" child of @bs, drained, with the same role: only
 * where that child is a filtered one (a filter's, a raw node's without
 * offset and size), so that @bs's content is @file's (inserting or
 * removing a copy-before-write filter under a running export).  -errno
 * with @errp set; on failure the old child stays.  Global state.
 */
int bdrv_set_file(BlockDriverState *bs, BlockDriverState *file, Error **errp);
/* Write @file / @fmt (NULL: none) as the backing file into @bs's header;
 * formats that record none refuse ("Operation not supported"). */
int bdrv_change_backing_file(BlockDriverState *bs, const char *file, const char *fmt,
                             Error **errp);
/*
 * Every overlay whose backing node is @top gets @base instead, its header
 * naming @backing_file (NULL: @base's file name) and @base's format.  The
 * nodes between lose those parents (and go if nobody else holds them).
 */
int bdrv_drop_intermediate(BlockDriverState *top, BlockDriverState *base,
                           const char *backing_file, Error **errp);

/*
 * Switch @bs and the nodes below it that are not backing files (its file)
 * between read-only and read-write, drained; image locks and permissions
 * follow.  Refused, changing nothing, if a parent writes and @read_only,
 * or if a driver cannot.  -errno with @errp set.
 */
int bdrv_reopen_set_read_only(BlockDriverState *bs, bool read_only, Error **errp);
/* Does a parent of @bs write it, or hold the right to? */
bool bdrv_has_writer(BlockDriverState *bs);
/*
 * blockdev-reopen's cache.direct and cache.no-flush of @bs alone (its
 * children keep theirs), changed while it is drained; a file node opens
 * its image again with or without O_DIRECT.  -errno with @errp set, and
 * nothing changed, if the file cannot be opened that way.
 */
int bdrv_reopen_set_cache(BlockDriverState *bs, bool direct, bool no_flush, Error **errp);
/* blockdev-reopen's discard=unmap, detect-zeroes (BDRV_DETECT_ZEROES_*)
 * and auto-read-only of @bs alone, changed while it is drained. */
void bdrv_reopen_set_io_options(BlockDriverState *bs, bool unmap, int detect_zeroes,
                                bool auto_read_only);

/*
 * I/O: is [offset, offset+bytes) allocated in a layer from @top down to
 * @base (excluded; NULL: the whole chain)?  1 or 0 for the first *pnum
 * bytes, -errno on error.  Past the end of a lower layer counts as
 * allocated (it reads as zeroes, whatever is below).  Graph read lock.
 */
int coroutine_fn bdrv_co_is_allocated_above(BlockDriverState *top, BlockDriverState *base,
                                            int64_t offset, int64_t bytes, int64_t *pnum)
    GRAPH_RDLOCK;

/*
 * I/O: which layer of @bs's chain holds [offset, offset+bytes): 1 for @bs
 * itself, 2 for its backing file and so on (filters do not count), 0 for
 * none, as NBD's "qemu:allocation-depth" reports it; for the first *pnum
 * bytes.  -errno on error.  Graph read lock.
 */
int coroutine_fn bdrv_co_allocation_depth(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                          int64_t *pnum) GRAPH_RDLOCK;

#endif /* BLOCKD_BLOCK_CHAIN_H */
