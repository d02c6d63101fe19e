"""Entra's endpoints of the tenant: OpenID metadata and signing keys (so that an API can validate the tokens it is
sent), instance discovery, and the token endpoint's answers. The plain server serves the first two at its own
address; the login plane (server/login.py) serves them all at https://login.microsoftonline.com."""

from __future__ import annotations

import base64
import re
from typing import Any
from urllib.parse import unquote, urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mi_cli.server.state import ServerState
from mi_cli.services import Ctx, keys, tokens

LOGIN_HOST = "login.microsoftonline.com"
# Instance discovery's metadata: the host names of each cloud's sign-in, as Entra answers
# /common/discovery/instance?api-version=1.1 (recorded in azure-sdk-for-js's test recordings, nock fixtures of
# @azure/identity and @azure/keyvault-*).
CLOUDS = [
    {"preferred_network": "login.microsoftonline.com", "preferred_cache": "login.windows.net",
     "aliases": ["login.microsoftonline.com", "login.windows.net", "login.microsoft.com", "sts.windows.net"]},
    {"preferred_network": "login.partner.microsoftonline.cn", "preferred_cache": "login.partner.microsoftonline.cn",
     "aliases": ["login.partner.microsoftonline.cn", "login.chinacloudapi.cn"]},
    {"preferred_network": "login.microsoftonline.de", "preferred_cache": "login.microsoftonline.de",
     "aliases": ["login.microsoftonline.de"]},
    {"preferred_network": "login.microsoftonline.us", "preferred_cache": "login.microsoftonline.us",
     "aliases": ["login.microsoftonline.us", "login.usgovcloudapi.net"]},
    {"preferred_network": "login-us.microsoftonline.com", "preferred_cache": "login-us.microsoftonline.com",
     "aliases": ["login-us.microsoftonline.com"]},
]
KNOWN_HOSTS = frozenset(alias for cloud in CLOUDS for alias in cloud["aliases"])


def error(description: str, *, error: str, status: int, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status, headers=headers)


def unavailable(description: str, status: int, headers: dict[str, str]) -> JSONResponse:
    return error(description, error="temporarily_unavailable" if status == 503 else "server_error", status=status,
                 headers=headers)


def refusal(exc: tokens.TokenError) -> JSONResponse:
    """Entra's error body (AADSTS code, trace and correlation ids, time) with its status."""
    return JSONResponse(exc.body or {"error": exc.code, "error_description": exc.message}, status_code=exc.status)


def _unknown_tenant(tenant: str, request: Request | None = None) -> JSONResponse:
    return refusal(tokens.unknown_tenant(tenant, correlation_id=_correlation(request)))


def _correlation(request: Request | None) -> str | None:
    return request.headers.get("client-request-id") if request is not None else None


# A Host header is repeated in every URL of the metadata: only a host name or address, with a port.
_HOST = re.compile(r"[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](:[0-9]{1,5})?")


def _base_url(request: Request) -> str:
    host = request.headers.get("host", "")
    if not _HOST.fullmatch(host):
        address, port = request.scope.get("server") or ("127.0.0.1", 80)
        host = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    return f"{request.url.scheme}://{host}"


def _tenant(state: ServerState, tenant: str):  # noqa: ANN202 - (Tenant or None, the tenant as endpoints name it)
    with state.store.transaction(write=False) as session:
        known = tokens.resolve_tenant(Ctx.from_env(session), tenant)
    if known is None:
        return None, tenant
    alias = tenant.strip().casefold()
    return known, alias if alias in tokens.TENANT_ALIASES else known.id


