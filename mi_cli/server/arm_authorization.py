"""Microsoft.Authorization on the ARM plane: role definitions and role assignments at any scope, in ARM's shapes,
status codes and errors, each request authorised as ARM does it (the caller's token, then the operation's action
at the scope, with a delegation condition on role assignment writes and deletes), every change made through the
same service calls as `mi role`."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any, Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from mi_cli import ids
from mi_cli.errors import MiError, NotFoundError, shown
from mi_cli.models import CustomRole, RoleAssignment
from mi_cli.server.arm import (MISSING_API_VERSION, ArmRefusal, arm_error, caller, decide, forbidden, from_mi_error,
                               invalid_content, invalid_type, json_body, log, method_not_allowed)
from mi_cli.server import reads
from mi_cli.server.responses import AzureJSON
from mi_cli.server.state import ServerState
from mi_cli.services import Ctx, access, assignments, principals, roles
from mi_cli.services.scopes import resolve_scope
from mi_cli.services.validation import is_guid

PROVIDER = "Microsoft.Authorization"
ASSIGNMENTS, DEFINITIONS = "roleassignments", "roledefinitions"
READ, WRITE, DELETE = "read", "write", "delete"
# The attributes a role assignment delegation condition reads (conditions-authorization-actions-attributes.md):
# the request's on a write, the existing assignment's (@Resource) on a delete.
ATTRIBUTES = {"RoleDefinitionId": "Microsoft.Authorization/roleAssignments:RoleDefinitionId",
              "PrincipalId": "Microsoft.Authorization/roleAssignments:PrincipalId",
              "PrincipalType": "Microsoft.Authorization/roleAssignments:PrincipalType"}
# ARM's texts (Azure/azure-rest-api-specs, azure-powershell, azure-service-operator and azure-cli issues quoting
# them; see each use). ARM prints a role definition's and an existing assignment's GUID without dashes.
INVALID_ASSIGNMENT_ID = "The role assignment ID '{name}' is not valid. The role assignment ID must be a GUID."
INVALID_PRINCIPAL_ID = "The Principal ID '{principal}' is not valid. Principal ID must be a GUID."
ROLE_NOT_FOUND = "The specified role definition with ID '{guid}' does not exist."
ASSIGNMENT_EXISTS = "The role assignment already exists. The ID of the existing role assignment is {guid}."
SCOPE_MISMATCH = ("The request to create role assignment '{name}' is not valid. Role assignment scope '{given}' must match "
                  "the scope specified on the URI '{uri}'.")
UNSUPPORTED_FILTER = ("The filter '{filter}' is not supported. Supported filters are either 'atScope()' or "
                      "'principalId eq '{{value}}'' or 'assignedTo('{{value}}')'.")
# A service refusal whose status on ARM is not the one its kind implies.
STATUS_BY_CODE = {"RoleAssignmentUpdateNotPermitted": 400}  # a 400 (RBAC troubleshooting: "returns BadRequest")


async def handle(request: Request, state: ServerState, scope: str, rest: list[str]) -> Response:
    """One request below `{scope}/providers/Microsoft.Authorization` (scope '' or '/' for the tenant root): its
    401 or 403 is logged, and a change is all or nothing, in one write transaction in a worker thread; a GET is
    answered from memory while the store is unchanged (server/reads)."""
    kind = rest[0].casefold() if rest else ""
    api_version = request.query_params.get("api-version", "").strip()
    if kind not in (ASSIGNMENTS, DEFINITIONS) or len(rest) > 2:
        return invalid_type("/".join(rest[:1]), PROVIDER, api_version)
    name = rest[1] if len(rest) == 2 else None
    if request.method not in (("GET",) if name is None else ("GET", "PUT", "DELETE")):
        return method_not_allowed(request.method)
    if not api_version:
        return arm_error(400, "MissingApiVersionParameter", MISSING_API_VERSION)
    body: dict[str, Any] = {}
    if request.method == "PUT":
        found = json_body(request)
        if found is None:
            return invalid_content()
        body = found
    scope = "" if scope.strip("/") == "" else "/" + scope.strip("/")
    operation = _OPERATIONS[(kind, request.method, name is not None)]

    def answer(ctx: Ctx) -> Response:
        try:
            claims = caller(ctx, request)
            if request.method != "GET":
                return operation(ctx, claims, scope, name, request, body)
            raw = request.scope.get("raw_path") or request.url.path.encode()
            key = ("arm", raw, request.scope.get("query_string", b""), claims["oid"])
            return reads.replayed(ctx, key, lambda: _answered(ctx, claims, scope, name, request, body, operation))
        except ArmRefusal as refusal:
            return refusal.response
        except MiError as exc:  # a scope that does not exist, a malformed one
            return _refused(exc)

    if request.method == "GET":
        return await reads.answer(state, answer)
    return await run_in_threadpool(_written, state, answer)


def _answered(ctx: Ctx, claims: dict[str, Any], scope: str, name: str | None, request: Request, body: dict[str, Any],
              operation: Callable[..., Response]) -> Response:
    """A GET's answer, its refusals (already logged) answered as responses, so that a replay repeats them."""
    try:
        return operation(ctx, claims, scope, name, request, body)
    except ArmRefusal as refusal:
        return refusal.response
    except MiError as exc:
        return _refused(exc)


