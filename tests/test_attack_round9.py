"""Findings of a ninth outside review: the reorganisation of ecb1473..HEAD ("move, do not rewrite").

The review attacked what the reorganisation touched: permission decisions (broker/permissions.py and its
callers), the one pagination helper (dsbroker/rpc/pagination.py) and its tokens, resource names, the error
registry and the status mapping (dsbroker/rpc/status.py), the sandbox's plan executor (sandbox/executor.py, was
sandbox/servicer.py), the one way to open a database (dsbroker/database.py) and the shared dsbroker.v1 protos.

Two kinds of test live here:

- **FINDING** tests fail on the code they were written against (main at b8bfb43). Each says how severe it
  is, how the attack works and what the safe behaviour is (the gRPC status and ErrorInfo reason it should
  get). Some were there before the reorganisation (marked "pre-existing"); the others are behaviour the
  reorganisation changed.
- **PIN** tests pass: attacks tried that the code refuses correctly. They pin that behaviour so a later
  change cannot lose it silently.

Everything runs against real servers on port 0 (the session's broker and sandbox from tests/conftest.py,
or a test's own), except the executor's deadline tests, which call the sandbox's servicer (and so
``sandbox.executor.PlanExecutor``) with a context that holds only a deadline and stand-ins for the slow steps
(a lookup uniqueness count, a policy-ledger write), so that the timing is deterministic.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
import threading
import time
import uuid
from concurrent import futures
from contextlib import closing

import grpc
import pytest
from click.testing import CliRunner
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from broker.cli.main import main
from broker.client.sdk import BrokerClient
from broker.query.sandbox_client import SandboxClient
from broker.server import start_broker
from broker.v1 import access_request_service_pb2 as requests_pb
from broker.v1 import audit_service_pb2 as audit_pb
from broker.v1 import audit_service_pb2_grpc as audit_grpc
from broker.v1 import catalog_service_pb2 as catalog_pb
from broker.v1 import catalog_service_pb2_grpc as catalog_grpc
from broker.v1 import policy_service_pb2 as policies_pb
from broker.v1 import query_service_pb2 as query_pb
from broker.v1 import query_service_pb2_grpc as query_grpc
from dsbroker.errors import DsbrokerError
from dsbroker.guard import guard
from dsbroker.identity.auth import Principal
from dsbroker.identity.tls import open_channel
from dsbroker.policy.model import load_policy
from dsbroker.rpc.status import error_from_rpc_error
from dsbroker.v1 import catalog_pb2
from sandbox.checks.plan import CheckedPlan
from sandbox.ledgers.checkpoint_witness import CheckpointWitness
from sandbox.ledgers.executions import ExecutionLedger
from sandbox.servicer import SandboxServicer
from sandbox.v1 import sandbox_service_pb2 as sandbox_pb
from sandbox.v1 import sandbox_service_pb2_grpc as sandbox_grpc
from tests.conftest import (GRANT, POLICIES, XUANWU, broker_settings_for, client_tls, sandbox_client_tls, sign,
                            token_for, writing_log)

SQL = "SELECT street_code, SUM(vat_paid) AS vat FROM tax.declarations GROUP BY street_code"
GULOU = "320106"
REQUESTER = dict(department="xuanwu-fgw", district=XUANWU, roles=("requester",), subject="li.wei")
OTHER_REQUESTER = dict(department="gulou-fgw", district=GULOU, roles=("requester",), subject="zhao.min")
OTHER_REVIEWER = dict(department="gulou-tax", district=GULOU, roles=("reviewer",), subject="sun.li")
OWNER = dict(department="city-tax", district="320100", roles=("owner",), subject="chen.jun")
AUDITOR = dict(department="city-audit", district="320100", roles=("auditor",), subject="liu.yang")


# -- helpers ---------------------------------------------------------------------------------------------------

def raw(port: int, service: str, method: str, request, response_type, *, who: dict, request_id: str = ""):
    """Call ``service/method`` on the broker as ``who``, without the SDK: (response, None) or (None, the error
    rebuilt as the SDK would)."""
    metadata = [("x-request-id", request_id or f"r9-{uuid.uuid4().hex[:12]}"),
                ("authorization", f"Bearer {token_for(**who)}")]
    with open_channel(f"127.0.0.1:{port}", tls=client_tls(), options=[]) as channel:
        stub = channel.unary_unary(f"/broker.v1.{service}/{method}", request_serializer=lambda m: m.SerializeToString(),
                                   response_deserializer=response_type.FromString)
        try:
            return stub(request, metadata=metadata, timeout=30), None
        except grpc.RpcError as error:
            return None, error_from_rpc_error(error)


def list_requests(port, *, who, token="", state=0, size=0):
    return raw(port, "AccessRequestService", "ListAccessRequests",
               requests_pb.ListAccessRequestsRequest(page_token=token, state=state, page_size=size),
               requests_pb.ListAccessRequestsResponse, who=who)


def list_policies(port, *, who, token="", size=0):
    return raw(port, "PolicyService", "ListPolicies", policies_pb.ListPoliciesRequest(page_token=token, page_size=size),
               policies_pb.ListPoliciesResponse, who=who)


def list_records(port, *, token="", size=0, **filters):
    return raw(port, "AuditService", "ListAccessRecords",
               audit_pb.ListAccessRecordsRequest(page_token=token, page_size=size, **filters),
               audit_pb.ListAccessRecordsResponse, who=AUDITOR)


def digest(*fields) -> str:
    """The filter digest a page token carries, computed as any caller can (it is not keyed)."""
    return hashlib.sha256(json.dumps(list(fields), separators=(",", ":"), sort_keys=True).encode()).hexdigest()[:16]


def token(list_name: str, query: str, after: list, **extra) -> str:
    """A page token in the one format dsbroker/rpc/pagination.py reads: base64url (unpadded) of {l, q, a}."""
    text = json.dumps({"l": list_name, "q": query, "a": after, **extra}, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def is_clean_refusal(error: DsbrokerError | None, code: str, reason: str) -> bool:
    return error is not None and (error.code.name, error.reason) == (code, reason)


def submit_request(port: int) -> str:
    """A request filed by the Xuanwu commission on the session broker; its name."""
    use = requests_pb
    wanted = use.AccessRequest(
        purpose="monthly VAT by street", dataset="tax.declarations", valid_from="2026-01-01",
        valid_until="2030-12-31", queries_per_day=5,
        columns=[use.RequestedColumn(column="street_code", use=use.COLUMN_USE_GROUP, reason="rows"),
                 use.RequestedColumn(column="vat_paid", use=use.COLUMN_USE_MEASURE, reason="revenue")])
    made, error = raw(port, "AccessRequestService", "CreateAccessRequest",
                      use.CreateAccessRequestRequest(access_request=wanted), use.CreateAccessRequestResponse,
                      who=REQUESTER)
    assert error is None, error
    return made.access_request.name


class FakeServer:
    """A gRPC server on loopback (plaintext) with the given servicers: a hostile broker or a broken sandbox."""

    def __init__(self, *adders) -> None:
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        for add in adders:
            add(self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def stop(self) -> None:
        self.server.stop(0).wait()


def finishes(function, seconds: float):
    """Run ``function`` in a thread: (finished, its result or exception)."""
    outcome: list = []

    def run():
        try:
            outcome.append(function())
        except BaseException as error:  # noqa: BLE001 - the test inspects whatever it raised
            outcome.append(error)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    return (not thread.is_alive()), (outcome[0] if outcome else None), thread


# == 1. the sandbox executor reads the caller's deadline once, before its checks ================================
#
# FINDING. Severity: MEDIUM (a behaviour change of b8bfb43).
# Where: sandbox/executor.py PlanExecutor.execute; sandbox/servicer.py ExecutePlan passes
#        ``time_limit_s=time_limit(context)`` once, read when the call arrives.
# The old servicer (ecb1473:sandbox/servicer.py) read ``time_limit(context)`` twice: for the guard's deadline
# after the policy check, and for the engine's timeout after the guard and the lookup check. The executor takes
# one number, read before any check, and uses it for both. So the time the checks take (a policy-ledger write per
# new owner's statement a plan carries, the guard, a lookup's uniqueness count of up to 30 s on the engine) is
# never taken off:
# - a plan whose caller's deadline passed during its checks is written to the execution ledger and run, where
#   it used to be refused before the ledger (DEADLINE_EXCEEDED QUERY_TIMEOUT, "the deadline passed before the
#   query could start"); the broker has long given up, records the query as timed out, and reconcile later
#   finds an execution the broker never saw released;
# - the engine runs for the caller's whole time limit after the checks (past the caller's deadline), and the
#   guard's deadline is later than the caller's by the policy check's time.
# Fix: pass the executor the caller's deadline as a point in time (``time.monotonic() + time_limit(context)``,
# or the context itself) and compute what is left at each step, as before.

class _EngineRan(Exception):
    """The engine was asked to run the plan."""


class _Engine:
    dialect = "duckdb"

    def __init__(self) -> None:
        self.timeouts: list[float] = []

    def execute(self, sql: str, *, timeout_s: float, max_rows: int):
        self.timeouts.append(timeout_s)
        raise _EngineRan(timeout_s)


class _Ledger:
    sandbox_id = "sandbox-r9"

    def __init__(self) -> None:
        self.recorded: list[str] = []

    def record(self, plan, *, request_id: str) -> None:
        self.recorded.append(plan.execution_id)


class _Slow:
    """Stands in for the sandbox's policy checker, plan checker and lookup checker, each taking ``delay`` s."""

    def __init__(self, policy, guarded, *, policy_delay=0.0, lookup_delay=0.0) -> None:
        self.policy, self.guarded = policy, guarded
        self.policy_delay, self.lookup_delay = policy_delay, lookup_delay
        self.guard_deadlines: list[float | None] = []

    def check(self, plan, policy=None, *, deadline=None):
        if policy is None:  # as PlanPolicyChecker.check(plan)
            time.sleep(self.policy_delay)
            return self.policy
        self.guard_deadlines.append(deadline)  # as PlanGuardChecker.check(plan, policy, deadline=...)
        caller = Principal(subject="li.wei", department="xuanwu-fgw", district=XUANWU, roles=frozenset({"requester"}))
        return CheckedPlan(self.guarded, caller, None, False)


