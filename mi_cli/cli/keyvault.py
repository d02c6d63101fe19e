"""`mi keyvault secret`: the secrets of the store's vaults, with az keyvault secret's parameters and output."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Optional

import typer

from mi_cli.cli.options import OutputOpt, QueryOpt, TagsOpt, YesOpt
from mi_cli.cli.runtime import emit, transaction
from mi_cli.errors import MiError, UsageError, shown

app = typer.Typer(help="Key Vault: the secrets of the store's vaults.", no_args_is_help=True)
secret_app = typer.Typer(help="Secrets of a vault: versions, soft delete, recover and purge, as az keyvault secret.",
                         no_args_is_help=True)
app.add_typer(secret_app, name="secret")

VaultOpt = Annotated[Optional[str], typer.Option("--vault-name", help="Name of the Key Vault. Required if --id is not specified.")]
NameOpt = Annotated[Optional[str], typer.Option("--name", "-n", help="Name of the secret. Required if --id is not specified.")]
VersionOpt = Annotated[Optional[str], typer.Option("--version", "-v", help="The secret version. If omitted, uses the latest version.")]
IdOpt = Annotated[Optional[str], typer.Option("--id", help="Id of the secret. If specified all other 'Id' arguments should be omitted.")]
RecoveryIdOpt = Annotated[Optional[str], typer.Option("--id", help="The recovery id of the secret. If specified all other 'Id' arguments should be omitted.")]
VaultIdOpt = Annotated[Optional[str], typer.Option("--id", help="Full URI of the Vault. If specified all other 'Id' arguments should be omitted.")]
ExpiresOpt = Annotated[Optional[str], typer.Option("--expires", help="Expiration UTC datetime (Y-m-d'T'H:M:S'Z').")]
NotBeforeOpt = Annotated[Optional[str], typer.Option("--not-before", help="Key not usable before the provided UTC datetime (Y-m-d'T'H:M:S'Z').")]
MaxResultsOpt = Annotated[Optional[int], typer.Option("--maxresults", help="Maximum number of results to return.")]

TEXT_ENCODINGS = ("utf-8", "utf-16le", "utf-16be", "ascii")
ENCODINGS = TEXT_ENCODINGS + ("base64", "hex")


# -- what a command names: --vault-name and -n, or a Key Vault URL (--id) ------------------------------

def _from_id(identifier: str, kind: str) -> tuple[str, str | None, str | None]:
    """(vault, name, version) of `https://VAULT.vault.azure.net/{secrets|deletedsecrets}/NAME[/VERSION]`,
    or of the vault's own URL."""
    from urllib.parse import urlparse

    try:
        url = urlparse(identifier.strip())
        host = (url.hostname or "").lower()
    except ValueError:  # not a URL at all (an unclosed [ of an IPv6 host, say)
        url, host = None, ""
    parts = [p for p in url.path.split("/") if p] if url else []
    if url is None or url.scheme != "https" or not host.endswith(".vault.azure.net") or (
            kind != "vault" and (len(parts) < 2 or parts[0] != kind)):
        want = {"vault": "https://VAULT.vault.azure.net", "secrets": "https://VAULT.vault.azure.net/secrets/NAME[/VERSION]",
                "deletedsecrets": "https://VAULT.vault.azure.net/deletedsecrets/NAME"}[kind]
        raise UsageError("InvalidArgumentValue", f"--id '{shown(identifier)}' is not of the form {want}.")
    vault_name = host.split(".", 1)[0]
    if kind == "vault":
        return vault_name, None, None
    return vault_name, parts[1], parts[2] if len(parts) > 2 else None


def _names(vault: str | None, name: str | None, identifier: str | None, kind: str = "secrets",
           version: str | None = None) -> tuple[str, str, str | None]:
    if identifier:
        if vault or name:
            raise UsageError("MutuallyExclusiveArguments", "Give --id, or --vault-name and --name, not both.")
        v, n, ver = _from_id(identifier, kind)
        if ver and version and ver != version:
            raise UsageError("MutuallyExclusiveArguments", f"--version '{shown(version)}' does not match the version the "
                             f"--id names ('{shown(ver)}'): drop one of them.")
        return v, n, ver or version
    if not vault or not name:
        raise UsageError("MissingArgument", "Give --vault-name and --name/-n, or --id.")
    return vault, name, version


