"""Signing keys: an RS256 key per tenant with its self-signed certificate, created on first use, rotated
and retired by command, published in the shape of Entra's JWKS."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import timedelta
from typing import Any

from sqlmodel import select

from mi_cli.errors import NotFoundError, ValidationError
from mi_cli.models import SigningKey, Tenant
from mi_cli.services import Ctx

# Parsing a PEM costs tens of milliseconds: each key is parsed once per process, then reused.
_PARSED: dict[str, Any] = {}

# Entra's signing certificates are self-signed, X.509 v3, sha256WithRSAEncryption, with a random
# 128-bit serial, a Subject Key Identifier as their one extension, and five years of validity (a real
# key, kid -KI3Q9nNR7bRofxmeZoXqbHZGew: CN=accounts.accesscontrol.windows.net, 2022-10-02 to 2027-10-02).
CERTIFICATE_YEARS = 5
# The members of a key in Entra's keys document, in its order (learn.microsoft.com/entra/identity-platform/
# access-tokens, "Validate the signature": kty, use, kid, x5t, n, e, x5c, issuer). No `alg`.
JWK_MEMBERS = ("kty", "use", "kid", "x5t", "n", "e", "x5c")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def thumbprint(jwk: dict[str, str]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256 over the required members, in order): the kid of keys made
    before keys had certificates, which the tokens they signed still name."""
    canonical = json.dumps({"e": jwk["e"], "kty": jwk["kty"], "n": jwk["n"]}, separators=(",", ":"), sort_keys=True)
    return _b64url(hashlib.sha256(canonical.encode()).digest())


def certificate_thumbprint(der: bytes) -> str:
    """x5t: the base64url SHA-1 of the certificate's DER, 27 characters; Entra's kid is the same value."""
    return _b64url(hashlib.sha1(der).digest())  # noqa: S324 - the x5t of RFC 7517 is SHA-1 by definition


def has_certificate(key: SigningKey) -> bool:
    return bool(key.public_jwk.get("x5c"))


def _new_key(ctx: Ctx, tenant: Tenant) -> SigningKey:
    # imported when a key is made or read: jwt and cryptography cost ~9x `python -c pass`, and most commands sign nothing
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID
    from jwt.algorithms import RSAAlgorithm

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = ctx.now()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"mi token signing {tenant.id}")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=365 * CERTIFICATE_YEARS + 1))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(private.public_key()), critical=False)
        .sign(private, hashes.SHA256())
    )
    der = certificate.public_bytes(serialization.Encoding.DER)
    kid = certificate_thumbprint(der)
    rsa_jwk = json.loads(RSAAlgorithm.to_jwk(private.public_key()))
    # The certificate is kept with the key, in the published part: x5c is the certificate itself.
    jwk = {"kty": "RSA", "use": "sig", "kid": kid, "x5t": kid, "n": rsa_jwk["n"], "e": rsa_jwk["e"],
           "x5c": [base64.b64encode(der).decode()]}
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    key = SigningKey(kid=kid, tenant_id=tenant.id, private_pem=pem, public_jwk=jwk, created_at=now)
    ctx.session.add(key)
    ctx.session.flush()
    _PARSED[kid] = private
    ctx.log("Microsoft.Directory/signingKeys/write", kid)
    return key


def active(ctx: Ctx, tenant: Tenant, *, create: bool = True) -> SigningKey | None:
    """The key that signs: the newest unretired key of the tenant, created on first use.

    A key made before keys had certificates (kid an RFC 7638 thumbprint, no x5c) signs no more: the
    first token after the upgrade gets a new key with a certificate, and the old key stays published
    under its old kid, so the tokens it signed keep verifying until it is retired.
    """
    key = ctx.session.exec(
        select(SigningKey)
        .where(SigningKey.tenant_id == tenant.id, SigningKey.retired_at == None)  # noqa: E711
        .order_by(SigningKey.created_at.desc())
    ).first()
    if create and (key is None or not has_certificate(key)):
        key = _new_key(ctx, tenant)
    return key


def private_key(key: SigningKey):  # noqa: ANN201
    parsed = _PARSED.get(key.kid)
    if parsed is None:
        from cryptography.hazmat.primitives import serialization  # lazily, as in _new_key

        parsed = _PARSED[key.kid] = serialization.load_pem_private_key(key.private_pem.encode(), password=None)
    return parsed


def token_header(key: SigningKey) -> dict[str, str]:
    """The JWT header's key members: v1 tokens carry both kid and x5t, equal to the JWKS entry's."""
    return {"kid": key.kid, "x5t": key.public_jwk.get("x5t", key.kid)}


def published(ctx: Ctx, tenant_id: str | None = None) -> list[SigningKey]:
    """Keys in the JWKS: every unretired key, so tokens signed before a rotation still verify."""
    stmt = select(SigningKey).where(SigningKey.retired_at == None)  # noqa: E711
    if tenant_id:
        stmt = stmt.where(SigningKey.tenant_id == tenant_id)
    return list(ctx.session.exec(stmt.order_by(SigningKey.created_at)).all())


def issuer_of(tenant_id: str, *, v2: bool = False) -> str:
    return f"https://login.microsoftonline.com/{tenant_id}/v2.0" if v2 else f"https://sts.windows.net/{tenant_id}/"


def public_view(key: SigningKey, *, v2: bool = False) -> dict[str, Any]:
    """A key as Entra publishes it: kty, use, kid, x5t, n, e, x5c, then the issuer that signs with it
    (a tenant's own key names its tenant). Members that keys made by older versions also stored
    (`alg`, a v1 `issuer`) are left out; a key without a certificate has no x5c."""
    jwk = {name: key.public_jwk[name] for name in JWK_MEMBERS if name in key.public_jwk}
    jwk.setdefault("x5t", key.kid)
    jwk["issuer"] = issuer_of(key.tenant_id, v2=v2)
    return jwk


def jwks(ctx: Ctx, tenant_id: str | None = None, *, v2: bool = False) -> dict[str, list[dict]]:
    return {"keys": [public_view(k, v2=v2) for k in published(ctx, tenant_id)]}


def list_all(ctx: Ctx) -> list[SigningKey]:
    return list(ctx.session.exec(select(SigningKey).order_by(SigningKey.created_at)).all())


def rotate(ctx: Ctx, tenant: Tenant) -> SigningKey:
    """A new key signs from now on; the old ones stay published until retired."""
    return _new_key(ctx, tenant)


def retire(ctx: Ctx, kid: str) -> SigningKey:
    key = ctx.session.get(SigningKey, kid)
    if key is None:
        raise NotFoundError("KeyNotFound", f"No signing key has kid '{kid}'. See 'mi token keys list'.")
    if key.retired_at is None:
        others = [k for k in published(ctx, key.tenant_id) if k.kid != kid]
        if not others:
            raise ValidationError("InvalidOperation", "The last active signing key cannot be retired; rotate first.")
        key.retired_at = ctx.now()
        ctx.session.add(key)
        ctx.log("Microsoft.Directory/signingKeys/retire", kid)
    return key


def view(key: SigningKey) -> dict[str, Any]:
    """What may be shown of a key: never the private part."""
    return {
        "createdAt": key.created_at.isoformat(),
        "hasCertificate": has_certificate(key),
        "kid": key.kid,
        "retiredAt": key.retired_at.isoformat() if key.retired_at else None,
        "status": "Retired" if key.retired_at else "Active",
        "tenantId": key.tenant_id,
    }
