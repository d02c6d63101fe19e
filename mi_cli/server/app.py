"""The ASGI app of `mi serve`: routes each request to its plane."""

from __future__ import annotations

from types import ModuleType
from typing import Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mi_cli.server import appservice, entra, imds
from mi_cli.server.state import ServerState


def _route(request: Request, state: ServerState) -> tuple[ModuleType, Callable[[], Response]]:
    path = request.url.path
    low = path.casefold().rstrip("/")
    # IMDS, optionally behind a resource-id prefix (@azure/identity lowercases the whole path)
    if low.endswith(imds.PATH):
        return imds, lambda: imds.token(request, state, path.rstrip("/")[: -len(imds.PATH)])
    if low == appservice.PATH:
        return appservice, lambda: appservice.token(request, state)
    parts = [p for p in path.split("/") if p]
    if len(parts) == 3 and parts[1:] == [".well-known", "openid-configuration"]:
        return entra, lambda: entra.openid(request, state, parts[0], v2=False)
    if len(parts) == 4 and parts[1:] == ["v2.0", ".well-known", "openid-configuration"]:
        return entra, lambda: entra.openid(request, state, parts[0], v2=True)
    if len(parts) >= 3 and parts[1:] in (["discovery", "keys"], ["discovery", "v2.0", "keys"]):
        return entra, lambda: entra.jwks(request, state, parts[0])
    return imds, lambda: imds.error(f"No endpoint at {path}.", error="not_found", status=404)


def _dispatch(state: ServerState):  # noqa: ANN202
    def endpoint(request: Request) -> Response:
        return _route(request, state)[1]()

    return endpoint


def create_app(state: ServerState) -> Starlette:
    # One route for every path: a resource id of any depth may prefix the IMDS path.
    return Starlette(routes=[Route("/{path:path}", _dispatch(state), methods=["GET", "POST", "PUT", "DELETE", "PATCH"])])