def openid(request: Request, state: ServerState, tenant: str, v2: bool) -> Response:
    """The OpenID configuration of the tenant (v1 or v2.0). For common and organizations, the endpoints keep the
    alias and the v2.0 issuer is Entra's template, https://login.microsoftonline.com/{tenantid}/v2.0."""
    known, name = _tenant(state, tenant)
    if known is None:
        return _unknown_tenant(tenant, request)
    base = _base_url(request)
    version = "/v2.0" if v2 else ""
    if v2:
        issuer = f"https://login.microsoftonline.com/{'{tenantid}' if name != known.id else known.id}/v2.0"
    else:
        issuer = f"https://sts.windows.net/{'{tenantid}' if name != known.id else known.id}/"
    keys_path = f"/{name}/discovery/v2.0/keys" if v2 else f"/{name}/discovery/keys"
    body: dict[str, Any] = {
        "authorization_endpoint": f"{base}/{name}/oauth2{version}/authorize",
        "claims_supported": ["aud", "iss", "iat", "nbf", "exp", "appid", "oid", "sub", "tid", "ver", "xms_mirid", "roles"],
        "cloud_graph_host_name": "graph.windows.net",
        "cloud_instance_name": "microsoftonline.com",
        "device_authorization_endpoint": f"{base}/{name}/oauth2{version}/devicecode",
        "end_session_endpoint": f"{base}/{name}/oauth2{version}/logout",
        "id_token_signing_alg_values_supported": ["RS256"],
        "issuer": issuer,
        "jwks_uri": base + keys_path,
        "msgraph_host": "graph.microsoft.com",
        "request_uri_parameter_supported": False,
        "response_modes_supported": ["query", "fragment", "form_post"],
        "response_types_supported": ["code", "id_token", "code id_token", "token id_token", "token"],
        "scopes_supported": ["openid"],
        "subject_types_supported": ["pairwise"],
        "tenant_region_scope": None,
        "token_endpoint": f"{base}/{name}/oauth2{version}/token",
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
    }
    return JSONResponse(body)


def jwks(request: Request, state: ServerState, tenant: str, v2: bool) -> Response:
    """The keys document: each key with the issuer of the endpoint's version (the v2.0 document names
    https://login.microsoftonline.com/{tid}/v2.0, as Entra's keys of one tenant do)."""
    with state.store.transaction(write=False) as session:
        ctx = Ctx.from_env(session)
        if tokens.resolve_tenant(ctx, tenant) is not None:
            return JSONResponse(keys.jwks(ctx, v2=v2))
    return _unknown_tenant(tenant, request)


def instance_discovery(request: Request, state: ServerState) -> Response:
    """MSAL's instance discovery (GET /common/discovery/instance?api-version=1.1&authorization_endpoint=...): the
    tenant's discovery document and the clouds' host aliases, for an authorization endpoint on a host Entra
    knows; api-version 1.0 names the v1 discovery document. Another host is AADSTS50049, invalid_instance."""
    endpoint = request.query_params.get("authorization_endpoint", "")
    try:
        parts = urlsplit(endpoint)
    except ValueError:  # an unclosed [ of an IPv6 host
        parts = urlsplit("")
    host = (parts.hostname or "").casefold()
    if parts.scheme != "https" or host not in KNOWN_HOSTS:
        return refusal(tokens.entra_refusal("invalid_instance", 50049, "Unknown or invalid instance.",
                                            correlation_id=_correlation(request)))
    tenant = next((p for p in parts.path.split("/") if p), "common")
    version = "" if request.query_params.get("api-version") == "1.0" else "/v2.0"
    return JSONResponse({
        "tenant_discovery_endpoint": f"https://{LOGIN_HOST}/{tenant}{version}/.well-known/openid-configuration",
        "api-version": request.query_params.get("api-version") or "1.1",
        "metadata": CLOUDS,
    })


def _basic(request: Request) -> tuple[str, str] | None:
    """client_secret_basic: Authorization: Basic base64(url-encoded client_id:client_secret), RFC 6749 2.3.1."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.casefold() != "basic":
        return None
    try:
        client_id, sep, secret = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except (ValueError, UnicodeError):
        return None
    return (unquote(client_id), unquote(secret)) if sep else None


def token(request: Request, state: ServerState, tenant: str, v2: bool) -> Response:
    """POST /{tenant}/oauth2/v2.0/token and the v1 /{tenant}/oauth2/token: the form parsed here, the grant decided
    by the token service, Entra's body or its error answered."""
    if request.method != "POST":
        return refusal(tokens.entra_refusal("invalid_request", 900561, "The endpoint only accepts POST, OPTIONS requests. "
                                            f"Received a {request.method} request.", correlation_id=_correlation(request)))
    from urllib.parse import parse_qsl

    raw = getattr(request.state, "body", b"")
    try:
        form = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        form = []
    asked = tokens.TokenRequest(tenant=tenant, form=form, v2=v2, basic=_basic(request),
                                correlation_id=_correlation(request))
    with state.store.transaction(write=True) as session:
        outcome = tokens.client_credentials(Ctx.from_env(session), asked)
    if isinstance(outcome, tokens.TokenError):
        return refusal(outcome)
    return JSONResponse(outcome, headers={"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"})
