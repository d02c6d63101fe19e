"""`mi access`: may this principal do that, there? And the reverse questions."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from mi_cli.cli.options import OutputOpt, QueryOpt
from mi_cli.cli.runtime import emit, transaction
from mi_cli.errors import ForbiddenError, MiError, UsageError

app = typer.Typer(help="Evaluate Azure RBAC: who may do what, where, and why.", no_args_is_help=True)

ActionOpt = Annotated[str, typer.Option("--action", help="An operation, e.g. Microsoft.KeyVault/vaults/secrets/getSecret/action.")]
ScopeOpt = Annotated[str, typer.Option("--scope", help="Where: a subscription, group or resource id (or a path below one).")]
DataOpt = Annotated[bool, typer.Option("--data-action", help="Treat the operation as a data action (for operations mi does not list).")]
ControlOpt = Annotated[bool, typer.Option("--control-action", help="Treat the operation as a control-plane action.")]
SubOperationOpt = Annotated[Optional[str], typer.Option(
    "--sub-operation", help="The request's sub-operation, for conditions, e.g. Blob.List.")]
AttributeOpt = Annotated[Optional[list[str]], typer.Option(
    "--attribute", help="A request attribute for conditions: '@Request[NAME]=VALUE' (repeatable).")]

def _plane(data: bool, control: bool) -> bool | None:
    if data and control:
        raise UsageError("MutuallyExclusiveArguments", "Give --data-action or --control-action, not both.")
    return True if data else False if control else None


def _context(sub_operation: str | None, attributes: list[str] | None) -> dict | None:
    """--sub-operation and --attribute as the request context of services/access: a NAME given several
    times has several values."""
    from mi_cli.errors import shown
    from mi_cli.services import conditions

    context: dict[str, list[str] | str] = {}
    for given in attributes or []:
        name, eq, value = given.partition("]=")
        if not eq or not name.lstrip().startswith("@"):
            raise UsageError("InvalidArgumentValue", f"--attribute takes '@Source[NAME]=VALUE', such as "
                             f"'@Request[Microsoft.Storage/storageAccounts/blobServices/containers/blobs:prefix]=logs/'; "
                             f"got '{shown(given)}'.")
        try:
            conditions.reference_key(name + "]")
        except MiError as exc:
            raise UsageError("InvalidArgumentValue", f"--attribute: {exc.message}") from None
        values = context.setdefault(name.strip() + "]", [])
        assert isinstance(values, list)
        values.append(value)
    if sub_operation is not None:
        context[conditions.SUB_OPERATION] = sub_operation
    return context or None


def _condition_cell(step: dict) -> str:
    if not step["condition"]:
        return ""
    return {True: "holds", False: "false"}.get(step["conditionMet"], "not evaluated")


def _trace_rows(decision: dict) -> list[dict]:
    conditional = any(s["condition"] for s in decision["trace"])  # the column only where a condition is
    return [{"Role": s["role"], "Scope": s["scope"] + (" (inherited)" if s["inherited"] else ""),
             "Matched": s["matched"] or "", "RemovedBy": s["removedBy"] or "",
             **({"Condition": _condition_cell(s)} if conditional else {}), "Grants": "yes" if s["granted"] else "no"}
            for s in decision["trace"]]


@app.command("check")
def check(
    action: ActionOpt,
    scope: ScopeOpt,
    principal: Annotated[Optional[str], typer.Option("--principal", help="Principal id, client id, or identity name or id.")] = None,
    token: Annotated[Optional[str], typer.Option("--token", help="A bearer token instead of --principal: verified first, then its oid.")] = None,
    data_action: DataOpt = False,
    control_action: ControlOpt = False,
    sub_operation: SubOperationOpt = None,
    attribute: AttributeOpt = None,
    require: Annotated[bool, typer.Option("--require", help="Exit 1 when access is denied (for CI gates).")] = False,
    output: OutputOpt = "table",
    query: QueryOpt = None,
) -> None:
    """Is the action allowed? Shows each assignment at the scope and above, the pattern that matched,
    what notActions removed, whether its condition holds, and whether the action is control plane or data
    plane. A condition sees the attributes the scope names (account, container, blob path); give the rest
    with --sub-operation and --attribute."""
    from mi_cli.services import access, assignments

    if bool(principal) == bool(token):
        raise UsageError("MissingArgument", "Give --principal or --token.")
    plane = _plane(data_action, control_action)
    context = _context(sub_operation, attribute)
    with transaction(write=False) as ctx:
        if token:
            decision = access.check_token(ctx, token, action, scope, data=plane, context=context).view()
        else:
            decision = access.check(ctx, assignments.resolve_principal(ctx, principal).id, action, scope, data=plane,
                                    context=context).view()
    emit(decision, output, query, view=_print_decision)
    if require and not decision["allowed"]:
        raise ForbiddenError("AuthorizationFailed", decision["reason"])


def _print_decision(decision: dict) -> None:
    from mi_cli.render import write_text

    write_text(decision["reason"])  # it quotes role names and scopes from the store: made inert there
    write_text(f"{decision['actionType']} {decision['action']} at {decision['scope']}")
    if decision["trace"]:
        from mi_cli.render import write_table

        print()
        write_table(_trace_rows(decision), sys.stdout)


@app.command("who")
def who(
    action: ActionOpt,
    scope: ScopeOpt,
    data_action: DataOpt = False,
    control_action: ControlOpt = False,
    sub_operation: SubOperationOpt = None,
    attribute: AttributeOpt = None,
    output: OutputOpt = "table",
    query: QueryOpt = None,
) -> None:
    """Which principals may perform the action at the scope, and through which assignment (a conditional
    one when its condition holds for the scope, --sub-operation and --attribute)."""
    from mi_cli.services import access

    context = _context(sub_operation, attribute)
    with transaction(write=False) as ctx:
        data = access.who(ctx, action, scope, data=_plane(data_action, control_action), context=context)
    conditional = any(r["condition"] for r in data)
    emit(data, output, query, lambda r: {"Principal": r["principalName"] or r["principalId"], "Role": r["role"],
                                         "Scope": r["scope"], "Matched": r["matched"],
                                         **({"Condition": _condition_cell(r)} if conditional else {})},
         empty="No principal may do that there.")


@app.command("list")
def list_(
    principal: Annotated[str, typer.Option("--principal", help="Principal id, client id, or identity name or id.")],
    output: OutputOpt = "table",
    query: QueryOpt = None,
) -> None:
    """A principal's effective permissions, scope by scope (each also covers what lies below it)."""
    from mi_cli.services import access, assignments

    with transaction(write=False) as ctx:
        data = access.effective(ctx, assignments.resolve_principal(ctx, principal).id)
    emit(data, output, query, lambda r: {"Scope": r["scope"], "Roles": ", ".join(_roles_cell(r)),
                                         "Actions": ", ".join(r["actions"]) or "-", "DataActions": ", ".join(r["dataActions"]) or "-"},
         empty="This principal has no role assignments.")


def _roles_cell(entry: dict) -> list[str]:
    conditional = [c["role"] for c in entry["conditions"]]
    shown_roles = []
    for role in entry["roles"]:
        if role in conditional:
            conditional.remove(role)
            role += " (conditional)"
        shown_roles.append(role)
    return shown_roles
