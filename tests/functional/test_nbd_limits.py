"""What one NBD client may take from the others: connections
(max-connections, default 100; at the limit a new connection replaces
the oldest one still in its handshake), time in the handshake
(handshake-max-seconds, default 10), memory (the server-wide reply and
payload budget, which large requests wait for too) and file descriptors
(the listener pauses while the process has none left, instead of
spinning)."""
import os
import resource
import shutil
import socket
import struct
import subprocess
import time

import nbd
import pytest

from conftest import BLOCKD
from nbdutil import MiB, RawClient, Server, short_dir, sparse_image, wait_for
from qmp import QMP

NBD_CMD_READ = 0
NBD_MAX = 32 * MiB


def server(blockd, tmp_path, *nbd_opts, size=64 * MiB):
    d = short_dir()
    img = sparse_image(tmp_path / "d.raw", size)
    s = Server(blockd, d, [dict(name="disk", img=img)], nbd=False, qmp=True)
    q = QMP(s.qmp_path)
    args = {"addr": {"type": "unix", "path": s.sock}}
    for o in nbd_opts:
        k, v = o.split("=")
        args[k] = int(v)
    r = q.execute("nbd-server-start", args)
    assert "error" not in r, r
    q.cmd("block-export-add", type="nbd", id="e", node_name="disk", writable=True)
    return s, q, d


def good_client_works(s):
    h = nbd.NBD()
    h.connect_uri(s.uri("disk"))
    h.pwrite(b"g" * 4096, 0)
    assert h.pread(4096, 0) == b"g" * 4096
    h.shutdown()


