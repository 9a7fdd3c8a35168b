"""blockdev-snapshot: an overlay takes a node's place while a client keeps
writing; the same session against qemu-storage-daemon, and qemu-img as the
judge of the images."""
import json
import os
import subprocess

from nbdutil import MiB
from test_qsd_compat_objects import pair, same_session  # noqa: F401  (fixture)


def qemu_io(uri, *cmds, fmt="raw"):
    args = ["qemu-io", "-f", fmt, "-t", "writeback", uri]
    for c in cmds:
        args += ["-c", c]
    r = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "verification failed" not in r.stdout, r.stdout + r.stderr
    return r.stdout


def make_images(d):
    base, ov, ov2 = (os.path.join(d, n) for n in ("b.qcow2", "o.qcow2", "o2.qcow2"))
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", base, "4M"], check=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", ov],
                   check=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", ov, "-F", "qcow2", ov2],
                   check=True)
    return base, ov, ov2


def test_blockdev_snapshot_matches(pair):  # noqa: F811
    peers = pair()
    for q, d in peers:
        make_images(d)
    calls = [
        ("blockdev-add", {"driver": "qcow2", "node-name": "base",
                          "file": {"driver": "file", "filename": "@DIR@/b.qcow2"}}),
        ("blockdev-add", {"driver": "qcow2", "node-name": "ov", "backing": None,
                          "file": {"driver": "file", "filename": "@DIR@/o.qcow2"}}),
        ("blockdev-add", {"driver": "qcow2", "node-name": "ov2", "backing": None,
                          "file": {"driver": "file", "filename": "@DIR@/o2.qcow2"}}),
        ("blockdev-add", {"driver": "file", "node-name": "rawf",
                          "filename": "@DIR@/b.qcow2", "read-only": True,
                          "force-share": True}),
        ("nbd-server-start", {"addr": {"type": "unix", "data": {"path": "@DIR@/n.sock"}}}),
        ("block-export-add", {"type": "nbd", "id": "e", "node-name": "base",
                              "writable": True}),
        ("blockdev-snapshot", {"node": "nope", "overlay": "ov"}),
        ("blockdev-snapshot", {"node": "base", "overlay": "nope"}),
        ("blockdev-snapshot", {"node": "base", "overlay": "rawf"}),
        ("blockdev-snapshot", {"node": "base", "overlay": "base"}),
    ]
    same_session(peers, calls)
    for q, d in peers:
        qemu_io(f"nbd+unix:///base?socket={d}/n.sock", "write -P 1 0 4M")
    same_session(peers, [
        ("blockdev-snapshot", {"node": "base", "overlay": "ov"}),
        ("blockdev-snapshot", {"node": "base", "overlay": "ov"}),
        ("query-block-exports", None),
    ])
    for q, d in peers:
        uri = f"nbd+unix:///base?socket={d}/n.sock"
        qemu_io(uri, "write -P 2 1M 1M", "read -P 1 0 1M", "read -P 2 1M 1M",
                "read -P 1 2M 2M")
    same_session(peers, [("blockdev-snapshot", {"node": "ov", "overlay": "ov2"}),
                         ("query-block-exports", None)])
    chains = []
    for q, d in peers:
        uri = f"nbd+unix:///base?socket={d}/n.sock"
        qemu_io(uri, "write -P 3 3M 512k", "read -P 1 0 1M", "read -P 2 1M 1M",
                "read -P 1 2M 1M", "read -P 3 3M 512k")
        nodes = {n["node-name"]: n for n in q.cmd("query-named-block-nodes")}
        chains.append([(nodes[n]["backing_file_depth"], nodes[n]["image"]["filename"]
                        .replace(d, "@DIR@")) for n in ("base", "ov", "ov2")])
        q.cmd("block-export-del", id="e")
        for n in ("ov2", "ov", "base"):
            q.cmd("blockdev-del", node_name=n)
        for img in ("b", "o", "o2"):
            r = subprocess.run(["qemu-img", "check", f"{d}/{img}.qcow2"], capture_output=True,
                               text=True)
            assert r.returncode == 0, r.stdout
        # The chain as qemu-img sees it, with the guest's data in it.
        info = json.loads(subprocess.run(["qemu-img", "info", "--output=json",
                                          "--backing-chain", f"{d}/o2.qcow2"],
                                         capture_output=True, text=True, check=True).stdout)
        assert [os.path.basename(i["filename"]) for i in info] == ["o2.qcow2", "o.qcow2",
                                                                   "b.qcow2"]
        qemu_io(f"{d}/o2.qcow2", "read -P 1 0 1M", "read -P 2 1M 1M", "read -P 3 3M 512k",
                fmt="qcow2")
        qemu_io(f"{d}/b.qcow2", "read -P 1 0 4M", fmt="qcow2")
    assert chains[1] == chains[0]
    assert chains[1][2][0] == 2


def test_snapshots_in_a_transaction_match(pair):  # noqa: F811
    """Two disks snapshotted in one transaction; a transaction whose second
    action fails leaves the first disk as it was; as in
    qemu-storage-daemon."""
    peers = pair()
    for q, d in peers:
        for disk in ("x", "y"):
            base = os.path.join(d, f"{disk}.qcow2")
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", base, "1M"], check=True)
            for n in (1, 2):
                subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F",
                                "qcow2", os.path.join(d, f"{disk}{n}.qcow2")], check=True)
    calls = [("nbd-server-start", {"addr": {"type": "unix",
                                            "data": {"path": "@DIR@/n.sock"}}})]
    for disk in ("x", "y"):
        calls.append(("blockdev-add", {"driver": "qcow2", "node-name": disk, "file": {
            "driver": "file", "filename": f"@DIR@/{disk}.qcow2"}}))
        for n in (1, 2):
            calls.append(("blockdev-add", {"driver": "qcow2", "node-name": f"{disk}{n}",
                                           "backing": None, "file": {
                                               "driver": "file",
                                               "filename": f"@DIR@/{disk}{n}.qcow2"}}))
        calls.append(("block-export-add", {"type": "nbd", "id": f"e{disk}",
                                           "node-name": disk, "writable": True}))

    def snap(node, overlay):
        return {"type": "blockdev-snapshot", "data": {"node": node, "overlay": overlay}}
    calls += [
        # The second action fails (x is in use): y1 must not stay in place.
        ("transaction", {"actions": [snap("y", "y1"), snap("y", "x")]}),
        ("query-block-exports", None),
        ("transaction", {"actions": [snap("x", "x1"), snap("y", "y2")],
                         "properties": {"completion-mode": "grouped"}}),
        ("transaction", {"actions": [snap("x", "x1"), snap("y", "y2")]}),
        ("query-block-exports", None),
        ("transaction", {"actions": [snap("x1", "x2"), {"type": "abort", "data": {}}]}),
        ("query-block-exports", None),
    ]
    same_session(peers, calls)
    for q, d in peers:
        depth = {n["node-name"]: n["backing_file_depth"]
                 for n in q.cmd("query-named-block-nodes")}
        assert (depth["x1"], depth["y2"], depth["y1"], depth["x2"]) == (1, 1, 0, 0), depth
        # y1 was put back: it can still be the overlay of y's next snapshot.
        q.cmd("blockdev-snapshot", node="y2", overlay="y1")
