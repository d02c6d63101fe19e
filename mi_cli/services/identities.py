"""Managed identities: user-assigned ones (their own resources) and the system-assigned one of a
resource; attaching, detaching, and the identity-type state machine of the `identity` block."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from sqlmodel import select

from mi_cli import ids
from mi_cli.catalog import ResourceType, catalog, normalise_location
from mi_cli.errors import ConflictError, NotFoundError, ValidationError, resource_not_found
from mi_cli.models import Attachment, FederatedCredential, Resource, ResourceGroup, ServicePrincipal, Subscription, UserAssignedIdentity
from mi_cli.services import Ctx, principals, repeat_put
from mi_cli.services.tenancy import subscription_by_id
from mi_cli.services.validation import check_tags, no_control, uami_name

SYSTEM = "[system]"
_WRITE = f"{ids.UAMI_TYPE}/write"  # the activity log's operation for a user-assigned identity's PUT


# --- the identity type, as each resource provider spells it ------------------------------------


def identity_type(rt: ResourceType, *, system: bool, user: bool) -> str:
    """`None`, `SystemAssigned`, `UserAssigned` or both, spelled as the type's API spells the pair
    (the catalog has it per type, from each provider's spec: "SystemAssigned, UserAssigned" for
    Compute, Web and others, "SystemAssigned,UserAssigned" for common-types' ManagedServiceIdentity)."""
    if system and user:
        return rt.identity_type_both or "SystemAssigned,UserAssigned"
    if system:
        return "SystemAssigned"
    if user:
        return "UserAssigned"
    return "None"


def is_system_ref(ref: str) -> bool:
    return ref.strip().casefold() == SYSTEM


# --- user-assigned identities -------------------------------------------------------------------


LOOKUP = object()  # `existing=LOOKUP`: the service finds it; a bulk caller passes what its index holds


def create_user_assigned(
    ctx: Ctx, group: ResourceGroup, name: str, *, location: str | None = None, tags: dict | None = None,
    principal_id: str | None = None, client_id: str | None = None, existing: Any = LOOKUP,
    in_use: Callable[[str, str], bool] | None = None, isolation_scope: str | None = None,
) -> UserAssignedIdentity:
    """Rule 4: the identity and its service principal. Repeating the create is ARM's PUT: the same
    ids back, tags and an isolation scope given replaced, a move to another region refused. Ids a
    tenant file carries are adopted for a new identity and must match an existing one."""
    uami_name(name)
    isolation_scope = check_isolation_scope(isolation_scope) if isolation_scope is not None else None
    location = (
        normalise_location(location, for_what=f"resource type '{ids.UAMI_TYPE}'") if location else group.location
    )
    tags = check_tags(tags) if tags is not None else None  # None: a repeated PUT keeps the tags
    if existing is LOOKUP:
        existing = _in_group(ctx, group, name)
    if existing is not None:
        for field_, declared in (("principalId", principal_id), ("clientId", client_id)):
            if declared and not ids.same(getattr(existing, "principal_id" if field_ == "principalId" else "client_id"), declared):
                raise ConflictError("Conflict", f"The identity '{existing.name}' exists with another {field_}; ids cannot change.")
        if isolation_scope is not None and isolation_scope != existing.isolation_scope:
            existing.isolation_scope = isolation_scope
            ctx.session.add(existing)
            ctx.log(_WRITE, existing.arm_id, detail=f"isolationScope {isolation_scope}")
        return repeat_put(ctx, existing, location=location, tags=tags, group_name=group.name, operation=_WRITE)
    arm_id = ids.uami_id(group.subscription_id, group.name, name)
    sp = principals.create(ctx, display_name=name, explicit=True, mi_resource_id=arm_id, principal_id=principal_id,
                           client_id=client_id, in_use=in_use)
    uami = ctx.insert(UserAssignedIdentity, {
        "pk": ctx.writer.next_pk(UserAssignedIdentity), "group_pk": group.pk, "name": name, "name_key": ids.key(name),
        "location": location, "tags": tags or {}, "arm_id": arm_id, "id_key": ids.key(arm_id), "principal_id": sp.id,
        "client_id": sp.app_id, "isolation_scope": isolation_scope or "None", "created_at": ctx.now()})
    ctx.log(_WRITE, arm_id)
    return uami


ISOLATION_SCOPES = ("None", "Regional")  # UserAssignedIdentityProperties.isolationScope, api 2024-11-30


def check_isolation_scope(value: str) -> str:
    """ARM's enum, matched case-insensitively as az's --isolation-scope is, in its canonical spelling."""
    found = next((v for v in ISOLATION_SCOPES if v.casefold() == value.strip().casefold()), None)
    if found is None:
        raise ValidationError("InvalidParameter", f"The isolation scope '{value}' is not one of: "
                              f"{', '.join(ISOLATION_SCOPES)}.")
    return found


def _in_group(ctx: Ctx, group: ResourceGroup, name: str) -> UserAssignedIdentity | None:
    return ctx.session.exec(
        select(UserAssignedIdentity).where(
            UserAssignedIdentity.group_pk == group.pk, UserAssignedIdentity.name_key == ids.key(name)
        )
    ).first()


def get_user_assigned(ctx: Ctx, group: ResourceGroup, name: str) -> UserAssignedIdentity:
    uami = _in_group(ctx, group, name)
    if uami is None:
        raise resource_not_found(ids.UAMI_TYPE, name, group.name)
    return uami


def user_assigned_by_id(ctx: Ctx, arm_id: str) -> UserAssignedIdentity | None:
    return ctx.session.exec(
        select(UserAssignedIdentity).where(UserAssignedIdentity.id_key == ids.key(arm_id.strip().rstrip("/")))
    ).first()


def list_user_assigned(
    ctx: Ctx, *, group: ResourceGroup | None = None, sub_id: str | None = None
) -> list[UserAssignedIdentity]:
    """Read-only rows (columns as attributes), not ORM objects: listings of 100,000 identities
    would spend seconds building objects nobody changes."""
    stmt = select(*UserAssignedIdentity.__table__.columns)
    if group is not None:
        stmt = stmt.where(UserAssignedIdentity.group_pk == group.pk)
    elif sub_id is not None:
        stmt = stmt.join(ResourceGroup, ResourceGroup.pk == UserAssignedIdentity.group_pk).where(
            ResourceGroup.subscription_id == sub_id
        )
    return list(ctx.session.connection().execute(stmt.order_by(UserAssignedIdentity.id_key)).all())


def update_tags(ctx: Ctx, uami: UserAssignedIdentity, tags: dict) -> UserAssignedIdentity:
    uami.tags = check_tags(tags)
    ctx.session.add(uami)
    ctx.log(_WRITE, uami.arm_id)
    return uami


def references_to(ctx: Ctx, arm_id: str, *, principal_id: str | None = None) -> list[Resource]:
    """Resources whose identity block lists this user-assigned identity id; with `principal_id`,
    only those attached to that very identity (not to a deleted one that had the same id)."""
    stmt = (
        select(Resource)
        .join(Attachment, Attachment.resource_pk == Resource.pk)
        .where(Attachment.identity_key == ids.key(arm_id))
        .order_by(Resource.id_key)
    )
    if principal_id is not None:
        stmt = stmt.where(Attachment.principal_id == principal_id)
    return list(ctx.session.exec(stmt).all())


def delete_user_assigned(ctx: Ctx, uami: UserAssignedIdentity) -> list[Resource]:
    """Rule 5: the identity, its service principal and federated credentials go; resources that
    list it keep the reference, now dangling. Returns those resources (and warns)."""
    for fic in ctx.session.exec(select(FederatedCredential).where(FederatedCredential.identity_pk == uami.pk)).all():
        ctx.session.delete(fic)
    principals.delete(ctx, uami.principal_id)
    ctx.session.delete(uami)
    ctx.session.flush()
    ctx.log(f"{ids.UAMI_TYPE}/delete", uami.arm_id)
    still_listed = references_to(ctx, uami.arm_id)
    if still_listed:
        names = ", ".join(r.arm_id for r in still_listed)
        ctx.warn(
            f"The user-assigned identity '{uami.name}' was deleted, but {len(still_listed)} resource(s) still list it "
            f"and can no longer get tokens for it: {names}. Remove it with 'mi identity remove --resource NAME -g RG "
            f"--identities {uami.arm_id}'."
        )
    return still_listed


# --- the system-assigned identity of a resource ------------------------------------------------


def check_system_supported(rt: ResourceType) -> None:
    """Rule 10: only types that support a system-assigned identity can have one."""
    if not rt.system_assigned:
        raise ValidationError(
            "InvalidIdentityType",
            f"The resource type '{rt.type}' does not support a system-assigned identity "
            f"(supported: {_supported(rt)}). See 'mi resource types'.",
        )


def check_one_kind(rt: ResourceType, *, system: bool, user: bool) -> None:
    """A type whose API has no 'SystemAssigned, UserAssigned' value holds one kind at a time."""
    if system and user and rt.identity_type_both is None:
        raise ValidationError(
            "InvalidIdentityType",
            f"The resource type '{rt.type}' takes either a system-assigned identity or user-assigned ones, not both: its API "
            "has no identity type for the two together. Remove one kind first.",
        )


def check_user_assigned(rt: ResourceType, total: int) -> None:
    """Rule 7: the type must support user-assigned identities, up to its limit."""
    if not rt.user_assigned:
        raise ValidationError(
            "InvalidIdentityType",
            f"The resource type '{rt.type}' does not support user-assigned identities "
            f"(supported: {_supported(rt)}). See 'mi resource types'.",
        )
    limit = catalog().user_assigned_limit(rt)
    if total > limit:
        raise ValidationError(
            "BadRequest", f"User Assigned Identities Number '{total}' Assign exceed limit '{limit}' in one request."
        )


def enable_system(ctx: Ctx, res: Resource, *, principal_id: str | None = None, client_id: str | None = None,
                  in_use: Callable[[str, str], bool] | None = None) -> Resource:
    """Rule 1: a new service principal, unless the identity is already on (then nothing changes).
    A tenant file may carry the ids to adopt."""
    rt = catalog().get(res.type)
    check_system_supported(rt)
    if res.system_principal_id:
        return res
    if rt.identity_type_both is None:
        check_one_kind(rt, system=True, user=bool(attachments(ctx, res)))
    sp = principals.create(ctx, display_name=system_display_name(res.type, res.name), explicit=False, mi_resource_id=res.arm_id,
                           principal_id=principal_id, client_id=client_id, in_use=in_use)
    res = _loaded(ctx, res)
    res.system_principal_id = sp.id
    ctx.session.add(res)
    ctx.log(f"{res.type}/write", res.arm_id, detail="identity: system-assigned enabled")
    return res


def disable_system(ctx: Ctx, res: Resource) -> Resource:
    """Rule 2: the service principal is deleted; a later enable makes new ids."""
    rt = catalog().get(res.type)
    if rt.system_always_on:
        raise ValidationError(
            "InvalidIdentityType",
            f"The system-assigned identity of '{res.name}' ({rt.type}) is always on and cannot be disabled.",
        )
    if not res.system_principal_id:
        return res
    principals.delete(ctx, res.system_principal_id)
    res = _loaded(ctx, res)
    res.system_principal_id = None
    ctx.session.add(res)
    ctx.log(f"{res.type}/write", res.arm_id, detail="identity: system-assigned disabled")
    return res


def _loaded(ctx: Ctx, res: Any) -> Resource:
    """The ORM object of a resource that a bulk caller may hold as a plain row."""
    return res if isinstance(res, Resource) else ctx.session.get(Resource, res.pk)


def _arg(value: str) -> str:
    from mi_cli.services.next_steps import arg

    return arg(value)


def system_display_name(type_: str, name: str) -> str:
    """The service principal of a system identity is named after its resource (a slot as app/slots/slot)."""
    if ids.same(type_, "Microsoft.Web/sites/slots"):
        app, slot = name.split("/", 1)
        return f"{app}/slots/{slot}"
    return name


def _supported(rt: ResourceType) -> str:
    kinds = [k for k, on in (("SystemAssigned", rt.system_assigned), ("UserAssigned", rt.user_assigned)) if on]
    return ", ".join(kinds) or "none"


# --- attaching user-assigned identities ----------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """A user-assigned identity as a resource's identity block names it: its id, and the ids of the
    very identity it was attached with (a reference outlives the identity: rule 5)."""

    key: str
    arm_id: str
    principal_id: str
    client_id: str


def attachments(ctx: Ctx, res: Resource) -> list[Attachment]:
    return list(
        ctx.session.exec(select(Attachment).where(Attachment.resource_pk == res.pk).order_by(Attachment.pk)).all()
    )


def resolve_reference(ctx: Ctx, ref: str, group: ResourceGroup) -> tuple[str, UserAssignedIdentity | None]:
    """A name (in `group`) or an ARM id, as az takes it; returns the id and the identity if it exists."""
    ref = ref.strip()
    if ref.startswith("/"):
        parsed = ids.parse(ref)
        if parsed is None or parsed.type_name is None or not ids.same(parsed.type_name, ids.UAMI_TYPE):
            raise invalid_reference(ref)
        return ref.rstrip("/"), user_assigned_by_id(ctx, ref)
    arm_id = ids.uami_id(group.subscription_id, group.name, ref)
    return arm_id, _in_group(ctx, group, ref)


def reference(ctx: Ctx, ref: str, group: ResourceGroup) -> Reference:
    """Rule 7's 'an existing user-assigned identity of the same tenant', by name or id."""
    arm_id, uami = resolve_reference(ctx, ref, group)
    if uami is None or not _same_tenant(ctx, group.subscription_id, uami):
        raise invalid_reference(arm_id)
    return Reference(uami.id_key, uami.arm_id, uami.principal_id, uami.client_id)


def invalid_reference(ref: str) -> ValidationError:
    return ValidationError(
        "InvalidParameter", f"ResourceIdentity identityId '{ref}' is not a valid reference to a Microsoft.ManagedIdentity identity."
    )


def attach(ctx: Ctx, res: Resource, refs: list[str | Reference], *, current: list[Attachment] | None = None) -> Resource:
    """Rule 7: the type must support UA, the identity must exist in the resource's tenant, and the
    type's limit holds. Attaching one that is attached already changes nothing. Refs are names or
    ids, or References a bulk caller resolved from its index; `current` is the resource's
    attachments when the caller holds them already."""
    rt = catalog().get(res.type)
    check_user_assigned(rt, 0)
    have = {a.identity_key: a for a in (attachments(ctx, res) if current is None else current)}
    group = None
    wanted: dict[str, Reference] = {}
    for ref in refs:
        if not isinstance(ref, Reference):
            group = group or ctx.session.get(ResourceGroup, res.group_pk)
            ref = reference(ctx, ref, group)
        wanted[ref.key] = ref
    check_user_assigned(rt, len(set(have) | set(wanted)))
    check_one_kind(rt, system=bool(res.system_principal_id), user=bool(wanted))
    changed = False
    for key_, ref in wanted.items():
        att = have.get(key_)
        if att is not None and att.principal_id == ref.principal_id:
            continue  # already attached: a no-op
        if att is None:
            no_control(ref.arm_id, what="user-assigned identity id")  # a tenant file's dangling reference is stored as given
            ctx.insert(Attachment, {"pk": ctx.writer.next_pk(Attachment), "resource_pk": res.pk, "identity_id": ref.arm_id,
                                    "identity_key": key_, "principal_id": ref.principal_id, "client_id": ref.client_id,
                                    "created_at": ctx.now()})
        else:  # a dangling reference to a deleted identity of the same id: attach the new one
            att = ctx.session.get(Attachment, att.pk)
            att.principal_id, att.client_id = ref.principal_id, ref.client_id
            ctx.session.add(att)
        changed = True
    if changed:
        ctx.log(f"{res.type}/write", res.arm_id, detail="identity: user-assigned attached")
    return res


def _same_tenant(ctx: Ctx, resource_sub: str, uami: UserAssignedIdentity) -> bool:
    group = ctx.session.get(ResourceGroup, uami.group_pk)
    a: Subscription | None = subscription_by_id(ctx, resource_sub)
    b: Subscription | None = subscription_by_id(ctx, group.subscription_id)
    return a is not None and b is not None and a.tenant_id == b.tenant_id


def detach(ctx: Ctx, res: Resource, refs: list[str], *, current: list[Attachment] | None = None) -> Resource:
    """Rule 8 follows from the type being derived from what is left. Refs are names, ids or keys."""
    group = ctx.session.get(ResourceGroup, res.group_pk)
    have = {a.identity_key: a for a in (attachments(ctx, res) if current is None else current)}
    chosen: list[Attachment] = []
    missing: list[str] = []
    for ref in refs:
        att = have.get(ids.key(resolve_reference(ctx, ref, group)[0]))
        if att is None:
            missing.append(ref)
        else:
            chosen.append(att)
    if missing:
        raise ValidationError(
            "BadRequest", f"'{','.join(missing)}' are not associated with '{res.name}'."
        )
    for att in chosen:
        ctx.session.delete(ctx.session.get(Attachment, att.pk))
    if chosen:
        ctx.session.flush()
        ctx.log(f"{res.type}/write", res.arm_id, detail="identity: user-assigned removed")
    return res


def set_identities(ctx: Ctx, res: Resource, *, system: bool | None, user_assigned: list[Reference],
                   principal_id: str | None = None, client_id: str | None = None, current: list[Attachment] | None = None,
                   in_use: Callable[[str, str], bool] | None = None) -> Resource:
    """The identity block as a declaration states it (a PUT of `identity`): the system identity on or
    off (None: as the type has it from creation, rule 10), exactly these user-assigned identities.
    Declared ids of the system identity must be its own: ids cannot change."""
    if system is None:
        system = catalog().get(res.type).system_always_on
    if system and res.system_principal_id and principal_id and not ids.same(principal_id, res.system_principal_id):
        raise ConflictError("Conflict", "The system-assigned identity exists with another principalId; ids cannot change.")
    have = attachments(ctx, res) if current is None else current
    wanted = {r.key for r in user_assigned}
    extra = [a for a in have if a.identity_key not in wanted]
    if extra:
        detach(ctx, res, [a.identity_id for a in extra], current=have)
        have = [a for a in have if a.identity_key in wanted]
    if not system:
        res = disable_system(ctx, res)  # first: a type that takes one kind may be switching to the other
    if user_assigned:
        attach(ctx, res, user_assigned, current=have)
    if system:
        return enable_system(ctx, res, principal_id=principal_id, client_id=client_id, in_use=in_use)
    return res


def assign(ctx: Ctx, res: Resource, refs: list[str]) -> Resource:
    """`identity assign`: `[system]` turns the system identity on; the rest are attached."""
    refs = refs or [SYSTEM]
    users = [r for r in refs if not is_system_ref(r)]
    if users:
        attach(ctx, res, users)
    if len(users) != len(refs):
        enable_system(ctx, res)
    return res


def remove(ctx: Ctx, res: Resource, refs: list[str]) -> Resource:
    """`identity remove`: `[system]` (the default, as in az) turns it off; the rest are detached."""
    refs = refs or [SYSTEM]
    users = [r for r in refs if not is_system_ref(r)]
    if users:
        detach(ctx, res, users)
    if len(users) != len(refs):
        disable_system(ctx, res)
    return res


def is_live(ctx: Ctx, att: Attachment) -> bool:
    """False for a dangling reference: the identity was deleted (and perhaps re-created with new ids)."""
    uami = user_assigned_by_id(ctx, att.identity_id)
    return uami is not None and uami.principal_id == att.principal_id


# --- finding identities ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SystemIdentity:
    resource: Resource
    principal_id: str
    client_id: str


def system_identity(ctx: Ctx, res: Resource) -> SystemIdentity:
    if not res.system_principal_id:
        group = ids.parse(res.arm_id)
        raise NotFoundError(
            "ResourceNotFound", f"The resource '{res.name}' has no system-assigned identity (it is not enabled).",
            next_step=f"Turn it on with 'mi identity assign --resource {_arg(res.name)} -g {_arg(group.group if group else '')}'."
            if catalog().get(res.type).system_assigned else
            f"Its type, {res.type}, supports none (see 'mi resource types').",
        )
    sp = principals.get(ctx, res.system_principal_id)
    return SystemIdentity(res, sp.id, sp.app_id)


def list_system(ctx: Ctx, resources_: list[Resource]) -> list[SystemIdentity]:
    on = [r for r in resources_ if r.system_principal_id]
    if not on:
        return []
    sps = {sp.id: sp for sp in ctx.session.exec(select(ServicePrincipal).where(ServicePrincipal.is_explicit == False)).all()}  # noqa: E712
    return [SystemIdentity(r, r.system_principal_id, sps[r.system_principal_id].app_id) for r in on]
