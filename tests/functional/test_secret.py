"""secret and secret_keyring objects against qemu-storage-daemon: the same
errors for every way of giving a value wrongly, the same properties and
types.  On purpose, blockd never shows a secret's value (qom-get of
"data" is refused; qemu-storage-daemon returns it) and refuses qom-set of
a loaded secret (qemu-storage-daemon takes the new text and keeps using
the old value).  The values themselves: tests/unit/test-secret.c."""
import base64
import ctypes
import json


from test_bitmaps_persistent import Daemon
from test_qsd_compat import both_sessions

KEY = bytes(range(32))
IV = bytes(range(16))
# "hunter2", AES-256-CBC with KEY and IV, PKCS#7-padded (made once with
# `openssl enc -aes-256-cbc`; the unit test test-secret.c encrypts its own).
HUNTER2_CT = bytes.fromhex("e4e73577affd85ba4383bb100e93557f")


def keyring_serial(payload):
    """A user key in the session keyring (inherited by the daemons)."""
    libc = ctypes.CDLL(None, use_errno=True)
    serial = libc.syscall(248, b"user", b"blockd-test", payload, len(payload),
                          ctypes.c_int(-3))
    assert serial > 0, ctypes.get_errno()
    return serial


def session(prog, d):
    ct = HUNTER2_CT
    with open(f"{d}/ct.bin", "wb") as f:
        f.write(ct)
    with open(f"{d}/pw.txt", "w") as f:
        f.write("filepw")
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    # Before the daemon starts: the first key may create this process's
    # session keyring, which only children started afterwards share.
    serial = keyring_serial(b"ring")
    x = Daemon(prog, d, None)
    q = x.q
    out = []
    for a in ({"id": "s0", "data": "pw"}, {"id": "s1", "file": f"{d}/pw.txt"},
              {"id": "s2", "data": "x", "file": f"{d}/pw.txt"}, {"id": "s3"},
              {"id": "s4", "file": f"{d}/nope"},
              {"id": "s5", "data": "%%%", "format": "base64"},
              {"id": "k", "data": b64(KEY), "format": "base64"},
              {"id": "s6", "data": b64(ct), "format": "base64", "keyid": "k", "iv": b64(IV)},
              {"id": "s7", "file": f"{d}/ct.bin", "keyid": "k", "iv": b64(IV)},
              {"id": "s8", "data": b64(ct), "format": "base64", "keyid": "k"},
              {"id": "s9", "data": b64(ct), "format": "base64", "keyid": "nope", "iv": b64(IV)},
              {"id": "s10", "data": b64(ct), "format": "base64", "keyid": "s0", "iv": b64(IV)},
              {"id": "s11", "data": b64(ct), "format": "base64", "keyid": "k",
               "iv": b64(IV[:8])},
              {"id": "s12", "data": b64(ct), "keyid": "k", "iv": b64(IV)},
              {"id": "s0", "data": "again"}):
        out.append(q.execute("object-add", {"qom-type": "secret", **a}))
    out.append(q.execute("object-add", {"qom-type": "secret_keyring", "id": "kr",
                                        "serial": serial}))
    out.append(q.execute("object-add", {"qom-type": "secret_keyring", "id": "kr2",
                                        "serial": 0x7fff0000}))
    for prop in ("file", "format", "keyid", "iv", "loaded", "nope"):
        out.append(q.execute("qom-get", {"path": "/objects/s6", "property": prop}))
    out.append(q.execute("qom-get", {"path": "/objects/kr", "property": "serial"}) ==
               {"return": serial})
    out.append(q.execute("qom-set", {"path": "/objects/s0", "property": "loaded",
                                     "value": False}))
    out.append(sorted(json.dumps(p) for p in q.cmd("qom-list", path="/objects/s0")))
    for t in ("secret", "secret_keyring"):
        out.append(sorted(json.dumps(p) for p in q.cmd("qom-list-properties", typename=t)))
    out.append([t for t in q.cmd("qom-list-types", abstract=True) if "secret" in t["name"]])
    out.append(q.execute("object-del", {"id": "s0"}))
    mine = (q.execute("qom-get", {"path": "/objects/k", "property": "data"}),
            q.execute("qom-set", {"path": "/objects/s1", "property": "data", "value": "z"}))
    err = x.quit()
    return json.loads(json.dumps(out).replace(d, "@DIR@")), mine, err


def test_secrets_match_qsd():
    (ours, mine, err), (theirs, qsd_mine, _) = both_sessions(session)
    assert ours == theirs
    assert mine[0]["error"]["desc"] == "Property 'secret.data' is not readable"
    assert qsd_mine[0] == {"return": base64.b64encode(KEY).decode()}
    assert "error" in mine[1] and qsd_mine[1] == {"return": {}}
    assert "filepw" not in err and "hunter2" not in err
