/*
 * block-int.h - the structures behind the block graph, for the block core
 * and for drivers.
 *
 * Half: common (structures).  Every callback of BlockDriver and
 * BdrvChildClass is marked with the half it runs in.
 *
 * Protection:
 *   "GS"     changed only by the main thread (global state);
 *   "graph"  changed only under the graph write lock (main thread), read
 *            by I/O code under the graph read lock;
 *   "atomic" accessed with atomic.h from any thread.
 */
#ifndef BLOCKD_BLOCK_INT_H
#define BLOCKD_BLOCK_INT_H

#include "blockd/block-accounting.h"
#include <json-c/json.h>
#include <sys/uio.h>

#include "blockd/aio.h"
#include "blockd/block-common.h"
#include "blockd/coroutine.h"
#include "blockd/error.h"
#include "blockd/graph-lock.h"
#include "blockd/list.h"
#include "blockd/thread.h"

#define BDRV_NODE_NAME_MAX 128

typedef struct BlockDriverInfo {
    int64_t cluster_size;          /* 0: not cluster-based */
    int64_t subcluster_size;       /* unit of allocation (0: cluster_size) */
    bool is_dirty;                 /* qcow2's dirty bit */
    const char *backing_file;      /* as the header names it, or NULL */
    const char *backing_fmt;       /* NULL: not recorded */
} BlockDriverInfo;

struct BlockDriver {
    const char *format_name;
    size_t instance_size;          /* bytes of bs->opaque */
    bool is_filter;                /* one child, data passes through */
    bool is_format;                /* interprets a "file" child's content */
    bool is_protocol;              /* talks to a file / device / nothing */
    bool supports_backing;         /* may have a backing file (a COW child) */

    /* ---- Global state ---- */

    /* Open: parse @options (the blockdev-add dict), set bs->total_bytes and
     * bs->bl, attach children.  Errors name the offending option. */
    int (*bdrv_open)(BlockDriverState *bs, json_object *options, int flags,
                     Error **errp);
    void (*bdrv_close)(BlockDriverState *bs);
    /* blockdev-create of this driver's image (block-create.h: a coroutine
     * of the main thread); NULL: not supported. */
    int coroutine_fn (*bdrv_co_create)(json_object *options, Error **errp);
    /* x-blockdev-amend of an open node (a coroutine of the main thread,
     * the amend job's): @options is a checked BlockdevAmendOptions.  NULL:
     * the driver amends nothing. */
    int coroutine_fn (*bdrv_co_amend)(BlockDriverState *bs, json_object *options, bool force,
                                      Error **errp);
    /* Switch between read-only and read-write: @flags are the new
     * BDRV_O_* flags, the node is drained and bs->read_only still tells
     * the old state.  On failure nothing changed.  NULL: nothing to do. */
    int (*bdrv_reopen)(BlockDriverState *bs, int flags, Error **errp);
    /* cache.direct changes (global state, the node drained): bypass the
     * host's page cache or stop bypassing it.  On failure nothing
     * changed.  NULL: the flag alone says it (a format node). */
    int (*bdrv_set_cache)(BlockDriverState *bs, bool direct, Error **errp);
    /* Internal snapshots (global state, the node drained): take snapshot
     * @name of the active layer (-EEXIST: the name is taken); delete the one
     * found by @id and/or @name (-ENOENT: none), its SnapshotInfo in *@info. */
    int (*bdrv_snapshot_create)(BlockDriverState *bs, const char *name);
    int (*bdrv_snapshot_delete)(BlockDriverState *bs, const char *id, const char *name,
                                json_object **info);
    /* x-blockdev-change: take @child as a new child, or let @child go
     * (the node is drained; QEMU's messages).  NULL: not supported. */
    int (*bdrv_add_child)(BlockDriverState *bs, BlockDriverState *child, Error **errp);
    int (*bdrv_del_child)(BlockDriverState *bs, BdrvChild *child, Error **errp);
    /* Record @backing_file and @backing_fmt (NULL: none) in the image
     * header; the node is drained.  NULL: the format records no backing
     * file. */
    int (*bdrv_change_backing_file)(BlockDriverState *bs, const char *backing_file,
                                    const char *backing_fmt, Error **errp);
    /* Persistent dirty bitmaps (global state; NULL: the format stores
     * none): may a new bitmap @name of @granularity be stored (QEMU's
     * messages)?  Remove the stored bitmap @name from the image now (not
     * there: nothing to do). */
    bool (*bdrv_can_store_new_dirty_bitmap)(BlockDriverState *bs, const char *name,
                                            int64_t granularity, Error **errp);
    int (*bdrv_remove_persistent_dirty_bitmap)(BlockDriverState *bs, const char *name,
                                               Error **errp);

