"""Federated identity credentials on user-assigned identities, with Azure's limits and texts."""

from __future__ import annotations

import re
import shlex
from typing import Callable

from sqlmodel import select

from mi_cli import ids
from mi_cli.errors import ConflictError, NotFoundError, ValidationError, resource_not_found
from mi_cli.models import FederatedCredential, ResourceGroup, UserAssignedIdentity
from mi_cli.services import Ctx, identities
from mi_cli.services.validation import fic_name, no_control

MAX_PER_IDENTITY = 20
MAX_FIELD = 600
DEFAULT_AUDIENCE = "api://AzureADTokenExchange"


def resolve_identity(ctx: Ctx, group: ResourceGroup, ref: str) -> UserAssignedIdentity:
    """The parent: a user-assigned identity by name or id. A system identity id is refused."""
    ref = ref.strip()
    if ids.is_system_identity_id(ref):
        raise ValidationError(
            "BadRequest",
            "Configuring a federated identity credential on a system-assigned managed identity isn't supported.",
        )
    if ref.startswith("/"):
        uami = identities.user_assigned_by_id(ctx, ref)
        if uami is None:
            from mi_cli.services import next_steps

            raise NotFoundError("ParentResourceNotFound", "The parent user-assigned identity doesn't exist.",
                                next_step=next_steps.missing_by_id("identity", ids.parse(ref)))
        return uami
    try:
        return identities.get_user_assigned(ctx, group, ref)
    except NotFoundError:
        from mi_cli.services import next_steps

        raise NotFoundError("ParentResourceNotFound", "The parent user-assigned identity doesn't exist.",
                            next_step=next_steps.missing_identity(ctx, group, ref)) from None


def _check_field(name: str, value: str) -> str:
    value = value.strip()
    if not value:
        raise ValidationError("BadRequest", f"The federated identity credential {name} must not be empty.")
    if len(value) > MAX_FIELD:
        raise ValidationError("BadRequest", f"The federated identity credential {name} exceeds {MAX_FIELD} characters.")
    if "*" in value:
        raise ValidationError("BadRequest", "Wildcard characters aren't supported in any federated identity credential property value.")
    return no_control(value, what=f"federated identity credential {name}", code="BadRequest")


def validate(name: str, issuer: str, subject: str, audiences: list[str] | None) -> tuple[str, str, list[str]]:
    """Azure's rules for one credential: name, an https issuer, a subject, exactly one audience."""
    fic_name(name)
    issuer = _check_field("issuer", issuer)
    if not issuer.startswith("https://"):
        raise ValidationError("BadRequest", f"The federated identity credential issuer '{issuer}' must be an https URL.")
    subject = _check_field("subject", subject)
    audiences = [DEFAULT_AUDIENCE] if audiences is None else [a.strip() for a in audiences if a.strip()]
    if len(audiences) != 1:
        raise ValidationError("BadRequest", "Federated identity credentials must have exactly one audience.")
    _check_field("audience", audiences[0])
    return issuer, subject, audiences


def check_set(uami_id: str, credentials: list[tuple[str, str, str]]) -> None:
    """Across an identity's credentials (name, issuer, subject): at most 20, and each issuer and
    subject pair once."""
    pairs = set()
    for _, issuer, subject in credentials:
        if (issuer, subject) in pairs:
            raise ConflictError("BadRequest", "Issuer and subject combination already exists for this Managed Identity.")
        pairs.add((issuer, subject))
    if len(credentials) > MAX_PER_IDENTITY:
        raise ValidationError(
            "BadRequest",
            f"Too many Federated Identity Credentials are written to Managed Identity '{uami_id}'. "
            f"A maximum of {MAX_PER_IDENTITY} federated identity credentials can be added to a user-assigned managed identity.",
        )


