/*
 * job-filter.c - pass-through filter nodes with hooks for block jobs.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/atomic.h"
#include "blockd/block-global-state.h"
#include "blockd/block-io.h"
#include "blockd/main-loop.h"
#include "job-filter.h"

typedef struct JobFilterState {
    const JobFilterOps *ops;            /* immutable */
    void *opaque;                       /* atomic: NULL once deactivated */
} JobFilterState;

static int job_filter_open(BlockDriverState *bs, json_object *options, int flags,
                           Error **errp)
{
    (void)flags;
    return bdrv_open_file_as_own(bs, options, BDRV_CHILD_FILTERED | BDRV_CHILD_PRIMARY, errp);
}

static int coroutine_fn job_filter_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                          struct iovec *iov, int niov, int flags) GRAPH_RDLOCK
{
    return bdrv_co_preadv(bs->file, offset, bytes, iov, niov, flags);
}

static int coroutine_fn before_write(BlockDriverState *bs, int64_t offset, int64_t bytes)
    GRAPH_RDLOCK
{
    JobFilterState *s = bs->opaque;
    void *opaque = atomic_load_acquire(&s->opaque);

    return opaque && s->ops->before_write ? s->ops->before_write(opaque, offset, bytes) : 0;
}

static int coroutine_fn job_filter_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                           struct iovec *iov, int niov, int flags) GRAPH_RDLOCK
{
    JobFilterState *s = bs->opaque;
    void *opaque = atomic_load_acquire(&s->opaque);
    int ret = before_write(bs, offset, bytes);

    if (ret < 0) {
        return ret;
    }
    if (opaque && s->ops->pwritev) {
        return s->ops->pwritev(opaque, bs->file, offset, bytes, iov, niov, flags);
    }
    return bdrv_co_pwritev(bs->file, offset, bytes, iov, niov, flags);
}

static int coroutine_fn job_filter_pwrite_zeroes(BlockDriverState *bs, int64_t offset,
                                                 int64_t bytes, int flags) GRAPH_RDLOCK
{
    int ret = before_write(bs, offset, bytes);
    return ret < 0 ? ret : bdrv_co_pwrite_zeroes(bs->file, offset, bytes, flags);
}

static int coroutine_fn job_filter_pdiscard(BlockDriverState *bs, int64_t offset,
                                            int64_t bytes) GRAPH_RDLOCK
{
    int ret = before_write(bs, offset, bytes);
    return ret < 0 ? ret : bdrv_co_pdiscard(bs->file, offset, bytes);
}

/*
 * The filter above the top of an intermediate commit: it only reads, and
 * lets the job write the layers below, which the overlay above would
 * otherwise forbid (a backing file must not change under its user).
 */
static void share_all_child_perm(BlockDriverState *bs, BdrvChild *c, unsigned role,
                                 uint64_t perm, uint64_t shared, uint64_t *nperm,
                                 uint64_t *nshared)
{
    (void)bs; (void)c; (void)role; (void)shared;
    *nperm = perm & BLK_PERM_CONSISTENT_READ;
    *nshared = BLK_PERM_ALL;
}

#define JOB_FILTER_DRIVER(name, child_perm)                             \
    {                                                                   \
        .format_name = name,                                            \
        .bdrv_child_perm = child_perm,                                  \
        .instance_size = sizeof(JobFilterState),                        \
        .is_filter = true,                                              \
        .bdrv_open = job_filter_open,                                   \
        .bdrv_co_preadv = job_filter_preadv,                            \
        .bdrv_co_pwritev = job_filter_pwritev,                          \
        .bdrv_co_pwrite_zeroes = job_filter_pwrite_zeroes,              \
        .bdrv_co_pdiscard = job_filter_pdiscard,                        \
        .supported_write_flags = BDRV_REQ_FUA,                          \
        .supported_zero_flags = BDRV_REQ_FUA | BDRV_REQ_MAY_UNMAP,      \
    }

/* Not registered: these nodes exist only while their job runs. */
static const BlockDriver filter_drivers[] = {
    JOB_FILTER_DRIVER("mirror_top", NULL),
    JOB_FILTER_DRIVER("copy-before-write", NULL),
    JOB_FILTER_DRIVER("copy-on-read", NULL),
    JOB_FILTER_DRIVER("commit_top", share_all_child_perm),
};

