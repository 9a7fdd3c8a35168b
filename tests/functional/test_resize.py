"""block_resize against qemu-storage-daemon (raw and file nodes), and the
NBD client that connects after a resize sees the new size."""
import os
import subprocess

from nbdutil import MiB
from test_qsd_compat_objects import pair, same_session  # noqa: F401  (fixture)


def test_block_resize_matches(pair):  # noqa: F811
    peers = pair()
    for _, d in peers:
        for name in ("r.img", "ro.img"):
            with open(os.path.join(d, name), "wb") as f:
                f.truncate(MiB)
    same_session(peers, [
        ("blockdev-add", {"driver": "file", "node-name": "f", "filename": "@DIR@/r.img"}),
        ("blockdev-add", {"driver": "raw", "node-name": "r", "file": "f"}),
        ("blockdev-add", {"driver": "file", "node-name": "ro", "filename": "@DIR@/ro.img",
                          "read-only": True}),
        ("block_resize", {"node-name": "r", "size": 2 * MiB}),
        ("block_resize", {"node-name": "nope", "size": 1}),
        ("block_resize", {"device": "x", "size": 1}),
        ("block_resize", {"size": 1}),
        ("block_resize", {"node-name": "r", "size": -1}),
        ("block_resize", {"node-name": "ro", "size": 4 * MiB}),
        ("block_resize", {"node-name": "f", "size": 3 * MiB + 1}),
    ])
    sizes = [os.path.getsize(os.path.join(d, "r.img")) for _, d in peers]
    assert sizes == [3 * MiB + 1] * 2


def test_nbd_client_sees_the_new_size(pair):  # noqa: F811
    """blockd lets a node grow while it is exported (qemu-storage-daemon
    refuses: its export does not share the resize permission); a client
    connecting afterwards sees the new size."""
    (_, _), (q, d) = pair()
    img = os.path.join(d, "n.img")
    with open(img, "wb") as f:
        f.truncate(MiB)
    q.cmd("blockdev-add", driver="file", node_name="f", filename=img)
    q.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": d + "/n.sock"}})
    q.cmd("block-export-add", type="nbd", id="e", node_name="f", writable=True)
    uri = f"nbd+unix:///f?socket={d}/n.sock"
    env = dict(os.environ, PATH="/usr/bin:" + os.environ["PATH"])
    size = subprocess.run(["nbdinfo", "--size", uri], capture_output=True, text=True, env=env)
    assert int(size.stdout) == MiB
    q.cmd("block_resize", node_name="f", size=8 * MiB)
    size = subprocess.run(["nbdinfo", "--size", uri], capture_output=True, text=True, env=env)
    assert int(size.stdout) == 8 * MiB
    assert os.path.getsize(img) == 8 * MiB


def qemu_img_info(img):
    r = subprocess.run(["qemu-img", "info", "--output=json", "-U", img], capture_output=True,
                       text=True, check=True)
    import json
    return json.loads(r.stdout)


def test_qcow2_grow_matches(pair):  # noqa: F811
    """Growing qcow2 images (64 KiB clusters, and 512-byte clusters whose
    L1 table must move to more clusters): the data stays, the new space
    reads as zeroes and takes writes, qemu-img check is clean, and the
    image looks as qemu-storage-daemon leaves it."""
    results = []
    for q, d in pair():
        out = []
        for name, opts, old, new in (("a", "cluster_size=65536", 1 << 30, 3 << 30),
                                     ("b", "cluster_size=512", MiB, 64 * MiB)):
            img = os.path.join(d, name + ".qcow2")
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", opts, img,
                            str(old)], check=True)
            subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 7 0 64k", img],
                           check=True, capture_output=True)
            q.cmd("blockdev-add", driver="qcow2", node_name=name,
                  file={"driver": "file", "filename": img})
            r = q.execute("block_resize", {"node-name": name, "size": new + 100})
            out.append(r.get("error", {}).get("desc"))
            q.cmd("block_resize", node_name=name, size=new)
            q.cmd("blockdev-del", node_name=name)
            info = qemu_img_info(img)
            out.append((info["virtual-size"], info["cluster-size"]))
            subprocess.run(["qemu-io", "-f", "qcow2", "-c", "read -P 7 0 64k",
                            "-c", f"read -P 0 {new - 65536} 64k",
                            "-c", f"write -P 9 {new - 65536} 64k", img],
                           check=True, capture_output=True)
            check = subprocess.run(["qemu-img", "check", img], capture_output=True, text=True)
            assert check.returncode == 0, check.stdout
        results.append(out)
    qsd, ours = results
    assert ours == qsd


