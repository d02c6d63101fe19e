"""The plane of simulated federation issuers: at each issuer's own host name (token.actions.githubusercontent.com,
REGION.oic.prod-aks.azure.com, any issuer in the store), its OpenID discovery document and its keys, as GitHub and
Kubernetes publish them. Also the TLS server's certificate for those hosts: a leaf per host, issued by the store's CA
when a client first names the host (SNI), since issuers are made and deleted while mi serve runs."""

from __future__ import annotations

import re
import ssl
import sys
import threading
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from mi_cli.services import Ctx, federation, localcloud

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


class Certificates:
    """The TLS server's contexts for issuers' hosts, made once per host name and kept while the server runs."""

    def __init__(self, store) -> None:  # noqa: ANN001 - a Store
        self.store = store
        self.contexts: dict[str, ssl.SSLContext] = {}
        self.lock = threading.Lock()

    def context_for(self, host: str) -> ssl.SSLContext | None:
        """A server context presenting a leaf for `host`, when the store holds an issuer there; None otherwise (the
        default certificate is presented, which does not name it)."""
        with self.lock:
            made = self.contexts.get(host)
        if made is not None:
            return made
        with self.store.transaction(write=False) as session:
            ctx = Ctx.from_env(session)
            if not localcloud.issuer_host(ctx, host):
                return None
            leaf = localcloud.host_certificate(ctx, host)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        leaf.configure_cert(context)
        with self.lock:
            return self.contexts.setdefault(host, context)

    def sni(self, connection, server_name: str | None, _context: ssl.SSLContext) -> None:  # noqa: ANN001
        """The TLS server's SNI callback: a name the default certificate covers keeps it; an issuer's host gets its own
        leaf. A failure here (the store unreadable) leaves the default certificate, which the client then refuses."""
        if not server_name:
            return None
        host = localcloud.normalise(server_name)
        if localcloud.claimed(host):
            return None
        try:
            context = self.context_for(host)
        except Exception as exc:  # noqa: BLE001 - a handshake must not take the server down
            print(f"mi serve: TLS: no certificate for {host[:100]}: {type(exc).__name__}.", file=sys.stderr, flush=True)
            return None
        if context is not None:
            connection.context = context
        return None


def serve_certificates(context: ssl.SSLContext, store) -> Certificates:  # noqa: ANN001 - a Store
    """Make the TLS server's `context` present, for each federation issuer's host, a leaf naming that host."""
    certificates = Certificates(store)
    context.sni_callback = certificates.sni
    return certificates
