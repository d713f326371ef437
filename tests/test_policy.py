"""Policy files: the example loads; every problem is reported with its file and line."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import pytest

from dsbroker.errors import PolicyFileError
from dsbroker.policy.model import ColumnLevel, Dominance, Noise, bind_row_filter, load_policies, parse_policy
from tests.conftest import POLICIES

VALID = """\
id: test-grant
version: 2
grantee: {department: test-dept}
purpose: testing
dataset: tax.declarations
columns:
  taxpayer_id: entity
  street_code: group
  vat_paid: measure
row_filter: "district_code = :district"
"""


def test_example_policies_load(policy):
    assert policy.entity_column == "taxpayer_id" and policy.level_of("district_code") is ColumnLevel.HIDDEN
    assert policy.is_valid_on(dt.date(2026, 12, 1)) and not policy.is_valid_on(dt.date(2027, 7, 1))
    assert set(load_policies(POLICIES)) == {policy.id}


def test_defaults_are_safe():
    policy = parse_policy(VALID)
    assert policy.min_entities == 10 and policy.aggregates == ("COUNT", "SUM", "AVG")


@pytest.mark.parametrize("change, line, words", [
    (("version: 2", "version: 2\nversion: 3"), 3, "duplicate key 'version'"),
    (("purpose: testing", "purpose: testing\nowner: me"), 5, "unknown key 'owner'"),
    (("vat_paid: measure", "vat_paid: secret"), 9, "unknown level 'secret'"),
    (("taxpayer_id: entity", "taxpayer_id: group"), 7, "exactly one column must be the entity"),
    (('"district_code = :district"', '"district_code = = 1"'), 10, "does not parse"),
    (('"district_code = :district"', '"district_code = :city"'), 10, "unknown parameter :city"),
    # Regression: an unterminated string raised sqlglot's TokenError past the loader (a crash, not a lint error).
    (('"district_code = :district"', '"xdistrict_code = :district\'"'), 10, "does not parse"),
    (("version: 2", "version: 2\nnarrows: sha256:abc"), 3, "narrows"),
    (("version: 2", "version: 2\nrequest: r-1"), 3, "request"),
    (("purpose: testing", "purpose: testing\ndisclosure: {min_entities: 1}"), 5, "at least 2"),
    (("purpose: testing", "purpose: testing\ndisclosure: {dominance: {n: 2, k: 185}}"), 5, "percentage"),
    (("purpose: testing", "purpose: testing\ndisclosure: {dominance: {k: 85}}"), 5, "dominance.n"),
    (("purpose: testing", "purpose: testing\ndisclosure: {dominance: {n: 0, k: 85}}"), 5, "at least 1"),
    (("purpose: testing", "purpose: testing\ndisclosure: {p_percent: 0}"), 5, "percentage"),
    (("purpose: testing", "purpose: testing\ndisclosure: {noise: {epsilon: 1, budget: 5}}"), 5, "noise.bounds"),
    (("purpose: testing", "purpose: testing\ndisclosure: {noise: {epsilon: 1, budget: 0.5, bounds: {}}}"), 5,
     "less than one query's epsilon"),
    (("purpose: testing", "purpose: testing\ndisclosure: {noise: {epsilon: 0, budget: 5, bounds: {}}}"), 5, "above 0"),
    (("purpose: testing", "purpose: testing\ndisclosure: {noise: {epsilon: 1, budget: 5, delta: 0.1, bounds: {}}}"),
     5, "below 0.001"),
    (("purpose: testing",
      "purpose: testing\ndisclosure: {noise: {epsilon: 1, budget: 5, bounds: {street_code: [0, 1]}}}"),
     5, "not a measure column"),
    (("purpose: testing", "purpose: testing\ndisclosure: {noise: {epsilon: 1, budget: 5, bounds: {vat_paid: [5, 1]}}}"),
     5, "low < high"),
    (("purpose: testing",
      "purpose: testing\ndisclosure: {noise: {epsilon: 1, budget: 5, bounds: {vat_paid: [0.5, 1]}}}"),
     5, "whole numbers"),
    (("purpose: testing", "purpose: testing\ndisclosure: {p_percent: 10, noise: {epsilon: 1, budget: 5, bounds: {}}}"),
     5, "alternatives"),
    (("purpose: testing", "purpose: testing\nmin_max: {vat_paid: [MAX]}\ndisclosure: {noise: {epsilon: 1, budget: 5, "
      "bounds: {}}}"), 5, "names one taxpayer's value"),
    (("purpose: testing", "purpose: testing\nranges: {street_code: 10}"), 5, "not a measure column"),
    (("purpose: testing", "purpose: testing\nranges: {vat_paid: 0}"), 5, "at least 1"),
    (("purpose: testing", "purpose: testing\nvalues: {vat_paid: ['1']}"), 5, "not a group or filter column"),
    (("purpose: testing", "purpose: testing\nvalues: {street_code: []}"), 5, "a list of 1 to 1000 values"),
    (("purpose: testing", "purpose: testing\nvalues: {street_code: [39]}"), 5, "quoted text"),
    (("purpose: testing", "purpose: testing\nvalues: {street_code: ['a', 'a']}"), 5, "listed twice"),
    (("purpose: testing", "purpose: testing\nlimits: {valid_from: 2026-02-01, valid_until: 2026-01-01}"), 5, "before"),
    (("dataset: tax.declarations", "dataset: declarations"), 5, "dataset"),
    (("version: 2", "version: two"), 2, "whole number"),
    (("purpose: testing", "purpose: testing\naggregates: [SUM, MEDIAN]"), 5, "unknown value 'MEDIAN'"),
    (("purpose: testing", "purpose: testing\naggregates: [SUM, MAX]"), 5, "granted per measure column"),
    (("purpose: testing", "purpose: testing\nmin_max: {street_code: [MAX]}"), 5, "not a measure column"),
    (("purpose: testing", "purpose: testing\nmin_max: {vat_paid: [MEDIAN]}"), 5, "unknown value 'MEDIAN'"),
    (("purpose: testing", "purpose: testing\nlookups: {tax.streets: {key: street_name, columns: [x]}}"), 5,
     "must be a group or filter column"),
    (("purpose: testing", "purpose: testing\nlookups: {tax.streets: {key: street_code}}"), 5, "missing required key"),
    (("purpose: testing", "purpose: testing\nlookups: {tax.streets: {key: street_code, columns: []}}"), 5,
     "non-empty list"),
    (("purpose: testing", "purpose: testing\nlookups: {streets: {key: street_code, columns: [name]}}"), 5,
     "schema.table"),
    (("purpose: testing", "purpose: testing\nlookups: {geo.declarations: {key: street_code, columns: [name]}}"), 5,
     "same table name"),
    (("purpose: testing", "purpose: testing\npartitions: [office-a, office-b]"), 5, "need results: [encrypted]"),
    (("purpose: testing", "purpose: testing\nresults: [aggregate, encrypted]\npartitions: [office-a, office-b]"), 6,
     "need results: [encrypted]"),
    (("purpose: testing", "purpose: testing\nresults: [encrypted]\npartitions: [office-a]"), 6, "two or more"),
    (("purpose: testing", "purpose: testing\nresults: [encrypted]\npartitions: [office-a, office-a]"), 6,
     "listed twice"),
    (("purpose: testing", "purpose: testing\nresults: [encrypted]\npartitions: [office-a, 'b c']"), 6,
     "is not of the form"),
    (("purpose: testing", "purpose: testing\nresults: [encrypted]\npartitions: [a, b]\ndisclosure: {noise: "
      "{epsilon: 1, budget: 5, bounds: {}}}"), 7, "not served with partitions"),
    (("purpose: testing", "purpose: testing\nresults: [plaintext]"), 5, "unknown value 'plaintext'"),
    # Names the guard keeps for its own columns: a policy column named so could be read as one.
    (("vat_paid: measure", "__s1: measure"), 9, "reserved for the guard's own columns"),
    (("dataset: tax.declarations", "dataset: tax.__cells"), 5, "reserved for the guard's own columns"),
    (("purpose: testing", "purpose: testing\nlookups: {tax.__k0: {key: street_code, columns: [name]}}"), 5,
     "reserved for the guard's own columns"),
    (("purpose: testing", "purpose: testing\nlookups: {tax.streets: {key: street_code, columns: [__e]}}"), 5,
     "reserved for the guard's own columns"),
])
def test_problems_name_the_line(change, line, words):
    with pytest.raises(PolicyFileError) as caught:
        parse_policy(VALID.replace(*change), source="grant.yaml")
    assert caught.value.line == line and words in caught.value.message
    assert caught.value.message.startswith(f"grant.yaml:{line}: ")


def test_results_and_partitions_parse():
    # Encrypted results need the dominance rule off (tests/test_dominance_default.py).
    policy = parse_policy(VALID + "results: [encrypted]\npartitions: [xuanwu-office-east, host-1:demo]\n"
                          'disclosure: {dominance: off, dominance_off_reason: "a test of how partitions parse"}\n')
    assert policy.results == ("encrypted",) and policy.partitions == ("xuanwu-office-east", "host-1:demo")
    assert parse_policy(VALID).results == ("aggregate",) and parse_policy(VALID).partitions == ()


def test_dominance_rules_parse():
    policy = parse_policy(VALID + "disclosure: {min_entities: 5, dominance: {n: 2, k: 85}, p_percent: 10}\n")
    assert policy.dominance == Dominance(2, 85.0, 10.0) and policy.min_entities == 5
    assert parse_policy(VALID + "disclosure: {dominance: {n: 1, k: 60}}\n").dominance == Dominance(1, 60.0)
    assert parse_policy(VALID).dominance == Dominance(2, 85.0), "on by default (tests/test_dominance_default.py)"


def test_values_list_a_column_s_codes():
    assert parse_policy(VALID + "values: {street_code: ['001', '002']}\n").values == {"street_code": ("001", "002")}
    assert parse_policy(VALID).values == {}


def test_ranges_name_a_grid_per_measure():
    assert parse_policy(VALID + "ranges: {vat_paid: 100000}\n").ranges == {"vat_paid": 100_000}
    assert parse_policy(VALID).ranges == {}


def test_noise_settings_parse_with_safe_defaults():
    policy = parse_policy(VALID + "disclosure:\n  noise: {epsilon: 0.5, budget: 5, bounds: {vat_paid: [-100, 1000]}}\n")
    assert policy.noise == Noise(0.5, 5.0, {"vat_paid": (-100, 1000)}, delta=1e-6, groups_per_entity=1,
                                 rows_per_entity=1)
    assert policy.noise.magnitude("vat_paid") == 1000 and parse_policy(VALID).noise is None


def test_lookup_columns_take_the_level_of_their_key_and_min_max_is_per_column():
    policy = parse_policy(VALID + "min_max: {vat_paid: [max]}\n"
                          "lookups:\n  tax.streets: {key: street_code, columns: [street_name]}\n")
    assert policy.min_max == {"vat_paid": ("MAX",)}
    visible = policy.visible_columns()
    assert visible["streets.street_name"] is visible["streets.street_code"] is ColumnLevel.GROUP
    assert "street_name" not in visible


def test_not_yaml_names_the_line():
    with pytest.raises(PolicyFileError) as caught:
        parse_policy("id: [unclosed\nversion: 1\n", source="bad.yaml")
    assert caught.value.line is not None


def test_row_filter_binds_the_caller_as_a_literal():
    bound = bind_row_filter("district_code = :district", district="3201' OR '1'='1", department="d")
    assert bound.sql() == "district_code = '3201'' OR ''1''=''1'"


def test_lint_command_exits_non_zero_and_names_the_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(VALID.replace("vat_paid: measure", "vat_paid: secret"))
    run = subprocess.run([sys.executable, "-m", "broker.cli.main", "policy", "lint", str(bad)],
                         capture_output=True, text=True)
    assert run.returncode == 7 and f"{bad}:9:" in run.stderr


@pytest.mark.parametrize("change", [
    lambda text: text.replace("version: 2", "version: 2\n" + "k" * 1_000_000 + ": 1"),
    lambda text: text.replace("id: test-grant", "id: " + "Ä" * 500_000),
    lambda text: text.replace("street_code: group", "street_code: " + "g" * 1_000_000),
], ids=["unknown-key", "id", "level"])
def test_a_problem_with_a_huge_value_is_reported_without_echoing_it(change):
    # Policy documents arrive over gRPC (approvals); the message of their refusal must stay small.
    with pytest.raises(PolicyFileError) as caught:
        parse_policy(change(VALID))
    assert len(caught.value.message.encode()) <= 300 and caught.value.line


WITH_DISTRICT = VALID.replace("grantee: {department: test-dept}",
                              'grantee: {department: test-dept, district: "320102"}')


def test_the_grantee_names_its_district():
    policy = parse_policy(WITH_DISTRICT)
    assert (policy.department, policy.district) == ("test-dept", "320102")
    assert parse_policy(VALID).district is None, "an old policy still loads (lint flags it; no query runs under it)"


@pytest.mark.parametrize("district, words",
                         [("320102", "quoted"), ('""', "non-empty text"), ('"32 01"', "of the form")])
def test_a_grantee_district_is_quoted_text(district, words):
    with pytest.raises(PolicyFileError) as caught:
        parse_policy(WITH_DISTRICT.replace('"320102"', district))
    assert caught.value.line == 3 and words in caught.value.message


def test_lint_flags_a_policy_without_a_grantee_district(tmp_path):
    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old.write_text(VALID)
    new.write_text(WITH_DISTRICT)
    run = subprocess.run([sys.executable, "-m", "broker.cli.main", "policy", "lint", str(old), str(new)],
                         capture_output=True, text=True)
    assert run.returncode == 7 and f"{old}:3: grantee.district is missing" in run.stderr
    assert f"{new}: ok" in run.stdout
