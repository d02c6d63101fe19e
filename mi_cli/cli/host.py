"""The command host of `mi serve`: runs forwarded `mi` commands in processes forked from one warm process.

`mi serve` starts it beside the token server. It imports and builds everything a command needs once, then
listens on the store's command socket (0600, checked to be the same user at every connection). For each
command it forks: the child takes the caller's stdin, stdout and stderr (passed over the socket), working
directory and environment, runs `mi` exactly as the entry point would, and sends back the exit code. A child
shares nothing with the next one, so each command is as isolated as its own process would be."""

from __future__ import annotations

import array
import io
import os
import signal
import socket
import struct
import sys
import threading
import time

from mi_cli import __version__
from mi_cli.cli.thin import _HEADER, _receive, _send

_MAX_FDS = 3


def _warm(where: str) -> None:
    """Import and build everything commands use, and run read-only commands once, so that a forked child
    starts where a command's own work begins (SQLAlchemy's compiled statements included)."""
    import contextlib

    from mi_cli.cli.main import COMMANDS, command, main

    root = command()
    for name in COMMANDS:
        root.get_command(None, name)
    import jmespath  # noqa: F401
    import jwt  # noqa: F401
    import orjson  # noqa: F401
    import rich.console  # noqa: F401
    import rich.table  # noqa: F401
    import yaml  # noqa: F401

    import mi_cli.render  # noqa: F401
    from mi_cli.services import (access, apply, apps, assignments, explore, export, federated, groups,  # noqa: F401
                                 identities, keyvault, principals, resources, roles, tenancy, tokens, views)

    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        for argv in (("group", "list"), ("resource", "list"), ("identity", "list"), ("identity", "list", "--kind", "all"),
                     ("sp", "list"), ("role", "assignment", "list", "--all"), ("log", "--limit", "1")):
            for output in ("json", "table"):
                main([*argv, "-o", output])  # the store is MI_DB's
    sink.close()


def _listen(path: str) -> socket.socket:
    try:
        os.unlink(path)  # a socket left by a server that died; a live one's file is replaced (the newest serves)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(64)
    return sock


def _same_user(conn: socket.socket) -> bool:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid == os.getuid()


def _accept_one(conn: socket.socket) -> tuple[dict, list[int]] | None:
    """The request and the descriptors that came with it."""
    fds = array.array("i")
    head, ancillary, _flags, _addr = conn.recvmsg(_HEADER.size, socket.CMSG_SPACE(_MAX_FDS * fds.itemsize))
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[:len(data) - (len(data) % fds.itemsize)])
    if len(head) < _HEADER.size:
        head += conn.recv(_HEADER.size - len(head), socket.MSG_WAITALL)
    size = _HEADER.unpack(head)[0]
    body = conn.recv(size, socket.MSG_WAITALL) if size else b""
    import json

    return json.loads(body), list(fds)


def _run_child(conn: socket.socket, request: dict, received: list[int]) -> None:
    """In the forked child: become the caller's process, run the command, report its exit code. Never returns."""
    code = 1
    try:
        import gc

        gc.disable()  # a command is short; the process ends with it
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        for signum in request.get("ignored", []):  # what the caller ignores, the command ignores
            signal.signal(signum, signal.SIG_IGN)
        targets = [int(fd) for fd in request.get("fds", [])]
        null = os.open(os.devnull, os.O_RDWR)
        for target in (0, 1, 2):
            source = received[targets.index(target)] if target in targets and targets.index(target) < len(received) else null
            os.dup2(source, target)
        for fd in {*received, null}:
            if fd > 2:
                os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        time.tzset()
        streams = request.get("streams", {})
        sys.stdin = _stream(0, "r", streams.get("stdin"), sys.stdin)
        sys.stdout = _stream(1, "w", streams.get("stdout"), sys.stdout)
        sys.stderr = _stream(2, "w", streams.get("stderr"), sys.stderr, line_buffering=True)
        _send(conn, {"pid": os.getpid()})
        finished = threading.Event()
        interrupt = _Interrupt() if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN else None
        # The watcher is started with the relayed signals blocked, and keeps them so: the kernel then gives them to
        # the main thread, whose blocking read (a prompt at the terminal) they must interrupt.
        relayed = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
        signal.pthread_sigmask(signal.SIG_BLOCK, relayed)
        try:
            threading.Thread(target=_watch, args=(conn, finished, interrupt), daemon=True).start()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, relayed)
        from mi_cli.cli.main import main

        try:
            code = main(list(request["argv"]))
        except SystemExit as exc:  # completion answers end so
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
    except BaseException:  # noqa: BLE001 - the child must end here, whatever happened
        code = code or 1
    try:
        finished.set()  # done: the caller closing its end now stops nothing
    except NameError:  # it failed before the command started
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _send(conn, {"exit": code})
    except OSError:
        pass
    os._exit(code)


