"""Role assignment conditions (Azure ABAC, conditionVersion 2.0): parsed, checked at create, evaluated per request.

The grammar is Microsoft's "Azure role assignment condition format and syntax" (conditions-format.md):

    condition   := expression
    expression  := unary (AND unary)* | unary (OR unary)*        AND is also &&, OR also ||
    unary       := (NOT | !) unary | primary
    primary     := ( expression )
                 | ActionMatches{'pattern'} | SubOperationMatches{'name'}
                 | Exists attribute
                 | operand operator operand
    operand     := attribute | value | { value, value, ... }
    attribute   := @Resource[name] | @Request[name] | @Principal[name] | @Environment[name]
    value       := 'text' | integer | true | false | GUID
    operator    := [ForAnyOfAnyValues: | ForAllOfAnyValues: | ForAnyOfAllValues: | ForAllOfAllValues:] name

"If you have three or more expressions ... with different operators between the expressions, the evaluation
order is ambiguous ... You must add parentheses": AND and OR mixed at one level are refused, not given a
precedence. Operator names and keywords are matched without regard to case (ARM took `stringEquals` in az's
recording test_role_assignment_create_update.yaml), and so are attribute names ("Attributes and values listed
are considered case-insensitive, unless stated otherwise", storage-auth-abac-attributes.md), except a tag key
marked `<$key_case_sensitive$>`.

Evaluation follows the same pages: ActionMatches is "the action matching logic ... inside a Permission"
(`action_matches`, which role permissions use too); an expression on an attribute the request does not carry is
false, whatever its operator ("Read current blob versions and a specific blob version" grants a current version,
whose request has no versionId, through `versionId DateTimeEquals '...' OR isCurrentVersion BoolEquals true`),
and `Exists` asks whether it is there. A plain operator given several values holds for any of them; its negation
(StringNotEquals, ...) is the negation of that; the cross-product prefixes compare value by value as documented.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any, Callable, Union

from mi_cli.errors import ValidationError, shown

INVALID = "InvalidRoleAssignmentCondition"
INVALID_TEXT = "The given role assignment condition is invalid"  # ARM's words (conditions-troubleshoot.md)
MAX_LENGTH = 8192  # "A condition can be up to 8 KB long" (conditions-faq.md)
# mi's own bound on parentheses and NOT inside one another: 8 KB of '(' would otherwise exhaust the
# parser's (and the evaluation's) recursion; real conditions nest a few levels
MAX_DEPTH = 64
SOURCES = {"resource": "Resource", "request": "Request", "principal": "Principal", "environment": "Environment"}
SUB_OPERATION = "subOperation"  # the request context's key for the sub-operation


# --- action patterns (shared with role permissions) ------------------------------------------------


@lru_cache(maxsize=4096)
def _action_pattern(pattern: str) -> re.Pattern[str]:
    """'*' matches any run of characters, slashes included, and a '/*/' also matches a single '/':
    Managed Identity Operator's 'userAssignedIdentities/*/assign/action' is what grants
    'userAssignedIdentities/assign/action'. Matching ignores case."""
    parts = re.split(r"(/\*/|\*)", pattern)
    regex = "".join("/(?:.*/)?" if p == "/*/" else ".*" if p == "*" else re.escape(p) for p in parts)
    return re.compile(f"{regex}", re.IGNORECASE)


def action_matches(pattern: str, action: str) -> bool:
    """Whether a permission's action pattern (or ActionMatches') covers `action`: the whole name, so no
    trailing newline slips through."""
    return _action_pattern(pattern).fullmatch(action) is not None


# --- the parsed form ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attribute:
    source: str  # Resource, Request, Principal, Environment
    name: str  # as written
    key: str  # how requests are looked up: see `attribute_key`

    def __str__(self) -> str:
        return f"@{self.source}[{self.name}]"


@dataclass(frozen=True)
class Literal:
    text: str
    quoted: bool


@dataclass(frozen=True)
class Values:
    items: tuple[Literal, ...]


Operand = Union[Attribute, Literal, Values]


@dataclass(frozen=True)
class Operator:
    written: str
    quantifier: str | None  # ForAnyOfAnyValues, ... or None
    name: str  # canonical base name, e.g. StringEquals


