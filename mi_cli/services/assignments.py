"""Role assignments: who (a principal) gets which role where (a scope), with Azure's rules."""

from __future__ import annotations

from typing import Any

from sqlmodel import func, select

from mi_cli import ids
from mi_cli.errors import ConflictError, MiError, NotFoundError, ValidationError, group_not_found
from mi_cli.models import RoleAssignment, ServicePrincipal, Subscription
from mi_cli.services import Ctx, conditions, identities, principals, roles, scopes
from mi_cli.services.scopes import resolve_scope
from mi_cli.services.tenancy import default_tenant, subscription_by_id
from mi_cli.services.validation import is_guid, no_control

ASSIGNMENT_TYPE = "Microsoft.Authorization/roleAssignments"
LIMIT_PER_SUBSCRIPTION = 4000  # azure-facts §2.2 (newer tables say 5,000)
PRINCIPAL_TYPES = ("User", "Group", "ServicePrincipal", "ForeignGroup", "Device")


def principal_not_found(principal_id: str, tenant_id: str) -> ValidationError:
    return ValidationError(
        "PrincipalNotFound",
        f"Principal {principal_id} does not exist in the directory {tenant_id}. Check that you have the correct principal ID. "
        "If you are creating this principal and then immediately assigning a role, this error might be related to a "
        "replication delay. In this case, set the role assignment principalType property to a value, such as "
        "ServicePrincipal, User, or Group.  See https://aka.ms/docs-principaltype",
    )


def resolve_principal(ctx: Ctx, assignee: str) -> ServicePrincipal:
    """A principal (object) id, a client (app) id, a user-assigned identity's name or id, a
    system identity's id, or a resource id (its system identity)."""
    text = assignee.strip()
    tenant = default_tenant(ctx)
    if text.startswith("/"):
        target = ids.strip_system_identity(text) if ids.is_system_identity_id(text) else text
        parsed = ids.parse(target)
        if parsed is not None and parsed.type_name and ids.same(parsed.type_name, ids.UAMI_TYPE):
            uami = identities.user_assigned_by_id(ctx, target)
            if uami is not None:
                return principals.get(ctx, uami.principal_id)
        else:
            res = scopes.resource_at(ctx, target)
            if res is not None and res.system_principal_id:
                return principals.get(ctx, res.system_principal_id)
        raise ValidationError("PrincipalNotFound", f"No managed identity exists for '{text}'.")
    try:
        return principals.find(ctx, text)
    except NotFoundError:
        pass
    # a name: a user-assigned identity's, or a resource's for its system identity (the display name)
    by_name = principals.list_all(ctx, display_name=text)
    if len(by_name) == 1:
        return by_name[0]
    if len(by_name) > 1:
        raise ValidationError("AmbiguousAssignee", f"Several managed identities are named '{text}'; give a principal id or an ARM id.")
    app = _application(ctx, text)
    if app is not None:  # an app registration's service principal, by its appId, object id or display name
        return ServicePrincipal(id=app.service_principal_id, app_id=app.app_id, tenant_id=app.tenant_id,
                                display_name=app.display_name, is_explicit=False, mi_resource_id="",
                                created_at=app.created_at)
    raise principal_not_found(text, tenant.id)


def _application(ctx: Ctx, text: str):  # noqa: ANN202 - an Application or None
    from mi_cli.services import apps  # apps builds on this module

    try:
        return apps.find_by_name_or_id(ctx, text)  # two apps of that display name: its AmbiguousApplication
    except NotFoundError:
        key = text.casefold()
        return next((a for a in apps.list_all(ctx) if a.service_principal_id == key), None) if is_guid(text) else None


def _limit_check(ctx: Ctx, sub_id: str) -> None:
    count = ctx.session.exec(select(func.count()).select_from(RoleAssignment).where(RoleAssignment.subscription_id == sub_id)).one()
    if count >= LIMIT_PER_SUBSCRIPTION:
        raise ValidationError("RoleAssignmentLimitExceeded",
                              f"No more role assignments can be created: the subscription has {count}, the limit is "
                              f"{LIMIT_PER_SUBSCRIPTION} (code: RoleAssignmentLimitExceeded).")


def _assignable(role: roles.RoleDefinition, scope: str) -> bool:
    return any(s == "/" or ids.is_within(scope, s) for s in role.assignable_scopes)


CONDITION_VERSION = "2.0"  # "Currently the only accepted value is '2.0'" (Authorization RoleAssignmentProperties)


