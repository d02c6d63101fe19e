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
    assert c["aud"] == "https://storage.azure.com/"
    # A real VM token: exp - iat = 86,700, iat = nbf (reference/azure-facts.md section 6; every recorded
    # IMDS body has expires_on - not_before = 86,700)
    assert c["exp"] - c["iat"] == 86_700 and c["nbf"] == c["iat"]


def test_a_token_is_stamped_five_minutes_back_and_lives_a_day_from_issuance(vm):
    """Entra stamps iat and nbf 5 minutes before issuance (openid/AppAuth-iOS#264, keycloakify/oidc-spa#162)
    and exp 24 h after it; the body says 86399 seconds left, as Entra's and IMDS's fresh bodies do."""
    from datetime import datetime, timezone

    at = datetime(2025, 3, 1, 12, 0, 0, 250_000, tzinfo=timezone.utc)
    with vm() as ctx:
        ctx.clock = lambda: at
        issued = tokens.issue(ctx, tokens.choose(ctx, resources.get(ctx, groups.get(ctx, "rg"), "vm1")), "https://vault.azure.net")
    second = int(at.timestamp())
    assert (issued.claims["iat"], issued.claims["nbf"], issued.claims["exp"]) == (second - 300, second - 300, second + 86_400)
    body = tokens.token_body(issued)
    assert (body["expires_in"], body["ext_expires_in"]) == ("86399", "86399")
    assert (body["expires_on"], body["not_before"]) == (str(second + 86_400), str(second - 300))


def test_app_service_without_a_selector_means_the_system_identity_only(vm):
    with vm() as ctx:
        g = groups.get(ctx, "rg")
        identities.create_user_assigned(ctx, g, "ua-1")
        app = resources.create(ctx, g, "app1", "webapp")
        identities.attach(ctx, app, ["ua-1"])
        assert tokens.choose(ctx, app).kind == "UserAssigned"  # IMDS: the only one
        with pytest.raises(tokens.TokenError, match="Identity not found"):
            tokens.choose(ctx, app, endpoint=tokens.APP_SERVICE)
