"""Objects, chardevs and the command line against qemu-storage-daemon: the
QOM commands, chardev-* and ringbuf-*, monitors on stdio, on passed
descriptors, on client sockets and files, and --help/help answers.  The
same session runs against both daemons and the replies must be equal."""
import json
import os
import shutil
import socket
import subprocess
import time

import pytest

from conftest import BLOCKD
from nbdutil import short_dir
from qmp import QMP
from test_qsd_compat import QSD

DAEMONS = {"qsd": QSD, "blockd": BLOCKD}


@pytest.fixture
def pair():
    """Start both daemons with the same extra arguments; yields a function
    returning [(qsd QMP, dir), (blockd QMP, dir)]."""
    if not QSD:
        pytest.fail("qemu-storage-daemon is not installed (scripts/install-deps.sh)")
    procs, dirs = [], []

    def start(*extra):
        out = []
        for prog in (QSD, BLOCKD):
            d = short_dir()
            dirs.append(d)
            sock = os.path.join(d, "qmp.sock")
            args = [a.replace("@DIR@", d) for a in extra]
            p = subprocess.Popen([prog, "--chardev", f"socket,id=m,path={sock},server=on,wait=off",
                                  "--monitor", "chardev=m", *args],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            procs.append(p)
            out.append((QMP(sock), d))
        return out
    yield start
    for p in procs:
        p.kill()
        p.wait()
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)


def same_session(peers, calls):
    """Run @calls ((command, args) with @DIR@ in strings) on both; compare."""
    results = []
    for q, d in peers:
        out = []
        for name, args in calls:
            args = json.loads(json.dumps(args).replace("@DIR@", d))
            r = q.execute(name, args)
            if name == "query-chardev" and "return" in r:
                r["return"].sort(key=lambda c: c["label"])     # QEMU's is hash order
            if name == "query-block-exports" and "return" in r:
                r["return"].sort(key=lambda e: e["id"])        # QEMU's is newest first
            out.append(json.loads(json.dumps(r).replace(d, "@DIR@")))
        results.append(out)
    for call, a, b in zip(calls, *results):
        assert b == a, (call, a, b)
    return results[1]


def test_qom_matches(pair):
    peers = pair("--object", "iothread,id=io0,poll-max-ns=1000")
    same_session(peers, [
        ("qom-list", {"path": "/"}),
        ("qom-list", {"path": "/objects"}),
        ("qom-list", {"path": "/objects/io0"}),
        ("qom-list", {"path": "/objects/io0/nope"}),
        ("qom-get", {"path": "/objects/io0", "property": "poll-max-ns"}),
        ("qom-get", {"path": "/objects/io0", "property": "thread-pool-max"}),
        ("qom-get", {"path": "/objects/io0", "property": "type"}),
        ("qom-get", {"path": "/objects/io0", "property": "nope"}),
        ("qom-get", {"path": "/objects/nope", "property": "poll-max-ns"}),
        ("qom-get", {"path": "io0", "property": "poll-max-ns"}),
        ("qom-set", {"path": "/objects/io0", "property": "poll-max-ns", "value": 5000}),
        ("qom-get", {"path": "/objects/io0", "property": "poll-max-ns"}),
        ("qom-set", {"path": "/objects/io0", "property": "poll-max-ns", "value": "x"}),
        ("qom-set", {"path": "/objects/io0", "property": "poll-max-ns", "value": -1}),
        ("qom-set", {"path": "/objects/io0", "property": "aio-max-batch", "value": 2 ** 63}),
        ("qom-set", {"path": "/objects/io0", "property": "thread-pool-min", "value": 4}),
        ("qom-set", {"path": "/objects/io0", "property": "thread-pool-max", "value": 2}),
        ("qom-get", {"path": "/objects/io0", "property": "thread-pool-min"}),
        ("qom-set", {"path": "/objects/io0", "property": "type", "value": "x"}),
        ("qom-list-types", {"implements": "iothread"}),
        ("qom-list-types", {"implements": "nope"}),
        ("qom-list-properties", {"typename": "iothread"}),
        ("qom-list-properties", {"typename": "nope"}),
        ("qom-list-properties", {"typename": "user-creatable"}),
    ])


