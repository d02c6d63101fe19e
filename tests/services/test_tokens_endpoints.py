"""The token endpoints' rules on the services, without a server: which names select an identity on
IMDS and on App Service, one selector at most, App Service's default, the cache, the bodies, and the
requests each endpoint refuses before looking at the store."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlmodel import select

from mi_cli.models import ActivityLog
from mi_cli.services import endpoints, groups, identities, resources, tokens

VAULT = "https://vault.azure.net"
OK = [("api-version", "2018-02-01"), ("resource", VAULT)]
APP_OK = [("api-version", "2019-08-01"), ("resource", VAULT)]


@pytest.fixture
def tenant(store):
    """vm-multi has two user-assigned identities; app-both has its system identity and ua-2;
    app-ua has only ua-1."""
    with store() as ctx:
        g = groups.create(ctx, "rg", "westeurope")
        found = {"ua-1": identities.create_user_assigned(ctx, g, "ua-1"), "ua-2": identities.create_user_assigned(ctx, g, "ua-2")}
        vm = resources.create(ctx, g, "vm-multi", "vm")
        identities.attach(ctx, vm, ["ua-1", "ua-2"])
        app = resources.create(ctx, g, "app-both", "webapp")
        identities.enable_system(ctx, app)
        identities.attach(ctx, app, ["ua-2"])
        only_ua = resources.create(ctx, g, "app-ua", "webapp")
        identities.attach(ctx, only_ua, ["ua-1"])
        found.update({"vm-multi": vm.arm_id, "app-both": app.arm_id, "app-ua": only_ua.arm_id,
                      "secret": endpoints.secret_for(ctx, app), "secret-ua": endpoints.secret_for(ctx, only_ua)})
    return found


def _res(ctx, arm_id):
    return resources.by_id(ctx, arm_id)


def _log(ctx) -> list[ActivityLog]:
    return [e for e in ctx.session.exec(select(ActivityLog)).all() if e.operation.endswith("token/issue")]


@pytest.mark.parametrize("name", ["msi_res_id", "mi_res_id", "resource_id"])
def test_imds_names_a_user_assigned_identity_by_resource_id_under_each_alias(store, tenant, name):
    with store() as ctx:
        chosen = tokens.choose(ctx, _res(ctx, tenant["vm-multi"]), {name: tenant["ua-2"].arm_id.upper()})
    assert chosen.principal_id == tenant["ua-2"].principal_id


@pytest.mark.parametrize("name, value", [("principal_id", "principal_id"), ("object_id", "principal_id"),
                                         ("mi_res_id", "arm_id"), ("resource_id", "arm_id"), ("client_id", "client_id")])
def test_app_service_names_an_identity_by_its_own_names(store, tenant, name, value):
    with store() as ctx:
        selector = {name: getattr(tenant["ua-2"], value)}
        chosen = tokens.choose(ctx, _res(ctx, tenant["app-both"]), selector, endpoint=tokens.APP_SERVICE)
    assert chosen.principal_id == tenant["ua-2"].principal_id


def test_a_name_of_the_other_endpoint_is_no_selector(store, tenant):
    with store() as ctx:
        vm = _res(ctx, tenant["vm-multi"])
        with pytest.raises(tokens.TokenError, match="Multiple user assigned identities"):  # IMDS has no principal_id
            tokens.choose(ctx, vm, {"principal_id": tenant["ua-2"].principal_id})
        app = _res(ctx, tenant["app-both"])  # App Service has no msi_res_id: its default, the system identity
        chosen = tokens.choose(ctx, app, {"msi_res_id": tenant["ua-2"].arm_id}, endpoint=tokens.APP_SERVICE)
    assert chosen.kind == "SystemAssigned"


@pytest.mark.parametrize("endpoint, selector", [
    (tokens.IMDS, {"msi_res_id": "A", "resource_id": "A"}),  # two aliases of one kind are still two selectors
    (tokens.IMDS, {"mi_res_id": "A", "msi_res_id": "A"}),
    (tokens.IMDS, {"client_id": "A", "object_id": "B"}),
    (tokens.APP_SERVICE, {"principal_id": "A", "object_id": "A"}),
])
def test_only_one_selector_counted_by_the_names_sent(store, tenant, endpoint, selector):
    with store() as ctx:
        with pytest.raises(tokens.TokenError, match="Only one of"):
            tokens.choose(ctx, _res(ctx, tenant["app-both"]), selector, endpoint=endpoint)


def test_empty_selectors_do_not_count(store, tenant):
    with store() as ctx:
        chosen = tokens.choose(ctx, _res(ctx, tenant["vm-multi"]), {"client_id": "", "object_id": None,
                                                                   "msi_res_id": tenant["ua-1"].arm_id})
    assert chosen.principal_id == tenant["ua-1"].principal_id


def test_without_a_selector_app_service_gives_the_system_identity_only(store, tenant):
    with store() as ctx:
        only_ua = _res(ctx, tenant["app-ua"])
        assert tokens.choose(ctx, only_ua).principal_id == tenant["ua-1"].principal_id  # IMDS: the only one
        with pytest.raises(tokens.TokenError, match="Identity not found"):
            tokens.choose(ctx, only_ua, endpoint=tokens.APP_SERVICE)
        assert tokens.choose(ctx, _res(ctx, tenant["app-both"]), endpoint=tokens.APP_SERVICE).kind == "SystemAssigned"
    with store() as ctx:
        refused = tokens.app_service_token(ctx, tenant["secret-ua"], APP_OK)
        assert isinstance(refused, tokens.TokenError) and refused.message == tokens.APP_SERVICE_REFUSAL
    with store() as ctx:  # the log keeps the reason App Service does not say
        assert "Identity not found" in _log(ctx)[-1].detail and "via=appservice" in _log(ctx)[-1].detail


def test_the_cache_serves_the_same_token_until_bypassed_and_logs_each_request(store, tenant):
    cache = tokens.TokenCache()
    query = OK + [("msi_res_id", tenant["ua-1"].arm_id)]
    with store() as ctx:
        first = tokens.imds_token(ctx, tenant["vm-multi"], query, cache=cache)
        again = tokens.imds_token(ctx, tenant["vm-multi"], query, cache=cache)
        fresh = tokens.imds_token(ctx, tenant["vm-multi"], query + [("bypass_cache", "true")], cache=cache)
        after = tokens.imds_token(ctx, tenant["vm-multi"], query, cache=cache)
        other = tokens.imds_token(ctx, tenant["vm-multi"], OK + [("client_id", tenant["ua-2"].client_id)], cache=cache)
    assert first["access_token"] == again["access_token"] != fresh["access_token"] == after["access_token"]
    assert other["access_token"] != first["access_token"] and len(cache) == 2
    with store() as ctx:
        vias = [e.detail.split("via=")[1].split(";")[0] for e in _log(ctx)]
    assert vias == ["imds", "imds (cached)", "imds", "imds (cached)", "imds"]


def test_a_cached_token_counts_down_and_is_renewed_near_expiry(store, tenant):
    """IMDS counts expires_in down for a cached token while ext_expires_in stays Entra's 86399
    (azure-sdk-for-python tests/recordings/test_imds_credential.pyTestImdstest_system_assigned.json:
    expires_in "86311", ext_expires_in "86399")."""
    cache = tokens.TokenCache()
    start = datetime.now(timezone.utc)
    with store() as ctx:
        ctx.clock = lambda: start
        first = tokens.imds_token(ctx, tenant["app-both"], OK, cache=cache)
        ctx.clock = lambda: start + timedelta(hours=1)
        later = tokens.imds_token(ctx, tenant["app-both"], OK, cache=cache)
        app_later = tokens.app_service_token(ctx, tenant["secret"], APP_OK, cache=cache)
        ctx.clock = lambda: start + timedelta(seconds=tokens.LIFETIME - tokens.REFRESH_MARGIN + 1)
        renewed = tokens.imds_token(ctx, tenant["app-both"], OK, cache=cache)
    assert first["expires_in"] == "86399"
    assert later["access_token"] == first["access_token"] and later["expires_in"] == str(86399 - 3600)
    assert later["ext_expires_in"] == first["ext_expires_in"] == "86399"
    assert app_later["access_token"] == first["access_token"] and app_later["expires_on"] == first["expires_on"]
    assert renewed["access_token"] != first["access_token"] and renewed["expires_in"] == "86399"


def test_a_cli_request_is_never_cached(store, tenant):
    with store() as ctx:
        app = _res(ctx, tenant["app-both"])
        one = tokens.get_token(ctx, app, VAULT, via="cli")
        two = tokens.get_token(ctx, app, VAULT, via="cli")
    assert one.access_token != two.access_token


def test_the_cache_keeps_only_the_most_recently_used_tokens(store, tenant):
    cache = tokens.TokenCache(size=3)
    audiences = ["https://vault.azure.net", "https://storage.azure.com/", "https://graph.microsoft.com",
                 "https://management.azure.com/", "https://database.windows.net/"]
    with store() as ctx:
        for audience in audiences:
            query = [("api-version", "2018-02-01"), ("resource", audience)]
            assert "access_token" in tokens.imds_token(ctx, tenant["app-both"], query, cache=cache)
    assert len(cache) == 3


def test_bodies_imds_with_ext_expires_in_app_service_with_five_members_all_strings(store, tenant):
    """IMDS: imds.json's IdentityTokenResponse as recorded bodies carry it (azure-rest-api-specs
    specification/imds/.../stable/2023-07-01; azure-sdk-for-python tests/recordings/test_imds_credential.*).
    App Service 2019-08-01: access_token, expires_on (epoch seconds, a string), resource, token_type,
    client_id and nothing else (azure-sdk-for-python#11346, azure-docs overview-managed-identity.md)."""
    with store() as ctx:
        imds = tokens.imds_token(ctx, tenant["app-both"], OK)
        app = tokens.app_service_token(ctx, tenant["secret"], APP_OK)
        issued = tokens.get_token(ctx, _res(ctx, tenant["app-both"]), VAULT)
    assert list(imds) == ["access_token", "client_id", "expires_in", "expires_on", "ext_expires_in", "not_before",
                          "resource", "token_type"]
    assert list(app) == ["access_token", "expires_on", "resource", "token_type", "client_id"]
    assert all(isinstance(v, str) for v in [*imds.values(), *app.values()])
    assert imds["resource"] == app["resource"] == VAULT and imds["ext_expires_in"] == "86399"
    assert int(imds["expires_on"]) - int(imds["not_before"]) == 86_700
    just_issued = tokens.token_body(issued, endpoint=tokens.IMDS)
    assert just_issued["expires_in"] == "86399" and just_issued["expires_on"] == str(issued.claims["exp"])


@pytest.mark.parametrize("query, status, text", [
    (OK + [("resource", VAULT)], 400, "appears more than once"),
    ([("resource", VAULT)], 400, "api-version was not specified"),
    ([("api-version", "2099-01-01"), ("resource", VAULT)], 400, "api-version is invalid"),
    ([("api-version", "2017-12-01"), ("resource", VAULT)], 400, "api-version is invalid"),  # before the identity category
    ([("api-version", "2018-02-01")], 400, "Required query variable 'resource' is missing"),
    ([("api-version", "2018-02-01"), ("resource", "  ")], 400, "Required query variable 'resource' is missing"),
    ([("api-version", "2018-02-01"), ("resource", "https://x/" + "a" * 100_000)], 400, "100,010 characters long"),
])
def test_imds_refuses_a_bad_query_before_it_looks_for_the_resource(store, tenant, query, status, text):
    with store() as ctx:
        refused = tokens.imds_token(ctx, tenant["app-both"], query)
        assert isinstance(refused, tokens.TokenError) and refused.status == status and text in refused.message
        assert len(refused.message) < 300
        if "api-version" in text:
            assert refused.newest_versions == tokens.NEWEST_IMDS_VERSIONS
        assert _log(ctx) == []


@pytest.mark.parametrize("version", ["2018-02-01", "2019-08-01", "2021-12-13", "2025-04-07"])
def test_imds_accepts_the_versions_clients_and_docs_send(store, tenant, version):
    with store() as ctx:
        assert "access_token" in tokens.imds_token(ctx, tenant["app-both"], [("api-version", version), ("resource", VAULT)])


def test_imds_without_a_known_resource_is_identity_not_found(store, tenant):
    with store() as ctx:
        assert "speaks for many resources" in tokens.imds_token(ctx, None, OK).message
        assert tokens.imds_token(ctx, "/subscriptions/nope", OK).message == "Identity not found"
        assert tokens.imds_token(ctx, "/\ufffd\x00", OK).message == "Identity not found"


@pytest.mark.parametrize("secret, query, status, text", [
    ("", [("api-version", "2019-08-01"), ("resource", VAULT)], 400, "X-IDENTITY-HEADER header is required"),
    ("s", [("api-version", "2018-02-01"), ("resource", VAULT)], 400, "must be 2019-08-01"),
    ("s", [("api-version", "2019-08-01")], 400, "resource parameter is required"),
    ("s", [("api-version", "2019-08-01"), ("resource", "a" * 5000)], 400, "5,000 characters long"),
    ("00000000-0000-0000-0000-000000000000", [("api-version", "2019-08-01"), ("resource", VAULT)], 401, "does not match"),
])
def test_app_service_refusals(store, tenant, secret, query, status, text):
    with store() as ctx:
        refused = tokens.app_service_token(ctx, secret, query)
        assert isinstance(refused, tokens.TokenError) and refused.status == status and text in refused.message
        assert _log(ctx) == []


def test_the_log_repeats_a_long_resource_only_in_part(store, tenant):
    long_resource = "https://long.test/" + "x" * (tokens.MAX_RESOURCE - 18)
    with store() as ctx:
        query = [("api-version", "2018-02-01"), ("resource", long_resource)]
        unknown = tokens.imds_token(ctx, tenant["app-both"], query)  # no such resource in the tenant: Entra's refusal
        assert unknown.code == "invalid_resource" and unknown.message.startswith("AADSTS500011: ")
        assert len(unknown.body["error_description"]) < 1000
        refused = tokens.imds_token(ctx, tenant["vm-multi"], query)
        assert "Multiple user assigned" in refused.message
    with store() as ctx:
        details = [e.detail for e in _log(ctx)]
    # the resource is cut short; a refusal's reason (mi's words, with what to do) is bounded too
    assert len(details) == 2 and all(len(d) < 900 and "(2,048 characters)" in d for d in details)
