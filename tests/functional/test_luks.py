"""The luks driver: images interchangeable with qemu-img's (created by
either, written by either, converted both ways), the same errors, node
description and blockdev-create results as qemu-storage-daemon, and
hostile headers refused with their reason, quickly, without a crash (the
ASan daemon in make check)."""
import json
import os
import shutil
import struct
import subprocess
import time

import pytest

from conftest import BLOCKD
from nbdutil import short_dir
from test_bitmaps_persistent import Daemon
from test_qsd_compat import both_sessions

MiB = 1024 * 1024
SECRET = ["--object", "secret,id=s0,data=pw"]


# QEMU times PBKDF2 with getrusage, whose granularity now and then makes it
# give up (more often on a loaded machine); the attempt is repeated then.
QEMU_TIMING_FLAKE = "Unable to get accurate CPU usage"
QEMU_ATTEMPTS = 30


def qemu_img_keying(*args):
    """Runs a qemu-img command that sets a LUKS key, again while QEMU's
    timing gives up."""
    for _ in range(QEMU_ATTEMPTS):
        r = subprocess.run(["qemu-img", *args], capture_output=True, text=True)
        if QEMU_TIMING_FLAKE not in r.stderr:
            break
    assert r.returncode == 0, r.stderr


def qemu_img_create(path, size="16M", **opts):
    o = ",".join(["key-secret=s0", "iter-time=10"] + [f"{k}={v}" for k, v in opts.items()])
    qemu_img_keying("create", "-f", "luks", *SECRET, "-o", o, path, size)


def image_opts(path):
    return f"driver=luks,key-secret=s0,file.filename={path}"


def qemu_io(path, *cmds):
    args = ["qemu-io", *SECRET, "--image-opts"]
    for c in cmds:
        args += ["-c", c]
    r = subprocess.run(args + [image_opts(path)], capture_output=True, text=True)
    assert r.returncode == 0 and "fail" not in r.stdout, r.stdout + r.stderr


def luks_node(path, node="l", secret="s0"):
    n = {"driver": "luks", "node-name": node, "file": {"driver": "file", "filename": path}}
    if secret:
        n["key-secret"] = secret
    return n


def export(q, d, node="l"):
    q.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": f"{d}/n.sock"}})
    assert "error" not in q.execute("block-export-add", {"type": "nbd", "id": "e",
                                                         "node-name": node, "name": node,
                                                         "writable": True})
    return f"nbd+unix:///{node}?socket={d}/n.sock"


def nbd_io(uri, *cmds):
    args = ["qemu-io", "-f", "raw"]
    for c in cmds:
        args += ["-c", c]
    r = subprocess.run(args + [uri], capture_output=True, text=True)
    assert r.returncode == 0 and "fail" not in r.stdout, r.stdout + r.stderr


@pytest.fixture
def d():
    d = short_dir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("opts", [{}, {"cipher-alg": "aes-128", "cipher-mode": "cbc",
                                       "ivgen-alg": "essiv", "ivgen-hash-alg": "sha256",
                                       "hash-alg": "sha1"}],
                         ids=["xts-aes-256", "cbc-aes-128-essiv-sha1"])
