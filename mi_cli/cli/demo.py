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
APP = "@app"  # a step of the app on the VM, not a command: it reads the secret named
BLOB_APP = "@blob"  # the app on the VM, as the shared identity, writing a blob and reading it back
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
    ("Put a secret in the vault, and start mi serve: the local Key Vault answers at https://kv-demo-01.vault.azure.net.",
     ["keyvault", "secret", "set", "--vault-name", "kv-demo-01", "-n", "db-password", "--value", "s3cret", "-o", "none"]),
    ("The app on the VM reads it as Key Vault's clients do: a token from IMDS, then GET through the proxy.",
     [APP, "db-password"]),
    ("Take the role away: the very next read is refused, with Key Vault's own 403.",
     ["role", "assignment", "delete", "--assignee", "web-vm", "--role", "Key Vault Secrets User", "--scope", "{kv}", "--yes"]),
    (None, [APP, "db-password"]),
    ("A storage account: its Blob Storage is served by mi serve at https://stdemo01.blob.core.windows.net "
     "(Azurite keeps the blobs; mi checks every request as Storage does).",
     ["resource", "create", "-g", RG, "-n", "stdemo01", "--type", "storage", "-o", "none"]),
    ("Grant the shared identity 'Storage Blob Data Contributor' on the account.",
     ["role", "assignment", "create", "--assignee", "shared-id", "--role", "Storage Blob Data Contributor",
      "--scope", "{st}", "-o", "none"]),
    ("The app on the VM, as the shared identity, creates a container, writes a blob and reads it back.",
     [BLOB_APP, "reports", "today.txt"]),
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
    from mi_cli.render import write_text  # at a terminal: wrapped between words, no id broken

    if keep is not None and keep.exists():
        raise MiError("InvalidParameter", f"'{keep}' exists already; --keep needs a new file name.")
    folder = Path(tempfile.mkdtemp(prefix="mi-demo-"))
    db = str(keep) if keep is not None else str(folder / "demo.db")
    env_output = os.environ.get("MI_OUTPUT")
    os.environ["MI_OUTPUT"] = "table"  # the demo is for people: tables, even when piped to a pager
    server = None
    try:
        known: dict[str, str] = {}
        for number, (say, template) in enumerate(STEPS, 1):
            if say:
                print()
                write_text(f"# {say}")
            for key, name in (("kv", "kv-demo-01"), ("st", "stdemo01")):
                if key not in known and any(f"{{{key}}}" in a for a in template):
                    # a resource id, named once as a shell variable (as az users script it): the commands
                    # that use it stay short enough to read, and can still be pasted
                    lookup = ["resource", "show", "-g", RG, "-n", name, "--query", "id", "-o", "tsv"]
                    write_text(f"$ {key}=$(mi {' '.join(lookup)})")
                    known[key] = _capture(main, ["--db", db, *lookup])
            argv = [a.format(**known) for a in template]
            if argv[0] == APP:
                server = server or _Server.start(db)
                write_text(f"$ app on web-vm: GET https://kv-demo-01.vault.azure.net/secrets/{argv[1]}/")
                write_text(server.read_secret("web-vm", argv[1]))
                continue
            if argv[0] == BLOB_APP:
                server = server or _Server.start(db)
                server.write_and_read_blob("shared-id", argv[1], argv[2])
                continue
            shown = [a.format(**{key: f"${key}" for key in known}) for a in template]
            write_text(f"$ mi {' '.join(_quote(a) for a in shown)}")
            sys.stdout.flush()
            code = main(["--db", db, *argv])
            sys.stdout.flush()
            if code != 0:
                raise MiError("DemoFailed", f"Step {number} ('mi {' '.join(argv)}') exited with {code}.")
        print()
        if keep is not None:
            write_text(f"The demo's store is kept at {keep}: look at it with 'mi --db {keep} tree', 'graph' and 'doctor'.")
        else:
            write_text("Run 'mi demo --keep demo.db' to keep this store, then 'mi --db demo.db tree', 'graph' and 'doctor'.")
    finally:
        if server is not None:
            server.stop()
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


