"""Blob Storage requests as Storage authorizes them: the operation, its RBAC permission and scope, and Storage's XML errors."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping
from urllib.parse import parse_qsl, unquote_to_bytes, urlsplit

# -- permissions --------------------------------------------------------------------------------------
# From "Authorize with Microsoft Entra ID" (REST API), section "Permissions for calling data operations"
# (learn.microsoft.com/rest/api/storageservices/authorize-with-azure-active-directory, revision of
# 2025-03-27), with the sub-operations of "Actions and attributes for Azure role assignment conditions for
# Azure Blob Storage" (storage-auth-abac-attributes). Permissions under .../containers/blobs/ are data
# actions (a role's dataActions grant them); the others are actions (a role's actions).

SERVICE = "Microsoft.Storage/storageAccounts/blobServices"
CONTAINERS = f"{SERVICE}/containers"
BLOBS = f"{CONTAINERS}/blobs"

SERVICE_READ = f"{SERVICE}/read"
SERVICE_WRITE = f"{SERVICE}/write"
GET_INFO = f"{SERVICE}/getInfo/action"
DELEGATION_KEY = f"{SERVICE}/generateUserDelegationKey/action"
CONTAINER_READ = f"{CONTAINERS}/read"
CONTAINER_WRITE = f"{CONTAINERS}/write"
CONTAINER_DELETE = f"{CONTAINERS}/delete"
GET_ACL = f"{CONTAINERS}/getAcl/action"
SET_ACL = f"{CONTAINERS}/setAcl/action"
READ = f"{BLOBS}/read"
WRITE = f"{BLOBS}/write"
ADD = f"{BLOBS}/add/action"
DELETE = f"{BLOBS}/delete"
DELETE_VERSION = f"{BLOBS}/deleteBlobVersion/action"
PERMANENT_DELETE = f"{BLOBS}/permanentDelete/action"
TAGS_READ = f"{BLOBS}/tags/read"
TAGS_WRITE = f"{BLOBS}/tags/write"
FILTER = f"{BLOBS}/filter/action"
IMMUTABILITY = f"{BLOBS}/immutableStorage/runAsSuperUser/action"

# Sub-operations a role assignment condition can target (storage-auth-abac-attributes). A read other than
# List Blobs has none ("NOT Blob.List"); Blob.Read.WithTagConditions is deprecated and never emitted.
LIST = "Blob.List"
TIER = "Blob.Write.Tier"
WITH_TAG_HEADERS = "Blob.Write.WithTagHeaders"

RESOURCE_ID = "https://storage.azure.com"
ACCOUNT_INFO = "Get Account Information"
PREFLIGHT = "Preflight Blob Request"


@dataclass(frozen=True)
class BlobOperation:
    """One request as Storage reads it.

    `action` is the permission Storage checks (None: the operation is anonymous, as CORS preflight is);
    `data` says whether a role grants it through dataActions (True) or actions (False). `container` and
    `blob` are the percent-decoded names of the path; `blob` may hold "/". `also` are further permissions
    the request needs at the same scope (tags written with x-ms-tags, tags listed with include=tags).
    `alternatives` each grant the operation instead of `action` (Snapshot Blob, Append Block: write or
    add); `if_new` grants it instead of `action` only when the request creates a blob that does not exist
    yet (Put Blob, the copies: write to create or replace, add to create). `source` is the x-ms-copy-source
    URL of a copy, whose blob also needs blobs/read when it is in the same account (copy_source)."""

    name: str
    action: str | None
    data: bool
    container: str | None
    blob: str | None
    suboperation: str | None = None
    also: tuple[str, ...] = ()
    alternatives: tuple[str, ...] = ()
    if_new: str | None = None
    source: str | None = None

    def required(self, *, new_blob: bool = False) -> tuple[tuple[str, ...], ...]:
        """What the caller must hold, as groups that must all be granted, any one permission of a group
        sufficing: ((write, add), (tags/write,)) for a Put Blob with x-ms-tags creating a blob. `new_blob`
        says the destination does not exist yet (only then does `if_new` count)."""
        if self.action is None:
            return ()
        first = (self.action, *self.alternatives, *((self.if_new,) if new_blob and self.if_new else ()))
        return (first, *((p,) for p in self.also))


def is_data(permission: str) -> bool:
    """Whether a role grants `permission` through its dataActions: Storage's blob permissions are data
    actions, those of the service and its containers are actions."""
    return permission.startswith(BLOBS + "/")


# -- the request's path --------------------------------------------------------------------------------

_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")


def _decode(segment: bytes) -> str | None:
    """A percent-encoded piece of the path as text; None when an escape is malformed or the bytes are not
    UTF-8 (where the emulator's decodeURIComponent throws)."""
    if _BAD_ESCAPE.search(segment):
        return None
    try:
        return unquote_to_bytes(segment).decode("utf-8")
    except UnicodeDecodeError:
        return None


_INVALID = object()


def _names(raw_path: str | bytes) -> tuple[str | None, str | None] | object:
    """(container, blob) of a path on <account>.blob.core.windows.net; _INVALID when the path names no
    resource either Storage or the emulator would read the same way.

    The container is the first segment, percent-decoded; the blob is the rest, percent-decoded, so that an
    encoded slash (%2F) in a blob name is a separator as any other, and a backslash becomes a slash (both
    as Storage and Azurite do). An encoded slash inside the container segment is refused: the emulator
    decodes the whole path before splitting it and would act on another container than the one named."""
    if isinstance(raw_path, bytes):
        raw = raw_path
    else:  # text is the raw bytes read as latin-1 (as planes read ASGI's raw_path); beyond it, UTF-8
        try:
            raw = raw_path.encode("latin-1")
        except UnicodeEncodeError:
            raw = raw_path.encode("utf-8", "surrogatepass")
    raw = raw.split(b"?", 1)[0]
    if not raw.startswith(b"/"):
        raw = b"/" + raw
    rest = raw[1:]
    if not rest:
        return None, None
    first, _, tail = rest.partition(b"/")
    container = _decode(first)
    blob = _decode(tail) if tail else None
    if not container or (tail and blob is None) or "/" in container or "\\" in container:
        return _INVALID
    return container, (blob.replace("\\", "/") or None) if blob is not None else None


# -- headers and query ---------------------------------------------------------------------------------

# Headers Node's HTTP server keeps once (the first) when a request repeats them; it joins the others with
# ", ". The emulator sees headers so; they are read the same way here.
_SINGLE = frozenset({"age", "authorization", "content-length", "content-type", "etag", "expires", "from", "host",
                     "if-modified-since", "if-unmodified-since", "last-modified", "location", "max-forwards",
                     "proxy-authorization", "referer", "retry-after", "server", "user-agent"})
# The emulator's query parser (qs) reads at most this many parameters and drops the rest.
MAX_QUERY_PARAMETERS = 1000
# The method overrides the emulator honours in X-HTTP-Method.
_OVERRIDES = frozenset({"GET", "MERGE", "PATCH", "DELETE"})


def _headers(headers: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        if key in out:
            if key not in _SINGLE:
                out[key] = f"{out[key]}, {value}"
        else:
            out[key] = value
    return out


def _query(query: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in query:
        out.setdefault(name, []).append(value)
    return out


def _method(method: str, h: Mapping[str, str]) -> str:
    override = h.get("x-http-method", "").strip()
    return override if override in _OVERRIDES else method


# -- the emulator's reading of a request ----------------------------------------------------------------
# Azurite (src/blob/generated/artifacts/specifications.ts, dispatch.middleware.ts, at commit 9074bea) picks
# the operation whose method and path level match and whose required query parameters and headers are all
# present (constants equal: query values exactly, header values ignoring case), preferring the one with
# the most of them met, then the first in its list. Each entry: operation, method, level (0 the account,
# 1 a container, 2 a blob), required query parameters (constant or None), required headers (constant,
# allowed values, or None).

_C = {"restype": "container"}
_ACCOUNT = {"restype": "account", "comp": "properties"}
_CL = {"comp": "lease", "restype": "container"}
_BATCH = {"content-length": None, "content-type": None}
_AZURITE: tuple[tuple[str, str, int, dict[str, str | None], dict[str, str | tuple[str, ...] | None]], ...] = (
    ("Service_SetProperties", "PUT", 0, {"restype": "service", "comp": "properties"}, {}),
    ("Service_GetProperties", "GET", 0, {"restype": "service", "comp": "properties"}, {}),
    ("Service_GetStatistics", "GET", 0, {"restype": "service", "comp": "stats"}, {}),
    ("Service_ListContainersSegment", "GET", 0, {"comp": "list"}, {}),
    ("Service_GetUserDelegationKey", "POST", 0, {"restype": "service", "comp": "userdelegationkey"}, {}),
    ("Service_GetAccountInfo", "GET", 0, _ACCOUNT, {}),
    ("Service_GetAccountInfoWithHead", "HEAD", 0, _ACCOUNT, {}),
    ("Service_SubmitBatch", "POST", 0, {"comp": "batch"}, _BATCH),
    ("Service_FilterBlobs", "GET", 0, {"comp": "blobs"}, {}),
    ("Container_Create", "PUT", 1, _C, {}),
    ("Container_GetProperties", "GET", 1, _C, {}),
    ("Container_GetPropertiesWithHead", "HEAD", 1, _C, {}),
    ("Container_Delete", "DELETE", 1, _C, {}),
    ("Container_SetMetadata", "PUT", 1, {**_C, "comp": "metadata"}, {}),
    ("Container_GetAccessPolicy", "GET", 1, {**_C, "comp": "acl"}, {}),
    ("Container_SetAccessPolicy", "PUT", 1, {**_C, "comp": "acl"}, {}),
    ("Container_Restore", "PUT", 1, {**_C, "comp": "undelete"}, {}),
    ("Container_SubmitBatch", "POST", 1, {**_C, "comp": "batch"}, _BATCH),
    ("Container_FilterBlobs", "GET", 1, {**_C, "comp": "blobs"}, {}),
    ("Container_AcquireLease", "PUT", 1, _CL, {"x-ms-lease-action": "acquire"}),
    ("Container_ReleaseLease", "PUT", 1, _CL, {"x-ms-lease-id": None, "x-ms-lease-action": "release"}),
    ("Container_RenewLease", "PUT", 1, _CL, {"x-ms-lease-id": None, "x-ms-lease-action": "renew"}),
    ("Container_BreakLease", "PUT", 1, _CL, {"x-ms-lease-action": "break"}),
    ("Container_ChangeLease", "PUT", 1, _CL,
     {"x-ms-lease-id": None, "x-ms-proposed-lease-id": None, "x-ms-lease-action": "change"}),
    ("Container_ListBlobFlatSegment", "GET", 1, {**_C, "comp": "list"}, {}),
    ("Container_ListBlobHierarchySegment", "GET", 1, {"delimiter": None, **_C, "comp": "list"}, {}),
    ("Container_GetAccountInfo", "GET", 1, _ACCOUNT, {}),
    ("Container_GetAccountInfoWithHead", "HEAD", 1, _ACCOUNT, {}),
    ("Blob_Download", "GET", 2, {}, {}),
    ("Blob_GetProperties", "HEAD", 2, {}, {}),
    ("Blob_Delete", "DELETE", 2, {}, {}),
    ("Blob_Undelete", "PUT", 2, {"comp": "undelete"}, {}),
    ("Blob_SetExpiry", "PUT", 2, {"comp": "expiry"}, {"x-ms-expiry-option": None}),
    ("Blob_SetHTTPHeaders", "PUT", 2, {"comp": "properties"}, {}),
    ("Blob_SetImmutabilityPolicy", "PUT", 2, {"comp": "immutabilityPolicies"}, {}),
    ("Blob_DeleteImmutabilityPolicy", "DELETE", 2, {"comp": "immutabilityPolicies"}, {}),
    ("Blob_SetLegalHold", "PUT", 2, {"comp": "legalhold"}, {"x-ms-legal-hold": None}),
    ("Blob_SetMetadata", "PUT", 2, {"comp": "metadata"}, {}),
    ("Blob_AcquireLease", "PUT", 2, {"comp": "lease"}, {"x-ms-lease-action": "acquire"}),
    ("Blob_ReleaseLease", "PUT", 2, {"comp": "lease"}, {"x-ms-lease-id": None, "x-ms-lease-action": "release"}),
    ("Blob_RenewLease", "PUT", 2, {"comp": "lease"}, {"x-ms-lease-id": None, "x-ms-lease-action": "renew"}),
    ("Blob_ChangeLease", "PUT", 2, {"comp": "lease"},
     {"x-ms-lease-id": None, "x-ms-proposed-lease-id": None, "x-ms-lease-action": "change"}),
    ("Blob_BreakLease", "PUT", 2, {"comp": "lease"}, {"x-ms-lease-action": "break"}),
    ("Blob_CreateSnapshot", "PUT", 2, {"comp": "snapshot"}, {}),
    ("Blob_StartCopyFromURL", "PUT", 2, {}, {"x-ms-copy-source": None}),
    ("Blob_CopyFromURL", "PUT", 2, {}, {"x-ms-copy-source": None, "x-ms-requires-sync": "true"}),
    ("Blob_AbortCopyFromURL", "PUT", 2, {"copyid": None, "comp": "copy"}, {"x-ms-copy-action": "abort"}),
    ("Blob_SetTier", "PUT", 2, {"comp": "tier"}, {"x-ms-access-tier": None}),
    ("Blob_GetAccountInfo", "GET", 2, _ACCOUNT, {}),
    ("Blob_GetAccountInfoWithHead", "HEAD", 2, _ACCOUNT, {}),
    ("Blob_Query", "POST", 2, {"comp": "query"}, {}),
    ("Blob_GetTags", "GET", 2, {"comp": "tags"}, {}),
    ("Blob_SetTags", "PUT", 2, {"comp": "tags"}, {}),
    ("PageBlob_Create", "PUT", 2, {}, {"content-length": None, "x-ms-blob-content-length": None, "x-ms-blob-type": "PageBlob"}),
    ("PageBlob_UploadPages", "PUT", 2, {"comp": "page"}, {"content-length": None, "x-ms-page-write": "update"}),
    ("PageBlob_ClearPages", "PUT", 2, {"comp": "page"}, {"content-length": None, "x-ms-page-write": "clear"}),
    ("PageBlob_UploadPagesFromURL", "PUT", 2, {"comp": "page"},
     {"x-ms-copy-source": None, "x-ms-source-range": None, "content-length": None, "x-ms-range": None,
      "x-ms-page-write": "update"}),
    ("PageBlob_GetPageRanges", "GET", 2, {"comp": "pagelist"}, {}),
    ("PageBlob_GetPageRangesDiff", "GET", 2, {"comp": "pagelist"}, {}),
    ("PageBlob_Resize", "PUT", 2, {"comp": "properties"}, {"x-ms-blob-content-length": None}),
    ("PageBlob_UpdateSequenceNumber", "PUT", 2, {"comp": "properties"},
     {"x-ms-sequence-number-action": ("max", "update", "increment")}),
    ("PageBlob_CopyIncremental", "PUT", 2, {"comp": "incrementalcopy"}, {"x-ms-copy-source": None}),
    ("AppendBlob_Create", "PUT", 2, {}, {"content-length": None, "x-ms-blob-type": "AppendBlob"}),
    ("AppendBlob_AppendBlock", "PUT", 2, {"comp": "appendblock"}, {"content-length": None}),
    ("AppendBlob_AppendBlockFromUrl", "PUT", 2, {"comp": "appendblock"}, {"x-ms-copy-source": None, "content-length": None}),
    ("AppendBlob_Seal", "PUT", 2, {"comp": "seal"}, {}),
    ("BlockBlob_Upload", "PUT", 2, {}, {"content-length": None, "x-ms-blob-type": "BlockBlob"}),
    ("BlockBlob_PutBlobFromUrl", "PUT", 2, {},
     {"content-length": None, "x-ms-copy-source": None, "x-ms-blob-type": "BlockBlob"}),
    ("BlockBlob_StageBlock", "PUT", 2, {"blockid": None, "comp": "block"}, {"content-length": None}),
    ("BlockBlob_StageBlockFromURL", "PUT", 2, {"blockid": None, "comp": "block"},
     {"content-length": None, "x-ms-copy-source": None}),
    ("BlockBlob_CommitBlockList", "PUT", 2, {"comp": "blocklist"}, {}),
    ("BlockBlob_GetBlockList", "GET", 2, {"comp": "blocklist"}, {}),
)


def _failures(spec: tuple, q: Mapping[str, list[str]], h: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """What a request lacks for one of the emulator's operations: (kind, name, value) with kind "query"
    or "header" and value "" when the parameter is missing, the value given when it is not the one needed."""
    _, _, _, query, headers = spec
    out = []
    for name, const in query.items():
        values = q.get(name)
        if values is None:
            out.append(("query", name, ""))
        elif const is not None and (len(values) != 1 or values[0] != const):
            out.append(("query", name, ",".join(values) or " "))
    for name, const in headers.items():
        value = h.get(name)
        if value is None:
            out.append(("header", name, ""))
        elif (isinstance(const, tuple) and value not in const) or (isinstance(const, str) and value.lower() != const.lower()):
            out.append(("header", name, value or " "))
    return out


def _azurite(method: str, level: int, q: Mapping[str, list[str]], h: Mapping[str, str]) -> str | None:
    """The operation the emulator runs for this request, or None when it runs none."""
    best, met = None, -1
    for spec in _AZURITE:
        if spec[1] == method and spec[2] == level and not _failures(spec, q, h):
            count = len(spec[3]) + len(spec[4])
            if count > met:
                best, met = spec[0], count
    return best


# -- Storage's reading of a request ----------------------------------------------------------------------
# (level, restype, comp) -> method -> operation, as the Blob service REST API lays them out. What is not
# here is no Blob operation Azurite implements.

_REST: dict[tuple[int, str | None, str | None], dict[str, str]] = {
    (0, "service", "properties"): {"GET": "Get Blob Service Properties", "PUT": "Set Blob Service Properties"},
    (0, "service", "stats"): {"GET": "Get Blob Service Stats"},
    (0, "service", "userdelegationkey"): {"POST": "Get User Delegation Key"},
    (0, "account", "properties"): {"GET": ACCOUNT_INFO, "HEAD": ACCOUNT_INFO},
    (0, None, "list"): {"GET": "List Containers"},
    (0, None, "batch"): {"POST": "Blob Batch"},
    (0, None, "blobs"): {"GET": "Find Blobs by Tags"},
    (1, "container", None): {"PUT": "Create Container", "GET": "Get Container Properties",
                             "HEAD": "Get Container Properties", "DELETE": "Delete Container"},
    (1, "container", "metadata"): {"PUT": "Set Container Metadata", "GET": "Get Container Metadata",
                                   "HEAD": "Get Container Metadata"},
    (1, "container", "acl"): {"PUT": "Set Container ACL", "GET": "Get Container ACL", "HEAD": "Get Container ACL"},
    (1, "container", "undelete"): {"PUT": "Restore Container"},
    (1, "container", "batch"): {"POST": "Blob Batch"},
    (1, "container", "blobs"): {"GET": "Find Blobs by Tags in Container"},
    (1, "container", "lease"): {"PUT": "Lease Container"},
    (1, "container", "list"): {"GET": "List Blobs"},
    (1, "account", "properties"): {"GET": ACCOUNT_INFO, "HEAD": ACCOUNT_INFO},
    (2, None, None): {"GET": "Get Blob", "HEAD": "Get Blob Properties", "DELETE": "Delete Blob", "PUT": "Put Blob"},
    (2, None, "metadata"): {"PUT": "Set Blob Metadata", "GET": "Get Blob Metadata", "HEAD": "Get Blob Metadata"},
    (2, None, "properties"): {"PUT": "Set Blob Properties"},
    (2, None, "undelete"): {"PUT": "Undelete Blob"},
    (2, None, "expiry"): {"PUT": "Set Blob Expiry"},
    (2, None, "immutabilityPolicies"): {"PUT": "Set Blob Immutability Policy", "DELETE": "Delete Blob Immutability Policy"},
    (2, None, "legalhold"): {"PUT": "Set Blob Legal Hold"},
    (2, None, "lease"): {"PUT": "Lease Blob"},
    (2, None, "snapshot"): {"PUT": "Snapshot Blob"},
    (2, None, "copy"): {"PUT": "Abort Copy Blob"},
    (2, None, "tier"): {"PUT": "Set Blob Tier"},
    (2, None, "query"): {"POST": "Query Blob Contents"},
    (2, None, "tags"): {"GET": "Get Blob Tags", "PUT": "Set Blob Tags"},
    (2, None, "page"): {"PUT": "Put Page"},
    (2, None, "pagelist"): {"GET": "Get Page Ranges"},
    (2, None, "incrementalcopy"): {"PUT": "Incremental Copy Blob"},
    (2, None, "appendblock"): {"PUT": "Append Block"},
    (2, None, "seal"): {"PUT": "Append Blob Seal"},
    (2, None, "block"): {"PUT": "Put Block"},
    (2, None, "blocklist"): {"PUT": "Put Block List", "GET": "Get Block List"},
    (2, "account", "properties"): {"GET": ACCOUNT_INFO, "HEAD": ACCOUNT_INFO},
}

# operation -> (permission, alternatives, permission granting it for a new blob, sub-operation).
_PERMISSIONS: dict[str, tuple[str, tuple[str, ...], str | None, str | None]] = {
    "List Containers": (CONTAINER_READ, (), None, None),
    "Set Blob Service Properties": (SERVICE_WRITE, (), None, None),
    "Get Blob Service Properties": (SERVICE_READ, (), None, None),
    "Get Blob Service Stats": (SERVICE_READ, (), None, None),
    ACCOUNT_INFO: (GET_INFO, (), None, None),
    "Get User Delegation Key": (DELEGATION_KEY, (), None, None),
    "Create Container": (CONTAINER_WRITE, (), None, None),
    "Get Container Properties": (CONTAINER_READ, (), None, None),
    "Get Container Metadata": (CONTAINER_READ, (), None, None),
    "Set Container Metadata": (CONTAINER_WRITE, (), None, None),
    "Get Container ACL": (GET_ACL, (), None, None),
    "Set Container ACL": (SET_ACL, (), None, None),
    "Lease Container": (CONTAINER_WRITE, (), None, None),
    "Delete Container": (CONTAINER_DELETE, (), None, None),
    "Restore Container": (CONTAINER_WRITE, (), None, None),
    "List Blobs": (READ, (), None, LIST),
    "Find Blobs by Tags in Container": (FILTER, (), None, None),
    "Find Blobs by Tags": (FILTER, (), None, None),
    "Put Blob": (WRITE, (), ADD, None),
    "Put Blob From URL": (WRITE, (), ADD, None),
    "Get Blob": (READ, (), None, None),
    "Get Blob Properties": (READ, (), None, None),
    "Set Blob Properties": (WRITE, (), None, None),
    "Get Blob Metadata": (READ, (), None, None),
    "Set Blob Metadata": (WRITE, (), None, None),
    "Get Blob Tags": (TAGS_READ, (), None, None),
    "Set Blob Tags": (TAGS_WRITE, (), None, None),
    "Lease Blob": (WRITE, (), None, None),
    "Snapshot Blob": (WRITE, (ADD,), None, None),
    "Copy Blob": (WRITE, (), ADD, None),
    "Copy Blob From URL": (WRITE, (), ADD, None),
    "Abort Copy Blob": (WRITE, (), None, None),
    "Delete Blob": (DELETE, (), None, None),
    # The table gives a container permission, an action, for Undelete Blob: checked at the container.
    "Undelete Blob": (CONTAINER_WRITE, (), None, None),
    "Set Blob Tier": (WRITE, (), None, TIER),
    # The parent request of a batch; each sub-request is an operation of its own, authorized as such.
    "Blob Batch": (CONTAINER_WRITE, (), None, None),
    "Set Blob Immutability Policy": (IMMUTABILITY, (), None, None),
    "Delete Blob Immutability Policy": (IMMUTABILITY, (), None, None),
    "Set Blob Legal Hold": (CONTAINER_WRITE, (), None, None),
    "Put Block": (WRITE, (), None, None),
    "Put Block From URL": (WRITE, (), None, None),
    "Put Block List": (WRITE, (), None, None),
    "Get Block List": (READ, (), None, None),
    "Query Blob Contents": (READ, (), None, None),
    "Put Page": (WRITE, (), None, None),
    "Put Page From URL": (WRITE, (), None, None),
    "Get Page Ranges": (READ, (), None, None),
    "Incremental Copy Blob": (WRITE, (), ADD, None),
    "Append Block": (WRITE, (ADD,), None, None),
    "Append Block From URL": (WRITE, (ADD,), None, None),
    "Set Blob Expiry": (WRITE, (), None, None),
    # Not in the table; Append Blob Seal writes the blob's state as Set Blob Properties does.
    "Append Blob Seal": (WRITE, (), None, None),
}

# operation -> the emulator's operations that carry it out. A request the emulator would read as another
# operation than Storage does is refused, since the permission checked would not be that of what runs.
_RUNS_AS: dict[str, frozenset[str]] = {name: frozenset(ops) for name, ops in {
    "Get Blob Service Properties": ["Service_GetProperties"],
    "Set Blob Service Properties": ["Service_SetProperties"],
    "Get Blob Service Stats": ["Service_GetStatistics"],
    "List Containers": ["Service_ListContainersSegment"],
    "Get User Delegation Key": ["Service_GetUserDelegationKey"],
    ACCOUNT_INFO: ["Service_GetAccountInfo", "Service_GetAccountInfoWithHead", "Container_GetAccountInfo",
                   "Container_GetAccountInfoWithHead", "Blob_GetAccountInfo", "Blob_GetAccountInfoWithHead"],
    "Blob Batch": ["Service_SubmitBatch", "Container_SubmitBatch"],
    "Find Blobs by Tags": ["Service_FilterBlobs"],
    "Find Blobs by Tags in Container": ["Container_FilterBlobs"],
    "Create Container": ["Container_Create"],
    "Get Container Properties": ["Container_GetProperties", "Container_GetPropertiesWithHead"],
    "Get Container Metadata": ["Container_GetProperties", "Container_GetPropertiesWithHead"],
    "Delete Container": ["Container_Delete"],
    "Set Container Metadata": ["Container_SetMetadata"],
    # HEAD ?comp=acl: the emulator answers with the container's properties (its public access among them)
    "Get Container ACL": ["Container_GetAccessPolicy", "Container_GetPropertiesWithHead"],
    "Set Container ACL": ["Container_SetAccessPolicy"],
    "Restore Container": ["Container_Restore"],
    "Lease Container": ["Container_AcquireLease", "Container_ReleaseLease", "Container_RenewLease",
                        "Container_BreakLease", "Container_ChangeLease"],
    "List Blobs": ["Container_ListBlobFlatSegment", "Container_ListBlobHierarchySegment"],
    "Get Blob": ["Blob_Download"],
    "Get Blob Properties": ["Blob_GetProperties"],
    "Get Blob Metadata": ["Blob_Download", "Blob_GetProperties"],
    "Delete Blob": ["Blob_Delete"],
    "Undelete Blob": ["Blob_Undelete"],
    "Set Blob Expiry": ["Blob_SetExpiry"],
    "Set Blob Properties": ["Blob_SetHTTPHeaders", "PageBlob_Resize", "PageBlob_UpdateSequenceNumber"],
    "Set Blob Immutability Policy": ["Blob_SetImmutabilityPolicy"],
    "Delete Blob Immutability Policy": ["Blob_DeleteImmutabilityPolicy"],
    "Set Blob Legal Hold": ["Blob_SetLegalHold"],
    "Set Blob Metadata": ["Blob_SetMetadata"],
    "Lease Blob": ["Blob_AcquireLease", "Blob_ReleaseLease", "Blob_RenewLease", "Blob_ChangeLease", "Blob_BreakLease"],
    "Snapshot Blob": ["Blob_CreateSnapshot"],
    "Copy Blob": ["Blob_StartCopyFromURL"],
    "Copy Blob From URL": ["Blob_CopyFromURL"],
    "Abort Copy Blob": ["Blob_AbortCopyFromURL"],
    "Set Blob Tier": ["Blob_SetTier"],
    "Query Blob Contents": ["Blob_Query"],
    "Get Blob Tags": ["Blob_GetTags"],
    "Set Blob Tags": ["Blob_SetTags"],
    "Put Blob": ["PageBlob_Create", "AppendBlob_Create", "BlockBlob_Upload"],
    "Put Blob From URL": ["BlockBlob_PutBlobFromUrl"],
    "Put Page": ["PageBlob_UploadPages", "PageBlob_ClearPages"],
    "Put Page From URL": ["PageBlob_UploadPagesFromURL"],
    "Get Page Ranges": ["PageBlob_GetPageRanges", "PageBlob_GetPageRangesDiff"],
    "Incremental Copy Blob": ["PageBlob_CopyIncremental"],
    "Append Block": ["AppendBlob_AppendBlock"],
    "Append Block From URL": ["AppendBlob_AppendBlockFromUrl"],
    "Append Blob Seal": ["AppendBlob_Seal"],
    "Put Block": ["BlockBlob_StageBlock"],
    "Put Block From URL": ["BlockBlob_StageBlockFromURL"],
    "Put Block List": ["BlockBlob_CommitBlockList"],
    "Get Block List": ["BlockBlob_GetBlockList"],
}.items()}

# Operations that write the x-ms-tags header's tags on the blob they create (Put Blob, Put Block List, Copy
# Blob and Copy Blob From URL in the sub-operation's description; Put Blob From URL takes the header too).
_TAGGING = frozenset({"Put Blob", "Put Blob From URL", "Put Block List", "Copy Blob", "Copy Blob From URL"})
# Operations that copy from x-ms-copy-source, and those that can copy its tags (x-ms-copy-source-tag-option).
_COPYING = frozenset({"Copy Blob", "Copy Blob From URL", "Put Blob From URL", "Put Block From URL",
                      "Append Block From URL", "Put Page From URL", "Incremental Copy Blob"})
_TAG_COPYING = frozenset({"Copy Blob From URL", "Put Blob From URL"})
_FROM_URL = {"Put Page": "Put Page From URL", "Append Block": "Append Block From URL", "Put Block": "Put Block From URL"}


@dataclass(frozen=True)
class _Reading:
    method: str
    level: int
    container: str | None
    blob: str | None
    q: dict[str, list[str]]
    h: dict[str, str]
    restype: str | None
    comp: str | None


def _read(method: str, raw_path: str | bytes, query: Iterable[tuple[str, str]],
          headers: Mapping[str, str]) -> _Reading | tuple[str, dict[str, str]]:
    """The request's parts, or the error Storage answers when they name no resource."""
    names = _names(raw_path)
    pairs = list(query)
    if names is _INVALID or len(pairs) > MAX_QUERY_PARAMETERS:
        return "InvalidUri", {}
    container, blob = names  # type: ignore[misc]
    q, h = _query(pairs), _headers(headers)
    for selector in ("restype", "comp"):
        if len(q.get(selector, ())) > 1:
            return "InvalidQueryParameterValue", _bad_query(selector, ",".join(q[selector]))
    level = 0 if container is None else 1 if blob is None else 2
    return _Reading(_method(method, h), level, container, blob, q, h,
                    (q.get("restype") or [None])[0], (q.get("comp") or [None])[0])


def _bad_query(name: str, value: str) -> dict[str, str]:
    return {"QueryParameterName": name, "QueryParameterValue": value, "Reason": ""}


def _rest_name(r: _Reading) -> str | None:
    name = _REST.get((r.level, r.restype, r.comp), {}).get(r.method)
    if name is None or r.level != 2:
        return name
    source = r.h.get("x-ms-copy-source")
    if name == "Put Blob":
        if source is not None:
            if r.h.get("x-ms-requires-sync", "").strip().lower() == "true":
                return "Copy Blob From URL"
            return "Put Blob From URL" if "x-ms-blob-type" in r.h else "Copy Blob"
        return name if "x-ms-blob-type" in r.h else None
    if source is not None and name in _FROM_URL:
        return _FROM_URL[name]
    return name


def _build(name: str, r: _Reading) -> BlobOperation:
    action, alternatives, if_new, sub = _PERMISSIONS[name]
    also: list[str] = []
    if name in _TAGGING and "x-ms-tags" in r.h:
        also.append(TAGS_WRITE)
        sub = WITH_TAG_HEADERS
    copies_tags = r.h.get("x-ms-copy-source-tag-option", "").strip().lower() == "copy"
    if name in _TAG_COPYING and copies_tags and TAGS_WRITE not in also:
        also.append(TAGS_WRITE)
    included = {part.strip().lower() for value in r.q.get("include", ()) for part in value.split(",")}
    if name == "List Blobs" and "tags" in included:
        also.append(TAGS_READ)
    if name == "Delete Blob":
        if any(v.strip().lower() == "permanent" for v in r.q.get("deletetype", ())):
            action = PERMANENT_DELETE
        elif r.q.get("versionid"):
            action = DELETE_VERSION
    container = r.container if r.level >= 1 else None
    return BlobOperation(name, action, is_data(action), container, r.blob, sub, tuple(also), alternatives, if_new,
                         r.h.get("x-ms-copy-source") if name in _COPYING else None)


def operation(method: str, raw_path: str | bytes, query: list[tuple[str, str]],
              headers: Mapping[str, str]) -> BlobOperation | None:
    """The Blob operation a request on <account>.blob.core.windows.net is, with the permission Storage
    checks for it; None when it is none (refusal() says what Storage answers then).

    `raw_path` is the request target's path as sent, still percent-encoded, without the account (bytes as
    ASGI's raw_path holds them, or those bytes read as latin-1); `query` its decoded parameters in order,
    blank values kept;
    `headers` its headers, names in any case. A request that the emulator behind the plane would carry out
    as another operation than Storage reads it as (a missing required header, a repeated comp) is None too:
    authorizing one operation and running another would grant what was not checked."""
    r = _read(method, raw_path, query, headers)
    if not isinstance(r, _Reading):
        return None
    if r.method == "OPTIONS":
        return BlobOperation(PREFLIGHT, None, False, r.container, r.blob)
    name = _rest_name(r)
    if name is None or _azurite(r.method, r.level, r.q, r.h) not in _RUNS_AS[name]:
        return None
    return _build(name, r)


def refusal(method: str, raw_path: str | bytes, query: list[tuple[str, str]],
            headers: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """The error code Storage answers a request that operation() reads as none, with the elements its
    body adds (error(..., extra=)): a path naming no resource is InvalidUri, an unknown comp or restype
    InvalidQueryParameterValue (the account's root without comp included), a method the resource does not
    take UnsupportedHttpVerb, and a required header or query parameter missing or malformed its
    MissingRequiredHeader, MissingContentLengthHeader, MissingRequiredQueryParameter or InvalidHeaderValue."""
    r = _read(method, raw_path, query, headers)
    if not isinstance(r, _Reading):
        return r
    methods = _REST.get((r.level, r.restype, r.comp))
    if methods is None:
        if r.level == 1 and r.restype is None:
            return "InvalidUri", {}
        if r.restype is not None and not any(k[0] == r.level and k[1] == r.restype for k in _REST):
            return "InvalidQueryParameterValue", _bad_query("restype", r.restype)
        return "InvalidQueryParameterValue", _bad_query("comp", r.comp or "")
    if r.method not in methods:
        return "UnsupportedHttpVerb", {}
    name = _rest_name(r)
    if name is None:
        return "MissingRequiredHeader", {"HeaderName": "x-ms-blob-type"}
    candidates = [spec for spec in _AZURITE if spec[0] in _RUNS_AS[name] and spec[1] == r.method and spec[2] == r.level]
    failures = min((_failures(spec, r.q, r.h) for spec in candidates),
                   key=lambda f: (sum(1 for x in f if x[2]), len(f)), default=[])
    for kind, param, value in failures:
        if kind == "query":
            return ("MissingRequiredQueryParameter", {"QueryParameterName": param}) if not value else \
                ("InvalidQueryParameterValue", _bad_query(param, value.strip()))
        if param == "content-length" and not value:
            return "MissingContentLengthHeader", {"HeaderName": "Content-Length"}
        return ("MissingRequiredHeader", {"HeaderName": param}) if not value else \
            ("InvalidHeaderValue", {"HeaderName": param, "HeaderValue": value.strip()})
    # The emulator prefers an operation needing more of the request (a Copy Blob sent with the headers of
    # Put Blob From URL): Storage would see an invalid combination of headers.
    return "InvalidHeaderValue", {}


# -- scope -----------------------------------------------------------------------------------------------

def scope(account_id: str, op: BlobOperation) -> str:
    """The RBAC scope Storage checks `op` at: <account>/blobServices/default for the service's own
    operations and those over every container (List Containers, Find Blobs by Tags, Get Account
    Information), .../containers/<name> for a container's (and for a container permission a blob
    operation needs, as Undelete Blob's), .../containers/<name>/blobs/<name> for a blob's, the blob's
    name as it is, slashes included (dir/a.txt: .../blobs/dir/a.txt)."""
    base = f"{account_id.rstrip('/')}/blobServices/default"
    permission = op.action or ""
    if op.container is None or not permission.startswith(CONTAINERS + "/"):
        return base
    container = f"{base}/containers/{op.container}"
    if op.blob is None or not is_data(permission):
        return container
    return f"{container}/blobs/{op.blob}"


def copy_source(op: BlobOperation) -> tuple[str, BlobOperation] | None:
    """(host, read) of a copy's source: the source's host name, lower case, and the blobs/read its blob
    needs. Storage checks that read against the caller's token when the source is a blob of the same
    account (the host is the account's own) and the URL carries no SAS (is_shared_key_or_sas on its query);
    a source elsewhere is read anonymously or with its SAS. None when `op` copies nothing or its source is
    not a blob URL."""
    if not op.source:
        return None
    try:
        url = urlsplit(op.source.strip())
    except ValueError:
        return None
    if url.scheme.lower() not in ("http", "https") or not url.hostname:
        return None
    names = _names(url.path)
    if names is _INVALID or names[1] is None:  # type: ignore[index]
        return None
    container, blob = names  # type: ignore[misc]
    return url.hostname.lower(), BlobOperation(f"{op.name} (source)", READ, True, container, blob)


# The attribute a role assignment's condition reads List Blobs' prefix from (storage-auth-abac-attributes.md).
PREFIX = f"@Request[{BLOBS}:prefix]"


def request_context(op: BlobOperation, query: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """What a role assignment's condition may ask about this request beyond its scope: the sub-operation
    (Blob.List for List Blobs) and List Blobs' prefix."""
    context: dict[str, Any] = {"subOperation": op.suboperation}
    prefix = next((v for k, v in query if k == "prefix"), None)
    if prefix is not None:
        context[PREFIX] = prefix
    return context


def required(op: BlobOperation, account_name: str, account_id: str, at: str, context: dict[str, Any], *,
             new_blob: bool) -> list[tuple[tuple[str, ...], str, dict[str, Any]]]:
    """Each group of permissions the request needs (any one of a group suffices) with the scope and the
    condition context it is checked with: the operation's own at `at`, and a copy's read of its source when
    that is a blob of this account reached without a SAS."""
    groups = [(group, at, context) for group in op.required(new_blob=new_blob)]
    source = copy_source(op)
    if source is not None:
        host, read = source
        source_query = parse_qsl(urlsplit(op.source or "").query, keep_blank_values=True)
        if host == f"{account_name.casefold()}.blob.core.windows.net" and is_shared_key_or_sas({}, source_query) is None:
            groups.append(((read.action,), scope(account_id, read), request_context(read, [])))
    return groups


def absent(op: BlobOperation, query: Iterable[tuple[str, str]]) -> tuple[str, dict[str, str] | None] | None:
    """Storage's error (code, extra elements) for an authorised request for what this store never holds,
    which Azurite would carry out on the base blob instead (it ignores both parameters): a blob version
    (versionid; the store keeps no versions, so none exists: 404 BlobNotFound) and a permanent delete
    (deletetype=permanent; the account has no soft-deleted snapshots or versions and permanent delete is
    not enabled: 400). Run there, a Delete Blob checked as deleteBlobVersion/action or
    permanentDelete/action would delete the current blob, which neither permission grants."""
    if op.blob is None:
        return None
    names = {name.lower(): value for name, value in query}
    if "versionid" in names:
        return "BlobNotFound", None
    if op.name == "Delete Blob" and names.get("deletetype", "").strip().lower() == "permanent":
        return "InvalidQueryParameterValue", {"QueryParameterName": "deletetype", "QueryParameterValue": names["deletetype"],
                                              "Reason": "Permanent delete is not enabled on this account."}
    return None


# -- how a request authenticates -----------------------------------------------------------------------

# What is_shared_key_or_sas() answers for the credentials an account's allowSharedKeyAccess=false refuses
# (403 KeyBasedAuthenticationNotPermitted): the account key, directly or through a SAS it signed. A user
# delegation SAS is signed with a key a Microsoft Entra principal obtained (Get User Delegation Key), and
# Storage permits it on such an account ("Prevent Shared Key authorization": "Request is permitted").
KEY_BASED = frozenset({"SharedKey", "SharedKeyLite", "AccountSAS", "ServiceSAS"})


def is_shared_key_or_sas(headers: Mapping[str, str], query: list[tuple[str, str]]) -> str | None:
    """How a request authenticates when it is by key or signature: "SharedKey" or "SharedKeyLite" (its
    Authorization header), "AccountSAS" or "ServiceSAS" (a sig in its query, signed with the account key),
    "UserDelegationSAS" (a sig with skoid/sktid). None when it is neither: a bearer token (an Authorization
    header of another scheme), the plane's to verify, or no credentials at all (anonymous: no Authorization
    header, no sig), which Storage answers 401 NoAuthenticationInformation unless the container is public.
    Only the kinds in KEY_BASED are refused when the account disallows Shared Key access; the emulator
    checks every signature."""
    auth = next((v for k, v in headers.items() if k.lower() == "authorization"), None)
    if auth is not None and auth.strip():
        scheme = auth.strip().split(None, 1)[0].lower()
        return {"sharedkey": "SharedKey", "sharedkeylite": "SharedKeyLite"}.get(scheme)
    names = {name.lower() for name, _ in query}
    if "sig" in names:
        if "skoid" in names or "sktid" in names:
            return "UserDelegationSAS"
        return "AccountSAS" if "ss" in names or "srt" in names else "ServiceSAS"
    return None


# -- Storage's error responses ---------------------------------------------------------------------------
# code -> (status, message), the text Storage puts first in <Message> and as the reason phrase. Seen in
# Storage's own responses (Azure SDK test recordings, responses quoted in SDK and tool issues), with the
# bodies' form: a byte order mark, no whitespace between elements, empty elements as <Name />. The
# account codes (AccountIsDisabled, AccountNotFound), MissingContentLengthHeader and the server's own
# failures (InternalError, OperationTimedOut, NotImplemented, ServerBusy) are from Storage's lists of error
# codes only; an unknown account has no host name in Azure, so Azure itself never answers it.

AUTHENTICATE = "Server failed to authenticate the request. Please refer to the information in the www-authenticate header."
ERRORS: dict[str, tuple[int, str]] = {
    "NoAuthenticationInformation": (401, AUTHENTICATE),
    "InvalidAuthenticationInfo": (401, AUTHENTICATE),
    "AuthenticationFailed": (403, "Server failed to authenticate the request. Make sure the value of Authorization header "
                                  "is formed correctly including the signature."),
    "AuthorizationPermissionMismatch": (403, "This request is not authorized to perform this operation using this permission."),
    "AuthorizationFailure": (403, "This request is not authorized to perform this operation."),
    "KeyBasedAuthenticationNotPermitted": (403, "Key based authentication is not permitted on this storage account."),
    "AccountIsDisabled": (403, "The specified account is disabled."),
    "AccountNotFound": (404, "The specified account does not exist."),
    "ContainerNotFound": (404, "The specified container does not exist."),
    "BlobNotFound": (404, "The specified blob does not exist."),
    "ResourceNotFound": (404, "The specified resource does not exist."),
    "InvalidUri": (400, "The requested URI does not represent any resource on the server."),
    "InvalidQueryParameterValue": (400, "Value for one of the query parameters specified in the request URI is invalid."),
    "MissingRequiredQueryParameter": (400, "A query parameter that's mandatory for this request is not specified."),
    "MissingRequiredHeader": (400, "An HTTP header that's mandatory for this request is not specified."),
    "InvalidHeaderValue": (400, "The value for one of the HTTP headers is not in the correct format."),
    "MissingContentLengthHeader": (411, "Content-Length HTTP header is missing."),
    "UnsupportedHttpVerb": (405, "The resource doesn't support specified Http Verb."),
    "InternalError": (500, "Server encountered an internal error. Please try again after some time."),
    "OperationTimedOut": (500, "Operation could not be completed within the specified time."),
    "NotImplemented": (501, "The requested operation is not implemented on the specified resource."),
    "ServerBusy": (503, "The server is busy."),
}

# <AuthenticationErrorDetail> of InvalidAuthenticationInfo, by the check a bearer token failed (the kinds of
# tokens.verify); None: no detail. Audience, issuer and expiry are Storage's texts; the others keep their form.
TOKEN_DETAILS: dict[str, str | None] = {
    "audience": "Audience validation failed. Audience did not match.",
    "issuer": "Issuer validation failed. Issuer did not match.",
    "expired": "Lifetime validation failed. The token is expired.",
    "not-yet-valid": "Lifetime validation failed. The token is not yet valid.",
    "signature": "Signature validation failed. Signature is invalid.",
    "key": "Signature validation failed. Signature is invalid.",
    "malformed": None,
}


def token_error(kind: str) -> tuple[str, str | None]:
    """(code, detail) Storage answers a bearer token that failed `kind`: no token is
    NoAuthenticationInformation, any failed check InvalidAuthenticationInfo with its detail; both 401
    with the bearer challenge."""
    if kind == "missing":
        return "NoAuthenticationInformation", None
    return "InvalidAuthenticationInfo", TOKEN_DETAILS.get(kind)


_NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_ELEMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_HEADER_VALUE = re.compile(r"[\x21-\x7e]+")


def _xml(text: str) -> str:
    text = _NOT_XML.sub("\ufffd", text)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _element(name: str, value: str) -> str:
    if not _ELEMENT.fullmatch(name):
        raise ValueError(f"'{name}' is not an XML element name.")
    return f"<{name}>{_xml(value)}</{name}>" if value else f"<{name} />"


def error(code: str, *, tenant_id: str | None = None, detail: str | None = None, request_id: str, now: datetime,
          extra: Mapping[str, str] | None = None, message: str | None = None) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of Storage's answer `code`: its XML body (a UTF-8 byte order mark, then
    <Error><Code/><Message>text\\nRequestId:...\\nTime:...</Message>, <AuthenticationErrorDetail> when
    `detail` is given, then `extra`'s elements in order, an empty one as <Name />), x-ms-error-code,
    x-ms-request-id, Content-Type application/xml, and for a 401 the bearer challenge naming the tenant's
    authority and Storage's resource id. `message` replaces Storage's text where mi has more to say (why
    the local cloud cannot serve a request)."""
    if code not in ERRORS:
        raise ValueError(f"'{code}' is not a Storage error this module answers.")
    status, text = ERRORS[code]
    message = text if message is None else message
    if not _HEADER_VALUE.fullmatch(request_id):
        raise ValueError("A request id is printable ASCII without spaces.")
    moment = now.astimezone(timezone.utc) if now.tzinfo else now
    stamp = f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond:06d}0Z"  # Storage's seven fractional digits
    parts = [f"<Code>{_xml(code)}</Code><Message>{_xml(message)}\nRequestId:{_xml(request_id)}\nTime:{stamp}</Message>"]
    if detail is not None:
        parts.append(_element("AuthenticationErrorDetail", detail))
    parts.extend(_element(name, value) for name, value in (extra or {}).items())
    body = '\ufeff<?xml version="1.0" encoding="utf-8"?><Error>' + "".join(parts) + "</Error>"
    headers = {"Content-Type": "application/xml", "x-ms-error-code": code, "x-ms-request-id": request_id}
    if status == 401:
        if not tenant_id or not _HEADER_VALUE.fullmatch(tenant_id):
            raise ValueError("A 401 names the tenant whose authority issues Storage's tokens.")
        headers["WWW-Authenticate"] = (f"Bearer authorization_uri=https://login.microsoftonline.com/{tenant_id}/oauth2/authorize "
                                       f"resource_id={RESOURCE_ID}")
    return status, headers, body.encode("utf-8")
