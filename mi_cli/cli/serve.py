"""`mi serve`: the token endpoints, OpenID metadata and JWKS on loopback, and the local cloud behind its proxy."""

from __future__ import annotations

import os
import sys
from pathlib import Path
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
    proxy_port: Annotated[Optional[int], typer.Option("--proxy-port", min=0, max=65535, help="Port of the local cloud's HTTPS proxy (default: --port + 1; 0 picks a free one).")] = None,
    azurite_path: Annotated[Optional[str], typer.Option("--azurite", metavar="PATH", help="azurite-blob to serve Blob Storage with (default: MI_AZURITE, else azurite-blob on PATH).")] = None,
) -> None:
    """Serve tokens to unmodified SDK clients, for every resource in the store.

    IMDS: http://HOST:PORT/<resource id>/metadata/identity/oauth2/token (point
    AZURE_POD_IDENTITY_AUTHORITY_HOST at http://HOST:PORT/<resource id>). App Service:
    http://HOST:PORT/msi/token with the resource's IDENTITY_HEADER. 'mi env' prints both.
    Every request is answered from the store as it is then (what was read is kept only until the store
    changes), so changes made with mi, by any process, take effect at once.

    The local cloud: Azure's HTTPS hosts that mi serves (management.azure.com, login.microsoftonline.com,
    graph.microsoft.com, https://VAULT.vault.azure.net for each Key Vault in the store, and the hosts of
    the federation issuers it holds) are answered through an HTTP CONNECT proxy on --proxy-port, with a
    certificate signed by the store's own CA; other hosts are tunnelled untouched. 'mi env' points
    HTTPS_PROXY and the CA bundle at them, so that az and the SDKs work unchanged, authorised by the
    store's roles.

    Blob Storage (https://ACCOUNT.blob.core.windows.net for each storage account) is kept by Azurite,
    Microsoft's emulator, which mi serve starts when it finds it (npm install -g azurite) and fronts
    with Storage's authorisation; its data lives beside the store. Small blob reads (up to 64 KiB) with a
    bearer token are answered from memory, each still authorised and logged, while nothing has written to
    the account through mi serve since Azurite answered them; writes sent to Azurite's own port directly
    bypass mi serve (and its authorisation), so they are not seen.
    """
    import asyncio
    import signal

    import uvicorn

    from mi_cli.server import azurite, tls
    from mi_cli.server.app import create_app
    from mi_cli.server.proxy import Proxy
    from mi_cli.server.state import Fault, ServerState, Throttle
    from mi_cli.services import Ctx, endpoints, localcloud, lookup, storage
    from mi_cli.store import companion, default_path, open_store

    if group and not resource:
        raise UsageError("MutuallyExclusiveArguments", "--resource-group/-g is the group of --resource: give --resource "
                         "too, or drop -g (without --resource, every resource is served at its own path).")
    try:
        faults = [Fault.parse(spec) for spec in inject or []]
    except ValueError as exc:
        raise UsageError("InvalidArgumentValue", str(exc)) from None
    where = str(state["db"] or os.environ.get("MI_DB") or default_path())
    store = open_store(where)
    files_at = companion(where)  # the CA, certificates, address and Azurite's data: beside a store file
    default_resource = None
    if resource:
        with store.transaction(write=False) as session:
            default_resource = lookup.resource(Ctx.from_env(session), resource, group).arm_id
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"WARNING: binding {host}: anyone who can reach it can get this store's tokens and tunnel through its proxy.", file=sys.stderr)
    sock = _bind(host, port)
    bound = sock.getsockname()[1]
    # The proxy sits beside the token port by default, so that `mi env --port N` can name it unasked.
    if proxy_port is None:
        proxy_port = port + 1 if 0 < port < 65535 else 0
    proxy_sock = _bind(host, proxy_port, " for the local cloud's proxy (choose another with --proxy-port)")
    tls_sock = _bind("127.0.0.1", 0)  # reached only through the proxy
    executable = azurite.find(azurite_path)
    # Azurite's data beside the store; a replica of this store on this machine that holds it already leaves
    # this one a folder of its own (held while this process runs)
    try:
        workspace, _held = azurite.claim_workspace(Path(f"{files_at}.azurite")) if executable else (None, None)
    except OSError as exc:
        raise MiError("FileNotWritable", f"Cannot keep Azurite's data in {files_at}.azurite: {exc.strerror}.") from None
    with store.transaction(write=True) as session:
        ctx = Ctx.from_env(session)
        ca = localcloud.authority(ctx)  # made on first use, so this writes
        cloud, _ = localcloud.publish(ctx, files_at, ca)
        ca_pem = localcloud.ca_certificate(ctx)
        served = localcloud.served_urls(ctx)
        blob_server = azurite.Azurite(executable, workspace, localcloud.loopback_certificate(ctx, ca),
                                      ca.cert_pem.bytes()) if executable else None
        accounts = storage.azurite_accounts(ctx) if executable else ""
        for warning in ctx.warnings:
            print(f"WARNING: {warning}", file=sys.stderr)
    state_ = ServerState(store, default_resource=default_resource, faults=faults, throttle=Throttle() if throttle else None,
                         ca_file=cloud.ca, azurite=blob_server,
                         azurite_missing="" if executable else azurite.not_found_reason(azurite_path))
    app = create_app(state_)
    quiet = {"log_level": "warning", "access_log": False, "lifespan": "off"}
    server = uvicorn.Server(uvicorn.Config(app, **quiet))
    tls_config = uvicorn.Config(app, ssl_certfile=str(cloud.tls), **quiet)
    try:
        tls_config.load()  # now: a certificate file replaced later by another server of this store is not ours
    except (OSError, ValueError) as exc:
        raise MiError("CertificateError", f"Cannot load the local cloud's certificate {cloud.tls}: {exc}.") from None
    # federation issuers' hosts: a leaf each, on first use (SNI); all of them follow the store's CA
    state_.certificates = tls.serve_certificates(tls_config.ssl, store, files_at, ca, ca_pem)
    tls_server = _background(tls_config)
    relay = Proxy(state_.connect_route, ("127.0.0.1", tls_sock.getsockname()[1]))
    shown = f"[{host}]" if ":" in host else host
    proxied = proxy_sock.getsockname()[1]
    endpoints.write_address(files_at, host, bound, proxy_port=proxied, tls_port=tls_sock.getsockname()[1])
    print(f"mi serve: listening on http://{shown}:{bound} for the store {store.where}", file=sys.stderr)
    print(f"  IMDS and App Service: http://{shown}:{bound}", file=sys.stderr)
    print(f"  local cloud proxy: http://{shown}:{proxied} (HTTPS_PROXY); CA: {cloud.ca}", file=sys.stderr)
    for url in served:
        print(f"  serves {url}", file=sys.stderr)
    if not served:
        print("  serves no vault or storage account yet (mi resource create --type keyvault|storage ...: served at once)",
              file=sys.stderr)
    if blob_server is not None:
        print(f"  Blob Storage: served through Azurite ({executable}); data in {blob_server.workspace}", file=sys.stderr)
        if blob_server.workspace != Path(f"{files_at}.azurite"):
            print(f"  (another mi serve of this store on this machine keeps {files_at}.azurite: the blobs of each "
                  "are their own)", file=sys.stderr)
    else:
        print(f"  Blob Storage: not served: {state_.azurite_missing}", file=sys.stderr)
    commands = _command_host(where)
    if commands is not None:
        print(f"  mi commands for this store run in this server, warm (socket {commands.args[-1]}; MI_NO_SERVER=1 "
              "runs one in its own process)", file=sys.stderr)
    print("  exports for a resource: mi env --resource NAME -g GROUP [--style imds|appservice]  (Ctrl-C stops)", file=sys.stderr)
    sys.stderr.flush()

    async def run() -> None:
        await relay.start(proxy_sock)
        tls_task = asyncio.ensure_future(tls_server.serve(sockets=[tls_sock]))
        if blob_server is not None and accounts:  # started now, so that the first blob request finds it up
            starting = asyncio.ensure_future(blob_server.ensure(accounts))
            starting.add_done_callback(_report_failure)
        try:
            await server.serve(sockets=[sock])
        finally:  # the token server has stopped (a signal): the proxy and the TLS server follow it
            await relay.close()
            tls_server.should_exit = True
            await asyncio.wait([tls_task], timeout=10)
            await state_.aclose()

    # uvicorn shuts down gracefully on SIGTERM and Ctrl-C, then re-raises the signal: that is a
    # normal stop, so it ends in exit 0 (and the address file is removed below).
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: sys.exit(0))
    try:
        asyncio.run(run())
    finally:
        endpoints.remove_address(files_at)  # or, while another server of the store runs here, it is named instead
        if commands is not None:
            commands.terminate()  # it removes its socket
            commands.wait(10)
        store.close()