@dataclass(frozen=True)
class Comparison:
    left: Operand
    operator: Operator
    right: Operand


@dataclass(frozen=True)
class ActionMatches:
    patterns: tuple[str, ...]


@dataclass(frozen=True)
class SubOperationMatches:
    names: tuple[str, ...]


@dataclass(frozen=True)
class Exists:
    attribute: Attribute


@dataclass(frozen=True)
class Not:
    operand: "Node"


@dataclass(frozen=True)
class Junction:
    kind: str  # AND or OR
    operands: tuple["Node", ...]


Node = Union[Comparison, ActionMatches, SubOperationMatches, Exists, Not, Junction]


# --- operators ---------------------------------------------------------------------------------------

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_INTEGER = re.compile(r"^[+-]?[0-9]+$")
# "Full-precision check with the format: yyyy-mm-ddThh:mm:ss.mmmmmmmZ"
_DATETIME = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,7}))?Z$", re.IGNORECASE)


def _like(value: str, pattern: str, fold: bool) -> bool:
    """StringLike: '*' any run, '?' one character, '\\*' and '\\?' the characters themselves."""
    regex = "".join(".*" if t == "*" else "." if t == "?" else re.escape(t[1] if len(t) == 2 and t[0] == "\\" else t)
                    for t in re.findall(r"\\[*?]|[*?]|[^*?\\]+|\\", pattern))
    return re.fullmatch(regex, value, re.DOTALL | (re.IGNORECASE if fold else 0)) is not None


def _as_int(text: str) -> int:
    if not _INTEGER.match(text):
        raise ValueError("an integer")
    return int(text)


def _as_bool(text: str) -> bool:
    if text.casefold() not in ("true", "false"):
        raise ValueError("true or false")
    return text.casefold() == "true"


def _as_datetime(text: str) -> tuple[datetime, int]:
    m = _DATETIME.match(text)
    if not m:
        raise ValueError("a date and time as yyyy-mm-ddThh:mm:ss.fffffffZ")
    try:
        moment = datetime(*(int(g) for g in m.groups()[:6]), tzinfo=timezone.utc)
    except ValueError:
        raise ValueError("a date and time as yyyy-mm-ddThh:mm:ss.fffffffZ") from None
    return moment, int((m.group(7) or "0").ljust(7, "0"))


def _as_guid(text: str) -> str:
    if not _GUID.match(text):
        raise ValueError("a GUID")
    return text.casefold()


_LESS = {"Equals": lambda a, b: a == b, "LessThan": lambda a, b: a < b, "LessThanEquals": lambda a, b: a <= b,
         "GreaterThan": lambda a, b: a > b, "GreaterThanEquals": lambda a, b: a >= b}


@dataclass(frozen=True)
class _Kind:
    """One positive comparison and its value type; a negated operator is its negation."""

    convert: Callable[[str], Any]
    test: Callable[[Any, Any], bool]
    quoted: bool | None  # literals must be quoted (True), bare (False), or either (None)
    cross: bool  # allowed after a ForXOfYValues: prefix (conditions-format.md lists which)


_STRING = str
_KINDS: dict[str, _Kind] = {
    "StringEquals": _Kind(_STRING, lambda a, b: a == b, True, True),
    "StringEqualsIgnoreCase": _Kind(_STRING, lambda a, b: a.casefold() == b.casefold(), True, True),
    "StringLike": _Kind(_STRING, lambda a, b: _like(a, b, False), True, True),
    "StringLikeIgnoreCase": _Kind(_STRING, lambda a, b: _like(a, b, True), True, True),
    "StringStartsWith": _Kind(_STRING, lambda a, b: a.startswith(b), True, False),
    "StringStartsWithIgnoreCase": _Kind(_STRING, lambda a, b: a.casefold().startswith(b.casefold()), True, False),
    "BoolEquals": _Kind(_as_bool, lambda a, b: a == b, False, False),
    "GuidEquals": _Kind(_as_guid, lambda a, b: a == b, None, True),
    **{f"Numeric{n}": _Kind(_as_int, f, False, True) for n, f in _LESS.items()},
    **{f"DateTime{n}": _Kind(_as_datetime, f, True, False) for n, f in _LESS.items()},
}
# name -> (the positive comparison, whether this operator negates it)
_OPERATORS: dict[str, tuple[str, bool]] = {name: (name, False) for name in _KINDS}
_EQUALITY = {"StringEquals", "StringEqualsIgnoreCase", "BoolEquals", "GuidEquals", "NumericEquals", "DateTimeEquals"}
_OPERATORS.update({name.replace("String", "StringNot", 1) if name.startswith("String") else name.replace("Equals", "NotEquals"):
                   (name, True) for name in _KINDS if name.startswith("String") or name in _EQUALITY})
