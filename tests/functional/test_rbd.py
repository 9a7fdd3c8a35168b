"""The rbd driver against a real one-node Ceph cluster (started here, on
the loopback address), with qemu-storage-daemon, qemu-img and qemu-io as
the reference and as clients."""
import json
import shutil
import subprocess
import threading
import time

import nbd
import pytest

from cephutil import Cluster
from conftest import BLOCKD
from nbdutil import MiB, nbdinfo_json, run, short_dir, wait_for
from qmp import QMP
from test_luks import wait_job

QSD = "qemu-storage-daemon"


@pytest.fixture(scope="module")
def cluster():
    c = Cluster()
    yield c
    c.stop()


class Daemon:
    """blockd or qemu-storage-daemon with a QMP socket and an NBD server."""

    def __init__(self, prog, extra=()):
        self.d = short_dir()
        self.nbd = f"{self.d}/n.sock"
        sock = f"{self.d}/q.sock"
        self.p = subprocess.Popen(
            [prog, "--chardev", f"socket,id=m,path={sock},server=on,wait=off",
             "--monitor", "chardev=m", "--nbd-server", f"addr.type=unix,addr.path={self.nbd}",
             *extra], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.q = QMP(sock, timeout=60)

    def uri(self, export):
        return f"nbd+unix:///{export}?socket={self.nbd}"

    def export(self, node, writable=True):
        self.q.cmd("block-export-add", type="nbd", id=node, node_name=node, writable=writable)

    def quit(self):
        self.q.execute("quit")
        self.p.wait(60)
        shutil.rmtree(self.d, ignore_errors=True)
        err = self.p.stderr.read().decode()
        assert "Sanitizer" not in err and "runtime error" not in err, err
        return err

    def kill(self):
        self.p.kill()
        self.p.wait()
        shutil.rmtree(self.d, ignore_errors=True)


def loc(cluster, image, **more):
    return dict({"pool": "rbd", "image": image, "conf": cluster.conf}, **more)


def node(cluster, name, image, **more):
    return dict(loc(cluster, image, **more), driver="rbd", **{"node-name": name})


def create(q, options):
    q.cmd("blockdev-create", job_id="c", options=dict(options, driver="rbd"))
    return wait_job(q, "c")


def qemu_io(target, *cmds, fmt="raw", ro=False):
    args = ["qemu-io", "-f", fmt] + (["-r"] if ro else [])
    for c in cmds:
        args += ["-c", c]
    out = run(*args, target).stdout
    assert "fail" not in out.lower() and "error" not in out.lower(), out
    return out


def rbd_info(cluster, image):
    return json.loads(cluster.rbd("info", "--format", "json", f"rbd/{image}").stdout)


def test_create_write_read_map(cluster):
    d = Daemon(BLOCKD)
    try:
        assert create(d.q, {"location": loc(cluster, "a"), "size": 32 * MiB,
                            "cluster-size": MiB}) is None
        info = rbd_info(cluster, "a")
        assert info["size"] == 32 * MiB and info["object_size"] == MiB
        assert "exclusive-lock" in info["features"] and "fast-diff" in info["features"]

        d.q.cmd("blockdev-add", **node(cluster, "r", "a", discard="unmap"))
        d.export("r")
        uri = d.uri("r")
        qemu_io(uri, "write -P 0xaa 0 1M", "write -P 0xbb 20M 64k", "flush")
        qemu_io(uri, "read -P 0xaa 0 1M", "read -P 0 1M 19M", "read -P 0xbb 20M 64k",
                "read -P 0 20736k 64k")
        # Holes are whole objects the cluster does not have.
        extents = nbdinfo_json(uri, "--map")
        m = [(e["offset"], e["length"], e["type"]) for e in extents]
        assert m == [(0, MiB, 0), (MiB, 19 * MiB, 3), (20 * MiB, MiB, 0),
                     (21 * MiB, 11 * MiB, 3)], m
        # qemu-img's own view of the image (through its rbd driver) agrees.
        run("qemu-img", "compare", "-f", "raw", "-F", "raw", uri, cluster.uri("a"))

        # Discard and zeroes with unmap give the objects back.
        qemu_io(uri, "discard 0 1M", "write -z -u 20M 1M", "flush")
        m = [(e["offset"], e["length"], e["type"]) for e in nbdinfo_json(uri, "--map")]
        assert m == [(0, 32 * MiB, 3)], m

        d.q.cmd("block_resize", node_name="r", size=48 * MiB)
        assert rbd_info(cluster, "a")["size"] == 48 * MiB

        img = [n for n in d.q.cmd("query-named-block-nodes") if n["node-name"] == "r"][0]
        assert img["image"]["cluster-size"] == MiB
        assert img["image"]["virtual-size"] == 48 * MiB
    finally:
        d.quit()


def test_iothreads(cluster):
    """The node moves between the main thread and two iothreads while a
    client keeps writes in flight: each move drains them, and the next
    ones are issued, and completed by librbd's threads back to, the new
    home thread."""
    cluster.rbd("create", "--size", "16M", "rbd/io")
    d = Daemon(BLOCKD, ["--object", "iothread,id=io0", "--object", "iothread,id=io1"])
    try:
        d.q.cmd("blockdev-add", **node(cluster, "r", "io"))
        d.export("r")
        h = nbd.NBD()
        h.connect_uri(d.uri("r"))
        for rnd, home in enumerate(["io0", "io1", None, "io0"]):
            for i in range(32):
                h.aio_pwrite(bytes([rnd * 32 + i]) * 65536, (rnd * 32 + i) * 65536)
            d.q.cmd("x-blockdev-set-iothread", node_name="r", iothread=home, force=True)
        while h.aio_in_flight() > 0:
            h.poll(-1)
        h.flush()
        for i in range(128):
            assert h.pread(65536, i * 65536) == bytes([i]) * 65536, i
        h.shutdown()
    finally:
        d.quit()


def test_snapshot_and_namespace(cluster):
    cluster.rbd("create", "--size", "8M", "rbd/s")
    cluster.rbd("namespace", "create", "rbd/ns1")
    d = Daemon(BLOCKD)
    try:
        d.q.cmd("blockdev-add", **node(cluster, "r", "s"))
        d.export("r")
        qemu_io(d.uri("r"), "write -P 0x11 0 64k", "flush")
        cluster.rbd("snap", "create", "rbd/s@one")
        qemu_io(d.uri("r"), "write -P 0x22 0 64k", "flush")
        # A snapshot is a read-only, point-in-time view.
        assert d.q.error("blockdev-add", node(cluster, "snap", "s", snapshot="one")) == (
            "GenericError", "rbd snapshots are read-only")
        d.q.cmd("blockdev-add", **node(cluster, "snap", "s", snapshot="one"),
                **{"read-only": True})
        d.export("snap", writable=False)
        qemu_io(d.uri("snap"), "read -P 0x11 0 64k", ro=True)
        qemu_io(d.uri("r"), "read -P 0x22 0 64k")

        # An image in a namespace is another image than the pool's own.
        assert create(d.q, {"location": loc(cluster, "s", namespace="ns1"),
                            "size": 4 * MiB}) is None
        d.q.cmd("blockdev-add", **node(cluster, "nsr", "s", namespace="ns1"))
        d.export("nsr")
        qemu_io(d.uri("nsr"), "read -P 0 0 64k")
        assert "s" in cluster.rbd("ls", "rbd/ns1").stdout.split()
    finally:
        d.quit()


def test_encrypted_image_read_by_qemu(cluster, tmp_path):
    secret = ["--object", "secret,id=k,data=hunter2"]
    d = Daemon(BLOCKD, secret)
    try:
        assert create(d.q, {"location": loc(cluster, "e"), "size": 64 * MiB,
                            "cluster-size": MiB,
                            "encrypt": {"format": "luks", "key-secret": "k"}}) is None
        d.q.cmd("blockdev-add", **node(cluster, "r", "e",
                                       encrypt={"format": "luks", "key-secret": "k"}))
        d.export("r")
        assert nbdinfo_json(d.uri("r"))["exports"][0]["export-size"] == 64 * MiB
        qemu_io(d.uri("r"), "write -P 0x5a 40M 64k", "flush")
        # librbd's object map counts offsets before the LUKS header: asked
        # through the key, it put these 64k in a hole (a mirror would have
        # skipped them).  All data is the safe answer.
        m = [(e["offset"], e["length"], e["type"]) for e in nbdinfo_json(d.uri("r"), "--map")]
        assert m == [(0, 64 * MiB, 0)], m
        spec = [n for n in d.q.cmd("query-named-block-nodes")
                if n["node-name"] == "r"][0]["image"]["format-specific"]
        assert spec == {"type": "rbd", "data": {"encryption-format": "luks"}}
    finally:
        d.quit()
    # The header on the cluster is LUKS: the ciphertext is not the data.
    raw = tmp_path / "e.raw"
    cluster.rbd("export", "rbd/e", str(raw))
    with open(raw, "rb") as f:
        assert f.read(6) == b"LUKS\xba\xbe"
    # QEMU reads it with its own rbd driver and the same key.  (Directly:
    # qemu-storage-daemon 7.2's NBD export answers this range as a hole,
    # from the object map's block status.)
    out = run("qemu-io", "--object", "secret,id=k,data=hunter2", "--image-opts", "-r",
              "-c", "read -P 0x5a 40M 64k",
              f"driver=rbd,pool=rbd,image=e,conf={cluster.conf},"
              "encrypt.format=luks,encrypt.key-secret=k").stdout
    assert "Pattern verification failed" not in out and "read 65536/65536" in out, out


def session(prog, cluster, tag):
    """What a user sees of the driver's errors and of an open image."""
    out = []
    d = Daemon(prog, ["--object", "secret,id=k,data=x"])
    q = d.q
    img = f"cmp-{tag}"
    try:
        out.append(create(q, {"location": loc(cluster, img), "size": 4 * MiB}))
        cluster.rbd("snap", "create", f"rbd/{img}@s1")
        out.append(q.error("blockdev-add", node(cluster, "x", img, snapshot="s1")))
        for bad in ({"cluster-size": 3000}, {"cluster-size": 2048},
                    {"location": loc(cluster, "x", snapshot="s")},
                    # (Encryption at creation is "encrypt" beside "location":
                    # one in "location" is ignored.)
                    {"location": loc(cluster, img + "-e",
                                     encrypt={"format": "luks", "key-secret": "k"})},
                    {"location": loc(cluster, "x", pool="nopool")}):
            out.append(create(q, dict({"location": loc(cluster, "x"), "size": MiB}, **bad)))
        for bad in (loc(cluster, "noimage"), loc(cluster, img, pool="nopool"),
                    loc(cluster, img, conf="/nonexistent/ceph.conf"),
                    loc(cluster, img, snapshot="nosnap"),
                    loc(cluster, img, **{"key-secret": "nosecret"}),
                    loc(cluster, img, encrypt={"format": "luks", "key-secret": "k"}),
                    loc(cluster, img, server=[{"host": "127.0.0.1"}])):
            out.append(q.error("blockdev-add", dict(bad, driver="rbd", **{"node-name": "x"})))
        q.cmd("blockdev-add", **node(cluster, "r", img, user="admin",
                                     server=[{"host": "127.0.0.1", "port": cluster.mon_port}]))
        n = [n for n in q.cmd("query-named-block-nodes") if n["node-name"] == "r"][0]
        out.append({k: n[k] for k in ("file", "ro", "drv", "encrypted", "cache")})
        out.append(n["image"])
        q.cmd("block_resize", node_name="r", size=8 * MiB)
        out.append(q.cmd("query-named-block-nodes")[0]["image"]["virtual-size"])
        q.cmd("blockdev-del", node_name="r")
    finally:
        d.quit()
    return [json.dumps(o, sort_keys=True).replace(img, "IMG") for o in out]


def test_matches_qsd(cluster):
    ours = session(BLOCKD, cluster, "b")
    theirs = session(QSD, cluster, "q")
    assert ours == theirs


def test_unreachable_monitor(cluster, tmp_path):
    """A cluster whose monitor cannot be reached: the same error from both
    daemons, after the configuration's client_mount_timeout."""
    conf = tmp_path / "dead.conf"
    conf.write_text("[global]\nmon host = 127.0.0.1:1\nauth client required = none\n"
                    "client mount timeout = 2\n")
    errs = []
    for prog in (BLOCKD, QSD):
        d = Daemon(prog)
        try:
            errs.append(d.q.error("blockdev-add", dict(loc(cluster, "a", conf=str(conf)),
                                                       driver="rbd", **{"node-name": "x"})))
            d.q.cmd("query-version")
        finally:
            d.quit()
    assert errs[0] == errs[1], errs
    assert errs[0][1].startswith("error connecting: "), errs


def test_mirror_local_disk_into_cluster(cluster, tmp_path):
    """A running disk moves from a local file into the cluster: the NBD
    client writes before, during and after the mirror."""
    disk = tmp_path / "disk.raw"
    with open(disk, "wb") as f:
        f.truncate(16 * MiB)
    cluster.rbd("create", "--size", "16M", "rbd/m")
    d = Daemon(BLOCKD, ["--blockdev", f"driver=file,node-name=f,filename={disk}",
                        "--blockdev", "driver=raw,node-name=disk,file=f"])
    try:
        d.export("disk")
        h = nbd.NBD()
        h.connect_uri(d.uri("disk"))
        h.pwrite(b"\xa1" * MiB, 0)
        d.q.cmd("blockdev-add", **node(cluster, "tgt", "m"))
        d.q.cmd("blockdev-mirror", job_id="mj", device="disk", target="tgt", sync="full",
                auto_dismiss=False)
        h.pwrite(b"\xb2" * MiB, 8 * MiB)
        wait_for(lambda: [j for j in d.q.cmd("query-jobs") if j["status"] == "ready"],
                 timeout=60, what="mirror READY")
        h.pwrite(b"\xc3" * MiB, 12 * MiB)
        d.q.cmd("job-complete", id="mj")
        assert wait_job(d.q, "mj") is None
        # The export now writes into the cluster.
        h.pwrite(b"\xd4" * MiB, 2 * MiB)
        h.flush()
        h.shutdown()
        qemu_io(cluster.uri("m"), "read -P 0xa1 0 1M", "read -P 0xd4 2M 1M",
                "read -P 0xb2 8M 1M", "read -P 0xc3 12M 1M", "read -P 0 13M 3M", ro=True)
        # The local file stopped at the switch.
        qemu_io(str(disk), "read -P 0 2M 1M", ro=True)
    finally:
        d.quit()


def test_second_daemon_refused(cluster):
    """Two daemons, one image: the first one to open it read-write keeps it."""
    cluster.rbd("create", "--size", "4M", "rbd/lk")
    a, b = Daemon(BLOCKD), Daemon(BLOCKD)
    try:
        a.q.cmd("blockdev-add", **node(cluster, "r", "lk"))
        a.export("r")
        qemu_io(a.uri("r"), "write -P 0x33 0 64k")
        cls, desc = b.q.error("blockdev-add", node(cluster, "r", "lk"))
        assert desc.startswith("Failed to get the exclusive lock of RBD image 'rbd/lk'"), desc
        assert ", held by client." in desc and " at 127.0.0.1:" in desc, desc
        holder = desc.split(" at ")[1].split(":")[0] + ":" + desc.split(" at ")[1].split(":")[1]
        # Reading is not writing: a read-only node opens.
        b.q.cmd("blockdev-add", **node(cluster, "ro", "lk"), **{"read-only": True})
        b.export("ro", writable=False)
        qemu_io(b.uri("ro"), "read -P 0x33 0 64k", ro=True)
        # The holder still writes; read-only, it lets the lock go, and
        # read-write again it takes it back.
        qemu_io(a.uri("r"), "write -P 0x44 0 64k")
        reopen = dict(node(cluster, "r", "lk"), **{"read-only": True})
        a.q.cmd("block-export-del", id="r")
        wait_for(lambda: not a.q.cmd("query-block-exports"), what="the export's end")
        a.q.cmd("blockdev-reopen", options=[reopen])
        b.q.cmd("blockdev-add", **node(cluster, "rw", "lk"))
        b.q.cmd("blockdev-del", node_name="rw")
        a.q.cmd("blockdev-reopen", options=[dict(reopen, **{"read-only": False})])
        assert "exclusive lock" in b.q.error("blockdev-add", node(cluster, "rw", "lk"))[1]
        a.export("r")
        qemu_io(a.uri("r"), "write -P 0x44 0 64k")
        # A holder that dies: once the cluster notices (its watch expires)
        # the lock is broken and the dead client blocklisted.
        a.kill()
        deadline = time.monotonic() + 60
        while True:
            reply = b.q.execute("blockdev-add", node(cluster, "r", "lk"))
            if "error" not in reply:
                break
            assert time.monotonic() < deadline, reply
            time.sleep(1)
        b.export("r")
        qemu_io(b.uri("r"), "read -P 0x44 0 64k", "write -P 0x55 0 64k")
        assert holder in cluster.ceph("osd", "blocklist", "ls").stdout, holder
    finally:
        if a.p.poll() is None:
            a.quit()
        b.quit()


def test_osd_stopped_under_export(cluster, tmp_path):
    """The cluster goes away under a running export: requests fail with
    EIO after the operation timeout, the daemon answers meanwhile, and it
    serves again once the OSD is back."""
    conf = tmp_path / "client.conf"
    with open(cluster.conf) as f:
        conf.write_text(f.read() + "\nrados osd op timeout = 4\n")
    cluster.rbd("create", "--size", "4M", "rbd/o")
    d = Daemon(BLOCKD)
    try:
        d.q.cmd("blockdev-add", **node(cluster, "r", "o", conf=str(conf)))
        d.export("r")
        h = nbd.NBD()
        h.connect_uri(d.uri("r"))
        h.pwrite(b"\x61" * 65536, 0)
        h.flush()
        cluster.stop_osd()
        result = {}

        def write():
            try:
                h.pwrite(b"\x62" * 65536, MiB)
                h.flush()
                result["ok"] = True
            except nbd.Error as e:
                result["err"] = e
        t = threading.Thread(target=write)
        t.start()
        # The daemon answers while the request waits for the cluster.
        time.sleep(1)
        assert t.is_alive() and not result
        t0 = time.monotonic()
        d.q.cmd("query-version")
        d.q.cmd("query-named-block-nodes")
        assert time.monotonic() - t0 < 1.5
        t.join(30)
        assert not t.is_alive()
        assert "err" in result and result["err"].errno == "EIO", result

        cluster.start_osd()
        deadline = time.monotonic() + 60
        while True:
            try:
                h.pwrite(b"\x63" * 65536, MiB)
                h.flush()
                break
            except nbd.Error:
                assert time.monotonic() < deadline
                time.sleep(0.5)
        assert h.pread(65536, 0) == b"\x61" * 65536
        assert h.pread(65536, MiB) == b"\x63" * 65536
        h.shutdown()
    finally:
        d.quit()
