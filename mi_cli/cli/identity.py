"""`mi identity`: user-assigned identities, system-assigned identities of resources, attaching
them, and their federated credentials."""

from __future__ import annotations

from contextlib import contextmanager
from enum import Enum
from typing import Annotated, Iterator, Optional

import typer

from mi_cli import ids
from mi_cli.cli.options import ConfirmOpt, OutputOpt, QueryOpt, SubscriptionOpt, TagsOpt, YesOpt
from mi_cli.cli.runtime import confirm, emit, name_or_id, transaction
from mi_cli.errors import UsageError, conflict

app = typer.Typer(help="Managed identities: user-assigned ones and the system-assigned ones of resources.", no_args_is_help=True)
fic_app = typer.Typer(help="Federated identity credentials of a user-assigned identity.", no_args_is_help=True)
app.add_typer(fic_app, name="federated-credential")

GroupOpt = Annotated[Optional[str], typer.Option("--resource-group", "-g", help="Name of the resource group.")]
NameOpt = Annotated[Optional[str], typer.Option("--name", "-n", help="Name of the user-assigned identity.")]
IdsOpt = Annotated[Optional[str], typer.Option("--ids", help="Full id of the identity (instead of -n/-g).")]
ResourceOpt = Annotated[Optional[str], typer.Option("--resource", help="Name or id of the resource that holds the identity.")]
CreateResourceOpt = Annotated[Optional[str], typer.Option(
    "--resource", help="Name or id of a resource: with --system-assigned, the resource whose own identity is turned on; "
                       "with --user-assigned, a resource the new identity is also attached to, in the same step.")]
TypeOpt = Annotated[Optional[str], typer.Option("--type", "-t", help="Resource type or alias, when several resources share the name.")]
RoleOpt = Annotated[Optional[str], typer.Option("--role", help="With --scope: a role for the system-assigned identity, granted in the same step.")]
RoleScopeOpt = Annotated[Optional[str], typer.Option("--scope", help="With --role: where the system-assigned identity gets the role.")]
# az's enum arguments: matched case-insensitively; another value is the parser's error (exit 2).
IsolationScope = Enum("IsolationScope", {"None": "None", "Regional": "Regional"}, type=str)
IdentitiesOpt = Annotated[
    Optional[list[str]],
    typer.Option("--identities", help="Space-separated identities: '[system]' for the system-assigned one, names or ids of user-assigned ones."),
]


def _ua_row(i: dict) -> dict:
    # az's auto-table columns for `az identity create/show/list`
    return {k: i.get(v) for k, v in (("ClientId", "clientId"), ("IsolationScope", "isolationScope"), ("Location", "location"),
                                      ("Name", "name"), ("PrincipalId", "principalId"), ("ResourceGroup", "resourceGroup"),
                                      ("TenantId", "tenantId"))}


def _list_row(i: dict) -> dict:
    # mi's --kind system|all (az has no such listing): a first column says which kind each row is
    kind = "UserAssigned" if i.get("type") == ids.UAMI_TYPE else "SystemAssigned"
    return {"Kind": kind, "Name": i["name"], "ResourceGroup": i["resourceGroup"], "Location": i["location"],
            "PrincipalId": i["principalId"], "ClientId": i["clientId"]}


def _block_rows(block: dict) -> list[dict]:
    rows = []
    if block.get("principalId"):
        rows.append({"Identity": "[system]", "ResourceGroup": "", "PrincipalId": block["principalId"], "ClientId": ""})
    for uid, v in (block.get("userAssignedIdentities") or {}).items():
        parsed = ids.parse(uid)  # the full id is in -o json; a person reads name and group
        rows.append({"Identity": parsed.name if parsed else uid, "ResourceGroup": (parsed.group if parsed else "") or "",
                     "PrincipalId": v["principalId"], "ClientId": v["clientId"]})
    return rows