_BY_FOLDED = {name.casefold(): name for name in _OPERATORS}
QUANTIFIERS = {q.casefold(): q for q in ("ForAnyOfAnyValues", "ForAllOfAnyValues", "ForAnyOfAllValues", "ForAllOfAllValues")}
KEYWORDS = {"and": "AND", "or": "OR", "not": "NOT", "actionmatches": "ActionMatches",
            "suboperationmatches": "SubOperationMatches", "exists": "Exists"}


def operators() -> list[str]:
    """Every operator name, without the cross-product prefixes."""
    return sorted(_OPERATORS)


# --- parsing -----------------------------------------------------------------------------------------


def _invalid(detail: str, position: int) -> ValidationError:
    return ValidationError(INVALID, f"{INVALID_TEXT}: {detail} (position {position}).")


@dataclass(frozen=True)
class _Token:
    kind: str  # ( ) { } , AND OR NOT STRING ATTR WORD END
    text: str
    position: int  # 1-based
    value: Any = None


_WORD = re.compile(r"[A-Za-z0-9_.:+\-]+")
_SPACE = " \t\r\n"


def _tokens(text: str) -> list[_Token]:
    out: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        pos = i + 1
        if c in _SPACE:
            i += 1
        elif c in "(){},":
            out.append(_Token(c, c, pos))
            i += 1
        elif c == "!":
            out.append(_Token("NOT", c, pos))
            i += 1
        elif text.startswith("&&", i) or text.startswith("||", i):
            out.append(_Token("AND" if c == "&" else "OR", text[i:i + 2], pos))
            i += 2
        elif c == "'":
            end = text.find("'", i + 1)
            if end < 0:
                raise _invalid("a quoted value is not closed", pos)
            value = text[i + 1:end]
            bad = next((k for k, ch in enumerate(value) if ch < " " and ch != "\t"), None)
            if bad is not None:
                raise _invalid("a control character inside a quoted value", i + 2 + bad)
            out.append(_Token("STRING", text[i:end + 1], pos, value))
            i = end + 1
        elif c == "@":
            m = re.compile(r"@([A-Za-z]*)").match(text, i)
            source = SOURCES.get(m.group(1).casefold()) if m else None
            if source is None:
                raise _invalid(f"'{shown(m.group(0) if m else c)}' is not an attribute source; use @Resource, @Request, "
                               "@Principal or @Environment", pos)
            j = m.end()
            if j >= n or text[j] != "[":
                raise _invalid(f"'@{source}' must be followed by [attribute name]", j + 1)
            end = text.find("]", j)
            name = text[j + 1:end] if end >= 0 else ""
            if end < 0 or "[" in name or "\n" in name:
                raise _invalid(f"'@{source}[' is not closed by ']'", pos)
            if not name.strip():
                raise _invalid("an attribute name is empty", pos)
            if any(ch < " " for ch in name):
                raise _invalid("a control character inside an attribute name", pos)
            out.append(_Token("ATTR", text[i:end + 1], pos, Attribute(source, name, attribute_key(source, name))))
            i = end + 1
        else:
            m = _WORD.match(text, i)
            if m is None:
                raise _invalid(f"unexpected character '{shown(c)}'", pos)
            word = m.group(0)
            keyword = KEYWORDS.get(word.casefold())
            kind = keyword if keyword in ("AND", "OR", "NOT") else "WORD"
            out.append(_Token(kind, word, pos, keyword))
            i = m.end()
    out.append(_Token("END", "", n + 1))
    return out


