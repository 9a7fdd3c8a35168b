"""Malformed and hostile QMP input: every case gets an error reply or a
clean disconnect, and the daemon keeps serving the next client."""
import json
import socket

import pytest

from qmp import QMP
from test_qmp import qmp_daemon  # noqa: F401  (fixture)

CASES = {
    "truncated": b'{"execute": "query-ver',
    "truncated-then-close": b'{"execute": "query-version", "arguments": {"a": [1, 2',
    "deep-nesting": b'{"execute": "query-version", "arguments": ' + b'[' * 10000 + b']' * 10000 + b'}\n',
    "deep-objects": b'{"a":' * 10000 + b'1' + b'}' * 10000 + b'\n',
    "huge-string": b'{"execute": "' + b'x' * (10 * 1024 * 1024) + b'"}\n',
    "invalid-utf8": b'{"execute": "query-\xff\xfeversion"}\n',
    "wrong-type-args": b'{"execute": "blockdev-add", "arguments": {"driver": 42}}\n',
    "unknown-keys": b'{"execute": "query-version", "bogus": true}\n',
    "not-json": b'hello there\n',
    "nul-bytes": b'{"execute"\x00: "quit"}\n',
    "number": b'12345\n',
    "empty-object": b'{}\n',
    "nested-args-garbage": b'{"execute": "blockdev-add", "arguments": {"driver": "null-co", '
                           b'"node-name": {"x": [null, true]}}}\n',
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_input(qmp_daemon, name):  # noqa: F811
    d, sock = qmp_daemon()
    q = QMP(sock)
    q.send_raw(CASES[name])
    # Either an error reply...
    try:
        q.sock.settimeout(1)
        reply = q.reply()
        assert "error" in reply, reply
        assert reply["error"]["class"] in ("GenericError", "CommandNotFound")
    except (EOFError, ConnectionResetError, socket.timeout):
        # ...or a disconnect, or waiting for the rest of a truncated message.
        pass
    q.close()
    # The daemon serves the next client, and nothing was added.
    q2 = QMP(sock)
    assert q2.cmd("query-version")
    assert q2.cmd("query-named-block-nodes") == []
    q2.close()
    assert d.proc.poll() is None


def test_pipelined_flood_without_reading(qmp_daemon):  # noqa: F811
    """A client that sends many commands and never reads is cut off, not
    buffered for ever; the daemon keeps serving."""
    d, sock = qmp_daemon()
    q = QMP(sock)
    req = (json.dumps({"execute": "query-named-block-nodes"}) + "\n").encode() * 2000
    q.sock.setblocking(False)
    try:
        for _ in range(200):
            q.sock.send(req)
    except (BlockingIOError, BrokenPipeError, ConnectionResetError):
        pass
    q.close()
    q2 = QMP(sock)
    assert q2.cmd("query-version")
