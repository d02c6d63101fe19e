"""The Blob plane's reading of a request: operation, permission, data or action, scope and sub-operation for every
Blob operation, names as Storage decodes them, requests refused, how a request authenticates, and Storage's XML errors."""

from __future__ import annotations

import ast
import re
import sys
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from mi_cli import ids
from mi_cli.services import blob
from mi_cli.services.blob import (ADD, CONTAINER_DELETE, CONTAINER_READ, CONTAINER_WRITE, DELEGATION_KEY, DELETE,
                                  DELETE_VERSION, FILTER, GET_ACL, GET_INFO, IMMUTABILITY, PERMANENT_DELETE, READ, SERVICE_READ,
                                  SERVICE_WRITE, SET_ACL, TAGS_READ, TAGS_WRITE, WRITE, BlobOperation)

ACCOUNT = "/subscriptions/0b1f6471-1bf0-4dda-aec3-111122223333/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/acct"
SVC = f"{ACCOUNT}/blobServices/default"
CT = f"{SVC}/containers/c"
BL = f"{CT}/blobs/b"
SRC = "https://acct.blob.core.windows.net/src/a.txt"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"

# Headers each write needs to be the operation it is (what Storage requires, and what the emulator selects on)
BLOCK = {"Content-Length": "3", "x-ms-blob-type": "BlockBlob"}
PAGE = {"Content-Length": "0", "x-ms-blob-type": "PageBlob", "x-ms-blob-content-length": "512"}
APPEND = {"Content-Length": "0", "x-ms-blob-type": "AppendBlob"}
ACCOUNT_Q = [("restype", "account"), ("comp", "properties")]
C = [("restype", "container")]