def create(
    ctx: Ctx,
    uami: UserAssignedIdentity,
    name: str,
    *,
    issuer: str,
    subject: str,
    audiences: list[str] | None = None,
    description: str | None = None,
    current: list[FederatedCredential] | None = None,
) -> FederatedCredential:
    """A credential, as ARM's PUT: a new one within the identity's limits, or the one of that name
    updated (its name cannot change). `current` is the identity's credentials when a bulk caller
    holds them already."""
    issuer, subject, audiences = validate(name, issuer, subject, audiences)
    if description is not None:  # optional, up to 600 characters (workload identity federation considerations)
        if len(description) > MAX_FIELD:
            raise ValidationError("BadRequest", f"The federated identity credential description exceeds {MAX_FIELD} characters.")
        no_control(description, what="federated identity credential description", code="BadRequest")
    existing = current if current is not None else list_for(ctx, uami)
    same_name = next((f for f in existing if f.name_key == ids.key(name)), None)
    others = [(f.name, f.issuer, f.subject) for f in existing if f is not same_name]
    check_set(uami.arm_id, others + [(name, issuer, subject)])
    if same_name is not None:
        wanted = (issuer, subject, audiences, same_name.description if description is None else description)
        if (same_name.issuer, same_name.subject, list(same_name.audiences), same_name.description) != wanted:
            row = ctx.session.get(FederatedCredential, same_name.pk)
            row.issuer, row.subject, row.audiences, row.description = wanted
            ctx.session.add(row)
            ctx.log(f"{ids.FIC_TYPE}/write", fic_id(uami, row))
            return row
        return same_name
    fic = ctx.insert(FederatedCredential, {
        "pk": ctx.writer.next_pk(FederatedCredential), "identity_pk": uami.pk, "name": name, "name_key": ids.key(name),
        "issuer": issuer, "subject": subject, "audiences": audiences, "description": description, "created_at": ctx.now()})
    ctx.log(f"{ids.FIC_TYPE}/write", fic_id(uami, fic))
    return fic


def update(ctx: Ctx, uami: UserAssignedIdentity, name: str, *, issuer: str | None = None, subject: str | None = None,
           audiences: list[str] | None = None, description: str | None = None) -> FederatedCredential:
    """`az identity federated-credential update`: a GET, then a PUT of what it returned with the values
    given replaced. A credential that does not exist is the GET's not-found error, not a new one."""
    fic = get(ctx, uami, name)
    return create(ctx, uami, fic.name, issuer=fic.issuer if issuer is None else issuer,
                  subject=fic.subject if subject is None else subject,
                  audiences=list(fic.audiences) if audiences is None else audiences, description=description)


def fic_id(uami: UserAssignedIdentity, fic: FederatedCredential) -> str:
    return f"{uami.arm_id}/federatedIdentityCredentials/{fic.name}"


def list_for(ctx: Ctx, uami: UserAssignedIdentity) -> list[FederatedCredential]:
    stmt = select(FederatedCredential).where(FederatedCredential.identity_pk == uami.pk).order_by(FederatedCredential.name_key)
    return list(ctx.session.exec(stmt).all())


def get(ctx: Ctx, uami: UserAssignedIdentity, name: str) -> FederatedCredential:
    fic = ctx.session.exec(
        select(FederatedCredential).where(
            FederatedCredential.identity_pk == uami.pk, FederatedCredential.name_key == ids.key(name)
        )
    ).first()
    if fic is None:
        group = ctx.session.get(ResourceGroup, uami.group_pk)
        raise resource_not_found(ids.FIC_TYPE, f"{uami.name}/{name}", group.name)
    return fic


def delete(ctx: Ctx, uami: UserAssignedIdentity, name: str) -> bool:
    """Idempotent as ARM's DELETE (204 when it does not exist)."""
    try:
        fic = get(ctx, uami, name)
    except NotFoundError:
        return False
    ctx.session.delete(fic)
    ctx.session.flush()
    ctx.log(f"{ids.FIC_TYPE}/delete", fic_id(uami, fic))
    return True


# --- matching an assertion, as Entra does ---------------------------------------------------------------
# Issuer, subject and audience are compared exactly: case-sensitively (Entra's breaking change of August 2024,
# "Federated Identity Credentials now use case-sensitive matching", for subject, issuer and audience alike) and
# character for character, a trailing slash included (Azure/login#175; azure-workload-identity's
# troubleshooting: "the most common cause is when the user is missing the trailing /"). No wildcards.


def with_issuer(credentials: list[FederatedCredential], issuer: str) -> list[FederatedCredential]:
    """The credentials that trust this issuer: its `iss`, exactly."""
    return [f for f in credentials if f.issuer == issuer]


def with_subject(credentials: list[FederatedCredential], subject: str) -> tuple[FederatedCredential | None, bool]:
    """The credential (of one issuer's) whose subject is the assertion's, exactly; else None, and whether one
    differs from it in letter case only (Entra's AADSTS7002138 rather than AADSTS700213)."""
    for f in credentials:
        if f.subject == subject:
            return f, False
    return None, any(f.subject.casefold() == subject.casefold() for f in credentials)


def audience_matches(fic: FederatedCredential, audiences: list[str]) -> bool:
    """The credential's one audience is the assertion's `aud`, or one of its values (a Kubernetes token's aud
    is a list)."""
    return any(a == fic.audiences[0] for a in audiences) if fic.audiences else False