class _SlowLookups:
    def __init__(self, delay: float) -> None:
        self.delay = delay

    def check(self, policy, tables) -> None:  # as LookupChecker.check: a uniqueness count on the engine
        time.sleep(self.delay)


class _Context:
    """The part of a grpc.ServicerContext the sandbox's servicer reads: the caller's deadline."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def time_remaining(self) -> float:
        return self.deadline - time.monotonic()


def _servicer(*, policy_delay=0.0, lookup_delay=0.0):
    """The sandbox's servicer (and so its PlanExecutor) with stand-ins for the engine, the ledger and the checks."""
    policy = load_policy(POLICIES / f"{GRANT}.yaml")
    guarded = guard(SQL, policy, district=XUANWU, department="xuanwu-fgw")
    plan = sandbox_pb.Plan(dataset=policy.dataset, sql=guarded.sql, policy_id=policy.id, policy_version=policy.version,
                           max_rows=guarded.max_rows, original_sql=SQL, caller_token="t",
                           execution_id=str(uuid.uuid4()))
    slow, engine, ledger = _Slow(policy, guarded, policy_delay=policy_delay), _Engine(), _Ledger()
    servicer = SandboxServicer(engine, {policy.dataset}, catalog=None, policies=slow, plans=slow,
                               lookups=_SlowLookups(lookup_delay), max_rows=1000, max_execution_seconds=60.0,
                               executions=ledger, witness=None)
    return servicer, sandbox_pb.ExecutePlanRequest(plan=plan), slow, engine, ledger


