"""One decision between a view for people and data for machines: the table format without --query."""

from __future__ import annotations

import io
import json

import pytest

from mi_cli.cli.options import Output
from mi_cli.render import render, wants_table


@pytest.mark.parametrize("output", ["table", Output.table])
def test_the_table_format_without_a_query_is_for_people(output):
    assert wants_table(output, None) is True
    assert wants_table(output, "") is True
    assert wants_table(output) is True


@pytest.mark.parametrize("output", ["table", Output.table])
def test_a_query_always_gives_data(output):
    assert wants_table(output, "name") is False


@pytest.mark.parametrize("output", [*[f for f in Output if f is not Output.table], "json", "yaml", "tsv", "none"])
@pytest.mark.parametrize("query", [None, "name"])
def test_every_other_format_gives_data(output, query):
    assert wants_table(output, query) is False


def test_render_calls_the_people_view_only_when_the_decision_says_so(capsys):
    seen = []
    data = {"name": "a", "n": 1}
    render(data, Output.table, view=seen.append)
    assert seen == [data] and capsys.readouterr().out == ""

    for output, query in (("json", None), ("table", "name"), ("tsv", None), ("none", None)):
        out = io.StringIO()
        render(data, output, query=query, view=seen.append, out=out)
        assert seen == [data], (output, query)
    out = io.StringIO()
    render(data, "json", view=seen.append, out=out)
    assert json.loads(out.getvalue()) == data


def test_the_row_mapper_is_used_for_people_only():
    out = io.StringIO()
    render([{"name": "a"}], "table", table=lambda r: {"Custom": r["name"].upper()}, out=out)
    assert out.getvalue().split() == ["Custom", "------", "A"]
    out = io.StringIO()
    render([{"name": "a"}], "table", query="[]", table=lambda r: {"Custom": r["name"].upper()}, out=out)
    assert out.getvalue().split() == ["Name", "----", "a"]


def test_a_command_with_its_own_people_view(mi):
    assert mi("group", "create", "-n", "rg1", "-l", "westeurope", "-o", "none").code == 0
    people = mi("tree", "-o", "table")
    assert people.code == 0
    assert people.out.startswith("tenant ") and "group rg1 (westeurope)" in people.out
    data = mi("tree", "-o", "json")
    assert data.code == 0
    assert data.json["subscriptions"][0]["resourceGroups"][0]["name"] == "rg1"
    queried = mi("tree", "-o", "table", "--query", "subscriptions[0].resourceGroups[0].name")
    assert queried.out.split() == ["Result", "-" * len("Result"), "rg1"]


def test_doctor_people_view_and_data(mi):
    assert mi("doctor", "-o", "table").out.startswith("No findings:")
    assert mi("doctor", "-o", "json").json == []
