"""ARM resource ids: build, parse, normalise and compare them case-insensitively."""

from __future__ import annotations

from dataclasses import dataclass

UAMI_TYPE = "Microsoft.ManagedIdentity/userAssignedIdentities"
FIC_TYPE = "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials"
SYSTEM_IDENTITY_SUFFIX = "/providers/Microsoft.ManagedIdentity/identities/default"


def key(value: str) -> str:
    """The comparison key of an id or a name: Azure compares both case-insensitively (rule 11)."""
    return value.casefold()


def same(a: str, b: str) -> bool:
    return key(a) == key(b)


def subscription_id(sub: str) -> str:
    return f"/subscriptions/{sub}"


def group_id(sub: str, group: str) -> str:
    return f"/subscriptions/{sub}/resourceGroups/{group}"


def resource_id(sub: str, group: str, type_name: str, name: str) -> str:
    """Id of a resource; child types (`NS/parent/child`) take `name` as `parent/child`."""
    namespace, *segments = type_name.split("/")
    names = name.split("/")
    path = "/".join(f"{seg}/{n}" for seg, n in zip(segments, names))
    return f"/subscriptions/{sub}/resourceGroups/{group}/providers/{namespace}/{path}"


def uami_id(sub: str, group: str, name: str) -> str:
    # Azure returns user-assigned identity ids with a lowercase `resourcegroups` segment.
    return f"/subscriptions/{sub}/resourcegroups/{group}/providers/{UAMI_TYPE}/{name}"


def system_identity_id(resource: str) -> str:
    return resource + SYSTEM_IDENTITY_SUFFIX


@dataclass(frozen=True)
class ParsedId:
    subscription: str
    group: str | None = None
    namespace: str | None = None
    type_name: str | None = None  # full type, e.g. Microsoft.Web/sites/slots
    name: str | None = None  # for child types: parent/child


def parse(value: str) -> ParsedId | None:
    """Parse a subscription, group or resource id; None when it is not one."""
    parts = value.strip().strip("/").split("/")
    if len(parts) < 2 or key(parts[0]) != "subscriptions" or not parts[1]:
        return None
    sub = parts[1]
    if len(parts) == 2:
        return ParsedId(sub)
    if len(parts) < 4 or key(parts[2]) != "resourcegroups" or not parts[3]:
        return None
    group = parts[3]
    if len(parts) == 4:
        return ParsedId(sub, group)
    rest = parts[4:]
    if key(rest[0]) != "providers" or len(rest) < 4 or len(rest) % 2 != 0:
        return None
    namespace = rest[1]
    pairs = rest[2:]
    types = pairs[0::2]
    names = pairs[1::2]
    if not all(types) or not all(names):
        return None
    return ParsedId(sub, group, namespace, "/".join([namespace, *types]), "/".join(names))


def is_system_identity_id(value: str) -> bool:
    return key(value.rstrip("/")).endswith(key(SYSTEM_IDENTITY_SUFFIX))


def strip_system_identity(value: str) -> str:
    return value.rstrip("/")[: -len(SYSTEM_IDENTITY_SUFFIX)]


def is_within(scope: str, ancestor: str) -> bool:
    """True when `scope` is `ancestor` or lies below it."""
    s, a = key(scope.rstrip("/")), key(ancestor.rstrip("/"))
    return s == a or s.startswith(a + "/")
