"""Output as az gives it: JSON by default when stdout is not a terminal and a table at one; az's table
layout off a terminal; a service's error in az's three lines."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time

from tests.conftest import az_error


def test_scripts_get_json_by_default_and_mi_output_still_chooses(ok, mi):
    ok("group", "create", "-n", "rg", "-l", "westeurope")
    # knack's default output is json (azure-cli core: `output` defaults to 'json' in the config)
    assert json.loads(mi("group", "show", "-n", "rg").out)["name"] == "rg"
    assert mi("group", "show", "-n", "rg", "--query", "name").out == '"rg"\n'  # x=$(...) holds "rg", as with az
    assert mi("group", "show", "-n", "rg", "--query", "name", env={"MI_OUTPUT": "tsv"}).out == "rg\n"
    assert mi("group", "show", "-n", "rg", "-o", "yaml", env={"MI_OUTPUT": "tsv"}).out.startswith("id: ")


def test_tables_off_a_terminal_are_az_layout(ok, mi):
    ok("group", "create", "-n", "rg", "-l", "westeurope", "--tags", "a=1")
    ok("group", "create", "-n", "rg-second", "-l", "eastus")
    # knack _TableOutput: tabulate(headers="keys", tablefmt="simple", disable_numparse=True): two spaces
    # between columns, dashes as wide as each column, no trailing blanks
    assert mi("group", "list", "-o", "table").out == (
        "Name       Location    Status\n"
        "---------  ----------  ---------\n"
        "rg         westeurope  Succeeded\n"
        "rg-second  eastus      Succeeded\n")
    assert mi("group", "list", "-o", "table", "--query", "[].{n: name, default: `true`}").out == (
        "N          Default\n"
        "---------  -------\n"
        "rg         True\n"
        "rg-second  True\n")


def test_a_person_at_a_terminal_gets_a_table(db, tmp_path):
    env = {**os.environ, "MI_DB": str(db), "COLUMNS": "200"}
    env.pop("MI_OUTPUT", None)
    subprocess.run([sys.executable, "-m", "mi_cli", "group", "create", "-n", "rg", "-l", "westeurope"], env=env,
                   check=True, capture_output=True, timeout=120)
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "mi_cli", "group", "list"], env=env, stdin=follower, stdout=follower,
                            stderr=follower, close_fds=True)
    os.close(follower)
    seen = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 1)
        if ready:
            try:
                chunk = os.read(leader, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
    proc.wait(timeout=60)
    os.close(leader)
    text = seen.decode(errors="replace")
    assert proc.returncode == 0
    assert "Name" in text and "westeurope" in text and "{" not in text  # a table, not JSON


def test_a_service_error_is_az_s_three_lines_and_a_usage_error_one(mi):
    r = mi("group", "show", "-n", "nope")
    assert r.code == 3
    # azure-core's ODataV4Format, as az prints an ARM error
    # Azure's message, then mi's next step
    assert r.err == az_error("ResourceGroupNotFound", "Resource group 'nope' could not be found. Create it with 'mi group "
                                                      "create -n nope -l LOCATION', or list the groups with 'mi group list'.")
    r = mi("group", "show")
    assert r.code == 2 and r.err.count("\n") == 1 and r.err.startswith("ERROR: (UsageError)")
