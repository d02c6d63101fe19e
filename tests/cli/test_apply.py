"""mi apply / export / reset: declarative tenants, idempotent, all or nothing, round-tripping, on either store."""

from __future__ import annotations

import io
import json

import pytest
import yaml

from mi_cli.cli.main import main
from tests.conftest import dump, one_error

pytestmark = pytest.mark.both_stores

TENANT = """
apiVersion: mi/v1
subscriptions:
  - name: prod
resourceGroups:
  - name: rg-app
    location: westeurope
    tags: {env: prod}
  - name: rg-ids
    subscription: prod
    location: northeurope
userAssignedIdentities:
  - name: deployer
    resourceGroup: rg-app
    federatedCredentials:
      - name: main-branch
        issuer: https://token.actions.githubusercontent.com
        subject: repo:org/app:ref:refs/heads/main
  - name: far-away
    resourceGroup: rg-ids
    subscription: prod
resources:
  - name: staging
    type: slot
    parent: web
    resourceGroup: rg-app
    identity: {systemAssigned: true}
  - name: web
    type: webapp
    resourceGroup: rg-app
    identity:
      systemAssigned: true
      userAssigned: [deployer]
  - name: kv-app-01
    type: keyvault
    resourceGroup: rg-app
customRoles:
  - roleName: Secret Lister
    description: Lists secret names
    permissions: [{dataActions: [Microsoft.KeyVault/vaults/secrets/readMetadata/action]}]
    assignableScopes: [/subscriptions/SUB/resourceGroups/rg-app]
roleAssignments:
  - assignee: web
    role: Key Vault Secrets User
    scope: /subscriptions/SUB/resourceGroups/rg-app/providers/Microsoft.KeyVault/vaults/kv-app-01
  - assignee: deployer
    role: Secret Lister
    scope: /subscriptions/SUB/resourceGroups/rg-app
"""


@pytest.fixture
def tenant_file(ok, tmp_path):
    sub = ok("account", "show")["id"]
    path = tmp_path / "tenant.yaml"
    path.write_text(TENANT.replace("SUB", sub))
    return path


def test_apply_creates_everything_and_again_changes_nothing(ok, mi, db, tenant_file):
    r = mi("apply", "-f", str(tenant_file), "-o", "json")
    assert r.code == 0, r.err
    created = json.loads(r.out)
    assert {c["op"] for c in created if c["kind"] != "tenant"} == {"create"}  # the tenant existed already
    assert r.err.startswith("applied: ")
    web = ok("resource", "show", "-g", "rg-app", "-n", "web")
    deployer = ok("identity", "show", "-g", "rg-app", "-n", "deployer")
    assert web["kind"] == "app" and web["identity"]["type"] == "SystemAssigned, UserAssigned"  # web CommonDefinitions.json
    assert list(web["identity"]["userAssignedIdentities"]) == [deployer["id"]]
    assert ok("resource", "show", "-g", "rg-app", "-n", "web/staging")["identity"]["type"] == "SystemAssigned"
    assert ok("identity", "federated-credential", "list", "--identity-name", "deployer", "-g", "rg-app")[0]["name"] == "main-branch"
    assert ok("group", "show", "-n", "rg-ids", "--subscription", "prod")["location"] == "northeurope"
    assert len(ok("role", "assignment", "list", "--all")) == 2
    before = dump(db)
    again = mi("apply", "-f", str(tenant_file), "-o", "json")
    assert again.code == 0 and {c["op"] for c in json.loads(again.out)} == {"unchanged"}
    assert mi("apply", "-f", str(tenant_file), "-o", "table").out == ""  # the table shows changes only
    assert "unchanged" in again.err and "create" not in again.err
    assert ok("identity", "show", "-g", "rg-app", "-n", "deployer") == deployer
    assert ok("resource", "show", "-g", "rg-app", "-n", "web") == web
    assert dump(db).count('INSERT INTO "activity_log"') == before.count('INSERT INTO "activity_log"') > 0


def test_dry_run_prints_the_plan_and_touches_nothing(mi, db, tenant_file):
    before = dump(db)
    r = mi("apply", "-f", str(tenant_file), "--dry-run", "-o", "json")
    assert r.code == 0 and r.err.startswith("plan: ")
    plan = json.loads(r.out)
    kinds = {(c["op"], c["kind"]) for c in plan}
    assert ("create", "userAssignedIdentity") in kinds and ("create", "roleAssignment") in kinds
    assert dump(db) == before


