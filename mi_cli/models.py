"""SQLModel tables of the store: tenant, subscriptions, groups, resources, identities, principals, log."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Optional

from sqlalchemy import JSON, Column, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlmodel import Field, SQLModel

SCHEMA_VERSION = 8  # 2: signing keys and token-endpoint secrets; 3: custom roles and role assignments;
# 4: role assignment conditions and updates; 5: the local cloud's certificate authority, Key Vault secrets;
# 6: storage accounts' shared keys and allowSharedKeyAccess; 7: app registrations, their client secrets and
# app role assignments; 8: simulated external issuers of federated assertions (GitHub Actions, Kubernetes, any URL)


def _fk(target: str) -> Any:
    # ON DELETE CASCADE done by SQLite itself (foreign_keys=ON): one DELETE of a group
    # removes its resources, identities, attachments and federated credentials.
    return Column(Integer, ForeignKey(target, ondelete="CASCADE"), nullable=False, index=True)


class Meta(SQLModel, table=True):
    __tablename__ = "meta"
    key: str = Field(primary_key=True)
    value: str


class Tenant(SQLModel, table=True):
    __tablename__ = "tenant"
    id: str = Field(primary_key=True)  # tenant GUID
    display_name: str
    is_default: bool = False
    created_at: datetime


class Subscription(SQLModel, table=True):
    __tablename__ = "subscription"
    id: str = Field(primary_key=True)  # subscription GUID
    tenant_id: str = Field(foreign_key="tenant.id")
    name: str
    is_default: bool = False
    created_at: datetime


class ResourceGroup(SQLModel, table=True):
    __tablename__ = "resource_group"
    __table_args__ = (UniqueConstraint("subscription_id", "name_key"),)
    pk: Optional[int] = Field(default=None, primary_key=True)
    subscription_id: str = Field(foreign_key="subscription.id", index=True)
    name: str
    name_key: str
    location: str
    tags: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime


class Resource(SQLModel, table=True):
    """An Azure resource from the catalog (VM, web app, vault, ...), with its system identity."""

    __tablename__ = "resource"
    __table_args__ = (UniqueConstraint("id_key"),)
    pk: Optional[int] = Field(default=None, primary_key=True)
    group_pk: int = Field(sa_column=_fk("resource_group.pk"))
    name: str  # for child types: parent/child, as ARM names them
    name_key: str = Field(index=True)
    type: str
    kind: Optional[str] = None
    location: str
    tags: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    arm_id: str
    id_key: str
    system_principal_id: Optional[str] = None  # set while the system-assigned identity is on
    created_at: datetime


class UserAssignedIdentity(SQLModel, table=True):
    __tablename__ = "user_assigned_identity"
    # (group_pk, name_key) also serves lookups by group; principal and client ids are unique in
    # service_principal already. Fewer indexes keep bulk applies fast.
    __table_args__ = (UniqueConstraint("group_pk", "name_key"), UniqueConstraint("id_key"))
    pk: Optional[int] = Field(default=None, primary_key=True)
    group_pk: int = Field(sa_column=Column(Integer, ForeignKey("resource_group.pk", ondelete="CASCADE"), nullable=False))
    name: str
    name_key: str
    location: str
    tags: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    arm_id: str
    id_key: str
    principal_id: str
    client_id: str
    isolation_scope: str = "None"
    created_at: datetime


class ServicePrincipal(SQLModel, table=True):
    """The directory object behind every managed identity (there is no application object)."""

    __tablename__ = "service_principal"
    id: str = Field(primary_key=True)  # object id == the identity's principalId
    app_id: str = Field(unique=True)  # == the identity's clientId
    tenant_id: str = Field(foreign_key="tenant.id")
    display_name: str
    is_explicit: bool  # True: user-assigned; False: system-assigned
    mi_resource_id: str  # the UAMI id, or the resource whose system identity it is
    created_at: datetime


class Attachment(SQLModel, table=True):
    """A user-assigned identity listed on a resource. Kept when the identity is deleted (rule 5)."""

    __tablename__ = "attachment"
    __table_args__ = (UniqueConstraint("resource_pk", "identity_key"),)
    pk: Optional[int] = Field(default=None, primary_key=True)
    resource_pk: int = Field(sa_column=_fk("resource.pk"))
    identity_id: str
    identity_key: str = Field(index=True)
    # The ids the resource was given when attached; a reference is live only while a
    # user-assigned identity with this id and this principal exists.
    principal_id: str
    client_id: str
    created_at: datetime


class FederatedCredential(SQLModel, table=True):
    __tablename__ = "federated_credential"
    __table_args__ = (
        UniqueConstraint("identity_pk", "name_key"),
        Index("ix_fic_issuer_subject", "identity_pk", "issuer", "subject", unique=True),
    )
    pk: Optional[int] = Field(default=None, primary_key=True)
    identity_pk: int = Field(sa_column=_fk("user_assigned_identity.pk"))
    name: str
    name_key: str
    issuer: str
    subject: str
    audiences: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    description: Optional[str] = None
    created_at: datetime


class ActivityLog(SQLModel, table=True):
    __tablename__ = "activity_log"
    pk: Optional[int] = Field(default=None, primary_key=True)
    time: datetime = Field(index=True)
    operation: str  # filtered by substring, which no index serves
    target: str
    caller: str
    status: str  # Succeeded | Failed
    detail: Optional[str] = None


class SigningKey(SQLModel, table=True):
    """An RS256 key of a tenant. Retired keys leave the JWKS; the newest active one signs."""

    __tablename__ = "signing_key"
    kid: str = Field(primary_key=True)  # RFC 7638 thumbprint of the public key
    tenant_id: str = Field(foreign_key="tenant.id", index=True)
    private_pem: str  # PKCS#8; the store file is 0600 and this is never printed
    public_jwk: dict = Field(sa_column=Column(JSON, nullable=False))
    created_at: datetime
    retired_at: Optional[datetime] = None


class EndpointSecret(SQLModel, table=True):
    """The IDENTITY_HEADER of a resource's App Service-style token endpoint."""

    __tablename__ = "endpoint_secret"
    resource_pk: int = Field(sa_column=Column(Integer, ForeignKey("resource.pk", ondelete="CASCADE"), primary_key=True))
    secret: str = Field(unique=True)
    created_at: datetime


