"""Simulated external issuers of federated assertions: GitHub Actions, a Kubernetes cluster (AKS's OIDC issuer), or
any https URL. mi keeps each issuer's RSA signing key in the store, publishes its OpenID metadata and keys document
at the issuer's own host name (through the local cloud), and mints assertions with the claims that issuer puts in
its tokens, for a workload to exchange at Entra's token endpoint through a federated identity credential."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from datetime import timedelta
from typing import Any, Mapping
from urllib.parse import unquote, urlsplit

from sqlmodel import select

from mi_cli.errors import ConflictError, NotFoundError, ValidationError, shown
from mi_cli.models import FederationIssuer
from mi_cli.services import Ctx
from mi_cli.services.validation import control_at

KINDS = ("github", "kubernetes", "generic")
DEFAULT_AUDIENCE = "api://AzureADTokenExchange"  # what azure/login asks GitHub for, and AKS's projected token carries
GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
# An issuer is matched against a federated identity credential's issuer, which Azure caps at 600 characters.
MAX_URL = 600
MAX_AUDIENCE = 600
MAX_SUBJECT = 600
MAX_CLAIMS_BYTES = 64 * 1024  # the JSON of the claims a token carries: far beyond any real assertion's
# Lifetimes (seconds). GitHub's tokens: the docs' example lives 5 minutes (exp = iat + 300), the default here; real
# ones seen in 2025 live 6 hours. A Kubernetes projected token: the AKS webhook asks for 3600 s by default (its
# allowed range 3600-86400). Any lifetime from a minute to a day may be asked for; an expired or not yet valid
# assertion is made with --claim exp=... / nbf=....
DEFAULT_LIFETIME = {"github": 300, "kubernetes": 3600, "generic": 3600}
MIN_LIFETIME = 60
MAX_LIFETIME = 86400
GITHUB_NBF_BACKDATE = 300  # real GitHub tokens carry nbf = iat - 300
CERTIFICATE_YEARS = 5
_HOST_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_SUBJECT_SA = re.compile(r"^system:serviceaccount:([^:]+):([^:]+)$")
_PARSED: dict[str, Any] = {}  # parsed private keys, by kid: a PEM is parsed once per process


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class ArgumentError(ValidationError):
    """A value given to an issuer that it cannot take: one line, exit 2, as az's argument errors."""

    service = False
    exit_code = 2


def _bad(message: str) -> ValidationError:
    return ArgumentError("InvalidArgumentValue", message)


# -- issuer URLs ------------------------------------------------------------------------------------------------------

def check_url(url: str) -> tuple[str, str]:
    """(url exactly as given, its host lowercase): an https URL with a DNS host name, no port, user, query or
    fragment, at most MAX_URL characters. Nothing is normalised: Entra compares the issuer byte for byte, so a
    trailing slash is part of it."""
    if url is None or not url.strip():
        raise _bad("The issuer URL must not be empty.")
    if len(url) > MAX_URL:
        raise _bad(f"The issuer URL is {len(url):,} characters long; an issuer has at most {MAX_URL}.")
    if control_at(url) >= 0 or any(c.isspace() for c in url):
        raise _bad(f"The issuer URL '{shown(url)}' contains white space or a control character.")
    if not url.startswith("https://"):
        raise _bad(f"The issuer URL '{shown(url)}' must be an https URL (https://HOST[/PATH]).")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise _bad(f"The issuer URL '{shown(url)}' is not a valid URL.") from None
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise _bad(f"The issuer URL '{shown(url)}' must not have a query or a fragment.")
    if parts.username is not None or "@" in parts.netloc:
        raise _bad(f"The issuer URL '{shown(url)}' must not carry a user name.")
    if port is not None or parts.netloc.endswith(":"):
        raise _bad(f"The issuer URL '{shown(url)}' must not name a port: mi serves issuers on port 443.")
    host = (parts.hostname or "").casefold()
    labels = host.split(".")
    if len(host) > 253 or len(labels) < 2 or not all(_HOST_LABEL.match(label) for label in labels) \
            or labels[-1].isdigit():
        raise _bad(f"The issuer URL '{shown(url)}' must name a DNS host (as token.actions.githubusercontent.com).")
    return url, host


