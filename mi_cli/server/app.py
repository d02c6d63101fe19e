"""The ASGI app of `mi serve`: parses requests, calls the services, serialises Azure's shapes."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mi_cli import ids
from mi_cli.services import Ctx, endpoints, keys, resources
from mi_cli.services.tenancy import default_tenant
from mi_cli.services.tokens import Issued, TokenCache, TokenError, choose, issue, log_request, new_correlation_id
from mi_cli.store import Store

IMDS_PATH = "/metadata/identity/oauth2/token"
APP_SERVICE_PATH = "/msi/token"
NEWEST_IMDS_VERSIONS = ["2023-07-01", "2021-12-13", "2021-10-01"]
IMDS_SELECTORS = {"client_id": "client_id", "object_id": "object_id", "msi_res_id": "mi_res_id", "mi_res_id": "mi_res_id",
                  "resource_id": "mi_res_id"}
APP_SERVICE_SELECTORS = {"client_id": "client_id", "object_id": "object_id", "principal_id": "object_id",
                         "mi_res_id": "mi_res_id", "resource_id": "mi_res_id"}


@dataclass
class Fault:
    """The next `count` token requests answer `status` (with Retry-After for 429 and 503)."""

    status: int
    count: int
    retry_after: int = 1

    @classmethod
    def parse(cls, spec: str) -> "Fault":
        parts = spec.split(":")
        try:
            status = int(parts[0])
            count = int(parts[1]) if len(parts) > 1 else 1
            retry_after = int(parts[2]) if len(parts) > 2 else 1
        except ValueError:
            raise ValueError(f"--inject '{spec}' is not STATUS[:COUNT[:RETRY_AFTER]], e.g. 503:3 or 429:2:5") from None
        if not (400 <= status <= 599) or count < 1 or retry_after < 0:
            raise ValueError(f"--inject '{spec}': the status must be 400-599 and the count at least 1")
        return cls(status, count, retry_after)


@dataclass
class Throttle:
    """IMDS's managed-identity limits per resource: 20 requests a second, 5 at a time."""

    rate: int = 20
    concurrent: int = 5
    _recent: dict[str, deque] = field(default_factory=dict)
    _active: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def enter(self, key: str) -> bool:
        now = time.monotonic()
        with self._lock:
            recent = self._recent.setdefault(key, deque())
            while recent and now - recent[0] > 1.0:
                recent.popleft()
            if len(recent) >= self.rate or self._active.get(key, 0) >= self.concurrent:
                return False
            recent.append(now)
            self._active[key] = self._active.get(key, 0) + 1
            return True

    def leave(self, key: str) -> None:
        with self._lock:
            self._active[key] -= 1


@dataclass
class ServerState:
    store: Store
    default_resource: str | None = None  # an ARM id: the resource that bare IMDS paths speak for
    faults: list[Fault] = field(default_factory=list)
    throttle: Throttle | None = None
    cache: TokenCache = field(default_factory=TokenCache)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_fault(self) -> Fault | None:
        with self.lock:
            while self.faults:
                fault = self.faults[0]
                fault.count -= 1
                if fault.count <= 0:
                    self.faults.pop(0)
                return fault
        return None


def _imds_error(description: str, error: str = "invalid_request", status: int = 400) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status)


def _app_service_error(message: str, status: int = 400) -> JSONResponse:
    correlation = new_correlation_id()
    return JSONResponse({"statusCode": status, "message": message, "correlationId": correlation}, status_code=status,
                        headers={"X-CORRELATION-ID": correlation})


def _fault_response(fault: Fault, style: str) -> Response:
    headers = {"Retry-After": str(fault.retry_after)} if fault.status in (429, 503) else {}
    if style == "imds":
        body = {"error": "too_many_requests" if fault.status == 429 else "service_unavailable",
                "error_description": f"Injected fault: HTTP {fault.status}"}
        return JSONResponse(body, status_code=fault.status, headers=headers)
    response = _app_service_error(f"Injected fault: HTTP {fault.status}", fault.status)
    response.headers.update(headers)
    return response


