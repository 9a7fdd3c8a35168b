"""qcow2's discard-no-unref (QEMU 8.1's; qemu-storage-daemon 7.2 does not
have it): discarded clusters read as zeroes but keep their storage (the
map still shows where they lie, and qemu-img check agrees); without it
they are freed.  Refused on version 2 images."""
import json
import shutil
import subprocess

import pytest

from conftest import BLOCKD
from nbdutil import short_dir
from test_bitmaps_persistent import Daemon


def run(img, d, no_unref):
    x = Daemon(BLOCKD, d, None)
    q = x.q
    opts = {"driver": "qcow2", "node-name": "q", "discard": "unmap",
            "file": {"driver": "file", "filename": img}}
    if no_unref:
        opts["discard-no-unref"] = True
    q.cmd("blockdev-add", **opts)
    q.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": f"{d}/n.sock"}})
    assert "error" not in q.execute("block-export-add", {"type": "nbd", "id": "e",
                                                         "node-name": "q", "name": "q",
                                                         "writable": True})
    r = subprocess.run(["qemu-io", "-f", "raw", "-c", "discard 1M 1M", "-c", "read -P 0 1M 1M",
                        "-c", "read -P 7 0 1M", f"nbd+unix:///q?socket={d}/n.sock"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "fail" not in r.stdout, r.stdout
    assert "Sanitizer" not in x.quit()
    chk = subprocess.run(["qemu-img", "check", img], capture_output=True, text=True)
    assert chk.returncode == 0, chk.stdout
    m = json.loads(subprocess.run(["qemu-img", "map", "--output=json", img],
                                  capture_output=True, text=True).stdout)
    return [e for e in m if e["start"] == 1024 * 1024][0]


@pytest.mark.parametrize("no_unref", [False, True])
def test_discard_keeps_or_frees_the_clusters(no_unref):
    d = short_dir()
    try:
        img = f"{d}/a.qcow2"
        subprocess.run(["qemu-img", "create", "-f", "qcow2", img, "4M"], check=True,
                       capture_output=True)
        subprocess.run(["qemu-io", "-c", "write -P 7 0 2M", img], check=True,
                       capture_output=True)
        e = run(img, d, no_unref)
        assert e["zero"] is True and e["data"] is False
        # Kept: the clusters still have their place in the file.
        assert ("offset" in e) == no_unref, e
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_refused_on_version_2():
    d = short_dir()
    try:
        img = f"{d}/a.qcow2"
        subprocess.run(["qemu-img", "create", "-f", "qcow2", "-o", "compat=0.10", img, "4M"],
                       check=True, capture_output=True)
        x = Daemon(BLOCKD, d, None)
        r = x.q.execute("blockdev-add", {"driver": "qcow2", "node-name": "q",
                                         "discard-no-unref": True,
                                         "file": {"driver": "file", "filename": img}})
        assert r["error"]["desc"] == "discard-no-unref is only supported since qcow2 version 3"
        assert "Sanitizer" not in x.quit()
    finally:
        shutil.rmtree(d, ignore_errors=True)
