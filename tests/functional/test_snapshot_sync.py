"""blockdev-snapshot-sync, drive-mirror and drive-backup: the commands that
create their image themselves.  The same sessions against
qemu-storage-daemon (replies, errors, events); qemu-img judges the images."""
import os
import subprocess
import time

import pytest

from test_chain import (CHAIN, CHAIN_READS, EXPORT, chain_view, close_all, job_events, judge,
                        make_chain, same_events,
                        qemu_io)
from test_qsd_compat_objects import pair, same_session  # noqa: F401  (fixture)


def test_snapshot_sync_matches(pair):  # noqa: F811
    peers = pair()
    for q, d in peers:
        make_chain(d)
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", f"{d}/pre.qcow2", "4M"],
                       check=True)
    same_session(peers, CHAIN + [
        ("blockdev-snapshot-sync", {"device": "nope", "snapshot-file": "@DIR@/x.qcow2"}),
        ("blockdev-snapshot-sync", {"node-name": "nope", "snapshot-file": "@DIR@/x.qcow2"}),
        ("blockdev-snapshot-sync", {"node-name": "t", "snapshot-file": "@DIR@/x.qcow2"}),
        ("blockdev-snapshot-sync", {"node-name": "t", "snapshot-file": "@DIR@/x.qcow2",
                                    "snapshot-node-name": "m"}),
        ("blockdev-snapshot-sync", {"node-name": "t", "snapshot-file": "@DIR@/x.qcow2",
                                    "snapshot-node-name": "x", "format": "nope"}),
        ("blockdev-snapshot-sync", {"node-name": "t", "snapshot-file": "@DIR@/x.raw",
                                    "snapshot-node-name": "x", "format": "raw"}),
        ("blockdev-snapshot-sync", {"node-name": "t", "snapshot-file": "@DIR@/none.qcow2",
                                    "snapshot-node-name": "x", "mode": "existing"}),
        ("blockdev-snapshot-sync", {"node-name": "m", "snapshot-file": "@DIR@/x.qcow2",
                                    "snapshot-node-name": "x"}),
        ("blockdev-snapshot-sync", {"node-name": "t", "snapshot-file": "/nonexistent/x.qcow2",
                                    "snapshot-node-name": "x"}),
        ("blockdev-snapshot-sync", {"node-name": "t", "snapshot-file": "@DIR@/s1.qcow2",
                                    "snapshot-node-name": "s1"}),
    ])
    # Nothing used t: the new overlay went away at once, t stays read-only.
    # (How deep qemu-storage-daemon then reports t's chain varies.)
    for q, d in peers:
        assert {n: ro for n, (_, ro) in chain_view(q, d).items()} == {
            "t": True, "m": True, "b": True}


HEADER_CHAIN = [("blockdev-add", {"driver": "qcow2", "node-name": "t",
                                  "file": {"driver": "file", "filename": "@DIR@/t.qcow2"}})]


def test_snapshot_sync_under_export_matches(pair):  # noqa: F811
    """The way older tooling takes a snapshot: the chain opened from the image
    headers, exported; two snapshots (one into an existing image), data
    written into each; qemu-img finds the same images in both daemons."""
    peers = pair()
    for q, d in peers:
        make_chain(d)
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", f"{d}/pre.qcow2", "4M"],
                       check=True)
    same_session(peers, HEADER_CHAIN + EXPORT + [
        ("blockdev-snapshot-sync", {"node-name": "t", "snapshot-file": "@DIR@/s1.qcow2",
                                    "snapshot-node-name": "s1"}),
        ("query-block-exports", {}),
    ])
    for q, d in peers:
        qemu_io(f"nbd+unix:///t?socket={d}/n.sock", "write -P 7 0 64k")
    same_session(peers, [
        ("blockdev-snapshot-sync", {"node-name": "s1", "snapshot-file": "@DIR@/pre.qcow2",
                                    "snapshot-node-name": "s2", "mode": "existing",
                                    "format": "qcow2"}),
        ("blockdev-snapshot-sync", {"node-name": "s1", "snapshot-file": "@DIR@/x.qcow2",
                                    "snapshot-node-name": "x"}),
    ])
    for q, d in peers:
        qemu_io(f"nbd+unix:///t?socket={d}/n.sock", "write -P 8 64k 64k", "read -P 7 0 64k",
                *CHAIN_READS[1:])
        # (m and b, opened from the headers, have generated names.)
        assert chain_view(q, d) == {"s2": (4, False), "s1": (3, True), "t": (2, True)}
    close_all(peers, ("s2",))
    judge(peers, ("s1", "t", "m", "b"))
    for q, d in peers:
        qemu_io(f"{d}/s1.qcow2", "read -P 7 0 64k", fmt="qcow2")
        # pre.qcow2 had no backing file in its header: mode=existing leaves
        # the header alone.
        qemu_io(f"{d}/pre.qcow2", "read -P 8 64k 64k", "read -P 0 0 64k", fmt="qcow2")


