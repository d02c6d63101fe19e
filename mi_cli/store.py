"""The store: an SQLite file, its pragmas, schema version and transactions."""

from __future__ import annotations

import math
import os
import sqlite3
import threading
from collections import OrderedDict
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Iterator

from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.pool import StaticPool
from sqlalchemy.exc import DatabaseError, OperationalError
from sqlmodel import Session, SQLModel

from mi_cli import models
from mi_cli.errors import StoreError, ValidationError

# How long a writer waits for another one before giving up. One command's write takes milliseconds, but an
# `mi apply` of 100,000 identities holds the write lock for several seconds, and eight busy processes on a
# loaded 2-core machine queue behind each other longer still: 5 s proved too short. A writer that waits a
# minute is still a writer that finishes; MI_BUSY_TIMEOUT (seconds) changes it.
DEFAULT_BUSY_TIMEOUT = 60.0
MAX_BUSY_TIMEOUT = 86_400.0


def busy_timeout() -> float:
    """Seconds to wait for the write lock: MI_BUSY_TIMEOUT, else DEFAULT_BUSY_TIMEOUT."""
    raw = os.environ.get("MI_BUSY_TIMEOUT", "").strip()
    if not raw:
        return DEFAULT_BUSY_TIMEOUT
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds <= MAX_BUSY_TIMEOUT:  # also refuses nan
        raise ValidationError(
            "InvalidParameter",
            f"MI_BUSY_TIMEOUT must be a number of seconds from 0 to {MAX_BUSY_TIMEOUT:g}, not {raw!r}.",
        )
    return seconds


def default_path() -> Path:
    from platformdirs import user_data_path

    return user_data_path("mi", appauthor=False) / "mi.db"


def _prepare_file(path: Path) -> None:
    """Refuse what cannot be a store; create a new file (and its folder) private to the user."""
    if path.is_dir():
        raise StoreError("InvalidStore", f"The store path '{path}' is a directory, not an SQLite file.")
    if path.exists():
        if not os.access(path, os.R_OK | os.W_OK):
            raise StoreError("InvalidStore", f"The store '{path}' is not readable and writable by this user.")
        with open(path, "rb") as f:
            head = f.read(16)
        if head and head != b"SQLite format 3\x00":
            raise StoreError("InvalidStore", f"The file '{path}' is not an mi store (not an SQLite database).")
        if head:
            _refuse_foreign_database(path)
        return
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
    try:
        # O_EXCL: another process may be creating it at the same moment; either wins.
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.close(fd)
    except FileExistsError:
        pass
    except OSError as exc:
        raise StoreError("InvalidStore", f"The store '{path}' cannot be created: {exc.strerror}.") from None


def _refuse_foreign_database(path: Path) -> None:
    """Look, read-only and before any pragma, whether an existing database is ours: switching
    someone else's database to WAL would already change it."""
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        raise StoreError("InvalidStore", f"The file '{path}' cannot be read as an SQLite database: {exc}.") from None
    if tables and "meta" not in tables:
        raise StoreError("InvalidStore", f"The file '{path}' is an SQLite database, but not an mi store.")


# Engines of the files this process opened lately. An engine keeps the compiled form of every statement it
# ran; a process that runs many commands on one store (`mi demo`, a script calling main(), the tests) would
# otherwise compile them all again for each command: about half of a small command's time. Only the engine
# is kept: open_store() starts it on a fresh pool and Store.close() closes every connection, as before.
_ENGINES: OrderedDict[tuple[str, float], Engine] = OrderedDict()
_ENGINES_KEPT = 8
_ENGINES_LOCK = threading.Lock()


def _engine_for(path: Path, timeout: float) -> Engine:
    key = (str(path.absolute()), timeout)
    with _ENGINES_LOCK:
        engine = _ENGINES.pop(key, None)
        if engine is None:
            engine = _sqlite_engine(Path(key[0]), timeout)
        else:
            engine.dispose()  # no connection opened before this open is reused (the file may be a new one)
        _ENGINES[key] = engine
        while len(_ENGINES) > _ENGINES_KEPT:
            _ENGINES.popitem(last=False)  # a store still open keeps its own reference
    return engine


def _sqlite_engine(path: Path, timeout: float) -> Engine:
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": timeout})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # noqa: ANN001
        # Leave transactions to us: pysqlite's implicit BEGIN is DEFERRED, which lets two
        # writers read the same state and lose one update.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {round(timeout * 1000)}")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # noqa: ANN001
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.get("write") else "BEGIN")

    return engine