class CustomRole(SQLModel, table=True):
    """A custom role definition (built-in roles ship as package data)."""

    __tablename__ = "custom_role"
    id: str = Field(primary_key=True)  # GUID
    role_name: str
    name_key: str = Field(unique=True)
    description: str = ""
    permissions: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    assignable_scopes: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    created_at: datetime


class RoleAssignment(SQLModel, table=True):
    """A role granted to a principal at a scope. Kept when the principal is deleted (rule 6)."""

    __tablename__ = "role_assignment"
    __table_args__ = (Index("ix_ra_unique", "principal_id", "role_definition_id", "scope_key", unique=True),)
    name: str = Field(primary_key=True)  # GUID
    scope: str
    scope_key: str = Field(index=True)
    subscription_id: str = Field(index=True)
    principal_id: str = Field(index=True)
    principal_type: str = "ServicePrincipal"
    role_definition_id: str  # the role's GUID
    description: Optional[str] = None
    condition: Optional[str] = None  # ABAC condition, with its conditionVersion ('2.0')
    condition_version: Optional[str] = None
    created_at: datetime
    created_by: str  # the object id of who created it (stores before version 4 hold a login name)
    updated_at: Optional[datetime] = None  # set when a PUT at its name changed it


class CertificateAuthority(SQLModel, table=True):
    """The store's own CA: it signs the TLS certificates of the Azure host names `mi serve` answers."""

    __tablename__ = "certificate_authority"
    tenant_id: str = Field(foreign_key="tenant.id", primary_key=True)
    key_pem: str  # PKCS#8, unencrypted: the store file is 0600, as for the signing keys
    cert_pem: str
    created_at: datetime


