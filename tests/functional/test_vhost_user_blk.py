"""The vhost-user-blk export, driven by a vhost-user front-end written for
the tests (vhostuser.py), against blockd and qemu-storage-daemon alike:
options and their errors, the features and config space offered, the
status of every kind of request, data written through guest memory as
qemu-img sees it, resize announced to the front-end, reconnects, a
second front-end refused, block-export-del, and queues spread over
iothreads."""
import os
import shutil
import socket
import struct
import subprocess
import time

import pytest

from conftest import BLOCKD
from nbdutil import short_dir
from qmp import QMP
from test_qsd_compat import QSD
import vhostuser as vu

MiB = 1024 * 1024
# Feature bits qemu-storage-daemon's library offers and blockd does not:
# NOTIFY_ON_EMPTY (legacy) and LOG_ALL (dirty logging for migration).
QSD_ONLY_FEATURES = 1 << 24 | 1 << 26
WCE_OFFSET = 32

PROGS = [pytest.param(BLOCKD, id="blockd"), pytest.param(QSD, id="qsd")]


def require(prog):
    """A comparison that cannot run is a failure, not a skip."""
    if not prog:
        pytest.fail("qemu-storage-daemon is not installed (scripts/install-deps.sh)")


class Server:
    """A daemon with one file node "f" (on @img) exported over vhost-user."""

    def __init__(self, prog, d, img, export="", extra=(), fmt="raw", slow_ns=0):
        self.d = d
        self.sock = f"{d}/vu.sock"
        qmp = f"{d}/qmp.sock"
        for s in (self.sock, qmp):
            if os.path.exists(s):
                os.unlink(s)
        args = [prog, "--chardev", f"socket,id=m,path={qmp},server=on,wait=off",
                "--monitor", "chardev=m", *extra]
        if slow_ns:         # every request takes @slow_ns: requests stay in flight
            args += ["--blockdev", f"driver=null-co,node-name=f,size=67108864,latency-ns={slow_ns}"]
        else:
            args += ["--blockdev", f"driver=file,node-name=file,filename={img}",
                     "--blockdev", f"driver={fmt},node-name=f,file=file"]
        if export is not None:
            args += ["--export", "type=vhost-user-blk,id=e,node-name=f,"
                     f"addr.type=unix,addr.path={self.sock}" + export]
        self.errlog = f"{d}/err.log"
        with open(self.errlog, "w") as err:
            self.p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err)
        self.q = QMP(qmp)

    def log(self):
        with open(self.errlog) as f:
            return f.read()

    def connect(self, queues=1, **kw):
        return vu.connect(self.sock, queues, **kw)

    def quit(self):
        self.q.execute("quit")
        self.p.wait(30)
        err = self.log()
        assert "Sanitizer" not in err and "runtime error" not in err, err
        assert self.p.returncode == 0, err
        return err


