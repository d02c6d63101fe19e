"""`mi storage account` as a CI script uses it: an account's shared keys, renewing one, its connection string,
turning Shared Key off, and the errors and exit codes az gives."""

from __future__ import annotations

import base64
import re
import sqlite3

import pytest

from mi_cli.cli.main import main
from mi_cli.models import SCHEMA_VERSION
from tests.conftest import az_error, dump, one_error

NOT_FOUND = ("The Resource 'Microsoft.Storage/storageAccounts/{name}' under resource group 'rg' was not found. "
             "For more details please go to https://aka.ms/ARMResourceNotFoundFix"
             # then the next step, mi's
             ". List the storage accounts of 'rg' with 'mi resource list -g rg --type storage'.")


def build_accounts(ok, mi):
    ok("group", "create", "-n", "rg", "-l", "westeurope")
    ok("resource", "create", "-g", "rg", "-n", "st1", "--type", "storage")
    ok("resource", "create", "-g", "rg", "-n", "st2", "--type", "storage")
    ok("resource", "create", "-g", "rg", "-n", "vm1", "--type", "vm")


@pytest.fixture
def accounts(prebuilt):
    return prebuilt(build_accounts)


def _keys(ok, name="st1", *extra):
    return ok("storage", "account", "keys", "list", "-n", name, "-g", "rg", *extra)


def _rows(db) -> int:
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT count(*) FROM storage_account").fetchone()[0]
    finally:
        con.close()


def test_an_account_has_two_keys_of_64_random_bytes_that_stay_until_renewed(ok, accounts):
    first = _keys(ok)
    assert [k["keyName"] for k in first] == ["key1", "key2"]
    for key in first:
        assert sorted(key) == ["creationTime", "keyName", "permissions", "value"]  # az's shape of listKeys' keys
        assert key["permissions"] == "FULL"
        assert len(key["value"]) == 88 and len(base64.b64decode(key["value"], validate=True)) == 64
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?\+00:00", key["creationTime"])
    assert first[0]["value"] != first[1]["value"]
    assert _keys(ok) == first  # stable from one call to the next
    assert ok("storage", "account", "keys", "list", "--account-name", "st1", "-g", "rg") == first
    assert ok("storage", "account", "keys", "list", "-n", "st1") == first  # az finds the group itself
    other = _keys(ok, "st2")
    assert {k["value"] for k in other}.isdisjoint(k["value"] for k in first)


def test_renewing_a_key_changes_that_key_only(ok, accounts):
    before = _keys(ok)
    renewed = ok("storage", "account", "keys", "renew", "-n", "st1", "-g", "rg", "--key", "primary")
    assert renewed == _keys(ok)  # renew prints both keys, as they now are
    assert renewed[0]["value"] != before[0]["value"] and renewed[1] == before[1]
    assert len(base64.b64decode(renewed[0]["value"])) == 64
    again = ok("storage", "account", "keys", "renew", "--account-name", "st1", "-g", "rg", "--key", "key2")
    assert again[0] == renewed[0] and again[1]["value"] != renewed[1]["value"]
    assert again[1]["creationTime"] >= before[1]["creationTime"]
    third = ok("storage", "account", "keys", "renew", "-n", "st1", "-g", "rg", "--key", "secondary")
    assert third[0] == again[0] and third[1]["value"] != again[1]["value"]


def test_the_connection_string_carries_the_account_and_its_key(ok, mi, accounts):
    [key1, key2] = _keys(ok)
    text = ok("storage", "account", "show-connection-string", "-n", "st1", "-g", "rg")["connectionString"]
    assert text.startswith("DefaultEndpointsProtocol=https;EndpointSuffix=core.windows.net;AccountName=st1;AccountKey=")
    parts = dict(p.split("=", 1) for p in text.split(";"))
    assert parts["AccountKey"] == key1["value"]  # the key's own '=' padding survives the split
    assert parts["BlobEndpoint"] == "https://st1.blob.core.windows.net/"
    assert list(parts)[-4:] == ["BlobEndpoint", "FileEndpoint", "QueueEndpoint", "TableEndpoint"]
    secondary = ok("storage", "account", "show-connection-string", "-n", "st1", "-g", "rg", "--key", "secondary")
    assert f";AccountKey={key2['value']};" in secondary["connectionString"]
    r = mi("storage", "account", "show-connection-string", "-n", "st1", "-g", "rg", "--query", "connectionString",
           "-o", "tsv")
    assert (r.code, r.out, r.err) == (0, text + "\n", "")


def test_turning_shared_key_access_off_and_on(ok, accounts):
    shown = ok("storage", "account", "show", "-n", "st1", "-g", "rg")
    assert shown["allowSharedKeyAccess"] is None  # Azure's default, null, which allows Shared Key
    assert shown["id"].endswith("/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/st1")
    assert shown["primaryEndpoints"]["blob"] == "https://st1.blob.core.windows.net/"
    off = ok("storage", "account", "update", "-n", "st1", "-g", "rg", "--allow-shared-key-access", "false")
    assert off["allowSharedKeyAccess"] is False and off["name"] == "st1" and off["resourceGroup"] == "rg"
    assert ok("storage", "account", "show", "-n", "st1", "-g", "rg")["allowSharedKeyAccess"] is False
    assert ok("storage", "account", "show", "-n", "st2", "-g", "rg")["allowSharedKeyAccess"] is None  # its own setting
    on = ok("storage", "account", "update", "-n", "st1", "-k", "True")  # az's flags match case-insensitively
    assert on["allowSharedKeyAccess"] is True
    assert _keys(ok)[0]["value"]  # the keys are still listed while Shared Key is off or on, as in Azure


