"""A server that answers from memory: changes by other processes apply at once, and no sign-in is lost."""

# A running `mi serve` answers from what it read before only while the store is unchanged: a change made by another
# process applies to the very next request on the same keep-alive connection (a role removed, an identity deleted, a
# key retired), on both stores; and every sign-in it answered is in the activity log, for `mi log` at once and after
# a stop (SIGTERM, Ctrl-C), however many clients asked at the same time.

from __future__ import annotations

import http.client
import json
import signal
import ssl
import threading
from pathlib import Path

import pytest

from tests.clients.conftest import STORE_KINDS, beside, mi_json, start_server

pytestmark = pytest.mark.parametrize("store_kind", STORE_KINDS, indirect=True, scope="module")
VAULT = "https://vault.azure.net"
TIMEOUT = 30


def _address(server) -> dict:
    return json.loads(Path(f"{beside(server.db)}.serve.json").read_text())


class Plain:
    """One keep-alive connection to the token endpoints."""

    def __init__(self, server) -> None:
        address = _address(server)
        self.conn = http.client.HTTPConnection(address["host"], address["port"], timeout=TIMEOUT)

    def get(self, path: str, headers: dict[str, str]) -> tuple[int, dict]:
        self.conn.request("GET", path, headers=headers)
        response = self.conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")

    def close(self) -> None:
        self.conn.close()


class Vault:
    """One keep-alive connection to a vault through the local cloud's proxy, over TLS."""

    def __init__(self, server, vault: str) -> None:
        address = _address(server)
        context = ssl.create_default_context(cafile=f"{beside(server.db)}.ca-bundle.pem")
        self.conn = http.client.HTTPSConnection(address["host"], address["proxy_port"], timeout=TIMEOUT, context=context)
        self.conn.set_tunnel(f"{vault}.vault.azure.net", 443)

    def get(self, path: str, token: str) -> tuple[int, dict]:
        self.conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        response = self.conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")

    def close(self) -> None:
        self.conn.close()


def _token_path(arm_id: str, query: str = "") -> str:
    return f"{arm_id}/metadata/identity/oauth2/token?api-version=2018-02-01&resource={VAULT}{query}"


def _sign_ins(db) -> list[dict]:  # noqa: ANN001
    return mi_json(db, "log", "--operation", "Microsoft.ManagedIdentity/token/issue")


@pytest.fixture(scope="module")
def cloud(module_store):
    db = module_store("memory")
    mi_json(db, "group", "create", "-n", "rg", "-l", "westeurope")
    vm = mi_json(db, "resource", "create", "-g", "rg", "-n", "vm1", "--type", "vm", "--system-assigned")
    ua = mi_json(db, "identity", "create", "-g", "rg", "-n", "ua1")
    app = mi_json(db, "resource", "create", "-g", "rg", "-n", "app1", "--type", "vm", "--user-assigned", "ua1")
    vault = mi_json(db, "resource", "create", "-g", "rg", "-n", "kv1", "--type", "keyvault")
    mi_json(db, "keyvault", "secret", "set", "--vault-name", "kv1", "-n", "s1", "--value", "v1")
    server = start_server(db)
    yield {"db": db, "server": server, "vm": vm, "ua": ua, "app": app, "vault": vault}
    assert server.stop() == 0, server.log.read_text()[-3000:]
    assert "Traceback" not in server.log.read_text(), server.log.read_text()[-3000:]


def test_a_role_removed_by_another_process_refuses_the_next_request_on_the_same_connection(cloud):
    db, role = cloud["db"], ["--assignee", "vm1", "--role", "Key Vault Secrets User", "--scope", cloud["vault"]["id"]]
    plain = Plain(cloud["server"])
    status, body = plain.get(_token_path(cloud["vm"]["id"]), {"Metadata": "true"})
    assert status == 200
    token = body["access_token"]
    vault = Vault(cloud["server"], "kv1")
    try:
        assert vault.get("/secrets/s1?api-version=7.4", token)[0] == 403
        mi_json(db, "role", "assignment", "create", *role)
        for _ in range(20):  # answered from what the server read (the token verified, the roles), again and again
            status, secret = vault.get("/secrets/s1?api-version=7.4", token)
            assert (status, secret.get("value")) == (200, "v1")
        mi_json(db, "role", "assignment", "delete", *role, "--yes")
        status, answer = vault.get("/secrets/s1?api-version=7.4", token)
        assert status == 403 and answer["error"]["innererror"]["code"] == "ForbiddenByRbac", answer
        mi_json(db, "role", "assignment", "create", *role)
        assert vault.get("/secrets/s1?api-version=7.4", token)[0] == 200
        # a secret changed by another process is read anew too
        mi_json(db, "keyvault", "secret", "set", "--vault-name", "kv1", "-n", "s1", "--value", "v2")
        assert vault.get("/secrets/s1?api-version=7.4", token)[1]["value"] == "v2"
    finally:
        vault.close()
        plain.close()
        mi_json(db, "role", "assignment", "delete", *role, "--yes")


