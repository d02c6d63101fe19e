"""What only a PostgreSQL store has: its URL and login, its errors, its write lock, its order and time zone, its bulk writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone

import psycopg
import pytest
import yaml

from mi_cli.postgres import WRITE_LOCK
from tests.conftest import dump, one_error, run_mi

# However loaded the machine, a child process that hangs fails the test after this long instead of hanging it.
DEADLINE = 300


@pytest.fixture
def new_pg_db(pg_server):
    """A second new, empty database, beside the test's `pg_db`."""
    url = pg_server.database()
    yield url
    pg_server.drop(url)


def ok(db, *args: str):
    r = run_mi(db, *args, "-o", "json")
    assert (r.code, r.err) == (0, ""), (args, r.err)
    return json.loads(r.out) if r.out.strip() else None


def sql(url: str, statement: str, *params):
    """One statement on the store's database, committed; its rows, if it returns any."""
    with psycopg.connect(url, autocommit=True) as con:
        cur = con.execute(statement, params or None)
        return cur.fetchall() if cur.description else None


def only_error(r, code: str) -> str:
    """The message of a failed command that printed one error of `code` in az's form, and nothing else."""
    assert r.code != 0 and r.out == "", (r.code, r.out, r.err)
    assert r.err.startswith(f"ERROR: ({code}) ") and one_error(r.err), r.err
    return r.err.split("\n")[0]


# -- the URL, the login, and what is shown of them -------------------------------------------------------

def test_an_unreachable_server_is_one_line_that_never_shows_the_password():
    from tests.pg import _free_port

    port = _free_port()  # nothing listens there
    for url in (f"postgresql://mi:s3cret-pw@127.0.0.1:{port}/mi", f"postgresql://mi@127.0.0.1:{port}/mi?password=s3cret-pw"):
        line = only_error(run_mi(url, "identity", "list"), "StoreUnavailable")
        assert r"\n" not in line and "s3cret-pw" not in line, line
        assert f"The store 'postgresql://mi@127.0.0.1:{port}/mi' cannot be reached: " in line
        assert line.endswith("Is the PostgreSQL server running?")


def test_a_missing_database_names_createdb_and_a_bad_url_is_refused(pg_server):
    r = run_mi(f"{pg_server.base}/mi_no_such_database", "group", "list")
    line = only_error(r, "InvalidStore")
    assert "the server has no database 'mi_no_such_database'" in line and "createdb mi_no_such_database" in line
    user_at = pg_server.base.split("://", 1)[1]
    for url in (f"postgresql://{user_at.split('@')[0]}:s3cret-pw@host:port/db", f"postgresql://{user_at}/",
                f"postgresql://{user_at}/db?password=s3cret-pw&frobnicate=1"):
        line = only_error(run_mi(url, "group", "list"), "InvalidStore")
        assert "s3cret-pw" not in line and "URL" in line, line