def _stream(fd: int, mode: str, spec, current, *, line_buffering: bool | None = None):  # noqa: ANN001, ANN202
    """A text stream on descriptor `fd` as the caller's Python made it (encoding, errors, buffering)."""
    encoding, errors = (spec or [getattr(current, "encoding", "utf-8"), getattr(current, "errors", "strict")])
    raw = io.FileIO(fd, mode, closefd=False)
    tty = os.isatty(fd)
    buffered = io.BufferedReader(raw) if mode == "r" else io.BufferedWriter(raw)
    return io.TextIOWrapper(buffered, encoding=encoding, errors=errors,
                            line_buffering=tty if line_buffering is None else line_buffering)


class _Interrupt:
    """Ctrl-C in a forwarded command, made certain. A signal that lands just before the main thread blocks in a
    read (a prompt) sets Python's flag but interrupts no read: the handler would run only once the read returns.
    So the signal also wakes the watcher (Python's wakeup fd), which sends it again to the main thread until the
    handler has run; the handler raises KeyboardInterrupt once, as Python's own does."""

    def __init__(self) -> None:
        self.main = threading.main_thread().ident
        self.handled = threading.Event()
        self.wake, writer = os.pipe()
        os.set_blocking(writer, False)
        signal.set_wakeup_fd(writer, warn_on_full_buffer=False)
        signal.signal(signal.SIGINT, self._handler)

    def _handler(self, signum, frame) -> None:  # noqa: ANN001, ARG002
        if self.handled.is_set():
            return  # a repeat of the one being handled
        self.handled.set()
        raise KeyboardInterrupt

    def woke(self, finished: threading.Event) -> None:
        """Called by the watcher when a signal arrived."""
        if signal.SIGINT not in os.read(self.wake, 512):
            return
        while not finished.is_set() and not self.handled.wait(0.1):
            signal.pthread_kill(self.main, signal.SIGINT)


def _watch(conn: socket.socket, finished: threading.Event, interrupt: _Interrupt | None) -> None:
    """The caller went away (killed): the command stops as at Ctrl-C, its transaction rolled back; where the
    caller ignored Ctrl-C, it ends at once, which rolls its transaction back just the same. Meanwhile, signals
    are made sure to reach the command (_Interrupt)."""
    import select

    watched = [conn] if interrupt is None else [conn, interrupt.wake]
    try:
        while True:
            ready, _, _ = select.select(watched, [], [])
            if interrupt is not None and interrupt.wake in ready:
                interrupt.woke(finished)
            if conn in ready and not conn.recv(64):
                break
    except OSError:
        pass
    if finished.is_set():
        return
    if interrupt is None:
        os._exit(1)
    while not finished.is_set() and not interrupt.handled.wait(0.1):
        signal.pthread_kill(interrupt.main, signal.SIGINT)


def serve(where: str, path: str) -> None:
    import gc

    _warm(where)
    # What the warm process made is never collected: a child's collections would otherwise walk (and so copy,
    # page by page) the whole parent heap.
    gc.collect()
    gc.freeze()
    sock = _listen(path)
    inode = os.stat(path).st_ino
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the system; each reports its own code
    signal.signal(signal.SIGTERM, lambda *_: _stop(path, inode))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal's Ctrl-C is mi serve's to handle
    print("ready", flush=True)
    while True:
        try:
            conn, _ = sock.accept()
        except InterruptedError:
            continue
        except OSError:
            return
        try:
            if not _same_user(conn):
                conn.close()
                continue
            request, received = _accept_one(conn)
        except (OSError, ValueError):
            conn.close()
            continue
        if request.get("version") != __version__:
            try:
                _send(conn, {"refused": f"mi serve runs mi {__version__}"})
            except OSError:
                pass
            for fd in received:
                os.close(fd)
            conn.close()
            continue
        pid = os.fork()
        if pid == 0:
            sock.close()
            _run_child(conn, request, received)
        print(f"ran {pid}", flush=True)  # to whoever started the host (mi serve gives it no output)
        for fd in received:
            os.close(fd)
        conn.close()


def _stop(path: str, inode: int) -> None:
    try:
        if os.stat(path).st_ino == inode:  # not a socket a newer server of the store put there since
            os.unlink(path)
    except OSError:
        pass
    os._exit(0)


def main() -> None:
    """python -m mi_cli.cli.host SOCKET, with the store on the first line of stdin: neither on the command line
    nor in the environment, where a PostgreSQL URL's password could be read."""
    path = sys.argv[1]
    where = sys.stdin.readline().rstrip("\n")
    os.environ["MI_DB"] = where  # the warm-up's commands use the store; each child takes its caller's environment
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: ends with mi serve
    serve(where, path)


if __name__ == "__main__":
    main()
