"""The throttle filter and throttle-group objects: the same replies and
errors as qemu-storage-daemon (limits, qom-get/qom-set, qom-list, the
filter's options, a group in use); a limit of N IOPS gives N +- 10 % over
NBD with fio, shared by two nodes, and a qom-set while requests run
takes effect."""
import json
import shutil
import subprocess
import sys
import threading
import time


from conftest import BLOCKD
from nbdutil import short_dir
from test_bitmaps_persistent import Daemon
from test_qsd_compat import both_sessions

MiB = 1024 * 1024


def session(prog, d):
    x = Daemon(prog, d, None)
    q = x.q
    out = []
    for lim in ({"iops-total": 100, "iops-read": 5}, {"bps-total": -1},
                {"iops-total-max": 10}, {"iops-total": 100, "iops-total-max": 50},
                {"iops-total-max-length": 0}, {"iops-total-max-length": 5},
                {"iops-size": 4096}, {"bps-read": 10 ** 16}, {"nope": 1}):
        out.append(q.execute("object-add", {"qom-type": "throttle-group", "id": "tgx",
                                            "limits": lim}))
    out.append(q.execute("object-add", {"qom-type": "throttle-group", "id": "tgx",
                                        "x-iops-total": 7, "x-bps-read": 7}))
    out.append(q.execute("qom-get", {"path": "tgx", "property": "x-iops-total"}))
    out.append(q.execute("object-del", {"id": "tgx"}))
    out.append(q.execute("object-add", {"qom-type": "throttle-group", "id": "tg0",
                                        "limits": {"iops-total": 100}}))
    out.append(q.execute("object-add", {"qom-type": "throttle-group", "id": "tg0"}))
    out.append(q.execute("qom-get", {"path": "/objects/tg0", "property": "limits"}))
    for value in ({"bps-read": 1000}, {"bps-total": 1000}, 5):
        out.append(q.execute("qom-set", {"path": "/objects/tg0", "property": "limits",
                                         "value": value}))
    out.append(q.execute("qom-set", {"path": "tg0", "property": "x-iops-write", "value": 9}))
    out.append(q.execute("qom-get", {"path": "tg0", "property": "limits"}))
    out.append(q.execute("qom-get", {"path": "tg0", "property": "nope"}))
    for path in ("/objects/tg0", "/objects"):
        out.append(sorted(json.dumps(p) for p in q.cmd("qom-list", path=path)))
    out.append(sorted(json.dumps(p) for p in q.cmd("qom-list-properties",
                                                    typename="throttle-group")))
    out.append([t for t in q.cmd("qom-list-types", implements="user-creatable")
                if t["name"] == "throttle-group"])
    for args in ({"throttle-group": "nope"}, {}, {"throttle-group": "tg0"}):
        out.append(q.execute("blockdev-add", {"driver": "throttle", "node-name": "t",
                                              "file": {"driver": "null-co"}, **args}))
    out.append(q.execute("object-del", {"id": "tg0"}))
    out.append(q.execute("blockdev-del", {"node-name": "t"}))
    out.append(q.execute("object-del", {"id": "tg0"}))
    out.append(q.execute("object-del", {"id": "tg0"}))
    assert "Sanitizer" not in x.quit()
    return out


def test_throttle_matches_qsd():
    ours, theirs = both_sessions(session)
    assert ours == theirs


def fio_iops(uri, seconds):
    r = subprocess.run(["fio", "--output-format=json", "--name=t", "--ioengine=nbd",
                        f"--uri={uri}", "--size=64M", "--rw=randread", "--bs=4k",
                        "--iodepth=8", f"--runtime={seconds}", "--time_based"],
                       capture_output=True, text=True, check=True)
    return json.loads(r.stdout[r.stdout.index("{"):])["jobs"][0]["read"]["iops"]


def measured(measure, lo, hi, attempts=3):
    """@measure() within [lo, hi]: a value below may be load on the
    machine and is measured again; one above fails at once."""
    for _ in range(attempts):
        v = measure()
        assert v <= hi, v
        if v >= lo:
            return v
    raise AssertionError(f"{v} below {lo} in {attempts} attempts")


def test_iops_limit_holds():
    """200 IOPS for one node, then 400 shared by two (qom-set while they
    run the first time): each measured within 10 %."""
    d = short_dir()
    try:
        x = Daemon(BLOCKD, d, None)
        q = x.q
        q.cmd("object-add", qom_type="throttle-group", id="tg", limits={"iops-total": 200})
        q.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": f"{d}/n.sock"}})
        with open(f"{d}/data.img", "wb") as f:
            f.write(b"\x5a" * 64 * MiB)       # data: reads are not answered as holes
        q.cmd("blockdev-add", driver="file", node_name="f", filename=f"{d}/data.img")
        for n in ("a", "b"):
            q.cmd("blockdev-add", driver="throttle", node_name=n, throttle_group="tg", file="f")
            assert "error" not in q.execute("block-export-add", {"type": "nbd", "id": n,
                                                                 "node-name": n, "name": n})
        uri = lambda n: f"nbd+unix:///{n}?socket={d}/n.sock"  # noqa: E731

        def shared():
            got = []
            ts = [threading.Thread(target=lambda n=n: got.append(fio_iops(uri(n), 3)))
                  for n in ("a", "b")]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            return sum(got)
        # (A measurement while the machine's two cores are busy with other
        # tests can fall short of the limit: it is taken again, at most
        # twice more.  Going over the limit is never excused.)
        one = measured(lambda: fio_iops(uri("a"), 3), 180, 220)
        q.cmd("qom-set", path="tg", property="limits", value={"iops-total": 400})
        both = measured(shared, 360, 440)
        print("IOPS:", one, both, file=sys.stderr)
        assert "Sanitizer" not in x.quit()
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_drain_lets_waiters_go():
    """At 2 IOPS with 16 requests queued, moving the node to an iothread
    (a drained section) takes no longer than a request: the waiters go
    at once instead of the drain waiting for the limit."""
    d = short_dir()
    try:
        x = Daemon(BLOCKD, d, None)
        q = x.q
        with open(f"{d}/data.img", "wb") as f:
            f.write(b"\x5a" * 16 * MiB)
        q.cmd("object-add", qom_type="iothread", id="io0")
        q.cmd("object-add", qom_type="throttle-group", id="tg", limits={"iops-total": 2})
        q.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": f"{d}/n.sock"}})
        q.cmd("blockdev-add", driver="file", node_name="f", filename=f"{d}/data.img")
        q.cmd("blockdev-add", driver="throttle", node_name="a", throttle_group="tg", file="f")
        assert "error" not in q.execute("block-export-add", {"type": "nbd", "id": "a",
                                                             "node-name": "a", "name": "a"})
        fio = subprocess.Popen(["fio", "--name=t", "--ioengine=nbd",
                                f"--uri=nbd+unix:///a?socket={d}/n.sock", "--size=16M",
                                "--rw=randread", "--bs=4k", "--iodepth=16", "--runtime=3",
                                "--time_based"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        time.sleep(1.5)
        start = time.monotonic()
        q.cmd("x-blockdev-set-iothread", node_name="a", iothread="io0", force=True)
        took = time.monotonic() - start
        q.cmd("qom-set", path="tg", property="limits", value={"iops-total": 100000})
        assert took < 1.0, took
        assert fio.wait(30) == 0
        assert "Sanitizer" not in x.quit()
    finally:
        shutil.rmtree(d, ignore_errors=True)
