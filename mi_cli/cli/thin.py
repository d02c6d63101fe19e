"""The `mi` entry point: hands the command to a running `mi serve` of the same store, else runs it here.

A running server keeps a command host (mi_cli/cli/host.py) with everything imported; the command runs there
in a process forked for it, on this process's own stdin, stdout and stderr (passed over the socket), in
its working directory and environment, so that what it prints, reads, asks and exits with is what running
it here would give. Anything unexpected on the way (no server, a server of another version, a refused
socket) runs it here instead. This module imports only the standard library."""

from __future__ import annotations

import array
import json
import os
import signal
import socket
import struct
import sys

from mi_cli import __version__

# Commands that never go to the server: `serve` is the server.
_LOCAL = {"serve"}
_HEADER = struct.Struct("!I")


def _store_and_command(argv: list[str]) -> tuple[str | None, str | None]:
    """The --db value (as click reads it: the last one) and the command's name, from the options before it."""
    db, i = None, 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--db":
            if i + 1 >= len(argv):
                return None, None
            db, i = argv[i + 1], i + 2
        elif arg.startswith("--db="):
            db, i = arg[5:], i + 1
        elif arg == "--debug":
            i += 1
        else:
            return db, (None if arg.startswith("-") else arg)
    return db, None


def socket_for(argv: list[str]) -> str | None:
    """The command socket of the store this command line names, or None when it must run here."""
    if os.name != "posix" or os.environ.get("MI_NO_SERVER") or os.environ.get("_MI_COMPLETE"):
        return None  # the command socket is a Unix socket, passing descriptors: a POSIX system's
    db, name = _store_and_command(argv)
    if name is None or name in _LOCAL:
        return None  # help, --version and completion set-up are cheap here
    where = db if db is not None else os.environ.get("MI_DB") or None
    if where == "":
        return None
    from mi_cli.locations import command_socket, default_path

    try:
        return command_socket(where or default_path())
    except (OSError, ValueError):
        return None


def _send(conn: socket.socket, data: dict, fds: list[int] | None = None) -> None:
    body = json.dumps(data).encode()
    payload = _HEADER.pack(len(body)) + body
    if fds:
        conn.sendmsg([payload], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    else:
        conn.sendall(payload)


def _receive(conn: socket.socket) -> dict | None:
    head = _exactly(conn, _HEADER.size)
    if head is None:
        return None
    body = _exactly(conn, _HEADER.unpack(head)[0])
    return None if body is None else json.loads(body)


def _exactly(conn: socket.socket, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = conn.recv(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _streams() -> dict:
    return {name: [getattr(stream, "encoding", None) or "utf-8", getattr(stream, "errors", None) or "strict"]
            for name, stream in (("stdin", sys.stdin), ("stdout", sys.stdout), ("stderr", sys.stderr))}


def forward(path: str, argv: list[str]) -> int | None:
    """Run the command in the server's command host; its exit code, or None when it was not run there."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
    except OSError:
        conn.close()
        return None
    child = 0
    pending: list[int] = []

    def relay(signum, frame):  # noqa: ANN001, ARG001 - Ctrl-C and kill reach the command, not just this process
        if child:
            os.kill(child, signum)
        else:
            pending.append(signum)  # before the command started: delivered once it has

    # A signal this process ignores (a command started in a script's background ignores Ctrl-C) is ignored by
    # the command too; the others reach it.
    ignored = [signum for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
               if signal.getsignal(signum) is signal.SIG_IGN]
    previous = {signum: signal.signal(signum, relay) for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
                if signum not in ignored}
    try:
        try:
            fds = [fd for fd in (0, 1, 2) if _is_open(fd)]
            _send(conn, {"version": __version__, "argv": argv, "cwd": os.getcwd(), "env": dict(os.environ),
                         "fds": fds, "streams": _streams(), "ignored": [int(n) for n in ignored]}, fds)
            answer = _receive(conn)
        except OSError:
            answer = None
        if not answer or "pid" not in answer:
            for signum, handler in previous.items():  # another version, or a refusal: run here, as if never asked
                signal.signal(signum, handler)
            for signum in pending:
                os.kill(os.getpid(), signum)
            return None
        child = int(answer["pid"])
        for signum in pending:
            os.kill(child, signum)
        while True:
            try:
                done = _receive(conn)
                break
            except InterruptedError:
                continue
            except OSError:
                done = None
                break
        if done is None or "exit" not in done:
            print("ERROR: (InternalError) The command ended without an exit code (the command host of 'mi serve' "
                  "stopped?); run it again, or with MI_NO_SERVER=1 to run it here.", file=sys.stderr)
            return 1
        return int(done["exit"])
    finally:
        conn.close()


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def run() -> None:
    argv = sys.argv[1:]
    path = socket_for(argv)
    if path is not None:
        code = forward(path, argv)
        if code is not None:
            sys.stdout.flush()
            os._exit(code)  # nothing of this process's own is left to clean up
    from mi_cli.cli.main import run as here

    here()
