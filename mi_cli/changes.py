"""Knowing cheaply whether the store changed, and keeping what was read from it until it does."""

# A server answers most requests from what it read before: a resource, the identity a token request gets, the roles
# a principal holds. It may do so only while no commit has changed the store since, by any process: a `Watch`
# answers that question in microseconds (SQLite) or one round trip (PostgreSQL), and a `Memo` keeps values read
# under one answer (a version) and forgets them all at the next.
#
# SQLite: `PRAGMA data_version` on a connection of the watch's own "changes when any other connection commits"
# (sqlite.org/pragma.html#pragma_data_version); the server's writes go through other connections, so they count.
# The one exception are rows of the activity log the server appends through `Watch.write_log`: they go through the
# watching connection itself, whose own commits do not change its data_version, because nothing a server keeps
# depends on the log. Rows that wait to be written (server/journal batches sign-ins) hold the store's log lock, a
# file beside it: `settle` waits for them, so that `mi log` shows what was answered before it started.
#
# PostgreSQL: `pg_current_snapshot()` in autocommit, compared with the last one seen. PostgreSQL's documentation
# (Transaction ID and Snapshot Information Functions) gives its use as "to determine which transactions were
# committed between two snapshots": a transaction id X with xmin <= X < xmax that is not in the xip list "was already
# completed at the time of the snapshot", ids at or past xmax had not completed. So a commit anywhere between two
# snapshots makes them differ, and two equal snapshots mean nothing committed in between; the ids that completed in
# between are worked out from both, and those of the server's own log writes (`write_log` records its transaction's
# id before it commits) are not a change. Ids of other databases of the same server make false alarms, which cost
# a re-read and nothing else.

from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable, Hashable, Iterable, TypeVar
from urllib.parse import quote, unquote

T = TypeVar("T")

# The activity log's columns, in the order `write_log` takes each row's values.
LOG_COLUMNS = ("time", "operation", "target", "caller", "status", "detail")


class Busy(Exception):
    """The store's write lock is held by another writer: try the write again later."""


class Watch:
    """Whether the store changed since a version was read, asked of one connection that does nothing else
    (but append the server's own log rows, which are no change)."""

    cheap = False  # asking costs microseconds and never waits for the store (it may be asked on an event loop)

    def version(self) -> Hashable:
        """A value that stays the same while nothing commits to the store (but `write_log`), and changes
        when anything does. A value never seen before when the store cannot say (a false alarm)."""
        raise NotImplementedError

    def write_log(self, rows: list[dict[str, Any]], *, wait: bool = False) -> None:
        """Append activity-log rows (as Ctx.log makes them), in one transaction that is not a change. Raises
        Busy when another writer holds the store and `wait` is false (then nothing was written)."""
        raise NotImplementedError

    def writable(self) -> bool:
        """Whether no other writer holds the store now (a write would not wait)."""
        return True

    def close(self) -> None:
        raise NotImplementedError


def _converter(engine) -> Callable[[Iterable[dict[str, Any]]], list[tuple]]:  # noqa: ANN001
    """Rows of the activity log (dicts, as Ctx.log makes them) -> tuples of values as this database takes
    them, each column converted by its SQLAlchemy type, as the store's own writer converts them."""
    from mi_cli.models import ActivityLog

    table = ActivityLog.__table__
    dialect = engine.dialect
    processors = [table.columns[name].type.dialect_impl(dialect).bind_processor(dialect) for name in LOG_COLUMNS]

    def convert(rows: Iterable[dict[str, Any]]) -> list[tuple]:
        return [tuple(row[name] if p is None or row[name] is None else p(row[name])
                      for name, p in zip(LOG_COLUMNS, processors)) for row in rows]

    return convert


