"""Errors end with the next step where one exists: Azure's code and message first, as Azure words them, then mi's
own words: the closest name that exists, the command that creates or lists what was missing; every invalid entry
of a tenant file in one run; why a resource gets no token; the reason of each refusal in `mi log`."""

from __future__ import annotations

import json

import pytest

from tests.conftest import az_error, dump, one_error


def build(ok, mi):
    ok("group", "create", "-n", "rg", "-l", "westeurope")
    ok("resource", "create", "-g", "rg", "-n", "vm1", "--type", "vm")
    ok("resource", "create", "-g", "rg", "-n", "kv1", "--type", "kv")
    ok("resource", "create", "-g", "rg", "-n", "app1", "--type", "webapp")
    ok("identity", "create", "-g", "rg", "-n", "shared")
    ok("identity", "create", "-g", "rg", "-n", "second")
    ok("identity", "assign", "--resource", "app1", "-g", "rg", "--identities", "shared")
    return ok("identity", "show", "-g", "rg", "-n", "shared")


@pytest.fixture
def tenant(prebuilt):
    return prebuilt(build)


ARM_FIX = "For more details please go to https://aka.ms/ARMResourceNotFoundFix."  # a full stop before the step

STEPS = [
    # (name, argv, exit code, code, Azure's message, mi's next step)
    ("a group that is not there", ["identity", "create", "-g", "nope", "-n", "id1"], 3, "ResourceGroupNotFound",
     "Resource group 'nope' could not be found.",
     "Create it with 'mi group create -n nope -l LOCATION', or list the groups with 'mi group list'."),
    ("a misspelt group", ["resource", "list", "-g", "rgg"], 3, "ResourceGroupNotFound",
     "Resource group 'rgg' could not be found.",
     "Did you mean 'rg'? Create it with 'mi group create -n rgg -l LOCATION', or list the groups with 'mi group list'."),
    ("a group in another subscription", ["group", "show", "-n", "rg", "--subscription", "other"], 3,
     "ResourceGroupNotFound", "Resource group 'rg' could not be found.",
     "Create it with 'mi group create -n rg -l LOCATION --subscription other', or list the groups with 'mi group list "
     "--subscription other'."),
    ("a misspelt type", ["resource", "create", "-g", "rg", "-n", "x1", "--type", "vmm"], 1, "InvalidResourceType",
     "The resource type 'vmm' could not be found in the catalog.",
     "Did you mean 'vm'? See 'mi resource types' for the types and aliases that exist."),
    ("a misspelt full type", ["resource", "list", "--type", "Microsoft.Compute/virtualMachine"], 1, "InvalidResourceType",
     "The resource type 'Microsoft.Compute/virtualMachine' could not be found in the catalog.",
     "Did you mean 'Microsoft.Compute/virtualMachines'? See 'mi resource types'"),
    ("a misspelt resource", ["resource", "show", "-g", "rg", "-n", "vm2"], 3, "ResourceNotFound",
     f"The Resource 'vm2' under resource group 'rg' was not found. {ARM_FIX}",
     "Did you mean 'vm1'? List the resources of 'rg' with 'mi resource list -g rg'."),
    ("a resource that is not there", ["identity", "assign", "--resource", "nothing", "-g", "rg"], 3, "ResourceNotFound",
     f"The Resource 'nothing' under resource group 'rg' was not found. {ARM_FIX}",
     "List the resources of 'rg' with 'mi resource list -g rg'."),
    ("a misspelt identity", ["identity", "show", "-g", "rg", "-n", "sharde"], 3, "ResourceNotFound",
     f"The Resource 'Microsoft.ManagedIdentity/userAssignedIdentities/sharde' under resource group 'rg' was not found. "
     f"{ARM_FIX}", "Did you mean 'shared'? List the identities of 'rg' with 'mi identity list -g rg', or create it with "
                   "'mi identity create -g rg -n sharde'."),
    ("the parent of a federated credential", ["identity", "federated-credential", "list", "--identity-name", "ghost", "-g",
                                              "rg"], 3, "ParentResourceNotFound",
     "The parent user-assigned identity doesn't exist.", "List the identities of 'rg' with 'mi identity list -g rg'"),
    ("a federated credential", ["identity", "federated-credential", "show", "-n", "nope", "--identity-name", "shared", "-g",
                                "rg"], 3, "ResourceNotFound", "was not found.",
     "List the credentials of 'shared' with 'mi identity federated-credential list --identity-name shared -g rg'."),
    ("a system identity that is off", ["identity", "show", "--resource", "vm1", "-g", "rg"], 3, "ResourceNotFound",
     "The resource 'vm1' has no system-assigned identity (it is not enabled).",
     "Turn it on with 'mi identity assign --resource vm1 -g rg'."),
    ("a misspelt role", ["role", "assignment", "create", "--assignee", "shared", "--role", "Readr", "-g", "rg"], 1,
     "RoleDefinitionDoesNotExist", "Role 'Readr' doesn't exist.",
     "Did you mean 'Reader'? See the roles with 'mi role definition list'."),
    ("a service principal", ["sp", "show", "--id", "00000000-0000-0000-0000-000000000000"], 3, "Request_ResourceNotFound",
     "Resource '00000000-0000-0000-0000-000000000000' does not exist", "List the service principals with 'mi sp list'."),
]


