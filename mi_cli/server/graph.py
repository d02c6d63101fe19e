"""Microsoft Graph (https://graph.microsoft.com/v1.0 through the local cloud), what az and the app-role flows call:
service principals by id and $filter, directoryObjects/getByIds, applications, appRoleAssignedTo and
appRoleAssignments, and /me. Parse the request, authorise it with services/apps, answer in Graph's shapes."""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime, timezone
from typing import Any, Callable
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mi_cli.errors import InvalidTokenError, MiError, NotFoundError, shown
from mi_cli.server.state import ServerState
from mi_cli.services import Ctx, apps, principals
from mi_cli.services.tenancy import default_tenant

ROOT = "https://graph.microsoft.com"
VERSIONS = ("v1.0", "beta")
# Graph's 401 texts by what failed in the token (the missing and audience ones as Graph answers them:
# microsoftgraph/microsoft-graph-docs#16208 for the audience)
UNAUTHENTICATED = {
    "missing": "Access token is empty.",
    "audience": "Access token validation failure. Invalid audience.",
    "expired": "Lifetime validation failed, the token is expired.",
}
UNAUTHENTICATED_OTHER = "Access token validation failure."
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/'
                                 f'authorize", client_id="{apps.GRAPH_APP_ID}"'}
ODATA_TYPES = {"servicePrincipal", "application", "user", "group", "directoryObjectPartnerReference", "device"}


class Problem(Exception):
    """A Graph error answer: status, code, message."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def _error(status: int, code: str, message: str, request_id: str | None = None, client_request_id: str | None = None,
           headers: dict[str, str] | None = None) -> Response:
    """Graph's error body: {"error": {"code", "message", "innerError": {"date", "request-id", "client-request-id"}}}."""
    request_id = request_id or str(uuid.uuid4())
    inner = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"), "request-id": request_id,
             "client-request-id": client_request_id or request_id}
    return JSONResponse({"error": {"code": code, "message": message, "innerError": inner}}, status_code=status,
                        headers={"request-id": request_id, "client-request-id": inner["client-request-id"], **(headers or {})})


def unavailable(message: str, status: int, headers: dict[str, str]) -> Response:
    code = {503: "serviceNotAvailable", 413: "requestTooLarge", 404: "Request_ResourceNotFound"}.get(status, "generalException")
    return _error(status, code, message, headers=headers)


def _segments(request: Request) -> list[str]:
    raw = request.scope.get("raw_path") or request.url.path.encode()
    return [unquote(p, errors="replace") for p in raw.decode("latin-1").partition("?")[0].split("/") if p]


# --- $filter: the clauses az and scripts send -------------------------------------------------------------

_QUOTED = r"'((?:[^']|'')*)'"
_CLAUSES: list[tuple[re.Pattern[str], Callable[..., Callable[[dict], bool]]]] = [
    (re.compile(rf"(\w+)/any\(\s*(\w+)\s*:\s*\2\s+eq\s+{_QUOTED}\s*\)", re.I),
     lambda prop, _var, value: lambda o: any(_same(v, value) for v in (o.get(prop) or []))),
    (re.compile(rf"startswith\(\s*(\w+)\s*,\s*{_QUOTED}\s*\)", re.I),
     lambda prop, value: lambda o: isinstance(o.get(prop), str) and o[prop].casefold().startswith(_unquote(value).casefold())),
    (re.compile(rf"(\w+)\s+eq\s+{_QUOTED}", re.I), lambda prop, value: lambda o: _same(o.get(prop), value)),
]


def _unquote(value: str) -> str:
    return value.replace("''", "'")


def _same(actual: Any, quoted: str) -> bool:
    return isinstance(actual, str) and actual.casefold() == _unquote(quoted).casefold()


