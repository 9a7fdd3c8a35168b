"""The copy-on-read filter against qemu-storage-daemon: reading through
it fills the top image from its backing chain (down to "bottom"), with
the same resulting allocation map, content and errors; writes during
copies keep the guest's data."""
import json
import shutil
import subprocess
import threading

import pytest

from conftest import BLOCKD
from nbdutil import short_dir
from test_bitmaps_persistent import Daemon
from test_qsd_compat import both_sessions

MiB = 1024 * 1024


def make_chain(d):
    """base.qcow2 <- mid.qcow2 <- top.qcow2, 16 MiB, data in each layer."""
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
    run("qemu-img", "create", "-f", "qcow2", f"{d}/base.qcow2", "16M")
    run("qemu-io", "-c", "write -P 1 0 4M", "-c", "write -z 12M 1M", f"{d}/base.qcow2")
    run("qemu-img", "create", "-f", "qcow2", "-b", f"{d}/base.qcow2", "-F", "qcow2",
        f"{d}/mid.qcow2")
    run("qemu-io", "-c", "write -P 2 2M 4M", f"{d}/mid.qcow2")
    run("qemu-img", "create", "-f", "qcow2", "-b", f"{d}/mid.qcow2", "-F", "qcow2",
        f"{d}/top.qcow2")
    run("qemu-io", "-c", "write -P 3 5M 1M", f"{d}/top.qcow2")


def qcow2(name, node, backing):
    return {"driver": "qcow2", "node-name": node, "backing": backing,
            "file": {"driver": "file", "filename": name}}


def session(prog, d, bottom):
    make_chain(d)
    x = Daemon(prog, d, None)
    q = x.q
    chain = qcow2(f"{d}/top.qcow2", "top",
                  qcow2(f"{d}/mid.qcow2", "mid", qcow2(f"{d}/base.qcow2", "base", None)))
    out = [q.execute("blockdev-add", chain)]
    out.append(q.execute("blockdev-add", {"driver": "copy-on-read", "node-name": "bad",
                                          "file": "top", "bottom": "nope"}))
    cor = {"driver": "copy-on-read", "node-name": "cor", "file": "top"}
    if bottom:
        cor["bottom"] = bottom
    out.append(q.execute("blockdev-add", cor))
    q.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": f"{d}/n.sock"}})
    assert "error" not in q.execute("block-export-add", {"type": "nbd", "id": "e",
                                                         "node-name": "cor", "name": "c",
                                                         "writable": True})
    uri = f"nbd+unix:///c?socket={d}/n.sock"
    r = subprocess.run(["qemu-io", "-f", "raw", "-c", "read -P 1 0 2M", "-c", "read -P 2 2M 3M",
                        "-c", "read -P 3 5M 1M", "-c", "read -P 0 6M 512k",
                        "-c", "read -P 0 12M 1M", "-c", "write -P 9 3M 4k", "-c",
                        "read -P 9 3M 4k", uri], capture_output=True, text=True)
    out.append((r.returncode, "fail" in r.stdout))
    assert "Sanitizer" not in x.quit()
    m = subprocess.run(["qemu-img", "map", "--output=json", "-f", "qcow2", f"{d}/top.qcow2"],
                       capture_output=True, text=True)
    out.append(m.stdout)
    return out


@pytest.mark.parametrize("bottom", [None, "mid"])
def test_copy_on_read_matches_qsd(bottom):
    ours, theirs = both_sessions(session, bottom)
    assert ours[-2] == (0, False), ours
    # What was read now lies in the top image: the base's data only
    # without a bottom, the middle's either way.
    first = json.loads(ours[-1])[0]
    assert first["start"] == 0 and (first["depth"] == 0) == (bottom is None), ours[-1]
    assert ours == theirs


def test_writes_during_copies_keep_guest_data():
    """Readers copy up while writers overwrite the same ranges: every
    write's data survives (the copy of old data never lands after it)."""
    d = short_dir()
    try:
        make_chain(d)
        x = Daemon(BLOCKD, d, None)
        q = x.q
        q.cmd("blockdev-add", **qcow2(f"{d}/top.qcow2", "top",
                                      qcow2(f"{d}/mid.qcow2", "mid",
                                            qcow2(f"{d}/base.qcow2", "base", None))))
        q.cmd("blockdev-add", driver="copy-on-read", node_name="cor", file="top")
        q.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": f"{d}/n.sock"}})
        assert "error" not in q.execute("block-export-add", {"type": "nbd", "id": "e",
                                                             "node-name": "cor", "name": "c",
                                                             "writable": True})
        uri = f"nbd+unix:///c?socket={d}/n.sock"
        readers = ["aio_read 0 4M"] * 4
        writers = [f"aio_write -P {10 + i} {i}M 64k" for i in range(4)]

        def run(cmds, out):
            out.append(subprocess.run(["qemu-io", "-f", "raw"] +
                                      sum((["-c", c] for c in cmds + ["aio_flush"]), []) +
                                      [uri], capture_output=True, text=True))
        outs = []
        ts = [threading.Thread(target=run, args=(readers, outs)),
              threading.Thread(target=run, args=(writers, outs))]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert all(o.returncode == 0 and "fail" not in o.stdout for o in outs), outs
        r = subprocess.run(["qemu-io", "-f", "raw"] +
                           sum((["-c", f"read -P {10 + i} {i}M 64k"] for i in range(4)), []) +
                           [uri], capture_output=True, text=True)
        assert r.returncode == 0 and "fail" not in r.stdout, r.stdout
        assert "Sanitizer" not in x.quit()
    finally:
        shutil.rmtree(d, ignore_errors=True)