def infer_kind(url: str) -> str:
    """github for GitHub Actions' issuer (and GitHub Enterprise Server's https://HOST/_services/token), kubernetes for
    AKS's OIDC issuers (https://REGION.oic.prod-aks.azure.com/TENANT/GUID/, the older https://oidc.prod-aks.azure.com/
    GUID/), generic for any other URL."""
    parts = urlsplit(url)
    host = (parts.hostname or "").casefold()
    if host == "token.actions.githubusercontent.com" or parts.path.rstrip("/").endswith("/_services/token"):
        return "github"
    if host.endswith(".oic.prod-aks.azure.com") or host == "oidc.prod-aks.azure.com":
        return "kubernetes"
    return "generic"


def _base_path(url: str) -> str:
    """The issuer's path without its trailing slash: where its documents are published under."""
    return urlsplit(url).path.rstrip("/")


def discovery_path(url: str) -> str:
    return f"{_base_path(url)}/.well-known/openid-configuration"


def jwks_path(url: str, kind: str) -> str:
    """GitHub publishes its keys at /.well-known/jwks, Kubernetes (and AKS) at /openid/v1/jwks."""
    return f"{_base_path(url)}/openid/v1/jwks" if kind == "kubernetes" else f"{_base_path(url)}/.well-known/jwks"


def jwks_uri(issuer: FederationIssuer) -> str:
    return f"https://{issuer.host}{jwks_path(issuer.url, issuer.kind)}"


def _host_taken(host: str) -> bool:
    # imported here: localcloud imports this module for the issuers' host names
    from mi_cli.services import localcloud

    for pattern in localcloud.HOSTS:
        base = pattern[2:] if pattern.startswith("*.") else pattern
        if host == base or host.endswith("." + base):
            return True
    return False


# -- the store --------------------------------------------------------------------------------------------------------

def get(ctx: Ctx, url: str) -> FederationIssuer | None:
    """The issuer with exactly this URL, or None."""
    return ctx.session.exec(select(FederationIssuer).where(FederationIssuer.url == url)).first()


def require(ctx: Ctx, url: str) -> FederationIssuer:
    issuer = get(ctx, url)
    if issuer is None:
        raise NotFoundError("IssuerNotFound", f"No issuer '{shown(url)}' in this store. See 'mi federation issuer list'.")
    return issuer


def list_all(ctx: Ctx) -> list[FederationIssuer]:
    return list(ctx.session.exec(select(FederationIssuer).order_by(FederationIssuer.created_at, FederationIssuer.id)).all())


def on_host(ctx: Ctx, host: str) -> list[FederationIssuer]:
    """The issuers published at `host` (any letter case), oldest first."""
    host = host.strip().rstrip(".").casefold()
    return list(ctx.session.exec(select(FederationIssuer).where(FederationIssuer.host == host)
                                 .order_by(FederationIssuer.created_at, FederationIssuer.id)).all())


def _new_key(ctx: Ctx, url: str, kind: str) -> tuple[str, str, dict[str, Any]]:
    """(kid, private PEM, published JWK) of a new RS256 key. GitHub's keys come with a self-signed certificate
    (x5c, x5t; kid = x5t, as mi's own keys); a Kubernetes cluster publishes kty, use, kid, alg, n and e only, its kid
    the base64url SHA-256 of the public key's DER (as the API server computes it)."""
    # imported lazily, as in keys.py: most commands sign nothing
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID
    from jwt.algorithms import RSAAlgorithm

    from mi_cli.services.keys import certificate_thumbprint

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_jwk = json.loads(RSAAlgorithm.to_jwk(private.public_key()))
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    if kind == "kubernetes":
        spki = private.public_key().public_bytes(serialization.Encoding.DER,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)
        kid = _b64url(hashlib.sha256(spki).digest())
        jwk = {"use": "sig", "kty": "RSA", "kid": kid, "alg": "RS256", "n": rsa_jwk["n"], "e": rsa_jwk["e"]}
    else:
        now = ctx.now()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"mi federation issuer {urlsplit(url).hostname}")])
        certificate = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(private.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + timedelta(days=365 * CERTIFICATE_YEARS + 1))
            .sign(private, hashes.SHA256())
        )
        der = certificate.public_bytes(serialization.Encoding.DER)
        kid = certificate_thumbprint(der)
        jwk = {"kty": "RSA", "alg": "RS256", "use": "sig", "kid": kid, "n": rsa_jwk["n"], "e": rsa_jwk["e"],
               "x5c": [base64.b64encode(der).decode()], "x5t": kid}
    _PARSED[kid] = private
    return kid, pem, jwk


