"""A hostile guest (and a broken front-end) against the vhost-user-blk
export: descriptor chains out of guest memory, overflowing, looping,
nested, too long, out of order; ring indexes out of range; requests
without a status byte or with a short header; malformed control
messages.  Each gets a per-request error or stops only the queue it came
on (the device needs a reset); the other queue goes on, the daemon stays
up, and the next front-end is served.  make check runs this file against
the ASan daemon too."""
import os
import shutil
import socket
import struct
import subprocess
import time

import pytest

from conftest import BLOCKD
from nbdutil import short_dir
from test_vhost_user_blk import Server
import vhostuser as vu

MiB = 1024 * 1024
NEXT, WRITE, INDIRECT = vu.DESC_NEXT, vu.DESC_WRITE, vu.DESC_INDIRECT


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    img = str(tmp_path_factory.mktemp("vu") / "t.img")
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", img, "64M"], check=True)
    d = short_dir()
    s = Server(BLOCKD, d, img, ",writable=on,num-queues=2")
    yield s
    s.quit()
    shutil.rmtree(d, ignore_errors=True)


def healthy(server):
    """The daemon answers QMP and a fresh front-end does I/O."""
    assert server.p.poll() is None
    assert server.q.cmd("query-block-exports")[0]["id"] == "e"
    fe = server.connect()
    st, _, _ = vu.BlkDevice(fe).read(fe.queues[0], 0, 512)
    fe.close()
    assert st == vu.S_OK


def raw_chain(fe, q, descs, head=0):
    """Write @descs [(addr, len, flags, next)] at table positions 0.. and
    publish @head."""
    for i, (a, n, f, nxt) in enumerate(descs):
        q.put_desc(i, a, n, f, nxt)
    q.publish(head)


def request_bufs(fe, sector=0, data_len=512):
    hdr, buf, st = fe.scratch(16), fe.scratch(data_len, 512), fe.scratch(1)
    fe.mem[hdr:hdr + 16] = struct.pack("<IIQ", vu.T_IN, 0, sector)
    fe.mem[st] = 0xFF
    return hdr, buf, st


def no_completion(q, timeout=0.5):
    with pytest.raises(TimeoutError):
        q.wait(1, timeout)


def other_queue_works(fe):
    st, _, _ = vu.BlkDevice(fe).read(fe.queues[1], 0, 512)
    assert st == vu.S_OK


def table(fe, entries):
    t = fe.scratch(16 * len(entries), 16)
    for i, (a, n, f, nxt) in enumerate(entries):
        fe.mem[t + 16 * i:t + 16 * i + 16] = struct.pack("<QIHH", a, n, f, nxt)
    return t


BEYOND = 1 << 40            # a guest address no region covers


def chains(fe):
    """Each hostile chain, as the descriptors of table entries 0, 1, 2."""
    hdr, buf, st = request_bufs(fe)
    many = table(fe, [(hdr, 16, NEXT, 1)] + [(buf, 512, WRITE | NEXT, i + 2)
                                             for i in range(1100)] + [(st, 1, WRITE, 0)])
    nested_inner = table(fe, [(hdr, 16, NEXT, 1), (buf, 512, WRITE, 0)])
    nested = table(fe, [(nested_inner, 32, INDIRECT, 0)])
    return {
        "outside memory": [(hdr, 16, NEXT, 1), (BEYOND, 512, WRITE | NEXT, 2), (st, 1, WRITE, 0)],
        "end beyond memory": [(hdr, 16, NEXT, 1), (fe.mem_size - 256, 512, WRITE | NEXT, 2),
                              (st, 1, WRITE, 0)],
        "length overflows": [(hdr, 16, NEXT, 1), (2 ** 64 - 100, 4096, WRITE | NEXT, 2),
                             (st, 1, WRITE, 0)],
        "loop": [(hdr, 16, NEXT, 1), (buf, 512, WRITE | NEXT, 2), (st, 1, WRITE | NEXT, 1)],
        "self loop": [(hdr, 16, NEXT, 0)],
        "next out of range": [(hdr, 16, NEXT, 500)],
        "too many segments": [(many, 16 * 1102, INDIRECT, 0)],
        "nested indirect": [(nested, 16, INDIRECT, 0)],
        "indirect with next": [(nested_inner, 32, INDIRECT | NEXT, 1), (st, 1, WRITE, 0)],
        "indirect in chain": [(hdr, 16, NEXT, 1), (nested_inner, 32, INDIRECT, 0)],
        "indirect bad size": [(nested_inner, 24, INDIRECT, 0)],
        "indirect empty": [(nested_inner, 0, INDIRECT, 0)],
        "indirect outside": [(BEYOND, 32, INDIRECT, 0)],
        "indirect huge": [(nested_inner, 0xFFFFFFF0, INDIRECT, 0)],
        "readable after writable": [(hdr, 16, NEXT, 1), (buf, 512, WRITE | NEXT, 2),
                                    (buf, 512, NEXT, 3), (st, 1, WRITE, 0)],
        "no status byte": [(hdr, 16, NEXT, 1), (buf, 512, 0, 0)],
        "empty status": [(hdr, 16, NEXT, 1), (st, 0, WRITE, 0)],
    }


