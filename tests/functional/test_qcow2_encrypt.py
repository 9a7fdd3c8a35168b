"""Encrypted qcow2 (encrypt.format=luks) against QEMU's tools and
qemu-storage-daemon: images from qemu-img read and written by blockd and
the other way round (copy-on-write from a plain backing file included),
images created by blockdev-create opened by qemu-io, the same errors and
node descriptions, and hostile crypto headers refused cleanly."""
import json
import shutil
import subprocess

import pytest

from conftest import BLOCKD
from nbdutil import short_dir
from test_bitmaps_persistent import Daemon
from test_luks import QEMU_ATTEMPTS, QEMU_TIMING_FLAKE, qemu_img_keying, wait_job
from test_qsd_compat import both_sessions

MiB = 1024 * 1024
SECRET = ["--object", "secret,id=s0,data=pw"]


def create_encrypted(img, size="4M", *extra):
    qemu_img_keying("create", "-q", "-f", "qcow2", *SECRET, "-o",
                    "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10",
                    *extra, img, size)


def qemu_io_enc(img, *cmds):
    args = ["qemu-io", *SECRET, "--image-opts"]
    for c in cmds:
        args += ["-c", c]
    r = subprocess.run(args + [f"driver=qcow2,encrypt.key-secret=s0,file.filename={img}"],
                       capture_output=True, text=True)
    return r.returncode, "failed" in r.stdout + r.stderr


def nbd_io(uri, *cmds):
    args = ["qemu-io", "-f", "raw"]
    for c in cmds:
        args += ["-c", c]
    r = subprocess.run(args + [uri], capture_output=True, text=True)
    return r.returncode, "failed" in r.stdout + r.stderr


def node(img, **extra):
    return {"driver": "qcow2", "node-name": "t", "file": {"driver": "file", "filename": img},
            **extra}


def export(q, d, name="t"):
    q.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": f"{d}/n.sock"}})
    q.cmd("block-export-add", type="nbd", id="e", node_name=name, writable=True)
    return f"nbd+unix:///{name}?socket={d}/n.sock"


