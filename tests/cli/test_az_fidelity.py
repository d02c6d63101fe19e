"""Scenarios where a script written for az must see what az shows: role assignment conditions, the
creator's object id, idempotent creates, isolation scopes, federated credential updates, which
identities `identity list` lists, confirmations without a terminal, and the service principals of
managed identities. Each test names the source it pins."""

from __future__ import annotations

import json
import re
import sqlite3

import pytest
import yaml

from mi_cli.cli.main import main
from mi_cli.models import SCHEMA_VERSION
from tests.conftest import build_scenario, dump

GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
CONDITION = "@Resource[Microsoft.Storage/storageAccounts/blobServices/containers:Name] stringEquals 'foo'"
NO_TTY = "Unable to prompt for confirmation as no tty available. Use --yes."


@pytest.fixture
def scenario(prebuilt):
    return prebuilt(build_scenario)


# --- role assignments -------------------------------------------------------------------------------


def test_a_condition_gets_version_2_0_and_is_shown_and_listed(ok, mi, scenario):
    # role/custom.py create_role_assignment: "If condition is set and condition-version is empty,
    # condition-version defaults to "2.0""; the PUT answer of role tests/latest/recordings/
    # test_role_assignment_create_update.yaml carries "condition", "conditionVersion":"2.0",
    # "createdBy":null and "updatedBy":<the caller's object id>
    ra = ok("role", "assignment", "create", "--assignee", "shared", "--role", "Storage Blob Data Reader", "-g", "rg",
            "--condition", CONDITION, "--description", "foo only")
    assert (ra["condition"], ra["conditionVersion"]) == (CONDITION, "2.0")
    assert ra["createdBy"] is None and GUID.match(ra["updatedBy"])
    [listed] = ok("role", "assignment", "list", "-g", "rg")
    # a GET fills createdBy in (the same recording's list: createdBy == updatedBy == an object id)
    assert (listed["condition"], listed["conditionVersion"]) == (CONDITION, "2.0")
    assert listed["createdBy"] == listed["updatedBy"] == ra["updatedBy"]


def test_a_condition_round_trips_through_apply(ok, mi, scenario, tmp_path, capsys):
    ok("role", "assignment", "create", "--assignee", "shared", "--role", "Storage Blob Data Reader", "-g", "rg",
       "--condition", CONDITION)
    exported = mi("export").out
    [entry] = yaml.safe_load(exported)["roleAssignments"]
    assert (entry["condition"], entry["conditionVersion"]) == (CONDITION, "2.0")
    path = tmp_path / "tenant.yaml"
    path.write_text(exported)
    other = tmp_path / "other.db"
    assert main(["--db", str(other), "apply", "-f", str(path), "-o", "none"]) == 0
    capsys.readouterr()
    assert main(["--db", str(other), "role", "assignment", "list", "-g", "rg", "-o", "json"]) == 0
    [again] = json.loads(capsys.readouterr().out)
    assert (again["condition"], again["conditionVersion"]) == (CONDITION, "2.0")
    # the caller's object id comes from the tenant, which the file keeps: the same in both stores
    [here] = ok("role", "assignment", "list", "-g", "rg")
    assert again["createdBy"] == here["createdBy"]


def test_condition_usage_errors_are_azs(ok, mi, db, scenario):
    before = dump(db)
    # role/custom.py: CLIError('usage error: When --condition-version is set, --condition must be set as well.')
    r = mi("role", "assignment", "create", "--assignee", "shared", "--role", "Reader", "-g", "rg", "--condition-version", "2.0")
    assert r.code == 1 and "usage error: When --condition-version is set, --condition must be set as well." in r.err
    # Authorization RoleAssignmentProperties.conditionVersion: "Currently the only accepted value is '2.0'"
    r = mi("role", "assignment", "create", "--assignee", "shared", "--role", "Reader", "-g", "rg",
           "--condition", CONDITION, "--condition-version", "1.0")
    assert r.code == 1 and "(InvalidConditionVersion)" in r.err
    assert dump(db) == before


