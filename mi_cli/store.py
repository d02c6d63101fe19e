"""The store: an SQLite file (or a PostgreSQL database), its settings, schema version and transactions."""

from __future__ import annotations

import errno
import math
import os
import shutil
import sqlite3
import stat
import sys
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import quote

from sqlalchemy import URL, create_engine, event, inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.pool import StaticPool
from sqlalchemy.exc import DatabaseError, OperationalError
from sqlalchemy.schema import CreateColumn
from sqlmodel import Session, SQLModel

from mi_cli import models
from mi_cli.errors import StoreError
from mi_cli.locations import companion  # noqa: F401  (where the files beside a store go)

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
        raise StoreError(  # mi's own setting, not Azure's: one line
            "InvalidParameter",
            f"MI_BUSY_TIMEOUT must be a number of seconds from 0 to {MAX_BUSY_TIMEOUT:g}, not {raw!r}.",
        )
    return seconds


def default_path() -> Path:
    from platformdirs import user_data_path

    return user_data_path("mi", appauthor=False) / "mi.db"


# The longest path SQLite's unix VFS opens (MAX_PATHNAME, 512 bytes with its terminating NUL); a longer one
# fails with "unable to open database file", after mi made the file and its folders.
SQLITE_MAX_PATH = 511

# SQLite's primary result codes (the low byte of an extended code) that name a condition of the store.
SQLITE_BUSY, SQLITE_LOCKED, SQLITE_READONLY, SQLITE_IOERR = 5, 6, 8, 10
SQLITE_CORRUPT, SQLITE_FULL, SQLITE_CANTOPEN, SQLITE_NOTADB = 11, 13, 14, 26
SQLITE_IOERR_SHMSIZE = SQLITE_IOERR | 19 << 8

_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFSOCK: "a socket"}


def _uri(path: Path, mode: str) -> str:
    """An SQLite URI for the file at `path`: every character of the path taken literally (a '?' or '#' in
    it would otherwise start the URI's query), and `mode` rw or ro, never rwc: only mi creates a store file,
    private to the user, and SQLite never makes one anywhere else."""
    return f"file:{quote(os.fsencode(path.absolute()), safe='/')}?mode={mode}"


def _prepare_file(path: Path, timeout: float) -> None:
    """Refuse what cannot be a store, before anything opens it; create a new file (and its folder)
    private to the user."""
    if "\x00" in str(path):
        raise StoreError("InvalidStore", f"The store path '{path}' contains a NUL character.")
    try:
        os.stat(path)  # follows links: what SQLite would open
    except FileNotFoundError:
        if os.path.islink(path):
            raise StoreError("InvalidStore", f"The store path '{path}' is a symbolic link to '{os.readlink(path)}', "
                             "which does not exist: give that path to --db, or remove the link.") from None
        _create(path, timeout)
        _check_companions(path)
        return
    except OSError as exc:
        raise _path_error(path, exc) from None
    _check_companions(path)
    _check_existing(path, timeout)


def _check_companions(path: Path) -> None:
    """SQLite opens files beside the store by name (its WAL, its shared-memory index, a rollback journal):
    one that is a FIFO would hang it, one that is a folder or a device fail it with an I/O error."""
    for suffix in ("-wal", "-shm", "-journal"):
        companion = Path(f"{path}{suffix}")
        try:
            st = os.stat(companion)
        except OSError:
            continue  # absent (SQLite makes it), or unreachable as the store itself is
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else _KINDS.get(stat.S_IFMT(st.st_mode), "a special file")
            raise StoreError("InvalidStore", f"The file '{companion}' beside the store is {kind}, not a regular "
                             f"file: SQLite keeps the store's {suffix[1:]} file there. Remove it.")


def _path_error(path: Path, exc: OSError) -> StoreError:
    if exc.errno == errno.ENAMETOOLONG:
        return StoreError("InvalidStore", f"The store path '{path}' is too long: {exc.strerror}.")
    if exc.errno == errno.ENOTDIR:
        return StoreError("InvalidStore", f"The store '{path}' cannot be created: a folder on its path is a file.")
    return StoreError("InvalidStore", f"The store '{path}' cannot be used: {exc.strerror}.")


