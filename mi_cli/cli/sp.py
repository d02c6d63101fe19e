"""`mi sp`: the service principals behind managed identities (read-only, as in Azure)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from mi_cli.cli.options import OutputOpt, QueryOpt
from mi_cli.cli.runtime import emit, transaction

app = typer.Typer(
    help="Service principals behind the managed identities. They are created and deleted only with their identity.",
    no_args_is_help=True,
)


def _row(sp: dict) -> dict:
    return {"DisplayName": sp["displayName"], "Id": sp["id"], "AppId": sp["appId"],
            "Kind": "UserAssigned" if sp["alternativeNames"][0] == "isExplicit=True" else "SystemAssigned",
            "For": sp["alternativeNames"][1]}


@app.command("list")
def list_(
    display_name: Annotated[Optional[str], typer.Option("--display-name", help="Only principals with this display name.")] = None,
    output: OutputOpt = "table",
    query: QueryOpt = None,
) -> None:
    """List the service principals of the tenant's managed identities."""
    from mi_cli.services import principals, views

    with transaction(write=False) as ctx:
        data = [views.service_principal(sp) for sp in principals.list_all(ctx, display_name=display_name)]
    emit(data, output, query, _row, empty="No service principals found.")


@app.command("show")
def show(
    id_: Annotated[str, typer.Option("--id", help="Object id (principalId) or appId (clientId).")],
    output: OutputOpt = "table",
    query: QueryOpt = None,
) -> None:
    """Show a service principal."""
    from mi_cli.services import principals, views

    with transaction(write=False) as ctx:
        data = views.service_principal(principals.find(ctx, id_))
    emit(data, output, query, _row)