def _shown_token(token: _Token) -> str:
    return "the end of the condition" if token.kind == "END" else f"'{shown(token.text, 40)}'"


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.i = 0
        self.depth = 0

    def _deeper(self, token: _Token) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _invalid(f"parentheses and NOT nest more than {MAX_DEPTH} deep", token.position)

    @property
    def peek(self) -> _Token:
        return self.tokens[self.i]

    def take(self) -> _Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def expect(self, kind: str, what: str) -> _Token:
        if self.peek.kind != kind:
            raise _invalid(f"expected {what}, found {_shown_token(self.peek)}", self.peek.position)
        return self.take()

    def condition(self) -> Node:
        if self.peek.kind == "END":
            raise _invalid("the condition is empty", self.peek.position)
        node = self.expression()
        if self.peek.kind != "END":
            raise _invalid(f"expected AND, OR or the end of the condition, found {_shown_token(self.peek)}",
                           self.peek.position)
        return node

    def expression(self) -> Node:
        operands = [self.unary()]
        kind: str | None = None
        while self.peek.kind in ("AND", "OR"):
            token = self.take()
            if kind is not None and token.kind != kind:
                raise _invalid(f"{kind} and {token.kind} are mixed without parentheses; add them to say which applies "
                               "first, as Azure requires", token.position)
            kind = token.kind
            operands.append(self.unary())
        return operands[0] if kind is None else Junction(kind, tuple(operands))

    def unary(self) -> Node:
        if self.peek.kind == "NOT":
            self._deeper(self.take())
            node = Not(self.unary())
            self.depth -= 1
            return node
        return self.primary()

    def primary(self) -> Node:
        token = self.peek
        if token.kind == "(":
            self._deeper(self.take())
            node = self.expression()
            self.expect(")", "')'")
            self.depth -= 1
            return node
        if token.kind == "WORD" and token.value in ("ActionMatches", "SubOperationMatches"):
            self.take()
            self.expect("{", f"'{{' after {token.value}")
            names = [self.expect("STRING", "a quoted name").value]
            while self.peek.kind == ",":
                self.take()
                names.append(self.expect("STRING", "a quoted name").value)
            self.expect("}", "'}'")
            return ActionMatches(tuple(names)) if token.value == "ActionMatches" else SubOperationMatches(tuple(names))
        if token.kind == "WORD" and token.value == "Exists":
            self.take()
            return Exists(self.expect("ATTR", "an attribute after Exists").value)
        return self.comparison()

    def operand(self) -> tuple[Operand, int]:
        token = self.peek
        if token.kind == "ATTR":
            return self.take().value, token.position
        if token.kind == "STRING":
            return Literal(self.take().value, True), token.position
        if token.kind == "WORD" and token.value is None and _bare_value(token.text):
            return Literal(self.take().text, False), token.position
        if token.kind == "{":
            self.take()
            items = [self.value()]
            while self.peek.kind == ",":
                self.take()
                items.append(self.value())
            self.expect("}", "',' or '}'")
            return Values(tuple(items)), token.position
        if token.kind == "WORD" and token.value is None:
            raise _invalid(f"expected an expression, found {_shown_token(token)} (text values are quoted: 'value')",
                           token.position)
        raise _invalid(f"expected an expression, found {_shown_token(token)}", token.position)

    def value(self) -> Literal:
        token = self.peek
        if token.kind == "STRING":
            return Literal(self.take().value, True)
        if token.kind == "WORD" and token.value is None and _bare_value(token.text):
            return Literal(self.take().text, False)
        raise _invalid(f"expected a value, found {_shown_token(token)} (text values are quoted: 'value')", token.position)

    def comparison(self) -> Comparison:
        left, left_at = self.operand()
        token = self.peek
        if token.kind != "WORD" or token.value is not None:
            after = "the attribute" if isinstance(left, Attribute) else "the value"
            raise _invalid(f"expected an operator such as StringEquals after {after}, found {_shown_token(token)}",
                           token.position)
        operator = _operator(self.take())
        right, right_at = self.operand()
        kind = _KINDS[_OPERATORS[operator.name][0]]
        for side, at in ((left, left_at), (right, right_at)):
            _check_literals(side, operator, kind, at)
        if operator.quantifier is None and isinstance(left, Values) and len(left.items) > 1:
            raise _invalid(f"{operator.written} compares one value on its left; use a ForAnyOfAnyValues: (or other "
                           "cross-product) operator for several", left_at)
        return Comparison(left, operator, right)


