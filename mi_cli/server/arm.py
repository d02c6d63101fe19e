"""Azure Resource Manager (https://management.azure.com): parse the request, authenticate and authorise the caller
as ARM does, call the services, answer in ARM's shapes, status codes and error bodies. The role definitions and
assignments (`.../providers/Microsoft.Authorization/...` at any scope) are answered by server/arm_authorization,
which builds on the helpers here (arm_error, caller, require, forbidden, ArmRefusal)."""

from __future__ import annotations

import importlib
import json
from typing import Any
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import Response

from mi_cli.errors import ConflictError, ForbiddenError, InvalidTokenError, MiError, NotFoundError, shown
from mi_cli.server.responses import AzureJSON
from mi_cli.server.state import ServerState
from mi_cli.services import Ctx, access, tenancy

# The audiences ARM accepts, in the order its InvalidAuthenticationTokenAudience message lists them.
AUDIENCES = ("https://management.core.windows.net/", "https://management.core.windows.net",
             "https://management.azure.com/", "https://management.azure.com")
AUTHORIZATION = "microsoft.authorization"

# ARM's answers to a missing or bad bearer token (code, message). The missing-header text and the challenge's
# error_description are ARM's (azure-sdk-for-go azcore's bearer token policy tests); the audience text is ARM's
# (its message as printed in Azure-Samples/active-directory-dotnetcore-daemon-v2#145); "The access token is
# invalid." is ARM's for a token it cannot validate; the others keep ARM's codes for the check that failed.
MISSING_HEADER = "The authentication failed because of missing 'Authorization' header."
UNAUTHENTICATED = {
    "missing": ("AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing."),
    "format": ("AuthenticationFailedInvalidHeader", "Authentication failed. The 'Authorization' header is provided in an invalid format."),
    "audience": ("InvalidAuthenticationTokenAudience",
                 "The access token has been obtained for wrong audience or resource '{found}'. It should exactly match with "
                 "one of the allowed audiences " + ",".join(f"'{a}'" for a in AUDIENCES) + "."),
    "expired": ("ExpiredAuthenticationToken", "The access token expiry UTC time '{found}' is earlier than current UTC time '{now}'."),
    "issuer": ("InvalidAuthenticationTokenTenant",
               "The access token is from the wrong issuer '{found}'. It must match the tenant 'https://sts.windows.net/{tid}/' "
               "associated with this subscription. Please use the authority (URL) 'https://login.windows.net/{tid}' to get "
               "the token. Note, if the subscription is transferred to another tenant there is no impact to the services, but "
               "information about new tenant could take time to propagate (up to an hour). If you just transferred your "
               "subscription and see this error message, please try back later."),
}
UNAUTHENTICATED_OTHER = ("InvalidAuthenticationToken", "The access token is invalid.")
# ARM's 403s (AuthorizationFailed: azure-cli's and the SDKs' recorded errors; LinkedAuthorizationFailed:
# aad-pod-identity#443 and #613, an identity attached without assign/action on it)
AUTHORIZATION_FAILED = ("The client '{oid}' with object id '{oid}' does not have authorization to perform action '{action}' "
                        "over scope '{scope}' or the scope is invalid. If access was recently granted, please refresh your "
                        "credentials.")
LINKED_AUTHORIZATION_FAILED = ("The client '{oid}' with object id '{oid}' has permission to perform action '{action}' on scope "
                               "'{scope}'; however, it does not have permission to perform action '{linked_action}' on the "
                               "linked scope(s) '{linked}' or the linked scope(s) are invalid.")
ASSIGN_ACTION = "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action"
STATUS = ((NotFoundError, 404), (ConflictError, 409), (ForbiddenError, 403))


class ArmRefusal(Exception):
    """An answer that ends the request before its operation runs (ARM's 401 or 403), already in the activity
    log: raise it from a check, answer `.response`."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def arm_error(status: int, code: str, message: str, *, headers: dict[str, str] | None = None,
              details: list[dict[str, Any]] | None = None) -> Response:
    """ARM's error answer: `{"error": {"code", "message"}}` (with `details` when given), JSON."""
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = details
    return AzureJSON({"error": error}, status_code=status, headers=headers)


