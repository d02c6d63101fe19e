"""`mi env`: the environment variables that point an unmodified SDK at a running `mi serve`."""

from __future__ import annotations

import hashlib
import os
import re
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from mi_cli.cli.options import Output, QueryOpt, SubscriptionOpt
from mi_cli.cli.runtime import emit, state, transaction, wants_table
from mi_cli.errors import MiError

# Services and the store (SQLAlchemy) are imported inside env(), so that `mi --help` does not load them.

# Variables that would send a client to another kind of endpoint (azure-identity checks them in order).
OTHER_SOURCES = ("IDENTITY_ENDPOINT", "IDENTITY_HEADER", "IDENTITY_SERVER_THUMBPRINT", "IMDS_ENDPOINT", "MSI_ENDPOINT",
                 "MSI_SECRET", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_CLIENT_ID")


# What az needs besides the local cloud's proxy and trust (az reads REQUESTS_CA_BUNDLE, not SSL_CERT_FILE): no
# telemetry, which az would otherwise send from a background process through the proxy to the real Azure.
AZ_SETTINGS = {"AZURE_CORE_COLLECT_TELEMETRY": "false"}


def az_config_dir(base: Path, arm_id: str) -> Path:
    """az's configuration folder for a resource: one per resource, under the store's, as each VM has its own
    ~/.azure. `az login --identity --client-id X` on one resource is then never read by az on another (where X
    is not attached), and nothing az writes reaches the user's own ~/.azure."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", arm_id.rsplit("/", 1)[-1])[:64]
    return base / f"{name}-{hashlib.sha256(arm_id.casefold().encode()).hexdigest()[:10]}"


class Style(str, Enum):
    imds = "imds"
    appservice = "appservice"


class Shell(str, Enum):
    bash = "bash"
    fish = "fish"
    powershell = "powershell"


def _lines(values: dict[str, str], unset: list[str], shell: Shell) -> str:
    out = []
    if shell is Shell.powershell:
        out += [f"Remove-Item Env:{name} -ErrorAction SilentlyContinue" for name in unset]
    elif unset:
        out.append(("unset " if shell is Shell.bash else "set -e ") + " ".join(unset))
    for name, value in values.items():
        quoted = value.replace("'", "'\\''") if shell is Shell.bash else value.replace("'", "''")
        out.append({Shell.bash: f"export {name}='{quoted}'", Shell.fish: f"set -gx {name} '{quoted}'",
                    Shell.powershell: f"$env:{name} = '{quoted}'"}[shell])
    return "\n".join(out) + "\n"


def env(
    resource: Annotated[str, typer.Option("--resource", help="Name or id of the resource the application runs on.")],
    group: Annotated[Optional[str], typer.Option("--resource-group", "-g", help="Name of the resource group.")] = None,
    style: Annotated[Style, typer.Option("--style", help="imds (VMs, AKS...) or appservice (App Service, Functions, Container Apps).")] = Style.imds,
    shell: Annotated[Shell, typer.Option("--shell", help="Syntax of the exports.")] = Shell.bash,
    port: Annotated[Optional[int], typer.Option("--port", min=1, max=65535, help="Port of mi serve (default: read from the running server).")] = None,
    host: Annotated[str, typer.Option("--host", help="Host of mi serve.")] = "127.0.0.1",
    identity: Annotated[Optional[str], typer.Option("--identity", help="A user-assigned identity (name or id) to use: sets AZURE_CLIENT_ID.")] = None,
    type_: Annotated[Optional[str], typer.Option("--type", "-t", help="Resource type or alias, when names collide.")] = None,
    subscription: SubscriptionOpt = None,
    # not the usual default (JSON off a terminal), and not MI_OUTPUT (set for the other commands): the exports
    # are what `eval "$(mi env ...)"` needs; only an explicit -o asks for the variables as data
    output: Annotated[Output, typer.Option("--output", "-o", case_sensitive=False,
                                           help="table: the exports (default); json and the rest: the variables as data.")] = Output.table,
    query: QueryOpt = None,
) -> None:
    """Print the exports that make azure-identity, msal and az get this resource's tokens from mi serve.

    Use it as: eval "$(mi env --resource vm1 -g rg)". With -o json, an object of the same variables.
    Once mi serve has run on the store, they include the local cloud's: HTTPS_PROXY, the CA bundle
    (REQUESTS_CA_BUNDLE, SSL_CERT_FILE, NODE_EXTRA_CA_CERTS), and for az a configuration folder of the
    resource's own (AZURE_CONFIG_DIR) with telemetry off: then `az login --identity` signs in as the resource.
    """
    from mi_cli.services import endpoints, localcloud, lookup, tenancy
    from mi_cli.store import default_path

    where = str(state["db"] or os.environ.get("MI_DB") or default_path())
    running = endpoints.read_address(where)
    if port is None:
        if running is None:
            raise MiError("ServerNotRunning", "No running 'mi serve' for this store: start one, or give --port.")
        port = int(running["port"])
        host = running["host"] if running["host"] not in ("0.0.0.0", "::") else host
    if running is not None and int(running["port"]) == port and running.get("proxy_port"):
        proxy_port: int | None = int(running["proxy_port"])
    else:  # mi serve's default; only once it has written the CA files, which the variables name
        proxy_port = port + 1 if port < 65535 and localcloud.files(where).bundle.is_file() else None
    base = f"http://{host}:{port}"
    with transaction(write=style is Style.appservice) as ctx:
        res = lookup.resource(ctx, resource, group, subscription=subscription, type_text=type_)
        if style is Style.imds:
            values = {"AZURE_POD_IDENTITY_AUTHORITY_HOST": base + res.arm_id}
        else:
            values = {"IDENTITY_ENDPOINT": base + "/msi/token", "IDENTITY_HEADER": endpoints.secret_for(ctx, res)}
        if identity:
            values["AZURE_CLIENT_ID"] = lookup.user_assigned(ctx, identity, group, subscription=subscription).client_id
        values["AZURE_TENANT_ID"] = tenancy.default_tenant(ctx).id
        arm_id = res.arm_id
    # IMDS and the App Service endpoint are plain HTTP on this host: never through the proxy
    no_proxy = "127.0.0.1,localhost" + ("" if host in ("127.0.0.1", "localhost") else f",{host}")
    values["NO_PROXY"] = no_proxy
    if proxy_port is not None:
        cloud = localcloud.files(where)
        proxy = f"http://{f'[{host}]' if ':' in host else host}:{proxy_port}"
        # both cases of each: curl and Go read the lower-case ones, requests and az either
        values |= {"no_proxy": no_proxy, "HTTPS_PROXY": proxy, "https_proxy": proxy,
                   "REQUESTS_CA_BUNDLE": str(cloud.bundle.resolve()), "SSL_CERT_FILE": str(cloud.bundle.resolve()),
                   "NODE_EXTRA_CA_CERTS": str(cloud.ca.resolve()),
                   "AZURE_CONFIG_DIR": str(az_config_dir(cloud.azure_config.resolve(), arm_id)), **AZ_SETTINGS}
    if wants_table(output, query):
        unset = [n for n in OTHER_SOURCES if n not in values] + (["AZURE_POD_IDENTITY_AUTHORITY_HOST"] if style is Style.appservice else [])
        print(_lines(values, unset, shell), end="")
        return
    emit(values, output, query)
