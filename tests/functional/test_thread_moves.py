"""Moving nodes, and the jobs and exports on them, between the main loop and
iothreads while they work: every move succeeds or gets a clean error, the
daemon never aborts, and the data a job promised is there afterwards."""
import os
import random
import time

import pytest

from nbdutil import NBD_CMD_READ, RawClient
from test_jobs import Writer, file_sha, imgdir, mirror_setup, sha  # noqa: F401 (fixture)

THREADS = ("io0", "io1", None)


def add_iothreads(q):
    for io in ("io0", "io1"):
        q.cmd("object-add", qom_type="iothread", id=io)


def test_move_node_over_mirror_target(blockd, sdir, imgdir):
    """A node above the mirror's target moves to an iothread while the
    mirror runs: the whole component moves (the job too), drained first.
    (It aborted: only the named node was drained, and the job on its child
    was still running when its context changed.)"""
    j, src, tgt, shadow = mirror_setup(blockd, sdir, imgdir, 16 * 1024 * 1024)
    q = j.qmp
    add_iothreads(q)
    q.cmd("blockdev-mirror", job_id="m", device="src", target="tgt", sync="full",
          speed=1024 * 1024)
    q.cmd("blockdev-add", driver="raw", node_name="r", read_only=True, file="tgt")
    q.cmd("x-blockdev-set-iothread", node_name="r", iothread="io0")
    q.cmd("x-blockdev-set-iothread", node_name="r", iothread="io1")
    j.wait_status("m", "running")      # resumes after the move
    q.cmd("block-job-set-speed", device="m", speed=0)
    j.event("BLOCK_JOB_READY", device="m")
    q.cmd("x-blockdev-set-iothread", node_name="r", iothread=None)
    q.cmd("block-job-cancel", device="m")          # after READY: ends in sync
    assert "error" not in j.event("BLOCK_JOB_COMPLETED", device="m")
    assert file_sha(tgt) == file_sha(src) == sha(shadow)
    q.cmd("blockdev-del", node_name="r")
    j.assert_healthy()


@pytest.mark.parametrize("mode", ["background", "write-blocking"])
def test_move_loop_while_mirror_runs(blockd, sdir, imgdir, mode):
    """The source moves among main loop, io0 and io1 in a loop while a
    mirror copies it and a client writes to it, before and after READY,
    with job verbs in between.  (Waking the job's coroutine in its new
    thread while it was still yielding in the old one aborted with
    "co-routine re-entered recursively".)  The target ends equal to what
    the client wrote."""
    seconds = float(os.environ.get("BLOCKD_MOVE_SECONDS", "3"))
    j, src, tgt, shadow = mirror_setup(blockd, sdir, imgdir, 32 * 1024 * 1024)
    q = j.qmp
    add_iothreads(q)
    rnd = random.Random(5)
    w = Writer(j, shadow, 13)
    w.start()
    q.cmd("blockdev-mirror", job_id="m", device="src", target="tgt", sync="full",
          copy_mode=mode, speed=8 * 1024 * 1024)

    def churn(until):
        moves = 0
        while time.monotonic() < until:
            q.cmd("x-blockdev-set-iothread", node_name=rnd.choice(["src", "f-src", "tgt"]),
                  iothread=rnd.choice(THREADS), force=True)
            moves += 1
            verb = rnd.randrange(6)
            if verb == 0:
                q.cmd("job-pause", id="m")
                q.cmd("x-blockdev-set-iothread", node_name="src",
                      iothread=rnd.choice(THREADS), force=True)
                q.cmd("job-resume", id="m")
            elif verb == 1:
                q.cmd("block-job-set-speed", device="m", speed=rnd.choice([0, 4 << 20, 16 << 20]))
        return moves

    moves = churn(time.monotonic() + seconds)
    q.cmd("block-job-set-speed", device="m", speed=0)
    j.event("BLOCK_JOB_READY", device="m")
    moves += churn(time.monotonic() + seconds / 2)
    # Unlimited again: at a few MiB/s the client's writes outpace the copy,
    # and the final sync would never catch up.
    q.cmd("block-job-set-speed", device="m", speed=0)
    q.cmd("job-complete", id="m")
    # Moves during the final sync: its drained section must hold the job
    # still for everyone, not only for the job's own drain.  (Another
    # drain passed the busy job, which then changed threads mid-copy.)
    deadline = time.monotonic() + 30
    while j.job("m") and time.monotonic() < deadline:
        q.cmd("x-blockdev-set-iothread", node_name=rnd.choice(["src", "tgt"]),
              iothread=rnd.choice(THREADS), force=True)
        moves += 1
    assert "error" not in j.event("BLOCK_JOB_COMPLETED", device="m")
    w.stop()
    assert moves > 10 and w.count > 0
    # The export now writes to the target, which holds every write.
    assert file_sha(tgt) == sha(shadow)
    j.assert_healthy()