def _split_and(text: str) -> list[str]:
    """The clauses of `a and b`, minding quoted strings."""
    parts, current, quoted = [], "", False
    i = 0
    while i < len(text):
        if text[i] == "'":
            quoted = not quoted
        if not quoted and text[i:i + 5].casefold() == " and ":
            parts.append(current)
            current, i = "", i + 5
            continue
        current += text[i]
        i += 1
    return [p.strip() for p in parts + [current]]


def parse_filter(text: str, entity: str, properties: set[str]) -> Callable[[dict], bool]:
    predicates = []
    clauses = _split_and(text)
    if not all(clauses):  # `and` with nothing on a side: Graph's syntax error, never a filter that keeps everything
        raise Problem(400, "BadRequest", f"Invalid filter clause: syntax error in '{shown(text)}'.")
    for clause in clauses:
        for pattern, build in _CLAUSES:
            match = pattern.fullmatch(clause)
            if match and match.group(1) in properties:
                predicates.append(build(*match.groups()))
                break
        else:
            prop = re.match(r"\w+", clause.split("(")[-1].strip())
            raise Problem(400, "Request_UnsupportedQuery", f"Unsupported or invalid query filter clause specified for "
                          f"property '{shown(prop.group() if prop else clause)}' of resource '{entity}'.")
    return lambda o: all(p(o) for p in predicates)


SP_PROPERTIES = {"servicePrincipalNames", "appId", "displayName", "id", "servicePrincipalType", "alternativeNames",
                 "appDisplayName"}
APP_PROPERTIES = {"appId", "displayName", "id", "identifierUris"}


def _listing(request: Request, items: list[dict], entity: str, properties: set[str], context: str) -> dict[str, Any]:
    query = request.query_params
    if query.get("$filter"):
        keep = parse_filter(query["$filter"], entity, properties)
        items = [o for o in items if keep(o)]
    top = query.get("$top")
    if top:
        if not re.fullmatch(r"[0-9]{1,4}", top) or not 1 <= int(top) <= 999:  # isdigit() takes '²', which int() refuses
            raise Problem(400, "Request_BadRequest", f"Invalid page size specified: '{shown(top)}'. Must be between 1 and 999 "
                          "inclusive.")
        items = items[: int(top)]
    # a collection of one type: its items without their @odata.type (getByIds, of many types, keeps them)
    return {"@odata.context": f"{ROOT}/v1.0/$metadata#{context}",
            "value": [{k: v for k, v in _select(request, o).items() if k != "@odata.type"} for o in items]}


def _select(request: Request, obj: dict) -> dict:
    fields = [f.strip() for f in request.query_params.get("$select", "").split(",") if f.strip()]
    return {k: v for k, v in obj.items() if k in fields or k == "@odata.type"} if fields else obj


def _entity(request: Request, obj: dict, context: str) -> dict:
    shown_obj = {k: v for k, v in _select(request, obj).items() if k != "@odata.type"}
    return {"@odata.context": f"{ROOT}/v1.0/$metadata#{context}/$entity", **shown_obj}


# --- the operations -------------------------------------------------------------------------------------------

def _key_segment(segment: str, collection: str) -> tuple[str, str] | None:
    """`servicePrincipals(appId='...')` -> ("appId", value); None for a plain segment."""
    match = re.fullmatch(rf"{collection}\(\s*(appId|id)\s*=\s*{_QUOTED}\s*\)", segment, re.I)
    return (match.group(1), _unquote(match.group(2))) if match else None


def _service_principal(ctx: Ctx, ref: str, by: str = "id") -> dict:
    if by.casefold() == "appid":
        found = next((o for o in apps.service_principals(ctx) if (o.get("appId") or "").casefold() == ref.casefold()), None)
    else:
        found = apps.service_principal_view(ctx, ref)
    if found is None:
        raise Problem(404, "Request_ResourceNotFound", f"Resource '{shown(ref)}' does not exist or one of its queried "
                      "reference-property objects are not present.")
    return found


