"""The Blob plane's memory of small blob reads: Azurite's answers, given again while nothing can have changed them."""

# A Get Blob (or Get Blob Properties) authorised by a bearer token is answered from here when Azurite answered
# the same request before and nothing can have changed its answer since; authorisation, RBAC and the activity
# log still run first for every request (server/blob). What can change an answer, and what is done about it:
#
# - A request that is not a read, relayed to Azurite (any scheme: Shared Key and SAS writes are relayed too):
#   its account's answers are dropped before it is relayed and again when its answer ends, and a read answered
#   by Azurite is kept only if no write to its account started or ran while it was in flight (a generation
#   counter per account, and a count of writes in flight).
# - The store (an account deleted and made again is emptied in Azurite by azurite.ensure; accounts and keys
#   restart it): every answer is dropped when a request sees a store version other than the one they were read
#   under (the memo of server/reads marks each version), or an Azurite that mi restarted or emptied an account
#   of since (Azurite.generation).
# - Time alone: a leased blob's answer (a lease expires without a write; a breaking one breaks), a copy still
#   under way, a blob being rehydrated or set to expire are never kept. Azurite's other answer headers are the
#   blob's stored properties; its Date and request id are made anew for each answer given from here.
# - The request: the key is its method, raw path and query, and every header Azurite is sent but those that
#   cannot change the answer (the token, dates, the client's request id, User-Agent, trace context), with the
#   token's issuer and audience (Azurite checks both itself). A request with a body is never answered from here.
#
# Writes sent to Azurite's own port, bypassing mi serve, are not seen: they bypass authorisation as well.

from __future__ import annotations

import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Hashable, Iterable

from starlette.responses import Response

ENTRY_LIMIT = 64 * 1024  # the largest body kept (Content-Length)
TOTAL_LIMIT = 32 * 1024 * 1024  # bytes kept in all (bodies, headers and keys), the least recently used let go
# The operations answered from memory (as services/blob names them), for these methods only.
KEPT = frozenset({"Get Blob", "Get Blob Properties"})
METHODS = frozenset({"GET", "HEAD"})
# Operations that change nothing in Azurite: every other one relayed drops its account's answers.
READS = frozenset({"Get Blob", "Get Blob Properties", "Get Blob Metadata", "Get Blob Tags", "Get Block List",
                   "Get Page Ranges", "List Blobs", "List Containers", "Get Container Properties",
                   "Get Container Metadata", "Get Container ACL", "Get Blob Service Properties",
                   "Get Blob Service Stats", "Get Account Information", "Find Blobs by Tags",
                   "Find Blobs by Tags in Container", "Preflight Blob Request"})
# Request headers that cannot change Azurite's answer to a request authorised by a bearer token: the token
# (mi verified it; its issuer and audience are in the key), dates (Azurite's lifetime check uses its own
# clock; x-ms-date is Shared Key's), the client's request id (echoed: see answer()), the client's name and
# trace context. Hop-by-hop headers are never relayed, so they cannot either.
IGNORED = frozenset({b"authorization", b"x-ms-date", b"date", b"x-ms-client-request-id", b"user-agent",
                     b"traceparent", b"tracestate"})
# A request with a body (however Azurite would read it) is relayed every time.
BODY = frozenset({b"content-length", b"transfer-encoding"})
REQUEST_ID, CLIENT_REQUEST_ID = b"x-ms-request-id", b"x-ms-client-request-id"
# Answer headers that say the answer changes with time alone, with the only values that do not.
STEADY = {b"x-ms-lease-state": (b"available",), b"x-ms-lease-status": (b"unlocked",), b"x-ms-copy-status": (b"success",)}
UNSTEADY = frozenset({b"x-ms-archive-status", b"x-ms-rehydrate-priority", b"x-ms-expiry-time", b"x-ms-last-access-time"})


def key(account: str, bearer: Hashable, method: str, target: str,
        headers: Iterable[tuple[bytes, bytes]], hop_by_hop: frozenset[bytes]) -> tuple | None:
    """The key of a request's answer, or None when it is never answered from memory (a body). `headers` are
    the request's raw headers, names in any case; `hop_by_hop` those the plane does not relay."""
    kept = []
    for name, value in headers:
        name = name.lower()
        if name in BODY:
            return None
        if name not in IGNORED and name not in hop_by_hop:
            kept.append((name, value))
    kept.sort(key=lambda pair: pair[0])  # stable: a header's repeats keep their order, which Azurite reads
    return account, bearer, method, target, tuple(kept)


def _size(key: tuple) -> int:
    return sum(len(part) for part in key[2:4]) + sum(len(n) + len(v) for n, v in key[4]) + 64