def test_snapshot_sync_transaction_matches(pair):  # noqa: F811
    """Two disks snapshotted at one point in time; a failing action undoes
    the others."""
    peers = pair()
    for q, d in peers:
        make_chain(d)
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", f"{d}/d2.qcow2", "4M"],
                       check=True)
    d2 = ("blockdev-add", {"driver": "qcow2", "node-name": "d2",
                           "file": {"driver": "file", "filename": "@DIR@/d2.qcow2"}})
    snap = [{"type": "blockdev-snapshot-sync",
             "data": {"node-name": "t", "snapshot-file": "@DIR@/t1.qcow2",
                      "snapshot-node-name": "t1"}},
            {"type": "blockdev-snapshot-sync",
             "data": {"node-name": "d2", "snapshot-file": "@DIR@/d21.qcow2",
                      "snapshot-node-name": "d21"}}]
    same_session(peers, HEADER_CHAIN + EXPORT + [d2] + [
        ("transaction", {"actions": snap + [{"type": "abort", "data": {}}]}),
        ("query-block-exports", {}),
        ("transaction", {"actions": snap}),
        ("query-block-exports", {}),
    ])
    for q, d in peers:
        view = chain_view(q, d)
        assert view["t1"] == (3, False) and view["t"] == (2, True), view
        assert "d21" not in view and view["d2"] == (0, True), view      # nothing used it
    close_all(peers, ("t1", "d2"))
    judge(peers, ("t1", "t", "m", "b"))


# ---- drive-mirror, drive-backup ---------------------------------------------------


def test_drive_errors_match(pair):  # noqa: F811
    peers = pair()
    for q, d in peers:
        make_chain(d)
    same_session(peers, HEADER_CHAIN + [
        ("drive-mirror", {"device": "nope", "target": "@DIR@/x.qcow2", "sync": "full"}),
        ("drive-mirror", {"device": "t", "target": "/nonexistent/x.qcow2", "sync": "full"}),
        ("drive-mirror", {"device": "t", "target": "@DIR@/x.qcow2", "sync": "full",
                          "replaces": "t"}),
        ("drive-mirror", {"device": "t", "target": "@DIR@/x.qcow2", "sync": "full",
                          "format": "nope"}),
        ("drive-mirror", {"device": "t", "target": "@DIR@/x.raw", "sync": "top",
                          "format": "raw"}),
        ("drive-mirror", {"device": "t", "target": "@DIR@/none.qcow2", "sync": "full",
                          "mode": "existing", "format": "qcow2"}),
        ("drive-mirror", {"device": "t", "target": "@DIR@/x.qcow2", "sync": "full",
                          "filter-node-name": "f"}),
        ("drive-mirror", {"device": "t", "target": "@DIR@/x.qcow2", "sync": "full",
                          "speed": -1}),
        ("drive-backup", {"device": "nope", "target": "@DIR@/x.qcow2", "sync": "full"}),
        ("drive-backup", {"device": "t", "target": "/nonexistent/x.qcow2", "sync": "full"}),
        ("drive-backup", {"device": "t", "target": "@DIR@/x.raw", "sync": "none",
                          "format": "raw"}),
        ("drive-backup", {"device": "t", "target": "@DIR@/none.qcow2", "sync": "full",
                          "mode": "existing", "format": "qcow2"}),
        ("drive-backup", {"device": "t", "target": "@DIR@/x.qcow2", "sync": "full",
                          "node-name": "x"}),
    ])


def wait_job(q, *jobs, timeout=30):
    """Until each of @jobs reached status null, none with an error."""
    left = set(jobs)
    deadline = time.monotonic() + timeout
    while left:
        ev = q.next_event(deadline)
        assert ev is not None, f"jobs {left} did not end"
        data = ev.get("data", {})
        if ev["event"] == "BLOCK_JOB_COMPLETED":
            assert "error" not in data, ev
        if ev["event"] == "JOB_STATUS_CHANGE" and data["status"] == "null":
            left.discard(data["id"])


