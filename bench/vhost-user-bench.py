#!/usr/bin/python3
"""vhost-user-blk and FUSE exports, blockd against qemu-storage-daemon in
the same run, on the same 1 GiB raw image in /dev/shm:

- vu-bench (bench/vu-bench.c, a vhost-user-blk front-end with memfd guest
  memory) drives each daemon's export served by one iothread: 4k random
  reads and writes at QD32, 1M sequential reads at QD4, one queue; then
  blockd with two queues over two iothreads (qemu-storage-daemon 7.2
  serves all queues in one thread);
- fio's io_uring engine on the image file itself, 4k random reads at QD32:
  the limit with no hop (target: blockd at least 60 % of it, and at least
  1.5x qemu-storage-daemon);
- FUSE: 1M sequential reads of the mountpoint with fio (psync, O_DIRECT
  off), blockd against qemu-storage-daemon (target: at least its figure).

  bench/vhost-user-bench.py [seconds]
"""
import os
import shutil
import subprocess
import sys
import tempfile

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TOP, "tests", "functional"))
from benchutil import fio_side, qmp_daemon, wait_socket  # noqa: E402

BLOCKD = os.path.join(TOP, "build", "src", "blockd")
VU_BENCH = os.path.join(TOP, "build", "bench", "vu-bench")
QSD = "qemu-storage-daemon"
SECONDS = int(sys.argv[1]) if len(sys.argv) > 1 else 5
DIR = tempfile.mkdtemp(prefix="blockd-vu-bench", dir="/dev/shm")
IMG = os.path.join(DIR, "disk.img")


def daemon_args(prog, export, queues=1, iothreads=1):
    args = []
    for i in range(iothreads):
        args += ["--object", f"iothread,id=io{i}"]
    args += ["--blockdev", f"driver=file,node-name=f,filename={IMG},aio=io_uring,"
             "cache.direct=off"]
    if export == "vhost-user-blk":
        place = ",iothread=io0" if iothreads == 1 else "".join(
            f",iothreads.{i}=io{i}" for i in range(iothreads))
        args += ["--export", f"type=vhost-user-blk,id=e,node-name=f,writable=on,"
                 f"addr.type=unix,addr.path={DIR}/vu.sock,num-queues={queues}{place}"]
    else:
        args += ["--export", f"type=fuse,id=e,node-name=f,writable=on,"
                 f"mountpoint={DIR}/mnt"]
    return args


def vu_run(prog, workload, bs, depth, queues=1, iothreads=1):
    sock = f"{DIR}/vu.sock"
    if os.path.exists(sock):
        os.unlink(sock)
    with qmp_daemon(prog, daemon_args(prog, "vhost-user-blk", queues, iothreads),
                    f"{DIR}/qmp.sock", 30):
        out = subprocess.run([VU_BENCH, sock, str(queues), str(depth), workload, str(bs),
                              str(SECONDS)], capture_output=True, text=True, check=True)
    iops, mbs = out.stdout.split()
    return float(iops), float(mbs)


def fuse_run(prog):
    mnt = f"{DIR}/mnt"
    open(mnt, "w").close()
    with qmp_daemon(prog, daemon_args(prog, "fuse"), f"{DIR}/qmp.sock", 30):
        side = fio_side(["--name=seq", f"--filename={mnt}", "--rw=read", "--bs=1M",
                         "--ioengine=psync", "--size=1G", f"--runtime={SECONDS}",
                         "--time_based"])
    return side["bw_bytes"] / 1e6


def main():
    subprocess.run(["dd", "if=/dev/urandom", f"of={IMG}", "bs=1M", "count=1024",
                    "status=none"], check=True)
    limit = fio_side(["--name=limit", f"--filename={IMG}", "--rw=randread", "--bs=4k",
                      "--iodepth=32", "--ioengine=io_uring", f"--runtime={SECONDS}",
                      "--time_based"])["iops"]
    print(f"fio io_uring on the file, 4k randread QD32 (no hop): {limit:.0f} IOPS")
    rows = [("4k randread QD32", "randread", 4096, 32, "IOPS"),
            ("4k randwrite QD32", "randwrite", 4096, 32, "IOPS"),
            ("1M seq read QD4", "read", 1 << 20, 4, "MB/s")]
    for name, workload, bs, depth, unit in rows:
        ours = vu_run(BLOCKD, workload, bs, depth)
        theirs = vu_run(QSD, workload, bs, depth)
        k = 0 if unit == "IOPS" else 1
        line = (f"vhost-user-blk {name}, 1 queue: blockd {ours[k]:.0f} {unit}, "
                f"qemu-storage-daemon {theirs[k]:.0f} {unit}, ratio {ours[k] / theirs[k]:.2f}")
        if workload == "randread":
            line += f", blockd / fio limit {ours[0] / limit:.2f}"
        print(line)
    two = vu_run(BLOCKD, "randread", 4096, 32, queues=2, iothreads=2)
    one_qsd = vu_run(QSD, "randread", 4096, 32, queues=2, iothreads=1)
    print(f"vhost-user-blk 4k randread QD32 x 2 queues: blockd (2 iothreads) {two[0]:.0f} IOPS, "
          f"qemu-storage-daemon (1 iothread) {one_qsd[0]:.0f} IOPS, "
          f"ratio {two[0] / one_qsd[0]:.2f}")
    ours, theirs = fuse_run(BLOCKD), fuse_run(QSD)
    print(f"FUSE 1M sequential read: blockd {ours:.0f} MB/s, qemu-storage-daemon "
          f"{theirs:.0f} MB/s, ratio {ours / theirs:.2f}")


try:
    main()
finally:
    shutil.rmtree(DIR, ignore_errors=True)