def test_finding_a_plan_whose_deadline_passed_during_its_checks_is_neither_recorded_nor_run():
    """FINDING (MEDIUM, a behaviour change): the caller allows 0.4 s; the lookup check takes 0.6 s. When the
    executor gets to the engine the caller's deadline has passed, so the plan must be refused before the
    execution ledger (DEADLINE_EXCEEDED ``QUERY_TIMEOUT``), as the old servicer refused it. The executor still
    holds 0.4 s less a margin as the time left, records the plan and runs it."""
    servicer, request, _slow, engine, ledger = _servicer(lookup_delay=0.6)
    try:
        servicer.ExecutePlan(request, _Context(0.4))
    except DsbrokerError as error:
        assert (error.code.name, error.reason) == ("DEADLINE_EXCEEDED", "QUERY_TIMEOUT")
    except _EngineRan as ran:
        pytest.fail(f"the caller's deadline passed during the checks, yet the plan was recorded "
                    f"({ledger.recorded}) and the engine was given {ran.args[0]:.2f} s to run it")
    else:
        pytest.fail("the plan was answered although its deadline had passed")
    assert ledger.recorded == [] and engine.timeouts == []


def test_finding_the_engine_gets_only_what_is_left_of_the_callers_time_after_the_checks():
    """FINDING (MEDIUM, a behaviour change): the caller allows 2 s; the lookup check takes 0.5 s; the engine
    must then be given at most 1.5 s (it was: ``time_limit(context)`` read after the checks). It is given
    1.95 s, the whole limit read when the call arrived, so it runs past the caller's deadline."""
    servicer, request, _slow, engine, _ledger = _servicer(lookup_delay=0.5)
    with pytest.raises(_EngineRan):
        servicer.ExecutePlan(request, _Context(2.0))
    assert engine.timeouts[0] <= 1.5, f"the engine was given {engine.timeouts[0]:.2f} s of a 2 s limit after 0.5 s"


def test_finding_the_sandbox_guard_deadline_is_the_callers_not_later():
    """FINDING (MEDIUM, a behaviour change): the policy check takes 0.5 s of the caller's 2 s. The sandbox's
    guard must stop at the caller's deadline (arrival + 2 s); the executor gives it arrival + 2.5 s."""
    servicer, request, slow, _engine, _ledger = _servicer(policy_delay=0.5)
    context = _Context(2.0)
    with pytest.raises(_EngineRan):
        servicer.ExecutePlan(request, context)
    assert slow.guard_deadlines[0] <= context.deadline + 0.05, (
        f"the guard may run {slow.guard_deadlines[0] - context.deadline:.2f} s past the caller's deadline")


# == 2. page tokens ===========================================================================================
#
# FINDING. Severity: LOW (pre-existing in broker/request_fields.read_page_token, carried into the new helper).
# Where: dsbroker/rpc/pagination.py Pages._position checks a text of the sort key only for its type and length;
# JSON's \ud800 escape decodes to a lone surrogate, which Python's sqlite3 (and psycopg) cannot encode, so the
# store's query fails with UnicodeEncodeError, not a database error, and the call is INTERNAL (logged with a
# traceback, recorded as "error"). The helper's contract is PAGE_TOKEN_INVALID for any token that does not read
# back, never INTERNAL. Any authenticated caller can do it on ListAccessRequests and ListPolicies; the token is
# forgeable because its filter digest is an unkeyed hash.
# Fix: in _position, refuse a text that does not encode as UTF-8 (``value.encode("utf-8")`` inside the try, or
# reject surrogates and NUL, which PostgreSQL text cannot hold either and would answer UNAVAILABLE
# STORE_UNAVAILABLE); better still, MAC the token with a server key so only issued tokens read back.

@pytest.mark.parametrize("text", ["\ud800", "a\x00b"], ids=["lone-surrogate", "nul"])
def test_finding_a_page_token_holding_a_lone_surrogate_is_page_token_invalid_not_internal(broker, text):
    requests_token = token("accessRequests", digest(0), [text, "req-x"])
    policies_token = token("policies", digest(), [text])
    _, requests_error = list_requests(broker.port, who=REQUESTER, token=requests_token)
    _, policies_error = list_policies(broker.port, who=REQUESTER, token=policies_token)
    assert is_clean_refusal(requests_error, "INVALID_ARGUMENT", "PAGE_TOKEN_INVALID"), (
        f"ListAccessRequests: {requests_error and (requests_error.code.name, requests_error.reason)}")
    assert is_clean_refusal(policies_error, "INVALID_ARGUMENT", "PAGE_TOKEN_INVALID"), (
        f"ListPolicies: {policies_error and (policies_error.code.name, policies_error.reason)}")


def test_pin_a_token_reads_back_only_for_its_own_list_and_filters(broker):
    """PIN: a token in the right format is read (it continues the list), but one naming another list, or
    the same list under another state filter, is PAGE_TOKEN_INVALID (with a BadRequest naming page_token,
    never echoing it)."""
    submitted = requests_pb.ACCESS_REQUEST_STATE_SUBMITTED
    for_submitted = token("accessRequests", digest(submitted), ["9999-12-31T00:00:00", "zzz"])
    page, error = list_requests(broker.port, who=REQUESTER, token=for_submitted, state=submitted)
    assert error is None, "a token of this list and these filters is read"
    _, error = list_requests(broker.port, who=REQUESTER, token=for_submitted)  # the same list, unfiltered
    assert is_clean_refusal(error, "INVALID_ARGUMENT", "PAGE_TOKEN_INVALID")
    assert [v.field for d in error.details for v in d.field_violations] == ["page_token"]
    assert for_submitted not in error.message and for_submitted not in json.dumps(error.metadata)
    for other_list, on in ((token("policies", digest(0), ["9999", "zzz"]), "requests"),
                           (token("accessRequests", digest(), ["x"]), "policies")):
        _, error = (list_requests(broker.port, who=REQUESTER, token=other_list) if on == "requests"
                    else list_policies(broker.port, who=REQUESTER, token=other_list))
        assert is_clean_refusal(error, "INVALID_ARGUMENT", "PAGE_TOKEN_INVALID"), on
    records_token = token("accessRecords", digest("", "", "", "", "", ""), [1])
    assert list_records(broker.port, token=records_token)[1] is None, "an auditor's token of the log is read"
    _, error = list_records(broker.port, token=records_token, department="xuanwu-fgw")
    assert is_clean_refusal(error, "INVALID_ARGUMENT", "PAGE_TOKEN_INVALID"), "bound to the department filter"
    _, error = raw(broker.port, "AuditService", "ListCheckpoints", audit_pb.ListCheckpointsRequest(
        page_token=records_token), audit_pb.ListCheckpointsResponse, who=AUDITOR)
    assert is_clean_refusal(error, "INVALID_ARGUMENT", "PAGE_TOKEN_INVALID"), "a record token is no checkpoint token"


