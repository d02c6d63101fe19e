"""Scopes: what a subscription, group or resource id (or a path below a resource) names in the store."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import select

from mi_cli import ids
from mi_cli.errors import NotFoundError, UsageError, ValidationError, group_not_found
from mi_cli.models import Resource, ResourceGroup, Subscription, UserAssignedIdentity
from mi_cli.services import Ctx
from mi_cli.services.tenancy import find_subscription, subscription_by_id


def resource_at(ctx: Ctx, arm_id: str) -> Resource | None:
    """The resource with this id (ids compare case-insensitively, rule 11)."""
    return ctx.session.exec(select(Resource).where(Resource.id_key == ids.key(arm_id.strip().rstrip("/")))).first()


@dataclass(frozen=True)
class Scope:
    id: str  # canonical casing, from the store's objects
    subscription: Subscription


def resolve_scope(ctx: Ctx, scope: str) -> Scope:
    """A subscription, a group, a resource, or a path below a resource; it must exist."""
    text = scope.strip().rstrip("/")
    parsed = ids.parse(text)
    if parsed is None and text.count("/") > 8:  # a path below a resource of any depth (a blob's a/b.txt)
        parsed = ids.parse(text.rpartition("/")[0])
    if parsed is None:
        raise ValidationError("InvalidScope", f"The scope '{scope}' is not a subscription, resource group or resource id.")
    sub = subscription_by_id(ctx, parsed.subscription)
    if sub is None:
        raise NotFoundError("SubscriptionNotFound", f"The subscription '{parsed.subscription}' could not be found.")
    if parsed.group is None:
        return Scope(ids.subscription_id(sub.id), sub)
    group = ctx.session.exec(select(ResourceGroup).where(
        ResourceGroup.subscription_id == sub.id, ResourceGroup.name_key == ids.key(parsed.group))).first()
    if group is None:
        raise group_not_found(parsed.group)
    if parsed.type_name is None:
        return Scope(ids.group_id(sub.id, group.name), sub)
    # the resource itself, or its nearest existing ancestor for a path below it (a secret of a vault, a blob
    # of a container): every prefix that could be a resource id, asked at once, the longest found wins
    parts = text.split("/")
    prefixes = {ids.key("/".join(parts[:end])): end for end in range(len(parts), 8, -1)}
    keys = list(prefixes)
    # a user-assigned identity is a resource of ARM too (Managed Identity Operator is granted on one)
    found = [*ctx.session.exec(select(Resource).where(Resource.id_key.in_(keys))).all(),
             *ctx.session.exec(select(UserAssignedIdentity).where(UserAssignedIdentity.id_key.in_(keys))).all()]
    if found:
        res = max(found, key=lambda r: prefixes[r.id_key])
        end = prefixes[res.id_key]
        return Scope(res.arm_id + "/".join([""] + parts[end:]) if end < len(parts) else res.arm_id, sub)
    raise NotFoundError("ResourceNotFound", f"The Resource '{parsed.type_name}/{parsed.name}' under resource group "
                        f"'{parsed.group}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix")


def from_options(ctx: Ctx, *, scope: str | None, group: str | None, subscription: str | None,
                 default_subscription: bool = False) -> str | None:
    """az's `--scope` or `--resource-group` (not both) as a scope id; with neither, the subscription's
    scope where a command defaults to it (`role assignment create`), else None (no filter)."""
    if scope and group:
        raise UsageError("MutuallyExclusiveArguments", "Give --scope or --resource-group, not both.")
    if scope and subscription:
        # the scope names its subscription: --subscription may only say the same
        from mi_cli.services.lookup import check_id_options

        parts = scope.strip().split("/")
        if len(parts) > 2 and not parts[0] and parts[1].casefold() == "subscriptions" and parts[2]:
            check_id_options(ctx, ids.subscription_id(parts[2]), subscription=subscription, what="--scope")
    if group:
        sub = find_subscription(ctx, subscription, create=False)
        found = ctx.session.exec(select(ResourceGroup).where(
            ResourceGroup.subscription_id == sub.id, ResourceGroup.name_key == ids.key(group))).first() if sub else None
        if found is None:
            from mi_cli.services import next_steps

            raise group_not_found(group).add_next_step(
                next_steps.missing_group(ctx, group, subscription, sub.id if sub else None))
        return ids.group_id(found.subscription_id, found.name)
    if scope or not default_subscription:
        return scope
    return ids.subscription_id(find_subscription(ctx, subscription).id)
