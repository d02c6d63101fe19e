"""Storage accounts' shared keys and allowSharedKeyAccess, with the Storage resource provider's rules and az's shapes."""

from __future__ import annotations

import base64
import secrets
from datetime import datetime, timezone
from typing import Any

from sqlmodel import select

from mi_cli import ids
from mi_cli.errors import NotFoundError, ValidationError, shown
from mi_cli.models import Resource, StorageAccount
from mi_cli.services import Ctx, groups, resources, views

ACCOUNT_TYPE = "Microsoft.Storage/storageAccounts"
KEY_NAMES = ("key1", "key2")
KEY_BYTES = 64  # an account key is 64 random bytes, 88 characters of base64
ENDPOINT_SUFFIX = "core.windows.net"
# The services of a general-purpose v2 account, in the order az writes their endpoints into a connection
# string (show_storage_account_connection_string), and dfs, which a StorageV2 account also lists.
CONNECTION_SERVICES = ("blob", "file", "queue", "table")
ENDPOINT_SERVICES = ("blob", "dfs", "file", "queue", "table")


class StorageAccountNotFoundError(NotFoundError):
    """An account named without its group that no group holds. az looks the group up itself first
    (process_resource_group) and fails in its own one line, as a usage error (exit 2), before any request."""

    service = False
    exit_code = 2


def _new_key() -> str:
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


def _utc(value: datetime) -> datetime:
    # SQLite keeps a time without its offset: every time mi stores is UTC.
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


# -- the account ---------------------------------------------------------------------------------------

def account(ctx: Ctx, name: str, group: str | None = None, *, subscription: str | None = None) -> Resource:
    """The storage account `name` in `group`: ARM's ResourceNotFound when the group holds none (as az
    prints it for `storage account keys list`). Without a group, the account of that name anywhere in the
    store, as az finds its group by listing the accounts: names are global in Azure (they are host
    names), so where the store holds two of one name, the first made answers."""
    if group:
        found_group = groups.get(ctx, group, subscription=subscription)
        try:
            return resources.get(ctx, found_group, name.strip(), type_text=ACCOUNT_TYPE)
        except NotFoundError as exc:
            from mi_cli.services.next_steps import arg

            raise exc.add_next_step(f"List the storage accounts of '{shown(found_group.name)}' with 'mi resource list "
                                    f"-g {arg(found_group.name)} --type storage'.") from None
    found = ctx.session.exec(select(Resource).where(Resource.name_key == ids.key(name.strip()), Resource.type == ACCOUNT_TYPE)
                             .order_by(Resource.pk)).first()
    if found is None:
        raise StorageAccountNotFoundError("StorageAccountNotFound", f"Storage account '{shown(name)}' not found.",
                                          next_step="List the storage accounts with 'mi resource list --type storage'.")
    return found


def _check(res: Resource) -> None:
    if not ids.same(res.type, ACCOUNT_TYPE):  # a caller's slip, not a user's: every door finds accounts above
        raise ValidationError("InvalidResourceType", f"'{shown(res.arm_id, 300)}' is not a storage account.")


def settings(ctx: Ctx, resource: Resource, *, create: bool, allow_shared_key_access: bool | None = None) -> StorageAccount | None:
    """The account's row; made on first need (`create`) with two fresh keys and allowSharedKeyAccess
    as given (unset by default, Azure's null). Without `create`, None until then."""
    _check(resource)
    row = ctx.session.get(StorageAccount, resource.pk)
    if row is not None or not create:
        return row
    now = ctx.now()
    row = ctx.insert(StorageAccount, {"resource_pk": resource.pk, "allow_shared_key_access": allow_shared_key_access,
                                      "key1": _new_key(),
                                      "key2": _new_key(), "key1_created_at": now, "key2_created_at": now})
    # The keys themselves never reach the log: they are secrets.
    ctx.log(f"{ACCOUNT_TYPE}/write", resource.arm_id, detail="account keys key1 and key2 created")
    return row


def keys(ctx: Ctx, resource: Resource) -> list[dict[str, Any]]:
    """The account's keys as `az storage account keys list` prints them (the listKeys body's `keys`)."""
    row = settings(ctx, resource, create=True)
    return [_key(row, name) for name in KEY_NAMES]


def _key(row: StorageAccount, name: str) -> dict[str, Any]:
    created = _utc(getattr(row, f"{name}_created_at"))
    # az prints the SDK's datetime with isoformat(): microseconds and +00:00
    return {"creationTime": created.isoformat(), "keyName": name, "permissions": "FULL", "value": getattr(row, name)}


def _check_key_name(key_name: str) -> None:
    if key_name not in KEY_NAMES:
        raise ValidationError("InvalidParameter", f"The key name '{shown(key_name)}' is not valid: it is key1 or key2.")


