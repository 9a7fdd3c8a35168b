"""The same QMP session against qemu-storage-daemon and blockd: replies
must have the same shape (members and JSON types), errors the same class
and text, and jobs the same event sequences with the same payload
members.  qemu-storage-daemon is the reference a user compares us with.
More sessions against it live next to their subject: test_bitmaps.py,
test_bitmaps_persistent.py, test_fleecing.py, test_backup_options.py,
test_backup_chain.py, test_chain*.py, test_reopen.py and the other
test_qsd_compat_*.py."""
import json
import os
import shutil
import subprocess
import time

import pytest

from conftest import BLOCKD
from nbdutil import MiB, short_dir, sparse_image
from qmp import QMP

QSD = shutil.which("qemu-storage-daemon")


class Peer:
    """One daemon (blockd or qemu-storage-daemon) with two raw nodes."""

    def __init__(self, prog, d, size=8 * MiB):
        self.dir = d
        self.src = os.path.join(d, "src.raw")
        self.tgt = os.path.join(d, "tgt.raw")
        with open(self.src, "wb") as f:
            f.write(os.urandom(size))
        sparse_image(self.tgt, size)
        qmp_path = os.path.join(d, "qmp.sock")
        args = [prog,
                "--blockdev", f"driver=file,node-name=fs,filename={self.src}",
                "--blockdev", "driver=raw,node-name=src,file=fs",
                "--blockdev", f"driver=file,node-name=ft,filename={self.tgt}",
                "--blockdev", "driver=raw,node-name=tgt,file=ft",
                "--chardev", f"socket,id=m,path={qmp_path},server=on,wait=off",
                "--monitor", "chardev=m"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(d, "err"), "w"))
        self.qmp = QMP(qmp_path)

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def events_until(self, name, device, timeout=30):
        """Events up to and including @name for job @device."""
        out = []
        deadline = time.monotonic() + timeout
        while True:
            ev = self.qmp.next_event(deadline)
            if ev is None:
                raise AssertionError(f"no {name}: {out}")
            out.append(ev)
            data = ev.get("data", {})
            if ev["event"] == name and device in (data.get("device"), data.get("id")):
                return out


@pytest.fixture
def peers():
    if not QSD:
        pytest.fail("qemu-storage-daemon is not installed (scripts/install-deps.sh)")
    dirs = [short_dir(), short_dir()]
    ps = [Peer(QSD, dirs[0]), Peer(BLOCKD, dirs[1])]
    yield ps
    for p, d in zip(ps, dirs):
        p.close()
        shutil.rmtree(d, ignore_errors=True)


# Members newer QEMU added that the Debian 12 qemu-storage-daemon (7.2)
# does not have yet (BlockJobInfo of a mirror: QEMU 8.2).
NEWER_MEMBERS = {"actively-synced"}


def shape(v):
    """Members and JSON types, recursively (lists by their first element)."""
    if isinstance(v, dict):
        return {k: shape(x) for k, x in v.items() if k not in NEWER_MEMBERS}
    if isinstance(v, list):
        return [shape(v[0])] if v else []
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    return type(v).__name__


def both_sessions(session, *args, dir_token=False):
    """[ours, theirs]: @session(prog, dir, *args) run with blockd, then
    with qemu-storage-daemon, each in a fresh directory (written as @DIR@
    in the result with @dir_token: a JSON copy)."""
    if not QSD:
        pytest.fail("qemu-storage-daemon is not installed (scripts/install-deps.sh)")
    results = []
    for prog in (BLOCKD, QSD):
        d = short_dir()
        try:
            out = session(prog, d, *args)
            results.append(json.loads(json.dumps(out).replace(d, "@DIR@")) if dir_token
                           else out)
        finally:
            shutil.rmtree(d, ignore_errors=True)
    return results


def both(peers, name, args=None):
    return [p.qmp.execute(name, args) for p in peers]


def assert_same_shape(peers, name, args=None):
    qsd, ours = both(peers, name, args)
    assert "return" in qsd, qsd
    assert shape(ours.get("return")) == shape(qsd["return"]), (name, qsd, ours)
    return qsd["return"], ours["return"]


def assert_same_error(peers, name, args=None):
    qsd, ours = both(peers, name, args)
    assert "error" in qsd, qsd
    assert ours.get("error") == qsd["error"], (name, args, qsd, ours)