def from_mi_error(exc: MiError) -> Response:
    """A service's refusal as ARM answers it: not found 404, conflict 409, forbidden 403, anything else 400,
    with the service's code and message (they are ARM's already)."""
    status = next((code for kind, code in STATUS if isinstance(exc, kind)), 400)
    return arm_error(status, exc.code, exc.message)


def challenge(description: str) -> dict[str, str]:
    """ARM's WWW-Authenticate on a 401 (the authority without a tenant, as ARM sends it)."""
    text = description.replace('"', "'")
    return {"WWW-Authenticate": f'Bearer authorization_uri="https://login.windows.net/", error="invalid_token", '
                                f'error_description="{text}"'}


def log(ctx: Ctx, action: str, scope: str, *, status: str, caller: str, detail: str | None = None) -> None:
    """A row of the activity log for one ARM request: the action it needed, its scope, who asked, the decision."""
    ctx.log(action, scope, status=status, caller=caller, detail=detail)


def unauthenticated(ctx: Ctx, exc: InvalidTokenError) -> Response:
    """ARM's 401 for a token that failed verification (exc.kind says which check)."""
    tenant = tenancy.default_tenant(ctx)
    code, text = UNAUTHENTICATED.get(exc.kind, UNAUTHENTICATED_OTHER)
    now = ctx.now()
    message = text.format(found=shown(exc.found or ""), tid=tenant.id, now=_arm_time(now))
    if exc.kind == "expired" and exc.found:
        try:
            from datetime import datetime, timezone

            message = text.format(found=_arm_time(datetime.fromtimestamp(float(exc.found), timezone.utc)), now=_arm_time(now))
        except (TypeError, ValueError, OverflowError):
            pass
    description = MISSING_HEADER if exc.kind == "missing" else message
    return arm_error(401, code, message, headers=challenge(description))


def _arm_time(moment) -> str:  # noqa: ANN001
    """A time as ARM's messages print it: 6/3/2020 9:24:01 PM (UTC)."""
    hour = moment.hour % 12 or 12
    return f"{moment.month}/{moment.day}/{moment.year} {hour}:{moment.minute:02d}:{moment.second:02d} {'AM' if moment.hour < 12 else 'PM'}"


def caller(ctx: Ctx, request: Request, *, action: str | None = None, scope: str | None = None) -> dict[str, Any]:
    """The verified claims of the request's bearer token (signature, lifetime, issuer, one of ARM's audiences).
    A missing or bad token raises ArmRefusal with ARM's 401 and its challenge, logged under `action` at `scope`
    (default: the request's method and path)."""
    header = request.headers.get("authorization")
    try:
        scheme, _, token = (header or "").strip().partition(" ")
        if scheme and (scheme.casefold() != "bearer" or not token.strip()):
            raise InvalidTokenError("InvalidToken", "The Authorization header is not 'Bearer TOKEN'.").failed("format")
        return access.authenticate(ctx, header, AUDIENCES)
    except InvalidTokenError as exc:
        response = unauthenticated(ctx, exc)
        log(ctx, action or request.method, scope or request.url.path, status="Failed", caller="(no valid token)",
            detail=f"401 {json.loads(response.body)['error']['message']}")
        raise ArmRefusal(response) from None


def forbidden(oid: str, action: str, scope: str) -> Response:
    """ARM's 403 AuthorizationFailed for `action` at `scope`."""
    return arm_error(403, "AuthorizationFailed", AUTHORIZATION_FAILED.format(oid=oid, action=action, scope=scope))


def linked_forbidden(oid: str, action: str, scope: str, linked_scopes: list[str], linked_action: str = ASSIGN_ACTION) -> Response:
    """ARM's 403 LinkedAuthorizationFailed: `action` at `scope` is allowed, `linked_action` on the linked scopes is not."""
    return arm_error(403, "LinkedAuthorizationFailed", LINKED_AUTHORIZATION_FAILED.format(
        oid=oid, action=action, scope=scope, linked_action=linked_action, linked=",".join(linked_scopes)))


