"""Unmodified azure-identity and msal code gets tokens from `mi serve`, in both endpoint styles,
and the tokens validate against the served JWKS. Negative cases give the errors Azure gives."""

from __future__ import annotations

import asyncio

import jwt
import msal
import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import CredentialUnavailableError, DefaultAzureCredential, ManagedIdentityCredential
from azure.identity.aio import ManagedIdentityCredential as AsyncManagedIdentityCredential

from tests.clients.conftest import STORE_KINDS, get, mi_json

VAULT = "https://vault.azure.net"
STYLES = ["imds", "appservice"]
# Every test here runs against a server over an SQLite store and one over a PostgreSQL store.
pytestmark = pytest.mark.parametrize("store_kind", STORE_KINDS, indirect=True, scope="module")


def validate(server, token: str, audience: str = VAULT) -> dict:
    """What an API does with a bearer token: keys from the tenant's OpenID metadata, then verify."""
    status, config, _ = get(f"{server.base}/{server.ids['tenant']}/.well-known/openid-configuration")
    assert status == 200
    signing_key = jwt.PyJWKClient(config["jwks_uri"]).get_signing_key_from_jwt(token)
    return jwt.decode(token, signing_key.key, algorithms=["RS256"], audience=audience, issuer=config["issuer"])


def principal(server, name: str) -> str:
    return server.ids[name]["principalId"] if "principalId" in server.ids[name] else server.ids[name]["identity"]["principalId"]


@pytest.mark.parametrize("style", STYLES)
def test_system_assigned_with_managed_identity_credential(server, client_env, style):
    client_env(server.env("app-both" if style == "appservice" else "vm-sys", style))
    token = ManagedIdentityCredential().get_token(f"{VAULT}/.default")
    claims = validate(server, token.token)
    owner = "app-both" if style == "appservice" else "vm-sys"
    assert claims["oid"] == claims["sub"] == server.ids[owner]["identity"]["principalId"]
    assert claims["xms_mirid"].endswith(f"/resourcegroups/rg/providers/{server.ids[owner]['type']}/{owner}")
    assert claims["idtyp"] == "app" and claims["ver"] == "1.0" and claims["appidacr"] == "2"
    assert "xms_az_rid" not in claims


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("how", ["client_id", "object_id", "resource_id"])
def test_user_assigned_chosen_by_each_selector(server, client_env, style, how):
    resource = "vm-multi" if style == "imds" else "app-both"
    client_env(server.env(resource, style))
    ua = server.ids["ua-two"]
    if how == "client_id":
        credential = ManagedIdentityCredential(client_id=ua["clientId"])
    elif how == "object_id":
        credential = ManagedIdentityCredential(identity_config={"object_id": ua["principalId"]})
    else:
        credential = ManagedIdentityCredential(identity_config={"resource_id": ua["id"]})
    claims = validate(server, credential.get_token(f"{VAULT}/.default").token)
    assert claims["oid"] == ua["principalId"] and claims["appid"] == ua["clientId"]
    assert claims["xms_mirid"] == ua["id"]
    assert claims["xms_az_rid"].endswith(f"/{resource}")


@pytest.mark.parametrize("style", STYLES)
def test_default_azure_credential_with_and_without_azure_client_id(server, client_env, style):
    resource = "vm-user" if style == "imds" else "app-both"
    client_env(server.env(resource, style))
    claims = validate(server, DefaultAzureCredential().get_token(f"{VAULT}/.default").token)
    expected = server.ids["ua-one"]["principalId"] if style == "imds" else server.ids["app-both"]["identity"]["principalId"]
    assert claims["oid"] == expected
    env = server.env("vm-multi" if style == "imds" else "app-both", style, "--identity", "ua-two")
    assert env["AZURE_CLIENT_ID"] == server.ids["ua-two"]["clientId"]
    client_env(env)
    claims = validate(server, DefaultAzureCredential().get_token(f"{VAULT}/.default").token)
    assert claims["oid"] == server.ids["ua-two"]["principalId"]


@pytest.mark.parametrize("style", STYLES)
def test_async_credential(server, client_env, style):
    client_env(server.env("vm-sys" if style == "imds" else "app-both", style))

    async def fetch():
        async with AsyncManagedIdentityCredential() as credential:
            return await credential.get_token("https://storage.azure.com/.default")

    token = asyncio.run(fetch())
    assert validate(server, token.token, "https://storage.azure.com")["aud"] == "https://storage.azure.com"


@pytest.mark.parametrize("style", STYLES)
def test_msal_managed_identity_client(server, client_env, style):
    client_env(server.env("vm-multi" if style == "imds" else "app-both", style))
    ua = server.ids["ua-one" if style == "imds" else "ua-two"]
    client = msal.ManagedIdentityClient(msal.UserAssignedManagedIdentity(client_id=ua["clientId"]), http_client=requests.Session())
    result = client.acquire_token_for_client(resource="https://management.azure.com/")
    assert result.get("token_type") == "Bearer", result
    assert validate(server, result["access_token"], "https://management.azure.com/")["oid"] == ua["principalId"]
    if style == "appservice":
        system = msal.ManagedIdentityClient(msal.SystemAssignedManagedIdentity(), http_client=requests.Session())
        result = system.acquire_token_for_client(resource=VAULT)
        assert validate(server, result["access_token"])["oid"] == server.ids["app-both"]["identity"]["principalId"]


