"""`mi app`: app registrations for your own APIs (az ad app's names and shapes), their client secrets, their
service principals, and the app roles granted to managed identities (Graph's appRoleAssignments)."""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from typing import Annotated, Optional

import typer

from mi_cli.cli.options import OutputOpt, QueryOpt, YesOpt
from mi_cli.cli.runtime import emit, transaction
from mi_cli.errors import UsageError, shown

app = typer.Typer(help="App registrations for your own APIs: create them with identifier URIs and app roles, give "
                  "them client secrets, and grant their roles to managed identities (as az ad app).", no_args_is_help=True)
credential_app = typer.Typer(help="Client secrets of an application (as az ad app credential).", no_args_is_help=True)
sp_app = typer.Typer(help="The service principal of an application (as az ad sp show).", no_args_is_help=True)
role_app = typer.Typer(help="App roles of an application granted to managed identities or apps (Graph's "
                       "appRoleAssignments): they appear in the `roles` claim of tokens for the application.",
                       no_args_is_help=True)
app.add_typer(credential_app, name="credential")
app.add_typer(sp_app, name="sp")
app.add_typer(role_app, name="role")

IdOpt = Annotated[str, typer.Option("--id", help="The application's appId, object id, or an identifier URI.")]
AppOpt = Annotated[str, typer.Option("--app", help="The application whose role it is: appId, object id, identifier URI or "
                                     "display name; or 'Microsoft Graph' for Graph's application permissions.")]
AssigneeOpt = Annotated[str, typer.Option("--assignee", help="A managed identity (principal id, client id, name or id, as "
                                          "in 'mi role assignment create'), or an application's appId or name.")]
RoleOpt = Annotated[str, typer.Option("--role", help="The app role's value (e.g. Orders.Read) or its id.")]


def _app_row(a: dict) -> dict:
    return {"DisplayName": a["displayName"], "AppId": a["appId"], "Id": a["id"],
            "IdentifierUris": ", ".join(a["identifierUris"]), "AppRoles": ", ".join(r["value"] for r in a["appRoles"])}


def _assignment_row(a: dict) -> dict:
    return {"Principal": a["principalDisplayName"] or "", "PrincipalId": a["principalId"],
            "Resource": a["resourceDisplayName"] or "", "Role": a.get("appRoleValue") or a["appRoleId"], "Id": a["id"]}


@app.command("create")
def create(
    display_name: Annotated[str, typer.Option("--display-name", help="The display name of the application.")],
    identifier_uris: Annotated[Optional[list[str]], typer.Option(
        "--identifier-uris", help="Space-separated values: the URIs that name the API in tokens' audience, e.g. "
        "api://orders. A token for one of them (or for the appId) carries the app roles its caller holds.")] = None,
    app_roles: Annotated[Optional[str], typer.Option(
        "--app-roles", help="The app roles, as JSON or a file (@file) holding it: [{\"allowedMemberTypes\": "
        "[\"Application\"], \"description\": ..., \"displayName\": ..., \"value\": \"Orders.Read\"}]; az gives each "
        "role without an id a new one.")] = None,
    output: OutputOpt = "table",
    query: QueryOpt = None,
) -> None:
    """Create an application (and its service principal, as the portal does). An application with the same display
    name is patched instead, as az does."""
    from mi_cli.services import apps

    roles = apps.parse_json_argument(app_roles, "--app-roles") if app_roles is not None else None
    with transaction(write=True) as ctx:
        made = apps.create(ctx, display_name=display_name, identifier_uris=identifier_uris, app_roles=roles)
        data = apps.application_view(ctx, made)
    emit(data, output, query, _app_row)


@app.command("list")
def list_(
    display_name: Annotated[Optional[str], typer.Option("--display-name", help="Applications whose display name starts "
                                                        "with this.")] = None,
    app_id: Annotated[Optional[str], typer.Option("--app-id", help="The application with this appId.")] = None,
    identifier_uri: Annotated[Optional[str], typer.Option("--identifier-uri", help="The application with this identifier "
                                                          "URI.")] = None,
    output: OutputOpt = "table",
    query: QueryOpt = None,
) -> None:
    """List applications."""
    from mi_cli.services import apps

    with transaction(write=False) as ctx:
        data = [apps.application_view(ctx, a) for a in apps.list_all(ctx, display_name=display_name, app_id=app_id,
                                                                      identifier_uri=identifier_uri)]
    emit(data, output, query, _app_row, empty="No app registrations found.")


@app.command("show")
def show(id_: IdOpt, output: OutputOpt = "table", query: QueryOpt = None) -> None:
    """Show an application."""
    from mi_cli.services import apps

    with transaction(write=False) as ctx:
        data = apps.application_view(ctx, apps.find(ctx, id_))
    emit(data, output, query, _app_row)


@app.command("delete")
def delete(id_: IdOpt, yes: YesOpt = False) -> None:
    """Delete an application, with its service principal, its secrets and the app role assignments of its roles.
    Tokens already issued for it stay valid until they expire."""
    from mi_cli.services import apps

    with transaction(write=True) as ctx:
        apps.delete(ctx, apps.find(ctx, id_))


