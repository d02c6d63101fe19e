"""`mi token` and `mi env` from the command line; signing keys; the store's schema migration."""

from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path
from datetime import datetime, timedelta, timezone

import pytest

from mi_cli.cli.main import main
from mi_cli.models import SCHEMA_VERSION
from tests.conftest import dump, one_error

VAULT = "https://vault.azure.net"


def _token(ok, resource="vm1", *extra):
    return ok("token", "get", "--resource", resource, "-g", "rg", "--audience", VAULT, *extra)["access_token"]


def test_token_get_verify_and_decode(ok, mi, scenario):
    body = ok("token", "get", "--resource", "vm1", "-g", "rg", "--audience", f"{VAULT}/.default")
    assert body["resource"] == VAULT and body["token_type"] == "Bearer" and body["expires_in"] == "86399"
    verified = ok("token", "verify", body["access_token"], "--audience", VAULT + "/")  # a trailing slash is the same audience
    assert verified["valid"] is True
    vm = ok("resource", "show", "-g", "rg", "-n", "vm1")
    assert verified["claims"]["oid"] == vm["identity"]["principalId"]
    decoded = ok("token", "decode", body["access_token"])
    assert decoded["header"]["alg"] == "RS256" and decoded["header"]["kid"]
    assert decoded["claims"] == verified["claims"]
    table = mi("token", "get", "--resource", "vm1", "-g", "rg", "--audience", VAULT, "-o", "table").out
    assert "xms_mirid" in table and "access_token: ey" in table


def test_token_get_uses_the_same_selection_rules(ok, mi, scenario):
    by_client = ok("token", "get", "--resource", "vm1", "-g", "rg", "--audience", VAULT, "--client-id", scenario["clientId"])
    claims = ok("token", "decode", by_client["access_token"])["claims"]
    assert claims["oid"] == scenario["principalId"] and claims["xms_az_rid"].endswith("/virtualMachines/vm1")
    r = mi("token", "get", "--resource", "app1", "-g", "rg", "--audience", VAULT, "--client-id", "00000000-0000-0000-0000-000000000000")
    assert (r.code, r.err) == (1, "ERROR: (invalid_request) Identity not found. The identity named is not one of 'app1', "
                                  f"which holds user-assigned client id {scenario['clientId']}.\n")
    refused = ok("log", "--operation", "token/issue", "--status", "Failed")
    assert len(refused) == 1 and "Identity not found" in refused[0]["detail"]


def test_verify_says_why_a_token_is_bad(ok, mi, db, scenario):
    token = _token(ok)
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["oid"] = "00000000-0000-0000-0000-000000000000"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    for bad, reason in [
        (f"{header}.{forged}.{signature}", "signature does not match"),
        (token, "audience 'https://vault.azure.net' is not 'https://storage.azure.com'"),
        ("not-a-token", "This is not a JWT"),
    ]:
        before = dump(db)
        r = mi("token", "verify", bad, "--audience", "https://storage.azure.com" if bad == token else VAULT)
        assert r.code == 1 and r.err.startswith("ERROR: (InvalidToken)") and reason in r.err, r.err
        assert dump(db) == before


def test_an_expired_token_fails_verification(db, store, ok, scenario):
    from mi_cli.services import lookup, tokens

    past = datetime.now(timezone.utc) - timedelta(days=2)
    with store() as ctx:
        ctx.clock = lambda: past
        res = lookup.resource(ctx, "vm1", "rg")
        issued = tokens.issue(ctx, tokens.choose(ctx, res), VAULT)
    code = main(["--db", str(db), "token", "verify", issued.access_token])
    assert code == 1


def test_token_read_from_stdin(ok, db, monkeypatch, capsys, scenario):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("Bearer " + _token(ok) + "\n"))
    capsys.readouterr()
    assert main(["--db", str(db), "token", "decode", "-", "-o", "json", "--query", "claims.aud"]) == 0
    assert json.loads(capsys.readouterr().out) == VAULT


