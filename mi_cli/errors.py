"""Domain errors: an Azure error code, a message, and the exit code the CLI gives them. Also the one
place where text bound for a terminal is made inert (`inert`) and where echoed values are bounded
(`shown`, and every MiError's message)."""

from __future__ import annotations

import re

# What a terminal acts on instead of showing: the C0 controls (ESC opens CSI/OSC sequences, CR and BS
# overwrite what is shown), DEL, the C1 controls (U+009B is a one-character CSI), the line and
# paragraph separators, the bidirectional embeddings, overrides and isolates (they reorder what is
# shown), and lone surrogates (bytes of argv that were not UTF-8, which cannot even be written).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")

ECHO_LIMIT = 100  # characters of a long value that an error shows
LONG_RUN = 300  # a run of characters without blanks or quotes longer than this is cut to ECHO_LIMIT
LINE_LIMIT = 1_000  # an error message longer than this is cut
_LONG = re.compile(r"""[^\s'"]{%d,}""" % (LONG_RUN + 1))


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def inert(text: str) -> str:
    """`text` with each character a terminal would act on shown as its escape (`\\x1b`, `\\u202e`);
    any other text, backslashes included, is returned unchanged."""
    if text.isprintable():  # the common case, decided in C: every character above is unprintable
        return text
    return _UNSAFE.sub(_escape, text)


def has_unsafe(text: str) -> bool:
    return _UNSAFE.search(text) is not None


def _cut(text: str, limit: int) -> str:
    return f"{inert(text[:limit])}…({len(text):,} characters)"


def shown(value: object, limit: int = ECHO_LIMIT) -> str:
    """A value as an error or a warning echoes it: inert, and beyond `limit` characters cut, with its
    length (a 50 MB name must not become a 50 MB error line)."""
    text = str(value)
    return inert(text) if len(text) <= limit else _cut(text, limit)


def bounded(message: str) -> str:
    """A message fit for one line on a terminal: inert, each very long run of characters without blanks or
    quotes (an echoed name, id or query result) cut to its first ECHO_LIMIT characters, and the whole cut at
    LINE_LIMIT. Text of ordinary length is returned unchanged."""
    message = inert(message)  # first, so that what is measured is what is shown
    if len(message) > LONG_RUN:
        message = _LONG.sub(lambda m: _cut(m.group(), ECHO_LIMIT), message)
    if len(message) > LINE_LIMIT:
        message = _cut(message, LINE_LIMIT)
    return message


class MiError(Exception):
    """An error a user can cause; rendered as `ERROR: (Code) message`. The message is bounded and made
    inert here, once, for every error: the CLI's line, the token server's bodies and the apply plan
    all show this form. `bound=False` keeps a long message whole (it must then echo user input only
    through `shown`): for texts whose length is mi's own data, as the list of regions."""

    exit_code = 1
    # An error Azure's service would answer (ARM's error body): az prints it in three lines, `ERROR:
    # (Code) Message`, `Code: ...`, `Message: ...`. mi's own errors (files, the store, prompts) are one line.
    service = False

    def __init__(self, code: str, message: str, *, bound: bool = True, next_step: str | None = None) -> None:
        message = bounded(message) if bound else inert(message)
        super().__init__(message)
        self.code = code
        self.message = self.base_message = message  # base_message: Azure's alone, for an answer in Azure's shape
        self.next_step: str | None = None  # what to do about it, mi's own words after Azure's
        if next_step:
            self.add_next_step(next_step)

    def add_next_step(self, step: str) -> "MiError":
        """Append what the user can do next ("Create it with 'mi group create ...'") after Azure's message,
        which stays as Azure words it (a message that ends without a full stop, as IMDS's "Identity not found"
        or ARM's link, gets one first). Returns the error, to raise."""
        step = bounded(step.strip())
        if step:
            self.next_step = step if self.next_step is None else f"{self.next_step} {step}"
            end = "" if self.message.endswith((".", "!", "?")) or not self.message else "."
            self.message = f"{self.message}{end} {step}"
            self.args = (self.message,)
        return self

    def __str__(self) -> str:
        return f"({inert(self.code)}) {self.message}"


class ValidationError(MiError):
    """Bad input that Azure would refuse with 400 (InvalidParameter, BadRequest, ...)."""

    service = True


class ConflictError(MiError):
    """The request conflicts with the current state (409 in Azure)."""

    service = True


class InvalidTokenError(ValidationError):
    """A token that `mi token decode/verify`, `access check --token` or a data plane cannot accept: mi's
    own check, one line. `kind` says which check failed (missing, audience, expired, not-yet-valid,
    issuer, signature, key, malformed) and `found` what the token carried, for a plane's own texts."""

    service = False
    kind = "malformed"
    found: str | None = None

    def failed(self, kind: str, found: object = None) -> "InvalidTokenError":
        self.kind, self.found = kind, None if found is None else str(found)
        return self


class ForbiddenError(MiError):
    """The caller may not do this (403 in Azure: AuthorizationFailed)."""

    service = True


class NotFoundError(MiError):
    """Something named does not exist (404 in Azure; exit 3 as in az)."""

    exit_code = 3
    service = True


class UsageError(MiError):
    """The command line itself is wrong (exit 2 as in az)."""

    exit_code = 2


def conflict(message: str) -> UsageError:
    """Options given together that the command cannot honour together: refused, never one of them ignored."""
    return UsageError("MutuallyExclusiveArguments", message)


class StoreError(MiError):
    """The store cannot be opened, read or written."""


def resource_not_found(type_name: str | None, name: str, group: str) -> NotFoundError:
    what = f"{type_name}/{shown(name, 260)}" if type_name else shown(name, 260)  # names are at most 260
    return NotFoundError(
        "ResourceNotFound",
        f"The Resource '{what}' under resource group '{shown(group)}' was not found. "
        "For more details please go to https://aka.ms/ARMResourceNotFoundFix",
    )


def group_not_found(name: str) -> NotFoundError:
    return NotFoundError("ResourceGroupNotFound", f"Resource group '{shown(name)}' could not be found.")
