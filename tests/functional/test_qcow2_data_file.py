"""qcow2 with an external data file (data-file, data-file-raw) against
qemu-storage-daemon: images made by qemu-img and by blockdev-create,
served over NBD and written (data, zeroes, discards), give the same
guest data, the same map, the same node description, a clean qemu-img
check and -- with data-file-raw -- a data file that reads as the disk.
What a data file cannot do (internal snapshots, compressed clusters) is
refused; a raw data file's cluster elsewhere than its guest offset is
corruption."""
import json
import shutil
import subprocess

import pytest

from conftest import BLOCKD
from nbdutil import short_dir
from test_bitmaps_persistent import Daemon
from test_luks import wait_job
from test_qsd_compat import both_sessions

MiB = 1024 * 1024


def qemu_io(uri, *cmds, fmt=("-f", "raw")):
    args = ["qemu-io", *fmt]
    for c in cmds:
        args += ["-c", c]
    r = subprocess.run(args + [uri], capture_output=True, text=True)
    return r.returncode, "failed" in r.stdout + r.stderr


def export(q, d, node):
    q.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": f"{d}/n.sock"}})
    q.cmd("block-export-add", type="nbd", id="e", node_name=node, writable=True)
    return f"nbd+unix:///{node}?socket={d}/n.sock"


def map_of(img):
    r = subprocess.run(["qemu-img", "map", "--output=json", img], capture_output=True,
                       text=True, check=True)
    return [(e["start"], e["length"], e["data"], e["zero"], e.get("offset"))
            for e in json.loads(r.stdout)]


def guest_ops(uri):
    return [qemu_io(uri, "write -P 0x11 0 1M", "write -P 0x22 1088k 4k"),
            qemu_io(uri, "write -z 64k 64k"),            # zeroes, storage kept
            qemu_io(uri, "write -z -u 128k 64k"),        # zeroes, storage dropped
            qemu_io(uri, "discard 192k 64k"),
            # Part of a zeroed cluster whose old data may still be in the
            # data file: the rest of the cluster must read as zeroes.
            qemu_io(uri, "write -P 0x66 68k 4k"),
            qemu_io(uri, "read -P 0x11 0 64k", "read -P 0 64k 4k", "read -P 0x66 68k 4k",
                    "read -P 0 72k 184k", "read -P 0x11 256k 768k",
                    "read -P 0 1M 64k", "read -P 0x22 1088k 4k", "read -P 0 1092k 60k")]


def session(prog, d, raw):
    img = f"{d}/t.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o",
                    f"data_file={d}/t.data,data_file_raw={'on' if raw else 'off'}", img,
                    "4M"], check=True)
    x = Daemon(prog, d, None)
    q = x.q
    # The data file named in the header is found.
    q.cmd("blockdev-add", driver="qcow2", node_name="t", discard="unmap",
          file={"driver": "file", "filename": img})
    out = [guest_ops(export(q, d, "t"))]
    node = [n for n in q.cmd("query-named-block-nodes") if n["node-name"] == "t"][0]
    out.append(node["image"]["format-specific"])
    out.append(node["image"]["virtual-size"])
    out.append(q.execute("blockdev-snapshot-internal-sync", {"device": "t", "name": "s"}))
    q.cmd("block-export-del", id="e")
    out.append(q.execute("block_resize", {"node-name": "t", "size": 8 * MiB}))
    assert "Sanitizer" not in x.quit()
    out.append(map_of(img))
    r = subprocess.run(["qemu-img", "check", img], capture_output=True, text=True)
    out.append((r.returncode, r.stdout.strip().splitlines()[1:]))
    out.append(qemu_io(img, "read -P 0x11 0 64k", "read -P 0 64k 4k", "read -P 0x66 68k 4k",
                       "read -P 0 72k 184k", "read -P 0 4M 4M", fmt=()))
    if raw:
        # The data file is the disk.
        out.append(qemu_io(f"{d}/t.data", "read -P 0x11 0 64k", "read -P 0 64k 4k",
                           "read -P 0x66 68k 4k", "read -P 0 72k 184k",
                           "read -P 0x22 1088k 4k"))
    out.append(subprocess.run(["stat", "-c", "%s", f"{d}/t.data"], capture_output=True,
                              text=True).stdout.strip())
    return out


@pytest.mark.parametrize("raw", [False, True], ids=["data-file", "data-file-raw"])
def test_data_file_matches_qsd(raw):
    ours, theirs = both_sessions(session, raw, dir_token=True)
    assert ours[0] == [[0, False]] * 6, ours
    assert ours[1]["data"]["data-file"] == "@DIR@/t.data", ours
    assert ours[1]["data"]["data-file-raw"] is raw, ours
    assert "error" in ours[3] and "return" in ours[4], ours
    assert ours[-1] == str(8 * MiB)
    assert ours == theirs


