"""Role definitions: Azure's built-in roles (package data) and custom roles, found by name or id."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from sqlmodel import select

from mi_cli import ids
from mi_cli.errors import ConflictError, ValidationError
from mi_cli.models import CustomRole, RoleAssignment
from mi_cli.services import Ctx
from mi_cli.services.operations import is_data_action, known_operation
from mi_cli.services.scopes import resolve_scope
from mi_cli.services.validation import no_control

ROLE_DEFINITION_TYPE = "Microsoft.Authorization/roleDefinitions"


@dataclass(frozen=True)
class Permission:
    actions: tuple[str, ...] = ()
    not_actions: tuple[str, ...] = ()
    data_actions: tuple[str, ...] = ()
    not_data_actions: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, p: dict[str, Any]) -> "Permission":
        get = lambda *keys: tuple(next((p[k] for k in keys if k in p), []) or [])  # noqa: E731
        return cls(get("actions", "Actions"), get("notActions", "NotActions"), get("dataActions", "DataActions"),
                   get("notDataActions", "NotDataActions"))

    def to_json(self) -> dict[str, list[str]]:
        return {"actions": list(self.actions), "notActions": list(self.not_actions),
                "dataActions": list(self.data_actions), "notDataActions": list(self.not_data_actions)}


@dataclass(frozen=True)
class RoleDefinition:
    guid: str
    role_name: str
    description: str
    role_type: str  # BuiltInRole | CustomRole
    permissions: tuple[Permission, ...]
    assignable_scopes: tuple[str, ...]

    def view(self, sub_id: str | None = None) -> dict[str, Any]:
        # az returns definitions under the subscription it was asked in
        prefix = f"/subscriptions/{sub_id}" if sub_id else ""
        return {
            "assignableScopes": list(self.assignable_scopes),
            "description": self.description,
            "id": f"{prefix}/providers/Microsoft.Authorization/roleDefinitions/{self.guid}",
            "name": self.guid,
            "permissions": [p.to_json() for p in self.permissions],
            "roleName": self.role_name,
            "roleType": self.role_type,
            "type": ROLE_DEFINITION_TYPE,
        }


@lru_cache(maxsize=1)
def builtins() -> tuple[RoleDefinition, ...]:
    data = json.loads(resources.files("mi_cli.catalog").joinpath("roles.json").read_text(encoding="utf-8"))
    return tuple(
        RoleDefinition(r["name"], r["roleName"], r["description"], r["roleType"],
                       tuple(Permission.from_json(p) for p in r["permissions"]), tuple(r["assignableScopes"]))
        for r in data
    )


def _custom(row: CustomRole) -> RoleDefinition:
    return RoleDefinition(row.id, row.role_name, row.description, "CustomRole",
                          tuple(Permission.from_json(p) for p in row.permissions), tuple(row.assignable_scopes))


def all_roles(ctx: Ctx) -> list[RoleDefinition]:
    custom = [_custom(r) for r in ctx.session.exec(select(CustomRole).order_by(CustomRole.name_key)).all()]
    return sorted([*builtins(), *custom], key=lambda r: r.role_name.casefold())


def find(ctx: Ctx, name_or_id: str) -> RoleDefinition:
    """By role name (case-insensitive), GUID, or full role definition id, as az takes --role."""
    wanted = ids.key(name_or_id.strip().rstrip("/"))
    guid = wanted.rsplit("/", 1)[-1] if "/roledefinitions/" in wanted else wanted
    matches = [r for r in all_roles(ctx) if r.guid == guid or ids.key(r.role_name) == wanted]
    if not matches:
        from mi_cli.services.next_steps import did_you_mean

        near = did_you_mean(name_or_id, [r.role_name for r in all_roles(ctx)])
        raise ValidationError("RoleDefinitionDoesNotExist", f"Role '{name_or_id}' doesn't exist.",
                              next_step=f"{near} See the roles with 'mi role definition list'.".strip())
    return matches[0]


def _check_permissions(perms: list[dict]) -> list[dict]:
    for block in perms:
        for key in ("actions", "notActions", "dataActions", "notDataActions"):
            for pattern in block.get(key, []):
                if not isinstance(pattern, str) or not pattern.strip() or " " in pattern.strip():
                    raise ValidationError("InvalidActionOrNotAction", f"'{pattern}' is not a valid permission pattern.")
                if "*" not in pattern and known_operation(pattern):
                    data = is_data_action(pattern)
                    if key.startswith(("data", "notData")) and data is False:
                        raise ValidationError("InvalidDataAction", f"'{pattern}' is a control-plane action, not a data action.")
                    if key in ("actions", "notActions") and data is True:
                        raise ValidationError("InvalidAction", f"'{pattern}' is a data action; list it under DataActions.")
    return perms


def _validated(ctx: Ctx, document: Any) -> tuple[str, str, list[dict], list[str]]:
    """az's role definition JSON checked as Azure checks it: (roleName, description, permissions,
    assignable scopes). The same checks guard a create and an update."""
    if not isinstance(document, dict):
        raise ValidationError("InvalidRoleDefinition", "The role definition must be a JSON object.")
    lower = {k.casefold(): v for k, v in document.items()}
    name = (lower.get("name") if not _is_guid(lower.get("name", "")) else None) or lower.get("rolename")
    if not isinstance(name, str) or not name.strip():
        raise ValidationError("InvalidRoleDefinition", "The role definition needs a Name (its roleName).")
    for key in ("permissions", "actions", "notactions", "dataactions", "notdataactions", "assignablescopes"):
        if key in lower and not isinstance(lower[key], list):
            raise ValidationError("InvalidRoleDefinition", f"'{key}' must be a list.")
    if "permissions" in lower:
        if not all(isinstance(p, dict) for p in lower["permissions"]):
            raise ValidationError("InvalidRoleDefinition", "Each entry of Permissions must be an object of Actions, NotActions, ...")
        perms = [Permission.from_json(p).to_json() for p in lower["permissions"]]
    else:
        perms = [Permission.from_json(document).to_json()]
    if not any(p["actions"] or p["dataActions"] for p in perms):
        raise ValidationError("InvalidRoleDefinition", "A role definition needs at least one Action or DataAction.")
    scopes = lower.get("assignablescopes") or []
    if not scopes:
        raise ValidationError("InvalidRoleDefinition", "A custom role needs AssignableScopes (subscriptions, groups or resources).")
    for scope in scopes:
        if not isinstance(scope, str):
            raise ValidationError("InvalidAssignableScope", f"'{scope}' is not a scope id.")
        if scope.strip() == "/":
            raise ValidationError("InvalidAssignableScope", "The root scope '/' is for built-in roles only.")
        resolve_scope(ctx, scope)
    _check_permissions(perms)
    description = str(lower.get("description") or "")
    no_control(name, what="role name", code="InvalidRoleDefinition")
    no_control(description, what="role description", code="InvalidRoleDefinition")
    return name.strip(), description, perms, [s.strip().rstrip("/") for s in scopes]


def create_custom(ctx: Ctx, document: dict[str, Any], *, role_id: str | None = None) -> RoleDefinition:
    """az's role definition JSON: Name, Description, Actions, NotActions, DataActions, NotDataActions,
    AssignableScopes (keys in either case); the scopes must exist."""
    name, description, perms, scopes = _validated(ctx, document)
    if any(ids.key(r.role_name) == ids.key(name) for r in builtins()):
        raise ConflictError("RoleDefinitionWithSameNameExists", f"A role definition named '{name}' already exists.")
    existing = ctx.session.exec(select(CustomRole).where(CustomRole.name_key == ids.key(name))).first()
    if existing is not None:
        raise ConflictError("RoleDefinitionWithSameNameExists", f"A role definition named '{name}' already exists.")
    if role_id and ctx.session.get(CustomRole, role_id.casefold()) is not None:
        raise ConflictError("RoleDefinitionWithSameNameExists", f"A role definition with id '{role_id}' already exists.")
    row = ctx.insert(CustomRole, {"id": (role_id or ctx.new_guid()).casefold(), "role_name": name, "name_key": ids.key(name),
                                  "description": description, "permissions": perms, "assignable_scopes": scopes,
                                  "created_at": ctx.now()})
    ctx.log(f"{ROLE_DEFINITION_TYPE}/write", f"/providers/Microsoft.Authorization/roleDefinitions/{row.id}")
    return _custom(row)


def update_custom(ctx: Ctx, document: dict[str, Any], *, role_ref: str | None = None) -> RoleDefinition:
    """`az role definition update`: the custom role named by the document (or `role_ref`) gets its
    permissions, scopes and description, checked as a create checks them. Unchanged: nothing logged."""
    name, description, perms, scopes = _validated(ctx, document)
    role = find(ctx, role_ref or name)
    if role.role_type == "BuiltInRole":
        raise ValidationError("RoleDefinitionIsBuiltIn", f"'{role.role_name}' is a built-in role and cannot be changed.")
    row = ctx.session.get(CustomRole, role.guid)
    if (row.role_name, row.description, row.permissions, row.assignable_scopes) != (name, description, perms, scopes):
        if ids.key(name) != row.name_key and any(ids.key(r.role_name) == ids.key(name) for r in all_roles(ctx)):
            raise ConflictError("RoleDefinitionWithSameNameExists", f"A role definition named '{name}' already exists.")
        row.role_name, row.name_key, row.description, row.permissions, row.assignable_scopes = \
            name, ids.key(name), description, perms, scopes
        ctx.session.add(row)
        ctx.session.flush()
        ctx.log(f"{ROLE_DEFINITION_TYPE}/write", f"/providers/Microsoft.Authorization/roleDefinitions/{row.id}")
    return _custom(row)


def _is_guid(text: str) -> bool:
    try:
        uuid.UUID(str(text))
        return True
    except ValueError:
        return False


def delete_custom(ctx: Ctx, name_or_id: str) -> RoleDefinition | None:
    """Idempotent for a role that is gone; refused for built-ins and for roles still assigned."""
    try:
        role = find(ctx, name_or_id)
    except ValidationError:
        return None
    if role.role_type == "BuiltInRole":
        raise ValidationError("RoleDefinitionIsBuiltIn", f"'{role.role_name}' is a built-in role and cannot be deleted.")
    used = ctx.session.exec(select(RoleAssignment).where(RoleAssignment.role_definition_id == role.guid)).first()
    if used is not None:
        raise ConflictError("RoleDefinitionHasAssignments",
                            "There are existing role assignments referencing role (code: RoleDefinitionHasAssignments).")
    ctx.session.delete(ctx.session.get(CustomRole, role.guid))
    ctx.session.flush()
    ctx.log(f"{ROLE_DEFINITION_TYPE}/delete", f"/providers/Microsoft.Authorization/roleDefinitions/{role.guid}")
    return role


def by_guid(ctx: Ctx) -> dict[str, RoleDefinition]:
    return {r.guid: r for r in all_roles(ctx)}


