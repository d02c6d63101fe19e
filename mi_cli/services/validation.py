"""Azure's rules for names and tags, with Azure's error codes and texts."""

from __future__ import annotations

import re

from mi_cli.catalog import NameRule
from mi_cli.errors import ValidationError

GROUP_NAME = re.compile(r"^[-\w._()]+$")
UAMI_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
FIC_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{2,119}$")
TAG_NAME_FORBIDDEN = set('<>%&\\?/')
MAX_TAGS = 50


def group_name(name: str) -> str:
    if not name or len(name) > 90 or not GROUP_NAME.match(name) or name.endswith("."):
        raise ValidationError(
            "InvalidResourceGroup",
            f"The resource group name '{name}' is invalid: it must be 1 to 90 characters of alphanumerics, "
            "underscores, parentheses, hyphens and periods, and cannot end in a period.",
        )
    return name


def uami_name(name: str) -> str:
    if not (3 <= len(name) <= 128) or not UAMI_NAME.match(name):
        raise ValidationError(
            "InvalidResourceName",
            f"Resource name '{name}' is invalid. A user-assigned identity name must be 3 to 128 characters of "
            "alphanumerics, hyphens and underscores, and start with a letter or number.",
        )
    return name


def fic_name(name: str) -> str:
    if not FIC_NAME.match(name):
        raise ValidationError(
            "BadRequest",
            f"Federated Identity Credential name '{name}' is invalid. It must be 3 to 120 characters of "
            "alphanumerics, hyphens and underscores, and start with a letter or number.",
        )
    return name


def resource_name(name: str, rule: NameRule, type_name: str) -> str:
    if not (rule.min <= len(name) <= rule.max) or not re.match(rule.pattern, name):
        raise ValidationError(
            "InvalidResourceName",
            f"The resource name '{name}' is invalid for type '{type_name}': it must be {rule.min} to {rule.max} "
            f"characters, {rule.text}.",
        )
    return name


def check_tags(tags: dict[str, str]) -> dict[str, str]:
    """Azure's tag rules: at most 50; names without <>%&\\?/ or control characters, up to 512; values up to 256."""
    for name, value in tags.items():
        if not name.strip():
            raise ValidationError("InvalidTagName", "A tag has an empty name.")
        if any(c in TAG_NAME_FORBIDDEN or ord(c) < 32 for c in name):
            raise ValidationError(
                "InvalidTagNameCharacters",
                f"The tag names '{name}' have reserved characters '<,>,%,&,\\,?,/' or control characters.",
            )
        if len(name) > 512:
            raise ValidationError("InvalidTagNameLength", f"The tag name '{name[:40]}...' exceeds the maximum length of 512.")
        if len(value) > 256:
            raise ValidationError("InvalidTagValueLength", f"The value of tag '{name}' exceeds the maximum length of 256.")
    if len(tags) > MAX_TAGS:
        raise ValidationError("InvalidTagCount", f"{len(tags)} tags were given; a resource can have at most {MAX_TAGS}.")
    return tags


def parse_tags(pairs: list[str] | None) -> dict[str, str] | None:
    """az's `--tags k=v k2=v2` form; `k` alone is an empty value; a lone "" clears all tags."""
    if pairs is None:
        return None
    if pairs == [""]:
        return {}
    tags: dict[str, str] = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        if not name.strip():
            raise ValidationError("InvalidTagName", f"The tag '{pair}' has an empty name; use --tags key=value.")
        tags[name.strip()] = value
    return check_tags(tags)