def test_job_queries_have_the_same_shape(peers):
    for p in peers:
        p.qmp.cmd("blockdev-mirror", job_id="m", device="src", target="tgt", sync="full",
                  speed=MiB)
    qsd, ours = assert_same_shape(peers, "query-block-jobs")
    assert ours[0]["device"] == qsd[0]["device"] == "m"
    assert ours[0]["status"] == qsd[0]["status"] == "running"
    qsd, ours = assert_same_shape(peers, "query-jobs")
    assert ours[0]["type"] == qsd[0]["type"] == "mirror"
    for p in peers:
        p.qmp.cmd("job-cancel", id="m")
        p.events_until("JOB_STATUS_CHANGE", "m")


SAME_ERRORS = [
    ("job-pause", {"id": "nope"}),
    ("job-cancel", {"id": "nope"}),
    ("block-job-pause", {"device": "nope"}),
    ("block-job-set-speed", {"device": "nope", "speed": 1}),
    ("blockdev-mirror", {"device": "src", "target": "tgt", "sync": "full"}),
    ("blockdev-mirror", {"job-id": "j", "device": "nope", "target": "tgt", "sync": "full"}),
    ("blockdev-mirror", {"job-id": "j", "device": "src", "target": "nope", "sync": "full"}),
    ("blockdev-mirror", {"job-id": "0j", "device": "src", "target": "tgt", "sync": "full"}),
    ("blockdev-mirror", {"job-id": "j", "device": "src", "target": "tgt", "sync": "bogus"}),
    ("blockdev-mirror", {"job-id": "j", "device": "src", "target": "tgt", "sync": "full",
                         "granularity": 1000}),
    ("blockdev-backup", {"job-id": "j", "device": "src", "target": "src", "sync": "full"}),
    ("blockdev-backup", {"job-id": "j", "device": "src", "target": "tgt"}),
    ("transaction", {"actions": [{"type": "abort", "data": {}}]}),
]


@pytest.mark.parametrize("name,args", SAME_ERRORS,
                         ids=[f"{n} {sorted(a.items())}" for n, a in SAME_ERRORS])
def test_same_errors(peers, name, args):
    assert_same_error(peers, name, args)


def test_verb_errors_match_while_running(peers):
    for p in peers:
        p.qmp.cmd("blockdev-mirror", job_id="m", device="src", target="tgt", sync="full",
                  speed=MiB)
    assert_same_error(peers, "job-complete", {"id": "m"})
    assert_same_error(peers, "job-finalize", {"id": "m"})
    assert_same_error(peers, "job-dismiss", {"id": "m"})
    assert_same_error(peers, "job-resume", {"id": "m"})
    assert_same_error(peers, "blockdev-mirror", {"job-id": "m", "device": "src",
                                                 "target": "tgt", "sync": "full"})
    assert_same_error(peers, "block-job-set-speed", {"device": "m", "speed": -1})
    for p in peers:
        p.qmp.cmd("job-pause", id="m")
    assert_same_error(peers, "job-pause", {"id": "m"})
    assert_same_error(peers, "block-job-cancel", {"device": "m"})
    for p in peers:
        p.qmp.cmd("job-cancel", id="m")
        p.events_until("BLOCK_JOB_CANCELLED", "m")


def event_summary(events, job):
    """(event, payload members, status) for the job's events, without the
    pauses a drain may add (their number depends on timing)."""
    out = []
    for ev in events:
        data = ev.get("data", {})
        if job not in (data.get("id"), data.get("device")):
            continue
        if ev["event"] == "JOB_STATUS_CHANGE" and data["status"] in ("paused", "standby"):
            continue
        out.append((ev["event"], tuple(sorted(data)), data.get("status")))
    # A resume from a drain pause repeats the status before it.
    dedup = [e for i, e in enumerate(out) if i == 0 or e != out[i - 1]]
    return dedup


@pytest.mark.parametrize("scenario", ["complete", "soft-cancel", "cancel", "backup",
                                      "manual"])
