"""The seed's scenario end to end: an unmodified app reads a Key Vault secret as its managed identity, through
`mi serve`'s local cloud, allowed and refused by the store's roles with Key Vault's own answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.clients.conftest import STORE_KINDS, mi_json, start_server

VAULT_URL = "https://kv1.vault.azure.net"
# Every test here runs against a server over an SQLite store and one over a PostgreSQL store.
pytestmark = pytest.mark.parametrize("store_kind", STORE_KINDS, indirect=True, scope="module")
# The app: azure-keyvault-secrets as any application uses it, nothing but its environment pointing it at mi.
APP = r"""
import asyncio, json, sys
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

op, mode, credential_kind = sys.argv[1], sys.argv[2], sys.argv[3]
args = sys.argv[4:]

def failure(exc):
    if isinstance(exc, ClientAuthenticationError) and not isinstance(exc, HttpResponseError) or \
            type(exc).__name__ == "CredentialUnavailableError":
        return {"credential": type(exc).__name__}
    return {"status": exc.status_code, "code": exc.error.code if exc.error else None, "message": exc.message}

def sync_app():
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential
    from azure.keyvault.secrets import SecretClient
    credential = ManagedIdentityCredential() if credential_kind == "mi" else DefaultAzureCredential()
    client = SecretClient(VAULT, credential)
    try:
        if op == "get":
            return {"value": client.get_secret(args[0]).value}
        if op == "set":
            s = client.set_secret(args[0], args[1], content_type="text/plain")
            return {"version": s.properties.version, "contentType": s.properties.content_type}
        if op == "list":
            return {"names": sorted(p.name for p in client.list_properties_of_secrets())}
        if op == "delete":
            client.begin_delete_secret(args[0]).wait()
            return {"deleted": sorted(d.name for d in client.list_deleted_secrets())}
    except Exception as exc:  # what the app sees
        return failure(exc)

async def async_app():
    from azure.identity.aio import DefaultAzureCredential, ManagedIdentityCredential
    from azure.keyvault.secrets.aio import SecretClient
    credential = ManagedIdentityCredential() if credential_kind == "mi" else DefaultAzureCredential()
    async with credential, SecretClient(VAULT, credential) as client:
        try:
            if op == "get":
                return {"value": (await client.get_secret(args[0])).value}
            if op == "set":
                return {"version": (await client.set_secret(args[0], args[1])).properties.version}
        except Exception as exc:
            return failure(exc)

