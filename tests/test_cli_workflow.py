"""The workflow from a terminal: catalog, request, review and policy commands against a real broker,
and the demo's full walk-through."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from broker.cli.main import main
from broker.dev.demo import run_demo
from broker.dev.keys import signer_key_id
from dsbroker.policy.signing import Trust
from dsbroker.policy.statements import verify_statement
from broker.server import start_broker
from tests.conftest import ANALYST, GRANT, ROOT, XUANWU, broker_settings_for, dev_keys, token_for


@pytest.fixture
def broker_target(sandbox, tmp_path):
    policies = tmp_path / "policies"
    policies.mkdir()
    running = start_broker(broker_settings_for(sandbox.port, tmp_path / "log.sqlite", policies=str(policies)))
    yield f"127.0.0.1:{running.port}"
    running.stop()


def as_actor(target: str, department: str, district: str, role: str) -> dict[str, str]:
    keys = dev_keys()
    env = {"DSBROKER_BROKER": target, "DSBROKER_TOKEN": token_for(department, district, (role,), f"{role}-1"),
           "DSBROKER_CA": str(keys.platform_ca), "DSBROKER_CERT": str(keys.client_cert(ANALYST)),
           "DSBROKER_KEY": str(keys.client_key(ANALYST))}
    if role in ("reviewer", "owner"):
        env |= {"DSBROKER_SIGNING_KEY": str(keys.signer_key(department)),
                "DSBROKER_SIGNING_KEY_ID": signer_key_id(department)}
    return env


def run(env, *args):
    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    return result


def test_the_workflow_from_the_command_line(broker_target, tmp_path):
    requester = as_actor(broker_target, "xuanwu-fgw", XUANWU, "requester")
    reviewer = as_actor(broker_target, "xuanwu-tax", XUANWU, "reviewer")
    owner = as_actor(broker_target, "city-tax", "320100", "owner")

    shown = run(requester, "catalog", "show", "tax.declarations")
    assert shown.exit_code == 0 and "vat_paid" in shown.output and "sensitive" in shown.output
    listed = run(requester, "catalog", "list", "--json")
    assert "tax.declarations" in {d["name"] for d in json.loads(listed.output)}

    submitted = run(requester, "request", "submit", str(ROOT / "examples/request.yaml"), "--json")
    assert submitted.exit_code == 0, submitted.output
    name = json.loads(submitted.output)["name"].removeprefix("accessRequests/")

    pending = run(reviewer, "review", "list")
    assert pending.exit_code == 0 and name in pending.output
    review = run(reviewer, "review", "show", name)
    assert review.exit_code == 0 and "accepted" in review.output and "ENTITY_COLUMN_MISUSED" in review.output
    assert "drafted policy" in review.output

    refused = run(reviewer, "review", "approve", name, "--min-entities", "20")
    assert refused.exit_code != 0 and "only the owner narrows" in refused.output
    approved = run(reviewer, "review", "approve", name, "--comment", "fits the report")
    assert approved.exit_code == 0 and "reviewed" in approved.output, approved.output

    activated = run(owner, "review", "approve", name, "--drop-column", "cit_paid", "--min-entities", "15", "--json")
    assert activated.exit_code == 0, activated.output
    grant = json.loads(activated.output)["policy"].removeprefix("policies/")

    listed = run(requester, "policy", "list")
    assert listed.exit_code == 0 and grant in listed.output and "active" in listed.output
    document = run(owner, "policy", "show", grant)
    # The draft writes the default dominance rule out (the request asks for SUMs of measures, in plaintext).
    assert "disclosure: {min_entities: 15, dominance: {n: 2, k: 85}}" in document.output
    assert "cit_paid" not in document.output.split("approvals:")[0] and "dominance rule is off" not in document.output

    no_reason = run(owner, "policy", "suspend", grant)
    assert no_reason.exit_code != 0 and "--reason" in no_reason.output
    assert "suspended" in run(owner, "policy", "suspend", grant, "--reason", "audit").output
    assert "active" in run(owner, "policy", "resume", grant).output
    unsigned = run({k: v for k, v in owner.items() if not k.startswith("DSBROKER_SIGNING")}, "policy", "revoke", grant,
                   "--reason", "report published")
    assert unsigned.exit_code != 0 and "--signing-key" in unsigned.output
    statement = tmp_path / "revocation.json"
    revoked = run(owner, "policy", "revoke", grant, "--reason", "report published", "--out", str(statement))
    assert revoked.exit_code == 0, revoked.output
    assert "revoked" in revoked.output and "sandboxes that kept the revocation: " in revoked.output
    assert verify_statement(statement.read_text(), Trust.load(dev_keys().trust)).policy_id == grant
    query = run(requester, "query", "--grant", grant, "--sql", "SELECT COUNT(*) AS n FROM tax.declarations")
    assert query.exit_code == 3 and "GRANT_NOT_ACTIVE" in query.output


def test_rejecting_and_withdrawing_from_the_command_line(broker_target):
    requester = as_actor(broker_target, "xuanwu-fgw", XUANWU, "requester")
    reviewer = as_actor(broker_target, "xuanwu-tax", XUANWU, "reviewer")
    first = json.loads(run(requester, "request", "submit", str(ROOT / "examples/request.yaml"), "--json").output)
    second = json.loads(run(requester, "request", "submit", str(ROOT / "examples/request.yaml"), "--json").output)
    rejected = run(reviewer, "review", "reject", first["name"], "--reason", "street detail is not needed")
    assert rejected.exit_code == 0 and "rejected" in rejected.output
    withdrawn = run(requester, "request", "withdraw", second["name"])
    assert withdrawn.exit_code == 0 and "withdrawn" in withdrawn.output
    again = run(requester, "request", "withdraw", second["name"])
    assert again.exit_code == 3 and "STATE_TRANSITION_INVALID" in again.output
    listed = run(requester, "request", "list", "--state", "rejected", "--json")
    assert [r["name"] for r in json.loads(listed.output)["access_requests"]] == [first["name"]]


def test_a_request_file_with_an_unknown_key_names_it(broker_target, tmp_path):
    bad = tmp_path / "request.yaml"
    bad.write_text((ROOT / "examples/request.yaml").read_text() + "budget: 100\n")
    result = run(as_actor(broker_target, "xuanwu-fgw", XUANWU, "requester"), "request", "submit", str(bad))
    assert result.exit_code != 0 and "budget" in result.output


def test_the_demo_walks_the_whole_flow(demo_db, tmp_path):
    shutil.copy(demo_db, tmp_path / "tax-20000.duckdb")
    assert run_demo(tmp_path, taxpayers=20_000) == 0


def test_query_explain_prints_the_rewrite_and_the_rules_and_runs_nothing(broker):
    requester = as_actor(f"127.0.0.1:{broker.port}", "xuanwu-fgw", XUANWU, "requester")
    sql = "SELECT street_code, SUM(vat_paid) AS vat FROM tax.declarations GROUP BY 1"
    shown = run(requester, "query", "--grant", GRANT, "--sql", sql, "--explain")
    assert shown.exit_code == 0, shown.output
    assert "COUNT(__e) AS __s0, SUM(__sum_vat_paid) AS __s1" in shown.output
    assert "after disclosure control:\n__k0 AS street_code, __s1 AS vat" in shown.output
    assert "add_row_filter" in shown.output
    assert "nothing was run" in shown.output and "rewrote" in shown.output
    as_json = json.loads(run(requester, "query", "--grant", GRANT, "--sql", sql, "--explain", "--json").output)
    # A DISTINCT over keys becomes its GROUP BY before the allowlist (expand_distinct_groups); here it does nothing.
    steps = {step["rule"]: step for step in as_json["steps"]}
    rules = [step["rule"] for step in as_json["steps"]]
    assert rules[0] == "expand_distinct_groups" and steps["expand_distinct_groups"]["action"] == "ACTION_UNCHANGED"
    # The safe-form rewrites run before the allowlist; none applies to this query (no CASE x WHEN, no EXTRACT,
    # no date arithmetic).
    for rewrite in ("expand_simple_case", "expand_date_forms"):
        assert rules.index(rewrite) < rules.index("reject_unsupported_syntax")
        assert steps[rewrite]["action"] == "ACTION_UNCHANGED"
    assert steps["reject_unsupported_syntax"] == {
        "rule": "reject_unsupported_syntax", "action": "ACTION_CHECKED",
        "summary": "Refuse any node outside the allowlist, naming the construct."}
    refused = run(requester, "query", "--grant", GRANT, "--sql", "SELECT * FROM tax.declarations", "--explain")
    assert refused.exit_code == 3 and "RAW_ROWS" in refused.output