def start_error(prog, d, img, export):
    r = subprocess.run([prog, "--blockdev", f"driver=file,node-name=f,filename={img}",
                        "--export", "type=vhost-user-blk,id=e,node-name=f," + export],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode != 0
    return r.stderr.strip().split(": ")[-1]


@pytest.fixture
def img(tmp_path):
    path = str(tmp_path / "t.img")
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", path, "64M"], check=True)
    return path


@pytest.fixture
def d():
    path = short_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


BAD_OPTIONS = [
    "addr.type=unix,addr.path=@D/s,logical-block-size=1000",
    "addr.type=unix,addr.path=@D/s,logical-block-size=256",
    "addr.type=unix,addr.path=@D/s,logical-block-size=4194304",
    "addr.type=unix,addr.path=@D/s,num-queues=0",
    "addr.type=unix,addr.path=@D/s,num-queues=70000",
    "addr.type=unix,addr.path=@D/s,iothread=nope",
    "addr.type=inet,addr.host=127.0.0.1,addr.port=5555",
    "addr.type=unix,addr.path=/nonexistent/dir/s",
    "addr.type=fd,addr.str=1",
    "addr.type=fd,addr.str=notanfd",
]


@pytest.mark.parametrize("export", BAD_OPTIONS)
def test_option_errors_match(export, d, img):
    require(QSD)
    export = export.replace("@D", d)
    assert start_error(BLOCKD, d, img, export) == start_error(QSD, d, img, export)


def session(prog, d, img):
    """What a front-end sees of an export: replies and request statuses."""
    s = Server(prog, d, img, ",writable=on,num-queues=2")
    fe = s.connect(queues=2)
    out = [("features", hex(fe.features & ~QSD_ONLY_FEATURES)),
           ("queues", fe.call_u64(vu.GET_QUEUE_NUM))]
    cfg = bytearray(fe.get_config(60))
    cfg[WCE_OFFSET] = 0                 # documented difference
    out.append(("config", cfg.hex()))
    blk = vu.BlkDevice(fe)
    q0, q1 = fe.queues
    out.append(("write", blk.write(q0, 8, b"A" * 4096)))
    st, data, ulen = blk.read(q1, 8, 4096)
    out.append(("read", st, data == b"A" * 4096, ulen))
    out.append(("indirect", blk.read(q0, 8, 4096, indirect=True)[::2]))
    out.append(("segments", blk.request(q0, vu.T_OUT, 16, out=b"B" * 8192)[0]))
    for sector, n in ((64 * 2048, 512), (64 * 2048 - 1, 1024), (0, 100), (2 ** 62, 512)):
        out.append(("range", sector, n, blk.read(q0, sector, n)[0]))
    out.append(("flush", blk.request(q0, vu.T_FLUSH, 0)[0]))
    out.append(("get_id", blk.request(q0, vu.T_GET_ID, 0, in_len=20)[:2]))
    out.append(("get_id short", blk.request(q0, vu.T_GET_ID, 0, in_len=8)[:2]))
    for t, flags in ((vu.T_DISCARD, 0), (vu.T_DISCARD, 1), (vu.T_WRITE_ZEROES, 0),
                     (vu.T_WRITE_ZEROES, 1), (vu.T_WRITE_ZEROES, 2)):
        out.append(("seg", t, flags, blk.seg(q0, t, 8, 8, flags)))
    out.append(("seg too long", blk.seg(q0, vu.T_DISCARD, 8, 40000)))
    out.append(("seg past end", blk.seg(q0, vu.T_WRITE_ZEROES, 64 * 2048 - 4, 8)))
    out.append(("two segs", blk.request(q0, vu.T_DISCARD, 0, out=bytes(32))[0]))
    out.append(("unknown", blk.request(q0, 99, 0)[0]))
    out.append(("barrier write", blk.request(q0, vu.T_OUT | 0x80000000, 40, out=b"C" * 512)[0]))
    out.append(("vring base", fe.get_vring_base(0), fe.get_vring_base(1)))
    fe.close()
    s.quit()
    with open(img, "rb") as f:
        f.seek(8 * 512)
        out.append(("image", f.read(4096) == bytes(4096), f.read(8192) == b"B" * 8192,
                    f.read(4096) == bytes(4096), f.read(512) == b"C" * 512))
    return out


def test_session_matches_qsd(tmp_path):
    require(QSD)
    results = []
    for prog in (BLOCKD, QSD):
        path = str(tmp_path / f"{os.path.basename(prog)}.img")
        subprocess.run(["qemu-img", "create", "-q", "-f", "raw", path, "64M"], check=True)
        d = short_dir()
        try:
            results.append(session(prog, d, path))
        finally:
            shutil.rmtree(d, ignore_errors=True)
    for a, b in zip(*results):
        assert a == b
    assert len(results[0]) == len(results[1])


def test_data_through_guest_memory(d, tmp_path):
    """A qcow2 node written through the guest's memory reads back the same
    over qemu-img, and what qemu-io wrote reads back through the export."""
    path = str(tmp_path / "t.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", path, "32M"], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 1M 64k", path],
                   check=True, capture_output=True)
    s = Server(BLOCKD, d, path, ",writable=on", fmt="qcow2")
    fe = s.connect()
    blk = vu.BlkDevice(fe)
    q = fe.queues[0]
    pattern = bytes(range(256)) * 256                  # 64 KiB
    assert blk.write(q, 4 * 2048, pattern) == vu.S_OK
    st, data, _ = blk.read(q, 2048, 65536)
    assert st == vu.S_OK and data == b"\x5a" * 65536
    assert blk.seg(q, vu.T_WRITE_ZEROES, 2048, 64, 1) == vu.S_OK
    fe.close()
    s.quit()
    r = subprocess.run(["qemu-io", "-f", "qcow2", "-c", "read -P 0 1M 32k",
                        "-c", "read -P 0x5a 1056k 32k", path], capture_output=True, text=True)
    assert "Pattern verification failed" not in r.stdout, r.stdout
    with open(str(tmp_path / "p"), "wb") as f:
        f.write(pattern)
    raw = str(tmp_path / "raw")
    subprocess.run(["qemu-img", "convert", "-O", "raw", path, raw], check=True)
    with open(raw, "rb") as f:
        f.seek(4 * MiB)
        assert f.read(65536) == pattern
    assert subprocess.run(["qemu-img", "check", path], capture_output=True).returncode == 0


