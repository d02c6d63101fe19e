"""Workload identity federation through the local cloud, with unmodified clients: a GitHub-Actions-shaped and an
AKS-shaped workload present an assertion from their issuer (minted by mi) at Entra's token endpoint and get the
user-assigned identity's token, with azure-identity (WorkloadIdentityCredential sync and async,
DefaultAzureCredential), msal's ConfidentialClientApplication with a client assertion, and the real az
(`az login --service-principal --federated-token`, as GitHub's azure/login does); the token then reads a Key Vault
secret when the identity's role allows and is refused when it does not. Every way an assertion fails is refused
with Entra's code, text and status, through the real endpoint.

One `mi serve` for the module, on a store built once. The clients run in their own processes with nothing but the
variables that point them at mi (the workload identity ones and the local cloud's proxy and CA bundle)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest
import requests

from tests.clients.az import az_cli  # noqa: F401 - the fixture: az, installed on first use
from tests.clients.conftest import mi_json, start_server

LOGIN = "https://login.microsoftonline.com"
VAULT_URL = "https://kv1.vault.azure.net"
GITHUB = "https://token.actions.githubusercontent.com"
GITHUB_SUBJECT = "repo:octo-org/octo-repo:environment:prod"
AKS = "https://eastus.oic.prod-aks.azure.com/8d3b2a71-4c3e-4f5e-9a1b-2c7d8e9f0a1b/4f6e2d1c-0b9a-4e8f-8d7c-6b5a4e3d2c1b/"
AKS_SUBJECT = "system:serviceaccount:orders:orders-api"
UNHELD = "https://issuer.unheld.example.com"  # a credential trusts it; mi holds no keys for it
EXCHANGE = "api://AzureADTokenExchange"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ENTRA_ERROR = ["error", "error_description", "error_codes", "timestamp", "trace_id", "correlation_id", "error_uri"]
DOCS = "https://docs.microsoft.com/en-us/azure/active-directory/develop/workload-identity-federation"
LEARN = "https://learn.microsoft.com/entra/workload-id/workload-identity-federation"
# What a shell that points at mi must not inherit from the test's own environment
STEERING = ("AZURE_", "IDENTITY_", "MSI_", "IMDS_", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy",
            "NO_PROXY", "no_proxy", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE")
TIMEOUT = 180

# The workload: azure-identity and msal as any application uses them, pointed at mi by its environment only.
APP = r"""
import asyncio, json, os, sys
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

mode, scope = sys.argv[1], sys.argv[2]

def claims(token):
    import base64
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))

def refused(exc):
    if isinstance(exc, HttpResponseError) and exc.status_code:
        return {"status": exc.status_code, "code": exc.error.code if exc.error else None}
    return {"refused": type(exc).__name__, "message": str(exc)}

def run():
    if mode == "wi":
        from azure.identity import WorkloadIdentityCredential
        credential = WorkloadIdentityCredential()
        first = credential.get_token(scope)
        again = credential.get_token(scope)  # azure-identity's cache: the same token, no second request
        return {"claims": claims(first.token), "cached": again.token == first.token,
                "expires_in": first.expires_on - int(__import__("time").time())}
    if mode == "wi-async":
        from azure.identity.aio import WorkloadIdentityCredential
        async def main():
            async with WorkloadIdentityCredential() as credential:
                return {"claims": claims((await credential.get_token(scope)).token)}
        return asyncio.run(main())
    if mode == "dac":
        from azure.identity import DefaultAzureCredential
        return {"claims": claims(DefaultAzureCredential().get_token(scope).token)}
    if mode == "dac-async":
        from azure.identity.aio import DefaultAzureCredential
        async def main():
            async with DefaultAzureCredential() as credential:
                return {"claims": claims((await credential.get_token(scope)).token)}
        return asyncio.run(main())
    if mode == "msal":
        import msal
        assertion = open(os.environ["AZURE_FEDERATED_TOKEN_FILE"]).read()
        app = msal.ConfidentialClientApplication(os.environ["AZURE_CLIENT_ID"],
                                                 client_credential={"client_assertion": assertion},
                                                 authority="https://login.microsoftonline.com/" + os.environ["AZURE_TENANT_ID"])
        result = app.acquire_token_for_client(scopes=[scope])
        if "access_token" not in result:
            return {"error": result.get("error"), "error_codes": result.get("error_codes")}
        return {"claims": claims(result["access_token"]), "expires_in": result["expires_in"]}
    if mode in ("secret", "secret-async"):
        name = scope
        if mode == "secret":
            from azure.identity import DefaultAzureCredential
            from azure.keyvault.secrets import SecretClient
            try:
                return {"value": SecretClient(VAULT, DefaultAzureCredential()).get_secret(name).value}
            except Exception as exc:
                return refused(exc)
        from azure.identity.aio import WorkloadIdentityCredential
        from azure.keyvault.secrets.aio import SecretClient
        async def main():
            async with WorkloadIdentityCredential() as credential, SecretClient(VAULT, credential) as client:
                try:
                    return {"value": (await client.get_secret(name)).value}
                except Exception as exc:
                    return refused(exc)
        return asyncio.run(main())
    if mode == "wi-refused":
        from azure.identity import WorkloadIdentityCredential
        try:
            WorkloadIdentityCredential().get_token(scope)
        except ClientAuthenticationError as exc:
            return {"refused": type(exc).__name__, "status": exc.status_code, "message": str(exc)}
        return {"refused": None}

