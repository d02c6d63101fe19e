"""`--help` stays light: no SQLAlchemy, SQLModel, pydantic, jwt or server stack is imported for it."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("sqlalchemy", "sqlmodel", "pydantic", "jwt", "uvicorn", "starlette", "fastapi", "yaml", "jmespath")

PROBE = """
import json, sys
from mi_cli.cli.main import command, main

def paths(cmd, prefix=()):
    yield prefix
    for name, sub in getattr(cmd, "commands", {}).items():
        yield from paths(sub, (*prefix, name))

found = list(paths(command()))
codes = [main([*p, "--help"]) for p in found]
sys.stdout.flush()
print("\\n@@" + json.dumps({"paths": len(found), "codes": codes, "modules": sorted(sys.modules)}))
"""


def _probe(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(out.rsplit("@@", 1)[1])


def test_no_help_imports_the_store_or_server_stack():
    result = _probe(PROBE)
    assert result["paths"] > 25 and result["codes"] == [0] * result["paths"]
    loaded = {m.split(".")[0] for m in result["modules"]}
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_plain_mi_help_does_not_import_rich():
    result = _probe("import sys, json\nfrom mi_cli.cli.main import main\nmain(['--help'])\nprint('\\n@@' + json.dumps({'modules': sorted(sys.modules)}))")
    assert not {m for m in result["modules"] if m.split(".")[0] in ("rich", *HEAVY)}
