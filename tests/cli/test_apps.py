"""`mi app`: app registrations for one's own API with az ad app's names and shapes, client secrets, app roles granted
to managed identities and carried in the `roles` claim of their tokens; bad input refused as az refuses it, with
nothing stored."""

from __future__ import annotations

import json
import sqlite3

import jwt
import pytest

from mi_cli.models import SCHEMA_VERSION
from tests.conftest import dump, one_error

ROLES = [
    {"allowedMemberTypes": ["Application"], "description": "Read the orders", "displayName": "Orders reader",
     "value": "Orders.Read"},
    {"allowedMemberTypes": ["Application"], "description": "Change the orders", "displayName": "Orders writer",
     "value": "Orders.Write", "isEnabled": True, "id": "1b4f816e-5eaf-48b9-8613-7923830595ad"},
    {"allowedMemberTypes": ["User"], "description": "People who approve", "displayName": "Approver", "value": "Approve"},
]


@pytest.fixture
def api(ok, tmp_path):
    """A VM with its system identity, and the orders API registered with three app roles."""
    ok("group", "create", "-n", "rg", "-l", "westeurope")
    ok("resource", "create", "-g", "rg", "-n", "vm1", "--type", "vm", "--system-assigned")
    roles = tmp_path / "roles.json"
    roles.write_text(json.dumps(ROLES))
    return ok("app", "create", "--display-name", "orders-api", "--identifier-uris", "api://orders",
              "https://orders.contoso.test", "--app-roles", f"@{roles}")


def _claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def test_app_create_prints_graphs_application_as_az_ad_app_create_does(api):
    assert api["displayName"] == "orders-api" and api["identifierUris"] == ["api://orders", "https://orders.contoso.test"]
    assert api["signInAudience"] == "AzureADMyOrg" and api["passwordCredentials"] == []
    assert {"appId", "id", "api", "web", "spa", "publicClient", "keyCredentials", "requiredResourceAccess"} <= set(api)
    reader, writer, approver = api["appRoles"]
    assert set(reader) == {"allowedMemberTypes", "description", "displayName", "id", "isEnabled", "origin", "value"}
    assert reader["isEnabled"] is True and len(reader["id"]) == 36  # az gives a role without an id a new one
    assert writer["id"] == ROLES[1]["id"] and approver["allowedMemberTypes"] == ["User"]
    assert api["appId"] != api["id"]


def test_create_again_with_the_same_display_name_patches_it_as_az_does(api, mi):
    again = mi("app", "create", "--display-name", "orders-api", "--identifier-uris", "api://orders", "-o", "json")
    assert again.code == 0 and again.json["id"] == api["id"] and again.json["appId"] == api["appId"]
    assert again.err == f"WARNING: Found an existing application instance: (id) {api['id']}. We will patch it.\n"
    assert again.json["identifierUris"] == ["api://orders"] and len(again.json["appRoles"]) == 3


def test_show_by_app_id_object_id_or_identifier_uri_list_and_delete(api, ok, mi):
    for ref in (api["appId"], api["id"], "api://orders"):
        assert ok("app", "show", "--id", ref)["id"] == api["id"]
    assert [a["appId"] for a in ok("app", "list", "--display-name", "orders")] == [api["appId"]]
    assert ok("app", "list", "--identifier-uri", "api://other") == []
    assert mi("app", "delete", "--id", api["appId"]).code == 0
    gone = mi("app", "show", "--id", api["appId"])
    assert gone.code == 3 and one_error(gone.err) and "Request_ResourceNotFound" in gone.err
    missing = mi("app", "show", "--id", "api://nothing")
    assert missing.code == 3 and "Application with identifier URI 'api://nothing' doesn't exist" in missing.err


def test_credential_reset_prints_app_id_password_and_tenant_once(api, ok, mi):
    reset = mi("app", "credential", "reset", "--id", api["appId"], "-o", "json")
    assert reset.code == 0 and set(reset.json) == {"appId", "password", "tenant"}
    assert reset.err.startswith("WARNING: The output includes credentials that you must protect.")
    secret = reset.json["password"]
    assert reset.json["appId"] == api["appId"] and reset.json["tenant"] == ok("account", "show")["tenantId"]
    assert len(secret) == 40 and secret[3:6] == "8Q~"
    listed = ok("app", "credential", "list", "--id", api["appId"])
    assert [c["hint"] for c in listed] == [secret[:3]] and listed[0]["secretText"] is None
    assert secret not in json.dumps(ok("app", "show", "--id", api["appId"]))  # shown once, never stored
    mi("app", "credential", "reset", "--id", api["appId"], "--append", "--display-name", "ci")
    assert len(ok("app", "credential", "list", "--id", api["appId"])) == 2
    mi("app", "credential", "reset", "--id", api["appId"])  # without --append: the others go
    assert len(ok("app", "credential", "list", "--id", api["appId"])) == 1