def _bare_value(text: str) -> bool:
    return bool(_INTEGER.match(text) or _GUID.match(text) or text.casefold() in ("true", "false"))


def _operator(token: _Token) -> Operator:
    quantifier, _, base = token.text.rpartition(":")
    canonical = _BY_FOLDED.get(base.casefold())
    if quantifier and quantifier.casefold() not in QUANTIFIERS:
        raise _invalid(f"'{shown(quantifier, 40)}' is not a cross-product prefix; use ForAnyOfAnyValues, "
                       "ForAllOfAnyValues, ForAnyOfAllValues or ForAllOfAllValues", token.position)
    if canonical is None:
        raise _invalid(f"'{shown(base, 40)}' is not a condition operator", token.position)
    if quantifier and not _KINDS[_OPERATORS[canonical][0]].cross:
        raise _invalid(f"{canonical} cannot follow a cross-product prefix", token.position)
    return Operator(token.text, QUANTIFIERS[quantifier.casefold()] if quantifier else None, canonical)


def _check_literals(side: Operand, operator: Operator, kind: _Kind, position: int) -> None:
    items = side.items if isinstance(side, Values) else (side,) if isinstance(side, Literal) else ()
    for item in items:
        if kind.quoted is True and not item.quoted:
            raise _invalid(f"{operator.name} compares text: quote the value ('{shown(item.text, 40)}')", position)
        if kind.quoted is False and item.quoted:
            raise _invalid(f"{operator.name} takes an unquoted value, not '{shown(item.text, 40)}'", position)
        try:
            kind.convert(item.text)
        except ValueError as exc:
            raise _invalid(f"{operator.name} needs {exc}, not '{shown(item.text, 40)}'", position) from None


@lru_cache(maxsize=1024)
def parse(text: str) -> Node:
    """The condition's syntax tree; ValidationError (InvalidRoleAssignmentCondition) naming the position of what
    is wrong. Cached on the text: the planes evaluate the same few conditions on every request."""
    if len(text) > MAX_LENGTH:
        raise ValidationError(INVALID, f"{INVALID_TEXT}: it is {len(text):,} characters long; a condition can be at "
                              f"most {MAX_LENGTH:,} (8 KB).")
    return _Parser(text).condition()


def validate(text: str) -> None:
    """What ARM checks of a condition at create and update (syntax and length)."""
    parse(text)


def attribute_key(source: str, name: str) -> str:
    """How an attribute is looked up: source and name without regard to case, except a tag key written with
    `<$key_case_sensitive$>` ("Is key case sensitive: True", storage-auth-abac-attributes.md)."""
    name = name.strip()
    marker = re.search(r"<\$key_case_sensitive\$>$", name, re.IGNORECASE)
    head, colon, _ = name.partition(":")
    if marker and colon:
        key = name[len(head) + 1:marker.start()]
        return f"@{source.casefold()}[{head.casefold()}:{key}<$key_case_sensitive$>]"
    return f"@{source.casefold()}[{name.casefold()}]"


def reference_key(reference: str) -> str:
    """The lookup key of an attribute reference written as in a condition: '@Request[...:prefix]'."""
    m = re.fullmatch(r"\s*@([A-Za-z]+)\[(.+)\]\s*", reference, re.DOTALL)
    source = SOURCES.get(m.group(1).casefold()) if m else None
    if m is None or source is None or "]" in m.group(2):
        raise ValidationError("InvalidRequestAttribute",
                              f"'{shown(reference)}' is not an attribute reference such as "
                              "@Request[Microsoft.Storage/storageAccounts/blobServices/containers/blobs:prefix].")
    return attribute_key(source, m.group(2))


# --- the request a condition is evaluated against ------------------------------------------------


@dataclass(frozen=True)
class Request:
    """What a condition may ask about one request: its action, its sub-operation, and its attributes (by
    `attribute_key`, each with one or more values)."""

    action: str
    sub_operation: str | None
    attributes: Mapping[str, tuple[str, ...]]


