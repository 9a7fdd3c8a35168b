/*
 * quorum.c - the "quorum" driver: N copies of a disk, written together,
 * read by majority (docs/quorum.md).  A read goes to every child at once
 * (read-pattern=quorum) and the content that at least vote-threshold
 * children returned wins; children that returned something else, or
 * failed, are reported with QUORUM_REPORT_BAD (and with rewrite-corrupted
 * get the winning content written back); fewer than vote-threshold in
 * agreement fails the request with QUORUM_FAILURE.  read-pattern=fifo
 * reads the first child that answers.  Writes go to every child and
 * succeed when vote-threshold of them do.  x-blockdev-change adds and
 * removes children while the node runs.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/block-global-state.h"
#include "blockd/block-io.h"
#include "blockd/coroutine.h"
#include "blockd/iov.h"
#include "blockd/log.h"
#include "blockd/main-loop.h"
#include "blockd/options.h"
#include "block-internal.h"

#define QUORUM_MAX_CHILDREN 64

typedef struct QuorumState {
    /* Changed only with the node drained (open, x-blockdev-change). */
    BdrvChild *children[QUORUM_MAX_CHILDREN];
    int num_children;
    unsigned next_index;        /* of the next "children.N" */
    int threshold;
    bool blkverify;
    bool rewrite_corrupted;
    bool fifo;
} QuorumState;

typedef enum { OP_READ, OP_WRITE, OP_ZEROES } OpKind;

/* One child's part of a request, run as a coroutine of its own. */
typedef struct ChildOp {
    BdrvChild *child;
    OpKind kind;
    int64_t offset, bytes;
    struct iovec *iov;          /* writes: the caller's */
    int niov, flags;
    uint8_t *buf;               /* reads: this child's copy */
    int ret;
    int *pending;
    Coroutine *waiter;
} ChildOp;

/* ---- Events ------------------------------------------------------------------------ */

static void sectors(int64_t offset, int64_t bytes, json_object *data)
{
    int64_t start = offset / 512, end = (offset + bytes + 511) / 512;

    json_object_object_add(data, "sector-num", json_object_new_int64(start));
    json_object_object_add(data, "sectors-count", json_object_new_int64(end - start));
}

static void report_bad(const char *type, BdrvChild *c, int64_t offset, int64_t bytes, int err)
    GRAPH_RDLOCK
{
    json_object *data = json_object_new_object();

    json_object_object_add(data, "type", json_object_new_string(type));
    if (err < 0) {
        json_object_object_add(data, "error", json_object_new_string(strerror(-err)));
    }
    json_object_object_add(data, "node-name", json_object_new_string(c->bs->node_name));
    sectors(offset, bytes, data);
    bdrv_emit_event("QUORUM_REPORT_BAD", data);
}

static void report_failure(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    json_object *data = json_object_new_object();

    json_object_object_add(data, "reference", json_object_new_string(bs->node_name));
    sectors(offset, bytes, data);
    bdrv_emit_event("QUORUM_FAILURE", data);
}

/* ---- Running the children's parts together ---------------------------------------- */

static void coroutine_fn child_op_entry(void *opaque)
{
    ChildOp *op = opaque;
    struct iovec one = { op->buf, (size_t)op->bytes };

    graph_co_rdlock();
    switch (op->kind) {
    case OP_READ:
        op->ret = bdrv_co_preadv(op->child, op->offset, op->bytes, &one, 1, op->flags);
        break;
    case OP_WRITE:
        op->ret = op->buf ? bdrv_co_pwritev(op->child, op->offset, op->bytes, &one, 1, op->flags)
                          : bdrv_co_pwritev(op->child, op->offset, op->bytes, op->iov, op->niov,
                                            op->flags);
        break;
    default:
        op->ret = bdrv_co_pwrite_zeroes(op->child, op->offset, op->bytes, op->flags);
        break;
    }
    graph_co_rdunlock();
    /* The parts run in the caller's thread: the count needs no atomics. */
    if (--*op->pending == 0) {
        aio_co_wake(op->waiter);
    }
}

