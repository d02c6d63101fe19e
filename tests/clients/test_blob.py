"""The seed's second scenario end to end: an unmodified app uses Blob Storage with its managed identity through
`mi serve`, which runs Azurite and stands in front of it as Storage's authorisation (roles, conditions, keys)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.clients.conftest import STORE_KINDS, mi_json, start_server

ACCOUNT_URL = "https://st1.blob.core.windows.net"
READ = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read"
ONLY_LOGS = ("((!(ActionMatches{'" + READ + "'})) OR "
             "(@Resource[Microsoft.Storage/storageAccounts/blobServices/containers:name] StringEquals 'logs'))")
# The app: azure-storage-blob as any application uses it, nothing but its environment pointing it at mi. It runs
# the steps it is given in one process (one credential, one client), so that a change made with mi between two
# steps ("mi" steps) is seen by the very next call of a client that already holds a token.
APP = r"""
import asyncio, json, subprocess, sys
from azure.core.exceptions import HttpResponseError

steps, mode, connection = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]

def failure(exc):
    return {"status": exc.status_code, "code": exc.error_code}

def sync_app():
    from azure.identity import DefaultAzureCredential
    from azure.storage.blob import BlobServiceClient
    service = BlobServiceClient.from_connection_string(connection) if connection else \
        BlobServiceClient(ACCOUNT, credential=DefaultAzureCredential())
    out = []
    for op, *args in steps:
        try:
            if op == "mi":
                subprocess.run([sys.executable, "-m", "mi_cli", *args], check=True, capture_output=True)
                continue
            if op == "create":
                service.create_container(args[0]); out.append("created")
            elif op == "upload":
                service.get_blob_client(args[0], args[1]).upload_blob(args[2].encode(), overwrite=True); out.append("uploaded")
            elif op == "download":
                out.append(service.get_blob_client(args[0], args[1]).download_blob().readall().decode())
            elif op == "list":
                out.append(sorted(b.name for b in service.get_container_client(args[0]).list_blobs()))
            elif op == "containers":
                out.append(sorted(c.name for c in service.list_containers()))
            elif op == "delete":
                service.get_blob_client(args[0], args[1]).delete_blob(); out.append("deleted")
            elif op == "tags":
                blob = service.get_blob_client(args[0], args[1])
                blob.set_blob_tags({"k": "v"}); out.append(blob.get_blob_tags())
        except HttpResponseError as exc:
            out.append(failure(exc))
    return out

async def async_app():
    from azure.identity.aio import DefaultAzureCredential
    from azure.storage.blob.aio import BlobServiceClient
    out = []
    async with DefaultAzureCredential() as credential, BlobServiceClient(ACCOUNT, credential=credential) as service:
        for op, *args in steps:
            try:
                if op == "upload":
                    await service.get_blob_client(args[0], args[1]).upload_blob(args[2].encode(), overwrite=True)
                    out.append("uploaded")
                elif op == "download":
                    out.append((await (await service.get_blob_client(args[0], args[1]).download_blob()).readall()).decode())
            except HttpResponseError as exc:
                out.append(failure(exc))
    return out

print(json.dumps(sync_app() if mode == "sync" else asyncio.run(async_app())))
""".replace("ACCOUNT", repr(ACCOUNT_URL))


def azurite() -> str:
    """azurite-blob as the README's test setup installs it (tests/conftest.py), or as MI_AZURITE names it."""
    if os.environ.get("MI_AZURITE") and Path(os.environ["MI_AZURITE"]).is_file():
        return os.environ["MI_AZURITE"]
    pytest.fail("Azurite is not installed: run `npm install --prefix .azurite azurite@3.35.0` (the README's test setup) "
                "or point MI_AZURITE at azurite-blob.")


# The tests of the running cloud run against a server over an SQLite store and one over a PostgreSQL store.
both_stores = pytest.mark.parametrize("store_kind", STORE_KINDS, indirect=True, scope="module")


def _mi(db: Path | str, *argv: str):
    return mi_json(db, *argv)


@pytest.fixture(scope="module")
def cloud(module_store):
    """A store with vm1 (system identity on) and storage account st1, and a running `mi serve` with Azurite."""
    db = module_store("blob")
    _mi(db, "group", "create", "-n", "rg", "-l", "westeurope")
    vm = _mi(db, "resource", "create", "-g", "rg", "-n", "vm1", "--type", "vm", "--system-assigned")
    account = _mi(db, "resource", "create", "-g", "rg", "-n", "st1", "--type", "storage")
    srv = start_server(db, "--azurite", azurite())
    env = _mi(db, "env", "--resource", "vm1", "-g", "rg")
    state = {"db": db, "vm": vm, "account": account, "env": env, "server": srv}
    yield state
    last = state["server"]  # a test may have restarted it
    assert last.stop() == 0, last.log.read_text()