def sockets(pid):
    """The daemon's open sockets."""
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            n += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return n


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_handshake_deadline_is_configurable(blockd, tmp_path):
    s, q, d = server(blockd, tmp_path, "handshake-max-seconds=1")
    try:
        stalled = RawClient(s.sock)
        stalled.greeting()
        t0 = time.monotonic()
        assert stalled.at_eof(timeout=5)
        assert 0.8 < time.monotonic() - t0 < 3
        # A client that finished its handshake is not timed out.
        done = RawClient.connect(s.sock, "disk")
        time.sleep(1.5)
        done.cmd(NBD_CMD_READ, 0, 512)
        done.disconnect()
        # 0: no deadline.
        q.cmd("nbd-server-stop")
        q.cmd("nbd-server-start", addr={"type": "unix", "path": s.sock},
              handshake_max_seconds=0)
        q.cmd("block-export-add", type="nbd", id="e2", node_name="disk")
        idle = RawClient(s.sock)
        idle.greeting()
        assert not idle.at_eof(timeout=2)
        idle.close()
        for bad in (-1, "x"):
            r = q.execute("nbd-server-start", {"addr": {"type": "unix", "path": s.sock + "2"},
                                               "handshake-max-seconds": bad})
            assert "error" in r, r
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_handshake_deadline_default_is_10s(blockd, tmp_path):
    s, q, d = server(blockd, tmp_path)
    try:
        stalled = RawClient(s.sock, timeout=20)
        stalled.greeting()
        t0 = time.monotonic()
        assert stalled.at_eof(timeout=15)
        assert 9.5 < time.monotonic() - t0 < 12
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_max_connections(blockd, tmp_path):
    """Connections past the limit are hung up on, unless one still
    haggles: then that one goes."""
    s, q, d = server(blockd, tmp_path, "max-connections=4")
    try:
        clients = [RawClient.connect(s.sock, "disk") for _ in range(4)]
        extra = RawClient(s.sock)
        assert extra.at_eof(timeout=5)
        clients.pop().disconnect()
        time.sleep(0.2)
        haggler = RawClient(s.sock)
        haggler.greeting()
        time.sleep(0.1)
        # Full: the newcomer replaces the connection still in its handshake.
        newcomer = RawClient.connect(s.sock, "disk")
        assert haggler.at_eof(timeout=5)
        newcomer.cmd(NBD_CMD_READ, 0, 512)
        for c in clients + [newcomer]:
            c.disconnect()
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_max_connections_default_is_100(blockd, tmp_path):
    s, q, d = server(blockd, tmp_path)
    try:
        clients = [RawClient.connect(s.sock, "disk") for _ in range(100)]
        assert RawClient(s.sock).at_eof(timeout=5)
        clients.pop().disconnect()
        time.sleep(0.2)
        good_client_works(s)
        for c in clients:
            c.close()
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_stalled_handshakes_do_not_deny_service(blockd, tmp_path):
    """1,000 connections that never finish their handshake: a well-behaved
    client is still served at once, and the daemon keeps few of them."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    s, q, d = server(blockd, tmp_path)
    try:
        stalled = []
        for _ in range(1000):
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.connect(s.sock)
            stalled.append(c)
        # (While the daemon works through the listen backlog, a connect
        # can find it full: a client tries again, as nbdinfo's user would.)
        t0 = time.monotonic()
        while True:
            try:
                good_client_works(s)
                break
            except nbd.Error as e:
                assert "backlog" in str(e) and time.monotonic() - t0 < 5, e
                time.sleep(0.05)
        assert time.monotonic() - t0 < 5
        assert s.num_fds() < 200, s.num_fds()
        for c in stalled:
            c.close()
        s.assert_serving("disk")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        shutil.rmtree(d, ignore_errors=True)


def test_out_of_descriptors_pauses_accept(tmp_path):
    """With its file descriptors used up, the daemon does not spin on
    accept; once a connection ends it accepts again."""
    d = short_dir()
    img = sparse_image(tmp_path / "d.raw", 16 * MiB)
    sock = f"{d}/n.sock"

    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    p = subprocess.Popen([BLOCKD, "--blockdev", f"driver=file,node-name=disk,filename={img}",
                          "--nbd-server", f"addr.type=unix,addr.path={sock},max-connections=0",
                          "--export", "type=nbd,id=e,node-name=disk"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=low_limit)
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(sock):
            assert time.monotonic() < deadline and p.poll() is None
            time.sleep(0.02)
        clients = []
        for _ in range(100):
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.connect(sock)           # the backlog takes what accept does not
            clients.append(c)
        time.sleep(0.5)
        before = cpu_seconds(p.pid)
        time.sleep(2)
        assert cpu_seconds(p.pid) - before < 0.4, "accept loop spins"
        for c in clients:
            c.close()
        deadline = time.monotonic() + 10
        while True:
            try:
                h = nbd.NBD()
                h.connect_uri(f"nbd+unix:///disk?socket={sock}")
                assert h.pread(512, 0) == bytes(512)
                h.shutdown()
                break
            except nbd.Error:
                assert time.monotonic() < deadline, "never accepted again"
                time.sleep(0.2)
    finally:
        p.kill()
        p.wait()
        shutil.rmtree(d, ignore_errors=True)


def test_reads_never_read_back_cannot_pin_memory(blockd, tmp_path):
    """24 clients each send one maximum-size read and never read the
    reply: the daemon holds at most the server budget (96 MiB) of them,
    not 24 x 32 MiB; when they leave, the others go on."""
    s, q, d = server(blockd, tmp_path, size=64 * MiB)
    try:
        with open(tmp_path / "d.raw", "r+b") as f:
            f.write(b"\x5a" * MiB)
        base = s.rss_kib()
        flood = []
        for i in range(24):
            c = RawClient.connect(s.sock, "disk")
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            c.send(struct.pack(">IHHQQI", 0x25609513, 0, NBD_CMD_READ, i, 0, NBD_MAX))
            flood.append(c)
        peak = 0
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            peak = max(peak, s.rss_kib())
            time.sleep(0.02)
        assert peak - base < 200 * 1024, f"RSS grew by {(peak - base) // 1024} MiB"
        # Their pinned replies do not lock out the ordinary requests of
        # another client.
        good_client_works(s)
        for c in flood:
            c.close()
        good_client_works(s)
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("opt", ["max-connections", "handshake-max-seconds"])
def test_limits_on_the_command_line(blockd, tmp_path, opt):
    d = short_dir()
    try:
        img = sparse_image(tmp_path / "d.raw", MiB)
        s = Server(blockd, d, [dict(name="disk", img=img)], nbd=False,
                   extra=("--nbd-server", f"addr.type=unix,addr.path={d}/x.sock,{opt}=1",
                          "--export", "type=nbd,id=e,node-name=disk"))
        c = RawClient(f"{d}/x.sock")
        c.greeting()
        if opt == "handshake-max-seconds":
            assert c.at_eof(timeout=4)
        else:
            done = RawClient.connect(f"{d}/x.sock", "disk")    # replaces the haggler
            assert c.at_eof(timeout=4)
            assert RawClient(f"{d}/x.sock").at_eof(timeout=4)
            done.disconnect()
        assert s.alive()
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_export_del_while_a_client_waits_for_budget(blockd, tmp_path):
    """Clients that send write headers and never their payloads hold the
    budget; a client of another export waits for it with a large request.
    Deleting that export hangs up on it at once (it hung the main loop)."""
    s, q, d = server(blockd, tmp_path)
    try:
        q.cmd("blockdev-add", driver="file", node_name="d2",
              filename=sparse_image(tmp_path / "d2.raw", 16 * MiB))
        q.cmd("block-export-add", type="nbd", id="e2", node_name="d2", writable=True)
        stallers = []
        for i in range(3):
            c = RawClient.connect(s.sock, "disk")
            c.send(struct.pack(">IHHQQI", 0x25609513, 0, 1, i, 0, NBD_MAX))   # WRITE
            stallers.append(c)
        waiter = RawClient.connect(s.sock, "d2")
        waiter.send(struct.pack(">IHHQQI", 0x25609513, 0, NBD_CMD_READ, 9, 0, 2 * MiB))
        time.sleep(0.3)
        fds = sockets(s.pid)
        t0 = time.monotonic()
        q.cmd("block-export-del", id="e2", mode="hard")
        assert waiter.at_eof(timeout=5)
        # The waiting connection is gone, not left waiting for the others.
        wait_for(lambda: sockets(s.pid) < fds, timeout=5, what="the connection to be freed")
        assert time.monotonic() - t0 < 5
        q.cmd("query-version")
        for c in stallers:
            c.close()
        good_client_works(s)
    finally:
        shutil.rmtree(d, ignore_errors=True)