def test_pin_a_forged_token_never_widens_what_a_caller_sees(broker):
    """PIN: a token positioned anywhere (forged: the digest is public) keeps the scope filter. Another
    department's requester and another district's reviewer see neither the Xuanwu commission's request
    nor its grant, from the very start of either list; the commission itself sees both with the same tokens."""
    name = submit_request(broker.port)
    newest = token("accessRequests", digest(0), ["9999-12-31T23:59:59", "zzzz"])
    first_policy = token("policies", digest(), [""])
    for who in (OTHER_REQUESTER, OTHER_REVIEWER):
        page, error = list_requests(broker.port, who=who, token=newest, size=500)
        assert error is None and name not in [r.name for r in page.access_requests], who["department"]
        page, error = list_policies(broker.port, who=who, token=first_policy, size=500)
        assert error is None and f"policies/{GRANT}" not in [p.name for p in page.policies], who["department"]
    page, _ = list_requests(broker.port, who=REQUESTER, token=newest, size=500)
    assert name in [r.name for r in page.access_requests]
    page, _ = list_policies(broker.port, who=REQUESTER, token=first_policy, size=500)
    assert f"policies/{GRANT}" in [p.name for p in page.policies]


@pytest.mark.parametrize("bad", [
    "x" * 1025,  # longer than any token issued
    "!!!!",  # not base64url
    base64.urlsafe_b64encode(b"\xff\xfe").decode(),  # not UTF-8
    base64.urlsafe_b64encode(b"[1]").decode(),  # the pre-reorganisation format: a bare list
    token("accessRecords", digest("", "", "", "", "", ""), [True]),  # a bool is no position
    token("accessRecords", digest("", "", "", "", "", ""), [-1]),
    token("accessRecords", digest("", "", "", "", "", ""), [2 ** 63]),
    token("accessRecords", digest("", "", "", "", "", ""), [1.0]),
    token("accessRecords", digest("", "", "", "", "", ""), ["1"]),
    token("accessRecords", digest("", "", "", "", "", ""), [1, 2]),
    token("accessRecords", digest("", "", "", "", "", ""), [1], x=1),  # an extra key
    base64.urlsafe_b64encode(("[" * 400 + "]" * 400).encode()).decode().rstrip("="),  # nesting
])
def test_pin_a_malformed_page_token_is_page_token_invalid(broker, bad):
    """PIN: whatever a token holds, a token that was not issued for this list is INVALID_ARGUMENT
    PAGE_TOKEN_INVALID, never INTERNAL, and the reply does not echo it."""
    _, error = list_records(broker.port, token=bad)
    assert is_clean_refusal(error, "INVALID_ARGUMENT", "PAGE_TOKEN_INVALID"), error and error.reason
    assert bad[:32] not in error.message


def test_pin_page_sizes_are_checked_and_capped(broker):
    """PIN: a negative size is PAGE_SIZE_INVALID; a huge one is the list's maximum, not an unbounded read."""
    _, error = list_policies(broker.port, who=OWNER, size=-1)
    assert is_clean_refusal(error, "INVALID_ARGUMENT", "PAGE_SIZE_INVALID")
    page, error = list_records(broker.port, size=2 ** 31 - 1)
    assert error is None and len(page.access_records) <= 1000


# == 3. resource names and the order of checks ================================================================

@pytest.mark.parametrize("name", [
    GRANT,  # a bare id is no name
    f"policies/../{GRANT}", f"policies/{GRANT}/x", f"policies//{GRANT}", f"policies/policies/{GRANT}",
    "policies/\uff58uanwu-fgw-2026-007",  # a full-width x
    f"policies/{GRANT}\n", "policies/" + "a" * 10_000, f"Policies/{GRANT}", f"policies/{GRANT.upper()}",
])
def test_pin_a_malformed_policy_name_is_refused_without_echo(broker, name):
    """PIN: GetPolicy (owner: sees everything) refuses a malformed name as RESOURCE_NAME_INVALID, naming the
    field and the form, never echoing it, and RunQuery refuses it as GRANT_NAME_INVALID."""
    _, error = raw(broker.port, "PolicyService", "GetPolicy", policies_pb.GetPolicyRequest(name=name),
                   policies_pb.GetPolicyResponse, who=OWNER)
    assert is_clean_refusal(error, "INVALID_ARGUMENT", "RESOURCE_NAME_INVALID")
    assert name.strip()[-20:] not in error.message and len(error.message) < 200
    _, error = raw(broker.port, "QueryService", "RunQuery", query_pb.RunQueryRequest(policy=name, sql=SQL),
                   query_pb.RunQueryResponse, who=REQUESTER)
    assert is_clean_refusal(error, "INVALID_ARGUMENT", "GRANT_NAME_INVALID")
    assert name.strip()[-20:] not in error.message and not error.metadata


@pytest.mark.parametrize("name", ["accessRecords/\u0663", "accessRecords/0", "accessRecords/01",
                                  "accessRecords/9223372036854775808", "accessRecords/+1", "accessRecords/1/2",
                                  "1", "accessRecords/" + "9" * 5000])
def test_pin_a_malformed_access_record_name_is_refused(broker, name):
    """PIN: GetAccessRecord reads ASCII digits 1..2**63-1 only; anything else is RESOURCE_NAME_INVALID."""
    _, error = raw(broker.port, "AuditService", "GetAccessRecord", audit_pb.GetAccessRecordRequest(name=name),
                   audit_pb.GetAccessRecordResponse, who=AUDITOR)
    assert is_clean_refusal(error, "INVALID_ARGUMENT", "RESOURCE_NAME_INVALID")