# What the daemon logs for each.
REASONS = {
    "outside memory": "buffer outside guest memory",
    "end beyond memory": "buffer outside guest memory",
    "length overflows": "buffer length overflows",
    "loop": "descriptor chain loops",
    "self loop": "descriptor chain loops",
    "next out of range": "descriptor index out of range",
    "too many segments": "too many buffers in one request",
    "nested indirect": "indirect descriptor in an indirect table",
    "indirect with next": "indirect descriptor inside a chain",
    "indirect in chain": "indirect descriptor inside a chain",
    "indirect bad size": "indirect table of a bad size",
    "indirect empty": "indirect table of a bad size",
    "indirect outside": "indirect table outside guest memory",
    "indirect huge": "indirect table of a bad size",
    "readable after writable": "device-readable buffer after a device-writable one",
    "no status byte": "request without room for its status",
    "empty status": "request without room for its status",
    "head out of range": "head index out of range",
    "index jumps ahead": "available index ahead of the ring",
}

CASES = ["outside memory", "end beyond memory", "length overflows", "loop", "self loop",
         "next out of range", "too many segments", "nested indirect", "indirect with next",
         "indirect in chain", "indirect bad size", "indirect empty", "indirect outside",
         "indirect huge", "readable after writable", "no status byte", "empty status"]


@pytest.mark.parametrize("case", CASES)
def test_bad_chain_stops_only_its_queue(server, case):
    with server.connect(queues=2) as fe:
        bad_chain(server, fe, case)
    healthy(server)


def bad_chain(server, fe, case):
    q = fe.queues[0]
    before = len(server.log())
    raw_chain(fe, q, chains(fe)[case])
    no_completion(q)
    assert REASONS[case] in server.log()[before:], server.log()[before:]
    other_queue_works(fe)


@pytest.mark.parametrize("case", ["head out of range", "index jumps ahead"])
def test_bad_ring_index(server, case):
    with server.connect(queues=2) as fe:
        bad_index(server, fe, case)
    healthy(server)


def bad_index(server, fe, case):
    q = fe.queues[0]
    before = len(server.log())
    hdr, buf, st = request_bufs(fe)
    q.put_desc(0, hdr, 16, NEXT, 1)
    q.put_desc(1, buf, 512, WRITE | NEXT, 2)
    q.put_desc(2, st, 1, WRITE, 0)
    if case == "head out of range":
        q.publish(1000)
    else:
        q.set_avail_idx(q.size + 5)
        q.do_kick()
    no_completion(q)
    assert REASONS[case] in server.log()[before:], server.log()[before:]
    other_queue_works(fe)


def test_broken_queue_serves_again_after_reset(server):
    """The front-end resets the ring (GET_VRING_BASE, then sets it up
    again): the queue is served again."""
    fe = server.connect(queues=2)
    q = fe.queues[0]
    raw_chain(fe, q, chains(fe)["loop"])
    no_completion(q)
    fe.get_vring_base(0)
    fresh = vu.Queue(fe, 0, 128)
    fe.queues[0] = fresh
    assert fe.set(vu.SET_VRING_NUM, struct.pack("<II", 0, 128)) == 0
    assert fe.set(vu.SET_VRING_BASE, struct.pack("<II", 0, 0)) == 0
    assert fe.set(vu.SET_VRING_ADDR, struct.pack(
        "<IIQQQQ", 0, 0, vu.QVA_BASE + fresh.desc, vu.QVA_BASE + fresh.used,
        vu.QVA_BASE + fresh.avail, 0)) == 0
    assert fe.set(vu.SET_VRING_KICK, fe.u64(0), [fresh.kick]) == 0
    assert fe.set(vu.SET_VRING_CALL, fe.u64(0), [fresh.call]) == 0
    assert fe.set(vu.SET_VRING_ENABLE, struct.pack("<II", 0, 1)) == 0
    assert vu.BlkDevice(fe).read(fresh, 0, 512)[0] == vu.S_OK
    fe.close()


