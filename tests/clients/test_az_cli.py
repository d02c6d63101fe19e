"""The unmodified az CLI against `mi serve`: a shell pointed at mi with `eval "$(mi env --resource VM -g rg)"` runs
`az login --identity` as that VM's identity, then groups, identities, VM identities and role assignments through
the local cloud's ARM, Entra and Graph, allowed and refused by the store's roles; what az creates is what mi shows.

az is run as a user runs it, one process a command, with nothing but the environment `mi env` prints. It is
slow (about a second a command), so the store is built once for the module and each test is a short script."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.clients.az import az_cli  # noqa: F401 - the fixture: az, installed on first use
from tests.clients.conftest import mi_json, start_server
from tests.conftest import run_mi

READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"  # Reader's role definition GUID, the same in every tenant
TIMEOUT = 180  # seconds for one az command on a loaded machine
# Variables of the calling shell that would steer az or its identity elsewhere than mi env says
STEERING = ("AZURE_", "IDENTITY_", "MSI_", "IMDS_", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy",
            "NO_PROXY", "no_proxy", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE")


def _shell_env() -> dict[str, str]:
    """The test's environment without anything that points az or an SDK somewhere (the shell before mi env)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(STEERING)}


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    """A store made with mi, and mi serve on it:
    vm-admin (system identity, Owner on the subscription), vm-reader (system identity, Reader on the
    subscription), vm-user (system identity, and ua-ops and ua-other attached; ua-ops Reader on the
    subscription), vm-target (system identity: az assigns and removes ua-attach on it)."""
    db = tmp_path_factory.mktemp("az") / "store.db"

    def ok(*argv):
        return mi_json(db, *argv)

    ok("group", "create", "-n", "rg", "-l", "westeurope")
    account = ok("account", "show")
    sub = f"/subscriptions/{account['id']}"
    made = {"account": account, "sub": sub}
    for name in ("ua-ops", "ua-other", "ua-attach"):
        made[name] = ok("identity", "create", "-g", "rg", "-n", name)
    for name, extra in (("vm-admin", ()), ("vm-reader", ()), ("vm-target", ()),
                        ("vm-user", ("--user-assigned", "ua-ops", "ua-other"))):
        made[name] = ok("resource", "create", "-g", "rg", "-n", name, "--type", "vm", "--system-assigned", *extra)
    for principal, role in ((made["vm-admin"]["identity"]["principalId"], "Owner"),
                            (made["vm-reader"]["identity"]["principalId"], "Reader"),
                            (made["ua-ops"]["principalId"], "Reader")):
        ok("role", "assignment", "create", "--assignee-object-id", principal, "--assignee-principal-type",
           "ServicePrincipal", "--role", role, "--scope", sub)
    srv = start_server(db)
    made |= {"db": db, "server": srv,
             "env": {vm: mi_json(db, "env", "--resource", vm, "-g", "rg") for vm in ("vm-admin", "vm-reader", "vm-user")}}
    yield made
    assert srv.stop() == 0, srv.log.read_text()


class Az:
    """az run with one resource's `mi env`, as a shell that evaluated it would run it."""

    def __init__(self, executable: Path, values: dict[str, str]):
        self.executable, self.env = executable, {**_shell_env(), **values}

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.executable), *args], env=self.env, capture_output=True, text=True, timeout=TIMEOUT)

    def ok(self, *args: str):
        """The command's JSON; it must succeed."""
        done = self.run(*args, "-o", "json")
        assert done.returncode == 0, f"az {' '.join(args)} exited {done.returncode}:\n{done.stderr[-4000:]}"
        return json.loads(done.stdout) if done.stdout.strip() else None

    def fails(self, *args: str) -> subprocess.CompletedProcess:
        done = self.run(*args)
        assert done.returncode != 0, f"az {' '.join(args)} succeeded: {done.stdout[-2000:]}"
        return done


