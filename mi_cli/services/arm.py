"""Azure Resource Manager's own rules over the store: which subscriptions a caller sees, the providers' metadata,
the `identity` block of a PUT or PATCH turned into the identities service's calls, and ARM's wire shapes of the
store's objects (the views' az shapes without az's additions, properties nested as ARM sends them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlmodel import select

from mi_cli import ids
from mi_cli.catalog import ResourceType, catalog, regions
from mi_cli.errors import ValidationError, shown
from mi_cli.models import (Attachment, FederatedCredential, Resource, ResourceGroup, RoleAssignment, Subscription, Tenant,
                           UserAssignedIdentity)
from mi_cli.services import Ctx, assignments, identities, views
from mi_cli.services.tenancy import list_subscriptions

# --- subscriptions and tenants -----------------------------------------------------------------


def visible_subscriptions(ctx: Ctx, principal_id: str) -> list[Subscription]:
    """The subscriptions ARM lists to a caller (GET /subscriptions): those where it holds a role assignment at the
    subscription or anywhere below it (a Reader of one resource group sees its subscription)."""
    held = {ids.key(ra.subscription_id) for ra in assignments.for_principal(ctx, principal_id)}
    return [s for s in list_subscriptions(ctx) if ids.key(s.id) in held]


# Subscriptions_Get / Subscriptions_List (Microsoft.Resources/subscriptions 2022-12-01). The policies are those of a
# pay-as-you-go subscription, the common case; mi keeps no billing.
SUBSCRIPTION_POLICIES = {"locationPlacementId": "Public_2014-09-01", "quotaId": "PayAsYouGo_2014-09-01", "spendingLimit": "Off"}


def subscription(sub: Subscription) -> dict[str, Any]:
    return {"authorizationSource": "RoleBased", "displayName": sub.name, "id": ids.subscription_id(sub.id),
            "managedByTenants": [], "state": "Enabled", "subscriptionId": sub.id,
            "subscriptionPolicies": dict(SUBSCRIPTION_POLICIES), "tenantId": sub.tenant_id}


def tenant(t: Tenant) -> dict[str, Any]:
    """Tenants_List's entry (examples/GetTenants.json). mi's tenant has no verified domain; it is named after its id,
    as an Entra tenant's initial domain is."""
    domain = f"{t.id.split('-')[0]}.onmicrosoft.com"
    return {"countryCode": "US", "defaultDomain": domain, "displayName": t.display_name, "domains": [domain],
            "id": f"/tenants/{t.id}", "tenantCategory": "Home", "tenantId": t.id, "tenantType": "AAD"}


# --- providers ------------------------------------------------------------------------------------

# The api-versions a provider lists for its types, newest first (az's `resource update` takes the first that is
# not a preview). Each is a stable version of the provider's REST API; any version is accepted by mi's ARM.
API_VERSIONS: dict[str, tuple[str, ...]] = {
    "microsoft.compute": ("2024-11-01", "2024-07-01", "2024-03-01", "2023-09-01"),
    "microsoft.web": ("2024-04-01", "2023-12-01", "2023-01-01", "2022-09-01"),
    "microsoft.managedidentity": ("2024-11-30", "2023-01-31", "2018-11-30"),
    "microsoft.storage": ("2024-01-01", "2023-05-01", "2023-01-01"),
    "microsoft.keyvault": ("2024-11-01", "2023-07-01", "2023-02-01"),
    "microsoft.containerservice": ("2024-09-01", "2024-05-01", "2024-02-01"),
    "microsoft.app": ("2024-03-01", "2023-05-01"),
    "microsoft.resources": ("2024-11-01", "2024-03-01", "2022-12-01"),
    "microsoft.authorization": ("2022-04-01", "2022-05-01-preview", "2018-01-01-preview"),
}
DEFAULT_API_VERSIONS = ("2023-01-01",)
# The types of the providers mi serves that are not in the resource catalog (no identity of their own).
EXTRA_TYPES: dict[str, tuple[str, ...]] = {
    "Microsoft.ManagedIdentity": ("userAssignedIdentities", "userAssignedIdentities/federatedIdentityCredentials",
                                  "identities"),
    "Microsoft.Resources": ("subscriptions", "subscriptions/resourceGroups", "resourceGroups", "tenants"),
    "Microsoft.Authorization": ("roleAssignments", "roleDefinitions"),
}


def namespaces() -> dict[str, str]:
    """Every provider namespace mi serves, by its lowercase spelling."""
    found = {rt.namespace.casefold(): rt.namespace for rt in catalog().types}
    found.update({ns.casefold(): ns for ns in EXTRA_TYPES})
    return found