class SqliteWatch(Watch):
    cheap = True

    def __init__(self, engine, timeout: float) -> None:  # noqa: ANN001
        # A connection of the engine's own (its settings: WAL, foreign keys, no implicit transactions), taken
        # out of the pool for good.
        pooled = engine.raw_connection()
        self._con = pooled.driver_connection  # (none once detached)
        pooled.detach()
        self._timeout_ms = int(timeout * 1000)
        # Asking never waits: a read that finds the WAL being reset is a false alarm, not a wait; a log write
        # that finds the lock held is tried again later, never waited for on the server's event loop.
        self._con.execute("PRAGMA busy_timeout = 0")
        # Checkpoints (and their fsyncs) are left to other connections: this one answers on the event loop.
        self._con.execute("PRAGMA wal_autocheckpoint = 0")
        self._lock = threading.Lock()
        self._convert = _converter(engine)
        self._insert = f"INSERT INTO activity_log ({', '.join(LOG_COLUMNS)}) VALUES ({', '.join('?' * len(LOG_COLUMNS))})"
        self._path = _sqlite_path(engine)
        self._file = _identity(self._path)
        # The log lock (beside the store): held shared while rows of the activity log wait to be written, so that
        # a reader can wait for them (settle()). Made by the server, never by a reader.
        self._log_lock: int | None = None
        if self._path is not None:
            try:
                self._log_lock = os.open(log_lock_path(self._path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError:  # no lock, no rows that wait: each is written before its answer
                pass

    def version(self) -> Hashable:
        import sqlite3

        if self._path is not None and _identity(self._path) != self._file:
            return object()  # the file was deleted or replaced: the store's own transaction says so
        with self._lock:
            try:
                return self._con.execute("PRAGMA data_version").fetchone()[0]
            except sqlite3.Error:
                return object()

    def write_log(self, rows: list[dict[str, Any]], *, wait: bool = False) -> None:
        import sqlite3

        values = self._convert(rows)
        with self._lock:
            con = self._con
            if wait:
                con.execute(f"PRAGMA busy_timeout = {self._timeout_ms}")
            try:
                if len(values) == 1:  # one statement, its own transaction
                    con.execute(self._insert, values[0])
                    return
                con.execute("BEGIN IMMEDIATE")
                try:
                    con.executemany(self._insert, values)
                    con.execute("COMMIT")
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
            except sqlite3.OperationalError as exc:
                if _is_busy(exc):
                    raise Busy(str(exc)) from None
                raise
            finally:
                if wait:
                    con.execute("PRAGMA busy_timeout = 0")

    def writable(self) -> bool:
        import sqlite3

        with self._lock:
            try:
                self._con.execute("BEGIN IMMEDIATE")
            except sqlite3.Error:
                return False
            self._con.execute("ROLLBACK")
            return True

    def hold(self) -> bool:
        """Hold the log lock (shared: every server of the store may); False when a reader is settling now."""
        import fcntl

        if self._log_lock is None:
            return False
        try:
            fcntl.flock(self._log_lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return False
        return True

    def release(self) -> None:
        import fcntl

        if self._log_lock is not None:
            fcntl.flock(self._log_lock, fcntl.LOCK_UN)

    def checkpoint(self) -> None:
        """Copy the WAL into the database file, as far as readers allow (PASSIVE: never waits), on a
        connection of its own so that the watching one never pays for it."""
        import sqlite3

        if self._path is None:
            return
        try:
            con = sqlite3.connect(f"file:{quote(os.fsencode(self._path), safe='/')}?mode=rw", uri=True, timeout=0,
                                  isolation_level=None)
        except sqlite3.Error:
            return
        try:
            con.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error:
            pass
        finally:
            con.close()

    def close(self) -> None:
        with self._lock:
            try:
                self._con.close()
            except Exception:  # noqa: BLE001 - closing at shutdown: nothing to do about it
                pass
            if self._log_lock is not None:
                os.close(self._log_lock)  # (the file stays: another server of the store may hold it)
                self._log_lock = None


def log_lock_path(path: str) -> str:
    """The log lock of the SQLite store at `path` (SqliteWatch.hold, settle)."""
    return f"{path}.log.lock"


SETTLE_SECONDS = 2.0  # the longest a reader waits for rows a server holds (a server under steady load may always hold some)


def settle(engine, timeout: float = SETTLE_SECONDS) -> bool:  # noqa: ANN001 - an Engine
    """Wait until no server of this SQLite store (on this machine) holds activity-log rows not yet written, at
    most `timeout` seconds. True when a server ever ran on the store (a log lock exists): the caller then reads
    the log in a transaction begun after this, which holds what was answered before it was called."""
    import fcntl

    path = _sqlite_path(engine) if engine.dialect.name == "sqlite" else None
    if path is None:
        return False
    try:
        fd = os.open(log_lock_path(path), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                if time.monotonic() >= deadline:
                    return True
                time.sleep(0.001)
                continue
            fcntl.flock(fd, fcntl.LOCK_UN)
            return True
    finally:
        os.close(fd)


def _sqlite_path(engine) -> str | None:  # noqa: ANN001
    database = engine.url.database or ""
    if database.startswith("file:"):
        return unquote(database[len("file:"):].partition("?")[0])
    return database if database and database != ":memory:" else None


def _identity(path: str | None) -> tuple[int, int] | None:
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _is_busy(exc: Exception) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return (code is not None and code & 0xFF in (5, 6)) or "locked" in str(exc)


class PostgresWatch(Watch):
    def __init__(self, engine, timeout: float) -> None:  # noqa: ANN001
        self._engine = engine
        self._timeout_ms = int(timeout * 1000)
        self._lock = threading.Lock()  # the asking connection, and what was last seen
        self._write_lock = threading.Lock()  # the writing connection
        self._convert = _converter(engine)
        self._asker: Any = None
        self._writer: Any = None
        self._seen: str | None = None
        self._parsed: tuple[int, int, frozenset[int]] | None = None
        self._count = 0
        self._own: set[int] = set()  # ids of the log writes' transactions not yet seen completed

    def _connect(self, *, autocommit: bool) -> Any:
        """A connection of the engine's own (its settings), out of the pool for good: psycopg's."""
        pooled = self._engine.raw_connection()
        connection = pooled.driver_connection  # (none once detached)
        pooled.detach()
        connection.autocommit = autocommit  # autocommit: each statement its own, current, snapshot
        return connection

    def _functions(self, connection: Any) -> tuple[str, str]:
        if connection.info.server_version >= 130000:
            return "pg_current_snapshot", "pg_current_xact_id"
        return "txid_current_snapshot", "txid_current"  # before PostgreSQL 13

    def version(self) -> Hashable:
        with self._lock:
            try:
                if self._asker is None:
                    self._asker = self._connect(autocommit=True)
                snapshot, _ = self._functions(self._asker)
                text = self._asker.execute(f"SELECT {snapshot}()::text").fetchone()[0]
            except Exception:  # noqa: BLE001 - the server cannot say now: a false alarm; the store's own transaction says why
                self._drop("_asker")
                self._seen = self._parsed = None
                return object()
            if text == self._seen:
                return self._count
            parsed = _parse_snapshot(text)
            if self._parsed is None or self._others_completed(self._parsed, parsed):
                self._count += 1
            _, xmax, running = parsed
            self._own = {x for x in self._own if not (x < xmax and x not in running)}
            self._seen, self._parsed = text, parsed
            return self._count

    def _drop(self, name: str) -> None:
        connection = getattr(self, name)
        setattr(self, name, None)
        if connection is not None:
            try:
                connection.close()
            except Exception:  # noqa: BLE001 - it is broken already
                pass

    def _others_completed(self, before: tuple[int, int, frozenset[int]], after: tuple[int, int, frozenset[int]]) -> bool:
        """Whether a transaction other than the log writer's completed between the two snapshots: one that had
        not completed in `before` (at or past its xmax, or in its list) and has in `after` (below its xmax, not
        in its list)."""
        _, old_xmax, old_running = before
        _, xmax, running = after
        own = self._own
        for x in old_running:  # in progress then, completed now
            if x < xmax and x not in running and x not in own:
                return True
        if xmax <= old_xmax:
            return False
        # every id in [old_xmax, xmax) completed, but those still running, and the log writer's own
        completed = xmax - old_xmax - sum(1 for x in running if x >= old_xmax)
        own_completed = sum(1 for x in own if old_xmax <= x < xmax and x not in running)
        return completed > own_completed

    def write_log(self, rows: list[dict[str, Any]], *, wait: bool = False) -> None:
        from mi_cli.postgres import WRITE_LOCK

        values = self._convert(rows)
        copy_sql = f"COPY activity_log ({', '.join(LOG_COLUMNS)}) FROM STDIN"
        with self._write_lock:
            if self._writer is None:
                self._writer = self._connect(autocommit=False)
            con = self._writer
            _, current_xact = self._functions(self._writer)
            try:
                with con.cursor() as cur:
                    # The store's write lock, as every writer takes it: a bulk import that gives rows their keys
                    # never meets these.
                    if wait:
                        cur.execute(f"SET LOCAL lock_timeout = {self._timeout_ms}")
                        cur.execute(f"SELECT pg_advisory_xact_lock(%s), {current_xact}()::text", (WRITE_LOCK,))
                        got, xid = True, cur.fetchone()[1]
                    else:
                        got, xid = cur.execute(f"SELECT pg_try_advisory_xact_lock(%s), {current_xact}()::text",
                                               (WRITE_LOCK,)).fetchone()
                    if not got:
                        con.rollback()
                        raise Busy("another writer holds the store")
                    with self._lock:  # before the commit: a snapshot that shows it completed finds it here
                        self._own.add(int(xid))
                    with cur.copy(copy_sql) as out:
                        for row in values:
                            out.write_row(row)
                con.commit()
            except Busy:
                raise
            except BaseException:
                try:
                    con.rollback()
                except Exception:  # noqa: BLE001 - the connection is gone: a new one next time
                    self._drop("_writer")
                raise

    def close(self) -> None:
        with self._lock:
            self._drop("_asker")
        with self._write_lock:
            self._drop("_writer")


def _parse_snapshot(text: str) -> tuple[int, int, frozenset[int]]:
    """xmin:xmax:xip,... (PostgreSQL's text form of a snapshot)."""
    xmin, xmax, xip = text.split(":")
    return int(xmin), int(xmax), frozenset(int(x) for x in xip.split(",") if x)


def watch(store) -> Watch:  # noqa: ANN001 - a mi_cli.store.Store
    """The watch of an opened store, on a connection of its own (close() it when done)."""
    engine = store.engine
    if engine.dialect.name == "sqlite":
        return SqliteWatch(engine, store.timeout)
    if engine.dialect.name == "postgresql":
        return PostgresWatch(engine, store.timeout)
    raise ValueError(f"no watch for a {engine.dialect.name} store")


# --- what was read, kept until the store changes -----------------------------------------------------------

SHARED = "mi.memo"  # the key that marks a Ctx.memo as a Memo's (kept across requests), not one transaction's
MAX_ENTRIES = 10_000  # a memo that grows past this (ever new tokens, say) starts again empty


class Memo:
    """Values read from the store under one version, for every request that sees the same version. The dict a
    request gets is its version's: a value read after a change never lands in an older version's dict, and a
    value read before one never in a newer's."""

    def __init__(self) -> None:
        self._current: tuple[Hashable, dict[Any, Any]] = (object(), {SHARED: True})  # swapped whole, read whole
        self._lock = threading.Lock()

    def at(self, version: Hashable) -> dict[Any, Any]:
        seen, values = self._current
        if seen == version and len(values) <= MAX_ENTRIES:
            return values
        with self._lock:
            seen, values = self._current
            if seen != version or len(values) > MAX_ENTRIES:
                values = {SHARED: True}
                self._current = (version, values)
            return values


class _Raised:
    """A memoised refusal (a not-found, say): raised again, a copy each time."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


def shared(ctx) -> dict[Any, Any] | None:  # noqa: ANN001 - a services.Ctx
    """The memo of the store's current version that `ctx` reads through, or None for a plain transaction."""
    memo = ctx.memo
    return memo if memo.get(SHARED) is True else None


def remember(ctx, key: Hashable, compute: Callable[[], T], *, errors: tuple[type[BaseException], ...] = ()) -> T:  # noqa: ANN001
    """compute(), or what it gave for `key` under the store's current version when `ctx` reads through a Memo.
    Errors of the `errors` types are kept too (raised again as copies); others are not. A plain transaction's
    ctx computes every time: within one transaction the store may change under it."""
    memo = shared(ctx)
    if memo is None:
        return compute()
    try:
        hit = memo[key]
    except KeyError:
        try:
            hit = compute()
        except errors as exc:
            memo[key] = _Raised(exc)
            raise
        memo[key] = hit
        return hit
    if type(hit) is _Raised:
        raise _clone(hit.error)
    return hit


def _clone(error: BaseException) -> BaseException:
    """A fresh copy of a kept error (its own traceback and context), whatever its constructor takes."""
    clone = type(error).__new__(type(error))
    clone.args = error.args
    clone.__dict__.update(error.__dict__)
    return clone


def volatile(ctx) -> None:  # noqa: ANN001
    """Say that what `ctx` is answering depends on more than the store (the time: a condition on UtcNow), so
    that an answer kept whole (server/state's replay) is not kept."""
    if hasattr(ctx, "volatile"):
        ctx.volatile = True
