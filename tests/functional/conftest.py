"""Shared fixtures for functional tests: start the real blockd binary."""
import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("BLOCKD_BUILD", os.path.join(ROOT, "build"))
BLOCKD = os.path.join(BUILD, "src", "blockd")
SANITIZER_MARKERS = ("WARNING: ThreadSanitizer", "ERROR: AddressSanitizer",
                     "ERROR: LeakSanitizer", "runtime error:")


class Daemon:
    """A running blockd process with its stdout/stderr captured."""

    def __init__(self, args, tmp_path):
        self.stdout_path = tmp_path / "blockd.out"
        self.stderr_path = tmp_path / "blockd.err"
        self.proc = subprocess.Popen(
            [BLOCKD] + list(args),
            stdout=open(self.stdout_path, "w"),
            stderr=open(self.stderr_path, "w"),
        )

    def wait_ready(self, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "ready" in self.stdout_path.read_text():
                return
            if self.proc.poll() is not None:
                raise AssertionError("blockd exited early: " + self.stderr_path.read_text())
            time.sleep(0.02)
        raise AssertionError("blockd did not become ready")

    def stop(self, sig=signal.SIGTERM, timeout=10):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)


@pytest.fixture
def blockd(tmp_path):
    daemons = []

    def start(*args):
        d = Daemon(args, tmp_path)
        daemons.append(d)
        return d

    yield start
    for d in daemons:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()
    # A sanitizer build reports to stderr; a report fails the test even
    # when the daemon carried on (or it came at exit).
    for d in daemons:
        err = d.stderr_path.read_text(errors="replace")
        for marker in SANITIZER_MARKERS:
            if marker in err:
                pytest.fail(f"blockd: {marker} report:\n{err[max(0, err.index(marker) - 100):][:4000]}")


@pytest.fixture
def sdir():
    """A short directory for unix sockets (tmp_path may be too long for
    the 108 bytes of a socket path)."""
    d = tempfile.mkdtemp(prefix="bdnbd", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)
