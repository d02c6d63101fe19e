"""`mi demo` tells the seed's story on a temporary store and never touches the user's."""

from __future__ import annotations

import tempfile

from mi_cli.cli.main import main
from tests.conftest import dump


def test_demo_runs_every_step_and_leaves_the_users_store_alone(tmp_path, monkeypatch, capsys):
    scratch = tmp_path / "tmp"  # where the demo makes its temporary store
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    mine = tmp_path / "mine.db"
    assert main(["--db", str(mine), "group", "create", "-n", "keep-me", "-l", "westeurope", "-o", "none"]) == 0
    before = dump(mine)
    monkeypatch.setenv("MI_DB", str(mine))
    monkeypatch.setenv("MI_OUTPUT", "json")
    capsys.readouterr()
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert dump(mine) == before
    for step in ("$ mi identity create --system-assigned --resource web-vm", "$ mi token get --resource web-vm",
                 "$ mi resource delete", "$ mi compare"):
        assert step in out
    assert "xms_mirid" in out and "https://vault.azure.net" in out and "access_token: ey" in out
    assert "Allowed: 'Key Vault Secrets User'" in out and "Denied: 'Contributor' has '*' in its actions" in out
    # the app on the VM reads the secret through mi serve's Key Vault, then is refused once its role goes
    assert "200 OK: value 's3cret'" in out
    assert "403 Forbidden (ForbiddenByRbac): Caller is not authorized to perform action on resource." in out
    # the app, as the shared identity, writes a blob and reads it back through mi serve's Blob Storage (Azurite)
    assert "$ app on web-vm as shared-id: PUT https://stdemo01.blob.core.windows.net/reports/today.txt\n201 Created" in out
    assert "200 OK: 'hello from shared-id'" in out
    assert "shared-id is on api-app" in out  # after the VM's deletion, only the web app holds it
    assert "In this store" in out
    assert "Run 'mi demo --keep demo.db' to keep this store" in out
    assert list(scratch.iterdir()) == []  # its temporary store is gone


def test_demo_keep_saves_its_store(tmp_path, capsys):
    kept = tmp_path / "demo.db"
    assert main(["demo", "--keep", str(kept)]) == 0
    capsys.readouterr()
    assert main(["--db", str(kept), "identity", "list", "--kind", "user", "-o", "tsv", "--query", "[].name"]) == 0
    assert capsys.readouterr().out == "shared-id\n"
    assert main(["demo", "--keep", str(kept)]) == 1  # never overwrites
