"""block-commit, block-stream and change-backing-file: the same sessions
against qemu-storage-daemon (replies, errors, events), qemu-img judging
every image both daemons leave; a client writing a pattern throughout."""
import json
import os
import subprocess
import time

import pytest

from test_qsd_compat_objects import pair, same_session  # noqa: F401  (fixture)

MiB = 1024 * 1024


def qemu_io(target, *cmds, fmt="raw", share=False):
    args = ["qemu-io", "-f", fmt, "-t", "writeback"] + (["-U"] if share else []) + [target]
    for c in cmds:
        args += ["-c", c]
    r = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "verification failed" not in r.stdout, r.stdout + r.stderr
    return r.stdout


def make_chain(d, size="4M"):
    """b <- m <- t, each layer with its own pattern."""
    for name, backing in (("b", None), ("m", "b"), ("t", "m")):
        args = ["qemu-img", "create", "-q", "-f", "qcow2"]
        if backing:
            args += ["-b", f"{backing}.qcow2", "-F", "qcow2"]
        subprocess.run(args + [os.path.join(d, f"{name}.qcow2"), size], check=True)
    qemu_io(f"{d}/b.qcow2", "write -P 1 0 1M", fmt="qcow2")
    # m also hides some of b under a zero cluster and holds zeroes as data:
    # commit copies both as data, stream as zero clusters, as QEMU does.
    qemu_io(f"{d}/m.qcow2", "write -P 2 1M 1M", "write -z 3M 64k", "write -z 512k 64k",
            "write -P 0 1536k 64k", fmt="qcow2")
    qemu_io(f"{d}/t.qcow2", "write -P 3 2M 512k", fmt="qcow2")


# What the whole chain shows below 2.5M.
CHAIN_READS = ["read -P 1 0 512k", "read -P 0 512k 64k", "read -P 1 576k 448k",
               "read -P 2 1M 512k", "read -P 0 1536k 64k", "read -P 2 1600k 448k",
               "read -P 3 2M 512k"]


def add(name, backing=None, read_only=False, file=None):
    opts = {"driver": "qcow2", "node-name": name,
            "file": file or {"driver": "file", "filename": f"@DIR@/{name}.qcow2"}}
    if backing:
        opts["backing"] = backing
    if read_only:
        opts["read-only"] = True
    return ("blockdev-add", opts)


CHAIN = [add("b", read_only=True), add("m", "b", read_only=True), add("t", "m")]
EXPORT = [("nbd-server-start", {"addr": {"type": "unix", "data": {"path": "@DIR@/n.sock"}}}),
          ("block-export-add", {"type": "nbd", "id": "e", "node-name": "t", "writable": True})]


def job_events(q, job, until="null", timeout=30):
    """The job's events up to its status @until (or event name @until),
    without pauses (their number depends on timing)."""
    out = []
    deadline = time.monotonic() + timeout
    while True:
        ev = q.next_event(deadline)
        assert ev is not None, f"no {until} for {job}: {out}"
        data = ev.get("data", {})
        if job not in (data.get("id"), data.get("device")):
            continue
        if ev["event"] == "BLOCK_JOB_CANCELLED" or "error" in data:
            data.pop("offset")          # how far it got depends on timing
        if data.get("status") not in ("paused", "standby"):
            out.append((ev["event"], data))
        if until in (ev["event"], data.get("status")):
            return out


def same_events(peers, job, until="null", started=False):
    """@started: the job is cancelled just after it started, so whether
    it had sized its work (len 0 or the bytes to copy) depends on timing
    in either daemon: any len is accepted, equal or not."""
    seqs = [job_events(q, job, until) for q, d in peers]
    if started:
        for seq in seqs:
            for ev, data in seq:
                if ev == "BLOCK_JOB_CANCELLED":
                    assert data.pop("len") >= 0
    assert seqs[1] == seqs[0]
    return seqs[1]


def wait_copied(q, total, timeout=10):
    """Until the only job has copied @total bytes: a write in READY is
    counted when the job gets to copy it, which is a matter of timing."""
    deadline = time.monotonic() + timeout
    while True:
        job = q.cmd("query-block-jobs")[0]
        if job["len"] == total and job["offset"] == total:
            return
        assert time.monotonic() < deadline, job
        time.sleep(0.01)


