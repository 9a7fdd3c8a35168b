/*
 * block-common.h - types shared by both halves of the block layer.
 *
 * Half: common (data structures and constants only).
 */
#ifndef BLOCKD_BLOCK_COMMON_H
#define BLOCKD_BLOCK_COMMON_H

#include <stdbool.h>
#include <stdint.h>

typedef struct BlockDriver BlockDriver;
typedef struct BlockDriverState BlockDriverState;
typedef struct BdrvChild BdrvChild;
typedef struct BdrvChildClass BdrvChildClass;

/*
 * Permissions: what a parent does to a child node (perm) and what it lets
 * other parents do at the same time (shared_perm).
 */
enum {
    BLK_PERM_CONSISTENT_READ = 0x01,
    BLK_PERM_WRITE           = 0x02,
    BLK_PERM_WRITE_UNCHANGED = 0x04,
    BLK_PERM_RESIZE          = 0x08,
    BLK_PERM_ALL             = 0x0f,
};

/* Roles of an edge, as a bit set (a child can be data and metadata). */
enum {
    BDRV_CHILD_DATA     = 1 << 0,   /* guest-visible data lives here */
    BDRV_CHILD_METADATA = 1 << 1,   /* format metadata lives here */
    BDRV_CHILD_FILTERED = 1 << 2,   /* a filter's only child */
    BDRV_CHILD_COW      = 1 << 3,   /* a backing file */
    BDRV_CHILD_PRIMARY  = 1 << 4,   /* the "file" child of a format */
};

/* Flags of open and of nodes. */
enum {
    BDRV_O_RDWR      = 1 << 0,
    BDRV_O_NOCACHE   = 1 << 1,      /* cache.direct=on: O_DIRECT */
    BDRV_O_NO_FLUSH  = 1 << 2,      /* cache.no-flush=on */
    BDRV_O_UNMAP     = 1 << 3,      /* discard=unmap */
    BDRV_O_FORCE_SHARE = 1 << 4,    /* force-share=on */
    BDRV_O_AUTO_RDONLY = 1 << 5,    /* auto-read-only=on: read-only if the
                                       image cannot be opened read-write */
};

/* Request flags. */
enum {
    BDRV_REQ_FUA         = 1 << 0,  /* write through to stable storage */
    BDRV_REQ_MAY_UNMAP   = 1 << 1,  /* write-zeroes may deallocate */
    BDRV_REQ_NO_FALLBACK = 1 << 2,  /* write-zeroes must be fast or fail */
    BDRV_REQ_ZERO_WRITE  = 1 << 3,  /* internal: this write of zeroes carries
                                       out a write-zeroes (no detect-zeroes) */
    BDRV_REQ_WRITE_COMPRESSED = 1 << 4, /* store whole clusters compressed (a
                                           driver that cannot: -ENOTSUP) */
    BDRV_REQ_WRITE_UNCHANGED = 1 << 5,  /* the node's content stays what it was
                                           (a stream's copy into the top):
                                           dirty bitmaps are not marked */
};

/* block-status result bits. */
enum {
    BDRV_BLOCK_DATA      = 1 << 0,  /* reading returns data from this layer */
    BDRV_BLOCK_ZERO      = 1 << 1,  /* reading returns zeroes */
    BDRV_BLOCK_ALLOCATED = 1 << 2,  /* this layer holds the content */
};

typedef struct BlockLimits {
    uint32_t request_alignment;     /* bytes; 1 = any; O_DIRECT: 512 or 4096 */
    uint64_t max_transfer;          /* bytes; 0 = no limit */
    uint64_t opt_transfer;          /* bytes; 0 = no preference */
    uint32_t pdiscard_alignment;    /* 0 = request_alignment */
    uint32_t pwrite_zeroes_alignment;
    uint32_t min_mem_alignment;     /* buffer alignment for O_DIRECT */
} BlockLimits;

/* Render a permission set as "consistent read, write" (static storage). */
const char *bdrv_perm_names(uint64_t perm, char *buf, int size);

#endif /* BLOCKD_BLOCK_COMMON_H */
