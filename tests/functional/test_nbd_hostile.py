"""Hostile NBD clients: malformed and abusive requests, handshake abuse,
stalled and vanishing clients, floods.  After each case the daemon must
still run and serve a fresh nbdinfo."""
import os
import shutil
import socket
import struct
import threading
import time

import nbd
import pytest

from nbdutil import (
    MiB, NBD_CMD_BLOCK_STATUS, NBD_CMD_CACHE, NBD_CMD_DISC, NBD_CMD_FLAG_DF,
    NBD_CMD_FLAG_FAST_ZERO, NBD_CMD_FLAG_FUA, NBD_CMD_FLAG_NO_HOLE, NBD_CMD_FLAG_REQ_ONE,
    NBD_CMD_FLUSH, NBD_CMD_READ, NBD_CMD_TRIM, NBD_CMD_WRITE, NBD_CMD_WRITE_ZEROES,
    NBD_EINVAL, NBD_ENOSPC, NBD_EPERM, NBD_FLAG_C_FIXED_NEWSTYLE, NBD_FLAG_C_NO_ZEROES,
    NBD_FLAG_READ_ONLY, NBD_INFO_BLOCK_SIZE, NBD_INFO_DESCRIPTION, NBD_INFO_EXPORT,
    NBD_INFO_NAME, NBD_MAX_BUFFER_SIZE, NBD_OPT_ABORT, NBD_OPT_EXPORT_NAME, NBD_OPT_GO,
    NBD_OPT_INFO, NBD_OPT_LIST, NBD_OPT_LIST_META_CONTEXT, NBD_OPT_SET_META_CONTEXT,
    NBD_OPT_STARTTLS, NBD_OPT_STRUCTURED_REPLY, NBD_REP_ACK, NBD_REP_ERR_INVALID,
    NBD_REP_ERR_POLICY, NBD_REP_ERR_TOO_BIG, NBD_REP_ERR_UNKNOWN, NBD_REP_ERR_UNSUP,
    NBD_REP_INFO, NBD_REP_META_CONTEXT, NBD_REP_SERVER, NBD_REPLY_TYPE_OFFSET_DATA,
    NBD_REQUEST_MAGIC, NBD_STRUCTURED_REPLY_MAGIC, RawClient, Server, short_dir, sparse_image,
    wait_for,
)
from qmp import QMP

SIZE = 4 * MiB
BIG = 64 * MiB


@pytest.fixture
def srv(blockd, tmp_path):
    """blockd serving "disk" (writable, 4 MiB, 0x5a at 1 MiB..2 MiB), "ro"
    (read-only) and "io" (writable, in an iothread), with a monitor."""
    d = short_dir()
    disk = sparse_image(tmp_path / "disk.raw", SIZE)
    with open(disk, "r+b") as f:
        f.seek(1 * MiB)
        f.write(b"\x5a" * MiB)
    exports = [dict(name="disk", img=disk),
               dict(name="ro", img=sparse_image(tmp_path / "ro.raw", SIZE), writable=False),
               dict(name="io", img=sparse_image(tmp_path / "io.raw", SIZE), iothread="io0")]
    s = Server(blockd, d, exports, iothreads=("io0",), qmp=True)
    s.disk_img = disk
    try:
        yield s
        check_healthy(s)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def check_healthy(s):
    """Still running, a fresh nbdinfo works, and a libnbd round trip."""
    for name in ("disk", "ro", "io"):
        s.assert_serving(name, SIZE)
    h = nbd.NBD()
    h.connect_uri(s.uri("disk"))
    assert h.pread(4, 1 * MiB) == b"\x5a" * 4
    h.shutdown()


def libnbd(s, name="disk", strict=False):
    h = nbd.NBD()
    if not strict:
        h.set_strict_mode(0)
    h.connect_uri(s.uri(name))
    return h


def expect_error_or_disconnect(c, err, data=None):
    """An error reply @err with the connection still usable, or a clean
    disconnect (both allowed by the protocol for a broken request)."""
    try:
        got, _, _ = c.reply()
    except (EOFError, ConnectionResetError):
        return "disconnected"
    assert got == err
    assert c.cmd(NBD_CMD_READ, 1 * MiB, 8) == (0, b"\x5a" * 8)
    return "error"


# ---- Bad requests -------------------------------------------------------------------------


