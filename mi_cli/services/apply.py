"""`mi apply`: a tenant file made true in one transaction, entry by entry through the same service calls
as the single commands, their inserts batched; the plan is what those calls did."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Callable

from sqlmodel import select

from mi_cli import ids
from mi_cli.catalog import catalog
from mi_cli.errors import ConflictError, MiError, NotFoundError, ValidationError
from mi_cli.models import (
    Application, AppRoleAssignment, Attachment, CustomRole, FederatedCredential, FederationIssuer, Resource, ResourceGroup,
    RoleAssignment, ServicePrincipal, StorageAccount, Subscription, UserAssignedIdentity,
)
from mi_cli.services import (
    Ctx, apps, assignments, federated, federation, groups, identities, keyvault, resources, roles, storage, tenancy,
)
from mi_cli.services.tenant_file import ApplyError, at, raise_all

# What a delete in the activity log removed, as the plan names its kind.
DELETED_KINDS = {
    "microsoft.authorization/roleassignments": "roleAssignment",
    "microsoft.authorization/roledefinitions": "customRole",
    "microsoft.managedidentity/userassignedidentities": "userAssignedIdentity",
    "microsoft.managedidentity/userassignedidentities/federatedidentitycredentials": "federatedCredential",
    "microsoft.resources/resourcegroups": "resourceGroup",
    "microsoft.directory/serviceprincipals": "servicePrincipal",
    "microsoft.keyvault/vaults/secrets": "secret",
    "microsoft.directory/applications": "application",
    "microsoft.directory/approleassignments": "appRoleAssignment",
    "microsoft.managedidentity/federationissuers": "federationIssuer",
}


# Errors that say something an entry names is not there, and the kinds of entry that could have declared it
MISSING = {"PrincipalNotFound": ("identity", "resource", "app"), "ResourceGroupNotFound": ("group",),
           "ResourceNotFound": ("resource", "identity"), "SubscriptionNotFound": ("subscription",),
           "RoleDefinitionDoesNotExist": ("role",), "ParentResourceNotFound": ("resource",),
           "Request_ResourceNotFound": ("app", "identity")}


@dataclass
class Plan:
    changes: list[dict[str, str]] = field(default_factory=list)

    def add(self, op: str, kind: str, target: str) -> None:
        self.changes.append({"op": op, "kind": kind, "id": target})

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {"create": 0, "update": 0, "delete": 0, "unchanged": 0}
        for c in self.changes:
            out[c["op"]] += 1
        return out


@dataclass(frozen=True)
class _Group:
    """What entries need of their group: read once, not an ORM object per entry."""

    pk: int
    name: str
    subscription_id: str
    location: str


class Applier:
    """Walks a checked tenant file section by section, parents first. Each entry is one service call
    (the commands' own); the Applier only finds what an entry names in an index of the store, so the
    calls need no queries, and records what each call changed. Inserts wait in the writer's batches."""

    def __init__(self, ctx: Ctx, source: str, *, prune: bool = False, progress: Callable[[int], None] | None = None) -> None:
        self.ctx, self.source, self.prune = ctx, source, prune
        self.progress = progress or (lambda n: None)
        self.plan = Plan()
        self.declared_app_refs: dict[str, str] = {}  # a principal or an app's service principal -> a declared app role grant
        self.declared_issuer_refs: dict[str, str] = {}  # an issuer URL -> a declared federated credential naming it
        # Every invalid entry is reported, not only the first: an entry that fails is noted and the run goes on (all
        # of it is rolled back), except for entries that name one that failed (a group's identities, say).
        self.errors: list[MiError] = []
        self.failed: set[tuple[str, str]] = set()  # (kind, name or id, casefolded) of entries that failed
        self.failed_kinds: set[str] = set()

    def run(self, doc: dict[str, Any]) -> Plan:
        s = self.ctx.session
        if s.connection().dialect.name == "sqlite":
            # GUID keys land all over their indexes: a bigger page cache for this connection keeps
            # a 100,000-identity apply from thrashing it (SQLite's default is 2 MB)
            s.connection().exec_driver_sql("PRAGMA cache_size = -262144")
        # one time stamps the whole apply, as one request would (repeated by a C callable: the 100,000s of rows an
        # apply stamps do not each call a Python function for it)
        self.ctx.clock = itertools.repeat(self.ctx.now()).__next__
        with self.ctx.writer.batched():
            try:
                self._tenant(doc.get("tenant") or {})
                self._subscriptions(doc.get("subscriptions") or [])
                self._resource_groups(doc.get("resourceGroups") or [])
                self._custom_roles(doc.get("customRoles") or [])
                self._issuers(doc.get("federationIssuers") or [])
                self._user_assigned(doc.get("userAssignedIdentities") or [])
                self._resources(doc.get("resources") or [])
                self._secrets(doc.get("resources") or [])
                self._applications(doc.get("applications") or [])
                self._app_role_assignments(doc.get("appRoleAssignments") or [])
                self._role_assignments(doc.get("roleAssignments") or [])
            except MiError as exc:  # an error of the whole file (the tenant, say): with those found before it
                raise_all([*self.errors, exc], self.source)
            except Exception:
                if self.errors:  # after an entry failed, what went wrong next is most likely its consequence
                    raise_all(self.errors, self.source)
                raise
            raise_all(self.errors, self.source)  # within the batch: nothing of a failed run is written
        if self.prune:
            self._prune()
        return self.plan

    # -- helpers --------------------------------------------------------------------------------------

    def _fail(self, where: Any, exc: MiError) -> ApplyError:
        return exc if isinstance(exc, ApplyError) else ApplyError(exc.code, self.source, where, exc.message)

    def _failed(self, where: Any, exc: MiError, entry: dict[str, Any], kind: str, *names: Any) -> None:
        """An entry that failed: its error is kept and the run goes on, to report every invalid entry; an entry
        that names one that failed before it fails with it, unreported (its error would only repeat that one)."""
        if not self._follows_failure(entry, exc):
            self.errors.append(self._fail(where, exc))
        self.failed.update((kind, str(n).strip().rstrip("/").rsplit("/", 1)[-1].casefold()) for n in names if n)
        self.failed_kinds.add(kind)

    def _follows_failure(self, entry: dict[str, Any], exc: MiError) -> bool:
        """Whether the entry names one that failed; or, failing because something it names is missing, names a
        kind of which an entry failed (one renamed by mistake: what names it by its old name fails with it)."""
        if not self.failed:
            return False
        refs: list[tuple[str, Any]] = [("subscription", entry.get("subscription")), ("group", entry.get("resourceGroup")),
                                       ("resource", entry.get("parent")), ("app", entry.get("app"))]
        for ref in (entry.get("identity") or {}).get("userAssigned") or []:
            refs.append(("identity", ref.get("id") if isinstance(ref, dict) else ref))
        if entry.get("assignee"):
            refs += [(kind, entry["assignee"]) for kind in ("identity", "resource", "app")]
        if entry.get("scope"):
            refs += [("role", entry.get("role"))]
        for scope in [entry.get("scope"), *(entry.get("assignableScopes") or [])]:
            refs += [(kind, part) for part in str(scope or "").split("/") if part
                     for kind in ("subscription", "group", "resource", "identity")]
        for kind, ref in refs:
            if ref and (kind, str(ref).strip().rstrip("/").rsplit("/", 1)[-1].casefold()) in self.failed:
                return True
        missing = MISSING.get(exc.code, ("identity",) if exc.code == "InvalidParameter" and "not a valid reference" in
                              exc.message else ())
        return any(ref and kind in missing and kind in self.failed_kinds for kind, ref in refs)

    def _put(self, kind: str, existed: bool, call: Callable[[], Any], target: Callable[[Any], str]) -> Any:
        """One service call; its plan entry says whether it created, changed (it logged) or kept."""
        before = self.ctx.changes
        result = call()
        op = "create" if not existed else ("update" if self.ctx.changes > before else "unchanged")
        self.plan.add(op, kind, target(result))
        return result

    def _in_use(self, principal_id: str, client_id: str) -> bool:
        """Ids a file carries must be new to the directory (and to the file)."""
        taken = principal_id in self.principal_ids or client_id in self.app_ids
        self.principal_ids.add(principal_id)
        self.app_ids.add(client_id)
        return taken

    # -- sections -------------------------------------------------------------------------------------

    def _tenant(self, entry: dict[str, Any]) -> None:
        tenant = tenancy.default_tenant(self.ctx, create=False)
        wanted = entry.get("id")
        if tenant is None:
            tenant = tenancy.create_tenant(self.ctx, tenant_id=wanted, display_name=entry.get("displayName", "mi tenant"))
            self.plan.add("create", "tenant", tenant.id)
        elif wanted and not ids.same(wanted, tenant.id):
            raise ApplyError("TenantMismatch", self.source, "tenant.id",
                             f"the file is for tenant {wanted}, but this store's tenant is {tenant.id}.")
        else:
            self.plan.add("unchanged", "tenant", tenant.id)

    def _subscriptions(self, entries: list[dict[str, Any]]) -> None:
        known = tenancy.list_subscriptions(self.ctx)
        declared: set[str] = set()
        for i, entry in enumerate(entries):
            existed = any((entry.get("id") and ids.same(x.id, entry["id"])) or ids.same(x.name, entry["name"]) for x in known)
            try:
                _once(declared, ids.key(entry["name"]), f"the subscription {entry['name']}")
                self._put("subscription", existed, lambda: tenancy.create_subscription(
                    self.ctx, entry["name"], subscription_id=entry.get("id"), make_default=bool(entry.get("default"))),
                    lambda sub: ids.subscription_id(sub.id))
            except MiError as exc:
                self._failed(at("subscriptions", i, entry), exc, entry, "subscription", entry["name"], entry.get("id"))
        subs = tenancy.list_subscriptions(self.ctx) or [tenancy.default_subscription(self.ctx)]
        self.subs: dict[str, Subscription] = {}
        for sub in subs:
            self.subs[ids.key(sub.id)] = self.subs[ids.key(sub.name)] = sub
        self.subs[""] = next(x for x in subs if x.is_default)

    def _sub(self, ref: str | None, where: Any) -> Subscription:
        sub = self.subs.get(ids.key(ref or ""))
        if sub is None:
            raise ApplyError("SubscriptionNotFound", self.source, where, f"the subscription '{ref}' is neither in the file nor in the store.")
        return sub

    def _resource_groups(self, entries: list[dict[str, Any]]) -> None:
        s = self.ctx.session
        existing = {(g.subscription_id, g.name_key) for g in s.exec(select(ResourceGroup)).all()}
        self.declared_groups: set[tuple[str, str]] = set()
        self.declared_group_pks: set[int] = set()
        for i, entry in enumerate(entries):
            where = at("resourceGroups", i, entry)
            try:
                sub = self._sub(entry.get("subscription"), where)
                _once(self.declared_groups, (sub.id, ids.key(entry["name"])), f"the resource group {entry['name']}")
                group = self._put("resourceGroup", (sub.id, ids.key(entry["name"])) in existing, lambda: groups.create(
                    self.ctx, entry["name"], entry["location"], tags=entry.get("tags") or {}, subscription=sub.id),
                    lambda g: ids.group_id(sub.id, g.name))
                self.declared_group_pks.add(group.pk)
            except MiError as exc:
                self._failed(where, exc, entry, "group", entry["name"])
            self.progress(1)
        self.groups = {(g.subscription_id, g.name_key): _Group(g.pk, g.name, g.subscription_id, g.location)
                       for g in s.exec(select(ResourceGroup)).all()}
        self.group_of: dict[tuple[Any, str], _Group] = {}  # (subscription, group) as entries spell them -> the group

    def _group(self, entry: dict[str, Any], where: Any) -> _Group:
        """The group an entry names; found once for each way entries spell it (100,000 identities name a few)."""
        ref = (entry.get("subscription"), entry["resourceGroup"])
        group = self.group_of.get(ref)
        if group is not None:
            return group
        sub = self._sub(ref[0], where)
        group = self.groups.get((sub.id, ids.key(ref[1])))
        if group is None:
            raise ApplyError("ResourceGroupNotFound", self.source, where,
                             f"Resource group '{entry['resourceGroup']}' could not be found (declare it under resourceGroups).")
        self.group_of[ref] = group
        return group

    def _custom_roles(self, entries: list[dict[str, Any]]) -> None:
        self.declared_roles: set[str] = set()
        seen: set[str] = set()
        for i, entry in enumerate(entries):
            document = {"Name": entry["roleName"], "Description": entry.get("description", ""),
                        "Permissions": entry["permissions"], "AssignableScopes": entry["assignableScopes"]}
            current = {r.role_name.casefold(): r for r in roles.all_roles(self.ctx) if r.role_type == "CustomRole"}
            found = current.get(entry["roleName"].casefold())
            try:
                _once(seen, entry["roleName"].casefold(), f"the custom role {entry['roleName']}")
                if found is None:
                    role = self._put("customRole", False, lambda: roles.create_custom(self.ctx, document, role_id=entry.get("id")),
                                     lambda r: r.guid)
                else:
                    role = self._put("customRole", True, lambda: roles.update_custom(self.ctx, document, role_ref=found.guid),
                                     lambda r: r.guid)
                self.declared_roles.add(role.guid)
            except MiError as exc:
                self._failed(at("customRoles", i, entry), exc, entry, "role", entry["roleName"], entry.get("id"))

    def _user_assigned(self, entries: list[dict[str, Any]]) -> None:
        s = self.ctx.session
        self.uamis: dict[str, Any] = {u.id_key: u for u in s.exec(select(UserAssignedIdentity)).all()}
        self.principal_ids = set(s.exec(select(ServicePrincipal.id)).all())
        self.app_ids = set(s.exec(select(ServicePrincipal.app_id)).all())
        credentials: dict[int, list[Any]] = {}
        for f in s.exec(select(FederatedCredential)).all():
            credentials.setdefault(f.identity_pk, []).append(f)
        self.declared_uamis: set[str] = set()
        # what each of 100,000s of entries uses, looked up once
        ctx, uamis, declared, plan, progress = self.ctx, self.uamis, self.declared_uamis, self.plan, self.progress
        create, in_use = identities.create_user_assigned, self._in_use
        group_of = self.group_of
        for i, entry in enumerate(entries):
            try:
                group = group_of.get((entry.get("subscription"), entry["resourceGroup"])) or \
                    self._group(entry, _Where("userAssignedIdentities", i, entry))  # formatted only for an error
                key = ids.key(ids.uami_id(group.subscription_id, group.name, entry["name"]))
                if key in declared:
                    raise ValidationError("Conflict", f"the identity {entry['name']} is declared twice.")
                declared.add(key)
                existing = uamis.get(key)
                before = ctx.changes
                get = entry.get
                uami = create(ctx, group, entry["name"], location=get("location"), tags=get("tags") or {},
                              principal_id=get("principalId"), client_id=get("clientId"), existing=existing, in_use=in_use,
                              isolation_scope=get("isolationScope"))
                uamis[key] = uami
                wanted = get("federatedCredentials")
                if wanted or (existing is not None and self.prune):  # nothing to do for the others
                    self._credentials(uami, wanted or [], credentials.get(uami.pk, []) if existing else [])
                plan.add("create" if existing is None else "update" if ctx.changes > before else "unchanged",
                         "userAssignedIdentity", uami.arm_id)
            except MiError as exc:
                self._failed(_Where("userAssignedIdentities", i, entry), exc, entry, "identity", entry["name"])
            progress(1)

    def _credentials(self, uami: Any, wanted: list[dict[str, Any]], have: list[Any]) -> None:
        """The identity's federated credentials as declared; others go only with --prune."""
        current = list(have)
        for c in wanted:
            self.declared_issuer_refs.setdefault(c["issuer"], f"{uami.arm_id}/federatedIdentityCredentials/{c['name']}")
            fic = federated.create(self.ctx, uami, c["name"], issuer=c["issuer"], subject=c["subject"], audiences=c.get("audiences"),
                                   description=c.get("description"), current=current)
            current = [f for f in current if f.name_key != fic.name_key] + [fic]
        if self.prune:
            names = {ids.key(c["name"]) for c in wanted}
            for f in have:
                if f.name_key not in names:
                    federated.delete(self.ctx, uami, f.name)

    def _reference(self, ref: Any, group: _Group) -> identities.Reference:
        """A user-assigned reference: a live identity by name or id, or, with its ids given, a
        reference to a deleted one (as exports write dangling references)."""
        if isinstance(ref, dict):
            uami = self.uamis.get(ids.key(ref["id"]))
            if uami is not None and uami.principal_id == ref["principalId"].casefold():
                return identities.Reference(uami.id_key, uami.arm_id, uami.principal_id, uami.client_id)
            return identities.Reference(ids.key(ref["id"]), ref["id"], ref["principalId"].casefold(), ref["clientId"].casefold())
        arm_id = ref if ref.startswith("/") else ids.uami_id(group.subscription_id, group.name, ref)
        uami = self.uamis.get(ids.key(arm_id))
        if uami is None:
            raise identities.invalid_reference(arm_id)
        return identities.Reference(uami.id_key, uami.arm_id, uami.principal_id, uami.client_id)

    def _resources(self, entries: list[dict[str, Any]]) -> None:
        s = self.ctx.session
        index: dict[str, Any] = {r.id_key: r for r in s.exec(select(Resource)).all()}
        attached: dict[int, list[Attachment]] = {}
        for a in s.exec(select(Attachment)).all():
            attached.setdefault(a.resource_pk, []).append(a)
        # read once and held (the session's identity map keeps only weak references): storage.settings
        # then finds an account's row in the session, not by a query
        accounts = s.exec(select(StorageAccount)).all()  # noqa: F841
        self.declared_resources: set[str] = set()
        self.declared_refs: dict[str, str] = {}  # principal of a user-assigned identity -> a declared resource listing it
        self.resource_at: dict[int, Any] = {}  # entry index -> the resource it made, for its secrets
        # parents before their children, whatever order the file lists them in
        order = sorted(range(len(entries)), key=lambda i: _depth(entries[i]["type"]))
        for i in order:
            entry = entries[i]
            where = at("resources", i, entry)
            try:
                group = self._group(entry, where)
                identity = entry.get("identity") or {}
                refs = [self._reference(ref, group) for ref in identity.get("userAssigned") or []]
                rt = catalog().resolve(entry["type"])[0]
                name = entry["name"]
                if rt.parent_type and entry.get("parent"):
                    parent = index.get(ids.key(ids.resource_id(group.subscription_id, group.name, rt.parent_type, entry["parent"])))
                    name = f"{parent.name}/{name}" if parent is not None else name
                key = ids.key(ids.resource_id(group.subscription_id, group.name, rt.type, name))
                if key in self.declared_resources:
                    raise ValidationError("Conflict", f"the resource {entry['name']} is declared twice.")
                self.declared_resources.add(key)
                existing = index.get(key)
                before = self.ctx.changes
                res = resources.create(
                    self.ctx, group, entry["name"], entry["type"], location=entry.get("location"), tags=entry.get("tags") or {},
                    parent=entry.get("parent"), system_assigned=bool(identity.get("systemAssigned")) and existing is None,
                    user_assigned=refs if existing is None else [], principal_id=identity.get("principalId"),
                    client_id=identity.get("clientId"), existing=existing, in_use=self._in_use)
                if existing is not None or identity.get("systemAssigned") is False:
                    res = identities.set_identities(self.ctx, res, system=identity.get("systemAssigned"), user_assigned=refs,
                                                    principal_id=identity.get("principalId"), client_id=identity.get("clientId"),
                                                    current=attached.get(res.pk, []) if existing is not None else [],
                                                    in_use=self._in_use)
                if entry.get("allowSharedKeyAccess") is not None:
                    storage.set_shared_key_access(self.ctx, res, entry["allowSharedKeyAccess"])
                index[key] = res
                for ref in refs:
                    self.declared_refs.setdefault(ref.principal_id, res.arm_id)
                self.resource_at[i] = res
                self.plan.add("create" if existing is None else "update" if self.ctx.changes > before else "unchanged",
                              "resource", res.arm_id)
            except MiError as exc:
                self._failed(where, exc, entry, "resource", entry["name"],
                             f"{entry['parent']}/{entry['name']}" if entry.get("parent") else None)
            self.progress(1)

    def _secrets(self, entries: list[dict[str, Any]]) -> None:
        """Secrets declared under a vault, each through keyvault.declare_secret: unchanged when its latest
        version already says what the file says, else a new version. Secrets the file does not declare
        are left alone, also with --prune: a file written without --include-secrets declares none."""
        for i, entry in enumerate(entries):
            declared = entry.get("secrets")
            if not declared:
                continue
            where = at("resources", i, entry)
            vault = self.resource_at.get(i)
            if vault is None:
                continue  # the vault's entry failed, and said so
            if vault.type != keyvault.VAULT_TYPE:
                self.errors.append(ApplyError("InvalidParameter", self.source, where,
                                              f"only Key Vault vaults ({keyvault.VAULT_TYPE}) hold secrets."))
                continue
            seen: set[str] = set()
            for j, secret in enumerate(declared):
                spot = f"{where}.secrets[{j}] ({secret['name']})"
                if ids.key(secret["name"]) in seen:
                    self.errors.append(ApplyError("Conflict", self.source, spot, "the secret is declared twice."))
                    continue
                seen.add(ids.key(secret["name"]))
                try:
                    _, op = keyvault.declare_secret(
                        self.ctx, vault, secret["name"], secret["value"], content_type=secret.get("contentType"),
                        tags=secret.get("tags"), enabled=secret.get("enabled", True),
                        not_before=keyvault.parse_time(secret.get("notBefore"), "notBefore"),
                        expires=keyvault.parse_time(secret.get("expires"), "expires"))
                    self.plan.add(op, "secret", keyvault.secret_scope(vault, secret["name"]))
                except MiError as exc:
                    self.errors.append(self._fail(spot, exc))

    def _issuers(self, entries: list[dict[str, Any]]) -> None:
        """Simulated issuers through federation.create, as `mi federation issuer create`: a new one makes its
        own signing key; one that exists is kept (another kind is the command's conflict)."""
        existing = set(self.ctx.session.exec(select(FederationIssuer.url)).all())
        self.declared_issuers: set[str] = set()
        for i, entry in enumerate(entries):
            try:
                _once(self.declared_issuers, entry["url"], f"the issuer {entry['url']}")
                self._put("federationIssuer", entry["url"] in existing,
                          lambda: federation.create(self.ctx, entry["url"], entry.get("kind")), lambda f: f.url)
            except MiError as exc:
                self._failed(at("federationIssuers", i, entry), exc, entry, "issuer", entry["url"])

    def _applications(self, entries: list[dict[str, Any]]) -> None:
        """App registrations through apps.create (a new one, with the ids the file gives) or apps.update (what
        differs from the file: identifier URIs, app roles). An entry without ids is the application of that
        display name, as `mi app create` finds it."""
        rows = list(self.ctx.session.exec(select(Application)).all())
        self.apps: dict[str, Any] = {}  # object id and appId -> application
        named: dict[str, list[Any]] = {}
        for a in rows:
            self.apps[a.id] = self.apps[a.app_id] = a
            named.setdefault(a.display_name, []).append(a)
            self.principal_ids.add(a.service_principal_id)
            self.principal_ids.add(a.id)
            self.app_ids.add(a.app_id)
        self.declared_apps: set[str] = set()  # service principal ids
        for i, entry in enumerate(entries):
            where = at("applications", i, entry)
            given = {k: entry[k].casefold() for k in ("id", "appId", "servicePrincipalId") if entry.get(k)}
            app = self.apps.get(given.get("id", "")) or self.apps.get(given.get("appId", ""))
            if app is None and not given and len(named.get(entry["displayName"].strip(), [])) == 1:
                app = named[entry["displayName"].strip()][0]
            before = self.ctx.changes
            try:
                if app is None:
                    app = apps.create(self.ctx, display_name=entry["displayName"], identifier_uris=entry.get("identifierUris"),
                                      app_roles=entry.get("appRoles"), object_id=given.get("id"), app_id=given.get("appId"),
                                      service_principal_id=given.get("servicePrincipalId"), in_use=self._in_use)
                    existed = False
                else:
                    existed = True
                for k, have in (("id", app.id), ("appId", app.app_id), ("servicePrincipalId", app.service_principal_id)):
                    if k in given and given[k] != have:  # `mi app create` found one of that name
                        raise ValidationError("Conflict", f"the application {app.display_name} ({app.id}) has {k} {have}, "
                                              f"not {given[k]}.")
                if existed:
                    if entry["displayName"] != app.display_name:
                        raise ValidationError("Conflict", f"the application {app.id} is named '{app.display_name}'; an "
                                              f"application's display name is not changed by apply.")
                    uris = entry.get("identifierUris") or []
                    wanted_roles = entry.get("appRoles") or []
                    roles_differ = apps.validate_app_roles(wanted_roles, existing=app.app_roles) != list(app.app_roles)
                    apps.update(self.ctx, app, identifier_uris=uris if uris != list(app.identifier_uris) else None,
                                app_roles=wanted_roles if roles_differ else None)
                if app.service_principal_id in self.declared_apps:
                    raise ValidationError("Conflict", f"the application {entry['displayName']} is declared twice.")
            except MiError as exc:
                self._failed(where, exc, entry, "app", entry["displayName"], entry.get("id"), entry.get("appId"))
                self.progress(1)
                continue
            self.declared_apps.add(app.service_principal_id)
            self.apps[app.id] = self.apps[app.app_id] = app
            self.plan.add("create" if not existed else "update" if self.ctx.changes > before else "unchanged",
                          "application", app.id)
            self.progress(1)

    def _app_role_assignments(self, entries: list[dict[str, Any]]) -> None:
        """App roles granted through apps.assign_role, as `mi app role assign`; one already granted is unchanged."""
        held = {(g.principal_id, g.resource_id, g.app_role_id): g.id
                for g in self.ctx.session.exec(select(AppRoleAssignment)).all()}
        self.declared_app_grants: set[str] = set()
        principals_: dict[str, Any] = {}
        resources_: dict[str, Any] = {}
        for i, entry in enumerate(entries):
            try:
                if entry["assignee"] not in principals_:
                    principals_[entry["assignee"]] = apps.principal(self.ctx, entry["assignee"])
                if entry["app"] not in resources_:
                    resources_[entry["app"]] = apps.resource_by_ref(self.ctx, entry["app"])
                who, resource = principals_[entry["assignee"]], resources_[entry["app"]]
                key = (who.id, resource.service_principal_id, apps._role(resource, entry["role"])["id"])
                if held.get(key) in self.declared_app_grants:
                    raise ValidationError("Conflict", "the app role assignment is declared twice.")
                if key in held:
                    self.plan.add("unchanged", "appRoleAssignment", held[key])
                else:
                    held[key] = apps.assign_role(self.ctx, who, resource, entry["role"]).id
                    self.plan.add("create", "appRoleAssignment", held[key])
            except MiError as exc:
                self._failed(at("appRoleAssignments", i, entry), exc, entry, "appRoleAssignment")
                self.progress(1)
                continue
            self.declared_app_grants.add(held[key])
            # what pruning must not take from under it: the principal and the application
            self.declared_app_refs.setdefault(who.id, held[key])
            self.declared_app_refs.setdefault(resource.service_principal_id, held[key])
            self.progress(1)

    def _role_assignments(self, entries: list[dict[str, Any]]) -> None:
        existed = set(self.ctx.session.exec(select(RoleAssignment.name)).all())
        self.declared_assignments: set[str] = set()
        self.declared_scopes: set[str] = set()  # where declared assignments sit: deleting it would take them
        self.declared_grants: dict[str, str] = {}  # assignee principal or role GUID -> a declared assignment using it
        for i, entry in enumerate(entries):
            object_id = bool(entry.get("principalType")) and roles._is_guid(entry["assignee"])
            before = self.ctx.changes
            try:
                ra = assignments.create(self.ctx, entry["assignee"], entry["role"], entry["scope"],
                                        description=entry.get("description"), name=entry.get("name"),
                                        condition=entry.get("condition"), condition_version=entry.get("conditionVersion"),
                                        principal_type=entry["principalType"] if object_id else None, declared=True)
            except MiError as exc:
                self._failed(at("roleAssignments", i, entry), exc, entry, "roleAssignment")
                self.progress(1)
                continue
            if ra.name in self.declared_assignments and (entry.get("name") or "").casefold() != ra.name:
                self.errors.append(ApplyError("Conflict", self.source, at("roleAssignments", i, entry),
                                              "the role assignment is declared twice."))
                self.progress(1)
                continue
            self.declared_assignments.add(ra.name)
            self.declared_scopes.add(ra.scope_key)
            self.declared_grants.setdefault(ra.principal_id, assignments.assignment_id(ra))
            self.declared_grants.setdefault(ra.role_definition_id, assignments.assignment_id(ra))
            self.plan.add("create" if ra.name not in existed else "update" if self.ctx.changes > before else "unchanged",
                          "roleAssignment", assignments.assignment_id(ra))
            existed.add(ra.name)
            self.progress(1)

    # -- prune ----------------------------------------------------------------------------------------

    def _prune(self) -> None:
        """Delete what the file no longer declares (subscriptions and the tenant are kept). A delete
        whose cascade would take something the file declares is refused; the plan lists every
        delete the run made, cascades included, from the activity log it wrote."""
        s = self.ctx.session
        journal: list[tuple[str, str]] = []
        self.ctx.journal = journal
        try:
            for ra in s.exec(select(RoleAssignment)).all():
                if ra.name not in self.declared_assignments:
                    assignments.delete(self.ctx, ids_=[assignments.assignment_id(ra)], sub_id=ra.subscription_id)
            for grant in s.exec(select(AppRoleAssignment)).all():
                if grant.id not in self.declared_app_grants:
                    resource = apps.resource_by_sp_id(self.ctx, grant.resource_id)
                    if resource is not None:
                        apps.delete_assignment(self.ctx, resource, grant.id)
            for app in s.exec(select(Application)).all():
                if app.service_principal_id not in self.declared_apps:
                    self._refuse_dangling(f"the application '{app.display_name}'", app.service_principal_id)
                    self._refuse_dangling(f"the application '{app.display_name}'", None, app.service_principal_id,
                                          self.declared_app_refs)
                    apps.delete(self.ctx, app)
            for res in sorted(s.exec(select(Resource)).all(), key=lambda r: -len(r.arm_id)):
                if res.id_key not in self.declared_resources and s.get(Resource, res.pk) is not None:
                    self._refuse_cascade(res.arm_id, res.id_key, self.declared_resources, self.declared_scopes)
                    self._refuse_dangling(res.arm_id, res.system_principal_id)
                    self._refuse_dangling(res.arm_id, None, res.system_principal_id, self.declared_app_refs)
                    resources.delete_resource(self.ctx, res)
            for uami in s.exec(select(UserAssignedIdentity)).all():
                if uami.id_key not in self.declared_uamis:
                    self._refuse_dangling(uami.arm_id, uami.principal_id, uami.principal_id)
                    self._refuse_dangling(uami.arm_id, None, uami.principal_id, self.declared_app_refs)
                    identities.delete_user_assigned(self.ctx, uami)
            for g in s.exec(select(ResourceGroup)).all():
                if g.pk not in self.declared_group_pks:
                    group_id = ids.group_id(g.subscription_id, g.name)
                    self._refuse_cascade(group_id, ids.key(group_id), self.declared_resources, self.declared_uamis,
                                         self.declared_scopes)
                    groups.delete(self.ctx, g.name, subscription=g.subscription_id)
            for row in s.exec(select(CustomRole)).all():
                if row.id not in self.declared_roles:
                    self._refuse_dangling(f"the custom role '{row.role_name}'", row.id)
                    roles.delete_custom(self.ctx, row.id)
            for issuer in s.exec(select(FederationIssuer)).all():
                if issuer.url not in self.declared_issuers:
                    self._refuse_dangling(f"the issuer {issuer.url}", None, issuer.url, self.declared_issuer_refs)
                    federation.delete(self.ctx, issuer.url)
        finally:
            self.ctx.journal = None
        for operation, target in journal:
            if operation.endswith("/delete"):
                kind = operation.rsplit("/", 1)[0].casefold()
                self.plan.add("delete", DELETED_KINDS.get(kind, "resource"), target)

    def _refuse_cascade(self, target: str, key: str, *declared: set[str]) -> None:
        """Deleting `target` takes everything at or below it (rules 3 and 9): refused if the file
        declares any of that, since the apply would end without what the file says."""
        taken = sorted(k for keys in declared for k in keys if k == key or k.startswith(key + "/"))
        if taken:
            raise ApplyError("PruneConflict", self.source, "--prune",
                             f"deleting {target}, which the file does not declare, would also delete {len(taken)} "
                             f"thing(s) it declares, such as {_shown(taken[0])}; declare {target} too, or drop --prune.")

    def _refuse_dangling(self, target: str, grant_key: str | None, ref_key: str | None = None,
                         refs: dict[str, str] | None = None) -> None:
        """Deleting `target` would leave a declared entry pointing at nothing (an assignment's assignee
        or role, the user-assigned identity a resource lists, an app role grant's principal or application,
        a federated credential's issuer), and the same file could not be applied again."""
        used_by = self.declared_grants.get(grant_key) if grant_key else None
        if used_by is None and ref_key is not None:
            used_by = (self.declared_refs if refs is None else refs).get(ref_key)
        if used_by is not None:
            raise ApplyError("PruneConflict", self.source, "--prune",
                             f"deleting {_shown(target)}, which the file does not declare, would leave {_shown(used_by)}, "
                             f"which it declares, referring to nothing; declare it too, or drop --prune.")


class _Where:
    """An entry's place in the document, formatted only when an error needs it."""

    __slots__ = ("section", "i", "entry")

    def __init__(self, section: str, i: int, entry: dict) -> None:
        self.section, self.i, self.entry = section, i, entry

    def __str__(self) -> str:
        return at(self.section, self.i, self.entry)


def _once(declared: set[Any], key: Any, what: str) -> None:
    """An entry the file already declared would silently replace the first one's values."""
    if key in declared:
        raise ValidationError("Conflict", f"{_shown(what)} is declared twice.")
    declared.add(key)


def _depth(type_text: str) -> int:
    try:
        return catalog().resolve(type_text)[0].type.count("/")
    except MiError:
        return 0  # an unknown type fails at its own entry, with its own error


def _shown(key: str) -> str:
    return key[:200]