/* Run @n parts at once and wait for all of them. */
static void coroutine_fn run_all(ChildOp *ops, int n)
{
    int pending = n;

    for (int i = 0; i < n; i++) {
        ops[i].pending = &pending;
        ops[i].waiter = coroutine_self();
        aio_co_enter(current_aio_context(), coroutine_create(child_op_entry, &ops[i]));
    }
    if (n > 0) {
        coroutine_yield();
    }
}

/* The most common error among failed parts (ties: the first seen). */
static int common_error(const ChildOp *ops, int n)
{
    int best = -EIO, best_count = 0;

    for (int i = 0; i < n; i++) {
        int count = 0;

        for (int j = 0; j < n; j++) {
            count += ops[j].ret < 0 && ops[j].ret == ops[i].ret;
        }
        if (ops[i].ret < 0 && count > best_count) {
            best = ops[i].ret;
            best_count = count;
        }
    }
    return best;
}

/* ---- Reads ------------------------------------------------------------------------- */

static int coroutine_fn read_fifo(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                  struct iovec *iov, int niov, int flags) GRAPH_RDLOCK
{
    QuorumState *s = bs->opaque;
    int ret = -EIO;

    for (int i = 0; i < s->num_children; i++) {
        ret = bdrv_co_preadv(s->children[i], offset, bytes, iov, niov, flags);
        if (ret == 0) {
            return 0;
        }
        report_bad("read", s->children[i], offset, bytes, ret);
    }
    return ret;
}

/* The part whose content most good parts share; *@votes of them. */
static int winner(const ChildOp *ops, int n, size_t len, int *votes)
{
    int best = -1;

    *votes = 0;
    for (int i = 0; i < n; i++) {
        int count = 0;

        for (int j = 0; j < n && ops[i].ret == 0; j++) {
            count += ops[j].ret == 0 && memcmp(ops[i].buf, ops[j].buf, len) == 0;
        }
        if (count > *votes) {
            best = i;
            *votes = count;
        }
    }
    return best;
}

/* Write the winning content back over the children that differed. */
static void coroutine_fn rewrite(ChildOp *ops, int n, int win, size_t len)
{
    ChildOp w[QUORUM_MAX_CHILDREN];
    int k = 0;

    for (int i = 0; i < n; i++) {
        if (ops[i].ret == 0 && memcmp(ops[i].buf, ops[win].buf, len) != 0) {
            w[k] = ops[i];
            w[k].kind = OP_WRITE;
            w[k].buf = ops[win].buf;
            w[k].flags = 0;
            k++;
        }
    }
    run_all(w, k);
}

static int vote(BlockDriverState *bs, ChildOp *ops, int n, int64_t offset, int64_t bytes,
                int *win) GRAPH_RDLOCK
{
    QuorumState *s = bs->opaque;
    int votes, good = 0;

    for (int i = 0; i < n; i++) {
        good += ops[i].ret == 0;
    }
    *win = winner(ops, n, (size_t)bytes, &votes);
    if (good < s->threshold || votes < s->threshold) {
        if (s->blkverify && good == n) {
            log_msg(LOG_LEVEL_ERROR, "quorum node '%s': offset=%lld bytes=%lld contents "
                    "mismatch", bs->node_name, (long long)offset, (long long)bytes);
        }
        report_failure(bs, offset, bytes);
        return good < s->threshold ? common_error(ops, n) : -EIO;
    }
    for (int i = 0; i < n; i++) {
        if (ops[i].ret == 0 && memcmp(ops[i].buf, ops[*win].buf, (size_t)bytes) != 0) {
            report_bad("read", ops[i].child, offset, bytes, 0);
        }
    }
    return 0;
}

static int coroutine_fn quorum_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                      struct iovec *iov, int niov, int flags) GRAPH_RDLOCK
{
    QuorumState *s = bs->opaque;
    ChildOp ops[QUORUM_MAX_CHILDREN];
    int n = s->num_children, win = -1, ret;

    if (s->fifo) {
        return read_fifo(bs, offset, bytes, iov, niov, flags);
    }
    for (int i = 0; i < n; i++) {
        ops[i] = (ChildOp){ .child = s->children[i], .kind = OP_READ, .offset = offset,
                            .bytes = bytes, .flags = flags, .buf = malloc((size_t)bytes) };
    }
    run_all(ops, n);
    for (int i = 0; i < n; i++) {
        if (ops[i].ret < 0) {
            report_bad("read", ops[i].child, offset, bytes, ops[i].ret);
        }
    }
    ret = vote(bs, ops, n, offset, bytes, &win);
    if (ret == 0) {
        iov_from_buf(iov, niov, 0, ops[win].buf, (size_t)bytes);
        if (s->rewrite_corrupted) {
            rewrite(ops, n, win, (size_t)bytes);
        }
    }
    for (int i = 0; i < n; i++) {
        free(ops[i].buf);
    }
    return ret;
}

