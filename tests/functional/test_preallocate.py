"""The preallocate filter under a qcow2 image, against
qemu-storage-daemon: while the image grows, its file runs ahead by
prealloc-size (allocated, not sparse); at the end the file is cut back to
the image's length, and the image checks clean with the same content and
map.  Option errors as qemu-storage-daemon gives them."""
import os
import subprocess


from test_bitmaps_persistent import Daemon
from test_qsd_compat import both_sessions

MiB = 1024 * 1024


def session(prog, d):
    img = f"{d}/img.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", img, "64M"], check=True,
                   capture_output=True)
    x = Daemon(prog, d, None)
    q = x.q
    prealloc = lambda **kw: {"driver": "preallocate", "node-name": "p",  # noqa: E731
                             "file": {"driver": "file", "filename": img}, **kw}
    out = [q.execute("blockdev-add", prealloc(**{"prealloc-align": 1000})),
           q.execute("blockdev-add", prealloc(**{"prealloc-align": 3 * 512})),
           q.execute("blockdev-add", prealloc(**{"prealloc-size": 8 * MiB}))]
    q.cmd("blockdev-add", driver="qcow2", node_name="q", file="p")
    q.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": f"{d}/n.sock"}})
    assert "error" not in q.execute("block-export-add", {"type": "nbd", "id": "e",
                                                         "node-name": "q", "name": "q",
                                                         "writable": True})
    uri = f"nbd+unix:///q?socket={d}/n.sock"
    r = subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 5 0 2M",
                        "-c", "write -P 6 40M 64k", "-c", "flush", uri],
                       capture_output=True, text=True)
    out.append((r.returncode, "fail" in r.stdout))
    st = os.stat(img)
    # Ahead: at least prealloc-size past the data, and allocated.
    out.append((st.st_size >= 8 * MiB, st.st_blocks * 512 >= 8 * MiB))
    assert "Sanitizer" not in x.quit()
    st = os.stat(img)
    out.append(st.st_size < 8 * MiB)
    chk = subprocess.run(["qemu-img", "check", img], capture_output=True, text=True)
    out.append((chk.returncode, chk.stdout.splitlines()[0]))
    m = subprocess.run(["qemu-img", "map", "--output=json", img], capture_output=True,
                       text=True)
    out.append([(e["start"], e["length"], e["data"]) for e in __import__("json").loads(m.stdout)])
    return out


def test_preallocate_matches_qsd():
    ours, theirs = both_sessions(session)
    assert ours[3:6] == [(0, False), (True, True), True], ours
    assert ours == theirs
