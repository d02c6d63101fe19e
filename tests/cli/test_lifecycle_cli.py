"""The lifecycle rules as a user meets them: commands, their JSON, their warnings and exit codes, on either store."""

from __future__ import annotations

import pytest

from tests.conftest import az_error

pytestmark = pytest.mark.both_stores


def _block(ok, resource):
    return ok("resource", "show", "-g", "rg", "-n", resource)["identity"]


def test_rule1_turning_on_a_system_identity_twice_returns_the_same_ids(ok, scenario):
    first = ok("identity", "create", "--system-assigned", "--resource", "vm1", "-g", "rg")
    again = ok("identity", "assign", "--resource", "vm1", "-g", "rg", "--identities", "[system]")
    assert first["principalId"] == again["principalId"]
    assert first["type"] == "SystemAssigned, UserAssigned"
    sp = ok("sp", "show", "--id", first["principalId"])
    assert sp["servicePrincipalType"] == "ManagedIdentity"
    assert sp["alternativeNames"][0] == "isExplicit=False"
    assert sp["alternativeNames"][1].endswith("/virtualMachines/vm1")


def test_rule2_turning_it_off_deletes_the_principal_and_on_again_gives_new_ids(ok, mi, scenario):
    old = _block(ok, "vm1")["principalId"]
    old_client = ok("identity", "show", "--resource", "vm1", "-g", "rg")["clientId"]
    block = ok("identity", "remove", "--resource", "vm1", "-g", "rg", "--identities", "[system]")
    assert block["type"] == "UserAssigned" and "principalId" not in block
    r = mi("sp", "show", "--id", old)
    assert r.code == 3 and r.err.startswith("ERROR: (Request_ResourceNotFound)")
    new = ok("identity", "create", "--system-assigned", "--resource", "vm1", "-g", "rg")["principalId"]
    assert new != old
    assert ok("identity", "show", "--resource", "vm1", "-g", "rg")["clientId"] != old_client


def test_rule3_deleting_the_vm_removes_its_system_identity_but_leaves_the_shared_one_on_the_web_app(ok, scenario):
    vm_principal = _block(ok, "vm1")["principalId"]
    ok("resource", "delete", "-g", "rg", "-n", "vm1", "--yes")
    assert vm_principal not in {sp["id"] for sp in ok("sp", "list")}
    assert ok("identity", "show", "-n", "shared", "-g", "rg")["principalId"] == scenario["principalId"]
    assert [r["name"] for r in ok("identity", "list-resources", "-n", "shared", "-g", "rg")] == ["app1"]
    assert list(_block(ok, "app1")["userAssignedIdentities"]) == [scenario["id"]]


def test_rule4_a_user_identity_survives_the_deletion_of_every_resource_it_was_on(ok, scenario):
    ok("resource", "delete", "-g", "rg", "-n", "vm1", "-y")
    ok("resource", "delete", "-g", "rg", "-n", "app1", "-y")
    listed = ok("identity", "list", "-g", "rg", "--kind", "all")
    assert [(i["type"], i["name"]) for i in listed] == [("Microsoft.ManagedIdentity/userAssignedIdentities", "shared")]
    assert ok("identity", "list-resources", "-n", "shared", "-g", "rg") == []


def test_rule5_deleting_a_shared_identity_warns_and_leaves_dangling_references(mi, ok, scenario):
    r = mi("identity", "delete", "-n", "shared", "-g", "rg", "--yes")
    assert r.code == 0 and r.out == ""
    assert r.err.startswith("WARNING: ") and "vm1" in r.err and "app1" in r.err
    # the references stay on both resources, as Azure keeps them
    assert scenario["id"] in _block(ok, "vm1")["userAssignedIdentities"]
    assert scenario["id"] in _block(ok, "app1")["userAssignedIdentities"]
    assert scenario["principalId"] not in {sp["id"] for sp in ok("sp", "list")}
    # and can be removed by id even though the identity is gone
    block = ok("identity", "remove", "--resource", "app1", "-g", "rg", "--identities", scenario["id"])
    assert block == {"type": "None"}
    # deleting it again succeeds, silently
    r = mi("identity", "delete", "-n", "shared", "-g", "rg", "--yes")
    assert (r.code, r.out, r.err) == (0, "", "")


def test_rule7_assigning_twice_is_a_noop_and_the_limit_holds(ok, mi, scenario):
    before = _block(ok, "vm1")
    assert ok("identity", "assign", "--resource", "vm1", "-g", "rg", "--identities", "shared") == before
    ok("resource", "create", "-g", "rg", "-n", "flow", "--type", "logicapp")
    ok("identity", "create", "-g", "rg", "-n", "second")
    r = mi("identity", "assign", "--resource", "flow", "-g", "rg", "--identities", "shared", "second")
    assert r.code == 1
    assert r.err == az_error("BadRequest", "User Assigned Identities Number '2' Assign exceed limit '1' in one request.")