def explain(fic: FederatedCredential, *, client_id: str, tenant_id: str, held: bool | None = None) -> list[str]:
    """What an assertion must carry to be exchanged with this credential, for people: the three claims as they
    are compared, and where the exchange happens. `held`: whether mi holds the issuer's keys (None: unknown)."""
    lines = ["An assertion matches this credential only if it carries, compared exactly and case-sensitively:",
             f"  iss  {fic.issuer}",
             f"  sub  {fic.subject}",
             f"  aud  {fic.audiences[0] if fic.audiences else '(none)'}" + "   (the aud, or one of its values)"]
    if fic.issuer.endswith("/"):
        lines.append("The issuer ends with '/': the assertion's iss must end with it too (AKS issuers do).")
    else:
        lines.append("The issuer has no trailing '/': an iss that ends with one does not match (GitHub's has none).")
    lines.append("Nothing is a pattern: '*' or a prefix matches only itself, and a subject that differs in letter "
                 "case only is refused (AADSTS7002138).")
    lines.append("It must be signed by a key the issuer publishes (its OpenID metadata's jwks_uri) and be within its "
                 "nbf and exp.")
    lines.append(f"Exchange it at https://login.microsoftonline.com/{tenant_id}/oauth2/v2.0/token with client_id "
                 f"{client_id}, client_assertion_type urn:ietf:params:oauth:client-assertion-type:jwt-bearer.")
    if held is True:
        audience = fic.audiences[0] if fic.audiences else DEFAULT_AUDIENCE
        lines.append(f"mi holds this issuer: mi federation token --issuer {shlex.quote(fic.issuer)} --subject "
                     f"{shlex.quote(fic.subject)}"
                     + ("" if audience == DEFAULT_AUDIENCE else f" --audience {shlex.quote(audience)}")
                     + " mints one that matches.")
    elif held is False:
        lines.append("mi holds no keys for this issuer: its assertions are refused as from an unreachable issuer "
                     "(AADSTS50166).")
    return lines


# --- credentials that can never match (mi doctor) -------------------------------------------------------

# Issuers Azure's users federate with, as their tokens spell `iss`. An issuer mi does not hold is still worth
# keeping when it is one of these: the credential is meant for the real cloud. Each: a name, the pattern of
# its issuer URLs (case-sensitive, as Entra compares them), and the trailing slash its tokens carry.
KNOWN_ISSUERS: tuple[tuple[str, str, bool], ...] = (
    # GitHub Actions (docs.github.com, "OIDC": iss https://token.actions.githubusercontent.com, no slash), with an
    # enterprise's own issuer below it, and GitHub Enterprise Server's https://HOST/_services/token
    ("GitHub Actions", r"https://token\.actions\.githubusercontent\.com(/[A-Za-z0-9_.-]+)?", False),
    ("GitHub Enterprise Server", r"https://[A-Za-z0-9.-]+(:[0-9]+)?/_services/token", False),
    # AKS's OIDC issuer, regional (https://eastus.oic.prod-aks.azure.com/TENANT/GUID/) and the older form;
    # both end with '/' (azure-workload-identity's troubleshooting; az aks show --query oidcIssuerProfile.issuerUrl)
    ("AKS", r"https://[a-z0-9-]+\.oic\.prod-aks\.azure\.com/[0-9a-f-]{36}/[0-9a-f-]{36}/", True),
    ("AKS", r"https://oidc\.prod-aks\.azure\.com/[0-9a-f-]{36}(/[0-9a-f-]{36})?/", True),
    ("GitLab", r"https://gitlab\.com", False),
    ("Azure DevOps", r"https://vstoken\.dev\.azure\.com/[0-9a-f-]{36}", False),
    ("Terraform Cloud", r"https://app\.terraform\.io", False),
    ("Google", r"https://accounts\.google\.com", False),
    ("Amazon Cognito", r"https://cognito-identity\.amazonaws\.com", False),
    ("Amazon EKS", r"https://oidc\.eks\.[a-z0-9-]+\.amazonaws\.com/id/[A-Za-z0-9]+", False),
    ("Google GKE", r"https://container\.googleapis\.com/v1/projects/[^/]+/locations/[^/]+/clusters/[^/]+", False),
)
# Entra's own issuers: its tokens are never accepted as a managed identity's federated assertion (AADSTS700222,
# "AAD-issued tokens may not be used for federated identity flows."; trusting a managed identity is for apps).
ENTRA_ISSUER_HOSTS = ("login.microsoftonline.com", "sts.windows.net", "login.windows.net", "login.microsoft.com")


def known_issuer(issuer: str) -> str | None:
    """The public issuer this URL is (its name), exactly as that issuer's tokens spell iss; else None."""
    return next((name for name, pattern, _ in KNOWN_ISSUERS if re.fullmatch(pattern, issuer)), None)