@pytest.fixture
def d():
    d = short_dir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_images_interchange_with_qemu(d):
    """qemu-io writes, blockd reads and writes (unaligned too: whole
    sectors are re-encrypted), qemu-io reads it all back; an encrypted
    overlay's partial cluster writes copy the plain backing file's data."""
    base, img = f"{d}/base.raw", f"{d}/t.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", base, "4M"], check=True)
    assert nbd_io(base, "write -P 0x61 0 4M") == (0, False)
    create_encrypted(img, "4M", "-b", base, "-F", "raw")
    assert qemu_io_enc(img, "write -P 0x11 64k 64k") == (0, False)
    x = Daemon(BLOCKD, d, None)
    x.q.cmd("object-add", qom_type="secret", id="s0", data="pw")
    x.q.cmd("blockdev-add", **node(img, encrypt={"format": "luks", "key-secret": "s0"}))
    uri = export(x.q, d)
    assert nbd_io(uri, "read -P 0x61 0 64k", "read -P 0x11 64k 64k",
                  "write -P 0x22 200k 3", "write -P 0x33 1M 8k", "write -z 2M 64k") == (0, False)
    assert nbd_io(uri, "read -P 0x61 128k 72k", "read -P 0x22 200k 3",
                  "read -P 0x61 204803 60k", "read -P 0x33 1M 8k") == (0, False)
    # After an internal snapshot the clusters are shared: a partial write
    # copies one to a new host cluster, decrypted with the old place's IV
    # and encrypted with the new one's.
    assert "error" not in x.q.execute("blockdev-snapshot-internal-sync",
                                      {"device": "t", "name": "s1"})
    assert nbd_io(uri, "write -P 0x77 80k 512") == (0, False)
    assert nbd_io(uri, "read -P 0x11 64k 16k", "read -P 0x77 80k 512",
                  "read -P 0x11 82432 48640") == (0, False)
    assert "Sanitizer" not in x.quit()
    assert qemu_io_enc(img, "read -P 0x11 64k 16k", "read -P 0x77 80k 512",
                       "read -P 0x11 82432 48640") == (0, False)
    assert qemu_io_enc(img, "read -P 0x61 0 64k",
                       "read -P 0x61 128k 72k", "read -P 0x22 200k 3",
                       "read -P 0x61 204803 60k", "read -P 0x33 1M 8k",
                       "read -P 0x61 1032k 64k", "read -P 0 2M 64k") == (0, False)
    # What is on disk is ciphertext.
    with open(img, "rb") as f:
        assert b"\x33" * 512 not in f.read()
    r = subprocess.run(["qemu-img", "check", *SECRET, "--image-opts",
                        f"driver=qcow2,encrypt.key-secret=s0,file.filename={img}"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def normalize(info):
    """An image's own random parts: its UUID and the timed iterations."""
    enc = info["data"].get("encrypt")
    if enc:
        enc["uuid"] = "U"
        enc["master-key-iters"] = 0
        for s in enc["slots"]:
            if "iters" in s:
                s["iters"] = 0
    return info


def session(prog, d):
    img, plain = f"{d}/t.qcow2", f"{d}/p.qcow2"
    create_encrypted(img)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", plain, "1M"], check=True)
    x = Daemon(prog, d, None)
    q = x.q
    for sid, pw in (("s0", "pw"), ("bad", "nope")):
        q.cmd("object-add", qom_type="secret", id=sid, data=pw)
    out = [q.execute("blockdev-add", node(img)),
           q.execute("blockdev-add", node(img, encrypt={"format": "luks", "key-secret": "bad"})),
           q.execute("blockdev-add", node(img, encrypt={"format": "aes", "key-secret": "s0"})),
           q.execute("blockdev-add", node(plain, encrypt={"format": "luks",
                                                          "key-secret": "s0"})),
           q.execute("blockdev-add", node(img, encrypt={"format": "luks",
                                                        "key-secret": "s0"}))]
    n = [n for n in q.cmd("query-named-block-nodes") if n["node-name"] == "t"][0]
    out.append((n["encrypted"], normalize(n["image"]["format-specific"])))
    # blockdev-create: refused combinations, then an image.
    new = f"{d}/new.qcow2"
    open(new, "wb").close()
    q.cmd("blockdev-add", driver="file", node_name="nf", filename=new)
    for enc in ({"format": "luks"}, {"format": "luks", "key-secret": "s0", "bogus": 1},
                {"format": "luks", "key-secret": "s0", "cipher-alg": "bogus"}):
        r = q.execute("blockdev-create", {"job-id": "c", "options": {
            "driver": "qcow2", "file": "nf", "size": 4 * MiB, "encrypt": enc}})
        out.append(r if "error" in r else wait_job(q, "c"))
    for _ in range(QEMU_ATTEMPTS):
        q.cmd("blockdev-create", job_id="c", options={
            "driver": "qcow2", "file": "nf", "size": 4 * MiB, "cluster-size": 4096,
            "encrypt": {"format": "luks", "key-secret": "s0", "iter-time": 10,
                        "cipher-alg": "aes-128", "cipher-mode": "cbc", "ivgen-alg": "essiv",
                        "ivgen-hash-alg": "sha256", "hash-alg": "sha1"}})
        err = wait_job(q, "c")
        if err is None or QEMU_TIMING_FLAKE not in err:
            break
    out.append(err)
    q.cmd("blockdev-add", driver="qcow2", node_name="n", file="nf",
          encrypt={"format": "luks", "key-secret": "s0"})
    uri = export(q, d, "n")
    out.append(nbd_io(uri, "write -P 0x44 4k 8k", "read -P 0x44 4k 8k", "read -P 0 0 4k",
                      # a sector inside a new cluster: the rest reads as zeroes
                      "write -P 0x55 102912 512", "read -P 0 100k 512",
                      "read -P 0 103424 3k"))
    n = [n for n in q.cmd("query-named-block-nodes") if n["node-name"] == "n"][0]
    out.append(normalize(n["image"]["format-specific"]))
    assert "Sanitizer" not in x.quit()
    out.append(qemu_io_enc(new, "read -P 0x44 4k 8k", "read -P 0 12k 88k",
                           "read -P 0x55 102912 512", "read -P 0 103424 3k",
                           "read -P 0 104k 3992k"))
    info = subprocess.run(["qemu-img", "info", "--output=json", *SECRET, "--image-opts",
                           f"driver=qcow2,encrypt.key-secret=s0,file.filename={new}"],
                          capture_output=True, text=True)
    out.append(normalize(json.loads(info.stdout)["format-specific"]))
    r = subprocess.run(["qemu-img", "check", *SECRET, "--image-opts",
                        f"driver=qcow2,encrypt.key-secret=s0,file.filename={new}"],
                       capture_output=True, text=True)
    out.append((r.returncode, r.stdout.strip().splitlines()[1:]))
    return out


def test_encrypted_qcow2_matches_qsd():
    ours, theirs = both_sessions(session, dir_token=True)
    assert all("error" in r for r in ours[:4]) and ours[4] == {"return": {}}, ours
    assert ours[5][0] is True and ours[5][1]["data"]["encrypt"]["format"] == "luks", ours
    assert ours[9] is None and ours[10] == [0, False] and ours[12] == [0, False], ours
    assert ours == theirs


def patched_ext(img, offset, length):
    """Point the crypto header extension at @offset/@length."""
    with open(img, "r+b") as f:
        data = f.read(65536)
        pos = int.from_bytes(data[100:104], "big")
        while True:
            t, n = int.from_bytes(data[pos:pos + 4], "big"), \
                int.from_bytes(data[pos + 4:pos + 8], "big")
            assert t, "no crypto extension"
            if t == 0x0537be77:
                f.seek(pos + 8)
                f.write(offset.to_bytes(8, "big") + length.to_bytes(8, "big"))
                return
            pos += 8 + (n + 7) // 8 * 8


@pytest.fixture(scope="module")
def good_image():
    d = short_dir()
    create_encrypted(f"{d}/good.qcow2", "1M")
    yield f"{d}/good.qcow2"
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("offset,length", [(0, 2068480), (1 << 40, 2068480),
                                           (0x40000, 16), (0x40000, 1 << 40),
                                           (0x40001, 2068480), (0x40000, 4096)],
                         ids=["header", "beyond", "short", "huge", "unaligned", "no-slots"])
def test_hostile_crypto_header_is_refused(d, good_image, offset, length):
    img = f"{d}/h.qcow2"
    shutil.copy(good_image, img)
    patched_ext(img, offset, length)
    x = Daemon(BLOCKD, d, None)
    x.q.cmd("object-add", qom_type="secret", id="s0", data="pw")
    r = x.q.execute("blockdev-add", node(img, encrypt={"format": "luks", "key-secret": "s0"}))
    assert "error" in r and r["error"]["desc"], r
    assert "Sanitizer" not in x.quit()


def amend_session(prog, d):
    """Key slots of an encrypted qcow2 image added and erased with
    x-blockdev-amend; a plain image has nothing to amend."""
    img, plain = f"{d}/t.qcow2", f"{d}/p.qcow2"
    create_encrypted(img)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", plain, "1M"], check=True)
    x = Daemon(prog, d, None)
    q = x.q
    for sid, pw in (("s0", "pw"), ("s1", "pw1"), ("bad", "nope")):
        q.cmd("object-add", qom_type="secret", id=sid, data=pw)
    q.cmd("blockdev-add", **node(img, encrypt={"format": "luks", "key-secret": "s0"}))
    q.cmd("blockdev-add", driver="qcow2", node_name="p", file={"driver": "file",
                                                               "filename": plain})
    out = []
    for n, (target, enc) in enumerate([
            ("p", {"format": "luks", "state": "active", "new-secret": "s1"}),
            ("p", None),
            ("t", {"format": "luks", "state": "active", "new-secret": "s1", "iter-time": 10}),
            ("t", {"format": "luks", "state": "inactive", "old-secret": "bad"}),
            ("t", {"format": "luks", "state": "inactive", "keyslot": 0}),
            ("t", {"format": "luks", "state": "inactive", "keyslot": 1, "old-secret": "s0"}),
            ("t", {"format": "luks", "state": "inactive", "old-secret": "s0"})]):
        opts = {"driver": "qcow2", **({"encrypt": enc} if enc else {})}
        for _ in range(QEMU_ATTEMPTS):
            r = q.execute("x-blockdev-amend", {"job-id": f"a{n}", "node-name": target,
                                               "options": opts})
            r = r if "error" in r else wait_job(q, f"a{n}")
            if QEMU_TIMING_FLAKE not in str(r):
                break
        out.append(r)
    n = [n for n in q.cmd("query-named-block-nodes") if n["node-name"] == "t"][0]
    out.append([s["active"] for s in n["image"]["format-specific"]["data"]["encrypt"]["slots"]])
    assert "Sanitizer" not in x.quit()
    # Only the new password opens the image now.
    for pw in ("pw", "pw1"):
        r = subprocess.run(["qemu-io", "--object", f"secret,id=k,data={pw}", "--image-opts",
                            "-c", "read 0 4k",
                            f"driver=qcow2,encrypt.key-secret=k,file.filename={img}"],
                           capture_output=True, text=True)
        out.append(r.returncode)
    return out


def test_amend_key_slots_matches_qsd():
    ours, theirs = both_sessions(amend_session)
    assert ours[0] == "image is not encrypted, can't amend" and ours[1] is None, ours
    assert ours[2] is None and ours[4] is None, ours
    assert ours[-3:] == [[False, True] + [False] * 6, 1, 0], ours
    assert ours == theirs


def test_dirty_encrypted_image_is_repaired_not_destroyed(d):
    """A dirty image (lazy refcounts, not closed) is repaired at a
    read-write open -- with its LUKS container counted, so its key
    material survives -- and only once it is unlocked: a wrong password
    changes nothing."""
    img = f"{d}/t.qcow2"
    create_encrypted(img, "4M", "-o", "lazy_refcounts=on")
    assert qemu_io_enc(img, "write -P 0x12 0 1M") == (0, False)
    with open(img, "r+b") as f:
        f.seek(79)                # incompatible features, low byte: the dirty bit
        bits = f.read(1)[0]
        f.seek(79)
        f.write(bytes([bits | 1]))
    before = open(img, "rb").read()
    x = Daemon(BLOCKD, d, None)
    for sid, pw in (("s0", "pw"), ("bad", "nope")):
        x.q.cmd("object-add", qom_type="secret", id=sid, data=pw)
    r = x.q.execute("blockdev-add", node(img, encrypt={"format": "luks", "key-secret": "bad"}))
    assert "Invalid password" in r["error"]["desc"], r
    assert open(img, "rb").read() == before
    x.q.cmd("blockdev-add", **node(img, encrypt={"format": "luks", "key-secret": "s0"}))
    uri = export(x.q, d)
    assert nbd_io(uri, "read -P 0x12 0 1M", "write -P 0x34 2M 1M") == (0, False)
    assert "Sanitizer" not in x.quit()
    assert qemu_io_enc(img, "read -P 0x12 0 1M", "read -P 0x34 2M 1M") == (0, False)
    r = subprocess.run(["qemu-img", "check", *SECRET, "--image-opts",
                        f"driver=qcow2,encrypt.key-secret=s0,file.filename={img}"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