@pytest.mark.parametrize("sync", ["full", "top", "none"])
def test_drive_mirror_matches(pair, sync):  # noqa: F811
    """drive-mirror of an exported disk, job-complete: the export moves to the
    new image, whose header names the right backing file; data written
    after the switch lands there."""
    peers = pair()
    for q, d in peers:
        make_chain(d)
    same_session(peers, HEADER_CHAIN + EXPORT + [
        ("drive-mirror", {"job-id": "j", "device": "t", "target": "@DIR@/new.qcow2",
                          "sync": sync, "node-name": "new"}),
    ])
    same_events(peers, "j", until="ready")
    same_session(peers, [("job-complete", {"id": "j"})])
    same_events(peers, "j")
    same_session(peers, [("query-block-exports", {})])
    for q, d in peers:
        qemu_io(f"nbd+unix:///t?socket={d}/n.sock", "write -P 9 3M 64k", *CHAIN_READS)
        assert chain_view(q, d)["new"][1] is False
    close_all(peers, ("new", "t"))
    judge(peers, ("new",))


@pytest.mark.parametrize("sync", ["full", "top", "none"])
def test_drive_backup_matches(pair, sync):  # noqa: F811
    peers = pair()
    for q, d in peers:
        make_chain(d)
    same_session(peers, HEADER_CHAIN + EXPORT + [
        ("drive-backup", {"job-id": "j", "device": "t", "target": "@DIR@/bk.qcow2",
                          "sync": sync}),
    ])
    for q, d in peers:
        if sync != "none":
            wait_job(q, "j")
        qemu_io(f"nbd+unix:///t?socket={d}/n.sock", "write -P 9 2M 64k")
        if sync == "none":
            # It copies what is about to be overwritten until cancelled.
            q.cmd("job-cancel", id="j")
            wait_job(q, "j")
            # Read at once: what the job saved is on disk when it has ended.
            r = subprocess.run(["qemu-io", "-r", "-U", "-f", "qcow2", f"{d}/bk.qcow2",
                                "-c", "read -P 3 2M 64k"], capture_output=True, text=True)
            assert r.returncode == 0 and "verification failed" not in r.stdout, r.stdout
    close_all(peers, ("t",))
    judge(peers, ("bk",))


def test_drive_backup_transaction_matches(pair):  # noqa: F811
    """drive-backup as a transaction action: with a snapshot at the same
    point in time, grouped with a second backup, and undone by an abort."""
    peers = pair()
    for q, d in peers:
        make_chain(d)
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", f"{d}/d2.qcow2", "4M"],
                       check=True)
        qemu_io(f"{d}/d2.qcow2", "write -P 5 0 1M", fmt="qcow2")
    d2 = ("blockdev-add", {"driver": "qcow2", "node-name": "d2",
                           "file": {"driver": "file", "filename": "@DIR@/d2.qcow2"}})

    def backup(dev, job):
        return {"type": "drive-backup",
                "data": {"job-id": job, "device": dev, "target": f"@DIR@/{job}.qcow2",
                         "sync": "full"}}
    same_session(peers, HEADER_CHAIN + EXPORT + [d2] + [
        ("transaction", {"actions": [backup("t", "b1"), {"type": "abort", "data": {}}]}),
        ("transaction", {"actions": [backup("t", "b2"), backup("d2", "b3")],
                         "properties": {"completion-mode": "grouped"}}),
    ])
    for q, d in peers:
        wait_job(q, "b2", "b3")
    same_session(peers, [
        ("transaction", {"actions": [
            backup("d2", "b4"),
            {"type": "blockdev-snapshot-sync",
             "data": {"node-name": "t", "snapshot-file": "@DIR@/t1.qcow2",
                      "snapshot-node-name": "t1"}}]}),
    ])
    for q, d in peers:
        wait_job(q, "b4")
        qemu_io(f"{d}/b2.qcow2", *CHAIN_READS, fmt="qcow2")
        qemu_io(f"{d}/b3.qcow2", "read -P 5 0 1M", fmt="qcow2")
    close_all(peers, ("t1", "d2"))
    judge(peers, ("b2", "b3", "b4", "t1"))
