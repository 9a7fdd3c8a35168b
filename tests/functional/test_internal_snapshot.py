"""Internal qcow2 snapshots on a running image: blockdev-snapshot-internal-sync
and blockdev-snapshot-delete-internal-sync (also as transaction actions),
with qemu-storage-daemon's errors; qemu-img lists, checks and applies what
blockd made, and snapshots that qemu-img made survive blockd's writes."""
import json
import os
import random
import subprocess
import time

from nbdutil import wait_for
from test_chain import CHAIN, make_chain
from test_jobs import Jobs, imgdir  # noqa: F401 (fixture)
from test_qsd_compat_objects import pair, same_session  # noqa: F401  (fixture)

I = "blockdev-snapshot-internal-sync"
D = "blockdev-snapshot-delete-internal-sync"
MiB = 1 << 20


def qemu_img(*args):
    return subprocess.run(["qemu-img", *args], check=True, capture_output=True,
                          text=True).stdout


def qemu_io(img, *cmds):
    args = ["qemu-io", "-f", "qcow2", img]
    for c in cmds:
        args += ["-c", c]
    r = subprocess.run(args, capture_output=True, text=True)
    assert r.returncode == 0 and "failed" not in r.stdout, r.stdout + r.stderr


def check_clean(img):
    r = subprocess.run(["qemu-img", "check", "--output=json", img], capture_output=True,
                       text=True)
    info = json.loads(r.stdout)
    assert r.returncode == 0 and not info.get("leaks") and not info.get("corruptions"), r.stdout
    return info


def snapshots(img):
    return [(s["id"], s["name"]) for s in json.loads(
        qemu_img("info", "--output=json", img)).get("snapshots", [])]


def close_node(j):
    """Remove export "e" (once its clients are gone) and node "d"."""
    j.qmp.cmd("block-export-del", id="e")
    wait_for(lambda: not j.qmp.cmd("query-block-exports"), what="export gone")
    j.qmp.cmd("blockdev-del", node_name="d")
    j.assert_healthy()


def timeless(reply):
    """A SnapshotInfo without the clock readings."""
    r = reply.get("return")
    if isinstance(r, dict):
        for k in ("date-sec", "date-nsec", "vm-clock-sec", "vm-clock-nsec"):
            assert isinstance(r.pop(k), int)
    return reply


def test_internal_snapshot_matches(pair):  # noqa: F811
    peers = pair()
    for q, d in peers:
        make_chain(d)
        open(f"{d}/r.raw", "wb").truncate(MiB)
    raw = ("blockdev-add", {"driver": "raw", "node-name": "r",
                            "file": {"driver": "file", "filename": "@DIR@/r.raw"}})
    same_session(peers, CHAIN + [raw] + [
        (I, {"device": "nope", "name": "s1"}),
        (I, {"device": "m", "name": "s1"}),
        (I, {"device": "r", "name": "s1"}),
        (I, {"device": "t", "name": ""}),
        (I, {"device": "t", "name": "s1"}),
        (I, {"device": "t", "name": "s1"}),
        (I, {"device": "t", "name": "s2"}),
        (D, {"device": "t"}),
        (D, {"device": "nope", "name": "s1"}),
        (D, {"device": "m", "name": "s1"}),
        (D, {"device": "t", "name": "zz"}),
        (D, {"device": "t", "id": "9"}),
        (D, {"device": "t", "id": "1", "name": "s2"}),
        ("transaction", {"actions": [{"type": I, "data": {"device": "t", "name": "s3"}},
                                     {"type": "abort", "data": {}}]}),
        ("transaction", {"actions": [{"type": I, "data": {"device": "t", "name": "s3"}}]}),
    ])
    replies = [[timeless(q.execute(D, a)) for a in ({"device": "t", "id": "1"},
                                                     {"device": "t", "name": "s3"})]
               for q, d in peers]
    assert replies[1] == replies[0]
    assert replies[1][0] == {"return": {"id": "1", "name": "s1", "vm-state-size": 0}}
    for q, d in peers:
        q.execute("blockdev-del", {"node-name": "t"})
    for q, d in peers:
        assert snapshots(f"{d}/t.qcow2") == [("2", "s2")]
        check_clean(f"{d}/t.qcow2")