# method, path, query, headers -> name, action, data, scope, sub-operation, also, alternatives, if_new
CASES = [
    # the account's blob service
    ("GET", "/", [("comp", "list")], {}, "List Containers", CONTAINER_READ, False, SVC, None, (), (), None),
    ("GET", "/", [("restype", "service"), ("comp", "properties")], {}, "Get Blob Service Properties", SERVICE_READ, False, SVC,
     None, (), (), None),
    ("PUT", "/", [("restype", "service"), ("comp", "properties")], {}, "Set Blob Service Properties", SERVICE_WRITE, False, SVC,
     None, (), (), None),
    ("GET", "/", [("restype", "service"), ("comp", "stats")], {}, "Get Blob Service Stats", SERVICE_READ, False, SVC,
     None, (), (), None),
    ("POST", "/", [("restype", "service"), ("comp", "userdelegationkey")], {}, "Get User Delegation Key", DELEGATION_KEY, False,
     SVC, None, (), (), None),
    ("GET", "/", ACCOUNT_Q, {}, "Get Account Information", GET_INFO, False, SVC, None, (), (), None),
    ("HEAD", "/", ACCOUNT_Q, {}, "Get Account Information", GET_INFO, False, SVC, None, (), (), None),
    ("GET", "/", [("comp", "blobs"), ("where", "\"k\"='v'")], {}, "Find Blobs by Tags", FILTER, True, SVC, None, (), (), None),
    ("POST", "/", [("comp", "batch")], {"Content-Length": "100", "Content-Type": "multipart/mixed; boundary=b"}, "Blob Batch",
     CONTAINER_WRITE, False, SVC, None, (), (), None),
    # containers
    ("PUT", "/c", C, {}, "Create Container", CONTAINER_WRITE, False, CT, None, (), (), None),
    ("GET", "/c", C, {}, "Get Container Properties", CONTAINER_READ, False, CT, None, (), (), None),
    ("HEAD", "/c", C, {}, "Get Container Properties", CONTAINER_READ, False, CT, None, (), (), None),
    ("DELETE", "/c", C, {}, "Delete Container", CONTAINER_DELETE, False, CT, None, (), (), None),
    ("GET", "/c", C + [("comp", "metadata")], {}, "Get Container Metadata", CONTAINER_READ, False, CT, None, (), (), None),
    ("HEAD", "/c", C + [("comp", "metadata")], {}, "Get Container Metadata", CONTAINER_READ, False, CT, None, (), (), None),
    ("PUT", "/c", C + [("comp", "metadata")], {}, "Set Container Metadata", CONTAINER_WRITE, False, CT, None, (), (), None),
    ("GET", "/c", C + [("comp", "acl")], {}, "Get Container ACL", GET_ACL, False, CT, None, (), (), None),
    ("HEAD", "/c", C + [("comp", "acl")], {}, "Get Container ACL", GET_ACL, False, CT, None, (), (), None),
    ("PUT", "/c", C + [("comp", "acl")], {}, "Set Container ACL", SET_ACL, False, CT, None, (), (), None),
    ("PUT", "/c", C + [("comp", "undelete")], {}, "Restore Container", CONTAINER_WRITE, False, CT, None, (), (), None),
    ("PUT", "/c", C + [("comp", "lease")], {"x-ms-lease-action": "acquire"}, "Lease Container", CONTAINER_WRITE, False, CT,
     None, (), (), None),
    ("PUT", "/c", C + [("comp", "lease")], {"x-ms-lease-action": "break"}, "Lease Container", CONTAINER_WRITE, False, CT,
     None, (), (), None),
    ("PUT", "/c", C + [("comp", "lease")], {"x-ms-lease-action": "change", "x-ms-lease-id": "1", "x-ms-proposed-lease-id": "2"},
     "Lease Container", CONTAINER_WRITE, False, CT, None, (), (), None),
    ("GET", "/c", C + [("comp", "list")], {}, "List Blobs", READ, True, CT, "Blob.List", (), (), None),
    ("GET", "/c", C + [("comp", "list"), ("delimiter", "/"), ("prefix", "dir/")], {}, "List Blobs", READ, True, CT, "Blob.List",
     (), (), None),
    ("GET", "/c", C + [("comp", "list"), ("include", "metadata,Tags")], {}, "List Blobs", READ, True, CT, "Blob.List",
     (TAGS_READ,), (), None),
    ("GET", "/c", C + [("comp", "list"), ("include", "snapshots"), ("include", "tags")], {}, "List Blobs", READ, True, CT,
     "Blob.List", (TAGS_READ,), (), None),
    ("GET", "/c", C + [("comp", "blobs"), ("where", "\"k\"='v'")], {}, "Find Blobs by Tags in Container", FILTER, True, CT,
     None, (), (), None),
    ("POST", "/c", C + [("comp", "batch")], {"Content-Length": "100", "Content-Type": "multipart/mixed; boundary=b"},
     "Blob Batch", CONTAINER_WRITE, False, CT, None, (), (), None),
    ("GET", "/c", ACCOUNT_Q, {}, "Get Account Information", GET_INFO, False, SVC, None, (), (), None),
    # blobs: reads
    ("GET", "/c/b", [], {}, "Get Blob", READ, True, BL, None, (), (), None),
    ("GET", "/c/b", [("snapshot", "2024-01-01T00:00:00.0000000Z")], {}, "Get Blob", READ, True, BL, None, (), (), None),
    ("HEAD", "/c/b", [], {}, "Get Blob Properties", READ, True, BL, None, (), (), None),
    ("GET", "/c/b", [("comp", "metadata")], {}, "Get Blob Metadata", READ, True, BL, None, (), (), None),
    ("HEAD", "/c/b", [("comp", "metadata")], {}, "Get Blob Metadata", READ, True, BL, None, (), (), None),
    ("GET", "/c/b", [("comp", "tags")], {}, "Get Blob Tags", TAGS_READ, True, BL, None, (), (), None),
    ("GET", "/c/b", [("comp", "blocklist"), ("blocklisttype", "all")], {}, "Get Block List", READ, True, BL, None, (), (), None),
    ("GET", "/c/b", [("comp", "pagelist")], {}, "Get Page Ranges", READ, True, BL, None, (), (), None),
    ("GET", "/c/b", [("comp", "pagelist"), ("prevsnapshot", "2024-01-01T00:00:00.0000000Z")], {}, "Get Page Ranges", READ, True,
     BL, None, (), (), None),
    ("POST", "/c/b", [("comp", "query")], {}, "Query Blob Contents", READ, True, BL, None, (), (), None),
    ("GET", "/c/b", ACCOUNT_Q, {}, "Get Account Information", GET_INFO, False, SVC, None, (), (), None),
    ("HEAD", "/c/b", ACCOUNT_Q, {}, "Get Account Information", GET_INFO, False, SVC, None, (), (), None),
    # blobs: writes
    ("PUT", "/c/b", [], BLOCK, "Put Blob", WRITE, True, BL, None, (), (), ADD),
    ("PUT", "/c/b", [], PAGE, "Put Blob", WRITE, True, BL, None, (), (), ADD),
    ("PUT", "/c/b", [], APPEND, "Put Blob", WRITE, True, BL, None, (), (), ADD),
    ("PUT", "/c/b", [], {**BLOCK, "x-ms-tags": "project=contoso"}, "Put Blob", WRITE, True, BL, "Blob.Write.WithTagHeaders",
     (TAGS_WRITE,), (), ADD),
    ("PUT", "/c/b", [], {"Content-Length": "0", "x-ms-blob-type": "BlockBlob", "x-ms-copy-source": SRC}, "Put Blob From URL",
     WRITE, True, BL, None, (), (), ADD),
    ("PUT", "/c/b", [], {"Content-Length": "0", "x-ms-blob-type": "BlockBlob", "x-ms-copy-source": SRC,
                         "x-ms-copy-source-tag-option": "COPY"}, "Put Blob From URL", WRITE, True, BL, None,
     (TAGS_WRITE,), (), ADD),
    ("PUT", "/c/b", [], {"x-ms-copy-source": SRC}, "Copy Blob", WRITE, True, BL, None, (), (), ADD),
    ("PUT", "/c/b", [], {"x-ms-copy-source": SRC, "x-ms-tags": "a=b"}, "Copy Blob", WRITE, True, BL,
     "Blob.Write.WithTagHeaders", (TAGS_WRITE,), (), ADD),
    ("PUT", "/c/b", [], {"x-ms-copy-source": SRC, "x-ms-requires-sync": "true"}, "Copy Blob From URL", WRITE, True, BL, None,
     (), (), ADD),
    ("PUT", "/c/b", [("comp", "copy"), ("copyid", "42")], {"x-ms-copy-action": "abort"}, "Abort Copy Blob", WRITE, True, BL,
     None, (), (), None),
    ("PUT", "/c/b", [("comp", "incrementalcopy")], {"x-ms-copy-source": SRC + "?snapshot=x"}, "Incremental Copy Blob", WRITE,
     True, BL, None, (), (), ADD),
    ("PUT", "/c/b", [("comp", "properties")], {"x-ms-blob-content-type": "text/plain"}, "Set Blob Properties", WRITE, True, BL,
     None, (), (), None),
    ("PUT", "/c/b", [("comp", "properties")], {"x-ms-blob-content-length": "1024"}, "Set Blob Properties", WRITE, True, BL,
     None, (), (), None),
    ("PUT", "/c/b", [("comp", "properties")], {"x-ms-sequence-number-action": "max", "x-ms-blob-sequence-number": "7"},
     "Set Blob Properties", WRITE, True, BL, None, (), (), None),
    ("PUT", "/c/b", [("comp", "metadata")], {"x-ms-meta-a": "1"}, "Set Blob Metadata", WRITE, True, BL, None, (), (), None),
    ("PUT", "/c/b", [("comp", "tags")], {"Content-Length": "90"}, "Set Blob Tags", TAGS_WRITE, True, BL, None, (), (), None),
    ("PUT", "/c/b", [("comp", "lease")], {"x-ms-lease-action": "acquire", "x-ms-lease-duration": "-1"}, "Lease Blob", WRITE,
     True, BL, None, (), (), None),
    ("PUT", "/c/b", [("comp", "lease")], {"x-ms-lease-action": "release", "x-ms-lease-id": "1"}, "Lease Blob", WRITE, True, BL,
     None, (), (), None),
    ("PUT", "/c/b", [("comp", "snapshot")], {}, "Snapshot Blob", WRITE, True, BL, None, (), (ADD,), None),
    ("PUT", "/c/b", [("comp", "tier")], {"x-ms-access-tier": "Cool"}, "Set Blob Tier", WRITE, True, BL, "Blob.Write.Tier",
     (), (), None),
    ("PUT", "/c/b", [("comp", "expiry")], {"x-ms-expiry-option": "NeverExpire"}, "Set Blob Expiry", WRITE, True, BL, None,
     (), (), None),
    ("PUT", "/c/b", [("comp", "immutabilityPolicies")], {}, "Set Blob Immutability Policy", IMMUTABILITY, True, BL, None,
     (), (), None),
    ("DELETE", "/c/b", [("comp", "immutabilityPolicies")], {}, "Delete Blob Immutability Policy", IMMUTABILITY, True, BL,
     None, (), (), None),
    ("PUT", "/c/b", [("comp", "legalhold")], {"x-ms-legal-hold": "true"}, "Set Blob Legal Hold", CONTAINER_WRITE, False, CT,
     None, (), (), None),
    ("PUT", "/c/b", [("comp", "block"), ("blockid", "AAAA")], {"Content-Length": "3"}, "Put Block", WRITE, True, BL, None,
     (), (), None),
    ("PUT", "/c/b", [("comp", "block"), ("blockid", "AAAA")], {"Content-Length": "0", "x-ms-copy-source": SRC},
     "Put Block From URL", WRITE, True, BL, None, (), (), None),
    ("PUT", "/c/b", [("comp", "blocklist")], {"Content-Length": "60"}, "Put Block List", WRITE, True, BL, None, (), (), None),
    ("PUT", "/c/b", [("comp", "blocklist")], {"Content-Length": "60", "x-ms-tags": "a=b"}, "Put Block List", WRITE, True, BL,
     "Blob.Write.WithTagHeaders", (TAGS_WRITE,), (), None),
    ("PUT", "/c/b", [("comp", "page")], {"Content-Length": "512", "x-ms-page-write": "update", "x-ms-range": "bytes=0-511"},
     "Put Page", WRITE, True, BL, None, (), (), None),
    ("PUT", "/c/b", [("comp", "page")], {"Content-Length": "0", "x-ms-page-write": "clear", "x-ms-range": "bytes=0-511"},
     "Put Page", WRITE, True, BL, None, (), (), None),
    ("PUT", "/c/b", [("comp", "page")], {"Content-Length": "0", "x-ms-page-write": "update", "x-ms-range": "bytes=0-511",
                                         "x-ms-copy-source": SRC, "x-ms-source-range": "bytes=0-511"},
     "Put Page From URL", WRITE, True, BL, None, (), (), None),
    ("PUT", "/c/b", [("comp", "appendblock")], {"Content-Length": "3"}, "Append Block", WRITE, True, BL, None, (), (ADD,), None),
    ("PUT", "/c/b", [("comp", "appendblock")], {"Content-Length": "0", "x-ms-copy-source": SRC}, "Append Block From URL",
     WRITE, True, BL, None, (), (ADD,), None),
    ("PUT", "/c/b", [("comp", "seal")], {}, "Append Blob Seal", WRITE, True, BL, None, (), (), None),
    # blobs: deletes
    ("DELETE", "/c/b", [], {}, "Delete Blob", DELETE, True, BL, None, (), (), None),
    ("DELETE", "/c/b", [], {"x-ms-delete-snapshots": "include"}, "Delete Blob", DELETE, True, BL, None, (), (), None),
    ("DELETE", "/c/b", [("snapshot", "2024-01-01T00:00:00.0000000Z")], {}, "Delete Blob", DELETE, True, BL, None, (), (), None),
    ("DELETE", "/c/b", [("versionid", "2024-01-01T00:00:00.0000000Z")], {}, "Delete Blob", DELETE_VERSION, True, BL, None,
     (), (), None),
    ("DELETE", "/c/b", [("versionid", "2024-01-01T00:00:00.0000000Z"), ("deletetype", "permanent")], {}, "Delete Blob",
     PERMANENT_DELETE, True, BL, None, (), (), None),
    ("PUT", "/c/b", [("comp", "undelete")], {}, "Undelete Blob", CONTAINER_WRITE, False, CT, None, (), (), None),
    # CORS preflight is anonymous
    ("OPTIONS", "/c/b", [], {"Origin": "https://app", "Access-Control-Request-Method": "PUT"}, "Preflight Blob Request", None,
     False, SVC, None, (), (), None),
]


