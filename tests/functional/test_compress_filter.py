"""The compress filter over qcow2 against qemu-storage-daemon: what goes
through it is stored as compressed clusters (the same map, the same
image size, qemu-img check clean), a partial cluster is completed and
compressed, a write over a stored cluster fails, and it refuses a format
that cannot compress."""
import json
import subprocess


from test_bitmaps_persistent import Daemon
from test_qsd_compat import both_sessions

MiB = 1024 * 1024


def qemu_io(uri, *cmds):
    args = ["qemu-io", "-f", "raw"]
    for c in cmds:
        args += ["-c", c]
    r = subprocess.run(args + [uri], capture_output=True, text=True)
    return r.returncode, "failed" in r.stdout + r.stderr


def session(prog, d):
    img, raw = f"{d}/t.qcow2", f"{d}/r.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", img, "4M"], check=True)
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


def test_compress_filter_matches_qsd():
    ours, theirs = both_sessions(session)
    assert ours[2:5] == [(0, False), (0, False), (0, False)], ours
    assert ours == theirs