def create(ctx: Ctx, url: str, kind: str | None = None) -> FederationIssuer:
    """The issuer at `url` (kept exactly), made with its own signing key; `kind` inferred from the URL when not
    given. Creating one that exists returns it (the same kind, or none, asked for); another kind is refused, as
    are a URL that the local cloud already answers for (Azure's own hosts) and one that differs from an existing
    issuer only by a trailing slash or the host's letter case (both would publish at the same address)."""
    url, host = check_url(url)
    if kind is not None and kind not in KINDS:
        raise _bad(f"The issuer kind '{shown(kind)}' is not one of {', '.join(KINDS)}.")
    existing = get(ctx, url)
    if existing is not None:
        if kind is not None and kind != existing.kind:
            raise ConflictError("IssuerExists", f"The issuer '{shown(url)}' exists with kind '{existing.kind}'; "
                                                "delete it first to make it another kind.")
        return existing
    if _host_taken(host):
        raise _bad(f"The issuer URL '{shown(url)}' names a host of Azure's that the local cloud serves itself.")
    for other in on_host(ctx, host):
        if discovery_path(other.url) == discovery_path(url):
            raise ConflictError("IssuerConflict", f"The issuer '{shown(other.url)}' publishes its metadata at the same "
                                                  f"address as '{shown(url)}' would; delete it first.")
    kind = kind or infer_kind(url)
    kid, pem, jwk = _new_key(ctx, url, kind)
    issuer = FederationIssuer(url=url, host=host, kind=kind, kid=kid, private_pem=pem, public_jwk=jwk,
                              created_at=ctx.now())
    ctx.session.add(issuer)
    ctx.session.flush()
    ctx.log("Microsoft.ManagedIdentity/federationIssuers/write", url, detail=kind)
    return issuer


def ensure(ctx: Ctx, url: str) -> FederationIssuer:
    """The issuer at `url`, created (its kind inferred) on first use."""
    return get(ctx, url) or create(ctx, url)


def delete(ctx: Ctx, url: str) -> FederationIssuer:
    issuer = require(ctx, url)
    ctx.session.delete(issuer)
    ctx.session.flush()
    _PARSED.pop(issuer.kid, None)
    ctx.log("Microsoft.ManagedIdentity/federationIssuers/delete", issuer.url)
    return issuer


def view(issuer: FederationIssuer) -> dict[str, Any]:
    """What may be shown of an issuer: never its private key."""
    return {
        "createdAt": issuer.created_at.isoformat(),
        "issuer": issuer.url,
        "jwksUri": jwks_uri(issuer),
        "kid": issuer.kid,
        "kind": issuer.kind,
        "openidConfiguration": f"https://{issuer.host}{discovery_path(issuer.url)}",
    }


# -- what an issuer publishes -----------------------------------------------------------------------------------------

# GitHub Actions' discovery document (token.actions.githubusercontent.com/.well-known/openid-configuration): its
# members and claims_supported, in GitHub's order.
GITHUB_CLAIMS_SUPPORTED = [
    "sub", "aud", "exp", "iat", "iss", "jti", "nbf", "ref", "sha", "repository", "repository_id", "repository_owner",
    "repository_owner_id", "enterprise", "enterprise_id", "run_id", "run_number", "run_attempt", "actor", "actor_id",
    "workflow", "workflow_ref", "workflow_sha", "head_ref", "base_ref", "event_name", "ref_type", "ref_protected",
    "environment", "environment_node_id", "job_workflow_ref", "job_workflow_sha", "repository_visibility",
    "runner_environment", "issuer_scope",
]