def app(cloud, *steps: list[str], mode: str = "sync", connection: str = "") -> list:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "IDENTITY_", "MSI_", "IMDS_"))}
    env.update(cloud["env"], MI_DB=str(cloud["db"]))
    r = subprocess.run([sys.executable, "-c", APP, json.dumps(steps), mode, connection], env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def role(cloud, verb: str, name: str, *extra: str, scope: str | None = None) -> list[str]:
    """The `mi` step (or command) that creates or deletes vm1's assignment of `name` at the account."""
    argv = ["role", "assignment", verb, "--assignee", "vm1", "--role", name, "--scope", scope or cloud["account"]["id"],
            *extra]
    return argv + (["--yes"] if verb == "delete" else [])


DENIED = {"status": 403, "code": "AuthorizationPermissionMismatch"}


@both_stores
def test_contributor_writes_reader_reads_and_a_role_removed_refuses_the_next_call(cloud):
    db = cloud["db"]
    assert app(cloud, ["create", "logs"]) == [DENIED]  # no role at all
    _mi(db, *role(cloud, "create", "Storage Blob Data Contributor"))
    assert app(cloud, ["create", "logs"], ["create", "other"], ["upload", "logs", "a/1.txt", "one"],
               ["upload", "other", "b.txt", "two"], ["download", "logs", "a/1.txt"]) == [
        "created", "created", "uploaded", "uploaded", "one"]
    _mi(db, *role(cloud, "delete", "Storage Blob Data Contributor"))
    _mi(db, *role(cloud, "create", "Storage Blob Data Reader"))
    steps = [["download", "logs", "a/1.txt"], ["list", "logs"], ["upload", "logs", "a/2.txt", "x"],
             ["mi", *role(cloud, "delete", "Storage Blob Data Reader")], ["download", "logs", "a/1.txt"]]
    assert app(cloud, *steps) == ["one", ["a/1.txt"], DENIED, DENIED]
    # every decision is in the activity log, with the reason mi access check gives
    log = _mi(db, "log", "--operation", READ)
    assert [e["status"] for e in log[-2:]] == ["Succeeded", "Failed"]
    check = _mi(db, "access", "check", "--principal", "vm1", "--action", READ, "--scope",
                f"{cloud['account']['id']}/blobServices/default/containers/logs/blobs/a/1.txt")
    assert check["allowed"] is False and check["reason"] in log[-1]["detail"]


@both_stores
def test_the_async_client_reads_and_writes_with_default_azure_credential(cloud):
    db = cloud["db"]
    _mi(db, *role(cloud, "create", "Storage Blob Data Contributor"))
    try:
        assert app(cloud, ["upload", "logs", "async.txt", "from async"], ["download", "logs", "async.txt"],
                   mode="async") == ["uploaded", "from async"]
    finally:
        _mi(db, *role(cloud, "delete", "Storage Blob Data Contributor"))


@both_stores
def test_a_condition_limits_a_reader_to_one_container(cloud):
    db = cloud["db"]
    _mi(db, *role(cloud, "create", "Storage Blob Data Contributor"))
    app(cloud, ["upload", "logs", "c.txt", "in logs"], ["upload", "other", "c.txt", "in other"])
    _mi(db, *role(cloud, "delete", "Storage Blob Data Contributor"))
    _mi(db, *role(cloud, "create", "Storage Blob Data Reader", "--condition", ONLY_LOGS))
    try:
        assert app(cloud, ["download", "logs", "c.txt"], ["download", "other", "c.txt"], ["list", "logs"],
                   ["list", "other"]) == ["in logs", DENIED, ["a/1.txt", "async.txt", "c.txt"], DENIED]
        check = _mi(db, "access", "check", "--principal", "vm1", "--action", READ, "--scope",
                    f"{cloud['account']['id']}/blobServices/default/containers/other/blobs/c.txt")
        assert check["allowed"] is False and "condition" in check["reason"]
    finally:
        _mi(db, *role(cloud, "delete", "Storage Blob Data Reader"))


def _session(cloud):
    import requests

    session = requests.Session()
    session.trust_env = False
    session.proxies = {"https": cloud["env"]["HTTPS_PROXY"]}
    session.verify = cloud["env"]["REQUESTS_CA_BUNDLE"]
    return session


def _storage_error(response) -> tuple[int, str, str | None]:
    import xml.etree.ElementTree as ET

    root = ET.fromstring(response.content)
    assert response.headers["x-ms-error-code"] == root.findtext("Code")
    return response.status_code, root.findtext("Code"), root.findtext("AuthenticationErrorDetail")


def _forged(claims: dict, header: dict) -> str:
    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part(header)}.{part(claims)}."


