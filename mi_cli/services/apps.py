"""App registrations for the user's own APIs: applications with their service principal, client secrets and app
roles; app role assignments to managed identities and apps; which resources the tenant knows (the first-party
APIs and these apps), the roles a principal holds on one; and the Graph shapes of these directory objects."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable

from sqlmodel import select

from mi_cli import ids
from mi_cli.errors import MiError, NotFoundError, UsageError, ValidationError, shown
from mi_cli.models import Application, ApplicationSecret, AppRoleAssignment, ServicePrincipal
from mi_cli.services import Ctx, principals
from mi_cli.services.tenancy import default_tenant
from mi_cli.services.validation import is_guid

GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
GRAPH_DISPLAY_NAME = "Microsoft Graph"
# The warning az prints with every new secret (azure-cli role/custom.py CREDENTIAL_WARNING).
CREDENTIAL_WARNING = ("The output includes credentials that you must protect. Be sure that you do not include these "
                      "credentials in your code or check the credentials into your source control. For more information, "
                      "see https://aka.ms/azadsp-cli")
MEMBER_TYPES = ("User", "Application")
MAX_IDENTIFIER_URI = 255  # Graph: identifierUris entries are at most 255 characters (it says 120 for api:// ones)
MAX_NAME = 256  # displayName of an application
SECRET_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789~._-"


class GraphError(MiError):
    """An error Microsoft Graph answers (code, message), with its status. az prints Graph's message on one line."""

    def __init__(self, code: str, message: str, *, status: int = 400) -> None:
        super().__init__(code, message)
        self.status = status


class GraphNotFound(NotFoundError):
    """Graph's 404: az exits 3 for it, as for a missing ARM resource."""

    service = False
    status = 404


def not_found(ref: str) -> GraphNotFound:
    # Graph's text for an object id that names nothing (principals.find says the same for service principals)
    return GraphNotFound("Request_ResourceNotFound", f"Resource '{shown(ref)}' does not exist or one of its queried "
                         "reference-property objects are not present.")


# --- the first-party APIs: resources every tenant knows ---------------------------------------------------

@dataclass(frozen=True)
class FirstParty:
    display_name: str
    app_id: str | None  # None where mi does not know the application id for sure
    identifiers: tuple[str, ...]
    app_roles: tuple[dict[str, Any], ...] = ()


def _graph_role(value: str, role_id: str, what: str) -> dict[str, Any]:
    return {"allowedMemberTypes": ["Application"], "description": f"Allows the app to {what} without a signed-in user.",
            "displayName": f"{value} (application)", "id": role_id, "isEnabled": True, "origin": "Application",
            "value": value}


# Microsoft Graph's application permissions that mi knows, with Graph's ids (the same in every tenant). The Graph
# plane asks for AppRoleAssignment.ReadWrite.All to write app role assignments; the others are granted and appear
# in the `roles` claim, as Entra puts them there.
GRAPH_ROLES = tuple(_graph_role(value, role_id, what) for value, role_id, what in (
    ("Application.Read.All", "9a5d68dd-52b0-4cc2-bd40-abcf44ac3a30", "read all applications and service principals"),
    ("Application.ReadWrite.All", "1bfefb4e-e0b5-418b-a88f-73c46d2cc8e9",
     "create, read, update and delete applications and service principals"),
    ("AppRoleAssignment.ReadWrite.All", "06b708a9-e830-4db3-a914-8e69da51d44f",
     "manage app permission grants and app role assignments"),
    ("Directory.Read.All", "7ab1d382-f21e-4acd-a863-ba3e13f7da61", "read data in your organization's directory"),
    ("Directory.ReadWrite.All", "19dbc75e-c2e2-444c-a770-ec69d8559fc7", "read and write data in your organization's directory"),
    ("Group.Read.All", "5b567255-7703-4780-807c-7be8301ae99b", "read group properties and memberships"),
    ("Group.ReadWrite.All", "62a82d76-70ea-41e2-9197-370581804d09",
     "create groups, read and update group properties and memberships"),
    ("RoleManagement.ReadWrite.Directory", "9e3f62cf-ca93-4989-b6ce-bf83c28f9fe8",
     "read and manage the role-based access control (RBAC) settings for your company's directory"),
    ("User.Read.All", "df021288-bdef-4463-88db-98f22de89214", "read user profiles"),
))

