"""Replicas: two `mi serve` processes over one PostgreSQL store both serve it, and a change made by a third `mi`
process (another machine's shell) applies to the very next request on both."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import jwt
import pytest
import requests
from azure.core.exceptions import HttpResponseError

from tests.clients.conftest import (DatabaseStore, Server, beside, get, mi_json, server_env, start_server,
                                    wait_for_address)
from mi_cli.services import endpoints

VAULT = "https://vault.azure.net"
VAULT_URL = "https://kv1.vault.azure.net"
STORAGE = "https://storage.azure.com/"
ORDERS = "api://orders"
GITHUB = "https://token.actions.githubusercontent.com"
ROLES = [{"allowedMemberTypes": ["Application"], "description": "Read the orders", "displayName": "Orders reader",
          "value": "Orders.Read"}]


def third(db: str, *argv: str, output: bool = True):
    """`mi` run by another process (as on a third machine, sharing only the database): its JSON (`output`: the
    command takes -o)."""
    done = subprocess.run([sys.executable, "-m", "mi_cli", "--db", str(db), *argv, *(["-o", "json"] if output else [])],
                          env=server_env(db), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (argv, done.stderr)
    return json.loads(done.stdout) if done.stdout.strip() else None


@dataclass
class Replicas:
    db: DatabaseStore
    a: Server
    b: Server
    ids: dict = field(default_factory=dict)

    def both(self) -> list[Server]:
        return [self.a, self.b]

    def stop(self) -> None:
        for server in self.both():
            if server.proc.poll() is None:
                assert server.stop() == 0, server.log.read_text()


def port(server: Server) -> int:
    return int(server.base.rsplit(":", 1)[1])


def exports(db: DatabaseStore, server: Server, resource: str = "vm1") -> dict[str, str]:
    """`mi env` for one of the replicas (--port): its IMDS, its proxy, the store's CA bundle."""
    return mi_json(db, "env", "--resource", resource, "-g", "rg", "--port", str(port(server)))


def token(server: Server, arm_id: str, audience: str = VAULT, extra: str = "") -> tuple[int, dict]:
    """IMDS's answer at `server` for the resource `arm_id`."""
    status, body, _ = get(f"{server.base}{arm_id}/metadata/identity/oauth2/token?api-version=2018-02-01"
                          f"&resource={audience}{extra}", {"Metadata": "true"})
    return status, body


def session(values: dict[str, str]) -> requests.Session:
    """A client pointed at the local cloud as `mi env`'s exports point one: its proxy, the store's CA bundle."""
    through = requests.Session()
    through.trust_env = False
    through.proxies = {"https": values["HTTPS_PROXY"]}
    through.verify = values["REQUESTS_CA_BUNDLE"]
    return through


def read_secret(client_env, values: dict[str, str]) -> dict:
    """What an unmodified app gets from Key Vault with ManagedIdentityCredential, in an environment of `mi env`."""
    from azure.identity import ManagedIdentityCredential
    from azure.keyvault.secrets import SecretClient

    client_env(values)
    client = SecretClient(VAULT_URL, ManagedIdentityCredential())  # a new client: a new tunnel through the proxy
    try:
        return {"value": client.get_secret("db-password").value}
    except HttpResponseError as exc:
        return {"status": exc.status_code, "error": type(exc).__name__, "message": str(exc)[:600]}
    finally:
        client.close()


def build(db: DatabaseStore) -> dict:
    """vm1 (system identity) may read kv1's secrets; vm2 has the user-assigned identity 'shared'; the orders API."""
    def ok(*argv: str):
        return mi_json(db, *argv)

    ok("group", "create", "-n", "rg", "-l", "westeurope")
    ids = {"vm1": ok("resource", "create", "-g", "rg", "-n", "vm1", "--type", "vm", "--system-assigned"),
           "kv1": ok("resource", "create", "-g", "rg", "-n", "kv1", "--type", "keyvault"),
           "shared": ok("identity", "create", "-g", "rg", "-n", "shared")}
    ids["vm2"] = ok("resource", "create", "-g", "rg", "-n", "vm2", "--type", "vm", "--user-assigned", "shared")
    ok("keyvault", "secret", "set", "--vault-name", "kv1", "-n", "db-password", "--value", "s3cret")
    ok("role", "assignment", "create", "--assignee", "vm1", "--role", "Key Vault Secrets User", "--scope", ids["kv1"]["id"])
    ok("app", "create", "--display-name", "orders-api", "--identifier-uris", ORDERS, "--app-roles", json.dumps(ROLES))
    return ids