def test_keys_are_listed_rotated_and_retired_and_never_show_a_private_part(ok, mi, scenario):
    _token(ok)
    first = ok("token", "keys", "list")
    assert [k["status"] for k in first] == ["Active"]
    second = ok("token", "keys", "rotate")
    assert second["kid"] != first[0]["kid"]
    r = mi("token", "keys", "retire", "--kid", second["kid"], "-o", "json")
    assert r.code == 0
    r = mi("token", "keys", "retire", "--kid", first[0]["kid"])
    assert r.code == 1 and "last active signing key" in r.err
    r = mi("token", "keys", "retire", "--kid", "nope")
    assert r.code == 3
    everything = mi("token", "keys", "list", "-o", "yaml").out
    assert "PRIVATE" not in everything and "private" not in everything


def test_env_needs_a_running_server_or_a_port(ok, mi, scenario, db):
    r = mi("env", "--resource", "vm1", "-g", "rg")
    assert r.code == 1 and r.err.startswith("ERROR: (ServerNotRunning)")
    bash = mi("env", "--resource", "vm1", "-g", "rg", "--port", "5005").out
    vm = ok("resource", "show", "-g", "rg", "-n", "vm1")
    assert f"export AZURE_POD_IDENTITY_AUTHORITY_HOST='http://127.0.0.1:5005{vm['id']}'" in bash
    assert bash.startswith("unset IDENTITY_ENDPOINT IDENTITY_HEADER")
    fish = mi("env", "--resource", "vm1", "-g", "rg", "--port", "5005", "--shell", "fish").out
    assert "set -gx AZURE_POD_IDENTITY_AUTHORITY_HOST 'http://127.0.0.1:5005/" in fish
    ps = mi("env", "--resource", "app1", "-g", "rg", "--port", "5005", "--style", "appservice", "--shell", "powershell").out
    assert "$env:IDENTITY_ENDPOINT = 'http://127.0.0.1:5005/msi/token'" in ps
    app = ok("env", "--resource", "app1", "-g", "rg", "--port", "5005", "--style", "appservice", "--identity", "shared")
    without = mi("env", "--resource", "app1", "-g", "rg", "--port", "5005", "--style", "appservice", "-o", "json")
    again = json.loads(without.out)
    # app1 holds only a user-assigned identity, which App Service never gives unasked: the warning says so and what to pass
    assert without.code == 0 and without.err.startswith("WARNING: App Service gives a request that names no identity the "
                                                        "system-assigned one, which 'app1' does not have")
    assert "--identity NAME" in without.err and scenario["clientId"] in without.err
    assert app["IDENTITY_HEADER"] == again["IDENTITY_HEADER"]  # one secret per resource, kept
    assert app["AZURE_CLIENT_ID"] == scenario["clientId"] and "AZURE_CLIENT_ID" not in again
    assert "HTTPS_PROXY" not in again  # no local cloud before mi serve has made its CA files
    _local_cloud_files(db)
    cloud = ok("env", "--resource", "vm1", "-g", "rg", "--port", "5005")
    assert cloud["HTTPS_PROXY"] == cloud["https_proxy"] == "http://127.0.0.1:5006"  # beside the port, as mi serve puts it
    assert cloud["NO_PROXY"] == cloud["no_proxy"] == "127.0.0.1,localhost"
    assert cloud["REQUESTS_CA_BUNDLE"] == cloud["SSL_CERT_FILE"] == str(db.resolve()) + ".ca-bundle.pem"
    assert cloud["NODE_EXTRA_CA_CERTS"] == str(db.resolve()) + ".ca.pem"
    # az: a login of the resource's own beside the store (each VM has its own ~/.azure), telemetry off
    assert Path(cloud["AZURE_CONFIG_DIR"]).parent == Path(str(db.resolve()) + ".azure")
    assert Path(cloud["AZURE_CONFIG_DIR"]).name.startswith("vm1-")
    assert cloud["AZURE_CORE_COLLECT_TELEMETRY"] == "false"
    as_app = ok("env", "--resource", "vm1", "-g", "rg", "--port", "5005", "--style", "appservice")
    assert as_app["AZURE_CONFIG_DIR"] == cloud["AZURE_CONFIG_DIR"]  # the same resource, either endpoint
    other = ok("env", "--resource", "app1", "-g", "rg", "--port", "5005")["AZURE_CONFIG_DIR"]
    assert Path(other).parent == Path(cloud["AZURE_CONFIG_DIR"]).parent and other != cloud["AZURE_CONFIG_DIR"]
    vm = ok("resource", "show", "-g", "rg", "-n", "vm1")
    spelled = vm["id"].replace("resourceGroups/rg", "resourcegroups/RG").replace("vm1", "VM1")
    by_id = ok("env", "--resource", spelled, "--port", "5005")
    assert by_id["AZURE_CONFIG_DIR"] == cloud["AZURE_CONFIG_DIR"]  # ids are not case-sensitive
    fish = mi("env", "--resource", "vm1", "-g", "rg", "--port", "5005", "--shell", "fish").out
    assert f"set -gx AZURE_CONFIG_DIR '{cloud['AZURE_CONFIG_DIR']}'" in fish
    assert "set -gx AZURE_CORE_COLLECT_TELEMETRY 'false'" in fish
    ps = mi("env", "--resource", "vm1", "-g", "rg", "--port", "5005", "--shell", "powershell").out
    assert f"$env:AZURE_CONFIG_DIR = '{cloud['AZURE_CONFIG_DIR']}'" in ps
    assert "$env:AZURE_CORE_COLLECT_TELEMETRY = 'false'" in ps
    bash = mi("env", "--resource", "vm1", "-g", "rg", "--port", "5005").out
    assert "export HTTPS_PROXY='http://127.0.0.1:5006'" in bash
    assert f"export AZURE_CONFIG_DIR='{cloud['AZURE_CONFIG_DIR']}'" in bash
    assert "export AZURE_CORE_COLLECT_TELEMETRY='false'" in bash


