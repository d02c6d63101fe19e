"""`mi serve` under what real clients and odd callers do to it: a store held by another process, api-versions
IMDS does not know, absurd resources, odd bytes and headers. Every answer is JSON in the endpoint's shape,
the connection stays open, and the server's stderr gets one line, never a traceback."""

from __future__ import annotations

import http.client
import json
import sqlite3
from contextlib import contextmanager
from urllib.parse import urlsplit

import pytest
from starlette.requests import Request

from mi_cli.errors import StoreError
from mi_cli.server import app as server_app
from mi_cli.server.state import ServerState
from mi_cli.services import tokens
from tests.clients.conftest import build_scenario, mi_json, start_server

VAULT = "https://vault.azure.net"


class KeepAlive:
    """One HTTP/1.1 connection: every request must leave it open for the next."""

    def __init__(self, base: str) -> None:
        url = urlsplit(base)
        self.conn = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
        self.sock = None

    def get(self, path: str, headers: dict[str, str] | None = None, method: str = "GET"):
        self.conn.request(method, path, headers=headers or {})
        response = self.conn.getresponse()
        raw = response.read()
        self.sock = self.sock or self.conn.sock
        assert not response.will_close and self.conn.sock is self.sock, "the connection was closed"
        return response.status, json.loads(raw) if raw else None, response

    def close(self) -> None:
        self.conn.close()


def _token_path(server, resource: str = "vm-sys", query: str = f"api-version=2018-02-01&resource={VAULT}") -> str:
    arm_id = server.ids[resource]["id"]
    return f"{arm_id}/metadata/identity/oauth2/token?{query}"


