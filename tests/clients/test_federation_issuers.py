"""Simulated federation issuers served at their own host names through a real `mi serve`'s proxy: their OpenID
metadata and keys over HTTPS (certificates from the store's CA, one per issuer host, made on first use), assertions
verified with the keys fetched there, a host of an issuer mi does not hold tunnelled, and the workload side of AKS's
workload identity (`mi env --workload-identity`)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import jwt
import pytest
import requests

from mi_cli.services import Ctx, localcloud
from mi_cli.store import open_store
from tests.clients.conftest import connect_through, mi_json, start_server
from tests.conftest import one_error, run_mi

GITHUB = "https://token.actions.githubusercontent.com"
AKS = "https://westeurope.oic.prod-aks.azure.com/72f988bf-86f1-41af-91ab-2d7cd011db47/0b5c3a7e-1f2d-4e6a-9b8c-7d6e5f4a3b2c/"
GENERIC = "https://oidc.mi-test.invalid/tenant-1"  # .invalid: never a real host (RFC 2606)
EXCHANGE = "api://AzureADTokenExchange"
SA = "system:serviceaccount:payments:api"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    """An identity, a VM (for the local cloud's exports), the GitHub and AKS issuers; a running mi serve."""
    db = tmp_path_factory.mktemp("federation") / "store.db"
    mi_json(db, "group", "create", "-n", "rg", "-l", "westeurope")
    mi_json(db, "resource", "create", "-g", "rg", "-n", "vm1", "--type", "vm", "--system-assigned")
    made = {"identity": mi_json(db, "identity", "create", "-g", "rg", "-n", "payments-id"),
            "tenant": mi_json(db, "account", "show")["tenantId"]}
    for issuer in (GITHUB, AKS):
        mi_json(db, "federation", "issuer", "create", "--issuer", issuer)
    srv = start_server(db)
    made |= {"db": db, "server": srv, "env": mi_json(db, "env", "--resource", "vm1", "-g", "rg")}
    yield made
    assert srv.stop() == 0, srv.log.read_text()


@pytest.fixture
def https(cloud):
    """requests as a process with mi env's exports has it: the local cloud's proxy and CA bundle (nothing else)."""
    session = requests.Session()
    session.trust_env = False
    session.proxies = {"https": cloud["env"]["HTTPS_PROXY"]}
    session.verify = cloud["env"]["REQUESTS_CA_BUNDLE"]
    yield session
    session.close()


def _discovered_keys(https, issuer: str) -> tuple[dict, dict]:
    """As Entra reads an issuer: its openid-configuration, then the keys at its jwks_uri."""
    config = https.get(issuer.rstrip("/") + "/.well-known/openid-configuration", timeout=20)
    assert config.status_code == 200 and config.headers["content-type"].startswith("application/json")
    keys = https.get(config.json()["jwks_uri"], timeout=20)
    assert keys.status_code == 200
    return config.json(), keys.json()


def _verify(https, issuer: str, token: str, audience: str = EXCHANGE) -> dict:
    _, keys = _discovered_keys(https, issuer)
    key = jwt.PyJWKSet.from_dict(keys)[jwt.get_unverified_header(token)["kid"]]
    return jwt.decode(token, key.key, algorithms=["RS256"], audience=audience, issuer=issuer)


def _mint(cloud, issuer: str, subject: str, *extra: str) -> str:
    return mi_json(cloud["db"], "federation", "token", "--issuer", issuer, "--subject", subject, *extra)["assertion"]


def test_github_and_aks_metadata_and_keys_are_served_at_their_hosts(https):
    github, github_keys = _discovered_keys(https, GITHUB)
    assert github["issuer"] == GITHUB and github["jwks_uri"] == f"{GITHUB}/.well-known/jwks"
    assert github["response_types_supported"] == ["id_token"] and github["subject_types_supported"] == ["public", "pairwise"]
    assert github["id_token_signing_alg_values_supported"] == ["RS256"]
    assert {"sub", "aud", "repository", "job_workflow_ref", "runner_environment"} <= set(github["claims_supported"])
    assert [set(k) for k in github_keys["keys"]] == [{"kty", "alg", "use", "kid", "n", "e", "x5c", "x5t"}]
    aks, aks_keys = _discovered_keys(https, AKS)
    assert aks == {"issuer": AKS, "jwks_uri": f"{AKS}openid/v1/jwks", "response_types_supported": ["id_token"],
                   "subject_types_supported": ["public"], "id_token_signing_alg_values_supported": ["RS256"]}
    assert [set(k) for k in aks_keys["keys"]] == [{"use", "kty", "kid", "alg", "n", "e"}]
    # the issuer joined naively with its trailing slash is answered too
    assert https.get(f"{AKS}/.well-known/openid-configuration", timeout=20).json() == aks
    assert https.get(f"{AKS}nothing-here", timeout=20).status_code == 404
    assert https.get(f"{GITHUB}/metadata/identity/oauth2/token", timeout=20).status_code == 404  # no IMDS here
    refused = https.post(f"{GITHUB}/.well-known/jwks", timeout=20)
    assert refused.status_code == 405 and refused.headers["allow"] == "GET, HEAD"


def test_assertions_verify_with_the_keys_fetched_from_the_issuer(cloud, https):
    github = _verify(https, GITHUB, _mint(cloud, GITHUB, "repo:contoso/web:environment:prod", "--claim", "x=1"))
    assert github["repository"] == "contoso/web" and github["environment"] == "prod" and github["x"] == 1
    aks = _verify(https, AKS, _mint(cloud, AKS, SA))
    assert aks["aud"] == [EXCHANGE] and aks["kubernetes.io"]["namespace"] == "payments"


def test_an_issuer_created_while_serving_is_served_at_once_and_gone_when_deleted(cloud, https):
    db = cloud["db"]
    made = mi_json(db, "federation", "issuer", "create", "--issuer", GENERIC)
    assert made["kind"] == "generic"
    try:
        config, _ = _discovered_keys(https, GENERIC)  # a certificate for its host, from the store's CA
        assert config["issuer"] == GENERIC and config["jwks_uri"] == f"{GENERIC}/.well-known/jwks"
        claims = _verify(https, GENERIC, _mint(cloud, GENERIC, "workload-1", "--audience", "api://x"), "api://x")
        assert claims["sub"] == "workload-1"
    finally:
        assert run_mi(db, "federation", "issuer", "delete", "--issuer", GENERIC).code == 0
    # gone: its host is no longer the local cloud's, so the proxy tunnels it (and .invalid resolves nowhere)
    sock, answer = connect_through(_proxy_port(cloud), "oidc.mi-test.invalid:443")
    sock.close()
    assert answer.startswith(b"HTTP/1.1 502") and b"Cannot reach oidc.mi-test.invalid:443" in answer, answer


def _proxy_port(cloud) -> int:
    return int(cloud["env"]["HTTPS_PROXY"].rsplit(":", 1)[1])


def test_the_proxy_answers_an_issuers_host_only_while_the_store_holds_it(cloud):
    store = open_store(cloud["db"])
    try:
        with store.transaction(write=False) as session:
            ctx = Ctx.from_env(session)
            assert localcloud.connect_route(ctx, "token.actions.githubusercontent.com", 443) == ("local", "")
            assert localcloud.connect_route(ctx, "WestEurope.oic.prod-aks.azure.com", 443) == ("local", "")
            assert localcloud.connect_route(ctx, "eastus.oic.prod-aks.azure.com", 443) == ("tunnel", "")
            assert localcloud.connect_route(ctx, "other.mi-test.invalid", 443) == ("tunnel", "")
            action, why = localcloud.connect_route(ctx, "token.actions.githubusercontent.com", 8443)
            assert action == "refuse" and "port 443 only" in why
            assert localcloud.claimed("token.actions.githubusercontent.com") is False  # not a fixed name
            assert localcloud.claimed("token.actions.githubusercontent.com", ctx) is True
            assert GITHUB in localcloud.served_urls(ctx)
    finally:
        store.close()
    sock, answer = connect_through(_proxy_port(cloud), "never.mi-test.invalid:443")
    sock.close()
    assert answer.startswith(b"HTTP/1.1 502") and b"Cannot reach never.mi-test.invalid:443" in answer, answer
    sock, answer = connect_through(_proxy_port(cloud), "token.actions.githubusercontent.com:8443")
    sock.close()
    assert answer.startswith(b"HTTP/1.1 502") and b"port 443 only" in answer


def _env(cloud, *extra: str):
    return run_mi(cloud["db"], "env", "--workload-identity", "payments-id", "-g", "rg", "--issuer", AKS, "--subject", SA,
                  *extra)


def test_mi_env_workload_identity_writes_the_assertion_and_prints_what_aks_injects(cloud, https):
    result = _env(cloud, "-o", "json")
    assert result.code == 0 and "WARNING: No federated credential" in result.err  # none matches it yet
    values = json.loads(result.out)
    assert values["AZURE_CLIENT_ID"] == cloud["identity"]["clientId"]
    assert values["AZURE_TENANT_ID"] == cloud["tenant"]
    assert values["AZURE_AUTHORITY_HOST"] == "https://login.microsoftonline.com/"
    for name in ("HTTPS_PROXY", "https_proxy", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS", "NO_PROXY"):
        assert values[name] == cloud["env"][name], name
    assert not {"AZURE_POD_IDENTITY_AUTHORITY_HOST", "IDENTITY_ENDPOINT", "IDENTITY_HEADER", "MSI_ENDPOINT",
                "IMDS_ENDPOINT"} & set(values)
    path = Path(values["AZURE_FEDERATED_TOKEN_FILE"])
    assert path.parent == Path(f"{cloud['db']}.tokens").resolve()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    first = path.read_text()
    claims = _verify(https, AKS, first)
    assert claims["sub"] == SA and claims["exp"] - claims["iat"] == 3600

    # the bash form: the same variables, and the IMDS, App Service and secret variables unset
    bash = _env(cloud, "--lifetime", "600")
    assert bash.code == 0
    lines = bash.out.splitlines()
    assert lines[0].startswith("unset ") and {"AZURE_POD_IDENTITY_AUTHORITY_HOST", "IDENTITY_ENDPOINT",
                                               "AZURE_CLIENT_SECRET"} <= set(lines[0].split()[1:])
    exported = dict(line.removeprefix("export ").split("=", 1) for line in lines[1:])
    assert {k: v.strip("'") for k, v in exported.items()} == values
    refreshed = path.read_text()
    assert refreshed != first and _verify(https, AKS, refreshed)["exp"] - _verify(https, AKS, refreshed)["iat"] == 600
    fish = _env(cloud, "--shell", "fish")
    assert fish.out.splitlines()[0].startswith("set -e ") and \
        f"set -gx AZURE_FEDERATED_TOKEN_FILE '{path}'" in fish.out
    powershell = _env(cloud, "--shell", "powershell")
    assert "Remove-Item Env:AZURE_POD_IDENTITY_AUTHORITY_HOST -ErrorAction SilentlyContinue" in powershell.out
    assert "$env:AZURE_AUTHORITY_HOST = 'https://login.microsoftonline.com/'" in powershell.out


def test_mi_env_workload_identity_is_quiet_when_a_federated_credential_matches(cloud):
    made = run_mi(cloud["db"], "identity", "federated-credential", "create", "--identity-name", "payments-id", "-g", "rg",
                  "-n", "aks", "--issuer", AKS, "--subject", SA, "--audiences", EXCHANGE, "-o", "none")
    assert made.code == 0, made.err
    result = _env(cloud, "-o", "json")
    assert result.code == 0 and result.err == ""


@pytest.mark.parametrize(("argv", "code", "text"), [
    (("--workload-identity", "missing-id", "-g", "rg", "--issuer", AKS, "--subject", SA), 3,
     "ERROR: (ResourceNotFound) The Resource 'Microsoft.ManagedIdentity/userAssignedIdentities/missing-id' under "
     "resource group 'rg' was not found."),
    (("--workload-identity", "payments-id", "-g", "rg", "--issuer", "http://oidc.example.com/", "--subject", SA), 2,
     "ERROR: (InvalidArgumentValue) The issuer URL 'http://oidc.example.com/' must be an https URL"),
    (("--workload-identity", "payments-id", "-g", "rg", "--issuer", AKS, "--subject", "repo:o/r:ref:refs/heads/main"), 2,
     "system:serviceaccount:NAMESPACE:NAME"),
    (("--workload-identity", "payments-id", "-g", "rg", "--subject", SA), 2,
     "ERROR: (MissingArgument) the following arguments are required with --workload-identity: --issuer"),
    (("--workload-identity", "payments-id", "-g", "rg", "--issuer", AKS, "--subject", SA, "--resource", "vm1"), 2,
     "--workload-identity cannot be used with --resource"),
    (("--workload-identity", "payments-id", "-g", "rg", "--issuer", AKS, "--subject", SA, "--lifetime", "10"), 2,
     "from 60 to 86400"),
    (("--resource", "vm1", "-g", "rg", "--issuer", AKS), 2, "--issuer: only with --workload-identity"),
])
def test_mi_env_workload_identity_refuses_bad_input_and_writes_nothing(cloud, argv, code, text):
    tokens = Path(f"{cloud['db']}.tokens")
    before = sorted(os.listdir(tokens)) if tokens.exists() else []
    result = run_mi(cloud["db"], "env", *argv)
    assert result.code == code and one_error(result.err) and text in result.err, result.err
    assert result.out == ""
    assert (sorted(os.listdir(tokens)) if tokens.exists() else []) == before
