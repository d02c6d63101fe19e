"""Tenant files with app registrations (and their app role assignments), federation issuers and storage
accounts' allowSharedKeyAccess: exported, applied through the commands' services, pruned, dry-run."""

from __future__ import annotations

import json

import pytest

from tests.conftest import dump, one_error

ROLES = [{"allowedMemberTypes": ["Application"], "description": "Read orders", "displayName": "Read", "value": "Orders.Read"}]
GITHUB = "https://token.actions.githubusercontent.com"
CLUSTER = "https://cluster.example.com/"


@pytest.fixture
def tenant(ok, mi, db, tmp_path):
    """A store built by the commands, and its export (JSON) in a file."""
    ok("group", "create", "-n", "rg", "-l", "westeurope")
    ok("identity", "create", "-g", "rg", "-n", "worker")
    ok("resource", "create", "-g", "rg", "-n", "stacct01", "--type", "storage")
    ok("resource", "create", "-g", "rg", "-n", "stacct02", "--type", "storage")
    ok("resource", "create", "-g", "rg", "-n", "kv-01", "--type", "keyvault")
    ok("storage", "account", "update", "-g", "rg", "-n", "stacct01", "--allow-shared-key-access", "false")
    ok("federation", "issuer", "create", "--issuer", GITHUB)
    ok("federation", "issuer", "create", "--issuer", CLUSTER, "--kind", "kubernetes")
    ok("app", "create", "--display-name", "orders-api", "--identifier-uris", "api://orders", "--app-roles", json.dumps(ROLES))
    ok("app", "create", "--display-name", "orders-client")
    ok("app", "role", "assign", "--assignee", "worker", "--app", "orders-api", "--role", "Orders.Read")
    ok("app", "role", "assign", "--assignee", "orders-client", "--app", "orders-api", "--role", "Orders.Read")
    ok("app", "role", "assign", "--assignee", "worker", "--app", "Microsoft Graph", "--role", "User.Read.All")
    assert mi("app", "credential", "reset", "--id", "api://orders", "-o", "json").code == 0
    path = tmp_path / "tenant.json"
    assert mi("export", "-o", "json", "-f", str(path)).code == 0
    return path


def load(path):
    return json.loads(path.read_text())


def save(path, doc):
    path.write_text(json.dumps(doc))
    return path


def plan(mi, path, *args):
    r = mi("apply", "-f", str(path), "-o", "json", *args)
    assert r.code == 0, r.err
    return [c for c in r.json if c["op"] != "unchanged"]


def test_export_writes_the_new_kinds_sorted_without_secrets_or_keys(tenant, mi):
    doc = load(tenant)
    assert [(i["url"], i["kind"]) for i in doc["federationIssuers"]] == [(CLUSTER, "kubernetes"), (GITHUB, "github")]
    assert [a["displayName"] for a in doc["applications"]] == ["orders-api", "orders-client"]
    api = doc["applications"][0]
    assert api["identifierUris"] == ["api://orders"] and [r["value"] for r in api["appRoles"]] == ["Orders.Read"]
    assert set(api) == {"displayName", "id", "appId", "servicePrincipalId", "identifierUris", "appRoles"}
    grants = doc["appRoleAssignments"]
    assert len(grants) == 3 and grants == sorted(grants, key=lambda g: (g["app"], g["assignee"], g["role"]))
    assert {g["role"] for g in grants} == {"Orders.Read", "User.Read.All"}
    assert [(r["name"], r.get("allowSharedKeyAccess")) for r in doc["resources"] if "stacct" in r["name"]] == \
        [("stacct01", False), ("stacct02", None)]
    text = tenant.read_text()
    assert "PRIVATE" not in text and "secret" not in text.casefold() and "key1" not in text
    with_secrets = mi("export", "-o", "json", "--include-secrets")  # app secrets: the store holds only their hashes
    assert with_secrets.code == 0 and "passwordCredentials" not in with_secrets.out and "hint" not in with_secrets.out
    again = mi("export", "-o", "json")
    assert json.loads(again.out) == doc  # stable


