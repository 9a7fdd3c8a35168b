/*
 * file-posix.h - what the "file" and "host_device" drivers share
 * (file-posix.c, host-device.c): the node's state and the callbacks that
 * are the same for a regular file and a block device.  Not for other
 * drivers.
 *
 * Half: as each callback's slot in BlockDriver says.
 */
#ifndef BLOCKD_FILE_POSIX_H
#define BLOCKD_FILE_POSIX_H

#include "blockd/block-int.h"
#include "blockd/thread.h"
#include "file-lock.h"

typedef enum FileAio { FILE_AIO_THREADS, FILE_AIO_NATIVE, FILE_AIO_IO_URING } FileAio;
typedef enum FileLocking { FILE_LOCKING_AUTO, FILE_LOCKING_ON, FILE_LOCKING_OFF } FileLocking;

typedef struct FileState {
    int fd;
    /* query-blockstats' driver-specific: discards done and failed. */
    uint64_t discard_nb_ok, discard_nb_failed, discard_bytes_ok;    /* atomic */
    char *filename;
    FileAio aio;
    bool use_lock;
    bool is_blockdev;
    bool discard_unmap;
    bool direct;                /* O_DIRECT: nothing is ever in the page cache */
    /* atomic: RWF_NOWAIT refused by the kernel/fs, per direction (ext4
     * takes it for buffered reads but not for buffered writes). */
    bool nowait_unsupported[2];
    bool memory_fs;             /* tmpfs/ramfs: buffered I/O never waits for a device */
    FileLock lock;
    /*
     * The last data extent SEEK_HOLE found.  On a large dense file
     * SEEK_HOLE walks every page up to the end, so asking it on every read
     * would cost milliseconds; data stays data until a hole is punched.
     */
    BdMutex status_lock;
    int64_t data_start TSA_FIELD_GUARDED_BY(status_lock);
    int64_t data_end TSA_FIELD_GUARDED_BY(status_lock);
} FileState;

/* Open @bs on the file its options name: a regular file, or with
 * @device a block or character device (QEMU's messages otherwise). */
int file_posix_open(BlockDriverState *bs, json_object *options, int flags, bool device,
                    Error **errp);
void file_close(BlockDriverState *bs);
int file_reopen(BlockDriverState *bs, int flags, Error **errp);
int file_set_cache(BlockDriverState *bs, bool direct, Error **errp);
int file_check_perm(BlockDriverState *bs, uint64_t perm, uint64_t shared, Error **errp);
void file_set_perm(BlockDriverState *bs, uint64_t perm, uint64_t shared);
void file_abort_perm_update(BlockDriverState *bs);
json_object *file_get_stats(BlockDriverState *bs);
int64_t file_get_allocated_file_size(BlockDriverState *bs);
int file_get_info(BlockDriverState *bs, BlockDriverInfo *bdi);
int coroutine_fn file_co_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                struct iovec *iov, int niov, int flags) GRAPH_RDLOCK;
int coroutine_fn file_co_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                 struct iovec *iov, int niov, int flags) GRAPH_RDLOCK;
int coroutine_fn file_co_flush(BlockDriverState *bs) GRAPH_RDLOCK;
/* A discard's outcome in query-blockstats' driver-specific counters. */
void file_count_discard(FileState *s, int ret, int64_t bytes);

/* The callbacks both drivers' BlockDriver have. */
#define FILE_POSIX_COMMON_OPS                                   \
    .instance_size = sizeof(FileState),                         \
    .is_protocol = true,                                        \
    .bdrv_close = file_close,                                   \
    .bdrv_reopen = file_reopen,                                 \
    .bdrv_set_cache = file_set_cache,                           \
    .bdrv_check_perm = file_check_perm,                         \
    .bdrv_set_perm = file_set_perm,                             \
    .bdrv_abort_perm_update = file_abort_perm_update,           \
    .bdrv_get_stats = file_get_stats,                           \
    .bdrv_get_allocated_file_size = file_get_allocated_file_size, \
    .bdrv_get_info = file_get_info,                             \
    .bdrv_co_preadv = file_co_preadv,                           \
    .bdrv_co_pwritev = file_co_pwritev,                         \
    .bdrv_co_flush = file_co_flush

#endif /* BLOCKD_FILE_POSIX_H */
