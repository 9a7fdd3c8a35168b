"""Helpers for the NBD tests: start blockd serving images, a tiny raw NBD
client (fixed newstyle, doc/proto.md of NetworkBlockDevice/nbd), and checks
that the daemon still serves."""
import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time

# Constants of include/blockd/nbd-proto.h.
NBD_MAGIC = 0x4E42444D41474943
NBD_OPTS_MAGIC = 0x49484156454F5054
NBD_REP_MAGIC = 0x0003E889045565A9
NBD_REQUEST_MAGIC = 0x25609513
NBD_SIMPLE_REPLY_MAGIC = 0x67446698
NBD_STRUCTURED_REPLY_MAGIC = 0x668E33EF

NBD_FLAG_FIXED_NEWSTYLE = 1 << 0
NBD_FLAG_NO_ZEROES = 1 << 1
NBD_FLAG_C_FIXED_NEWSTYLE = 1 << 0
NBD_FLAG_C_NO_ZEROES = 1 << 1

NBD_OPT_EXPORT_NAME = 1
NBD_OPT_ABORT = 2
NBD_OPT_LIST = 3
NBD_OPT_STARTTLS = 5
NBD_OPT_INFO = 6
NBD_OPT_GO = 7
NBD_OPT_STRUCTURED_REPLY = 8
NBD_OPT_LIST_META_CONTEXT = 9
NBD_OPT_SET_META_CONTEXT = 10

NBD_REP_ACK = 1
NBD_REP_SERVER = 2
NBD_REP_INFO = 3
NBD_REP_META_CONTEXT = 4
NBD_REP_ERR_UNSUP = (1 << 31) | 1
NBD_REP_ERR_POLICY = (1 << 31) | 2
NBD_REP_ERR_INVALID = (1 << 31) | 3
NBD_REP_ERR_UNKNOWN = (1 << 31) | 6
NBD_REP_ERR_TOO_BIG = (1 << 31) | 9

NBD_INFO_EXPORT = 0
NBD_INFO_NAME = 1
NBD_INFO_DESCRIPTION = 2
NBD_INFO_BLOCK_SIZE = 3

NBD_FLAG_HAS_FLAGS = 1 << 0
NBD_FLAG_READ_ONLY = 1 << 1

NBD_CMD_READ = 0
NBD_CMD_WRITE = 1
NBD_CMD_DISC = 2
NBD_CMD_FLUSH = 3
NBD_CMD_TRIM = 4
NBD_CMD_CACHE = 5
NBD_CMD_WRITE_ZEROES = 6
NBD_CMD_BLOCK_STATUS = 7

NBD_CMD_FLAG_FUA = 1 << 0
NBD_CMD_FLAG_NO_HOLE = 1 << 1
NBD_CMD_FLAG_DF = 1 << 2
NBD_CMD_FLAG_REQ_ONE = 1 << 3
NBD_CMD_FLAG_FAST_ZERO = 1 << 4

NBD_REPLY_FLAG_DONE = 1 << 0
NBD_REPLY_TYPE_NONE = 0
NBD_REPLY_TYPE_OFFSET_DATA = 1
NBD_REPLY_TYPE_OFFSET_HOLE = 2
NBD_REPLY_TYPE_ERROR = (1 << 15) | 1

NBD_EPERM = 1
NBD_EIO = 5
NBD_EINVAL = 22
NBD_ENOSPC = 28

NBD_MAX_BUFFER_SIZE = 32 * 1024 * 1024

MiB = 1024 * 1024


def short_dir():
    """A directory whose unix socket paths stay well under 108 bytes."""
    return tempfile.mkdtemp(prefix="bdnbd", dir="/tmp")


def sparse_image(path, size):
    with open(path, "wb") as f:
        f.truncate(size)
    return str(path)


