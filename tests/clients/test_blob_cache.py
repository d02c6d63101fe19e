"""mi serve's memory of small blob reads: a Get Blob answered by Azurite before is answered again from memory,
authorised and logged as ever, until anything written through the plane, a change of the store or a restart of
Azurite may have changed it.

Whether an answer came from memory is seen from Azurite's process: a read answered from memory never asks for
Azurite (mi serve starts it again only for a request it relays), so with Azurite stopped a read that is answered
while no new Azurite appears came from memory, and one that was relayed has mi serve start Azurite again."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest

from tests.clients.conftest import mi_json, start_server
from tests.clients.test_blob import azurite, both_stores
from tests.clients.test_blob_plane import ACCOUNT_URL, DENIED, STORAGE, VERSION, _session, refused

READ = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read"
KiB = 1024
# vm name -> its role at st1 (None: no role there)
ROLES = {"owner": "Storage Blob Data Owner", "reader": "Storage Blob Data Reader", "passing": "Storage Blob Data Reader",
         "stranger": None}
# Headers of every answer that are made anew each time, by Azurite or from memory.
FRESH = {"date", "x-ms-request-id", "x-ms-client-request-id"}


@pytest.fixture(scope="module")
def cloud(module_store):
    """A store with storage account st1 (container data) and a VM per role, and one mi serve with Azurite."""
    db = module_store("blobcache")
    mi_json(db, "group", "create", "-n", "rg", "-l", "westeurope")
    account = mi_json(db, "resource", "create", "-g", "rg", "-n", "st1", "--type", "storage")
    for vm, role in ROLES.items():
        mi_json(db, "resource", "create", "-g", "rg", "-n", vm, "--type", "vm", "--system-assigned")
        if role:
            mi_json(db, "role", "assignment", "create", "--assignee", vm, "--role", role, "--scope", account["id"])
    tokens = {vm: mi_json(db, "token", "get", "--resource", vm, "-g", "rg", "--audience", STORAGE)["access_token"]
              for vm in ROLES}
    srv = start_server(db, "--azurite", azurite())
    env = mi_json(db, "env", "--resource", "owner", "-g", "rg")
    state = {"db": db, "server": srv, "env": env, "account": account, "tokens": tokens, "session": _session(env)}
    assert call(state, "PUT", "/data?restype=container", "owner").status_code == 201
    yield state
    assert srv.stop() == 0, srv.log.read_text()


# -- helpers ------------------------------------------------------------------------------------------------------

def call(cloud, method: str, path: str, who: str | None = "reader", *, headers: dict | None = None, host: str = "st1",
         session=None, **kwargs):
    """One request through the proxy as `who` (a VM's storage token), with the headers given (and no other of
    the client's but what requests always sends), on the module's keep-alive connection unless `session`."""
    sent = {"x-ms-version": VERSION, **(headers or {})}
    if who is not None:
        sent["Authorization"] = f"Bearer {cloud['tokens'][who]}"
    url = f"https://{host}.blob.core.windows.net{path}"
    return (session or cloud["session"]).request(method, url, headers=sent, timeout=120, **kwargs)


def put(cloud, path: str, body: bytes, headers: dict | None = None, host: str = "st1"):
    r = call(cloud, "PUT", path, "owner", headers={"x-ms-blob-type": "BlockBlob", **(headers or {})}, data=body,
             host=host)
    assert r.status_code == 201, r.text
    return r


def steady(response) -> dict[str, str]:
    """An answer's headers but those made anew for each answer."""
    return {k.lower(): v for k, v in response.headers.items() if k.lower() not in FRESH}


def azurites(cloud) -> list[int]:
    """The pids of mi serve's Azurite processes (its other child is the command host): found by the command
    line, which an exited process (not yet reaped) no longer has."""
    parent, found = cloud["server"].proc.pid, []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == parent and b"--blobPort" in (entry / "cmdline").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


def stop_azurite(cloud) -> int:
    """Stop mi serve's Azurite (SIGTERM: it saves its data as it goes) and wait until it has exited; its pid."""
    running = azurites(cloud)
    assert len(running) == 1, running
    os.kill(running[0], signal.SIGTERM)
    deadline = time.monotonic() + 120
    while azurites(cloud) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert azurites(cloud) == [], "Azurite did not exit"
    return running[0]


def reads_logged(cloud, name: str) -> list[tuple[str, str]]:
    """(caller, status) of the activity log's Get Blob decisions on blob `name`."""
    return [(e["caller"], e["status"]) for e in mi_json(cloud["db"], "log", "--operation", READ)
            if e["resourceId"].endswith(f"/blobs/{name}")]


def principal(cloud, vm: str) -> str:
    return mi_json(cloud["db"], "resource", "show", "-g", "rg", "-n", vm)["identity"]["principalId"]


# -- answered from memory -----------------------------------------------------------------------------------------

@both_stores
def test_a_read_answered_before_is_answered_from_memory_as_azurite_answered_it(cloud):
    put(cloud, "/data/hello.txt", b"hello", {"x-ms-meta-colour": "blue", "x-ms-blob-content-type": "text/plain"})
    # sent at once on a connection of its own: the write has ended by the time its answer is whole
    first = call(cloud, "GET", "/data/hello.txt", headers={"x-ms-client-request-id": "one"},
                 session=_session(cloud["env"]))
    assert first.status_code == 200 and first.content == b"hello"
    assert first.headers["x-ms-client-request-id"] == "one"
    head = call(cloud, "HEAD", "/data/hello.txt")
    assert head.status_code == 200 and head.headers["Content-Length"] == "5"
    logged = len(reads_logged(cloud, "hello.txt"))
    stopped = stop_azurite(cloud)

    # with Azurite stopped, the same requests are answered, as Azurite answered them, and no Azurite is started
    again = call(cloud, "GET", "/data/hello.txt", headers={"x-ms-client-request-id": "two"})
    assert again.status_code == 200 and again.content == b"hello"
    assert steady(again) == steady(first)
    assert again.headers["x-ms-meta-colour"] == "blue" and again.headers["Content-Type"] == "text/plain"
    # its own request id (a new one), the client's request id echoed, the server's own date
    assert again.headers["x-ms-client-request-id"] == "two"
    assert uuid.UUID(again.headers["x-ms-request-id"]).version == 4
    assert again.headers["x-ms-request-id"] != first.headers["x-ms-request-id"]
    assert parsedate_to_datetime(again.headers["Date"]) >= parsedate_to_datetime(first.headers["Date"])
    unnamed = call(cloud, "GET", "/data/hello.txt")
    assert unnamed.content == b"hello" and "x-ms-client-request-id" not in unnamed.headers
    assert len({r.headers["x-ms-request-id"] for r in (first, again, unnamed)}) == 3
    head_again = call(cloud, "HEAD", "/data/hello.txt")
    assert head_again.status_code == 200 and steady(head_again) == steady(head) and head_again.content == b""
    assert azurites(cloud) == []
    # each of them authorised and logged as ever
    reader = principal(cloud, "reader")
    assert reads_logged(cloud, "hello.txt")[logged:] == [(reader, "Succeeded")] * 3

    # another request shape is Azurite's to answer: mi serve starts it again, and forgets what the stopped one said
    other = call(cloud, "GET", "/data/hello.txt", headers={"x-ms-range": "bytes=1-2"})
    assert other.status_code == 206 and other.content == b"el"
    assert azurites(cloud) not in ([], [stopped])
    stopped = stop_azurite(cloud)
    assert call(cloud, "GET", "/data/hello.txt").content == b"hello"
    assert azurites(cloud) not in ([], [stopped])  # relayed: what the earlier Azurite answered was let go


def test_range_reads_are_kept_by_their_range(cloud):
    put(cloud, "/data/digits.txt", b"0123456789")
    shapes = [({}, 200, b"0123456789"), ({"x-ms-range": "bytes=0-3"}, 206, b"0123"),
              ({"x-ms-range": "bytes=4-7"}, 206, b"4567"), ({"Range": "bytes=2-5"}, 206, b"2345"),
              ({"x-ms-range": "bytes=4-7", "x-ms-range-get-content-md5": "true"}, 206, b"4567"),
              ({"Range": "bytes=8-"}, 206, b"89")]
    answers = []
    for headers, status, body in shapes:
        r = call(cloud, "GET", "/data/digits.txt", headers=headers)
        assert (r.status_code, r.content) == (status, body), headers
        answers.append(r)
    assert answers[4].headers["Content-MD5"] and "Content-MD5" not in answers[2].headers
    stop_azurite(cloud)
    for (headers, status, body), before in zip(shapes, answers):
        r = call(cloud, "GET", "/data/digits.txt", headers=headers)
        assert (r.status_code, r.content) == (status, body), headers
        assert steady(r) == steady(before), headers
    assert azurites(cloud) == []
    r = call(cloud, "GET", "/data/digits.txt", headers={"x-ms-range": "bytes=1-1"})
    assert (r.status_code, r.content) == (206, b"1")
    assert len(azurites(cloud)) == 1


def test_what_may_change_with_time_or_is_big_or_signed_by_key_is_relayed_each_time(cloud):
    db = cloud["db"]
    limit = 64 * KiB
    put(cloud, "/data/limit.bin", b"l" * limit)
    put(cloud, "/data/big.bin", b"b" * (limit + 1))
    put(cloud, "/data/leased.txt", b"leased")
    put(cloud, "/data/breaking.txt", b"breaking")
    put(cloud, "/data/by-key.txt", b"by key")
    lease = {"x-ms-lease-action": "acquire", "x-ms-lease-duration": "-1"}
    for name in ("leased.txt", "breaking.txt"):
        assert call(cloud, "PUT", f"/data/{name}?comp=lease", "owner", headers=lease).status_code == 201
    r = call(cloud, "PUT", "/data/breaking.txt?comp=lease", "owner",
             headers={"x-ms-lease-action": "break", "x-ms-lease-break-period": "60"})
    assert r.status_code == 202, r.text
    from azure.storage.blob import BlobClient

    key = mi_json(db, "storage", "account", "keys", "list", "-n", "st1", "-g", "rg")[0]["value"]
    by_key = BlobClient(ACCOUNT_URL, "data", "by-key.txt", credential=key, retry_total=0,
                        proxies={"https": cloud["env"]["HTTPS_PROXY"]}, connection_verify=cloud["env"]["REQUESTS_CA_BUNDLE"])

    def read(method: str, name: str, length: int):  # noqa: ANN202
        def run() -> None:
            r = call(cloud, method, f"/data/{name}")
            assert r.status_code == 200 and int(r.headers["Content-Length"]) == length, r.headers

        return run

    def read_by_key() -> None:
        assert by_key.download_blob().readall() == b"by key"

    # over the limit; under a lease (it expires, or breaks, with time alone, whatever its state says now);
    # signed with the account's key (Azurite checks the signature)
    relayed = [read("GET", "big.bin", limit + 1), read("GET", "leased.txt", 6), read("HEAD", "leased.txt", 6),
               read("GET", "breaking.txt", 8), read_by_key]
    states = [call(cloud, "HEAD", f"/data/{n}").headers["x-ms-lease-state"] for n in ("leased.txt", "breaking.txt")]
    assert states[0] == "leased" and states[1] in ("breaking", "broken")  # broken after 60 s
    for each in relayed:
        # asked twice, then with Azurite stopped: the limit's read is answered, the other needs Azurite again
        # (what the Azurite before said is let go, so each round asks anew)
        for _ in range(2):
            each()
            assert len(call(cloud, "GET", "/data/limit.bin").content) == limit
        stopped = stop_azurite(cloud)
        assert call(cloud, "GET", "/data/limit.bin").content == b"l" * limit  # the limit itself is kept
        assert azurites(cloud) == []
        each()
        assert azurites(cloud) not in ([], [stopped])  # relayed: Azurite was started again for it


# -- seen by the very next read -----------------------------------------------------------------------------------

def _kept(cloud, path: str, **kwargs):
    """Read `path` twice (the second from memory): the answer."""
    call(cloud, "GET", path, **kwargs)
    return call(cloud, "GET", path, **kwargs)


@both_stores
def test_every_write_through_the_plane_is_seen_by_the_very_next_read(cloud):
    from azure.storage.blob import BlobClient

    path = "/data/changing.txt"
    put(cloud, path, b"first")
    assert _kept(cloud, path).content == b"first"
    put(cloud, path, b"second")  # overwritten
    assert call(cloud, "GET", path).content == b"second"
    assert _kept(cloud, path).headers.get("x-ms-meta-colour") is None
    assert call(cloud, "PUT", f"{path}?comp=metadata", "owner", headers={"x-ms-meta-colour": "red"}).status_code == 200
    assert call(cloud, "GET", path).headers["x-ms-meta-colour"] == "red"
    assert call(cloud, "HEAD", path).headers["x-ms-meta-colour"] == "red"
    assert _kept(cloud, path, who="reader").headers["Content-Type"] == "application/octet-stream"
    r = call(cloud, "PUT", f"{path}?comp=properties", "owner", headers={"x-ms-blob-content-type": "text/csv"})
    assert r.status_code == 200, r.text
    assert call(cloud, "GET", path).headers["Content-Type"] == "text/csv"
    assert "x-ms-tag-count" not in _kept(cloud, path).headers
    tags = b'<?xml version="1.0" encoding="utf-8"?><Tags><TagSet><Tag><Key>k</Key><Value>v</Value></Tag></TagSet></Tags>'
    assert call(cloud, "PUT", f"{path}?comp=tags", "owner", data=tags).status_code == 204
    assert call(cloud, "GET", path).headers["x-ms-tag-count"] == "1"
    assert _kept(cloud, path).headers["x-ms-lease-state"] == "available"
    r = call(cloud, "PUT", f"{path}?comp=lease", "owner", headers={"x-ms-lease-action": "acquire",
                                                                   "x-ms-lease-duration": "15"})
    assert r.status_code == 201
    assert call(cloud, "GET", path).headers["x-ms-lease-state"] == "leased"
    r = call(cloud, "PUT", f"{path}?comp=lease", "owner", headers={"x-ms-lease-action": "release",
                                                                   "x-ms-lease-id": r.headers["x-ms-lease-id"]})
    assert r.status_code == 200, r.text
    assert call(cloud, "GET", path).headers["x-ms-lease-state"] == "available"
    put(cloud, "/data/source.txt", b"copied")
    assert _kept(cloud, path).content == b"second"
    r = call(cloud, "PUT", path, "owner", headers={"x-ms-copy-source": f"{ACCOUNT_URL}/data/source.txt",
                                                   "x-ms-requires-sync": "true"})
    assert r.status_code == 202, r.text
    assert call(cloud, "GET", path).content == b"copied"
    # a Shared Key write is relayed as well, and drops what was kept the same way
    key = mi_json(cloud["db"], "storage", "account", "keys", "list", "-n", "st1", "-g", "rg")[0]["value"]
    BlobClient(ACCOUNT_URL, "data", "changing.txt", credential=key, retry_total=0,
               proxies={"https": cloud["env"]["HTTPS_PROXY"]},
               connection_verify=cloud["env"]["REQUESTS_CA_BUNDLE"]).upload_blob(b"by key", overwrite=True)
    assert call(cloud, "GET", path).content == b"by key"
    assert _kept(cloud, path).status_code == 200
    assert call(cloud, "DELETE", path, "owner").status_code == 202
    assert refused(call(cloud, "GET", path)) == (404, "BlobNotFound")
    assert call(cloud, "HEAD", path).status_code == 404
    put(cloud, path, b"third")
    assert call(cloud, "GET", path).content == b"third"
    # the container's deletion too (its blobs go with it)
    assert call(cloud, "PUT", "/gone?restype=container", "owner").status_code == 201
    put(cloud, "/gone/a.txt", b"a")
    assert _kept(cloud, "/gone/a.txt").content == b"a"
    assert call(cloud, "DELETE", "/gone?restype=container", "owner").status_code == 202
    assert refused(call(cloud, "GET", "/gone/a.txt")) == (404, "ContainerNotFound")


def test_the_sdk_sees_its_own_upload_at_once(cloud):
    """azure-storage-blob downloads with x-ms-range (206) and a client request id of its own each time."""
    from azure.core.credentials import AccessToken
    from azure.storage.blob import BlobClient

    class Token:
        def get_token(self, *scopes, **kwargs):
            return AccessToken(cloud["tokens"]["owner"], int(time.time()) + 3600)

    blob = BlobClient(ACCOUNT_URL, "data", "sdk.txt", credential=Token(), retry_total=0,
                      proxies={"https": cloud["env"]["HTTPS_PROXY"]}, connection_verify=cloud["env"]["REQUESTS_CA_BUNDLE"])
    for i in range(20):
        body = f"version {i}".encode()
        blob.upload_blob(body, overwrite=True)
        assert blob.download_blob().readall() == body
        assert blob.download_blob().readall() == body


@both_stores
def test_a_role_removed_refuses_the_very_next_read_however_it_was_kept(cloud):
    db = cloud["db"]
    put(cloud, "/data/secret.txt", b"secret")
    assert _kept(cloud, "/data/secret.txt", who="passing").content == b"secret"
    # kept, and still never given to a request the roles refuse
    assert refused(call(cloud, "GET", "/data/secret.txt", "stranger")) == DENIED
    assignment = ["role", "assignment", "delete", "--assignee", "passing", "--role", ROLES["passing"], "--scope",
                  cloud["account"]["id"], "--yes"]
    mi_json(db, *assignment)
    assert refused(call(cloud, "GET", "/data/secret.txt", "passing")) == DENIED
    head = call(cloud, "HEAD", "/data/secret.txt", "passing")  # no body: the code is in its header
    assert (head.status_code, head.headers["x-ms-error-code"]) == DENIED
    # the same request of someone who still may is answered
    assert call(cloud, "GET", "/data/secret.txt", "reader").content == b"secret"
    passing = principal(cloud, "passing")
    stranger = principal(cloud, "stranger")
    assert reads_logged(cloud, "secret.txt")[-6:] == [(passing, "Succeeded"), (passing, "Succeeded"), (stranger, "Failed"),
                                                      (passing, "Failed"), (passing, "Failed"),
                                                      (principal(cloud, "reader"), "Succeeded")]
    mi_json(db, "role", "assignment", "create", "--assignee", "passing", "--role", ROLES["passing"], "--scope",
            cloud["account"]["id"])
    assert call(cloud, "GET", "/data/secret.txt", "passing").content == b"secret"


def test_an_account_deleted_and_made_again_is_empty_at_the_next_read(cloud):
    db = cloud["db"]

    def make() -> None:
        account = mi_json(db, "resource", "create", "-g", "rg", "-n", "st2", "--type", "storage")
        mi_json(db, "role", "assignment", "create", "--assignee", "reader", "--role", "Storage Blob Data Owner",
                "--scope", account["id"])

    make()
    r = call(cloud, "PUT", "/two?restype=container", "reader", host="st2")
    assert r.status_code == 201, r.text
    r = call(cloud, "PUT", "/two/old.txt", "reader", host="st2", headers={"x-ms-blob-type": "BlockBlob"}, data=b"old")
    assert r.status_code == 201
    for _ in range(2):
        assert call(cloud, "GET", "/two/old.txt", host="st2").content == b"old"
    mi_json(db, "resource", "delete", "-g", "rg", "-n", "st2", "--type", "storage", "--yes")
    make()
    assert refused(call(cloud, "GET", "/two/old.txt", host="st2")) == (404, "ContainerNotFound")


# -- under concurrency --------------------------------------------------------------------------------------------

def test_a_writer_reads_its_own_writes_while_others_read_the_same_blob(cloud):
    """Readers keep the blob's answers (ten shapes, by range) in memory and relay many more, so that reads are
    in flight at Azurite when each write starts: none of those may be kept."""
    path = "/data/race.txt"
    shapes = [f"bytes={k}-{k + 5}" for k in range(0, 60, 6)]
    put(cloud, path, b"000000" * 10)
    stop, seen, failures = threading.Event(), [[] for _ in range(4)], []

    def get(session, shape: str):  # noqa: ANN202
        return session.get(f"{ACCOUNT_URL}{path}", timeout=120, headers={
            "x-ms-version": VERSION, "x-ms-range": shape, "Authorization": f"Bearer {cloud['tokens']['reader']}"})

    def reader(mine: list[int]) -> None:
        session = _session(cloud["env"])
        while not stop.is_set():
            for shape in shapes:
                r = get(session, shape)
                if r.status_code != 206:
                    failures.append(r.status_code)
                else:
                    mine.append(int(r.content))

    threads = [threading.Thread(target=reader, args=(mine,)) for mine in seen]
    for thread in threads:
        thread.start()
    try:
        writer = _session(cloud["env"])
        for i in range(1, 41):
            r = writer.put(f"{ACCOUNT_URL}{path}", data=f"{i:06d}".encode() * 10, timeout=120, headers={
                "x-ms-version": VERSION, "x-ms-blob-type": "BlockBlob", "Authorization": f"Bearer {cloud['tokens']['owner']}"})
            assert r.status_code == 201
            # the writer's next reads, whoever else reads meanwhile, are of what it wrote
            assert [get(writer, shape).content for shape in shapes] == [f"{i:06d}".encode()] * len(shapes), i
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert failures == [] and all(seen)
    # every reader saw the blob's versions in order: a read never went back to a version written over
    assert all(mine == sorted(mine) for mine in seen)