def test_assignee_argument_errors_are_azs(mi, db, scenario):
    before = dump(db)
    # role/custom.py create_role_assignment raises CLIError (exit 1) with these texts
    r = mi("role", "assignment", "create", "--role", "Reader", "-g", "rg", "--assignee", "shared",
           "--assignee-object-id", scenario["principalId"])
    assert r.code == 1 and "usage error: --assignee STRING | --assignee-object-id GUID" in r.err
    r = mi("role", "assignment", "create", "--role", "Reader", "-g", "rg", "--assignee", "shared",
           "--assignee-principal-type", "ServicePrincipal")
    assert r.code == 1 and "usage error: --assignee-object-id GUID --assignee-principal-type TYPE" in r.err
    # role/_params.py: the choices are User, Group, ServicePrincipal, ForeignGroup (Device hidden); a
    # value outside them is the parser's error, exit 2
    r = mi("role", "assignment", "create", "--role", "Reader", "-g", "rg", "--assignee-object-id", scenario["principalId"],
           "--assignee-principal-type", "Device")
    assert r.code == 2 and "--assignee-principal-type" in r.err
    assert dump(db) == before


def test_assignee_object_id_without_a_type_warns_and_asks_the_directory(ok, mi, db, scenario):
    # role/custom.py: logger.warning('RBAC service might reject ...') and then the type from Graph
    r = mi("role", "assignment", "create", "--role", "Reader", "-g", "rg", "--assignee-object-id", scenario["principalId"],
           "-o", "json")
    assert r.code == 0
    assert r.err == ("WARNING: RBAC service might reject creating role assignment without --assignee-principal-type in "
                     "the future. Better to specify --assignee-principal-type manually.\n")
    assert json.loads(r.out)["principalType"] == "ServicePrincipal"
    # an object the directory does not know: ARM, not told the type, answers PrincipalNotFound
    before = dump(db)
    r = mi("role", "assignment", "create", "--role", "Reader", "-g", "rg",
           "--assignee-object-id", "11111111-2222-3333-4444-555555555555")
    assert r.code == 1 and "(PrincipalNotFound) Principal 11111111-2222-3333-4444-555555555555 does not exist" in r.err
    assert dump(db) == before
    # the type is matched case-insensitively, as az's enum arguments are
    ra = ok("role", "assignment", "create", "--role", "Reader", "-g", "rg",
            "--assignee-object-id", "11111111-2222-3333-4444-555555555555", "--assignee-principal-type", "group")
    assert ra["principalType"] == "Group"


def test_creating_again_prints_the_existing_assignment_as_list_shows_it(ok, mi, scenario):
    # role/custom.py: on RoleAssignmentExists, `return list_role_assignments(cmd, assignee, role, ...)[0]`:
    # the existing assignment, unchanged, with the names list fills in (Azure/azure-cli#8599: "two
    # additional properties are included in the response if the assignment already existed")
    first = ok("role", "assignment", "create", "--assignee", "shared", "--role", "Reader", "-g", "rg",
               "--description", "first")
    again = ok("role", "assignment", "create", "--assignee", "shared", "--role", "Reader", "-g", "rg",
               "--description", "second")
    assert again["name"] == first["name"] and again["description"] == "first"
    assert again["principalName"] == scenario["clientId"] and again["roleDefinitionName"] == "Reader"
    # another --name for the same grant is RoleAssignmentExists too: the existing one, exit 0
    other = ok("role", "assignment", "create", "--assignee", "shared", "--role", "Reader", "-g", "rg",
               "--name", "0f0e0d0c-0b0a-4909-8807-060504030201")
    assert other["name"] == first["name"]
    # a PUT at its own name updates it (as `az role assignment update` sends it)
    put = ok("role", "assignment", "create", "--assignee", "shared", "--role", "Reader", "-g", "rg",
             "--name", first["name"], "--description", "second")
    assert put["description"] == "second" and "principalName" not in put