def renew(ctx: Ctx, resource: Resource, key_name: str) -> list[dict[str, Any]]:
    """Regenerate one key (`key1` or `key2`, regenerateKey's keyName); the other stays. Returns both, as
    `az storage account keys renew` prints them."""
    _check_key_name(key_name)
    row = settings(ctx, resource, create=True)
    setattr(row, key_name, _new_key())
    setattr(row, f"{key_name}_created_at", ctx.now())
    ctx.session.add(row)
    ctx.session.flush()
    ctx.log(f"{ACCOUNT_TYPE}/regenerateKey/action", resource.arm_id, detail=f"{key_name} regenerated")
    return keys(ctx, resource)


def key_value(ctx: Ctx, resource: Resource, key_name: str = "key1") -> str:
    """One key's value (for the connection string)."""
    _check_key_name(key_name)
    return getattr(settings(ctx, resource, create=True), key_name)


# -- allowSharedKeyAccess ------------------------------------------------------------------------------

def shared_key_allowed(ctx: Ctx, resource: Resource) -> bool:
    """Whether the account accepts Shared Key (and so SAS) requests: Azure's null, the default, allows them."""
    row = settings(ctx, resource, create=False)
    return row is None or row.allow_shared_key_access is not False


def set_shared_key_access(ctx: Ctx, resource: Resource, allowed: bool) -> StorageAccount:
    """Set allowSharedKeyAccess (true or false; once set, it is no longer null). Logged when it changes."""
    existing = settings(ctx, resource, create=False)
    # a new row starts with the setting: inside a batched apply it is not an ORM object yet
    row = existing or settings(ctx, resource, create=True, allow_shared_key_access=allowed)
    if existing is None or row.allow_shared_key_access != allowed:
        if existing is not None:
            row.allow_shared_key_access = allowed
            ctx.session.add(row)
            ctx.session.flush()
        ctx.log(f"{ACCOUNT_TYPE}/write", resource.arm_id, detail=f"allowSharedKeyAccess: {'true' if allowed else 'false'}")
    return row


# -- az's shapes ---------------------------------------------------------------------------------------

def endpoint(name: str, service: str) -> str:
    return f"https://{name}.{service}.{ENDPOINT_SUFFIX}/"


def view(ctx: Ctx, resource: Resource) -> dict[str, Any]:
    """The account as `az storage account show/update` print it: the SDK's model, its properties
    flattened to the top (allowSharedKeyAccess, primaryEndpoints, provisioningState)."""
    row = settings(ctx, resource, create=False)
    data = views.resource(ctx, resource)
    data.pop("properties", None)
    data.update({
        "allowSharedKeyAccess": None if row is None else row.allow_shared_key_access,
        "primaryEndpoints": {service: endpoint(resource.name, service) for service in ENDPOINT_SERVICES},
        "provisioningState": "Succeeded",
    })
    return data


def connection_string(ctx: Ctx, resource: Resource, *, key_name: str = "key1", protocol: str = "https") -> dict[str, str]:
    """`az storage account show-connection-string`: the protocol and suffix, the account and its key, then
    the primary endpoints (https whatever the protocol, as the account lists them)."""
    key = key_value(ctx, resource, key_name)
    parts = [f"DefaultEndpointsProtocol={protocol}", f"EndpointSuffix={ENDPOINT_SUFFIX}", f"AccountName={resource.name}",
             f"AccountKey={key}"]
    parts += [f"{service.capitalize()}Endpoint={endpoint(resource.name, service)}" for service in CONNECTION_SERVICES]
    return {"connectionString": ";".join(parts)}


def azurite_accounts(ctx: Ctx) -> str:
    """AZURITE_ACCOUNTS for every storage account in the store (`name:key1:key2;...`): see azurite()."""
    return azurite(ctx)[0]


def azurite(ctx: Ctx) -> tuple[str, dict[str, str]]:
    """What Azurite must know of the store's storage accounts, from one read: AZURITE_ACCOUNTS
    (`name:key1:key2;...`), making the keys of those that have none yet (call it in a write transaction),
    and each account's name -> its creation time, which tells an account from a deleted one of the same
    name. A name held twice is given once, the first made's, as `account` finds it."""
    rows = ctx.session.exec(select(Resource).where(Resource.type == ACCOUNT_TYPE).order_by(Resource.pk)).all()
    accounts: dict[str, str] = {}
    owners: dict[str, str] = {}
    for res in rows:
        if res.name_key in accounts:
            continue
        row = settings(ctx, res, create=True)
        accounts[res.name_key] = f"{res.name}:{row.key1}:{row.key2}"
        owners[res.name] = res.created_at.replace(tzinfo=None).isoformat()  # UTC, as SQLite gives it back
    return ";".join(accounts.values()), owners
