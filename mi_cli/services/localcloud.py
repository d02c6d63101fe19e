"""The local cloud's rules: the store's certificate authority, the files beside the store, and which hosts are served
(Azure's fixed names, each vault's and storage account's, and the host of each simulated federation issuer)."""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func
from sqlmodel import select

from mi_cli import ids
from mi_cli.files import write_atomic
from mi_cli.models import CertificateAuthority, Resource
from mi_cli.services import Ctx, federation, tenancy

# Every host name the local cloud answers for, each with the resource type whose names a wildcard serves
# (None: the host is served whenever mi serve runs). The TLS certificate names them all, and a CONNECT to
# any of them is answered here, never tunnelled to Azure: a plane is added by adding its names here.
HOSTS: dict[str, str | None] = {
    "*.vault.azure.net": "Microsoft.KeyVault/vaults",
    "*.blob.core.windows.net": "Microsoft.Storage/storageAccounts",
    "management.azure.com": None,
    "login.microsoftonline.com": None,
    "graph.microsoft.com": None,
}
HTTPS_PORT = 443
# An issuer's host (token.actions.githubusercontent.com, REGION.oic.prod-aks.azure.com) is answered too while the
# store holds an issuer there (services/federation): those names come and go with the store, so the certificate
# issued at start does not name them; each gets a leaf of its own when a client first asks for it (SNI).
# The server certificate is issued anew at each start; clients that cap a leaf's life (398 days) accept it.
LEAF_DAYS = 397


@dataclass(frozen=True)
class Files:
    """What the local cloud keeps beside the store (a path or a URL: the names only append to it)."""

    ca: Path  # the store's CA certificate alone (NODE_EXTRA_CA_CERTS)
    bundle: Path  # the system's CAs and the store's (REQUESTS_CA_BUNDLE, SSL_CERT_FILE)
    tls: Path  # the server certificate's key and chain, 0600: read by the TLS server at start
    azure_config: Path  # AZURE_CONFIG_DIR: az pointed at mi keeps its login here, never in ~/.azure


def files(store_path: str) -> Files:
    return Files(Path(f"{store_path}.ca.pem"), Path(f"{store_path}.ca-bundle.pem"), Path(f"{store_path}.tls.pem"),
                 Path(f"{store_path}.azure"))


def authority(ctx: Ctx, *, create: bool = True):  # noqa: ANN201 - a trustme.CA (imported lazily: only the server needs it)
    """The default tenant's CA, created on first use and kept in the store like the signing keys. Without
    `create` (a read transaction), None while the store holds none."""
    import trustme

    tenant = tenancy.default_tenant(ctx, create=create)
    row = ctx.session.get(CertificateAuthority, tenant.id) if tenant is not None else None
    if row is None and not create:
        return None
    if row is None:
        ca = trustme.CA(organization_name="mi", organization_unit_name=f"mi local cloud CA for tenant {tenant.id}")
        row = CertificateAuthority(tenant_id=tenant.id, key_pem=ca.private_key_pem.bytes().decode(),
                                   cert_pem=ca.cert_pem.bytes().decode(), created_at=ctx.now())
        ctx.session.add(row)
        ctx.session.flush()
        ctx.log("Microsoft.Directory/certificateAuthorities/write", f"/tenants/{tenant.id}/certificateAuthority")
        return ca
    return trustme.CA.from_pem(row.cert_pem.encode(), row.key_pem.encode())


def system_cas() -> str:
    """The CAs a process trusts without mi: certifi's bundle when installed (what requests uses), else
    OpenSSL's default file. Empty when neither exists."""
    candidates = []
    try:
        import certifi  # here: optional, and only the CA bundle needs it

        candidates.append(certifi.where())
    except ImportError:
        pass
    paths = ssl.get_default_verify_paths()
    candidates += [paths.cafile, paths.openssl_cafile]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate):
            try:
                return Path(candidate).read_text(encoding="ascii", errors="replace")
            except OSError:
                continue
    return ""


def prepare(ctx: Ctx, store_path: str) -> Files:
    """Write the CA certificate, the CA bundle and the server certificate beside the store (a write
    transaction: the CA is made on first use). The bundle is rewritten at each start so that it follows
    the system's CAs."""
    return publish(ctx, store_path, authority(ctx))[0]


def publish(ctx: Ctx, store_path: str, ca):  # noqa: ANN001, ANN201 - a trustme.CA; (Files, trustme.LeafCert)
    """Write `ca`'s certificate, the CA bundle (the system's CAs and `ca`) and a new server certificate signed by
    `ca` beside the store; the files, and that certificate."""
    where = files(store_path)
    ca_pem = ca.cert_pem.bytes()
    write_atomic(where.ca, ca_pem, mode=0o644)
    system = system_cas()
    if not system:
        ctx.warn("No system CA bundle was found: the CA bundle holds the store's CA only.")
    # The system's CAs first, so that pointing a process at the bundle breaks no connection elsewhere.
    bundle = system.rstrip("\n") + "\n\n# mi: the store's own CA\n" + ca_pem.decode() if system else ca_pem.decode()
    write_atomic(where.bundle, bundle.encode(), mode=0o644)
    leaf = server_certificate(ctx, ca)
    write_atomic(where.tls, leaf.private_key_and_cert_chain_pem.bytes(), mode=0o600)
    where.azure_config.mkdir(mode=0o700, exist_ok=True)
    return where, leaf


