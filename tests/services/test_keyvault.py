"""Key Vault secrets' rules on the service: versions, the latest, disabled, soft delete, recover, purge,
conflicts, limits, shapes, and a vault's deletion taking its secrets."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from importlib import resources as package_files

import pytest
from sqlmodel import select

from mi_cli.errors import ConflictError, ForbiddenError, NotFoundError, ValidationError
from mi_cli.models import KeyVaultSecret
from mi_cli.services import groups, keyvault, resources

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def kv(store):
    with store() as ctx:
        g = groups.create(ctx, "rg", "westeurope")
        resources.create(ctx, g, "kv1", "keyvault")
    return store


def _vault(ctx, name="kv1"):
    return keyvault.vault(ctx, name)


def test_each_set_is_a_new_version_and_the_latest_answers_a_get_without_version(kv):
    with kv() as ctx:
        first = keyvault.set_secret(ctx, _vault(ctx), "db-pass", "one", content_type="text/plain", tags={"env": "ci"})
        second = keyvault.set_secret(ctx, _vault(ctx), "db-pass", "two")
    version = first["id"].rsplit("/", 1)[1]
    assert re.fullmatch(r"[0-9a-f]{32}", version)
    assert first["id"] == f"https://kv1.vault.azure.net/secrets/db-pass/{version}" and second["id"] != first["id"]
    assert first["contentType"] == "text/plain" and first["tags"] == {"env": "ci"}
    attrs = first["attributes"]
    assert attrs["enabled"] is True and attrs["recoveryLevel"] == "Recoverable+Purgeable" and attrs["recoverableDays"] == 90
    assert isinstance(attrs["created"], int) and attrs["created"] == attrs["updated"]
    with kv() as ctx:
        assert keyvault.get_secret(ctx, _vault(ctx), "db-pass")["value"] == "two"
        assert keyvault.get_secret(ctx, _vault(ctx), "DB-PASS", version)["value"] == "one"  # names ignore case
        versions = keyvault.list_versions(ctx, _vault(ctx), "db-pass")
        listed = keyvault.list_secrets(ctx, _vault(ctx))
    assert [v["id"] for v in versions] == [first["id"], second["id"]] and all("value" not in v for v in versions)
    assert listed == [{"id": "https://kv1.vault.azure.net/secrets/db-pass", "attributes": second["attributes"]}]


def test_the_vault_is_found_by_name_in_any_case_and_a_missing_one_is_an_unknown_host(kv):
    with kv() as ctx:
        assert keyvault.vault(ctx, "KV1").name == "kv1"
        with pytest.raises(NotFoundError) as err:
            keyvault.vault(ctx, "kv2")
    assert err.value.code == "VaultNotFound" and "kv2.vault.azure.net does not exist" in err.value.message
    assert err.value.exit_code == 3


def test_a_missing_secret_or_version_is_key_vaults_404(kv):
    with kv() as ctx:
        keyvault.set_secret(ctx, _vault(ctx), "a", "1")
        with pytest.raises(NotFoundError) as err:
            keyvault.get_secret(ctx, _vault(ctx), "nope")
        assert err.value.code == "SecretNotFound"
        assert err.value.message.startswith("A secret with (name/id) nope was not found in this key vault. If you recently deleted")
        with pytest.raises(NotFoundError) as err:
            keyvault.get_secret(ctx, _vault(ctx), "a", "0" * 32)
        assert f"(name/id) a/{'0' * 32} was not found" in err.value.message


def test_a_disabled_version_cannot_be_read_but_is_listed_and_can_be_enabled_again(kv):
    with kv() as ctx:
        keyvault.set_secret(ctx, _vault(ctx), "s", "v", enabled=False)
        with pytest.raises(ForbiddenError) as err:
            keyvault.get_secret(ctx, _vault(ctx), "s")
        assert (err.value.code, err.value.message, err.value.inner_code) == (
            "Forbidden", "Operation get is not allowed on a disabled secret.", "SecretDisabled")
        assert keyvault.list_secrets(ctx, _vault(ctx))[0]["attributes"]["enabled"] is False
        updated = keyvault.update_secret(ctx, _vault(ctx), "s", enabled=True, content_type="pw", tags={"a": "b"},
                                         expires=T0 + timedelta(days=1))
        assert "value" not in updated and updated["contentType"] == "pw" and updated["tags"] == {"a": "b"}
        assert updated["attributes"]["exp"] == int((T0 + timedelta(days=1)).timestamp())
        assert keyvault.get_secret(ctx, _vault(ctx), "s")["value"] == "v"


def test_updating_an_older_version_leaves_the_latest_alone(kv):
    with kv() as ctx:
        old = keyvault.set_secret(ctx, _vault(ctx), "s", "1")["id"].rsplit("/", 1)[1]
        keyvault.set_secret(ctx, _vault(ctx), "s", "2")
        keyvault.update_secret(ctx, _vault(ctx), "s", old, enabled=False)
        assert keyvault.get_secret(ctx, _vault(ctx), "s")["value"] == "2"
        with pytest.raises(ForbiddenError):
            keyvault.get_secret(ctx, _vault(ctx), "s", old)


def test_soft_delete_marks_every_version_and_keeps_the_name_until_recovered_or_purged(kv):
    with kv() as ctx:
        ctx.clock = lambda: T0
        keyvault.set_secret(ctx, _vault(ctx), "s", "1")
        keyvault.set_secret(ctx, _vault(ctx), "s", "2")
        deleted = keyvault.delete_secret(ctx, _vault(ctx), "s")
        assert deleted["recoveryId"] == "https://kv1.vault.azure.net/deletedsecrets/s"
        assert deleted["deletedDate"] == int(T0.timestamp())
        assert deleted["scheduledPurgeDate"] == int((T0 + timedelta(days=90)).timestamp())
        assert "value" not in deleted
        rows = ctx.session.exec(select(KeyVaultSecret)).all()
        assert len(rows) == 2 and all(r.deleted_at is not None for r in rows)
    with kv() as ctx:
        ctx.clock = lambda: T0
        assert keyvault.list_secrets(ctx, _vault(ctx)) == []
        assert keyvault.list_deleted(ctx, _vault(ctx))[0]["id"] == "https://kv1.vault.azure.net/secrets/s"
        with pytest.raises(NotFoundError):
            keyvault.get_secret(ctx, _vault(ctx), "s")
        with pytest.raises(NotFoundError):  # a second delete is 404: Key Vault's DELETE is not idempotent
            keyvault.delete_secret(ctx, _vault(ctx), "s")
        with pytest.raises(ConflictError) as err:
            keyvault.set_secret(ctx, _vault(ctx), "S", "3")
        assert err.value.message == ("Secret s is currently in a deleted but recoverable state, and its name cannot be reused; "
                                     "in this state, the secret can only be recovered or purged.")
        assert err.value.inner_code == "ObjectIsDeletedButRecoverable"
        recovered = keyvault.recover(ctx, _vault(ctx), "s")
        assert "value" not in recovered and "recoveryId" not in recovered
        assert keyvault.get_secret(ctx, _vault(ctx), "s")["value"] == "2"
        assert len(keyvault.list_versions(ctx, _vault(ctx), "s")) == 2


def test_purge_frees_the_name_and_only_a_deleted_secret_can_be_purged_or_recovered(kv):
    with kv() as ctx:
        keyvault.set_secret(ctx, _vault(ctx), "s", "1")
        for op in (keyvault.purge, keyvault.recover, keyvault.get_deleted):
            with pytest.raises(NotFoundError) as err:
                op(ctx, _vault(ctx), "s")
            assert err.value.message == "Deleted Secret not found: s"
        keyvault.delete_secret(ctx, _vault(ctx), "s")
        keyvault.purge(ctx, _vault(ctx), "s")
        assert ctx.session.exec(select(KeyVaultSecret)).all() == []
        assert keyvault.list_deleted(ctx, _vault(ctx)) == []
        assert keyvault.set_secret(ctx, _vault(ctx), "s", "new")["value"] == "new"
        assert len(keyvault.list_versions(ctx, _vault(ctx), "s")) == 1


def test_after_its_purge_date_a_deleted_secret_is_gone_by_itself(kv):
    with kv() as ctx:
        ctx.clock = lambda: T0
        keyvault.set_secret(ctx, _vault(ctx), "s", "1")
        keyvault.delete_secret(ctx, _vault(ctx), "s")
    with kv() as ctx:
        ctx.clock = lambda: T0 + timedelta(days=91)
        assert keyvault.list_deleted(ctx, _vault(ctx)) == []
        assert keyvault.set_secret(ctx, _vault(ctx), "s", "2")["value"] == "2"
        assert len(ctx.session.exec(select(KeyVaultSecret)).all()) == 1


@pytest.mark.parametrize("name", ["", "a_b", "a.b", "x" * 128, "é"])
def test_names_are_1_to_127_alphanumerics_and_hyphens(kv, name):
    with kv() as ctx:
        with pytest.raises(ValidationError) as err:
            keyvault.set_secret(ctx, _vault(ctx), name, "v")
    assert err.value.code == "BadParameter" and err.value.message.startswith("The request URI contains an invalid name:")


def test_key_vaults_limits_on_value_content_type_and_tags(kv):
    with kv() as ctx:
        v = _vault(ctx)
        assert keyvault.set_secret(ctx, v, "x" * 127, "a" * keyvault.MAX_VALUE_BYTES)["value"]
        for kwargs in ({"value": "a" * (keyvault.MAX_VALUE_BYTES + 1)}, {"value": "v", "content_type": "c" * 256},
                       {"value": "v", "tags": {f"t{i}": "" for i in range(16)}}, {"value": "v", "tags": {"t": "x" * 513}}):
            with pytest.raises(ValidationError):
                keyvault.set_secret(ctx, v, "s", **kwargs)
        assert keyvault.set_secret(ctx, v, "s", "v", tags={f"t{i}": "x" * 512 for i in range(15)})


def test_declaring_the_same_secret_again_changes_nothing_and_a_difference_makes_a_version(kv):
    with kv() as ctx:
        _, op = keyvault.declare_secret(ctx, _vault(ctx), "s", "v", tags={"a": "1"})
        assert op == "create"
        _, op = keyvault.declare_secret(ctx, _vault(ctx), "s", "v", tags={"a": "1"})
        assert op == "unchanged"
        _, op = keyvault.declare_secret(ctx, _vault(ctx), "s", "v", tags={"a": "2"})
        assert op == "update"
        assert len(keyvault.list_versions(ctx, _vault(ctx), "s")) == 2


def test_deleting_the_vault_takes_its_secrets_deleted_ones_too_and_leaves_other_vaults_alone(kv):
    with kv() as ctx:
        g = groups.get(ctx, "rg")
        resources.create(ctx, g, "kv2", "keyvault")
        keyvault.set_secret(ctx, _vault(ctx), "live", "1")
        keyvault.set_secret(ctx, _vault(ctx), "gone", "1")
        keyvault.delete_secret(ctx, _vault(ctx), "gone")
        keyvault.set_secret(ctx, _vault(ctx, "kv2"), "other", "1")
    with kv() as ctx:
        resources.delete(ctx, groups.get(ctx, "rg"), "kv1")
        left = ctx.session.exec(select(KeyVaultSecret)).all()
        assert [r.name for r in left] == ["other"]


def test_each_operation_names_its_data_action_and_scope(kv):
    with kv() as ctx:
        v = _vault(ctx)
        assert keyvault.authorization(v, "get_secret", "s") == (
            "Microsoft.KeyVault/vaults/secrets/getSecret/action", f"{v.arm_id}/secrets/s")
        assert keyvault.authorization(v, "list_secrets") == ("Microsoft.KeyVault/vaults/secrets/readMetadata/action", v.arm_id)
    catalog = json.loads(package_files.files("mi_cli.catalog").joinpath("operations.json").read_text())
    known = {o["name"] for o in catalog["operations"] if o["isDataAction"]}
    assert {action for action, _ in keyvault.OPERATIONS.values()} <= known
