"""The plan cache returns the guard's own plan, and never one built for another caller or policy."""

from __future__ import annotations

import dataclasses

import pytest

from dsbroker.errors import GuardError
from dsbroker.guard import guard
from dsbroker.guard.plan_cache import PlanCache

SQL = "SELECT street_code, SUM(vat_paid) AS vat FROM tax.declarations GROUP BY street_code"


def build(policy, district, sql=SQL):
    return lambda: guard(sql, policy, district=district, department="xuanwu-fgw")


def test_a_hit_is_the_same_plan(policy):
    cache = PlanCache()
    first = cache.get_or_build(policy, "320102", "xuanwu-fgw", SQL, build(policy, "320102"))
    second = cache.get_or_build(policy, "320102", "xuanwu-fgw", SQL, build(policy, "320102"))
    assert first is second and (cache.hits, cache.misses) == (1, 1)


def test_another_district_or_policy_version_gets_its_own_plan(policy):
    cache = PlanCache()
    xuanwu = cache.get_or_build(policy, "320102", "xuanwu-fgw", SQL, build(policy, "320102"))
    qinhuai = cache.get_or_build(policy, "320104", "xuanwu-fgw", SQL, build(policy, "320104"))
    assert "'320102'" in xuanwu.sql and "'320104'" in qinhuai.sql
    stricter = dataclasses.replace(policy, min_entities=50, sha256="edited")
    raised = cache.get_or_build(stricter, "320102", "xuanwu-fgw", SQL, build(stricter, "320102"))
    assert raised.min_entities == 50 and cache.misses == 3


def test_refusals_are_not_cached(policy):
    cache = PlanCache()
    for _ in range(2):
        with pytest.raises(GuardError):
            cache.get_or_build(policy, "320102", "xuanwu-fgw", "SELECT * FROM tax.declarations",
                               build(policy, "320102", "SELECT * FROM tax.declarations"))
    assert cache.misses == 2 and cache.hits == 0


def test_capacity_is_bounded(policy):
    cache = PlanCache(capacity=2)
    for street in ("a", "b", "c"):
        sql = f"SELECT COUNT(*) AS c FROM tax.declarations WHERE street_code = '{street}'"
        cache.get_or_build(policy, "320102", "xuanwu-fgw", sql, build(policy, "320102", sql))
    assert len(cache._plans) == 2  # entries, by text and by tokens


def test_whitespace_comments_and_keyword_case_reuse_the_plan_but_names_and_values_do_not(policy):
    cache = PlanCache()
    plan = cache.get_or_build(policy, "320102", "xuanwu-fgw", SQL, build(policy, "320102"))
    same = ["select street_code,  SUM(vat_paid) as vat\n  FROM tax.declarations -- by street\n GROUP   BY street_code",
            "/* monthly */ SELECT street_code, SUM(vat_paid) AS vat FROM tax.declarations group by street_code"]
    for sql in same:
        assert cache.get_or_build(policy, "320102", "xuanwu-fgw", sql, lambda: pytest.fail("rebuilt")) is plan
        assert guard(sql, policy, district="320102", department="xuanwu-fgw").sql == plan.sql
    different = ["SELECT street_code, SUM(vat_paid) AS Vat FROM tax.declarations GROUP BY street_code",
                 "SELECT street_code, SUM(cit_paid) AS vat FROM tax.declarations GROUP BY street_code",
                 "SELECT street_code, SUM(vat_paid) AS vat FROM tax.declarations WHERE size_class = 'Large' GROUP BY 1",
                 "SELECT street_code, SUM(vat_paid) AS vat FROM tax.declarations WHERE size_class = 'large' GROUP BY 1"]
    for sql in different:
        assert cache.get_or_build(policy, "320102", "xuanwu-fgw", sql, build(policy, "320102", sql)) != plan
    assert cache.misses == 1 + len(different) and cache.hits == len(same)
    # A text repeated exactly is found without tokenizing it again.
    assert cache.get_or_build(policy, "320102", "xuanwu-fgw", same[0], lambda: pytest.fail("rebuilt")) is plan