def _local_cloud_files(db):
    """What mi serve writes at its start: the store's CA, the bundle, the server certificate."""
    from mi_cli.services import Ctx, localcloud
    from mi_cli.store import open_store

    store = open_store(str(db))
    try:
        with store.transaction(write=True) as session:
            localcloud.prepare(Ctx.from_env(session), str(db))
    finally:
        store.close()


def test_a_version_1_store_is_migrated_to_the_current_schema(tmp_path, capsys):
    db = tmp_path / "old.db"
    assert main(["--db", str(db), "group", "create", "-n", "rg", "-l", "westeurope", "-o", "none"]) == 0
    con = sqlite3.connect(db)
    for table in ("signing_key", "endpoint_secret", "custom_role", "role_assignment"):
        con.execute(f"DROP TABLE {table}")
    con.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    con.commit()
    con.close()
    assert main(["--db", str(db), "resource", "create", "-g", "rg", "-n", "vm1", "--type", "vm", "--system-assigned", "-o", "none"]) == 0
    assert main(["--db", str(db), "token", "get", "--resource", "vm1", "-g", "rg", "--audience", VAULT, "-o", "none"]) == 0
    con = sqlite3.connect(db)
    assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (str(SCHEMA_VERSION),)
    con.close()


@pytest.mark.parametrize("argv, code, text, logged", [
    (["token", "get", "--resource", "vm1", "-g", "rg", "--audience", ""], 1, "Required query variable 'resource' is missing", True),
    (["token", "get", "--resource", "app1", "-g", "rg", "--audience", VAULT, "--client-id", "a", "--object-id", "b"], 1,
     "Only one of", True),
    (["token", "get", "--resource", "nope", "-g", "rg", "--audience", VAULT], 3, "ResourceNotFound", False),
    (["token", "get", "--resource", "vm1", "-g", "rg", "--audience", "https://x/" + "a" * 100_000], 1,
     "(invalid_resource) The resource is 100,010 characters long", True),
])
def test_token_get_bad_input(mi, ok, db, scenario, argv, code, text, logged):
    """A refused token request is one error line; it is recorded as a failed sign-in, and nothing else changes."""
    before = ok("log")
    r = mi(*argv)
    assert r.code == code and text in r.err and one_error(r.err) and "Traceback" not in r.err
    assert max(len(line) for line in r.err.splitlines()) < 300  # what was sent is not repeated in full
    after = ok("log")
    assert len(after) == len(before) + (1 if logged else 0)
    if logged:
        assert after[-1]["status"] == "Failed" and after[-1]["operationName"] == "Microsoft.ManagedIdentity/token/issue"
        assert len(after[-1]["detail"]) < 600