def _claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def _differences(a, b, path: str = "") -> list[str]:
    """Every field where two JSON values differ, as `path: a != b`."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b))
                for d in (_differences(a[k], b[k], f"{path}.{k}") if k in a and k in b
                          else [f"{path}.{k}: {a.get(k, '<absent>')!r} != {b.get(k, '<absent>')!r}"])]
    return [] if a == b else [f"{path or '.'}: {a!r} != {b!r}"]


# az 2.91's generated (AAZ) identity commands print only the fields that hold a value (no systemData), and so
# does mi: the two print an identity alike, field by field.
AZ_IDENTITY_DIFFERENCES: list[str] = []


def _same_identity(by_az: dict, by_mi: dict, what: str) -> None:
    found = _differences(by_az, by_mi)
    assert found == AZ_IDENTITY_DIFFERENCES, f"{what} != mi identity show, field by field:\n" + "\n".join(found)


@pytest.fixture(scope="module")
def admin(cloud, az_cli):  # noqa: F811 - the fixture imported above
    """az signed in as vm-admin's system identity (Owner on the subscription)."""
    az = Az(az_cli, cloud["env"]["vm-admin"])
    az.ok("login", "--identity")
    return az


def test_login_by_identity_in_a_shell_that_evaluated_mi_env(cloud, az_cli):  # noqa: F811
    """The README's way: eval the exports, then az as is. The subscription and tenant are mi's, the token is
    the VM's, and az's login is kept beside the store, never in the user's ~/.azure."""
    db, account = cloud["db"], cloud["account"]
    script = (f'eval "$("{sys.executable}" -m mi_cli --db "{db}" env --resource vm-admin -g rg)" && '
              f'"{az_cli}" login --identity -o json && echo "#" && "{az_cli}" account show -o json && echo "#" && '
              f'"{az_cli}" account get-access-token -o json && echo "#" && echo "$AZURE_CONFIG_DIR"')
    done = subprocess.run(["bash", "-c", script], env=_shell_env(), capture_output=True, text=True, timeout=4 * TIMEOUT)
    assert done.returncode == 0, done.stderr[-4000:]
    login, shown, token, config = done.stdout.split("#\n")
    user = {"assignedIdentityInfo": "MSI", "name": "systemAssignedIdentity", "type": "servicePrincipal"}
    assert json.loads(login) == [{"environmentName": "AzureCloud", "homeTenantId": account["tenantId"],
                                  "id": account["id"], "isDefault": True, "managedByTenants": [],
                                  "name": account["name"], "state": "Enabled", "tenantId": account["tenantId"],
                                  "user": user}]
    shown = json.loads(shown)
    assert (shown["id"], shown["tenantId"], shown["name"], shown["user"]) == (account["id"], account["tenantId"],
                                                                              account["name"], user)
    claims = _claims(json.loads(token)["accessToken"])
    assert claims["oid"] == cloud["vm-admin"]["identity"]["principalId"]
    assert claims["aud"] == "https://management.core.windows.net/"
    config = Path(config.strip())
    assert config.parent == Path(f"{db}.azure").resolve() and (config / "azureProfile.json").is_file()
    assert not (Path(os.environ["HOME"]) / ".azure" / "azureProfile.json").exists()


def test_groups(cloud, admin):
    made = admin.ok("group", "create", "-n", "rg-az", "-l", "westeurope", "--tags", "team=core")
    assert made == mi_json(cloud["db"], "group", "show", "-n", "rg-az")
    assert made["id"] == f"{cloud['sub']}/resourceGroups/rg-az"
    assert (made["location"], made["properties"], made["tags"]) == ("westeurope", {"provisioningState": "Succeeded"},
                                                                      {"team": "core"})
    assert admin.ok("group", "show", "-n", "RG-AZ") == made
    assert admin.ok("group", "exists", "-n", "rg-az") is True
    assert admin.run("group", "delete", "-n", "rg-az", "--yes").returncode == 0
    assert admin.ok("group", "exists", "-n", "rg-az") is False
    missing = admin.fails("group", "show", "-n", "rg-az")
    assert missing.returncode == 3, missing.stderr
    assert "(ResourceGroupNotFound) Resource group 'rg-az' could not be found." in missing.stderr


