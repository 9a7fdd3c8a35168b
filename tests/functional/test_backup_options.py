"""Backup options: `compress` against qemu-storage-daemon (the targets hold
the same compressed clusters: same content, `qemu-img check` and map,
even the same file length) and `discard-source` (newer than
qemu-storage-daemon 7.2: blockd alone)."""
import shutil
import subprocess
import time

import pytest

from conftest import BLOCKD
from nbdutil import short_dir
from test_bitmaps_persistent import Daemon
from test_qsd_compat import QSD

MiB = 1024 * 1024


def img(*args):
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def out(*args):
    return subprocess.run(["qemu-img", *args], capture_output=True, text=True).stdout


def wait_jobs(q, timeout=60):
    deadline = time.monotonic() + timeout
    while q.cmd("query-block-jobs"):
        assert time.monotonic() < deadline, "job did not end"
        time.sleep(0.02)


def wait_jobs_concluded(q, timeout=60):
    deadline = time.monotonic() + timeout
    while any(j["status"] != "concluded" for j in q.cmd("query-jobs")):
        assert time.monotonic() < deadline, "job did not end"
        time.sleep(0.02)


def compress_session(prog, d):
    img("create", "-f", "qcow2", f"{d}/s.qcow2", "5M")
    img("create", "-f", "qcow2", "-o", "cluster_size=131072", f"{d}/t128.qcow2", "5M")
    img("create", "-f", "qcow2", f"{d}/t64.qcow2", "5M")
    img("create", "-f", "qcow2", "-o", "refcount_bits=1", f"{d}/trc1.qcow2", "5M")
    img("create", "-f", "qcow2", f"{d}/tused.qcow2", "5M")
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 1 1M 64k", f"{d}/tused.qcow2"],
                   check=True, capture_output=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 7 0 1M", "-c", "write -P 0 1M 1M",
                    "-c", "write 2M 4k", "-c", "write -z 3M 1M", "-c", "write -P 3 4608k 512k",
                    f"{d}/s.qcow2"], check=True, capture_output=True)
    open(f"{d}/r.raw", "wb").truncate(5 * MiB)
    x = Daemon(prog, d, None)
    res = []
    targets = ("t128", "t64", "trc1", "tused")
    for name in ("s",) + targets:
        f = f"{name}.qcow2"
        res.append(x.q.execute("blockdev-add", {"driver": "qcow2", "node-name": name,
                                                "file": {"driver": "file",
                                                         "filename": f"{d}/{f}"}}))
    res.append(x.q.execute("blockdev-add", {"driver": "raw", "node-name": "r",
                                            "file": {"driver": "file",
                                                     "filename": f"{d}/r.raw"}}))
    res.append(x.q.execute("blockdev-backup", {"job-id": "j0", "device": "s", "target": "r",
                                               "sync": "full", "compress": True}))
    for t in targets:
        res.append(x.q.execute("blockdev-backup", {"job-id": t, "device": "s", "target": t,
                                                   "sync": "full", "compress": True,
                                                   "auto-dismiss": False}))
        wait_jobs_concluded(x.q)
        # a cluster already written cannot be compressed over: the job fails
        res.append([(j["status"], "error" in j) for j in x.q.cmd("query-jobs")])
        res.append(x.q.execute("job-dismiss", {"id": t}))
        res.append(x.q.execute("blockdev-del", {"node-name": t}))
        if t == "tused":
            continue             # how far the failed job got may differ
        res.append(out("compare", "-U", f"{d}/s.qcow2", f"{d}/{t}.qcow2"))
        res.append(out("check", "-U", f"{d}/{t}.qcow2"))
        res.append(out("map", "-U", "--output=json", f"{d}/{t}.qcow2"))
    res.append("Sanitizer" in x.quit())
    return res


def test_compressed_backup_matches_qsd():
    if not QSD:
        pytest.fail("qemu-storage-daemon is not installed (scripts/install-deps.sh)")
    results = []
    for prog in (QSD, BLOCKD):
        d = short_dir()
        try:
            results.append(compress_session(prog, d))
        finally:
            shutil.rmtree(d, ignore_errors=True)
    for i, (a, b) in enumerate(zip(*results)):
        assert b == a, f"step {i}: qemu-storage-daemon {a!r}, blockd {b!r}"
    assert "Images are identical" in results[1][11]
    assert "100.00% compressed clusters" in results[1][12]
    assert "Images are identical" in results[1][25]      # 1-bit refcounts
    assert results[1][-4] == [("concluded", True)]       # tused


@pytest.mark.parametrize("sync", ["full", "top"])
def test_discard_source(sync):
    """What was copied is discarded on the source: its clusters go (the
    source is a temporary image: fleecing, or a migration's last pass)."""
    d = short_dir()
    try:
        img("create", "-f", "qcow2", f"{d}/s.qcow2", "8M")
        img("create", "-f", "qcow2", f"{d}/t.qcow2", "8M")
        subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 5 0 3M",
                        "-c", "write -P 6 5M 2M", f"{d}/s.qcow2"], check=True,
                       capture_output=True)
        shutil.copy(f"{d}/s.qcow2", f"{d}/orig.qcow2")
        x = Daemon(BLOCKD, d, None)
        for name in ("s", "t"):
            r = x.q.execute("blockdev-add", {"driver": "qcow2", "node-name": name,
                                             "discard": "unmap",
                                             "file": {"driver": "file",
                                                      "filename": f"{d}/{name}.qcow2"}})
            assert r == {"return": {}}, r
        r = x.q.execute("blockdev-backup", {"job-id": "j", "device": "s", "target": "t",
                                            "sync": sync, "discard-source": True})
        assert r == {"return": {}}, r
        wait_jobs(x.q)
        assert "Sanitizer" not in x.quit()
        assert "Images are identical" in out("compare", f"{d}/orig.qcow2", f"{d}/t.qcow2")
        m = out("map", "--output=json", f"{d}/s.qcow2")
        assert '"data": true' not in m, m
        assert out("check", f"{d}/s.qcow2").startswith("No errors")
    finally:
        shutil.rmtree(d, ignore_errors=True)