def _check_length(path: Path) -> None:
    full = os.fsencode(os.path.realpath(path))
    if len(full) > SQLITE_MAX_PATH:
        raise StoreError("InvalidStore", f"The store path '{path}' is too long for SQLite: {len(full):,} bytes as a full "
                         f"path, at most {SQLITE_MAX_PATH}.")


def _create(path: Path, timeout: float) -> None:
    _check_length(path)
    folder = path.parent
    try:
        folder.mkdir(parents=True, mode=0o700, exist_ok=True)
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise _path_error(path, exc) from None
        reason = "a folder on its path is a file" if isinstance(exc, (FileExistsError, NotADirectoryError)) else exc.strerror
        raise StoreError("InvalidStore", f"The folder '{folder}' for the store cannot be created: {reason}.") from None
    try:
        # O_EXCL: another process may be creating it at the same moment; either wins, and the other looks
        # at what is there as at any existing file. O_NOFOLLOW: a link made meanwhile is not followed.
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        os.close(fd)
    except FileExistsError:
        _prepare_file(path, timeout)
    except OSError as exc:
        if exc.errno == errno.EROFS:
            raise StoreError("StoreReadOnly", f"The store '{path}' cannot be created: its folder is on a read-only "
                             "file system.") from None
        if exc.errno in (errno.EACCES, errno.EPERM) and not os.access(folder, os.W_OK | os.X_OK):
            raise StoreError("StoreReadOnly", f"The store '{path}' cannot be created: its folder '{folder}' is "
                             "read-only.") from None
        raise StoreError("InvalidStore", f"The store '{path}' cannot be created: {exc.strerror}.") from None


def _check_existing(path: Path, timeout: float) -> None:
    """An existing path: a regular file (or a link to one) that is an mi store, or empty. Looked at by
    name and through SQLite only: closing a descriptor of our own on the file would drop the POSIX locks
    that SQLite connections of this process hold on it (a token server's, say)."""
    st = os.stat(path)
    if stat.S_ISDIR(st.st_mode):
        raise StoreError("InvalidStore", f"The store path '{path}' is a directory, not an SQLite file.")
    if not stat.S_ISREG(st.st_mode):
        raise _not_regular(path, st)
    _check_length(path)
    if not os.access(path, os.R_OK | os.W_OK):
        read_only = _read_only_message(path) if os.access(path, os.R_OK) else None
        raise StoreError("StoreReadOnly", read_only) if read_only else StoreError(
            "InvalidStore", f"The store '{path}' is not readable and writable by this user.")
    if st.st_size == 0:
        _make_private(path, st)
        return
    _refuse_foreign_database(path, timeout)


def _not_regular(path: Path, st: os.stat_result) -> StoreError:
    link = f" (a link to '{os.path.realpath(path)}')" if os.path.islink(path) else ""
    kind = _KINDS.get(stat.S_IFMT(st.st_mode), "a special file")
    return StoreError("InvalidStore", f"The store path '{path}'{link} is {kind}, not a regular file: give the path of "
                      "a store file (or of one to create).")


def _make_private(path: Path, st: os.stat_result) -> None:
    """An empty file becomes the store, signing keys and all: only its owner may read it."""
    if not st.st_mode & 0o077:
        return
    try:
        os.chmod(path, 0o600)
    except OSError:
        raise StoreError("InvalidStore", f"The store '{path}' is an empty file that other users can read (mode "
                         f"{stat.S_IMODE(st.st_mode):04o}), and mi cannot make it private: remove it, or give another "
                         "path.") from None


