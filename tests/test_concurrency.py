"""Real processes writing one SQLite store at once: nothing lost, nothing locked."""

from __future__ import annotations

import json
import subprocess
import sys

WORKER = """
import sys
from mi_cli.cli.main import main
db, worker = sys.argv[1], int(sys.argv[2])
for i in range(25):
    code = main(["--db", db, "identity", "create", "-g", "rg", "-n", f"w{worker}-id{i:02d}", "-o", "none"])
    if code != 0:
        sys.exit(code)
"""


def test_eight_processes_creating_25_identities_each_end_with_200(tmp_path, capfd):
    from mi_cli.cli.main import main

    db = tmp_path / "shared.db"
    assert main(["--db", str(db), "group", "create", "-n", "rg", "-l", "westeurope", "-o", "none"]) == 0
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(db), str(w)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for w in range(8)
    ]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    assert [code for code, _ in results] == [0] * 8, [err for _, err in results]
    assert all("locked" not in err and "ERROR" not in err for _, err in results)
    capfd.readouterr()
    assert main(["--db", str(db), "identity", "list", "--kind", "user", "-o", "json"]) == 0
    listed = json.loads(capfd.readouterr().out)
    assert len(listed) == 200
    assert len({i["principalId"] for i in listed}) == 200
    assert main(["--db", str(db), "sp", "list", "-o", "json", "--query", "length(@)"]) == 0
    assert capfd.readouterr().out.strip() == "200"
