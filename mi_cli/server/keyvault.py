"""Key Vault's secrets data plane (https://NAME.vault.azure.net, in RBAC mode): parse the request, authorise it
with services/access, call services/keyvault, answer in Key Vault's shapes and status codes."""

from __future__ import annotations

import json
from typing import Any, Callable
from urllib.parse import unquote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from mi_cli import changes, ids
from mi_cli.errors import ConflictError, ForbiddenError, InvalidTokenError, MiError, NotFoundError, shown
from mi_cli.server import reads
from mi_cli.server.responses import AzureJSON
from mi_cli.server.state import ServerState
from mi_cli.services import Ctx, access, keyvault, tenancy

RESOURCE = "https://vault.azure.net"
MAX_BODY = 256 * 1024  # a secret is at most 25 KB; a request far bigger than that is refused unread
# Key Vault's answers to a missing or bad bearer token. AKV10000 and AKV10022 are Key Vault's texts (seen in
# azure-sdk-for-python#24557 and azure-docs#109562); the others keep that form for the check that failed.
UNAUTHENTICATED = {
    "missing": "AKV10000: Request is missing a Bearer or PoP token.",
    "audience": "AKV10022: Invalid audience. Expected {expected}, found: {found}.",
    "expired": "AKV10013: Token validation failed: the token has expired.",
    "not-yet-valid": "AKV10013: Token validation failed: the token is not yet valid.",
    "issuer": "AKV10032: Invalid issuer. Expected one of https://sts.windows.net/{tid}/, found: {found}.",
}
UNAUTHENTICATED_OTHER = "AKV10021: Token validation failed: the token's signature or key is not valid."
# Key Vault's 403 in RBAC mode (terraform-provider-azurerm#27817, Terraform_AKS#2: the message's lines
# and innererror ForbiddenByRbac)
NOT_AUTHORIZED = ("Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role "
                  "definitions were changed recently, please observe propagation time.\r\n"
                  "Caller: appid={appid};oid={oid};iss={iss}\r\nAction: '{action}'\r\nResource: '{resource}'\r\n"
                  "Assignment: (not found)\r\nDenyAssignmentId: null\r\nDecisionReason: 'DeniedWithNoValidRBAC' \r\n"
                  "Vault: {vault};location={location}\r\n")
STATUS = ((NotFoundError, 404), (ConflictError, 409), (ForbiddenError, 403))
# Operations that change nothing: answered from what the server read before while the store is unchanged
# (server/reads), their log rows written by the journal. Deleted secrets' answers depend on the day (purge dates):
# read each time.
READS = frozenset({"get_secret", "list_secrets", "list_versions"})


def _error(status: int, code: str, message: str, *, inner: str | None = None, headers: dict | None = None) -> Response:
    body: dict[str, Any] = {"error": {"code": code, "message": message}}
    if inner:
        body["error"]["innererror"] = {"code": inner}
    return AzureJSON(body, status_code=status, headers=headers)


def _challenge(tenant_id: str) -> dict[str, str]:
    return {"WWW-Authenticate": f'Bearer authorization="https://login.microsoftonline.com/{tenant_id}", resource="{RESOURCE}"'}


def _route(method: str, parts: list[str]) -> tuple[str, str | None, str | None] | None:
    """(operation, secret name, version) of a request path, as Key Vault's REST API lays them out."""
    if parts[:1] == ["secrets"]:
        if len(parts) == 1 and method == "GET":
            return "list_secrets", None, None
        if len(parts) == 2:
            return {"PUT": ("set_secret", parts[1], None), "GET": ("get_secret", parts[1], None),
                    "DELETE": ("delete_secret", parts[1], None), "PATCH": ("update_secret", parts[1], None)}.get(method)
        if len(parts) == 3 and parts[2] == "versions" and method == "GET":
            return "list_versions", parts[1], None
        if len(parts) == 3:
            return {"GET": ("get_secret", parts[1], parts[2]), "PATCH": ("update_secret", parts[1], parts[2])}.get(method)
    if parts[:1] == ["deletedsecrets"]:
        if len(parts) == 1 and method == "GET":
            return "list_deleted", None, None
        if len(parts) == 2:
            return {"GET": ("get_deleted", parts[1], None), "DELETE": ("purge", parts[1], None)}.get(method)
        if len(parts) == 3 and parts[2] == "recover" and method == "POST":
            return "recover", parts[1], None
    return None


def _call(ctx: Ctx, vault: Any, operation: str, name: str | None, version: str | None, body: dict[str, Any]) -> Any:
    """The service call of an operation, with the request body's fields as its arguments."""
    attributes = body.get("attributes") or {}
    if not isinstance(attributes, dict):
        raise keyvault.bad_parameter("The secret's attributes are an object (enabled, nbf, exp).")
    if operation == "set_secret":
        return keyvault.set_secret(ctx, vault, name, body.get("value"), content_type=body.get("contentType"),
                                   tags=body.get("tags"), enabled=attributes.get("enabled", True),
                                   not_before=attributes.get("nbf"), expires=attributes.get("exp"))
    if operation == "update_secret":
        given = {k: attributes[k] for k in ("nbf", "exp") if k in attributes}
        return keyvault.update_secret(ctx, vault, name, version, enabled=attributes.get("enabled"),
                                      content_type=body.get("contentType"), tags=body.get("tags"),
                                      **{"not_before" if k == "nbf" else "expires": v for k, v in given.items()})
    if operation == "get_secret":
        return keyvault.get_secret(ctx, vault, name, version)
    if operation in ("list_secrets", "list_deleted"):
        return {"value": getattr(keyvault, operation)(ctx, vault), "nextLink": None}
    if operation == "list_versions":
        return {"value": keyvault.list_versions(ctx, vault, name), "nextLink": None}
    return getattr(keyvault, operation)(ctx, vault, name)