def test_verify_takes_a_list_audience_and_repeats_a_long_one_only_in_part(ok, mi, store, scenario):
    import jwt

    from mi_cli.services import keys, lookup, tenancy, tokens

    with store() as ctx:
        issued = tokens.issue(ctx, tokens.choose(ctx, lookup.resource(ctx, "vm1", "rg")), VAULT)
        key = keys.active(ctx, tenancy.default_tenant(ctx))

    def signed(**claims) -> str:  # a token this tenant signed, with other claims (RFC 7519 allows a list `aud`)
        return jwt.encode({**issued.claims, **claims}, keys.private_key(key), algorithm="RS256", headers={"kid": key.kid})

    listed = signed(aud=[VAULT, "https://storage.azure.com"])
    assert ok("token", "verify", listed, "--audience", "https://storage.azure.com/")["valid"] is True
    assert ok("token", "verify", listed)["claims"]["aud"] == [VAULT, "https://storage.azure.com"]
    r = mi("token", "verify", listed, "--audience", "https://graph.microsoft.com")
    assert r.code == 1 and "audience 'https://vault.azure.net, https://storage.azure.com' is not" in r.err
    r = mi("token", "verify", signed(aud=42))
    assert r.code == 1 and r.err.startswith("ERROR: (InvalidToken) The token's audience 42 is not a string")
    r = mi("token", "verify", signed(aud="https://x/" + "a" * 100_000), "--audience", "https://y/" + "b" * 100_000)
    assert r.code == 1 and r.err.count("\n") == 1 and len(r.err) < 700 and "(100,010 characters)" in r.err


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.mark.parametrize("garbage", [
    "not-a-token", "a.b", "é.é.é", "....", "\udcff.\udcfe.c2ln",  # the last: stdin bytes read with surrogateescape
    _b64(b"[1]") + "." + _b64(b"{}") + ".c2ln",  # a header that is no object
    _b64(b'{"alg":"RS256","kid":["x"]}') + "." + _b64(b"{}") + ".c2ln",  # a kid that is no string
    _b64(b'{"alg":"RS256"}') + "." + _b64(b"[" * 100_000 + b"]" * 100_000) + ".c2ln",  # nesting beyond recursion
    _b64(b'{"alg":"RS256"}') + "." + _b64(b'{"exp": 1' + b"0" * 5000 + b"}") + ".c2ln",  # an absurd number
])
@pytest.mark.parametrize("verb", ["decode", "verify"])
def test_garbage_is_one_line_saying_it_is_not_a_valid_token(mi, scenario, db, monkeypatch, capsys, garbage, verb):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(garbage))  # through stdin: some of these exceed argv's limit
    capsys.readouterr()
    code = main(["--db", str(db), "token", verb, "-"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("ERROR: (InvalidToken) ") and err.count("\n") == 1 and len(err) < 500, err


def test_a_token_from_stdin_that_is_not_text_is_one_line(db, monkeypatch, capsys):
    import io

    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"\xff\xfe"), encoding="utf-8", errors="strict"))
    assert main(["--db", str(db), "token", "decode", "-"]) == 1
    assert capsys.readouterr().err == "ERROR: (InvalidToken) This is not a JWT: the input is not text.\n"


def test_env_prints_its_exports_whatever_mi_output_says(mi, scenario):
    """`eval "$(mi env ...)"` is how mi env is used: MI_OUTPUT, set for the other commands' output, must not
    turn its exports into JSON that bash cannot eval; only an explicit -o asks for the variables as data."""
    for chosen in ("json", "tsv", "yaml"):
        out = mi("env", "--resource", "vm1", "-g", "rg", "--port", "5005", env={"MI_OUTPUT": chosen}).out
        assert out.startswith("unset IDENTITY_ENDPOINT") and "export AZURE_POD_IDENTITY_AUTHORITY_HOST=" in out
    as_data = mi("env", "--resource", "vm1", "-g", "rg", "--port", "5005", "-o", "json", env={"MI_OUTPUT": "table"}).out
    assert as_data.startswith("{")