def start(db: DatabaseStore) -> Replicas:
    a = start_server(db)
    try:
        b = start_server(db)
    except Exception:
        a.stop()
        raise
    return Replicas(db, a, b)


@pytest.fixture(scope="module")
def replicas(pg_server, tmp_path_factory):
    """Two replicas over one database, with the tenant of `build`."""
    db = DatabaseStore.at(pg_server.database("replicas"), tmp_path_factory.mktemp("replicas") / "data")
    ids = build(db)
    running = start(db)
    running.ids = ids
    yield running
    running.stop()
    pg_server.drop(db)


@pytest.fixture
def fresh(pg_db, tmp_path):
    """A database of its own with the tenant of `build`, and two replicas over it (stopped at the end)."""
    db = DatabaseStore.at(pg_db, tmp_path / "data")
    ids = build(db)
    running = start(db)
    running.ids = ids
    yield running
    running.stop()


def test_both_replicas_issue_tokens_each_accepts_the_others_and_the_database_logs_both(replicas, client_env):
    from azure.identity import ManagedIdentityCredential

    db, storage = replicas.db, STORAGE.rstrip("/")
    tokens = {}
    for server, audience in ((replicas.a, VAULT), (replicas.b, storage)):
        client_env(exports(db, server))
        tokens[audience] = ManagedIdentityCredential().get_token(f"{audience}/.default").token
    # one tenant, one set of keys: a token from either verifies against the other's JWKS
    tenant = mi_json(db, "account", "show")["tenantId"]
    for audience, other in ((VAULT, replicas.b), (storage, replicas.a)):
        status, config, _ = get(f"{other.base}/{tenant}/.well-known/openid-configuration")
        assert status == 200
        key = jwt.PyJWKClient(config["jwks_uri"]).get_signing_key_from_jwt(tokens[audience])
        claims = jwt.decode(tokens[audience], key.key, algorithms=["RS256"], audience=audience, issuer=config["issuer"])
        assert claims["oid"] == replicas.ids["vm1"]["identity"]["principalId"]
    # the sign-ins of both are in the database's activity log
    log = third(db, "log", "--operation", "token/issue")
    for audience in (VAULT, storage):
        assert any(e["status"] == "Succeeded" and f"aud={audience};" in e["detail"] for e in log), (audience, log)


def test_a_role_removed_by_a_third_process_refuses_the_next_request_on_both(replicas, client_env):
    db, vault = replicas.db, replicas.ids["kv1"]["id"]
    assignment = ["--assignee", "vm1", "--role", "Key Vault Secrets User", "--scope", vault]
    for server in replicas.both():
        assert read_secret(client_env, exports(db, server)) == {"value": "s3cret"}
    third(db, "role", "assignment", "delete", *assignment, "--yes")
    try:
        for server in replicas.both():
            refused = read_secret(client_env, exports(db, server))
            assert refused["status"] == 403 and "getSecret/action" in refused["message"], refused
    finally:
        third(db, "role", "assignment", "create", *assignment)
    for server in replicas.both():
        assert read_secret(client_env, exports(db, server)) == {"value": "s3cret"}


def test_an_identity_deleted_by_a_third_process_gets_no_token_from_either(replicas):
    db, vm2 = replicas.db, replicas.ids["vm2"]["id"]
    before = mi_json(db, "identity", "show", "-g", "rg", "-n", "shared")["principalId"]
    for server in replicas.both():
        status, body = token(server, vm2)
        assert status == 200 and jwt.decode(body["access_token"], options={"verify_signature": False})["oid"] == before
    third(db, "identity", "delete", "-g", "rg", "-n", "shared", "--yes")
    for server in replicas.both():
        assert token(server, vm2) == (400, {"error": "invalid_request", "error_description": "Identity not found"})
    # made again under the same name and attached again: a new identity, whose tokens both issue (none cached of the
    # old one is served)
    again = third(db, "identity", "create", "-g", "rg", "-n", "shared")
    third(db, "identity", "assign", "--resource", "vm2", "-g", "rg", "--identities", "shared")
    assert again["principalId"] != before
    for server in replicas.both():
        status, body = token(server, vm2)
        assert status == 200, body
        claims = jwt.decode(body["access_token"], options={"verify_signature": False})
        assert (claims["oid"], claims["appid"]) == (again["principalId"], again["clientId"])


