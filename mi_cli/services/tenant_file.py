"""Tenant files (YAML or JSON): reading them, and checking them against the published JSON Schema."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources as package_files
from typing import Any

from mi_cli.errors import MiError

API_VERSION = "mi/v1"


class ApplyError(MiError):
    """An invalid entry: names the file, the path in the document, and what is wrong."""

    def __init__(self, code: str, source: str, path: str, message: str) -> None:
        super().__init__(code, f"{source}: {str(path)}: {message}")


def read_document(text: str, source: str) -> Any:
    if text.lstrip().startswith(("{", "[")):
        try:  # JSON is YAML too, but the JSON parser reads a big file many times faster
            return json.loads(text)
        except ValueError:
            pass  # not strict JSON: let the YAML parser read it and say where it fails
    import yaml  # here, not at the top: only apply reads YAML, and its import costs every command

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser: much faster on big files
    try:
        doc = yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "the document"
        raise ApplyError("InvalidDocument", source, where, f"not valid YAML or JSON: {getattr(exc, 'problem', exc)}") from None
    if doc is None:
        raise ApplyError("InvalidDocument", source, "the document", "the file is empty.")
    return doc


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