def _capabilities(rt: ResourceType | None) -> str:
    parts = ["CrossResourceGroupResourceMove", "CrossSubscriptionResourceMove", "SupportsTags", "SupportsLocation"]
    if rt is not None and rt.system_assigned:
        parts.append("SystemAssignedResourceIdentity")
    return ", ".join(parts)


def provider(namespace: str, *, sub_id: str | None) -> dict[str, Any] | None:
    """Providers_Get: the namespace's resource types with their locations (display names, as ARM lists them) and
    api-versions; `sub_id` None is the tenant-level read (no id, no registration state). None for a namespace mi
    does not serve."""
    canonical = namespaces().get(namespace.casefold())
    if canonical is None:
        return None
    versions = list(API_VERSIONS.get(canonical.casefold(), DEFAULT_API_VERSIONS))
    locations = list(regions().values())
    types: list[tuple[str, ResourceType | None]] = [
        (rt.type.split("/", 1)[1], rt) for rt in catalog().types if rt.namespace.casefold() == canonical.casefold()]
    types += [(t, None) for t in EXTRA_TYPES.get(canonical, ())]
    resource_types = [{"apiVersions": versions, "capabilities": _capabilities(rt), "defaultApiVersion": versions[0],
                       "locations": locations, "resourceType": name} for name, rt in types]
    body: dict[str, Any] = {"namespace": canonical, "resourceTypes": resource_types}
    if sub_id is not None:
        body = {"id": f"{ids.subscription_id(sub_id)}/providers/{canonical}", **body, "registrationPolicy": "RegistrationRequired",
                "registrationState": "Registered"}
    return body


# --- wire shapes --------------------------------------------------------------------------------------


def group(g) -> dict[str, Any]:  # noqa: ANN001
    """ResourceGroup as ARM sends it (examples/CreateResourceGroup.json): tags only when it has some."""
    data = views.group(g)
    if not data["tags"]:
        del data["tags"]
    return data


def user_assigned(uami: UserAssignedIdentity, tenant_id: str) -> dict[str, Any]:
    """Identity (examples/IdentityCreate.json, and the answers recorded in azure-cli's identity tests): what
    `mi identity show` prints, its ids under `properties`, with no `resourceGroup` (az's) nor `systemData`."""
    view = views.user_assigned(uami, tenant_id)
    return {"id": view["id"], "location": view["location"], "name": view["name"],
            "properties": {"clientId": view["clientId"], "isolationScope": view["isolationScope"],
                           "principalId": view["principalId"], "tenantId": view["tenantId"]},
            "tags": view["tags"], "type": view["type"]}


def federated_credential(uami: UserAssignedIdentity, fic: FederatedCredential) -> dict[str, Any]:
    """FederatedIdentityCredential (examples/FederatedIdentityCredentialCreate.json)."""
    view = views.federated_credential(uami, fic)
    properties = {"audiences": view["audiences"], "issuer": view["issuer"], "subject": view["subject"]}
    if "description" in view:
        properties["description"] = view["description"]
    return {"id": view["id"], "name": view["name"], "properties": properties, "type": view["type"]}


def resource(ctx: Ctx, res: Resource) -> dict[str, Any]:
    """A resource as its provider answers a GET: what `mi resource show` prints, without az's `resourceGroup`, and
    without an `identity` or `kind` it does not have."""
    return _wire(views.resource(ctx, res))


def resources(ctx: Ctx, items: list[Resource]) -> list[dict[str, Any]]:
    """Many resources as resource() gives each, read with views.resources' few queries."""
    return [_wire(data) for data in views.resources(ctx, items)]


def _wire(data: dict[str, Any]) -> dict[str, Any]:
    data.pop("resourceGroup", None)
    for key in ("identity", "kind"):
        if data[key] is None:
            del data[key]
    return data


def system_assigned(si: identities.SystemIdentity, tenant_id: str) -> dict[str, Any]:
    """SystemAssignedIdentities_GetByScope (examples/SystemAssignedIdentityGet.json): the ids under `properties`."""
    view = views.system_assigned(si, tenant_id)
    return {"id": view["id"], "location": view["location"], "name": view["name"],
            "properties": {"clientId": view["clientId"], "principalId": view["principalId"], "tenantId": view["tenantId"]},
            "type": view["type"]}


def listed(data: dict[str, Any]) -> dict[str, Any]:
    """A resource as Resources_List gives it (GenericResourceExpanded): no properties."""
    return {k: v for k, v in data.items() if k != "properties"}


# --- the identity block of a PUT or PATCH -------------------------------------------------------------

IDENTITY_TYPES = ("none", "systemassigned", "userassigned", "systemassigned,userassigned")


