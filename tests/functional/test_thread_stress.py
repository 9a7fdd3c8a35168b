"""The thread-move stress matrix: nodes move at random among the main loop
and two iothreads, exports come and go with iothread lists, NBD clients
write with verification and connect and vanish mid-request, job verbs
arrive at random, while a mirror (before and after READY) and a backup
run.  Afterwards every target holds what its job promised and the daemon
still answers QMP.

BLOCKD_STRESS_SECONDS sets the length of the random phase (default 10;
make check runs it for 60 s against the TSan and ASan daemons)."""
import os
import random
import socket
import time

from nbdutil import NBD_CMD_READ, RawClient
from test_jobs import Jobs, Writer, file_sha, imgdir, sha, write_random  # noqa: F401

MiB = 1024 * 1024
THREADS = ("io0", "io1", None)


def churn_client(j, rnd):
    """A client that reads a little, then hangs up without NBD_CMD_DISC,
    sometimes with requests still in flight."""
    c = RawClient.connect(j.nbd_path, "src", structured=rnd.random() < 0.5)
    for i in range(rnd.randrange(1, 8)):
        c.request(NBD_CMD_READ, offset=rnd.randrange(0, 63) * MiB, length=65536, cookie=i)
    if rnd.random() < 0.5:
        c.reply(read_len=65536)
    c.sock.shutdown(socket.SHUT_RDWR)
    c.close()


def test_thread_move_stress(blockd, sdir, imgdir):
    seconds = float(os.environ.get("BLOCKD_STRESS_SECONDS", "10"))
    rnd = random.Random(int(os.environ.get("BLOCKD_STRESS_SEED", "1")))
    paths = {n: os.path.join(imgdir, n + ".raw") for n in ("src", "tgt", "bsrc", "btgt")}
    shadow = bytearray(write_random(paths["src"], 64 * MiB, 1))
    bshadow = bytearray(write_random(paths["bsrc"], 32 * MiB, 2))
    for n, size in (("tgt", 64 * MiB), ("btgt", 32 * MiB)):
        with open(paths[n], "wb") as f:
            f.truncate(size)
    j = Jobs(blockd, sdir, {n: {"img": p} for n, p in paths.items()}, export="src")
    q = j.qmp
    for io in ("io0", "io1"):
        q.cmd("object-add", qom_type="iothread", id=io)
    q.cmd("block-export-add", type="nbd", id="bexp", node_name="bsrc", writable=True)

    # The backup's point in time is now, before any write to bsrc.
    backup_expect = sha(bshadow)
    q.cmd("blockdev-backup", job_id="b", device="bsrc", target="btgt", sync="full",
          speed=2 * MiB)
    q.cmd("blockdev-mirror", job_id="m", device="src", target="tgt", sync="full",
          copy_mode=rnd.choice(["background", "write-blocking"]), speed=16 * MiB)
    w = Writer(j, shadow, 3)
    w.start()
    jb = Jobs.__new__(Jobs)               # a second writer, on the backup's source
    jb.nbd_path, jb.export = j.nbd_path, "bsrc"
    wb = Writer(jb, bshadow, 4)
    wb.start()

    nodes = ["src", "f-src", "tgt", "f-tgt", "bsrc", "f-bsrc", "btgt"]
    extra = 0
    counts = {"moves": 0, "exports": 0, "clients": 0, "verbs": 0}
    until = time.monotonic() + seconds
    ready = False
    while time.monotonic() < until:
        action = rnd.randrange(10)
        if action < 5:
            q.cmd("x-blockdev-set-iothread", node_name=rnd.choice(nodes),
                  iothread=rnd.choice(THREADS), force=True)
            counts["moves"] += 1
        elif action == 5:
            eid = f"x{extra}"
            extra += 1
            args = {"type": "nbd", "id": eid, "node-name": rnd.choice(["src", "bsrc"]),
                    "name": eid}
            if rnd.random() < 0.5:
                args["iothread"] = rnd.choice(["io0", "io1"])
            else:
                args["iothreads"] = ["io0", "io1"]
            q.execute("block-export-add", args)
            q.cmd("block-export-del", id=eid, mode="hard")
            counts["exports"] += 1
        elif action == 6:
            churn_client(j, rnd)
            counts["clients"] += 1
        elif action in (7, 8):
            verb = rnd.choice(["pause", "speed"])
            job = rnd.choice(["m", "b"])
            if not j.job(job):
                continue
            if verb == "pause":
                q.execute("job-pause", {"id": job})
                q.cmd("x-blockdev-set-iothread", node_name=rnd.choice(nodes),
                      iothread=rnd.choice(THREADS), force=True)
                q.execute("job-resume", {"id": job})
            else:
                q.execute("block-job-set-speed",
                          {"device": job, "speed": rnd.choice([0, 4 * MiB, 32 * MiB])})
            counts["verbs"] += 1
        elif not ready and j.job("m") and j.job("m")["ready"]:
            ready = True                  # moves go on after READY
    # Unlimited, so the copies outrun the writers and finish.
    for job in ("m", "b"):
        if j.job(job):
            q.execute("block-job-set-speed", {"device": job, "speed": 0})
    assert "error" not in j.event("BLOCK_JOB_COMPLETED", device="b", timeout=120)
    j.event("BLOCK_JOB_READY", device="m", timeout=120)
    q.cmd("job-complete", id="m")
    while j.job("m"):                     # moves during the final sync
        q.cmd("x-blockdev-set-iothread", node_name=rnd.choice(["src", "tgt"]),
              iothread=rnd.choice(THREADS), force=True)
    assert "error" not in j.event("BLOCK_JOB_COMPLETED", device="m", timeout=120)
    w.stop()
    wb.stop()
    assert file_sha(paths["tgt"]) == sha(shadow)       # the export wrote here after the switch
    assert file_sha(paths["btgt"]) == backup_expect
    assert file_sha(paths["bsrc"]) == sha(bshadow)

    # A mirror cancelled while its nodes move ends cleanly.
    q.cmd("blockdev-mirror", job_id="c", device="bsrc", target="btgt", sync="full",
          speed=MiB)
    for _ in range(20):
        q.cmd("x-blockdev-set-iothread", node_name=rnd.choice(["bsrc", "btgt"]),
              iothread=rnd.choice(THREADS), force=True)
    q.cmd("job-cancel", id="c")
    j.event("BLOCK_JOB_CANCELLED", device="c", timeout=60)

    assert q.cmd("query-version")["qemu"]["major"] >= 0
    assert counts["moves"] > 10, counts
    j.assert_healthy()
