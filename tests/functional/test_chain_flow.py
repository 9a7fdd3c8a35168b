"""The chain flow a VM manager drives while its guest writes: three external
snapshots, a stream, an intermediate commit, an active commit and a resize,
with the disk exported from an iothread and an NBD client writing all the
time.  Every write the client got acknowledged is in the final image, and
qemu-img finds every image clean.  Runs under TSan and ASan too."""
import json
import os
import random
import subprocess
import time
import threading

import pytest

from nbdutil import MiB, wait_for
from test_jobs import Jobs, Writer, imgdir, write_random  # noqa: F401 (fixture)

SIZE = 32 * MiB


def qemu_img(*args):
    return subprocess.run(["qemu-img", *args], check=True, capture_output=True,
                          text=True).stdout


def add_qcow2(q, name, path, backing=False):
    opts = {"driver": "qcow2", "node-name": name,
            "file": {"driver": "file", "filename": path}}
    if backing is None:
        opts["backing"] = None
    q.cmd("blockdev-add", **opts)


def snapshot(j, imgdir, top, name):
    """libvirt's way: qemu-img writes the overlay's header, the daemon opens
    it without a backing file and puts it on top."""
    path = os.path.join(imgdir, f"{name}.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", "-u", "-b", os.path.join(imgdir, f"{top}.qcow2"),
             "-F", "qcow2", path, str(SIZE))
    add_qcow2(j.qmp, name, path, backing=None)
    j.qmp.cmd("blockdev-snapshot", node=top, overlay=name)


def run_job(j, verb, job_id, **args):
    j.qmp.cmd(verb, job_id=job_id, **args)
    done = j.event("BLOCK_JOB_COMPLETED", device=job_id)
    assert "error" not in done, done
    j.event("JOB_STATUS_CHANGE", id=job_id, status="null")


def backing_chain(path):
    out = json.loads(qemu_img("info", "--output=json", "--backing-chain", path))
    return [os.path.basename(i["filename"]) for i in out]


@pytest.mark.parametrize("move", [False, True, "split"], ids=["io0", "moved", "split"])
def test_snapshot_stream_commit_resize_under_writes(blockd, sdir, imgdir, move):  # noqa: F811
    """split: the node (and the jobs) in io0, the export's connection served
    from io1."""
    raw = os.path.join(imgdir, "seed.raw")
    shadow = bytearray(write_random(raw, SIZE, 1))
    qemu_img("convert", "-f", "raw", "-O", "qcow2", raw, os.path.join(imgdir, "base.qcow2"))
    os.unlink(raw)
    j = Jobs(blockd, sdir, {})
    q = j.qmp
    for io in ("io0", "io1"):
        q.cmd("object-add", qom_type="iothread", id=io)
    add_qcow2(q, "base", os.path.join(imgdir, "base.qcow2"))
    where = {"iothread": "io0"}
    if move == "split":
        q.cmd("x-blockdev-set-iothread", node_name="base", iothread="io0")
        where = {"iothreads": ["io1"]}
    r = q.execute("block-export-add", dict({"type": "nbd", "id": "e", "node-name": "base",
                                            "name": "vm", "writable": True}, **where))
    assert "error" not in r, r
    j.export = "vm"
    w = Writer(j, shadow, 3)
    w.start()
    try:
        for prev, name in (("base", "s1"), ("s1", "s2"), ("s2", "s3")):
            snapshot(j, imgdir, prev, name)
        # s2 is pulled into s3; s1 stays below.
        q.cmd("block-stream", job_id="st", device="s3", base_node="s1",
              speed=1 if move is True else 0)   # a chunk, then a long sleep
        if move is True:
            # The whole component, job and export included, moves while
            # the stream runs.
            q.cmd("x-blockdev-set-iothread", node_name="s3", iothread="io1", force=True)
            q.cmd("block-job-set-speed", device="st", speed=0)
        done = j.event("BLOCK_JOB_COMPLETED", device="st")
        assert "error" not in done, done
        j.event("JOB_STATUS_CHANGE", id="st", status="null")
        # s1 goes into base; s3 then sits directly on base.
        run_job(j, "block-commit", "ci", device="s3", top_node="s1", base_node="base")
        nodes = {n["node-name"]: n for n in q.cmd("query-named-block-nodes")}
        assert nodes["s3"]["backing_file_depth"] == 1
        assert nodes["s3"]["image"]["backing-image"]["filename"].endswith("base.qcow2")
        # The active layer goes into base; the export follows base.
        q.cmd("block-commit", job_id="ac", device="s3")
        j.event("BLOCK_JOB_READY", device="ac")
        q.cmd("job-complete", id="ac")
        done = j.event("BLOCK_JOB_COMPLETED", device="ac")
        assert "error" not in done, done
        j.event("JOB_STATUS_CHANGE", id="ac", status="null")
        assert q.cmd("query-block-exports")[0]["node-name"] == "base"
        q.cmd("block_resize", node_name="base", size=SIZE + 8 * MiB)
    finally:
        w.stop()
    j.assert_healthy()
    h = j.client()
    assert h.get_size() == SIZE + 8 * MiB        # a new connection sees the new size
    got = b"".join(h.pread(4 * MiB, off) for off in range(0, SIZE + 8 * MiB, 4 * MiB))
    h.shutdown()
    assert got[:SIZE] == bytes(shadow), "an acknowledged write is missing"
    assert got[SIZE:] == bytes(8 * MiB)
    assert w.count > 0
    q.cmd("block-export-del", id="e")
    wait_for(lambda: not q.cmd("query-block-exports"), what="export gone")
    for name in ("s3", "s2", "s1", "base"):         # the monitor still holds them
        q.cmd("blockdev-del", node_name=name)
    base = os.path.join(imgdir, "base.qcow2")
    qemu_img("check", base)
    assert backing_chain(base) == ["base.qcow2"]
    assert json.loads(qemu_img("info", "--output=json", base))["virtual-size"] == SIZE + 8 * MiB
    qemu_img("convert", "-f", "qcow2", "-O", "raw", base, raw)
    with open(raw, "rb") as f:
        assert f.read(SIZE) == bytes(shadow) and f.read() == bytes(8 * MiB)
    # The layers streamed and committed from were left intact.
    for name in ("s1", "s2", "s3"):
        qemu_img("check", os.path.join(imgdir, f"{name}.qcow2"))
    assert backing_chain(os.path.join(imgdir, "s3.qcow2")) == ["s3.qcow2", "base.qcow2"]


