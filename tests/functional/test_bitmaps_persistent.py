"""Persistent dirty bitmaps in qcow2 images against qemu-storage-daemon: the
same sessions on the same images give the same replies, the same bitmaps
in query-named-block-nodes and in `qemu-img info`, the same SHA-256 after a
restart; a crash leaves them inconsistent and `qemu-img check` clean;
images that qemu-img's `bitmap` subcommand made open in blockd; corrupt
bitmap directories are refused with a clean error."""
import json
import os
import shutil
import struct
import subprocess

import pytest

from conftest import BLOCKD
from nbdutil import short_dir
from qmp import QMP
from test_chain import qemu_io
from test_qsd_compat import QSD

B = "block-dirty-bitmap-"
MiB = 1024 * 1024


class Daemon:
    """One daemon serving image @img as node "t" (file node "f") over NBD."""

    def __init__(self, prog, d, img, ro=False):
        self.d = d
        sock = f"{d}/qmp.sock"
        if os.path.exists(sock):
            os.unlink(sock)
        onoff = "on" if ro else "off"
        node = [] if img is None else [
            "--blockdev", f"driver=file,node-name=f,filename={img}",
            "--blockdev", f"driver=qcow2,node-name=t,file=f,read-only={onoff}",
            "--nbd-server", f"addr.type=unix,addr.path={d}/n.sock",
            "--export", f"type=nbd,id=e,node-name=t,writable={'off' if ro else 'on'}"]
        self.p = subprocess.Popen(
            [prog, "--chardev", f"socket,id=m,path={sock},server=on,wait=off",
             "--monitor", "chardev=m", *node],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.q = QMP(sock)

    def write(self, *cmds):
        qemu_io(f"nbd+unix:///t?socket={self.d}/n.sock", *cmds)

    def quit(self):
        self.q.execute("quit")
        self.p.wait(30)
        return self.p.stderr.read().decode()

    def kill(self):
        self.p.kill()
        self.p.wait()


def bitmaps(q, node="t"):
    """The node's dirty-bitmaps and the image's format-specific bitmaps."""
    for n in q.cmd("query-named-block-nodes"):
        if n["node-name"] == node:
            return (n.get("dirty-bitmaps"),
                    n["image"]["format-specific"]["data"].get("bitmaps"))
    return None


def sha(q, name):
    return q.execute("x-debug-block-dirty-bitmap-sha256", {"node": "t", "name": name})


def img_info(img):
    r = subprocess.run(["qemu-img", "info", "-U", "--output=json", img],
                       capture_output=True, text=True, check=True)
    return json.loads(r.stdout)["format-specific"]["data"].get("bitmaps")


def img_check(img):
    r = subprocess.run(["qemu-img", "check", "-U", img], capture_output=True, text=True)
    return r.returncode, r.stdout.split("\n")[0]


@pytest.fixture
def both():
    """Run @scenario(prog, dir) for each daemon in its own directory; the
    results must be equal."""
    if not QSD:
        pytest.fail("qemu-storage-daemon is not installed (scripts/install-deps.sh)")
    dirs, daemons = [], []

    def run(scenario):
        out = []
        for prog in (QSD, BLOCKD):
            d = short_dir()
            dirs.append(d)
            try:
                res = scenario(lambda img, ro=False: daemons.append(Daemon(prog, d, img, ro))
                               or daemons[-1], d)
            except Exception as e:
                raise AssertionError(f"{os.path.basename(prog)}: {e!r}") from e
            out.append(json.loads(json.dumps(res).replace(d, "@DIR@")))
        for i, (a, b) in enumerate(zip(*out)):
            assert b == a, f"step {i}: qemu-storage-daemon {a!r}, blockd {b!r}"
        assert len(out[0]) == len(out[1])
        return out[1]
    yield run
    for x in daemons:
        if x.p.poll() is None:
            x.kill()
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)


def create(d, *opts, size="64M"):
    img = f"{d}/t.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", *opts, img, size], check=True)
    return img


