"""The dominance rule is on by default: a grant that lets a query SUM or AVG a measure gets (n = 2, k = 85)
unless its owner writes another rule, or turns it off in writing (``dominance: off`` with a reason), which
policy lint, ``policy show`` and ``review show`` put before whoever signs. Noise grants have no dominance
rule; encrypted results are not served under one. What the rule withholds: tests/test_dominance.py."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from broker.cli.output import print_policy, print_request
from broker.v1 import access_request_service_pb2 as requests_pb
from broker.v1 import policy_service_pb2 as policies_pb
from broker.workflow.policy_draft import ENCRYPTED_WAIVER, drafted_dominance, narrowing_problems, render_policy
from dsbroker.errors import GuardError, PolicyFileError
from dsbroker.guard import guard
from dsbroker.policy.model import DEFAULT_DOMINANCE, Dominance, parse_policy
from tests.conftest import XUANWU

GRANT = """\
id: test-grant
version: 1
grantee: {department: test-dept, district: "320102"}
purpose: testing
dataset: tax.declarations
columns:
  taxpayer_id: entity
  street_code: group
  vat_paid: measure
row_filter: "district_code = :district"
"""
REASON = "published statistics of public enterprises"
OFF = f'disclosure: {{min_entities: 10, dominance: off, dominance_off_reason: "{REASON}"}}\n'
NOISE = "disclosure:\n  noise: {epsilon: 1, budget: 5, bounds: {vat_paid: [0, 1000]}}\n"


def test_a_grant_that_sums_a_measure_gets_the_default_rule():
    policy = parse_policy(GRANT)
    assert policy.dominance == DEFAULT_DOMINANCE == Dominance(n=2, k=85.0) and policy.dominance_waiver is None
    assert parse_policy(GRANT + "aggregates: [COUNT, AVG]\n").dominance == DEFAULT_DOMINANCE
    assert parse_policy(GRANT + "disclosure: {min_entities: 12}\n").dominance == DEFAULT_DOMINANCE


def test_a_grant_with_nothing_to_sum_has_no_rule():
    assert parse_policy(GRANT + "aggregates: [COUNT]\n").dominance is None
    assert parse_policy(GRANT.replace("vat_paid: measure", "vat_paid: filter")).dominance is None


def test_a_written_rule_is_kept_and_p_percent_adds_to_the_default():
    assert parse_policy(GRANT + "disclosure: {dominance: {n: 1, k: 60}}\n").dominance == Dominance(1, 60.0)
    assert parse_policy(GRANT + "disclosure: {dominance: {n: 3, k: 90}, p_percent: 10}\n").dominance == \
        Dominance(3, 90.0, 10.0)
    # p% only where the owner writes it; it does not replace the (n, k) default, which only off removes.
    assert parse_policy(GRANT + "disclosure: {p_percent: 10}\n").dominance == Dominance(2, 85.0, 10.0)


@pytest.mark.parametrize("off", ["off", "Off", "false", '"off"'])
def test_off_with_a_reason_turns_the_rule_off_and_keeps_the_reason(off):
    policy = parse_policy(GRANT + OFF.replace("dominance: off", f"dominance: {off}"))
    assert policy.dominance is None and policy.dominance_waiver == REASON


@pytest.mark.parametrize("disclosure, line, words", [
    ("{dominance: off}", 11, "dominance: off needs disclosure.dominance_off_reason"),
    ('{dominance: off, dominance_off_reason: "  "}', 11, "dominance_off_reason must be non-empty text"),
    ("{dominance: off, dominance_off_reason: 7}", 11, "dominance_off_reason must be non-empty text"),
    ('{dominance_off_reason: "why"}', 11, "goes with dominance: off only"),
    ('{dominance: {n: 2, k: 85}, dominance_off_reason: "why"}', 11, "goes with dominance: off only"),
    ('{dominance: on, dominance_off_reason: "why"}', 11, "must be the rule, e.g. {n: 2, k: 85}, or off"),
    ('{dominance: 0, dominance_off_reason: "why"}', 11, "must be the rule"),
    ('{dominance: "none", dominance_off_reason: "why"}', 11, "must be the rule"),
    ('{dominance: off, dominance_off_reason: "why", p_percent: 10}', 11, "p_percent is a dominance rule"),
    ("\n  min_entities: 10\n  dominance: off", 13, "needs disclosure.dominance_off_reason"),
])
def test_off_without_a_reason_or_anything_but_off_is_refused_naming_file_and_line(disclosure, line, words):
    with pytest.raises(PolicyFileError) as caught:
        parse_policy(GRANT + f"disclosure: {disclosure}\n", source="grant.yaml")
    assert caught.value.line == line and words in caught.value.message
    assert caught.value.message.startswith(f"grant.yaml:{line}: ")


def test_a_noise_grant_gets_no_default_and_has_nothing_to_turn_off():
    policy = parse_policy(GRANT + NOISE)
    assert policy.noise is not None and policy.dominance is None and policy.dominance_waiver is None
    for written in ("dominance: off", f'dominance_off_reason: "{REASON}"', "dominance: {n: 2, k: 85}"):
        with pytest.raises(PolicyFileError, match="alternatives"):
            parse_policy(GRANT + NOISE + f"  {written}\n")


@pytest.mark.parametrize("results, disclosure, words", [
    ("[aggregate, encrypted]", "", "the dominance rule (on by default for SUM and AVG)"),
    ("[encrypted]\npartitions: [east, west]", "", "the dominance rule (on by default for SUM and AVG)"),
    ("[encrypted]", "disclosure: {dominance: {n: 1, k: 60}}\n", "its dominance rule"),
])
def test_an_encrypted_grant_under_a_dominance_rule_is_refused_saying_how_to_serve_it(results, disclosure, words):
    with pytest.raises(PolicyFileError) as caught:
        parse_policy(GRANT + f"results: {results}\n" + disclosure, source="grant.yaml")
    message = caught.value.message
    assert caught.value.line == 11 and f"results: encrypted cannot be served under {words}" in message
    assert "cannot withhold a dominated cell of an encrypted result" in message  # why
    assert 'dominance: off, dominance_off_reason: "..."' in message and "results: [aggregate]" in message  # how


def test_an_encrypted_grant_with_the_waiver_loads():
    policy = parse_policy(GRANT + "results: [encrypted]\npartitions: [east, west]\n" + OFF)
    assert policy.results == ("encrypted",) and policy.dominance is None and policy.dominance_waiver == REASON
    # Nothing to sum, nothing to turn off: an encrypted count needs no waiver.
    assert parse_policy(GRANT + "aggregates: [COUNT]\nresults: [encrypted]\n").dominance is None


def test_the_guard_still_refuses_encrypted_results_under_a_rule_built_in_code():
    # The loader refuses such a grant; the guard's own check stays for policies made otherwise.
    grant = dataclasses.replace(parse_policy(GRANT), results=("aggregate", "encrypted"))
    with pytest.raises(GuardError) as caught:
        guard("SELECT street_code, SUM(vat_paid) AS v FROM tax.declarations GROUP BY 1", grant, district=XUANWU,
              department="test-dept", encrypted=True)
    assert caught.value.reason == "ENCRYPTED_DISCLOSURE_UNSUPPORTED"


def lint(*paths):
    return subprocess.run([sys.executable, "-m", "broker.cli.main", "policy", "lint", *map(str, paths)],
                          capture_output=True, text=True)


def test_lint_shows_the_waiver_and_its_reason_as_a_warning(tmp_path):
    waived, default = tmp_path / "waived.yaml", tmp_path / "default.yaml"
    waived.write_text(GRANT + OFF)
    default.write_text(GRANT)
    run = lint(waived, default)
    assert run.returncode == 0, run.stderr  # a warning does not fail the check
    assert f"{waived}:11: warning: the dominance rule is off" in run.stderr and REASON in run.stderr
    assert f"{waived}: ok (test-grant v1, 1 warning)" in run.stdout
    assert f"{default}: ok (test-grant v1)" in run.stdout and str(default) not in run.stderr


def test_lint_refuses_off_without_a_reason_naming_the_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(GRANT + "disclosure: {min_entities: 10, dominance: off}\n")
    run = lint(bad)
    assert run.returncode == 7 and f"{bad}:11: dominance: off needs disclosure.dominance_off_reason" in run.stderr


def test_policy_show_and_review_show_print_the_waiver(capsys):
    print_policy(policies_pb.Policy(name="policies/test-grant", version=1, document=GRANT + OFF), as_json=False)
    shown = capsys.readouterr().out
    assert "warning: the dominance rule is off" in shown and REASON in shown
    print_request(requests_pb.AccessRequest(name="accessRequests/req-test", draft_policy=GRANT + OFF), as_json=False,
                  full=True)
    assert REASON in capsys.readouterr().out
    print_policy(policies_pb.Policy(name="policies/test-grant", version=1, document=GRANT), as_json=False)
    assert "dominance rule is off" not in capsys.readouterr().out


def test_drafts_write_the_rule_out_and_a_draft_for_encrypted_results_turns_it_off():
    policy = parse_policy(GRANT)
    plain = render_policy(drafted_dominance(dataclasses.replace(policy, dominance=None)))
    assert "disclosure: {min_entities: 10, dominance: {n: 2, k: 85}}\n" in plain
    assert parse_policy(plain).dominance == DEFAULT_DOMINANCE
    encrypted = render_policy(drafted_dominance(dataclasses.replace(policy, results=("aggregate", "encrypted"))))
    assert parse_policy(encrypted).dominance_waiver == ENCRYPTED_WAIVER
    counts = drafted_dominance(dataclasses.replace(policy, aggregates=("COUNT",)))
    assert "dominance" not in render_policy(counts) and counts.dominance is None


def test_a_final_policy_may_not_turn_off_the_drafts_rule_but_may_turn_on_a_waived_one():
    draft = parse_policy(GRANT)
    waived = parse_policy(GRANT + OFF)
    assert narrowing_problems(draft, waived) == ["the dominance rule differs from the draft's (the final turns it off)"]
    assert narrowing_problems(draft, parse_policy(GRANT + "disclosure: {dominance: {n: 1, k: 90}}\n")) == \
        ["the dominance rule differs from the draft's"]
    assert narrowing_problems(waived, draft) == []
