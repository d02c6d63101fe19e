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
    empty: str | None = None,
    out=None,  # noqa: ANN001
) -> None:
    """`table` turns each item into a row of the people table; `view` draws the whole people view
    itself (it is given the data unqueried and writes to stdout). Neither is used for data. `empty` is
    what a person at a terminal is told when a listing has no rows (default "No results.")."""
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
        rows = _table_rows(result, table if wants_table(output, query) else None, query=query)
        if not rows and isinstance(result, list):
            say_empty(out, empty or "No results.")
        write_table(rows, out)


def say_empty(out, message: str) -> None:  # noqa: ANN001
    """An empty listing, told to a person: az prints nothing for an empty table, which at a terminal
    reads as a hang or a failure. On stderr, so that stdout still holds nothing but data (nothing);
    scripts, whose stdout is not a terminal, are told nothing, and -o json prints `[]`."""
    if _is_terminal(out):
        print(message, file=sys.stderr)


def _is_terminal(out) -> bool:  # noqa: ANN001
    try:
        return out.isatty()
    except (AttributeError, ValueError):
        return False


# knack's auto-table leaves these out of a row, and any null, list or object value
_SKIP_KEYS = ("id", "type", "etag")


def query_keys(query: str | None) -> frozenset[str]:
    """The keys a query names in its multiselect hashes (`[].{Name: name, Group: resourceGroup}`)."""
    if not query:
        return frozenset()
    names: set[str] = set()
    stack = [compile_query(query).parsed]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("type") == "key_val_pair":
                names.add(node.get("value"))
            stack.extend(node.get("children") or ())
    return frozenset(names)


def _table_rows(result: Any, table: TableFn | None, *, query: str | None = None) -> list[dict[str, Any]]:
    items = result if isinstance(result, list) else [result]
    if result is None:
        return []
    if table is not None:
        return [table(item) for item in items]
    # knack's auto-table: keys sorted (in the query's order when one is active), no id/type/etag, scalar
    # values only. Unlike knack, a key the query names itself is always a column, whatever its value
    # (`--query "[].{Id: id, Tags: tags}"` asks for those columns): a null is an empty cell, a list or an
    # object is shown compactly.
    named = query_keys(query)
    rows = []
    for item in items:
        if isinstance(item, dict):
            rows.append(
                {
                    k[:1].upper() + k[1:]: v
                    for k, v in (item.items() if query else sorted(item.items()))
                    if k in named or (k not in _SKIP_KEYS and not isinstance(v, (dict, list, set)) and v is not None)
                }
            )
        elif isinstance(item, list):
            rows.append({f"Column{i + 1}": v for i, v in enumerate(item)})  # as knack names them
        else:
            rows.append({"Result": item})
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list, set)):
        if isinstance(value, (list, set)) and all(not isinstance(v, (dict, list, set)) for v in value):
            return inert(", ".join("" if v is None else str(v) for v in value))
        return inert(json.dumps(value, ensure_ascii=False, sort_keys=True, default=str))
    return inert(str(value))  # True/False as knack's tabulate prints them


def terminal_width(out) -> int:  # noqa: ANN001
    """The width a table for `out` must fit: COLUMNS when set (as rich and shutil read it), else the
    terminal's own, else 80."""
    import os

    try:
        columns = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        columns = 0
    if columns > 0:
        return columns
    try:
        return os.get_terminal_size(out.fileno()).columns or 80
    except (AttributeError, OSError, ValueError):
        return 80


def _ellipsis(out) -> str:  # noqa: ANN001
    try:
        "…".encode(getattr(out, "encoding", None) or "utf-8")
    except (LookupError, UnicodeEncodeError):
        return "..."
    return "…"


