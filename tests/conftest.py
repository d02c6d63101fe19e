"""Shared fixtures: every test gets its own store and a clean environment; `mi(...)` runs the CLI.

A tenant that several tests start from is built once per module by a recipe (`prebuilt`) and copied
into each test's store file: the copy is the same file, ids and GUID counter included, that running the
recipe's commands in the test would have made.

A test (or module) marked `both_stores` runs twice: once on an SQLite file, once on a database of a real
PostgreSQL server; its `db` is then the file's Path or the database's URL, and `dump`, `prebuilt` and
`new_store` work the same on either."""

from __future__ import annotations

import copy
import io
import json
import os
import shutil
import sqlite3
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from mi_cli.cli.main import main

MI_VARS = ("MI_DB", "MI_OUTPUT", "MI_SEED", "MI_SUBSCRIPTION", "MI_BUSY_TIMEOUT")
# Azurite as the README's test setup installs it: every `mi serve` a test starts (the demo's included) serves
# Blob Storage with it, unless MI_AZURITE names another.
AZURITE = Path(__file__).resolve().parents[1] / ".azurite" / "node_modules" / ".bin" / "azurite-blob"
if AZURITE.is_file():
    os.environ.setdefault("MI_AZURITE", str(AZURITE))


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    for var in MI_VARS:
        monkeypatch.delenv(var, raising=False)
    # The default store lives under the user data folder: point that at the test's folder.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "home" / "data"))
    monkeypatch.setenv("COLUMNS", "200")


BACKENDS = ("sqlite", "postgres")


def pytest_configure(config):
    config.addinivalue_line("markers", "both_stores: run once on an SQLite store and once on a PostgreSQL one")


def pytest_generate_tests(metafunc):
    if "backend" in metafunc.fixturenames and metafunc.definition.get_closest_marker("both_stores"):
        metafunc.parametrize("backend", BACKENDS, indirect=True)


@pytest.fixture
def backend(request) -> str:
    """The kind of store the test's `db` is: "sqlite", unless the test is marked both_stores."""
    return getattr(request, "param", "sqlite")


def is_url(db) -> bool:
    return isinstance(db, str) and "://" in db


@pytest.fixture
def db(tmp_path, backend, request) -> Path | str:
    """The test's store: a file not made yet, or the URL of a new, empty database (`pg_db`)."""
    if backend == "postgres":
        return request.getfixturevalue("pg_db")
    return tmp_path / "store.db"


@pytest.fixture
def new_store(backend, tmp_path, request):
    """new_store(name): another new store of the test's kind: a file beside the test's, or an empty database."""

    def make(name: str) -> Path | str:
        if backend == "postgres":
            server = request.getfixturevalue("pg_server")
            url = server.database()
            request.addfinalizer(lambda: server.drop(url))
            return url
        return tmp_path / f"{name}.db"

    return make


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def json(self):
        return json.loads(self.out)


def az_error(code: str, message: str) -> str:
    """stderr of a failed command, as az prints a service's error: the line, then Code and Message."""
    return f"ERROR: ({code}) {message}\nCode: {code}\nMessage: {message}\n"


def one_error(err: str) -> bool:
    """True when stderr is exactly one error in az's form: `ERROR: (Code) Message`, followed (for a
    service's error, not a usage error) by `Code: Code` and `Message: Message` that repeat it."""
    lines = err.split("\n")
    if lines[-1] != "" or not lines[0].startswith("ERROR: "):
        return False
    if len(lines) == 2:
        return True
    if len(lines) != 4 or not lines[0].startswith("ERROR: (") or ") " not in lines[0]:
        return False
    code, message = lines[0][len("ERROR: ("):].split(") ", 1)
    return lines[1] == f"Code: {code}" and lines[2] == f"Message: {message}"


