"""Entra's sign-in and Microsoft Graph through the local cloud, with unmodified clients: msal's
ConfidentialClientApplication and azure-identity's ClientSecretCredential sign in as an app registration with a
secret from `mi app credential reset`; a managed identity's token for the app's API carries the app roles granted
to it, from IMDS and App Service alike; a resource the tenant does not know is Entra's AADSTS500011; Graph answers
what az and these flows ask, with its own errors. Every client runs with nothing but the variables `mi env` prints."""

from __future__ import annotations

import json

import jwt
import msal
import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import ClientSecretCredential, ManagedIdentityCredential

from tests.clients.conftest import get, mi_json, start_server

LOGIN = "https://login.microsoftonline.com"
GRAPH = "https://graph.microsoft.com/v1.0"
ROLES = [{"allowedMemberTypes": ["Application"], "description": "Read the orders", "displayName": "Orders reader",
          "value": "Orders.Read"},
         {"allowedMemberTypes": ["Application"], "description": "Change the orders", "displayName": "Orders writer",
          "value": "Orders.Write"}]
ENTRA_ERROR = {"error", "error_description", "error_codes", "timestamp", "trace_id", "correlation_id", "error_uri"}


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    """vm1 and web1 (system identities) granted Orders.Read on the orders API; the daemon app with a secret,
    granted Orders.Write; a running mi serve."""
    db = tmp_path_factory.mktemp("entra") / "store.db"

    def ok(*argv):
        return mi_json(db, *argv)

    ok("group", "create", "-n", "rg", "-l", "westeurope")
    made = {"vm1": ok("resource", "create", "-g", "rg", "-n", "vm1", "--type", "vm", "--system-assigned"),
            "web1": ok("resource", "create", "-g", "rg", "-n", "web1", "--type", "webapp", "--system-assigned"),
            "api": ok("app", "create", "--display-name", "orders-api", "--identifier-uris", "api://orders",
                      "--app-roles", json.dumps(ROLES)),
            "daemon": ok("app", "create", "--display-name", "daemon")}
    for who in ("vm1", "web1"):
        ok("app", "role", "assign", "--assignee", who, "--app", "api://orders", "--role", "Orders.Read")
    ok("app", "role", "assign", "--assignee", made["daemon"]["appId"], "--app", "orders-api", "--role", "Orders.Write")
    made["secret"] = ok("app", "credential", "reset", "--id", made["daemon"]["appId"])["password"]
    made["tenant"] = ok("account", "show")["tenantId"]
    srv = start_server(db)
    made |= {"db": db, "server": srv, "env": ok("env", "--resource", "vm1", "-g", "rg")}
    yield made
    assert srv.stop() == 0, srv.log.read_text()


@pytest.fixture
def shell(cloud, client_env):
    """The process's environment as `eval "$(mi env --resource vm1 -g rg)"` leaves it: proxy, CA bundle, IMDS."""
    client_env(cloud["env"])
    return cloud


def _claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def _verified(cloud, token: str, audience: str) -> dict:
    return mi_json(cloud["db"], "token", "verify", token, "--audience", audience)["claims"]


def _graph_token(cloud) -> str:
    return ClientSecretCredential(cloud["tenant"], cloud["daemon"]["appId"], cloud["secret"]).get_token(
        "https://graph.microsoft.com/.default").token


def test_msal_confidential_client_signs_in_with_the_secret_mi_gave(shell):
    cca = msal.ConfidentialClientApplication(shell["daemon"]["appId"], client_credential=shell["secret"],
                                             authority=f"{LOGIN}/{shell['tenant']}")
    result = cca.acquire_token_for_client(scopes=["api://orders/.default"])
    assert result["token_type"] == "Bearer" and result["expires_in"] == 3599, result
    claims = _verified(shell, result["access_token"], "api://orders")
    assert claims["aud"] == "api://orders" and claims["appid"] == shell["daemon"]["appId"] and claims["appidacr"] == "1"
    assert claims["roles"] == ["Orders.Write"] and claims["idtyp"] == "app" and "xms_mirid" not in claims
    assert claims["iss"] == f"https://sts.windows.net/{shell['tenant']}/" and claims["tid"] == shell["tenant"]
    sp = mi_json(shell["db"], "app", "sp", "show", "--id", shell["daemon"]["appId"])
    assert claims["oid"] == claims["sub"] == sp["id"]


