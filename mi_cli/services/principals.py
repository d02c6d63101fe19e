"""Service principals: the directory objects behind managed identities, never edited directly."""

from __future__ import annotations

import uuid
from typing import Callable

from sqlmodel import select

from mi_cli import ids
from mi_cli.errors import ConflictError, NotFoundError
from mi_cli.models import Application, ServicePrincipal
from mi_cli.services import Ctx
from mi_cli.services.tenancy import default_tenant, default_tenant_id


def create(ctx: Ctx, *, display_name: str, explicit: bool, mi_resource_id: str, principal_id: str | None = None,
           client_id: str | None = None, in_use: Callable[[str, str], bool] | None = None) -> ServicePrincipal:
    """The service principal behind a managed identity (rules 1 and 4): new ids, or the ones a tenant
    file carries (which must be unused). `in_use` answers from a bulk caller's index instead of a query."""
    # new GUIDs are lowercase already
    pid = principal_id.casefold() if principal_id else ctx.new_guid()
    cid = client_id.casefold() if client_id else ctx.new_guid()
    if principal_id or client_id:
        taken = in_use(pid, cid) if in_use is not None else ctx.session.exec(
            select(ServicePrincipal.id).where((ServicePrincipal.id == pid) | (ServicePrincipal.app_id == cid))).first()
        if taken:
            raise ConflictError("Conflict", f"The principal id {pid} or client id {cid} is in use already.")
    sp = ctx.insert(ServicePrincipal, {"id": pid, "app_id": cid, "tenant_id": default_tenant_id(ctx), "display_name": display_name,
                                       "is_explicit": explicit, "mi_resource_id": mi_resource_id, "created_at": ctx.now()})
    ctx.log("Microsoft.Directory/servicePrincipals/create", pid, detail=mi_resource_id)
    return sp


# The person who runs mi: one user per tenant, never stored. Its object id is derived from the tenant id,
# so it is the same on every run and after an export is applied to a new store (which keeps the tenant
# id). Azure writes the caller's object id into a role assignment's createdBy/updatedBy.
_SIGNED_IN_USER = uuid.UUID("6f1c9a52-3b7e-4d0a-9c55-1e0b2d7f8a31")
SIGNED_IN_USER_NAME = "user@mi.local"  # its userPrincipalName, as `mi account show` names the user


def signed_in_user_id(tenant_id: str) -> str:
    """The object id of the tenant's signed-in user (the CLI's caller)."""
    return str(uuid.uuid5(_SIGNED_IN_USER, tenant_id.casefold()))


def principal_type(ctx: Ctx, object_id: str) -> str | None:
    """What the directory says an object id is, as ARM's principalType: a managed identity's or an app
    registration's service principal, the signed-in user, or None when the directory has no such object."""
    oid = object_id.strip().casefold()
    if ctx.session.get(ServicePrincipal, oid) is not None:
        return "ServicePrincipal"
    if ctx.session.exec(select(Application.id).where(Application.service_principal_id == oid)).first() is not None:
        return "ServicePrincipal"  # an app registration's
    tenant = default_tenant(ctx, create=False)
    if tenant is not None and oid == signed_in_user_id(tenant.id):
        return "User"
    return None


def delete(ctx: Ctx, principal_id: str | None) -> None:
    if not principal_id:
        return
    sp = ctx.session.get(ServicePrincipal, principal_id)
    if sp is not None:
        ctx.session.delete(sp)
        ctx.session.flush()
        ctx.log("Microsoft.Directory/servicePrincipals/delete", sp.id, detail=sp.mi_resource_id)


def get(ctx: Ctx, principal_id: str) -> ServicePrincipal | None:
    return ctx.session.get(ServicePrincipal, principal_id)


def find(ctx: Ctx, id_or_app_id: str) -> ServicePrincipal:
    """By object id or appId (clientId), as `az ad sp show --id` accepts either."""
    wanted = ids.key(id_or_app_id.strip())
    sp = ctx.session.exec(
        select(ServicePrincipal).where((ServicePrincipal.id == wanted) | (ServicePrincipal.app_id == wanted))
    ).first()
    if sp is None:
        raise NotFoundError(
            "Request_ResourceNotFound",
            f"Resource '{id_or_app_id}' does not exist or one of its queried reference-property objects are not present.",
            next_step="List the service principals with 'mi sp list'.",
        )
    return sp


def list_all(ctx: Ctx, *, display_name: str | None = None) -> list[ServicePrincipal]:
    stmt = select(ServicePrincipal).order_by(ServicePrincipal.display_name, ServicePrincipal.id)
    sps = ctx.session.exec(stmt).all()
    if display_name:
        sps = [sp for sp in sps if ids.same(sp.display_name, display_name)]
    return list(sps)
