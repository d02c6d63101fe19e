"""The TLS server's certificates: the local cloud's hosts, and each federation issuer's host (a leaf of its own,
made when a client first names it), all signed by the CA the store holds, followed when another process replaces it."""

from __future__ import annotations

import ssl
import sys
import threading
from typing import Any

from mi_cli.services import Ctx, localcloud


def _context(leaf: Any) -> ssl.SSLContext:  # a trustme.LeafCert
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    leaf.configure_cert(context)
    return context


class Certificates:
    """What the TLS server presents. It starts with the context the server loaded (the certificate `mi serve` wrote
    at start) and the CA that signed it. The store's CA is replaced when the store is emptied (`mi reset`) and a
    new one made, by any process sharing the store: a server that went on presenting leaves of the old CA would
    be refused by every client given the new one (the bundle is rewritten by the process that makes it). So the
    proxy hands `follow` the CA the store holds before each tunnel to this server; when it is another, new leaves
    are issued from it, the CA files beside the store rewritten, and every handshake from then on presents them."""

    def __init__(self, store: Any, files_at: str, ca: Any, ca_pem: str | None) -> None:  # a Store; a trustme.CA
        self.store = store
        self.files_at = files_at
        self.ca = ca  # signs the leaves of issuers' hosts
        self.ca_pem = ca_pem  # its certificate as the store keeps it
        self.server: ssl.SSLContext | None = None  # the local cloud's hosts, once followed (None: the server's own)
        self.issuers: dict[str, ssl.SSLContext] = {}  # by host name, made with self.ca
        self.lock = threading.Lock()  # guards the fields above
        self.following = threading.Lock()  # one renewal at a time

    def follow(self, ca_pem: str | None) -> None:
        """`ca_pem`: the CA certificate the store holds now (None while it holds none: a store just emptied keeps
        being served with the CA this server has until a new one is made)."""
        if ca_pem is None or ca_pem == self.ca_pem:
            return
        with self.following:
            if ca_pem == self.ca_pem:  # another request followed it meanwhile
                return
            with self.store.transaction(write=False) as session:
                ctx = Ctx.from_env(session)
                ca = localcloud.authority(ctx, create=False)
                if ca is None:
                    return
                current = localcloud.ca_certificate(ctx)
                _, leaf = localcloud.publish(ctx, self.files_at, ca)
            server = _context(leaf)
            with self.lock:
                self.ca, self.ca_pem, self.server, self.issuers = ca, current, server, {}
        print("mi serve: the store's CA was replaced (by another process); the local cloud now presents certificates "
              f"of the new one, and {localcloud.files(self.files_at).bundle} holds it.", file=sys.stderr, flush=True)

    def context_for(self, host: str) -> ssl.SSLContext | None:
        """A server context presenting a leaf for `host`, when the store holds an issuer there; None otherwise (the
        default certificate is presented, which does not name it)."""
        with self.lock:
            made, ca = self.issuers.get(host), self.ca
        if made is not None:
            return made
        with self.store.transaction(write=False) as session:
            ctx = Ctx.from_env(session)
            if not localcloud.issuer_host(ctx, host):
                return None
            leaf = localcloud.host_certificate(ctx, ca, host)
        context = _context(leaf)
        with self.lock:
            if self.ca is not ca:  # the CA was followed meanwhile: this leaf is of the old one
                return None
            return self.issuers.setdefault(host, context)

    def sni(self, connection: Any, server_name: str | None, _context: ssl.SSLContext) -> None:
        """The TLS server's SNI callback: a name of the local cloud keeps the server's certificate (or the one issued
        since the CA was followed); an issuer's host gets its own leaf. A failure here (the store unreadable) leaves
        the default certificate, which the client then refuses."""
        host = localcloud.normalise(server_name) if server_name else ""
        if not host or localcloud.claimed(host):
            with self.lock:
                server = self.server
            if server is not None:
                connection.context = server
            return None
        try:
            context = self.context_for(host)
        except Exception as exc:  # noqa: BLE001 - a handshake must not take the server down
            print(f"mi serve: TLS: no certificate for {host[:100]}: {type(exc).__name__}.", file=sys.stderr, flush=True)
            return None
        if context is not None:
            connection.context = context
        return None


def serve_certificates(context: ssl.SSLContext, store: Any, files_at: str, ca: Any, ca_pem: str | None) -> Certificates:
    """Make the TLS server's `context` present, for each federation issuer's host, a leaf naming that host, and
    follow the store's CA (`ca`, whose certificate the store holds as `ca_pem`, signed the one it loaded)."""
    certificates = Certificates(store, files_at, ca, ca_pem)
    context.sni_callback = certificates.sni
    return certificates
