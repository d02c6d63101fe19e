"""RBAC through the command line: definitions, assignments with az's shapes, rules 3 and 6, access."""

from __future__ import annotations

import json

import pytest

from tests.conftest import build_scenario, dump, one_error

SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"
GET_SECRET = "Microsoft.KeyVault/vaults/secrets/getSecret/action"


def build_vault(ok, mi):
    """The shared scenario (vm1, app1, 'shared') and a key vault kv-one beside them in rg."""
    shared = build_scenario(ok, mi)
    return {"shared": shared, "kv": ok("resource", "create", "-g", "rg", "-n", "kv-one", "--type", "keyvault")["id"]}


@pytest.fixture
def vault(prebuilt):
    return prebuilt(build_vault)


@pytest.fixture
def kv(vault):
    """kv-one's id."""
    return vault["kv"]


@pytest.fixture
def scenario(vault):
    """Here the scenario always comes with the vault: 'shared' as `identity create` printed it."""
    return vault["shared"]


def test_built_in_definitions_have_azure_guids_and_shape(ok):
    owner = ok("role", "definition", "show", "-n", "owner")
    assert owner["name"] == "8e3af657-a8ff-443c-a75c-2fe8c4bcb635" and owner["roleType"] == "BuiltInRole"
    assert owner["permissions"] == [{"actions": ["*"], "notActions": [], "dataActions": [], "notDataActions": []}]
    assert owner["id"].endswith("/providers/Microsoft.Authorization/roleDefinitions/8e3af657-a8ff-443c-a75c-2fe8c4bcb635")
    names = {r["roleName"] for r in ok("role", "definition", "list")}
    for name in ("Owner", "Contributor", "Reader", "User Access Administrator", "Role Based Access Control Administrator",
                 "Key Vault Secrets User", "Key Vault Secrets Officer", "Key Vault Reader", "Key Vault Administrator",
                 "Storage Blob Data Reader", "Storage Blob Data Contributor", "Storage Blob Data Owner",
                 "Managed Identity Operator", "Managed Identity Contributor", "Virtual Machine Contributor"):
        assert name in names
    assert ok("role", "definition", "show", "-n", SECRETS_USER)["roleName"] == "Key Vault Secrets User"


def test_assignment_shapes_and_az_columns(ok, mi, kv):
    vm = ok("resource", "show", "-g", "rg", "-n", "vm1")
    ra = ok("role", "assignment", "create", "--assignee", "vm1", "--role", "Key Vault Secrets User", "--scope", kv)
    assert ra["principalId"] == vm["identity"]["principalId"] and ra["principalType"] == "ServicePrincipal"
    assert ra["roleDefinitionId"].endswith(f"/providers/Microsoft.Authorization/roleDefinitions/{SECRETS_USER}")
    assert ra["id"] == f"{kv}/providers/Microsoft.Authorization/roleAssignments/{ra['name']}"
    assert ra["resourceGroup"] == "rg" and ra["scope"] == kv and "principalName" not in ra
    [listed] = ok("role", "assignment", "list", "--scope", kv)
    sp = ok("sp", "show", "--id", ra["principalId"])
    assert listed["principalName"] == sp["appId"] and listed["roleDefinitionName"] == "Key Vault Secrets User"
    table = mi("role", "assignment", "list", "--all", "-o", "table").out.splitlines()
    assert table[0].split() == ["Principal", "Role", "Scope"]


def test_assignees_by_every_name_a_user_knows(ok, mi, kv, scenario):
    ok("role", "assignment", "create", "--assignee", "shared", "--role", "Reader", "--scope", kv)  # identity name
    ok("role", "assignment", "create", "--assignee", scenario["id"], "--role", "Key Vault Reader", "--scope", kv)  # its id
    ok("role", "assignment", "create", "--assignee", scenario["clientId"], "--role", "Key Vault Secrets User", "--scope", kv)
    vm = ok("resource", "show", "-g", "rg", "-n", "vm1")
    ok("role", "assignment", "create", "--assignee", vm["id"], "--role", "Reader", "--scope", kv)  # a resource: its system identity
    listed = ok("role", "assignment", "list", "--scope", kv)
    assert {(r["principalId"], r["roleDefinitionName"]) for r in listed} == {
        (scenario["principalId"], "Reader"), (scenario["principalId"], "Key Vault Reader"),
        (scenario["principalId"], "Key Vault Secrets User"), (vm["identity"]["principalId"], "Reader")}


