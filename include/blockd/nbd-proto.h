/*
 * nbd-proto.h - constants of the NBD protocol (doc/proto.md of the
 * NetworkBlockDevice project), and helpers to read and write its
 * big-endian fields.  Common.
 */
#ifndef BLOCKD_NBD_PROTO_H
#define BLOCKD_NBD_PROTO_H

#include <endian.h>
#include <stdint.h>
#include <string.h>

#define NBD_MAGIC                0x4e42444d41474943ULL   /* "NBDMAGIC" */
#define NBD_OPTS_MAGIC           0x49484156454F5054ULL   /* "IHAVEOPT" */
#define NBD_REP_MAGIC            0x0003e889045565a9ULL
#define NBD_REQUEST_MAGIC        0x25609513U
#define NBD_SIMPLE_REPLY_MAGIC   0x67446698U
#define NBD_STRUCTURED_REPLY_MAGIC 0x668e33efU

/* Handshake flags (server) and client flags. */
#define NBD_FLAG_FIXED_NEWSTYLE  (1 << 0)
#define NBD_FLAG_NO_ZEROES       (1 << 1)
#define NBD_FLAG_C_FIXED_NEWSTYLE (1 << 0)
#define NBD_FLAG_C_NO_ZEROES     (1 << 1)

/* Options. */
#define NBD_OPT_EXPORT_NAME      1
#define NBD_OPT_ABORT            2
#define NBD_OPT_LIST             3
#define NBD_OPT_STARTTLS         5
#define NBD_OPT_INFO             6
#define NBD_OPT_GO               7
#define NBD_OPT_STRUCTURED_REPLY 8
#define NBD_OPT_LIST_META_CONTEXT 9
#define NBD_OPT_SET_META_CONTEXT 10

/* Option replies. */
#define NBD_REP_ACK              1
#define NBD_REP_SERVER           2
#define NBD_REP_INFO             3
#define NBD_REP_META_CONTEXT     4
#define NBD_REP_ERR(n)           ((1U << 31) | (n))
#define NBD_REP_ERR_UNSUP        NBD_REP_ERR(1)
#define NBD_REP_ERR_POLICY       NBD_REP_ERR(2)
#define NBD_REP_ERR_INVALID      NBD_REP_ERR(3)
#define NBD_REP_ERR_PLATFORM     NBD_REP_ERR(4)
#define NBD_REP_ERR_TLS_REQD     NBD_REP_ERR(5)
#define NBD_REP_ERR_UNKNOWN      NBD_REP_ERR(6)
#define NBD_REP_ERR_SHUTDOWN     NBD_REP_ERR(7)
#define NBD_REP_ERR_BLOCK_SIZE_REQD NBD_REP_ERR(8)
#define NBD_REP_ERR_TOO_BIG      NBD_REP_ERR(9)

/* NBD_REP_INFO types. */
#define NBD_INFO_EXPORT          0
#define NBD_INFO_NAME            1
#define NBD_INFO_DESCRIPTION     2
#define NBD_INFO_BLOCK_SIZE      3

/* Transmission flags. */
#define NBD_FLAG_HAS_FLAGS       (1 << 0)
#define NBD_FLAG_READ_ONLY       (1 << 1)
#define NBD_FLAG_SEND_FLUSH      (1 << 2)
#define NBD_FLAG_SEND_FUA        (1 << 3)
#define NBD_FLAG_ROTATIONAL      (1 << 4)
#define NBD_FLAG_SEND_TRIM       (1 << 5)
#define NBD_FLAG_SEND_WRITE_ZEROES (1 << 6)
#define NBD_FLAG_SEND_DF         (1 << 7)
#define NBD_FLAG_CAN_MULTI_CONN  (1 << 8)
#define NBD_FLAG_SEND_RESIZE     (1 << 9)
#define NBD_FLAG_SEND_CACHE      (1 << 10)
#define NBD_FLAG_SEND_FAST_ZERO  (1 << 11)

/* Commands and their flags. */
#define NBD_CMD_READ             0
#define NBD_CMD_WRITE            1
#define NBD_CMD_DISC             2
#define NBD_CMD_FLUSH            3
#define NBD_CMD_TRIM             4
#define NBD_CMD_CACHE            5
#define NBD_CMD_WRITE_ZEROES     6
#define NBD_CMD_BLOCK_STATUS     7

#define NBD_CMD_FLAG_FUA         (1 << 0)
#define NBD_CMD_FLAG_NO_HOLE     (1 << 1)
#define NBD_CMD_FLAG_DF          (1 << 2)
#define NBD_CMD_FLAG_REQ_ONE     (1 << 3)
#define NBD_CMD_FLAG_FAST_ZERO   (1 << 4)

/* Structured reply chunks. */
#define NBD_REPLY_FLAG_DONE      (1 << 0)
#define NBD_REPLY_TYPE_NONE      0
#define NBD_REPLY_TYPE_OFFSET_DATA 1
#define NBD_REPLY_TYPE_OFFSET_HOLE 2
#define NBD_REPLY_TYPE_BLOCK_STATUS 5
#define NBD_REPLY_TYPE_ERROR     ((1 << 15) | 1)

/* Errors on the wire. */
#define NBD_EPERM                1
#define NBD_EIO                  5
#define NBD_ENOMEM               12
#define NBD_EINVAL               22
#define NBD_ENOSPC               28
#define NBD_EOVERFLOW            75
#define NBD_ENOTSUP              95
#define NBD_ESHUTDOWN            108

/* base:allocation */
#define NBD_STATE_HOLE           (1 << 0)
#define NBD_STATE_ZERO           (1 << 1)

#define NBD_META_BASE_ALLOCATION_ID 1
/* qemu:allocation-depth: the value is the layer (1: the export's node
 * itself, 2: its backing file, ...; 0: unallocated). */
#define NBD_META_ALLOCATION_DEPTH_ID 2
/* "qemu:dirty-bitmap:NAME": the export's bitmap i has id BASE + i. */
#define NBD_META_DIRTY_BITMAP_ID_BASE 3
#define NBD_MAX_BITMAPS 64              /* per export (a mask per connection) */
#define NBD_STATE_DIRTY 1

#define NBD_MAX_STRING           4096        /* names, option payloads */
#define NBD_NAME_MAX             4096
#define NBD_MAX_OPTION_LEN       (64 * 1024)
#define NBD_MIN_BLOCK_SIZE       1
#define NBD_PREF_BLOCK_SIZE      4096
#define NBD_MAX_BUFFER_SIZE      (32 * 1024 * 1024)

static inline void nbd_put16(uint8_t *p, uint16_t v) { v = htobe16(v); memcpy(p, &v, 2); }
static inline void nbd_put32(uint8_t *p, uint32_t v) { v = htobe32(v); memcpy(p, &v, 4); }
static inline void nbd_put64(uint8_t *p, uint64_t v) { v = htobe64(v); memcpy(p, &v, 8); }
static inline uint16_t nbd_get16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return be16toh(v); }
static inline uint32_t nbd_get32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return be32toh(v); }
static inline uint64_t nbd_get64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return be64toh(v); }

#endif /* BLOCKD_NBD_PROTO_H */