# Microsoft's own APIs, by the identifiers (resource URIs) Entra accepts for them, with their application ids
# where they are well known. The list joins the audiences a managed identity may ask for in Cloud Shell's
# answer to an unsupported audience (AudienceNotSupported, as MSAL.NET's tests record it: microsoft-
# authentication-library-for-dotnet tests/.../MockHelpers.cs GetMsiErrorResponse) with the resources of
# azure-facts §6 and the `audience` of each catalog type (added in `known_first_party`).
FIRST_PARTY: tuple[FirstParty, ...] = (
    FirstParty("Windows Azure Service Management API", "797f4846-ba00-4fd7-ba43-dac1f8f63013",
               ("https://management.core.windows.net/", "https://management.azure.com/")),
    FirstParty(GRAPH_DISPLAY_NAME, GRAPH_APP_ID, ("https://graph.microsoft.com", "https://canary.graph.microsoft.com"),
               GRAPH_ROLES),
    FirstParty("Windows Azure Active Directory", "00000002-0000-0000-c000-000000000000", ("https://graph.windows.net",)),
    FirstParty("Azure Key Vault", "cfa8b339-82a2-471a-a3c9-0fc0be7a4093", ("https://vault.azure.net",)),
    FirstParty("Azure Storage", "e406a681-f3d4-42a8-90b6-c2b029497af1", ("https://storage.azure.com",)),
    FirstParty("Azure SQL Database", "022907d3-0f1b-48f7-badc-1ba6abab6d66", ("https://database.windows.net",)),
    FirstParty("Azure Service Bus", "80a10ef9-8168-493d-abf9-3297c4ef6e3c", ("https://servicebus.azure.net",)),
    FirstParty("Azure Event Hubs", "80369ed6-5f11-4dd9-bef3-692475845e77", ("https://eventhubs.azure.net",)),
    FirstParty("Azure Data Lake", "e9f49c6b-5ce5-44c8-925d-015017e9f7ad", ("https://datalake.azure.net/",)),
    FirstParty("Azure Cosmos DB", "a232010e-820c-4083-83bb-3ace5fc29d0b", ("https://cosmos.azure.com",)),
    FirstParty("Azure OSSRDBMS Database", "123cd850-d9df-40bd-94d5-c9f07b7fa203", ("https://ossrdbms-aad.database.windows.net",)),
    FirstParty("Azure DevOps", "499b84ac-1321-427f-aa17-267ca6975798", ()),
    FirstParty("Azure Kubernetes Service AAD Server", "6dae42f8-4368-4678-94ff-3960e28e3630", ()),
    FirstParty("AzureDatabricks", "2ff814a6-3304-4ab8-85cb-cd0e6f879c1d", ("https://azuredatabricks.net/",)),
    FirstParty("Log Analytics API", None, ("https://api.loganalytics.io",)),
    FirstParty("Azure Monitor", None, ("https://monitor.azure.com",)),
    FirstParty("Azure Batch", None, ("https://batch.core.windows.net/",)),
    FirstParty("Power BI Service", None, ("https://analysis.windows.net/powerbi/api",)),
    FirstParty("Azure Media Services", None, ("https://rest.media.azure.net",)),
    FirstParty("Azure Digital Twins", None, ("https://digitaltwins.azure.net",)),
    FirstParty("Azure Synapse Analytics", None, ("https://dev.azuresynapse.net",)),
    FirstParty("Azure Quantum", None, ("https://quantum.microsoft.com",)),
    FirstParty("Azure IoT Hub", None, ("https://iothubs.azure.net",)),
    FirstParty("Azure Device Provisioning", None, ("https://azure-devices-provisioning.net",)),
    FirstParty("Azure Key Vault Managed HSM", None, ("https://managedhsm.azure.net",)),
    FirstParty("Azure Device Update", None, ("https://api.adu.microsoft.com/",)),
    FirstParty("Microsoft Purview", None, ("https://purview.azure.net/",)),
    FirstParty("Office 365 Exchange Online", None, ("https://outlook.office365.com/",)),
    FirstParty("Yammer", None, ("https://www.yammer.com",)),
    # a managed identity's token for federating with an app registration (workload identity federation)
    FirstParty("AAD Token Exchange Endpoint", None, ("api://AzureADTokenExchange",)),
    # application ids Cloud Shell lists as audiences without naming them
    FirstParty("0b07f429-9f4b-4714-9392-cc5e8e80c8b0", "0b07f429-9f4b-4714-9392-cc5e8e80c8b0", ()),
    FirstParty("822c8694-ad95-4735-9c55-256f7db2f9b4", "822c8694-ad95-4735-9c55-256f7db2f9b4", ()),
    FirstParty("ce34e7e5-485f-4d76-964f-b3d2b16d1e4f", "ce34e7e5-485f-4d76-964f-b3d2b16d1e4f", ()),
)
# Storage also takes a token whose audience is the account's own endpoint (data-planes.md; server/blob.py).
STORAGE_ENDPOINTS = ("blob", "queue", "table", "file", "dfs")


def audience_key(text: str) -> str:
    """How Entra matches a resource: without trailing slashes, case-insensitively (a trailing slash never makes
    another resource: client-protocol.md)."""
    return text.strip().rstrip("/").casefold()


@lru_cache(maxsize=1)
def _first_party_index() -> dict[str, FirstParty]:
    from mi_cli.catalog import catalog

    index: dict[str, FirstParty] = {}
    for fp in FIRST_PARTY:
        for name in fp.identifiers + ((fp.app_id,) if fp.app_id else ()):
            index.setdefault(audience_key(name), fp)
    for rt in catalog().types:  # a catalog type's data-plane audience is a first-party API
        if rt.audience and audience_key(rt.audience) not in index:
            index[audience_key(rt.audience)] = FirstParty(rt.type.split("/")[0], None, (rt.audience,))
    return index


def _storage_account_endpoint(key: str) -> bool:
    # https://{account}.{blob|queue|table|file|dfs}.core.windows.net: an account name is 3-24 lowercase letters and digits
    if not key.startswith("https://"):
        return False
    host, path, _ = key[len("https://"):].partition("/")
    if path:  # the account's endpoint itself, not a path below it
        return False
    name, _, rest = host.partition(".")
    service, _, suffix = rest.partition(".")
    return suffix == "core.windows.net" and service in STORAGE_ENDPOINTS and 3 <= len(name) <= 24 and name.isalnum() \
        and name.isascii()


def first_party(text: str) -> FirstParty | None:
    key = audience_key(text)
    found = _first_party_index().get(key)
    if found is None and _storage_account_endpoint(key):
        return _first_party_index()[audience_key("https://storage.azure.com")]
    return found


