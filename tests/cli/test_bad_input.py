"""Bad input a tired user would type: one line `ERROR: (Code) message`, the right exit code, and
the store exactly as it was."""

from __future__ import annotations

import pytest

from tests.conftest import az_error, dump, one_error
from tests.forwarding import command_host, mi  # noqa: F401  (each test runs here and forwarded to mi serve)

ISSUER = "https://token.actions.githubusercontent.com"
SYSTEM_ID_SUFFIX = "/providers/Microsoft.ManagedIdentity/identities/default"


def build_tenant(ok, mi):
    ok("group", "create", "-n", "rg", "-l", "westeurope")
    ok("resource", "create", "-g", "rg", "-n", "vm1", "--type", "vm", "--system-assigned")
    ok("resource", "create", "-g", "rg", "-n", "flow", "--type", "logicapp")
    ok("resource", "create", "-g", "rg", "-n", "edge-01", "--type", "arc")
    ok("resource", "create", "-g", "rg", "-n", "mysql-1", "--type", "mysql")
    ok("identity", "create", "-g", "rg", "-n", "first")
    ok("identity", "create", "-g", "rg", "-n", "second")
    ok("identity", "assign", "--resource", "flow", "-g", "rg", "--identities", "first")
    ok("identity", "create", "-g", "rg", "-n", "full")
    for i in range(20):
        ok("identity", "federated-credential", "create", "-n", f"fic-{i:02d}", "--identity-name", "full", "-g", "rg",
           "--issuer", ISSUER, "--subject", f"repo:o/r:environment:e{i}")
    ok("identity", "federated-credential", "create", "-n", "main", "--identity-name", "first", "-g", "rg",
       "--issuer", ISSUER, "--subject", "repo:o/r:ref:refs/heads/main")


@pytest.fixture
def tenant(prebuilt):
    """The tenant is built once per module; each test gets a copy of the file."""
    prebuilt(build_tenant)


def _vm_system_id(ok):
    return ok("resource", "show", "-g", "rg", "-n", "vm1")["id"] + SYSTEM_ID_SUFFIX


