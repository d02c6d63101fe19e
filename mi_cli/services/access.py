"""Access checks as Azure RBAC evaluates them: assignments at a scope and its ancestors; actions
and notActions for the control plane only, dataActions and notDataActions for data only; an assignment's
condition where Azure enforces one.

Conditions (Azure ABAC, services/conditions). A condition "filters down permissions granted as a part of the
role definition and role assignment" (conditions-overview.md): an assignment whose role grants the action
grants it only if its condition holds for the request. Azure enforces conditions on data actions (Blob and
Queue Storage, "conditions can be added to built-in or custom role assignments that have blob storage or queue
storage data actions") and, on the control plane, on the two actions of "Authorization actions and attributes"
(conditions-authorization-actions-attributes.md): Microsoft.Authorization/roleAssignments/write and /delete,
which a delegation condition constrains. For every other control-plane action the condition is not evaluated
and the role's actions grant as they would without it; the trace says so (conditionMet null).

A condition sees the request as `conditions.request` builds it: the attributes the scope names (account,
container, blob path, queue), @Environment[UtcNow], then what the caller passes as `context`, a mapping
{"subOperation": "Blob.List", "@Request[<attribute>]": "value" or ["values"], ...} (a plane knows the
sub-operation and the request's parameters; `mi access check` takes --sub-operation and --attribute)."""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable

from sqlmodel import select

from mi_cli import ids
from mi_cli.catalog import catalog
from mi_cli.errors import InvalidTokenError, MiError, ValidationError
from mi_cli.models import RoleAssignment
from mi_cli.services import Ctx, assignments, conditions, principals, roles, tokens
from mi_cli.services.conditions import action_matches as matches  # ActionMatches is the same rule (conditions.py)
from mi_cli.services.operations import is_data_action, known_operation, providers
from mi_cli.services.scopes import resolve_scope

Context = Mapping[str, Any]  # {"subOperation": ..., "@Request[...]": ...}: see the module's docstring
# The control-plane actions whose assignments' conditions Azure evaluates (role assignment delegation).
CONDITIONAL_ACTIONS = ("Microsoft.Authorization/roleAssignments/write", "Microsoft.Authorization/roleAssignments/delete")


def _first(patterns: tuple[str, ...], action: str) -> str | None:
    return next((p for p in patterns if matches(p, action)), None)


def condition_applies(action: str, data: bool) -> bool:
    """Whether Azure evaluates an assignment's condition for this action (see the module's docstring)."""
    return data or any(action.casefold() == a.casefold() for a in CONDITIONAL_ACTIONS)


@dataclass
class Step:
    """How one assignment answers the question."""

    assignment: str
    role: str
    scope: str
    inherited: bool
    granted: bool
    matched: str | None = None
    removed_by: str | None = None
    note: str | None = None
    condition: str | None = None  # the assignment's condition, as stored
    condition_met: bool | None = None  # None: not evaluated (no condition, no grant to filter, or not enforced here)
    condition_detail: str | None = None  # the fact that decided it

    def view(self) -> dict[str, Any]:
        return {"assignment": self.assignment, "role": self.role, "scope": self.scope, "inherited": self.inherited,
                "granted": self.granted, "matched": self.matched, "removedBy": self.removed_by, "note": self.note,
                "condition": self.condition, "conditionMet": self.condition_met, "conditionDetail": self.condition_detail}


