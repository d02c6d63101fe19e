"""The local cloud: the store's CA, the CONNECT proxy (served, refused and tunnelled hosts), routing by host, mi env."""

from __future__ import annotations

import http.client
import io
import json
import socket
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import trustme
from starlette.responses import PlainTextResponse

from mi_cli.cli.main import main
from tests.clients.conftest import connect_through, mi_json, start_server

TIMEOUT = 20  # seconds for any one socket operation: generous on a loaded machine, never a hang


def handle(request, state):  # noqa: ANN001, ANN201 - the plane test_a_plane_is_chosen_by_host registers
    return PlainTextResponse(f"test plane: {request.url.hostname} {request.method} {len(request.state.body)} bytes")


def _store(db: Path) -> Path:
    mi_json(db, "group", "create", "-n", "rg", "-l", "westeurope")
    mi_json(db, "resource", "create", "-g", "rg", "-n", "kv1", "--type", "keyvault")
    mi_json(db, "resource", "create", "-g", "rg", "-n", "vm1", "--type", "vm", "--system-assigned")
    return db


def _address(db: Path) -> dict:
    return json.loads(Path(f"{db}.serve.json").read_text())


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    db = _store(tmp_path_factory.mktemp("cloud") / "store.db")
    srv = start_server(db)
    yield srv, _address(db)
    assert srv.stop() == 0, srv.log.read_text()
    assert not Path(f"{db}.serve.json").exists()


