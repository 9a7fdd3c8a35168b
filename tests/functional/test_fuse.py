"""The FUSE export against qemu-storage-daemon: the same image shown as a
file at the mountpoint answers stat, reads, writes, fallocate (punch hole,
zero range), truncate with growable, SEEK_DATA/SEEK_HOLE and fsync alike,
the same refusals, unmounted at block-export-del; after a kill, blockd
names the stale mount."""
import hashlib
import os
import shutil
import subprocess

import pytest

from conftest import BLOCKD
from nbdutil import short_dir
from test_bitmaps_persistent import Daemon
from test_qsd_compat import QSD

MiB = 1024 * 1024


def fuse_usable():
    return os.path.exists("/dev/fuse") and shutil.which("fusermount3")


def file_ops(mp):
    """What a program sees through the mountpoint."""
    out = []
    st = os.stat(mp)
    out.append(("stat", st.st_size, oct(st.st_mode)))
    with open(mp, "r+b") as f:
        out.append(("read", hashlib.sha256(f.read()).hexdigest()))
        fd = f.fileno()
        out.append(("pwrite", os.pwrite(fd, b"x" * 5000, 3 * MiB + 100)))
        out.append(("pread", os.pread(fd, 16, 3 * MiB + 96).hex()))
        os.fsync(fd)
        for whence, off in ((os.SEEK_DATA, 0), (os.SEEK_HOLE, 0), (os.SEEK_DATA, 2 * MiB),
                            (os.SEEK_HOLE, 3 * MiB)):
            try:
                out.append(("lseek", whence, off, os.lseek(fd, off, whence)))
            except OSError as e:
                out.append(("lseek", whence, off, e.errno))
        try:
            os.pwrite(fd, b"y" * 10, 8 * MiB - 4)      # past the end: short
            out.append(("tail", os.stat(mp).st_size))
        except OSError as e:
            out.append(("tail", e.errno))
    for args in (["-p", "-o", "0", "-l", "65536"], ["-z", "-o", "1048576", "-l", "4096"]):
        r = subprocess.run(["fallocate", *args, mp], capture_output=True, text=True)
        out.append(("fallocate", args[0], r.returncode))
    with open(mp, "rb") as f:
        out.append(("after", hashlib.sha256(f.read()).hexdigest()))
    r = subprocess.run(["truncate", "-s", "16M", mp], capture_output=True, text=True)
    out.append(("truncate", r.returncode, os.stat(mp).st_size))
    return out


def session(prog, d):
    img = f"{d}/t.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", img, "8M"], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 7 0 2M", "-c",
                    "write -P 9 5M 1M", img], check=True, capture_output=True)
    open(f"{d}/mp", "w").close()
    open(f"{d}/mp2", "w").close()
    os.mkdir(f"{d}/dir")
    x = Daemon(prog, d, None)
    q = x.q
    res = [q.execute("blockdev-add", {"driver": "qcow2", "node-name": "t", "discard": "unmap",
                                      "file": {"driver": "file", "filename": img}})]
    for args in ({"mountpoint": f"{d}/nope"}, {"mountpoint": f"{d}/dir"},
                 {"mountpoint": f"{d}/mp", "allow-other": "maybe"}):
        res.append(q.execute("block-export-add", dict({"type": "fuse", "id": "bad",
                                                       "node-name": "t"}, **args)))
    res.append(q.execute("block-export-add", {"type": "fuse", "id": "f", "node-name": "t",
                                              "mountpoint": f"{d}/mp", "writable": True}))
    res.append(q.execute("query-block-exports"))
    res += file_ops(f"{d}/mp")
    res.append(q.execute("block-export-del", {"id": "f"}))
    res.append(os.stat(f"{d}/mp").st_size)               # the plain file again
    res.append(q.execute("block-export-add", {"type": "fuse", "id": "g", "node-name": "t",
                                              "mountpoint": f"{d}/mp2", "writable": True,
                                              "growable": True}))
    r = subprocess.run(["truncate", "-s", "16M", f"{d}/mp2"], capture_output=True, text=True)
    res.append(("grow", r.returncode, os.stat(f"{d}/mp2").st_size))
    res.append(q.execute("block-export-del", {"id": "g"}))
    res.append("Sanitizer" in x.quit())
    return [r for r in res]


