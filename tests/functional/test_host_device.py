"""The host_device driver on a loop device the test sets up (losetup, as
root): the same errors, node description, data, map and discard through
the node's export as qemu-storage-daemon; discard reaches the device
(BLKDISCARD punches the loop device's backing file); O_DIRECT on a device
with 4 KiB sectors takes its alignment from the device; a resize only
catches up with the device's own size."""
import os
import shutil
import subprocess

import pytest

from conftest import BLOCKD
from nbdutil import short_dir
from qmp import QMP
from test_qsd_compat import QSD

MiB = 1024 * 1024


@pytest.fixture
def loopdev():
    """(loop device, its backing file): 64 MiB, 4 KiB sectors."""
    if not shutil.which("losetup"):
        pytest.fail("losetup is missing (util-linux)")
    d = short_dir()
    backing = f"{d}/dev.img"
    with open(backing, "wb") as f:
        f.truncate(64 * MiB)
    r = subprocess.run(["losetup", "-f", "--show", "--sector-size", "4096", backing],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail(f"cannot set up a loop device (root needed): {r.stderr}")
    dev = r.stdout.strip()
    yield dev, backing
    subprocess.run(["losetup", "-d", dev], check=True)
    shutil.rmtree(d, ignore_errors=True)


def allocated(path, start, length):
    """Is any of [start, start+length) of @path allocated?"""
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            data = os.lseek(fd, start, os.SEEK_DATA)
        except OSError:
            return False
        return data < start + length
    finally:
        os.close(fd)


def session(prog, dev, backing):
    d = short_dir()
    p = subprocess.Popen([prog, "--chardev", f"socket,id=m,path={d}/q.sock,server=on,wait=off",
                          "--monitor", "chardev=m", "--nbd-server",
                          f"addr.type=unix,addr.path={d}/n.sock"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    q = QMP(f"{d}/q.sock")
    out = []
    try:
        for args in ({"driver": "file", "node-name": "x", "filename": dev},
                     {"driver": "host_device", "node-name": "x", "filename": backing},
                     {"driver": "host_device", "node-name": "x", "filename": "/dev/nope"}):
            out.append(q.execute("blockdev-add", args))
        out.append(q.execute("blockdev-add", {"driver": "host_device", "node-name": "h",
                                              "filename": dev, "discard": "unmap",
                                              "cache": {"direct": True}}))
        node = [n for n in q.cmd("query-named-block-nodes") if n["node-name"] == "h"][0]
        out.append(node)
        out.append(q.execute("block_resize", {"node-name": "h", "size": 128 * MiB}))
        out.append(q.execute("block_resize", {"node-name": "h", "size": 32 * MiB}))
        out.append(q.execute("block_resize", {"node-name": "h", "size": 64 * MiB}))
        assert "error" not in q.execute("block-export-add", {"type": "nbd", "id": "e",
                                                             "node-name": "h", "name": "h",
                                                             "writable": True})
        uri = f"nbd+unix:///h?socket={d}/n.sock"
        r = subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 7 0 4M",
                            "-c", "write -P 8 512 512", "-c", "read -P 8 512 512",
                            "-c", "read -P 7 4096 4096", "-c", "write -z 1M 1M",
                            "-c", "read -P 0 1M 1M", "-c", "discard 2M 1M",
                            "-c", "flush", uri], capture_output=True, text=True)
        out.append((r.returncode, "fail" in r.stdout))
        out.append(allocated(backing, 2 * MiB, MiB))   # discarded: punched
        out.append(allocated(backing, 3 * MiB, MiB))
        m = subprocess.run(["qemu-img", "map", "--output=json", "-f", "raw", uri],
                           capture_output=True, text=True)
        out.append(m.stdout)
        stats = q.cmd("query-blockstats", query_nodes=True)
        out.append([s.get("driver-specific") for s in stats if s.get("node-name") == "h"])
    finally:
        q.execute("quit")
        p.wait(30)
        err = p.stderr.read().decode()
        shutil.rmtree(d, ignore_errors=True)
    assert "Sanitizer" not in err and "runtime error" not in err, err
    return out


def test_host_device_matches_qsd(loopdev):
    if not QSD:
        pytest.fail("qemu-storage-daemon is not installed (scripts/install-deps.sh)")
    dev, backing = loopdev
    ours = session(BLOCKD, dev, backing)
    with open(backing, "wb") as f:
        f.truncate(0)
        f.truncate(64 * MiB)
    theirs = session(QSD, dev, backing)
    assert ours[8] == (0, False), ours
    assert ours[9] is False and ours[10] is True
    # Shrinking: refused with a reason (qemu-storage-daemon answers
    # success and changes nothing; README).
    assert ours[6] == {"error": {"class": "GenericError",
                                 "desc": "Cannot resize device files"}}
    assert theirs[6] == {"return": {}}
    del ours[6], theirs[6]
    assert ours == theirs


def test_resize_follows_the_device(loopdev):
    """The device grows (its backing file, then losetup -c): block_resize
    to the new size takes it; past it is refused."""
    dev, backing = loopdev
    d = short_dir()
    p = subprocess.Popen([BLOCKD, "--chardev", f"socket,id=m,path={d}/q.sock,server=on,wait=off",
                          "--monitor", "chardev=m", "--blockdev",
                          f"driver=host_device,node-name=h,filename={dev}"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    q = QMP(f"{d}/q.sock")
    try:
        with open(backing, "r+b") as f:
            f.truncate(96 * MiB)
        subprocess.run(["losetup", "-c", dev], check=True)
        assert q.execute("block_resize", {"node-name": "h", "size": 128 * MiB})["error"][
            "desc"] == "Cannot grow device files"
        q.cmd("block_resize", node_name="h", size=96 * MiB)
        node = [n for n in q.cmd("query-named-block-nodes") if n["node-name"] == "h"][0]
        assert node["image"]["virtual-size"] == 96 * MiB
    finally:
        q.execute("quit")
        p.wait(30)
        shutil.rmtree(d, ignore_errors=True)