@pytest.mark.parametrize("structured", [False, True])
def test_oversized_requests(srv, structured):
    c = RawClient.connect(srv.sock, "disk", structured)
    # Reads and caches above the advertised maximum block size.
    for cmd, length in ((NBD_CMD_READ, NBD_MAX_BUFFER_SIZE + 1), (NBD_CMD_READ, 0xFFFFFFFF),
                        (NBD_CMD_CACHE, 0xFFFFFFFF)):
        c.request(cmd, 0, length, cookie=0x1234)
        assert expect_error_or_disconnect(c, NBD_EINVAL) == "error"
    # The maximum itself is fine (on a big enough export: the whole of it).
    c.request(NBD_CMD_READ, 0, SIZE, cookie=5)
    err, cookie, data = c.reply(SIZE)
    assert (err, cookie, len(data)) == (0, 5, SIZE)
    # A write whose payload is above the maximum: the server may not want
    # to swallow it; an error or a hang-up.
    c.request(NBD_CMD_WRITE, 0, NBD_MAX_BUFFER_SIZE + 1, cookie=9)
    try:
        c.send(b"\0" * (1 * MiB))
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert c.at_eof(10)
    c.close()
    check_healthy(srv)


@pytest.mark.parametrize("structured", [False, True])
def test_requests_past_the_end(srv, structured):
    c = RawClient.connect(srv.sock, "disk", structured)
    end = SIZE
    for off, n in ((end, 1), (end - 1, 2), (end + 4096, 4096), (2**64 - 1, 2),
                   (2**64 - 512, 1024), (0, end + 1)):
        assert c.cmd(NBD_CMD_READ, off, n)[0] == NBD_EINVAL, (off, n)
        # Writes are read in full and refused with ENOSPC; the stream stays
        # in step (the next request is understood).
        if n <= 4096:
            assert c.cmd(NBD_CMD_WRITE, off, n, payload=b"\xee" * n)[0] == NBD_ENOSPC
        assert c.cmd(NBD_CMD_WRITE_ZEROES, off, n)[0] == NBD_ENOSPC
        # A trim is not a write here: "EINVAL if it receives a read or
        # trim request including one or more sectors beyond the size".
        assert c.cmd(NBD_CMD_TRIM, off, n)[0] == NBD_EINVAL
        assert c.cmd(NBD_CMD_CACHE, off, n)[0] == NBD_EINVAL
    # The last byte is in range.
    assert c.cmd(NBD_CMD_WRITE, end - 1, 1, payload=b"\x01") == (0, b"")
    assert c.cmd(NBD_CMD_READ, end - 1, 1) == (0, b"\x01")
    assert c.cmd(NBD_CMD_READ, 1 * MiB, 8) == (0, b"\x5a" * 8)
    c.disconnect()
    with open(srv.disk_img, "rb") as f:
        data = f.read()
    assert len(data) == SIZE and b"\xee" not in data
    # libnbd with its own checks off sees the same errors.
    h = libnbd(srv)
    with pytest.raises(nbd.Error) as ei:
        h.pread(512, SIZE)
    assert ei.value.errno == "EINVAL"
    with pytest.raises(nbd.Error) as ei:
        h.pwrite(b"x" * 512, SIZE - 256)
    assert ei.value.errno == "ENOSPC"
    with pytest.raises(nbd.Error) as ei:
        h.zero(4096, SIZE)
    assert ei.value.errno == "ENOSPC"
    assert h.pread(4, 1 * MiB) == b"\x5a" * 4
    h.shutdown()


def test_unknown_commands_and_zero_lengths(srv):
    c = RawClient.connect(srv.sock, "disk")
    for cmd in (8, 9, 12, 100, 0x7FFF, 0xFFFF):
        assert c.cmd(cmd, 0, 512) == (NBD_EINVAL, b""), cmd
        assert c.cmd(cmd, 0, 0) == (NBD_EINVAL, b""), cmd
    # Zero-length requests (unspecified by proto.md): nothing done and
    # success, as qemu-storage-daemon answers; the stream stays in step.
    for cmd in (NBD_CMD_READ, NBD_CMD_WRITE, NBD_CMD_WRITE_ZEROES, NBD_CMD_TRIM,
                NBD_CMD_CACHE):
        assert c.cmd(cmd, 0, 0) == (0, b""), cmd
        assert c.cmd(cmd, SIZE, 0) == (0, b""), cmd
    assert c.cmd(NBD_CMD_FLUSH, 0, 0) == (0, b"")
    # A flush's offset and length are reserved.
    assert c.cmd(NBD_CMD_FLUSH, 4096, 0) == (NBD_EINVAL, b"")
    assert c.cmd(NBD_CMD_FLUSH, 0, 512) == (NBD_EINVAL, b"")
    assert c.cmd(NBD_CMD_READ, 1 * MiB, 8) == (0, b"\x5a" * 8)
    # Block status without a negotiated meta context.
    assert c.cmd(NBD_CMD_BLOCK_STATUS, 0, 4096)[0] == NBD_EINVAL
    c.disconnect()