def test_move_loop_while_backup_runs(blockd, sdir, imgdir):
    """A backup (copy-before-write filter) keeps its point in time while its
    nodes move between threads under guest writes."""
    seconds = float(os.environ.get("BLOCKD_MOVE_SECONDS", "3"))
    j, src, tgt, shadow = mirror_setup(blockd, sdir, imgdir, 32 * 1024 * 1024)
    q = j.qmp
    add_iothreads(q)
    before = bytes(shadow)
    rnd = random.Random(9)
    w = Writer(j, shadow, 17)
    q.cmd("blockdev-backup", job_id="b", device="src", target="tgt", sync="full",
          speed=4 * 1024 * 1024)
    w.start()
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        q.cmd("x-blockdev-set-iothread", node_name=rnd.choice(["src", "tgt", "f-tgt"]),
              iothread=rnd.choice(THREADS), force=True)
    # The job may have finished already: "not found" is fine then.
    r = q.execute("block-job-set-speed", {"device": "b", "speed": 0})
    assert "return" in r or r["error"]["desc"] == "Block job 'b' not found", r
    assert "error" not in j.event("BLOCK_JOB_COMPLETED", device="b")
    w.stop()
    assert file_sha(tgt) == sha(before)
    j.assert_healthy()


def test_fixed_export_refuses_moves(blockd, sdir, imgdir):
    """An export fixed to an iothread keeps its node there: moves of any
    node connected to it are refused with qemu-storage-daemon's error,
    and nothing moves."""
    j, src, tgt, shadow = mirror_setup(blockd, sdir, imgdir, 4 * 1024 * 1024)
    q = j.qmp
    add_iothreads(q)
    assert "return" in q.execute("block-export-add", {
        "type": "nbd", "id": "e0", "node-name": "tgt", "name": "e0", "iothread": "io0",
        "fixed-iothread": True})
    for node in ("tgt", "f-tgt"):
        cls, desc = q.error("x-blockdev-set-iothread",
                            {"node-name": node, "iothread": "io1", "force": True})
        assert (cls, desc) == ("GenericError", "Cannot change iothread of active block backend")
    # Same thread: nothing to refuse.
    q.cmd("x-blockdev-set-iothread", node_name="f-tgt", iothread="io0", force=True)
    # A second fixed export elsewhere fails; an unfixed one stays where the node is.
    cls, desc = q.error("block-export-add", {"type": "nbd", "id": "e1", "node-name": "f-tgt",
                                             "iothread": "io1", "fixed-iothread": True})
    assert desc == "Cannot change iothread of active block backend"
    q.cmd("block-export-add", type="nbd", id="e2", node_name="f-tgt", iothread="io1")
    # Nothing moved to io1, so it can go; io0 is still in use.
    q.cmd("object-del", id="io1")
    cls, desc = q.error("object-del", {"id": "io0"})
    assert desc == "object 'io0' is in use, can not be deleted"
    # The other, unrelated component still moves.
    q.cmd("x-blockdev-set-iothread", node_name="src", iothread="io0", force=True)
    j.assert_healthy()


