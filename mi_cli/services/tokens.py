"""Tokens: which identity a request gets, what each token endpoint accepts and answers (IMDS, App Service,
and Entra's own token endpoint: app registrations' client credentials, and a federated assertion exchanged for a
user-assigned identity's token), which resources the tenant issues tokens for, v1 app-only claims, signing, the
token cache, verifying."""

from __future__ import annotations

import base64
import os
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from sqlmodel import select

from mi_cli import ids
from mi_cli.errors import InvalidTokenError, MiError
from mi_cli.models import Application, FederatedCredential, Resource, ServicePrincipal, UserAssignedIdentity
from mi_cli.services import Ctx, apps, endpoints, identities, keys, principals, resources
from mi_cli.services.tenancy import default_tenant
from mi_cli.services.validation import is_guid

# How long a managed-identity token lives, as real ones show it (the lifetime of MI tokens is not
# configurable). Entra stamps iat and nbf five minutes before it issues a token (openid/AppAuth-iOS#264,
# keycloakify/oidc-spa#162) and exp 24 h after: in every recorded IMDS body expires_on - not_before is
# 86,700 (azure-sdk-for-python sdk/identity/azure-identity/tests/recordings/
# test_imds_credential.pyTestImdstest_system_assigned.json: 1643312761 - 1643226061), as in a decoded VM
# token (exp - iat = 86,700, reference/azure-facts.md section 6).
LIFETIME = 24 * 3600  # from issuance to exp
# An app's token from the token endpoint lives an hour: Entra answers client credentials with expires_in and
# ext_expires_in 3599 (the v2 bodies MSAL's tests record, CreateSuccessfulClientCredentialTokenResponseMessage;
# Entra's documented default lifetime of an access token is 60 to 90 minutes, 75 on average).
APP_LIFETIME = 3600
BACKDATE = 300  # iat = nbf = issuance - 5 minutes
# Entra answers a fresh 24 h token with expires_in and ext_expires_in "86399"; IMDS then counts
# expires_in down from expires_on while ext_expires_in stays "86399" (the same recording: expires_in
# "86311", ext_expires_in "86399"; azure-cli's azure/cli/core/adal_authentication.py, the sample in
# MSIAuthenticationWrapper: expires_in "86386", ext_expires_in "86399", expires_on - not_before 86,700).
EXT_EXPIRES_IN = LIFETIME - 1
REFRESH_MARGIN = 300  # MSAL treats a token with under 5 minutes left as expired
MULTIPLE_UA = ("Multiple user assigned identities exist, please specify the clientId / resourceId of the identity "
               "in the token request")
ONE_SELECTOR = "Only one of client_id, object_id and msi_res_id may be given."
# IMDS documents no length limit for `resource`. It becomes the token's `aud`, and tokens travel in an
# Authorization header, which servers cap at 8-16 KB; real resources (app ID URIs, service URLs) are
# well under 300 characters. 2,048, the classic practical URL limit, keeps every real one.
MAX_RESOURCE = 2048
ECHO_LIMIT = 200  # what a log row or an error text repeats of a value someone sent

# IMDS's api-versions (azure-docs instance-metadata-service.md, "Supported API versions"), from 2018-02-01,
# where the identity category begins. Clients send 2018-02-01 (azure-identity, msal, Go, .NET, Node);
# scripts copy 2019-08-01 and newer ones from the docs. A version added to IMDS must be added here.
IMDS_API_VERSIONS = frozenset({
    "2025-04-07", "2024-07-17", "2024-03-15", "2023-11-15", "2023-07-01", "2021-12-13", "2021-11-15", "2021-11-01",
    "2021-10-01", "2021-08-01", "2021-05-01", "2021-03-01", "2021-02-01", "2021-01-01", "2020-12-01", "2020-10-01",
    "2020-09-01", "2020-07-15", "2020-06-01", "2019-11-01", "2019-08-15", "2019-08-01", "2019-06-04", "2019-06-01",
    "2019-04-30", "2019-03-11", "2019-02-01", "2018-10-01", "2018-04-02", "2018-02-01",
})
NEWEST_IMDS_VERSIONS = ["2025-04-07", "2024-07-17", "2024-03-15"]
APP_SERVICE_API_VERSION = "2019-08-01"
APP_SERVICE_REFUSAL = "Unable to load the proper Managed Identity."  # App Service's answer when no identity fits
# ... and its 500 when Entra refuses the token, for a resource the tenant does not know among others (azure-
# functions-host#9884: "Mickey Mouse data" as the resource; MSAL.NET's tests, MockHelpers.GetMsiErrorResponse for
# App Service). The spelling "occured" is App Service's.
APP_SERVICE_FAILURE = "An unexpected error occured while fetching the AAD Token."
ENTRA_ERROR_URI = "https://login.microsoftonline.com/error?code={code}"


def clip(text: Any, limit: int = ECHO_LIMIT) -> str:
    """A value someone sent, bounded for a log row or an error text."""
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit]}...({len(text):,} characters)"


class TokenError(MiError):
    """A token request the identity endpoint refuses: IMDS's `error` code and description, and status.
    `newest_versions` marks IMDS's api-version refusal, whose body lists them instead of a description.
    `body` is Entra's whole error body when Entra refused the token (IMDS passes it on as it is)."""

    def __init__(self, description: str, *, error: str = "invalid_request", status: int = 400,
                 newest_versions: list[str] | None = None, body: dict[str, Any] | None = None) -> None:
        super().__init__(error, description)
        self.status = status
        self.newest_versions = newest_versions
        self.body = body
        self.reason: str | None = None  # why, in mi's words, with what to do: for the log and the CLI, never the body


def entra_refusal(error: str, aadsts: int, text: str, *, status: int = 400, now: Any = None,
                  correlation_id: str | None = None) -> TokenError:
    """Entra's error answer: the OAuth error code, the description (AADSTS code and text, then the trace id,
    correlation id and time), error_codes, timestamp, trace_id, correlation_id and error_uri, as every recorded
    Entra error has them (e.g. azure-cli#22145, AADSTS90002; Microsoft-Teams-apps issues with AADSTS7000215;
    MSAL.NET's MockHelpers for AADSTS500011 through IMDS). The tail follows the text on the same line, separated
    by spaces, as Entra has sent it since about December 2023 (azure-workload-identity#1200, MSAL.NET's 2023-12
    fixtures, haystack-editor#41's verbatim body); older answers had it on lines of its own. The correlation id
    is the client's client-request-id when it sent one, as Entra echoes it."""
    from datetime import datetime, timezone

    when = (now or datetime.now(timezone.utc)).strftime("%Y-%m-%d %H:%M:%SZ")
    trace = str(uuid.uuid4())
    correlation = correlation_id if correlation_id and len(correlation_id) <= 64 and correlation_id.isprintable() \
        else str(uuid.uuid4())
    description = f"AADSTS{aadsts}: {text}"
    body = {"error": error, "error_description": f"{description} Trace ID: {trace} Correlation ID: {correlation} "
                                                f"Timestamp: {when}",
            "error_codes": [aadsts], "timestamp": when, "trace_id": trace, "correlation_id": correlation,
            "error_uri": ENTRA_ERROR_URI.format(code=aadsts)}
    return TokenError(description, error=error, status=status, body=body)


