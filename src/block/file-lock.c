/*
 * file-lock.c - OFD byte-range locks that mirror permissions.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>

#include "blockd/block-common.h"
#include "file-lock.h"

static const char *const lock_perm_names[] = {
    "consistent read", "write", "write unchanged", "resize",
};

static int ofd_lock(int fd, int64_t start, short type)
{
    struct flock fl = {
        .l_whence = SEEK_SET,
        .l_start = start,
        .l_len = 1,
        .l_type = type,
    };
    return fcntl(fd, F_OFD_SETLK, &fl) < 0 ? -errno : 0;
}

/* Does some other open file description hold a lock on byte @start? */
static int ofd_test(int fd, int64_t start, short type)
{
    struct flock fl = {
        .l_whence = SEEK_SET,
        .l_start = start,
        .l_len = 1,
        .l_type = type,
    };
    if (fcntl(fd, F_OFD_GETLK, &fl) < 0) {
        return -errno;
    }
    return fl.l_type == F_UNLCK ? 0 : -EAGAIN;
}

int file_lock_apply(FileLock *l, uint64_t perm_bytes, uint64_t unshared_bytes,
                    const char *filename, Error **errp)
{
    for (int i = 0; i < 4; i++) {
        uint64_t bit = 1ULL << i;
        struct { uint64_t want, *held; int base; } sets[2] = {
            { perm_bytes, &l->locked_perm, FILE_LOCK_PERM_BASE },
            { unshared_bytes, &l->locked_unshared, FILE_LOCK_SHARED_BASE },
        };
        for (int s = 0; s < 2; s++) {
            bool want = sets[s].want & bit, held = *sets[s].held & bit;
            int ret;
            if (want == held) {
                continue;
            }
            ret = ofd_lock(l->fd, sets[s].base + i, want ? F_RDLCK : F_UNLCK);
            if (ret < 0) {
                error_setg_errno(errp, -ret, "Failed to lock byte %d of '%s'",
                                 sets[s].base + i, filename);
                return ret;
            }
            *sets[s].held = want ? (*sets[s].held | bit) : (*sets[s].held & ~bit);
        }
    }
    return 0;
}

int file_lock_check(FileLock *l, uint64_t perm, uint64_t shared,
                    const char *filename, Error **errp)
{
    for (int i = 0; i < 4; i++) {
        uint64_t bit = 1ULL << i;
        int ret;

        /* We need it: nobody may have it unshared. */
        if (perm & bit) {
            ret = ofd_test(l->fd, FILE_LOCK_SHARED_BASE + i, F_WRLCK);
            if (ret < 0) {
                error_setg(errp, "Failed to get \"%s\" lock", lock_perm_names[i]);
                error_append_hint(errp, "Is another process using the image [%s]?\n",
                                  filename);
                return ret;
            }
        }
        /* We unshare it: nobody may hold it. */
        if (!(shared & bit)) {
            ret = ofd_test(l->fd, FILE_LOCK_PERM_BASE + i, F_WRLCK);
            if (ret < 0) {
                error_setg(errp, "Failed to get shared \"%s\" lock", lock_perm_names[i]);
                error_append_hint(errp, "Is another process using the image [%s]?\n",
                                  filename);
                return ret;
            }
        }
    }
    return 0;
}
