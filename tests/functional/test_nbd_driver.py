"""The nbd driver (a node whose data another NBD server holds): I/O and
block status through it, a mirror onto it (storage migration), a server
that restarts (reconnect-delay), requests from iothreads, and hostile
servers (malformed handshakes and replies: a clean error, the daemon
carries on).  The comparison with qemu-storage-daemon is in
test_qsd_compat.py."""
import os
import shutil
import socket
import struct
import subprocess
import threading
import time

import pytest

from conftest import BLOCKD
from nbdutil import short_dir
from qmp import QMP

MiB = 1024 * 1024
NBDMAGIC = 0x4e42444d41474943
IHAVEOPT = 0x49484156454F5054
REPMAGIC = 0x0003e889045565a9


class Remote:
    """A blockd serving @img (raw) as export "t" at @d/r.sock; QMP in .q."""

    def __init__(self, d, img):
        self.d, self.img, self.sock = d, img, f"{d}/r.sock"
        self.start()

    def start(self):
        self.p = subprocess.Popen(
            [BLOCKD, "--blockdev", f"driver=file,node-name=f,filename={self.img}",
             "--chardev", f"socket,id=m,path={self.d}/rq.sock,server=on,wait=off",
             "--monitor", "chardev=m",
             "--nbd-server", f"addr.type=unix,addr.path={self.sock}",
             "--export", "type=nbd,id=e,node-name=f,name=t,writable=on"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.q = QMP(f"{self.d}/rq.sock")

    def kill(self):
        self.p.kill()
        self.p.wait()
        os.unlink(self.sock)


class Local:
    """The daemon under test: QMP, an NBD server for its own exports."""

    def __init__(self, d, *extra):
        self.d = d
        self.p = subprocess.Popen(
            [BLOCKD, "--chardev", f"socket,id=m,path={d}/q.sock,server=on,wait=off",
             "--monitor", "chardev=m", "--nbd-server", f"addr.type=unix,addr.path={d}/l.sock",
             *extra], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.q = QMP(f"{d}/q.sock")

    def add_nbd(self, sock, export="t", node="n", **kw):
        return self.q.execute("blockdev-add", {"driver": "nbd", "node-name": node,
                                               "server": {"type": "unix", "path": sock},
                                               "export": export, **kw})

    def export(self, node="n", **kw):
        r = self.q.execute("block-export-add", {"type": "nbd", "id": f"e{node}",
                                                "node-name": node, "name": node,
                                                "writable": True, **kw})
        assert r == {"return": {}}, r
        return f"nbd+unix:///{node}?socket={self.d}/l.sock"

    def quit(self):
        self.q.execute("quit")
        self.p.wait(30)
        err = self.p.stderr.read().decode()
        assert "Sanitizer" not in err and "runtime error" not in err, err
        return err


@pytest.fixture
def dirs():
    d = short_dir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


def wait_event(q, name, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        ev = q.next_event(deadline)
        assert ev is not None, f"no {name}"
        if ev["event"] == name:
            return ev


def qemu_io(uri, *cmds):
    args = ["qemu-io", "-f", "raw"]
    for c in cmds:
        args += ["-c", c]
    return subprocess.run(args + [uri], capture_output=True, text=True, timeout=60)


def qemu_map(uri):
    r = subprocess.run(["qemu-img", "map", "--output=json", "-f", "raw", uri],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def raw_image(path, size=64 * MiB):
    with open(path, "wb") as f:
        f.truncate(size)


def test_io_and_block_status_pass_through(dirs):
    img = f"{dirs}/r.img"
    raw_image(img)
    remote = Remote(dirs, img)
    local = Local(dirs)
    try:
        assert local.add_nbd(remote.sock) == {"return": {}}
        uri = local.export()
        # The node remembers the last extent the server reported (one
        # question covers a whole run of the disk); a write forgets it.
        assert qemu_map(uri) == qemu_map(f"nbd+unix:///t?socket={remote.sock}")
        r = qemu_io(uri, "write -P 7 1M 1M", "write -z 3M 1M", "write -P 9 60M 4M",
                    "discard 61M 1M", "flush", "read -P 7 1M 1M", "read -P 0 3M 1M",
                    "read -P 9 62M 2M", "read -P 9 60M 1M", "aio_write -P 5 10M 64k", "aio_write -P 6 11M 64k",
                    "aio_flush", "read -P 5 10M 64k", "read -P 6 11M 64k")
        assert r.returncode == 0 and "fail" not in r.stdout, r.stdout + r.stderr
        # The remote's own view, block status included, is what the node shows.
        assert qemu_map(uri) == qemu_map(f"nbd+unix:///t?socket={remote.sock}")
        with open(img, "rb") as f:
            f.seek(60 * MiB)
            assert f.read(MiB) == b"\x09" * MiB
        # A read larger than the server's largest request is split.
        r = qemu_io(uri, "read -P 9 60M 1M", "read 0 48M")
        assert r.returncode == 0 and "fail" not in r.stdout, r.stdout
        node = [n for n in local.q.cmd("query-named-block-nodes") if n["node-name"] == "n"][0]
        assert node["image"]["filename"] == f"nbd+unix:///t?socket={remote.sock}"
        assert node["image"]["virtual-size"] == 64 * MiB and "actual-size" not in node["image"]
        assert "error" in local.q.execute("block_resize", {"node-name": "n", "size": 128 * MiB})
    finally:
        local.quit()
        remote.kill()


def test_mirror_onto_an_nbd_node(dirs):
    """Storage migration: a qcow2 disk mirrored to another daemon's export
    while a client writes to it, then switched over."""
    img = f"{dirs}/r.img"
    raw_image(img, 32 * MiB)
    src = f"{dirs}/src.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", src, "32M"], check=True,
                   capture_output=True)
    subprocess.run(["qemu-io", "-c", "write -P 3 0 8M", "-c", "write -P 4 20M 3M", src],
                   check=True, capture_output=True)
    remote = Remote(dirs, img)
    local = Local(dirs, "--blockdev", f"driver=file,node-name=sf,filename={src}",
                  "--blockdev", "driver=qcow2,node-name=src,file=sf")
    try:
        uri = local.export("src")
        assert local.add_nbd(remote.sock) == {"return": {}}
        local.q.cmd("blockdev-mirror", job_id="m", device="src", target="n", sync="full")
        r = qemu_io(uri, "write -P 8 4M 1M")
        assert r.returncode == 0, r.stderr
        ev = wait_event(local.q, "BLOCK_JOB_READY")
        assert ev["data"]["device"] == "m"
        local.q.cmd("job-complete", id="m")
        ev = wait_event(local.q, "BLOCK_JOB_COMPLETED")
        assert "error" not in ev["data"], ev
        r = subprocess.run(["qemu-img", "compare", "-U", "-f", "qcow2", "-F", "raw", src, img],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        local.quit()
        remote.kill()


def test_server_restart_within_reconnect_delay(dirs):
    """With reconnect-delay the requests on a lost connection wait for the
    server to come back and are sent again: none fails."""
    img = f"{dirs}/r.img"
    raw_image(img)
    remote = Remote(dirs, img)
    local = Local(dirs)
    try:
        assert local.add_nbd(remote.sock, **{"reconnect-delay": 10}) == {"return": {}}
        uri = local.export()
        remote.kill()
        writer = subprocess.Popen(["qemu-io", "-f", "raw", "-c", "write -P 6 0 4M",
                                   "-c", "read -P 6 0 4M", uri],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(1.5)
        assert writer.poll() is None        # waiting for the server
        remote.start()
        out = writer.communicate(timeout=30)[0]
        assert writer.returncode == 0 and "fail" not in out, out
        with open(img, "rb") as f:
            assert f.read(4 * MiB) == b"\x06" * 4 * MiB
    finally:
        err = local.quit()
        remote.kill()
    assert "connection to the server lost" in err


def test_lost_connection_without_delay_fails_then_recovers(dirs):
    img = f"{dirs}/r.img"
    raw_image(img)
    remote = Remote(dirs, img)
    local = Local(dirs)
    try:
        assert local.add_nbd(remote.sock) == {"return": {}}
        uri = local.export()
        remote.kill()
        r = qemu_io(uri, "read 0 64k")
        assert "read failed: Input/output error" in r.stdout + r.stderr
        remote.start()
        r = qemu_io(uri, "write -P 2 0 64k", "read -P 2 0 64k")
        assert r.returncode == 0 and "fail" not in r.stdout, r.stdout + r.stderr
    finally:
        local.quit()
        remote.kill()


def test_requests_from_iothreads(dirs):
    """The node lives in one iothread, half its export's connections in
    another: their requests move to the node's thread and back."""
    img = f"{dirs}/r.img"
    raw_image(img)
    remote = Remote(dirs, img)
    local = Local(dirs, "--object", "iothread,id=io0", "--object", "iothread,id=io1")
    try:
        assert local.add_nbd(remote.sock) == {"return": {}}
        local.q.cmd("x-blockdev-set-iothread", node_name="n", iothread="io0")
        uri = local.export(iothread=["io0", "io1"])
        jobs = [subprocess.Popen(["qemu-io", "-f", "raw", "-c", f"aio_write -P {i + 1} {i}M 1M",
                                  "-c", f"aio_write -P {i + 1} {i + 8}M 1M", "-c", "aio_flush",
                                  "-c", f"read -P {i + 1} {i}M 1M", uri],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                for i in range(4)]
        for j in jobs:
            out = j.communicate(timeout=60)[0]
            assert j.returncode == 0 and "fail" not in out, out
        # The node moves back to the main thread and still works.
        local.q.cmd("block-export-del", id="en")
        local.q.cmd("x-blockdev-set-iothread", node_name="n", iothread=None)
        r = qemu_io(local.export(), "read -P 3 2M 1M", "read -P 4 11M 1M")
        assert r.returncode == 0 and "fail" not in r.stdout, r.stdout
    finally:
        local.quit()
        remote.kill()


# ---- Hostile servers --------------------------------------------------------

def recv_exact(c, n):
    buf = b""
    while len(buf) < n:
        chunk = c.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def opt_reply(c, opt, typ, data=b""):
    c.sendall(struct.pack(">QIII", REPMAGIC, opt, typ, len(data)) + data)


def handshake(c, size, case):
    """A correct fixed-newstyle handshake, but for the @case that spoils it."""
    if case == "bad-greeting":
        c.sendall(b"HELLO, WORLD!" * 4)
        return False
    c.sendall(struct.pack(">QQH", NBDMAGIC, IHAVEOPT, 3))
    recv_exact(c, 4)
    while True:
        _, opt, length = struct.unpack(">QII", recv_exact(c, 16))
        recv_exact(c, length)
        if opt == 8:                                    # structured replies
            opt_reply(c, opt, 1)
        elif opt == 10:                                 # set meta context
            if case == "huge-option-reply":
                c.sendall(struct.pack(">QIII", REPMAGIC, opt, 4, 1 << 30))
                return False
            opt_reply(c, opt, 4, struct.pack(">I", 1) + b"base:allocation")
            opt_reply(c, opt, 1)
        elif opt == 7:                                  # go
            if case == "bad-block-sizes":
                opt_reply(c, opt, 3, struct.pack(">HIII", 3, 3, 4096, 1 << 20))
            if case == "odd-size":
                opt_reply(c, opt, 3, struct.pack(">HIII", 3, 512, 4096, 1 << 20))
                size = 1000
            opt_reply(c, opt, 3, struct.pack(">HQH", 0, size, 1 | 4 | 8 | 32 | 64))
            opt_reply(c, opt, 1)
            return True
        else:
            opt_reply(c, opt, 0x80000001)


def good_replies(c):
    """Answer reads with zeroes (one data chunk each) until the client goes."""
    while True:
        _, flags, typ, cookie, off, length = struct.unpack(">IHHQQI", recv_exact(c, 28))
        if typ == 0:
            c.sendall(struct.pack(">IHHQI", 0x668e33ef, 1, 1, cookie, 8 + length) +
                      struct.pack(">Q", off) + bytes(length))
        elif typ == 7:                                  # block status: all data
            c.sendall(struct.pack(">IHHQI", 0x668e33ef, 1, 5, cookie, 12) +
                      struct.pack(">III", 1, length, 0))
        elif typ == 2:
            return
        else:
            c.sendall(struct.pack(">IIQ", 0x67446698, 0, cookie))


def bad_reply(c, case):
    """Answer the next request as @case says (malformed); for
    "error-then-eof", the next read (block status is answered well)."""
    while True:
        _, flags, typ, cookie, off, length = struct.unpack(">IHHQQI", recv_exact(c, 28))
        if case != "error-then-eof" or typ != 7:
            break
        c.sendall(struct.pack(">IHHQI", 0x668e33ef, 1, 5, cookie, 12) +
                  struct.pack(">III", 1, length, 0))
    if typ == 1:
        recv_exact(c, length)
    hdr = lambda f, t, n: struct.pack(">IHHQI", 0x668e33ef, f, t, cookie, n)  # noqa: E731
    replies = {
        "bad-magic": struct.pack(">IIQ", 0xdeadbeef, 0, cookie),
        "unknown-cookie": struct.pack(">IIQ", 0x67446698, 0, cookie + 1000),
        "simple-read-data": struct.pack(">IIQ", 0x67446698, 0, cookie) + b"x" * length,
        "data-outside": hdr(1, 1, 8 + 512) + struct.pack(">Q", off + length) + b"x" * 512,
        "hole-outside": hdr(1, 2, 12) + struct.pack(">QI", off, length + 1),
        "huge-chunk": hdr(1, 1, 0xffffffff),
        "error-zero": hdr(1, 0x8001, 6) + struct.pack(">IH", 0, 0),
        "error-long-message": hdr(1, 0x8001, 6) + struct.pack(">IH", 5, 60000),
        "unknown-type": hdr(1, 77, 0),
        "none-not-done": hdr(0, 0, 0),
        "status-empty": hdr(1, 5, 12) + struct.pack(">III", 1, 0, 0),
        "status-other-context": hdr(1, 5, 12) + struct.pack(">III", 9, 512, 0),
        "eof-mid-payload": hdr(1, 1, 8 + length)[:-2],
        # An error chunk that is not the last, then the connection ends.
        "error-then-eof": hdr(0, 0x8001, 6) + struct.pack(">IH", 5, 0),
    }
    c.sendall(replies[case])


class HostileServer:
    def __init__(self, path, case, size=MiB, good_after_first=False):
        self.good_after_first = good_after_first
        self.s = socket.socket(socket.AF_UNIX)
        self.s.bind(path)
        self.s.listen(4)
        self.case, self.size = case, size
        self.t = threading.Thread(target=self.serve, daemon=True)
        self.t.start()

    def serve(self):
        n = 0
        while True:
            try:
                c, _ = self.s.accept()
            except OSError:
                return
            n += 1
            try:
                if handshake(c, self.size, self.case):
                    if n > 1 and self.good_after_first:
                        good_replies(c)
                    else:
                        bad_reply(c, self.case)
                    time.sleep(0.2)
            except (EOFError, OSError, KeyError, struct.error):
                pass
            c.close()

    def close(self):
        self.s.close()


HANDSHAKE_CASES = ["bad-greeting", "huge-option-reply", "bad-block-sizes", "odd-size"]
REPLY_CASES = ["bad-magic", "unknown-cookie", "simple-read-data", "data-outside",
               "hole-outside", "huge-chunk", "error-zero", "error-long-message",
               "unknown-type", "none-not-done", "eof-mid-payload"]
STATUS_CASES = ["status-empty", "status-other-context"]


@pytest.fixture(scope="module")
def shared():
    """One daemon for all the hostile cases (each has its own node and
    server): it must survive every one of them, and it is checked for
    sanitizer reports when it quits at the end."""
    d = short_dir()
    local = Local(d)
    yield local
    err = local.quit()
    shutil.rmtree(d, ignore_errors=True)
    assert "connection to the server lost" in err


@pytest.mark.parametrize("case", HANDSHAKE_CASES)
def test_hostile_handshake(shared, case):
    sock = f"{shared.d}/{case}.sock"
    srv = HostileServer(sock, case)
    try:
        r = shared.add_nbd(sock, node="hs")
        assert "error" in r, r
        assert r["error"]["desc"], r
        assert shared.q.cmd("query-named-block-nodes") == []
    finally:
        srv.close()


@pytest.mark.parametrize("case", REPLY_CASES + STATUS_CASES)
def test_hostile_replies(shared, case):
    """A malformed reply fails its request and drops the connection; the
    daemon (ASan in make check) carries on and reconnects for the next."""
    sock = f"{shared.d}/{case}.sock"
    srv = HostileServer(sock, case)
    local = shared
    try:
        assert local.add_nbd(sock, node="hr") == {"return": {}}
        uri = local.export("hr")
        if case in STATUS_CASES:
            r = subprocess.run(["qemu-img", "map", "-f", "raw", uri], capture_output=True,
                               text=True, timeout=30)
            assert r.returncode != 0, r.stdout
        else:
            r = qemu_io(uri, "read 0 4k")
            assert "read failed" in r.stdout + r.stderr, r.stdout + r.stderr
        # The next request connects again (and meets the same server).
        r = qemu_io(uri, "read 0 4k")
        assert "read failed" in r.stdout + r.stderr or case in STATUS_CASES
        assert [n["node-name"] for n in local.q.cmd("query-named-block-nodes")] == ["hr"]
    finally:
        local.q.cmd("block-export-del", id="ehr")
        local.q.cmd("blockdev-del", node_name="hr")
        srv.close()


def test_retry_after_a_partial_error_reply(dirs):
    """A read gets an error chunk (not the last) and then the connection
    ends; with reconnect-delay it is sent again on a new connection, where
    it succeeds: the lost attempt's error must not stick to it."""
    srv = HostileServer(f"{dirs}/h.sock", "error-then-eof", good_after_first=True)
    local = Local(dirs)
    try:
        assert local.add_nbd(f"{dirs}/h.sock", **{"reconnect-delay": 5}) == {"return": {}}
        r = qemu_io(local.export(), "read -P 0 0 4k")
        assert r.returncode == 0 and "fail" not in r.stdout, r.stdout + r.stderr
    finally:
        local.quit()
        srv.close()


def test_a_server_that_always_breaks_does_not_keep_a_request(dirs):
    """Every connection ends in a protocol error: with reconnect-delay=2
    the read is retried for 2 s from its first failure, then fails."""
    srv = HostileServer(f"{dirs}/h.sock", "bad-magic")
    local = Local(dirs)
    try:
        assert local.add_nbd(f"{dirs}/h.sock", **{"reconnect-delay": 2}) == {"return": {}}
        start = time.monotonic()
        r = qemu_io(local.export(), "read 0 4k")
        assert "read failed" in r.stdout + r.stderr
        assert time.monotonic() - start < 10
    finally:
        local.quit()
        srv.close()
