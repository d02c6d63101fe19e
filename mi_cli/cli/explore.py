"""`mi tree`, `mi graph` and `mi doctor`: a tenant's identities at a glance."""

from __future__ import annotations

import sys
from enum import Enum
from typing import Annotated, Optional

import typer

from mi_cli.cli.options import Output, OutputOpt, QueryOpt
from mi_cli.cli.runtime import emit, transaction
from mi_cli.errors import MiError, inert


def _inert(data):  # noqa: ANN001, ANN202
    """`data` with every string in it made inert for a terminal: a store written by an older version
    may hold names with control characters, and these views print them."""
    if isinstance(data, str):
        return inert(data)
    if isinstance(data, dict):
        return {_inert(k): _inert(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_inert(v) for v in data]
    return data


LimitOpt = Annotated[int, typer.Option("--limit", min=0, help="The view for people shows at most this many of each "
                                      "list (0: all); data forms (-o json, --query) always hold everything.")]


def _more(hidden: int, what: str, hint: str) -> str:
    return f"… and {hidden:,} more {what} ({hint})"


def tree(
    group: Annotated[Optional[str], typer.Option("--resource-group", "-g", help="Only this resource group.")] = None,
    limit: LimitOpt = 25,
    output: OutputOpt = "table",
    query: QueryOpt = None,
) -> None:
    """Tenant > subscriptions > groups > resources, with each resource's identities: the system one
    lives and dies with it; user-assigned ones are shared or not; deleted ones show as broken.

    The view for people shows the first --limit resources and identities of each group, with how many more
    there are, and ends with the totals."""
    from mi_cli.services import explore, groups

    with transaction(write=False) as ctx:
        if group:
            groups.get(ctx, group)  # a group that does not exist is an error, not an empty tree
        data = explore.tree(explore.load(ctx), group=group)
    emit(data, output, query, view=lambda d: _print_tree(d, limit))


def _print_tree(data: dict, limit: int = 0) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.tree import Tree

    tty = sys.stdout.isatty()
    data = _inert(data)

    def s(text: str, style: str) -> str:  # colour for people, plain text for pipes; names are escaped
        return f"[{style}]{escape(text)}[/]" if tty else escape(text)

    def first(items: list) -> list:
        return items if not limit else items[:limit]

    counts = {"groups": 0, "resources": 0, "identities": 0}
    root = Tree(f"{s('tenant', 'bold')} {escape(data['tenantId'] or '(empty store)')}")
    for sub in data["subscriptions"]:
        s_node = root.add(f"{s('subscription', 'bold')} {escape(sub['name'])} ({escape(sub['id'])})" + (" (default)" if sub["isDefault"] else ""))
        for g in sub["resourceGroups"]:
            counts["groups"] += 1
            counts["resources"] += len(g["resources"])
            counts["identities"] += len(g["userAssignedIdentities"])
            g_node = s_node.add(f"{s('group', 'bold cyan')} {escape(g['name'])} ({escape(g['location'])})")
            hint = f"--limit 0 shows all{'' if len(sub['resourceGroups']) == 1 else ', -g ' + g['name'] + ' one group'}"
            if len(g["resources"]) > len(first(g["resources"])):
                more_resources = _more(len(g["resources"]) - limit, "resources", hint)
            else:
                more_resources = ""
            for r in first(g["resources"]):
                r_node = g_node.add(f"{s(r['type'].rsplit('/', 1)[-1], 'bold')} {escape(r['name'])}")
                if r["systemAssigned"]:
                    sa = r["systemAssigned"]
                    r_node.add(f"{s('system-assigned', 'green')} {escape(sa['principalId'])}  {s(sa['lifecycle'], 'dim')}")
                for ua in r["userAssigned"]:
                    if ua["status"] == "broken":
                        r_node.add(s(f"user-assigned {ua['name']}: BROKEN, the identity was deleted and the reference dangles", "bold red"))
                    else:
                        where = f"shared, also on {', '.join(ua['alsoOn'])}" if ua["shared"] else "only here"
                        r_node.add(f"{s('user-assigned', 'blue')} {escape(ua['name'])}  {s(where, 'dim')}")
            if more_resources:
                g_node.add(s(more_resources, "dim"))
            if g["userAssignedIdentities"]:
                u_node = g_node.add(s("user-assigned identities", "bold"))
                for u in first(g["userAssignedIdentities"]):
                    where = escape(f"on {', '.join(u['attachedTo'])}") if u["attachedTo"] else s("attached to nothing", "yellow")
                    u_node.add(f"{escape(u['name'])} ({escape(u['principalId'])})  {where}")
                if limit and len(g["userAssignedIdentities"]) > limit:
                    u_node.add(s(_more(len(g["userAssignedIdentities"]) - limit, "user-assigned identities", hint), "dim"))
    console = Console(file=sys.stdout, width=None if tty else 10_000, no_color=not tty, highlight=False)
    console.print(root)
    console.print(f"{counts['groups']:,} resource group(s), {counts['resources']:,} resource(s), "
                  f"{counts['identities']:,} user-assigned identit{'y' if counts['identities'] == 1 else 'ies'}", highlight=False,
                  markup=False)


class GraphFormat(str, Enum):
    mermaid = "mermaid"
    dot = "dot"
    json = "json"


def graph(
    format_: Annotated[Optional[GraphFormat], typer.Option(
        "--format", help="The diagram: mermaid (the default; renders in Markdown), dot (Graphviz), or json (as -o json).")] = None,
    output: Annotated[Optional[Output], typer.Option(
        "--output", "-o", case_sensitive=False, show_default=False,
        help="The graph as data instead of a diagram: table (one row an edge), json, jsonc, yaml, tsv or none. "
             "MI_OUTPUT does not apply: without -o or --query, the diagram.")] = None,
    query: QueryOpt = None,
) -> None:
    """The identity graph: resources (sources) -> their identities -> roles -> target scopes."""
    from mi_cli.errors import UsageError
    from mi_cli.render import to_json
    from mi_cli.services import explore

    if format_ is not None and output is not None:
        raise UsageError("MutuallyExclusiveArguments", "Give --format (a diagram) or --output (data), not both.")
    if format_ is not None and query:
        raise UsageError("MutuallyExclusiveArguments", "--query applies to --output, not to a --format diagram.")
    with transaction(write=False) as ctx:
        g = explore.graph(explore.load(ctx))
    if output is not None or query:
        # a query asks for data: a table at a terminal, JSON for a script, as every other command
        chosen = output.value if output is not None else "table" if sys.stdout.isatty() else "json"
        emit(g, chosen, query, view=_print_edges)
        return
    diagram = (format_ or GraphFormat.mermaid).value
    if diagram == "json":  # to_json escapes what a terminal would act on
        out = to_json(g)
    else:  # labels are names from the store: inert before they are quoted for Mermaid or DOT
        out = {"mermaid": explore.to_mermaid, "dot": explore.to_dot}[diagram](_inert(g))
    sys.stdout.write(out)


def _print_edges(g: dict) -> None:
    """The graph for people at a table: an edge a row, from and to by their labels."""
    from mi_cli.render import write_table

    labels = {node["id"]: node["label"] for node in g["nodes"]}
    rows = [{"From": labels.get(e["from"], e["from"]),
             "Edge": (e["label"] or e["kind"]) + (" (broken)" if e["broken"] else ""),
             "To": labels.get(e["to"], e["to"])} for e in g["edges"]]
    write_table(rows, sys.stdout, empty="No identities, so no graph: nothing holds or grants one.")



def doctor(
    strict: Annotated[bool, typer.Option("--strict", help="Exit 1 when there are findings (for CI gates).")] = False,
    limit: Annotated[int, typer.Option("--limit", min=0, help="The view for people shows at most this many findings "
                                       "of each kind (0: all); data forms (-o json, --query) always hold every one.")] = 10,
    output: OutputOpt = "table",
    query: QueryOpt = None,
) -> None:
    """What Azure leaves to people: dangling references, orphaned role assignments, idle identities,
    control-plane roles used for data, resources near their identity limit, federated credentials that no
    assertion can match; each with its fix.

    The view for people groups the findings by kind, most severe first, shows the first --limit of each, and
    ends with the counts."""
    from mi_cli.services import explore

    with transaction(write=False) as ctx:
        findings = explore.doctor(explore.load(ctx))
    emit(findings, output, query, view=lambda f: _print_findings(f, limit))
    if strict and findings:
        raise MiError("DoctorFindings", f"{len(findings)} finding(s); see above.")


_SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}