def test_fuse_export_matches_qsd():
    if not fuse_usable():
        pytest.fail("the FUSE export needs /dev/fuse and fusermount3 (scripts/install-deps.sh)")
    if not QSD:
        pytest.fail("qemu-storage-daemon is not installed (scripts/install-deps.sh)")
    out = []
    for prog in (QSD, BLOCKD):
        d = short_dir()
        try:
            out.append(__import__("json").loads(
                __import__("json").dumps(session(prog, d)).replace(d, "@DIR@")))
        finally:
            subprocess.run(["fusermount3", "-u", "-q", f"{d}/mp"], capture_output=True)
            subprocess.run(["fusermount3", "-u", "-q", f"{d}/mp2"], capture_output=True)
            shutil.rmtree(d, ignore_errors=True)
    for i, (a, b) in enumerate(zip(*out)):
        assert b == a, f"step {i}: qemu-storage-daemon {a!r}, blockd {b!r}"


def test_stale_mount_after_kill_is_named():
    """A daemon killed with its export mounted leaves a dead mount: the next
    block-export-add on it says so and what to do; after fusermount3 -u it
    works again."""
    if not fuse_usable():
        pytest.fail("the FUSE export needs /dev/fuse and fusermount3 (scripts/install-deps.sh)")
    d = short_dir()
    try:
        img = f"{d}/t.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", img, "1M"], check=True)
        open(f"{d}/mp", "w").close()
        x = Daemon(BLOCKD, d, img)
        assert x.q.execute("block-export-add", {"type": "fuse", "id": "f", "node-name": "t",
                                                "mountpoint": f"{d}/mp"}) == {"return": {}}
        assert os.stat(f"{d}/mp").st_size == MiB
        x.kill()
        x = Daemon(BLOCKD, d, img)
        r = x.q.execute("block-export-add", {"type": "fuse", "id": "f", "node-name": "t",
                                             "mountpoint": f"{d}/mp"})
        assert "fusermount3 -u" in r["error"]["desc"], r
        subprocess.run(["fusermount3", "-u", f"{d}/mp"], check=True)
        r = x.q.execute("block-export-add", {"type": "fuse", "id": "f", "node-name": "t",
                                             "mountpoint": f"{d}/mp"})
        assert r == {"return": {}}, r
        assert "Sanitizer" not in x.quit()
        assert os.stat(f"{d}/mp").st_size == 0           # unmounted at quit
    finally:
        subprocess.run(["fusermount3", "-u", "-q", f"{d}/mp"], capture_output=True)
        shutil.rmtree(d, ignore_errors=True)


