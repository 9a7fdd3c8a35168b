"""A small vhost-user front-end (what a VMM does) for the tests: guest
memory in a memfd, split virtqueues laid out in it, virtio-blk requests
built by hand -- well-formed ones, and the hostile ones a guest could make.

Guest physical addresses start at 0; the front-end's own ("qva")
addresses are GPA + QVA_BASE, so a server mixing the two is caught."""
import array
import mmap
import os
import select
import socket
import struct
import threading
import time

GET_FEATURES, SET_FEATURES, SET_OWNER, RESET_OWNER, SET_MEM_TABLE = 1, 2, 3, 4, 5
SET_VRING_NUM, SET_VRING_ADDR, SET_VRING_BASE, GET_VRING_BASE = 8, 9, 10, 11
SET_VRING_KICK, SET_VRING_CALL, SET_VRING_ERR = 12, 13, 14
GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES, GET_QUEUE_NUM, SET_VRING_ENABLE = 15, 16, 17, 18
SET_BACKEND_REQ_FD, GET_CONFIG, SET_CONFIG = 21, 24, 25

F_PROTOCOL_FEATURES = 1 << 30
F_EVENT_IDX = 1 << 29
F_INDIRECT = 1 << 28
PF_MQ, PF_REPLY_ACK, PF_BACKEND_REQ, PF_CONFIG = 1 << 0, 1 << 3, 1 << 5, 1 << 9

DESC_NEXT, DESC_WRITE, DESC_INDIRECT = 1, 2, 4
T_IN, T_OUT, T_FLUSH, T_GET_ID, T_DISCARD, T_WRITE_ZEROES = 0, 1, 4, 8, 11, 13
S_OK, S_IOERR, S_UNSUPP = 0, 1, 2

QVA_BASE = 0x7F0000000000

_fence = threading.Lock()


def full_barrier():
    """Order our store of used_event before our load of used->idx, as the
    device orders its store of used->idx before its load of used_event: a
    lock's atomic instruction is a full barrier (x86: store-load too)."""
    with _fence:
        pass


class Queue:
    def __init__(self, fe, index, size):
        self.fe, self.index, self.size = fe, index, size
        self.desc = fe.alloc(16 * size, 16)
        self.avail = fe.alloc(6 + 2 * size, 2)
        self.used = fe.alloc(6 + 8 * size, 4)
        self.avail_idx = 0
        self.used_seen = 0
        self.free = list(range(size))
        self.inuse = {}
        self.kick = os.eventfd(0, os.EFD_NONBLOCK)
        self.call = os.eventfd(0, os.EFD_NONBLOCK)

    def put_desc(self, i, addr, length, flags, nxt=0):
        self.fe.mem[self.desc + 16 * i:self.desc + 16 * i + 16] = struct.pack(
            "<QIHH", addr, length, flags, nxt)

    def publish(self, head, kick=True):
        """Put @head in the available ring and kick."""
        slot = self.avail + 4 + 2 * (self.avail_idx % self.size)
        self.fe.mem[slot:slot + 2] = struct.pack("<H", head)
        self.avail_idx = (self.avail_idx + 1) & 0xFFFF
        self.fe.mem[self.avail + 2:self.avail + 4] = struct.pack("<H", self.avail_idx)
        if kick:
            self.do_kick()

    def do_kick(self):
        os.eventfd_write(self.kick, 1)

    def set_avail_idx(self, idx):
        self.fe.mem[self.avail + 2:self.avail + 4] = struct.pack("<H", idx & 0xFFFF)

    def used_idx(self):
        return struct.unpack_from("<H", self.fe.mem, self.used + 2)[0]

    def ready(self):
        return (self.used_idx() - self.used_seen) & 0xFFFF

    def set_used_event(self, idx):
        off = self.avail + 4 + 2 * self.size
        self.fe.mem[off:off + 2] = struct.pack("<H", idx & 0xFFFF)

    def wait(self, count=1, timeout=10):
        """The next @count used entries as (id, len), waited for as a
        guest does: asleep until the device interrupts (call eventfd),
        with EVENT_IDX asking for the interrupt at the next entry.  A
        completion that came without its interrupt is an error."""
        deadline = time.monotonic() + timeout
        while self.ready() < count:
            if self.fe.features & F_EVENT_IDX:
                # Interrupt me when the entry after what I have seen is
                # used; if more came meanwhile, look again first (the
                # device only interrupts when it passes used_event).
                now = self.used_idx()
                self.set_used_event(now)
                full_barrier()
                if self.used_idx() != now:
                    continue
            else:
                full_barrier()
            if self.ready() >= count:
                break
            left = deadline - time.monotonic()
            r, _, _ = select.select([self.call], [], [], max(left, 0))
            if not r:
                if self.ready():
                    raise AssertionError(
                        f"queue {self.index}: completion without interrupt (used "
                        f"{self.used_idx()}, seen {self.used_seen}, waiting for {count})")
                raise TimeoutError(f"queue {self.index}: no completion")
            os.eventfd_read(self.call)
        out = []
        for _ in range(count):
            off = self.used + 4 + 8 * (self.used_seen % self.size)
            out.append(struct.unpack_from("<II", self.fe.mem, off))
            self.used_seen = (self.used_seen + 1) & 0xFFFF
        return out

    def chain(self, bufs, indirect=False):
        """Descriptors for @bufs [(gpa, len, writable)], published: the head."""
        if indirect:
            table = self.fe.scratch(16 * len(bufs), 16)
            for i, (a, n, w) in enumerate(bufs):
                flags = (DESC_WRITE if w else 0) | (DESC_NEXT if i + 1 < len(bufs) else 0)
                self.fe.mem[table + 16 * i:table + 16 * i + 16] = struct.pack(
                    "<QIHH", a, n, flags, i + 1)
            head = self.free.pop(0)
            self.inuse[head] = [head]
            self.put_desc(head, table, 16 * len(bufs), DESC_INDIRECT)
            self.publish(head)
            return head
        ids = [self.free.pop(0) for _ in bufs]
        for k, (a, n, w) in enumerate(bufs):
            nxt = ids[k + 1] if k + 1 < len(ids) else 0
            flags = (DESC_WRITE if w else 0) | (DESC_NEXT if k + 1 < len(ids) else 0)
            self.put_desc(ids[k], a, n, flags, nxt)
        self.inuse[ids[0]] = ids
        self.publish(ids[0])
        return ids[0]

    def done(self, head):
        """Request @head completed: its descriptors are free again."""
        self.free.extend(self.inuse.pop(head))


