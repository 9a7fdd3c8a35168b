"""The qcow2 driver against qemu-img/qemu-io, both ways: images made by
QEMU read through blockd (NBD export) byte for byte, images written by
blockd pass 'qemu-img check' and compare equal to a raw reference written
with the same operations; corrupt images are refused cleanly; crash
consistency under kill -9."""
import json
import os
import random
import shutil
import signal
import subprocess
import time

import nbd
import pytest

from nbdutil import MiB, run, short_dir
from qmp import QMP, QMPError

KiB = 1024


@pytest.fixture
def sdir():
    d = short_dir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


def qimg(*args, check=True):
    return run("qemu-img", *args, check=check, timeout=120)


def qio(img, *cmds, fmt="qcow2"):
    args = ["qemu-io", "-f", fmt, img]
    for c in cmds:
        args += ["-c", c]
    p = run(*args)
    assert "failed" not in p.stdout + p.stderr, p.stdout + p.stderr
    return p


def check_clean(img, leaks_ok=False):
    """qemu-img check: no corruption (and no leaks unless allowed)."""
    p = qimg("check", "--output=json", img, check=False)
    info = json.loads(p.stdout) if p.stdout.strip().startswith("{") else {}
    assert info.get("corruptions", 0) == 0 and not info.get("check-errors"), p.stdout + p.stderr
    if not leaks_ok:
        assert p.returncode == 0 and info.get("leaks", 0) == 0, p.stdout + p.stderr
    return info


def raw_of(img, tmp, fmt="qcow2"):
    """The guest view of @img as QEMU sees it."""
    out = str(tmp) + "/ref-" + os.path.basename(img) + ".raw"
    qimg("convert", "-U", "-f", fmt, "-O", "raw", img, out)
    with open(out, "rb") as f:
        return f.read()


def qcow2_opts(img, extra=None, name="disk"):
    o = {"driver": "qcow2", "node-name": name,
         "file": {"driver": "file", "filename": str(img)}}
    o.update(extra or {})
    return json.dumps(o)


class Blockd:
    """blockd with QMP and an NBD server; nodes given as --blockdev JSON
    are exported writable under their node names."""

    def __init__(self, blockd, sdir, nodes=(), export=True, extra=()):
        self.sock = os.path.join(sdir, "nbd.sock")
        self.qmp_path = os.path.join(sdir, "qmp.sock")
        args = ["--chardev", f"socket,id=m,path={self.qmp_path},server=on,wait=off",
                "--monitor", "chardev=m",
                "--nbd-server", f"addr.type=unix,addr.path={self.sock}"]
        for n in nodes:
            args += ["--blockdev", n]
            if export:
                o = json.loads(n)
                w = "off" if o.get("read-only") else "on"
                args += ["--export", f"type=nbd,id=e-{o['node-name']},"
                         f"node-name={o['node-name']},writable={w}"]
        args += list(extra)
        self.daemon = blockd(*args)
        self.daemon.wait_ready()
        self.qmp = QMP(self.qmp_path)

    def uri(self, name="disk"):
        return f"nbd+unix:///{name}?socket={self.sock}"

    def connect(self, name="disk"):
        h = nbd.NBD()
        h.connect_uri(self.uri(name))
        return h

    def read_all(self, name="disk"):
        h = self.connect(name)
        size = h.get_size()
        data = bytearray()
        for off in range(0, size, 8 * MiB):
            data += h.pread(min(8 * MiB, size - off), off)
        h.shutdown()
        return bytes(data)

    def stop(self):
        self.qmp.close()
        assert self.daemon.stop() == 0, self.daemon.stderr_path.read_text()
        err = self.daemon.stderr_path.read_text()
        assert "Sanitizer" not in err and "runtime error" not in err, err


def random_ops(img_size, n, seed, cluster, allow=("write", "zero", "discard")):
    """A reproducible mix of operations: (op, offset, length, seed)."""
    rnd = random.Random(seed)
    ops = []
    for i in range(n):
        op = rnd.choice(allow)
        # Partial clusters, whole clusters and ranges spanning L2 tables.
        length = rnd.choice([512, 4096, cluster, 3 * cluster + 1536, 300 * KiB])
        length = min(length, img_size)
        off = rnd.randrange(0, img_size - length + 1)
        if op != "write":
            off -= off % 512
            length -= length % 512 or 0
            length = max(length, 512)
        ops.append((op, off, length, rnd.randrange(1 << 30)))
    return ops


def apply_ops(h, ref, ops, cluster=65536, discard_zeroes=True):
    """Apply @ops through libnbd handle @h and to bytearray @ref.  Discard
    is advisory: qcow2 (like QEMU's) drops only whole clusters, which then
    read as zeroes."""
    for op, off, length, s in ops:
        if op == "write":
            data = random.Random(s).randbytes(length)
            h.pwrite(data, off)
            ref[off:off + length] = data
        elif op == "zero":
            h.zero(length, off)
            ref[off:off + length] = bytes(length)
        else:
            h.trim(length, off)
            start = (off + cluster - 1) // cluster * cluster
            end = (off + length) // cluster * cluster
            if off + length == len(ref):
                end = off + length
            if end > start and discard_zeroes:
                ref[start:end] = bytes(end - start)


def read_handle(h, size):
    return b"".join(h.pread(min(8 * MiB, size - o), o) for o in range(0, size, 8 * MiB))


# ---- Reading images made by QEMU ---------------------------------------------------------


def fill_with_qemu_io(img, size, seed, cluster):
    rnd = random.Random(seed)
    cmds = []
    for _ in range(12):
        length = rnd.choice([512, 4096, cluster, 2 * cluster + 512])
        off = rnd.randrange(0, size - length) // 512 * 512
        cmds.append(f"write -P {rnd.randrange(1, 255)} {off} {length}")
    for _ in range(3):
        off = rnd.randrange(0, size - 2 * cluster) // cluster * cluster
        cmds.append(f"write -z {off} {cluster}")
    qio(img, *cmds)


@pytest.mark.parametrize("cluster_bits", range(9, 22))
def test_read_every_cluster_size(blockd, sdir, tmp_path, cluster_bits):
    cluster = 1 << cluster_bits
    size = max(8 * MiB, 8 * cluster)
    img = str(tmp_path / "a.qcow2")
    qimg("create", "-f", "qcow2", "-o", f"cluster_size={cluster}", img, str(size))
    fill_with_qemu_io(img, size, cluster_bits, cluster)
    ref = raw_of(img, tmp_path)
    d = Blockd(blockd, sdir, [qcow2_opts(img, {"read-only": True})])
    assert d.read_all() == ref
    d.stop()


@pytest.mark.parametrize("opts", ["compat=0.10", "refcount_bits=1", "refcount_bits=2",
                                  "refcount_bits=4", "refcount_bits=8", "refcount_bits=32",
                                  "refcount_bits=64", "extended_l2=on",
                                  "extended_l2=on,cluster_size=2M"])