def _body(raw: bytes) -> dict[str, Any] | Response:
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
        return _error(400, "BadParameter", "The request body is not valid JSON.")
    return body if isinstance(body, dict) else _error(400, "BadParameter", "The request body must be a JSON object.")


def _segments(request: Request) -> list[str]:
    """The path's segments, each percent-decoded on its own: an encoded slash (a%2Fb) stays inside its
    segment, as it does in Key Vault, rather than splitting a name from a version."""
    raw = request.scope.get("raw_path") or request.url.path.encode()
    return [unquote(p, errors="replace") for p in raw.decode("latin-1").partition("?")[0].split("/") if p]


async def handle(request: Request, state: ServerState) -> Response:
    """One Key Vault request (the body read already): the 401 challenge, token verification and RBAC for the
    operation's data action at the secret (or vault) scope, then the operation. Every request is in the activity
    log with its decision. A read is answered from memory while the store is unchanged (on the event loop when
    it can be); a change in a write transaction, in a worker thread."""
    vault_name = (request.url.hostname or "").split(".")[0]
    route = _route(request.method, _segments(request))
    if not request.query_params.get("api-version", "").strip():
        return _error(400, "BadParameter", "The request URI contains an invalid or unsupported api-version.")
    if route is None:
        return _error(405 if request.method not in ("GET", "DELETE") else 404, "BadParameter",
                      f"The operation {request.method} {shown(request.url.path)} is not supported by this vault.")
    raw = request.state.body
    if len(raw) > MAX_BODY:
        return _error(413, "RequestTooLarge", "The request body is too large.")
    body = _body(raw)
    if isinstance(body, Response):
        return body
    operation, name, version = route
    authorization = request.headers.get("authorization")
    if operation in READS:
        return await reads.answer(state, lambda ctx: _answer(ctx, vault_name, operation, name, version, body, authorization))
    return await run_in_threadpool(_written, state, vault_name, operation, name, version, body, authorization)


def _written(state: ServerState, *args: Any) -> Response:
    with state.store.transaction(write=True) as session:
        return _answer(Ctx.from_env(session), *args)


def unavailable(message: str, status: int, headers: dict[str, str]) -> Response:
    """A busy store (503, retry) or a failure, in Key Vault's error shape."""
    code = {503: "ServiceUnavailable", 413: "RequestTooLarge", 404: "NotFound"}.get(status, "InternalServerError")
    return _error(status, code, message, headers=headers)


def _answer(ctx: Ctx, vault_name: str, operation: str, name: str | None, version: str | None, body: dict[str, Any],
            authorization: str | None) -> Response:
    tenant = tenancy.default_tenant(ctx)
    try:
        vault = changes.remember(ctx, ("vault", ids.key(vault_name)), lambda: keyvault.vault(ctx, vault_name),
                                 errors=(NotFoundError,))
    except NotFoundError:
        return _error(404, "VaultNotFound", f"The vault '{shown(vault_name)}' does not exist.")
    action, scope = keyvault.authorization(vault, operation, name)
    log: Callable[..., None] = lambda status, caller, detail: ctx.log(  # noqa: E731
        f"{action}", scope, status=status, caller=caller, detail=detail)
    try:
        claims, decision = access.authorize(ctx, authorization, action, scope)
    except InvalidTokenError as exc:
        text = UNAUTHENTICATED.get(exc.kind, UNAUTHENTICATED_OTHER).format(
            expected=RESOURCE, found=shown(exc.found or ""), tid=tenant.id)
        log("Failed", "(no valid token)", f"401 {text}")
        return _error(401, "Unauthorized", text, headers=_challenge(tenant.id))
    if not decision.allowed:
        log("Failed", claims["oid"], f"403 {decision.reason()}")
        message = NOT_AUTHORIZED.format(appid=claims.get("appid", ""), oid=claims["oid"], iss=claims["iss"], action=action,
                                        resource=scope.casefold(), vault=vault.name, location=vault.location)
        return _error(403, "Forbidden", message, inner="ForbiddenByRbac")
    ctx.caller = claims["oid"]  # the changes the operation logs are the caller's, not the server account's
    try:
        if operation in READS:  # nothing to undo; kept until the store changes
            result = changes.remember(ctx, ("kv", vault.pk, operation, name, version),
                                      lambda: _call(ctx, vault, operation, name, version, body), errors=(MiError,))
        else:
            with ctx.session.begin_nested():  # a refused operation leaves only its log row
                result = _call(ctx, vault, operation, name, version, body)
    except MiError as exc:
        status = next((code for kind, code in STATUS if isinstance(exc, kind)), 400)
        log("Failed", claims["oid"], f"{status} {decision.reason()} {exc.code}: {exc.message}")
        return _error(status, exc.code, exc.message, inner=getattr(exc, "inner_code", None))
    log("Succeeded", claims["oid"], decision.reason())
    if result is None:
        return Response(status_code=204)
    return AzureJSON(result)
