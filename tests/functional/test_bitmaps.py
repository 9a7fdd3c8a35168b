"""Named dirty bitmaps against qemu-storage-daemon: the same commands,
transactions and writes give the same replies, errors, counts and SHA-256
of the bits (x-debug-block-dirty-bitmap-sha256)."""
import json

import pytest

from test_chain import qemu_io
from test_qsd_compat_objects import pair, same_session  # noqa: F401  (fixture)

B = "block-dirty-bitmap-"
MiB = 1024 * 1024
SETUP = [
    ("blockdev-add", {"driver": "qcow2", "node-name": "t",
                      "file": {"driver": "file", "filename": "@DIR@/t.qcow2"}}),
    ("blockdev-add", {"driver": "raw", "node-name": "r",
                      "file": {"driver": "file", "filename": "@DIR@/r.raw"}}),
    ("nbd-server-start", {"addr": {"type": "unix", "data": {"path": "@DIR@/n.sock"}}}),
    ("block-export-add", {"type": "nbd", "id": "e", "node-name": "t", "writable": True}),
]


def images(peers, size="8M"):
    import subprocess
    for q, d in peers:
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", f"{d}/t.qcow2", size],
                       check=True)
        open(f"{d}/r.raw", "wb").truncate(8 * MiB)


def write(peers, *cmds):
    for q, d in peers:
        qemu_io(f"nbd+unix:///t?socket={d}/n.sock", *cmds)


def wait_until(cond, timeout=30):
    import time
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def sha(name, node="t"):
    return ("x-debug-block-dirty-bitmap-sha256", {"node": node, "name": name})


def bitmaps(peers):
    """query-named-block-nodes' named dirty-bitmaps of each named node, both
    peers (qemu-storage-daemon also lists its internal ones during a
    backup; blockd does not: README)."""
    views = []
    for q, d in peers:
        views.append({n["node-name"]: [b for b in n["dirty-bitmaps"] if "name" in b]
                      if n.get("dirty-bitmaps") else None
                      for n in q.cmd("query-named-block-nodes")
                      if not n["node-name"].startswith("#")})
    assert views[1] == views[0]
    return views[0]


def test_bitmap_errors_match(pair):  # noqa: F811
    peers = pair()
    images(peers)
    same_session(peers, SETUP + [
        (B + "add", {"node": "t", "name": "b1"}),
        (B + "add", {"node": "t", "name": "b1"}),
        (B + "add", {"node": "t", "name": ""}),
        (B + "add", {"node": "nope", "name": "x"}),
        (B + "add", {"node": "t", "name": "x", "granularity": 3000}),
        (B + "add", {"node": "t", "name": "x", "granularity": 256}),
        (B + "add", {"node": "t", "name": "x", "granularity": 1 << 32}),
        (B + "add", {"node": "t", "name": "n" * 1100}),
        (B + "add", {"node": "r", "name": "p", "persistent": True}),
        (B + "add", {"node": "t", "name": "x", "bogus": 1}),
        (B + "remove", {"node": "t", "name": "zz"}),
        (B + "remove", {"node": "nope", "name": "zz"}),
        (B + "clear", {"node": "t", "name": "zz"}),
        (B + "enable", {"node": "t", "name": "zz"}),
        (B + "disable", {"node": "nope", "name": "zz"}),
        (B + "merge", {"node": "t", "target": "b1", "bitmaps": ["zz"]}),
        (B + "merge", {"node": "t", "target": "zz", "bitmaps": ["b1"]}),
        (B + "merge", {"node": "t", "target": "b1", "bitmaps": [{"node": "nope", "name": "b1"}]}),
        (B + "merge", {"node": "t", "target": "b1", "bitmaps": [5]}),
        sha("zz"),
        sha("b1", "nope"),
    ])


