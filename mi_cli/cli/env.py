"""`mi env`: the environment variables that point an unmodified SDK at a running `mi serve`."""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from mi_cli.cli.options import Output, QueryOpt, SubscriptionOpt
from mi_cli.cli.runtime import emit, state, transaction, wants_table
from mi_cli.errors import MiError, UsageError

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
    import hashlib  # here, not at the top: `mi --help` loads this module
    import re

    name = re.sub(r"[^A-Za-z0-9._-]", "_", arm_id.rsplit("/", 1)[-1])[:64]
    return base / f"{name}-{hashlib.sha256(arm_id.casefold().encode()).hexdigest()[:10]}"


# What a pod gets from AKS's workload identity webhook: AZURE_AUTHORITY_HOST is the cloud's Entra endpoint with its
# trailing slash (the webhook's value, from go-autorest's ActiveDirectoryEndpoint), served by the local cloud.
AUTHORITY_HOST = "https://login.microsoftonline.com/"
WORKLOAD_LIFETIME = 3600  # the webhook's default expirationSeconds of the projected token
DEFAULT_AUDIENCE = "api://AzureADTokenExchange"
# Variables that would make DefaultAzureCredential pick another credential before the workload identity one
# (EnvironmentCredential: a secret, a certificate, a user name), or send ManagedIdentityCredential to IMDS.
OTHER_THAN_WORKLOAD = ("AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH", "AZURE_CLIENT_CERTIFICATE_PASSWORD",
                       "AZURE_USERNAME", "AZURE_PASSWORD", "AZURE_POD_IDENTITY_AUTHORITY_HOST")


