"""Resource groups: create (as a PUT), find, list, and delete with everything in them (rule 9)."""

from __future__ import annotations

from sqlmodel import select

from mi_cli import ids
from mi_cli.catalog import normalise_location
from mi_cli.errors import ConflictError, group_not_found
from mi_cli.models import Resource, ResourceGroup, UserAssignedIdentity
from mi_cli.services import Ctx, assignments, identities, resources
from mi_cli.services.tenancy import find_subscription
from mi_cli.services.validation import check_tags, group_name

GROUP_TYPE = "Microsoft.Resources/resourceGroups"


def create(ctx: Ctx, name: str, location: str, *, tags: dict | None = None, subscription: str | None = None) -> ResourceGroup:
    group_name(name)
    tags = check_tags(tags) if tags is not None else None  # a tenant file's tags come here unchecked
    location = normalise_location(location, for_what="resource group")
    sub = find_subscription(ctx, subscription)
    group = _find(ctx, sub.id, name)
    if group is not None:
        if group.location != location:
            raise ConflictError(
                "InvalidResourceGroupLocation",
                f"Invalid resource group location '{location}'. The Resource group already exists in location "
                f"'{group.location}'.",
            )
        if tags is not None and tags != group.tags:
            group.tags = tags
            ctx.session.add(group)
            ctx.log(f"{GROUP_TYPE}/write", arm_id(sub.id, group))
        return group
    group = ResourceGroup(
        subscription_id=sub.id, name=name, name_key=ids.key(name), location=location, tags=tags or {}, created_at=ctx.now()
    )
    ctx.session.add(group)
    ctx.session.flush()
    ctx.log(f"{GROUP_TYPE}/write", arm_id(sub.id, group))
    return group


def arm_id(sub_id: str, group: ResourceGroup) -> str:
    return ids.group_id(sub_id, group.name)


def _find(ctx: Ctx, sub_id: str, name: str) -> ResourceGroup | None:
    return ctx.session.exec(
        select(ResourceGroup).where(ResourceGroup.subscription_id == sub_id, ResourceGroup.name_key == ids.key(name))
    ).first()


def get(ctx: Ctx, name: str, *, subscription: str | None = None) -> ResourceGroup:
    """A group of the subscription by name; its ResourceGroupNotFound says what to do next (a group of a
    close name, the command that creates it)."""
    sub = find_subscription(ctx, subscription, create=False)
    group = _find(ctx, sub.id, name) if sub is not None else None
    if group is None:
        from mi_cli.services import next_steps

        raise group_not_found(name).add_next_step(
            next_steps.missing_group(ctx, name, subscription, sub.id if sub is not None else None))
    return group


def get_by_id(ctx: Ctx, sub_id: str, name: str) -> ResourceGroup | None:
    return _find(ctx, sub_id, name)


def list_all(ctx: Ctx, *, subscription: str | None = None) -> list[ResourceGroup]:
    sub = find_subscription(ctx, subscription, create=False)
    if sub is None:
        return []
    stmt = select(ResourceGroup).where(ResourceGroup.subscription_id == sub.id).order_by(ResourceGroup.name_key)
    return list(ctx.session.exec(stmt).all())


def delete(ctx: Ctx, name: str, *, subscription: str | None = None) -> ResourceGroup:
    """Everything in the group goes, by rules 3 and 5, in this one transaction."""
    group = get(ctx, name, subscription=subscription)
    members = ctx.session.exec(select(Resource).where(Resource.group_pk == group.pk)).all()
    # Parents before children is not needed: each delete takes its descendants along.
    for res in sorted(members, key=lambda r: len(r.arm_id)):
        if ctx.session.get(Resource, res.pk) is not None:
            resources.delete_resource(ctx, res)
    uamis = ctx.session.exec(select(UserAssignedIdentity).where(UserAssignedIdentity.group_pk == group.pk)).all()
    for uami in uamis:
        identities.delete_user_assigned(ctx, uami)
    assignments.delete_within(ctx, arm_id(group.subscription_id, group))
    ctx.session.delete(group)
    ctx.session.flush()
    ctx.log(f"{GROUP_TYPE}/delete", arm_id(group.subscription_id, group))
    return group
