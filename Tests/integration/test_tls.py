"""TLS: clients on the proxy's TLS port (redis-cli --tls, redis-py ssl=True),
mTLS, a TLS-only cluster behind the proxy (tls-port, tls-cluster), and
certificates re-read on SIGHUP. Certificates are made here with openssl."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import time

import pytest
import redis

from cluster import Cluster
from harness import RespError, is_status

HOST = "127.0.0.1"


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_certificate(directory, name: str, ca: str, cn: str, san: str | None):
    """An EC key and a certificate for it signed by `ca` (ca.crt / ca.key)."""
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", f"/CN={cn}",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=directory)
    extensions = directory / f"{name}.ext"
    extensions.write_text(f"subjectAltName={san}\n" if san else "basicConstraints=CA:FALSE\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
             "-days", "2", "-out", f"{name}.crt", "-extfile", str(extensions), cwd=directory)


def _make_ca(directory, name: str):
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
             "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.crt", cwd=directory)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    _make_ca(d, "ca")
    _make_ca(d, "other-ca")
    _make_certificate(d, "server", "ca", "localhost", "IP:127.0.0.1,DNS:localhost")
    _make_certificate(d, "renewed", "ca", "renewed.localhost", "IP:127.0.0.1,DNS:localhost")
    _make_certificate(d, "client", "ca", "app-client", None)
    _make_certificate(d, "stranger", "other-ca", "stranger", None)
    return {name: str(d / name) for name in ("ca", "other-ca", "server", "renewed", "client", "stranger")}


@pytest.fixture(scope="module")
def tls_cluster(certs, tmp_path_factory):
    c = Cluster(directory=str(tmp_path_factory.mktemp("tls-cluster")),
                tls={"cert": certs["server"] + ".crt", "key": certs["server"] + ".key", "ca": certs["ca"] + ".crt"})
    c.start()
    yield c
    c.stop()


def _tls_client(port: int, certs, cert: str | None = None, **kw) -> redis.Redis:
    return redis.Redis(host=HOST, port=port, ssl=True, ssl_ca_certs=certs["ca"] + ".crt",
                       ssl_certfile=cert and cert + ".crt", ssl_keyfile=cert and cert + ".key",
                       socket_timeout=10, **kw)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@pytest.fixture
def tls_proxy(proxy_factory, certs):
    port = _free_port()
    proxy = proxy_factory("--set", f"tls-port={port}", "--set", f"tls-cert-file={certs['server']}.crt",
                          "--set", f"tls-key-file={certs['server']}.key")
    proxy.tls_port = port
    return proxy


def test_redis_cli_over_tls_and_plain_at_once(tls_proxy, certs):
    cli = ["redis-cli", "-h", HOST, "-p", str(tls_proxy.tls_port), "--tls", "--cacert", certs["ca"] + ".crt"]
    assert subprocess.run(cli + ["SET", "tls:cli", "hello"], capture_output=True, text=True, timeout=10).stdout.strip() == "OK"
    assert subprocess.run(cli + ["GET", "tls:cli"], capture_output=True, text=True, timeout=10).stdout.strip() == "hello"
    with tls_proxy.raw() as plain:
        assert plain.command("GET", "tls:cli") == b"hello"
    # Plain RESP on the TLS port is no TLS handshake: the connection just ends.
    with socket.create_connection((HOST, tls_proxy.tls_port), timeout=5) as s:
        s.sendall(b"PING\r\n")
        try:
            assert not s.recv(100).startswith(b"+PONG")
        except ConnectionResetError:
            pass


def test_redis_py_ssl_pipelines_and_big_values(tls_proxy, certs):
    client = _tls_client(tls_proxy.tls_port, certs)
    pipe = client.pipeline(transaction=False)
    for i in range(2000):
        pipe.set(f"tls:p:{i}", f"v{i}")
    assert all(pipe.execute())
    pipe = client.pipeline(transaction=False)
    for i in range(2000):
        pipe.get(f"tls:p:{i}")
    assert pipe.execute() == [f"v{i}".encode() for i in range(2000)]
    big = os.urandom(3 * 1024 * 1024)  # many TLS records each way
    assert client.set("tls:big", big)
    assert client.get("tls:big") == big
    resp3 = _tls_client(tls_proxy.tls_port, certs, protocol=3)
    assert resp3.get("tls:p:7") == b"v7"
    client.close()
    resp3.close()


def test_mutual_tls_rejects_clients_without_a_certificate(proxy_factory, certs):
    port = _free_port()
    proxy = proxy_factory("--set", f"tls-port={port}", "--set", f"tls-cert-file={certs['server']}.crt",
                          "--set", f"tls-key-file={certs['server']}.key", "--set", f"tls-ca-cert-file={certs['ca']}.crt",
                          "--set", "tls-auth-clients=yes")
    with pytest.raises((redis.exceptions.ConnectionError, ssl.SSLError, OSError)):
        _tls_client(port, certs).ping()
    with pytest.raises((redis.exceptions.ConnectionError, ssl.SSLError, OSError)):
        _tls_client(port, certs, cert=certs["stranger"]).ping()  # a certificate from another CA
    trusted = _tls_client(port, certs, cert=certs["client"])
    assert trusted.set("tls:mtls", "1") and trusted.get("tls:mtls") == b"1"
    trusted.close()
    assert proxy.alive()


def test_sighup_rereads_certificates_without_dropping_connections(proxy_factory, certs, tmp_path):
    cert, key = tmp_path / "proxy.crt", tmp_path / "proxy.key"
    cert.write_bytes(open(certs["server"] + ".crt", "rb").read())
    key.write_bytes(open(certs["server"] + ".key", "rb").read())
    port = _free_port()
    proxy = proxy_factory("--set", f"tls-port={port}", "--set", f"tls-cert-file={cert}", "--set", f"tls-key-file={key}")

    def served_common_name() -> str:
        context = ssl.create_default_context(cafile=certs["ca"] + ".crt")
        with socket.create_connection((HOST, port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as s:
                return dict(x[0] for x in s.getpeercert()["subject"])["commonName"]

    assert served_common_name() == "localhost"
    kept = _tls_client(port, certs)
    assert kept.set("tls:kept", "1")
    cert.write_bytes(open(certs["renewed"] + ".crt", "rb").read())
    key.write_bytes(open(certs["renewed"] + ".key", "rb").read())
    os.kill(proxy.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "TLS certificates re-read" not in proxy.log_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert served_common_name() == "renewed.localhost"
    assert kept.get("tls:kept") == b"1"  # the open connection goes on
    # A broken file is refused and the current certificate stays.
    key.write_text("not a key")
    os.kill(proxy.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "not re-read" not in proxy.log_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "not re-read" in proxy.log_text()
    assert served_common_name() == "renewed.localhost"
    kept.close()


def test_tls_cluster_behind_the_proxy(proxy_factory, tls_cluster, certs):
    """Nodes reached over TLS only (their TLS ports as seeds; the map names
    their TLS ports), certificates checked against the CA and 127.0.0.1."""
    proxy = proxy_factory("--set", "backend-tls=yes", "--set", f"backend-tls-ca-cert-file={certs['ca']}.crt",
                          seeds=tls_cluster.tls_seeds)
    tls_ports = set(tls_cluster.tls_ports.values())
    with proxy.raw() as c:
        for i in range(300):
            assert is_status(c.command("SET", f"tls:cluster:{i}", str(i)))
        assert c.pipeline([("GET", f"tls:cluster:{i}") for i in range(300)]) == [str(i).encode() for i in range(300)]
        assert c.command("MSET", "tls:a", "1", "tls:b", "2", "tls:c", "3") == b"OK"
        # A big request is written to the node from its record, over TLS too,
        # in its place between small ones.
        big = os.urandom(3 * 1024 * 1024)
        assert c.pipeline([("SET", "{tls}:s", "a"), ("SET", "{tls}:big", big), ("APPEND", "{tls}:s", "b"),
                           ("GET", "{tls}:s")])[1:] == [b"OK", 2, b"ab"]
        assert c.command("GET", "{tls}:big") == big
        nodes = c.command("INFO", "nodes").decode()
    assert any(f"127.0.0.1:{port}" in nodes for port in tls_ports), nodes
    assert not any(f"127.0.0.1:{port}" in nodes for port in tls_cluster.nodes), nodes
    # Every key went over TLS to the plaintext ports' owners.
    assert sum(tls_cluster.call(m, "DBSIZE") for m in tls_cluster.masters) >= 303


def test_tls_cluster_certificate_checks(proxy_factory, tls_cluster, certs):
    wrong_ca = proxy_factory("--set", "backend-tls=yes", "--set", f"backend-tls-ca-cert-file={certs['other-ca']}.crt",
                             seeds=tls_cluster.tls_seeds, wait=False)
    wrong_name = proxy_factory("--set", "backend-tls=yes", "--set", f"backend-tls-ca-cert-file={certs['ca']}.crt",
                               "--set", "backend-tls-server-name=db.example.com", seeds=tls_cluster.tls_seeds, wait=False)
    for proxy, reason in ((wrong_ca, "certificate verify failed"), (wrong_name, "certificate verify failed")):
        deadline = time.monotonic() + 10
        while reason not in proxy.log_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert reason in proxy.log_text(), proxy.log_text()
        assert "slots covered" not in proxy.log_text()