STORAGE = "Microsoft.Storage/storageAccounts"
ACCOUNT_NAME = attribute_key("Resource", f"{STORAGE}:name")
CONTAINER_NAME = attribute_key("Resource", f"{STORAGE}/blobServices/containers:name")
BLOB_PATH = attribute_key("Resource", f"{STORAGE}/blobServices/containers/blobs:path")
QUEUE_NAME = attribute_key("Resource", f"{STORAGE}/queueServices/queues:name")
UTC_NOW = attribute_key("Environment", "UtcNow")


def scope_attributes(scope: str) -> dict[str, tuple[str, ...]]:
    """The resource attributes a scope names (storage-auth-abac-attributes.md, queues-auth-abac-attributes.md):
    below .../providers/Microsoft.Storage/storageAccounts/ACCOUNT, the account's name; below
    .../blobServices/default/containers/NAME the container's; below .../blobs/ the blob path (the rest of the
    scope: "the values shouldn't include the container name or a preceding slash"); a queue's name."""
    parts = [p for p in scope.split("/")]
    lowered = [p.casefold() for p in parts]
    found: dict[str, tuple[str, ...]] = {}
    for i in range(len(parts) - 3):
        if lowered[i:i + 3] == ["providers", "microsoft.storage", "storageaccounts"] and parts[i + 3]:
            rest, low = parts[i + 4:], lowered[i + 4:]
            found[ACCOUNT_NAME] = (parts[i + 3],)
            if len(rest) >= 4 and low[0] == "blobservices" and low[2] == "containers" and rest[3]:
                found[CONTAINER_NAME] = (rest[3],)
                if len(rest) >= 6 and low[4] == "blobs" and "/".join(rest[5:]):
                    found[BLOB_PATH] = ("/".join(rest[5:]),)
            if len(rest) >= 4 and low[0] == "queueservices" and low[2] == "queues" and rest[3]:
                found[QUEUE_NAME] = (rest[3],)
            break
    return found


def utc_now_text(now: datetime) -> str:
    """UtcNow as conditions compare it: yyyy-mm-ddThh:mm:ss.fffffffZ."""
    now = now.astimezone(timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond:06d}0Z"


def request(action: str, scope: str, context: Mapping[str, Any] | None = None, *,
            now: datetime | None = None) -> Request:
    """The request a condition sees: the attributes the scope names, @Environment[UtcNow], then the caller's
    `context` (which wins): {"subOperation": "Blob.List", "@Request[...:prefix]": "logs/", ...}; a value is
    text or a list of texts, None leaves the attribute out."""
    attributes = scope_attributes(scope)
    attributes[UTC_NOW] = (utc_now_text(now or datetime.now(timezone.utc)),)
    sub_operation = None
    for key, value in (context or {}).items():
        if key == SUB_OPERATION:
            if value is not None and not isinstance(value, str):
                raise ValidationError("InvalidRequestContext", "The sub-operation is a text, such as Blob.List.")
            sub_operation = value or None
            continue
        lookup = reference_key(key)
        if value is None:
            attributes.pop(lookup, None)
        elif isinstance(value, str):
            attributes[lookup] = (value,)
        elif isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
            attributes[lookup] = tuple(value)
        else:
            raise ValidationError("InvalidRequestContext", f"The value of {shown(key)} is not a text or a list of texts.")
    return Request(action, sub_operation, attributes)


# --- evaluation --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """Whether a condition holds for a request, and the fact that decided it, in a few words."""

    holds: bool
    detail: str


def _quote(value: str) -> str:
    return f"'{shown(value, 60)}'"


def _listed(values: Sequence[str]) -> str:
    return _quote(values[0]) if len(values) == 1 else "{" + ", ".join(_quote(v) for v in values) + "}"


def _operand_values(operand: Operand, req: Request) -> tuple[str, ...] | None:
    if isinstance(operand, Attribute):
        return req.attributes.get(operand.key)
    if isinstance(operand, Literal):
        return (operand.text,)
    return tuple(item.text for item in operand.items)


def _describe(operand: Operand, values: Sequence[str]) -> str:
    return f"{operand} is {_listed(values)}" if isinstance(operand, Attribute) else _listed(values)