def unknown_resource(resource: str, tenant_name: str, **context: Any) -> TokenError:
    """Entra's refusal of a token for a resource the tenant has no service principal for (every recorded
    AADSTS500011: azure-cli#16850, MSAL.NET#3979 through IMDS, msal_mobile#6)."""
    return entra_refusal("invalid_resource", 500011, f"The resource principal named {clip(resource)} was not found in the "
                         f"tenant named {clip(tenant_name)}. This can happen if the application has not been installed "
                         "by the administrator of the tenant or consented to by any user in the tenant. You might have "
                         "sent your authentication request to the wrong tenant.", **context)


@dataclass(frozen=True)
class TokenEndpoint:
    """What one kind of token endpoint accepts and answers."""

    name: str  # how the activity log names requests to it
    selectors: Mapping[str, str]  # query name -> what it names: client_id, object_id or mi_res_id
    system_only_default: bool  # without a selector: the system identity only, or IMDS's default rules


# IMDS documents msi_res_id; async azure-identity sends resource_id; mi_res_id is App Service's name
# that some scripts send to IMDS too. App Service takes principal_id (Go sends it) for object_id.
IMDS = TokenEndpoint("imds", {"client_id": "client_id", "object_id": "object_id", "msi_res_id": "mi_res_id",
                              "mi_res_id": "mi_res_id", "resource_id": "mi_res_id"},
                     system_only_default=False)
APP_SERVICE = TokenEndpoint("appservice", {"client_id": "client_id", "object_id": "object_id", "principal_id": "object_id",
                                           "mi_res_id": "mi_res_id", "resource_id": "mi_res_id"},
                            system_only_default=True)


@dataclass(frozen=True)
class Chosen:
    kind: str  # SystemAssigned | UserAssigned | Application (an app registration's service principal)
    principal_id: str
    client_id: str
    mirid: str  # xms_mirid: the resource (SA) or the user-assigned identity (UA); "" for an application
    resource_id: str  # the resource that asked; "" for an application


def _claim_id(arm_id: str) -> str:
    # Token claims carry ids with a lowercase resourcegroups segment.
    parts = arm_id.split("/")
    if len(parts) > 3 and parts[3].casefold() == "resourcegroups":
        parts[3] = "resourcegroups"
    return "/".join(parts)


def choose(ctx: Ctx, res: Resource, selector: Mapping[str, str | None] | None = None, *,
           endpoint: TokenEndpoint = IMDS) -> Chosen:
    """Which identity a token request gets, the whole rule.

    `selector` is the request's parameters as the endpoint names them (`endpoint.selectors`; others are
    ignored). At most one may be given, counted by the names sent, so msi_res_id and resource_id
    together are refused although both name a resource id. A selector must name an identity
    attached to this resource (a user-assigned one that was deleted no longer counts), else
    "Identity not found". Without one, IMDS gives the system identity if on, else the only
    user-assigned one, else "Multiple user assigned identities exist ..."; App Service gives the
    system identity only.
    """
    given = [(endpoint.selectors[name], value.strip()) for name, value in (selector or {}).items()
             if name in endpoint.selectors and value]
    if len(given) > 1:
        raise TokenError(ONE_SELECTOR)
    system = None
    if res.system_principal_id:
        sp = principals.get(ctx, res.system_principal_id)
        system = Chosen("SystemAssigned", sp.id, sp.app_id, _claim_id(res.arm_id), res.arm_id)
    attached = identities.attachments(ctx, res)
    users = [Chosen("UserAssigned", a.principal_id, a.client_id, _claim_id(a.identity_id), res.arm_id) for a in attached]
    live = {a.identity_key for a in attached if identities.is_live(ctx, a)}

    def usable(c: Chosen) -> Chosen:
        if c.kind == "UserAssigned" and ids.key(c.mirid) not in live:
            raise TokenError("Identity not found")  # deleted, still referenced (rule 5)
        return c

    if given:
        kind, value = given[0]
        wanted = ids.key(value)
        for c in ([system] if system else []) + users:
            if (kind == "client_id" and c.client_id == wanted) or (kind == "object_id" and c.principal_id == wanted) or (
                kind == "mi_res_id" and c.kind == "UserAssigned" and ids.key(c.mirid) == ids.key(_claim_id(value))
            ):
                return usable(c)
        raise TokenError("Identity not found")
    if system:
        return system
    if endpoint.system_only_default:
        raise TokenError("Identity not found")
    if len(users) == 1:
        return usable(users[0])
    if len(users) > 1:
        raise TokenError(MULTIPLE_UA)
    raise TokenError("Identity not found")


def _opaque(n: int) -> str:
    return base64.urlsafe_b64encode(os.urandom(n)).rstrip(b"=").decode()


@dataclass(frozen=True)
class Issued:
    access_token: str
    claims: dict[str, Any]
    chosen: Chosen
    lifetime: int = LIFETIME
    kid: str = ""  # the signing key's

    @property
    def expires_on(self) -> int:
        return self.claims["exp"]

    @property
    def not_before(self) -> int:
        return self.claims["nbf"]

    def expires_in(self, now: float | None = None) -> int:
        """Whole seconds left at `now` (epoch seconds; without it, when the token was issued), as
        Entra counts them: 86399 for a token just issued, then down to 0."""
        at = self.expires_on - self.lifetime if now is None else int(now)
        return max(self.expires_on - at - 1, 0)


def check_resource(audience: str | None) -> str:
    """The requested resource (the token's `aud`): present, and of a length a resource can have."""
    if not audience or not audience.strip():
        raise TokenError("Required query variable 'resource' is missing")
    if len(audience) > MAX_RESOURCE:
        raise TokenError(f"The resource is {len(audience):,} characters long; no resource has an identifier over "
                         f"{MAX_RESOURCE:,} characters.", error="invalid_resource")
    return audience


def issue(ctx: Ctx, chosen: Chosen, audience: str, *, roles: Sequence[str] = (), lifetime: int = LIFETIME) -> Issued:
    """Sign a v1.0 app-only token with the claims Azure puts in managed-identity tokens, or (an Application)
    in an app's client-credentials token: appidacr "1" (a client secret) and no xms_mirid. `roles` are the
    app roles the principal holds on the audience's resource (the `roles` claim, absent when none)."""
    check_resource(audience)
    tenant = default_tenant(ctx)
    key = keys.active(ctx, tenant)
    return sign(chosen, audience, tenant.id, key, int(ctx.now().timestamp()), roles=roles, lifetime=lifetime)


def sign(chosen: Chosen, audience: str, tenant_id: str, key: Any, now: int, *, roles: Sequence[str] = (),
         lifetime: int = LIFETIME) -> Issued:
    """issue()'s token, signed with `key` (a SigningKey with a certificate) of tenant `tenant_id` at `now` (epoch
    seconds): nothing read from the store."""
    import jwt  # lazily: jwt costs ~9 F at import, and most commands never sign

    issuer = keys.issuer_of(tenant_id)
    application = chosen.kind == "Application"
    claims: dict[str, Any] = {
        "aud": audience,
        "iss": issuer,
        "iat": now - BACKDATE,
        "nbf": now - BACKDATE,
        "exp": now + lifetime,
        "aio": _opaque(48),
        "appid": chosen.client_id,
        "appidacr": "1" if application else "2",
        "idp": issuer,
        "idtyp": "app",
        "oid": chosen.principal_id,
        "rh": f"0.{_opaque(36)}.",
    }
    if roles:
        claims["roles"] = list(roles)
    claims |= {"sub": chosen.principal_id, "tid": tenant_id, "uti": _opaque(16), "ver": "1.0"}
    if not application:
        claims["xms_mirid"] = chosen.mirid
    if chosen.kind == "UserAssigned" and chosen.resource_id:  # a federated assertion's token: no resource asked
        claims["xms_az_rid"] = _claim_id(chosen.resource_id)
    # Header as Entra's v1 tokens: typ, alg, x5t, kid (access-tokens doc, "Validate the signature").
    token = jwt.encode(claims, keys.private_key(key), algorithm="RS256", headers={"typ": "JWT", **keys.token_header(key)})
    return Issued(token, claims, chosen, lifetime, key.kid)