def token_file(store_path: str, identity_id: str, issuer: str, subject: str, audience: str) -> Path:
    """Where a workload's assertion is kept: beside the store, in a 0700 folder, a file for each identity, issuer,
    subject and audience (as each pod has its own projected token)."""
    import hashlib
    import re

    digest = hashlib.sha256("\n".join((identity_id.casefold(), issuer, subject, audience)).encode()).hexdigest()[:12]
    name = re.sub(r"[^A-Za-z0-9._-]", "_", identity_id.rsplit("/", 1)[-1])[:64]
    return Path(f"{store_path}.tokens") / f"{name}-{digest}.jwt"


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
    resource: Annotated[Optional[str], typer.Option("--resource", help="Name or id of the resource the application runs on.")] = None,
    group: Annotated[Optional[str], typer.Option("--resource-group", "-g", help="Name of the resource group.")] = None,
    style: Annotated[Optional[Style], typer.Option("--style", help="imds (VMs, AKS...) or appservice (App Service, Functions, Container Apps); default imds.")] = None,
    shell: Annotated[Optional[Shell], typer.Option("--shell", help="Syntax of the exports: bash (default), fish or powershell.")] = None,
    port: Annotated[Optional[int], typer.Option("--port", min=1, max=65535, help="Port of mi serve (default: read from the running server).")] = None,
    host: Annotated[Optional[str], typer.Option("--host", help="Host of mi serve, as clients reach it (default: the one the running server bound, else 127.0.0.1).")] = None,
    identity: Annotated[Optional[str], typer.Option("--identity", help="A user-assigned identity (name or id) to use: sets AZURE_CLIENT_ID.")] = None,
    type_: Annotated[Optional[str], typer.Option("--type", "-t", help="Resource type or alias, when names collide.")] = None,
    workload_identity: Annotated[Optional[str], typer.Option("--workload-identity", help="Instead of --resource: a user-assigned identity (name or id) the workload gets by federation, as AKS's workload identity injects it.")] = None,
    issuer: Annotated[Optional[str], typer.Option("--issuer", help="With --workload-identity: the issuer of the workload's assertion (a federation issuer, made on first use), e.g. https://eastus.oic.prod-aks.azure.com/TENANT/GUID/.")] = None,
    subject: Annotated[Optional[str], typer.Option("--subject", help="With --workload-identity: the assertion's subject, e.g. system:serviceaccount:default:app.")] = None,
    audience: Annotated[Optional[str], typer.Option("--audience", help="With --workload-identity: the assertion's audience (default api://AzureADTokenExchange).")] = None,
    lifetime: Annotated[Optional[int], typer.Option("--lifetime", metavar="SECONDS", help="With --workload-identity: the assertion's lifetime, 60 to 86400 (default 3600, as AKS's projected token). Run mi env again for a fresh one.")] = None,
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

    With --workload-identity NAME --issuer URL --subject SUB instead of --resource, the exports AKS's workload
    identity webhook gives a pod: the issuer's assertion is written to a 0600 file beside the store
    (AZURE_FEDERATED_TOKEN_FILE; run mi env again to refresh it, as the kubelet rotates the projected token),
    AZURE_CLIENT_ID is the identity's, AZURE_AUTHORITY_HOST Entra's, and no IMDS or App Service variable is set:
    DefaultAzureCredential then exchanges the assertion through the identity's federated credential.
    """
    from mi_cli.services import endpoints, localcloud
    from mi_cli.store import companion, default_path

    workload = _workload_arguments(resource, workload_identity, issuer, subject, audience, lifetime, style, identity,
                                   type_)
    if shell is not None and not wants_table(output, query):
        raise UsageError("MutuallyExclusiveArguments", "--shell is the syntax of the exports; -o json (and the other data "
                         "forms) and --query print the variables as data instead: drop one.")
    shell = shell or Shell.bash
    style = style or Style.imds
    where = companion(str(state["db"] or os.environ.get("MI_DB") or default_path()))
    running = endpoints.read_address(where, port=port)  # with --port: that one of the store's servers here
    if port is None:
        if running is None:
            raise MiError("ServerNotRunning", "No running 'mi serve' for this store: start one, or give --port.")
        port = int(running["port"])
        if host is None and running["host"] not in ("0.0.0.0", "::"):
            host = running["host"]
    host = host or "127.0.0.1"  # a --host given is where the clients reach the server: always kept
    if running is not None and running.get("proxy_port"):
        proxy_port: int | None = int(running["proxy_port"])
    else:  # mi serve's default; only once it has written the CA files, which the variables name
        proxy_port = port + 1 if port < 65535 and localcloud.files(where).bundle.is_file() else None
    base = f"http://{host}:{port}"
    if workload:
        values, arm_id = _workload(where, workload_identity, group, subscription, issuer, subject,
                                   audience if audience is not None else DEFAULT_AUDIENCE, lifetime or WORKLOAD_LIFETIME)
        unset = [n for n in OTHER_SOURCES + OTHER_THAN_WORKLOAD if n not in values]
    else:
        values, arm_id = _resource(base, resource, group, subscription, type_, style, identity)
        unset = [n for n in OTHER_SOURCES if n not in values] + (["AZURE_POD_IDENTITY_AUTHORITY_HOST"] if style is Style.appservice else [])
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
        print(_lines(values, unset, shell), end="")
        return
    emit(values, output, query)


def _workload_arguments(resource, workload_identity, issuer, subject, audience, lifetime, style, identity,  # noqa: ANN001
                        type_) -> bool:  # noqa: ANN001
    """Whether the exports are a workload identity's; the options that go with each form."""
    if workload_identity is None:
        if resource is None:
            raise UsageError("MissingArgument", "the following arguments are required: --resource (or "
                                                "--workload-identity with --issuer and --subject)")
        extra = [name for name, value in (("--issuer", issuer), ("--subject", subject), ("--audience", audience),
                                          ("--lifetime", lifetime)) if value is not None]
        if extra:
            raise UsageError("InvalidArgumentValue", f"{', '.join(extra)}: only with --workload-identity.")
        return False
    clash = [name for name, value in (("--resource", resource), ("--style", style), ("--identity", identity),
                                      ("--type", type_)) if value is not None]
    if clash:
        raise UsageError("InvalidArgumentValue", f"--workload-identity cannot be used with {', '.join(clash)}.")
    missing = [name for name, value in (("--issuer", issuer), ("--subject", subject)) if value is None]
    if missing:
        raise UsageError("MissingArgument", "the following arguments are required with --workload-identity: "
                                            f"{', '.join(missing)}")
    return True


