"""`mi role`: role definitions (built-in and custom) and role assignments."""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from mi_cli.cli.options import OutputOpt, QueryOpt, SubscriptionOpt, YesOpt
from mi_cli.cli.runtime import confirm, emit, transaction
from mi_cli.errors import UsageError, ValidationError, conflict

app = typer.Typer(help="Azure RBAC: role definitions and role assignments.", no_args_is_help=True)
definition_app = typer.Typer(help="Role definitions: Azure's built-in roles and your custom ones.", no_args_is_help=True)
assignment_app = typer.Typer(help="Role assignments: a role for a principal at a scope.", no_args_is_help=True)
app.add_typer(definition_app, name="definition")
app.add_typer(assignment_app, name="assignment")

RoleOpt = Annotated[Optional[str], typer.Option("--role", help="Role name (e.g. 'Key Vault Secrets User') or GUID.")]
ScopeOpt = Annotated[Optional[str], typer.Option("--scope", help="Subscription, group or resource id (or a path below a resource).")]
AssigneeOpt = Annotated[Optional[str], typer.Option("--assignee", help="Principal id, client id, or a managed identity's name or id.")]
GroupOpt = Annotated[Optional[str], typer.Option("--resource-group", "-g", help="The group as the scope (instead of --scope).")]


def _def_row(r: dict) -> dict:
    perms = r["permissions"][0] if r["permissions"] else {}
    return {"Name": r["roleName"], "Type": r["roleType"], "Actions": len(perms.get("actions", [])),
            "DataActions": len(perms.get("dataActions", [])), "Id": r["name"]}


@definition_app.command("list")
def definition_list(
    name: Annotated[Optional[str], typer.Option("--name", "-n", help="Only the role with this name or GUID.")] = None,
    custom_role_only: Annotated[bool, typer.Option("--custom-role-only", help="Only custom roles.")] = False,
    subscription: SubscriptionOpt = None,
    output: OutputOpt = "table",
    query: QueryOpt = None,
) -> None:
    """List role definitions, built-in and custom."""
    from mi_cli.services import roles, tenancy

    with transaction(write=False) as ctx:
        sub = tenancy.find_subscription(ctx, subscription, create=False)
        found = [roles.find(ctx, name)] if name else roles.all_roles(ctx)
        data = [r.view(sub.id if sub else None) for r in found if not custom_role_only or r.role_type == "CustomRole"]
    emit(data, output, query, _def_row, empty="No role definitions found.")


@definition_app.command("show")
def definition_show(
    name: Annotated[str, typer.Option("--name", "-n", help="Role name or GUID.")],
    subscription: SubscriptionOpt = None,
    output: OutputOpt = "table",
    query: QueryOpt = None,
) -> None:
    """Show a role definition with its actions, notActions, dataActions and notDataActions."""
    from mi_cli.services import roles, tenancy

    with transaction(write=False) as ctx:
        sub = tenancy.find_subscription(ctx, subscription, create=False)
        data = roles.find(ctx, name).view(sub.id if sub else None)
    emit(data, output, query, _def_row)


def _read_document(text: str):  # noqa: ANN202
    """az's --role-definition: a JSON string, a file path, or @file."""
    raw = text[1:] if text.startswith("@") else text
    if text == "-":
        raw = sys.stdin.read()
    else:
        try:
            if Path(raw).is_file():
                raw = Path(raw).read_text()
        except (OSError, ValueError, UnicodeDecodeError):  # too long or not a path: it is the JSON itself
            pass
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValidationError("InvalidRoleDefinition", f"The role definition is not valid JSON: {exc.msg} (line {exc.lineno}).") from None


@definition_app.command("create")
def definition_create(
    role_definition: Annotated[str, typer.Option("--role-definition", help="JSON, or a file holding it (az's shape).")],
    subscription: SubscriptionOpt = None,
    output: OutputOpt = "table",
    query: QueryOpt = None,
) -> None:
    """Create a custom role from az's JSON: Name, Description, Actions, NotActions, DataActions,
    NotDataActions, AssignableScopes."""
    from mi_cli.services import roles, tenancy

    document = _read_document(role_definition)
    with transaction(write=True) as ctx:
        sub = tenancy.find_subscription(ctx, subscription)
        data = roles.create_custom(ctx, document).view(sub.id)
    emit(data, output, query, _def_row)


