"""Blob Storage's data plane (https://ACCOUNT.blob.core.windows.net): each request authorised as Storage does it
(services/access for bearer tokens, the account's setting for shared keys), then streamed to Azurite unchanged,
or a small blob read answered from what Azurite answered before (server/blobcache)."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from mi_cli import changes
from mi_cli.errors import InvalidTokenError
from mi_cli.server import blobcache, reads
from mi_cli.server.azurite import AzuriteError
from mi_cli.server.state import ServerState
from mi_cli.services import Ctx, access, blob, localcloud, storage, tenancy
from mi_cli.services.tokens import clip

STREAMING = True  # app.py hands this plane the request unread: bodies flow through, never held whole
# What Storage accepts as a bearer token's audience: its resource, its application id, the account's own URL.
STORAGE_AUDIENCES = ("https://storage.azure.com/", "e406a681-f3d4-42a8-90b6-c2b029497af1")
# Headers of one hop only (RFC 9110 7.6.1), never relayed in either direction.
HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"proxy-connection", b"te",
              b"trailer", b"transfer-encoding", b"upgrade"}
# Headers of Azurite's answers that the plane's server writes itself (one Date, one Server).
RELAYED_AWAY = HOP_BY_HOP | {b"date", b"server"}
# The client to Azurite keeps idle connections for less than Azurite does (KEEP_ALIVE), so it never sends on
# one Azurite is closing.
IDLE_SECONDS = 30


@dataclass
class Verdict:
    """What the authorisation decided: a refusal to send as it is, or Azurite's accounts to forward to;
    `probe` asks whether the blob exists first (a role that may only add blobs may create, not replace)."""

    refusal: Response | None = None
    accounts: str = ""
    probe: bool = False
    read_at: float = 0.0  # when the store was read (time.monotonic())
    owners: dict[str, str] | None = None  # each storage account's name -> its creation time
    # For the memory of small reads (server/blobcache): the operation forwarded, its storage account's name,
    # the verified bearer token's (issuer, audience) when one authorised it, and a token of the store's
    # version the decision was read under (None: not known).
    op: blob.BlobOperation | None = None
    account: str = ""
    bearer: tuple[str, str] | None = None
    version: object = None


def _error(code: str, ctx: Ctx | None = None, *, detail: str | None = None, message: str | None = None,
           tenant_id: str | None = None, extra: dict[str, str] | None = None) -> Response:
    status, headers, body = blob.error(code, tenant_id=tenant_id, detail=detail, message=message, extra=extra,
                                       request_id=str(uuid.uuid4()),
                                       now=ctx.now() if ctx is not None else datetime.now(timezone.utc))
    return Response(body, status_code=status, headers=headers)


def unavailable(message: str, status: int, headers: dict[str, str]) -> Response:
    """A busy store (503, retry) or a failure, in Storage's XML error shape."""
    response = _error("ServerBusy" if status == 503 else "InternalError", message=message)
    response.headers.update(headers)
    return response


