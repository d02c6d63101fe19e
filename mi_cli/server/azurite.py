"""Azurite, Microsoft's Storage emulator, run by `mi serve` as a child process that holds the blobs behind the Blob plane."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from mi_cli.files import write_atomic

EXECUTABLE = "azurite-blob"
VARIABLE = "MI_AZURITE"
INSTALL = "npm install -g azurite"
READY_SECONDS = 90.0  # Azurite listens in 2-4 s on a quiet machine; far longer under load
KEEP_ALIVE = 60  # seconds Azurite keeps an idle connection; the plane's client lets them go sooner
# Beside Azurite's data: which storage account (its creation time) each account name's blobs belong to.
# Azurite keeps blobs by account name, so an account deleted and made again under the same name would
# find the old one's containers; Storage's new account is empty.
OWNERS = "owners.json"
# Held (flock) by the mi serve whose Azurite keeps its data in the folder: two Azurites on one folder would
# overwrite each other's saved state.
LOCK = "mi-serve.lock"
# Variables of mi's own that Azurite is not given: MI_DB may hold a database's password.
PRIVATE_VARIABLES = ("MI_DB",)
API_VERSION = "2021-08-06"  # of the requests mi itself makes to Azurite (emptying a new account)


def find(given: str | None) -> str | None:
    """azurite-blob's path: the option's, else MI_AZURITE's, else the one on PATH; None when there is none."""
    for candidate in (given, os.environ.get(VARIABLE)):
        if candidate:
            path = shutil.which(candidate) or (candidate if os.path.isfile(candidate) else None)
            return os.path.abspath(path) if path else None
    return shutil.which(EXECUTABLE)


def not_found_reason(given: str | None) -> str:
    chosen = given or os.environ.get(VARIABLE)
    if chosen:
        return f"Azurite was not found at '{chosen}'"
    return f"Azurite ({EXECUTABLE}) is not on PATH: install it with `{INSTALL}` (or give its path with --azurite or {VARIABLE})"


