"""Turns command results into table / json / jsonc / yaml / tsv / none, after applying --query.

Text that reaches a terminal is inert in every format, whatever the store holds (a store written by an
older version may hold anything): tables, tsv and the query's errors show control characters as
escapes (`\\x1b`); json and jsonc escape the ones JSON does not already escape (DEL, C1, bidi controls,
line separators) as `\\uXXXX` escapes, and yaml writes strings holding any of them double-quoted, with
escapes. Ordinary text is printed exactly as before."""

from __future__ import annotations

import json
import re
import sys
from typing import Any, Callable, Iterable

from mi_cli.errors import ValidationError, has_unsafe, inert, shown

FORMATS = ("table", "json", "jsonc", "yaml", "tsv", "none")
# Beyond this many rows a table is printed as plain aligned text: rich costs ~0.5 ms a row.
RICH_ROW_LIMIT = 500
# Each format's library (jmespath, orjson, rich, yaml) is imported where that format is drawn: a command
# pays only for the one it prints, and `mi --help` for none.
TableFn = Callable[[Any], dict[str, Any]]
ViewFn = Callable[[Any], None]


def wants_table(output: Any, query: str | None = None) -> bool:
    """The one decision between a view for people and data for machines: the table format without
    --query gets the people view; every other format, and any --query, gets the data."""
    return getattr(output, "value", output) == "table" and not query


def compile_query(text: str):  # noqa: ANN201
    import jmespath
    from jmespath.exceptions import JMESPathError

    try:
        return jmespath.compile(text)
    except JMESPathError as exc:
        detail = (str(exc).splitlines() or [""])[0]
        raise ValueError(f"argument --query: invalid jmespath query '{shown(text)}': {shown(detail, 200)}") from None


def apply_query(data: Any, query: str | None) -> Any:
    """The query's result. A query that fails on this data (a function given the wrong type) is az's
    "Invalid jmespath query supplied for `--query`" (azure-cli core util.handle_exception), exit 1,
    with the offending value bounded: jmespath's own text would echo the whole result."""
    if not query:
        return data
    from jmespath.exceptions import JMESPathError, JMESPathTypeError

    try:
        return compile_query(query).search(data)
    except JMESPathTypeError as exc:
        detail = (f"In function {exc.function_name}(), invalid type for value: {shown(repr(exc.current_value))}, "
                  f"expected one of: {exc.expected_types}, received: \"{exc.actual_type}\"")
    except JMESPathError as exc:
        detail = shown(str(exc), 200)
    raise ValidationError("InvalidArgumentValue", f"Invalid jmespath query supplied for `--query`: {detail}")


def to_json(data: Any) -> str:
    """az's form: sorted keys, two-space indent, non-ASCII kept. orjson writes exactly what
    json.dumps(indent=2) does, but from compiled code: Python's encoder falls back to pure Python
    when indenting, which cost 3 s on 100,000 identities."""
    import orjson

    options = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE
    try:
        text = orjson.dumps(data, option=options, default=str).decode()
    except TypeError:  # keys orjson refuses (none of mi's own data has them), lone surrogates
        text = json.dumps(data, ensure_ascii=False, indent=2, sort_keys=True, separators=(",", ": "), default=str) + "\n"
    # JSON escapes C0 controls itself; the rest a terminal acts on can only be inside strings here.
    # Only DEL of them is ASCII: an ASCII text without it (isascii is a flag) is returned as it is.
    if text.isascii() and "\x7f" not in text:
        return text
    return _JSON_UNSAFE.sub(_u_escape, text)


# What JSON (and YAML's double quotes) leave raw but a terminal acts on: DEL, C1 controls, line and
# paragraph separators, bidi embeddings, overrides and isolates, lone surrogates.
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")


def _u_escape(match: re.Match) -> str:
    return f"\\u{ord(match.group()):04x}"


