"""`mi account` and `mi subscription`: the simulated tenant and its subscriptions."""

from __future__ import annotations

from typing import Annotated

import typer

from mi_cli.cli.options import OutputOpt, QueryOpt
from mi_cli.cli.runtime import emit, transaction

app = typer.Typer(help="The simulated tenant and the default subscription.", no_args_is_help=True)
subscription_app = typer.Typer(help="Subscriptions of the simulated tenant.", no_args_is_help=True)


@app.command("show")
def show(output: OutputOpt = "table", query: QueryOpt = None) -> None:
    """Show the tenant and the default subscription (both are created on first use)."""
    from mi_cli.services import tenancy, views

    with transaction(write=True) as ctx:
        sub = tenancy.default_subscription(ctx)
        data = views.account(sub, tenancy.default_tenant(ctx))
    emit(data, output, query)


def _sub_row(s: dict) -> dict:
    return {"Name": s["name"], "SubscriptionId": s["subscriptionId"], "TenantId": s["tenantId"], "IsDefault": s["isDefault"]}


@subscription_app.command("create")
def create(
    name: Annotated[str, typer.Option("--name", "-n", help="Display name of the subscription.")],
    default: Annotated[bool, typer.Option("--default", help="Make it the default subscription.")] = False,
    output: OutputOpt = "table",
    query: QueryOpt = None,
) -> None:
    """Create a subscription in the tenant (running it again returns the same one)."""
    from mi_cli.services import tenancy, views

    with transaction(write=True) as ctx:
        data = views.subscription(tenancy.create_subscription(ctx, name, make_default=default))
    emit(data, output, query, _sub_row)


@subscription_app.command("list")
def list_(output: OutputOpt = "table", query: QueryOpt = None) -> None:
    """List the subscriptions."""
    from mi_cli.services import tenancy, views

    with transaction(write=False) as ctx:
        data = [views.subscription(s) for s in tenancy.list_subscriptions(ctx)]
    emit(data, output, query, _sub_row)
