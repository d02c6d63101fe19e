"""A conditional grant through the command line: Storage Blob Data Reader only on container 'logs', as in
Azure; conditions ARM would refuse are refused at create and in tenant files, with nothing stored."""

from __future__ import annotations

import pytest
import yaml

from tests.conftest import az_error, dump, one_error

READ = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read"
SBDR = "Storage Blob Data Reader"
CONTAINER = "@Resource[Microsoft.Storage/storageAccounts/blobServices/containers:name]"
PREFIX = "@Request[Microsoft.Storage/storageAccounts/blobServices/containers/blobs:prefix]"
# conditions-format.md's first example, with the container called logs
LOGS_ONLY = f"((!(ActionMatches{{'{READ}'}})) OR ({CONTAINER} StringEquals 'logs'))"
# "Read a blob" gated on the container, "List blobs" on the prefix asked for (storage-auth-abac-examples.md)
READ_OR_LIST = (f"((!(ActionMatches{{'{READ}'}} AND NOT SubOperationMatches{{'Blob.List'}})) OR ({CONTAINER} StringEquals "
                f"'logs')) AND ((!(ActionMatches{{'{READ}'}} AND SubOperationMatches{{'Blob.List'}})) OR ({PREFIX} "
                "StringStartsWith 'public/'))")
INVALID = "InvalidRoleAssignmentCondition"


def build_storage(ok, mi):
    """Group rg, storage account st1 and the user-assigned identity 'app' (no roles yet)."""
    ok("group", "create", "-n", "rg", "-l", "westeurope")
    account = ok("resource", "create", "-g", "rg", "-n", "st1", "--type", "storage")
    ok("identity", "create", "-g", "rg", "-n", "app")
    return {"st": account["id"]}


@pytest.fixture
def st(prebuilt):
    """st1's id."""
    return prebuilt(build_storage)["st"]


def blob(st: str, container: str, name: str | None = "x") -> str:
    return f"{st}/blobServices/default/containers/{container}" + (f"/blobs/{name}" if name else "")


def check(ok, scope: str, *extra: str):
    return ok("access", "check", "--principal", "app", "--action", READ, "--scope", scope, *extra)


def test_a_reader_only_on_container_logs(ok, mi, st):
    ra = ok("role", "assignment", "create", "--assignee", "app", "--role", SBDR, "--scope", st, "--condition", LOGS_ONLY)
    assert (ra["condition"], ra["conditionVersion"]) == (LOGS_ONLY, "2.0")
    allowed = check(ok, blob(st, "logs"))
    assert allowed["allowed"] is True
    assert allowed["reason"] == (f"Allowed: '{SBDR}' at {st} grants the data action through '{READ}' (inherited), and its "
                                 f"condition holds: {CONTAINER} is 'logs'.")
    denied = check(ok, blob(st, "other"))
    assert denied["allowed"] is False
    assert denied["reason"] == (f"Denied: '{SBDR}' at {st} grants the data action through '{READ}', but its condition is "
                                f"false for this request: {CONTAINER} is 'other', not 'logs'.")
    [step] = denied["trace"]
    assert (step["condition"], step["conditionMet"], step["granted"]) == (LOGS_ONLY, False, False)
    # the gate a CI script uses, and the table a person reads
    r = mi("access", "check", "--principal", "app", "--action", READ, "--scope", blob(st, "other"), "--require")
    assert r.code == 1 and r.err == az_error("AuthorizationFailed", denied["reason"])
    table = mi("access", "check", "--principal", "app", "--action", READ, "--scope", blob(st, "other"), "-o", "table").out
    assert table.startswith("Denied: ") and "Condition" in table.splitlines()[3] and " false " in table.splitlines()[5]


def test_sub_operation_and_attributes_reach_the_condition(ok, mi, st):
    ok("role", "assignment", "create", "--assignee", "app", "--role", SBDR, "--scope", st, "--condition", READ_OR_LIST)
    listing = blob(st, "data", None)
    assert check(ok, blob(st, "logs"))["allowed"] is True  # reading a blob: the container decides
    assert check(ok, blob(st, "data"))["allowed"] is False
    listed = check(ok, listing, "--sub-operation", "Blob.List", "--attribute", f"{PREFIX}=public/2024")
    assert listed["allowed"] is True and listed["reason"].endswith(f"its condition holds: the sub-operation is 'Blob.List' "
                                                                   f"and {PREFIX} is 'public/2024', so StringStartsWith "
                                                                   "'public/' holds.")
    refused = check(ok, listing, "--sub-operation", "Blob.List", "--attribute", f"{PREFIX}=private/")
    assert refused["allowed"] is False and refused["reason"].endswith(
        f"{PREFIX} is 'private/', so StringStartsWith 'public/' does not hold.")
    no_prefix = check(ok, listing, "--sub-operation", "Blob.List")
    assert no_prefix["allowed"] is False and no_prefix["reason"].endswith(f"{PREFIX} is not in this request.")
    # who agrees with check, and shows that the grant is conditional
    who = ok("access", "who", "--action", READ, "--scope", listing, "--sub-operation", "Blob.List", "--attribute",
             f"{PREFIX}=public/a")
    assert [(r["principalName"], r["condition"], r["conditionMet"]) for r in who] == [("app", READ_OR_LIST, True)]
    assert ok("access", "who", "--action", READ, "--scope", listing, "--sub-operation", "Blob.List") == []
    assert "holds" in mi("access", "who", "--action", READ, "--scope", blob(st, "logs"), "-o", "table").out
    [entry] = ok("access", "list", "--principal", "app")
    assert entry["roles"] == [SBDR] and entry["conditions"] == [{"role": SBDR, "condition": READ_OR_LIST}]
    assert f"{SBDR} (conditional)" in mi("access", "list", "--principal", "app", "-o", "table").out


