"""A real VM for the tests: qemu-system-x86_64 (TCG) with Debian's kernel
and a busybox initramfs (tests/vm/make-guest.sh builds them once into a
cache directory), whose /init is a shell script the test gives.  The
guest's console goes to a file the test reads as it runs."""
import gzip
import os
import shutil
import subprocess
import time

from conftest import ROOT

CACHE = os.environ.get("BLOCKD_GUEST_CACHE", "/var/tmp/blockd-guest")
QEMU = shutil.which("qemu-system-x86_64")

INIT_PROLOGUE = """#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /tmp
mount -t tmpfs tmp /tmp
# Load the modules in whatever order their dependencies allow.
for pass in 1 2 3 4 5; do
    for m in /modules/*.ko; do
        [ -e $m.done ] || { insmod $m 2>/dev/null && touch $m.done; }
    done
done
"""


def guest_assets():
    """(vmlinuz, base initramfs), built on first use; None if this machine
    cannot (the error says why)."""
    r = subprocess.run([os.path.join(ROOT, "tests", "vm", "make-guest.sh"), CACHE],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("cannot build the guest: " + r.stderr.strip())
    return os.path.join(CACHE, "vmlinuz"), os.path.join(CACHE, "base.cpio.gz")


def _newc(entries):
    """A cpio archive (newc format) of [(name, mode, bytes)]."""
    out = bytearray()

    def pad():
        out.extend(b"\0" * (-len(out) % 4))

    for ino, (name, mode, data) in enumerate(entries, 1000):
        nb = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(nb), 0)
        out += b"070701" + b"".join(b"%08X" % v for v in fields) + nb
        pad()
        out += data
        pad()
    nb = b"TRAILER!!!\0"
    out += b"070701" + b"%08X" % 0 * 11 + b"%08X" % len(nb) + b"%08X" % 0 + nb
    pad()
    return bytes(out)


def make_initrd(path, script):
    """The base initramfs with @script (after the prologue) as /init."""
    _, base = guest_assets()
    init = (INIT_PROLOGUE + script + "\npoweroff -f\n").encode()
    with open(path, "wb") as f:
        with open(base, "rb") as b:
            f.write(b.read())
        f.write(gzip.compress(_newc([("init", 0o100755, init)])))
    return path


class VM:
    """A running guest; its devices are qemu arguments."""

    def __init__(self, d, script, devices, mem="256M", smp=1):
        kernel, _ = guest_assets()
        self.console = os.path.join(d, "console.log")
        initrd = make_initrd(os.path.join(d, "initrd.gz"), script)
        args = [QEMU, "-M", "q35", "-m", mem, "-smp", str(smp),
                "-object", f"memory-backend-memfd,id=mem,size={mem},share=on",
                "-numa", "node,memdev=mem", "-display", "none", "-no-reboot",
                "-serial", f"file:{self.console}", "-kernel", kernel, "-initrd", initrd,
                "-append", "console=ttyS0 quiet panic=-1", *devices]
        self.p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def output(self):
        try:
            with open(self.console, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def wait_for(self, marker, timeout=120):
        deadline = time.monotonic() + timeout
        while marker not in self.output():
            if self.p.poll() is not None:
                raise AssertionError(f"VM ended before '{marker}':\n{self.output()}\n"
                                     + self.p.stderr.read().decode())
            if time.monotonic() > deadline:
                self.p.kill()
                raise AssertionError(f"no '{marker}' from the VM:\n{self.output()}")
            time.sleep(0.05)

    def wait_exit(self, timeout=180):
        try:
            self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            raise AssertionError("VM did not power off:\n" + self.output())
        return self.output()

    def value(self, key):
        """The rest of the console line that starts with @key."""
        for line in self.output().splitlines():
            if line.startswith(key + " "):
                return line[len(key) + 1:].strip()
        return None