def keepable(method: str, status: int, headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether Azurite's answer (its status and raw headers, names in lower case) may be kept, before its body
    is read: a success of known length within ENTRY_LIMIT (any length for HEAD, which has no body), and
    nothing in it that changes with time alone."""
    if status not in (200, 206):
        return False
    length = None
    for name, value in headers:
        if name == b"content-length":
            length = value
        elif name == b"transfer-encoding" or name in UNSTEADY:
            return False
        elif name in STEADY and value.lower() not in STEADY[name]:
            return False
    if length is None or not length.isdigit():
        return False
    return method == "HEAD" or int(length) <= ENTRY_LIMIT


@dataclass(frozen=True)
class Kept:
    """An answer of Azurite's as it is given again: its status, headers (those the plane relays, but its
    request ids) and body."""

    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    size: int

    def answer(self, client_request_id: bytes | None) -> "Answer":
        headers = [*self.headers, (REQUEST_ID, str(uuid.uuid4()).encode())]
        if client_request_id is not None:
            headers.append((CLIENT_REQUEST_ID, client_request_id))
        return Answer(self.status, headers, self.body)


class Answer(Response):
    """A kept answer, sent as Azurite sent it (the server adds its own Date and Server, as for relayed ones)."""

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status_code, self.raw_headers, self.body, self.background = status, headers, body, None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.body, "more_body": False})


def client_request_id(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The request's x-ms-client-request-id as Azurite echoes it (repeats joined with ", ", as Node joins
    them), or None when it has none."""
    values = [v for n, v in headers if n.lower() == CLIENT_REQUEST_ID]
    return b", ".join(values) if values else None


class _Account:
    __slots__ = ("generation", "writing", "keys")

    def __init__(self) -> None:
        self.generation = 0  # moves on when a write to the account starts or ends
        self.writing = 0  # writes relayed whose answers have not ended
        self.keys: set[tuple] = set()


@dataclass(frozen=True)
class Ticket:
    """What a read relayed to Azurite is kept against: its answer is kept only if nothing moved on meanwhile."""

    account: str
    generation: int
    epoch: int
    azurite: int


class BlobCache:
    """Small blob reads Azurite answered, by key(), at most TOTAL_LIMIT bytes. Used on the server's event loop
    only (it takes no lock)."""

    def __init__(self, total_limit: int = TOTAL_LIMIT) -> None:
        self.total_limit = total_limit
        self._entries: OrderedDict[tuple, Kept] = OrderedDict()
        self._size = 0
        self._accounts: dict[str, _Account] = {}
        self._epoch = 0  # moves on whenever everything is dropped
        self._version: object = None  # the store's version the answers were read under (a token of its memo)
        self._azurite = -1  # Azurite's generation they were read from

    def follow(self, version: object | None, azurite: int) -> bool:
        """Drop everything when the store (`version`, a token of its memo's version) or Azurite (its generation)
        changed since the answers were read; False when the store's version is not known (no memo), so that
        memory is not used for the request."""
        if version is None:
            return False
        if version is not self._version or azurite != self._azurite:
            self.clear()
            self._version, self._azurite = version, azurite
        return True

    def get(self, key: tuple) -> Kept | None:
        kept = self._entries.get(key)
        if kept is not None:
            self._entries.move_to_end(key)
        return kept

    def ticket(self, account: str, azurite: int) -> Ticket | None:
        """What a read about to be relayed is kept against; None while a write to its account is under way."""
        if azurite != self._azurite:
            self.clear()
            self._azurite = azurite
        state = self._accounts.get(account)
        if state is not None and state.writing:
            return None
        return Ticket(account, state.generation if state is not None else 0, self._epoch, azurite)

    def keep(self, ticket: Ticket, key: tuple, status: int, headers: Iterable[tuple[bytes, bytes]], body: bytes,
             azurite: int) -> bool:
        """Keep a read's answer (headers as relayed), unless something moved on since its ticket was taken."""
        state = self._accounts.get(ticket.account)
        if (ticket.epoch != self._epoch or ticket.azurite != azurite
                or (state.generation if state is not None else 0) != ticket.generation
                or (state is not None and state.writing)):
            return False
        stored = tuple((n, v) for n, v in headers if n not in (REQUEST_ID, CLIENT_REQUEST_ID))
        size = len(body) + sum(len(n) + len(v) for n, v in stored) + _size(key)
        if size > self.total_limit:
            return False
        self._drop(key)
        self._entries[key] = Kept(status, stored, body, size)
        self._size += size
        self._accounts.setdefault(ticket.account, _Account()).keys.add(key)
        while self._size > self.total_limit:
            self._drop(next(iter(self._entries)))
        return True

    def begin_write(self, account: str) -> None:
        """A request that may change the account is about to be relayed."""
        state = self._accounts.setdefault(account, _Account())
        state.writing += 1
        state.generation += 1
        self._forget(account)

    def end_write(self, account: str) -> None:
        """Its answer ended (sent whole, cut short, or never given)."""
        state = self._accounts.setdefault(account, _Account())
        state.writing -= 1
        state.generation += 1
        self._forget(account)

    def clear(self) -> None:
        self._epoch += 1
        self._entries.clear()
        self._size = 0
        for state in self._accounts.values():
            state.keys.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def _forget(self, account: str) -> None:
        state = self._accounts.get(account)
        if state is not None:
            for key in list(state.keys):
                self._drop(key)

    def _drop(self, key: tuple) -> None:
        kept = self._entries.pop(key, None)
        if kept is not None:
            self._size -= kept.size
            state = self._accounts.get(key[0])
            if state is not None:
                state.keys.discard(key)