@definition_app.command("update")
def definition_update(
    role_definition: Annotated[str, typer.Option("--role-definition", help="JSON, or a file holding it (az's shape).")],
    subscription: SubscriptionOpt = None,
    output: OutputOpt = "table",
    query: QueryOpt = None,
) -> None:
    """Update a custom role from az's JSON (the role named by its Name, or by its id/name GUID):
    the same checks as create."""
    from mi_cli.services import roles, tenancy

    document = _read_document(role_definition)
    ref = None
    if isinstance(document, dict):
        lower = {k.casefold(): v for k, v in document.items()}
        ref = next((str(lower[k]) for k in ("id", "name") if roles._is_guid(str(lower.get(k, "")).rsplit("/", 1)[-1])), None)
    with transaction(write=True) as ctx:
        sub = tenancy.find_subscription(ctx, subscription)
        data = roles.update_custom(ctx, document, role_ref=ref).view(sub.id)
    emit(data, output, query, _def_row)


@definition_app.command("delete")
def definition_delete(
    name: Annotated[str, typer.Option("--name", "-n", help="Custom role name or GUID.")],
    yes: YesOpt = False,
    output: OutputOpt = "table",  # accepted on every command, as az does; deletes print nothing
    query: QueryOpt = None,
) -> None:
    """Delete a custom role (refused while assignments use it)."""
    from mi_cli.services import roles

    with transaction(write=True) as ctx:
        roles.delete_custom(ctx, name)


def _ra_row(r: dict) -> dict:
    # an orphan's principalName is "" in JSON (as az); people see the portal's words
    principal = r.get("principalName", r["principalId"]) or "Identity not found"
    return {"Principal": principal, "Role": r.get("roleDefinitionName", r["roleDefinitionId"].rsplit("/", 1)[-1]), "Scope": r["scope"]}


# az's --assignee-principal-type (role/_params.py): the API's types but Device, matched case-insensitively.
PrincipalType = Enum("PrincipalType", {t: t for t in ("User", "Group", "ServicePrincipal", "ForeignGroup")}, type=str)


@assignment_app.command("create")
def assignment_create(
    assignee: AssigneeOpt = None,
    role: RoleOpt = None,
    scope: ScopeOpt = None,
    group: GroupOpt = None,
    assignee_object_id: Annotated[Optional[str], typer.Option(
        "--assignee-object-id", help="The principal's object id, taken as is (no lookup by name), as az's.")] = None,
    assignee_principal_type: Annotated[Optional[PrincipalType], typer.Option(
        "--assignee-principal-type", case_sensitive=False,
        help="With --assignee-object-id: the principal's type (User, Group, ServicePrincipal or ForeignGroup), so "
             "that the directory is not asked.")] = None,
    description: Annotated[Optional[str], typer.Option("--description", help="Free text, up to 2,048 characters.")] = None,
    condition: Annotated[Optional[str], typer.Option(
        "--condition", help="Condition under which the principal is granted the permission (ABAC).")] = None,
    condition_version: Annotated[Optional[str], typer.Option(
        "--condition-version", help="Version of the condition syntax (default 2.0 when --condition is given).")] = None,
    name: Annotated[Optional[str], typer.Option("--name", "-n", help="A GUID for the assignment (default: a new one).")] = None,
    subscription: SubscriptionOpt = None,
    output: OutputOpt = "table",
    query: QueryOpt = None,
) -> None:
    """Grant a role to a principal at a scope. Granted already, it prints the existing assignment, as
    az does (with principalName and roleDefinitionName, as az's list shows them)."""
    from mi_cli.services import assignments, roles, scopes

    if not role:
        raise UsageError("MissingArgument", "the following arguments are required: --role")
    # az's checks (role/custom.py create_role_assignment): CLIErrors, exit 1
    if bool(assignee) == bool(assignee_object_id):
        raise ValidationError("InvalidArgument", "usage error: --assignee STRING | --assignee-object-id GUID")
    if assignee_principal_type and not assignee_object_id:
        raise ValidationError("InvalidArgument", "usage error: --assignee-object-id GUID --assignee-principal-type TYPE")
    if assignee_object_id and not assignee_principal_type:
        print("WARNING: RBAC service might reject creating role assignment without --assignee-principal-type in the "
              "future. Better to specify --assignee-principal-type manually.", file=sys.stderr)
    with transaction(write=True) as ctx:
        target = scopes.from_options(ctx, scope=scope, group=group, subscription=subscription, default_subscription=True)
        ra, outcome = assignments.put(
            ctx, assignee or assignee_object_id, role, target, description=description, condition=condition,
            condition_version=condition_version, name=name, object_id=bool(assignee_object_id),
            principal_type=assignee_principal_type and assignee_principal_type.value)
        existed = outcome == "exists"
        data = assignments.view(ctx, ra, fill_names=existed, written=not existed)
        role_name = roles.find(ctx, ra.role_definition_id).role_name
        listed = data if existed else assignments.view(ctx, ra, fill_names=True)
    # a new assignment's output names neither principal nor role; the table names both, as `list` does
    emit(data, output, query, lambda r: {**_ra_row({**r, "principalName": listed["principalName"]}), "Role": role_name})


