"""Managed-identity tokens: which identity a request gets, v1 app-only claims, signing, verifying."""

from __future__ import annotations

import base64
import os
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from mi_cli import ids
from mi_cli.errors import MiError, ValidationError
from mi_cli.models import Resource
from mi_cli.services import Ctx, identities, keys, principals
from mi_cli.services.tenancy import default_tenant

LIFETIME = 24 * 3600  # MI tokens live about a day; the lifetime of MI tokens is not configurable
REFRESH_MARGIN = 300  # MSAL treats a token with under 5 minutes left as expired
MULTIPLE_UA = ("Multiple user assigned identities exist, please specify the clientId / resourceId of the identity "
               "in the token request")


class TokenError(MiError):
    """A token request the identity endpoint refuses: IMDS's `error` code and description, and status."""

    def __init__(self, description: str, *, error: str = "invalid_request", status: int = 400) -> None:
        super().__init__(error, description)
        self.status = status


@dataclass(frozen=True)
class Chosen:
    kind: str  # SystemAssigned | UserAssigned
    principal_id: str
    client_id: str
    mirid: str  # xms_mirid: the resource (SA) or the user-assigned identity (UA)
    resource_id: str  # the resource that asked


def _claim_id(arm_id: str) -> str:
    # Token claims carry ids with a lowercase resourcegroups segment.
    parts = arm_id.split("/")
    if len(parts) > 3 and parts[3].casefold() == "resourcegroups":
        parts[3] = "resourcegroups"
    return "/".join(parts)


def choose(ctx: Ctx, res: Resource, *, client_id: str | None = None, object_id: str | None = None,
           mi_res_id: str | None = None, system_only_default: bool = False) -> Chosen:
    """IMDS's rules: a selector must name an identity on this resource; without one, the system
    identity if on, else the only user-assigned one, else an error. App Service's endpoint takes
    no selector to mean the system identity only (`system_only_default`)."""
    given = [(k, v) for k, v in (("client_id", client_id), ("object_id", object_id), ("mi_res_id", mi_res_id)) if v]
    if len(given) > 1:
        raise TokenError("Only one of client_id, object_id and msi_res_id may be given.", error="invalid_request")
    system = None
    if res.system_principal_id:
        sp = principals.get(ctx, res.system_principal_id)
        system = Chosen("SystemAssigned", sp.id, sp.app_id, _claim_id(res.arm_id), res.arm_id)
    attached = identities.attachments(ctx, res)
    users = [
        Chosen("UserAssigned", a.principal_id, a.client_id, _claim_id(a.identity_id), res.arm_id)
        for a in attached
    ]
    live = {a.identity_key for a in attached if identities.is_live(ctx, a)}

    def usable(c: Chosen) -> Chosen:
        if c.kind == "UserAssigned" and ids.key(c.mirid) not in live:
            raise TokenError("Identity not found")  # deleted, still referenced (rule 5)
        return c

    if given:
        kind, value = given[0]
        wanted = ids.key(value.strip())
        for c in ([system] if system else []) + users:
            if (kind == "client_id" and c.client_id == wanted) or (kind == "object_id" and c.principal_id == wanted) or (
                kind == "mi_res_id" and c.kind == "UserAssigned" and ids.key(c.mirid) == ids.key(_claim_id(value.strip()))
            ):
                return usable(c)
        raise TokenError("Identity not found")
    if system:
        return system
    if system_only_default:
        raise TokenError("Identity not found")
    if len(users) == 1:
        return usable(users[0])
    if len(users) > 1:
        raise TokenError(MULTIPLE_UA)
    raise TokenError("Identity not found")


def _opaque(n: int) -> str:
    return base64.urlsafe_b64encode(os.urandom(n)).rstrip(b"=").decode()


@dataclass(frozen=True)
class Issued:
    access_token: str
    claims: dict[str, Any]
    chosen: Chosen

    @property
    def expires_on(self) -> int:
        return self.claims["exp"]

    @property
    def not_before(self) -> int:
        return self.claims["nbf"]


def issue(ctx: Ctx, chosen: Chosen, audience: str) -> Issued:
    """Sign a v1.0 app-only token with the claims Azure puts in managed-identity tokens."""
    import jwt

    if not audience or not audience.strip():
        raise TokenError("Required query variable 'resource' is missing", error="invalid_request")
    tenant = default_tenant(ctx)
    key = keys.active(ctx, tenant)
    now = int(ctx.now().timestamp())
    issuer = f"https://sts.windows.net/{tenant.id}/"
    claims: dict[str, Any] = {
        "aud": audience,
        "iss": issuer,
        "iat": now,
        "nbf": now,
        "exp": now + LIFETIME,
        "aio": _opaque(48),
        "appid": chosen.client_id,
        "appidacr": "2",
        "idp": issuer,
        "idtyp": "app",
        "oid": chosen.principal_id,
        "rh": f"0.{_opaque(36)}.",
        "sub": chosen.principal_id,
        "tid": tenant.id,
        "uti": _opaque(16),
        "ver": "1.0",
        "xms_mirid": chosen.mirid,
    }
    if chosen.kind == "UserAssigned":
        claims["xms_az_rid"] = _claim_id(chosen.resource_id)
    token = jwt.encode(claims, keys.private_key(key), algorithm="RS256", headers={"kid": key.kid, "x5t": key.kid, "typ": "JWT"})
    return Issued(token, claims, chosen)


