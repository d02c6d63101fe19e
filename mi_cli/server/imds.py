"""IMDS's identity endpoints (/metadata/identity/oauth2/token and /metadata/identity/info): parse the
request, call the token service, answer in IMDS's shapes."""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response

from mi_cli import ids
from mi_cli.server import reads
from mi_cli.server.responses import AzureJSON as JSONResponse
from mi_cli.server.state import ServerState
from mi_cli.services import Ctx, tokens

PATH = "/metadata/identity/oauth2/token"
INFO_PATH = "/metadata/identity/info"


def error(description: str, *, error: str = "invalid_request", status: int = 400,
          headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status, headers=headers)


def refusal(exc: tokens.TokenError) -> JSONResponse:
    if exc.newest_versions is not None:  # IMDS's api-version answer names no error code, it lists versions
        return JSONResponse({"error": exc.message, "newest-versions": exc.newest_versions}, status_code=exc.status)
    if exc.body is not None:  # Entra refused the token: IMDS passes Entra's body on (AADSTS500011, MSAL.NET#3979)
        return JSONResponse(exc.body, status_code=exc.status)
    return error(exc.message, error=exc.code, status=exc.status)


def unavailable(description: str, status: int, headers: dict[str, str]) -> JSONResponse:
    return error(description, error="service_unavailable" if status == 503 else "unknown", status=status, headers=headers)


def query(request: Request) -> list[tuple[str, str]]:
    """The request's query parameters in order, as Starlette's QueryParams reads them, without building one."""
    return parse_qsl(request.scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)


def _refused_headers(request: Request) -> Response | None:
    """What IMDS refuses before reading anything: another method, no Metadata: true, a forwarded request."""
    if request.method != "GET":
        return error("The request method is not supported.", error="method_not_allowed", status=405)
    # Headers are checked before the store is touched: DefaultAzureCredential's probe (no Metadata
    # header, a 1 s timeout) is answered at once, even while another process holds the store.
    if request.headers.get("metadata", "").lower() != "true":
        return error("Required metadata header not specified")
    if "x-forwarded-for" in request.headers:
        return error("The request was made through a proxy (X-Forwarded-For); IMDS refuses forwarded requests.")
    return None


def token(request: Request, state: ServerState, prefix: str, *, on_loop: bool = False) -> Response:
    """`prefix` is the path before IMDS's: the resource id the request speaks for, if any. Answered from what
    the server read before while the store has not changed (server/reads); `on_loop`: on the event loop, where
    reads.NeedStore or NeedWrite says to answer from a worker thread instead."""
    fault = state.next_fault()
    if fault:
        return error(f"Injected fault: HTTP {fault.status}", status=fault.status, headers=fault.headers,
                     error="too_many_requests" if fault.status == 429 else "service_unavailable")
    refused = _refused_headers(request)
    if refused is not None:
        return refused
    target = prefix or state.default_resource
    params = query(request)

    ahead = state.spares.on_loop if on_loop else state.spares  # the loop never waits for a token to be signed

    def respond() -> Response:
        outcome = reads.read(state, lambda ctx: tokens.imds_token(ctx, target, params, cache=state.cache,
                                                                  ahead=ahead), on_loop=on_loop, defer=True)
        return refusal(outcome) if isinstance(outcome, tokens.TokenError) else JSONResponse(outcome)

    response = state.throttled(ids.key(target or ""), respond)
    return response if response is not None else error("Too many requests", error="too_many_requests", status=429)


def info(request: Request, state: ServerState, prefix: str) -> Response:
    """GET /metadata/identity/info: the tenant of the resource's identity. Not a token request: no
    fault injection, no throttling."""
    refused = _refused_headers(request)
    if refused is not None:
        return refused
    target = prefix or state.default_resource
    with state.store.transaction(write=False) as session:
        outcome = tokens.imds_info(Ctx.from_env(session), target, request.query_params.multi_items())
    return refusal(outcome) if isinstance(outcome, tokens.TokenError) else JSONResponse(outcome)
