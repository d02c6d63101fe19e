"""What a person sees at a real terminal of 80 and 200 columns: one line a row, no line wider than the
terminal, no GUID or id broken across lines, headers whole; empty listings say so; and the --query,
-o and verify behaviours of the output contract."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

import pytest

from mi_cli.tablefit import fit, minimum, shorten

GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
MARK = "\x1e"  # starts the runner's lines that separate one command's output from the next

SUB = "/subscriptions/{sub}"
LONG_NAME = "build-identity-for-the-nightly-pipeline"
LONG_GROUP = "rg-shared-identities-westeurope"


def small_tenant(ok, mi):
    """A group with a VM (system identity), a web app (system and a shared user-assigned identity), a
    vault and a storage account; two user-assigned identities (one of a long name, in a group of a long
    name), three role assignments and a federated credential."""
    ok("group", "create", "-n", "rg-app", "-l", "westeurope")
    ok("group", "create", "-n", LONG_GROUP, "-l", "westeurope")
    ok("resource", "create", "-g", "rg-app", "-n", "web-vm", "--type", "vm", "--system-assigned")
    ok("resource", "create", "-g", "rg-app", "-n", "api-app", "--type", "webapp")
    kv = ok("resource", "create", "-g", "rg-app", "-n", "kv-demo-01", "--type", "keyvault")["id"]
    st = ok("resource", "create", "-g", "rg-app", "-n", "stdemo01", "--type", "storage")["id"]
    shared = ok("identity", "create", "--user-assigned", "-g", LONG_GROUP, "-n", "shared-id")["id"]
    ok("identity", "create", "--user-assigned", "-g", "rg-app", "-n", LONG_NAME)
    ok("identity", "assign", "--resource", "api-app", "-g", "rg-app", "--identities", shared, "[system]")
    ok("identity", "assign", "--resource", "web-vm", "-g", "rg-app", "--identities", LONG_NAME)
    ok("role", "assignment", "create", "--assignee", "web-vm", "--role", "Key Vault Secrets User", "--scope", kv)
    ok("role", "assignment", "create", "--assignee", "api-app", "--role", "Storage Blob Data Contributor", "--scope", st)
    ok("role", "assignment", "create", "--assignee", LONG_NAME, "--role", "Contributor", "-g", "rg-app")
    ok("identity", "federated-credential", "create", "-n", "github-main", "--identity", LONG_NAME, "-g", "rg-app",
       "--issuer", "https://token.actions.githubusercontent.com", "--subject", "repo:contoso/app:ref:refs/heads/main")
    token = ok("token", "get", "--resource", "web-vm", "-g", "rg-app", "--audience", "https://vault.azure.net")
    return {"kv": kv, "token": token["access_token"]}


@pytest.fixture
def tenant(prebuilt):
    return prebuilt(small_tenant)


# Each command that prints a listing or a record for people, with the columns its table has at full width.
LISTINGS = {
    ("group", "list"): ["Name", "Location", "Status"],
    ("resource", "list"): ["Name", "ResourceGroup", "Location", "Type", "Identity"],
    ("identity", "list"): ["ClientId", "IsolationScope", "Location", "Name", "PrincipalId", "ResourceGroup", "TenantId"],
    ("identity", "list", "--kind", "all"): ["Kind", "Name", "ResourceGroup", "Location", "PrincipalId", "ClientId"],
    ("identity", "show", "-g", "rg-app", "-n", LONG_NAME):
        ["ClientId", "IsolationScope", "Location", "Name", "PrincipalId", "ResourceGroup", "TenantId"],
    ("identity", "list-resources", "-g", LONG_GROUP, "-n", "shared-id"): ["Name", "ResourceGroup", "Type"],
    ("identity", "federated-credential", "list", "--identity", LONG_NAME, "-g", "rg-app"):
        ["Name", "Issuer", "Subject", "Audiences"],
    ("sp", "list"): ["DisplayName", "Id", "AppId", "Kind", "For"],
    ("role", "assignment", "list", "--all"): ["Principal", "Role", "Scope"],
    ("role", "definition", "list", "--name", "Reader"): ["Name", "Type", "Actions", "DataActions", "Id"],
    ("access", "list", "--principal", "web-vm"): ["Scope", "Roles", "Actions", "DataActions"],
    ("log",): ["Time", "Operation", "Target", "Caller", "Status"],
    ("graph", "-o", "table"): ["From", "Edge", "To"],
    ("subscription", "list"): ["Name", "SubscriptionId", "TenantId", "IsDefault"],
}


def run_in_pty(argv: list[str], columns: int, env: dict[str, str] | None = None) -> str:
    """`argv` run in a pseudo-terminal of `columns` columns (its window size, as a terminal sets it):
    everything it wrote to stdout and stderr, as the terminal got it, control sequences removed."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    full_env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "MI_OUTPUT")}
    full_env.update(env or {})
    proc = subprocess.Popen(argv, env=full_env, stdin=follower, stdout=follower, stderr=follower, close_fds=True)
    os.close(follower)
    seen = b""
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 1)
            if ready:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # the other end closed: the program is done
                    break
                if not chunk:
                    break
                seen += chunk
            elif proc.poll() is not None:
                break
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(leader)
    return ANSI.sub("", seen.decode()).replace("\r\n", "\n")