@pytest.mark.parametrize("method,path,query,headers,name,action,data,where,sub,also,alternatives,if_new", CASES,
                         ids=[f"{c[0]} {c[1]}?{'&'.join(f'{k}={v}' for k, v in c[2])} {c[4]}" for c in CASES])
def test_every_operation_maps_to_its_permission_data_or_action_and_scope(method, path, query, headers, name, action, data, where,
                                                                           sub, also, alternatives, if_new):
    op = blob.operation(method, path, query, headers)
    assert op is not None, blob.refusal(method, path, query, headers)
    assert (op.name, op.action, op.data) == (name, action, data)
    assert blob.scope(ACCOUNT, op) == where
    assert (op.suboperation, op.also, op.alternatives, op.if_new) == (sub, also, alternatives, if_new)
    # every permission an operation may need is checked against the same list of a role (actions or dataActions)
    assert all(blob.is_data(p) == data for group in op.required(new_blob=True) for p in group)


def test_the_table_covers_every_operation_of_the_emulator_and_every_permission_has_one_kind():
    named = {c[4] for c in CASES}
    assert named == set(blob._PERMISSIONS) | {blob.PREFLIGHT}
    ran = set().union(*blob._RUNS_AS.values())
    assert ran == {spec[0] for spec in blob._AZURITE}
    for action, alternatives, if_new, _ in blob._PERMISSIONS.values():
        assert {blob.is_data(p) for p in (action, *alternatives, *([if_new] if if_new else []))} == {blob.is_data(action)}


