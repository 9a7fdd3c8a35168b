/*
 * vhost-user-blk.c - the "vhost-user-blk" export type: a virtio-blk device
 * served over vhost-user (vhost-user.c), its requests read straight from
 * guest memory into the block layer and back, without a bounce copy.
 *
 * Options as qemu-storage-daemon takes them: "addr" (unix or fd),
 * "logical-block-size", "num-queues"; queue i is served in the export's
 * context, or in iothread i mod n of blockd's "iothreads" list.
 *
 * Every request is checked before it reaches the node: a header of the
 * wrong size, a sector outside the disk or misaligned to the logical
 * block size, a write on a read-only export, an unknown type -- each gets
 * its status (IOERR, UNSUPP).  Only a request with no room for a status
 * stops the queue (vu_queue_break).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "blockd/block-backend-io.h"
#include "blockd/coroutine.h"
#include "blockd/export-driver.h"
#include "blockd/iov.h"
#include "blockd/main-loop.h"
#include "blockd/options.h"
#include "blockd/sockets.h"
#include "export-types.h"
#include "vhost-user.h"

/* virtio-blk (virtio 1.x, "Block Device") */
#define VIRTIO_BLK_F_SIZE_MAX     1
#define VIRTIO_BLK_F_SEG_MAX      2
#define VIRTIO_BLK_F_RO           5
#define VIRTIO_BLK_F_BLK_SIZE     6
#define VIRTIO_BLK_F_FLUSH        9
#define VIRTIO_BLK_F_TOPOLOGY     10
#define VIRTIO_BLK_F_CONFIG_WCE   11
#define VIRTIO_BLK_F_MQ           12
#define VIRTIO_BLK_F_DISCARD      13
#define VIRTIO_BLK_F_WRITE_ZEROES 14
#define VIRTIO_RING_F_INDIRECT_DESC 28
#define VIRTIO_RING_F_EVENT_IDX   29
#define VIRTIO_F_VERSION_1        32

#define VIRTIO_BLK_T_IN           0
#define VIRTIO_BLK_T_OUT          1
#define VIRTIO_BLK_T_FLUSH        4
#define VIRTIO_BLK_T_GET_ID       8
#define VIRTIO_BLK_T_DISCARD      11
#define VIRTIO_BLK_T_WRITE_ZEROES 13
#define VIRTIO_BLK_T_BARRIER      0x80000000u

#define VIRTIO_BLK_S_OK           0
#define VIRTIO_BLK_S_IOERR        1
#define VIRTIO_BLK_S_UNSUPP       2

#define VIRTIO_BLK_ID_BYTES       20
#define WRITE_ZEROES_FLAG_UNMAP   1
#define SECTOR_BITS               9

/* Limits the config space announces (qemu-storage-daemon's). */
#define MAX_DISCARD_SECTORS       32768
#define MAX_WRITE_ZEROES_SECTORS  32768
#define SEG_MAX                   (128 - 2)
/* The largest read or write: the block layer's int-sized requests. */
#define MAX_REQUEST_BYTES         (1LL << 30)

typedef struct __attribute__((packed)) VirtioBlkConfig {
    uint64_t capacity;                  /* in 512-byte sectors */
    uint32_t size_max;
    uint32_t seg_max;
    uint16_t cylinders;
    uint8_t heads;
    uint8_t sectors;
    uint32_t blk_size;
    uint8_t physical_block_exp;
    uint8_t alignment_offset;
    uint16_t min_io_size;
    uint32_t opt_io_size;
    uint8_t wce;
    uint8_t unused0;
    uint16_t num_queues;
    uint32_t max_discard_sectors;
    uint32_t max_discard_seg;
    uint32_t discard_sector_alignment;
    uint32_t max_write_zeroes_sectors;
    uint32_t max_write_zeroes_seg;
    uint8_t write_zeroes_may_unmap;
    uint8_t unused1[3];
} VirtioBlkConfig;

typedef struct VuBlkExport {
    BlockExport *exp;
    VuDev *dev;
    char *unix_path;                    /* removed at shutdown */
    uint32_t blk_size;
    VirtioBlkConfig config;             /* main thread */
    BH *resize_bh;
} VuBlkExport;

