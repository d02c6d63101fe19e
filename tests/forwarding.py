"""Runs `mi` both ways: in this process, and forwarded by the real entry point to a real command host."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import Result


class Host:
    """A command host as `mi serve` starts it, reached from any store path through a link to its socket."""

    def __init__(self, folder: Path) -> None:
        self.socket = folder / "host.sock"
        self.log = folder / "host.log"
        self.proc = subprocess.Popen([sys.executable, "-m", "mi_cli.cli.host", str(self.socket)],
                                     stdout=self.log.open("w"), stderr=subprocess.STDOUT, stdin=subprocess.PIPE, text=True)
        self.proc.stdin.write(f"{folder / 'warm.db'}\n")  # the store, as mi serve gives it
        self.proc.stdin.close()
        deadline = time.monotonic() + 120
        while "ready" not in self.log.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the command host did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)

    def served(self) -> int:
        return self.log.read_text().count("\nran ") + self.log.read_text().startswith("ran ")

    def runner(self, db: Path, monkeypatch=None):  # noqa: ANN001, ANN201
        """`mi(*args, env=...)` for the store `db`, through the entry point a user runs, forwarded to this host."""
        from mi_cli.locations import command_socket

        link = Path(command_socket(str(db)))
        if not link.exists():
            link.symlink_to(self.socket)

        def run(*args: str, env: dict[str, str] | None = None) -> Result:
            before = self.served()
            full = {**os.environ, **(env or {})}
            full.pop("MI_NO_SERVER", None)
            done = subprocess.run([sys.executable, "-m", "mi_cli", "--db", str(db), *args], env=full,
                                  capture_output=True, text=True, stdin=subprocess.DEVNULL)
            assert self.served() == before + 1, "the command was not forwarded to the command host"
            return Result(done.returncode, done.stdout, done.stderr)

        return run

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


@pytest.fixture(scope="session")
def command_host(tmp_path_factory):
    host = Host(tmp_path_factory.mktemp("host"))
    yield host
    host.stop()


@pytest.fixture(params=["here", "forwarded"])
def mi(request, mi, db):  # noqa: F811 - the conftest's own `mi`, run here, or the same command forwarded
    if request.param == "here":
        return mi
    return request.getfixturevalue("command_host").runner(db)