def test_assignment_errors_are_azures(ok, mi, db, kv):
    first = ok("role", "assignment", "create", "--assignee", "vm1", "--role", "Reader", "-g", "rg")
    # az turns RoleAssignmentExists into the existing assignment, so a CI script can run again; it prints
    # it as its list does (role/custom.py create_role_assignment: list_role_assignments(...)[0])
    again = ok("role", "assignment", "create", "--assignee", "vm1", "--role", "Reader", "-g", "rg")
    assert {k: v for k, v in again.items() if k not in ("principalName", "roleDefinitionName", "createdBy")} == \
        {k: v for k, v in first.items() if k != "createdBy"}
    cases = [
        (["--assignee", "00000000-0000-0000-0000-000000000001", "--role", "Reader", "-g", "rg"], 1,
         "(PrincipalNotFound) Principal 00000000-0000-0000-0000-000000000001 does not exist in the directory"),
        (["--assignee", "vm1", "--role", "Janitor", "-g", "rg"], 1, "(RoleDefinitionDoesNotExist) Role 'Janitor' doesn't exist."),
        (["--assignee", "vm1", "--role", "Reader", "--scope", kv.replace("kv-one", "kv-two")], 3, "(ResourceNotFound)"),
        (["--assignee", "vm1", "--role", "Reader", "-g", "nope"], 3, "(ResourceGroupNotFound)"),
        (["--assignee", "vm1", "--role", "Reader", "--scope", "not-a-scope"], 1, "(InvalidScope)"),
        (["--assignee", "vm1", "--role", "Reader", "-g", "rg", "--name", "not-a-guid"], 1, "(InvalidRoleAssignmentId)"),
    ]
    for argv, code, text in cases:
        before = dump(db)
        r = mi("role", "assignment", "create", *argv)
        assert r.code == code and text in r.err and one_error(r.err), (argv, r.err)
        assert dump(db) == before


def test_the_per_subscription_limit(ok, mi, store, monkeypatch, kv):
    from mi_cli.services import assignments

    monkeypatch.setattr(assignments, "LIMIT_PER_SUBSCRIPTION", 2)
    ok("role", "assignment", "create", "--assignee", "vm1", "--role", "Reader", "-g", "rg")
    ok("role", "assignment", "create", "--assignee", "vm1", "--role", "Key Vault Reader", "--scope", kv)
    r = mi("role", "assignment", "create", "--assignee", "vm1", "--role", "Key Vault Secrets User", "--scope", kv)
    assert r.code == 1 and "(RoleAssignmentLimitExceeded) No more role assignments can be created" in r.err


def test_rule6_orphans_stay_with_an_empty_principal_name_and_rule3_scope_deletion(ok, mi, kv, scenario):
    ok("role", "assignment", "create", "--assignee", "vm1", "--role", "Key Vault Secrets User", "--scope", kv)
    vm = ok("resource", "show", "-g", "rg", "-n", "vm1")
    ok("role", "assignment", "create", "--assignee", "shared", "--role", "Reader", "--scope", vm["id"])
    ok("role", "assignment", "create", "--assignee", "shared", "--role", "Reader", "--scope", vm["id"] + "/extensions/ext1")
    ok("resource", "delete", "-g", "rg", "-n", "vm1", "--yes")
    remaining = ok("role", "assignment", "list", "--all")
    # rule 3: the two scoped on the VM (and below) went with it; rule 6: its identity's grant on the vault stays
    assert [(r["scope"], r["principalName"], r["roleDefinitionName"]) for r in remaining] == [(kv, "", "Key Vault Secrets User")]
    mi("identity", "delete", "-n", "shared", "-g", "rg", "--yes")
    assert ok("role", "assignment", "list", "--assignee", vm["identity"]["principalId"], "--all")[0]["principalName"] == ""
    # orphans can be cleaned up by id (az's delete searches the scope given, else the subscription itself)
    ok("role", "assignment", "delete", "--assignee", vm["identity"]["principalId"], "--scope", kv)
    assert ok("role", "assignment", "list", "--all") == []


def test_rule9_deleting_a_group_takes_its_assignments(ok, kv):
    ok("role", "assignment", "create", "--assignee", "shared", "--role", "Reader", "-g", "rg")
    sub = ok("account", "show")["id"]
    ok("role", "assignment", "create", "--assignee", "shared", "--role", "Reader", "--scope", f"/subscriptions/{sub}")
    ok("group", "delete", "-n", "rg", "--yes")
    assert [r["scope"] for r in ok("role", "assignment", "list", "--all")] == [f"/subscriptions/{sub}"]