class KeyVaultSecret(SQLModel, table=True):
    """One version of a Key Vault secret. Soft delete marks every version of the secret deleted."""

    __tablename__ = "key_vault_secret"
    __table_args__ = (UniqueConstraint("vault_pk", "name_key", "version"),)
    pk: Optional[int] = Field(default=None, primary_key=True)
    vault_pk: int = Field(sa_column=_fk("resource.pk"))
    name: str
    name_key: str = Field(index=True)
    version: str  # 32 lowercase hex characters, as Key Vault's
    value: str
    content_type: Optional[str] = None
    tags: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    enabled: bool = True
    not_before: Optional[datetime] = None
    expires: Optional[datetime] = None
    created_at: datetime
    updated_at: datetime
    deleted_at: Optional[datetime] = None
    scheduled_purge_at: Optional[datetime] = None


class StorageAccount(SQLModel, table=True):
    """A storage account's two shared keys and its allowSharedKeyAccess; made when first needed."""

    __tablename__ = "storage_account"
    resource_pk: int = Field(sa_column=Column(Integer, ForeignKey("resource.pk", ondelete="CASCADE"), primary_key=True))
    allow_shared_key_access: Optional[bool] = None  # None is Azure's null, which allows Shared Key
    key1: str  # base64 of 64 random bytes, as Azure's; the store file is 0600, as for the signing keys
    key2: str
    key1_created_at: datetime
    key2_created_at: datetime


class Application(SQLModel, table=True):
    """An app registration for the user's own API, with the service principal that stands for it in the
    tenant (made with it, as the portal does, and deleted with it)."""

    __tablename__ = "application"
    id: str = Field(primary_key=True)  # the application's object id
    app_id: str = Field(unique=True)  # appId, the client id
    service_principal_id: str = Field(unique=True)  # the object id of its service principal
    tenant_id: str = Field(foreign_key="tenant.id")
    display_name: str
    identifier_uris: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    app_roles: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))  # Graph's appRole objects
    created_at: datetime


class ApplicationSecret(SQLModel, table=True):
    """A client secret (Graph's passwordCredential) of an app registration: only its salted hash is kept,
    since Entra too shows a secret once, when it is made."""

    __tablename__ = "application_secret"
    key_id: str = Field(primary_key=True)  # GUID
    application_id: str = Field(sa_column=Column(String, ForeignKey("application.id", ondelete="CASCADE"), nullable=False,
                                                 index=True))
    display_name: Optional[str] = None
    hint: str  # the secret's first three characters, as Graph shows them
    salt: str
    secret_hash: str  # hex SHA-256 of salt + secret
    start_at: datetime
    end_at: datetime


class AppRoleAssignment(SQLModel, table=True):
    """An app role of a resource's service principal (an app registration's, or Microsoft Graph's) granted to a
    principal (a managed identity, or an app's service principal): Graph's appRoleAssignment."""

    __tablename__ = "app_role_assignment"
    __table_args__ = (UniqueConstraint("principal_id", "resource_id", "app_role_id"),)
    id: str = Field(primary_key=True)  # Graph's id: base64url, 43 characters
    principal_id: str = Field(index=True)
    principal_type: str = "ServicePrincipal"
    resource_id: str = Field(index=True)  # the object id of the resource's service principal
    app_role_id: str
    created_at: datetime


class FederationIssuer(SQLModel, table=True):
    """A simulated external OpenID issuer (GitHub Actions, a Kubernetes cluster, any https URL) whose assertions a
    workload exchanges through a federated identity credential: mi holds its signing key, publishes its metadata
    and keys at its own host name, and mints its tokens."""

    __tablename__ = "federation_issuer"
    id: Optional[int] = Field(default=None, primary_key=True)
    url: str = Field(unique=True)  # exactly as given: a trailing slash is part of the issuer
    host: str = Field(index=True)  # the URL's host name, lowercase: what the local cloud answers for it
    kind: str  # github | kubernetes | generic
    kid: str  # the kid its tokens and keys document carry
    private_pem: str  # PKCS#8; the store file is 0600 and this is never printed
    public_jwk: dict = Field(sa_column=Column(JSON, nullable=False))  # the key as its keys document publishes it
    created_at: datetime
