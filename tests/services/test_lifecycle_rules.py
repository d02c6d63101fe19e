"""DESIGN's lifecycle rules 1-11, checked on the services directly (no CLI)."""

from __future__ import annotations

import pytest
from sqlmodel import select

from mi_cli.errors import NotFoundError, ValidationError
from mi_cli.models import Attachment, FederatedCredential, ServicePrincipal
from mi_cli.services import federated, groups, identities, principals, resources, tenancy, views


@pytest.fixture
def rg(store):
    with store() as ctx:
        groups.create(ctx, "rg", "westeurope")
    return "rg"


def _count(ctx, model) -> int:
    return len(ctx.session.exec(select(model)).all())


def _group(ctx, name="rg"):
    return groups.get(ctx, name)


def test_rule1_enabling_system_identity_creates_a_principal_and_again_is_a_noop(store, rg):
    with store() as ctx:
        vm = resources.create(ctx, _group(ctx), "vm1", "vm")
        identities.enable_system(ctx, vm)
        first = vm.system_principal_id
        sp = principals.get(ctx, first)
        assert sp is not None and sp.display_name == "vm1" and not sp.is_explicit
        assert views.identity_block(ctx, vm)["type"] == "SystemAssigned"
    with store() as ctx:
        vm = resources.get(ctx, _group(ctx), "vm1")
        identities.enable_system(ctx, vm)
        assert vm.system_principal_id == first
        assert len(principals.list_all(ctx)) == 1


def test_rule2_disabling_deletes_the_principal_and_reenabling_makes_new_ids(store, rg):
    with store() as ctx:
        vm = resources.create(ctx, _group(ctx), "vm1", "vm")
        identities.enable_system(ctx, vm)
        old = identities.system_identity(ctx, vm)
    with store() as ctx:
        vm = resources.get(ctx, _group(ctx), "vm1")
        identities.disable_system(ctx, vm)
        assert principals.get(ctx, old.principal_id) is None
        assert views.identity_block(ctx, vm) is None
    with store() as ctx:
        vm = resources.get(ctx, _group(ctx), "vm1")
        identities.enable_system(ctx, vm)
        new = identities.system_identity(ctx, vm)
        assert new.principal_id != old.principal_id
        assert new.client_id != old.client_id


def test_rule3_deleting_a_resource_takes_its_system_identity_but_not_the_shared_user_identity(store, rg):
    with store() as ctx:
        g = _group(ctx)
        vm = resources.create(ctx, g, "vm1", "vm")
        app = resources.create(ctx, g, "app1", "webapp")
        identities.enable_system(ctx, vm)
        shared = identities.create_user_assigned(ctx, g, "shared")
        identities.attach(ctx, vm, ["shared"])
        identities.attach(ctx, app, ["shared"])
        vm_principal = vm.system_principal_id
    with store() as ctx:
        resources.delete(ctx, _group(ctx), "vm1")
        assert principals.get(ctx, vm_principal) is None
        assert identities.user_assigned_by_id(ctx, shared.arm_id) is not None
        assert [r.name for r in identities.references_to(ctx, shared.arm_id)] == ["app1"]
        assert _count(ctx, Attachment) == 1


def test_rule3_deleting_a_parent_takes_its_child_resources_and_their_identities(store, rg):
    with store() as ctx:
        g = _group(ctx)
        resources.create(ctx, g, "app1", "webapp")
        slot = resources.create(ctx, g, "staging", "slot", parent="app1")
        assert slot.name == "app1/staging"
        assert slot.arm_id.endswith("/providers/Microsoft.Web/sites/app1/slots/staging")
        identities.enable_system(ctx, slot)
        assert principals.get(ctx, slot.system_principal_id).display_name == "app1/slots/staging"
    with store() as ctx:
        gone = resources.delete(ctx, _group(ctx), "app1", type_text="webapp")
        assert sorted(r.name for r in gone) == ["app1", "app1/staging"]
        assert principals.list_all(ctx) == []


