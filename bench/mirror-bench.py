#!/usr/bin/python3
"""Mirror benchmark: time for blockdev-mirror of a 1 GiB raw image on
/dev/shm to reach READY, for blockd and qemu-storage-daemon in the same
run, against `cp` of the same file; prints the times and the ratios.

  bench/mirror-bench.py [runs]
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TOP, "tests", "functional"))
from benchutil import qmp_daemon  # noqa: E402

BLOCKD = os.path.join(TOP, "build", "src", "blockd")
RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 3
DIR = "/dev/shm"
SRC = os.path.join(DIR, "blockd-mirror-bench.src")
TGT = os.path.join(DIR, "blockd-mirror-bench.tgt")
SIZE = 1 << 30


def AIO(binary):
    """Extra file options for blockd (BLOCKD_AIO=threads|io_uring to compare)."""
    aio = os.environ.get("BLOCKD_AIO")
    return f",aio={aio}" if aio and binary == BLOCKD else ""


def fresh_target():
    if os.path.exists(TGT):
        os.unlink(TGT)
    with open(TGT, "wb") as f:
        f.truncate(SIZE)


def time_cp():
    if os.path.exists(TGT):
        os.unlink(TGT)
    start = time.monotonic()
    subprocess.run(["cp", SRC, TGT], check=True)
    return time.monotonic() - start


def wait_ready(q, job):
    while True:
        msg = q.recv()
        ev = msg.get("event")
        if ev == "BLOCK_JOB_READY" and msg["data"]["device"] == job:
            return
        if ev == "BLOCK_JOB_COMPLETED" and msg["data"]["device"] == job:
            raise RuntimeError(f"mirror failed: {msg['data']}")


def time_mirror(binary, sock_dir):
    fresh_target()
    qmp_path = os.path.join(sock_dir, "qmp.sock")
    args = ["--blockdev", f"driver=file,node-name=fs,filename={SRC}" + AIO(binary),
            "--blockdev", "driver=raw,node-name=src,file=fs",
            "--blockdev", f"driver=file,node-name=ft,filename={TGT}" + AIO(binary),
            "--blockdev", "driver=raw,node-name=tgt,file=ft"]
    with qmp_daemon(binary, args, qmp_path, 60) as q:
        start = time.monotonic()
        q.cmd("blockdev-mirror", job_id="m", device="src", target="tgt", sync="full")
        wait_ready(q, "m")
        elapsed = time.monotonic() - start
        q.cmd("job-cancel", id="m")
    return elapsed


def main():
    if not shutil.which("qemu-storage-daemon"):
        sys.exit("mirror-bench: missing qemu-storage-daemon (scripts/install-deps.sh)")
    subprocess.run(["dd", "if=/dev/urandom", f"of={SRC}", "bs=1M", "count=1024",
                    "status=none"], check=True)
    sock_dir = tempfile.mkdtemp(prefix="bdmb", dir="/tmp")
    times = {"cp": [], "qemu-storage-daemon": [], "blockd": []}
    try:
        for _ in range(RUNS):
            times["cp"].append(time_cp())
            times["qemu-storage-daemon"].append(time_mirror("qemu-storage-daemon", sock_dir))
            times["blockd"].append(time_mirror(BLOCKD, sock_dir))
    finally:
        for p in (SRC, TGT):
            if os.path.exists(p):
                os.unlink(p)
        shutil.rmtree(sock_dir, ignore_errors=True)
    best = {k: min(v) for k, v in times.items()}
    for k, v in times.items():
        print(f"{k:22s} best {best[k]:.3f} s  ({', '.join(f'{t:.3f}' for t in v)})")
    print(f"blockd / qemu-storage-daemon time: {best['blockd'] / best['qemu-storage-daemon']:.2f}"
          f"  (target <= 1.00)")
    print(f"blockd / cp time:                  {best['blockd'] / best['cp']:.2f}"
          f"  (target <= 1.20)")


if __name__ == "__main__":
    main()