def _application(ctx: Ctx, ref: str, by: str = "id") -> dict:
    found = next((a for a in apps.list_all(ctx) if (a.app_id if by.casefold() == "appid" else a.id) == ref.casefold()), None)
    if found is None:
        raise Problem(404, "Request_ResourceNotFound", f"Resource '{shown(ref)}' does not exist or one of its queried "
                      "reference-property objects are not present.")
    return apps.application_view(ctx, found)


def _signed_in_user(ctx: Ctx) -> dict | None:
    tenant = default_tenant(ctx, create=False)
    if tenant is None:
        return None
    return {"@odata.type": "#microsoft.graph.user", "businessPhones": [], "displayName": "mi user", "givenName": None,
            "id": principals.signed_in_user_id(tenant.id), "jobTitle": None, "mail": None, "mobilePhone": None,
            "officeLocation": None, "preferredLanguage": None, "surname": None,
            "userPrincipalName": principals.SIGNED_IN_USER_NAME}


def _get_by_ids(ctx: Ctx, body: Any) -> dict:
    """POST /directoryObjects/getByIds: the objects of the ids given (at most 1,000), of the types asked for."""
    if not isinstance(body, dict) or not isinstance(body.get("ids"), list) or not all(isinstance(i, str) for i in body["ids"]):
        raise Problem(400, "Request_BadRequest", "The request body must be an object with an 'ids' list of strings.")
    if len(body["ids"]) > 1000:
        raise Problem(400, "Request_BadRequest", "The 'ids' list holds at most 1000 ids.")
    types = body.get("types") or sorted(ODATA_TYPES)
    if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
        raise Problem(400, "Request_BadRequest", "The 'types' of the request body must be a list of strings.")
    wanted = {t.split(".")[-1].casefold() for t in types}
    unknown = [t for t in wanted if t not in {x.casefold() for x in ODATA_TYPES} and t != "directoryobject"]
    if unknown:
        raise Problem(400, "Request_BadRequest", f"Invalid type specified: '{shown(unknown[0])}'.")
    user = _signed_in_user(ctx)
    applications = {a.id: a for a in apps.list_all(ctx)} if wanted & {"application", "directoryobject"} else {}
    found = []
    for object_id in dict.fromkeys(i.strip().casefold() for i in body["ids"]):
        if wanted & {"serviceprincipal", "directoryobject"}:
            view = apps.service_principal_view(ctx, object_id)
            if view is not None:
                found.append(view)
                continue
        if wanted & {"application", "directoryobject"}:
            app = applications.get(object_id)
            if app is not None:
                found.append(apps.application_view(ctx, app))
                continue
        if wanted & {"user", "directoryobject"} and user is not None and user["id"] == object_id:
            found.append(user)
    return {"@odata.context": f"{ROOT}/v1.0/$metadata#directoryObjects", "value": found}


def _resource_of(ctx: Ctx, sp_id: str) -> apps.ResourcePrincipal:
    resource = apps.resource_by_sp_id(ctx, sp_id)
    if resource is None:
        if apps.principal_by_id(ctx, sp_id) is not None:  # a managed identity: it has no app roles
            return apps.ResourcePrincipal(sp_id, None, sp_id.casefold())
        raise Problem(404, "Request_ResourceNotFound", f"Resource '{shown(sp_id)}' does not exist or one of its queried "
                      "reference-property objects are not present.")
    return resource


def _assignment_body(body: Any) -> tuple[str, str, str]:
    if not isinstance(body, dict):
        raise Problem(400, "Request_BadRequest", "The request body must be an appRoleAssignment object.")
    values = []
    for prop in ("principalId", "resourceId", "appRoleId"):
        value = body.get(prop)
        if not isinstance(value, str) or not value.strip():
            raise Problem(400, "Request_BadRequest", f"Property '{prop}' of resource 'AppRoleAssignment' is required.")
        values.append(value.strip().casefold())
    return values[0], values[1], values[2]