def tool_session(prog, d, fmt):
    """Real programs on the mountpoint of a @fmt node: qemu-img convert
    into it, dd, fallocate --punch-hole; qemu-img compare of the mountpoint
    against a local file that got the same treatment, and of the image
    afterwards.  blockd also serves the node over NBD meanwhile, and the
    mountpoint compares equal to it (qemu-storage-daemon cannot: its NBD
    export and a writable FUSE export on one node conflict over the resize
    permission)."""
    img, mp, expect, src = f"{d}/t.{fmt}", f"{d}/mp", f"{d}/expect.raw", f"{d}/src.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, img, "8M"], check=True)
    with open(src, "wb") as f:
        f.write(os.urandom(3 * MiB))
    open(mp, "w").close()
    x = Daemon(prog, d, None)
    q = x.q
    q.cmd("blockdev-add", **{"driver": fmt, "node-name": "t", "discard": "unmap",
                             "file": {"driver": "file", "filename": img}})
    q.cmd("block-export-add", **{"type": "fuse", "id": "f", "node-name": "t",
                                 "mountpoint": mp, "writable": True})
    if prog == BLOCKD:
        q.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": f"{d}/n.sock"}})
        q.cmd("block-export-add", **{"type": "nbd", "id": "n", "node-name": "t",
                                     "writable": True})
    nbd = f"nbd+unix:///t?socket={d}/n.sock"
    steps = [
        ["qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", src, mp],
        ["dd", f"if={src}", f"of={mp}", "bs=64k", "seek=80", "count=16", "conv=notrunc,fsync",
         "status=none"],
        ["fallocate", "--punch-hole", "-o", str(MiB), "-l", str(MiB // 2), mp],
    ]
    with open(expect, "wb") as f:
        f.truncate(8 * MiB)
    for argv in steps:
        r = subprocess.run(argv, capture_output=True, text=True)
        assert r.returncode == 0, (argv, r.stderr)
        subprocess.run([a.replace(mp, expect) for a in argv], check=True)
    def compare(a, b, fmt_b="raw"):
        r = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", fmt_b, a, b],
                           capture_output=True, text=True)
        return r.returncode, r.stdout.replace(d, "@D")

    out = [compare(mp, expect)]
    if prog == BLOCKD:
        assert compare(mp, nbd) == (0, "Images are identical.\n")
    q.cmd("block-export-del", id="f")
    assert "Sanitizer" not in x.quit()
    out.append(compare(expect, img, fmt))
    if fmt == "qcow2":
        out.append(subprocess.run(["qemu-img", "check", img], capture_output=True).returncode)
    return out


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_fuse_with_real_tools(fmt):
    if not fuse_usable():
        pytest.fail("the FUSE export needs /dev/fuse and fusermount3 (scripts/install-deps.sh)")
    results = []
    for prog in (BLOCKD, QSD):
        d = short_dir()
        try:
            results.append(tool_session(prog, d, fmt))
        finally:
            subprocess.run(["fusermount3", "-u", "-q", f"{d}/mp"], capture_output=True)
            shutil.rmtree(d, ignore_errors=True)
    ours, theirs = results
    assert ours[0] == ours[1] == (0, "Images are identical.\n"), ours
    assert ours == theirs


def test_fuse_in_an_iothread():
    """The FUSE device read in an iothread's loop: data written through the
    mountpoint is the node's, a drain (block_resize) in between is waited
    out, and unmounting from the main thread works."""
    if not fuse_usable():
        pytest.fail("the FUSE export needs /dev/fuse and fusermount3 (scripts/install-deps.sh)")
    d = short_dir()
    try:
        img, mp = f"{d}/t.raw", f"{d}/mp"
        subprocess.run(["qemu-img", "create", "-q", "-f", "raw", img, "8M"], check=True)
        open(mp, "w").close()
        x = Daemon(BLOCKD, d, None)
        q = x.q
        q.cmd("object-add", **{"qom-type": "iothread", "id": "io0"})
        q.cmd("blockdev-add", **{"driver": "raw", "node-name": "t",
                                 "file": {"driver": "file", "filename": img}})
        q.cmd("block-export-add", **{"type": "fuse", "id": "f", "node-name": "t",
                                     "mountpoint": mp, "writable": True, "iothread": "io0"})
        data = os.urandom(2 * MiB)
        with open(mp, "r+b") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        q.cmd("block_resize", **{"node-name": "t", "size": 16 * MiB})
        with open(mp, "rb") as f:
            assert f.read(2 * MiB) == data
        assert os.stat(mp).st_size == 16 * MiB
        q.cmd("block-export-del", id="f")
        assert "Sanitizer" not in x.quit()
        with open(img, "rb") as f:
            assert f.read(2 * MiB) == data
    finally:
        subprocess.run(["fusermount3", "-u", "-q", f"{d}/mp"], capture_output=True)
        shutil.rmtree(d, ignore_errors=True)