CASES = [
    # (name, argv, exit code, error code, text that must appear)
    ("uami name too short", ["identity", "create", "-g", "rg", "-n", "ab"], 1, "InvalidResourceName",
     "Resource name 'ab' is invalid. A user-assigned identity name must be 3 to 128 characters"),
    ("uami name too long", ["identity", "create", "-g", "rg", "-n", "a" * 129], 1, "InvalidResourceName",
     f"Resource name '{'a' * 129}' is invalid. A user-assigned identity name must be 3 to 128 characters"),
    ("uami name bad characters", ["identity", "create", "-g", "rg", "-n", "my identity!"], 1, "InvalidResourceName",
     "Resource name 'my identity!' is invalid. A user-assigned identity name must be 3 to 128 characters of alphanumerics"),
    ("uami name leading hyphen", ["identity", "create", "-g", "rg", "-n", "-abc"], 1, "InvalidResourceName",
     "Resource name '-abc' is invalid. A user-assigned identity name must be 3 to 128 characters of alphanumerics, "
     "hyphens and underscores, and start with a letter or number."),
    ("uami name leading underscore", ["identity", "create", "-g", "rg", "-n", "_abc"], 1, "InvalidResourceName",
     "Resource name '_abc' is invalid. A user-assigned identity name must be 3 to 128 characters of alphanumerics, "
     "hyphens and underscores, and start with a letter or number."),
    ("group name bad characters", ["group", "create", "-n", "bad/rg", "-l", "westeurope"], 1, "InvalidResourceGroup",
     "The resource group name 'bad/rg' is invalid: it must be 1 to 90 characters of alphanumerics, underscores, "
     "parentheses, hyphens and periods"),
    ("group name ends with period", ["group", "create", "-n", "rg.", "-l", "westeurope"], 1, "InvalidResourceGroup",
     "The resource group name 'rg.' is invalid: it must be 1 to 90 characters of alphanumerics, underscores, "
     "parentheses, hyphens and periods, and cannot end in a period."),
    ("group name too long", ["group", "create", "-n", "g" * 91, "-l", "westeurope"], 1, "InvalidResourceGroup",
     f"The resource group name '{'g' * 91}' is invalid: it must be 1 to 90 characters"),
    ("storage name upper case", ["resource", "create", "-g", "rg", "-n", "MyStorage", "--type", "storage"], 1, "InvalidResourceName", "lowercase"),
    ("key vault double hyphen", ["resource", "create", "-g", "rg", "-n", "kv--x", "--type", "kv"], 1, "InvalidResourceName", "consecutive"),
    ("fic name too short", ["identity", "federated-credential", "create", "-n", "ab", "--identity-name", "second", "-g", "rg",
                            "--issuer", ISSUER, "--subject", "s"], 1, "BadRequest", "Federated Identity Credential name 'ab' is invalid"),
    ("unknown type", ["resource", "create", "-g", "rg", "-n", "x1", "--type", "frobnicator"], 1, "InvalidResourceType", "mi resource types"),
    ("unknown group", ["identity", "create", "-g", "nope", "-n", "abc"], 3, "ResourceGroupNotFound", "Resource group 'nope' could not be found."),
    ("unknown group show", ["group", "show", "-n", "nope"], 3, "ResourceGroupNotFound",
     "Resource group 'nope' could not be found."),
    ("unknown resource", ["resource", "show", "-g", "rg", "-n", "nope"], 3, "ResourceNotFound", "'nope' under resource group 'rg' was not found"),
    ("unknown resource for assign", ["identity", "assign", "--resource", "nope", "-g", "rg"], 3, "ResourceNotFound",
     "The Resource 'nope' under resource group 'rg' was not found."),
    ("unknown identity", ["identity", "show", "-n", "nope", "-g", "rg"], 3, "ResourceNotFound",
     "The Resource 'Microsoft.ManagedIdentity/userAssignedIdentities/nope' under resource group 'rg' was not found"),
    ("unknown identity by id", ["identity", "show", "--ids", "/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/rg"
                                "/providers/Microsoft.ManagedIdentity/userAssignedIdentities/x"], 3, "ResourceNotFound",
     "The Resource 'Microsoft.ManagedIdentity/userAssignedIdentities/x' under resource group 'rg' was not found."),
    ("unknown principal", ["sp", "show", "--id", "00000000-0000-0000-0000-000000000000"], 3, "Request_ResourceNotFound",
     "Resource '00000000-0000-0000-0000-000000000000' does not exist"),
    ("system identity on UA-only type", ["identity", "create", "--system-assigned", "--resource", "mysql-1", "-g", "rg"], 1,
     "InvalidIdentityType", "does not support a system-assigned identity"),
    ("user identity on SA-only type", ["identity", "assign", "--resource", "edge-01", "-g", "rg", "--identities", "first"], 1,
     "InvalidIdentityType", "does not support user-assigned identities"),
    ("user identity on a vault", ["resource", "create", "-g", "rg", "-n", "kv-one", "--type", "kv", "--user-assigned", "first"], 1,
     "InvalidIdentityType",
     "The resource type 'Microsoft.KeyVault/vaults' does not support user-assigned identities (supported: none)."),
    ("more UAs than the type allows", ["identity", "assign", "--resource", "flow", "-g", "rg", "--identities", "second"], 1,
     "BadRequest", "User Assigned Identities Number '2' Assign exceed limit '1' in one request."),
    ("reference to a missing identity", ["identity", "assign", "--resource", "vm1", "-g", "rg", "--identities", "ghost"], 1,
     "InvalidParameter", "/userAssignedIdentities/ghost' is not a valid reference to a Microsoft.ManagedIdentity identity."),
    ("reference that is not an identity id", ["identity", "assign", "--resource", "vm1", "-g", "rg", "--identities",
     "/subscriptions/x/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1"], 1, "InvalidParameter",
     "identityId '/subscriptions/x/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1' is not a valid reference "
     "to a Microsoft.ManagedIdentity identity."),
    ("remove what is not attached", ["identity", "remove", "--resource", "vm1", "-g", "rg", "--identities", "second"], 1,
     "BadRequest", "are not associated with 'vm1'"),
    ("21st federated credential", ["identity", "federated-credential", "create", "-n", "fic-20", "--identity-name", "full", "-g", "rg",
                                   "--issuer", ISSUER, "--subject", "repo:o/r:environment:e20"], 1, "BadRequest", "Too many Federated Identity Credentials"),
    ("duplicate issuer and subject", ["identity", "federated-credential", "create", "-n", "again", "--identity-name", "first", "-g", "rg",
                                      "--issuer", ISSUER, "--subject", "repo:o/r:ref:refs/heads/main"], 1, "BadRequest",
     "Issuer and subject combination already exists for this Managed Identity."),
    ("zero audiences", ["identity", "federated-credential", "create", "-n", "noaud", "--identity-name", "first", "-g", "rg",
                        "--issuer", ISSUER, "--subject", "s1", "--audiences", ""], 1, "BadRequest", "exactly one audience"),
    ("two audiences", ["identity", "federated-credential", "create", "-n", "twoaud", "--identity-name", "first", "-g", "rg",
                       "--issuer", ISSUER, "--subject", "s1", "--audiences", "api://a", "api://b"], 1, "BadRequest", "exactly one audience"),
    ("federated credential without issuer", ["identity", "federated-credential", "create", "-n", "noiss", "--identity-name", "first",
                                             "-g", "rg", "--subject", "s1"], 2, "MissingArgument", "Issuer URL is required"),
    ("federated credential on a missing identity", ["identity", "federated-credential", "create", "-n", "orphan", "--identity-name",
                                                    "ghost", "-g", "rg", "--issuer", ISSUER, "--subject", "s"], 3,
     "ParentResourceNotFound", "The parent user-assigned identity doesn't exist."),
    ("bad query", ["identity", "list", "--query", "[?name=="], 2, "InvalidArgumentValue", "invalid jmespath query '[?name=='"),
    ("bad output format", ["identity", "list", "-o", "xml"], 2, "InvalidArgumentValue", "'xml' is not one of 'table', 'json'"),
    ("bad tag name", ["identity", "update", "-n", "first", "-g", "rg", "--tags", "=value"], 1, "InvalidTagName",
     "The tag '=value' has an empty name"),
    ("tag name with reserved characters", ["identity", "update", "-n", "first", "-g", "rg", "--tags", "a<b=1"], 1,
     "InvalidTagNameCharacters", "The tag names 'a<b' have reserved characters"),
    ("tag value too long", ["identity", "update", "-n", "first", "-g", "rg", "--tags", "k=" + "v" * 257], 1,
     "InvalidTagValueLength",
     "The value of tag 'k' exceeds the maximum length of 256."),
    ("unknown region for a group", ["group", "create", "-n", "rg2", "-l", "narnia"], 1, "LocationNotAvailableForResourceGroup",
     "The provided location 'narnia' is not available for resource group."),
    ("unknown region for an identity", ["identity", "create", "-g", "rg", "-n", "abc", "-l", "mars-north"], 1,
     "LocationNotAvailableForResourceType",
     "The provided location 'mars-north' is not available for resource type 'Microsoft.ManagedIdentity/userAssignedIdentities'."),
    ("group moved to another region", ["group", "create", "-n", "rg", "-l", "eastus"], 1, "InvalidResourceGroupLocation",
     "Invalid resource group location 'eastus'. The Resource group already exists in location 'westeurope'."),
    ("identity moved to another region", ["identity", "create", "-g", "rg", "-n", "first", "-l", "eastus"], 1,
     "InvalidResourceLocation", "already exists in location 'westeurope'"),
    ("group without location", ["group", "create", "-n", "rg3"], 2, "MissingArgument",
     "--location/-l is required to create a resource group."),
    ("unknown command", ["identity", "frobnicate"], 2, "UsageError", "No such command 'frobnicate'."),
    ("unknown option", ["identity", "list", "--colour"], 2, "UsageError", "No such option: --colour"),
    ("assign without resource", ["identity", "assign", "-g", "rg"], 2, "MissingArgument",
     "--resource NAME (with -g) or --resource ID is required."),
    ("name without group", ["identity", "show", "-n", "first"], 2, "MissingArgument",
     "--resource-group/-g is required when the identity is given by name."),
    ("unknown kind", ["identity", "list", "--kind", "both"], 2, "InvalidArgumentValue",
     "--kind must be user, system or all, not 'both'."),
    ("unknown subscription", ["group", "list", "--subscription", "nope"], 3, "SubscriptionNotFound",
     "The subscription 'nope' could not be found."),
    ("child type without parent", ["resource", "create", "-g", "rg", "-n", "staging", "--type", "slot"], 1, "InvalidParameter",
     "The type 'Microsoft.Web/sites/slots' is a child type: name its parent with --parent."),
    ("bad log since", ["log", "--since", "yesterday"], 1, "InvalidParameter",
     "--since 'yesterday' is neither an ISO 8601 time nor a duration"),
]


