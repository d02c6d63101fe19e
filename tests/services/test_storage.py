"""The storage service as the Blob plane calls it: AZURITE_ACCOUNTS for every account, and whether an
account takes Shared Key requests."""

from __future__ import annotations

import pytest

from mi_cli.errors import NotFoundError
from mi_cli.services import storage


def _tenant(ok):
    ok("group", "create", "-n", "rg", "-l", "westeurope")
    ok("group", "create", "-n", "rg2", "-l", "westeurope")
    ok("resource", "create", "-g", "rg", "-n", "st1", "--type", "storage")
    ok("resource", "create", "-g", "rg2", "-n", "st2", "--type", "storage")
    ok("resource", "create", "-g", "rg", "-n", "app1", "--type", "webapp")


def test_azurite_accounts_names_every_account_with_both_keys(ok, store):
    _tenant(ok)
    with store() as ctx:
        value = storage.azurite_accounts(ctx)  # makes the keys of accounts that have none yet
    listed = {name: [k["value"] for k in ok("storage", "account", "keys", "list", "-n", name)] for name in ("st1", "st2")}
    assert value == ";".join(f"{name}:{k1}:{k2}" for name, (k1, k2) in listed.items())
    with store() as ctx:
        assert storage.azurite_accounts(ctx) == value  # the same keys the next time
    ok("resource", "delete", "-g", "rg2", "-n", "st2", "--yes")
    with store() as ctx:
        assert storage.azurite_accounts(ctx) == f"st1:{listed['st1'][0]}:{listed['st1'][1]}"


def test_an_account_made_again_under_a_deleted_ones_name_is_told_apart_by_its_creation_time(ok, store):
    _tenant(ok)
    with store() as ctx:
        accounts, before = storage.azurite(ctx)
        assert accounts == storage.azurite_accounts(ctx)
    assert set(before) == {"st1", "st2"}
    ok("resource", "delete", "-g", "rg2", "-n", "st2", "--yes")
    ok("resource", "create", "-g", "rg", "-n", "st2", "--type", "storage")
    with store() as ctx:
        _, after = storage.azurite(ctx)
    assert after["st1"] == before["st1"] and after["st2"] != before["st2"]


def test_azurite_accounts_of_a_store_without_accounts_is_empty(ok, store):
    ok("group", "create", "-n", "rg", "-l", "westeurope")
    with store() as ctx:
        assert storage.azurite_accounts(ctx) == ""


def test_shared_key_is_allowed_until_it_is_turned_off(ok, store):
    _tenant(ok)
    with store() as ctx:
        st1 = storage.account(ctx, "st1", "rg")
        assert storage.shared_key_allowed(ctx, st1) is True
        assert storage.settings(ctx, st1, create=False) is None  # asking made nothing
        storage.set_shared_key_access(ctx, st1, False)
        assert storage.shared_key_allowed(ctx, st1) is False
        assert storage.shared_key_allowed(ctx, storage.account(ctx, "st2")) is True
    with store() as ctx:
        st1 = storage.account(ctx, "st1")  # without a group: the account of that name
        assert storage.shared_key_allowed(ctx, st1) is False
        storage.set_shared_key_access(ctx, st1, True)
        assert storage.shared_key_allowed(ctx, st1) is True
        assert storage.settings(ctx, st1, create=False).allow_shared_key_access is True


def test_an_account_is_found_only_among_storage_accounts(ok, store):
    _tenant(ok)
    with store() as ctx:
        with pytest.raises(NotFoundError) as missing:
            storage.account(ctx, "app1", "rg")
        assert missing.value.code == "ResourceNotFound"
        with pytest.raises(NotFoundError) as anywhere:
            storage.account(ctx, "app1")
        assert anywhere.value.code == "StorageAccountNotFound" and anywhere.value.exit_code == 2