print(json.dumps(run()))
""".replace("VAULT", repr(VAULT_URL))


def _shell_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(STEERING)}


def _claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    """ua-deploy trusts GitHub Actions' tokens for octo-org/octo-repo's prod environment (and an issuer mi does not
    hold), and may read kv1's secrets; ua-orders trusts an AKS cluster's orders-api service account and holds no
    role on kv1; the daemon app registration has no federated credentials. A running mi serve."""
    folder = tmp_path_factory.mktemp("federation")
    db = folder / "store.db"

    def ok(*argv):
        return mi_json(db, *argv)

    ok("group", "create", "-n", "rg", "-l", "westeurope")
    made = {"deploy": ok("identity", "create", "-g", "rg", "-n", "ua-deploy"),
            "orders": ok("identity", "create", "-g", "rg", "-n", "ua-orders"),
            "vault": ok("resource", "create", "-g", "rg", "-n", "kv1", "--type", "keyvault"),
            "daemon": ok("app", "create", "--display-name", "daemon"),
            "tenant": ok("account", "show")["tenantId"]}
    for name, identity, issuer, subject in (("github-prod", "ua-deploy", GITHUB, GITHUB_SUBJECT),
                                            ("elsewhere", "ua-deploy", UNHELD, "workload-1"),
                                            ("aks-orders", "ua-orders", AKS, AKS_SUBJECT)):
        ok("identity", "federated-credential", "create", "-n", name, "--identity-name", identity, "-g", "rg",
           "--issuer", issuer, "--subject", subject, "--audiences", EXCHANGE)
    ok("keyvault", "secret", "set", "--vault-name", "kv1", "-n", "db-password", "--value", "s3cret")
    ok("role", "assignment", "create", "--assignee", made["deploy"]["principalId"], "--role", "Key Vault Secrets User",
       "--scope", made["vault"]["id"])
    srv = start_server(db)
    made |= {"db": db, "folder": folder, "server": srv}
    yield made
    assert srv.stop() == 0, srv.log.read_text()


def mint(cloud, issuer: str = GITHUB, subject: str = GITHUB_SUBJECT, *claims: str) -> str:
    """An assertion of a simulated issuer, as `mi federation token` makes it."""
    argv = ["federation", "token", "--issuer", issuer, "--subject", subject, "--query", "assertion", "-o", "tsv"]
    for claim in claims:
        argv += ["--claim", claim]
    return _mi_text(cloud["db"], *argv)


def _mi_text(db: Path, *argv: str) -> str:
    import io
    from contextlib import redirect_stdout

    from mi_cli.cli.main import main

    buffer = io.StringIO()
    with redirect_stdout(buffer):
        code = main(["--db", str(db), *argv])
    assert code == 0, argv
    return buffer.getvalue().strip()


def workload_env(cloud, identity: str, issuer: str, subject: str) -> dict[str, str]:
    """What `mi env --workload-identity` prints for a workload of this identity: its client id and tenant, an
    assertion file and the authority host, with the local cloud's proxy and CA bundle."""
    return mi_json(cloud["db"], "env", "--workload-identity", identity, "-g", "rg", "--issuer", issuer,
                   "--subject", subject)