def test_an_identity_deleted_by_another_process_refuses_the_next_token_on_the_same_connection(cloud):
    db = cloud["db"]
    plain = Plain(cloud["server"])
    try:
        first = [plain.get(_token_path(cloud["app"]["id"]), {"Metadata": "true"}) for _ in range(20)]
        assert {status for status, _ in first} == {200}
        assert len({body["access_token"] for _, body in first}) == 1  # the cached token, each time
        mi_json(db, "identity", "delete", "-g", "rg", "-n", "ua1", "--yes")
        status, body = plain.get(_token_path(cloud["app"]["id"]), {"Metadata": "true"})
        assert (status, body["error_description"]) == (400, "Identity not found"), body
        # made again under the same name and attached again: a new identity, whose token is served (not the old one's)
        again = mi_json(db, "identity", "create", "-g", "rg", "-n", "ua1")
        mi_json(db, "identity", "assign", "--resource", "app1", "-g", "rg", "--identities", "ua1")
        status, body = plain.get(_token_path(cloud["app"]["id"]), {"Metadata": "true"})
        assert status == 200 and body["client_id"] == again["clientId"] != cloud["ua"]["clientId"]
    finally:
        plain.close()


def test_a_key_retired_by_another_process_signs_no_more_tokens_and_its_tokens_are_refused(cloud):
    db = cloud["db"]
    plain = Plain(cloud["server"])
    vault = Vault(cloud["server"], "kv1")
    role = ["--assignee", "vm1", "--role", "Key Vault Secrets User", "--scope", cloud["vault"]["id"]]
    mi_json(db, "role", "assignment", "create", *role)
    try:
        old = plain.get(_token_path(cloud["vm"]["id"]), {"Metadata": "true"})[1]["access_token"]
        assert vault.get("/secrets/s1?api-version=7.4", old)[0] == 200
        old_kid = json.loads(__import__("base64").urlsafe_b64decode(old.split(".")[0] + "=="))["kid"]
        mi_json(db, "token", "keys", "rotate")
        mi_json(db, "token", "keys", "retire", "--kid", old_kid)
        status, answer = vault.get("/secrets/s1?api-version=7.4", old)
        assert status == 401, answer
        new = plain.get(_token_path(cloud["vm"]["id"]), {"Metadata": "true"})[1]["access_token"]
        assert new != old and vault.get("/secrets/s1?api-version=7.4", new)[0] == 200
    finally:
        vault.close()
        plain.close()
        mi_json(db, "role", "assignment", "delete", *role, "--yes")


def _kid(token: str) -> str:
    return json.loads(__import__("base64").urlsafe_b64decode(token.split(".")[0] + "=="))["kid"]


def test_bypass_cache_signs_a_new_token_each_time_and_a_key_rotated_by_another_process_signs_the_next(cloud):
    """New tokens are signed a request ahead (server/signing): each is served once, and a rotation signs the next."""
    plain = Plain(cloud["server"])
    path = _token_path(cloud["vm"]["id"], "&bypass_cache=true")
    try:
        first = [plain.get(path, {"Metadata": "true"}) for _ in range(8)]
        assert {status for status, _ in first} == {200}
        tokens_ = [body["access_token"] for _, body in first]
        assert len(set(tokens_)) == 8 and len({_kid(t) for t in tokens_}) == 1
        rotated = mi_json(cloud["db"], "token", "keys", "rotate")
        status, body = plain.get(path, {"Metadata": "true"})
        assert status == 200 and _kid(body["access_token"]) == rotated["kid"] != _kid(tokens_[0]), (rotated, body)
    finally:
        plain.close()


def _hammer(server, arm_id: str, clients: int, each: int) -> list[int]:
    """`clients` keep-alive connections at once, `each` token requests apiece (every third bypasses the cache);
    the statuses answered."""
    statuses: list[int] = []
    lock = threading.Lock()
    failures: list[BaseException] = []

    def run() -> None:
        plain = Plain(server)
        try:
            mine = [plain.get(_token_path(arm_id, "&bypass_cache=true" if i % 3 == 0 else ""), {"Metadata": "true"})[0]
                    for i in range(each)]
        except BaseException as exc:  # noqa: BLE001 - raised in the test's thread below
            failures.append(exc)
            return
        finally:
            plain.close()
        with lock:
            statuses.extend(mine)

    threads = [threading.Thread(target=run) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return statuses


def test_every_sign_in_answered_is_in_the_log_at_once(cloud):
    """Sign-ins are written in batches; `mi log` waits for those answered before it started."""
    db = cloud["db"]
    before = len(_sign_ins(db))
    statuses = _hammer(cloud["server"], cloud["vm"]["id"], 4, 50)
    refused = Plain(cloud["server"])
    try:
        assert refused.get(_token_path(cloud["vm"]["id"], "&client_id=00000000-0000-0000-0000-000000000000"),
                           {"Metadata": "true"})[0] == 400
    finally:
        refused.close()
    assert statuses == [200] * 200
    log = _sign_ins(db)
    assert len(log) == before + 201
    assert [e["status"] for e in log[-201:]].count("Failed") == 1


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_clean_stop_writes_every_sign_in_it_answered(module_store, signum):
    db = module_store("stop")
    mi_json(db, "group", "create", "-n", "rg", "-l", "westeurope")
    vm = mi_json(db, "resource", "create", "-g", "rg", "-n", "vm1", "--type", "vm", "--system-assigned")
    server = start_server(db)
    try:
        statuses = _hammer(server, vm["id"], 4, 75) + _hammer(server, vm["id"], 1, 100)
    finally:
        assert server.stop(signum) == 0, server.log.read_text()[-3000:]
    assert statuses == [200] * 400
    assert len(_sign_ins(db)) == 400
    assert "Traceback" not in server.log.read_text()
