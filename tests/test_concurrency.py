"""Real processes writing one store at once, SQLite file or PostgreSQL database: nothing lost, nothing locked."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from contextlib import contextmanager

import pytest

from tests.conftest import is_url

pytestmark = pytest.mark.both_stores

WORKER = """
import sys
from mi_cli.cli.main import main
db, worker = sys.argv[1], int(sys.argv[2])
for i in range(25):
    code = main(["--db", db, "identity", "create", "-g", "rg", "-n", f"w{worker}-id{i:02d}", "-o", "none"])
    if code != 0:
        sys.exit(code)
"""


# However loaded the machine, a worker that hangs fails the test after this long instead of hanging it.
DEADLINE = 600


@contextmanager
def workers(script: str, db, n: int = 8):
    """n processes running `script` on `db`; yields a function that waits for them all and returns
    [(exit code, stderr)]. Whatever happens meanwhile, none outlives the test."""
    procs = [subprocess.Popen([sys.executable, "-c", script, str(db), str(w)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for w in range(n)]

    def results() -> list[tuple[int, str]]:
        deadline = time.monotonic() + DEADLINE
        done = []
        for p in procs:
            # communicate() drains stderr while waiting: a chatty worker cannot block on a full pipe
            _, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            done.append((p.returncode, err))
        return done

    try:
        yield results
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            p.stderr.close()


def test_eight_processes_creating_25_identities_each_end_with_200(db, capfd):
    from mi_cli.cli.main import main

    assert main(["--db", str(db), "group", "create", "-n", "rg", "-l", "westeurope", "-o", "none"]) == 0
    with workers(WORKER, db) as wait:
        results = wait()
    assert [code for code, _ in results] == [0] * 8, [err for _, err in results]
    assert all("locked" not in err and "ERROR" not in err for _, err in results)
    capfd.readouterr()
    assert main(["--db", str(db), "identity", "list", "--kind", "user", "-o", "json"]) == 0
    listed = json.loads(capfd.readouterr().out)
    assert len(listed) == 200
    assert len({i["principalId"] for i in listed}) == 200
    assert main(["--db", str(db), "sp", "list", "-o", "json", "--query", "length(@)"]) == 0
    assert capfd.readouterr().out.strip() == "200"


OPS = '''
def ops(w):
    """100 mixed writes for worker w: its own VM and identities, and a web app every worker shares."""
    out = [["resource", "create", "-g", "rg", "-n", f"vm-{w}", "--type", "vm"]]
    i = 0
    while len(out) < 100:
        name = f"w{w}-id{i:02d}"
        out.append(["identity", "create", "-g", "rg", "-n", name])
        out.append(["identity", "assign", "--resource", f"vm-{w}", "-g", "rg", "--identities", name])
        if i % 5 == 0:
            out.append(["identity", "assign", "--resource", "app-shared", "-g", "rg", "--identities", name])
        if i % 4 == 3:
            out.append(["identity", "remove", "--resource", f"vm-{w}", "-g", "rg", "--identities", name])
            out.append(["identity", "delete", "-g", "rg", "-n", name, "--yes"])
        i += 1
    return out[:100]
'''

MIXED_WORKER = OPS + """
import sys
from mi_cli.cli.main import main
db, w = sys.argv[1], int(sys.argv[2])
for argv in ops(w):
    code = main(["--db", db, *argv, "-o", "none"])
    if code != 0:
        print("FAILED", argv, code, file=sys.stderr)
        sys.exit(code)