# blockd's user-creatable types, sorted (as --object help lists them).
OBJECT_TYPES = ["authz-list", "authz-listfile", "authz-simple", "iothread", "secret",
                "secret_keyring", "thread-context", "throttle-group", "tls-creds-anon",
                "tls-creds-psk", "tls-creds-x509"]
# blockd's, not qemu-storage-daemon 7.2's.
BEYOND_QSD = {"authz-listfile"}
# Arguments that make each type (default: every int property 1).  Every
# limit at once is no valid throttle configuration, two are; a keyring
# secret needs a key in the keyring (test_secret.py makes one).
VALID_ARGS = {
    "throttle-group": {"x-iops-total": 1, "x-bps-read": 1},
    "authz-simple": {"identity": "x"},
    "authz-list": {},
    # Credentials read files (test_nbd_tls.py makes them), the list file too.
    "authz-listfile": None,
    "tls-creds-anon": {"endpoint": "server"},
    "tls-creds-psk": None,
    "tls-creds-x509": None,
    "secret": {"data": "x"},
    "secret_keyring": None,
    "thread-context": {"cpu-affinity": [0]},
}


def test_qom_types_are_what_object_add_takes(pair):
    """Every user-creatable type blockd lists can be created, and its
    properties are the ones object-add accepts."""
    (qsd, _), (ours, _) = pair()
    types = ours.cmd("qom-list-types", implements="user-creatable", abstract=False)
    theirs = {t["name"]: t for t in qsd.cmd("qom-list-types", implements="user-creatable")}
    assert sorted(t["name"] for t in types) == OBJECT_TYPES
    key = lambda p: p["name"]  # noqa: E731
    for t in types:
        props = ours.cmd("qom-list-properties", typename=t["name"])
        if t["name"] in BEYOND_QSD:
            assert t["name"] not in theirs
            continue
        assert t == theirs[t["name"]]
        assert sorted(props, key=key) == sorted(qsd.cmd("qom-list-properties",
                                                        typename=t["name"]), key=key)
        args = VALID_ARGS.get(t["name"], {p["name"]: 1 for p in props if p["type"] == "int"})
        if args is None:
            continue
        ours.cmd("object-add", qom_type=t["name"], id=f"x{t['name']}", **args)
        for name, value in args.items():
            if isinstance(value, int):
                assert ours.cmd("qom-get", path=f"/objects/x{t['name']}", property=name) == 1


def test_qom_set_reaches_the_running_iothread(pair):
    (_, _), (ours, _) = pair("--object", "iothread,id=io0")
    ours.cmd("qom-set", path="/objects/io0", property="poll-max-ns", value=777)
    ours.cmd("qom-set", path="/objects/io0", property="aio-max-batch", value=3)
    info = [i for i in ours.cmd("query-iothreads") if i["id"] == "io0"][0]
    assert (info["poll-max-ns"], info["aio-max-batch"]) == (777, 3)