def test_bitmap_writes_match(pair):  # noqa: F811
    """Writes mark recording bitmaps at their granularity; disabled ones stay
    as they are; merges across granularities and nodes, clear: the same
    counts and the same SHA-256 as qemu-storage-daemon."""
    peers = pair()
    images(peers)
    same_session(peers, SETUP + [
        (B + "add", {"node": "t", "name": "b64k"}),
        (B + "add", {"node": "t", "name": "b4k", "granularity": 4096}),
        (B + "add", {"node": "t", "name": "b1m", "granularity": MiB}),
        (B + "add", {"node": "t", "name": "off", "disabled": True}),
        (B + "add", {"node": "r", "name": "other"}),
    ])
    write(peers, "write -P 1 0 512", "write -P 2 100k 5000", "write -z 3M 1M",
          "discard 7M 64k", "write -P 3 8388096 512")
    same_session(peers, [sha(n) for n in ("b64k", "b4k", "b1m", "off")])
    views = bitmaps(peers)
    assert [b["name"] for b in views["t"]] == ["off", "b1m", "b4k", "b64k"]
    assert views["t"][3]["count"] > 0 and views["t"][0]["count"] == 0
    same_session(peers, [
        (B + "disable", {"node": "t", "name": "b4k"}),
        (B + "enable", {"node": "t", "name": "off"}),
    ])
    write(peers, "write -P 4 2M 4k")
    same_session(peers, [
        sha("b4k"), sha("off"),
        (B + "merge", {"node": "t", "target": "off", "bitmaps": ["b4k", "b1m"]}),
        sha("off"),
        (B + "merge", {"node": "t", "target": "b4k", "bitmaps": ["b1m"]}),
        sha("b4k"),
        (B + "merge", {"node": "t", "target": "b64k",
                       "bitmaps": [{"node": "r", "name": "other"}]}),
        sha("b64k"),
        (B + "clear", {"node": "t", "name": "b1m"}),
        sha("b1m"),
        (B + "remove", {"node": "t", "name": "b1m"}),
    ])
    bitmaps(peers)


def test_bitmap_transactions_match(pair):  # noqa: F811
    """Bitmap actions in a transaction: all or nothing (an abort puts back
    the bits a clear or a merge changed, a removed bitmap, the recording
    state), and a new bitmap next to a backup starts at its point in time."""
    peers = pair()
    images(peers)
    open_tgt = [("blockdev-add", {"driver": "raw", "node-name": "tgt",
                                  "file": {"driver": "file", "filename": "@DIR@/r.raw"}})]
    same_session(peers, SETUP[:1] + SETUP[2:] + [
        (B + "add", {"node": "t", "name": "a"}),
        (B + "add", {"node": "t", "name": "b", "granularity": 4096}),
    ])
    write(peers, "write -P 1 0 1M")
    actions = [{"type": B + "clear", "data": {"node": "t", "name": "a"}},
               {"type": B + "merge", "data": {"node": "t", "target": "b", "bitmaps": ["a"]}},
               {"type": B + "disable", "data": {"node": "t", "name": "a"}},
               {"type": B + "remove", "data": {"node": "t", "name": "b"}},
               {"type": B + "add", "data": {"node": "t", "name": "c"}}]
    before = bitmaps(peers)
    same_session(peers, [
        ("transaction", {"actions": actions + [{"type": "abort", "data": {}}]}),
        ("transaction", {"actions": actions + [
            {"type": B + "add", "data": {"node": "t", "name": "a"}}]}),
        sha("a"), sha("b"),
    ])
    assert bitmaps(peers) == before
    same_session(peers, [("transaction", {"actions": actions}), sha("a"), sha("c")])
    after = bitmaps(peers)["t"]
    assert [(b["name"], b["recording"], b["count"]) for b in after] == [
        ("c", True, 0), ("a", False, 0)]
    # A new bitmap with a full backup: the next incremental starts there.
    same_session(peers, open_tgt + [
        ("transaction", {"actions": [
            {"type": "blockdev-backup", "data": {"device": "t", "target": "tgt",
                                                 "sync": "full", "job-id": "j"}},
            {"type": B + "add", "data": {"node": "t", "name": "inc"}}]}),
    ])
    for q, d in peers:
        wait_until(lambda: not q.cmd("query-block-jobs"))
    write(peers, "write -P 7 5M 64k")
    same_session(peers, [sha("inc")])
    assert {b["name"]: b["count"] for b in bitmaps(peers)["t"]}["inc"] == 65536