"""


def _state(db) -> dict:
    """The store as names: which identities exist, which resource lists which (live or dangling)."""
    import io
    from contextlib import redirect_stdout

    from mi_cli.cli.main import main

    def read(*argv):
        buffer = io.StringIO()
        with redirect_stdout(buffer):
            assert main(["--db", str(db), *argv, "-o", "json"]) == 0
        return json.loads(buffer.getvalue())

    tree = read("tree")
    [group] = tree["subscriptions"][0]["resourceGroups"]
    return {
        "identities": sorted(u["name"] for u in group["userAssignedIdentities"]),
        "attachments": {r["name"]: sorted((u["name"], u["status"]) for u in r["userAssigned"]) for r in group["resources"]},
        "principals": len(read("sp", "list")),
    }


def _setup(db) -> None:
    from mi_cli.cli.main import main

    for argv in (["group", "create", "-n", "rg", "-l", "westeurope"],
                 ["resource", "create", "-g", "rg", "-n", "app-shared", "--type", "webapp"]):
        assert main(["--db", str(db), *argv, "-o", "none"]) == 0


# The serial run's end state, as names: the same on either store, so made once, on an SQLite file.
_SERIAL: dict = {}


def _serial_state(folder) -> dict:
    from mi_cli.cli.main import main

    if not _SERIAL:
        serial = folder / "serial.db"
        _setup(serial)
        namespace: dict = {}
        exec(OPS, namespace)  # the same operations, one after another, in this process
        for w in range(8):
            for argv in namespace["ops"](w):
                assert main(["--db", str(serial), *argv, "-o", "none"]) == 0, argv
        _SERIAL.update(_state(serial))
    return dict(_SERIAL)


def test_eight_processes_of_mixed_writes_end_equal_to_the_serial_run(db, tmp_path, capfd):
    shared = db
    _setup(shared)
    namespace: dict = {}
    exec(OPS, namespace)
    with workers(MIXED_WORKER, shared) as wait:
        expected = _serial_state(tmp_path)  # while the workers run
        results = wait()
    assert [code for code, _ in results] == [0] * 8, [err for _, err in results]
    assert not any("locked" in err for _, err in results)
    capfd.readouterr()
    got = _state(shared)
    assert got == expected
    shared_writes = sum(1 for w in range(8) for argv in namespace["ops"](w) if argv[:2] == ["identity", "assign"] and "app-shared" in argv)
    assert len(got["attachments"]["app-shared"]) == shared_writes  # every worker's writes to the shared app landed
    assert ("w0-id15", "broken") in got["attachments"]["app-shared"]  # deleted after sharing: dangling, as in Azure


def _writing_sqlite(db) -> bool:
    wal = db.parent / f"{db.name}-wal"
    return wal.exists() and wal.stat().st_size > 4 * 1024 * 1024


def _writing_postgres(url: str) -> bool:
    """Whether a transaction that holds mi's write lock in this database waits for the identities' table (which
    the test holds: see _holding), having written its first batch's activity-log rows."""
    import psycopg

    from mi_cli.postgres import WRITE_LOCK

    with psycopg.connect(url, autocommit=True) as con:
        return con.execute(
            "SELECT EXISTS (SELECT FROM pg_locks waiting JOIN pg_locks writer ON writer.pid = waiting.pid "
            "WHERE waiting.relation = 'user_assigned_identity'::regclass AND NOT waiting.granted "
            "AND writer.locktype = 'advisory' AND writer.granted AND writer.objsubid = 1 "
            "AND writer.classid = %s AND writer.objid = %s) AND pg_relation_size('activity_log') > 256 * 1024",
            (WRITE_LOCK >> 32, WRITE_LOCK & 0xFFFFFFFF)).fetchone()[0]


def _holding(db):  # noqa: ANN001, ANN202 - a connection, or None
    """On PostgreSQL, a transaction holding the identities' table (SHARE: reads go on, writes wait), so that an
    apply stops at its first batch of identities, mid-write, until the test lets go (rollback)."""
    if not is_url(db):
        return None
    import psycopg

    holder = psycopg.connect(db)
    holder.execute("LOCK TABLE user_assigned_identity IN SHARE MODE")
    return holder


def test_killing_apply_midway_leaves_the_store_as_it_was(db, tmp_path, capfd):
    import os
    import signal
    import sqlite3

    from mi_cli.cli.main import main
    from tests.conftest import dump

    assert main(["--db", str(db), "group", "create", "-n", "rg-0", "-l", "westeurope", "-o", "none"]) == 0
    assert main(["--db", str(db), "identity", "create", "-g", "rg-0", "-n", "before-the-crash", "-o", "none"]) == 0
    before = dump(db)
    big = tmp_path / "big.json"
    big.write_text(json.dumps({
        "apiVersion": "mi/v1",
        "resourceGroups": [{"name": f"rg-{g}", "location": "westeurope"} for g in range(10)],
        "userAssignedIdentities": [{"name": f"id-{i:06d}", "resourceGroup": f"rg-{i % 10}"} for i in range(100_000)],
    }))
    writing = _writing_postgres if is_url(db) else _writing_sqlite
    holder = _holding(db)
    proc = subprocess.Popen([sys.executable, "-m", "mi_cli", "--db", str(db), "apply", "-f", str(big), "-o", "none"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if writing(db):  # well into writing its rows
                break
            time.sleep(0.02)
        assert proc.poll() is None, "apply finished before it could be killed"
        assert writing(db), "apply wrote nothing in 120 s"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if holder is not None:
            holder.rollback()
            holder.close()
    if not is_url(db):
        con = sqlite3.connect(db)
        try:
            assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        finally:
            con.close()
    assert dump(db) == before
    capfd.readouterr()
    assert main(["--db", str(db), "identity", "list", "-o", "tsv", "--query", "[].name"]) == 0
    assert capfd.readouterr().out == "before-the-crash\n"
    # and a writer gets the write lock the killed one held (on PostgreSQL: once the server has ended its session)
    assert main(["--db", str(db), "identity", "create", "-g", "rg-0", "-n", "after-the-crash", "-o", "none"]) == 0
    assert main(["--db", str(db), "identity", "list", "-o", "tsv", "--query", "[].name"]) == 0
    assert capfd.readouterr().out == "after-the-crash\nbefore-the-crash\n"
