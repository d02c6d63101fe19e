"""One write path: a tenant built by single commands and the same tenant built by one `mi apply` are the
same tenant, with the same activity log, and both doors refuse the same bad input with the same error."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest
import yaml

from mi_cli.cli.main import main
from tests.conftest import dump

GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
ROLE = {"Name": "Secret Lister", "Description": "Lists secret names",
        "DataActions": ["Microsoft.KeyVault/vaults/secrets/readMetadata/action"], "AssignableScopes": ["GROUP"]}

TENANT = """
apiVersion: mi/v1
subscriptions:
  - {name: main, default: true}
  - {name: prod}
resourceGroups:
  - {name: rg-app, location: westeurope, tags: {env: prod}}
  - {name: rg-ids, subscription: prod, location: northeurope}
customRoles:
  - roleName: Secret Lister
    description: Lists secret names
    permissions: [{dataActions: [Microsoft.KeyVault/vaults/secrets/readMetadata/action]}]
    assignableScopes: [GROUP]
userAssignedIdentities:
  - name: deployer
    resourceGroup: rg-app
    tags: {team: web}
    federatedCredentials:
      - {name: main-branch, issuer: "https://token.actions.githubusercontent.com", subject: "repo:org/app:ref:refs/heads/main"}
  - {name: far-away, resourceGroup: rg-ids, subscription: prod, location: eastus}
resources:
  - name: web
    type: webapp
    resourceGroup: rg-app
    tags: {tier: front}
    identity: {systemAssigned: true, userAssigned: [deployer]}
  - {name: staging, type: slot, parent: web, resourceGroup: rg-app, identity: {systemAssigned: true}}
  - {name: kv-app-01, type: keyvault, resourceGroup: rg-app}
  - {name: edge-01, type: arc, resourceGroup: rg-app}
  - {name: stapp01, type: storage, resourceGroup: rg-app, allowSharedKeyAccess: false}
  - name: vm1
    type: vm
    resourceGroup: rg-app
    identity: {userAssigned: [FAR_AWAY]}
federationIssuers:
  - {url: "https://token.actions.githubusercontent.com"}
applications:
  - displayName: orders-api
    identifierUris: ["api://orders"]
    appRoles:
      - {allowedMemberTypes: [Application], description: Read orders, displayName: Read, value: Orders.Read}
      - {allowedMemberTypes: [User, Application], description: Write orders, displayName: Write, value: Orders.Write}
  - {displayName: orders-client}
appRoleAssignments:
  - {assignee: deployer, app: orders-api, role: Orders.Read}
  - {assignee: orders-client, app: orders-api, role: Orders.Write}
roleAssignments:
  - {assignee: web, role: Key Vault Secrets User, scope: VAULT}
  - {assignee: deployer, role: Secret Lister, scope: GROUP, description: CI reads names}
  - {assignee: far-away, role: Reader, scope: SUBSCRIPTION}
"""


def run(db, *args: str) -> str:
    """One command on `db`, which must succeed; its stdout."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["--db", str(db), *args])
    assert code == 0, (args, err.getvalue())
    return out.getvalue()


