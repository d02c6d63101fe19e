"""`mi federation`: simulated external issuers kept in the store (their URL exactly as given, their kind, their own
key) and the assertions they mint, with the claims GitHub Actions and Kubernetes put in theirs; bad input refused in
az's form with nothing stored."""

from __future__ import annotations

import json
import sqlite3

import jwt
import pytest

from mi_cli.models import SCHEMA_VERSION
from mi_cli.services import Ctx, federation
from mi_cli.store import open_store
from tests.conftest import dump, one_error

GITHUB = "https://token.actions.githubusercontent.com"
AKS = "https://eastus.oic.prod-aks.azure.com/72f988bf-86f1-41af-91ab-2d7cd011db47/4f3e1b2a-9c8d-4e7f-8a6b-5c4d3e2f1a0b/"
EXCHANGE = "api://AzureADTokenExchange"


def _verified(db, issuer: str, token: str, audience: str = EXCHANGE) -> dict:
    """The token's claims, its signature checked with the keys the issuer publishes."""
    store = open_store(db)
    try:
        with store.transaction(write=False) as session:
            keys = federation.signing_keys(Ctx.from_env(session), issuer)
    finally:
        store.close()
    key = jwt.PyJWKSet.from_dict({"keys": keys})[jwt.get_unverified_header(token)["kid"]]
    return jwt.decode(token, key.key, algorithms=["RS256"], audience=audience, issuer=issuer,
                      options={"verify_nbf": False})


def _token(ok, issuer: str, subject: str, *extra: str) -> str:
    return ok("federation", "token", "--issuer", issuer, "--subject", subject, *extra)["assertion"]


def test_issuers_are_created_with_a_kind_from_their_url_and_kept_exactly(ok, mi):
    made = {url: ok("federation", "issuer", "create", "--issuer", url) for url in (
        GITHUB, AKS, "https://oidc.prod-aks.azure.com/0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b/",
        "https://github.contoso.com/_services/token", "https://idp.example.com/tenant")}
    assert [m["kind"] for m in made.values()] == ["github", "kubernetes", "kubernetes", "github", "generic"]
    github, aks = made[GITHUB], made[AKS]
    assert github["issuer"] == GITHUB and aks["issuer"] == AKS  # the trailing slash is kept
    assert github["openidConfiguration"] == f"{GITHUB}/.well-known/openid-configuration"
    assert github["jwksUri"] == f"{GITHUB}/.well-known/jwks"
    assert aks["jwksUri"] == f"{AKS}openid/v1/jwks" and aks["openidConfiguration"] == f"{AKS}.well-known/openid-configuration"
    assert set(github) == {"createdAt", "issuer", "jwksUri", "kid", "kind", "openidConfiguration"}
    assert [i["issuer"] for i in ok("federation", "issuer", "list")] == list(made)
    assert ok("federation", "issuer", "show", "--issuer", AKS) == aks
    again = ok("federation", "issuer", "create", "--issuer", GITHUB, "--kind", "github")
    assert again == github  # the same issuer, its key unchanged
    explicit = ok("federation", "issuer", "create", "--issuer", "https://cluster.example.com/", "--kind", "kubernetes")
    assert explicit["kind"] == "kubernetes"

    other = mi("federation", "issuer", "create", "--issuer", GITHUB, "--kind", "generic")
    assert other.code == 1 and one_error(other.err) and "exists with kind 'github'" in other.err
    assert mi("federation", "issuer", "delete", "--issuer", GITHUB).code == 0
    gone = mi("federation", "issuer", "show", "--issuer", GITHUB)
    assert gone.code == 3 and one_error(gone.err) and gone.err.startswith("ERROR: (IssuerNotFound) No issuer ")
    assert mi("federation", "issuer", "delete", "--issuer", GITHUB).code == 3
    remade = ok("federation", "issuer", "create", "--issuer", GITHUB)
    assert remade["kid"] != github["kid"]  # a new issuer, with a new key
    table = mi("federation", "issuer", "list", "-o", "table")
    assert table.code == 0 and table.out.split("\n")[0].split() == ["Issuer", "Kind", "Kid", "Created"]


