"""A real PostgreSQL server for the tests: started once from the machine's own binaries, on loopback."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path

# A running server to use instead of starting one: a URL whose user may create databases.
URL_VAR = "MI_TEST_POSTGRES"


def bin_dir() -> Path | None:
    """Where initdb and pg_ctl are: MI_PG_BIN, else pg_config's answer, else Debian's newest."""
    named = os.environ.get("MI_PG_BIN")
    if named:
        return Path(named)
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True).stdout.strip()
        if out and (Path(out) / "initdb").is_file():
            return Path(out)
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(versions[-1]).parent if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """One PostgreSQL server; `database()` makes a new, empty database on it and returns its URL."""

    base: str  # postgresql://user@host:port (no database)
    folder: Path | None = None
    stop_command: list[str] | None = None
    _names: count = field(default_factory=lambda: count(1))

    def admin(self, sql: str) -> None:
        admin(self.base, sql)

    def database(self, prefix: str = "t") -> str:
        name = f"mi_{prefix}_{os.getpid()}_{next(self._names)}"
        # A database as a team's usually is: a language's collation (ICU's en-US), not SQLite's byte order. mi
        # must list in the same order on it as on SQLite.
        self.admin(f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8' LOCALE_PROVIDER icu ICU_LOCALE 'en-US'")
        return f"{self.base}/{name}"

    def drop(self, url: str) -> None:
        drop(url)

    def stop(self) -> None:
        if self.stop_command:
            subprocess.run(self.stop_command, capture_output=True)
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


def admin(base: str, sql: str) -> None:
    """Run one statement on the server at `base` (postgresql://user@host:port), outside a transaction."""
    import psycopg

    with psycopg.connect(f"{base}/postgres", autocommit=True) as con:
        con.execute(sql)


def drop(url: str) -> None:
    """Drop the database `url` names, whoever is connected to it."""
    base, name = url.rsplit("/", 1)
    admin(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def clone(template: str, url: str) -> None:
    """Make the database `url` names a copy of the database `template` names (the server copies its
    files: fast), replacing it if it exists. Nobody may be connected to `template`."""
    base, name = url.rsplit("/", 1)
    drop(url)
    admin(base, f'CREATE DATABASE "{name}" TEMPLATE "{template.rsplit("/", 1)[1]}"')


def start() -> Server:
    """The server named by MI_TEST_POSTGRES, or a new one in a temporary folder (fsync off, in memory
    where it can be: a test server). As root, initdb and the server run as the `postgres` user, since they refuse root."""
    named = os.environ.get(URL_VAR)
    if named:
        return Server(named.rstrip("/"))
    binaries = bin_dir()
    if binaries is None:
        raise RuntimeError("PostgreSQL's initdb was not found: install it (Debian: apt-get install postgresql) "
                           f"or set MI_PG_BIN to its folder, or {URL_VAR} to a server's URL")
    # In memory where the machine has it: a database made from a template is written out in full (7 MB),
    # which on a disk took a quarter of a second per test, and on /dev/shm takes 10 ms.
    memory = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK | os.X_OK) else None
    folder = Path(tempfile.mkdtemp(prefix="mi-pg-", dir=memory))
    as_user: list[str] = []
    user = os.environ.get("USER") or "mi"
    if os.geteuid() == 0:
        user = "postgres"
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(folder, "postgres")
    data = folder / "data"
    subprocess.run([*as_user, str(binaries / "initdb"), "-D", str(data), "-A", "trust", "-U", user, "--no-sync",
                    "-E", "UTF8", "--locale", "C"], check=True, capture_output=True)
    port = _free_port()
    options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={folder} -c fsync=off " \
              "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200 " \
              "-c timezone=Pacific/Auckland"  # a server far from UTC: stored times must not shift
    subprocess.run([*as_user, str(binaries / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-o", options,
                    "-w", "-t", "60", "start"], check=True, capture_output=True)
    server = Server(f"postgresql://{user}@127.0.0.1:{port}", folder,
                    [*as_user, str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"])
    deadline = time.monotonic() + 30
    while True:  # pg_ctl -w waited for it; a loaded machine may still need a moment for the first login
        try:
            server.admin("SELECT 1")
            return server
        except Exception:
            if time.monotonic() > deadline:
                server.stop()
                raise
            time.sleep(0.2)