def run_mi(db: Path | str, *args: str) -> Result:
    """Run `mi` in-process on `db`, capturing what it prints (for code outside a test's capsys)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["--db", str(db), *args])
    return Result(code, out.getvalue(), err.getvalue())


def ok_json(result: Result, args: tuple[str, ...]):
    """What `ok` checks of a command: success, nothing on stderr; its JSON, if it printed any."""
    assert result.code == 0, (args, result.err)
    assert result.err == "", (args, result.err)
    return result.json if result.out.strip() else None


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
        return ok_json(mi(*args, "-o", "json"), args)

    return run


def dump(db: Path | str) -> str:
    """The whole store as SQL text: equal dumps mean nothing changed. A PostgreSQL store's: its tables,
    columns and indexes, and every row (INSERT INTO "table" VALUES(...), as SQLite's dump writes it) in
    byte order. Its sequences are left out: a rolled-back transaction moves them too, and changes no row."""
    if is_url(db):
        return _dump_postgres(db)
    db = Path(db)
    if not db.exists():
        return ""
    con = sqlite3.connect(db)
    try:
        return "\n".join(con.iterdump())
    finally:
        con.close()


def _dump_postgres(url: str) -> str:
    import psycopg

    lines = []
    with psycopg.connect(url, options="-c timezone=UTC") as con:
        con.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")  # one moment of the store
        tables = [t for (t,) in con.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = "
                                            "'public' AND table_type = 'BASE TABLE' ORDER BY table_name COLLATE \"C\"")]
        for table in tables:
            columns = con.execute(
                "SELECT column_name, data_type, collation_name, is_nullable, column_default FROM information_schema.columns "
                "WHERE table_schema = 'public' AND table_name = %s ORDER BY ordinal_position", (table,)).fetchall()
            lines.append(f'CREATE TABLE "{table}" ({", ".join(" ".join(filter(None, c)) for c in columns)});')
            lines += [f"{d};" for (d,) in con.execute("SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' "
                                                        "AND tablename = %s ORDER BY indexdef COLLATE \"C\"", (table,))]
            lines += [f'INSERT INTO "{table}" VALUES{row};'
                      for (row,) in con.execute(f'SELECT t::text FROM "{table}" AS t ORDER BY t::text COLLATE "C"')]
    return "\n".join(lines)


# A recipe builds a tenant: recipe(ok, mi) runs commands (as the fixtures of the same names do) and
# returns what the tests need to know of it (ids, ...), as plain JSON data.
Recipe = Callable[[Callable[..., Any], Callable[..., Result]], Any]

# What a recipe's result depends on besides its commands: the same recipe under another seed or
# default subscription is another template.
SHAPING_VARS = ("MI_SEED", "MI_SUBSCRIPTION")


@pytest.fixture(scope="module")
def _templates():
    """(recipe, environment, backend) -> (template file or database URL, the recipe's result), for one
    module. The template databases are dropped at its end."""
    made: dict = {}
    yield made
    for template, _ in made.values():
        if is_url(template):
            from tests import pg

            pg.drop(template)


@pytest.fixture
def prebuilt(_templates, tmp_path_factory, db, backend, request):
    """prebuilt(recipe): this test's store becomes the tenant `recipe` builds; returns the recipe's
    result. The recipe runs once per module, environment and backend; each test gets a copy of its
    file, or on PostgreSQL a database made from its database (CREATE DATABASE ... TEMPLATE)."""

    def use(recipe: Recipe):
        if (dump(db) if is_url(db) else db.exists()):
            raise RuntimeError(f"prebuilt({recipe.__name__}) needs a new store, but {db} exists already: "
                               "request the prebuilt fixture before anything that writes the store")
        key = (recipe, tuple(os.environ.get(var) for var in SHAPING_VARS), backend)
        if key not in _templates:
            where = request.getfixturevalue("pg_server").database("tpl") if is_url(db) else \
                tmp_path_factory.mktemp(recipe.__name__) / "store.db"
            _templates[key] = _build(recipe, where)
        template, value = _templates[key]
        if is_url(db):
            from tests import pg

            pg.clone(template, db)  # a drop and a copy: far cheaper than the recipe's commands
        else:
            shutil.copy(template, db)  # with its mode: 0600, as mi creates a store
        return copy.deepcopy(value)

    return use


def runners(path: Path | str):
    """(ok, mi) on the store at `path`, as the fixtures of the same names are on the test's store."""

    def mi(*args: str) -> Result:
        return run_mi(path, *args)

    def ok(*args: str):
        return ok_json(run_mi(path, *args, "-o", "json"), args)

    return ok, mi


def _build(recipe: Recipe, path: Path | str) -> tuple[Path | str, Any]:
    value = recipe(*runners(path))
    json.dumps(value)  # plain data only: every test gets its own deep copy
    if is_url(path):
        return path, value  # every command closed its connections: the database can be a template
    # Every command closed its connections, so the WAL was checkpointed into the file: one file is the store.
    leftovers = [p.name for p in path.parent.iterdir() if p != path]
    assert not leftovers, f"the template store left {leftovers} beside it"
    return path, value


def build_scenario(ok, mi):
    """A small tenant: group rg (westeurope) with a VM (system identity on), a web app, and a
    user-assigned identity 'shared' attached to both. Returns 'shared' as `identity create` printed it."""
    ok("group", "create", "-n", "rg", "-l", "westeurope")
    ok("resource", "create", "-g", "rg", "-n", "vm1", "--type", "vm", "--system-assigned")
    ok("resource", "create", "-g", "rg", "-n", "app1", "--type", "webapp")
    shared = ok("identity", "create", "-g", "rg", "-n", "shared")
    ok("identity", "assign", "--resource", "vm1", "-g", "rg", "--identities", "shared")
    ok("identity", "assign", "--resource", "app1", "-g", "rg", "--identities", "shared")
    return shared


@pytest.fixture
def scenario(prebuilt):
    """The tenant of `build_scenario` in this test's store; returns 'shared'."""
    return prebuilt(build_scenario)


@pytest.fixture
def store(db):
    """Service-level access: `with store() as ctx:` is one committed transaction. The store is opened
    at the first transaction, so fixtures that lay down the store's file may come in any order."""
    from mi_cli.services import Ctx
    from mi_cli.store import open_store

    opened = []

    @contextmanager
    def tx():
        if not opened:
            opened.append(open_store(db))
        with opened[0].transaction(write=True) as session:
            yield Ctx(session)

    yield tx
    for s in opened:
        s.close()


@pytest.fixture(scope="session")
def pg_server():
    """A real PostgreSQL server for the whole run (tests/pg.py): started on first use, stopped at the end."""
    from tests import pg

    server = pg.start()
    yield server
    server.stop()


@pytest.fixture
def pg_db(pg_server) -> str:
    """The URL of a new, empty database on the test server: a store for one test."""
    url = pg_server.database()
    yield url
    pg_server.drop(url)