@pytest.mark.parametrize(("url", "why"), [
    ("http://token.actions.githubusercontent.com", "must be an https URL"),
    ("token.actions.githubusercontent.com", "must be an https URL"),
    ("https://idp.example.com/?tenant=1", "must not have a query or a fragment"),
    ("https://idp.example.com/#frag", "must not have a query or a fragment"),
    ("https://idp.example.com:8443/", "must not name a port"),
    ("https://user@idp.example.com/", "must not carry a user name"),
    ("https://127.0.0.1/", "must name a DNS host"),
    ("https://localhost/", "must name a DNS host"),
    ("https:///path", "must name a DNS host"),
    (" https://idp.example.com", "white space"),
    ("https://idp.example.com/a b", "white space"),
    ("https://idp.example.com/\x1b[31m", "control character"),
    ("https://idp.example.com/" + "a" * 600, "an issuer has at most 600"),
    ("https://login.microsoftonline.com/tenant/v2.0", "a host of Azure's that the local cloud serves itself"),
    ("https://kv1.vault.azure.net/", "a host of Azure's"),
    ("", "must not be empty"),
])
def test_bad_issuer_urls_are_refused_in_azs_form_with_nothing_stored(mi, db, url, why):
    assert mi("group", "list", "-o", "none").code == 0  # the store exists
    before = dump(db)
    for argv in (("federation", "issuer", "create", "--issuer", url),
                 ("federation", "token", "--issuer", url, "--subject", "repo:o/r:ref:refs/heads/main")):
        result = mi(*argv)
        assert result.code == 2 and one_error(result.err), (argv, result.err)
        assert result.err.startswith("ERROR: (InvalidArgumentValue) ") and why in result.err, result.err
        assert "\x1b" not in result.err and result.out == ""
    assert dump(db) == before


def test_an_issuer_that_would_publish_at_an_existing_ones_address_is_refused(ok, mi, db):
    ok("federation", "issuer", "create", "--issuer", AKS)
    before = dump(db)
    for twin in (AKS.rstrip("/"), AKS.replace("eastus.oic", "EastUS.oic")):
        result = mi("federation", "issuer", "create", "--issuer", twin)
        assert result.code == 1 and one_error(result.err) and "(IssuerConflict)" in result.err
    assert dump(db) == before
    # another path on the same host is another issuer
    ok("federation", "issuer", "create", "--issuer", AKS.replace("4f3e1b2a", "00000000"))


def test_a_github_assertion_carries_githubs_claims_derived_from_the_subject(ok, db):
    subject = "repo:contoso/web-app:ref:refs/heads/main"
    token = _token(ok, GITHUB, subject)
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "RS256", "kid": header["kid"], "typ": "JWT", "x5t": header["kid"]}
    claims = _verified(db, GITHUB, token)
    assert list(claims) == [
        "jti", "sub", "aud", "ref", "sha", "repository", "repository_owner", "actor_id", "repository_visibility",
        "repository_id", "repository_owner_id", "run_id", "run_number", "run_attempt", "runner_environment", "actor",
        "workflow", "head_ref", "base_ref", "event_name", "ref_protected", "ref_type", "workflow_ref", "workflow_sha",
        "job_workflow_ref", "job_workflow_sha", "iss", "nbf", "exp", "iat"]
    assert claims["iss"] == GITHUB and claims["sub"] == subject and claims["aud"] == EXCHANGE
    assert claims["repository"] == "contoso/web-app" and claims["repository_owner"] == "contoso"
    assert claims["ref"] == "refs/heads/main" and claims["ref_type"] == "branch" and claims["event_name"] == "push"
    assert claims["job_workflow_ref"] == "contoso/web-app/.github/workflows/deploy.yml@refs/heads/main"
    assert claims["runner_environment"] == "github-hosted" and len(claims["sha"]) == 40
    for name in ("repository_id", "repository_owner_id", "actor_id", "run_id", "run_number", "run_attempt"):
        assert isinstance(claims[name], str) and claims[name].isdigit(), name  # numeric ids as GitHub sends them
    assert claims["exp"] - claims["iat"] == 300 and claims["iat"] - claims["nbf"] == 300
    assert isinstance(claims["iat"], int)
    again = _verified(db, GITHUB, _token(ok, GITHUB, subject))
    assert again["jti"] != claims["jti"] and again["repository_id"] == claims["repository_id"]  # stable ids


