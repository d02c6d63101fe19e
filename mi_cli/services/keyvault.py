"""Key Vault secrets of the vaults in the store: versions, soft delete, recover, purge, with Key Vault's rules and shapes."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlmodel import select

from mi_cli import ids
from mi_cli.errors import ConflictError, ForbiddenError, MiError, NotFoundError, ValidationError, shown
from mi_cli.models import KeyVaultSecret, Resource
from mi_cli.services import Ctx

VAULT_TYPE = "Microsoft.KeyVault/vaults"
SECRET_TYPE = "Microsoft.KeyVault/vaults/secrets"
VAULT_DOMAIN = "vault.azure.net"

# Key Vault's documented limits (about-keys-secrets-certificates, about-secrets): object names 1-127
# of 0-9, a-z, A-Z and -; a value of at most 25k bytes; a content type of at most 255 characters; at
# most 15 tags of 512-character names and values (older pages of the same doc said 256).
NAME_PATTERN = re.compile(r"[0-9A-Za-z-]{1,127}")
MAX_VALUE_BYTES = 25 * 1024
MAX_CONTENT_TYPE = 255
MAX_TAGS = 15
MAX_TAG_TEXT = 512
# A vault made without settings: soft delete on, 90 days of retention, purge allowed.
RECOVERY_LEVEL = "Recoverable+Purgeable"
RECOVERABLE_DAYS = 90

NOT_FOUND_HELP = ("If you recently deleted this secret you may be able to recover it using the correct recovery command. "
                  "For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182")


# -- errors, as Key Vault's bodies: {"error": {"code", "message", "innererror": {"code"}}} --------------

class VaultNotFoundError(NotFoundError):
    """No vault of that name in the store: in Azure the host name itself does not resolve, so no
    service answers; mi says so in its own one line (the plane maps it to an unknown host)."""

    service = False


def _error(kind: type[MiError], code: str, message: str, inner: str | None = None) -> MiError:
    err = kind(code, message)
    err.inner_code = inner  # Key Vault's innererror.code, for the plane's body
    return err


def secret_not_found(name: str, version: str | None = None) -> MiError:
    what = f"{name}/{version}" if version else name
    return _error(NotFoundError, "SecretNotFound",
                  f"A secret with (name/id) {shown(what, 200)} was not found in this key vault. {NOT_FOUND_HELP}")


def deleted_secret_not_found(name: str) -> MiError:
    return _error(NotFoundError, "SecretNotFound", f"Deleted Secret not found: {shown(name, 200)}")


def _deleted_but_recoverable(name: str) -> MiError:
    return _error(ConflictError, "Conflict",
                  f"Secret {shown(name, 200)} is currently in a deleted but recoverable state, and its name cannot be reused; "
                  "in this state, the secret can only be recovered or purged.", "ObjectIsDeletedButRecoverable")


def _bad(message: str) -> MiError:
    return _error(ValidationError, "BadParameter", message)


# -- the vault -----------------------------------------------------------------------------------------

def vault(ctx: Ctx, name: str) -> Resource:
    """The vault of this name, in any group or subscription: vault names are globally unique in Azure
    (they are host names), so a name alone finds one. Where the store holds two of the same name, the
    first made answers."""
    found = ctx.session.exec(select(Resource).where(Resource.name_key == ids.key(name.strip()), Resource.type == VAULT_TYPE)
                             .order_by(Resource.pk)).first()
    if found is None:
        raise VaultNotFoundError(
            "VaultNotFound", f"There is no vault named '{shown(name)}' in this store, so the host "
            f"{shown(name.lower())}.{VAULT_DOMAIN} does not exist; create it with "
            f"'mi resource create -g RG -n {shown(name)} --type keyvault'.")
    return found


def vault_url(v: Resource) -> str:
    return f"https://{v.name.lower()}.{VAULT_DOMAIN}"


def secret_scope(v: Resource, name: str) -> str:
    """Where RBAC checks an operation on one secret: the secret below its vault's ARM id."""
    return f"{v.arm_id}/secrets/{name}"


