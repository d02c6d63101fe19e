"""Text that reaches a terminal is inert, and error lines are bounded: control characters are refused
where a value enters, shown as escapes wherever the store's text is printed (a store written by an
older version may hold them), and a huge value is echoed as its first characters and its length."""

from __future__ import annotations

import json
import re
import sqlite3

import pytest

from mi_cli.render import RICH_ROW_LIMIT
from tests.conftest import dump, one_error

ISSUER = "https://token.actions.githubusercontent.com"
ESC = "\x1b"
CSI = "\x9b"  # a one-character CSI (C1)
# Anything a terminal would act on: C0 but newline and tab (the structure of the output: lines, tsv's
# columns), DEL, C1, bidi overrides and isolates, line separators.
RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
BIG = "a" * 1_000_000
SHORT_LINE = 600  # no error line of these tests may be longer


def build(ok, mi):
    ok("group", "create", "-n", "rg", "-l", "westeurope")
    ok("identity", "create", "-g", "rg", "-n", "id1", "--tags", "env=dev")
    ok("resource", "create", "-g", "rg", "-n", "vm1", "--type", "vm", "--system-assigned")
    ok("identity", "assign", "--resource", "vm1", "-g", "rg", "--identities", "id1")
    ok("identity", "federated-credential", "create", "-n", "main", "--identity-name", "id1", "-g", "rg",
       "--issuer", ISSUER, "--subject", "repo:o/r:ref:refs/heads/main", "--description", "CI")
    return ok("identity", "show", "-g", "rg", "-n", "id1")["principalId"]


@pytest.fixture
def tenant(prebuilt):
    return prebuilt(build)


def one_error_line(result, code: str | None = None, exit_code: int = 1) -> str:
    """The command failed as az does: one short `ERROR: (Code) ...` error (az's three lines for a service's
    error), nothing raw, nothing on stdout; returns its first line."""
    assert result.code == exit_code, result.err[:500]
    assert result.out == ""
    assert one_error(result.err), result.err[:1000]
    line = result.err.splitlines()[0]
    for other in result.err.splitlines()[1:]:  # az's Code: and Message: lines repeat it: bounded and inert too
        assert len(other) <= SHORT_LINE and not RAW.search(other), other[:300]
    assert line.startswith("ERROR: (" + (code + ")" if code else "")), line[:300]
    assert len(line) <= SHORT_LINE, (len(line), line[:300])
    assert not RAW.search(line) and "\t" not in line, line
    return line


# --- 1. names: a trailing newline is not a name ---------------------------------------------------


@pytest.mark.parametrize("argv, code", [
    (["group", "create", "-n", "rg2\n", "-l", "westeurope"], "InvalidResourceGroup"),
    (["identity", "create", "-g", "rg", "-n", "id2\n"], "InvalidResourceName"),
    (["resource", "create", "-g", "rg", "-n", "vm2\n", "--type", "vm"], "InvalidResourceName"),
    (["resource", "create", "-g", "rg", "-n", "kv-two\n", "--type", "keyvault"], "InvalidResourceName"),
    (["resource", "create", "-g", "rg", "-n", "edge\n", "--type", "arc"], "InvalidResourceName"),
    (["identity", "federated-credential", "create", "-n", "fic\n", "--identity-name", "id1", "-g", "rg",
      "--issuer", ISSUER, "--subject", "s"], "BadRequest"),
])
def test_a_trailing_newline_is_refused_and_shown_escaped(tenant, mi, db, argv, code):
    before = dump(db)
    line = one_error_line(mi(*argv), code)
    assert "\\x0a" in line
    assert dump(db) == before


# --- 2. control characters are refused where a value is stored ------------------------------------