def _vault_only(vault: str | None, identifier: str | None) -> str:
    if identifier:
        if vault:
            raise UsageError("MutuallyExclusiveArguments", "Give --id or --vault-name, not both.")
        return _from_id(identifier, "vault")[0]
    if not vault:
        raise UsageError("MissingArgument", "Give --vault-name, or --id.")
    return vault


def _time(text: str | None, option: str) -> datetime | None:
    from mi_cli.services.keyvault import parse_time

    return parse_time(text, option)


def _tags(pairs: list[str] | None) -> dict[str, str] | None:
    """az's `--tags k=v k2=v2` (a key alone has an empty value; "" clears them), kept as given: Key
    Vault's own limits are checked by the service."""
    if pairs is None:
        return None
    if pairs == [""]:
        return {}
    out: dict[str, str] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if not key.strip():
            raise UsageError("InvalidArgumentValue", f"The tag '{shown(pair)}' has an empty name; use --tags key=value.")
        out[key.strip()] = value
    return out


def _flag(text: str | None, option: str) -> bool | None:
    """az's three-state flags (`--enabled true|false`)."""
    if text is None:
        return None
    value = text.strip().lower()
    if value not in ("true", "false"):
        raise UsageError("InvalidArgumentValue", f"{option} must be true or false, not '{shown(text)}'.")
    return value == "true"


# -- az's output: the SDK's objects as az prints them (its _transformers) -------------------------------

def _iso(epoch: int | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, timezone.utc).isoformat()


def _az_base(wire: dict[str, Any]) -> dict[str, Any]:
    a = wire["attributes"]
    parts = wire["id"].split("/")
    return {
        "attributes": {"created": _iso(a.get("created")), "enabled": a.get("enabled"), "expires": _iso(a.get("exp")),
                       "notBefore": _iso(a.get("nbf")), "recoverableDays": a.get("recoverableDays"),
                       "recoveryLevel": a.get("recoveryLevel"), "updated": _iso(a.get("updated"))},
        "contentType": wire.get("contentType"), "id": wire["id"], "managed": wire.get("managed"),
        "name": parts[4] if len(parts) > 4 else None, "tags": wire.get("tags"),
    }


def _az_secret(wire: dict[str, Any]) -> dict[str, Any]:
    return {**_az_base(wire), "kid": wire.get("kid"), "value": wire.get("value")}


def _az_deleted(wire: dict[str, Any], *, bundle: bool) -> dict[str, Any]:
    out = _az_base(wire)
    if bundle:
        out.update(kid=wire.get("kid"), value=None)
    out.update(deletedDate=_iso(wire.get("deletedDate")), recoveryId=wire.get("recoveryId"),
               scheduledPurgeDate=_iso(wire.get("scheduledPurgeDate")))
    return out


def _list_row(s: dict) -> dict:
    # az's table for `keyvault secret list` (transform_secret_list_table)
    return {"Name": s["name"], "Id": s["id"], "ContentType": s["contentType"] or "", "Enabled": s["attributes"]["enabled"],
            "Expires": s["attributes"]["expires"] or ""}


def _deleted_row(s: dict) -> dict:
    return {"Name": s["name"], "Id": s["id"], "DeletedDate": s["deletedDate"], "ScheduledPurgeDate": s["scheduledPurgeDate"]}


def _limit(items: list, maxresults: int | None) -> list:
    return items if maxresults is None else items[:max(maxresults, 0)]


# -- commands -----------------------------------------------------------------------------------------