@dataclass
class Decision:
    principal_id: str
    action: str
    scope: str
    data_action: bool
    steps: list[Step] = field(default_factory=list)

    @property
    def allowed(self) -> bool:
        return any(s.granted for s in self.steps)

    def view(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "actionType": "DataAction" if self.data_action else "Action",
            "allowed": self.allowed,
            "principalId": self.principal_id,
            "reason": self.reason(),
            "scope": self.scope,
            "trace": [s.view() for s in self.steps],
        }

    def reason(self) -> str:
        plane = "data action" if self.data_action else "control-plane action"
        granting = [s for s in self.steps if s.granted]
        if granting:
            s = next((g for g in granting if g.condition_met is None), granting[0])  # an unconditional grant first
            return (f"Allowed: '{s.role}' at {s.scope} grants the {plane} through '{s.matched}'"
                    + (" (inherited)" if s.inherited else "")
                    + (f", and its condition holds: {s.condition_detail}." if s.condition_met else "."))
        if not self.steps:
            return f"Denied: the principal has no role assignment at {self.scope} or above it."
        conditional = [s for s in self.steps if s.condition_met is False]
        if conditional:
            s = conditional[0]
            return (f"Denied: '{s.role}' at {s.scope} grants the {plane} through '{s.matched}', but its condition is "
                    f"false for this request: {s.condition_detail}.")
        removed = [s for s in self.steps if s.removed_by]
        if removed:
            s = removed[0]
            kind = "notDataActions" if self.data_action else "notActions"
            return f"Denied: '{s.role}' matches '{s.matched}' but its {kind} '{s.removed_by}' takes it away."
        other_plane = [s for s in self.steps if s.note]
        if other_plane:
            return f"Denied: {other_plane[0].note}"
        return f"Denied: none of the {len(self.steps)} assignment(s) at or above this scope grants the {plane}."


def classify(action: str, *, data: bool | None = None) -> bool:
    """Whether `action` is a data action: from the flags, else from the providers' operation lists."""
    if data is not None:
        return data
    found = is_data_action(action)
    if found is not None:
        return found
    if known_operation(action):
        raise ValidationError("AmbiguousOperation", f"'{action}' is both a control-plane and a data operation; pass --data-action or --control-action.")
    raise ValidationError(
        "UnknownOperation",
        f"'{action}' is not in the operation lists mi ships ({', '.join(providers())}); pass --data-action or "
        "--control-action to say which plane it belongs to.",
    )


def _evaluate_assignment(ra: RoleAssignment, role: roles.RoleDefinition | None, action: str, data: bool, scope: str,
                         request: conditions.Request | None = None) -> Step:
    step = Step(assignments.assignment_id(ra), role.role_name if role else f"(deleted role {ra.role_definition_id})", ra.scope,
                inherited=not ids.same(ra.scope, scope), granted=False, condition=ra.condition)
    if role is None:
        return step
    for perm in role.permissions:
        grants = perm.data_actions if data else perm.actions
        denies = perm.not_data_actions if data else perm.not_actions
        matched = _first(grants, action)
        if matched is None:
            continue
        step.matched = matched
        removed = _first(denies, action)
        if removed is None:
            step.granted, step.removed_by = True, None
            break
        step.removed_by = removed
    if step.granted:
        if ra.condition and condition_applies(action, data):
            outcome = conditions.evaluate(ra.condition, request or conditions.request(action, scope))
            step.granted, step.condition_met, step.condition_detail = outcome.holds, outcome.holds, outcome.detail
        return step
    if step.matched is None:
        other = next((p for perm in role.permissions for p in (perm.actions if data else perm.data_actions) if matches(p, action)), None)
        if other is not None:
            step.note = (f"'{role.role_name}' has '{other}' in its {'actions' if data else 'dataActions'}, which match the name, "
                         f"but {'actions only ever grant control-plane operations' if data else 'dataActions only ever grant data operations'}; "
                         f"'{action}' is a {'data' if data else 'control-plane'} action.")
    return step


def _assignments_at(ctx: Ctx, principal_id: str, scope_ref: str) -> tuple[str, tuple[tuple[RoleAssignment, Any], ...]]:
    """The scope `scope_ref` names, and the principal's assignments at it or above it with their roles, nearest
    last: everything check() reads from the store."""
    scope = resolve_scope(ctx, scope_ref).id
    role_names = roles.by_guid(ctx)
    relevant = [ra for ra in assignments.for_principal(ctx, principal_id) if ids.is_within(scope, ra.scope)]
    return scope, tuple((ra, role_names.get(ra.role_definition_id)) for ra in sorted(relevant, key=lambda r: (len(r.scope), r.name)))


