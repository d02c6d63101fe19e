"""The domain: every rule and state change of the simulated tenant. Never commits, never prints."""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

from sqlmodel import Session

from mi_cli.models import ActivityLog, Meta


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class Ctx:
    """What every service call works in: one transaction, a clock, and the GUID source."""

    session: Session
    clock: Callable[[], datetime] = utcnow
    seed: str | None = None  # MI_SEED: GUIDs become a function of (seed, how many were made before)
    caller: str = "user"
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def from_env(cls, session: Session) -> "Ctx":
        return cls(session, seed=os.environ.get("MI_SEED") or None, caller=os.environ.get("USER") or "user")

    def now(self) -> datetime:
        return self.clock()

    def new_guid(self) -> str:
        if self.seed is None:
            return str(uuid.uuid4())
        # The counter lives in the store, so a sequence of commands in separate processes
        # gives the same GUIDs on every run with the same seed.
        counter = self.session.get(Meta, "guid_counter")
        if counter is None:
            counter = Meta(key="guid_counter", value="0")
        n = int(counter.value) + 1
        counter.value = str(n)
        self.session.add(counter)
        digest = hashlib.sha256(f"{self.seed}:{n}".encode()).digest()
        return str(uuid.UUID(bytes=digest[:16], version=4))

    def log(self, operation: str, target: str, *, status: str = "Succeeded", detail: str | None = None) -> None:
        self.session.add(
            ActivityLog(time=self.now(), operation=operation, target=target, caller=self.caller, status=status, detail=detail)
        )

    def warn(self, message: str) -> None:
        self.warnings.append(message)
