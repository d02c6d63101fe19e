"""`mi token`: get a resource's managed-identity token, decode or verify one, manage signing keys."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from mi_cli.cli.options import OutputOpt, QueryOpt, SubscriptionOpt
from mi_cli.cli.runtime import emit, transaction, wants_table
from mi_cli.errors import InvalidTokenError, UsageError

app = typer.Typer(help="Managed-identity tokens: get, decode, verify; the tenant's signing keys.", no_args_is_help=True)
keys_app = typer.Typer(help="The tenant's RS256 signing keys (the private parts are never shown).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

# Services (SQLAlchemy, jwt) and the table renderer (rich) are imported inside each command, so that
# `mi --help` and completion load none of them.

TokenArg = Annotated[str, typer.Argument(help="The token (a JWT), or - to read it from stdin.")]


def _read_token(token: str) -> str:
    try:
        text = sys.stdin.read() if token == "-" else token
    except UnicodeDecodeError:
        raise InvalidTokenError("InvalidToken", "This is not a JWT: the input is not text.") from None
    text = text.strip()
    if text.lower().startswith("bearer "):
        text = text[7:].strip()
    if not text:
        raise UsageError("MissingArgument", "No token was given.")
    return text


@app.command("get")
def get(
    resource: Annotated[str, typer.Option("--resource", help="Name or id of the resource whose identity asks.")],
    audience: Annotated[str, typer.Option("--audience", "--scope", help="The resource the token is for, e.g. https://vault.azure.net.")],
    group: Annotated[Optional[str], typer.Option("--resource-group", "-g", help="Name of the resource group.")] = None,
    client_id: Annotated[Optional[str], typer.Option("--client-id", help="Choose a user-assigned identity by client id.")] = None,
    object_id: Annotated[Optional[str], typer.Option("--object-id", help="Choose an identity by object (principal) id.")] = None,
    msi_res_id: Annotated[Optional[str], typer.Option("--msi-res-id", help="Choose a user-assigned identity by resource id.")] = None,
    type_: Annotated[Optional[str], typer.Option("--type", "-t", help="Resource type or alias, when names collide.")] = None,
    subscription: SubscriptionOpt = None,
    output: OutputOpt = "table",
    query: QueryOpt = None,
) -> None:
    """Get a token as the resource's identity would from IMDS: the same rules pick the identity.

    JSON output is IMDS's response; the table shows the decoded claims and the token.
    """
    from mi_cli.services import lookup, tokens

    scope = audience.removesuffix("/.default")
    selector = {"client_id": client_id, "object_id": object_id, "msi_res_id": msi_res_id}  # IMDS's names
    with transaction(write=True) as ctx:
        res = lookup.resource(ctx, resource, group, subscription=subscription, type_text=type_)
        outcome = tokens.get_token(ctx, res, scope, selector, endpoint=tokens.IMDS, via="cli")
    if isinstance(outcome, tokens.TokenError):
        if outcome.reason:
            outcome.add_next_step(outcome.reason)
        raise outcome  # recorded in the activity log, as a refused sign-in is
    _emit_claims(tokens.token_body(outcome, endpoint=tokens.IMDS), outcome.claims, output, query)
    if wants_table(output, query):
        print(f"\naccess_token: {outcome.access_token}")


def _emit_claims(data: dict, claims: dict, output, query) -> None:  # noqa: ANN001
    """JSON forms carry `data`; the table shows the claims, one row each."""
    if wants_table(output, query):
        from mi_cli.render import write_table

        write_table([{"Claim": k, "Value": v} for k, v in sorted(claims.items())], sys.stdout)
        return
    emit(data, output, query)


@app.command("decode")
def decode(token: TokenArg, output: OutputOpt = "table", query: QueryOpt = None) -> None:
    """Show a token's header and claims, without checking anything."""
    from mi_cli.services import tokens

    header, claims = tokens.decode(_read_token(token))
    _emit_claims({"header": header, "claims": claims}, claims, output, query)


@app.command("verify")
def verify(
    token: TokenArg,
    audience: Annotated[Optional[str], typer.Option("--audience", help="The audience the token must have.")] = None,
    output: OutputOpt = "table",
    query: QueryOpt = None,
) -> None:
    """Verify a token: signature against this tenant's published keys, expiry, issuer and audience.

    A token that fails any check is an error (exit 1) that says why. The table says what was checked,
    then shows the claims.
    """
    from mi_cli.services import tokens

    text = _read_token(token)
    with transaction(write=False) as ctx:
        claims = tokens.verify(ctx, text, audience=audience)
    if wants_table(output, query):
        from mi_cli.render import write_table

        write_table(_checks(tokens.decode(text)[0], claims, audience), sys.stdout)
        print()
    _emit_claims({"valid": True, "claims": claims}, claims, output, query)


def _checks(header: dict, claims: dict, audience: str | None) -> list[dict]:
    """What `verify` found, one row a check, for people: it got here, so every check passed."""
    from datetime import datetime, timezone

    def when(epoch) -> str:  # noqa: ANN001
        return datetime.fromtimestamp(int(epoch), timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")

    aud = claims.get("aud")
    aud = ", ".join(aud) if isinstance(aud, list) else str(aud)
    return [
        {"Check": "Valid", "Result": "yes"},
        {"Check": "Signature", "Result": f"RS256, by this tenant's published key {header.get('kid')}"},
        {"Check": "Issuer", "Result": claims.get("iss")},
        {"Check": "Lifetime", "Result": f"{when(claims['nbf'])} to {when(claims['exp'])}"},
        {"Check": "Audience", "Result": f"{aud} (as --audience asks)" if audience else f"{aud} (not checked: no --audience)"},
    ]


def _key_row(k: dict) -> dict:
    return {"Kid": k["kid"], "Status": k["status"], "Created": k["createdAt"][:19], "Retired": (k["retiredAt"] or "")[:19]}


@keys_app.command("list")
def keys_list(output: OutputOpt = "table", query: QueryOpt = None) -> None:
    """List the signing keys: the active ones are published in the JWKS."""
    from mi_cli.services import keys

    with transaction(write=False) as ctx:
        data = [keys.view(k) for k in keys.list_all(ctx)]
    emit(data, output, query, _key_row, empty="No signing keys yet: the first token issued creates one.")


@keys_app.command("rotate")
def keys_rotate(output: OutputOpt = "table", query: QueryOpt = None) -> None:
    """Add a new signing key; it signs from now on, and older keys stay published until retired."""
    from mi_cli.services import keys, tenancy

    with transaction(write=True) as ctx:
        tenant = tenancy.default_tenant(ctx)
        if keys.active(ctx, tenant, create=False) is None:
            keys.active(ctx, tenant)  # a first key exists before the rotation
        data = keys.view(keys.rotate(ctx, tenant))
    emit(data, output, query, _key_row)


@keys_app.command("retire")
def keys_retire(
    kid: Annotated[str, typer.Option("--kid", help="The key id to retire.")],
    output: OutputOpt = "table",
    query: QueryOpt = None,
) -> None:
    """Retire a signing key: it leaves the JWKS, and tokens it signed stop verifying."""
    from mi_cli.services import keys

    with transaction(write=True) as ctx:
        data = keys.view(keys.retire(ctx, kid))
    emit(data, output, query, _key_row)
