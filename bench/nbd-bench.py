#!/usr/bin/python3
"""NBD benchmark: the same fio and nbdcopy workloads against
qemu-storage-daemon, nbdkit's file plugin and blockd, one after the other,
on the same /dev/shm raw image over unix sockets; prints each figure and
the ratios blockd/qemu-storage-daemon and blockd/nbdkit.

  bench/nbd-bench.py [seconds-per-workload]
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

from benchutil import fio_side, wait_socket

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLOCKD = os.path.join(TOP, "build", "src", "blockd")
SECONDS = int(sys.argv[1]) if len(sys.argv) > 1 else 5
IMG = "/dev/shm/blockd-nbd-bench.img"
SIZE_MB = 1024

WORKLOADS = [
    # name, fio arguments, what to report
    ("4k randread QD32", ["--rw=randread", "--bs=4k", "--iodepth=32"], "iops"),
    ("4k randwrite QD32", ["--rw=randwrite", "--bs=4k", "--iodepth=32"], "iops"),
    ("4k randread QD1 p99", ["--rw=randread", "--bs=4k", "--iodepth=1"], "p99"),
    ("1M seqread QD8", ["--rw=read", "--bs=1M", "--iodepth=8"], "bw"),
    ("1M seqwrite QD8", ["--rw=write", "--bs=1M", "--iodepth=8"], "bw"),
]


def server_commands(sock):
    daemon_args = ["--blockdev", f"driver=file,node-name=f,filename={IMG}",
                   "--blockdev", "driver=raw,node-name=d,file=f",
                   "--nbd-server", f"addr.type=unix,addr.path={sock}",
                   "--export", "type=nbd,id=e,node-name=d,writable=on"]
    return {
        "qemu-storage-daemon": (["qemu-storage-daemon"] + daemon_args, f"nbd+unix:///d?socket={sock}"),
        "nbdkit": (["nbdkit", "-f", "-U", sock, "file", IMG], f"nbd+unix://?socket={sock}"),
        "blockd": ([BLOCKD] + daemon_args, f"nbd+unix:///d?socket={sock}"),
    }


def run_fio(uri, args, what):
    side = fio_side(["--name=b", "--ioengine=nbd", f"--uri={uri}", f"--size={SIZE_MB}M",
                     "--time_based", f"--runtime={SECONDS}"] + args)
    if what == "iops":
        return side["iops"]
    if what == "bw":
        return side["bw_bytes"] / 1e6
    return side["clat_ns"]["percentile"]["99.000000"] / 1000.0


def run_nbdcopy(uri):
    start = time.monotonic()
    subprocess.run(["nbdcopy", "--connections=4", uri, "null:"], check=True)
    return SIZE_MB / (time.monotonic() - start)


def main():
    missing = [t for t in ("fio", "nbdcopy", "nbdkit", "qemu-storage-daemon") if not shutil.which(t)]
    if missing:
        sys.exit(f"nbd-bench: missing {' '.join(missing)} (scripts/install-deps.sh)")
    if not os.path.exists(IMG):
        with open(IMG, "wb") as f:
            for _ in range(SIZE_MB):
                f.write(os.urandom(1 << 20))
    tmp = tempfile.mkdtemp(dir="/tmp", prefix="nbdb")
    results = {}
    for name, (cmd, uri) in server_commands(os.path.join(tmp, "s")).items():
        sock = os.path.join(tmp, "s")
        if os.path.exists(sock):
            os.unlink(sock)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_socket(sock, proc)
            res = {}
            for wname, args, what in WORKLOADS:
                res[wname] = run_fio(uri, args, what)
            res["nbdcopy 4 conns to null"] = run_nbdcopy(uri)
            results[name] = res
        finally:
            proc.terminate()
            proc.wait()
    units = {"iops": "IOPS", "bw": "MB/s", "p99": "us (p99)"}
    kinds = {w[0]: w[2] for w in WORKLOADS}
    kinds["nbdcopy 4 conns to null"] = "bw"
    print(f"{'workload':<26}{'qsd':>12}{'nbdkit':>12}{'blockd':>12}  {'b/qsd':>6} {'b/nbdkit':>8}")
    for wname, kind in kinds.items():
        q, k, b = (results[s][wname] for s in ("qemu-storage-daemon", "nbdkit", "blockd"))
        # For latency lower is better: report the ratio so that >1 means better.
        rq, rk = ((q / b, k / b) if kind == "p99" else (b / q, b / k))
        print(f"{wname:<26}{q:>12.1f}{k:>12.1f}{b:>12.1f}  {rq:>6.2f} {rk:>8.2f}  {units[kind]}")
    print("(ratios > 1 mean blockd is better; for p99 the inverse latency ratio)")
    shutil.rmtree(tmp, ignore_errors=True)
    os.unlink(IMG)


if __name__ == "__main__":
    main()
