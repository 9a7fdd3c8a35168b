"""The same raw NBD requests against qemu-storage-daemon, nbdkit and
blockd: every bad request (past the end, zero length, unknown or misplaced
flags, unknown commands, writes to a read-only export) must get from
blockd the answer of at least one of the two reference servers.

They differ in places: qemu-storage-daemon answers EINVAL to every request
it refuses and takes zero-length requests as no-ops, while nbdkit follows
proto.md (ENOSPC for writes past the end, EPERM for writes to a read-only
export, EINVAL for zero lengths).  blockd follows proto.md as well, which
the issue asks for (EPERM) and which says more to the user than EINVAL."""
import os
import shutil
import subprocess

import pytest

from conftest import BLOCKD
from nbdutil import (
    MiB, NBD_CMD_BLOCK_STATUS, NBD_CMD_CACHE, NBD_CMD_FLAG_DF, NBD_CMD_FLAG_FAST_ZERO,
    NBD_CMD_FLAG_FUA, NBD_CMD_FLAG_NO_HOLE, NBD_CMD_FLAG_REQ_ONE, NBD_CMD_FLUSH,
    NBD_CMD_READ, NBD_CMD_TRIM, NBD_CMD_WRITE, NBD_CMD_WRITE_ZEROES, RawClient, short_dir,
    sparse_image, wait_for,
)

QSD = shutil.which("qemu-storage-daemon")
NBDKIT = shutil.which("nbdkit")
SIZE = 4 * MiB

COMMANDS = {"read": NBD_CMD_READ, "write": NBD_CMD_WRITE, "flush": NBD_CMD_FLUSH,
            "trim": NBD_CMD_TRIM, "cache": NBD_CMD_CACHE, "zeroes": NBD_CMD_WRITE_ZEROES}
FLAGS = {"fua": NBD_CMD_FLAG_FUA, "no-hole": NBD_CMD_FLAG_NO_HOLE, "df": NBD_CMD_FLAG_DF,
         "req-one": NBD_CMD_FLAG_REQ_ONE, "fast-zero": NBD_CMD_FLAG_FAST_ZERO,
         "unknown": 1 << 9}


def cases():
    """(label, export, cmd, offset, length, flags) of each request."""
    out = []
    for cname, cmd in COMMANDS.items():
        for where, off, n in (("past-end", SIZE - 512, 1024), ("at-end", SIZE, 512),
                              ("huge-offset", 2**63, 512)):
            out.append((f"{cname} {where}", "disk", cmd, off, n, 0))
        if cmd != NBD_CMD_FLUSH:
            out.append((f"{cname} zero-length", "disk", cmd, 0, 0, 0))
        for fname, flag in FLAGS.items():
            out.append((f"{cname} +{fname}", "disk", cmd, 0, 512, flag))
        if cmd in (NBD_CMD_WRITE, NBD_CMD_TRIM, NBD_CMD_WRITE_ZEROES):
            out.append((f"{cname} read-only", "ro", cmd, 0, 512, 0))
    out.append(("unknown command 9", "disk", 9, 0, 512, 0))
    out.append(("unknown command 200", "disk", 200, 0, 512, 0))
    return out


class Peer:
    def __init__(self, prog, d):
        self.sock = os.path.join(d, "nbd.sock")
        disk = sparse_image(os.path.join(d, "disk.raw"), SIZE)
        ro = sparse_image(os.path.join(d, "ro.raw"), SIZE)
        args = [prog,
                "--blockdev", f"driver=file,node-name=fd,filename={disk}",
                "--blockdev", "driver=raw,node-name=disk,file=fd",
                "--blockdev", f"driver=file,node-name=fr,filename={ro},read-only=on",
                "--blockdev", "driver=raw,node-name=ro,file=fr,read-only=on",
                "--nbd-server", f"addr.type=unix,addr.path={self.sock}",
                "--export", "type=nbd,id=e1,node-name=disk,writable=on",
                "--export", "type=nbd,id=e2,node-name=ro"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(d, "err"), "w"))
        wait_for(lambda: os.path.exists(self.sock) or self.proc.poll() is not None,
                 what=f"{prog} socket")
        assert self.proc.poll() is None, open(os.path.join(d, "err")).read()

    def connect(self, export):
        return RawClient.connect(self.sock, export, structured=True)

    def answer(self, export, cmd, off, n, flags):
        """The error code of the reply, or "hangup"."""
        c = self.connect(export)
        try:
            payload = b"\x00" * n if cmd == NBD_CMD_WRITE else b""
            c.request(cmd, off, n, flags, cookie=5, payload=payload)
            err, cookie, _ = c.reply()
            assert cookie == 5
            return err
        except (EOFError, ConnectionError, OSError):
            return "hangup"
        finally:
            c.close()

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


class NbdkitPeer(Peer):
    """nbdkit's file plugin: one server per export (read-only with -r).
    Debian's nbdkit aborts on a FAST_ZERO it did not advertise: a server
    that died is started again for the next request."""

    def __init__(self, d):
        self.dir, self.procs, self.socks = d, {}, {}
        for name in ("disk", "ro"):
            self.socks[name] = os.path.join(d, name + ".sock")
            sparse_image(os.path.join(d, name + ".raw"), SIZE)
            self.start(name)

    def start(self, name):
        sock = self.socks[name]
        if os.path.exists(sock):
            os.unlink(sock)
        self.procs[name] = subprocess.Popen(
            ["nbdkit", "-f", "-U", sock] + (["-r"] if name == "ro" else []) +
            ["file", os.path.join(self.dir, name + ".raw")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: os.path.exists(sock), what="nbdkit socket")

    def connect(self, export):
        if self.procs[export].poll() is not None:
            self.start(export)
        return RawClient.connect(self.socks[export], "", structured=True)

    def stop(self):
        for p in self.procs.values():
            p.terminate()
            p.wait(timeout=10)


@pytest.fixture(scope="module")
def peers():
    if not QSD or not NBDKIT:
        pytest.fail("qemu-storage-daemon or nbdkit is missing (scripts/install-deps.sh)")
    dirs = [short_dir(), short_dir(), short_dir()]
    ps = {"qsd": Peer(QSD, dirs[0]), "nbdkit": NbdkitPeer(dirs[1]),
          "blockd": Peer(BLOCKD, dirs[2])}
    yield ps
    for p in ps.values():
        p.stop()
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("label,export,cmd,off,n,flags", cases(),
                         ids=[c[0] for c in cases()])
def test_error_codes_match_a_reference_server(peers, label, export, cmd, off, n, flags):
    q = peers["qsd"].answer(export, cmd, off, n, flags)
    k = peers["nbdkit"].answer(export, cmd, off, n, flags)
    b = peers["blockd"].answer(export, cmd, off, n, flags)
    assert b in (q, k), f"{label}: qemu-storage-daemon {q}, nbdkit {k}, blockd {b}"
