"""What a server keeps is kept only while the store is unchanged: the watch, the memo and the journal on both stores."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from datetime import datetime, timezone

import pytest

from mi_cli import changes
from mi_cli.errors import NotFoundError
from mi_cli.server.journal import Journal
from mi_cli.server.reads import Reading
from mi_cli.services import Ctx, access, assignments, groups, identities, resources
from mi_cli.store import open_store

ROW = {"operation": "Microsoft.ManagedIdentity/token/issue", "target": "/subscriptions/s/resourceGroups/rg", "caller": "c",
       "status": "Succeeded", "detail": "aud=x"}


def _row(**extra) -> dict:
    return {**ROW, "time": datetime.now(timezone.utc), **extra}


def _count(store) -> int:  # noqa: ANN001
    with store.transaction(write=False) as session:
        return session.connection().exec_driver_sql("SELECT count(*) FROM activity_log").scalar()


@pytest.fixture
def opened(db):
    store = open_store(str(db))
    with store.transaction(write=True) as session:
        groups.create(Ctx(session), "rg", "westeurope")
    watch = changes.watch(store)
    yield store, watch
    watch.close()
    store.close()


@pytest.mark.both_stores
def test_a_commit_by_another_process_or_connection_is_a_new_version_and_the_servers_own_log_rows_are_not(opened, db):
    store, watch = opened
    first, rows = watch.version(), _count(store)
    for i in range(3):
        watch.write_log([_row(detail=f"row {i}")])
        watch.write_log([_row(), _row()])
    assert _count(store) == rows + 9
    if store.engine.dialect.name == "sqlite":  # (on PostgreSQL any database's transaction may be a false alarm)
        assert watch.version() == first  # the server's own log rows are no change
    first = watch.version()
    with store.transaction(write=True) as session:  # this process, another connection
        groups.create(Ctx(session), "rg2", "westeurope")
    second = watch.version()
    assert second != first and watch.version() == second
    subprocess.run([sys.executable, "-m", "mi_cli", "--db", str(db), "group", "create", "-n", "rg3", "-l", "westeurope",
                    "-o", "none"], check=True)  # another process
    assert watch.version() != second


@pytest.mark.both_stores
def test_a_commit_made_while_the_server_writes_its_log_is_a_change(opened, db):
    """The server's own log write completes between the two versions too: only it is discounted."""
    store, watch = opened
    before = watch.version()
    other = store.engine.raw_connection()
    try:
        cursor = other.cursor()
        if store.engine.dialect.name == "sqlite":
            other.driver_connection.isolation_level = None
            cursor.execute("BEGIN IMMEDIATE")
            cursor.execute("INSERT INTO meta (key, value) VALUES ('watch-test', '1')")
            with pytest.raises(changes.Busy):  # SQLite has one writer: the log waits for it
                watch.write_log([_row()])
            cursor.execute("COMMIT")
            watch.write_log([_row()])
        else:
            cursor.execute("INSERT INTO meta (key, value) VALUES ('watch-test', '1')")  # in progress: has an id
            watch.version()
            from mi_cli.postgres import WRITE_LOCK

            cursor.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            with pytest.raises(changes.Busy):  # the store's write lock, as every writer takes it
                watch.write_log([_row()])
            other.commit()
            watch.write_log([_row()])
    finally:
        other.close()
    assert watch.version() != before


def test_the_transactions_completed_between_two_snapshots_are_the_changes_but_the_log_writers_own():
    watch = changes.PostgresWatch.__new__(changes.PostgresWatch)
    snap = changes._parse_snapshot  # noqa: SLF001
    watch._own = set()  # noqa: SLF001
    assert snap("100:104:100,102") == (100, 104, frozenset({100, 102}))
    assert not watch._others_completed(snap("100:104:100,102"), snap("100:104:100,102"))  # noqa: SLF001
    assert watch._others_completed(snap("100:104:100,102"), snap("101:104:102"))  # 100 committed  # noqa: SLF001
    assert watch._others_completed(snap("100:104:100"), snap("100:105:100"))  # 104 began and ended  # noqa: SLF001
    assert not watch._others_completed(snap("100:104:100"), snap("100:104:100,103"))  # noqa: SLF001
    watch._own = {104}  # noqa: SLF001
    assert not watch._others_completed(snap("100:104:100"), snap("100:105:100"))  # the log writer's own  # noqa: SLF001
    assert watch._others_completed(snap("100:104:100"), snap("100:106:100"))  # and another's  # noqa: SLF001
    assert not watch._others_completed(snap("100:104:100"), snap("100:106:100,105"))  # 105 still running  # noqa: SLF001
    watch._own = {100}  # noqa: SLF001
    assert not watch._others_completed(snap("100:104:100"), snap("104:104:"))  # noqa: SLF001


