"""Fault injection and IMDS-like throttling, for people testing their retry code."""

from __future__ import annotations

import concurrent.futures
import time

import pytest
from azure.identity import ManagedIdentityCredential

from tests.clients.conftest import build_scenario, get, mi_json, start_server

VAULT = "https://vault.azure.net"


@pytest.fixture
def faulty(tmp_path):
    db = tmp_path / "store.db"
    ids = build_scenario(db)
    servers = []

    def start(*extra):
        srv = start_server(db, *extra)
        srv.ids = ids
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        assert srv.stop() == 0


def _url(srv, resource="vm-sys"):
    arm_id = mi_json(srv.db, "resource", "show", "-g", "rg", "-n", resource)["id"]
    return f"{srv.base}{arm_id}/metadata/identity/oauth2/token?api-version=2018-02-01&resource={VAULT}"


def test_injected_503s_answer_first_with_retry_after_then_tokens_flow(faulty):
    srv = faulty("--inject", "503:2:1")
    url = _url(srv)
    for _ in range(2):
        status, body, headers = get(url, {"Metadata": "true"})
        assert status == 503 and headers.get("retry-after", headers.get("Retry-After")) == "1"
        assert body["error"] == "service_unavailable"
    assert get(url, {"Metadata": "true"})[0] == 200


def test_a_real_client_retries_through_an_injected_429(faulty, client_env):
    srv = faulty("--inject", "429:1:1")
    client_env(srv.env("vm-sys"))
    start = time.monotonic()
    token = ManagedIdentityCredential().get_token(f"{VAULT}/.default")
    assert token.token and time.monotonic() - start >= 0.9  # it honoured Retry-After: 1
    log = mi_json(srv.db, "log", "--operation", "token/issue", "--since", "5m")
    assert any(e["status"] == "Succeeded" for e in log)


def test_the_throttle_answers_429_beyond_20_requests_a_second(faulty):
    srv = faulty("--throttle")
    url = _url(srv)
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        statuses = list(pool.map(lambda _: get(url, {"Metadata": "true"})[0], range(40)))
    assert statuses.count(200) <= 25  # 20 in the first second, a few more if the burst spans two
    assert 429 in statuses and set(statuses) <= {200, 429}


def test_bad_inject_specs_are_usage_errors(tmp_path, capsys):
    from mi_cli.cli.main import main

    assert main(["--db", str(tmp_path / "x.db"), "serve", "--inject", "teapot"]) == 2
    assert capsys.readouterr().err.startswith("ERROR: (InvalidArgumentValue) --inject 'teapot'")


def test_ctrl_c_stops_the_server_cleanly(faulty):
    import signal
    from pathlib import Path

    srv = faulty()
    assert get(_url(srv), {"Metadata": "true"})[0] == 200
    assert srv.stop(signal.SIGINT) == 0
    assert not Path(f"{srv.db}.serve.json").exists()
    assert "Traceback" not in srv.log.read_text() and "ERROR" not in srv.log.read_text()


def test_a_host_other_than_loopback_is_warned_about(faulty):
    srv = faulty("--host", "127.0.0.2")
    assert "WARNING: binding 127.0.0.2" in srv.log.read_text()


def test_a_port_in_use_or_out_of_range_is_one_line(faulty, tmp_path, capsys):
    from mi_cli.cli.main import main

    srv = faulty()
    port = int(srv.base.rsplit(":", 1)[1])
    assert main(["--db", str(tmp_path / "x.db"), "serve", "--port", str(port)]) == 1
    assert capsys.readouterr().err.startswith("ERROR: (AddressInUse) Cannot bind 127.0.0.1:")
    assert main(["--db", str(tmp_path / "x.db"), "serve", "--port", "99999"]) == 2
    assert capsys.readouterr().err.startswith("ERROR: (InvalidArgumentValue)")


def test_one_port_per_resource_answers_bare_imds_paths(faulty, client_env):
    srv = faulty("--resource", "vm-user", "-g", "rg")
    status, body, _ = get(f"{srv.base}/metadata/identity/oauth2/token?api-version=2018-02-01&resource={VAULT}", {"Metadata": "true"})
    assert status == 200 and body["client_id"] == srv.ids["ua-one"]["clientId"]
    client_env({"AZURE_POD_IDENTITY_AUTHORITY_HOST": srv.base, "NO_PROXY": "127.0.0.1"})
    assert ManagedIdentityCredential().get_token(f"{VAULT}/.default").token


def test_the_throttle_forgets_quiet_keys_and_keeps_long_ones_short(monkeypatch):
    from mi_cli.server import state

    now = [0.0]
    monkeypatch.setattr(state.time, "monotonic", lambda: now[0])
    throttle = state.Throttle()
    for n in range(5000):  # paths anyone can send, each a new key
        key = throttle.bucket(f"/subscriptions/{n}/" + "x" * 10_000)
        assert len(key) == 64 and throttle.enter(key)
        throttle.leave(key)
        now[0] += 0.01  # a hundred a second
    assert len(throttle._recent) <= 1024 + 100 and not throttle._active
    assert throttle.bucket("/subscriptions/s/resourcegroups/rg") == "/subscriptions/s/resourcegroups/rg"