def _written(state: ServerState, answer: Callable[[Ctx], Response]) -> Response:
    with state.store.transaction(write=True) as session:
        return answer(Ctx.from_env(session))


# --- authorisation ---------------------------------------------------------------------------------------------


def _require(ctx: Ctx, claims: dict[str, Any], action: str, scope: str, *, target: str | None = None,
             context: dict[str, Any] | None = None) -> access.Decision:
    """RBAC for `action` at `scope` with the request's `context` for a condition; ARM's 403, logged, naming
    `target` (the assignment's own id for an operation on one, as ARM's message does), raised as ArmRefusal.
    At the tenant root nobody here holds a role; a scope that does not exist yet is decided at its nearest
    existing ancestor (then the operation's own 404 follows)."""
    oid = claims["oid"]
    if not scope:
        decision = access.Decision(oid, action, "/", False)
    else:
        try:
            decision = access.check(ctx, oid, action, scope, data=False, context=context)
        except NotFoundError:
            decision = decide(ctx, oid, action, scope)
    if not decision.allowed:
        shown_scope = target or scope or "/"
        log(ctx, action, shown_scope, status="Failed", caller=oid, detail=f"403 {decision.reason()}")
        raise ArmRefusal(forbidden(oid, action, shown_scope))
    return decision


def _condition_context(source: str, role_guid: str, principal_id: str, principal_type: str | None) -> dict[str, Any]:
    """What a delegation condition may ask of a role assignment write (@Request) or delete (@Resource)."""
    values = {"RoleDefinitionId": role_guid, "PrincipalId": principal_id, "PrincipalType": principal_type}
    return {f"@{source}[{ATTRIBUTES[k]}]": v for k, v in values.items() if v}


def _action(kind: str, verb: str) -> str:
    return f"{PROVIDER}/{'roleAssignments' if kind == ASSIGNMENTS else 'roleDefinitions'}/{verb}"


# --- shapes ----------------------------------------------------------------------------------------------------


def _arm_time(moment: datetime | None) -> str | None:
    """A time as ARM's bodies carry it: 2023-08-23T12:47:46.5507039Z (seven decimals, UTC)."""
    if moment is None:
        return None
    moment = moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


ASSIGNMENT_PROPERTIES = ("roleDefinitionId", "principalId", "principalType", "scope", "condition", "conditionVersion",
                         "createdOn", "updatedOn", "createdBy", "updatedBy", "delegatedManagedIdentityResourceId", "description")


