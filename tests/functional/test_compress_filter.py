"""The compress filter over qcow2 against qemu-storage-daemon: what goes
through it is stored as compressed clusters (the same map, the same
image size, qemu-img check clean), a partial cluster is completed and
compressed, a write over a stored cluster fails, and it refuses a format
that cannot compress.  Both compression types, zlib and zstd; images
created with zstd by blockdev-create and opened by QEMU's tools."""
import json
import subprocess

import pytest

from test_bitmaps_persistent import Daemon
from test_luks import wait_job
from test_qsd_compat import both_sessions

MiB = 1024 * 1024


def qemu_io(uri, *cmds):
    args = ["qemu-io", "-f", "raw"]
    for c in cmds:
        args += ["-c", c]
    r = subprocess.run(args + [uri], capture_output=True, text=True)
    return r.returncode, "failed" in r.stdout + r.stderr


def session(prog, d, ctype):
    img, raw = f"{d}/t.qcow2", f"{d}/r.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o",
                    f"compression_type={ctype}", img, "4M"], check=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", raw, "4M"], check=True)
    x = Daemon(prog, d, None)
    q = x.q
    out = [q.execute("blockdev-add", {"driver": "compress", "node-name": "bad",
                                      "file": {"driver": "file", "filename": raw}})]
    out.append(q.execute("blockdev-add", {
        "driver": "compress", "node-name": "c",
        "file": {"driver": "qcow2", "node-name": "t",
                 "file": {"driver": "file", "filename": img}}}))
    q.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": f"{d}/n.sock"}})
    assert "error" not in q.execute("block-export-add", {"type": "nbd", "id": "e",
                                                         "node-name": "c", "name": "c",
                                                         "writable": True})
    uri = f"nbd+unix:///c?socket={d}/n.sock"
    out.append(qemu_io(uri, "write -P 0x11 0 1M", "write -P 0x22 1M 64k"))
    out.append(qemu_io(uri, "write -P 0x33 2M 4k"))          # a partial cluster
    out.append(qemu_io(uri, "read -P 0x11 0 1M", "read -P 0x22 1M 64k",
                       "read -P 0x33 2M 4k", "read -P 0 2052k 60k"))
    out.append(qemu_io(uri, "write -P 0x44 0 64k"))           # over a stored cluster
    out.append(qemu_io(uri, "read -P 0x11 0 64k"))
    assert "Sanitizer" not in x.quit()
    r = subprocess.run(["qemu-img", "map", "--output=json", img], capture_output=True,
                       text=True, check=True)
    out.append([(e["start"], e["length"], e["data"], e.get("compressed")) for e in
                json.loads(r.stdout)])
    # The file's length may differ (blockd grows qcow2 files ahead, the
    # tail a hole: README); where the image ends may not.
    r = subprocess.run(["qemu-img", "check", img], capture_output=True, text=True)
    out.append((r.returncode, r.stdout.strip().splitlines()[1:]))
    return out


@pytest.mark.parametrize("ctype", ["zlib", "zstd"])
def test_compress_filter_matches_qsd(ctype):
    ours, theirs = both_sessions(session, ctype)
    assert ours[2:5] == [(0, False), (0, False), (0, False)], ours
    assert ours == theirs


def create_session(prog, d):
    """blockdev-create with a compression type: the refused combinations,
    then a zstd image that QEMU's tools read back."""
    x = Daemon(prog, d, None)
    q = x.q
    img = f"{d}/z.qcow2"
    open(img, "wb").close()
    q.cmd("blockdev-add", driver="file", node_name="f", filename=img)
    out = []
    for opts in ({"compression-type": "lz4"}, {"compression-type": 1},
                 {"compression-type": "zstd", "version": "v2"},
                 {"compression-type": "zstd"}):
        r = q.execute("blockdev-create", {"job-id": "c", "options": {
            "driver": "qcow2", "file": "f", "size": 4 * MiB, **opts}})
        out.append(r if "error" in r else wait_job(q, "c"))
    q.cmd("blockdev-add", driver="qcow2", node_name="z", file="f")
    q.cmd("blockdev-add", driver="compress", node_name="c", file="z")
    q.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": f"{d}/n.sock"}})
    q.cmd("block-export-add", type="nbd", id="e", node_name="c", writable=True)
    out.append(qemu_io(f"nbd+unix:///c?socket={d}/n.sock", "write -P 0x5a 0 256k"))
    node = [n for n in q.cmd("query-named-block-nodes") if n["node-name"] == "z"][0]
    out.append(node["image"]["format-specific"])
    assert "Sanitizer" not in x.quit()
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", img],
                                     capture_output=True, text=True, check=True).stdout)
    out.append(info["format-specific"]["data"]["compression-type"])
    r = subprocess.run(["qemu-io", "-c", "read -P 0x5a 0 256k", img], capture_output=True,
                       text=True)
    out.append("failed" in r.stdout + r.stderr)
    # Stored compressed: qemu-img check counts compressed clusters.
    r = subprocess.run(["qemu-img", "check", img], capture_output=True, text=True)
    out.append((r.returncode, r.stdout.strip().splitlines()[1:]))
    return out


def test_create_zstd_matches_qsd():
    ours, theirs = both_sessions(create_session)
    assert ours[3] is None and ours[6:8] == ["zstd", False], ours
    assert "100.00% compressed clusters" in ours[8][1][0], ours
    assert ours == theirs