def _assign(ctx: Ctx, principal_id: str, resource_id: str, role_id: str) -> dict:
    who = apps.principal_by_id(ctx, principal_id)
    if who is None:
        raise Problem(404, "Request_ResourceNotFound", f"Resource '{shown(principal_id)}' does not exist or one of its "
                      "queried reference-property objects are not present.")
    row = apps.assign_role(ctx, who, _resource_of(ctx, resource_id), role_id)
    return apps.assignment_view(ctx, row)


def _route(ctx: Ctx, request: Request, parts: list[str], body: Any) -> tuple[int, dict | None, bool]:
    """(status, body, whether it writes) of a request below the version segment."""
    method = request.method
    head = parts[0] if parts else ""
    rest = parts[1:]
    if head.casefold() == "me" and not rest and method == "GET":
        raise Problem(400, "BadRequest", "/me request is only valid with delegated authentication flow.")
    if head.casefold() == "directoryobjects" and [p.casefold() for p in rest] == ["getbyids"] and method == "POST":
        return 200, _get_by_ids(ctx, body), False
    if head.casefold() == "serviceprincipals" or _key_segment(head, "servicePrincipals"):
        keyed = _key_segment(head, "servicePrincipals")
        if keyed is None and not rest:
            if method == "GET":
                return 200, _listing(request, apps.service_principals(ctx), "ServicePrincipal", SP_PROPERTIES,
                                     "servicePrincipals"), False
            raise Problem(405, "Request_BadRequest", "Creating service principals is not supported by this tenant: "
                          "'mi app create' makes an application with its service principal.")
        by, ref = keyed if keyed else ("id", rest[0])
        rest = rest if keyed else rest[1:]
        sp = _service_principal(ctx, ref, by)
        if not rest and method == "GET":
            return 200, _entity(request, sp, "servicePrincipals"), False
        nav = rest[0].casefold() if rest else ""
        if nav == "approleassignedto":
            resource = _resource_of(ctx, sp["id"])
            if len(rest) == 1 and method == "GET":
                views = [apps.assignment_view(ctx, r) for r in apps.assignments_to(ctx, resource)]
                return 200, _listing(request, views, "AppRoleAssignment", {"principalId", "appRoleId", "principalDisplayName"},
                                     f"servicePrincipals('{sp['id']}')/appRoleAssignedTo"), False
            if len(rest) == 1 and method == "POST":
                principal_id, resource_id, role_id = _assignment_body(body)
                if resource_id != sp["id"]:
                    raise Problem(400, "Request_BadRequest", "The resourceId of the appRoleAssignment is not the service "
                                  "principal of the request's path.")
                return 201, _entity(request, _assign(ctx, principal_id, resource_id, role_id),
                                    f"servicePrincipals('{sp['id']}')/appRoleAssignedTo"), True
            if len(rest) == 2 and method == "DELETE":
                try:
                    apps.delete_assignment(ctx, resource, rest[1])
                except NotFoundError as exc:
                    raise Problem(404, exc.code, exc.message) from None
                return 204, None, True
        if nav == "approleassignments":
            if len(rest) == 1 and method == "GET":
                views = [apps.assignment_view(ctx, r) for r in apps.assignments_of(ctx, sp["id"])]
                return 200, _listing(request, views, "AppRoleAssignment", {"resourceId", "appRoleId", "resourceDisplayName"},
                                     f"servicePrincipals('{sp['id']}')/appRoleAssignments"), False
            if len(rest) == 1 and method == "POST":
                principal_id, resource_id, role_id = _assignment_body(body)
                if principal_id != sp["id"]:
                    raise Problem(400, "Request_BadRequest", "The principalId of the appRoleAssignment is not the service "
                                  "principal of the request's path.")
                return 201, _entity(request, _assign(ctx, principal_id, resource_id, role_id),
                                    f"servicePrincipals('{sp['id']}')/appRoleAssignments"), True
            if len(rest) == 2 and method == "DELETE":
                row = next((r for r in apps.assignments_of(ctx, sp["id"]) if r.id == rest[1]), None)
                if row is None:
                    raise Problem(404, "Request_ResourceNotFound", f"Resource '{shown(rest[1])}' does not exist or one of "
                                  "its queried reference-property objects are not present.")
                apps.delete_assignment(ctx, _resource_of(ctx, row.resource_id), row.id)
                return 204, None, True
    if head.casefold() == "applications" or _key_segment(head, "applications"):
        keyed = _key_segment(head, "applications")
        if keyed is None and not rest and method == "GET":
            views = [apps.application_view(ctx, a) for a in apps.list_all(ctx)]
            return 200, _listing(request, views, "Application", APP_PROPERTIES, "applications"), False
        if method == "GET" and (keyed and not rest or not keyed and len(rest) == 1):
            by, ref = keyed if keyed else ("id", rest[0])
            return 200, _entity(request, _application(ctx, ref, by), "applications"), False
    segment = next((p for p in [head, *rest] if p), head)
    raise Problem(400, "BadRequest", f"Resource not found for the segment '{shown(segment)}'.")