# Several commands in one process at a terminal: each is mi's own main(), as the `mi` script calls it,
# with stdout and stderr the terminal; a marked line before and after each parts their outputs.
RUNNER = f"""
import json, sys
from mi_cli.cli.main import main
for argv in json.loads(sys.argv[1]):
    print({MARK!r} + json.dumps(argv), flush=True)
    code = main(argv)
    sys.stdout.flush(); sys.stderr.flush()
    print({MARK!r} + "exit " + str(code), flush=True)
"""


def at_terminal(db, columns: int, commands: list[tuple[str, ...]]) -> dict[tuple[str, ...], str]:
    """Each command's output at a terminal of `columns` columns; each must succeed."""
    text = run_in_pty([sys.executable, "-c", RUNNER, json.dumps([list(c) for c in commands])], columns,
                      {"MI_DB": str(db)})
    outputs: dict[tuple[str, ...], str] = {}
    for block in text.split(MARK)[1:]:
        first, _, rest = block.partition("\n")
        if first.startswith("exit "):
            assert first == "exit 0", (current, outputs[current])
        else:
            current = tuple(json.loads(first))
            outputs[current] = rest
    assert list(outputs) == list(commands), text[-2000:]
    return outputs


def known_values(ok, commands) -> set[str]:
    """Every string in the JSON forms of `commands`: what a table may show whole or shortened."""
    found: set[str] = set()

    def walk(value) -> None:  # noqa: ANN001
        if isinstance(value, str):
            found.add(value)
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(k)
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    for command in commands:
        walk(ok(*command))
    return found


def check_screen(text: str, columns: int, known: set[str]) -> None:
    """No line wider than the terminal; each GUID on a line whole; each id whole or shortened with an
    ellipsis into pieces of one known value, its end kept, never split across lines."""
    guids = {g for value in known for g in GUID.findall(value)}
    for line in text.splitlines():
        assert len(line) <= columns, line
        for g in guids:  # a GUID's head or tail on a line, without the GUID, is a GUID broken
            if g[:8] in line or g[-12:] in line:
                assert g in line, (g, line)
        for token in line.split():
            if "/" not in token or token.startswith("http"):
                continue
            token = token.strip("'(),")
            if "…" not in token:
                assert any(token in value for value in known), token
                continue
            pieces = [p for p in token.split("…") if p.strip("/")]
            assert pieces, token
            whole = [v for v in known if v.endswith(pieces[-1]) and all(p in v for p in pieces)]
            assert whole, token


