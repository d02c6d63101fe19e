"""Reading the activity log: every change and every token issued or refused, with time, caller and result."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from sqlmodel import Session, select

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
        return list(reversed(_read(ctx, stmt.order_by(ActivityLog.pk.desc()).limit(limit))))
    return _read(ctx, stmt.order_by(ActivityLog.pk))


def _read(ctx: Ctx, stmt) -> list[ActivityLog]:  # noqa: ANN001
    """The rows `stmt` selects. A server of the store may hold sign-ins it answered that are not written yet
    (server/journal): once they are (changes.settle), they are read in a transaction of their own, begun now,
    rather than in the command's, which may have begun before they were written."""
    from mi_cli import changes

    bind = ctx.session.get_bind()
    engine = getattr(bind, "engine", bind)
    if not changes.settle(engine):
        return list(ctx.session.exec(stmt).all())
    with engine.connect() as conn:
        conn.info["write"] = False
        conn.info["deadline"] = None
        with Session(bind=conn, expire_on_commit=False) as session, conn.begin():
            return list(session.exec(stmt).all())