def test_unknown_and_misplaced_flags(srv):
    c = RawClient.connect(srv.sock, "disk")
    bad = [(NBD_CMD_READ, 1 << 7), (NBD_CMD_READ, 1 << 15),
           (NBD_CMD_READ, NBD_CMD_FLAG_DF),      # DF needs structured replies
           (NBD_CMD_READ, NBD_CMD_FLAG_NO_HOLE), (NBD_CMD_FLUSH, NBD_CMD_FLAG_REQ_ONE),
           (NBD_CMD_TRIM, NBD_CMD_FLAG_NO_HOLE), (NBD_CMD_WRITE_ZEROES, NBD_CMD_FLAG_REQ_ONE),
           (NBD_CMD_CACHE, 1 << 9)]
    for cmd, flags in bad:
        assert c.cmd(cmd, 0, 512, flags)[0] == NBD_EINVAL, (cmd, flags)
    # A write with a bad flag: refused, and its payload skipped.
    assert c.cmd(NBD_CMD_WRITE, 0, 512, 1 << 12, payload=b"\xee" * 512)[0] == NBD_EINVAL
    assert c.cmd(NBD_CMD_READ, 0, 512) == (0, bytes(512))
    # Flags that are valid.
    assert c.cmd(NBD_CMD_WRITE, 0, 512, NBD_CMD_FLAG_FUA, payload=b"\x01" * 512)[0] == 0
    assert c.cmd(NBD_CMD_WRITE_ZEROES, 0, 256,
                 NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE)[0] == 0
    assert c.cmd(NBD_CMD_WRITE_ZEROES, 4096, 4096, NBD_CMD_FLAG_FAST_ZERO)[0] in (0, 95)
    assert c.cmd(NBD_CMD_READ, 0, 512) == (0, bytes(256) + b"\x01" * 256)
    c.disconnect()


def test_fua_is_accepted_on_every_command(srv):
    """proto.md: with NBD_FLAG_SEND_FUA, "the server MUST accept all
    commands with this bit set (even by ignoring the bit)"; old QEMU
    clients set it on NBD_CMD_FLUSH."""
    c = RawClient.connect(srv.sock, "disk")
    assert c.cmd(NBD_CMD_FLUSH, 0, 0, NBD_CMD_FLAG_FUA) == (0, b"")
    assert c.cmd(NBD_CMD_READ, 1 * MiB, 8, NBD_CMD_FLAG_FUA) == (0, b"\x5a" * 8)
    assert c.cmd(NBD_CMD_CACHE, 0, 4096, NBD_CMD_FLAG_FUA) == (0, b"")
    assert c.cmd(NBD_CMD_TRIM, 3 * MiB, 4096, NBD_CMD_FLAG_FUA) == (0, b"")
    c.disconnect()


def test_read_only_export_refuses_writes(srv):
    c = RawClient.connect(srv.sock, "ro")
    assert c.tflags & NBD_FLAG_READ_ONLY
    assert c.cmd(NBD_CMD_WRITE, 0, 4096, payload=b"\xee" * 4096) == (NBD_EPERM, b"")
    assert c.cmd(NBD_CMD_WRITE, 0, 4096, NBD_CMD_FLAG_FUA, payload=b"\xee" * 4096)[0] == \
        NBD_EPERM
    assert c.cmd(NBD_CMD_WRITE_ZEROES, 0, 4096) == (NBD_EPERM, b"")
    assert c.cmd(NBD_CMD_TRIM, 0, 4096) == (NBD_EPERM, b"")
    assert c.cmd(NBD_CMD_FLUSH) == (0, b"")
    assert c.cmd(NBD_CMD_READ, 0, 4096) == (0, bytes(4096))
    c.disconnect()
    h = libnbd(srv, "ro")
    assert h.is_read_only()
    for op in (lambda: h.pwrite(b"x" * 512, 0), lambda: h.zero(512, 0),
               lambda: h.trim(512, 0)):
        with pytest.raises(nbd.Error) as ei:
            op()
        assert ei.value.errno == "EPERM"
    h.shutdown()


