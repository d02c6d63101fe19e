"""Answering a request from what the server read before, opening a transaction only for what it lacks."""

from __future__ import annotations

import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

from starlette.responses import Response

from mi_cli import changes
from mi_cli.errors import StoreError
from mi_cli.services import Ctx

T = TypeVar("T")


class NeedStore(BaseException):
    """Raised on the event loop when the answer needs something read from the store: answer in a worker thread.
    A BaseException, so that no service's `except Exception` takes it for a refusal."""


class NeedWrite(BaseException):
    """The answer writes (a signing key made on first use, a tenant): answer in a write transaction instead."""


# What a request answered from memory may not do to the store: anything but read and log.
WRITES = frozenset({"add", "add_all", "delete", "merge", "bulk_save_objects", "bulk_insert_mappings",
                    "bulk_update_mappings", "commit"})


def _refuse_flush(*_args: Any) -> None:
    raise NeedWrite()


def _refuse_dml(state: Any) -> None:
    if state.is_insert or state.is_update or state.is_delete:
        raise NeedWrite()


class LazySession:
    """The session of a request's read transaction, begun on first use (never, on the event loop: NeedStore).
    Anything that would write raises NeedWrite, before it touches the store."""

    def __init__(self, store: Any, *, allowed: bool) -> None:
        self._store = store
        self._allowed = allowed
        self._stack: ExitStack | None = None
        self._session: Any = None

    def _open(self) -> Any:
        if self._session is None:
            if not self._allowed:
                raise NeedStore()
            from sqlalchemy import event

            stack = ExitStack()
            session = stack.enter_context(self._store.transaction(write=False))
            event.listen(session, "before_flush", _refuse_flush)
            event.listen(session, "do_orm_execute", _refuse_dml)
            self._stack, self._session = stack, session
        return self._session

    def __getattr__(self, name: str) -> Any:
        if name in WRITES:
            raise NeedWrite()
        return getattr(self._open(), name)

    def end(self, failed: bool) -> None:
        """End the read transaction, if one began (rolled back when `failed`, raising what the store raises)."""
        stack, self._stack, self._session = self._stack, None, None
        if stack is not None:
            if failed:
                stack.__exit__(*sys.exc_info())
            else:
                stack.close()


class _Capture:
    """The writer of a ctx that reads: the rows it logs are kept for the journal; an insert is a write."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    def append(self, model: Any, row: dict[str, Any]) -> None:
        if model.__tablename__ != "activity_log":
            raise NeedWrite()
        self.rows.append(row)

    def insert(self, model: Any, row: dict[str, Any]) -> Any:
        raise NeedWrite()

    def next_pk(self, model: Any) -> int:
        raise NeedWrite()

    def batched(self) -> Any:
        raise NeedWrite()

    def flush(self) -> None:
        pass


@dataclass
class Reading(Ctx):
    """A ctx over a LazySession and the memo of the store's current version: what it logs waits in `rows` for
    the journal; `volatile` says the answer depends on the time as well (changes.volatile)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    volatile: bool = False
    read_at: float = 0.0  # time.monotonic() before the version was asked: what it reads is no older


def _reading(state: Any, *, allowed: bool) -> Reading:
    read_at = time.monotonic()
    version = state.watch.version()  # before anything is read: a change after it is a newer version's
    ctx = Reading.from_env(LazySession(state.store, allowed=allowed))
    ctx.read_at = read_at
    ctx.memo = state.memo.at(version)
    ctx._writer = _Capture(ctx.rows)  # noqa: SLF001 - the ctx's writer is what it logs through
    return ctx


def attempt(state: Any, answer: Callable[[Ctx], T], *, on_loop: bool, defer: bool = False) -> T:
    """answer(ctx) from the memo, reading what it lacks in a read transaction (NeedStore on the loop instead);
    its log rows go to the journal once it has answered (`defer`: they may wait for the next batch). NeedWrite
    when it writes."""
    ctx = _reading(state, allowed=not on_loop)
    session = ctx.session
    try:
        result = answer(ctx)
    except BaseException:
        session.end(True)
        raise
    session.end(False)
    try:
        state.journal.append(ctx.rows, timeout=None if on_loop else state.store.timeout, defer=defer)
    except changes.Busy:
        if on_loop:
            raise NeedStore() from None  # wait for the store in a worker thread, never on the loop
        raise StoreError("StoreBusy", f"The store '{state.store.where}' stayed locked by another process for "
                         f"{state.store.timeout:g} s; try again, or wait longer with MI_BUSY_TIMEOUT (seconds).") from None
    return result


def read(state: Any, answer: Callable[[Ctx], T], *, on_loop: bool = False, defer: bool = False) -> T:
    """answer(ctx) as a request that reads: from memory when it can, else in a read transaction; when it writes,
    in a write transaction, its rows logged in it, as every request was once answered. On the loop (`on_loop`),
    NeedStore or NeedWrite says to call again from a worker thread. `defer`: its log rows (sign-ins) may be
    written with the next batch (server/journal)."""
    if state.watch is None:  # no watch (a store of another kind): every answer is a write transaction
        return _written(state, answer)
    if on_loop:
        return attempt(state, answer, on_loop=True, defer=defer)
    try:
        return attempt(state, answer, on_loop=False, defer=defer)
    except NeedWrite:
        return _written(state, answer)


def _written(state: Any, answer: Callable[[Ctx], T]) -> T:
    with state.store.transaction(write=True) as session:
        return answer(Ctx.from_env(session))


async def answer(state: Any, respond: Callable[[Ctx], T]) -> T:
    """respond(ctx) on the event loop when all it needs is in memory (SQLite's watch is asked in microseconds),
    else in a worker thread, as read() answers it."""
    from starlette.concurrency import run_in_threadpool

    if state.watch is not None and state.watch.cheap:
        try:
            return read(state, respond, on_loop=True)
        except (NeedStore, NeedWrite):
            pass
    return await run_in_threadpool(read, state, respond)


REPLAY_BODY_LIMIT = 64 * 1024  # a longer answer (a big listing) is made anew each time rather than kept


@dataclass(frozen=True)
class _Replay:
    status: int
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    rows: tuple[dict[str, Any], ...]  # as logged, but their time


def replayed(ctx: Ctx, key: Any, compute: Callable[[], Response]) -> Response:
    """compute()'s answer, or the answer it gave for `key` under the store's current version, with the rows it
    logged logged again (now). For an answer that is a function of the store and `key` alone: one that depends
    on the time too marks itself changes.volatile and is not kept."""
    memo = changes.shared(ctx)
    if memo is None or not isinstance(ctx, Reading):
        return compute()
    hit = memo.get(key)
    if hit is not None:
        now = ctx.now()
        for row in hit.rows:
            ctx.rows.append({**row, "time": now})
            ctx.changes += 1
        response = Response(hit.body, status_code=hit.status)
        response.raw_headers = list(hit.headers)
        return response
    mark, was = len(ctx.rows), ctx.volatile
    ctx.volatile = False
    response = compute()
    if not ctx.volatile and getattr(response, "background", None) is None and isinstance(response.body, bytes) \
            and len(response.body) <= REPLAY_BODY_LIMIT:
        memo[key] = _Replay(response.status_code, response.body, tuple(response.raw_headers), tuple(ctx.rows[mark:]))
    ctx.volatile = ctx.volatile or was
    return response
