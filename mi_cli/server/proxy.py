"""The local cloud's HTTP CONNECT proxy: served hosts to the local TLS server, Azure hosts not served refused, the rest tunnelled."""

from __future__ import annotations

import asyncio
import socket
import sys
from typing import Callable

# A request head larger than this is not a CONNECT any client sends; reading stops there.
HEAD_LIMIT = 16 * 1024
HEAD_TIMEOUT = 15.0  # seconds a client has to send its CONNECT: an idle one holds nothing for long
CONNECT_TIMEOUT = 15.0  # seconds to reach the far end of a tunnel
CHUNK = 64 * 1024  # each direction holds at most one chunk plus the transport's high-water mark
MAX_TUNNELS = 1024  # beyond this, new clients are answered 503 rather than exhausting file descriptors

Decide = Callable[[str, int], tuple[str, str]]  # (host, port) -> ("local" | "tunnel" | "refuse", why)


def _answer(status: str, body: str = "", headers: tuple[str, ...] = ()) -> bytes:
    data = body.encode()
    head = [f"HTTP/1.1 {status}", "Content-Type: text/plain; charset=utf-8", f"Content-Length: {len(data)}",
            "Connection: close", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + data


def parse_authority(target: str) -> tuple[str, int] | None:
    """host:port of a CONNECT (a bracketed IPv6 address too); None when it is not one."""
    if target.startswith("["):
        host, sep, rest = target[1:].partition("]")
        if not sep or not rest.startswith(":"):
            return None
        port_text = rest[1:]
    else:
        host, sep, port_text = target.rpartition(":")
        if not sep:
            return None
    if not host or not port_text.isdigit() or not (0 < int(port_text) < 65536):
        return None
    return host, int(port_text)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    # drain() after each chunk: a slow reader on one side slows its sender, never grows a buffer
    while data := await reader.read(CHUNK):
        writer.write(data)
        await writer.drain()


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), 5)
    except (OSError, asyncio.TimeoutError, asyncio.CancelledError):
        pass


class Proxy:
    """One listening socket; one task per client. `decide` reads the store, so it runs in a thread."""

    def __init__(self, decide: Decide, local: tuple[str, int]) -> None:
        self.decide = decide
        self.local = local  # the TLS server that terminates the served hosts
        self.tasks: set[asyncio.Task] = set()
        self.server: asyncio.base_events.Server | None = None

    async def start(self, sock: socket.socket) -> None:
        self.server = await asyncio.start_server(self._client, sock=sock, limit=HEAD_LIMIT)

    async def close(self) -> None:
        """Stop listening and end every tunnel (both sides closed)."""
        if self.server is not None:
            self.server.close()
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=5)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self.tasks.add(task)
        try:
            if len(self.tasks) > MAX_TUNNELS:
                writer.write(_answer("503 Service Unavailable", "mi's proxy has too many open tunnels.\n",
                                     ("Retry-After: 1",)))
                await writer.drain()
                return
            await self._serve(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, ValueError):
            pass  # the client went away or sent something that is not HTTP: nothing to answer
        except asyncio.CancelledError:
            pass  # close(): the server is stopping; the task ends here, quietly, with both sides closed
        finally:
            self.tasks.discard(task)
            await _close(writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
        except asyncio.LimitOverrunError:
            writer.write(_answer("431 Request Header Fields Too Large", "The request head is too large.\n"))
            await writer.drain()
            return
        parts = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            writer.write(_answer("400 Bad Request", "Not an HTTP request.\n"))
            await writer.drain()
            return
        method, target, _ = parts
        if method != "CONNECT":
            writer.write(_answer("405 Method Not Allowed", "mi's proxy only tunnels: it answers CONNECT host:port.\n",
                                 ("Allow: CONNECT",)))
            await writer.drain()
            return
        authority = parse_authority(target)
        if authority is None:
            writer.write(_answer("400 Bad Request", "CONNECT needs host:port.\n"))
            await writer.drain()
            return
        host, port = authority
        try:
            action, why = await asyncio.get_running_loop().run_in_executor(None, self.decide, host, port)
        except Exception as exc:  # the store could not say (busy, or a failure): a moment's wait
            print(f"mi serve: proxy: CONNECT {host[:100]}:{port}: {type(exc).__name__}; answered 503.",
                  file=sys.stderr, flush=True)
            writer.write(_answer("503 Service Unavailable", "mi could not read its store; try again.\n",
                                 ("Retry-After: 1",)))
            await writer.drain()
            return
        if action == "refuse":
            writer.write(_answer("502 Bad Gateway", why + "\n"))
            await writer.drain()
            return
        far = self.local if action == "local" else (host, port)
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(*far, limit=CHUNK), CONNECT_TIMEOUT)
        except (OSError, asyncio.TimeoutError, ValueError) as exc:
            # ValueError: a name no resolver takes (an empty or over-long label fails IDNA, a NUL byte)
            reason = ("timed out" if isinstance(exc, asyncio.TimeoutError) else "not a host name"
                      if isinstance(exc, ValueError) else (exc.strerror or type(exc).__name__))
            writer.write(_answer("502 Bad Gateway", f"Cannot reach {host[:200]}:{port}: {reason}.\n"))
            await writer.drain()
            return
        try:
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await _relay(reader, writer, up_reader, up_writer)
        finally:
            await _close(up_writer)


async def _relay(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter,
                 far_r: asyncio.StreamReader, far_w: asyncio.StreamWriter) -> None:
    """Both directions until either side closes (or fails); then both are closed by the callers."""
    pumps = [asyncio.ensure_future(_pump(client_r, far_w)), asyncio.ensure_future(_pump(far_r, client_w))]
    try:
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pump in pumps:
            pump.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
