"""QMP protocol and commands against the real daemon."""
import json
import os
import socket

import pytest

from qmp import QMP, QMPError


@pytest.fixture
def qmp_daemon(blockd, tmp_path):
    """blockd with one QMP monitor; returns (daemon, socket path)."""
    sock = str(tmp_path / "qmp.sock")

    def start(*extra):
        d = blockd("--chardev", f"socket,id=mon0,path={sock},server=on,wait=off",
                   "--monitor", "chardev=mon0", *extra)
        d.wait_ready()
        return d, sock
    return start


def test_greeting_and_negotiation(qmp_daemon):
    d, sock = qmp_daemon()
    q = QMP(sock, negotiate=False)
    assert q.greeting["QMP"]["version"]["qemu"]["major"] >= 7
    assert "capabilities" in q.greeting["QMP"]
    assert q.error("query-version") == (
        "CommandNotFound", "Expecting capabilities negotiation with 'qmp_capabilities'")
    assert q.cmd("qmp_capabilities") == {}
    assert q.error("qmp_capabilities") == (
        "CommandNotFound", "Capabilities negotiation is already complete, command ignored")
    assert q.error("no-such-command")[0] == "CommandNotFound"
    v = q.cmd("query-version")
    assert "qemu" in v and "package" in v
    names = {c["name"] for c in q.cmd("query-commands")}
    assert {"blockdev-add", "blockdev-del", "query-named-block-nodes", "quit"} <= names


def test_id_is_echoed(qmp_daemon):
    d, sock = qmp_daemon()
    q = QMP(sock)
    assert q.execute("query-version", id="abc")["id"] == "abc"
    assert q.execute("no-such", id={"x": [1]})["id"] == {"x": [1]}


@pytest.mark.parametrize("raw,desc", [
    ('[1, 2]\n', "QMP input must be a JSON object"),
    ('{"exec": 1}\n', "QMP input member 'exec' is unexpected"),
    ('{"id": 1}\n', "QMP input lacks member 'execute'"),
    ('{"execute": 1}\n', "QMP input member 'execute' must be a string"),
    ('{"execute": "query-version", "arguments": []}\n',
     "QMP input member 'arguments' must be an object"),
])
def test_envelope_errors(qmp_daemon, raw, desc):
    d, sock = qmp_daemon()
    q = QMP(sock)
    q.send_raw(raw)
    r = q.reply()
    assert r["error"] == {"class": "GenericError", "desc": desc}
    assert q.cmd("query-version")


def test_split_and_batched_messages(qmp_daemon):
    d, sock = qmp_daemon()
    q = QMP(sock)
    msg = '{"execute": "query-version", "id": 1}'
    for ch in msg:
        q.send_raw(ch)
    q.send_raw("\n")
    assert q.reply()["id"] == 1
    q.send_raw('{"execute":"query-version","id":2}{"execute":"query-version","id":3}\n')
    assert q.reply()["id"] == 2
    assert q.reply()["id"] == 3


def test_blockdev_add_query_del(qmp_daemon, tmp_path):
    d, sock = qmp_daemon()
    q = QMP(sock)
    img = tmp_path / "disk.img"
    img.write_bytes(b"\0" * 1048576)
    q.cmd("blockdev-add", driver="file", node_name="file0", filename=str(img))
    q.cmd("blockdev-add", driver="raw", node_name="disk0", file="file0")
    nodes = {n["node-name"]: n for n in q.cmd("query-named-block-nodes")}
    assert nodes["disk0"]["drv"] == "raw"
    assert nodes["disk0"]["image"]["virtual-size"] == 1048576
    assert nodes["file0"]["file"] == str(img)
    assert nodes["disk0"]["ro"] is False
    # In use by disk0: cannot go first.
    assert q.error("blockdev-del", {"node-name": "file0"})[0] == "GenericError"
    q.cmd("blockdev-del", node_name="disk0")
    q.cmd("blockdev-del", node_name="file0")
    assert q.cmd("query-named-block-nodes") == []


@pytest.mark.parametrize("args,desc", [
    ({"driver": "null-co"}, "'node-name' must be specified for the root node"),
    ({"node-name": "n"}, "Parameter 'driver' is missing"),
    ({"driver": "null-co", "node-name": "n", "foo": 1}, "Parameter 'foo' is unexpected"),
    ({"driver": "null-co", "node-name": "n", "size": "x"},
     "Invalid parameter type for 'size', expected: integer"),
    ({"driver": "nosuch", "node-name": "n"}, "Parameter 'driver' does not accept value 'nosuch'"),
    ({"driver": "file", "node-name": "n", "filename": "/nonexistent/x"},
     "Could not open '/nonexistent/x': No such file or directory"),
    ({"driver": "file", "node-name": "n"}, "Parameter 'filename' is missing"),
])
def test_blockdev_add_errors(qmp_daemon, args, desc):
    d, sock = qmp_daemon()
    q = QMP(sock)
    assert q.error("blockdev-add", args) == ("GenericError", desc)
    assert q.cmd("query-named-block-nodes") == []


def test_blockdev_del_errors(qmp_daemon):
    d, sock = qmp_daemon()
    q = QMP(sock)
    assert q.error("blockdev-del", {"node-name": "zz"}) == (
        "GenericError", "Failed to find node with node-name='zz'")
    assert q.error("blockdev-del", {})[1] == "Parameter 'node-name' is missing"


def test_duplicate_node_name(qmp_daemon):
    d, sock = qmp_daemon()
    q = QMP(sock)
    q.cmd("blockdev-add", driver="null-co", node_name="n")
    assert q.error("blockdev-add", {"driver": "null-co", "node-name": "n"})[1] == \
        "Duplicate nodes with node-name='n'"


def test_iothreads(qmp_daemon):
    d, sock = qmp_daemon("--object", "iothread,id=io0,poll-max-ns=0")
    q = QMP(sock)
    q.cmd("object-add", qom_type="iothread", id="io1")
    threads = {t["id"]: t for t in q.cmd("query-iothreads")}
    assert set(threads) == {"io0", "io1"}
    assert threads["io0"]["poll-max-ns"] == 0
    assert threads["io1"]["thread-id"] > 0
    assert q.error("object-add", {"qom-type": "iothread", "id": "io1"})[0] == "GenericError"
    q.cmd("object-del", id="io1")
    assert q.error("object-del", {"id": "io1"})[1] == "object 'io1' not found"
    assert [t["id"] for t in q.cmd("query-iothreads")] == ["io0"]


def test_quit(qmp_daemon):
    d, sock = qmp_daemon()
    q = QMP(sock)
    assert q.cmd("quit") == {}
    assert d.proc.wait(timeout=10) == 0
    assert not os.path.exists(sock)


def test_malformed_json_keeps_connection(qmp_daemon):
    d, sock = qmp_daemon()
    q = QMP(sock)
    q.send_raw('{"execute": "query-version",,}\n')
    r = q.reply()
    assert r["error"]["class"] == "GenericError"
    assert r["error"]["desc"].startswith("JSON parse error")
    # The connection still works afterwards.
    assert "return" in q.execute("query-version")


def test_client_disconnect_mid_message_then_reconnect(qmp_daemon):
    d, sock = qmp_daemon()
    q = QMP(sock)
    q.send_raw('{"execute": "query-ver')
    q.close()
    q2 = QMP(sock)
    assert q2.cmd("query-version")
