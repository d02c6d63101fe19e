"""Declarative tenants: `apply` a whole file in one transaction (planned against an in-memory index
of the store, new objects written in batches) and `export` the store in the same format."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources as package_files
from typing import Any, Callable

from sqlmodel import func, select

from mi_cli import ids
from mi_cli.catalog import catalog, normalise_location
from mi_cli.errors import MiError, ValidationError
from mi_cli.models import (
    ActivityLog, Attachment, CustomRole, FederatedCredential, Resource, ResourceGroup, RoleAssignment, ServicePrincipal,
    Subscription, Tenant, UserAssignedIdentity,
)
from mi_cli.services import Ctx, assignments, federated, groups, identities, repeat_put, resources, roles, tenancy
from mi_cli.services.validation import check_tags, group_name, resource_name, uami_name

API_VERSION = "mi/v1"
BATCH = 5000


class ApplyError(MiError):
    """An invalid entry: names the file, the path in the document, and what is wrong."""

    def __init__(self, code: str, source: str, path: str, message: str) -> None:
        super().__init__(code, f"{source}: {str(path)}: {message}")


class DryRun(Exception):
    """Raised at the end of a dry run so the transaction rolls back; carries the plan."""

    def __init__(self, plan: "Plan") -> None:
        super().__init__("dry run")
        self.plan = plan


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


def read_document(text: str, source: str) -> Any:
    if text.lstrip().startswith(("{", "[")):
        try:  # JSON is YAML too, but the JSON parser reads a big file many times faster
            return json.loads(text)
        except ValueError:
            pass  # not strict JSON: let the YAML parser read it and say where it fails
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser: much faster on big files
    try:
        doc = yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "the document"
        raise ApplyError("InvalidDocument", source, where, f"not valid YAML or JSON: {getattr(exc, 'problem', exc)}") from None
    if doc is None:
        raise ApplyError("InvalidDocument", source, "the document", "the file is empty.")
    return doc


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    return json.loads(package_files.files("mi_cli.catalog").joinpath("tenant.schema.json").read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def _validator():  # noqa: ANN202
    import fastjsonschema

    # compiled once into Python code: jsonschema's interpreter took 1.5 s on 100,000 entries
    return fastjsonschema.compile(schema())


def check_schema(doc: Any, source: str) -> None:
    from fastjsonschema import JsonSchemaValueException

    try:
        _validator()(doc)
    except JsonSchemaValueException as err:
        parts = [str(p) for p in (err.path or [])[1:]]  # the first is the validator's name for the document
        path = "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in parts).lstrip(".") or "the document"
        at = err.message.find(" must ")
        raise ApplyError("InvalidDocument", source, path, err.message[at + 1:] if at >= 0 else err.message) from None


def _at(section: str, i: int, entry: dict) -> str:
    return f"{section}[{i}] ({entry.get('name') or entry.get('roleName') or entry.get('assignee', '')})"


class Applier:
    def __init__(self, ctx: Ctx, source: str, *, prune: bool = False, dry_run: bool = False,
                 progress: Callable[[int], None] | None = None) -> None:
        self.ctx, self.source, self.prune, self.dry_run = ctx, source, prune, dry_run
        self.progress = progress or (lambda n: None)
        self.plan = Plan()
        self.pending: dict[Any, list[dict[str, Any]]] = {}
        self._group_cache: dict[tuple, Any] = {}
        self._guids: list[str] = []
        self.now = ctx.now()

    # -- helpers --------------------------------------------------------------------------------------

    def _fail(self, where: str, exc: MiError) -> ApplyError:
        return ApplyError(exc.code, self.source, where, exc.message)

    def _log(self, operation: str, target: str, detail: str | None = None) -> None:
        self._buffer(ActivityLog, {"time": self.now, "operation": operation, "target": target, "caller": self.ctx.caller,
                                   "status": "Succeeded", "detail": detail})

    def _insert(self, model, rows: list[dict[str, Any]]) -> None:  # noqa: ANN001
        """executemany on the transaction's own DB-API connection, values converted by each column's
        SQLAlchemy type (looked up once per column): the ORM, or even Core's per-value processing,
        would cost more than the inserts themselves at 100,000 identities."""
        if not rows:
            return
        conn = self.ctx.session.connection()
        table = model.__table__
        columns = [c for c in table.columns if c.name in rows[0]]
        convert = []
        for column in columns:
            process = column.type.bind_processor(conn.dialect)
            if process is not None and column.type.python_type is type(self.now):
                stamp = process(self.now)  # one timestamp for the whole apply: converted once
                process = (lambda p, t: (lambda v: t if v is self.now else p(v)))(process, stamp)
            convert.append(process)
        sql = f"INSERT INTO {table.name} ({', '.join(c.name for c in columns)}) VALUES ({', '.join('?' * len(columns))})"
        cursor = conn.connection.driver_connection.cursor()
        try:
            for start in range(0, len(rows), BATCH):
                cursor.executemany(sql, [
                    tuple(v if p is None or v is None else p(v) for v, p in zip((r[c.name] for c in columns), convert))
                    for r in rows[start:start + BATCH]])
        finally:
            cursor.close()

    # New rows wait in per-table buffers and go to SQLite a batch at a time, parents first, so
    # memory holds the parsed document and the index, not every row of a big file.
    ORDER = (ServicePrincipal, UserAssignedIdentity, FederatedCredential, Resource, Attachment, RoleAssignment, ActivityLog)

    def _buffer(self, model, row: dict[str, Any]) -> None:  # noqa: ANN001
        rows = self.pending.setdefault(model, [])
        rows.append(row)
        if len(rows) >= BATCH:
            self._flush()

    def _flush(self) -> None:
        for model in self.ORDER:
            rows = self.pending.pop(model, None)
            if rows:
                self._insert(model, rows)

    def _next_pk(self, model) -> int:  # noqa: ANN001
        return (self.ctx.session.exec(select(func.max(model.pk))).one() or 0) + 1

    # -- the run --------------------------------------------------------------------------------------

    def run(self, doc: dict[str, Any]) -> Plan:
        s = self.ctx.session
        if s.connection().dialect.name == "sqlite":
            # GUID keys land all over their indexes: a bigger page cache for this connection keeps
            # a 100,000-identity apply from thrashing it (SQLite's default is 2 MB)
            s.connection().exec_driver_sql("PRAGMA cache_size = -262144")
        self._tenant(doc.get("tenant") or {})
        self.subs = self._subscriptions(doc.get("subscriptions") or [])
        self.groups = {(g.subscription_id, g.name_key): g for g in s.exec(select(ResourceGroup)).all()}
        self.declared_groups: set[int] = set()
        self._resource_groups(doc.get("resourceGroups") or [])
        self.declared_roles: set[str] = set()
        self._custom_roles(doc.get("customRoles") or [])
        self.uamis = {u.id_key: u for u in s.exec(select(UserAssignedIdentity)).all()}
        self.principal_ids = set(s.exec(select(ServicePrincipal.id)).all())
        self.app_ids = set(s.exec(select(ServicePrincipal.app_id)).all())
        self.declared_uamis: set[str] = set()
        self._user_assigned(doc.get("userAssignedIdentities") or [])
        self.resources = {r.id_key: r for r in s.exec(select(Resource)).all()}
        self.declared_resources: set[str] = set()
        self._resources(doc.get("resources") or [])
        self.declared_assignments: set[str] = set()
        self._role_assignments(doc.get("roleAssignments") or [])
        self._flush()
        s.flush()
        if self.prune:
            self._prune()
        if self.dry_run:
            raise DryRun(self.plan)
        return self.plan

    def _tenant(self, entry: dict[str, Any]) -> None:
        tenant = tenancy.default_tenant(self.ctx, create=False)
        wanted = entry.get("id")
        if tenant is None:
            tenant = Tenant(id=(wanted or self.ctx.new_guid()).casefold(), display_name=entry.get("displayName", "mi tenant"),
                            is_default=True, created_at=self.now)
            self.ctx.session.add(tenant)
            self.ctx.session.flush()
            self.plan.add("create", "tenant", tenant.id)
        elif wanted and not ids.same(wanted, tenant.id):
            raise ApplyError("TenantMismatch", self.source, "tenant.id",
                             f"the file is for tenant {wanted}, but this store's tenant is {tenant.id}.")
        else:
            self.plan.add("unchanged", "tenant", tenant.id)
        self.tenant = tenant

    def _subscriptions(self, entries: list[dict[str, Any]]) -> dict[str, Subscription]:
        existing = tenancy.list_subscriptions(self.ctx)
        for i, entry in enumerate(entries):
            where = _at("subscriptions", i, entry)
            match = next((x for x in existing if entry.get("id") and ids.same(x.id, entry["id"])), None) or \
                next((x for x in existing if ids.same(x.name, entry["name"])), None)
            if match is None:
                match = Subscription(id=(entry.get("id") or self.ctx.new_guid()).casefold(), tenant_id=self.tenant.id,
                                     name=entry["name"], is_default=not existing, created_at=self.now)
                self.ctx.session.add(match)
                existing.append(match)
                self.plan.add("create", "subscription", ids.subscription_id(match.id))
                self._log("Microsoft.Resources/subscriptions/write", ids.subscription_id(match.id))
            elif entry.get("id") and not ids.same(match.id, entry["id"]):
                raise ApplyError("Conflict", self.source, where, f"a subscription named '{entry['name']}' exists with id {match.id}.")
            else:
                self.plan.add("unchanged", "subscription", ids.subscription_id(match.id))
            if entry.get("default") and not match.is_default:
                for other in existing:
                    other.is_default = other is match
                    self.ctx.session.add(other)
        self.ctx.session.flush()
        if not existing:
            existing.append(tenancy.default_subscription(self.ctx))
        by_ref = {}
        for sub in existing:
            by_ref[ids.key(sub.id)] = sub
            by_ref[ids.key(sub.name)] = sub
        by_ref[""] = next(x for x in existing if x.is_default)
        return by_ref

    def _sub(self, ref: str | None, where: str) -> Subscription:
        sub = self.subs.get(ids.key(ref or ""))
        if sub is None:
            raise ApplyError("SubscriptionNotFound", self.source, where, f"the subscription '{ref}' is neither in the file nor in the store.")
        return sub

    def _group(self, entry: dict[str, Any], where: str):  # noqa: ANN201
        """The group an entry names, as a light record (an ORM object's attributes cost more)."""
        ref = (entry.get("subscription"), entry["resourceGroup"])
        cached = self._group_cache.get(ref)
        if cached is not None:
            return cached
        sub = self._sub(entry.get("subscription"), where)
        group = self.groups.get((sub.id, ids.key(entry["resourceGroup"])))
        if group is None:
            raise ApplyError("ResourceGroupNotFound", self.source, where,
                             f"Resource group '{entry['resourceGroup']}' could not be found (declare it under resourceGroups).")
        record = _Row({"pk": group.pk, "name": group.name, "subscription_id": group.subscription_id, "location": group.location})
        self._group_cache[ref] = record
        return record

    def _resource_groups(self, entries: list[dict[str, Any]]) -> None:
        for i, entry in enumerate(entries):
            where = _at("resourceGroups", i, entry)
            try:
                sub = self._sub(entry.get("subscription"), where)
                group_name(entry["name"])
                location = normalise_location(entry["location"], for_what="resource group")
                tags = check_tags(entry.get("tags") or {})
                existing = self.groups.get((sub.id, ids.key(entry["name"])))
                if existing is None:
                    g = ResourceGroup(subscription_id=sub.id, name=entry["name"], name_key=ids.key(entry["name"]),
                                      location=location, tags=tags, created_at=self.now)
                    self.ctx.session.add(g)
                    self.ctx.session.flush()
                    self.groups[(sub.id, g.name_key)] = g
                    self.plan.add("create", "resourceGroup", ids.group_id(sub.id, g.name))
                    self._log("Microsoft.Resources/resourceGroups/write", ids.group_id(sub.id, g.name))
                else:
                    before = dict(existing.tags)
                    groups.create(self.ctx, existing.name, location, tags=tags, subscription=sub.id)
                    self.plan.add("update" if before != tags else "unchanged", "resourceGroup", ids.group_id(sub.id, existing.name))
                self.declared_groups.add(self.groups[(sub.id, ids.key(entry["name"]))].pk)
            except ApplyError:
                raise
            except MiError as exc:
                raise self._fail(where, exc) from None
            self.progress(1)

    def _custom_roles(self, entries: list[dict[str, Any]]) -> None:
        for i, entry in enumerate(entries):
            where = _at("customRoles", i, entry)
            try:
                current = {r.role_name.casefold(): r for r in roles.all_roles(self.ctx) if r.role_type == "CustomRole"}
                found = current.get(entry["roleName"].casefold())
                if found is None:
                    doc = {"Name": entry["roleName"], "Description": entry.get("description", ""),
                           "Permissions": entry["permissions"], "AssignableScopes": entry["assignableScopes"]}
                    role = roles.create_custom(self.ctx, doc, role_id=entry.get("id"))
                    self.plan.add("create", "customRole", role.guid)
                    self.declared_roles.add(role.guid)
                    continue
                row = self.ctx.session.get(CustomRole, found.guid)
                wanted = [roles.Permission.from_json(p).to_json() for p in entry["permissions"]]
                if row.permissions != wanted or row.assignable_scopes != entry["assignableScopes"] or \
                        row.description != entry.get("description", row.description):
                    row.permissions, row.assignable_scopes = wanted, entry["assignableScopes"]
                    row.description = entry.get("description", row.description)
                    self.ctx.session.add(row)
                    self.plan.add("update", "customRole", row.id)
                else:
                    self.plan.add("unchanged", "customRole", row.id)
                self.declared_roles.add(row.id)
            except MiError as exc:
                raise self._fail(where, exc) from None

    def _new_ids(self, where: str, principal_id: str | None, client_id: str | None) -> tuple[str, str]:
        """Adopted ids (from an export) must be unused; missing ones are made."""
        need = int(not principal_id) + int(not client_id)
        if self.ctx.seed is None:  # draw from a pool: one call for thousands
            if len(self._guids) < need:
                self._guids.extend(self.ctx.new_guids(8192))
            made = iter([self._guids.pop() for _ in range(need)])
        else:  # seeded: exactly as many as used, so a file always gives the same ids
            made = iter(self.ctx.new_guids(need))
        pid, cid = (principal_id or next(made)).casefold(), (client_id or next(made)).casefold()
        if pid in self.principal_ids or cid in self.app_ids:
            raise ApplyError("Conflict", self.source, where, f"the principal {pid} or client {cid} id is in use already.")
        self.principal_ids.add(pid)
        self.app_ids.add(cid)
        return pid, cid

    def _user_assigned(self, entries: list[dict[str, Any]]) -> None:
        pk = self._next_pk(UserAssignedIdentity)
        existing_fics: dict[int, list[FederatedCredential]] = {}
        for f in self.ctx.session.exec(select(FederatedCredential)).all():
            existing_fics.setdefault(f.identity_pk, []).append(f)
        for i, entry in enumerate(entries):
            where = _Where("userAssignedIdentities", i, entry)  # formatted only for an error
            try:
                group = self._group(entry, where)
                uami_name(entry["name"])
                location = normalise_location(entry["location"], for_what=f"resource type '{ids.UAMI_TYPE}'") \
                    if entry.get("location") else group.location
                tags = check_tags(entry.get("tags") or {})
                arm_id = ids.uami_id(group.subscription_id, group.name, entry["name"])
                key = ids.key(arm_id)
                if key in self.declared_uamis:
                    raise ValidationError("Conflict", f"the identity {arm_id} is declared twice.")
                self.declared_uamis.add(key)
                creds = [(c["name"], *federated.validate(c["name"], c["issuer"], c["subject"], c.get("audiences"))[:2])
                         for c in entry.get("federatedCredentials") or []]
                federated.check_set(arm_id, creds)
                existing = self.uamis.get(key)
                if existing is None:
                    pid, cid = self._new_ids(where, entry.get("principalId"), entry.get("clientId"))
                    self._buffer(ServicePrincipal, {"id": pid, "app_id": cid, "tenant_id": self.tenant.id, "display_name": entry["name"],
                                                    "is_explicit": True, "mi_resource_id": arm_id, "created_at": self.now})
                    row = {"pk": pk, "group_pk": group.pk, "name": entry["name"], "name_key": ids.key(entry["name"]),
                           "location": location, "tags": tags, "arm_id": arm_id, "id_key": key, "principal_id": pid,
                           "client_id": cid, "isolation_scope": "None", "created_at": self.now}
                    self._buffer(UserAssignedIdentity, row)
                    self.uamis[key] = _Row(row)
                    for c in entry.get("federatedCredentials") or []:
                        issuer, subject, audiences = federated.validate(c["name"], c["issuer"], c["subject"], c.get("audiences"))
                        self._buffer(FederatedCredential, {"identity_pk": pk, "name": c["name"], "name_key": ids.key(c["name"]), "issuer": issuer,
                                     "subject": subject, "audiences": audiences, "description": c.get("description"),
                                     "created_at": self.now})
                    pk += 1
                    self.plan.add("create", "userAssignedIdentity", arm_id)
                    self._log(f"{ids.UAMI_TYPE}/write", arm_id, detail=f"created with service principal {pid}")
                else:
                    for field_, declared in (("principal_id", entry.get("principalId")), ("client_id", entry.get("clientId"))):
                        if declared and not ids.same(getattr(existing, field_), declared):
                            raise ValidationError("Conflict", f"the identity exists with another {field_.replace('_i', 'I')}; ids cannot change.")
                    if existing.location != location:
                        identities.create_user_assigned(self.ctx, group, existing.name, location=location)  # raises ARM's error
                    changed = existing.tags != tags
                    if changed:
                        identities.update_tags(self.ctx, existing, tags)
                    changed |= self._sync_fics(existing, entry.get("federatedCredentials") or [], existing_fics.get(existing.pk, []))
                    self.plan.add("update" if changed else "unchanged", "userAssignedIdentity", arm_id)
            except ApplyError:
                raise
            except MiError as exc:
                raise self._fail(where, exc) from None
            self.progress(1)
        self._flush()

    def _sync_fics(self, uami: UserAssignedIdentity, wanted: list[dict[str, Any]], have: list[FederatedCredential]) -> bool:
        changed = False
        names = {ids.key(c["name"]) for c in wanted}
        for c in wanted:
            current = next((f for f in have if f.name_key == ids.key(c["name"])), None)
            issuer, subject, audiences = federated.validate(c["name"], c["issuer"], c["subject"], c.get("audiences"))
            if current is None or (current.issuer, current.subject, current.audiences) != (issuer, subject, audiences):
                federated.create(self.ctx, uami, c["name"], issuer=issuer, subject=subject, audiences=audiences,
                                 description=c.get("description"))
                changed = True
        if self.prune:
            for f in have:
                if f.name_key not in names:
                    federated.delete(self.ctx, uami, f.name)
                    changed = True
        return changed

    def _resources(self, entries: list[dict[str, Any]]) -> None:
        pk = self._next_pk(Resource)
        # parents before their children, whatever order the file lists them in
        order = sorted(range(len(entries)), key=lambda i: catalog().resolve(entries[i]["type"])[0].type.count("/")
                       if _known_type(entries[i]["type"]) else 0)
        current_atts: dict[int, list[Attachment]] = {}
        for a in self.ctx.session.exec(select(Attachment)).all():
            current_atts.setdefault(a.resource_pk, []).append(a)
        for i in order:
            entry = entries[i]
            where = _at("resources", i, entry)
            try:
                group = self._group(entry, where)
                rt, kind = catalog().resolve(entry["type"])
                resource_name(entry["name"], rt.name_rule, rt.type)
                full_name = entry["name"]
                if rt.parent_type:
                    if not entry.get("parent"):
                        raise ValidationError("InvalidParameter", f"The type '{rt.type}' is a child type: give its parent.")
                    parent_id = ids.resource_id(group.subscription_id, group.name, rt.parent_type, entry["parent"])
                    if ids.key(parent_id) not in self.resources:
                        raise ValidationError("ParentResourceNotFound", f"The parent '{entry['parent']}' ({rt.parent_type}) does not exist.")
                    full_name = f"{self.resources[ids.key(parent_id)].name}/{entry['name']}"
                location = normalise_location(entry["location"], for_what=f"resource type '{rt.type}'") \
                    if entry.get("location") else group.location
                tags = check_tags(entry.get("tags") or {})
                arm_id = ids.resource_id(group.subscription_id, group.name, rt.type, full_name)
                key = ids.key(arm_id)
                if key in self.declared_resources:
                    raise ValidationError("Conflict", f"the resource {arm_id} is declared twice.")
                self.declared_resources.add(key)
                identity = entry.get("identity") or {}
                want_system = bool(identity.get("systemAssigned")) or rt.system_always_on
                if identity.get("systemAssigned") is False and rt.system_always_on:
                    raise ValidationError("InvalidIdentityType", f"The system-assigned identity of {rt.type} is always on.")
                if want_system:
                    identities.check_system_supported(rt)
                wanted_refs = [self._reference(ref, group) for ref in identity.get("userAssigned") or []]
                if wanted_refs:
                    identities.check_user_assigned(rt, len({r[0] for r in wanted_refs}))
                existing = self.resources.get(key)
                if existing is None:
                    row = {"pk": pk, "group_pk": group.pk, "name": full_name, "name_key": ids.key(full_name), "type": rt.type,
                           "kind": kind, "location": location, "tags": tags, "arm_id": arm_id, "id_key": key,
                           "system_principal_id": None, "created_at": self.now}
                    if want_system:
                        pid, cid = self._new_ids(where, identity.get("principalId"), identity.get("clientId"))
                        row["system_principal_id"] = pid
                        display = full_name.replace("/", "/slots/") if ids.same(rt.type, "Microsoft.Web/sites/slots") else full_name
                        self._buffer(ServicePrincipal, {"id": pid, "app_id": cid, "tenant_id": self.tenant.id, "display_name": display,
                                                        "is_explicit": False, "mi_resource_id": arm_id, "created_at": self.now})
                        self._log("Microsoft.Directory/servicePrincipals/create", pid, detail=arm_id)
                    self._buffer(Resource, row)
                    self.resources[key] = _Row(row)
                    for identity_key, identity_id, pid, cid in _unique(wanted_refs):
                        self._buffer(Attachment, {"resource_pk": pk, "identity_id": identity_id, "identity_key": identity_key,
                                     "principal_id": pid, "client_id": cid, "created_at": self.now})
                    pk += 1
                    self.plan.add("create", "resource", arm_id)
                    self._log(f"{rt.type}/write", arm_id)
                else:
                    self._update_resource(existing, rt, location, tags, want_system, identity, _unique(wanted_refs),
                                          current_atts.get(existing.pk, []))
            except ApplyError:
                raise
            except MiError as exc:
                raise self._fail(where, exc) from None
            self.progress(1)
        self._flush()

    def _reference(self, ref: Any, group: ResourceGroup) -> tuple[str, str, str, str]:
        """(identity key, id, principalId, clientId) of a user-assigned reference: a live identity
        by name or id, or, with its ids given, a reference to a deleted one (as exports write them)."""
        if isinstance(ref, dict):
            arm_id = ref["id"]
            uami = self.uamis.get(ids.key(arm_id))
            if uami is not None and uami.principal_id == ref["principalId"].casefold():
                return uami.id_key, uami.arm_id, uami.principal_id, uami.client_id
            return ids.key(arm_id), arm_id, ref["principalId"].casefold(), ref["clientId"].casefold()
        arm_id = ref if ref.startswith("/") else ids.uami_id(group.subscription_id, group.name, ref)
        uami = self.uamis.get(ids.key(arm_id))
        if uami is None:
            raise identities.invalid_reference(arm_id)
        return uami.id_key, uami.arm_id, uami.principal_id, uami.client_id

    def _update_resource(self, res: Resource, rt, location: str, tags: dict, want_system: bool, identity: dict,  # noqa: ANN001
                         wanted: list[tuple[str, str, str, str]], have: list[Attachment]) -> None:
        changed = False
        if res.location != location:
            repeat_put(self.ctx, res, location=location, tags=None, group_name=ids.parse(res.arm_id).group, operation="")
        if res.tags != tags:
            res.tags = tags
            self.ctx.session.add(res)
            changed = True
        if want_system and not res.system_principal_id:
            identities.enable_system(self.ctx, res)
            changed = True
        elif not want_system and res.system_principal_id:
            identities.disable_system(self.ctx, res)
            changed = True
        elif want_system and identity.get("principalId") and not ids.same(identity["principalId"], res.system_principal_id):
            raise ValidationError("Conflict", "the system-assigned identity exists with another principalId; ids cannot change.")
        by_key = {a.identity_key: a for a in have}
        wanted_keys = {w[0] for w in wanted}
        for key, arm_id, pid, cid in wanted:
            att = by_key.get(key)
            if att is None:
                self.ctx.session.add(Attachment(resource_pk=res.pk, identity_id=arm_id, identity_key=key, principal_id=pid,
                                                client_id=cid, created_at=self.now))
                changed = True
            elif att.principal_id != pid:
                att.principal_id, att.client_id = pid, cid
                self.ctx.session.add(att)
                changed = True
        for att in have:
            if att.identity_key not in wanted_keys:
                self.ctx.session.delete(att)
                changed = True
        if changed:
            self._log(f"{res.type}/write", res.arm_id)
        self.plan.add("update" if changed else "unchanged", "resource", res.arm_id)

    def _role_assignments(self, entries: list[dict[str, Any]]) -> None:
        s = self.ctx.session
        s.flush()
        by_triple = {(ra.principal_id, ra.role_definition_id, ra.scope_key): ra for ra in s.exec(select(RoleAssignment)).all()}
        by_name = {ra.name: ra for ra in by_triple.values()}
        per_sub: dict[str, int] = {}
        for ra in by_triple.values():
            per_sub[ra.subscription_id] = per_sub.get(ra.subscription_id, 0) + 1
        for i, entry in enumerate(entries):
            where = _at("roleAssignments", i, entry)
            try:
                role = roles.find(self.ctx, entry["role"])
                scope = assignments.resolve_scope(self.ctx, entry["scope"])
                if entry.get("principalType") and roles._is_guid(entry["assignee"]):
                    principal_id = entry["assignee"].casefold()  # az's --assignee-object-id: no directory lookup
                else:
                    principal_id = assignments.resolve_principal(self.ctx, entry["assignee"]).id
                if not assignments._assignable(role, scope.id):
                    raise ValidationError("InvalidRoleAssignmentScope", f"The role '{role.role_name}' is not assignable at '{scope.id}'.")
                triple = (principal_id, role.guid, ids.key(scope.id))
                found = by_triple.get(triple)
                name = (entry.get("name") or "").casefold()
                if name and name in by_name and by_name[name] is not found:
                    raise ValidationError("RoleAssignmentUpdateNotPermitted",
                                          "Tenant ID, application ID, principal ID, and scope are not allowed to be updated.")
                if found is not None:
                    if name and found.name != name:
                        raise ValidationError("RoleAssignmentExists", "The role assignment already exists.")
                    if entry.get("description") is not None and found.description != entry["description"]:
                        found.description = entry["description"]
                        s.add(found)
                        self.plan.add("update", "roleAssignment", assignments.assignment_id(found))
                    else:
                        self.plan.add("unchanged", "roleAssignment", assignments.assignment_id(found))
                    self.declared_assignments.add(found.name)
                    continue
                if per_sub.get(scope.subscription.id, 0) >= assignments.LIMIT_PER_SUBSCRIPTION:
                    raise ValidationError("RoleAssignmentLimitExceeded", "No more role assignments can be created "
                                          f"(limit {assignments.LIMIT_PER_SUBSCRIPTION}) (code: RoleAssignmentLimitExceeded).")
                per_sub[scope.subscription.id] = per_sub.get(scope.subscription.id, 0) + 1
                row = {"name": name or self.ctx.new_guid(), "scope": scope.id, "scope_key": ids.key(scope.id),
                       "subscription_id": scope.subscription.id, "principal_id": principal_id,
                       "principal_type": entry.get("principalType", "ServicePrincipal"), "role_definition_id": role.guid,
                       "description": entry.get("description"), "created_at": self.now, "created_by": self.ctx.caller}
                self._buffer(RoleAssignment, row)
                ra = _Row(row)
                by_triple[triple] = by_name[row["name"]] = ra
                self.declared_assignments.add(row["name"])
                self.plan.add("create", "roleAssignment", assignments.assignment_id(ra))
                self._log(f"{assignments.ASSIGNMENT_TYPE}/write", assignments.assignment_id(ra))
            except ApplyError:
                raise
            except MiError as exc:
                raise self._fail(where, exc) from None
            self.progress(1)
        self._flush()

    def _prune(self) -> None:
        """Delete what the file no longer declares (subscriptions and the tenant are kept)."""
        s = self.ctx.session
        for ra in s.exec(select(RoleAssignment)).all():
            if ra.name not in self.declared_assignments:
                s.delete(ra)
                self.plan.add("delete", "roleAssignment", assignments.assignment_id(ra))
        s.flush()
        for res in sorted(s.exec(select(Resource)).all(), key=lambda r: -len(r.arm_id)):
            if res.id_key not in self.declared_resources and s.get(Resource, res.pk) is not None:
                resources.delete_resource(self.ctx, res)
                self.plan.add("delete", "resource", res.arm_id)
        for uami in s.exec(select(UserAssignedIdentity)).all():
            if uami.id_key not in self.declared_uamis:
                identities.delete_user_assigned(self.ctx, uami)
                self.plan.add("delete", "userAssignedIdentity", uami.arm_id)
        for g in s.exec(select(ResourceGroup)).all():
            if g.pk not in self.declared_groups:
                sub = self.ctx.session.get(Subscription, g.subscription_id)
                groups.delete(self.ctx, g.name, subscription=sub.id)
                self.plan.add("delete", "resourceGroup", ids.group_id(sub.id, g.name))
        for row in s.exec(select(CustomRole)).all():
            if row.id not in self.declared_roles:
                roles.delete_custom(self.ctx, row.id)
                self.plan.add("delete", "customRole", row.id)


class _Where:
    """An entry's place in the document, formatted only when an error needs it."""

    __slots__ = ("section", "i", "entry")

    def __init__(self, section: str, i: int, entry: dict) -> None:
        self.section, self.i, self.entry = section, i, entry

    def __str__(self) -> str:
        return _at(self.section, self.i, self.entry)


class _Row:
    """What the index needs of a row written in bulk: its columns as attributes, nothing more."""

    __slots__ = ("__dict__",)

    def __init__(self, row: dict[str, Any]) -> None:
        self.__dict__.update(row)


def _known_type(text: str) -> bool:
    try:
        catalog().resolve(text)
        return True
    except MiError:
        return False


def _unique(refs: list[tuple[str, str, str, str]]) -> list[tuple[str, str, str, str]]:
    seen, out = set(), []
    for ref in refs:
        if ref[0] not in seen:
            seen.add(ref[0])
            out.append(ref)
    return out


def count_entries(doc: dict[str, Any]) -> int:
    return sum(len(doc.get(k) or []) for k in ("resourceGroups", "userAssignedIdentities", "resources", "roleAssignments"))


# --- export ------------------------------------------------------------------------------------------


def export(ctx: Ctx) -> dict[str, Any]:
    """The whole tenant in the file format (not the activity log, not signing keys)."""
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

    def placed(group_pk: int) -> dict[str, str]:
        g = group_by_pk[group_pk]
        return {"resourceGroup": g.name, "subscription": sub_name[g.subscription_id]}

    def uami_entry(u: UserAssignedIdentity) -> dict[str, Any]:
        entry = {"name": u.name, **placed(u.group_pk), "location": u.location, "tags": u.tags,
                 "principalId": u.principal_id, "clientId": u.client_id}
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
        return entry

    custom = [r for r in roles.all_roles(ctx) if r.role_type == "CustomRole"]
    role_names = roles.by_guid(ctx)
    return {
        "apiVersion": API_VERSION,
        "tenant": {"id": tenant.id, "displayName": tenant.display_name},
        "subscriptions": [{"name": x.name, "id": x.id, "default": x.is_default} for x in subs],
        "resourceGroups": [{"name": g.name, "subscription": sub_name[g.subscription_id], "location": g.location, "tags": g.tags}
                           for g in group_rows],
        "customRoles": [{"id": r.guid, "roleName": r.role_name, "description": r.description,
                         "permissions": [p.to_json() for p in r.permissions], "assignableScopes": list(r.assignable_scopes)}
                        for r in custom],
        "userAssignedIdentities": [uami_entry(u) for u in uami_rows],
        "resources": [resource_entry(r) for r in s.exec(select(Resource).order_by(Resource.id_key)).all()],
        "roleAssignments": [
            {"name": ra.name, "assignee": ra.principal_id, "principalType": ra.principal_type,
             "role": role_names[ra.role_definition_id].role_name if ra.role_definition_id in role_names else ra.role_definition_id,
             "scope": ra.scope, **({"description": ra.description} if ra.description else {})}
            for ra in s.exec(select(RoleAssignment).order_by(RoleAssignment.scope_key, RoleAssignment.name)).all()],
    }


def reset(ctx: Ctx) -> dict[str, int]:
    """Empty the store: every object, the tenant, its keys and the activity log; the schema stays."""
    from sqlmodel import delete

    from mi_cli.models import EndpointSecret, Meta, SigningKey

    counts = {}
    for model in (RoleAssignment, Attachment, FederatedCredential, EndpointSecret, Resource, UserAssignedIdentity,
                  ServicePrincipal, ResourceGroup, CustomRole, ActivityLog, SigningKey, Subscription, Tenant):
        counts[model.__tablename__] = ctx.session.execute(delete(model)).rowcount
    ctx.session.execute(delete(Meta).where(Meta.key == "guid_counter"))
    return counts
