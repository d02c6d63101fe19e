"""New tokens signed one request ahead for a client that keeps asking for them (IMDS's bypass_cache=true)."""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from mi_cli.server.reads import NeedStore
from mi_cli.services import tokens

# Identities, audiences and tenants kept at most, each with DEPTH spares: a client asking for ever new
# audiences costs at most SIZE x DEPTH tokens signed and never served.
SIZE = 64
DEPTH = 2  # spares a slot keeps: one being signed while the other waits to be served
# One worker: RSA runs without the GIL, but each signing also needs it briefly, and a second worker's turns
# with it delayed the event loop more than its signing gained (measured: fewer tokens a second, 1 and 4 clients).
WORKERS = 1


class Spares:
    """tokens.sign(), with the RSA signing (about 0.2 ms, most of a new token's cost) moved off the request's
    time: after signing a new token, a worker thread signs DEPTH more with the same arguments (identity, audience,
    tenant, key, app roles and the same second as `now`), which the next requests with those arguments get.

    A spare is served only when every argument is equal, the second included, so it is the token that request
    would have signed (claims equal but for their random members); each is served once at most. A change to the
    store changes an argument (the roles, the key that signs) and the spares are not used; a new second does too.
    cryptography releases the GIL while it signs, so the worker signs on another core."""

    def __init__(self, size: int = SIZE) -> None:
        self._size = size
        self._lock = threading.Lock()
        # (identity, audience, tenant) -> spares in the order signed, each (its other arguments, the signing)
        self._spares: OrderedDict[tuple[Any, ...], deque[tuple[tuple[Any, ...], Future[tokens.Issued]]]] = OrderedDict()
        self._pool: ThreadPoolExecutor | None = None

    @property
    def on_loop(self) -> _OnLoop:
        """What the event loop signs with: a spare signed already; while one is still being signed (the worker
        is behind: more clients than it keeps up with), the loop signs this request's token itself, two signing
        then instead of one waiting; with no spare at all, reads.NeedStore (a worker thread answers, and signs)."""
        return _OnLoop(self)

    def sign(self, chosen: tokens.Chosen, audience: str, tenant_id: str, key: Any, now: int, *,
             roles: Sequence[str] = (), lifetime: int = tokens.LIFETIME, wait: bool = True) -> tokens.Issued:
        """tokens.sign()'s token: a spare signed with these arguments, else signed now. Without `wait`, a spare
        still being signed is left for the next request, and NeedStore is raised when there is none."""
        slot = (chosen, audience, tenant_id)
        roles = tuple(roles)
        arguments = (key.kid, now, roles, lifetime)
        taken = None
        with self._lock:
            spares = self._spares.get(slot)
            while spares and taken is None:
                spare = spares.popleft()
                if spare[0] != arguments:
                    spare[1].cancel()  # signed for another second, or before the store changed
                elif wait or spare[1].done():
                    taken = spare[1]  # signed, or being signed: not longer than signing it here
                else:  # still being signed: the loop signs this one, and the spare waits for the next request
                    spares.appendleft(spare)
                    break
        if taken is None and not wait and not spares:
            raise NeedStore()
        issued = None
        if taken is not None:
            try:
                issued = taken.result()  # signed, or being signed on another core: at most one signing's wait
            except Exception:  # noqa: BLE001 - the spare failed: sign now, as without one
                issued = None
        if issued is None:
            issued = tokens.sign(chosen, audience, tenant_id, key, now, roles=roles, lifetime=lifetime)
        self._top_up(slot, arguments, (chosen, audience, tenant_id, key, now), {"roles": roles, "lifetime": lifetime})
        return issued

    def _top_up(self, slot: tuple[Any, ...], arguments: tuple[Any, ...], args: tuple[Any, ...],
                kwargs: dict[str, Any]) -> None:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="mi-sign")
            spares = self._spares.pop(slot, None) or deque()
            self._spares[slot] = spares  # the most recently used slot last
            while len(spares) < DEPTH:
                spares.append((arguments, self._pool.submit(tokens.sign, *args, **kwargs)))
            while len(self._spares) > self._size:
                for _, future in self._spares.popitem(last=False)[1]:
                    future.cancel()

    def close(self) -> None:
        """Stop signing spares (the server stops)."""
        with self._lock:
            pool, self._pool = self._pool, None
            self._spares.clear()
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


class _OnLoop:
    """Spares.sign() that never waits for a spare (see Spares.on_loop)."""

    def __init__(self, spares: Spares) -> None:
        self._spares = spares

    def sign(self, *args: Any, **kwargs: Any) -> tokens.Issued:
        return self._spares.sign(*args, wait=False, **kwargs)