@secret_app.command("set")
def set_(
    vault_name: VaultOpt = None,
    name: NameOpt = None,
    value: Annotated[Optional[str], typer.Option("--value", help="Plain text secret value. Cannot be used with '--file' or '--encoding'.")] = None,
    file: Annotated[Optional[str], typer.Option("--file", "-f", help="Source file for secret. Use in conjunction with '--encoding'.")] = None,
    encoding: Annotated[Optional[str], typer.Option("--encoding", "-e", help="Source file encoding: utf-8 (default), utf-16le, utf-16be, ascii, base64, hex. Saved as the tag file-encoding.")] = None,
    content_type: Annotated[Optional[str], typer.Option("--content-type", "--description", help="Description of the secret contents (e.g. password, connection string, etc).")] = None,
    tags: TagsOpt = None,
    disabled: Annotated[bool, typer.Option("--disabled", help="Create secret in disabled state.")] = False,
    expires: ExpiresOpt = None,
    not_before: NotBeforeOpt = None,
    output: OutputOpt = "table",
    query: QueryOpt = None,
) -> None:
    """Create a secret, or a new version of it (the new version becomes the latest). As az does, the
    value's encoding is kept in the tag file-encoding."""
    from mi_cli.services import keyvault

    if bool(value) == bool(file):  # az refuses an empty --value too
        raise UsageError("IncorrectUsage", "incorrect usage: [Required] --value VALUE | --file PATH")
    if value and encoding is not None:  # as --value's own help says: a value is stored as given, never decoded
        raise UsageError("MutuallyExclusiveArguments", "--encoding is the encoding of --file; --value is stored as given: "
                         "drop --encoding, or give the value in a file.")
    if not vault_name or not name:
        raise UsageError("MissingArgument", "Give --vault-name and --name/-n.")
    enc = (encoding or "utf-8").lower()
    if enc not in ENCODINGS:
        raise UsageError("InvalidArgumentValue", f"--encoding must be one of {', '.join(ENCODINGS)}, not '{shown(encoding)}'.")
    if file:
        value = _read_value(file, enc)
    all_tags = {**(_tags(tags) or {}), "file-encoding": enc}
    nbf, exp = _time(not_before, "--not-before"), _time(expires, "--expires")
    with transaction(write=True) as ctx:
        wire = keyvault.set_secret(ctx, keyvault.vault(ctx, vault_name), name, value, content_type=content_type,
                                   tags=all_tags, enabled=not disabled, not_before=nbf, expires=exp)
    emit(_az_secret(wire), output, query)


def _read_value(file: str, encoding: str) -> str:
    import base64
    from pathlib import Path

    path = Path(file)
    if not path.is_file():
        raise MiError("FileNotFound", f"The file '{shown(file)}' does not exist or is not a file.")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MiError("FileNotReadable", f"Cannot read '{shown(file)}': {exc.strerror}.") from None
    if encoding == "base64":
        return base64.b64encode(data).decode("ascii")
    if encoding == "hex":
        return data.hex()
    try:
        return data.decode(encoding)
    except UnicodeDecodeError:
        raise MiError("InvalidEncoding", f"Unable to decode file '{shown(file)}' with '{encoding}' encoding.") from None


@secret_app.command("show")
def show(
    vault_name: VaultOpt = None,
    name: NameOpt = None,
    version: VersionOpt = None,
    identifier: IdOpt = None,
    output: OutputOpt = "table",
    query: QueryOpt = None,
) -> None:
    """Show a secret with its value: the latest version, or --version."""
    from mi_cli.services import keyvault

    vault, secret, version = _names(vault_name, name, identifier, version=version)
    with transaction(write=False) as ctx:
        wire = keyvault.get_secret(ctx, keyvault.vault(ctx, vault), secret, version)
    emit(_az_secret(wire), output, query)


@secret_app.command("list")
def list_(
    vault_name: VaultOpt = None,
    identifier: VaultIdOpt = None,
    maxresults: MaxResultsOpt = None,
    include_managed: Annotated[Optional[str], typer.Option("--include-managed", help="Include managed secrets (mi holds none).")] = None,
    output: OutputOpt = "table",
    query: QueryOpt = None,
) -> None:
    """List the secrets of a vault (their latest versions), without values."""
    from mi_cli.services import keyvault

    _flag(include_managed, "--include-managed")
    vault = _vault_only(vault_name, identifier)
    with transaction(write=False) as ctx:
        items = keyvault.list_secrets(ctx, keyvault.vault(ctx, vault))
    emit(_limit([_az_base(i) for i in items], maxresults), output, query, _list_row, empty="No secrets found.")


@secret_app.command("list-versions")
def list_versions(
    vault_name: VaultOpt = None,
    name: NameOpt = None,
    identifier: IdOpt = None,
    maxresults: MaxResultsOpt = None,
    output: OutputOpt = "table",
    query: QueryOpt = None,
) -> None:
    """List the versions of a secret, without values."""
    from mi_cli.services import keyvault

    vault, secret, _ = _names(vault_name, name, identifier)
    with transaction(write=False) as ctx:
        items = keyvault.list_versions(ctx, keyvault.vault(ctx, vault), secret)
    emit(_limit([_az_base(i) for i in items], maxresults), output, query, _list_row, empty="No versions found.")


