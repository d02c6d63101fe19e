"""The ASGI app of `mi serve`: routes each request to its plane (by host, then path), and answers what no plane
can (a busy store, a failure) in that plane's shape, keeping the connection open."""

from __future__ import annotations

import importlib
import ipaddress
import inspect
import sys
import threading
import traceback
from types import ModuleType
from typing import Callable

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mi_cli.errors import StoreError
from mi_cli.server import appservice, entra, imds, reads
from mi_cli.server.state import ServerState
from mi_cli.services.tokens import clip

RETRY_AFTER = "1"  # seconds; clients that honour it (azure-identity) retry until the write holding the store ends
METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]

# The data planes of the local cloud, by host suffix (kv1.vault.azure.net -> "vault.azure.net"), each a module
# imported on its first request, so that a server that never sees a vault never loads its plane. A plane has
# `handle(request, state) -> Response` (a plain function runs in a worker thread; an `async def` on the loop),
# the request's body already read into `request.state.body`; and may have `unavailable(message, status,
# headers)` to answer a busy store or a failure in its own shape. Planes answer on the TLS server only.
# A plane with `STREAMING = True` gets the request unread and must be an `async def` (Blob: bodies of any size).
PLANES: dict[str, str] = {"vault.azure.net": "mi_cli.server.keyvault", "blob.core.windows.net": "mi_cli.server.blob",
                          "management.azure.com": "mi_cli.server.arm", "login.microsoftonline.com": "mi_cli.server.login",
                          "graph.microsoft.com": "mi_cli.server.graph"}
BODY_LIMIT = 4 * 1024 * 1024  # bytes of a request body a plane is given; more is answered 413
_loaded: dict[str, ModuleType | None] = {}
_loading = threading.Lock()


def plane_for(host: str | None) -> tuple[str, ModuleType | None] | None:
    """(module name, module or None when it is not installed) of the plane serving `host`; None when no
    plane claims the host."""
    host = (host or "").rstrip(".").casefold()
    for suffix, name in PLANES.items():
        if host == suffix or host.endswith("." + suffix):
            with _loading:
                if name not in _loaded:
                    try:
                        _loaded[name] = importlib.import_module(name)
                    except ModuleNotFoundError as exc:
                        if exc.name != name:  # the plane is there but something it needs is not: a bug
                            raise
                        _loaded[name] = None
            return name, _loaded[name]
    return None


class _Generic:
    """The error shape of Azure's data planes, for a plane that has no `unavailable` of its own."""

    @staticmethod
    def unavailable(description: str, status: int, headers: dict[str, str]) -> Response:
        code = {413: "RequestEntityTooLarge", 404: "NotFound", 503: "ServiceUnavailable"}.get(status, "InternalServerError")
        return JSONResponse({"error": {"code": code, "message": description}}, status_code=status, headers=headers)


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


def _failure(request: Request, plane, exc: Exception) -> Response:  # noqa: ANN001
    """The answer to an exception a plane raised, in the plane's shape (called while handling it)."""
    if isinstance(exc, StoreError):
        # Another process holding the store past the busy timeout is a moment's wait, as IMDS's own
        # 503s are: retryable, with Retry-After. Anything else about the store is a failure.
        busy = exc.code == "StoreBusy"
        status = 503 if busy else 500
        _note(request, f"{exc.message} Answered {status}.")
        return plane.unavailable(exc.message, status, {"Retry-After": RETRY_AFTER} if busy else {})
    # a bug: say so once, answer in the plane's shape, keep the connection
    _note(request, f"failed ({type(exc).__name__}); answered 500.")
    traceback.print_exc(file=sys.stderr)
    return plane.unavailable("The server failed to answer this request.", 500, {})


def _guarded(request: Request, plane, respond: Callable[[], Response]) -> Response:  # noqa: ANN001
    try:
        return respond()
    except Exception as exc:  # noqa: BLE001 - answered, never a dropped connection
        return _failure(request, plane, exc)


def _dispatch(state: ServerState):  # noqa: ANN202
    def endpoint(request: Request) -> Response:
        plane, respond = _route(request, state)
        return _guarded(request, plane, respond)

    return endpoint