# What each operation needs, for the plane to ask services.access before calling it: the data action
# (Key Vault's RBAC guide, and catalog/operations.json) and where it is checked: "secret" is
# secret_scope(vault, name), "vault" is the vault's id (listings are not of one secret).
OPERATIONS: dict[str, tuple[str, str]] = {
    "set_secret": ("Microsoft.KeyVault/vaults/secrets/setSecret/action", "secret"),
    "get_secret": ("Microsoft.KeyVault/vaults/secrets/getSecret/action", "secret"),
    "list_secrets": ("Microsoft.KeyVault/vaults/secrets/readMetadata/action", "vault"),
    "list_versions": ("Microsoft.KeyVault/vaults/secrets/readMetadata/action", "secret"),
    "update_secret": ("Microsoft.KeyVault/vaults/secrets/update/action", "secret"),
    "delete_secret": ("Microsoft.KeyVault/vaults/secrets/delete", "secret"),
    "get_deleted": ("Microsoft.KeyVault/vaults/secrets/readMetadata/action", "secret"),
    "list_deleted": ("Microsoft.KeyVault/vaults/secrets/readMetadata/action", "vault"),
    "recover": ("Microsoft.KeyVault/vaults/secrets/recover/action", "secret"),
    "purge": ("Microsoft.KeyVault/vaults/secrets/purge/action", "secret"),
}


def authorization(v: Resource, operation: str, name: str | None = None) -> tuple[str, str]:
    """(data action, scope) that `operation` (a key of OPERATIONS) is checked with. A name that no secret
    can have (a.b, a/b, 200 characters) is checked at the vault, which is all a role can be assigned at
    that holds it; the operation then refuses the name (400)."""
    action, level = OPERATIONS[operation]
    valid = isinstance(name, str) and NAME_PATTERN.fullmatch(name) is not None
    return action, (secret_scope(v, name) if level == "secret" and valid else v.arm_id)


# -- checks ----------------------------------------------------------------------------------------------

def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise _bad(f"The request URI contains an invalid name: {shown(name, 200)}")
    return name


def _unicode(text: str) -> bool:
    """Whether UTF-8 can hold `text` (JSON lets a request carry a lone surrogate, \\ud800, which it cannot)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_attributes(content_type: str | None, tags: dict | None) -> None:
    if content_type is not None and (not isinstance(content_type, str) or len(content_type) > MAX_CONTENT_TYPE):
        raise _bad(f"The content type of a secret is at most {MAX_CONTENT_TYPE} characters.")
    if content_type is not None and not _unicode(content_type):
        raise _bad("The content type of a secret is not valid Unicode text.")
    if tags is None:
        return
    if not isinstance(tags, dict):
        raise _bad("Tags are an object of names and text values.")
    if len(tags) > MAX_TAGS:
        raise _bad(f"{len(tags)} tags were given; a secret can have at most {MAX_TAGS}.")
    for k, val in tags.items():
        if not isinstance(k, str) or not isinstance(val, str):
            raise _bad(f"The tag '{shown(k)}' must have a text name and a text value.")
        if len(k) > MAX_TAG_TEXT or len(val) > MAX_TAG_TEXT:
            raise _bad(f"The tag '{shown(k)}' is longer than {MAX_TAG_TEXT} characters (name or value).")
        if not _unicode(k) or not _unicode(val):
            raise _bad(f"The tag '{shown(k)}' is not valid Unicode text (name or value).")


def bad_parameter(message: str) -> MiError:
    """Key Vault's 400 BadParameter, for a request whose fields are not of the types the API takes."""
    return _bad(message)


def _check_value(value: str) -> str:
    if not isinstance(value, str):
        raise _bad("The secret value must be text.")
    if not _unicode(value):
        raise _bad("The secret value is not valid Unicode text.")
    size = len(value.encode("utf-8"))
    if size > MAX_VALUE_BYTES:
        raise _bad(f"The secret value is {size:,} bytes; Key Vault stores at most {MAX_VALUE_BYTES:,} bytes a secret.")
    return value