def _given(*pairs: tuple[str, object]) -> list[str]:
    """The options of `pairs` (name, value) that were given."""
    return [name for name, value in pairs if value not in (None, False, [])]


def _role_and_scope(role: str | None, scope: str | None) -> None:
    if bool(role) != bool(scope):
        raise UsageError("MissingArgument", "--role and --scope go together.")


def _grant(ctx, res, role: str | None, scope: str | None) -> None:  # noqa: ANN001
    _role_and_scope(role, scope)
    if role:
        from mi_cli.services import assignments

        assignments.grant_system_identity(ctx, res, role, scope)


def _emit_block(block: dict, output, query) -> None:  # noqa: ANN001
    emit(block, output, query, view=_print_block)


def _print_block(block: dict) -> None:
    from mi_cli.render import write_table
    import sys

    print(f"Type: {block['type']}")
    rows = _block_rows(block)
    if rows:
        write_table(rows, sys.stdout)


@app.command("create")
def create(
    name: NameOpt = None,
    group: GroupOpt = None,
    user_assigned: Annotated[bool, typer.Option(
        "--user-assigned", help="Create a user-assigned identity (-n, -g): the default.")] = False,
    system_assigned: Annotated[bool, typer.Option("--system-assigned", help="Turn on the system-assigned identity of --resource.")] = False,
    resource: CreateResourceOpt = None,
    type_: Annotated[Optional[str], typer.Option(
        "--type", "-t", help="With --resource: its type or alias, when several resources share the name.")] = None,
    location: Annotated[Optional[str], typer.Option(
        "--location", "-l", help="Of a user-assigned identity: its Azure region, e.g. westeurope (default: the group's).")] = None,
    tags: Annotated[Optional[list[str]], typer.Option(
        "--tags", help="Of a user-assigned identity: space-separated tags, key[=value] ...; \"\" clears them.")] = None,
    isolation_scope: Annotated[Optional[IsolationScope], typer.Option(
        "--isolation-scope", case_sensitive=False,
        help="With --user-assigned: None (default) or Regional, whether the identity may be assigned only to "
             "resources in its own region.")] = None,
    role: RoleOpt = None,
    scope: RoleScopeOpt = None,
    subscription: SubscriptionOpt = None,
    output: OutputOpt = "table",
    query: QueryOpt = None,
) -> None:
    """Create a user-assigned identity (and, with --resource, attach it to that resource in the same step, as
    'identity assign' does), or turn on a resource's system-assigned identity (and, with --role and --scope,
    grant it a role in the same step).

    Running either again changes nothing and returns the same ids (tags are updated). A failed step changes
    nothing: the identity is not created when the resource cannot take it.
    """
    from mi_cli.services import groups, identities, lookup, tenancy, views
    from mi_cli.services.validation import parse_tags

    if user_assigned and system_assigned:
        raise UsageError("MutuallyExclusiveArguments", "Give --user-assigned or --system-assigned, not both.")
    if system_assigned:
        unused = _given(("--name/-n", name), ("--location/-l", location), ("--tags", tags),
                        ("--isolation-scope", isolation_scope))
        if unused:
            raise conflict(f"{', '.join(unused)}: only for a user-assigned identity; --system-assigned turns on the "
                           "resource's own identity, which takes its name and location from the resource. Drop "
                           f"{'it' if len(unused) == 1 else 'them'}, or create a user-assigned identity "
                           "(--user-assigned -n NAME -g GROUP, with --resource to attach it).")
        if not resource:
            raise UsageError("MissingArgument", "--system-assigned needs --resource NAME (and -g).")
        _role_and_scope(role, scope)
        with transaction(write=True) as ctx:
            res = lookup.resource(ctx, resource, group, subscription=subscription, type_text=type_)
            identities.enable_system(ctx, res)
            _grant(ctx, res, role, scope)
            block = views.identity_block_or_none(ctx, res)
        _emit_block(block, output, query)
        return
    if role or scope:
        raise conflict("--role and --scope grant a role to a system-assigned identity: use them with --system-assigned "
                       "(or 'mi identity assign'); for a user-assigned identity, 'mi role assignment create --assignee "
                       "NAME'.")
    if type_ and not resource:
        raise conflict("--type names the type of --resource: give --resource too, or drop --type.")
    if not name or not group:
        raise UsageError("MissingArgument", "A user-assigned identity needs --name/-n and --resource-group/-g.")
    with transaction(write=True) as ctx:
        g = groups.get(ctx, group, subscription=subscription)
        uami = identities.create_user_assigned(ctx, g, name, location=location, tags=parse_tags(tags),
                                               isolation_scope=isolation_scope and isolation_scope.value)
        if resource:  # as `identity assign --resource R --identities ID` does it, in this one transaction
            by_id = resource.strip().startswith("/")  # then -g and --subscription are the identity's, not its
            res = lookup.resource(ctx, resource, None if by_id else group, subscription=None if by_id else subscription,
                                  type_text=type_)
            identities.assign(ctx, res, [uami.arm_id])
        data = views.user_assigned(uami, tenancy.default_tenant(ctx).id)
    emit(data, output, query, _ua_row)