@pytest.mark.parametrize(("subject", "expected"), [
    ("repo:octo-org/octo-repo:ref:refs/tags/v1.2.0", {"ref": "refs/tags/v1.2.0", "ref_type": "tag"}),
    ("repo:octo-org/octo-repo:environment:prod", {"environment": "prod", "ref": "refs/heads/main"}),
    ("repo:octo-org/octo-repo:environment:a%3Ab", {"environment": "a:b"}),
    ("repo:octo-org/octo-repo:pull_request", {"event_name": "pull_request", "ref": "refs/pull/1/merge",
                                              "base_ref": "main"}),
    ("repo:contoso@1234/api@56789:ref:refs/heads/dev", {"repository": "contoso/api", "repository_owner_id": "1234",
                                                       "repository_id": "56789", "ref": "refs/heads/dev"}),
    ("something-else", {"repository": "octo-org/octo-repo", "sub": "something-else"}),
])
def test_githubs_subject_forms(ok, db, subject, expected):
    claims = _verified(db, GITHUB, _token(ok, GITHUB, subject))
    assert {k: claims.get(k) for k in expected} == expected


def test_a_kubernetes_assertion_is_a_projected_service_account_token(ok, db):
    token = _token(ok, AKS, "system:serviceaccount:payments:api", "--lifetime", "7200")
    assert jwt.get_unverified_header(token) == {"alg": "RS256", "kid": jwt.get_unverified_header(token)["kid"]}
    claims = _verified(db, AKS, token)
    assert list(claims) == ["aud", "exp", "iat", "iss", "jti", "kubernetes.io", "nbf", "sub"]
    assert claims["aud"] == [EXCHANGE] and claims["iss"] == AKS and claims["sub"] == "system:serviceaccount:payments:api"
    assert claims["iat"] == claims["nbf"] and claims["exp"] - claims["iat"] == 7200
    k8s = claims["kubernetes.io"]
    assert k8s["namespace"] == "payments" and k8s["serviceaccount"]["name"] == "api"
    assert len(k8s["serviceaccount"]["uid"]) == 36 and k8s["pod"]["name"].startswith("api-")
    default = _verified(db, AKS, _token(ok, AKS, "system:serviceaccount:payments:api"))
    assert default["exp"] - default["iat"] == 3600
    assert default["kubernetes.io"]["serviceaccount"]["uid"] == k8s["serviceaccount"]["uid"]  # the same account


def test_a_generic_issuer_signs_the_registered_claims(ok, db):
    issuer = "https://idp.example.com/"
    claims = _verified(db, issuer, _token(ok, issuer, "workload-7", "--audience", "api://custom"), audience="api://custom")
    assert list(claims) == ["iss", "sub", "aud", "jti", "iat", "nbf", "exp"]
    assert claims["iss"] == issuer and claims["aud"] == "api://custom"


def test_claims_are_added_or_replaced_as_json_or_text(ok, mi, db):
    token = _token(ok, GITHUB, "repo:o/r:ref:refs/heads/main", "--claim", "run_id=\"42\"", "--claim", "x=5",
                   "--claim", "flag=true", "--claim", 'obj={"a": [1]}', "--claim", "text=not json",
                   "--claim", "exp=1000", "--claim", "empty=")
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["run_id"] == "42" and claims["x"] == 5 and claims["flag"] is True and claims["obj"] == {"a": [1]}
    assert claims["text"] == "not json" and claims["exp"] == 1000 and claims["empty"] == ""
    with pytest.raises(jwt.ExpiredSignatureError):
        _verified(db, GITHUB, token)  # an expired assertion, signed by the issuer
    before = dump(db)
    bad = mi("federation", "token", "--issuer", GITHUB, "--subject", "s", "--claim", "noequals")
    assert bad.code == 2 and one_error(bad.err) and "is not NAME=VALUE" in bad.err
    assert dump(db) == before


