"""A command forwarded to mi serve's command host behaves as the same command run here: at a terminal
(width, tables, prompts, Ctrl-C), with stdin, in its working directory and environment; and only a host of
the same version, reached on the user's own socket, is ever used."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from tests.forwarding import command_host  # noqa: F401  (the session's command host)

WAYS = ("here", "forwarded")


def _env(way: str, **extra: str) -> dict[str, str]:
    env = {**os.environ, **extra}
    env.pop("MI_NO_SERVER", None)
    if way == "here":
        env["MI_NO_SERVER"] = "1"
    return env


def _as_at_a_terminal() -> None:
    # A process started in the background of a script ignores Ctrl-C (SIGINT) and passes that on; one started
    # at a terminal does not.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Terminal:
    """`mi` on a real pseudo-terminal of `columns` x 24."""

    def __init__(self, argv: list[str], env: dict[str, str], columns: int = 80, cwd: Path | None = None) -> None:
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
        env = {k: v for k, v in env.items() if k not in ("COLUMNS", "LINES")}
        self.proc = subprocess.Popen([sys.executable, "-m", "mi_cli", *argv], stdin=slave, stdout=slave, stderr=slave,
                                     env=env, cwd=cwd, start_new_session=True, preexec_fn=_as_at_a_terminal)
        os.close(slave)
        self.out = b""

    def read_until(self, text: bytes, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.out:
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} never came: {self.out!r}")
            self._read(0.2)

    def _read(self, wait: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], wait)
        if not ready:
            return True
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: the other side closed
            return False
        self.out += chunk
        return bool(chunk)

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def finish(self, timeout: float = 120) -> tuple[int, str]:
        deadline = time.monotonic() + timeout
        while self._read(0.2) and time.monotonic() < deadline:
            if self.proc.poll() is not None and not select.select([self.master], [], [], 0)[0]:
                break
        code = self.proc.wait(timeout)
        os.close(self.master)
        return code, self.out.decode().replace("\r\n", "\n")


@pytest.fixture
def store(tmp_path, command_host):  # noqa: F811
    """A small tenant, and the command host reachable from its path (as mi serve would make it)."""
    db = tmp_path / "store.db"
    command_host.runner(db)  # links the store's command socket to the host
    run = lambda *a: subprocess.run([sys.executable, "-m", "mi_cli", "--db", str(db), *a], env=_env("here"),  # noqa: E731
                                    capture_output=True, text=True, check=True)
    run("group", "create", "-n", "rg", "-l", "westeurope")
    run("resource", "create", "-g", "rg", "-n", "vm1", "--type", "vm", "--system-assigned")
    run("identity", "create", "-g", "rg", "-n", "shared-identity")
    return db


def _both(command_host, make):  # noqa: ANN001, F811
    """Run make(way) both ways; return both results, checking that exactly the forwarded one was forwarded."""
    results = {}
    for way in WAYS:
        before = command_host.served()
        results[way] = make(way)
        assert command_host.served() == before + (way == "forwarded"), way
    return results


@pytest.mark.parametrize("columns", [80, 200])
def test_tables_at_a_terminal_are_the_same(store, command_host, columns):  # noqa: F811
    for argv in (["identity", "list"], ["resource", "list"], ["group", "show", "-n", "rg"], ["identity", "list", "-g", "nope"]):
        got = _both(command_host, lambda way: Terminal(["--db", str(store), *argv], _env(way), columns).finish())
        assert got["here"] == got["forwarded"], argv
        assert got["here"][0] in (0, 3)


def test_a_prompt_at_a_terminal_is_asked_and_answered_the_same(store, command_host):  # noqa: F811
    def answer_no(way: str):
        t = Terminal(["--db", str(store), "group", "delete", "-n", "rg"], _env(way))
        t.read_until(b"[y/N]: ")
        t.write(b"n\n")
        return t.finish()

    got = _both(command_host, answer_no)
    assert got["here"] == got["forwarded"]
    assert got["here"][0] == 1 and "Operation cancelled." in got["here"][1]


def test_ctrl_c_at_a_prompt_stops_the_command_the_same(store, command_host):  # noqa: F811
    def interrupt(way: str):
        t = Terminal(["--db", str(store), "group", "delete", "-n", "rg"], _env(way))
        t.read_until(b"[y/N]: ")
        # as a person would: once the question waits for an answer (a signal in the instant between the prompt and
        # the read is a race of Python's own, here as in any program)
        _until_reading(t.proc.pid if way == "here" else _children(command_host.proc.pid)[0])
        os.killpg(t.proc.pid, signal.SIGINT)  # what the terminal does at Ctrl-C: the foreground process group
        return t.finish()

    got = _both(command_host, interrupt)
    assert got["here"] == got["forwarded"]
    assert got["here"][0] != 0
    shown = subprocess.run([sys.executable, "-m", "mi_cli", "--db", str(store), "group", "show", "-n", "rg"],
                           env=_env("here"), capture_output=True, text=True)
    assert shown.returncode == 0  # nothing was deleted


def test_a_caller_that_is_killed_stops_its_forwarded_command(store, command_host):  # noqa: F811
    t = Terminal(["--db", str(store), "group", "delete", "-n", "rg"], _env("forwarded"))
    t.read_until(b"[y/N]: ")
    [child] = _children(command_host.proc.pid)
    t.proc.kill()
    t.proc.wait(30)
    # the command stops by itself (its caller is gone), without an answer to its question
    deadline = time.monotonic() + 60
    while child in _children(command_host.proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert child not in _children(command_host.proc.pid)
    os.close(t.master)
    shown = subprocess.run([sys.executable, "-m", "mi_cli", "--db", str(store), "group", "show", "-n", "rg"],
                           env=_env("here"), capture_output=True, text=True)
    assert shown.returncode == 0  # and deleted nothing


def _until_reading(pid: int) -> None:
    """Wait until the process `pid` is blocked reading its terminal."""
    deadline = time.monotonic() + 60
    while Path(f"/proc/{pid}/wchan").read_text() not in ("wait_woken", "n_tty_read"):
        assert time.monotonic() < deadline, Path(f"/proc/{pid}/wchan").read_text()
        time.sleep(0.05)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def test_stdin_working_directory_and_environment_are_the_callers(store, command_host, tmp_path):  # noqa: F811
    (tmp_path / "t.yaml").write_text("apiVersion: mi/v1\nresourceGroups:\n- name: from-file\n  location: westeurope\n")
    tenant = (tmp_path / "t.yaml").read_text()

    def run(way: str, argv: list[str], stdin: str | None = None, **env: str):
        done = subprocess.run([sys.executable, "-m", "mi_cli", "--db", "store.db", *argv], input=stdin, text=True,
                              capture_output=True, env=_env(way, **env), cwd=tmp_path)
        return done.returncode, done.stdout, done.stderr

    for argv, stdin, env in ((["apply", "-f", "-", "--dry-run"], tenant, {}),
                             (["apply", "-f", "t.yaml", "--dry-run", "-o", "json"], None, {}),
                             (["identity", "list"], None, {"MI_OUTPUT": "yaml"}),
                             (["identity", "list"], None, {"MI_OUTPUT": "xml"}),
                             (["log", "--limit", "1", "-o", "tsv", "--query", "[0].operationName"], None, {"TZ": "Asia/Tokyo"})):
        got = _both(command_host, lambda way: run(way, argv, stdin, **env))
        assert got["here"] == got["forwarded"], argv


def test_a_host_of_another_version_is_never_used(store, command_host):  # noqa: F811
    code = ("import sys, mi_cli; mi_cli.__version__ = '0.0.0-other'; sys.argv = ['mi', '--db', sys.argv[1], 'group', "
            "'list', '-o', 'tsv', '--query', '[].name']\nfrom mi_cli.cli.thin import run\nrun()")
    before = command_host.served()
    done = subprocess.run([sys.executable, "-c", code, str(store)], capture_output=True, text=True, env=_env("forwarded"))
    assert done.returncode == 0 and done.stdout == "rg\n", done.stderr
    assert command_host.served() == before  # refused there, so run here


def test_the_command_socket_is_the_users_alone(command_host):  # noqa: F811
    mode = os.stat(command_host.socket).st_mode & 0o777
    assert mode == 0o600


def test_mi_serve_runs_the_stores_commands_and_takes_its_host_down_with_it(tmp_path):
    from mi_cli.locations import command_socket

    db = tmp_path / "served.db"
    subprocess.run([sys.executable, "-m", "mi_cli", "--db", str(db), "group", "create", "-n", "rg", "-l", "westeurope",
                    "-o", "none"], env=_env("here"), check=True)
    serve = subprocess.Popen([sys.executable, "-m", "mi_cli", "--db", str(db), "serve", "--port", "0"],
                             env=_env("here", MI_AZURITE="/nonexistent"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
    try:
        banner = ""
        while "Ctrl-C stops" not in banner:
            line = serve.stderr.readline()
            assert line, banner
            banner += line
        assert f"socket {command_socket(str(db))}" in banner
        sock = Path(command_socket(str(db)))
        deadline = time.monotonic() + 120
        while not sock.exists() and time.monotonic() < deadline:  # the host warms up, then listens
            time.sleep(0.1)
        [host] = [pid for pid in _children(serve.pid) if b"mi_cli.cli.host" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        # the store is neither on the host's command line nor in its environment (a URL may hold a password)
        assert str(db).encode() not in Path(f"/proc/{host}/cmdline").read_bytes().replace(str(sock).encode(), b"")
        assert str(db).encode() not in Path(f"/proc/{host}/environ").read_bytes()
        t = Terminal(["--db", str(db), "group", "delete", "-n", "rg"], _env("forwarded"))
        t.read_until(b"[y/N]: ")
        assert _children(host), "the command runs in a child of the server's command host"
        t.write(b"y\n")
        code, out = t.finish()
        assert code == 0, out
    finally:
        serve.terminate()
        serve.wait(60)
    assert not sock.exists()
    assert not Path(f"/proc/{host}").exists() or b"Z" in Path(f"/proc/{host}/stat").read_bytes().rsplit(b")", 1)[1][:3]