def log_request(ctx: Ctx, res: Resource, audience: str, outcome: Issued | TokenError, *, via: str) -> None:
    """A sign-in record: the caller is the identity that got the token (or the resource that asked)."""
    if isinstance(outcome, Issued):
        ctx.log("Microsoft.ManagedIdentity/token/issue", outcome.chosen.mirid, caller=outcome.chosen.principal_id,
                detail=f"aud={clip(audience)}; via={via}; resource={res.arm_id}")
    else:
        ctx.log("Microsoft.ManagedIdentity/token/issue", res.arm_id, status="Failed", caller=res.name,
                detail=f"aud={clip(audience)}; via={via}; error={outcome.code}: {clip(outcome.message)}"
                       + (f"; reason={clip(outcome.reason, 300)}" if outcome.reason else ""))


# --- a cache like the one behind IMDS: the same token until close to its expiry -------------------


class TokenCache:
    """Tokens by (identity, resource that asked, audience, app roles), the most recently used `size` of them:
    a client asking for ever new audiences must not grow the server without end. The roles are part of the
    key, so that an app role granted or removed shows in the next token at once (Azure's own cache may keep
    the old roles for up to 24 hours; a local tenant is for trying such changes). The identity is all of it
    (kind, object and client id, mirid), so that one made again under old ids with another is not served the
    old one's token; and a token is served only while the key that signed it is the one that signs, so that
    a key rotated or retired, by this process or another sharing the store, signs the next token."""

    def __init__(self, size: int = 4096) -> None:
        self._tokens: OrderedDict[tuple[str, ...], Issued] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    @staticmethod
    def _key(chosen: Chosen, audience: str, roles: Sequence[str] = ()) -> tuple[str, ...]:
        return (chosen.kind, chosen.principal_id, chosen.client_id, chosen.mirid.casefold(), chosen.resource_id.casefold(),
                normalise_audience(audience), *sorted(roles))

    def __len__(self) -> int:
        return len(self._tokens)

    def get(self, chosen: Chosen, audience: str, now: float | None = None, *, roles: Sequence[str] = (),
            kid: str | None = None) -> Issued | None:
        """The cached token, unless it is near its expiry, or (given `kid`, the key that signs now) was signed
        by another key."""
        key = self._key(chosen, audience, roles)
        with self._lock:
            hit = self._tokens.get(key)
            if hit is not None:
                self._tokens.move_to_end(key)
        if hit is None or (kid is not None and hit.kid != kid):
            return None
        if hit.expires_on - (now or time.time()) > REFRESH_MARGIN and hit.claims["aud"] == audience:
            return hit
        return None

    def put(self, issued: Issued) -> None:
        key = self._key(issued.chosen, issued.claims["aud"], issued.claims.get("roles", ()))
        with self._lock:
            self._tokens[key] = issued
            self._tokens.move_to_end(key)
            while len(self._tokens) > self._size:
                self._tokens.popitem(last=False)


# --- a token request, as `mi token get` and both endpoints of `mi serve` make it ------------------


@dataclass(frozen=True)
class Plan:
    """What a token request for an audience gets, as the store says now: the identity, the app roles it holds on
    the audience's resource (None: the tenant knows no such resource), the tenant, and the key that signs (None
    while the tenant has none with a certificate: the next token makes one)."""

    chosen: Chosen
    roles: tuple[str, ...] | None
    tenant_id: str
    tenant_name: str
    key: Any


def plan(ctx: Ctx, res: Resource, audience: str, selector: Mapping[str, str | None] | None = None, *,
         endpoint: TokenEndpoint = IMDS) -> Plan:
    """Everything a token request reads from the store, refused (raised) as `choose` and `check_resource`
    refuse it."""
    chosen = choose(ctx, res, selector, endpoint=endpoint)
    check_resource(audience)
    tenant = default_tenant(ctx)
    resource = apps.resource_principal(ctx, audience)
    roles = tuple(apps.roles_for(ctx, chosen.principal_id, resource)) if resource is not None else None
    signer = keys.active(ctx, tenant, create=False)  # the key that signs now, as the store says
    return Plan(chosen, roles, tenant.id, tenant.display_name,
                signer if signer is not None and keys.has_certificate(signer) else None)


def _selected(selector: Mapping[str, str | None] | None, endpoint: TokenEndpoint) -> tuple[tuple[str, str], ...]:
    """The parameters of a request that `choose` reads, as a key."""
    return tuple((name, value) for name, value in (selector or {}).items() if name in endpoint.selectors and value)


def get_token(ctx: Ctx, res: Resource, audience: str, selector: Mapping[str, str | None] | None = None, *,
              endpoint: TokenEndpoint = IMDS, cache: TokenCache | None = None, bypass_cache: bool = False,
              via: str | None = None, ahead: Any = None) -> Issued | TokenError:
    """The token `res` gets for `audience`: the identity `choose` picks, refused as Entra refuses a resource
    the tenant does not know (AADSTS500011), then the cached token (with a cache, unless bypassed) or a new
    one, with the app roles the identity holds on the resource, which the cache keeps. The outcome is in the
    activity log either way; a refusal is returned rather than raised so that the caller's transaction keeps it.
    A server's ctx keeps what was read (the plan) until the store changes (changes.remember); a server's `ahead`
    (server/signing.Spares) signs the new tokens of requests that bypass the cache."""
    from mi_cli import changes

    via = via or endpoint.name
    cached = None
    try:
        found = changes.remember(ctx, ("token-plan", endpoint.name, ids.key(res.arm_id), audience, _selected(selector, endpoint)),
                                 lambda: plan(ctx, res, audience, selector, endpoint=endpoint), errors=(TokenError,))
        if found.roles is None:
            raise unknown_resource(audience, found.tenant_name, now=ctx.now())
        now = ctx.now().timestamp()
        if cache is not None and not bypass_cache:
            cached = cache.get(found.chosen, audience, now=now, roles=found.roles,
                               kid=found.key.kid if found.key is not None else "")
        if cached is not None:
            issued = cached
        elif found.key is not None:
            signer = ahead.sign if ahead is not None and bypass_cache else sign
            issued = signer(found.chosen, audience, found.tenant_id, found.key, int(now), roles=found.roles)
        else:
            issued = issue(ctx, found.chosen, audience, roles=found.roles)  # makes the tenant's first key
    except TokenError as exc:
        if exc.message in ("Identity not found", MULTIPLE_UA):
            from mi_cli.services.next_steps import why_no_token

            named = any(value for name, value in (selector or {}).items() if name in endpoint.selectors)
            exc.reason = why_no_token(ctx, res, selected=named, system_only=endpoint.system_only_default,
                                      client_id_option="--client-id" if via == "cli" else
                                      "the client_id parameter (AZURE_CLIENT_ID for azure-identity: 'mi env --identity NAME')")
        log_request(ctx, res, audience, exc, via=via)
        return exc
    if cache is not None and cached is None:
        cache.put(issued)
    log_request(ctx, res, audience, issued, via=via + (" (cached)" if cached else ""))
    return issued