def test_rule4_a_user_identity_has_its_own_principal_and_outlives_everything_but_its_delete(store, rg):
    with store() as ctx:
        g = _group(ctx)
        uami = identities.create_user_assigned(ctx, g, "solo", tags={"team": "a"})
        sp = principals.get(ctx, uami.principal_id)
        assert sp.app_id == uami.client_id and sp.is_explicit and sp.mi_resource_id == uami.arm_id
        vm = resources.create(ctx, g, "vm1", "vm")
        identities.attach(ctx, vm, [uami.arm_id])
    with store() as ctx:
        resources.delete(ctx, _group(ctx), "vm1")
        assert identities.get_user_assigned(ctx, _group(ctx), "solo").principal_id == uami.principal_id


def test_rule5_deleting_a_user_identity_leaves_dangling_references_and_warns(store, rg):
    with store() as ctx:
        g = _group(ctx)
        uami = identities.create_user_assigned(ctx, g, "shared")
        federated.create(ctx, uami, "github", issuer="https://token.actions.githubusercontent.com", subject="repo:o/r:ref:refs/heads/main")
        vm = resources.create(ctx, g, "vm1", "vm")
        identities.attach(ctx, vm, ["shared"])
    with store() as ctx:
        still = identities.delete_user_assigned(ctx, identities.get_user_assigned(ctx, _group(ctx), "shared"))
        assert [r.name for r in still] == ["vm1"]
        assert len(ctx.warnings) == 1 and "vm1" in ctx.warnings[0]
        assert principals.get(ctx, uami.principal_id) is None
        assert _count(ctx, FederatedCredential) == 0
    with store() as ctx:
        vm = resources.get(ctx, _group(ctx), "vm1")
        block = views.identity_block(ctx, vm)
        # the reference stays, with the ids it had, as Azure keeps it
        assert block["type"] == "UserAssigned"
        assert block["userAssignedIdentities"][uami.arm_id]["principalId"] == uami.principal_id
        [att] = identities.attachments(ctx, vm)
        assert not identities.is_live(ctx, att)


def test_rule5_recreating_a_deleted_identity_does_not_revive_the_old_reference(store, rg):
    with store() as ctx:
        g = _group(ctx)
        old = identities.create_user_assigned(ctx, g, "shared")
        vm = resources.create(ctx, g, "vm1", "vm")
        identities.attach(ctx, vm, ["shared"])
        identities.delete_user_assigned(ctx, old)
        new = identities.create_user_assigned(ctx, g, "shared")
        [att] = identities.attachments(ctx, vm)
        assert not identities.is_live(ctx, att)
        identities.attach(ctx, vm, ["shared"])  # re-assigning connects the new identity
        [att] = identities.attachments(ctx, vm)
        assert identities.is_live(ctx, att) and att.principal_id == new.principal_id


def test_rule7_attach_needs_ua_support_an_existing_identity_and_respects_the_limit(store, rg):
    with store() as ctx:
        g = _group(ctx)
        arc = resources.create(ctx, g, "arc1", "arc")  # SA only
        logic = resources.create(ctx, g, "flow", "logicapp")  # at most 1 UA
        identities.create_user_assigned(ctx, g, "one")
        identities.create_user_assigned(ctx, g, "two")
        with pytest.raises(ValidationError) as e:
            identities.attach(ctx, arc, ["one"])
        assert e.value.code == "InvalidIdentityType"
        with pytest.raises(ValidationError) as e:
            identities.attach(ctx, logic, ["missing"])
        assert e.value.code == "InvalidParameter" and "is not a valid reference to a Microsoft.ManagedIdentity identity" in e.value.message
        identities.attach(ctx, logic, ["one"])
        identities.attach(ctx, logic, ["one"])  # again: a no-op
        assert len(identities.attachments(ctx, logic)) == 1
        with pytest.raises(ValidationError) as e:
            identities.attach(ctx, logic, ["two"])
        assert e.value.message == "User Assigned Identities Number '2' Assign exceed limit '1' in one request."


def test_rule7_attach_across_groups_and_subscriptions_of_the_tenant(store, rg):
    with store() as ctx:
        other_sub = tenancy.create_subscription(ctx, "other")
        other = groups.create(ctx, "ids", "eastus", subscription="other")
        far = identities.create_user_assigned(ctx, other, "far")
        vm = resources.create(ctx, _group(ctx), "vm1", "vm")
        identities.attach(ctx, vm, [far.arm_id])
        assert list(views.identity_block(ctx, vm)["userAssignedIdentities"]) == [far.arm_id]
        assert other_sub.id in far.arm_id