typedef struct VuBlkRequest {
    VuBlkExport *vexp;
    VuQueue *q;
    unsigned head;
    int out_num;
    int in_num;
    struct iovec iov[];                 /* out, then in */
} VuBlkRequest;

/* ---- Requests (in the queue's context) ------------------------------------------ */

/* Drop the first @bytes of the vector (*@iov, *@n). */
static void iov_skip(struct iovec **iov, int *n, size_t bytes)
{
    while (*n > 0 && bytes >= (*iov)->iov_len) {
        bytes -= (*iov)->iov_len;
        (*iov)++;
        (*n)--;
    }
    if (*n > 0) {
        (*iov)->iov_base = (uint8_t *)(*iov)->iov_base + bytes;
        (*iov)->iov_len -= bytes;
    }
}

/* Is [sector, + bytes) a request the disk can take? */
static bool range_ok(VuBlkExport *vexp, uint64_t sector, uint64_t bytes)
{
    int64_t len = blk_co_getlength(blk_exp_blk(vexp->exp));
    uint64_t total = len < 0 ? 0 : (uint64_t)len >> SECTOR_BITS;

    if (bytes % 512 || bytes > MAX_REQUEST_BYTES) {
        return false;
    }
    if (sector > total || (sector << SECTOR_BITS) % vexp->blk_size) {
        return false;
    }
    return (bytes >> SECTOR_BITS) <= total - sector;
}

static int coroutine_fn do_rw(VuBlkExport *vexp, uint64_t sector, struct iovec *iov, int n,
                              bool write, uint32_t *written)
{
    BlockBackend *blk = blk_exp_blk(vexp->exp);
    uint64_t bytes = iov_size(iov, n);
    int ret;

    if (write && !blk_exp_writable(vexp->exp)) {
        return VIRTIO_BLK_S_IOERR;
    }
    if (!range_ok(vexp, sector, bytes)) {
        return VIRTIO_BLK_S_IOERR;
    }
    if (write) {
        ret = blk_co_pwritev(blk, (int64_t)(sector << SECTOR_BITS), (int64_t)bytes, iov, n, 0);
    } else {
        ret = blk_co_preadv(blk, (int64_t)(sector << SECTOR_BITS), (int64_t)bytes, iov, n, 0);
        *written = (uint32_t)bytes;
    }
    return ret < 0 ? VIRTIO_BLK_S_IOERR : VIRTIO_BLK_S_OK;
}

/* DISCARD and WRITE_ZEROES: one segment {sector, num_sectors, flags}. */
static int coroutine_fn do_zero_discard(VuBlkExport *vexp, uint32_t type, struct iovec *iov,
                                        int n)
{
    struct __attribute__((packed)) { uint64_t sector; uint32_t num; uint32_t flags; } seg;
    BlockBackend *blk = blk_exp_blk(vexp->exp);
    bool zero = type == VIRTIO_BLK_T_WRITE_ZEROES;
    uint32_t max = zero ? MAX_WRITE_ZEROES_SECTORS : MAX_DISCARD_SECTORS;
    int64_t offset, bytes;
    int ret;

    if (!blk_exp_writable(vexp->exp)) {
        return VIRTIO_BLK_S_IOERR;
    }
    if (iov_size(iov, n) > sizeof(seg)) {
        return VIRTIO_BLK_S_UNSUPP;     /* max_discard_seg is 1 */
    }
    if (iov_to_buf(iov, n, 0, &seg, sizeof(seg)) != sizeof(seg) || seg.num > max ||
        !range_ok(vexp, seg.sector, (uint64_t)seg.num << SECTOR_BITS)) {
        return VIRTIO_BLK_S_IOERR;
    }
    /* Unknown flags, and unmap on a discard, are refused as the spec says. */
    if ((seg.flags & ~WRITE_ZEROES_FLAG_UNMAP) || (!zero && seg.flags)) {
        return VIRTIO_BLK_S_UNSUPP;
    }
    offset = (int64_t)(seg.sector << SECTOR_BITS);
    bytes = (int64_t)seg.num << SECTOR_BITS;
    if (zero) {
        ret = blk_co_pwrite_zeroes(blk, offset, bytes,
                                   (seg.flags & WRITE_ZEROES_FLAG_UNMAP) ? BDRV_REQ_MAY_UNMAP : 0);
    } else {
        ret = blk_co_pdiscard(blk, offset, bytes);
    }
    return ret < 0 ? VIRTIO_BLK_S_IOERR : VIRTIO_BLK_S_OK;
}

