"""Image fleecing (pull-mode backup) against qemu-storage-daemon: a
copy-before-write filter goes in under the guest's export
(blockdev-reopen of a raw node's file), a snapshot-access node exports the
frozen view with the checkpoint's bitmap over NBD, a backup application
copies only the dirty extents with libnbd while the guest keeps writing,
then everything is torn down.  The copy must equal the disk as it was when
fleecing began, and both daemons must answer alike."""
import hashlib
import json
import shutil
import subprocess

import nbd
import pytest

from conftest import BLOCKD
from nbdutil import short_dir
from test_bitmaps_persistent import Daemon
from test_chain import qemu_io
from test_qsd_compat import QSD

MiB = 1024 * 1024
SIZE = 64 * MiB


def sha_file(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def snapshot_of(uri, path):
    r = subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "raw", uri, path],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def dirty_extents(uri, context):
    """(offset, length) of the extents @context marks (flag 1)."""
    r = subprocess.run(["nbdinfo", "--json", f"--map={context}", uri], capture_output=True,
                       text=True, check=True, timeout=60)
    return [(e["offset"], e["length"]) for e in json.loads(r.stdout) if e["type"] & 1]


def copy_extents(uri, extents, path):
    """The backup application: read each dirty extent from the fleece
    export, write it into @path (the previous backup)."""
    h = nbd.NBD()
    h.set_export_name("fleece")
    h.connect_uri(uri)
    with open(path, "r+b") as f:
        for off, n in extents:
            for o in range(off, off + n, 4 * MiB):
                k = min(4 * MiB, off + n - o)
                f.seek(o)
                f.write(h.pread(k, o))
    h.shutdown()


def session(prog, d):
    res = []
    src = f"{d}/src.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", src, str(SIZE)], check=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", f"{d}/tmp.qcow2", str(SIZE)],
                   check=True)
    qemu_io(src, "write -P 1 0 64M", fmt="qcow2")
    x = Daemon(prog, d, None)
    q = x.q
    guest = f"nbd+unix:///guest?socket={d}/n.sock"
    fleece = f"nbd+unix:///fleece?socket={d}/n.sock"
    for cmd, args in [
            ("blockdev-add", {"driver": "qcow2", "node-name": "src",
                              "file": {"driver": "file", "filename": src}}),
            ("blockdev-add", {"driver": "raw", "node-name": "disk", "file": "src"}),
            ("nbd-server-start", {"addr": {"type": "unix", "data": {"path": f"{d}/n.sock"}}}),
            ("block-export-add", {"type": "nbd", "id": "guest", "node-name": "disk",
                                  "name": "guest", "writable": True}),
            # the checkpoint: the full backup is the disk now
            ("transaction", {"actions": [{"type": "block-dirty-bitmap-add",
                                          "data": {"node": "src", "name": "c1"}}]})]:
        res.append(q.execute(cmd, args))
    snapshot_of(guest, f"{d}/backup.raw")
    qemu_io(guest, "write -P 2 0 1M", "write -P 3 10M 64k", "write -P 4 33M 3M",
            "write -P 5 63M 1M")
    # backup-begin: a new checkpoint, the old one frozen, the filter in
    for cmd, args in [
            ("transaction", {"actions": [
                {"type": "block-dirty-bitmap-add", "data": {"node": "src", "name": "c2"}},
                {"type": "block-dirty-bitmap-disable", "data": {"node": "src", "name": "c1"}}]}),
            ("blockdev-add", {"driver": "qcow2", "node-name": "tmp",
                              "file": {"driver": "file", "filename": f"{d}/tmp.qcow2"}}),
            ("blockdev-add", {"driver": "copy-before-write", "node-name": "cbw", "file": "src",
                              "target": "tmp", "bitmap": {"node": "src", "name": "c1"}}),
            ("blockdev-reopen", {"options": [{"driver": "raw", "node-name": "disk",
                                              "file": "cbw"}]}),
            ("blockdev-add", {"driver": "snapshot-access", "node-name": "acc", "file": "cbw"}),
            ("block-export-add", {"type": "nbd", "id": "fleece", "node-name": "acc",
                                  "name": "fleece", "bitmaps": [{"node": "src", "name": "c1"}]})]:
        res.append(q.execute(cmd, args))
    snapshot_of(guest, f"{d}/expected.raw")
    # the guest goes on: inside and outside the dirty extents
    qemu_io(guest, "write -P 6 0 2M", "write -P 7 34M 64k", "write -P 8 50M 1M")
    extents = dirty_extents(fleece, "qemu:dirty-bitmap:c1")
    res.append(extents)
    copy_extents(fleece, extents, f"{d}/backup.raw")
    # a range outside the bitmap is not part of the view
    h = nbd.NBD()
    h.set_export_name("fleece")
    h.connect_uri(fleece)
    try:
        h.pread(4096, 20 * MiB)
        res.append("read outside the bitmap worked")
    except nbd.Error as e:
        res.append(("refused", e.errno is not None))
    h.shutdown()
    qemu_io(guest, "write -P 9 33M 64k")
    res.append([n["node-name"] for n in q.cmd("query-named-block-nodes")
                if not n["node-name"].startswith("#")])
    for cmd, args in [
            ("block-export-del", {"id": "fleece"}),
            ("blockdev-del", {"node-name": "acc"}),
            ("blockdev-reopen", {"options": [{"driver": "raw", "node-name": "disk",
                                              "file": "src"}]}),
            ("blockdev-del", {"node-name": "cbw"}),
            ("blockdev-del", {"node-name": "tmp"}),
            ("block-dirty-bitmap-remove", {"node": "src", "name": "c1"})]:
        res.append(q.execute(cmd, args))
    res.append(sha_file(f"{d}/backup.raw") == sha_file(f"{d}/expected.raw"))
    snapshot_of(guest, f"{d}/now.raw")
    qemu_io(f"{d}/now.raw", "read -P 6 0 2M", "read -P 9 33M 64k", "read -P 8 50M 1M")
    res.append(q.execute("x-debug-block-dirty-bitmap-sha256", {"node": "src", "name": "c2"}))
    res.append("Sanitizer" in x.quit())
    return res


def test_pull_backup_restores_exactly():
    """blockd's copy is exact (test_fleecing_same_answers shows that
    qemu-storage-daemon's session gives the same results)."""
    d = short_dir()
    try:
        res = session(BLOCKD, d)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    assert res[-3] is True, "the copy differs from the disk at backup-begin"
    assert res[-1] is False, "sanitizer report"
    assert all(r == {"return": {}} for r in res if isinstance(r, dict) and "sha256" not in
               json.dumps(r)), res
    assert res[12] == ("refused", True)


def test_fleecing_same_answers():
    if not QSD:
        pytest.fail("qemu-storage-daemon is not installed (scripts/install-deps.sh)")
    out = []
    for prog in (QSD, BLOCKD):
        d = short_dir()
        try:
            out.append(session(prog, d))
        finally:
            shutil.rmtree(d, ignore_errors=True)
    for i, (a, b) in enumerate(zip(*out)):
        assert b == a, f"step {i}: qemu-storage-daemon {a!r}, blockd {b!r}"