@app.command("show")
def show(
    name: NameOpt = None,
    group: GroupOpt = None,
    ids_: IdsOpt = None,
    resource: ResourceOpt = None,
    type_: TypeOpt = None,
    subscription: SubscriptionOpt = None,
    output: OutputOpt = "table",
    query: QueryOpt = None,
) -> None:
    """Show a user-assigned identity (-n/-g or --ids), or the system-assigned one of --resource (or of --ids, the
    system identity's id)."""
    from mi_cli import ids
    from mi_cli.services import identities, lookup, tenancy, views

    if name and ids_:
        name_or_id(name, ids_)  # refuses the two together
    if resource and (name or ids_):
        raise conflict(f"Give --resource (its system-assigned identity) or {'--name/-n' if name else '--ids'} (a "
                       "user-assigned identity), not both.")
    if type_ and not (resource or (ids_ and ids.is_system_identity_id(ids_))):
        raise conflict("--type names the type of --resource: give --resource too, or drop --type.")
    with transaction(write=False) as ctx:
        tenant = tenancy.default_tenant(ctx, create=False)
        if resource or (ids_ and ids.is_system_identity_id(ids_)):
            ref = resource or ids.strip_system_identity(ids_)
            res = lookup.resource(ctx, ref, group, subscription=subscription, type_text=type_)
            data = views.system_assigned(identities.system_identity(ctx, res), tenant.id)
        else:
            uami = lookup.user_assigned(ctx, name_or_id(name, ids_), group, subscription=subscription)
            data = views.user_assigned(uami, tenant.id)
    emit(data, output, query, _ua_row)


_EMPTY_LISTING = {"user": "No user-assigned identities found.", "system": "No system-assigned identities found.",
                  "all": "No identities found."}


@app.command("list")
def list_(
    group: GroupOpt = None,
    kind: Annotated[
        str, typer.Option("--kind", help="user (the default, as az identity list): user-assigned identities; "
                                         "system: the system-assigned identities of resources; all: both.")
    ] = "user",
    subscription: SubscriptionOpt = None,
    output: OutputOpt = "table",
    query: QueryOpt = None,
) -> None:
    """List user-assigned identities, as `az identity list` does; --kind system or all lists the
    system-assigned ones of resources (their type: Microsoft.ManagedIdentity/identities)."""
    from mi_cli.services import groups, tenancy, views

    if kind.casefold() not in views.IDENTITY_KINDS:
        raise UsageError("InvalidArgumentValue", f"--kind must be user, system or all, not '{kind}'.")
    kind = kind.casefold()
    with transaction(write=False) as ctx:
        if group:
            data = views.identity_listing(ctx, group=groups.get(ctx, group, subscription=subscription), kind=kind)
        else:
            sub = tenancy.find_subscription(ctx, subscription, create=False)
            data = views.identity_listing(ctx, sub_id=sub.id, kind=kind) if sub else []
    emit(data, output, query, _ua_row if kind == "user" else _list_row, empty=_EMPTY_LISTING[kind])