def first_party_sp_id(tenant_id: str, fp: FirstParty) -> str:
    """The object id of a first-party API's service principal in this tenant: stable, derived from the tenant."""
    return str(uuid.uuid5(uuid.UUID(tenant_id), f"first-party:{fp.app_id or fp.display_name}"))


def graph(ctx: Ctx) -> "ResourcePrincipal":
    return _first_party_principal(ctx, first_party(GRAPH_APP_ID))


# --- which resource a token is for -------------------------------------------------------------------------

@dataclass(frozen=True)
class ResourcePrincipal:
    """The service principal a token's audience names: a first-party API or an app registration of the tenant."""

    display_name: str
    app_id: str | None
    service_principal_id: str
    app_roles: tuple[dict[str, Any], ...] = ()
    application: Application | None = None
    identifiers: tuple[str, ...] = field(default=())


def _first_party_principal(ctx: Ctx, fp: FirstParty) -> ResourcePrincipal:
    tenant = default_tenant(ctx)
    return ResourcePrincipal(fp.display_name, fp.app_id, first_party_sp_id(tenant.id, fp), fp.app_roles, None, fp.identifiers)


def _app_principal(app: Application) -> ResourcePrincipal:
    return ResourcePrincipal(app.display_name, app.app_id, app.service_principal_id, tuple(app.app_roles), app,
                             tuple(app.identifier_uris))


def resource_principal(ctx: Ctx, resource: str) -> ResourcePrincipal | None:
    """The resource a token request names (IMDS's `resource`, a scope without /.default): a first-party API by
    one of its identifiers or its application id, or an app registration by one of its identifier URIs or its
    application id; None when the tenant knows no such resource (Entra's AADSTS500011)."""
    fp = first_party(resource)
    if fp is not None:
        return _first_party_principal(ctx, fp)
    app = application_for_resource(ctx, resource)
    return _app_principal(app) if app is not None else None


def application_for_resource(ctx: Ctx, resource: str) -> Application | None:
    key = audience_key(resource)
    if is_guid(key):
        return ctx.session.exec(select(Application).where(Application.app_id == key)).first()
    for app in ctx.session.exec(select(Application).order_by(Application.created_at)).all():
        if any(audience_key(uri) == key for uri in app.identifier_uris):
            return app
    return None


def roles_for(ctx: Ctx, principal_id: str, resource: ResourcePrincipal) -> list[str]:
    """The values of the enabled app roles `principal_id` is assigned on `resource`: the `roles` claim of an
    app-only token for it."""
    held = ctx.session.exec(select(AppRoleAssignment.app_role_id).where(
        AppRoleAssignment.principal_id == principal_id, AppRoleAssignment.resource_id == resource.service_principal_id)).all()
    if not held:
        return []
    by_id = {str(r.get("id", "")).casefold(): r for r in resource.app_roles}
    return sorted({by_id[h]["value"] for h in held if h in by_id and by_id[h].get("isEnabled", True) and by_id[h].get("value")})


# --- app registrations -------------------------------------------------------------------------------------

