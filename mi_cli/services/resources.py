"""Resources of the catalog's types: create (as a PUT), find, list, delete (rule 3)."""

from __future__ import annotations

from typing import Any, Callable

from sqlmodel import select

from mi_cli import ids
from mi_cli.catalog import catalog, normalise_location
from mi_cli.errors import NotFoundError, ValidationError, resource_not_found
from mi_cli.models import Attachment, EndpointSecret, Resource, ResourceGroup
from mi_cli.services import Ctx, assignments, identities, keyvault, principals, repeat_put, scopes
from mi_cli.services.validation import check_tags, resource_name


def create(
    ctx: Ctx,
    group: ResourceGroup,
    name: str,
    type_text: str,
    *,
    location: str | None = None,
    tags: dict | None = None,
    parent: str | None = None,
    system_assigned: bool = False,
    user_assigned: list[str | identities.Reference] = (),
    principal_id: str | None = None,
    client_id: str | None = None,
    existing: Any = identities.LOOKUP,
    in_use: Callable[[str, str], bool] | None = None,
) -> Resource:
    """Create a resource with the identities named, or, as a repeated PUT, return the existing one
    with its tags replaced (when given) and the identities named added (none is taken away).
    Types whose system identity is always on (Arc) get it at creation (rule 10). A bulk caller
    passes `existing` from its index, and references it resolved."""
    rt, kind = catalog().resolve(type_text)
    resource_name(name, rt.name_rule, rt.type)
    full_name = name
    if rt.parent_type:
        if not parent:
            raise ValidationError(
                "InvalidParameter", f"The type '{rt.type}' is a child type: name its parent with --parent."
            )
        full_name = f"{parent_named(ctx, group, parent, rt.parent_type).name}/{name}"
    elif parent:
        raise ValidationError("InvalidParameter", f"The type '{rt.type}' is not a child type; drop --parent.")
    location = normalise_location(location, for_what=f"resource type '{rt.type}'") if location else group.location
    tags = check_tags(tags) if tags is not None else None
    arm_id = ids.resource_id(group.subscription_id, group.name, rt.type, full_name)
    system = system_assigned or rt.system_always_on
    if system:
        identities.check_system_supported(rt)
    if user_assigned:
        identities.check_user_assigned(rt, 0)
    identities.check_one_kind(rt, system=system, user=bool(user_assigned))
    if existing is identities.LOOKUP:
        existing = by_id(ctx, arm_id)
    if existing is not None:
        res = repeat_put(ctx, existing, location=location, tags=tags, group_name=group.name, operation=f"{rt.type}/write")
        if user_assigned:
            identities.attach(ctx, res, list(user_assigned))
        return identities.enable_system(ctx, res) if system_assigned else res
    sp = None
    if system:
        sp = principals.create(ctx, display_name=identities.system_display_name(rt.type, full_name), explicit=False,
                               mi_resource_id=arm_id, principal_id=principal_id, client_id=client_id, in_use=in_use)
    res = ctx.insert(Resource, {
        "pk": ctx.writer.next_pk(Resource), "group_pk": group.pk, "name": full_name, "name_key": ids.key(full_name),
        "type": rt.type, "kind": kind, "location": location, "tags": tags or {}, "arm_id": arm_id, "id_key": ids.key(arm_id),
        "system_principal_id": sp.id if sp else None, "created_at": ctx.now()})
    ctx.log(f"{rt.type}/write", arm_id, detail="identity: system-assigned enabled" if sp else None)
    if user_assigned:
        identities.attach(ctx, res, list(user_assigned), current=[])
    return res


def parent_named(ctx: Ctx, group: ResourceGroup, parent: str, parent_type: str) -> Resource:
    """The parent of a child resource (a web app of a slot), which must exist."""
    found = by_id(ctx, ids.resource_id(group.subscription_id, group.name, parent_type, parent))
    if found is None:
        raise NotFoundError("ParentResourceNotFound", "Can not perform requested operation on nested resource. "
                            f"Parent resource '{parent}' not found.")
    return found


def by_id(ctx: Ctx, arm_id: str) -> Resource | None:
    return scopes.resource_at(ctx, arm_id)


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
    """Rule 3: the resource, its children, their system identities and service principals, their
    token-endpoint secrets, a vault's Key Vault secrets (deleted ones too), and the role assignments
    scoped on them go; the user-assigned identities
    they had stay (only the attachments go), and so do role assignments their identities hold
    elsewhere (rule 6)."""
    gone = [*descendants(ctx, res), res]
    assignments.delete_within(ctx, res.arm_id)  # at the resource or below it; never the identity's elsewhere
    for item in gone:
        principals.delete(ctx, item.system_principal_id)
        for att in ctx.session.exec(select(Attachment).where(Attachment.resource_pk == item.pk)).all():
            ctx.session.delete(att)
        secret = ctx.session.get(EndpointSecret, item.pk)
        if secret is not None:
            ctx.session.delete(secret)
        if item.type == keyvault.VAULT_TYPE:
            keyvault.delete_vault_secrets(ctx, item)
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
