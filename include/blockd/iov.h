/*
 * iov.h - scatter/gather vectors.
 *
 * Half: common.  IOVector is a growable array of struct iovec that
 * describes the memory of one request; the helpers copy between vectors and
 * flat buffers and cut a vector into pieces (for splitting and alignment).
 */
#ifndef BLOCKD_IOV_H
#define BLOCKD_IOV_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/uio.h>

typedef struct IOVector {
    struct iovec *iov;
    int niov;
    int nalloc;
    size_t size;             /* total bytes */
    struct iovec local;      /* storage for the one-buffer case */
} IOVector;

void iovector_init(IOVector *v);
/* A vector of one buffer, without allocating. */
void iovector_init_buf(IOVector *v, void *buf, size_t len);
void iovector_add(IOVector *v, void *base, size_t len);
/* Append the bytes [offset, offset + bytes) of @src (niov entries). */
void iovector_concat(IOVector *v, const struct iovec *src, int niov,
                     size_t offset, size_t bytes);
void iovector_reset(IOVector *v);
void iovector_destroy(IOVector *v);

size_t iov_size(const struct iovec *iov, int niov);
/* Copy between a vector (starting @offset bytes into it) and a buffer;
 * return the bytes copied. */
size_t iov_from_buf(const struct iovec *iov, int niov, size_t offset,
                    const void *buf, size_t bytes);
size_t iov_to_buf(const struct iovec *iov, int niov, size_t offset,
                  void *buf, size_t bytes);
size_t iov_memset(const struct iovec *iov, int niov, size_t offset, int c,
                  size_t bytes);
/* Are all bases and lengths multiples of @align? */
bool iov_is_aligned(const struct iovec *iov, int niov, size_t align);
/* Is [offset, offset+bytes) of the vector all zero? */
bool iov_is_zero(const struct iovec *iov, int niov, size_t offset, size_t bytes);

#endif /* BLOCKD_IOV_H */