    /* What this node needs from child @c given what its parents need of it
     * (NULL: bdrv_default_child_perm by role). */
    void (*bdrv_child_perm)(BlockDriverState *bs, BdrvChild *c, unsigned role,
                            uint64_t parent_perm, uint64_t parent_shared,
                            uint64_t *nperm, uint64_t *nshared);
    /* Permission transaction on this node (image locking lives here). */
    int (*bdrv_check_perm)(BlockDriverState *bs, uint64_t perm, uint64_t shared,
                           Error **errp);
    void (*bdrv_set_perm)(BlockDriverState *bs, uint64_t perm, uint64_t shared);
    void (*bdrv_abort_perm_update)(BlockDriverState *bs);

    void (*bdrv_drain_begin)(BlockDriverState *bs);
    void (*bdrv_drain_end)(BlockDriverState *bs);

    /* Image information (query-named-block-nodes' "image"; NULL: none).
     * Bytes the image takes on its storage; NULL: its "file" child's. */
    int64_t (*bdrv_get_allocated_file_size)(BlockDriverState *bs);
    /* Cluster size, dirty flag and the backing file its header names. */
    int (*bdrv_get_info)(BlockDriverState *bs, BlockDriverInfo *bdi);
    /* "format-specific": {"type": ..., "data": {...}}, a new object. */
    json_object *(*bdrv_get_specific_info)(BlockDriverState *bs);
    /* "snapshots": the image's snapshots as a new array of SnapshotInfo,
     * or NULL (none, or the driver lists none here). */
    json_object *(*bdrv_snapshot_list)(BlockDriverState *bs);
    /* The image's name where no "filename" option gives it (a network
     * node's URI); NULL: the file child's, or "DRIVER://". */
    const char *(*bdrv_filename)(BlockDriverState *bs);
    /* query-blockstats' "driver-specific", a new object (NULL: none). */
    json_object *(*bdrv_get_stats)(BlockDriverState *bs);

    /* ---- I/O (any thread, coroutine; graph read lock held) ---- */

    int coroutine_fn (*bdrv_co_preadv)(BlockDriverState *bs, int64_t offset,
                                       int64_t bytes, struct iovec *iov, int niov,
                                       int flags) GRAPH_RDLOCK_PTR;
    int coroutine_fn (*bdrv_co_pwritev)(BlockDriverState *bs, int64_t offset,
                                        int64_t bytes, struct iovec *iov, int niov,
                                        int flags) GRAPH_RDLOCK_PTR;
    int coroutine_fn (*bdrv_co_flush)(BlockDriverState *bs) GRAPH_RDLOCK_PTR;
    int coroutine_fn (*bdrv_co_pdiscard)(BlockDriverState *bs, int64_t offset,
                                         int64_t bytes) GRAPH_RDLOCK_PTR;
    int coroutine_fn (*bdrv_co_pwrite_zeroes)(BlockDriverState *bs, int64_t offset,
                                              int64_t bytes, int flags) GRAPH_RDLOCK_PTR;
    /* Status of [offset, offset+bytes): returns BDRV_BLOCK_* bits for the
     * first *pnum bytes, or -errno. */
    int coroutine_fn (*bdrv_co_block_status)(BlockDriverState *bs, int64_t offset,
                                             int64_t bytes, int64_t *pnum) GRAPH_RDLOCK_PTR;
    int coroutine_fn (*bdrv_co_truncate)(BlockDriverState *bs, int64_t size,
                                         Error **errp) GRAPH_RDLOCK_PTR;
    /* The point-in-time view a copy-before-write filter keeps (NULL:
     * none; the snapshot-access driver reads it): read it, its status as
     * bdrv_co_block_status gives it, and forget a range of it. */
    int coroutine_fn (*bdrv_co_preadv_snapshot)(BlockDriverState *bs, int64_t offset,
                                                int64_t bytes, struct iovec *iov,
                                                int niov) GRAPH_RDLOCK_PTR;
    int coroutine_fn (*bdrv_co_snapshot_block_status)(BlockDriverState *bs, int64_t offset,
                                                      int64_t bytes,
                                                      int64_t *pnum) GRAPH_RDLOCK_PTR;
    int coroutine_fn (*bdrv_co_pdiscard_snapshot)(BlockDriverState *bs, int64_t offset,
                                                  int64_t bytes) GRAPH_RDLOCK_PTR;

    int supported_write_flags;     /* BDRV_REQ_* the driver handles itself */
    int supported_zero_flags;
};