def test_put_blob_needs_write_or_for_a_new_blob_add_and_tags_write_for_its_tags():
    op = blob.operation("PUT", "/c/b", [], {**BLOCK, "x-ms-tags": "a=b"})
    assert op.required() == ((WRITE,), (TAGS_WRITE,))
    assert op.required(new_blob=True) == ((WRITE, ADD), (TAGS_WRITE,))
    snapshot = blob.operation("PUT", "/c/b", [("comp", "snapshot")], {})
    assert snapshot.required() == snapshot.required(new_blob=True) == ((WRITE, ADD),)
    listing = blob.operation("GET", "/c", C + [("comp", "list"), ("include", "tags")], {})
    assert listing.required() == ((READ,), (TAGS_READ,))
    assert blob.operation("OPTIONS", "/", [], {}).required() == ()


@pytest.mark.parametrize("path,container,name,where", [
    ("/c/dir/sub/file.txt", "c", "dir/sub/file.txt", f"{CT}/blobs/dir/sub/file.txt"),
    ("/c/dir%2Fsub%2Ffile.txt", "c", "dir/sub/file.txt", f"{CT}/blobs/dir/sub/file.txt"),
    ("/c/a%20b%2Bc+d.txt", "c", "a b+c+d.txt", f"{CT}/blobs/a b+c+d.txt"),
    ("/c/%E2%82%AC/r%C3%A9sum%C3%A9", "c", "€/résumé", f"{CT}/blobs/€/résumé"),
    ("/c/win%5Cpath\\file", "c", "win/path/file", f"{CT}/blobs/win/path/file"),
    ("/c/a//b/", "c", "a//b/", f"{CT}/blobs/a//b/"),
    ("/c/%3F%23%25", "c", "?#%", f"{CT}/blobs/?#%"),
    ("/%24root/b", "$root", "b", f"{SVC}/containers/$root/blobs/b"),
    (b"/c/caf\xc3\xa9", "c", "café", f"{CT}/blobs/café"),
    ("/c/caf\xc3\xa9", "c", "café", f"{CT}/blobs/café"),  # the same bytes read as latin-1
    ("/c/\u20ac", "c", "€", f"{CT}/blobs/€"),  # text beyond latin-1 is taken as UTF-8
])
def test_names_are_percent_decoded_as_storage_decodes_them_and_scoped_as_they_are(path, container, name, where):
    op = blob.operation("GET", path, [], {})
    assert (op.container, op.blob) == (container, name)
    assert blob.scope(ACCOUNT, op) == where
    assert ids.is_within(where, f"{SVC}/containers/{container}")