def create(ctx: Ctx, assignee: str, role_ref: str, scope_ref: str, **options: Any) -> RoleAssignment:
    """`put`, for callers that need the assignment only."""
    return put(ctx, assignee, role_ref, scope_ref, **options)[0]


def put(ctx: Ctx, assignee: str, role_ref: str, scope_ref: str, *, description: str | None = None,
        condition: str | None = None, condition_version: str | None = None, name: str | None = None,
        principal_type: str | None = None, object_id: bool = False, declared: bool = False) -> tuple[RoleAssignment, str]:
    """A role for a principal at a scope, and what the PUT did: "created"; "put" (at the existing
    assignment's own name); "exists" (RoleAssignmentExists, answered with the existing assignment).

    With `object_id` the assignee is a principal (object) id, not looked up by name (az's
    --assignee-object-id); with a `principal_type` too, the directory is not asked at all, so an
    identity still replicating can be granted. A condition without a version gets '2.0', as az sends; one that
    does not parse, or is longer than 8 KB, is refused as ARM refuses it (InvalidRoleAssignmentCondition).

    As ARM's PUT: at an existing assignment's own name it updates the description and condition; a new
    name for a principal, role and scope that are assigned already is RoleAssignmentExists, which az
    answers with the existing assignment, unchanged. A tenant file (`declared`) states the assignment
    itself: it updates the existing one whatever name the entry leaves out."""
    if condition_version and not condition:
        raise ValidationError("InvalidArgument", "usage error: When --condition-version is set, --condition must be set as well.")
    if condition and not condition_version:
        condition_version = CONDITION_VERSION
    if condition_version is not None and condition_version != CONDITION_VERSION:
        raise ValidationError("InvalidConditionVersion",
                              f"The condition version '{condition_version}' is not supported: the only accepted value is "
                              f"'{CONDITION_VERSION}'.")
    if condition:  # ARM's 400 InvalidRoleAssignmentCondition: the syntax of conditions-format.md, at most 8 KB
        conditions.validate(condition)
    role = roles.find(ctx, role_ref)
    scope = resolve_scope(ctx, scope_ref)
    if object_id or principal_type is not None:
        if principal_type is not None and principal_type not in PRINCIPAL_TYPES:
            raise ValidationError("InvalidPrincipalType", f"The principal type '{principal_type}' is not one of "
                                  f"{', '.join(PRINCIPAL_TYPES)}.")
        if not is_guid(assignee.strip()):  # stored as given: the canonical form only
            raise ValidationError("InvalidPrincipalId", f"The principal id '{assignee}' is not a GUID.")
        principal_id = assignee.strip().casefold()
        if principal_type is None:  # ARM looks the principal up when it is not told its type
            principal_type = principals.principal_type(ctx, principal_id)
            if principal_type is None:
                raise principal_not_found(principal_id, default_tenant(ctx).id)
    else:
        principal_id, principal_type = resolve_principal(ctx, assignee).id, "ServicePrincipal"
    if description is not None and len(description) > 2048:
        raise ValidationError("InvalidDescription", "A role assignment description can be at most 2,048 characters.")
    if description is not None:
        no_control(description, what="role assignment description", code="InvalidDescription")
    if not _assignable(role, scope.id):
        raise ValidationError("InvalidRoleAssignmentScope",
                              f"The role '{role.role_name}' is not assignable at scope '{scope.id}': its assignable scopes are "
                              f"{', '.join(role.assignable_scopes)}.")
    if name is not None and not is_guid(name):
        raise ValidationError("InvalidRoleAssignmentId", f"The role assignment name '{name}' is not a valid GUID.")
    named = ctx.session.get(RoleAssignment, name.casefold()) if name else None
    same = ctx.session.exec(select(RoleAssignment).where(
        RoleAssignment.principal_id == principal_id, RoleAssignment.role_definition_id == role.guid,
        RoleAssignment.scope_key == ids.key(scope.id))).first()
    if named is not None and named is not same:
        raise ConflictError("RoleAssignmentUpdateNotPermitted",
                            "Tenant ID, application ID, principal ID, and scope are not allowed to be updated.")
    if same is not None:
        at_its_name = named is same or (declared and not name)
        if declared and not at_its_name:
            raise ConflictError("RoleAssignmentExists", "The role assignment already exists.")
        if not at_its_name:
            return same, "exists"
        _update(ctx, same, description=description, condition=condition, condition_version=condition_version)
        return same, "put"
    _limit_check(ctx, scope.subscription.id)
    ra = ctx.insert(RoleAssignment, {
        "name": (name or ctx.new_guid()).casefold(), "scope": scope.id, "scope_key": ids.key(scope.id),
        "subscription_id": scope.subscription.id, "principal_id": principal_id, "principal_type": principal_type,
        "role_definition_id": role.guid, "description": description, "condition": condition or None,
        "condition_version": condition_version if condition else None, "created_at": ctx.now(),
        # a plane's caller is a token's oid; the CLI's is the tenant's signed-in user
        "created_by": ctx.caller if is_guid(ctx.caller) else principals.signed_in_user_id(default_tenant(ctx).id)})
    ctx.log(f"{ASSIGNMENT_TYPE}/write", assignment_id(ra), detail=f"{role.role_name} for {principal_id}")
    return ra, "created"


