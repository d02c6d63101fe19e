"""Fits a table to a terminal's width: one line a row, no id or GUID broken, the least useful columns hidden first.

Long values are shortened with an ellipsis (`-o json` keeps every value whole); headers are never shortened.

Light on purpose (re and unicodedata only): the table path of every command imports it.

How a table that is too wide is made to fit, in order:
1. columns that say little about each row give way, most expendable first: those empty on every row,
   then (`GIVE_WAY`) what is the same on every row of a tenant (TenantId, Status, IsolationScope) or
   bookkeeping (times, locations);
2. long values are shortened to share the width, never below a readable minimum (`minimum`): an ARM id
   keeps at least its last type and name, a GUID is never shortened (half a GUID can be neither read
   nor pasted), a name keeps 16 characters;
3. if the minimums still do not fit, more columns give way: the `SECONDARY` ones, then the others from
   the right; names (`KEEP`) never do, and one column always stays. A column given way comes back when
   the others leave it room (and every more useful one came back);
4. at a terminal too narrow even for that, the kept columns are cut, with an ellipsis.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Iterator

GAP = 2  # spaces between columns, as in az's tables (knack: tabulate's "simple" format)
TEXT_MINIMUM = 16  # a name or a phrase is not shortened below this many characters ...
TEXT_LEAST = 10  # ... unless that would hide a column that is not secondary

GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

# Most expendable first. Up to "SubscriptionId" they give way before any value is shortened; the rest
# only when shortening is not enough. Between two GUIDs of one identity, the client id is what an app
# names its identity by (AZURE_CLIENT_ID, --client-id), so the principal id goes first; a service
# principal's object id (Id) is its key in the directory, so its AppId goes first. A service
# principal's `For` (the resource id behind it) is said by its display name and kind already. A log's
# Time gives way before what happened to what (the rows are in time order).
GIVE_WAY = (
    "TenantId", "HomeTenantId", "IsolationScope", "Status", "Caller", "ServicePrincipalType", "IsDefault",
    "Permissions", "CreationTime", "ContentType", "Enabled", "Hint", "StartDateTime", "Retired", "Created",
    "DeletedDate", "ScheduledPurgeDate", "Expires", "EndDateTime", "AllowSharedKeyAccess", "Audiences", "Location",
    "SubscriptionId",
)
SECONDARY = ("Time", "For", "AppId", "PrincipalId", "KeyId", "Kid", "ClientId", "Id")
KEEP = frozenset({"Name", "DisplayName", "Identity", "Principal", "Claim", "Check", "Grants"})


def text_width(text: str) -> int:
    """Cells a terminal gives `text`: East Asian wide characters take two, combining marks none."""
    if text.isascii() or text.replace("…", "").isascii():  # an ellipsis is one cell
        return len(text)
    width = 0
    for ch in text:
        if unicodedata.combining(ch):
            continue
        width += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return width


def _cut_end(text: str, width: int, ellipsis: str) -> str:
    room = width - text_width(ellipsis)
    if room <= 0:
        return ellipsis[:max(width, 0)]
    out, used = [], 0
    for ch in text:
        w = text_width(ch)
        if used + w > room:
            break
        out.append(ch)
        used += w
    return "".join(out).rstrip() + ellipsis


def _cut_middle(text: str, width: int, ellipsis: str) -> str:
    """Head and tail kept, the middle replaced: `app-prod-we…-01` still tells -01 from -02, and
    `Storage Blob…Contributor` from `...Reader`."""
    room = width - text_width(ellipsis)
    if room <= 1 or not text.isascii():
        return _cut_end(text, width, ellipsis)
    head = (room + 1) // 2
    return text[:head] + ellipsis + text[len(text) - (room - head):]


def _cut_words(text: str, width: int, ellipsis: str) -> str | None:
    """Whole words kept at both ends, the middle ones replaced: `Key Vault…User`. None when no first and
    last word fit together."""
    words = text.split(" ")
    best: str | None = None
    for count in range(1, len(words)):
        tail = " ".join(words[-count:])
        room = width - text_width(tail) - text_width(ellipsis)
        head = ""
        for word in words[:len(words) - count]:
            longer = f"{head} {word}" if head else word
            if text_width(longer) > room:
                break
            head = longer
        if head and (best is None or text_width(head) + text_width(tail) > text_width(best) - text_width(ellipsis)):
            best = f"{head}{ellipsis}{tail}"
    return best


# ARM ids. az users read an id from the right (type and name say what it is) and know its skeleton
# (/subscriptions/…/resourceGroups/…/providers/…), so segments are elided whole, the least telling first:
# the subscription GUID (the same on every row of a listing), then `providers` and the namespace (the type
# says it again), then the skeleton's keywords, then a parent's type and name, then the group. The name
# always stays (a long one shortened as names are), and so does its type unless the name is a GUID; each
# elided run shows as one "…".
# Cutting inside any other segment would leave half a GUID or half a name, which can be neither read
# nor pasted.
_NEVER = 9


def _arm_ranks(segments: list[str], guid_name: bool) -> list[int]:
    """How telling each segment of an ARM id (split on "/", a leading "" included) is: lower goes first."""
    n = len(segments)
    ranks = [4] * n
    lowered = [s.lower() for s in segments]
    for i, s in enumerate(lowered):
        if s == "subscriptions":
            ranks[i] = 3
            if i + 1 < n:
                ranks[i + 1] = 1
        elif s == "resourcegroups":
            ranks[i] = 3
            if i + 1 < n:
                ranks[i + 1] = 5
        elif s == "providers":
            ranks[i] = 2
            if i + 1 < n:
                ranks[i + 1] = 2
    ranks[-1] = _NEVER
    if n > 2:
        # a GUID names itself (a role assignment, a role definition): its type may go, last of all
        ranks[-2] = 8 if guid_name else _NEVER
    if n > 1:
        ranks[0] = ranks[1]  # the leading "" goes with the first word, so that the id starts "…/"
    return ranks


def _join(segments: list[str], elided: list[bool], ellipsis: str) -> str:
    out: list[str] = []
    for segment, gone in zip(segments, elided):
        if gone:
            if out and out[-1] is ellipsis:
                continue
            out.append(ellipsis)
        else:
            out.append(segment)
    return "/".join(out)


@lru_cache(maxsize=4096)
def _parent_forms(parent: str, guid_name: bool, ellipsis: str) -> tuple[str, ...]:
    """The forms of everything before an id's name, longest first. The name never goes, so the ids of
    one listing share these: a table of 100,000 ids in a few groups computes them a few times."""
    segments = [*parent.split("/"), ""]  # the name's place
    ranks = _arm_ranks(segments, guid_name)
    order = sorted((r, i) for i, r in enumerate(ranks) if r < _NEVER)
    elided = [False] * len(segments)
    full = text_width(parent)
    forms = []
    for k, (rank, i) in enumerate(order):
        elided[i] = True
        if k + 1 < len(order) and order[k + 1][0] == rank:
            continue  # a rank goes as a whole: the subscription's GUID and its word together, ...
        form = _join(segments, elided, ellipsis)[:-1]  # without the name's "/"
        if text_width(form) < full:
            forms.append(form)
    return tuple(forms)


def _arm_forms(text: str, ellipsis: str) -> Iterator[str]:
    """The id shortened step by step, longest first; the last is its shortest readable form."""
    parent, _, name = text.rpartition("/")
    for form in _parent_forms(parent, bool(GUID.fullmatch(name)), ellipsis):
        yield f"{form}/{name}"


def _path_forms(text: str, ellipsis: str) -> list[str]:
    """A slash-separated name that is not an id (a type, an operation): its leading segments go first,
    keeping a tail of at least 12 characters (`…/userAssignedIdentities/write`, `…/virtualMachines`)."""
    segments = text.split("/")
    forms = []
    for k in range(1, len(segments)):
        tail = "/".join(segments[k:])
        if len(tail) < 12:
            break
        forms.append(f"{ellipsis}/{tail}")
    return forms


def is_arm_id(text: str) -> bool:
    return text.startswith("/") and " " not in text and text.count("/") >= 2


def _kind(text: str) -> str:
    if text.startswith("/") and text.split(" ", 1)[0].count("/") >= 2:
        return "arm"  # an id, maybe followed by words ("... (inherited)")
    if " " in text or "\t" in text:
        return "text"
    if "/" in text and "://" not in text:
        return "path"
    return "guid" if GUID.search(text) else "word"


def _arm_split(arm_id: str, ellipsis: str) -> tuple[str, str]:
    """The id at its most elided, as (what comes before its name, its name)."""
    parent, _, name = arm_id.rpartition("/")
    forms = _parent_forms(parent, bool(GUID.fullmatch(name)), ellipsis)
    return (forms[-1] if forms else parent), name


def _most(text: str, ellipsis: str) -> int:
    """At least what `minimum` says of `text`, cheaply: for an id, the width of its type and name
    after an ellipsis (all of it for anything else)."""
    if text.startswith("/") and " " not in text:
        parts = text.rsplit("/", 2)
        if len(parts) == 3:
            return text_width(parts[1]) + text_width(parts[2]) + text_width(ellipsis) + 2
    return text_width(text)


def minimum(text: str, ellipsis: str = "…", least: int = TEXT_MINIMUM) -> int:
    """The narrowest `text` is shown in without losing what it is, a name or a phrase kept to `least`."""
    width = text_width(text)
    kind = _kind(text)
    if kind == "arm":
        arm_id, space, rest = text.partition(" ")
        head, name = _arm_split(arm_id, ellipsis)
        name_width = text_width(name) if GUID.fullmatch(name) else min(text_width(name), least)
        return min(width, text_width(head) + 1 + name_width + text_width(space + rest))
    if kind == "path":
        forms = _path_forms(text, ellipsis)
        return min(width, text_width(forms[-1])) if forms else width
    if kind == "guid" or GUID.search(text):
        return width
    return min(width, least)


def shorten(text: str, width: int, ellipsis: str = "…") -> str:
    """`text` in at most `width` cells: as it is, else its longest shortened form that fits."""
    if text_width(text) <= width:
        return text
    kind = _kind(text)
    if kind == "arm":
        arm_id, space, rest = text.partition(" ")
        room = width - text_width(space + rest)
        for form in _arm_forms(arm_id, ellipsis):
            if text_width(form) <= room:
                return form + space + rest
        head, name = _arm_split(arm_id, ellipsis)
        name_room = room - text_width(head) - 1
        if name_room > text_width(ellipsis) + 1 and not GUID.fullmatch(name):
            return f"{head}/{_cut_middle(name, name_room, ellipsis)}{space}{rest}"
    elif kind == "path":
        for form in _path_forms(text, ellipsis):
            if text_width(form) <= width:
                return form
    elif kind == "text" and not GUID.search(text):
        cut = _cut_words(text, width, ellipsis)
        if cut is not None:
            return cut
    return _cut_middle(text, width, ellipsis)


@dataclass
class Layout:
    columns: list[int]  # indexes of the columns shown, in the table's order
    widths: list[int]  # one for each shown column
    hidden: list[int] = field(default_factory=list)  # indexes of the columns given way, in the table's order
    blank: list[int] = field(default_factory=list)  # those of them empty on every row
    shortened: bool = False


def _total(columns: list[int], widths: list[int]) -> int:
    return sum(widths[i] for i in columns) + GAP * (len(columns) - 1)


def _share(columns: list[int], natural: list[int], floor: list[int], room: int) -> dict[int, int]:
    """Widths between `floor` and `natural` that fill `room`: the widest columns are narrowed first, to a
    common cap, so that short columns stay whole."""
    room -= GAP * (len(columns) - 1)

    def used(cap: int) -> int:
        return sum(max(floor[i], min(natural[i], cap)) for i in columns)

    low, high = 0, max(natural[i] for i in columns)
    while low < high:  # the largest cap that fits
        mid = (low + high + 1) // 2
        if used(mid) <= room:
            low = mid
        else:
            high = mid - 1
    widths = {i: max(floor[i], min(natural[i], low)) for i in columns}
    spare = room - sum(widths.values())
    for i in columns:  # what the cap leaves over, to the columns still short of their width, left first
        if spare <= 0:
            break
        if widths[i] < natural[i]:
            widths[i] += 1
            spare -= 1
    return widths


def fit(headers: list[str], rows: list[list[str]], width: int, ellipsis: str = "…") -> Layout:
    """Which columns to show, and how wide, for `rows` (cells as text) to fit in `width` cells."""
    count = len(headers)
    header_widths = [text_width(h) for h in headers]
    natural = [max([header_widths[i], *(text_width(r[i]) for r in rows)]) for i in range(count)]
    columns = list(range(count))
    if count == 0 or _total(columns, natural) <= width:
        return Layout(columns, [natural[i] for i in columns])

    def droppable(names: tuple[str, ...]) -> list[int]:
        found = [i for i in columns if headers[i] in names]
        return sorted(found, key=lambda i: (names.index(headers[i]), -i))

    dropped: list[int] = []

    def drop_while(candidates: list[int], widths: list[int]) -> None:
        for i in candidates:
            if _total(columns, widths) <= width or len(columns) == 1:
                return
            columns.remove(i)
            dropped.append(i)

    def bring_back(widths: list[int]) -> None:
        # the most useful first (the last to go); a column comes back only if every more useful one
        # did, so that room left over never goes to a lesser column
        for i in reversed(list(dropped)):
            trial = sorted([*columns, i])
            if _total(trial, widths) > width:
                return
            columns[:] = trial
            dropped.remove(i)

    blank = [i for i in reversed(columns) if natural[i] == header_widths[i] and not any(r[i] for r in rows)]
    drop_while(blank, natural)  # a column empty on every row says nothing here
    blank = [i for i in blank if i not in columns]
    drop_while(droppable(GIVE_WAY), natural)
    bring_back(natural)
    if _total(columns, natural) <= width:
        return Layout(columns, [natural[i] for i in columns], sorted(dropped), [i for i in blank if i in dropped])

    def floors(least: int) -> list[int]:
        found = [0] * count
        for i in columns:
            floor = header_widths[i]
            for row in rows:
                # a cell that cannot need more than the floor found so far is not measured (a table
                # at a terminal may have 100,000 rows): no wider than it, or an id whose type and
                # name fit in it
                cell = row[i]
                if text_width(cell) > floor and _most(cell, ellipsis) > floor:
                    floor = max(floor, minimum(cell, ellipsis, least))
            found[i] = floor
        return found

    floor = floors(TEXT_MINIMUM)
    if _total(columns, floor) > width:
        drop_while(droppable(SECONDARY), floor)
        bring_back(floor)
    if _total(columns, floor) > width:
        floor = floors(TEXT_LEAST)
        drop_while([i for i in reversed(columns) if headers[i] not in KEEP], floor)
        bring_back(floor)
    if _total(columns, floor) > width:  # too narrow for the readable minimums: cut, headers still whole
        floor = [max(header_widths[i], 1 + text_width(ellipsis)) for i in range(count)]
    widths = _share(columns, natural, floor, width)
    if len(rows) <= SLACK_ROWS:
        widths = _use_slack(columns, rows, natural, header_widths, widths, width, ellipsis)
    return Layout(columns, [widths[i] for i in columns], sorted(dropped), [i for i in blank if i in dropped],
                  shortened=any(widths[i] < natural[i] for i in columns))


SLACK_ROWS = 2000  # beyond this many rows, what shortened forms leave unused is not handed on


def _use_slack(columns: list[int], rows: list[list[str]], natural: list[int], header_widths: list[int],
               widths: dict[int, int], width: int, ellipsis: str) -> dict[int, int]:
    """A shortened id is often narrower than its column (it loses whole segments): the room it leaves
    goes to the other shortened columns."""
    natural = list(natural)
    for _ in range(3):
        slack = 0
        for i in columns:
            if widths[i] < natural[i]:
                used = max([header_widths[i], *(text_width(shorten(r[i], widths[i], ellipsis)) for r in rows)])
                if used < widths[i]:
                    slack += widths[i] - used
                    widths[i] = natural[i] = used  # as narrow as it needs, and no wider
        if slack == 0 or all(widths[i] >= natural[i] for i in columns):
            return widths
        widths = _share(columns, natural, [widths.get(i, 0) for i in range(len(natural))], width)
    return widths
