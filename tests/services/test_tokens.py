"""Token rules on the services: the cache's refresh margin, selection edge cases, claims."""

from __future__ import annotations

import pytest

from mi_cli.services import groups, identities, resources, tokens


@pytest.fixture
def vm(store):
    with store() as ctx:
        g = groups.create(ctx, "rg", "westeurope")
        res = resources.create(ctx, g, "vm1", "vm")
        identities.enable_system(ctx, res)
    return store


def test_the_cache_gives_the_same_token_until_five_minutes_before_expiry(vm):
    with vm() as ctx:
        res = resources.get(ctx, groups.get(ctx, "rg"), "vm1")
        chosen = tokens.choose(ctx, res)
        issued = tokens.issue(ctx, chosen, "https://vault.azure.net")
    cache = tokens.TokenCache()
    cache.put(issued)
    assert cache.get(chosen, "https://vault.azure.net", now=issued.claims["iat"] + 3600) is issued
    assert cache.get(chosen, "https://vault.azure.net", now=issued.expires_on - tokens.REFRESH_MARGIN + 1) is None
    # another spelling of the audience is another token (aud echoes what was asked)
    assert cache.get(chosen, "https://vault.azure.net/", now=issued.claims["iat"]) is None


def test_claims_of_a_user_assigned_token(vm):
    with vm() as ctx:
        g = groups.get(ctx, "rg")
        uami = identities.create_user_assigned(ctx, g, "ua-1")
        res = resources.get(ctx, g, "vm1")
        identities.attach(ctx, res, ["ua-1"])
        issued = tokens.issue(ctx, tokens.choose(ctx, res, {"client_id": uami.client_id.upper()}), "https://storage.azure.com/")
    c = issued.claims
    assert (c["oid"], c["sub"], c["appid"]) == (uami.principal_id, uami.principal_id, uami.client_id)
    assert c["xms_mirid"] == uami.arm_id and "/resourcegroups/rg/" in c["xms_az_rid"]
    assert c["iss"] == c["idp"] == f"https://sts.windows.net/{c['tid']}/"
    assert c["exp"] - c["iat"] == tokens.LIFETIME and c["aud"] == "https://storage.azure.com/"


def test_app_service_without_a_selector_means_the_system_identity_only(vm):
    with vm() as ctx:
        g = groups.get(ctx, "rg")
        identities.create_user_assigned(ctx, g, "ua-1")
        app = resources.create(ctx, g, "app1", "webapp")
        identities.attach(ctx, app, ["ua-1"])
        assert tokens.choose(ctx, app).kind == "UserAssigned"  # IMDS: the only one
        with pytest.raises(tokens.TokenError, match="Identity not found"):
            tokens.choose(ctx, app, endpoint=tokens.APP_SERVICE)
