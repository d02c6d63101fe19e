"""No option is ignored: every option a command line gives is used, or the command is refused naming the
conflict (exit 2, one line, the store untouched). Where az users expect an option to act, it acts:
`identity create --user-assigned --resource` creates the identity and attaches it, in one transaction."""

from __future__ import annotations

import pytest

from tests.conftest import dump, one_error

def build(ok, mi):
    ok("group", "create", "-n", "rg", "-l", "westeurope")
    ok("group", "create", "-n", "rg2", "-l", "westeurope")
    vm = ok("resource", "create", "-g", "rg", "-n", "vm1", "--type", "vm", "--system-assigned")
    ok("resource", "create", "-g", "rg", "-n", "kv1", "--type", "kv")
    ok("resource", "create", "-g", "rg", "-n", "app1", "--type", "webapp")
    uami = ok("identity", "create", "-g", "rg", "-n", "id1")
    return {"vm": vm["id"], "uami": uami["id"]}


@pytest.fixture
def tenant(prebuilt):
    return prebuilt(build)


CONFLICTS = [
    # (name, argv, text that names the conflict); {vm} and {uami} are the ids of vm1 and id1
    ("system identity with a name", ["identity", "create", "--system-assigned", "--resource", "vm1", "-g", "rg", "-n", "foo"],
     "--name/-n: only for a user-assigned identity"),
    ("system identity with tags", ["identity", "create", "--system-assigned", "--resource", "vm1", "-g", "rg", "--tags", "a=b"],
     "--tags: only for a user-assigned identity"),
    ("system identity with a location", ["identity", "create", "--system-assigned", "--resource", "vm1", "-g", "rg", "-l",
                                         "eastus"], "--location/-l: only for a user-assigned identity"),
    ("system identity with an isolation scope", ["identity", "create", "--system-assigned", "--resource", "vm1", "-g", "rg",
                                                 "--isolation-scope", "Regional"], "--isolation-scope: only for a user-assigned"),
    ("role without scope", ["identity", "create", "--system-assigned", "--resource", "vm1", "-g", "rg", "--role", "Reader"],
     "--role and --scope go together"),
    ("role on a user-assigned create", ["identity", "create", "-g", "rg", "-n", "id2", "--role", "Reader", "--scope", "/x"],
     "--role and --scope grant a role to a system-assigned identity"),
    ("type without a resource", ["identity", "create", "-g", "rg", "-n", "id2", "--type", "vm"],
     "--type names the type of --resource"),
    ("show: type without a resource", ["identity", "show", "-g", "rg", "-n", "id1", "--type", "vm"],
     "--type names the type of --resource"),
    ("show: a resource and a name", ["identity", "show", "-g", "rg", "-n", "id1", "--resource", "vm1"],
     "Give --resource (its system-assigned identity) or --name/-n"),
    ("show: -g that the id contradicts", ["identity", "show", "--ids", "{uami}", "-g", "rg2"],
     "--resource-group/-g 'rg2' does not match the identity id, which is in resource group 'rg'"),
    ("resource: -g that the id contradicts", ["resource", "show", "--ids", "{vm}", "-g", "rg2"],
     "--resource-group/-g 'rg2' does not match the resource id"),
    ("resource: --type that the id contradicts", ["resource", "show", "--ids", "{vm}", "--type", "webapp"],
     "--type 'webapp' (Microsoft.Web/sites) does not match the resource id"),
    ("resource: --subscription that the id contradicts", ["resource", "delete", "--ids", "{vm}", "--subscription", "other"],
     "--subscription (or MI_SUBSCRIPTION) 'other' does not match the resource id"),
    ("token: -g that the id contradicts", ["token", "get", "--resource", "{vm}", "-g", "rg2", "--audience",
                                           "https://vault.azure.net"], "does not match the resource id"),
    ("federated credential: -g that the id contradicts", ["identity", "federated-credential", "list", "--identity-name",
                                                          "{uami}", "-g", "rg2"], "does not match the identity id"),
    ("role assignment: --subscription that --scope contradicts",
     ["role", "assignment", "create", "--assignee", "vm1", "--role", "Reader", "--scope", "/subscriptions/{sub}",
      "--subscription", "other"], "does not match --scope"),
    ("role assignment list: --all and --include-inherited", ["role", "assignment", "list", "--all", "--include-inherited"],
     "--all lists every scope already"),
    ("role assignment delete: ids and filters", ["role", "assignment", "delete", "--ids", "x", "--role", "Reader"],
     "When assignment ids are used, other parameter values are not required: drop --role."),
    ("secret: --encoding with --value", ["keyvault", "secret", "set", "--vault-name", "kv1", "-n", "s", "--value", "v",
                                         "--encoding", "base64"], "--encoding is the encoding of --file"),
    ("secret: --version the id contradicts", ["keyvault", "secret", "show", "--id", "https://kv1.vault.azure.net/secrets/s/"
                                              + "a" * 32, "--version", "b" * 32], "does not match the version the --id names"),
    ("env: --shell with data", ["env", "--resource", "vm1", "-g", "rg", "--port", "5005", "--shell", "fish", "-o", "json"],
     "--shell is the syntax of the exports"),
    ("serve: -g without --resource", ["serve", "-g", "rg"], "--resource-group/-g is the group of --resource"),
]


