"""Where clients reach a resource's token endpoint: App Service secrets and the running server."""

from __future__ import annotations

import hmac
import json
import os
from pathlib import Path

from sqlmodel import select

from mi_cli.files import write_atomic
from mi_cli.models import EndpointSecret, Resource
from mi_cli.services import Ctx


def secret_for(ctx: Ctx, res: Resource) -> str:
    """The resource's IDENTITY_HEADER value, made on first use (a GUID, as App Service's are)."""
    row = ctx.session.get(EndpointSecret, res.pk)
    if row is None:
        row = EndpointSecret(resource_pk=res.pk, secret=ctx.new_guid(), created_at=ctx.now())
        ctx.session.add(row)
        ctx.session.flush()
    return row.secret


def resource_for_secret(ctx: Ctx, presented: str) -> Resource | None:
    """Compare the presented header with every secret in constant time; no early exit on a match."""
    found: int | None = None
    given = presented.encode()
    for row in ctx.session.exec(select(EndpointSecret)).all():
        if hmac.compare_digest(row.secret.encode(), given):
            found = row.resource_pk
    return ctx.session.get(Resource, found) if found is not None else None


def address_file(store_path: str) -> Path:
    """Where a running `mi serve` says which host and port it listens on: beside the store."""
    return Path(f"{store_path}.serve.json")


def write_address(store_path: str, host: str, port: int, *, proxy_port: int | None = None,
                  tls_port: int | None = None) -> Path:
    """host and port: the token endpoints (plain HTTP); proxy_port: the local cloud's CONNECT proxy on
    the same host, which `mi env` points HTTPS_PROXY at; tls_port: the loopback TLS server behind it."""
    fields = {"host": host, "port": port, "pid": os.getpid(), "proxy_port": proxy_port, "tls_port": tls_port}
    data = json.dumps({k: v for k, v in fields.items() if v is not None}).encode()
    return write_atomic(address_file(store_path), data, mode=0o600)  # a reader never sees half of it


def read_address(store_path: str) -> dict | None:
    path = address_file(store_path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    try:
        os.kill(int(data["pid"]), 0)  # a file left by a server that died is not an answer
    except (OSError, KeyError, ValueError):
        return None
    return data