def test_read_only_export(d, img):
    s = Server(BLOCKD, d, img, "")
    fe = s.connect()
    assert fe.features & (1 << 5)                        # VIRTIO_BLK_F_RO
    blk = vu.BlkDevice(fe)
    q = fe.queues[0]
    assert blk.write(q, 0, b"x" * 512) == vu.S_IOERR
    assert blk.seg(q, vu.T_WRITE_ZEROES, 0, 8) == vu.S_IOERR
    assert blk.read(q, 0, 512)[0] == vu.S_OK
    fe.close()
    s.quit()


def test_logical_block_size(d, img):
    s = Server(BLOCKD, d, img, ",writable=on,logical-block-size=4096")
    fe = s.connect()
    cfg = fe.get_config(60)
    assert struct.unpack_from("<I", cfg, 20)[0] == 4096          # blk_size
    assert struct.unpack_from("<I", cfg, 44)[0] == 8             # discard alignment
    blk = vu.BlkDevice(fe)
    q = fe.queues[0]
    assert blk.read(q, 8, 4096)[0] == vu.S_OK
    assert blk.read(q, 9, 4096)[0] == vu.S_IOERR                  # misaligned
    fe.close()
    s.quit()


def test_write_cache_follows_the_guest(d, img):
    """The config's wce says what the export does (write-back unless
    writethrough=on); the guest may switch it, nothing else."""
    s = Server(BLOCKD, d, img, ",writable=on")
    fe = s.connect()
    assert fe.get_config(60)[WCE_OFFSET] == 1
    assert fe.set_config(WCE_OFFSET, b"\x00") == 0
    assert fe.get_config(60)[WCE_OFFSET] == 0
    assert fe.set_config(0, b"\x00" * 8) != 0                    # capacity: read-only
    assert vu.BlkDevice(fe).write(fe.queues[0], 0, b"w" * 512) == vu.S_OK
    fe.close()
    s.quit()
    s = Server(BLOCKD, d, img, ",writable=on,writethrough=on")
    fe = s.connect()
    assert fe.get_config(60)[WCE_OFFSET] == 0
    fe.close()
    s.quit()