@pytest.mark.parametrize("argv, text", [c[1:] for c in CONFLICTS], ids=[c[0] for c in CONFLICTS])
def test_an_option_the_command_would_not_use_is_refused(mi, db, tenant, argv, text):
    argv = [a.format(**tenant, sub=tenant["vm"].split("/")[2]) for a in argv]
    mi("subscription", "create", "-n", "other", "-o", "none")
    before = dump(db)
    r = mi(*argv)
    assert r.code == 2, r.err
    assert r.err.startswith("ERROR: (MutuallyExclusiveArguments) ") or r.err.startswith("ERROR: (MissingArgument) "), r.err
    assert text in r.err and one_error(r.err), r.err
    assert r.out == "" and dump(db) == before


def test_options_that_say_what_the_id_says_are_honoured(ok, tenant):
    # -g, --type and --subscription agreeing with the id change nothing: the id's resource, as without them
    sub = tenant["vm"].split("/")[2]
    shown = ok("resource", "show", "--ids", tenant["vm"], "-g", "RG", "--type", "vm", "--subscription", sub)
    assert shown["id"] == tenant["vm"]
    assert ok("identity", "show", "--ids", tenant["uami"], "-g", "rg")["id"] == tenant["uami"]


def test_identity_create_with_a_resource_creates_and_attaches_in_one_step(ok, mi, db, tenant):
    made = ok("identity", "create", "--user-assigned", "--resource", "vm1", "-g", "rg", "-n", "id2")
    assert made["name"] == "id2" and made["type"] == "Microsoft.ManagedIdentity/userAssignedIdentities"
    block = ok("resource", "show", "-g", "rg", "-n", "vm1")["identity"]
    assert block["type"] == "SystemAssigned, UserAssigned"
    assert block["userAssignedIdentities"][made["id"]] == {"clientId": made["clientId"], "principalId": made["principalId"]}
    assert [r["name"] for r in ok("identity", "list-resources", "-g", "rg", "-n", "id2")] == ["vm1"]
    # without --user-assigned too (it is the default), and by the resource's id
    other = ok("identity", "create", "--resource", tenant["vm"], "-g", "rg", "-n", "id3")
    assert other["id"] in ok("resource", "show", "-g", "rg", "-n", "vm1")["identity"]["userAssignedIdentities"]
    # a resource of another group, by its id: -g is the identity's group
    elsewhere = ok("identity", "create", "--resource", tenant["vm"], "-g", "rg2", "-n", "id5")
    assert elsewhere["resourceGroup"] == "rg2"
    assert elsewhere["id"] in ok("resource", "show", "-g", "rg", "-n", "vm1")["identity"]["userAssignedIdentities"]
    # again: the same identity, attached once
    assert ok("identity", "create", "--resource", "vm1", "-g", "rg", "-n", "id2") == made
    # a resource that cannot take it: nothing is created (one transaction)
    before = dump(db)
    r = mi("identity", "create", "--resource", "kv1", "-g", "rg", "-n", "id4")
    assert r.code == 1 and r.err.startswith("ERROR: (InvalidIdentityType) ") and one_error(r.err)
    assert dump(db) == before
    assert mi("identity", "show", "-g", "rg", "-n", "id4").code == 3


def test_yes_says_what_it_does(mi):
    # commands that never ask accept --yes, as az does, and say so; those that ask say when they refuse
    never = ["identity delete", "resource delete", "role definition delete", "keyvault secret delete",
             "keyvault secret purge", "app delete", "app role remove"]
    for command in never:
        text = " ".join(mi(*command.split(), "--help").out.split())
        assert "--yes" in text and "this command does not ask for confirmation" in text, command
    for command in ("group delete", "identity federated-credential delete"):
        text = " ".join(mi(*command.split(), "--help").out.split())
        assert "Do not ask for confirmation. Without a terminal to ask at, the command refuses unless --yes is given." \
            in text, command