def test_the_service_principal_of_an_app_has_graphs_shape(api, ok):
    sp = ok("app", "sp", "show", "--id", "api://orders")
    assert sp["servicePrincipalType"] == "Application" and sp["appId"] == api["appId"]
    assert sp["servicePrincipalNames"] == [api["appId"], "api://orders", "https://orders.contoso.test"]
    assert sp["appRoles"] == api["appRoles"] and sp["id"] not in (api["id"], api["appId"])


def test_a_granted_role_is_in_the_roles_claim_of_the_identitys_token_for_the_api(api, ok, mi):
    vm = ok("resource", "show", "-g", "rg", "-n", "vm1")
    granted = ok("app", "role", "assign", "--assignee", "vm1", "--app", "orders-api", "--role", "Orders.Read")
    assert granted["principalId"] == vm["identity"]["principalId"] and granted["principalType"] == "ServicePrincipal"
    assert granted["resourceId"] == ok("app", "sp", "show", "--id", api["appId"])["id"]
    assert granted["appRoleId"] == api["appRoles"][0]["id"] and len(granted["id"]) == 43
    ok("app", "role", "assign", "--assignee", vm["identity"]["principalId"], "--app", api["appId"], "--role",
       ROLES[1]["id"])
    for audience in ("api://orders", "https://orders.contoso.test/", api["appId"]):
        claims = _claims(ok("token", "get", "--resource", "vm1", "-g", "rg", "--audience", audience)["access_token"])
        assert claims["roles"] == ["Orders.Read", "Orders.Write"] and claims["aud"] == audience
    vault = _claims(ok("token", "get", "--resource", "vm1", "-g", "rg", "--audience", "https://vault.azure.net")["access_token"])
    assert "roles" not in vault  # roles are the API's, in its tokens only
    assert [r["appRoleValue"] for r in ok("app", "role", "list", "--assignee", "vm1")] == ["Orders.Read", "Orders.Write"]
    for _ in range(2):  # removing what is not assigned succeeds
        removed = mi("app", "role", "remove", "--assignee", "vm1", "--app", "orders-api", "--role", "Orders.Write", "--yes")
        assert (removed.code, removed.out, removed.err) == (0, "", "")
    claims = _claims(ok("token", "get", "--resource", "vm1", "-g", "rg", "--audience", "api://orders")["access_token"])
    assert claims["roles"] == ["Orders.Read"]
    assert mi("app", "delete", "--id", "api://orders").code == 0  # the API goes, and its assignments with it
    assert ok("app", "role", "list") == []
    refused = mi("token", "get", "--resource", "vm1", "-g", "rg", "--audience", "api://orders")
    assert refused.code == 1 and "AADSTS500011: The resource principal named api://orders was not found" in refused.err


def test_graph_application_permissions_can_be_granted_to_an_identity(api, ok):
    ok("app", "role", "assign", "--assignee", "vm1", "--app", "Microsoft Graph", "--role", "Application.Read.All")
    got = ok("token", "get", "--resource", "vm1", "-g", "rg", "--audience", "https://graph.microsoft.com")
    claims = _claims(got["access_token"])
    assert claims["roles"] == ["Application.Read.All"]


def test_tokens_for_a_resource_the_tenant_does_not_know_are_refused_as_entra_does(api, mi, ok):
    refused = mi("token", "get", "--resource", "vm1", "-g", "rg", "--audience", "https://cache.test")
    assert refused.code == 1 and one_error(refused.err)
    assert refused.err.startswith("ERROR: (invalid_resource) AADSTS500011: The resource principal named https://cache.test "
                                  "was not found in the tenant named mi tenant.")
    for known in ("https://management.azure.com", "https://management.core.windows.net/", "https://storage.azure.com",
                  "https://st1.blob.core.windows.net", "https://database.windows.net", "https://graph.microsoft.com/",
                  "api://AzureADTokenExchange", "https://vault.azure.net/.default"):
        assert ok("token", "get", "--resource", "vm1", "-g", "rg", "--audience", known)["access_token"]
    assert ok("log", "--operation", "token/issue")[0]["status"] == "Failed"