def test_pin_another_departments_objects_read_exactly_as_absent_ones(broker):
    """PIN: broker/permissions.py's order leaks no existence. Another department's requester gets for the
    Xuanwu grant exactly what it gets for a grant that does not exist: POLICY_NOT_FOUND on GetPolicy,
    GRANT_NOT_FOUND on RunQuery and ExplainQuery; a non-owner's suspension is ROLE_REQUIRED either way; another
    department's request reads as an unknown one, withdrawn or read."""
    def answers(name: str):
        got = []
        for service, method, request, response in (
                ("PolicyService", "GetPolicy", policies_pb.GetPolicyRequest(name=name), policies_pb.GetPolicyResponse),
                ("QueryService", "RunQuery", query_pb.RunQueryRequest(policy=name, sql=SQL), query_pb.RunQueryResponse),
                ("QueryService", "ExplainQuery", query_pb.ExplainQueryRequest(policy=name, sql=SQL),
                 query_pb.ExplainQueryResponse),
                ("PolicyService", "SuspendPolicy", policies_pb.SuspendPolicyRequest(name=name, reason="x"),
                 policies_pb.SuspendPolicyResponse)):
            _, error = raw(broker.port, service, method, request, response, who=OTHER_REQUESTER)
            got.append((error.code.name, error.reason, error.message.replace(name.removeprefix("policies/"), "ID"),
                        {k: v for k, v in error.metadata.items() if k not in ("grant", "policy")}))
        return got
    assert answers(f"policies/{GRANT}") == answers("policies/no-such-grant-2026")
    assert [a[1] for a in answers(f"policies/{GRANT}")] == ["POLICY_NOT_FOUND", "GRANT_NOT_FOUND", "GRANT_NOT_FOUND",
                                                             "ROLE_REQUIRED"]
    name = submit_request(broker.port)
    for method, request, response in (
            ("GetAccessRequest", requests_pb.GetAccessRequestRequest, requests_pb.GetAccessRequestResponse),
            ("WithdrawAccessRequest", requests_pb.WithdrawAccessRequestRequest,
             requests_pb.WithdrawAccessRequestResponse)):
        seen = []
        for target in (name, "accessRequests/req-doesnotexist0000"):
            _, error = raw(broker.port, "AccessRequestService", method, request(name=target), response,
                           who=OTHER_REQUESTER)
            seen.append((error.code.name, error.reason))
        assert seen == [("NOT_FOUND", "ACCESS_REQUEST_NOT_FOUND")] * 2, method


def test_pin_a_huge_grant_name_or_dataset_name_is_clipped_in_the_reply_and_the_access_log(broker):
    """PIN: a 100 KB grant name is GRANT_NAME_INVALID without echo and its query.decision record holds at most
    GRANT_ID_BYTES of it; a 100 KB dataset name is DATASET_NOT_FOUND with a short message and metadata."""
    from broker.access_log.log import AccessLog, RecordFilter
    from broker.query.pipeline import GRANT_ID_BYTES

    request_id = f"r9-huge-{uuid.uuid4().hex[:8]}"
    huge = "policies/" + "\u00e9" * 50_000
    _, error = raw(broker.port, "QueryService", "RunQuery", query_pb.RunQueryRequest(policy=huge, sql=SQL),
                   query_pb.RunQueryResponse, who=REQUESTER, request_id=request_id)
    assert is_clean_refusal(error, "INVALID_ARGUMENT", "GRANT_NAME_INVALID") and "\u00e9" not in error.message
    log = AccessLog(broker.access_log_path)
    try:
        [record] = [r for r in log.records(where=RecordFilter(event="query.decision")) if r.request_id == request_id]
    finally:
        log.close()
    assert record.decision == "deny" and len(record.grant_id.encode()) <= GRANT_ID_BYTES
    _, error = raw(broker.port, "CatalogService", "GetDataset",
                   catalog_pb.GetDatasetRequest(name="tax." + "x" * 100_000), catalog_pb.GetDatasetResponse,
                   who=REQUESTER)
    assert is_clean_refusal(error, "NOT_FOUND", "DATASET_NOT_FOUND")
    assert len(error.message.encode()) <= 1024 and all(len(v.encode()) <= 256 for v in error.metadata.values())


# == 4. Policy has its own PolicyState, which cannot hold every stored state ==================================
#
# FINDING. Severity: LOW (a behaviour change of 2dce057).
# Where: broker/servicers/policies.py policy_state(): ``pb.PolicyState.Value(f"POLICY_STATE_{state.value}")``.
# A Policy used to carry the AccessRequestState, which names every State; it now has a PolicyState of five
# values, and a stored policy whose state is one of the request's (SUBMITTED, REVIEWED, REJECTED, WITHDRAWN)
# makes Value() raise ValueError: INTERNAL. One such row (written by a database writer, by an older or newer
# broker sharing the store, or by a future state-machine change) fails ListPolicies for every caller who can
# see it, the owner and every auditor first (they see all policies), and GetPolicy of it; before, it was listed.
# Fix: map states without a PolicyState to POLICY_STATE_UNSPECIFIED (and log), never raise while converting.

def test_finding_a_stored_policy_in_a_request_state_does_not_make_list_policies_internal(sandbox, tmp_path):
    log_path = tmp_path / "access-log.sqlite"
    running = start_broker(broker_settings_for(sandbox.port, log_path))
    try:
        store = log_path.with_name(log_path.stem + "-state.sqlite")
        with closing(sqlite3.connect(store, timeout=10)) as db:  # what a database writer can do without a key
            db.execute("UPDATE policies SET state = 'SUBMITTED' WHERE id = ?", (GRANT,))
            db.commit()
        page, error = list_policies(running.port, who=AUDITOR)
        assert error is None, f"ListPolicies answers {error.code.name} {error.reason} to every auditor"
        [listed] = [p for p in page.policies if p.name == f"policies/{GRANT}"]
        assert listed.state == policies_pb.POLICY_STATE_UNSPECIFIED
        _, error = raw(running.port, "PolicyService", "GetPolicy",
                       policies_pb.GetPolicyRequest(name=f"policies/{GRANT}"), policies_pb.GetPolicyResponse, who=OWNER)
        assert error is None or error.code.name != "INTERNAL"
    finally:
        running.stop()


