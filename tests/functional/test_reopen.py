"""blockdev-reopen: the same sessions against qemu-storage-daemon (replies and
errors), the node's state after each, and the options blockd refuses to
change where qemu-storage-daemon would (README, "Differences")."""
import json
import os
import subprocess
import time

from test_chain import chain_view, make_chain, qemu_io
from test_qsd_compat_objects import pair, same_session  # noqa: F401  (fixture)


def add(name, backing=None, ro=False):
    return ("blockdev-add", {"driver": "qcow2", "node-name": name, "read-only": ro,
                             "backing": backing,
                             "file": {"driver": "file", "node-name": f"{name}f",
                                      "filename": f"@DIR@/{name}.qcow2"}})


def node(name, backing=None, ro=False, **extra):
    o = {"driver": "qcow2", "node-name": name, "file": f"{name}f"}
    if backing is not False:
        o["backing"] = backing
    if ro:
        o["read-only"] = True
    o.update(extra)
    return o


def reopen(*opts):
    return ("blockdev-reopen", {"options": list(opts)})


def tf(**extra):
    return dict({"driver": "file", "node-name": "tf", "filename": "@DIR@/t.qcow2"}, **extra)


CHAIN = [add("b", ro=True), add("m", "b", ro=True), add("t", "m")]


def test_reopen_matches(pair):  # noqa: F811
    peers = pair()
    for q, d in peers:
        make_chain(d)
    same_session(peers, CHAIN + [
        reopen({"node-name": "nope", "driver": "qcow2"}),
        reopen({"driver": "qcow2", "file": "tf"}),
        reopen({"node-name": "nope", "driver": "qcow2", "file": "tf"}),
        reopen({"node-name": "t", "driver": "raw", "file": "tf"}),
        reopen({"node-name": "t", "driver": "raw", "file": "tf", "backing": "m"}),
        reopen(node("t", backing=False)),
        reopen(node("t", "zz")),
        reopen(node("t", "m", discard="sometimes")),
        reopen(node("t", "m", file=tf(filename="@DIR@/x.qcow2"))),
        reopen(node("t", "m", file=tf(**{"node-name": "zz"}))),
        reopen(node("t", "m", file=tf(locking="off"))),
        reopen(node("t", "m", file=tf(aio="native"))),
        reopen(node("t", "m"), node("m", "t", ro=True)),
        # Both succeed or neither: m's error leaves t read-write.
        reopen(node("t", "m", ro=True), node("m", "t", ro=True)),
        # read-only and back, discard and detect-zeroes, the same file by value.
        reopen(node("t", "m", ro=True)),
        reopen(node("t", "m", file=tf(), discard="unmap", **{"detect-zeroes": "unmap"})),
        reopen(node("t", "m", **{"detect-zeroes": "on", "auto-read-only": True})),
        reopen(node("m", "b", ro=True), node("t", "m")),
    ])
    for q, d in peers:
        view = chain_view(q, d)
        assert view["t"] == (2, False) and view["m"] == (1, True), view
        t = next(n for n in q.cmd("query-named-block-nodes") if n["node-name"] == "t")
        assert t["detect_zeroes"] == "off"      # left out: back to the default
    # The backing link: t on b directly, then on nothing, then back on m.
    same_session(peers, [reopen(node("t", "b"))])
    for q, d in peers:
        assert chain_view(q, d)["t"] == (1, False)
    same_session(peers, [reopen(node("t", None))])
    for q, d in peers:
        assert chain_view(q, d)["t"] == (0, False)
    same_session(peers, [reopen(node("t", "m"))])
    for q, d in peers:
        assert chain_view(q, d)["t"] == (2, False)


def test_reopen_under_export_matches(pair):  # noqa: F811
    """A node that an export writes cannot become read-only; a backing node
    made read-write for a while keeps its data."""
    peers = pair()
    for q, d in peers:
        make_chain(d)
    same_session(peers, CHAIN + [
        ("nbd-server-start", {"addr": {"type": "unix", "data": {"path": "@DIR@/n.sock"}}}),
        ("block-export-add", {"type": "nbd", "id": "e", "node-name": "t", "writable": True}),
        reopen(node("t", "m", ro=True)),
        # m's file, named, stays read-only; given by value, or reopened in
        # the same command, it follows.
        reopen(node("m", "b", ro=False)),
        reopen(node("m", "b", ro=False, file={"driver": "file", "node-name": "mf",
                                              "filename": "@DIR@/m.qcow2"})),
        reopen(node("m", "b", ro=True)),
        reopen(node("m", "b", ro=False),
               {"driver": "file", "node-name": "mf", "filename": "@DIR@/m.qcow2"}),
    ])
    for q, d in peers:
        assert chain_view(q, d)["m"] == (1, False)
    same_session(peers, [reopen(node("m", "b", ro=True))])
    for q, d in peers:
        qemu_io(f"nbd+unix:///t?socket={d}/n.sock", "read -P 2 1M 512k", "read -P 3 2M 512k")