@pytest.mark.parametrize("args, code, text", [
    (("--app-roles", "[{"), 1, "ERROR: (InvalidArgumentValue) Failed to parse string as JSON: [{ Error detail:"),
    (("--app-roles", json.dumps([{**ROLES[0], "value": "Orders Read"}])), 1, "property 'value' of resource 'AppRole'"),
    (("--app-roles", json.dumps([{**ROLES[0], "allowedMemberTypes": ["Robot"]}])), 1, "'allowedMemberTypes'"),
    (("--app-roles", json.dumps([ROLES[0], ROLES[0]])), 1, "must be unique"),
    (("--app-roles", json.dumps([{**ROLES[0], "id": "not-a-guid"}])), 1, "is not a GUID"),
    (("--identifier-uris", "api://orders"), 1, "Another object with the same value for property identifierUris already exists."),
    (("--identifier-uris", "https://graph.microsoft.com"), 1, "must use a verified domain of the organization"),
    (("--identifier-uris", "orders"), 1, "'identifierUris'"),
])
def test_bad_input_is_refused_in_one_line_and_nothing_is_stored(api, mi, db, args, code, text):
    before = dump(db)
    result = mi("app", "create", "--display-name", "other-api", *args)
    assert result.code == code and one_error(result.err) and text in result.err, result.err
    assert dump(db) == before


def test_role_grants_that_graph_refuses(api, mi, ok, db):
    before = dump(db)
    missing = mi("app", "role", "assign", "--assignee", "vm1", "--app", "orders-api", "--role", "Orders.Delete")
    assert missing.code == 1 and f"Permission being assigned was not found on application '{api['appId']}'" in missing.err
    users_only = mi("app", "role", "assign", "--assignee", "vm1", "--app", "orders-api", "--role", "Approve")
    assert users_only.code == 1 and "allowedMemberTypes" in users_only.err
    nobody = mi("app", "role", "assign", "--assignee", "vm-none", "--app", "orders-api", "--role", "Orders.Read")
    assert nobody.code == 1 and "PrincipalNotFound" in nobody.err
    assert dump(db) == before
    ok("app", "role", "assign", "--assignee", "vm1", "--app", "orders-api", "--role", "Orders.Read")
    twice = mi("app", "role", "assign", "--assignee", "vm1", "--app", "orders-api", "--role", "Orders.Read")
    assert twice.code == 1 and "Permission being assigned already exists on the object" in twice.err


def test_reset_empties_the_app_registrations_too(api, ok, mi):
    ok("app", "role", "assign", "--assignee", "vm1", "--app", "orders-api", "--role", "Orders.Read")
    assert mi("app", "credential", "reset", "--id", "api://orders").code == 0
    assert mi("reset", "--yes").code == 0
    assert ok("app", "list") == [] and ok("app", "role", "list") == []


def test_a_version_6_store_gains_the_app_tables(tmp_path, mi, db):
    assert mi("group", "create", "-n", "rg", "-l", "westeurope", "-o", "none").code == 0
    con = sqlite3.connect(db)
    for table in ("application_secret", "app_role_assignment", "application"):
        con.execute(f"DROP TABLE {table}")
    con.execute("UPDATE meta SET value = '6' WHERE key = 'schema_version'")
    con.commit()
    con.close()
    assert mi("app", "create", "--display-name", "api", "-o", "none").code == 0
    con = sqlite3.connect(db)
    assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (str(SCHEMA_VERSION),)
    assert con.execute("SELECT count(*) FROM application").fetchone() == (1,)
    con.close()
    assert SCHEMA_VERSION >= 7


def test_an_app_registration_takes_azure_roles_by_app_id_object_id_or_name(ok, mi, api):
    sp = ok("app", "sp", "show", "--id", api["appId"])["id"]
    for assignee in (api["appId"], sp, "orders-api"):
        made = ok("role", "assignment", "create", "--assignee", assignee, "--role", "Reader", "-g", "rg")
        assert (made["principalId"], made["principalType"]) == (sp, "ServicePrincipal"), assignee
    assert ok("access", "check", "--principal", "orders-api", "--action", "Microsoft.Compute/virtualMachines/read",
              "--scope", ok("group", "show", "-n", "rg")["id"])["allowed"] is True
    r = mi("role", "assignment", "create", "--assignee", "orders-apj", "--role", "Reader", "-g", "rg")
    assert r.code != 0 and "(PrincipalNotFound)" in r.err and "Traceback" not in r.err
