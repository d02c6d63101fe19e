"""tree, graph and doctor on a scenario store; every doctor finding fixed by the command it suggests."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess

import pytest

from tests.conftest import build_scenario

GET_SECRET = "Microsoft.KeyVault/vaults/secrets/getSecret/action"


def build_tenant(ok, mi):
    """rg: vm1 (system + shared), app1 (shared), kv-one (vault); 'lonely' attached to nothing; 'doomed'
    deleted while attached to vm1; vm1's identity may read secrets; an orphan from a deleted vm9."""
    scenario = build_scenario(ok, mi)
    kv = ok("resource", "create", "-g", "rg", "-n", "kv-one", "--type", "keyvault")
    ok("identity", "create", "-g", "rg", "-n", "lonely")
    ok("identity", "create", "-g", "rg", "-n", "doomed")
    ok("identity", "assign", "--resource", "vm1", "-g", "rg", "--identities", "doomed")
    r = mi("identity", "delete", "-g", "rg", "-n", "doomed", "--yes")
    assert r.code == 0 and r.err.startswith("WARNING: "), r.err  # it was still on vm1
    ok("role", "assignment", "create", "--assignee", "vm1", "--role", "Key Vault Secrets User", "--scope", kv["id"])
    ok("resource", "create", "-g", "rg", "-n", "vm9", "--type", "vm", "--system-assigned")
    ok("role", "assignment", "create", "--assignee", "vm9", "--role", "Reader", "--scope", kv["id"])
    ok("resource", "delete", "-g", "rg", "-n", "vm9", "--yes")
    return {"kv": kv, "shared": scenario, "vm1": ok("resource", "show", "-g", "rg", "-n", "vm1"),
            "app1": ok("resource", "show", "-g", "rg", "-n", "app1"), "lonely": ok("identity", "show", "-g", "rg", "-n", "lonely")}


@pytest.fixture
def tenant(prebuilt):
    return prebuilt(build_tenant)


def test_tree_json_is_the_whole_structure(ok, tenant):
    t = ok("tree")
    vm1, shared, lonely = tenant["vm1"], tenant["shared"], tenant["lonely"]
    doomed_id = shared["id"].replace("/shared", "/doomed")
    [sub] = t["subscriptions"]
    assert t["tenantId"] == ok("account", "show")["tenantId"] and sub["isDefault"]
    [g] = sub["resourceGroups"]
    assert (g["name"], g["location"]) == ("rg", "westeurope")
    by_name = {r["name"]: r for r in g["resources"]}
    assert sorted(by_name) == ["app1", "kv-one", "vm1"]
    assert by_name["vm1"]["systemAssigned"] == {
        "principalId": vm1["identity"]["principalId"],
        "clientId": ok("identity", "show", "--resource", "vm1", "-g", "rg")["clientId"],
        "lifecycle": "lives and dies with vm1"}
    assert by_name["vm1"]["userAssigned"] == [
        {"name": "shared", "id": shared["id"], "principalId": shared["principalId"], "clientId": shared["clientId"],
         "status": "ok", "shared": True, "alsoOn": ["app1"]},
        {"name": "doomed", "id": doomed_id, "principalId": vm1["identity"]["userAssignedIdentities"][doomed_id]["principalId"],
         "clientId": vm1["identity"]["userAssignedIdentities"][doomed_id]["clientId"], "status": "broken", "shared": False, "alsoOn": []},
    ]
    assert by_name["app1"]["systemAssigned"] is None and by_name["app1"]["userAssigned"][0]["alsoOn"] == ["vm1"]
    assert by_name["kv-one"] == {"name": "kv-one", "type": "Microsoft.KeyVault/vaults", "id": tenant["kv"]["id"],
                                 "systemAssigned": None, "userAssigned": []}
    assert g["userAssignedIdentities"] == [
        {"name": "lonely", "id": lonely["id"], "principalId": lonely["principalId"], "clientId": lonely["clientId"],
         "attachedTo": [], "status": "unattached"},
        {"name": "shared", "id": shared["id"], "principalId": shared["principalId"], "clientId": shared["clientId"],
         "attachedTo": ["vm1", "app1"], "status": "shared"},  # in the order they were attached
    ]