def build_by_commands(db, tmp_path) -> None:
    run(db, "subscription", "create", "-n", "main")
    prod = json.loads(run(db, "subscription", "create", "-n", "prod", "-o", "json"))["subscriptionId"]
    run(db, "group", "create", "-n", "rg-app", "-l", "westeurope", "--tags", "env=prod", "-o", "none")
    run(db, "group", "create", "-n", "rg-ids", "-l", "northeurope", "--subscription", "prod", "-o", "none")
    group = json.loads(run(db, "group", "show", "-n", "rg-app", "-o", "json"))["id"]
    role = tmp_path / "role.json"
    role.write_text(json.dumps({**ROLE, "AssignableScopes": [group]}))
    run(db, "role", "definition", "create", "--role-definition", f"@{role}", "-o", "none")
    run(db, "identity", "create", "-g", "rg-app", "-n", "deployer", "--tags", "team=web", "-o", "none")
    run(db, "identity", "federated-credential", "create", "--identity-name", "deployer", "-g", "rg-app", "-n", "main-branch",
        "--issuer", "https://token.actions.githubusercontent.com", "--subject", "repo:org/app:ref:refs/heads/main", "-o", "none")
    far = json.loads(run(db, "identity", "create", "-g", "rg-ids", "-n", "far-away", "-l", "eastus", "--subscription", "prod",
                         "-o", "json"))["id"]
    run(db, "resource", "create", "-g", "rg-app", "-n", "web", "--type", "webapp", "--tags", "tier=front", "--system-assigned",
        "--user-assigned", "deployer", "-o", "none")
    run(db, "resource", "create", "-g", "rg-app", "-n", "staging", "--type", "slot", "--parent", "web", "--system-assigned", "-o", "none")
    vault = json.loads(run(db, "resource", "create", "-g", "rg-app", "-n", "kv-app-01", "--type", "keyvault", "-o", "json"))["id"]
    run(db, "resource", "create", "-g", "rg-app", "-n", "edge-01", "--type", "arc", "-o", "none")
    run(db, "resource", "create", "-g", "rg-app", "-n", "stapp01", "--type", "storage", "-o", "none")
    run(db, "storage", "account", "update", "-g", "rg-app", "-n", "stapp01", "--allow-shared-key-access", "false", "-o", "none")
    run(db, "federation", "issuer", "create", "--issuer", "https://token.actions.githubusercontent.com", "-o", "none")
    app_roles = [{"allowedMemberTypes": ["Application"], "description": "Read orders", "displayName": "Read", "value": "Orders.Read"},
                 {"allowedMemberTypes": ["User", "Application"], "description": "Write orders", "displayName": "Write",
                  "value": "Orders.Write"}]
    run(db, "app", "create", "--display-name", "orders-api", "--identifier-uris", "api://orders", "--app-roles", json.dumps(app_roles),
        "-o", "none")
    run(db, "app", "create", "--display-name", "orders-client", "-o", "none")
    run(db, "app", "role", "assign", "--assignee", "deployer", "--app", "orders-api", "--role", "Orders.Read", "-o", "none")
    run(db, "app", "role", "assign", "--assignee", "orders-client", "--app", "orders-api", "--role", "Orders.Write", "-o", "none")
    run(db, "resource", "create", "-g", "rg-app", "-n", "vm1", "--type", "vm", "--user-assigned", far, "-o", "none")
    run(db, "role", "assignment", "create", "--assignee", "web", "--role", "Key Vault Secrets User", "--scope", vault, "-o", "none")
    run(db, "role", "assignment", "create", "--assignee", "deployer", "--role", "Secret Lister", "-g", "rg-app",
        "--description", "CI reads names", "-o", "none")
    main_sub = json.loads(run(db, "account", "show", "-o", "json"))["id"]
    run(db, "role", "assignment", "create", "--assignee", "far-away", "--role", "Reader", "--scope", f"/subscriptions/{main_sub}", "-o", "none")
    assert prod != main_sub


def build_by_apply(db, tmp_path) -> None:
    # the file names what only exists once it is applied by the names it will have; ids come from the store
    run(db, "subscription", "create", "-n", "main")
    run(db, "subscription", "create", "-n", "prod")
    subs = {s["name"]: s["subscriptionId"] for s in json.loads(run(db, "subscription", "list", "-o", "json"))}
    run(db, "reset", "--yes")
    text = (TENANT.replace("GROUP", f"/subscriptions/{subs['main']}/resourceGroups/rg-app")
            .replace("VAULT", f"/subscriptions/{subs['main']}/resourceGroups/rg-app/providers/Microsoft.KeyVault/vaults/kv-app-01")
            .replace("FAR_AWAY", f"/subscriptions/{subs['prod']}/resourceGroups/rg-ids/providers/Microsoft.ManagedIdentity/"
                                 "userAssignedIdentities/far-away")
            .replace("SUBSCRIPTION", f"/subscriptions/{subs['main']}"))
    doc = yaml.safe_load(text)
    doc["subscriptions"] = [{**s, "id": subs[s["name"]]} for s in doc["subscriptions"]]
    path = tmp_path / "tenant.yaml"
    path.write_text(yaml.safe_dump(doc))
    run(db, "apply", "-f", str(path), "-o", "none")


def canonical(export_text: str) -> str:
    """The export with every GUID masked and every list in a fixed order: equal means the same tenant."""
    def walk(node):  # noqa: ANN001, ANN202
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return sorted((walk(v) for v in node), key=lambda v: json.dumps(v, sort_keys=True))
        if isinstance(node, str):
            return GUID.sub("<guid>", node)
        return node

    return json.dumps(walk(json.loads(export_text)), indent=1, sort_keys=True)


def operations(db) -> Counter:
    log = json.loads(run(db, "log", "-o", "json"))
    return Counter(e["operationName"] for e in log)


def test_commands_and_apply_build_the_same_tenant_with_the_same_log(tmp_path):
    by_commands, by_apply = tmp_path / "commands.db", tmp_path / "apply.db"
    build_by_commands(by_commands, tmp_path)
    build_by_apply(by_apply, tmp_path)
    exported = canonical(run(by_commands, "export", "-o", "json"))
    assert exported == canonical(run(by_apply, "export", "-o", "json"))
    tenant = json.loads(exported)
    assert all(tenant[k] for k in ("subscriptions", "resourceGroups", "customRoles", "userAssignedIdentities", "resources",
                                   "roleAssignments", "federationIssuers", "applications", "appRoleAssignments"))  # every kind
    assert [r["allowSharedKeyAccess"] for r in tenant["resources"] if "allowSharedKeyAccess" in r] == [False]
    assert operations(by_commands) == operations(by_apply)
    # and the log says what happened, not only that something did
    ops = operations(by_apply)
    assert ops["Microsoft.Directory/servicePrincipals/create"] == 7  # 2 user-assigned, web, staging, the Arc machine, 2 apps
    assert ops["Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/write"] == 1
    assert ops["Microsoft.Authorization/roleAssignments/write"] == 3
    assert ops["Microsoft.Directory/applications/create"] == 2
    assert ops["Microsoft.Directory/appRoleAssignments/create"] == 2
    assert ops["Microsoft.ManagedIdentity/federationIssuers/write"] == 1