def test_a_busy_store_answers_503_and_the_same_connection_gets_a_token_once_it_is_free(tmp_path):
    db = tmp_path / "store.db"
    ids = build_scenario(db)
    srv = start_server(db, env={"MI_BUSY_TIMEOUT": "1"})
    srv.ids = ids
    client = KeepAlive(srv.base)
    try:
        secret = srv.env("app-both", "appservice")["IDENTITY_HEADER"]
        assert client.get(_token_path(srv), {"Metadata": "true"})[0] == 200
        holder = sqlite3.connect(db, timeout=60, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # as a long `mi apply` or group delete holds the store
        try:
            status, body, response = client.get(_token_path(srv), {"Metadata": "true"})
            assert (status, body["error"], response.getheader("Retry-After")) == (503, "service_unavailable", "1")
            assert "locked" in body["error_description"]
            status, body, response = client.get(f"/msi/token?api-version=2019-08-01&resource={VAULT}",
                                                {"X-IDENTITY-HEADER": secret})
            assert status == 503 and body["statusCode"] == 503 and set(body) == {"statusCode", "message", "correlationId"}
            assert response.getheader("Retry-After") == "1"
            # what needs no write is still answered: the availability probe, and the keys an API validates with
            assert client.get(_token_path(srv))[0] == 400
            assert client.get("/common/discovery/keys")[0] == 200
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        status, body, _ = client.get(_token_path(srv), {"Metadata": "true"})
        assert status == 200 and body["access_token"]
    finally:
        client.close()
        assert srv.stop() == 0
    log = srv.log.read_text()
    busy = [line for line in log.splitlines() if line.endswith("Answered 503.")]
    assert "Traceback" not in log and len(busy) == 2, log
    assert all(line.startswith("mi serve: GET /") and "locked" in line for line in busy)


def test_imds_refuses_an_api_version_it_does_not_know_and_lists_the_newest(server):
    client = KeepAlive(server.base)
    status, body, _ = client.get(_token_path(server, query=f"api-version=2099-01-01&resource={VAULT}"), {"Metadata": "true"})
    assert (status, body["newest-versions"]) == (400, tokens.NEWEST_IMDS_VERSIONS) and "api-version is invalid" in body["error"]
    for version in ("2018-02-01", "2019-08-01"):  # what azure-identity and msal send, and what the docs show
        assert client.get(_token_path(server, query=f"api-version={version}&resource={VAULT}"), {"Metadata": "true"})[0] == 200
    client.close()


def test_an_absurd_resource_is_refused_and_a_long_one_logged_in_part(server):
    client = KeepAlive(server.base)
    before = len(mi_json(server.db, "log", "--operation", "token/issue"))
    status, body, _ = client.get(_token_path(server, query="api-version=2018-02-01&resource=https://x/" + "a" * 100_000),
                                 {"Metadata": "true"})
    assert (status, body["error"]) == (400, "invalid_resource") and len(json.dumps(body)) < 300
    long_resource = "https://long.test/" + "b" * 2000  # a length a resource can have, of no resource in the tenant
    status, body, _ = client.get(_token_path(server, query=f"api-version=2018-02-01&resource={long_resource}"),
                                 {"Metadata": "true"})
    assert (status, body["error"], body["error_codes"]) == (400, "invalid_resource", [500011])
    assert len(json.dumps(body)) < 1000  # Entra's text names the resource, cut
    client.close()
    after = mi_json(server.db, "log", "--operation", "token/issue")
    assert len(after) == before + 1 and len(after[-1]["detail"]) < 500 and "(2,018 characters)" in after[-1]["detail"]


@pytest.mark.parametrize("method, path, headers, status", [
    # not UTF-8, a NUL; bad escapes: read as sent, and refused as resources the tenant does not know
    ("GET", "VM?api-version=2018-02-01&resource=%FF%FE%00", {"Metadata": "true"}, 400),
    ("GET", "VM?api-version=2018-02-01&resource=%zz%&%%%", {"Metadata": "true"}, 400),
    ("GET", "/%FF%00/metadata/identity/oauth2/token?api-version=2018-02-01&resource=x", {"Metadata": "true"}, 400),
    ("GET", "VM?api-version=2018-02-01&resource=x&client_id=%00%FF", {"Metadata": "true"}, 400),
    ("GET", "VM?api-version=2018-02-01&resource=https://vault.azure.net", {"Metadata": "true", "X-Big": "a" * 60_000}, 200),
    ("GET", "/msi/token?api-version=2019-08-01&resource=x", {"X-IDENTITY-HEADER": "\xff" * 60_000}, 401),
    ("HEAD", "VM?api-version=2018-02-01&resource=x", {"Metadata": "true"}, 405),
    ("OPTIONS", "VM", {}, 405),
    ("GET", "/" + "z" * 20_000, {}, 404),
    ("GET", "/" + "t" * 20_000 + "/discovery/keys", {}, 400),
])
def test_odd_requests_get_json_answers_on_a_connection_that_stays_open(server, method, path, headers, status):
    client = KeepAlive(server.base)
    path = path.replace("VM", _token_path(server).split("?")[0])
    got, body, _ = client.get(path, headers, method)
    assert got == status
    if method != "HEAD":
        assert set(body) in ({"error", "error_description"}, {"statusCode", "message", "correlationId"}, set(_token_body_keys()),
                             ENTRA_ERROR_KEYS)
        assert len(json.dumps(body)) < 2500  # nothing sent is repeated in full
    assert client.get("/common/discovery/keys")[0] == 200
    client.close()
    assert "Traceback" not in server.log.read_text()


# Entra's error body (an unknown resource through IMDS, an unknown tenant on the metadata endpoints)
ENTRA_ERROR_KEYS = {"error", "error_description", "error_codes", "timestamp", "trace_id", "correlation_id", "error_uri"}


def _token_body_keys() -> list[str]:
    return ["access_token", "client_id", "expires_in", "expires_on", "ext_expires_in", "not_before", "resource", "token_type"]


def test_openid_metadata_does_not_repeat_a_host_header_that_is_no_host(server):
    tid = server.ids["tenant"]
    client = KeepAlive(server.base)
    status, body, _ = client.get(f"/{tid}/.well-known/openid-configuration", {"Host": "evil.test/<x>" + "h" * 10_000})
    assert status == 200 and body["jwks_uri"] == f"{server.base}/{tid}/discovery/keys"
    status, body, _ = client.get(f"/{tid}/.well-known/openid-configuration", {"Host": "localhost:8079"})
    assert body["jwks_uri"] == f"http://localhost:8079/{tid}/discovery/keys"
    client.close()


# --- the edge, in-process: what no plane can answer, each plane answers in its own shape --------------


class _Failing:
    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    @contextmanager
    def transaction(self, *, write: bool):
        raise self.exc
        yield  # pragma: no cover


def _request(path: str, headers: dict[str, str], query: str = "api-version=2018-02-01&resource=x") -> Request:
    return Request({"type": "http", "method": "GET", "path": path, "raw_path": path.encode(), "root_path": "",
                    "query_string": query.encode(), "scheme": "http", "server": ("127.0.0.1", 8079),
                    "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]})


@pytest.mark.parametrize("exc, status, retry_after, traceback", [
    (StoreError("StoreBusy", "The store 'x' stayed locked by another process for 1 s; try again."), 503, "1", False),
    (StoreError("InvalidStore", "The store 'x' cannot be used: disk I/O error."), 500, None, False),
    (RuntimeError("a bug"), 500, None, True),
])
def test_the_edge_answers_in_each_planes_shape(capsys, exc, status, retry_after, traceback):
    endpoint = server_app._dispatch(ServerState(_Failing(exc)))  # type: ignore[arg-type]
    imds = endpoint(_request("/r/metadata/identity/oauth2/token", {"Metadata": "true"}))
    appservice = endpoint(_request("/msi/token", {"X-IDENTITY-HEADER": "s"}, "api-version=2019-08-01&resource=x"))
    entra = endpoint(_request("/common/discovery/keys", {}))
    bodies = [json.loads(r.body) for r in (imds, appservice, entra)]
    assert [r.status_code for r in (imds, appservice, entra)] == [status] * 3
    assert [r.headers.get("retry-after") for r in (imds, appservice, entra)] == [retry_after] * 3
    assert set(bodies[0]) == {"error", "error_description"}
    assert bodies[0]["error"] == ("service_unavailable" if status == 503 else "unknown")
    assert set(bodies[1]) == {"statusCode", "message", "correlationId"} and bodies[1]["statusCode"] == status
    assert set(bodies[2]) == {"error", "error_description"}
    err = capsys.readouterr().err
    assert len([line for line in err.splitlines() if line.startswith("mi serve: GET ")]) == 3
    assert ("Traceback" in err) is traceback