def _print_findings(findings: list[dict], limit: int = 0) -> None:
    findings = _inert(findings)  # messages and fixes quote names from the store
    if not findings:
        print("No findings: every identity is in use, every reference resolves, every assignment has its principal.")
        return
    kinds: dict[tuple[str, str], list[dict]] = {}
    for f in findings:
        kinds.setdefault((f["severity"], f["code"]), []).append(f)
    ordered = sorted(kinds.items(), key=lambda kv: (_SEVERITY_ORDER.get(kv[0][0], 9), -len(kv[1]), kv[0][1]))
    for (severity, code), found in ordered:
        print(f"{severity.upper()} {code} ({len(found):,})")
        for f in found if not limit else found[:limit]:
            print(f"  {f['message']}")
            for command in f["fix"]:
                print(f"    fix: {command}")
        if limit and len(found) > limit:
            print(f"  {_more(len(found) - limit, 'of this kind', '--limit 0 shows all; -o json lists every finding')}")
    by_severity = {}
    for f in findings:
        by_severity[f["severity"]] = by_severity.get(f["severity"], 0) + 1
    counts = ", ".join(f"{n:,} {sev}" for sev, n in sorted(by_severity.items(), key=lambda kv: _SEVERITY_ORDER.get(kv[0], 9)))
    print(f"{len(findings):,} finding(s) of {len(kinds)} kind(s): {counts}")
