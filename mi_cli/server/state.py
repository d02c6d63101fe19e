"""What one `mi serve` process keeps between requests: the store and what was read from it, tokens, faults, throttling."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mi_cli.changes import Memo
from mi_cli.services.tokens import TokenCache, clip
from mi_cli.store import Store


@dataclass
class Fault:
    """The next `count` token requests answer `status` (with Retry-After for 429 and 503)."""

    status: int
    count: int
    retry_after: int = 1

    @classmethod
    def parse(cls, spec: str) -> "Fault":
        parts = spec.split(":")
        try:
            status = int(parts[0])
            count = int(parts[1]) if len(parts) > 1 else 1
            retry_after = int(parts[2]) if len(parts) > 2 else 1
        except ValueError:
            raise ValueError(f"--inject '{clip(spec)}' is not STATUS[:COUNT[:RETRY_AFTER]], e.g. 503:3 or 429:2:5") from None
        if not (400 <= status <= 599) or count < 1 or retry_after < 0:
            raise ValueError(f"--inject '{clip(spec)}': the status must be 400-599 and the count at least 1")
        return cls(status, count, retry_after)

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)} if self.status in (429, 503) else {}


@dataclass
class Throttle:
    """IMDS's managed-identity limits per resource: 20 requests a second, 5 at a time."""

    rate: int = 20
    concurrent: int = 5
    _recent: dict[str, deque] = field(default_factory=dict)
    _active: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @staticmethod
    def bucket(key: str) -> str:
        """Keys are paths and headers anyone can send: a long one is kept as its digest."""
        return key if len(key) <= 256 else hashlib.sha256(key.encode(errors="surrogatepass")).hexdigest()

    def enter(self, key: str) -> bool:
        now = time.monotonic()
        with self._lock:
            recent = self._recent.setdefault(key, deque())
            while recent and now - recent[0] > 1.0:
                recent.popleft()
            if len(recent) >= self.rate or self._active.get(key, 0) >= self.concurrent:
                return False
            recent.append(now)
            self._active[key] = self._active.get(key, 0) + 1
            return True

    def leave(self, key: str) -> None:
        with self._lock:
            self._active[key] -= 1
            if not self._active[key]:
                del self._active[key]
            if len(self._recent) > 1024:  # keys are paths anyone can send: forget the quiet ones
                now = time.monotonic()
                for quiet in [k for k, q in self._recent.items() if not q or now - q[-1] > 1.0]:
                    if quiet not in self._active:
                        del self._recent[quiet]


@dataclass
class ServerState:
    store: Store
    default_resource: str | None = None  # an ARM id: the resource that bare IMDS paths speak for
    faults: list[Fault] = field(default_factory=list)
    throttle: Throttle | None = None
    cache: TokenCache = field(default_factory=TokenCache)
    spares: Any = None  # server/signing.Spares: new tokens for bypass_cache, signed a request ahead
    lock: threading.Lock = field(default_factory=threading.Lock)
    ca_file: Path | None = None  # the store's CA certificate, which also signs the certificates of the children
    azurite: Any = None  # server/azurite.Azurite when Blob Storage is served
    azurite_missing: str = ""  # why it is not
    blob_cache: Any = None  # server/blobcache.BlobCache: small blob reads Azurite answered (made by the Blob plane)
    certificates: Any = None  # server/tls.Certificates: what the TLS server presents, following the store's CA
    clients: dict[str, Any] = field(default_factory=dict)  # HTTP clients of the planes, by what they reach
    # Whether the store changed (changes.Watch), what was read from it since it last did, and the rows of the
    # activity log that requests answered from memory wait in (server/journal). No watch: a store of another
    # kind (an in-memory copy), every request a transaction as before.
    watch: Any = None
    memo: Memo = field(default_factory=Memo)
    journal: Any = None

    def __post_init__(self) -> None:
        if self.spares is None:
            from mi_cli.server.signing import Spares

            self.spares = Spares()
        if self.watch is None and getattr(self.store, "engine", None) is not None and not getattr(self.store, "rollback", False):
            from mi_cli import changes
            from mi_cli.server.journal import Journal

            self.watch = changes.watch(self.store)
            self.journal = Journal(self.watch)

    async def aclose(self) -> None:
        """At shutdown: the activity-log rows still waiting written, the planes' clients closed and the children
        stopped."""
        import asyncio

        try:
            for client in self.clients.values():
                await client.aclose()
            self.clients.clear()
            if self.azurite is not None:
                self.azurite.stop()
        finally:
            await asyncio.to_thread(self.flush)

    def flush(self) -> None:
        """Write every activity-log row still waiting, and let the store's watch go (the server has stopped)."""
        self.spares.close()
        if self.journal is not None:
            self.journal.close()
        if self.watch is not None:
            self.watch.close()

    def connect_route(self, host: str, port: int) -> tuple[str, str]:
        """What the proxy does with CONNECT host:port, read from the store now (a vault made a moment
        ago is served). Before a tunnel to the TLS server, its certificates follow the store's CA (made anew
        by another process after a reset)."""
        from mi_cli.services import Ctx, localcloud

        with self.store.transaction(write=False) as session:
            ctx = Ctx.from_env(session)
            route = localcloud.connect_route(ctx, host, port)
            ca_pem = localcloud.ca_certificate(ctx) if route[0] == "local" and self.certificates is not None else None
        if ca_pem is not None:
            self.certificates.follow(ca_pem)
        return route

    def next_fault(self) -> Fault | None:
        with self.lock:
            while self.faults:
                fault = self.faults[0]
                fault.count -= 1
                if fault.count <= 0:
                    self.faults.pop(0)
                return fault
        return None

    def throttled(self, key: str, respond):  # noqa: ANN001, ANN201
        """`respond()` within the throttle's limits for `key`, or None when over them."""
        if self.throttle is None:
            return respond()
        key = self.throttle.bucket(key)
        if not self.throttle.enter(key):
            return None
        try:
            return respond()
        finally:
            self.throttle.leave(key)
