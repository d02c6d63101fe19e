"""Shared fixtures: every test gets its own store and a clean environment; `mi(...)` runs the CLI."""

from __future__ import annotations

import json
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from mi_cli.cli.main import main

MI_VARS = ("MI_DB", "MI_OUTPUT", "MI_SEED", "MI_SUBSCRIPTION")


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    for var in MI_VARS:
        monkeypatch.delenv(var, raising=False)
    # The default store lives under the user data folder: point that at the test's folder.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "home" / "data"))
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture
def db(tmp_path) -> Path:
    return tmp_path / "store.db"


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def json(self):
        return json.loads(self.out)


@pytest.fixture
def mi(db, capsys, monkeypatch):
    """Run `mi` in-process on the test's store: mi("identity", "list", "-o", "json")."""

    def run(*args: str, env: dict[str, str] | None = None) -> Result:
        for k, v in (env or {}).items():
            monkeypatch.setenv(k, v)
        capsys.readouterr()
        code = main(["--db", str(db), *args])
        captured = capsys.readouterr()
        for k in env or {}:
            monkeypatch.delenv(k, raising=False)
        return Result(code, captured.out, captured.err)

    return run


@pytest.fixture
def ok(mi):
    """Like `mi`, but the command must succeed with nothing on stderr; returns parsed JSON."""

    def run(*args: str):
        r = mi(*args, "-o", "json")
        assert r.code == 0, r.err
        assert r.err == ""
        return r.json if r.out.strip() else None

    return run


def dump(db: Path) -> str:
    """The whole store as SQL text: equal dumps mean nothing changed."""
    if not db.exists():
        return ""
    con = sqlite3.connect(db)
    try:
        return "\n".join(con.iterdump())
    finally:
        con.close()


@pytest.fixture
def scenario(ok):
    """A small tenant: group rg (westeurope) with a VM (system identity on), a web app, and a
    user-assigned identity 'shared' attached to both."""
    ok("group", "create", "-n", "rg", "-l", "westeurope")
    ok("resource", "create", "-g", "rg", "-n", "vm1", "--type", "vm", "--system-assigned")
    ok("resource", "create", "-g", "rg", "-n", "app1", "--type", "webapp")
    shared = ok("identity", "create", "-g", "rg", "-n", "shared")
    ok("identity", "assign", "--resource", "vm1", "-g", "rg", "--identities", "shared")
    ok("identity", "assign", "--resource", "app1", "-g", "rg", "--identities", "shared")
    return shared


@pytest.fixture
def store(db):
    """Service-level access: `with store() as ctx:` is one committed transaction."""
    from mi_cli.services import Ctx
    from mi_cli.store import open_store

    opened = open_store(db)

    @contextmanager
    def tx():
        with opened.transaction(write=True) as session:
            yield Ctx(session)

    return tx