def test_a_trailing_slash_is_the_container_and_the_account_id_may_end_in_one():
    op = blob.operation("GET", "/c/", C, {})
    assert (op.name, op.container, op.blob) == ("Get Container Properties", "c", None)
    assert blob.scope(ACCOUNT + "/", op) == CT
    assert blob.operation("GET", "", [("comp", "list")], {}).name == "List Containers"


@pytest.mark.parametrize("path", ["/c%2Fd/b", "/c%5Cd", "//b", "/c/b%zz", "/c/b%E2%82", "/c/%FF", "/c%/b"])
def test_paths_naming_no_resource_are_no_operation_and_invalid_uri(path):
    assert blob.operation("GET", path, [], {}) is None
    assert blob.refusal("GET", path, [], {}) == ("InvalidUri", {})


@pytest.mark.parametrize("method,path,query,headers,code,extra", [
    # the account's root without comp: Storage's answer to a bare GET
    ("GET", "/", [], {}, "InvalidQueryParameterValue", {"QueryParameterName": "comp", "QueryParameterValue": "", "Reason": ""}),
    ("GET", "/", [("comp", "bogus")], {}, "InvalidQueryParameterValue",
     {"QueryParameterName": "comp", "QueryParameterValue": "bogus", "Reason": ""}),
    ("GET", "/c", [("restype", "share")], {}, "InvalidQueryParameterValue",
     {"QueryParameterName": "restype", "QueryParameterValue": "share", "Reason": ""}),
    ("GET", "/c", C + [("comp", "list"), ("comp", "tags")], {}, "InvalidQueryParameterValue",
     {"QueryParameterName": "comp", "QueryParameterValue": "list,tags", "Reason": ""}),
    ("GET", "/c/b", [("comp", "List")], {}, "InvalidQueryParameterValue",
     {"QueryParameterName": "comp", "QueryParameterValue": "List", "Reason": ""}),
    # a container without restype=container would be a blob of $root, which the emulator does not serve
    ("GET", "/c", [], {}, "InvalidUri", {}),
    ("DELETE", "/", [("comp", "list")], {}, "UnsupportedHttpVerb", {}),
    ("POST", "/c/b", [], {}, "UnsupportedHttpVerb", {}),
    ("PATCH", "/c/b", [("comp", "tags")], {}, "UnsupportedHttpVerb", {}),
    ("PUT", "/c/b", [], {"Content-Length": "3"}, "MissingRequiredHeader", {"HeaderName": "x-ms-blob-type"}),
    ("PUT", "/c/b", [], {"x-ms-blob-type": "BlockBlob"}, "MissingContentLengthHeader", {"HeaderName": "Content-Length"}),
    ("PUT", "/c/b", [], {**BLOCK, "x-ms-blob-type": "Block"}, "InvalidHeaderValue",
     {"HeaderName": "x-ms-blob-type", "HeaderValue": "Block"}),
    ("PUT", "/c/b", [("comp", "lease")], BLOCK, "MissingRequiredHeader", {"HeaderName": "x-ms-lease-action"}),
    ("PUT", "/c", C + [("comp", "lease")], {"x-ms-lease-action": "release"}, "MissingRequiredHeader",
     {"HeaderName": "x-ms-lease-id"}),
    ("PUT", "/c/b", [("comp", "tier")], BLOCK, "MissingRequiredHeader", {"HeaderName": "x-ms-access-tier"}),
    ("PUT", "/c/b", [("comp", "copy")], {"x-ms-copy-action": "abort"}, "MissingRequiredQueryParameter",
     {"QueryParameterName": "copyid"}),
    ("PUT", "/c/b", [("comp", "block")], {"Content-Length": "3"}, "MissingRequiredQueryParameter",
     {"QueryParameterName": "blockid"}),
    ("PUT", "/c/b", [("comp", "page")], {"Content-Length": "0", "x-ms-page-write": "update", "x-ms-copy-source": SRC},
     "MissingRequiredHeader", {"HeaderName": "x-ms-source-range"}),
    ("PUT", "/c/b", [], {"x-ms-copy-source": SRC, "x-ms-blob-type": "BlockBlob"}, "MissingContentLengthHeader", {"HeaderName": "Content-Length"}),
])
def test_requests_storage_refuses_or_the_emulator_would_run_as_another_operation_are_none(method, path, query, headers, code,
                                                                                          extra):
    assert blob.operation(method, path, query, headers) is None
    assert blob.refusal(method, path, query, headers) == (code, extra)


def test_a_lease_request_missing_its_action_is_not_authorized_as_a_lease_since_the_emulator_would_put_the_blob():
    # Lease Blob needs blobs/write only; the emulator would run Put Blob and write the tags unchecked
    headers = {**BLOCK, "x-ms-tags": "owner=mallory"}
    assert blob._azurite("PUT", 2, {"comp": ["lease"]}, blob._headers(headers)) == "BlockBlob_Upload"
    assert blob.operation("PUT", "/c/b", [("comp", "lease")], headers) is None