def test_the_keys_appear_in_no_log(ok, mi, accounts):
    values = [k["value"] for k in _keys(ok)]
    values += [k["value"] for k in ok("storage", "account", "keys", "renew", "-n", "st1", "-g", "rg", "--key", "key1")]
    ok("storage", "account", "update", "-n", "st1", "-g", "rg", "-k", "false")
    log = mi("log", "-o", "json")
    assert log.code == 0
    assert "regenerateKey" in log.out and "allowSharedKeyAccess: false" in log.out
    assert not [v for v in values if v in log.out]


CASES = [
    # (name, argv, exit code, stderr)
    ("missing account", ["storage", "account", "keys", "list", "-n", "missing", "-g", "rg"], 3,
     az_error("ResourceNotFound", NOT_FOUND.format(name="missing"))),
    ("missing account renew", ["storage", "account", "keys", "renew", "-n", "missing", "-g", "rg", "--key", "primary"], 3,
     az_error("ResourceNotFound", NOT_FOUND.format(name="missing"))),
    ("missing account update", ["storage", "account", "update", "-n", "missing", "-g", "rg", "-k", "false"], 3,
     az_error("ResourceNotFound", NOT_FOUND.format(name="missing"))),
    ("not a storage account", ["storage", "account", "show-connection-string", "-n", "vm1", "-g", "rg"], 3,
     az_error("ResourceNotFound", NOT_FOUND.format(name="vm1"))),
    ("missing group", ["storage", "account", "keys", "list", "-n", "st1", "-g", "nope"], 3,
     az_error("ResourceGroupNotFound", "Resource group 'nope' could not be found. Create it with 'mi group create -n nope "
                                       "-l LOCATION', or list the groups with 'mi group list'.")),
    ("missing account without a group", ["storage", "account", "keys", "list", "-n", "missing"], 2,
     "ERROR: (StorageAccountNotFound) Storage account 'missing' not found. List the storage accounts with 'mi resource "
     "list --type storage'.\n"),
    ("not true or false", ["storage", "account", "update", "-n", "st1", "-g", "rg", "--allow-shared-key-access", "maybe"], 2,
     "ERROR: (InvalidArgumentValue) argument --allow-shared-key-access/-k: invalid choice: 'maybe' "
     "(choose from 'true', 'false')\n"),
    ("no such key", ["storage", "account", "keys", "renew", "-n", "st1", "-g", "rg", "--key", "key3"], 2,
     "ERROR: (InvalidArgumentValue) argument --key: invalid choice: 'key3' "
     "(choose from 'primary', 'secondary', 'key1', 'key2')\n"),
    ("no such protocol", ["storage", "account", "show-connection-string", "-n", "st1", "-g", "rg", "--protocol", "ftp"], 2,
     "ERROR: (InvalidArgumentValue) argument --protocol: invalid choice: 'ftp' (choose from 'http', 'https')\n"),
]


@pytest.mark.parametrize("argv, exit_code, err", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refusals_are_az_errors_and_change_nothing(mi, db, accounts, argv, exit_code, err):
    before = dump(db)
    r = mi(*argv)
    assert (r.code, r.out, r.err) == (exit_code, "", err)
    assert one_error(r.err)
    assert dump(db) == before


def test_deleting_an_account_or_its_group_drops_its_keys(ok, mi, db, accounts):
    old = _keys(ok)
    _keys(ok, "st2")
    assert _rows(db) == 2
    ok("resource", "delete", "-g", "rg", "-n", "st1", "--yes")
    assert _rows(db) == 1
    r = mi("storage", "account", "keys", "list", "-n", "st1", "-g", "rg")
    assert r.code == 3 and r.err == az_error("ResourceNotFound", NOT_FOUND.format(name="st1"))
    ok("resource", "create", "-g", "rg", "-n", "st1", "--type", "storage")
    assert {k["value"] for k in _keys(ok)}.isdisjoint(k["value"] for k in old)  # a new account, new keys
    ok("group", "delete", "-n", "rg", "--yes")
    assert _rows(db) == 0


def test_a_version_5_store_gains_the_storage_account_table(tmp_path, capsys):
    db = tmp_path / "v5.db"
    assert main(["--db", str(db), "group", "create", "-n", "rg", "-l", "westeurope", "-o", "none"]) == 0
    assert main(["--db", str(db), "resource", "create", "-g", "rg", "-n", "st1", "--type", "storage", "-o", "none"]) == 0
    con = sqlite3.connect(db)
    con.execute("DROP TABLE storage_account")
    con.execute("UPDATE meta SET value = '5' WHERE key = 'schema_version'")
    con.commit()
    con.close()
    capsys.readouterr()
    assert main(["--db", str(db), "storage", "account", "keys", "list", "-n", "st1", "-g", "rg", "-o", "json"]) == 0
    assert "key1" in capsys.readouterr().out
    con = sqlite3.connect(db)
    assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (str(SCHEMA_VERSION),)
    assert con.execute("SELECT count(*) FROM storage_account").fetchone() == (1,)
    con.close()
    assert SCHEMA_VERSION >= 6  # the version that added storage accounts, or a later one
