"""Role definitions and role assignments on the local cloud's ARM plane: Microsoft's unmodified
azure-mgmt-authorization client, signed in as a VM's managed identity through `mi env`, against a real `mi serve`
— allowed and refused by the store's roles, and what it writes is what `mi role` shows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from tests.clients.conftest import mi_json, start_server

pytest.importorskip("azure.mgmt.authorization")

OWNER, READER = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635", "acdd72a7-3385-48ef-bd42-f606fba81ae7"
BLOB_READER, BLOB_CONTRIBUTOR = "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1", "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
RBAC_ADMIN = "Role Based Access Control Administrator"
# a delegation condition (delegate-role-assignments-examples.md, "Constrain roles"): only Storage Blob Data Reader
ONLY_BLOB_READER = ("((!(ActionMatches{'Microsoft.Authorization/roleAssignments/write'})) OR "
                    f"(@Request[Microsoft.Authorization/roleAssignments:RoleDefinitionId] ForAnyOfAnyValues:GuidEquals {{{BLOB_READER}}}))")
LOGS_ONLY = ("((!(ActionMatches{'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read'})) OR "
             "(@Resource[Microsoft.Storage/storageAccounts/blobServices/containers:name] StringEquals 'logs'))")

# The app: the management SDK as a deployment script uses it; each step's answer as ARM sent it (status, JSON body).
APP = r"""
import json, sys
from azure.core.exceptions import HttpResponseError
from azure.identity import ManagedIdentityCredential
from azure.mgmt.authorization import AuthorizationManagementClient

subscription, steps = sys.argv[1], json.loads(sys.argv[2])
client = AuthorizationManagementClient(ManagedIdentityCredential(), subscription)
raw = lambda response, deserialized, headers: {"status": response.http_response.status_code,
                                                "body": json.loads(response.http_response.text() or "null")}

def run(op, *args):
    try:
        if op == "definitions":
            return {"value": [d.as_dict() for d in client.role_definitions.list(args[0], filter=args[1])]}
        if op == "definition":
            return client.role_definitions.get_by_id(args[0], cls=raw)
        if op == "create":
            scope, name, role, principal, extra = args
            return client.role_assignments.create(scope, name, {"role_definition_id": role, "principal_id": principal, **extra},
                                                  cls=raw)
        if op == "get":
            return client.role_assignments.get(args[0], args[1], cls=raw)
        if op == "list":
            return {"value": [a.as_dict() for a in client.role_assignments.list_for_scope(args[0], filter=args[1])]}
        if op == "delete":
            return client.role_assignments.delete(args[0], args[1], cls=raw)
        if op == "define":
            return client.role_definitions.create_or_update(args[0], args[1], args[2], cls=raw)
        if op == "undefine":
            return client.role_definitions.delete(args[0], args[1], cls=raw)
    except HttpResponseError as exc:
        return {"status": exc.status_code, "code": exc.error.code if exc.error else None, "message": exc.error.message if exc.error else None}