def test_more_query_parameters_than_the_emulator_reads_are_refused():
    padding = [(f"p{i}", "x") for i in range(blob.MAX_QUERY_PARAMETERS)]
    assert blob.operation("PUT", "/c/b", padding + [("comp", "tags")], BLOCK) is None
    assert blob.refusal("PUT", "/c/b", padding + [("comp", "tags")], BLOCK) == ("InvalidUri", {})
    assert blob.operation("GET", "/c/b", padding[:-1] + [("comp", "tags")], {}).name == "Get Blob Tags"


def test_x_http_method_overrides_the_method_as_the_emulator_honours_it():
    op = blob.operation("POST", "/c/b", [], {"X-HTTP-Method": "DELETE"})
    assert (op.name, op.action) == ("Delete Blob", DELETE)
    assert blob.operation("POST", "/c", C, {"x-http-method": " DELETE "}).name == "Delete Container"
    assert blob.operation("POST", "/c/b", [], {"X-HTTP-Method": "PUT"}) is None  # not an override it takes


def test_header_names_are_read_in_any_case_and_repeated_headers_as_the_emulator_joins_them():
    assert blob.operation("PUT", "/c/b", [], {"CONTENT-LENGTH": "3", "X-MS-BLOB-TYPE": "blockblob"}).name == "Put Blob"

    class Repeated(dict):
        def items(self):
            return [("x-ms-blob-type", "BlockBlob"), ("Content-Length", "3"), ("X-MS-Blob-Type", "BlockBlob")]

    assert blob.operation("PUT", "/c/b", [], Repeated()) is None  # "BlockBlob, BlockBlob" is no blob type


def test_a_copy_source_in_the_account_needs_blobs_read_on_its_blob():
    source = "https://ACCT.blob.core.windows.net/src/dir%2Fa%20b.txt?snapshot=1"
    op = blob.operation("PUT", "/c/b", [], {"x-ms-copy-source": source})
    host, read = blob.copy_source(op)
    assert host == "acct.blob.core.windows.net"
    assert (read.action, read.data, read.container, read.blob) == (READ, True, "src", "dir/a b.txt")
    assert blob.scope(ACCOUNT, read) == f"{SVC}/containers/src/blobs/dir/a b.txt"
    assert blob.copy_source(blob.operation("GET", "/c/b", [], {})) is None
    bad = BlobOperation("Copy Blob", WRITE, True, "c", "b", source="ftp://host/c/b")
    assert blob.copy_source(bad) is None
    container_only = BlobOperation("Copy Blob", WRITE, True, "c", "b", source="https://acct.blob.core.windows.net/c")
    assert blob.copy_source(container_only) is None


def test_a_copy_needs_read_on_its_source_only_in_the_same_account_and_without_a_sas():
    def groups(source: str) -> list:
        op = blob.operation("PUT", "/c/b", [], {"x-ms-copy-source": source})
        return blob.required(op, "Acct", ACCOUNT, BL, {"subOperation": None}, new_blob=False)

    own = groups("https://acct.blob.core.windows.net/src/a.txt")
    assert own[-1] == ((READ,), f"{SVC}/containers/src/blobs/a.txt", {"subOperation": None})
    assert all(at == BL for _, at, _ in own[:-1])
    for elsewhere in ("https://other.blob.core.windows.net/src/a.txt",
                      "https://acct.blob.core.windows.net/src/a.txt?sv=2023-11-03&sig=x"):
        assert len(groups(elsewhere)) == len(own) - 1


def test_a_list_blobs_prefix_reaches_the_condition():
    op = blob.operation("GET", "/c", [("restype", "container"), ("comp", "list"), ("prefix", "logs/")], {})
    assert blob.request_context(op, [("restype", "container"), ("comp", "list"), ("prefix", "logs/")]) == {
        "subOperation": "Blob.List", blob.PREFIX: "logs/"}


def test_versions_and_permanent_deletes_are_answered_as_an_account_that_keeps_neither():
    get = blob.operation("GET", "/c/b", [("versionid", "v1")], {})
    assert blob.absent(get, [("versionid", "v1")]) == ("BlobNotFound", None)
    delete = blob.operation("DELETE", "/c/b", [("deletetype", "Permanent")], {})
    code, extra = blob.absent(delete, [("deletetype", "Permanent")])
    assert code == "InvalidQueryParameterValue" and extra["QueryParameterValue"] == "Permanent"
    assert blob.absent(blob.operation("GET", "/c/b", [], {}), []) is None


