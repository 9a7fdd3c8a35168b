#!/usr/bin/python3
"""Dirty-bitmap benchmark on /dev/shm, blockd and qemu-storage-daemon in the
same run:

- incremental backup: a 1 GiB qcow2 image of random data with a persistent
  bitmap marking 1 % of its 64 KiB clusters (written by qemu-io, scattered);
  the time from blockdev-backup sync=incremental to BLOCK_JOB_COMPLETED
  (target: blockd at most 0.7 of qemu-storage-daemon's time);
- the cost of recording: 4 KiB random writes over NBD (fio, QD32) on a raw
  1 GiB image without a bitmap and with one enabled bitmap (target: below
  3 % fewer IOPS with the bitmap).

  bench/backup-bench.py [runs] [fio-seconds]
"""
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TOP, "tests", "functional"))
from benchutil import fio_side, qmp_daemon  # noqa: E402

BLOCKD = os.path.join(TOP, "build", "src", "blockd")
QSD = "qemu-storage-daemon"
RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 5
SECONDS = int(sys.argv[2]) if len(sys.argv) > 2 else 5
DIR = tempfile.mkdtemp(prefix="blockd-backup-bench", dir="/dev/shm")
SIZE = 1 << 30
CLUSTER = 64 * 1024


def run(*args):
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def prepare():
    """src.pristine: 1 GiB of random data, bitmap "b" marking 1 % of the
    clusters; raw.img for the write test."""
    raw = os.path.join(DIR, "raw.img")
    run("dd", "if=/dev/urandom", f"of={raw}", "bs=1M", "count=1024", "status=none")
    src = os.path.join(DIR, "src.pristine")
    run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, src)
    run("qemu-img", "bitmap", "--add", src, "b")
    rng = random.Random(1)
    clusters = rng.sample(range(SIZE // CLUSTER), SIZE // CLUSTER // 100)
    cmds = []
    for c in sorted(clusters):
        cmds += ["-c", f"write -P {c % 251} {c * CLUSTER} {CLUSTER}"]
    run("qemu-io", "-f", "qcow2", *cmds, src)


def time_incremental(binary, sock_dir):
    src = os.path.join(DIR, "src.qcow2")
    tgt = os.path.join(DIR, "tgt.qcow2")
    shutil.copy(os.path.join(DIR, "src.pristine"), src)
    run("qemu-img", "create", "-f", "qcow2", tgt, str(SIZE))
    args = ["--blockdev", f"driver=file,node-name=fs,filename={src}",
            "--blockdev", "driver=qcow2,node-name=src,file=fs",
            "--blockdev", f"driver=file,node-name=ft,filename={tgt}",
            "--blockdev", "driver=qcow2,node-name=tgt,file=ft"]
    with qmp_daemon(binary, args, os.path.join(sock_dir, "qmp.sock"), 120) as q:
        start = time.monotonic()
        q.cmd("blockdev-backup", job_id="j", device="src", target="tgt", sync="incremental",
              bitmap="b")
        while True:
            msg = q.recv()
            if msg.get("event") == "BLOCK_JOB_COMPLETED":
                if "error" in msg["data"]:
                    raise RuntimeError(msg)
                break
        elapsed = time.monotonic() - start
    return elapsed


def write_iops(binary, sock_dir, bitmap):
    raw = os.path.join(DIR, "raw.img")
    sock = os.path.join(sock_dir, "nbd.sock")
    args = ["--blockdev", f"driver=file,node-name=f,filename={raw}",
            "--blockdev", "driver=raw,node-name=d,file=f",
            "--nbd-server", f"addr.type=unix,addr.path={sock}",
            "--export", "type=nbd,id=e,node-name=d,writable=on"]
    with qmp_daemon(binary, args, os.path.join(sock_dir, "qmp.sock"), 120) as q:
        if bitmap:
            q.execute("block-dirty-bitmap-add", {"node": "d", "name": "b"})
        side = fio_side(["--name=b", "--ioengine=nbd", f"--uri=nbd+unix:///d?socket={sock}",
                         f"--size={SIZE}", "--time_based", f"--runtime={SECONDS}",
                         "--rw=randwrite", "--bs=4k", "--iodepth=32"])
    return side["iops"]


def main():
    missing = [t for t in ("fio", QSD) if not shutil.which(t)]
    if missing:
        sys.exit(f"backup-bench: missing {' '.join(missing)} (scripts/install-deps.sh)")
    sock_dir = tempfile.mkdtemp(prefix="bdbb", dir="/tmp")
    times = {QSD: [], "blockd": []}
    iops = {}
    try:
        prepare()
        for _ in range(RUNS):
            times[QSD].append(time_incremental(QSD, sock_dir))
            times["blockd"].append(time_incremental(BLOCKD, sock_dir))
        for prog, binary in ((QSD, QSD), ("blockd", BLOCKD)):
            for bitmap in (False, True):
                iops[(prog, bitmap)] = write_iops(binary, sock_dir, bitmap)
    finally:
        shutil.rmtree(DIR, ignore_errors=True)
        shutil.rmtree(sock_dir, ignore_errors=True)
    best = {p: min(v) for p, v in times.items()}
    for prog, v in times.items():
        print(f"incremental backup, 1 GiB, 1 % dirty  {prog:20s} best {best[prog]:.3f} s  "
              f"({', '.join(f'{t:.3f}' for t in v)})")
    print(f"incremental backup blockd / qemu-storage-daemon time: "
          f"{best['blockd'] / best[QSD]:.2f}  (target <= 0.70)")
    for prog in (QSD, "blockd"):
        a, b = iops[(prog, False)], iops[(prog, True)]
        print(f"4k randwrite QD32 over NBD  {prog:20s} no bitmap {a:9.0f} IOPS  "
              f"one bitmap {b:9.0f} IOPS  cost {100 * (1 - b / a):5.1f} %")
    print(f"4k randwrite with a bitmap, blockd / qemu-storage-daemon: "
          f"{iops[('blockd', True)] / iops[(QSD, True)]:.2f}  (bitmap cost target < 3 %)")


if __name__ == "__main__":
    main()