def test_listing_follows_az(ok, kv):
    sub = ok("account", "show")["id"]
    ok("role", "assignment", "create", "--assignee", "vm1", "--role", "Reader", "--scope", f"/subscriptions/{sub}")
    ok("role", "assignment", "create", "--assignee", "vm1", "--role", "Key Vault Secrets User", "--scope", kv)
    assert len(ok("role", "assignment", "list")) == 1  # no filters: the subscription's own
    assert len(ok("role", "assignment", "list", "--all")) == 2
    assert len(ok("role", "assignment", "list", "--scope", kv)) == 1
    assert len(ok("role", "assignment", "list", "--scope", kv, "--include-inherited")) == 2
    # --assignee and --role filter the subscription's own too; --all reaches the other scopes
    # (role/custom.py _search_role_assignments; "By default, you only see assignments at the subscription
    # level unless you call out the --scope or use --all", Azure/azure-cli#7935)
    assert len(ok("role", "assignment", "list", "--assignee", "vm1")) == 1
    assert len(ok("role", "assignment", "list", "--assignee", "vm1", "--all")) == 2
    assert len(ok("role", "assignment", "list", "--role", "Reader")) == 1


def test_deleting_assignments(ok, mi, kv):
    ra = ok("role", "assignment", "create", "--assignee", "vm1", "--role", "Reader", "--scope", kv)
    ok("role", "assignment", "delete", "--ids", ra["id"])
    ok("role", "assignment", "delete", "--ids", ra["id"])  # gone already: succeeds, as ARM's DELETE
    r = mi("role", "assignment", "delete", "--assignee", "vm1", "--role", "Reader", "--scope", kv)
    assert r.code == 1 and "No matched assignments were found to delete" in r.err  # az's CLIError


def test_identity_assign_with_role_and_scope_grants_the_system_identity(ok, mi, kv):
    ok("identity", "assign", "--resource", "app1", "-g", "rg", "--identities", "[system]", "--role", "Key Vault Secrets User", "--scope", kv)
    app = ok("resource", "show", "-g", "rg", "-n", "app1")
    [ra] = ok("role", "assignment", "list", "--assignee", app["identity"]["principalId"], "--all")
    assert ra["scope"] == kv and ra["roleDefinitionName"] == "Key Vault Secrets User"
    # again: the existing assignment counts as success, as in az
    ok("identity", "assign", "--resource", "app1", "-g", "rg", "--role", "Key Vault Secrets User", "--scope", kv)
    ok("resource", "create", "-g", "rg", "-n", "vm2", "--type", "vm")
    ok("identity", "create", "--system-assigned", "--resource", "vm2", "-g", "rg", "--role", "Reader", "--scope", kv)
    assert len(ok("role", "assignment", "list", "--scope", kv)) == 2
    r = mi("identity", "assign", "--resource", "vm2", "-g", "rg", "--identities", "shared", "--role", "Reader")
    assert r.code == 2 and "--role and --scope go together" in r.err


def test_custom_roles_from_a_file(ok, mi, tmp_path, kv):
    rg = kv.split("/providers/")[0]
    doc = tmp_path / "role.json"
    doc.write_text(json.dumps({"Name": "Secret Peeker", "IsCustom": True, "Description": "Reads secret metadata",
                               "Actions": [], "DataActions": ["Microsoft.KeyVault/vaults/secrets/readMetadata/action"],
                               "NotDataActions": [], "AssignableScopes": [rg]}))
    role = ok("role", "definition", "create", "--role-definition", str(doc))
    assert role["roleType"] == "CustomRole" and role["assignableScopes"] == [rg]
    assert [r["roleName"] for r in ok("role", "definition", "list", "--custom-role-only")] == ["Secret Peeker"]
    r = mi("role", "definition", "create", "--role-definition", str(doc))
    assert r.code == 1 and "RoleDefinitionWithSameNameExists" in r.err
    r = mi("role", "definition", "delete", "-n", "Owner")
    assert r.code == 1 and "built-in" in r.err
    r = mi("role", "definition", "create", "--role-definition", "{not json")
    assert r.code == 1 and r.err.startswith("ERROR: (InvalidRoleDefinition)")
    for wrong in ({"Name": "x", "Permissions": "all", "AssignableScopes": [rg]},
                  {"Name": "x", "Actions": ["*/read"], "AssignableScopes": rg},
                  {"Name": "x", "Permissions": ["*/read"], "AssignableScopes": [rg]}):
        r = mi("role", "definition", "create", "--role-definition", json.dumps(wrong))
        assert r.code == 1 and r.err.startswith("ERROR: (InvalidRoleDefinition)") and one_error(r.err), r.err
    ok("role", "definition", "delete", "-n", "Secret Peeker")
    ok("role", "definition", "delete", "-n", "Secret Peeker")