def test_tree_for_people(mi, tenant):
    text = mi("tree", "-g", "rg", "-o", "table").out
    assert "lives and dies with vm1" in text and "shared, also on app1" in text
    assert "user-assigned doomed: BROKEN" in text and "lonely" in text and "attached to nothing" in text
    assert mi("tree", "-g", "nope").code == 3


def test_graph_json_edges_follow_sources_identities_roles_targets(ok, mi, tenant):
    import json

    g = json.loads(mi("graph", "--format", "json").out)
    nodes = {n["id"]: n for n in g["nodes"]}
    label = lambda i: nodes[i]["label"]  # noqa: E731
    edges = {(label(e["from"]), e["kind"], e["label"], label(e["to"]), e["broken"]) for e in g["edges"]}
    assert ("vm vm1", "has", None, "system: vm1", False) in edges
    assert ("vm vm1", "uses", None, "user: shared", False) in edges
    assert ("webapp app1", "uses", None, "user: shared", False) in edges
    assert ("vm vm1", "uses", None, "user: doomed (deleted)", True) in edges
    assert ("system: vm1", "role", "Key Vault Secrets User", "keyvault kv-one", False) in edges
    orphan = [e for e in edges if e[1] == "role" and e[4]]
    assert len(orphan) == 1 and orphan[0][0].startswith("Identity not found") and orphan[0][2] == "Reader"


def _check_mermaid(text: str) -> None:
    """What a Mermaid flowchart parser needs from us: a header, node ids declared once with balanced,
    quoted labels, edges between declared nodes, balanced subgraphs."""
    lines = text.strip().splitlines()
    assert lines[0] == "flowchart LR"
    declared, depth = set(), 0
    node_decl = re.compile(r'^\s+([A-Z]+\d+)(\["|\(\["|\{\{"|\[\(")([^"]*)("\]|"\]\)|"\}\}|"\)\])$')
    edge = re.compile(r'^\s+([A-Z]+\d+) (-->|-\.->|-- "[^"]*" -->|-\. "[^"]*" \.->) ([A-Z]+\d+)$')
    pairs = {'["': '"]', '(["': '"])', '{{"': '"}}', '[("': '")]'}
    for line in lines[1:]:
        if line.strip().startswith("subgraph "):
            depth += 1
        elif line.strip() == "end":
            depth -= 1
        elif m := node_decl.match(line):
            assert m.group(1) not in declared and pairs[m.group(2)] == m.group(4)
            declared.add(m.group(1))
        elif m := edge.match(line):
            assert m.group(1) in declared and m.group(3) in declared, line
        else:
            assert re.match(r"^\s+style [A-Z]+\d+ stroke-dasharray: 5 5$", line), line
        assert depth >= 0
    assert depth == 0 and declared


def test_mermaid_is_well_formed(mi, tenant):
    _check_mermaid(mi("graph").out)
    _check_mermaid(mi("graph", "--format", "mermaid").out)


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz 'dot' is not installed")
def test_dot_renders_with_graphviz(mi, tenant, tmp_path):
    dot = mi("graph", "--format", "dot").out
    svg = subprocess.run(["dot", "-Tsvg"], input=dot, capture_output=True, text=True, check=True).stdout
    assert "<svg" in svg and "keyvault kv&#45;one" in svg and "Key Vault Secrets User" in svg


def test_every_doctor_finding_is_fixed_by_its_own_command(ok, mi, tenant):
    # make the last two kinds of finding happen too
    ok("role", "assignment", "create", "--assignee", "shared", "--role", "Contributor", "--scope", tenant["kv"]["id"])
    ok("resource", "create", "-g", "rg", "-n", "flow", "--type", "logicapp", "--user-assigned", "lonely")
    ok("resource", "create", "-g", "rg", "-n", "idle-vm", "--type", "vm", "--system-assigned")
    findings = ok("doctor")
    codes = {f["code"] for f in findings}
    assert codes == {"DanglingUserAssignedIdentity", "OrphanedRoleAssignment", "SystemIdentityWithoutRole",
                     "ControlPlaneRoleForDataAccess", "NearUserAssignedLimit"}, codes
    assert mi("doctor", "--strict").code == 1
    for finding in findings:
        for command in finding["fix"]:
            argv = shlex.split(command)
            assert argv[0] == "mi"
            r = mi(*argv[1:])
            assert r.code == 0, (command, r.err)
        remaining = {(f["code"], f["target"]) for f in ok("doctor")}
        assert (finding["code"], finding["target"]) not in remaining, finding
    # removing the logic app's identity left 'lonely' unattached: that finding's fix runs too
    [finding] = ok("doctor")
    assert (finding["code"], finding["target"]) == ("UnattachedUserAssignedIdentity", tenant["lonely"]["id"])
    for command in finding["fix"]:
        assert mi(*shlex.split(command)[1:]).code == 0
    assert ok("doctor") == []
    r = mi("doctor", "--strict", "-o", "table")
    assert r.code == 0 and r.out.startswith("No findings")


