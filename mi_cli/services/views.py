"""Azure's JSON shapes of the store's objects (camelCase, as ARM, az and Graph return them)."""

from __future__ import annotations

import base64
import hashlib
import uuid
from datetime import timedelta
from typing import Any

from sqlmodel import select

from mi_cli import ids
from mi_cli.catalog import catalog
from mi_cli.models import (
    ActivityLog,
    Attachment,
    FederatedCredential,
    Resource,
    ResourceGroup,
    ServicePrincipal,
    Subscription,
    Tenant,
    UserAssignedIdentity,
)
from mi_cli.services import Ctx, identities, principals
from mi_cli.services.tenancy import default_tenant, subscription_by_id

PROVISIONED = {"provisioningState": "Succeeded"}


def _group_name(arm_id: str) -> str | None:
    parsed = ids.parse(arm_id)
    return parsed.group if parsed else None


def account(sub: Subscription, tenant: Tenant) -> dict[str, Any]:
    return {
        "environmentName": "AzureCloud",
        "homeTenantId": tenant.id,
        "id": sub.id,
        "isDefault": sub.is_default,
        "managedByTenants": [],
        "name": sub.name,
        "state": "Enabled",
        "tenantDisplayName": tenant.display_name,
        "tenantId": tenant.id,
        "user": {"name": principals.SIGNED_IN_USER_NAME, "type": "user"},
    }


def subscription(sub: Subscription) -> dict[str, Any]:
    return {
        "id": ids.subscription_id(sub.id),
        "isDefault": sub.is_default,
        "name": sub.name,
        "state": "Enabled",
        "subscriptionId": sub.id,
        "tenantId": sub.tenant_id,
    }


def group(g: ResourceGroup) -> dict[str, Any]:
    return {
        "id": ids.group_id(g.subscription_id, g.name),
        "location": g.location,
        "managedBy": None,
        "name": g.name,
        "properties": PROVISIONED,
        "tags": g.tags or None,
        "type": "Microsoft.Resources/resourceGroups",
    }


def identity_block(ctx: Ctx, res: Resource, atts: list[Attachment] | None = None, tenant_id: str | None = None) -> dict[str, Any] | None:
    """The resource's `identity` property; None when it has no identity at all."""
    atts = identities.attachments(ctx, res) if atts is None else atts
    system = bool(res.system_principal_id)
    if not system and not atts:
        return None
    rt = catalog().get(res.type)
    block: dict[str, Any] = {"type": identities.identity_type(rt, system=system, user=bool(atts))}
    if system:
        block["principalId"] = res.system_principal_id
        block["tenantId"] = tenant_id or default_tenant(ctx, create=False).id
    if atts:
        block["userAssignedIdentities"] = {
            a.identity_id: {"clientId": a.client_id, "principalId": a.principal_id} for a in atts
        }
    return block


def identity_block_or_none(ctx: Ctx, res: Resource) -> dict[str, Any]:
    """What `identity assign/remove` print: the block, `{"type": "None"}` once nothing is left."""
    return identity_block(ctx, res) or {"type": "None"}


def resource(ctx: Ctx, res: Resource, atts: list[Attachment] | None = None, tenant_id: str | None = None) -> dict[str, Any]:
    return {
        "id": res.arm_id,
        "identity": identity_block(ctx, res, atts, tenant_id),
        "kind": res.kind,
        "location": res.location,
        "name": res.name,
        "properties": PROVISIONED,
        "resourceGroup": _group_name(res.arm_id),
        "tags": res.tags,
        "type": res.type,
    }


def resources(ctx: Ctx, items: list[Resource]) -> list[dict[str, Any]]:
    """Many resources with two queries, not one per resource."""
    by_res: dict[int, list[Attachment]] = {}
    if items:
        for att in ctx.session.exec(select(Attachment).order_by(Attachment.pk)).all():
            by_res.setdefault(att.resource_pk, []).append(att)
    tenant = default_tenant(ctx, create=False)
    tid = tenant.id if tenant else None
    return [resource(ctx, r, by_res.get(r.pk, []), tid) for r in items]


def user_assigned(uami: UserAssignedIdentity, tenant_id: str) -> dict[str, Any]:
    # The client-flattened shape of `az identity create/show` (az 2.91's generated commands print only the
    # fields that hold a value: no systemData, which ARM does not send for identities).
    return {
        "clientId": uami.client_id,
        "id": uami.arm_id,
        "isolationScope": uami.isolation_scope,
        "location": uami.location,
        "name": uami.name,
        "principalId": uami.principal_id,
        "resourceGroup": _group_name(uami.arm_id),
        "tags": uami.tags,
        "tenantId": tenant_id,
        "type": ids.UAMI_TYPE,
    }


def system_assigned(si: identities.SystemIdentity, tenant_id: str) -> dict[str, Any]:
    # The shape of GET {scope}/providers/Microsoft.ManagedIdentity/identities/default.
    res = si.resource
    return {
        "clientId": si.client_id,
        "id": ids.system_identity_id(res.arm_id),
        "location": res.location,
        "name": res.name,
        "principalId": si.principal_id,
        "resourceGroup": _group_name(res.arm_id),
        "tenantId": tenant_id,
        "type": "Microsoft.ManagedIdentity/identities",
    }