/* ---- Writes ------------------------------------------------------------------------ */

static int coroutine_fn write_all(BlockDriverState *bs, OpKind kind, int64_t offset,
                                  int64_t bytes, struct iovec *iov, int niov, int flags)
    GRAPH_RDLOCK
{
    QuorumState *s = bs->opaque;
    ChildOp ops[QUORUM_MAX_CHILDREN];
    int n = s->num_children, good = 0;

    for (int i = 0; i < n; i++) {
        ops[i] = (ChildOp){ .child = s->children[i], .kind = kind, .offset = offset,
                            .bytes = bytes, .iov = iov, .niov = niov, .flags = flags };
    }
    run_all(ops, n);
    for (int i = 0; i < n; i++) {
        if (ops[i].ret < 0) {
            report_bad("write", ops[i].child, offset, bytes, ops[i].ret);
        }
        good += ops[i].ret == 0;
    }
    if (good < s->threshold) {
        report_failure(bs, offset, bytes);
        return common_error(ops, n);
    }
    return 0;
}

static int coroutine_fn quorum_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                       struct iovec *iov, int niov, int flags) GRAPH_RDLOCK
{
    return write_all(bs, OP_WRITE, offset, bytes, iov, niov, flags);
}

static int coroutine_fn quorum_pwrite_zeroes(BlockDriverState *bs, int64_t offset,
                                             int64_t bytes, int flags) GRAPH_RDLOCK
{
    return write_all(bs, OP_ZEROES, offset, bytes, NULL, 0, flags);
}

static int coroutine_fn quorum_flush(BlockDriverState *bs) GRAPH_RDLOCK
{
    QuorumState *s = bs->opaque;
    int good = 0, err = -EIO;

    for (int i = 0; i < s->num_children; i++) {
        int ret = bdrv_co_flush(s->children[i]->bs);

        if (ret < 0) {
            report_bad("flush", s->children[i], 0, 0, ret);
            err = ret;
        }
        good += ret == 0;
    }
    return good >= s->threshold ? 0 : err;
}

/* ---- Children ---------------------------------------------------------------------- */

static BdrvChild *open_child(BlockDriverState *bs, json_object *ref, Error **errp)
{
    QuorumState *s = bs->opaque;
    json_object *tmp = json_object_new_object();
    char name[32];
    BdrvChild *c;

    snprintf(name, sizeof(name), "children.%u", s->next_index);
    json_object_object_add(tmp, name, json_object_get(ref));
    c = bdrv_open_child(bs, tmp, name, BDRV_CHILD_DATA, true, errp);
    json_object_put(tmp);
    if (c) {
        s->children[s->num_children++] = c;
        s->next_index++;
    }
    return c;
}

static bool check_options(QuorumState *s, Error **errp)
{
    if (s->num_children < 1) {
        error_setg(errp, "Number of provided children must be 1 or more");
        return false;
    }
    if (s->threshold < 1) {
        error_setg(errp, "Parameter 'vote-threshold' expects a value >= 1");
        return false;
    }
    if (s->threshold > s->num_children) {
        error_setg(errp, "threshold may not exceed children count");
        return false;
    }
    if (s->blkverify && (s->num_children != 2 || s->threshold != 2)) {
        error_setg(errp, "blkverify=on can only be set if there are exactly two files and "
                   "vote-threshold is 2");
        return false;
    }
    if (s->rewrite_corrupted && s->blkverify) {
        error_setg(errp, "rewrite-corrupted=on cannot be used with blkverify=on");
        return false;
    }
    return true;
}