@dataclass
class IdentityRequest:
    """What a request's `identity` block asks for: the system identity on or off, and each user-assigned identity
    id it names with whether it is to be attached (a value, `{}`) or detached (null)."""

    system: bool
    user: bool
    named: dict[str, bool]  # identity id as given -> attach (True) or detach (False)
    listed: bool  # the block has a userAssignedIdentities map (a PATCH without one keeps those attached)

    def attaching(self) -> list[str]:
        """The ids the request attaches: each needs assign/action on the identity (ARM's linked check)."""
        return [i for i, on in self.named.items() if on]


def parse_identity(block: Any, rt: ResourceType) -> IdentityRequest:
    """The `identity` of a request body, checked as the provider checks it: a known type (any case, with or
    without the space of 'SystemAssigned, UserAssigned'), a map of user-assigned identity ids."""
    if not isinstance(block, dict):
        raise ValidationError("InvalidRequestContent", "The request content was invalid and could not be deserialized: "
                              "'identity must be an object'.")
    raw_type = block.get("type")
    allowed = ", ".join(f"'{t}'" for t in ("None", "SystemAssigned", "UserAssigned", rt.identity_type_both) if t)
    if raw_type is None:
        raise ValidationError("InvalidParameter", f"identity.type is required: one of {allowed}.")
    if not isinstance(raw_type, str) or raw_type.replace(" ", "").casefold() not in IDENTITY_TYPES:
        raise ValidationError("InvalidParameter", f"The value '{shown(raw_type)}' of identity.type is not valid; expected "
                              f"one of {allowed}.")
    kind = raw_type.replace(" ", "").casefold()
    system, user = kind.startswith("systemassigned"), kind.endswith("userassigned")
    if system and user and rt.identity_type_both is None:
        identities.check_one_kind(rt, system=True, user=True)
    mapping = block.get("userAssignedIdentities")
    if mapping is not None and not isinstance(mapping, dict):
        raise ValidationError("InvalidRequestContent", "The request content was invalid and could not be deserialized: "
                              "'identity.userAssignedIdentities must be an object'.")
    named = {str(k).strip().rstrip("/"): v is not None for k, v in (mapping or {}).items()}
    if any(named.values()) and not user:
        raise ValidationError("InvalidParameter", "The identity type '" + shown(raw_type) + "' does not include "
                              "UserAssigned, but userAssignedIdentities were given.")
    return IdentityRequest(system, user, named, mapping is not None)


def user_references(ctx: Ctx, group: ResourceGroup, request: IdentityRequest, current: list[Attachment], *,
                    patch: bool) -> list[identities.Reference]:
    """The user-assigned identities a resource is to hold after the request: those named to attach (each an existing
    identity of the tenant, its id kept as the caller spelled it, as ARM echoes it), the ones attached already and
    not named kept while the type keeps UserAssigned and the request does not replace the map (a PATCH, or a PUT
    without one), those named null dropped. An identity attached already stays as it is (a dangling one included)."""
    if not request.user:
        return []
    have = {a.identity_key: a for a in current}
    refs: dict[str, identities.Reference] = {}
    if patch or not request.listed:
        refs = {a.identity_key: _kept(a) for a in current}
    for arm_id, attach in request.named.items():
        key = ids.key(arm_id)
        if not attach:
            refs.pop(key, None)
            continue
        att = have.get(key)
        if att is not None and identities.is_live(ctx, att):
            refs[key] = _kept(att)
            continue
        if not arm_id.startswith("/"):
            raise identities.invalid_reference(arm_id)
        found = identities.reference(ctx, arm_id, group)
        refs[key] = identities.Reference(found.key, arm_id, found.principal_id, found.client_id)
    if not refs:
        raise ValidationError("InvalidParameter", "The identity type includes UserAssigned, but no user-assigned identity "
                              "is given in identity.userAssignedIdentities.")
    return list(refs.values())


def _kept(att: Attachment) -> identities.Reference:
    return identities.Reference(att.identity_key, att.identity_id, att.principal_id, att.client_id)


def apply_identity(ctx: Ctx, res: Resource, request: IdentityRequest, *, patch: bool) -> Resource:
    """The identity block a PUT or PATCH asks for on an existing resource, made true through the identities
    service (set_identities): the system identity as the type says, the user-assigned ones of user_references()."""
    current = identities.attachments(ctx, res)
    group = ctx.session.get(ResourceGroup, res.group_pk)
    refs = user_references(ctx, group, request, current, patch=patch)
    return identities.set_identities(ctx, res, system=request.system, user_assigned=refs, current=current)


def has_assignments_below(ctx: Ctx, principal_id: str, scope: str) -> bool:
    """Whether the principal holds any role assignment at `scope` or below it."""
    key = ids.key(scope.rstrip("/"))
    stmt = select(RoleAssignment.name).where(RoleAssignment.principal_id == principal_id,
                                             (RoleAssignment.scope_key == key)
                                             | RoleAssignment.scope_key.startswith(key + "/", autoescape=True))
    return ctx.session.exec(stmt).first() is not None
