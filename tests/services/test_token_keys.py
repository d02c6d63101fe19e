"""Signing keys as Entra publishes its own: a self-signed certificate per key, kid = x5t = the certificate's
SHA-1 thumbprint, the keys document's members and order, the token header naming the key, and a store
whose key was made before keys had certificates."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime, timedelta, timezone

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mi_cli.errors import ValidationError
from mi_cli.models import SigningKey
from mi_cli.services import groups, identities, keys, resources, tenancy, tokens

VAULT = "https://vault.azure.net"


@pytest.fixture
def vm(store):
    with store() as ctx:
        g = groups.create(ctx, "rg", "westeurope")
        identities.enable_system(ctx, resources.create(ctx, g, "vm1", "vm"))
    return store


def _issue(ctx, audience: str = VAULT) -> tokens.Issued:
    res = resources.get(ctx, groups.get(ctx, "rg"), "vm1")
    return tokens.issue(ctx, tokens.choose(ctx, res), audience)


def _b64url_sha1(der: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha1(der).digest()).rstrip(b"=").decode()


def test_a_key_is_published_as_entras_are_with_its_certificate(vm):
    """Entra's keys document: kty, use, kid, x5t, n, e, x5c, issuer, with kid = x5t (learn.microsoft.com/
    entra/identity-platform/access-tokens, "Validate the signature"). x5t is the base64url SHA-1 of the
    certificate, 27 characters: for a real key, kid -KI3Q9nNR7bRofxmeZoXqbHZGew is exactly that of its
    x5c (CN=accounts.accesscontrol.windows.net, self-signed, 2022-10-02 to 2027-10-02, one extension:
    the Subject Key Identifier)."""
    with vm() as ctx:
        _issue(ctx)
        v1, v2 = keys.jwks(ctx)["keys"], keys.jwks(ctx, v2=True)["keys"]
        tid = tenancy.default_tenant(ctx).id
    assert len(v1) == 1
    key = v1[0]
    assert list(key) == ["kty", "use", "kid", "x5t", "n", "e", "x5c", "issuer"]
    der = base64.b64decode(key["x5c"][0])
    assert key["kid"] == key["x5t"] == _b64url_sha1(der) and len(key["kid"]) == 27
    assert (key["kty"], key["use"], key["e"]) == ("RSA", "sig", "AQAB")
    assert key["issuer"] == f"https://sts.windows.net/{tid}/"
    assert v2[0]["issuer"] == f"https://login.microsoftonline.com/{tid}/v2.0" and v2[0]["kid"] == key["kid"]

    certificate = x509.load_der_x509_certificate(der)
    assert certificate.issuer == certificate.subject and certificate.version == x509.Version.v3
    assert certificate.signature_hash_algorithm.name == "sha256"
    assert [e.oid for e in certificate.extensions] == [x509.oid.ExtensionOID.SUBJECT_KEY_IDENTIFIER]
    assert certificate.not_valid_after_utc - certificate.not_valid_before_utc >= timedelta(days=5 * 365)
    numbers = certificate.public_key().public_numbers()
    assert numbers.n == int.from_bytes(base64.urlsafe_b64decode(key["n"] + "=="), "big") and numbers.e == 65537
    # the certificate is signed by the key it carries
    certificate.verify_directly_issued_by(certificate)


def test_a_tokens_header_names_its_key_as_the_keys_document_does(vm):
    """v1 tokens' header: typ, alg, x5t, kid, with x5t = kid (access-tokens doc: "v1.0 tokens contain
    both the x5t and kid claims")."""
    with vm() as ctx:
        issued = _issue(ctx)
        published = keys.jwks(ctx)["keys"][0]
    header = jwt.get_unverified_header(issued.access_token)
    assert header == {"typ": "JWT", "alg": "RS256", "x5t": published["kid"], "kid": published["kid"]}
    signing_key = jwt.PyJWK(published)  # as PyJWKClient builds it: no alg in Entra's keys, RS256 from kty
    claims = jwt.decode(issued.access_token, signing_key.key, algorithms=["RS256"], audience=VAULT)
    assert claims["oid"] == issued.chosen.principal_id