def test_snapshots_under_writes(blockd, sdir, imgdir):  # noqa: F811
    """Snapshots taken and deleted while a client writes through an iothread;
    each one that is kept holds exactly the data of its moment (qemu-img
    snapshot -a), qemu-img's own snapshot survives, no cluster leaks."""
    img = os.path.join(imgdir, "d.qcow2")
    size = 8 * MiB
    qemu_img("create", "-q", "-f", "qcow2", img, str(size))
    qemu_io(img, "write -c -P 2 2M 1M", "write -P 1 0 2M", "write -P 1 3M 5M")  # compressed too
    qemu_img("snapshot", "-c", "pre", img)
    j = Jobs(blockd, sdir, {})
    q = j.qmp
    q.cmd("object-add", qom_type="iothread", id="io0")
    q.cmd("blockdev-add", driver="qcow2", node_name="d",
          file={"driver": "file", "filename": img})
    r = q.execute("block-export-add", {"type": "nbd", "id": "e", "node-name": "d",
                                       "name": "vm", "writable": True, "iothread": "io0"})
    assert "error" not in r, r
    j.export = "vm"
    h = j.client()
    shadow = bytearray(h.pread(size, 0))
    rnd = random.Random(5)
    kept = {}
    for k in range(6):
        for _ in range(40):
            n = rnd.randrange(1, 129) * 512
            off = rnd.randrange(0, (size - n) // 512 + 1) * 512
            data = rnd.randbytes(n)
            h.pwrite(data, off)
            shadow[off:off + n] = data
        assert q.execute(I, {"device": "d", "name": f"s{k}"}) == {"return": {}}
        kept[f"s{k}"] = bytes(shadow)
        if k % 2:
            info = q.execute(D, {"device": "d", "name": f"s{k - 1}"})["return"]
            assert info["name"] == f"s{k - 1}"
            del kept[f"s{k - 1}"]
    final = bytes(shadow)
    assert h.pread(size, 0) == final
    h.shutdown()
    close_node(j)
    check_clean(img)
    assert [n for _, n in snapshots(img)] == ["pre"] + sorted(kept)
    for name, data in list(kept.items()) + [("pre", None)]:
        copy = os.path.join(imgdir, f"{name}.qcow2")
        qemu_img("convert", "-O", "qcow2", "-l", f"snapshot.name={name}", img, copy)
        raw = copy + ".raw"
        qemu_img("convert", "-O", "raw", copy, raw)
        with open(raw, "rb") as f:
            got = f.read()
        if data is None:        # qemu-img's: the patterns from before blockd
            assert got == b"\x01" * (2 * MiB) + b"\x02" * MiB + b"\x01" * (5 * MiB)
        else:
            assert got == data, name
    # Applying one brings its data back as the active layer.
    last = sorted(kept)[-1]
    qemu_img("snapshot", "-a", last, img)
    with open(os.path.join(imgdir, "a.raw"), "wb"):
        pass
    qemu_img("convert", "-O", "raw", img, os.path.join(imgdir, "a.raw"))
    with open(os.path.join(imgdir, "a.raw"), "rb") as f:
        assert f.read() == kept[last]
    check_clean(img)


def test_killed_while_snapshotting(blockd, sdir, imgdir):  # noqa: F811
    """SIGKILL while snapshots are taken and deleted in a loop: qemu-img check
    finds at most leaked clusters, and every snapshot listed opens."""
    img = os.path.join(imgdir, "d.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", img, "16M")
    qemu_io(img, "write -P 3 0 16M")
    j = Jobs(blockd, sdir, {})
    q = j.qmp
    q.cmd("blockdev-add", driver="qcow2", node_name="d",
          file={"driver": "file", "filename": img})
    for k in range(4):
        assert q.execute(I, {"device": "d", "name": f"s{k}"}) == {"return": {}}
    for k in range(4, 40):
        q.send_raw(json.dumps({"execute": I, "arguments": {"device": "d", "name": f"s{k}"}}) +
                   json.dumps({"execute": D, "arguments": {"device": "d",
                                                           "name": f"s{k - 4}"}}))
    time.sleep(0.05)
    j.daemon.proc.kill()
    j.daemon.proc.wait()
    r = subprocess.run(["qemu-img", "check", "--output=json", img], capture_output=True,
                       text=True)
    info = json.loads(r.stdout)
    assert not info.get("corruptions") and not info.get("check-errors"), r.stdout
    for _, name in snapshots(img):
        qemu_img("convert", "-O", "raw", "-l", f"snapshot.name={name}", img,
                 os.path.join(imgdir, "x.raw"))


def test_snapshot_refused_cleanly(blockd, sdir, imgdir):  # noqa: F811
    """A snapshot that cannot be taken (1-bit refcounts hold no second
    reference; a name too long for the table) fails with a message and
    leaves a clean image that takes writes (once, a full refcount marked the
    image corrupt)."""
    img = os.path.join(imgdir, "r1.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", "-o", "refcount_bits=1", img, "4M")
    qemu_io(img, "write -P 5 0 1M")
    j = Jobs(blockd, sdir, {})
    q = j.qmp
    q.cmd("blockdev-add", driver="qcow2", node_name="d",
          file={"driver": "file", "filename": img})
    r = q.execute(I, {"device": "d", "name": "s1"})
    assert "Failed to create snapshot 's1' on device 'd'" in r["error"]["desc"], r
    r = q.execute(I, {"device": "d", "name": "n" * 2000})
    assert "too long" in r["error"]["desc"], r
    r = q.execute("block-export-add", {"type": "nbd", "id": "e", "node-name": "d",
                                       "writable": True})
    assert "error" not in r, r
    j.export = "d"
    h = j.client()
    h.pwrite(b"\x06" * 65536, 2 * MiB)
    h.flush()
    h.shutdown()
    close_node(j)
    check_clean(img)
    assert snapshots(img) == []
    qemu_io(img, "read -P 5 0 1M", "read -P 6 2M 64k")


def test_qemu_table_at_end_of_file(blockd, sdir, imgdir):  # noqa: F811
    """qemu-img leaves the snapshot table last in the file without the
    padding after its last entry (the file ends up to 7 bytes short of
    it): blockd reads it, adds and deletes snapshots, and the image stays
    clean (once, reading the padded table failed and no snapshot could be
    taken until a write grew the file)."""
    img = os.path.join(imgdir, "e.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", "-o", "cluster_size=512", img, "1M")
    qemu_io(img, "write -P 4 0 64k")
    qemu_img("snapshot", "-c", "pre", img)
    assert os.path.getsize(img) % 8, "the table is expected last, unpadded"
    j = Jobs(blockd, sdir, {})
    q = j.qmp
    q.cmd("blockdev-add", driver="qcow2", node_name="d",
          file={"driver": "file", "filename": img})
    for cmd, name in ((I, "s1"), (D, "pre")):
        r = q.execute(cmd, {"device": "d", "name": name})
        assert "error" not in r, r
    q.cmd("blockdev-del", node_name="d")
    j.assert_healthy()
    check_clean(img)
    assert [n for _, n in snapshots(img)] == ["s1"]
    qemu_img("snapshot", "-a", "s1", img)
    qemu_io(img, "read -P 4 0 64k")