def test_reopen_refusals(pair):  # noqa: F811
    """Options blockd does not change on a running node: refused by name,
    nothing changed (qemu-storage-daemon changes them)."""
    peers = pair()
    q, d = peers[1]
    make_chain(d)
    for name, args in CHAIN:
        q.execute(name, json.loads(json.dumps(args).replace("@DIR@", d)))
    for opts, msg in (
            (node("t", "m", **{"lazy-refcounts": True}), "Cannot change the option 'lazy-refcounts'"),
            (node("t", "m", file="mf"), "blockd cannot replace the file child of 't'"),
            (node("t", {"driver": "qcow2", "node-name": "m", "file": "mf", "backing": "b"}),
             "blockd cannot reopen the backing child of 't' with new options"),
            (node("t", "m", ro=True), None)):
        r = q.execute("blockdev-reopen", {"options": [opts]})
        if msg is None:
            assert r == {"return": {}}
        else:
            assert msg in r["error"]["desc"], r
            assert chain_view(q, d)["t"] == (2, False)
    r = subprocess.run(["qemu-img", "check", "-U", f"{d}/t.qcow2"], capture_output=True)
    assert r.returncode == 0


def test_amend_matches(pair):  # noqa: F811
    """x-blockdev-amend: qcow2 amends only encryption key slots; blockd opens
    no encrypted image, so the job answers as qemu-storage-daemon does for
    an image without encryption, and succeeds with nothing to change."""
    peers = pair()
    for q, d in peers:
        make_chain(d)
        open(f"{d}/r.raw", "wb").truncate(1 << 20)
    amend = "x-blockdev-amend"
    same_session(peers, CHAIN + [
        ("blockdev-add", {"driver": "raw", "node-name": "r",
                          "file": {"driver": "file", "filename": "@DIR@/r.raw"}}),
        (amend, {"job-id": "a1", "node-name": "nope", "options": {"driver": "qcow2"}}),
        (amend, {"job-id": "a1", "node-name": "r", "options": {"driver": "raw"}}),
        (amend, {"job-id": "a1", "node-name": "t", "options": {"driver": "raw"}}),
        (amend, {"job-id": "a1", "node-name": "t", "options": {"driver": "qcow2", "size": 5}}),
        (amend, {"job-id": "a1", "node-name": "t",
                 "options": {"driver": "qcow2", "encrypt": {"state": "active"}}}),
        (amend, {"job-id": "a1", "node-name": "t", "options": {"driver": "qcow2"}}),
        (amend, {"job-id": "a1", "node-name": "t", "options": {"driver": "qcow2"}}),
        (amend, {"job-id": "a2", "node-name": "t",
                 "options": {"driver": "qcow2", "encrypt": {"format": "luks", "state": "active",
                                                            "new-secret": "s"}}}),
        (amend, {"job-id": "a3", "node-name": "m", "options": {"driver": "qcow2"},
                 "force": True}),
    ])
    for q, d in peers:
        deadline = time.monotonic() + 10
        while any(j["status"] != "concluded" for j in q.cmd("query-jobs")):
            assert time.monotonic() < deadline
            time.sleep(0.01)
    same_session(peers, [("query-jobs", {})] +
                 [("job-dismiss", {"id": j}) for j in ("a1", "a2", "a3")])
    for q, d in peers:
        q.execute("blockdev-del", {"node-name": "t"})
        r = subprocess.run(["qemu-img", "check", f"{d}/t.qcow2"], capture_output=True)
        assert r.returncode == 0


def test_cache_inherited_matches(pair):  # noqa: F811
    """cache.direct and cache.no-flush given to a format node reach its file
    and the backing chain opened from its header, as in qemu-storage-daemon
    (blockd used to accept them there and apply them nowhere)."""
    peers = pair()
    for q, d in peers:
        make_chain(d)
    same_session(peers, [
        ("blockdev-add", {"driver": "qcow2", "node-name": "t",
                          "cache": {"direct": True, "no-flush": True},
                          "file": {"driver": "file", "filename": "@DIR@/t.qcow2"}}),
        ("blockdev-add", {"driver": "qcow2", "node-name": "b2", "read-only": True,
                          "cache": {"no-flush": True}, "backing": None,
                          "file": {"driver": "file", "filename": "@DIR@/b.qcow2",
                                   "cache": {"no-flush": False}}}),
    ])
    views = []
    for q, d in peers:
        nodes = q.cmd("query-named-block-nodes")
        views.append(sorted((n["image"]["filename"].replace(d, "@DIR@")
                             if not n["image"]["filename"].startswith("json:") else n["drv"],
                             n["drv"], n["cache"]["direct"], n["cache"]["no-flush"])
                            for n in nodes))
    assert views[1] == views[0]
    assert ("@DIR@/m.qcow2", "file", True, True) in views[1]


