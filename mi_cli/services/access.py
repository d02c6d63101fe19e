"""Access checks as Azure RBAC evaluates them: assignments at a scope and its ancestors; actions
and notActions for the control plane only, dataActions and notDataActions for data only."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from sqlmodel import select

from mi_cli import ids
from mi_cli.catalog import catalog
from mi_cli.errors import InvalidTokenError, ValidationError
from mi_cli.models import RoleAssignment
from mi_cli.services import Ctx, assignments, principals, roles, tokens
from mi_cli.services.operations import is_data_action, known_operation, providers
from mi_cli.services.scopes import resolve_scope


@lru_cache(maxsize=4096)
def _pattern(pattern: str) -> re.Pattern[str]:
    """'*' matches any run of characters, slashes included, and a '/*/' also matches a single '/':
    Managed Identity Operator's 'userAssignedIdentities/*/assign/action' is what grants
    'userAssignedIdentities/assign/action'. Matching ignores case."""
    parts = re.split(r"(/\*/|\*)", pattern)
    regex = "".join("/(?:.*/)?" if p == "/*/" else ".*" if p == "*" else re.escape(p) for p in parts)
    return re.compile(f"{regex}", re.IGNORECASE)


def matches(pattern: str, action: str) -> bool:
    return _pattern(pattern).fullmatch(action) is not None  # the whole name: no trailing newline slips through


def _first(patterns: tuple[str, ...], action: str) -> str | None:
    return next((p for p in patterns if matches(p, action)), None)


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

    def view(self) -> dict[str, Any]:
        return {"assignment": self.assignment, "role": self.role, "scope": self.scope, "inherited": self.inherited,
                "granted": self.granted, "matched": self.matched, "removedBy": self.removed_by, "note": self.note}


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
            s = granting[0]
            return (f"Allowed: '{s.role}' at {s.scope} grants the {plane} through '{s.matched}'"
                    + (" (inherited)." if s.inherited else "."))
        if not self.steps:
            return f"Denied: the principal has no role assignment at {self.scope} or above it."
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


def _evaluate_assignment(ra: RoleAssignment, role: roles.RoleDefinition | None, action: str, data: bool, scope: str) -> Step:
    step = Step(assignments.assignment_id(ra), role.role_name if role else f"(deleted role {ra.role_definition_id})", ra.scope,
                inherited=not ids.same(ra.scope, scope), granted=False)
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
            return step
        step.removed_by = removed
    if step.matched is None:
        other = next((p for perm in role.permissions for p in (perm.actions if data else perm.data_actions) if matches(p, action)), None)
        if other is not None:
            step.note = (f"'{role.role_name}' has '{other}' in its {'actions' if data else 'dataActions'}, which match the name, "
                         f"but {'actions only ever grant control-plane operations' if data else 'dataActions only ever grant data operations'}; "
                         f"'{action}' is a {'data' if data else 'control-plane'} action.")
    return step


def check(ctx: Ctx, principal_id: str, action: str, scope_ref: str, *, data: bool | None = None) -> Decision:
    scope = resolve_scope(ctx, scope_ref).id
    is_data = classify(action, data=data)
    decision = Decision(principal_id, action, scope, is_data)
    role_names = roles.by_guid(ctx)
    relevant = [ra for ra in assignments.for_principal(ctx, principal_id) if ids.is_within(scope, ra.scope)]
    for ra in sorted(relevant, key=lambda r: (len(r.scope), r.name)):
        decision.steps.append(_evaluate_assignment(ra, role_names.get(ra.role_definition_id), action, is_data, scope))
    return decision


ARM_AUDIENCE = "https://management.azure.com/"


def audience_for(action: str, data: bool) -> str:
    """The audience the service enforcing `action` checks in a bearer token: ARM for control-plane
    actions; for data actions, the data-plane audience the catalog lists for the provider's type
    (Key Vault https://vault.azure.net, Storage https://storage.azure.com/, ...)."""
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


def check_token(ctx: Ctx, token: str, action: str, scope_ref: str, *, data: bool | None = None) -> Decision:
    """What a service does with a bearer token: verify it (signature, expiry, its own audience),
    then evaluate for the token's oid."""
    is_data = classify(action, data=data)
    claims = tokens.verify(ctx, token.removeprefix("Bearer ").strip(), audience=audience_for(action, is_data))
    return check(ctx, claims["oid"], action, scope_ref, data=is_data)


def authorize(ctx: Ctx, authorization: str | None, action: str, scope_ref: str, *, data: bool | None = None,
              audiences: tuple[str, ...] | None = None) -> tuple[dict[str, Any], Decision]:
    """What a data plane does with a request: the bearer token of its Authorization header verified as
    the service checks it (signature, lifetime, issuer, the plane's audience), then RBAC for the
    operation's action at the exact scope. Returns the token's claims and the decision; a missing
    or bad token raises InvalidTokenError, whose `kind` the plane turns into its own 401.
    `audiences` are those the plane accepts when they are not the action's own (Storage checks
    container create, an action, on a storage token); `data` says which list grants the action
    when the operation catalog does not."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    if scheme.casefold() != "bearer" or not token.strip():
        raise InvalidTokenError("InvalidToken", "The request carries no bearer token.").failed("missing")
    is_data = classify(action, data=data)
    claims = tokens.verify(ctx, token.strip(), audience=audiences or audience_for(action, is_data))
    return claims, check(ctx, claims["oid"], action, scope_ref, data=is_data)


def who(ctx: Ctx, action: str, scope_ref: str, *, data: bool | None = None) -> list[dict[str, Any]]:
    """Every principal that may perform `action` at the scope, and through which assignment."""
    scope = resolve_scope(ctx, scope_ref).id
    is_data = classify(action, data=data)
    role_names = roles.by_guid(ctx)
    rows = []
    for ra in ctx.session.exec(select(RoleAssignment).order_by(RoleAssignment.scope_key)).all():
        if not ids.is_within(scope, ra.scope):
            continue
        step = _evaluate_assignment(ra, role_names.get(ra.role_definition_id), action, is_data, scope)
        if step.granted:
            sp = principals.get(ctx, ra.principal_id)
            rows.append({"principalId": ra.principal_id, "principalName": sp.display_name if sp else "",
                         "role": step.role, "scope": ra.scope, "matched": step.matched, "inherited": step.inherited,
                         "assignment": step.assignment})
    return rows


def effective(ctx: Ctx, principal_id: str) -> list[dict[str, Any]]:
    """A principal's permissions, scope by scope (each scope also covers everything below it)."""
    role_names = roles.by_guid(ctx)
    by_scope: dict[str, dict[str, Any]] = {}
    for ra in sorted(assignments.for_principal(ctx, principal_id), key=lambda r: r.scope_key):
        role = role_names.get(ra.role_definition_id)
        entry = by_scope.setdefault(ra.scope_key, {"scope": ra.scope, "roles": [], "actions": [], "notActions": [],
                                                   "dataActions": [], "notDataActions": []})
        entry["roles"].append(role.role_name if role else ra.role_definition_id)
        for perm in role.permissions if role else ():
            for key, values in perm.to_json().items():
                entry[key].extend(v for v in values if v not in entry[key])
    return list(by_scope.values())
