"""Azure Resource Manager through the local cloud: Microsoft's unmodified management clients (azure-mgmt-resource,
azure-mgmt-msi) with ManagedIdentityCredential and nothing but `mi env`'s variables, allowed and refused by the
store's roles with ARM's own answers; what they create is what `mi` shows."""

from __future__ import annotations

import json
import time

import pytest
import requests

from tests.clients.conftest import mi_json, start_server

pytest.importorskip("azure.mgmt.resource")
pytest.importorskip("azure.mgmt.msi")

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError  # noqa: E402
from azure.identity import ManagedIdentityCredential  # noqa: E402
from azure.mgmt.msi import ManagedServiceIdentityClient  # noqa: E402
from azure.mgmt.resource import ResourceManagementClient, SubscriptionClient  # noqa: E402

ARM = "https://management.azure.com"
UAMI = "Microsoft.ManagedIdentity/userAssignedIdentities"
ROLE_TEXT = ("The client '{oid}' with object id '{oid}' does not have authorization to perform action '{action}' over scope "
             "'{scope}' or the scope is invalid. If access was recently granted, please refresh your credentials.")


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    """One store, one `mi serve`: VMs whose system identities hold Owner on the subscription (admin), Owner on rg
    (ops), Reader on rg (reader) and nothing (nobody); identities in rg and in another group."""
    db = tmp_path_factory.mktemp("arm") / "store.db"

    def mi(*argv):
        return mi_json(db, *argv)

    mi("group", "create", "-n", "rg", "-l", "westeurope")
    mi("group", "create", "-n", "other", "-l", "westeurope")
    vms = {name: mi("resource", "create", "-g", "rg", "-n", name, "--type", "vm", "--system-assigned")
           for name in ("admin", "ops", "reader", "nobody")}
    mi("resource", "create", "-g", "rg", "-n", "target", "--type", "vm", "--system-assigned")
    shared = mi("identity", "create", "-g", "other", "-n", "shared")
    sub = mi("account", "show")["id"]
    mi("role", "assignment", "create", "--assignee", "admin", "--role", "Owner", "--scope", f"/subscriptions/{sub}")
    mi("role", "assignment", "create", "--assignee", "ops", "--role", "Owner", "--scope", f"/subscriptions/{sub}/resourceGroups/rg")
    mi("role", "assignment", "create", "--assignee", "reader", "--role", "Reader", "--scope", f"/subscriptions/{sub}/resourceGroups/rg")
    srv = start_server(db)
    envs = {name: mi("env", "--resource", name, "-g", "rg") for name in vms}
    yield {"db": db, "sub": sub, "vms": vms, "envs": envs, "shared": shared, "mi": mi}
    assert srv.stop() == 0, srv.log.read_text()


@pytest.fixture
def as_vm(cloud, monkeypatch):
    """A ManagedIdentityCredential for the named VM, its process environment being what `mi env` prints."""

    def apply(name: str) -> ManagedIdentityCredential:
        for var in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER", "MSI_ENDPOINT", "MSI_SECRET", "IMDS_ENDPOINT", "AZURE_CLIENT_ID"):
            monkeypatch.delenv(var, raising=False)
        for key, value in cloud["envs"][name].items():
            monkeypatch.setenv(key, value)
        return ManagedIdentityCredential()

    return apply


def raw(cloud, method: str, path: str, *, token: str | None = None, body=None) -> requests.Response:
    """A request as any HTTP client sends it through `mi env`'s proxy and CA bundle."""
    env = cloud["envs"]["admin"]
    session = requests.Session()
    session.trust_env = False
    session.proxies = {"https": env["HTTPS_PROXY"]}
    session.verify = env["REQUESTS_CA_BUNDLE"]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return session.request(method, ARM + path, headers=headers, json=body, timeout=60)


def token(cloud, vm: str, audience: str = "https://management.azure.com/") -> str:
    return cloud["mi"]("token", "get", "--resource", vm, "-g", "rg", "--audience", audience)["access_token"]


def oid(cloud, vm: str) -> str:
    return cloud["vms"][vm]["identity"]["principalId"]