def _compare(node: Comparison, req: Request) -> Outcome:
    left, right = _operand_values(node.left, req), _operand_values(node.right, req)
    for side, values in ((node.left, left), (node.right, right)):
        if values is None:
            return Outcome(False, f"{side} is not in this request")
    assert left is not None and right is not None
    positive, negated = _OPERATORS[node.operator.name]
    kind = _KINDS[positive]
    try:
        lhs = [kind.convert(v) for v in left]
        rhs = [kind.convert(v) for v in right]
    except ValueError as exc:
        return Outcome(False, f"{_describe(node.left, left)}, compared with {node.operator.name} {_listed(right)}, "
                              f"which needs {exc}")
    if node.operator.quantifier is None:
        holds = any(kind.test(a, b) for a in lhs for b in rhs) != negated
    else:
        pair = (lambda a, b: kind.test(a, b) != negated)
        outer = any if node.operator.quantifier.startswith("ForAnyOf") else all
        inner = any if node.operator.quantifier.endswith("AnyValues") else all
        holds = outer(inner(pair(a, b) for b in rhs) for a in lhs)
    subject = _describe(node.left, left)
    target = _describe(node.right, right) if isinstance(node.right, Attribute) else _listed(right)
    if node.operator.quantifier is None and positive in _EQUALITY and not negated:
        same = subject if not isinstance(node.right, Attribute) else f"{subject} and {target}"
        return Outcome(holds, same if holds else f"{subject}, not {'one of ' if len(right) > 1 else ''}{target}")
    return Outcome(holds, f"{subject}, so {node.operator.written} {target} {'holds' if holds else 'does not hold'}")


def _targets_actions(node: Node) -> bool:
    """Whether a part of a condition only says which actions it applies to (ActionMatches, SubOperationMatches)."""
    if isinstance(node, (ActionMatches, SubOperationMatches)):
        return True
    if isinstance(node, Not):
        return _targets_actions(node.operand)
    if isinstance(node, Junction):
        return all(_targets_actions(n) for n in node.operands)
    return False


def _evaluate(node: Node, req: Request) -> Outcome:
    if isinstance(node, Comparison):
        return _compare(node, req)
    if isinstance(node, ActionMatches):
        hit = next((p for p in node.patterns if action_matches(p, req.action)), None)
        if hit is not None:
            return Outcome(True, f"the action matches {_quote(hit)}")
        return Outcome(False, f"the action does not match {_listed(node.patterns)}")
    if isinstance(node, SubOperationMatches):
        if req.sub_operation is None:
            return Outcome(False, "the request has no sub-operation")
        hit = next((n for n in node.names if action_matches(n, req.sub_operation)), None)
        if hit is not None:
            return Outcome(True, f"the sub-operation is {_quote(req.sub_operation)}")
        return Outcome(False, f"the sub-operation is {_quote(req.sub_operation)}, not {_listed(node.names)}")
    if isinstance(node, Exists):
        present = node.attribute.key in req.attributes
        return Outcome(present, f"{node.attribute} is {'in' if present else 'not in'} this request")
    if isinstance(node, Not):
        inner = _evaluate(node.operand, req)
        return Outcome(not inner.holds, inner.detail)
    outcomes = [(_evaluate(n, req), n) for n in node.operands]
    if node.kind == "AND":
        failed = next((o for o, _ in outcomes if not o.holds), None)
        if failed is not None:
            return failed
        return Outcome(True, " and ".join(o.detail for o, _ in outcomes))
    held = next((o for o, _ in outcomes if o.holds), None)
    if held is not None:
        return held
    telling = [o for o, n in outcomes if not _targets_actions(n)] or [o for o, _ in outcomes]
    return Outcome(False, " and ".join(o.detail for o in telling))


def evaluate(text: str, req: Request) -> Outcome:
    """Whether the condition holds for the request. A condition that does not parse (kept by a store from
    before conditions were checked) never holds."""
    try:
        node = parse(text)
    except ValidationError as exc:
        return Outcome(False, f"it does not parse: {exc.message.removeprefix(INVALID_TEXT + ': ')}")
    return _evaluate(node, req)