def test_job_event_sequences_match(peers, scenario):
    seqs = []
    for p in peers:
        q = p.qmp
        if scenario == "backup":
            q.cmd("blockdev-backup", job_id="j", device="src", target="tgt", sync="full")
            seqs.append(event_summary(p.events_until("JOB_STATUS_CHANGE", "j"), "j"))
            continue
        manual = scenario == "manual"
        q.cmd("blockdev-mirror", job_id="j", device="src", target="tgt", sync="full",
              auto_finalize=not manual, auto_dismiss=not manual)
        evs = p.events_until("BLOCK_JOB_READY", "j")
        if scenario == "complete":
            q.cmd("job-complete", id="j")
            evs += p.events_until("BLOCK_JOB_COMPLETED", "j")
        elif scenario == "soft-cancel":
            q.cmd("block-job-cancel", device="j")
            evs += p.events_until("BLOCK_JOB_COMPLETED", "j")
        elif scenario == "cancel":
            q.cmd("job-cancel", id="j")
            evs += p.events_until("BLOCK_JOB_CANCELLED", "j")
        else:
            q.cmd("job-complete", id="j")
            evs += p.events_until("BLOCK_JOB_PENDING", "j")
            q.cmd("job-finalize", id="j")
            evs += p.events_until("BLOCK_JOB_COMPLETED", "j")
            evs += p.events_until("JOB_STATUS_CHANGE", "j")
            assert shape(q.cmd("query-jobs")) is not None
            q.cmd("job-dismiss", id="j")
        if scenario != "manual":
            evs += p.events_until("JOB_STATUS_CHANGE", "j")
        else:
            evs += p.events_until("JOB_STATUS_CHANGE", "j")
        seqs.append(event_summary(evs, "j"))
    assert seqs[1] == seqs[0]


def test_blockdev_create_matches(peers):
    """blockdev-create of a file and then of a qcow2 on it: the same job
    events, query-jobs shape and errors as qemu-storage-daemon."""
    seqs = []
    for p in peers:
        q = p.qmp
        path = os.path.join(p.dir, "new.qcow2")
        q.cmd("blockdev-create", job_id="c0", options={"driver": "file", "filename": path,
                                                      "size": 0})
        evs = p.events_until("JOB_STATUS_CHANGE", "c0")
        while evs[-1]["data"]["status"] != "concluded":
            evs += p.events_until("JOB_STATUS_CHANGE", "c0")
        q.cmd("job-dismiss", id="c0")
        evs += p.events_until("JOB_STATUS_CHANGE", "c0")
        q.cmd("blockdev-add", driver="file", node_name="nf", filename=path)
        q.cmd("blockdev-create", job_id="c1", options={"driver": "qcow2", "file": "nf",
                                                      "size": 16 * MiB})
        evs += p.events_until("JOB_STATUS_CHANGE", "c1")
        while evs[-1]["data"]["status"] != "concluded":
            evs += p.events_until("JOB_STATUS_CHANGE", "c1")
        seqs.append((event_summary(evs, "c0"), event_summary(evs, "c1"), shape(q.cmd("query-jobs"))))
        q.cmd("job-dismiss", id="c1")
    assert seqs[1] == seqs[0]
    assert_same_error(peers, "blockdev-create", {"job-id": "c1", "options": {"driver": "raw",
                                                                            "file": "nf"}})
    for opts in ({"driver": "raw"}, {"driver": "null-co"}, {"driver": "file"},
                 {"driver": "file", "filename": "/tmp/x", "size": "a"},
                 {"driver": "qcow2", "file": "nf"}, {"driver": "bogus"},
                 {"driver": "qcow2", "file": "nf", "size": 1, "bogus": 1}):
        assert_same_error(peers, "blockdev-create", {"job-id": "c9", "options": opts})
    # Errors only the work finds end the job, with the same message.
    infos = []
    for p in peers:
        p.qmp.cmd("blockdev-create", job_id="c2",
                  options={"driver": "file", "filename": "/nonexistent/x", "size": 0})
        evs = p.events_until("JOB_STATUS_CHANGE", "c2")
        while evs[-1]["data"]["status"] != "concluded":
            evs += p.events_until("JOB_STATUS_CHANGE", "c2")
        infos.append(p.qmp.cmd("query-jobs"))
    assert infos[1] == infos[0]


def test_query_block_matches(peers):
    """No guest devices in a storage daemon: both list no named backend
    (the nodes of the session are there, but no device uses them)."""
    assert_same_shape(peers, "query-block")
    for p in peers:
        assert p.qmp.cmd("query-block") == []