def table_of(output: str) -> tuple[list[str], list[str], list[str]]:
    """(header words, rows, other lines) of a table's output at a terminal."""
    lines = output.splitlines()
    rule = next(i for i, line in enumerate(lines) if line and set(line) <= {"─", "-", " "})
    rows = [line for line in lines[rule + 1:] if line and not line.startswith("Not shown: ")]
    return lines[rule - 1].split(), rows, lines[:rule - 1] + [line for line in lines[rule + 1:] if line not in rows]


@pytest.mark.parametrize("columns", [80, 200])
def test_listings_at_a_terminal_keep_every_row_on_one_line_and_every_id_whole(db, ok, tenant, columns):
    commands = list(LISTINGS)
    screens = at_terminal(db, columns, commands)
    known = known_values(ok, commands)
    for command, output in screens.items():
        check_screen(output, columns, known)
        headers, rows, rest = table_of(output)
        full = LISTINGS[command]
        # headers whole and in the table's order; the rows as many as the data has, one line each
        assert headers == [h for h in full if h in headers], (command, headers)
        data = ok(*command)
        count = len(data["edges"]) if command[0] == "graph" else 1 if isinstance(data, dict) else len(data)
        assert len(rows) == count, (command, output)
        hidden = [h for h in full if h not in headers]
        if hidden:
            assert rest == [f"Not shown: {', '.join(hidden)} (see -o json)"], (command, output)
        else:
            assert rest == [], (command, output)


def test_at_80_columns_the_least_useful_columns_give_way_and_ids_are_shortened_in_the_middle(db, tenant):
    screens = at_terminal(db, 80, [("sp", "list"), ("identity", "list"), ("role", "assignment", "list", "--all"),
                                   ("log",)])
    # `mi sp list` of four principals: four lines of rows, not 27
    headers, rows, rest = table_of(screens[("sp", "list")])
    assert headers == ["DisplayName", "Id", "Kind"] and len(rows) == 4
    assert rest == ["Not shown: AppId, For (see -o json)"]
    # the tenant's id, location and isolation scope give way before an identity's own ids and name
    headers, rows, _ = table_of(screens[("identity", "list")])
    assert headers == ["ClientId", "Name", "ResourceGroup"]
    # a scope keeps its end: the group, or the type and name of the resource
    headers, rows, _ = table_of(screens[("role", "assignment", "list", "--all")])
    assert headers == ["Principal", "Role", "Scope"]
    assert {row.split()[-1] for row in rows} == {"…/resourceGroups/rg-app", "…/vaults/kv-demo-01", "…/storageAccounts/stdemo01"}
    headers, rows, _ = table_of(screens[("log",)])
    assert headers == ["Operation", "Target"]  # the time, the caller and the status go first
    assert "…/virtualMachines/web-vm" in screens[("log",)] or "…/rg-app/…/virtualMachines/web-vm" in screens[("log",)]


def test_at_200_columns_long_ids_are_shortened_not_split(db, ok, tenant):
    screens = at_terminal(db, 200, [("sp", "list")])
    headers, rows, rest = table_of(screens[("sp", "list")])
    assert headers == ["DisplayName", "Id", "AppId", "Kind", "For"] and rest == []
    by_name = {row.split()[0]: row.split()[-1] for row in rows}
    # the subscription's GUID (the same on every row) and the provider namespace go first
    assert by_name["web-vm"] == "/subscriptions/…/resourcegroups/rg-app/…/virtualMachines/web-vm"
    assert by_name[LONG_NAME].endswith(f"/userAssignedIdentities/{LONG_NAME}")