def _end_date(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError("InvalidArgumentValue", f"argument --end-date: '{shown(text)}' is not a date, e.g. 2030-12-31 or "
                         "2030-12-31T23:59:59Z.") from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


@credential_app.command("reset")
def credential_reset(
    id_: IdOpt,
    years: Annotated[Optional[float], typer.Option("--years", help="Years the secret is valid (default 1).")] = None,
    end_date: Annotated[Optional[str], typer.Option("--end-date", help="When the secret expires, instead of --years.")] = None,
    display_name: Annotated[Optional[str], typer.Option("--display-name", help="A name for the secret.")] = None,
    append: Annotated[bool, typer.Option("--append", help="Keep the existing secrets (without it, they are removed).")] = False,
    output: OutputOpt = "table",
    query: QueryOpt = None,
) -> None:
    """Make a new client secret for an application and print it, with its appId and tenant, as az ad app credential
    reset does: the secret is shown this once. Existing secrets are removed unless --append."""
    from mi_cli.services import apps
    from mi_cli.services.tenancy import default_tenant

    end = _end_date(end_date) if end_date is not None else None
    with transaction(write=True) as ctx:
        application = apps.find(ctx, id_)
        secret = apps.reset_secret(ctx, application, years=years, end_date=end, display_name=display_name, append=append)
        data = {"appId": application.app_id, "password": secret, "tenant": default_tenant(ctx).id}
    print(f"WARNING: {apps.CREDENTIAL_WARNING}", file=sys.stderr)
    emit(data, output, query)


@credential_app.command("list")
def credential_list(id_: IdOpt, output: OutputOpt = "table", query: QueryOpt = None) -> None:
    """List an application's client secrets (their hints and dates: a secret itself is never shown again)."""
    from mi_cli.services import apps

    with transaction(write=False) as ctx:
        application = apps.find(ctx, id_)
        data = [apps.password_view(s) for s in apps.secrets_of(ctx, application)]
    emit(data, output, query, lambda p: {"KeyId": p["keyId"], "DisplayName": p["displayName"] or "", "Hint": p["hint"],
                                          "StartDateTime": p["startDateTime"], "EndDateTime": p["endDateTime"]},
         empty="No credentials found.")


@sp_app.command("show")
def sp_show(id_: IdOpt, output: OutputOpt = "table", query: QueryOpt = None) -> None:
    """Show an application's service principal, as Graph has it."""
    from mi_cli.services import apps

    with transaction(write=False) as ctx:
        data = apps.app_service_principal_view(apps.find(ctx, id_))
    emit(data, output, query, lambda s: {"DisplayName": s["displayName"], "Id": s["id"], "AppId": s["appId"],
                                         "ServicePrincipalType": s["servicePrincipalType"]})


def _with_value(ctx, view: dict) -> dict:  # noqa: ANN001
    """mi adds the role's value to Graph's appRoleAssignment, which names the role by id only."""
    from mi_cli.services import apps

    resource = apps.resource_by_sp_id(ctx, view["resourceId"])
    role = next((r for r in (resource.app_roles if resource else ()) if r["id"] == view["appRoleId"]), None)
    return {**view, "appRoleValue": role["value"] if role else None}


@role_app.command("assign")
def role_assign(assignee: AssigneeOpt, app_: AppOpt, role: RoleOpt, output: OutputOpt = "table",
                query: QueryOpt = None) -> None:
    """Grant an app role of an application to a managed identity (or an application): Graph's POST
    /servicePrincipals/{id}/appRoleAssignedTo. Granted again, it is Graph's error."""
    from mi_cli.services import apps

    with transaction(write=True) as ctx:
        resource = apps.resource_by_ref(ctx, app_)
        row = apps.assign_role(ctx, apps.principal(ctx, assignee), resource, role)
        data = _with_value(ctx, apps.assignment_view(ctx, row))
    emit(data, output, query, _assignment_row)


@role_app.command("list")
def role_list(
    app_: Annotated[Optional[str], typer.Option(
        "--app", help="Only the roles of this application (or 'Microsoft Graph').")] = None,
    assignee: Annotated[Optional[str], typer.Option("--assignee", help="Only the roles granted to this principal.")] = None,
    output: OutputOpt = "table",
    query: QueryOpt = None,
) -> None:
    """List app role assignments: of an application's roles (appRoleAssignedTo), of a principal
    (appRoleAssignments), or, with neither, all of them."""
    from mi_cli.services import apps

    with transaction(write=False) as ctx:
        if app_:
            rows = apps.assignments_to(ctx, apps.resource_by_ref(ctx, app_))
        elif assignee:
            rows = apps.assignments_of(ctx, apps.principal(ctx, assignee).id)
        else:
            rows = apps.all_assignments(ctx)
        if app_ and assignee:
            wanted = apps.principal(ctx, assignee).id
            rows = [r for r in rows if r.principal_id == wanted]
        data = [_with_value(ctx, apps.assignment_view(ctx, r)) for r in rows]
    emit(data, output, query, _assignment_row, empty="No app role assignments found.")


@role_app.command("remove")
def role_remove(
    assignee: AssigneeOpt,
    app_: AppOpt,
    role: Annotated[Optional[str], typer.Option("--role", help="The app role's value or id (default: every role of the "
                                                "application the assignee holds).")] = None,
    yes: YesOpt = False,
) -> None:
    """Remove app role assignments of an application from a principal. Removing what is not assigned succeeds."""
    from mi_cli.services import apps

    with transaction(write=True) as ctx:
        apps.remove_role(ctx, apps.principal(ctx, assignee), apps.resource_by_ref(ctx, app_), role)