def test_thread_moves_match(peers):
    """x-blockdev-set-iothread and block-export-add's iothread: the same
    successes and errors.  A node that is not a root moves (with the
    mirror's filter and job above it); an export fixed to an iothread
    refuses every move of its node."""
    for p in peers:
        p.qmp.cmd("nbd-server-start", addr={"type": "unix",
                                            "data": {"path": os.path.join(p.dir, "nbd.sock")}})
        for io in ("io0", "io1"):
            p.qmp.cmd("object-add", qom_type="iothread", id=io)
        p.qmp.cmd("blockdev-mirror", job_id="m", device="src", target="tgt", sync="full",
                  speed=MiB)
    assert_same_error(peers, "x-blockdev-set-iothread", {"node-name": "nope", "iothread": "io0"})
    assert_same_error(peers, "x-blockdev-set-iothread", {"node-name": "fs", "iothread": "nope"})
    for name, io in (("fs", "io0"), ("src", "io1"), ("ft", "io0")):
        assert_same_shape(peers, "x-blockdev-set-iothread", {"node-name": name, "iothread": io})
    assert_same_shape(peers, "x-blockdev-set-iothread",
                      {"node-name": "tgt", "iothread": None, "force": True})
    assert_same_shape(peers, "block-export-add", {"type": "nbd", "id": "e0", "node-name": "fs",
                                                  "iothread": "io1", "fixed-iothread": True})
    assert_same_error(peers, "x-blockdev-set-iothread",
                      {"node-name": "fs", "iothread": "io0", "force": True})
    assert_same_error(peers, "block-export-add", {"type": "nbd", "id": "e1", "node-name": "src",
                                                  "name": "e1", "iothread": "io0",
                                                  "fixed-iothread": True})
    # Not fixed: the export runs where the node can be.
    assert_same_shape(peers, "block-export-add", {"type": "nbd", "id": "e2", "node-name": "src",
                                                  "name": "e2", "iothread": "io0"})
    assert_same_error(peers, "x-blockdev-set-iothread", {"node-name": "src", "iothread": "io0"})
    for p in peers:
        p.qmp.cmd("job-cancel", id="m")
        p.events_until("BLOCK_JOB_CANCELLED", "m")


# ---- The nbd driver ---------------------------------------------------------