@pytest.mark.parametrize("argv, exit_code, code, azure, step", [c[1:] for c in STEPS], ids=[c[0] for c in STEPS])
def test_an_error_keeps_azure_s_words_and_ends_with_the_next_step(mi, db, tenant, argv, exit_code, code, azure, step):
    mi("subscription", "create", "-n", "other", "-o", "none")
    before = dump(db)
    r = mi(*argv)
    assert r.code == exit_code, r.err
    first = r.err.splitlines()[0]
    assert first.startswith(f"ERROR: ({code}) ") and azure in first and step in first, first
    assert first.index(azure) < first.index(step)  # Azure's words first, the step after them
    assert one_error(r.err) and r.out == "" and dump(db) == before


def test_a_name_that_could_not_be_created_is_not_offered_to_create(mi, tenant):
    r = mi("identity", "show", "-g", "rg", "-n", "no/such")
    assert r.code == 3 and "mi identity list -g rg" in r.err and "mi identity create" not in r.err
    r = mi("group", "show", "-n", "bad/group")
    assert r.code == 3 and "mi group list" in r.err and "mi group create" not in r.err


# --- why a resource gets no token ------------------------------------------------------------------


def test_env_says_why_a_request_naming_no_identity_would_be_refused(mi, tenant):
    def warning(*argv):
        r = mi("env", *argv, "-g", "rg", "--port", "5005", "-o", "json")
        assert r.code == 0 and json.loads(r.out), r.err
        return r.err

    # App Service gives the system-assigned identity when none is named: app1 has only a user-assigned one
    err = warning("--resource", "app1", "--style", "appservice")
    assert err.startswith("WARNING: App Service gives a request that names no identity the system-assigned one, which "
                          "'app1' does not have, so such a request is refused ('Unable to load the proper Managed "
                          "Identity'): name a user-assigned one with --identity NAME, which sets AZURE_CLIENT_ID "
                          f"(client id {tenant['clientId']}), or turn its system-assigned one on with 'mi identity assign "
                          "--resource app1 -g rg'.")
    assert warning("--resource", "app1", "--style", "appservice", "--identity", "shared") == ""
    assert warning("--resource", "app1") == ""  # IMDS gives the only user-assigned one
    # no identity at all, and a type that supports none
    assert "'vm1' has no managed identity enabled, so it gets no token: 'mi identity assign --resource vm1 -g rg' turns " \
           "on its system-assigned identity" in warning("--resource", "vm1")
    assert "a type that supports no managed identity" in warning("--resource", "kv1")
    # an identity named that the resource does not hold
    assert "The identity 'second' is not attached to 'app1'" in warning("--resource", "app1", "--identity", "second")