def test_access_check_explains_and_gates(ok, mi, kv):
    ok("role", "assignment", "create", "--assignee", "vm1", "--role", "Owner", "-g", "rg")
    denied = ok("access", "check", "--principal", "vm1", "--action", GET_SECRET, "--scope", kv + "/secrets/db-password")
    assert denied["allowed"] is False and denied["actionType"] == "DataAction"
    assert "actions only ever grant control-plane operations" in denied["reason"]
    r = mi("access", "check", "--principal", "vm1", "--action", GET_SECRET, "--scope", kv, "--require")
    assert r.code == 1 and r.err.startswith("ERROR: (AuthorizationFailed) Denied:")
    ok("role", "assignment", "create", "--assignee", "vm1", "--role", "Key Vault Secrets User", "--scope", kv)
    allowed = ok("access", "check", "--principal", "vm1", "--action", GET_SECRET, "--scope", kv, "--require")
    assert allowed["allowed"] is True
    assert [s["matched"] for s in allowed["trace"] if s["granted"]] == [GET_SECRET]
    table = mi("access", "check", "--principal", "vm1", "--action", GET_SECRET, "--scope", kv, "-o", "table").out
    assert table.startswith("Allowed: 'Key Vault Secrets User'") and "Matched" in table


def test_access_check_with_a_token(ok, mi, kv):
    ok("role", "assignment", "create", "--assignee", "vm1", "--role", "Key Vault Secrets User", "--scope", kv)
    vault_token = ok("token", "get", "--resource", "vm1", "-g", "rg", "--audience", "https://vault.azure.net")["access_token"]
    assert ok("access", "check", "--token", vault_token, "--action", GET_SECRET, "--scope", kv)["allowed"] is True
    arm_token = ok("token", "get", "--resource", "vm1", "-g", "rg", "--audience", "https://management.azure.com/")["access_token"]
    r = mi("access", "check", "--token", arm_token, "--action", GET_SECRET, "--scope", kv)
    assert r.code == 1 and "audience 'https://management.azure.com/' is not 'https://vault.azure.net'" in r.err
    # a control-plane action is ARM's to enforce: the ARM token is the right one there
    ok("role", "assignment", "create", "--assignee", "vm1", "--role", "Reader", "--scope", kv)
    assert ok("access", "check", "--token", arm_token, "--action", "Microsoft.KeyVault/vaults/read", "--scope", kv)["allowed"] is True
    r = mi("access", "check", "--token", vault_token, "--action", "Microsoft.Compute/virtualMachines/login/action", "--scope", kv)
    assert r.code == 1 and r.err.startswith("ERROR: (UnknownAudience)")


def test_who_and_effective_permissions(ok, kv, scenario):
    ok("role", "assignment", "create", "--assignee", "vm1", "--role", "Key Vault Secrets User", "--scope", kv)
    ok("role", "assignment", "create", "--assignee", "shared", "--role", "Key Vault Administrator", "-g", "rg")
    who = ok("access", "who", "--action", GET_SECRET, "--scope", kv)
    assert sorted(r["principalName"] for r in who) == ["shared", "vm1"]
    via = {r["principalName"]: (r["role"], r["inherited"]) for r in who}
    assert via == {"vm1": ("Key Vault Secrets User", False), "shared": ("Key Vault Administrator", True)}
    perms = ok("access", "list", "--principal", "shared")
    assert [(p["roles"], p["dataActions"]) for p in perms] == [(["Key Vault Administrator"], ["Microsoft.KeyVault/vaults/*"])]


def test_access_bad_input(mi, db, kv):
    before = dump(db)
    for argv, code, text in [
        (["check", "--principal", "vm1", "--action", "Contoso.Widgets/frob/action", "--scope", kv], 1, "UnknownOperation"),
        (["check", "--principal", "vm1", "--action", GET_SECRET, "--scope", kv, "--data-action", "--control-action"], 2, "MutuallyExclusive"),
        (["check", "--action", GET_SECRET, "--scope", kv], 2, "MissingArgument"),
        (["check", "--principal", "nobody-here", "--action", GET_SECRET, "--scope", kv], 1, "PrincipalNotFound"),
        (["who", "--action", GET_SECRET, "--scope", kv + "-missing"], 3, "ResourceNotFound"),
    ]:
        r = mi("access", *argv)
        assert r.code == code and text in r.err and one_error(r.err), (argv, r.err)
    assert dump(db) == before