def test_structured_reads_block_status_and_pipelining(srv):
    c = RawClient(srv.sock)
    c.start()
    assert c.option(NBD_OPT_STRUCTURED_REPLY) == [(NBD_REP_ACK, b"")]
    q = b"base:allocation"
    name = b"disk"
    replies = c.option(NBD_OPT_SET_META_CONTEXT, struct.pack(">I", len(name)) + name +
                       struct.pack(">II", 1, len(q)) + q)
    assert [r[0] for r in replies] == [NBD_REP_META_CONTEXT, NBD_REP_ACK]
    c.go("disk")
    c.structured = True
    # A read over hole and data comes back right, in pieces or not.
    err, data = c.cmd(NBD_CMD_READ, 1 * MiB - 4096, 8192)
    assert err == 0 and data == bytes(4096) + b"\x5a" * 4096
    # DF: exactly one data chunk.
    c.request(NBD_CMD_READ, 1 * MiB - 4096, 8192, NBD_CMD_FLAG_DF, cookie=3)
    magic, flags, rtype, cookie, length = struct.unpack(">IHHQI", c.recv_exact(20))
    assert (magic, rtype, cookie, length) == (NBD_STRUCTURED_REPLY_MAGIC,
                                             NBD_REPLY_TYPE_OFFSET_DATA, 3, 8 + 8192)
    assert flags & 1
    assert c.recv_exact(8 + 8192)[8:] == bytes(4096) + b"\x5a" * 4096
    # Block status, REQ_ONE: one extent, within the request.
    c.request(NBD_CMD_BLOCK_STATUS, 0, SIZE, NBD_CMD_FLAG_REQ_ONE, cookie=4)
    magic, flags, rtype, cookie, length = struct.unpack(">IHHQI", c.recv_exact(20))
    assert (rtype, cookie, length) == (5, 4, 12)
    _, ext_len, ext_flags = struct.unpack(">III", c.recv_exact(12))
    assert (ext_len, ext_flags) == (1 * MiB, 3)
    # Many requests in flight: every cookie answered once.
    cookies = list(range(100, 164))
    for ck in cookies:
        c.request(NBD_CMD_READ, (ck % 4) * MiB, 4096, cookie=ck)
    got = set()
    for _ in cookies:
        err, ck, data = c.reply()
        assert err == 0 and len(data) == 4096
        assert data == (b"\x5a" * 4096 if ck % 4 == 1 else bytes(4096))
        got.add(ck)
    assert got == set(cookies)
    c.disconnect()


def burst_of_writes(sizes, base=2 * MiB):
    """One byte string of writes of @sizes back to back, each of its own
    pattern; the (cookie, offset, data) of each."""
    out, writes, off = b"", [], base
    for i, n in enumerate(sizes):
        data = bytes((i * 7 + j) & 0xFF for j in range(n))
        out += struct.pack(">IHHQQI", NBD_REQUEST_MAGIC, 0, NBD_CMD_WRITE, 500 + i, off, n) + data
        writes.append((500 + i, off, data))
        off += n
    return out, writes


@pytest.mark.parametrize("chunk", [None, 1, 4093])
def test_write_burst_split_anywhere(srv, chunk):
    """Requests and payloads arrive as the client's sends happen to cut them:
    all at once (several requests in one receive, payloads straddling the
    server's input buffer), a byte at a time, or in odd-sized pieces."""
    sizes = [1, 4096, 28, 65536, 70000, 200000, 512, 131072] if chunk != 1 else [1, 600, 33]
    burst, writes = burst_of_writes(sizes)
    c = RawClient.connect(srv.sock, "disk")
    if chunk is None:
        c.send(burst)
    else:
        for i in range(0, len(burst), chunk):
            c.send(burst[i:i + chunk])
    got = {}
    for _ in writes:
        err, ck, _ = c.reply()
        got[ck] = err
    assert got == {ck: 0 for ck, _, _ in writes}
    for ck, off, data in writes:
        assert c.cmd(NBD_CMD_READ, off, len(data)) == (0, data)
    c.disconnect()
    with open(srv.disk_img, "rb") as f:
        for _, off, data in writes:
            f.seek(off)
            assert f.read(len(data)) == data


def test_disc_with_requests_in_flight(srv):
    """NBD_CMD_DISC: requests before it are answered, then the server closes."""
    c = RawClient.connect(srv.sock, "io")
    for ck in range(16):
        c.request(NBD_CMD_WRITE, ck * 4096, 4096, cookie=ck, payload=bytes([ck]) * 4096)
    c.request(NBD_CMD_DISC)
    got = sorted(c.reply()[1] for _ in range(16))
    assert got == list(range(16))
    assert c.at_eof(5)
    c.close()
    h = libnbd(srv, "io")
    for ck in range(16):
        assert h.pread(4096, ck * 4096) == bytes([ck]) * 4096
    h.shutdown()


def test_bad_request_magic_disconnects(srv):
    c = RawClient.connect(srv.sock, "disk")
    c.request(NBD_CMD_READ, 0, 512, magic=0x12345678)
    assert c.at_eof(5)
    c.close()