def token_body(issued: Issued, *, endpoint: TokenEndpoint = IMDS, now: float | None = None) -> dict[str, str]:
    """The success body of `endpoint`, every value a string as the endpoints send them. `now` is when
    it is served (a cached token has less time left); without it, the token was just issued."""
    if endpoint is APP_SERVICE:
        # api-version 2019-08-01 answers these five, in this order, expires_on in epoch seconds as a
        # string, and no expires_in or not_before (azure-sdk-for-python#11346; azure-docs
        # app-service/overview-managed-identity.md, "REST endpoint reference" sample). azure-identity
        # (through msal's _obtain_token_on_app_service) and msal-node need expires_on, async
        # azure-identity expires_on and resource.
        return {"access_token": issued.access_token, "expires_on": str(issued.expires_on),
                "resource": issued.claims["aud"], "token_type": "Bearer", "client_id": issued.chosen.client_id}
    # IMDS (imds.json IdentityTokenResponse; the order of the recorded bodies)
    return {
        "access_token": issued.access_token,
        "client_id": issued.chosen.client_id,
        "expires_in": str(issued.expires_in(now)),
        "expires_on": str(issued.expires_on),
        "ext_expires_in": str(EXT_EXPIRES_IN),
        "not_before": str(issued.not_before),
        "resource": issued.claims["aud"],
        "token_type": "Bearer",
    }


def _served(ctx: Ctx, outcome: Issued | TokenError, endpoint: TokenEndpoint) -> dict[str, str] | TokenError:
    if isinstance(outcome, TokenError):
        return outcome
    return token_body(outcome, endpoint=endpoint, now=ctx.now().timestamp())


def _imds_query(query: Sequence[tuple[str, str]]) -> dict[str, str]:
    """The parameters of a request to IMDS, each once, with an api-version IMDS knows."""
    params = dict(query)
    if len(params) != len(query):
        raise TokenError("Bad request: a query parameter appears more than once.")
    version = params.get("api-version")
    # The missing version keeps the older docs' wording; the current docs give the second for both.
    if not version:
        raise TokenError("Bad request. api-version was not specified in the request. For more information refer "
                         "to aka.ms/azureimds", newest_versions=NEWEST_IMDS_VERSIONS)
    if version not in IMDS_API_VERSIONS:
        raise TokenError("Bad request. api-version is invalid or was not specified in the request. For more "
                         "information refer to aka.ms/azureimds", newest_versions=NEWEST_IMDS_VERSIONS)
    return params


def imds_info(ctx: Ctx, resource_id: str | None, query: Sequence[tuple[str, str]]) -> dict[str, str] | TokenError:
    """IMDS's GET /metadata/identity/info (Identity_GetInfo in azure-rest-api-specs
    specification/imds/data-plane/InstanceMetadataService/stable/2023-07-01/imds.json, defined since
    2018-04-02): the Metadata header and api-version are required, and the answer is
    {"tenantId": ...}, "the AAD tenantId of the identity of the system assigned managed identity"
    (examples/GetIdentityInfo.json). One store is one tenant, so every resource answers it; a path
    naming no resource in the store is refused as a token request for it would be."""
    try:
        _imds_query(query)
        if resource_id and resources.by_id(ctx, resource_id) is None:
            raise TokenError("Identity not found")
        tenant = default_tenant(ctx, create=False)
        if tenant is None:
            raise TokenError("Identity not found")
    except TokenError as exc:
        return exc
    return {"tenantId": tenant.id}


def _resource(ctx: Ctx, resource_id: str) -> Resource | None:
    """The resource a request speaks for (kept by a server until the store changes)."""
    from mi_cli import changes

    return changes.remember(ctx, ("resource", ids.key(resource_id)), lambda: resources.by_id(ctx, resource_id))


def _resource_for_secret(ctx: Ctx, secret: str) -> Resource | None:
    """The resource whose App Service secret was presented (kept by a server, under the secret's digest, until the
    store changes)."""
    import hashlib

    from mi_cli import changes

    digest = hashlib.sha256(secret.encode(errors="surrogatepass")).digest()
    return changes.remember(ctx, ("endpoint-secret", digest), lambda: endpoints.resource_for_secret(ctx, secret))


def imds_token(ctx: Ctx, resource_id: str | None, query: Sequence[tuple[str, str]], *,
               cache: TokenCache | None = None, ahead: Any = None) -> dict[str, str] | TokenError:
    """A request to IMDS's token endpoint whose headers passed (Metadata: true, not forwarded): the
    query's parameters in order, and the resource the request speaks for. IMDS's body, or its refusal
    (returned, as `get_token` does; refusals before a resource is known are not logged)."""
    try:
        params = _imds_query(query)
        audience = check_resource(params.get("resource"))
        if not resource_id:
            raise TokenError("Identity not found: this server speaks for many resources; put the resource id in the "
                             "path (AZURE_POD_IDENTITY_AUTHORITY_HOST=http://HOST:PORT/<resource id>, see 'mi env').")
        res = _resource(ctx, resource_id)
        if res is None:
            raise TokenError("Identity not found")
    except TokenError as exc:
        return exc
    outcome = get_token(ctx, res, audience, params, endpoint=IMDS, cache=cache,
                        bypass_cache=params.get("bypass_cache") == "true", ahead=ahead)
    return _served(ctx, outcome, IMDS)


def app_service_token(ctx: Ctx, secret: str, query: Sequence[tuple[str, str]], *,
                      cache: TokenCache | None = None) -> dict[str, str] | TokenError:
    """A request to App Service's identity endpoint: the X-IDENTITY-HEADER it presented and its query.
    The resource is the one whose secret was presented. App Service's body, or its refusal, whose
    message says less than the activity log does."""
    params = dict(query)
    try:
        if not secret:
            raise TokenError("The X-IDENTITY-HEADER header is required.")
        if params.get("api-version") != APP_SERVICE_API_VERSION:
            raise TokenError(f"The api-version must be {APP_SERVICE_API_VERSION}.")
        if not params.get("resource"):
            raise TokenError("The resource parameter is required.")
        audience = check_resource(params["resource"])
        res = _resource_for_secret(ctx, secret)
        if res is None:
            raise TokenError("The X-IDENTITY-HEADER does not match any resource's identity endpoint.", status=401)
    except TokenError as exc:
        return exc
    outcome = get_token(ctx, res, audience, params, endpoint=APP_SERVICE, cache=cache)
    if isinstance(outcome, TokenError) and outcome.body is not None:  # Entra refused the token
        return TokenError(APP_SERVICE_FAILURE, error=outcome.code, status=500)
    if isinstance(outcome, TokenError):
        return TokenError(APP_SERVICE_REFUSAL, error=outcome.code)
    return _served(ctx, outcome, APP_SERVICE)


# --- Entra's token endpoint: an app registration's client credentials ---------------------------------

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# Tenants of no one tenant: Entra's aliases that a client names instead of a tenant id.
TENANT_ALIASES = ("common", "organizations")


@dataclass(frozen=True)
class TokenRequest:
    """A POST to /{tenant}/oauth2/v2.0/token (v2) or /{tenant}/oauth2/token (v1): the tenant as the path names it,
    the form's parameters in order, the client's Basic credentials if it sent them (client_secret_basic), and its
    client-request-id (Entra's correlation id)."""

    tenant: str
    form: Sequence[tuple[str, str]]
    v2: bool = True
    basic: tuple[str, str] | None = None
    correlation_id: str | None = None