def _update(ctx: Ctx, ra: RoleAssignment, *, description: str | None, condition: str | None,
            condition_version: str | None) -> None:
    """A PUT at an assignment's name: what it gives of description and condition replaces the old."""
    changed = []
    if description is not None and description != ra.description:
        ra.description = description
        changed.append("description")
    if condition is not None and (condition, condition_version) != (ra.condition, ra.condition_version):
        ra.condition, ra.condition_version = condition or None, condition_version if condition else None
        changed.append("condition")
    if changed:
        ra.updated_at = ctx.now()
        ctx.session.add(ra)
        ctx.log(f"{ASSIGNMENT_TYPE}/write", assignment_id(ra), detail=", ".join(changed))


def assignment_id(ra: RoleAssignment) -> str:
    return f"{ra.scope}/providers/{ASSIGNMENT_TYPE}/{ra.name}"


def for_principal(ctx: Ctx, principal_id: str) -> list[RoleAssignment]:
    return list(ctx.session.exec(select(RoleAssignment).where(RoleAssignment.principal_id == principal_id)).all())


def listing(ctx: Ctx, *, sub_id: str, assignee: str | None = None, role_ref: str | None = None, scope_ref: str | None = None,
            include_inherited: bool = False, all_: bool = False) -> list[RoleAssignment]:
    """az's rules (role/custom.py _search_role_assignments): the scope is --scope, or the group, or
    else the subscription itself, and only assignments made at exactly that scope are listed (with
    --include-inherited, those at its ancestors too), whatever --assignee and --role filter; --all
    lists every scope of the subscription and takes no scope."""
    if all_ and scope_ref:
        raise ValidationError("InvalidArgument", "group or scope are not required when --all is used")
    stmt = select(RoleAssignment).where(RoleAssignment.subscription_id == sub_id)
    if assignee:
        principal_id = _assignee_id(ctx, assignee)
        stmt = stmt.where(RoleAssignment.principal_id == principal_id)
    if role_ref:
        stmt = stmt.where(RoleAssignment.role_definition_id == roles.find(ctx, role_ref).guid)
    items = list(ctx.session.exec(stmt.order_by(RoleAssignment.scope_key, RoleAssignment.created_at)).all())
    if all_:
        return items
    scope = resolve_scope(ctx, scope_ref).id if scope_ref else ids.subscription_id(sub_id)
    return [ra for ra in items if ids.same(ra.scope, scope) or (include_inherited and ids.is_within(scope, ra.scope))]


def applying(ctx: Ctx, scope: str | None, *, principal_id: str | None = None,
             at_scope: bool = False) -> list[RoleAssignment]:
    """ARM's list of the assignments for a scope (List For Scope): those at the scope and above it with
    `at_scope` ($filter=atScope()), else those at, above and below it; `principal_id` keeps one principal's
    ($filter=principalId eq). `scope` None is the tenant root, above every subscription."""
    if scope is None and at_scope:  # nothing is assigned at the root itself here
        return []
    stmt = select(RoleAssignment)
    if principal_id is not None:
        stmt = stmt.where(RoleAssignment.principal_id == principal_id.strip().casefold())
    if scope is not None:
        key = ids.key(scope.rstrip("/"))
        parts = key.split("/")
        above = RoleAssignment.scope_key.in_(["/".join(parts[:end]) for end in range(3, len(parts) + 1)])
        stmt = stmt.where(above if at_scope else above | RoleAssignment.scope_key.startswith(key + "/", autoescape=True))
    return list(ctx.session.exec(stmt.order_by(RoleAssignment.scope_key, RoleAssignment.created_at)).all())


def _assignee_id(ctx: Ctx, assignee: str) -> str:
    """For listing and deleting, a principal id that no longer exists still names its orphans."""
    try:
        return resolve_principal(ctx, assignee).id
    except ValidationError:
        if roles._is_guid(assignee.strip()):
            return assignee.strip().casefold()
        raise