class Store:
    """One opened store. `transaction()` is the unit of work of a command or a request."""

    def __init__(self, engine: Engine, where: str, timeout: float = DEFAULT_BUSY_TIMEOUT) -> None:
        self.engine = engine
        self.where = where
        self.timeout = timeout
        # Threads of one process (the token server) queue here for writing: SQLite's busy handler
        # would make them poll with sleeps of up to 100 ms instead.
        self._write_lock = threading.Lock()

    def close(self) -> None:
        """Close pooled connections; the last one to close checkpoints the WAL into the file."""
        self.engine.dispose()

    def snapshot(self) -> "Store":
        """An in-memory copy of the store, taken under a read transaction: a dry run does the real
        work there, so its plan is exactly a real run's, and the file is only read (no write lock)."""
        copy = sqlite3.connect(":memory:", check_same_thread=False)
        source = self.engine.raw_connection()
        try:
            source.driver_connection.backup(copy)
        finally:
            source.close()
        copy.isolation_level = None
        copy.execute("PRAGMA foreign_keys = ON")
        engine = create_engine("sqlite://", creator=lambda: copy, poolclass=StaticPool)
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN"))
        return Store(engine, self.where)

    @contextmanager
    def transaction(self, *, write: bool) -> Iterator[Session]:
        with self._write_lock if write else nullcontext():
            with self._transaction(write) as session:
                yield session

    @contextmanager
    def _transaction(self, write: bool) -> Iterator[Session]:
        try:
            with self.engine.connect() as conn:
                conn.info["write"] = write
                with Session(bind=conn, expire_on_commit=False, autoflush=True) as session:
                    with conn.begin():
                        _check_schema(conn, self.where)
                        yield session
                        session.flush()
        except (OperationalError, DatabaseError) as exc:
            raise _store_error(exc, self.where, self.timeout) from None


def _store_error(exc: Exception, where: str, timeout: float) -> StoreError:
    orig = getattr(exc, "orig", exc)
    message = str(orig)
    if isinstance(orig, sqlite3.OperationalError) and "locked" in message:
        return StoreError(
            "StoreBusy",
            f"The store '{where}' stayed locked by another process for {timeout:g} s; try again, "
            "or wait longer with MI_BUSY_TIMEOUT (seconds).",
        )
    if "readonly" in message or "read-only" in message:
        return StoreError("InvalidStore", f"The store '{where}' is read-only.")
    return StoreError("InvalidStore", f"The store '{where}' cannot be used: {message}.")


def _schema_version(conn) -> int | None:  # noqa: ANN001
    if not _has_meta(conn):
        return None
    found = conn.exec_driver_sql("SELECT value FROM meta WHERE key = 'schema_version'").scalar()
    return int(found) if found is not None else None


def _check_schema(conn, where: str) -> None:  # noqa: ANN001
    found = _schema_version(conn)
    if found is None:
        raise StoreError("InvalidStore", f"The store '{where}' has no mi schema.")
    if found > models.SCHEMA_VERSION:
        raise StoreError(
            "UnsupportedStoreVersion",
            f"The store '{where}' has schema version {found}, newer than this mi understands "
            f"({models.SCHEMA_VERSION}); upgrade mi to use it.",
        )
    if found < models.SCHEMA_VERSION:  # migrated at open; another process may have raced us
        raise StoreError("UnsupportedStoreVersion", f"The store '{where}' has old schema version {found}; open it again.")


# Each step takes a store from version N to N + 1 inside the opening transaction.
def _v1_to_v2(conn) -> None:  # noqa: ANN001
    # New tables only (signing keys, endpoint secrets): create_all adds what is missing.
    SQLModel.metadata.create_all(conn)


def _v2_to_v3(conn) -> None:  # noqa: ANN001
    # New tables only (custom roles, role assignments).
    SQLModel.metadata.create_all(conn)


def _v3_to_v4(conn) -> None:  # noqa: ANN001
    # Role assignments gain their condition and an update time. A store that was at version 2 a step ago
    # got the table with today's columns from create_all: add only what is missing.
    have = {c["name"] for c in inspect(conn).get_columns("role_assignment")}
    for column, sql_type in (("condition", "VARCHAR"), ("condition_version", "VARCHAR"), ("updated_at", "DATETIME")):
        if column not in have:
            conn.exec_driver_sql(f"ALTER TABLE role_assignment ADD COLUMN {column} {sql_type}")


MIGRATIONS = {1: _v1_to_v2, 2: _v2_to_v3, 3: _v3_to_v4}


def _has_meta(conn) -> bool:  # noqa: ANN001
    return inspect(conn).has_table("meta")


def _ensure_schema(engine: Engine, where: str) -> None:
    """Create the tables of a new store once; concurrent first opens serialise on BEGIN IMMEDIATE."""
    with engine.connect() as conn:
        conn.info["write"] = False
        with conn.begin():
            version = _schema_version(conn)
        if version is not None and version >= models.SCHEMA_VERSION:
            return  # current (or newer: refused with a clear message by the transaction)
        conn.info["write"] = True
        with conn.begin():
            version = _schema_version(conn)
            if version is not None:
                while version < models.SCHEMA_VERSION:
                    MIGRATIONS[version](conn)
                    version += 1
                conn.execute(text("UPDATE meta SET value = :v WHERE key = 'schema_version'"), {"v": str(version)})
                return
            if inspect(conn).get_table_names():
                raise StoreError("InvalidStore", f"The file '{where}' is an SQLite database, but not an mi store.")
            SQLModel.metadata.create_all(conn)
            conn.execute(
                text("INSERT INTO meta (key, value) VALUES ('schema_version', :v)"), {"v": str(models.SCHEMA_VERSION)}
            )


def open_store(path: str | os.PathLike | None = None) -> Store:
    """Open (creating if new) the SQLite store at `path`, or the default file."""
    p = Path(path).expanduser() if path is not None else default_path()
    timeout = busy_timeout()
    _prepare_file(p)
    engine = _engine_for(p, timeout)
    where = str(p)
    try:
        _ensure_schema(engine, where)
    except (OperationalError, DatabaseError) as exc:
        engine.dispose()
        raise _store_error(exc, where, timeout) from None
    except StoreError:
        engine.dispose()
        raise
    return Store(engine, where, timeout)