@pytest.mark.parametrize("headers,query,kind", [
    ({"Authorization": "SharedKey acct:c2lnbmF0dXJl"}, [], "SharedKey"),
    ({"authorization": "SharedKeyLite acct:c2lnbmF0dXJl"}, [], "SharedKeyLite"),
    ({"Authorization": "Bearer eyJ0eXAi"}, [], None),
    ({"Authorization": "Bearer eyJ0eXAi"}, [("sv", "2023-11-03"), ("sig", "x")], None),
    ({}, [("sv", "2023-11-03"), ("ss", "b"), ("srt", "sco"), ("sp", "rl"), ("sig", "x")], "AccountSAS"),
    ({}, [("sv", "2023-11-03"), ("sr", "b"), ("sp", "r"), ("sig", "x")], "ServiceSAS"),
    ({}, [("sv", "2023-11-03"), ("sr", "b"), ("skoid", "o"), ("sktid", "t"), ("sp", "r"), ("sig", "x")], "UserDelegationSAS"),
    ({}, [("comp", "list")], None),  # anonymous: the plane answers NoAuthenticationInformation
    ({"Authorization": "  "}, [], None),
])
def test_how_a_request_authenticates_by_key_or_signature(headers, query, kind):
    assert blob.is_shared_key_or_sas(headers, query) == kind
    # a user delegation SAS is Microsoft Entra's: Storage permits it where Shared Key access is disallowed
    assert (kind in blob.KEY_BASED) == (kind in ("SharedKey", "SharedKeyLite", "AccountSAS", "ServiceSAS"))


# -- errors ----------------------------------------------------------------------------------------------

NOW = datetime(2023, 7, 17, 17, 45, 35, 944172, tzinfo=timezone.utc)
RID = "561892a3-701e-0024-4dd6-b8b4ad000000"


def _parse(body: bytes) -> ET.Element:
    assert body.startswith(b"\xef\xbb\xbf<?xml version=\"1.0\" encoding=\"utf-8\"?><Error>")
    return ET.fromstring(body)


def test_a_refused_permission_is_storages_403_to_the_byte():
    status, headers, body = blob.error("AuthorizationPermissionMismatch", request_id=RID, now=NOW)
    # azure-sdk-for-rust#1318: the same response (its time has one more digit of precision), Content-Length 279
    assert body == ("\ufeff<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>AuthorizationPermissionMismatch</Code>"
                    "<Message>This request is not authorized to perform this operation using this permission.\n"
                    f"RequestId:{RID}\nTime:2023-07-17T17:45:35.9441720Z</Message></Error>").encode()
    assert len(body) == 279
    assert status == 403
    assert headers == {"Content-Type": "application/xml", "x-ms-error-code": "AuthorizationPermissionMismatch",
                       "x-ms-request-id": RID}


@pytest.mark.parametrize("kind,detail,length", [
    ("audience", "Audience validation failed. Audience did not match.", 406),  # azure-sdk-for-js recordings
    ("issuer", "Issuer validation failed. Issuer did not match.", 402),  # AzureStorageExplorer#9050
    ("expired", "Lifetime validation failed. The token is expired.", None),
])
def test_a_bad_token_is_invalid_authentication_info_with_its_detail_and_the_bearer_challenge(kind, detail, length):
    code, text = blob.token_error(kind)
    assert (code, text) == ("InvalidAuthenticationInfo", detail)
    status, headers, body = blob.error(code, tenant_id=TENANT, detail=text, request_id=RID, now=NOW)
    root = _parse(body)
    assert status == 401
    assert root.findtext("Code") == "InvalidAuthenticationInfo"
    assert root.findtext("Message").split("\n") == [
        "Server failed to authenticate the request. Please refer to the information in the www-authenticate header.",
        f"RequestId:{RID}", "Time:2023-07-17T17:45:35.9441720Z"]
    assert root.findtext("AuthenticationErrorDetail") == detail
    assert [child.tag for child in root] == ["Code", "Message", "AuthenticationErrorDetail"]
    assert headers["WWW-Authenticate"] == ("Bearer authorization_uri=https://login.microsoftonline.com/"
                                           f"{TENANT}/oauth2/authorize resource_id=https://storage.azure.com")
    assert headers["x-ms-error-code"] == "InvalidAuthenticationInfo"
    if length:
        assert len(body) == length


def test_no_token_is_no_authentication_information_with_the_challenge_and_no_detail():
    assert blob.token_error("missing") == ("NoAuthenticationInformation", None)
    status, headers, body = blob.error("NoAuthenticationInformation", tenant_id=TENANT, request_id=RID, now=NOW)
    root = _parse(body)
    assert status == 401 and "WWW-Authenticate" in headers
    assert [child.tag for child in root] == ["Code", "Message"]
    assert root.findtext("Message").startswith("Server failed to authenticate the request. Please refer to the information")
    assert blob.token_error("malformed") == ("InvalidAuthenticationInfo", None)


