"""The activity-log rows of requests answered without a write transaction, written for the server."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

from mi_cli.changes import Busy, Watch

# A row is written before its request is answered, unless it may wait (`defer`): a sign-in on an SQLite store,
# whose rows are written together BATCH_SECONDS later. While rows wait, the watch holds the store's log lock
# (changes.SqliteWatch.hold): `mi log` waits for them (changes.settle), so that what was answered before it
# started is in what it shows. A request that finds a write in flight leaves its rows to it. When another
# process holds the store's write lock, a request waits for it as a write transaction would (the store's busy
# timeout) and is refused as busy if it stays held: no answer is given whose row could not be written.
# 20 ms: a sign-in waits at most that long for mi log (which waits for it); writing a batch every 2 ms cost
# the token endpoint about a tenth of its rate in commits and WAL pages.
BATCH_SECONDS = 0.02
RETRY_FIRST, RETRY_MOST = 0.002, 0.05  # seconds between tries while another writer holds the store
CHECKPOINT_ROWS = 20_000  # rows written between checkpoints of an SQLite store's WAL (the watch's connection makes none)


class Journal:
    """Rows of the activity log waiting to be written through the store's watch (their commits are no change:
    changes.Watch.write_log). append() may be called from any thread, the event loop's included."""

    def __init__(self, watch: Watch) -> None:
        self._watch = watch
        self._batches = hasattr(watch, "hold")  # rows may wait only where readers can wait for them
        self._pending: list[dict[str, Any]] = []  # rows of requests answered (or being answered), not yet written
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._writing = False  # a write is in flight (a request's, or the background thread's)
        self._due: float | None = None  # when the background thread writes the rows waiting
        self._held = False  # the log lock is held for rows waiting
        self._stalled = False  # the last write found the store held by another writer, and none has succeeded since
        self._closed = False
        self._thread: threading.Thread | None = None
        self._since_checkpoint = 0
        self._checkpoint_due = False
        self._reported = 0.0
        self.written = 0  # rows written so far

    def append(self, rows: list[dict[str, Any]], *, timeout: float | None = None, defer: bool = False) -> None:
        """`rows` written before this returns, or taken by the write in flight, or (`defer`, on a store whose
        readers wait for them) left to the next batch. While another process holds the store: Busy at once without
        `timeout` (on the event loop), else after waiting `timeout` seconds for it; then nothing of `rows` is kept."""
        if not rows:
            return
        if defer and self._batches and not self._stalled and self._defer(rows):
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = RETRY_FIRST
        while True:
            with self._lock:
                if self._writing and not self._stalled:
                    self._pending.extend(rows)  # the write in flight takes them before it ends
                    self._due = 0.0
                    return
                lead = not self._writing
                if lead:
                    self._writing = True
                    batch, self._pending, self._due = self._pending + rows, [], None
            if lead and self._lead(batch, len(rows)):
                return
            if deadline is None or time.monotonic() >= deadline:
                raise Busy("another writer holds the store")
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, RETRY_MOST)

    def _defer(self, rows: list[dict[str, Any]]) -> bool:
        """Leave `rows` to the next batch (True), or say they are to be written now: the journal is closed or
        stalled, a reader waits for the rows held, or (when rows begin to wait) another process holds the store.
        While rows wait they are written together, and a write that finds the store held stalls the journal, so
        that later requests wait for the store as a write transaction would."""
        with self._lock:
            if self._closed or self._stalled:
                return False
            if self._held:
                self._queue(rows)
                return True
        if not self._watch.writable():  # rows begin to wait: only while they can be written
            return False
        with self._lock:
            if self._closed or self._stalled:
                return False
            if not self._held:
                if not self._watch.hold():  # a reader is waiting for the rows held: write these now
                    return False
                self._held = True
            self._queue(rows)
            return True

    def _queue(self, rows: list[dict[str, Any]]) -> None:
        """(Holding the lock, the log lock held.) `rows` wait for the next batch."""
        self._pending.extend(rows)
        if self._due is None and not self._writing:
            self._due = time.monotonic() + BATCH_SECONDS
            self._start()
            self._wake.notify_all()

    def _lead(self, batch: list[dict[str, Any]], mine: int) -> bool:
        """Write `batch` (the rows waiting, then this request's `mine` last); False (this request's rows not
        written, the others kept) when the store is held. Rows that arrive meanwhile go to the background thread."""
        try:
            self._write(batch)
        except Exception as exc:  # noqa: BLE001 - busy, or the store failed: this request's rows are not written
            with self._lock:
                self._pending[:0] = batch[:len(batch) - mine]  # rows of requests answered already stay
                self._stalled = True
                self._writing = False
                self._after_write()
            if not isinstance(exc, Busy):
                raise
            return False
        with self._lock:
            self._writing = False
            self._after_write()
        return True

    def _after_write(self) -> None:
        """(Holding the lock, no write in flight.) Rows that wait are written by the background thread now (they
        were answered), or after BATCH_SECONDS; with none left the log lock goes."""
        if self._pending:
            if self._due is None:
                self._due = 0.0 if not self._stalled else time.monotonic() + RETRY_FIRST
            self._start()
        elif self._held:
            self._watch.release()
            self._held = False
            self._due = None
        self._wake.notify_all()

    def _write(self, batch: list[dict[str, Any]], *, wait: bool = False) -> None:
        self._watch.write_log(batch, wait=wait)
        self._stalled = False
        self.written += len(batch)
        self._since_checkpoint += len(batch)
        if self._since_checkpoint >= CHECKPOINT_ROWS and hasattr(self._watch, "checkpoint"):
            self._since_checkpoint = 0
            with self._lock:  # never on a request's time: the background thread does it
                self._checkpoint_due = True
                self._start()
                self._wake.notify_all()

    def _start(self) -> None:
        if self._thread is None and not self._closed:
            self._thread = threading.Thread(target=self._run, name="mi-journal", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        delay = RETRY_FIRST
        while True:
            with self._lock:
                while True:
                    if self._checkpoint_due or (self._closed and not (self._pending and not self._writing)):
                        break
                    if self._pending and not self._writing and self._due is not None:
                        wait = self._due - time.monotonic()
                        if wait <= 0:
                            break
                        self._wake.wait(wait)
                    else:
                        self._wake.wait()
                due, self._checkpoint_due = self._checkpoint_due, False
                batch: list[dict[str, Any]] = []
                if self._pending and not self._writing:
                    batch, self._pending, self._due = self._pending, [], None
                    self._writing = True
                elif self._closed and not due:
                    return
            if due:
                self._watch.checkpoint()
            if not batch:
                continue
            try:
                self._write(batch)
                delay = RETRY_FIRST
                failure: Exception | None = None
            except Exception as exc:  # noqa: BLE001 - busy (another writer) or a failing store: try again soon
                failure = exc
            with self._lock:
                self._writing = False
                if failure is not None:
                    self._pending[:0] = batch
                    self._stalled = True
                    if self._closed:  # close() writes what is left, waiting for the store as a command would
                        self._wake.notify_all()
                        return
                    self._due = time.monotonic() + delay
                    delay = min(delay * 2, RETRY_MOST)
                elif self._pending and self._due is None:
                    self._due = time.monotonic() + BATCH_SECONDS  # rows deferred meanwhile: the next batch
                self._after_write()
            if failure is not None:
                self._report(failure)

    def _report(self, exc: Exception) -> None:
        if isinstance(exc, Busy):
            return
        now = time.monotonic()
        if now - self._reported > 60:  # once a minute at most: a store that is gone fails every try
            self._reported = now
            print(f"mi serve: writing the activity log failed ({type(exc).__name__}: {exc}); its rows are kept and "
                  "tried again.", file=sys.stderr, flush=True)

    def close(self) -> int:
        """Write every row still waiting (waiting for the store's lock as long as a command would), then stop the
        background thread. Returns how many rows could not be written (0 unless the store failed)."""
        with self._lock:
            self._closed = True
            self._wake.notify_all()
            while self._writing:  # the write in flight finishes (or gives up) first
                self._wake.wait(0.05)
            self._writing = True
            batch, self._pending, self._due = self._pending, [], None
        left = 0
        if batch:
            try:
                self._write(batch, wait=True)
            except Exception as exc:  # noqa: BLE001 - said, with the count
                left = len(batch)
                print(f"mi serve: {left:,} activity-log rows could not be written at the stop: {type(exc).__name__}: "
                      f"{exc}", file=sys.stderr, flush=True)
        with self._lock:
            self._writing = False
            if self._held:
                self._watch.release()
                self._held = False
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(5)
        return left