class RegionWriter(threading.Thread):
    """Random unaligned writes into one region of the disk, one at a time,
    mirrored into @shadow once acknowledged."""

    def __init__(self, j, shadow, start, length, seed):
        super().__init__(daemon=True)
        self.h = j.client()
        self.shadow, self.start_off, self.length = shadow, start, length
        self.rnd = random.Random(seed)
        self.stop_flag = threading.Event()
        self.error = None

    def run(self):
        try:
            while not self.stop_flag.is_set():
                n = self.rnd.randrange(1, 129) * 512
                off = self.start_off + self.rnd.randrange(0, (self.length - n) // 512 + 1) * 512
                data = self.rnd.randbytes(n)
                self.h.pwrite(data, off)
                self.shadow[off:off + n] = data
        except Exception as e:  # reported by stop()
            self.error = e

    def stop(self):
        self.stop_flag.set()
        self.join(30)
        assert not self.is_alive() and self.error is None, self.error
        self.h.shutdown()


@pytest.mark.parametrize("move", [False, True], ids=["stay", "moved"])
def test_stream_starts_under_writes(blockd, sdir, imgdir, move):  # noqa: F811
    """A write that comes while the stream job is being set up, before it
    has looked at what the node holds, is not overwritten by the job's copy
    of the older data below (seen: a write acknowledged just as
    block-stream returned was gone).  "moved": the node moves to another
    iothread in the same breath, before the job has run (seen: a hang)."""
    size = 8 * MiB
    raw = os.path.join(imgdir, "seed.raw")
    shadow = bytearray(write_random(raw, size, 1))
    qemu_img("convert", "-f", "raw", "-O", "qcow2", raw, os.path.join(imgdir, "s0.qcow2"))
    j = Jobs(blockd, sdir, {})
    q = j.qmp
    for io in ("io0", "io1"):
        q.cmd("object-add", qom_type="iothread", id=io)
    add_qcow2(q, "s0", os.path.join(imgdir, "s0.qcow2"))
    r = q.execute("block-export-add", {"type": "nbd", "id": "e", "node-name": "s0",
                                       "name": "vm", "writable": True, "iothread": "io0"})
    assert "error" not in r, r
    j.export = "vm"
    lanes = 4
    writers = [RegionWriter(j, shadow, i * size // lanes, size // lanes, i) for i in range(lanes)]
    for w in writers:
        w.start()
    try:
        for r in range(1, 9):
            path = os.path.join(imgdir, f"s{r}.qcow2")
            qemu_img("create", "-q", "-f", "qcow2", "-u", "-b",
                     os.path.join(imgdir, f"s{r - 1}.qcow2"), "-F", "qcow2", path, str(size))
            add_qcow2(q, f"s{r}", path, backing=None)
            q.cmd("blockdev-snapshot", node=f"s{r - 1}", overlay=f"s{r}")
            if not move:
                run_job(j, "block-stream", f"st{r}", device=f"s{r}")
                continue
            # Both commands in one write: the move drains the node before
            # the job coroutine has run.
            q.send_raw(json.dumps({"execute": "block-stream",
                                   "arguments": {"job-id": f"st{r}", "device": f"s{r}"}}) +
                       json.dumps({"execute": "x-blockdev-set-iothread",
                                   "arguments": {"node-name": f"s{r}", "force": True,
                                                 "iothread": f"io{r % 2}"}}))
            for _ in range(2):
                assert "error" not in q.reply()
            done = j.event("BLOCK_JOB_COMPLETED", device=f"st{r}")
            assert "error" not in done, done
    finally:
        for w in writers:
            w.stop()
    j.assert_healthy()
    h = j.client()
    got = b"".join(h.pread(MiB, off) for off in range(0, size, MiB))
    h.shutdown()
    bad = [off for off in range(0, size, 512) if got[off:off + 512] != shadow[off:off + 512]]
    assert not bad, f"acknowledged writes lost at {len(bad)} sectors from {bad[0]}"


@pytest.mark.parametrize("job", ["active-commit", "stream"])
def test_killed_during_chain_job(blockd, sdir, imgdir, job):  # noqa: F811
    """The daemon is killed (SIGKILL) in the middle of an active commit or a
    stream while a client writes: every image passes qemu-img check (leaked
    clusters allowed, as after any crash), and the chain still shows what
    the client wrote up to its last acknowledged flush."""
    size = 32 * MiB
    raw = os.path.join(imgdir, "seed.raw")
    shadow = bytearray(write_random(raw, size, 1))
    base, top = os.path.join(imgdir, "base.qcow2"), os.path.join(imgdir, "top.qcow2")
    qemu_img("convert", "-f", "raw", "-O", "qcow2", raw, base)
    qemu_img("create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top)
    j = Jobs(blockd, sdir, {})
    q = j.qmp
    q.cmd("blockdev-add", driver="qcow2", node_name="top",
          file={"driver": "file", "filename": top})
    r = q.execute("block-export-add", {"type": "nbd", "id": "e", "node-name": "top",
                                       "name": "vm", "writable": True})
    assert "error" not in r, r
    j.export = "vm"
    h = j.client()
    rnd = random.Random(7)
    for _ in range(200):                        # the top holds data of its own
        n = rnd.randrange(1, 129) * 512
        off = rnd.randrange(0, (size - n) // 512 + 1) * 512
        data = rnd.randbytes(n)
        h.pwrite(data, off)
        shadow[off:off + n] = data
    h.flush()
    if job == "stream":
        q.cmd("block-stream", job_id="j", device="top", speed=512 * 1024)
    else:
        q.cmd("block-commit", job_id="j", device="top", speed=512 * 1024)
    flushed = bytes(shadow)
    unsure = set()                              # sectors written since the last flush
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:          # writes race the job's copies
        n = rnd.randrange(1, 129) * 512
        off = rnd.randrange(0, (size - n) // 512 + 1) * 512
        data = rnd.randbytes(n)
        h.pwrite(data, off)
        shadow[off:off + n] = data
        unsure.update(range(off, off + n, 512))
        if rnd.random() < 0.05:
            h.flush()
            flushed = bytes(shadow)
            unsure.clear()
    jobs = q.cmd("query-block-jobs")
    assert jobs and jobs[0]["offset"] < size, ("the job ended before the kill",
                                               [e for e in q.events if "BLOCK" in e["event"]])
    j.daemon.proc.kill()
    j.daemon.proc.wait()
    for img in (top, base):
        r = subprocess.run(["qemu-img", "check", "--output=json", img], capture_output=True,
                           text=True)
        info = json.loads(r.stdout)
        assert info.get("corruptions", 0) == 0 and not info.get("check-errors"), r.stdout
    qemu_img("convert", "-f", "qcow2", "-O", "raw", top, raw)
    with open(raw, "rb") as f:
        got = f.read()
    # Writes after the last flush may or may not be there; flushed ones are.
    bad = [o for o in range(0, size, 512)
           if o not in unsure and got[o:o + 512] != flushed[o:o + 512]]
    assert not bad, f"{len(bad)} sectors lost from {bad[0]}"