def test_bitmap_goes_with_its_node(pair):  # noqa: F811
    """blockdev-del of a node takes its bitmaps along; a node of that name
    added again has none."""
    peers = pair()
    images(peers)
    same_session(peers, SETUP[:2] + [
        (B + "add", {"node": "r", "name": "x"}),
        ("blockdev-del", {"node-name": "r"}),
        SETUP[1],
        (B + "remove", {"node": "r", "name": "x"}),
    ])
    assert bitmaps(peers)["r"] is None
    json.dumps(peers[0][0].cmd("query-named-block-nodes"))


def test_bitmap_follows_resize(pair):  # noqa: F811
    """block_resize: the bitmaps grow with the node and mark writes past
    the old end; shrinking drops what lay beyond (same bits as
    qemu-storage-daemon)."""
    peers = pair()
    images(peers)
    same_session(peers, SETUP[:2] + [
        (B + "add", {"node": "r", "name": "x", "granularity": 4096}),
        ("nbd-server-start", {"addr": {"type": "unix", "data": {"path": "@DIR@/n.sock"}}}),
        ("block_resize", {"node-name": "r", "size": 12 * MiB}),
        ("block-export-add", {"type": "nbd", "id": "e", "node-name": "r", "writable": True}),
    ])
    for q, d in peers:
        qemu_io(f"nbd+unix:///r?socket={d}/n.sock", "write -P 1 10M 64k", "write -P 2 1M 4k")
    same_session(peers, [sha("x", "r"), ("block-export-del", {"id": "e"})])
    for q, d in peers:
        wait_until(lambda: not q.cmd("query-block-exports"))
    same_session(peers, [("block_resize", {"node-name": "r", "size": 4 * MiB}), sha("x", "r"),
                         ("block_resize", {"node-name": "r", "size": 12 * MiB}), sha("x", "r")])
    assert {b["name"]: b["count"] for b in bitmaps(peers)["r"]}["x"] == 4096


def test_merge_of_nothing(pair):  # noqa: F811
    """A deliberate difference (README): merging an empty list leaves the
    target as it is; qemu-storage-daemon 7.2 crashes on it."""
    q, d = pair()[1]
    open(f"{d}/r.raw", "wb").truncate(8 * MiB)
    q.cmd("blockdev-add", **SETUP[1][1] | {"file": {"driver": "file",
                                                    "filename": f"{d}/r.raw"}})
    assert q.execute(B + "add", {"node": "r", "name": "x"}) == {"return": {}}
    before = q.execute("x-debug-block-dirty-bitmap-sha256", {"node": "r", "name": "x"})
    assert q.execute(B + "merge", {"node": "r", "target": "x", "bitmaps": []}) == {"return": {}}
    assert q.execute("x-debug-block-dirty-bitmap-sha256", {"node": "r", "name": "x"}) == before


def export_with(bitmaps, writable=False, eid="eb", name="bm"):
    return ("block-export-add", {"type": "nbd", "id": eid, "node-name": "t", "name": name,
                                 "writable": writable, "bitmaps": bitmaps})