def as_datetime(value: datetime | int | float | None) -> datetime | None:
    """A time as the wire gives it (epoch seconds) or as Python does, in UTC. Anything else (text, a
    list, NaN, a number of seconds no calendar reaches) is Key Vault's 400 BadParameter."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(f"A time is a number of epoch seconds, not {shown(json_text(value))}.")
    try:
        return datetime.fromtimestamp(int(value), timezone.utc)
    except (OverflowError, OSError, ValueError):  # NaN, infinity, before year 1 or after 9999
        raise _bad(f"The time {shown(json_text(value))} (epoch seconds) is out of range.") from None


def json_text(value: Any) -> str:
    """A value as the request's JSON wrote it, for an error to echo."""

    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def _check_enabled(enabled: Any) -> bool:
    if not isinstance(enabled, bool):
        raise _bad(f"The attribute 'enabled' is true or false, not {shown(json_text(enabled))}.")
    return enabled


def _epoch(value: datetime | None) -> int | None:
    return None if value is None else int(as_datetime(value).timestamp())


# -- rows ------------------------------------------------------------------------------------------------

def _rows(ctx: Ctx, v: Resource, name: str | None = None) -> list[KeyVaultSecret]:
    """The vault's versions (of one secret, when named), oldest first; versions whose purge date has
    passed are gone, as Key Vault purges them by itself."""
    stmt = select(KeyVaultSecret).where(KeyVaultSecret.vault_pk == v.pk)
    if name is not None:
        stmt = stmt.where(KeyVaultSecret.name_key == ids.key(name))
    now = ctx.now()
    return [r for r in ctx.session.exec(stmt.order_by(KeyVaultSecret.pk)).all()
            if r.scheduled_purge_at is None or as_datetime(r.scheduled_purge_at) > now]


def _live(ctx: Ctx, v: Resource, name: str) -> list[KeyVaultSecret]:
    rows = _rows(ctx, v, check_name(name))
    if not rows or rows[0].deleted_at is not None:
        raise secret_not_found(name)
    return rows


def _deleted(ctx: Ctx, v: Resource, name: str) -> list[KeyVaultSecret]:
    rows = _rows(ctx, v, check_name(name))
    if not rows or rows[0].deleted_at is None:
        raise deleted_secret_not_found(name)
    return rows


def _version(rows: list[KeyVaultSecret], name: str, version: str | None) -> KeyVaultSecret:
    """The version named, or the latest (the last one made) when none is."""
    if not version:
        return rows[-1]
    found = next((r for r in rows if r.version == version.lower()), None)
    if found is None:
        raise secret_not_found(name, version)
    return found


def _target(v: Resource, name: str) -> str:
    return f"{v.arm_id}/secrets/{name}"


# -- shapes, as the REST API returns them ------------------------------------------------------------

def _attributes(row: KeyVaultSecret) -> dict[str, Any]:
    attrs: dict[str, Any] = {"enabled": bool(row.enabled)}
    if row.not_before is not None:
        attrs["nbf"] = _epoch(row.not_before)
    if row.expires is not None:
        attrs["exp"] = _epoch(row.expires)
    attrs.update(created=_epoch(row.created_at), updated=_epoch(row.updated_at), recoveryLevel=RECOVERY_LEVEL,
                 recoverableDays=RECOVERABLE_DAYS)
    return attrs


def _common(row: KeyVaultSecret, secret_id: str) -> dict[str, Any]:
    out: dict[str, Any] = {"id": secret_id, "attributes": _attributes(row)}
    if row.content_type is not None:
        out["contentType"] = row.content_type
    if row.tags:
        out["tags"] = dict(row.tags)
    return out


def secret_id(v: Resource, row: KeyVaultSecret, *, versioned: bool = True) -> str:
    base = f"{vault_url(v)}/secrets/{row.name}"
    return f"{base}/{row.version}" if versioned else base


