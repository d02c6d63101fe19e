"""The plane of simulated federation issuers: at each issuer's own host name (token.actions.githubusercontent.com,
REGION.oic.prod-aks.azure.com, any issuer in the store), its OpenID discovery document and its keys, as GitHub and
Kubernetes publish them. The TLS server's certificate for those hosts (a leaf per host, issued by the store's CA when
a client first names the host) is server/tls's."""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from mi_cli.services import Ctx, federation

_SLASHES = re.compile(r"/{2,}")


def _document(ctx: Ctx, host: str, path: str) -> dict[str, Any] | None:
    # a trailing-slash issuer's documents are asked for as ISSUER/.well-known/... by some clients and as
    # ISSUER.rstrip('/') + '/.well-known/...' by others: both are answered
    path = _SLASHES.sub("/", path)
    for issuer in federation.on_host(ctx, host):
        if path == federation.discovery_path(issuer.url):
            return federation.openid_configuration(issuer)
        if path == federation.jwks_path(issuer.url, issuer.kind):
            return federation.jwks(issuer)
    return None


def unavailable(description: str, status: int, headers: dict[str, str]) -> Response:
    return PlainTextResponse(description, status_code=status, headers=headers)


def handle(request: Request, state) -> Response:  # noqa: ANN001 - a ServerState
    """GET (or HEAD) of an issuer's discovery document or keys; anything else at its host is 404, other methods 405."""
    if request.method not in ("GET", "HEAD"):
        return PlainTextResponse("Method Not Allowed", status_code=405, headers={"Allow": "GET, HEAD"})
    host = request.url.hostname or ""
    with state.store.transaction(write=False) as session:
        body = _document(Ctx.from_env(session), host, request.url.path)
    if body is None:
        return PlainTextResponse("Not Found", status_code=404)
    return JSONResponse(body, headers={"Cache-Control": "max-age=3600"})