def associated_resources(ctx: Ctx, uami: UserAssignedIdentity) -> list[dict[str, Any]]:
    """`az identity list-resources`: the resources this very identity is attached to (not those that
    list a deleted one of the same id), in the associated-resources shape, type in lowercase as ARM
    returns it."""
    out = []
    for res in identities.references_to(ctx, uami.arm_id, principal_id=uami.principal_id):
        parsed = ids.parse(res.arm_id)
        sub = subscription_by_id(ctx, parsed.subscription)
        out.append({"id": res.arm_id, "name": res.name, "resourceGroup": parsed.group,
                    "subscriptionDisplayName": sub.name if sub else None, "subscriptionId": parsed.subscription,
                    "type": res.type.lower()})
    return out


IDENTITY_KINDS = ("user", "system", "all")


def identity_listing(ctx: Ctx, *, group: ResourceGroup | None = None, sub_id: str | None = None,
                     kind: str = "user") -> list[dict[str, Any]]:
    """`identity list`: as `az identity list`, the user-assigned identities in scope, in az's shape;
    `kind` 'system' lists the system-assigned identities of the resources in scope instead, 'all' both
    (system ones first). Each says what it is by its `type`: Microsoft.ManagedIdentity/identities
    (the system-assigned identity GET's type) or .../userAssignedIdentities."""
    if kind not in IDENTITY_KINDS:
        raise ValueError(kind)
    tenant = default_tenant(ctx, create=False)
    if tenant is None:
        return []
    scope = {"group": group} if group is not None else {"sub_id": sub_id}
    data: list[dict[str, Any]] = []
    if kind in ("system", "all"):
        from_resources = ctx.session.exec(_resources_in(**scope)).all()
        data += [system_assigned(si, tenant.id) for si in identities.list_system(ctx, from_resources)]
    if kind in ("user", "all"):
        data += [user_assigned(u, tenant.id) for u in identities.list_user_assigned(ctx, **scope)]
    return data


def _resources_in(*, group: ResourceGroup | None = None, sub_id: str | None = None):  # noqa: ANN202
    stmt = select(Resource)
    if group is not None:
        return stmt.where(Resource.group_pk == group.pk).order_by(Resource.id_key)
    return stmt.join(ResourceGroup, ResourceGroup.pk == Resource.group_pk).where(
        ResourceGroup.subscription_id == sub_id).order_by(Resource.id_key)


KEY_CREDENTIAL_DAYS = 90  # a managed identity's certificate: about 90 days (azure-facts §7)
_KEY_ID = uuid.UUID("0b7d3c4e-58a1-4f6b-9e2d-7a3c5b1f9e84")


def _graph_time(value) -> str:  # noqa: ANN001
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def service_principal(sp: ServicePrincipal) -> dict[str, Any]:
    # Graph's servicePrincipal, as it stands for a managed identity. The resource id in alternativeNames
    # has a lowercase `resourcegroups` segment, as Entra writes it for both kinds (azure-facts §7).
    digest = base64.b64encode(hashlib.sha256(f"{sp.id}:{sp.mi_resource_id}".encode()).digest()).decode()
    parts = sp.mi_resource_id.split("/")
    if len(parts) > 4 and parts[1].casefold() == "subscriptions" and parts[3].casefold() == "resourcegroups":
        parts[3] = "resourcegroups"
    resource_id = "/".join(parts)
    # The certificate the managed identity authenticates with: Graph lists its public part only (key
    # null); stable values derived from the principal, valid from its creation.
    thumbprint = hashlib.sha1(f"{sp.id}:{_graph_time(sp.created_at)}".encode()).hexdigest().upper()
    key_credential = {
        "customKeyIdentifier": thumbprint,
        "displayName": None,
        "endDateTime": _graph_time(sp.created_at + timedelta(days=KEY_CREDENTIAL_DAYS)),
        "key": None,
        "keyId": str(uuid.uuid5(_KEY_ID, sp.id)),
        "startDateTime": _graph_time(sp.created_at),
        "type": "AsymmetricX509Cert",
        "usage": "Verify",
    }
    return {
        "accountEnabled": True,
        "alternativeNames": [f"isExplicit={'True' if sp.is_explicit else 'False'}", resource_id],
        "appId": sp.app_id,
        "appOwnerOrganizationId": sp.tenant_id,
        "displayName": sp.display_name,
        "id": sp.id,
        "keyCredentials": [key_credential],
        "servicePrincipalNames": [sp.app_id, f"https://identity.azure.net/{digest}"],
        "servicePrincipalType": "ManagedIdentity",
    }


def federated_credential(uami: UserAssignedIdentity, fic: FederatedCredential) -> dict[str, Any]:
    data = {
        "audiences": list(fic.audiences),
        "id": f"{uami.arm_id}/federatedIdentityCredentials/{fic.name}",
        "issuer": fic.issuer,
        "name": fic.name,
        "resourceGroup": _group_name(uami.arm_id),
        "subject": fic.subject,
        "type": ids.FIC_TYPE,
    }
    if fic.description:
        data["description"] = fic.description
    return data


def log_entry(entry: ActivityLog) -> dict[str, Any]:
    return {
        "caller": entry.caller,
        "detail": entry.detail,
        "eventTimestamp": entry.time.isoformat() if entry.time.tzinfo else entry.time.isoformat() + "+00:00",
        "operationName": entry.operation,
        "resourceId": entry.target,
        "status": entry.status,
    }
