"""What `mi serve` sends on the wire, as the real endpoints do: IMDS's and App Service's Content-Type, IMDS's
identity info, the keys document and the token header that names a key, and a store whose key predates
certificates, served to unmodified clients."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import jwt
import pytest
from azure.identity import ManagedIdentityCredential
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.clients.conftest import build_scenario, get, mi_json, start_server

VAULT = "https://vault.azure.net"
# Recorded from IMDS (Server: IMDS/150.870.65.528) and App Service (Server: Kestrel), successes and errors
# alike: azure-sdk-for-python sdk/identity/azure-identity/tests/recordings/
# test_imds_credential.pyTestImdstest_system_assigned.json and test_app_service.test_system_assigned.yaml.
JSON_UTF8 = "application/json; charset=utf-8"


def _content_type(headers: dict) -> str:
    return {k.lower(): v for k, v in headers.items()}["content-type"]


def _imds(server, resource: str, path: str = "oauth2/token", query: str = f"api-version=2018-02-01&resource={VAULT}") -> str:
    return f"{server.base}{server.ids[resource]['id']}/metadata/identity/{path}?{query}"


def test_imds_and_app_service_answer_json_in_utf_8(server):
    answers = [get(_imds(server, "vm-sys"), {"Metadata": "true"}), get(_imds(server, "vm-sys"))]
    env = server.env("app-both", "appservice")
    for secret in (env["IDENTITY_HEADER"], "00000000-0000-0000-0000-000000000000"):
        answers.append(get(f"{env['IDENTITY_ENDPOINT']}?api-version=2019-08-01&resource={VAULT}",
                           {"X-IDENTITY-HEADER": secret}))
    assert [status for status, _, _ in answers] == [200, 400, 200, 401]
    assert [_content_type(headers) for _, _, headers in answers] == [JSON_UTF8] * 4


@pytest.mark.parametrize("version", ["2018-04-02", "2023-07-01"])
def test_imds_identity_info_is_the_tenant(server, version):
    """GET /metadata/identity/info, Identity_GetInfo in azure-rest-api-specs specification/imds/data-plane/
    InstanceMetadataService/stable/2023-07-01/imds.json (there since 2018-04-02): Metadata: true and
    api-version required; the body is {"tenantId": ...} (examples/GetIdentityInfo.json)."""
    status, body, headers = get(_imds(server, "vm-sys", "info", f"api-version={version}"), {"Metadata": "true"})
    assert (status, body) == (200, {"tenantId": server.ids["tenant"]}) and _content_type(headers) == JSON_UTF8


def test_imds_identity_info_is_refused_as_the_token_endpoint_refuses(server):
    info = _imds(server, "vm-sys", "info", "api-version=2023-07-01")
    assert get(info)[:2] == (400, {"error": "invalid_request", "error_description": "Required metadata header not specified"})
    status, body, _ = get(info.split("?")[0], {"Metadata": "true"})
    assert status == 400 and body["error"].startswith("Bad request. api-version was not specified")
    status, body, _ = get(info, {"Metadata": "true", "X-Forwarded-For": "10.0.0.1"})
    assert status == 400 and body["error"] == "invalid_request"
    gone = info.replace("/vm-sys/", "/vm-nowhere/")
    assert get(gone, {"Metadata": "true"})[:2] == (400, {"error": "invalid_request", "error_description": "Identity not found"})
    lowered = info.split("?")[0].lower() + "/?api-version=2023-07-01"  # as @azure/identity sends paths
    assert get(lowered, {"Metadata": "true"})[:2] == (200, {"tenantId": server.ids["tenant"]})


def test_the_token_header_names_a_key_of_the_keys_document(server, client_env):
    """Entra's v1 tokens: header kid = x5t, the entry's kid and x5t in the keys document, which has
    kty, use, kid, x5t, n, e, x5c, issuer (learn.microsoft.com/entra/identity-platform/access-tokens)."""
    client_env(server.env("vm-sys"))
    token = ManagedIdentityCredential().get_token(f"{VAULT}/.default").token
    header = jwt.get_unverified_header(token)
    tid = server.ids["tenant"]
    for path, issuer in ((f"/{tid}/discovery/keys", f"https://sts.windows.net/{tid}/"),
                         (f"/{tid}/discovery/v2.0/keys", f"https://login.microsoftonline.com/{tid}/v2.0")):
        status, document, _ = get(server.base + path)
        entry = {k["kid"]: k for k in document["keys"]}[header["kid"]]
        assert status == 200 and list(entry) == ["kty", "use", "kid", "x5t", "n", "e", "x5c", "issuer"]
        assert header["x5t"] == entry["x5t"] == entry["kid"] and len(entry["kid"]) == 27 and entry["issuer"] == issuer
        client = jwt.PyJWKClient(server.base + path)
        assert jwt.decode(token, client.get_signing_key_from_jwt(token).key, algorithms=["RS256"], audience=VAULT)


def test_a_store_from_before_certificates_serves_old_and_new_tokens_to_real_clients(tmp_path, client_env):
    """A store whose key was made before keys had certificates (kid an RFC 7638 thumbprint): the token it
    signed still validates through PyJWKClient and `mi token verify`; new tokens come from a new key
    with a certificate."""
    from jwt.algorithms import RSAAlgorithm

    from mi_cli.models import SigningKey
    from mi_cli.services import Ctx, keys, tenancy
    from mi_cli.store import open_store

    db = tmp_path / "store.db"
    ids = build_scenario(db)
    tid = ids["tenant"]
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(private.public_key()))
    old_kid = keys.thumbprint(jwk)
    jwk.update({"kid": old_kid, "use": "sig", "alg": "RS256", "x5t": old_kid, "issuer": f"https://sts.windows.net/{tid}/"})
    store = open_store(db)
    try:
        with store.transaction(write=True) as session:
            assert tenancy.default_tenant(Ctx(session)).id == tid
            session.add(SigningKey(kid=old_kid, tenant_id=tid, public_jwk=jwk, created_at=datetime.now(timezone.utc),
                                   private_pem=private.private_bytes(serialization.Encoding.PEM,
                                                                     serialization.PrivateFormat.PKCS8,
                                                                     serialization.NoEncryption()).decode()))
    finally:
        store.close()
    now = int(datetime.now(timezone.utc).timestamp())
    principal = ids["vm-sys"]["identity"]["principalId"]
    old = jwt.encode({"aud": VAULT, "iss": f"https://sts.windows.net/{tid}/", "iat": now, "nbf": now, "exp": now + 86_400,
                      "oid": principal, "sub": principal, "tid": tid, "ver": "1.0"},
                     private, algorithm="RS256", headers={"kid": old_kid, "x5t": old_kid, "typ": "JWT"})
    srv = start_server(db)
    srv.ids = ids
    try:
        client_env(srv.env("vm-sys"))
        new = ManagedIdentityCredential().get_token(f"{VAULT}/.default").token
        assert jwt.get_unverified_header(new)["kid"] != old_kid
        status, config, _ = get(f"{srv.base}/{tid}/.well-known/openid-configuration")
        client = jwt.PyJWKClient(config["jwks_uri"])
        for token in (old, new):
            claims = jwt.decode(token, client.get_signing_key_from_jwt(token).key, algorithms=["RS256"], audience=VAULT,
                                issuer=config["issuer"])
            assert claims["oid"] == principal
            assert mi_json(db, "token", "verify", token, "--audience", VAULT)["valid"] is True
        listed = {k["kid"]: k["hasCertificate"] for k in mi_json(db, "token", "keys", "list")}
        assert listed == {old_kid: False, jwt.get_unverified_header(new)["kid"]: True}
    finally:
        assert srv.stop() == 0, srv.log.read_text()