def test_export_reset_apply_gives_the_same_tenant_and_again_changes_nothing(tenant, ok, mi, db):
    issuer_kid = {i["issuer"]: i["kid"] for i in ok("federation", "issuer", "list")}
    assert mi("reset", "--yes").code == 0
    made = json.loads(mi("apply", "-f", str(tenant), "-o", "json").out)
    ops = {(c["kind"], c["op"]) for c in made}
    assert {("federationIssuer", "create"), ("application", "create"), ("appRoleAssignment", "create")} <= ops
    assert json.loads(mi("export", "-o", "json").out) == load(tenant)
    # the issuers have keys of their own, not the exporting store's
    assert all(issuer_kid[i["issuer"]] != i["kid"] for i in ok("federation", "issuer", "list"))
    assert ok("storage", "account", "show", "-g", "rg", "-n", "stacct01")["allowSharedKeyAccess"] is False
    assert ok("storage", "account", "show", "-g", "rg", "-n", "stacct02")["allowSharedKeyAccess"] is None
    assert plan(mi, tenant) == []


def test_dry_run_of_a_fresh_store_plans_every_create_and_changes_nothing(tenant, mi, db):
    assert mi("reset", "--yes").code == 0
    before = dump(db)
    r = mi("apply", "-f", str(tenant), "--dry-run", "-o", "json")
    assert r.code == 0, r.err
    kinds = [(c["kind"], c["op"]) for c in r.json]
    assert kinds.count(("federationIssuer", "create")) == 2
    assert kinds.count(("application", "create")) == 2
    assert kinds.count(("appRoleAssignment", "create")) == 3
    assert dump(db) == before


def _cli_error(mi, *args):
    r = mi(*args)
    assert r.code != 0
    return r.err.split(") ", 1)[1].splitlines()[0]


@pytest.mark.parametrize("change, code, command", [
    # the schema's errors
    (lambda d: d["applications"][0].pop("displayName"), "InvalidDocument", None),
    (lambda d: d["applications"][0]["appRoles"][0].update(allowedMemberTypes=["Robot"]), "InvalidDocument", None),
    (lambda d: d["federationIssuers"][0].update(kind="gitlab"), "InvalidDocument", None),
    (lambda d: d["appRoleAssignments"][0].pop("role"), "InvalidDocument", None),
    (lambda d: d["resources"][0].update(allowSharedKeyAccess="no"), "InvalidDocument", None),
    # the services' errors, as the commands print them
    (lambda d: d["applications"].append({"displayName": "bad", "appRoles": [{**ROLES[0], "value": "Orders Read"}]}),
     "Request_BadRequest", ("app", "create", "--display-name", "bad", "--app-roles", json.dumps([{**ROLES[0], "value": "Orders Read"}]))),
    (lambda d: d["applications"].append({"displayName": "graphy", "identifierUris": ["https://graph.microsoft.com"]}),
     "Request_BadRequest", ("app", "create", "--display-name", "graphy", "--identifier-uris", "https://graph.microsoft.com")),
    (lambda d: d["federationIssuers"].append({"url": "http://insecure.example.com"}),
     "InvalidArgumentValue", ("federation", "issuer", "create", "--issuer", "http://insecure.example.com")),
    (lambda d: d["federationIssuers"][0].update(kind="github"),
     "IssuerExists", ("federation", "issuer", "create", "--issuer", CLUSTER, "--kind", "github")),
    (lambda d: d["appRoleAssignments"][0].update(role="Orders.Delete"),
     "Request_BadRequest", None),
    (lambda d: next(r for r in d["resources"] if r["name"] == "kv-01").update(allowSharedKeyAccess=False),
     "InvalidResourceType", None),
])
def test_a_bad_entry_is_refused_and_changes_nothing(tenant, mi, db, change, code, command):
    doc = load(tenant)
    change(doc)
    save(tenant, doc)
    before = dump(db)
    r = mi("apply", "-f", str(tenant))
    assert r.code == 1 and one_error(r.err), r.err
    assert f"({code}) tenant.json: " in r.err
    assert dump(db) == before
    if command:
        assert _cli_error(mi, *command) in r.err  # the same sentence as the command's
        assert dump(db) == before


def test_an_application_declared_with_ids_in_use_is_refused(tenant, mi, db):
    doc = load(tenant)
    taken = doc["userAssignedIdentities"][0]["principalId"]  # a managed identity's service principal
    doc["applications"].append({"displayName": "copy", "servicePrincipalId": taken})
    save(tenant, doc)
    before = dump(db)
    r = mi("apply", "-f", str(tenant))
    assert r.code == 1 and "(Request_BadRequest)" in r.err and "applications[2] (copy)" in r.err
    assert dump(db) == before