def test_per_request_errors_keep_the_queue(server):
    """A short header gets IOERR; odd but legal layouts (a header split
    over two buffers, empty buffers in the middle) are served."""
    fe = server.connect()
    q = fe.queues[0]
    hdr, buf, st = request_bufs(fe)
    raw_chain(fe, q, [(hdr, 8, NEXT, 1), (st, 1, WRITE, 0)])
    (head, ulen), = q.wait()
    assert fe.mem[st] == vu.S_IOERR and ulen == 1
    q.free = list(range(q.size))
    q.inuse = {}
    hdr, buf, st = request_bufs(fe)
    raw_chain(fe, q, [(hdr, 8, NEXT, 1), (hdr + 8, 8, NEXT, 2), (hdr, 0, NEXT, 3),
                      (buf, 0, WRITE | NEXT, 4), (buf, 512, WRITE | NEXT, 5), (st, 1, WRITE, 0)])
    (head, ulen), = q.wait()
    assert fe.mem[st] == vu.S_OK and ulen == 513
    st2, _, _ = vu.BlkDevice(fe).read(q, 0, 512)
    assert st2 == vu.S_OK
    fe.close()
    healthy(server)


def raw_connection(server):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(server.sock)
    return s


def closed_by_server(s):
    """The server hung up (a hang is not a hang-up)."""
    try:
        return s.recv(64) == b""
    except ConnectionError:
        return True
    except socket.timeout:
        return False


@pytest.mark.parametrize("msg", [
    struct.pack("<III", vu.GET_FEATURES, 1, 100000),          # oversized
    struct.pack("<III", 999, 1, 0),                           # unknown request
    struct.pack("<III", vu.GET_VRING_BASE, 1, 8) + struct.pack("<II", 300, 0),
])
def test_malformed_message_disconnects(server, msg):
    s = raw_connection(server)
    s.sendall(msg)
    assert closed_by_server(s)
    s.close()
    healthy(server)


def test_config_read_out_of_range(server):
    """A GET_CONFIG the device cannot answer gets an empty reply, as the
    protocol says; the connection goes on."""
    with vu.Frontend(server.sock) as fe:
        fe.negotiate()
        data = fe.call(vu.GET_CONFIG, struct.pack("<III", 0, 1000, 0))
        assert data == b""
        assert len(fe.get_config(60)) == 60
    healthy(server)


def test_partial_message_then_hang_up(server):
    s = raw_connection(server)
    s.sendall(struct.pack("<II", vu.GET_FEATURES, 1))
    fe_ok = server.q.cmd("query-block-exports")
    assert fe_ok
    s.close()
    healthy(server)


