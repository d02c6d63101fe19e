"""mi serve's Blob plane under hostile and unusual requests: large and chunked bodies streamed, permissions
beyond read and write, tokens of every wrong kind, Shared Key and SAS by the account's setting, malformed
paths, Azurite dying under it, concurrent clients. Requests go through mi serve's proxy as any client's do;
every refusal is checked for Storage's status, x-ms-error-code and XML body."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import ssl
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.clients.conftest import connect_through, mi_json, start_server
from tests.clients.test_blob import azurite

HOST = "st1.blob.core.windows.net"
ACCOUNT_URL = f"https://{HOST}"
VERSION = "2025-11-05"
STORAGE = "https://storage.azure.com/"
BLOBS = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs"
MiB = 1024 * 1024
# vm name -> the role it holds at st1 (None: no role there)
ROLES = {"owner": "Storage Blob Data Owner", "contrib": "Storage Blob Data Contributor", "reader": "Storage Blob Data Reader",
         "copier": "Blob Writer Without Read", "adder": "Blob Adder", "nobody": None}


def _custom_role(name: str, subscription: str, *data_actions: str) -> str:
    return json.dumps({"Name": name, "Description": f"{name} (tests)", "Actions": [], "NotActions": [],
                       "DataActions": list(data_actions), "NotDataActions": [],
                       "AssignableScopes": [f"/subscriptions/{subscription}"]})


@pytest.fixture(scope="module")
def plane(tmp_path_factory):
    """One store (a VM per role, storage account st1, containers data, src and readable) and one mi serve
    with Azurite for the whole module."""
    db = tmp_path_factory.mktemp("plane") / "store.db"
    mi_json(db, "group", "create", "-n", "rg", "-l", "westeurope")
    account = mi_json(db, "resource", "create", "-g", "rg", "-n", "st1", "--type", "storage")
    subscription = mi_json(db, "account", "show")["id"]
    mi_json(db, "role", "definition", "create", "--role-definition",
            _custom_role("Blob Writer Without Read", subscription, f"{BLOBS}/write", f"{BLOBS}/add/action"))
    mi_json(db, "role", "definition", "create", "--role-definition",
            _custom_role("Blob Adder", subscription, f"{BLOBS}/add/action"))
    vms = {}
    for vm, role in ROLES.items():
        vms[vm] = mi_json(db, "resource", "create", "-g", "rg", "-n", vm, "--type", "vm", "--system-assigned")
        if role:
            mi_json(db, "role", "assignment", "create", "--assignee", vm, "--role", role, "--scope", account["id"])
    # the copier may read one container only
    mi_json(db, "role", "assignment", "create", "--assignee", "copier", "--role", "Storage Blob Data Reader", "--scope",
            f"{account['id']}/blobServices/default/containers/readable")
    tokens = {vm: mi_json(db, "token", "get", "--resource", vm, "-g", "rg", "--audience", STORAGE)["access_token"]
              for vm in ROLES}
    srv = start_server(db, "--azurite", azurite())
    env = mi_json(db, "env", "--resource", "owner", "-g", "rg")
    cloud = {"db": db, "server": srv, "env": env, "account": account, "tokens": tokens, "vms": vms,
             "session": _session(env)}
    for container in ("data", "src", "readable"):
        assert call(cloud, "PUT", f"/{container}?restype=container", "owner").status_code == 201
    yield cloud
    if cloud["server"].proc.poll() is None:
        assert cloud["server"].stop() == 0, cloud["server"].log.read_text()


# -- helpers ----------------------------------------------------------------------------------------------

def _session(env: dict):
    import requests

    session = requests.Session()
    session.trust_env = False
    session.proxies = {"https": env["HTTPS_PROXY"]}
    session.verify = env["REQUESTS_CA_BUNDLE"]
    return session


def call(cloud, method: str, path: str, who: str | None = None, *, headers: dict | None = None, session=None,
         token: str | None = None, **kwargs):
    """One request to st1 through the proxy, as `who` (a VM's storage token) or with `token`, or anonymous."""
    sent = {"x-ms-version": VERSION, **(headers or {})}
    token = token if token is not None else cloud["tokens"][who] if who else None
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    return (session or cloud["session"]).request(method, ACCOUNT_URL + path, headers=sent, timeout=120, **kwargs)


def put_blob(cloud, path: str, who: str, body: bytes = b"x", headers: dict | None = None):
    return call(cloud, "PUT", path, who, headers={"x-ms-blob-type": "BlockBlob", **(headers or {})}, data=body)


# Codes the store behind the plane (Azurite) answers itself, in its own XML layout (no byte order mark,
# indented); every other code here is the plane's, in Storage's exact form.
FROM_THE_STORE = {"ContainerNotFound", "BlobNotFound", "ContainerAlreadyExists", "AuthorizationFailure",
                  "InvalidHeaderValue", "InvalidQueryParameterValue", "FeatureVersionMismatch"}


def storage_error(response) -> tuple[int, str, ET.Element]:
    """(status, code, the <Error> element) of Storage's error answer: XML whose <Code> is the
    x-ms-error-code header, a request id in both the header and the message, and for the plane's own
    answers Storage's byte order mark and layout."""
    body = response.content
    assert body.lstrip(b"\xef\xbb\xbf").startswith(b"<?xml"), body[:200]
    root = ET.fromstring(body)
    assert root.tag == "Error", body[:200]
    code = root.findtext("Code")
    assert response.headers.get("x-ms-error-code") == code, (response.headers, body[:300])
    assert response.headers["Content-Type"].startswith("application/xml")
    assert f"RequestId:{response.headers['x-ms-request-id']}" in root.findtext("Message")
    if code not in FROM_THE_STORE:
        assert body.startswith(b'\xef\xbb\xbf<?xml version="1.0" encoding="utf-8"?><Error><Code>'), body[:200]
    return response.status_code, code, root


def refused(response) -> tuple[int, str]:
    return storage_error(response)[:2]


DENIED = (403, "AuthorizationPermissionMismatch")


def raw(cloud, request: bytes, host: str = HOST) -> tuple[int, dict, bytes]:
    """A request sent as these exact bytes over a tunnel to `host` (TLS to mi's certificate): the status,
    headers (lower-case names) and body of the answer, read until the server closes (send Connection: close)."""
    proxy_port = urlsplit(cloud["env"]["HTTPS_PROXY"]).port
    sock, answer = connect_through(proxy_port, f"{host}:443")
    assert answer.startswith(b"HTTP/1.1 200"), answer
    context = ssl.create_default_context(cafile=cloud["env"]["REQUESTS_CA_BUNDLE"])
    with context.wrap_socket(sock, server_hostname=host) as tls:
        tls.settimeout(30)
        tls.sendall(request)
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    return _parse(data)


def _parse(data: bytes) -> tuple[int, dict, bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        chunks = b""
        while True:
            size, _, body = body.partition(b"\r\n")
            if not int(size, 16):
                break
            chunks, body = chunks + body[:int(size, 16)], body[int(size, 16) + 2:]
        body = chunks
    return int(lines[0].split()[1]), headers, body


class _Raw:
    """A requests-like view of a raw answer, for storage_error()."""

    def __init__(self, status: int, headers: dict, body: bytes) -> None:
        import requests.structures

        self.status_code, self.content = status, body
        self.headers = requests.structures.CaseInsensitiveDict(headers)


def raw_request(cloud, method: str, target: str, who: str | None = "owner", host: str = HOST,
                extra: str = "") -> _Raw:
    auth = f"Authorization: Bearer {cloud['tokens'][who]}\r\n" if who else ""
    head = (f"{method} {target} HTTP/1.1\r\nHost: {host}\r\nx-ms-version: {VERSION}\r\n{auth}{extra}"
            f"Connection: close\r\n\r\n")
    return _Raw(*raw(cloud, head.encode("latin-1")))


def rss(pid: int) -> int:
    """Resident memory of a process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class PeakRss:
    """The largest RSS of a process while the block runs (sampled every 20 ms)."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss(self.pid))
            self._stop.wait(0.02)

    def __enter__(self) -> "PeakRss":
        self.start = rss(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss(self.pid))


class Generated:
    """A body of `size` bytes made as it is read (never held whole): a file-like object with a length,
    each MiB a random block stamped with its index. `sha256` is the digest of what was read."""

    def __init__(self, size: int) -> None:
        self.size, self.offset = size, 0
        self.block = os.urandom(MiB)
        self.digest = hashlib.sha256()
        self._piece = (-1, b"")

    def __len__(self) -> int:
        return self.size

    def read(self, n: int = -1) -> bytes:
        n = min(self.size - self.offset, MiB if n is None or n < 0 else n)
        index, start = divmod(self.offset, MiB)
        if self._piece[0] != index:
            self._piece = (index, index.to_bytes(8, "big") + self.block[8:])
        piece = self._piece[1][start:start + n]
        self.offset += len(piece)
        self.digest.update(piece)
        return piece


def azurite_pid(cloud) -> int | None:
    """mi serve's Azurite (its other child is the command host)."""
    found = subprocess.run(["pgrep", "-P", str(cloud["server"].proc.pid), "-f", "azurite"], capture_output=True,
                           text=True).stdout.split()
    return int(found[0]) if found else None


def server_log(cloud) -> str:
    return cloud["server"].log.read_text(errors="replace")


def assert_no_traceback(cloud) -> None:
    text = server_log(cloud)
    assert "Traceback" not in text and "answered 500" not in text and "Exception in ASGI" not in text, text[-4000:]


# -- 1. streaming -------------------------------------------------------------------------------------------

def test_a_200_mib_blob_streams_up_and_down_without_the_server_holding_it(plane):
    pid = plane["server"].proc.pid
    body = Generated(200 * MiB)
    with PeakRss(pid) as upload:
        r = put_blob(plane, "/data/big.bin", "owner", body)
    assert r.status_code == 201, r.text
    assert body.offset == body.size
    got = hashlib.sha256()
    with PeakRss(pid) as download:
        with call(plane, "GET", "/data/big.bin", "owner", stream=True) as r:
            assert r.status_code == 200 and int(r.headers["Content-Length"]) == body.size
            for chunk in r.iter_content(MiB):
                got.update(chunk)
    assert got.hexdigest() == body.digest.hexdigest()
    for peak in (upload, download):
        assert peak.peak - peak.start < 64 * MiB, (peak.start, peak.peak)


def _chunks(*parts: bytes):
    yield from parts  # a generator: requests sends it chunked, having no length to give


def test_a_chunked_put_block_is_refused_for_its_missing_length_and_the_connection_goes_on(plane):
    session = _session(plane["env"])
    r = call(plane, "PUT", "/data/chunked.bin?comp=block&blockid=" + base64.b64encode(b"block-01").decode(), "owner",
             session=session, data=_chunks(b"a" * 70000, b"b" * 70000, b"c"))
    assert r.request.headers.get("Transfer-Encoding") == "chunked"
    assert refused(r) == (411, "MissingContentLengthHeader")
    # the same connection serves the next request
    r = call(plane, "GET", "/data?restype=container&comp=list", "owner", session=session)
    assert r.status_code == 200 and b"<EnumerationResults" in r.content


def test_a_refused_upload_is_answered_before_its_body_which_is_never_read(plane):
    proxy_port = urlsplit(plane["env"]["HTTPS_PROXY"]).port
    sock, answer = connect_through(proxy_port, f"{HOST}:443")
    assert answer.startswith(b"HTTP/1.1 200")
    context = ssl.create_default_context(cafile=plane["env"]["REQUESTS_CA_BUNDLE"])
    started = time.monotonic()
    with context.wrap_socket(sock, server_hostname=HOST) as tls:
        tls.settimeout(20)
        tls.sendall((f"PUT /data/refused.bin HTTP/1.1\r\nHost: {HOST}\r\nx-ms-version: {VERSION}\r\n"
                     f"x-ms-blob-type: BlockBlob\r\nContent-Length: {100 * MiB}\r\n"
                     f"Authorization: Bearer {plane['tokens']['reader']}\r\n\r\n").encode() + b"z" * 65536)
        data = b""
        while b"</Error>" not in data:
            chunk = tls.recv(65536)
            assert chunk, data
            data += chunk
    assert time.monotonic() - started < 10
    assert refused(_Raw(*_parse(data))) == DENIED
    # the client went away with 100 MiB unsent; a new connection is served at once
    r = call(plane, "GET", "/data?restype=container&comp=list", "reader", session=_session(plane["env"]))
    assert r.status_code == 200 and b"big.bin" in r.content
    assert_no_traceback(plane)


def test_expect_100_continue_is_answered_by_the_decision(plane):
    """A client that waits for 100 Continue is told no before it sends a byte, or asked for the body."""
    proxy_port = urlsplit(plane["env"]["HTTPS_PROXY"]).port
    context = ssl.create_default_context(cafile=plane["env"]["REQUESTS_CA_BUNDLE"])
    body = os.urandom(300_000)
    for who, first in (("reader", b"HTTP/1.1 403 "), ("contrib", b"HTTP/1.1 100 Continue\r\n\r\n")):
        sock, answer = connect_through(proxy_port, f"{HOST}:443")
        with context.wrap_socket(sock, server_hostname=HOST) as tls:
            tls.settimeout(20)
            tls.sendall((f"PUT /data/expect.bin HTTP/1.1\r\nHost: {HOST}\r\nx-ms-version: {VERSION}\r\n"
                         f"x-ms-blob-type: BlockBlob\r\nContent-Length: {len(body)}\r\nExpect: 100-continue\r\n"
                         f"Authorization: Bearer {plane['tokens'][who]}\r\n\r\n").encode())
            data = tls.recv(65536)
            assert data.startswith(first), data[:200]
            if who == "contrib":
                tls.sendall(body)
                data = tls.recv(65536)
                assert data.startswith(b"HTTP/1.1 201 "), data[:200]
    assert call(plane, "GET", "/data/expect.bin", "reader").content == body


# -- 2. permissions beyond read and write ---------------------------------------------------------------------

TAGS_XML = b'<?xml version="1.0" encoding="utf-8"?><Tags><TagSet><Tag><Key>k</Key><Value>v</Value></Tag></TagSet></Tags>'


def log(cloud, operation: str) -> list[dict]:
    return mi_json(cloud["db"], "log", "--operation", operation)


def test_tags_need_the_tags_permissions_which_a_contributor_lacks(plane):
    tagged = {"x-ms-tags": "project=alpha"}
    # Put Blob with x-ms-tags needs tags/write besides write (azure-cli#23536): a contributor is refused
    assert refused(put_blob(plane, "/data/tagged.txt", "contrib", headers=tagged)) == DENIED
    assert log(plane, f"{BLOBS}/tags/write")[-1]["caller"] == plane["vms"]["contrib"]["identity"]["principalId"]
    assert put_blob(plane, "/data/tagged.txt", "owner", b"tagged", headers=tagged).status_code == 201
    assert put_blob(plane, "/data/plain.txt", "contrib", b"plain").status_code == 201
    # List Blobs with include=tags needs tags/read
    listing = "/data?restype=container&comp=list&include=tags&prefix=tagged"
    assert refused(call(plane, "GET", listing, "contrib")) == DENIED
    r = call(plane, "GET", listing, "owner")
    assert r.status_code == 200, r.text
    tags = ET.fromstring(r.content).find("Blobs/Blob/Tags/TagSet/Tag")
    assert (tags.findtext("Key"), tags.findtext("Value")) == ("project", "alpha")
    assert call(plane, "GET", "/data?restype=container&comp=list&prefix=tagged", "contrib").status_code == 200
    # Set and Get Blob Tags
    assert refused(call(plane, "PUT", "/data/plain.txt?comp=tags", "contrib", data=TAGS_XML)) == DENIED
    assert refused(call(plane, "GET", "/data/tagged.txt?comp=tags", "contrib")) == DENIED
    assert call(plane, "PUT", "/data/plain.txt?comp=tags", "owner", data=TAGS_XML).status_code == 204
    r = call(plane, "GET", "/data/plain.txt?comp=tags", "owner")
    assert r.status_code == 200 and ET.fromstring(r.content).findtext("TagSet/Tag/Key") == "k"


def test_a_copy_within_the_account_needs_read_on_its_source(plane):
    assert put_blob(plane, "/src/secret.txt", "owner", b"secret").status_code == 201
    assert put_blob(plane, "/readable/open.txt", "owner", b"open").status_code == 201
    # the copier may write anywhere but read only the container readable
    r = call(plane, "PUT", "/data/copied-secret.txt", "copier", headers={"x-ms-copy-source": f"{ACCOUNT_URL}/src/secret.txt"})
    assert refused(r) == DENIED
    last = log(plane, f"{BLOBS}/read")[-1]
    assert last["status"] == "Failed" and last["resourceId"].endswith("/containers/src/blobs/secret.txt")
    r = call(plane, "PUT", "/data/copied-open.txt", "copier", headers={"x-ms-copy-source": f"{ACCOUNT_URL}/readable/open.txt"})
    assert r.status_code == 202, r.text
    assert r.headers["x-ms-copy-status"] == "success"
    assert call(plane, "GET", "/data/copied-open.txt", "owner").content == b"open"


def test_a_role_that_may_only_add_creates_blobs_but_never_replaces_one(plane):
    assert put_blob(plane, "/data/added.txt", "adder", b"first").status_code == 201
    assert refused(put_blob(plane, "/data/added.txt", "adder", b"second")) == DENIED
    assert refused(put_blob(plane, "/data/plain.txt", "adder", b"replaced")) == DENIED
    assert call(plane, "GET", "/data/added.txt", "owner").content == b"first"
    # a copy onto a new blob is an add too; onto an existing one a write
    source = {"x-ms-copy-source": f"{ACCOUNT_URL}/readable/open.txt"}
    assert refused(call(plane, "PUT", "/data/added-copy.txt", "adder", headers=source)) == DENIED  # no read on the source
    # nothing but add: neither read nor delete
    assert refused(call(plane, "GET", "/data/added.txt", "adder")) == DENIED
    assert refused(call(plane, "DELETE", "/data/added.txt", "adder")) == DENIED
    # a new blob in a container that does not exist: allowed, and Storage's 404 from the store
    assert refused(put_blob(plane, "/nowhere/new.txt", "adder")) == (404, "ContainerNotFound")


def test_versions_and_permanent_deletes_are_checked_and_never_run_on_the_current_blob(plane):
    version = "?versionid=2025-01-01T00:00:00.0000000Z"
    assert refused(call(plane, "DELETE", f"/data/plain.txt{version}", "contrib")) == DENIED
    assert log(plane, f"{BLOBS}/deleteBlobVersion/action")[-1]["status"] == "Failed"
    assert refused(call(plane, "DELETE", "/data/plain.txt?deletetype=permanent", "contrib")) == DENIED
    assert log(plane, f"{BLOBS}/permanentDelete/action")[-1]["status"] == "Failed"
    # the owner holds blobs/*: authorised, and no version exists (the store keeps none) nor is permanent
    # delete enabled; the current blob, which neither names, stays
    for op in ("DELETE", "GET", "HEAD"):
        r = call(plane, op, f"/data/plain.txt{version}", "owner")
        assert r.status_code == 404 and r.headers["x-ms-error-code"] == "BlobNotFound", op
    assert refused(call(plane, "GET", f"/data/plain.txt{version}&comp=tags", "owner")) == (404, "BlobNotFound")
    status, code, root = storage_error(call(plane, "DELETE", "/data/plain.txt?deletetype=permanent", "owner"))
    assert (status, code, root.findtext("QueryParameterName")) == (400, "InvalidQueryParameterValue", "deletetype")
    assert call(plane, "GET", "/data/plain.txt", "owner").content == b"plain"


def test_containers_are_made_and_removed_with_the_data_roles_actions(plane):
    assert refused(call(plane, "PUT", "/scratch?restype=container", "reader")) == DENIED
    assert refused(call(plane, "PUT", "/scratch?restype=container", "nobody")) == DENIED
    assert call(plane, "PUT", "/scratch?restype=container", "contrib").status_code == 201
    assert refused(call(plane, "PUT", "/scratch?restype=container", "contrib")) == (409, "ContainerAlreadyExists")
    assert refused(call(plane, "DELETE", "/scratch?restype=container", "reader")) == DENIED
    assert call(plane, "DELETE", "/scratch?restype=container", "contrib").status_code == 202
    entry = log(plane, "blobServices/containers/delete")[-1]
    assert entry["status"] == "Succeeded" and entry["resourceId"].endswith("/containers/scratch")


def test_list_containers_at_the_account(plane):
    r = call(plane, "GET", "/?comp=list", "reader")
    assert r.status_code == 200, r.text
    names = [e.findtext("Name") for e in ET.fromstring(r.content).iter("Container")]
    assert {"data", "src", "readable"} <= set(names)
    assert refused(call(plane, "GET", "/?comp=list", "nobody")) == DENIED
    assert log(plane, "blobServices/containers/read")[-1]["resourceId"].endswith("/blobServices/default")


def test_blob_batch_is_not_implemented(plane):
    body = b"--batch_1\r\nContent-Type: application/http\r\n\r\nDELETE /data/plain.txt HTTP/1.1\r\n\r\n--batch_1--\r\n"
    for path in ("/?comp=batch", "/data?restype=container&comp=batch"):
        r = call(plane, "POST", path, "owner", data=body, headers={"Content-Type": "multipart/mixed; boundary=batch_1"})
        status, code, root = storage_error(r)
        assert (status, code) == (501, "NotImplemented") and "one by one" in root.findtext("Message")
    assert call(plane, "GET", "/data/plain.txt", "owner").content == b"plain"


# -- 3. authentication ----------------------------------------------------------------------------------------

def _claims(token: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))


def _resigned(cloud, claims: dict) -> str:
    """A token with these claims, signed with the store's own key (as mi signs)."""
    import jwt

    from mi_cli.services import Ctx, keys, tenancy
    from mi_cli.store import open_store

    store = open_store(cloud["db"])
    try:
        with store.transaction(write=False) as session:
            ctx = Ctx.from_env(session)
            key = keys.active(ctx, tenancy.default_tenant(ctx), create=False)
            return jwt.encode(claims, keys.private_key(key), algorithm="RS256",
                              headers={"typ": "JWT", **keys.token_header(key)})
    finally:
        store.close()


def _foreign(claims: dict, kid: str) -> str:
    """A token signed by a key no tenant of this store has."""
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(claims, key, algorithm="RS256", headers={"typ": "JWT", "kid": kid, "x5t": kid})


def test_tokens_that_storage_refuses_and_those_it_takes(plane):
    listing = "/data?restype=container&comp=list&maxresults=1"
    good = plane["tokens"]["reader"]
    claims = _claims(good)
    now = int(time.time())
    expired = _resigned(plane, {**claims, "iat": now - 7200, "nbf": now - 7200, "exp": now - 60})
    other_tenant = "0b0e0f0a-1111-4222-8333-444455556666"
    foreign = _foreign({**claims, "tid": other_tenant, "iss": f"https://sts.windows.net/{other_tenant}/"}, "other-key")
    same_kid = _foreign(claims, json.loads(base64.urlsafe_b64decode(good.split(".")[0] + "=="))["kid"])
    vault = mi_json(plane["db"], "token", "get", "--resource", "reader", "-g", "rg", "--audience",
                    "https://vault.azure.net")["access_token"]
    cases = {
        "expired": (expired, "Lifetime validation failed. The token is expired."),
        "another tenant's key": (foreign, "Signature validation failed. Signature is invalid."),
        "another key under this kid": (same_kid, "Signature validation failed. Signature is invalid."),
        "Key Vault's audience": (vault, "Audience validation failed. Audience did not match."),
    }
    for name, (token, detail) in cases.items():
        r = call(plane, "GET", listing, token=token)
        status, code, root = storage_error(r)
        assert (status, code, root.findtext("AuthenticationErrorDetail")) == (401, "InvalidAuthenticationInfo", detail), name
        assert r.headers["WWW-Authenticate"].startswith("Bearer authorization_uri=https://login.microsoftonline.com/")
    for audience in ("https://st1.blob.core.windows.net", "https://st1.blob.core.windows.net/",
                     "e406a681-f3d4-42a8-90b6-c2b029497af1", "https://storage.azure.com"):
        token = mi_json(plane["db"], "token", "get", "--resource", "reader", "-g", "rg", "--audience", audience)
        assert call(plane, "GET", listing, token=token["access_token"]).status_code == 200, audience
    # another account's URL is not this account's audience
    other = mi_json(plane["db"], "token", "get", "--resource", "reader", "-g", "rg", "--audience",
                    "https://st2.blob.core.windows.net")["access_token"]
    assert refused(call(plane, "GET", listing, token=other)) == (401, "InvalidAuthenticationInfo")
    # no token at all, an empty bearer, another scheme
    for authorization in (None, "Bearer", "Bearer    ", "Basic dXNlcjpwYXNz"):
        headers = {"x-ms-version": VERSION, **({"Authorization": authorization} if authorization else {})}
        r = plane["session"].get(ACCOUNT_URL + listing, headers=headers, timeout=60)
        assert refused(r) == (401, "NoAuthenticationInformation"), authorization
        assert "resource_id=https://storage.azure.com" in r.headers["WWW-Authenticate"]
    entry = log(plane, f"{BLOBS}/read")[-1]
    assert (entry["status"], entry["caller"]) == ("Failed", "(no valid token)")


def test_shared_key_and_account_sas_follow_the_accounts_setting(plane):
    from azure.core.exceptions import HttpResponseError
    from azure.storage.blob import AccountSasPermissions, BlobServiceClient, ResourceTypes, generate_account_sas

    db = plane["db"]
    key = mi_json(db, "storage", "account", "keys", "list", "-n", "st1", "-g", "rg")[0]["value"]
    service = BlobServiceClient(ACCOUNT_URL, credential=key, proxies={"https": plane["env"]["HTTPS_PROXY"]},
                                connection_verify=plane["env"]["REQUESTS_CA_BUNDLE"], retry_total=0)
    blob = service.get_blob_client("data", "by-key.txt")
    blob.upload_blob(b"by key", overwrite=True)
    assert blob.download_blob().readall() == b"by key"
    sas = generate_account_sas("st1", key, ResourceTypes(container=True, object=True), AccountSasPermissions(read=True),
                               expiry=datetime.now(timezone.utc) + timedelta(hours=1))
    assert call(plane, "GET", f"/data/by-key.txt?{sas}").content == b"by key"
    # a SAS signed with another key is Azurite's to refuse (the signature), still in Storage's shape
    bad = generate_account_sas("st1", base64.b64encode(b"k" * 64).decode(), ResourceTypes(object=True),
                               AccountSasPermissions(read=True), expiry=datetime.now(timezone.utc) + timedelta(hours=1))
    assert refused(call(plane, "GET", f"/data/by-key.txt?{bad}")) == (403, "AuthorizationFailure")
    mi_json(db, "storage", "account", "update", "-n", "st1", "-g", "rg", "--allow-shared-key-access", "false")
    try:
        with pytest.raises(HttpResponseError) as refusal:
            blob.download_blob().readall()
        assert (refusal.value.status_code, refusal.value.error_code) == (403, "KeyBasedAuthenticationNotPermitted")
        assert refused(call(plane, "GET", f"/data/by-key.txt?{sas}")) == (403, "KeyBasedAuthenticationNotPermitted")
        # tokens are untouched by the setting
        assert call(plane, "GET", "/data/by-key.txt", "reader").content == b"by key"
    finally:
        mi_json(db, "storage", "account", "update", "-n", "st1", "-g", "rg", "--allow-shared-key-access", "true")
    assert blob.download_blob().readall() == b"by key"
    entries = [(e["caller"], e["status"]) for e in log(plane, f"{BLOBS}/read") if e["resourceId"].endswith("/by-key.txt")]
    reader = plane["vms"]["reader"]["identity"]["principalId"]
    # the key, the SAS, the SAS of another key (the plane lets Azurite check signatures), the two refusals,
    # the token, the key again
    assert entries[-7:] == [("(SharedKey)", "Succeeded"), ("(AccountSAS)", "Succeeded"), ("(AccountSAS)", "Succeeded"),
                            ("(SharedKey)", "Failed"), ("(AccountSAS)", "Failed"), (reader, "Succeeded"),
                            ("(SharedKey)", "Succeeded")]


# -- 4. robustness ---------------------------------------------------------------------------------------------

def test_an_account_that_does_not_exist_is_refused_at_connect_and_by_host(plane):
    proxy_port = urlsplit(plane["env"]["HTTPS_PROXY"]).port
    sock, answer = connect_through(proxy_port, "nosuch.blob.core.windows.net:443")
    sock.close()
    assert answer.startswith(b"HTTP/1.1 502") and b"nosuch.blob.core.windows.net does not exist" in answer, answer
    # through st1's tunnel, a request whose Host names another account
    r = raw_request(plane, "GET", "/data?restype=container&comp=list", host="nosuch.blob.core.windows.net")
    assert refused(r) == (404, "AccountNotFound")


MALFORMED = {
    "/%zz/x": (400, "InvalidUri"),  # a broken escape in the container
    "/data/%zz": (400, "InvalidUri"),  # and in the blob
    "/da%2Fta/x": (400, "InvalidUri"),  # an encoded slash inside the container segment
    "/data/%ff%fe": (400, "InvalidUri"),  # not UTF-8
    "/data?restype=container&comp=list&comp=list": (400, "InvalidQueryParameterValue"),
    "/data?restype=container&comp=nonsense": (400, "InvalidQueryParameterValue"),
    "/data?restype=nonsense": (400, "InvalidQueryParameterValue"),
    "/data": (400, "InvalidUri"),  # a container without restype
}


def test_malformed_requests_get_storages_400s_and_never_a_failure(plane):
    for target, expected in MALFORMED.items():
        assert refused(raw_request(plane, "GET", target)) == expected, target
    assert_no_traceback(plane)


def test_odd_names_and_headers_reach_the_store_or_get_storages_answer(plane):
    assert put_blob(plane, "/data/odd.txt", "owner", b"odd").status_code == 201
    for method, target, extra, expected in [
        ("GET", "//data?restype=container&comp=list", "", (400, "InvalidUri")),  # an empty container name
        ("GET", "/data/%00", "", (404, "BlobNotFound")),
        ("GET", "/data/" + "a" * 2000, "", (404, "BlobNotFound")),
        ("GET", "/data/odd.txt?" + "&".join(f"p{i}=1" for i in range(1200)), "", (400, "InvalidUri")),
        ("PUT", "/data/odd.txt?comp=metadata", "x-ms-meta-a: \xff\xfe\r\nContent-Length: 0\r\n", (200, None)),
        # a Range outside Storage's two forms, on which Azurite fails: InternalError in Storage's shape
        ("GET", "/data/odd.txt", "Range: bytes=zz\r\n", (500, "InternalError")),
        ("GET", "/data/odd.txt", "Range: bytes=0-1\r\n", (206, None)),
        ("GET", "/data/odd.txt?comp=tags&comp=tags", "", (400, "InvalidQueryParameterValue")),
    ]:
        r = raw_request(plane, method, target, extra=extra)
        if expected[1] is None:
            assert r.status_code == expected[0], (method, target[:60], r.status_code, r.content[:300])
        else:
            assert refused(r) == expected, (method, target[:60])
    # HTTP that is not HTTP: answered 400 by the server before any plane, the connection closed
    r = raw_request(plane, "PUT", "/data/neg.txt", extra="x-ms-blob-type: BlockBlob\r\nContent-Length: -1\r\n")
    assert r.status_code == 400
    assert "Azurite failed on this request (500 without an error code" in server_log(plane)
    assert call(plane, "GET", "/data/odd.txt", "owner").content == b"odd"  # Azurite is still up
    assert_no_traceback(plane)


def test_a_storage_account_deleted_while_serving_is_refused(plane):
    db = plane["db"]
    account = mi_json(db, "resource", "create", "-g", "rg", "-n", "st9", "--type", "storage")
    mi_json(db, "role", "assignment", "create", "--assignee", "owner", "--role", "Storage Blob Data Owner", "--scope",
            account["id"])
    session = _session(plane["env"])
    headers = {"x-ms-version": VERSION, "Authorization": f"Bearer {plane['tokens']['owner']}"}
    assert session.put("https://st9.blob.core.windows.net/nine?restype=container", headers=headers,
                       timeout=120).status_code == 201
    mi_json(db, "resource", "delete", "-g", "rg", "-n", "st9", "--type", "storage", "--yes")
    # a connection made before: the host names no account now
    r = session.get("https://st9.blob.core.windows.net/nine?restype=container&comp=list", headers=headers, timeout=120)
    assert refused(r) == (404, "AccountNotFound")
    # a new one: the proxy refuses to connect
    proxy_port = urlsplit(plane["env"]["HTTPS_PROXY"]).port
    sock, answer = connect_through(proxy_port, "st9.blob.core.windows.net:443")
    sock.close()
    assert answer.startswith(b"HTTP/1.1 502") and b"st9.blob.core.windows.net does not exist" in answer
    assert call(plane, "GET", "/data?restype=container&comp=list", "owner").status_code == 200
    # an account made again under the name is a new, empty account: the old one's blobs went with it
    assert _st9_containers(plane) == []
    assert session.put("https://st9.blob.core.windows.net/again?restype=container", headers=headers,
                       timeout=120).status_code == 201
    assert _st9_containers(plane) == ["again"]  # and what the new account holds is kept


def _st9_containers(cloud) -> list[str]:
    """Make st9 (again) if it is gone, with the owner's role on it, and list its containers."""
    db = cloud["db"]
    if not any(r["name"] == "st9" for r in mi_json(db, "resource", "list", "-g", "rg")):
        account = mi_json(db, "resource", "create", "-g", "rg", "-n", "st9", "--type", "storage")
        mi_json(db, "role", "assignment", "create", "--assignee", "owner", "--role", "Storage Blob Data Owner",
                "--scope", account["id"])
    r = _session(cloud["env"]).get("https://st9.blob.core.windows.net/?comp=list", timeout=120,
                                   headers={"x-ms-version": VERSION, "Authorization": f"Bearer {cloud['tokens']['owner']}"})
    assert r.status_code == 200, r.text
    return [e.findtext("Name") for e in ET.fromstring(r.content).iter("Container")]


# -- 5. concurrency ---------------------------------------------------------------------------------------------

def test_sixteen_clients_upload_and_download_at_once(plane):
    def one(i: int) -> bytes:
        session = _session(plane["env"])
        body = os.urandom(MiB + i)
        r = call(plane, "PUT", f"/data/many/{i}.bin", "contrib" if i % 2 else "owner", session=session, data=body,
                 headers={"x-ms-blob-type": "BlockBlob"})
        assert r.status_code == 201, r.text
        r = call(plane, "GET", f"/data/many/{i}.bin", "reader", session=session)
        assert r.status_code == 200 and r.content == body
        return hashlib.sha256(body).digest()

    with ThreadPoolExecutor(16) as pool:
        digests = list(pool.map(one, range(16)))
    assert len(set(digests)) == 16
    r = call(plane, "GET", "/data?restype=container&comp=list&prefix=many/", "reader")
    assert len(ET.fromstring(r.content).findall("Blobs/Blob")) == 16
    assert_no_traceback(plane)


def test_azurite_killed_is_started_again_by_the_next_request(plane):
    # Azurite writes its metadata to disk every 5 s (and when stopped): what it was told before that is
    # kept through a SIGKILL, later writes may be lost, as they would be by its own process dying. So the
    # big blob is downloaded once Azurite's saved state holds it, however long a busy machine takes.
    saved = plane["db"].parent / "store.db.azurite" / "__azurite_db_blob__.json"
    deadline = time.monotonic() + 120
    while b'"big.bin"' not in (saved.read_bytes() if saved.exists() else b"") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert b'"big.bin"' in saved.read_bytes(), "Azurite never saved its state"
    pid = azurite_pid(plane)
    assert pid is not None
    r = call(plane, "GET", "/data/big.bin", "owner", stream=True)  # a download under way when it dies
    chunks = r.iter_content(MiB)
    next(chunks)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(Exception):  # the connection is closed short of the length: the client knows and retries
        for _ in chunks:
            pass
    answers = []
    for _ in range(2):
        r = call(plane, "HEAD", "/data/big.bin", "owner")
        answers.append(r.status_code)
        if r.status_code == 200:
            break
        assert (r.status_code, r.headers["x-ms-error-code"]) == (503, "ServerBusy")
    assert answers[-1] == 200 and int(r.headers["Content-Length"]) == 200 * MiB, answers
    assert azurite_pid(plane) not in (None, pid)
    assert "Azurite stopped mid-answer" in server_log(plane)
    assert_no_traceback(plane)


def test_an_account_made_under_load_restarts_azurite_once(plane):
    log_file = plane["db"].parent / "store.db.azurite" / "azurite.log"
    starts = log_file.read_text().count("is starting")
    stop, answers = threading.Event(), []

    def client() -> None:
        session = _session(plane["env"])
        while not stop.is_set():
            answers.append(call(plane, "GET", "/data/odd.txt", "reader", session=session).status_code)

    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    mi_json(plane["db"], "resource", "create", "-g", "rg", "-n", "st8", "--type", "storage")
    deadline = time.monotonic() + 120  # as long as mi gives Azurite to start, and more
    while log_file.read_text().count("successfully listens") <= starts and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # requests that read the store before the change keep arriving
    stop.set()
    for thread in threads:
        thread.join()
    # once for the new account, never back to the accounts before it for a request that read them
    assert log_file.read_text().count("is starting") == starts + 1
    # requests under way when Azurite restarted are told to retry; all others are served
    assert set(answers) <= {200, 503} and answers.count(200) > len(answers) // 2, answers


STUB = """#!{python}
import signal, socket, sys, time
port = int(sys.argv[sys.argv.index("--blobPort") + 1])
server = socket.create_server(("127.0.0.1", port))
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
while True:
    time.sleep(1)
"""


def test_a_request_that_read_the_store_before_a_restart_does_not_restart_azurite_back(tmp_path):
    import asyncio
    import sys

    from mi_cli.server.azurite import Azurite

    stub = tmp_path / "azurite-blob"
    stub.write_text(STUB.format(python=sys.executable))
    stub.chmod(0o755)
    azurite_ = Azurite(str(stub), tmp_path / "workspace", (b"cert", b"key"))

    async def run() -> list[int]:
        pids = []
        for accounts, read_at in (("a:k", 1.0), ("a:k;b:k", 3.0), ("a:k", 2.0), ("a:k;b:k", 4.0), ("a:k", 5.0)):
            await azurite_.ensure(accounts, read_at=read_at)
            pids.append(azurite_.process.pid)
        return pids

    try:
        pids = asyncio.run(run())
    finally:
        azurite_.stop()
    # started, restarted for b, kept for a reading older than b's, kept for b, restarted for b's removal
    assert pids[0] != pids[1] == pids[2] == pids[3] != pids[4]
    assert azurite_.accounts == "a:k"


# -- the end of mi serve ------------------------------------------------------------------------------------------

def test_stopping_mi_serve_stops_azurite_and_so_does_killing_it(plane):
    pid = azurite_pid(plane)
    assert pid is not None
    assert plane["server"].stop(signal.SIGTERM) == 0
    assert not _alive(pid)
    # st9 deleted and made again while no mi serve runs: the next one empties it before serving it
    mi_json(plane["db"], "resource", "delete", "-g", "rg", "-n", "st9", "--type", "storage", "--yes")
    # killed outright, mi serve cannot stop Azurite: the parent-death signal does
    srv = plane["server"] = start_server(plane["db"], "--azurite", azurite())
    plane["env"] = mi_json(plane["db"], "env", "--resource", "owner", "-g", "rg")
    assert _st9_containers(plane) == []
    deadline = time.monotonic() + 30
    while (pid := azurite_pid(plane)) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pid is not None
    srv.proc.kill()
    srv.proc.wait(10)
    deadline = time.monotonic() + 15
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
