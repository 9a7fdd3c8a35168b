"""The qemu-storage-daemon command line, and the same mistakes reported
the same way by blockd and by qemu-storage-daemon itself."""
import os
import shutil
import signal
import subprocess
import time

import pytest

from conftest import BLOCKD
from qmp import QMP

QSD = shutil.which("qemu-storage-daemon")


def run(prog, *args):
    return subprocess.run([prog, *args], capture_output=True, text=True, timeout=30)


def message(stderr, prog):
    """The one error line without the program name."""
    lines = stderr.strip().splitlines()
    assert len(lines) >= 1, stderr
    first = lines[0]
    # getopt's own messages name the program as it was invoked.
    for prefix in (prog + ": ", os.path.basename(prog) + ": "):
        if first.startswith(prefix):
            return first[len(prefix):]
    raise AssertionError(f"no program name in {first!r}")


# Mistakes whose message is the same, word for word, in both daemons.
SAME_ERRORS = [
    ["--blockdev", "driver=file,node-name=x"],
    ["--blockdev", "driver=file,filename=/nonexistent/x.img,node-name=x"],
    ["--blockdev", "driver=null-co,node-name=x,size=abc"],
    ["--blockdev", "driver=null-co,node-name=x,bogus=1"],
    ["--blockdev", '{"driver":"null-co","node-name":"n","foo":1}'],
    ["--blockdev", "driver=null-co,node-name=0bad"],
    ["--blockdev", "driver=null-co,node-name=n", "--blockdev", "driver=null-co,node-name=n"],
    ["--monitor", "nochr"],
    ["--object", "iothread,id=a,poll-max-ns=-1"],
    ["--object", "iothread,id=a", "--object", "iothread,id=a"],
    ["--bogus"],
]


@pytest.mark.parametrize("args", SAME_ERRORS, ids=[" ".join(a) for a in SAME_ERRORS])
def test_same_error_as_qemu_storage_daemon(args):
    ours = run(BLOCKD, *args)
    assert ours.returncode == 1
    if QSD is None:
        pytest.fail("qemu-storage-daemon is not installed (scripts/install-deps.sh)")
    theirs = run(QSD, *args)
    assert theirs.returncode == 1
    assert message(ours.stderr, BLOCKD) == message(theirs.stderr, QSD)


def test_options_are_processed_in_order(tmp_path):
    sock = str(tmp_path / "m.sock")
    out = run(BLOCKD, "--monitor", "mon0",
              "--chardev", f"socket,id=mon0,path={sock},server=on,wait=off")
    assert out.returncode == 1
    assert 'chardev "mon0" not found' in out.stderr


def test_keyval_and_json_blockdev_and_implied_keys(blockd, tmp_path):
    sock = str(tmp_path / "m.sock")
    img = tmp_path / "a.img"
    img.write_bytes(b"\0" * 65536)
    d = blockd("--blockdev", f"driver=file,node-name=f,filename={img},cache.direct=off",
               "--blockdev", '{"driver": "raw", "node-name": "r", "file": "f"}',
               "--blockdev", "driver=raw,node-name=w,offset=4096,size=8192,"
                             f"file.driver=file,file.filename={img},file.locking=off",
               "--object", "iothread,id=io0,poll-max-ns=1000",
               "--chardev", f"socket,id=mon0,path={sock},server=on,wait=off",
               "--monitor", "mon0,pretty=on")
    d.wait_ready()
    q = QMP(sock)
    nodes = {n["node-name"]: n for n in q.cmd("query-named-block-nodes")}
    assert nodes["r"]["image"]["virtual-size"] == 65536
    assert nodes["w"]["image"]["virtual-size"] == 8192
    assert q.cmd("query-iothreads")[0]["poll-max-ns"] == 1000
    q.close()
    assert d.stop() == 0


def test_pidfile_and_clean_shutdown(blockd, tmp_path):
    pidfile = tmp_path / "blockd.pid"
    sock = tmp_path / "m.sock"
    d = blockd("--pidfile", str(pidfile),
               "--chardev", f"socket,id=m,path={sock},server=on,wait=off", "--monitor", "m")
    d.wait_ready()
    assert int(pidfile.read_text()) == d.proc.pid
    assert d.stop(signal.SIGTERM) == 0
    assert not pidfile.exists()
    assert not sock.exists()


def test_daemonize(tmp_path):
    pidfile = tmp_path / "blockd.pid"
    sock = str(tmp_path / "m.sock")
    out = run(BLOCKD, "--daemonize", "--pidfile", str(pidfile),
              "--chardev", f"socket,id=m,path={sock},server=on,wait=off", "--monitor", "m")
    # The parent returns once the daemon is set up.
    assert out.returncode == 0
    pid = int(pidfile.read_text())
    try:
        q = QMP(sock)
        assert q.cmd("query-version")
        q.cmd("quit")
    finally:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
            time.sleep(0.05)
    assert not os.path.exists(f"/proc/{pid}")


def test_daemonize_reports_setup_failure():
    out = run(BLOCKD, "--daemonize", "--blockdev", "driver=file,node-name=x")
    assert out.returncode == 1
    assert "Parameter 'filename' is missing" in out.stderr