@app.command("list-resources")
def list_resources(
    name: NameOpt = None,
    group: GroupOpt = None,
    ids_: IdsOpt = None,
    subscription: SubscriptionOpt = None,
    output: OutputOpt = "table",
    query: QueryOpt = None,
) -> None:
    """List the resources a user-assigned identity is attached to."""
    from mi_cli.services import lookup, views

    ref = name_or_id(name, ids_)
    with transaction(write=False) as ctx:
        data = views.associated_resources(ctx, lookup.user_assigned(ctx, ref, group, subscription=subscription))
    emit(data, output, query, lambda r: {"Name": r["name"], "ResourceGroup": r["resourceGroup"], "Type": r["type"]},
         empty="No resources hold this identity.")


@app.command("update")
def update(
    name: NameOpt = None,
    group: GroupOpt = None,
    ids_: IdsOpt = None,
    tags: TagsOpt = None,
    subscription: SubscriptionOpt = None,
    output: OutputOpt = "table",
    query: QueryOpt = None,
) -> None:
    """Update the tags of a user-assigned identity (its name and location cannot change)."""
    from mi_cli.services import identities, lookup, tenancy, views
    from mi_cli.services.validation import parse_tags

    ref = name_or_id(name, ids_)
    if tags is None:
        raise UsageError("MissingArgument", "Nothing to update: give --tags.")
    with transaction(write=True) as ctx:
        uami = lookup.user_assigned(ctx, ref, group, subscription=subscription)
        identities.update_tags(ctx, uami, parse_tags(tags))
        data = views.user_assigned(uami, tenancy.default_tenant(ctx).id)
    emit(data, output, query, _ua_row)


@app.command("delete")
def delete(
    name: NameOpt = None,
    group: GroupOpt = None,
    ids_: IdsOpt = None,
    yes: YesOpt = False,
    subscription: SubscriptionOpt = None,
    output: OutputOpt = "table",  # accepted on every command, as az does; deletes print nothing
    query: QueryOpt = None,
) -> None:
    """Delete a user-assigned identity and its service principal. Resources that list it keep the
    reference, dangling, as in Azure; a warning names them. Deleting what is gone succeeds."""
    from mi_cli.services import lookup

    ref = name_or_id(name, ids_)
    with transaction(write=True) as ctx:
        lookup.delete_user_assigned(ctx, ref, group, subscription=subscription)


@app.command("assign")
def assign(
    resource: ResourceOpt = None,
    group: GroupOpt = None,
    identities_: IdentitiesOpt = None,
    type_: TypeOpt = None,
    role: RoleOpt = None,
    scope: RoleScopeOpt = None,
    subscription: SubscriptionOpt = None,
    output: OutputOpt = "table",
    query: QueryOpt = None,
) -> None:
    """Give a resource identities: '[system]' (the default) turns on its system-assigned one; names
    or ids attach user-assigned ones. With --role and --scope, the system-assigned identity gets the
    role in the same step. Prints the resource's identity block."""
    from mi_cli.services import identities, lookup, views

    if not resource:
        raise UsageError("MissingArgument", "--resource NAME (with -g) or --resource ID is required.")
    _role_and_scope(role, scope)
    with transaction(write=True) as ctx:
        res = lookup.resource(ctx, resource, group, subscription=subscription, type_text=type_)
        identities.assign(ctx, res, identities_ or [])
        _grant(ctx, res, role, scope)
        block = views.identity_block_or_none(ctx, res)
    _emit_block(block, output, query)


