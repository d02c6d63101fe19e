"""`mi resource`: the catalog of types, and resources that carry or receive identities."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from mi_cli.cli.options import LocationOpt, OutputOpt, QueryOpt, SubscriptionOpt, TagsOpt, YesOpt
from mi_cli.cli.runtime import emit, name_or_id, transaction

app = typer.Typer(help="Resources (VMs, web apps, vaults, ...) and the catalog of resource types.", no_args_is_help=True)
GroupOpt = Annotated[Optional[str], typer.Option("--resource-group", "-g", help="Name of the resource group.")]
TypeOpt = Annotated[Optional[str], typer.Option("--type", "-t", help="Resource type or alias (see 'mi resource types').")]


def _types_row(t: dict) -> dict:
    limit = t["userAssignedLimit"]
    return {
        "Type": t["type"],
        "Aliases": ", ".join(t["aliases"]),
        "SystemAssigned": "always" if t["systemAssignedAlwaysOn"] else ("yes" if t["systemAssigned"] else "-"),
        "UserAssigned": "yes" if t["userAssigned"] else "-",
        "UA limit": "" if not t["userAssigned"] else f"{limit}" + ("" if t["userAssignedLimitDocumented"] else " (sim)"),
        "Audience": t["audience"] or "",
    }


@app.command("types")
def types(
    filter_: Annotated[Optional[str], typer.Option("--filter", help="Only types or aliases containing TEXT.")] = None,
    output: OutputOpt = "table",
    query: QueryOpt = None,
) -> None:
    """The resource types mi knows, with the identities each supports.

    'UA limit' is the most user-assigned identities a resource of the type can hold; '(sim)' marks
    types for which Azure documents no number, where mi uses 100.
    """
    from mi_cli.catalog import catalog

    cat = catalog()
    wanted = (filter_ or "").casefold()
    data = [
        {
            "aliases": list(t.aliases),
            "audience": t.audience,
            "systemAssigned": t.system_assigned,
            "systemAssignedAlwaysOn": t.system_always_on,
            "type": t.type,
            "userAssigned": t.user_assigned,
            "userAssignedLimit": cat.user_assigned_limit(t) if t.user_assigned else None,
            "userAssignedLimitDocumented": t.user_assigned_limit is not None,
        }
        for t in cat.types
        if not wanted or wanted in t.type.casefold() or any(wanted in a for a in t.aliases)
    ]
    emit(data, output, query, _types_row, empty="No resource types found.")


def _row(r: dict) -> dict:
    identity = r["identity"] or {}
    return {
        "Name": r["name"],
        "ResourceGroup": r["resourceGroup"],
        "Location": r["location"],
        "Type": r["type"],
        "Identity": identity.get("type", "None"),
    }


@app.command("create")
def create(
    name: Annotated[str, typer.Option("--name", "-n", help="Name of the resource.")],
    type_: Annotated[str, typer.Option("--type", "-t", help="Resource type or alias, e.g. vm, webapp, keyvault.")],
    group: Annotated[str, typer.Option("--resource-group", "-g", help="Name of the resource group.")],
    location: LocationOpt = None,
    tags: TagsOpt = None,
    parent: Annotated[Optional[str], typer.Option("--parent", help="Parent resource name, for child types such as slots.")] = None,
    system_assigned: Annotated[bool, typer.Option("--system-assigned", help="Turn on its system-assigned identity.")] = False,
    user_assigned: Annotated[
        Optional[list[str]], typer.Option("--user-assigned", help="Space-separated user-assigned identities (names or ids) to attach.")
    ] = None,
    subscription: SubscriptionOpt = None,
    output: OutputOpt = "table",
    query: QueryOpt = None,
) -> None:
    """Create a resource. Running it again returns it with the same ids: tags are updated and the
    identities named are added (none is taken away; use 'mi identity remove' for that)."""
    from mi_cli.services import groups, resources, views
    from mi_cli.services.validation import parse_tags

    with transaction(write=True) as ctx:
        g = groups.get(ctx, group, subscription=subscription)
        res = resources.create(ctx, g, name, type_, location=location, tags=parse_tags(tags), parent=parent,
                               system_assigned=system_assigned, user_assigned=user_assigned or [])
        data = views.resource(ctx, res)
    emit(data, output, query, _row)


@app.command("list")
def list_(
    group: GroupOpt = None,
    type_: TypeOpt = None,
    subscription: SubscriptionOpt = None,
    output: OutputOpt = "table",
    query: QueryOpt = None,
) -> None:
    """List resources, in a group or in the whole subscription."""
    from mi_cli.services import groups, resources, tenancy, views

    with transaction(write=False) as ctx:
        if group:
            items = resources.list_all(ctx, group=groups.get(ctx, group, subscription=subscription), type_text=type_)
        else:
            sub = tenancy.find_subscription(ctx, subscription, create=False)
            items = resources.list_all(ctx, sub_id=sub.id, type_text=type_) if sub else []
        data = views.resources(ctx, items)
    emit(data, output, query, _row, empty="No resources found.")


@app.command("show")
def show(
    name: Annotated[Optional[str], typer.Option("--name", "-n", help="Name of the resource.")] = None,
    group: GroupOpt = None,
    type_: TypeOpt = None,
    ids_: Annotated[Optional[str], typer.Option("--ids", help="Full resource id (instead of -n/-g).")] = None,
    subscription: SubscriptionOpt = None,
    output: OutputOpt = "table",
    query: QueryOpt = None,
) -> None:
    """Show a resource with its identity block."""
    from mi_cli.services import lookup, views

    with transaction(write=False) as ctx:
        res = lookup.resource(ctx, name_or_id(name, ids_), group, subscription=subscription, type_text=type_)
        data = views.resource(ctx, res)
    emit(data, output, query, _row)


@app.command("delete")
def delete(
    name: Annotated[Optional[str], typer.Option("--name", "-n", help="Name of the resource.")] = None,
    group: GroupOpt = None,
    type_: TypeOpt = None,
    ids_: Annotated[Optional[str], typer.Option("--ids", help="Full resource id (instead of -n/-g).")] = None,
    yes: YesOpt = False,
    subscription: SubscriptionOpt = None,
    output: OutputOpt = "table",  # accepted on every command, as az does; deletes print nothing
    query: QueryOpt = None,
) -> None:
    """Delete a resource: its system identity and child resources go with it; user-assigned
    identities attached to it stay. Deleting what is already gone succeeds."""
    from mi_cli.services import lookup

    ref = name_or_id(name, ids_)
    with transaction(write=True) as ctx:
        lookup.delete_resource(ctx, ref, group, subscription=subscription, type_text=type_)