def test_a_real_mi_in_a_terminal_sized_by_its_window_or_by_columns(db, tenant):
    mi = [sys.executable, "-m", "mi_cli"]
    by_window = run_in_pty([*mi, "sp", "list"], 80, {"MI_DB": str(db)})
    assert len(by_window.splitlines()) == 7 and max(map(len, by_window.splitlines())) <= 80
    by_columns = run_in_pty([*mi, "sp", "list"], 200, {"MI_DB": str(db), "COLUMNS": "80"})
    assert by_columns == by_window  # COLUMNS wins over the window, as in rich and shutil


def many_identities(ok, mi):
    """More user-assigned identities than rich draws (RICH_ROW_LIMIT), from a tenant file."""
    from mi_cli.render import RICH_ROW_LIMIT

    entries = "".join(f"  - {{name: id-{i:04d}-for-a-long-running-workload, resourceGroup: rg-many}}\n"
                      for i in range(RICH_ROW_LIMIT + 20))
    with tempfile.TemporaryDirectory() as folder:
        tenant_file = Path(folder) / "many.yaml"
        tenant_file.write_text("apiVersion: mi/v1\nresourceGroups:\n  - {name: rg-many, location: westeurope}\n"
                               f"userAssignedIdentities:\n{entries}")
        assert mi("apply", "-f", str(tenant_file), "-o", "none").code == 0
    return RICH_ROW_LIMIT + 20


def test_a_long_listing_at_a_terminal_is_fitted_too(db, ok, prebuilt):
    count = prebuilt(many_identities)
    output = at_terminal(db, 80, [("identity", "list", "-g", "rg-many")])[("identity", "list", "-g", "rg-many")]
    # beyond RICH_ROW_LIMIT rows, plain aligned text, as off a terminal, but fitted as rich tables are
    headers, rows, rest = table_of(output)
    assert headers == ["ClientId", "Name", "ResourceGroup"] and len(rows) == count
    assert rest == ["Not shown: IsolationScope, Location, PrincipalId, TenantId (see -o json)"]
    check_screen(output, 80, known_values(ok, [("identity", "list", "-g", "rg-many")]))
    assert output.splitlines()[1].startswith("-" * 36 + "  ")


def test_tables_off_a_terminal_keep_az_layout_and_every_value_whole(mi, tenant):
    out = mi("sp", "list", "-o", "table", env={"COLUMNS": "80"}).out
    lines = out.splitlines()
    assert lines[0].split() == ["DisplayName", "Id", "AppId", "Kind", "For"] and set(lines[1]) == {"-", " "}
    assert "…" not in out and all("/subscriptions/" in line for line in lines[2:])  # az's piped table: full width


def test_the_demo_reads_cleanly_at_80_columns(tmp_path):
    text = run_in_pty([sys.executable, "-m", "mi_cli", "demo"], 80, {"TMPDIR": str(tmp_path)})
    lines = text.splitlines()
    assert "Run 'mi demo --keep demo.db' to keep this store" in text.replace("\n", " ")
    for line in lines:
        # the access token is one word a person copies whole: the terminal wraps it, nothing cuts it
        assert len(line) <= 80 or line.startswith("access_token: ey"), line
    assert "$ kv=$(mi resource show -g demo-rg -n kv-demo-01 --query id -o tsv)" in lines
    sp_list = text.split("$ mi sp list\n")[1].split("\n\n")[0].splitlines()
    assert sp_list[0].split() == ["DisplayName", "Id", "Kind"] and len(sp_list) == 6  # 3 principals, 6 lines


def test_an_empty_listing_says_so_at_a_terminal_and_prints_an_empty_list_for_machines(db, ok, mi, tenant):
    ok("group", "create", "-n", "rg-empty", "-l", "westeurope")
    screens = at_terminal(db, 80, [("identity", "list", "-g", "rg-empty"), ("resource", "list", "-g", "rg-empty"),
                                   ("identity", "list", "--query", "[?name=='nope']"),
                                   ("graph", "--query", "edges[?kind=='nope']")])
    assert screens[("identity", "list", "-g", "rg-empty")] == "No user-assigned identities found.\n"
    assert screens[("resource", "list", "-g", "rg-empty")] == "No resources found.\n"
    assert screens[("identity", "list", "--query", "[?name=='nope']")] == "No user-assigned identities found.\n"
    assert screens[("graph", "--query", "edges[?kind=='nope']")] == "No results.\n"
    for fmt, empty in (("json", "[]\n"), ("jsonc", "[]\n"), ("yaml", "[]\n"), ("tsv", ""), ("table", ""), ("none", "")):
        r = mi("identity", "list", "-g", "rg-empty", "-o", fmt)
        assert (r.code, r.out, r.err) == (0, empty, ""), fmt


