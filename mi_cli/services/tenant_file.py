"""Tenant files (YAML or JSON): reading them, and checking them against the published JSON Schema."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources as package_files
from pathlib import Path
from typing import IO, Any

from mi_cli.errors import MiError, inert

API_VERSION = "mi/v1"


class ApplyError(MiError):
    """An invalid entry: names the file, the path in the document, and what is wrong."""

    def __init__(self, code: str, source: str, path: str, message: str) -> None:
        super().__init__(code, f"{source}: {str(path)}: {message}")
        self.source = source


SHOWN_ERRORS = 20  # invalid entries listed one per line; the rest are counted


class ApplyErrors(ApplyError):
    """Every invalid entry of a file, found in one run: each on a line of its own, the first as a file with one
    invalid entry shows it, then the next ones up to SHOWN_ERRORS, and a last line that counts them all."""

    def __init__(self, errors: list[MiError], source: str) -> None:
        first = errors[0]
        MiError.__init__(self, first.code, first.message, bound=False)  # already bounded and inert
        self.errors, self.source = errors, source
        self.exit_code = first.exit_code

    def __str__(self) -> str:
        shown_ = self.errors[:SHOWN_ERRORS]
        lines = [str(e) for e in shown_]
        count = len(self.errors)
        more = f" (the first {len(shown_)} above)" if count > len(shown_) else ""
        lines.append(f"{inert(self.source)}: {count:,} invalid entries{more}; nothing was applied. Fix them and apply "
                     "the file again.")
        return "\nERROR: ".join(lines)


def raise_all(errors: list[MiError], source: str) -> None:
    """Raise the errors found: one as itself, several as ApplyErrors."""
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ApplyErrors(errors, source)


# A tenant file is read whole and parsed into memory: 32 MiB holds about 600,000 user-assigned
# identities in JSON (an export of 100,000 is 5 MB), and keeps a parse within a few seconds and a
# few hundred MB. Larger tenants are split into several files (apply without --prune adds to the store).
MAX_BYTES = 32 * 1024 * 1024
MAX_DEPTH = 32  # the format nests six levels deep; far deeper documents are mistakes (or attacks)


def read_file(file: str, stdin: IO[str]) -> tuple[str, str]:
    """(text, source name) of a tenant file, or of stdin for '-', refused over MAX_BYTES."""
    if file == "-":
        text, source = stdin.read(MAX_BYTES + 1), "<stdin>"
        if len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
            raise _too_big(source)
        return text, source
    path = Path(file)
    if not path.is_file():
        raise MiError("FileNotFound", f"The file '{_shown(file)}' does not exist or is not a file.")
    if path.stat().st_size > MAX_BYTES:
        raise _too_big(path.name)
    try:
        return path.read_bytes()[: MAX_BYTES + 1].decode("utf-8"), path.name
    except UnicodeDecodeError:
        raise MiError("InvalidDocument", f"{_shown(path.name)}: not a text file (YAML and JSON are UTF-8).") from None
    except OSError as exc:
        raise MiError("FileNotReadable", f"Cannot read '{_shown(file)}': {exc.strerror}.") from None


def _too_big(source: str) -> MiError:
    limit = f"{MAX_BYTES // 1048576} MiB" if MAX_BYTES % 1048576 == 0 else f"{MAX_BYTES:,} bytes"
    return MiError("DocumentTooLarge", f"{_shown(source)}: a tenant file can be at most {limit}; "
                   "split it into several files and apply each (without --prune).")


def _shown(text: str) -> str:
    return text if len(text) <= 200 else text[:200] + "..."


class DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        raise DuplicateKey(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return out


def read_document(text: str, source: str) -> Any:
    """The parsed document. A key repeated in any mapping is refused, naming it and its line (the
    last one would silently win, and with --prune that deletes what the first one declared)."""
    if text.lstrip().startswith(("{", "[")):
        try:  # JSON is YAML too, but the JSON parser reads a big file many times faster
            doc = json.loads(text, object_pairs_hook=_unique_pairs)
            _check_shape(doc, source)
            return doc
        except (ValueError, DuplicateKey):
            pass  # not strict JSON, or a repeated key: the YAML parser says where
        except RecursionError:
            raise _too_deep(source) from None
    import yaml  # here, not at the top: only apply reads YAML, and its import costs every command

    try:
        doc = _load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "the document"
        raise ApplyError("InvalidDocument", source, where, f"not valid YAML or JSON: {_shown(str(getattr(exc, 'problem', exc)))}") from None
    except _Refused as exc:
        raise ApplyError("InvalidDocument", source, exc.where, exc.message) from None
    if doc is None:
        raise ApplyError("InvalidDocument", source, "the document", "the file is empty.")
    return doc


class _Refused(Exception):
    def __init__(self, where: str, message: str) -> None:
        super().__init__(message)
        self.where, self.message = where, message


_NO_KEY = object()


def _load_yaml(text: str) -> Any:
    """The document built straight from libyaml's events, so memory stays proportional to it
    (PyYAML's loader first builds a node with two position marks for every scalar: 2 GB and 45 s
    for a 30 MB file). Scalars resolve as YAML 1.1's safe loader resolves them. A repeated key, an
    alias, a second document or nesting past MAX_DEPTH is refused with its line."""
    import yaml  # lazily, as in read_document(): only apply reads YAML
    from yaml import events

    loader_class = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser: much faster
    loader = loader_class(text)
    constructor = yaml.constructor.SafeConstructor()
    special = {c for c in loader_class.yaml_implicit_resolvers if c}  # first characters of non-strings
    stack: list[list[Any]] = []  # [container, the key waiting for its value]
    root: Any = None
    documents = 0

    def scalar(event: Any) -> Any:
        value = event.value
        if event.tag in (None, "!"):
            if not (event.implicit[0] and (not value or value[0] in special)):
                return value
            tag = loader.resolve(yaml.ScalarNode, value, event.implicit)
        else:
            tag = event.tag
        if tag == "tag:yaml.org,2002:str":
            return value
        return constructor.construct_object(yaml.ScalarNode(tag, value, event.start_mark, event.end_mark))

    def add(value: Any, mark: Any) -> None:
        nonlocal root
        if not stack:
            root = value
            return
        top = stack[-1]
        if isinstance(top[0], list):
            top[0].append(value)
        elif top[1] is _NO_KEY:
            if isinstance(value, (dict, list)):
                raise _Refused(f"line {mark.line + 1}", "a mapping or list cannot be a key.")
            if value in top[0]:
                raise yaml.constructor.ConstructorError(None, None, f"the key '{_shown(str(value))}' appears twice in one mapping", mark)
            top[1] = value
        else:
            top[0][top[1]] = value
            top[1] = _NO_KEY

    try:
        while loader.check_event():
            event = loader.get_event()
            kind = type(event)
            if kind is events.ScalarEvent:
                add(scalar(event), event.start_mark)
            elif kind is events.MappingStartEvent or kind is events.SequenceStartEvent:
                if len(stack) >= MAX_DEPTH:
                    raise _Refused("the document", f"nested deeper than {MAX_DEPTH} levels.")
                container: Any = {} if kind is events.MappingStartEvent else []
                add(container, event.start_mark)
                stack.append([container, _NO_KEY])
            elif kind is events.MappingEndEvent or kind is events.SequenceEndEvent:
                stack.pop()
            elif kind is events.AliasEvent:
                raise _Refused(f"line {event.start_mark.line + 1}", "YAML aliases (*name) are not accepted in tenant files.")
            elif kind is events.DocumentStartEvent:
                documents += 1
                if documents > 1:
                    raise _Refused(f"line {event.start_mark.line + 1}", "a tenant file holds one YAML document.")
    finally:
        loader.dispose()
    return root


def _check_shape(doc: Any, source: str) -> None:
    """JSON nested no deeper than MAX_DEPTH (the YAML reader counts as it goes). The JSON parser makes every
    mapping and list anew, so none is reached twice; only containers are walked, not the 100,000s of strings,
    a level at a time (no pair of node and depth for each)."""
    level = [doc] if isinstance(doc, (dict, list)) else []
    for _ in range(MAX_DEPTH):
        below = []
        for node in level:
            for child in (node.values() if type(node) is dict else node):
                if isinstance(child, (dict, list)):
                    below.append(child)
        if not below:
            return
        level = below
    if any(level):  # a mapping or list MAX_DEPTH levels down holds something: it lies deeper than that
        raise _too_deep(source)


def _too_deep(source: str) -> ApplyError:
    return ApplyError("InvalidDocument", source, "the document", f"nested deeper than {MAX_DEPTH} levels.")


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    return json.loads(package_files.files("mi_cli.catalog").joinpath("tenant.schema.json").read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def _validator():  # noqa: ANN202
    import fastjsonschema  # here: only apply validates, once per process

    # compiled once into Python code: jsonschema's interpreter took 1.5 s on 100,000 entries
    return fastjsonschema.compile(schema())


def check_schema(doc: Any, source: str) -> None:
    """The document against the published schema. Every invalid entry is reported, not only the first: once
    the whole document fails, each entry of each list is checked on its own, and the rest of the document
    without the lists."""
    from fastjsonschema import JsonSchemaValueException  # with the validator: only apply needs it

    try:
        _validator()(doc)
        return
    except JsonSchemaValueException as err:
        first = _schema_error(err, source)
    raise_all(_every_schema_error(doc, source) or [first], source)


def _schema_error(err: Any, source: str, prefix: tuple[str, ...] = ()) -> ApplyError:
    parts = [*prefix, *(str(p) for p in (err.path or [])[1:])]  # the first is the validator's name for the document
    path = "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in parts).lstrip(".") or "the document"
    cut = err.message.find(" must ")
    return ApplyError("InvalidDocument", source, path, err.message[cut + 1:] if cut >= 0 else err.message)


@lru_cache(maxsize=1)
def _part_validators() -> tuple[Any, dict[str, Any]]:
    """A validator of the document with its lists left unchecked, and one for an entry of each list."""
    import fastjsonschema

    # read again: compiling the whole schema rewrote its references in place (to the schema's $id, which each
    # part keeps, so that they resolve within the part)
    whole = json.loads(package_files.files("mi_cli.catalog").joinpath("tenant.schema.json").read_text(encoding="utf-8"))
    lists = {name: prop for name, prop in whole["properties"].items() if prop.get("type") == "array" and "items" in prop}
    shell = {**whole, "properties": {**whole["properties"], **{name: {"type": "array"} for name in lists}}}
    entries = {name: fastjsonschema.compile({"$schema": whole["$schema"], "$id": whole["$id"], **prop["items"],
                                             "definitions": whole.get("definitions", {})})
               for name, prop in lists.items()}
    return fastjsonschema.compile(shell), entries


def _every_schema_error(doc: Any, source: str) -> list[ApplyError]:
    from fastjsonschema import JsonSchemaValueException

    shell, entries = _part_validators()
    errors = []
    try:
        shell(doc)
    except JsonSchemaValueException as err:
        errors.append(_schema_error(err, source))
    if not isinstance(doc, dict):
        return errors
    for section, check in entries.items():
        items = doc.get(section)
        if not isinstance(items, list):
            continue  # the shell's error says so
        for i, item in enumerate(items):
            try:
                check(item)
            except JsonSchemaValueException as err:
                errors.append(_schema_error(err, source, (section, str(i))))
    return errors


def at(section: str, i: int, entry: dict) -> str:
    name = entry.get("name") or entry.get("roleName") or entry.get("displayName") or entry.get("url") or entry.get("assignee", "")
    return f"{section}[{i}] ({name})"


def count_entries(doc: dict[str, Any]) -> int:
    return sum(len(doc.get(k) or []) for k in ("resourceGroups", "userAssignedIdentities", "resources", "roleAssignments",
                                                 "applications", "appRoleAssignments"))
