"""The tenant and its subscriptions: one default of each, created on first use."""

from __future__ import annotations

from sqlmodel import select

from mi_cli import ids
from mi_cli.errors import NotFoundError, ValidationError
from mi_cli.models import Subscription, Tenant
from mi_cli.services import Ctx

DEFAULT_SUBSCRIPTION_NAME = "mi-subscription"


def default_tenant(ctx: Ctx, *, create: bool = True) -> Tenant | None:
    tenant = ctx.session.exec(select(Tenant).where(Tenant.is_default == True)).first()  # noqa: E712
    if tenant is None and create:
        tenant = Tenant(id=ctx.new_guid(), display_name="mi tenant", is_default=True, created_at=ctx.now())
        ctx.session.add(tenant)
        ctx.session.flush()
        ctx.log("Microsoft.Resources/tenants/write", f"/tenants/{tenant.id}")
    return tenant


def default_subscription(ctx: Ctx, *, create: bool = True) -> Subscription | None:
    sub = ctx.session.exec(select(Subscription).where(Subscription.is_default == True)).first()  # noqa: E712
    if sub is None and create:
        tenant = default_tenant(ctx)
        sub = Subscription(
            id=ctx.new_guid(), tenant_id=tenant.id, name=DEFAULT_SUBSCRIPTION_NAME, is_default=True, created_at=ctx.now()
        )
        ctx.session.add(sub)
        ctx.session.flush()
        ctx.log("Microsoft.Resources/subscriptions/write", ids.subscription_id(sub.id))
    return sub


def find_subscription(ctx: Ctx, name_or_id: str | None, *, create: bool = True) -> Subscription | None:
    """The subscription named (by GUID or name, case-insensitively), or the default one."""
    if not name_or_id:
        return default_subscription(ctx, create=create)
    wanted = ids.key(name_or_id.strip())
    for sub in ctx.session.exec(select(Subscription)).all():
        if ids.key(sub.id) == wanted or ids.key(sub.name) == wanted:
            return sub
    raise NotFoundError(
        "SubscriptionNotFound",
        f"The subscription '{name_or_id}' could not be found. See 'mi subscription list'.",
    )


def subscription_by_id(ctx: Ctx, sub_id: str) -> Subscription | None:
    return next((s for s in ctx.session.exec(select(Subscription)).all() if ids.same(s.id, sub_id)), None)


def create_subscription(ctx: Ctx, name: str, *, make_default: bool = False) -> Subscription:
    name = name.strip()
    if not name or len(name) > 64:
        raise ValidationError("InvalidSubscriptionName", "A subscription name must be 1 to 64 characters.")
    default_subscription(ctx)  # the tenant and the first subscription exist before any other
    existing = ctx.session.exec(select(Subscription)).all()
    for sub in existing:
        if ids.same(sub.name, name):
            if make_default and not sub.is_default:
                _make_default(ctx, sub, existing)
            return sub
    tenant = default_tenant(ctx)
    sub = Subscription(id=ctx.new_guid(), tenant_id=tenant.id, name=name, is_default=False, created_at=ctx.now())
    ctx.session.add(sub)
    if make_default:
        _make_default(ctx, sub, existing)
    ctx.session.flush()
    ctx.log("Microsoft.Resources/subscriptions/write", ids.subscription_id(sub.id))
    return sub


def _make_default(ctx: Ctx, sub: Subscription, others: list[Subscription]) -> None:
    for other in others:
        if other.is_default:
            other.is_default = False
            ctx.session.add(other)
    ctx.session.flush()
    sub.is_default = True
    ctx.session.add(sub)


def list_subscriptions(ctx: Ctx) -> list[Subscription]:
    return list(ctx.session.exec(select(Subscription).order_by(Subscription.created_at)).all())

