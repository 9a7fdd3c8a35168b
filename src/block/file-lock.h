/*
 * file-lock.h - image locking: permissions mirrored onto OFD byte locks.
 *
 * For permission bit i (0..3), byte 100+i is share-locked by every opener
 * that holds the permission and byte 200+i by every opener that does not
 * share it.  Before taking a permission we check that nobody holds its
 * "unshared" byte, and before unsharing one that nobody holds its "perm"
 * byte; qemu and qemu-img use the same layout, so the check works across
 * programs.  Global state.
 */
#ifndef BLOCKD_FILE_LOCK_H
#define BLOCKD_FILE_LOCK_H

#include <stdbool.h>
#include <stdint.h>

#include "blockd/error.h"

#define FILE_LOCK_PERM_BASE     100
#define FILE_LOCK_SHARED_BASE   200

typedef struct FileLock {
    int fd;
    uint64_t locked_perm;        /* bytes 100+i we hold */
    uint64_t locked_unshared;    /* bytes 200+i we hold */
} FileLock;

/* Hold exactly these byte sets (taking and releasing as needed). */
int file_lock_apply(FileLock *l, uint64_t perm_bytes, uint64_t unshared_bytes,
                    const char *filename, Error **errp);
/* Would another open file description conflict with @perm/@shared? */
int file_lock_check(FileLock *l, uint64_t perm, uint64_t shared,
                    const char *filename, Error **errp);

#endif /* BLOCKD_FILE_LOCK_H */
