"""A grant's lookups are checked against what the sandbox serves: a lookup table, key or column that
is not there, or a key that is not unique, is FAILED_PRECONDITION naming the grant, never INTERNAL;
and ``policy lint --sandbox-config`` finds the same before anyone signs."""

from __future__ import annotations

import subprocess
import sys
import uuid

import grpc
import pytest

from dsbroker.guard import guard
from broker.dev.keys import to_toml
from dsbroker.policy.model import parse_policy
from dsbroker.rpc.status import error_from_rpc_error
from dsbroker.identity.tls import open_channel
from sandbox.demo.data import DEMO_DATASETS
from sandbox.v1 import sandbox_service_pb2 as pb
from sandbox.v1 import sandbox_service_pb2_grpc as pb_grpc
from tests.conftest import GRANT, POLICIES, ROOT, XUANWU, sandbox_client_tls, sign, token_for

SHIPPED = (POLICIES / f"{GRANT}.yaml").read_text(encoding="utf-8")
STREETS = "tax.streets: {key: street_code, columns: [street_name]}"
BROKEN = {
    "a column the lookup lacks": (STREETS.replace("[street_name]", "[street_nam]"),
                                  "JOIN tax.streets s USING (street_code) GROUP BY s.street_nam",
                                  "LOOKUP_INVALID", "tax.streets", "street_nam"),
    "a key the lookup lacks": ("tax.districts: {key: street_code, columns: [district_name]}",
                               "JOIN tax.districts s USING (street_code) GROUP BY s.district_name",
                               "LOOKUP_INVALID", "tax.districts", "street_code"),
    "a key that is not unique": (STREETS.replace("key: street_code", "key: district_code"),
                                 "JOIN tax.streets s USING (district_code) GROUP BY s.street_name",
                                 "LOOKUP_KEY_NOT_UNIQUE", "tax.streets", "district_code"),
}


def plan_for(document: str, joined: str) -> pb.Plan:
    policy = parse_policy(document)
    sql = f"SELECT COUNT(*) AS n FROM tax.declarations {joined}"
    guarded = guard(sql, policy, district=XUANWU, department="xuanwu-fgw")
    return pb.Plan(dataset="tax.declarations", sql=guarded.sql, policy_id=policy.id, policy_version=policy.version,
                   max_rows=guarded.max_rows, policy_document=document, original_sql=sql, caller_token=token_for(),
                   execution_id=str(uuid.uuid4()))


def run(sandbox, plan: pb.Plan):
    with open_channel(f"127.0.0.1:{sandbox.port}", tls=sandbox_client_tls(), options=[]) as channel:
        try:
            return pb_grpc.SandboxServiceStub(channel).ExecutePlan(pb.ExecutePlanRequest(plan=plan), timeout=30), None
        except grpc.RpcError as error:
            return None, error_from_rpc_error(error)


@pytest.mark.parametrize("lookup, joined, reason, table, column", BROKEN.values(), ids=BROKEN.keys())
def test_a_lookup_that_does_not_hold_in_the_data_is_a_precondition_failure_naming_the_grant(
        sandbox, lookup, joined, reason, table, column):
    text = SHIPPED.replace(STREETS, lookup)
    if "district_code" in lookup:  # a district has many streets: the join would repeat each declaration
        text = text.replace("  street_code: group", "  street_code: group\n  district_code: group")
    _, error = run(sandbox, plan_for(sign(text), joined))
    assert error is not None, "the plan ran"
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, reason)
    assert (error.metadata["policy"], error.metadata["table"], error.metadata["column"]) == (GRANT, table, column)
    response, error = run(sandbox, plan_for(sign(SHIPPED), "JOIN tax.streets s USING (street_code)"))
    assert error is None and response.table.row_count == 1  # the sandbox keeps serving


def test_lint_checks_a_policy_against_the_sandboxs_data_before_anyone_signs(demo_db, tmp_path):
    config = tmp_path / "sandbox.toml"
    config.write_text(to_toml({"data": str(demo_db), "datasets": list(DEMO_DATASETS)}))
    good = tmp_path / "good.yaml"
    good.write_text(SHIPPED)
    broken = tmp_path / "broken.yaml"
    broken.write_text(SHIPPED.replace(STREETS, BROKEN["a column the lookup lacks"][0])
                      .replace("  employees: measure", "  employes: measure")
                      .replace('size_class: ["large", "medium", "micro", "small"]', 'size_class: ["large", "medium"]'))
    run = subprocess.run([sys.executable, "-m", "broker.cli.main", "policy", "lint", "--sandbox-config", str(config),
                          str(good), str(broken)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 7, run.stderr
    assert f"{good}: ok" in run.stdout and "matches the sandbox's data" in run.stdout
    line = next(i for i, text in enumerate(broken.read_text().splitlines(), 1) if "tax.streets:" in text)
    assert f"{broken}:{line}: lookup tax.streets of grant '{GRANT}' has no column 'street_nam'" in run.stderr
    assert "'employes' is not a column of tax.declarations" in run.stderr
    # The shipped grant lists every size class the data holds (good passed); the broken one lacks two.
    line = next(i for i, text in enumerate(broken.read_text().splitlines(), 1) if text.startswith("values:"))
    assert (f"{broken}:{line}: values: tax.declarations holds values of 'size_class' that grant '{GRANT}' does not "
            "list") in run.stderr
    assert "micro" not in run.stderr