def test_qcow2_shrink_matches(pair):  # noqa: F811
    """Shrinking frees what lies beyond the new end: data below it stays,
    growing again shows zeroes there (not the old data), qemu-img check is
    clean, as with qemu-storage-daemon."""
    results = []
    for q, d in pair():
        img = os.path.join(d, "s.qcow2")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096",
                        img, "8M"], check=True)
        subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 5 0 8M", img], check=True,
                       capture_output=True)
        q.cmd("blockdev-add", driver="qcow2", node_name="s",
              file={"driver": "file", "filename": img})
        q.cmd("block_resize", node_name="s", size=MiB + 1024)
        q.cmd("block_resize", node_name="s", size=8 * MiB)
        q.cmd("blockdev-del", node_name="s")
        # The cluster holding the new end keeps its bytes (as in QEMU); the
        # clusters after it were freed and read as zeroes.
        r = subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"read -P 5 0 {MiB + 1024}",
                            "-c", f"read -P 0 {MiB + 4096} {7 * MiB - 4096}", img],
                           capture_output=True, text=True)
        check = subprocess.run(["qemu-img", "check", "--output=json", img],
                               capture_output=True, text=True)
        import json
        c = json.loads(check.stdout)
        results.append(("Pattern verification failed" in r.stdout, r.returncode,
                        check.returncode, c.get("leaks", 0), c.get("corruptions", 0),
                        qemu_img_info(img)["virtual-size"]))
    assert results[1] == results[0] == (False, 0, 0, 0, 0, 8 * MiB), results


def test_qcow2_resizes_while_a_client_writes(pair):  # noqa: F811
    """Growing and shrinking drain the node: a client writing (below the
    smaller size) all along loses nothing and the image stays consistent."""
    (_, _), (q, d) = pair()
    img = os.path.join(d, "w.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", img,
                    "8M"], check=True)
    q.cmd("blockdev-add", driver="qcow2", node_name="w",
          file={"driver": "file", "filename": img})
    q.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": d + "/n.sock"}})
    q.cmd("block-export-add", type="nbd", id="e", node_name="w", writable=True)
    cmds = []
    for i in range(400):
        cmds += ["-c", f"write -P {i % 200 + 1} {(i % 128) * 65536} 64k"]
    writer = subprocess.Popen(["qemu-io", "-f", "raw", "-t", "writeback",
                               f"nbd+unix:///w?socket={d}/n.sock"] + cmds,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    size, rounds = 8 * MiB, 0
    while writer.poll() is None and rounds < 12:
        size = 16 * MiB if size == 8 * MiB else 8 * MiB     # grow, shrink, ...
        q.cmd("block_resize", node_name="w", size=size)
        rounds += 1
    assert writer.wait(timeout=120) == 0, writer.stderr.read()
    q.cmd("block-export-del", id="e")
    q.cmd("blockdev-del", node_name="w")
    for i in range(272, 400):       # the last write to each of the 128 areas
        r = subprocess.run(["qemu-io", "-f", "qcow2", "-c",
                            f"read -P {i % 200 + 1} {(i % 128) * 65536} 64k", img],
                           capture_output=True, text=True)
        assert "Pattern verification failed" not in r.stdout, (i, r.stdout)
    check = subprocess.run(["qemu-img", "check", img], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
    assert qemu_img_info(img)["virtual-size"] == size


def test_resize_refuses_impossible_sizes(pair):  # noqa: F811
    """Sizes near INT64_MAX, or beyond what the image's L1 table can map,
    are refused and the image stays usable."""
    (_, _), (q, d) = pair()
    img = os.path.join(d, "h.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=512", img,
                    "1M"], check=True)
    q.cmd("blockdev-add", driver="qcow2", node_name="h",
          file={"driver": "file", "filename": img})
    for size in (9223372036854775296, 1 << 62, 4 << 40):
        r = q.execute("block_resize", {"node-name": "h", "size": size})
        assert "error" in r, (size, r)
    # 512-byte clusters, 16-bit refcounts: 1 GiB needs an L1 table of 512
    # clusters, more than one allocation gives (255).
    r = q.execute("block_resize", {"node-name": "h", "size": 1 << 30})
    assert "File too large" in r["error"]["desc"], r
    q.cmd("blockdev-del", node_name="h")
    check = subprocess.run(["qemu-img", "check", img], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
    assert qemu_img_info(img)["virtual-size"] == MiB


def test_grow_over_a_longer_backing_file_is_refused(pair):  # noqa: F811
    """The area an overlay gains would show its backing file's data (QEMU
    writes zeroes there first): refused by name for now."""
    (_, _), (q, d) = pair()
    base, ov = os.path.join(d, "lb.qcow2"), os.path.join(d, "lo.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", base, "8M"], check=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", ov,
                    "4M"], check=True)
    q.cmd("blockdev-add", driver="qcow2", node_name="o", file={"driver": "file", "filename": ov})
    r = q.execute("block_resize", {"node-name": "o", "size": 8 * MiB})
    assert r["error"]["desc"] == ("qcow2: growing an image over a longer backing file is not "
                                  "supported by blockd yet")