def claim_workspace(base: Path) -> tuple[Path, int]:
    """The folder for this mi serve's Azurite data, and the descriptor holding it (kept open while mi serve
    runs): `base`, unless another running mi serve of the store on this machine (a replica) holds it, then
    base-2, base-3, ... Each replica's Azurite then keeps blobs of its own."""
    import fcntl

    n = 1
    while True:
        folder = base if n == 1 else Path(f"{base}-{n}")
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(folder / LOCK, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            n += 1
            continue
        except OSError:
            os.close(fd)
            raise
        return folder, fd


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:  # runs in the child between fork and exec
    """Azurite ends when mi serve ends, even when mi serve is killed outright (Linux)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@dataclass
class Azurite:
    """One Azurite process for the store's storage accounts, started when first needed and restarted when
    the accounts (or their keys) change: Azurite reads its accounts once, from AZURITE_ACCOUNTS."""

    executable: str
    workspace: Path  # beside the store: blobs survive a restart of mi serve
    tls: tuple[bytes, bytes]  # Azurite's own certificate (PEM) and key, for 127.0.0.1
    ca: bytes = b""  # the CA (PEM) that signed it, which the plane's client trusts; empty: the store's CA file
    port: int = 0
    accounts: str | None = None  # the AZURITE_ACCOUNTS of the running process
    process: subprocess.Popen | None = None
    read_at: float = 0.0  # when the store was read for the running process's accounts (0: not known)
    owners: dict[str, str] | None = None  # the accounts (name -> creation time) the data was last made to match
    # Moves on whenever mi starts Azurite or empties an account in it: what was read from it before may be stale.
    generation: int = 0
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def origin(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    async def ensure(self, accounts: str, *, read_at: float | None = None, owners: dict[str, str] | None = None,
                     client: Any = None) -> str:
        """The origin of an Azurite that knows exactly `accounts`, starting or restarting it as needed.

        `read_at` is when the caller read `accounts` from the store (time.monotonic()): a request that
        read it before the running process was started for a newer reading is served by that process,
        rather than restarting Azurite back to accounts already changed (and again for the next request).
        `owners` (name -> the account's creation time) with `client` (an httpx.AsyncClient that trusts
        Azurite's certificate) empties an account whose name's blobs belong to a deleted account of that
        name, before anything else reaches it."""
        async with self._lock:
            running = self.process is not None and self.process.poll() is None
            stale = read_at is not None and read_at < self.read_at
            if not running or (accounts != self.accounts and not stale):
                await asyncio.to_thread(self.stop)
                self._spawn(accounts)  # on the loop's thread: the child's parent-death signal follows this thread
                await asyncio.to_thread(self._wait_until_listening)
                self.read_at = read_at or 0.0
            if owners is not None and client is not None and owners != self.owners and not stale:
                await self._adopt(owners, client)
            return self.origin

    async def _adopt(self, owners: dict[str, str], client: Any) -> None:
        """Empty each account whose name's data was another account's (deleted, then made again under
        that name), then record `owners` as what the data belongs to. Data from before any record is
        taken as the current accounts'."""
        path = self.workspace / OWNERS
        try:
            recorded = json.loads(path.read_text())
        except (OSError, ValueError):
            recorded = None
        recorded = recorded if isinstance(recorded, dict) else {}
        keys = _keys(self.accounts or "")
        for name, made in owners.items():
            if name in recorded and recorded[name] != made and name in keys:
                self.generation += 1
                await self._empty(client, name, keys[name])
        write_atomic(path, json.dumps({**recorded, **owners}, sort_keys=True).encode(), mode=0o600)
        self.owners = dict(owners)

    async def _empty(self, client: Any, account: str, key: str) -> None:
        """Delete every container of `account` (Shared Key with its key), breaking a container's lease first."""
        import xml.etree.ElementTree as ET

        import httpx

        async def call(method: str, path: str, query: dict[str, str], extra: dict[str, str] | None = None):
            headers = _signed(account, key, method, path, query, extra or {})
            try:
                return await client.request(method, f"{self.origin}{quote(path)}?{urlencode(query)}", headers=headers)
            except httpx.TransportError as exc:
                raise AzuriteError(f"Azurite did not answer ({type(exc).__name__}) while mi emptied account "
                                   f"'{account}'; try again.") from None

        names, marker = [], ""
        while True:
            query = {"comp": "list", "maxresults": "5000", **({"marker": marker} if marker else {})}
            answer = await call("GET", "/", query)
            if answer.status_code != 200:  # not for want of trying again: say so, and serve the account as it is
                print(f"mi serve: Blob Storage: the containers of a deleted account '{account}' could not be listed "
                      f"(Azurite answered {answer.status_code}); they stay in the new account.", file=sys.stderr, flush=True)
                return
            root = ET.fromstring(answer.content)
            names += [e.findtext("Name") or "" for e in root.iter("Container")]
            marker = root.findtext("NextMarker") or ""
            if not marker:
                break
        for name in names:
            container = {"restype": "container"}
            answer = await call("DELETE", f"/{name}", container)
            if answer.status_code == 412:  # leased: a broken lease lets it go
                await call("PUT", f"/{name}", {**container, "comp": "lease"},
                           {"x-ms-lease-action": "break", "x-ms-lease-break-period": "0"})
                answer = await call("DELETE", f"/{name}", container)
            if answer.status_code not in (202, 404):
                print(f"mi serve: Blob Storage: container '{name}' of a deleted account '{account}' could not be "
                      f"deleted (Azurite answered {answer.status_code}); it stays in the new account.",
                      file=sys.stderr, flush=True)

    def _spawn(self, accounts: str) -> None:
        self.workspace.mkdir(mode=0o700, parents=True, exist_ok=True)
        cert, key = self.workspace / "tls-cert.pem", self.workspace / "tls-key.pem"
        write_atomic(cert, self.tls[0], mode=0o644)
        write_atomic(key, self.tls[1], mode=0o600)
        self.port = _free_port()
        self.generation += 1
        log = open(self.workspace / "azurite.log", "ab")  # noqa: SIM115 - the child's, closed below
        try:
            self.process = subprocess.Popen(
                [self.executable, "--blobHost", "127.0.0.1", "--blobPort", str(self.port), "--location",
                 str(self.workspace), "--oauth", "basic", "--cert", str(cert), "--key", str(key),
                 "--skipApiVersionCheck", "--disableTelemetry", "--silent",
                 "--blobKeepAliveTimeout", str(KEEP_ALIVE)],
                env={**{k: v for k, v in os.environ.items() if k not in PRIVATE_VARIABLES}, "AZURITE_ACCOUNTS": accounts},
                stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, cwd=self.workspace, start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None)  # noqa: PLW1509
        except OSError as exc:
            raise AzuriteError(f"Azurite ({self.executable}) could not be started: {exc.strerror}.") from None
        finally:
            log.close()
        self.accounts = accounts

    def _wait_until_listening(self) -> None:
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AzuriteError(f"Azurite exited with status {self.process.returncode} at start: "
                                   f"see {self.workspace / 'azurite.log'}.")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise AzuriteError(f"Azurite did not listen within {READY_SECONDS:.0f} s: see {self.workspace / 'azurite.log'}.")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _keys(accounts: str) -> dict[str, str]:
    """name -> first key of an AZURITE_ACCOUNTS value (`name:key1:key2;...`)."""
    out = {}
    for entry in accounts.split(";"):
        name, _, rest = entry.partition(":")
        if name and rest:
            out[name] = rest.split(":", 1)[0]
    return out


def _signed(account: str, key: str, method: str, path: str, query: dict[str, str],
            extra: dict[str, str]) -> dict[str, str]:
    """The headers of a request signed with Shared Key (Blob service, version 2009-09-19 and later), sent
    to Azurite under the account's own host name."""
    headers = {"x-ms-date": formatdate(usegmt=True), "x-ms-version": API_VERSION, **extra}
    canonical = "".join(f"{name}:{value}\n" for name, value in sorted(headers.items()))
    resource = f"/{account}{path}" + "".join(f"\n{name}:{value}" for name, value in sorted(query.items()))
    # the verb, then eleven standard headers (all empty: no body, so no length either), then the x-ms- ones
    to_sign = method + "\n" * 12 + canonical + resource
    signature = base64.b64encode(hmac.new(base64.b64decode(key), to_sign.encode(), hashlib.sha256).digest()).decode()
    return {**headers, "Authorization": f"SharedKey {account}:{signature}", "Host": f"{account}.blob.core.windows.net"}


class AzuriteError(Exception):
    """Azurite would not start or stay up; the message says why and where its log is."""