def test_identities_are_what_mi_shows(cloud, admin):
    db = cloud["db"]
    made = admin.ok("identity", "create", "-g", "rg", "-n", "ua-az", "--tags", "app=web")
    mine = mi_json(db, "identity", "show", "-g", "rg", "-n", "ua-az")
    shown = admin.ok("identity", "show", "-g", "rg", "-n", "ua-az")
    _same_identity(shown, mine, "az identity show")
    _same_identity(made, mine, "az identity create")
    assert (mine["tags"], mine["location"]) == ({"app": "web"}, "westeurope")  # the group's location
    # an identity mi made, as az shows it
    _same_identity(admin.ok("identity", "show", "-g", "rg", "-n", "ua-ops"), cloud["ua-ops"], "az identity show")
    in_group = admin.ok("identity", "list", "-g", "rg")
    assert sorted(i["name"] for i in in_group) == sorted(i["name"] for i in mi_json(db, "identity", "list", "-g", "rg"))
    assert {"ua-az", "ua-ops", "ua-other", "ua-attach"} <= {i["name"] for i in admin.ok("identity", "list")}
    assert admin.run("identity", "delete", "-g", "rg", "-n", "ua-az").returncode == 0
    gone = admin.fails("identity", "show", "-g", "rg", "-n", "ua-az")
    assert gone.returncode == 3 and "(ResourceNotFound)" in gone.stderr, gone.stderr
    assert "ua-az" not in {i["name"] for i in mi_json(db, "identity", "list", "-g", "rg")}


def test_vm_identity_assign_and_remove_keep_the_system_identity(cloud, admin):
    db, ua = cloud["db"], cloud["ua-attach"]
    system = cloud["vm-target"]["identity"]["principalId"]
    assigned = admin.ok("vm", "identity", "assign", "-g", "rg", "-n", "vm-target", "--identities", ua["id"])
    assert assigned["systemAssignedIdentity"] == system
    assert {k.casefold(): v for k, v in assigned["userAssignedIdentities"].items()} == {
        ua["id"].casefold(): {"clientId": ua["clientId"], "principalId": ua["principalId"]}}
    vm = mi_json(db, "resource", "show", "-g", "rg", "-n", "vm-target")
    assert vm["identity"]["type"] == "SystemAssigned, UserAssigned"
    assert [k.casefold() for k in vm["identity"]["userAssignedIdentities"]] == [ua["id"].casefold()]
    shown = admin.ok("vm", "identity", "show", "-g", "rg", "-n", "vm-target")
    assert (shown["type"], shown["principalId"]) == ("SystemAssigned, UserAssigned", system)
    admin.ok("vm", "identity", "remove", "-g", "rg", "-n", "vm-target", "--identities", ua["id"])
    vm = mi_json(db, "resource", "show", "-g", "rg", "-n", "vm-target")
    assert vm["identity"]["type"] == "SystemAssigned" and vm["identity"]["principalId"] == system
    assert not vm["identity"].get("userAssignedIdentities")


def test_role_assignments(cloud, admin):
    db, principal = cloud["db"], cloud["ua-attach"]["principalId"]
    scope = f"{cloud['sub']}/resourceGroups/rg"
    create = ("role", "assignment", "create", "--assignee-object-id", principal, "--assignee-principal-type",
              "ServicePrincipal", "--role", "Reader", "--scope", scope)
    made = admin.ok(*create)
    assert (made["principalId"], made["principalType"], made["scope"]) == (principal, "ServicePrincipal", scope)
    assert made["roleDefinitionId"].endswith(f"/providers/Microsoft.Authorization/roleDefinitions/{READER}")
    assert admin.ok(*create)["id"] == made["id"]  # already granted: az shows the existing one and succeeds
    mine = mi_json(db, "role", "assignment", "list", "--scope", scope)
    assert made["id"] in {a["id"] for a in mine}
    # at the group (az's $filter=atScope(), principal names from Graph), and --all: the subscription and below
    for listing in (("--scope", scope), ("--all",)):
        listed = {a["id"]: a for a in admin.ok("role", "assignment", "list", *listing)}
        assert made["id"] in listed, listing
        entry = listed[made["id"]]
        assert (entry["roleDefinitionName"], entry["principalId"]) == ("Reader", principal)
        # Graph's servicePrincipalNames[0], a managed identity's client id (az leaves it out when Graph fails)
        assert entry.get("principalName") == cloud["ua-attach"]["clientId"], entry
    owner = {a["principalId"]: a["roleDefinitionName"] for a in admin.ok("role", "assignment", "list", "--all")}
    assert owner[cloud["vm-admin"]["identity"]["principalId"]] == "Owner"  # mi's grants, as az lists them
    # --assignee as scripts give it, the identity's client id: az finds its service principal in Graph
    deleted = admin.run("role", "assignment", "delete", "--assignee", cloud["ua-attach"]["clientId"], "--role", "Reader",
                        "--scope", scope)
    assert deleted.returncode == 0 and deleted.stderr == "", deleted.stderr
    assert made["id"] not in {a["id"] for a in admin.ok("role", "assignment", "list", "--all")}
    assert made["id"] not in {a["id"] for a in mi_json(db, "role", "assignment", "list", "--scope", scope)}