def test_chardevs_match(pair):
    peers = pair("--chardev", "ringbuf,id=r0,size=16", "--chardev", "null,id=n0",
                 "--chardev", "socket,id=s2,path=@DIR@/s2.sock,server=on,wait=off")
    same_session(peers, [
        ("query-chardev", None),
        ("ringbuf-write", {"device": "r0", "data": "hello world, this is long"}),
        ("ringbuf-read", {"device": "r0", "size": 100}),
        ("ringbuf-write", {"device": "r0", "data": "aGVsbG8=", "format": "base64"}),
        ("ringbuf-read", {"device": "r0", "size": 3, "format": "base64"}),
        ("ringbuf-read", {"device": "r0", "size": 100}),
        ("ringbuf-read", {"device": "n0", "size": 10}),
        ("ringbuf-read", {"device": "nope", "size": 10}),
        ("ringbuf-read", {"device": "r0", "size": -1}),
        ("ringbuf-write", {"device": "r0", "data": "!!!", "format": "base64"}),
        ("chardev-add", {"id": "r1", "backend": {"type": "ringbuf", "data": {"size": 32}}}),
        ("chardev-add", {"id": "r1", "backend": {"type": "ringbuf", "data": {"size": 32}}}),
        ("chardev-add", {"id": "r2", "backend": {"type": "ringbuf", "data": {"size": 30}}}),
        ("chardev-add", {"id": "u1", "backend": {"type": "socket", "data": {
            "addr": {"type": "unix", "data": {"path": "@DIR@/u1.sock"}},
            "server": True, "wait": False}}}),
        ("chardev-add", {"id": "fl", "backend": {"type": "file",
                                                 "data": {"out": "@DIR@/fl.out"}}}),
        ("query-chardev", None),
        ("chardev-send-break", {"id": "r1"}),
        ("chardev-send-break", {"id": "nope"}),
        ("chardev-change", {"id": "r1", "backend": {"type": "null", "data": {}}}),
        ("chardev-change", {"id": "m", "backend": {"type": "null", "data": {}}}),
        ("chardev-remove", {"id": "r1"}),
        ("chardev-remove", {"id": "m"}),
        ("chardev-remove", {"id": "nope"}),
        ("query-chardev", None),
    ])


def test_chardev_backends(pair):
    (qsd, _), (ours, _) = pair()
    mine = {b["name"] for b in ours.cmd("query-chardev-backends")}
    assert mine == {"socket", "stdio", "null", "file", "ringbuf", "memory"}
    assert mine <= {b["name"] for b in qsd.cmd("query-chardev-backends")}
    r = ours.execute("chardev-add", {"id": "p", "backend": {"type": "pty", "data": {}}})
    assert r["error"]["desc"] == "Parameter 'type' does not accept value 'pty'"


