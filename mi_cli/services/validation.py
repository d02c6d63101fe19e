"""Azure's rules for names, tags and stored text, with Azure's error codes and texts.

Every pattern is matched against the whole value (re.fullmatch): in a Python regex `$` also matches
before a final newline, which once let "rg\\n" through as a resource group name."""

from __future__ import annotations

import re
import unicodedata

from mi_cli.catalog import NameRule
from mi_cli.errors import ValidationError, shown

# resource-name-rules.md, Microsoft.ManagedIdentity/userAssignedIdentities: 3-128, "Alphanumerics,
# hyphens, and underscores. Start with a letter or number."
UAMI_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
# Azure/azure-rest-api-specs msi ManagedIdentity.json: federatedIdentityCredentialResourceName
# ^[a-zA-Z0-9]{1}[a-zA-Z0-9-_]{2,119}$ (3-120).
FIC_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{2,119}")
# resource-name-rules.md, Microsoft.Resources/resourcegroups: 1-90, "Underscores, hyphens, periods,
# parentheses, and letters or digits as defined by the Char.IsLetterOrDigit function": the Unicode
# categories below (ASCII letters and digits among them); can't end with a period. (The REST spec's
# ^[-\w\._\(\)]+$ is looser: .NET's \w also takes combining marks and connector punctuation.)
GROUP_NAME_PUNCTUATION = frozenset("_-.()")
LETTER_OR_DIGIT = frozenset(("Lu", "Ll", "Lt", "Lm", "Lo", "Nd"))
# resource-name-rules.md, Microsoft.Resources/tagNames: 1-512, "Can't use: <>%&\?/ or control characters";
# tagValues: 0-256. Azure answers InvalidTagNameCharacters with the text used below.
TAG_NAME_FORBIDDEN = frozenset("<>%&\\?/")
MAX_TAGS = 50  # azure-subscription-service-limits: 50 tag name/value pairs per resource
# A GUID as ARM writes one (8-4-4-4-12 hex digits). uuid.UUID also takes braces, "urn:uuid:", no
# hyphens and underscores between digits, which would be stored as the name or id they were typed as.
GUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
# Control characters as .NET's Char.IsControl has them (U+0000-U+001F, U+007F-U+009F), and lone
# surrogates (bytes of the command line that were not UTF-8: no store or terminal can take them).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def is_guid(text: str) -> bool:
    return isinstance(text, str) and GUID.fullmatch(text) is not None


def control_at(value: str) -> int:
    """The index of the first control character (or lone surrogate) of `value`, or -1."""
    found = _CONTROL.search(value)
    return found.start() if found else -1


def no_control(value: str, *, what: str, code: str = "InvalidParameter") -> str:
    """Refuse control characters in text that is stored and shown again. Azure refuses them in names
    and tag names; for free text (descriptions, federated credential fields, display names) Azure
    documents nothing, and mi refuses every C0 and C1 control, tab and newline included, and allows
    none: stored text is shown in one-line tables and error lines, where they could only break the
    layout or drive the terminal."""
    at = control_at(value)
    if at >= 0:
        raise ValidationError(code, f"The {what} contains a control character ('{shown(value[at])}' at position "
                                    f"{at + 1}), which is not allowed: '{shown(value)}'.")
    return value


def group_name(name: str) -> str:
    if not (
        1 <= len(name) <= 90
        and not name.endswith(".")
        and all(c in GROUP_NAME_PUNCTUATION or unicodedata.category(c) in LETTER_OR_DIGIT for c in name)
    ):
        raise ValidationError(
            "InvalidResourceGroup",
            f"The resource group name '{shown(name)}' is invalid: it must be 1 to 90 characters of alphanumerics, "
            "underscores, parentheses, hyphens and periods, and cannot end in a period.",
        )
    return name


def uami_name(name: str) -> str:
    if not (3 <= len(name) <= 128) or not UAMI_NAME.fullmatch(name):
        raise ValidationError(
            "InvalidResourceName",
            f"Resource name '{shown(name, 130)}' is invalid. A user-assigned identity name must be 3 to 128 characters of "
            "alphanumerics, hyphens and underscores, and start with a letter or number.",
        )
    return name


def fic_name(name: str) -> str:
    if not FIC_NAME.fullmatch(name):
        raise ValidationError(
            "BadRequest",
            f"Federated Identity Credential name '{shown(name)}' is invalid. It must be 3 to 120 characters of "
            "alphanumerics, hyphens and underscores, and start with a letter or number.",
        )
    return name


def resource_name(name: str, rule: NameRule, type_name: str) -> str:
    """A name by its type's rule from the catalog; no type allows control characters."""
    if not (rule.min <= len(name) <= rule.max) or control_at(name) >= 0 or not re.fullmatch(rule.pattern, name):
        raise ValidationError(
            "InvalidResourceName",
            f"The resource name '{shown(name)}' is invalid for type '{type_name}': it must be {rule.min} to {rule.max} "
            f"characters, {rule.text}.",
        )
    return name


def check_tags(tags: dict[str, str]) -> dict[str, str]:
    """Azure's tag rules: at most 50; names of 1-512 characters without <>%&\\?/ or control
    characters; values of up to 256. Azure documents "All characters" for values; mi refuses control
    characters in them too (see no_control), with a code of its own. A request body's tags that are no object
    (ARM's JSON) are InvalidRequestContent, as ARM answers them."""
    if not isinstance(tags, dict):
        raise ValidationError("InvalidRequestContent", "The request content was invalid and could not be deserialized: "
                              "'tags must be an object'.")
    if len(tags) > MAX_TAGS:
        raise ValidationError("InvalidTagCount", f"{len(tags)} tags were given; a resource can have at most {MAX_TAGS}.")
    for name, value in tags.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise ValidationError("InvalidTag", f"The tag '{shown(name)}' must have a text name and a text value.")
        if not name.strip():
            raise ValidationError("InvalidTagName", f"The tag name '{shown(name)}' is empty or only blanks.")
        if len(name) > 512:
            raise ValidationError("InvalidTagNameLength", f"The tag name '{shown(name)}' exceeds the maximum length of 512.")
        if control_at(name) >= 0 or any(c in TAG_NAME_FORBIDDEN for c in name):
            raise ValidationError(
                "InvalidTagNameCharacters",
                f"The tag names '{shown(name)}' have reserved characters '<,>,%,&,\\,?,/' or control characters.",
            )
        if len(value) > 256:
            raise ValidationError("InvalidTagValueLength", f"The value of tag '{shown(name)}' exceeds the maximum length of 256.")
        no_control(value, what=f"value of tag '{shown(name)}'", code="InvalidTagValueCharacters")
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
            raise ValidationError("InvalidTagName", f"The tag '{shown(pair)}' has an empty name; use --tags key=value.")
        tags[name.strip()] = value
    return check_tags(tags)
