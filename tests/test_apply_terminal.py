"""A big `mi apply` at a terminal: work shown from the first second, a plan that fits, a summary at the end."""

from __future__ import annotations

import json
import re

from tests.test_forwarding import Terminal, _env


def test_a_big_apply_shows_its_steps_its_first_changes_and_a_summary(tmp_path):
    doc = {"apiVersion": "mi/v1", "resourceGroups": [{"name": "rg", "location": "westeurope"}],
           "userAssignedIdentities": [{"name": f"id-{i:05d}", "resourceGroup": "rg"} for i in range(30_000)]}
    (tmp_path / "big.json").write_text(json.dumps(doc))
    code, out = Terminal(["--db", str(tmp_path / "s.db"), "apply", "-f", str(tmp_path / "big.json")], _env("here"),
                         columns=100).finish(timeout=600)
    assert code == 0, out[-2000:]
    # the steps before the bar (reading, parsing, checking) and the bar itself were on screen
    assert re.search(r"parsing .*big\.json|checking .*big\.json", out), out[:2000]
    assert "applying" in out
    lines = [line for line in re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", out).splitlines() if line.strip()]
    rows = [line for line in lines if line.startswith("create ")]
    assert len(rows) == 50 and "… and 29,952 more (-o json lists every one)" in lines
    assert lines[-1] == "applied: 30,002 create"
