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
extern const BlockDriver bdrv_null_aio;
extern const BlockDriver bdrv_compress;
extern const BlockDriver bdrv_nbd;
extern const BlockDriver bdrv_rbd;
extern const BlockDriver bdrv_host_device;
extern const BlockDriver bdrv_copy_on_read;
extern const BlockDriver bdrv_preallocate;
extern const BlockDriver bdrv_throttle;
extern const BlockDriver bdrv_luks;
extern const BlockDriver bdrv_blkverify;
extern const BlockDriver bdrv_quorum;
extern const BlockDriver bdrv_file;
extern const BlockDriver bdrv_raw;
extern const BlockDriver bdrv_blkdebug;
extern const BlockDriver bdrv_qcow2;
extern const BlockDriver bdrv_copy_before_write;
extern const BlockDriver bdrv_snapshot_access;

/* filter.c: a request passed down to bs->file unchanged (a filter's
 * callbacks for what it does not change).  I/O, graph read lock held. */
int coroutine_fn bdrv_filter_co_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                       struct iovec *iov, int niov, int flags) GRAPH_RDLOCK;
int coroutine_fn bdrv_filter_co_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                        struct iovec *iov, int niov, int flags) GRAPH_RDLOCK;
int coroutine_fn bdrv_filter_co_pwrite_zeroes(BlockDriverState *bs, int64_t offset,
                                              int64_t bytes, int flags) GRAPH_RDLOCK;
int coroutine_fn bdrv_filter_co_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes)
    GRAPH_RDLOCK;
/* Nothing to flush of its own: the child is flushed after it. */
int coroutine_fn bdrv_filter_co_flush(BlockDriverState *bs) GRAPH_RDLOCK;

/* create.c: helpers of image creation (global state, in a coroutine). */
/* Run @fn(@opaque) in the main loop outside any coroutine, and wait: graph
 * changes (attaching children, opening nodes) cannot happen in one. */
void coroutine_fn bdrv_co_run_in_main_loop(void (*fn)(void *opaque), void *opaque);
/* "Parameter 'x' is unexpected" for members not in @allowed (NULL-ended). */
bool create_check_members(json_object *options, const char *const *allowed, Error **errp);
/* The required "size" member. */
bool create_get_size(json_object *options, int64_t *size, Error **errp);
extern const char *const create_prealloc_names[];   /* PreallocMode */
/* The container blockdev-create formats: its "file" member (a node name or
 * blockdev options), opened through a backend of its own that writes and
 * resizes; a format node may be opened over it afterwards. */
typedef struct BlockBackend BlockBackend;
typedef struct CreateTarget {
    BlockDriverState *bs;
    BlockBackend *blk;
    BlockDriverState *format;
    json_object *ref;
    Error *err;
} CreateTarget;
/* 0, or -errno with QEMU's message ("Parameter 'file' is missing" ...). */
int coroutine_fn create_target_open(CreateTarget *t, json_object *options, Error **errp);
/* The same for the node that member @key of @options names. */
int coroutine_fn create_target_open_ref(CreateTarget *t, json_object *options, const char *key,
                                        Error **errp);
/* Drop the backend (before a format node is opened over the file). */
void coroutine_fn create_target_release_blk(CreateTarget *t);
/* Close everything opened (nothing opened: nothing to do). */
void coroutine_fn create_target_close(CreateTarget *t);
/* qcow2-create.c */
int coroutine_fn qcow2_co_create(json_object *options, Error **errp);

/* file-posix.c: reads and writes of file nodes the calling thread has done
 * inline, without the engine, so far.  Common (any thread); for tests. */
uint64_t file_inline_count(void);

/* block.c */
bool bdrv_child_is_node_parent(BdrvChild *c);

#endif /* BLOCKD_BLOCK_INTERNAL_H */
