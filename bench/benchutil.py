"""Shared by the benchmarks: waiting for a server, running fio, a daemon
driven over QMP."""
import contextlib
import json
import os
import subprocess
import time


def wait_socket(path, proc):
    """Wait until @proc, a server starting, has created its socket @path."""
    deadline = time.monotonic() + 10
    while not os.path.exists(path):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.02)
    time.sleep(0.1)


def fio_side(args):
    """Run fio with @args (JSON output) and return the figures of the
    direction that moved data (read or write)."""
    out = subprocess.run(["fio", "--output-format=json"] + args,
                         capture_output=True, text=True, check=True)
    text = out.stdout[out.stdout.index("{"):]   # fio prints a line before the JSON
    job = json.loads(text)["jobs"][0]
    return job["read"] if job["read"]["io_bytes"] else job["write"]


def fio_nbd_workloads(uri, workloads, size_mb, seconds):
    """Run each of @workloads -- (name, fio args, "iops" or "bw") -- with
    fio's nbd engine on @uri; {name: IOPS or MB/s}."""
    res = {}
    for name, fargs, what in workloads:
        side = fio_side(["--name=b", "--ioengine=nbd", f"--uri={uri}", f"--size={size_mb}M",
                         "--time_based", f"--runtime={seconds}"] + fargs)
        res[name] = side["iops"] if what == "iops" else side["bw_bytes"] / 1e6
    return res


@contextlib.contextmanager
def qmp_daemon(binary, args, qmp_path, timeout):
    """Start @binary with @args and a QMP monitor on @qmp_path; yield the
    QMP client (tests/functional/qmp.py must be importable).  Ends with
    quit, or with a kill if the body failed."""
    from qmp import QMP
    proc = subprocess.Popen([binary, *args,
                             "--chardev", f"socket,id=m,path={qmp_path},server=on,wait=off",
                             "--monitor", "chardev=m"], stdout=subprocess.DEVNULL)
    try:
        q = QMP(qmp_path, timeout=timeout)
        yield q
        q.cmd("quit")
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if os.path.exists(qmp_path):
            os.unlink(qmp_path)