@both_stores
def test_forged_and_unsigned_tokens_are_refused_where_azurite_alone_accepts_them(cloud):
    db = cloud["db"]
    _mi(db, *role(cloud, "create", "Storage Blob Data Owner"))
    try:
        real = _mi(db, "token", "get", "--resource", "vm1", "-g", "rg", "--audience", "https://storage.azure.com/")
        session = _session(cloud)
        url = f"{ACCOUNT_URL}/logs?restype=container&comp=list"
        headers = {"x-ms-version": "2025-11-05"}
        ok = session.get(url, headers={**headers, "Authorization": f"Bearer {real['access_token']}"}, timeout=60)
        assert ok.status_code == 200 and b"<EnumerationResults" in ok.content
        claims = json.loads(base64.urlsafe_b64decode(real["access_token"].split(".")[1] + "=="))
        unsigned = _forged(claims, {"alg": "none", "typ": "JWT"})
        made_up = _forged({**claims, "oid": "00000000-0000-0000-0000-000000000001"}, {"alg": "RS256", "typ": "JWT"})
        for token in (unsigned, made_up + "c2lnbmF0dXJl"):
            refused = session.get(url, headers={**headers, "Authorization": f"Bearer {token}"}, timeout=60)
            assert _storage_error(refused)[:2] == (401, "InvalidAuthenticationInfo")
        anonymous = session.get(url, headers=headers, timeout=60)
        assert _storage_error(anonymous)[:2] == (401, "NoAuthenticationInformation")
        assert "resource_id=https://storage.azure.com" in anonymous.headers["WWW-Authenticate"]
        vault_token = _mi(db, "token", "get", "--resource", "vm1", "-g", "rg", "--audience", "https://vault.azure.net")
        wrong = session.get(url, headers={**headers, "Authorization": f"Bearer {vault_token['access_token']}"}, timeout=60)
        assert _storage_error(wrong)[:2] == (401, "InvalidAuthenticationInfo")
    finally:
        _mi(db, *role(cloud, "delete", "Storage Blob Data Owner"))


@both_stores
def test_shared_key_works_until_the_account_disallows_it(cloud):
    db = cloud["db"]
    connection = _mi(db, "storage", "account", "show-connection-string", "-n", "st1", "-g", "rg")["connectionString"]
    assert app(cloud, ["upload", "logs", "key.txt", "by key"], ["download", "logs", "key.txt"],
               connection=connection) == ["uploaded", "by key"]
    _mi(db, "storage", "account", "update", "-n", "st1", "-g", "rg", "--allow-shared-key-access", "false")
    try:
        assert app(cloud, ["download", "logs", "key.txt"], connection=connection) == [
            {"status": 403, "code": "KeyBasedAuthenticationNotPermitted"}]
    finally:
        _mi(db, "storage", "account", "update", "-n", "st1", "-g", "rg", "--allow-shared-key-access", "true")


@both_stores
def test_an_account_created_while_serving_is_served_and_blobs_survive_a_restart(cloud, tmp_path):
    db = cloud["db"]
    account = _mi(db, "resource", "create", "-g", "rg", "-n", "st2", "--type", "storage")
    _mi(db, *role(cloud, "create", "Storage Blob Data Contributor", scope=account["id"]))
    try:
        script = APP.replace(repr(ACCOUNT_URL), repr("https://st2.blob.core.windows.net"))

        def run(*steps: list[str]) -> list:
            env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "IDENTITY_", "MSI_", "IMDS_"))}
            env.update(cloud["env"])
            done = subprocess.run([sys.executable, "-c", script, json.dumps(list(steps)), "sync", ""], env=env,
                                  capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, done.stderr[-3000:]
            return json.loads(done.stdout.splitlines()[-1])

        assert run(["create", "late"], ["upload", "late", "x.txt", "kept"]) == ["created", "uploaded"]
        assert cloud["server"].stop() == 0
        cloud["server"] = start_server(db, "--azurite", azurite())
        cloud["env"] = _mi(db, "env", "--resource", "vm1", "-g", "rg")  # the new server's ports
        assert run(["download", "late", "x.txt"]) == ["kept"]
    finally:
        _mi(db, *role(cloud, "delete", "Storage Blob Data Contributor", scope=account["id"]))


def test_without_azurite_blob_requests_name_the_install_command(tmp_path):
    db = tmp_path / "store.db"
    _mi(db, "group", "create", "-n", "rg", "-l", "westeurope")
    _mi(db, "resource", "create", "-g", "rg", "-n", "vm1", "--type", "vm", "--system-assigned")
    _mi(db, "resource", "create", "-g", "rg", "-n", "st1", "--type", "storage")
    _mi(db, "role", "assignment", "create", "--assignee", "vm1", "--role", "Storage Blob Data Reader", "--scope",
        _mi(db, "resource", "show", "-g", "rg", "-n", "st1", "--type", "storage")["id"])
    srv = start_server(db, env={"MI_AZURITE": "", "PATH": str(tmp_path)})  # nothing on PATH, no MI_AZURITE
    try:
        deadline = time.time() + 10
        while "Blob Storage" not in srv.log.read_text() and time.time() < deadline:
            time.sleep(0.1)
        assert "Blob Storage: not served: Azurite (azurite-blob) is not on PATH" in srv.log.read_text()
        cloud = {"env": _mi(db, "env", "--resource", "vm1", "-g", "rg"), "db": db}
        token = _mi(db, "token", "get", "--resource", "vm1", "-g", "rg", "--audience", "https://storage.azure.com/")
        r = _session(cloud).get(f"{ACCOUNT_URL}/?comp=list", timeout=60,
                                headers={"Authorization": f"Bearer {token['access_token']}", "x-ms-version": "2025-11-05"})
        status, code, _ = _storage_error(r)
        assert status == 501 and "npm install -g azurite" in r.text
    finally:
        assert srv.stop() == 0