def secret_bundle(v: Resource, row: KeyVaultSecret, *, with_value: bool = True) -> dict[str, Any]:
    """SecretBundle: the versioned id, the value (not after an update or a recover), attributes."""
    out = _common(row, secret_id(v, row))
    if with_value:
        out["value"] = row.value
    return out


def secret_item(v: Resource, row: KeyVaultSecret, *, versioned: bool = False) -> dict[str, Any]:
    """SecretItem: no value; a listing of secrets gives versionless ids, a listing of versions versioned ones."""
    return _common(row, secret_id(v, row, versioned=versioned))


def _deleted_part(v: Resource, row: KeyVaultSecret) -> dict[str, Any]:
    return {"recoveryId": f"{vault_url(v)}/deletedsecrets/{row.name}", "deletedDate": _epoch(row.deleted_at),
            "scheduledPurgeDate": _epoch(row.scheduled_purge_at)}


def deleted_secret_bundle(v: Resource, row: KeyVaultSecret) -> dict[str, Any]:
    """DeletedSecretBundle: the latest version's bundle without its value, with the deletion's fields."""
    return {**secret_bundle(v, row, with_value=False), **_deleted_part(v, row)}


def deleted_secret_item(v: Resource, row: KeyVaultSecret) -> dict[str, Any]:
    return {**secret_item(v, row), **_deleted_part(v, row)}


# -- operations ------------------------------------------------------------------------------------

def _set(ctx: Ctx, v: Resource, name: str, value: str, *, content_type: str | None, tags: dict | None, enabled: bool,
         not_before: Any, expires: Any) -> KeyVaultSecret:
    check_name(name)
    _check_value(value)
    _check_attributes(content_type, tags)
    enabled = True if enabled is None else _check_enabled(enabled)  # JSON's null: not given
    not_before, expires = as_datetime(not_before), as_datetime(expires)
    rows = _rows(ctx, v, name)
    if rows and rows[0].deleted_at is not None:
        raise _deleted_but_recoverable(rows[0].name)
    for gone in ctx.session.exec(select(KeyVaultSecret).where(  # versions purged by their date free the name
            KeyVaultSecret.vault_pk == v.pk, KeyVaultSecret.name_key == ids.key(name),
            KeyVaultSecret.scheduled_purge_at.is_not(None))).all():
        ctx.session.delete(gone)
    stored_name = rows[0].name if rows else name  # names compare case-insensitively; the first spelling stays
    now = ctx.now()
    row = ctx.insert(KeyVaultSecret, {
        "pk": ctx.writer.next_pk(KeyVaultSecret), "vault_pk": v.pk, "name": stored_name, "name_key": ids.key(name),
        "version": ctx.new_guid().replace("-", ""), "value": value, "content_type": content_type, "tags": tags or {},
        "enabled": bool(enabled), "not_before": not_before, "expires": expires, "created_at": now, "updated_at": now})
    ctx.log(f"{SECRET_TYPE}/write", _target(v, stored_name), detail=f"version {row.version}")
    return row


def set_secret(ctx: Ctx, v: Resource, name: str, value: str, *, content_type: str | None = None, tags: dict | None = None,
               enabled: bool = True, not_before: datetime | int | None = None,
               expires: datetime | int | None = None) -> dict[str, Any]:
    """PUT /secrets/{name}: a new version, which becomes the latest. A name that is soft-deleted
    cannot be reused until it is recovered or purged (409)."""
    return secret_bundle(v, _set(ctx, v, name, value, content_type=content_type, tags=tags, enabled=enabled,
                                 not_before=not_before, expires=expires))


