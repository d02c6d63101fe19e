"""Options shared by many commands, defined once. Light: imported when `mi --help` runs."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Optional

import typer


class Output(str, Enum):
    table = "table"
    json = "json"
    jsonc = "jsonc"
    yaml = "yaml"
    tsv = "tsv"
    none = "none"


def _check_query(value: Optional[str]) -> Optional[str]:
    if value:
        from mi_cli.render import compile_query

        try:
            compile_query(value)
        except ValueError as exc:
            raise typer.BadParameter(str(exc).removeprefix("argument --query: ")) from None
    return value


OutputOpt = Annotated[
    Output,
    typer.Option(
        "--output", "-o", envvar="MI_OUTPUT", case_sensitive=False, show_default=True,
        help="Output format (default from MI_OUTPUT).",
    ),
]
QueryOpt = Annotated[
    Optional[str],
    typer.Option("--query", callback=_check_query, help="JMESPath query applied to the JSON form, as in az."),
]
GroupOpt = Annotated[str, typer.Option("--resource-group", "-g", help="Name of the resource group.")]
SubscriptionOpt = Annotated[
    Optional[str],
    typer.Option("--subscription", envvar="MI_SUBSCRIPTION", help="Subscription name or id (default: the default one)."),
]
TagsOpt = Annotated[
    Optional[list[str]],
    typer.Option("--tags", help="Space-separated tags: key[=value] ...; \"\" clears them."),
]
LocationOpt = Annotated[
    Optional[str], typer.Option("--location", "-l", help="Azure region, e.g. westeurope (default: the group's).")
]
YesOpt = Annotated[
    bool, typer.Option("--yes", "-y", help="Do not ask for confirmation (only 'group delete' asks, and only at a terminal).")
]