def test_a_key_rotated_and_retired_by_a_third_process_signs_the_next_token_on_both(replicas, client_env):
    db, vm1 = replicas.db, replicas.ids["vm1"]["id"]

    def kid(body: dict) -> str:
        return jwt.get_unverified_header(body["access_token"])["kid"]

    cached = {}
    for server in replicas.both():
        first, again = token(server, vm1)[1], token(server, vm1)[1]
        assert first["access_token"] == again["access_token"]  # each replica caches the token it issued
        cached[server.base] = first
    old = kid(cached[replicas.a.base])
    new = third(db, "token", "keys", "rotate")["kid"]
    for server in replicas.both():
        body = token(server, vm1)[1]
        assert kid(body) == new != old and body["access_token"] != cached[server.base]["access_token"]
    third(db, "token", "keys", "retire", "--kid", old)
    for server in replicas.both():  # every token served now verifies: none signed by the retired key
        assert read_secret(client_env, exports(db, server)) == {"value": "s3cret"}


def test_an_app_role_granted_by_a_third_process_is_in_the_next_token_on_both(replicas):
    db, vm1 = replicas.db, replicas.ids["vm1"]["id"]

    def roles(server: Server) -> list[str]:
        status, body = token(server, vm1, ORDERS)
        assert status == 200, body
        return jwt.decode(body["access_token"], options={"verify_signature": False}).get("roles", [])

    assert [roles(server) for server in replicas.both()] == [[], []]
    grant = ["--assignee", "vm1", "--app", ORDERS, "--role", "Orders.Read"]
    third(db, "app", "role", "assign", *grant)
    try:
        assert [roles(server) for server in replicas.both()] == [["Orders.Read"], ["Orders.Read"]]
    finally:
        third(db, "app", "role", "remove", *grant, output=False)
    assert [roles(server) for server in replicas.both()] == [[], []]


def test_after_a_reset_by_a_third_process_both_follow_the_stores_new_ca(fresh, client_env):
    """`mi reset` empties the store, its CA too; the next `mi serve` of the store (here a third replica, as in a
    rolling restart) makes a new CA and writes it to the bundle that `mi env` hands out. The replicas already
    running present certificates of the new CA from their next tunnel on, so every client trusting the bundle
    keeps working through all of them."""
    db = fresh.db
    bundle = Path(exports(db, fresh.a)["REQUESTS_CA_BUNDLE"])
    old_bundle = bundle.read_text()
    for server in fresh.both():
        assert read_secret(client_env, exports(db, server)) == {"value": "s3cret"}
    third(db, "reset", "--yes", output=False)
    fresh.ids = build(db)  # the tenant made again: new tenant, keys, principals
    c = start_server(db)
    try:
        assert bundle.read_text() != old_bundle  # the new CA
        for server in (*fresh.both(), c):
            assert read_secret(client_env, exports(db, server)) == {"value": "s3cret"}, server.log.read_text()
        # a federation issuer's host, whose certificate each server issues itself when first asked: of the new CA too
        third(db, "federation", "issuer", "create", "--issuer", GITHUB)
        for server in (*fresh.both(), c):
            discovery = session(exports(db, server)).get(f"{GITHUB}/.well-known/openid-configuration", timeout=60)
            assert discovery.status_code == 200 and discovery.json()["issuer"] == GITHUB
    finally:
        assert c.stop() == 0, c.log.read_text()
    for server in fresh.both():
        assert "the store's CA was replaced" in server.log.read_text()


def test_the_address_file_names_a_running_replica_until_the_last_stops(fresh):
    db = fresh.db
    where = beside(db)
    main = endpoints.address_file(where)

    def named() -> int:
        return int(mi_json(db, "env", "--resource", "vm1", "-g", "rg")["AZURE_POD_IDENTITY_AUTHORITY_HOST"]
                   .split("/", 3)[2].rsplit(":", 1)[1])

    assert named() == port(fresh.b)  # the one started last
    # each replica's own exports, by its port
    proxies = {exports(db, server)["HTTPS_PROXY"] for server in fresh.both()}
    assert len(proxies) == 2
    assert fresh.b.stop() == 0
    assert named() == port(fresh.a) and main.is_file()  # the other runs: it is named now
    b = start_server(db)  # started again: named; the first one's stop leaves it named
    fresh.b = b
    assert named() == port(b)
    assert fresh.a.stop() == 0
    assert named() == port(b)
    assert b.stop() == 0
    assert not main.exists() and not list(endpoints.replica_file(where, 0).parent.glob("*.json"))