# ---- Handshake abuse ----------------------------------------------------------------------


def test_handshake_wrong_magic(srv):
    c = RawClient(srv.sock)
    c.start()
    c.send_option(NBD_OPT_GO, RawClient.info_payload("disk"), magic=0x1122334455667788)
    assert c.at_eof(5)
    c.close()


def test_handshake_unknown_client_flags(srv):
    c = RawClient(srv.sock)
    c.start(cflags=NBD_FLAG_C_FIXED_NEWSTYLE | (1 << 7))
    assert c.at_eof(5)
    c.close()


@pytest.mark.parametrize("length", [64 * 1024 + 1, 16 * MiB, 0xFFFFFFFF])
def test_handshake_huge_option_length(srv, length):
    c = RawClient(srv.sock)
    c.start()
    c.send_option(999, length=length)
    try:
        c.send(b"\0" * 4096)
    except (BrokenPipeError, ConnectionResetError):
        pass
    # Refused with NBD_REP_ERR_TOO_BIG, or a hang-up: never read in full.
    try:
        _, rtype, _ = c.option_reply()
        assert rtype == NBD_REP_ERR_TOO_BIG
    except (EOFError, ConnectionResetError):
        pass
    c.close()
    assert srv.rss_kib() < 200 * 1024


def test_handshake_unknown_options_then_go(srv):
    c = RawClient(srv.sock)
    c.start()
    for opt, data in ((999, b""), (0x7FFFFFFF, b"junk" * 100), (4, b""), (11, b"x"),
                      (12345, b"\xff" * 65536)):
        assert c.option(opt, data) == [(NBD_REP_ERR_UNSUP, b"")], opt
    assert c.option(NBD_OPT_STARTTLS)[-1][0] in (NBD_REP_ERR_POLICY, NBD_REP_ERR_UNSUP)
    assert c.option(NBD_OPT_LIST, b"x")[-1][0] == NBD_REP_ERR_INVALID
    assert c.option(NBD_OPT_STRUCTURED_REPLY, b"x")[-1][0] == NBD_REP_ERR_INVALID
    # Meta contexts need structured replies first.
    q = b"base:allocation"
    assert c.option(NBD_OPT_SET_META_CONTEXT, struct.pack(">I", 4) + b"disk" +
                    struct.pack(">II", 1, len(q)) + q)[-1][0] == NBD_REP_ERR_INVALID
    # Malformed INFO/GO payloads.
    for payload in (b"", b"\0\0", struct.pack(">I", 100) + b"disk\0\0",
                    struct.pack(">I", 5000) + b"d" * 5000 + b"\0\0",
                    RawClient.info_payload("disk")[:-2] + struct.pack(">H", 3) + b"\0\0",
                    RawClient.info_payload("disk") + b"extra"):
        assert c.option(NBD_OPT_GO, payload)[-1][0] == NBD_REP_ERR_INVALID, payload
    # Unknown export: an error, and the handshake goes on.
    assert c.option(NBD_OPT_GO, RawClient.info_payload("nosuch"))[-1][0] == \
        NBD_REP_ERR_UNKNOWN
    assert c.option(NBD_OPT_INFO, RawClient.info_payload(""))[-1][0] == NBD_REP_ERR_UNKNOWN
    # INFO with every information request, some twice, some unknown.
    replies = c.option(NBD_OPT_INFO, RawClient.info_payload(
        "disk", [NBD_INFO_NAME, NBD_INFO_DESCRIPTION, NBD_INFO_BLOCK_SIZE, 77, NBD_INFO_NAME]))
    assert replies[-1][0] == NBD_REP_ACK
    infos = {struct.unpack(">H", p[:2])[0]: p for t, p in replies if t == NBD_REP_INFO}
    assert infos[NBD_INFO_NAME][2:] == b"disk"
    assert struct.unpack(">HIII", infos[NBD_INFO_BLOCK_SIZE])[1:] == (1, 4096, 32 * MiB)
    assert struct.unpack(">HQH", infos[NBD_INFO_EXPORT])[1] == SIZE
    # LIST: every export, with the server still talking afterwards.
    replies = c.option(NBD_OPT_LIST)
    names = sorted(p[4:4 + struct.unpack(">I", p[:4])[0]] for t, p in replies
                   if t == NBD_REP_SERVER)
    assert names == [b"disk", b"io", b"ro"]
    # LIST_META_CONTEXT of an unknown export.
    assert c.option(NBD_OPT_LIST_META_CONTEXT, struct.pack(">I", 3) + b"zzz" +
                    struct.pack(">I", 0))[-1][0] == NBD_REP_ERR_UNKNOWN
    size, _ = c.go("disk")
    assert size == SIZE
    assert c.cmd(NBD_CMD_READ, 1 * MiB, 8) == (0, b"\x5a" * 8)
    c.disconnect()