static int quorum_open(BlockDriverState *bs, json_object *options, int flags, Error **errp)
{
    static const char *const patterns[] = { "quorum", "fifo", NULL };
    QuorumState *s = bs->opaque;
    json_object *children = NULL;
    int64_t threshold = 0;
    int pattern = 0;

    (void)flags;
    if (!opt_get_int(options, "vote-threshold", &threshold, errp) ||
        !opt_get_bool(options, "blkverify", &s->blkverify, errp) ||
        !opt_get_bool(options, "rewrite-corrupted", &s->rewrite_corrupted, errp) ||
        !opt_get_enum(options, "read-pattern", patterns, &pattern, errp)) {
        return -1;
    }
    s->threshold = threshold > 0 && threshold <= QUORUM_MAX_CHILDREN ? (int)threshold
                   : threshold > 0 ? QUORUM_MAX_CHILDREN + 1 : 0;
    s->fifo = pattern == 1;
    json_object_object_get_ex(options, "children", &children);
    s->num_children = children ? (int)json_object_array_length(children) : 0;
    if (s->num_children > QUORUM_MAX_CHILDREN) {
        error_setg(errp, "A quorum takes at most %d children", QUORUM_MAX_CHILDREN);
        return -1;
    }
    if (!check_options(s, errp)) {
        return -1;
    }
    if (s->fifo && s->rewrite_corrupted) {
        error_setg(errp, "rewrite-corrupted=on cannot be used with read-pattern=fifo");
        return -1;
    }
    s->num_children = 0;
    for (size_t i = 0; i < json_object_array_length(children); i++) {
        if (!open_child(bs, json_object_array_get_idx(children, i), errp)) {
            return -1;
        }
    }
    graph_rdlock_main_loop();
    bs->total_bytes = bdrv_getlength(s->children[0]->bs);
    for (int i = 0; i < s->num_children; i++) {
        uint32_t a = s->children[i]->bs->bl.request_alignment;

        bs->bl.request_alignment = a > bs->bl.request_alignment ? a : bs->bl.request_alignment;
    }
    graph_rdunlock_main_loop();
    return 0;
}

/* x-blockdev-change: the node is drained around both. */
static int quorum_add_child(BlockDriverState *bs, BlockDriverState *child, Error **errp)
{
    QuorumState *s = bs->opaque;
    json_object *ref;
    BdrvChild *c;

    if (s->blkverify) {
        error_setg(errp, "Cannot add a child to a quorum in blkverify mode");
        return -ENOTSUP;
    }
    if (s->num_children == QUORUM_MAX_CHILDREN) {
        error_setg(errp, "Too many children");
        return -E2BIG;
    }
    ref = json_object_new_string(child->node_name);
    c = open_child(bs, ref, errp);
    json_object_put(ref);
    return c ? 0 : -EINVAL;
}

static int quorum_del_child(BlockDriverState *bs, BdrvChild *child, Error **errp)
{
    QuorumState *s = bs->opaque;
    int i;

    for (i = 0; i < s->num_children && s->children[i] != child; i++) {
    }
    if (i == s->num_children) {
        error_setg(errp, "Invalid child");
        return -EINVAL;
    }
    if (s->num_children <= s->threshold) {
        error_setg(errp, "The number of children cannot be lower than the vote threshold %d",
                   s->threshold);
        return -EINVAL;
    }
    /* The name of the last child becomes free again. */
    if (i == s->num_children - 1 &&
        strcmp(child->name + strlen("children."), "") != 0 &&
        (unsigned)atoi(child->name + strlen("children.")) == s->next_index - 1) {
        s->next_index--;
    }
    memmove(&s->children[i], &s->children[i + 1],
            (size_t)(s->num_children - i - 1) * sizeof(s->children[0]));
    s->num_children--;
    bdrv_unref_child(bs, child);
    return 0;
}

const BlockDriver bdrv_quorum = {
    .format_name = "quorum",
    .instance_size = sizeof(QuorumState),
    .bdrv_open = quorum_open,
    .bdrv_add_child = quorum_add_child,
    .bdrv_del_child = quorum_del_child,
    .bdrv_co_preadv = quorum_preadv,
    .bdrv_co_pwritev = quorum_pwritev,
    .bdrv_co_pwrite_zeroes = quorum_pwrite_zeroes,
    .bdrv_co_flush = quorum_flush,
    .supported_write_flags = BDRV_REQ_FUA,
    .supported_zero_flags = BDRV_REQ_FUA | BDRV_REQ_MAY_UNMAP,
};
