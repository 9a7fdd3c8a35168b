/*
 * qcow2-codec.c - the compression of one cluster, in the image's
 * compression type: zlib (raw deflate with a 4 KiB window) or zstd (one
 * zstd frame).
 *
 * A compressed cluster's byte range is rounded up to whole 512-byte
 * sectors, so what follows the compressed data is undefined: decompression
 * stops as soon as a whole cluster came out and ignores the rest.
 *
 * Half: common (pure functions on buffers, any thread).
 */
#include <zlib.h>
#include <zstd.h>

#include "qcow2.h"

static int64_t deflate_cluster(const void *in, int64_t len, void *out, int64_t max)
{
    z_stream z = { 0 };
    int64_t n = 0;

    if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY) != Z_OK) {
        return 0;
    }
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)len;
    z.next_out = out;
    z.avail_out = (uInt)max;
    if (deflate(&z, Z_FINISH) == Z_STREAM_END) {
        n = max - z.avail_out;
    }
    deflateEnd(&z);
    return n;
}

static bool inflate_cluster(const void *in, int64_t inlen, void *out, int64_t outlen)
{
    z_stream z = { 0 };
    bool ok;
    int zr;

    if (inflateInit2(&z, -12) != Z_OK) {
        return false;
    }
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)inlen;
    z.next_out = out;
    z.avail_out = (uInt)outlen;
    zr = inflate(&z, Z_FINISH);
    ok = (zr == Z_STREAM_END || zr == Z_BUF_ERROR) && z.avail_out == 0;
    inflateEnd(&z);
    return ok;
}

static int64_t zstd_cluster(const void *in, int64_t len, void *out, int64_t max)
{
    /* One-shot compression writes the content size into the frame header,
     * which any zstd decoder may use (and QEMU's ignores). */
    size_t n = ZSTD_compress(out, max, in, len, ZSTD_CLEVEL_DEFAULT);

    return ZSTD_isError(n) ? 0 : (int64_t)n;
}

static bool unzstd_cluster(const void *in, int64_t inlen, void *out, int64_t outlen)
{
    ZSTD_DCtx *dctx = ZSTD_createDCtx();
    ZSTD_inBuffer ib = { in, (size_t)inlen, 0 };
    ZSTD_outBuffer ob = { out, (size_t)outlen, 0 };
    bool ok = false;

    if (!dctx) {
        return false;
    }
    /* Streaming, frame after frame, until the cluster is full: the input's
     * sector padding after the last frame is never looked at. */
    while (ob.pos < ob.size && ib.pos < ib.size) {
        size_t r = ZSTD_decompressStream(dctx, &ob, &ib);
        if (ZSTD_isError(r) || (r != 0 && ib.pos == ib.size && ob.pos < ob.size)) {
            break;
        }
    }
    ok = ob.pos == ob.size;
    ZSTD_freeDCtx(dctx);
    return ok;
}

int64_t qcow2_compress_buf(int type, const void *in, int64_t len, void *out, int64_t max)
{
    return type == QCOW2_COMPRESSION_ZSTD ? zstd_cluster(in, len, out, max)
                                          : deflate_cluster(in, len, out, max);
}

bool qcow2_decompress_buf(int type, const void *in, int64_t inlen, void *out, int64_t outlen)
{
    return type == QCOW2_COMPRESSION_ZSTD ? unzstd_cluster(in, inlen, out, outlen)
                                          : inflate_cluster(in, inlen, out, outlen);
}