def test_handshake_export_name(srv):
    # Unknown name: no error reply is possible, the server hangs up.
    c = RawClient(srv.sock)
    c.start()
    c.send_option(NBD_OPT_EXPORT_NAME, b"nosuch")
    assert c.at_eof(5)
    c.close()
    # A name with a NUL in it.
    c = RawClient(srv.sock)
    c.start()
    c.send_option(NBD_OPT_EXPORT_NAME, b"disk\0x")
    assert c.at_eof(5)
    c.close()
    # Known name, without NO_ZEROES: size, flags and 124 zero bytes.
    c = RawClient(srv.sock)
    c.start(cflags=NBD_FLAG_C_FIXED_NEWSTYLE)
    c.send_option(NBD_OPT_EXPORT_NAME, b"disk")
    size, flags = struct.unpack(">QH", c.recv_exact(10))
    assert size == SIZE and not flags & NBD_FLAG_READ_ONLY
    assert c.recv_exact(124) == bytes(124)
    assert c.cmd(NBD_CMD_READ, 1 * MiB, 8) == (0, b"\x5a" * 8)
    c.disconnect()
    # With NO_ZEROES: just the 10 bytes.
    c = RawClient(srv.sock)
    c.start(cflags=NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES)
    c.send_option(NBD_OPT_EXPORT_NAME, b"ro")
    size, flags = struct.unpack(">QH", c.recv_exact(10))
    assert flags & NBD_FLAG_READ_ONLY
    assert c.cmd(NBD_CMD_READ, 0, 8) == (0, bytes(8))
    c.disconnect()


def test_handshake_abort(srv):
    c = RawClient(srv.sock)
    c.start()
    assert c.option(NBD_OPT_ABORT) == [(NBD_REP_ACK, b"")]
    assert c.at_eof(5)
    c.close()


