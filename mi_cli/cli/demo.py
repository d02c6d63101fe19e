"""`mi demo`: the seed's story, step by step, as real commands on a throw-away store."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Optional

import typer

from mi_cli.errors import MiError

RG = "demo-rg"
STEPS: list[tuple[str, list[str]]] = [
    ("A tenant and a subscription exist from the first command on.", ["account", "show"]),
    ("Create a resource group.", ["group", "create", "-n", RG, "-l", "westeurope"]),
    ("Create a virtual machine and a web app: resources that can hold identities.",
     ["resource", "create", "-g", RG, "-n", "web-vm", "--type", "vm"]),
    (None, ["resource", "create", "-g", RG, "-n", "api-app", "--type", "webapp"]),
    ("Turn on the VM's system-assigned identity: Azure creates a service principal tied to the VM.",
     ["identity", "create", "--system-assigned", "--resource", "web-vm", "-g", RG]),
    ("Create a user-assigned identity: a resource of its own, with its own service principal.",
     ["identity", "create", "--user-assigned", "-g", RG, "-n", "shared-id"]),
    ("Share it: attach the same user-assigned identity to both resources.",
     ["identity", "assign", "--resource", "web-vm", "-g", RG, "--identities", "shared-id"]),
    (None, ["identity", "assign", "--resource", "api-app", "-g", RG, "--identities", "shared-id", "[system]"]),
    ("Both kinds of identity, and the service principals behind them.", ["identity", "list", "-g", RG, "--kind", "all"]),
    (None, ["sp", "list"]),
    ("A Key Vault: a target that identities reach, with no identity of its own.",
     ["resource", "create", "-g", RG, "-n", "kv-demo-01", "--type", "keyvault"]),
    ("The app on the VM asks for a Key Vault token, as IMDS would answer it: no secret anywhere. "
     "The VM's system identity signs in (oid), and xms_mirid names the VM.",
     ["token", "get", "--resource", "web-vm", "-g", RG, "--audience", "https://vault.azure.net"]),
    ("Grant the VM's identity 'Key Vault Secrets User' on the vault, and the shared identity 'Contributor' on the group.",
     ["role", "assignment", "create", "--assignee", "web-vm", "--role", "Key Vault Secrets User", "--scope", "{kv}"]),
    (None, ["role", "assignment", "create", "--assignee", "shared-id", "--role", "Contributor", "-g", RG]),
    ("The VM's identity may read a secret: a data action, granted by a data role on the vault.",
     ["access", "check", "--principal", "web-vm", "--action", "Microsoft.KeyVault/vaults/secrets/getSecret/action",
      "--scope", "{kv}/secrets/db-password"]),
    ("Contributor on the whole group may not: its '*' covers control-plane actions only.",
     ["access", "check", "--principal", "shared-id", "--action", "Microsoft.KeyVault/vaults/secrets/getSecret/action",
      "--scope", "{kv}/secrets/db-password"]),
    ("Delete the VM: its system identity and service principal die with it...",
     ["resource", "delete", "-g", RG, "-n", "web-vm", "--yes"]),
    (None, ["sp", "list"]),
    ("...but its role assignment on the vault stays behind, orphaned: no principal name any more.",
     ["role", "assignment", "list", "--scope", "{kv}"]),
    ("...while the user-assigned identity survives, still attached to the web app.",
     ["identity", "list-resources", "-g", RG, "-n", "shared-id"]),
    ("The difference, as the docs put it and as this store now shows it.", ["compare"]),
]


def demo(
    keep: Annotated[
        Optional[Path], typer.Option("--keep", help="Keep the demo's store at PATH (a new file) instead of removing it.")
    ] = None,
) -> None:
    """Walk through system- vs user-assigned identities on a temporary store (your store is never touched)."""
    from mi_cli.cli.main import main

    if keep is not None and keep.exists():
        raise MiError("InvalidParameter", f"'{keep}' exists already; --keep needs a new file name.")
    folder = Path(tempfile.mkdtemp(prefix="mi-demo-"))
    db = str(keep) if keep is not None else str(folder / "demo.db")
    env_output = os.environ.get("MI_OUTPUT")
    os.environ["MI_OUTPUT"] = "table"  # the demo is for people: tables, even when piped to a pager
    try:
        known: dict[str, str] = {}
        for number, (say, template) in enumerate(STEPS, 1):
            if "kv" not in known and any("{kv}" in a for a in template):
                known["kv"] = _capture(main, ["--db", db, "resource", "show", "-g", RG, "-n", "kv-demo-01", "--query", "id", "-o", "tsv"])
            argv = [a.format(**known) for a in template]
            if say:
                print(f"\n# {say}")
            print(f"$ mi {' '.join(_quote(a) for a in argv)}")
            sys.stdout.flush()
            code = main(["--db", db, *argv])
            sys.stdout.flush()
            if code != 0:
                raise MiError("DemoFailed", f"Step {number} ('mi {' '.join(argv)}') exited with {code}.")
        if keep is not None:
            print(f"\nThe demo's store is kept at {keep}: look at it with 'mi --db {keep} tree', 'graph' and 'doctor'.")
        else:
            print("\nRun 'mi demo --keep demo.db' to keep this store, then 'mi --db demo.db tree', 'graph' and 'doctor'.")
    finally:
        if env_output is not None:
            os.environ["MI_OUTPUT"] = env_output
        else:
            os.environ.pop("MI_OUTPUT", None)
        shutil.rmtree(folder, ignore_errors=True)


def _capture(main, argv: list[str]) -> str:  # noqa: ANN001
    import io
    from contextlib import redirect_stdout

    buffer = io.StringIO()
    with redirect_stdout(buffer):
        if main(argv) != 0:
            raise MiError("DemoFailed", f"'mi {' '.join(argv)}' failed.")
    return buffer.getvalue().strip()


def _quote(arg: str) -> str:
    return f"'{arg}'" if (" " in arg or "[" in arg or "*" in arg) else arg