# == 5. a hostile broker and the requester's SDK ===============================================================
#
# FINDING. Severity: LOW-MEDIUM (new: ListDatasets pages since 954d477).
# Where: broker/client/sdk.py BrokerClient.datasets() follows next_page_token ``while True``; the broker is the
# party the design lets be hostile. A broker that always answers with a next page token (the same one, or a new
# one each time) keeps every client that lists the catalog (``dsbroker datasets``, the demo) calling forever and
# its memory growing; before, ListDatasets was one call. The same loop is in the broker's own
# broker/query/sandbox_client.py list_datasets (test below), run under the Catalog's lock, where it stops every
# query (RunQuery reads the catalog's column types) as long as one sandbox misbehaves.
# Fix: stop at a repeated token and after a bounded number of pages (e.g. max datasets / page size + 1), raising
# a DsbrokerError (e.g. UNAVAILABLE / a reason such as PAGE_TOKEN_LOOP); pass a page size.

class _EndlessCatalog(catalog_grpc.CatalogServiceServicer):
    def __init__(self) -> None:
        self.calls = 0

    def ListDatasets(self, request, context):
        self.calls += 1
        return catalog_pb.ListDatasetsResponse(datasets=[catalog_pb2.Dataset(name=f"tax.d{self.calls}")],
                                               next_page_token="again")


def test_finding_a_hostile_broker_cannot_keep_the_sdk_listing_datasets_forever():
    catalog = _EndlessCatalog()
    fake = FakeServer(lambda server: catalog_grpc.add_CatalogServiceServicer_to_server(catalog, server))
    client = BrokerClient(f"127.0.0.1:{fake.port}", token="t", timeout=5)
    try:
        done, outcome, thread = finishes(client.datasets, 8.0)
        calls = catalog.calls
    finally:
        fake.stop()  # ends a loop still running: its next call fails
        thread.join(10)
        client.close()
    assert done, f"BrokerClient.datasets() was still following the broker's tokens after {calls} pages"
    assert isinstance(outcome, DsbrokerError) and calls <= 100, (type(outcome), calls)


class _EndlessSandbox(sandbox_grpc.SandboxServiceServicer):
    def __init__(self) -> None:
        self.calls = 0

    def ListDatasets(self, request, context):
        self.calls += 1
        return sandbox_pb.ListDatasetsResponse(datasets=[catalog_pb2.Dataset(name=f"tax.d{self.calls}")],
                                               next_page_token=f"page-{self.calls}")


def test_finding_a_broken_sandbox_cannot_keep_the_broker_listing_its_catalog_forever():
    """FINDING (LOW, new since ListDatasets pages): the broker's SandboxClient.list_datasets follows a sandbox's
    tokens without bound (here a new token every page)."""
    sandbox = _EndlessSandbox()
    fake = FakeServer(lambda server: sandbox_grpc.add_SandboxServiceServicer_to_server(sandbox, server))
    client = SandboxClient(f"127.0.0.1:{fake.port}", tls=None, max_message_bytes=4 * 1024 * 1024)
    try:
        done, outcome, thread = finishes(lambda: client.list_datasets(timeout_s=5), 8.0)
        calls = sandbox.calls
    finally:
        fake.stop()
        thread.join(10)
        client.close()
    assert done, f"SandboxClient.list_datasets() was still following the sandbox's tokens after {calls} pages"
    assert isinstance(outcome, DsbrokerError) and calls <= 100, (type(outcome), calls)


# FINDING. Severity: LOW (pre-existing; the brief asks about error_from_rpc_error).
# Where: dsbroker/rpc/status.py error_from_rpc_error calls grpc_status.rpc_status.from_call, which raises
# ValueError when the grpc-status-details-bin trailer's code or message differs from the call's status, and
# protobuf's DecodeError when the trailer does not parse; Any.Unpack of a detail whose type URL is ErrorInfo but
# whose bytes are not raises DecodeError too. A hostile broker (or anything on the path that rewrites the status
# line) sends one of those and every SDK method raises a bare ValueError/DecodeError instead of the documented
# DsbrokerError; the CLI's reporting_errors does not catch it, so the requester gets a traceback. On the broker
# the same happens to a sandbox's reply: INTERNAL to the requester instead of the sandbox's status.
# Fix: in error_from_rpc_error, catch ValueError and DecodeError from from_call and from each Unpack; keep the
# call's own code and details, with the code's name as reason, and ignore details that do not read.

class _StatusBroker(query_grpc.QueryServiceServicer):
    def __init__(self, trailer: bytes) -> None:
        self.trailer = trailer

    def RunQuery(self, request, context):
        context.set_trailing_metadata((("grpc-status-details-bin", self.trailer),))
        context.abort(grpc.StatusCode.PERMISSION_DENIED, "denied")


def _status(code: int, message: str, *details) -> bytes:
    packed = []
    for detail in details:
        wrapped = any_pb2.Any()
        wrapped.Pack(detail) if not isinstance(detail, any_pb2.Any) else wrapped.CopyFrom(detail)
        packed.append(wrapped)
    return status_pb2.Status(code=code, message=message, details=packed).SerializeToString()


def _forged_error_info() -> any_pb2.Any:
    return any_pb2.Any(type_url="type.googleapis.com/google.rpc.ErrorInfo", value=b"\x0a\xff\xff\xff")


@pytest.mark.parametrize("trailer", [
    _status(5, "denied", error_details_pb2.ErrorInfo(reason="GRANT_NOT_FOUND", domain="dsbroker")),  # code differs
    _status(7, "something else", error_details_pb2.ErrorInfo(reason="GRANT_NOT_FOUND")),  # message differs
    b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",  # not a Status
    _status(7, "denied", _forged_error_info()),  # an ErrorInfo that does not parse
], ids=["code-differs", "message-differs", "undecodable", "bad-errorinfo"])
def test_finding_a_hostile_brokers_status_details_give_the_sdk_a_dsbroker_error(trailer):
    fake = FakeServer(lambda server: query_grpc.add_QueryServiceServicer_to_server(_StatusBroker(trailer), server))
    try:
        with BrokerClient(f"127.0.0.1:{fake.port}", token="t", timeout=10) as client:
            try:
                client.query(GRANT, SQL)
            except DsbrokerError as error:
                assert error.code == grpc.StatusCode.PERMISSION_DENIED
            except Exception as error:  # noqa: BLE001 - what the finding is about
                pytest.fail(f"the SDK raised {type(error).__name__}: {error}, not a DsbrokerError")
            else:
                pytest.fail("the call did not fail")
    finally:
        fake.stop()


