"""A real `mi serve` process on a free loopback port, over a store with a known scenario.

A module that sets `pytestmark = pytest.mark.parametrize("store_kind", STORE_KINDS, indirect=True, scope="module")`
runs its tests once over an SQLite file and once over a database of a real PostgreSQL server: its stores come from
`module_store`, and `mi_json`, `start_server` and `beside` work the same on either."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mi_cli.cli.main import main
from mi_cli.services import endpoints
from mi_cli.locations import companion

STORE_KINDS = ("sqlite", "postgres")


class DatabaseStore(str):
    """A PostgreSQL store: its URL, as --db takes it, and the user data folder (XDG_DATA_HOME) under which mi keeps
    the files that go beside it (mi_cli.store.companion). Every process of a test is given the same folder, so that
    `mi env` run here finds the address and CA files of a `mi serve` started there."""

    data_home: Path

    @classmethod
    def at(cls, url: str, data_home: Path) -> "DatabaseStore":
        store = cls(url)
        store.data_home = data_home
        return store


@contextmanager
def data_home(db):  # noqa: ANN001 - a Path or a DatabaseStore
    """XDG_DATA_HOME set to a DatabaseStore's folder while the block runs (nothing changes for a file)."""
    home = getattr(db, "data_home", None)
    if home is None:
        yield
        return
    saved = os.environ.get("XDG_DATA_HOME")
    os.environ["XDG_DATA_HOME"] = str(home)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("XDG_DATA_HOME", None)
        else:
            os.environ["XDG_DATA_HOME"] = saved


def beside(db) -> str:  # noqa: ANN001
    """What the files kept beside the store `db` are named after: NAME.serve.json, NAME.ca-bundle.pem, ..."""
    with data_home(db):
        return companion(str(db))


def server_env(db) -> dict[str, str]:  # noqa: ANN001
    """The environment of a process on `db`: this one's, with a DatabaseStore's XDG_DATA_HOME."""
    home = getattr(db, "data_home", None)
    return {**os.environ, **({"XDG_DATA_HOME": str(home)} if home is not None else {})}


@pytest.fixture(scope="module")
def store_kind(request) -> str:
    """The kind of store the module's servers run over: "sqlite", unless the module is parametrised (STORE_KINDS)."""
    return getattr(request, "param", "sqlite")


@pytest.fixture(scope="module")
def module_store(store_kind, tmp_path_factory, request):
    """module_store(name): a new, empty store of the module's kind: a file in a new folder, or a new database on the
    test PostgreSQL server (dropped when the module ends) with a new data folder."""
    server = request.getfixturevalue("pg_server") if store_kind == "postgres" else None
    made: list[str] = []

    def make(name: str):  # noqa: ANN202 - a Path or a DatabaseStore
        folder = tmp_path_factory.mktemp(name)
        if server is None:
            return folder / "store.db"
        made.append(server.database(name))
        return DatabaseStore.at(made[-1], folder / "data")

    yield make
    for url in made:
        server.drop(url)

CLIENT_VARS = ("AZURE_POD_IDENTITY_AUTHORITY_HOST", "IDENTITY_ENDPOINT", "IDENTITY_HEADER", "IDENTITY_SERVER_THUMBPRINT",
               "IMDS_ENDPOINT", "MSI_ENDPOINT", "MSI_SECRET", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_CLIENT_ID",
               "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_USERNAME", "AZURE_AUTHORITY_HOST")


def mi_json(db: Path | str, *argv: str):
    """Run a command in-process on `db` and return its JSON (the server reads the same store)."""
    import io
    from contextlib import redirect_stdout

    buffer = io.StringIO()
    with redirect_stdout(buffer), data_home(db):
        code = main(["--db", str(db), *argv, "-o", "json"])
    assert code == 0, argv
    text = buffer.getvalue()
    return json.loads(text) if text.strip() else None


@dataclass
class Server:
    db: Path | str
    proc: subprocess.Popen
    base: str
    log: Path
    ids: dict = field(default_factory=dict)

    def env(self, resource: str, style: str = "imds", *extra: str) -> dict[str, str]:
        return mi_json(self.db, "env", "--resource", resource, "-g", "rg", "--style", style, *extra)

    def stop(self, signum: int = signal.SIGTERM) -> int:
        self.proc.send_signal(signum)
        return self.proc.wait(timeout=20)


