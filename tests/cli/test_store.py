"""The store file: where it lives, what it refuses, how it is opened and protected."""

from __future__ import annotations

import sqlite3
import stat

import pytest

from mi_cli.cli.main import main
from mi_cli.errors import StoreError
from mi_cli.models import SCHEMA_VERSION
from mi_cli.store import open_store
from tests.conftest import dump


def test_default_store_is_in_the_user_data_folder_and_private(tmp_path, capsys):
    assert main(["group", "create", "-n", "rg", "-l", "westeurope", "-o", "none"]) == 0
    path = tmp_path / "home" / "data" / "mi" / "mi.db"
    assert path.exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_mi_db_and_the_db_option_choose_the_store(tmp_path, monkeypatch, capsys):
    env_db, opt_db = tmp_path / "env.db", tmp_path / "opt.db"
    monkeypatch.setenv("MI_DB", str(env_db))
    assert main(["group", "create", "-n", "from-env", "-l", "westeurope", "-o", "none"]) == 0
    assert main(["--db", str(opt_db), "group", "create", "-n", "from-opt", "-l", "westeurope", "-o", "none"]) == 0
    capsys.readouterr()
    main(["group", "list", "-o", "tsv", "--query", "[].name"])
    assert capsys.readouterr().out == "from-env\n"
    main(["--db", str(opt_db), "group", "list", "-o", "tsv", "--query", "[].name"])
    assert capsys.readouterr().out == "from-opt\n"


def test_connections_use_wal_normal_sync_busy_timeout_and_foreign_keys(db):
    store = open_store(db)
    with store.transaction(write=False) as session:
        conn = session.connection()
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 60_000  # queue behind a long apply
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    store.close()


def test_bad_stores_give_one_clear_line(tmp_path, capsys):
    folder = tmp_path / "folder"
    folder.mkdir()
    text = tmp_path / "notes.txt"
    text.write_text("these are not the tables you are looking for\n")
    other = tmp_path / "other.sqlite"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE customers (id INTEGER)")
    con.commit()
    con.close()
    newer = tmp_path / "newer.db"
    assert main(["--db", str(newer), "account", "show", "-o", "none"]) == 0
    con = sqlite3.connect(newer)
    con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    con.commit()
    con.close()
    capsys.readouterr()
    for path, expected in [
        (folder, "is a directory"),
        (text, "not an SQLite database"),
        (other, "not an mi store"),
        (newer, f"schema version {SCHEMA_VERSION + 1}, newer than this mi understands"),
    ]:
        before = path.read_bytes() if path.is_file() else None
        assert main(["--db", str(path), "identity", "list"]) == 1
        err = capsys.readouterr().err
        assert err.startswith("ERROR: (") and expected in err and err.count("\n") == 1, err
        if before is not None:
            assert path.read_bytes() == before


def test_mi_busy_timeout_sets_how_long_a_writer_waits(db, monkeypatch):
    monkeypatch.setenv("MI_BUSY_TIMEOUT", "2.5")
    store = open_store(db)
    with store.transaction(write=False) as session:
        assert session.connection().exec_driver_sql("PRAGMA busy_timeout").scalar() == 2500
    store.close()
    for wrong in ("soon", "-1", "nan", "inf", "1e9"):
        monkeypatch.setenv("MI_BUSY_TIMEOUT", wrong)
        expected = rf"^\(InvalidParameter\) MI_BUSY_TIMEOUT must be a number of seconds from 0 to 86400, not '{wrong}'\.$"
        with pytest.raises(StoreError, match=expected):
            open_store(db)


def test_a_bad_mi_busy_timeout_is_one_line(mi, db):
    r = mi("group", "list", env={"MI_BUSY_TIMEOUT": "a minute"})
    assert (r.code, r.out) == (1, "")
    assert r.err == ("ERROR: (InvalidParameter) MI_BUSY_TIMEOUT must be a number of seconds from 0 to 86400, "
                     "not 'a minute'.\n")


def test_a_writer_that_waits_past_the_timeout_is_told_the_store_is_busy(mi, ok, db):
    ok("group", "create", "-n", "rg", "-l", "westeurope")
    before = dump(db)
    holder = sqlite3.connect(db, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another process in the middle of a long write
        r = mi("group", "create", "-n", "rg2", "-l", "westeurope", env={"MI_BUSY_TIMEOUT": "0.2"})
        assert ok("group", "list")[0]["name"] == "rg"  # readers are not held up meanwhile
    finally:
        holder.rollback()
        holder.close()
    assert (r.code, r.out) == (1, "")
    assert r.err == (f"ERROR: (StoreBusy) The store '{db}' stayed locked by another process for 0.2 s; try again, "
                     "or wait longer with MI_BUSY_TIMEOUT (seconds).\n")
    assert dump(db) == before