def test_iothread_of_parked_job_is_in_use(blockd, sdir, imgdir):
    """A paused job whose nodes moved away is still parked in its old
    iothread, and is woken there: that iothread cannot be deleted until the
    job has left it.  (It could be, and the resume then used a freed
    context.)"""
    j, src, tgt, shadow = mirror_setup(blockd, sdir, imgdir, 4 * 1024 * 1024)
    q = j.qmp
    add_iothreads(q)
    q.cmd("x-blockdev-set-iothread", node_name="src", iothread="io0", force=True)
    q.cmd("blockdev-mirror", job_id="m", device="src", target="tgt", sync="full",
          speed=1024 * 1024)
    q.cmd("job-pause", id="m")
    j.wait_status("m", "paused")
    q.cmd("x-blockdev-set-iothread", node_name="src", iothread=None, force=True)
    cls, desc = q.error("object-del", {"id": "io0"})
    assert desc == "object 'io0' is in use, can not be deleted"
    q.cmd("job-resume", id="m")
    q.cmd("block-job-set-speed", device="m", speed=0)
    j.event("BLOCK_JOB_READY", device="m")
    q.cmd("block-job-cancel", device="m")
    assert "error" not in j.event("BLOCK_JOB_COMPLETED", device="m")
    q.cmd("object-del", id="io0")
    assert file_sha(tgt) == sha(shadow)
    j.assert_healthy()


@pytest.mark.parametrize("structured", [False, True])
def test_drain_does_not_wait_for_a_client_that_never_reads(blockd, sdir, imgdir, structured):
    """A client sends reads and never reads the replies: its socket fills
    and the replies wait to be sent.  Drains of the node (a move between
    threads, a mirror's completion) still finish: a block request is done
    once its data is in a buffer; sending the reply is not block I/O.
    (The drain waited for that client as long as it liked.)"""
    j, src, tgt, shadow = mirror_setup(blockd, sdir, imgdir, 64 * 1024 * 1024)
    q = j.qmp
    add_iothreads(q)
    c = RawClient.connect(j.nbd_path, "src", structured=structured)
    for i in range(48):
        c.request(NBD_CMD_READ, offset=i * 1024 * 1024, length=1024 * 1024, cookie=i)
    time.sleep(0.5)
    start = time.monotonic()
    q.cmd("x-blockdev-set-iothread", node_name="src", iothread="io0", force=True)
    q.cmd("x-blockdev-set-iothread", node_name="src", iothread=None, force=True)
    assert time.monotonic() - start < 5
    q.cmd("blockdev-mirror", job_id="m", device="src", target="tgt", sync="full")
    j.event("BLOCK_JOB_READY", device="m", timeout=30)
    q.cmd("job-complete", id="m")
    assert "error" not in j.event("BLOCK_JOB_COMPLETED", device="m", timeout=30)
    assert file_sha(tgt) == sha(shadow)
    # The replies were kept, not dropped: the client can still read them.
    got = 0
    for _ in range(48):
        err, cookie, data = c.reply(read_len=1024 * 1024)
        assert err == 0 and data == shadow[cookie * 1024 * 1024:(cookie + 1) * 1024 * 1024]
        got += 1
    assert got == 48
    c.close()
    j.assert_healthy()


def test_cancel_during_final_sync_while_moving(blockd, sdir, imgdir):
    """job-complete, then at once a forced cancel, while the nodes move:
    the mirror ends one way or the other (switched over, or cancelled with
    the source kept), never hangs or aborts, and the data follows the way
    it ended."""
    j, src, tgt, shadow = mirror_setup(blockd, sdir, imgdir, 32 * 1024 * 1024)
    q = j.qmp
    add_iothreads(q)
    rnd = random.Random(21)
    w = Writer(j, shadow, 23)
    w.start()
    q.cmd("blockdev-mirror", job_id="m", device="src", target="tgt", sync="full")
    j.event("BLOCK_JOB_READY", device="m")
    q.cmd("x-blockdev-set-iothread", node_name="src", iothread="io0", force=True)
    q.cmd("job-complete", id="m")
    q.execute("block-job-cancel", {"device": "m", "force": True})
    deadline = time.monotonic() + 30
    while j.job("m") and time.monotonic() < deadline:
        q.cmd("x-blockdev-set-iothread", node_name=rnd.choice(["src", "tgt"]),
              iothread=rnd.choice(THREADS), force=True)
    j.event("JOB_STATUS_CHANGE", id="m", status="null")
    w.stop()
    seen = {id(e): e for e in j.log + j.qmp.events}.values()
    ended = [e["event"] for e in seen
             if e["event"] in ("BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED")]
    assert len(ended) == 1, ended
    # Switched over: the export wrote to the target since; else to the source.
    assert file_sha(tgt if ended[0] == "BLOCK_JOB_COMPLETED" else src) == sha(shadow)
    j.assert_healthy()