def test_stored_at_close_and_loaded_again(both):
    def scenario(start, d):
        img = create(d)
        res = []
        x = start(img)
        res.append(x.q.execute(B + "add", {"node": "t", "name": "a", "persistent": True}))
        res.append(x.q.execute(B + "add", {"node": "t", "name": "b", "persistent": True,
                                           "disabled": True, "granularity": 4096}))
        res.append(x.q.execute(B + "add", {"node": "t", "name": "c"}))
        res.append(x.q.execute(B + "add", {"node": "t", "name": "d", "persistent": True,
                                           "granularity": 1 << 20}))
        x.write("write 0 64k", "write 10M 1M", "write 40M 512")
        res.append(x.q.execute(B + "enable", {"node": "t", "name": "b"}))
        res.append(x.q.execute(B + "disable", {"node": "t", "name": "d"}))
        x.write("write 20M 64k")
        res.append(bitmaps(x.q))
        res += [sha(x.q, n) for n in "abd"]
        res.append(x.quit())
        res.append(img_info(img))
        res.append(img_check(img))
        x = start(img)
        res.append(bitmaps(x.q))       # in use now; c was not persistent
        res += [sha(x.q, n) for n in "abd"]
        x.write("write 30M 4k")
        res += [sha(x.q, n) for n in "abd"]
        res.append(x.quit())
        res.append(img_info(img))
        res.append(img_check(img))
        return res
    res = both(scenario)
    assert [b["flags"] for b in res[-2]] == [[], ["auto"], ["auto"]]


def test_crash_leaves_them_inconsistent(both):
    def scenario(start, d):
        img = create(d)
        res = []
        x = start(img)
        res.append(x.q.execute(B + "add", {"node": "t", "name": "a", "persistent": True}))
        x.write("write 0 1M")
        res.append(x.quit())
        x = start(img)
        x.write("write 2M 1M")
        x.kill()                                   # kill -9 while in use
        res.append(img_info(img))
        res.append(img_check(img))
        x = start(img)
        res.append(bitmaps(x.q))
        res.append(sha(x.q, "a"))
        for cmd in ("clear", "enable", "disable"):
            res.append(x.q.execute(B + cmd, {"node": "t", "name": "a"}))
        res.append(x.q.execute("blockdev-add", {"driver": "null-co", "node-name": "n",
                                                "size": 64 * MiB}))
        res.append(x.q.execute("blockdev-backup", {"device": "t", "target": "n",
                                                   "sync": "incremental", "bitmap": "a",
                                                   "job-id": "j"}))
        x.q.execute("block-export-del", {"id": "e"})   # it does not share resize
        res.append(x.q.execute("block_resize", {"node-name": "t", "size": 128 * MiB}))
        res.append(x.q.execute(B + "remove", {"node": "t", "name": "a"}))
        res.append(bitmaps(x.q))
        res.append(x.q.execute("block_resize", {"node-name": "t", "size": 128 * MiB}))
        res.append(x.quit())
        res.append(img_info(img))
        res.append(img_check(img))
        return res
    res = both(scenario)
    assert res[4][0][0]["inconsistent"] is True


def test_read_only_images_and_reopen(both):
    def scenario(start, d):
        img = create(d)
        res = []
        x = start(img)
        x.q.execute(B + "add", {"node": "t", "name": "a", "persistent": True})
        x.write("write 0 1M")
        x.quit()
        x = start(img, ro=True)
        res.append(bitmaps(x.q))
        res.append(sha(x.q, "a"))
        res.append(x.q.execute(B + "clear", {"node": "t", "name": "a"}))
        res.append(x.q.execute(B + "remove", {"node": "t", "name": "a"}))
        res.append(x.q.execute(B + "disable", {"node": "t", "name": "a"}))
        res.append(x.q.execute(B + "add", {"node": "t", "name": "m"}))
        res.append(x.q.execute(B + "merge", {"node": "t", "target": "m", "bitmaps": ["a"]}))
        res.append(sha(x.q, "m"))
        res.append(img_info(img))
        opts = {"driver": "qcow2", "node-name": "t", "file": "f"}
        res.append(x.q.execute("blockdev-reopen", {"options": [dict(opts, **{"read-only": False})]}))
        res.append(bitmaps(x.q))
        res.append(img_info(img))
        res.append(x.q.execute(B + "clear", {"node": "t", "name": "a"}))
        res.append(x.q.execute("blockdev-reopen", {"options": [dict(opts, **{"read-only": True})]}))
        res.append(bitmaps(x.q))
        res.append(img_info(img))
        res.append(x.q.execute(B + "enable", {"node": "t", "name": "a"}))
        res.append(x.quit())
        res.append(img_info(img))
        res.append(img_check(img))
        return res
    both(scenario)


