"""The tenant and its subscriptions: one default of each, created on first use."""

from __future__ import annotations

from sqlmodel import select

from mi_cli import ids
from mi_cli.errors import ConflictError, NotFoundError, ValidationError
from mi_cli.models import Subscription, Tenant
from mi_cli.services import Ctx
from mi_cli.services.validation import no_control

DEFAULT_SUBSCRIPTION_NAME = "mi-subscription"


def default_tenant(ctx: Ctx, *, create: bool = True) -> Tenant | None:
    tenant = ctx.memo.get("tenant")
    if tenant is None:
        tenant = ctx.session.exec(select(Tenant).where(Tenant.is_default == True)).first()  # noqa: E712
    if tenant is None and create:
        tenant = create_tenant(ctx)
    if tenant is not None:
        ctx.memo["tenant"] = tenant
    return tenant


def default_tenant_id(ctx: Ctx) -> str:
    """The default tenant's id (made on first use), kept as text beside the tenant: every service principal
    names it, and an ORM attribute read for each of a bulk apply's 100,000s cost more than the rest of the row."""
    tenant_id = ctx.memo.get("tenant_id")
    if tenant_id is None:
        tenant_id = ctx.memo["tenant_id"] = default_tenant(ctx).id
    return tenant_id


def create_tenant(ctx: Ctx, *, tenant_id: str | None = None, display_name: str = "mi tenant") -> Tenant:
    """The store's one tenant, made on first use (or with the id and name a tenant file gives)."""
    no_control(display_name, what="tenant display name")
    tenant = Tenant(id=(tenant_id or ctx.new_guid()).casefold(), display_name=display_name, is_default=True,
                    created_at=ctx.now())
    ctx.session.add(tenant)
    ctx.session.flush()
    ctx.log("Microsoft.Resources/tenants/write", f"/tenants/{tenant.id}")
    ctx.memo["tenant"], ctx.memo["tenant_id"] = tenant, tenant.id
    return tenant


def default_subscription(ctx: Ctx, *, create: bool = True) -> Subscription | None:
    sub = ctx.session.exec(select(Subscription).where(Subscription.is_default == True)).first()  # noqa: E712
    if sub is None and create:
        sub = create_subscription(ctx, DEFAULT_SUBSCRIPTION_NAME)
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


def create_subscription(ctx: Ctx, name: str, *, subscription_id: str | None = None, make_default: bool = False) -> Subscription:
    """A subscription of the tenant, as a PUT: one of the same name (or id) is returned, made the
    default if asked. The first subscription of a store is its default."""
    name = name.strip()
    if not name or len(name) > 64:
        raise ValidationError("InvalidSubscriptionName", "A subscription name must be 1 to 64 characters.")
    no_control(name, what="subscription name", code="InvalidSubscriptionName")
    existing = list(ctx.session.exec(select(Subscription)).all())
    match = next((s for s in existing if subscription_id and ids.same(s.id, subscription_id)), None) or \
        next((s for s in existing if ids.same(s.name, name)), None)
    if match is not None:
        if subscription_id and not ids.same(match.id, subscription_id):
            raise ConflictError("Conflict", f"A subscription named '{match.name}' exists with id {match.id}.")
        if make_default and not match.is_default:
            _make_default(ctx, match, existing)
            ctx.log("Microsoft.Resources/subscriptions/write", ids.subscription_id(match.id), detail="made the default")
        return match
    tenant = default_tenant(ctx)
    sub = Subscription(id=(subscription_id or ctx.new_guid()).casefold(), tenant_id=tenant.id, name=name,
                       is_default=not existing, created_at=ctx.now())
    ctx.session.add(sub)
    if make_default and existing:
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

