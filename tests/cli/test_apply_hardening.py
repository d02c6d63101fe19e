"""Tenant files a careless or hostile user might write: prune conflicts, repeated keys, huge or deep
documents, and exports that must never leave a fragment behind."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys

import pytest

from mi_cli.services import tenant_file
from tests.conftest import dump, one_error


@pytest.fixture
def prod(ok):
    """rg-prod holds a user-assigned identity, a VM with a system identity, and a role assignment."""
    ok("group", "create", "-n", "rg-prod", "-l", "westeurope")
    ok("identity", "create", "-g", "rg-prod", "-n", "id-prod")
    ok("resource", "create", "-g", "rg-prod", "-n", "vm-prod", "--type", "vm", "--system-assigned")
    ok("role", "assignment", "create", "--assignee", "vm-prod", "--role", "Reader", "-g", "rg-prod")
    return ok("group", "show", "-n", "rg-prod")["id"]


@pytest.mark.both_stores
def test_prune_never_deletes_what_the_file_declares_through_a_cascade(mi, db, tmp_path, prod):
    # the file declares the identity in rg-prod, but not rg-prod itself
    f = tmp_path / "b.yaml"
    f.write_text("apiVersion: mi/v1\nuserAssignedIdentities:\n  - {name: id-prod, resourceGroup: rg-prod}\n")
    before = dump(db)
    for extra in ([], ["--dry-run"]):
        r = mi("apply", "-f", str(f), "--prune", *extra)
        assert r.code == 1, r.err
        assert r.err.startswith(f"ERROR: (PruneConflict) b.yaml: --prune: deleting {prod}, which the file does not declare, "
                                "would also delete 1 thing(s) it declares, such as /subscriptions/"), r.err
        assert "id-prod" in r.err and one_error(r.err)
        assert dump(db) == before
    # an assignment the file declares, at a scope the prune would delete, is the same conflict
    f.write_text("apiVersion: mi/v1\nresourceGroups:\n  - {name: rg-prod, location: westeurope}\n"
                 "userAssignedIdentities:\n  - {name: id-prod, resourceGroup: rg-prod}\n"
                 f"roleAssignments:\n  - {{assignee: id-prod, role: Reader, scope: '{prod}/providers/Microsoft.Compute/virtualMachines/vm-prod'}}\n")
    r = mi("apply", "-f", str(f), "--prune")
    assert r.code == 1 and "(PruneConflict)" in r.err and "vm-prod, which the file does not declare" in r.err
    assert dump(db) == before


@pytest.mark.both_stores
@pytest.mark.parametrize("drop, gone", [
    ("vm-prod", "vm-prod"),              # a declared assignment's assignee is the VM's system identity
    ("id-prod", "id-prod"),              # a declared assignment's assignee, and a declared resource's identity
    ("Prod Reader", "Prod Reader"),      # the custom role a declared assignment grants
])
def test_prune_never_deletes_what_a_declared_entry_refers_to(ok, mi, db, tmp_path, prod, drop, gone):
    # without the refusal, the prune ends in a state the same file cannot be applied to again
    ok("role", "definition", "create", "--role-definition", json.dumps(
        {"Name": "Prod Reader", "Actions": ["*/read"], "AssignableScopes": [prod]}))
    ok("resource", "create", "-g", "rg-prod", "-n", "web-prod", "--type", "webapp")
    ok("identity", "assign", "--resource", "web-prod", "-g", "rg-prod", "--identities", "id-prod")
    ok("role", "assignment", "create", "--assignee", "id-prod", "--role", "Prod Reader", "--scope", prod)
    entries = {
        "vm-prod": "resources:\n  - {name: vm-prod, type: vm, resourceGroup: rg-prod, identity: {systemAssigned: true}}\n",
        "id-prod": "userAssignedIdentities:\n  - {name: id-prod, resourceGroup: rg-prod}\n",
        "Prod Reader": f"customRoles:\n  - {{roleName: Prod Reader, permissions: [{{actions: ['*/read']}}], assignableScopes: ['{prod}']}}\n",
    }
    text = "apiVersion: mi/v1\nresourceGroups:\n  - {name: rg-prod, location: westeurope}\n"
    text += "".join(v for k, v in entries.items() if k != drop and k != "vm-prod")
    vm = entries["vm-prod"] if drop != "vm-prod" else ""
    text += (vm.rstrip("\n") + "\n" if vm else "resources:\n") + \
        "  - {name: web-prod, type: webapp, resourceGroup: rg-prod, identity: {userAssigned: [id-prod]}}\n"
    text += (f"roleAssignments:\n  - {{assignee: vm-prod, role: Reader, scope: '{prod}'}}\n"
             f"  - {{assignee: id-prod, role: Prod Reader, scope: '{prod}'}}\n")
    f = tmp_path / "b.yaml"
    f.write_text(text)
    before = dump(db)
    for extra in (["--dry-run"], []):
        r = mi("apply", "-f", str(f), "--prune", *extra)
        assert r.code == 1, (r.out, r.err)
        assert r.err.startswith("ERROR: (PruneConflict) b.yaml: --prune: deleting "), r.err
        assert gone in r.err and "which the file does not declare" in r.err and one_error(r.err), r.err
        assert dump(db) == before


@pytest.mark.both_stores
def test_a_dry_run_lists_every_delete_a_real_run_makes_cascades_included(ok, mi, db, tmp_path, prod):
    f = tmp_path / "empty.yaml"
    f.write_text("apiVersion: mi/v1\n")
    before = dump(db)
    r = mi("apply", "-f", str(f), "--prune", "--dry-run", "-o", "json")
    assert r.code == 0 and dump(db) == before
    planned = sorted((c["kind"], c["id"].rsplit("/", 1)[-1]) for c in json.loads(r.out) if c["op"] == "delete")
    kinds = [k for k, _ in planned]
    # the group, what is in it, the VM's service principal and its role assignment
    assert ("resourceGroup", "rg-prod") in planned and ("resource", "vm-prod") in planned
    assert ("userAssignedIdentity", "id-prod") in planned
    assert kinds.count("servicePrincipal") == 2 and kinds.count("roleAssignment") == 1
    real = mi("apply", "-f", str(f), "--prune", "-o", "json")
    assert real.code == 0
    assert sorted((c["kind"], c["id"].rsplit("/", 1)[-1]) for c in json.loads(real.out) if c["op"] == "delete") == planned
    assert ok("group", "list") == []


@pytest.mark.parametrize("text, key, line", [
    ("apiVersion: mi/v1\nresourceGroups: []\nresourceGroups:\n  - {name: rg, location: eastus}\n", "resourceGroups", 3),
    ("apiVersion: mi/v1\nresourceGroups:\n  - name: rg\n    location: eastus\n    name: rg2\n", "name", 5),
    ('{"apiVersion": "mi/v1",\n "resourceGroups": [{"name": "rg", "location": "eastus",\n   "tags": {"a": "1", "a": "2"}}]}', "a", 3),
    ('{"apiVersion": "mi/v1", "apiVersion": "mi/v1"}', "apiVersion", 1),
])
def test_a_repeated_key_at_any_depth_is_refused_with_its_line(mi, db, tmp_path, text, key, line):
    f = tmp_path / "dup.yaml"
    f.write_text(text)
    before = dump(db)
    r = mi("apply", "-f", str(f), "--prune")
    assert r.code == 1
    assert r.err == f"ERROR: (InvalidDocument) dup.yaml: line {line}: not valid YAML or JSON: the key '{key}' appears twice in one mapping\n"
    assert dump(db) == before


def test_documents_too_big_too_deep_or_self_referencing_are_refused_in_one_line(mi, db, tmp_path, monkeypatch):
    monkeypatch.setattr(tenant_file, "MAX_BYTES", 1000)
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"apiVersion": "mi/v1", "resourceGroups": [{"name": f"rg-{i}", "location": "eastus"} for i in range(50)]}))
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 400 + "]" * 400)
    deep_yaml = tmp_path / "deep.yaml"
    deep_yaml.write_text("a: " + "[" * 300 + "]" * 300 + "\n")
    laughs = tmp_path / "laughs.yaml"
    laughs.write_text("a: &a [x, x]\nb: &b [*a, *a]\nc: &c [*b, *b]\n")
    recursive = tmp_path / "self.yaml"
    recursive.write_text("resourceGroups: &r [*r]\n")
    before = dump(db)
    expected = {big: "(DocumentTooLarge) big.json: a tenant file can be at most 1,000 bytes",
                deep: "(InvalidDocument) deep.json: the document: nested deeper than 32 levels.",
                deep_yaml: "(InvalidDocument) deep.yaml: the document: nested deeper than 32 levels.",
                laughs: "(InvalidDocument) laughs.yaml: line 2: YAML aliases (*name) are not accepted in tenant files.",
                recursive: "(InvalidDocument) self.yaml: line 1: YAML aliases (*name) are not accepted in tenant files."}
    for path, text in expected.items():
        r = mi("apply", "-f", str(path))
        assert r.code == 1 and r.err.startswith(f"ERROR: {text}"), (path.name, r.err)
        assert one_error(r.err) and len(r.err) < 300
    assert dump(db) == before


def test_stdin_is_read_up_to_the_limit_only(db, tmp_path, monkeypatch):
    import io

    from mi_cli.cli.main import main

    monkeypatch.setattr(tenant_file, "MAX_BYTES", 100)
    monkeypatch.setattr("sys.stdin", io.StringIO('{"apiVersion": "mi/v1"' + " " * 10_000 + "}"))
    assert main(["--db", str(db), "apply", "-f", "-"]) == 1


@pytest.mark.both_stores
def test_an_export_that_fails_midway_leaves_the_previous_file_whole(ok, mi, db, tmp_path):
    ok("group", "create", "-n", "rg", "-l", "westeurope")
    out = tmp_path / "tenant.yaml"
    assert mi("export", "-f", str(out)).code == 0
    previous = out.read_bytes()
    identities = [{"name": f"identity-{i:04d}", "resourceGroup": "rg"} for i in range(1000)]
    many = tmp_path / "many.json"
    many.write_text(json.dumps({"apiVersion": "mi/v1", "userAssignedIdentities": identities}))
    assert mi("apply", "-f", str(many)).code == 0
    assert len(mi("export").out) > 2 * 64 * 1024  # far bigger than the file-size limit below

    def limit_file_size() -> None:  # a full disk, as the process sees it: writes past 64 KB fail
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    r = subprocess.run([sys.executable, "-m", "mi_cli", "--db", str(db), "export", "-f", str(out)], capture_output=True,
                       text=True, preexec_fn=limit_file_size, env={**os.environ, "COLUMNS": "200"}, timeout=120)
    assert r.returncode == 1 and r.stderr.startswith("ERROR: (FileNotWritable) Cannot write"), r.stderr
    assert out.read_bytes() == previous
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".tenant.yaml")) == []


TRICKY = """
plain: text
quoted: "yes"
single: 'no'
bools: [yes, No, ON, off, true, False]
nulls: [~, null, Null, ]
empty:
numbers: [0x1F, 0o17, 1_000, -12, +3, 1.5e3, .inf, -.Inf, .nan, 190:20:30]
dates: [2026-11-27, 2026-11-27T10:00:00Z]
tagged: [!!str 123, !!int "7", !!float "1"]
block: |
  line one
  line two