def decide(ctx: Ctx, oid: str, action: str, scope: str) -> access.Decision:
    """access.check for a control-plane action at `scope`, which may not exist yet (a group being created):
    RBAC is then evaluated at its nearest existing ancestor, where every assignment that could grant it is."""
    candidates = [scope]
    parts = scope.rstrip("/").split("/")
    for end in (len(parts) - 2, 5, 3):  # a parent resource, the group, the subscription
        if 3 <= end < len(parts):
            candidates.append("/".join(parts[:end]))
    last: NotFoundError | None = None
    for candidate in candidates:
        try:
            decision = access.check(ctx, oid, action, candidate, data=False)
        except NotFoundError as exc:
            last = exc
            continue
        decision.scope = scope
        return decision
    raise last or NotFoundError("InvalidScope", f"The scope '{shown(scope)}' is not valid.")


def require(ctx: Ctx, claims: dict[str, Any], action: str, scope: str) -> access.Decision:
    """RBAC for `action` at `scope` for the token's principal: the decision when allowed; otherwise ARM's 403
    AuthorizationFailed, logged, raised as ArmRefusal."""
    oid = claims["oid"]
    decision = decide(ctx, oid, action, scope)
    if not decision.allowed:
        log(ctx, action, scope, status="Failed", caller=oid, detail=f"403 {decision.reason()}")
        raise ArmRefusal(forbidden(oid, action, scope))
    return decision


def segments(request: Request) -> list[str]:
    """The path's segments, each percent-decoded on its own; empty segments (az's double slashes) dropped."""
    raw = request.scope.get("raw_path") or request.url.path.encode()
    return [unquote(p, errors="replace") for p in raw.decode("latin-1").partition("?")[0].split("/") if p]


def json_body(request: Request) -> dict[str, Any] | None:
    """The request's JSON object, {} for an empty body; None when it is not a JSON object (answer
    invalid_content())."""
    raw = getattr(request.state, "body", b"") or b""
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def invalid_content(detail: str = "The request content is not a JSON object.") -> Response:
    """ARM's 400 for a body it cannot read."""
    return arm_error(400, "InvalidRequestContent", f"The request content was invalid and could not be deserialized: '{detail}'.")


def _authorization_split(parts: list[str]) -> tuple[str, list[str]] | None:
    """(scope, rest) when the path names the Microsoft.Authorization provider: `/subscriptions/S/providers/
    Microsoft.Authorization/roleDefinitions` -> ("/subscriptions/S", ["roleDefinitions"])."""
    for i in range(len(parts) - 1):
        if parts[i].casefold() == "providers" and parts[i + 1].casefold() == AUTHORIZATION:
            return "/" + "/".join(parts[:i]), parts[i + 2:]
    return None


def not_found(path: str) -> Response:
    """ARM's answer to a path no provider serves."""
    return arm_error(404, "NotFound", f"The requested resource '{shown(path, 300)}' was not found.")


def handle(request: Request, state: ServerState) -> Response:
    """One ARM request (in a worker thread; the body read already)."""
    parts = segments(request)
    split = _authorization_split(parts)
    if split is not None:
        try:
            module = importlib.import_module("mi_cli.server.arm_authorization")
        except ModuleNotFoundError as exc:
            if exc.name != "mi_cli.server.arm_authorization":
                raise
            return not_found(request.url.path)
        return module.handle(request, state, *split)
    return not_found(request.url.path)


def unavailable(message: str, status: int, headers: dict[str, str]) -> Response:
    """A busy store (503, retry) or a failure, in ARM's error shape."""
    code = {503: "ServiceUnavailable", 413: "RequestEntityTooLarge", 404: "NotFound"}.get(status, "InternalServerError")
    return arm_error(status, code, message, headers=headers)
