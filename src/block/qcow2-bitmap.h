/*
 * qcow2-bitmap.h - the persistent bitmaps' on-disk format, shared by
 * qcow2-bitmap-dir.c (parsing, checking and building the extension, the
 * directory and the bitmap tables) and qcow2-bitmap.c (their life cycle).
 * Global state, in coroutines of the main thread (qcow2.h's rules).
 */
#ifndef BLOCKD_QCOW2_BITMAP_H
#define BLOCKD_QCOW2_BITMAP_H

#include "qcow2.h"

#define BME_FLAG_IN_USE        (1u << 0)
#define BME_FLAG_AUTO          (1u << 1)
#define BME_RESERVED_FLAGS     0xfffffffcu
#define BME_TYPE_DIRTY         1
#define BME_MIN_GRAN_BITS      9
#define BME_MAX_GRAN_BITS      31
#define BME_MAX_NAME           1023
#define BME_MAX_TABLE_SIZE     0x8000000u
#define BME_MAX_PHYS_SIZE      0x20000000ull
#define BME_ENTRY_RESERVED     0xff000000000001feull
#define BME_ENTRY_OFFSET       0x00fffffffffffe00ull
#define BME_ENTRY_ALL_ONES     1ull
#define BME_MAX_BITMAPS        65535u
#define BME_MAX_DIR_SIZE       (1024ull * BME_MAX_BITMAPS)   /* QEMU's limit */
#define BME_HEADER_SIZE        24

struct Qcow2Bitmap {
    char *name;
    int64_t table_offset;
    uint32_t table_size;         /* entries */
    uint32_t flags;
    int gran_bits;
};

/* Free a directory list of @n entries. */
void bm_list_free(Qcow2Bitmap *list, uint32_t n);
/* Bytes of a directory entry with a name of @name_len bytes. */
uint64_t bm_entry_size(size_t name_len);
/* Bitmap table entries (data clusters) for a @len-byte disk at 2^@gran_bits. */
uint64_t bm_table_entries(BDRVQcow2State *s, int64_t len, int gran_bits);
/* Read [offset, +bytes) of the file; past its end reads as zeroes. */
int coroutine_fn bm_read_zero_filled(BlockDriverState *bs, BDRVQcow2State *s, int64_t offset,
                                     uint64_t bytes, void *buf) GRAPH_RDLOCK QCOW2_LOCKED;
/* Read and check the directory the header names (for a @len-byte disk). */
int coroutine_fn bm_dir_read(BlockDriverState *bs, BDRVQcow2State *s, int64_t len,
                             Qcow2Bitmap **out, Error **errp) GRAPH_RDLOCK QCOW2_LOCKED;
/* The directory bytes for @list (@n entries), *@size of them. */
uint8_t *bm_dir_build(const Qcow2Bitmap *list, uint32_t n, uint64_t *size);
/* Read and check the bitmap table of @b (entries in host order). */
int coroutine_fn bm_table_read(BlockDriverState *bs, BDRVQcow2State *s, const Qcow2Bitmap *b,
                               uint64_t **out) GRAPH_RDLOCK QCOW2_LOCKED;

#endif /* BLOCKD_QCOW2_BITMAP_H */
