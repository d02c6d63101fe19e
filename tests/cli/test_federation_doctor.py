"""mi doctor finds the federated credentials no assertion can ever match (an issuer mi does not hold and no public
issuer is, a known issuer's URL spelt otherwise, Entra's own issuer, an http issuer, a subject with '*') and the
unusual ones (an audience other than api://AzureADTokenExchange), each fixed by the command it suggests; an
identity used only by federation is not "unattached". `mi identity federated-credential show` says what an
assertion must carry to match, in its table view; its JSON stays az's."""

from __future__ import annotations

import shlex
import sqlite3

import jwt
import pytest

GITHUB = "https://token.actions.githubusercontent.com"
AKS = "https://westeurope.oic.prod-aks.azure.com/8d3b2a71-4c3e-4f5e-9a1b-2c7d8e9f0a1b/4f6e2d1c-0b9a-4e8f-8d7c-6b5a4e3d2c1b/"
HELD = "https://ci.example.com"
EXCHANGE = "api://AzureADTokenExchange"
AZ_FIELDS = ["audiences", "id", "issuer", "name", "resourceGroup", "subject", "type"]


@pytest.fixture
def fed(ok):
    """ua-ci with one credential of each kind; mi holds the CI issuer https://ci.example.com."""
    ok("group", "create", "-n", "rg", "-l", "westeurope")
    made = {"ua": ok("identity", "create", "-g", "rg", "-n", "ua-ci"), "tenant": ok("account", "show")["tenantId"]}
    ok("federation", "issuer", "create", "--issuer", HELD)

    def credential(name: str, issuer: str, subject: str, audience: str = EXCHANGE) -> None:
        ok("identity", "federated-credential", "create", "-n", name, "--identity-name", "ua-ci", "-g", "rg",
           "--issuer", issuer, "--subject", subject, "--audiences", audience)

    credential("github-main", GITHUB, "repo:octo-org/octo-repo:ref:refs/heads/main")  # a public issuer: fine
    credential("aks-orders", AKS, "system:serviceaccount:orders:orders-api")  # fine
    credential("ci-held", HELD, "pipeline:deploy")  # mi holds it: fine
    credential("github-slash", GITHUB + "/", "repo:octo-org/octo-repo:environment:prod")
    credential("aks-no-slash", AKS.rstrip("/"), "system:serviceaccount:orders:worker")
    credential("ci-slash", HELD + "/", "pipeline:build")
    credential("nowhere", "https://issuer.nowhere.example.com", "job:1")
    credential("entra", f"https://login.microsoftonline.com/{made['tenant']}/v2.0", made["ua"]["principalId"])
    credential("gitlab", "https://gitlab.com", "project_path:octo/app:ref_type:branch:ref:main", "https://gitlab.com")
    return made


def _findings(ok) -> dict[tuple[str, str], dict]:
    return {(f["code"], f["target"].rsplit("/", 1)[-1]): f for f in ok("doctor")}


def test_doctor_finds_credentials_that_can_never_match_and_each_fix_removes_its_finding(ok, mi, fed):
    found = _findings(ok)
    assert set(found) == {("FederatedIssuerMisspelt", "github-slash"), ("FederatedIssuerMisspelt", "aks-no-slash"),
                          ("FederatedIssuerMisspelt", "ci-slash"), ("FederatedIssuerUnknown", "nowhere"),
                          ("FederatedIssuerIsEntra", "entra"), ("FederatedAudienceUnusual", "gitlab")}, set(found)
    slash = found[("FederatedIssuerMisspelt", "github-slash")]
    assert slash["severity"] == "error"
    assert slash["target"] == f"{fed['ua']['id']}/federatedIdentityCredentials/github-slash"
    assert slash["message"] == (f"The federated credential github-slash of ua-ci: the issuer '{GITHUB}/' looks like the "
                                "issuer of GitHub Actions, but its tokens' iss has no trailing '/': Entra compares iss "
                                "character for character, so no token of that issuer matches.")
    assert "its tokens' iss ends with '/'" in found[("FederatedIssuerMisspelt", "aks-no-slash")]["message"]
    assert f"mi holds '{HELD}'" in found[("FederatedIssuerMisspelt", "ci-slash")]["message"]
    assert "(AADSTS50166)" in found[("FederatedIssuerUnknown", "nowhere")]["message"]
    assert "(AADSTS700222)" in found[("FederatedIssuerIsEntra", "entra")]["message"]
    unusual = found[("FederatedAudienceUnusual", "gitlab")]
    assert unusual["severity"] == "warning" and "'https://gitlab.com' is allowed but unusual" in unusual["message"]
    # an identity used only by federation is in use, though attached to no resource
    assert not [f for f in ok("doctor") if f["code"] == "UnattachedUserAssignedIdentity"]
    assert mi("doctor", "--strict").code == 1
    for finding in found.values():
        for command in finding["fix"]:
            argv = shlex.split(command)
            assert argv[0] == "mi"
            r = mi(*argv[1:])
            assert r.code == 0, (command, r.err)
        assert (finding["code"], finding["target"].rsplit("/", 1)[-1]) not in _findings(ok), finding
    assert ok("doctor") == []
    fixed = {f["name"]: f for f in ok("identity", "federated-credential", "list", "--identity-name", "ua-ci", "-g", "rg")}
    assert (fixed["github-slash"]["issuer"], fixed["aks-no-slash"]["issuer"], fixed["ci-slash"]["issuer"]) == (
        GITHUB, AKS, HELD)
    assert fixed["gitlab"]["audiences"] == [EXCHANGE] and "entra" not in fixed
    assert ok("federation", "issuer", "show", "--issuer", "https://issuer.nowhere.example.com")["issuer"] == \
        "https://issuer.nowhere.example.com"


