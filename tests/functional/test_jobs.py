"""Block jobs through QMP: blockdev-mirror, blockdev-backup, transaction,
the job-* and block-job-* verbs, and their events, with a real NBD client
writing to the source while the jobs run."""
import hashlib
import json
import os
import random
import shutil
import subprocess
import threading
import time

import nbd
import pytest

from nbdutil import MiB, sparse_image
from qmp import QMP

SHM = "/dev/shm" if os.path.isdir("/dev/shm") else None


@pytest.fixture
def imgdir(tmp_path):
    d = os.path.join(SHM, f"bdjobs-{os.getpid()}-{random.randrange(1 << 30)}") if SHM \
        else str(tmp_path / "img")
    os.makedirs(d)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def write_random(path, size, seed, chunk=4 * MiB):
    """Fill @path with @size random bytes; returns the bytes (@seed only
    names the call: os.urandom is much faster for a GiB)."""
    data = bytearray()
    with open(path, "wb") as f:
        for off in range(0, size, chunk):
            piece = os.urandom(min(chunk, size - off))
            f.write(piece)
            data += piece
    return bytes(data)


def stamp(ev):
    return (ev["timestamp"]["seconds"], ev["timestamp"]["microseconds"])


def sha(data):
    return hashlib.sha256(data).hexdigest()


def file_sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(8 * MiB)
            if not b:
                return h.hexdigest()
            h.update(b)