def test_env_names_the_identities_when_several_could_answer(ok, mi, tenant):
    ok("identity", "assign", "--resource", "app1", "-g", "rg", "--identities", "second")
    r = mi("env", "--resource", "app1", "-g", "rg", "--port", "5005", "-o", "json")
    assert r.code == 0
    assert "'app1' has 2 user-assigned identities and no system-assigned one, so a request that names none is refused: " \
           "name one with --identity NAME" in r.err and tenant["clientId"] in r.err


def test_why_no_token_names_what_a_selector_could_name(store, tenant):
    from mi_cli.services import lookup, next_steps

    with store() as ctx:
        app1 = lookup.resource(ctx, "app1", "rg")
        assert next_steps.why_no_token(ctx, app1) is None  # IMDS: the only user-assigned one
        assert "App Service gives a request" in next_steps.why_no_token(ctx, app1, system_only=True)
        assert next_steps.why_no_token(ctx, app1, selected=True) == (
            f"The identity named is not one of 'app1', which holds user-assigned client id {tenant['clientId']}.")


# --- the activity log: the reason of each refusal -----------------------------------------------------


def test_the_log_table_shows_why_each_refusal_was_refused(mi, tenant):
    r = mi("token", "get", "--resource", "vm1", "-g", "rg", "--audience", "https://vault.azure.net")
    assert r.code == 1
    table = mi("log", "--operation", "token", "-o", "table").out
    header, _, row = table.splitlines()[:3]
    assert header.split()[-1] == "Reason" and "invalid_request: Identity not found. " in row, table
    assert row.rstrip().endswith("attaches a user-assigned one."), table  # the reason, in mi's words
    # a listing with no refusal has no Reason column
    assert "Reason" not in mi("log", "--status", "Succeeded", "-o", "table").out
    # the data forms are the log's own, as before
    entry = json.loads(mi("log", "--operation", "token", "-o", "json").out)[-1]
    assert "Reason" not in entry and "reason" not in entry and "error=invalid_request" in entry["detail"]


# --- a tenant file: every invalid entry, in one run ---------------------------------------------------


def _apply(mi, tmp_path, text: str):
    path = tmp_path / "tenant.yaml"
    path.write_text(text)
    return mi("apply", "-f", str(path))


BAD_ENTRIES = """apiVersion: mi/v1
resourceGroups:
  - {name: rg-a, location: westeurope}
  - {name: rg-b, location: atlantis}
userAssignedIdentities:
  - {name: ok-one, resourceGroup: rg-a}
  - {name: "x!", resourceGroup: rg-a}
  - {name: in-b, resourceGroup: rg-b}
resources:
  - {name: vm-a, type: vmm, resourceGroup: rg-a}
  - {name: kv-b, type: keyvault, resourceGroup: rg-a, identity: {userAssigned: [ok-one]}}
  - {name: vm-c, type: vm, resourceGroup: rg-a, identity: {userAssigned: [ghost]}}
roleAssignments:
  - {assignee: ok-one, role: Janitor, scope: /subscriptions/SUB/resourceGroups/rg-a}
  - {assignee: in-b, role: Reader, scope: /subscriptions/SUB/resourceGroups/rg-b}
"""


