"""Azure Resource Manager (https://management.azure.com): parse the request, authenticate and authorise the caller
as ARM does, call the services, answer in ARM's shapes, status codes and error bodies. The role definitions and
assignments (`.../providers/Microsoft.Authorization/...` at any scope) are answered by server/arm_authorization,
which builds on the helpers here (arm_error, caller, require, forbidden, ArmRefusal)."""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable
from urllib.parse import quote, unquote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from mi_cli import ids
from mi_cli.catalog import catalog
from mi_cli.errors import (ConflictError, ForbiddenError, InvalidTokenError, MiError, NotFoundError, ValidationError, group_not_found,
                           resource_not_found, shown)
from mi_cli.server import reads
from mi_cli.server.responses import AzureJSON
from mi_cli.server.state import ServerState
from mi_cli.services import Ctx, access, federated, groups, identities, resources, tenancy, views
from mi_cli.services import arm as services_arm

# The audiences ARM accepts, in the order its InvalidAuthenticationTokenAudience message lists them.
AUDIENCES = ("https://management.core.windows.net/", "https://management.core.windows.net",
             "https://management.azure.com/", "https://management.azure.com")
AUTHORIZATION = "microsoft.authorization"

# ARM's answers to a missing or bad bearer token (code, message), each as ARM's responses have it: the missing
# header (terraform-provider-azurerm#3612; the challenge's error_description from azure-sdk-for-go azcore's bearer
# token policy tests), an invalid header (azure-sdk-for-python#4124), the audience (Azure-Samples/
# active-directory-dotnetcore-daemon-v2#145), expiry and issuer (recorded answers quoted in public write-ups),
# "The access token is invalid." (ARM's troubleshooting page) for a signature or key it cannot verify.
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