def ca_certificate(ctx: Ctx) -> str | None:
    """The certificate (PEM) of the CA the store holds now for its default tenant; None while it holds none (a
    store just reset). Only read: what a running server compares its own CA with."""
    tenant = tenancy.default_tenant(ctx, create=False)
    row = ctx.session.get(CertificateAuthority, tenant.id) if tenant is not None else None
    return row.cert_pem if row is not None else None


def server_certificate(ctx: Ctx, ca):  # noqa: ANN001, ANN201 - trustme objects
    """One leaf for every host name the local cloud serves, signed by the store's CA."""
    now = ctx.now()
    return ca.issue_cert(*HOSTS, common_name=next(iter(HOSTS)), organization_name="mi",
                         organization_unit_name="mi local cloud", not_after=now + timedelta(days=LEAF_DAYS))


def host_certificate(ctx: Ctx, ca, host: str):  # noqa: ANN001, ANN201 - a trustme.CA; a trustme.LeafCert
    """A leaf for one host name that the certificate of HOSTS does not name (a federation issuer's), signed by `ca`
    (the store's CA, as the server holds it): what the TLS server presents when a client asks for that name."""
    host = normalise(host)
    return ca.issue_cert(host, common_name=host, organization_name="mi", organization_unit_name="mi local cloud",
                         not_after=ctx.now() + timedelta(days=LEAF_DAYS))


def loopback_certificate(ctx: Ctx, ca=None) -> tuple[bytes, bytes]:  # noqa: ANN001 - a trustme.CA
    """A certificate (PEM) and key for 127.0.0.1, signed by `ca` (default: the store's CA): what a child server
    the local cloud relays to (Azurite) presents."""
    leaf = (ca or authority(ctx)).issue_cert("127.0.0.1", "localhost", common_name="127.0.0.1", organization_name="mi",
                                     organization_unit_name="mi local cloud",
                                     not_after=ctx.now() + timedelta(days=LEAF_DAYS))
    return b"".join(blob.bytes() for blob in leaf.cert_chain_pems), leaf.private_key_pem.bytes()


def _pattern(host: str) -> str | None:
    """The entry of HOSTS that names `host` (a wildcard matches one label, as in a certificate)."""
    if host in HOSTS:
        return host
    label, _, rest = host.partition(".")
    wildcard = f"*.{rest}"
    return wildcard if label and rest and wildcard in HOSTS else None


def normalise(host: str) -> str:
    return host.strip().rstrip(".").casefold()


def issuer_host(ctx: Ctx, host: str) -> bool:
    """Whether the store holds a federation issuer at `host` (any letter case)."""
    return bool(federation.on_host(ctx, normalise(host)))


def claimed(host: str, ctx: Ctx | None = None) -> bool:
    """Whether `host` is one of the names the local cloud answers for (served or refused, never tunnelled): a name
    of HOSTS, or (given the store) the host of a federation issuer while the store holds one there."""
    return _pattern(normalise(host)) is not None or (ctx is not None and issuer_host(ctx, host))


def resource_for_host(ctx: Ctx, host: str) -> Resource | None:
    """The resource a wildcard host names (kv1.vault.azure.net: the vault kv1), case-insensitively."""
    host = normalise(host)
    pattern = _pattern(host)
    type_ = HOSTS.get(pattern) if pattern else None
    if type_ is None or not pattern.startswith("*."):
        return None
    name = host.partition(".")[0]
    return ctx.session.exec(
        select(Resource).where(Resource.name_key == ids.key(name), func.lower(Resource.type) == type_.lower())
    ).first()


def served(ctx: Ctx, host: str) -> bool:
    """Whether a CONNECT to host:443 is answered locally: a fixed name always, a wildcard's name only while
    its resource exists, so that an unknown vault behaves like a host that does not exist; a federation issuer's
    host while the issuer exists."""
    pattern = _pattern(normalise(host))
    if pattern is None:
        return issuer_host(ctx, host)
    return HOSTS[pattern] is None or resource_for_host(ctx, host) is not None


def connect_route(ctx: Ctx, host: str, port: int) -> tuple[str, str]:
    """What the proxy does with CONNECT host:port: ("local", ""), ("refuse", why) or ("tunnel", ""). A federation
    issuer's host is answered here while the store holds the issuer, and tunnelled (to the real host) otherwise."""
    if not claimed(host, ctx):
        return "tunnel", ""
    if port != HTTPS_PORT:
        return "refuse", f"mi serves {normalise(host)} on port {HTTPS_PORT} only."
    if not served(ctx, host):
        host = normalise(host)
        return "refuse", (f"No {HOSTS[_pattern(host)]} named '{host.partition('.')[0]}' in this store: "
                          f"{host} does not exist.")
    return "local", ""


def served_urls(ctx: Ctx) -> list[str]:
    """The https:// addresses the local cloud answers now: each fixed name, each resource a wildcard serves, and
    each federation issuer."""
    urls = []
    for pattern, type_ in HOSTS.items():
        if type_ is None:
            urls.append(f"https://{pattern}")
            continue
        rows = ctx.session.exec(select(Resource.name).where(func.lower(Resource.type) == type_.lower())).all()
        urls += sorted(f"https://{name.casefold()}{pattern[1:]}" for name in rows)
    urls += [issuer.url for issuer in federation.list_all(ctx)]
    return urls