class Frontend:
    def __init__(self, path, mem_size=64 << 20, timeout=10):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.memfd = os.memfd_create("guest", os.MFD_CLOEXEC)
        os.ftruncate(self.memfd, mem_size)
        self.mem = mmap.mmap(self.memfd, mem_size)
        self.mem_size = mem_size
        self.brk = 4096
        self.arena = self.sbrk = mem_size // 2
        self.queues = []
        self.protocol_features = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self.sock.fileno() < 0:
            return
        self.sock.close()
        for q in self.queues:
            os.close(q.kick)
            os.close(q.call)

    def alloc(self, n, align=64):
        """Memory for good (rings, tables)."""
        self.brk = (self.brk + align - 1) & ~(align - 1)
        a = self.brk
        self.brk += n
        assert self.brk <= self.arena
        return a

    def scratch(self, n, align=64):
        """Memory for one request: the upper half, reused round robin."""
        self.sbrk = (self.sbrk + align - 1) & ~(align - 1)
        if self.sbrk + n > self.mem_size:
            self.sbrk = self.arena
        a = self.sbrk
        self.sbrk += n
        return a

    # ---- messages ----

    def send(self, req, payload=b"", fds=(), need_reply=False, flags=None):
        if flags is None:
            flags = 1 | (0x8 if need_reply else 0)
        data = struct.pack("<III", req, flags, len(payload)) + payload
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        self.sock.sendmsg([data], anc)

    def recv(self):
        hdr = self._recv_exact(12)
        req, flags, size = struct.unpack("<III", hdr)
        return req, flags, self._recv_exact(size)

    def _recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("server closed the connection")
            buf += chunk
        return buf

    def call(self, req, payload=b"", fds=()):
        self.send(req, payload, fds)
        r, flags, data = self.recv()
        assert r == req and flags & 0x4, (r, flags)
        return data

    def call_u64(self, req):
        return struct.unpack("<Q", self.call(req))[0]

    def set(self, req, payload=b"", fds=()):
        """A message without a reply of its own: acknowledged if REPLY_ACK
        was negotiated; returns the ack (0: done)."""
        if self.protocol_features & PF_REPLY_ACK:
            self.send(req, payload, fds, need_reply=True)
            r, _, data = self.recv()
            assert r == req
            return struct.unpack("<Q", data)[0]
        self.send(req, payload, fds)
        return 0

    def u64(self, v):
        return struct.pack("<Q", v)

    # ---- setup ----

    def negotiate(self, features_mask=~0, protocol=PF_MQ | PF_REPLY_ACK | PF_CONFIG):
        self.features = self.call_u64(GET_FEATURES) & features_mask
        if self.features & F_PROTOCOL_FEATURES:
            offered = self.call_u64(GET_PROTOCOL_FEATURES)
            self.send(SET_PROTOCOL_FEATURES, self.u64(offered & protocol))
            self.protocol_features = offered & protocol
        self.set(SET_OWNER)
        assert self.set(SET_FEATURES, self.u64(self.features)) == 0
        return self.features

    def set_mem_table(self):
        region = struct.pack("<QQQQ", 0, self.mem_size, QVA_BASE, 0)
        return self.set(SET_MEM_TABLE, struct.pack("<II", 1, 0) + region, [self.memfd])

    def add_queue(self, size=128, enable=True):
        q = Queue(self, len(self.queues), size)
        self.queues.append(q)
        i = q.index
        assert self.set(SET_VRING_NUM, struct.pack("<II", i, size)) == 0
        assert self.set(SET_VRING_BASE, struct.pack("<II", i, 0)) == 0
        assert self.set(SET_VRING_ADDR, struct.pack("<IIQQQQ", i, 0, QVA_BASE + q.desc,
                                                    QVA_BASE + q.used, QVA_BASE + q.avail,
                                                    0)) == 0
        assert self.set(SET_VRING_KICK, self.u64(i), [q.kick]) == 0
        assert self.set(SET_VRING_CALL, self.u64(i), [q.call]) == 0
        if enable and self.features & F_PROTOCOL_FEATURES:
            assert self.set(SET_VRING_ENABLE, struct.pack("<II", i, 1)) == 0
        return q

    def get_config(self, size=60):
        data = self.call(GET_CONFIG, struct.pack("<III", 0, size, 0) + bytes(size))
        return data[12:12 + size]

    def set_config(self, offset, data):
        return self.set(SET_CONFIG, struct.pack("<III", offset, len(data), 0) + data)

    def get_vring_base(self, i):
        return struct.unpack("<II", self.call(GET_VRING_BASE, struct.pack("<II", i, 0)))[1]

    def submit_reads(self, q, n, length=4096):
        """@n reads published at once (not waited for): their status
        addresses."""
        status = []
        for i in range(n):
            hdr, buf, st = self.scratch(16), self.scratch(length, 512), self.scratch(1)
            self.mem[hdr:hdr + 16] = struct.pack("<IIQ", T_IN, 0, i * 8)
            self.mem[st] = 0xFF
            q.chain([(hdr, 16, False), (buf, length, True), (st, 1, True)])
            status.append(st)
        return status


