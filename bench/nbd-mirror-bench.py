#!/usr/bin/python3
"""nbd driver benchmark: a 1 GiB disk that another server holds (nbdkit's
file plugin on /dev/shm, the same for both) mirrored through an nbd node
to a local file, time to READY, for blockd and qemu-storage-daemon in the
same run; prints the times and the ratio.

  bench/nbd-mirror-bench.py [runs]
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TOP, "tests", "functional"))
from benchutil import qmp_daemon, wait_socket  # noqa: E402

BLOCKD = os.path.join(TOP, "build", "src", "blockd")
RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 3
SRC = "/dev/shm/blockd-nbd-mirror-bench.src"
TGT = "/dev/shm/blockd-nbd-mirror-bench.tgt"
SIZE = 1 << 30


def time_mirror(binary, d, server_sock):
    if os.path.exists(TGT):
        os.unlink(TGT)
    with open(TGT, "wb") as f:
        f.truncate(SIZE)
    args = ["--blockdev", f"driver=nbd,node-name=src,server.type=unix,"
                          f"server.path={server_sock}",
            "--blockdev", f"driver=file,node-name=ft,filename={TGT}",
            "--blockdev", "driver=raw,node-name=tgt,file=ft"]
    with qmp_daemon(binary, args, os.path.join(d, "qmp.sock"), 60) as q:
        start = time.monotonic()
        q.cmd("blockdev-mirror", job_id="m", device="src", target="tgt", sync="full")
        while True:
            msg = q.recv()
            if msg.get("event") == "BLOCK_JOB_READY":
                break
            if msg.get("event") == "BLOCK_JOB_COMPLETED":
                raise RuntimeError(f"mirror failed: {msg['data']}")
        elapsed = time.monotonic() - start
        q.cmd("job-cancel", id="m")
    if subprocess.run(["cmp", "-s", SRC, TGT]).returncode != 0:
        raise RuntimeError(f"{binary}: the copy differs")
    return elapsed


def main():
    if not shutil.which("qemu-storage-daemon") or not shutil.which("nbdkit"):
        sys.exit("nbd-mirror-bench: missing qemu-storage-daemon or nbdkit "
                 "(scripts/install-deps.sh)")
    subprocess.run(["dd", "if=/dev/urandom", f"of={SRC}", "bs=1M", "count=1024",
                    "status=none"], check=True)
    d = tempfile.mkdtemp(prefix="bdnm", dir="/tmp")
    sock = os.path.join(d, "nbdkit.sock")
    server = subprocess.Popen(["nbdkit", "--foreground", "--unix", sock, "file", SRC],
                              stdout=subprocess.DEVNULL)
    times = {"qemu-storage-daemon": [], "blockd": []}
    try:
        wait_socket(sock, server)
        for _ in range(RUNS):
            times["qemu-storage-daemon"].append(time_mirror("qemu-storage-daemon", d, sock))
            times["blockd"].append(time_mirror(BLOCKD, d, sock))
    finally:
        server.kill()
        server.wait()
        for p in (SRC, TGT):
            if os.path.exists(p):
                os.unlink(p)
        shutil.rmtree(d, ignore_errors=True)
    best = {k: min(v) for k, v in times.items()}
    for k, v in times.items():
        print(f"{k:22s} best {best[k]:.3f} s  ({', '.join(f'{t:.3f}' for t in v)})")
    print(f"blockd / qemu-storage-daemon time: "
          f"{best['blockd'] / best['qemu-storage-daemon']:.2f}  (target <= 0.80)")


if __name__ == "__main__":
    main()
