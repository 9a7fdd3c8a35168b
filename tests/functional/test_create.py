"""blockdev-create: image creation as a job (file and qcow2), checked with
qemu-img, and the job's events and manual dismiss as in qemu-storage-daemon."""
import json
import os
import subprocess

import pytest

from nbdutil import MiB
from test_jobs import Jobs


def qemu_img(*args):
    return subprocess.run(["qemu-img", *args], capture_output=True, text=True, timeout=60)


def start(blockd, sdir):
    return Jobs(blockd, sdir, {})


def run_create(j, job_id, options):
    j.qmp.cmd("blockdev-create", job_id=job_id, options=options)
    j.event("JOB_STATUS_CHANGE", id=job_id, status="concluded")
    info = [x for x in j.qmp.cmd("query-jobs") if x["id"] == job_id][0]
    j.qmp.cmd("job-dismiss", id=job_id)
    j.event("JOB_STATUS_CHANGE", id=job_id, status="null")
    return info


def test_create_file_then_qcow2(blockd, sdir, tmp_path):
    j = start(blockd, sdir)
    path = str(tmp_path / "new.qcow2")
    info = run_create(j, "c0", {"driver": "file", "filename": path, "size": 0})
    assert info["type"] == "create" and "error" not in info
    assert os.path.exists(path)
    j.qmp.cmd("blockdev-add", driver="file", node_name="f0", filename=path)
    info = run_create(j, "c1", {"driver": "qcow2", "file": "f0", "size": 64 * MiB,
                                "cluster-size": 65536})
    assert "error" not in info, info
    assert j.statuses("c1") == ["created", "running", "waiting", "pending", "concluded",
                                "null"]
    # No BLOCK_JOB_* events for a create job.
    assert not [e for e in j.qmp.events if e["event"].startswith("BLOCK_JOB")]
    j.qmp.cmd("blockdev-add", driver="qcow2", node_name="q0", file="f0")
    nodes = {n["node-name"]: n for n in j.qmp.cmd("query-named-block-nodes")}
    assert nodes["q0"]["drv"] == "qcow2"
    j.qmp.cmd("blockdev-del", node_name="q0")
    j.qmp.cmd("blockdev-del", node_name="f0")
    chk = qemu_img("check", path)
    assert chk.returncode == 0, chk.stdout + chk.stderr
    meta = json.loads(qemu_img("info", "--output=json", path).stdout)
    assert meta["format"] == "qcow2" and meta["virtual-size"] == 64 * MiB
    assert meta["cluster-size"] == 65536
    j.assert_healthy()


def test_create_errors_end_the_job(blockd, sdir, tmp_path):
    j = start(blockd, sdir)
    info = run_create(j, "c2", {"driver": "qcow2", "file": "nosuch", "size": MiB})
    assert info["status"] == "concluded" and "error" in info
    cls, desc = j.qmp.error("blockdev-create", {"job-id": "c3", "options": {"driver": "raw"}})
    assert desc == "Driver does not support blockdev-create"
    cls, desc = j.qmp.error("blockdev-create", {"job-id": "c3",
                                                 "options": {"driver": "qcow2", "file": "x"}})
    assert desc == "Parameter 'options.size' is missing"
    cls, desc = j.qmp.error("blockdev-create", {"job-id": "0bad",
                                                 "options": {"driver": "file",
                                                             "filename": "/tmp/x", "size": 0}})
    assert desc == "Invalid job ID '0bad'"
    j.assert_healthy()