def test_signing_in_lists_the_subscriptions_where_the_identity_holds_a_role(cloud, as_vm):
    subs = list(SubscriptionClient(as_vm("reader")).subscriptions.list())
    assert [(s.subscription_id, s.state, s.tenant_id) for s in subs] == [
        (cloud["sub"], "Enabled", cloud["envs"]["reader"]["AZURE_TENANT_ID"])]
    assert subs[0].id == f"/subscriptions/{cloud['sub']}" and subs[0].display_name
    # no role anywhere: nothing listed, which `az login --identity` reports as "No subscriptions found"
    assert list(SubscriptionClient(as_vm("nobody")).subscriptions.list()) == []
    tenants = list(SubscriptionClient(as_vm("nobody")).tenants.list())
    assert [t.tenant_id for t in tenants] == [cloud["envs"]["nobody"]["AZURE_TENANT_ID"]]


def test_owner_of_a_group_manages_it_and_reader_only_reads(cloud, as_vm):
    ops = ResourceManagementClient(as_vm("ops"), cloud["sub"])
    updated = ops.resource_groups.create_or_update("rg", {"location": "westeurope", "tags": {"team": "ops"}})
    assert (updated.name, updated.location, updated.tags, updated.properties.provisioning_state) == (
        "rg", "westeurope", {"team": "ops"}, "Succeeded")
    assert cloud["mi"]("group", "show", "-n", "rg")["tags"] == {"team": "ops"}
    assert ops.resource_groups.check_existence("rg") is True
    # Owner of rg is nobody at the subscription: another group is out of its reach
    with pytest.raises(HttpResponseError) as refused:
        ops.resource_groups.create_or_update("ops-own", {"location": "westeurope"})
    assert refused.value.status_code == 403 and refused.value.error.code == "AuthorizationFailed"

    reader = ResourceManagementClient(as_vm("reader"), cloud["sub"])
    assert reader.resource_groups.get("RG").tags == {"team": "ops"}  # names compare case-insensitively
    assert [g.name for g in reader.resource_groups.list()] == ["rg"]  # only the groups it may read
    listed = {r.name: r for r in reader.resources.list_by_resource_group("rg")}
    assert {"admin", "ops", "reader", "nobody", "target"} <= set(listed)
    assert listed["ops"].type == "Microsoft.Compute/virtualMachines" and listed["ops"].identity.type == "SystemAssigned"
    with pytest.raises(HttpResponseError) as denied:
        reader.resource_groups.create_or_update("rg", {"location": "westeurope", "tags": {}})
    scope = f"/subscriptions/{cloud['sub']}/resourcegroups/rg"
    assert denied.value.status_code == 403
    assert denied.value.error.code == "AuthorizationFailed"
    # ARM names the action and the scope as the request's path spells them (the SDK sends /resourcegroups/)
    assert denied.value.error.message == ROLE_TEXT.format(
        oid=oid(cloud, "reader"), action="Microsoft.Resources/subscriptions/resourcegroups/write", scope=scope)
    # the refusal is in the activity log with the same reason as `mi access check`
    rows = cloud["mi"]("log", "--operation", "Microsoft.Resources/subscriptions/resourceGroups/write")
    assert rows[-1]["status"] == "Failed" and rows[-1]["caller"] == oid(cloud, "reader")
    check = cloud["mi"]("access", "check", "--principal", oid(cloud, "reader"), "--action",
                        "Microsoft.Resources/subscriptions/resourceGroups/write", "--scope", scope)
    assert check["allowed"] is False and check["reason"] in rows[-1]["detail"]


