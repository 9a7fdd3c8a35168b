"""nbdsh scripts against the real server: the hardening cases as a user of
libnbd's shell would write them (strict mode off, so that libnbd sends
what it would otherwise refuse), with the main-loop export and the
iothread export alike.  Each script ends by printing "ok"; an assertion
in it fails the test with nbdsh's traceback."""
import os
import shutil
import subprocess
import textwrap

import pytest

from nbdutil import MiB, Server, short_dir, sparse_image

SIZE = 8 * MiB

# Put before every script: the URI, the errno names, and a relaxed handle.
PRELUDE = """
import errno
URI = {uri!r}
def expect_errno(fn, want):
    try:
        fn()
    except nbd.Error as e:
        # libnbd's python names the errno ("EINVAL").
        assert e.errno in (want, errno.errorcode[want]), (e.errno, want, e.string)
        return
    raise AssertionError("no error, wanted %d" % want)
h.set_strict_mode(0)
h.connect_uri(URI)
"""


@pytest.fixture(params=["main", "iothread"])
def srv(request, blockd, tmp_path):
    d = short_dir()
    io = request.param == "iothread"
    disk = sparse_image(tmp_path / "disk.raw", SIZE)
    with open(disk, "r+b") as f:
        f.seek(2 * MiB)
        f.write(b"\x11" * MiB)
    exports = [dict(name="disk", img=disk, iothread="io0" if io else None),
               dict(name="ro", img=sparse_image(tmp_path / "ro.raw", SIZE), writable=False,
                    iothread="io0" if io else None)]
    s = Server(blockd, d, exports, iothreads=("io0",) if io else ())
    try:
        yield s
        s.assert_serving("disk", SIZE)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def nbdsh(srv, script, name="disk", *opts):
    code = PRELUDE.format(uri=srv.uri(name)) + textwrap.dedent(script) + '\nprint("ok")\n'
    # nbdsh runs "python3 -mnbd": make that Debian's python, which has the
    # nbd module, whatever python3 is first on PATH.
    env = dict(os.environ, PATH="/usr/bin:" + os.environ.get("PATH", ""))
    p = subprocess.run(["nbdsh", *opts, "-c", code], capture_output=True, text=True,
                       timeout=60, env=env)
    assert p.returncode == 0 and p.stdout.strip().endswith("ok"), p.stdout + p.stderr


def test_nbdsh_bad_ranges_and_sizes(srv):
    nbdsh(srv, """
        size = h.get_size()
        maxb = h.get_block_size(nbd.SIZE_MAXIMUM)
        assert size == 8 * 1024 * 1024 and maxb >= 512
        expect_errno(lambda: h.pread(4096, size - 2048), errno.EINVAL)       # past the end
        expect_errno(lambda: h.pread(512, size), errno.EINVAL)               # at the end
        expect_errno(lambda: h.pwrite(b"x" * 4096, size - 2048), errno.ENOSPC)
        expect_errno(lambda: h.trim(4096, size), errno.EINVAL)
        expect_errno(lambda: h.zero(4096, size), errno.ENOSPC)
        expect_errno(lambda: h.pread(maxb + 4096, 0), errno.EINVAL)          # above the maximum
        # The connection still serves.
        assert h.pread(4, 2 * 1024 * 1024) == b"\\x11" * 4
    """)


def test_nbdsh_unknown_flags_and_commands(srv):
    nbdsh(srv, """
        expect_errno(lambda: h.pread(512, 0, flags=0x4000), errno.EINVAL)   # unknown flag
        expect_errno(lambda: h.flush(flags=nbd.CMD_FLAG_REQ_ONE), errno.EINVAL)  # misplaced
        # FUA is accepted on every command (the protocol says so).
        h.pwrite(b"a" * 512, 0, flags=nbd.CMD_FLAG_FUA)
        h.zero(512, 512, flags=nbd.CMD_FLAG_FUA | nbd.CMD_FLAG_NO_HOLE)
        h.trim(512, 1024, flags=nbd.CMD_FLAG_FUA)
        assert h.pread(512, 0) == b"a" * 512
    """)


def test_nbdsh_read_only_export_refuses_writes(srv):
    nbdsh(srv, """
        assert h.is_read_only()
        expect_errno(lambda: h.pwrite(b"x" * 512, 0), errno.EPERM)
        expect_errno(lambda: h.trim(512, 0), errno.EPERM)
        expect_errno(lambda: h.zero(512, 0), errno.EPERM)
        assert h.pread(512, 0) == bytes(512)
        h.flush()
    """, name="ro")


def test_nbdsh_many_requests_in_flight(srv):
    nbdsh(srv, """
        # 64 writes then 64 reads in flight, completed in whatever order.
        bufs = []
        for i in range(64):
            b = nbd.Buffer.from_bytearray(bytearray([i]) * 8192)
            bufs.append(b)
            h.aio_pwrite(b, 4 * 1024 * 1024 + i * 8192)
        while h.aio_in_flight() > 0:
            h.poll(-1)
        reads = [(i, nbd.Buffer(8192)) for i in range(64)]
        cookies = [h.aio_pread(b, 4 * 1024 * 1024 + i * 8192) for i, b in reads]
        while h.aio_in_flight() > 0:
            h.poll(-1)
        for c in cookies:
            assert h.aio_command_completed(c)
        for i, b in reads:
            assert b.to_bytearray() == bytearray([i]) * 8192, i
    """)


def test_nbdsh_block_status_and_zeroes(srv):
    nbdsh(srv, """
        seen = []
        def cb(meta, offset, entries, err):
            assert meta == nbd.CONTEXT_BASE_ALLOCATION
            seen.extend(zip(entries[0::2], entries[1::2]))
        h.block_status(8 * 1024 * 1024, 0, cb)
        # hole (3) up to 2 MiB, data (0) for 1 MiB, then hole again.
        off, table = 0, []
        for length, flags in seen:
            table.append((off, length, flags))
            off += length
        assert off == 8 * 1024 * 1024
        def flags_at(o):
            return [f for s, l, f in table if s <= o < s + l][0]
        assert flags_at(0) & 1 and flags_at(2 * 1024 * 1024) == 0
        assert flags_at(3 * 1024 * 1024) & 1
        # FAST_ZERO either zeroes quickly or says it cannot (ENOTSUP).
        try:
            h.zero(1024 * 1024, 2 * 1024 * 1024, flags=nbd.CMD_FLAG_FAST_ZERO)
            assert h.pread(1024 * 1024, 2 * 1024 * 1024) == bytes(1024 * 1024)
        except nbd.Error as e:
            assert e.errno in (errno.ENOTSUP, "ENOTSUP", "EOPNOTSUPP"), e.errno
        h.cache(1024 * 1024, 0)
    """, "disk", "--base-allocation")