def _selector(params: dict[str, str], names: dict[str, str]) -> dict[str, str]:
    given = {names[k]: v for k, v in params.items() if k in names and v}
    if len(given) > 1:
        raise TokenError("Only one of client_id, object_id and msi_res_id may be given.")
    return given


def _token_body(issued: Issued, *, imds: bool) -> dict[str, str]:
    now = int(time.time())
    body = {
        "access_token": issued.access_token,
        "client_id": issued.chosen.client_id,
        "expires_in": str(max(issued.expires_on - now, 0)),
        "expires_on": str(issued.expires_on),
        "not_before": str(issued.not_before),
        "resource": issued.claims["aud"],
        "token_type": "Bearer",
    }
    if imds:
        body["ext_expires_in"] = body["expires_in"]
    return body


def _serve_token(state: ServerState, ctx: Ctx, res, audience: str, selector: dict[str, str], bypass: bool, via: str,
                 *, system_default: bool) -> Issued:
    chosen = choose(ctx, res, system_only_default=system_default, **selector)
    cached = None if bypass else state.cache.get(chosen, audience)
    issued = cached or issue(ctx, chosen, audience)
    if cached is None:
        state.cache.put(issued)
    log_request(ctx, res, audience, issued, via=via + (" (cached)" if cached else ""))
    return issued


def _with_throttle(state: ServerState, key: str, respond):  # noqa: ANN001, ANN202
    if state.throttle is None:
        return respond()
    if not state.throttle.enter(key):
        return None
    try:
        return respond()
    finally:
        state.throttle.leave(key)


def imds(request: Request, state: ServerState, prefix: str) -> Response:
    fault = state.next_fault()
    if fault:
        return _fault_response(fault, "imds")
    if request.method != "GET":
        return _imds_error("The request method is not supported.", "method_not_allowed", 405)
    if request.headers.get("metadata", "").lower() != "true":
        return _imds_error("Required metadata header not specified")
    if "x-forwarded-for" in request.headers:
        return _imds_error("The request was made through a proxy (X-Forwarded-For); IMDS refuses forwarded requests.")
    pairs = request.query_params.multi_items()
    if len({k for k, _ in pairs}) != len(pairs):
        return _imds_error("Bad request: a query parameter appears more than once.")
    params = dict(pairs)
    if "api-version" not in params:
        return JSONResponse({"error": "Bad request. api-version was not specified in the request. For more information "
                             "refer to aka.ms/azureimds", "newest-versions": NEWEST_IMDS_VERSIONS}, status_code=400)
    audience = params.get("resource", "")
    if not audience:
        return _imds_error("Required query variable 'resource' is missing")
    target = prefix or state.default_resource
    if not target:
        return _imds_error("Identity not found: this server speaks for many resources; put the resource id in the path "
                           "(AZURE_POD_IDENTITY_AUTHORITY_HOST=http://HOST:PORT/<resource id>, see 'mi env').")

    def respond() -> Response:
        with state.store.transaction(write=True) as session:
            ctx = Ctx.from_env(session)
            res = resources.by_id(ctx, target)
            if res is None:
                return _imds_error("Identity not found")
            try:
                selector = _selector(params, IMDS_SELECTORS)
                issued = _serve_token(state, ctx, res, audience, selector, params.get("bypass_cache") == "true", "imds",
                                      system_default=False)
            except TokenError as exc:
                log_request(ctx, res, audience, exc, via="imds")
                return _imds_error(exc.message, exc.code, exc.status)
        return JSONResponse(_token_body(issued, imds=True))

    response = _with_throttle(state, ids.key(target), respond)
    return response if response is not None else _imds_error("Too many requests", "too_many_requests", 429)