/* GET_ID: the serial qemu-storage-daemon's export gives. */
static int do_get_id(struct iovec *iov, int n, uint32_t *written)
{
    char id[VIRTIO_BLK_ID_BYTES] = "vhost_user_blk";
    size_t len = iov_size(iov, n);

    *written = (uint32_t)iov_from_buf(iov, n, 0, id, len < sizeof(id) ? len : sizeof(id));
    return VIRTIO_BLK_S_OK;
}

static int coroutine_fn do_request(VuBlkExport *vexp, struct iovec *out, int out_num,
                                   struct iovec *in, int in_num, uint32_t *written)
{
    struct __attribute__((packed)) { uint32_t type; uint32_t ioprio; uint64_t sector; } hdr;
    uint32_t type;
    int status;

    if (iov_to_buf(out, out_num, 0, &hdr, sizeof(hdr)) != sizeof(hdr)) {
        return VIRTIO_BLK_S_IOERR;
    }
    iov_skip(&out, &out_num, sizeof(hdr));
    type = hdr.type & ~VIRTIO_BLK_T_BARRIER;
    if (type == VIRTIO_BLK_T_GET_ID) {
        return do_get_id(in, in_num, written);
    }
    if (type != VIRTIO_BLK_T_IN && type != VIRTIO_BLK_T_OUT && type != VIRTIO_BLK_T_FLUSH &&
        type != VIRTIO_BLK_T_DISCARD && type != VIRTIO_BLK_T_WRITE_ZEROES) {
        return VIRTIO_BLK_S_UNSUPP;
    }
    blk_exp_co_request_begin(vexp->exp);
    switch (type) {
    case VIRTIO_BLK_T_IN:
        status = do_rw(vexp, hdr.sector, in, in_num, false, written);
        break;
    case VIRTIO_BLK_T_OUT:
        status = do_rw(vexp, hdr.sector, out, out_num, true, written);
        break;
    case VIRTIO_BLK_T_FLUSH:
        status = blk_co_flush(blk_exp_blk(vexp->exp)) < 0 ? VIRTIO_BLK_S_IOERR : VIRTIO_BLK_S_OK;
        break;
    default:
        status = do_zero_discard(vexp, type, out, out_num);
        break;
    }
    blk_exp_request_end(vexp->exp);
    return status;
}

static void coroutine_fn request_entry(void *opaque)
{
    VuBlkRequest *r = opaque;
    struct iovec *out = r->iov, *in = r->iov + r->out_num;
    int in_num = r->in_num;
    uint32_t written = 0;
    uint8_t *status;

    /* The status is the last byte the guest gave us to write. */
    while (in_num > 0 && in[in_num - 1].iov_len == 0) {
        in_num--;
    }
    if (in_num == 0) {
        vu_queue_break(r->q, r->head, "request without room for its status");
        free(r);
        return;
    }
    status = (uint8_t *)in[in_num - 1].iov_base + in[in_num - 1].iov_len - 1;
    if (--in[in_num - 1].iov_len == 0) {
        in_num--;
    }
    *status = (uint8_t)do_request(r->vexp, out, r->out_num, in, in_num, &written);
    vu_queue_complete(r->q, r->head, written + 1);
    free(r);
}

static void vu_blk_process(VuQueue *q, const VqElem *elem)
{
    int n = elem->out_num + elem->in_num;
    VuBlkRequest *r = malloc(sizeof(*r) + (size_t)n * sizeof(struct iovec));

    if (!r) {
        abort();
    }
    r->vexp = vu_dev_opaque(vu_queue_dev(q));
    r->q = q;
    r->head = elem->head;
    r->out_num = elem->out_num;
    r->in_num = elem->in_num;
    memcpy(r->iov, elem->iov, (size_t)n * sizeof(struct iovec));
    coroutine_enter(coroutine_create(request_entry, r));
}

/* ---- The device (main thread) ------------------------------------------------------ */