def test_unattached_identity_finding_and_its_fix(ok, mi, tenant):
    [f] = [f for f in ok("doctor") if f["code"] == "UnattachedUserAssignedIdentity"]
    assert f["target"] == tenant["lonely"]["id"] and f["severity"] == "info"
    assert mi(*shlex.split(f["fix"][0])[1:]).code == 0
    assert not [f for f in ok("doctor") if f["code"] == "UnattachedUserAssignedIdentity"]


def test_a_user_identity_without_a_role_is_not_a_finding(ok, mi):
    ok("group", "create", "-n", "rg", "-l", "westeurope")
    ok("identity", "create", "-g", "rg", "-n", "ua-later")
    ok("resource", "create", "-g", "rg", "-n", "vm1", "--type", "vm", "--user-assigned", "ua-later")
    assert ok("doctor") == []


def test_log_filters_by_principal_and_shows_sign_ins(ok, mi, tenant):
    vm1 = tenant["vm1"]["identity"]["principalId"]
    ok("token", "get", "--resource", "vm1", "-g", "rg", "--audience", "https://vault.azure.net")
    mine = ok("log", "--principal", vm1)
    ops = {e["operationName"] for e in mine}
    assert "Microsoft.ManagedIdentity/token/issue" in ops and "Microsoft.Authorization/roleAssignments/write" in ops
    assert all(vm1 in (e["caller"] + (e["detail"] or "")) for e in mine)


def build_many(ok, mi):
    """Two groups, 60 identities and 12 VMs each with its system identity: more than the views show."""
    import json

    doc = {"apiVersion": "mi/v1", "resourceGroups": [{"name": n, "location": "westeurope"} for n in ("rg-a", "rg-b")],
           "userAssignedIdentities": [{"name": f"id-{i:03d}", "resourceGroup": "rg-a"} for i in range(60)],
           "resources": [{"name": f"vm-{j:02d}", "type": "vm", "resourceGroup": "rg-b", "identity": {"systemAssigned": True}}
                         for j in range(12)]}
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        json.dump(doc, f)
        f.flush()
        assert mi("apply", "-f", f.name, "-o", "none").code == 0


def test_tree_and_doctor_summarise_what_they_do_not_show(prebuilt, mi, ok):
    prebuilt(build_many)
    out = mi("tree", "--limit", "5", "-o", "table").out
    assert "… and 55 more user-assigned identities (--limit 0 shows all, -g rg-a one group)" in out
    assert "… and 7 more resources" in out
    assert out.rstrip().endswith("2 resource group(s), 12 resource(s), 60 user-assigned identities")
    assert len(out.splitlines()) < 40
    assert "id-059" in mi("tree", "--limit", "0", "-o", "table").out
    # the data forms always hold everything
    assert len(ok("tree")["subscriptions"][0]["resourceGroups"][0]["userAssignedIdentities"]) == 60

    doctor = mi("doctor", "--limit", "3", "-o", "table").out
    lines = doctor.splitlines()
    assert lines[-1] == "72 finding(s) of 2 kind(s): 72 info"
    # kinds, the most numerous first, each with its count
    assert [line for line in lines if not line.startswith(" ")][:2] == ["INFO UnattachedUserAssignedIdentity (60)",
                                                                       "INFO SystemIdentityWithoutRole (12)"]
    assert "… and 57 more of this kind (--limit 0 shows all; -o json lists every finding)" in doctor
    assert "… and 9 more of this kind" in doctor
    assert len(ok("doctor")) == 72