def create_session(prog, d):
    x = Daemon(prog, d, None)
    q = x.q
    for name in ("t.qcow2", "t.data"):
        open(f"{d}/{name}", "wb").close()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", f"{d}/b.qcow2", "1M"],
                   check=True)
    q.cmd("blockdev-add", driver="file", node_name="f", filename=f"{d}/t.qcow2")
    q.cmd("blockdev-add", driver="file", node_name="df", filename=f"{d}/t.data")
    out = []
    for opts in ({"data-file-raw": True},
                 {"data-file": "df", "version": "v2"},
                 {"data-file": "nope"},
                 {"data-file": "df", "data-file-raw": True, "backing-file": f"{d}/b.qcow2"},
                 {"data-file": "df", "data-file-raw": True}):
        r = q.execute("blockdev-create", {"job-id": "c", "options": {
            "driver": "qcow2", "file": "f", "size": 2 * MiB, **opts}})
        out.append(r if "error" in r else wait_job(q, "c"))
    # The option names the data file's node; without it the header's name.
    out.append(q.execute("blockdev-add", {"driver": "qcow2", "node-name": "bad",
                                          "file": {"driver": "file",
                                                   "filename": f"{d}/b.qcow2"},
                                          "data-file": "df"}))
    q.cmd("blockdev-add", driver="qcow2", node_name="t", file="f", data_file="df")
    uri = export(q, d, "t")
    out.append(qemu_io(uri, "write -P 0x33 1M 64k"))
    node = [n for n in q.cmd("query-named-block-nodes") if n["node-name"] == "t"][0]
    out.append(node["image"]["format-specific"])
    # What cannot be written into a data file: compressed clusters.
    q.cmd("blockdev-add", driver="compress", node_name="c", file="t")
    q.cmd("block-export-add", type="nbd", id="ec", node_name="c", writable=True)
    out.append(qemu_io(f"nbd+unix:///c?socket={d}/n.sock", "write -P 0x44 0 64k"))
    assert "Sanitizer" not in x.quit()
    out.append(qemu_io(f"{d}/t.qcow2", "read -P 0x33 1M 64k", "read -P 0 0 1M", fmt=()))
    out.append(qemu_io(f"{d}/t.data", "read -P 0x33 1M 64k"))
    out.append(map_of(f"{d}/t.qcow2"))
    r = subprocess.run(["qemu-img", "check", f"{d}/t.qcow2"], capture_output=True, text=True)
    out.append(r.returncode)
    return out


def test_create_with_data_file_matches_qsd():
    ours, theirs = both_sessions(create_session, dir_token=True)
    assert all(isinstance(r, (str, dict)) for r in ours[:4]) and ours[4] is None, ours
    assert ours[-5] == [1, True], ours            # no compressed clusters
    assert ours[-4:-2] == [[0, False], [0, False]] and ours[-1] == 0, ours
    assert ours == theirs


def test_raw_data_file_cluster_elsewhere_is_corrupt():
    """data-file-raw promises each cluster at its guest offset: an L2 entry
    that says otherwise fails the request and marks the image corrupt."""
    d = short_dir()
    img = f"{d}/t.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o",
                    f"data_file={d}/t.data,data_file_raw=on", img, "1M"], check=True)
    with open(img, "rb") as f:
        data = f.read()
    l1 = int.from_bytes(data[40:48], "big")
    l2 = int.from_bytes(data[l1:l1 + 8], "big") & 0x00fffffffffffe00
    with open(img, "r+b") as f:
        f.seek(l2 + 8)            # guest cluster 1 -> data file offset 0x20000
        f.write(((1 << 63) | 0x20000).to_bytes(8, "big"))
    try:
        x = Daemon(BLOCKD, d, img)
        rc, failed = qemu_io(f"nbd+unix:///t?socket={d}/n.sock", "read 64k 4k")
        assert failed
        assert qemu_io(f"nbd+unix:///t?socket={d}/n.sock", "read -P 0 0 64k") == (0, False)
        x.q.cmd("query-version")
        ev = [e for e in x.q.events if e["event"] == "BLOCK_IMAGE_CORRUPTED"]
        assert ev and "guest offset" in ev[0]["data"]["msg"], x.q.events
        assert "Sanitizer" not in x.quit()
    finally:
        shutil.rmtree(d, ignore_errors=True)