def declare_secret(ctx: Ctx, v: Resource, name: str, value: str, *, content_type: str | None = None,
                   tags: dict | None = None, enabled: bool = True, not_before: datetime | int | None = None,
                   expires: datetime | int | None = None) -> tuple[dict[str, Any], str]:
    """A secret as a tenant file declares it: unchanged when its latest version already has this value
    and these attributes, else a new version (set_secret's rules). Returns the bundle and what was
    done: "create", "update" or "unchanged"."""
    check_name(name)
    rows = _rows(ctx, v, name)
    wanted = (value, content_type, dict(tags or {}), bool(enabled), _epoch(as_datetime(not_before)), _epoch(as_datetime(expires)))
    if rows and rows[0].deleted_at is None:
        last = rows[-1]
        if (last.value, last.content_type, dict(last.tags or {}), bool(last.enabled), _epoch(last.not_before),
                _epoch(last.expires)) == wanted:
            return secret_bundle(v, last), "unchanged"
    bundle = set_secret(ctx, v, name, value, content_type=content_type, tags=tags, enabled=enabled,
                        not_before=not_before, expires=expires)
    return bundle, "update" if rows else "create"


def get_secret(ctx: Ctx, v: Resource, name: str, version: str | None = None) -> dict[str, Any]:
    """GET /secrets/{name}/{version}: the latest version when none is given; a disabled one is 403."""
    row = _version(_live(ctx, v, name), name, version)
    if not row.enabled:
        raise _error(ForbiddenError, "Forbidden", "Operation get is not allowed on a disabled secret.", "SecretDisabled")
    return secret_bundle(v, row)


def list_secrets(ctx: Ctx, v: Resource) -> list[dict[str, Any]]:
    """GET /secrets: each secret that is not deleted, as its latest version, versionless, without value."""
    latest: dict[str, KeyVaultSecret] = {}
    for row in _rows(ctx, v):
        if row.deleted_at is None:
            latest[row.name_key] = row
    return [secret_item(v, latest[k]) for k in sorted(latest)]


def list_versions(ctx: Ctx, v: Resource, name: str) -> list[dict[str, Any]]:
    """GET /secrets/{name}/versions: every version, with versioned ids, oldest first. Key Vault answers
    an empty list for a name it does not hold."""
    rows = [r for r in _rows(ctx, v, check_name(name)) if r.deleted_at is None]
    return [secret_item(v, r, versioned=True) for r in rows]


_UNSET: Any = object()


def update_secret(ctx: Ctx, v: Resource, name: str, version: str | None = None, *, enabled: bool | None = None,
                  not_before: Any = _UNSET, expires: Any = _UNSET, content_type: str | None = None,
                  tags: dict | None = None) -> dict[str, Any]:
    """PATCH /secrets/{name}/{version}: the attributes given change on that version (the latest when
    none is given); its value does not. `not_before`/`expires` of None clear them. Returns the bundle
    without its value, as Key Vault does."""
    row = _version(_live(ctx, v, name), name, version)
    _check_attributes(content_type, tags)
    changes: dict[str, Any] = {}
    if enabled is not None:
        changes["enabled"] = _check_enabled(enabled)
    if not_before is not _UNSET:
        changes["not_before"] = as_datetime(not_before)
    if expires is not _UNSET:
        changes["expires"] = as_datetime(expires)
    if content_type is not None:
        changes["content_type"] = content_type
    if tags is not None:
        changes["tags"] = dict(tags)
    for field, value in changes.items():
        setattr(row, field, value)
    row.updated_at = ctx.now()
    ctx.session.add(row)
    ctx.log(f"{SECRET_TYPE}/write", _target(v, row.name), detail=f"version {row.version}: attributes updated")
    return secret_bundle(v, row, with_value=False)


def delete_secret(ctx: Ctx, v: Resource, name: str) -> dict[str, Any]:
    """DELETE /secrets/{name}: soft delete of every version, purged by itself after 90 days; a secret
    that does not exist (or is deleted already) is 404, as Key Vault's DELETE is not idempotent."""
    rows = _live(ctx, v, name)
    now = ctx.now()
    for row in rows:
        row.deleted_at, row.scheduled_purge_at = now, now + timedelta(days=RECOVERABLE_DAYS)
        ctx.session.add(row)
    ctx.log(f"{SECRET_TYPE}/delete", _target(v, rows[-1].name), detail=f"{len(rows)} version(s), recoverable")
    return deleted_secret_bundle(v, rows[-1])


