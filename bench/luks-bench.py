#!/usr/bin/python3
"""LUKS benchmark: one LUKS image (aes-256-xts-plain64, made by qemu-img
on /dev/shm, filled with data) served over NBD by blockd and by
qemu-storage-daemon in the same run; fio's nbd engine measures 4k random
reads and writes and 1M sequential reads and writes; prints each and the
ratios (target: blockd >= 1.2x on every workload).

  bench/luks-bench.py [seconds]
"""
import os
import shutil
import subprocess
import sys
import tempfile

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TOP, "tests", "functional"))
from benchutil import fio_nbd_workloads, wait_socket  # noqa: E402

BLOCKD = os.path.join(TOP, "build", "src", "blockd")
SECONDS = int(sys.argv[1]) if len(sys.argv) > 1 else 5
IMG = "/dev/shm/blockd-luks-bench.luks"
SIZE_MB = 512
SECRET = ["--object", "secret,id=s0,data=benchpw"]
WORKLOADS = [
    ("4k randread QD32", ["--rw=randread", "--bs=4k", "--iodepth=32"], "iops"),
    ("4k randwrite QD32", ["--rw=randwrite", "--bs=4k", "--iodepth=32"], "iops"),
    ("1M seqread QD8", ["--rw=read", "--bs=1M", "--iodepth=8"], "bw"),
    ("1M seqwrite QD8", ["--rw=write", "--bs=1M", "--iodepth=8"], "bw"),
]


def make_image():
    for _ in range(30):         # QEMU's PBKDF2 timing gives up now and then
        r = subprocess.run(["qemu-img", "create", "-f", "luks", *SECRET, "-o",
                            "key-secret=s0,iter-time=10", IMG, f"{SIZE_MB}M"],
                           capture_output=True, text=True)
        if r.returncode == 0:
            break
    r.check_returncode()
    subprocess.run(["qemu-io", *SECRET, "--image-opts", "-c", f"write -P 0x5a 0 {SIZE_MB}M",
                    f"driver=luks,key-secret=s0,file.filename={IMG}"],
                   check=True, capture_output=True)


def run(binary, sock):
    args = [binary, *SECRET,
            "--blockdev", f"driver=file,node-name=f,filename={IMG}",
            "--blockdev", "driver=luks,node-name=d,file=f,key-secret=s0",
            "--nbd-server", f"addr.type=unix,addr.path={sock}",
            "--export", "type=nbd,id=e,node-name=d,writable=on"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    res = {}
    try:
        wait_socket(sock, proc)
        res = fio_nbd_workloads(f"nbd+unix:///d?socket={sock}", WORKLOADS, SIZE_MB, SECONDS)
    finally:
        proc.kill()
        proc.wait()
        os.unlink(sock)
    return res


def main():
    if not shutil.which("qemu-storage-daemon") or not shutil.which("fio"):
        sys.exit("luks-bench: missing qemu-storage-daemon or fio (scripts/install-deps.sh)")
    tmp = tempfile.mkdtemp(dir="/tmp", prefix="lkb")
    try:
        make_image()
        qsd = run("qemu-storage-daemon", os.path.join(tmp, "s"))
        ours = run(BLOCKD, os.path.join(tmp, "s"))
    finally:
        if os.path.exists(IMG):
            os.unlink(IMG)
        shutil.rmtree(tmp, ignore_errors=True)
    for name, _, what in WORKLOADS:
        unit = "IOPS" if what == "iops" else "MB/s"
        print(f"{name:20s} blockd {ours[name]:10.0f} {unit}  qemu-storage-daemon "
              f"{qsd[name]:10.0f} {unit}  ratio {ours[name] / qsd[name]:.2f}  (target >= 1.20)")


if __name__ == "__main__":
    main()