def challenge(description: str, tenant_id: str = "") -> dict[str, str]:
    """ARM's WWW-Authenticate on a 401: the authority without a tenant, or with the subscription's tenant when the
    token came from another issuer (azure-powershell's tenant lookup reads it from there)."""
    text = description.replace('"', "'")
    return {"WWW-Authenticate": f'Bearer authorization_uri="https://login.windows.net/{tenant_id}", error="invalid_token", '
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
            message = text.format(found=_arm_time(datetime.fromtimestamp(float(exc.found), timezone.utc)), now=_arm_time(now))
        except (TypeError, ValueError, OverflowError):
            pass
    description = MISSING_HEADER if exc.kind == "missing" else message
    return arm_error(401, code, message, headers=challenge(description, tenant.id if exc.kind == "issuer" else ""))


def _arm_time(moment) -> str:  # noqa: ANN001
    """A time as ARM's messages print it: 6/3/2020 9:24:01 PM (UTC)."""
    hour = moment.hour % 12 or 12
    return f"{moment.month}/{moment.day}/{moment.year} {hour}:{moment.minute:02d}:{moment.second:02d} {'AM' if moment.hour < 12 else 'PM'}"


def caller(ctx: Ctx, request: Request, *, action: str | None = None, scope: str | None = None) -> dict[str, Any]:
    """The verified claims of the request's bearer token (signature, lifetime, issuer, one of ARM's audiences).
    A missing or bad token raises ArmRefusal with ARM's 401 and its challenge, logged under `action` at `scope`
    (default: the request's method and path, and its path)."""
    header = request.headers.get("authorization")
    try:
        scheme, _, token = (header or "").strip().partition(" ")
        if scheme and (scheme.casefold() != "bearer" or not token.strip()):
            raise InvalidTokenError("InvalidToken", "The Authorization header is not 'Bearer TOKEN'.").failed("format")
        return access.authenticate(ctx, header, AUDIENCES)
    except InvalidTokenError as exc:
        response = unauthenticated(ctx, exc)
        log(ctx, action or f"{request.method} {request.url.path}", scope or request.url.path, status="Failed", caller="(no valid token)",
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
    """access.check for a control-plane action at `scope`, which may not exist yet (a group being created) or be a
    collection (a group's identities): RBAC is then evaluated at its nearest existing ancestor, where every
    assignment that could grant it is."""
    candidates = [scope]
    parts = scope.rstrip("/").split("/")
    for end in (len(parts) - 2, 5, 3):  # a parent resource, the group, the subscription
        if 3 <= end < len(parts):
            candidates.append("/".join(parts[:end]))
    last: MiError | None = None
    for candidate in candidates:
        try:
            decision = access.check(ctx, oid, action, candidate, data=False)
        except (NotFoundError, ValidationError) as exc:  # not there yet, or a collection's path: its parent's
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
    except (ValueError, RecursionError):  # RecursionError: arrays or objects nested past the parser's depth
        return None
    return body if isinstance(body, dict) else None


def invalid_content(detail: str = "The request content is not a JSON object.") -> Response:
    """ARM's 400 for a body it cannot read."""
    return arm_error(400, "InvalidRequestContent", f"The request content was invalid and could not be deserialized: '{detail}'.")


def _authorization_split(parts: list[str]) -> tuple[str, list[str]] | None:
    """(scope, rest) when the path names the Microsoft.Authorization provider: `/subscriptions/S/providers/
    Microsoft.Authorization/roleDefinitions` -> ("/subscriptions/S", ["roleDefinitions"]); at the root, scope "/"."""
    for i in range(len(parts) - 1):
        if parts[i].casefold() == "providers" and parts[i + 1].casefold() == AUTHORIZATION:
            return "/" + "/".join(parts[:i]), parts[i + 2:]
    return None


# --- answers ------------------------------------------------------------------------------------------

MISSING_API_VERSION = "The api-version query parameter (?api-version=) is required for all requests."
MISSING_SUBSCRIPTION = "The request did not have a subscription or a valid tenant level resource provider."
LOCATION_REQUIRED = "The location property is required for this definition."


def method_not_allowed(method: str) -> Response:
    return arm_error(405, "MethodNotAllowed", f"The requested resource does not support http method '{shown(method)}'.")


def subscription_not_found(sub_id: str) -> Response:
    return arm_error(404, "SubscriptionNotFound", f"The subscription '{shown(sub_id)}' could not be found.")


def invalid_namespace(namespace: str, status: int = 400) -> Response:
    return arm_error(status, "InvalidResourceNamespace", f"The resource namespace '{shown(namespace)}' is invalid.")


def invalid_type(type_name: str, namespace: str, api_version: str) -> Response:
    return arm_error(400, "InvalidResourceType", f"The resource type '{shown(type_name)}' could not be found in the namespace "
                                                 f"'{shown(namespace)}' for api version '{shown(api_version)}'.")


def _is_guid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return len(text) == 36


@dataclass
class Call:
    """One authenticated ARM request: the transaction's context, the caller's claims, the body and api-version."""

    ctx: Ctx
    request: Request
    claims: dict[str, Any]
    body: dict[str, Any]
    api_version: str
    parts: list[str]
    spelled: str = ""  # the resource type as the path spells it (ARM's messages echo it): resourcegroups, ...

    @property
    def oid(self) -> str:
        return self.claims["oid"]

    @property
    def method(self) -> str:
        return self.request.method

    def path(self, count: int) -> str:
        """The request path's first `count` segments: a scope as ARM echoes it, spelled as the caller sent it."""
        return "/" + "/".join(self.parts[:count])

    def shown(self, action: str) -> str:
        """`action` as ARM's messages name it: with the resource type spelled as the request's path spells it
        ('Microsoft.Resources/subscriptions/resourcegroups/write' for az's lowercase path)."""
        prefix = self.spelled
        if prefix and action.casefold().startswith(prefix.casefold() + "/"):
            return prefix + action[len(prefix):]
        return action

    def require(self, action: str, scope: str) -> access.Decision:
        """require() for the caller, the 403 naming the action as the path spells its type."""
        decision = decide(self.ctx, self.oid, action, scope)
        if not decision.allowed:
            raise ArmRefusal(_refused(self, action, scope, decision))
        return decision

    def allowed(self, action: str, scope: str) -> bool:
        """Whether the caller may `action` at `scope`; a scope that is no id (a linked identity named by its bare
        name) is one nothing is allowed at, as ARM's "or the linked scope(s) are invalid" says."""
        try:
            return decide(self.ctx, self.oid, action, scope).allowed
        except MiError:
            return False

    def done(self, action: str, scope: str, decision: access.Decision | None, status: int, note: str = "") -> None:
        """The request's row of the activity log: the action, its scope, who, and the decision."""
        reason = decision.reason() if decision is not None else note
        outcome = "Succeeded" if status < 400 else "Failed"
        log(self.ctx, action, scope, status=outcome, caller=self.oid, detail=f"{status} {reason}".strip())

    def run(self, action: str, scope: str, decision: access.Decision | None, operation: Callable[[], Response]) -> Response:
        """`operation` as one all-or-nothing step after the decision: a service's refusal leaves only the log row."""
        try:
            with self.ctx.session.begin_nested():
                response = operation()
        except MiError as exc:
            response = from_mi_error(exc)
            self.done(action, scope, decision, response.status_code, f"{exc.code}: {exc.message}")
            return response
        self.done(action, scope, decision, response.status_code)
        return response


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return AzureJSON(data, status_code=status, headers=headers)


def _page(items: list[dict[str, Any]]) -> Response:
    return _json({"value": items})


def _tenant_id(ctx: Ctx) -> str:
    return tenancy.default_tenant(ctx).id


# --- subscriptions, tenants, providers ------------------------------------------------------------------


def _subscriptions(call: Call) -> Response:
    subs = services_arm.visible_subscriptions(call.ctx, call.oid)
    call.done("Microsoft.Resources/subscriptions/read", "/subscriptions", None, 200,
              f"{len(subs)} subscription(s) where the caller holds a role assignment")
    return _json({"count": {"type": "Total", "value": len(subs)}, "value": [services_arm.subscription(s) for s in subs]})


def _visible(call: Call, sub: Any, action: str, scope: str) -> None:
    """A subscription's own reads (itself, its providers) need some role assignment in it, as its listing does."""
    if not services_arm.has_assignments_below(call.ctx, call.oid, ids.subscription_id(sub.id)):
        log(call.ctx, action, scope, status="Failed", caller=call.oid,
            detail="403 Denied: the principal has no role assignment in this subscription.")
        raise ArmRefusal(forbidden(call.oid, call.shown(action), scope))


def _subscription(call: Call, sub: Any) -> Response:
    scope = call.path(2)
    _visible(call, sub, "Microsoft.Resources/subscriptions/read", scope)
    call.done("Microsoft.Resources/subscriptions/read", scope, None, 200, "the caller holds a role assignment in it")
    return _json(services_arm.subscription(sub))


def _tenants(call: Call) -> Response:
    call.done("Microsoft.Resources/tenants/read", "/tenants", None, 200, "any signed-in caller")
    return _json({"value": [services_arm.tenant(tenancy.default_tenant(call.ctx))]})


def _providers(call: Call, sub: Any | None, namespace: str | None, action_name: str | None) -> Response:
    scope = (call.path(2) if sub is not None else "") + "/providers" + (f"/{namespace}" if namespace else "")
    if action_name is not None:  # register: ARM answers with the provider, registered
        if call.method != "POST" or action_name.casefold() not in ("register", "unregister"):
            return method_not_allowed(call.method)
        action = f"{services_arm.namespaces().get(namespace.casefold(), namespace)}/register/action"
        decision = call.require(action, scope.rpartition("/providers")[0] or "/")
    elif call.method != "GET":
        return method_not_allowed(call.method)
    else:
        action, decision = "Microsoft.Resources/subscriptions/providers/read", None
        if sub is not None:
            _visible(call, sub, action, scope)
    sub_id = sub.id if sub is not None else None
    if namespace is None:
        data = [services_arm.provider(ns, sub_id=sub_id) for ns in sorted(services_arm.namespaces().values(), key=str.casefold)]
        call.done(action, scope, decision, 200, "provider metadata")
        return _page(data)
    data = services_arm.provider(namespace, sub_id=sub_id)
    if data is None:
        call.done(action, scope, decision, 404, "no such namespace")
        return invalid_namespace(namespace, 404)
    call.done(action, scope, decision, 200, "provider metadata")
    return _json(data)


def _operation_result(call: Call, sub: Any, token: str) -> Response:
    """The status of a resource group's deletion (the Location its DELETE returned): done, since deletes are
    immediate here."""
    scope = f"{ids.subscription_id(sub.id)}/operationresults/{token}"
    try:
        job = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if not isinstance(job, dict) or "jobId" not in job:
            raise ValueError(token)
    except ValueError:
        call.done("Microsoft.Resources/subscriptions/operationresults/read", scope, None, 404, "unknown operation")
        return arm_error(404, "NotFound", f"The operation '{shown(token)}' could not be found.")
    call.done("Microsoft.Resources/subscriptions/operationresults/read", scope, None, 200, str(job["jobId"]))
    return Response(status_code=200)


def _deletion_location(request: Request, sub_id: str, group: Any, api_version: str) -> str:
    job = {"jobId": f"RESOURCEGROUPDELETIONJOB-{group.name.upper()}-{group.location.upper()}", "jobLocation": group.location}
    token = base64.urlsafe_b64encode(json.dumps(job, separators=(",", ":")).encode()).decode().rstrip("=")
    return (f"https://{request.url.hostname}/subscriptions/{sub_id}/operationresults/{token}"
            f"?api-version={quote(api_version, safe='')}")


# --- resource groups ------------------------------------------------------------------------------------------

GROUP_ACTION = "Microsoft.Resources/subscriptions/resourceGroups"


def _filtered(call: Call, action: str, scope: str, items: list[tuple[str, str, dict[str, Any]]]) -> Response:
    """A listing as ARM filters it: all of it when the caller may `action` at `scope`; else the items it may read
    (each item: its id, its read action, its shape); else ARM's 403 for the listing."""
    decision = decide(call.ctx, call.oid, action, scope)
    if decision.allowed:
        shown_items = [data for _, _, data in items]
    else:
        shown_items = [data for item_id, read, data in items if call.allowed(read, item_id)]
        if not shown_items:
            raise ArmRefusal(_refused(call, action, scope, decision))
    call.done(action, scope, decision if decision.allowed else None, 200,
              "" if decision.allowed else f"{len(shown_items)} item(s) the caller may read")
    return _page(shown_items)


def _groups_list(call: Call, sub: Any) -> Response:
    if call.method != "GET":
        return method_not_allowed(call.method)
    items = [(ids.group_id(sub.id, g.name), f"{GROUP_ACTION}/read", services_arm.group(g))
             for g in groups.list_all(call.ctx, subscription=sub.id)]
    return _filtered(call, f"{GROUP_ACTION}/read", call.path(2), items)


def _group(call: Call, sub: Any, name: str) -> Response:
    scope = call.path(4)
    ctx = call.ctx
    existing = groups.get_by_id(ctx, sub.id, name)
    method = call.method
    if method in ("GET", "HEAD"):
        action = f"{GROUP_ACTION}/read"
        decision = call.require(action, scope)
        if existing is None:
            call.done(action, scope, decision, 404, "ResourceGroupNotFound")
            return Response(status_code=404) if method == "HEAD" else from_mi_error(group_not_found(name))
        call.done(action, scope, decision, 204 if method == "HEAD" else 200)
        return Response(status_code=204) if method == "HEAD" else _json(services_arm.group(existing))
    if method in ("PUT", "PATCH"):
        action = f"{GROUP_ACTION}/write"
        decision = call.require(action, scope)
        body = call.body
        if method == "PATCH":
            if existing is None:
                call.done(action, scope, decision, 404, "ResourceGroupNotFound")
                return from_mi_error(group_not_found(name))
            tags = body.get("tags")
            return call.run(action, scope, decision, lambda: _json(services_arm.group(
                groups.create(ctx, existing.name, existing.location, tags=tags, subscription=sub.id))))
        location = body.get("location")
        if not isinstance(location, str) or not location.strip():
            call.done(action, scope, decision, 400, "LocationRequired")
            return arm_error(400, "LocationRequired", LOCATION_REQUIRED)
        tags = body.get("tags") or {}
        status = 200 if existing is not None else 201
        return call.run(action, scope, decision, lambda: _json(services_arm.group(
            groups.create(ctx, name, location, tags=tags, subscription=sub.id)), status))
    if method == "DELETE":
        action = f"{GROUP_ACTION}/delete"
        decision = call.require(action, scope)
        if existing is None:
            call.done(action, scope, decision, 404, "ResourceGroupNotFound")
            return from_mi_error(group_not_found(name))

        def delete() -> Response:
            gone = groups.delete(ctx, existing.name, subscription=sub.id)
            ctx.warnings.clear()  # dangling references are Azure's behaviour; ARM says nothing of them
            return Response(status_code=202, headers={
                "Location": _deletion_location(call.request, sub.id, gone, call.api_version), "Retry-After": "0"})

        return call.run(action, scope, decision, delete)
    return method_not_allowed(method)


def _generic_listing(ctx: Ctx, *, group: Any | None, sub_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    """Every resource of a group or subscription, user-assigned identities included, as Resources_List gives them."""
    found = resources.list_all(ctx, group=group, sub_id=None if group is not None else sub_id)
    items = [(data["id"], f"{data['type']}/read", services_arm.listed(data)) for data in services_arm.resources(ctx, found)]
    tid = _tenant_id(ctx)
    for row in identities.list_user_assigned(ctx, group=group, sub_id=None if group is not None else sub_id):
        data = services_arm.user_assigned(row, tid)
        del data["properties"]
        items.append((data["id"], f"{ids.UAMI_TYPE}/read", data))
    return sorted(items, key=lambda item: item[0].casefold())


# Resources_List's $filter fields, as az's `resource list` sends them (-g, --resource-type, -n, -l), by what they compare
FILTER_FIELDS: dict[str, Callable[[dict[str, Any]], str]] = {
    "resourcetype": lambda data: data.get("type", ""),
    "name": lambda data: data.get("name", ""),
    "location": lambda data: data.get("location", ""),
    "resourcegroup": lambda data: (ids.parse(data["id"]).group or "") if ids.parse(data["id"]) else "",
}


def _resource_filter(call: Call, items: list[tuple[str, str, dict[str, Any]]]) -> list[tuple[str, str, dict[str, Any]]]:
    """Resources_List's $filter: `field eq 'value'` clauses joined by `and`, on the fields az sends."""
    text = call.request.query_params.get("$filter")
    if not text:
        return items
    for clause in text.split(" and "):
        field, op, value = (clause.strip().split(" ", 2) + ["", ""])[:3]
        value = value.strip().strip("'")
        read = FILTER_FIELDS.get(field.casefold())
        if op.casefold() != "eq" or read is None:
            raise ArmRefusal(arm_error(400, "InvalidFilterInQueryString", f"The $filter '{shown(text)}' is not supported."))
        items = [item for item in items if str(read(item[2])).casefold() == value.casefold()]
    return items


def _resources_in(call: Call, sub: Any, group_name: str | None) -> Response:
    if call.method != "GET":
        return method_not_allowed(call.method)
    if group_name is None:
        scope, action = call.path(2), "Microsoft.Resources/subscriptions/resources/read"
        group = None
    else:
        scope, action = call.path(4), f"{GROUP_ACTION}/resources/read"
        decision = decide(call.ctx, call.oid, action, scope)
        group = _group_or_404(call, sub, group_name, action, scope, decision)
    items = _resource_filter(call, _generic_listing(call.ctx, group=group, sub_id=sub.id))
    return _filtered(call, action, scope, items)


def _refused(call: Call, action: str, scope: str, decision: access.Decision) -> Response:
    """ARM's 403 for the caller, logged under the action's own name."""
    log(call.ctx, action, scope, status="Failed", caller=call.oid, detail=f"403 {decision.reason()}")
    return forbidden(call.oid, call.shown(action), scope)


# --- resources in a group -----------------------------------------------------------------------------------


def _group_or_404(call: Call, sub: Any, name: str, action: str, scope: str, decision: access.Decision | None) -> Any:
    """The group, or ARM's answer when it is missing: 403 to a caller not allowed `action` there (a listing
    decides that itself), else 404 ResourceGroupNotFound."""
    group = groups.get_by_id(call.ctx, sub.id, name)
    if group is None:
        if decision is not None and not decision.allowed:
            raise ArmRefusal(_refused(call, action, scope, decision))
        call.done(action, scope, decision, 404, "ResourceGroupNotFound")
        raise ArmRefusal(from_mi_error(group_not_found(name)))
    return group


def _provider_path(call: Call, sub: Any, group_name: str, tail: list[str]) -> Response:
    """`/subscriptions/S/resourceGroups/G/providers/NS/type/name[/type/name...]` and the lists between."""
    namespace, segments_ = tail[0], tail[1:]
    ns = namespace.casefold()
    types, names = segments_[0::2], segments_[1::2]
    if not types:
        return not_found(call.request.url.path)
    if ns == "microsoft.managedidentity" and types[0].casefold() == "userassignedidentities":
        return _identity_path(call, sub, group_name, names, types)
    canonical_ns = services_arm.namespaces().get(ns)
    if canonical_ns is None:
        return invalid_namespace(namespace)
    type_text = "/".join([canonical_ns, *types])
    try:
        rt = catalog().get(type_text)
    except ValidationError:
        return invalid_type("/".join(types), canonical_ns, call.api_version)
    group_scope = call.path(4)
    if len(names) < len(types):  # a collection: the type's resources in the group (children of their parent)
        if call.method != "GET":
            return method_not_allowed(call.method)
        scope = "/".join([group_scope, "providers", namespace, *segments_])
        action = f"{rt.type}/read"
        decision = decide(call.ctx, call.oid, action, scope)
        group = _group_or_404(call, sub, group_name, action, scope, decision)
        parent = "/".join(names) + "/" if names else ""
        found = [r for r in resources.list_all(call.ctx, group=group, type_text=rt.type)
                 if not parent or r.name_key.startswith(ids.key(parent))]
        items = [(data["id"], action, data) for data in services_arm.resources(call.ctx, found)]
        return _filtered(call, action, scope, items)
    arm_id = ids.resource_id(sub.id, group_name, rt.type, "/".join(names))
    scope = "/".join([group_scope, "providers", namespace, *segments_])
    return _resource(call, sub, group_name, rt, names, arm_id, scope)


def _resource(call: Call, sub: Any, group_name: str, rt: Any, names: list[str], arm_id: str, scope: str) -> Response:
    ctx = call.ctx
    method = call.method
    verb = {"GET": "read", "HEAD": "read", "PUT": "write", "PATCH": "write", "DELETE": "delete"}.get(method)
    if verb is None:
        return method_not_allowed(method)
    action = f"{rt.type}/{verb}"
    decision = call.require(action, scope)
    group = _group_or_404(call, sub, group_name, action, scope, decision)
    existing = resources.by_id(ctx, arm_id)
    if method in ("GET", "HEAD"):
        if existing is None:
            call.done(action, scope, decision, 404, "ResourceNotFound")
            return Response(status_code=404) if method == "HEAD" else from_mi_error(
                resource_not_found(rt.type, "/".join(names), group.name))
        call.done(action, scope, decision, 200 if method == "GET" else 204)
        return Response(status_code=204) if method == "HEAD" else _json(services_arm.resource(ctx, existing))
    if method == "DELETE":
        def delete() -> Response:
            gone = resources.delete_resource(ctx, existing) if existing is not None else []
            return Response(status_code=200 if gone else 204)

        return call.run(action, scope, decision, delete)
    body = call.body
    request: services_arm.IdentityRequest | None = None
    if body.get("identity") is not None:
        try:
            request = services_arm.parse_identity(body["identity"], rt)
        except MiError as exc:
            call.done(action, scope, decision, 400, f"{exc.code}: {exc.message}")
            return from_mi_error(exc)
        _linked(call, action, scope, request)
    if method == "PATCH":
        if existing is None:
            call.done(action, scope, decision, 404, "ResourceNotFound")
            return from_mi_error(resource_not_found(rt.type, "/".join(names), group.name))

        def patch() -> Response:
            res = existing
            if "tags" in body and body["tags"] is not None:
                res = _put_resource(ctx, group, rt, names, location=res.location, tags=body["tags"], existing=res)
            if request is not None:
                res = services_arm.apply_identity(ctx, res, request, patch=True)
            return _json(services_arm.resource(ctx, resources.by_id(ctx, arm_id)))

        return call.run(action, scope, decision, patch)
    location = body.get("location")
    if existing is None and (not isinstance(location, str) or not location.strip()):
        call.done(action, scope, decision, 400, "LocationRequired")
        return arm_error(400, "LocationRequired", LOCATION_REQUIRED)

    def put() -> Response:
        tags = body.get("tags") or {}
        if existing is None:
            refs = services_arm.user_references(ctx, group, request, [], patch=False) if request is not None else []
            _put_resource(ctx, group, rt, names, location=location, tags=tags, existing=None,
                          system_assigned=bool(request and request.system), user_assigned=refs)
        else:
            res = _put_resource(ctx, group, rt, names, location=location or existing.location, tags=tags, existing=existing)
            if request is not None:
                services_arm.apply_identity(ctx, res, request, patch=False)
        return _json(services_arm.resource(ctx, resources.by_id(ctx, arm_id)), 201 if existing is None else 200)

    return call.run(action, scope, decision, put)


def _put_resource(ctx: Ctx, group: Any, rt: Any, names: list[str], *, location: str, tags: Any, existing: Any,
                  system_assigned: bool = False, user_assigned: list[identities.Reference] = ()) -> Any:
    """resources.create, the CLI's one write path for a resource, with the name and parent a path gives."""
    parent = "/".join(names[:-1]) or None
    kwargs: dict[str, Any] = {} if existing is None else {"existing": existing}
    return resources.create(ctx, group, names[-1], rt.type, location=location, tags=tags, parent=parent,
                            system_assigned=system_assigned, user_assigned=list(user_assigned), **kwargs)


def _linked(call: Call, action: str, scope: str, request: services_arm.IdentityRequest) -> None:
    """ARM's linked authorization: each user-assigned identity the request attaches needs assign/action on it."""
    denied = [identity for identity in request.attaching() if not call.allowed(ASSIGN_ACTION, identity)]
    if denied:
        log(call.ctx, ASSIGN_ACTION, ",".join(denied), status="Failed", caller=call.oid,
            detail=f"403 LinkedAuthorizationFailed for {action} at {scope}")
        raise ArmRefusal(linked_forbidden(call.oid, call.shown(action), scope, denied))


# --- user-assigned identities and their federated credentials ---------------------------------------------------


def _identity_path(call: Call, sub: Any, group_name: str, names: list[str], types: list[str]) -> Response:
    ctx = call.ctx
    base = call.path(7)
    if len(types) == 2 and len(names) == 1 and types[1].casefold() == "listassociatedresources":
        return _associated_resources(call, sub, group_name, names[0], f"{base}/{names[0]}")
    if len(types) > 2 or (len(types) == 2 and types[1].casefold() != "federatedidentitycredentials"):
        return invalid_type("/".join(types), "Microsoft.ManagedIdentity", call.api_version)
    if not names:  # the group's identities
        if call.method != "GET":
            return method_not_allowed(call.method)
        action = f"{ids.UAMI_TYPE}/read"
        decision = decide(ctx, call.oid, action, base)
        group = groups.get_by_id(ctx, sub.id, group_name)
        if group is None:
            if not decision.allowed:
                raise ArmRefusal(_refused(call, action, base, decision))
            call.done(action, base, decision, 404, "ResourceGroupNotFound")
            return from_mi_error(group_not_found(group_name))
        tid = _tenant_id(ctx)
        items = [(row.arm_id, action, services_arm.user_assigned(row, tid))
                 for row in identities.list_user_assigned(ctx, group=group)]
        return _filtered(call, action, base, items)
    scope = f"{base}/{names[0]}"
    if len(types) == 2:
        return _federated(call, sub, group_name, names, scope)
    method = call.method
    verb = {"GET": "read", "PUT": "write", "PATCH": "write", "DELETE": "delete"}.get(method)
    if verb is None:
        return method_not_allowed(method)
    action = f"{ids.UAMI_TYPE}/{verb}"
    decision = call.require(action, scope)
    group = _group_or_404(call, sub, group_name, action, scope, decision)
    name = names[0]
    existing = _identity_named(ctx, group, name)
    tid = _tenant_id(ctx)
    if method == "GET":
        if existing is None:
            call.done(action, scope, decision, 404, "ResourceNotFound")
            return from_mi_error(resource_not_found(ids.UAMI_TYPE, name, group.name))
        call.done(action, scope, decision, 200)
        return _json(services_arm.user_assigned(existing, tid))
    if method == "DELETE":
        def delete() -> Response:
            if existing is None:
                return Response(status_code=204)
            identities.delete_user_assigned(ctx, existing)
            ctx.warnings.clear()  # the references left dangling are Azure's behaviour; ARM says nothing of them
            return Response(status_code=200)

        return call.run(action, scope, decision, delete)
    body = call.body
    properties = body.get("properties") or {}
    if not isinstance(properties, dict):
        call.done(action, scope, decision, 400, "InvalidRequestContent")
        return invalid_content("properties must be an object")
    if method == "PATCH":
        if existing is None:
            call.done(action, scope, decision, 404, "ResourceNotFound")
            return from_mi_error(resource_not_found(ids.UAMI_TYPE, name, group.name))

        def patch() -> Response:
            uami = existing
            if body.get("tags") is not None:
                uami = identities.update_tags(ctx, uami, body["tags"])
            if properties.get("isolationScope") is not None:
                uami = identities.create_user_assigned(ctx, group, uami.name, location=uami.location,
                                                       isolation_scope=properties["isolationScope"], existing=uami)
            return _json(services_arm.user_assigned(uami, tid))

        return call.run(action, scope, decision, patch)
    location = body.get("location")
    if not isinstance(location, str) or not location.strip():
        call.done(action, scope, decision, 400, "LocationRequired")
        return arm_error(400, "LocationRequired", LOCATION_REQUIRED)

    def put() -> Response:
        uami = identities.create_user_assigned(ctx, group, name, location=location, tags=body.get("tags") or {},
                                               isolation_scope=properties.get("isolationScope"))
        return _json(services_arm.user_assigned(uami, tid), 200 if existing is not None else 201)

    return call.run(action, scope, decision, put)


def _associated_resources(call: Call, sub: Any, group_name: str, name: str, scope: str) -> Response:
    """POST .../userAssignedIdentities/N/listAssociatedResources (`az identity list-resources`)."""
    if call.method != "POST":
        return method_not_allowed(call.method)
    action = f"{ids.UAMI_TYPE}/listAssociatedResources/action"
    decision = call.require(action, scope)
    group = _group_or_404(call, sub, group_name, action, scope, decision)
    uami = _identity_named(call.ctx, group, name)
    if uami is None:
        call.done(action, scope, decision, 404, "ResourceNotFound")
        return from_mi_error(resource_not_found(ids.UAMI_TYPE, name, group.name))
    found = views.associated_resources(call.ctx, uami)
    call.done(action, scope, decision, 200)
    return _json({"totalCount": len(found), "value": found})


def _identity_named(ctx: Ctx, group: Any, name: str) -> Any:
    try:
        return identities.get_user_assigned(ctx, group, name)
    except NotFoundError:
        return None


FIC_ACTION = "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials"


def _federated(call: Call, sub: Any, group_name: str, names: list[str], identity_scope: str) -> Response:
    ctx = call.ctx
    method = call.method
    listing = len(names) == 1
    scope = f"{identity_scope}/federatedIdentityCredentials" + ("" if listing else f"/{names[1]}")
    verb = "read" if listing else {"GET": "read", "PUT": "write", "DELETE": "delete"}.get(method)
    if verb is None or (listing and method != "GET"):
        return method_not_allowed(method)
    action = f"{FIC_ACTION}/{verb}"
    decision = call.require(action, scope)
    group = _group_or_404(call, sub, group_name, action, scope, decision)
    uami = _identity_named(ctx, group, names[0])
    if uami is None:
        call.done(action, scope, decision, 404, "ParentResourceNotFound")
        return from_mi_error(resource_not_found(ids.UAMI_TYPE, names[0], group.name))
    if listing:
        call.done(action, scope, decision, 200)
        return _page([services_arm.federated_credential(uami, f) for f in federated.list_for(ctx, uami)])
    name = names[1]
    if method == "GET":
        try:
            fic = federated.get(ctx, uami, name)
        except NotFoundError as exc:
            call.done(action, scope, decision, 404, exc.code)
            return from_mi_error(exc)
        call.done(action, scope, decision, 200)
        return _json(services_arm.federated_credential(uami, fic))
    if method == "DELETE":
        return call.run(action, scope, decision, lambda: Response(status_code=200 if federated.delete(ctx, uami, name) else 204))
    properties = call.body.get("properties")
    if not isinstance(properties, dict):
        call.done(action, scope, decision, 400, "InvalidRequestContent")
        return invalid_content("properties must be an object with issuer, subject and audiences")
    audiences = properties.get("audiences")
    if audiences is not None and not (isinstance(audiences, list) and all(isinstance(a, str) for a in audiences)):
        call.done(action, scope, decision, 400, "InvalidRequestContent")
        return invalid_content("properties.audiences must be a list of strings")
    issuer, subject = properties.get("issuer"), properties.get("subject")
    if not isinstance(issuer, str) or not isinstance(subject, str):
        call.done(action, scope, decision, 400, "BadRequest")
        return arm_error(400, "BadRequest", "The federated identity credential needs an issuer and a subject.")
    before = {f.name_key for f in federated.list_for(ctx, uami)}

    def put() -> Response:
        fic = federated.create(ctx, uami, name, issuer=issuer, subject=subject, audiences=audiences,
                               description=properties.get("description"))
        return _json(services_arm.federated_credential(uami, fic), 200 if fic.name_key in before else 201)

    return call.run(action, scope, decision, put)


def _subscription_type_list(call: Call, sub: Any, namespace: str, type_segment: str) -> Response:
    """`/subscriptions/S/providers/NS/type`: the type's resources in every group of the subscription."""
    if call.method != "GET":
        return method_not_allowed(call.method)
    ctx = call.ctx
    scope = call.path(5)
    if namespace.casefold() == "microsoft.managedidentity" and type_segment.casefold() == "userassignedidentities":
        action = f"{ids.UAMI_TYPE}/read"
        tid = _tenant_id(ctx)
        items = [(row.arm_id, action, services_arm.user_assigned(row, tid))
                 for row in identities.list_user_assigned(ctx, sub_id=sub.id)]
        return _filtered(call, action, scope, items)
    canonical_ns = services_arm.namespaces().get(namespace.casefold())
    if canonical_ns is None:
        return invalid_namespace(namespace)
    try:
        rt = catalog().get(f"{canonical_ns}/{type_segment}")
    except ValidationError:
        return invalid_type(type_segment, canonical_ns, call.api_version)
    action = f"{rt.type}/read"
    found = resources.list_all(ctx, sub_id=sub.id, type_text=rt.type)
    items = [(data["id"], action, data) for data in services_arm.resources(ctx, found)]
    return _filtered(call, action, scope, items)


def _system_identity(call: Call, sub: Any, group_name: str, resource_part: list[str]) -> Response:
    """`{resource id}/providers/Microsoft.ManagedIdentity/identities/default`: the resource's system-assigned identity."""
    if call.method != "GET":
        return method_not_allowed(call.method)
    ctx = call.ctx
    resource_scope = "/".join([call.path(4), "providers", *resource_part])
    scope = resource_scope + ids.SYSTEM_IDENTITY_SUFFIX
    action = "Microsoft.ManagedIdentity/identities/read"
    decision = call.require(action, scope)
    _group_or_404(call, sub, group_name, action, scope, decision)
    res = resources.by_id(ctx, resource_scope)
    try:
        if res is None:
            parsed = ids.parse(resource_scope)
            raise resource_not_found(parsed.type_name if parsed else None, parsed.name if parsed else resource_scope, group_name)
        data = services_arm.system_assigned(identities.system_identity(ctx, res), _tenant_id(ctx))
    except NotFoundError as exc:
        call.done(action, scope, decision, 404, exc.code)
        return from_mi_error(exc)
    call.done(action, scope, decision, 200)
    return _json(data)


# --- routing -------------------------------------------------------------------------------------------------


def _under_subscription(call: Call, sub: Any, rest: list[str]) -> Response:
    low = [p.casefold() for p in rest]
    if not rest:
        return _subscription(call, sub) if call.method == "GET" else method_not_allowed(call.method)
    if low[0] == "providers":
        if len(rest) <= 2:
            return _providers(call, sub, rest[1] if len(rest) == 2 else None, None)
        if len(rest) == 4 and low[3] in ("register", "unregister") and call.method == "POST":
            return _providers(call, sub, rest[1], rest[3])
        if len(rest) == 3:
            call.spelled = f"{rest[1]}/{rest[2]}"
            return _subscription_type_list(call, sub, rest[1], rest[2])
        return not_found(call.request.url.path)
    if low == ["resources"]:
        return _resources_in(call, sub, None)
    if low[0] == "operationresults" and len(rest) == 2:
        return _operation_result(call, sub, rest[1]) if call.method == "GET" else method_not_allowed(call.method)
    if low[0] != "resourcegroups":
        return not_found(call.request.url.path)
    call.spelled = f"Microsoft.Resources/subscriptions/{rest[0]}"
    if len(rest) == 1:
        return _groups_list(call, sub)
    group_name = rest[1]
    if len(rest) == 2:
        return _group(call, sub, group_name)
    if low[2:] == ["resources"]:
        return _resources_in(call, sub, group_name)
    if low[2] != "providers" or len(rest) < 5:
        return not_found(call.request.url.path)
    tail = rest[3:]
    call.spelled = "/".join(tail[0:1] + tail[1::2])  # the namespace and types, without the names
    second = next((i for i in range(1, len(tail)) if tail[i].casefold() == "providers"), None)
    if second is not None:
        extension = [p.casefold() for p in tail[second + 1:]]
        if extension == ["microsoft.managedidentity", "identities", "default"] and second % 2 == 1:
            return _system_identity(call, sub, group_name, tail[:second])
        return not_found(call.request.url.path)
    return _provider_path(call, sub, group_name, tail)


def _dispatch(call: Call, parts: list[str]) -> Response:
    low = [p.casefold() for p in parts]
    if low == ["subscriptions"]:
        return _subscriptions(call) if call.method == "GET" else method_not_allowed(call.method)
    if low == ["tenants"]:
        return _tenants(call) if call.method == "GET" else method_not_allowed(call.method)
    if low[:1] == ["providers"] and len(parts) <= 2:
        return _providers(call, None, parts[1] if len(parts) == 2 else None, None)
    if low[:1] != ["subscriptions"]:
        return arm_error(404, "MissingSubscription", MISSING_SUBSCRIPTION)
    sub_text = parts[1]
    if not _is_guid(sub_text):
        return arm_error(400, "InvalidSubscriptionId", f"The provided subscription identifier '{shown(sub_text)}' is malformed or invalid.")
    sub = tenancy.subscription_by_id(call.ctx, sub_text.casefold())
    if sub is None:
        return subscription_not_found(sub_text)
    return _under_subscription(call, sub, parts[2:])


async def handle(request: Request, state: ServerState) -> Response:
    """One ARM request (the body read already): the api-version, the caller's token, then the operation with RBAC
    for its action at the request's scope, each request a row of the activity log. Paths of the
    Microsoft.Authorization provider go to server/arm_authorization. A GET is answered from memory while the
    store is unchanged (server/reads: the token verified each time, the rest of the answer kept whole per caller
    and URL); anything else in a write transaction, in a worker thread."""
    parts = segments(request)
    split = _authorization_split(parts)
    if split is not None:
        from mi_cli.server import arm_authorization  # here: it imports this module's shared pieces

        return await arm_authorization.handle(request, state, *split)
    api_version = request.query_params.get("api-version", "").strip()
    if not api_version:
        return arm_error(400, "MissingApiVersionParameter", MISSING_API_VERSION)
    if request.method == "GET":
        return await reads.answer(state, lambda ctx: _answer(ctx, request, parts, api_version))
    return await run_in_threadpool(_written, state, request, parts, api_version)


def _written(state: ServerState, request: Request, parts: list[str], api_version: str) -> Response:
    with state.store.transaction(write=True) as session:
        return _answer(Ctx.from_env(session), request, parts, api_version)


def _answer(ctx: Ctx, request: Request, parts: list[str], api_version: str) -> Response:
    try:
        claims = caller(ctx, request)
    except ArmRefusal as refusal:
        return refusal.response
    ctx.caller = claims["oid"]  # the changes the operation logs are the caller's, not the server account's
    if request.method != "GET":
        return _operate(ctx, request, claims, parts, api_version)
    raw = request.scope.get("raw_path") or request.url.path.encode()
    key = ("arm", raw, request.scope.get("query_string", b""), claims["oid"])
    return reads.replayed(ctx, key, lambda: _operate(ctx, request, claims, parts, api_version))


def _operate(ctx: Ctx, request: Request, claims: dict[str, Any], parts: list[str], api_version: str) -> Response:
    logged = ctx.changes
    body = json_body(request) if request.method in ("PUT", "PATCH", "POST") else {}
    try:
        response = invalid_content() if body is None else _dispatch(Call(ctx, request, claims, body, api_version, parts), parts)
    except ArmRefusal as refusal:
        response = refusal.response
    if ctx.changes == logged:  # refused before any operation was known (a path, a method, a body)
        code = json.loads(response.body).get("error", {}).get("code", "") if response.body else ""
        log(ctx, f"{request.method} {request.url.path}", "/" + "/".join(parts), status="Failed" if response.status_code >= 400
            else "Succeeded", caller=claims["oid"], detail=f"{response.status_code} {code}".strip())
    return response


def not_found(path: str) -> Response:
    """ARM's answer to a path no provider serves."""
    return arm_error(404, "NotFound", f"The requested resource '{shown(path, 300)}' was not found.")


def unavailable(message: str, status: int, headers: dict[str, str]) -> Response:
    """A busy store (503, retry) or a failure, in ARM's error shape."""
    code = {503: "ServiceUnavailable", 413: "RequestEntityTooLarge", 404: "NotFound"}.get(status, "InternalServerError")
    return arm_error(status, code, message, headers=headers)