def _assignment(ctx: Ctx, ra: RoleAssignment, *, written: bool = False) -> dict[str, Any]:
    """ARM's roleAssignment (az's flattened view, unflattened): the answer to the PUT that made it leaves
    createdBy null, as ARM's does."""
    flat = assignments.view(ctx, ra, written=written)
    properties = {key: flat[key] for key in ASSIGNMENT_PROPERTIES}
    properties["createdOn"], properties["updatedOn"] = _arm_time(ra.created_at), _arm_time(ra.updated_at or ra.created_at)
    return {"properties": properties, "id": flat["id"], "type": flat["type"], "name": flat["name"]}


def _definition(ctx: Ctx, role: roles.RoleDefinition, scope: str) -> dict[str, Any]:
    """ARM's roleDefinition, its id under the subscription it was asked in (under the root when asked there).
    Built-in roles' creation times are not in mi's catalog: null."""
    parsed = ids.parse(scope) if scope else None
    flat = role.view(parsed.subscription if parsed else None)
    created = None
    if role.role_type == "CustomRole":
        row = ctx.session.get(CustomRole, role.guid)
        created = _arm_time(row.created_at) if row is not None else None
    properties = {"roleName": flat["roleName"], "type": flat["roleType"], "description": flat["description"],
                  "assignableScopes": flat["assignableScopes"], "permissions": flat["permissions"],
                  "createdOn": created, "updatedOn": created, "createdBy": None, "updatedBy": None}
    return {"properties": properties, "id": flat["id"], "type": flat["type"], "name": flat["name"]}


def _refused(exc: MiError) -> Response:
    if exc.code in STATUS_BY_CODE:
        return arm_error(STATUS_BY_CODE[exc.code], exc.code, exc.message)
    return from_mi_error(exc)


def _dashless(guid: str) -> str:
    return guid.replace("-", "")


# --- $filter ---------------------------------------------------------------------------------------------------

# OData terms as ARM takes them: name eq 'value' (a quote inside doubled), or a function call.
_TERM = re.compile(r"\s*(?:(?P<field>\w+)\s+eq\s+(?:'(?P<value>(?:[^']|'')*)'|(?P<bare>[\w-]+))"
                   r"|(?P<call>\w+)\(\s*(?:'(?P<arg>(?:[^']|'')*)')?\s*\))\s*", re.IGNORECASE)


def _terms(text: str) -> list[tuple[str, str | None]] | None:
    """`$filter` as (name, value) terms joined by `and`, names casefolded; None when it is not of that form."""
    terms, at = [], 0
    while True:
        m = _TERM.match(text, at)
        if m is None:
            return None
        if m.group("field"):
            value = m.group("value")
            terms.append((m.group("field").casefold(), m.group("bare") if value is None else value.replace("''", "'")))
        else:
            arg = m.group("arg")
            terms.append((m.group("call").casefold() + "()", None if arg is None else arg.replace("''", "'")))
        at = m.end()
        if at == len(text):
            return terms
        joined = re.compile(r"and\s+", re.IGNORECASE).match(text, at)
        if joined is None:
            return None
        at = joined.end()


# --- role assignments ------------------------------------------------------------------------------------------

# The filters ARM takes on a list of role assignments (role-assignments-list-rest.md); "atScope() and principalId
# eq" is not one of them ("cannot be used together (API limitation)", azure-cli role/custom.py).
ASSIGNMENT_FILTERS = {frozenset(), frozenset({"atscope()"}), frozenset({"principalid"}), frozenset({"assignedto()"}),
                      frozenset({"atscope()", "assignedto()"})}


def _assignment_here(ctx: Ctx, scope: str, name: str) -> RoleAssignment | None:
    """The assignment with this name, when it is at this scope (a name at another scope is not found here)."""
    ra = ctx.session.get(RoleAssignment, name.casefold())
    return ra if ra is not None and scope and ra.scope_key == ids.key(scope) else None