def test_changes_and_prune(ok, mi, tenant_file):
    assert mi("apply", "-f", str(tenant_file)).code == 0
    ok("identity", "create", "-g", "rg-app", "-n", "undeclared")
    doc = yaml.safe_load(tenant_file.read_text())
    doc["resourceGroups"][0]["tags"] = {"env": "staging"}
    doc["resources"][1]["identity"] = {"systemAssigned": False}  # web: no identities any more
    doc["roleAssignments"] = doc["roleAssignments"][1:]
    tenant_file.write_text(yaml.safe_dump(doc))
    plan = json.loads(mi("apply", "-f", str(tenant_file), "--dry-run", "--prune", "-o", "json").out)
    ops = {(c["op"], c["kind"], c["id"].rsplit("/", 1)[-1]) for c in plan}
    assert ("update", "resourceGroup", "rg-app") in ops and ("update", "resource", "web") in ops
    assert ("delete", "userAssignedIdentity", "undeclared") in ops
    assert [c["kind"] for c in plan if c["op"] == "delete"].count("roleAssignment") == 1
    assert mi("apply", "-f", str(tenant_file), "--prune").code == 0
    assert ok("group", "show", "-n", "rg-app")["tags"] == {"env": "staging"}
    assert ok("resource", "show", "-g", "rg-app", "-n", "web")["identity"] is None
    assert [i["name"] for i in ok("identity", "list", "--kind", "user", "-g", "rg-app")] == ["deployer"]
    assert len(ok("role", "assignment", "list", "--all")) == 1


BAD = [
    ("schema: missing name", lambda d: d["userAssignedIdentities"].append({"resourceGroup": "rg-app"}),
     "userAssignedIdentities[2]", "InvalidDocument"),
    ("schema: unknown key", lambda d: d["resources"][0].update(colour="red"), "resources[0]", "InvalidDocument"),
    ("unknown type", lambda d: d["resources"][2].update(type="frobnicator"), "resources[2] (kv-app-01)", "InvalidResourceType"),
    ("bad identity name", lambda d: d["userAssignedIdentities"][0].update(name="x!"), "userAssignedIdentities[0] (x!)", "InvalidResourceName"),
    ("unknown reference", lambda d: d["resources"][1]["identity"].update(userAssigned=["ghost"]), "resources[1] (web)", "InvalidParameter"),
    ("type without UA", lambda d: d["resources"][2].update(identity={"userAssigned": ["deployer"]}), "resources[2] (kv-app-01)", "InvalidIdentityType"),
    ("too many UAs", lambda d: (d["userAssignedIdentities"].append({"name": "second", "resourceGroup": "rg-app"}),
                                d["resources"].append({"name": "flow", "type": "logicapp", "resourceGroup": "rg-app",
                                                       "identity": {"userAssigned": ["deployer", "second"]}})),
     "resources[3] (flow)", "BadRequest"),
    ("a reference that is not an identity", lambda d: d["resources"][1]["identity"].update(
        userAssigned=["/subscriptions/x/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1"]),
     "resources[1] (web)", "InvalidParameter"),
    ("unknown region", lambda d: d["resourceGroups"][0].update(location="atlantis"), "resourceGroups[0] (rg-app)", "LocationNotAvailableForResourceGroup"),
    ("unknown group", lambda d: d["userAssignedIdentities"][0].update(resourceGroup="rg-nope"), "userAssignedIdentities[0] (deployer)", "ResourceGroupNotFound"),
    ("two audiences", lambda d: d["userAssignedIdentities"][0]["federatedCredentials"][0].update(audiences=["a", "b"]),
     "userAssignedIdentities[0] (deployer)", "BadRequest"),
    ("unknown role", lambda d: d["roleAssignments"][0].update(role="Janitor"), "roleAssignments[0] (web)", "RoleDefinitionDoesNotExist"),
    ("declared twice", lambda d: d["userAssignedIdentities"].append(dict(d["userAssignedIdentities"][1])), "userAssignedIdentities[2] (far-away)", "Conflict"),
    # the second entry would silently win over the first (another location, tags or permissions)
    ("group declared twice", lambda d: d["resourceGroups"].append({"name": "RG-APP", "location": "westeurope", "tags": {"env": "dev"}}),
     "resourceGroups[2] (RG-APP)", "Conflict"),
    ("subscription declared twice", lambda d: d["subscriptions"].append({"name": "PROD"}), "subscriptions[1] (PROD)", "Conflict"),
    ("custom role declared twice", lambda d: d["customRoles"].append(dict(d["customRoles"][0], roleName="secret lister",
                                                                          assignableScopes=list(d["customRoles"][0]["assignableScopes"]),
                                                                          permissions=[{"actions": ["*"]}])),
     "customRoles[1] (secret lister)", "Conflict"),
]