def test_subscription_owner_creates_and_deletes_a_group_with_what_is_in_it(cloud, as_vm):
    admin = ResourceManagementClient(as_vm("admin"), cloud["sub"])
    made = admin.resource_groups.create_or_update("made-by-arm", {"location": "northeurope", "tags": {"a": "1"}})
    assert made.id == f"/subscriptions/{cloud['sub']}/resourceGroups/made-by-arm"
    shown = cloud["mi"]("group", "show", "-n", "made-by-arm")
    assert (shown["location"], shown["tags"]) == ("northeurope", {"a": "1"})
    msi = ManagedServiceIdentityClient(as_vm("admin"), cloud["sub"])
    msi.user_assigned_identities.create_or_update("made-by-arm", "doomed", {"location": "northeurope"})
    assert admin.resource_groups.check_existence("made-by-arm") is True
    started = time.monotonic()
    admin.resource_groups.begin_delete("made-by-arm").result()  # 202 + Location, polled once
    assert time.monotonic() - started < 10
    assert admin.resource_groups.check_existence("made-by-arm") is False
    with pytest.raises(ResourceNotFoundError) as gone:
        admin.resource_groups.get("made-by-arm")
    assert gone.value.error.code == "ResourceGroupNotFound"
    assert gone.value.error.message == "Resource group 'made-by-arm' could not be found."
    assert cloud["mi"]("identity", "list", "--query", "[?name=='doomed']") == []


def test_user_assigned_identities_and_their_federated_credentials_through_the_msi_client(cloud, as_vm):
    msi = ManagedServiceIdentityClient(as_vm("ops"), cloud["sub"])
    made = msi.user_assigned_identities.create_or_update("rg", "made-by-sdk", {"location": "westeurope", "tags": {"k": "v"}})
    shown = cloud["mi"]("identity", "show", "-g", "rg", "-n", "made-by-sdk")
    assert (made.id, made.principal_id, made.client_id, made.tenant_id, made.location, made.tags) == (
        shown["id"], shown["principalId"], shown["clientId"], shown["tenantId"], shown["location"], shown["tags"])
    assert made.type == UAMI and made.id.startswith(f"/subscriptions/{cloud['sub']}/resourcegroups/rg/")
    again = msi.user_assigned_identities.create_or_update("rg", "made-by-sdk", {"location": "westeurope"})
    assert (again.principal_id, again.tags) == (made.principal_id, {})  # a PUT: same ids, tags replaced
    assert msi.user_assigned_identities.update("rg", "made-by-sdk", {"tags": {"x": "y"}}).tags == {"x": "y"}
    assert msi.user_assigned_identities.get("rg", "made-by-sdk").client_id == made.client_id
    assert "made-by-sdk" in {i.name for i in msi.user_assigned_identities.list_by_resource_group("rg")}
    # Owner of rg only: the subscription's listing is filtered to what it may read
    assert {i.name for i in msi.user_assigned_identities.list_by_subscription()} == {"made-by-sdk"}

    fics = msi.federated_identity_credentials
    fic = fics.create_or_update("rg", "made-by-sdk", "github-main", {
        "issuer": "https://token.actions.githubusercontent.com", "subject": "repo:org/app:ref:refs/heads/main",
        "audiences": ["api://AzureADTokenExchange"]})
    assert fic.type == f"{UAMI}/federatedIdentityCredentials" and fic.subject == "repo:org/app:ref:refs/heads/main"
    assert cloud["mi"]("identity", "federated-credential", "show", "-g", "rg", "--identity-name", "made-by-sdk",
                       "-n", "github-main")["issuer"] == "https://token.actions.githubusercontent.com"
    assert [f.name for f in fics.list("rg", "made-by-sdk")] == ["github-main"]
    assert fics.get("rg", "made-by-sdk", "github-main").audiences == ["api://AzureADTokenExchange"]
    fics.delete("rg", "made-by-sdk", "github-main")
    assert list(fics.list("rg", "made-by-sdk")) == []

    msi.user_assigned_identities.delete("rg", "made-by-sdk")
    msi.user_assigned_identities.delete("rg", "made-by-sdk")  # 204: deleting what is gone succeeds
    with pytest.raises(ResourceNotFoundError) as gone:
        msi.user_assigned_identities.get("rg", "made-by-sdk")
    assert gone.value.error.code == "ResourceNotFound"
    assert cloud["mi"]("identity", "list", "-g", "rg", "--query", "[?name=='made-by-sdk']") == []
    # the Reader of rg may not create one
    with pytest.raises(HttpResponseError) as denied:
        ManagedServiceIdentityClient(as_vm("reader"), cloud["sub"]).user_assigned_identities.create_or_update(
            "rg", "not-mine", {"location": "westeurope"})
    assert denied.value.status_code == 403 and f"'{UAMI}/write'" in denied.value.error.message