def _list_assignments(ctx: Ctx, claims: dict, scope: str, name: None, request: Request, body: dict) -> Response:
    """List For Scope: no filter = at, above and below the scope; atScope() = at and above; principalId eq and
    assignedTo() = one principal's at, above and below (mi has no groups, so assignedTo is principalId), and
    atScope() and assignedTo() both. The service refuses atScope() with principalId eq, as ARM does."""
    text = request.query_params.get("$filter", "").strip()
    terms = _terms(text) if text else []
    values = dict(terms or [])
    if terms is None or len(values) != len(terms) or frozenset(values) not in ASSIGNMENT_FILTERS \
            or values.get("atscope()") is not None or ("assignedto()" in values and not values["assignedto()"]):
        return arm_error(400, "UnsupportedQuery", UNSUPPORTED_FILTER.format(filter=shown(text, 300)))
    principal = values.get("principalid") or values.get("assignedto()")
    _require(ctx, claims, _action(ASSIGNMENTS, READ), scope)
    canonical = resolve_scope(ctx, scope).id if scope else None
    found = assignments.applying(ctx, canonical, principal_id=principal, at_scope="atscope()" in values)
    return AzureJSON({"value": [_assignment(ctx, ra) for ra in found]})


def _get_assignment(ctx: Ctx, claims: dict, scope: str, name: str, request: Request, body: dict) -> Response:
    if not is_guid(name):
        return arm_error(400, "InvalidRoleAssignmentId", INVALID_ASSIGNMENT_ID.format(name=shown(name)))
    _require(ctx, claims, _action(ASSIGNMENTS, READ), scope, target=f"{scope}/providers/{PROVIDER}/roleAssignments/{name}")
    ra = _assignment_here(ctx, scope, name)
    if ra is None:
        return arm_error(404, "RoleAssignmentNotFound", f"The role assignment '{shown(name)}' is not found.")
    return AzureJSON(_assignment(ctx, ra))


def _put_assignment(ctx: Ctx, claims: dict, scope: str, name: str, request: Request, body: dict) -> Response:
    """Create or update at `name` through assignments.put, the path of `mi role assignment create`: 201 with the
    new assignment; 200 with one updated at its own name; 409 RoleAssignmentExists when the principal has the
    role at the scope under another name (az answers it with the existing one)."""
    target = f"{scope}/providers/{PROVIDER}/roleAssignments/{name}"
    if not is_guid(name):
        return arm_error(400, "InvalidRoleAssignmentId", INVALID_ASSIGNMENT_ID.format(name=shown(name)))
    properties = body.get("properties")
    if not isinstance(properties, dict):
        return invalid_content("The 'properties' of a role assignment are required")
    role_id, principal_id = properties.get("roleDefinitionId"), properties.get("principalId")
    principal_type = properties.get("principalType")
    if not isinstance(principal_id, str) or not is_guid(principal_id.strip()):
        return arm_error(400, "InvalidPrincipalId", INVALID_PRINCIPAL_ID.format(principal=shown(principal_id or "")))
    role_guid = role_id.strip().rstrip("/").rsplit("/", 1)[-1].casefold() if isinstance(role_id, str) else ""
    if not is_guid(role_guid) or role_guid not in roles.by_guid(ctx):
        return arm_error(400, "RoleDefinitionDoesNotExist", ROLE_NOT_FOUND.format(guid=shown(_dashless(role_guid))))
    given_scope = properties.get("scope")
    if isinstance(given_scope, str) and given_scope.strip() and not ids.same(given_scope.strip().rstrip("/"), scope or "/"):
        return arm_error(400, "InvalidCreateRoleAssignmentRequest",
                         SCOPE_MISMATCH.format(name=shown(name), given=shown(given_scope, 300), uri=shown(scope or "/", 300)))
    texts = {k: properties.get(k) for k in ("principalType", "description", "condition", "conditionVersion")}
    wrong = next((k for k, v in texts.items() if v is not None and not isinstance(v, str)), None)
    if wrong:
        return invalid_content(f"The role assignment's '{wrong}' must be a string")
    principal_id = principal_id.strip().casefold()
    asked_type = principal_type or principals.principal_type(ctx, principal_id)
    _require(ctx, claims, _action(ASSIGNMENTS, WRITE), scope, target=target,
             context=_condition_context("Request", role_guid, principal_id, asked_type))
    if not scope:
        return arm_error(400, "InvalidScope", "Role assignments at the root scope '/' are not supported here.")
    ctx.caller = claims["oid"]  # the assignment and its log row are the caller's
    try:
        with ctx.session.begin_nested():  # a refused PUT leaves only its log row
            ra, outcome = assignments.put(
                ctx, principal_id, role_guid, scope, object_id=True, principal_type=principal_type, name=name,
                description=texts["description"], condition=texts["condition"] or None,
                condition_version=texts["conditionVersion"] or None)
    except MiError as exc:
        log(ctx, _action(ASSIGNMENTS, WRITE), target, status="Failed", caller=ctx.caller, detail=f"{exc.code}: {exc.message}")
        return _refused(exc)
    if outcome == "exists":
        message = ASSIGNMENT_EXISTS.format(guid=_dashless(ra.name))
        log(ctx, _action(ASSIGNMENTS, WRITE), target, status="Failed", caller=ctx.caller, detail=f"RoleAssignmentExists: {message}")
        return arm_error(409, "RoleAssignmentExists", message)
    return AzureJSON(_assignment(ctx, ra, written=outcome == "created"), status_code=201 if outcome == "created" else 200)


