"""Azure RBAC evaluation on the services: built-in roles, wildcards, notActions, the two planes."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mi_cli.errors import ValidationError
from mi_cli.services import access, assignments, groups, identities, operations, resources, roles

KV_GET = "Microsoft.KeyVault/vaults/secrets/getSecret/action"


@pytest.fixture
def tenant(store):
    """A group with a VM (system identity), a vault and a storage account; returns ids."""
    with store() as ctx:
        g = groups.create(ctx, "rg", "westeurope")
        vm = resources.create(ctx, g, "vm1", "vm")
        identities.enable_system(ctx, vm)
        kv = resources.create(ctx, g, "kv-one", "keyvault")
        sa = resources.create(ctx, g, "stdata01", "storage")
        ids = {"sub": f"/subscriptions/{g.subscription_id}", "rg": f"/subscriptions/{g.subscription_id}/resourceGroups/rg",
               "vm": vm.arm_id, "kv": kv.arm_id, "st": sa.arm_id, "principal": vm.system_principal_id}
    return store, ids


def _grant(tenant, role, scope_key):
    store, ids = tenant
    with store() as ctx:
        assignments.create(ctx, ids["principal"], role, ids[scope_key])


def _check(tenant, action, scope, **kw):
    store, ids = tenant
    with store() as ctx:
        return access.check(ctx, ids["principal"], action, scope if scope.startswith("/") else ids[scope], **kw)


CASES = [
    # role, assigned at, action, checked at, allowed, what the trace must show
    ("Owner", "rg", KV_GET, "kv", False, "actions only ever grant control-plane operations"),
    ("Owner", "rg", "Microsoft.Authorization/roleAssignments/write", "kv", True, "'*'"),
    ("Contributor", "rg", "Microsoft.KeyVault/vaults/write", "kv", True, "'*'"),
    ("Contributor", "rg", "Microsoft.Authorization/roleAssignments/write", "kv", False, "notActions 'Microsoft.Authorization/*/Write'"),
    ("Contributor", "sub", KV_GET, "kv", False, "a data action"),
    ("Reader", "sub", "Microsoft.KeyVault/vaults/read", "kv", True, "'*/read'"),
    ("Reader", "sub", "Microsoft.KeyVault/vaults/write", "kv", False, "none of the 1 assignment"),
    ("User Access Administrator", "rg", "Microsoft.Authorization/roleAssignments/write", "kv", True, "Microsoft.Authorization/*"),
    ("Role Based Access Control Administrator", "rg", "Microsoft.Authorization/roleAssignments/delete", "vm", True, ""),
    ("Role Based Access Control Administrator", "rg", "Microsoft.Authorization/roleDefinitions/write", "vm", False, ""),
    ("Key Vault Secrets User", "kv", KV_GET, "kv", True, KV_GET),
    ("Key Vault Secrets User", "kv", "Microsoft.KeyVault/vaults/secrets/setSecret/action", "kv", False, ""),
    ("Key Vault Secrets User", "kv", "Microsoft.KeyVault/vaults/read", "kv", False, ""),
    ("Key Vault Secrets Officer", "kv", "Microsoft.KeyVault/vaults/secrets/setSecret/action", "kv", True, "secrets/*"),
    ("Key Vault Secrets Officer", "kv", "Microsoft.KeyVault/vaults/keys/sign/action", "kv", False, ""),
    ("Key Vault Reader", "kv", KV_GET, "kv", False, ""),
    ("Key Vault Reader", "kv", "Microsoft.KeyVault/vaults/secrets/readMetadata/action", "kv", True, ""),
    ("Key Vault Administrator", "rg", "Microsoft.KeyVault/vaults/keys/decrypt/action", "kv", True, "Microsoft.KeyVault/vaults/*"),
    ("Key Vault Administrator", "rg", "Microsoft.KeyVault/vaults/delete", "kv", False, ""),
    ("Storage Blob Data Reader", "st", "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read", "st", True, ""),
    ("Storage Blob Data Reader", "st", "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/write", "st", False, ""),
    ("Storage Blob Data Contributor", "rg", "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/delete", "st", True, ""),
    ("Storage Blob Data Owner", "st", "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/tags/write", "st", True, "blobs/*"),
    ("Storage Blob Data Owner", "st", "Microsoft.Storage/storageAccounts/listKeys/action", "st", False, ""),
    ("Virtual Machine Contributor", "rg", "Microsoft.Compute/virtualMachines/start/action", "vm", True, "virtualMachines/*"),
    ("Virtual Machine Contributor", "rg", "Microsoft.Compute/virtualMachines/login/action", "vm", False, "actions only ever grant control-plane operations"),
    ("Virtual Machine User Login", "vm", "Microsoft.Compute/virtualMachines/login/action", "vm", True, ""),
    ("Managed Identity Operator", "rg", "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action", "rg", True, "*/assign/action"),
    ("Managed Identity Operator", "rg", "Microsoft.ManagedIdentity/userAssignedIdentities/write", "rg", False, ""),
    ("Managed Identity Contributor", "rg", "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/write", "rg", True, ""),
    ("Managed Identity Contributor", "rg", "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action", "rg", False, ""),
]


@pytest.mark.parametrize("role, at, action, where, allowed, shown", CASES, ids=[f"{c[0]}:{c[2].rsplit('/', 2)[-2]}/{c[2].rsplit('/', 1)[-1]}@{c[3]}" for c in CASES])
def test_built_in_roles_as_azure_evaluates_them(tenant, role, at, action, where, allowed, shown):
    _grant(tenant, role, at)
    decision = _check(tenant, action, where)
    assert decision.allowed is allowed, decision.view()
    text = decision.reason() + " " + " ".join(f"{s.matched} {s.removed_by} {s.note}" for s in decision.steps)
    assert shown.strip("'") in text


def test_an_assignment_elsewhere_grants_nothing_here(tenant):
    store, ids = tenant
    with store() as ctx:
        other = groups.create(ctx, "other", "westeurope")
        assignments.create(ctx, ids["principal"], "Owner", f"/subscriptions/{other.subscription_id}/resourceGroups/other")
    decision = _check(tenant, "Microsoft.KeyVault/vaults/write", "kv")
    assert not decision.allowed and decision.steps == []
    assert "no role assignment" in decision.reason()


def test_unknown_operations_need_a_plane(tenant):
    with pytest.raises(ValidationError, match="--data-action or --control-action"):
        _check(tenant, "Contoso.Widgets/widgets/frob/action", "kv")
    with pytest.raises(ValidationError, match="both a control-plane and a data operation"):
        _check(tenant, "Microsoft.KeyVault/vaults/keys/read", "kv")
    _grant(tenant, "Key Vault Reader", "kv")
    assert _check(tenant, "Microsoft.KeyVault/vaults/keys/read", "kv", data=True).allowed
    assert _check(tenant, "Microsoft.KeyVault/vaults/keys/read", "kv", data=False).allowed  # vaults/*/read in actions


def test_custom_roles_with_not_actions_and_assignable_scopes(tenant):
    store, ids = tenant
    with store() as ctx:
        role = roles.create_custom(ctx, {
            "Name": "Vault Operator", "Description": "Runs vaults but cannot delete them",
            "Actions": ["Microsoft.KeyVault/vaults/*"], "NotActions": ["Microsoft.KeyVault/vaults/delete"],
            "DataActions": ["Microsoft.KeyVault/vaults/secrets/readMetadata/action"], "AssignableScopes": [ids["rg"]],
        })
        assert role.role_type == "CustomRole"
        assignments.create(ctx, ids["principal"], "vault operator", ids["kv"])
        with pytest.raises(ValidationError, match="not assignable at scope"):
            assignments.create(ctx, ids["principal"], "Vault Operator", ids["sub"])
    assert _check(tenant, "Microsoft.KeyVault/vaults/write", "kv").allowed
    denied = _check(tenant, "Microsoft.KeyVault/vaults/delete", "kv")
    assert not denied.allowed and denied.steps[0].removed_by == "Microsoft.KeyVault/vaults/delete"
    with store() as ctx, pytest.raises(Exception, match="RoleDefinitionHasAssignments"):
        roles.delete_custom(ctx, "Vault Operator")


def test_custom_roles_refuse_a_data_action_among_actions(tenant):
    store, ids = tenant
    with store() as ctx, pytest.raises(ValidationError, match="is a data action"):
        roles.create_custom(ctx, {"Name": "Broken", "Actions": [KV_GET], "AssignableScopes": [ids["rg"]]})


# --- a property: what an assignment grants at a scope, it grants at every scope below it -----------

SEGMENT = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
ACTIONS = sorted({name for name in operations._operations() if len(operations._operations()[name]) == 1})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    role=st.sampled_from([r.role_name for r in roles.builtins()]),
    level=st.sampled_from(["sub", "rg", "kv"]),
    action=st.sampled_from(ACTIONS),
    below=st.lists(st.tuples(st.sampled_from(["secrets", "keys", "certificates"]), SEGMENT), min_size=0, max_size=2),
)
def test_an_assignment_grants_the_same_at_every_descendant_scope(tenant, role, level, action, below):
    store, ids = tenant
    with store() as ctx:
        for ra in assignments.for_principal(ctx, ids["principal"]):
            ctx.session.delete(ra)
        assignments.create(ctx, ids["principal"], role, ids[level])
        chain = [ids[level]] + [s for s in (ids["rg"], ids["kv"]) if len(s) > len(ids[level])]
        kv_below = ids["kv"] + "".join(f"/{kind}/{name}" for kind, name in below)
        scopes = chain + [kv_below]
        answers = {s: access.check(ctx, ids["principal"], action, s).allowed for s in scopes}
    assert len(set(answers.values())) == 1, answers


def test_a_pattern_matches_the_whole_action_name_only():
    assert access.matches("Microsoft.KeyVault/vaults/read", "microsoft.keyvault/VAULTS/read")
    assert not access.matches("Microsoft.KeyVault/vaults/read", "Microsoft.KeyVault/vaults/read\n")
    assert not access.matches("Microsoft.KeyVault/*/read", "Microsoft.KeyVault/vaults/read\n")


def test_a_request_needing_several_permissions_is_granted_group_by_group(tenant):
    """Storage's Put Blob with x-ms-tags: (write or add) and tags/write. Storage Blob Data Contributor holds
    write but not tags/write; Owner holds both (azure-cli#23536)."""
    store, ids = tenant
    blobs = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs"
    scope = f"{ids['st']}/blobServices/default/containers/c/blobs/a.txt"
    groups = [((f"{blobs}/write", f"{blobs}/add/action"), scope, None), ((f"{blobs}/tags/write",), scope, None)]
    _grant(tenant, "Storage Blob Data Contributor", "st")
    with store() as ctx:
        granted, denied = access.check_groups(ctx, ids["principal"], groups, data=lambda p: True)
    assert [d.action for d in granted] == [f"{blobs}/write"]
    assert denied is not None and denied.action == f"{blobs}/tags/write" and not denied.allowed
    _grant(tenant, "Storage Blob Data Owner", "st")
    with store() as ctx:
        granted, denied = access.check_groups(ctx, ids["principal"], groups, data=lambda p: True)
    assert denied is None and [d.action for d in granted] == [f"{blobs}/write", f"{blobs}/tags/write"]
