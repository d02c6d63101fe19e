"""Federated identity credentials on user-assigned identities, with Azure's limits and texts."""

from __future__ import annotations

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
            raise NotFoundError("ParentResourceNotFound", "The parent user-assigned identity doesn't exist.")
        return uami
    try:
        return identities.get_user_assigned(ctx, group, ref)
    except NotFoundError:
        raise NotFoundError("ParentResourceNotFound", "The parent user-assigned identity doesn't exist.") from None


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