def _on_loop(state: ServerState):  # noqa: ANN202
    """The token endpoints answered on the event loop when all they need is in memory (a token request that
    finds the store unchanged: server/reads); None when the request is to be answered from a worker thread, as
    every request is without a watch that answers at once (PostgreSQL's is a round trip), or with --throttle."""
    if state.watch is None or not state.watch.cheap or state.throttle is not None:
        return None

    def endpoint(request: Request) -> Response | None:
        path = request.scope.get("root_path", "") + request.scope["path"]  # request.url.path, without building a URL
        low = path.casefold().rstrip("/")
        if low.endswith(imds.PATH):
            plane, respond = imds, lambda: imds.token(request, state, path.rstrip("/")[: -len(imds.PATH)], on_loop=True)
        elif low == appservice.PATH:
            plane, respond = appservice, lambda: appservice.token(request, state, on_loop=True)
        else:
            return None
        try:
            return respond()
        except (reads.NeedStore, reads.NeedWrite):
            return None
        except Exception as exc:  # noqa: BLE001 - answered in the plane's shape, as from a worker thread
            return _failure(request, plane, exc)

    return endpoint


async def _read_body(request: Request) -> bytes | None:
    """The body, or None past BODY_LIMIT (read in chunks: a chunked upload has no length to check first)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > BODY_LIMIT:
            return None
    return bytes(body)


async def _plane(request: Request, state: ServerState, name: str, module: ModuleType | None) -> Response:
    shape = module if module is not None and hasattr(module, "unavailable") else _Generic
    if module is None:
        return shape.unavailable(f"{clip(request.url.hostname or '', 100)} is not served by this version of mi.", 404, {})
    if getattr(module, "STREAMING", False):
        try:
            return await module.handle(request, state)
        except Exception as exc:  # noqa: BLE001 - answered in the plane's shape
            return _failure(request, shape, exc)
    try:
        body = await _read_body(request)
    except ClientDisconnect:  # the client went away mid-body: no one to answer, nothing to do
        return Response(status_code=400)
    if body is None:
        return shape.unavailable(f"The request body is larger than {BODY_LIMIT} bytes.", 413, {})
    request.state.body = body
    request._body = body  # noqa: SLF001 - Starlette's own cache, so that `await request.body()` works in a plane too
    if inspect.iscoroutinefunction(module.handle):
        try:
            return await module.handle(request, state)
        except Exception as exc:  # noqa: BLE001 - answered in the plane's shape, as for plain functions
            return _failure(request, shape, exc)
    return await run_in_threadpool(_guarded, request, shape, lambda: module.handle(request, state))


ISSUER_PLANE = "mi_cli.server.issuer"


def _issuer_plane(host: str | None) -> tuple[str, ModuleType] | None:
    """The plane of federation issuers, for any other host name that reaches the TLS server: the proxy sends only the
    names of the local cloud there, so this one is an issuer's (the plane answers 404 once the issuer is gone). An
    address (127.0.0.1, localhost: a client that came to the TLS port directly) keeps the path routes."""
    host = (host or "").strip("[]").rstrip(".").casefold()
    if not host or host == "localhost":
        return None
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    from mi_cli.server import issuer

    return ISSUER_PLANE, issuer


def create_app(state: ServerState):  # noqa: ANN201 - an ASGI application
    plain = _dispatch(state)
    on_loop = _on_loop(state)

    async def endpoint(request: Request) -> Response:
        # Data planes answer on the TLS server (Azure's hosts are HTTPS only); everything else keeps its path routes.
        claimed = plane_for(request.url.hostname) if request.url.scheme == "https" else None
        if claimed is None and request.url.scheme == "https":
            claimed = _issuer_plane(request.url.hostname)
        if claimed is not None:
            return await _plane(request, state, *claimed)
        if on_loop is not None:
            answered = on_loop(request)
            if answered is not None:
                return answered
        return await run_in_threadpool(plain, request)

    # One route for every path: a resource id of any depth may prefix the IMDS path.
    app = Starlette(routes=[Route("/{path:path}", endpoint, methods=METHODS)])
    if on_loop is None:
        return app

    async def tokens_first(scope, receive, send) -> None:  # noqa: ANN001
        """A token request over plain HTTP that is answered from memory goes straight to its endpoint (the
        router and middleware are most of what such an answer costs); every other request to the app."""
        if scope["type"] == "http" and scope["scheme"] == "http" and scope["method"] == "GET":
            answered = on_loop(Request(scope, receive))
            if answered is not None:
                await answered(scope, receive, send)
                return
        await app(scope, receive, send)

    return tokens_first