@pytest.fixture
def password_login(pg_server, pg_db):
    """(role, password, URL without a password) of a role that must give a password (SCRAM), owning the
    test's database. The test server trusts every other login; this one line of pg_hba.conf asks it."""
    if pg_server.folder is None:
        pytest.skip("a server given by MI_TEST_POSTGRES: its pg_hba.conf is not this test's to change")
    role, password = f"mi_pw_{os.getpid()}", "c0rrect-h0rse"
    pg_server.admin(f"DROP ROLE IF EXISTS {role}")
    pg_server.admin(f"SET password_encryption = 'scram-sha-256'; CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    database = pg_db.rsplit("/", 1)[1]
    pg_server.admin(f'ALTER DATABASE "{database}" OWNER TO {role}')
    hba = pg_server.folder / "data" / "pg_hba.conf"
    rules = hba.read_text()
    hba.write_text(f"host all {role} 127.0.0.1/32 scram-sha-256\n{rules}")
    hostport = pg_server.base.rsplit("@", 1)[1]
    url = f"postgresql://{role}@{hostport}/{database}"
    try:
        pg_server.admin("SELECT pg_reload_conf()")
        deadline = time.monotonic() + DEADLINE
        while True:  # the server reloads its rules when it gets to it: until then the role is trusted
            try:
                psycopg.connect(url).close()
            except psycopg.OperationalError:
                break
            assert time.monotonic() < deadline, "the server never asked for the password"
            time.sleep(0.05)
        yield role, password, url
    finally:
        hba.write_text(rules)
        pg_server.admin("SELECT pg_reload_conf()")
        pg_server.drop(pg_db)  # before the role that owns it
        pg_server.admin(f"DROP ROLE IF EXISTS {role}")


def test_a_password_from_the_url_pgpassword_or_a_pgpassfile_is_used_and_never_shown(password_login, tmp_path, monkeypatch):
    role, password, url = password_login
    scheme, rest = url.split("://", 1)
    rest = rest.split("@", 1)[1]  # HOST:PORT/DATABASE
    line = only_error(run_mi(url, "group", "list"), "InvalidStore")
    assert "refused the login" in line and "PGPASSWORD" in line
    for wrong in (f"{scheme}://{role}:not-{password}@{rest}", f"{url}?password=not-{password}"):
        line = only_error(run_mi(wrong, "group", "list"), "InvalidStore")
        assert "password authentication failed" in line and password not in line and f"'{url}'" in line, line
    assert ok(f"{scheme}://{role}:{password}@{rest}", "group", "create", "-n", "rg-url", "-l", "westeurope")["name"] == "rg-url"
    monkeypatch.setenv("PGPASSWORD", f"not-{password}")
    line = only_error(run_mi(url, "group", "list"), "InvalidStore")
    assert "password authentication failed" in line and password not in line
    monkeypatch.setenv("PGPASSWORD", password)
    ok(url, "group", "create", "-n", "rg-env", "-l", "westeurope")
    monkeypatch.delenv("PGPASSWORD")
    passfile = tmp_path / "pgpass"
    host, port = rest.split("/", 1)[0].split(":")
    passfile.write_text(f"{host}:{port}:*:{role}:{password}\n")
    passfile.chmod(0o600)  # libpq ignores a password file others may read
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    ok(url, "group", "create", "-n", "rg-file", "-l", "westeurope")
    assert [g["name"] for g in ok(url, "group", "list")] == ["rg-env", "rg-file", "rg-url"]


# -- what the database holds -----------------------------------------------------------------------

def test_a_database_with_tables_of_its_own_is_not_an_mi_store_and_is_left_alone(pg_db):
    sql(pg_db, "CREATE TABLE invoices (id int PRIMARY KEY, total numeric)")
    sql(pg_db, "INSERT INTO invoices VALUES (1, 9.5)")
    before = dump(pg_db)
    line = only_error(run_mi(pg_db, "identity", "list"), "InvalidStore")
    assert line.endswith("is a database with tables of its own, but not an mi store.")
    assert dump(pg_db) == before


def test_a_store_of_a_newer_schema_is_refused_and_left_alone(pg_db):
    from mi_cli import models

    ok(pg_db, "group", "create", "-n", "rg", "-l", "westeurope")
    sql(pg_db, "UPDATE meta SET value = %s WHERE key = 'schema_version'", str(models.SCHEMA_VERSION + 1))
    before = dump(pg_db)
    for argv in (["group", "list"], ["group", "create", "-n", "rg2", "-l", "westeurope"]):
        line = only_error(run_mi(pg_db, *argv), "UnsupportedStoreVersion")
        assert f"has schema version {models.SCHEMA_VERSION + 1}, newer than this mi understands" in line
    assert dump(pg_db) == before


def _columns(url: str, table: str) -> list[tuple]:
    return sorted(sql(url, "SELECT column_name, data_type, collation_name, is_nullable FROM information_schema.columns "
                           "WHERE table_schema = 'public' AND table_name = %s", table))


def test_a_store_of_an_older_schema_is_migrated_to_what_a_new_one_has(pg_db, new_pg_db):
    from mi_cli import models

    ok(pg_db, "group", "create", "-n", "rg", "-l", "westeurope")
    # the store as version 3 left it: role assignments without their condition or update time, and none
    # of the tables later versions added
    sql(pg_db, "ALTER TABLE role_assignment DROP COLUMN condition, DROP COLUMN condition_version, DROP COLUMN updated_at")
    for table in ("federation_issuer", "app_role_assignment", "application_secret", "application", "storage_account",
                  "key_vault_secret", "certificate_authority"):
        sql(pg_db, f"DROP TABLE {table}")
    sql(pg_db, "UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    assert [g["name"] for g in ok(pg_db, "group", "list")] == ["rg"]
    assert sql(pg_db, "SELECT value FROM meta WHERE key = 'schema_version'") == [(str(models.SCHEMA_VERSION),)]
    ok(new_pg_db, "group", "list")
    tables = sql(new_pg_db, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
    assert sorted(tables) == sorted(sql(pg_db, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"))
    for (table,) in tables:
        assert _columns(pg_db, table) == _columns(new_pg_db, table), table
    ok(pg_db, "identity", "create", "-g", "rg", "-n", "reader")
    assignment = ok(pg_db, "role", "assignment", "create", "--assignee", "reader", "--role", "Storage Blob Data Reader",
                    "-g", "rg", "--condition", "@Resource[Microsoft.Storage/storageAccounts/blobServices/containers:name] "
                    "StringEquals 'logs'", "--condition-version", "2.0")
    assert assignment["conditionVersion"] == "2.0"


# -- the write lock ----------------------------------------------------------------------------------

def test_with_no_wait_a_held_write_lock_is_store_busy_and_nothing_changes(pg_db, tmp_path, monkeypatch):
    ok(pg_db, "group", "create", "-n", "rg", "-l", "westeurope")
    tenant = tmp_path / "t.yaml"
    tenant.write_text("apiVersion: mi/v1\nuserAssignedIdentities:\n  - {name: planned, resourceGroup: rg}\n")
    with psycopg.connect(pg_db, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (WRITE_LOCK,))
        before = dump(pg_db)
        monkeypatch.setenv("MI_BUSY_TIMEOUT", "0")
        for argv in (["identity", "create", "-g", "rg", "-n", "blocked"], ["apply", "-f", str(tenant)],
                     # a dry run on PostgreSQL is the real transaction, rolled back: it takes the lock too
                     ["apply", "-f", str(tenant), "--dry-run"]):
            line = only_error(run_mi(pg_db, *argv), "StoreBusy")
            assert "stayed locked by another writer for 0 s" in line and "MI_BUSY_TIMEOUT" in line
        assert ok(pg_db, "identity", "list") == []  # a reader never waits for a writer
        assert dump(pg_db) == before
    monkeypatch.delenv("MI_BUSY_TIMEOUT")
    ok(pg_db, "identity", "create", "-g", "rg", "-n", "unblocked")


def test_a_writer_waits_for_a_held_write_lock_and_then_succeeds(pg_db):
    ok(pg_db, "group", "create", "-n", "rg", "-l", "westeurope")
    with psycopg.connect(pg_db, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (WRITE_LOCK,))
        # the default wait (a minute): the test never comes near it, the lock is released as soon as it is asked for
        proc = subprocess.Popen([sys.executable, "-m", "mi_cli", "--db", pg_db, "identity", "create", "-g", "rg", "-n",
                                 "patient", "-o", "none"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + DEADLINE
            while not holder.execute(
                    "SELECT EXISTS (SELECT FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objsubid = 1 "
                    "AND classid = %s AND objid = %s AND database = (SELECT oid FROM pg_database WHERE datname = "
                    "current_database()))", (WRITE_LOCK >> 32, WRITE_LOCK & 0xFFFFFFFF)).fetchone()[0]:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "the writer never asked for the lock"
                time.sleep(0.02)
            assert proc.poll() is None  # waiting for the lock
            holder.execute("SELECT pg_advisory_unlock(%s)", (WRITE_LOCK,))
            out, err = proc.communicate(timeout=DEADLINE)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert (proc.returncode, out, err) == (0, "", "")
    assert [i["name"] for i in ok(pg_db, "identity", "list")] == ["patient"]


def test_processes_opening_an_empty_database_at_once_make_one_store(pg_db):
    procs = [subprocess.Popen([sys.executable, "-m", "mi_cli", "--db", pg_db, "group", "create", "-n", f"rg-{w}", "-l",
                               "westeurope", "-o", "none"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for w in range(8)]
    try:
        done = [(p.communicate(timeout=DEADLINE), p.returncode) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [(code, out, err) for (out, err), code in done] == [(0, "", "")] * 8
    assert [g["name"] for g in ok(pg_db, "group", "list")] == [f"rg-{w}" for w in range(8)]
    assert [s["name"] for s in ok(pg_db, "subscription", "list")] == ["mi-subscription"]  # one tenant, made once
    assert sql(pg_db, "SELECT count(*) FROM tenant") == [(1,)]


def test_a_connection_cut_in_the_middle_of_a_bulk_apply_is_one_error_and_changes_nothing(pg_db, tmp_path):
    ok(pg_db, "group", "create", "-n", "rg-0", "-l", "westeurope")
    before = dump(pg_db)
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"apiVersion": "mi/v1", "resourceGroups": [{"name": "rg-0", "location": "westeurope"}],
                               "userAssignedIdentities": [{"name": f"id-{i:05d}", "resourceGroup": "rg-0"} for i in range(20_000)]}))
    # The identities' table is held (SHARE: reads go on, writes wait), so the apply stops at its first batch of
    # identities, its log rows and principals written, holding the write lock: there its session is ended.
    with psycopg.connect(pg_db, autocommit=True) as admin, psycopg.connect(pg_db) as holder:
        holder.execute("LOCK TABLE user_assigned_identity IN SHARE MODE")
        proc = subprocess.Popen([sys.executable, "-m", "mi_cli", "--db", pg_db, "apply", "-f", str(big), "-o", "none"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + DEADLINE
            while True:
                row = admin.execute(
                    "SELECT waiting.pid FROM pg_locks waiting JOIN pg_locks writer ON writer.pid = waiting.pid "
                    "WHERE waiting.relation = 'user_assigned_identity'::regclass AND NOT waiting.granted "
                    "AND writer.locktype = 'advisory' AND writer.granted AND writer.objsubid = 1 "
                    "AND writer.classid = %s AND writer.objid = %s AND pg_relation_size('activity_log') > 256 * 1024",
                    (WRITE_LOCK >> 32, WRITE_LOCK & 0xFFFFFFFF)).fetchone()
                if row:
                    break
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "apply never reached the identities' table"
                time.sleep(0.02)
            admin.execute("SELECT pg_terminate_backend(%s)", row)
            out, err = proc.communicate(timeout=DEADLINE)
        finally:
            holder.rollback()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 1 and out == "", err
    assert err.startswith("ERROR: (StoreUnavailable) ") and one_error(err), err
    assert dump(pg_db) == before


def test_text_postgresql_cannot_hold_is_refused_in_one_line_and_changes_nothing(pg_db, tmp_path):
    ok(pg_db, "group", "create", "-n", "rg", "-l", "westeurope")
    ok(pg_db, "resource", "create", "-g", "rg", "-n", "kv-nul", "--type", "keyvault")
    before = dump(pg_db)
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"before\x00after")  # Key Vault keeps it, and so does an SQLite store
    line = only_error(run_mi(pg_db, "keyvault", "secret", "set", "--vault-name", "kv-nul", "-n", "s1", "-f", str(secret)),
                      "UnsupportedValue")
    assert "U+0000" in line and "nothing was changed" in line
    assert dump(pg_db) == before


# -- the same answers as SQLite -----------------------------------------------------------------------

def test_listings_come_in_sqlites_byte_order_whatever_the_databases_collation(pg_db, tmp_path, monkeypatch):
    monkeypatch.setenv("MI_SEED", "order")
    groups = ["rg-b", "rg_b", "rg.b", "rg(b)", "RG-Zed", "rg-é", "rg-f", "rg0", "rgb"]
    identities = ["a-bc", "a_bc", "abc", "Zed", "b-c", "bcd", "a0c", "A1c", "ab-"]
    outputs = []
    for db in (tmp_path / "store.db", pg_db):
        for g in groups:
            ok(db, "group", "create", "-n", g, "-l", "westeurope")
        for i in identities:
            ok(db, "identity", "create", "-g", "rg0", "-n", i)
        outputs.append([run_mi(db, *argv, "-o", "json").out for argv in (["group", "list"], ["identity", "list"])])
    sqlite, postgres = outputs
    assert postgres == sqlite
    names = [g["name"] for g in json.loads(postgres[0])]
    assert names == sorted(groups, key=str.casefold)  # code points: UTF-8's byte order
    # the database's own collation (ICU's en-US) would have put them otherwise: the test tells them apart
    collated = [n for (n,) in sql(pg_db, "SELECT n FROM unnest(%s::text[]) AS n ORDER BY lower(n)", groups)]
    assert collated != names
    assert [i["name"] for i in json.loads(postgres[1])] == sorted(identities, key=str.casefold)


def test_times_are_utc_whatever_the_servers_time_zone(pg_db, pg_server):
    assert sql(pg_db, "SHOW timezone") == [("Pacific/Auckland",)] or pg_server.folder is None
    ok(pg_db, "group", "create", "-n", "rg", "-l", "westeurope")
    ok(pg_db, "identity", "create", "-g", "rg", "-n", "now")
    now = datetime.now(timezone.utc)
    for entry in ok(pg_db, "log"):
        stamp = datetime.fromisoformat(entry["eventTimestamp"])
        assert abs((stamp - now).total_seconds()) < 600, (entry["eventTimestamp"], now)  # not 12 or 13 hours off
    # and the instant stored is the right one, seen from a session in the server's own zone
    [(behind,)] = sql(pg_db, "SELECT max(abs(extract(epoch FROM now() - time))) FROM activity_log")
    assert behind < 600
    # an entry of two hours ago is outside the last hour, and inside the last three
    sql(pg_db, "INSERT INTO activity_log (time, operation, target, caller, status) "
               "VALUES (now() - interval '2 hours', 'Old/write', '/old', 'someone', 'Succeeded')")
    assert "Old/write" not in {e["operationName"] for e in ok(pg_db, "log", "--since", "1h")}
    assert "Old/write" in {e["operationName"] for e in ok(pg_db, "log", "--since", "3h")}


def test_after_a_bulk_apply_single_writes_take_keys_after_it(pg_db, tmp_path):
    doc = {"apiVersion": "mi/v1", "resourceGroups": [{"name": "rg", "location": "westeurope"}],
           "userAssignedIdentities": [{"name": f"id-{i:03d}", "resourceGroup": "rg"} for i in range(300)],
           "resources": [{"name": f"vm-{i:03d}", "type": "vm", "resourceGroup": "rg",
                          "identity": {"systemAssigned": True, "userAssigned": [f"id-{i:03d}"]}} for i in range(100)]}
    tenant = tmp_path / "bulk.json"
    tenant.write_text(json.dumps(doc))
    assert run_mi(pg_db, "apply", "-f", str(tenant), "-o", "none").code == 0
    ok(pg_db, "identity", "create", "-g", "rg", "-n", "one-more")
    ok(pg_db, "resource", "create", "-g", "rg", "-n", "vm-more", "--type", "vm", "--system-assigned")
    ok(pg_db, "identity", "assign", "--resource", "vm-more", "-g", "rg", "--identities", "one-more")
    ok(pg_db, "group", "create", "-n", "rg-more", "-l", "westeurope")
    assert len(ok(pg_db, "identity", "list")) == 301
    # every key sequence is at or past its table's largest key: the next insert of any kind finds its key free
    for table, column, last in sql(pg_db, "SELECT c.table_name, c.column_name, s.last_value FROM information_schema.columns c "
                                          "JOIN pg_sequences s ON pg_get_serial_sequence(c.table_name, c.column_name) = "
                                          "s.schemaname || '.' || s.sequencename WHERE c.table_schema = 'public'"):
        [(largest,)] = sql(pg_db, f'SELECT max("{column}") FROM "{table}"')
        assert largest is None or (last or 0) >= largest, (table, last, largest)


TENANT = {
    "apiVersion": "mi/v1",
    "subscriptions": [{"name": "prod"}],
    "resourceGroups": [{"name": "rg-app", "location": "westeurope", "tags": {"env": "prod"}},
                       {"name": "rg-ids", "subscription": "prod", "location": "northeurope"}],
    "userAssignedIdentities": [
        {"name": "deployer", "resourceGroup": "rg-app", "tags": {"team": "core"},
         "federatedCredentials": [{"name": "main", "issuer": "https://token.actions.githubusercontent.com",
                                   "subject": "repo:org/app:ref:refs/heads/main"}]},
        {"name": "far-away", "resourceGroup": "rg-ids", "subscription": "prod"}],
    "resources": [{"name": "web", "type": "webapp", "resourceGroup": "rg-app",
                   "identity": {"systemAssigned": True, "userAssigned": ["deployer"]}},
                  {"name": "kv-app-01", "type": "keyvault", "resourceGroup": "rg-app"}],
    "roleAssignments": [{"assignee": "web", "role": "Key Vault Secrets User", "scope": "KV"}],
}


def _tenant_file(tmp_path, db) -> str:
    sub = ok(db, "account", "show")["id"]
    doc = json.loads(json.dumps(TENANT).replace(
        '"KV"', f'"/subscriptions/{sub}/resourceGroups/rg-app/providers/Microsoft.KeyVault/vaults/kv-app-01"'))
    path = tmp_path / "tenant.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_a_dry_run_changes_nothing_and_plans_what_sqlite_plans(pg_db, tmp_path, monkeypatch):
    monkeypatch.setenv("MI_SEED", "plan")
    sqlite = tmp_path / "store.db"
    tenant = _tenant_file(tmp_path, sqlite)
    assert _tenant_file(tmp_path, pg_db) == tenant  # the same seed: the same subscription id
    before = dump(pg_db)
    planned = [run_mi(db, "apply", "-f", tenant, "--dry-run", "-o", "json") for db in (sqlite, pg_db)]
    assert planned[0].code == 0 and planned[0].err.startswith("plan: ")
    assert (planned[1].code, planned[1].out, planned[1].err) == (planned[0].code, planned[0].out, planned[0].err)
    assert dump(pg_db) == before
    applied = [run_mi(db, "apply", "-f", tenant, "-o", "json") for db in (sqlite, pg_db)]
    assert applied[1].out == applied[0].out == planned[0].out  # the plan was the real run's
    assert run_mi(pg_db, "apply", "-f", tenant, "--dry-run", "-o", "json").out == \
        run_mi(sqlite, "apply", "-f", tenant, "--dry-run", "-o", "json").out


def test_an_sqlite_export_applied_to_postgresql_exports_the_same_file(pg_db, tmp_path):
    sqlite = tmp_path / "store.db"
    assert run_mi(sqlite, "apply", "-f", _tenant_file(tmp_path, sqlite)).code == 0
    # state only an export carries: a dangling reference and an assignment whose principal is gone
    ok(sqlite, "identity", "create", "-g", "rg-app", "-n", "doomed")
    ok(sqlite, "identity", "assign", "--resource", "web", "-g", "rg-app", "--identities", "doomed")
    ok(sqlite, "role", "assignment", "create", "--assignee", "doomed", "--role", "Reader", "-g", "rg-app")
    assert run_mi(sqlite, "identity", "delete", "-g", "rg-app", "-n", "doomed", "--yes").code == 0
    exported = tmp_path / "export.yaml"
    assert run_mi(sqlite, "export", "-f", str(exported)).code == 0
    assert run_mi(pg_db, "apply", "-f", str(exported), "-o", "none").code == 0
    again = run_mi(pg_db, "export")
    assert again.code == 0 and again.out == exported.read_text()
    assert run_mi(pg_db, "export", "-o", "json").out == run_mi(sqlite, "export", "-o", "json").out