def connect(path, queues=1, size=128, features_mask=~0, timeout=10):
    """A front-end with memory and @queues queues set up."""
    fe = Frontend(path, timeout=timeout)
    fe.negotiate(features_mask)
    assert fe.set_mem_table() == 0
    for _ in range(queues):
        fe.add_queue(size)
    return fe


class BlkDevice:
    """virtio-blk requests over a Frontend's queues."""

    def __init__(self, fe):
        self.fe = fe
        self.hdr = {}

    def request(self, q, rtype, sector, out=b"", in_len=0, indirect=False, timeout=10):
        """One request; returns (status, data read, used length)."""
        fe = self.fe
        hdr = fe.scratch(16)
        fe.mem[hdr:hdr + 16] = struct.pack("<IIQ", rtype, 0, sector)
        bufs = [(hdr, 16, False)]
        if out:
            a = fe.scratch(len(out), 512)
            fe.mem[a:a + len(out)] = out
            bufs.append((a, len(out), False))
        data = None
        if in_len:
            data = fe.scratch(in_len, 512)
            bufs.append((data, in_len, True))
        status = fe.scratch(1)
        fe.mem[status] = 0xFF
        bufs.append((status, 1, True))
        head = q.chain(bufs, indirect)
        (uid, ulen), = q.wait(1, timeout)
        assert uid == head
        q.done(head)
        got = bytes(fe.mem[data:data + in_len]) if in_len else b""
        return fe.mem[status], got, ulen

    def read(self, q, sector, length, **kw):
        return self.request(q, T_IN, sector, in_len=length, **kw)

    def write(self, q, sector, data, **kw):
        return self.request(q, T_OUT, sector, out=data, **kw)[0]

    def seg(self, q, rtype, sector, num, flags=0):
        return self.request(q, rtype, 0, out=struct.pack("<QII", sector, num, flags))[0]
