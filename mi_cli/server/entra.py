"""The tenant's OpenID metadata and signing keys, so that an API can validate the tokens it is sent."""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mi_cli import ids
from mi_cli.server.state import ServerState
from mi_cli.services import Ctx, keys
from mi_cli.services.tenancy import default_tenant
from mi_cli.services.tokens import clip


def error(description: str, *, error: str, status: int, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status, headers=headers)


def unavailable(description: str, status: int, headers: dict[str, str]) -> JSONResponse:
    return error(description, error="temporarily_unavailable" if status == 503 else "server_error", status=status,
                 headers=headers)


def _unknown_tenant(tenant: str) -> JSONResponse:
    return error(f"AADSTS90002: Tenant '{clip(tenant)}' not found.", error="invalid_tenant", status=400)


# A Host header is repeated in every URL of the metadata: only a host name or address, with a port.
_HOST = re.compile(r"[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](:[0-9]{1,5})?")


def _base_url(request: Request) -> str:
    host = request.headers.get("host", "")
    if not _HOST.fullmatch(host):
        address, port = request.scope.get("server") or ("127.0.0.1", 80)
        host = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    return f"{request.url.scheme}://{host}"


def openid(request: Request, state: ServerState, tenant: str, v2: bool) -> Response:
    with state.store.transaction(write=False) as session:
        known = default_tenant(Ctx.from_env(session), create=False)
    if known is None or ids.key(tenant) not in (ids.key(known.id), "common", "organizations"):
        return _unknown_tenant(tenant)
    tid = known.id
    base = _base_url(request)
    issuer = f"https://login.microsoftonline.com/{tid}/v2.0" if v2 else f"https://sts.windows.net/{tid}/"
    keys_path = f"/{tid}/discovery/v2.0/keys" if v2 else f"/{tid}/discovery/keys"
    body: dict[str, Any] = {
        "authorization_endpoint": f"{base}/{tid}/oauth2{'/v2.0' if v2 else ''}/authorize",
        "claims_supported": ["aud", "iss", "iat", "nbf", "exp", "appid", "oid", "sub", "tid", "ver", "xms_mirid"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "issuer": issuer,
        "jwks_uri": base + keys_path,
        "response_types_supported": ["code", "id_token", "code id_token", "token id_token", "token"],
        "scopes_supported": ["openid"],
        "subject_types_supported": ["pairwise"],
        "tenant_region_scope": None,
        "token_endpoint": f"{base}/{tid}/oauth2{'/v2.0' if v2 else ''}/token",
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
    }
    return JSONResponse(body)


def jwks(request: Request, state: ServerState, tenant: str, v2: bool) -> Response:
    """The keys document: each key with the issuer of the endpoint's version (the v2.0 document names
    https://login.microsoftonline.com/{tid}/v2.0, as Entra's keys of one tenant do)."""
    with state.store.transaction(write=False) as session:
        ctx = Ctx.from_env(session)
        known = default_tenant(ctx, create=False)
        if ids.key(tenant) in ("common", "organizations") or (known and ids.key(tenant) == ids.key(known.id)):
            return JSONResponse(keys.jwks(ctx, v2=v2))
    return _unknown_tenant(tenant)
