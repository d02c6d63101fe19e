"""What a command names: a name within a group, or a full ARM id, found (or deleted) in one place. An id
names its own subscription, group and type: options that say otherwise are refused, never ignored."""

from __future__ import annotations

from mi_cli import ids
from mi_cli.catalog import catalog
from mi_cli.errors import NotFoundError, UsageError, ValidationError, conflict, resource_not_found, shown
from mi_cli.models import Resource, UserAssignedIdentity
from mi_cli.services import Ctx, groups, identities, next_steps, resources
from mi_cli.services.tenancy import find_subscription


def _need_group(group: str | None, what: str) -> str:
    if not group:
        raise UsageError("MissingArgument", f"--resource-group/-g is required when {what} is given by name.")
    return group


def check_id_options(ctx: Ctx, ref: str, *, group: str | None = None, subscription: str | None = None,
                     type_text: str | None = None, what: str = "the id") -> None:
    """-g, --subscription and --type given with an id: they must say what the id says (then they change
    nothing), else the command is refused, naming the option that disagrees; az would warn and ignore them."""
    parsed = ids.parse(ref)
    if parsed is None:
        return  # not an id of anything: the lookup refuses it in its own words
    if group and (parsed.group is None or not ids.same(group.strip(), parsed.group)):
        where = f"in resource group '{shown(parsed.group)}'" if parsed.group else "not in a resource group"
        raise conflict(f"--resource-group/-g '{shown(group)}' does not match {what}, which is {where}: the id names its "
                       "own group; drop -g.")
    if subscription:
        sub = find_subscription(ctx, subscription, create=False)
        if sub is None or not ids.same(sub.id, parsed.subscription):
            raise conflict(f"--subscription (or MI_SUBSCRIPTION) '{shown(subscription)}' does not match {what}, which is in "
                           f"subscription '{shown(parsed.subscription)}': {what} names its own subscription; drop "
                           "--subscription.")
    if type_text:
        wanted = catalog().get(type_text).type
        if parsed.type_name is None or not ids.same(wanted, parsed.type_name):
            raise conflict(f"--type '{shown(type_text)}' ({wanted}) does not match {what}, which names a "
                           f"{shown(parsed.type_name or 'resource group')}: the id names its own type; drop --type.")


def resource(ctx: Ctx, ref: str, group: str | None, *, subscription: str | None = None, type_text: str | None = None) -> Resource:
    ref = ref.strip()
    if ref.startswith("/"):
        check_id_options(ctx, ref, group=group, subscription=subscription, type_text=type_text, what="the resource id")
        try:
            return resources.get_by_id_or_fail(ctx, ref)
        except NotFoundError as exc:
            raise next_steps.add(exc, next_steps.missing_by_id("resource", ids.parse(ref))) from None
    g = groups.get(ctx, _need_group(group, "the resource"), subscription=subscription)
    try:
        return resources.get(ctx, g, ref, type_text=type_text)
    except NotFoundError as exc:
        raise next_steps.add(exc, next_steps.missing_resource(ctx, g, ref, type_text)) from None


def user_assigned(ctx: Ctx, ref: str, group: str | None, *, subscription: str | None = None) -> UserAssignedIdentity:
    ref = ref.strip()
    if ref.startswith("/"):
        parsed = ids.parse(ref)
        if parsed is None or parsed.type_name is None or not ids.same(parsed.type_name, ids.UAMI_TYPE):
            raise ValidationError("InvalidResourceId", f"'{ref}' is not the id of a user-assigned identity.")
        check_id_options(ctx, ref, group=group, subscription=subscription, what="the identity id")
        uami = identities.user_assigned_by_id(ctx, ref)
        if uami is None:
            raise next_steps.add(resource_not_found(ids.UAMI_TYPE, parsed.name, parsed.group),
                                 next_steps.missing_by_id("identity", parsed))
        return uami
    g = groups.get(ctx, _need_group(group, "the identity"), subscription=subscription)
    try:
        return identities.get_user_assigned(ctx, g, ref)
    except NotFoundError as exc:
        raise next_steps.add(exc, next_steps.missing_identity(ctx, g, ref)) from None


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
