"""`mi storage account`: storage accounts' shared keys and allowSharedKeyAccess, with az storage account's parameters and output."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from mi_cli.cli.options import OutputOpt, QueryOpt, SubscriptionOpt
from mi_cli.cli.runtime import emit, transaction
from mi_cli.errors import UsageError, shown

app = typer.Typer(help="Storage: the store's storage accounts, as az storage.", no_args_is_help=True)
account_app = typer.Typer(help="Storage accounts: their shared keys, connection string and allowSharedKeyAccess, "
                          "as az storage account.", no_args_is_help=True)
keys_app = typer.Typer(help="The two shared keys of a storage account, as az storage account keys.", no_args_is_help=True)
app.add_typer(account_app, name="account")
account_app.add_typer(keys_app, name="keys")

# az names the account --name/-n on most storage account commands and --account-name/-n on `keys`.
NameOpt = Annotated[str, typer.Option("--name", "-n", help="The storage account name.")]
AccountNameOpt = Annotated[str, typer.Option("--account-name", "-n", help="The storage account name.")]
GroupOpt = Annotated[Optional[str], typer.Option(
    "--resource-group", "-g", help="Name of the resource group (default: the group of the account of that name).")]

# az's --key takes primary/secondary, and (since 2.42) the keyName itself.
KEY_CHOICES = {"primary": "key1", "secondary": "key2", "key1": "key1", "key2": "key2"}


def _choice(text: str, option: str, choices) -> str:  # noqa: ANN001
    """As az's enum and three-state arguments refuse a value: argparse's invalid choice, exit 2. They match
    case-insensitively."""
    value = text.strip().lower()
    if value not in choices:
        listed = ", ".join(f"'{c}'" for c in choices)
        raise UsageError("InvalidArgumentValue", f"argument {option}: invalid choice: '{shown(text)}' (choose from {listed})")
    return value


def _keys_row(key: dict) -> dict:
    return {"KeyName": key["keyName"], "Value": key["value"], "Permissions": key["permissions"],
            "CreationTime": key["creationTime"]}


def _account_row(data: dict) -> dict:
    return {"Name": data["name"], "ResourceGroup": data["resourceGroup"], "Location": data["location"],
            "AllowSharedKeyAccess": "" if data["allowSharedKeyAccess"] is None else data["allowSharedKeyAccess"]}


@keys_app.command("list")
def keys_list(
    account_name: AccountNameOpt,
    group: GroupOpt = None,
    subscription: SubscriptionOpt = None,
    output: OutputOpt = "table",
    query: QueryOpt = None,
) -> None:
    """List the access keys of a storage account (key1 and key2). They are secrets: shown here, and in the
    connection string, only."""
    from mi_cli.services import storage

    with transaction(write=True) as ctx:  # an account's keys are made the first time they are needed
        data = storage.keys(ctx, storage.account(ctx, account_name, group, subscription=subscription))
    emit(data, output, query, _keys_row)


@keys_app.command("renew")
def keys_renew(
    account_name: AccountNameOpt,
    key: Annotated[str, typer.Option("--key", help="The key to regenerate: primary (key1) or secondary (key2).")],
    group: GroupOpt = None,
    subscription: SubscriptionOpt = None,
    output: OutputOpt = "table",
    query: QueryOpt = None,
) -> None:
    """Regenerate one of the access keys of a storage account; the other stays. Prints both."""
    from mi_cli.services import storage

    key_name = KEY_CHOICES[_choice(key, "--key", KEY_CHOICES)]
    with transaction(write=True) as ctx:
        data = storage.renew(ctx, storage.account(ctx, account_name, group, subscription=subscription), key_name)
    emit(data, output, query, _keys_row)


@account_app.command("show-connection-string")
def show_connection_string(
    name: NameOpt,
    group: GroupOpt = None,
    key: Annotated[str, typer.Option("--key", help="The key to use: primary (key1, the default) or secondary (key2).")] = "key1",
    protocol: Annotated[str, typer.Option("--protocol", help="The default endpoint protocol: http or https.")] = "https",
    subscription: SubscriptionOpt = None,
    output: OutputOpt = "table",
    query: QueryOpt = None,
) -> None:
    """Show the connection string of a storage account, with one of its keys."""
    from mi_cli.services import storage

    key_name = KEY_CHOICES[_choice(key, "--key", KEY_CHOICES)]
    protocol = _choice(protocol, "--protocol", ("http", "https"))
    with transaction(write=True) as ctx:  # an account's keys are made the first time they are needed
        data = storage.connection_string(ctx, storage.account(ctx, name, group, subscription=subscription),
                                         key_name=key_name, protocol=protocol)
    emit(data, output, query)


@account_app.command("show")
def show(
    name: NameOpt,
    group: GroupOpt = None,
    subscription: SubscriptionOpt = None,
    output: OutputOpt = "table",
    query: QueryOpt = None,
) -> None:
    """Show a storage account, with its allowSharedKeyAccess (null until set: Shared Key is then allowed)."""
    from mi_cli.services import storage

    with transaction(write=False) as ctx:
        data = storage.view(ctx, storage.account(ctx, name, group, subscription=subscription))
    emit(data, output, query, _account_row)


@account_app.command("update")
def update(
    name: NameOpt,
    group: GroupOpt = None,
    allow_shared_key_access: Annotated[Optional[str], typer.Option(
        "--allow-shared-key-access", "-k",
        help="Whether requests may be authorized with the account key via Shared Key (and SAS): true or false. "
        "If false, every request must be authorized with Microsoft Entra ID. The default, null, is equivalent "
        "to true.")] = None,
    subscription: SubscriptionOpt = None,
    output: OutputOpt = "table",
    query: QueryOpt = None,
) -> None:
    """Update a storage account's allowSharedKeyAccess; prints the account."""
    from mi_cli.services import storage

    allowed = None
    if allow_shared_key_access is not None:
        allowed = _choice(allow_shared_key_access, "--allow-shared-key-access/-k", ("true", "false")) == "true"
    with transaction(write=True) as ctx:
        res = storage.account(ctx, name, group, subscription=subscription)
        if allowed is not None:
            storage.set_shared_key_access(ctx, res, allowed)
        data = storage.view(ctx, res)
    emit(data, output, query, _account_row)