static uint64_t vu_blk_get_features(VuDev *dev)
{
    VuBlkExport *vexp = vu_dev_opaque(dev);
    uint64_t f = 1ULL << VIRTIO_BLK_F_SIZE_MAX | 1ULL << VIRTIO_BLK_F_SEG_MAX |
                 1ULL << VIRTIO_BLK_F_TOPOLOGY | 1ULL << VIRTIO_BLK_F_BLK_SIZE |
                 1ULL << VIRTIO_BLK_F_FLUSH | 1ULL << VIRTIO_BLK_F_DISCARD |
                 1ULL << VIRTIO_BLK_F_WRITE_ZEROES | 1ULL << VIRTIO_BLK_F_CONFIG_WCE |
                 1ULL << VIRTIO_BLK_F_MQ | 1ULL << VIRTIO_F_VERSION_1 |
                 1ULL << VIRTIO_RING_F_INDIRECT_DESC | 1ULL << VIRTIO_RING_F_EVENT_IDX;

    if (!blk_exp_writable(vexp->exp)) {
        f |= 1ULL << VIRTIO_BLK_F_RO;
    }
    return f;
}

static uint32_t vu_blk_get_config(VuDev *dev, uint8_t *buf, uint32_t len)
{
    VuBlkExport *vexp = vu_dev_opaque(dev);

    memcpy(buf, &vexp->config, len < sizeof(vexp->config) ? len : sizeof(vexp->config));
    return sizeof(vexp->config);
}

/* Only the write cache can be changed (the guest's cache_type). */
static int vu_blk_set_config(VuDev *dev, const uint8_t *data, uint32_t offset,
                             uint32_t size, uint32_t flags)
{
    VuBlkExport *vexp = vu_dev_opaque(dev);

    if (flags != 0 || offset != offsetof(VirtioBlkConfig, wce) || size != 1) {
        return -EINVAL;
    }
    vexp->config.wce = data[0] != 0;
    blk_set_enable_write_cache(blk_exp_blk(vexp->exp), vexp->config.wce);
    return 0;
}

static const VuDevOps vu_blk_ops = {
    .get_features = vu_blk_get_features,
    .get_config = vu_blk_get_config,
    .set_config = vu_blk_set_config,
    .process = vu_blk_process,
};

static void resize_bh(void *opaque)
{
    VuBlkExport *vexp = opaque;
    int64_t len = blk_getlength(blk_exp_blk(vexp->exp));

    if (len >= 0) {
        vexp->config.capacity = (uint64_t)len >> SECTOR_BITS;
        vu_dev_config_changed(vexp->dev);
    }
}

static void vu_blk_resized(BlockExport *exp)
{
    VuBlkExport *vexp = blk_exp_state(exp);

    bh_schedule(vexp->resize_bh);
}

/* ---- Creating the export ---------------------------------------------------------------- */

static bool check_block_size(const char *id, int64_t size, Error **errp)
{
    if (size < 512 || size > 2 * 1024 * 1024) {
        error_setg(errp, "Property %s.logical-block-size doesn't take value %" PRId64
                   " (minimum: 512, maximum: 2097152)", id, size);
        return false;
    }
    if (size & (size - 1)) {
        error_setg(errp, "Property %s.logical-block-size doesn't take value '%" PRId64
                   "', it's not a power of 2", id, size);
        return false;
    }
    return true;
}

/* "addr": a unix socket we create, or a socket fd we were given. */
static int listen_on(json_object *addr, char **unix_path, Error **errp)
{
    const char *type = NULL, *path = NULL, *str = NULL;
    char *end;
    long fd;
    int sotype;
    socklen_t len = sizeof(sotype);

    if (!opt_get_str(addr, "type", &type, errp) || !opt_get_str(addr, "path", &path, errp) ||
        !opt_get_str(addr, "str", &str, errp)) {
        return -1;
    }
    if (strcmp(type, "unix") == 0) {
        int lfd = socket_listen_unix(path, 1, errp);

        if (lfd >= 0) {
            *unix_path = strdup(path);
        }
        return lfd;
    }
    if (strcmp(type, "fd") != 0) {
        error_setg(errp, "Only socket address types 'unix' and 'fd' are supported");
        return -1;
    }
    fd = strtol(str, &end, 10);
    if (*str == '\0' || *end != '\0' || fd < 0 || fd > 65535) {
        error_setg(errp, "Unable to parse FD number %s", str);
        return -1;
    }
    if (getsockopt((int)fd, SOL_SOCKET, SO_TYPE, &sotype, &len) < 0) {
        error_setg(errp, "File descriptor '%s' is not a socket", str);
        return -1;
    }
    if (sotype != SOCK_STREAM || listen((int)fd, 1) < 0) {
        error_setg_errno(errp, errno, "Failed to listen on socket");
        return -1;
    }
    fcntl((int)fd, F_SETFL, fcntl((int)fd, F_GETFL) | O_NONBLOCK);
    fcntl((int)fd, F_SETFD, FD_CLOEXEC);
    return (int)fd;
}

