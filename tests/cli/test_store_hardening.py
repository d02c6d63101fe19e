"""The store under what a disk, a file system and other processes do to it: damaged pages, special files,
locks, read-only folders, a full disk, odd paths and seeds. Each ends in one line that names its cause,
before anything is written, and never in a traceback or an InternalError."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import sqlite3
import stat
import struct
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

from mi_cli.cli.main import main
from mi_cli.errors import StoreError
from mi_cli.store import _store_error, open_store

# However loaded the machine, a command that hangs fails its test after this long instead of hanging it.
DEADLINE = 120

CLI = "import sys; from mi_cli.cli.main import main; sys.exit(main(sys.argv[1:]))"


def cli(*args: str, preexec_fn=None) -> subprocess.CompletedProcess:  # noqa: ANN001
    """`mi` in its own process (for what could hang, or needs its own limits), stopped after DEADLINE."""
    return subprocess.run([sys.executable, "-c", CLI, *args], capture_output=True, text=True, timeout=DEADLINE,
                          preexec_fn=preexec_fn, cwd=Path(__file__).parents[2])


def one_line(err: str, code: str) -> None:
    assert err.startswith(f"ERROR: ({code}) ") and err.count("\n") == 1, err
    assert "InternalError" not in err and "Traceback" not in err


def run(capsys, *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(list(args))
    return code, capsys.readouterr().err


def make_store(path: Path, identities: int = 3) -> None:
    for argv in (["group", "create", "-n", "rg", "-l", "westeurope"],
                 *(["identity", "create", "-g", "rg", "-n", f"id{i}"] for i in range(identities))):
        assert main(["--db", str(path), *argv, "-o", "none"]) == 0


def beside(path: Path) -> list[str]:
    """What a store left next to it (-wal, -shm, -journal)."""
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(path.name + "-"))


# -- 1. damaged stores ------------------------------------------------------------------------------------


def _page(path: Path, table: str) -> tuple[int, int]:
    """(offset in the file, page size) of `table`'s root page."""
    con = sqlite3.connect(path)
    try:
        size = con.execute("PRAGMA page_size").fetchone()[0]
        root = con.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
    finally:
        con.close()
    return (root - 1) * size, size


