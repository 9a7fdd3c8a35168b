"""Push-mode backups end to end, against both daemons: a full backup that
starts a dirty bitmap in the same transaction, then three incremental
backups into qcow2 overlays of the previous one, while an NBD client keeps
writing -- before each backup and while it runs.  Each restored chain
(`qemu-img convert` through the overlays) must equal the disk exactly as it
was when that backup started."""
import hashlib
import random
import shutil
import subprocess
import threading
import time

import nbd
import pytest

from conftest import BLOCKD
from nbdutil import short_dir
from test_bitmaps_persistent import Daemon
from test_qsd_compat import QSD

MiB = 1024 * 1024
SIZE = 32 * MiB


class Writer(threading.Thread):
    """Random writes of 4 KiB .. 256 KiB over NBD until stopped."""

    def __init__(self, uri, seed):
        super().__init__(daemon=True)
        self.uri, self.rng = uri, random.Random(seed)
        self.stop_flag = threading.Event()
        self.count = 0
        self.error = None

    def run(self):
        try:
            h = nbd.NBD()
            h.connect_uri(self.uri)
            while not self.stop_flag.is_set():
                n = self.rng.choice([4096, 65536, 262144])
                off = self.rng.randrange(0, SIZE - n, 4096)
                h.pwrite(self.rng.randbytes(n), off)
                self.count += 1
            h.flush()
            h.shutdown()
        except Exception as e:          # reported by stop()
            self.error = e

    def stop(self):
        self.stop_flag.set()
        self.join(30)
        assert self.error is None, self.error


def image_sha(path, fmt, out):
    """SHA-256 of the disk an image (chain) or NBD URI shows."""
    r = subprocess.run(["qemu-img", "convert", "-U", "-f", fmt, "-O", "raw", path, out],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    with open(out, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    subprocess.run(["rm", "-f", out])
    return digest


def wait_job(q, job, timeout=120):
    deadline = time.monotonic() + timeout
    while True:
        jobs = {j["id"]: j for j in q.cmd("query-jobs")}
        if jobs[job]["status"] == "concluded":
            assert "error" not in jobs[job], jobs[job]
            q.cmd("job-dismiss", id=job)
            return
        assert time.monotonic() < deadline, jobs
        time.sleep(0.05)


def backup_chain(prog, d):
    src = f"{d}/src.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", src, str(SIZE)], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 24M", src],
                   check=True, capture_output=True)
    x = Daemon(prog, d, None)
    q = x.q
    q.cmd("blockdev-add", driver="qcow2", node_name="src",
          file={"driver": "file", "filename": src})
    q.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": f"{d}/n.sock"}})
    q.execute("block-export-add", {"type": "nbd", "id": "e", "node-name": "src", "name": "src",
                                   "writable": True})
    uri = f"nbd+unix:///src?socket={d}/n.sock"
    expected, images, prev = [], [], None
    for i in range(4):
        w = Writer(uri, seed=i)
        w.start()
        time.sleep(0.2)                     # the guest writes before the backup...
        w.stop()
        name = f"b{i}"
        path = f"{d}/{name}.qcow2"
        backing = ["-b", prev, "-F", "qcow2"] if prev else []
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", *backing, path, str(SIZE)],
                       check=True)
        q.cmd("blockdev-add", driver="qcow2", node_name=name, backing=None,
              file={"driver": "file", "filename": path})
        # the disk as this backup must capture it
        expected.append(image_sha(uri, "raw", f"{d}/expected.raw"))
        if i == 0:
            q.cmd("transaction", actions=[
                {"type": "blockdev-backup", "data": {"job-id": name, "device": "src",
                                                     "target": name, "sync": "full",
                                                     "speed": 16 * MiB,
                                                     "auto-dismiss": False}},
                {"type": "block-dirty-bitmap-add", "data": {"node": "src", "name": "inc"}}])
        else:
            q.cmd("blockdev-backup", job_id=name, device="src", target=name,
                  sync="incremental", bitmap="inc", auto_dismiss=False, speed=8 * MiB)
        w = Writer(uri, seed=100 + i)       # ...and while it runs
        w.start()
        wait_job(q, name)
        w.stop()
        assert w.count > 10, "too few writes during the backup"
        q.cmd("blockdev-del", node_name=name)
        images.append(path)
        prev = path
    x.quit()
    return expected, [image_sha(p, "qcow2", f"{d}/restored.raw") for p in images]


@pytest.mark.parametrize("prog", ["qsd", "blockd"])
def test_full_and_three_incrementals_restore_exactly(prog):
    if prog == "qsd" and not QSD:
        pytest.fail("qemu-storage-daemon is not installed (scripts/install-deps.sh)")
    d = short_dir()
    try:
        expected, restored = backup_chain(QSD if prog == "qsd" else BLOCKD, d)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    assert len(set(expected)) == 4, "the writer changed nothing between backups"
    for i, (e, r) in enumerate(zip(expected, restored)):
        assert r == e, f"backup {i} does not restore the disk as it was at its start"