def test_rule8_type_moves_back_as_identities_are_removed(ok, scenario):
    assert ok("identity", "remove", "--resource", "vm1", "-g", "rg", "--identities", "shared")["type"] == "SystemAssigned"
    assert ok("identity", "remove", "--resource", "app1", "-g", "rg", "--identities", "shared") == {"type": "None"}
    assert _block(ok, "app1") is None


def test_rule9_deleting_a_group_takes_everything_in_it_in_one_go(ok, mi, scenario):
    ok("group", "create", "-n", "other", "-l", "eastus")
    ok("resource", "create", "-g", "other", "-n", "app2", "--type", "webapp", "--user-assigned", scenario["id"])
    r = mi("group", "delete", "-n", "rg", "--yes")
    assert r.code == 0 and "app2" in r.err
    assert ok("identity", "list") == []
    assert [sp["displayName"] for sp in ok("sp", "list")] == []
    r = mi("group", "show", "-n", "rg")
    assert r.code == 3 and r.err == az_error("ResourceGroupNotFound", "Resource group 'rg' could not be found. Create it "
                                             "with 'mi group create -n rg -l LOCATION', or list the groups with 'mi group list'.")
    assert scenario["id"] in ok("resource", "show", "-g", "other", "-n", "app2")["identity"]["userAssignedIdentities"]


def test_rule10_arc_machines_have_an_always_on_system_identity(ok, mi):
    ok("group", "create", "-n", "rg", "-l", "westeurope")
    arc = ok("resource", "create", "-g", "rg", "-n", "edge-01", "--type", "arc")
    assert arc["identity"]["type"] == "SystemAssigned"
    r = mi("identity", "remove", "--resource", "edge-01", "-g", "rg")
    assert r.code == 1 and "always on" in r.err


def test_rule11_names_in_any_case_find_the_same_objects(ok, scenario):
    assert ok("identity", "show", "-n", "SHARED", "-g", "RG")["name"] == "shared"
    assert ok("identity", "show", "--ids", scenario["id"].upper().replace("/SUBSCRIPTIONS/", "/subscriptions/"))["name"] == "shared"
    assert ok("resource", "show", "-g", "Rg", "-n", "VM1")["name"] == "vm1"


def test_identity_list_shows_user_assigned_ones_and_kind_adds_system_ones(ok, scenario):
    assert [i["name"] for i in ok("identity", "list")] == ["shared"]  # az identity list: user-assigned only
    everything = ok("identity", "list", "--kind", "all")
    assert sorted((i["type"], i["name"]) for i in everything) == [
        ("Microsoft.ManagedIdentity/identities", "vm1"), ("Microsoft.ManagedIdentity/userAssignedIdentities", "shared")]
    system = ok("identity", "list", "--kind", "system")
    assert [i["id"].endswith("/virtualMachines/vm1/providers/Microsoft.ManagedIdentity/identities/default") for i in system] == [True]
    assert [i["name"] for i in ok("identity", "list", "--kind", "user")] == ["shared"]


def test_user_assigned_identity_json_is_the_az_flattened_shape(ok, scenario):
    assert set(scenario) == {"clientId", "id", "isolationScope", "location", "name", "principalId", "resourceGroup",
                             "tags", "tenantId", "type"}
    assert "/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/shared" in scenario["id"]
    assert scenario["isolationScope"] == "None" and scenario["type"] == "Microsoft.ManagedIdentity/userAssignedIdentities"
    assert scenario["tenantId"] == ok("account", "show")["tenantId"]
    sp = ok("sp", "show", "--id", scenario["clientId"])  # by appId too
    assert (sp["id"], sp["appId"], sp["displayName"]) == (scenario["principalId"], scenario["clientId"], "shared")
    assert sp["alternativeNames"] == ["isExplicit=True", scenario["id"]]


def test_creates_rerun_return_the_same_ids_with_tags_updated(ok):
    ok("group", "create", "-n", "rg", "-l", "westeurope")
    a = ok("identity", "create", "-g", "rg", "-n", "ci-id", "--tags", "env=dev")
    b = ok("identity", "create", "-g", "rg", "-n", "ci-id", "--tags", "env=prod", "team=core")
    assert (a["principalId"], a["clientId"]) == (b["principalId"], b["clientId"])
    assert b["tags"] == {"env": "prod", "team": "core"}
    v1 = ok("resource", "create", "-g", "rg", "-n", "vm1", "--type", "vm", "--system-assigned")
    v2 = ok("resource", "create", "-g", "rg", "-n", "vm1", "--type", "vm", "--system-assigned")
    assert v1 == v2
    assert ok("identity", "update", "-n", "ci-id", "-g", "rg", "--tags", "")["tags"] == {}