def test_attaching_an_identity_to_a_vm_needs_assign_action_on_the_identity(cloud, as_vm):
    ops = ResourceManagementClient(as_vm("ops"), cloud["sub"])
    vm_id = f"/subscriptions/{cloud['sub']}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/target"
    shared_id = cloud["shared"]["id"]
    attach = {"identity": {"type": "SystemAssigned, UserAssigned", "userAssignedIdentities": {shared_id: {}}}}
    with pytest.raises(HttpResponseError) as linked:
        ops.resources.begin_update_by_id(vm_id, "2024-11-01", attach).result()
    assert linked.value.status_code == 403 and linked.value.error.code == "LinkedAuthorizationFailed"
    assert linked.value.error.message == (
        f"The client '{oid(cloud, 'ops')}' with object id '{oid(cloud, 'ops')}' has permission to perform action "
        f"'Microsoft.Compute/virtualMachines/write' on scope '{vm_id}'; however, it does not have permission to perform "
        f"action 'Microsoft.ManagedIdentity/userAssignedIdentities/assign/action' on the linked scope(s) '{shared_id}' "
        "or the linked scope(s) are invalid.")
    assert cloud["mi"]("resource", "show", "--ids", vm_id)["identity"]["type"] == "SystemAssigned"
    by_name = {"identity": {"type": "SystemAssigned, UserAssigned", "userAssignedIdentities": {"shared": {}}}}
    with pytest.raises(HttpResponseError) as invalid:  # a bare name is no linked scope at all
        ops.resources.begin_update_by_id(vm_id, "2024-11-01", by_name).result()
    assert invalid.value.error.code == "LinkedAuthorizationFailed" and "linked scope(s) 'shared'" in invalid.value.error.message

    cloud["mi"]("role", "assignment", "create", "--assignee", "ops", "--role", "Managed Identity Operator", "--scope", shared_id)
    vm = ops.resources.begin_update_by_id(vm_id, "2024-11-01", attach).result()
    assert vm.identity.type == "SystemAssigned, UserAssigned"  # Compute's spelling, with the space
    entry = vm.identity.user_assigned_identities[shared_id]
    assert (entry.principal_id, entry.client_id) == (cloud["shared"]["principalId"], cloud["shared"]["clientId"])
    shown = cloud["mi"]("resource", "show", "--ids", vm_id)["identity"]
    assert shown["userAssignedIdentities"] == {shared_id: {"clientId": entry.client_id, "principalId": entry.principal_id}}
    assert shown["principalId"] == vm.identity.principal_id

    # az vm identity remove: the identity named null goes, the system-assigned one stays
    detach = {"identity": {"type": "SystemAssigned", "userAssignedIdentities": {shared_id: None}}}
    vm = ops.resources.begin_update_by_id(vm_id, "2024-11-01", detach).result()
    assert vm.identity.type == "SystemAssigned" and not vm.identity.user_assigned_identities
    assert cloud["mi"]("identity", "list-resources", "--ids", shared_id) == []
    # a Reader may read the VM but not write it
    reader = ResourceManagementClient(as_vm("reader"), cloud["sub"])
    assert reader.resources.get_by_id(vm_id, "2026-04-01").identity.principal_id == shown["principalId"]
    with pytest.raises(HttpResponseError) as denied:
        reader.resources.begin_update_by_id(vm_id, "2024-11-01", attach).result()
    assert denied.value.error.code == "AuthorizationFailed" and "'Microsoft.Compute/virtualMachines/write'" in denied.value.error.message


def test_provider_metadata_names_the_api_versions_of_the_catalogs_types(cloud, as_vm):
    provider = ResourceManagementClient(as_vm("reader"), cloud["sub"]).providers.get("microsoft.compute")
    assert provider.namespace == "Microsoft.Compute" and provider.registration_state == "Registered"
    vm_type = next(t for t in provider.resource_types if t.resource_type == "virtualMachines")
    assert "2024-11-01" in vm_type.api_versions and "West Europe" in vm_type.locations