def check(ctx: Ctx, principal_id: str, action: str, scope_ref: str, *, data: bool | None = None,
          context: Context | None = None) -> Decision:
    """Whether the principal may perform `action` at the scope, with each assignment's part in the answer.
    `context` is what a condition may ask about the request beyond its scope (the module's docstring).
    A server keeps what this reads (the scope, the assignments, their roles) until the store changes; the
    decision itself is made anew every time, so that a condition on the time holds when it is asked."""
    from mi_cli import changes

    scope, relevant = changes.remember(ctx, ("rbac", principal_id, scope_ref),
                                       lambda: _assignments_at(ctx, principal_id, scope_ref), errors=(MiError,))
    is_data = classify(action, data=data)
    decision = Decision(principal_id, action, scope, is_data)
    # the request a condition sees, made when one is evaluated (a context given is checked at once)
    request = conditions.request(action, scope, context, now=ctx.now()) if context else None
    for ra, role in relevant:
        if ra.condition:
            changes.volatile(ctx)  # the answer depends on the request's time (@Environment[UtcNow])
            if request is None:
                request = conditions.request(action, scope, context, now=ctx.now())
        decision.steps.append(_evaluate_assignment(ra, role, action, is_data, scope, request))
    return decision


ARM_AUDIENCE = "https://management.azure.com/"


@functools.lru_cache(maxsize=1024)
def audience_for(action: str, data: bool) -> str:
    """The audience the service enforcing `action` checks in a bearer token: ARM for control-plane
    actions; for data actions, the data-plane audience the catalog lists for the provider's type
    (Key Vault https://vault.azure.net, Storage https://storage.azure.com/, ...). Kept per action: the catalog
    is the package's own data, and looking a type up that is not one costs its suggestions (milliseconds)."""
    if not data:
        return ARM_AUDIENCE
    parts = action.split("/")
    for end in range(len(parts) - 1, 1, -1):  # the longest type the action's path starts with
        try:
            audience = catalog().get("/".join(parts[:end])).audience
        except ValidationError:
            continue
        if audience:
            return audience
    raise ValidationError("UnknownAudience", f"mi knows no data-plane audience for '{action}'; use --principal instead of --token.")


def check_token(ctx: Ctx, token: str, action: str, scope_ref: str, *, data: bool | None = None,
                context: Context | None = None) -> Decision:
    """What a service does with a bearer token: verify it (signature, expiry, its own audience),
    then evaluate for the token's oid."""
    is_data = classify(action, data=data)
    claims = tokens.verify(ctx, token.removeprefix("Bearer ").strip(), audience=audience_for(action, is_data))
    return check(ctx, claims["oid"], action, scope_ref, data=is_data, context=context)


def authorize(ctx: Ctx, authorization: str | None, action: str, scope_ref: str, *, data: bool | None = None,
              audiences: tuple[str, ...] | None = None, context: Context | None = None) -> tuple[dict[str, Any], Decision]:
    """What a data plane does with a request: the bearer token of its Authorization header verified as
    the service checks it (signature, lifetime, issuer, the plane's audience), then RBAC for the
    operation's action at the exact scope. Returns the token's claims and the decision; a missing
    or bad token raises InvalidTokenError, whose `kind` the plane turns into its own 401.
    `audiences` are those the plane accepts when they are not the action's own (Storage checks
    container create, an action, on a storage token); `data` says which list grants the action
    when the operation catalog does not; `context` is what a condition may ask about the request
    beyond its scope: {"subOperation": "Blob.List", "@Request[...blobs:prefix]": "logs/"}."""
    is_data = classify(action, data=data)
    claims = authenticate(ctx, authorization, audiences or (audience_for(action, is_data),))
    return claims, check(ctx, claims["oid"], action, scope_ref, data=is_data, context=context)


