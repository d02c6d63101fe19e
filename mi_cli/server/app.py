"""The ASGI app of `mi serve`: routes each request to its plane, and answers what no plane can (a busy
store, a failure) in that plane's shape, keeping the connection open."""

from __future__ import annotations

import sys
import traceback
from types import ModuleType
from typing import Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mi_cli.errors import StoreError
from mi_cli.server import appservice, entra, imds
from mi_cli.server.state import ServerState
from mi_cli.services.tokens import clip

RETRY_AFTER = "1"  # seconds; clients that honour it (azure-identity) retry until the write holding the store ends
METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]


def _route(request: Request, state: ServerState) -> tuple[ModuleType, Callable[[], Response]]:
    path = request.url.path
    low = path.casefold().rstrip("/")
    # IMDS, optionally behind a resource-id prefix (@azure/identity lowercases the whole path)
    if low.endswith(imds.PATH):
        return imds, lambda: imds.token(request, state, path.rstrip("/")[: -len(imds.PATH)])
    if low.endswith(imds.INFO_PATH):
        return imds, lambda: imds.info(request, state, path.rstrip("/")[: -len(imds.INFO_PATH)])
    if low == appservice.PATH:
        return appservice, lambda: appservice.token(request, state)
    parts = [p for p in path.split("/") if p]
    if len(parts) == 3 and parts[1:] == [".well-known", "openid-configuration"]:
        return entra, lambda: entra.openid(request, state, parts[0], v2=False)
    if len(parts) == 4 and parts[1:] == ["v2.0", ".well-known", "openid-configuration"]:
        return entra, lambda: entra.openid(request, state, parts[0], v2=True)
    if len(parts) == 3 and parts[1:] == ["discovery", "keys"]:
        return entra, lambda: entra.jwks(request, state, parts[0], v2=False)
    if len(parts) == 4 and parts[1:] == ["discovery", "v2.0", "keys"]:
        return entra, lambda: entra.jwks(request, state, parts[0], v2=True)
    return imds, lambda: imds.error(f"No endpoint at {clip(path)}.", error="not_found", status=404)


def _note(request: Request, text: str) -> None:
    print(f"mi serve: {request.method} {clip(request.url.path, 120)}: {text}", file=sys.stderr, flush=True)


def _dispatch(state: ServerState):  # noqa: ANN202
    def endpoint(request: Request) -> Response:
        plane, respond = _route(request, state)
        try:
            return respond()
        except StoreError as exc:
            # Another process holding the store past the busy timeout is a moment's wait, as IMDS's own
            # 503s are: retryable, with Retry-After. Anything else about the store is a failure.
            busy = exc.code == "StoreBusy"
            status = 503 if busy else 500
            _note(request, f"{exc.message} Answered {status}.")
            return plane.unavailable(exc.message, status, {"Retry-After": RETRY_AFTER} if busy else {})
        except Exception as exc:  # a bug: say so once, answer in the plane's shape, keep the connection
            _note(request, f"failed ({type(exc).__name__}); answered 500.")
            traceback.print_exc(file=sys.stderr)
            return plane.unavailable("The server failed to answer this request.", 500, {})

    return endpoint


def create_app(state: ServerState) -> Starlette:
    # One route for every path: a resource id of any depth may prefix the IMDS path.
    return Starlette(routes=[Route("/{path:path}", _dispatch(state), methods=METHODS)])
