"""The NBD server over TLS (tls-creds, tls-authz) against real clients --
qemu-io and qemu-img with QEMU's TLS objects, nbdinfo with nbds:// URIs --
and against qemu-storage-daemon: the same clients get in, the same
impostors (no TLS, another CA's certificate, a name the authorization
list does not allow, a wrong pre-shared key) are refused, and the
server goes on serving the others.  Before STARTTLS every option gets
NBD_REP_ERR_TLS_REQD, as there."""
import json
import os
import shutil
import socket
import struct
import subprocess
import time

import pytest

from conftest import BLOCKD
from nbdutil import MiB, RawClient, short_dir, sparse_image
from qmp import QMP
from test_bitmaps_persistent import Daemon
from test_qsd_compat import QSD
from tlsutil import free_port, make_pki

NBD_OPT_ABORT, NBD_OPT_LIST, NBD_OPT_STARTTLS, NBD_OPT_GO = 2, 3, 5, 7
NBD_REP_ACK, NBD_REP_ERR_INVALID, NBD_REP_ERR_TLS_REQD = 1, (1 << 31) | 3, (1 << 31) | 5


@pytest.fixture(scope="module")
def pki():
    d = short_dir()
    yield make_pki(d)
    shutil.rmtree(d, ignore_errors=True)


class TlsServer:
    """A daemon (@prog) exporting a 16 MiB image as "disk" on a TCP port
    with @objects and @server_opts (tls-creds=..., tls-authz=...)."""

    def __init__(self, prog, d, objects, server_opts, export_opts=""):
        self.d = d
        self.port = free_port()
        self.img = sparse_image(f"{d}/disk.raw", 16 * MiB)
        args = [prog, "--chardev", f"socket,id=m,path={d}/qmp.sock,server=on,wait=off",
                "--monitor", "chardev=m"]
        for o in objects:
            args += ["--object", o]
        args += ["--blockdev", f"driver=file,node-name=disk,filename={self.img}",
                 "--nbd-server", f"addr.type=inet,addr.host=127.0.0.1,addr.port={self.port}"
                 + "".join("," + o for o in server_opts),
                 "--export", "type=nbd,id=e,node-name=disk,writable=on" + export_opts]
        self.p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.q = QMP(f"{d}/qmp.sock")

    def quit(self):
        self.q.execute("quit")
        self.p.wait(30)
        return self.p.stderr.read().decode()


