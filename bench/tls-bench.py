#!/usr/bin/python3
"""NBD over TLS: one raw image on /dev/shm served with X.509 TLS on TCP
loopback by blockd and by qemu-storage-daemon in the same run; fio's nbd
engine (libnbd, nbds://) measures 4k random reads at QD32 and 1M
sequential reads; prints each and the ratios (target: blockd >= 1.5x).

  bench/tls-bench.py [seconds]
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TOP, "tests", "functional"))
from benchutil import fio_nbd_workloads  # noqa: E402
from tlsutil import free_port, make_pki  # noqa: E402

BLOCKD = os.path.join(TOP, "build", "src", "blockd")
SECONDS = int(sys.argv[1]) if len(sys.argv) > 1 else 5
IMG = "/dev/shm/blockd-tls-bench.img"
SIZE_MB = 512
WORKLOADS = [
    ("4k randread QD32", ["--rw=randread", "--bs=4k", "--iodepth=32"], "iops"),
    ("1M seqread QD8", ["--rw=read", "--bs=1M", "--iodepth=8"], "bw"),
]


def run(binary, srv_dir):
    port = free_port()
    args = [binary, "--object",
            f"tls-creds-x509,id=t0,dir={srv_dir},endpoint=server,verify-peer=off",
            "--blockdev", f"driver=file,node-name=d,filename={IMG}",
            "--nbd-server", f"addr.type=inet,addr.host=127.0.0.1,addr.port={port},tls-creds=t0",
            "--export", "type=nbd,id=e,node-name=d"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    res = {}
    try:
        time.sleep(0.5)
        # (The client does not check the server's certificate: libnbd takes
        # no certificate directory from fio's URI.)
        uri = f"nbds://127.0.0.1:{port}/d?tls-verify-peer=false"
        res = fio_nbd_workloads(uri, WORKLOADS, SIZE_MB, SECONDS)
    finally:
        proc.kill()
        proc.wait()
    return res


def main():
    if not shutil.which("qemu-storage-daemon") or not shutil.which("fio"):
        sys.exit("tls-bench: missing qemu-storage-daemon or fio (scripts/install-deps.sh)")
    tmp = tempfile.mkdtemp(dir="/tmp", prefix="tlsb")
    try:
        pki = make_pki(tmp)
        subprocess.run(["dd", "if=/dev/urandom", f"of={IMG}", "bs=1M", f"count={SIZE_MB}",
                        "status=none"], check=True)
        qsd = run("qemu-storage-daemon", pki["srv"])
        ours = run(BLOCKD, pki["srv"])
    finally:
        if os.path.exists(IMG):
            os.unlink(IMG)
        shutil.rmtree(tmp, ignore_errors=True)
    for name, _, what in WORKLOADS:
        unit = "IOPS" if what == "iops" else "MB/s"
        print(f"{name:20s} blockd {ours[name]:10.0f} {unit}  qemu-storage-daemon "
              f"{qsd[name]:10.0f} {unit}  ratio {ours[name] / qsd[name]:.2f}  (target >= 1.50)")


if __name__ == "__main__":
    main()
