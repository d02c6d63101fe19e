"""App Service's identity endpoint (IDENTITY_ENDPOINT with X-IDENTITY-HEADER): parse the request, call
the token service, answer in App Service's shapes."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from mi_cli.server import imds, reads
from mi_cli.server.responses import AzureJSON as JSONResponse
from mi_cli.server.state import ServerState
from mi_cli.services import tokens

PATH = "/msi/token"


def error(message: str, status: int = 400, headers: dict[str, str] | None = None) -> JSONResponse:
    correlation = tokens.new_correlation_id()
    return JSONResponse({"statusCode": status, "message": message, "correlationId": correlation}, status_code=status,
                        headers={"X-CORRELATION-ID": correlation, **(headers or {})})


def unavailable(description: str, status: int, headers: dict[str, str]) -> JSONResponse:
    return error(description, status, headers)


def token(request: Request, state: ServerState, *, on_loop: bool = False) -> Response:
    """Answered as imds.token answers (`on_loop` likewise)."""
    fault = state.next_fault()
    if fault:
        return error(f"Injected fault: HTTP {fault.status}", fault.status, fault.headers)
    presented = request.headers.get("x-identity-header", "")
    params = imds.query(request)

    def respond() -> Response:
        outcome = reads.read(state, lambda ctx: tokens.app_service_token(ctx, presented, params, cache=state.cache),
                             on_loop=on_loop, defer=True)
        return error(outcome.message, outcome.status) if isinstance(outcome, tokens.TokenError) else JSONResponse(outcome)

    response = state.throttled("secret:" + presented, respond)
    return response if response is not None else error("Too many requests", 429)