def _writes(method: str) -> bool:
    return method in ("POST", "PATCH", "PUT", "DELETE")


def handle(request: Request, state: ServerState) -> Response:
    """One Graph request (in a worker thread; the body read already): the bearer token verified, the operation's
    permission checked, then the operation. Refusals and changes are in the activity log."""
    parts = _segments(request)
    client_request_id = request.headers.get("client-request-id")
    request_id = str(uuid.uuid4())
    answer = lambda status, code, message, headers=None: _error(  # noqa: E731
        status, code, message, request_id, client_request_id, headers)
    if not parts or parts[0] not in VERSIONS:
        return answer(400, "BadRequest", f"Invalid version: {shown(parts[0]) if parts else ''}")
    raw = request.state.body
    body: Any = None
    if raw:
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):  # RecursionError: arrays or objects nested past the parser's depth
            return answer(400, "BadRequest", "Unable to read JSON request payload. Please ensure Content-Type header is set "
                          "and payload is of valid JSON format.")
    # getByIds is a POST that reads
    write = _writes(request.method) and [p.casefold() for p in parts[1:]] != ["directoryobjects", "getbyids"]
    with state.store.transaction(write=True) as session:
        ctx = Ctx.from_env(session)
        try:
            claims = apps.authorize_graph(ctx, request.headers.get("authorization"), write=write)
        except InvalidTokenError as exc:
            text = UNAUTHENTICATED.get(exc.kind, UNAUTHENTICATED_OTHER)
            ctx.log("Microsoft.Graph/request", request.url.path, status="Failed", caller="(no valid token)", detail=f"401 {text}")
            return answer(401, "InvalidAuthenticationToken", text, CHALLENGE)
        except apps.GraphError as exc:
            ctx.log("Microsoft.Graph/request", request.url.path, status="Failed", caller=getattr(exc, "caller", None),
                    detail=f"{exc.status} {exc.message}")
            return answer(exc.status, exc.code, exc.message)
        ctx.caller = claims["oid"]
        try:
            with ctx.session.begin_nested():  # a refused operation changes nothing
                status, data, _ = _route(ctx, request, parts[1:], body)
        except Problem as exc:
            return answer(exc.status, exc.code, exc.message, exc.headers)
        except apps.GraphError as exc:
            return answer(exc.status, exc.code, exc.message)
        except MiError as exc:
            return answer(400, "Request_BadRequest", exc.message)
    headers = {"request-id": request_id, "client-request-id": client_request_id or request_id}
    if data is None:
        return Response(status_code=status, headers=headers)
    return JSONResponse(data, status_code=status, headers={**headers, "OData-Version": "4.0"})