def _read_only_message(path: Path) -> str | None:
    """Why SQLite may not write the store at `path`, with what to do, if the file system says so."""
    folder = path.absolute().parent
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return (f"The store '{path}' is on a read-only file system; mi writes to its store: copy it somewhere "
                    "writable, or mount the file system read-write.")
    except OSError:
        pass
    if os.path.exists(path) and not os.access(path, os.W_OK):
        return (f"The store '{path}' is read-only; mi writes to its store: make the file writable, or copy it "
                "somewhere writable.")
    if not os.access(folder, os.W_OK | os.X_OK):
        return (f"The store '{path}' is in the read-only folder '{folder}', and SQLite keeps the store's -wal and "
                "-shm files beside it: make the folder writable, or move the store.")
    return None


def _is_sqlite_file(path: Path) -> bool:
    """Whether the file starts as every SQLite database does. Read only once SQLite has refused it: then
    no connection of this process can hold locks on it that closing this descriptor would drop."""
    try:
        with open(path, "rb") as f:
            return f.read(16) == b"SQLite format 3\x00"
    except OSError:
        return True  # unreadable now: let SQLite's own words stand


def _refuse_foreign_database(path: Path, timeout: float) -> None:
    """Look, read-only and before any pragma, whether an existing database is ours: switching
    someone else's database to WAL would already change it."""
    where = str(path)
    try:
        con = sqlite3.connect(_uri(path, "ro"), uri=True, timeout=timeout)
        try:
            con.execute("PRAGMA cell_size_check = ON")
            tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        if getattr(exc, "sqlite_errorcode", None) == SQLITE_NOTADB and not _is_sqlite_file(path):
            raise StoreError("InvalidStore", f"The file '{path}' is not an mi store (not an SQLite database).") from None
        known = _known_store_error(exc, where, timeout)
        if known is not None:
            raise known from None
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
    url = URL.create("sqlite", database=_uri(path, "rw"), query={"uri": "true"})
    engine = create_engine(url, connect_args={"timeout": timeout})
    full_ms = math.floor(timeout * 1000)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, record):  # noqa: ANN001
        # Leave transactions to us: pysqlite's implicit BEGIN is DEFERRED, which lets two
        # writers read the same state and lose one update.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {full_ms}")
        record.info["busy_ms"] = full_ms
        # SQLite checks each b-tree page as it reads it: a damaged page is an error before anything is
        # written over it, not a write into a malformed file.
        cur.execute("PRAGMA cell_size_check = ON")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # noqa: ANN001
        # A writer that waited for the process's own write lock has only what is left of its timeout
        # to wait for other processes: one timeout bounds the whole wait.
        deadline = conn.info.get("deadline")
        busy_ms = full_ms if deadline is None else max(0, math.floor((deadline - time.monotonic()) * 1000))
        if conn.info.get("busy_ms") != busy_ms:
            conn.exec_driver_sql(f"PRAGMA busy_timeout = {busy_ms}")
            conn.info["busy_ms"] = busy_ms
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.get("write") else "BEGIN")

    return engine