def _legacy_key(ctx) -> tuple[SigningKey, rsa.RSAPrivateKey]:
    """A key as versions before certificates made it: kid the RFC 7638 thumbprint, no x5c, and the
    alg and v1 issuer they stored with it."""
    from jwt.algorithms import RSAAlgorithm

    tenant = tenancy.default_tenant(ctx)
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(private.public_key()))
    kid = keys.thumbprint(jwk)
    jwk.update({"kid": kid, "use": "sig", "alg": "RS256", "x5t": kid, "issuer": f"https://sts.windows.net/{tenant.id}/"})
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    key = SigningKey(kid=kid, tenant_id=tenant.id, private_pem=pem, public_jwk=jwk,
                     created_at=datetime.now(timezone.utc) - timedelta(hours=1))
    ctx.session.add(key)
    return key, private


def _legacy_token(key: SigningKey, private, claims: dict) -> str:
    """A token as those versions signed it: the header's kid and x5t both the RFC 7638 thumbprint."""
    now = int(datetime.now(timezone.utc).timestamp()) - 600
    claims = {**claims, "iat": now, "nbf": now, "exp": now + 86_400}
    return jwt.encode(claims, private, algorithm="RS256", headers={"kid": key.kid, "x5t": key.kid, "typ": "JWT"})


def test_a_store_from_before_certificates_keeps_verifying_its_tokens_and_signs_with_a_new_key(vm):
    """The old key signs no more but stays published under its old kid until it is retired, so a token it
    signed still verifies (`mi token verify` and PyJWKClient look keys up by the header's kid)."""
    with vm() as ctx:
        old_key, private = _legacy_key(ctx)
        chosen = tokens.choose(ctx, resources.get(ctx, groups.get(ctx, "rg"), "vm1"))
        issuer = f"https://sts.windows.net/{old_key.tenant_id}/"
    old_token = _legacy_token(old_key, private, {"aud": "https://before.test", "iss": issuer, "oid": chosen.principal_id,
                                                 "sub": chosen.principal_id, "tid": old_key.tenant_id, "ver": "1.0"})
    with vm() as ctx:
        assert keys.active(ctx, tenancy.default_tenant(ctx), create=False).kid == old_key.kid
        assert tokens.verify(ctx, old_token, audience="https://before.test")["oid"] == chosen.principal_id
        new = _issue(ctx)  # the first token after the upgrade makes a key with a certificate
        published = {k["kid"]: k for k in keys.jwks(ctx)["keys"]}
        views = {k.kid: keys.view(k) for k in keys.list_all(ctx)}
    new_kid = jwt.get_unverified_header(new.access_token)["kid"]
    assert new_kid != old_key.kid and len(new_kid) == 27 and len(old_key.kid) == 43
    assert set(published) == {old_key.kid, new_kid}
    assert published[old_key.kid] == {"kty": "RSA", "use": "sig", "kid": old_key.kid, "x5t": old_key.kid,
                                      "n": old_key.public_jwk["n"], "e": "AQAB", "issuer": old_key.public_jwk["issuer"]}
    assert "x5c" in published[new_kid]
    assert {k: (v["status"], v["hasCertificate"]) for k, v in views.items()} == {
        old_key.kid: ("Active", False), new_kid: ("Active", True)}
    for token, kid in ((old_token, old_key.kid), (new.access_token, new_kid)):
        assert jwt.decode(token, jwt.PyJWK(published[kid]).key, algorithms=["RS256"], options={"verify_aud": False})
    with vm() as ctx:
        assert tokens.verify(ctx, old_token)["oid"] == tokens.verify(ctx, new.access_token)["oid"]
        again = _issue(ctx)  # the new key keeps signing: one migration, not one per token
        assert jwt.get_unverified_header(again.access_token)["kid"] == new_kid
        keys.retire(ctx, old_key.kid)
    with vm() as ctx:
        with pytest.raises(ValidationError, match="not published by this tenant"):
            tokens.verify(ctx, old_token)
        assert tokens.verify(ctx, new.access_token)