@pytest.mark.parametrize("argv, code", [
    (["subscription", "create", "-n", f"sub{ESC}]0;title\x07"], "InvalidSubscriptionName"),
    (["identity", "create", "-g", "rg", "-n", "id2", "--tags", f"k{ESC}[31m=v"], "InvalidTagNameCharacters"),
    (["identity", "create", "-g", "rg", "-n", "id2", "--tags", f"k=v{ESC}[31m"], "InvalidTagValueCharacters"),
    (["identity", "create", "-g", "rg", "-n", "id2", "--tags", f"k=v{CSI}2J"], "InvalidTagValueCharacters"),
    (["identity", "create", "-g", "rg", "-n", "id2", "--tags", "k=v\x7f"], "InvalidTagValueCharacters"),
    (["identity", "update", "-g", "rg", "-n", "id1", "--tags", f"k=v{ESC}"], "InvalidTagValueCharacters"),
    (["group", "create", "-n", "rg", "-l", "westeurope", "--tags", f"owner=me{ESC}[2J"], "InvalidTagValueCharacters"),
    (["resource", "create", "-g", "rg", "-n", "vm1", "--type", "vm", "--tags", f"a\tb=1"], "InvalidTagNameCharacters"),
    (["identity", "federated-credential", "create", "-n", "fic2", "--identity-name", "id1", "-g", "rg",
      "--issuer", ISSUER + f"/{ESC}[31m", "--subject", "s"], "BadRequest"),
    (["identity", "federated-credential", "create", "-n", "fic2", "--identity-name", "id1", "-g", "rg",
      "--issuer", ISSUER, "--subject", f"repo:o/r{ESC}]8;;http://x\x07"], "BadRequest"),
    (["identity", "federated-credential", "create", "-n", "fic2", "--identity-name", "id1", "-g", "rg",
      "--issuer", ISSUER, "--subject", "s", "--audiences", f"api://AzureADTokenExchange{CSI}"], "BadRequest"),
    (["identity", "federated-credential", "create", "-n", "fic2", "--identity-name", "id1", "-g", "rg",
      "--issuer", ISSUER, "--subject", "s", "--description", f"line one\nline two"], "BadRequest"),
    (["identity", "federated-credential", "create", "-n", "main", "--identity-name", "id1", "-g", "rg",
      "--issuer", ISSUER, "--subject", "repo:o/r:ref:refs/heads/main", "--description", f"{ESC}c"], "BadRequest"),
    (["role", "assignment", "create", "--assignee", "id1", "--role", "Reader", "-g", "rg", "--description",
      f"why{ESC}[8m"], "InvalidDescription"),
    (["identity", "create", "-g", "rg", "-n", "id2", "--tags", "k=\udcff"], "InvalidTagValueCharacters"),  # not UTF-8
])
def test_control_characters_are_refused_escaped_and_change_nothing(tenant, mi, db, argv, code):
    before = dump(db)
    line = one_error_line(mi(*argv), code)
    assert "control character" in line and ("\\x" in line or "\\udcff" in line)
    assert dump(db) == before


def _apply(mi, tmp_path, document: dict):
    path = tmp_path / "tenant.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return mi("apply", "-f", str(path))


@pytest.mark.parametrize("document, code", [
    ({"resourceGroups": [{"name": "rg-x", "location": "westeurope", "tags": {"team": f"a{ESC}[31m"}}]},
     "InvalidTagValueCharacters"),
    ({"resourceGroups": [{"name": "rg-x", "location": "westeurope", "tags": {"a/b": "1"}}]}, "InvalidTagNameCharacters"),
    ({"resourceGroups": [{"name": "rg-x", "location": "westeurope", "tags": {f"t{i}": "v" for i in range(51)}}]},
     "InvalidTagCount"),
    ({"resourceGroups": [{"name": "rg-x", "location": "westeurope"}],
      "userAssignedIdentities": [{"name": "uid1", "resourceGroup": "rg-x", "tags": {"k": f"{CSI}31m"}}]},
     "InvalidTagValueCharacters"),
    ({"tenant": {"displayName": f"Contoso{ESC}]0;owned\x07"}}, "InvalidParameter"),
    ({"subscriptions": [{"name": f"prod{ESC}[1m"}]}, "InvalidSubscriptionName"),
])
def test_apply_goes_through_the_same_checks(mi, db, tmp_path, document, code):
    """`mi apply` calls the commands' services, so a tenant file cannot store what a command cannot."""
    result = _apply(mi, tmp_path, {"apiVersion": "mi/v1", **document})
    line = one_error_line(result, code)
    assert ESC not in line and CSI not in line
    assert "rg-x" not in mi("group", "list", "-o", "json").out


def test_apply_refuses_an_escape_in_a_tag_value_through_main(db, tmp_path, capsys):
    from mi_cli.cli.main import main

    path = tmp_path / "tenant.yaml"
    path.write_text('apiVersion: mi/v1\nresourceGroups:\n  - name: rg-x\n    location: westeurope\n'
                    '    tags: {team: "red\\e[31m"}\n', encoding="utf-8")
    code = main(["--db", str(db), "apply", "-f", str(path)])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.err.startswith("ERROR: (InvalidTagValueCharacters)") and ESC not in captured.err
    assert "\\x1b[31m" in captured.err
    assert main(["--db", str(db), "group", "list", "-o", "json"]) == 0
    assert "rg-x" not in capsys.readouterr().out


def test_a_dangling_reference_in_a_tenant_file_cannot_carry_control_characters(mi, db, tmp_path):
    uami = ("/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-x/providers/"
            f"Microsoft.ManagedIdentity/userAssignedIdentities/gone{ESC}[31m")
    result = _apply(mi, tmp_path, {
        "apiVersion": "mi/v1",
        "resourceGroups": [{"name": "rg-x", "location": "westeurope"}],
        "resources": [{"name": "vm1", "type": "vm", "resourceGroup": "rg-x", "identity": {"userAssigned": [
            {"id": uami, "principalId": "11111111-1111-4111-8111-111111111111",
             "clientId": "22222222-2222-4222-8222-222222222222"}]}}]})
    one_error_line(result)
    assert "rg-x" not in mi("group", "list", "-o", "json").out


# --- 3. whatever the store holds, what is printed is inert -------------------------------------------

EVIL = f"x{ESC}]0;pwned\x07{ESC}[2J{CSI}31m\u202eevil\r\n\tz"


def _poison(db):
    """What a store written before these checks may hold: control characters in names, tags,
    descriptions and the subscription's name."""
    con = sqlite3.connect(db)
    with con:
        con.execute("UPDATE resource_group SET name = ?, tags = ?", ("rg" + EVIL, json.dumps({"k" + EVIL: "v" + EVIL})))
        con.execute("UPDATE user_assigned_identity SET name = ?, tags = ?", ("id1" + EVIL, json.dumps({"env": EVIL})))
        con.execute("UPDATE resource SET name = ?", ("vm1" + EVIL,))
        con.execute("UPDATE subscription SET name = ?", ("sub" + EVIL,))
        con.execute("UPDATE federated_credential SET description = ?, subject = ?", (EVIL, "s" + EVIL))
        con.execute("UPDATE service_principal SET display_name = display_name || ?", (EVIL,))
    con.close()


@pytest.mark.parametrize("argv", [
    ["group", "list", "-o", "table"],
    ["group", "list", "-o", "tsv"],
    ["group", "list", "-o", "yaml"],
    ["group", "list", "-o", "json"],
    ["group", "list", "-o", "jsonc"],
    ["group", "list", "--query", "[].tags", "-o", "table"],
    ["identity", "list", "-o", "table"],
    ["identity", "list", "-o", "tsv"],
    ["identity", "list", "-o", "yaml"],
    ["identity", "list", "--kind", "system", "-o", "table"],
    # names are looked up by their key, which the old store kept as it was
    ["identity", "federated-credential", "list", "--identity-name", "id1", "-g", "rg", "-o", "table"],
    ["identity", "federated-credential", "list", "--identity-name", "id1", "-g", "rg", "-o", "tsv"],
    ["identity", "federated-credential", "list", "--identity-name", "id1", "-g", "rg", "-o", "yaml"],
    ["resource", "list", "-o", "table"],
    ["sp", "list", "-o", "table"],
    ["subscription", "list", "-o", "table"],
    ["log", "-o", "table"],
    ["tree"],
    ["doctor"],
    ["graph"],
    ["graph", "--format", "dot"],
    ["graph", "--format", "json"],
])
def test_text_from_an_old_store_is_printed_inert(tenant, mi, db, argv):
    clean = mi(*argv).out
    _poison(db)
    result = mi(*argv)
    assert result.code == 0, result.err[:500]
    assert not RAW.search(result.out), [line for line in result.out.splitlines() if RAW.search(line)][:3]
    assert not RAW.search(result.err)
    if "tsv" in argv or "table" in argv:  # no value broke a line (or, in tsv, added a column)
        items = mi(*[a for a in argv if a not in ("tsv", "table")], "json").json
        lines = result.out.splitlines()
        assert len(lines) == len(items) + (2 if "table" in argv else 0), lines
        if "tsv" in argv:
            assert sorted(line.count("\t") for line in lines) == sorted(line.count("\t") for line in clean.splitlines())


def test_json_output_keeps_its_escapes_and_stays_json(tenant, mi, db):
    _poison(db)
    out = mi("group", "list", "-o", "json").out
    assert "\\u001b]0;pwned\\u0007" in out and "\\u009b31m" in out and "\\u202eevil" in out
    assert json.loads(out)[0]["name"] == "rg" + EVIL  # the same data, only written with escapes


def test_yaml_output_stays_yaml(tenant, mi, db):
    import yaml

    _poison(db)
    out = mi("group", "list", "-o", "yaml").out
    assert yaml.safe_load(out)[0]["name"] == "rg" + EVIL


def test_a_big_table_is_inert_too(tenant, mi, db, ok):
    """Beyond RICH_ROW_LIMIT rows a table is written as plain rows: as inert as rich's."""
    con = sqlite3.connect(db)
    with con:
        gk = con.execute("SELECT pk, subscription_id, location, created_at FROM resource_group").fetchone()
        con.executemany(
            "INSERT INTO resource_group (subscription_id, name, name_key, location, tags, created_at) VALUES (?,?,?,?,?,?)",
            [(gk[1], f"g{i}{EVIL}", f"g{i}{EVIL}".casefold(), gk[2], "{}", gk[3]) for i in range(RICH_ROW_LIMIT + 5)])
    con.close()
    out = mi("group", "list", "-o", "table").out
    assert len(out.splitlines()) > RICH_ROW_LIMIT
    assert not RAW.search(out)
    assert "\\x1b]0;pwned\\x07" in out


def test_errors_that_quote_stored_names_are_inert(tenant, mi, db):
    _poison(db)
    one_error_line(mi("group", "show", "-n", "rg" + EVIL), "ResourceGroupNotFound", 3)
    one_error_line(mi("identity", "show", "-g", "rg", "-n", "id1" + EVIL), "ResourceNotFound", 3)


def test_warnings_that_quote_stored_names_are_inert(tenant, mi, db):
    _poison(db)
    result = mi("identity", "delete", "-g", "rg", "-n", "id1")
    assert result.code == 0 and "WARNING" in result.err  # it lists the resources that still reference it
    assert not RAW.search(result.err)


# --- 4. error lines are bounded ---------------------------------------------------------------------


@pytest.mark.parametrize("argv, code", [
    (["group", "create", "-n", BIG, "-l", "westeurope"], "InvalidResourceGroup"),
    (["identity", "create", "-g", "rg", "-n", BIG], "InvalidResourceName"),
    (["resource", "create", "-g", "rg", "-n", BIG, "--type", "vm"], "InvalidResourceName"),
    (["resource", "create", "-g", "rg", "-n", "x", "--type", BIG], "InvalidResourceType"),
    (["group", "show", "-n", BIG], "ResourceGroupNotFound"),
    (["identity", "show", "-g", "rg", "-n", BIG], "ResourceNotFound"),
    (["identity", "show", "-g", BIG, "-n", "id1"], "ResourceGroupNotFound"),
    (["identity", "create", "-g", "rg", "-n", "id2", "--tags", BIG + "=1"], "InvalidTagNameLength"),
    (["identity", "create", "-g", "rg", "-n", "id2", "--tags", "k=" + BIG], "InvalidTagValueLength"),
    (["identity", "create", "-g", "rg", "-n", "id2", "--tags", "a " * 200_000], "InvalidTagNameLength"),
    (["identity", "create", "-g", "rg", "-n", "id2", "--tags", *[f"t{i}" for i in range(100_000)]], "InvalidTagCount"),
    (["subscription", "create", "-n", "sub " * 250_000], "InvalidSubscriptionName"),
    (["identity", "federated-credential", "create", "-n", BIG, "--identity-name", "id1", "-g", "rg",
      "--issuer", ISSUER, "--subject", "s"], "BadRequest"),
    (["identity", "federated-credential", "create", "-n", "fic2", "--identity-name", "id1", "-g", "rg",
      "--issuer", "http://" + BIG, "--subject", "s"], "BadRequest"),
    (["identity", "federated-credential", "create", "-n", "fic2", "--identity-name", "id1", "-g", "rg",
      "--issuer", ISSUER, "--subject", "s", "--description", "d" * 601], "BadRequest"),
    (["role", "assignment", "create", "--assignee", BIG, "--role", "Reader", "-g", "rg"], "PrincipalNotFound"),
    (["role", "assignment", "create", "--assignee", "id1", "--role", BIG, "-g", "rg"], None),
    (["role", "assignment", "create", "--assignee", "id1", "--role", "Reader", "--scope", "/" + BIG], None),
    (["role", "assignment", "create", "--assignee", "id1", "--role", "Reader", "-g", "rg",
      "--description", "word " * 100_000], "InvalidDescription"),
])
def test_a_huge_value_makes_one_short_error_line(tenant, mi, db, argv, code):
    before = dump(db)
    result = mi(*argv)
    line = one_error_line(result, code, 3 if code in ("ResourceNotFound", "ResourceGroupNotFound") else 1)
    assert "characters)" in line or len(line) < 400
    assert dump(db) == before


def test_a_huge_location_is_echoed_bounded_beside_azures_list_of_regions(tenant, mi, db):
    """Azure's text lists every region (some 800 characters): that list is kept, the location cut."""
    before = dump(db)
    result = mi("group", "create", "-n", "rg2", "-l", BIG)
    assert result.code == 1 and one_error(result.err)
    assert result.err.startswith("ERROR: (LocationNotAvailableForResourceGroup) The provided location '" + "a" * 100 + "…(1,000,000")
    assert "westeurope" in result.err and max(len(line) for line in result.err.splitlines()) < 1200
    assert dump(db) == before


def test_a_huge_name_is_echoed_as_its_start_and_length(tenant, mi):
    line = one_error_line(mi("group", "create", "-n", BIG, "-l", "westeurope"), "InvalidResourceGroup")
    assert "'" + "a" * 100 + "…(1,000,000 characters)'" in line
    line = one_error_line(mi("identity", "create", "-g", "rg", "-n", BIG), "InvalidResourceName")
    assert "…(1,000,000 characters)" in line


def test_a_query_that_fails_on_a_big_result_is_one_short_line(tenant, mi, db):
    con = sqlite3.connect(db)
    with con:
        g = con.execute("SELECT subscription_id, location, created_at FROM resource_group").fetchone()
        con.executemany(
            "INSERT INTO resource_group (subscription_id, name, name_key, location, tags, created_at) VALUES (?,?,?,?,?,?)",
            [(g[0], f"group-{i:05d}", f"group-{i:05d}", g[1], "{}", g[2]) for i in range(5000)])
    con.close()
    for query in ("abs(@)", "sum(@)", "length(@[0].location) + 'x'", "join(', ', @)"):
        result = mi("group", "list", "--query", query, "-o", "json")
        line = one_error_line(result, exit_code=2 if "+" in query else 1)
        assert "--query" in line


def test_a_huge_query_is_echoed_bounded(tenant, mi):
    one_error_line(mi("group", "list", "--query", "[" + BIG), exit_code=2)
    one_error_line(mi("group", "list", "--query", f"[?name=='{ESC}[31m'"), exit_code=2)


# --- 5. the tired or hostile user ----------------------------------------------------------------


@pytest.mark.parametrize("argv", [
    ["group", "create", "-n", "", "-l", "westeurope"],
    ["group", "create", "-n", "   ", "-l", "westeurope"],
    ["group", "create", "-n", "rg2", "-l", ""],
    ["identity", "create", "-g", "rg", "-n", ""],
    ["identity", "create", "-g", "rg", "-n", "   "],
    ["identity", "create", "-g", "rg", "-n", "\u0456d2"],  # Cyrillic і: a look-alike of "id2"
    ["identity", "create", "-g", "rg", "-n", "\uff49\uff44\uff12"],  # fullwidth "id2"
    ["identity", "create", "-g", "rg", "-n", "id\u200b2"],  # a zero-width space
    ["identity", "create", "-g", "rg", "-n", "id2", "--tags", "   =v"],
    ["identity", "create", "-g", "rg", "-n", "id2", "--tags", *[f"t{i}=v" for i in range(51)]],
    ["identity", "update", "-g", "rg", "-n", "id1", "--tags", *[f"t{i}=v" for i in range(51)]],
    ["resource", "create", "-g", "rg", "-n", "   ", "--type", "vm"],
    ["resource", "create", "-g", "rg", "-n", "", "--type", "webapp"],
    ["resource", "create", "-g", "rg", "-n", "kv\u2013one", "--type", "keyvault"],  # an en dash, not a hyphen
    ["resource", "create", "-g", "rg", "-n", "Storage1", "--type", "storage"],
    ["resource", "create", "-g", "rg", "-n", "x", "--type", ""],
    ["identity", "federated-credential", "create", "-n", "fic2", "--identity-name", "id1", "-g", "rg",
      "--issuer", "   ", "--subject", "s"],
    ["identity", "federated-credential", "create", "-n", "fic2", "--identity-name", "id1", "-g", "rg",
      "--issuer", ISSUER, "--subject", ""],
    ["subscription", "create", "-n", "   "],
    ["role", "assignment", "create", "--assignee", "", "--role", "Reader", "-g", "rg"],
    # GUIDs in forms uuid.UUID reads but ARM never writes would be stored as typed
    ["role", "assignment", "create", "--assignee", "id1", "--role", "Reader", "-g", "rg",
     "--name", "{11111111-1111-4111-8111-111111111111}"],
    ["role", "assignment", "create", "--assignee", "id1", "--role", "Reader", "-g", "rg",
     "--name", "urn:uuid:11111111-1111-4111-8111-111111111111"],
    ["role", "assignment", "create", "--assignee", "id1", "--role", "Reader", "-g", "rg",
     "--name", "1111_111-1111-4111-8111-111111111111"],
    ["role", "assignment", "create", "--assignee-object-id", "{11111111-1111-4111-8111-111111111111}",
     "--assignee-principal-type", "ServicePrincipal", "--role", "Reader", "-g", "rg"],
    ["role", "assignment", "create", "--assignee-object-id", "11111111111141118111111111111111",
     "--assignee-principal-type", "ServicePrincipal", "--role", "Reader", "-g", "rg"],
])
def test_empty_blank_and_look_alike_values_are_refused(tenant, mi, db, argv):
    before = dump(db)
    result = mi(*argv)
    assert result.code != 0
    one_error_line(result, exit_code=result.code)
    assert dump(db) == before


def test_fifty_tags_are_fine_and_fifty_one_are_not(tenant, ok, mi):
    ok("identity", "update", "-g", "rg", "-n", "id1", "--tags", *[f"t{i}=v" for i in range(50)])
    line = one_error_line(mi("identity", "update", "-g", "rg", "-n", "id1", "--tags", *[f"t{i}=v" for i in range(51)]),
                          "InvalidTagCount")
    assert "51" in line


def test_custom_roles_refuse_control_characters_and_huge_definitions(tenant, mi, db, ok):
    group = ok("group", "show", "-n", "rg")["id"]
    before = dump(db)
    role = {"Name": f"Reader{ESC}[2J", "Actions": ["Microsoft.Resources/subscriptions/resourceGroups/read"],
            "AssignableScopes": [group]}
    r = mi("role", "definition", "create", "--role-definition", json.dumps(role))
    assert "(InvalidRoleDefinition) The role name contains a control character ('\\x1b' at position 7)" in one_error_line(r)
    role["Name"], role["Description"] = "Reader Plus", f"reads{CSI}"
    assert "role description contains a control character" in one_error_line(mi("role", "definition", "create",
                                                                                 "--role-definition", json.dumps(role)))
    # a value far longer than any file name is the JSON itself, not a path that cannot be opened
    r = mi("role", "definition", "create", "--role-definition", "{" * 100_000)
    assert "(InvalidRoleDefinition) The role definition is not valid JSON" in one_error_line(r)
    assert dump(db) == before


def test_usage_errors_are_bounded_too(tenant, mi):
    r = mi("group", "list", "-o", BIG)
    assert r.code == 2 and len(r.err) < SHORT_LINE and one_error(r.err) and "1,000,000 characters" in r.err
