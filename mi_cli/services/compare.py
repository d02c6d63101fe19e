"""The seed's characteristic table of the two kinds of managed identity, with this store's facts."""

from __future__ import annotations

from mi_cli.services import Ctx
from mi_cli.services.explore import load

CHARACTERISTICS = [
    (
        "Creation",
        "Created as part of an Azure resource (for example, an Azure virtual machine or Azure App Service)",
        "Created as a stand-alone Azure resource",
    ),
    (
        "Lifecycle",
        "Shared lifecycle with the Azure resource that the managed identity is created with. When the parent "
        "resource is deleted, the managed identity is deleted as well.",
        "Independent life-cycle. Must be explicitly deleted.",
    ),
    (
        "Sharing across Azure resources",
        "Cannot be shared, it can only be associated with a single Azure resource.",
        "Can be shared, the same user-assigned managed identity can be associated with more than one Azure resource.",
    ),
]


def _names(items: list[str], most: int = 6) -> str:
    shown = ", ".join(items[:most])
    return shown + (f" and {len(items) - most} more" if len(items) > most else "")


def table(ctx: Ctx) -> list[dict]:
    pic = load(ctx)  # which attachments are live, and who holds each identity, worked out once there
    by_pk = {r.pk: r for r in pic.resources}
    with_system = [r.name for r in pic.resources if r.system_principal_id]
    uamis = pic.uamis
    holders = {u.name: [r.name for r in pic.holders[u.id_key]] for u in uamis if pic.holders.get(u.id_key)}
    dangling = [f"{by_pk[a.resource_pk].name} -> {a.identity_id.rsplit('/', 1)[-1]}" for a in pic.attachments if not pic.is_live(a)]

    creation = (
        f"{len(with_system)} system-assigned, each created with its resource"
        + (f" ({_names(with_system)})" if with_system else "")
        + f"; {len(uamis)} user-assigned, created on their own"
        + (f" ({_names([u.name for u in uamis])})" if uamis else "")
        + "."
    )
    lifecycle_parts = [f"deleting {n} deletes its system identity" for n in with_system[:4]]
    if len(with_system) > 4:
        lifecycle_parts.append(f"and so for {len(with_system) - 4} more")
    lifecycle_parts += [f"{u.name} lives until deleted" for u in uamis[:4]]
    if dangling:
        lifecycle_parts.append(f"deleted but still referenced (dangling): {_names(dangling)}")
    lifecycle = ("; ".join(lifecycle_parts) or "nothing yet: create a resource and an identity") + "."
    shared = [f"{name} is shared by {_names(users)}" for name, users in holders.items() if len(users) > 1]
    single = [f"{name} is on {users[0]}" for name, users in holders.items() if len(users) == 1]
    unused = [u.name for u in uamis if u.name not in holders]
    sharing_parts = shared + single
    if unused:
        sharing_parts.append(f"attached to nothing: {_names(unused)}")
    if with_system:
        sharing_parts.append(f"each system identity belongs to its one resource ({_names(with_system)})")
    sharing = ("; ".join(sharing_parts) or "no identities yet") + "."

    facts = [creation, lifecycle, sharing]
    return [
        {"characteristic": c, "systemAssigned": sa, "userAssigned": ua, "inThisStore": fact}
        for (c, sa, ua), fact in zip(CHARACTERISTICS, facts)
    ]



