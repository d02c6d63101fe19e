"""The resource-type catalog and Azure's region names, shipped as package data."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from mi_cli.errors import ValidationError, shown


@dataclass(frozen=True)
class NameRule:
    min: int
    max: int
    pattern: str
    text: str


# ARM's generic rule for a resource name where a type documents none of its own: 1-260, none of
# <>*%&:\?/+#| or control characters, not ending with a period or space (the shape of the "Can't use ...
# or control characters" rows of resource-name-rules.md). A type's own rule is its catalog entry's
# `nameRule`, from the same page (ms.date 03/14/2025). Patterns are matched with re.fullmatch.
GENERIC_NAME_RULE = NameRule(1, 260, r"[^<>*%&:\\?/+#|\x00-\x1f\x7f-\x9f]*[^<>*%&:\\?/+#|\x00-\x1f\x7f-\x9f. ]",
                             "no <>*%&:\\?/+#| or control characters, and not ending with a period or space")


@dataclass(frozen=True)
class ResourceType:
    type: str
    system_assigned: bool
    user_assigned: bool
    aliases: tuple[str, ...] = ()
    user_assigned_limit: int | None = None  # None: Azure documents no number
    limit_source: str | None = None
    system_always_on: bool = False
    audience: str | None = None
    name_rule: NameRule = GENERIC_NAME_RULE
    # identity.type with both identities, as the provider's API spells it (Compute and Web with a space,
    # common-types' ManagedServiceIdentity without); None where the API has no such value, so the type
    # takes one kind of identity at a time (AKS, Logic Apps workflows, SignalR, ...)
    identity_type_both: str | None = "SystemAssigned,UserAssigned"
    identity_type_source: str | None = None

    @property
    def namespace(self) -> str:
        return self.type.split("/", 1)[0]

    @property
    def parent_type(self) -> str | None:
        parts = self.type.split("/")
        return "/".join(parts[:-1]) if len(parts) > 2 else None


@dataclass(frozen=True)
class Catalog:
    types: tuple[ResourceType, ...]
    default_user_assigned_limit: int
    alias_kinds: dict[str, str]

    def resolve(self, text: str) -> tuple[ResourceType, str | None]:
        """A type or alias, case-insensitively, with the `kind` an alias implies (functionapp)."""
        found = _index(self).get(text.strip().casefold())
        if found is not None:
            return found
        raise ValidationError(
            "InvalidResourceType",
            f"The resource type '{shown(text)}' could not be found in the catalog. {self.suggest(text)}"
            "See 'mi resource types' for the types and aliases that exist.",
        )

    def suggest(self, text: str) -> str:
        """"Did you mean 'vm'? " for a misspelt type or alias: the closest aliases and types, or nothing."""
        import difflib

        wanted = text.strip().casefold()
        if not wanted:
            return ""
        index = _index(self)
        last = {rt.type.rsplit("/", 1)[-1].casefold(): rt.type.casefold() for rt in self.types}
        if wanted in last:  # a type's last segment alone: sites, vaults
            scored = [(1.0, last[wanted])]
        else:
            scored = []
            for spelled in index:
                matcher = difflib.SequenceMatcher(None, wanted, spelled)
                if matcher.real_quick_ratio() >= 0.6 and matcher.quick_ratio() >= 0.6 and matcher.ratio() >= 0.6:
                    scored.append((matcher.ratio(), spelled))
            scored.sort(key=lambda hit: (-hit[0], hit[1]))
            scored = [hit for hit in scored if hit[0] >= scored[0][0] - 0.08] if scored else []
            if not scored and "/" not in wanted:  # a type's last segment, misspelt: virtualmachine
                scored = [(1.0, last[hit]) for hit in difflib.get_close_matches(wanted, list(last), n=2, cutoff=0.8)]
        # one suggestion a type, at most three: its alias when that is what was misspelt, else the type
        chosen: list[str] = []
        seen: set[str] = set()
        for _, hit in scored:
            rt = index[hit][0]
            if rt.type not in seen and len(chosen) < 3:
                seen.add(rt.type)
                chosen.append(hit if hit in rt.aliases else rt.type)
        return f"Did you mean {' or '.join(repr(c) for c in chosen)}? " if chosen else ""

    def get(self, type_name: str) -> ResourceType:
        return self.resolve(type_name)[0]

    def user_assigned_limit(self, rt: ResourceType) -> int:
        return rt.user_assigned_limit or self.default_user_assigned_limit


_INDEXES: dict[int, dict[str, tuple[ResourceType, str | None]]] = {}


def _index(cat: "Catalog") -> dict[str, tuple[ResourceType, str | None]]:
    """Types and aliases by their lowercase spelling, built once (bulk applies resolve 100,000s)."""
    index = _INDEXES.get(id(cat))
    if index is None:
        index = {}
        for rt in cat.types:
            for alias in rt.aliases:
                index.setdefault(alias, (rt, cat.alias_kinds.get(alias)))
            index[rt.type.casefold()] = (rt, None)
        _INDEXES[id(cat)] = index
    return index


def _read(name: str):
    return json.loads(resources.files(__package__).joinpath(name).read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def catalog() -> Catalog:
    data = _read("resource_types.json")
    types = tuple(
        ResourceType(
            type=t["type"],
            system_assigned=t["systemAssigned"],
            user_assigned=t["userAssigned"],
            aliases=tuple(t.get("aliases", ())),
            user_assigned_limit=t.get("userAssignedLimit"),
            limit_source=t.get("limitSource"),
            system_always_on=t.get("systemAlwaysOn", False),
            audience=t.get("audience"),
            name_rule=NameRule(**t["nameRule"]) if "nameRule" in t else GENERIC_NAME_RULE,
            identity_type_both=t.get("identityTypeBoth", "SystemAssigned,UserAssigned"),
            identity_type_source=t.get("identityTypeSource"),
        )
        for t in data["types"]
    )
    return Catalog(types, data["defaultUserAssignedLimit"], data["aliasKinds"])


@lru_cache(maxsize=1)
def regions() -> dict[str, str]:
    """Azure public region names (`az account list-locations` name -> displayName)."""
    return {r["name"]: r["displayName"] for r in _read("regions.json")}


def normalise_location(text: str, *, for_what: str) -> str:
    """Accept a region name or display name, any case or spacing ("West Europe"); return the name."""
    wanted = text.replace(" ", "").casefold()
    if wanted in regions():
        return wanted
    raise ValidationError(
        "LocationNotAvailableForResourceGroup" if for_what == "resource group" else "LocationNotAvailableForResourceType",
        f"The provided location '{shown(text)}' is not available for {for_what}. "
        f"List of available regions is '{','.join(sorted(regions()))}'.",
        bound=False,  # Azure's text lists every region; only the location given is echoed, through shown()
    )
