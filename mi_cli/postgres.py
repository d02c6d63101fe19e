"""The store on a PostgreSQL server: its URL, engine, write lock, text order and errors."""

from __future__ import annotations

import math
import re
import time
from typing import Any

from sqlalchemy import Enum, String, create_engine, event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.schema import CreateColumn
from sqlalchemy.types import TypeDecorator

from mi_cli.errors import StoreError

from mi_cli.locations import is_url  # noqa: F401  (a --db value that names a server)

# The one lock every write transaction of every process takes first, as SQLite's BEGIN IMMEDIATE does: held
# until the transaction ends, so each writer reads what the one before it committed. (Plain READ COMMITTED
# lost 146 of 200 concurrent read-then-write updates.) The number is mi's own, in the database's space of
# advisory locks: 'mi-store' in ASCII.
WRITE_LOCK = 0x6D692D73746F7265


def parse(where: str) -> tuple[URL, str]:
    """The URL to connect with (psycopg 3), and how messages name the store: the same URL, password
    left out. A password comes from the URL, else from libpq's own PGPASSWORD or PGPASSFILE."""
    try:
        url = make_url(where)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise StoreError("InvalidStore", f"The store URL '{_without_password_text(where)}' is not a valid "
                         "PostgreSQL URL: postgresql://USER@HOST:PORT/DATABASE.") from None
    url = url.set(drivername="postgresql+psycopg")
    # URL.set() leaves a field given as None as it was: the password is left out by making the URL anew
    # (and libpq's own ?password=... with it).
    shown = URL.create("postgresql", username=url.username, host=url.host, port=url.port, database=url.database,
                       query={k: v for k, v in url.query.items() if k not in SECRET_PARAMETERS}
                       ).render_as_string(hide_password=False)
    if not url.database:
        raise StoreError("InvalidStore", f"The store URL '{shown}' names no database: postgresql://USER@HOST:PORT/DATABASE.")
    return url, shown


# Parameters of a libpq URL whose values are secrets: never part of how a message names the store.
SECRET_PARAMETERS = ("password", "sslpassword")


def _without_password_text(where: str) -> str:
    scheme, _, rest = where.partition("://")
    rest, question, query = rest.partition("?")
    userinfo, at, host = rest.rpartition("@")
    if at and ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0]
    kept = "&".join(p for p in query.split("&") if p.split("=", 1)[0].lower() not in SECRET_PARAMETERS)
    return f"{scheme}://{userinfo}{at}{host}{question if kept else ''}{kept}"


def engine(url: URL, where: str, timeout: float) -> Engine:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise StoreError("InvalidStore", f"The store '{where}' is a PostgreSQL server, and the driver for it is not "
                         "installed: pip install 'mi-cli[postgres]'.") from None
    # Times are kept as UTC without a zone, as on SQLite: the session's time zone must not shift them.
    options = " ".join(filter(None, [url.query.get("options", ""), "-c timezone=UTC"]))
    url = url.update_query_dict({"options": options})
    connect_args: dict[str, Any] = {"connect_timeout": max(1, min(int(math.ceil(timeout)), 60)) if timeout else 10}
    created = create_engine(url, connect_args=connect_args, pool_pre_ping=True)
    full_ms = math.floor(timeout * 1000)
    loaders = _naive_utc_loaders()

    @event.listens_for(created, "connect")
    def _on_connect(dbapi_conn, record) -> None:  # noqa: ANN001
        for oid_name, loader in loaders:
            dbapi_conn.adapters.register_loader(oid_name, loader)

    @event.listens_for(created, "begin")
    def _on_begin(conn) -> None:  # noqa: ANN001
        if not conn.info.get("write"):
            # A read sees one moment of the store, as an SQLite read transaction does.
            conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            return
        deadline = conn.info.get("deadline")
        wait_ms = full_ms if deadline is None else max(0, math.floor((deadline - time.monotonic()) * 1000))
        if wait_ms == 0:
            got = conn.exec_driver_sql(f"SELECT pg_try_advisory_xact_lock({WRITE_LOCK})").scalar()
            if not got:
                raise busy(where, timeout)
            return
        conn.exec_driver_sql(f"SET LOCAL lock_timeout = {wait_ms}")
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({WRITE_LOCK})")  # lock waits after it share the bound

    return created


def _naive_utc_loaders() -> list[tuple[str, type]]:
    """Times come back as SQLite gives them: UTC, without a zone (the code compares and prints them so)."""
    from datetime import timezone

    from psycopg.types.datetime import TimestamptzBinaryLoader, TimestamptzLoader

    def naive(base: type) -> type:
        class Loader(base):  # type: ignore[misc, valid-type]
            def load(self, data):  # noqa: ANN001, ANN202
                value = super().load(data)
                return value.astimezone(timezone.utc).replace(tzinfo=None)

        return Loader

    return [("timestamptz", naive(TimestamptzLoader)), ("timestamptz", naive(TimestamptzBinaryLoader))]