def _resource(base: str, resource: str, group, subscription, type_, style: Style, identity) -> tuple[dict, str]:  # noqa: ANN001
    """The variables of a resource's managed identity (IMDS or App Service)."""
    from mi_cli.models import ResourceGroup
    from mi_cli.services import endpoints, lookup, tenancy

    from mi_cli.services import next_steps

    # -g names the group of a resource or an identity given by name; with the resource's id and the identity's
    # name, the identity's
    for_identity = resource.strip().startswith("/") and identity is not None and not identity.strip().startswith("/")
    with transaction(write=style is Style.appservice) as ctx:
        res = lookup.resource(ctx, resource, None if for_identity else group,
                              subscription=None if for_identity else subscription, type_text=type_)
        if style is Style.imds:
            values = {"AZURE_POD_IDENTITY_AUTHORITY_HOST": base + res.arm_id}
        else:
            values = {"IDENTITY_ENDPOINT": base + "/msi/token", "IDENTITY_HEADER": endpoints.secret_for(ctx, res)}
        if identity:
            uami = lookup.user_assigned(ctx, identity, group, subscription=subscription)
            values["AZURE_CLIENT_ID"] = uami.client_id
            if not any(a.client_id == uami.client_id for a in _live_attachments(ctx, res)):
                group_name = ctx.session.get(ResourceGroup, res.group_pk).name
                named = uami.name if uami.group_pk == res.group_pk else uami.arm_id
                ctx.warn(f"The identity '{uami.name}' is not attached to '{res.name}': its token requests will be refused "
                         f"(Identity not found). Attach it with 'mi identity assign --resource {next_steps.arg(res.name)} "
                         f"-g {next_steps.arg(group_name)} --identities {next_steps.arg(named)}'.")
        else:  # what a client's request, naming no identity, will get: say now why it would be refused
            reason = next_steps.why_no_token(ctx, res, system_only=style is Style.appservice,
                                             client_id_option="--identity NAME, which sets AZURE_CLIENT_ID")
            if reason:
                ctx.warn(reason)
        values["AZURE_TENANT_ID"] = tenancy.default_tenant(ctx).id
        return values, res.arm_id


def _live_attachments(ctx, res):  # noqa: ANN001, ANN202
    from mi_cli.services import identities

    return [a for a in identities.attachments(ctx, res) if identities.is_live(ctx, a)]


def _workload(where: str, name: str, group, subscription, issuer: str, subject: str, audience: str,  # noqa: ANN001
              lifetime: int) -> tuple[dict, str]:
    """Mint the issuer's assertion for the workload, write it to its file (0600), and give the webhook's variables.
    A warning when no federated credential of the identity matches the assertion: Entra would refuse it."""
    from sqlmodel import select

    from mi_cli.files import write_atomic
    from mi_cli.models import FederatedCredential
    from mi_cli.services import federation, lookup, tenancy

    federation.check_url(issuer)
    with transaction(write=True) as ctx:
        uami = lookup.user_assigned(ctx, name, group, subscription=subscription)
        assertion = federation.mint(ctx, issuer, subject, audience, None, lifetime)
        credentials = ctx.session.exec(select(FederatedCredential).where(FederatedCredential.identity_pk == uami.pk)).all()
        if not any(c.issuer == issuer and c.subject == subject and audience in c.audiences for c in credentials):
            ctx.warn(f"No federated credential of the identity '{uami.name}' has issuer '{issuer}', subject "
                     f"'{subject}' and audience '{audience}': Entra will refuse this assertion (see 'mi identity "
                     "federated-credential create').")
        values = {"AZURE_CLIENT_ID": uami.client_id, "AZURE_TENANT_ID": tenancy.default_tenant(ctx).id}
        arm_id = uami.arm_id
    path = token_file(where, arm_id, issuer, subject, audience)
    try:
        path.parent.mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        raise MiError("FileNotWritable", f"Cannot make the folder '{path.parent}': {exc.strerror}.") from None
    write_atomic(path, assertion.encode(), mode=0o600)
    values |= {"AZURE_FEDERATED_TOKEN_FILE": str(path.resolve()), "AZURE_AUTHORITY_HOST": AUTHORITY_HOST}
    return values, arm_id