def get_deleted(ctx: Ctx, v: Resource, name: str) -> dict[str, Any]:
    return deleted_secret_bundle(v, _deleted(ctx, v, name)[-1])


def list_deleted(ctx: Ctx, v: Resource) -> list[dict[str, Any]]:
    latest: dict[str, KeyVaultSecret] = {}
    for row in _rows(ctx, v):
        if row.deleted_at is not None:
            latest[row.name_key] = row
    return [deleted_secret_item(v, latest[k]) for k in sorted(latest)]


def recover(ctx: Ctx, v: Resource, name: str) -> dict[str, Any]:
    """POST /deletedsecrets/{name}/recover: every version back as it was; the latest's bundle, no value."""
    rows = _deleted(ctx, v, name)
    for row in rows:
        row.deleted_at = row.scheduled_purge_at = None
        ctx.session.add(row)
    ctx.log(f"{SECRET_TYPE}/recover/action", _target(v, rows[-1].name))
    return secret_bundle(v, rows[-1], with_value=False)


def purge(ctx: Ctx, v: Resource, name: str) -> None:
    """DELETE /deletedsecrets/{name}: a deleted secret gone for good (204), its name free again."""
    rows = _deleted(ctx, v, name)
    for row in rows:
        ctx.session.delete(row)
    ctx.log(f"{SECRET_TYPE}/purge/action", _target(v, rows[-1].name))
    ctx.session.flush()


def delete_vault_secrets(ctx: Ctx, v: Resource) -> int:
    """A vault deleted takes every secret it holds, deleted ones included (they cannot outlive it)."""
    rows = list(ctx.session.exec(select(KeyVaultSecret).where(KeyVaultSecret.vault_pk == v.pk)).all())
    names: dict[str, str] = {}
    for row in rows:
        names.setdefault(row.name_key, row.name)
        ctx.session.delete(row)
    for name in sorted(names.values(), key=ids.key):
        ctx.log(f"{SECRET_TYPE}/delete", _target(v, name), detail="with its vault")
    return len(rows)


# -- the tenant file ----------------------------------------------------------------------------------

def _iso(value: datetime | None) -> str | None:
    return None if value is None else as_datetime(value).strftime("%Y-%m-%dT%H:%M:%SZ")


def exported(ctx: Ctx, v: Resource) -> list[dict[str, Any]]:
    """The vault's secrets as a tenant file declares them: the latest version of each secret that is not
    deleted, value included (only `mi export --include-secrets` asks for them)."""
    latest: dict[str, KeyVaultSecret] = {}
    for row in _rows(ctx, v):
        if row.deleted_at is None:
            latest[row.name_key] = row
    out = []
    for k in sorted(latest):
        row = latest[k]
        entry: dict[str, Any] = {"name": row.name, "value": row.value}
        if row.content_type is not None:
            entry["contentType"] = row.content_type
        if row.tags:
            entry["tags"] = dict(row.tags)
        if not row.enabled:
            entry["enabled"] = False
        if row.not_before is not None:
            entry["notBefore"] = _iso(row.not_before)
        if row.expires is not None:
            entry["expires"] = _iso(row.expires)
        out.append(entry)
    return out


def parse_time(text: str | None, what: str) -> datetime | None:
    """A UTC time as az and the tenant file write it (2030-01-31T00:00:00Z; a date alone is midnight)."""
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        return as_datetime(value).astimezone(timezone.utc)
    except (ValueError, OverflowError):  # not a time, or one whose UTC falls outside years 1-9999
        raise ValidationError("InvalidArgumentValue", f"{what} '{shown(text)}' is not a UTC datetime such as 2030-01-31T00:00:00Z.") from None