def test_refused_settings_are_nacked(server):
    """With REPLY_ACK, bad settings are answered with a failure and the
    connection goes on."""
    fe = vu.Frontend(server.sock)
    fe.negotiate()
    region = struct.pack("<QQQQ", 0, fe.mem_size, vu.QVA_BASE, 0)
    assert fe.set(vu.SET_VRING_NUM, struct.pack("<II", 300, 128)) != 0
    assert fe.set(vu.SET_MEM_TABLE, struct.pack("<II", 9, 0) + region * 9) != 0
    assert fe.set(vu.SET_MEM_TABLE, struct.pack("<II", 1, 0) + region) != 0      # no fd
    huge = struct.pack("<QQQQ", 0, 1 << 62, vu.QVA_BASE, 1 << 62)
    assert fe.set(vu.SET_MEM_TABLE, struct.pack("<II", 1, 0) + huge, [fe.memfd]) != 0
    assert fe.set(vu.SET_FEATURES, fe.u64(1 << 63)) != 0                       # not offered
    assert fe.set(vu.SET_VRING_KICK, fe.u64(0 | 0x100)) != 0                    # polling
    assert fe.set(vu.SET_CONFIG, struct.pack("<III", 0, 8, 0) + bytes(8)) != 0
    # Rings outside guest memory, or of a size that is not a power of 2,
    # are refused, and the queue does not start.
    assert fe.set_mem_table() == 0
    q = vu.Queue(fe, 0, 128)
    good = struct.pack("<IIQQQQ", 0, 0, vu.QVA_BASE + q.desc, vu.QVA_BASE + q.used,
                       vu.QVA_BASE + q.avail, 0)
    outside = struct.pack("<IIQQQQ", 0, 0, vu.QVA_BASE + q.desc, 1 << 50,
                          vu.QVA_BASE + q.avail, 0)
    assert fe.set(vu.SET_VRING_NUM, struct.pack("<II", 0, 128)) == 0
    assert fe.set(vu.SET_VRING_ADDR, outside) != 0
    assert fe.set(vu.SET_VRING_NUM, struct.pack("<II", 0, 100)) == 0
    assert fe.set(vu.SET_VRING_ADDR, good) != 0
    assert fe.set(vu.SET_VRING_KICK, fe.u64(0), [q.kick]) == 0    # incomplete: waits
    assert fe.set(vu.SET_VRING_CALL, fe.u64(0), [q.call]) == 0
    assert fe.set(vu.SET_VRING_ENABLE, struct.pack("<II", 0, 1)) == 0
    fe.queues.append(q)
    hdr, buf, st = request_bufs(fe)
    q.chain([(hdr, 16, False), (buf, 512, True), (st, 1, True)])
    no_completion(q)
    # Put right, the queue starts and serves what was waiting.
    assert fe.set(vu.SET_VRING_NUM, struct.pack("<II", 0, 128)) == 0
    assert fe.set(vu.SET_VRING_ADDR, good) == 0
    q.wait()
    assert fe.mem[st] == vu.S_OK
    fe.close()
    healthy(server)


def test_too_many_fds(server):
    s = raw_connection(server)
    fds = [os.eventfd(0) for _ in range(20)]
    s.sendmsg([struct.pack("<III", vu.SET_OWNER, 1, 0)],
              [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))])
    assert closed_by_server(s)
    for fd in fds:
        os.close(fd)
    s.close()
    healthy(server)


def test_guest_memory_in_two_regions(server):
    """A buffer that spans two regions (two mappings of one memfd) is
    read into both."""
    fe = vu.Frontend(server.sock)
    fe.negotiate()
    half = fe.mem_size // 2
    regions = (struct.pack("<QQQQ", 0, half, vu.QVA_BASE, 0) +
               struct.pack("<QQQQ", half, half, vu.QVA_BASE + half, half))
    assert fe.set(vu.SET_MEM_TABLE, struct.pack("<II", 2, 0) + regions,
                  [fe.memfd, fe.memfd]) == 0
    q = fe.add_queue()
    assert vu.BlkDevice(fe).write(q, 0, bytes(range(256)) * 16) == vu.S_OK
    hdr, st = fe.alloc(16), fe.alloc(1)
    fe.mem[hdr:hdr + 16] = struct.pack("<IIQ", vu.T_IN, 0, 0)
    q.chain([(hdr, 16, False), (half - 2048, 4096, True), (st, 1, True)])
    q.wait()
    assert fe.mem[st] == vu.S_OK
    assert bytes(fe.mem[half - 2048:half + 2048]) == bytes(range(256)) * 16
    fe.close()


def test_one_head_offered_again_and_again(tmp_path):
    """A guest that offers the same request again before it came back (a
    flood: each would cost the daemon memory) is stopped at the ring's
    size; the requests already taken complete."""
    d = short_dir()
    s = Server(BLOCKD, d, None, "", slow_ns=300 * 1000 * 1000)
    try:
        with s.connect() as fe:
            q = fe.queues[0]
            hdr, buf, st = request_bufs(fe)
            q.put_desc(0, hdr, 16, NEXT, 1)
            q.put_desc(1, buf, 512, WRITE | NEXT, 2)
            q.put_desc(2, st, 1, WRITE, 0)
            for _ in range(q.size):
                q.publish(0, kick=False)
            q.do_kick()
            time.sleep(0.1)             # all taken, in flight for 300 ms
            before = len(s.log())
            for _ in range(10):
                q.publish(0, kick=False)
            q.do_kick()
            deadline = time.monotonic() + 5
            while "more requests in flight" not in s.log()[before:]:
                assert time.monotonic() < deadline, s.log()
                time.sleep(0.02)
            assert len(q.wait(q.size)) == q.size
            assert fe.mem[st] == vu.S_OK
        healthy(s)
    finally:
        s.quit()
        shutil.rmtree(d, ignore_errors=True)
