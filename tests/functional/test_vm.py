"""A real VM on vhost-user-blk: qemu-system-x86_64 (TCG) boots Debian's
kernel with two vhost-user-blk disks from the daemon.  On the first the
guest writes two patterns over the whole disk, reads it back and hashes
it; while it writes, the host mirrors that disk to another image, waits
for READY and completes the job -- the guest must not notice, and the
target must hold exactly what the guest read back.  On the second disk the
guest makes a file system, writes a file, mounts it again and compares.
Run on blockd (one queue in the main loop; two queues over two
iothreads) and on qemu-storage-daemon."""
import hashlib
import os
import shutil
import subprocess
import time

import pytest

from conftest import BLOCKD
from nbdutil import short_dir
from test_qsd_compat import QSD
from test_vhost_user_blk import Server
import vmguest

MiB = 1024 * 1024


SCRIPT = """
echo "QUEUES $(ls /sys/block/vda/mq | wc -l)"
chunks=$(( $(cat /sys/block/vda/size) / 8192 ))
dd if=/dev/urandom of=/tmp/a bs=1M count=4 2>/dev/null
dd if=/dev/urandom of=/tmp/b bs=1M count=4 2>/dev/null
echo WRITING
for p in a b; do
    i=0
    while [ $i -lt $chunks ]; do
        dd if=/tmp/$p of=/dev/vda bs=1M seek=$((i * 4)) conv=fsync 2>/dev/null || echo WRITE-ERROR
        i=$((i + 1))
    done
    echo PASS-$p-DONE
done
echo 3 > /proc/sys/vm/drop_caches
expect=$(i=0; while [ $i -lt $chunks ]; do cat /tmp/b; i=$((i + 1)); done | sha256sum)
echo "EXPECT ${expect%% *}"
got=$(dd if=/dev/vda bs=1M 2>/dev/null | sha256sum)
echo "GOT ${got%% *}"
if mke2fs -q /dev/vdb && mount -t ext4 /dev/vdb /mnt; then
    cp /tmp/a /mnt/a && umount /mnt && mount -t ext4 /dev/vdb /mnt && cmp /tmp/a /mnt/a &&
        echo FS-OK
    umount /mnt
fi
echo "IOERRORS $(dmesg | grep -c -i 'error')"
echo GUEST-DONE
"""


def qemu_img(*args):
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def image_sha(path):
    raw = path + ".raw"
    qemu_img("convert", "-U", "-O", "raw", path, raw)
    with open(raw, "rb") as f:
        h = hashlib.sha256(f.read()).hexdigest()
    os.unlink(raw)
    return h


def wait_event(q, name, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for ev in q.events:
            if ev["event"] == name:
                q.events.remove(ev)
                return ev
        try:
            q.execute("query-block-jobs")
        except Exception:
            pass
        time.sleep(0.05)
    raise AssertionError(f"no {name}: {q.events}")


def run_vm(prog, d, tmp, queues=1, iothreads=()):
    a, b, target = f"{tmp}/a.qcow2", f"{tmp}/b.qcow2", f"{tmp}/target.qcow2"
    for img, size in ((a, "32M"), (b, "32M"), (target, "32M")):
        qemu_img("create", "-f", "qcow2", img, size)
    extra = []
    for io in iothreads:
        extra += ["--object", f"iothread,id={io}"]
    extra += ["--blockdev", f"driver=file,node-name=bfile,filename={b}",
              "--blockdev", "driver=qcow2,node-name=bfmt,file=bfile",
              "--export", "type=vhost-user-blk,id=eb,node-name=bfmt,writable=on,"
              f"addr.type=unix,addr.path={d}/b.sock"]
    place = "".join(f",iothreads.{i}={io}" for i, io in enumerate(iothreads))
    s = Server(prog, d, a, f",writable=on,num-queues={queues}{place}", extra=extra,
               fmt="qcow2")
    vm = vmguest.VM(tmp, SCRIPT, [
        "-chardev", f"socket,id=ca,path={s.sock}",
        "-device", f"vhost-user-blk-pci,chardev=ca,num-queues={queues}",
        "-chardev", f"socket,id=cb,path={d}/b.sock",
        "-device", "vhost-user-blk-pci,chardev=cb,num-queues=1"], smp=max(queues, 1))
    try:
        vm.wait_for("WRITING")
        s.q.cmd("blockdev-add", **{"driver": "qcow2", "node-name": "ta",
                                   "file": {"driver": "file", "filename": target}})
        s.q.cmd("blockdev-mirror", **{"job-id": "m", "device": "f", "target": "ta",
                                      "sync": "full"})
        wait_event(s.q, "BLOCK_JOB_READY")
        s.q.cmd("job-complete", id="m")
        wait_event(s.q, "BLOCK_JOB_COMPLETED")
        mirrored_during_writes = "PASS-b-DONE" not in vm.output()
        vm.wait_for("GUEST-DONE")
        vm.wait_exit()
    finally:
        if vm.p.poll() is None:
            vm.p.kill()
        s.quit()
    return vm, mirrored_during_writes, image_sha(target)


@pytest.mark.parametrize("prog,queues,iothreads", [
    pytest.param(BLOCKD, 1, (), id="blockd"),
    pytest.param(BLOCKD, 2, ("io0", "io1"), id="blockd-2queues-iothreads"),
    pytest.param(QSD, 1, (), id="qsd"),
])
def test_vm_on_vhost_user_blk(prog, queues, iothreads, tmp_path):
    if not vmguest.QEMU or not prog:
        pytest.fail("the VM test needs qemu-system-x86_64 and qemu-storage-daemon "
                    "(scripts/install-deps.sh)")
    d = short_dir()
    try:
        vm, during, target_sha = run_vm(prog, d, str(tmp_path), queues, iothreads)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    out = vm.output()
    assert "WRITE-ERROR" not in out, out
    assert vm.value("QUEUES") == str(queues), out
    assert vm.value("EXPECT") == vm.value("GOT"), out
    assert vm.value("IOERRORS") == "0", out
    assert "FS-OK" in out, out
    assert during, "the mirror finished after the guest's writes: it proved nothing"
    assert target_sha == vm.value("GOT")