@assignment_app.command("list")
def assignment_list(
    assignee: AssigneeOpt = None,
    role: RoleOpt = None,
    scope: ScopeOpt = None,
    group: GroupOpt = None,
    include_inherited: Annotated[bool, typer.Option("--include-inherited", help="Also assignments at the scope's ancestors.")] = False,
    all_: Annotated[bool, typer.Option("--all", help="Every assignment in the subscription, at any scope.")] = False,
    subscription: SubscriptionOpt = None,
    output: OutputOpt = "table",
    query: QueryOpt = None,
) -> None:
    """List role assignments, with principalName and roleDefinitionName. Without filters, as in az,
    only assignments made at the subscription itself; --all lists every scope."""
    from mi_cli.services import assignments, roles, scopes, tenancy

    if all_ and include_inherited:
        raise conflict("--include-inherited adds the assignments above --scope; --all lists every scope already: "
                       "drop one.")
    with transaction(write=False) as ctx:
        sub = tenancy.find_subscription(ctx, subscription, create=False)
        data = []
        if sub is not None:
            names = roles.by_guid(ctx)
            found = assignments.listing(ctx, sub_id=sub.id, assignee=assignee, role_ref=role,
                                        scope_ref=scopes.from_options(ctx, scope=scope, group=group, subscription=subscription),
                                        include_inherited=include_inherited, all_=all_)
            data = [assignments.view(ctx, ra, fill_names=True, role_names=names) for ra in found]
    emit(data, output, query, _ra_row, empty="No role assignments found.")


@assignment_app.command("delete")
def assignment_delete(
    ids_: Annotated[Optional[list[str]], typer.Option("--ids", help="Assignment ids (or names).")] = None,
    assignee: AssigneeOpt = None,
    role: RoleOpt = None,
    scope: ScopeOpt = None,
    group: GroupOpt = None,
    include_inherited: Annotated[bool, typer.Option("--include-inherited", help="Also assignments at the scope's ancestors.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="With no filter at all: delete every assignment made at the "
                                                             "subscription without asking.")] = False,
    subscription: SubscriptionOpt = None,
    output: OutputOpt = "table",  # accepted on every command, as az does; deletes print nothing
    query: QueryOpt = None,
) -> None:
    """Delete role assignments by id, or those that `list` shows for the same --assignee, --role and
    --scope (without --scope: the ones made at the subscription itself). Matching none is an error."""
    from mi_cli.services import assignments, scopes, tenancy

    others = [n for n, v in (("--assignee", assignee), ("--role", role), ("--scope", scope), ("--resource-group/-g", group),
                             ("--include-inherited", include_inherited)) if v]
    if ids_ and others:  # az's own check (role/custom.py delete_role_assignments), as a usage error naming them
        raise conflict(f"When assignment ids are used, other parameter values are not required: drop {', '.join(others)}.")
    if not (ids_ or assignee or role or scope or group):  # as az: every assignment of the subscription, after asking
        confirm("This will delete all role assignments under the subscription.", yes)
    with transaction(write=True) as ctx:
        sub = tenancy.find_subscription(ctx, subscription)
        if subscription:  # a full assignment id names its subscription: --subscription may only say the same
            from mi_cli.services.lookup import check_id_options

            for given in ids_ or []:
                parts = given.strip().split("/")
                if len(parts) > 2 and not parts[0] and parts[1].casefold() == "subscriptions":
                    check_id_options(ctx, f"/subscriptions/{parts[2]}", subscription=subscription, what="the assignment id")
        assignments.delete(ctx, ids_=ids_, assignee=assignee, role_ref=role, include_inherited=include_inherited,
                           scope_ref=scopes.from_options(ctx, scope=scope, group=group, subscription=subscription), sub_id=sub.id)