@app.command("remove")
def remove(
    resource: ResourceOpt = None,
    group: GroupOpt = None,
    identities_: IdentitiesOpt = None,
    type_: TypeOpt = None,
    subscription: SubscriptionOpt = None,
    output: OutputOpt = "table",
    query: QueryOpt = None,
) -> None:
    """Take identities off a resource: '[system]' (the default) turns off its system-assigned one
    (its service principal is deleted); names or ids detach user-assigned ones."""
    from mi_cli.services import identities, lookup, views

    if not resource:
        raise UsageError("MissingArgument", "--resource NAME (with -g) or --resource ID is required.")
    with transaction(write=True) as ctx:
        res = lookup.resource(ctx, resource, group, subscription=subscription, type_text=type_)
        identities.remove(ctx, res, identities_ or [])
        block = views.identity_block_or_none(ctx, res)
    _emit_block(block, output, query)


# --- federated credentials -------------------------------------------------------------------------

IdentityNameOpt = Annotated[
    str, typer.Option("--identity-name", "--identity", help="The user-assigned identity: a name (with -g) or an id.")
]
FicNameOpt = Annotated[str, typer.Option("--name", "-n", help="Name of the federated credential (immutable).")]


def _fic_row(f: dict) -> dict:
    return {"Name": f["name"], "Issuer": f["issuer"], "Subject": f["subject"], "Audiences": ", ".join(f["audiences"])}


@fic_app.command("create")
def fic_create(
    name: FicNameOpt,
    identity_name: IdentityNameOpt,
    group: GroupOpt = None,
    issuer: Annotated[Optional[str], typer.Option("--issuer", help="https URL of the token issuer.")] = None,
    subject: Annotated[Optional[str], typer.Option("--subject", help="The subject of the external tokens.")] = None,
    audiences: Annotated[
        Optional[list[str]], typer.Option("--audiences", help="Exactly one audience (default api://AzureADTokenExchange).")
    ] = None,
    description: Annotated[Optional[str], typer.Option("--description", help="Free text.")] = None,
    subscription: SubscriptionOpt = None,
    output: OutputOpt = "table",
    query: QueryOpt = None,
) -> None:
    """Create (or update) a federated identity credential on a user-assigned identity."""
    from mi_cli.services import federated, views

    if not issuer:
        raise UsageError("MissingArgument", "Issuer URL is required for federated credential creation (--issuer).")
    if not subject:
        raise UsageError("MissingArgument", "Missing required authentication criteria for federated credential (--subject).")
    with transaction(write=True) as ctx:
        uami = _fic_parent(ctx, identity_name, group, subscription)
        fic = federated.create(ctx, uami, name, issuer=issuer, subject=subject, audiences=audiences, description=description)
        data = views.federated_credential(uami, fic)
    emit(data, output, query, _fic_row)


@fic_app.command("update")
def fic_update(
    name: FicNameOpt,
    identity_name: IdentityNameOpt,
    group: GroupOpt = None,
    issuer: Annotated[Optional[str], typer.Option("--issuer", help="https URL of the token issuer.")] = None,
    subject: Annotated[Optional[str], typer.Option("--subject", help="The subject of the external tokens.")] = None,
    audiences: Annotated[Optional[list[str]], typer.Option("--audiences", help="Exactly one audience.")] = None,
    description: Annotated[Optional[str], typer.Option("--description", help="Free text.")] = None,
    subscription: SubscriptionOpt = None,
    output: OutputOpt = "table",
    query: QueryOpt = None,
) -> None:
    """Update an existing federated credential: what is given replaces its value, the rest stays.
    A credential that does not exist is not created (use create)."""
    from mi_cli.services import federated, views

    with transaction(write=True) as ctx:
        uami = _fic_parent(ctx, identity_name, group, subscription)
        with _listing_step(ctx, uami):
            fic = federated.update(ctx, uami, name, issuer=issuer, subject=subject, audiences=audiences, description=description)
        data = views.federated_credential(uami, fic)
    emit(data, output, query, _fic_row)