class Store:
    """One opened store. `transaction()` is the unit of work of a command or a request."""

    def __init__(self, engine: Engine, where: str, timeout: float = DEFAULT_BUSY_TIMEOUT,
                 file: tuple[Path, int, int] | None = None, *, rollback: bool = False) -> None:
        self.engine = engine
        self.rollback = rollback  # every transaction is undone at its end (a dry run on PostgreSQL)
        self.where = where
        self.timeout = timeout
        self._file = file  # (absolute path, device, inode) of the file opened
        # Threads of one process (the token server) queue here for writing: SQLite's busy handler
        # would make them poll with sleeps of up to 100 ms instead.
        self._write_lock = threading.Lock()

    def _check_same_file(self) -> None:
        """The file opened is still the one at the store's path. SQLite goes on using a deleted or replaced
        file through the connections it has: a token server would answer from it, and write where no
        later command looks."""
        path, device, inode = self._file
        try:
            st = os.stat(path)
        except OSError:
            raise StoreError("InvalidStore", f"The store '{self.where}' no longer exists: it was deleted or moved "
                             "while mi was using it.") from None
        if (st.st_dev, st.st_ino) != (device, inode):
            raise StoreError("InvalidStore", f"The store '{self.where}' was replaced by another file while mi was "
                             "using it; open it again (restart mi serve).")

    def close(self) -> None:
        """Close pooled connections; the last one to close checkpoints the WAL into the file."""
        self.engine.dispose()

    def snapshot(self) -> "Store":
        """An in-memory copy of the store, taken under a read transaction: a dry run does the real
        work there, so its plan is exactly a real run's, and the file is only read (no write lock).
        On PostgreSQL the dry run is the real transaction, rolled back at its end."""
        if self.engine.dialect.name != "sqlite":
            return Store(self.engine, self.where, self.timeout, rollback=True)
        copy = sqlite3.connect(":memory:", check_same_thread=False)
        try:
            source = self.engine.raw_connection()
            try:
                source.driver_connection.backup(copy)
            finally:
                source.close()
        except (OperationalError, DatabaseError, sqlite3.Error) as exc:
            copy.close()
            raise _store_error(exc, self.where, self.timeout) from None
        copy.isolation_level = None
        copy.execute("PRAGMA cell_size_check = ON")  # the copy has the file's pages, damaged ones too
        copy.execute("PRAGMA foreign_keys = ON")
        engine = create_engine("sqlite://", creator=lambda: copy, poolclass=StaticPool)
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN"))
        return Store(engine, self.where, self.timeout)

    @contextmanager
    def transaction(self, *, write: bool) -> Iterator[Session]:
        if not write:
            with self._transaction(False, None) as session:
                yield session
            return
        deadline = time.monotonic() + self.timeout
        self._acquire_write_lock()
        try:
            with self._transaction(True, deadline) as session:
                yield session
        finally:
            self._write_lock.release()

    def _acquire_write_lock(self) -> None:
        if not self._write_lock.acquire(timeout=self.timeout):
            raise StoreError(
                "StoreBusy",
                f"The store '{self.where}' stayed locked by another writer for {self.timeout:g} s; try again, "
                "or wait longer with MI_BUSY_TIMEOUT (seconds).",
            )

    @contextmanager
    def _transaction(self, write: bool, deadline: float | None) -> Iterator[Session]:
        if self._file is not None:
            self._check_same_file()
        try:
            with self.engine.connect() as conn:
                conn.info["write"] = write
                conn.info["deadline"] = deadline
                with Session(bind=conn, expire_on_commit=False, autoflush=True) as session:
                    with conn.begin() as tx:
                        _check_schema(conn, self.where)
                        yield session
                        session.flush()
                        if self.rollback:
                            tx.rollback()
        except (OperationalError, DatabaseError) as exc:
            raise _store_error(exc, self.where, self.timeout) from None
        except Exception as exc:  # from the driver's own cursor (the bulk writer's): sqlite3's, or psycopg's
            known = _known_store_error(exc, self.where, self.timeout) if _is_driver_error(exc) else None
            if known is None:
                raise
            raise known from None


def _is_driver_error(exc: Exception) -> bool:
    if isinstance(exc, sqlite3.Error):
        return True
    psycopg = sys.modules.get("psycopg")  # loaded only for a PostgreSQL store
    return psycopg is not None and isinstance(exc, psycopg.Error)


def _store_error(exc: Exception, where: str, timeout: float) -> StoreError:
    known = _known_store_error(exc, where, timeout)
    if known is not None:
        return known
    said = str(getattr(exc, "orig", exc)).strip().splitlines() or [type(exc).__name__]  # PostgreSQL adds LINE 1: ...
    return StoreError("InvalidStore", f"The store '{where}' cannot be used: {said[0].rstrip('.')}.")