def stdio_session(prog):
    p = subprocess.Popen([prog, "--chardev", "stdio,id=s", "--monitor", "s"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL)
    out = [json.loads(p.stdout.readline())]
    for cmd in ('{"execute": "qmp_capabilities"}', '{"execute": "query-chardev"}',
                '{"execute": "quit"}'):
        p.stdin.write(cmd.encode() + b"\n")
        p.stdin.flush()
        out.append(json.loads(p.stdout.readline()))
    assert p.wait(timeout=10) == 0
    return out


def test_monitor_on_stdio(pair):
    """QMP over standard input and output, as test harnesses drive it."""
    qsd, ours = stdio_session(QSD), stdio_session(BLOCKD)
    assert ours[0]["QMP"]["capabilities"] == qsd[0]["QMP"]["capabilities"]
    assert ours[1:] == qsd[1:]


def test_monitor_on_passed_descriptors(tmp_path):
    """fd=N: a listening socket given at start (server=on), or a connected
    one (server=off)."""
    d = short_dir()
    try:
        lsock = socket.socket(socket.AF_UNIX)
        lsock.bind(os.path.join(d, "l.sock"))
        lsock.listen(1)
        a, b = socket.socketpair()
        p = subprocess.Popen([BLOCKD,
                              "--chardev", f"socket,id=l,fd={lsock.fileno()},server=on,wait=off",
                              "--monitor", "l",
                              "--chardev", f"socket,id=c,fd={b.fileno()},server=off",
                              "--monitor", "c"],
                             pass_fds=[lsock.fileno(), b.fileno()],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        b.close()
        q = QMP(os.path.join(d, "l.sock"))
        assert q.cmd("query-version")
        f = a.makefile("rb")
        assert "QMP" in json.loads(f.readline())
        a.sendall(b'{"execute": "qmp_capabilities"}\n{"execute": "query-chardev"}\n')
        assert json.loads(f.readline()) == {"return": {}}
        labels = {c["label"]: c for c in json.loads(f.readline())["return"]}
        assert labels["c"]["frontend-open"] and labels["l"]["frontend-open"]
        p.kill()
        p.wait()
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_monitor_as_client_and_waiting_server():
    """server=off connects to a listening QMP client; wait=on holds the
    start until the first client is there."""
    d = short_dir()
    try:
        lsock = socket.socket(socket.AF_UNIX)
        lsock.bind(os.path.join(d, "c.sock"))
        lsock.listen(1)
        wsock = os.path.join(d, "w.sock")
        p = subprocess.Popen([BLOCKD,
                              "--chardev", f"socket,id=c,path={d}/c.sock,server=off",
                              "--monitor", "c",
                              "--chardev", f"socket,id=w,path={wsock},server=on,wait=on",
                              "--monitor", "w"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        conn, _ = lsock.accept()
        time.sleep(0.3)
        assert p.poll() is None
        q = QMP(wsock)          # the waiting server's first client
        line = p.stdout.readline()
        assert b"ready" in line
        assert q.cmd("query-version")
        f = conn.makefile("rb")
        assert "QMP" in json.loads(f.readline())
        p.kill()
        p.wait()
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_monitor_on_file_chardev():
    """file: the greeting and replies go to path, commands come from
    input-path."""
    d = short_dir()
    try:
        inp = os.path.join(d, "in")
        with open(inp, "w") as f:
            f.write('{"execute": "qmp_capabilities"}\n{"execute": "query-version", "id": 1}\n')
        out = os.path.join(d, "out")
        p = subprocess.Popen([BLOCKD, "--chardev", f"file,id=f,path={out},input-path={inp}",
                              "--monitor", "f"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            lines = open(out).read().splitlines() if os.path.exists(out) else []
            if len(lines) >= 3:
                break
            time.sleep(0.05)
        p.kill()
        p.wait()
        msgs = [json.loads(x) for x in lines]
        assert "QMP" in msgs[0] and msgs[1] == {"return": {}} and msgs[2]["id"] == 1
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("args", [
    ["--object", "help"],
    ["--object", "iothread,help"],
    ["--object", "qom-type=iothread,?"],
    ["--object", "iothread,id=i,thread-pool-min=5,thread-pool-max=2"],
    ["--object", "iothread,id=i,thread-pool-max=-1"],
    ["--blockdev", "help"],
    ["--export", "help"],
    ["--monitor", "help"],
    ["--nbd-server", "help"],
    ["--chardev", "foo,id=x"],
])
def test_help_and_option_errors_match(args):
    """Same output and exit status (blockd lists only the object types it
    has, all of which qemu-storage-daemon lists)."""
    runs = []
    for prog in (QSD, BLOCKD):
        r = subprocess.run([prog] + args, capture_output=True, text=True, timeout=10)
        text = (r.stdout + r.stderr).replace(os.path.basename(prog) + ":", "PROG:")
        runs.append((r.returncode, text))
    if args == ["--object", "help"]:
        ours = OBJECT_TYPES
        assert runs[1] == (0, "List of user creatable objects:\n" +
                           "".join(f"  {t}\n" for t in ours))
        assert all(f"  {t}\n" in runs[0][1] for t in ours if t not in BEYOND_QSD)
    else:
        assert runs[1] == runs[0]


def test_implied_keys_are_accepted(tmp_path):
    """--blockdev's first word is the driver, as qemu-storage-daemon reads
    it (--export, --chardev, --object and --monitor have theirs too)."""
    img = tmp_path / "x.img"
    img.write_bytes(b"\0" * 65536)
    d = short_dir()
    try:
        sock = os.path.join(d, "q.sock")
        p = subprocess.Popen([BLOCKD, "--blockdev", f"file,node-name=f0,filename={img}",
                              "--blockdev", "raw,node-name=r0,file=f0",
                              "--chardev", f"socket,id=m,path={sock},server=on,wait=off",
                              "--monitor", "m",
                              "--object", "iothread,id=io0",
                              "--nbd-server", f"addr.type=unix,addr.path={d}/n.sock",
                              "--export", "nbd,id=e0,node-name=r0"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        q = QMP(sock)
        names = {n["node-name"]: n["drv"] for n in q.cmd("query-named-block-nodes")}
        assert names == {"f0": "file", "r0": "raw"}
        assert [e["id"] for e in q.cmd("query-block-exports")] == ["e0"]
        p.kill()
        p.wait()
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_help_names_every_option():
    out = subprocess.run([BLOCKD, "--help"], capture_output=True, text=True).stdout
    for opt in ("--blockdev", "--chardev", "--export", "--monitor", "--nbd-server",
                "--object", "--pidfile", "--daemonize", "thread-pool-min"):
        assert opt in out, opt


def test_deprecated_nbd_server_add_matches(pair):
    """nbd-server-add / -remove as older scripts use them, and exports
    refused while no NBD server runs."""
    peers = pair("--blockdev", "null-co,node-name=n0,size=1048576",
                 "--blockdev", "raw,node-name=r0,file=n0")
    same_session(peers, [
        ("nbd-server-add", {"device": "r0"}),
        ("block-export-add", {"type": "nbd", "id": "e0", "node-name": "r0"}),
        ("nbd-server-start", {"addr": {"type": "unix", "data": {"path": "@DIR@/n.sock"}}}),
        ("nbd-server-add", {"device": "r0"}),
        ("nbd-server-add", {"device": "r0", "name": "other", "writable": True,
                            "description": "d"}),
        ("nbd-server-add", {"device": "nope"}),
        ("nbd-server-add", {"device": "r0", "name": "b", "bitmap": "b"}),
        ("nbd-server-remove", {"name": "r0"}),
        ("nbd-server-remove", {"name": "r0"}),
        ("nbd-server-remove", {"name": "other", "mode": "hard"}),
        ("block-export-add", {"type": "nbd", "id": "e1", "node-name": "r0"}),
        ("nbd-server-remove", {"name": "r0"}),
        ("query-block-exports", None),
    ])


def test_debug_block_graph(pair):
    """x-debug-query-block-graph: the nodes, the export's backend and the
    edges between them, as qemu-storage-daemon draws them."""
    peers = pair("--blockdev", "null-co,node-name=n0,size=1048576",
                 "--blockdev", "raw,node-name=r0,file=n0",
                 "--nbd-server", "addr.type=unix,addr.path=@DIR@/n.sock",
                 "--export", "nbd,id=e0,node-name=r0,writable=on")
    graphs = []
    for q, _ in peers:
        g = q.cmd("x-debug-query-block-graph")
        names = {n["id"]: (n["type"], n["name"]) for n in g["nodes"]}
        graphs.append((sorted(names.values()),
                       sorted((names[e["parent"]], names[e["child"]], e["name"],
                               tuple(e["perm"])) for e in g["edges"])))
    assert graphs[1] == graphs[0]


def test_stdio_monitor_reading_a_file(tmp_path):
    """Standard input may be a file (epoll cannot watch one): the commands
    in it run, the replies come out, quit ends the daemon."""
    cmds = tmp_path / "cmds"
    cmds.write_text('{"execute": "qmp_capabilities"}\n{"execute": "query-version", "id": 1}\n'
                    '{"execute": "quit"}\n')
    with open(cmds) as f:
        r = subprocess.run([BLOCKD, "--chardev", "stdio,id=s", "--monitor", "s"], stdin=f,
                           capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    msgs = [json.loads(x) for x in r.stdout.splitlines()]
    assert "QMP" in msgs[0] and msgs[1] == {"return": {}} and msgs[2]["id"] == 1
    assert msgs[3] == {"return": {}}
    r = subprocess.run([BLOCKD, "--daemonize", "--chardev", "stdio,id=s", "--monitor", "s"],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=20)
    assert r.returncode == 1
    assert "cannot use stdio with --daemonize" in r.stderr


def test_chardev_add_socket_defaults(pair):
    """chardev-add's socket is a server that does not wait unless told
    otherwise (QMP's defaults), and waiting is refused at run time."""
    (qsd, dq), (ours, do) = pair()
    for q, d in ((qsd, dq), (ours, do)):
        q.cmd("chardev-add", id="s", backend={"type": "socket", "data": {
            "addr": {"type": "unix", "data": {"path": d + "/s.sock"}}}})
        info = [c for c in q.cmd("query-chardev") if c["label"] == "s"][0]
        assert info["filename"] == f"disconnected:unix:{d}/s.sock,server=on"
    r = ours.execute("chardev-add", {"id": "w", "backend": {"type": "socket", "data": {
        "addr": {"type": "unix", "data": {"path": do + "/w.sock"}}, "wait": True}}})
    assert "'wait' is only possible at startup" in r["error"]["desc"]


def test_large_reply_is_delivered(pair):
    """One reply larger than the monitor's backlog limit still arrives (the
    limit is on what a client leaves unread)."""
    (_, _), (q, _) = pair("--chardev", "ringbuf,id=r,size=33554432")
    data = "a" * (20 * 1024 * 1024)
    q.cmd("ringbuf-write", device="r", data=data)
    q.sock.settimeout(60)
    assert q.cmd("ringbuf-read", device="r", size=1 << 30) == data


def test_second_monitor_at_run_time(pair):
    """x-monitor-add (blockd's own): a QMP monitor on a chardev added at run
    time serves a client, and both monitors see events."""
    (_, _), (q, d) = pair()
    path = os.path.join(d, "m2.sock")
    q.cmd("chardev-add", id="m2", backend={"type": "socket", "data": {
        "addr": {"type": "unix", "data": {"path": path}}}})
    r = q.execute("x-monitor-add", {"chardev": "nope"})
    assert r["error"]["desc"] == 'chardev "nope" not found'
    q.cmd("x-monitor-add", chardev="m2")
    r = q.execute("x-monitor-add", {"chardev": "m2"})
    assert r["error"]["desc"] == "Chardev 'm2' is busy"
    q2 = QMP(path)
    assert q2.cmd("query-version")
    q2.cmd("blockdev-add", driver="null-co", node_name="n", size=1048576)
    q2.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": d + "/n.sock"}})
    q2.cmd("block-export-add", type="nbd", id="e", node_name="n")
    q2.cmd("block-export-del", id="e")
    for m in (q, q2):
        m.cmd("query-version")
        assert [e for e in m.events if e["event"] == "BLOCK_EXPORT_DELETED"]
    r = q.execute("chardev-remove", {"id": "m2"})
    assert r["error"]["desc"] == "Chardev 'm2' is busy"


def thread_context_session(q):
    out = []
    for args in ({"cpu-affinity": [0]}, {"cpu-affinity": [0, 1]}, {"cpu-affinity": [9999]},
                 {"node-affinity": [0]}, {"node-affinity": [7]}, {},
                 {"cpu-affinity": [0], "node-affinity": [0]}):
        r = q.execute("object-add", {"qom-type": "thread-context", "id": "tc", **args})
        if "error" not in r:
            r = (q.cmd("qom-get", path="tc", property="cpu-affinity"),
                 q.cmd("qom-get", path="tc", property="thread-id") > 0,
                 q.execute("qom-get", {"path": "tc", "property": "node-affinity"}))
            q.cmd("object-del", id="tc")
        out.append(r)
    q.cmd("object-add", qom_type="thread-context", id="tc")
    out.append(q.execute("qom-set", {"path": "tc", "property": "cpu-affinity", "value": [1]}))
    out.append(q.execute("qom-get", {"path": "tc", "property": "cpu-affinity"}))
    out.append(q.execute("qom-set", {"path": "tc", "property": "thread-id", "value": 1}))
    # qcow2's overlap-check: the modes and flags qemu-storage-daemon takes.
    for oc in ("none", "all", "bogus", {"template": "none", "main-header": True},
               {"bogus": 1}):
        out.append(q.execute("blockdev-add", {"driver": "qcow2", "node-name": "x",
                                              "overlap-check": oc,
                                              "file": {"driver": "null-co"}}))
    return out


def test_thread_context_and_overlap_check_match(pair):
    if os.cpu_count() < 2:
        pytest.fail("the thread-context test needs two CPUs")
    theirs, ours = [thread_context_session(q) for q, d in pair()]
    assert ours[0] == ([0], True, ours[0][2])
    assert ours == theirs
