"""A real `mi serve` process on a free loopback port, over a store with a known scenario."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mi_cli.cli.main import main

CLIENT_VARS = ("AZURE_POD_IDENTITY_AUTHORITY_HOST", "IDENTITY_ENDPOINT", "IDENTITY_HEADER", "IDENTITY_SERVER_THUMBPRINT",
               "IMDS_ENDPOINT", "MSI_ENDPOINT", "MSI_SECRET", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_CLIENT_ID",
               "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_USERNAME", "AZURE_AUTHORITY_HOST")


def mi_json(db: Path, *argv: str):
    """Run a command in-process on `db` and return its JSON (the server reads the same file)."""
    import io
    from contextlib import redirect_stdout

    buffer = io.StringIO()
    with redirect_stdout(buffer):
        code = main(["--db", str(db), *argv, "-o", "json"])
    assert code == 0, argv
    text = buffer.getvalue()
    return json.loads(text) if text.strip() else None


@dataclass
class Server:
    db: Path
    proc: subprocess.Popen
    base: str
    log: Path
    ids: dict = field(default_factory=dict)

    def env(self, resource: str, style: str = "imds", *extra: str) -> dict[str, str]:
        return mi_json(self.db, "env", "--resource", resource, "-g", "rg", "--style", style, *extra)

    def stop(self, signum: int = signal.SIGTERM) -> int:
        self.proc.send_signal(signum)
        return self.proc.wait(timeout=20)


def start_server(db: Path, *extra: str, env: dict[str, str] | None = None) -> Server:
    """`env` adds variables to the server's environment (MI_BUSY_TIMEOUT, say)."""
    log = db.with_suffix(f".{len(extra)}.log")
    address = Path(f"{db}.serve.json")
    proc = subprocess.Popen([sys.executable, "-m", "mi_cli", "--db", str(db), "serve", "--port", "0", *extra],
                            stdout=subprocess.DEVNULL, stderr=open(log, "w"), env={**os.environ, **(env or {})})
    deadline = time.time() + 30
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mi serve exited: {log.read_text()}")
        try:
            data = json.loads(address.read_text())
            if data["pid"] == proc.pid:
                base = f"http://{data['host']}:{data['port']}"
                urllib.request.urlopen(base + "/common/discovery/keys", timeout=5).read()
                return Server(db, proc, base, log)
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("mi serve did not start in 30 s")


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
def server(tmp_path_factory):
    db = tmp_path_factory.mktemp("serve") / "store.db"
    ids = build_scenario(db)
    srv = start_server(db)
    srv.ids = ids
    yield srv
    code = srv.stop()
    assert code == 0, srv.log.read_text()
    assert not Path(f"{db}.serve.json").exists()  # removed on a clean shutdown


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


__all__ = ["Server", "build_scenario", "client_env", "get", "mi_json", "server", "start_server", "os"]


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