def _command_host(where: str):  # noqa: ANN202 - a subprocess.Popen, or None
    """The command host of this store (cli/host.py): `mi` commands for the store are forwarded to it and run
    warm. Another server of the store on this machine that hosts commands already keeps them."""
    import socket
    import subprocess

    from mi_cli.locations import command_socket

    path = command_socket(where)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
        return None  # answered: another server's host
    except OSError:
        pass
    finally:
        probe.close()
    # The store goes through a pipe, not the command line or the environment: a URL may hold a password. The
    # host ends with this process (a parent-death signal, and the terminate below).
    env = {k: v for k, v in os.environ.items() if k != "MI_DB"}
    host = subprocess.Popen([sys.executable, "-m", "mi_cli.cli.host", path], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True,
                            start_new_session=True)  # the terminal's Ctrl-C is this process's to handle
    host.stdin.write(where + "\n")
    host.stdin.close()
    return host


def _report_failure(task) -> None:  # noqa: ANN001 - an asyncio.Task
    if not task.cancelled() and task.exception() is not None:
        print(f"mi serve: Blob Storage: {task.exception()}", file=sys.stderr, flush=True)


def _bind(host: str, port: int, what: str = ""):  # noqa: ANN202 - a listening socket.socket
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say so, and without it
    # keep-alive responses wait ~40 ms on Nagle's algorithm and delayed ACKs.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)  # before the address file names it: early clients wait in the backlog, not refused
    except OSError as exc:
        sock.close()
        raise MiError("AddressInUse", f"Cannot bind {host}:{port}{what}: {exc.strerror}.") from None
    return sock


def _background(config):  # noqa: ANN001, ANN202 - a uvicorn.Server
    """A uvicorn server that leaves the signals to the token server, which stops it."""
    import contextlib

    import uvicorn

    class Background(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):  # noqa: ANN202
            yield

        def install_signal_handlers(self) -> None:  # the name of the same hook before uvicorn 0.29
            pass

    return Background(config)