def test_apply_reports_every_invalid_entry_and_changes_nothing(ok, mi, db, tmp_path):
    sub = ok("account", "show")["id"]
    before = dump(db)
    r = _apply(mi, tmp_path, BAD_ENTRIES.replace("SUB", sub))
    assert r.code == 1 and r.out == ""
    lines = r.err.splitlines()
    assert lines[0].startswith("ERROR: (LocationNotAvailableForResourceGroup) tenant.yaml: resourceGroups[1] (rg-b): ")
    assert lines[1:5] == [
        "ERROR: (InvalidResourceName) tenant.yaml: userAssignedIdentities[1] (x!): Resource name 'x!' is invalid. A "
        "user-assigned identity name must be 3 to 128 characters of alphanumerics, hyphens and underscores, and start "
        "with a letter or number.",
        "ERROR: (InvalidResourceType) tenant.yaml: resources[0] (vm-a): The resource type 'vmm' could not be found in the "
        "catalog. Did you mean 'vm'? See 'mi resource types' for the types and aliases that exist.",
        "ERROR: (InvalidIdentityType) tenant.yaml: resources[1] (kv-b): The resource type 'Microsoft.KeyVault/vaults' "
        "does not support user-assigned identities (supported: none). See 'mi resource types'.",
        "ERROR: (RoleDefinitionDoesNotExist) tenant.yaml: roleAssignments[0] (ok-one): Role 'Janitor' doesn't exist. See "
        "the roles with 'mi role definition list'.",
    ], lines
    # what only follows from a failed entry is not repeated: in-b, in the group that failed, and its role assignment;
    # vm-c's reference to an identity the file does not declare, when a declared identity failed (it may be that one)
    assert lines[5:] == ["ERROR: tenant.yaml: 5 invalid entries; nothing was applied. Fix them and apply the file again."]
    assert dump(db) == before


def test_apply_reports_every_entry_the_schema_refuses(mi, db, tmp_path):
    before = dump(db)
    r = _apply(mi, tmp_path, "apiVersion: mi/v1\ntenant: {colour: red}\nuserAssignedIdentities:\n"
                             "  - {resourceGroup: rg}\n  - {name: ok, resourceGroup: rg}\n  - {name: 5, resourceGroup: rg}\n")
    assert r.code == 1
    assert r.err.splitlines() == [
        "ERROR: (InvalidDocument) tenant.yaml: tenant: must not contain {'colour'} properties",
        "ERROR: (InvalidDocument) tenant.yaml: userAssignedIdentities[0]: must contain ['name'] properties",
        "ERROR: (InvalidDocument) tenant.yaml: userAssignedIdentities[2].name: must be string",
        "ERROR: tenant.yaml: 3 invalid entries; nothing was applied. Fix them and apply the file again.",
    ]
    assert dump(db) == before


def test_apply_lists_the_first_twenty_and_counts_the_rest(ok, mi, db, tmp_path):
    ok("account", "show")
    entries = "".join(f"  - {{name: 'bad!{i}', location: westeurope}}\n" for i in range(45))
    before = dump(db)
    r = _apply(mi, tmp_path, f"apiVersion: mi/v1\nresourceGroups:\n{entries}")
    lines = r.err.splitlines()
    assert r.code == 1 and len(lines) == 21
    assert all(line.startswith("ERROR: (InvalidResourceGroup) tenant.yaml: resourceGroups[") for line in lines[:20])
    assert lines[19].startswith("ERROR: (InvalidResourceGroup) tenant.yaml: resourceGroups[19] (bad!19): ")
    assert lines[20] == "ERROR: tenant.yaml: 45 invalid entries (the first 20 above); nothing was applied. Fix them and " \
                        "apply the file again."
    assert dump(db) == before


def test_one_invalid_entry_is_one_error_as_before(mi, db, tmp_path):
    r = _apply(mi, tmp_path, "apiVersion: mi/v1\nresourceGroups:\n  - {name: rg, location: atlantis}\n")
    assert r.code == 1 and one_error(r.err)
    assert r.err.startswith("ERROR: (LocationNotAvailableForResourceGroup) tenant.yaml: resourceGroups[0] (rg): ")


def test_az_s_three_lines_carry_the_step(mi, tenant):
    r = mi("group", "show", "-n", "nope")
    assert r.err == az_error("ResourceGroupNotFound", "Resource group 'nope' could not be found. Create it with 'mi group "
                                                      "create -n nope -l LOCATION', or list the groups with 'mi group list'.")