BlockDriverState *job_filter_insert(const JobFilterOps *ops, const char *node_name,
                                    BlockDriverState *source, void *opaque, Error **errp)
{
    const BlockDriver *drv = NULL;
    BlockDriverState *bs;
    json_object *options;
    JobFilterState *s;

    GLOBAL_STATE_CODE();
    for (size_t i = 0; i < sizeof(filter_drivers) / sizeof(filter_drivers[0]); i++) {
        if (!strcmp(filter_drivers[i].format_name, ops->format_name)) {
            drv = &filter_drivers[i];
        }
    }
    assert(drv);
    options = json_object_new_object();
    json_object_object_add(options, "driver", json_object_new_string(ops->format_name));
    json_object_object_add(options, "file", json_object_new_string(source->node_name));
    bs = bdrv_open_driver(drv, node_name, options, source->open_flags, errp);
    json_object_put(options);
    if (!bs) {
        return NULL;
    }
    s = bs->opaque;
    s->ops = ops;
    bs->ctx = source->ctx;          /* the job runs where the source lives */
    atomic_store_release(&s->opaque, opaque);
    if (bdrv_replace_node(source, bs, errp) < 0) {
        job_filter_deactivate(bs);
        bdrv_unref(bs);
        return NULL;
    }
    return bs;
}

void job_filter_activate(BlockDriverState *filter, void *opaque)
{
    JobFilterState *s = filter->opaque;

    GLOBAL_STATE_CODE();
    atomic_store_release(&s->opaque, opaque);
}

void job_filter_deactivate(BlockDriverState *filter)
{
    JobFilterState *s = filter->opaque;

    GLOBAL_STATE_CODE();
    /* Requests already inside a hook finish before the drain ends. */
    bdrv_drained_begin(filter);
    atomic_store_release(&s->opaque, NULL);
    bdrv_drained_end(filter);
}

int job_filter_remove(BlockDriverState *filter, BlockDriverState *replacement, Error **errp)
{
    int ret;

    GLOBAL_STATE_CODE();
    job_filter_deactivate(filter);
    ret = bdrv_replace_node(filter, replacement, errp);
    bdrv_unref(filter);
    return ret;
}

void *job_filter_create_job(const JobFilterOps *ops, const BlockJobDriver *drv,
                            const MirrorArgs *a, BlockDriverState *main_node,
                            BlockDriverState **filter, Error **errp)
{
    int flags = (a->auto_finalize ? 0 : JOB_MANUAL_FINALIZE) |
                (a->auto_dismiss ? 0 : JOB_MANUAL_DISMISS);
    BlockDriverState *bs;
    void *job;

    GLOBAL_STATE_CODE();
    bs = job_filter_insert(ops, a->filter_node_name, a->source, NULL, errp);
    if (!bs) {
        return NULL;
    }
    /* By default the job's main node is the filter: draining the source
     * pauses it. */
    job = block_job_create(a->job_id, drv, a->txn, main_node ? main_node : bs, 0,
                           BLK_PERM_ALL, a->speed, flags, NULL, NULL, errp);
    if (!job) {
        job_filter_remove(bs, a->source, NULL);
        return NULL;
    }
    *filter = bs;
    return job;
}

bool job_filter_check_nodes(const MirrorArgs *a, const char *same_node_msg, Error **errp)
{
    GLOBAL_STATE_CODE();
    /* Before any graph change: a block job without id gets the empty one. */
    if (!job_check_id(a->job_id ? a->job_id : "", 0, errp)) {
        return false;
    }
    if (a->source == a->target) {
        error_setg(errp, "%s", same_node_msg);
        return false;
    }
    return true;
}

bool job_filter_check_target(const MirrorArgs *a, Error **errp)
{
    GLOBAL_STATE_CODE();
    if (bdrv_getlength(a->source) != bdrv_getlength(a->target)) {
        error_setg(errp, "Source and target image have different sizes");
        return false;
    }
    if (a->target->read_only) {
        error_setg(errp, "Block node '%s' is read-only", a->target->node_name);
        return false;
    }
    return true;
}
