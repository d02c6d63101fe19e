"""`mi keyvault secret` as a CI script uses it: seed secrets, read them back as az prints them, exit
codes, and secrets through `mi export --include-secrets` and `mi apply`."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import az_error, dump, run_mi


def build_vault(ok, mi):
    ok("group", "create", "-n", "rg", "-l", "westeurope")
    ok("resource", "create", "-g", "rg", "-n", "kv1", "--type", "keyvault")


@pytest.fixture
def vault(prebuilt):
    return prebuilt(build_vault)


def _secret(ok, *args):
    return ok("keyvault", "secret", *args)


def test_a_ci_script_seeds_a_secret_and_reads_it_back_as_az_prints_it(ok, mi, vault):
    made = _secret(ok, "set", "--vault-name", "kv1", "-n", "db-pass", "--value", "hunter2", "--content-type", "password",
                   "--tags", "env=ci", "team=a", "--expires", "2030-01-31T00:00:00Z")
    assert re.fullmatch(r"https://kv1\.vault\.azure\.net/secrets/db-pass/[0-9a-f]{32}", made["id"])
    assert sorted(made) == ["attributes", "contentType", "id", "kid", "managed", "name", "tags", "value"]
    assert made["value"] == "hunter2" and made["name"] == "db-pass" and made["contentType"] == "password"
    assert made["tags"] == {"env": "ci", "team": "a", "file-encoding": "utf-8"}  # az keeps the encoding as a tag
    assert made["attributes"]["expires"] == "2030-01-31T00:00:00+00:00" and made["attributes"]["notBefore"] is None
    assert made["attributes"]["recoveryLevel"] == "Recoverable+Purgeable" and made["attributes"]["recoverableDays"] == 90
    r = mi("keyvault", "secret", "show", "--vault-name", "kv1", "-n", "db-pass", "--query", "value", "-o", "tsv")
    assert (r.code, r.out, r.err) == (0, "hunter2\n", "")
    assert _secret(ok, "show", "--id", made["id"])["value"] == "hunter2"
    listed = _secret(ok, "list", "--vault-name", "kv1")
    assert [s["id"] for s in listed] == ["https://kv1.vault.azure.net/secrets/db-pass"]
    assert "value" not in listed[0] and "kid" not in listed[0]


def test_a_value_from_a_file_and_versions(ok, mi, vault, tmp_path):
    (tmp_path / "cert.bin").write_bytes(b"\x00\x01")
    first = _secret(ok, "set", "--vault-name", "kv1", "-n", "blob", "--file", str(tmp_path / "cert.bin"), "--encoding", "base64")
    assert first["value"] == "AAE=" and first["tags"] == {"file-encoding": "base64"}
    second = _secret(ok, "set", "--vault-name", "kv1", "-n", "blob", "--value", "two")
    versions = _secret(ok, "list-versions", "--vault-name", "kv1", "-n", "blob")
    assert [v["id"] for v in versions] == [first["id"], second["id"]]
    old = first["id"].rsplit("/", 1)[1]
    assert _secret(ok, "show", "--vault-name", "kv1", "-n", "blob", "--version", old)["value"] == "AAE="
    r = mi("keyvault", "secret", "set", "--vault-name", "kv1", "-n", "blob", "--value", "x", "--file", "f")
    assert r.code == 2 and "incorrect usage: [Required] --value VALUE | --file PATH" in r.err


def test_disabled_deleted_recovered_purged(ok, mi, vault):
    _secret(ok, "set", "--vault-name", "kv1", "-n", "s", "--value", "v")
    off = _secret(ok, "set-attributes", "--vault-name", "kv1", "-n", "s", "--enabled", "false")
    assert off["attributes"]["enabled"] is False and off["value"] is None
    r = mi("keyvault", "secret", "show", "--vault-name", "kv1", "-n", "s")
    assert r.code == 1 and r.err == az_error("Forbidden", "Operation get is not allowed on a disabled secret.")
    _secret(ok, "set-attributes", "--vault-name", "kv1", "-n", "s", "--enabled", "true")

    gone = _secret(ok, "delete", "--vault-name", "kv1", "-n", "s")
    assert gone["recoveryId"] == "https://kv1.vault.azure.net/deletedsecrets/s" and gone["value"] is None
    assert gone["deletedDate"] and gone["scheduledPurgeDate"]
    r = mi("keyvault", "secret", "show", "--vault-name", "kv1", "-n", "s")
    assert r.code == 3 and r.err.startswith("ERROR: (SecretNotFound) A secret with (name/id) s was not found in this key vault.")
    r = mi("keyvault", "secret", "set", "--vault-name", "kv1", "-n", "s", "--value", "again")
    assert r.code == 1 and r.err.startswith("ERROR: (Conflict) Secret s is currently in a deleted but recoverable state")
    assert [d["name"] for d in _secret(ok, "list-deleted", "--vault-name", "kv1")] == ["s"]
    assert _secret(ok, "show-deleted", "--id", gone["recoveryId"])["name"] == "s"

    back = _secret(ok, "recover", "--vault-name", "kv1", "-n", "s")
    assert back["value"] is None and back["id"] == gone["id"]
    assert _secret(ok, "show", "--vault-name", "kv1", "-n", "s")["value"] == "v"

    _secret(ok, "delete", "--vault-name", "kv1", "-n", "s")
    r = mi("keyvault", "secret", "purge", "--vault-name", "kv1", "-n", "s")
    assert (r.code, r.out, r.err) == (0, "", "")
    r = mi("keyvault", "secret", "purge", "--vault-name", "kv1", "-n", "s")
    assert r.code == 3 and r.err == az_error("SecretNotFound", "Deleted Secret not found: s")
    assert _secret(ok, "list-deleted", "--vault-name", "kv1") == []


def test_errors_change_nothing_and_exit_as_az(mi, vault, db):
    before = dump(db)
    r = mi("keyvault", "secret", "set", "--vault-name", "kv1", "-n", "bad_name", "--value", "v")
    assert r.code == 1 and r.err == az_error("BadParameter", "The request URI contains an invalid name: bad_name")
    r = mi("keyvault", "secret", "list", "--vault-name", "nokv")
    assert r.code == 3 and r.err.startswith("ERROR: (VaultNotFound) There is no vault named 'nokv'") and r.err.count("\n") == 1
    r = mi("keyvault", "secret", "show", "--vault-name", "kv1")
    assert r.code == 2
    assert dump(db) == before


def test_deleting_the_vault_takes_its_secrets(ok, mi, vault):
    _secret(ok, "set", "--vault-name", "kv1", "-n", "s", "--value", "v")
    ok("resource", "delete", "-g", "rg", "-n", "kv1", "--yes")
    ok("resource", "create", "-g", "rg", "-n", "kv1", "--type", "keyvault")
    assert _secret(ok, "list", "--vault-name", "kv1") == []
    assert _secret(ok, "list-deleted", "--vault-name", "kv1") == []


def test_secrets_travel_in_the_tenant_file_only_when_asked(ok, mi, vault, tmp_path, db):
    _secret(ok, "set", "--vault-name", "kv1", "-n", "db-pass", "--value", "hunter2", "--tags", "env=ci")
    _secret(ok, "set", "--vault-name", "kv1", "-n", "api-key", "--value", "k", "--disabled")
    plain = mi("export", "-o", "json")
    assert plain.code == 0 and "secrets" not in plain.out and "hunter2" not in plain.out
    r = mi("export", "-o", "json", "--include-secrets")
    vaults = [x for x in r.json["resources"] if x["name"] == "kv1"]
    assert vaults[0]["secrets"] == [
        {"name": "api-key", "value": "k", "tags": {"file-encoding": "utf-8"}, "enabled": False},
        {"name": "db-pass", "value": "hunter2", "tags": {"env": "ci", "file-encoding": "utf-8"}}]
    (tmp_path / "tenant.json").write_text(r.out)

    # into a new store: created; again: unchanged; the export is the same file
    other = tmp_path / "other.db"
    first = run_mi(other, "apply", "-f", str(tmp_path / "tenant.json"), "-o", "json")
    assert first.code == 0, first.err
    assert sorted((c["op"], c["id"].rsplit("/", 1)[1]) for c in first.json if c["kind"] == "secret") == [
        ("create", "api-key"), ("create", "db-pass")]
    again = run_mi(other, "apply", "-f", str(tmp_path / "tenant.json"), "-o", "json")
    assert {c["op"] for c in again.json} == {"unchanged"}
    assert run_mi(other, "export", "-o", "json", "--include-secrets").out == r.out
    shown = run_mi(other, "keyvault", "secret", "show", "--vault-name", "kv1", "-n", "db-pass", "-o", "json")
    assert shown.json["value"] == "hunter2"

    # a changed value is a new version; a file without secrets leaves them alone, --prune included
    doc = r.json
    vaults = [x for x in doc["resources"] if x["name"] == "kv1"]
    vaults[0]["secrets"][1]["value"] = "rotated"
    (tmp_path / "rotated.json").write_text(json.dumps(doc))
    r = mi("apply", "-f", str(tmp_path / "rotated.json"))
    assert r.code == 0 and r.err == "applied: 1 update, 5 unchanged\n"
    assert len(_secret(ok, "list-versions", "--vault-name", "kv1", "-n", "db-pass")) == 2
    assert _secret(ok, "show", "--vault-name", "kv1", "-n", "db-pass")["value"] == "rotated"
    (tmp_path / "plain.json").write_text(plain.out)
    assert mi("apply", "-f", str(tmp_path / "plain.json"), "--prune").code == 0
    assert _secret(ok, "show", "--vault-name", "kv1", "-n", "db-pass")["value"] == "rotated"


def test_apply_refuses_secrets_on_what_is_not_a_vault_and_a_bad_secret_name(mi, tmp_path):
    doc = {"apiVersion": "mi/v1", "resourceGroups": [{"name": "rg", "location": "westeurope"}],
           "resources": [{"name": "vm1", "type": "vm", "resourceGroup": "rg", "secrets": [{"name": "s", "value": "v"}]}]}
    (tmp_path / "t.json").write_text(json.dumps(doc))
    r = mi("apply", "-f", str(tmp_path / "t.json"))
    assert r.code == 1 and "only Key Vault vaults" in r.err
    doc["resources"][0].update(type="keyvault", name="kv1", secrets=[{"name": "bad_name", "value": "v"}])
    (tmp_path / "t.json").write_text(json.dumps(doc))
    r = mi("apply", "-f", str(tmp_path / "t.json"))
    assert r.code == 1 and "secrets[0].name" in r.err