def chain_view(q, d):
    """Each named node: (backing depth, read-only) as query-named-block-nodes shows."""
    return {n["node-name"]: (n["backing_file_depth"], n["ro"])
            for n in q.cmd("query-named-block-nodes") if not n["node-name"].startswith("#")}


def close_all(peers, names=("t", "m", "b")):
    for q, d in peers:
        if any(e["id"] == "e" for e in q.cmd("query-block-exports")):
            q.cmd("block-export-del", id="e")
            deadline = time.monotonic() + 10
            while q.cmd("query-block-exports") and time.monotonic() < deadline:
                time.sleep(0.02)
        for n in names:
            q.execute("blockdev-del", {"node-name": n})


def merged_map(text):
    """qemu-img map without host offsets, neighbours of one kind merged (where
    clusters landed in the file depends on the order of parallel copies)."""
    out = []
    for e in json.loads(text):
        e = {k: v for k, v in e.items() if k != "offset"}
        last = out[-1] if out else None
        if last and all(last[k] == e[k] for k in e if k not in ("start", "length")):
            last["length"] += e["length"]
        else:
            out.append(e)
    return out


def judge(peers, images=("t", "m", "b")):
    """qemu-img: every image clean, the same data, map and backing chain in both."""
    (_, qd), (_, bd) = peers
    for img in images:
        a, b = f"{qd}/{img}.qcow2", f"{bd}/{img}.qcow2"
        r = subprocess.run(["qemu-img", "check", b], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        subprocess.run(["qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", a, b], check=True,
                       capture_output=True)
        maps = [subprocess.run(["qemu-img", "map", "--output=json", p], check=True,
                               capture_output=True, text=True).stdout for p in (a, b)]
        strip = [merged_map(m) for m in maps]
        assert strip[1] == strip[0], img
        chains = [[(os.path.basename(i["filename"]), i.get("backing-filename"))
                   for i in json.loads(subprocess.run(
                       ["qemu-img", "info", "--output=json", "--backing-chain", p],
                       check=True, capture_output=True, text=True).stdout.replace(dd, "@DIR@"))]
                  for p, dd in ((a, qd), (b, bd))]
        assert chains[1] == chains[0], img


# ---- Errors -------------------------------------------------------------------------


def test_commit_and_stream_errors_match(pair):  # noqa: F811
    peers = pair()
    for q, d in peers:
        make_chain(d)
    same_session(peers, CHAIN + [
        add("solo", file={"driver": "file", "filename": "@DIR@/b.qcow2", "locking": "off"},
            read_only=True),
        ("block-commit", {"device": "nope"}),
        ("block-commit", {"device": "m", "job-id": "j"}),
        ("block-commit", {"device": "solo", "job-id": "j"}),
        ("block-commit", {"device": "t", "job-id": "j", "top-node": "b"}),
        ("block-commit", {"device": "t", "job-id": "j", "base-node": "t"}),
        ("block-commit", {"device": "t", "job-id": "j", "top-node": "m", "base-node": "t"}),
        ("block-commit", {"device": "t", "job-id": "j", "top-node": "solo"}),
        ("block-commit", {"device": "t", "job-id": "j", "top-node": "nope"}),
        ("block-commit", {"device": "t", "job-id": "j", "top": "nope.qcow2"}),
        ("block-commit", {"device": "t", "job-id": "j", "base": "nope.qcow2"}),
        ("block-commit", {"device": "t", "job-id": "j", "top": "a", "top-node": "m"}),
        ("block-commit", {"device": "t", "job-id": "j", "base": "a", "base-node": "b"}),
        ("block-commit", {"device": "t", "job-id": "j", "backing-file": "x"}),
        ("block-commit", {"device": "t", "job-id": "j", "on-error": "sometimes"}),
        # These two failed after the filter was in place (a crash, once).
        ("block-commit", {"device": "t", "job-id": "j", "top-node": "m", "speed": -1}),
        ("block-commit", {"device": "t", "job-id": "j", "speed": -1}),
        ("block-commit", {"device": "t", "top-node": "m"}),
        ("block-stream", {"device": "nope"}),
        ("block-stream", {"device": "t", "base": "zz"}),
        ("block-stream", {"device": "t", "base-node": "zz"}),
        ("block-stream", {"device": "t", "base-node": "t"}),
        ("block-stream", {"device": "t", "base-node": "solo"}),
        ("block-stream", {"device": "t", "bottom": "zz"}),
        ("block-stream", {"device": "t", "bottom": "solo"}),
        ("block-stream", {"device": "t", "base": "a", "base-node": "b"}),
        ("block-stream", {"device": "t", "base": "a", "bottom": "b"}),
        ("block-stream", {"device": "t", "base-node": "a", "bottom": "b"}),
        ("block-stream", {"device": "t", "backing-file": "foo"}),
        ("block-stream", {"device": "t", "job-id": "j", "base-node": "b", "speed": -5}),
        ("block-stream", {"device": "t"}),
        ("change-backing-file", {"device": "nope", "image-node-name": "m",
                                 "backing-file": "x"}),
        ("change-backing-file", {"device": "t", "image-node-name": "zz", "backing-file": "x"}),
        ("change-backing-file", {"device": "t", "image-node-name": "b", "backing-file": "x"}),
        ("change-backing-file", {"device": "m", "image-node-name": "t", "backing-file": "x"}),
        # A job holds the chain: other chain operations are refused.
        ("block-commit", {"device": "t", "job-id": "ac", "speed": 1}),
        ("block-stream", {"device": "t", "job-id": "s"}),
        ("block-commit", {"device": "t", "job-id": "c", "top-node": "m"}),
        ("change-backing-file", {"device": "t", "image-node-name": "t", "backing-file": "x"}),
        ("job-cancel", {"id": "ac"}),
    ])
    same_events(peers, "ac", started=True)


# ---- Jobs ---------------------------------------------------------------------------


def test_intermediate_commit_matches(pair):  # noqa: F811
    """m into b: t's backing file becomes b, in the graph and its header;
    a manual finalize shows the filter in the chain until then."""
    peers = pair()
    for q, d in peers:
        make_chain(d)
    same_session(peers, CHAIN + EXPORT + [
        ("block-commit", {"device": "t", "job-id": "c", "top-node": "m", "base-node": "b",
                          "auto-finalize": False, "auto-dismiss": False}),
    ])
    same_events(peers, "c", until="pending")
    views = [chain_view(q, d) for q, d in peers]
    assert views[1] == views[0] and views[1]["t"] == (3, False)   # t, commit_top, m, b
    same_session(peers, [("job-finalize", {"id": "c"})])
    same_events(peers, "c", until="concluded")
    same_session(peers, [("job-dismiss", {"id": "c"}), ("query-block-jobs", None)])
    views = [chain_view(q, d) for q, d in peers]
    assert views[1] == views[0] and views[1]["t"][0] == 1
    for q, d in peers:
        qemu_io(f"nbd+unix:///t?socket={d}/n.sock", *CHAIN_READS, "read -P 0 3M 1M")
    close_all(peers)
    judge(peers)


def test_stream_matches(pair):  # noqa: F811
    """m into t above base b (t's header names b, as the backing-file
    argument says), then the whole chain: t stands alone."""
    peers = pair()
    for q, d in peers:
        make_chain(d)
    same_session(peers, CHAIN + EXPORT + [
        ("block-stream", {"device": "t", "job-id": "s", "base-node": "b",
                          "backing-file": "b.qcow2"}),
    ])
    same_events(peers, "s")
    for q, d in peers:
        assert chain_view(q, d)["t"] == (1, False)
    same_session(peers, [("block-stream", {"device": "t", "job-id": "s2", "speed": 0})])
    same_events(peers, "s2")
    views = [chain_view(q, d) for q, d in peers]
    assert views[1] == views[0] and views[1]["t"] == (0, False)
    for q, d in peers:
        qemu_io(f"nbd+unix:///t?socket={d}/n.sock", *CHAIN_READS, "read -P 0 3M 1M")
    close_all(peers)
    judge(peers)


def test_active_commit_matches(pair):  # noqa: F811
    """t into b while a client writes: READY, writes keep flowing into both,
    job-complete moves the export to b (read-only until the job)."""
    peers = pair()
    for q, d in peers:
        make_chain(d)
    same_session(peers, CHAIN + EXPORT + [
        ("block-commit", {"device": "t", "job-id": "ac"}),
    ])
    same_events(peers, "ac", until="BLOCK_JOB_READY")
    for q, d in peers:
        before = q.cmd("query-block-jobs")[0]["len"]
        qemu_io(f"nbd+unix:///t?socket={d}/n.sock", "write -P 9 3M 64k")
        wait_copied(q, before + 64 * 1024)
    same_session(peers, [("query-block-jobs", None), ("job-complete", {"id": "ac"})])
    same_events(peers, "ac")
    same_session(peers, [("query-block-exports", None)])
    views = [chain_view(q, d) for q, d in peers]
    assert views[1] == views[0] and views[1]["b"] == (0, False)
    for q, d in peers:
        uri = f"nbd+unix:///t?socket={d}/n.sock"
        qemu_io(uri, "write -P 8 3M 4k")
        qemu_io(uri, *CHAIN_READS, "read -P 8 3M 4k", "read -P 9 3076k 60k")
    close_all(peers)
    judge(peers)


def test_active_commit_cancel_matches(pair):  # noqa: F811
    """A cancel before READY is a real one, once READY it completes without
    the switch (the export stays on t); either way the base that was made
    read-write for the job stays so, as in qemu-storage-daemon 7.2."""
    peers = pair()
    for q, d in peers:
        make_chain(d)
    same_session(peers, CHAIN + EXPORT + [
        ("block-commit", {"device": "t", "job-id": "ac0", "speed": 1})])
    time.sleep(0.3)                             # both have counted the work
    same_session(peers, [("job-cancel", {"id": "ac0"})])
    same_events(peers, "ac0")
    views = [chain_view(q, d) for q, d in peers]
    assert views[1] == views[0] and views[1]["b"] == (0, False)
    same_session(peers, [("block-commit", {"device": "t", "job-id": "ac"})])
    same_events(peers, "ac", until="BLOCK_JOB_READY")
    same_session(peers, [("block-job-cancel", {"device": "ac"})])
    same_events(peers, "ac")
    same_session(peers, [("query-block-exports", None),
                         ("block-commit", {"device": "t", "job-id": "ac2", "speed": 1})])
    same_session(peers, [("job-cancel", {"id": "ac2"})])
    same_events(peers, "ac2")
    views = [chain_view(q, d) for q, d in peers]
    assert views[1] == views[0] and views[1]["t"] == (2, False) and views[1]["b"] == (0, False)
    close_all(peers)
    judge(peers)


def test_change_backing_file_matches(pair):  # noqa: F811
    """The string in t's header changes (the graph does not); a read-only
    image is switched to read-write for it and back."""
    peers = pair()
    for q, d in peers:
        make_chain(d)
    same_session(peers, CHAIN + [
        ("change-backing-file", {"device": "t", "image-node-name": "t",
                                 "backing-file": "m.qcow2"}),
        ("change-backing-file", {"device": "t", "image-node-name": "m",
                                 "backing-file": "@DIR@/b.qcow2"}),
    ])
    views = [chain_view(q, d) for q, d in peers]
    assert views[1] == views[0] and views[1]["m"] == (1, True)
    close_all(peers)
    judge(peers)


# ---- Errors on the way ------------------------------------------------------------


def faulty(name, iotype="write"):
    """@name's file behind blkdebug: its first @iotype request fails (EIO)."""
    return {"driver": "blkdebug", "inject-error": [{"iotype": iotype, "once": True}],
            "image": {"driver": "file", "filename": f"@DIR@/{name}.qcow2"}}


def add_chain(peers, chain):
    """blockdev-add @chain in both daemons: qemu-storage-daemon's blkdebug
    rules need an "event" (each write fires "pwritev"), blockd's apply to
    every request of their iotype (README)."""
    for i, (q, d) in enumerate(peers):
        for name, args in chain:
            text = json.dumps(args).replace("@DIR@", d)
            if i == 0:
                text = text.replace('"once": true', '"once": true, "event": "pwritev"')
            r = q.execute(name, json.loads(text))
            assert r == {"return": {}}, r


@pytest.mark.parametrize("policy", ["report", "stop", "ignore"])
def test_commit_write_error_matches(pair, policy):  # noqa: F811
    """A write into the base fails during an intermediate commit: the job
    ends with the error (report), pauses until resumed (stop), or goes on
    (ignore), with qemu-storage-daemon's events; the images stay sound."""
    peers = pair()
    for q, d in peers:
        make_chain(d)
    add_chain(peers, [add("b", read_only=True, file=faulty("b")),
                      add("m", "b", read_only=True), add("t", "m")])
    same_session(peers, EXPORT + [
        ("block-commit", {"device": "t", "job-id": "c", "top-node": "m", "base-node": "b",
                          "on-error": policy}),
    ])
    if policy == "stop":
        same_events(peers, "c", until="BLOCK_JOB_ERROR")
        for q, d in peers:
            deadline = time.monotonic() + 10
            while q.cmd("query-block-jobs")[0]["status"] != "paused":
                assert time.monotonic() < deadline
                time.sleep(0.01)
        same_session(peers, [("block-job-resume", {"device": "c"})])
    seqs = same_events(peers, "c")
    completed = [e for e in seqs if e[0] == "BLOCK_JOB_COMPLETED"][0][1]
    assert ("error" in completed) == (policy == "report"), completed
    for q, d in peers:
        reads = CHAIN_READS if policy != "report" else CHAIN_READS[-1:]
        qemu_io(f"nbd+unix:///t?socket={d}/n.sock", *reads)
    close_all(peers)
    for q, d in peers:
        for img in ("t", "m", "b"):
            r = subprocess.run(["qemu-img", "check", f"{d}/{img}.qcow2"], capture_output=True,
                               text=True)
            assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("policy", ["report", "stop"])
def test_stream_write_error_matches(pair, policy):  # noqa: F811
    """A write into the streamed node fails: reported, or paused and resumed
    to the end; what the node shows never changes."""
    peers = pair()
    for q, d in peers:
        make_chain(d)
    add_chain(peers, [add("b", read_only=True), add("m", "b", read_only=True),
                      add("t", "m", file=faulty("t"))])
    same_session(peers, EXPORT + [
        ("block-stream", {"device": "t", "job-id": "s", "on-error": policy}),
    ])
    if policy == "stop":
        same_events(peers, "s", until="BLOCK_JOB_ERROR")
        for q, d in peers:
            deadline = time.monotonic() + 10
            while q.cmd("query-block-jobs")[0]["status"] != "paused":
                assert time.monotonic() < deadline
                time.sleep(0.01)
        same_session(peers, [("block-job-resume", {"device": "s"})])
    seqs = same_events(peers, "s")
    completed = [e for e in seqs if e[0] == "BLOCK_JOB_COMPLETED"][0][1]
    assert ("error" in completed) == (policy == "report"), completed
    for q, d in peers:
        qemu_io(f"nbd+unix:///t?socket={d}/n.sock", *CHAIN_READS)
        assert chain_view(q, d)["t"][0] == (2 if policy == "report" else 0)
    close_all(peers)
    for q, d in peers:
        r = subprocess.run(["qemu-img", "check", f"{d}/t.qcow2"], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr


# ---- Which layer holds what: qemu:allocation-depth --------------------------------


def nbdinfo(*args):
    r = subprocess.run(["nbdinfo", *args], capture_output=True, text=True, timeout=30)
    return r.returncode, r.stdout


def test_allocation_depth_matches(pair):  # noqa: F811
    """nbdinfo --map=qemu:allocation-depth over an export of t (on m on b)
    shows the same layers in both daemons; only an export that asks for it
    offers the context, and base:allocation is unchanged beside it."""
    peers = pair()
    for q, d in peers:
        make_chain(d)
    same_session(peers, CHAIN + [
        EXPORT[0],
        ("block-export-add", {"type": "nbd", "id": "e", "node-name": "t", "writable": True,
                              "allocation-depth": True}),
        ("block-export-add", {"type": "nbd", "id": "e2", "node-name": "m", "name": "plain"}),
    ])
    outs = []
    for q, d in peers:
        uri = f"nbd+unix:///t?socket={d}/n.sock"
        plain = f"nbd+unix:///plain?socket={d}/n.sock"
        outs.append((nbdinfo("--map=qemu:allocation-depth", uri),
                     nbdinfo("--map=base:allocation", uri),
                     nbdinfo("--map", "--totals", uri),
                     nbdinfo("--map=qemu:allocation-depth", plain)[0] != 0,
                     sorted(json.loads(nbdinfo("--json", uri)[1])["exports"][0]["contexts"]),
                     sorted(json.loads(nbdinfo("--json", plain)[1])["exports"][0]["contexts"])))
    assert outs[1] == outs[0]
    depth = outs[1][0][1]
    assert "local" in depth and "backing depth 2" in depth and "backing depth 3" in depth
    assert outs[1][3] is True
    for q, d in peers:
        q.cmd("block-export-del", id="e2")
    close_all(peers, ("t", "m", "b"))
