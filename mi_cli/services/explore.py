"""Seeing a tenant's identities: the tree, the identity graph, and what `mi doctor` finds."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlmodel import select

from mi_cli import ids
from mi_cli.catalog import catalog
from mi_cli.models import (Attachment, FederatedCredential, Resource, ResourceGroup, RoleAssignment, ServicePrincipal,
                           Subscription, UserAssignedIdentity)
from mi_cli.services import Ctx, assignments, federated, federation, roles
from mi_cli.services.tenancy import default_tenant

LIFETIME_NOTE = "lives and dies with {name}"
DATA_TARGETS = {"microsoft.keyvault/vaults": "Key Vault Secrets User", "microsoft.storage/storageaccounts": "Storage Blob Data Reader"}
CONTROL_ROLES = {"Owner", "Contributor"}


@dataclass
class Picture:
    """Everything about identities, read once: the views below never query again."""

    tenant_id: str | None
    subscriptions: list[Subscription]
    groups: list[ResourceGroup]
    resources: list[Resource]
    uamis: list[UserAssignedIdentity]
    attachments: list[Attachment]
    principals: dict[str, ServicePrincipal]
    assignments: list[RoleAssignment]
    role_names: dict[str, str]
    by_resource: dict[int, list[Attachment]] = field(default_factory=dict)
    uami_by_key: dict[str, UserAssignedIdentity] = field(default_factory=dict)
    holders: dict[str, list[Resource]] = field(default_factory=dict)
    credentials: list[FederatedCredential] = field(default_factory=list)  # federated, of every user-assigned identity
    held_issuers: frozenset[str] = frozenset()  # the issuer URLs mi holds keys for

    def __post_init__(self) -> None:
        res_by_pk = {r.pk: r for r in self.resources}
        self.uami_by_key = {u.id_key: u for u in self.uamis}
        holders: dict[str, list[Resource]] = defaultdict(list)
        for att in self.attachments:
            self.by_resource.setdefault(att.resource_pk, []).append(att)
            if self.is_live(att):
                holders[att.identity_key].append(res_by_pk[att.resource_pk])
        self.holders = dict(holders)

    def is_live(self, att: Attachment) -> bool:
        uami = self.uami_by_key.get(att.identity_key)
        return uami is not None and uami.principal_id == att.principal_id


def _rows(ctx: Ctx, model, *order) -> list:  # noqa: ANN001
    """Every row of a table as read-only rows with the model's column attributes: the views only read them,
    and an ORM object a row cost most of `mi tree` and `mi doctor` at 50,000 identities."""
    return list(ctx.session.connection().execute(select(model.__table__).order_by(*order)).all())


def load(ctx: Ctx) -> Picture:
    s = ctx.session
    tenant = default_tenant(ctx, create=False)
    return Picture(
        tenant.id if tenant else None,
        list(s.exec(select(Subscription).order_by(Subscription.created_at)).all()),
        list(s.exec(select(ResourceGroup).order_by(ResourceGroup.name_key)).all()),
        _rows(ctx, Resource, Resource.id_key),
        _rows(ctx, UserAssignedIdentity, UserAssignedIdentity.id_key),
        _rows(ctx, Attachment, Attachment.pk),
        {sp.id: sp for sp in _rows(ctx, ServicePrincipal)},
        list(s.exec(select(RoleAssignment).order_by(RoleAssignment.scope_key, RoleAssignment.name)).all()),
        {guid: r.role_name for guid, r in roles.by_guid(ctx).items()},
        credentials=list(s.exec(select(FederatedCredential).order_by(FederatedCredential.identity_pk,
                                                                     FederatedCredential.name_key)).all()),
        held_issuers=frozenset(i.url for i in federation.list_all(ctx)),
    )


def _short(arm_id: str) -> str:
    return arm_id.rstrip("/").rsplit("/", 1)[-1]


# --- the tree ------------------------------------------------------------------------------------


def tree(pic: Picture, *, group: str | None = None) -> dict[str, Any]:
    res_by_group: dict[int, list[Resource]] = defaultdict(list)
    for r in pic.resources:
        res_by_group[r.group_pk].append(r)
    uamis_by_group: dict[int, list[UserAssignedIdentity]] = defaultdict(list)
    for u in pic.uamis:
        uamis_by_group[u.group_pk].append(u)
    subs = []
    for sub in pic.subscriptions:
        groups_out = []
        for g in pic.groups:
            if g.subscription_id != sub.id or (group and not ids.same(g.name, group)):
                continue
            groups_out.append({
                "name": g.name,
                "location": g.location,
                "resources": [_tree_resource(pic, r) for r in res_by_group[g.pk]],
                "userAssignedIdentities": [_tree_uami(pic, u) for u in uamis_by_group[g.pk]],
            })
        if group and not groups_out:
            continue
        subs.append({"id": sub.id, "name": sub.name, "isDefault": sub.is_default, "resourceGroups": groups_out})
    return {"tenantId": pic.tenant_id, "subscriptions": subs}


def _tree_resource(pic: Picture, r: Resource) -> dict[str, Any]:
    system = None
    if r.system_principal_id:
        sp = pic.principals.get(r.system_principal_id)
        system = {"principalId": r.system_principal_id, "clientId": sp.app_id if sp else None,
                  "lifecycle": LIFETIME_NOTE.format(name=r.name)}
    users = []
    for att in pic.by_resource.get(r.pk, []):
        live = pic.is_live(att)
        others = [h.name for h in pic.holders.get(att.identity_key, []) if h.pk != r.pk] if live else []
        users.append({"name": _short(att.identity_id), "id": att.identity_id, "principalId": att.principal_id,
                      "clientId": att.client_id, "status": "ok" if live else "broken",
                      "shared": bool(others), "alsoOn": others})
    return {"name": r.name, "type": r.type, "id": r.arm_id, "systemAssigned": system, "userAssigned": users}


def _tree_uami(pic: Picture, u: UserAssignedIdentity) -> dict[str, Any]:
    on = [h.name for h in pic.holders.get(u.id_key, [])]
    return {"name": u.name, "id": u.arm_id, "principalId": u.principal_id, "clientId": u.client_id, "attachedTo": on,
            "status": "unattached" if not on else "shared" if len(on) > 1 else "attached"}


# --- the graph: sources -> identities -> role assignments -> targets ----------------------------------


def graph(pic: Picture) -> dict[str, Any]:
    nodes: dict[str, dict[str, Any]] = {}
    edges: list[dict[str, Any]] = []
    names = {"R": 0, "SA": 0, "UA": 0, "T": 0, "X": 0}
    by_key: dict[str, str] = {}

    def node(kind: str, key: str, label: str, arm_id: str | None, group: str) -> str:
        if key in by_key:
            return by_key[key]
        names[kind] += 1
        node_id = f"{kind}{names[kind]}"
        by_key[key] = node_id
        nodes[node_id] = {"id": node_id, "kind": group, "label": label, "armId": arm_id}
        return node_id

    principal_node: dict[str, str] = {}
    for r in pic.resources:
        atts = pic.by_resource.get(r.pk, [])
        if not r.system_principal_id and not atts:
            continue
        alias = next(iter(catalog().get(r.type).aliases), r.type.rsplit("/", 1)[-1])
        src = node("R", r.id_key, f"{alias} {r.name}", r.arm_id, "source")
        if r.system_principal_id:
            sa = node("SA", r.system_principal_id, f"system: {r.name}", ids.system_identity_id(r.arm_id), "systemAssigned")
            principal_node[r.system_principal_id] = sa
            edges.append({"from": src, "to": sa, "kind": "has", "label": None, "broken": False})
        for att in atts:
            live = pic.is_live(att)
            ua = node("UA", att.identity_key if live else f"gone:{att.identity_key}:{att.principal_id}",
                      f"user: {_short(att.identity_id)}" + ("" if live else " (deleted)"), att.identity_id,
                      "userAssigned" if live else "missing")
            if live:
                principal_node[att.principal_id] = ua
            edges.append({"from": src, "to": ua, "kind": "uses", "label": None, "broken": not live})
    for u in pic.uamis:
        principal_node.setdefault(u.principal_id, node("UA", u.id_key, f"user: {u.name}", u.arm_id, "userAssigned"))
    for ra in pic.assignments:
        target_res = ra.scope
        parsed = ids.parse(target_res)
        if parsed and parsed.type_name:
            alias = next(iter(_aliases(parsed.type_name)), parsed.type_name.rsplit("/", 1)[-1])
            label = f"{alias} {parsed.name}"
        elif parsed and parsed.group:
            label = f"group {parsed.group}"
        else:
            label = f"subscription {_short(target_res)}"
        tgt = node("T", ids.key(target_res), label, target_res, "target")
        src = principal_node.get(ra.principal_id)
        if src is None:  # the principal is gone: an orphaned assignment (rule 6)
            src = node("X", ra.principal_id, f"Identity not found {ra.principal_id[:8]}", None, "missing")
        edges.append({"from": src, "to": tgt, "kind": "role", "label": pic.role_names.get(ra.role_definition_id, "?"),
                      "broken": src.startswith("X")})
    return {"nodes": list(nodes.values()), "edges": edges}


def _aliases(type_name: str) -> tuple[str, ...]:
    try:
        return catalog().get(type_name).aliases
    except Exception:  # noqa: BLE001 - a scope below a resource may name a sub-type outside the catalog
        return ()


def _label(text: str) -> str:
    return text.replace('"', "#quot;")


def to_mermaid(g: dict[str, Any]) -> str:
    shapes = {"source": ('["', '"]'), "systemAssigned": ('(["', '"])'), "userAssigned": ('(["', '"])'),
              "missing": ('{{"', '"}}'), "target": ('[("', '")]')}
    lines = ["flowchart LR"]
    for title, kinds in (("Sources", ("source",)), ("Identities", ("systemAssigned", "userAssigned", "missing")),
                         ("Targets", ("target",))):
        members = [n for n in g["nodes"] if n["kind"] in kinds]
        if not members:
            continue
        lines.append(f"  subgraph {title.lower()}[{title}]")
        for n in members:
            open_, close = shapes[n["kind"]]
            lines.append(f"    {n['id']}{open_}{_label(n['label'])}{close}")
        lines.append("  end")
    for e in g["edges"]:
        arrow = "-.->" if e["broken"] else "-->"
        if e["label"]:
            arrow = f'-. "{_label(e["label"])}" .->' if e["broken"] else f'-- "{_label(e["label"])}" -->'
        lines.append(f"  {e['from']} {arrow} {e['to']}")
    for n in g["nodes"]:
        if n["kind"] == "missing":
            lines.append(f"  style {n['id']} stroke-dasharray: 5 5")
    return "\n".join(lines) + "\n"


def to_dot(g: dict[str, Any]) -> str:
    shapes = {"source": "box", "systemAssigned": "ellipse", "userAssigned": "ellipse", "missing": "octagon", "target": "cylinder"}

    def q(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = ["digraph identities {", "  rankdir=LR;", "  node [fontname=Helvetica];"]
    for title, kinds in (("sources", ("source",)), ("identities", ("systemAssigned", "userAssigned", "missing")),
                         ("targets", ("target",))):
        members = [n for n in g["nodes"] if n["kind"] in kinds]
        if not members:
            continue
        lines.append(f"  subgraph cluster_{title} {{ label={q(title.capitalize())};")
        for n in members:
            style = ", style=dashed" if n["kind"] == "missing" else ""
            lines.append(f"    {n['id']} [label={q(n['label'])}, shape={shapes[n['kind']]}{style}];")
        lines.append("  }")
    for e in g["edges"]:
        attrs = [f"label={q(e['label'])}"] if e["label"] else []
        if e["broken"]:
            attrs.append("style=dashed")
        lines.append(f"  {e['from']} -> {e['to']}" + (f" [{', '.join(attrs)}]" if attrs else "") + ";")
    lines.append("}")
    return "\n".join(lines) + "\n"


# --- doctor: what Azure leaves to people ---------------------------------------------------------------


def _finding(code: str, severity: str, target: str, message: str, *fix: str) -> dict[str, Any]:
    return {"code": code, "severity": severity, "target": target, "message": message, "fix": list(fix)}


def doctor(pic: Picture) -> list[dict[str, Any]]:
    findings: list[dict[str, Any]] = []
    res_by_pk = {r.pk: r for r in pic.resources}
    for att in pic.attachments:
        if not pic.is_live(att):
            r = res_by_pk[att.resource_pk]
            findings.append(_finding(
                "DanglingUserAssignedIdentity", "warning", r.arm_id,
                f"{r.name} lists the user-assigned identity {_short(att.identity_id)}, which was deleted; it can get no "
                "token for it.",
                f"mi identity remove --resource {r.arm_id} --identities {att.identity_id}"))
    for ra in pic.assignments:
        if ra.principal_id not in pic.principals:
            findings.append(_finding(
                "OrphanedRoleAssignment", "warning", assignments.assignment_id(ra),
                f"The role assignment '{pic.role_names.get(ra.role_definition_id, '?')}' at {ra.scope} belongs to a "
                f"principal that no longer exists ({ra.principal_id}): Identity not found.",
                f"mi role assignment delete --ids {assignments.assignment_id(ra)}"))
    federating = {f.identity_pk for f in pic.credentials}  # in use by workloads elsewhere, though on no resource
    for u in pic.uamis:
        if not pic.holders.get(u.id_key) and u.pk not in federating:
            findings.append(_finding(
                "UnattachedUserAssignedIdentity", "info", u.arm_id,
                f"The user-assigned identity {u.name} is attached to no resource; attach it or delete it.",
                f"mi identity delete --ids {u.arm_id} --yes"))
    granted = {ra.principal_id for ra in pic.assignments}
    for r in pic.resources:
        if r.system_principal_id and r.system_principal_id not in granted and not catalog().get(r.type).system_always_on:
            findings.append(_finding(
                "SystemIdentityWithoutRole", "info", r.arm_id,
                f"The system-assigned identity of {r.name} has no role anywhere: grant it one, or turn it off.",
                f"mi identity remove --resource {r.arm_id} --identities '[system]'"))
    for ra in pic.assignments:
        role = pic.role_names.get(ra.role_definition_id)
        parsed = ids.parse(ra.scope)
        data_role = DATA_TARGETS.get(parsed.type_name.casefold()) if parsed and parsed.type_name else None
        if role in CONTROL_ROLES and data_role and ra.principal_id in pic.principals:
            has_data_role = any(o.principal_id == ra.principal_id and ids.same(o.scope, ra.scope)
                                and pic.role_names.get(o.role_definition_id) not in CONTROL_ROLES for o in pic.assignments)
            findings.append(_finding(
                "ControlPlaneRoleForDataAccess", "warning", assignments.assignment_id(ra),
                f"'{role}' on {parsed.name} grants control-plane actions only: it cannot read a secret or a blob, and "
                f"manages the {parsed.type_name.rsplit('/', 1)[-1]} itself. For data access grant a data role such as "
                f"'{data_role}'.",
                *([] if has_data_role else [f"mi role assignment create --assignee {ra.principal_id} --role \"{data_role}\" --scope {ra.scope}"]),
                f"mi role assignment delete --ids {assignments.assignment_id(ra)}"))
    for r in pic.resources:
        atts = pic.by_resource.get(r.pk, [])
        if not atts:
            continue
        rt = catalog().get(r.type)
        limit = catalog().user_assigned_limit(rt)
        if len(atts) >= max(1, int(limit * 0.8)):
            spare = next((a for a in atts if not pic.is_live(a)), atts[-1])
            findings.append(_finding(
                "NearUserAssignedLimit", "warning", r.arm_id,
                f"{r.name} holds {len(atts)} of the {limit} user-assigned identities its type allows.",
                f"mi identity remove --resource {r.arm_id} --identities {spare.identity_id}"))
    findings += _federated_findings(pic)
    return findings


def _federated_findings(pic: Picture) -> list[dict[str, Any]]:
    """Federated credentials that no assertion can ever match (or that are unusual), each with its fix."""
    import shlex

    found = []
    uami_by_pk = {u.pk: u for u in pic.uamis}
    for fic in pic.credentials:
        uami = uami_by_pk.get(fic.identity_pk)
        if uami is None:
            continue
        target = f"{uami.arm_id}/federatedIdentityCredentials/{fic.name}"
        which = f"-n {shlex.quote(fic.name)} --identity-name {shlex.quote(uami.arm_id)}"
        for code, severity, text, (change, value) in federated.never_match(
                fic.issuer, fic.subject, list(fic.audiences), pic.held_issuers.__contains__):
            fix = {"issuer": f"mi identity federated-credential update {which} --issuer {shlex.quote(value)}",
                   "audience": f"mi identity federated-credential update {which} --audiences {shlex.quote(value)}",
                   "declare": f"mi federation issuer create --issuer {shlex.quote(value)}",
                   "delete": f"mi identity federated-credential delete {which} --yes"}[change]
            found.append(_finding(code, severity, target, f"The federated credential {fic.name} of {uami.name}: {text}", fix))
    return found