def test_query_in_table_mode_keeps_the_keys_it_names_in_its_order(mi, tenant):
    out = mi("identity", "list", "-o", "table", "--query",
             "[].{Name: name, Group: resourceGroup, id: id, Tags: tags, Type: type}").out.splitlines()
    # as az, in the query's order; unlike knack, also id, type, objects and nulls when the query names them
    assert out[0].split() == ["Name", "Group", "Id", "Tags", "Type"]
    assert out[2].split()[:2] == [LONG_NAME, "rg-app"] and "/userAssignedIdentities/" in out[2]
    assert mi("group", "list", "-o", "table", "--query", "[].[name, location]").out.splitlines()[0].split() == \
        ["Column1", "Column2"]  # knack's names for a list's items
    # no query: knack's auto-table, keys sorted, no id, type or objects
    plain = mi("identity", "list", "-o", "table", "--query", "[?name=='shared-id']").out.splitlines()
    assert plain[0].split() == ["ClientId", "IsolationScope", "Location", "Name", "PrincipalId", "ResourceGroup", "TenantId"]


def test_token_verify_says_the_token_is_valid_and_what_was_checked(mi, tenant):
    r = mi("token", "verify", tenant["token"], "--audience", "https://vault.azure.net", "-o", "table")
    assert r.code == 0 and r.err == ""
    checks, claims = r.out.split("\n\n")
    rows = {line.split()[0]: line.split(None, 1)[1] for line in checks.splitlines()[2:]}
    assert rows["Valid"] == "yes" and rows["Audience"] == "https://vault.azure.net (as --audience asks)"
    assert rows["Issuer"].startswith("https://sts.windows.net/") and rows["Signature"].startswith("RS256")
    assert claims.splitlines()[0].split() == ["Claim", "Value"]
    assert mi("token", "verify", tenant["token"], "-o", "json").out.startswith('{\n  "claims"')
    r = mi("token", "verify", tenant["token"], "--audience", "https://storage.azure.com", "-o", "table")
    assert r.code == 1 and r.out == "" and "audience 'https://vault.azure.net' is not 'https://storage.azure.com'" in r.err


def test_graph_takes_output_and_query_and_keeps_its_diagrams(mi, tenant):
    assert mi("graph").out.startswith("flowchart LR")  # the diagram by default, MI_OUTPUT or not
    assert mi("graph", env={"MI_OUTPUT": "json"}).out.startswith("flowchart LR")
    assert mi("graph", "--format", "dot").out.startswith("digraph")
    assert mi("graph", "-o", "json").out == mi("graph", "--format", "json").out
    assert json.loads(mi("graph", "--query", "length(edges)").out) == 7  # a query asks for data: JSON off a terminal
    table = mi("graph", "-o", "table").out.splitlines()
    assert table[0].split() == ["From", "Edge", "To"] and table[2].split() == ["vm", "web-vm", "has", "system:", "web-vm"]
    r = mi("graph", "--format", "dot", "-o", "json")
    assert r.code == 2 and "Give --format (a diagram) or --output (data), not both." in r.err


def test_export_takes_query(mi, tenant):
    assert mi("export", "--query", "resourceGroups[].name").out == f"- rg-app\n- {LONG_GROUP}\n"
    assert json.loads(mi("export", "-o", "json", "--query", "userAssignedIdentities[].name").out) == \
        [LONG_NAME, "shared-id"]


