#!/usr/bin/python3
"""qcow2 benchmark: the same fio workloads over NBD against
qemu-storage-daemon and blockd, one after the other, each server on its own
fresh qcow2 images in /dev/shm (same command line for both); prints each
figure and the ratio blockd/qemu-storage-daemon.

  4k randwrite QD32, empty image   every write allocates a cluster (64 KiB
                                   clusters, 64 GiB virtual disk, random
                                   offsets: almost never the same cluster)
  4k randread QD32, allocated      a fully allocated 1 GiB image

  bench/qcow2-bench.py [seconds-per-workload]
"""
import os
import shutil
import subprocess
import sys
import tempfile

from benchutil import fio_side, wait_socket

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLOCKD = os.path.join(TOP, "build", "src", "blockd")
SECONDS = int(sys.argv[1]) if len(sys.argv) > 1 else 5
DIR = "/dev/shm"
EMPTY_SIZE = "64G"
FULL_MB = 1024
# A cap on allocating writes, so that the image stays within /dev/shm.
MAX_ALLOC_IOS = 40000


def server_command(img, sock, prog):
    # Cover the whole 64 GiB disk with the L2 cache in both (8 MiB).
    args = ["--blockdev", f"driver=file,node-name=f,filename={img}",
            "--blockdev", "driver=qcow2,node-name=d,file=f,l2-cache-size=8388608",
            "--nbd-server", f"addr.type=unix,addr.path={sock}",
            "--export", "type=nbd,id=e,node-name=d,writable=on"]
    return [prog] + args


def run_fio(uri, size, args):
    return fio_side(["--name=b", "--ioengine=nbd", f"--uri={uri}", f"--size={size}",
                     "--bs=4k", "--iodepth=32"] + args)["iops"]


def make_full_image(path):
    raw = path + ".raw"
    with open(raw, "wb") as f:
        for _ in range(FULL_MB):
            f.write(os.urandom(1 << 20))
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", raw, path], check=True)
    os.unlink(raw)


def serve(prog, img, tmp, work):
    sock = os.path.join(tmp, "s")
    if os.path.exists(sock):
        os.unlink(sock)
    proc = subprocess.Popen(server_command(img, sock, prog), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_socket(sock, proc)
        return work(f"nbd+unix:///d?socket={sock}")
    finally:
        proc.terminate()
        proc.wait()


def check(img):
    p = subprocess.run(["qemu-img", "check", img], capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"qcow2-bench: {img} fails qemu-img check:\n{p.stdout}{p.stderr}")


def main():
    missing = [t for t in ("fio", "qemu-img", "qemu-storage-daemon") if not shutil.which(t)]
    if missing:
        sys.exit(f"qcow2-bench: missing {' '.join(missing)} (scripts/install-deps.sh)")
    tmp = tempfile.mkdtemp(dir="/tmp", prefix="q2b")
    full = os.path.join(DIR, "blockd-qcow2-bench-full.qcow2")
    empty = os.path.join(DIR, "blockd-qcow2-bench-empty.qcow2")
    make_full_image(full)
    results = {}
    try:
        for name, prog in (("qemu-storage-daemon", "qemu-storage-daemon"), ("blockd", BLOCKD)):
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", empty, EMPTY_SIZE],
                           check=True)
            alloc = serve(prog, empty, tmp, lambda uri: run_fio(
                uri, EMPTY_SIZE, ["--rw=randwrite", "--norandommap", "--time_based",
                                  f"--runtime={SECONDS}", f"--number_ios={MAX_ALLOC_IOS}"]))
            check(empty)
            read = serve(prog, full, tmp, lambda uri: run_fio(
                uri, f"{FULL_MB}M", ["--rw=randread", "--time_based",
                                     f"--runtime={SECONDS}"]))
            results[name] = {"4k randwrite QD32, empty (allocating)": alloc,
                             "4k randread QD32, allocated": read}
    finally:
        for p in (full, empty):
            if os.path.exists(p):
                os.unlink(p)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{'workload':<40}{'qsd':>12}{'blockd':>12}  {'b/qsd':>6}")
    for wname in results["blockd"]:
        q, b = results["qemu-storage-daemon"][wname], results["blockd"][wname]
        print(f"{wname:<40}{q:>12.0f}{b:>12.0f}  {b / q:>6.2f}  IOPS")
    print("(ratios > 1 mean blockd is faster)")


if __name__ == "__main__":
    main()
