"""The local cloud given what a careless or hostile client sends: wrong JSON types, names no secret can have,
an empty api-version, a body cut short, a CONNECT to a name no resolver takes. Every answer is Key Vault's
400 (or the proxy's 502), nothing changes in the store, the activity log grows by a bounded row, and the
server's stderr has no traceback."""

from __future__ import annotations

import http.client
import json
import socket
import sqlite3
import ssl
import time
from pathlib import Path

import pytest

from tests.clients.conftest import connect_through, mi_json, start_server

TIMEOUT = 20
VAULT = "kv1.vault.azure.net"
Q = "?api-version=7.4"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    db = tmp_path_factory.mktemp("probe") / "store.db"
    mi_json(db, "group", "create", "-n", "rg", "-l", "westeurope")
    mi_json(db, "resource", "create", "-g", "rg", "-n", "vm1", "--type", "vm", "--system-assigned")
    mi_json(db, "resource", "create", "-g", "rg", "-n", "vm2", "--type", "vm", "--system-assigned")
    vault = mi_json(db, "resource", "create", "-g", "rg", "-n", "kv1", "--type", "keyvault")
    mi_json(db, "role", "assignment", "create", "--assignee", "vm1", "--role", "Key Vault Secrets Officer",
            "--scope", vault["id"])
    mi_json(db, "keyvault", "secret", "set", "--vault-name", "kv1", "-n", "s1", "--value", "v1")
    tokens = {vm: mi_json(db, "token", "get", "--resource", vm, "-g", "rg", "--audience", "https://vault.azure.net")
              ["access_token"] for vm in ("vm1", "vm2")}
    srv = start_server(db)
    address = json.loads(Path(f"{db}.serve.json").read_text())
    yield {"db": db, "srv": srv, "proxy": address["proxy_port"], "tokens": tokens}
    assert srv.stop() == 0
    assert "Traceback" not in srv.log.read_text(), srv.log.read_text()[-3000:]


def _tunnel(cloud, target: str = f"{VAULT}:443") -> tuple[socket.socket, bytes]:
    return connect_through(cloud["proxy"], target, TIMEOUT)


def _tls(cloud) -> ssl.SSLSocket:
    sock, answer = _tunnel(cloud)
    assert answer.startswith(b"HTTP/1.1 200"), answer
    context = ssl.create_default_context(cafile=f"{cloud['db']}.ca.pem")
    return context.wrap_socket(sock, server_hostname=VAULT)


def _request(cloud, method: str, path: str, body: bytes = b"", who: str | None = "vm1") -> tuple[int, dict]:
    head = [f"{method} {path} HTTP/1.1", f"Host: {VAULT}", f"Content-Length: {len(body)}", "Connection: close"]
    if who:
        head.append(f"Authorization: Bearer {cloud['tokens'][who]}")
    with _tls(cloud) as tls:
        tls.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        response = http.client.HTTPResponse(tls)
        response.begin()
        raw = response.read()
    return response.status, json.loads(raw) if raw else {}


def _versions(cloud) -> int:
    with sqlite3.connect(cloud["db"]) as c:
        return c.execute("SELECT count(*) FROM key_vault_secret").fetchone()[0]


def _log(cloud) -> tuple[int, int]:
    """(rows, longest row's text) of the activity log."""
    with sqlite3.connect(cloud["db"]) as c:
        return c.execute("SELECT count(*), max(length(target) + length(coalesce(detail, ''))) FROM activity_log").fetchone()


@pytest.mark.parametrize(("method", "path", "body", "says"), [
    ("PUT", "/secrets/p1", b'{"value": "x", "attributes": {"exp": "tomorrow"}}', "epoch seconds"),
    ("PUT", "/secrets/p1", b'{"value": "x", "attributes": {"exp": 1e300}}', "out of range"),
    ("PUT", "/secrets/p1", b'{"value": "x", "attributes": {"nbf": -99999999999999}}', "out of range"),
    ("PUT", "/secrets/p1", b'{"value": "x", "attributes": {"nbf": NaN}}', "out of range"),
    ("PUT", "/secrets/p1", b'{"value": "x", "attributes": {"exp": Infinity}}', "out of range"),
    ("PUT", "/secrets/p1", b'{"value": "x", "attributes": "enabled"}', "attributes are an object"),
    ("PUT", "/secrets/p1", b'{"value": "x", "attributes": {"enabled": "no"}}', "true or false"),
    ("PUT", "/secrets/p1", b'{"value": "\\ud800"}', "not valid Unicode"),
    ("PUT", "/secrets/p1", b'{"value": "x", "contentType": "\\ud800"}', "not valid Unicode"),
    ("PUT", "/secrets/p1", b'{"value": "x", "tags": {"k": "\\udc00"}}', "not valid Unicode"),
    ("PATCH", "/secrets/s1", b'{"attributes": {"exp": "x"}}', "epoch seconds"),
    ("PATCH", "/secrets/s1", b'{"attributes": [1]}', "attributes are an object"),
    ("PATCH", "/secrets/s1", b'{"attributes": {"enabled": "yes"}}', "true or false"),
])
def test_a_field_of_the_wrong_type_is_400_and_changes_nothing(cloud, method, path, body, says):
    before, (rows, _) = _versions(cloud), _log(cloud)
    status, answer = _request(cloud, method, path + Q, body)
    assert status == 400 and answer["error"]["code"] == "BadParameter" and says in answer["error"]["message"], answer
    assert _versions(cloud) == before and _log(cloud)[0] == rows + 1  # only its log row
    status, secret = _request(cloud, "GET", "/secrets/s1" + Q)
    assert status == 200 and secret["attributes"]["enabled"] is True and "exp" not in secret["attributes"]