def resolve_tenant(ctx: Ctx, tenant_ref: str):  # noqa: ANN201 - a Tenant, or None when the name is none of this store's
    tenant = default_tenant(ctx, create=False)
    if tenant is None:
        return None
    return tenant if tenant_ref.strip().casefold() in (tenant.id, *TENANT_ALIASES) else None


def unknown_tenant(tenant_ref: str, **context: Any) -> TokenError:
    """AADSTS90002, as the OpenID metadata and token endpoints answer a tenant that does not exist (azure-cli#22145,
    #23130: the same text on the discovery endpoint)."""
    return entra_refusal("invalid_tenant", 90002, f"Tenant '{clip(tenant_ref)}' not found. Check to make sure you have the "
                         "correct tenant ID and are signing into the correct cloud. Check with your subscription "
                         "administrator, this may happen if there are no active subscriptions for the tenant.", **context)


def _missing(parameter: str, **context: Any) -> TokenError:
    # AADSTS900144 (MicrosoftDocs/azure-docs#43780: 'grant_type'; fredgis/FabricAtlas#3: 'client_id')
    return entra_refusal("invalid_request", 900144, f"The request body must contain the following parameter: '{parameter}'.",
                         **context)


def _scope_resource(params: Mapping[str, str], v2: bool, **context: Any) -> str:
    """The resource a client-credentials request is for: v2's one scope `{resource}/.default`, v1's `resource`."""
    if not v2:
        resource = params.get("resource", "").strip()
        if not resource:
            raise _missing("resource", **context)
        return resource
    scope = params.get("scope", "").strip()
    if not scope:
        raise _missing("scope", **context)
    scopes = scope.split()
    if len(scopes) > 1:  # several resources in one request (chosen: Entra's AADSTS70011 wording for a bad scope)
        raise entra_refusal("invalid_scope", 70011, f"The provided value for the input parameter 'scope' is not valid. The "
                            f"scope {clip(scope)} is not valid.", **context)
    if not scopes[0].endswith("/.default"):
        # AADSTS1002012 (MSAL.NET's MockHelpers, GetMtlsInvalidScopeError1002012)
        raise entra_refusal("invalid_scope", 1002012, f"The provided value for scope {clip(scopes[0])} is not valid. Client "
                            "credential flows must have a scope value with /.default suffixed to the resource identifier "
                            "(application ID URI).", **context)
    return scopes[0][: -len("/.default")]


# --- Entra's token endpoint: a federated assertion for a user-assigned identity -----------------------
# Workload identity federation: a workload presents a JWT from its own issuer (GitHub Actions, a cluster...)
# instead of a secret, and gets the user-assigned identity's token when a federated credential of that identity
# trusts the token's issuer, subject and audience. Checked in the order Entra's codes imply (the research behind
# each text is beside it; "chosen" marks what no real answer showed): the request's parameters, the client, the
# JWT, the issuer among the identity's credentials, then its keys, the signature, the lifetime, the subject and
# the audience, and last the resource, as for a secret.

FEDERATION_DOCS = "https://docs.microsoft.com/en-us/azure/active-directory/develop/workload-identity-federation"
FEDERATION_LEARN = "https://learn.microsoft.com/entra/workload-id/workload-identity-federation"
FEDERATION_CHECK = "Please check your federated identity credential Subject, Audience and Issuer against the presented assertion."
# The algorithms Entra verifies an assertion with (AADSTS5002738's text lists them).
ASSERTION_ALGORITHMS = ("RS256", "RS384", "RS512")
# Clock skew allowed on exp and nbf: Microsoft.IdentityModel's default (TokenValidationParameters.DefaultClockSkew,
# 300 seconds), which Entra's validation is built on (chosen: Entra documents none).
ASSERTION_SKEW = 300
# The longest lifetime Entra accepts in an external token: AADSTS70023, "1.01:00:00" (MicrosoftDocs/azure-docs#116275,
# a Kubernetes service-account token of a year).
ASSERTION_MAX_LIFETIME = 25 * 3600


def _federation_refusal(aadsts: int, text: str, *, error: str = "invalid_client", **context: Any) -> TokenError:
    # invalid_client is Entra's 401, invalid_request and unauthorized_client its 400 (external-secrets#2783 and
    # Agents#202: 401; azure-workload-identity#642 and terraform-provider-azurerm#20623: 400)
    return entra_refusal(error, aadsts, text, status=401 if error == "invalid_client" else 400, **context)


