/*
 * iov.c - scatter/gather vectors.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/iov.h"

void iovector_init(IOVector *v)
{
    v->iov = NULL;
    v->niov = 0;
    v->nalloc = 0;
    v->size = 0;
}

void iovector_init_buf(IOVector *v, void *buf, size_t len)
{
    v->local.iov_base = buf;
    v->local.iov_len = len;
    v->iov = &v->local;
    v->niov = 1;
    v->nalloc = -1;          /* not ours to free or grow */
    v->size = len;
}

void iovector_add(IOVector *v, void *base, size_t len)
{
    if (len == 0) {
        return;
    }
    /* Merge with the previous entry when contiguous. */
    if (v->niov && (char *)v->iov[v->niov - 1].iov_base + v->iov[v->niov - 1].iov_len == base &&
        v->nalloc >= 0) {
        v->iov[v->niov - 1].iov_len += len;
        v->size += len;
        return;
    }
    if (v->nalloc < 0) {
        /* Convert the one-buffer form into an allocated one. */
        struct iovec first = v->local;
        v->iov = NULL;
        v->nalloc = 0;
        v->niov = 0;
        v->size = 0;
        iovector_add(v, first.iov_base, first.iov_len);
    }
    if (v->niov == v->nalloc) {
        v->nalloc = v->nalloc ? v->nalloc * 2 : 4;
        v->iov = realloc(v->iov, v->nalloc * sizeof(*v->iov));
        if (!v->iov) {
            abort();
        }
    }
    v->iov[v->niov].iov_base = base;
    v->iov[v->niov].iov_len = len;
    v->niov++;
    v->size += len;
}

void iovector_concat(IOVector *v, const struct iovec *src, int niov,
                     size_t offset, size_t bytes)
{
    for (int i = 0; i < niov && bytes > 0; i++) {
        if (offset >= src[i].iov_len) {
            offset -= src[i].iov_len;
            continue;
        }
        size_t len = src[i].iov_len - offset;
        if (len > bytes) {
            len = bytes;
        }
        iovector_add(v, (char *)src[i].iov_base + offset, len);
        bytes -= len;
        offset = 0;
    }
}

void iovector_reset(IOVector *v)
{
    if (v->nalloc < 0) {
        iovector_init(v);
        return;
    }
    v->niov = 0;
    v->size = 0;
}

void iovector_destroy(IOVector *v)
{
    if (v->nalloc > 0) {
        free(v->iov);
    }
    iovector_init(v);
}

size_t iov_size(const struct iovec *iov, int niov)
{
    size_t size = 0;
    for (int i = 0; i < niov; i++) {
        size += iov[i].iov_len;
    }
    return size;
}

/* Walk [offset, offset+bytes) of the vector, calling @fn on each piece. */
static size_t iov_walk(const struct iovec *iov, int niov, size_t offset, size_t bytes,
                       void (*fn)(void *piece, size_t len, size_t done, void *opaque),
                       void *opaque)
{
    size_t done = 0;

    for (int i = 0; i < niov && done < bytes; i++) {
        if (offset >= iov[i].iov_len) {
            offset -= iov[i].iov_len;
            continue;
        }
        size_t len = iov[i].iov_len - offset;
        if (len > bytes - done) {
            len = bytes - done;
        }
        fn((char *)iov[i].iov_base + offset, len, done, opaque);
        done += len;
        offset = 0;
    }
    return done;
}

static void copy_in(void *piece, size_t len, size_t done, void *opaque)
{
    memcpy(piece, (const char *)opaque + done, len);
}

static void copy_out(void *piece, size_t len, size_t done, void *opaque)
{
    memcpy((char *)opaque + done, piece, len);
}

static void fill(void *piece, size_t len, size_t done, void *opaque)
{
    (void)done;
    memset(piece, *(int *)opaque, len);
}

size_t iov_from_buf(const struct iovec *iov, int niov, size_t offset,
                    const void *buf, size_t bytes)
{
    return iov_walk(iov, niov, offset, bytes, copy_in, (void *)buf);
}

size_t iov_to_buf(const struct iovec *iov, int niov, size_t offset,
                  void *buf, size_t bytes)
{
    return iov_walk(iov, niov, offset, bytes, copy_out, buf);
}

size_t iov_memset(const struct iovec *iov, int niov, size_t offset, int c,
                  size_t bytes)
{
    return iov_walk(iov, niov, offset, bytes, fill, &c);
}

bool iov_is_aligned(const struct iovec *iov, int niov, size_t align)
{
    for (int i = 0; i < niov; i++) {
        if ((uintptr_t)iov[i].iov_base % align || iov[i].iov_len % align) {
            return false;
        }
    }
    return true;
}

static void check_zero(void *piece, size_t len, size_t done, void *opaque)
{
    const unsigned char *p = piece;
    bool *zero = opaque;

    (void)done;
    for (size_t i = 0; *zero && i < len; i++) {
        if (p[i]) {
            *zero = false;
        }
    }
}

bool iov_is_zero(const struct iovec *iov, int niov, size_t offset, size_t bytes)
{
    bool zero = true;
    iov_walk(iov, niov, offset, bytes, check_zero, &zero);
    return zero;
}