def test_a_store_from_before_the_checks_a_wildcard_subject_and_an_http_issuer(ok, mi, db, fed):
    """Azure refuses both when a credential is written; a store may hold them from before mi did."""
    con = sqlite3.connect(db)
    with con:
        con.execute("UPDATE federated_credential SET subject = ? WHERE name = 'github-main'", ("repo:octo-org/*",))
        con.execute("UPDATE federated_credential SET issuer = ? WHERE name = 'ci-held'", ("http://ci.example.com",))
    con.close()
    found = _findings(ok)
    wildcard = found[("FederatedSubjectWildcard", "github-main")]
    assert wildcard["severity"] == "error" and "holds '*', which Azure compares as the character itself" in \
        wildcard["message"]
    assert wildcard["fix"] == [f"mi identity federated-credential delete -n github-main --identity-name "
                               f"{fed['ua']['id']} --yes"]
    http = found[("FederatedIssuerNotHttps", "ci-held")]
    assert http["fix"][0].endswith(f"--issuer {HELD}")
    for finding in (wildcard, http):
        assert mi(*shlex.split(finding["fix"][0])[1:]).code == 0
    assert not {("FederatedSubjectWildcard", "github-main"), ("FederatedIssuerNotHttps", "ci-held")} & set(_findings(ok))
    table = mi("doctor", "-o", "table").out
    # grouped by kind, errors first, each finding under its kind
    kinds = [line for line in table.splitlines() if not line.startswith(" ")]
    assert "ERROR FederatedIssuerUnknown (1)" in kinds and "WARNING FederatedAudienceUnusual (1)" in kinds
    assert kinds.index("ERROR FederatedIssuerUnknown (1)") < kinds.index("WARNING FederatedAudienceUnusual (1)")
    assert "\n  The federated credential nowhere of ua-ci:" in table


def test_show_explains_what_an_assertion_must_carry_and_its_json_stays_azs(ok, mi, fed):
    shown = ok("identity", "federated-credential", "show", "-n", "aks-orders", "--identity-name", "ua-ci", "-g", "rg")
    assert list(shown) == AZ_FIELDS  # no field az does not print
    listed = ok("identity", "federated-credential", "list", "--identity-name", "ua-ci", "-g", "rg")
    assert shown == next(f for f in listed if f["name"] == "aks-orders")
    r = mi("identity", "federated-credential", "show", "-n", "aks-orders", "--identity-name", "ua-ci", "-g", "rg",
           "-o", "table")
    assert r.code == 0 and r.err == ""
    lines = r.out.splitlines()
    assert lines[0].split() == ["Name", "Issuer", "Subject", "Audiences"]
    assert "An assertion matches this credential only if it carries, compared exactly and case-sensitively:" in lines
    assert f"  iss  {AKS}" in lines and "  sub  system:serviceaccount:orders:orders-api" in lines
    assert f"  aud  {EXCHANGE}   (the aud, or one of its values)" in lines
    assert "The issuer ends with '/': the assertion's iss must end with it too (AKS issuers do)." in lines
    assert any("'*' or a prefix matches only itself" in line and "AADSTS7002138" in line for line in lines)
    assert f"Exchange it at https://login.microsoftonline.com/{fed['tenant']}/oauth2/v2.0/token with client_id " \
           f"{fed['ua']['clientId']}, client_assertion_type urn:ietf:params:oauth:client-assertion-type:jwt-bearer." in lines
    assert lines[-1] == "mi holds no keys for this issuer: its assertions are refused as from an unreachable issuer " \
                        "(AADSTS50166)."
    # -o json and --query: the data only
    assert mi("identity", "federated-credential", "show", "-n", "aks-orders", "--identity-name", "ua-ci", "-g", "rg",
              "--query", "issuer", "-o", "tsv").out == AKS + "\n"


def test_show_of_a_held_issuer_gives_the_command_that_mints_a_matching_assertion(ok, mi, fed):
    out = mi("identity", "federated-credential", "show", "-n", "ci-held", "--identity-name", "ua-ci", "-g", "rg",
             "-o", "table").out
    assert "The issuer has no trailing '/': an iss that ends with one does not match (GitHub's has none)." in out
    [line] = [line for line in out.splitlines() if line.startswith("mi holds this issuer: ")]
    command = line.removeprefix("mi holds this issuer: ").removesuffix(" mints one that matches.")
    argv = shlex.split(command)
    assert argv[:3] == ["mi", "federation", "token"]
    assertion = mi(*argv[1:], "--query", "assertion", "-o", "tsv").out.strip()
    claims = jwt.decode(assertion, options={"verify_signature": False})
    assert (claims["iss"], claims["sub"], claims["aud"]) == (HELD, "pipeline:deploy", EXCHANGE)