def delete(ctx: Ctx, *, ids_: list[str] | None = None, assignee: str | None = None, role_ref: str | None = None,
           scope_ref: str | None = None, sub_id: str, include_inherited: bool = False) -> list[RoleAssignment]:
    if ids_:
        gone = []
        for ra_id in ids_:
            ra = ctx.session.get(RoleAssignment, ra_id.rstrip("/").rsplit("/", 1)[-1].casefold())
            if ra is not None:  # DELETE of an assignment that is gone succeeds (204)
                gone.append(ra)
    else:
        # az's delete_role_assignments searches as `list` does without --all (the scope given, else the
        # subscription itself); a search that matches nothing is az's own CLIError (one line), exit 1
        gone = listing(ctx, sub_id=sub_id, assignee=assignee, role_ref=role_ref, scope_ref=scope_ref,
                       include_inherited=include_inherited)
        if not gone:
            raise MiError("RoleAssignmentNotFound", "No matched assignments were found to delete")
    for ra in gone:
        ctx.session.delete(ra)
        ctx.log(f"{ASSIGNMENT_TYPE}/delete", assignment_id(ra))
    ctx.session.flush()
    return gone


def delete_within(ctx: Ctx, scope: str) -> int:
    """Rule 3: assignments at a deleted scope or below it go with it (never those elsewhere)."""
    key = ids.key(scope)
    stmt = select(RoleAssignment).where(
        (RoleAssignment.scope_key == key) | RoleAssignment.scope_key.startswith(key + "/", autoescape=True))
    gone = list(ctx.session.exec(stmt).all())
    for ra in gone:
        ctx.session.delete(ra)
        ctx.log(f"{ASSIGNMENT_TYPE}/delete", assignment_id(ra), detail="its scope was deleted")
    if gone:
        ctx.session.flush()
    return len(gone)


def view(ctx: Ctx, ra: RoleAssignment, *, fill_names: bool = False, role_names: dict | None = None,
         written: bool = False) -> dict[str, Any]:
    """ARM's roleAssignment, flattened as az prints it. `written`: the answer to the PUT that made it,
    where ARM leaves createdBy null (a GET fills it in); `fill_names`: what `list` adds."""
    tenant_id = default_tenant(ctx).id
    by = ra.created_by if is_guid(ra.created_by or "") else principals.signed_in_user_id(tenant_id)
    data: dict[str, Any] = {
        "condition": ra.condition,
        "conditionVersion": ra.condition_version,
        "createdBy": None if written else by,
        "createdOn": ra.created_at.isoformat(),
        "delegatedManagedIdentityResourceId": None,
        "description": ra.description,
        "id": assignment_id(ra),
        "name": ra.name,
        "principalId": ra.principal_id,
        "principalType": ra.principal_type,
        "roleDefinitionId": f"/subscriptions/{ra.subscription_id}/providers/Microsoft.Authorization/roleDefinitions/{ra.role_definition_id}",
        "scope": ra.scope,
        "type": ASSIGNMENT_TYPE,
        "updatedBy": by,
        "updatedOn": (ra.updated_at or ra.created_at).isoformat(),
    }
    parsed = ids.parse(ra.scope)
    if parsed is not None and parsed.group:
        data["resourceGroup"] = parsed.group
    if fill_names:
        names = role_names if role_names is not None else roles.by_guid(ctx)
        sp = principals.get(ctx, ra.principal_id)
        # a service principal's first servicePrincipalName, a user's userPrincipalName; a deleted
        # principal shows as "Identity not found" in the portal and "" here (rule 6)
        data["principalName"] = sp.app_id if sp is not None else \
            principals.SIGNED_IN_USER_NAME if ra.principal_id == principals.signed_in_user_id(tenant_id) else ""
        role = names.get(ra.role_definition_id)
        data["roleDefinitionName"] = role.role_name if role else None  # az: "might have been deleted"
    return data


def grant_system_identity(ctx: Ctx, res, role_ref: str, scope_ref: str) -> RoleAssignment:  # noqa: ANN001
    """`identity assign --role --scope`, as az does it: the role goes to the resource's system
    identity; an assignment that exists already counts as success."""
    if not res.system_principal_id:
        raise ValidationError("InvalidParameter", "--role and --scope grant the system-assigned identity: include '[system]'.")
    return create(ctx, res.system_principal_id, role_ref, scope_ref)