def openid_configuration(issuer: FederationIssuer) -> dict[str, Any]:
    """The issuer's discovery document. GitHub's has claims_supported and scopes_supported; a Kubernetes API server's
    (and AKS's) has issuer, jwks_uri, response_types_supported, subject_types_supported and
    id_token_signing_alg_values_supported only."""
    if issuer.kind == "github":
        return {"issuer": issuer.url, "jwks_uri": jwks_uri(issuer), "subject_types_supported": ["public", "pairwise"],
                "response_types_supported": ["id_token"], "claims_supported": GITHUB_CLAIMS_SUPPORTED,
                "id_token_signing_alg_values_supported": ["RS256"], "scopes_supported": ["openid"]}
    if issuer.kind == "kubernetes":
        return {"issuer": issuer.url, "jwks_uri": jwks_uri(issuer), "response_types_supported": ["id_token"],
                "subject_types_supported": ["public"], "id_token_signing_alg_values_supported": ["RS256"]}
    return {"issuer": issuer.url, "jwks_uri": jwks_uri(issuer), "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"], "id_token_signing_alg_values_supported": ["RS256"],
            "claims_supported": ["aud", "exp", "iat", "iss", "jti", "nbf", "sub"]}


def jwks(issuer: FederationIssuer) -> dict[str, list[dict[str, Any]]]:
    return {"keys": [dict(issuer.public_jwk)]}


def signing_keys(ctx: Ctx, issuer_url: str) -> list[dict[str, Any]] | None:
    """The keys (JWKs) that the issuer at exactly `issuer_url` publishes in its keys document, as Entra would read
    them by following the issuer's openid-configuration to its jwks_uri: a list of dicts with kty "RSA", use "sig",
    kid, alg "RS256", n and e (GitHub-style and generic issuers also x5c and x5t, equal to kid). None when mi holds no
    issuer with that exact URL (a trailing slash counts): Entra's case of an issuer it cannot reach."""
    issuer = get(ctx, issuer_url)
    return None if issuer is None else jwks(issuer)["keys"]


def _private_key(issuer: FederationIssuer):  # noqa: ANN202 - an RSAPrivateKey
    parsed = _PARSED.get(issuer.kid)
    if parsed is None:
        from cryptography.hazmat.primitives import serialization  # lazily, as in _new_key

        parsed = _PARSED[issuer.kid] = serialization.load_pem_private_key(issuer.private_pem.encode(), password=None)
    return parsed


# -- minting ----------------------------------------------------------------------------------------------------------

