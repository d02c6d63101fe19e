"""`mi federation`: simulated external issuers (GitHub Actions, a Kubernetes cluster, any https URL) and the
assertions they mint, for workloads that exchange them through a user-assigned identity's federated credential."""

from __future__ import annotations

import sys
from enum import Enum
from typing import Annotated, Optional

import typer

from mi_cli.cli.options import OutputOpt, QueryOpt
from mi_cli.cli.runtime import emit, transaction, wants_table

app = typer.Typer(help="Workload identity federation: simulated external issuers, served at their own host names "
                  "through mi serve's local cloud, and the assertions they mint.", no_args_is_help=True)
issuer_app = typer.Typer(help="Simulated issuers: mi keeps each one's signing key and publishes its OpenID metadata "
                         "and keys at the issuer's URL (through mi serve's proxy).", no_args_is_help=True)
app.add_typer(issuer_app, name="issuer")

# Services (SQLAlchemy, jwt, cryptography) are imported inside each command, so that `mi --help` loads none of them.

IssuerOpt = Annotated[str, typer.Option("--issuer", help="The issuer URL, exactly as tokens carry it in iss (a "
                                        "trailing slash is part of it), e.g. https://token.actions.githubusercontent.com.")]


class Kind(str, Enum):
    github = "github"
    kubernetes = "kubernetes"
    generic = "generic"


def _issuer_row(i: dict) -> dict:
    return {"Issuer": i["issuer"], "Kind": i["kind"], "Kid": i["kid"], "Created": i["createdAt"]}


@issuer_app.command("create")
def issuer_create(
    issuer: IssuerOpt,
    kind: Annotated[Optional[Kind], typer.Option("--kind", case_sensitive=False, help="Which claims its tokens carry "
                    "and how it publishes its keys (default: from the URL: token.actions.githubusercontent.com is "
                    "github, *.oic.prod-aks.azure.com kubernetes, any other generic).")] = None,
    output: OutputOpt = "table",
    query: QueryOpt = None,
) -> None:
    """Create an issuer with a signing key of its own. Creating one that exists shows it."""
    from mi_cli.services import federation

    with transaction(write=True) as ctx:
        data = federation.view(federation.create(ctx, issuer, kind.value if kind else None))
    emit(data, output, query, _issuer_row)


@issuer_app.command("list")
def issuer_list(output: OutputOpt = "table", query: QueryOpt = None) -> None:
    """List the issuers, oldest first."""
    from mi_cli.services import federation

    with transaction(write=False) as ctx:
        data = [federation.view(i) for i in federation.list_all(ctx)]
    emit(data, output, query, _issuer_row, empty="No federation issuers found.")


@issuer_app.command("show")
def issuer_show(issuer: IssuerOpt, output: OutputOpt = "table", query: QueryOpt = None) -> None:
    """Show an issuer: its kind, kid, and where its metadata and keys are published."""
    from mi_cli.services import federation

    with transaction(write=False) as ctx:
        data = federation.view(federation.require(ctx, issuer))
    emit(data, output, query, _issuer_row)


@issuer_app.command("delete")
def issuer_delete(issuer: IssuerOpt) -> None:
    """Delete an issuer and its key: its host is no longer answered by the local cloud, and its assertions no
    longer verify (Entra cannot reach an issuer that is gone)."""
    from mi_cli.services import federation

    with transaction(write=True) as ctx:
        federation.delete(ctx, issuer)


@app.command("token")
def token(
    issuer: IssuerOpt,
    subject: Annotated[str, typer.Option("--subject", help="The sub claim, e.g. repo:OWNER/REPO:ref:refs/heads/main "
                                         "(GitHub) or system:serviceaccount:NAMESPACE:NAME (Kubernetes).")],
    audience: Annotated[str, typer.Option("--audience", help="The aud claim (a one-element array for Kubernetes).")]
    = "api://AzureADTokenExchange",
    claim: Annotated[Optional[list[str]], typer.Option("--claim", metavar="NAME=VALUE", help="Add or replace a claim; "
                     "the value is JSON when it parses (5, true, {\"a\":1}, \"5\"), else a string. Repeatable.")] = None,
    lifetime: Annotated[Optional[int], typer.Option("--lifetime", metavar="SECONDS", help="exp - iat, 60 to 86400 "
                        "(default: 300 for GitHub, as its tokens' 5 minutes; 3600 otherwise, AKS's projected token's).")]
    = None,
    output: OutputOpt = "table",
    query: QueryOpt = None,
) -> None:
    """Mint an assertion from an issuer (created on first use, its kind from the URL), with the claims that issuer
    puts in its tokens.

    The bare token: --query assertion -o tsv, e.g. az login --service-principal -u CLIENT_ID --tenant TENANT
    --federated-token "$(mi federation token --issuer ... --subject ... --query assertion -o tsv)".
    """
    import jwt

    from mi_cli.services import federation

    extra = dict(federation.parse_claim(c) for c in claim or [])
    with transaction(write=True) as ctx:
        assertion = federation.mint(ctx, issuer, subject, audience, extra, lifetime)
        kind = federation.require(ctx, issuer).kind
    claims = jwt.decode(assertion, options={"verify_signature": False})
    data = {"assertion": assertion, "audience": audience, "expiresOn": claims.get("exp"), "issuer": issuer,
            "kid": jwt.get_unverified_header(assertion).get("kid"), "kind": kind, "subject": subject}
    if wants_table(output, query):
        from mi_cli.render import write_table

        write_table([{"Claim": k, "Value": v} for k, v in claims.items()], sys.stdout)
        print(f"\nassertion: {assertion}")
        return
    emit(data, output, query)