def start_server(db: Path | str, *extra: str, env: dict[str, str] | None = None) -> Server:
    """`env` adds variables to the server's environment (MI_BUSY_TIMEOUT, say)."""
    where = beside(db)
    log = db.with_suffix(f".{len(extra)}.log") if isinstance(db, Path) else Path(f"{where}.serve-{time.monotonic_ns()}.log")
    proc = subprocess.Popen([sys.executable, "-m", "mi_cli", "--db", str(db), "serve", "--port", "0", *extra],
                            stdout=subprocess.DEVNULL, stderr=open(log, "w"), env={**server_env(db), **(env or {})})
    data = wait_for_address(where, proc, log)
    return Server(db, proc, f"http://{data['host']}:{data['port']}", log)


def wait_for_address(where: str, proc: subprocess.Popen, log: Path, seconds: float = 60) -> dict:
    """The address record of the `mi serve` `proc` (its own, among those of the store's other servers on this
    machine), once it answers."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mi serve exited: {log.read_text()}")
        try:
            data = json.loads(endpoints.replica_file(where, proc.pid).read_text())
            base = f"http://{data['host']}:{data['port']}"
            urllib.request.urlopen(base + "/common/discovery/keys", timeout=5).read()
            return data
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"mi serve did not start in {seconds:.0f} s")


def build_scenario(db: Path) -> dict:
    def ok(*argv):
        return mi_json(db, *argv)

    ok("group", "create", "-n", "rg", "-l", "westeurope")
    ids = {"vm-sys": ok("resource", "create", "-g", "rg", "-n", "vm-sys", "--type", "vm", "--system-assigned")}
    ids["ua-one"] = ok("identity", "create", "-g", "rg", "-n", "ua-one")
    ids["ua-two"] = ok("identity", "create", "-g", "rg", "-n", "ua-two")
    ids["ua-gone"] = ok("identity", "create", "-g", "rg", "-n", "ua-gone")
    ok("resource", "create", "-g", "rg", "-n", "vm-user", "--type", "vm", "--user-assigned", "ua-one")
    ok("resource", "create", "-g", "rg", "-n", "vm-multi", "--type", "vm", "--user-assigned", "ua-one", "ua-two")
    ids["app-both"] = ok("resource", "create", "-g", "rg", "-n", "app-both", "--type", "webapp", "--system-assigned",
                         "--user-assigned", "ua-two")
    ok("resource", "create", "-g", "rg", "-n", "vm-dangling", "--type", "vm", "--user-assigned", "ua-gone")
    ok("identity", "delete", "-g", "rg", "-n", "ua-gone", "--yes")
    ok("resource", "create", "-g", "rg", "-n", "vm-off", "--type", "vm", "--system-assigned")
    ok("identity", "remove", "--resource", "vm-off", "-g", "rg", "--identities", "[system]")
    ok("resource", "create", "-g", "rg", "-n", "vm-none", "--type", "vm")
    ids["tenant"] = ok("account", "show")["tenantId"]
    return ids


@pytest.fixture(scope="module")
def server(module_store):
    db = module_store("serve")
    ids = build_scenario(db)
    srv = start_server(db)
    srv.ids = ids
    yield srv
    code = srv.stop()
    assert code == 0, srv.log.read_text()
    assert not endpoints.address_file(beside(db)).exists()  # removed on a clean shutdown


@pytest.fixture
def client_env(monkeypatch):
    """Set exactly the variables given, clearing every other that would steer a client."""

    def apply(values: dict[str, str]) -> None:
        for var in CLIENT_VARS:
            monkeypatch.delenv(var, raising=False)
        for k, v in values.items():
            monkeypatch.setenv(k, v)

    for var in CLIENT_VARS:
        monkeypatch.delenv(var, raising=False)
    return apply


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict, dict]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, json.loads(r.read()), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}"), dict(e.headers)


__all__ = ["STORE_KINDS", "DatabaseStore", "Server", "beside", "build_scenario", "client_env", "get", "mi_json",
           "module_store", "server", "start_server", "store_kind", "os"]


def connect_through(proxy_port: int, target: str, timeout: float = 20) -> tuple[socket.socket, bytes]:
    """A CONNECT through `mi serve`'s proxy: the socket and the proxy's answer (its head, and the body of a
    refusal, which the proxy ends by closing). The target is sent as bytes, non-ASCII names included."""
    sock = socket.create_connection(("127.0.0.1", proxy_port), timeout=timeout)
    sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode("utf-8", "surrogateescape"))
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(4096)
        if not chunk:
            break
        answer += chunk
    if answer and not answer.startswith(b"HTTP/1.1 200"):
        while chunk := sock.recv(4096):
            answer += chunk
    return sock, answer