def _near_known_issuer(issuer: str) -> tuple[str, str, str | None] | None:
    """(name, what differs, the URL as that issuer spells it if it can be told) when the URL is a known issuer's
    but for letter case or the trailing slash."""
    from urllib.parse import urlsplit

    if known_issuer(issuer) is not None:
        return None
    bare = issuer.rstrip("/")
    for name, pattern, slash in KNOWN_ISSUERS:
        for candidate in (bare, bare + "/"):
            if not re.fullmatch(pattern, candidate, flags=re.IGNORECASE):
                continue
            if re.fullmatch(pattern, candidate):
                return name, ("its tokens' iss ends with '/'" if slash else "its tokens' iss has no trailing '/'"), candidate
            parts = urlsplit(candidate)
            for spelt in (parts._replace(netloc=parts.netloc.casefold()).geturl(), candidate.casefold()):
                if re.fullmatch(pattern, spelt):
                    return name, "its tokens' iss differs from this in letter case", spelt
            return name, "its tokens' iss differs from this in letter case", None
    return None


# What fixes a finding: ("issuer", URL) or ("audience", A) to update the credential with, ("declare", URL) for mi
# to hold the issuer, ("delete", "") for a credential nothing can repair.
Fix = tuple[str, str]


def never_match(issuer: str, subject: str, audiences: list[str], held: Callable[[str], bool]
                ) -> list[tuple[str, str, str, Fix]]:
    """Why no assertion can be exchanged with a credential (or why it is unusual), as (code, severity, text, fix):
    an issuer that is not https, Entra's own, a known issuer's URL spelt otherwise, or one mi does not hold that
    no public issuer is; a subject with '*', which Azure compares as a character like any other; an audience
    other than api://AzureADTokenExchange (allowed, but what no issuer asks for by default). `held(url)` says
    whether mi holds an issuer's keys."""
    from urllib.parse import urlsplit

    found: list[tuple[str, str, str, Fix]] = []
    try:
        host = (urlsplit(issuer).hostname or "").casefold()
    except ValueError:
        host = ""
    if not issuer.startswith("https://"):
        https = "https://" + issuer[len("http://"):] if issuer.startswith("http://") else None
        found.append(("FederatedIssuerNotHttps", "error", f"the issuer '{issuer}' is not an https URL: Entra fetches an "
                      "issuer's keys over https only, so no assertion from it can be exchanged.",
                      ("issuer", https) if https else ("delete", "")))
    elif host in ENTRA_ISSUER_HOSTS:
        found.append(("FederatedIssuerIsEntra", "error", f"the issuer '{issuer}' is Entra's own: Entra refuses its own "
                      "tokens as a managed identity's federated assertion (AADSTS700222).", ("delete", "")))
    elif not held(issuer):
        near = _near_known_issuer(issuer)
        other = next((u for u in (issuer.rstrip("/"), issuer.rstrip("/") + "/") if u != issuer and held(u)), None)
        if near is not None:
            name, differs, spelt = near
            found.append(("FederatedIssuerMisspelt", "error", f"the issuer '{issuer}' looks like the issuer of {name}, but {differs}: Entra "
                          "compares iss character for character, so no token of that issuer matches.",
                          ("issuer", spelt) if spelt else ("delete", "")))
        elif other is not None:
            found.append(("FederatedIssuerMisspelt", "error", f"the issuer '{issuer}' is not one mi holds; mi holds "
                          f"'{other}', whose tokens' iss differs from it in the trailing '/', so none matches.",
                          ("issuer", other)))
        elif known_issuer(issuer) is None:
            found.append(("FederatedIssuerUnknown", "error", f"the issuer '{issuer}' is neither one mi holds nor a known "
                          "public issuer: its assertions are refused as from an unreachable issuer (AADSTS50166).",
                          ("declare", issuer)))
    if "*" in subject:
        found.append(("FederatedSubjectWildcard", "error", f"the subject '{subject}' holds '*', which Azure compares as "
                      "the character itself, not a wildcard: only a token whose sub has that very '*' matches.",
                      ("delete", "")))
    if audiences and audiences[0] != DEFAULT_AUDIENCE:
        found.append(("FederatedAudienceUnusual", "warning", f"the audience '{audiences[0]}' is allowed but unusual: "
                      f"the workload must ask its issuer for a token with exactly this aud rather than {DEFAULT_AUDIENCE}, "
                      "which azure/login and AKS's webhook ask for.", ("audience", DEFAULT_AUDIENCE)))
    return found
