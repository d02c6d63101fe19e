"""What a command names: a name within a group, or a full ARM id, found (or deleted) in one place."""

from __future__ import annotations

from mi_cli import ids
from mi_cli.errors import NotFoundError, UsageError, ValidationError, resource_not_found
from mi_cli.models import Resource, UserAssignedIdentity
from mi_cli.services import Ctx, groups, identities, resources


def _need_group(group: str | None, what: str) -> str:
    if not group:
        raise UsageError("MissingArgument", f"--resource-group/-g is required when {what} is given by name.")
    return group


def resource(ctx: Ctx, ref: str, group: str | None, *, subscription: str | None = None, type_text: str | None = None) -> Resource:
    ref = ref.strip()
    if ref.startswith("/"):
        return resources.get_by_id_or_fail(ctx, ref)
    g = groups.get(ctx, _need_group(group, "the resource"), subscription=subscription)
    return resources.get(ctx, g, ref, type_text=type_text)


def user_assigned(ctx: Ctx, ref: str, group: str | None, *, subscription: str | None = None) -> UserAssignedIdentity:
    ref = ref.strip()
    if ref.startswith("/"):
        parsed = ids.parse(ref)
        if parsed is None or parsed.type_name is None or not ids.same(parsed.type_name, ids.UAMI_TYPE):
            raise ValidationError("InvalidResourceId", f"'{ref}' is not the id of a user-assigned identity.")
        uami = identities.user_assigned_by_id(ctx, ref)
        if uami is None:
            raise resource_not_found(ids.UAMI_TYPE, parsed.name, parsed.group)
        return uami
    g = groups.get(ctx, _need_group(group, "the identity"), subscription=subscription)
    return identities.get_user_assigned(ctx, g, ref)


def delete_resource(ctx: Ctx, ref: str, group: str | None, *, subscription: str | None = None,
                    type_text: str | None = None) -> list[Resource]:
    """ARM's DELETE: a resource that is already gone is no error (204); its group must exist."""
    try:
        res = resource(ctx, ref, group, subscription=subscription, type_text=type_text)
    except NotFoundError as exc:
        if exc.code == "ResourceGroupNotFound":
            raise
        return []
    return resources.delete_resource(ctx, res)


def delete_user_assigned(ctx: Ctx, ref: str, group: str | None, *, subscription: str | None = None) -> UserAssignedIdentity | None:
    """ARM's DELETE of a user-assigned identity (rule 5): one already gone is no error; its group must exist."""
    try:
        uami = user_assigned(ctx, ref, group, subscription=subscription)
    except NotFoundError as exc:
        if exc.code == "ResourceGroupNotFound":
            raise
        return None
    identities.delete_user_assigned(ctx, uami)
    return uami