def _get(tls: ssl.SSLSocket, host: str, method: str = "GET", body: bytes = b"") -> tuple[int, bytes]:
    tls.sendall(f"{method} / HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body)
    response = http.client.HTTPResponse(tls)
    response.begin()
    return response.status, response.read()


def test_the_ca_is_made_once_kept_in_the_store_and_written_beside_it(tmp_path):
    db = _store(tmp_path / "store.db")
    srv = start_server(db)
    ca_file, bundle = Path(f"{db}.ca.pem"), Path(f"{db}.ca-bundle.pem")
    try:
        first = ca_file.read_text()
        assert first.startswith("-----BEGIN CERTIFICATE-----")
        assert ca_file.stat().st_mode & 0o777 == 0o644 and bundle.stat().st_mode & 0o777 == 0o644
        assert Path(f"{db}.tls.pem").stat().st_mode & 0o777 == 0o600
        text = bundle.read_text()
        assert first in text and text.count("BEGIN CERTIFICATE") > 10  # the system's CAs, and the store's
        err = srv.log.read_text()
        assert str(ca_file) in err and "https://kv1.vault.azure.net" in err
    finally:
        assert srv.stop() == 0
    again = start_server(db)
    try:
        assert ca_file.read_text() == first  # the same CA after a restart
    finally:
        assert again.stop() == 0
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT cert_pem FROM certificate_authority").fetchall()
    finally:
        con.close()
    assert rows == [(first,)]


def test_a_served_vault_is_answered_with_a_certificate_the_bundle_verifies(cloud):
    srv, address = cloud
    bundle = ssl.create_default_context(cafile=f"{srv.db}.ca-bundle.pem")
    for host in ("kv1.vault.azure.net", "KV1.Vault.Azure.Net"):
        started = time.perf_counter()
        sock, answer = connect_through(address["proxy_port"], f"{host}:443")
        assert answer.startswith(b"HTTP/1.1 200"), answer
        with bundle.wrap_socket(sock, server_hostname=host) as tls:
            elapsed = time.perf_counter() - started
            names = [value for kind, value in tls.getpeercert()["subjectAltName"] if kind == "DNS"]
            assert "*.vault.azure.net" in names
            status, _ = _get(tls, host)
            assert 200 <= status < 600  # answered by the Key Vault plane (or the note that it is not there)
        assert elapsed < TIMEOUT


def test_an_unmodified_client_reaches_a_vault_through_the_proxy(cloud):
    requests = pytest.importorskip("requests")
    srv, address = cloud
    proxy = f"http://127.0.0.1:{address['proxy_port']}"
    r = requests.get("https://kv1.vault.azure.net/secrets?api-version=7.4", proxies={"https": proxy},
                     verify=f"{srv.db}.ca-bundle.pem", timeout=TIMEOUT)
    assert r.status_code in (401, 404), r.text  # TLS verified; the plane (or its absence) answered


def test_a_vault_not_in_the_store_does_not_exist(cloud):
    srv, address = cloud
    for target in ("nope.vault.azure.net:443", "kv1.vault.azure.net:8443"):
        sock, answer = connect_through(address["proxy_port"], target)
        sock.close()
        assert answer.startswith(b"HTTP/1.1 502 Bad Gateway"), answer
    _, answer = connect_through(address["proxy_port"], "nope.vault.azure.net:443")
    assert b"No Microsoft.KeyVault/vaults named 'nope' in this store" in answer


def test_a_vault_created_while_serving_is_served_at_once(cloud):
    srv, address = cloud
    mi_json(srv.db, "resource", "create", "-g", "rg", "-n", "kv-late", "--type", "keyvault")
    sock, answer = connect_through(address["proxy_port"], "kv-late.vault.azure.net:443")
    sock.close()
    assert answer.startswith(b"HTTP/1.1 200"), answer


@pytest.fixture
def foreign(tmp_path):
    """A TLS server on loopback with its own CA, standing in for a host mi does not serve."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT)

    def serve_one() -> None:
        try:
            conn, _ = listener.accept()
            with context.wrap_socket(conn, server_side=True) as tls:
                tls.settimeout(TIMEOUT)
                request = b""
                while b"\r\n\r\n" not in request:
                    request += tls.recv(4096)
                body = b"foreign: " + request.split(b"\r\n", 1)[0]
                tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
        except OSError:
            pass

    thread = threading.Thread(target=serve_one, daemon=True)
    thread.start()
    yield ca, listener.getsockname()[1]
    listener.close()
    thread.join(TIMEOUT)


def test_another_host_is_tunnelled_untouched(cloud, foreign):
    srv, address = cloud
    ca, port = foreign
    sock, answer = connect_through(address["proxy_port"], f"127.0.0.1:{port}")
    assert answer == b"HTTP/1.1 200 Connection established\r\n\r\n"
    client = ssl.create_default_context()
    ca.configure_trust(client)  # that server's own CA: mi's certificate is not involved
    with client.wrap_socket(sock, server_hostname="127.0.0.1") as tls:
        assert _get(tls, "127.0.0.1") == (200, b"foreign: GET / HTTP/1.1")


def test_a_host_that_cannot_be_reached_is_a_502(cloud):
    srv, address = cloud
    free = socket.create_server(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    sock, answer = connect_through(address["proxy_port"], f"127.0.0.1:{port}")
    sock.close()
    assert answer.startswith(b"HTTP/1.1 502") and b"Cannot reach 127.0.0.1" in answer


def test_a_request_that_is_not_connect_is_refused(cloud):
    _, address = cloud
    with socket.create_connection(("127.0.0.1", address["proxy_port"]), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n")
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 405 Method Not Allowed") and b"Allow: CONNECT" in answer


def test_a_silent_client_does_not_hold_up_others(cloud):
    _, address = cloud
    silent = [socket.create_connection(("127.0.0.1", address["proxy_port"]), timeout=TIMEOUT) for _ in range(20)]
    half = socket.create_connection(("127.0.0.1", address["proxy_port"]), timeout=TIMEOUT)
    half.sendall(b"CONNECT kv1.vault.azure.net:443 HTTP/1.1\r\n")  # and then nothing
    try:
        sock, answer = connect_through(address["proxy_port"], "kv1.vault.azure.net:443")
        sock.close()
        assert answer.startswith(b"HTTP/1.1 200")
    finally:
        for s in [*silent, half]:
            s.close()


def test_env_points_a_process_at_the_local_cloud(cloud):
    srv, address = cloud
    values = srv.env("vm1")
    proxy = f"http://127.0.0.1:{address['proxy_port']}"
    assert values["HTTPS_PROXY"] == values["https_proxy"] == proxy
    assert values["NO_PROXY"] == values["no_proxy"] == "127.0.0.1,localhost"
    assert values["REQUESTS_CA_BUNDLE"] == values["SSL_CERT_FILE"] == str(Path(f"{srv.db}.ca-bundle.pem").resolve())
    assert values["NODE_EXTRA_CA_CERTS"] == str(Path(f"{srv.db}.ca.pem").resolve())
    # az's folder: the resource's own, in the one mi serve made beside the store (az makes the resource's)
    assert Path(values["AZURE_CONFIG_DIR"]).parent == Path(f"{srv.db}.azure").resolve() and Path(f"{srv.db}.azure").is_dir()
    assert values["AZURE_CORE_COLLECT_TELEMETRY"] == "false"
    # the default output is the exports, for eval
    script = f'eval "$("{sys.executable}" -m mi_cli --db "{srv.db}" env --resource vm1 -g rg)"; echo "$HTTPS_PROXY|$SSL_CERT_FILE"'
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == f"{proxy}|{values['SSL_CERT_FILE']}", out.stderr
    # a port given: the proxy beside it
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        assert main(["--db", str(srv.db), "env", "--resource", "vm1", "-g", "rg", "--port", "5005", "--shell", "fish"]) == 0
    assert "set -gx HTTPS_PROXY 'http://127.0.0.1:5006'" in buffer.getvalue()


def test_a_plane_is_chosen_by_host_on_the_tls_server_only(tmp_path, monkeypatch):
    import uvicorn

    from mi_cli.server import app as server_app
    from mi_cli.server.state import ServerState
    from mi_cli.services import Ctx, localcloud
    from mi_cli.store import open_store

    db = _store(tmp_path / "store.db")
    store = open_store(str(db))
    with store.transaction(write=True) as session:
        files = localcloud.prepare(Ctx.from_env(session), str(db))
    monkeypatch.setattr(server_app, "PLANES", {"vault.azure.net": __name__, "other.test": "mi_cli.server.no_such_plane"})
    monkeypatch.setattr(server_app, "_loaded", {})
    asgi = server_app.create_app(ServerState(store))
    servers = []
    for certfile in (str(files.tls), None):
        sock = socket.create_server(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(asgi, ssl_certfile=certfile, log_level="warning", lifespan="off"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        servers.append((server, thread, sock.getsockname()[1]))
    try:
        deadline = time.time() + TIMEOUT
        while not all(s.started for s, _, _ in servers) and time.time() < deadline:
            time.sleep(0.05)
        (_, _, tls_port), (_, _, plain_port) = servers
        trust = ssl.create_default_context(cafile=str(files.bundle))

        def over_tls(host: str, method: str = "GET", body: bytes = b"") -> tuple[int, bytes]:
            raw = socket.create_connection(("127.0.0.1", tls_port), timeout=TIMEOUT)
            with trust.wrap_socket(raw, server_hostname="kv1.vault.azure.net") as tls:
                return _get(tls, host, method, body)

        assert over_tls("kv1.vault.azure.net", "PUT", b'{"value": "s"}') == (200, b"test plane: kv1.vault.azure.net PUT 14 bytes")
        status, body = over_tls("x.other.test")
        assert status == 404 and json.loads(body)["error"]["code"] == "NotFound"
        # the plain port keeps its path routes whatever the Host says: planes are HTTPS only
        with socket.create_connection(("127.0.0.1", plain_port), timeout=TIMEOUT) as plain:
            plain.sendall(b"GET / HTTP/1.1\r\nHost: kv1.vault.azure.net\r\nConnection: close\r\n\r\n")
            response = http.client.HTTPResponse(plain)
            response.begin()
            assert response.status == 404 and b"test plane" not in response.read()
    finally:
        for server, thread, _ in servers:
            server.should_exit = True
            thread.join(TIMEOUT)
        store.close()


def test_a_taken_proxy_port_is_refused_as_a_taken_port_is(tmp_path):
    taken = socket.create_server(("127.0.0.1", 0))
    try:
        r = subprocess.run([sys.executable, "-m", "mi_cli", "--db", str(tmp_path / "store.db"), "serve", "--port", "0",
                            "--proxy-port", str(taken.getsockname()[1])], capture_output=True, text=True, timeout=60)
    finally:
        taken.close()
    assert r.returncode == 1 and r.stderr.startswith("ERROR: (AddressInUse)") and "--proxy-port" in r.stderr