def _decide(ctx: Ctx, request: Request, raw_path: str, query: list[tuple[str, str]],
            new_blob: bool | None = None) -> Verdict:
    """Authorise one request and log the decision, from what the server read before while the store is unchanged
    (server/reads), or in a transaction. `new_blob` is what a probe found (None: not probed)."""
    read_at = getattr(ctx, "read_at", None) or time.monotonic()
    account = changes.remember(ctx, ("host", (request.url.hostname or "").casefold()),
                               lambda: localcloud.resource_for_host(ctx, request.url.hostname or ""))
    if account is None:  # the proxy refuses unknown accounts; this request came another way
        return Verdict(_error("AccountNotFound", ctx))
    op = blob.operation(request.method, raw_path, query, request.headers)
    if op is None:
        code, extra = blob.refusal(request.method, raw_path, query, request.headers)
        return Verdict(_error(code, ctx, extra=extra))
    if op.name == "Blob Batch":  # its sub-requests are operations of their own, each needing its check
        return Verdict(_error("NotImplemented", ctx, message="Blob Batch is not served: send its operations one "
                              "by one (each is authorised on its own)."))
    forwarded = {"op": op, "account": account.name}
    if op.action is None:  # CORS preflight: anonymous, answered by Azurite from the account's CORS rules
        return _forward(ctx, read_at, **forwarded)
    scope = blob.scope(account.arm_id, op)
    tenant_id = tenancy.default_tenant(ctx).id
    scheme = blob.is_shared_key_or_sas(request.headers, query)

    def log(status: str, caller: str, detail: str, action: str = op.action, where: str = scope) -> None:
        ctx.log(action, where, status=status, caller=caller, detail=f"{op.name}: {detail}")

    if scheme is not None:
        if scheme in blob.KEY_BASED and not changes.remember(ctx, ("shared-key", account.pk),
                                                             lambda: storage.shared_key_allowed(ctx, account)):
            log("Failed", f"({scheme})", "403 the account does not allow Shared Key authorization")
            return Verdict(_error("KeyBasedAuthenticationNotPermitted", ctx))
        log("Succeeded", f"({scheme})", f"{scheme}: the signature is checked by Azurite with the account's key")
        return _forward(ctx, read_at, _absent(ctx, op, query), **forwarded)
    authorization = request.headers.get("authorization")
    audiences = (*STORAGE_AUDIENCES, f"https://{account.name.casefold()}.blob.core.windows.net/")
    context = blob.request_context(op, query)
    try:
        claims = access.authenticate(ctx, authorization, audiences)
    except InvalidTokenError as exc:
        log("Failed", "(no valid token)", f"401 {exc.message}")
        code, detail = blob.token_error(exc.kind)
        return Verdict(_error(code, ctx, tenant_id=tenant_id, detail=detail))
    def needed(new: bool) -> list:
        return blob.required(op, account.name, account.arm_id, scope, context, new_blob=new)

    granted, denied = access.check_groups(ctx, claims["oid"], needed(bool(new_blob)), data=blob.is_data)
    if denied is not None and new_blob is None and op.if_new and access.check_groups(
            ctx, claims["oid"], needed(True), data=blob.is_data)[1] is None:
        return _forward(ctx, read_at, probe=True, **forwarded)  # allowed only if the blob is new
    if denied is not None:
        log("Failed", claims["oid"], f"403 {denied.reason()}", denied.action, denied.scope)
        return Verdict(_error("AuthorizationPermissionMismatch", ctx))
    log("Succeeded", claims["oid"], " ".join(d.reason() for d in granted))
    return _forward(ctx, read_at, _absent(ctx, op, query), bearer=(str(claims.get("iss")), str(claims.get("aud"))),
                    **forwarded)


def _forward(ctx: Ctx, read_at: float, refusal: Response | None = None, *, probe: bool = False,
             op: blob.BlobOperation | None = None, account: str = "", bearer: tuple[str, str] | None = None) -> Verdict:
    """A request to relay to Azurite (or a refusal decided after authorisation), with the storage accounts
    Azurite must know as the store has them now (and when they were read)."""
    accounts, owners, read_at = changes.remember(ctx, ("azurite-accounts",), lambda: (*storage.azurite(ctx), read_at))
    # the same object for every request while the store is unchanged; none within a plain transaction
    version = changes.remember(ctx, ("blob-cache",), object) if changes.shared(ctx) is not None else None
    return Verdict(refusal, accounts=accounts, probe=probe, read_at=read_at, owners=owners, op=op, account=account,
                   bearer=bearer, version=version)


def _absent(ctx: Ctx, op: blob.BlobOperation, query: list[tuple[str, str]]) -> Response | None:
    """Storage's answer to an authorised request for what this store never holds (blob.absent)."""
    found = blob.absent(op, query)
    return None if found is None else _error(found[0], ctx, extra=found[1])


