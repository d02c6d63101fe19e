"""What to do next when a command names something that is not there: the closest names that are, and the
command that lists or creates what was asked for. A step is mi's own words, added after Azure's message
(MiError.add_next_step), which stays as Azure words it. Also the reason a resource gets no token, for the
commands that ask for one (`mi token get`, `mi env`)."""

from __future__ import annotations

import difflib
import shlex
from typing import Iterable

from sqlmodel import select

from mi_cli import ids
from mi_cli.errors import MiError, shown
from mi_cli.models import Resource, ResourceGroup, UserAssignedIdentity
from mi_cli.services import Ctx

MAX_CANDIDATES = 10_000  # names compared with a misspelt one; beyond this, no suggestion (difflib is quadratic-ish)


def arg(value: str) -> str:
    """A value as it would be typed in a shell, inside a suggested command (an id whole)."""
    return shlex.quote(shown(value, 400))


def closest(word: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """The names of `candidates` closest to `word` (case-insensitively), best first; none when far off."""
    folded: dict[str, str] = {}
    for c in candidates:
        folded.setdefault(c.casefold(), c)
        if len(folded) > MAX_CANDIDATES:
            return []
    wanted = word.strip().casefold()
    if not wanted or wanted in folded:
        return []
    return [folded[h] for h in difflib.get_close_matches(wanted, list(folded), n=n, cutoff=0.6)]


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    hits = closest(word, candidates)
    quoted = " or ".join("'" + shown(h) + "'" for h in hits)
    return f"Did you mean {quoted}?" if hits else ""


def _steps(*parts: str) -> str:
    return " ".join(p for p in parts if p)


def _sub_option(subscription: str | None) -> str:
    return f" --subscription {arg(subscription)}" if subscription else ""


def _valid(check, name: str) -> bool:  # noqa: ANN001
    try:
        check(name)
    except MiError:
        return False
    return True


def missing_group(ctx: Ctx, name: str, subscription: str | None = None, sub_id: str | None = None) -> str:
    """ResourceGroupNotFound: a group of a close name, the command that creates it (for a name a group can
    have), and the listing."""
    from mi_cli.services.validation import group_name

    stmt = select(ResourceGroup.name)
    if sub_id is not None:
        stmt = stmt.where(ResourceGroup.subscription_id == sub_id)
    near = did_you_mean(name, ctx.session.exec(stmt.limit(MAX_CANDIDATES + 1)).all())
    sub = _sub_option(subscription)
    listing = f"list the groups with 'mi group list{sub}'."
    if not _valid(group_name, name):
        return _steps(near, listing[0].upper() + listing[1:])
    return _steps(near, f"Create it with 'mi group create -n {arg(name)} -l LOCATION{sub}', or {listing}")


def missing_resource(ctx: Ctx, group: ResourceGroup, name: str, type_text: str | None = None) -> str:
    """ResourceNotFound for a resource of a group: a close name there, and the listing of the group."""
    names = ctx.session.exec(select(Resource.name).where(Resource.group_pk == group.pk).limit(MAX_CANDIDATES + 1)).all()
    near = did_you_mean(name, names)
    if not near and type_text and any(ids.same(n, name) for n in names):
        near = "A resource of that name exists with another type: leave out --type, or see which it is."
    listing = f"mi resource list -g {arg(group.name)}"
    return _steps(near, f"List the resources of '{shown(group.name)}' with '{listing}'.")


def missing_identity(ctx: Ctx, group: ResourceGroup, name: str) -> str:
    """ResourceNotFound for a user-assigned identity: a close name in its group, the listing, the create."""
    from mi_cli.services.validation import uami_name

    names = ctx.session.exec(select(UserAssignedIdentity.name).where(UserAssignedIdentity.group_pk == group.pk)
                             .limit(MAX_CANDIDATES + 1)).all()
    listing = f"List the identities of '{shown(group.name)}' with 'mi identity list -g {arg(group.name)}'"
    create = f", or create it with 'mi identity create -g {arg(group.name)} -n {arg(name)}'" if _valid(uami_name, name) else ""
    return _steps(did_you_mean(name, names), f"{listing}{create}.")


def missing_by_id(kind: str, parsed: ids.ParsedId | None) -> str:
    """ResourceNotFound for an id: the listing of the group the id names."""
    if parsed is None or not parsed.group:
        return ""
    noun = "identities" if kind == "identity" else "resources"
    return f"List the {noun} of '{shown(parsed.group)}' with 'mi {'identity' if kind == 'identity' else 'resource'} list " \
           f"-g {arg(parsed.group)}'."


def add(exc: MiError, step: str) -> MiError:
    return exc.add_next_step(step) if step else exc


# --- why a resource gets no token -------------------------------------------------------------------


def why_no_token(ctx: Ctx, res: Resource, *, selected: bool = False, system_only: bool = False,
                 client_id_option: str = "--client-id") -> str | None:
    """Why a token request of `res` fails, with what to do; None when it would get a token. Without a selector
    (`selected` False), the endpoint's default rule: App Service's (`system_only`: the system-assigned identity
    only) or IMDS's (the system one, else the only user-assigned one). With one, which identities it could have
    named. `client_id_option` is how the command in hand names a client id (--client-id, --identity)."""
    from mi_cli.catalog import catalog
    from mi_cli.services import identities

    rt = catalog().get(res.type)
    name = shown(res.name)
    if not rt.system_assigned and not rt.user_assigned:
        return (f"'{name}' is a {rt.type}, a type that supports no managed identity: it cannot get tokens (see 'mi "
                "resource types' for the types that do).")
    group = ids.parse(res.arm_id)
    where = f"--resource {arg(res.name)} -g {arg(group.group if group and group.group else '')}"
    attached = identities.attachments(ctx, res)
    live = [a for a in attached if identities.is_live(ctx, a)]
    system = bool(res.system_principal_id)
    enable = []
    if rt.system_assigned:
        enable.append(f"'mi identity assign {where}' turns on its system-assigned identity")
    if rt.user_assigned:
        enable.append(f"'mi identity assign {where} --identities NAME' attaches a user-assigned one")
    if not system and not live:
        dangling = " (the user-assigned identities it lists were deleted)" if attached else ""
        return f"'{name}' has no managed identity enabled{dangling}, so it gets no token: {' and '.join(enable)}."
    clients = ", ".join(a.client_id for a in live)
    if selected:
        held = ([f"its system-assigned identity (client id {principals_app_id(ctx, res)})"] if system else []) + \
            ([f"user-assigned client id{'s' if len(live) > 1 else ''} {clients}"] if live else [])
        return f"The identity named is not one of '{name}', which holds {' and '.join(held)}."
    if system:
        return None
    if system_only:
        turn_on = f", or turn its system-assigned one on with 'mi identity assign {where}'" if rt.system_assigned else ""
        return (f"App Service gives a request that names no identity the system-assigned one, which '{name}' does not "
                f"have, so such a request is refused ('Unable to load the proper Managed Identity'): name a user-assigned "
                f"one with {client_id_option} (client id{'s' if len(live) > 1 else ''} {clients}){turn_on}.")
    if len(live) > 1:
        return (f"'{name}' has {len(live)} user-assigned identities and no system-assigned one, so a request that names "
                f"none is refused: name one with {client_id_option} (client ids {clients}).")
    return None


def principals_app_id(ctx: Ctx, res: Resource) -> str:
    from mi_cli.services import principals

    sp = principals.get(ctx, res.system_principal_id)
    return sp.app_id if sp is not None else "?"