def write_table(rows: list[dict[str, Any]], out, *, empty: str | None = None) -> None:  # noqa: ANN001
    """Rows as a table. Off a terminal, az's layout at full width: nothing is shortened or left out,
    as az prints it when piped, so that a script (or a wider screen later) gets every value whole. At a
    terminal, fitted to its width (mi_cli.tablefit): one line a row, no value broken across lines."""
    if not rows:
        if empty:
            say_empty(out, empty)
        return
    keys: list[Any] = []
    for row in rows:
        for h in row:
            if h not in keys:
                keys.append(h)
    headers = [inert(str(h)) for h in keys]  # keys can be data too (--query "[].tags")
    cells = [[_cell(row.get(h)) for h in keys] for row in rows]
    if not _is_terminal(out):
        _write_plain(headers, cells, out)
        return
    from mi_cli.tablefit import fit, shorten

    width = terminal_width(out)
    ellipsis = _ellipsis(out)
    layout = fit(headers, cells, width, ellipsis)
    shown_headers = [headers[i] for i in layout.columns]
    if layout.shortened:
        cells = [[shorten(c[i], w, ellipsis) for i, w in zip(layout.columns, layout.widths)] for c in cells]
    elif layout.hidden:
        cells = [[c[i] for i in layout.columns] for c in cells]
    if len(rows) > RICH_ROW_LIMIT:
        _write_plain(shown_headers, cells, out, layout.widths)
    else:
        _write_rich(shown_headers, cells, out, layout.widths, width)
    told = [headers[i] for i in layout.hidden if i not in layout.blank]
    if told and _is_terminal(sys.stderr):
        _say_hidden(told, width)


def write_text(text: str, out=None) -> None:  # noqa: ANN001
    """A line of prose for people (a decision, a reason), inert. At a terminal it is wrapped between words
    to the terminal's width, and an ARM id too long for a line is shortened as a table shortens it (its
    whole form is in the command's -o json), so that no id is broken across lines; any other word too
    long for a line (a URL, a token) stays whole on a line of its own, to be copied. Elsewhere the text
    is written as it is."""
    out = out or sys.stdout
    text = inert(text)
    if not _is_terminal(out):
        out.write(text + "\n")
        return
    from mi_cli.tablefit import is_arm_id, shorten, text_width

    width = terminal_width(out)
    if text_width(text) <= width:
        out.write(text + "\n")
        return
    ellipsis = _ellipsis(out)
    body = text.lstrip(" ")
    indent = text[:len(text) - len(body)] if len(text) - len(body) < width // 2 else ""  # kept on every line
    room = width - len(indent)
    lines: list[str] = []
    line = ""
    for word in body.split(" "):  # runs of blanks stay as they were: their empty words join back
        if text_width(word) > room and is_arm_id(word.rstrip(".,;:")):
            word = shorten(word, room, ellipsis)
        if line and text_width(line) + 1 + text_width(word) > room:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    lines.append(line)
    out.write("".join(f"{indent}{line}\n" for line in lines))


def _write_plain(headers: list[str], cells: list[list[str]], out, widths: list[int] | None = None) -> None:  # noqa: ANN001
    # az's layout (knack: tabulate, "simple"): two spaces between columns, a dash under every
    # character of each column, lines without trailing blanks
    if widths is None:
        widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
        pad = str.ljust
    else:
        from mi_cli.tablefit import text_width

        def pad(text: str, w: int) -> str:
            return text + " " * (w - text_width(text))
    out.write("  ".join(pad(h, w) for h, w in zip(headers, widths)).rstrip() + "\n")
    out.write("  ".join("-" * w for w in widths) + "\n")
    for c in cells:
        out.write("  ".join(pad(v, w) for v, w in zip(c, widths)).rstrip() + "\n")


def _write_rich(headers: list[str], cells: list[list[str]], out, widths: list[int], width: int) -> None:  # noqa: ANN001
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    # Widths are decided by tablefit; rich only draws: a value never wraps, and two spaces part columns.
    t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold", padding=(0, 1),
              collapse_padding=True)
    for h, w in zip(headers, widths):
        t.add_column(Text(h), width=w, no_wrap=True, overflow="ellipsis")
    for c in cells:
        t.add_row(*(Text(v) for v in c))
    Console(file=out, width=width, highlight=False, markup=False, emoji=False).print(t)


def _say_hidden(names: list[str], width: int) -> None:
    """Which columns a narrow terminal left out, on stderr: the table itself stays data."""
    from mi_cli.tablefit import text_width

    tail = " (see -o json)"
    note = f"Not shown: {', '.join(names)}{tail}"
    if text_width(note) > width:
        note = f"Not shown: {len(names)} columns{tail}"
    print(note, file=sys.stderr)


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
