"""What every command shares: the chosen store, one transaction per command, rendering, prompts."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Any, Iterator

from mi_cli.errors import MiError, UsageError, bounded
from mi_cli.render import wants_table  # noqa: F401  (light: the one table-or-data decision, for commands)

state: dict[str, Any] = {"db": None, "debug": False}


def configure(*, db: str | None, debug: bool) -> None:
    state["db"] = db
    state["debug"] = debug


@contextmanager
def transaction(*, write: bool, dry_run: bool = False) -> Iterator[Any]:
    """One command, one transaction: all of it is committed, or (on any error) none of it. A dry run
    does the same work on an in-memory copy of the store, which is then thrown away."""
    from mi_cli.services import Ctx
    from mi_cli.store import open_store

    store = open_store(state["db"])
    work = store.snapshot() if dry_run else store
    try:
        with work.transaction(write=write) as session:
            ctx = Ctx.from_env(session)
            yield ctx
    finally:
        work.close()
        store.close()
    for message in ctx.warnings:
        print(f"WARNING: {bounded(message)}", file=sys.stderr)  # names from the store, made inert


def emit(data: Any, output: Any, query: str | None = None, table=None, *, view=None,  # noqa: ANN001
         empty: str | None = None) -> None:
    """Data for machines, or (table format, no --query) the people view: `table` maps each item to a
    row, `view` draws a custom one. mi_cli.render.wants_table alone makes that choice. `empty` is what
    a person at a terminal reads when a listing is empty ("No identities found.")."""
    from mi_cli.render import render

    render(data, output, query=query, table=table, view=view, empty=empty)


def confirm(question: str, yes: bool) -> None:
    """As az confirms a command registered with confirmation=True (knack CLICommand._user_confirmed):
    --yes skips the question; a person at a terminal is asked; without a terminal nothing is asked and
    nothing is done: knack's prompt raises NoTTYException, logged as the warning below, and the command
    fails with CLIError('Operation cancelled.'), exit 1. A "no" at the terminal fails the same way."""
    if yes:
        return
    if not sys.stdin.isatty():
        print("WARNING: Unable to prompt for confirmation as no tty available. Use --yes.", file=sys.stderr)
        raise MiError("OperationCancelled", "Operation cancelled.")
    import typer

    if not typer.confirm(f"{question}\nAre you sure you want to perform this operation?", err=True):
        raise MiError("OperationCancelled", "Operation cancelled.")



def name_or_id(name: str | None, ids_: str | None) -> str:
    """What a show/delete command names: -n (with -g) or --ids, exactly one of them."""
    if bool(name) == bool(ids_):
        raise UsageError("MissingArgument", "Give either --name/-n (with -g) or --ids.")
    return ids_ or name