def _entra_time(moment: Any) -> str:
    """A time as AADSTS700024 prints it: seven fractional digits, Z (2024-10-02T22:05:03.6755165Z)."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}0Z"


def asserted(params: Mapping[str, str]) -> bool:
    """Whether a request to the token endpoint authenticates with a client assertion rather than a secret."""
    return bool(params.get("client_assertion") or params.get("client_assertion_type"))


@dataclass(frozen=True)
class FederatedClient:
    """Who a client id names for the assertion grant: a user-assigned identity (the one kind of client that
    holds federated credentials in mi), or another client that holds none (its display name)."""

    identity: UserAssignedIdentity | None
    display_name: str


def federated_client(ctx: Ctx, client_id: str) -> FederatedClient | None:
    """The client an assertion is presented for, by its client id; None when the tenant has no such client."""
    if not is_guid(client_id):
        return None
    wanted = client_id.casefold()
    sp = ctx.session.exec(select(ServicePrincipal).where(ServicePrincipal.app_id == wanted)).first()
    if sp is not None:
        uami = identities.user_assigned_by_id(ctx, sp.mi_resource_id) if sp.is_explicit else None
        if uami is not None and uami.principal_id == sp.id:
            return FederatedClient(uami, uami.name)
        return FederatedClient(None, sp.display_name)  # a system-assigned identity holds no federated credentials
    app = ctx.session.exec(select(Application).where(Application.app_id == wanted)).first()
    return FederatedClient(None, app.display_name) if app is not None else None


def unknown_client(client_id: str, directory: str, **context: Any) -> TokenError:
    # AADSTS700016 (MSAL.NET's MockHelpers, WrongTenantError700016; azure-sdk-for-python#8314; a federated
    # request in terraform-provider-azurerm#20623, 400 unauthorized_client)
    return entra_refusal("unauthorized_client", 700016, f"Application with identifier '{clip(client_id)}' was not "
                         f"found in the directory '{clip(directory)}'. This can happen if the application has not been "
                         "installed by the administrator of the tenant or consented to by any user in the tenant. You "
                         "may have sent your authentication request to the wrong tenant.", **context)


def _single_tenant(client_id: str, display_name: str, **context: Any) -> TokenError:
    # AADSTS50194 (Azure-Samples/active-directory-javascript-singlepageapp-dotnet-webapi-v2#17): mi's app
    # registrations are single-tenant, as `az ad app create` makes them, and so is every managed identity
    return entra_refusal("invalid_request", 50194, f"Application '{client_id}'({clip(display_name)}) is not configured "
                         "as a multi-tenant application. Usage of the /common endpoint is not supported for such "
                         "applications created after '10/15/2018'. Use a tenant-specific endpoint or configure the "
                         "application to be multi-tenant.", **context)


@dataclass(frozen=True)
class Assertion:
    """A client assertion read without trusting it: header, claims, and the claims as Entra compares them."""

    header: dict[str, Any]
    claims: dict[str, Any]
    issuer: str
    subject: str
    audiences: list[str]


def _parse_assertion(text: str, **context: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        return decode(text.strip())
    except InvalidTokenError:
        # AADSTS50027, 400 (az login --federated-token 'not-a-token' prints it; GitLab's docs: "RESPONSE 400 Bad
        # Request"; MSAL.NET's MockHelpers, SendTenantIdInCredentialValueError50027)
        raise _federation_refusal(50027, "JWT token is invalid or malformed.", error="invalid_request", **context) from None


def _read_assertion(header: dict[str, Any], claims: dict[str, Any], **context: Any) -> Assertion:
    """The claims Entra compares, each present and of its type."""
    def number(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    def text(value: Any) -> bool:
        return isinstance(value, str) and value != ""

    present = {"iss": text(claims.get("iss")), "sub": text(claims.get("sub")), "exp": number(claims.get("exp")),
               "aud": text(claims.get("aud")) or (isinstance(claims.get("aud"), list) and bool(claims["aud"])
                                                  and all(text(a) for a in claims["aud"]))}
    for name in ("iss", "sub", "aud", "exp"):
        if not present[name]:
            # AADSTS90014 (MSAL.NET's MockHelpers, BadCredNoIssError90014 and BadCredNoAudError90014; chosen for sub
            # and exp, and for a claim of the wrong type)
            raise _federation_refusal(90014, f"The required field '{name}' is missing from the credential. Ensure that you "
                                      "have all the necessary parameters for the login request.", error="invalid_request",
                                      **context)
    nbf = claims.get("nbf")
    if nbf is not None and not number(nbf):
        raise _federation_refusal(50027, "JWT token is invalid or malformed.", error="invalid_request", **context)
    aud = claims["aud"]
    return Assertion(header, claims, claims["iss"], claims["sub"], aud if isinstance(aud, list) else [aud])


def _thumbprint_shown(header: Mapping[str, Any]) -> str:
    """The key identifier AADSTS7000272 names: the certificate's SHA-1 thumbprint in hex (the header's x5t,
    decoded) as Entra prints it (Azure/azure-workload-identity#1232); the kid as sent when there is no x5t."""
    x5t = header.get("x5t")
    if isinstance(x5t, str):
        try:
            raw = base64.urlsafe_b64decode(x5t + "=" * (-len(x5t) % 4))
        except ValueError:
            raw = b""
        if len(raw) == 20:
            return raw.hex().upper()
    return clip(header.get("kid", ""))


def _verify_signature(assertion_text: str, assertion: Assertion, jwks: list[dict[str, Any]], **context: Any) -> None:
    """The signature, against the issuer's published keys: the key the header's kid names (or its x5t; without
    either, any of them)."""
    import json

    import jwt  # lazily, as in issue()
    from jwt.algorithms import RSAAlgorithm

    kid, x5t = assertion.header.get("kid"), assertion.header.get("x5t")
    rsa = [k for k in jwks if isinstance(k, dict) and k.get("kty") == "RSA" and k.get("use", "sig") == "sig"]
    if isinstance(kid, str):
        candidates = [k for k in rsa if k.get("kid") == kid]
    elif isinstance(x5t, str):
        candidates = [k for k in rsa if k.get("x5t") == x5t]
    else:
        candidates = rsa
    if not candidates:
        # AADSTS7000272, 401 invalid_client (Azure/azure-workload-identity#1232, the whole body)
        raise _federation_refusal(7000272, f"The certificate with identifier {_thumbprint_shown(assertion.header)} used to "
                                  "sign the federated credential could not be found in the metadata of identity provider "
                                  f"{clip(assertion.issuer)}. Please validate that your Identity Provider's metadata "
                                  "exposes the key used to sign the incoming token.", **context)
    for jwk in candidates:
        try:
            key = RSAAlgorithm.from_jwk(json.dumps(jwk))
            jwt.PyJWS().decode(assertion_text.strip(), key, algorithms=[assertion.header["alg"]])
            return
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            continue
    # chosen: no federated case was found; Entra's catalogue (reference-error-codes.md) has AADSTS700027,
    # "Client assertion failed signature validation."
    raise _federation_refusal(700027, "Client assertion failed signature validation.", **context)


def _check_lifetime(ctx: Ctx, assertion: Assertion, **context: Any) -> None:
    from datetime import datetime, timezone

    now = ctx.now()
    exp, nbf, iat = assertion.claims["exp"], assertion.claims.get("nbf"), assertion.claims.get("iat")
    at = now.timestamp()
    if at > exp + ASSERTION_SKEW or (nbf is not None and at + ASSERTION_SKEW < nbf):
        def shown(seconds: float) -> str:
            try:
                return _entra_time(datetime.fromtimestamp(seconds, timezone.utc))
            except (OverflowError, OSError, ValueError):
                return str(seconds)

        # AADSTS700024 (MSAL.NET#4951, msal4j#984; a federated case in dotnet/docker-tools#1310); "valid from"
        # is 1970-01-01 when the assertion has no nbf. A space before the last period, as Entra writes it. One
        # text for expired and not yet valid alike (chosen for nbf: no answer to a future nbf was found).
        raise _federation_refusal(700024, f"Client assertion is not within its valid time range. Current time: "
                                  f"{_entra_time(now)}, assertion valid from {shown(nbf or 0)}, expiry time of "
                                  f"assertion {shown(exp)}. Review the documentation at "
                                  "https://learn.microsoft.com/entra/identity-platform/certificate-credentials .",
                                  **context)
    start = nbf if nbf is not None else iat
    if isinstance(start, (int, float)) and not isinstance(start, bool) and exp - start > ASSERTION_MAX_LIFETIME:
        # AADSTS70023 (MicrosoftDocs/azure-docs#116275; its error and status chosen, as for 700024)
        raise _federation_refusal(70023, "External OIDC Provider token must have a lifetime of less than or equal to "
                                  "1.01:00:00", **context)


def _is_entra_issuer(issuer: str) -> bool:
    from urllib.parse import urlsplit

    from mi_cli.services.federated import ENTRA_ISSUER_HOSTS

    try:
        return (urlsplit(issuer).hostname or "").casefold() in ENTRA_ISSUER_HOSTS
    except ValueError:
        return False


def exchange_assertion(ctx: Ctx, request: TokenRequest, params: Mapping[str, str], client_id: str,
                       context: dict[str, Any]) -> tuple[Issued, FederatedCredential]:
    """The assertion grant, Entra's checks in order, each refusal raised as Entra's error; else the user-assigned
    identity's token for the resource and the credential that matched. The issuer's keys are what mi publishes for
    it (services.federation), as Entra reads them from the issuer's metadata; none for an issuer mi does not hold."""
    from mi_cli.services import federated, federation

    assertion_type = params.get("client_assertion_type", "")
    text = params.get("client_assertion", "")
    if not text:
        # AADSTS7000218, 401 invalid_client (haystack-editor#41, the whole body)
        raise _federation_refusal(7000218, "The request body must contain the following parameter: 'client_assertion' "
                                  "or 'client_secret'.", **context)
    if not assertion_type:
        raise _missing("client_assertion_type", **context)
    if assertion_type != CLIENT_ASSERTION_TYPE:
        # AADSTS90011 (AzureAD/azure-activedirectory-library-for-ruby#53: invalid_request)
        raise _federation_refusal(90011, "Unexpected client assertion type.", error="invalid_request", **context)
    client = federated_client(ctx, client_id)
    if client is None:
        raise unknown_client(client_id, request.tenant, **context)
    header, claims = _parse_assertion(text, **context)
    if client.identity is None:
        # AADSTS70025 with the client's name (users' transcripts of azure/login: "The client 'wolfpacc-github-signing'
        # has no configured federated identity credentials."; its error and status chosen)
        raise _federation_refusal(70025, f"The client '{clip(client.display_name)}' has no configured federated identity "
                                  "credentials.", **context)
    uami = client.identity
    if request.tenant.strip().casefold() in TENANT_ALIASES:
        raise _single_tenant(uami.client_id, uami.name, **context)
    assertion = _read_assertion(header, claims, **context)
    alg = assertion.header.get("alg")
    if alg not in ASSERTION_ALGORITHMS:
        # AADSTS5002738, 401 invalid_client (MSAL.NET's MockHelpers, for HS256)
        raise _federation_refusal(5002738, f"Invalid JWT token. '{clip(alg)}' is not a supported signature algorithm. "
                                  "Supported signing algorithms are: 'RS256,RS384,RS512'", **context)
    if _is_entra_issuer(assertion.issuer):
        # AADSTS700222, 401 invalid_client (AzureAD/microsoft-identity-web#2519)
        raise _federation_refusal(700222, "AAD-issued tokens may not be used for federated identity flows.", **context)
    trusting = federated.with_issuer(federated.list_for(ctx, uami), assertion.issuer)
    if not trusting:
        # AADSTS700211, invalid_client (Azure/azure-workload-identity#1200, the whole body; Azure/login#360)
        raise _federation_refusal(700211, f"No matching federated identity record found for presented assertion issuer "
                                  f"'{clip(assertion.issuer)}'. {FEDERATION_CHECK} {FEDERATION_DOCS}", **context)
    jwks = federation.signing_keys(ctx, assertion.issuer)
    if jwks is None:
        # AADSTS50166, 400 invalid_request: Entra's answer when the issuer's metadata or keys cannot be fetched
        # (Azure/azure-workload-identity#642, the whole body; azure-cli#28863)
        raise _federation_refusal(50166, "Request to External OIDC endpoint failed.", error="invalid_request", **context)
    _verify_signature(text, assertion, jwks, **context)
    _check_lifetime(ctx, assertion, **context)
    fic, case_only = federated.with_subject(trusting, assertion.subject)
    if fic is None and case_only:
        # AADSTS7002138 (Azure/login#515, #497, #573): since August 2024 a subject must match case-sensitively
        raise _federation_refusal(7002138, f"No matching federated identity record found for presented assertion subject "
                                  f"'{clip(assertion.subject)}'. The subject matches with case-insensitive comparison, but "
                                  "not with case-sensitive comparison. Check your federated identity credential Subject, "
                                  "Audience and Issuer against the presented assertion. See documentation at: "
                                  f"{FEDERATION_LEARN}. See breaking change notification and remediation at: "
                                  "https://learn.microsoft.com/en-us/entra/identity-platform/reference-breaking-changes#august-2024.",
                                  **context)
    if fic is None:
        # AADSTS700213 (Azure/azure-workload-identity#1200 comment of 2025-04, dotnet/maui#31978, Azure/login#482):
        # "Check", not "Please check", and learn.microsoft.com
        raise _federation_refusal(700213, f"No matching federated identity record found for presented assertion subject "
                                  f"'{clip(assertion.subject)}'. Check your federated identity credential Subject, "
                                  f"Audience and Issuer against the presented assertion. {FEDERATION_LEARN}", **context)
    if not federated.audience_matches(fic, assertion.audiences):
        # AADSTS700212, invalid_client (AthenZ's AzureAccessTokenProviderTest fixture of 2024-04; GitLab's docs)
        shown = assertion.audiences[0] if len(assertion.audiences) == 1 else ",".join(assertion.audiences)
        raise _federation_refusal(700212, f"No matching federated identity record found for presented assertion audience "
                                  f"'{clip(shown)}'. {FEDERATION_CHECK} {FEDERATION_DOCS}", **context)
    audience = _scope_resource(params, request.v2, **context)
    check_resource(audience)
    resource = apps.resource_principal(ctx, audience)
    if resource is None:
        raise unknown_resource(audience, request.tenant, **context)
    # A managed identity's token lives 24 hours however it was asked for (azure/login's README: "with Managed
    # Identities, it would be 24 hours"; AKS's workload identity overview: "Microsoft Entra tokens expire in 24
    # hours"), and no resource asked for it: no xms_az_rid.
    chosen = Chosen("UserAssigned", uami.principal_id, uami.client_id, _claim_id(uami.arm_id), "")
    return issue(ctx, chosen, audience, roles=apps.roles_for(ctx, uami.principal_id, resource)), fic


def _federated_credentials(ctx: Ctx, request: TokenRequest, params: Mapping[str, str], client_id: str,
                           context: dict[str, Any]) -> Issued | TokenError:
    """The assertion grant with its sign-in record: under the identity's id once the client id names one."""
    outcome: Issued | TokenError
    fic = None
    try:
        _request_checks(ctx, request, params, client_id, context)
        outcome, fic = exchange_assertion(ctx, request, params, client_id, context)
    except TokenError as exc:
        outcome = exc if exc.body is not None else entra_refusal(
            exc.code, 500011 if exc.code == "invalid_resource" else 900144, exc.message, **context)
    client = federated_client(ctx, client_id) if client_id else None
    presented = ""
    try:
        _, claims = decode(params.get("client_assertion", "").strip())
        presented = f"; iss={clip(claims.get('iss'))}; sub={clip(claims.get('sub'))}; aud={clip(claims.get('aud'))}"
    except InvalidTokenError:
        pass
    if isinstance(outcome, Issued):
        ctx.log("Microsoft.ManagedIdentity/token/issue", outcome.chosen.mirid, caller=outcome.chosen.principal_id,
                detail=f"aud={clip(outcome.claims['aud'])}; via=entra; grant=federated; credential={fic.name}{presented}")
    elif client is not None and client.identity is not None:
        ctx.log("Microsoft.ManagedIdentity/token/issue", client.identity.arm_id, status="Failed",
                caller=client.identity.principal_id,
                detail=f"via=entra; grant=federated{presented}; error={outcome.code}: {clip(outcome.message)}")
    else:
        ctx.log("Microsoft.Directory/applications/token/issue", f"/applications/{clip(client_id) or '(no client)'}",
                status="Failed", caller=clip(client_id) or "(no client)",
                detail=f"via=entra; grant=federated{presented}; error={outcome.code}: {clip(outcome.message)}")
    return outcome


def _entra_body(issued: Issued, v2: bool) -> dict[str, Any]:
    expires_in = issued.expires_in()
    if v2:
        return {"token_type": "Bearer", "expires_in": expires_in, "ext_expires_in": expires_in,
                "access_token": issued.access_token}
    # the v1 endpoint's body: every value a string, with the resource and the times (adal's token response)
    return {"token_type": "Bearer", "expires_in": str(expires_in), "ext_expires_in": str(expires_in),
            "expires_on": str(issued.expires_on), "not_before": str(issued.not_before), "resource": issued.claims["aud"],
            "access_token": issued.access_token}


def client_credentials(ctx: Ctx, request: TokenRequest) -> dict[str, Any] | TokenError:
    """Entra's token endpoint for the client credentials grant: the tenant, the grant, the client and how it
    authenticates, then the resource of the scope, each refused with Entra's AADSTS error. An app registration
    with its secret gets a v1.0 app-only token for its service principal; a federated assertion presented for a
    user-assigned identity gets that identity's token (exchange_assertion). Either carries the app roles the
    principal holds on the resource. Every answer is in the activity log."""
    context = {"now": ctx.now(), "correlation_id": request.correlation_id}
    params = dict(request.form)
    client_id = params.get("client_id", "").strip() or (request.basic[0] if request.basic else "")
    if asserted(params):
        outcome = _federated_credentials(ctx, request, params, client_id, context)
        return outcome if isinstance(outcome, TokenError) else _entra_body(outcome, request.v2)
    outcome = _client_credentials(ctx, request, params, client_id, context)
    if isinstance(outcome, TokenError):
        ctx.log("Microsoft.Directory/applications/token/issue", f"/applications/{clip(client_id) or '(no client)'}",
                status="Failed", caller=clip(client_id) or "(no client)",
                detail=f"via=entra; error={outcome.code}: {clip(outcome.message)}")
        return outcome
    issued = outcome
    ctx.log("Microsoft.Directory/applications/token/issue", f"/applications/{issued.chosen.client_id}",
            caller=issued.chosen.principal_id, detail=f"aud={clip(issued.claims['aud'])}; via=entra; grant=client_credentials")
    return _entra_body(issued, request.v2)


def _request_checks(ctx: Ctx, request: TokenRequest, params: Mapping[str, str], client_id: str,
                    context: dict[str, Any]) -> None:
    """What every client credentials request must be, however the client authenticates: for a tenant of this
    store, of the client_credentials grant, naming its client."""
    tenant = resolve_tenant(ctx, request.tenant)
    if tenant is None:
        raise unknown_tenant(request.tenant, **context)
    grant = params.get("grant_type", "").strip()
    if not grant:
        raise _missing("grant_type", **context)
    if grant != "client_credentials":
        # mi signs in no users: the other grants are not served (AADSTS70003's text: MicrosoftDocs/power-platform#1480)
        raise entra_refusal("unsupported_grant_type", 70003, f"The app requested an unsupported grant type "
                            f"'{clip(grant)}'.", **context)
    if not client_id:
        raise _missing("client_id", **context)


def _client_credentials(ctx: Ctx, request: TokenRequest, params: Mapping[str, str], client_id: str,
                        context: dict[str, Any]) -> Issued | TokenError:
    try:
        _request_checks(ctx, request, params, client_id, context)
        app = ctx.session.exec(select(Application).where(Application.app_id == client_id.casefold())).first() \
            if is_guid(client_id) else None
        if app is None:
            raise unknown_client(client_id, request.tenant, **context)
        if request.tenant.strip().casefold() in TENANT_ALIASES:
            raise _single_tenant(app.app_id, app.display_name, **context)
        secret = params.get("client_secret") or (request.basic[1] if request.basic else "")
        if not secret:
            # AADSTS7000216 (MicrosoftDocs/azure-docs#30777)
            raise entra_refusal("invalid_client", 7000216, "'client_assertion', 'client_secret' or 'request' is required "
                                "for the 'client_credentials' grant type.", status=401, **context)
        if not apps.secret_matches(ctx, app, secret):
            # AADSTS7000215, 401 (databricks/databricks-sdk-go#240, OfficeDev/microsoft-365-agents-toolkit#8621)
            raise entra_refusal("invalid_client", 7000215, "Invalid client secret provided. Ensure the secret being sent in "
                                "the request is the client secret value, not the client secret ID, for a secret added to "
                                f"app '{app.app_id}'.", status=401, **context)
        audience = _scope_resource(params, request.v2, **context)
        check_resource(audience)
        resource = apps.resource_principal(ctx, audience)
        if resource is None:
            raise unknown_resource(audience, request.tenant, **context)
        chosen = Chosen("Application", app.service_principal_id, app.app_id, "", "")
        return issue(ctx, chosen, audience, roles=apps.roles_for(ctx, app.service_principal_id, resource),
                     lifetime=APP_LIFETIME)
    except TokenError as exc:
        if exc.body is None:  # check_resource's own refusal: in Entra's shape too
            return entra_refusal(exc.code, 500011 if exc.code == "invalid_resource" else 900144, exc.message, **context)
        return exc


# --- reading tokens ------------------------------------------------------------------------------


def normalise_audience(aud: str) -> str:
    """Audiences compare without a trailing slash and case-insensitively in scheme and host."""
    return aud.strip().rstrip("/").casefold()


def decode(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims, without verifying anything."""
    import jwt  # lazily, as in issue()

    try:
        return jwt.get_unverified_header(token), jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise InvalidTokenError("InvalidToken", f"This is not a JWT: {clip(exc)}.") from None
    except UnicodeError:  # lone surrogates: bytes that were not UTF-8, read with surrogateescape
        raise InvalidTokenError("InvalidToken", "This is not a JWT: the input is not text.") from None


def _audiences(aud: Any) -> list[str]:
    """`aud` is a string, or (RFC 7519) a list of strings."""
    values = aud if isinstance(aud, list) else [aud]
    if not values or not all(isinstance(v, str) for v in values):
        raise InvalidTokenError("InvalidToken", f"The token's audience {clip(aud)!s} is not a string or a list of strings.")
    return values


def verify(ctx: Ctx, token: str, *, audience: str | tuple[str, ...] | None = None) -> dict[str, Any]:
    """Signature (against the published keys), expiry, not-before, issuer and audience (one, or any of
    several: Storage takes https://storage.azure.com and the account's own URL)."""
    import jwt  # lazily, as in issue()

    from mi_cli import changes

    header, claims = decode(token)
    published = changes.remember(ctx, ("published-keys",), lambda: {k.kid: k for k in keys.published(ctx)})
    kid = header.get("kid")
    key = published.get(kid) if isinstance(kid, str) else None
    if key is None:
        raise InvalidTokenError("InvalidToken",
                              f"The token's key '{clip(kid)}' is not published by this tenant (unknown or retired).").failed("key", kid)
    try:
        verified = jwt.decode(
            token,
            keys.private_key(key).public_key(),
            algorithms=["RS256"],
            issuer=f"https://sts.windows.net/{key.tenant_id}/",
            options={"verify_aud": False, "require": ["exp", "nbf", "iat", "iss", "aud"]},
            leeway=0,
            # PyJWT checks time against the wall clock; ctx.now() is the wall clock outside tests
        )
    except jwt.ExpiredSignatureError:
        raise InvalidTokenError("InvalidToken", f"The token expired at {clip(claims.get('exp'))} (epoch seconds).").failed(
            "expired", claims.get("exp")) from None
    except jwt.ImmatureSignatureError:
        raise InvalidTokenError("InvalidToken", "The token is not valid yet (nbf is in the future).").failed(
            "not-yet-valid", claims.get("nbf")) from None
    except jwt.InvalidIssuerError:
        raise InvalidTokenError("InvalidToken", f"The token's issuer '{clip(claims.get('iss'))}' is not this tenant's.").failed(
            "issuer", claims.get("iss")) from None
    except jwt.InvalidSignatureError:
        raise InvalidTokenError("InvalidToken", "The token's signature does not match: it was altered or signed by another key."
                                ).failed("signature") from None
    except jwt.PyJWTError as exc:
        raise InvalidTokenError("InvalidToken", f"The token is not valid: {clip(exc)}.") from None
    given = _audiences(verified["aud"])
    accepted = (audience,) if isinstance(audience, str) else audience
    if accepted is not None and not {normalise_audience(a) for a in accepted} & {normalise_audience(a) for a in given}:
        shown = given[0] if len(given) == 1 else ", ".join(given)
        raise InvalidTokenError("InvalidToken", f"The token's audience '{clip(shown)}' is not '{clip(' or '.join(accepted))}'.").failed(
            "audience", shown)
    return verified


def new_correlation_id() -> str:
    return str(uuid.uuid4())