@secret_app.command("set-attributes")
def set_attributes(
    vault_name: VaultOpt = None,
    name: NameOpt = None,
    version: VersionOpt = None,
    identifier: IdOpt = None,
    enabled: Annotated[Optional[str], typer.Option("--enabled", help="Enable the secret: true or false.")] = None,
    content_type: Annotated[Optional[str], typer.Option("--content-type", help="Type of the secret value such as a password.")] = None,
    tags: TagsOpt = None,
    expires: ExpiresOpt = None,
    not_before: NotBeforeOpt = None,
    output: OutputOpt = "table",
    query: QueryOpt = None,
) -> None:
    """Update the attributes of a version of a secret (the latest when --version is not given); the
    value does not change."""
    from mi_cli.services import keyvault

    vault, secret, version = _names(vault_name, name, identifier, version=version)
    changes: dict[str, Any] = {"enabled": _flag(enabled, "--enabled"), "content_type": content_type, "tags": _tags(tags)}
    if expires is not None:
        changes["expires"] = _time(expires, "--expires")
    if not_before is not None:
        changes["not_before"] = _time(not_before, "--not-before")
    with transaction(write=True) as ctx:
        wire = keyvault.update_secret(ctx, keyvault.vault(ctx, vault), secret, version, **changes)
    emit(_az_secret(wire), output, query)


@secret_app.command("delete")
def delete(
    vault_name: VaultOpt = None,
    name: NameOpt = None,
    identifier: IdOpt = None,
    yes: YesOpt = False,  # az does not ask here either
    output: OutputOpt = "table",
    query: QueryOpt = None,
) -> None:
    """Delete a secret (every version): soft delete; it can be recovered or purged for 90 days, and its
    name cannot be reused until then."""
    from mi_cli.services import keyvault

    vault, secret, _ = _names(vault_name, name, identifier)
    with transaction(write=True) as ctx:
        wire = keyvault.delete_secret(ctx, keyvault.vault(ctx, vault), secret)
    emit(_az_deleted(wire, bundle=True), output, query)


@secret_app.command("list-deleted")
def list_deleted(
    vault_name: VaultOpt = None,
    identifier: VaultIdOpt = None,
    maxresults: MaxResultsOpt = None,
    output: OutputOpt = "table",
    query: QueryOpt = None,
) -> None:
    """List the deleted secrets of a vault that can still be recovered or purged."""
    from mi_cli.services import keyvault

    vault = _vault_only(vault_name, identifier)
    with transaction(write=False) as ctx:
        items = keyvault.list_deleted(ctx, keyvault.vault(ctx, vault))
    emit(_limit([_az_deleted(i, bundle=False) for i in items], maxresults), output, query, _deleted_row,
         empty="No deleted secrets found.")


@secret_app.command("show-deleted")
def show_deleted(
    vault_name: VaultOpt = None,
    name: NameOpt = None,
    identifier: RecoveryIdOpt = None,
    output: OutputOpt = "table",
    query: QueryOpt = None,
) -> None:
    """Show a deleted secret (without its value)."""
    from mi_cli.services import keyvault

    vault, secret, _ = _names(vault_name, name, identifier, "deletedsecrets")
    with transaction(write=False) as ctx:
        wire = keyvault.get_deleted(ctx, keyvault.vault(ctx, vault), secret)
    emit(_az_deleted(wire, bundle=True), output, query)


@secret_app.command("recover")
def recover(
    vault_name: VaultOpt = None,
    name: NameOpt = None,
    identifier: RecoveryIdOpt = None,
    output: OutputOpt = "table",
    query: QueryOpt = None,
) -> None:
    """Recover a deleted secret, every version, as it was."""
    from mi_cli.services import keyvault

    vault, secret, _ = _names(vault_name, name, identifier, "deletedsecrets")
    with transaction(write=True) as ctx:
        wire = keyvault.recover(ctx, keyvault.vault(ctx, vault), secret)
    emit(_az_secret(wire), output, query)


@secret_app.command("purge")
def purge(
    vault_name: VaultOpt = None,
    name: NameOpt = None,
    identifier: RecoveryIdOpt = None,
    yes: YesOpt = False,  # accepted as on every delete; az does not ask here
    output: OutputOpt = "table",  # accepted as az does; a purge prints nothing
    query: QueryOpt = None,
) -> None:
    """Purge a deleted secret: gone for good, its name free again."""
    from mi_cli.services import keyvault

    vault, secret, _ = _names(vault_name, name, identifier, "deletedsecrets")
    with transaction(write=True) as ctx:
        keyvault.purge(ctx, keyvault.vault(ctx, vault), secret)
