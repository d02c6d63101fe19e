"""The resource providers' operations (package data): which names exist, and which are data actions."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources as package_files


@lru_cache(maxsize=1)
def _operations() -> dict[str, set[bool]]:
    data = json.loads(package_files.files("mi_cli.catalog").joinpath("operations.json").read_text(encoding="utf-8"))
    table: dict[str, set[bool]] = {}
    for op in data["operations"]:
        table.setdefault(op["name"].casefold(), set()).add(op["isDataAction"])
    return table


def known_operation(name: str) -> bool:
    return name.casefold() in _operations()


def is_data_action(name: str) -> bool | None:
    """True or False from the providers' operation lists; None when unknown or listed as both."""
    kinds = _operations().get(name.casefold())
    return next(iter(kinds)) if kinds and len(kinds) == 1 else None


def providers() -> list[str]:
    return sorted({name.split("/", 1)[0] for name in _operations()})