def app(env: dict[str, str], mode: str, scope: str) -> dict:
    r = subprocess.run([sys.executable, "-c", APP, mode, scope], env={**_shell_env(), **env}, capture_output=True,
                       text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def _is_identitys_token(claims: dict, identity: dict, tenant: str, audience: str) -> None:
    assert (claims["oid"], claims["sub"], claims["appid"]) == (identity["principalId"], identity["principalId"],
                                                               identity["clientId"])
    assert claims["aud"] == audience and claims["tid"] == tenant and claims["iss"] == f"https://sts.windows.net/{tenant}/"
    assert claims["xms_mirid"].casefold() == identity["id"].casefold() and claims["idtyp"] == "app"
    assert claims["exp"] - claims["iat"] == 24 * 3600 + 300  # a managed identity's token: 24 hours, backdated 5 min


@pytest.fixture(scope="module")
def github(cloud):
    return workload_env(cloud, "ua-deploy", GITHUB, GITHUB_SUBJECT)


@pytest.fixture(scope="module")
def aks(cloud):
    return workload_env(cloud, "ua-orders", AKS, AKS_SUBJECT)


def test_an_aks_workload_gets_its_identitys_token_with_azure_identity_sync_and_async(cloud, aks):
    assert _claims(Path(aks["AZURE_FEDERATED_TOKEN_FILE"]).read_text())["aud"] == [EXCHANGE]  # a projected token's
    scope = "https://vault.azure.net/.default"
    sync = app(aks, "wi", scope)
    _is_identitys_token(sync["claims"], cloud["orders"], cloud["tenant"], "https://vault.azure.net")
    assert "xms_az_rid" not in sync["claims"]  # no resource asked for it
    assert sync["cached"] and 86000 < sync["expires_in"] <= 86400
    _is_identitys_token(app(aks, "wi-async", scope)["claims"], cloud["orders"], cloud["tenant"], "https://vault.azure.net")
    for mode in ("dac", "dac-async"):
        claims = app(aks, mode, "https://management.azure.com/.default")["claims"]
        _is_identitys_token(claims, cloud["orders"], cloud["tenant"], "https://management.azure.com")


def test_a_github_workload_gets_its_identitys_token_with_msal_and_a_client_assertion(cloud, github):
    result = app(github, "msal", "https://vault.azure.net/.default")
    assert result["expires_in"] > 86000, result
    _is_identitys_token(result["claims"], cloud["deploy"], cloud["tenant"], "https://vault.azure.net")
    assert app(github, "wi", "https://vault.azure.net/.default")["claims"]["oid"] == cloud["deploy"]["principalId"]
    # the sign-in is in the activity log under the identity, with the credential that matched
    entry = mi_json(cloud["db"], "log", "--operation", "Microsoft.ManagedIdentity/token/issue")[-1]
    assert entry["status"] == "Succeeded" and entry["caller"] == cloud["deploy"]["principalId"]
    assert entry["resourceId"].casefold() == cloud["deploy"]["id"].casefold()
    assert "grant=federated; credential=github-prod" in entry["detail"] and f"sub={GITHUB_SUBJECT}" in entry["detail"]


def test_the_token_reads_a_secret_when_the_identitys_role_allows_and_is_refused_when_not(cloud, github, aks):
    assert app(github, "secret", "db-password") == {"value": "s3cret"}
    assert app(github, "secret-async", "db-password") == {"value": "s3cret"}
    assert app(aks, "secret", "db-password") == {"status": 403, "code": "Forbidden"}  # ua-orders holds no role


def test_az_logs_in_with_a_federated_token_as_azure_login_does(cloud, github, az_cli):  # noqa: F811
    # azure/login's runner: the local cloud's proxy and CA bundle, an az configuration of its own, no workload
    # identity variables (the assertion is given on the command line)
    env = {**_shell_env(), **{k: v for k, v in github.items() if not k.startswith("AZURE_")},
           "AZURE_CONFIG_DIR": str(cloud["folder"] / "az-github"), "AZURE_CORE_COLLECT_TELEMETRY": "false"}
    assertion = Path(github["AZURE_FEDERATED_TOKEN_FILE"]).read_text()

    def az(*args: str, config: str = "az-github") -> subprocess.CompletedProcess:
        return subprocess.run([str(az_cli), *args], env={**env, "AZURE_CONFIG_DIR": str(cloud["folder"] / config)},
                              capture_output=True, text=True, timeout=TIMEOUT)

    login = az("login", "--service-principal", "-u", cloud["deploy"]["clientId"], "--tenant", cloud["tenant"],
               "--federated-token", assertion, "--allow-no-subscriptions", "-o", "json")
    assert login.returncode == 0, login.stderr[-3000:]
    [account] = json.loads(login.stdout)
    assert account["tenantId"] == cloud["tenant"]
    assert account["user"] == {"name": cloud["deploy"]["clientId"], "type": "servicePrincipal"}
    got = az("account", "get-access-token", "--resource", "https://vault.azure.net", "-o", "json")
    assert got.returncode == 0, got.stderr[-3000:]
    _is_identitys_token(_claims(json.loads(got.stdout)["accessToken"]), cloud["deploy"], cloud["tenant"],
                        "https://vault.azure.net")
    # another runner, an assertion for another branch: az prints Entra's description (a fresh configuration: az
    # would otherwise answer from the token it cached at the first login)
    refused = az("login", "--service-principal", "-u", cloud["deploy"]["clientId"], "--tenant", cloud["tenant"],
                 "--federated-token", mint(cloud, GITHUB, "repo:octo-org/octo-repo:ref:refs/heads/main"),
                 "--allow-no-subscriptions", config="az-branch")
    assert refused.returncode != 0
    assert "AADSTS700213: No matching federated identity record found for presented assertion subject " \
           "'repo:octo-org/octo-repo:ref:refs/heads/main'." in refused.stderr


# --- each way an assertion fails, through the real endpoint ------------------------------------------------------


def _session(env: dict[str, str]) -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    session.proxies = {"https": env["HTTPS_PROXY"]}
    session.verify = env["REQUESTS_CA_BUNDLE"]
    return session


def _post(cloud, env, assertion: str, *, client_id: str | None = None, scope: str = "https://vault.azure.net/.default",
          tenant: str | None = None, **form: str) -> tuple[int, dict]:
    data = {"client_assertion": assertion, "client_assertion_type": ASSERTION_TYPE,
            "client_id": client_id or cloud["deploy"]["clientId"], "grant_type": "client_credentials", "scope": scope,
            **form}
    r = _session(env).post(f"{LOGIN}/{tenant or cloud['tenant']}/oauth2/v2.0/token", data=data, timeout=60,
                           headers={"client-request-id": "5e1f0c2a-7d3b-4a9e-8c6f-1b2d3e4f5a6b"})
    return r.status_code, r.json()


def _own_key_assertion(claims: dict, header: dict | None = None, key=None) -> str:
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(claims, key, algorithm="RS256", headers=header or {"kid": "not-a-published-key"})


def _refused(status: int, body: dict, expected_status: int, error: str, code: int, text: str) -> None:
    assert list(body) == ENTRA_ERROR, body
    assert (status, body["error"], body["error_codes"]) == (expected_status, error, [code]), body
    description = body["error_description"]
    assert description == f"AADSTS{code}: {text} Trace ID: {body['trace_id']} Correlation ID: " \
                          f"{body['correlation_id']} Timestamp: {body['timestamp']}", description
    assert body["correlation_id"] == "5e1f0c2a-7d3b-4a9e-8c6f-1b2d3e4f5a6b"
    assert body["error_uri"] == f"https://login.microsoftonline.com/error?code={code}"


def test_each_failure_is_entras_code_text_and_status(cloud, github):
    now = int(time.time())
    good = Path(github["AZURE_FEDERATED_TOKEN_FILE"]).read_text()
    deploy = cloud["deploy"]["clientId"]
    stranger = "0b7c3d2e-1f4a-4b5c-9d8e-7f6a5b4c3d2e"
    _refused(*_post(cloud, github, good, client_id=stranger), 400, "unauthorized_client", 700016,
             f"Application with identifier '{stranger}' was not found in the directory '{cloud['tenant']}'. This can "
             "happen if the application has not been installed by the administrator of the tenant or consented to by "
             "any user in the tenant. You may have sent your authentication request to the wrong tenant.")
    _refused(*_post(cloud, github, "not-a-jwt"), 400, "invalid_request", 50027, "JWT token is invalid or malformed.")
    _refused(*_post(cloud, github, good, client_id=cloud["daemon"]["appId"]), 401, "invalid_client", 70025,
             "The client 'daemon' has no configured federated identity credentials.")
    # an issuer a credential trusts, but mi holds no keys for it: as Entra answers an issuer it cannot reach
    unheld = _own_key_assertion({"iss": UNHELD, "sub": "workload-1", "aud": EXCHANGE, "exp": now + 600})
    _refused(*_post(cloud, github, unheld), 400, "invalid_request", 50166, "Request to External OIDC endpoint failed.")
    # GitHub's issuer, signed by a key it does not publish
    unknown_kid = _own_key_assertion({"iss": GITHUB, "sub": GITHUB_SUBJECT, "aud": EXCHANGE, "exp": now + 600},
                                     header={"kid": "0123456789abcdef", "x5t": "ASNFZ4mrze8BI0VniavN7wEjRWc"})
    _refused(*_post(cloud, github, unknown_kid), 401, "invalid_client", 7000272, "The certificate with identifier "
             "0123456789ABCDEF0123456789ABCDEF01234567 used to sign the federated credential could not be found in the "
             f"metadata of identity provider {GITHUB}. Please validate that your Identity Provider's metadata exposes the "
             "key used to sign the incoming token.")
    # the published kid, another key's signature; and a good token with its claims altered
    forged = _own_key_assertion(_claims(good), header={"kid": jwt.get_unverified_header(good)["kid"]})
    head, body, signature = good.split(".")
    altered = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    altered["sub"] = GITHUB_SUBJECT  # the same claims, re-encoded differently: the signature no longer covers them
    tampered = f"{head}.{base64.urlsafe_b64encode(json.dumps(altered, indent=1).encode()).rstrip(b'=').decode()}.{signature}"
    for bad in (forged, tampered):
        _refused(*_post(cloud, github, bad), 401, "invalid_client", 700027, "Client assertion failed signature validation.")
    # expired an hour ago; valid only from an hour on
    status, expired = _post(cloud, github, mint(cloud, GITHUB, GITHUB_SUBJECT, f"exp={now - 3600}"))
    assert (status, expired["error_codes"]) == (401, [700024])
    text = expired["error_description"]
    assert text.startswith("AADSTS700024: Client assertion is not within its valid time range. Current time: ")
    exp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now - 3600))
    assert f", expiry time of assertion {exp}.0000000Z. Review the documentation at " \
           "https://learn.microsoft.com/entra/identity-platform/certificate-credentials . Trace ID: " in text
    status, early = _post(cloud, github, mint(cloud, GITHUB, GITHUB_SUBJECT, f"nbf={now + 3600}", f"exp={now + 7200}"))
    assert (status, early["error"], early["error_codes"]) == (401, "invalid_client", [700024])
    assert f"assertion valid from {time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(now + 3600))}.0000000Z" \
        in early["error_description"]
    # issuer, subject and audience: exactly, case-sensitively, the trailing slash included
    _refused(*_post(cloud, github, mint(cloud, GITHUB, GITHUB_SUBJECT, f"iss={GITHUB}/")), 401, "invalid_client", 700211,
             f"No matching federated identity record found for presented assertion issuer '{GITHUB}/'. Please check your "
             f"federated identity credential Subject, Audience and Issuer against the presented assertion. {DOCS}")
    other = "repo:octo-org/octo-repo:environment:staging"
    _refused(*_post(cloud, github, mint(cloud, GITHUB, other)), 401, "invalid_client", 700213,
             f"No matching federated identity record found for presented assertion subject '{other}'. Check your "
             f"federated identity credential Subject, Audience and Issuer against the presented assertion. {LEARN}")
    shouted = "repo:Octo-Org/octo-repo:environment:prod"
    _refused(*_post(cloud, github, mint(cloud, GITHUB, shouted)), 401, "invalid_client", 7002138,
             f"No matching federated identity record found for presented assertion subject '{shouted}'. The subject "
             "matches with case-insensitive comparison, but not with case-sensitive comparison. Check your federated "
             "identity credential Subject, Audience and Issuer against the presented assertion. See documentation at: "
             f"{LEARN}. See breaking change notification and remediation at: "
             "https://learn.microsoft.com/en-us/entra/identity-platform/reference-breaking-changes#august-2024.")
    _refused(*_post(cloud, github, mint(cloud, GITHUB, GITHUB_SUBJECT, "aud=https://github.com/octo-org")), 401,
             "invalid_client", 700212, "No matching federated identity record found for presented assertion audience "
             f"'https://github.com/octo-org'. Please check your federated identity credential Subject, Audience and "
             f"Issuer against the presented assertion. {DOCS}")
    # the assertion matches, the resource is none the tenant knows; and the same request for a known one succeeds
    status, nowhere = _post(cloud, github, good, scope="https://cache.test/.default")
    assert (status, nowhere["error"], nowhere["error_codes"]) == (400, "invalid_resource", [500011])
    status, issued = _post(cloud, github, good, scope="https://vault.azure.net/.default")
    assert status == 200 and list(issued) == ["token_type", "expires_in", "ext_expires_in", "access_token"]
    assert issued["expires_in"] == issued["ext_expires_in"] == 86399
    assert _claims(issued["access_token"])["appid"] == deploy
    # refusals are in the activity log under the identity, with what the assertion carried
    refusals = [e for e in mi_json(cloud["db"], "log", "--operation", "Microsoft.ManagedIdentity/token/issue")
                if e["status"] == "Failed"]
    assert any("error=invalid_client: AADSTS7002138" in e["detail"] and f"sub={shouted}" in e["detail"] for e in refusals)


