"""The NBD server with real clients: nbdinfo, qemu-io, qemu-img, nbdcopy,
fio, libnbd (python3-libnbd), and its QMP commands."""
import json
import os
import random
import shutil
import socket
import subprocess
import threading
import time

import nbd
import pytest

from nbdutil import (
    NBD_CMD_READ, MiB, RawClient, Server, nbdinfo_json, run, short_dir, sparse_image,
    wait_for,
)
from qmp import QMP


@pytest.fixture
def serve(blockd, sdir):
    def start(exports, **kw):
        return Server(blockd, sdir, exports, **kw)
    return start


def random_image(path, size, chunks, seed):
    """A sparse file with random data in @chunks ((offset, length) pairs);
    returns its contents."""
    rnd = random.Random(seed)
    content = bytearray(size)
    with open(path, "wb") as f:
        f.truncate(size)
        for off, n in chunks:
            data = rnd.randbytes(n)
            f.seek(off)
            f.write(data)
            content[off:off + n] = data
    return bytes(content)


def qemu_io(uri, *cmds, check=True, ro=False):
    args = ["qemu-io"] + (["-r"] if ro else []) + ["-f", "raw", uri]
    for c in cmds:
        args += ["-c", c]
    p = run(*args, check=False)
    if check:
        assert p.returncode == 0, p.stdout + p.stderr
        assert "failed" not in p.stdout + p.stderr, p.stdout + p.stderr
    return p


def runs(data):
    """(offset, length, byte) for each run of equal bytes in @data."""
    out = []
    i = 0
    while i < len(data):
        j = i
        b = data[i]
        # Skip quickly over long runs.
        step = 65536
        while j + step <= len(data) and data[j:j + step] == bytes([b]) * step:
            j += step
        while j < len(data) and data[j] == b:
            j += 1
        out.append((i, j - i, b))
        i = j
    return out


# ---- nbdinfo -------------------------------------------------------------------------


def test_nbdinfo_writable_export(serve, tmp_path):
    img = sparse_image(tmp_path / "a.raw", 64 * MiB)
    srv = serve([dict(name="disk", img=img, description="scratch")])
    info = nbdinfo_json(srv.uri("disk"))
    assert info["protocol"] == "newstyle-fixed"
    assert info["structured"] is True
    [e] = info["exports"]
    assert e["export-name"] == "disk"
    assert e["export-size"] == 64 * MiB
    assert e["description"] == "scratch"
    assert e["is_read_only"] is False
    for flag in ("can_flush", "can_fua", "can_trim", "can_zero", "can_multi_conn",
                 "can_cache", "can_df", "can_fast_zero"):
        assert e[flag] is True, flag
    assert e["block_size_minimum"] == 1
    assert e["block_size_preferred"] == 4096
    assert e["block_size_maximum"] == 32 * MiB
    assert "base:allocation" in e["contexts"]


def test_nbdinfo_read_only_export_and_odd_size(serve, tmp_path):
    img = sparse_image(tmp_path / "a.raw", 1000001)
    with open(img, "r+b") as f:
        f.seek(1000001 - 3)
        f.write(b"xyz")
    srv = serve([dict(name="ro", img=img, writable=False)])
    [e] = nbdinfo_json(srv.uri("ro"))["exports"]
    assert e["export-size"] == 1000001
    assert e["is_read_only"] is True
    assert e["can_trim"] is False
    assert e["can_zero"] is False
    assert e["can_fast_zero"] is False
    assert e["can_flush"] is True
    assert e["can_multi_conn"] is True
    assert "description" not in e
    assert run("nbdinfo", "--size", srv.uri("ro")).stdout.strip() == "1000001"
    # The map covers the odd tail exactly, and it reads back.
    extents = json.loads(run("nbdinfo", "--map", "--json", srv.uri("ro")).stdout)
    assert sum(x["length"] for x in extents) == 1000001
    assert extents[-1]["description"] == "data"
    assert extents[0]["offset"] == 0 and extents[0]["description"] == "hole,zero"
    h = nbd.NBD()
    h.connect_uri(srv.uri("ro"))
    assert h.pread(5, 1000001 - 5) == b"\0\0xyz"
    assert h.pread(1000001, 0)[-4:] == b"\0xyz"
    h.shutdown()