@pytest.mark.parametrize("argv, exit_code, code, text", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(mi, db, tenant, argv, exit_code, code, text):
    before = dump(db)
    r = mi(*argv)
    assert r.code == exit_code, r.err
    assert r.err.startswith(f"ERROR: ({code}) "), r.err
    assert text, "every case names the message it expects"
    assert text in r.err
    assert one_error(r.err) and "Traceback" not in r.err
    assert r.out == ""
    assert dump(db) == before


def test_federated_credential_on_a_system_identity_is_refused(mi, ok, db, tenant):
    before = dump(db)
    r = mi("identity", "federated-credential", "create", "-n", "sysfic", "--identity-name", _vm_system_id(ok),
           "--issuer", ISSUER, "--subject", "s")
    assert r.code == 1
    assert r.err == az_error("BadRequest", "Configuring a federated identity credential on a system-assigned managed "
                                           "identity isn't supported.")
    assert dump(db) == before


def test_bad_output_from_the_environment(mi, tenant):
    r = mi("identity", "list", env={"MI_OUTPUT": "xml"})
    assert r.code == 2 and r.err.startswith("ERROR: (InvalidArgumentValue)") and one_error(r.err)
    assert "(env var: 'MI_OUTPUT'): 'xml' is not one of 'table', 'json'" in r.err


def test_a_failing_command_midway_changes_nothing(mi, ok, db, tenant):
    # 'first' attaches fine, 'ghost' fails: the whole assign is rolled back.
    before = dump(db)
    r = mi("identity", "assign", "--resource", "vm1", "-g", "rg", "--identities", "first", "ghost")
    assert r.code == 1
    assert r.err.startswith("ERROR: (InvalidParameter) ") and "/userAssignedIdentities/ghost' is not a valid reference" in r.err
    assert dump(db) == before
    assert "userAssignedIdentities" not in ok("resource", "show", "-g", "rg", "-n", "vm1")["identity"]