def test_bad_attribute_options_are_usage_errors(mi, db, st):
    before = dump(db)
    for given, text in [("prefix=public/", "--attribute takes '@Source[NAME]=VALUE'"),
                        (f"{PREFIX}", "--attribute takes '@Source[NAME]=VALUE'"),
                        ("@Tenant[x]=y", "'@Tenant[x]' is not an attribute reference")]:
        r = mi("access", "check", "--principal", "app", "--action", READ, "--scope", st, "--attribute", given)
        assert r.code == 2 and text in r.err and one_error(r.err), (given, r.err)
    assert dump(db) == before


def test_an_invalid_condition_is_refused_as_arm_refuses_it(ok, mi, db, st):
    before = dump(db)
    bad = f"{CONTAINER} StringEquals logs"
    r = mi("role", "assignment", "create", "--assignee", "app", "--role", SBDR, "--scope", st, "--condition", bad)
    message = ("The given role assignment condition is invalid: expected an expression, found 'logs' (text values are "
               f"quoted: 'value') (position {len(CONTAINER) + 15}).")
    assert r.code == 1 and r.err == az_error(INVALID, message)
    for bad in (f"{CONTAINER} StringEquals 'a' AND {CONTAINER} StringEquals 'b' OR {CONTAINER} StringEquals 'c'",
                f"({CONTAINER} StringEquals 'a'", "@Resource[x] StringEqual 'a'", "x" * 8193):
        r = mi("role", "assignment", "create", "--assignee", "app", "--role", SBDR, "--scope", st, "--condition", bad)
        assert r.code == 1 and r.err.startswith(f"ERROR: ({INVALID}) The given role assignment condition is invalid: ")
        assert one_error(r.err), r.err
    assert dump(db) == before
    # an update at the assignment's name is a PUT too: refused, and the stored condition stays
    ra = ok("role", "assignment", "create", "--assignee", "app", "--role", SBDR, "--scope", st, "--condition", LOGS_ONLY)
    kept = dump(db)
    r = mi("role", "assignment", "create", "--assignee", "app", "--role", SBDR, "--scope", st, "--name", ra["name"],
           "--condition", "ActionMatches{'x'")
    assert r.code == 1 and f"({INVALID})" in r.err and dump(db) == kept


def test_a_tenant_file_with_an_invalid_condition_changes_nothing(ok, mi, db, st, tmp_path):
    ok("role", "assignment", "create", "--assignee", "app", "--role", SBDR, "--scope", st, "--condition", LOGS_ONLY)
    document = yaml.safe_load(mi("export").out)
    [entry] = document["roleAssignments"]
    ok("role", "assignment", "delete", "--ids", f"{st}/providers/Microsoft.Authorization/roleAssignments/{entry['name']}")
    entry["condition"] = LOGS_ONLY.replace("StringEquals 'logs'", "StringEquals logs")
    path = tmp_path / "tenant.yaml"
    path.write_text(yaml.safe_dump(document))
    before = dump(db)
    r = mi("apply", "-f", str(path), "-o", "none")
    assert r.code == 1 and INVALID in r.err and "The given role assignment condition is invalid" in r.err
    assert dump(db) == before


@pytest.mark.parametrize("name", ["a/1.txt", "a/b/c/d.txt", "a"])
def test_a_blob_path_of_any_depth_is_a_scope_and_its_path_attribute(ok, mi, st, name):
    condition = ("((!(ActionMatches{'" + READ + "'})) OR "
                 "(@Resource[Microsoft.Storage/storageAccounts/blobServices/containers/blobs:path] StringLike 'a*'))")
    ok("role", "assignment", "create", "--assignee", "app", "--role", SBDR, "--scope", st, "--condition", condition)
    decision = check(ok, blob(st, "logs", name))
    assert decision["allowed"] is True and decision["scope"] == blob(st, "logs", name)
    assert check(ok, blob(st, "logs", "b/" + name))["allowed"] is False