@contextmanager
def _listing_step(ctx, uami) -> Iterator[None]:  # noqa: ANN001
    """A credential that is not there: say how to list the ones that are."""
    from mi_cli.errors import NotFoundError
    from mi_cli.services import next_steps
    from mi_cli.models import ResourceGroup

    try:
        yield
    except NotFoundError as exc:
        if exc.code != "ResourceNotFound":
            raise
        group = ctx.session.get(ResourceGroup, uami.group_pk)
        raise exc.add_next_step(f"List the credentials of '{uami.name}' with 'mi identity federated-credential list "
                                f"--identity-name {next_steps.arg(uami.name)} -g {next_steps.arg(group.name)}'.") from None


def _fic_parent(ctx, identity_name: str, group: str | None, subscription: str | None):  # noqa: ANN001, ANN202
    from mi_cli.services import federated, groups, lookup

    if identity_name.strip().startswith("/"):
        lookup.check_id_options(ctx, identity_name.strip(), group=group, subscription=subscription, what="the identity id")
        return federated.resolve_identity(ctx, None, identity_name)
    if not group:
        raise UsageError("MissingArgument", "--resource-group/-g is required when the identity is given by name.")
    return federated.resolve_identity(ctx, groups.get(ctx, group, subscription=subscription), identity_name)


@fic_app.command("list")
def fic_list(
    identity_name: IdentityNameOpt,
    group: GroupOpt = None,
    subscription: SubscriptionOpt = None,
    output: OutputOpt = "table",
    query: QueryOpt = None,
) -> None:
    """List the federated credentials of a user-assigned identity."""
    from mi_cli.services import federated, views

    with transaction(write=False) as ctx:
        uami = _fic_parent(ctx, identity_name, group, subscription)
        data = [views.federated_credential(uami, f) for f in federated.list_for(ctx, uami)]
    emit(data, output, query, _fic_row, empty="No federated credentials found.")


@fic_app.command("show")
def fic_show(
    name: FicNameOpt,
    identity_name: IdentityNameOpt,
    group: GroupOpt = None,
    subscription: SubscriptionOpt = None,
    output: OutputOpt = "table",
    query: QueryOpt = None,
) -> None:
    """Show one federated credential. The table view also says what an assertion must carry to be exchanged
    with it; the data (-o json and the rest) is az's, with nothing added."""
    from mi_cli.services import federated, federation, tenancy, views

    with transaction(write=False) as ctx:
        uami = _fic_parent(ctx, identity_name, group, subscription)
        with _listing_step(ctx, uami):
            fic = federated.get(ctx, uami, name)
        data = views.federated_credential(uami, fic)
        explained = federated.explain(fic, client_id=uami.client_id, tenant_id=tenancy.default_tenant(ctx).id,
                                      held=federation.signing_keys(ctx, fic.issuer) is not None)

    def view(item: dict) -> None:
        import sys

        from mi_cli.render import write_table, write_text

        write_table([_fic_row(item)], sys.stdout)
        print()
        for line in explained:  # issuer and subject are text from the store: made inert by write_text
            write_text(line)

    emit(data, output, query, view=view)


@fic_app.command("delete")
def fic_delete(
    name: FicNameOpt,
    identity_name: IdentityNameOpt,
    group: GroupOpt = None,
    yes: ConfirmOpt = False,
    subscription: SubscriptionOpt = None,
    output: OutputOpt = "table",  # accepted on every command, as az does; deletes print nothing
    query: QueryOpt = None,
) -> None:
    """Delete a federated credential (deleting one that is gone succeeds). As az, it asks first: at a
    terminal, a question; without one, it refuses unless --yes is given."""
    from mi_cli.services import federated

    confirm(f"Delete the federated credential '{name}'?", yes)
    with transaction(write=True) as ctx:
        uami = _fic_parent(ctx, identity_name, group, subscription)
        federated.delete(ctx, uami, name)
