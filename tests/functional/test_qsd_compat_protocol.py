"""QMP's wire protocol against qemu-storage-daemon: the same bytes in give
the same replies out, malformed input included (one error per bad value,
then the next command runs), out-of-band negotiation, ids of every JSON
type, and the events before quit's reply."""
import json
import os
import socket
import time

import pytest

from qmp import QMP
from test_qsd_compat import peers  # noqa: F401  (fixture)

VERSION_ID = "sentinel"


def exchange(peer, data, timeout=10):
    """Send @data, then a sentinel command; the replies before the
    sentinel's, each reduced to what must match."""
    q = peer.qmp
    q.send_raw(data)
    q.send_raw(json.dumps({"execute": "query-version", "id": VERSION_ID}) + "\n")
    out = []
    q.sock.settimeout(timeout)
    while True:
        r = q.reply()
        if r.get("id") == VERSION_ID and "return" in r:
            return out
        if "return" in r and "qemu" in r["return"]:
            r = dict(r, **{"return": "version"})
        out.append(r)


# Each case: bytes sent on a negotiated monitor.  The replies (errors with
# their text, returns with their ids) must equal qemu-storage-daemon's.
CASES = {
    "empty-value-then-command": b'{"execute": \n}\n{"execute": "query-version", "id": null}\n',
    "stray-close-brace": b'{"execute":"query-version","id":1}\n}\n',
    "stray-close-bracket": b'\n]\n',
    "unterminated-string": b'{"execute":"query-version","id":"a\n{"execute":"query-version","id":2}\n',
    "nan": b'{"execute":"query-version","id":NaN}\n',
    "infinity": b'{"execute":"query-version","id":Infinity}\n',
    "lowercase-nan": b'{"execute":"query-version","id":nan}\n',
    "trailing-commas": b'{"execute":"query-version","id":[1,2,],}\n',
    "comment": b'{"execute":"query-version",/*c*/"id":3}\n',
    "duplicate-key": b'{"execute":"query-version","id":4,"id":5}\n',
    "raw-tab-in-string": b'{"execute":"query-version","id":"a\tb"}\n',
    "raw-newline-in-string": b'{"execute":"query-version","id":"a\nb"}\n',
    "big-integer": b'{"execute":"query-version","id":123456789012345678901234567890}\n',
    "uint64-id": b'{"execute":"query-version","id":18446744073709551615}\n',
    "below-int64": b'{"execute":"query-version","id":-9223372036854775809}\n',
    "encoded-surrogate": b'{"execute":"query-version","id":"\xed\xa0\x80"}\n',
    "escaped-lone-surrogate": b'{"execute":"query-version","id":"\\ud800"}\n',
    "escaped-noncharacter": b'{"execute":"query-version","id":"\\uffff"}\n',
    "surrogate-pair": b'{"execute":"query-version","id":"\\ud83d\\ude00\xc3\xa9"}\n',
    "overlong": b'{"execute":"query-version","id":"\xe0\x80\xaf"}\n',
    "beyond-unicode": b'{"execute":"query-version","id":"\xf4\x90\x80\x80"}\n',
    "modified-utf8-nul": b'{"execute":"query-version","id":"\xc0\x80"}\n',
    "escaped-nul": b'{"execute":"query-version","id":"\\u0000"}\n',
    "bad-escape": b'{"execute":"query-version","id":"\\x"}\n',
    "single-quotes": b"{'execute':'query-version','id':'sq'}\n",
    "byte-ff-resyncs": b'\xff{"execute":"query-version","id":10}\n',
    "invalid-byte-in-string": b'{"execute":"query-version","id":"\xff"}\n',
    "leading-zero": b'{"execute":"query-version","id":01}\n',
    "minus-alone": b'{"execute":"query-version","id":-}\n',
    "bad-fraction": b'{"execute":"query-version","id":1.}\n',
    "bad-exponent": b'{"execute":"query-version","id":1e}\n',
    "exponent": b'{"execute":"query-version","id":1E+2}\n',
    "unbalanced-swallows-until-error": (b'{"execute":"query-version","id":[}\n'
                                        b'{"execute":"query-version","id":6}\n\xff\n'),
    "missing-separator": b'{"execute":"query-version" "id":1}\n',
    "missing-colon": b'{"execute":"query-version","id"}\n',
    "nesting-limit": b'[' * 1025 + b'\n',
    "not-an-object": b'[1]\n"x"\n42\n',
    "object-id": b'{"execute":"query-version","id":{"a":null}}\n',
    "null-id": b'{"execute":"query-version","id":null,"arguments":{}}\n',
    "arguments-not-object": b'{"execute":"query-version","arguments":[]}\n',
    "execute-not-string": b'{"execute":1}\n',
    "unknown-member": b'{"execute":"query-version","foo":1}\n',
    "empty-object": b'{}\n',
    "id-without-execute": b'{"id":5}\n',
    "exec-oob-not-negotiated": b'{"exec-oob":"query-version","id":7}\n',
    "several-in-one-read": b'{"execute":"query-version","id":1}{"execute":"query-version","id":2}\n',
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_same_replies_to_the_same_bytes(peers, name):  # noqa: F811
    qsd, ours = (exchange(p, CASES[name]) for p in peers)
    assert ours == qsd, name


def test_number_beyond_double_is_refused(peers):  # noqa: F811
    """A deliberate difference (README): qemu-storage-daemon answers with
    "id": inf, which is not JSON; blockd refuses the number."""
    data = b'{"execute":"query-version","id":1e400}\n'
    qsd = raw_lines(peers[0], data, 1)
    assert qsd[0].endswith(b'"id": inf}'), qsd
    ours = exchange(peers[1], data)
    assert ours == [{"error": {"class": "GenericError",
                               "desc": "JSON parse error, number out of range"}}]


def raw_lines(peer, data, count, timeout=5):
    """Send @data, read @count replies as raw lines (unparsed)."""
    q = peer.qmp
    q.send_raw(data)
    q.sock.settimeout(timeout)
    lines = []
    while len(lines) < count:
        while b"\n" not in q.buf:
            chunk = q.sock.recv(65536)
            if not chunk:
                raise EOFError
            q.buf += chunk
        line, q.buf = q.buf.split(b"\n", 1)
        if line.strip():
            lines.append(line.rstrip(b"\r"))
    return lines


def test_output_is_valid_json_and_utf8(peers):  # noqa: F811
    """Every byte blockd writes is strict JSON in valid UTF-8, whatever was
    echoed back (ids, stray bytes in error messages)."""
    ours = peers[1]
    data = (b'\xff\xfe{"execute":"query-version","id":"\\ud83d\\ude00"}\n'
            b'{"execute":"query-version","id":"\xc0\x80"}\n'
            b'{"execute":"query-version","id":-9223372036854775809}\n')
    for line in raw_lines(ours, data, 4):
        text = line.decode("utf-8")          # strict: raises on invalid UTF-8

        def refuse(c):
            raise ValueError(f"non-JSON constant {c} in {text!r}")
        json.loads(text, parse_constant=refuse)


def test_oob_negotiation_matches(peers):  # noqa: F811
    """The greeting offers "oob"; once enabled, exec-oob is refused for
    every command (qemu-storage-daemon allows none out of band), and
    in-band commands keep their order."""
    greetings = [p.qmp.greeting["QMP"]["capabilities"] for p in peers]
    assert greetings == [["oob"], ["oob"]]
    out = []
    for p in peers:
        p.qmp.close()
        q = QMP(os.path.join(p.dir, "qmp.sock"), negotiate=False)
        replies = [q.execute("qmp_capabilities", {"enable": ["oob"]})]
        for req in ({"exec-oob": "query-version", "id": 1},
                    {"exec-oob": "nosuch", "id": 2},
                    {"exec-oob": "query-version", "execute": "query-version", "id": 3},
                    {"exec-oob": 5, "id": 4},
                    {"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}):
            q.send_raw(json.dumps(req) + "\n")
            replies.append(q.reply())
        q.send_raw(b''.join(json.dumps({"execute": "query-commands", "id": i}).encode()
                            + b"\n" for i in range(20)))
        ids = [q.reply()["id"] for _ in range(20)]
        assert ids == list(range(20))
        out.append(replies)
        p.qmp = q
    assert out[1] == out[0]


def test_quit_deletes_exports_before_its_reply(peers):  # noqa: F811
    seqs = []
    for p in peers:
        sock = p.dir + "/nbd.sock"
        p.qmp.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": sock}})
        p.qmp.cmd("block-export-add", type="nbd", id="e0", node_name="src")
        p.qmp.send_raw(b'{"execute":"quit"}\n')
        seq = []
        while True:
            m = p.qmp.recv()
            seq.append(m.get("event") or ("return" if "return" in m else m))
            if "return" in m:
                break
        p.proc.wait(timeout=10)
        seqs.append(seq)
    assert seqs[1] == seqs[0] == ["BLOCK_EXPORT_DELETED", "return"]


def test_garbage_does_not_stall_the_main_loop(peers):  # noqa: F811
    """Every input byte is looked at once: a burst of malformed lines gets a
    bounded number of errors, and the monitor answers right after."""
    ours = peers[1]
    junk = b'{"execute":"query-version","id":1}\n}\n\n]\n{"execute": \n}\n' * 200
    start = time.monotonic()
    replies = exchange(ours, junk)
    assert time.monotonic() - start < 5
    assert len(replies) == 4 * 200
    # Nothing more arrives after the sentinel's reply.
    ours.qmp.sock.settimeout(0.5)
    with pytest.raises(socket.timeout):
        ours.qmp.sock.recv(1)
