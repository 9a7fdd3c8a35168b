"""query-qmp-schema as a management tool reads it: it lists exactly the
commands query-commands lists, describes each argument blockd accepts
(and no other), and every command answers a call with no arguments or
with a bogus one with a well-formed reply."""
import json
import os
import shutil

import pytest

from qmp import QMP
from test_qmp import qmp_daemon  # noqa: F401  (fixture)
from test_qsd_compat import Peer, QSD
from nbdutil import short_dir

# Commands blockd has that qemu-storage-daemon 7.2 does not (README).
EXTENSIONS = {"query-iothreads", "block-job-change", "block-latency-histogram-set",
              "x-monitor-add"}
# Members blockd accepts beyond qemu-storage-daemon 7.2's (README), as
# paths the walk below produces.
MEMBER_EXTENSIONS = {
    ("block-export-add", ".iothreads"),
    ("blockdev-add", "{blkdebug}.inject-error[].nth"),
    ("blockdev-add", "{blkdebug}.inject-error[].offset"),
    ("blockdev-add", "{blkdebug}.inject-error[].bytes"),
    ("blockdev-backup", ".discard-source"),   # QEMU 9.1's
    ("blockdev-add", "{qcow2}.discard-no-unref"),                 # QEMU 8.1's
    ("blockdev-reopen", ".options[]{qcow2}.discard-no-unref"),
    ("nbd-server-start", ".handshake-max-seconds"),               # QEMU 9.1's
}


def by_name(schema):
    return {e["name"]: e for e in schema}


def members(types, name, path="", out=None, depth=0):
    """Flatten a type into (path, optional) pairs and enum values."""
    out = set() if out is None else out
    t = types[name]
    if depth > 3:
        return out
    if t["meta-type"] == "object":
        for m in t["members"]:
            out.add((path + "." + m["name"], "default" in m))
            members(types, m["type"], path + "." + m["name"], out, depth + 1)
        for v in t.get("variants", []):
            members(types, v["type"], path + "{" + v["case"] + "}", out, depth + 1)
    elif t["meta-type"] == "enum":
        out.update((path + "=" + v, None) for v in t["values"])
    elif t["meta-type"] == "array":
        members(types, t["element-type"], path + "[]", out, depth + 1)
    elif t["meta-type"] == "alternate":
        for m in t["members"]:
            members(types, m["type"], path + "|", out, depth + 1)
    return out


@pytest.fixture
def schema(qmp_daemon):  # noqa: F811
    d, sock = qmp_daemon()
    q = QMP(sock)
    return d, sock, q, q.cmd("query-qmp-schema")


def test_schema_lists_exactly_the_commands(schema):
    d, sock, q, s = schema
    types = by_name(s)
    commands = {e["name"] for e in s if e["meta-type"] == "command"}
    assert commands == {c["name"] for c in q.cmd("query-commands")}
    # Every type named anywhere is described, once.
    assert len(types) == len(s)
    for e in s:
        for key in ("arg-type", "ret-type", "element-type"):
            if key in e:
                assert e[key] in types, (e, key)
        for m in e.get("members", []):
            if "type" in m:
                assert m["type"] in types, (e, m)
        for v in e.get("variants", []):
            assert v["type"] in types, (e, v)
    assert {e["name"] for e in s if e["meta-type"] == "builtin"} == {
        "str", "int", "bool", "number", "null", "any"}


def test_every_command_answers_a_tool_probe(schema):
    """No arguments, then a bogus member: each gets a reply or an error of
    a QMP class, and the daemon keeps running."""
    d, sock, q, s = schema
    types = by = by_name(s)
    commands = sorted(e["name"] for e in s if e["meta-type"] == "command")
    for name in commands:
        if name in ("quit", "qmp_capabilities"):
            continue
        r = q.execute(name, {"x-bogus-member": 1})
        required = [m["name"] for m in types[by[name]["arg-type"]]["members"]
                    if "default" not in m]
        # QEMU's order: a missing member is found before an unknown one.
        desc = (f"Parameter '{required[0]}' is missing" if required
                else "Parameter 'x-bogus-member' is unexpected")
        assert r["error"] == {"class": "GenericError", "desc": desc}, (name, r)
        r = q.execute(name)
        assert ("return" in r) != ("error" in r), (name, r)
        if "error" in r:
            assert r["error"]["class"] in ("GenericError", "CommandNotFound",
                                           "DeviceNotFound"), (name, r)
        assert d.proc.poll() is None, name
    # quit last: its exports go, then the reply, then the daemon ends.
    assert q.execute("quit") == {"return": {}}
    assert d.proc.wait(timeout=10) == 0