def test_deleting_assignments_that_match_nothing_is_azs_error(ok, mi, db, scenario):
    # role/custom.py delete_role_assignments: raise CLIError('No matched assignments were found to delete')
    ok("role", "assignment", "create", "--assignee", "shared", "--role", "Reader", "-g", "rg")
    before = dump(db)
    r = mi("role", "assignment", "delete", "--assignee", "shared", "--role", "Contributor", "-g", "rg")
    assert r.code == 1 and r.err.rstrip().endswith("No matched assignments were found to delete")
    # a CLIError is az's own, one line (no service's Code:/Message: lines)
    assert r.err.count("\n") == 1 and "Code:" not in r.err
    # without --scope or -g, az searches the subscription itself: the group's assignment is not there
    r = mi("role", "assignment", "delete", "--assignee", "shared")
    assert r.code == 1 and "No matched assignments were found to delete" in r.err
    assert dump(db) == before
    ok("role", "assignment", "delete", "--assignee", "shared", "-g", "rg")
    assert ok("role", "assignment", "list", "--all") == []


def test_listing_searches_the_subscription_itself_unless_all_or_a_scope(ok, mi, scenario):
    # role/custom.py list_role_assignments: without --all the scope is --scope, -g or the subscription,
    # matched exactly; --all with a scope is CLIError('group or scope are not required when --all is used')
    sub = ok("account", "show")["id"]
    ok("role", "assignment", "create", "--assignee", "shared", "--role", "Reader", "--scope", f"/subscriptions/{sub}")
    ok("role", "assignment", "create", "--assignee", "shared", "--role", "Reader", "-g", "rg")
    assert [r["scope"] for r in ok("role", "assignment", "list", "--assignee", "shared")] == [f"/subscriptions/{sub}"]
    assert len(ok("role", "assignment", "list", "--assignee", "shared", "--all")) == 2
    assert len(ok("role", "assignment", "list", "-g", "rg", "--include-inherited")) == 2
    r = mi("role", "assignment", "list", "--all", "-g", "rg")
    assert r.code == 1 and "group or scope are not required when --all is used" in r.err


def test_the_caller_has_one_object_id_per_tenant(ok, mi, scenario):
    # Azure writes the caller's object id in createdBy/updatedBy (recording above: "updatedBy":"6d97229a-...");
    # mi's caller is the tenant's signed-in user, whose id stays the same from one command to the next
    ok("resource", "create", "-g", "rg", "-n", "kv1", "--type", "keyvault")
    a = ok("role", "assignment", "create", "--assignee", "shared", "--role", "Reader", "-g", "rg")
    b = ok("role", "assignment", "create", "--assignee", "vm1", "--role", "Reader", "-g", "rg")
    assert a["updatedBy"] == b["updatedBy"] and GUID.match(a["updatedBy"])
    assert a["updatedBy"] not in {sp["id"] for sp in ok("sp", "list")}
    # it is a User to the directory: granting it by object id needs no type
    ra = ok("role", "assignment", "create", "--role", "Reader", "-g", "rg", "--assignee-object-id", a["updatedBy"],
            "--assignee-principal-type", "User")
    [listed] = ok("role", "assignment", "list", "-g", "rg", "--assignee", ra["principalId"])
    assert listed["principalName"] == ok("account", "show")["user"]["name"]


# --- user-assigned identities ---------------------------------------------------------------------------