def _bool(value: Any, what: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise GraphError("Request_BadRequest", f"Invalid value specified for property '{what}' of resource 'AppRole'.")


def parse_json_argument(text: str, option: str) -> Any:
    """A JSON argument as az takes it: the JSON itself, or a file holding it (az's @file; a bare path works too)."""
    raw = text.strip()
    source = raw[1:] if raw.startswith("@") else raw
    if raw.startswith("@") or (not raw.startswith(("[", "{")) and Path(source).is_file()):
        try:
            raw = Path(source).expanduser().read_text(encoding="utf-8-sig")
        except (OSError, UnicodeError) as exc:
            raise UsageError("InvalidArgumentValue", f"{option}: cannot read the file '{shown(source)}': "
                             f"{getattr(exc, 'strerror', None) or exc}.") from None
    try:
        return json.loads(raw)
    except ValueError as exc:  # az's CLIError for a JSON argument: one line, exit 1
        raise MiError("InvalidArgumentValue", f"Failed to parse string as JSON: {shown(raw)} Error detail: {exc}") from None


def validate_app_roles(value: Any, *, existing: Iterable[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """App roles as az sends them to Graph (a list, or a whole manifest with `appRoles`; az gives an id to a role
    that has none), checked as Graph checks an appRole: member types User and/or Application, a display name
    and a description, a value without spaces, unique ids and values. A role keeps its id across updates when
    its value is unchanged."""
    if isinstance(value, dict):
        value = value.get("appRoles", [])
    if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
        raise GraphError("Request_BadRequest", "The appRoles property must be a list of appRole objects.")
    previous = {str(r.get("value")): r.get("id") for r in existing}
    roles: list[dict[str, Any]] = []
    for given in value:
        members = given.get("allowedMemberTypes")
        if not isinstance(members, list) or not members or any(m not in MEMBER_TYPES for m in members):
            raise GraphError("Request_BadRequest", "Invalid value specified for property 'allowedMemberTypes' of resource "
                             "'AppRole': it is a non-empty list of 'User' and 'Application'.")
        role_value = given.get("value")
        if not isinstance(role_value, str) or not role_value.strip() or any(c.isspace() for c in role_value) \
                or role_value.startswith("."):
            raise GraphError("Request_BadRequest", f"Invalid value specified for property 'value' of resource 'AppRole': "
                             f"'{shown(role_value)}'. A role's value is text without spaces, not starting with '.'.")
        for prop in ("displayName", "description"):
            if not isinstance(given.get(prop), str) or not given[prop].strip():
                raise GraphError("Request_BadRequest", f"Property '{prop}' of resource 'AppRole' is required.")
        role_id = given.get("id") or previous.get(role_value) or str(uuid.uuid4())
        if not isinstance(role_id, str) or not is_guid(role_id):
            raise GraphError("Request_BadRequest", f"Invalid value specified for property 'id' of resource 'AppRole': "
                             f"'{shown(role_id)}' is not a GUID.")
        roles.append({"allowedMemberTypes": list(dict.fromkeys(members)), "description": given["description"],
                      "displayName": given["displayName"], "id": role_id.casefold(),
                      "isEnabled": _bool(given.get("isEnabled", True), "isEnabled"), "origin": "Application",
                      "value": role_value})
    for prop in ("id", "value"):
        seen = [r[prop].casefold() for r in roles]
        if len(seen) != len(set(seen)):
            raise GraphError("Request_BadRequest", f"The '{prop}' of each app role of an application must be unique.")
    return roles


def _validate_uris(ctx: Ctx, uris: list[str], app: Application | None) -> list[str]:
    """identifierUris as Graph takes them: absolute URIs, no wildcards, none that another application of the
    tenant or a first-party API already uses. (Entra also asks an https:// URI to be on a verified domain of the
    tenant; a local tenant has none, so mi takes any host.)"""
    out: list[str] = []
    for uri in uris:
        uri = uri.strip()
        scheme, sep, rest = uri.partition("://")
        if not sep or not scheme or not rest or "*" in uri or any(c.isspace() for c in uri) or len(uri) > MAX_IDENTIFIER_URI:
            raise GraphError("Request_BadRequest", f"Invalid value specified for property 'identifierUris' of resource "
                             f"'Application': '{shown(uri)}' is not an absolute URI without wildcards of at most "
                             f"{MAX_IDENTIFIER_URI} characters.")
        if first_party(uri) is not None:
            raise GraphError("Request_BadRequest", f"Values of identifierUris property must use a verified domain of the "
                             f"organization or its subdomain: '{shown(uri)}'")
        taken = application_for_resource(ctx, uri)
        if taken is not None and (app is None or taken.id != app.id):
            raise GraphError("Request_BadRequest", "Another object with the same value for property identifierUris "
                             "already exists.")
        if audience_key(uri) not in {audience_key(u) for u in out}:
            out.append(uri)
    return out


def find(ctx: Ctx, ref: str) -> Application:
    """An application by object id, application id or identifier URI (az ad app show --id)."""
    text = ref.strip()
    if is_guid(text):
        key = text.casefold()
        app = ctx.session.exec(select(Application).where((Application.app_id == key) | (Application.id == key))).first()
        if app is not None:
            return app
        raise not_found(text)
    app = application_for_resource(ctx, text) if "://" in text else None
    if app is None:
        error = GraphNotFound("Request_ResourceNotFound", f"Application with identifier URI '{shown(text)}' doesn't exist")
        raise error
    return app


def find_by_name_or_id(ctx: Ctx, ref: str) -> Application:
    """--app as mi takes it: an id as `find` takes it, or an exact display name."""
    text = ref.strip()
    if is_guid(text) or "://" in text:
        return find(ctx, text)
    named = [a for a in list_all(ctx) if a.display_name == text]
    if len(named) == 1:
        return named[0]
    if len(named) > 1:
        raise ValidationError("AmbiguousApplication", f"More than one application have the same display name "
                              f"'{shown(text)}': (id) {', '.join(a.id for a in named)}; give its appId.")
    raise not_found(text)


def list_all(ctx: Ctx, *, display_name: str | None = None, app_id: str | None = None,
             identifier_uri: str | None = None) -> list[Application]:
    """az ad app list's filters: --display-name is a prefix (Graph's startswith), --app-id and --identifier-uri exact."""
    apps = list(ctx.session.exec(select(Application).order_by(Application.created_at, Application.id)).all())
    if display_name is not None:
        apps = [a for a in apps if a.display_name.casefold().startswith(display_name.casefold())]
    if app_id is not None:
        apps = [a for a in apps if a.app_id == app_id.strip().casefold()]
    if identifier_uri is not None:
        apps = [a for a in apps if any(u == identifier_uri for u in a.identifier_uris)]
    return apps


def create(ctx: Ctx, *, display_name: str, identifier_uris: list[str] | None = None,
           app_roles: Any = None, object_id: str | None = None, app_id: str | None = None,
           service_principal_id: str | None = None, in_use: Callable[[str, str], bool] | None = None) -> Application:
    """`az ad app create`: a new application (and, as the portal makes it, its service principal); when exactly
    one application already has this display name (and the identifier URIs given), it is patched with what is
    given instead, with az's warning. A tenant file may give the new application's ids (an export writes them), which
    must be unused; `in_use` answers from a bulk caller's index instead of a query."""
    display_name = display_name.strip() if isinstance(display_name, str) else display_name
    if not display_name or len(display_name) > MAX_NAME or any(ord(c) < 32 for c in display_name):
        raise GraphError("Request_BadRequest", f"Invalid value specified for property 'displayName' of resource "
                         f"'Application': it is 1 to {MAX_NAME} characters without control characters.")
    existing = [a for a in list_all(ctx, display_name=display_name) if a.display_name == display_name]
    if identifier_uris:
        existing = [a for a in existing if set(identifier_uris) <= set(a.identifier_uris)]
    if len(existing) > 1:
        raise ValidationError("Conflict", f"More than one application have the same display name '{shown(display_name)}': "
                              f"(id) {', '.join(a.id for a in existing)}, please remove them first.")
    if existing:
        app = existing[0]
        ctx.warn(f"Found an existing application instance: (id) {app.id}. We will patch it.")
        return update(ctx, app, identifier_uris=identifier_uris, app_roles=app_roles)
    uris = _validate_uris(ctx, identifier_uris or [], None)
    roles = validate_app_roles(app_roles) if app_roles is not None else []
    tenant = default_tenant(ctx)
    object_id, app_id, sp_id = (object_id or ctx.new_guid()).casefold(), (app_id or ctx.new_guid()).casefold(), \
        (service_principal_id or ctx.new_guid()).casefold()
    if object_id or app_id or service_principal_id:
        if in_use is not None:
            taken = in_use(sp_id, app_id) | in_use(object_id, object_id)
        else:
            given = [object_id, app_id, sp_id]
            taken = ctx.session.exec(select(ServicePrincipal.id).where(
                ServicePrincipal.id.in_(given) | ServicePrincipal.app_id.in_(given))).first() is not None \
                or ctx.session.exec(select(Application.id).where(
                    Application.id.in_(given) | Application.app_id.in_(given)
                    | Application.service_principal_id.in_(given))).first() is not None
        if taken:
            raise GraphError("Request_BadRequest", f"Another object with the same value for property id, appId or "
                             f"servicePrincipalId ({object_id}, {app_id}, {sp_id}) already exists.")
    app = ctx.insert(Application, {"id": object_id, "app_id": app_id, "service_principal_id": sp_id, "tenant_id": tenant.id,
                                   "display_name": display_name, "identifier_uris": uris, "app_roles": roles,
                                   "created_at": ctx.now()})
    ctx.log("Microsoft.Directory/applications/create", object_id, detail=f"{display_name}; appId={app_id}")
    ctx.log("Microsoft.Directory/servicePrincipals/create", sp_id, detail=f"application {app_id}")
    return app


def update(ctx: Ctx, app: Application, *, identifier_uris: list[str] | None = None, app_roles: Any = None) -> Application:
    changed = []
    if identifier_uris is not None:
        app.identifier_uris = _validate_uris(ctx, identifier_uris, app)
        changed.append("identifierUris")
    if app_roles is not None:
        roles = validate_app_roles(app_roles, existing=app.app_roles)
        # Graph refuses to drop a role that is still enabled; mi lets a role go and its assignments with it
        kept = {r["id"] for r in roles}
        for gone in [r for r in app.app_roles if r["id"] not in kept]:
            for row in ctx.session.exec(select(AppRoleAssignment).where(
                    AppRoleAssignment.resource_id == app.service_principal_id,
                    AppRoleAssignment.app_role_id == gone["id"])).all():
                ctx.session.delete(row)
        app.app_roles = roles
        changed.append("appRoles")
    if changed:
        ctx.session.add(app)
        ctx.session.flush()
        ctx.log("Microsoft.Directory/applications/update", app.id, detail=", ".join(changed))
    return app


def delete(ctx: Ctx, app: Application) -> None:
    """The application, its service principal, secrets, and every app role assignment on or of its principal."""
    for row in ctx.session.exec(select(AppRoleAssignment).where(
            (AppRoleAssignment.resource_id == app.service_principal_id)
            | (AppRoleAssignment.principal_id == app.service_principal_id))).all():
        ctx.session.delete(row)
    for secret in ctx.session.exec(select(ApplicationSecret).where(ApplicationSecret.application_id == app.id)).all():
        ctx.session.delete(secret)
    ctx.session.delete(app)
    ctx.session.flush()
    ctx.log("Microsoft.Directory/servicePrincipals/delete", app.service_principal_id, detail=f"application {app.app_id}")
    ctx.log("Microsoft.Directory/applications/delete", app.id, detail=f"{app.display_name}; appId={app.app_id}")


# --- client secrets ----------------------------------------------------------------------------------------

def _new_secret() -> str:
    # Entra's secrets: 40 characters, the 4th to 6th "8Q~" (as every secret az prints since 2021 shows)
    raw = os.urandom(37)
    chars = [SECRET_ALPHABET[b % len(SECRET_ALPHABET)] for b in raw]
    return "".join(chars[:3]) + "8Q~" + "".join(chars[3:])


def _digest(salt: str, secret: str) -> str:
    return hashlib.sha256((salt + secret).encode("utf-8", "surrogatepass")).hexdigest()


def secrets_of(ctx: Ctx, app: Application) -> list[ApplicationSecret]:
    return list(ctx.session.exec(select(ApplicationSecret).where(ApplicationSecret.application_id == app.id)
                                 .order_by(ApplicationSecret.start_at)).all())


def reset_secret(ctx: Ctx, app: Application, *, years: float | None = None, end_date: datetime | None = None,
                 display_name: str | None = None, append: bool = False) -> str:
    """`az ad app credential reset`: a new client secret (valid a year unless told), every other one removed
    unless `append`. The secret is returned once; only its hash is kept."""
    start = ctx.now()
    if years is not None and end_date is not None:
        raise UsageError("InvalidArgument", "usage error: --years | --end-date")
    if end_date is None:
        years = 1 if years is None else years
        if not 0 < years <= 100:
            raise UsageError("InvalidArgumentValue", "--years must be a number of years above 0 and at most 100.")
        end = start + timedelta(days=round(365.25 * years))
    else:
        end = end_date if end_date.tzinfo else end_date.replace(tzinfo=timezone.utc)
        if end <= start:
            raise GraphError("Request_BadRequest", "The endDateTime of a password credential must be later than its "
                             "startDateTime.")
    if not append:
        for old in secrets_of(ctx, app):
            ctx.session.delete(old)
    secret = _new_secret()
    salt = base64.b64encode(os.urandom(12)).decode()
    key_id = ctx.new_guid()
    ctx.insert(ApplicationSecret, {"key_id": key_id, "application_id": app.id, "display_name": display_name,
                                   "hint": secret[:3], "salt": salt, "secret_hash": _digest(salt, secret),
                                   "start_at": start, "end_at": end})
    ctx.session.flush()
    ctx.log("Microsoft.Directory/applications/addPassword", app.id, detail=f"keyId={key_id}; appId={app.app_id}")
    return secret


def secret_matches(ctx: Ctx, app: Application, secret: str) -> bool:
    """Whether `secret` is a current client secret of `app` (compared in constant time; an expired one is not)."""
    now = ctx.now()
    found = False
    for row in secrets_of(ctx, app):
        start, end = (t if t.tzinfo else t.replace(tzinfo=timezone.utc) for t in (row.start_at, row.end_at))
        if hmac.compare_digest(_digest(row.salt, secret), row.secret_hash) and start <= now < end:
            found = True
    return found


# --- app role assignments ----------------------------------------------------------------------------------

def _assignment_id(principal_id: str, nonce: bytes) -> str:
    # Graph's appRoleAssignment ids are 43 characters of base64url: the principal's object id bytes, then more
    return base64.urlsafe_b64encode(uuid.UUID(principal_id).bytes_le + nonce).rstrip(b"=").decode()


@dataclass(frozen=True)
class Principal:
    """A principal an app role can be assigned to: a managed identity's service principal or an app's."""

    id: str
    display_name: str
    app_id: str


def principal(ctx: Ctx, ref: str) -> Principal:
    """--assignee: a managed identity (as `role assignment create --assignee` names one) or an application's service
    principal (by its appId, object id, service principal id or exact display name)."""
    from mi_cli.services import assignments  # the one place that turns an assignee into a principal

    sp = assignments.resolve_principal(ctx, ref)
    return Principal(sp.id, sp.display_name, sp.app_id)


def principal_by_id(ctx: Ctx, object_id: str) -> Principal | None:
    key = object_id.strip().casefold()
    sp = ctx.session.get(ServicePrincipal, key)
    if sp is not None:
        return Principal(sp.id, sp.display_name, sp.app_id)
    app = ctx.session.exec(select(Application).where(Application.service_principal_id == key)).first()
    return Principal(app.service_principal_id, app.display_name, app.app_id) if app is not None else None


def resource_by_sp_id(ctx: Ctx, sp_id: str) -> ResourcePrincipal | None:
    """The resource whose service principal has this object id: an app's, or a first-party API's."""
    key = sp_id.strip().casefold()
    app = ctx.session.exec(select(Application).where(Application.service_principal_id == key)).first()
    if app is not None:
        return _app_principal(app)
    tenant = default_tenant(ctx)
    fp = next((f for f in FIRST_PARTY if first_party_sp_id(tenant.id, f) == key), None)
    return _first_party_principal(ctx, fp) if fp is not None else None


def resource_by_ref(ctx: Ctx, ref: str) -> ResourcePrincipal:
    """--app: an app registration as `find_by_name_or_id` takes it, or Microsoft Graph (by name or appId)."""
    text = ref.strip()
    if text.casefold() in (GRAPH_DISPLAY_NAME.casefold(), GRAPH_APP_ID) or audience_key(text) == "https://graph.microsoft.com":
        return graph(ctx)
    found = resource_by_sp_id(ctx, text) if is_guid(text) else None
    return found if found is not None else _app_principal(find_by_name_or_id(ctx, text))


def _role(resource: ResourcePrincipal, role_ref: str) -> dict[str, Any]:
    """A role of the resource by value (exact) or id, one that applications may be assigned."""
    wanted = role_ref.strip()
    role = next((r for r in resource.app_roles if r.get("value") == wanted or r["id"] == wanted.casefold()), None)
    if role is None:
        raise GraphError("Request_BadRequest", f"Permission being assigned was not found on application '{resource.app_id}'. "
                         f"Its app roles: {', '.join(r['value'] for r in resource.app_roles) or 'none'}.")
    if "Application" not in role["allowedMemberTypes"]:
        raise GraphError("Request_BadRequest", f"The app role '{role['value']}' cannot be assigned to a service principal: its "
                         "allowedMemberTypes do not include 'Application'.")
    return role


def assign_role(ctx: Ctx, principal_: Principal, resource: ResourcePrincipal, role_ref: str) -> AppRoleAssignment:
    """An app role of `resource` granted to a principal (Graph's POST appRoleAssignedTo). Granting it again is
    Graph's "Permission being assigned already exists on the object"."""
    role = _role(resource, role_ref)
    existing = ctx.session.exec(select(AppRoleAssignment).where(
        AppRoleAssignment.principal_id == principal_.id, AppRoleAssignment.resource_id == resource.service_principal_id,
        AppRoleAssignment.app_role_id == role["id"])).first()
    if existing is not None:
        raise GraphError("Request_BadRequest", "Permission being assigned already exists on the object")
    nonce = hashlib.sha256(f"{resource.service_principal_id}:{role['id']}".encode()).digest()[:16]
    row = ctx.insert(AppRoleAssignment, {"id": _assignment_id(principal_.id, nonce), "principal_id": principal_.id,
                                         "principal_type": "ServicePrincipal",
                                         "resource_id": resource.service_principal_id, "app_role_id": role["id"],
                                         "created_at": ctx.now()})
    ctx.log("Microsoft.Directory/appRoleAssignments/create", row.id,
            detail=f"{role['value']} of {resource.display_name} ({resource.app_id}) to {principal_.id}")
    return row


def assignments_to(ctx: Ctx, resource: ResourcePrincipal) -> list[AppRoleAssignment]:
    """appRoleAssignedTo: the assignments of a resource's roles, to principals that still exist."""
    rows = ctx.session.exec(select(AppRoleAssignment).where(AppRoleAssignment.resource_id == resource.service_principal_id)
                            .order_by(AppRoleAssignment.created_at)).all()
    return [r for r in rows if principal_by_id(ctx, r.principal_id) is not None]


def assignments_of(ctx: Ctx, principal_id: str) -> list[AppRoleAssignment]:
    """appRoleAssignments: the app roles granted to a principal, on resources that still exist."""
    rows = ctx.session.exec(select(AppRoleAssignment).where(AppRoleAssignment.principal_id == principal_id.casefold())
                            .order_by(AppRoleAssignment.created_at)).all()
    return [r for r in rows if resource_by_sp_id(ctx, r.resource_id) is not None]


def all_assignments(ctx: Ctx) -> list[AppRoleAssignment]:
    rows = ctx.session.exec(select(AppRoleAssignment).order_by(AppRoleAssignment.created_at)).all()
    return [r for r in rows if principal_by_id(ctx, r.principal_id) is not None and resource_by_sp_id(ctx, r.resource_id)]


def remove_role(ctx: Ctx, principal_: Principal, resource: ResourcePrincipal,
                role_ref: str | None = None) -> list[AppRoleAssignment]:
    """The principal's assignments of `role_ref` (every role without it) on the resource; none removed is not an
    error, as az's deletes are idempotent."""
    wanted = _role(resource, role_ref)["id"] if role_ref else None
    gone = [r for r in ctx.session.exec(select(AppRoleAssignment).where(
        AppRoleAssignment.principal_id == principal_.id, AppRoleAssignment.resource_id == resource.service_principal_id)).all()
        if wanted is None or r.app_role_id == wanted]
    for row in gone:
        ctx.session.delete(row)
        ctx.log("Microsoft.Directory/appRoleAssignments/delete", row.id, detail=f"of {resource.display_name} to {principal_.id}")
    ctx.session.flush()
    return gone


def delete_assignment(ctx: Ctx, resource: ResourcePrincipal, assignment_id: str) -> None:
    row = ctx.session.get(AppRoleAssignment, assignment_id)
    if row is None or row.resource_id != resource.service_principal_id:
        raise not_found(assignment_id)
    ctx.session.delete(row)
    ctx.session.flush()
    ctx.log("Microsoft.Directory/appRoleAssignments/delete", row.id, detail=f"of {resource.display_name} to {row.principal_id}")


# --- Graph's shapes ----------------------------------------------------------------------------------------

def graph_time(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def password_view(row: ApplicationSecret, secret_text: str | None = None) -> dict[str, Any]:
    return {"customKeyIdentifier": None, "displayName": row.display_name, "endDateTime": graph_time(row.end_at),
            "hint": row.hint, "keyId": row.key_id, "secretText": secret_text, "startDateTime": graph_time(row.start_at)}


def application_view(ctx: Ctx, app: Application) -> dict[str, Any]:
    """Graph's application (v1.0), as `az ad app create/show` print it."""
    return {
        "@odata.type": "#microsoft.graph.application",
        "addIns": [],
        "api": {"acceptMappedClaims": None, "knownClientApplications": [], "oauth2PermissionScopes": [],
                "preAuthorizedApplications": [], "requestedAccessTokenVersion": None},
        "appId": app.app_id,
        "appRoles": list(app.app_roles),
        "applicationTemplateId": None,
        "createdDateTime": graph_time(app.created_at),
        "deletedDateTime": None,
        "description": None,
        "displayName": app.display_name,
        "groupMembershipClaims": None,
        "id": app.id,
        "identifierUris": list(app.identifier_uris),
        "info": {"logoUrl": None, "marketingUrl": None, "privacyStatementUrl": None, "supportUrl": None,
                 "termsOfServiceUrl": None},
        "isDeviceOnlyAuthSupported": None,
        "isFallbackPublicClient": None,
        "keyCredentials": [],
        "notes": None,
        "optionalClaims": None,
        "parentalControlSettings": {"countriesBlockedForMinors": [], "legalAgeGroupRule": "Allow"},
        "passwordCredentials": [password_view(s) for s in secrets_of(ctx, app)],
        "publicClient": {"redirectUris": []},
        "publisherDomain": None,
        "requiredResourceAccess": [],
        "signInAudience": "AzureADMyOrg",
        "spa": {"redirectUris": []},
        "tags": [],
        "tokenEncryptionKeyId": None,
        "verifiedPublisher": {"addedDateTime": None, "displayName": None, "verifiedPublisherId": None},
        "web": {"homePageUrl": None, "implicitGrantSettings": {"enableAccessTokenIssuance": False,
                                                                "enableIdTokenIssuance": False},
                "logoutUrl": None, "redirectUriSettings": [], "redirectUris": []},
    }


def _sp_common(sp_id: str, app_id: str | None, display_name: str, owner: str | None, roles, names, sp_type: str,
               tenant_id: str, created: datetime | None = None) -> dict[str, Any]:
    return {
        "@odata.type": "#microsoft.graph.servicePrincipal",
        "accountEnabled": True,
        "alternativeNames": [],
        "appDisplayName": display_name,
        "appId": app_id,
        "appOwnerOrganizationId": owner,
        "appRoleAssignmentRequired": False,
        "appRoles": list(roles),
        "createdDateTime": graph_time(created) if created else None,
        "deletedDateTime": None,
        "displayName": display_name,
        "id": sp_id,
        "keyCredentials": [],
        "oauth2PermissionScopes": [],
        "passwordCredentials": [],
        "servicePrincipalNames": list(names),
        "servicePrincipalType": sp_type,
        "signInAudience": "AzureADMyOrg" if owner == tenant_id else "AzureADMultipleOrgs",
        "tags": [],
    }


# The tenant that owns Microsoft's first-party applications
MICROSOFT_SERVICES_TENANT = "f8cdef31-a31e-4b4a-93e4-5f571e91255a"


def app_service_principal_view(app: Application) -> dict[str, Any]:
    """The service principal of an app registration (az ad sp show --id APPID)."""
    return _sp_common(app.service_principal_id, app.app_id, app.display_name, app.tenant_id, app.app_roles,
                      [app.app_id, *app.identifier_uris], "Application", app.tenant_id, app.created_at)


def first_party_view(ctx: Ctx, resource: ResourcePrincipal) -> dict[str, Any]:
    tenant = default_tenant(ctx)
    return _sp_common(resource.service_principal_id, resource.app_id, resource.display_name, MICROSOFT_SERVICES_TENANT,
                      resource.app_roles, [*([resource.app_id] if resource.app_id else []), *resource.identifiers],
                      "Application", tenant.id)


def managed_identity_view(sp: ServicePrincipal) -> dict[str, Any]:
    from mi_cli.services import views  # the shape `mi sp show` prints

    return {"@odata.type": "#microsoft.graph.servicePrincipal", **views.service_principal(sp)}


def service_principals(ctx: Ctx) -> list[dict[str, Any]]:
    """Every service principal of the directory, in Graph's shape: the managed identities', the app
    registrations', and Microsoft Graph's (the first-party principal whose app roles can be granted)."""
    out = [managed_identity_view(sp) for sp in principals.list_all(ctx)]
    out += [app_service_principal_view(a) for a in list_all(ctx)]
    out.append(first_party_view(ctx, graph(ctx)))
    return out


def service_principal_view(ctx: Ctx, object_id: str) -> dict[str, Any] | None:
    key = object_id.strip().casefold()
    sp = ctx.session.get(ServicePrincipal, key)
    if sp is not None:
        return managed_identity_view(sp)
    resource = resource_by_sp_id(ctx, key)
    if resource is None:
        return None
    return app_service_principal_view(resource.application) if resource.application else first_party_view(ctx, resource)


def assignment_view(ctx: Ctx, row: AppRoleAssignment) -> dict[str, Any]:
    """Graph's appRoleAssignment."""
    who = principal_by_id(ctx, row.principal_id)
    resource = resource_by_sp_id(ctx, row.resource_id)
    return {"appRoleId": row.app_role_id, "createdDateTime": graph_time(row.created_at), "deletedDateTime": None,
            "id": row.id, "principalDisplayName": who.display_name if who else None, "principalId": row.principal_id,
            "principalType": row.principal_type, "resourceDisplayName": resource.display_name if resource else None,
            "resourceId": row.resource_id}


# --- Microsoft Graph's authorisation -----------------------------------------------------------------------

GRAPH_AUDIENCES = ("https://graph.microsoft.com", GRAPH_APP_ID)
# Graph's application permission for writing app role assignments (appRoleAssignedTo, appRoleAssignments).
ASSIGNMENTS_WRITE = ("AppRoleAssignment.ReadWrite.All",)


def authorize_graph(ctx: Ctx, authorization: str | None, *, write: bool) -> dict[str, Any]:
    """What Graph does with a request's bearer token: verified as Graph verifies it (this tenant's signature,
    lifetime, audience https://graph.microsoft.com), then, for a write of app role assignments, the
    AppRoleAssignment.ReadWrite.All application permission in the token's `roles` (granted with `mi app role assign
    --app "Microsoft Graph"`). Reading service principals, applications and directory objects is allowed to every
    principal of the tenant, which is what az needs after `az login --identity` (Azure asks an app-only caller for
    Application.Read.All or Directory.Read.All). Returns the token's claims; raises InvalidTokenError (401) or a
    GraphError 403."""
    from mi_cli.services import access

    claims = access.authenticate(ctx, authorization, GRAPH_AUDIENCES)
    if write and not set(claims.get("roles") or ()) & set(ASSIGNMENTS_WRITE):
        denied = GraphError("Authorization_RequestDenied", "Insufficient privileges to complete the operation.", status=403)
        denied.caller = claims.get("oid")
        raise denied
    return claims