def test_bitmap_export_matches(pair):  # noqa: F811
    """block-export-add "bitmaps": the same refusals; an exported bitmap is
    busy; nbdinfo lists its qemu:dirty-bitmap: context and maps the same
    dirty ranges as from qemu-storage-daemon."""
    import subprocess
    peers = pair()
    images(peers)
    same_session(peers, SETUP + [
        (B + "add", {"node": "t", "name": "b", "granularity": 4096}),
        (B + "add", {"node": "t", "name": "off", "disabled": True}),
    ])
    write(peers, "write -P 1 64k 8k", "write -P 2 3M 1M", "write -P 3 8388096 512")
    same_session(peers, [
        export_with(["nope"]),
        export_with([{"node": "nope", "name": "b"}]),
        export_with([{"node": "t", "name": "nope"}]),
        export_with(["b"]),                       # recording, read-only export
        export_with(["off", "off"]),
        export_with(["b"], writable=True, eid="ew", name="bw"),
        (B + "remove", {"node": "t", "name": "b"}),
        (B + "clear", {"node": "t", "name": "b"}),
        export_with([{"node": "t", "name": "b"}], writable=True, eid="e3", name="b3"),
    ])
    assert {b["name"]: b["busy"] for b in bitmaps(peers)["t"]} == {"b": True, "off": True}
    maps = []
    for q, d in peers:
        uri = f"nbd+unix:///bw?socket={d}/n.sock"
        r = subprocess.run(["nbdinfo", "--map=qemu:dirty-bitmap:b", "--json", uri],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        ctx = subprocess.run(["nbdinfo", "--json", uri], capture_output=True, text=True,
                             timeout=30)
        contexts = json.loads(ctx.stdout)["exports"][0]["contexts"]
        maps.append((json.loads(r.stdout), sorted(contexts)))
    assert maps[1] == maps[0]
    assert [(m["offset"], m["length"], m["type"]) for m in maps[0][0] if m["type"]] == [
        (64 * 1024, 8192, 1), (3 * MiB, MiB, 1), (8 * MiB - 4096, 4096, 1)]
    same_session(peers, [("block-export-del", {"id": "eb"})])
    for q, d in peers:
        wait_until(lambda: len(q.cmd("query-block-exports")) <= 2)
    assert {b["name"]: b["busy"] for b in bitmaps(peers)["t"]}["off"] is False


# ---- Push-mode backup: sync=incremental and sync=bitmap --------------------------------


def backup(name="j", **kw):
    a = {"device": "t", "target": "g", "job-id": name}
    a.update(kw)
    return ("blockdev-backup", a)


def wait_job_gone(peers, job):
    import time
    for q, d in peers:
        deadline = time.monotonic() + 30
        while any(j["device"] == job for j in q.cmd("query-block-jobs")):
            assert time.monotonic() < deadline
            time.sleep(0.01)


def test_backup_bitmap_errors_match(pair):  # noqa: F811
    peers = pair()
    images(peers)
    same_session(peers, SETUP[:1] + [
        ("blockdev-add", {"driver": "raw", "node-name": "g",
                          "file": {"driver": "file", "filename": "@DIR@/r.raw"}}),
        (B + "add", {"node": "t", "name": "b"}),
        backup(sync="incremental"),
        backup(sync="bitmap"),
        backup(sync="incremental", bitmap="nope"),
        backup(sync="incremental", bitmap="b", **{"bitmap-mode": "never"}),
        backup(sync="bitmap", bitmap="b"),
        backup(sync="full", bitmap="b"),
        backup(sync="none", bitmap="b", **{"bitmap-mode": "always"}),
        backup(sync="full", bitmap="b", **{"bitmap-mode": "never"}),
        backup(sync="full", **{"bitmap-mode": "always"}),
        backup(sync="bitmap", bitmap="b", **{"bitmap-mode": "bogus"}),
        ("blockdev-mirror", {"device": "t", "target": "g", "job-id": "m",
                             "sync": "incremental"}),
    ])


@pytest.mark.parametrize("mode", ["on-success", "never", "always"])
def test_backup_bitmap_modes_match(pair, mode):  # noqa: F811
    """What each bitmap mode leaves in the bitmap after a backup that
    succeeds, and after one that is cancelled: the same bits as in
    qemu-storage-daemon (writes before, and during the job)."""
    peers = pair()
    images(peers)
    same_session(peers, SETUP + [
        ("blockdev-add", {"driver": "raw", "node-name": "g",
                          "file": {"driver": "file", "filename": "@DIR@/r.raw"}}),
        (B + "add", {"node": "t", "name": "b"}),
    ])
    write(peers, "write -P 1 0 1M", "write -P 2 5M 64k")
    same_session(peers, [backup(sync="bitmap", bitmap="b", **{"bitmap-mode": mode})])
    wait_job_gone(peers, "j")
    write(peers, "write -P 3 2M 64k")
    same_session(peers, [sha("b")])
    # Cancelled early (speed 1 byte/s: after its first chunk at most).
    write(peers, "write -P 5 0 4M")
    same_session(peers, [backup(sync="bitmap", bitmap="b", speed=1,
                                **{"bitmap-mode": mode})])
    assert all(b["busy"] for b in bitmaps(peers)["t"])
    write(peers, "write -P 4 7M 64k")
    same_session(peers, [("block-job-cancel", {"device": "j", "force": True})])
    wait_job_gone(peers, "j")
    if mode != "always":
        same_session(peers, [sha("b")])
        return
    # "always" keeps what was not copied, and how much was copied before
    # the cancel depends on chunk sizes: the new write is there, and no
    # more than all that was marked.
    for q, d in peers:
        b = [n for n in q.cmd("query-named-block-nodes") if n["node-name"] == "t"][0]
        count = [x for x in b["dirty-bitmaps"] if x.get("name") == "b"][0]["count"]
        assert 64 * 1024 <= count <= 4 * MiB + 2 * 64 * 1024, count


def test_incremental_backups_restore(pair):  # noqa: F811
    """A full backup that starts a bitmap in the same transaction, then
    incremental backups into overlays of it while a client writes during
    each job: every overlay chain reads exactly as the source did when its
    backup started (qemu-img compare)."""
    import subprocess
    q, d = pair()[1]
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", f"{d}/t.qcow2", "8M"], check=True)
    shadow = f"{d}/shadow.raw"
    open(shadow, "wb").truncate(8 * MiB)
    open(f"{d}/full.raw", "wb").truncate(8 * MiB)
    for name, args in SETUP[:1] + SETUP[2:]:
        r = q.execute(name, json.loads(json.dumps(args).replace("@DIR@", d)))
        assert "error" not in r, r
    uri = f"nbd+unix:///t?socket={d}/n.sock"

    def both(*cmds):
        qemu_io(uri, *cmds)
        r = subprocess.run(["qemu-io", "-f", "raw", shadow] + [x for c in cmds for x in ("-c", c)],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr

    both("write -P 1 0 2M", "write -P 2 6M 1M")
    q.cmd("blockdev-add", driver="raw", node_name="full",
          file={"driver": "file", "filename": f"{d}/full.raw"})
    q.cmd("transaction", actions=[
        {"type": "blockdev-backup", "data": {"device": "t", "target": "full", "sync": "full",
                                             "job-id": "f"}},
        {"type": B + "add", "data": {"node": "t", "name": "inc"}}])
    wait_job_gone([(q, d)], "f")
    prev = "full.raw"
    for k in range(1, 4):
        both(f"write -P {10 + k} {k}M 100k", f"write -P {20 + k} {7 * MiB + 4096 * k} 4k")
        inc = f"inc{k}.qcow2"
        fmt = "raw" if prev == "full.raw" else "qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", prev, "-F", fmt,
                        f"{d}/{inc}"], check=True)
        q.cmd("blockdev-add", driver="qcow2", node_name=f"i{k}", backing=None,
              file={"driver": "file", "filename": f"{d}/{inc}"})
        q.cmd("blockdev-backup", device="t", target=f"i{k}", sync="incremental", bitmap="inc",
              job_id=f"b{k}", speed=1)
        # Written while the job runs: not part of this backup.
        qemu_io(uri, f"write -P {30 + k} {k}M 8k", "write -P 99 4M 64k")
        q.cmd("block-job-set-speed", device=f"b{k}", speed=0)
        wait_job_gone([(q, d)], f"b{k}")
        q.cmd("blockdev-del", node_name=f"i{k}")
        r = subprocess.run(["qemu-img", "compare", "-f", "qcow2", "-F", "raw", f"{d}/{inc}",
                            shadow], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        # Only the changed clusters are in it (not a full copy): this round's
        # writes and the previous job's, each within a few 64 KiB clusters.
        m = json.loads(subprocess.run(["qemu-img", "map", "--output=json", f"{d}/{inc}"],
                                      capture_output=True, text=True, check=True).stdout)
        own = sum(e["length"] for e in m if e["data"] and e["depth"] == 0)
        assert 0 < own <= 8 * 64 * 1024, m
        both(f"write -P {30 + k} {k}M 8k", "write -P 99 4M 64k")
        prev = inc


def test_transaction_new_bitmap_for_backup_undone(pair):  # noqa: F811
    """A transaction that adds a bitmap and starts a backup from it, then
    fails: the job gives the bitmap back before the bitmap is taken away
    again (once, it wrote into the freed bitmap)."""
    peers = pair()
    images(peers)
    same_session(peers, SETUP[:1] + [
        ("blockdev-add", {"driver": "raw", "node-name": "g",
                          "file": {"driver": "file", "filename": "@DIR@/r.raw"}}),
        ("transaction", {"actions": [
            {"type": B + "add", "data": {"node": "t", "name": "n"}},
            {"type": "blockdev-backup", "data": {"device": "t", "target": "g", "job-id": "j",
                                                 "sync": "bitmap", "bitmap": "n",
                                                 "bitmap-mode": "on-success"}},
            {"type": "abort", "data": {}}]}),
        ("query-block-jobs", {}),
        (B + "remove", {"node": "t", "name": "n"}),
    ])
    assert bitmaps(peers)["t"] is None


def test_exported_bitmap_keeps_its_node(pair):  # noqa: F811
    """An export of a bitmap of another node keeps that node: deleting the
    node while it is exported leaves the export working (once, the bitmap
    went with the node and the export read freed memory)."""
    import subprocess
    q, d = pair()[1]
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", f"{d}/t.qcow2", "8M"], check=True)
    open(f"{d}/r.raw", "wb").truncate(8 * MiB)
    for name, args in SETUP[:3]:
        r = q.execute(name, json.loads(json.dumps(args).replace("@DIR@", d)))
        assert "error" not in r, r
    assert q.execute(B + "add", {"node": "r", "name": "x", "disabled": True}) == {"return": {}}
    r = q.execute("block-export-add", {"type": "nbd", "id": "e", "node-name": "t",
                                       "bitmaps": [{"node": "r", "name": "x"}]})
    assert r == {"return": {}}, r
    q.execute("blockdev-del", {"node-name": "r"})
    out = subprocess.run(["nbdinfo", "--map=qemu:dirty-bitmap:x", f"nbd+unix:///t?socket={d}/n.sock"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "clean" in out.stdout, out.stdout + out.stderr
    q.cmd("block-export-del", id="e")
    wait_until(lambda: not q.cmd("query-block-exports"))
    q.cmd("query-named-block-nodes")


def test_nbd_server_add_bitmap_matches(pair):  # noqa: F811
    """The deprecated nbd-server-add takes one "bitmap": the same refusals,
    and the export offers its context (once refused as unknown)."""
    import subprocess
    peers = pair()
    images(peers)
    same_session(peers, SETUP + [
        (B + "add", {"node": "t", "name": "on"}),
        (B + "add", {"node": "t", "name": "off", "disabled": True}),
        ("nbd-server-add", {"device": "t", "name": "a", "bitmap": "nope"}),
        ("nbd-server-add", {"device": "t", "name": "a", "bitmap": "on"}),
        ("nbd-server-add", {"device": "t", "name": "a", "bitmap": "off"}),
        ("query-block-exports", {}),
    ])
    ctxs = []
    for q, d in peers:
        r = subprocess.run(["nbdinfo", "--json", f"nbd+unix:///a?socket={d}/n.sock"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        ctxs.append(sorted(json.loads(r.stdout)["exports"][0]["contexts"]))
    assert ctxs[1] == ctxs[0] and "qemu:dirty-bitmap:off" in ctxs[1], ctxs
