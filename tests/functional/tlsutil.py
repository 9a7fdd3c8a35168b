"""Certificates and pre-shared keys for the TLS tests, made with GnuTLS's
certtool and psktool, laid out as QEMU (and libnbd) read them:

  srv/        ca-cert.pem server-cert.pem server-key.pem    (endpoint=server)
  cli/        ca-cert.pem client-cert.pem client-key.pem    (CN=client1)
  cli2/       the same CA, CN=client2
  impostor/   our CA (it trusts the server), a client certificate of another CA
  psk-srv/    keys.psk with alice's key;  psk-cli/ the same;  psk-bad/ another key
"""
import os
import shutil
import socket
import subprocess


def _run(*args):
    subprocess.run(args, check=True, capture_output=True)


def _template(path, text):
    with open(path, "w") as f:
        f.write(text)


def _ca(d, name):
    key, cert, info = f"{d}/{name}-key.pem", f"{d}/{name}-cert.pem", f"{d}/{name}.info"
    _template(info, f"cn = {name}\nca\ncert_signing_key\nexpiration_days = 30\n")
    _run("certtool", "--generate-privkey", "--outfile", key)
    _run("certtool", "--generate-self-signed", "--load-privkey", key, "--template", info,
         "--outfile", cert)
    return key, cert


def _cert(d, name, ca_key, ca_cert, extra):
    key, cert, info = f"{d}/{name}-key.pem", f"{d}/{name}-cert.pem", f"{d}/{name}.info"
    _template(info, extra + "encryption_key\nsigning_key\nexpiration_days = 30\n")
    _run("certtool", "--generate-privkey", "--outfile", key)
    _run("certtool", "--generate-certificate", "--load-privkey", key,
         "--load-ca-certificate", ca_cert, "--load-ca-privkey", ca_key, "--template", info,
         "--outfile", cert)
    return key, cert


def _dir(base, name, files):
    d = f"{base}/{name}"
    os.makedirs(d)
    for src, dst in files:
        shutil.copy(src, f"{d}/{dst}")
    return d


def make_pki(base):
    work = f"{base}/work"
    os.makedirs(work)
    ca_key, ca_cert = _ca(work, "ca")
    other_key, other_cert = _ca(work, "otherca")
    s_key, s_cert = _cert(work, "server", ca_key, ca_cert,
                          "organization = blockd\ncn = localhost\ndns_name = localhost\n"
                          "ip_address = 127.0.0.1\ntls_www_server\n")
    dirs = {"srv": _dir(base, "srv", [(ca_cert, "ca-cert.pem"), (s_cert, "server-cert.pem"),
                                      (s_key, "server-key.pem")])}
    for name, (key, cert) in {
            "cli": _cert(work, "client1", ca_key, ca_cert,
                         "country = GB\norganization = blockd\ncn = client1\ntls_www_client\n"),
            "cli2": _cert(work, "client2", ca_key, ca_cert,
                          "country = GB\norganization = blockd\ncn = client2\ntls_www_client\n"),
            "impostor": _cert(work, "impostor", other_key, other_cert,
                              "country = GB\norganization = blockd\ncn = client1\n"
                              "tls_www_client\n")}.items():
        dirs[name] = _dir(base, name, [(ca_cert, "ca-cert.pem"), (cert, "client-cert.pem"),
                                       (key, "client-key.pem")])
    for name in ("psk-srv", "psk-cli", "psk-bad"):
        dirs[name] = f"{base}/{name}"
        os.makedirs(dirs[name])
    _run("psktool", "-u", "alice", "-p", f"{dirs['psk-srv']}/keys.psk")
    shutil.copy(f"{dirs['psk-srv']}/keys.psk", f"{dirs['psk-cli']}/keys.psk")
    _run("psktool", "-u", "alice", "-p", f"{dirs['psk-bad']}/keys.psk")
    return dirs


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