@compiles(CreateColumn, "postgresql")
def _byte_order(element, compiler, **kw) -> str:  # noqa: ANN001
    """Text columns sort by bytes (collation "C"), as SQLite's do: listings come out in the same order on
    both stores, whatever the database's own collation."""
    text = compiler.visit_create_column(element, **kw)
    column = element.element
    impl = column.type
    if isinstance(impl, TypeDecorator):  # SQLModel's AutoString: a String underneath
        impl = impl.load_dialect_impl(compiler.dialect)
    if isinstance(impl, String) and not isinstance(impl, Enum) and impl.collation is None:
        spelled = compiler.dialect.type_compiler_instance.process(column.type, type_expression=column)
        name = compiler.preparer.format_column(column)
        text = text.replace(f"{name} {spelled}", f'{name} {spelled} COLLATE "C"', 1)
    return text


def busy(where: str, timeout: float) -> StoreError:
    return StoreError("StoreBusy", f"The store '{where}' stayed locked by another writer for {timeout:g} s; try again, "
                      "or wait longer with MI_BUSY_TIMEOUT (seconds).")


# SQLSTATE classes and codes that name a condition of the store, not a fault of mi's.
def known_error(exc: Exception, where: str, timeout: float) -> StoreError | None:
    orig = getattr(exc, "orig", exc)
    state = getattr(orig, "sqlstate", None) or ""
    message = _first_line(orig)
    if state in ("55P03", "57014", "40001", "40P01"):  # lock timeout, cancelled, serialisation, deadlock
        return busy(where, timeout)
    if "cannot contain NUL (0x00) bytes" in message or (state == "22021" and "0x00" in message):
        # SQLite keeps any text; PostgreSQL's text cannot hold U+0000 (psycopg refuses it before sending)
        return StoreError("UnsupportedValue", f"A value to be written holds the character U+0000 (NUL), which text in the "
                          f"PostgreSQL store '{where}' cannot hold; nothing was changed.")
    if state == "3D000":
        database = where.rsplit("/", 1)[-1].split("?", 1)[0]
        return StoreError("InvalidStore", f"The store '{where}' cannot be opened: the server has no database "
                          f"'{database}'. Create it (createdb {database}) and run the command again.")
    if state.startswith("28"):
        return StoreError("InvalidStore", f"The store '{where}' refused the login: {message}. Give the password in "
                          "the URL, in PGPASSWORD or in a PGPASSFILE.")
    if state in ("25006", "42501"):
        return StoreError("StoreReadOnly", f"The store '{where}' may not be written by this login: {message}.")
    if state.startswith("53"):
        return StoreError("StoreFull", f"The server holding the store '{where}' is out of resources ({message}); "
                          "nothing was changed.")
    if not state and _is_connection_error(orig):
        # A failed connect carries no SQLSTATE: the server's refusal (a FATAL it sent) is told by its text,
        # and a missing password by libpq's own flag.
        pgconn = getattr(orig, "pgconn", None)
        refused = _refusal(message)
        database = re.search(r'database "(.*)" does not exist', refused or "")
        if database:
            return StoreError("InvalidStore", f"The store '{where}' cannot be opened: the server has no database "
                              f"'{database.group(1)}'. Create it (createdb {database.group(1)}) and run the command again.")
        if getattr(pgconn, "needs_password", False) or (refused and "password authentication failed" in refused):
            return StoreError("InvalidStore", f"The store '{where}' refused the login: {refused or message}. Give the "
                              "password in the URL, in PGPASSWORD or in a PGPASSFILE.")
        if refused:
            return StoreError("InvalidStore", f"The store '{where}' refused the login: {refused}.")
    if not state and re.search(r"invalid connection option|invalid [\w ]+ value", message):
        return StoreError("InvalidStore", f"The store URL '{where}' is not valid: {message.removeprefix('connection is bad: ')}.")
    if state.startswith("08") or state.startswith("57P") or (not state and _is_connection_error(orig)):
        return StoreError("StoreUnavailable", f"The store '{where}' cannot be reached: {message}. Is the PostgreSQL "
                          "server running?")
    return None


def _refusal(message: str) -> str | None:
    """What the server said in refusing a connection (libpq: '... failed: FATAL:  database "x" does not
    exist'), or libpq's own reason for giving up after it answered ('fe_sendauth: no password supplied')."""
    found = re.search(r"failed: (?:FATAL|ERROR):\s+(.*)$", message) or re.search(r"failed: (fe_sendauth: .*)$", message)
    return found.group(1) if found else None


def _is_connection_error(orig: Exception) -> bool:
    try:
        import psycopg
    except ImportError:
        return False
    return isinstance(orig, psycopg.OperationalError)


def _first_line(orig: Exception) -> str:
    text = str(orig).strip().splitlines()
    return text[0].rstrip(".") if text else type(orig).__name__
