"""The domain: every rule and state change of the simulated tenant. Never commits, never prints."""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from sqlmodel import Session

from mi_cli.errors import ConflictError
from mi_cli.models import ActivityLog, Meta
from mi_cli.services.writer import Writer


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


_VERSION_4 = bytes((b & 0x0F) | 0x40 for b in range(256))  # a GUID's 7th byte, as version 4 has it
_RFC_4122 = bytes((b & 0x3F) | 0x80 for b in range(256))  # its 9th byte: RFC 4122's variant
# where each of a GUID's 32 hex digits goes in its 8-4-4-4-12 form
_DIGIT_AT = [k + (k >= 8) + (k >= 12) + (k >= 16) + (k >= 20) for k in range(32)]


def random_guids(n: int) -> list[str]:
    """n version-4 GUIDs from one read of the system's randomness, formatted without UUID objects
    (bulk applies make 100,000s; uuid.uuid4() one at a time costs more than the inserts): all n are
    laid out in one buffer, a digit position of every GUID at a time, each followed by a newline, and split."""
    raw = bytearray(os.urandom(16 * n))
    raw[6::16] = raw[6::16].translate(_VERSION_4)
    raw[8::16] = raw[8::16].translate(_RFC_4122)
    digits = raw.hex().encode()
    text = bytearray(b"-" * (37 * n))
    for k, at in enumerate(_DIGIT_AT):
        text[at::37] = digits[k::32]
    text[36::37] = b"\n" * n
    return text[:-1].decode().split("\n") if n else []


# A row of the activity log holds at most this much of each text: a request's path or header is what a
# client chose (a 15 KB secret name), and a log must not grow by the size of whatever it was sent. Every
# id Azure can hold fits well inside these.
LOG_TARGET_LIMIT = 2_000
LOG_TEXT_LIMIT = 4_000


def _bounded(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}…({len(text):,} characters)"


@dataclass
class Ctx:
    """What every service call works in: one transaction, a clock, and the GUID source."""

    session: Session
    clock: Callable[[], datetime] = utcnow
    seed: str | None = None  # MI_SEED: GUIDs become a function of (seed, how many were made before)
    caller: str = "user"
    warnings: list[str] = field(default_factory=list)
    changes: int = 0  # rows logged so far: a PUT that logged nothing changed nothing
    _writer: Writer | None = None
    _guid_pool: list[str] = field(default_factory=list)
    memo: dict[str, Any] = field(default_factory=dict)  # what one transaction reads once (the tenant)
    journal: list[tuple[str, str]] | None = None  # when a list: (operation, target) of each row logged

    @classmethod
    def from_env(cls, session: Session) -> "Ctx":
        return cls(session, seed=os.environ.get("MI_SEED") or None, caller=os.environ.get("USER") or "user")

    def now(self) -> datetime:
        return self.clock()

    def new_guid(self) -> str:
        if self.seed is None:  # drawn from a pool: one read of the system's randomness for thousands
            if not self._guid_pool:
                self._guid_pool = random_guids(1024)
            return self._guid_pool.pop()
        return self.new_guids(1)[0]

    @property
    def writer(self) -> Writer:
        if self._writer is None:
            self._writer = Writer(self.session)
        return self._writer

    def insert(self, model: Any, row: dict[str, Any]) -> Any:
        """A new row, written now, or buffered inside `ctx.writer.batched()`: the single path and the
        bulk path are the same call."""
        return self.writer.insert(model, row)

    def new_guids(self, n: int) -> list[str]:
        """n GUIDs. With a seed they are a function of (seed, how many were made before); the counter
        lives in the store, so a sequence of commands in separate processes gives the same GUIDs on
        every run, and a batch costs one counter update."""
        if self.seed is None:
            return random_guids(n)
        counter = self.session.get(Meta, "guid_counter") or Meta(key="guid_counter", value="0")
        first = int(counter.value) + 1
        counter.value = str(first + n - 1)
        self.session.add(counter)
        # The seed's own bytes: a seed is only a name for a sequence, so one that is not UTF-8 (its bytes come
        # back from os.environ's surrogate escapes) is as good as any, and a UTF-8 one hashes as it always did.
        prefix = self.seed.encode("utf-8", "surrogateescape") + b":"
        return [str(uuid.UUID(bytes=hashlib.sha256(prefix + str(i).encode()).digest()[:16], version=4))
                for i in range(first, first + n)]

    def log(self, operation: str, target: str, *, status: str = "Succeeded", detail: str | None = None,
            caller: str | None = None) -> None:
        """Every change, and every token issued or refused, is a row of the activity log."""
        self.changes += 1
        if self.journal is not None:
            self.journal.append((operation, target))
        caller = caller or self.caller
        # texts within their limits (nearly all) are kept as they are, without a call for each
        self.writer.append(ActivityLog, {
            "time": self.clock(),
            "operation": operation if len(operation) <= LOG_TEXT_LIMIT else _bounded(operation, LOG_TEXT_LIMIT),
            "target": target if len(target) <= LOG_TARGET_LIMIT else _bounded(target, LOG_TARGET_LIMIT),
            "caller": caller if len(caller) <= LOG_TEXT_LIMIT else _bounded(caller, LOG_TEXT_LIMIT), "status": status,
            "detail": detail if detail is None or len(detail) <= LOG_TEXT_LIMIT else _bounded(detail, LOG_TEXT_LIMIT)})

    def warn(self, message: str) -> None:
        self.warnings.append(message)


def repeat_put(ctx: Ctx, existing, *, location: str, tags: dict | None, group_name: str, operation: str):  # noqa: ANN001, ANN201
    """A create of something that exists is ARM's PUT on it: same object and ids, tags replaced when
    given; a different location is refused with ARM's text, since resources cannot move regions."""
    if existing.location != location:
        raise ConflictError(
            "InvalidResourceLocation",
            f"The resource '{existing.name}' already exists in location '{existing.location}' in resource group "
            f"'{group_name}'. A resource with the same name cannot be created in location '{location}'. "
            "Please select a new resource name.",
        )
    if tags is not None and tags != existing.tags:
        existing.tags = tags
        ctx.session.add(existing)
        ctx.log(operation, existing.arm_id)
    return existing
