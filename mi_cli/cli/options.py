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


def _default_output(ctx: typer.Context, value: Output) -> Output:
    """az's default is JSON; people at a terminal read tables. So: -o, else MI_OUTPUT, else a table
    when stdout is a terminal and JSON when it is not (`x=$(mi ... --query clientId)` gets az's "...")."""
    import sys

    source = ctx.get_parameter_source("output")
    if source is not None and source.name == "DEFAULT":
        value = Output.table if sys.stdout.isatty() else Output.json
    return getattr(value, "value", value)  # Typer turns the returned text into the enum member


OutputOpt = Annotated[
    Output,
    typer.Option(
        "--output", "-o", envvar="MI_OUTPUT", case_sensitive=False, show_default=False, callback=_default_output,
        help="Output format: table, json, jsonc, yaml, tsv or none (default: MI_OUTPUT, else table at a terminal and json otherwise).",
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
# --yes on a command that never asks (az accepts it on every delete, "Currently no-op" where nothing asks)
YesOpt = Annotated[
    bool, typer.Option("--yes", "-y", help="Accepted as az accepts it: this command does not ask for confirmation.")
]
# --yes on a command that asks first, as az asks for the commands registered with confirmation=True
ConfirmOpt = Annotated[
    bool, typer.Option("--yes", "-y", help="Do not ask for confirmation. Without a terminal to ask at, the command "
                                            "refuses unless --yes is given.")
]