def test_rule7_vm_limit_is_150(store, rg):
    with store() as ctx:
        g = _group(ctx)
        vm = resources.create(ctx, g, "vm1", "vm")
        names = [f"id-{i:03d}" for i in range(151)]
        for n in names:
            identities.create_user_assigned(ctx, g, n)
        identities.attach(ctx, vm, names[:150])
        with pytest.raises(ValidationError, match="Number '151' Assign exceed limit '150'"):
            identities.attach(ctx, vm, names[150:])


def test_rule8_removing_the_last_user_identity_moves_the_type(store, rg):
    with store() as ctx:
        g = _group(ctx)
        vm = resources.create(ctx, g, "vm1", "vm")
        app = resources.create(ctx, g, "app1", "webapp")
        identities.create_user_assigned(ctx, g, "uid-1")
        identities.assign(ctx, vm, ["[system]", "uid-1"])
        identities.assign(ctx, app, ["uid-1"])
        assert views.identity_block(ctx, vm)["type"] == "SystemAssigned, UserAssigned"  # Compute's spelling
        identities.remove(ctx, vm, ["uid-1"])
        assert views.identity_block(ctx, vm)["type"] == "SystemAssigned"
        assert views.identity_block(ctx, app)["type"] == "UserAssigned"
        identities.remove(ctx, app, ["uid-1"])
        assert views.identity_block_or_none(ctx, app) == {"type": "None"}


@pytest.mark.parametrize("type_, name, spelling", [
    # web CommonDefinitions.json ManagedServiceIdentity.type; azure-cli recording test_webapp_assign_user_identity.yaml
    ("webapp", "app1", "SystemAssigned, UserAssigned"),
    # Microsoft.App ContainerApps openapi.json uses common-types v3+ managedidentity.json
    ("containerapp", "app1", "SystemAssigned,UserAssigned"),
    # Microsoft.Storage storage.json uses common-types too
    ("storage", "stapp1", "SystemAssigned,UserAssigned"),
])
def test_rule8_each_provider_spells_the_pair_as_its_api_does(store, rg, type_, name, spelling):
    with store() as ctx:
        g = _group(ctx)
        res = resources.create(ctx, g, name, type_)
        identities.create_user_assigned(ctx, g, "uid-1")
        identities.assign(ctx, res, ["[system]", "uid-1"])
        assert views.identity_block(ctx, res)["type"] == spelling


def test_a_type_whose_api_has_no_combined_value_takes_one_kind_at_a_time(store, rg):
    # AKS managedClusters' ManagedClusterIdentity.type is SystemAssigned | UserAssigned | None
    with store() as ctx:
        g = _group(ctx)
        identities.create_user_assigned(ctx, g, "uid-1")
        aks = resources.create(ctx, g, "aks1", "aks", system_assigned=True)
        with pytest.raises(ValidationError, match="takes either a system-assigned identity or user-assigned ones, not both"):
            identities.attach(ctx, aks, ["uid-1"])
        identities.disable_system(ctx, aks)
        identities.attach(ctx, aks, ["uid-1"])
        with pytest.raises(ValidationError, match="not both"):
            identities.enable_system(ctx, aks)
        assert views.identity_block(ctx, aks)["type"] == "UserAssigned"


def test_rule9_deleting_a_group_deletes_everything_in_it_and_leaves_outside_references_dangling(store, rg):
    with store() as ctx:
        g = _group(ctx)
        other = groups.create(ctx, "apps", "westeurope")
        vm = resources.create(ctx, g, "vm1", "vm")
        identities.enable_system(ctx, vm)
        uami = identities.create_user_assigned(ctx, g, "shared")
        app = resources.create(ctx, other, "app1", "webapp")
        identities.attach(ctx, app, [uami.arm_id])
        identities.attach(ctx, vm, [uami.arm_id])
    with store() as ctx:
        groups.delete(ctx, "rg")
        assert [w for w in ctx.warnings if "app1" in w]
        assert _count(ctx, ServicePrincipal) == 0
        with pytest.raises(NotFoundError):
            groups.get(ctx, "rg")
        app = resources.get(ctx, groups.get(ctx, "apps"), "app1")
        [att] = identities.attachments(ctx, app)
        assert not identities.is_live(ctx, att)


