"""Signing keys: an RS256 key per tenant, created on first use, rotated and retired by command."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from sqlmodel import select

from mi_cli.errors import NotFoundError, ValidationError
from mi_cli.models import SigningKey, Tenant
from mi_cli.services import Ctx

# Parsing a PEM costs tens of milliseconds: each key is parsed once per process, then reused.
_PARSED: dict[str, Any] = {}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def thumbprint(jwk: dict[str, str]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256 over the required members, in order)."""
    canonical = json.dumps({"e": jwk["e"], "kty": jwk["kty"], "n": jwk["n"]}, separators=(",", ":"), sort_keys=True)
    return _b64url(hashlib.sha256(canonical.encode()).digest())


def _new_key(ctx: Ctx, tenant: Tenant) -> SigningKey:
    # imported when a key is made or read: jwt and cryptography cost ~9x `python -c pass`, and most commands sign nothing
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwt.algorithms import RSAAlgorithm

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(private.public_key()))
    kid = thumbprint(jwk)
    jwk.update({"kid": kid, "use": "sig", "alg": "RS256", "x5t": kid, "issuer": f"https://sts.windows.net/{tenant.id}/"})
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    key = SigningKey(kid=kid, tenant_id=tenant.id, private_pem=pem, public_jwk=jwk, created_at=ctx.now())
    ctx.session.add(key)
    ctx.session.flush()
    _PARSED[kid] = private
    ctx.log("Microsoft.Directory/signingKeys/write", kid)
    return key


def active(ctx: Ctx, tenant: Tenant, *, create: bool = True) -> SigningKey | None:
    """The newest unretired key of the tenant (created on first use)."""
    key = ctx.session.exec(
        select(SigningKey)
        .where(SigningKey.tenant_id == tenant.id, SigningKey.retired_at == None)  # noqa: E711
        .order_by(SigningKey.created_at.desc())
    ).first()
    if key is None and create:
        key = _new_key(ctx, tenant)
    return key


def private_key(key: SigningKey):  # noqa: ANN201
    parsed = _PARSED.get(key.kid)
    if parsed is None:
        from cryptography.hazmat.primitives import serialization  # lazily, as in _new_key

        parsed = _PARSED[key.kid] = serialization.load_pem_private_key(key.private_pem.encode(), password=None)
    return parsed


def published(ctx: Ctx, tenant_id: str | None = None) -> list[SigningKey]:
    """Keys in the JWKS: every unretired key, so tokens signed before a rotation still verify."""
    stmt = select(SigningKey).where(SigningKey.retired_at == None)  # noqa: E711
    if tenant_id:
        stmt = stmt.where(SigningKey.tenant_id == tenant_id)
    return list(ctx.session.exec(stmt.order_by(SigningKey.created_at)).all())


def jwks(ctx: Ctx, tenant_id: str | None = None) -> dict[str, list[dict]]:
    return {"keys": [k.public_jwk for k in published(ctx, tenant_id)]}


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
        "kid": key.kid,
        "retiredAt": key.retired_at.isoformat() if key.retired_at else None,
        "status": "Retired" if key.retired_at else "Active",
        "tenantId": key.tenant_id,
    }
