"""`mi serve`: the IMDS and App Service token endpoints, OpenID metadata and JWKS, on loopback."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Optional

import typer

from mi_cli.cli.runtime import state
from mi_cli.errors import MiError, UsageError

# The server stack (uvicorn, starlette, its sockets and signals) and the store load inside serve(): only a
# running server pays for them, never `mi --help` or completion.


def serve(
    host: Annotated[str, typer.Option("--host", help="Address to bind (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to bind; 0 picks a free one.")] = 8079,
    resource: Annotated[Optional[str], typer.Option("--resource", help="Resource that bare IMDS paths speak for (one port per resource).")] = None,
    group: Annotated[Optional[str], typer.Option("--resource-group", "-g", help="Group of --resource.")] = None,
    inject: Annotated[Optional[list[str]], typer.Option("--inject", help="Fault for the next token requests: STATUS[:COUNT[:RETRY_AFTER]], e.g. 503:3.")] = None,
    throttle: Annotated[bool, typer.Option("--throttle", help="Limit each resource as IMDS does: 20 requests/s, 5 at a time (429 beyond).")] = False,
) -> None:
    """Serve tokens to unmodified SDK clients, for every resource in the store.

    IMDS: http://HOST:PORT/<resource id>/metadata/identity/oauth2/token (point
    AZURE_POD_IDENTITY_AUTHORITY_HOST at http://HOST:PORT/<resource id>). App Service:
    http://HOST:PORT/msi/token with the resource's IDENTITY_HEADER. 'mi env' prints both.
    The store is read on every request, so changes made with mi take effect at once.
    """
    import signal
    import socket

    import uvicorn

    from mi_cli.server.app import create_app
    from mi_cli.server.state import Fault, ServerState, Throttle
    from mi_cli.services import Ctx, endpoints, lookup
    from mi_cli.store import default_path, open_store

    try:
        faults = [Fault.parse(spec) for spec in inject or []]
    except ValueError as exc:
        raise UsageError("InvalidArgumentValue", str(exc)) from None
    where = str(state["db"] or os.environ.get("MI_DB") or default_path())
    store = open_store(where)
    default_resource = None
    if resource:
        with store.transaction(write=False) as session:
            default_resource = lookup.resource(Ctx.from_env(session), resource, group).arm_id
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"WARNING: binding {host}: anyone who can reach it can get this store's tokens.", file=sys.stderr)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say so, and without it
    # keep-alive responses wait ~40 ms on Nagle's algorithm and delayed ACKs.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        raise MiError("AddressInUse", f"Cannot bind {host}:{port}: {exc.strerror}.") from None
    bound = sock.getsockname()[1]
    app = create_app(ServerState(store, default_resource=default_resource, faults=faults,
                                 throttle=Throttle() if throttle else None))
    address = endpoints.write_address(where, host, bound)
    print(f"mi serve: listening on http://{host}:{bound} for the store {where}", file=sys.stderr)
    print("  exports for a resource: mi env --resource NAME -g GROUP [--style imds|appservice]  (Ctrl-C stops)", file=sys.stderr)
    sys.stderr.flush()
    # uvicorn shuts down gracefully on SIGTERM and Ctrl-C, then re-raises the signal: that is a
    # normal stop, so it ends in exit 0 (and the address file is removed below).
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: sys.exit(0))
    try:
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
        server.run(sockets=[sock])
    finally:
        address.unlink(missing_ok=True)
        store.close()