def test_schema_checks_what_the_monitor_checks(schema):
    """A required member the schema lists is required by the command, an
    enum value it does not list is refused."""
    d, sock, q, s = schema
    types = by_name(s)
    cmd = types["block-export-del"]
    arg = types[cmd["arg-type"]]
    assert [(m["name"], "default" in m) for m in arg["members"]] == [
        ("id", False), ("mode", True)]
    mode = types[[m for m in arg["members"] if m["name"] == "mode"][0]["type"]]
    assert mode["values"] == ["safe", "hard"]
    r = q.execute("block-export-del", {"id": "e", "mode": "gentle"})
    assert "error" in r
    r = q.execute("block-export-del", {})
    assert r["error"]["desc"] == "Parameter 'id' is missing"


def test_events_are_described(schema):
    """Each event a job and an export emit is listed with the members its
    data carries."""
    d, sock, q, s = schema
    types = by_name(s)
    img = os.path.join(os.path.dirname(sock), "d.raw")
    with open(img, "wb") as f:
        f.truncate(1 << 20)
    q.cmd("blockdev-add", driver="file", node_name="f", filename=img)
    q.cmd("blockdev-add", driver="null-co", node_name="t", size=1 << 20)
    nbd = os.path.join(short_dir(), "n.sock")
    q.cmd("nbd-server-start", addr={"type": "unix", "path": nbd})
    q.cmd("block-export-add", type="nbd", id="e", node_name="f")
    q.cmd("blockdev-backup", job_id="b", device="f", target="t", sync="full")
    q.cmd("block-export-del", id="e")
    seen = set()
    queued = list(q.events)
    while not {"BLOCK_JOB_COMPLETED", "BLOCK_EXPORT_DELETED"} <= seen:
        ev = queued.pop(0) if queued else q.recv()
        if "event" not in ev:
            continue
        seen.add(ev["event"])
        info = types.get(ev["event"])
        assert info and info["meta-type"] == "event", ev
        arg = types[info["arg-type"]]
        listed = {m["name"]: "default" in m for m in arg["members"]}
        data = ev.get("data", {})
        assert set(data) <= set(listed), ev
        assert {k for k, opt in listed.items() if not opt} <= set(data), ev
    shutil.rmtree(os.path.dirname(nbd), ignore_errors=True)


def test_no_member_qemu_storage_daemon_lacks(schema):
    """What blockd accepts is a subset of what qemu-storage-daemon 7.2
    accepts for the same command, apart from the listed extensions."""
    if not QSD:
        pytest.fail("qemu-storage-daemon is not installed")
    d, sock, q, ours = schema
    dr = short_dir()
    peer = Peer(QSD, dr)
    try:
        theirs = peer.qmp.cmd("query-qmp-schema")
    finally:
        peer.close()
        shutil.rmtree(dr, ignore_errors=True)
    O, Q = by_name(ours), by_name(theirs)
    problems = []
    for name, e in sorted(O.items()):
        if e["meta-type"] not in ("command", "event"):
            continue
        if name not in Q:
            if name not in EXTENSIONS:
                problems.append(("not in qemu-storage-daemon", name))
            continue
        a = members(O, e["arg-type"])
        b = members(Q, Q[name]["arg-type"])
        for path, opt in sorted(a - b, key=str):
            if (name, path) in MEMBER_EXTENSIONS:
                continue
            problems.append((name, path, "optional" if opt else "required" if opt is False
                             else "value"))
    assert not problems, json.dumps(problems, indent=1)