def _delete_assignment(ctx: Ctx, claims: dict, scope: str, name: str, request: Request, body: dict) -> Response:
    """Through assignments.delete, the path of `mi role assignment delete --ids`: 200 with the deleted assignment,
    204 when there is none of that name at the scope."""
    target = f"{scope}/providers/{PROVIDER}/roleAssignments/{name}"
    if not is_guid(name):
        return arm_error(400, "InvalidRoleAssignmentId", INVALID_ASSIGNMENT_ID.format(name=shown(name)))
    ra = _assignment_here(ctx, scope, name)
    context = None if ra is None else _condition_context("Resource", ra.role_definition_id, ra.principal_id, ra.principal_type)
    _require(ctx, claims, _action(ASSIGNMENTS, DELETE), scope, target=target, context=context)
    if ra is None:
        return Response(status_code=204)
    answer = _assignment(ctx, ra)
    ctx.caller = claims["oid"]
    assignments.delete(ctx, ids_=[assignments.assignment_id(ra)], sub_id=ra.subscription_id)
    return AzureJSON(answer)


# --- role definitions ------------------------------------------------------------------------------------------


def _applicable(role: roles.RoleDefinition, scope: str, below: bool) -> bool:
    """A role is listed at a scope when it is assignable there or above it (a built-in: everywhere); with
    atScopeAndBelow() also when it is assignable below it."""
    for assignable in role.assignable_scopes:
        if assignable == "/" or (scope and ids.is_within(scope, assignable)) or (below and (not scope or ids.is_within(assignable, scope))):
            return True
    return False


def _list_definitions(ctx: Ctx, claims: dict, scope: str, name: None, request: Request, body: dict) -> Response:
    """Role definitions applicable at the scope and above: $filter roleName eq '...' (any case, as ARM matched
    'reader' to Reader in az's recordings), type eq 'BuiltInRole'|'CustomRole', atScopeAndBelow()."""
    text = request.query_params.get("$filter", "").strip()
    terms = _terms(text) if text else []
    values = dict(terms or [])
    if terms is None or len(values) != len(terms) or not set(values) <= {"rolename", "type", "atscopeandbelow()"} \
            or values.get("atscopeandbelow()", None) is not None:
        return arm_error(400, "UnsupportedQuery", f"The filter '{shown(text, 300)}' is not supported.")
    if scope:
        _require(ctx, claims, _action(DEFINITIONS, READ), scope)
        scope = resolve_scope(ctx, scope).id
    below = "atscopeandbelow()" in values
    found = [r for r in roles.all_roles(ctx) if _applicable(r, scope, below)
             and ("rolename" not in values or ids.same(r.role_name, values["rolename"]))
             and ("type" not in values or ids.same(r.role_type, values["type"]))]
    return AzureJSON({"value": [_definition(ctx, r, scope) for r in found]})