def test_role_assignment_create_names_its_principal_as_list_does(mi, tenant):
    created = mi("role", "assignment", "create", "--assignee", "web-vm", "--role", "Reader", "-g", "rg-app", "-o", "table")
    listed = mi("role", "assignment", "list", "-g", "rg-app", "--role", "Reader", "-o", "table")
    assert created.out == listed.out and GUID.fullmatch(created.out.splitlines()[2].split()[0])


# The fitting on its own: what any width does to ids, GUIDs and headers.

ARM = "/subscriptions/299adda8-3b4d-4a7c-acf9-ec30824936e9/resourceGroups/rg-app/providers/Microsoft.KeyVault/vaults/kv1"
ASSIGNMENT = ("/subscriptions/299adda8-3b4d-4a7c-acf9-ec30824936e9/resourceGroups/rg-app/providers/Microsoft.KeyVault/"
              "vaults/kv1/providers/Microsoft.Authorization/roleAssignments/bfe1929d-949a-4f24-b376-db7c54248baf")


def test_an_arm_id_loses_whole_segments_the_least_telling_first():
    assert [shorten(ARM, w) for w in (200, 90, 60, 25, 12)] == [
        ARM,
        "/subscriptions/…/resourceGroups/rg-app/providers/Microsoft.KeyVault/vaults/kv1",
        "/subscriptions/…/resourceGroups/rg-app/…/vaults/kv1",
        "…/rg-app/…/vaults/kv1",
        "…/vaults/kv1",
    ]
    assert minimum(ARM) == len("…/vaults/kv1")
    # a GUID names itself: its type goes last, the GUID never
    assert shorten(ASSIGNMENT, 60) == "…/roleAssignments/bfe1929d-949a-4f24-b376-db7c54248baf"
    assert shorten(ASSIGNMENT, 40) == "…/bfe1929d-949a-4f24-b376-db7c54248baf"
    assert minimum("299adda8-3b4d-4a7c-acf9-ec30824936e9") == 36
    # a long name is shortened in its middle, its type kept
    long_id = ARM.replace("vaults/kv1", f"vaults/{LONG_NAME}")
    assert shorten(long_id, 30) == "…/vaults/build-iden…y-pipeline"
    assert minimum(long_id) == len("…/vaults/") + 16


def test_a_phrase_keeps_whole_words_at_both_ends_and_a_name_its_head_and_tail():
    assert shorten("Key Vault Secrets User", 14) == "Key Vault…User"
    assert shorten("Storage Blob Data Contributor", 25) == "Storage Blob…Contributor"
    assert shorten("app-prod-westeurope-01", 16) == "app-prod…rope-01"
    assert shorten("…", 5) == "…" and shorten("short", 3) == "s…t"


@pytest.mark.parametrize("width", [40, 60, 80, 100, 120, 160, 200, 240])
def test_any_width_gets_whole_headers_whole_guids_and_lines_that_fit(width):
    headers = ["DisplayName", "Id", "AppId", "Kind", "For", "TenantId"]
    guid = "299adda8-3b4d-4a7c-acf9-ec30824936e9"
    rows = [[name, guid, guid, "UserAssigned", ARM.replace("kv1", name), guid] for name in ("shared-id", LONG_NAME)]
    layout = fit(headers, rows, width)
    assert sum(layout.widths) + 2 * (len(layout.widths) - 1) <= width or layout.columns == [0]
    for i, w in zip(layout.columns, layout.widths):
        assert len(headers[i]) <= w
        for row in rows:
            cell = shorten(row[i], w)
            assert len(cell) <= w
            if row[i] == guid:
                assert cell == guid  # whole, or its column hidden
    assert 0 in layout.columns  # the name stays
    if width >= 200:
        assert layout.hidden == [5]  # the tenant, the same on every row, goes first