def test_handshake_garbage_greeting_reply(srv):
    """Random bytes instead of the client flags and options."""
    for junk in (b"\xff" * 4, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", os.urandom(4096)):
        c = RawClient(srv.sock)
        c.greeting()
        c.send(junk)
        assert c.at_eof(5)
        c.close()
    check_healthy(srv)


# ---- Stalled, vanishing and abusive clients -------------------------------------------------


@pytest.mark.parametrize("export", ["disk", "io"])
def test_half_request_header_does_not_block_others(srv, export):
    stalled = RawClient.connect(srv.sock, export)
    req = struct.pack(">IHHQQI", 0x25609513, 0, NBD_CMD_READ, 77, 1 * MiB, 8)
    stalled.send(req[:11])
    # Also one stalled in the handshake, half an option header sent.
    hs = RawClient(srv.sock)
    hs.start()
    hs.send(struct.pack(">Q", 0x49484156454F5054)[:6])
    time.sleep(0.1)
    # Everybody else is served, on both exports.
    for name in ("disk", "io"):
        h = libnbd(srv, name)
        h.pwrite(b"other", 3 * MiB)
        assert h.pread(5, 3 * MiB) == b"other"
        h.shutdown()
    check_healthy(srv)
    # The stalled client finishes its request and gets its answer.
    stalled.send(req[11:])
    err, cookie, data = stalled.reply(8)
    assert (err, cookie) == (0, 77)
    assert data == (b"\x5a" * 8 if export == "disk" else bytes(8))
    stalled.disconnect()
    hs.close()


@pytest.mark.parametrize("export", ["disk", "io"])
def test_disconnect_mid_write_payload(srv, export):
    for sent in (0, 1, 100 * 1024, 1 * MiB - 1):
        c = RawClient.connect(srv.sock, export)
        c.request(NBD_CMD_WRITE, 1 * MiB, 1 * MiB, cookie=1)
        c.send(b"\xee" * sent)
        c.close()
    check_healthy(srv)
    # Nothing of the partial writes landed.
    h = libnbd(srv, export)
    data = h.pread(1 * MiB, 1 * MiB)
    h.shutdown()
    assert data == (b"\x5a" * MiB if export == "disk" else bytes(MiB))


def test_disconnect_with_replies_pending(srv):
    """The client sends requests and vanishes before the replies."""
    for _ in range(20):
        c = RawClient.connect(srv.sock, "io")
        for ck in range(32):
            c.request(NBD_CMD_READ, (ck % 4) * MiB, 1 * MiB, cookie=ck)
        c.request(NBD_CMD_WRITE, 0, 4096, cookie=99, payload=b"\0" * 4096)
        c.sock.shutdown(socket.SHUT_RDWR)
        c.close()
    check_healthy(srv)


def test_connect_disconnect_cycles(srv):
    fds_before = srv.num_fds()
    t0 = time.monotonic()
    for i in range(1000):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(srv.sock)
        kind = i % 4
        if kind == 1:
            s.recv(18)
        elif kind == 2:
            s.recv(18)
            s.sendall(struct.pack(">I", 3))
        elif kind == 3:
            c = RawClient.__new__(RawClient)
            c.sock, c.structured, c.size = s, False, None
            s.settimeout(10)
            c.start()
            c.go("disk" if i % 8 == 3 else "io")
        s.close()
    elapsed = time.monotonic() - t0
    assert elapsed < 20, elapsed
    # The connections are all gone again: no descriptor left behind.
    wait_for(lambda: srv.num_fds() <= fds_before, timeout=10, what="fds to be released")
    # And libnbd, 100 times, full handshake each.
    for i in range(100):
        h = nbd.NBD()
        h.connect_uri(srv.uri("io" if i % 2 else "disk"))
        if i % 10 == 0:
            h.pread(512, 0)
        del h
    wait_for(lambda: srv.num_fds() <= fds_before, timeout=10, what="fds to be released")
    check_healthy(srv)


def test_many_idle_connections(srv):
    idle = []
    for i in range(200):
        c = RawClient(srv.sock)
        if i % 2:
            c.start()
        idle.append(c)
    check_healthy(srv)
    for c in idle:
        c.close()


def big_server(blockd, tmp_path):
    d = short_dir()
    img = tmp_path / "big.raw"
    with open(img, "wb") as f:
        chunk = bytes(range(256)) * 4096
        for _ in range(BIG // len(chunk)):
            f.write(chunk)
    s = Server(blockd, d, [dict(name="big", img=str(img)),
                           dict(name="io", img=sparse_image(tmp_path / "io.raw", SIZE),
                                iothread="io0")],
               iothreads=("io0",))
    return s, d


def rss_watch(s, seconds):
    peak = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        peak = max(peak, s.rss_kib())
        time.sleep(0.02)
    return peak


@pytest.mark.parametrize("structured", [False, True])
def test_flood_without_reading_replies(blockd, tmp_path, structured):
    s, d = big_server(blockd, tmp_path)
    try:
        base = s.rss_kib()
        flood = RawClient.connect(s.sock, "big", structured)
        flood.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        # 1,000 reads of the maximum size (32 GiB of replies) that are never
        # read, in one go (28 KB: the socket buffers take it all).
        flood.send(b"".join(
            struct.pack(">IHHQQI", 0x25609513, 0, NBD_CMD_READ, ck,
                        (ck % 2) * NBD_MAX_BUFFER_SIZE, NBD_MAX_BUFFER_SIZE)
            for ck in range(1000)))
        peak = rss_watch(s, 1.0)
        assert peak < 300 * 1024, f"RSS {peak} KiB (was {base} KiB)"
        # Others are served meanwhile, on the same export and another.
        h = nbd.NBD()
        h.connect_uri(s.uri("big"))
        assert h.pread(256, 5 * MiB) == bytes(range(256))
        h.shutdown()
        h = nbd.NBD()
        h.connect_uri(s.uri("io"))
        h.pwrite(b"x" * 4096, 0)
        assert h.pread(4096, 0) == b"x" * 4096
        h.shutdown()
        assert s.rss_kib() < 300 * 1024
        flood.close()
        s.assert_serving("big", BIG)
        assert rss_watch(s, 0.3) < 300 * 1024
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_write_flood_without_reading_replies(blockd, tmp_path):
    s, d = big_server(blockd, tmp_path)
    try:
        flood = RawClient.connect(s.sock, "big")
        flood.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        payload = b"\xab" * (16 * MiB)
        peak = [0]
        stop = threading.Event()

        def watch():
            while not stop.is_set():
                peak[0] = max(peak[0], s.rss_kib())
                time.sleep(0.01)
        t = threading.Thread(target=watch)
        t.start()
        try:
            for ck in range(12):
                flood.request(NBD_CMD_WRITE, (ck % 4) * 16 * MiB, 16 * MiB, cookie=ck,
                              payload=payload)
        finally:
            time.sleep(0.2)
            stop.set()
            t.join()
        assert peak[0] < 300 * 1024, peak[0]
        got = sorted(flood.reply()[1] for _ in range(12))
        assert got == list(range(12))
        flood.disconnect()
        s.assert_serving("big", BIG)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_export_deleted_during_handshake(blockd, tmp_path, monkeypatch):
    """block-export-del while a client that does not read has option
    replies about that export pending: the server must not use the deleted
    export (it did: heap use-after-free in send_export_info, a crash).
    MALLOC_PERTURB_ makes glibc scribble over freed memory, so that a use
    after free shows without a sanitizer."""
    monkeypatch.setenv("MALLOC_PERTURB_", "165")
    d = short_dir()
    try:
        s = Server(blockd, d, [
            dict(name="disk", img=sparse_image(tmp_path / "disk.raw", SIZE),
                 description="d" * 200),
            dict(name="io", img=sparse_image(tmp_path / "io.raw", SIZE), iothread="io0")],
            iothreads=("io0",), qmp=True)
        q = QMP(s.qmp_path)
        c = RawClient(s.sock)
        c.start()
        c.sock.settimeout(0.5)
        n = 0
        try:
            while n < 100000:
                c.send_option(NBD_OPT_INFO, RawClient.info_payload(
                    "disk", [NBD_INFO_NAME, NBD_INFO_DESCRIPTION]))
                n += 1
        except socket.timeout:
            pass
        assert n > 10
        assert q.cmd("block-export-del", id="e-disk", mode="hard") == {}
        c.sock.settimeout(10)
        rtypes = []
        try:
            while not rtypes or rtypes[-1] != NBD_REP_ERR_UNKNOWN:
                rtypes.append(c.option_reply()[1])
        except (EOFError, ConnectionResetError):
            pass
        assert s.alive(), "blockd died: " + s.daemon.stderr_path.read_text()[-3000:]
        # Well-formed replies up to the deletion, then "unknown export" for
        # the rest, and the handshake goes on.
        assert set(rtypes) <= {NBD_REP_INFO, NBD_REP_ACK, NBD_REP_ERR_UNKNOWN}
        c.sock.settimeout(0.3)
        try:
            while True:
                assert c.option_reply()[1] == NBD_REP_ERR_UNKNOWN
        except socket.timeout:
            pass
        c.sock.settimeout(10)
        assert c.option(NBD_OPT_GO, RawClient.info_payload("disk"))[-1][0] == \
            NBD_REP_ERR_UNKNOWN
        assert c.option(NBD_OPT_INFO, RawClient.info_payload("io"))[-1][0] == NBD_REP_ACK
        c.close()
        # The node is let go once nothing holds it any more.
        wait_for(lambda: "error" not in q.execute("blockdev-del", {"node-name": "disk"}),
                 what="blockdev-del")
        assert s.alive()
        s.assert_serving("io", SIZE)
        err = s.daemon.stderr_path.read_text()
        assert "Sanitizer" not in err, err
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_flood_from_several_connections_is_bounded(blockd, tmp_path):
    s, d = big_server(blockd, tmp_path)
    flood = []
    try:
        for i in range(6):
            c = RawClient.connect(s.sock, "big")
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            c.send(b"".join(
                struct.pack(">IHHQQI", 0x25609513, 0, NBD_CMD_READ, ck,
                            (ck % 2) * NBD_MAX_BUFFER_SIZE, NBD_MAX_BUFFER_SIZE)
                for ck in range(100)))
            flood.append(c)
        peak = rss_watch(s, 1.0)
        s.assert_serving("io", SIZE)
        assert peak < 300 * 1024, f"RSS {peak} KiB"
    finally:
        for c in flood:
            c.close()
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("iothread", [False, True])
def test_sigterm_with_clients_not_reading(blockd, tmp_path, iothread):
    d = short_dir()
    try:
        s = Server(blockd, d, [dict(name="disk", img=sparse_image(tmp_path / "d.raw", SIZE),
                                    iothread="io0" if iothread else None,
                                    description="x" * 3000)],
                   iothreads=("io0",))
        flood = RawClient.connect(s.sock, "disk")
        flood.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        flood.send(b"".join(struct.pack(">IHHQQI", 0x25609513, 0, NBD_CMD_READ, ck, 0, MiB)
                            for ck in range(100)))
        hs = RawClient(s.sock)
        hs.start()
        hs.sock.settimeout(0.3)
        try:
            for _ in range(100000):
                hs.send_option(NBD_OPT_INFO, RawClient.info_payload(
                    "disk", [NBD_INFO_DESCRIPTION]))
        except socket.timeout:
            pass
        time.sleep(0.3)
        assert s.daemon.stop(timeout=3) == 0
        assert "freed with a handler" not in s.daemon.stderr_path.read_text()
    finally:
        shutil.rmtree(d, ignore_errors=True)