def test_the_v1_endpoint_and_azure_identitys_message(cloud, github, aks):
    assertion = Path(aks["AZURE_FEDERATED_TOKEN_FILE"]).read_text()
    r = _session(aks).post(f"{LOGIN}/{cloud['tenant']}/oauth2/token", timeout=60, data={
        "client_assertion": assertion, "client_assertion_type": ASSERTION_TYPE, "client_id": cloud["orders"]["clientId"],
        "grant_type": "client_credentials", "resource": "https://management.core.windows.net/"})
    body = r.json()
    assert r.status_code == 200 and body["resource"] == "https://management.core.windows.net/"
    assert body["expires_in"] == "86399" and _claims(body["access_token"])["oid"] == cloud["orders"]["principalId"]
    # the AKS token presented for ua-deploy, whose credentials trust GitHub: azure-identity's error names the issuer
    crossed = {**github, "AZURE_FEDERATED_TOKEN_FILE": aks["AZURE_FEDERATED_TOKEN_FILE"]}
    refused = app(crossed, "wi-refused", "https://vault.azure.net/.default")
    assert (refused["refused"], refused["status"]) == ("ClientAuthenticationError", 401)
    assert f"(invalid_client) AADSTS700211: No matching federated identity record found for presented assertion " \
           f"issuer '{AKS}'." in refused["message"]