def test_a_reader_is_refused_a_write(cloud, az_cli):  # noqa: F811
    reader = Az(az_cli, cloud["env"]["vm-reader"])
    reader.ok("login", "--identity")
    assert reader.ok("group", "show", "-n", "rg")["name"] == "rg"
    refused = reader.fails("group", "create", "-n", "rg-denied", "-l", "westeurope")
    oid = cloud["vm-reader"]["identity"]["principalId"]
    first = refused.stderr.splitlines()[0] if refused.stderr else ""
    assert refused.returncode == 1, refused.stderr
    assert first.startswith(f"ERROR: (AuthorizationFailed) The client '{oid}' with object id '{oid}' does not have "
                            "authorization to perform action 'Microsoft.Resources/subscriptions/resourcegroups/write' "
                            f"over scope '{cloud['sub']}/resourcegroups/rg-denied' or the scope is invalid."), refused.stderr
    assert "Code: AuthorizationFailed" in refused.stderr
    assert run_mi(cloud["db"], "group", "show", "-n", "rg-denied").code == 3  # nothing was made


def test_login_by_user_assigned_identity(cloud, admin, az_cli):  # noqa: F811
    """--client-id, --object-id and --resource-id name a user-assigned identity attached to the VM: az then gets
    that identity's tokens in every later command. Another VM's shell is not affected: each keeps its own login."""
    ops = cloud["ua-ops"]
    user = Az(az_cli, cloud["env"]["vm-user"])
    for option, value, info in (("--client-id", ops["clientId"], f"MSIClient-{ops['clientId']}"),
                                ("--object-id", ops["principalId"], f"MSIObject-{ops['principalId']}"),
                                ("--resource-id", ops["id"], f"MSIResource-{ops['id']}")):
        [account] = user.ok("login", "--identity", option, value)
        assert account["id"] == cloud["account"]["id"]
        assert account["user"] == {"assignedIdentityInfo": info, "name": "userAssignedIdentity", "type": "servicePrincipal"}
        assert _claims(user.ok("account", "get-access-token")["accessToken"])["oid"] == ops["principalId"]
    assert user.ok("group", "show", "-n", "rg")["name"] == "rg"  # ua-ops is Reader on the subscription
    # vm-admin's shell still signs in as vm-admin: its az keeps its own login, not vm-user's --client-id
    assert _claims(admin.ok("account", "get-access-token")["accessToken"])["oid"] == cloud["vm-admin"]["identity"]["principalId"]
    # an identity that is not attached to the VM: IMDS's answer, as az prints it
    refused = user.fails("login", "--identity", "--client-id", cloud["ua-attach"]["clientId"])
    assert refused.returncode == 1 and refused.stderr.startswith("ERROR: Identity not found\n"), refused.stderr


def test_login_through_the_app_service_endpoint(cloud, az_cli):  # noqa: F811
    """`mi env --style appservice` (IDENTITY_ENDPOINT and IDENTITY_HEADER): az login --identity as on App Service."""
    values = mi_json(cloud["db"], "env", "--resource", "vm-reader", "-g", "rg", "--style", "appservice")
    assert "AZURE_POD_IDENTITY_AUTHORITY_HOST" not in values
    reader = Az(az_cli, values)
    [account] = reader.ok("login", "--identity")
    assert (account["id"], account["user"]["name"]) == (cloud["account"]["id"], "systemAssignedIdentity")
    claims = _claims(reader.ok("account", "get-access-token")["accessToken"])
    assert claims["oid"] == cloud["vm-reader"]["identity"]["principalId"]
    assert reader.ok("group", "show", "-n", "rg")["name"] == "rg"
