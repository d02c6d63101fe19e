"""Confirmation as az asks it (a question at a terminal, a refusal without one); resource listing and
the type catalog."""

from __future__ import annotations

import os
import pty
import sys

from tests.conftest import dump


def test_group_delete_without_a_terminal_needs_yes(ok, mi, db, scenario):
    # knack: no tty -> "Unable to prompt for confirmation as no tty available. Use --yes." and
    # CLIError('Operation cancelled.'), exit 1 (knack/commands.py CLICommand._user_confirmed)
    before = dump(db)
    r = mi("group", "delete", "-n", "rg")
    assert r.code == 1 and "Unable to prompt for confirmation as no tty available. Use --yes." in r.err
    assert dump(db) == before
    assert mi("group", "delete", "-n", "rg", "--yes").code == 0
    assert ok("group", "list") == []


def _at_a_terminal(db, argv, answer: bytes) -> tuple[int, bytes]:
    """Run mi in a child whose stdin, stdout and stderr are a real pseudo-terminal."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: a fresh mi process whose terminal is the pty
        os.execv(sys.executable, [sys.executable, "-m", "mi_cli", "--db", str(db), *argv])
    seen = b""
    while b"[y/N]" not in seen:
        try:
            chunk = os.read(fd, 1024)
        except OSError:  # the child closed the terminal without asking
            break
        if not chunk:
            break
        seen += chunk
    try:
        os.write(fd, answer)
        while chunk := os.read(fd, 1024):
            seen += chunk
    except OSError:
        pass
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), seen


def test_group_delete_asks_a_person_and_no_keeps_everything(db, scenario):
    before = dump(db)
    code, screen = _at_a_terminal(db, ["group", "delete", "-n", "rg"], b"n\n")
    assert b"Are you sure you want to perform this operation?" in screen
    assert code == 1 and b"OperationCancelled" in screen
    assert dump(db) == before
    code, _ = _at_a_terminal(db, ["group", "delete", "-n", "rg"], b"y\n")
    assert code == 0
    assert dump(db) != before


def test_group_delete_with_yes_does_not_ask_even_at_a_terminal(db, ok, scenario):
    # the helper answers "n" if asked: a prompt here would cancel the delete and fail the test
    code, screen = _at_a_terminal(db, ["group", "delete", "-n", "rg", "--yes"], b"n\n")
    assert code == 0 and b"Are you sure" not in screen
    assert ok("group", "list") == []


def test_resource_list_filters_by_group_and_type(ok, scenario):
    ok("group", "create", "-n", "other", "-l", "eastus")
    ok("resource", "create", "-g", "other", "-n", "kv-other", "--type", "keyvault")
    assert sorted(r["name"] for r in ok("resource", "list")) == ["app1", "kv-other", "vm1"]
    assert [r["name"] for r in ok("resource", "list", "-g", "rg", "--type", "vm")] == ["vm1"]
    kv = ok("resource", "list", "--type", "Microsoft.KeyVault/vaults")
    assert [(r["name"], r["location"], r["identity"]) for r in kv] == [("kv-other", "eastus", None)]
    app = ok("resource", "show", "-g", "rg", "-n", "app1")
    assert app["kind"] == "app" and app["type"] == "Microsoft.Web/sites"


def test_same_name_different_types_needs_type_to_choose(ok, mi, scenario):
    ok("resource", "create", "-g", "rg", "-n", "vm1", "--type", "storage")
    r = mi("resource", "show", "-g", "rg", "-n", "vm1")
    assert r.code == 1 and r.err.startswith("ERROR: (AmbiguousResourceName)")
    assert ok("resource", "show", "-g", "rg", "-n", "vm1", "--type", "vm")["type"] == "Microsoft.Compute/virtualMachines"


def test_the_catalog_lists_types_aliases_support_and_limits(ok, mi):
    types = {t["type"]: t for t in ok("resource", "types")}
    assert len(types) > 140
    vm = types["Microsoft.Compute/virtualMachines"]
    assert vm["aliases"] == ["vm"] and vm["systemAssigned"] and vm["userAssigned"] and vm["userAssignedLimit"] == 150
    assert types["Microsoft.Web/sites"]["aliases"] == ["webapp", "functionapp"]
    assert types["Microsoft.KeyVault/vaults"]["audience"] == "https://vault.azure.net"
    assert not types["Microsoft.KeyVault/vaults"]["systemAssigned"] and not types["Microsoft.KeyVault/vaults"]["userAssigned"]
    storage = types["Microsoft.Storage/storageAccounts"]
    assert storage["systemAssigned"] and storage["audience"] == "https://storage.azure.com/"  # both a holder and a target
    assert types["Microsoft.HybridCompute/machines"]["systemAssignedAlwaysOn"]
    undocumented = types["Microsoft.App/containerApps"]
    assert undocumented["userAssignedLimit"] == 100 and not undocumented["userAssignedLimitDocumented"]
    table = mi("resource", "types", "--filter", "containerapp", "-o", "table").out
    assert "100 (sim)" in table
    assert [t["type"] for t in ok("resource", "types", "--filter", "functionapp")] == ["Microsoft.Web/sites"]


def test_function_apps_are_sites_of_kind_functionapp(ok):
    ok("group", "create", "-n", "rg", "-l", "westeurope")
    fn = ok("resource", "create", "-g", "rg", "-n", "fn-orders", "--type", "functionapp", "--system-assigned")
    assert (fn["type"], fn["kind"], fn["identity"]["type"]) == ("Microsoft.Web/sites", "functionapp", "SystemAssigned")
