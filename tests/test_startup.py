"""`--help` stays light: no SQLAlchemy, SQLModel, pydantic, jwt or server stack is imported for it."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("sqlalchemy", "sqlmodel", "pydantic", "jwt", "uvicorn", "starlette", "fastapi", "yaml", "jmespath")

PROBE = """
import json, sys
from mi_cli.cli.main import app, main

def paths(group, prefix=()):
    for info in group.registered_commands:
        yield (*prefix, info.name)
    for sub in group.registered_groups:
        yield (*prefix, sub.name)
        yield from paths(sub.typer_instance, (*prefix, sub.name))

codes = [main(["--help"])] + [main([*p, "--help"]) for p in paths(app)]
sys.stdout.flush()
print("\\n@@" + json.dumps({"codes": codes, "modules": sorted(sys.modules)}))
"""


def _probe(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(out.rsplit("@@", 1)[1])


def test_no_help_imports_the_store_or_server_stack():
    result = _probe(PROBE)
    assert set(result["codes"]) == {0}
    loaded = {m.split(".")[0] for m in result["modules"]}
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_plain_mi_help_does_not_import_rich():
    result = _probe("import sys, json\nfrom mi_cli.cli.main import main\nmain(['--help'])\nprint('\\n@@' + json.dumps({'modules': sorted(sys.modules)}))")
    assert not {m for m in result["modules"] if m.split(".")[0] in ("rich", *HEAVY)}