def test_replicas_on_one_machine_keep_azurite_apart_and_serve_an_account_a_third_process_makes(fresh):
    db = fresh.db
    vm1 = fresh.ids["vm1"]["id"]
    account = third(db, "resource", "create", "-g", "rg", "-n", "st1", "--type", "storage")
    third(db, "role", "assignment", "create", "--assignee", "vm1", "--role", "Storage Blob Data Contributor",
          "--scope", account["id"])
    url = "https://st1.blob.core.windows.net"
    made = {}
    for name, server in (("from-a", fresh.a), ("from-b", fresh.b)):
        through = session(exports(db, server))
        headers = {"Authorization": f"Bearer {token(server, vm1, STORAGE)[1]['access_token']}", "x-ms-version": "2025-11-05"}
        created = through.put(f"{url}/{name}?restype=container", headers=headers, timeout=300)
        assert created.status_code == 201, (created.status_code, created.text, server.log.read_text())
        listed = through.get(f"{url}/?comp=list", headers=headers, timeout=120)
        assert listed.status_code == 200
        made[name] = (through, headers, listed.text)
    # each replica's Azurite keeps its data in a folder of its own: two Azurites never share one
    workspaces = {line.rsplit("data in ", 1)[1].strip() for server in fresh.both()
                  for line in server.log.read_text().splitlines() if "Blob Storage: served through Azurite" in line}
    assert len(workspaces) == 2 and f"{beside(db)}.azurite" in workspaces
    assert "<Name>from-a</Name>" in made["from-a"][2] and "<Name>from-b</Name>" not in made["from-a"][2]
    # the account deleted by the third process: neither replica serves its host any more
    third(db, "resource", "delete", "-g", "rg", "-n", "st1", "--type", "storage", "--yes")
    for server in fresh.both():
        with pytest.raises(requests.exceptions.ProxyError):  # a new tunnel: the proxy refuses the host
            session(exports(db, server)).get(f"{url}/?comp=list", timeout=60)


def test_serve_and_env_never_show_the_databases_password(pg_server, tmp_path):
    secret = "Pa55-never-shown"
    user_at = pg_server.base.split("://", 1)[1].split("@", 1)[0]
    database = pg_server.database("secret")
    url = database.replace(f"://{user_at}@", f"://{user_at}:{secret}@")
    assert secret in url
    db = DatabaseStore.at(url, tmp_path / "data")  # the server trusts loopback: any password signs in
    try:
        mi_json(db, "group", "create", "-n", "rg", "-l", "westeurope")
        mi_json(db, "resource", "create", "-g", "rg", "-n", "vm1", "--type", "vm", "--system-assigned")
        mi_json(db, "resource", "create", "-g", "rg", "-n", "st1", "--type", "storage")  # Azurite starts with mi serve
        # the URL in MI_DB rather than on the command line
        log = tmp_path / "serve.log"
        with open(log, "w") as err:
            proc = subprocess.Popen([sys.executable, "-m", "mi_cli", "serve", "--port", "0"], stdout=subprocess.DEVNULL,
                                    stderr=err, env={**server_env(db), "MI_DB": url})
        try:
            record = wait_for_address(beside(db), proc, log)
            banner = log.read_text()
            assert "listening on" in banner and database.rsplit("/", 1)[1] in banner and secret not in banner
            values = mi_json(db, "env", "--resource", "vm1", "-g", "rg")
            assert int(values["AZURE_POD_IDENTITY_AUTHORITY_HOST"].split("/", 3)[2].rsplit(":", 1)[1]) == record["port"]
            assert secret not in json.dumps(values)
            files = [str(p) for p in (tmp_path / "data").rglob("*")]
            assert files and not any(secret in name for name in files)
            # Azurite, the server's child, is not handed MI_DB
            children = _children(proc.pid)
            assert children and all(b"MI_DB=" not in Path(f"/proc/{pid}/environ").read_bytes() for pid in children)
        finally:
            proc.terminate()
            assert proc.wait(timeout=30) == 0, log.read_text()
        assert secret not in log.read_text()
        # errors: no server at the URL's port, and no mi serve running for `mi env`
        closed = url.replace(f":{pg_server.base.rsplit(':', 1)[1]}/", ":1/")
        serve, env = ["serve", "--port", "0"], ["env", "--resource", "vm1", "-g", "rg"]
        for where, argv in ((closed, serve), (closed, env), (url, env)):
            done = subprocess.run([sys.executable, "-m", "mi_cli", "--db", where, *argv], env=server_env(db),
                                  capture_output=True, text=True, timeout=120)
            assert done.returncode != 0 and done.stderr.startswith("ERROR: "), (argv, done.stderr)
            assert secret not in done.stderr and secret not in done.stdout, done.stderr
    finally:
        pg_server.drop(database)


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (Linux's /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found