def test_nbdinfo_map_sparse(serve, tmp_path):
    img = sparse_image(tmp_path / "a.raw", 16 * MiB)
    # discard=unmap: zeroing with unmap allowed and trimming punch holes.
    srv = serve([dict(name="disk", img=img, file_opts=["discard=unmap"],
                      raw_opts=["discard=unmap"])])
    uri = srv.uri("disk")
    assert json.loads(run("nbdinfo", "--map", "--json", uri).stdout) == [
        {"offset": 0, "length": 16 * MiB, "type": 3, "description": "hole,zero"}]
    qemu_io(uri, "write -P 0xaa 1M 128k", "write -P 0xbb 8M 8k",
            "write -z -u 1088k 64k")   # punches a hole in the first range
    extents = json.loads(run("nbdinfo", "--map", "--json", uri).stdout)
    assert [(x["offset"], x["length"], x["description"]) for x in extents] == [
        (0, 1 * MiB, "hole,zero"),
        (1 * MiB, 64 * 1024, "data"),
        (1088 * 1024, 8 * MiB - 1088 * 1024, "hole,zero"),
        (8 * MiB, 8192, "data"),
        (8 * MiB + 8192, 8 * MiB - 8192, "hole,zero"),
    ]
    # --totals agrees, and the content is what was written.
    totals = json.loads(run("nbdinfo", "--map", "--totals", "--json", uri).stdout)
    data = [t for t in totals if t["type"] == 0]
    assert data[0]["size"] == 64 * 1024 + 8192
    qemu_io(uri, "read -P 0xaa 1M 64k", "read -P 0 1088k 64k", "read -P 0xbb 8M 8k",
            "read -P 0 0 1M")
    # A trim of the second half of the last data range, and a new range.
    qemu_io(uri, "discard 8196k 4k", "write -P 0xcc 12M 4k")
    extents = json.loads(run("nbdinfo", "--map", "--json", uri).stdout)
    assert [(x["offset"], x["length"], x["description"]) for x in extents][3:] == [
        (8 * MiB, 4096, "data"),
        (8 * MiB + 4096, 4 * MiB - 4096, "hole,zero"),
        (12 * MiB, 4096, "data"),
        (12 * MiB + 4096, 4 * MiB - 4096, "hole,zero"),
    ]
    qemu_io(uri, "read -P 0xbb 8M 4k", "read -P 0 8196k 4k", "read -P 0xcc 12M 4k")


def test_nbdinfo_list(serve, tmp_path):
    a = sparse_image(tmp_path / "a.raw", 1 * MiB)
    b = sparse_image(tmp_path / "b.raw", 2 * MiB)
    srv = serve([dict(name="alpha", img=a, description="first"),
                 dict(name="beta", img=b, writable=False)])
    info = nbdinfo_json(srv.uri(), "--list")
    exports = {e["export-name"]: e for e in info["exports"]}
    assert set(exports) == {"alpha", "beta"}
    assert exports["alpha"]["export-size"] == 1 * MiB
    assert exports["beta"]["export-size"] == 2 * MiB
    assert exports["alpha"]["description"] == "first"
    assert exports["beta"]["is_read_only"] is True
    assert "description" not in exports["beta"]
    # Unknown export: nbdinfo fails, the server carries on.
    p = run("nbdinfo", srv.uri("gamma"), check=False)
    assert p.returncode != 0
    srv.assert_serving("alpha", 1 * MiB)


# ---- qemu-io ---------------------------------------------------------------------------