def test_arms_answers_to_missing_and_wrong_tokens_and_paths(cloud):
    sub = cloud["sub"]
    storage_token = token(cloud, "reader", "https://storage.azure.com/")
    wrong = raw(cloud, "GET", f"/subscriptions/{sub}/resourcegroups/rg?api-version=2024-11-01", token=storage_token)
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "InvalidAuthenticationTokenAudience"
    assert wrong.json()["error"]["message"].startswith(
        "The access token has been obtained for wrong audience or resource 'https://storage.azure.com/'.")
    assert wrong.headers["WWW-Authenticate"].startswith('Bearer authorization_uri="https://login.windows.net/", error="invalid_token"')
    missing = raw(cloud, "GET", f"/subscriptions/{sub}/resourcegroups/rg?api-version=2024-11-01")
    assert missing.status_code == 401 and missing.json()["error"] == {
        "code": "AuthenticationFailed", "message": "Authentication failed. The 'Authorization' header is missing."}

    env = cloud["envs"]["admin"]
    session = requests.Session()
    session.trust_env, session.proxies, session.verify = False, {"https": env["HTTPS_PROXY"]}, env["REQUESTS_CA_BUNDLE"]
    url = f"{ARM}/subscriptions/{sub}/resourcegroups/rg?api-version=2024-11-01"
    basic = session.get(url, headers={"Authorization": "Basic dXNlcjpwYXNz"}, timeout=60)
    assert basic.status_code == 401 and basic.json()["error"]["code"] == "AuthenticationFailedInvalidHeader"
    garbage = session.get(url, headers={"Authorization": "Bearer not-a-token"}, timeout=60)
    assert garbage.status_code == 401 and garbage.json()["error"] == {
        "code": "InvalidAuthenticationToken", "message": "The access token is invalid."}
    assert cloud["mi"]("log", "--query", "[-1].[status, caller]") == ["Failed", "(no valid token)"]

    arm_token = token(cloud, "reader")
    no_version = raw(cloud, "GET", f"/subscriptions/{sub}/resourcegroups/rg", token=arm_token)
    assert no_version.status_code == 400 and no_version.json()["error"] == {
        "code": "MissingApiVersionParameter",
        "message": "The api-version query parameter (?api-version=) is required for all requests."}
    # az resource show's double slash, any case, a trailing slash, an api-version no SDK sends
    odd = raw(cloud, "GET", f"/subscriptions/{sub.upper()}/RESOURCEGROUPS/rg//providers/microsoft.compute/"
                            "VIRTUALMACHINES/ops/?api-version=1999-01-01", token=arm_token)
    assert odd.status_code == 200 and odd.json()["name"] == "ops"
    nothing = raw(cloud, "GET", f"/subscriptions/{sub}/resourcegroups/rg/providers/Microsoft.Compute/virtualMachines/"
                                "ghost?api-version=2024-11-01", token=arm_token)
    assert nothing.status_code == 404 and nothing.json()["error"]["code"] == "ResourceNotFound"
    unknown_sub = raw(cloud, "GET", "/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups?api-version=1",
                      token=arm_token)
    assert unknown_sub.status_code == 404 and unknown_sub.json()["error"]["code"] == "SubscriptionNotFound"
    garbled = session.put(f"{ARM}/subscriptions/{sub}/resourcegroups/rg?api-version=2024-11-01", data=b"{not json",
                           headers={"Authorization": f"Bearer {token(cloud, 'admin')}", "Content-Type": "application/json"},
                           timeout=60)
    assert garbled.status_code == 400 and garbled.json()["error"]["code"] == "InvalidRequestContent"
    assert json.loads(garbled.text)["error"]["message"].startswith("The request content was invalid")