def test_refusals(both):
    def scenario(start, d):
        res = []
        img = create(d, "-o", "compat=0.10")
        x = start(img)
        res.append(x.q.execute(B + "add", {"node": "t", "name": "a", "persistent": True}))
        res.append(x.q.execute(B + "add", {"node": "f", "name": "a", "persistent": True}))
        x.quit()
        img = create(d)
        x = start(img)
        res.append(x.q.execute(B + "add", {"node": "t", "name": "n" * 1024, "persistent": True}))
        res.append(x.q.execute(B + "add", {"node": "t", "name": "a", "persistent": True}))
        res.append(x.q.execute(B + "add", {"node": "t", "name": "a", "persistent": True}))
        res.append(x.q.execute("transaction", {"actions": [
            {"type": B + "add", "data": {"node": "t", "name": "b", "persistent": True}},
            {"type": B + "remove", "data": {"node": "t", "name": "a"}},
            {"type": B + "add", "data": {"node": "nope", "name": "c"}}]}))
        res.append(bitmaps(x.q))
        res.append(x.quit())
        res.append(img_info(img))
        return res
    both(scenario)


def test_qemu_img_bitmaps_open(both):
    def scenario(start, d):
        img = create(d)
        res = []
        for args in (["--add", img, "a"], ["--add", "-g", "8192", img, "b"],
                     ["--add", "--disable", img, "c"]):
            subprocess.run(["qemu-img", "bitmap", *args], check=True)
        qemu_io(img, "write 0 1M", "write 5M 64k", fmt="qcow2")
        subprocess.run(["qemu-img", "bitmap", "--merge", "a", img, "c"], check=True)
        subprocess.run(["qemu-img", "bitmap", "--remove", img, "b"], check=True)
        x = start(img)
        res.append(bitmaps(x.q))
        res += [sha(x.q, n) for n in "ac"]
        x.write("write 8M 4k")
        res += [sha(x.q, n) for n in "ac"]
        x.quit()
        subprocess.run(["qemu-img", "bitmap", "--clear", img, "a"], check=True)
        subprocess.run(["qemu-img", "bitmap", "--enable", img, "c"], check=True)
        res.append(img_info(img))
        res.append(img_check(img))
        x = start(img)
        res.append(bitmaps(x.q))
        res += [sha(x.q, n) for n in "ac"]
        x.quit()
        return res
    both(scenario)


def test_stale_extension_is_dropped(both):
    """A program without bitmap support wrote the image (autoclear bit 0
    clear): the bitmaps are gone at the next read-write open."""
    def scenario(start, d):
        img = create(d)
        subprocess.run(["qemu-img", "bitmap", "--add", img, "a"], check=True)
        with open(img, "r+b") as f:
            f.seek(88)
            f.write(struct.pack(">Q", 0))
        res = []
        x = start(img)
        res.append(bitmaps(x.q))
        res.append("lacking bitmap support" in x.quit())
        res.append(img_info(img))
        res.append(img_check(img)[0])
        return res
    both(scenario)


def directory_offset(img):
    """(offset of the bitmaps extension's data, directory offset)."""
    with open(img, "rb") as f:
        h = f.read(65536)
    pos = struct.unpack(">I", h[100:104])[0]
    while pos + 8 <= len(h):
        t, n = struct.unpack(">II", h[pos:pos + 8])
        if t == 0x23852875:
            return pos + 8, struct.unpack(">Q", h[pos + 24:pos + 32])[0]
        if t == 0:
            break
        pos += 8 + (n + 7) // 8 * 8
    raise AssertionError("no bitmaps extension")