def test_isolation_scope_is_stored_shown_exported_and_applied(ok, mi, db, tmp_path, capsys):
    # ManagedIdentity stable/2024-11-30: UserAssignedIdentityProperties.isolationScope, enum None|Regional,
    # read/create/update; az identity create --isolation-scope {None,Regional}
    ok("group", "create", "-n", "rg", "-l", "westeurope")
    made = ok("identity", "create", "-g", "rg", "-n", "regional", "--isolation-scope", "regional")
    assert made["isolationScope"] == "Regional"
    assert ok("identity", "show", "-g", "rg", "-n", "regional")["isolationScope"] == "Regional"
    assert ok("identity", "create", "-g", "rg", "-n", "plain")["isolationScope"] == "None"
    # run again without it: the PUT keeps it, as tags are kept
    assert ok("identity", "create", "-g", "rg", "-n", "regional")["isolationScope"] == "Regional"
    before = dump(db)
    r = mi("identity", "create", "-g", "rg", "-n", "other", "--isolation-scope", "Global")
    assert r.code == 2 and "--isolation-scope" in r.err and dump(db) == before
    doc = yaml.safe_load(mi("export").out)
    assert {u["name"]: u.get("isolationScope") for u in doc["userAssignedIdentities"]} == {"plain": None, "regional": "Regional"}
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(doc))
    other = tmp_path / "other.db"
    assert main(["--db", str(other), "apply", "-f", str(path), "-o", "none"]) == 0
    capsys.readouterr()
    assert main(["--db", str(other), "identity", "show", "-g", "rg", "-n", "regional", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["isolationScope"] == "Regional"


def test_federated_credential_update_changes_what_is_given_and_needs_the_credential(ok, mi, db, scenario):
    # aaz latest/identity/federated_credential/_update.py: a generic update, GET then PUT, with
    # --issuer --subject --audiences optional; the GET of a missing credential fails (no create)
    ok("identity", "federated-credential", "create", "-n", "gh-main", "--identity-name", "shared", "-g", "rg",
       "--issuer", "https://token.actions.githubusercontent.com", "--subject", "repo:org/app:ref:refs/heads/main")
    updated = ok("identity", "federated-credential", "update", "-n", "gh-main", "--identity-name", "shared", "-g", "rg",
                 "--subject", "repo:org/app:environment:prod")
    assert updated["subject"] == "repo:org/app:environment:prod"
    assert updated["issuer"] == "https://token.actions.githubusercontent.com"
    assert updated["audiences"] == ["api://AzureADTokenExchange"]
    shown = ok("identity", "federated-credential", "show", "-n", "gh-main", "--identity-name", "shared", "-g", "rg")
    assert shown == updated
    before = dump(db)
    r = mi("identity", "federated-credential", "update", "-n", "nope", "--identity-name", "shared", "-g", "rg",
           "--subject", "x")
    assert r.code == 3 and "(ResourceNotFound)" in r.err
    assert dump(db) == before


def test_identity_list_is_az_identity_list_and_kind_adds_system_ones(ok, mi, scenario):
    # identity/custom.py list_user_assigned_identities: userAssignedIdentities list_by_resource_group or
    # list_by_subscription, so only user-assigned identities, in the shape `az identity show` prints
    listed = ok("identity", "list")
    assert listed == [ok("identity", "show", "-g", "rg", "-n", "shared")]
    assert set(listed[0]) == {"clientId", "id", "isolationScope", "location", "name", "principalId", "resourceGroup",
                              "tags", "tenantId", "type"}
    # no table transformer is registered for it: knack's auto-table (keys sorted; id, type and
    # objects left out), as the AKS docs' `az identity list -o table` shows it
    table = mi("identity", "list", "-o", "table").out.splitlines()
    assert table[0].split() == ["ClientId", "IsolationScope", "Location", "Name", "PrincipalId", "ResourceGroup", "TenantId"]
    # the system-assigned identities are GET {scope}/providers/Microsoft.ManagedIdentity/identities/default
    # (SystemAssignedIdentityGet.json): their type tells them apart
    system = ok("identity", "list", "--kind", "system")
    assert [(i["name"], i["type"]) for i in system] == [("vm1", "Microsoft.ManagedIdentity/identities")]
    both = ok("identity", "list", "--kind", "all", "-g", "rg")
    assert [i["type"] for i in both] == ["Microsoft.ManagedIdentity/identities", "Microsoft.ManagedIdentity/userAssignedIdentities"]
    assert all("kind" not in i for i in both)
    assert mi("identity", "list", "--kind", "all", "-o", "table").out.splitlines()[0].split()[0] == "Kind"


# --- confirmation without a terminal --------------------------------------------------------------------


@pytest.mark.parametrize("argv", [
    ["group", "delete", "-n", "rg"],
    ["identity", "federated-credential", "delete", "-n", "gh-main", "--identity-name", "shared", "-g", "rg"],
    ["reset"],
])
def test_commands_az_confirms_refuse_without_a_terminal_unless_yes(ok, mi, db, scenario, argv):
    # resource and identity commands.py register these with confirmation=True; knack's prompt raises
    # NoTTYException when stdin is not a tty (knack/prompting.py verify_is_a_tty), which
    # CLICommand._user_confirmed logs as the warning, and the command fails with CLIError('Operation
    # cancelled.'): exit 1, nothing deleted
    ok("identity", "federated-credential", "create", "-n", "gh-main", "--identity-name", "shared", "-g", "rg",
       "--issuer", "https://token.actions.githubusercontent.com", "--subject", "repo:org/app:ref:refs/heads/main")
    before = dump(db)
    r = mi(*argv)
    assert r.code == 1 and r.out == ""
    assert r.err.splitlines() == [f"WARNING: {NO_TTY}", "ERROR: (OperationCancelled) Operation cancelled."]
    assert dump(db) == before
    assert mi(*argv, "--yes").code == 0
    assert dump(db) != before


# --- service principals -----------------------------------------------------------------------------------


def test_managed_identity_principals_look_as_graph_shows_them(ok, scenario):
    # alternativeNames: the host resource id with a lowercase `resourcegroups` (pnp/cli-microsoft365
    # fixture ".../resourcegroups/VM/providers/Microsoft.Compute/virtualMachines/VM2"; azure-facts §7),
    # for a user-assigned identity its id as ARM writes it (Kevin Hakanson's `az ad sp show`)
    vm = ok("resource", "show", "-g", "rg", "-n", "vm1")
    system = ok("sp", "show", "--id", vm["identity"]["principalId"])
    assert system["alternativeNames"] == ["isExplicit=False", vm["id"].replace("/resourceGroups/", "/resourcegroups/")]
    user = ok("sp", "show", "--id", scenario["principalId"])
    assert user["alternativeNames"] == ["isExplicit=True", scenario["id"]]
    # one certificate credential, public part only (same fixture: AsymmetricX509Cert, usage Verify,
    # value null, 90 days from 2020-05-13T22:34:00Z to 2020-08-11T22:34:00Z), in Microsoft Graph's
    # keyCredential form
    for sp in (system, user):
        [key] = sp["keyCredentials"]
        assert set(key) == {"customKeyIdentifier", "displayName", "endDateTime", "key", "keyId", "startDateTime", "type", "usage"}
        assert (key["type"], key["usage"], key["key"]) == ("AsymmetricX509Cert", "Verify", None)
        assert re.fullmatch(r"[0-9A-F]{40}", key["customKeyIdentifier"]) and GUID.match(key["keyId"])
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", key["startDateTime"])
    assert ok("sp", "show", "--id", scenario["principalId"]) == user  # stable from one read to the next


# --- the store ------------------------------------------------------------------------------------------


def test_a_version_3_store_gains_the_assignment_columns(tmp_path, capsys):
    db = tmp_path / "v3.db"
    assert main(["--db", str(db), "group", "create", "-n", "rg", "-l", "westeurope", "-o", "none"]) == 0
    assert main(["--db", str(db), "identity", "create", "-g", "rg", "-n", "id1", "-o", "none"]) == 0
    assert main(["--db", str(db), "role", "assignment", "create", "--assignee", "id1", "--role", "Reader", "-g", "rg",
                 "-o", "none"]) == 0
    con = sqlite3.connect(db)
    for column in ("condition", "condition_version", "updated_at"):
        con.execute(f"ALTER TABLE role_assignment DROP COLUMN {column}")
    con.execute("UPDATE role_assignment SET created_by = 'alice'")  # version 3 kept the login name
    con.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    con.commit()
    con.close()
    capsys.readouterr()
    assert main(["--db", str(db), "role", "assignment", "list", "-g", "rg", "-o", "json"]) == 0
    [ra] = json.loads(capsys.readouterr().out)
    assert ra["condition"] is None and GUID.match(ra["createdBy"])
    con = sqlite3.connect(db)
    assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (str(SCHEMA_VERSION),)
    con.close()
