"""The shared fixtures are faithful: a prebuilt store is the store its commands would have made here,
and what one test does to its copy stays in that test."""

from __future__ import annotations

from tests.conftest import build_scenario, runners


def test_a_prebuilt_scenario_has_the_ids_of_building_it_in_place_under_a_seed(prebuilt, monkeypatch, tmp_path, db):
    monkeypatch.setenv("MI_SEED", "fixtures")
    shared = prebuilt(build_scenario)
    ok, mi = runners(tmp_path / "in-place.db")
    assert build_scenario(ok, mi) == shared
    # and both go on alike: the seeded GUID counter came with the copy
    ok_copy, _ = runners(db)
    assert ok_copy("identity", "create", "-g", "rg", "-n", "next") == ok("identity", "create", "-g", "rg", "-n", "next")


def test_a_test_changes_its_own_copy(scenario, ok):
    ok("identity", "create", "-g", "rg", "-n", "extra")
    assert sorted(i["name"] for i in ok("identity", "list", "--kind", "user")) == ["extra", "shared"]


def test_the_next_test_starts_from_the_template_again(scenario, ok):
    assert [i["name"] for i in ok("identity", "list", "--kind", "user")] == ["shared"]
