"""`mi compare`: system-assigned vs user-assigned, as the docs put it and as this store shows it."""

from __future__ import annotations

import sys

from mi_cli.cli.options import OutputOpt, QueryOpt
from mi_cli.cli.runtime import emit, transaction


def compare(output: OutputOpt = "table", query: QueryOpt = None) -> None:
    """Compare the two kinds of managed identity, each row with what this store holds."""
    from mi_cli.services import compare as service

    with transaction(write=False) as ctx:
        rows = service.table(ctx)
    emit(rows, output, query, view=_print_table)


def _print_table(rows: list[dict]) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    tty = sys.stdout.isatty()
    console = Console(width=None if tty else 160, no_color=not tty, highlight=False)
    table = Table(box=box.ROUNDED if tty else box.ASCII, show_lines=True, title="Managed identities: system-assigned vs user-assigned")
    table.add_column("Characteristic", style="bold" if tty else None, ratio=1)
    table.add_column("System-assigned", ratio=2)
    table.add_column("User-assigned", ratio=2)
    table.add_column("In this store", style="cyan" if tty else None, ratio=3)
    for r in rows:
        table.add_row(r["characteristic"], r["systemAssigned"], r["userAssigned"], r["inThisStore"])
    console.print(table, markup=False)