def to_yaml(data: Any) -> str:
    """PyYAML's safe_dump as az writes it; a string holding characters a terminal acts on is written
    double-quoted, where PyYAML escapes controls and line separators, and bidi controls are escaped
    here (they are printable to YAML)."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def represent_str(dumper: Dumper, text: str):  # noqa: ANN202
        if has_unsafe(text):
            return dumper.represent_scalar("tag:yaml.org,2002:str", text, style='"')
        return dumper.represent_str(text)

    Dumper.add_representer(str, represent_str)
    out = yaml.dump(data, Dumper=Dumper, default_flow_style=False, allow_unicode=True, sort_keys=True)
    return _BIDI.sub(lambda m: f"\\u{ord(m.group()):04X}", out)


def render(
    data: Any,
    output: str,
    *,
    query: str | None = None,
    table: TableFn | None = None,
    view: ViewFn | None = None,
    out=None,  # noqa: ANN001
) -> None:
    """`table` turns each item into a row of the people table; `view` draws the whole people view
    itself (it is given the data unqueried and writes to stdout). Neither is used for data."""
    output = getattr(output, "value", output)
    if view is not None and wants_table(output, query):
        view(data)
        return
    out = out or sys.stdout
    result = apply_query(data, query)
    if output == "none":
        return
    if output == "json" or (output == "jsonc" and not out.isatty()):
        out.write(to_json(result))
    elif output == "jsonc":
        from rich.console import Console
        from rich.highlighter import JSONHighlighter

        # rich's JSON renderable re-encodes the data and would undo to_json's escapes: highlight
        # to_json's own text instead, as that renderable does.
        text = JSONHighlighter()(to_json(result).rstrip("\n"))
        text.no_wrap, text.overflow = True, None
        Console(file=out).print(text)
    elif output == "yaml":
        out.write(to_yaml(result))
    elif output == "tsv":
        out.write(to_tsv(result, keep_order=bool(query)))
    else:
        rows = _table_rows(result, table if wants_table(output, query) else None, keep_order=bool(query))
        write_table(rows, out)


def _table_rows(result: Any, table: TableFn | None, *, keep_order: bool = False) -> list[dict[str, Any]]:
    items = result if isinstance(result, list) else [result]
    if result is None:
        return []
    if table is not None:
        return [table(item) for item in items]
    rows = []
    for item in items:
        if isinstance(item, dict):
            # knack's auto-table: keys sorted (in the query's order when one is active), no id/type/etag,
            # scalar values only
            rows.append(
                {
                    k[:1].upper() + k[1:]: v
                    for k, v in (item.items() if keep_order else sorted(item.items()))
                    if k not in ("id", "type", "etag") and not isinstance(v, (dict, list, set)) and v is not None
                }
            )
        else:
            rows.append({"Result": item})
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return inert(str(value))  # True/False as knack's tabulate prints them


def write_table(rows: list[dict[str, Any]], out) -> None:  # noqa: ANN001
    if not rows:
        return
    keys: list[Any] = []
    for row in rows:
        for h in row:
            if h not in keys:
                keys.append(h)
    headers = [inert(str(h)) for h in keys]  # keys can be data too (--query "[].tags")
    cells = [[_cell(row.get(h)) for h in keys] for row in rows]
    if len(rows) > RICH_ROW_LIMIT or not out.isatty():
        # az's layout (knack: tabulate, "simple"): two spaces between columns, a dash under every
        # character of each column, lines without trailing blanks
        widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
        out.write("  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip() + "\n")
        out.write("  ".join("-" * w for w in widths) + "\n")
        for c in cells:
            out.write("  ".join(v.ljust(w) for v, w in zip(c, widths)).rstrip() + "\n")
        return
    from rich import box
    from rich.console import Console
    from rich.table import Table

    t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    for h in headers:
        t.add_column(h, overflow="fold")
    for c in cells:
        t.add_row(*c, style=None)
    Console(file=out, highlight=False).print(t, markup=False)


def _tsv_value(value: Any) -> str:
    # knack's _TsvOutput._dump_obj: a list as its length, an object as nothing, anything else as str()
    # (None as "None", True as "True")
    if isinstance(value, list):
        return str(len(value))
    if isinstance(value, dict):
        return ""
    return inert(str(value))  # a tab or newline in a value would also break the line's columns


def to_tsv(result: Any, *, keep_order: bool = False) -> str:
    """knack's tsv: a line per item; dict values in key order (in --query's order when one shaped
    them); nested lists as their length, nested objects empty; a bare boolean item in lowercase.
    A null result prints nothing, as az prints nothing for it."""
    if result is None:
        return ""
    items: Iterable[Any] = result if isinstance(result, list) else [result]
    lines = []
    for item in items:
        if isinstance(item, dict):
            pairs = item.items() if keep_order else sorted(item.items())
            lines.append("\t".join(_tsv_value(v) for _, v in pairs))
        elif isinstance(item, list):
            lines.append("\t".join(_tsv_value(v) for v in item))
        elif isinstance(item, bool):
            lines.append(str(item).lower())
        else:
            lines.append(_tsv_value(item))
    return "".join(line + "\n" for line in lines)