# --- what goes wrong, as Azure says it ----------------------------------------------------------------


def imds_url(server, resource: str, query: str = f"api-version=2018-02-01&resource={VAULT}") -> str:
    arm_id = mi_json(server.db, "resource", "show", "-g", "rg", "-n", resource)["id"]
    return f"{server.base}{arm_id}/metadata/identity/oauth2/token?{query}"


def test_imds_refuses_a_request_without_the_metadata_header(server):
    status, body, _ = get(imds_url(server, "vm-sys"))
    assert (status, body) == (400, {"error": "invalid_request", "error_description": "Required metadata header not specified"})


def test_imds_refuses_forwarded_requests_and_missing_parameters(server):
    status, body, _ = get(imds_url(server, "vm-sys"), {"Metadata": "true", "X-Forwarded-For": "10.0.0.1"})
    assert status == 400 and body["error"] == "invalid_request"
    status, body, _ = get(imds_url(server, "vm-sys", f"resource={VAULT}"), {"Metadata": "true"})
    assert status == 400 and "api-version was not specified" in body["error"]
    status, body, _ = get(imds_url(server, "vm-sys", "api-version=2018-02-01"), {"Metadata": "true"})
    assert status == 400 and body["error_description"] == "Required query variable 'resource' is missing"
    ua = server.ids["ua-one"]
    both = f"api-version=2018-02-01&resource={VAULT}&client_id={ua['clientId']}&object_id={ua['principalId']}"
    status, body, _ = get(imds_url(server, "vm-multi", both), {"Metadata": "true"})
    assert status == 400


def test_imds_success_body_is_all_strings_and_paths_match_case_insensitively(server):
    url = imds_url(server, "vm-sys")
    lowered = url.split("?")[0].lower() + "/?" + url.split("?")[1]  # as @azure/identity sends it
    status, body, _ = get(lowered, {"Metadata": "true"})
    assert status == 200
    assert set(body) == {"access_token", "client_id", "expires_in", "expires_on", "ext_expires_in", "not_before", "resource", "token_type"}
    assert all(isinstance(v, str) for v in body.values())
    assert 86000 < int(body["expires_in"]) <= 86400 and body["token_type"] == "Bearer"


@pytest.mark.parametrize("style", STYLES)
def test_an_identity_not_attached_to_the_resource_is_not_found(server, client_env, style):
    client_env(server.env("vm-user" if style == "imds" else "app-both", style))
    stranger = server.ids["ua-two" if style == "imds" else "ua-one"]
    with pytest.raises(ClientAuthenticationError) as e:
        ManagedIdentityCredential(client_id=stranger["clientId"]).get_token(f"{VAULT}/.default")
    assert ("Identity not found" if style == "imds" else "Unable to load the proper Managed Identity") in str(e.value)


def test_several_user_identities_without_a_selector(server, client_env):
    client_env(server.env("vm-multi"))
    with pytest.raises(ClientAuthenticationError, match="Multiple user assigned identities exist"):
        ManagedIdentityCredential().get_token(f"{VAULT}/.default")


@pytest.mark.parametrize("resource", ["vm-dangling", "vm-off", "vm-none"])
def test_dangling_disabled_or_absent_identities_are_not_found(server, client_env, resource):
    client_env(server.env(resource))
    with pytest.raises(ClientAuthenticationError, match="Identity not found"):
        ManagedIdentityCredential().get_token(f"{VAULT}/.default")


def test_a_wrong_identity_header_is_refused(server, client_env):
    env = server.env("app-both", "appservice")
    env["IDENTITY_HEADER"] = "00000000-0000-0000-0000-000000000000"
    client_env(env)
    with pytest.raises((ClientAuthenticationError, CredentialUnavailableError)):
        ManagedIdentityCredential().get_token(f"{VAULT}/.default")
    status, body, headers = get(f"{env['IDENTITY_ENDPOINT']}?api-version=2019-08-01&resource={VAULT}",
                                {"X-IDENTITY-HEADER": env["IDENTITY_HEADER"]})
    assert status == 401 and set(body) == {"statusCode", "message", "correlationId"}


def test_changes_made_with_the_cli_apply_to_the_next_request(server, client_env):
    mi_json(server.db, "resource", "create", "-g", "rg", "-n", "vm-live", "--type", "vm", "--system-assigned")
    client_env(server.env("vm-live"))
    assert validate(server, ManagedIdentityCredential().get_token(f"{VAULT}/.default").token)
    mi_json(server.db, "identity", "remove", "--resource", "vm-live", "-g", "rg", "--identities", "[system]")
    with pytest.raises(ClientAuthenticationError, match="Identity not found"):
        ManagedIdentityCredential().get_token(f"{VAULT}/.default")
    mi_json(server.db, "resource", "delete", "-g", "rg", "-n", "vm-live", "--yes")
    status, body, _ = get(server.env("vm-sys")["AZURE_POD_IDENTITY_AUTHORITY_HOST"].replace("vm-sys", "vm-live")
                          + f"/metadata/identity/oauth2/token?api-version=2018-02-01&resource={VAULT}", {"Metadata": "true"})
    assert (status, body["error_description"]) == (400, "Identity not found")