def check_groups(ctx: Ctx, principal_id: str, groups: list[tuple[tuple[str, ...], str, Context | None]], *,
                 data: Callable[[str], bool] | None = None) -> tuple[list[Decision], Decision | None]:
    """A request that needs several permissions, as Storage checks some: each group (permissions, scope,
    context) is granted when any one of its permissions is. Returns the granting decisions and the first
    refused group's decision for its first permission (None when every group is granted). `data` says
    which list grants a permission when the operation catalog does not."""
    granted = []
    for permissions, scope, context in groups:
        decisions = []
        for permission in permissions:
            decision = check(ctx, principal_id, permission, scope, data=data(permission) if data else None, context=context)
            decisions.append(decision)
            if decision.allowed:
                granted.append(decision)
                break
        else:
            return granted, decisions[0]
    return granted, None


def authenticate(ctx: Ctx, authorization: str | None, audiences: tuple[str, ...]) -> dict[str, Any]:
    """The claims of the bearer token in an Authorization header, verified as a service verifies it
    (signature, lifetime, issuer, one of `audiences`): the first half of authorize(), for a plane whose
    request needs several permissions checked (check() each). A server keeps a token's verified claims until
    the store changes (its keys may have), and checks their lifetime against the clock on every request."""
    from mi_cli import changes

    scheme, _, token = (authorization or "").strip().partition(" ")
    if scheme.casefold() != "bearer" or not token.strip():
        raise InvalidTokenError("InvalidToken", "The request carries no bearer token.").failed("missing")
    token = token.strip()
    memo = changes.shared(ctx)
    if memo is None:
        return tokens.verify(ctx, token, audience=audiences)
    key = ("claims", token, audiences)
    claims = memo.get(key)
    if claims is None or not _current(claims):
        claims = memo[key] = tokens.verify(ctx, token, audience=audiences)
    return dict(claims)


def _current(claims: dict[str, Any]) -> bool:
    """Whether verified claims are within their lifetime now, as PyJWT checks it (leeway 0)."""
    now = time.time()
    return claims["nbf"] <= now < claims["exp"] and claims["iat"] <= now


def who(ctx: Ctx, action: str, scope_ref: str, *, data: bool | None = None,
        context: Context | None = None) -> list[dict[str, Any]]:
    """Every principal that may perform `action` at the scope, and through which assignment. A conditional
    grant is listed when its condition holds for the scope and `context`, and shows its condition."""
    scope = resolve_scope(ctx, scope_ref).id
    is_data = classify(action, data=data)
    request = conditions.request(action, scope, context, now=ctx.now())
    role_names = roles.by_guid(ctx)
    rows = []
    for ra in ctx.session.exec(select(RoleAssignment).order_by(RoleAssignment.scope_key)).all():
        if not ids.is_within(scope, ra.scope):
            continue
        step = _evaluate_assignment(ra, role_names.get(ra.role_definition_id), action, is_data, scope, request)
        if step.granted:
            sp = principals.get(ctx, ra.principal_id)
            rows.append({"principalId": ra.principal_id, "principalName": sp.display_name if sp else "",
                         "role": step.role, "scope": ra.scope, "matched": step.matched, "inherited": step.inherited,
                         "assignment": step.assignment, "condition": step.condition, "conditionMet": step.condition_met})
    return rows


def effective(ctx: Ctx, principal_id: str) -> list[dict[str, Any]]:
    """A principal's permissions, scope by scope (each scope also covers everything below it). A role
    assigned with a condition is listed in `conditions` too: its permissions hold only where the condition
    does (for the actions Azure enforces conditions on)."""
    role_names = roles.by_guid(ctx)
    by_scope: dict[str, dict[str, Any]] = {}
    for ra in sorted(assignments.for_principal(ctx, principal_id), key=lambda r: r.scope_key):
        role = role_names.get(ra.role_definition_id)
        entry = by_scope.setdefault(ra.scope_key, {"scope": ra.scope, "roles": [], "conditions": [], "actions": [],
                                                   "notActions": [], "dataActions": [], "notDataActions": []})
        entry["roles"].append(role.role_name if role else ra.role_definition_id)
        if ra.condition:
            entry["conditions"].append({"role": entry["roles"][-1], "condition": ra.condition})
        for perm in role.permissions if role else ():
            for key, values in perm.to_json().items():
                entry[key].extend(v for v in values if v not in entry[key])
    return list(by_scope.values())