def _damage_a_cell(path: Path, table: str) -> None:
    """Overwrite the size of a cell in the middle of `table`'s root page (a leaf of a few rows): its
    record now claims to run far past the end of the page."""
    start, size = _page(path, table)
    with open(path, "r+b") as f:
        f.seek(start)
        page = f.read(size)
        assert page[0] == 13, "the table's root page is a leaf: a few rows only"
        cells = struct.unpack(">H", page[3:5])[0]
        assert cells >= 3
        middle = struct.unpack(">H", page[8 + 2 * (cells // 2): 10 + 2 * (cells // 2)])[0]
        f.seek(start + middle)
        f.write(b"\xff\xff\xff\xff")


def test_a_damaged_page_is_found_before_a_write_and_nothing_is_written(tmp_path, capsys):
    db = tmp_path / "store.db"
    make_store(db)
    _damage_a_cell(db, "user_assigned_identity")
    before = db.read_bytes()
    code, err = run(capsys, "--db", str(db), "identity", "create", "-g", "rg", "-n", "new", "-o", "none")
    assert code == 1
    one_line(err, "StoreCorrupt")
    assert f"The store '{db}' is damaged" in err and "nothing was changed" in err and "backup" in err
    assert db.read_bytes() == before
    assert beside(db) == []


@pytest.mark.parametrize("offset, data, what", [
    (16, b"\x00\x00", "page size"),  # SQLite: file is not a database
    (20, b"\xff", "reserved bytes per page"),  # pages read wrong: found by the bulk writer's own cursor
    (108, b"\xff\xff", "page 1's first cell pointer"),  # SQLite: database disk image is malformed
])
def test_a_damaged_header_or_first_page_is_one_line(tmp_path, capsys, offset, data, what):
    db = tmp_path / "store.db"
    make_store(db)
    with open(db, "r+b") as f:
        f.seek(offset)
        f.write(data)
    before = db.read_bytes()
    code, err = run(capsys, "--db", str(db), "identity", "create", "-g", "rg", "-n", "new", "-o", "none")
    assert code == 1, what
    one_line(err, "StoreCorrupt")
    assert db.read_bytes() == before


def test_damage_found_by_a_statement_inside_a_transaction_is_a_store_error(tmp_path):
    """The token server and apply run statements of their own: any of them that meets a damaged page
    raises the same StoreError, which the server answers 500."""
    db = tmp_path / "store.db"
    make_store(db)
    _damage_a_cell(db, "user_assigned_identity")
    store = open_store(db)
    try:
        with pytest.raises(StoreError) as caught:
            with store.transaction(write=False) as session:
                session.connection().exec_driver_sql("SELECT * FROM user_assigned_identity").all()
        assert caught.value.code == "StoreCorrupt"
        with pytest.raises(StoreError) as caught:
            with store.transaction(write=True) as session:  # the driver's own cursor, as the bulk writer uses
                session.connection().connection.driver_connection.execute(
                    "SELECT * FROM user_assigned_identity").fetchall()
        assert caught.value.code == "StoreCorrupt"
    finally:
        store.close()


def test_pages_are_checked_as_they_are_read(db):
    store = open_store(db)
    with store.transaction(write=False) as session:
        assert session.connection().exec_driver_sql("PRAGMA cell_size_check").scalar() == 1
    store.close()


# -- 2. special files ---------------------------------------------------------------------------------------


def test_a_fifo_is_refused_at_once(tmp_path):
    fifo = tmp_path / "store.db"
    os.mkfifo(fifo)
    r = cli("--db", str(fifo), "group", "list")  # before: blocked for ever opening it
    assert (r.returncode, r.stdout) == (1, "")
    one_line(r.stderr, "InvalidStore")
    assert "is a FIFO, not a regular file" in r.stderr
    assert beside(fifo) == []


@pytest.fixture
def dev_null_untouched():
    """Nothing may appear beside /dev/null; if something does (a regression), it is removed."""
    names = ("/dev/null-journal", "/dev/null-wal", "/dev/null-shm")
    there = {n for n in names if os.path.lexists(n)}
    yield
    made = [n for n in names if os.path.lexists(n) and n not in there]
    for n in made:
        os.unlink(n)
    assert made == [], f"the store path made {made}"


def test_dev_null_and_a_link_to_it_are_refused_and_nothing_is_made_beside_them(tmp_path, capsys, dev_null_untouched):
    link = tmp_path / "store.db"
    link.symlink_to("/dev/null")
    for path in ("/dev/null", str(link)):
        code, err = run(capsys, "--db", path, "identity", "create", "-g", "rg", "-n", "x", "-o", "none")
        assert code == 1
        one_line(err, "InvalidStore")
        assert "is a character device, not a regular file" in err
    assert beside(link) == []


def test_a_directory_a_link_to_one_and_a_socket_are_refused(tmp_path, capsys):
    folder = tmp_path / "folder"
    folder.mkdir()
    link = tmp_path / "link.db"
    link.symlink_to(folder)
    sock_path = tmp_path / "sock.db"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    try:
        for path, expected in [(folder, "is a directory"), (link, "is a directory"),
                               (sock_path, "is a socket, not a regular file")]:
            code, err = run(capsys, "--db", str(path), "group", "list")
            assert code == 1
            one_line(err, "InvalidStore")
            assert expected in err
        assert list(folder.iterdir()) == []
        assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "link.db", "sock.db"]
    finally:
        sock.close()


def test_an_empty_file_others_can_read_is_made_private_before_the_key_goes_in(tmp_path, capsys):
    db = tmp_path / "store.db"
    db.touch()
    db.chmod(0o644)
    code, _ = run(capsys, "--db", str(db), "group", "create", "-n", "rg", "-l", "westeurope", "-o", "none")
    assert code == 0
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    code, err = run(capsys, "--db", str(db), "group", "list", "-o", "none")  # a normal store now
    assert (code, err) == (0, "")


def test_a_broken_link_is_refused_and_its_target_is_not_created(tmp_path, capsys):
    link = tmp_path / "store.db"
    target = tmp_path / "elsewhere.db"
    link.symlink_to(target)
    code, err = run(capsys, "--db", str(link), "group", "create", "-n", "rg", "-l", "westeurope", "-o", "none")
    assert code == 1
    one_line(err, "InvalidStore")
    assert f"is a symbolic link to '{target}', which does not exist" in err
    assert not target.exists()  # before: SQLite made it, mode 0644


# -- 3. locks, read-only places, a full disk, folders that cannot be made ------------------------------------


def test_a_store_held_in_exclusive_locking_mode_is_busy_not_unreadable(tmp_path, capsys, monkeypatch):
    db = tmp_path / "store.db"
    make_store(db, identities=0)
    monkeypatch.setenv("MI_BUSY_TIMEOUT", "0.2")
    holder = sqlite3.connect(db, isolation_level=None)
    try:
        holder.execute("PRAGMA locking_mode = EXCLUSIVE")
        holder.execute("BEGIN IMMEDIATE")
        holder.execute("UPDATE meta SET value = value WHERE key = 'schema_version'")
        holder.execute("COMMIT")  # the lock stays: exclusive mode keeps it until the connection closes
        for argv in (["group", "list"], ["group", "create", "-n", "rg2", "-l", "westeurope"]):
            code, err = run(capsys, "--db", str(db), *argv, "-o", "none")
            assert code == 1
            assert err == (f"ERROR: (StoreBusy) The store '{db}' stayed locked by another process for 0.2 s; "
                           "try again, or wait longer with MI_BUSY_TIMEOUT (seconds).\n")
    finally:
        holder.close()
    monkeypatch.delenv("MI_BUSY_TIMEOUT")
    assert run(capsys, "--db", str(db), "group", "list", "-o", "none")[0] == 0


@pytest.fixture
def immutable():
    """chattr +i on paths (root cannot write there either), always undone."""
    made: list[Path] = []

    def set_(path: Path) -> None:
        if shutil.which("chattr") is None:
            pytest.skip("no chattr")
        r = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
        if r.returncode:
            pytest.skip(f"chattr +i is not possible here: {r.stderr.strip()}")
        made.append(path)

    yield set_
    for path in made:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_a_store_in_a_read_only_folder_says_so(tmp_path, capsys, immutable):
    folder = tmp_path / "ro"
    folder.mkdir()
    db = folder / "store.db"
    make_store(db, identities=0)
    immutable(folder)
    before = db.read_bytes()
    for argv in (["group", "list"], ["group", "create", "-n", "rg2", "-l", "westeurope"]):
        code, err = run(capsys, "--db", str(db), *argv, "-o", "none")
        assert code == 1
        one_line(err, "StoreReadOnly")
        assert f"is in the read-only folder '{folder}'" in err, err
    assert db.read_bytes() == before


def test_a_read_only_store_file_says_so(tmp_path, capsys, immutable):
    db = tmp_path / "store.db"
    make_store(db, identities=0)
    immutable(db)
    code, err = run(capsys, "--db", str(db), "group", "list", "-o", "none")
    assert code == 1
    one_line(err, "StoreReadOnly")
    assert f"The store '{db}' is read-only" in err


def test_sqlites_own_read_only_error_is_mapped(tmp_path):
    """What SQLite raises for a store it may only read, from a real read-only connection (the mapping
    test that needs neither root tricks nor a read-only mount)."""
    db = tmp_path / "store.db"
    make_store(db, identities=0)
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        with pytest.raises(sqlite3.OperationalError) as raised:
            con.execute("DELETE FROM meta")
    finally:
        con.close()
    error = _store_error(raised.value, str(db), 1.0)
    assert error.code == "StoreReadOnly" and f"The store '{db}'" in error.message and "read-only" in error.message


NAMESPACE = shutil.which("unshare")


def in_mount_namespace(script: str) -> dict:
    """Run a Python `script` as root in a mount namespace of its own (for a tmpfs or a read-only bind
    that no other process sees); it prints one JSON object. Skips where that is not allowed."""
    if NAMESPACE is None or shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("needs root, unshare and mount for a private mount")
    probe = subprocess.run([NAMESPACE, "-m", "true"], capture_output=True)
    if probe.returncode:
        pytest.skip("mount namespaces are not allowed here")
    r = subprocess.run([NAMESPACE, "-m", sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=DEADLINE, cwd=Path(__file__).parents[2])
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


MOUNTED = """
import hashlib, json, os, subprocess, sys
from contextlib import redirect_stderr, redirect_stdout
import io
from mi_cli.cli.main import main
where, mount = {where!r}, {mount!r}
subprocess.run(mount, shell=True, check=True)
db = os.path.join(where, "store.db")
{prepare}
digest = lambda: hashlib.sha256(open(db, "rb").read()).hexdigest()
before = digest()
out = []
for argv in {commands!r}:
    err = io.StringIO()
    with redirect_stderr(err), redirect_stdout(io.StringIO()):
        code = main(["--db", db, *argv, "-o", "none"])
    out.append([code, err.getvalue()])
print(json.dumps({{"results": out, "same": digest() == before, "beside": sorted(os.listdir(where))}}))
"""


def test_a_store_on_a_read_only_mount_says_so(tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    make_store(folder / "store.db", identities=0)
    script = MOUNTED.format(where=str(folder), mount=f"mount --bind -o ro {folder} {folder}",
                            prepare="", commands=[["group", "list"], ["group", "create", "-n", "g", "-l", "westeurope"]])
    found = in_mount_namespace(script)
    for code, err in found["results"]:
        assert code == 1
        one_line(err, "StoreReadOnly")
        assert "is on a read-only file system" in err, err
    assert found["same"] and found["beside"] == ["store.db"]


def test_a_full_disk_is_named_and_the_store_is_unchanged(tmp_path):
    template = tmp_path / "template.db"
    make_store(template, identities=0)
    folder = tmp_path / "small"
    folder.mkdir()
    many = tmp_path / "many.json"
    many.write_text(json.dumps({"apiVersion": "mi/v1", "resourceGroups": [{"name": "rg", "location": "westeurope"}],
                                "userAssignedIdentities": [{"name": f"id{i}", "resourceGroup": "rg",
                                                            "location": "westeurope"} for i in range(2000)]}))
    # A tmpfs of 1 MiB holding the store, then filled up to 64 KiB left: room for the -shm file and a
    # few pages of -wal, not for 2,000 identities.
    prepare = textwrap.dedent(f"""
        import shutil
        shutil.copy({str(template)!r}, db)
        os.chmod(db, 0o600)
        fill = os.open(os.path.join(where, "fill"), os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while os.write(fill, b"0" * 4096):
                pass
        except OSError:  # ENOSPC: the disk is full
            pass
        os.ftruncate(fill, max(0, os.fstat(fill).st_size - 65536))
        os.close(fill)
    """)
    script = MOUNTED.format(where=str(folder), mount=f"mount -t tmpfs -o size=1m tmpfs {folder}",
                            prepare=prepare, commands=[["apply", "-f", str(many)], ["group", "list"]])
    found = in_mount_namespace(script)
    (code, err), (after, after_err) = found["results"]
    assert code == 1
    one_line(err, "StoreFull")
    assert f"The disk holding the store '{folder / 'store.db'}' is full" in err
    assert (after, after_err) == (0, "")  # the store still works once the command gave up
    assert found["same"], "a failed command changed the store"


def test_a_file_size_limit_is_named(tmp_path):
    """RLIMIT_FSIZE (ulimit -f): SQLite sees a failed write, not a full disk; the line says which limit."""
    import resource
    import signal

    db = tmp_path / "store.db"
    make_store(db, identities=0)
    before = db.read_bytes()
    many = tmp_path / "many.json"
    many.write_text(json.dumps({"apiVersion": "mi/v1", "userAssignedIdentities": [
        {"name": f"id{i}", "resourceGroup": "rg", "location": "westeurope"} for i in range(2000)]}))

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))

    r = cli("--db", str(db), "apply", "-f", str(many), "-o", "none", preexec_fn=limit)
    assert r.returncode == 1
    one_line(r.stderr, "StoreIOError")
    assert "files larger than 65,536 bytes" in r.stderr, r.stderr
    assert db.read_bytes() == before


@pytest.mark.parametrize("where", ["/proc/no-such-process/store.db", "{tmp}/file/sub/store.db",
                                   "{tmp}/file/store.db"])
def test_a_store_folder_that_cannot_be_made_is_one_line(tmp_path, capsys, where):
    (tmp_path / "file").write_text("a file, not a folder\n")
    path = where.format(tmp=tmp_path)
    code, err = run(capsys, "--db", path, "group", "list")
    assert code == 1
    one_line(err, "InvalidStore")
    assert "cannot be created" in err


# -- 4. seeds ------------------------------------------------------------------------------------------------


def test_a_seed_that_is_not_utf8_is_used_as_its_bytes(tmp_path):
    """A seed only names a sequence: its bytes, whatever they are, are hashed as they are, so a seed that is
    UTF-8 gives the GUIDs it always gave."""

    def first_principal(db: Path, seed: bytes) -> str:
        env = {k: v for k, v in os.environ.items() if k != "MI_SEED"}
        envb = {os.fsencode(k): os.fsencode(v) for k, v in env.items()}
        envb[b"MI_SEED"] = seed
        code = CLI
        r = subprocess.run([sys.executable, "-c", code, "--db", str(db), "group", "create", "-n", "rg", "-l",
                            "westeurope", "-o", "none"], env=envb, capture_output=True, text=True, timeout=DEADLINE,
                           cwd=Path(__file__).parents[2])
        assert (r.returncode, r.stderr) == (0, "")
        r = subprocess.run([sys.executable, "-c", code, "--db", str(db), "identity", "create", "-g", "rg", "-n", "abc",
                            "--query", "principalId", "-o", "tsv"], env=envb, capture_output=True, text=True,
                           timeout=DEADLINE, cwd=Path(__file__).parents[2])
        assert (r.returncode, r.stderr) == (0, ""), r.stderr
        return r.stdout.strip()

    raw = first_principal(tmp_path / "a.db", b"\xff\xfe")
    assert raw == first_principal(tmp_path / "b.db", b"\xff\xfe")  # reproducible
    assert raw != first_principal(tmp_path / "c.db", b"\xff\xfd")
    utf8 = first_principal(tmp_path / "d.db", "sé".encode())
    assert utf8 != raw
    # The same seed as text gives the GUIDs it gave before: sha256("seed:n") for the n-th GUID.
    assert utf8 in {str(uuid.UUID(bytes=hashlib.sha256(f"sé:{n}".encode()).digest()[:16], version=4))
                    for n in range(1, 20)}


# -- 5. threads of one process waiting to write --------------------------------------------------------------


def test_a_thread_waiting_for_another_threads_write_gives_up_after_the_busy_timeout(db, monkeypatch):
    make_store(db, identities=0)
    monkeypatch.setenv("MI_BUSY_TIMEOUT", "0.3")
    store = open_store(db)
    inside, release = threading.Event(), threading.Event()
    outcome: list = []

    def long_write() -> None:
        with store.transaction(write=True):
            inside.set()
            release.wait(DEADLINE)

    def second_write() -> None:
        try:
            with store.transaction(write=True):
                outcome.append("wrote")
        except StoreError as exc:
            outcome.append(exc)

    first = threading.Thread(target=long_write)
    first.start()
    try:
        assert inside.wait(DEADLINE)
        second = threading.Thread(target=second_write)
        second.start()
        second.join(DEADLINE)  # before: it waited for the first write to end, however long
        assert not second.is_alive(), "the second writer waited past its busy timeout"
    finally:
        release.set()
        first.join(DEADLINE)
        store.close()
    [error] = outcome
    assert isinstance(error, StoreError) and error.code == "StoreBusy"
    assert "stayed locked by another writer for 0.3 s" in error.message


def test_time_spent_waiting_for_another_thread_counts_against_the_busy_timeout(db, monkeypatch):
    """What a writer waited for the process's own lock is taken off SQLite's busy timeout: one timeout
    bounds the whole wait."""
    make_store(db, identities=0)
    store = open_store(db)
    inside, release = threading.Event(), threading.Event()
    seen: list[int] = []

    def long_write() -> None:
        with store.transaction(write=True):
            inside.set()
            release.wait(DEADLINE)

    def second_write() -> None:
        with store.transaction(write=True) as session:
            seen.append(session.connection().exec_driver_sql("PRAGMA busy_timeout").scalar())

    first = threading.Thread(target=long_write)
    first.start()
    try:
        assert inside.wait(DEADLINE)
        second = threading.Thread(target=second_write)
        second.start()
        # Once the second writer waits on the lock, keep it waiting for at least half a second.
        deadline = time.monotonic() + DEADLINE
        while not _waiting_for_the_write_lock(second) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.5)
    finally:
        release.set()
        first.join(DEADLINE)
    second.join(DEADLINE)
    with store.transaction(write=True) as session:  # and the next transaction has the whole timeout again
        seen.append(session.connection().exec_driver_sql("PRAGMA busy_timeout").scalar())
    store.close()
    assert seen[0] <= 60_000 - 500 and seen[1] > seen[0], seen


def _waiting_for_the_write_lock(thread: threading.Thread) -> bool:
    frame = sys._current_frames().get(thread.ident)
    while frame is not None:
        if frame.f_code.co_name == "_acquire_write_lock":
            return True
        frame = frame.f_back
    return False


# -- 6. odd paths and a store that changes under a running command --------------------------------------------


def test_a_path_with_a_nul_character_is_one_line(tmp_path, capsys):
    code, err = run(capsys, "--db", f"{tmp_path}/a\x00b.db", "group", "list")
    assert code == 1
    one_line(err, "InvalidStore")
    assert "contains a NUL character" in err
    assert list(tmp_path.iterdir()) == []


def test_paths_too_long_are_one_line_and_leave_nothing(tmp_path, capsys):
    deep = tmp_path
    while len(str(deep)) < 600:  # each name is short; the whole path is more than SQLite takes
        deep = deep / ("d" * 50)
    for path in (tmp_path / ("n" * 300), deep / "store.db", Path("/" + "x" * 5000)):
        code, err = run(capsys, "--db", str(path), "group", "list")
        assert code == 1, path
        one_line(err, "InvalidStore")
        assert "too long" in err, err
    assert list(tmp_path.iterdir()) == []


def test_a_path_with_uri_characters_is_the_store_itself(tmp_path, capsys):
    db = tmp_path / "a?b#c%20d.db"
    code, _ = run(capsys, "--db", str(db), "group", "create", "-n", "rg", "-l", "westeurope", "-o", "none")
    assert code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [db.name]  # before: the store went to 'a', mode 0644
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    con = sqlite3.connect(db)
    assert con.execute("SELECT name FROM resource_group").fetchall() == [("rg",)]
    con.close()


def test_a_store_replaced_or_deleted_while_open_is_one_line_and_not_recreated(tmp_path):
    db = tmp_path / "store.db"
    make_store(db, identities=0)
    store = open_store(db)  # as `mi serve` holds it
    try:
        with store.transaction(write=False):
            pass
        db.unlink()
        for write in (False, True):  # before: read and written through the connections still open on it
            with pytest.raises(StoreError) as caught:
                with store.transaction(write=write) as session:
                    session.connection().exec_driver_sql("SELECT count(*) FROM meta").scalar()
            assert caught.value.code == "InvalidStore" and "no longer exists" in caught.value.message
        with pytest.raises(StoreError) as caught:
            with store.transaction(write=False):
                with store.transaction(write=False):
                    pass
        assert not db.exists()  # before: a new connection made a new, empty file, mode 0644
        db.write_text("notes, not a store\n")
        with pytest.raises(StoreError) as caught:
            with store.transaction(write=False):
                pass
        assert caught.value.code == "InvalidStore" and "was replaced by another file" in caught.value.message
    finally:
        store.close()


def test_a_dry_run_on_a_damaged_store_is_one_line(tmp_path, capsys):
    db = tmp_path / "store.db"
    make_store(db)
    _damage_a_cell(db, "user_assigned_identity")
    manifest = tmp_path / "t.json"
    manifest.write_text(json.dumps({"apiVersion": "mi/v1", "userAssignedIdentities": [
        {"name": "more", "resourceGroup": "rg", "location": "westeurope"}]}))
    code, err = run(capsys, "--db", str(db), "apply", "-f", str(manifest), "--dry-run", "-o", "none")
    assert code == 1
    one_line(err, "StoreCorrupt")


@pytest.mark.parametrize("suffix, make", [("-wal", os.mkfifo), ("-shm", os.mkfifo), ("-wal", os.mkdir),
                                          ("-journal", os.mkfifo)])
def test_a_special_file_where_sqlite_keeps_its_wal_is_refused(tmp_path, suffix, make):
    db = tmp_path / "store.db"
    make_store(db, identities=0)
    make(f"{db}{suffix}")
    # Before: a FIFO journal hung the open (SQLite reads it to look for a hot journal); a FIFO WAL was an
    # I/O error, and then removed.
    r = cli("--db", str(db), "group", "list")
    assert (r.returncode, r.stdout) == (1, "")
    one_line(r.stderr, "InvalidStore")
    assert f"The file '{db}{suffix}' beside the store is a" in r.stderr
    assert os.path.lexists(f"{db}{suffix}")
