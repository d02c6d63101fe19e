"""`mi keyvault secret` given what a careless user types: every refusal is az's error line and exit code,
never an InternalError."""

from __future__ import annotations

import pytest

from tests.cli.test_keyvault_cli import build_vault


@pytest.fixture
def vault(prebuilt):
    return prebuilt(build_vault)


@pytest.mark.parametrize("when", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
def test_a_time_whose_utc_falls_outside_the_calendar_is_an_invalid_value(mi, vault, when):
    r = mi("keyvault", "secret", "set", "--vault-name", "kv1", "-n", "s", "--value", "x", "--expires", when)
    assert r.code == 1 and r.err.startswith("ERROR: (InvalidArgumentValue) --expires ") and "InternalError" not in r.err
    r = mi("keyvault", "secret", "list", "--vault-name", "kv1", "-o", "json")
    assert r.out.strip() == "[]"  # nothing was made


@pytest.mark.parametrize("identifier", ["https://[::1/secrets/s", "https://[zz/secrets/s/v"])
def test_an_id_that_is_not_a_url_is_a_usage_error(mi, vault, identifier):
    r = mi("keyvault", "secret", "show", "--id", identifier)
    assert r.code == 2 and r.err.startswith("ERROR: (InvalidArgumentValue) --id ") and "InternalError" not in r.err