def log_request(ctx: Ctx, res: Resource, audience: str, outcome: Issued | TokenError, *, via: str) -> None:
    """A sign-in record: the caller is the identity that got the token (or the resource that asked)."""
    if isinstance(outcome, Issued):
        ctx.log("Microsoft.ManagedIdentity/token/issue", outcome.chosen.mirid, caller=outcome.chosen.principal_id,
                detail=f"aud={audience}; via={via}; resource={res.arm_id}")
    else:
        ctx.log("Microsoft.ManagedIdentity/token/issue", res.arm_id, status="Failed", caller=res.name,
                detail=f"aud={audience}; via={via}; error={outcome.code}: {outcome.message}")


def request(ctx: Ctx, res: Resource, audience: str, *, via: str, **selector: str | None) -> Issued | TokenError:
    """Choose, issue and log: the outcome either way, so a refusal is recorded too."""
    try:
        outcome: Issued | TokenError = issue(ctx, choose(ctx, res, **selector), audience)
    except TokenError as exc:
        outcome = exc
    log_request(ctx, res, audience, outcome, via=via)
    return outcome


# --- a cache like the one behind IMDS: the same token until close to its expiry -------------------


class TokenCache:
    def __init__(self) -> None:
        self._tokens: dict[tuple[str, str, str], Issued] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(chosen: Chosen, audience: str) -> tuple[str, str, str]:
        return chosen.principal_id, chosen.resource_id.casefold(), normalise_audience(audience)

    def get(self, chosen: Chosen, audience: str, now: float | None = None) -> Issued | None:
        with self._lock:
            hit = self._tokens.get(self._key(chosen, audience))
        if hit is not None and hit.expires_on - (now or time.time()) > REFRESH_MARGIN and hit.claims["aud"] == audience:
            return hit
        return None

    def put(self, issued: Issued) -> None:
        with self._lock:
            self._tokens[self._key(issued.chosen, issued.claims["aud"])] = issued


# --- reading tokens ------------------------------------------------------------------------------


def normalise_audience(aud: str) -> str:
    """Audiences compare without a trailing slash and case-insensitively in scheme and host."""
    return aud.strip().rstrip("/").casefold()


def decode(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims, without verifying anything."""
    import jwt

    try:
        return jwt.get_unverified_header(token), jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise ValidationError("InvalidToken", f"This is not a JWT: {exc}.") from None


def verify(ctx: Ctx, token: str, *, audience: str | None = None) -> dict[str, Any]:
    """Signature (against the published keys), expiry, not-before, issuer and audience."""
    import jwt

    header, claims = decode(token)
    published = {k.kid: k for k in keys.published(ctx)}
    key = published.get(header.get("kid", ""))
    if key is None:
        raise ValidationError("InvalidToken", f"The token's key '{header.get('kid')}' is not published by this tenant (unknown or retired).")
    try:
        verified = jwt.decode(
            token,
            keys.private_key(key).public_key(),
            algorithms=["RS256"],
            issuer=f"https://sts.windows.net/{key.tenant_id}/",
            options={"verify_aud": False, "require": ["exp", "nbf", "iat", "iss", "aud"]},
            leeway=0,
            # PyJWT checks time against the wall clock; ctx.now() is the wall clock outside tests
        )
    except jwt.ExpiredSignatureError:
        raise ValidationError("InvalidToken", f"The token expired at {claims.get('exp')} (epoch seconds).") from None
    except jwt.ImmatureSignatureError:
        raise ValidationError("InvalidToken", "The token is not valid yet (nbf is in the future).") from None
    except jwt.InvalidIssuerError:
        raise ValidationError("InvalidToken", f"The token's issuer '{claims.get('iss')}' is not this tenant's.") from None
    except jwt.InvalidSignatureError:
        raise ValidationError("InvalidToken", "The token's signature does not match: it was altered or signed by another key.") from None
    except jwt.PyJWTError as exc:
        raise ValidationError("InvalidToken", f"The token is not valid: {exc}.") from None
    if audience is not None and normalise_audience(verified["aud"]) != normalise_audience(audience):
        raise ValidationError("InvalidToken", f"The token's audience '{verified['aud']}' is not '{audience}'.")
    return verified


def new_correlation_id() -> str:
    return str(uuid.uuid4())