@pytest.mark.parametrize("mutate, where, code", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_an_invalid_entry_changes_nothing_and_is_named(mi, db, tenant_file, mutate, where, code):
    doc = yaml.safe_load(tenant_file.read_text())
    mutate(doc)
    tenant_file.write_text(yaml.safe_dump(doc))
    before = dump(db)
    r = mi("apply", "-f", str(tenant_file))
    assert r.code in (1, 3), r.err
    assert r.err.startswith(f"ERROR: ({code}) tenant.yaml: {where}"), r.err
    assert one_error(r.err) and r.out == ""
    assert dump(db) == before


def test_unreadable_files(mi, db, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("resourceGroups: [\n  - name: x\n")
    r = mi("apply", "-f", str(bad))
    assert r.code == 1 and r.err.startswith("ERROR: (InvalidDocument) bad.yaml: line ")
    assert mi("apply", "-f", str(tmp_path / "missing.yaml")).code == 1
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert "the file is empty" in mi("apply", "-f", str(empty)).err


def test_files_that_cannot_be_read_or_written_are_one_line(mi, db, tmp_path):
    binary = tmp_path / "tenant.yaml"
    binary.write_bytes(b"\xff\xfe not text")
    r = mi("apply", "-f", str(binary))
    assert (r.code, r.err) == (1, "ERROR: (InvalidDocument) tenant.yaml: not a text file (YAML and JSON are UTF-8).\n")
    r = mi("export", "-f", str(tmp_path / "no-such-folder" / "out.yaml"))
    assert r.code == 1 and r.err.startswith("ERROR: (FileNotWritable) Cannot write") and one_error(r.err)
    r = mi("export", "-f", str(tmp_path))
    assert r.code == 1 and r.err.startswith("ERROR: (FileNotWritable)")


def test_apply_reads_stdin(db, monkeypatch, capsys):
    doc = {"apiVersion": "mi/v1", "resourceGroups": [{"name": "rg", "location": "eastus"}],
           "userAssignedIdentities": [{"name": "from-stdin", "resourceGroup": "rg"}]}
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(doc)))
    assert main(["--db", str(db), "apply", "-f", "-", "-o", "none"]) == 0
    capsys.readouterr()
    assert main(["--db", str(db), "identity", "show", "-n", "from-stdin", "-g", "rg", "-o", "none"]) == 0


def test_export_then_apply_to_an_empty_store_reproduces_it(ok, mi, tmp_path, tenant_file, capsys, new_store):
    assert mi("apply", "-f", str(tenant_file)).code == 0
    # state that only an export can carry: a dangling reference, an orphaned assignment, a second key
    ok("identity", "create", "-g", "rg-app", "-n", "doomed")
    ok("identity", "assign", "--resource", "web", "-g", "rg-app", "--identities", "doomed")
    ok("role", "assignment", "create", "--assignee", "doomed", "--role", "Reader", "-g", "rg-app")
    mi("identity", "delete", "-g", "rg-app", "-n", "doomed", "--yes")
    first = mi("export").out
    other = new_store("other")
    exported = tmp_path / "export.yaml"
    exported.write_text(first)
    assert main(["--db", str(other), "apply", "-f", str(exported), "-o", "none"]) == 0
    capsys.readouterr()
    assert main(["--db", str(other), "export"]) == 0
    assert capsys.readouterr().out == first
    as_json = mi("export", "-o", "json").out
    assert yaml.safe_load(first) == json.loads(as_json)


def test_a_file_for_another_tenant_is_refused(ok, mi, tmp_path, db):
    ok("account", "show")
    before = dump(db)
    f = tmp_path / "other.yaml"
    f.write_text("apiVersion: mi/v1\ntenant: {id: 00000000-0000-0000-0000-000000000001}\n")
    r = mi("apply", "-f", str(f))
    assert r.code == 1 and "(TenantMismatch)" in r.err
    assert dump(db) == before


def test_reset_empties_the_store(ok, mi, tenant_file):
    assert mi("apply", "-f", str(tenant_file)).code == 0
    r = mi("reset", "--yes")
    assert r.code == 0 and r.err.startswith("reset: ")
    assert ok("group", "list") == [] and ok("identity", "list") == [] and ok("log") == []
    assert ok("export") == {"apiVersion": "mi/v1"}


def test_under_a_seed_an_export_reset_and_applied_again_never_hands_its_ids_out_twice(ok, mi, tmp_path, monkeypatch):
    monkeypatch.setenv("MI_SEED", "again")
    ok("group", "create", "-n", "rg", "-l", "westeurope")
    before = ok("resource", "create", "-g", "rg", "-n", "vm1", "--type", "vm", "--system-assigned")
    exported = tmp_path / "tenant.yaml"
    assert mi("export", "-f", str(exported)).code == 0
    assert mi("reset", "--yes").code == 0
    assert mi("apply", "-f", str(exported), "-o", "none").code == 0
    # each new GUID was one the applied file had brought back: an IntegrityError (an InternalError) before
    made = [ok("identity", "create", "-g", "rg", "-n", f"id{i}") for i in range(4)]
    made.append(ok("resource", "create", "-g", "rg", "-n", "vm2", "--type", "vm", "--system-assigned")["identity"])
    ids = {v for m in made for v in (m["principalId"], m.get("clientId"))} - {None}
    assert before["identity"]["principalId"] not in ids and len(ids) == 9


def test_the_schema_is_published_with_the_package():
    from importlib import resources

    schema = json.loads(resources.files("mi_cli.catalog").joinpath("tenant.schema.json").read_text())
    assert schema["title"] == "mi tenant file" and "roleAssignments" in schema["properties"]
