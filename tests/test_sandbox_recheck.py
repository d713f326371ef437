"""A hostile broker against the sandbox: every plan that is not the guard's own output for the caller
the identity provider vouches for is refused. Each case is a way around the guard through the broker."""

from __future__ import annotations

import datetime as dt
import uuid

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from dsbroker.guard import guard
from broker.dev.keys import sandbox_settings
from sandbox.settings import SandboxSettings
from broker.dev.keys import DEV_AUDIENCE, DEV_ISSUER, IDP_KEY_ID
from dsbroker.policy.model import parse_policy
from dsbroker.rpc.status import error_from_rpc_error
from dsbroker.identity.tls import open_channel
from dsbroker.identity.tokens import issue_token
from sandbox.server import start_sandbox
from sandbox.v1 import sandbox_service_pb2 as pb
from sandbox.v1 import sandbox_service_pb2_grpc as pb_grpc
from tests.conftest import GRANT, POLICIES, XUANWU, dev_keys, sandbox_client_tls, shared_data, sign, token_for

GULOU = "320106"
SQL = "SELECT street_code, SUM(vat_paid) AS vat FROM tax.declarations GROUP BY street_code"
DOCUMENT = sign((POLICIES / f"{GRANT}.yaml").read_text(encoding="utf-8"))
POLICY = parse_policy(DOCUMENT)


JOIN_SQL = ("SELECT s.street_name, SUM(vat_paid) AS vat FROM tax.declarations JOIN tax.streets s USING (street_code) "
            "GROUP BY 1")


def honest_plan(sql: str = SQL, *, token: str | None = None, district: str = XUANWU, document: str = DOCUMENT) -> dict:
    guarded = guard(sql, parse_policy(document), district=district, department="xuanwu-fgw")
    return dict(dataset="tax.declarations", sql=guarded.sql, policy_id=GRANT, policy_version=1,
                max_rows=guarded.max_rows, policy_document=document, original_sql=sql,
                caller_token=token if token is not None else token_for(), execution_id=str(uuid.uuid4()))


def execute(sandbox, **plan) -> pb.ExecutePlanResponse:
    with open_channel(f"127.0.0.1:{sandbox.port}", tls=sandbox_client_tls(), options=[]) as channel:
        return pb_grpc.SandboxServiceStub(channel).ExecutePlan(pb.ExecutePlanRequest(plan=pb.Plan(**plan)), timeout=10)


def refusal(sandbox, **plan):
    with pytest.raises(grpc.RpcError) as caught:
        execute(sandbox, **plan)
    return error_from_rpc_error(caught.value)


def test_the_guards_own_plan_runs(sandbox):
    response = execute(sandbox, **honest_plan())
    assert response.table.row_count == 7


def forged_token() -> str:
    return issue_token(ed25519.Ed25519PrivateKey.generate(), key_id=IDP_KEY_ID, issuer=DEV_ISSUER,
                       audience=DEV_AUDIENCE, subject="x", department="xuanwu-fgw", district=XUANWU,
                       roles=("requester",), ttl=dt.timedelta(hours=1))


HOSTILE = {
    "the threshold's count faked": lambda p: {**p, "sql": p["sql"].replace("COUNT(__e) AS __s0",
                                                                           "COUNT(*) * 100 AS __s0")},
    "raw rows under an innocent original": lambda p: {**p, "sql": "SELECT taxpayer_id, vat_paid FROM tax.declarations"},
    "another district bound": lambda p: {**p, "sql": p["sql"].replace(XUANWU, GULOU)},
    "the row filter dropped": lambda p: {**p, "sql": p["sql"].replace(f"WHERE district_code = '{XUANWU}' ", "")},
    "a raw original the guard refuses": lambda p: {**p, "original_sql": "SELECT * FROM tax.declarations",
                                                   "sql": "SELECT * FROM tax.declarations"},
    "a cap lifted": lambda p: {**p, "sql": p["sql"].replace("LIMIT 5001", "LIMIT 1000000")},
    "the statistic read off another column": lambda p: {**p, "sql": p["sql"].replace("SUM(vat_paid) AS __sum_vat_paid",
                                                                                    "SUM(revenue) AS __sum_vat_paid")},
    "a comment smuggled after the SQL": lambda p: {**p, "sql": p["sql"] + " -- x"},
    "a lookup join swapped for an ungranted table": lambda p: {
        **p, "original_sql": JOIN_SQL, "sql": honest_plan(JOIN_SQL)["sql"].replace("tax.streets", "tax.taxpayers")
        .replace("streets.", "taxpayers.")},
}


@pytest.mark.parametrize("edit", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_plan_the_guard_did_not_produce_is_refused(sandbox, edit):
    honest = honest_plan()
    plan = edit(honest)
    assert (plan["sql"], plan["original_sql"]) != (honest["sql"], honest["original_sql"]), \
        "the edit must change the plan"
    error = refusal(sandbox, **plan)
    assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "PLAN_NOT_GUARDED")


@pytest.mark.parametrize("token, why", [
    (lambda: "", "no token"),
    (lambda: "not.a.jwt", "malformed"),
    (lambda: forged_token(), "forged"),
    (lambda: token_for(department="gulou-fgw", district=GULOU), "another department"),
    (lambda: token_for(roles=("owner",)), "not a requester"),
])
def test_a_plan_for_a_caller_the_identity_provider_does_not_vouch_for_is_refused(sandbox, token, why):
    # Tokens are made when the test runs, not when the module is collected: they would expire meanwhile.
    plan = honest_plan(token=token())
    error = refusal(sandbox, **plan)
    assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "PLAN_CALLER_INVALID"), why


def test_the_district_comes_from_the_token_not_the_broker(sandbox):
    # The broker binds Gulou for a Xuanwu token: refused. Under a grant for Gulou, a Gulou token's plan runs.
    lying = honest_plan(district=GULOU)
    assert refusal(sandbox, **lying).reason == "PLAN_NOT_GUARDED"
    gulou_grant = sign((POLICIES / f"{GRANT}.yaml").read_text(encoding="utf-8").replace(XUANWU, GULOU))
    gulou_caller = honest_plan(district=GULOU, token=token_for(district=GULOU), document=gulou_grant)
    assert execute(sandbox, **gulou_caller).table.row_count > 0


def test_a_token_for_another_district_than_the_grantees_is_refused(sandbox):
    # A broker that skipped its own check sends the guard's honest plan for a xuanwu-fgw token claiming Gulou.
    plan = honest_plan(district=GULOU, token=token_for(district=GULOU))
    error = refusal(sandbox, **plan)
    assert (error.code, error.reason, error.metadata["grant"]) == (
        grpc.StatusCode.PERMISSION_DENIED, "GRANT_DISTRICT_MISMATCH", GRANT)


def test_a_policy_whose_lookup_the_sandbox_does_not_serve_is_refused(demo_db):
    only_declarations = start_sandbox(SandboxSettings(listen="127.0.0.1:0", **shared_data(demo_db),
                                                      datasets=["tax.declarations"], **sandbox_settings(dev_keys())))
    try:
        error = refusal(only_declarations, **honest_plan(JOIN_SQL))
        assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "LOOKUP_NOT_SERVED")
        assert (error.metadata["table"], error.metadata["policy"]) == ("tax.streets", GRANT)
        assert execute(only_declarations, **honest_plan()).table.row_count == 7
    finally:
        only_declarations.stop()