def test_a_memo_never_mixes_versions():
    memo = changes.Memo()
    old = memo.at(1)
    assert old is memo.at(1) and old.get(changes.SHARED) is True
    new = memo.at(2)
    old["k"] = "read before the change"  # a request that began before it: its version's memo, not the new one
    assert new is not old and "k" not in new and memo.at(2) is new
    assert memo.at(1) is not old  # a version seen again is a new memo (the store may have changed back and forth)


def test_remember_keeps_values_and_refusals_only_for_a_memo():
    calls = []

    def compute() -> str:
        calls.append(1)
        raise NotFoundError("Gone", "not there")

    shared = Ctx(session=None)
    shared.memo = changes.Memo().at(1)
    errors = []
    for _ in range(2):
        with pytest.raises(NotFoundError) as caught:
            changes.remember(shared, "k", compute, errors=(NotFoundError,))
        errors.append(caught.value)
    assert len(calls) == 1 and errors[0] is not errors[1] and errors[0].message == errors[1].message == "not there"
    plain = Ctx(session=None)  # one transaction's ctx: computed every time
    for _ in range(2):
        with pytest.raises(NotFoundError):
            changes.remember(plain, "k", compute, errors=(NotFoundError,))
    assert len(calls) == 3


def test_a_condition_on_the_time_is_evaluated_at_each_request_though_the_roles_are_kept(tmp_path):
    store = open_store(str(tmp_path / "store.db"))
    condition = "@Environment[UtcNow] DateTimeGreaterThan '2030-01-01T00:00:00.0Z'"
    read = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read"
    with store.transaction(write=True) as session:
        ctx = Ctx(session)
        g = groups.create(ctx, "rg", "westeurope")
        vm = resources.create(ctx, g, "vm1", "vm")
        identities.enable_system(ctx, vm)
        account = resources.create(ctx, g, "stdata01", "storage")
        assignments.create(ctx, vm.system_principal_id, "Storage Blob Data Reader", account.arm_id, condition=condition)
        principal, scope = vm.system_principal_id, f"{account.arm_id}/blobServices/default/containers/c/blobs/b"
    memo = changes.Memo().at(1)
    decisions = []
    for moment in (datetime(2029, 12, 31, tzinfo=timezone.utc), datetime(2030, 1, 2, tzinfo=timezone.utc)):
        with store.transaction(write=False) as session:
            ctx = Reading(session, clock=lambda moment=moment: moment)
            ctx.memo = memo
            decisions.append(access.check(ctx, principal, read, scope))
            assert ctx.volatile  # an answer that depends on the time is not kept whole
    assert [d.allowed for d in decisions] == [False, True]
    assert sum(1 for key in memo if isinstance(key, tuple) and key[0] == "rbac") == 1  # the assignments read once
    store.close()


def test_rows_wait_for_a_store_held_by_another_process_and_none_is_lost(tmp_path):
    store = open_store(str(tmp_path / "store.db"))
    watch = changes.watch(store)
    journal = Journal(watch)
    rows = _count(store)
    holder = sqlite3.connect(tmp_path / "store.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # as a long `mi apply` holds the store
    try:
        with pytest.raises(changes.Busy):  # on the event loop: at once, to be answered from a worker thread
            journal.append([_row()], defer=True)
        with pytest.raises(changes.Busy):  # from a worker thread: after the store's busy timeout, as a write would
            journal.append([_row()], timeout=0.2, defer=True)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    journal.append([_row(), _row()], defer=True)  # answered: written with the next batch, or at the stop
    journal.append([_row()])  # written before it returns, with the rows waiting before it
    assert journal.close() == 0 and _count(store) == rows + 3 and journal.written == 3
    watch.close()
    store.close()


def test_a_reader_waits_for_the_rows_a_server_holds(tmp_path):
    store = open_store(str(tmp_path / "store.db"))
    watch = changes.watch(store)
    assert watch.hold()  # rows wait
    settled = threading.Event()
    reader = threading.Thread(target=lambda: (changes.settle(store.engine, timeout=60), settled.set()))
    reader.start()
    reader.join(0.3)
    assert not settled.is_set()  # still waiting for the rows held
    watch.release()
    reader.join(60)
    assert settled.is_set()
    watch.close()
    store.close()


def test_the_claims_of_a_token_are_kept_only_within_its_lifetime():
    now = datetime.now(timezone.utc).timestamp()
    assert access._current({"nbf": now - 10, "iat": now - 10, "exp": now + 10})  # noqa: SLF001
    assert not access._current({"nbf": now - 20, "iat": now - 20, "exp": now - 1})  # noqa: SLF001
    assert not access._current({"nbf": now + 60, "iat": now - 1, "exp": now + 100})  # noqa: SLF001