def test_entra_refuses_as_entra_does(shell):
    tenant, app_id = shell["tenant"], shell["daemon"]["appId"]

    def client(secret: str = shell["secret"], client_id: str = app_id):
        return msal.ConfidentialClientApplication(client_id, client_credential=secret, authority=f"{LOGIN}/{tenant}")

    wrong = client("not-the-secret").acquire_token_for_client(scopes=["api://orders/.default"])
    assert (wrong["error"], wrong["error_codes"]) == ("invalid_client", [7000215]) and set(wrong) >= ENTRA_ERROR
    assert wrong["error_description"].startswith("AADSTS7000215: Invalid client secret provided. Ensure the secret being "
                                                 "sent in the request is the client secret value, not the client secret "
                                                 f"ID, for a secret added to app '{app_id}'. Trace ID: ")
    assert wrong["error_uri"] == "https://login.microsoftonline.com/error?code=7000215"
    stranger = "5f3e4f0c-2a9b-4c1e-9a55-0d8f6c2b1a77"
    unknown = client(client_id=stranger).acquire_token_for_client(scopes=["api://orders/.default"])
    assert (unknown["error"], unknown["error_codes"]) == ("unauthorized_client", [700016])
    assert f"AADSTS700016: Application with identifier '{stranger}' was not found in the directory '{tenant}'." \
        in unknown["error_description"]
    nowhere = client().acquire_token_for_client(scopes=["https://cache.test/.default"])
    assert (nowhere["error"], nowhere["error_codes"]) == ("invalid_resource", [500011])
    assert nowhere["error_description"].startswith(f"AADSTS500011: The resource principal named https://cache.test was "
                                                   f"not found in the tenant named {tenant}.")
    token = f"{LOGIN}/{tenant}/oauth2/v2.0/token"
    form = {"grant_type": "client_credentials", "client_id": app_id, "client_secret": shell["secret"]}
    for extra, status, code, aadsts in (({"scope": "api://orders/Orders.Read"}, 400, "invalid_scope", 1002012),
                                        ({}, 400, "invalid_request", 900144),
                                        ({"scope": "api://orders/.default", "grant_type": "password"}, 400,
                                         "unsupported_grant_type", 70003)):
        answer = requests.post(token, data={**form, **extra},
                               headers={"client-request-id": "c0ffee00-0000-4000-8000-000000000001"})
        body = answer.json()
        assert (answer.status_code, body["error"], body["error_codes"]) == (status, code, [aadsts]), body
        assert body["correlation_id"] == "c0ffee00-0000-4000-8000-000000000001"  # the client's request id, echoed
    nobody = "00000000-0000-0000-0000-000000000000"
    with pytest.raises(ValueError, match="Unable to get authority configuration") as raised:
        msal.ConfidentialClientApplication(app_id, client_credential=shell["secret"], authority=f"{LOGIN}/{nobody}")
    assert f"AADSTS90002: Tenant '{nobody}' not found. Check to make sure you have the correct tenant ID" \
        in str(raised.value.__context__)  # the discovery document's answer, which msal wraps
    common = requests.post(f"{LOGIN}/common/oauth2/v2.0/token", data={**form, "scope": "api://orders/.default"}).json()
    assert common["error_codes"] == [50194]  # a single-tenant app on /common
    assertion = requests.post(token, data={**form, "client_secret": "", "scope": "api://orders/.default",
                                           "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                                           "client_assertion": jwt.encode({"iss": "https://issuer.test", "sub": "s"}, "k" * 32)})
    assert assertion.status_code == 401 and assertion.json()["error_codes"] == [70025]


def test_v1_token_endpoint_and_basic_client_authentication(shell):
    answer = requests.post(f"{LOGIN}/{shell['tenant']}/oauth2/token", auth=(shell["daemon"]["appId"], shell["secret"]),
                           data={"grant_type": "client_credentials", "resource": "https://management.core.windows.net/"})
    body = answer.json()
    assert answer.status_code == 200 and body["resource"] == "https://management.core.windows.net/"
    assert all(isinstance(body[k], str) for k in ("expires_in", "expires_on", "not_before"))
    assert _claims(body["access_token"])["aud"] == "https://management.core.windows.net/"


def test_openid_metadata_keys_and_instance_discovery_on_entras_host(shell):
    tenant = shell["tenant"]
    config = requests.get(f"{LOGIN}/{tenant}/v2.0/.well-known/openid-configuration").json()
    assert config["token_endpoint"] == f"{LOGIN}/{tenant}/oauth2/v2.0/token"
    assert config["issuer"] == f"{LOGIN}/{tenant}/v2.0" and config["jwks_uri"] == f"{LOGIN}/{tenant}/discovery/v2.0/keys"
    token = _graph_token(shell)  # first: the tenant's key is made when a token is first signed
    keys = requests.get(config["jwks_uri"]).json()["keys"]
    assert jwt.get_unverified_header(token)["kid"] in {k["kid"] for k in keys}
    # the tenant named as every endpoint names it: the metadata and the keys agree on which names are this tenant's
    for name in (tenant.upper(), f"%20{tenant}", "organizations", "nobody"):
        metadata = requests.get(f"{LOGIN}/{name}/v2.0/.well-known/openid-configuration")
        jwks = requests.get(f"{LOGIN}/{name}/discovery/v2.0/keys")
        assert metadata.status_code == jwks.status_code == (400 if name == "nobody" else 200), name
    common = requests.get(f"{LOGIN}/common/v2.0/.well-known/openid-configuration").json()
    assert common["issuer"] == f"{LOGIN}/{{tenantid}}/v2.0" and common["token_endpoint"] == f"{LOGIN}/common/oauth2/v2.0/token"
    found = requests.get(f"{LOGIN}/common/discovery/instance", params={
        "api-version": "1.1", "authorization_endpoint": f"{LOGIN}/{tenant}/oauth2/v2.0/authorize"}).json()
    assert found["tenant_discovery_endpoint"] == f"{LOGIN}/{tenant}/v2.0/.well-known/openid-configuration"
    assert "login.windows.net" in found["metadata"][0]["aliases"]
    assert requests.get(f"{LOGIN}/common/discovery/instance", params={
        "api-version": "1.1", "authorization_endpoint": "https://login.example.test/x/oauth2/authorize"}).json()["error"] \
        == "invalid_instance"
    unparsable = requests.get(f"{LOGIN}/common/discovery/instance", params={"authorization_endpoint": "https://[::1/x"})
    assert unparsable.status_code == 400 and unparsable.json()["error_codes"] == [50049]


@pytest.mark.parametrize("style, resource", [("imds", "vm1"), ("appservice", "web1")])
def test_a_managed_identitys_token_for_the_api_carries_its_app_roles(cloud, client_env, style, resource):
    client_env(mi_json(cloud["db"], "env", "--resource", resource, "-g", "rg", "--style", style))
    credential = ManagedIdentityCredential()
    for scope in ("api://orders/.default", f"{cloud['api']['appId']}/.default"):
        token = credential.get_token(scope).token
        claims = _verified(cloud, token, scope.removesuffix("/.default"))
        assert claims["roles"] == ["Orders.Read"] and claims["oid"] == cloud[resource]["identity"]["principalId"]


def test_imds_refuses_a_resource_the_tenant_does_not_know_with_entras_body(shell):
    url = shell["env"]["AZURE_POD_IDENTITY_AUTHORITY_HOST"] + "/metadata/identity/oauth2/token"
    status, body, _ = get(f"{url}?api-version=2018-02-01&resource=https://cache.test", {"Metadata": "true"})
    assert status == 400 and set(body) == ENTRA_ERROR and body["error"] == "invalid_resource" and body["error_codes"] == [500011]
    assert body["error_description"].startswith("AADSTS500011: The resource principal named https://cache.test was not "
                                                "found in the tenant named mi tenant. This can happen if the application "
                                                "has not been installed by the administrator of the tenant")
    with pytest.raises(ClientAuthenticationError, match="AADSTS500011"):
        ManagedIdentityCredential().get_token("https://cache.test/.default")
    web = mi_json(shell["db"], "env", "--resource", "web1", "-g", "rg", "--style", "appservice")
    status, body, _ = get(f"{web['IDENTITY_ENDPOINT']}?api-version=2019-08-01&resource=https://cache.test",
                          {"X-IDENTITY-HEADER": web["IDENTITY_HEADER"]})
    assert (status, body["statusCode"]) == (500, 500)
    assert body["message"] == "An unexpected error occured while fetching the AAD Token."  # App Service's spelling


def test_graph_answers_what_az_asks_about_managed_identities(shell):
    token = ManagedIdentityCredential().get_token("https://graph.microsoft.com/.default").token
    headers = {"Authorization": f"Bearer {token}"}
    vm = shell["vm1"]["identity"]["principalId"]
    sp = requests.get(f"{GRAPH}/servicePrincipals/{vm}", headers=headers).json()
    assert sp["servicePrincipalType"] == "ManagedIdentity" and sp["displayName"] == "vm1"
    assert sp["alternativeNames"][0] == "isExplicit=False" and sp["alternativeNames"][1].endswith("/virtualMachines/vm1")
    assert sp == {"@odata.context": f"{GRAPH}/$metadata#servicePrincipals/$entity",
                  **{k: v for k, v in mi_json(shell["db"], "sp", "show", "--id", vm).items()}}
    app_id = shell["api"]["appId"]
    for clause in (f"servicePrincipalNames/any(c:c eq '{app_id}')", f"appId eq '{app_id}'", "displayName eq 'orders-api'"):
        found = requests.get(f"{GRAPH}/servicePrincipals", params={"$filter": clause}, headers=headers).json()["value"]
        assert [s["appId"] for s in found] == [app_id], clause
    for broken in (" and ", f"appId eq '{app_id}' and ", f" and appId eq '{app_id}'"):  # never "keep everything"
        refused = requests.get(f"{GRAPH}/servicePrincipals", params={"$filter": broken}, headers=headers)
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "BadRequest", broken
    stubs = requests.post(f"{GRAPH}/directoryObjects/getByIds", headers=headers, json={
        "ids": [vm, "5f3e4f0c-2a9b-4c1e-9a55-0d8f6c2b1a77"], "types": ["user", "group", "servicePrincipal"]}).json()["value"]
    assert [(s["@odata.type"], s["id"]) for s in stubs] == [("#microsoft.graph.servicePrincipal", vm)]
    objects = requests.post(f"{GRAPH}/directoryObjects/getByIds", headers=headers, json={
        "ids": [shell["api"]["id"], vm, shell["daemon"]["id"]]}).json()["value"]
    assert [(o["@odata.type"], o["id"]) for o in objects] == [("#microsoft.graph.application", shell["api"]["id"]),
                                                              ("#microsoft.graph.servicePrincipal", vm),
                                                              ("#microsoft.graph.application", shell["daemon"]["id"])]
    apps = requests.get(f"{GRAPH}/applications", params={"$filter": "identifierUris/any(s:s eq 'api://orders')"},
                        headers=headers).json()["value"]
    assert [a["id"] for a in apps] == [shell["api"]["id"]]
    assert requests.get(f"{GRAPH}/applications/{shell['api']['id']}", headers=headers).json()["appRoles"][0]["value"] \
        == "Orders.Read"
    me = requests.get(f"{GRAPH}/me", headers=headers)
    assert me.status_code == 400  # a managed identity's token is app-only
    assert me.json()["error"] | {"innerError": None} == {
        "code": "BadRequest", "message": "/me request is only valid with delegated authentication flow.", "innerError": None}
    missing = requests.get(f"{GRAPH}/servicePrincipals/5f3e4f0c-2a9b-4c1e-9a55-0d8f6c2b1a77", headers=headers)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "Request_ResourceNotFound"
    assert set(missing.json()["error"]["innerError"]) == {"date", "request-id", "client-request-id"}


def test_graph_refuses_tokens_that_are_not_graphs(shell):
    vault = ManagedIdentityCredential().get_token("https://vault.azure.net/.default").token
    wrong = requests.get(f"{GRAPH}/servicePrincipals", headers={"Authorization": f"Bearer {vault}"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert wrong.json()["error"]["message"] == "Access token validation failure. Invalid audience."
    none = requests.get(f"{GRAPH}/servicePrincipals")
    assert none.status_code == 401 and none.json()["error"]["message"] == "Access token is empty."
    assert "Bearer" in none.headers["WWW-Authenticate"]


def test_app_role_assignments_through_graph_need_graphs_permission(shell):
    api_sp = mi_json(shell["db"], "app", "sp", "show", "--id", "api://orders")
    headers = {"Authorization": f"Bearer {_graph_token(shell)}"}
    assigned_to = requests.get(f"{GRAPH}/servicePrincipals/{api_sp['id']}/appRoleAssignedTo", headers=headers).json()["value"]
    assert sorted(a["principalDisplayName"] for a in assigned_to) == ["daemon", "vm1", "web1"]
    vm = shell["vm1"]["identity"]["principalId"]
    of_vm = requests.get(f"{GRAPH}/servicePrincipals/{vm}/appRoleAssignments", headers=headers).json()["value"]
    assert [(a["resourceId"], a["appRoleId"]) for a in of_vm] == [(api_sp["id"], api_sp["appRoles"][0]["id"])]
    grant = {"principalId": vm, "resourceId": api_sp["id"], "appRoleId": api_sp["appRoles"][1]["id"]}
    denied = requests.post(f"{GRAPH}/servicePrincipals/{api_sp['id']}/appRoleAssignedTo", headers=headers, json=grant)
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "Authorization_RequestDenied"
    assert denied.json()["error"]["message"] == "Insufficient privileges to complete the operation."
    mi_json(shell["db"], "app", "role", "assign", "--assignee", shell["daemon"]["appId"], "--app", "Microsoft Graph",
            "--role", "AppRoleAssignment.ReadWrite.All")
    headers = {"Authorization": f"Bearer {_graph_token(shell)}"}  # a new token, with the new role in it
    made = requests.post(f"{GRAPH}/servicePrincipals/{api_sp['id']}/appRoleAssignedTo", headers=headers, json=grant)
    assert made.status_code == 201 and made.json()["principalDisplayName"] == "vm1"
    assert made.json()["appRoleId"] == grant["appRoleId"] and made.json()["resourceDisplayName"] == "orders-api"
    again = requests.post(f"{GRAPH}/servicePrincipals/{api_sp['id']}/appRoleAssignedTo", headers=headers, json=grant)
    assert again.status_code == 400
    assert again.json()["error"]["message"] == "Permission being assigned already exists on the object"
    token = ManagedIdentityCredential().get_token("api://orders/.default").token
    assert _claims(token)["roles"] == ["Orders.Read", "Orders.Write"]  # the next token has the role
    gone = requests.delete(f"{GRAPH}/servicePrincipals/{api_sp['id']}/appRoleAssignedTo/{made.json()['id']}", headers=headers)
    assert gone.status_code == 204
    assert _claims(ManagedIdentityCredential().get_token("api://orders/.default").token)["roles"] == ["Orders.Read"]


def test_graph_answers_queries_and_bodies_it_cannot_read_with_its_400s(shell):
    """A $top of digits Python reads but Graph does not ('²', thousands of them) and a body nested past any JSON
    parser's depth are Graph's 400s, not failures."""
    headers = {"Authorization": f"Bearer {_graph_token(shell)}"}
    for top in ("²", "9" * 5000, "0", "1000", "-1"):
        refused = requests.get(f"{GRAPH}/servicePrincipals", params={"$top": top}, headers=headers)
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "Request_BadRequest", top
    assert len(requests.get(f"{GRAPH}/servicePrincipals", params={"$top": "1"}, headers=headers).json()["value"]) == 1
    deep = requests.post(f"{GRAPH}/directoryObjects/getByIds", data=b"[" * 100_000 + b"]" * 100_000,
                         headers={**headers, "Content-Type": "application/json"})
    assert deep.status_code == 400 and deep.json()["error"]["code"] == "BadRequest"


def test_an_app_registration_given_a_role_by_its_app_id_manages_resources_through_arm(shell):
    """`mi role assignment create --assignee APPID` on an app registration's service principal, as az takes it;
    the app signs in with its secret and ARM authorises it by that assignment (refused before it)."""
    from azure.core.exceptions import HttpResponseError
    from azure.mgmt.resource import ResourceManagementClient

    credential = ClientSecretCredential(shell["tenant"], shell["daemon"]["appId"], shell["secret"])
    subscription = mi_json(shell["db"], "account", "show")["id"]
    client = ResourceManagementClient(credential, subscription)
    with pytest.raises(HttpResponseError) as refused:
        client.resource_groups.create_or_update("rg-daemon", {"location": "westeurope"})
    assert refused.value.status_code == 403 and refused.value.error.code == "AuthorizationFailed"
    made = mi_json(shell["db"], "role", "assignment", "create", "--assignee", shell["daemon"]["appId"], "--role",
                   "Contributor", "--scope", f"/subscriptions/{subscription}")
    try:
        assert made["principalType"] == "ServicePrincipal" and made["principalId"] == _claims(
            credential.get_token("https://management.azure.com/.default").token)["oid"]
        assert client.resource_groups.create_or_update("rg-daemon", {"location": "westeurope"}).name == "rg-daemon"
        assert mi_json(shell["db"], "group", "show", "-n", "rg-daemon")["location"] == "westeurope"
    finally:
        mi_json(shell["db"], "role", "assignment", "delete", "--ids", made["id"], "--yes")
