"""Tokens signed a request ahead (server/signing.Spares): each is what that request would have signed, served once,
and never when an argument differs (another second, key, audience or set of app roles)."""

from __future__ import annotations

import threading

import jwt
import pytest

from mi_cli.server.signing import Spares
from mi_cli.services import groups, identities, keys, resources, tenancy, tokens

VAULT = "https://vault.azure.net"
RANDOM = {"aio", "rh", "uti"}  # the claims every token draws anew


@pytest.fixture
def signing(store):
    with store() as ctx:
        g = groups.create(ctx, "rg", "westeurope")
        res = identities.enable_system(ctx, resources.create(ctx, g, "vm1", "vm"))
        chosen = tokens.choose(ctx, res)
        tenant = tenancy.default_tenant(ctx)
        other = keys.active(ctx, tenant)
        key = keys.rotate(ctx, tenant)  # signs from now on; the other is still published
        tenant_id = tenant.id
        ctx.session.expunge_all()
    spares = Spares()
    yield spares, chosen, tenant_id, key, other
    spares.close()


def _claims(issued: tokens.Issued) -> dict:
    return jwt.decode(issued.access_token, options={"verify_signature": False})


def _plain(issued: tokens.Issued) -> tuple[dict, dict]:
    header = jwt.get_unverified_header(issued.access_token)
    return header, {k: v for k, v in _claims(issued).items() if k not in RANDOM}


def test_a_spare_is_the_token_the_request_would_have_signed_and_is_served_once(signing, monkeypatch):
    spares, chosen, tenant_id, key, _ = signing
    now = 1_900_000_000
    fresh = tokens.sign(chosen, VAULT, tenant_id, key, now, roles=("Reader",))
    signed_by: dict[str, str] = {}
    sign = tokens.sign

    def recorded(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202 - which thread signed each token
        issued = sign(*args, **kwargs)
        signed_by[issued.access_token] = threading.current_thread().name
        return issued

    monkeypatch.setattr(tokens, "sign", recorded)
    served = [spares.sign(chosen, VAULT, tenant_id, key, now, roles=("Reader",)) for _ in range(6)]
    # the first is signed on the request's time; each later one was signed ahead, by a worker
    assert [signed_by[s.access_token].startswith("mi-sign") for s in served] == [False] + [True] * 5
    assert {_plain(s) == _plain(fresh) for s in served} == {True}  # same header, same claims but the random ones
    assert len({s.access_token for s in served}) == 6  # each served once
    assert len({_claims(s)["uti"] for s in served}) == 6
    public = keys.private_key(key).public_key()
    for s in served:
        jwt.decode(s.access_token, public, algorithms=["RS256"], audience=VAULT, options={"verify_exp": False, "verify_iat": False, "verify_nbf": False})


@pytest.mark.parametrize("change", ["second", "audience", "roles", "key"])
def test_a_spare_signed_with_other_arguments_is_not_served(signing, change):
    spares, chosen, tenant_id, key, other = signing
    now = 1_900_000_000
    spares.sign(chosen, VAULT, tenant_id, key, now, roles=("Reader",))  # leaves spares for these arguments
    arguments = {"now": now, "audience": VAULT, "roles": ("Reader",), "key": key}
    arguments |= {"second": {"now": now + 1}, "audience": {"audience": VAULT + "/"}, "roles": {"roles": ()},
                  "key": {"key": other}}[change]
    issued = spares.sign(chosen, arguments["audience"], tenant_id, arguments["key"], arguments["now"],
                         roles=arguments["roles"])
    assert _plain(issued) == _plain(tokens.sign(chosen, arguments["audience"], tenant_id, arguments["key"],
                                                arguments["now"], roles=arguments["roles"]))
    claims = _claims(issued)
    assert claims["exp"] == arguments["now"] + tokens.LIFETIME and claims.get("roles", []) == list(arguments["roles"])
    assert jwt.get_unverified_header(issued.access_token)["kid"] == arguments["key"].kid


def test_the_event_loop_takes_a_spare_and_leaves_a_request_with_none_to_a_worker_thread(signing):
    """On the event loop a token is a spare; with no spare for its arguments, NeedStore: a worker thread answers
    the request, and signs."""
    from mi_cli.server.reads import NeedStore

    spares, chosen, tenant_id, key, _ = signing
    now = 1_900_000_000
    with pytest.raises(NeedStore):
        spares.on_loop.sign(chosen, VAULT, tenant_id, key, now)
    first = spares.sign(chosen, VAULT, tenant_id, key, now)  # a worker thread's: signed there, spares made
    spares._spares[(chosen, VAULT, tenant_id)][0][1].result()  # noqa: SLF001 - the next spare, signed
    again = spares.on_loop.sign(chosen, VAULT, tenant_id, key, now)
    assert again.access_token != first.access_token and _plain(again) == _plain(first)
    with pytest.raises(NeedStore):  # another second: the spares are not that request's
        spares.on_loop.sign(chosen, VAULT, tenant_id, key, now + 1)


def test_on_the_event_loop_a_spare_still_being_signed_is_left_for_the_next_request(signing):
    """While the worker is behind (its spare still being signed), the loop signs the token itself rather than wait."""
    spares, chosen, tenant_id, key, _ = signing
    now = 1_900_000_000
    spares.sign(chosen, VAULT, tenant_id, key, now)  # makes the worker and its spares
    for _, future in list(spares._spares[(chosen, VAULT, tenant_id)]):  # noqa: SLF001
        future.result()
    held = threading.Event()
    blocker = spares._pool.submit(held.wait, 30)  # noqa: SLF001 - the worker is busy until the test lets go
    try:
        spares.on_loop.sign(chosen, VAULT, tenant_id, key, now)  # takes a spare; its replacement waits behind
        spares.on_loop.sign(chosen, VAULT, tenant_id, key, now)  # takes the other
        queued = list(spares._spares[(chosen, VAULT, tenant_id)])  # noqa: SLF001
        assert queued and not any(future.done() for _, future in queued)
        issued = spares.on_loop.sign(chosen, VAULT, tenant_id, key, now)  # none signed: the loop signs itself
        assert _plain(issued) == _plain(tokens.sign(chosen, VAULT, tenant_id, key, now))
        assert queued[0] in spares._spares[(chosen, VAULT, tenant_id)]  # noqa: SLF001 - left for the next request
    finally:
        held.set()
        blocker.result()
