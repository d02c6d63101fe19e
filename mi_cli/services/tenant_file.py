"""Tenant files (YAML or JSON): reading them, and checking them against the published JSON Schema."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources as package_files
from pathlib import Path
from typing import IO, Any

from mi_cli.errors import MiError

API_VERSION = "mi/v1"


class ApplyError(MiError):
    """An invalid entry: names the file, the path in the document, and what is wrong."""

    def __init__(self, code: str, source: str, path: str, message: str) -> None:
        super().__init__(code, f"{source}: {str(path)}: {message}")


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
        doc = yaml.load(text, Loader=_loader())  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "the document"
        raise ApplyError("InvalidDocument", source, where, f"not valid YAML or JSON: {_shown(str(getattr(exc, 'problem', exc)))}") from None
    except RecursionError:
        raise _too_deep(source) from None
    if doc is None:
        raise ApplyError("InvalidDocument", source, "the document", "the file is empty.")
    _check_shape(doc, source)
    return doc


@lru_cache(maxsize=1)
def _loader():  # noqa: ANN202
    import yaml

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser: much faster on big files

    class UniqueKeyLoader(base):  # type: ignore[misc, valid-type]
        def construct_mapping(self, node, deep=False):  # noqa: ANN001, ANN202
            seen: set = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if isinstance(key, str) and key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"the key '{_shown(key)}' appears twice in one mapping", key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def _check_shape(doc: Any, source: str) -> None:
    """No nesting deeper than the format has, and no mapping or list reached twice (YAML aliases,
    which could make a small file expand without bound or refer to itself)."""
    seen: set[int] = set()
    stack = [(doc, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise _too_deep(source)
        if isinstance(node, (dict, list)):
            if id(node) in seen:
                raise ApplyError("InvalidDocument", source, "the document",
                                 "a mapping or list is used twice (YAML anchors and aliases are not accepted).")
            seen.add(id(node))
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))


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
    from fastjsonschema import JsonSchemaValueException  # with the validator: only apply needs it

    try:
        _validator()(doc)
    except JsonSchemaValueException as err:
        parts = [str(p) for p in (err.path or [])[1:]]  # the first is the validator's name for the document
        path = "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in parts).lstrip(".") or "the document"
        cut = err.message.find(" must ")
        raise ApplyError("InvalidDocument", source, path, err.message[cut + 1:] if cut >= 0 else err.message) from None


def at(section: str, i: int, entry: dict) -> str:
    return f"{section}[{i}] ({entry.get('name') or entry.get('roleName') or entry.get('assignee', '')})"


def count_entries(doc: dict[str, Any]) -> int:
    return sum(len(doc.get(k) or []) for k in ("resourceGroups", "userAssignedIdentities", "resources", "roleAssignments"))