class Server:
    """blockd serving one or more raw images over NBD on a unix socket.

    exports: dicts with name, img, and optionally writable (default True),
    iothread, description, file_opts (options of the file node), raw_opts
    (of the raw node: discard=unmap there too lets trims through, as in
    QEMU)."""

    def __init__(self, blockd, sdir, exports, iothreads=(), qmp=False, nbd=True, extra=()):
        self.sdir = sdir
        self.sock = os.path.join(sdir, "nbd.sock")
        self.qmp_path = os.path.join(sdir, "qmp.sock") if qmp else None
        args = []
        for io in iothreads:
            args += ["--object", f"iothread,id={io}"]
        for e in exports:
            n = e["name"]
            fopts = "".join("," + o for o in e.get("file_opts", ()))
            ropts = "".join("," + o for o in e.get("raw_opts", ()))
            args += ["--blockdev", f"driver=file,node-name=f-{n},filename={e['img']}{fopts}",
                     "--blockdev", f"driver=raw,node-name={n},file=f-{n}{ropts}"]
        if qmp:
            args += ["--chardev", f"socket,id=mon0,path={self.qmp_path},server=on,wait=off",
                     "--monitor", "chardev=mon0"]
        if nbd:
            args += ["--nbd-server", f"addr.type=unix,addr.path={self.sock}"]
            for e in exports:
                if not e.get("export", True):
                    continue
                opt = f"type=nbd,id=e-{e['name']},node-name={e['name']}"
                opt += ",writable=" + ("on" if e.get("writable", True) else "off")
                if e.get("iothread"):
                    opt += f",iothread={e['iothread']}"
                if e.get("description"):
                    opt += f",description={e['description']}"
                args += ["--export", opt]
        args += list(extra)
        self.daemon = blockd(*args)
        self.daemon.wait_ready()
        self.pid = self.daemon.proc.pid

    def uri(self, name=""):
        return f"nbd+unix:///{name}?socket={self.sock}"

    def alive(self):
        return self.daemon.proc.poll() is None

    def rss_kib(self):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def num_fds(self):
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def assert_serving(self, name, size=None):
        """The daemon runs and a fresh nbdinfo can talk to export @name."""
        assert self.alive(), "blockd died: " + self.daemon.stderr_path.read_text()
        err = self.daemon.stderr_path.read_text()
        assert "Sanitizer" not in err and "runtime error" not in err, err
        info = nbdinfo_json(self.uri(name))
        if size is not None:
            assert info["exports"][0]["export-size"] == size
        return info


