"""Reading the activity log: every change (and, later, every token) with time, caller and result."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from sqlmodel import select

from mi_cli.errors import ValidationError
from mi_cli.models import ActivityLog
from mi_cli.services import Ctx

_DURATION = re.compile(r"^(\d+)([smhd])$")


def parse_since(text: str, now: datetime) -> datetime:
    """An ISO 8601 time, or a duration back from now: 30m, 2h, 7d."""
    m = _DURATION.match(text.strip())
    if m:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[m.group(2)]
        try:
            return now - timedelta(**{unit: int(m.group(1))})
        except OverflowError:  # further back than datetime reaches: everything
            return datetime.min.replace(tzinfo=timezone.utc)
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValidationError(
            "InvalidParameter", f"--since '{text}' is neither an ISO 8601 time nor a duration such as 30m, 2h or 7d."
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def entries(
    ctx: Ctx,
    *,
    since: str | None = None,
    operation: str | None = None,
    target: str | None = None,
    caller: str | None = None,
    principal: str | None = None,
    status: str | None = None,
    limit: int | None = None,
) -> list[ActivityLog]:
    stmt = select(ActivityLog)
    if since:
        stmt = stmt.where(ActivityLog.time >= parse_since(since, ctx.now()).astimezone(timezone.utc))
    if operation:
        stmt = stmt.where(ActivityLog.operation.icontains(operation, autoescape=True))
    if target:
        stmt = stmt.where(ActivityLog.target.icontains(target, autoescape=True))
    if caller:
        stmt = stmt.where(ActivityLog.caller.icontains(caller, autoescape=True))
    if principal:
        # a sign-in's caller is the identity's principal; an assignment's detail names its principal
        stmt = stmt.where(ActivityLog.caller.icontains(principal, autoescape=True)
                          | ActivityLog.detail.icontains(principal, autoescape=True))
    if status:
        stmt = stmt.where(ActivityLog.status.icontains(status, autoescape=True))
    if limit is not None:
        if limit < 1:
            raise ValidationError("InvalidParameter", "--limit must be at least 1.")
        # the newest `limit` entries, shown oldest first
        rows = ctx.session.exec(stmt.order_by(ActivityLog.pk.desc()).limit(limit)).all()
        return list(reversed(rows))
    return list(ctx.session.exec(stmt.order_by(ActivityLog.pk)).all())