def test_qemu_io_patterns_unaligned(serve, tmp_path):
    size = 4 * MiB
    img = sparse_image(tmp_path / "a.raw", size)
    srv = serve([dict(name="disk", img=img)])
    uri = srv.uri("disk")
    expected = bytearray(size)
    ops = [
        ("write", 0x11, 0, 65536),
        ("write", 0x22, 4097, 12345),
        ("write", 0x33, 1000000, 3),
        ("write", 0x44, 65000, 10000),
        ("zero", 0, 70001, 5000),
        ("write", 0x55, size - 511, 511),
        ("write", 0x66, 2 * MiB - 1, 2),
        ("write", 0x77, 1 * MiB + 1, 3 * 65536 + 17),
        ("zero", 0, 1 * MiB + 4096, 511),
        ("write", 0x88, 3 * MiB, 1),
    ]
    cmds = []
    for op, pat, off, n in ops:
        cmds.append(f"write -P {pat} {off} {n}" if op == "write" else f"write -z {off} {n}")
        expected[off:off + n] = bytes([pat]) * n
    qemu_io(uri, *cmds)
    # Read back every run of equal bytes with a pattern check.
    checks = [f"read -P {b} {off} {n}" for off, n, b in runs(expected)]
    assert len(checks) > 15
    p = qemu_io(uri, *checks)
    assert p.stdout.count("read ") == len(checks)
    # A wrong pattern is noticed (the checks above mean something).
    p = qemu_io(uri, "read -P 0x23 4097 12345", check=False)
    assert "Pattern verification failed" in p.stdout + p.stderr
    # And the file holds what was written.
    with open(img, "rb") as f:
        assert f.read() == bytes(expected)


def test_qemu_io_read_only_refuses_writes(serve, tmp_path):
    img = tmp_path / "a.raw"
    img.write_bytes(b"\x5a" * (1 * MiB))
    srv = serve([dict(name="ro", img=str(img), writable=False)])
    uri = srv.uri("ro")
    for opts in ([], ["-r"]):
        p = run("qemu-io", *opts, "-f", "raw", uri, "-c", "write -P 1 0 512", check=False)
        assert p.returncode != 0
        assert "wrote" not in p.stdout
    qemu_io(uri, "read -P 0x5a 0 1M", ro=True)
    # libnbd, which sends the write anyway: the server says EPERM.
    h = nbd.NBD()
    h.set_strict_mode(0)
    h.connect_uri(uri)
    assert h.is_read_only()
    with pytest.raises(nbd.Error) as ei:
        h.pwrite(b"x" * 512, 0)
    assert ei.value.errno == "EPERM"
    with pytest.raises(nbd.Error) as ei:
        h.zero(512, 0)
    assert ei.value.errno == "EPERM"
    assert h.pread(512, 0) == b"\x5a" * 512
    h.shutdown()
    assert img.read_bytes() == b"\x5a" * (1 * MiB)


# ---- Bulk copies ------------------------------------------------------------------------


def test_qemu_img_convert_and_compare(serve, tmp_path):
    size = 8 * MiB
    src = tmp_path / "src.raw"
    random_image(src, size, [(0, 300000), (2 * MiB + 7, 1 * MiB), (size - 4096, 4096)], 1)
    srv = serve([dict(name="src", img=str(src), writable=False)])
    out = tmp_path / "out.raw"
    run("qemu-img", "convert", "-f", "raw", "-O", "raw", srv.uri("src"), str(out))
    p = run("qemu-img", "compare", "-f", "raw", "-F", "raw", str(src), str(out))
    assert "Images are identical" in p.stdout
    assert out.read_bytes() == src.read_bytes()
    # Comparing against the export itself, too.
    p = run("qemu-img", "compare", "-f", "raw", "-F", "raw", srv.uri("src"), str(src))
    assert "Images are identical" in p.stdout


def test_nbdcopy_multi_conn(serve, tmp_path):
    size = 16 * MiB
    src = tmp_path / "src.raw"
    content = random_image(src, size, [(0, 5 * MiB + 3), (7 * MiB, 4 * MiB), (15 * MiB, 1000)], 2)
    dst = sparse_image(tmp_path / "dst.raw", size)
    # Something to overwrite with zeroes where the source has holes.
    with open(dst, "r+b") as f:
        f.seek(12 * MiB)
        f.write(b"\xff" * MiB)
    srv = serve([dict(name="dst", img=dst)])
    run("nbdcopy", "--connections=4", "--requests=16", str(src), srv.uri("dst"))
    p = run("qemu-img", "compare", "-f", "raw", "-F", "raw", str(src), srv.uri("dst"))
    assert "Images are identical" in p.stdout
    with open(dst, "rb") as f:
        assert f.read() == content
    # And back out of the export with 4 connections.
    back = sparse_image(tmp_path / "back.raw", size)
    run("nbdcopy", "--connections=4", srv.uri("dst"), back)
    with open(back, "rb") as f:
        assert f.read() == content