folded: >
  one
  two
nested: {a: [1, {b: c}], "d e": f}
"""


def test_the_event_reader_resolves_scalars_as_the_safe_loader_does():
    import math

    import yaml

    ours, theirs = tenant_file._load_yaml(TRICKY), yaml.safe_load(TRICKY)
    assert math.isnan(ours["numbers"].pop(8)) and math.isnan(theirs["numbers"].pop(8))
    assert ours == theirs


def test_a_dry_run_needs_no_write_lock(ok, mi, db, tmp_path, monkeypatch):
    # SQLite only: there a dry run works on a copy of the file. On PostgreSQL it is the real transaction,
    # rolled back, and waits for the write lock as a real run does (tests/test_postgres_store.py).
    import sqlite3

    ok("group", "create", "-n", "rg", "-l", "westeurope")
    f = tmp_path / "t.yaml"
    f.write_text("apiVersion: mi/v1\nresourceGroups:\n  - {name: rg, location: westeurope}\n"
                 "userAssignedIdentities:\n  - {name: planned, resourceGroup: rg}\n")
    monkeypatch.setenv("MI_BUSY_TIMEOUT", "0.2")
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # another process is in the middle of a write
    try:
        r = mi("apply", "-f", str(f), "--dry-run", "-o", "json")
        assert r.code == 0, r.err
        assert ("create", "userAssignedIdentity") in {(c["op"], c["kind"]) for c in json.loads(r.out)}
        assert "(StoreBusy)" in mi("apply", "-f", str(f)).err  # a real run does wait for it
    finally:
        writer.rollback()
        writer.close()
    assert mi("identity", "show", "-g", "rg", "-n", "planned").code == 3