def _get_definition(ctx: Ctx, claims: dict, scope: str, name: str, request: Request, body: dict) -> Response:
    """By GUID at a scope, or at the root (`/providers/Microsoft.Authorization/roleDefinitions/{guid}`), where
    every signed-in caller may read the roles."""
    if scope:
        _require(ctx, claims, _action(DEFINITIONS, READ), scope)
    role = roles.by_guid(ctx).get(name.casefold())
    if role is None:
        return arm_error(404, "RoleDefinitionDoesNotExist", ROLE_NOT_FOUND.format(guid=shown(_dashless(name))))
    return AzureJSON(_definition(ctx, role, scope))


def _put_definition(ctx: Ctx, claims: dict, scope: str, name: str, request: Request, body: dict) -> Response:
    """A custom role created (201) or updated (200) at its GUID through roles.create_custom / update_custom, the
    path of `mi role definition create|update`; roleDefinitions/write is needed at the scope and at each of its
    assignable scopes."""
    if not is_guid(name):
        return arm_error(400, "InvalidRoleDefinitionId", f"The role definition ID '{shown(name)}' is not valid. It must be a GUID.")
    properties = body.get("properties")
    if not isinstance(properties, dict):
        return invalid_content("The 'properties' of a role definition are required")
    action = _action(DEFINITIONS, WRITE)
    target = f"{scope}/providers/{PROVIDER}/roleDefinitions/{name}"
    assignable = properties.get("assignableScopes")
    for each in [scope, *(s for s in assignable if isinstance(s, str) and s.strip("/"))] if isinstance(assignable, list) else [scope]:
        _require(ctx, claims, action, each, target=target if each == scope else None)
    ctx.caller = claims["oid"]
    existing = roles.by_guid(ctx).get(name.casefold())
    try:
        with ctx.session.begin_nested():
            if existing is None:
                role = roles.create_custom(ctx, properties, role_id=name)
            else:
                role = roles.update_custom(ctx, properties, role_ref=name)
    except MiError as exc:
        log(ctx, action, target, status="Failed", caller=ctx.caller, detail=f"{exc.code}: {exc.message}")
        return _refused(exc)
    return AzureJSON(_definition(ctx, role, scope), status_code=201 if existing is None else 200)


def _delete_definition(ctx: Ctx, claims: dict, scope: str, name: str, request: Request, body: dict) -> Response:
    """Through roles.delete_custom: 200 with the deleted role, 204 when there is none; a built-in role, or one
    still assigned, is refused."""
    action = _action(DEFINITIONS, DELETE)
    target = f"{scope}/providers/{PROVIDER}/roleDefinitions/{name}"
    _require(ctx, claims, action, scope, target=target)
    existing = roles.by_guid(ctx).get(name.casefold()) if is_guid(name) else None
    if existing is None:
        return Response(status_code=204)
    answer = _definition(ctx, existing, scope)
    ctx.caller = claims["oid"]
    try:
        with ctx.session.begin_nested():
            roles.delete_custom(ctx, existing.guid)
    except MiError as exc:
        log(ctx, action, target, status="Failed", caller=ctx.caller, detail=f"{exc.code}: {exc.message}")
        return _refused(exc)
    return AzureJSON(answer)


Operation = Callable[[Ctx, dict, str, Any, Request, dict], Response]
_OPERATIONS: dict[tuple[str, str, bool], Operation] = {
    (ASSIGNMENTS, "GET", False): _list_assignments, (ASSIGNMENTS, "GET", True): _get_assignment,
    (ASSIGNMENTS, "PUT", True): _put_assignment, (ASSIGNMENTS, "DELETE", True): _delete_assignment,
    (DEFINITIONS, "GET", False): _list_definitions, (DEFINITIONS, "GET", True): _get_definition,
    (DEFINITIONS, "PUT", True): _put_definition, (DEFINITIONS, "DELETE", True): _delete_definition,
}