class Jobs:
    """blockd with nodes over image files, a QMP monitor and an NBD server."""

    def __init__(self, blockd, sdir, nodes, export=None):
        self.qmp_path = os.path.join(sdir, "qmp.sock")
        self.nbd_path = os.path.join(sdir, "nbd.sock")
        args = []
        for name, spec in nodes.items():
            args += ["--blockdev", f"driver=file,node-name=f-{name},filename={spec['img']}"
                     + spec.get("opts", "")]
            base = f"f-{name}"
            if spec.get("inject"):
                args += ["--blockdev",
                         '{"driver": "blkdebug", "node-name": "d-%s", "image": "%s", '
                         '"inject-error": [%s]}' % (name, base, spec["inject"])]
                base = f"d-{name}"
            args += ["--blockdev", f"driver=raw,node-name={name},file={base}"]
        args += ["--chardev", f"socket,id=m,path={self.qmp_path},server=on,wait=off",
                 "--monitor", "chardev=m",
                 "--nbd-server", f"addr.type=unix,addr.path={self.nbd_path}"]
        if export:
            args += ["--export", f"type=nbd,id=exp,node-name={export},writable=on"]
        self.export = export
        self.daemon = blockd(*args)
        self.daemon.wait_ready()
        self.qmp = QMP(self.qmp_path)
        self.log = []          # every event seen, in arrival order
        self.logged = set()    # their ids

    def client(self):
        h = nbd.NBD()
        h.set_export_name(self.export)
        h.connect_unix(self.nbd_path)
        return h

    def event(self, name, timeout=60, **match):
        """Wait for event @name whose data contains @match; the events
        passed over stay queued for later waits."""
        deadline = time.monotonic() + timeout
        passed = []
        try:
            while True:
                ev = self.qmp.next_event(deadline)
                if ev is None:
                    raise AssertionError(f"no {name} {match}; saw {passed}")
                if id(ev) not in self.logged:
                    self.logged.add(id(ev))
                    self.log.append(ev)
                data = ev.get("data", {})
                if ev["event"] == name and all(data.get(k) == v for k, v in match.items()):
                    return data
                passed.append(ev)
        finally:
            self.qmp.events[:0] = passed

    def statuses(self, job_id):
        """The JOB_STATUS_CHANGE statuses of @job_id seen so far, in order."""
        evs = self.log + [e for e in self.qmp.events if id(e) not in self.logged]
        return [e["data"]["status"] for e in sorted(evs, key=stamp)
                if e["event"] == "JOB_STATUS_CHANGE" and e["data"]["id"] == job_id]

    def job(self, job_id):
        for j in self.qmp.cmd("query-block-jobs"):
            if j["device"] == job_id:
                return j
        return None

    def wait_status(self, job_id, status, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            j = self.job(job_id)
            if j and j["status"] == status:
                return j
            time.sleep(0.02)
        raise AssertionError(f"{job_id} never {status}: {self.job(job_id)}")

    def assert_healthy(self):
        assert self.daemon.proc.poll() is None, self.daemon.stderr_path.read_text()
        err = self.daemon.stderr_path.read_text()
        assert "Sanitizer" not in err and "runtime error" not in err, err


class Writer(threading.Thread):
    """Random writes through NBD, mirrored into @shadow once acknowledged."""

    def __init__(self, jobs, shadow, seed, max_len=64 * 1024):
        super().__init__(daemon=True)
        self.h = jobs.client()
        self.shadow = shadow
        self.rnd = random.Random(seed)
        self.max_len = max_len
        self.stop_flag = threading.Event()
        self.count = 0
        self.error = None

    def run(self):
        try:
            size = len(self.shadow)
            while not self.stop_flag.is_set():
                n = self.rnd.randrange(1, self.max_len // 512 + 1) * 512
                off = self.rnd.randrange(0, (size - n) // 512 + 1) * 512
                data = self.rnd.randbytes(n)
                self.h.pwrite(data, off)
                self.shadow[off:off + n] = data
                self.count += 1
        except Exception as e:  # reported by stop()
            self.error = e

    def stop(self):
        self.stop_flag.set()
        self.join(30)
        assert not self.is_alive()
        assert self.error is None, self.error
        self.h.flush()
        self.h.shutdown()


def mirror_setup(blockd, sdir, imgdir, size, tgt_inject=None):
    src = os.path.join(imgdir, "src.raw")
    tgt = os.path.join(imgdir, "tgt.raw")
    shadow = bytearray(write_random(src, size, 1))
    sparse_image(tgt, size)
    nodes = {"src": {"img": src}, "tgt": {"img": tgt, "inject": tgt_inject}}
    return Jobs(blockd, sdir, nodes, export="src"), src, tgt, shadow


# ---- mirror ---------------------------------------------------------------------------


def test_mirror_complete_under_writes_pivots(blockd, sdir, imgdir):
    size = 256 * MiB
    j, src, tgt, shadow = mirror_setup(blockd, sdir, imgdir, size)
    w = Writer(j, shadow, 7)
    w.start()
    j.qmp.cmd("blockdev-mirror", job_id="m0", device="src", target="tgt", sync="full")
    ready = j.event("BLOCK_JOB_READY", device="m0")
    assert ready["type"] == "mirror" and ready["len"] >= size and ready["offset"] == ready["len"]
    time.sleep(0.5)                      # keep writing while READY
    assert j.job("m0")["ready"] is True
    before = w.count
    j.qmp.cmd("job-complete", id="m0")
    done = j.event("BLOCK_JOB_COMPLETED", device="m0")
    assert "error" not in done
    j.event("JOB_STATUS_CHANGE", id="m0", status="null")
    w.stop()
    assert w.count > before, "no guest write happened during and after READY"
    assert j.statuses("m0")[:3] == ["created", "running", "ready"]
    # The export now writes to the target: its content is the final one.
    assert file_sha(tgt) == sha(shadow)
    h = j.client()
    h.pwrite(b"\xab" * 4096, 0)
    h.flush()
    h.shutdown()
    with open(tgt, "rb") as f:
        assert f.read(4096) == b"\xab" * 4096
    with open(src, "rb") as f:
        assert f.read(4096) != b"\xab" * 4096
    assert j.qmp.cmd("query-block-jobs") == []
    names = [n["node-name"] for n in j.qmp.cmd("query-named-block-nodes")]
    assert not [n for n in names if n.startswith("#")], names   # mirror_top is gone
    j.assert_healthy()


@pytest.mark.parametrize("mode", ["background", "write-blocking"])
def test_mirror_soft_cancel_after_ready_keeps_source(blockd, sdir, imgdir, mode):
    size = 64 * MiB
    j, src, tgt, shadow = mirror_setup(blockd, sdir, imgdir, size)
    w = Writer(j, shadow, 11)
    w.start()
    j.qmp.cmd("blockdev-mirror", job_id="m1", device="src", target="tgt", sync="full",
              copy_mode=mode)
    j.event("BLOCK_JOB_READY", device="m1")
    time.sleep(0.3)
    w.stop()
    # In sync and writing through: actively synced; background never is.
    deadline = time.monotonic() + 5
    while mode == "write-blocking" and not j.job("m1")["actively-synced"]:
        assert time.monotonic() < deadline, j.job("m1")
        time.sleep(0.02)
    assert j.job("m1")["actively-synced"] is (mode == "write-blocking")
    j.qmp.cmd("block-job-cancel", device="m1")
    done = j.event("BLOCK_JOB_COMPLETED", device="m1")
    assert "error" not in done
    j.event("JOB_STATUS_CHANGE", id="m1", status="null")
    assert "aborting" not in j.statuses("m1")
    assert file_sha(tgt) == sha(shadow) == file_sha(src)
    # No pivot: the export still writes to the source.
    h = j.client()
    h.pwrite(b"\xcd" * 512, 512)
    h.flush()
    h.shutdown()
    with open(src, "rb") as f:
        f.seek(512)
        assert f.read(512) == b"\xcd" * 512
    j.assert_healthy()


def test_mirror_write_blocking_is_actively_synced(blockd, sdir, imgdir):
    size = 32 * MiB
    j, src, tgt, shadow = mirror_setup(blockd, sdir, imgdir, size)
    j.qmp.cmd("blockdev-mirror", job_id="m2", device="src", target="tgt", sync="full",
              copy_mode="write-blocking")
    j.event("BLOCK_JOB_READY", device="m2")
    # Each acknowledged write is already on the target.
    h = j.client()
    rnd = random.Random(3)
    for _ in range(50):
        off = rnd.randrange(0, size // 4096) * 4096 + rnd.choice([0, 512, 1536])
        data = rnd.randbytes(rnd.choice([512, 4096, 70000]))
        h.pwrite(data, off)
        with open(tgt, "rb") as f:
            f.seek(off)
            assert f.read(len(data)) == data
    h.shutdown()
    j.qmp.cmd("job-cancel", id="m2")
    j.event("BLOCK_JOB_CANCELLED", device="m2")
    j.assert_healthy()


def test_mirror_change_to_write_blocking(blockd, sdir, imgdir):
    j, src, tgt, shadow = mirror_setup(blockd, sdir, imgdir, 8 * MiB)
    j.qmp.cmd("blockdev-mirror", job_id="m3", device="src", target="tgt", sync="full")
    j.event("BLOCK_JOB_READY", device="m3")
    j.qmp.cmd("block-job-change", id="m3", type="mirror", copy_mode="write-blocking")
    cls, desc = j.qmp.error("block-job-change",
                            {"id": "m3", "type": "mirror", "copy-mode": "background"})
    assert desc == "Change to copy mode 'background' is not implemented"
    cls, desc = j.qmp.error("block-job-change", {"id": "m3", "type": "backup"})
    assert "type" in desc
    j.qmp.cmd("job-complete", id="m3")
    j.event("BLOCK_JOB_COMPLETED", device="m3")
    j.assert_healthy()


def test_mirror_events_and_verbs(blockd, sdir, imgdir):
    j, src, tgt, shadow = mirror_setup(blockd, sdir, imgdir, 16 * MiB)
    q = j.qmp
    cls, desc = q.error("blockdev-mirror", {"device": "src", "target": "tgt", "sync": "full"})
    assert desc == "Invalid job ID ''"
    cls, desc = q.error("blockdev-mirror", {"job-id": "x", "device": "src", "target": "src",
                                            "sync": "full"})
    assert desc == "Can't mirror node into itself"
    cls, desc = q.error("blockdev-mirror", {"job-id": "x", "device": "nope", "target": "tgt",
                                            "sync": "full"})
    assert desc == "Cannot find device='nope' nor node-name='nope'"
    cls, desc = q.error("blockdev-mirror", {"job-id": "x", "device": "src", "target": "tgt",
                                            "sync": "full", "granularity": 1000})
    assert desc == "Parameter 'granularity' expects a power of 2"
    q.cmd("blockdev-mirror", job_id="m4", device="src", target="tgt", sync="full",
          speed=1 * MiB)
    # The source now sits below the job's filter, as in qemu-storage-daemon.
    cls, desc = q.error("blockdev-mirror", {"job-id": "m4", "device": "src", "target": "tgt",
                                            "sync": "full"})
    assert desc == "Need a root block node"
    cls, desc = q.error("blockdev-mirror", {"job-id": "m4", "device": "tgt", "target": "src",
                                            "sync": "full"})
    assert desc == "Job ID 'm4' already in use"
    cls, desc = q.error("job-complete", {"id": "m4"})
    assert desc == "Job 'm4' in state 'running' cannot accept command verb 'complete'"
    cls, desc = q.error("job-finalize", {"id": "m4"})
    assert desc == "Job 'm4' in state 'running' cannot accept command verb 'finalize'"
    cls, desc = q.error("block-job-pause", {"device": "nope"})
    assert (cls, desc) == ("DeviceNotActive", "Block job 'nope' not found")
    cls, desc = q.error("job-pause", {"id": "nope"})
    assert (cls, desc) == ("GenericError", "Job not found")
    q.cmd("job-pause", id="m4")
    cls, desc = q.error("job-pause", {"id": "m4"})
    assert desc == "Job is already paused"
    j.wait_status("m4", "paused")
    info = j.job("m4")
    assert info["paused"] is True and info["speed"] == MiB and info["io-status"] == "ok"
    cls, desc = q.error("block-job-cancel", {"device": "m4"})
    assert desc == "The block job for device 'm4' is currently paused"
    q.cmd("job-resume", id="m4")
    cls, desc = q.error("job-resume", {"id": "m4"})
    assert desc == "Can't resume a job that was not paused"
    cls, desc = q.error("block-job-set-speed", {"device": "m4", "speed": -1})
    assert desc == "Parameter 'speed' expects a non-negative value"
    q.cmd("block-job-set-speed", device="m4", speed=0)
    j.event("BLOCK_JOB_READY", device="m4")
    jobs = q.cmd("query-jobs")
    assert jobs[0]["id"] == "m4" and jobs[0]["type"] == "mirror"
    assert jobs[0]["status"] == "ready"
    q.cmd("job-cancel", id="m4")
    ev = j.event("BLOCK_JOB_CANCELLED", device="m4")
    assert ev["type"] == "mirror"
    j.event("JOB_STATUS_CHANGE", id="m4", status="null")
    assert j.statuses("m4") == ["created", "running", "paused", "running", "ready",
                                "aborting", "concluded", "null"]
    j.assert_healthy()


def test_mirror_manual_finalize_and_dismiss(blockd, sdir, imgdir):
    j, src, tgt, shadow = mirror_setup(blockd, sdir, imgdir, 8 * MiB)
    q = j.qmp
    q.cmd("blockdev-mirror", job_id="m5", device="src", target="tgt", sync="full",
          auto_finalize=False, auto_dismiss=False)
    j.event("BLOCK_JOB_READY", device="m5")
    q.cmd("block-job-complete", device="m5")
    j.event("BLOCK_JOB_PENDING", id="m5")
    assert j.job("m5")["status"] == "pending"
    q.cmd("job-finalize", id="m5")
    j.event("BLOCK_JOB_COMPLETED", device="m5")
    assert j.job("m5")["status"] == "concluded"
    cls, desc = q.error("job-cancel", {"id": "m5"})
    assert desc == "Job 'm5' in state 'concluded' cannot accept command verb 'cancel'"
    q.cmd("job-dismiss", id="m5")
    assert q.cmd("query-jobs") == []
    assert file_sha(tgt) == file_sha(src)
    j.assert_healthy()


@pytest.mark.parametrize("policy,err,expect", [
    ("report", 5, "fail"),
    ("ignore", 5, "ignore"),
    ("stop", 5, "stop"),
    ("enospc", 28, "stop"),
    ("enospc", 5, "fail"),
])
def test_mirror_target_error_policies(blockd, sdir, imgdir, policy, err, expect):
    inject = '{"iotype": "write", "errno": %d, "once": true, "offset": 4194304, ' \
             '"bytes": 4096}' % err
    j, src, tgt, shadow = mirror_setup(blockd, sdir, imgdir, 16 * MiB, tgt_inject=inject)
    q = j.qmp
    q.cmd("blockdev-mirror", job_id="e0", device="src", target="tgt", sync="full",
          on_target_error=policy)
    action = {"fail": "report", "ignore": "ignore", "stop": "stop"}[expect]
    ev = j.event("BLOCK_JOB_ERROR", device="e0")
    assert ev == {"device": "e0", "operation": "write", "action": action}
    if expect == "fail":
        done = j.event("BLOCK_JOB_COMPLETED", device="e0")
        assert done["error"] == ("No space left on device" if err == 28
                                 else "Input/output error")
        j.event("JOB_STATUS_CHANGE", id="e0", status="null")
        # The source keeps its users: the export still serves it.
        h = j.client()
        assert h.pread(512, 0) == bytes(shadow[:512])
        h.shutdown()
        return
    if expect == "stop":
        info = j.wait_status("e0", "paused")
        assert info["io-status"] == ("nospace" if err == 28 else "failed")
        q.cmd("job-resume", id="e0")
    j.event("BLOCK_JOB_READY", device="e0")
    assert j.job("e0")["io-status"] == "ok"
    q.cmd("job-complete", id="e0")
    assert "error" not in j.event("BLOCK_JOB_COMPLETED", device="e0")
    assert file_sha(tgt) == sha(shadow)
    j.assert_healthy()


# ---- backup -----------------------------------------------------------------------------


def test_backup_is_point_in_time_under_overwrite(blockd, sdir, imgdir):
    size = 128 * MiB
    src = os.path.join(imgdir, "src.raw")
    tgt = os.path.join(imgdir, "tgt.raw")
    original = write_random(src, size, 21)
    sparse_image(tgt, size)
    j = Jobs(blockd, sdir, {"src": {"img": src}, "tgt": {"img": tgt}}, export="src")
    # Throttled: the overwrite below certainly races with the copy.
    j.qmp.cmd("blockdev-backup", job_id="b0", device="src", target="tgt", sync="full",
              speed=64 * MiB)
    pattern = bytes([0x5a]) * MiB
    h = j.client()
    for off in range(0, size, MiB):
        h.pwrite(pattern, off)
        if off == 0:
            # The overwrite races with the copy (copy-before-write then
            # copies what the throttled job has not reached yet).
            info = j.job("b0")
            assert info and info["offset"] < size // 2, info
    h.flush()
    done = j.event("BLOCK_JOB_COMPLETED", device="b0", timeout=60)
    assert "error" not in done and done["offset"] == done["len"] == size
    j.event("JOB_STATUS_CHANGE", id="b0", status="null")
    assert j.statuses("b0") == ["created", "running", "waiting", "pending", "concluded",
                                "null"]
    assert file_sha(tgt) == sha(original)
    assert file_sha(src) == sha(pattern * (size // MiB))
    assert h.pread(4096, 0) == pattern[:4096]
    h.shutdown()
    names = [n["node-name"] for n in j.qmp.cmd("query-named-block-nodes")]
    assert not [n for n in names if n.startswith("#")], names
    j.assert_healthy()


def test_backup_filter_node_name_and_cancel(blockd, sdir, imgdir):
    size = 32 * MiB
    src = os.path.join(imgdir, "src.raw")
    tgt = os.path.join(imgdir, "tgt.raw")
    write_random(src, size, 5)
    sparse_image(tgt, size)
    j = Jobs(blockd, sdir, {"src": {"img": src}, "tgt": {"img": tgt}})
    q = j.qmp
    cls, desc = q.error("blockdev-backup", {"job-id": "b", "device": "src", "target": "tgt",
                                            "sync": "full", "compress": True})
    assert desc == "Compression is not supported for this drive "   # QEMU's, space and all
    q.cmd("blockdev-backup", job_id="b1", device="src", target="tgt", sync="full",
          speed=MiB, filter_node_name="cbw0")
    nodes = {n["node-name"]: n for n in q.cmd("query-named-block-nodes")}
    assert nodes["cbw0"]["drv"] == "copy-before-write"
    cls, desc = q.error("blockdev-del", {"node-name": "tgt"})
    assert "in use" in desc
    q.cmd("job-cancel", id="b1")
    ev = j.event("BLOCK_JOB_CANCELLED", device="b1")
    assert ev["offset"] < ev["len"] == size
    j.event("JOB_STATUS_CHANGE", id="b1", status="null")
    nodes = [n["node-name"] for n in q.cmd("query-named-block-nodes")]
    assert "cbw0" not in nodes
    q.cmd("blockdev-del", node_name="tgt")
    j.assert_healthy()


def test_transaction_grouped_backups_fail_together(blockd, sdir, imgdir):
    size = 16 * MiB
    nodes = {}
    for n in ("s1", "s2", "t1", "t2"):
        p = os.path.join(imgdir, n + ".raw")
        if n.startswith("s"):
            write_random(p, size, hash(n) & 0xffff)
        else:
            sparse_image(p, size)
        nodes[n] = {"img": p}
    nodes["t2"]["inject"] = '{"iotype": "write", "errno": 5, "offset": 8388608, "bytes": 1}'
    j = Jobs(blockd, sdir, nodes)
    q = j.qmp
    actions = [
        {"type": "blockdev-backup", "data": {"job-id": "g1", "device": "s1", "target": "t1",
                                             "sync": "full", "speed": 4 * MiB}},
        {"type": "blockdev-backup", "data": {"job-id": "g2", "device": "s2", "target": "t2",
                                             "sync": "full"}},
    ]
    q.cmd("transaction", actions=actions, properties={"completion-mode": "grouped"})
    failed = j.event("BLOCK_JOB_COMPLETED", device="g2")
    assert failed["error"] == "Input/output error"
    j.event("BLOCK_JOB_CANCELLED", device="g1")
    for job in ("g1", "g2"):
        j.event("JOB_STATUS_CHANGE", id=job, status="null")
        st = j.statuses(job)
        assert "aborting" in st and "pending" not in st, (job, st)
    assert q.cmd("query-jobs") == []
    j.assert_healthy()


def test_transaction_abort_and_errors(blockd, sdir, imgdir):
    size = 8 * MiB
    nodes = {}
    for n in ("s1", "t1"):
        p = os.path.join(imgdir, n + ".raw")
        sparse_image(p, size)
        nodes[n] = {"img": p}
    j = Jobs(blockd, sdir, nodes)
    q = j.qmp
    backup = {"type": "blockdev-backup", "data": {"job-id": "a1", "device": "s1",
                                                  "target": "t1", "sync": "full"}}
    cls, desc = q.error("transaction", {"actions": [backup, {"type": "abort", "data": {}}]})
    assert desc == "Transaction aborted using Abort action"
    cls, desc = q.error("transaction", {"actions": [backup, {"type": "abort", "data": {}}],
                                        "properties": {"completion-mode": "grouped"}})
    # As qemu-storage-daemon: an abort action aborts, grouped or not.
    assert desc == "Transaction aborted using Abort action"
    assert q.cmd("query-jobs") == []
    nodes = [n["node-name"] for n in q.cmd("query-named-block-nodes")]
    assert not [n for n in nodes if n.startswith("#")], nodes
    # The job that was created and undone left its id free.
    q.cmd("transaction", actions=[backup])
    j.event("BLOCK_JOB_COMPLETED", device="a1")
    j.assert_healthy()


def test_quit_with_running_jobs(blockd, sdir, imgdir):
    j, src, tgt, shadow = mirror_setup(blockd, sdir, imgdir, 16 * MiB)
    j.qmp.cmd("blockdev-mirror", job_id="q0", device="src", target="tgt", sync="full",
              speed=MiB)
    j.qmp.cmd("quit")
    assert j.daemon.proc.wait(timeout=20) == 0


# ---- jobs in an iothread ---------------------------------------------------------------


def test_mirror_in_iothread_under_writes(blockd, sdir, imgdir):
    """x-blockdev-set-iothread moves the source; the mirror job then runs in
    the iothread while the export writes from another iothread."""
    size = 64 * MiB
    src = os.path.join(imgdir, "src.raw")
    tgt = os.path.join(imgdir, "tgt.raw")
    shadow = bytearray(write_random(src, size, 31))
    sparse_image(tgt, size)
    j = Jobs(blockd, sdir, {"src": {"img": src}, "tgt": {"img": tgt}})
    q = j.qmp
    q.cmd("object-add", qom_type="iothread", id="io0")
    q.cmd("object-add", qom_type="iothread", id="io1")
    # A node that is not a root moves with everything connected to it,
    # as in qemu-storage-daemon.
    q.cmd("x-blockdev-set-iothread", node_name="f-src", iothread="io0")
    cls, desc = q.error("x-blockdev-set-iothread", {"node-name": "nope", "iothread": "io0"})
    assert desc == "Failed to find node with node-name='nope'"
    cls, desc = q.error("x-blockdev-set-iothread", {"node-name": "src", "iothread": "nope"})
    assert desc == "Cannot find iothread nope"
    q.cmd("x-blockdev-set-iothread", node_name="src", iothread="io0")
    q.cmd("block-export-add", type="nbd", id="exp", node_name="src", writable=True,
          iothread="io1")
    j.export = "src"
    cls, desc = q.error("x-blockdev-set-iothread", {"node-name": "src", "iothread": None})
    assert "associated with a BlockBackend" in desc
    # The export's iothread took the node (and so the job to come) along.
    cls, desc = q.error("object-del", {"id": "io1"})
    assert desc == "object 'io1' is in use, can not be deleted"
    w = Writer(j, shadow, 41)
    w.start()
    q.cmd("blockdev-mirror", job_id="mi", device="src", target="tgt", sync="full")
    j.event("BLOCK_JOB_READY", device="mi")
    q.cmd("job-pause", id="mi")
    j.wait_status("mi", "standby")
    q.cmd("job-resume", id="mi")
    time.sleep(0.3)
    q.cmd("job-complete", id="mi")
    assert "error" not in j.event("BLOCK_JOB_COMPLETED", device="mi")
    j.event("JOB_STATUS_CHANGE", id="mi", status="null")
    w.stop()
    assert file_sha(tgt) == sha(shadow)
    q.cmd("block-export-del", id="exp")
    j.event("BLOCK_EXPORT_DELETED", id="exp")
    q.cmd("x-blockdev-set-iothread", node_name="src", iothread=None)
    j.assert_healthy()


def test_mirror_zeroes_unmap(blockd, sdir, imgdir):
    """Zero ranges are written as zeroes (no data moves) and deallocated on
    the target.  blockdev-mirror has no "unmap" member (as in
    qemu-storage-daemon): it is refused, not ignored."""
    unmap = True
    size = 16 * MiB
    src = os.path.join(imgdir, "src.raw")
    tgt = os.path.join(imgdir, "tgt.raw")
    sparse_image(src, size)
    with open(src, "r+b") as f:
        f.write(os.urandom(MiB))
    write_random(tgt, size, 0)
    # The target allows deallocation (discard=unmap), as QEMU requires.
    j = Jobs(blockd, sdir, {"src": {"img": src}, "tgt": {"img": tgt, "opts": ",discard=unmap"}})
    r = j.qmp.execute("blockdev-mirror", {"job-id": "z", "device": "src", "target": "tgt",
                                          "sync": "full", "unmap": False})
    assert r["error"]["desc"] == "Parameter 'unmap' is unexpected"
    j.qmp.cmd("blockdev-mirror", job_id="z", device="src", target="tgt", sync="full")
    j.event("BLOCK_JOB_READY", device="z")
    j.qmp.cmd("job-complete", id="z")
    j.event("BLOCK_JOB_COMPLETED", device="z")
    assert file_sha(tgt) == file_sha(src)
    allocated = os.stat(tgt).st_blocks * 512
    if unmap:
        assert allocated <= 2 * MiB, allocated
    else:
        assert allocated >= size, allocated
    j.assert_healthy()


# ---- sync modes, replaces, backup error policy ------------------------------------


def test_mirror_sync_none_copies_only_new_writes(blockd, sdir, imgdir):
    j, src, tgt, shadow = mirror_setup(blockd, sdir, imgdir, 8 * MiB)
    j.qmp.cmd("blockdev-mirror", job_id="n0", device="src", target="tgt", sync="none")
    j.event("BLOCK_JOB_READY", device="n0")
    h = j.client()
    h.pwrite(b"\x77" * 65536, 3 * MiB)
    h.flush()
    h.shutdown()
    j.qmp.cmd("job-complete", id="n0")
    j.event("BLOCK_JOB_COMPLETED", device="n0")
    with open(tgt, "rb") as f:
        data = f.read()
    assert data[3 * MiB:3 * MiB + 65536] == b"\x77" * 65536
    assert data[:3 * MiB] == bytes(3 * MiB)            # old data was not copied
    j.assert_healthy()


def qemu_img(*args):
    p = subprocess.run(["qemu-img", *args], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout


def test_mirror_sync_top_over_qcow2_backing(blockd, sdir, imgdir):
    """sync=top copies only what the top qcow2 layer holds; the target,
    with the same backing file, then reads like the source."""
    base = os.path.join(imgdir, "base.qcow2")
    top = os.path.join(imgdir, "top.qcow2")
    tgt = os.path.join(imgdir, "tgt.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", base, "16M")
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 1M", base],
                   check=True, capture_output=True)
    qemu_img("create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x22 4M 1M", top],
                   check=True, capture_output=True)
    qemu_img("create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", tgt)
    j = Jobs(blockd, sdir, {})
    q = j.qmp
    q.cmd("blockdev-add", driver="qcow2", node_name="top",
          file={"driver": "file", "filename": top})
    q.cmd("blockdev-add", driver="qcow2", node_name="tgt",
          file={"driver": "file", "filename": tgt})
    q.cmd("blockdev-mirror", job_id="t0", device="top", target="tgt", sync="top")
    ready = j.event("BLOCK_JOB_READY", device="t0")
    assert ready["len"] < 4 * MiB, ready          # the top layer only, not 16 MiB
    q.cmd("job-complete", id="t0")
    assert "error" not in j.event("BLOCK_JOB_COMPLETED", device="t0")
    j.event("JOB_STATUS_CHANGE", id="t0", status="null")
    q.cmd("blockdev-del", node_name="top")
    q.cmd("quit")
    j.daemon.proc.wait(20)
    qemu_img("check", tgt)
    qemu_img("compare", top, tgt)
    mapping = json.loads(qemu_img("map", "--output=json", tgt))
    own = [m for m in mapping if m["depth"] == 0 and m["data"]]
    assert [(m["start"], m["length"]) for m in own] == [(4 * MiB, MiB)], mapping


def test_mirror_replaces_a_node_below_a_filter(blockd, sdir, imgdir):
    """device is a filter (blkdebug without rules) over "disk"; replaces=disk
    puts the target under the filter, whose user (the export) then writes
    to the target."""
    size = 8 * MiB
    disk = os.path.join(imgdir, "disk.raw")
    tgt = os.path.join(imgdir, "tgt.raw")
    write_random(disk, size, 3)
    sparse_image(tgt, size)
    j = Jobs(blockd, sdir, {"disk": {"img": disk}, "tgt": {"img": tgt}})
    q = j.qmp
    q.cmd("blockdev-add", driver="blkdebug", node_name="dbg", image="disk")
    q.cmd("block-export-add", type="nbd", id="exp", node_name="dbg", writable=True)
    j.export = "dbg"
    cls, desc = q.error("blockdev-mirror", {"job-id": "r0", "device": "dbg", "target": "tgt",
                                            "sync": "full", "replaces": "f-tgt"})
    assert desc.startswith("Cannot replace 'f-tgt' by a node mirrored from 'dbg'")
    q.cmd("blockdev-mirror", job_id="r0", device="dbg", target="tgt", sync="full",
          replaces="disk")
    j.event("BLOCK_JOB_READY", device="r0")
    q.cmd("job-complete", id="r0")
    assert "error" not in j.event("BLOCK_JOB_COMPLETED", device="r0")
    j.event("JOB_STATUS_CHANGE", id="r0", status="null")
    h = j.client()
    h.pwrite(b"\x42" * 4096, 0)
    h.flush()
    h.shutdown()
    with open(tgt, "rb") as f:
        assert f.read(4096) == b"\x42" * 4096
    with open(disk, "rb") as f:
        assert f.read(4096) != b"\x42" * 4096
    j.assert_healthy()


def test_backup_sync_none_keeps_only_overwritten_data(blockd, sdir, imgdir):
    size = 8 * MiB
    src = os.path.join(imgdir, "src.raw")
    tgt = os.path.join(imgdir, "tgt.raw")
    original = write_random(src, size, 4)
    sparse_image(tgt, size)
    j = Jobs(blockd, sdir, {"src": {"img": src}, "tgt": {"img": tgt}}, export="src")
    j.qmp.cmd("blockdev-backup", job_id="bn", device="src", target="tgt", sync="none")
    h = j.client()
    h.pwrite(b"\x99" * 65536, 2 * MiB)
    h.flush()
    h.shutdown()
    j.qmp.cmd("job-cancel", id="bn")
    j.event("BLOCK_JOB_CANCELLED", device="bn")
    j.event("JOB_STATUS_CHANGE", id="bn", status="null")
    with open(tgt, "rb") as f:
        data = f.read()
    assert data[2 * MiB:2 * MiB + 65536] == original[2 * MiB:2 * MiB + 65536]
    assert data[:2 * MiB] == bytes(2 * MiB)
    j.assert_healthy()


def test_backup_target_error_stop_then_resume(blockd, sdir, imgdir):
    size = 16 * MiB
    src = os.path.join(imgdir, "src.raw")
    tgt = os.path.join(imgdir, "tgt.raw")
    original = write_random(src, size, 8)
    sparse_image(tgt, size)
    inject = '{"iotype": "write", "errno": 5, "once": true, "offset": 8388608, "bytes": 1}'
    j = Jobs(blockd, sdir, {"src": {"img": src}, "tgt": {"img": tgt, "inject": inject}})
    j.qmp.cmd("blockdev-backup", job_id="be", device="src", target="tgt", sync="full",
              on_target_error="stop")
    assert j.event("BLOCK_JOB_ERROR", device="be") == {"device": "be", "operation": "write",
                                                         "action": "stop"}
    info = j.wait_status("be", "paused")
    assert info["io-status"] == "failed"
    j.qmp.cmd("job-resume", id="be")
    assert "error" not in j.event("BLOCK_JOB_COMPLETED", device="be")
    assert file_sha(tgt) == sha(original)
    j.assert_healthy()