def parse_claim(text: str) -> tuple[str, Any]:
    """One --claim NAME=VALUE: the value parsed as JSON when it parses (a number, true, an object, a quoted string),
    else taken as a string."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise _bad(f"--claim '{shown(text)}' is not NAME=VALUE.")
    if control_at(name) >= 0:
        raise _bad(f"The claim name '{shown(name)}' contains a control character.")
    try:
        return name, json.loads(value)
    except ValueError:
        return name, value


def _check_text(what: str, value: str, limit: int) -> str:
    if value is None or not value.strip():
        raise _bad(f"The {what} must not be empty.")
    if len(value) > limit:
        raise _bad(f"The {what} is {len(value):,} characters long; at most {limit} are allowed.")
    if control_at(value) >= 0:
        raise _bad(f"The {what} '{shown(value)}' contains a control character.")
    return value


def check_lifetime(lifetime: int | None, kind: str) -> int:
    if lifetime is None:
        return DEFAULT_LIFETIME[kind]
    if isinstance(lifetime, bool) or not isinstance(lifetime, int) or not MIN_LIFETIME <= lifetime <= MAX_LIFETIME:
        raise _bad(f"The lifetime {shown(lifetime)} is out of range: from {MIN_LIFETIME} to {MAX_LIFETIME} seconds.")
    return lifetime


def _number(seed: str, digits: int) -> str:
    """A stable decimal id from `seed` (GitHub's numeric ids, as the strings GitHub sends)."""
    value = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big")
    return str(10 ** (digits - 1) + value % (9 * 10 ** (digits - 1)))


def _github_claims(issuer: FederationIssuer, subject: str, audience: str, jti: str, now: int, lifetime: int
                   ) -> dict[str, Any]:
    """GitHub Actions' claims, in the order of GitHub's documented example. The repository, its owner (and their
    ids in the immutable form repo:OWNER@ID/REPO@ID), the ref and the environment come from a subject of GitHub's
    forms (repo:OWNER/REPO:ref:refs/heads/BRANCH, :ref:refs/tags/TAG, :environment:NAME, :pull_request; %3A stands
    for ':'); others from a sample repository. Numeric ids are strings, as GitHub sends them."""
    repository, owner, owner_id, repo_id = "octo-org/octo-repo", "octo-org", "", ""
    ref, ref_type, event, environment, head_ref, base_ref = "refs/heads/main", "branch", "push", None, "", ""
    fields = subject.split(":")
    if len(fields) >= 3 and fields[0] == "repo" and "/" in fields[1]:
        owner_part, _, repo_part = fields[1].partition("/")
        owner, _, owner_id = owner_part.partition("@")
        repo_name, _, repo_id = repo_part.partition("@")
        owner, repo_name = unquote(owner), unquote(repo_name)
        repository = f"{owner}/{repo_name}"
        context, value = fields[2], unquote(":".join(fields[3:]))
        if context == "ref" and value.startswith("refs/"):
            ref = value
            ref_type = "tag" if value.startswith("refs/tags/") else "branch"
        elif context == "environment" and value:
            environment = value
        elif context == "pull_request":
            ref, event, head_ref, base_ref = "refs/pull/1/merge", "pull_request", "feature", "main"
    owner_id = owner_id if owner_id.isdigit() else _number(f"owner:{owner}", 8)
    repo_id = repo_id if repo_id.isdigit() else _number(f"repo:{repository}", 9)
    digest = hashlib.sha1(jti.encode()).hexdigest()  # noqa: S324 - a commit sha's shape, not security
    workflow_ref = f"{repository}/.github/workflows/deploy.yml@{ref}"
    claims: dict[str, Any] = {"jti": jti, "sub": subject}
    if environment is not None:
        claims["environment"] = environment
    claims.update({
        "aud": audience, "ref": ref, "sha": digest, "repository": repository, "repository_owner": owner,
        "actor_id": _number(f"actor:{owner}", 8), "repository_visibility": "private", "repository_id": repo_id,
        "repository_owner_id": owner_id, "run_id": _number(f"run:{jti}", 10), "run_number": "1", "run_attempt": "1",
        "runner_environment": "github-hosted", "actor": owner, "workflow": "deploy", "head_ref": head_ref,
        "base_ref": base_ref, "event_name": event, "ref_protected": "false", "ref_type": ref_type,
        "workflow_ref": workflow_ref, "workflow_sha": digest, "job_workflow_ref": workflow_ref,
        "job_workflow_sha": digest, "iss": issuer.url, "nbf": now - GITHUB_NBF_BACKDATE, "exp": now + lifetime,
        "iat": now,
    })
    return claims


def _kubernetes_claims(issuer: FederationIssuer, subject: str, audience: str, jti: str, now: int, lifetime: int
                       ) -> dict[str, Any]:
    """A projected service account token's claims (Kubernetes' pkg/serviceaccount/claims.go, as AKS's webhook has them
    mounted): aud an array, iat = nbf, the private kubernetes.io claim with the namespace, the service account and
    the pod it is bound to. The service account's and pod's uids are stable for the issuer, namespace and name."""
    match = _SUBJECT_SA.match(subject)
    if match is None:
        raise _bad(f"A Kubernetes issuer's subject is system:serviceaccount:NAMESPACE:NAME, not '{shown(subject)}'.")
    namespace, name = match.groups()
    seed = f"{issuer.url}\n{namespace}\n{name}"
    pod_hash = hashlib.sha256(f"pod\n{seed}".encode()).hexdigest()
    return {
        "aud": [audience], "exp": now + lifetime, "iat": now, "iss": issuer.url, "jti": jti,
        "kubernetes.io": {
            "namespace": namespace,
            "pod": {"name": f"{name[:40]}-{pod_hash[:10]}-{pod_hash[10:15]}",
                    "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"pod\n{seed}"))},
            "serviceaccount": {"name": name, "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"serviceaccount\n{seed}"))},
        },
        "nbf": now, "sub": subject,
    }


def _generic_claims(issuer: FederationIssuer, subject: str, audience: str, jti: str, now: int, lifetime: int
                    ) -> dict[str, Any]:
    return {"iss": issuer.url, "sub": subject, "aud": audience, "jti": jti, "iat": now, "nbf": now,
            "exp": now + lifetime}


_CLAIMS = {"github": _github_claims, "kubernetes": _kubernetes_claims, "generic": _generic_claims}


def header(issuer: FederationIssuer) -> dict[str, Any]:
    """The JWT header beyond alg: GitHub's has typ JWT, kid and x5t; a Kubernetes token's kid only (no typ)."""
    if issuer.kind == "kubernetes":
        return {"kid": issuer.kid, "typ": None}
    return {"kid": issuer.kid, "x5t": issuer.public_jwk.get("x5t", issuer.kid), "typ": "JWT"}


def claims_for(ctx: Ctx, issuer: FederationIssuer, subject: str, audience: str = DEFAULT_AUDIENCE,
               claims: Mapping[str, Any] | None = None, lifetime: int | None = None) -> dict[str, Any]:
    """The claims an assertion of `issuer` carries for `subject` and `audience`, `claims` replacing or adding
    top-level ones (any of them, iss, exp and nbf included: that is how a mismatched or expired assertion is made)."""
    subject = _check_text("subject", subject, MAX_SUBJECT)
    audience = _check_text("audience", DEFAULT_AUDIENCE if audience is None else audience, MAX_AUDIENCE)
    lifetime = check_lifetime(lifetime, issuer.kind)
    now = int(ctx.now().timestamp())
    payload = _CLAIMS[issuer.kind](issuer, subject, audience, ctx.new_guid(), now, lifetime)
    for name, value in (claims or {}).items():
        if not isinstance(name, str) or not name.strip():
            raise _bad("A claim name must not be empty.")
        payload[name] = value
    try:
        size = len(json.dumps(payload, separators=(",", ":")))
    except (TypeError, ValueError):
        raise _bad("A claim's value is not JSON.") from None
    if size > MAX_CLAIMS_BYTES:
        raise _bad(f"The claims are {size:,} bytes of JSON; an assertion may carry at most {MAX_CLAIMS_BYTES:,}.")
    return payload


def mint(ctx: Ctx, issuer_url: str, subject: str, audience: str | None = DEFAULT_AUDIENCE,
         claims: Mapping[str, Any] | None = None, lifetime: int | None = None) -> str:
    """A signed assertion (a compact RS256 JWT) from the issuer at exactly `issuer_url`, as that issuer would issue it
    to a workload: the issuer is created on first use (its kind inferred from the URL; a write, logged), then its
    claims for `subject` and `audience` (None: api://AzureADTokenExchange) are made, `claims` replacing or adding
    top-level claims, exp = iat + `lifetime` seconds (None: the kind's default, 300 for GitHub, 3600 otherwise; from
    60 to 86400). The header has alg RS256 and the kid of the key `signing_keys` publishes. Bad input raises
    ValidationError (InvalidArgumentValue), with nothing stored."""
    import jwt  # lazily: jwt costs at import, and most commands never sign

    issuer = get(ctx, issuer_url)
    if issuer is None:
        check_url(issuer_url)
        # check everything before anything is stored: a refused token leaves no issuer behind
        kind = infer_kind(issuer_url)
        _check_text("subject", subject, MAX_SUBJECT)
        check_lifetime(lifetime, kind)
        if kind == "kubernetes" and _SUBJECT_SA.match(subject) is None:
            raise _bad(f"A Kubernetes issuer's subject is system:serviceaccount:NAMESPACE:NAME, not '{shown(subject)}'.")
        _check_text("audience", DEFAULT_AUDIENCE if audience is None else audience, MAX_AUDIENCE)
        issuer = create(ctx, issuer_url)
    payload = claims_for(ctx, issuer, subject, audience, claims, lifetime)
    return jwt.encode(payload, _private_key(issuer), algorithm="RS256", headers=header(issuer))