def test_fio_randwrite_verify(serve, tmp_path):
    img = sparse_image(tmp_path / "a.raw", 16 * MiB)
    srv = serve([dict(name="disk", img=img)])
    p = run("fio", "--name=nbdverify", "--ioengine=nbd", f"--uri={srv.uri('disk')}",
            "--rw=randwrite", "--bssplit=4k/50:64k/30:1k/20", "--size=16M",
            "--iodepth=16", "--verify=crc32c", "--do_verify=1", "--verify_fatal=1",
            "--verify_state_save=0",
            "--output-format=json", timeout=60, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    out = json.loads(p.stdout[p.stdout.index("{"):])
    [job] = out["jobs"]
    assert job["error"] == 0
    assert job["write"]["io_bytes"] >= 16 * MiB
    assert job["read"]["io_bytes"] >= 16 * MiB    # the verify pass
    assert "verify" not in p.stderr.lower()


# ---- iothreads ---------------------------------------------------------------------------


def pattern(tag, off, n):
    """Recognisable content for a chunk: tag, offset, then filler."""
    head = f"[{tag}:{off}]".encode()
    return (head * (n // len(head) + 1))[:n]


def writer(uri, tag, start, end, chunk, results):
    try:
        h = nbd.NBD()
        h.connect_uri(uri)
        cookies = []
        bufs = []
        off = start
        while off < end:
            n = min(chunk, end - off)
            buf = nbd.Buffer.from_bytearray(bytearray(pattern(tag, off, n)))
            bufs.append(buf)
            cookies.append(h.aio_pwrite(buf, off))
            while h.aio_in_flight() >= 16:
                h.poll(-1)
            off += n
        while h.aio_in_flight() > 0:
            h.poll(-1)
        for c in cookies:
            assert h.aio_command_completed(c)
        h.flush()
        h.shutdown()
        results.append((tag, "ok"))
    except Exception as e:   # reported by the main thread
        results.append((tag, repr(e)))


def test_iothreads_concurrent_disjoint_writes(serve, tmp_path):
    size = 8 * MiB
    a = sparse_image(tmp_path / "a.raw", size)
    b = sparse_image(tmp_path / "b.raw", size)
    srv = serve([dict(name="a", img=a, iothread="io0"),
                 dict(name="b", img=b, iothread="io1")],
                iothreads=("io0", "io1"))
    # Two connections per export, each its half, chunk sizes not aligned.
    jobs = [("a", "a0", 0, size // 2, 65536 + 511),
            ("a", "a1", size // 2, size, 4096 * 3 + 1),
            ("b", "b0", 0, size // 2 + 777, 131072),
            ("b", "b1", size // 2 + 777, size, 9000)]
    results = []
    threads = [threading.Thread(target=writer,
                                args=(srv.uri(exp), tag, s, e, chunk, results))
               for exp, tag, s, e, chunk in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == sorted((j[1], "ok") for j in jobs)
    expected = {"a": bytearray(size), "b": bytearray(size)}
    for exp, tag, s, e, chunk in jobs:
        off = s
        while off < e:
            n = min(chunk, e - off)
            expected[exp][off:off + n] = pattern(tag, off, n)
            off += n
    for exp, img in (("a", a), ("b", b)):
        h = nbd.NBD()
        h.connect_uri(srv.uri(exp))
        got = b"".join(h.pread(MiB, off) for off in range(0, size, MiB))
        h.shutdown()
        assert got == bytes(expected[exp]), exp
        with open(img, "rb") as f:
            assert f.read() == bytes(expected[exp]), exp
    p = run("qemu-img", "compare", "-f", "raw", "-F", "raw", srv.uri("a"), a)
    assert "Images are identical" in p.stdout


def test_iothread_export_with_qemu_io_in_parallel(serve, tmp_path):
    size = 4 * MiB
    img = sparse_image(tmp_path / "a.raw", size)
    srv = serve([dict(name="disk", img=img, iothread="io0")], iothreads=("io0",))
    uri = srv.uri("disk")
    procs = []
    for i in range(4):
        base = i * MiB
        cmds = []
        for k in range(16):
            cmds += ["-c", f"aio_write -P {0x10 + i} {base + k * 65536 + 3} 65533"]
        cmds += ["-c", "aio_flush"]
        procs.append(subprocess.Popen(["qemu-io", "-f", "raw", uri] + cmds,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    for p in procs:
        out = p.communicate(timeout=60)[0]
        assert p.returncode == 0, out
        assert "failed" not in out, out
    for i in range(4):
        base = i * MiB
        qemu_io(uri, *[f"read -P {0x10 + i} {base + k * 65536 + 3} 65533" for k in range(16)],
                *[f"read -P 0 {base + k * 65536} 3" for k in range(16)])


# ---- QMP ------------------------------------------------------------------------------------


def qmp_server(blockd, sdir, tmp_path, nodes=("disk",), iothreads=()):
    exports = [dict(name=n, img=sparse_image(tmp_path / f"{n}.raw", 4 * MiB)) for n in nodes]
    srv = Server(blockd, sdir, exports, qmp=True, nbd=False, iothreads=iothreads)
    return srv, QMP(srv.qmp_path)


def wait_event(q, name, timeout=10):
    q.sock.settimeout(timeout)
    while True:
        for i, ev in enumerate(q.events):
            if ev["event"] == name:
                return q.events.pop(i)
        q.events.append(q.recv())


def test_qmp_server_and_export_lifecycle(blockd, sdir, tmp_path):
    srv, q = qmp_server(blockd, sdir, tmp_path, nodes=("disk", "other"), iothreads=("io0",))
    uri = srv.uri("disk")
    assert q.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": srv.sock}}) == {}
    assert q.error("nbd-server-start", {"addr": {"type": "unix",
                                                 "data": {"path": srv.sock + "2"}}}) == \
        ("GenericError", "NBD server already running")
    assert q.cmd("query-block-exports") == []
    assert q.cmd("block-export-add", type="nbd", id="e0", node_name="disk",
                 writable=True, iothread="io0") == {}
    assert q.cmd("query-block-exports") == [
        {"type": "nbd", "id": "e0", "node-name": "disk", "shutting-down": False}]

    # Errors.
    assert q.error("block-export-add", {"type": "nbd", "id": "e1", "node-name": "nosuch"}) == \
        ("GenericError", "Cannot find device='' nor node-name='nosuch'")
    assert q.error("block-export-add", {"type": "nbd", "id": "e0", "node-name": "other"}) == \
        ("GenericError", "Block export id 'e0' is already in use")
    assert q.error("block-export-add", {"type": "nbd", "id": "e1", "node-name": "other",
                                        "name": "disk"}) == \
        ("GenericError", "NBD server already has export named 'disk'")
    assert q.error("block-export-add", {"type": "nbd", "id": "e1", "node-name": "other",
                                        "iothread": "nosuch"}) == \
        ("GenericError", 'iothread "nosuch" not found')
    assert q.error("block-export-del", {"id": "nosuch"}) == \
        ("GenericError", "Export 'nosuch' is not found")
    assert len(q.cmd("query-block-exports")) == 1

    # A second export of the other node under another name.
    assert q.execute("block-export-add", {"type": "nbd", "id": "e1", "node-name": "other",
                                          "name": "second"}) == {"return": {}}
    assert srv.assert_serving("second", 4 * MiB)

    # A connected client; the export goes away under it.
    h = nbd.NBD()
    h.connect_uri(uri)
    h.pwrite(b"hello", 4096)
    assert h.pread(5, 4096) == b"hello"
    assert q.cmd("block-export-del", id="e0", mode="hard") == {}
    ev = wait_event(q, "BLOCK_EXPORT_DELETED")
    assert ev["data"] == {"id": "e0"}
    with pytest.raises(nbd.Error):
        h.pread(5, 4096)
    del h
    assert [e["id"] for e in q.cmd("query-block-exports")] == ["e1"]
    assert run("nbdinfo", uri, check=False).returncode != 0
    # The node is free again: it can be exported anew under the same id.
    q.cmd("block-export-add", type="nbd", id="e0", node_name="disk")
    h = nbd.NBD()
    h.connect_uri(uri)
    assert h.is_read_only()
    assert h.pread(5, 4096) == b"hello"

    # nbd-server-stop ends the connections and, as in QEMU, the exports.
    assert q.cmd("nbd-server-stop") == {}
    with pytest.raises(nbd.Error):
        h.pread(5, 4096)
    del h
    assert not os.path.exists(srv.sock)
    assert q.error("nbd-server-stop") == ("GenericError", "NBD server not running")
    assert sorted(wait_event(q, "BLOCK_EXPORT_DELETED")["data"]["id"]
                  for _ in range(2)) == ["e0", "e1"]
    assert q.cmd("query-block-exports") == []
    # And it starts again (flat address form as well).
    q.cmd("nbd-server-start", addr={"type": "unix", "path": srv.sock})
    q.cmd("block-export-add", type="nbd", id="e0", node_name="disk", writable=True)
    srv.assert_serving("disk", 4 * MiB)
    assert srv.alive()


def test_qmp_block_export_del_safe_mode_with_client(blockd, sdir, tmp_path):
    srv, q = qmp_server(blockd, sdir, tmp_path)
    q.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": srv.sock}})
    q.cmd("block-export-add", type="nbd", id="e0", node_name="disk", writable=True)
    h = nbd.NBD()
    h.connect_uri(srv.uri("disk"))
    try:
        assert q.error("block-export-del", {"id": "e0"}) == \
            ("GenericError", "export 'e0' still in use")
        assert h.pread(512, 0) == bytes(512)
    finally:
        del h


def test_qmp_export_del_while_client_busy(blockd, sdir, tmp_path):
    """Deleting an export (in an iothread) while a client keeps I/O in
    flight: the deletion completes and the client is cut off."""
    srv, q = qmp_server(blockd, sdir, tmp_path, iothreads=("io0",))
    q.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": srv.sock}})
    q.cmd("block-export-add", type="nbd", id="e0", node_name="disk", writable=True,
          iothread="io0")
    h = nbd.NBD()
    h.connect_uri(srv.uri("disk"))
    started = threading.Event()
    outcome = []

    def pump(h):
        buf = nbd.Buffer.from_bytearray(bytearray(b"\x77" * 65536))
        rbuf = nbd.Buffer(65536)
        try:
            for i in range(1000000):
                h.aio_pwrite(buf, (i % 64) * 65536)
                h.aio_pread(rbuf, ((i + 7) % 64) * 65536)
                while h.aio_in_flight() >= 32:
                    h.poll(-1)
                if i == 100:
                    started.set()
        except nbd.Error as e:
            outcome.append(e)
        finally:
            started.set()
    t = threading.Thread(target=pump, args=(h,))
    t.start()
    assert started.wait(20)
    assert q.cmd("block-export-del", id="e0", mode="hard") == {}
    assert wait_event(q, "BLOCK_EXPORT_DELETED")["data"] == {"id": "e0"}
    t.join(20)
    assert not t.is_alive()
    assert outcome, "the client was not disconnected"
    del h
    assert q.cmd("query-block-exports") == []
    # The node is no longer in use.
    wait_for(lambda: "error" not in q.execute("blockdev-del", {"node-name": "disk"}),
             what="blockdev-del")




def test_qmp_export_del_with_client_not_reading(blockd, sdir, tmp_path):
    srv, q = qmp_server(blockd, sdir, tmp_path)
    q.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": srv.sock}})
    q.cmd("block-export-add", type="nbd", id="e0", node_name="disk", writable=True)
    c = RawClient.connect(srv.sock, "disk")
    for i in range(64):
        c.request(NBD_CMD_READ, 0, 1 * MiB, cookie=i)
    time.sleep(0.3)             # the server is now blocked sending replies
    q.sock.settimeout(3)
    try:
        assert q.cmd("block-export-del", id="e0", mode="hard") == {}
        assert wait_event(q, "BLOCK_EXPORT_DELETED", 3)["data"] == {"id": "e0"}
        assert c.at_eof(3)
    finally:
        c.close()


def test_qmp_block_export_add_errors(blockd, sdir, tmp_path):
    """The same mistakes, the same messages as qemu-storage-daemon."""
    srv, q = qmp_server(blockd, sdir, tmp_path)
    ro = sparse_image(tmp_path / "ro.raw", MiB)
    q.cmd("blockdev-add", driver="file", node_name="f-ro", filename=ro, read_only=True)
    q.cmd("blockdev-add", driver="raw", node_name="ro", file="f-ro", read_only=True)
    q.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": srv.sock}})
    long_name, long_desc = "n" * 4097, "d" * 4097
    cases = [
        ({"id": "e1", "node-name": "nosuch"}, "Cannot find device='' nor node-name='nosuch'"),
        ({"id": "0bad", "node-name": "disk"}, "Invalid block export id"),
        ({"id": "", "node-name": "disk"}, "Invalid block export id"),
        ({"id": "a b", "node-name": "disk"}, "Invalid block export id"),
        ({"id": "e1", "node-name": "disk", "name": long_name},
         f"export name '{long_name}' too long"),
        ({"id": "e1", "node-name": "disk", "description": long_desc},
         f"description '{long_desc}' too long"),
        ({"id": "e1", "node-name": "disk", "iothread": "nope"}, 'iothread "nope" not found'),
        ({"id": "e1", "node-name": "ro", "writable": True},
         "Cannot export read-only node as writable"),
    ]
    for args, desc in cases:
        assert q.error("block-export-add", {"type": "nbd", **args}) == ("GenericError", desc)
    assert q.cmd("query-block-exports") == []
    # The longest name and description allowed go through whole.
    name, desc = "N" * 4096, "D" * 4096
    assert q.execute("block-export-add", {"type": "nbd", "id": "e1", "node-name": "ro",
                                          "name": name, "description": desc}) == \
        {"return": {}}
    [e] = nbdinfo_json(srv.uri(name))["exports"]
    assert (e["export-name"], e["description"], e["is_read_only"]) == (name, desc, True)
    [e] = nbdinfo_json(srv.uri(), "--list")["exports"]
    assert (e["export-name"], e["description"]) == (name, desc)


def test_qmp_nbd_server_start_errors(blockd, sdir, tmp_path):
    srv, q = qmp_server(blockd, sdir, tmp_path)
    assert q.error("nbd-server-stop") == ("GenericError", "NBD server not running")
    cls, desc = q.error("nbd-server-start", {"addr": {"type": "unix",
                                                      "data": {"path": "/nonexistent/x"}}})
    assert cls == "GenericError" and "/nonexistent/x" in desc
    # A failed start leaves no server behind.
    q.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": srv.sock}})
    q.cmd("block-export-add", type="nbd", id="e0", node_name="disk")
    srv.assert_serving("disk", 4 * MiB)


def test_export_churn_while_iothread_export_busy(blockd, sdir, tmp_path):
    """fio writes and verifies through an export in an iothread while the
    monitor keeps adding and deleting a second export of the same node
    (each attach and detach drains the node under the busy export)."""
    srv, q = qmp_server(blockd, sdir, tmp_path, iothreads=("io0",))
    q.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": srv.sock}})
    q.cmd("block-export-add", type="nbd", id="busy", node_name="disk", writable=True,
          iothread="io0")
    stop = threading.Event()
    churns = [0]
    errors = []

    def churn():
        try:
            while not stop.is_set():
                r = q.execute("block-export-add", {
                    "type": "nbd", "id": "e2", "node-name": "disk", "name": "second",
                    "writable": churns[0] % 2 == 0})
                assert r == {"return": {}}, r
                if churns[0] % 5 == 0:
                    srv.assert_serving("second")
                q.cmd("block-export-del", id="e2", mode="hard")
                churns[0] += 1
        except Exception as e:
            errors.append(repr(e))
    t = threading.Thread(target=churn)
    t.start()
    try:
        p = run("fio", "--name=churn", "--ioengine=nbd", f"--uri={srv.uri('disk')}",
                "--rw=randwrite", "--bs=4k", "--size=4M", "--iodepth=16", "--loops=6",
                "--verify=crc32c", "--do_verify=1", "--verify_fatal=1",
                "--verify_state_save=0",
                "--output-format=json", timeout=60, check=False)
    finally:
        stop.set()
        t.join(30)
    assert not errors, errors
    assert p.returncode == 0, p.stdout + p.stderr
    [job] = json.loads(p.stdout[p.stdout.index("{"):])["jobs"]
    assert job["error"] == 0
    assert churns[0] >= 5, churns[0]
    assert [e["id"] for e in q.cmd("query-block-exports")] == ["busy"]
    srv.assert_serving("disk", 4 * MiB)


def thread_wakeups(pid, tid):
    """How often the thread slept and woke: each served request wakes it."""
    with open(f"/proc/{pid}/task/{tid}/status") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches")


def test_export_spread_over_two_iothreads(blockd, sdir, tmp_path):
    """iothreads=[io0, io1]: connections alternate between the two
    iothreads; four of them write disjoint ranges at once, then the file
    equals what they wrote, and both iothreads did work."""
    size = 64 * MiB
    img = sparse_image(tmp_path / "spread.raw", size)
    srv = Server(blockd, sdir, [{"name": "d", "img": img, "export": False}],
                 iothreads=("io0", "io1"), qmp=True,
                 extra=["--export", "type=nbd,id=e-d,node-name=d,writable=on,"
                                    "iothreads.0=io0,iothreads.1=io1"])
    q = QMP(srv.qmp_path)
    tids = {t["id"]: t["thread-id"] for t in q.cmd("query-iothreads")}
    before = {n: thread_wakeups(srv.pid, t) for n, t in tids.items()}
    part = size // 4
    data = [os.urandom(part) for _ in range(4)]
    errors = []

    def writer(i):
        try:
            h = nbd.NBD()
            h.set_export_name("d")
            h.connect_unix(srv.sock)
            for k in range(3):                  # rewrite: more work per thread
                for off in range(0, part, 256 * 1024):
                    h.pwrite(data[i][off:off + 256 * 1024], i * part + off)
            h.flush()
            h.shutdown()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    with open(img, "rb") as f:
        assert f.read() == b"".join(data)
    after = {n: thread_wakeups(srv.pid, t) for n, t in tids.items()}
    assert all(after[n] > before[n] + 100 for n in tids), (before, after)
    cls, desc = q.error("block-export-add", {"type": "nbd", "id": "x", "node-name": "d",
                                             "name": "x", "iothread": "io0",
                                             "iothreads": ["io1"]})
    assert desc == "'iothread' and 'iothreads' are mutually exclusive"
    cls, desc = q.error("object-del", {"id": "io1"})
    assert desc == "object 'io1' is in use, can not be deleted"
    srv.assert_serving("d", size)


def free_tcp_port(family=socket.AF_INET, host="127.0.0.1"):
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("family,host,uri_host", [
    (socket.AF_INET, "127.0.0.1", "127.0.0.1"),
    (socket.AF_INET6, "::1", "[::1]"),
])
def test_tcp_export(blockd, sdir, tmp_path, family, host, uri_host):
    """nbd-server-start on TCP (IPv4 and IPv6): nbdinfo, qemu-io and
    qemu-img compare over nbd://host:port."""
    try:
        port = free_tcp_port(family, host)
    except OSError:
        pytest.fail(f"no {host} on this machine")
    size = 8 * MiB
    img = str(tmp_path / "tcp.raw")
    random_image(img, size, [(0, MiB), (5 * MiB, 64 * 1024)], seed=9)
    srv = Server(blockd, sdir, [{"name": "d", "img": img}], nbd=False,
                 extra=["--nbd-server", f"addr.type=inet,addr.host={host},addr.port={port}",
                        "--export", "type=nbd,id=e,node-name=d,writable=on"])
    uri = f"nbd://{uri_host}:{port}/d"
    info = nbdinfo_json(uri)
    assert info["exports"][0]["export-size"] == size
    qemu_io(uri, "write -P 0x5c 4096 8192", "read -P 0x5c 4096 8192")
    out = str(tmp_path / "copy.raw")
    run("qemu-img", "convert", "-f", "raw", "-O", "raw", uri, out)
    assert run("qemu-img", "compare", "-f", "raw", "-F", "raw", img, out,
               check=False).returncode == 0
    assert srv.alive()