def test_the_bare_assertion_and_the_json_form(ok, mi):
    result = mi("federation", "token", "--issuer", GITHUB, "--subject", "repo:o/r:pull_request", "--query",
                "assertion", "-o", "tsv")
    assert result.code == 0 and result.out.count(".") == 2 and result.out.endswith("\n") and "\t" not in result.out
    data = ok("federation", "token", "--issuer", GITHUB, "--subject", "repo:o/r:pull_request")
    assert set(data) == {"assertion", "audience", "expiresOn", "issuer", "kid", "kind", "subject"}
    assert data["kind"] == "github" and data["expiresOn"] == jwt.decode(
        data["assertion"], options={"verify_signature": False})["exp"]
    table = mi("federation", "token", "--issuer", GITHUB, "--subject", "repo:o/r:pull_request", "-o", "table")
    assert table.code == 0 and "repository_owner" in table.out and "\nassertion: ey" in table.out


def test_mint_creates_the_issuer_on_first_use_and_bad_input_stores_nothing(ok, mi, db):
    assert mi("group", "list", "-o", "none").code == 0
    before = dump(db)
    for extra, why in ((("--lifetime", "59"), "from 60 to 86400"), (("--lifetime", "86401"), "from 60 to 86400"),
                       (("--audience", ""), "audience must not be empty"),
                       (("--audience", "a" * 601), "at most 600")):
        result = mi("federation", "token", "--issuer", AKS, "--subject", "system:serviceaccount:ns:sa", *extra)
        assert result.code == 2 and one_error(result.err) and why in result.err, result.err
    wrong = mi("federation", "token", "--issuer", AKS, "--subject", "repo:o/r:ref:refs/heads/main")
    assert wrong.code == 2 and "system:serviceaccount:NAMESPACE:NAME" in wrong.err
    assert dump(db) == before and ok("federation", "issuer", "list") == []
    longest = _token(ok, AKS, "system:serviceaccount:ns:sa", "--lifetime", "86400")
    assert _verified(db, AKS, longest)["exp"] - _verified(db, AKS, longest)["iat"] == 86400
    assert [i["issuer"] for i in ok("federation", "issuer", "list")] == [AKS]
    log = ok("log", "--operation", "federationIssuers")
    assert len(log) == 1 and AKS in json.dumps(log)


def test_signing_keys_are_the_issuers_published_keys_or_none(ok, db):
    _token(ok, GITHUB, "repo:o/r:ref:refs/heads/main")
    _token(ok, AKS, "system:serviceaccount:ns:sa")
    store = open_store(db)
    try:
        with store.transaction(write=False) as session:
            ctx = Ctx.from_env(session)
            github, aks = federation.signing_keys(ctx, GITHUB), federation.signing_keys(ctx, AKS)
            assert federation.signing_keys(ctx, GITHUB + "/") is None  # the trailing slash counts
            assert federation.signing_keys(ctx, AKS.rstrip("/")) is None
            assert federation.signing_keys(ctx, "https://unknown.example.com") is None
    finally:
        store.close()
    assert set(github[0]) == {"kty", "alg", "use", "kid", "n", "e", "x5c", "x5t"} and github[0]["kid"] == github[0]["x5t"]
    assert set(aks[0]) == {"use", "kty", "kid", "alg", "n", "e"}  # as a cluster's /openid/v1/jwks has them
    assert all(k["kty"] == "RSA" and k["alg"] == "RS256" and "d" not in k for k in github + aks)


def test_a_version_7_store_gains_the_issuer_table(mi, ok, db):
    assert mi("group", "list", "-o", "none").code == 0
    con = sqlite3.connect(db)
    con.execute("DROP TABLE federation_issuer")
    con.execute("UPDATE meta SET value = '7' WHERE key = 'schema_version'")
    con.commit()
    con.close()
    ok("federation", "issuer", "create", "--issuer", GITHUB)
    con = sqlite3.connect(db)
    assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (str(SCHEMA_VERSION),)
    assert con.execute("SELECT url, kind FROM federation_issuer").fetchall() == [(GITHUB, "github")]
    con.close()
    assert SCHEMA_VERSION >= 8