def _known_store_error(exc: Exception, where: str, timeout: float) -> StoreError | None:
    """The store error an SQLite error stands for, by SQLite's result code, each with its cause and what
    to do; None for an error that says nothing about the store (a failed constraint: a bug of mi's)."""
    orig = getattr(exc, "orig", exc)
    if not isinstance(orig, sqlite3.Error) and hasattr(orig, "sqlstate"):
        from mi_cli import postgres

        return postgres.known_error(exc, where, timeout)
    message = str(orig)
    code = getattr(orig, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    path = Path(where)
    if primary in (SQLITE_BUSY, SQLITE_LOCKED) or (primary is None and "locked" in message):
        return StoreError(
            "StoreBusy",
            f"The store '{where}' stayed locked by another process for {timeout:g} s; try again, "
            "or wait longer with MI_BUSY_TIMEOUT (seconds).",
        )
    # Text that is not UTF-8 was never written by mi: the bytes under a row changed.
    if primary in (SQLITE_CORRUPT, SQLITE_NOTADB) or (primary is None and message.startswith("Could not decode to UTF-8")):
        return StoreError(
            "StoreCorrupt",
            f"The store '{where}' is damaged (SQLite: {message}); nothing was changed. Restore it from a backup or "
            f"from an `mi export` file (mi apply -f), or salvage what can still be read: "
            f"sqlite3 '{where}' .recover | sqlite3 recovered.db",
        )
    if primary in (SQLITE_READONLY, SQLITE_CANTOPEN) or (primary is None and "readonly" in message):
        if primary == SQLITE_CANTOPEN and not os.path.exists(path):
            return StoreError("InvalidStore", f"The store '{where}' no longer exists: was it deleted or moved while "
                              "mi was using it?")
        read_only = _read_only_message(path)
        if read_only is not None:
            return StoreError("StoreReadOnly", read_only)
        if primary == SQLITE_READONLY:
            return StoreError("StoreReadOnly", f"The store '{where}' is read-only (SQLite: {message}).")
        return StoreError("InvalidStore", f"The store '{where}' cannot be opened (SQLite: {message}).")
    if primary == SQLITE_FULL:
        return _disk_full(where)
    if primary == SQLITE_IOERR:
        return _io_error(path, message, code)
    return None


def _disk_full(where: str) -> StoreError:
    return StoreError("StoreFull", f"The disk holding the store '{where}' is full; nothing was changed. Free some "
                      "space and run the command again.")


def _io_error(path: Path, message: str, code: int) -> StoreError:
    """SQLite says "disk I/O error" for a failed read, write or sync, whatever the system's reason: name
    the likely one, from what can be seen."""
    import resource  # POSIX only, and only for this rare error

    where = str(path)
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if soft != resource.RLIM_INFINITY:  # a write past `ulimit -f` fails with EFBIG: SQLite's I/O error
        sizes = []
        for name in (where, where + "-wal", where + "-shm"):
            try:
                sizes.append(os.path.getsize(name))
            except OSError:
                pass
        if code == SQLITE_IOERR_SHMSIZE or max(sizes, default=0) + 65536 >= soft:
            return StoreError("StoreIOError", f"Writing the store '{where}' failed: this process may not write files "
                              f"larger than {soft:,} bytes (ulimit -f); raise that limit and run the command again.")
    try:
        if shutil.disk_usage(path.absolute().parent).free < 1 << 20:  # ENOSPC on a write SQLite split up
            return _disk_full(where)
    except OSError:
        pass
    return StoreError("StoreIOError", f"Reading or writing the store '{where}' failed (SQLite: {message}); check "
                      "the disk it is on.")


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
    # Each column as the model declares it, in the store's own dialect (PostgreSQL has no DATETIME).
    have = {c["name"] for c in inspect(conn).get_columns("role_assignment")}
    table = models.RoleAssignment.__table__
    for column in ("condition", "condition_version", "updated_at"):
        if column not in have:
            spec = CreateColumn(table.columns[column]).compile(dialect=conn.dialect)
            conn.exec_driver_sql(f"ALTER TABLE role_assignment ADD COLUMN {spec}")


def _v4_to_v5(conn) -> None:  # noqa: ANN001
    # New tables only (the local cloud's CA, Key Vault secrets).
    SQLModel.metadata.create_all(conn)


def _v5_to_v6(conn) -> None:  # noqa: ANN001
    # New table only (storage accounts' shared keys and allowSharedKeyAccess).
    SQLModel.metadata.create_all(conn)


def _v6_to_v7(conn) -> None:  # noqa: ANN001
    # New tables only (app registrations, their client secrets, app role assignments).
    SQLModel.metadata.create_all(conn)


def _v7_to_v8(conn) -> None:  # noqa: ANN001
    # New table only (simulated external issuers of federated assertions).
    SQLModel.metadata.create_all(conn)


MIGRATIONS = {1: _v1_to_v2, 2: _v2_to_v3, 3: _v3_to_v4, 4: _v4_to_v5, 5: _v5_to_v6, 6: _v6_to_v7, 7: _v7_to_v8}


def _has_meta(conn) -> bool:  # noqa: ANN001
    return inspect(conn).has_table("meta")


def _ensure_schema(engine: Engine, where: str) -> None:
    """Create the tables of a new store once; concurrent first opens serialise on BEGIN IMMEDIATE."""
    with engine.connect() as conn:
        conn.info["write"] = False
        conn.info["deadline"] = None
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
                kind = "an SQLite database" if conn.dialect.name == "sqlite" else "a database with tables of its own"
                raise StoreError("InvalidStore", f"The store '{where}' is {kind}, but not an mi store.")
            SQLModel.metadata.create_all(conn)
            conn.execute(
                text("INSERT INTO meta (key, value) VALUES ('schema_version', :v)"), {"v": str(models.SCHEMA_VERSION)}
            )


_PG_ENGINES: OrderedDict[tuple[str, float], tuple[Engine, str]] = OrderedDict()


def _open_postgres(where: str, timeout: float) -> Store:
    """A store on a PostgreSQL server: its schema made or migrated under the write lock on first use.
    Engines are kept per URL, as for files, and as many (a process that opens one database after another
    would otherwise keep an engine, and its compiled statements, for each)."""
    from mi_cli import postgres

    with _ENGINES_LOCK:
        found = _PG_ENGINES.pop((where, timeout), None)
        if found is None:
            url, shown = postgres.parse(where)
            found = (postgres.engine(url, shown, timeout), shown)
        _PG_ENGINES[(where, timeout)] = found
        while len(_PG_ENGINES) > _ENGINES_KEPT:
            _PG_ENGINES.popitem(last=False)  # a store still open keeps its own reference
    engine, shown = found
    try:
        _ensure_schema(engine, shown)
    except (OperationalError, DatabaseError) as exc:
        engine.dispose()
        raise _store_error(exc, shown, timeout) from None
    except StoreError:
        engine.dispose()
        raise
    return Store(engine, shown, timeout)


def open_store(path: str | os.PathLike | None = None) -> Store:
    """Open (creating if new) the SQLite store at `path`, the PostgreSQL database it names as a URL, or
    the default file."""
    from mi_cli import postgres

    timeout = busy_timeout()
    if isinstance(path, str) and postgres.is_url(path):
        return _open_postgres(path, timeout)
    if path is not None and not os.fspath(path):
        raise StoreError("InvalidStore", "The store path is empty: give a file with --db or MI_DB, or neither for the "
                         "default store.")
    try:
        p = Path(path).expanduser() if path is not None else default_path()
    except RuntimeError:  # ~user of no user
        raise StoreError("InvalidStore", f"The store path '{path}' names the home folder of no user.") from None
    _prepare_file(p, timeout)
    engine = _engine_for(p, timeout)
    where = str(p)
    try:
        _ensure_schema(engine, where)
    except (OperationalError, DatabaseError, sqlite3.Error) as exc:
        engine.dispose()
        raise _store_error(exc, where, timeout) from None
    except StoreError:
        engine.dispose()
        raise
    full = p.absolute()
    try:
        st = os.stat(full)
    except OSError:
        engine.dispose()
        raise StoreError("InvalidStore", f"The store '{where}' no longer exists: it was deleted or moved while mi "
                         "was opening it.") from None
    return Store(engine, where, timeout, (full, st.st_dev, st.st_ino))