def test_resize_is_announced(d, img):
    """block_resize: a config-change message on the back-end channel, and
    the new capacity in the config space (qemu-storage-daemon 7.2 does
    neither; QEMU 8.2's does)."""
    s = Server(BLOCKD, d, img, ",writable=on")
    fe = vu.Frontend(s.sock)
    fe.negotiate(protocol=vu.PF_MQ | vu.PF_REPLY_ACK | vu.PF_CONFIG | vu.PF_BACKEND_REQ)
    ours, theirs = socket.socketpair()
    assert fe.set(vu.SET_BACKEND_REQ_FD, b"", [theirs.fileno()]) == 0
    theirs.close()
    fe.set_mem_table()
    fe.add_queue()
    assert struct.unpack_from("<Q", fe.get_config(60))[0] == 64 * 2048
    s.q.cmd("block_resize", **{"node-name": "f", "size": 128 * MiB})
    ours.settimeout(10)
    req, flags, size = struct.unpack("<III", ours.recv(12))
    assert req == 2 and size == 0                       # CONFIG_CHANGE_MSG
    if flags & 0x8:                                     # the daemon wants an ack
        ours.send(struct.pack("<IIIQ", 2, 0x5, 8, 0))
    assert struct.unpack_from("<Q", fe.get_config(60))[0] == 128 * 2048
    st, _, _ = vu.BlkDevice(fe).read(fe.queues[0], 100 * 2048, 512)
    assert st == vu.S_OK
    fe.close()
    s.quit()


def reconnect(s, prog):
    """Connect right after the last front-end hung up.  qemu-storage-daemon
    may not have noticed the hang-up yet and then turns the newcomer away
    as a second front-end: it is tried again.  blockd notices (it looks
    at the old connection first): the first try must work."""
    for attempt in range(50):
        try:
            return s.connect()
        except (ConnectionError, OSError):
            if prog == BLOCKD:
                raise
            time.sleep(0.1)
    raise AssertionError("qemu-storage-daemon never took a new front-end")


@pytest.mark.parametrize("prog", PROGS)
def test_reconnect_and_second_frontend(prog, d, img):
    """A VMM that goes away and comes back is served again; a second one
    while the first is connected is not served."""
    require(prog)
    s = Server(prog, d, img, ",writable=on")
    fe = s.connect()
    blk = vu.BlkDevice(fe)
    assert blk.write(fe.queues[0], 0, b"1" * 512) == vu.S_OK
    other = socket.socket(socket.AF_UNIX)
    other.settimeout(2)
    other.connect(s.sock)
    with pytest.raises((socket.timeout, ConnectionError, OSError)):
        other.sendall(struct.pack("<III", vu.GET_FEATURES, 1, 0))
        if not other.recv(12):
            raise ConnectionError("closed")
    other.close()
    # Requests in flight when the front-end vanishes.
    q = fe.queues[0]
    for i in range(8):
        hdr = fe.scratch(16)
        fe.mem[hdr:hdr + 16] = struct.pack("<IIQ", vu.T_IN, 0, i * 8)
        buf, st = fe.scratch(4096, 512), fe.scratch(1)
        q.chain([(hdr, 16, False), (buf, 4096, True), (st, 1, True)])
    fe.close()
    for _ in range(3):
        fe = reconnect(s, prog)
        st, data, _ = vu.BlkDevice(fe).read(fe.queues[0], 0, 512)
        assert st == vu.S_OK and data == b"1" * 512
        fe.close()
    s.quit()


def test_export_del_while_connected(d, img):
    s = Server(BLOCKD, d, img, ",writable=on")
    fe = s.connect()
    assert vu.BlkDevice(fe).read(fe.queues[0], 0, 512)[0] == vu.S_OK
    assert [e["type"] for e in s.q.cmd("query-block-exports")] == ["vhost-user-blk"]
    s.q.cmd("block-export-del", id="e")
    deadline = time.monotonic() + 10
    while s.q.cmd("query-block-exports") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert s.q.cmd("query-block-exports") == []
    with pytest.raises((ConnectionError, OSError)):
        fe.call_u64(vu.GET_FEATURES)
    assert not os.path.exists(s.sock)
    fe.close()
    # The node is free again: a new export on it works.
    s.q.cmd("block-export-add", **{"type": "vhost-user-blk", "id": "e2", "node-name": "f",
                                    "addr": {"type": "unix", "path": s.sock}})
    fe = s.connect()
    assert vu.BlkDevice(fe).read(fe.queues[0], 0, 512)[0] == vu.S_OK
    fe.close()
    s.quit()