print(json.dumps(sync_app() if mode == "sync" else asyncio.run(async_app())))
""".replace("VAULT", repr(VAULT_URL))


def _mi(db: Path | str, *argv: str):
    return mi_json(db, *argv)


@pytest.fixture(scope="module")
def cloud(module_store):
    """A store with vm1 (system identity on), vault kv1 holding db-password, and a running `mi serve`."""
    db = module_store("kv")
    _mi(db, "group", "create", "-n", "rg", "-l", "westeurope")
    vm = _mi(db, "resource", "create", "-g", "rg", "-n", "vm1", "--type", "vm", "--system-assigned")
    vault = _mi(db, "resource", "create", "-g", "rg", "-n", "kv1", "--type", "keyvault")
    _mi(db, "keyvault", "secret", "set", "--vault-name", "kv1", "-n", "db-password", "--value", "s3cret")
    srv = start_server(db)
    env = _mi(db, "env", "--resource", "vm1", "-g", "rg")  # JSON off a terminal: the variables
    yield {"db": db, "vm": vm, "vault": vault, "env": env, "server": srv}
    assert srv.stop() == 0, srv.log.read_text()


def app(cloud, op: str, *args: str, mode: str = "sync", credential: str = "default") -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "IDENTITY_", "MSI_", "IMDS_"))}
    env.update(cloud["env"])
    r = subprocess.run([sys.executable, "-c", APP, op, mode, credential, *args], env=env, capture_output=True, text=True,
                       timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def grant(cloud, role: str) -> None:
    _mi(cloud["db"], "role", "assignment", "create", "--assignee", "vm1", "--role", role, "--scope", cloud["vault"]["id"])


def revoke(cloud, role: str) -> None:
    db = cloud["db"]
    _mi(db, "role", "assignment", "delete", "--assignee", "vm1", "--role", role, "--scope", cloud["vault"]["id"], "--yes")


def test_the_environment_is_all_an_app_needs(cloud):
    env = cloud["env"]
    assert env["HTTPS_PROXY"].startswith("http://127.0.0.1:") and "127.0.0.1" in env["NO_PROXY"]
    assert Path(env["REQUESTS_CA_BUNDLE"]).is_file() and env["SSL_CERT_FILE"] == env["REQUESTS_CA_BUNDLE"]


def test_no_role_is_key_vaults_403_with_its_reason_lines(cloud):
    denied = app(cloud, "get", "db-password")
    assert denied["status"] == 403 and denied["code"] == "Forbidden"
    message = denied["message"]
    assert "Caller is not authorized to perform action on resource." in message
    assert "Action: 'Microsoft.KeyVault/vaults/secrets/getSecret/action'" in message
    assert f"Resource: '{cloud['vault']['id'].casefold()}/secrets/db-password'" in message
    assert f"oid={cloud['vm']['identity']['principalId']}" in message and "DecisionReason:" in message
    # the same decision and reason as mi access check, and it is in the activity log
    log = _mi(cloud["db"], "log", "--operation", "Microsoft.KeyVault/vaults/secrets/getSecret/action")
    assert log and log[-1]["status"] == "Failed"
    check = _mi(cloud["db"], "access", "check", "--principal", "vm1", "--action",
                "Microsoft.KeyVault/vaults/secrets/getSecret/action", "--scope", f"{cloud['vault']['id']}/secrets/db-password")
    assert check["allowed"] is False and check["reason"] in log[-1]["detail"]


def test_secrets_user_reads_sync_and_async_and_cannot_write_and_officer_writes(cloud):
    grant(cloud, "Key Vault Secrets User")
    try:
        assert app(cloud, "get", "db-password") == {"value": "s3cret"}
        assert app(cloud, "get", "db-password", mode="async", credential="mi") == {"value": "s3cret"}
        assert app(cloud, "get", "db-password", credential="mi") == {"value": "s3cret"}
        assert app(cloud, "list") == {"names": ["db-password"]}
        refused = app(cloud, "set", "db-password", "changed")
        assert refused["status"] == 403 and "setSecret/action" in refused["message"]
        grant(cloud, "Key Vault Secrets Officer")
        written = app(cloud, "set", "api-key", "k3y")
        assert len(written["version"]) == 32 and written["contentType"] == "text/plain"
        assert len(app(cloud, "set", "api-key", "k3y-2", mode="async")["version"]) == 32
        assert app(cloud, "get", "api-key") == {"value": "k3y-2"}
        assert app(cloud, "delete", "api-key") == {"deleted": ["api-key"]}
        shown = _mi(cloud["db"], "keyvault", "secret", "show-deleted", "--vault-name", "kv1", "-n", "api-key")
        assert shown["recoveryId"].endswith("/deletedsecrets/api-key")
    finally:
        revoke(cloud, "Key Vault Secrets Officer")
    # the very next request after a role goes is refused
    revoke(cloud, "Key Vault Secrets User")
    assert app(cloud, "get", "db-password")["status"] == 403


def test_a_token_for_another_audience_is_401_with_the_challenge(cloud):
    import requests

    token = _mi(cloud["db"], "token", "get", "--resource", "vm1", "-g", "rg", "--audience", "https://storage.azure.com/")
    env = cloud["env"]
    session = requests.Session()
    session.trust_env = False
    session.proxies = {"https": env["HTTPS_PROXY"]}
    session.verify = env["REQUESTS_CA_BUNDLE"]
    r = session.get(f"{VAULT_URL}/secrets/db-password/?api-version=2026-04-01",
                    headers={"Authorization": f"Bearer {token['access_token']}"}, timeout=60)
    assert r.status_code == 401
    assert r.json()["error"] == {"code": "Unauthorized", "message":
                                 "AKV10022: Invalid audience. Expected https://vault.azure.net, found: https://storage.azure.com/."}
    tenant = env["AZURE_TENANT_ID"]
    assert r.headers["WWW-Authenticate"] == (f'Bearer authorization="https://login.microsoftonline.com/{tenant}", '
                                             'resource="https://vault.azure.net"')
    unauthenticated = session.get(f"{VAULT_URL}/secrets?api-version=2026-04-01", timeout=60)
    assert unauthenticated.status_code == 401 and "AKV10000" in unauthenticated.json()["error"]["message"]


def test_an_identity_turned_off_gets_no_token(cloud):
    db = cloud["db"]
    grant(cloud, "Key Vault Secrets User")
    _mi(db, "identity", "remove", "--resource", "vm1", "-g", "rg", "--identities", "[system]")
    try:
        assert "credential" in app(cloud, "get", "db-password", credential="mi")
    finally:
        _mi(db, "identity", "assign", "--resource", "vm1", "-g", "rg", "--identities", "[system]")
