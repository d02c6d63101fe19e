"""The output contract: formats, --query, MI_OUTPUT, az's multi-value options, help and version."""

from __future__ import annotations

import json

import pytest
import typer
import yaml

from mi_cli import __version__
from mi_cli.cli.main import app, main


@pytest.fixture
def two(ok):
    ok("group", "create", "-n", "rg", "-l", "westeurope")
    ok("identity", "create", "-g", "rg", "-n", "alpha", "--tags", "team=red", "tier=1")
    ok("identity", "create", "-g", "rg", "-n", "beta")


def test_json_is_sorted_with_two_space_indent(mi, two):
    out = mi("identity", "show", "-n", "alpha", "-g", "rg", "-o", "json").out
    data = json.loads(out)
    assert out == json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    assert data["tags"] == {"team": "red", "tier": "1"}  # space-separated --tags
    assert mi("identity", "show", "-n", "alpha", "-g", "rg", "-o", "jsonc").out == out  # no colour off a terminal


def test_yaml_tsv_none_and_table(mi, two):
    as_yaml = yaml.safe_load(mi("identity", "show", "-n", "beta", "-g", "rg", "-o", "yaml").out)
    assert as_yaml["name"] == "beta" and as_yaml["systemData"] is None
    tsv = mi("identity", "list", "--kind", "user", "-o", "tsv", "--query", "[].[name, location]").out
    assert tsv == "alpha\twesteurope\nbeta\twesteurope\n"
    assert mi("identity", "list", "-o", "none").out == ""
    table = mi("identity", "list").out.splitlines()
    assert table[0].split() == ["Kind", "Name", "ResourceGroup", "Location", "PrincipalId", "ClientId"]
    assert set(table[1]) == {"-", " "}
    assert table[2].split()[:2] == ["UserAssigned", "alpha"]


def test_tsv_follows_knack_for_whole_objects(mi, two):
    line = mi("identity", "show", "-n", "alpha", "-g", "rg", "-o", "tsv").out.rstrip("\n").split("\t")
    # keys sorted: clientId id isolationScope location name principalId resourceGroup systemData tags tenantId type
    assert line[2:5] == ["None", "westeurope", "alpha"]
    assert line[7] == "" and line[8] == ""  # null, and a nested object


def test_query_runs_on_the_json_form_before_rendering(mi, two):
    r = mi("identity", "list", "--query", "[?tags.team=='red'].name", "-o", "json")
    assert json.loads(r.out) == ["alpha"]
    r = mi("identity", "list", "--query", "length(@)")
    assert r.out.split() == ["Result", "-------", "2"] or r.out.split()[-1] == "2"


def test_mi_output_sets_the_default_format(mi, two):
    r = mi("identity", "show", "-n", "beta", "-g", "rg", env={"MI_OUTPUT": "json"})
    assert json.loads(r.out)["name"] == "beta"
    r = mi("identity", "show", "-n", "beta", "-g", "rg", "-o", "tsv", env={"MI_OUTPUT": "json"})
    assert not r.out.startswith("{")


def test_multi_value_options_take_space_separated_and_repeated_forms(ok, two):
    ok("resource", "create", "-g", "rg", "-n", "vm1", "--type", "vm")
    ok("resource", "create", "-g", "rg", "-n", "vm2", "--type", "vm")
    a = ok("identity", "assign", "--resource", "vm1", "-g", "rg", "--identities", "alpha", "beta", "[system]")
    b = ok("identity", "assign", "--resource", "vm2", "-g", "rg", "--identities", "alpha", "--identities", "beta", "--identities", "[system]")
    assert a["type"] == b["type"] == "SystemAssigned, UserAssigned"
    assert list(a["userAssignedIdentities"]) == list(b["userAssignedIdentities"])


def test_version_and_bare_mi(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"mi {__version__}\n"
    assert main([]) == 0
    assert "Usage: mi" in capsys.readouterr().out


def _commands(group: typer.Typer, path: tuple[str, ...] = ()):
    for info in group.registered_commands:
        yield (*path, info.name), info.callback
    for sub in group.registered_groups:
        yield from _commands(sub.typer_instance, (*path, sub.name))


def test_every_command_has_help_text(capsys):
    found = list(_commands(app))
    assert len(found) > 25
    for path, callback in found:
        assert callback.__doc__, f"'mi {' '.join(path)}' has no help"
        assert main([*path, "--help"]) == 0, path
        out = capsys.readouterr().out
        assert "Usage: mi " + " ".join(path) in out