@pytest.mark.parametrize("code,status,message", [
    ("KeyBasedAuthenticationNotPermitted", 403, "Key based authentication is not permitted on this storage account."),
    ("AuthorizationFailure", 403, "This request is not authorized to perform this operation."),
    ("AuthenticationFailed", 403, "Server failed to authenticate the request. Make sure the value of Authorization header is "
                                  "formed correctly including the signature."),
    ("AccountIsDisabled", 403, "The specified account is disabled."),
    ("AccountNotFound", 404, "The specified account does not exist."),
    ("ContainerNotFound", 404, "The specified container does not exist."),
    ("BlobNotFound", 404, "The specified blob does not exist."),
    ("ResourceNotFound", 404, "The specified resource does not exist."),
    ("InvalidUri", 400, "The requested URI does not represent any resource on the server."),
    ("UnsupportedHttpVerb", 405, "The resource doesn't support specified Http Verb."),
    ("MissingRequiredHeader", 400, "An HTTP header that's mandatory for this request is not specified."),
    ("MissingContentLengthHeader", 411, "Content-Length HTTP header is missing."),
    ("InternalError", 500, "Server encountered an internal error. Please try again after some time."),
    ("NotImplemented", 501, "The requested operation is not implemented on the specified resource."),
    ("ServerBusy", 503, "The server is busy."),
])
def test_each_error_has_storages_status_and_text(code, status, message):
    got, headers, body = blob.error(code, request_id=RID, now=NOW)
    root = _parse(body)
    assert got == status
    assert (root.findtext("Code"), root.findtext("Message").split("\n")[0]) == (code, message)
    assert headers["x-ms-error-code"] == code and "WWW-Authenticate" not in headers


def test_a_message_of_mis_own_replaces_storages_text_and_is_escaped():
    _, headers, body = blob.error("NotImplemented", request_id=RID, now=NOW, message="Azurite is not installed <here>.")
    root = _parse(body)
    assert root.findtext("Message").split("\n")[0] == "Azurite is not installed <here>."
    assert b"&lt;here&gt;" in body and headers["x-ms-error-code"] == "NotImplemented"


def test_container_not_found_has_the_length_of_storages():
    _, _, body = blob.error("ContainerNotFound", request_id="959b35c7-c01e-005e-3dbd-5e8992000000",
                            now=datetime(2019, 8, 29, 22, 56, 41, 895386, tzinfo=timezone.utc))
    assert len(body) == 225  # azure-sdk-for-js recordings: Content-Length 225


def test_extra_elements_follow_in_order_and_an_empty_one_closes_itself():
    code, extra = blob.refusal("GET", "/", [], {})
    _, _, body = blob.error(code, request_id=RID, now=NOW, extra=extra)
    assert body.endswith(b"</Message><QueryParameterName>comp</QueryParameterName><QueryParameterValue /><Reason /></Error>")
    root = _parse(body)
    assert [child.tag for child in root] == ["Code", "Message", "QueryParameterName", "QueryParameterValue", "Reason"]
    _, _, body = blob.error("MissingRequiredHeader", request_id=RID, now=NOW, extra={"HeaderName": "x-ms-blob-type"})
    assert _parse(body).findtext("HeaderName") == "x-ms-blob-type"


def test_echoed_text_is_escaped_and_what_xml_cannot_hold_is_replaced():
    _, _, body = blob.error("InvalidQueryParameterValue", request_id=RID, now=NOW,
                            extra={"QueryParameterName": "comp", "QueryParameterValue": "</Error><x>&amp;\x00\udc80"})
    root = _parse(body)
    assert root.findtext("QueryParameterValue") == "</Error><x>&amp;\ufffd\ufffd"
    _, _, body = blob.error("InvalidAuthenticationInfo", tenant_id=TENANT, detail="a < b & c", request_id=RID, now=NOW)
    assert b"<AuthenticationErrorDetail>a &lt; b &amp; c</AuthenticationErrorDetail>" in body


def test_times_are_utc_with_seven_digits():
    later = datetime(2024, 2, 29, 23, 59, 59, 1, tzinfo=timezone(timedelta(hours=-8)))
    _, _, body = blob.error("BlobNotFound", request_id=RID, now=later)
    assert re.search(r"Time:2024-03-01T07:59:59\.0000010Z</Message>", body.decode("utf-8-sig"))
    _, _, body = blob.error("BlobNotFound", request_id=RID, now=datetime(2024, 1, 2, 3, 4, 5))  # naive: already UTC
    assert b"Time:2024-01-02T03:04:05.0000000Z" in body


def test_what_would_break_a_header_or_has_no_text_is_refused():
    with pytest.raises(ValueError):
        blob.error("BlobNotFound", request_id="r\r\nSet-Cookie: a=b", now=NOW)
    with pytest.raises(ValueError):
        blob.error("NoAuthenticationInformation", request_id=RID, now=NOW)  # a challenge names a tenant
    with pytest.raises(ValueError):
        blob.error("NoAuthenticationInformation", tenant_id="t x", request_id=RID, now=NOW)
    with pytest.raises(ValueError):
        blob.error("NotAStorageCode", request_id=RID, now=NOW)
    with pytest.raises(ValueError):
        blob.error("InvalidUri", request_id=RID, now=NOW, extra={"bad name": "x"})


def test_the_module_is_standard_library_only_and_opens_with_a_one_line_docstring():
    source = Path(blob.__file__).read_text(encoding="utf-8")
    tree = ast.parse(source)
    first = tree.body[0]
    assert isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
    assert source.startswith('"""') and "\n" not in first.value.value
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported - {"mi_cli"} <= set(sys.stdlib_module_names) | {"__future__"}
    assert "starlette" not in imported
