"""quorum and blkverify nodes against qemu-storage-daemon: option errors,
reads that outvote a differing copy (QUORUM_REPORT_BAD, rewrite-corrupted
repairing it), too few in agreement (QUORUM_FAILURE), a failing child,
writes reaching every copy, x-blockdev-change adding and removing
children; blkverify passing matching reads and failing (not aborting, on
purpose: README) on a mismatch."""
import os
import shutil
import subprocess
import time


from conftest import BLOCKD
from nbdutil import short_dir
from test_bitmaps_persistent import Daemon
from test_qsd_compat import QSD, both_sessions

MiB = 1024 * 1024


def make_images(d):
    for name in "abcd":
        with open(f"{d}/{name}.raw", "wb") as f:
            f.write(b"\x11" * (4 * MiB))
    with open(f"{d}/c.raw", "r+b") as f:      # c differs at 1 MiB
        f.seek(MiB)
        f.write(b"\x22" * 65536)


def file_node(d, name):
    return {"driver": "file", "node-name": f"f{name}", "filename": f"{d}/{name}.raw"}


def quorum(node, children, threshold, **kw):
    return {"driver": "quorum", "node-name": node, "children": children,
            "vote-threshold": threshold, **kw}


def events(q, wait=1.3):
    """The events of the last step: QUORUM_* are sent at most once a
    second (the last one of a second held until it ends), in either
    daemon."""
    out = []
    deadline = time.monotonic() + wait
    while True:
        ev = q.next_event(deadline)
        if ev is None:
            return out
        out.append((ev["event"], ev.get("data")))


def io(uri, *cmds):
    args = ["qemu-io", "-f", "raw"]
    for c in cmds:
        args += ["-c", c]
    r = subprocess.run(args + [uri], capture_output=True, text=True)
    return "failed" in r.stdout + r.stderr


def error_server(d):
    p = subprocess.Popen(["nbdkit", "--foreground", "--unix", f"{d}/err.sock",
                          "--filter=error", "memory", "4M", "error=EIO",
                          "error-pread-rate=100%"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not os.path.exists(f"{d}/err.sock"):
        assert time.monotonic() < deadline and p.poll() is None
        time.sleep(0.02)
    return p


def session(prog, d):
    make_images(d)
    nbdkit = error_server(d)
    try:
        return run_session(prog, d)
    finally:
        nbdkit.kill()
        nbdkit.wait()


def run_session(prog, d):
    x = Daemon(prog, d, None)
    q = x.q
    out = []
    for name in "abcd":
        q.cmd("blockdev-add", **file_node(d, name))
    # A child whose reads all fail: nbdkit's error filter behind an nbd node.
    q.cmd("blockdev-add", driver="nbd", node_name="bad",
          server={"type": "unix", "path": f"{d}/err.sock"})
    for args in (quorum("x", [], 1), quorum("x", ["fa"], 0), quorum("x", ["fa", "fb"], 3),
                 quorum("x", ["fa", "fb", "fc"], 2, blkverify=True),
                 quorum("x", ["fa", "fb"], 2, blkverify=True, **{"rewrite-corrupted": True}),
                 quorum("x", ["fa", "fb"], 1, **{"read-pattern": "bogus"})):
        out.append(q.execute("blockdev-add", args))
    q.cmd("blockdev-add", **quorum("q", ["fa", "fb", "fc"], 2))
    q.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": f"{d}/n.sock"}})
    assert "error" not in q.execute("block-export-add", {"type": "nbd", "id": "e",
                                                         "node-name": "q", "name": "q",
                                                         "writable": True})
    uri = f"nbd+unix:///q?socket={d}/n.sock"
    events(q)
    # Outvoted: c's copy is reported, a's is read.
    out.append((io(uri, "read -P 0x11 1M 64k"), events(q)))
    out.append((io(uri, "write -P 0x33 2M 64k", "read -P 0x33 2M 64k"), events(q)))
    # Children in and out.
    for args in ({"parent": "q", "child": "nope"}, {"parent": "nope", "child": "x"},
                 {"parent": "q"}, {"parent": "q", "child": "children.0", "node": "fd"},
                 {"parent": "q", "node": "nope"}, {"parent": "q", "node": "fa"},
                 {"parent": "fa", "node": "fd"}, {"parent": "fa", "child": "x"},
                 {"parent": "q", "child": "children.2"}, {"parent": "q", "child": "children.1"},
                 {"parent": "q", "node": "bad"}):
        out.append(q.execute("x-blockdev-change", args))
    # a, b and a failing child: the failure is reported, a and b carry it.
    out.append((io(uri, "read -P 0x33 2M 64k"), events(q)))
    out.append(q.execute("x-blockdev-change", {"parent": "q", "child": "children.1"}))
    out.append(q.execute("x-blockdev-change", {"parent": "q", "node": "fc"}))
    # a and c disagree at 1 MiB: too few agree.
    out.append((io(uri, "read 1M 64k"), events(q)))
    assert "Sanitizer" not in x.quit()
    return out


def test_quorum_matches_qsd():
    ours, theirs = both_sessions(session, dir_token=True)
    assert ours[6][0] is False and ours[6][1], ours[6]
    assert ours == theirs


def test_rewrite_corrupted_repairs_the_odd_copy():
    for prog in (BLOCKD, QSD):
        d = short_dir()
        try:
            make_images(d)
            x = Daemon(prog, d, None)
            for name in "abc":
                x.q.cmd("blockdev-add", **file_node(d, name))
            x.q.cmd("blockdev-add", **quorum("q", ["fa", "fb", "fc"], 2,
                                             **{"rewrite-corrupted": True}))
            x.q.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": f"{d}/n.sock"}})
            x.q.execute("block-export-add", {"type": "nbd", "id": "e", "node-name": "q",
                                             "name": "q", "writable": True})
            assert not io(f"nbd+unix:///q?socket={d}/n.sock", "read -P 0x11 1M 64k")
            evs = events(x.q)
            assert [e for e, _ in evs] == ["QUORUM_REPORT_BAD"], (prog, evs)
            x.quit()
            with open(f"{d}/c.raw", "rb") as f:
                f.seek(MiB)
                assert f.read(65536) == b"\x11" * 65536, prog
        finally:
            shutil.rmtree(d, ignore_errors=True)


def test_blkverify():
    """Matching reads pass; a mismatch fails the read and the daemon goes
    on (QEMU's blkverify ends the process there)."""
    d = short_dir()
    try:
        make_images(d)
        x = Daemon(BLOCKD, d, None)
        x.q.cmd("blockdev-add", driver="blkverify", node_name="v",
                test={"driver": "file", "filename": f"{d}/a.raw"},
                raw={"driver": "file", "filename": f"{d}/c.raw"})
        x.q.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": f"{d}/n.sock"}})
        x.q.execute("block-export-add", {"type": "nbd", "id": "e", "node-name": "v",
                                         "name": "v", "writable": True})
        uri = f"nbd+unix:///v?socket={d}/n.sock"
        assert not io(uri, "read -P 0x11 0 64k", "write -P 5 3M 4k", "read -P 5 3M 4k")
        assert io(uri, "read 1M 4k")
        assert x.q.cmd("query-named-block-nodes")
        err = x.quit()
        assert "contents mismatch at offset 1048576" in err, err
        assert "Sanitizer" not in err
        with open(f"{d}/c.raw", "rb") as f:
            f.seek(3 * MiB)
            assert f.read(4096) == b"\x05" * 4096
    finally:
        shutil.rmtree(d, ignore_errors=True)