def test_pin_a_hostile_brokers_error_metadata_is_clipped_and_any_key_is_kept():
    """PIN: ErrorInfo metadata of any key (reason, code, message included) and of any length reaches the SDK as
    a DsbrokerError with each value clipped to 256 bytes."""
    info = error_details_pb2.ErrorInfo(reason="GRANT_NOT_FOUND", domain="dsbroker",
                                       metadata={"reason": "x", "code": "OK", "message": "m", "table": "t" * 3000})
    fake = FakeServer(lambda server: query_grpc.add_QueryServiceServicer_to_server(
        _StatusBroker(_status(7, "denied", info)), server))
    try:
        with BrokerClient(f"127.0.0.1:{fake.port}", token="t", timeout=10) as client:
            with pytest.raises(DsbrokerError) as caught:
                client.query(GRANT, SQL)
    finally:
        fake.stop()
    error = caught.value
    assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "GRANT_NOT_FOUND")
    assert error.metadata["code"] == "OK" and len(error.metadata["table"].encode()) <= 256


# == 6. the hostile broker and the sandbox: the renamed Plan.policy_id ========================================

def test_pin_a_plan_naming_its_policy_by_resource_name_or_another_id_is_refused(sandbox):
    """PIN: Plan.policy_id is the signed document's id (69ca3cf); a hostile broker that puts the public name
    ``policies/{id}``, another id, or another dataset into the plan is refused PLAN_POLICY_MISMATCH before
    anything is recorded, and a plan without a document POLICY_SIGNATURE_INVALID."""
    signed = sign((POLICIES / f"{GRANT}.yaml").read_text(encoding="utf-8"))
    policy = load_policy(POLICIES / f"{GRANT}.yaml")
    guarded = guard(SQL, policy, district=XUANWU, department="xuanwu-fgw")

    def refusal(**fields):
        plan = sandbox_pb.Plan(dataset=policy.dataset, sql=guarded.sql, policy_id=policy.id,
                               policy_version=policy.version, max_rows=guarded.max_rows, policy_document=signed,
                               original_sql=SQL, caller_token=token_for(), execution_id=str(uuid.uuid4()))
        for name, value in fields.items():
            setattr(plan, name, value)
        with open_channel(f"127.0.0.1:{sandbox.port}", tls=sandbox_client_tls(), options=[]) as channel:
            with pytest.raises(grpc.RpcError) as caught:
                sandbox_grpc.SandboxServiceStub(channel).ExecutePlan(sandbox_pb.ExecutePlanRequest(plan=plan),
                                                                     timeout=30)
        error = error_from_rpc_error(caught.value)
        return error.code.name, error.reason
    assert refusal(policy_id=f"policies/{GRANT}") == ("PERMISSION_DENIED", "PLAN_POLICY_MISMATCH")
    assert refusal(policy_id="another-grant-2026") == ("PERMISSION_DENIED", "PLAN_POLICY_MISMATCH")
    assert refusal(policy_version=2) == ("PERMISSION_DENIED", "PLAN_POLICY_MISMATCH")
    assert refusal(policy_document="") == ("PERMISSION_DENIED", "POLICY_SIGNATURE_INVALID")
    assert refusal(dataset="tax.lookup_streets")[1] in ("DATASET_NOT_SERVED", "PLAN_POLICY_MISMATCH")


# == 7. the auditor's read-only reader of an execution ledger ==================================================
#
# FINDING. Severity: LOW (the missing table: a behaviour change of dsbroker/database.py's read-only reader;
# the extra column: pre-existing).
# Where: broker/cli/audit.py audit_reconcile -> dsbroker/records/executions.py read_executions: ``SELECT * FROM
# executions`` through open_sqlite_read_only, each row made an Execution(**row). The old CLI opened the ledger
# with ExecutionLedger (which recreated a dropped table, so reconcile reported every release as never executed
# and the missing witness table, and exited 1 with its findings). Now a ledger whose executions table a database
# writer dropped raises sqlite3.OperationalError, and one with a column added raises TypeError: the auditor gets a
# traceback instead of the report of what was done to the ledger, and the other ledgers given are not checked.
# Fix: read the known columns by name; report a missing table or unknown columns as discrepancies
# (e.g. LEDGER_TABLE_MISSING, LEDGER_ALTERED) and go on with the other ledgers, exiting 1.

@pytest.mark.parametrize("edit", ["DROP TABLE executions", "ALTER TABLE executions ADD COLUMN note TEXT",
                                  # found in the review: the witness table of the same file, read the same way
                                  "ALTER TABLE witnessed_checkpoints ADD COLUMN note TEXT"],
                         ids=["table-dropped", "column-added", "witness-column-added"])
def test_finding_reconcile_reports_an_edited_ledger_instead_of_crashing(tmp_path, edit):
    log_path = tmp_path / "access-log.sqlite"
    writing_log(log_path).close()
    ledger_path = tmp_path / "executions.sqlite"
    ledger = ExecutionLedger(ledger_path, sandbox_id="sandbox-a")
    ledger.record(sandbox_pb.Plan(dataset="tax.declarations", sql="SELECT 1", policy_id=GRANT, policy_version=1,
                                  max_rows=1, execution_id="r9-execution"), request_id="r9")
    ledger.close()
    # The sandbox's witness ledger lives in the same file; one entry in it (read before any hash is checked).
    CheckpointWitness(ledger_path, broker_keys=[], witness_key=None, witness_id="sandbox-a").close()
    with closing(sqlite3.connect(ledger_path)) as db:
        db.execute("INSERT INTO witnessed_checkpoints (seq, at, kind, size, root, checkpoint_hash, checkpoint, "
                   "countersignature, prev_hash, hash) VALUES (1, '', 'fork', 1, '', '', '{}', '', '', '')")
        db.commit()
    with closing(sqlite3.connect(ledger_path)) as db:  # a database writer, without any key
        db.execute(edit)
        db.commit()
    result = CliRunner().invoke(main, ["audit", "reconcile", "--log", str(log_path), "--ledger", str(ledger_path)])
    assert isinstance(result.exception, SystemExit), (
        f"reconcile crashed with {type(result.exception).__name__}: {result.exception}")
    assert result.exit_code == 7 and "problem:" in result.output