@pytest.fixture
def nbd_servers():
    """A blockd serving a 16 MiB raw image as export "t", and as "tb" with
    its dirty bitmap "b"; nbdkit's full plugin, which fails every write
    with ENOSPC."""
    from test_nbd_driver import Remote
    d = short_dir()
    sparse_image(f"{d}/r.img", 16 * MiB)
    remote = Remote(d, f"{d}/r.img")
    remote.q.execute("block-dirty-bitmap-add", {"node": "f", "name": "b"})
    subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 7 1M 1M", "-c", "write -P 8 9M 64k",
                    f"nbd+unix:///t?socket={remote.sock}"], check=True, capture_output=True)
    remote.q.execute("block-dirty-bitmap-disable", {"node": "f", "name": "b"})
    r = remote.q.execute("block-export-add", {"type": "nbd", "id": "eb", "node-name": "f",
                                              "name": "tb", "bitmaps": ["b"]})
    assert r == {"return": {}}, r
    full = subprocess.Popen(["nbdkit", "--foreground", "--unix", f"{d}/full.sock", "full",
                             "8M"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not os.path.exists(f"{d}/full.sock"):
        assert time.monotonic() < deadline and full.poll() is None
        time.sleep(0.02)
    yield d
    full.kill()
    full.wait()
    remote.kill()
    shutil.rmtree(d, ignore_errors=True)


def nbd_node(sock, node="n", **kw):
    return {"driver": "nbd", "node-name": node, "server": {"type": "unix", "path": sock}, **kw}


def test_nbd_node_matches(peers, nbd_servers):
    """blockdev-add of nbd nodes: the same errors, node description,
    data and block status through the node's own export."""
    sock = f"{nbd_servers}/r.sock"
    for args in (nbd_node(sock, export="nope"), nbd_node(f"{nbd_servers}/none.sock"),
                 nbd_node(sock), nbd_node(sock, export="t", **{"reconnect-delay": -1}),
                 {"driver": "nbd", "node-name": "n",
                  "server": {"type": "inet", "host": "127.0.0.1", "port": "1"}},
                 {"driver": "nbd", "node-name": "n",
                  "server": {"type": "inet", "host": "no.such.host.invalid", "port": "1"}},
                 {"driver": "nbd", "node-name": "n", "server": {"type": "unix"}}):
        assert_same_error(peers, "blockdev-add", args)
    assert_same_shape(peers, "blockdev-add", nbd_node(sock, export="t"))
    results = []
    for p in peers:
        q = p.qmp
        node = [n for n in q.cmd("query-named-block-nodes") if n["node-name"] == "n"][0]
        grow = q.execute("block_resize", {"node-name": "n", "size": 32 * MiB})
        q.cmd("nbd-server-start", addr={"type": "unix",
                                        "data": {"path": os.path.join(p.dir, "l.sock")}})
        assert "error" not in q.execute("block-export-add", {"type": "nbd", "id": "e",
                                                             "node-name": "n", "name": "n",
                                                             "writable": True})
        uri = f"nbd+unix:///n?socket={p.dir}/l.sock"
        r = subprocess.run(["qemu-io", "-f", "raw", "-c", "read -P 7 1M 1M",
                            "-c", "write -P 3 4M 64k", "-c", "read -P 3 4M 64k", uri],
                           capture_output=True, text=True)
        m = subprocess.run(["qemu-img", "map", "--output=json", "-f", "raw", uri],
                           capture_output=True, text=True)
        results.append((node, r.returncode, "fail" in r.stdout, m.stdout, grow))
        q.cmd("block-export-del", id="e")
        q.cmd("blockdev-del", node_name="n")
    assert results[0][1:3] == (0, False)
    assert results[1] == results[0]
    # A remote dirty bitmap read as block status: dirty shows as "no data".
    maps, errs = [], []
    for p in peers:
        q = p.qmp
        errs.append(q.execute("blockdev-add", nbd_node(sock, node="nb", export="tb")))
        q.cmd("blockdev-add", **nbd_node(sock, node="nb", export="tb", read_only=True,
                                         **{"x-dirty-bitmap": "qemu:dirty-bitmap:b"}))
        assert "error" not in q.execute("block-export-add", {"type": "nbd", "id": "eb",
                                                             "node-name": "nb", "name": "nb"})
        maps.append(subprocess.run(["qemu-img", "map", "--output=json", "-f", "raw",
                                    f"nbd+unix:///nb?socket={p.dir}/l.sock"],
                                   capture_output=True, text=True).stdout)
    assert '"data": false' in maps[0] and maps[1] == maps[0]
    # Read-write on a read-only export: blockd says why (README).
    assert errs[0]["error"]["desc"] == "Could not open image: Permission denied"
    assert errs[1]["error"]["desc"] == "NBD export is read-only"


def test_nbd_grouped_transaction_with_failing_target(peers, nbd_servers):
    """Two backups in a grouped transaction, one onto an nbd node whose
    server fails every write (nbdkit's full plugin): the same events, in
    the same order, as qemu-storage-daemon."""
    seqs = []
    for p in peers:
        q = p.qmp
        q.cmd("blockdev-add", **nbd_node(f"{nbd_servers}/full.sock", node="full"))
        q.cmd("blockdev-add", driver="null-co", node_name="z", size=8 * MiB)
        q.cmd("transaction", actions=[
            {"type": "blockdev-backup", "data": {"job-id": "j1", "device": "src",
                                                 "target": "tgt", "sync": "full",
                                                 "speed": MiB}},
            {"type": "blockdev-backup", "data": {"job-id": "j2", "device": "z",
                                                 "target": "full", "sync": "full"}}],
              properties={"completion-mode": "grouped"})
        evs, done = [], set()
        while done != {"j1", "j2"}:
            ev = q.next_event(time.monotonic() + 30)
            assert ev is not None, evs
            evs.append(ev)
            data = ev.get("data", {})
            if ev["event"] == "JOB_STATUS_CHANGE" and data["status"] == "null":
                done.add(data["id"])
        seqs.append([(e["event"], e["data"].get("id") or e["data"].get("device"),
                      e["data"].get("status") or e["data"].get("error"))
                     for e in evs if e["data"].get("status") not in ("paused", "running")])
    assert ("BLOCK_JOB_COMPLETED", "j2", "No space left on device") in seqs[0]
    assert seqs[1] == seqs[0]
