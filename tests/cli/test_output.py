"""The output contract: formats, --query, MI_OUTPUT, az's multi-value options, help and version."""

from __future__ import annotations

import json

import pytest
import yaml

from mi_cli import __version__
from mi_cli.cli.main import command, main
from tests.forwarding import command_host, mi  # noqa: F401  (each test runs here and forwarded to mi serve)


def build_two(ok, mi):
    ok("group", "create", "-n", "rg", "-l", "westeurope")
    ok("identity", "create", "-g", "rg", "-n", "alpha", "--tags", "team=red", "tier=1")
    ok("identity", "create", "-g", "rg", "-n", "beta")


@pytest.fixture
def two(prebuilt):
    prebuilt(build_two)


def test_json_is_sorted_with_two_space_indent(mi, two):
    out = mi("identity", "show", "-n", "alpha", "-g", "rg", "-o", "json").out
    data = json.loads(out)
    assert out == json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    assert data["tags"] == {"team": "red", "tier": "1"}  # space-separated --tags
    assert mi("identity", "show", "-n", "alpha", "-g", "rg", "-o", "jsonc").out == out  # no colour off a terminal


def test_yaml_tsv_none_and_table(mi, two):
    as_yaml = yaml.safe_load(mi("identity", "show", "-n", "beta", "-g", "rg", "-o", "yaml").out)
    assert as_yaml["name"] == "beta" and as_yaml["isolationScope"] == "None" and "systemData" not in as_yaml
    tsv = mi("identity", "list", "--kind", "user", "-o", "tsv", "--query", "[].[name, location]").out
    assert tsv == "alpha\twesteurope\nbeta\twesteurope\n"
    assert mi("identity", "list", "-o", "none").out == ""
    table = mi("identity", "list", "-o", "table").out.splitlines()
    # az identity list: no table transformer, so knack's auto-table of its keys (sorted, no id/type, no objects)
    assert table[0].split() == ["ClientId", "IsolationScope", "Location", "Name", "PrincipalId", "ResourceGroup", "TenantId"]
    assert set(table[1]) == {"-", " "}
    assert table[2].split()[1:4] == ["None", "westeurope", "alpha"]


def test_tsv_follows_knack_for_whole_objects(mi, two):
    line = mi("identity", "show", "-n", "alpha", "-g", "rg", "-o", "tsv").out.rstrip("\n").split("\t")
    # keys sorted: clientId id isolationScope location name principalId resourceGroup tags tenantId type
    assert line[2:5] == ["None", "westeurope", "alpha"]  # isolationScope is ARM's string "None"
    assert line[7] == ""  # a nested object


def test_query_runs_on_the_json_form_before_rendering(mi, two):
    r = mi("identity", "list", "--query", "[?tags.team=='red'].name", "-o", "json")
    assert json.loads(r.out) == ["alpha"]
    assert mi("identity", "list", "--query", "length(@)", "-o", "json").out == "2\n"
    table = mi("identity", "list", "--query", "length(@)", "-o", "table").out.splitlines()
    assert table[0] == "Result" and set(table[1]) == {"-"} and table[2:] == ["2"]


def test_mi_output_sets_the_default_format(mi, two):
    r = mi("identity", "show", "-n", "beta", "-g", "rg", env={"MI_OUTPUT": "json"})
    assert json.loads(r.out)["name"] == "beta"
    r = mi("identity", "show", "-n", "beta", "-g", "rg", "-o", "tsv", env={"MI_OUTPUT": "json"})
    assert r.out == mi("identity", "show", "-n", "beta", "-g", "rg", "-o", "tsv").out  # -o wins over MI_OUTPUT
    assert r.out.count("\n") == 1 and r.out.split("\t")[4] == "beta"


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


def test_the_command_tree_is_built_once_and_a_run_leaves_no_state_behind(tmp_path, capsys):
    from mi_cli.cli.runtime import state

    before = dict(state)
    assert command() is command()
    assert main(["--db", str(tmp_path / "a.db"), "--debug", "group", "list", "-o", "none"]) == 0
    assert state == before
    assert main(["--db", str(tmp_path / "b.db"), "group", "nope"]) == 2
    assert state == before


def _commands(cmd, path: tuple[str, ...] = ()):
    """Every command and group of the click tree `mi` runs, with its path."""
    yield path, cmd
    for name in cmd.list_commands(None) if hasattr(cmd, "list_commands") else ():
        yield from _commands(cmd.get_command(None, name), (*path, name))


def test_every_command_has_help_text():
    found = list(_commands(command()))
    assert len([c for _, c in found if not hasattr(c, "list_commands")]) > 25
    assert {"identity", "resource", "group", "role", "token", "apply", "serve"} <= {p[0] for p, _ in found if p}
    for path, cmd in found:
        where = f"'mi {' '.join(path)}'"
        assert (cmd.help or "").strip(), f"{where} has no help"
        for param in cmd.params:  # options and arguments: Typer gives both a help text
            assert (getattr(param, "help", None) or "").strip(), f"{where} {param.name} has no help"


def test_help_is_printed_for_a_nested_command(capsys):
    assert main(["identity", "federated-credential", "create", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Usage: mi identity federated-credential create [OPTIONS]")
    [issuer] = [line for line in out.splitlines() if line.lstrip().startswith("--issuer")]
    assert issuer.rstrip().endswith("https URL of the token issuer.")