def test_read_variants(blockd, sdir, tmp_path, opts):
    img = str(tmp_path / "a.qcow2")
    qimg("create", "-f", "qcow2", "-o", opts, img, str(16 * MiB))
    fill_with_qemu_io(img, 16 * MiB, len(opts), 65536)
    ref = raw_of(img, tmp_path)
    d = Blockd(blockd, sdir, [qcow2_opts(img, {"read-only": True})])
    assert d.read_all() == ref
    d.stop()


@pytest.mark.parametrize("ctype", ["zlib", "zstd"])
def test_read_compressed(blockd, sdir, tmp_path, ctype):
    src = str(tmp_path / "src.raw")
    rnd = random.Random(7)
    with open(src, "wb") as f:
        for i in range(64):
            # Compressible and incompressible clusters, and holes.
            kind = i % 4
            if kind == 0:
                f.write(bytes([i]) * 65536)
            elif kind == 1:
                f.write(rnd.randbytes(65536))
            elif kind == 2:
                f.write((b"blockd qcow2 %d " % i) * (65536 // 16) + bytes(65536 % 16))
            else:
                f.write(bytes(65536))
        f.write(b"tail" * 1000)
    img = str(tmp_path / "c.qcow2")
    for cs in ("512", "4k", "64k", "2M"):
        qimg("convert", "-c", "-O", "qcow2", "-o",
             f"cluster_size={cs},compression_type={ctype}", src, img)
        d = Blockd(blockd, sdir, [qcow2_opts(img, {"read-only": True})])
        with open(src, "rb") as f:
            expect = f.read()
        got = d.read_all()
        assert got[:len(expect)] == expect and not any(got[len(expect):]), cs
        d.stop()


def test_backing_chain_depth_3(blockd, sdir, tmp_path):
    base = str(tmp_path / "base.qcow2")
    mid = str(tmp_path / "mid.qcow2")
    top = str(tmp_path / "top.qcow2")
    qimg("create", "-f", "qcow2", "-o", "cluster_size=4k", base, str(8 * MiB))
    qio(base, "write -P 1 0 8M")
    qimg("create", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "-o",
         "cluster_size=64k", mid)
    qio(mid, "write -P 2 1M 1M", "write -z 3M 64k", "write -P 3 100k 3k")
    # A raw middle layer is allowed too; the top one is smaller than the base.
    qimg("create", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", "-o",
         "cluster_size=1M", top, str(10 * MiB))
    qio(top, "write -P 4 2M 512k", "write -P 5 9M 512", "write -z 1M 1M")
    ref = raw_of(top, tmp_path)
    d = Blockd(blockd, sdir, [qcow2_opts(top, {"read-only": True})])
    assert d.read_all() == ref
    # Block status: allocated in top vs data from below.
    out = run("nbdinfo", "--map", "--json", d.uri()).stdout
    extents = json.loads(out)
    assert sum(e["length"] for e in extents) == 10 * MiB
    kinds = {e["offset"]: e["description"] for e in extents}
    assert kinds[0] == "data"
    assert any(e["description"] == "hole,zero" and e["offset"] >= 8 * MiB for e in extents)
    d.stop()


def test_backing_null_and_explicit(blockd, sdir, tmp_path):
    base = str(tmp_path / "base.raw")
    with open(base, "wb") as f:
        f.write(b"\x11" * MiB)
    top = str(tmp_path / "top.qcow2")
    qimg("create", "-f", "qcow2", "-b", base, "-F", "raw", top, str(MiB))
    qio(top, "write -P 0x22 4096 4096")
    d = Blockd(blockd, sdir, [qcow2_opts(top, {"read-only": True}),
                              qcow2_opts(top, {"read-only": True, "backing": None},
                                         name="nob"),
                              json.dumps({"driver": "file", "node-name": "other",
                                          "filename": base, "read-only": True}),
                              qcow2_opts(top, {"read-only": True, "backing": "other"},
                                         name="expl")], export=False)
    for name in ("disk", "nob", "expl"):
        d.qmp.cmd("block-export-add", type="nbd", id=name, **{"node-name": name})
    a = d.read_all("disk")
    assert a[:4096] == b"\x11" * 4096 and a[4096:8192] == b"\x22" * 4096
    b = d.read_all("nob")
    # QEMU copied the rest of the first cluster from the backing file.
    assert b[:65536] == a[:65536] and b[65536:] == bytes(MiB - 65536)
    assert a[65536:] == b"\x11" * (MiB - 65536)
    assert d.read_all("expl") == a
    d.stop()


def test_snapshots_tolerated(blockd, sdir, tmp_path):
    img = str(tmp_path / "s.qcow2")
    qimg("create", "-f", "qcow2", img, str(8 * MiB))
    qio(img, "write -P 1 0 2M")
    qimg("snapshot", "-c", "snap1", img)
    qio(img, "write -P 2 1M 64k")
    qimg("snapshot", "-c", "snap2", img)
    snap1 = str(tmp_path / "snap1.raw")
    qimg("convert", "-l", "snap1", "-O", "raw", img, snap1)
    ref = bytearray(raw_of(img, tmp_path))
    d = Blockd(blockd, sdir, [qcow2_opts(img, {"discard": "unmap"})])
    assert d.read_all() == ref
    # Writing the active layer copies shared clusters and L2 tables.
    h = d.connect()
    apply_ops(h, ref, random_ops(8 * MiB, 40, 3, 65536))
    h.flush()
    h.shutdown()
    d.stop()
    check_clean(img)
    assert raw_of(img, tmp_path) == ref
    snap1_now = str(tmp_path / "snap1b.raw")
    qimg("convert", "-l", "snap1", "-O", "raw", img, snap1_now)
    assert open(snap1, "rb").read() == open(snap1_now, "rb").read()


# ---- Writing ---------------------------------------------------------------------------


@pytest.mark.parametrize("create_opts,backing", [
    ("cluster_size=64k", False),
    ("cluster_size=512", False),
    ("cluster_size=2M", False),
    ("compat=0.10,cluster_size=4k", False),
    ("refcount_bits=1,cluster_size=1k", False),
    ("refcount_bits=64", False),
    # A refcount block covers only 64 clusters: allocations stay shorter.
    ("refcount_bits=64,cluster_size=512", False),
    ("extended_l2=on", False),
    ("cluster_size=64k", True),
    ("compat=0.10", True),
    ("extended_l2=on,cluster_size=32k", True),
])
def test_write_and_compare(blockd, sdir, tmp_path, create_opts, backing):
    size = 24 * MiB + 1536
    img = str(tmp_path / "w.qcow2")
    ref = bytearray(size)
    if backing:
        base = str(tmp_path / "base.qcow2")
        qimg("create", "-f", "qcow2", base, str(size))
        qio(base, "write -P 0x5a 0 24M", "write -P 0x6b 24M 1536")
        ref[:] = raw_of(base, tmp_path)
        qimg("create", "-f", "qcow2", "-b", base, "-F", "qcow2", "-o", create_opts, img)
    else:
        qimg("create", "-f", "qcow2", "-o", create_opts, img, str(size))
    d = Blockd(blockd, sdir, [qcow2_opts(img, {"discard": "unmap"})])
    h = d.connect()
    cluster = int(json.loads(qimg("info", "-U", "--output=json", img).stdout)["cluster-size"])
    ops = random_ops(size, 150, hash(create_opts) & 0xffff, cluster)
    # Version 2 cannot make clusters read as zeroes over a backing file.
    apply_ops(h, ref, ops, cluster, discard_zeroes=not (backing and "0.10" in create_opts))
    h.flush()
    assert read_handle(h, size) == ref
    h.shutdown()
    d.stop()
    check_clean(img)
    out = str(tmp_path / "ref.raw")
    with open(out, "wb") as f:
        f.write(ref)
    qimg("compare", "-f", "qcow2", "-F", "raw", img, out)


def test_write_over_qemu_image(blockd, sdir, tmp_path):
    """Writes into an image QEMU filled with compressed clusters, zero
    clusters (with and without storage) and partly allocated subclusters
    over a backing file: every kind gets copied-on-write or replaced."""
    size = 8 * MiB
    base = str(tmp_path / "base.qcow2")
    qimg("create", "-f", "qcow2", base, str(size))
    qio(base, "write -P 0x31 0 8M")
    for opts, prep in [
            ("cluster_size=64k", ["write -c -P 0x41 0 1M", "write -c -P 0x42 2M 64k",
                                  "write -P 0x43 3M 1M", "write -z 3M 256k",
                                  "write -z -u 3584k 128k"]),
            ("extended_l2=on,cluster_size=64k", ["write -P 0x51 4k 4k", "write -P 0x52 1M 2k",
                                                 "write -z 2M 6k", "write -P 0x53 3M 64k",
                                                 "write -c -P 0x54 5M 128k"])]:
        img = str(tmp_path / "q.qcow2")
        qimg("create", "-f", "qcow2", "-b", base, "-F", "qcow2", "-o", opts, img)
        qio(img, *prep)
        ref = bytearray(raw_of(img, tmp_path))
        d = Blockd(blockd, sdir, [qcow2_opts(img, {"discard": "unmap"})])
        h = d.connect()
        assert read_handle(h, size) == ref
        apply_ops(h, ref, random_ops(size, 120, len(opts), 65536), 65536)
        # Partial writes into every prepared region.
        for off in (0, 1 * MiB, 2 * MiB, 3 * MiB, 3584 * KiB, 5 * MiB):
            data = random.Random(off).randbytes(3000)
            h.pwrite(data, off + 1000)
            ref[off + 1000:off + 4000] = data
        h.flush()
        assert read_handle(h, size) == ref
        h.shutdown()
        d.stop()
        check_clean(img)
        assert raw_of(img, tmp_path) == ref, opts


def test_iothread_and_cache_options(blockd, sdir, tmp_path):
    """The node served from an iothread, with a tiny L2 cache that is
    cleaned every second while requests run."""
    size = 32 * MiB
    img = str(tmp_path / "i.qcow2")
    qimg("create", "-f", "qcow2", "-o", "cluster_size=4k", img, str(size))
    d = Blockd(blockd, sdir, [qcow2_opts(img, {"l2-cache-size": 16384,
                                               "cache-clean-interval": 1})],
               export=False, extra=["--object", "iothread,id=io0"])
    d.qmp.cmd("block-export-add", type="nbd", id="e", iothread="io0", writable=True,
              **{"node-name": "disk"})
    h = d.connect()
    ref = bytearray(size)
    apply_ops(h, ref, random_ops(size, 100, 11, 4096, allow=("write", "zero")), 4096)
    time.sleep(1.2)
    apply_ops(h, ref, random_ops(size, 50, 12, 4096, allow=("write",)), 4096)
    h.flush()
    assert read_handle(h, size) == ref
    h.shutdown()
    d.stop()
    check_clean(img)
    assert raw_of(img, tmp_path) == ref


def test_freed_clusters_reused(blockd, sdir, tmp_path):
    """Clusters freed by discard are reused after the next flush, and a
    partial write into a reused cluster fills the rest with zeroes, not
    with what the cluster held before."""
    img = str(tmp_path / "r.qcow2")
    qimg("create", "-f", "qcow2", img, str(64 * MiB))
    d = Blockd(blockd, sdir, [qcow2_opts(img, {"discard": "unmap"})])
    h = d.connect()
    h.pwrite(b"\xee" * (4 * MiB), 0)
    h.flush()
    end = os.path.getsize(img)
    h.trim(4 * MiB, 0)
    h.flush()                        # the frees become effective here
    for i in range(64):
        h.pwrite(b"\x5a" * 4096, 32 * MiB + i * 65536 + 8192)
    h.flush()
    got = h.pread(4 * MiB, 32 * MiB)
    assert got == (bytes(8192) + b"\x5a" * 4096 + bytes(65536 - 12288)) * 64
    assert h.pread(4 * MiB, 0) == bytes(4 * MiB)
    h.shutdown()
    d.stop()
    check_clean(img)
    info = json.loads(qimg("check", "--output=json", img).stdout)
    assert info["image-end-offset"] <= end, "freed clusters were not reused"


def test_many_requests_in_flight(blockd, sdir, tmp_path):
    """Concurrent overlapping allocating writes (libnbd AIO, 64 in flight)."""
    size = 64 * MiB
    img = str(tmp_path / "p.qcow2")
    qimg("create", "-f", "qcow2", "-o", "cluster_size=64k", img, str(size))
    d = Blockd(blockd, sdir, [qcow2_opts(img, {"l2-cache-size": 65536 * 4})])
    h = d.connect()
    rnd = random.Random(5)
    ref = bytearray(size)
    # Non-overlapping 4k writes, many into the same cluster, in flight together.
    slots = rnd.sample(range(size // 4096), 3000)
    bufs = []
    for i, slot in enumerate(slots):
        data = bytes([i % 251 + 1]) * 4096
        ref[slot * 4096:(slot + 1) * 4096] = data
        b = nbd.Buffer.from_bytearray(bytearray(data))
        bufs.append(b)
        h.aio_pwrite(b, slot * 4096)
        while h.aio_in_flight() >= 64:
            h.poll(-1)
    while h.aio_in_flight() > 0:
        h.poll(-1)
    h.flush()
    assert read_handle(h, size) == ref
    h.shutdown()
    d.stop()
    check_clean(img)


def test_write_zeroes_and_status(blockd, sdir, tmp_path):
    img = str(tmp_path / "z.qcow2")
    qimg("create", "-f", "qcow2", img, str(4 * MiB))
    d = Blockd(blockd, sdir, [qcow2_opts(img, {"discard": "unmap"})])
    h = d.connect()
    h.pwrite(b"\x77" * MiB, 0)
    h.zero(512 * KiB, 256 * KiB)             # zero clusters, storage freed
    h.zero(64 * KiB, MiB, nbd.CMD_FLAG_NO_HOLE)
    h.trim(64 * KiB, 2 * MiB)
    h.flush()
    extents = json.loads(run("nbdinfo", "--map", "--json", d.uri()).stdout)
    got = [(e["offset"], e["length"], e["description"]) for e in extents]
    assert got[0] == (0, 256 * KiB, "data")
    assert got[1] == (256 * KiB, 512 * KiB, "hole,zero")
    assert got[2] == (768 * KiB, 256 * KiB, "data")
    h.shutdown()
    d.stop()
    check_clean(img)
    info = json.loads(qimg("map", "--output=json", img).stdout)
    zero = [m for m in info if m["zero"] and m["start"] < MiB]
    assert zero and zero[0]["start"] == 256 * KiB


# ---- Corrupt images -----------------------------------------------------------------------


def corrupt_image(tmp_path, name, patches, size=4 * MiB, truncate=None):
    img = str(tmp_path / f"{name}.qcow2")
    qimg("create", "-f", "qcow2", "-o", "cluster_size=64k", img, str(size))
    qio(img, "write -P 9 0 128k")
    with open(img, "r+b") as f:
        for off, data in patches:
            f.seek(off)
            f.write(data)
        if truncate is not None:
            f.truncate(truncate)
    return img


def be64(v):
    return v.to_bytes(8, "big")


def be32(v):
    return v.to_bytes(4, "big")


def be16(v):
    return v.to_bytes(2, "big")


def l2_offset(img):
    with open(img, "rb") as f:
        f.seek(40)
        l1 = int.from_bytes(f.read(8), "big")
        f.seek(l1)
        return int.from_bytes(f.read(8), "big") & 0x00fffffffffffe00


CORRUPT_OPEN = [
    ("truncated", [], 50, "not in qcow2 format"),
    ("truncated_v3", [], 80, "truncated"),
    ("bad_magic", [(0, b"QFI\x00")], None, "not in qcow2 format"),
    ("version", [(4, be32(4))], None, "Unsupported qcow2 version 4"),
    ("cluster_bits", [(20, be32(30))], None, "Unsupported cluster size"),
    ("l1_past_end", [(40, be64(1 << 40))], None, "beyond the end"),
    ("l1_unaligned", [(40, be64(0x30000 + 8))], None, "Invalid L1 table offset"),
    ("l1_too_small", [(36, be32(0))], None, "L1 table is too small"),
    ("l1_huge", [(36, be32(0x7fffffff))], None, "too large"),
    ("reftable_header", [(48, be64(0))], None, "overlaps the image header"),
    ("reftable_unaligned", [(48, be64(0x10001))], None, "Invalid reference count table"),
    ("reftable_l1", [(48, be64(0x30000))], None, "overlaps the L1 table"),
    ("reftable_past_end", [(48, be64(1 << 44))], None, "beyond the end"),
    ("unknown_incompat", [(72, be64(1 << 40))], None, "Unsupported qcow2 feature"),
    ("data_file", [(72, be64(1 << 2))], None, "external data file"),
    ("header_len", [(100, be32(1 << 20))], None, "exceeds cluster size"),
    ("refcount_order", [(96, be32(7))], None, "may not exceed 64 bits"),
    ("crypt", [(32, be32(2))], None, "encrypted"),
    ("backing_name", [(8, be64(65000)), (16, be32(5000))], None, "backing file name"),
    ("l1_entry_unaligned", [(0x30000, be64((1 << 63) | 0x50000 + 512))], None,
     "not aligned"),
    ("l1_entry_header", [(0x30000, be64((1 << 63) | 0))], None, None),
    ("l1_entry_self", [(0x30000, be64((1 << 63) | 0x30000))], None, "overlaps"),
    ("l1_entry_past_end", [(0x30000, be64((1 << 63) | (1 << 40)))], None, "beyond the end"),
    ("reftable_entry_unaligned", [(0x10000, be64(0x20000 + 4096))], None, "refcount"),
    ("reftable_entry_header", [(0x10000, be64(0x200))], None, "refcount"),
    ("l1_entry_refblock", [(0x30000, be64((1 << 63) | 0x20000))], None, "overlaps"),
    ("reftable_entry_l1", [(0x10000, be64(0x30000))], None, "overlaps"),
]


def blockdev_add_error(d, img, **kw):
    try:
        d.qmp.cmd("blockdev-add", **json.loads(qcow2_opts(img, kw)))
    except QMPError as e:
        return e.desc
    return None


@pytest.mark.parametrize("name,patches,truncate,msg", CORRUPT_OPEN,
                         ids=[c[0] for c in CORRUPT_OPEN])
def test_corrupt_refused(blockd, sdir, tmp_path, name, patches, truncate, msg):
    img = corrupt_image(tmp_path, name, patches, truncate=truncate)
    before = open(img, "rb").read()
    d = Blockd(blockd, sdir)
    err = blockdev_add_error(d, img)
    if name == "l1_entry_header":
        # An L1 entry of 0 with only the COPIED flag just means "no L2 table".
        assert err is None
        d.qmp.cmd("blockdev-del", **{"node-name": "disk"})
    else:
        assert err is not None and msg.lower() in err.lower(), err
    # Read-only open fails the same way and nothing was written.
    err_ro = blockdev_add_error(d, img, **{"read-only": True})
    assert (err_ro is None) == (err is None)
    d.stop()
    assert open(img, "rb").read() == before


def test_corrupt_l2_entries_give_eio(blockd, sdir, tmp_path):
    """Bad L2 entries fail the requests that touch them, with a message; the
    image is then marked corrupt and takes no more writes (nothing but the
    corrupt bit is written).  The entry past the end of the file is found
    as soon as the image opens read-write, before any request (here
    together with the unaligned one: the first found is reported)."""
    img = corrupt_image(tmp_path, "l2", [])
    l2 = l2_offset(img)
    with open(img, "r+b") as f:
        f.seek(l2 + 8 * 4)    # cluster 4: unaligned
        f.write(be64((1 << 63) | 0x50000 + 512))
        f.seek(l2 + 8 * 5)    # cluster 5: points into the header
        f.write(be64((1 << 63) | 0x200))
        f.seek(l2 + 8 * 6)    # cluster 6: points to its own L2 table (a loop)
        f.write(be64((1 << 63) | l2))
        f.seek(l2 + 8 * 7)    # cluster 7: past the end of the file
        f.write(be64((1 << 63) | (1 << 40)))
        f.seek(l2 + 8 * 8)    # cluster 8: compressed, garbage
        f.write(be64((1 << 62) | 0x20000 + 3))
        f.seek(l2 + 8 * 9)    # cluster 9: reserved bits
        f.write(be64((1 << 63) | (1 << 57) | 0x60000))
    before = open(img, "rb").read()
    d = Blockd(blockd, sdir)
    d.qmp.cmd("blockdev-add", **json.loads(qcow2_opts(img)))
    events = [e["data"] for e in d.qmp.events if e["event"] == "BLOCK_IMAGE_CORRUPTED"]
    assert len(events) == 1 and events[0]["msg"] == "unaligned L2 entry 0x8000000000050200"
    d.qmp.cmd("block-export-add", type="nbd", id="e", writable=True, **{"node-name": "disk"})
    h = d.connect()
    assert h.pread(65536, 0)[:10] == b"\x09" * 10
    for c in (4, 5, 7, 8, 9):
        with pytest.raises(nbd.Error):
            h.pread(4096, c * 65536)
        # (A write over the compressed cluster 8 would allocate a new
        # cluster first and fail on the copy-on-write read.)
        if c != 8:
            with pytest.raises(nbd.Error):
                h.pwrite(b"x" * 4096, c * 65536 + 512)
    # The loop reads the L2 table itself as data, harmlessly; writing it is
    # refused because the cluster is metadata.
    h.pread(4096, 6 * 65536)
    with pytest.raises(nbd.Error):
        h.pwrite(b"y" * 4096, 6 * 65536)
    h.shutdown()
    # Each report is also a BLOCK_IMAGE_CORRUPTED event, as QEMU sends it.
    d.qmp.cmd("query-version")
    events = [e["data"] for e in d.qmp.events if e["event"] == "BLOCK_IMAGE_CORRUPTED"]
    assert len(events) == 1 and all(e["node-name"] == "disk" and e["device"] == "" and
                                    e["fatal"] is True and e["msg"] for e in events), events
    d.stop()
    assert "is corrupt" in d.daemon.stderr_path.read_text()
    same_but_corrupt_bit(img, before)


OFFSET_MASK = 0x00fffffffffffe00
COPIED = 1 << 63


def same_but_corrupt_bit(img, before):
    """@img is @before with the header's corrupt bit set, as the first write
    refused after corruption leaves it (nothing else written)."""
    after = open(img, "rb").read()
    marked = bytearray(before)
    marked[79] |= 2
    assert after == bytes(marked)


def two_table_image(tmp_path, name):
    """A 1 GiB image (64 KiB clusters) with two L2 tables: guest clusters
    0-1 hold 0x09, guest offset 512 MiB holds 0x07.  Returns the image and
    its layout: host offsets of both L2 tables and of the first refcount
    block."""
    img = str(tmp_path / f"{name}.qcow2")
    qimg("create", "-f", "qcow2", "-o", "cluster_size=64k", img, "1G")
    qio(img, "write -P 9 0 128k", "write -P 7 512M 64k")
    with open(img, "rb") as f:
        data = f.read()
    l1 = int.from_bytes(data[40:48], "big")
    rt = int.from_bytes(data[48:56], "big")
    lay = {"l2a": int.from_bytes(data[l1:l1 + 8], "big") & OFFSET_MASK,
           "l2b": int.from_bytes(data[l1 + 8:l1 + 16], "big") & OFFSET_MASK,
           "rb": int.from_bytes(data[rt:rt + 8], "big")}
    assert lay["l2a"] and lay["l2b"] and lay["rb"] and len(set(lay.values())) == 3
    return img, lay


def patch(img, offset, data):
    with open(img, "r+b") as f:
        f.seek(offset)
        f.write(data)


def cluster_bytes(img, host):
    with open(img, "rb") as f:
        f.seek(host)
        return f.read(64 * KiB)


def test_corrupt_data_cluster_on_other_l2_table(blockd, sdir, tmp_path):
    """An L2 entry whose data cluster is another (active) L2 table: reading
    it is harmless, writing it fails with an error and a report, nothing is
    written, and the daemon goes on serving the image's reads (writes are
    refused from then on: the image is corrupt)."""
    img, lay = two_table_image(tmp_path, "onl2")
    patch(img, lay["l2a"] + 8 * 3, be64(COPIED | lay["l2b"]))
    before = open(img, "rb").read()
    d = Blockd(blockd, sdir, [qcow2_opts(img)])
    h = d.connect()
    assert h.pread(4096, 3 * 64 * KiB) == before[lay["l2b"]:lay["l2b"] + 4096]
    for off, n in ((3 * 64 * KiB, 4096), (3 * 64 * KiB + 512, 512), (4 * 64 * KiB - 4096, 8192)):
        with pytest.raises(nbd.Error):
            h.pwrite(b"x" * n, off)
    h.flush()
    assert cluster_bytes(img, lay["l2b"]) == before[lay["l2b"]:lay["l2b"] + 64 * KiB]
    # Still serving reads: the other table's data; an in-place write is refused.
    assert h.pread(64 * KiB, 512 * MiB) == b"\x07" * 64 * KiB
    with pytest.raises(nbd.Error):
        h.pwrite(b"\x33" * 4096, 0)
    assert h.pread(8192, 0) == b"\x09" * 8192
    h.shutdown()
    d.stop()
    assert "overlaps metadata" in d.daemon.stderr_path.read_text()
    same_but_corrupt_bit(img, before)


@pytest.mark.parametrize("copied", [True, False], ids=["copied", "no_copied"])
def test_corrupt_data_cluster_on_refcount_block(blockd, sdir, tmp_path, copied):
    """The same with a refcount block as the data cluster; without the
    COPIED flag the driver would otherwise fix the flag (refcount 1) and
    write the L2 table: nothing may be written either way."""
    img, lay = two_table_image(tmp_path, "onrb")
    patch(img, lay["l2a"] + 8 * 3, be64((COPIED if copied else 0) | lay["rb"]))
    before = open(img, "rb").read()
    d = Blockd(blockd, sdir, [qcow2_opts(img)])
    h = d.connect()
    assert h.pread(512, 3 * 64 * KiB) == before[lay["rb"]:lay["rb"] + 512]
    with pytest.raises(nbd.Error):
        h.pwrite(b"\xff" * 4096, 3 * 64 * KiB)
    h.flush()
    assert h.pread(128 * KiB, 0) == b"\x09" * 128 * KiB
    h.shutdown()
    assert d.daemon.proc.poll() is None
    d.stop()
    assert "is corrupt" in d.daemon.stderr_path.read_text()
    assert open(img, "rb").read() == before


def test_corrupt_discard_of_cluster_on_l2_table(blockd, sdir, tmp_path):
    """Discarding a guest cluster whose entry points at another L2 table
    does not free the table (discard=unmap would punch it, the allocator
    would hand it out): the image is marked corrupt instead, later writes
    are refused, and the table stays intact."""
    img, lay = two_table_image(tmp_path, "disc")
    patch(img, lay["l2a"] + 8 * 3, be64(COPIED | lay["l2b"]))
    l2b = cluster_bytes(img, lay["l2b"])
    before = open(img, "rb").read()
    d = Blockd(blockd, sdir, [qcow2_opts(img, {"discard": "unmap"})])
    h = d.connect()
    try:
        h.trim(64 * KiB, 3 * 64 * KiB)
    except nbd.Error:
        pass
    for c in range(4, 12):
        with pytest.raises(nbd.Error):
            h.pwrite(bytes([c]) * 64 * KiB, c * 64 * KiB)
    assert h.pread(64 * KiB, 512 * MiB) == b"\x07" * 64 * KiB
    h.shutdown()
    d.stop()
    assert "points at metadata" in d.daemon.stderr_path.read_text()
    assert cluster_bytes(img, lay["l2b"]) == l2b
    # The discard dropped the bad entry itself (that makes nothing worse).
    expect = bytearray(before)
    expect[lay["l2a"] + 8 * 3:lay["l2a"] + 8 * 4] = bytes(8)
    same_but_corrupt_bit(img, bytes(expect))


@pytest.mark.parametrize("table", ["l2a", "l2b", "rb"])
def test_corrupt_refcount_zero_for_table(blockd, sdir, tmp_path, table):
    """A refcount of 0 for an L2 table or a refcount block makes it look
    free: allocating writes must not land on it.  They fail cleanly, the
    image is marked corrupt (no more writes), the table is unchanged, and
    reads still work."""
    img, lay = two_table_image(tmp_path, "rc0")
    # 16-bit refcounts; the first refcount block covers the whole file.
    patch(img, lay["rb"] + 2 * (lay[table] // (64 * KiB)), be16(0))
    before = open(img, "rb").read()
    d = Blockd(blockd, sdir, [qcow2_opts(img)])
    h = d.connect()
    with pytest.raises(nbd.Error):
        h.pwrite(b"\x44" * 4096, 10 * 64 * KiB)
    with pytest.raises(nbd.Error):
        h.pwrite(b"\x45" * 4096, 600 * MiB)
    assert h.pread(128 * KiB, 0) == b"\x09" * 128 * KiB
    assert h.pread(64 * KiB, 512 * MiB) == b"\x07" * 64 * KiB
    with pytest.raises(nbd.Error):
        h.pwrite(b"\x66" * 4096, 64 * KiB)
    h.shutdown()
    d.stop()
    # Found as the image opened, before the first allocation could take it.
    assert "is in use but its refcount is 0" in d.daemon.stderr_path.read_text()
    same_but_corrupt_bit(img, before)


def test_corrupt_bit(blockd, sdir, tmp_path):
    """The corrupt bit: read-only opens only, nothing written."""
    bad = corrupt_image(tmp_path, "bad", [(72, be64(2))])
    before = open(bad, "rb").read()
    d = Blockd(blockd, sdir)
    assert "corrupt" in blockdev_add_error(d, bad)
    d.qmp.cmd("blockdev-add", **json.loads(qcow2_opts(bad, {"read-only": True})))
    d.qmp.cmd("block-export-add", type="nbd", id="e", **{"node-name": "disk"})
    assert d.read_all()[:128 * KiB] == b"\x09" * 128 * KiB
    d.stop()
    assert open(bad, "rb").read() == before


def test_dirty_image_repaired(blockd, sdir, tmp_path):
    """QEMU killed while using lazy refcounts leaves a dirty image whose
    refcounts are behind.  A read-only open leaves it alone; a read-write
    open rebuilds the refcounts first, and the image is clean."""
    img = str(tmp_path / "lazy.qcow2")
    qimg("create", "-f", "qcow2", "-o", "lazy_refcounts=on,cluster_size=4k", img, str(8 * MiB))
    qio(img, "write -P 1 0 256k")
    qimg("snapshot", "-c", "s1", img)
    p = run("qemu-io", "-f", "qcow2", img, "-c", "write -P 2 64k 1M", "-c",
            "write -c -P 3 2M 64k", "-c", "write -P 4 4M 100k", "-c", "sigraise 9",
            check=False)
    assert p.returncode != 0
    bad = qimg("check", "--output=json", img, check=False)
    assert bad.returncode != 0, "the image should need repair"
    ref = raw_of(img, tmp_path)
    before = open(img, "rb").read()
    d = Blockd(blockd, sdir)
    d.qmp.cmd("blockdev-add", **json.loads(qcow2_opts(img, {"read-only": True}, name="ro")))
    d.qmp.cmd("blockdev-del", **{"node-name": "ro"})
    assert open(img, "rb").read() == before
    d.qmp.cmd("blockdev-add", **json.loads(qcow2_opts(img)))
    d.qmp.cmd("block-export-add", type="nbd", id="e", writable=True, **{"node-name": "disk"})
    assert d.read_all() == ref
    h = d.connect()
    h.pwrite(b"\x55" * 8192, 6 * MiB)
    h.flush()
    h.shutdown()
    d.stop()
    check_clean(img)
    got = bytearray(ref)
    got[6 * MiB:6 * MiB + 8192] = b"\x55" * 8192
    assert raw_of(img, tmp_path) == got
    snap = str(tmp_path / "s1.raw")
    qimg("convert", "-l", "s1", "-O", "raw", img, snap)
    assert open(snap, "rb").read()[:256 * KiB] == b"\x01" * 256 * KiB


def test_unknown_feature_named(blockd, sdir, tmp_path):
    """An unknown incompatible bit is refused by the name in the image's
    feature name table."""
    img = corrupt_image(tmp_path, "feat", [])
    with open(img, "r+b") as f:
        f.seek(72)
        f.write(be64(1 << 9))
        hdr_len = 112
        f.seek(100)
        f.write(be32(hdr_len))
        ext = be32(0x6803f857) + be32(48) + bytes([0, 9]) + b"frobnication".ljust(46, b"\0")
        f.seek(hdr_len)
        f.write(ext + bytes(8))
    d = Blockd(blockd, sdir)
    err = blockdev_add_error(d, img)
    assert "Unsupported qcow2 feature(s): frobnication" in err
    d.stop()


# ---- Crash consistency ---------------------------------------------------------------------


class Workload:
    """Writes, write-zeroes, discards and flushes through libnbd in a thread,
    remembering what was acknowledged as flushed (stable) and which ranges
    were touched since (they may hold old or new data after a crash)."""

    def __init__(self, uri, stable, seed, cluster):
        import threading
        self.h = nbd.NBD()
        self.h.connect_uri(uri)
        self.size = len(stable)
        self.ref = bytearray(stable)
        self.stable = bytes(stable)
        self.dirty = []
        self.rnd = random.Random(seed)
        self.cluster = cluster
        self.ops = 0
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def one(self):
        r = self.rnd
        op = r.choices(["write", "zero", "trim", "flush"], [10, 2, 2, 2])[0]
        if op == "flush":
            self.h.flush()
            self.stable = bytes(self.ref)
            self.dirty = []
            return
        length = r.choice([4096, 512, self.cluster, 5 * self.cluster + 1024, 128 * KiB])
        off = r.randrange(0, self.size - length) // 512 * 512
        self.dirty.append((off, off + length))   # before the request goes out
        if op == "write":
            data = r.randbytes(length)
            self.h.pwrite(data, off)
            self.ref[off:off + length] = data
        elif op == "zero":
            self.h.zero(length, off)
            self.ref[off:off + length] = bytes(length)
        else:
            self.h.trim(length, off)
            s = (off + self.cluster - 1) // self.cluster * self.cluster
            e = (off + length) // self.cluster * self.cluster
            if e > s:
                self.ref[s:e] = bytes(e - s)

    def run(self):
        try:
            while True:
                self.one()
                self.ops += 1
        except (nbd.Error, OSError):
            pass     # the server was killed

    def check(self, got):
        """@got (the image after the crash) equals the flushed state outside
        the ranges touched since the last flush."""
        pos = 0
        for s, e in sorted(self.dirty) + [(self.size, self.size)]:
            if s > pos:
                assert got[pos:s] == self.stable[pos:s], f"flushed data lost in [{pos}, {s})"
            pos = max(pos, e)


def test_crash_consistency(blockd, sdir, tmp_path):
    """kill -9 at 50 random points of a write-heavy workload: every image
    passes qemu-img check (leaks allowed) and keeps all flushed data."""
    size = 16 * MiB
    base = str(tmp_path / "base.qcow2")
    qimg("create", "-f", "qcow2", base, str(size))
    qio(base, "write -P 0x33 0 16M")
    setups = []
    for i, (opts, backing, node_opts) in enumerate([
            ("cluster_size=64k", False, {}),
            ("cluster_size=4k", True, {"l2-cache-size": 4 * 4096,
                                       "refcount-cache-size": 4 * 4096}),
            ("cluster_size=16k,extended_l2=on,refcount_bits=4", True, {}),
            ("cluster_size=512,compat=0.10", False, {"l2-cache-size": 2048})]):
        img = str(tmp_path / f"c{i}.qcow2")
        if backing:
            qimg("create", "-f", "qcow2", "-b", base, "-F", "qcow2", "-o", opts, img)
        else:
            qimg("create", "-f", "qcow2", "-o", opts, img, str(size))
        cluster = int(json.loads(qimg("info", "--output=json", img).stdout)["cluster-size"])
        node_opts["discard"] = "unmap"
        setups.append([img, node_opts, cluster, raw_of(img, tmp_path)])
    rnd = random.Random(2024)
    total_ops = 0
    for it in range(50):
        img, node_opts, cluster, stable = setups[it % len(setups)]
        d = Blockd(blockd, sdir, [qcow2_opts(img, node_opts)])
        w = Workload(d.uri(), stable, it, cluster)
        time.sleep(rnd.uniform(0.02, 0.25))
        d.daemon.proc.send_signal(signal.SIGKILL)
        d.daemon.proc.wait()
        d.qmp.close()
        w.thread.join(10)
        assert not w.thread.is_alive()
        total_ops += w.ops
        check_clean(img, leaks_ok=True)
        got = raw_of(img, tmp_path)
        w.check(got)
        setups[it % len(setups)][3] = got
    assert total_ops > 500
    for img, _, _, _ in setups:
        # Leaks are repairable; afterwards the image is fully clean.
        qimg("check", "-r", "leaks", img, check=False)
        check_clean(img)


def test_corrupt_fuzz(blockd, sdir, tmp_path):
    """Random damage to the metadata of an image with compressed clusters,
    zero clusters and a snapshot: opening and reading it never crashes the
    daemon (also run under ASan by make check), read-only opens never write,
    and writes to what opens read-write do not crash either."""
    good = str(tmp_path / "good.qcow2")
    qimg("create", "-f", "qcow2", "-o", "cluster_size=4k", good, str(2 * MiB))
    qio(good, "write -P 1 0 64k", "write -c -P 2 64k 8k", "write -z 128k 8k",
        "write -P 3 1M 12k")
    qimg("snapshot", "-c", "s1", good)
    qio(good, "write -P 4 8k 4k")
    with open(good, "rb") as f:
        pristine = f.read()
    hdr = pristine[:128]
    l1 = int.from_bytes(hdr[40:48], "big")
    rt = int.from_bytes(hdr[48:56], "big")
    meta = [0, l1, rt, int.from_bytes(pristine[rt:rt + 8], "big"),
            int.from_bytes(pristine[l1:l1 + 8], "big") & 0x00fffffffffffe00,
            int.from_bytes(hdr[64:72], "big")]
    d = Blockd(blockd, sdir)
    rnd = random.Random(99)
    img = str(tmp_path / "fuzz.qcow2")
    opened = 0
    for it in range(60):
        data = bytearray(pristine)
        for _ in range(rnd.randrange(1, 4)):
            base = rnd.choice(meta)
            pos = base + rnd.randrange(0, 128 if base == 0 else 64)
            data[pos] ^= 1 << rnd.randrange(8)
            if rnd.random() < 0.3:
                data[pos] = rnd.randrange(256)
        with open(img, "wb") as f:
            f.write(data)
        ro = it % 2 == 0
        err = blockdev_add_error(d, img, **{"read-only": ro})
        if err is None:
            opened += 1
            d.qmp.cmd("block-export-add", type="nbd", id="e", writable=not ro,
                      **{"node-name": "disk"})
            h = d.connect()
            for off in range(0, 2 * MiB, 256 * KiB):
                try:
                    h.pread(256 * KiB, off)
                except nbd.Error:
                    pass
                if not ro:
                    try:
                        h.pwrite(b"w" * 6000, off + 100)
                        h.zero(8192, off + 16384)
                        h.flush()
                    except nbd.Error:
                        pass
            h.shutdown()
            d.qmp.cmd("block-export-del", id="e")
            wait_gone = time.monotonic() + 5
            while True:
                try:
                    d.qmp.cmd("blockdev-del", **{"node-name": "disk"})
                    break
                except QMPError:
                    assert time.monotonic() < wait_gone
                    time.sleep(0.02)
        assert d.daemon.proc.poll() is None, d.daemon.stderr_path.read_text()
        if ro:
            with open(img, "rb") as f:
                assert f.read() == bytes(data), f"iteration {it}: read-only open wrote"
    print("fuzz: opened", opened, "of 60")
    assert opened > 5
    d.stop()


def test_metadata_write_error_passes(blockd, sdir, tmp_path):
    """A write of the refcount block fails once: that flush fails, the image
    keeps its tables dirty and writes them again at the next flush, which
    succeeds (QEMU does the same); the data and the image are intact.
    (Once, a single failed metadata write made the image refuse every write
    that followed, and a commit with on-error=stop never finished.)"""
    img = str(tmp_path / "d.qcow2")
    qimg("create", "-q", "-f", "qcow2", img, "4M")
    # Fresh 64 KiB-cluster image: refcount block at 0x20000.
    node = json.dumps({"driver": "qcow2", "node-name": "disk", "file": {
        "driver": "blkdebug", "image": {"driver": "file", "filename": img},
        "inject-error": [{"iotype": "write", "offset": 0x20000, "bytes": 65536,
                          "once": True}]}})
    b = Blockd(blockd, sdir, [node])
    h = b.connect()
    h.pwrite(b"\x11" * 65536, 0)
    with pytest.raises(nbd.Error):
        h.flush()
    h.pwrite(b"\x22" * 65536, MiB)
    h.flush()
    assert h.pread(65536, 0) == b"\x11" * 65536
    assert h.pread(65536, MiB) == b"\x22" * 65536
    h.shutdown()
    b.stop()
    check_clean(img)
    qio(img, "read -P 0x11 0 64k", "read -P 0x22 1M 64k")


@pytest.mark.parametrize("target", ["snapshot-l1", "snapshot-table", "snapshot-table-end"])
def test_corrupt_data_cluster_on_snapshot_tables(blockd, sdir, tmp_path, target):
    """An active L2 entry whose data cluster is a snapshot's L1 table or a
    cluster of the snapshot table, the last one included (each in use, so
    the open check passes): the write in place is refused, the image
    marked corrupt, the snapshots intact."""
    cs = 512 if target == "snapshot-table-end" else 64 * KiB
    img = str(tmp_path / "s.qcow2")
    qimg("create", "-q", "-f", "qcow2", "-o", f"cluster_size={cs}", img, "4M")
    qio(img, f"write -P 9 0 {cs}")
    for i in range(8 if target == "snapshot-table-end" else 1):
        qimg("snapshot", "-c", f"s{i}", img)
    qio(img, f"write -P 8 0 {cs}")      # the active L2 table is its own again
    with open(img, "rb") as f:
        data = f.read()
    count, table = int.from_bytes(data[60:64], "big"), int.from_bytes(data[64:72], "big")
    end = table
    for _ in range(count):
        h = data[end:end + 40]
        end += (40 + int.from_bytes(h[36:40], "big") + int.from_bytes(h[12:14], "big") +
                int.from_bytes(h[14:16], "big") + 7) // 8 * 8
    host = {"snapshot-l1": int.from_bytes(data[table:table + 8], "big"),
            "snapshot-table": table,
            "snapshot-table-end": (end - 1) // cs * cs}[target]
    assert target != "snapshot-table-end" or host > table
    patch(img, l2_offset(img), be64(COPIED | host))
    before = open(img, "rb").read()
    d = Blockd(blockd, sdir, [qcow2_opts(img)])
    h = d.connect()
    with pytest.raises(nbd.Error):
        h.pwrite(b"\x55" * 512, 0)
    with pytest.raises(nbd.Error):
        h.pwrite(b"\x56" * 512, MiB)   # refused: this one sets the corrupt bit
    h.shutdown()
    d.stop()
    same_but_corrupt_bit(img, before)


def test_entry_past_end_found_at_reopen_read_write(blockd, sdir, tmp_path):
    """Opened read-only, the image is not checked (nothing is allocated);
    reopened read-write, it is, before the first write."""
    img = str(tmp_path / "c.qcow2")
    qimg("create", "-q", "-f", "qcow2", img, "4M")
    qio(img, "write -P 1 0 64k")
    size = os.path.getsize(img)
    l2 = l2_offset(img)
    patch(img, l2 + 8, be64(COPIED | size))
    opts = json.loads(qcow2_opts(img))
    opts["file"]["node-name"] = "f"
    b = Blockd(blockd, sdir)
    b.qmp.cmd("blockdev-add", **dict(opts, **{"read-only": True}))
    b.qmp.cmd("query-version")
    assert not b.qmp.events
    b.qmp.cmd("blockdev-reopen", options=[opts["file"], dict(opts, file="f")])
    ev = b.qmp.next_event(time.monotonic() + 5)
    assert ev["event"] == "BLOCK_IMAGE_CORRUPTED", ev
    assert "beyond the end of the file" in ev["data"]["msg"]
    b.qmp.cmd("block-export-add", type="nbd", id="e", writable=True, **{"node-name": "disk"})
    h = b.connect()
    with pytest.raises(nbd.Error):
        h.pwrite(b"\x07" * 65536, MiB)
    h.shutdown()
    b.stop()


def test_entry_past_end_makes_image_read_only(blockd, sdir, tmp_path):
    """An L2 entry that points one cluster past the end of the file: found
    as the image opens read-write, before any request meets it; the image
    is marked corrupt (fatal event, corrupt bit at the next write) and
    refuses writes, so the first allocation can never hand that cluster
    out a second time.  (Once, a write took exactly that cluster and two
    guest offsets shared it.)  The read that meets the entry fails."""
    img = str(tmp_path / "c.qcow2")
    qimg("create", "-q", "-f", "qcow2", img, "4M")
    qio(img, "write -P 1 0 64k")
    size = os.path.getsize(img)
    with open(img, "r+b") as f:
        f.seek(40)
        l1 = int.from_bytes(f.read(8), "big")
        f.seek(l1)
        l2 = int.from_bytes(f.read(8), "big") & 0x00fffffffffffe00
        f.seek(l2 + 8)                       # guest cluster 1
        f.write(((1 << 63) | size).to_bytes(8, "big"))
    before = qimg("check", "--output=json", img, check=False).stdout
    b = Blockd(blockd, sdir)
    b.qmp.cmd("blockdev-add", **json.loads(qcow2_opts(img)))
    ev = b.qmp.next_event(time.monotonic() + 5)
    assert ev["event"] == "BLOCK_IMAGE_CORRUPTED" and ev["data"]["fatal"] is True, ev
    assert ev["data"]["msg"] == f"data cluster at {size:#x} is beyond the end of the file"
    b.qmp.cmd("block-export-add", type="nbd", id="e", writable=True, **{"node-name": "disk"})
    h = b.connect()
    with pytest.raises(nbd.Error):
        h.pwrite(b"\x07" * 65536, MiB)                   # the first allocation
    with pytest.raises(nbd.Error):
        h.pread(65536, 65536)
    assert h.pread(65536, 0) == b"\x01" * 65536          # the rest still reads
    h.shutdown()
    info = [n for n in b.qmp.cmd("query-named-block-nodes") if n["node-name"] == "disk"][0]
    assert info["image"]["format-specific"]["data"]["corrupt"] is True
    b.stop()
    after = qimg("check", "--output=json", img, check=False).stdout
    assert json.loads(after)["corruptions"] == json.loads(before)["corruptions"]
    assert json.loads(qimg("info", "--output=json", img).stdout)[
        "format-specific"]["data"]["corrupt"] is True
