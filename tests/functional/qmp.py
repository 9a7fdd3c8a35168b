"""A small synchronous QMP client for tests."""
import json
import os
import socket
import struct
import time


class QMPError(Exception):
    def __init__(self, reply):
        super().__init__(reply["error"]["desc"])
        self.klass = reply["error"]["class"]
        self.desc = reply["error"]["desc"]


class QMP:
    def __init__(self, path, timeout=10.0, negotiate=True):
        deadline = time.monotonic() + timeout
        self.buf = b""
        self.events = []
        while True:
            self.sock = self._connect(path, deadline)
            self.sock.settimeout(timeout)
            if not self._server_is_qsd():
                break
            # qemu-storage-daemon 7.2 can lose a connection made while its
            # monitor is being set up (its monitor thread then blocks in
            # accept and never greets, or it hangs up at once): connect
            # again.  blockd gets no such second chance.
            self.sock.settimeout(max(0.1, min(2.0, deadline - time.monotonic())))
            try:
                self.greeting = self.recv()
                self.sock.settimeout(timeout)
                break
            except (TimeoutError, EOFError):
                self.sock.close()
                self.buf = b""
                if time.monotonic() > deadline:
                    raise
        if not hasattr(self, "greeting"):
            self.greeting = self.recv()
        if negotiate:
            self.cmd("qmp_capabilities")

    @staticmethod
    def _connect(path, deadline):
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(path)
                return sock
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def server_pid(self):
        """The process id of the daemon at the other end."""
        cred = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                    struct.calcsize("3i"))
        return struct.unpack("3i", cred)[0]

    def _server_is_qsd(self):
        try:
            exe = os.readlink(f"/proc/{self.server_pid()}/exe")
            return os.path.basename(exe) == "qemu-storage-daemon"
        except OSError:
            return False

    def close(self):
        self.sock.close()

    def send_raw(self, data):
        self.sock.sendall(data if isinstance(data, bytes) else data.encode())

    def recv(self):
        """The next JSON object from the server (events included); works
        for one object per line and for pretty-printed ones."""
        decoder = json.JSONDecoder()
        while True:
            text = self.buf.decode("utf-8", errors="replace").lstrip()
            if text:
                try:
                    obj, end = decoder.raw_decode(text)
                    self.buf = text[end:].encode()
                    return obj
                except json.JSONDecodeError:
                    pass
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise EOFError("monitor closed the connection")
            self.buf += chunk

    def reply(self):
        """The next reply, queueing events seen on the way.  A second
        greeting is skipped: qemu-storage-daemon sends one more when a
        client connected before its --monitor option was processed."""
        while True:
            msg = self.recv()
            if "event" in msg:
                self.events.append(msg)
                continue
            if "QMP" in msg:
                continue
            return msg

    def execute(self, name, args=None, id=None):
        req = {"execute": name}
        if args is not None:
            req["arguments"] = args
        if id is not None:
            req["id"] = id
        self.send_raw(json.dumps(req) + "\n")
        return self.reply()

    def cmd(self, name, **args):
        """Run a command; its "return", or raise QMPError."""
        args = {k.replace("_", "-"): v for k, v in args.items()}
        reply = self.execute(name, args)
        # An NBD client that has just left may count as connected for a
        # moment (its hang-up not read yet), and a safe block-export-del
        # refuses then, on either daemon; a test that expects success means
        # "once the clients are gone".
        deadline = time.monotonic() + 5
        while (name == "block-export-del" and time.monotonic() < deadline and
               "still in use" in reply.get("error", {}).get("desc", "")):
            time.sleep(0.05)
            reply = self.execute(name, args)
        if "error" in reply:
            raise QMPError(reply)
        return reply["return"]

    def error(self, name, args=None):
        """Run a command that must fail; (class, desc)."""
        reply = self.execute(name, args)
        assert "error" in reply, reply
        return reply["error"]["class"], reply["error"]["desc"]

    def next_event(self, deadline):
        """The next event, queued or read before @deadline (monotonic), or
        None at the deadline.  Replies are not expected meanwhile."""
        if self.events:
            return self.events.pop(0)
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                msg = self.recv()
            except socket.timeout:
                continue
            finally:
                self.sock.settimeout(10)
            if "event" in msg:
                return msg
        return None