# FINDING. Severity: LOW-MEDIUM (pre-existing; the reorganisation's dsbroker/database.py says auditors' copies
# are read through open_sqlite_read_only, but the access log, the copy that matters most, is not).
# Where: broker/cli/audit.py _Source opens ``--log`` with AccessLog -> broker/access_log/store.py open_log_store ->
# dsbroker.database.open_sqlite (read-write, WAL) and LogStore.__init__, which runs the schema script (CREATE
# TRIGGER IF NOT EXISTS ...) and the migrations on the auditor's file. A database writer who dropped the log's
# append-only triggers (to edit records) has the auditor's own ``audit verify`` put them back: the evidence is
# erased from the copy being examined, and nothing reports that they were missing.
# Fix: open ``--log`` SQLite copies with open_sqlite_read_only (a read-only LogStore that neither creates nor
# migrates), and report missing append-only triggers as a verification problem.

def test_finding_audit_verify_reads_an_auditors_copy_of_the_log_without_changing_it(tmp_path):
    from broker.access_log.log import AccessRecord

    copy = tmp_path / "auditor-copy.sqlite"
    log = writing_log(copy)
    log.append(AccessRecord(event="call", decision="allow", subject="li.wei", department="xuanwu-fgw", detail={}))
    log.close()
    with closing(sqlite3.connect(copy)) as db:  # what a writer without a key did before editing records
        for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
            db.execute(f"DROP TRIGGER {name}")
        db.commit()
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = hashlib.sha256(copy.read_bytes()).hexdigest()
    CliRunner().invoke(main, ["audit", "verify", "--log", str(copy)])
    with closing(sqlite3.connect(copy)) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        triggers = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")]
    assert triggers == [], f"audit verify recreated the dropped triggers {triggers} in the auditor's copy"
    assert hashlib.sha256(copy.read_bytes()).hexdigest() == before, "audit verify changed the auditor's copy"


# == 9. an auditor's reads from a hostile broker =============================================================
#
# FINDING (found while fixing 4 and 8). Severity: LOW. Where: broker/cli/audit.py _Source walked
# ListCheckpoints while a token came back, and handed verify whatever page ListAccessRecords answered, so a
# broker answering the same page and token forever kept `dsbroker audit verify --broker` running forever.

class _RepeatingAudit(audit_grpc.AuditServiceServicer):
    def __init__(self, repeat: str) -> None:
        self.repeat, self.calls = repeat, 0

    def ListAccessRecords(self, request, context):
        self.calls += 1
        record = audit_pb.AccessRecord(seq=1, event_id="e1", event="call", decision="allow", detail_json="{}")
        return audit_pb.ListAccessRecordsResponse(access_records=[record], next_page_token="again")

    def ListCheckpoints(self, request, context):
        self.calls += 1
        return audit_pb.ListCheckpointsResponse(next_page_token="again" if self.repeat == "checkpoints" else "")


@pytest.mark.parametrize("repeat", ["checkpoints", "records"])
def test_finding_a_hostile_broker_cannot_keep_audit_verify_reading_forever(repeat):
    audit = _RepeatingAudit(repeat)
    fake = FakeServer(lambda server: audit_grpc.add_AuditServiceServicer_to_server(audit, server))
    try:
        done, outcome, thread = finishes(lambda: CliRunner().invoke(
            main, ["audit", "verify", "--broker", f"127.0.0.1:{fake.port}", "--plaintext", "--token", "t"]), 30.0)
        calls = audit.calls
    finally:
        fake.stop()
        thread.join(10)
    assert done, f"audit verify was still reading the broker's pages after {calls} calls"
    assert outcome.exit_code != 0 and calls <= 10, (outcome.exit_code, calls, outcome.output)


# FINDING (found in the review of this change): SandboxClient.list_statements, which the broker calls at
# start to learn the owner's revocations again, was the same unbounded walk as list_datasets: a broken
# sandbox kept the broker from starting. Expected: the walk ends (PAGES_WITHOUT_END) and the broker's
# PolicySync logs it and goes on without that sandbox's statements.

class _EndlessStatements(sandbox_grpc.SandboxServiceServicer):
    def __init__(self, fresh: bool) -> None:
        self.fresh, self.calls = fresh, 0

    def ListPolicyStatements(self, request, context):
        self.calls += 1
        return sandbox_pb.ListPolicyStatementsResponse(
            statements=[f"statement {self.calls}"], next_page_token=f"page-{self.calls}" if self.fresh else "again")


@pytest.mark.parametrize("fresh", [False, True], ids=["same-token", "new-token-each-page"])
def test_finding_a_broken_sandbox_cannot_keep_the_broker_reading_its_statements_forever(fresh):
    sandbox = _EndlessStatements(fresh)
    fake = FakeServer(lambda server: sandbox_grpc.add_SandboxServiceServicer_to_server(sandbox, server))
    client = SandboxClient(f"127.0.0.1:{fake.port}", tls=None, max_message_bytes=4 * 1024 * 1024)
    try:
        done, outcome, thread = finishes(lambda: client.list_statements(timeout_s=5), 60.0)
        calls = sandbox.calls
    finally:
        fake.stop()
        thread.join(10)
        client.close()
    assert done, f"SandboxClient.list_statements() was still following the sandbox's tokens after {calls} pages"
    assert isinstance(outcome, DsbrokerError) and outcome.reason == "PAGES_WITHOUT_END", outcome
    assert calls <= 1000, calls