class _Server:
    """`mi serve` on the demo's store, and an app that talks to it as Key Vault's clients do, with nothing
    but the standard library: a token from IMDS, then a GET through the proxy, verified with the bundle."""

    def __init__(self, db: str, proc, address: dict) -> None:  # noqa: ANN001
        self.db, self.proc, self.address = db, proc, address

    @classmethod
    def start(cls, db: str) -> "_Server":
        import json
        import subprocess
        import time

        address_file = Path(f"{db}.serve.json")
        proc = subprocess.Popen([sys.executable, "-m", "mi_cli", "--db", db, "serve", "--port", "0"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise MiError("DemoFailed", f"mi serve exited: {proc.stderr.read()[-500:]}")
            try:
                address = json.loads(address_file.read_text())
                if address.get("pid") == proc.pid:
                    return cls(db, proc, address)
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        proc.kill()
        raise MiError("DemoFailed", "mi serve did not start in 60 s.")

    def _token(self, resource: str, audience: str, client_id: str | None = None) -> str:
        """A token from IMDS as the VM's app gets one (the VM's system identity, or a user-assigned one by client id)."""
        import json
        import urllib.parse
        import urllib.request

        from mi_cli.cli.main import main

        res_id = _capture(main, ["--db", self.db, "resource", "show", "-g", RG, "-n", resource, "--query", "id", "-o", "tsv"])
        imds = (f"http://127.0.0.1:{self.address['port']}{res_id}/metadata/identity/oauth2/token?api-version=2018-02-01"
                f"&resource={urllib.parse.quote(audience)}" + (f"&client_id={client_id}" if client_id else ""))
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        return json.loads(direct.open(urllib.request.Request(imds, headers={"Metadata": "true"}), timeout=30).read())["access_token"]

    def _through_proxy(self):  # noqa: ANN202 - a urllib opener
        import ssl
        import urllib.request

        context = ssl.create_default_context(cafile=f"{self.db}.ca-bundle.pem")
        return urllib.request.build_opener(
            urllib.request.ProxyHandler({"https": f"http://127.0.0.1:{self.address['proxy_port']}"}),
            urllib.request.HTTPSHandler(context=context))

    def read_secret(self, resource: str, name: str) -> str:
        import json
        import urllib.error
        import urllib.request

        token = self._token(resource, "https://vault.azure.net")
        request = urllib.request.Request(f"https://kv-demo-01.vault.azure.net/secrets/{name}/?api-version=2026-04-01",
                                         headers={"Authorization": f"Bearer {token}"})
        try:
            answer = json.loads(self._through_proxy().open(request, timeout=30).read())
            return f"200 OK: value {answer['value']!r}, version {answer['id'].rsplit('/', 1)[-1]}"
        except urllib.error.HTTPError as exc:
            error = json.loads(exc.read())["error"]
            first = error["message"].splitlines()[0]
            return f"{exc.code} {error['code']} ({error.get('innererror', {}).get('code', '')}): {first}"

    def write_and_read_blob(self, identity: str, container: str, blob: str) -> None:
        """Blob's REST calls as its clients send them, as the VM's user-assigned identity `identity`: create
        the container, put a block blob, get it back. Without Azurite, the one line that says how to get it."""
        import urllib.error
        import urllib.request
        import xml.etree.ElementTree as ET

        from mi_cli.cli.main import main

        client_id = _capture(main, ["--db", self.db, "identity", "show", "-g", RG, "-n", identity, "--query", "clientId",
                                    "-o", "tsv"])
        token = self._token("web-vm", "https://storage.azure.com/", client_id)
        account = "https://stdemo01.blob.core.windows.net"
        text = f"hello from {identity}".encode()
        calls = [("PUT", f"/{container}?restype=container", b"", {}),
                 ("PUT", f"/{container}/{blob}", text, {"x-ms-blob-type": "BlockBlob", "Content-Type": "text/plain"}),
                 ("GET", f"/{container}/{blob}", None, {})]
        from mi_cli.render import write_text

        opener = self._through_proxy()
        for method, path, body, headers in calls:
            write_text(f"$ app on web-vm as {identity}: {method} {account}{path}")
            request = urllib.request.Request(account + path, data=body, method=method, headers={
                "Authorization": f"Bearer {token}", "x-ms-version": "2025-11-05", **headers})
            try:
                with opener.open(request, timeout=120) as answer:
                    content = answer.read()
                    write_text(f"{answer.status} {answer.reason}" + (f": {content.decode()!r}" if content else ""))
            except urllib.error.HTTPError as exc:
                error = ET.fromstring(exc.read().decode("utf-8-sig"))
                write_text(f"{exc.code} {error.findtext('Code')}: {(error.findtext('Message') or '').splitlines()[0]}")
                break

    def stop(self) -> None:
        import subprocess

        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()