static void init_config(VuBlkExport *vexp, int num_queues)
{
    VirtioBlkConfig *c = &vexp->config;
    int64_t len = blk_getlength(blk_exp_blk(vexp->exp));

    c->capacity = len < 0 ? 0 : (uint64_t)len >> SECTOR_BITS;
    c->seg_max = SEG_MAX;
    c->blk_size = vexp->blk_size;
    c->min_io_size = 1;
    c->opt_io_size = 1;
    c->num_queues = (uint16_t)num_queues;
    c->max_discard_sectors = MAX_DISCARD_SECTORS;
    c->max_discard_seg = 1;
    c->discard_sector_alignment = vexp->blk_size >> SECTOR_BITS;
    c->max_write_zeroes_sectors = MAX_WRITE_ZEROES_SECTORS;
    c->max_write_zeroes_seg = 1;
    /* The cache the export really has (docs/vhost-user-blk.md): with a
     * write-back cache the guest flushes. */
    c->wce = !blk_exp_writethrough(vexp->exp);
}

static void *vu_blk_create(BlockExport *exp, json_object *options, Error **errp)
{
    VuBlkExport *vexp = calloc(1, sizeof(*vexp));
    int64_t blk_size = 512, num_queues = 1;
    AioContext **ctxs;
    json_object *addr = NULL;
    int lfd;

    if (!vexp) {
        abort();
    }
    vexp->exp = exp;
    json_object_object_get_ex(options, "addr", &addr);
    if (!opt_get_size(options, "logical-block-size", &blk_size, errp) ||
        !check_block_size(blk_exp_id(exp), blk_size, errp) ||
        !opt_get_int(options, "num-queues", &num_queues, errp)) {
        goto fail;
    }
    if (num_queues < 0 || num_queues > UINT16_MAX) {
        error_setg(errp, "Parameter 'num-queues' expects uint16_t");
        goto fail;
    }
    if (num_queues == 0) {
        error_setg(errp, "num-queues must be greater than 0");
        goto fail;
    }
    vexp->blk_size = (uint32_t)blk_size;
    lfd = listen_on(addr, &vexp->unix_path, errp);
    if (lfd < 0) {
        goto fail;
    }
    init_config(vexp, (int)num_queues);
    /* Queue i where the export's i-th user would go (round robin). */
    ctxs = calloc((size_t)num_queues, sizeof(*ctxs));
    if (!ctxs) {
        abort();
    }
    for (int i = 0; i < num_queues; i++) {
        ctxs[i] = blk_exp_next_ctx(exp);
    }
    vexp->resize_bh = aio_bh_new(main_aio_context(), resize_bh, vexp);
    vexp->dev = vu_dev_new(&vu_blk_ops, vexp, lfd, (int)num_queues, ctxs, (int)num_queues);
    free(ctxs);
    return vexp;

fail:
    free(vexp);
    return NULL;
}

static void vu_blk_request_shutdown(BlockExport *exp)
{
    VuBlkExport *vexp = blk_exp_state(exp);

    vu_dev_shutdown(vexp->dev);
    if (vexp->unix_path) {
        unlink(vexp->unix_path);
        free(vexp->unix_path);
        vexp->unix_path = NULL;
    }
}

static void vu_blk_free(void *state)
{
    VuBlkExport *vexp = state;

    vu_dev_free(vexp->dev);
    bh_delete(vexp->resize_bh);
    free(vexp->unix_path);
    free(vexp);
}

const BlockExportDriver blk_exp_vhost_user_blk = {
    .type = "vhost-user-blk",
    .create = vu_blk_create,
    .request_shutdown = vu_blk_request_shutdown,
    .resized = vu_blk_resized,
    .free = vu_blk_free,
};
