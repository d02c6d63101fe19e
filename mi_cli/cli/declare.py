"""`mi apply`, `mi export` and `mi reset`: a whole tenant as one file."""

from __future__ import annotations

import sys
from contextlib import contextmanager, nullcontext
from typing import Annotated, Iterator, Optional

import typer

from mi_cli.cli.options import OutputOpt, QueryOpt
from mi_cli.cli.runtime import confirm, emit, transaction, wants_table


@contextmanager
def _progress(total: int, description: str) -> Iterator:
    """A rich progress bar on stderr for a person watching a long run; nothing for scripts."""
    if total < 2000 or not sys.stderr.isatty():
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(file=sys.stderr), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


@contextmanager
def _stage(description: str) -> Iterator:
    """A spinner on stderr while a step without a count runs (reading and checking a big file), so that a
    person sees work from the first second; nothing for scripts."""
    if not sys.stderr.isatty():
        yield
        return
    from rich.console import Console

    with Console(file=sys.stderr).status(description, spinner="dots"):
        yield


@contextmanager
def _no_full_collections() -> Iterator:
    """Python's cyclic collector without its full collections while a tenant file is read and applied. The file's
    entries, and what applying them makes (the plan, the indexes, the rows waiting in the writer's batches), live
    until the end, and are not cycles: each full collection would only walk all of them again, a fifth of an
    apply of 100,000 identities. The young generations are still collected, so what does become cyclic garbage
    (an error's traceback, say) is freed as before."""
    import gc

    thresholds = gc.get_threshold()
    gc.set_threshold(thresholds[0], thresholds[1], 1 << 30)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)


# At a terminal, a plan longer than this shows its first rows and how many more there are: the summary line
# says what changed, and -o json (or --query) gives every row.
PLAN_ROWS_AT_A_TERMINAL = 50


def _plan_row(c: dict) -> dict:
    return {"Op": c["op"], "Kind": c["kind"], "Id": c["id"]}


def apply(
    file: Annotated[str, typer.Option("--file", "-f", help="The tenant file (YAML or JSON); - reads stdin.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan; change nothing.")] = False,
    prune: Annotated[bool, typer.Option("--prune", help="Also delete what the file does not declare.")] = False,
    output: OutputOpt = "table",
    query: QueryOpt = None,
) -> None:
    """Make the store hold what the file declares, in one transaction: all of it or, on any invalid
    entry, nothing (the error names the entry). Applying the same file again changes nothing.

    Key Vault secrets declared under a vault (`secrets:`) get a new version only when their latest one
    differs; secrets a file does not declare are left alone, --prune included (a pruned vault takes its own)."""
    from mi_cli.services import tenant_file
    from mi_cli.services.apply import Applier

    with _stage(f"reading {file}") if file != "-" else nullcontext():  # stdin may be the terminal, typed at
        text, source = tenant_file.read_file(file, sys.stdin)
    with _no_full_collections():
        with _stage(f"parsing {source} ({len(text):,} characters)"):
            doc = tenant_file.read_document(text, source)
        with _stage(f"checking {source} against the tenant file schema"):
            tenant_file.check_schema(doc, source)
        with _progress(tenant_file.count_entries(doc), f"applying {source}") as advance:
            with transaction(write=True, dry_run=dry_run) as ctx:
                plan = Applier(ctx, source, prune=prune, progress=advance).run(doc)
    counts = plan.counts()
    summary = ", ".join(f"{n:,} {op}" for op, n in counts.items() if n) or "nothing declared"
    # The table leaves out unchanged entries, also under --query; a dry run and the data forms list them all.
    changes = plan.changes if dry_run or not wants_table(output) else \
        [c for c in plan.changes if c["op"] != "unchanged"]
    hidden = 0
    if wants_table(output, query) and sys.stdout.isatty() and len(changes) > PLAN_ROWS_AT_A_TERMINAL:
        hidden, changes = len(changes) - PLAN_ROWS_AT_A_TERMINAL, changes[:PLAN_ROWS_AT_A_TERMINAL]
    emit(changes, output, query, _plan_row, empty="No changes.")
    if hidden:
        print(f"… and {hidden:,} more (-o json lists every one)", file=sys.stderr)
    print(f"{'plan' if dry_run else 'applied'}: {summary}", file=sys.stderr)


def export(
    output: Annotated[str, typer.Option("--output", "-o", help="yaml (default) or json.")] = "yaml",
    file: Annotated[Optional[str], typer.Option("--file", "-f", help="Write to FILE instead of stdout.")] = None,
    include_secrets: Annotated[bool, typer.Option(
        "--include-secrets", help="Also write the vaults' Key Vault secrets (latest versions, values included).")] = False,
    query: QueryOpt = None,
) -> None:
    """Write the whole tenant in the file format that `mi apply` reads (not the activity log or keys;
    Key Vault secrets only with --include-secrets).

    --query picks part of it, as in az (what it picks is data, not necessarily a tenant file)."""
    from mi_cli.errors import UsageError
    from mi_cli.render import apply_query, to_json
    from mi_cli.services import export as exporting

    if output not in ("yaml", "json"):
        raise UsageError("InvalidArgumentValue", f"--output must be yaml or json, not '{output}'.")
    with transaction(write=False) as ctx:
        doc = exporting.export(ctx, include_secrets=include_secrets)
    doc = apply_query(doc, query)
    if output == "json":
        text = to_json(doc)
    else:
        import yaml

        dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
        text = yaml.dump(doc, Dumper=dumper, default_flow_style=False, sort_keys=False, allow_unicode=True)
    if file:
        from mi_cli.files import write_atomic

        write_atomic(file, text.encode("utf-8"))
    else:
        sys.stdout.write(text)


def reset(
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not prompt for confirmation (required without a terminal).")] = False,
) -> None:
    """Empty the store: every object, the tenant and its keys, and the activity log. It asks first:
    at a terminal, a question; without one, it refuses unless --yes is given (as az's deletes)."""
    from mi_cli.services import export as exporting

    confirm("Delete everything in this store?", yes)
    with transaction(write=True) as ctx:
        counts = exporting.reset(ctx)
    print(f"reset: {sum(counts.values())} rows deleted", file=sys.stderr)