/* Callbacks of the parent side of an edge.  All global state. */
struct BdrvChildClass {
    /* Stop / resume issuing requests to the child (drained sections). */
    void (*drained_begin)(BdrvChild *c);
    void (*drained_end)(BdrvChild *c);
    /* Does the parent still have requests in flight on its side? */
    bool (*drained_poll)(BdrvChild *c);
    /* "node 'x'", "block device 'y'", "NBD export 'z'", "block job 'j'" */
    char *(*get_parent_desc)(BdrvChild *c);
    /* May the child (and so this parent) move to @ctx?  NULL: yes.  A
     * refusal sets @errp; the move then changes nothing. */
    bool (*can_set_aio_ctx)(BdrvChild *c, AioContext *ctx, Error **errp);
    /* The child moves to @ctx (drained): follow it (NULL: stay). */
    void (*set_aio_ctx)(BdrvChild *c, AioContext *ctx);
    /* The parent's other edges, whose nodes must move with this one (a
     * job's nodes: one job runs in one context).  NULL: none. */
    BdrvChild **(*get_siblings)(BdrvChild *c, int *n);
    /* The child changed size (a completed truncate).  Any thread (the
     * one that resized it), graph read lock held.  NULL: not interested. */
    void (*resized)(BdrvChild *c);
    /* A user of the node that is not a node (BlockBackend: exports). */
    bool is_backend;
    /* x-debug-query-block-graph: what the parent is ("block-driver",
     * "block-backend", "job") and its name (NULL: ""). */
    const char *parent_type;
    const char *(*get_parent_name)(BdrvChild *c);
    /* Why this parent forbids changes of the chain through the node
     * ("block device is in use by block job: commit"), a new string;
     * NULL (or no callback): it does not. */
    char *(*get_blocker)(BdrvChild *c);
};

struct BdrvChild {
    BlockDriverState *bs TSA_GUARDED_BY(graph_lock);   /* the child node */
    char *name;                     /* "file", "backing", "root", ... */
    unsigned role;                  /* BDRV_CHILD_* */
    const BdrvChildClass *klass;
    void *opaque;                   /* the parent object */
    /* Written under the write lock, read by requests under the read lock. */
    uint64_t perm TSA_GUARDED_BY(graph_lock);
    uint64_t shared_perm TSA_GUARDED_BY(graph_lock);
    bool quiesced_parent;           /* GS: parent told to quiesce for us */
    bool inherits;                  /* GS: opened from the parent's options */
    ListNode next TSA_GUARDED_BY(graph_lock);        /* in the parent's children */
    ListNode next_parent TSA_GUARDED_BY(graph_lock); /* in the child's parents */
};

/* detect-zeroes: writes of zeroes become write-zeroes requests (unmap:
 * which may also deallocate). */
enum { BDRV_DETECT_ZEROES_OFF, BDRV_DETECT_ZEROES_ON, BDRV_DETECT_ZEROES_UNMAP };

/* A byte range a request holds on its node (block-io.h). */
typedef struct BdrvTrackedRequest {
    int64_t offset;
    int64_t bytes;
    bool serialising;
    /* bs->reqs_lock (a CoMutex of the node, which the analysis cannot name
     * from here: the request does not point to its node) */
    CoQueue waiters;
    ListNode node;            /* bs->tracked_requests */
} BdrvTrackedRequest;

struct BlockDriverState {
    const BlockDriver *drv;
    void *opaque;                   /* drv->instance_size bytes */
    char node_name[BDRV_NODE_NAME_MAX];
    bool auto_named;                /* "#blockN" */
    int open_flags;                 /* BDRV_O_* */
    json_object *options;           /* GS: the options it was opened with */
    bool read_only;
    bool encrypted;                 /* GS: set at open (luks, encrypted qcow2) */
    int detect_zeroes;              /* BDRV_DETECT_ZEROES_*: set at open, changed
                                       * by blockdev-reopen while drained */
    uint64_t write_threshold;       /* atomic; 0: none (write-threshold.c) */
    BlockAcctStats stats;           /* atomic counters (accounting.c) */
    int64_t total_bytes;            /* atomic: size in bytes */
    BlockLimits bl;
    AioContext *ctx;                /* GS: home context */
    int refcnt;                     /* GS */

    ListNode children TSA_GUARDED_BY(graph_lock);   /* BdrvChild.next */
    ListNode parents TSA_GUARDED_BY(graph_lock);    /* BdrvChild.next_parent */
    BdrvChild *file TSA_GUARDED_BY(graph_lock);     /* shortcuts into children */
    BdrvChild *backing TSA_GUARDED_BY(graph_lock);

    uint64_t perm;                  /* GS: cumulative, committed */
    uint64_t shared_perm;

    int quiesce_counter;            /* GS: depth of drained sections */
    unsigned in_flight;             /* atomic: requests being processed */

    /* Requests that must not overlap (read-modify-write of unaligned
     * writes) and those waiting for them. */
    CoMutex reqs_lock;
    ListNode tracked_requests TSA_FIELD_GUARDED_BY(reqs_lock);

    /* Dirty bitmaps that writes to this node mark (dirty-bitmap.h). */
    BdMutex dirty_bitmap_mutex;
    ListNode dirty_bitmaps TSA_FIELD_GUARDED_BY(dirty_bitmap_mutex);
    unsigned dirty_bitmap_count;    /* atomic: cheap "none" test */

    ListNode all_node;              /* GS: in the list of all nodes */
};

/* Default child permissions by role (filters, formats, backing files). */
void bdrv_default_child_perm(BlockDriverState *bs, BdrvChild *c, unsigned role,
                             uint64_t parent_perm, uint64_t parent_shared,
                             uint64_t *nperm, uint64_t *nshared);

#endif /* BLOCKD_BLOCK_INT_H */