def test_tokens_are_cached_until_near_expiry_unless_bypassed(server):
    mi_json(server.db, "app", "create", "--display-name", "cache-api", "--identifier-uris", "https://cache.test")
    url = imds_url(server, "vm-sys", "api-version=2018-02-01&resource=https://cache.test")
    first = get(url, {"Metadata": "true"})[1]["access_token"]
    assert get(url, {"Metadata": "true"})[1]["access_token"] == first
    assert get(url + "&bypass_cache=true", {"Metadata": "true"})[1]["access_token"] != first


def test_every_token_issued_or_refused_is_in_the_activity_log(server):
    # one token issued (ua-two, through vm-multi's IMDS) and one refused (vm-none has no identity), whatever ran before
    ua_two = mi_json(server.db, "identity", "show", "-g", "rg", "-n", "ua-two")["clientId"]
    assert get(imds_url(server, "vm-multi", f"api-version=2018-02-01&resource={VAULT}&client_id={ua_two}"),
               {"Metadata": "true"})[0] == 200
    assert get(imds_url(server, "vm-none"), {"Metadata": "true"})[0] == 400
    log = mi_json(server.db, "log", "--operation", "token/issue")
    assert {e["status"] for e in log} == {"Succeeded", "Failed"}
    refused = [e for e in log if e["status"] == "Failed"]
    assert any("Identity not found" in e["detail"] for e in refused)
    issued = [e for e in log if e["status"] == "Succeeded"]
    assert any(e["caller"] == server.ids["ua-two"]["principalId"] for e in issued)


def test_openid_metadata_and_jwks(server):
    tid = server.ids["tenant"]
    status, v1, _ = get(f"{server.base}/{tid}/.well-known/openid-configuration")
    assert status == 200 and v1["issuer"] == f"https://sts.windows.net/{tid}/"
    status, v2, _ = get(f"{server.base}/{tid}/v2.0/.well-known/openid-configuration")
    assert status == 200 and v2["issuer"] == f"https://login.microsoftonline.com/{tid}/v2.0"
    for path in (f"/{tid}/discovery/keys", "/common/discovery/keys"):
        status, jwks, _ = get(server.base + path)
        assert status == 200 and jwks["keys"] and all(k["kty"] == "RSA" and "d" not in k for k in jwks["keys"])
    status, body, _ = get(f"{server.base}/00000000-0000-0000-0000-000000000000/.well-known/openid-configuration")
    assert status == 400 and body["error"] == "invalid_tenant"


def test_rotated_keys_keep_old_tokens_valid_until_retired(server, client_env):
    client_env(server.env("vm-sys"))
    mi_json(server.db, "app", "create", "--display-name", "rotate-api", "--identifier-uris", "https://rotate.test")
    old = ManagedIdentityCredential().get_token("https://rotate.test/.default").token
    old_kid = jwt.get_unverified_header(old)["kid"]
    new_kid = mi_json(server.db, "token", "keys", "rotate")["kid"]
    new = get(imds_url(server, "vm-sys", "api-version=2018-02-01&resource=https://rotate.test&bypass_cache=true"),
              {"Metadata": "true"})[1]["access_token"]
    assert jwt.get_unverified_header(new)["kid"] == new_kid != old_kid
    assert validate(server, old, "https://rotate.test") and validate(server, new, "https://rotate.test")
    mi_json(server.db, "token", "keys", "retire", "--kid", old_kid)
    with pytest.raises(jwt.PyJWKClientError):
        validate(server, old, "https://rotate.test")


def test_app_service_takes_principal_id_as_go_sends_it(server):
    env = server.env("app-both", "appservice")
    ua = server.ids["ua-two"]
    status, body, _ = get(f"{env['IDENTITY_ENDPOINT']}?api-version=2019-08-01&resource={VAULT}&principal_id={ua['principalId']}",
                          {"X-IDENTITY-HEADER": env["IDENTITY_HEADER"]})
    assert status == 200 and body["client_id"] == ua["clientId"]
    # App Service's 2019-08-01 body: these five, in this order, expires_on in epoch seconds as a string
    # (azure-sdk-for-python#11346; azure-docs app-service/overview-managed-identity.md sample)
    assert list(body) == ["access_token", "expires_on", "resource", "token_type", "client_id"]
    assert body["expires_on"].isdigit() and body["resource"] == VAULT
    status, body, headers = get(f"{env['IDENTITY_ENDPOINT']}?api-version=2017-09-01&resource={VAULT}",
                                {"X-IDENTITY-HEADER": env["IDENTITY_HEADER"]})
    assert status == 400 and body["statusCode"] == 400