def app_service(request: Request, state: ServerState) -> Response:
    fault = state.next_fault()
    if fault:
        return _fault_response(fault, "appservice")
    presented = request.headers.get("x-identity-header", "")
    if not presented:
        return _app_service_error("The X-IDENTITY-HEADER header is required.", 400)
    params = dict(request.query_params)
    if params.get("api-version") != "2019-08-01":
        return _app_service_error("The api-version must be 2019-08-01.", 400)
    audience = params.get("resource", "")
    if not audience:
        return _app_service_error("The resource parameter is required.", 400)

    def respond() -> Response:
        with state.store.transaction(write=True) as session:
            ctx = Ctx.from_env(session)
            res = endpoints.resource_for_secret(ctx, presented)
            if res is None:
                return _app_service_error("The X-IDENTITY-HEADER does not match any resource's identity endpoint.", 401)
            try:
                selector = _selector(params, APP_SERVICE_SELECTORS)
                issued = _serve_token(state, ctx, res, audience, selector, False, "appservice", system_default=True)
            except TokenError as exc:
                log_request(ctx, res, audience, exc, via="appservice")
                return _app_service_error("Unable to load the proper Managed Identity.", 400)
        return JSONResponse(_token_body(issued, imds=False))

    response = _with_throttle(state, "secret:" + presented, respond)
    return response if response is not None else _app_service_error("Too many requests", 429)


def _base_url(request: Request) -> str:
    return f"{request.url.scheme}://{request.headers.get('host', request.url.netloc)}"


def openid(request: Request, state: ServerState, tenant: str, v2: bool) -> Response:
    with state.store.transaction(write=False) as session:
        ctx = Ctx.from_env(session)
        known = default_tenant(ctx, create=False)
    if known is None or ids.key(tenant) not in (ids.key(known.id), "common", "organizations"):
        return JSONResponse({"error": "invalid_tenant", "error_description": f"AADSTS90002: Tenant '{tenant}' not found."},
                            status_code=400)
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


def jwks(request: Request, state: ServerState, tenant: str) -> Response:
    with state.store.transaction(write=False) as session:
        ctx = Ctx.from_env(session)
        known = default_tenant(ctx, create=False)
        if ids.key(tenant) in ("common", "organizations") or (known and ids.key(tenant) == ids.key(known.id)):
            return JSONResponse(keys.jwks(ctx))
    return JSONResponse({"error": "invalid_tenant", "error_description": f"AADSTS90002: Tenant '{tenant}' not found."},
                        status_code=400)


def _dispatch(state: ServerState):  # noqa: ANN202
    def endpoint(request: Request) -> Response:
        path = request.url.path
        low = path.casefold().rstrip("/")
        # IMDS, optionally behind a resource-id prefix (@azure/identity lowercases the whole path)
        if low.endswith(IMDS_PATH):
            return imds(request, state, path.rstrip("/")[: -len(IMDS_PATH)])
        if low == APP_SERVICE_PATH:
            return app_service(request, state)
        parts = [p for p in path.split("/") if p]
        if len(parts) == 3 and parts[1:] == [".well-known", "openid-configuration"]:
            return openid(request, state, parts[0], v2=False)
        if len(parts) == 4 and parts[1:] == ["v2.0", ".well-known", "openid-configuration"]:
            return openid(request, state, parts[0], v2=True)
        if parts[1:] in (["discovery", "keys"], ["discovery", "v2.0", "keys"]) and len(parts) >= 3:
            return jwks(request, state, parts[0])
        return JSONResponse({"error": "not_found", "error_description": f"No endpoint at {path}."}, status_code=404)

    return endpoint


def create_app(state: ServerState) -> Starlette:
    # One route for every path: a resource id of any depth may prefix the IMDS path.
    return Starlette(routes=[Route("/{path:path}", _dispatch(state), methods=["GET", "POST", "PUT", "DELETE", "PATCH"])])