print(json.dumps([run(*step) for step in steps]))
"""


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    """rg with vm-admin (Owner on rg), vm-contrib (Contributor on rg), vm-delegate (RBAC Administrator on rg, only
    for Storage Blob Data Reader), the identity ua-target to grant roles to, a storage account st1 in rg, Reader
    for ua-target on the subscription and on st1, and a running `mi serve`."""
    db = tmp_path_factory.mktemp("armauth") / "store.db"

    def ok(*argv):
        return mi_json(db, *argv)

    ok("group", "create", "-n", "rg", "-l", "westeurope")
    sub = ok("account", "show")["id"]
    rg = f"/subscriptions/{sub}/resourceGroups/rg"
    vms = {name: ok("resource", "create", "-g", "rg", "-n", name, "--type", "vm", "--system-assigned")["identity"]["principalId"]
           for name in ("vm-admin", "vm-contrib", "vm-delegate")}
    target = ok("identity", "create", "-g", "rg", "-n", "ua-target")["principalId"]
    storage = ok("resource", "create", "-g", "rg", "-n", "st1", "--type", "storage")["id"]
    ok("role", "assignment", "create", "--assignee", "vm-admin", "--role", "Owner", "--scope", rg)
    ok("role", "assignment", "create", "--assignee", "vm-contrib", "--role", "Contributor", "--scope", rg)
    ok("role", "assignment", "create", "--assignee", "vm-delegate", "--role", RBAC_ADMIN, "--scope", rg,
       "--condition", ONLY_BLOB_READER)
    above = ok("role", "assignment", "create", "--assignee-object-id", target, "--assignee-principal-type", "ServicePrincipal",
               "--role", "Reader", "--scope", f"/subscriptions/{sub}")
    below = ok("role", "assignment", "create", "--assignee", "ua-target", "--role", "Reader", "--scope", storage)
    custom = ok("role", "definition", "create", "--role-definition", json.dumps({
        "Name": "Blob Auditor", "Description": "Reads containers.", "Actions": ["Microsoft.Storage/storageAccounts/read"],
        "AssignableScopes": [rg]}))
    srv = start_server(db)
    yield {"db": db, "sub": sub, "rg": rg, "vms": vms, "target": target, "storage": storage, "above": above["id"],
           "below": below["id"], "custom": custom, "server": srv}
    assert srv.stop() == 0, srv.log.read_text()


def app(cloud, vm: str, *steps) -> list[dict]:
    """Run the app on `vm` (its identity through `mi env`, nothing else) and return each step's answer."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "IDENTITY_", "MSI_", "IMDS_"))}
    env.update(mi_json(cloud["db"], "env", "--resource", vm, "-g", "rg"))
    r = subprocess.run([sys.executable, "-c", APP, cloud["sub"], json.dumps(steps)], env=env, capture_output=True, text=True,
                       timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def role_id(cloud, guid: str) -> str:
    return f"/subscriptions/{cloud['sub']}/providers/Microsoft.Authorization/roleDefinitions/{guid}"


def listed(cloud, scope: str) -> list[dict]:
    return mi_json(cloud["db"], "role", "assignment", "list", "--scope", scope)


def test_role_definitions_are_found_by_name_type_and_id_as_az_finds_them(cloud):
    custom = cloud["custom"]
    by_name, builtin, customs, below, root = app(
        cloud, "vm-admin", ("definitions", cloud["rg"], "roleName eq 'reader'"),
        ("definitions", cloud["rg"], "type eq 'BuiltInRole'"), ("definitions", cloud["rg"], "type eq 'CustomRole'"),
        ("definitions", cloud["storage"], "roleName eq 'blob auditor'"),
        ("definition", f"/providers/Microsoft.Authorization/roleDefinitions/{OWNER}"))
    [reader] = by_name["value"]
    assert reader["id"] == role_id(cloud, READER) and reader["name"] == READER and reader["role_name"] == "Reader"
    assert reader["role_type"] == "BuiltInRole" and reader["assignable_scopes"] == ["/"]
    assert reader["permissions"] == [{"actions": ["*/read"], "not_actions": [], "data_actions": [], "not_data_actions": []}]
    assert {r["role_name"] for r in builtin["value"]} >= {"Owner", "Contributor", "Reader", RBAC_ADMIN}
    assert all(r["role_type"] == "BuiltInRole" for r in builtin["value"])
    # a custom role assignable on rg is applicable at rg and below it
    assert [r["role_name"] for r in customs["value"]] == ["Blob Auditor"] and customs["value"][0]["name"] == custom["name"]
    assert [r["id"] for r in below["value"]] == [role_id(cloud, custom["name"])]
    assert root["status"] == 200 and root["body"]["id"] == f"/providers/Microsoft.Authorization/roleDefinitions/{OWNER}"
    assert root["body"]["properties"]["roleName"] == "Owner" and root["body"]["properties"]["type"] == "BuiltInRole"


def test_an_owner_vm_grants_a_role_that_mi_shows_and_revokes_it(cloud):
    rg, target, admin = cloud["rg"], cloud["target"], cloud["vms"]["vm-admin"]
    name = str(uuid.uuid4())
    created, fetched, at_scope, everything, again = app(
        cloud, "vm-admin",
        ("create", rg, name, role_id(cloud, BLOB_READER), target, {"principal_type": "ServicePrincipal", "description": "ci"}),
        ("get", rg, name), ("list", rg, "atScope()"), ("list", rg, None),
        ("create", rg, str(uuid.uuid4()), role_id(cloud, BLOB_READER), target, {"principal_type": "ServicePrincipal"}))
    assert created["status"] == 201
    body = created["body"]
    assert body["id"] == f"{rg}/providers/Microsoft.Authorization/roleAssignments/{name}" and body["name"] == name
    assert body["type"] == "Microsoft.Authorization/roleAssignments"
    props = body["properties"]
    assert props["roleDefinitionId"] == role_id(cloud, BLOB_READER) and props["principalId"] == target
    assert props["principalType"] == "ServicePrincipal" and props["scope"] == rg and props["description"] == "ci"
    # as ARM answers the PUT: createdBy null, updatedBy the caller, times with seven decimals
    assert props["createdBy"] is None and props["updatedBy"] == admin and props["createdOn"].endswith("Z")
    assert fetched["status"] == 200 and fetched["body"]["properties"]["createdBy"] == admin
    # atScope(): at rg and above it (the subscription's Reader), not below it (st1's Reader); no filter: below too
    ids_at = {a["id"] for a in at_scope["value"]}
    assert body["id"] in ids_at and cloud["above"] in ids_at and cloud["below"] not in ids_at
    assert cloud["below"] in {a["id"] for a in everything["value"]} and ids_at <= {a["id"] for a in everything["value"]}
    # the same principal, role and scope under another name: ARM's 409, with the existing assignment's id
    assert again["status"] == 409 and again["code"] == "RoleAssignmentExists"
    assert again["message"] == f"The role assignment already exists. The ID of the existing role assignment is {name.replace('-', '')}."

    shown = [a for a in listed(cloud, rg) if a["name"] == name]
    assert shown and shown[0]["roleDefinitionName"] == "Storage Blob Data Reader" and shown[0]["principalId"] == target
    log = mi_json(cloud["db"], "log", "--operation", "Microsoft.Authorization/roleAssignments/write")
    assert any(row["resourceId"] == body["id"] and row["caller"] == admin and row["status"] == "Succeeded" for row in log)

    deleted, gone, missing = app(cloud, "vm-admin", ("delete", rg, name), ("delete", rg, name), ("get", rg, name))
    assert deleted["status"] == 200 and deleted["body"]["id"] == body["id"] and deleted["body"]["properties"]["createdBy"] == admin
    assert gone["status"] == 204 and missing["status"] == 404 and missing["code"] == "RoleAssignmentNotFound"
    assert not [a for a in listed(cloud, rg) if a["name"] == name]


def test_a_contributor_vm_reads_assignments_but_may_not_grant_roles(cloud):
    rg, contrib, name = cloud["rg"], cloud["vms"]["vm-contrib"], str(uuid.uuid4())
    reads, principal, refused = app(
        cloud, "vm-contrib", ("list", rg, "atScope()"), ("list", rg, f"principalId eq '{cloud['target']}'"),
        ("create", rg, name, role_id(cloud, OWNER), contrib, {"principal_type": "ServicePrincipal"}))
    assert any(a["principal_id"] == contrib for a in reads["value"])
    # principalId eq: that principal's assignments at, above (the subscription) and below (st1) the scope
    assert {a["id"] for a in principal["value"]} >= {cloud["above"], cloud["below"]}
    assert {a["principal_id"] for a in principal["value"]} == {cloud["target"]}
    assert refused["status"] == 403 and refused["code"] == "AuthorizationFailed"
    assert refused["message"] == (
        f"The client '{contrib}' with object id '{contrib}' does not have authorization to perform action "
        f"'Microsoft.Authorization/roleAssignments/write' over scope '{rg}/providers/Microsoft.Authorization/roleAssignments/"
        f"{name}' or the scope is invalid. If access was recently granted, please refresh your credentials.")
    assert not [a for a in listed(cloud, rg) if a["principalId"] == contrib and a["roleDefinitionName"] == "Owner"]
    check = mi_json(cloud["db"], "access", "check", "--principal", contrib, "--action",
                    "Microsoft.Authorization/roleAssignments/write", "--scope", rg)
    assert not check["allowed"] and "Microsoft.Authorization/*/Write" in check["reason"]


def test_a_delegation_condition_lets_a_vm_grant_only_the_roles_it_names(cloud):
    rg, target = cloud["rg"], cloud["target"]
    allowed, refused = app(
        cloud, "vm-delegate",
        ("create", cloud["storage"], str(uuid.uuid4()), role_id(cloud, BLOB_READER), target, {"principal_type": "ServicePrincipal"}),
        ("create", rg, str(uuid.uuid4()), role_id(cloud, OWNER), target, {"principal_type": "ServicePrincipal"}))
    assert allowed["status"] == 201, allowed
    assert allowed["body"]["properties"]["scope"] == cloud["storage"]
    assert refused["status"] == 403 and refused["code"] == "AuthorizationFailed"
    assert not [a for a in listed(cloud, rg) if a["principalId"] == target and a["roleDefinitionName"] == "Owner"]


def test_a_condition_round_trips_and_a_malformed_one_is_arms_400(cloud):
    storage, target, name = cloud["storage"], cloud["target"], str(uuid.uuid4())
    created, fetched, malformed = app(
        cloud, "vm-admin",
        ("create", storage, name, role_id(cloud, BLOB_CONTRIBUTOR), target,
         {"principal_type": "ServicePrincipal", "condition": LOGS_ONLY, "condition_version": "2.0"}),
        ("get", storage, name),
        ("create", storage, str(uuid.uuid4()), role_id(cloud, "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"), target,
         {"principal_type": "ServicePrincipal", "condition": "@Resource[x] StringEquals", "condition_version": "2.0"}))
    assert created["status"] == 201 and fetched["status"] == 200
    for answer in (created, fetched):
        assert answer["body"]["properties"]["condition"] == LOGS_ONLY and answer["body"]["properties"]["conditionVersion"] == "2.0"
    [shown] = [a for a in listed(cloud, storage) if a["name"] == name]
    assert shown["condition"] == LOGS_ONLY and shown["conditionVersion"] == "2.0"
    assert malformed["status"] == 400 and malformed["code"] == "InvalidRoleAssignmentCondition"


def test_arms_errors_for_a_bad_name_an_unknown_role_and_an_unknown_principal(cloud):
    rg, target = cloud["rg"], cloud["target"]
    stranger, unknown_role = str(uuid.uuid4()), str(uuid.uuid4())
    bad_name, no_role, no_principal, moved = app(
        cloud, "vm-admin", ("create", rg, "not-a-guid", role_id(cloud, READER), target, {"principal_type": "ServicePrincipal"}),
        ("create", rg, str(uuid.uuid4()), role_id(cloud, unknown_role), target, {"principal_type": "ServicePrincipal"}),
        ("create", rg, str(uuid.uuid4()), role_id(cloud, READER), stranger, {}),
        # the subscription's assignment's name, PUT again at rg: an assignment cannot change its scope
        ("create", rg, cloud["above"].rsplit("/", 1)[-1], role_id(cloud, READER), target, {"principal_type": "ServicePrincipal"}))
    assert bad_name == {"status": 400, "code": "InvalidRoleAssignmentId",
                        "message": "The role assignment ID 'not-a-guid' is not valid. The role assignment ID must be a GUID."}
    assert no_role == {"status": 400, "code": "RoleDefinitionDoesNotExist",
                       "message": f"The specified role definition with ID '{unknown_role.replace('-', '')}' does not exist."}
    assert no_principal["status"] == 400 and no_principal["code"] == "PrincipalNotFound"
    assert no_principal["message"].startswith(f"Principal {stranger} does not exist in the directory ")
    assert moved == {"status": 400, "code": "RoleAssignmentUpdateNotPermitted",
                     "message": "Tenant ID, application ID, principal ID, and scope are not allowed to be updated."}


def test_an_owner_vm_defines_a_custom_role_on_its_group_and_a_contributor_may_not(cloud):
    rg, guid = cloud["rg"], str(uuid.uuid4())
    role = {"role_name": "Deployment Reader", "description": "Reads deployments.", "role_type": "CustomRole",
            "permissions": [{"actions": ["Microsoft.Resources/deployments/read"]}], "assignable_scopes": [rg]}
    [refused] = app(cloud, "vm-contrib", ("define", rg, guid, role))
    assert refused["status"] == 403 and refused["code"] == "AuthorizationFailed"
    assert "'Microsoft.Authorization/roleDefinitions/write'" in refused["message"]
    created, found, deleted, gone = app(cloud, "vm-admin", ("define", rg, guid, role),
                                        ("definitions", rg, "roleName eq 'Deployment Reader'"), ("undefine", rg, guid),
                                        ("undefine", rg, guid))
    assert created["status"] == 201 and created["body"]["name"] == guid
    assert created["body"]["properties"]["type"] == "CustomRole" and created["body"]["properties"]["assignableScopes"] == [rg]
    assert [r["name"] for r in found["value"]] == [guid]
    assert deleted["status"] == 200 and deleted["body"]["properties"]["roleName"] == "Deployment Reader"
    assert gone["status"] == 204
    assert "Deployment Reader" not in {r["roleName"] for r in mi_json(cloud["db"], "role", "definition", "list")}
    log = mi_json(cloud["db"], "log", "--operation", "Microsoft.Authorization/roleDefinitions/write")
    assert [(row["caller"], row["status"]) for row in log if row["resourceId"].endswith(guid)] == [
        (cloud["vms"]["vm-contrib"], "Failed"), (cloud["vms"]["vm-admin"], "Succeeded")]
