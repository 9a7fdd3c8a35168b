"""Options that used to be accepted and ignored, and replies that used to
differ from qemu-storage-daemon's: each one now works, or is refused with
a message naming it.  Where qemu-storage-daemon is the reference, the same
session runs against it."""
import os
import subprocess
import time

import pytest

from conftest import BLOCKD
from qmp import QMP
from nbdutil import MiB, short_dir
from test_qsd_compat import QSD
from test_qsd_compat_objects import pair, same_session  # noqa: F401  (fixture)


def nbd_uri(d, name):
    return f"nbd+unix:///{name}?socket={d}/n.sock"


def qemu_io(uri, *cmds):
    # qemu-io's own default is writethrough: each write would carry FUA.
    args = ["qemu-io", "-f", "raw", "-t", "writeback", uri]
    for c in cmds:
        args += ["-c", c]
    r = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr + r.stdout
    return r.stdout


def shape(v):
    if isinstance(v, dict):
        return {k: shape(x) for k, x in v.items()}
    if isinstance(v, list):
        return [shape(v[0])] if v else []
    return "bool" if isinstance(v, bool) else "number" if isinstance(v, (int, float)) \
        else type(v).__name__


def test_detect_zeroes(pair):  # noqa: F811
    """detect-zeroes=unmap: a written block of zeroes becomes a hole; the
    node reports its setting; unmap without discard=unmap is refused."""
    peers = pair()
    for q, d in peers:
        img = os.path.join(d, "dz.raw")
        with open(img, "wb") as f:
            f.write(b"\xaa" * (4 * MiB))
        r = q.execute("blockdev-add", {"driver": "file", "node-name": "bad", "filename": img,
                                       "detect-zeroes": "unmap"})
        assert r["error"]["desc"] == ("setting detect-zeroes to unmap is not allowed "
                                      "without setting discard operation to unmap")
        q.cmd("blockdev-add", driver="file", node_name="f", filename=img, discard="unmap",
              detect_zeroes="unmap")
        node = [n for n in q.cmd("query-named-block-nodes") if n["node-name"] == "f"][0]
        assert node["detect_zeroes"] == "unmap"
        q.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": d + "/n.sock"}})
        q.cmd("block-export-add", type="nbd", id="e", node_name="f", writable=True)
        qemu_io(nbd_uri(d, "f"), "write -P 0 0 2M")
        assert os.stat(img).st_blocks * 512 <= 2 * MiB + 65536, os.stat(img).st_blocks
        assert qemu_io(nbd_uri(d, "f"), "read -P 0 0 2M", "read -P 0xaa 2M 2M")