def cache_view(q, d):
    """Each node (auto-named ones by file name): cache.direct, cache.no-flush."""
    return sorted((n["node-name"] if not n["node-name"].startswith("#")
                   else n["image"]["filename"].replace(d, "@DIR@"),
                   n["cache"]["direct"], n["cache"]["no-flush"])
                  for n in q.cmd("query-named-block-nodes"))


def test_reopen_cache_matches(pair):  # noqa: F811
    """cache.direct and cache.no-flush change on a running node; an inline
    child follows its parent (unless its own options say otherwise), a
    child named by reference keeps its own, as in qemu-storage-daemon."""
    peers = pair()
    for q, d in peers:
        make_chain(d)
    r = {"driver": "file", "node-name": "rf", "filename": "@DIR@/m.qcow2"}
    steps = [
        ("blockdev-add", {"driver": "file", "node-name": "tf", "filename": "@DIR@/t.qcow2"}),
        ("blockdev-add", {"driver": "qcow2", "node-name": "t", "file": "tf", "backing": None}),
        ("blockdev-add", {"driver": "qcow2", "node-name": "r", "file": r, "backing": None}),
        # By reference: the parent's mode only.
        reopen(node("t", None, cache={"direct": True})),
        reopen(tf(cache={"direct": True, "no-flush": True})),
        reopen(node("t", None, cache={"no-flush": True})),
        reopen(node("t", None, file=tf())),
        # Inline: the child follows, unless it says otherwise.
        reopen(node("r", None, file="rf", cache={"no-flush": True})),
        reopen(node("r", None, file=dict(r, cache={"direct": True}))),
        reopen(node("r", None, file=r, cache={"direct": True})),
        reopen(node("r", None, file=dict(r, cache={"direct": False}), cache={"direct": True})),
        reopen({"driver": "qcow2", "node-name": "r", "cache": {"direct": True}}),
        # aio=native is kept without O_DIRECT, as qemu-storage-daemon keeps it.
        ("blockdev-add", {"driver": "file", "node-name": "g", "filename": "@DIR@/b.qcow2",
                          "aio": "native", "cache": {"direct": True}, "read-only": True}),
        reopen({"driver": "file", "node-name": "g", "filename": "@DIR@/b.qcow2",
                "aio": "native", "read-only": True}),
    ]
    for step in steps:
        same_session(peers, [step])
        views = [cache_view(q, d) for q, d in peers]
        assert views[1] == views[0], step


def daemon_fd_flags(q, path):
    """The open flags of the daemon's descriptors on @path (its QMP peer)."""
    pid = q.server_pid()
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == path:
                with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                    flags = [ln for ln in f if ln.startswith("flags:")][0]
                out.append(int(flags.split()[1], 8))
        except OSError:
            pass
    return out


def test_reopen_direct_under_writes(pair):  # noqa: F811
    """O_DIRECT goes on and off under an exported, written node: the file is
    opened again, requests that are not sector-aligned still land (the
    block layer aligns them), nothing is lost."""
    peers = pair()
    q, d = peers[1]
    make_chain(d)
    for name, args in CHAIN:
        q.execute(name, json.loads(json.dumps(args).replace("@DIR@", d)))
    q.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": f"{d}/n.sock"}})
    q.cmd("block-export-add", type="nbd", id="e", **{"node-name": "t"}, writable=True)
    uri = f"nbd+unix:///t?socket={d}/n.sock"
    tfile = f"{d}/t.qcow2"
    for i, direct in enumerate([True, False, True, True, False]):
        q.cmd("blockdev-reopen", options=[tf(filename=tfile, cache={"direct": direct})])
        assert all(bool(f & os.O_DIRECT) == direct for f in daemon_fd_flags(q, tfile))
        assert daemon_fd_flags(q, tfile)
        qemu_io(uri, f"write -P {i + 10} {1000 + i * 4099} 3333")
    for i in range(5):
        qemu_io(uri, f"read -P {i + 10} {1000 + i * 4099} 3333")
    q.cmd("block-export-del", id="e")
    deadline = time.monotonic() + 10
    while q.cmd("query-block-exports") and time.monotonic() < deadline:
        time.sleep(0.02)
    for n in ("t", "m", "b"):
        q.cmd("blockdev-del", **{"node-name": n})
    r = subprocess.run(["qemu-img", "check", tfile], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout
