"""Azure's naming rules, exactly: each rule's edges, whole-value matching (no trailing newline), and
the catalog's per-type rules. Sources: azure-docs resource-name-rules.md (ms.date 03/14/2025) and the
msi REST spec (federated identity credential names)."""

from __future__ import annotations

import io
import re

import pytest

from mi_cli.catalog import GENERIC_NAME_RULE, catalog
from mi_cli.errors import MiError, ValidationError, bounded, inert, shown
from mi_cli.render import render, to_json, to_tsv, to_yaml
from mi_cli.services import validation as v


def refused(fn, *args) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        fn(*args)
    return info.value


# --- resource groups: 1-90, _-.() and Char.IsLetterOrDigit, not ending with a period ---------------


@pytest.mark.parametrize("name", [
    "r", "rg", "my_rg-(1).x", "a" * 90, "Grüße", "数据组", "\u01c5x",  # Lt
    "\u02b0x",  # Lm
    "\u0663\u0664",  # Arabic-Indic digits (Nd)
    "..a", "(", "-", "_",
])
def test_group_names_azure_accepts(name):
    assert v.group_name(name) == name


@pytest.mark.parametrize("name", [
    "", "a" * 91, "rg.", "rg\n", "rg\r\n", "\nrg", "r g", " rg", "rg ", "rg/x", "rg#", "rg\x1b[31m", "rg\x00",
    "x\u00b2",  # superscript two: a digit to Python's \w, not to Char.IsLetterOrDigit (No)
    "\u216b",  # roman numeral twelve (Nl)
    "e\u0301",  # a combining accent (Mn)
    "a\u200bb",  # zero-width space (Cf)
    "a\u202eb",  # right-to-left override
    "a\u00a0b",  # no-break space
    "rg\udcff",  # a byte of argv that was not UTF-8
])
def test_group_names_azure_refuses(name):
    err = refused(v.group_name, name)
    assert err.code == "InvalidResourceGroup"
    assert not re.search("[\x00-\x1f\x7f-\x9f\u202e]", str(err))


# --- user-assigned identities: 3-128, ^[A-Za-z0-9][A-Za-z0-9_-]*$ ------------------------------------


@pytest.mark.parametrize("name", ["abc", "a-b", "a_b", "0ab", "A" * 128, "id-1_x"])
def test_uami_names_azure_accepts(name):
    assert v.uami_name(name) == name


@pytest.mark.parametrize("name", [
    "ab", "a" * 129, "abc\n", "-abc", "_abc", "a.bc", "a bc", "abc\x1b", "idé", "\u0456d1",  # Cyrillic і
    "\uff49\uff44\uff11",  # fullwidth
    "\u0661\u0662\u0663",  # Arabic-Indic digits: \d in Python, not alphanumerics to Azure
])
def test_uami_names_azure_refuses(name):
    assert refused(v.uami_name, name).code == "InvalidResourceName"


# --- federated identity credentials: ^[a-zA-Z0-9]{1}[a-zA-Z0-9-_]{2,119}$ -----------------------------


@pytest.mark.parametrize("name", ["abc", "a" * 120, "main-branch", "x_1"])
def test_fic_names_azure_accepts(name):
    assert v.fic_name(name) == name


@pytest.mark.parametrize("name", ["ab", "a" * 121, "abc\n", "-abc", "_abc", "a.b", "ab c", "abc\x9b"])
def test_fic_names_azure_refuses(name):
    assert refused(v.fic_name, name).code == "BadRequest"


# --- the catalog's rules ------------------------------------------------------------------------------


def rule(alias):
    return catalog().resolve(alias)[0]


@pytest.mark.parametrize("alias, ok, bad", [
    ("vm", ["v", "vm1", "web_01", "a.b-c_", "a" * 64], ["vm1\n", "-vm", "vm.", "vm-", "a" * 65, "v m", "vm\x1b"]),
    ("vmss", ["ss1", "a" * 64], ["ss\n", "a" * 65, "_ss"]),
    ("keyvault", ["kv1", "kv-app-01", "a" * 24], ["kv", "a" * 25, "1kv", "kv-", "kv--app", "kv_app", "kv-app\n"]),
    ("storage", ["abc", "store01"], ["ab", "Store01", "store-01", "a" * 25, "store\n"]),
    ("webapp", ["ab", "web-1", "café", "a" * 60], ["a", "-web", "web-", "web_1", "web.1", "a" * 61, "web\n"]),
    ("slot", ["ab", "staging"], ["a", "a" * 60, "st_g"]),
    ("containerapp", ["ab", "app-1"], ["a", "App", "1app", "app-", "a" * 33]),
    ("aci", ["a", "group-1"], ["Group", "-g", "g-", "g--1", "a" * 64]),
    ("aks", ["a", "aks_1-x"], ["-a", "a_", "a.b", "a" * 64]),
    ("logicapp", ["flow", "f(1).x_y-z"], ["a b", "a" * 44, "a/b"]),
    ("automation", ["auto-1", "a" * 50], ["auto", "1auto1", "auto-1-", "a" * 51]),
    ("sql", ["s", "sql-1"], ["Sql", "-s", "s-", "s_1", "a" * 64]),
    ("sql-db", ["db 1", "db(1)"], ["db.", "db ", "a/b", "db\x07", "a" * 129]),
    ("acr", ["reg01", "A" * 50], ["reg", "reg-01", "a" * 51]),
    ("cosmosdb", ["abc", "db-1"], ["ab", "Db1", "-db", "a" * 45]),
    ("synapse", ["ws1", "a-b"], ["ws-ondemand", "Ws", "-ws", "a" * 51]),
    ("arc", ["edge-01", "x" * 260, "a b"], ["x" * 261, "a.", "a ", "a/b", "a#b", "a\n", "a\x1b", "a\x9b", ""]),
])
def test_catalog_name_rules(alias, ok, bad):
    rt = rule(alias)
    for name in ok:
        assert v.resource_name(name, rt.name_rule, rt.type) == name, name
    for name in bad:
        err = refused(v.resource_name, name, rt.name_rule, rt.type)
        assert err.code == "InvalidResourceName", name


def test_every_rule_compiles_and_is_matched_whole():
    for rt in catalog().types:
        pattern = re.compile(rt.name_rule.pattern)
        assert rt.name_rule.min >= 1 and rt.name_rule.max >= rt.name_rule.min, rt.type
        assert not pattern.pattern.startswith("^"), rt.type  # fullmatch does that, and `$` is a trap
        shortest = "a" * max(rt.name_rule.min, 3)
        assert not re.fullmatch(pattern, shortest + "\n"), rt.type
    assert GENERIC_NAME_RULE.max == 260


# --- tags ---------------------------------------------------------------------------------------------


def test_tags_at_their_limits():
    tags = {f"t{i}": "" for i in range(49)} | {"k" * 512: "v" * 256}
    assert v.check_tags(tags) == tags
    assert refused(v.check_tags, {f"t{i}": "v" for i in range(51)}).code == "InvalidTagCount"
    assert refused(v.check_tags, {"k" * 513: "v"}).code == "InvalidTagNameLength"
    assert refused(v.check_tags, {"k": "v" * 257}).code == "InvalidTagValueLength"


@pytest.mark.parametrize("tags, code", [
    ({"   ": "v"}, "InvalidTagName"),
    ({"": "v"}, "InvalidTagName"),
    ({"a<b": "v"}, "InvalidTagNameCharacters"),
    ({"a\x1b[31m": "v"}, "InvalidTagNameCharacters"),
    ({"a\x7f": "v"}, "InvalidTagNameCharacters"),  # DEL and C1 are control characters too (Char.IsControl)
    ({"a\x9b": "v"}, "InvalidTagNameCharacters"),
    ({"k": "a\x1b]0;t\x07"}, "InvalidTagValueCharacters"),
    ({"k": "a\nb"}, "InvalidTagValueCharacters"),
    ({"k": "a\x85"}, "InvalidTagValueCharacters"),
])
def test_tags_azure_refuses(tags, code):
    err = refused(v.check_tags, tags)
    assert err.code == code
    assert not re.search("[\x00-\x1f\x7f-\x9f]", str(err))


def test_parse_tags_keeps_az_forms():
    assert v.parse_tags(None) is None
    assert v.parse_tags([""]) == {}
    assert v.parse_tags(["a=1", "b", "c=x=y"]) == {"a": "1", "b": "", "c": "x=y"}
    assert refused(v.parse_tags, [" =v"]).code == "InvalidTagName"


def test_guids_only_in_the_form_arm_writes():
    assert v.is_guid("11111111-aaaa-4111-8111-ABCDEF111111")
    for text in ("{11111111-1111-4111-8111-111111111111}", "urn:uuid:11111111-1111-4111-8111-111111111111",
                 "11111111111141118111111111111111", "1111_111-1111-4111-8111-111111111111",
                 "11111111-1111-4111-8111-111111111111\n", " 11111111-1111-4111-8111-111111111111", ""):
        assert not v.is_guid(text), text


# --- free text ------------------------------------------------------------------------------------


def test_free_text_refuses_c0_and_c1_and_says_where():
    assert v.no_control("plain text, with ünïcödé and \u202e is not C0/C1", what="x") is not None
    with pytest.raises(ValidationError) as info:
        v.no_control("abc\x1b[31m" + "z" * 500, what="role assignment description", code="InvalidDescription")
    message = str(info.value)
    assert info.value.code == "InvalidDescription"
    assert "('\\x1b' at position 4)" in message and "…(508 characters)" in message
    assert "\x1b" not in message and len(message) < 300
    for c in "\t\n\r\x00\x7f\x80\x9f\udcff":
        with pytest.raises(ValidationError):
            v.no_control(f"a{c}b", what="x")


# --- inert text and bounded errors -----------------------------------------------------------------


def test_inert_escapes_what_a_terminal_acts_on_and_nothing_else():
    assert inert("plain: ünïcödé, emoji 🙂, quotes '\" and a backslash \\") == "plain: ünïcödé, emoji 🙂, quotes '\" and a backslash \\"
    assert inert("a\x1b[31mb\x07\x9b\x7f\u202e\u2028\udcff") == "a\\x1b[31mb\\x07\\x9b\\x7f\\u202e\\u2028\\udcff"


def test_error_messages_are_bounded_in_one_place():
    big = "n" * 50_000_000
    err = ValidationError("InvalidResourceName", f"Resource name '{big}' is invalid; '{big}' again.")
    assert len(str(err)) < 400 and str(err).count("…(50,000,000 characters)") == 2
    assert len(str(MiError("X", "word " * 100_000))) < 1100
    ordinary = "The Resource 'Microsoft.Compute/virtualMachines/vm1' under resource group 'rg' was not found."
    assert MiError("ResourceNotFound", ordinary).message == ordinary
    assert bounded("x" * 300) == "x" * 300 and shown("x" * 100) == "x" * 100
    assert shown("y" * 101) == "y" * 100 + "…(101 characters)"
    assert str(MiError("X", "a\x1bb")) == "(X) a\\x1bb"


# --- every output format ------------------------------------------------------------------------


EVIL = {"name": "x\x1b]0;t\x07\x9b2J\u202e\r\n\t\x85\u2028y", "ok": "café"}


def test_formats_are_inert_and_ordinary_text_is_untouched():
    out = to_json([EVIL])
    assert not re.search("[\x00-\x1f\x7f-\x9f\u2028\u202e]", out.replace("\n", ""))
    assert '"ok": "café"' in out and "\\u009b" in out and "\\u202e" in out and "\\u0085" in out
    import json

    assert json.loads(out) == [EVIL]
    assert to_json({"a": "b"}) == '{\n  "a": "b"\n}\n'

    import yaml

    y = to_yaml([EVIL])
    assert yaml.safe_load(y) == [EVIL]
    assert not re.search("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u202e]", y)
    assert to_yaml({"a": "b", "c": "café"}) == yaml.safe_dump({"a": "b", "c": "café"}, default_flow_style=False,
                                                              allow_unicode=True, sort_keys=True)

    t = to_tsv([EVIL])
    assert t.count("\t") == 1 and t.count("\n") == 1 and "\\x0a\\x09" in t

    for rows in (1, 600):  # rich's table, and the plain rows of a big table
        buf = io.StringIO()
        render([EVIL] * rows, "table", out=buf)
        assert not re.search("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u202e]", buf.getvalue())
        assert len(buf.getvalue().splitlines()) == rows + 2


def test_a_query_error_on_a_big_result_is_bounded():
    data = [{"name": "g" * 1000}] * 1000
    with pytest.raises(ValidationError) as info:
        render(data, "json", query="abs(@)", out=io.StringIO())
    assert info.value.code == "InvalidArgumentValue"
    assert str(info.value).startswith("(InvalidArgumentValue) Invalid jmespath query supplied for `--query`: In function abs()")
    assert len(str(info.value)) < 400
