"""Resources of the catalog's types: create (as a PUT), find, list, delete (rule 3)."""

from __future__ import annotations

from sqlmodel import select

from mi_cli import ids
from mi_cli.catalog import catalog, normalise_location
from mi_cli.errors import NotFoundError, ValidationError, resource_not_found
from mi_cli.models import Attachment, Resource, ResourceGroup
from mi_cli.services import Ctx, principals, repeat_put
from mi_cli.services.validation import resource_name


def create(
    ctx: Ctx,
    group: ResourceGroup,
    name: str,
    type_text: str,
    *,
    location: str | None = None,
    tags: dict | None = None,
    parent: str | None = None,
) -> Resource:
    """Create a resource, or return the existing one (tags updated) as a repeated PUT does."""
    rt, kind = catalog().resolve(type_text)
    resource_name(name, rt.name_rule, rt.type)
    full_name = name
    if rt.parent_type:
        if not parent:
            raise ValidationError(
                "InvalidParameter", f"The type '{rt.type}' is a child type: name its parent with --parent."
            )
        parent_res = get(ctx, group, parent, type_text=rt.parent_type)
        full_name = f"{parent_res.name}/{name}"
    elif parent:
        raise ValidationError("InvalidParameter", f"The type '{rt.type}' is not a child type; drop --parent.")
    location = normalise_location(location, for_what=f"resource type '{rt.type}'") if location else group.location
    arm_id = ids.resource_id(group.subscription_id, group.name, rt.type, full_name)
    existing = by_id(ctx, arm_id)
    if existing is not None:
        return repeat_put(ctx, existing, location=location, tags=tags, group_name=group.name, operation=f"{rt.type}/write")
    res = Resource(
        group_pk=group.pk,
        name=full_name,
        name_key=ids.key(full_name),
        type=rt.type,
        kind=kind,
        location=location,
        tags=tags or {},
        arm_id=arm_id,
        id_key=ids.key(arm_id),
        created_at=ctx.now(),
    )
    ctx.session.add(res)
    ctx.session.flush()
    ctx.log(f"{rt.type}/write", arm_id)
    if rt.system_always_on:
        from mi_cli.services import identities

        identities.enable_system(ctx, res)
    return res


def by_id(ctx: Ctx, arm_id: str) -> Resource | None:
    return ctx.session.exec(select(Resource).where(Resource.id_key == ids.key(arm_id.rstrip("/")))).first()


def get(ctx: Ctx, group: ResourceGroup, name: str, *, type_text: str | None = None) -> Resource:
    """A resource of the group by name (`parent/child` for child types), narrowed by type if given."""
    stmt = select(Resource).where(Resource.group_pk == group.pk, Resource.name_key == ids.key(name))
    found = list(ctx.session.exec(stmt).all())
    if type_text:
        rt = catalog().get(type_text)
        found = [r for r in found if ids.same(r.type, rt.type)]
    if not found:
        raise resource_not_found(catalog().get(type_text).type if type_text else None, name, group.name)
    if len(found) > 1:
        types = ", ".join(sorted(r.type for r in found))
        raise ValidationError(
            "AmbiguousResourceName", f"Several resources in group '{group.name}' are named '{name}' ({types}); pass --type."
        )
    return found[0]


def get_by_id_or_fail(ctx: Ctx, arm_id: str) -> Resource:
    res = by_id(ctx, arm_id)
    if res is None:
        parsed = ids.parse(arm_id)
        if parsed is None or parsed.type_name is None:
            raise ValidationError("InvalidResourceId", f"'{arm_id}' is not a valid resource id.")
        raise resource_not_found(parsed.type_name, parsed.name, parsed.group)
    return res


def list_all(ctx: Ctx, *, group: ResourceGroup | None = None, sub_id: str | None = None, type_text: str | None = None) -> list[Resource]:
    stmt = select(Resource)
    if group is not None:
        stmt = stmt.where(Resource.group_pk == group.pk)
    elif sub_id is not None:
        stmt = stmt.join(ResourceGroup, ResourceGroup.pk == Resource.group_pk).where(ResourceGroup.subscription_id == sub_id)
    items = list(ctx.session.exec(stmt.order_by(Resource.id_key)).all())
    if type_text:
        rt = catalog().get(type_text)
        items = [r for r in items if ids.same(r.type, rt.type)]
    return items


def descendants(ctx: Ctx, res: Resource) -> list[Resource]:
    prefix = res.id_key + "/"
    stmt = select(Resource).where(Resource.group_pk == res.group_pk, Resource.id_key.startswith(prefix, autoescape=True))
    return list(ctx.session.exec(stmt).all())


def delete_resource(ctx: Ctx, res: Resource) -> list[Resource]:
    """Rule 3: the resource, its children, their system identities and service principals, and the
    role assignments scoped on them go; the user-assigned identities they had stay (only the
    attachments go), and so do role assignments their identities hold elsewhere (rule 6)."""
    from mi_cli.services.assignments import delete_within

    gone = [*descendants(ctx, res), res]
    delete_within(ctx, res.arm_id)  # assignments at the resource or below it; never the identity's elsewhere
    for item in gone:
        principals.delete(ctx, item.system_principal_id)
        for att in ctx.session.exec(select(Attachment).where(Attachment.resource_pk == item.pk)).all():
            ctx.session.delete(att)
        ctx.session.delete(item)
        ctx.log(f"{item.type}/delete", item.arm_id)
    ctx.session.flush()
    return gone


def delete(ctx: Ctx, group: ResourceGroup, name: str, *, type_text: str | None = None) -> list[Resource]:
    """Idempotent, as ARM's DELETE: a resource that is already gone is not an error."""
    try:
        res = get(ctx, group, name, type_text=type_text)
    except NotFoundError:
        return []
    return delete_resource(ctx, res)