async def handle(request: Request, state: ServerState) -> Response:
    """One Blob request: authorised, then relayed to Azurite with its body streamed both ways, or a small blob
    read answered from memory (server/blobcache)."""
    raw = (request.scope.get("raw_path") or request.url.path.encode()).decode("latin-1")
    query_string = request.scope.get("query_string", b"").decode("latin-1")
    query = parse_qsl(query_string, keep_blank_values=True)
    verdict = await reads.answer(state, lambda ctx: _decide(ctx, request, raw, query))
    if verdict.refusal is not None:
        return verdict.refusal
    if state.azurite is None:
        return _error("NotImplemented", message=f"Blob Storage is not served by this mi serve: {state.azurite_missing}; "
                      "then restart mi serve.")
    target = raw + (f"?{query_string}" if query_string else "")
    cache, key = _cache(state), None
    if verdict.bearer is not None and verdict.op.name in blobcache.KEPT and request.method in blobcache.METHODS \
            and cache.follow(verdict.version, state.azurite.generation):
        key = blobcache.key(verdict.account, verdict.bearer, request.method, target, request.headers.raw, HOP_BY_HOP)
        kept = cache.get(key) if key is not None else None
        if kept is not None:
            return kept.answer(blobcache.client_request_id(request.headers.raw))
    try:
        origin = await state.azurite.ensure(verdict.accounts, read_at=verdict.read_at, owners=verdict.owners,
                                            client=_client(state))
    except AzuriteError as exc:
        return _error("ServerBusy", message=str(exc))
    if verdict.probe:
        import httpx

        try:
            exists = await _exists(request, state, origin, raw)
        except httpx.TransportError as exc:
            return _busy(exc)
        verdict = await reads.answer(state, lambda ctx: _decide(ctx, request, raw, query, not exists))
        if verdict.refusal is not None:
            return verdict.refusal
    if verdict.op is not None and verdict.op.name in blobcache.READS:
        keep = None
        ticket = cache.ticket(verdict.account, state.azurite.generation) if key is not None else None
        if ticket is not None:
            def keep(status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
                cache.keep(ticket, key, status, headers, body, state.azurite.generation)
        return await _relay(request, state, origin, target, keep)
    # a request that may change the account: what was kept of it goes, before and again once its answer ends
    account = verdict.account
    cache.begin_write(account)
    try:
        response = await _relay(request, state, origin, target)
    except BaseException:
        cache.end_write(account)
        raise
    if isinstance(response, _Relayed):
        response.ended = lambda: cache.end_write(account)
    else:
        cache.end_write(account)
    return response


def _cache(state: ServerState) -> blobcache.BlobCache:
    if state.blob_cache is None:
        state.blob_cache = blobcache.BlobCache()
    return state.blob_cache


async def _exists(request: Request, state: ServerState, origin: str, raw_path: str) -> bool:
    """Whether the blob a request names exists (Get Blob Properties at Azurite, with the caller's token);
    httpx.TransportError when Azurite does not answer."""
    import httpx

    keep = {b"host", b"authorization", b"x-ms-version"}
    headers = [(k, v) for k, v in request.headers.raw if k.lower() in keep]
    answer = await _client(state).request("HEAD", httpx.URL(origin, raw_path=raw_path.encode("latin-1")), headers=headers)
    return answer.status_code != 404


def _client(state: ServerState) -> Any:  # an httpx.AsyncClient
    client = state.clients.get("azurite")
    if client is None:
        import ssl

        import httpx

        # the CA that signed Azurite's certificate, as the server started it: Azurite is this process's child, and
        # the CA files beside the store follow the store (another process may rewrite them)
        ca = getattr(state.azurite, "ca", b"")
        trust = ssl.create_default_context(cadata=ca.decode()) if ca else ssl.create_default_context(cafile=str(state.ca_file))
        # An Azurite that hangs (rather than dies) must not hold a request for ever: 10 minutes without a byte
        # either way, Storage's longest server timeout (Put Blob), ends it as a failure to answer.
        client = httpx.AsyncClient(verify=trust, timeout=httpx.Timeout(600, connect=10, pool=60),
                                   limits=httpx.Limits(max_connections=64, keepalive_expiry=IDLE_SECONDS))
        state.clients["azurite"] = client
    return client


def _note(request: Request, text: str) -> None:
    print(f"mi serve: {request.method} {clip(request.url.path, 120)}: {text}", file=sys.stderr, flush=True)


def _busy(exc: Exception) -> Response:
    return _error("ServerBusy", message=f"Azurite did not answer ({type(exc).__name__}); try again.")


async def _relay(request: Request, state: ServerState, origin: str, target: str, keep: Any = None) -> Response:
    """Azurite's answer to the request, streamed; `keep(status, headers, body)` is given a read's answer once
    sent whole when blobcache.keepable says it may be kept."""
    import httpx

    client = _client(state)
    headers = [(k, v) for k, v in request.headers.raw if k.lower() not in HOP_BY_HOP]
    has_body = "content-length" in request.headers or "transfer-encoding" in request.headers
    outbound = client.build_request(request.method, httpx.URL(origin, raw_path=target.encode("latin-1")),
                                    headers=headers, content=request.stream() if has_body else None)
    try:
        answer = await client.send(outbound, stream=True)
    except ClientDisconnect:
        return Response(status_code=400)  # the client went away mid-body: no one to answer
    except httpx.TransportError as exc:
        return _busy(exc)
    if answer.status_code >= 500 and "x-ms-error-code" not in answer.headers:
        # Azurite failed on the request itself (an unhandled error answers an empty 500): Storage's
        # InternalError in its shape, rather than a body no client can read
        await answer.aclose()
        _note(request, f"Azurite failed on this request ({answer.status_code} without an error code; its log: "
                       f"{state.azurite.workspace / 'azurite.log'}); answered InternalError.")
        return _error("InternalError", message="Azurite, which keeps this account's blobs, failed on this request.")
    relayed = _Relayed(request, answer)
    if keep is not None and blobcache.keepable(request.method, answer.status_code,
                                               [(k.lower(), v) for k, v in relayed.raw_headers]):
        relayed.keep = keep
    return relayed


class _Relayed(Response):
    """Azurite's answer, streamed to the client as it arrives. Should Azurite fail mid-body (it died), the
    client's connection is closed short of the length announced, which is how a server says the body
    is incomplete once its status has gone; should the client leave, Azurite's answer is dropped at once.
    Either way the connection to Azurite is closed, never left to the pool half read. `keep` is given the
    answer once sent whole (a read that may be kept); `ended` is called once, when Azurite's answer has been
    read whole or failed, before the client can have all of it (a write: the read the client sends next finds
    it ended)."""

    keep: Any = None
    ended: Any = None

    def __init__(self, request: Request, answer: Any) -> None:  # an httpx.Response, streamed
        self.request, self.answer = request, answer
        self.status_code = answer.status_code
        self.background = None
        self.raw_headers = [(k, v) for k, v in answer.headers.raw if k.lower() not in RELAYED_AWAY]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        import httpx

        start = {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}

        async def stream() -> None:
            if self.ended is not None:
                await write_answer()
                return
            await send(start)
            body = [] if self.keep is not None else None
            async for chunk in self.answer.aiter_raw():
                if body is not None:
                    body.append(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            if body is not None:  # kept only as announced: all of Content-Length (none for HEAD)
                whole = b"".join(body)
                announced = 0 if scope.get("method") == "HEAD" else int(self.answer.headers["content-length"])
                if len(whole) == announced:
                    self.keep(self.status_code, self.raw_headers, whole)

        async def write_answer() -> None:  # a write's (small) answer: each chunk sent once the next has come
            held: bytes | None = None
            for_client = [start]
            async for chunk in self.answer.aiter_raw():
                if held is not None:
                    for_client.append({"type": "http.response.body", "body": held, "more_body": True})
                    for message in for_client:
                        await send(message)
                    for_client = []
                held = chunk
            self._end()
            for message in [*for_client, {"type": "http.response.body", "body": held or b"", "more_body": False}]:
                await send(message)

        async def client_left() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        streaming, watching = asyncio.ensure_future(stream()), asyncio.ensure_future(client_left())
        try:
            await asyncio.wait({streaming, watching}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (streaming, watching):
                task.cancel()
            await asyncio.gather(streaming, watching, return_exceptions=True)
            try:
                await self.answer.aclose()
            finally:
                self._end()
        failure = streaming.exception() if streaming.done() and not streaming.cancelled() else None
        if isinstance(failure, httpx.TransportError):
            _note(self.request, f"Azurite stopped mid-answer ({type(failure).__name__}); the client's connection is "
                                "closed so that it retries.")
        elif failure is not None:
            raise failure

    def _end(self) -> None:
        ended, self.ended = self.ended, None
        if ended is not None:
            ended()