def test_images_interchange_with_qemu_img(d, opts):
    """qemu-img creates, qemu-io writes; blockd reads that, writes more;
    qemu-io reads blockd's data; qemu-img convert gives the same content
    as reading through blockd, and converting back gives an image blockd
    opens."""
    img = f"{d}/a.luks"
    qemu_img_create(img, **opts)
    qemu_io(img, "write -P 7 1M 1M")
    x = Daemon(BLOCKD, d, None)
    x.q.cmd("object-add", qom_type="secret", id="s0", data="pw")
    x.q.cmd("blockdev-add", **luks_node(img))
    uri = export(x.q, d)
    nbd_io(uri, "read -P 7 1M 1M", "write -P 9 4M 64k", "write -P 5 15M 1M")
    r = subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "raw", uri, f"{d}/ours.raw"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "Sanitizer" not in x.quit()
    qemu_io(img, "read -P 7 1M 1M", "read -P 9 4M 64k", "read -P 5 15M 1M")
    r = subprocess.run(["qemu-img", "convert", *SECRET, "--image-opts", image_opts(img),
                        "-O", "raw", f"{d}/theirs.raw"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    with open(f"{d}/ours.raw", "rb") as a, open(f"{d}/theirs.raw", "rb") as b:
        assert a.read() == b.read()
    # Back: raw to a new luks image with qemu-img, read by blockd.
    qemu_img_keying("convert", *SECRET, "-f", "raw", "-O", "luks", "-o",
                    "key-secret=s0,iter-time=10", f"{d}/theirs.raw", f"{d}/b.luks")
    x = Daemon(BLOCKD, d, None)
    x.q.cmd("object-add", qom_type="secret", id="s0", data="pw")
    x.q.cmd("blockdev-add", **luks_node(f"{d}/b.luks"))
    nbd_io(export(x.q, d), "read -P 7 1M 1M", "read -P 9 4M 64k", "read -P 5 15M 1M")
    assert "Sanitizer" not in x.quit()


def normalize(node):
    """A node's description without what differs from image to image, and
    without the file name (qemu-storage-daemon writes a json:{...} one:
    README)."""
    for n in (node, node["image"]):
        n.pop("file" if n is node else "filename")
    s = json.dumps(node)
    data = node["image"].get("format-specific", {}).get("data", {})
    for key in ("uuid", "master-key-iters"):
        if key in data:
            s = s.replace(json.dumps(data[key]), f'"<{key}>"')
    for slot in data.get("slots", []):
        if "iters" in slot:
            s = s.replace(f'"iters": {slot["iters"]}', '"iters": "<iters>"')
    return json.loads(s)


def session(prog, d):
    img, plain = f"{d}/a.luks", f"{d}/plain.raw"
    qemu_img_create(img)
    with open(plain, "wb") as f:
        f.truncate(4 * MiB)
    x = Daemon(prog, d, None)
    q = x.q
    q.cmd("object-add", qom_type="secret", id="s0", data="pw")
    q.cmd("object-add", qom_type="secret", id="bad", data="nope")
    out = [q.execute("blockdev-add", luks_node(img, secret="bad")),
           q.execute("blockdev-add", luks_node(img, secret=None)),
           q.execute("blockdev-add", luks_node(img, secret="nope")),
           q.execute("blockdev-add", luks_node(plain)),
           q.execute("blockdev-add", luks_node(img))]
    node = [n for n in q.cmd("query-named-block-nodes") if n["node-name"] == "l"][0]
    out.append(normalize(node))
    out.append(q.execute("block_resize", {"node-name": "l", "size": 32 * MiB}))
    node = [n for n in q.cmd("query-named-block-nodes") if n["node-name"] == "l"][0]
    out.append(node["image"]["virtual-size"])
    # blockdev-create: errors, then an image.
    new = f"{d}/new.luks"
    q.cmd("blockdev-create", job_id="f", options={"driver": "file", "filename": new, "size": 0})
    wait_job(q, "f")
    q.cmd("blockdev-add", driver="file", node_name="nf", filename=new)
    for opts in ({"size": MiB}, {"size": MiB, "key-secret": "nope"},
                 {"size": MiB, "key-secret": "s0", "cipher-alg": "bogus"},
                 {"size": MiB, "key-secret": "s0", "iter-time": 10, "bogus": 1}):
        out.append(q.execute("blockdev-create", {"job-id": "c", "options": {
            "driver": "luks", "file": "nf", **opts}}))
        if "error" not in out[-1]:
            out.append(wait_job(q, "c"))
    for _ in range(QEMU_ATTEMPTS):
        q.cmd("blockdev-create", job_id="c", options={"driver": "luks", "file": "nf",
                                                      "size": 8 * MiB, "key-secret": "s0",
                                                      "iter-time": 10})
        err = wait_job(q, "c")
        if err is None or QEMU_TIMING_FLAKE not in err:
            break
    out.append(err)
    assert "Sanitizer" not in x.quit()
    info = subprocess.run(["qemu-img", "info", "--output=json", *SECRET, "--image-opts",
                           image_opts(new)], capture_output=True, text=True)
    out.append({k: v for k, v in json.loads(info.stdout).items()
                if k in ("virtual-size", "format", "encrypted")})
    out.append(os.path.getsize(new))
    return out


def wait_job(q, job):
    """The job's end: its error, or None."""
    deadline = time.monotonic() + 60
    while True:
        jobs = [j for j in q.cmd("query-jobs") if j["id"] == job]
        if jobs and jobs[0]["status"] == "concluded":
            q.cmd("job-dismiss", id=job)
            return jobs[0].get("error")
        assert time.monotonic() < deadline, jobs
        time.sleep(0.05)


def test_luks_matches_qsd():
    ours, theirs = both_sessions(session, dir_token=True)
    assert ours == theirs


# ---- Hostile headers ----------------------------------------------------------

def patched(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


HOSTILE = {
    "magic": (0, b"LUKX"),
    "version": (6, struct.pack(">H", 2)),
    "cipher-name-no-nul": (8, b"a" * 32),
    "cipher": (8, b"twofish\0"),
    "key-bytes": (108, struct.pack(">I", 4096)),
    "mk-iterations": (164, struct.pack(">I", 0xffffffff)),
    "slot-iterations": (208 + 4, struct.pack(">I", 0xfffffff0)),
    "slot-state": (208, struct.pack(">I", 0x12345678)),
    "slot-stripes": (208 + 44, struct.pack(">I", 1)),
    "slot-on-header": (208 + 40, struct.pack(">I", 1)),
    "slot-on-payload": (208 + 40, struct.pack(">I", 4039)),
    "slots-overlap": (208 + 48 + 40, struct.pack(">I", 9)),
    "payload-past-end": (104, struct.pack(">I", 0x7fffffff)),
}


@pytest.fixture(scope="module")
def good_image():
    """One small image for the hostile cases to spoil (creating one takes
    qemu-img a second of timing PBKDF2)."""
    d = short_dir()
    qemu_img_create(f"{d}/good.luks", size="1M")
    yield f"{d}/good.luks"
    shutil.rmtree(d, ignore_errors=True)


# Every slot active with many iterations: a wrong password would try them
# all (minutes of PBKDF2 on the main thread).
HOSTILE["slots-total-iterations"] = [
    (208 + 48 * i, struct.pack(">II", 0x00AC71F3, 15 << 20)) for i in range(8)]


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_header_is_refused(d, good_image, case):
    img = f"{d}/h.luks"
    shutil.copy(good_image, img)
    for patch in HOSTILE[case] if isinstance(HOSTILE[case], list) else [HOSTILE[case]]:
        patched(img, *patch)
    x = Daemon(BLOCKD, d, None)
    x.q.cmd("object-add", qom_type="secret", id="s0", data="pw")
    start = time.monotonic()
    r = x.q.execute("blockdev-add", luks_node(img))
    assert time.monotonic() - start < 5
    assert "error" in r and r["error"]["desc"], r
    assert x.q.cmd("query-named-block-nodes") == []
    assert "Sanitizer" not in x.quit()


def amend_session(prog, d):
    img = f"{d}/a.luks"
    qemu_img_create(img)
    x = Daemon(prog, d, None)
    q = x.q
    for sid, pw in (("s0", "pw"), ("s1", "pw1"), ("s2", "pw2"), ("bad", "nope")):
        q.cmd("object-add", qom_type="secret", id=sid, data=pw)
    q.cmd("blockdev-add", **luks_node(img))
    out = []
    for n, opts in enumerate([
            {"state": "active", "new-secret": "s1", "iter-time": 10},
            {"state": "active", "new-secret": "s2", "keyslot": 1, "iter-time": 10},
            {"state": "active", "new-secret": "s2", "keyslot": 9},
            {"state": "active"},
            {"state": "active", "new-secret": "s2", "old-secret": "bad", "iter-time": 10},
            {"state": "inactive"},
            {"state": "inactive", "new-secret": "s2"},
            {"state": "inactive", "keyslot": 5},
            {"state": "inactive", "keyslot": 1, "old-secret": "s0"},
            {"state": "inactive", "old-secret": "bad"},
            {"state": "inactive", "old-secret": "s1"},
            {"state": "inactive", "keyslot": 0},
            {"state": "inactive", "old-secret": "s0"},
            {"state": "active", "new-secret": "s2", "keyslot": 3, "iter-time": 10}]):
        for _ in range(QEMU_ATTEMPTS):
            r = q.execute("x-blockdev-amend", {"job-id": f"a{n}", "node-name": "l",
                                               "options": {"driver": "luks", **opts}})
            r = r if "error" in r else wait_job(q, f"a{n}")
            if QEMU_TIMING_FLAKE not in str(r):
                break
        out.append(r)
    node = [n for n in q.cmd("query-named-block-nodes") if n["node-name"] == "l"][0]
    out.append([s["active"] for s in node["image"]["format-specific"]["data"]["slots"]])
    assert "Sanitizer" not in x.quit()
    # The image opens with the password of slot 3 in QEMU's tools.
    r = subprocess.run(["qemu-io", "--object", "secret,id=s2,data=pw2", "--image-opts",
                        "-c", "read 0 4k", f"driver=luks,key-secret=s2,file.filename={img}"],
                       capture_output=True, text=True)
    out.append(r.returncode)
    return out


def test_amend_key_slots_matches_qsd():
    ours, theirs = both_sessions(amend_session)
    assert ours[-1] == 0 and ours[-2] == [True, False, False, True, False, False, False,
                                          False], ours
    assert ours == theirs