def test_null_attributes_are_not_given(cloud):
    status, made = _request(cloud, "PUT", "/secrets/nulls" + Q, b'{"value": "x", "attributes": {"enabled": null}}')
    assert status == 200 and made["attributes"]["enabled"] is True


@pytest.mark.parametrize("name", ["a.b", "a%2Fb", "%ff", "a%00", "a" * 200, "a" * 15000])
def test_a_name_no_secret_can_have_is_key_vaults_400_with_a_bounded_log_row(cloud, name):
    for method, path in (("GET", f"/secrets/{name}"), ("GET", f"/secrets/{name}/versions"),
                         ("POST", f"/deletedsecrets/{name}/recover"), ("PUT", f"/secrets/{name}")):
        rows = _log(cloud)[0]
        status, answer = _request(cloud, method, path + Q, b'{"value": "x"}' if method == "PUT" else b"")
        assert status == 400, (method, path[:40], answer)
        assert answer["error"]["message"].startswith("The request URI contains an invalid name: ")
        count, longest = _log(cloud)
        assert count == rows + 1 and longest < 3000
    # refused callers too: one bounded row each, no version made
    before = _versions(cloud)
    assert _request(cloud, "PUT", f"/secrets/{name}" + Q, b'{"value": "x"}', who="vm2")[0] == 403
    assert _request(cloud, "PUT", f"/secrets/{name}" + Q, b'{"value": "x"}', who=None)[0] == 401
    assert _versions(cloud) == before and _log(cloud)[1] < 3000


def test_an_empty_api_version_is_refused_as_a_missing_one(cloud):
    for query in ("", "?api-version=", "?api-version=%20"):
        status, answer = _request(cloud, "GET", "/secrets/s1" + query)
        assert status == 400 and "api-version" in answer["error"]["message"]


def test_a_client_that_leaves_mid_body_changes_nothing_and_leaves_no_traceback(cloud):
    before = _versions(cloud)
    with _tls(cloud) as tls:
        tls.sendall(f"PUT /secrets/half{Q} HTTP/1.1\r\nHost: {VAULT}\r\nAuthorization: Bearer {cloud['tokens']['vm1']}\r\n"
                    f"Content-Length: 1000\r\n\r\n{{\"value\":".encode())
        time.sleep(0.3)
    time.sleep(0.5)
    assert _request(cloud, "GET", "/secrets/half" + Q)[0] == 404 and _versions(cloud) == before
    assert "Traceback" not in cloud["srv"].log.read_text()


@pytest.mark.parametrize("host", ["a..vault.azure.net", ".vault.azure.net", "x" * 300, "kv1.vault.azure.net\x00"])
def test_a_connect_to_a_name_no_resolver_takes_is_answered_502(cloud, host):
    sock, answer = _tunnel(cloud, f"{host}:443")
    with sock:
        while chunk := sock.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 502 ") and b"not a host name" in answer, answer[:200]


def test_a_change_made_through_the_plane_is_logged_as_the_identity_that_made_it(cloud):
    """Every row a data-plane change writes names the caller whose token made it (its oid), as Azure's logs
    do: not the operator, nor the account mi serve runs under."""
    with sqlite3.connect(cloud["db"]) as c:
        start = c.execute("SELECT max(pk) FROM activity_log").fetchone()[0]
    oid = json.loads(__import__("base64").urlsafe_b64decode(cloud["tokens"]["vm1"].split(".")[1] + "=="))["oid"]
    assert _request(cloud, "PUT", "/secrets/by-whom" + Q, b'{"value": "x"}')[0] == 200
    assert _request(cloud, "DELETE", "/secrets/by-whom" + Q)[0] == 200
    assert _request(cloud, "POST", "/deletedsecrets/by-whom/recover" + Q)[0] == 200
    with sqlite3.connect(cloud["db"]) as c:
        rows = c.execute("SELECT operation, caller FROM activity_log WHERE pk > ?", (start,)).fetchall()
    assert {op for op, _ in rows} >= {"Microsoft.KeyVault/vaults/secrets/write", "Microsoft.KeyVault/vaults/secrets/delete",
                                      "Microsoft.KeyVault/vaults/secrets/recover/action"}
    assert {caller for _, caller in rows} == {oid}, rows


def test_a_body_nested_past_the_parsers_depth_is_key_vaults_400_not_a_failure(cloud):
    before = _versions(cloud)
    status, answer = _request(cloud, "PUT", "/secrets/p1" + Q, b"[" * 100_000 + b"]" * 100_000)
    assert status == 400 and answer["error"] == {"code": "BadParameter", "message": "The request body is not valid JSON."}
    assert _versions(cloud) == before
