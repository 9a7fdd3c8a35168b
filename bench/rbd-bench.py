#!/usr/bin/python3
"""RBD over NBD: one image on a one-node Ceph cluster (tests/ceph/, started
here on loopback, memstore OSD) served by blockd and by
qemu-storage-daemon in the same run (each twice, A B B A); fio's nbd engine measures 4k random
reads and writes at QD32 and 1M sequential reads and writes at QD8; 'rbd
bench' gives the cluster's own limit for 4k random writes at 32 threads.
Prints each figure and the ratios (targets: blockd >= qemu-storage-daemon
on every workload, blockd >= 70 % of rbd bench on 4k random writes).

  bench/rbd-bench.py [seconds]
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TOP, "tests", "functional"))
from benchutil import fio_nbd_workloads  # noqa: E402
from cephutil import Cluster  # noqa: E402

BLOCKD = os.path.join(TOP, "build", "src", "blockd")
SECONDS = int(sys.argv[1]) if len(sys.argv) > 1 else 5
SIZE_MB = 256
WORKLOADS = [
    ("4k randread QD32", ["--rw=randread", "--bs=4k", "--iodepth=32"], "iops"),
    ("4k randwrite QD32", ["--rw=randwrite", "--bs=4k", "--iodepth=32"], "iops"),
    ("1M seqread QD8", ["--rw=read", "--bs=1M", "--iodepth=8"], "bw"),
    ("1M seqwrite QD8", ["--rw=write", "--bs=1M", "--iodepth=8"], "bw"),
]


def serve(binary, cluster, sock):
    args = [binary, "--blockdev",
            f"driver=rbd,node-name=r,pool=rbd,image=bench,conf={cluster.conf}",
            "--nbd-server", f"addr.type=unix,addr.path={sock}",
            "--export", "type=nbd,id=e,node-name=r,writable=on"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    res = {}
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(sock):
            assert proc.poll() is None and time.monotonic() < deadline, f"{binary} did not start"
            time.sleep(0.05)
        uri = f"nbd+unix:///r?socket={sock}"
        res = fio_nbd_workloads(uri, WORKLOADS, SIZE_MB, SECONDS)
    finally:
        # A clean stop lets the image's lock go at once.
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if os.path.exists(sock):
            os.unlink(sock)
    return res


def rbd_bench(cluster):
    """4k random writes from 32 threads of librbd itself: ops/s."""
    out = cluster.rbd("bench", "--io-type", "write", "--io-size", "4096", "--io-threads", "32",
                      "--io-pattern", "rand", "--io-total", "128M", "rbd/bench",
                      timeout=300).stdout
    m = re.search(r"elapsed:\s*([\d.]+)\s+ops:\s*(\d+)\s+ops/sec:\s*([\d.]+)", out)
    assert m, out
    return float(m.group(3))


def main():
    for tool in ("qemu-storage-daemon", "fio", "ceph-mon", "ceph-osd", "rbd"):
        if not shutil.which(tool):
            sys.exit(f"rbd-bench: missing {tool} (scripts/install-deps.sh)")
    tmp = tempfile.mkdtemp(dir="/tmp", prefix="rbdb")
    cluster = Cluster()
    try:
        cluster.rbd("create", "--size", f"{SIZE_MB}M", "rbd/bench")
        # Every object exists: reads read data, writes overwrite.
        cluster.rbd("bench", "--io-type", "write", "--io-size", "4M", "--io-pattern", "seq",
                    "--io-total", f"{SIZE_MB}M", "rbd/bench", timeout=300)
        sock = os.path.join(tmp, "n.sock")
        # The micro-cluster's speed drifts as its OSD warms up: its own
        # limit is measured before and after the daemons, the best taken.
        limits = [rbd_bench(cluster)]
        # Each daemon twice, in the order A B B A, the better run of each
        # counted: the cluster's drift favours neither.
        runs = {"qsd": [], "ours": []}
        for who in ("qsd", "ours", "ours", "qsd"):
            runs[who].append(serve(BLOCKD if who == "ours" else "qemu-storage-daemon",
                                   cluster, sock))
        qsd, ours = ({name: max(r[name] for r in runs[who]) for name, _, _ in WORKLOADS}
                     for who in ("qsd", "ours"))
        limits.append(rbd_bench(cluster))
        limit = max(limits)
    finally:
        cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    for name, _, what in WORKLOADS:
        unit = "IOPS" if what == "iops" else "MB/s"
        print(f"{name:18s} blockd {ours[name]:9.0f} {unit}  qemu-storage-daemon "
              f"{qsd[name]:9.0f} {unit}  ratio {ours[name] / qsd[name]:.2f}  (target >= 1.00)")
    w = ours["4k randwrite QD32"]
    print(f"rbd bench 4k randwrite QD32 {limits[0]:.0f} IOPS before, {limits[1]:.0f} after; "
          f"blockd / rbd bench {w / limit:.2f}  (target >= 0.70)")


if __name__ == "__main__":
    main()