@pytest.fixture
def with_role(tmp_path):
    db = tmp_path / "store.db"
    run(db, "group", "create", "-n", "rg", "-l", "westeurope", "-o", "none")
    group = json.loads(run(db, "group", "show", "-n", "rg", "-o", "json"))["id"]
    doc = {"apiVersion": "mi/v1", "resourceGroups": [{"name": "rg", "location": "westeurope"}],
           "customRoles": [{"roleName": "Secret Lister", "permissions": [{"dataActions": ROLE["DataActions"]}],
                            "assignableScopes": [group]}]}
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(doc))
    run(db, "apply", "-f", str(path), "-o", "none")
    return db, doc, path, group


@pytest.mark.parametrize("change, code", [
    (lambda role, g: role["permissions"][0].update(actions=["Microsoft.KeyVault/vaults/secrets/getSecret/action"]), "InvalidAction"),
    (lambda role, g: role.update(assignableScopes=["/"]), "InvalidAssignableScope"),
    (lambda role, g: role.update(assignableScopes=[g.replace("/rg", "/rg-missing")]), "ResourceGroupNotFound"),
])
def test_an_update_by_apply_is_refused_as_the_create_command_refuses_it(with_role, tmp_path, capsys, change, code):
    db, doc, path, group = with_role
    change(doc["customRoles"][0], group)
    path.write_text(yaml.safe_dump(doc))
    before = dump(db)
    capsys.readouterr()
    assert main(["--db", str(db), "apply", "-f", str(path)]) != 0
    by_apply = capsys.readouterr().err
    role = doc["customRoles"][0]
    command_doc = {"Name": "Another Lister", "Actions": role["permissions"][0].get("actions", []),
                   "DataActions": role["permissions"][0]["dataActions"], "AssignableScopes": role["assignableScopes"]}
    assert main(["--db", str(db), "role", "definition", "create", "--role-definition", json.dumps(command_doc)]) != 0
    by_command = capsys.readouterr().err
    assert f"({code})" in by_apply and f"({code})" in by_command
    # the same sentence after the entry's place in the file
    assert by_command.split(") ", 1)[1].splitlines()[0] in by_apply
    assert dump(db) == before


def test_role_definition_update_checks_what_create_checks_and_changes_the_role(with_role, capsys):
    db, doc, path, group = with_role
    role = {"Name": "Secret Lister", "Actions": ["Microsoft.KeyVault/vaults/secrets/getSecret/action"],
            "DataActions": ROLE["DataActions"], "AssignableScopes": [group]}
    before = dump(db)
    assert main(["--db", str(db), "role", "definition", "update", "--role-definition", json.dumps(role)]) == 1
    assert "(InvalidAction)" in capsys.readouterr().err and dump(db) == before
    role["Actions"], role["Description"] = ["Microsoft.KeyVault/vaults/read"], "Reads vaults too"
    updated = json.loads(run(db, "role", "definition", "update", "--role-definition", json.dumps(role), "-o", "json"))
    assert updated["permissions"][0]["actions"] == ["Microsoft.KeyVault/vaults/read"]
    assert updated["description"] == "Reads vaults too"
    # apply now sees the role differ from its file, and puts the file's version back
    plan = json.loads(run(db, "apply", "-f", str(path), "-o", "json"))
    assert [c["op"] for c in plan if c["kind"] == "customRole"] == ["update"]


def test_assignee_object_id_takes_the_id_as_given(tmp_path):
    db = tmp_path / "store.db"
    run(db, "group", "create", "-n", "rg", "-l", "westeurope", "-o", "none")
    object_id = "11111111-2222-3333-4444-555555555555"  # not (yet) in the directory: no lookup, as az's
    ra = json.loads(run(db, "role", "assignment", "create", "--assignee-object-id", object_id, "--assignee-principal-type",
                        "Group", "--role", "Reader", "-g", "rg", "-o", "json"))
    assert (ra["principalId"], ra["principalType"]) == (object_id, "Group")
    again = json.loads(run(db, "role", "assignment", "create", "--assignee-object-id", object_id, "--assignee-principal-type",
                           "Group", "--role", "Reader", "-g", "rg", "-o", "json"))
    assert again["name"] == ra["name"]
