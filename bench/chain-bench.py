#!/usr/bin/python3
"""Image-chain benchmark on /dev/shm, blockd and qemu-storage-daemon in the
same run: the time for an active block-commit of a 1 GiB overlay into its
base to reach READY, and for a block-stream of a 1 GiB base into an empty
overlay to complete.  Prints the times and the ratios (target: blockd at
most 0.8 of qemu-storage-daemon's time).

  bench/chain-bench.py [runs]
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
QSD = "qemu-storage-daemon"
RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 3
DIR = tempfile.mkdtemp(prefix="blockd-chain-bench", dir="/dev/shm")
PRISTINE = {name: os.path.join(DIR, f"{name}.pristine") for name in ("base", "full", "empty")}


def qemu(*args):
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)


def prepare():
    """base: 1 GiB of random data; full: an overlay holding 1 GiB of its
    own; empty: an overlay holding nothing."""
    raw = os.path.join(DIR, "seed.raw")
    qemu("dd", "if=/dev/urandom", f"of={raw}", "bs=1M", "count=1024", "status=none")
    qemu("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, PRISTINE["base"])
    os.unlink(raw)
    base = os.path.join(DIR, "base.qcow2")
    shutil.copy(PRISTINE["base"], base)
    for name in ("full", "empty"):
        qemu("qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2",
             PRISTINE[name])
    qemu("qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 1G", PRISTINE["full"])


def fresh(overlay):
    """base.qcow2 and top.qcow2 (over it) from the pristine copies."""
    shutil.copy(PRISTINE["base"], os.path.join(DIR, "base.qcow2"))
    shutil.copy(PRISTINE[overlay], os.path.join(DIR, "top.qcow2"))


def wait_event(q, job, names):
    while True:
        msg = q.recv()
        ev = msg.get("event")
        data = msg.get("data", {})
        if ev in names and data.get("device") == job:
            if "error" in data:
                raise RuntimeError(f"{job} failed: {data}")
            return
        if ev == "BLOCK_JOB_COMPLETED" and data.get("device") == job:
            raise RuntimeError(f"{job} ended early: {data}")


def time_job(binary, sock_dir, verb, until):
    fresh("full" if verb == "block-commit" else "empty")
    qmp_path = os.path.join(sock_dir, "qmp.sock")
    top = os.path.join(DIR, "top.qcow2")
    args = ["--blockdev", "driver=file,node-name=ft,filename=" + top,
            "--blockdev", "driver=qcow2,node-name=top,file=ft"]
    with qmp_daemon(binary, args, qmp_path, 120) as q:
        start = time.monotonic()
        q.cmd(verb, job_id="j", device="top")
        wait_event(q, "j", (until,))
        elapsed = time.monotonic() - start
        if until == "BLOCK_JOB_READY":
            q.cmd("job-cancel", id="j")
    return elapsed


def main():
    if not shutil.which(QSD):
        sys.exit("chain-bench: missing qemu-storage-daemon (scripts/install-deps.sh)")
    sock_dir = tempfile.mkdtemp(prefix="bdcb", dir="/tmp")
    work = (("active commit to READY", "block-commit", "BLOCK_JOB_READY"),
            ("stream to completion", "block-stream", "BLOCK_JOB_COMPLETED"))
    times = {(w, p): [] for w, _, _ in work for p in (QSD, "blockd")}
    try:
        prepare()
        for _ in range(RUNS):
            for what, verb, until in work:
                times[(what, QSD)].append(time_job(QSD, sock_dir, verb, until))
                times[(what, "blockd")].append(time_job(BLOCKD, sock_dir, verb, until))
    finally:
        shutil.rmtree(DIR, ignore_errors=True)
        shutil.rmtree(sock_dir, ignore_errors=True)
    for what, _, _ in work:
        best = {}
        for prog in (QSD, "blockd"):
            v = times[(what, prog)]
            best[prog] = min(v)
            print(f"{what:24s} {prog:20s} best {best[prog]:.3f} s  "
                  f"({', '.join(f'{t:.3f}' for t in v)})")
        print(f"{what:24s} blockd / qemu-storage-daemon time: "
              f"{best['blockd'] / best[QSD]:.2f}  (target <= 0.80)")


if __name__ == "__main__":
    main()