def test_a_web_app_put_with_both_identities_then_read_listed_and_deleted_through_the_generic_client(cloud, as_vm):
    ops = ResourceManagementClient(as_vm("ops"), cloud["sub"])
    mine = ManagedServiceIdentityClient(as_vm("ops"), cloud["sub"]).user_assigned_identities.create_or_update(
        "rg", "app-identity", {"location": "westeurope"})
    app_id = f"/subscriptions/{cloud['sub']}/resourceGroups/rg/providers/Microsoft.Web/sites/web1"
    body = {"location": "westeurope", "tags": {"env": "test"},
            "identity": {"type": "SystemAssigned,UserAssigned", "userAssignedIdentities": {mine.id: {}}}}
    app = ops.resources.begin_create_or_update_by_id(app_id, "2024-04-01", body).result()
    assert app.identity.type == "SystemAssigned, UserAssigned"  # App Service accepts it unspaced, answers spaced
    assert app.identity.user_assigned_identities[mine.id].principal_id == mine.principal_id
    shown = cloud["mi"]("resource", "show", "--ids", app_id)
    assert shown["identity"]["principalId"] == app.identity.principal_id and shown["tags"] == {"env": "test"}
    again = ops.resources.begin_create_or_update_by_id(app_id, "2024-04-01", body).result()
    assert again.identity.principal_id == app.identity.principal_id  # a PUT again changes nothing
    system = raw(cloud, "GET", f"{app_id}/providers/Microsoft.ManagedIdentity/identities/default?api-version=2023-01-31",
                 token=token(cloud, "ops"))
    assert system.status_code == 200 and system.json()["properties"]["principalId"] == app.identity.principal_id
    sites = list(ops.resources.list_by_resource_group("rg", filter="resourceType eq 'Microsoft.Web/sites'"))
    assert [s.name for s in sites] == ["web1"]
    ops.resources.begin_delete_by_id(app_id, "2024-04-01").result()
    assert ops.resources.check_existence_by_id(app_id, "2024-04-01") is False
    # the app's system identity went with it; the user-assigned one stays (rule 3)
    assert cloud["mi"]("identity", "show", "-g", "rg", "-n", "app-identity")["principalId"] == mine.principal_id
    ops.resources.begin_delete_by_id(app_id, "2024-04-01").result()  # deleting what is gone succeeds


def test_bodies_arm_cannot_read_are_its_400s_not_failures(cloud):
    """Tags that are no object and JSON nested past any parser's depth are answered InvalidRequestContent, for a
    group, a user-assigned identity and a resource alike; nothing is made."""
    sub = cloud["sub"]
    admin = token(cloud, "admin")
    group = f"/subscriptions/{sub}/resourcegroups/malformed?api-version=2024-11-01"
    uami = f"/subscriptions/{sub}/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/malformed?api-version=2023-01-31"
    vm = f"/subscriptions/{sub}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/malformed?api-version=2024-11-01"
    for path in (group, uami, vm):
        for tags in ("x", [1]):
            refused = raw(cloud, "PUT", path, token=admin, body={"location": "westeurope", "tags": tags})
            assert refused.status_code == 400, (path, refused.text)
            assert refused.json()["error"] == {
                "code": "InvalidRequestContent",
                "message": "The request content was invalid and could not be deserialized: 'tags must be an object'."}
    patched = raw(cloud, "PATCH", f"/subscriptions/{sub}/resourcegroups/rg?api-version=2024-11-01", token=admin,
                  body={"tags": "x"})
    assert patched.status_code == 400 and patched.json()["error"]["code"] == "InvalidRequestContent"

    env = cloud["envs"]["admin"]
    session = requests.Session()
    session.trust_env, session.proxies, session.verify = False, {"https": env["HTTPS_PROXY"]}, env["REQUESTS_CA_BUNDLE"]
    deep = session.put(ARM + group, data=b"[" * 100_000 + b"]" * 100_000, timeout=60,
                       headers={"Authorization": f"Bearer {admin}", "Content-Type": "application/json"})
    assert deep.status_code == 400 and deep.json()["error"]["code"] == "InvalidRequestContent"
    assert raw(cloud, "GET", group, token=admin).status_code == 404


@pytest.mark.parametrize("listing", ["resources", "providers/Microsoft.Compute/virtualMachines"])
def test_listing_in_a_group_that_does_not_exist_is_404_to_who_may_read_there_and_403_to_others(cloud, listing):
    path = f"/subscriptions/{cloud['sub']}/resourceGroups/no-such-rg/{listing}?api-version=2024-11-01"
    allowed = raw(cloud, "GET", path, token=token(cloud, "admin"))  # Owner of the subscription
    assert allowed.status_code == 404 and allowed.json()["error"]["code"] == "ResourceGroupNotFound"
    refused = raw(cloud, "GET", path, token=token(cloud, "ops"))  # Owner of rg only
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "AuthorizationFailed"