def _prune(mi, db, path):
    """--prune --dry-run plans the deletes and changes nothing; then --prune makes them. Its plan's changes."""
    before = dump(db)
    dry = plan(mi, path, "--prune", "--dry-run")
    assert dump(db) == before
    assert plan(mi, path, "--prune") == dry
    return {(c["kind"], c["op"]) for c in dry}


def test_prune_deletes_an_application_no_longer_declared(tenant, mi, db, ok):
    doc = load(tenant)
    client = doc["applications"].pop(1)
    doc["appRoleAssignments"] = [g for g in doc["appRoleAssignments"] if g["assignee"] != client["servicePrincipalId"]]
    changes = _prune(mi, db, save(tenant, doc))
    assert changes == {("application", "delete"), ("servicePrincipal", "delete"), ("appRoleAssignment", "delete")}
    assert [a["displayName"] for a in ok("app", "list")] == ["orders-api"]
    assert plan(mi, tenant, "--prune") == []


def test_prune_refuses_an_application_a_declared_grant_still_names(tenant, mi, db):
    doc = load(tenant)
    doc["applications"].pop(0)  # orders-api: two declared grants are of its role
    save(tenant, doc)
    before = dump(db)
    for args in (("--prune", "--dry-run"), ("--prune",)):
        r = mi("apply", "-f", str(tenant), *args)
        assert r.code == 1 and "(PruneConflict)" in r.err and "orders-api" in r.err
    assert dump(db) == before


def test_prune_deletes_an_app_role_assignment_no_longer_declared(tenant, mi, db, ok):
    doc = load(tenant)
    graph = [g for g in doc["appRoleAssignments"] if g["role"] == "User.Read.All"]
    doc["appRoleAssignments"] = [g for g in doc["appRoleAssignments"] if g["role"] != "User.Read.All"]
    assert _prune(mi, db, save(tenant, doc)) == {("appRoleAssignment", "delete")}
    assert len(ok("app", "role", "list")) == 2 and graph
    assert plan(mi, tenant) == []  # and without --prune, nothing is undone


def test_prune_deletes_an_issuer_no_longer_declared_unless_a_credential_names_it(tenant, mi, db, ok):
    doc = load(tenant)
    doc["federationIssuers"] = [i for i in doc["federationIssuers"] if i["url"] != GITHUB]
    uami = doc["userAssignedIdentities"][0]
    uami["federatedCredentials"] = [{"name": "main", "issuer": GITHUB, "subject": "repo:org/app:ref:refs/heads/main"}]
    save(tenant, doc)
    before = dump(db)
    r = mi("apply", "-f", str(tenant), "--prune")
    assert r.code == 1 and "(PruneConflict)" in r.err and GITHUB in r.err
    assert dump(db) == before
    uami.pop("federatedCredentials")
    assert _prune(mi, db, save(tenant, doc)) == {("federationIssuer", "delete")}
    assert [i["issuer"] for i in ok("federation", "issuer", "list")] == [CLUSTER]


def test_shared_key_access_is_updated_and_a_dry_run_only_plans_it(tenant, mi, db, ok):
    doc = load(tenant)
    account = next(r for r in doc["resources"] if r["name"] == "stacct01")
    account["allowSharedKeyAccess"] = True
    save(tenant, doc)
    before = dump(db)
    dry = plan(mi, tenant, "--dry-run")
    assert [(c["kind"], c["op"], c["id"].rsplit("/", 1)[1]) for c in dry] == [("resource", "update", "stacct01")]
    assert dump(db) == before
    assert plan(mi, tenant) == dry
    assert ok("storage", "account", "show", "-g", "rg", "-n", "stacct01")["allowSharedKeyAccess"] is True
    # an entry that leaves it out keeps the account's setting, --prune included (the property is not an object)
    account.pop("allowSharedKeyAccess")
    assert plan(mi, save(tenant, doc), "--prune") == []
    assert ok("storage", "account", "show", "-g", "rg", "-n", "stacct01")["allowSharedKeyAccess"] is True


def test_an_application_changed_by_the_file_is_updated(tenant, mi, ok):
    doc = load(tenant)
    doc["applications"][0]["identifierUris"] = ["api://orders", "api://orders-v2"]
    changes = plan(mi, save(tenant, doc))
    assert [(c["kind"], c["op"]) for c in changes] == [("application", "update")]
    assert ok("app", "show", "--id", "api://orders-v2")["displayName"] == "orders-api"