def test_the_request_and_the_assertion_itself_are_checked_first(cloud, github):
    now = int(time.time())
    good = Path(github["AZURE_FEDERATED_TOKEN_FILE"]).read_text()
    claims = {"iss": GITHUB, "sub": GITHUB_SUBJECT, "aud": EXCHANGE, "exp": now + 600}
    for form, expected in (
            ({"client_assertion": ""}, (401, "invalid_client", 7000218, "The request body must contain the following "
                                        "parameter: 'client_assertion' or 'client_secret'.")),
            ({"client_assertion_type": ""}, (400, "invalid_request", 900144, "The request body must contain the "
                                             "following parameter: 'client_assertion_type'.")),
            ({"client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:saml2-bearer"},
             (400, "invalid_request", 90011, "Unexpected client assertion type.")),
            ({"client_assertion": _own_key_assertion({k: v for k, v in claims.items() if k != "aud"})},
             (400, "invalid_request", 90014, "The required field 'aud' is missing from the credential. Ensure that you "
                                             "have all the necessary parameters for the login request.")),
            ({"client_assertion": jwt.encode(claims, "k" * 32, algorithm="HS256")},
             (401, "invalid_client", 5002738, "Invalid JWT token. 'HS256' is not a supported signature algorithm. "
                                              "Supported signing algorithms are: 'RS256,RS384,RS512'")),
            ({"client_assertion": _own_key_assertion({**claims, "iss": f"https://sts.windows.net/{cloud['tenant']}/"})},
             (401, "invalid_client", 700222, "AAD-issued tokens may not be used for federated identity flows.")),
            ({"client_assertion": mint(cloud, GITHUB, GITHUB_SUBJECT, f"iat={now}", f"nbf={now}", f"exp={now + 26 * 3600}")},
             (401, "invalid_client", 70023, "External OIDC Provider token must have a lifetime of less than or equal to "
                                            "1.01:00:00"))):
        status, body = _post(cloud, github, form.pop("client_assertion", good), **form)
        _refused(status, body, *expected)
    status, body = _post(cloud, github, good, tenant="common")
    assert (status, body["error_codes"]) == (400, [50194])  # a managed identity is single-tenant
