"""The renderer on its own: big tables skip rich, tsv follows knack's rules."""

from __future__ import annotations

import io

from mi_cli.render import RICH_ROW_LIMIT, render, to_tsv


def test_a_big_table_is_printed_as_plain_aligned_rows():
    rows = [{"name": f"id-{i:04d}", "location": "westeurope"} for i in range(RICH_ROW_LIMIT + 100)]
    out = io.StringIO()
    render(rows, "table", table=lambda r: {"Name": r["name"], "Location": r["location"]}, out=out)
    lines = out.getvalue().splitlines()
    assert len(lines) == len(rows) + 2
    assert lines[0].split() == ["Name", "Location"] and set(lines[1]) == {"-", " "}
    assert lines[2].split() == ["id-0000", "westeurope"]


def test_tsv_values():
    # knack's _TsvOutput: str() of a value in an object (None, True), a bare boolean in lowercase
    assert to_tsv([{"b": True, "a": None, "c": [1, 2, 3], "d": {"x": 1}}]) == "None\tTrue\t3\t\n"
    assert to_tsv([True, None, "x"]) == "true\nNone\nx\n" and to_tsv(None) == ""
    assert to_tsv("plain") == "plain\n"
    assert to_tsv({"z": 1, "a": 2}, keep_order=True) == "1\t2\n"


def test_none_prints_nothing_and_query_applies_first():
    out = io.StringIO()
    render({"a": 1}, "none", out=out)
    assert out.getvalue() == ""
    render({"a": {"b": [1, 2]}}, "json", query="a.b[-1]", out=out)
    assert out.getvalue() == "2\n"