class NbdkitTls:
    """nbdkit's TLS server (the memory plugin) with the same certificates,
    or the same PSK file."""

    def __init__(self, x509_dir=None, psk_file=None):
        self.port = free_port()
        args = ["nbdkit", "-f", "-i", "127.0.0.1", "-p", str(self.port), "--tls=require"]
        args += ([f"--tls-certificates={x509_dir}", "--tls-verify-peer"] if x509_dir
                 else [f"--tls-psk={psk_file}"])
        self.p = subprocess.Popen(args + ["memory", "16M"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and self.p.poll() is None
                time.sleep(0.05)

    def quit(self):
        self.p.kill()
        self.p.wait()
        return ""


def tls_server(kind, d, pki, psk=False):
    if kind == "nbdkit":
        return NbdkitTls(psk_file=f"{pki['psk-srv']}/keys.psk") if psk \
            else NbdkitTls(x509_dir=pki["srv"])
    obj = (f"tls-creds-psk,id=t0,dir={pki['psk-srv']},endpoint=server" if psk
           else x509(pki["srv"], "server"))
    return TlsServer(BLOCKD if kind == "blockd" else QSD, d, [obj], ["tls-creds=t0"])


def qemu_img_info(port, creds_obj):
    r = subprocess.run(["qemu-img", "info", "--object", creds_obj, "--image-opts",
                        "driver=nbd,server.type=inet,server.host=127.0.0.1,"
                        f"server.port={port},export=disk,tls-creds=t0,tls-hostname=localhost"],
                       capture_output=True, text=True, timeout=30)
    return r.returncode == 0 and "virtual size: 16 MiB" in r.stdout


def qemu_io(port, creds_obj, *cmds, hostname="localhost"):
    """qemu-io over NBD with the client credentials @creds_obj (QEMU's
    --object text with id=t0, or None for no TLS): (ok, output)."""
    opts = f"driver=nbd,server.type=inet,server.host=127.0.0.1,server.port={port},export=disk"
    args = ["qemu-io"]
    if creds_obj:
        args += ["--object", creds_obj]
        opts += f",tls-creds=t0,tls-hostname={hostname}"
    for c in cmds:
        args += ["-c", c]
    r = subprocess.run(args + ["--image-opts", opts], capture_output=True, text=True,
                       timeout=30)
    out = r.stdout + r.stderr
    return r.returncode == 0 and "fail" not in out, out


def nbdinfo(uri):
    r = subprocess.run(["nbdinfo", "--json", uri], capture_output=True, text=True, timeout=30)
    return r.returncode == 0, r.stdout + r.stderr


def x509(d, endpoint="client", extra=""):
    return f"tls-creds-x509,id=t0,dir={d},endpoint={endpoint}{extra}"


def outcomes(kind, pki):
    """Who gets in, over X.509 and over PSK, on the server of @kind
    (blockd, qsd or nbdkit): a list of booleans."""
    out = []
    d = short_dir()
    try:
        s = tls_server(kind, d, pki)
        ok, text = qemu_io(s.port, x509(pki["cli"]), "write -P 0x42 0 64k",
                           "read -P 0x42 0 64k")
        assert ok, text
        out.append(ok)
        out.append(qemu_io(s.port, None, "read 0 512")[0])                   # no TLS
        out.append(qemu_io(s.port, x509(pki["impostor"]), "read 0 512")[0])  # other CA
        # The server's certificate names localhost, not another host.
        out.append(qemu_io(s.port, x509(pki["cli"]), "read 0 512",
                           hostname="elsewhere")[0])
        # (Addresses, not "localhost": a fresh root may have no /etc/hosts;
        # the certificate names 127.0.0.1 too.)
        out.append(nbdinfo(f"nbds://127.0.0.1:{s.port}/disk?tls-certificates={pki['cli']}")[0])
        out.append(nbdinfo(f"nbd://127.0.0.1:{s.port}/disk")[0])
        out.append(qemu_img_info(s.port, x509(pki["cli"])))
        out.append(qemu_io(s.port, x509(pki["cli"]), "read -P 0x42 0 64k")[0])  # still serving
        err = s.quit()
        assert "Sanitizer" not in err, err
        s = tls_server(kind, d, pki, psk=True)
        psk = "tls-creds-psk,id=t0,dir=%s,endpoint=client,username=alice"
        out.append(qemu_io(s.port, psk % pki["psk-cli"], "read 0 512")[0])
        out.append(qemu_io(s.port, psk % pki["psk-bad"], "read 0 512")[0])
        out.append(nbdinfo(f"nbds://alice@127.0.0.1:{s.port}/disk?"
                           f"tls-psk-file={pki['psk-cli']}/keys.psk")[0])
        out.append(qemu_io(s.port, psk % pki["psk-cli"], "read 0 512")[0])
        err = s.quit()
        assert "Sanitizer" not in err, err
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return out


@pytest.mark.parametrize("peer", ["qsd", "nbdkit"])
def test_clients_and_impostors_as_peers(pki, peer):
    """The same clients get in, the same impostors are refused, as with
    qemu-storage-daemon's and nbdkit's TLS servers."""
    ours = outcomes("blockd", pki)
    assert ours == [True, False, False, False, True, False, True, True,
                    True, False, True, True], ours
    assert ours == outcomes(peer, pki)


def authz_outcomes(prog, pki, d, objects, rule_file=None):
    s = TlsServer(prog, d, [x509(pki["srv"], "server")] + objects,
                  ["tls-creds=t0", "tls-authz=a0"])
    out = [qemu_io(s.port, x509(pki[c]), "read 0 512")[0] for c in ("cli", "cli2")]
    if rule_file:
        # authz-listfile re-reads a changed file: now client2 too.
        time.sleep(0.01)
        with open(rule_file, "w") as f:
            json.dump({"policy": "deny", "rules": [{"match": "*CN=client*", "policy": "allow",
                                                    "format": "glob"}]}, f)
        out += [qemu_io(s.port, x509(pki[c]), "read 0 512")[0] for c in ("cli", "cli2")]
    err = s.quit()
    assert "Sanitizer" not in err, err
    return out


@pytest.mark.parametrize("kind", ["simple", "list", "listfile"])
def test_authorization(pki, kind):
    """Only the identities an authorization object allows get in (the
    certificate's distinguished name, written as QEMU writes it)."""
    # (qemu-storage-daemon 7.2 has no authz-listfile.)
    for prog in (BLOCKD,) if kind == "listfile" else (BLOCKD, QSD):
        d = short_dir()
        try:
            rule_file = None
            if kind == "simple":
                obj = "authz-simple,id=a0,identity=C=GB,,O=blockd,,CN=client1"
            elif kind == "list":
                obj = json.dumps({"qom-type": "authz-list", "id": "a0", "policy": "deny",
                                  "rules": [{"match": "C=GB,O=blockd,CN=client1",
                                             "policy": "allow"},
                                            {"match": "*", "policy": "deny",
                                             "format": "glob"}]})
            else:
                rule_file = f"{d}/rules.json"
                with open(rule_file, "w") as f:
                    json.dump({"policy": "deny",
                               "rules": [{"match": "*CN=client1", "policy": "allow",
                                          "format": "glob"}]}, f)
                obj = f"authz-listfile,id=a0,filename={rule_file},refresh=on"
            got = authz_outcomes(prog, pki, d, [obj], rule_file)
            assert got == ([True, False] + ([True, True] if rule_file else [])), (prog, got)
        finally:
            shutil.rmtree(d, ignore_errors=True)


def raw_session(prog, pki):
    d = short_dir()

    def connect():
        c = RawClient.__new__(RawClient)
        c.sock = socket.create_connection(("127.0.0.1", s.port), timeout=10)
        c.start()
        return c
    try:
        s = TlsServer(prog, d, [x509(pki["srv"], "server")], ["tls-creds=t0"])
        c = connect()
        out = [c.option(opt, data)[-1][0] for opt, data in (
            (NBD_OPT_LIST, b""),
            (NBD_OPT_GO, struct.pack(">I", 4) + b"disk" + struct.pack(">H", 0)),
            (NBD_OPT_ABORT, b""))]
        c.close()
        c = connect()                       # STARTTLS with data: told, then dropped
        out.append(c.option(NBD_OPT_STARTTLS, b"x")[-1][0])
        out.append(c.at_eof(timeout=5))
        c = connect()
        out.append(c.option(NBD_OPT_STARTTLS)[-1][0])
        c.close()
        err = s.quit()
        assert "Sanitizer" not in err, err
        return out
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_options_before_starttls_as_qsd(pki):
    ours = raw_session(BLOCKD, pki)
    assert ours == [NBD_REP_ERR_TLS_REQD] * 3 + [NBD_REP_ERR_INVALID, True, NBD_REP_ACK], ours
    assert ours == raw_session(QSD, pki)


def test_bad_credentials_are_refused(pki, tmp_path):
    d = short_dir()
    try:
        s = TlsServer(BLOCKD, d, [], [])
        q = s.q
        q.cmd("nbd-server-stop")
        for args in ({"qom-type": "tls-creds-x509", "id": "x", "dir": str(tmp_path),
                      "endpoint": "server"},
                     {"qom-type": "tls-creds-x509", "id": "x", "endpoint": "server"},
                     {"qom-type": "tls-creds-psk", "id": "x", "dir": str(tmp_path)},
                     {"qom-type": "tls-creds-x509", "id": "x", "dir": pki["cli"],
                      "endpoint": "bogus"}):
            r = q.execute("object-add", args)
            assert "error" in r and r["error"]["desc"], r
        q.cmd("object-add", qom_type="tls-creds-x509", id="c", dir=pki["cli"])
        r = q.execute("nbd-server-start", {"addr": {"type": "unix", "path": f"{d}/x.sock"},
                                           "tls-creds": "c"})
        assert "server endpoint" in r["error"]["desc"], r
        r = q.execute("nbd-server-start", {"addr": {"type": "unix", "path": f"{d}/x.sock"},
                                           "tls-creds": "nope"})
        assert "error" in r, r
        assert "Sanitizer" not in s.quit()
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_tls_connections_served_in_iothreads(pki):
    """The session moves with its connection to the export's iothreads;
    several clients at once, each reading back what it wrote."""
    d = short_dir()
    try:
        s = TlsServer(BLOCKD, d, [x509(pki["srv"], "server"), "iothread,id=io0",
                                  "iothread,id=io1"], ["tls-creds=t0"],
                      ",iothreads.0=io0,iothreads.1=io1")
        procs = [subprocess.Popen(
            ["qemu-io", "--object", x509(pki["cli"]), "-c", f"write -P {i + 1} {i}M 1M",
             "-c", f"read -P {i + 1} {i}M 1M", "--image-opts",
             f"driver=nbd,server.type=inet,server.host=127.0.0.1,server.port={s.port},"
             "export=disk,tls-creds=t0,tls-hostname=localhost"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(4)]
        for p in procs:
            out = p.communicate(timeout=60)[0]
            assert p.returncode == 0 and "fail" not in out, out
        err = s.quit()
        assert "Sanitizer" not in err and "ThreadSanitizer" not in err, err
    finally:
        shutil.rmtree(d, ignore_errors=True)


def driver_outcomes(prog, pki, server_prog):
    """An nbd node of daemon @prog, over TLS, on a server run by
    @server_prog: which configurations open, and the data written
    through the good one."""
    d = short_dir()
    try:
        s = TlsServer(server_prog, d, [x509(pki["srv"], "server")], ["tls-creds=t0"])
        x = Daemon(prog, d, None)
        q = x.q
        out = []
        q.cmd("object-add", qom_type="tls-creds-x509", id="c0", dir=pki["cli"],
              endpoint="client")
        # (An impostor's own certificate fails the sanity check at once.)
        out.append("error" in q.execute("object-add", {
            "qom-type": "tls-creds-x509", "id": "x", "dir": pki["impostor"],
            "endpoint": "client"}))
        q.cmd("object-add", qom_type="tls-creds-x509", id="imp", dir=pki["impostor"],
              endpoint="client", sanity_check=False)
        server = {"type": "inet", "host": "127.0.0.1", "port": str(s.port)}
        for n, extra in enumerate(({}, {"tls-creds": "imp", "tls-hostname": "localhost"},
                                   {"tls-creds": "c0", "tls-hostname": "elsewhere"},
                                   {"tls-hostname": "localhost"},
                                   {"tls-creds": "c0", "tls-hostname": "localhost"})):
            r = q.execute("blockdev-add", {"driver": "nbd", "node-name": f"n{n}",
                                           "server": server, "export": "disk", **extra})
            out.append("error" not in r)
        q.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": f"{d}/n.sock"}})
        q.cmd("block-export-add", type="nbd", id="e", node_name="n4", writable=True)
        r = subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 0x66 1M 1M",
                            "-c", "read -P 0x66 1M 1M", f"nbd+unix:///n4?socket={d}/n.sock"],
                           capture_output=True, text=True)
        out.append(r.returncode == 0 and "fail" not in r.stdout)
        assert "Sanitizer" not in x.quit()
        assert "Sanitizer" not in s.quit()
        with open(s.img, "rb") as f:
            f.seek(MiB)
            out.append(f.read(MiB) == b"\x66" * MiB)
        return out
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("server", ["blockd", "qsd"])
def test_nbd_driver_over_tls(pki, server):
    """blockd's nbd driver as a TLS client of blockd's and of
    qemu-storage-daemon's server, as qemu-storage-daemon's driver."""
    sprog = BLOCKD if server == "blockd" else QSD
    ours = driver_outcomes(BLOCKD, pki, sprog)
    assert ours == [True, False, False, False, False, True, True, True], ours
    assert ours == driver_outcomes(QSD, pki, sprog)


def gnutls_cli_qmp(port, client_dir):
    """gnutls-cli with the certificates of @client_dir as a QMP client:
    the JSON messages it received."""
    cli = subprocess.Popen(["gnutls-cli", f"--x509cafile={client_dir}/ca-cert.pem",
                            f"--x509certfile={client_dir}/client-cert.pem",
                            f"--x509keyfile={client_dir}/client-key.pem",
                            "-p", str(port), "127.0.0.1"],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL)
    for cmd in (b'{"execute": "qmp_capabilities"}\n', b'{"execute": "query-version"}\n'):
        time.sleep(0.3)
        try:
            cli.stdin.write(cmd)
            cli.stdin.flush()
        except BrokenPipeError:
            break
    time.sleep(0.3)
    msgs = []
    for line in cli.communicate(timeout=10)[0].decode().splitlines():
        try:
            msgs.append(json.loads(line))
        except ValueError:
            pass        # gnutls-cli's own report
    return msgs


def qmp_session_ok(msgs):
    return any("QMP" in m for m in msgs) and any("qemu" in m.get("return", {}) for m in msgs)


def qmp_over_tls(prog, pki, client_dir):
    """A QMP monitor on a TLS chardev: does a client (gnutls-cli) with the
    certificates of @client_dir get the greeting and an answer?"""
    port = free_port()
    p = subprocess.Popen([prog, "--object", x509(pki["srv"], "server"), "--chardev",
                          f"socket,id=m,host=127.0.0.1,port={port},server=on,wait=off,"
                          "tls-creds=t0", "--monitor", "chardev=m"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        # (qemu-storage-daemon 7.2 may never greet a client that connects
        # while its monitor is being set up: give it that time.)
        time.sleep(0.5)
        return qmp_session_ok(gnutls_cli_qmp(port, client_dir))
    finally:
        p.kill()
        p.wait()
        err = p.stderr.read().decode()
        assert "Sanitizer" not in err, err


def test_qmp_over_tls_as_qsd(pki):
    ours = [qmp_over_tls(BLOCKD, pki, pki[c]) for c in ("cli", "impostor")]
    assert ours == [True, False]
    assert ours == [qmp_over_tls(QSD, pki, pki[c]) for c in ("cli", "impostor")]


def qmp_client_over_tls(prog, pki, server_dir):
    """A monitor on a client chardev that connects out over TLS to a
    server (Python's ssl) with the certificates of @server_dir: does the
    server get the greeting and answers?"""
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(f"{server_dir}/server-cert.pem", f"{server_dir}/server-key.pem")
    ctx.load_verify_locations(f"{server_dir}/ca-cert.pem")
    ctx.verify_mode = ssl.CERT_REQUIRED
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    lsock.settimeout(10)
    port = lsock.getsockname()[1]
    p = subprocess.Popen([prog, "--object", x509(pki["cli"]), "--chardev",
                          f"socket,id=m,host=127.0.0.1,port={port},tls-creds=t0",
                          "--monitor", "chardev=m"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        conn, _ = lsock.accept()
        try:
            s = ctx.wrap_socket(conn, server_side=True)
            s.settimeout(10)
            f = s.makefile("rwb")
            greeting = json.loads(f.readline())
            f.write(b'{"execute": "qmp_capabilities"}\n')
            f.flush()
            reply = json.loads(f.readline())
            s.close()
            return "QMP" in greeting and reply == {"return": {}}
        except (ssl.SSLError, OSError, ValueError):
            return False
    finally:
        lsock.close()
        p.kill()
        p.wait()
        err = p.stderr.read().decode()
        assert "Sanitizer" not in err, err


def test_qmp_client_chardev_over_tls(pki):
    """Good when the server's certificate is from our CA; refused (by the
    daemon, which then has no monitor) when it is not."""
    other = f"{os.path.dirname(pki['srv'])}/other-srv"
    if not os.path.exists(other):
        os.makedirs(other)
        shutil.copy(f"{pki['impostor']}/client-cert.pem", f"{other}/server-cert.pem")
        shutil.copy(f"{pki['impostor']}/client-key.pem", f"{other}/server-key.pem")
        shutil.copy(f"{pki['srv']}/ca-cert.pem", f"{other}/ca-cert.pem")
    assert qmp_client_over_tls(BLOCKD, pki, pki["srv"]) is True
    assert qmp_client_over_tls(BLOCKD, pki, other) is False


def test_qmp_tls_chardev_one_client_at_a_time(pki):
    """wait=on: the first client is awaited, then haggles in the main
    loop; a second one meanwhile waits in the backlog (it could take over
    the first one's handshake and crash the daemon), and is served once
    the first gives up."""
    port = free_port()
    p = subprocess.Popen([BLOCKD, "--object", x509(pki["srv"], "server"), "--chardev",
                          f"socket,id=m,host=127.0.0.1,port={port},server=on,wait=on,"
                          "tls-creds=t0", "--monitor", "chardev=m"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                first = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        second = socket.create_connection(("127.0.0.1", port), timeout=5)
        second.sendall(b"\x16\x03\x01garbage" * 10)
        second.close()
        time.sleep(0.3)
        assert p.poll() is None
        first.close()                 # its handshake fails: the next client is served
        assert qmp_session_ok(gnutls_cli_qmp(port, pki["cli"]))
        assert p.poll() is None
    finally:
        p.kill()
        p.wait()
        err = p.stderr.read().decode()
        assert "Sanitizer" not in err, err