def test_federated_credentials_through_the_cli(ok, mi):
    ok("group", "create", "-n", "rg", "-l", "westeurope")
    uami = ok("identity", "create", "-g", "rg", "-n", "deployer")
    fic = ok("identity", "federated-credential", "create", "-n", "main-branch", "--identity-name", "deployer", "-g", "rg",
             "--issuer", "https://token.actions.githubusercontent.com", "--subject", "repo:org/app:ref:refs/heads/main")
    assert fic == {
        "audiences": ["api://AzureADTokenExchange"],
        "id": uami["id"] + "/federatedIdentityCredentials/main-branch",
        "issuer": "https://token.actions.githubusercontent.com",
        "name": "main-branch",
        "resourceGroup": "rg",
        "subject": "repo:org/app:ref:refs/heads/main",
        "type": "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials",
    }
    assert [f["name"] for f in ok("identity", "federated-credential", "list", "--identity-name", "deployer", "-g", "rg")] == ["main-branch"]
    ok("identity", "federated-credential", "delete", "-n", "main-branch", "--identity-name", "deployer", "-g", "rg", "--yes")
    ok("identity", "federated-credential", "delete", "-n", "main-branch", "--identity-name", "deployer", "-g", "rg", "--yes")
    r = mi("identity", "federated-credential", "show", "-n", "main-branch", "--identity-name", "deployer", "-g", "rg")
    assert r.code == 3


def test_subscriptions_and_cross_subscription_groups(ok):
    account = ok("account", "show")
    sub = ok("subscription", "create", "-n", "prod")
    assert sub["tenantId"] == account["tenantId"] and not sub["isDefault"]
    ok("group", "create", "-n", "rg", "-l", "westeurope", "--subscription", "prod")
    assert ok("group", "list") == []
    assert [g["name"] for g in ok("group", "list", "--subscription", "prod")] == ["rg"]
    assert [s["name"] for s in ok("subscription", "list")] == ["mi-subscription", "prod"]


def test_log_records_changes(ok, scenario):
    ops = [e["operationName"] for e in ok("log")]
    assert "Microsoft.ManagedIdentity/userAssignedIdentities/write" in ops
    assert "Microsoft.Directory/servicePrincipals/create" in ops
    ok("resource", "delete", "-g", "rg", "-n", "vm1", "-y")
    deletes = ok("log", "--operation", "delete")
    assert {e["operationName"] for e in deletes} == {"Microsoft.Compute/virtualMachines/delete", "Microsoft.Directory/servicePrincipals/delete"}
    assert len(ok("log", "--limit", "2")) == 2
    everything = ok("log")
    assert ok("log", "--since", "1h") == everything  # all of it happened within the hour
    about_shared = ok("log", "--target", "shared")
    assert about_shared and all("shared" in e["resourceId"].lower() for e in about_shared)
    assert len(about_shared) < len(everything)
    assert len(ok("log", "--since", "99999999d")) == len(ok("log"))  # further back than dates go: everything


def test_compare_shows_this_stores_facts(ok, mi, scenario):
    rows = ok("compare")
    assert [r["characteristic"] for r in rows] == ["Creation", "Lifecycle", "Sharing across Azure resources"]
    assert "shared is shared by vm1, app1" in rows[2]["inThisStore"]
    assert "deleting vm1 deletes its system identity" in rows[1]["inThisStore"]
    table = mi("compare", "-o", "table").out
    assert "In this store" in table and "Cannot be shared" in table


def test_a_recreated_identity_does_not_inherit_the_old_ones_attachments(ok, mi, scenario):
    mi("identity", "delete", "-n", "shared", "-g", "rg", "--yes")
    again = ok("identity", "create", "-g", "rg", "-n", "shared")
    assert again["id"] == scenario["id"] and again["principalId"] != scenario["principalId"]
    assert ok("identity", "list-resources", "-n", "shared", "-g", "rg") == []
    # the VM still holds the old reference, with the old ids, until it is assigned again
    assert _block(ok, "vm1")["userAssignedIdentities"][scenario["id"]]["principalId"] == scenario["principalId"]
    ok("identity", "assign", "--resource", "vm1", "-g", "rg", "--identities", "shared")
    assert _block(ok, "vm1")["userAssignedIdentities"][scenario["id"]]["principalId"] == again["principalId"]
    assert [r["name"] for r in ok("identity", "list-resources", "-n", "shared", "-g", "rg")] == ["vm1"]
