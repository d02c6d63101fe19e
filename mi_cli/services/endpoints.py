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


def replica_file(store_path: str, pid: int) -> Path:
    """The same, for each running `mi serve` of the store on this machine (replicas share a store): the file
    above names the one started last, or once it stops, another that still runs."""
    return Path(f"{store_path}.serve.d") / f"{pid}.json"


def write_address(store_path: str, host: str, port: int, *, proxy_port: int | None = None,
                  tls_port: int | None = None) -> Path:
    """host and port: the token endpoints (plain HTTP); proxy_port: the local cloud's CONNECT proxy on
    the same host, which `mi env` points HTTPS_PROXY at; tls_port: the loopback TLS server behind it."""
    fields = {"host": host, "port": port, "pid": os.getpid(), "proxy_port": proxy_port, "tls_port": tls_port}
    data = json.dumps({k: v for k, v in fields.items() if v is not None}).encode()
    mine = replica_file(store_path, os.getpid())
    mine.parent.mkdir(mode=0o700, exist_ok=True)
    for left in _records(store_path):  # by servers that ended without removing theirs (killed)
        if left != mine and not _read(left):
            left.unlink(missing_ok=True)
    write_atomic(mine, data, mode=0o600)
    return write_atomic(address_file(store_path), data, mode=0o600)  # a reader never sees half of it


def remove_address(store_path: str) -> None:
    """At a stop: this server's record goes; the store's address file, if it names this server, names another
    running server of the store instead, or goes too."""
    pid = os.getpid()
    replica_file(store_path, pid).unlink(missing_ok=True)
    main = address_file(store_path)
    if _read(main, alive=False).get("pid") != pid:
        return
    others = running(store_path)
    if others:
        write_atomic(main, json.dumps(others[-1]).encode(), mode=0o600)
    else:
        main.unlink(missing_ok=True)


def _read(path: Path, *, alive: bool = True) -> dict:
    """A record's fields; {} when it cannot be read, or (`alive`) names a process that has ended."""
    try:
        data = json.loads(path.read_text())
        pid = int(data["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    if alive:
        try:
            os.kill(pid, 0)  # a file left by a server that died is not an answer
        except OSError:
            return {}
    return data if isinstance(data, dict) else {}


def running(store_path: str) -> list[dict]:
    """Every running `mi serve` of the store on this machine, the one started last at the end."""
    found = []
    for path in _records(store_path):
        data = _read(path)
        if data:
            try:
                found.append((path.stat().st_mtime_ns, data))
            except OSError:  # it stopped meanwhile
                continue
    return [data for _, data in sorted(found, key=lambda pair: pair[0])]


def _records(store_path: str) -> list[Path]:
    try:
        return [p for p in replica_file(store_path, 0).parent.iterdir() if p.suffix == ".json"]
    except OSError:
        return []


def read_address(store_path: str, *, port: int | None = None) -> dict | None:
    """The running `mi serve` of the store (the one on `port` when given): the address file's, else another
    that still runs; None when there is none."""
    main = _read(address_file(store_path))
    if main and (port is None or main.get("port") == port):
        return main
    for data in reversed(running(store_path)):
        if port is None or data.get("port") == port:
            return data
    return None