def test_auto_read_only(tmp_path):
    """auto-read-only=on: an image the process may not write opens read-only
    instead of failing (a read-only mount here, as the tests run as root)."""
    mnt = tmp_path / "ro"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)]).returncode:
        pytest.fail("cannot mount a tmpfs (the tests need root)")
    try:
        (mnt / "x.raw").write_bytes(b"\0" * MiB)
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        d = short_dir()
        sock = os.path.join(d, "q.sock")
        p = subprocess.Popen([BLOCKD, "--chardev", f"socket,id=m,path={sock},server=on,wait=off",
                              "--monitor", "m"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
        q = QMP(sock)
        r = q.execute("blockdev-add", {"driver": "file", "node-name": "a",
                                       "filename": str(mnt / "x.raw")})
        assert "Read-only file system" in r["error"]["desc"]
        q.cmd("blockdev-add", driver="file", node_name="b", filename=str(mnt / "x.raw"),
              auto_read_only=True)
        node = [n for n in q.cmd("query-named-block-nodes") if n["node-name"] == "b"][0]
        assert node["ro"] is True
        p.kill()
        p.wait()
    finally:
        subprocess.run(["umount", str(mnt)])


def test_file_driver_refuses_block_devices(pair):  # noqa: F811
    """As QEMU: a block device is host_device's, not file's."""
    peers = pair()
    same_session(peers, [
        ("blockdev-add", {"driver": "file", "node-name": "z", "filename": "/dev/zero"}),
    ])


def test_export_writethrough_flushes_each_write(tmp_path):
    """writethrough=on: every write reaches stable storage before its reply
    (a flush per write shows in the node's statistics)."""
    d = short_dir()
    img = tmp_path / "w.raw"
    img.write_bytes(b"\0" * MiB)
    sock = os.path.join(d, "q.sock")
    p = subprocess.Popen([BLOCKD, "--chardev", f"socket,id=m,path={sock},server=on,wait=off",
                          "--monitor", "m", "--blockdev", f"file,node-name=f,filename={img}",
                          "--nbd-server", f"addr.type=unix,addr.path={d}/n.sock",
                          "--export", "nbd,id=a,node-name=f,name=a,writable=on",
                          "--export", "nbd,id=b,node-name=f,name=b,writable=on,writethrough=on"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    q = QMP(sock)

    def flushes():
        return q.cmd("query-blockstats", query_nodes=True)[0]["stats"]["flush_operations"]
    before = flushes()
    qemu_io(nbd_uri(d, "a"), *[f"write {i * 4096} 4k" for i in range(8)])
    plain = flushes() - before
    before = flushes()
    qemu_io(nbd_uri(d, "b"), *[f"write {i * 4096} 4k" for i in range(8)])
    through = flushes() - before
    assert through >= plain + 8, (plain, through)
    p.kill()
    p.wait()


def test_write_threshold_matches():
    """block-set-write-threshold: one BLOCK_WRITE_THRESHOLD event with the
    same members, then the threshold is disarmed."""
    out = []
    for prog in (QSD, BLOCKD):
        d = short_dir()
        with open(os.path.join(d, "t.raw"), "wb") as f:
            f.truncate(MiB)
        sock = os.path.join(d, "q.sock")
        p = subprocess.Popen([prog, "--chardev", f"socket,id=m,path={sock},server=on,wait=off",
                              "--monitor", "m",
                              "--blockdev", f"file,node-name=f,filename={d}/t.raw",
                              "--nbd-server", f"addr.type=unix,addr.path={d}/n.sock",
                              "--export", "nbd,id=e,node-name=f,writable=on"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        q = QMP(sock)
        r = [q.execute("block-set-write-threshold", {"node-name": "nope",
                                                     "write-threshold": 1})]
        q.cmd("block-set-write-threshold", node_name="f", write_threshold=8192)
        node = [n for n in q.cmd("query-named-block-nodes") if n["node-name"] == "f"][0]
        r.append(node["write_threshold"])
        qemu_io(nbd_uri(d, "f"), "write 0 4k", "write 8192 4k", "write 65536 4k")
        deadline = time.monotonic() + 5
        while not [e for e in q.events if e["event"] == "BLOCK_WRITE_THRESHOLD"]:
            q.sock.settimeout(max(0.1, deadline - time.monotonic()))
            q.events.append(q.recv())
        r.append([e["data"] for e in q.events if e["event"] == "BLOCK_WRITE_THRESHOLD"])
        node = [n for n in q.cmd("query-named-block-nodes") if n["node-name"] == "f"][0]
        r.append(node["write_threshold"])
        out.append(r)
        p.kill()
        p.wait()
    assert out[1] == out[0]


def test_blockstats_and_node_info_shapes_match():
    """query-blockstats and query-named-block-nodes of a qcow2 overlay over
    a qcow2 base: the members qemu-storage-daemon gives (blockd's counters
    count; qemu-storage-daemon's node counters stay zero)."""
    results = []
    for prog in (QSD, BLOCKD):
        d = short_dir()
        base, top = os.path.join(d, "b.qcow2"), os.path.join(d, "t.qcow2")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", base, "1M"], check=True)
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2",
                        top], check=True)
        sock = os.path.join(d, "q.sock")
        p = subprocess.Popen([prog, "--chardev", f"socket,id=m,path={sock},server=on,wait=off",
                              "--monitor", "m", "--blockdev",
                              f"driver=qcow2,node-name=t,file.driver=file,file.filename={top}"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        q = QMP(sock)
        nodes = {n["node-name"]: n for n in q.cmd("query-named-block-nodes")}
        stats = {s["node-name"]: s for s in q.cmd("query-blockstats", query_nodes=True)}
        results.append((shape(nodes["t"]),
                        os.path.basename(nodes["t"]["image"]["backing-filename"]),
                        nodes["t"]["image"]["format-specific"], shape(stats["t"]),
                        q.cmd("query-blockstats")))
        p.kill()
        p.wait()
    qsd, ours = results
    # Members blockd adds to BlockDeviceStats: idle_time_ns appears once a
    # request was done (as in QEMU); none has been here.
    assert ours == qsd


def test_null_co_block_status_is_a_hole():
    """null-co without read-zeroes: holes that do not read as zeroes."""
    maps = []
    for prog in (QSD, BLOCKD):
        d = short_dir()
        p = subprocess.Popen([prog, "--blockdev", "null-co,node-name=n,size=1048576",
                              "--nbd-server", f"addr.type=unix,addr.path={d}/n.sock",
                              "--export", "nbd,id=e,node-name=n"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(100):
            if os.path.exists(f"{d}/n.sock"):
                break
            time.sleep(0.05)
        r = subprocess.run(["nbdinfo", "--map", nbd_uri(d, "n")], capture_output=True,
                           text=True, env=dict(os.environ, PATH="/usr/bin:" + os.environ["PATH"]))
        maps.append(r.stdout)
        p.kill()
        p.wait()
    assert maps[1] == maps[0]
    assert "hole" in maps[1] and "zero" not in maps[1]


def test_qcow2_options_work_or_are_refused(pair):  # noqa: F811
    """pass-discard-*: freed clusters go back to the file per cause;
    l2-cache-entry-size other than the cluster size and lazy-refcounts on a
    version 2 image are refused by name."""
    (qsd, _), (q, d) = pair()
    img = os.path.join(d, "p.qcow2")
    v2 = os.path.join(d, "v2.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", img, "8M"], check=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=0.10", v2, "1M"],
                   check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 1 0 4M", img], check=True,
                   capture_output=True)
    r = q.execute("blockdev-add", {"driver": "qcow2", "node-name": "x", "l2-cache-entry-size": 4096,
                                   "file": {"driver": "file", "filename": img}})
    assert "l2-cache-entry-size" in r["error"]["desc"]
    r = q.execute("blockdev-add", {"driver": "qcow2", "node-name": "y", "lazy-refcounts": True,
                                   "file": {"driver": "file", "filename": v2}})
    assert r["error"]["desc"] == ("Lazy refcounts require a qcow2 image with at least qemu "
                                  "1.1 compatibility level")
    allocated = os.stat(img).st_blocks * 512
    # discard=unmap with pass-discard-request=off: the guest's discard frees
    # the clusters in the image but the file keeps its space.
    q.cmd("blockdev-add", driver="qcow2", node_name="p", discard="unmap",
          pass_discard_request=False, l2_cache_entry_size=65536,
          file={"driver": "file", "filename": img, "discard": "unmap"})
    q.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": d + "/n.sock"}})
    q.cmd("block-export-add", type="nbd", id="e", node_name="p", writable=True)
    qemu_io(nbd_uri(d, "p"), "discard 0 4M", "flush")
    assert os.stat(img).st_blocks * 512 >= allocated - 65536
    q.cmd("block-export-del", id="e")
    q.cmd("blockdev-del", node_name="p")
    # The default (pass-discard-request follows discard=unmap) gives it back.
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 1 0 4M", img], check=True,
                   capture_output=True)
    q.cmd("blockdev-add", driver="qcow2", node_name="p2", discard="unmap",
          file={"driver": "file", "filename": img, "discard": "unmap"})
    q.cmd("block-export-add", type="nbd", id="e2", node_name="p2", writable=True)
    qemu_io(nbd_uri(d, "p2"), "discard 0 4M", "flush")
    assert os.stat(img).st_blocks * 512 < allocated - 2 * MiB
    q.cmd("block-export-del", id="e2")
    q.cmd("blockdev-del", node_name="p2")
    r = subprocess.run(["qemu-img", "check", img], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout


def test_backup_options_match(pair):  # noqa: F811
    """x-perf is applied (or use-copy-range refused by name); bitmap-mode
    without a bitmap is refused as qemu-storage-daemon refuses it."""
    peers = pair("--blockdev", "null-co,node-name=s,size=1048576",
                 "--blockdev", "null-co,node-name=t,size=1048576")
    calls = []
    for extra in ({"bitmap-mode": "on-success"}, {"x-perf": {"max-workers": 0}},
                  {"x-perf": {"max-chunk": -1}}, {"x-perf": {"max-chunk": 1000}},
                  {"x-perf": {"bogus": 1}}):
        a = {"job-id": "j", "device": "s", "target": "t", "sync": "full"}
        a.update(extra)
        calls.append(("blockdev-backup", a))
    same_session(peers, calls)
    q = peers[1][0]
    r = q.execute("blockdev-backup", {"job-id": "j", "device": "s", "target": "t",
                                      "sync": "full", "x-perf": {"use-copy-range": True}})
    assert r["error"]["desc"] == "x-perf.use-copy-range is not supported by blockd"
    q.cmd("blockdev-backup", job_id="j", device="s", target="t", sync="full",
          x_perf={"max-workers": 2, "max-chunk": 131072})


def test_create_file_attributes(pair):  # noqa: F811
    """blockdev-create of a file takes nocow and extent-size-hint (hints
    the file system may ignore) and refuses a hint beyond 32 bits."""
    (_, _), (q, d) = pair()
    q.cmd("blockdev-create", job_id="c", options={"driver": "file", "filename": d + "/c.raw",
                                                  "size": MiB, "nocow": True,
                                                  "extent-size-hint": 2 * MiB})
    deadline = time.monotonic() + 10
    while q.cmd("query-jobs")[0]["status"] != "concluded" and time.monotonic() < deadline:
        time.sleep(0.05)
    job = q.cmd("query-jobs")[0]
    assert job["status"] == "concluded" and "error" not in job, job
    q.cmd("job-dismiss", id="c")
    assert os.path.getsize(d + "/c.raw") == MiB
    q.cmd("blockdev-create", job_id="c2", options={"driver": "file", "filename": d + "/d.raw",
                                                   "size": MiB, "extent-size-hint": 2 ** 33})
    deadline = time.monotonic() + 10
    while q.cmd("query-jobs")[0]["status"] != "concluded" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert q.cmd("query-jobs")[0]["error"] == "Extent size hint is too large"


def test_latency_histogram(tmp_path):
    """block-latency-histogram-set on a node: every request of a type lands
    in one bin; a list per type overrides "boundaries"; no list removes
    them.  (qemu-storage-daemon 7.2 has no such command.)"""
    d = short_dir()
    img = tmp_path / "h.raw"
    img.write_bytes(b"\0" * MiB)
    sock = os.path.join(d, "q.sock")
    p = subprocess.Popen([BLOCKD, "--chardev", f"socket,id=m,path={sock},server=on,wait=off",
                          "--monitor", "m", "--blockdev", f"file,node-name=f,filename={img}",
                          "--nbd-server", f"addr.type=unix,addr.path={d}/n.sock",
                          "--export", "nbd,id=e,node-name=f,writable=on"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    q = QMP(sock)
    r = q.execute("block-latency-histogram-set", {"id": "nope"})
    assert r["error"]["desc"] == "Device 'nope' not found"
    r = q.execute("block-latency-histogram-set", {"id": "f", "boundaries": [10, 5]})
    assert "ascending" in r["error"]["desc"]
    q.cmd("block-latency-histogram-set", id="f", boundaries=[1000, 1000000],
          boundaries_write=[10])
    qemu_io(nbd_uri(d, "f"), *[f"read {i * 4096} 4k" for i in range(5)],
            *[f"write {i * 4096} 4k" for i in range(3)])
    st = q.cmd("query-blockstats", query_nodes=True)[0]["stats"]
    assert st["rd_latency_histogram"]["boundaries"] == [1000, 1000000]
    assert sum(st["rd_latency_histogram"]["bins"]) == st["rd_operations"] >= 5
    assert st["wr_latency_histogram"]["boundaries"] == [10]
    assert sum(st["wr_latency_histogram"]["bins"]) == 3
    q.cmd("block-latency-histogram-set", id="f")
    st = q.cmd("query-blockstats", query_nodes=True)[0]["stats"]
    assert not [k for k in st if k.endswith("histogram")]
    p.kill()
    p.wait()
