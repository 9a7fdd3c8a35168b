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