@pytest.mark.parametrize("key", ["iothread", "iothreads"])
def test_queues_over_iothreads(d, img, key):
    """num-queues=4 over two iothreads ("iothread" as a list, or blockd's
    "iothreads"): every queue serves requests, at the same time."""
    s = Server(BLOCKD, d, img, f",writable=on,num-queues=4,{key}.0=io0,{key}.1=io1",
               extra=["--object", "iothread,id=io0", "--object", "iothread,id=io1"])
    fe = s.connect(queues=4)
    blk = vu.BlkDevice(fe)
    heads = []
    for i, q in enumerate(fe.queues):
        assert blk.write(q, i * 8, bytes([i + 1]) * 4096) == vu.S_OK
    for i, q in enumerate(fe.queues):       # one request in flight per queue
        hdr, buf, st = fe.scratch(16), fe.scratch(4096, 512), fe.scratch(1)
        fe.mem[hdr:hdr + 16] = struct.pack("<IIQ", vu.T_IN, 0, i * 8)
        heads.append((q, q.chain([(hdr, 16, False), (buf, 4096, True), (st, 1, True)]),
                      buf, st, i))
    for q, head, buf, st, i in heads:
        (uid, ulen), = q.wait()
        assert uid == head and fe.mem[st] == vu.S_OK
        assert bytes(fe.mem[buf:buf + 4096]) == bytes([i + 1]) * 4096
    fe.close()
    s.quit()


def test_iothread_list_over_qmp(d, img):
    s = Server(BLOCKD, d, img, None, extra=["--object", "iothread,id=io0",
                                            "--object", "iothread,id=io1"])
    add = {"type": "vhost-user-blk", "id": "e", "node-name": "f", "num-queues": 2,
           "addr": {"type": "unix", "path": s.sock}}
    r = s.q.execute("block-export-add", {**add, "iothread": ["io0", "nope"]})
    assert r["error"]["desc"] == 'iothread "nope" not found'
    r = s.q.execute("block-export-add", {**add, "iothread": ["io0"], "iothreads": ["io1"]})
    assert r["error"]["desc"] == "'iothread' and 'iothreads' are mutually exclusive"
    r = s.q.execute("block-export-add", {**add, "iothread": []})
    assert r["error"]["desc"] == "Parameter 'iothread' expects a non-empty list"
    r = s.q.execute("block-export-add", {**add, "iothread": 5})
    assert "expected: string or array" in r["error"]["desc"]
    s.q.cmd("block-export-add", **add, iothread=["io0", "io1"])
    fe = s.connect(queues=2)
    blk = vu.BlkDevice(fe)
    assert [blk.read(q, 0, 512)[0] for q in fe.queues] == [vu.S_OK, vu.S_OK]
    fe.close()
    s.quit()


