"""Entra's sign-in host, https://login.microsoftonline.com through the local cloud: OpenID metadata and keys of
the tenant (v1 and v2.0), MSAL's instance discovery, and the token endpoint (v2.0 and v1), routed by path to
server/entra.py."""

from __future__ import annotations

from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import Response

from mi_cli.server import entra
from mi_cli.server.state import ServerState
from mi_cli.services import tokens

unavailable = entra.unavailable  # a busy store or a failure, in Entra's error shape


def _segments(request: Request) -> list[str]:
    raw = request.scope.get("raw_path") or request.url.path.encode()
    return [unquote(p, errors="replace") for p in raw.decode("latin-1").partition("?")[0].split("/") if p]


def handle(request: Request, state: ServerState) -> Response:
    parts = _segments(request)
    method = request.method
    tail = [p.casefold() for p in parts[1:]]
    if parts and method in ("GET", "HEAD"):
        tenant = parts[0]
        if tail == [".well-known", "openid-configuration"]:
            return entra.openid(request, state, tenant, v2=False)
        if tail == ["v2.0", ".well-known", "openid-configuration"]:
            return entra.openid(request, state, tenant, v2=True)
        if tail == ["discovery", "keys"]:
            return entra.jwks(request, state, tenant, v2=False)
        if tail == ["discovery", "v2.0", "keys"]:
            return entra.jwks(request, state, tenant, v2=True)
        if tail == ["discovery", "instance"]:
            return entra.instance_discovery(request, state)
    if parts and tail in (["oauth2", "v2.0", "token"], ["oauth2", "token"]):
        return entra.token(request, state, parts[0], v2=tail[1] == "v2.0")
    # Entra answers a path it does not serve with a page of its own; a JSON line here says what mi serves instead
    return entra.error(f"mi serves the OpenID metadata, keys, instance discovery and token endpoints of "
                       f"{entra.LOGIN_HOST}, not {method} {tokens.clip(request.url.path, 120)}.", error="not_found",
                       status=404)