def run(*args, timeout=60, check=True, input=None):
    p = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, input=input)
    if check and p.returncode != 0:
        raise AssertionError(f"{args!r} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def nbdinfo_json(uri, *opts):
    return json.loads(run("nbdinfo", "--json", *opts, uri, timeout=20).stdout)


def wait_for(pred, timeout=10, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class RawClient:
    """A minimal NBD client speaking raw bytes."""

    def __init__(self, path, timeout=10.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.structured = False
        self.size = None
        self.tflags = None

    def close(self):
        self.sock.close()

    def send(self, data):
        self.sock.sendall(data)

    def recv_exact(self, n):
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise EOFError(f"server closed after {len(buf)} of {n} bytes")
            buf += chunk
        return bytes(buf)

    def at_eof(self, timeout=5.0):
        """True if the server closed the connection (reading and dropping
        anything it still sends) within @timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return False
            except (ConnectionResetError, BrokenPipeError):
                return True
            if not chunk:
                return True
        return False

    # ---- Handshake
    def greeting(self):
        magic, opts_magic, flags = struct.unpack(">QQH", self.recv_exact(18))
        assert magic == NBD_MAGIC and opts_magic == NBD_OPTS_MAGIC
        assert flags & NBD_FLAG_FIXED_NEWSTYLE
        return flags

    def start(self, cflags=NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES):
        self.greeting()
        self.send(struct.pack(">I", cflags))

    def send_option(self, opt, data=b"", magic=NBD_OPTS_MAGIC, length=None):
        self.send(struct.pack(">QII", magic, opt, len(data) if length is None else length)
                  + data)

    def option_reply(self):
        magic, opt, rtype, length = struct.unpack(">QIII", self.recv_exact(20))
        assert magic == NBD_REP_MAGIC, hex(magic)
        return opt, rtype, self.recv_exact(length)

    def option(self, opt, data=b""):
        """Send an option; the replies up to the final one."""
        self.send_option(opt, data)
        replies = []
        while True:
            o, rtype, payload = self.option_reply()
            assert o == opt
            replies.append((rtype, payload))
            if rtype != NBD_REP_INFO and rtype != NBD_REP_SERVER and \
                    rtype != NBD_REP_META_CONTEXT:
                return replies

    @staticmethod
    def info_payload(name, requests=()):
        n = name.encode()
        return struct.pack(">I", len(n)) + n + struct.pack(">H", len(requests)) + \
            b"".join(struct.pack(">H", r) for r in requests)

    def go(self, name="", structured=False):
        if structured:
            assert self.option(NBD_OPT_STRUCTURED_REPLY) == [(NBD_REP_ACK, b"")]
            self.structured = True
        replies = self.option(NBD_OPT_GO, self.info_payload(name))
        assert replies[-1][0] == NBD_REP_ACK, replies
        for rtype, payload in replies:
            if rtype == NBD_REP_INFO and struct.unpack(">H", payload[:2])[0] == NBD_INFO_EXPORT:
                _, self.size, self.tflags = struct.unpack(">HQH", payload)
        assert self.size is not None
        return self.size, self.tflags

    @classmethod
    def connect(cls, path, name="", structured=False, timeout=10.0):
        c = cls(path, timeout)
        c.start()
        c.go(name, structured)
        return c

    # ---- Transmission
    def request(self, cmd, offset=0, length=0, flags=0, cookie=1, payload=b"",
                magic=NBD_REQUEST_MAGIC):
        self.send(struct.pack(">IHHQQI", magic, flags, cmd, cookie, offset, length) + payload)

    def reply(self, read_len=0):
        """(error, cookie, data) of the next reply.  @read_len: the data a
        successful simple read reply carries.  Structured replies are
        gathered up to the chunk with the DONE flag."""
        magic = struct.unpack(">I", self.recv_exact(4))[0]
        if magic == NBD_SIMPLE_REPLY_MAGIC:
            err, cookie = struct.unpack(">IQ", self.recv_exact(12))
            data = self.recv_exact(read_len) if err == 0 and read_len else b""
            return err, cookie, data
        assert magic == NBD_STRUCTURED_REPLY_MAGIC, hex(magic)
        err = 0
        data = {}
        while True:
            flags, rtype, cookie, length = struct.unpack(">HHQI", self.recv_exact(16))
            payload = self.recv_exact(length)
            if rtype == NBD_REPLY_TYPE_ERROR:
                err = struct.unpack(">I", payload[:4])[0]
            elif rtype == NBD_REPLY_TYPE_OFFSET_DATA:
                data[struct.unpack(">Q", payload[:8])[0]] = payload[8:]
            elif rtype == NBD_REPLY_TYPE_OFFSET_HOLE:
                off, n = struct.unpack(">QI", payload)
                data[off] = bytes(n)
            if flags & NBD_REPLY_FLAG_DONE:
                return err, cookie, b"".join(data[k] for k in sorted(data))
            magic = struct.unpack(">I", self.recv_exact(4))[0]
            assert magic == NBD_STRUCTURED_REPLY_MAGIC

    def cmd(self, cmd, offset=0, length=0, flags=0, payload=b"", cookie=7):
        """One request and its reply: (error, data)."""
        self.request(cmd, offset, length, flags, cookie, payload)
        err, rcookie, data = self.reply(length if cmd == NBD_CMD_READ else 0)
        assert rcookie == cookie
        return err, data

    def disconnect(self):
        self.request(NBD_CMD_DISC)
        self.close()


def have(tool):
    return shutil.which(tool) is not None
