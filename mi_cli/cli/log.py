"""`mi log`: the activity log."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from mi_cli.cli.options import OutputOpt, QueryOpt
from mi_cli.cli.runtime import emit, transaction


def _row(e: dict) -> dict:
    return {"Time": e["eventTimestamp"][:19].replace("T", " "), "Operation": e["operationName"],
            "Target": e["resourceId"], "Caller": e["caller"], "Status": e["status"]}


def reason(e: dict) -> str:
    """Why a refused request or failed change was refused, from its detail: a token refusal's error and its
    reason in mi's words when the row has one (`; reason=...`; the audience and endpoint are in -o json), else
    the whole detail. Empty for what succeeded."""
    detail = e.get("detail") or ""
    if e.get("status") != "Failed" or not detail:
        return ""
    _, found, error = detail.partition("error=")
    if not found:
        return detail.strip()
    error, found, why = error.partition("; reason=")
    error = error.strip()
    return f"{error}{'' if error.endswith('.') else '.'} {why.strip()}" if found else error


def _row_with_reason(e: dict) -> dict:
    return {**_row(e), "Reason": reason(e)}


def show_log(
    since: Annotated[Optional[str], typer.Option("--since", help="ISO time, or a duration back from now: 30m, 2h, 7d.")] = None,
    operation: Annotated[Optional[str], typer.Option("--operation", help="Operations containing TEXT, e.g. 'delete'.")] = None,
    target: Annotated[Optional[str], typer.Option("--target", help="Targets (ids) containing TEXT.")] = None,
    caller: Annotated[Optional[str], typer.Option("--caller", help="Callers containing TEXT.")] = None,
    principal: Annotated[Optional[str], typer.Option("--principal", help="Entries about this principal id: its sign-ins and role grants.")] = None,
    status: Annotated[Optional[str], typer.Option("--status", help="Succeeded or Failed.")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", help="Only the newest N entries.")] = None,
    output: OutputOpt = "table",
    query: QueryOpt = None,
) -> None:
    """Show the activity log, oldest first: every change made to the store, and every token issued or
    refused (a sign-in log: filter with --operation token)."""
    from mi_cli.services import activity, views

    with transaction(write=False) as ctx:
        data = [
            views.log_entry(e)
            for e in activity.entries(ctx, since=since, operation=operation, target=target, caller=caller, principal=principal,
                                           status=status, limit=limit)
        ]
    # the reason of each refusal, in a last column, when the entries shown hold one
    refused = any(e["status"] == "Failed" for e in data)
    emit(data, output, query, _row_with_reason if refused else _row, empty="No activity log entries found.")
