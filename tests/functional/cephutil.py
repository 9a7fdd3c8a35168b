"""A one-node Ceph cluster on the loopback address for the rbd tests:
tests/ceph/start-cluster.sh in a temporary directory, stopped by process
id at the end (tests/ceph/stop-cluster.sh)."""
import os
import shutil
import signal
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CEPH_DIR = os.path.join(os.path.dirname(HERE), "ceph")


def have_ceph():
    return all(shutil.which(t) for t in ("ceph-mon", "ceph-osd", "ceph", "rbd"))


class Cluster:
    def __init__(self):
        # Ceph's start-up has races of its own: a second try, in a new
        # directory, before giving up.
        for attempt in range(2):
            self.dir = tempfile.mkdtemp(prefix="bdceph", dir="/tmp")
            p = subprocess.run([os.path.join(CEPH_DIR, "start-cluster.sh"), self.dir],
                               capture_output=True, text=True, timeout=120)
            if p.returncode == 0:
                break
            self.stop()
            if attempt == 1:
                raise AssertionError("the test cluster did not start:\n" + p.stdout + p.stderr)
        self.conf = os.path.join(self.dir, "ceph.conf")
        with open(self.conf) as f:
            self.mon_port = next(line.rsplit(":", 1)[1].strip() for line in f
                                 if line.startswith("mon host"))

    def stop(self):
        subprocess.run([os.path.join(CEPH_DIR, "stop-cluster.sh"), self.dir],
                       capture_output=True, timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)

    def rbd(self, *args, check=True, timeout=60):
        p = subprocess.run(["rbd", "-c", self.conf, *args], capture_output=True, text=True,
                           timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"rbd {args!r}: {p.stderr}")
        return p

    def ceph(self, *args):
        return subprocess.run(["ceph", "-c", self.conf, *args], capture_output=True, text=True,
                              timeout=60)

    def uri(self, image):
        """qemu-img's name of @image."""
        return f"rbd:rbd/{image}:conf={self.conf}"

    def osd_pid(self):
        with open(os.path.join(self.dir, "osd.pid")) as f:
            return int(f.read())

    def stop_osd(self):
        """Stop the OSD (cleanly: it saves its data and comes back with it)."""
        pid = self.osd_pid()
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
        raise AssertionError("the OSD did not stop in 30 s")

    def start_osd(self):
        subprocess.run(["ceph-osd", "-c", self.conf, "-i", "0"], check=True,
                       capture_output=True, timeout=60)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            dump = self.ceph("osd", "dump").stdout
            if any(line.startswith("osd.0 up") and " in " in line for line in dump.splitlines()):
                return
            time.sleep(0.2)
        raise AssertionError("the OSD did not come back")
