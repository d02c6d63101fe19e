"""`mi group`: resource groups."""

from __future__ import annotations

from typing import Annotated

import typer

from mi_cli.cli.options import ConfirmOpt, LocationOpt, OutputOpt, QueryOpt, SubscriptionOpt, TagsOpt
from mi_cli.cli.runtime import confirm, emit, transaction

app = typer.Typer(help="Resource groups.", no_args_is_help=True)
NameOpt = Annotated[str, typer.Option("--name", "-n", "--resource-group", "-g", help="Name of the resource group.")]


def _row(g: dict) -> dict:
    return {"Name": g["name"], "Location": g["location"], "Status": g["properties"]["provisioningState"]}


@app.command("create")
def create(
    name: NameOpt,
    location: LocationOpt = None,
    tags: TagsOpt = None,
    subscription: SubscriptionOpt = None,
    output: OutputOpt = "table",
    query: QueryOpt = None,
) -> None:
    """Create a resource group (running it again returns it, tags updated)."""
    from mi_cli.errors import UsageError
    from mi_cli.services import groups, views
    from mi_cli.services.validation import parse_tags

    if not location:
        raise UsageError("MissingArgument", "--location/-l is required to create a resource group.")
    with transaction(write=True) as ctx:
        data = views.group(groups.create(ctx, name, location, tags=parse_tags(tags), subscription=subscription))
    emit(data, output, query, _row)


@app.command("list")
def list_(subscription: SubscriptionOpt = None, output: OutputOpt = "table", query: QueryOpt = None) -> None:
    """List the resource groups of the subscription."""
    from mi_cli.services import groups, views

    with transaction(write=False) as ctx:
        data = [views.group(g) for g in groups.list_all(ctx, subscription=subscription)]
    emit(data, output, query, _row, empty="No resource groups found.")


@app.command("show")
def show(name: NameOpt, subscription: SubscriptionOpt = None, output: OutputOpt = "table", query: QueryOpt = None) -> None:
    """Show a resource group."""
    from mi_cli.services import groups, views

    with transaction(write=False) as ctx:
        data = views.group(groups.get(ctx, name, subscription=subscription))
    emit(data, output, query, _row)


@app.command("delete")
def delete(
    name: NameOpt, yes: ConfirmOpt = False, subscription: SubscriptionOpt = None,
    output: OutputOpt = "table", query: QueryOpt = None,  # accepted on every command, as az does; deletes print nothing
) -> None:
    """Delete a resource group and everything in it, in one transaction.

    Resources lose their system identities; user-assigned identities in the group are deleted,
    and references to them from resources elsewhere stay behind, dangling (a warning lists them).
    As az, it asks first: at a terminal, a question; without one, it refuses unless --yes is given.
    """
    from mi_cli.services import groups

    confirm(f"Delete resource group '{name}' and everything in it?", yes)
    with transaction(write=True) as ctx:
        groups.delete(ctx, name, subscription=subscription)