CORRUPTIONS = {
    # (where: "ext" or "dir" or "table", offset, bytes)
    "nb-zero": ("ext", 0, b"\0\0\0\0"),
    "nb-too-many": ("ext", 0, b"\0\0\0\3"),
    "nb-huge": ("ext", 0, b"\0\1\0\0"),
    "reserved": ("ext", 4, b"\0\0\0\1"),
    "dir-unaligned": ("ext", 16, struct.pack(">Q", 4096 + 8)),
    "dir-beyond-eof": ("ext", 16, struct.pack(">Q", 1 << 40)),
    "dir-size-huge": ("ext", 8, struct.pack(">Q", 1 << 30)),
    "dir-size-short": ("ext", 8, struct.pack(">Q", 16)),
    "table-zero": ("dir", 0, struct.pack(">Q", 0)),
    "table-unaligned": ("dir", 0, struct.pack(">Q", 4096 + 8)),
    "table-size-zero": ("dir", 8, b"\0\0\0\0"),
    "table-size-small": ("dir", 8, b"\0\0\0\0"),
    "flags-reserved": ("dir", 12, b"\0\0\0\x06"),
    "type": ("dir", 16, b"\2"),
    "granularity-small": ("dir", 17, b"\x08"),
    "granularity-big": ("dir", 17, b"\x40"),
    "name-zero": ("dir", 18, b"\0\0"),
    "name-long": ("dir", 18, b"\xff\xff"),
    "extra-data": ("dir", 20, b"\0\0\0\x08"),
    "table-beyond-eof": ("dir", 0, struct.pack(">Q", 1 << 40)),
    "table-entry-reserved": ("table", 0, struct.pack(">Q", 0xff00000000000000)),
    "table-entry-unaligned": ("table", 0, struct.pack(">Q", 0x10201)),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_corrupt_directory_is_refused(both, case):
    where, off, data = CORRUPTIONS[case]

    def scenario(start, d):
        img = create(d)
        subprocess.run(["qemu-img", "bitmap", "--add", img, "a"], check=True)
        qemu_io(img, "write 0 1M", fmt="qcow2")
        ext, diroff = directory_offset(img)
        with open(img, "r+b") as f:
            if where == "ext":
                f.seek(ext + off)
            elif where == "dir":
                f.seek(diroff + off)
            else:
                f.seek(diroff)
                f.seek(struct.unpack(">Q", f.read(8))[0] + off)
            f.write(data)
        res = []
        x = start(None)                            # the daemon, then the image
        for ro in (True, False):
            r = x.q.execute("blockdev-add", {"driver": "qcow2", "node-name": f"c{ro}",
                                             "read-only": ro,
                                             "file": {"driver": "file", "filename": img}})
            res.append(r.get("error", {}).get("desc", "ok"))
            if "error" not in r:
                # Only the node's bitmaps: with a table outside the file,
                # blockd finds the image corrupt and keeps them as stored
                # (not in use; README).
                res.append(bitmaps(x.q, f"c{ro}")[0])
                x.q.execute("blockdev-del", {"node-name": f"c{ro}"})
        res.append(x.q.execute("query-block-jobs"))    # still serving
        x.quit()
        return res
    both(scenario)


def wait_job_state(q, job, want, timeout=30):
    import time
    deadline = time.monotonic() + timeout
    while True:
        jobs = {j["id"]: j["status"] for j in q.cmd("query-jobs")}
        if jobs.get(job, "gone") in want:
            return jobs.get(job, "gone")
        assert time.monotonic() < deadline, jobs
        time.sleep(0.02)


def test_bitmaps_through_snapshot_commit_and_stream(both):
    """Bitmaps belong to their node: an overlay starts without any, the
    node below keeps its own (recording nothing more, since writes now go
    to the overlay); commit and stream leave each node's bitmaps as they
    were, persistent ones stay in their images -- as in QEMU."""
    def scenario(start, d):
        img = create(d)
        res = []
        x = start(img)
        q = x.q
        res.append(q.execute(B + "add", {"node": "t", "name": "base-p", "persistent": True}))
        res.append(q.execute(B + "add", {"node": "t", "name": "base-m"}))
        x.write("write 0 1M")
        res.append(q.execute("blockdev-snapshot-sync", {
            "node-name": "t", "snapshot-file": f"{d}/ov.qcow2", "snapshot-node-name": "ov",
            "format": "qcow2"}))
        res.append(q.execute(B + "add", {"node": "ov", "name": "ov-m"}))
        x.write("write 2M 1M")
        res.append([bitmaps(q, n)[0] for n in ("t", "ov")])
        res.append(q.execute("block-commit", {"job-id": "c", "device": "ov"}))
        res.append(wait_job_state(q, "c", ("ready",)))
        res.append(q.execute("job-complete", {"id": "c"}))
        res.append(wait_job_state(q, "c", ("gone", "null")))
        res.append(bitmaps(q, "t")[0])
        res.append(sha(q, "base-p"))
        res.append(q.execute("blockdev-snapshot-sync", {
            "node-name": "t", "snapshot-file": f"{d}/ov2.qcow2", "snapshot-node-name": "ov2",
            "format": "qcow2"}))
        res.append(q.execute(B + "add", {"node": "ov2", "name": "ov2-m"}))
        x.write("write 4M 64k")
        res.append(q.execute("block-stream", {"job-id": "s", "device": "ov2"}))
        res.append(wait_job_state(q, "s", ("gone", "null")))
        res.append([bitmaps(q, n)[0] for n in ("t", "ov2")])
        res.append(x.quit())
        res.append(img_info(img))
        res.append(img_info(f"{d}/ov2.qcow2"))
        return res
    both(scenario)


def test_inconsistent_bitmaps_of_a_read_only_image(both):
    """After a crash, a read-only open shows the bitmap inconsistent and
    read-only: not removable until the node is read-write, and a
    copy-before-write filter refuses to use it."""
    def scenario(start, d):
        img = create(d)
        res = []
        x = start(img)
        x.q.execute(B + "add", {"node": "t", "name": "a", "persistent": True})
        x.quit()
        x = start(img)
        x.write("write 0 64k")
        x.kill()
        x = start(img, ro=True)
        q = x.q
        res.append(bitmaps(q))
        res.append(q.execute(B + "remove", {"node": "t", "name": "a"}))
        res.append(q.execute("blockdev-add", {"driver": "null-co", "node-name": "n",
                                              "size": 64 * MiB}))
        res.append(q.execute("blockdev-add", {"driver": "copy-before-write", "node-name": "c",
                                              "file": "t", "target": "n",
                                              "bitmap": {"node": "t", "name": "a"}}))
        opts = {"driver": "qcow2", "node-name": "t", "file": "f", "read-only": False}
        res.append(q.execute("blockdev-reopen", {"options": [opts]}))
        res.append(q.execute(B + "remove", {"node": "t", "name": "a"}))
        res.append(bitmaps(q))
        res.append("Sanitizer" in x.quit())    # (QEMU warns about the null target)
        res.append(img_info(img))
        res.append(img_check(img))
        return res
    both(scenario)


@pytest.mark.parametrize("nth", range(1, 15))
def test_write_errors_never_corrupt(nth):
    """The nth write to the image file fails, wherever it falls (marking
    the bitmaps in use at open, storing them at close): the daemon reports
    it and goes on, and the image never becomes corrupt (leaked clusters
    at most, as `qemu-img check` counts them)."""
    d = short_dir()
    try:
        img = create(d, size="16M")
        subprocess.run(["qemu-img", "bitmap", "--add", img, "a"], check=True)
        subprocess.run(["qemu-img", "bitmap", "--add", "-g", "4096", img, "b"], check=True)
        qemu_io(img, "write 0 1M", "write 9M 64k", fmt="qcow2")
        x = Daemon(BLOCKD, d, None)
        r = x.q.execute("blockdev-add", {
            "driver": "qcow2", "node-name": "t",
            "file": {"driver": "blkdebug",
                     "image": {"driver": "file", "filename": img},
                     "inject-error": [{"iotype": "write", "errno": 5, "nth": nth}]}})
        if "error" not in r:
            x.q.execute(B + "add", {"node": "t", "name": "c", "persistent": True})
            x.q.execute("blockdev-del", {"node-name": "t"})
        err = x.quit()
        assert "Sanitizer" not in err, err
        code, first = img_check(img)
        assert code in (0, 3), first            # 3: leaked clusters only
        r = subprocess.run(["qemu-img", "info", "--output=json", img], capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stderr
    finally:
        shutil.rmtree(d, ignore_errors=True)
