"""The whole tenant written in the tenant-file format (`mi export`), and the store emptied (`mi reset`)."""

from __future__ import annotations

from typing import Any

from sqlmodel import delete, select

from mi_cli.catalog import catalog
from mi_cli.models import (
    ActivityLog, Application, ApplicationSecret, AppRoleAssignment, Attachment, CertificateAuthority, CustomRole, EndpointSecret,
    FederatedCredential, FederationIssuer, KeyVaultSecret, Resource, ResourceGroup, RoleAssignment, ServicePrincipal, SigningKey,
    StorageAccount, Subscription, Tenant, UserAssignedIdentity,
)
from mi_cli.services import Ctx, apps, keyvault, roles, tenancy
from mi_cli.services.tenant_file import API_VERSION


def export(ctx: Ctx, *, include_secrets: bool = False) -> dict[str, Any]:
    """The whole tenant in the file format (not the activity log, not signing keys). Key Vault secrets,
    values included, only with `include_secrets`: a tenant file is shared and kept where secrets should
    not go unasked. Never written: applications' client secrets (the store keeps only their hashes),
    federation issuers' private keys (an applied store makes its own) and storage account keys."""
    s = ctx.session
    tenant = tenancy.default_tenant(ctx, create=False)
    if tenant is None:
        return {"apiVersion": API_VERSION}
    subs = tenancy.list_subscriptions(ctx)
    sub_name = {x.id: x.name for x in subs}
    group_rows = list(s.exec(select(ResourceGroup).order_by(ResourceGroup.subscription_id, ResourceGroup.name_key)).all())
    group_by_pk = {g.pk: g for g in group_rows}
    sps = {sp.id: sp for sp in s.exec(select(ServicePrincipal)).all()}
    fics: dict[int, list[FederatedCredential]] = {}
    for f in s.exec(select(FederatedCredential).order_by(FederatedCredential.name_key)).all():
        fics.setdefault(f.identity_pk, []).append(f)
    atts: dict[int, list[Attachment]] = {}
    for a in s.exec(select(Attachment).order_by(Attachment.pk)).all():
        atts.setdefault(a.resource_pk, []).append(a)
    uami_rows = list(s.exec(select(UserAssignedIdentity).order_by(UserAssignedIdentity.id_key)).all())
    live = {(u.id_key, u.principal_id) for u in uami_rows}
    shared_key = {a.resource_pk: a.allow_shared_key_access for a in s.exec(select(StorageAccount)).all()}

    def placed(group_pk: int) -> dict[str, str]:
        g = group_by_pk[group_pk]
        return {"resourceGroup": g.name, "subscription": sub_name[g.subscription_id]}

    def uami_entry(u: UserAssignedIdentity) -> dict[str, Any]:
        entry = {"name": u.name, **placed(u.group_pk), "location": u.location, "tags": u.tags,
                 "principalId": u.principal_id, "clientId": u.client_id}
        if u.isolation_scope and u.isolation_scope != "None":  # the default is left out
            entry["isolationScope"] = u.isolation_scope
        if fics.get(u.pk):
            entry["federatedCredentials"] = [
                {"name": f.name, "issuer": f.issuer, "subject": f.subject, "audiences": list(f.audiences),
                 **({"description": f.description} if f.description else {})} for f in fics[u.pk]]
        return entry

    def resource_entry(r: Resource) -> dict[str, Any]:
        rt = catalog().get(r.type)
        # the alias that implies the resource's kind (webapp -> app, functionapp), else the full type
        alias = {kind: a for a, kind in catalog().alias_kinds.items()}.get(r.kind, rt.type)
        name = r.name.rsplit("/", 1)[-1]
        entry: dict[str, Any] = {"name": name, "type": alias, **placed(r.group_pk), "location": r.location, "tags": r.tags}
        if rt.parent_type:
            entry["parent"] = r.name.rsplit("/", 1)[0]
        identity: dict[str, Any] = {}
        if r.system_principal_id:
            sp = sps.get(r.system_principal_id)
            identity.update({"systemAssigned": True, "principalId": r.system_principal_id, "clientId": sp.app_id if sp else None})
        if atts.get(r.pk):
            identity["userAssigned"] = [
                a.identity_id if (a.identity_key, a.principal_id) in live
                else {"id": a.identity_id, "principalId": a.principal_id, "clientId": a.client_id}
                for a in atts[r.pk]]
        if identity:
            entry["identity"] = identity
        if shared_key.get(r.pk) is not None:  # only when set: unset is Azure's null
            entry["allowSharedKeyAccess"] = shared_key[r.pk]
        if include_secrets and r.type == keyvault.VAULT_TYPE:
            secrets = keyvault.exported(ctx, r)
            if secrets:
                entry["secrets"] = secrets
        return entry

    custom = [r for r in roles.all_roles(ctx) if r.role_type == "CustomRole"]
    role_names = roles.by_guid(ctx)
    app_rows = list(s.exec(select(Application).order_by(Application.display_name, Application.id)).all())
    graph = apps.graph(ctx)
    # the resources whose roles can be granted (the apps' service principals, Microsoft Graph's), and who holds them
    granting = {a.service_principal_id: (a.app_id, {r["id"]: r.get("value") for r in a.app_roles}) for a in app_rows}
    granting[graph.service_principal_id] = (graph.app_id, {r["id"]: r["value"] for r in graph.app_roles})
    holders = set(sps) | {a.service_principal_id for a in app_rows}
    app_grants = sorted(
        ({"assignee": g.principal_id, "app": granting[g.resource_id][0],
          "role": granting[g.resource_id][1].get(g.app_role_id) or g.app_role_id}
         for g in s.exec(select(AppRoleAssignment)).all() if g.principal_id in holders and g.resource_id in granting),
        key=lambda g: (g["app"], g["assignee"], g["role"]))
    return {
        "apiVersion": API_VERSION,
        "tenant": {"id": tenant.id, "displayName": tenant.display_name},
        "subscriptions": [{"name": x.name, "id": x.id, "default": x.is_default} for x in subs],
        "resourceGroups": [{"name": g.name, "subscription": sub_name[g.subscription_id], "location": g.location, "tags": g.tags}
                           for g in group_rows],
        "customRoles": [{"id": r.guid, "roleName": r.role_name, "description": r.description,
                         "permissions": [p.to_json() for p in r.permissions], "assignableScopes": list(r.assignable_scopes)}
                        for r in custom],
        "federationIssuers": [{"url": f.url, "kind": f.kind}
                              for f in s.exec(select(FederationIssuer).order_by(FederationIssuer.url)).all()],
        "userAssignedIdentities": [uami_entry(u) for u in uami_rows],
        "resources": [resource_entry(r) for r in s.exec(select(Resource).order_by(Resource.id_key)).all()],
        "applications": [{"displayName": a.display_name, "id": a.id, "appId": a.app_id, "servicePrincipalId": a.service_principal_id,
                          "identifierUris": list(a.identifier_uris),
                          "appRoles": [{k: v for k, v in r.items() if k != "origin"} for r in a.app_roles]}
                         for a in app_rows],
        "appRoleAssignments": app_grants,
        "roleAssignments": [
            {"name": ra.name, "assignee": ra.principal_id, "principalType": ra.principal_type,
             "role": role_names[ra.role_definition_id].role_name if ra.role_definition_id in role_names else ra.role_definition_id,
             "scope": ra.scope, **({"description": ra.description} if ra.description else {}),
             **({"condition": ra.condition, "conditionVersion": ra.condition_version} if ra.condition else {})}
            for ra in s.exec(select(RoleAssignment).order_by(RoleAssignment.scope_key, RoleAssignment.name)).all()],
    }


def reset(ctx: Ctx) -> dict[str, int]:
    """Empty the store: every object, the tenant, its keys (the local cloud's CA too) and the activity log; the schema
    stays. Under MI_SEED the GUID counter stays too: a tenant file applied after the reset brings its objects' ids
    back, and the sequence starting over would hand those ids out again."""
    counts = {}
    for model in (AppRoleAssignment, ApplicationSecret, Application, FederationIssuer,
                  RoleAssignment, Attachment, FederatedCredential, EndpointSecret, KeyVaultSecret, Resource, UserAssignedIdentity,
                  ServicePrincipal, ResourceGroup, CustomRole, ActivityLog, SigningKey, CertificateAuthority, Subscription, Tenant):
        counts[model.__tablename__] = ctx.session.execute(delete(model)).rowcount
    return counts