def test_rule10_types_without_support_refuse_and_arc_is_always_on(store, rg):
    with store() as ctx:
        g = _group(ctx)
        mysql = resources.create(ctx, g, "db1", "Microsoft.DBforMySQL/flexibleServers")  # UA only
        with pytest.raises(ValidationError, match="does not support a system-assigned identity"):
            identities.enable_system(ctx, mysql)
        vault = resources.create(ctx, g, "kv-demo-1", "keyvault")  # target only
        with pytest.raises(ValidationError):
            identities.enable_system(ctx, vault)
        arc = resources.create(ctx, g, "arc1", "arc")
        assert arc.system_principal_id is not None
        with pytest.raises(ValidationError, match="always on"):
            identities.disable_system(ctx, arc)


def test_rule11_ids_and_names_compare_case_insensitively_and_keep_their_case(store, rg):
    with store() as ctx:
        g = groups.get(ctx, "RG")
        uami = identities.create_user_assigned(ctx, g, "MyIdentity")
        assert identities.get_user_assigned(ctx, g, "myidentity").pk == uami.pk
        assert uami.name == "MyIdentity"
        assert identities.create_user_assigned(ctx, g, "MYIDENTITY").pk == uami.pk
        vm = resources.create(ctx, g, "VM1", "VM")
        identities.attach(ctx, vm, [uami.arm_id.upper().replace("/SUBSCRIPTIONS/", "/subscriptions/")])
        assert resources.by_id(ctx, vm.arm_id.lower()).pk == vm.pk
        assert len(identities.attachments(ctx, vm)) == 1
        identities.attach(ctx, vm, ["myIDENTITY"])
        assert len(identities.attachments(ctx, vm)) == 1


def test_creates_are_puts_same_ids_tags_updated(store, rg):
    with store() as ctx:
        g = _group(ctx)
        a = identities.create_user_assigned(ctx, g, "uid-1", tags={"v": "1"})
    with store() as ctx:
        b = identities.create_user_assigned(ctx, _group(ctx), "uid-1", tags={"v": "2"})
        assert (b.principal_id, b.client_id) == (a.principal_id, a.client_id)
        assert b.tags == {"v": "2"}


def test_federated_credential_rules(store, rg):
    with store() as ctx:
        uami = identities.create_user_assigned(ctx, _group(ctx), "workload")
        issuer = "https://oidc.prod-aks.azure.com/tenant/issuer"
        fic = federated.create(ctx, uami, "sa-0", issuer=issuer, subject="system:serviceaccount:ns:sa0")
        assert fic.audiences == ["api://AzureADTokenExchange"]
        with pytest.raises(Exception, match="Issuer and subject combination already exists"):
            federated.create(ctx, uami, "other", issuer=issuer, subject="system:serviceaccount:ns:sa0")
        with pytest.raises(ValidationError, match="exactly one audience"):
            federated.create(ctx, uami, "two", issuer=issuer, subject="s2", audiences=["a", "b"])
        with pytest.raises(ValidationError, match="exactly one audience"):
            federated.create(ctx, uami, "zero", issuer=issuer, subject="s3", audiences=[])
        for i in range(1, 20):
            federated.create(ctx, uami, f"sa-{i}", issuer=issuer, subject=f"system:serviceaccount:ns:sa{i}")
        with pytest.raises(ValidationError, match="Too many Federated Identity Credentials"):
            federated.create(ctx, uami, "sa-20", issuer=issuer, subject="system:serviceaccount:ns:sa20")
        with pytest.raises(ValidationError, match="system-assigned managed identity isn't supported"):
            federated.resolve_identity(ctx, _group(ctx), "/subscriptions/x/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1/providers/Microsoft.ManagedIdentity/identities/default")


def test_seeded_guids_are_reproducible(tmp_path):
    from mi_cli.services import Ctx
    from mi_cli.store import open_store

    def run(path):
        store = open_store(path)
        with store.transaction(write=True) as s:
            ctx = Ctx(s, seed="42")
            g = groups.create(ctx, "rg", "westeurope")
            u = identities.create_user_assigned(ctx, g, "uid-1")
            return g.subscription_id, u.principal_id, u.client_id

    assert run(tmp_path / "a.db") == run(tmp_path / "b.db")