@pytest.mark.parametrize("prog", PROGS)
def test_listening_fd_from_the_caller(prog, d, img):
    """addr.type=fd: a socket the caller bound (and may have listened on)
    is served, as a service manager would pass it."""
    require(prog)
    path = f"{d}/passed.sock"
    lsock = socket.socket(socket.AF_UNIX)
    lsock.bind(path)
    lsock.listen(1)
    fd = lsock.fileno()
    p = subprocess.Popen([prog, "--blockdev", f"driver=file,node-name=f,filename={img}",
                          "--export", "type=vhost-user-blk,id=e,node-name=f,writable=on,"
                          f"addr.type=fd,addr.str={fd}"],
                         pass_fds=[fd], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    lsock.close()
    try:
        fe = vu.connect(path)
        blk = vu.BlkDevice(fe)
        assert blk.write(fe.queues[0], 0, b"f" * 512) == vu.S_OK
        assert blk.read(fe.queues[0], 0, 512)[1] == b"f" * 512
        fe.close()
    finally:
        p.terminate()
        assert p.wait(10) == 0, p.stderr.read()


SLOW = 300 * 1000 * 1000            # 300 ms a request


def test_get_vring_base_waits_for_requests_in_flight(d):
    """The ring stops only once the requests it took are done: the base
    returned counts them all, and each got its status."""
    s = Server(BLOCKD, d, None, ",num-queues=2", slow_ns=SLOW)
    fe = s.connect(queues=2)
    q = fe.queues[0]
    status = fe.submit_reads(q, 8)
    time.sleep(0.1)                 # taken, and in flight for 300 ms
    assert fe.get_vring_base(0) == 8
    assert q.ready() == 8 and all(fe.mem[st] == vu.S_OK for st in status)
    assert vu.BlkDevice(fe).read(fe.queues[1], 0, 512)[0] == vu.S_OK
    fe.close()
    s.quit()


def test_control_messages_while_requests_run(d):
    """SET_MEM_TABLE (the same memory again) and SET_VRING_CALL (a new
    interrupt eventfd) while requests are in flight: every request
    completes, and its interrupt reaches the new eventfd."""
    s = Server(BLOCKD, d, None, "", slow_ns=SLOW)
    fe = s.connect()
    q = fe.queues[0]
    status = fe.submit_reads(q, 4)
    assert fe.set_mem_table() == 0
    status += fe.submit_reads(q, 4)
    old = q.call
    q.call = os.eventfd(0, os.EFD_NONBLOCK)
    assert fe.set(vu.SET_VRING_CALL, fe.u64(0), [q.call]) == 0
    os.close(old)
    q.wait(8)
    assert all(fe.mem[st] == vu.S_OK for st in status)
    fe.close()
    s.quit()


@pytest.mark.parametrize("how", ["hang-up", "export-del"])
def test_end_with_requests_in_flight(d, how):
    """The front-end vanishes, or the export is deleted, while requests
    run: they finish, nothing touches the unmapped memory, the daemon
    goes on (make check runs this under ASan)."""
    s = Server(BLOCKD, d, None, "", slow_ns=SLOW)
    fe = s.connect()
    fe.submit_reads(fe.queues[0], 16)
    if how == "hang-up":
        fe.close()
        fe = s.connect()
        assert vu.BlkDevice(fe).read(fe.queues[0], 0, 512)[0] == vu.S_OK
    else:
        s.q.cmd("block-export-del", id="e")
        deadline = time.monotonic() + 10
        while s.q.cmd("query-block-exports") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert s.q.cmd("query-block-exports") == []
    fe.close()
    s.quit()


def test_control_message_during_a_drain(d):
    """A drain (a node moving to an iothread) waits for requests in flight;
    meanwhile the guest queues another one (it waits for the drain to end)
    and the VMM stops the ring.  The ring stops once the drain is over --
    not inside it, where stopping would wait for a request that waits for
    the drain: the daemon must not hang."""
    s = Server(BLOCKD, d, None, "", slow_ns=1000 * 1000 * 1000,
               extra=["--object", "iothread,id=io0"])
    fe = s.connect()
    q = fe.queues[0]
    fe.submit_reads(q, 2)
    time.sleep(0.1)
    s.q.send_raw('{"execute": "x-blockdev-set-iothread",'
                 ' "arguments": {"node-name": "f", "iothread": "io0", "force": true}}\n')
    time.sleep(0.2)                  # the drain has begun and waits
    fe.submit_reads(q, 1)
    fe.sock.settimeout(20)
    assert fe.get_vring_base(0) == 3
    assert s.q.reply().get("return") == {}
    fe.close()
    s.quit()


def test_guest_interrupts(d, img):
    """Each completion reaches the guest as an interrupt (Queue.wait fails
    on a completion without one), with EVENT_IDX and without."""
    s = Server(BLOCKD, d, img, ",writable=on")
    for mask in (~0, ~vu.F_EVENT_IDX):
        fe = s.connect(features_mask=mask)
        q = fe.queues[0]
        assert bool(fe.features & vu.F_EVENT_IDX) == (mask == ~0)
        blk = vu.BlkDevice(fe)
        for i in range(20):
            assert blk.read(q, i * 8, 4096)[0] == vu.S_OK
        fe.close()
    s.quit()
