"""Azurite, Microsoft's Storage emulator, run by `mi serve` as a child process that holds the blobs behind the Blob plane."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from mi_cli.files import write_atomic

EXECUTABLE = "azurite-blob"
VARIABLE = "MI_AZURITE"
INSTALL = "npm install -g azurite"
READY_SECONDS = 90.0  # Azurite listens in 2-4 s on a quiet machine; far longer under load
KEEP_ALIVE = 60  # seconds Azurite keeps an idle connection; the plane's client lets them go sooner


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
    port: int = 0
    accounts: str | None = None  # the AZURITE_ACCOUNTS of the running process
    process: subprocess.Popen | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def origin(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    async def ensure(self, accounts: str) -> str:
        """The origin of an Azurite that knows exactly `accounts`, starting or restarting it as needed."""
        async with self._lock:
            if self.process is not None and self.process.poll() is None and accounts == self.accounts:
                return self.origin
            await asyncio.to_thread(self.stop)
            self._spawn(accounts)  # on the loop's thread: the child's parent-death signal follows this thread
            await asyncio.to_thread(self._wait_until_listening)
            return self.origin

    def _spawn(self, accounts: str) -> None:
        self.workspace.mkdir(mode=0o700, parents=True, exist_ok=True)
        cert, key = self.workspace / "tls-cert.pem", self.workspace / "tls-key.pem"
        write_atomic(cert, self.tls[0], mode=0o644)
        write_atomic(key, self.tls[1], mode=0o600)
        self.port = _free_port()
        log = open(self.workspace / "azurite.log", "ab")  # noqa: SIM115 - the child's, closed below
        try:
            self.process = subprocess.Popen(
                [self.executable, "--blobHost", "127.0.0.1", "--blobPort", str(self.port), "--location",
                 str(self.workspace), "--oauth", "basic", "--cert", str(cert), "--key", str(key),
                 "--skipApiVersionCheck", "--disableTelemetry", "--silent",
                 "--blobKeepAliveTimeout", str(KEEP_ALIVE)],
                env={**os.environ, "AZURITE_ACCOUNTS": accounts}, stdin=subprocess.DEVNULL, stdout=log,
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


class AzuriteError(Exception):
    """Azurite would not start or stay up; the message says why and where its log is."""
